/// The one seam between the ledger's commands and a storage engine: what a
/// command may load and what rows it may write, in plain domain values. The
/// commands of the core (`StorageCommand`) see only this protocol; the SQLite
/// implementation is `LedgerStore` (Store/SQLite), and a second engine (a
/// PostgreSQL-compatible one) will be another conformance.
///
/// Every call runs inside the writer's open transaction; a command that
/// throws has its savepoint rolled back, so nothing it wrote stays.
public protocol LedgerStorage: AnyObject {
    /// "Now" for the ledger (expiry, holds, ids).
    var clock: LedgerClock { get }

    // MARK: Tenants and keys

    func tenant(_ id: String) throws -> Tenant?
    /// Throws NOT_FOUND unless the tenant exists.
    func requireTenant(_ id: String) throws -> Tenant
    /// Like `requireTenant`, remembered once seen in the transaction.
    func requireTenantExists(_ id: String) throws
    func insertTenant(_ tenant: Tenant) throws
    func setDirectoryAccess(tenant: String, allow: Bool) throws
    func apiKey(id: String) throws -> APIKeyRecord?
    func insertAPIKey(_ key: APIKeyRecord) throws
    func revokeAPIKey(id: String, atMicros: Int64) throws

    // MARK: Packages

    func package(tenant: String, id: String) throws -> CreditPackage?
    func insertPackage(_ package: CreditPackage, tenant: String) throws
    func updatePackage(_ package: CreditPackage, tenant: String) throws

    // MARK: Balances, entries and lots

    func summary(tenant: String, client: String) throws -> BalanceSummary
    /// The client's balance after a write, once its due lots are expired.
    func summaryAfterExpiry(tenant: String, client: String) throws -> BalanceSummary
    /// Appends one planned entry (seq, time, balances after it, allocations
    /// applied to their lots, system accounts moved).
    @discardableResult
    func appendEntry(tenant: String, _ plan: EntryPlan) throws -> LedgerEntry
    /// Creates a lot and the entry that funds it (`EntryPlans.fundLot`).
    func createLot(tenant: String, client: String, origin: LotOrigin, entryType: EntryType, fundingAccount: String,
                   amountMinor: Int64, centerId: String, validFromMicros: Int64?, validUntilMicros: Int64?, scope: Scope,
                   packageId: String?, paymentRef: String?, priceMinor: Int64, note: String, reason: String,
                   idempotencyKey: String) throws -> (Lot, LedgerEntry)
    func lot(tenant: String, id: String) throws -> Lot?
    /// The lots a draw may use now, in draw order (`Draws.eligible` over the
    /// client's active lots); with `expireDue`, first writes the expiry of
    /// the client's lots past valid_until. Throws tooManyLots past the limit.
    func eligibleLots(tenant: String, client: String, now: Int64, centerId: String?, serviceCategory: String?,
                      membershipId: String?, expireDue: Bool) throws -> [Lot]
    /// Writes a lot's expiry (`ExpiryPlan`); returns its EXPIRY entry, if any.
    @discardableResult
    func expire(tenant: String, lot: Lot) throws -> LedgerEntry?
    /// Expires the client's lots past valid_until at `now`.
    func expireDueLots(tenant: String, client: String, now: Int64) throws
    /// What each lot still owes the entries of `refId` (a spend or a
    /// write-off), in the order they were drawn.
    func outstandingDraws(tenant: String, refId: String) throws -> [Splits.Owed]
    /// The lots a hold still pins, in capture order.
    func holdPins(tenant: String, holdId: String) throws -> [Splits.Pin]
    /// The allocations of the entry `seq`, in order.
    func allocations(tenant: String, seq: Int64) throws -> [Allocation]

    // MARK: Spends, holds and write-offs

    func spend(tenant: String, id: String) throws -> Spend?
    func insertSpend(_ spend: Spend, tenant: String) throws
    func addReversed(tenant: String, spendId: String, amountMinor: Int64) throws
    func hold(tenant: String, id: String) throws -> Hold?
    func insertHold(_ hold: Hold, tenant: String) throws
    /// Writes a hold's final state; asserts it was open.
    func resolveHold(_ hold: Hold, tenant: String) throws
    func writeOff(tenant: String, id: String) throws -> WriteOff?
    func insertWriteOff(_ writeOff: WriteOff, tenant: String) throws
    /// Marks an active write-off voided by the entry `voidSeq`; asserts it was active.
    func markWriteOffVoided(tenant: String, id: String, voidSeq: Int64) throws

    // MARK: Coupons (Sources/Ledger/Coupons)

    func coupon(tenant: String, id: String) throws -> Coupon?
    func insertCoupon(_ coupon: Coupon, tenant: String) throws
    func deactivateCoupon(tenant: String, id: String, updatedMicros: Int64) throws
    func customerCredit(tenant: String, id: String) throws -> CustomerCredit?
    func insertCustomerCredit(_ credit: CustomerCredit, tenant: String) throws
    func updateCustomerCredit(_ credit: CustomerCredit, tenant: String) throws
    func couponRedemption(tenant: String, id: String) throws -> CreditRedemption?
    func insertCouponRedemption(_ redemption: CreditRedemption, tenant: String) throws
    func markCouponRedemptionCancelled(_ redemption: CreditRedemption, tenant: String) throws
    func creditRule(tenant: String, id: String) throws -> MembershipCreditRule?
    func saveCreditRule(_ rule: MembershipCreditRule, tenant: String) throws

    // MARK: Session packages (Sources/Ledger/Sessions)

    func sessionPackage(tenant: String, id: String) throws -> ClientPackage?
    func insertSessionPackage(_ package: ClientPackage, tenant: String) throws
    func changeSessionLine(tenant: String, packageId: String, serviceId: String, usedDelta: Int64, forfeitedDelta: Int64) throws
    /// Deactivates an active package; asserts it was active.
    func deactivateSessionPackage(tenant: String, id: String, atMicros: Int64, reason: String) throws
    /// The package a use should draw from (see `SessionRows.packageToUse`).
    func sessionPackageToUse(tenant: String, client: String, serviceId: String, scopeId: String?, now: Int64) throws -> String?
    func sessionRedemption(tenant: String, id: String) throws -> PackageRedemption?
    func insertSessionRedemption(_ redemption: PackageRedemption, tenant: String) throws
    /// Cancels an active redemption; asserts it was active.
    func cancelSessionRedemption(tenant: String, id: String, cancelSeq: Int64, cancelledMicros: Int64, reason: String) throws
    func paymentRef(tenant: String, ref: String) throws -> PaymentRefStatus?
    func savePaymentRef(_ status: PaymentRefStatus, tenant: String, seq: Int64) throws
}

extension LedgerStorage {
    /// Appends one entry given field by field (the coupon and session
    /// entries, which move no lots); `EntryPlan`'s init checks it.
    @discardableResult
    public func appendEntry(tenant: String, type: EntryType, client: String, amountMinor: Int64,
                            debit: String, credit: String, refId: String, centerId: String = "",
                            bookingRef: String = "", paymentRef: String = "", idempotencyKey: String = "",
                            reason: String = "", note: String = "", allocations: [Allocation] = []) throws -> LedgerEntry {
        try appendEntry(tenant: tenant, EntryPlan(
            type: type, clientId: client, amountMinor: amountMinor, debit: debit, credit: credit, refId: refId, centerId: centerId,
            bookingRef: bookingRef, paymentRef: paymentRef, idempotencyKey: idempotencyKey, reason: reason, note: note,
            allocations: allocations))
    }

    /// Load, plan: the allocations of a draw of `amountMinor` from the lots
    /// eligible now (their due expiry written first). `centerId` nil: any
    /// valid lot, whatever its scope.
    public func drawEligible(tenant: String, client: String, amountMinor: Int64, centerId: String?, serviceCategory: String?,
                             membershipId: String?, hold: Bool) throws -> [Allocation] {
        try requireTenantExists(tenant)
        let lots = try eligibleLots(tenant: tenant, client: client, now: clock.nowMicros(), centerId: centerId,
                                    serviceCategory: serviceCategory, membershipId: membershipId, expireDue: true)
        return try Draws.draw(amountMinor, from: lots, hold: hold)
    }
}

/// A command written against `LedgerStorage` alone: it loads what it needs,
/// plans with the model (`Draws`, `Splits`, `EntryPlans`) and has the store
/// write the plan's rows. It knows no SQL.
public protocol StorageCommand: LedgerCommand {
    func apply(to store: some LedgerStorage) throws -> Output
}

extension StorageCommand {
    public func apply(_ store: LedgerStore) throws -> Output { try apply(to: store) }
}
