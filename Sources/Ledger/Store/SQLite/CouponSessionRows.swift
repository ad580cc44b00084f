/// The SQLite side of the coupon and session-package calls of `LedgerStorage`
/// (row mappings in CouponSchema.swift and SessionStore.swift).
extension LedgerStore {
    // MARK: Coupons

    public func coupon(tenant: String, id: String) throws -> Coupon? { try CouponRows.coupon(db: db, tenant: tenant, id: id) }
    public func insertCoupon(_ coupon: Coupon, tenant: String) throws { try CouponRows.insert(coupon, tenant: tenant, db: db) }

    public func deactivateCoupon(tenant: String, id: String, updatedMicros: Int64) throws {
        try db.statement("UPDATE coupons SET active = 0, updated_micros = ? WHERE tenant_id = ? AND id = ?")
            .bind(.int(updatedMicros), .text(tenant), .text(id)).run()
    }

    public func customerCredit(tenant: String, id: String) throws -> CustomerCredit? { try CouponRows.credit(db: db, tenant: tenant, id: id) }
    public func insertCustomerCredit(_ credit: CustomerCredit, tenant: String) throws { try CouponRows.insert(credit, tenant: tenant, db: db) }
    public func updateCustomerCredit(_ credit: CustomerCredit, tenant: String) throws { try CouponRows.update(credit, tenant: tenant, db: db) }

    public func couponRedemption(tenant: String, id: String) throws -> CreditRedemption? {
        try CouponRows.redemption(db: db, tenant: tenant, id: id)
    }

    public func insertCouponRedemption(_ redemption: CreditRedemption, tenant: String) throws {
        try CouponRows.insert(redemption, tenant: tenant, db: db)
    }

    public func markCouponRedemptionCancelled(_ redemption: CreditRedemption, tenant: String) throws {
        try CouponRows.markCancelled(redemption, tenant: tenant, db: db)
    }

    public func creditRule(tenant: String, id: String) throws -> MembershipCreditRule? { try CouponRows.rule(db: db, tenant: tenant, id: id) }
    public func saveCreditRule(_ rule: MembershipCreditRule, tenant: String) throws { try CouponRows.save(rule, tenant: tenant, db: db) }

    // MARK: Session packages

    public func sessionPackage(tenant: String, id: String) throws -> ClientPackage? { try SessionRows.package(db: db, tenant: tenant, id: id) }
    public func insertSessionPackage(_ package: ClientPackage, tenant: String) throws {
        try SessionRows.insertPackage(db: db, tenant: tenant, package)
    }

    public func changeSessionLine(tenant: String, packageId: String, serviceId: String, usedDelta: Int64, forfeitedDelta: Int64) throws {
        try SessionRows.changeLine(db: db, tenant: tenant, packageId: packageId, serviceId: serviceId, usedDelta: usedDelta,
                                   forfeitedDelta: forfeitedDelta)
    }

    public func deactivateSessionPackage(tenant: String, id: String, atMicros: Int64, reason: String) throws {
        try db.statement("""
            UPDATE session_packages SET active = 0, deactivated_micros = ?, deactivation_reason = ? WHERE tenant_id = ? AND id = ? AND active = 1
            """).bind(.int(atMicros), .text(reason), .text(tenant), .text(id)).run()
        precondition(db.changes == 1, "deactivating a package that is not active")
    }

    public func sessionPackageToUse(tenant: String, client: String, serviceId: String, scopeId: String?, now: Int64) throws -> String? {
        try SessionRows.packageToUse(db: db, tenant: tenant, client: client, serviceId: serviceId, scopeId: scopeId, now: now)
    }

    public func sessionRedemption(tenant: String, id: String) throws -> PackageRedemption? {
        try SessionRows.redemption(db: db, tenant: tenant, id: id)
    }

    public func insertSessionRedemption(_ redemption: PackageRedemption, tenant: String) throws {
        try SessionRows.insertRedemption(db: db, tenant: tenant, redemption)
    }

    public func cancelSessionRedemption(tenant: String, id: String, cancelSeq: Int64, cancelledMicros: Int64, reason: String) throws {
        try db.statement("""
            UPDATE session_redemptions SET state = 'cancelled', cancel_seq = ?, cancelled_micros = ?, cancel_reason = ?
            WHERE tenant_id = ? AND id = ? AND state = 'active'
            """).bind(.int(cancelSeq), .int(cancelledMicros), .text(reason), .text(tenant), .text(id)).run()
        precondition(db.changes == 1, "cancelling a redemption that is not active")
    }

    public func paymentRef(tenant: String, ref: String) throws -> PaymentRefStatus? { try SessionRows.paymentRef(db: db, tenant: tenant, ref: ref) }
    public func savePaymentRef(_ status: PaymentRefStatus, tenant: String, seq: Int64) throws {
        try SessionRows.savePaymentRef(db: db, tenant: tenant, status, seq: seq)
    }
}
