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

    // MARK: Coupon maintenance (the writer's, on this store)

    /// Active credits past their expiry time, soonest first, with their tenant.
    func dueCustomerCredits(now: Int64, limit: Int) throws -> [(tenant: String, credit: CustomerCredit)] {
        try db.statement("""
            SELECT \(CouponRows.creditColumns), tenant_id FROM coupon_credits INDEXED BY coupon_credits_due
            WHERE state = 'active' AND expires_micros IS NOT NULL AND expires_micros <= ? ORDER BY expires_micros LIMIT ?
            """).bind(.int(now), .int(Int64(limit))).rows { ($0.text(18), CouponRows.readCredit($0)) }
    }

    /// Enabled rules whose next issue time has come, soonest first, with their tenant.
    func dueCreditRules(now: Int64, limit: Int) throws -> [(tenant: String, rule: MembershipCreditRule)] {
        try db.statement("""
            SELECT \(CouponRows.ruleColumns), tenant_id FROM coupon_rules INDEXED BY coupon_rules_due
            WHERE enabled = 1 AND next_issue_micros <= ? ORDER BY next_issue_micros LIMIT ?
            """).bind(.int(now), .int(Int64(limit))).rows { ($0.text(13), CouponRows.readRule($0)) }
    }

    /// Records the rule's period as handled ('coupon_inactive' until an issue
    /// says otherwise); false if it was already (UNIQUE rule, period).
    func claimRulePeriod(tenant: String, ruleId: String, period: String, now: Int64) throws -> Bool {
        try db.statement("""
            INSERT INTO coupon_rule_periods (tenant_id, rule_id, period, credit_id, outcome, time_micros)
            VALUES (?, ?, ?, NULL, 'coupon_inactive', ?) ON CONFLICT DO NOTHING
            """).bind(.text(tenant), .text(ruleId), .text(period), .int(now)).run()
        return db.changes == 1
    }

    func recordRulePeriodIssued(tenant: String, ruleId: String, period: String, creditId: String) throws {
        try db.statement("UPDATE coupon_rule_periods SET credit_id = ?, outcome = 'issued' WHERE tenant_id = ? AND rule_id = ? AND period = ?")
            .bind(.text(creditId), .text(tenant), .text(ruleId), .text(period)).run()
    }
}
