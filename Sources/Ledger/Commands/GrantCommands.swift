/// Commands that add credit to a client: purchases of packages, credit
/// balance orders, and adjustments (signed).

/// The result of a grant: the new lot and the client's balance after it.
public struct GrantResult: Sendable, Equatable {
    public var lot: Lot
    public var balance: BalanceSummary
}

public struct PurchasePackage: StorageCommand {
    public static let operation = "purchase"
    public var tenantId: String
    public var clientId: String
    public var packageId: String
    public var centerId: String
    /// The external payment reference (payment already collected).
    public var paymentRef: String
    public var idempotencyKey: String?

    public init(tenantId: String, clientId: String, packageId: String, centerId: String, paymentRef: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.clientId = clientId
        self.packageId = packageId
        self.centerId = centerId
        self.paymentRef = paymentRef
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("client_id", clientId), ("package_id", packageId), ("center_id", centerId), ("payment_ref", paymentRef)]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(clientId, "client_id")
        v.id(packageId, "package_id")
        v.id(centerId, "center_id")
        v.id(paymentRef, "payment_ref", required: false)
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> GrantResult {
        _ = try store.requireTenant(tenantId)
        guard let package = try store.package(tenant: tenantId, id: packageId) else {
            throw LedgerError.notFound(kind: "package", id: packageId)
        }
        guard package.active else { throw LedgerError.packageInactive(packageId: packageId) }
        let now = store.clock.nowMicros()
        let validUntil = package.validityDays.map { now + Int64($0) * 86_400_000_000 }
        let (lot, _) = try store.createLot(
            tenant: tenantId, client: clientId, origin: .purchase, entryType: .purchase, fundingAccount: Account.purchases,
            amountMinor: package.creditsMinor, centerId: centerId, validFromMicros: nil, validUntilMicros: validUntil,
            scope: package.scope, packageId: package.id, paymentRef: paymentRef.isEmpty ? nil : paymentRef,
            priceMinor: package.priceMinor, note: package.name, reason: "purchase", idempotencyKey: idempotencyKey ?? "")
        return GrantResult(lot: lot, balance: try store.summaryAfterExpiry(tenant: tenantId, client: clientId))
    }

    public func resultId(_ output: GrantResult) -> String { output.lot.id }
    public func resultSeq(_ output: GrantResult) -> Int64 { output.balance.seq }
}

/// Staff add an arbitrary amount (front-desk sale, goodwill).
public struct CreateCreditOrder: StorageCommand {
    public static let operation = "credit_order"
    public var tenantId: String
    public var clientId: String
    public var amountMinor: Int64
    public var priceMinor: Int64
    public var centerId: String
    public var note: String
    public var validUntilMicros: Int64?
    public var scope: Scope
    public var idempotencyKey: String?

    public init(tenantId: String, clientId: String, amountMinor: Int64, priceMinor: Int64, centerId: String, note: String,
                validUntilMicros: Int64?, scope: Scope, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.clientId = clientId
        self.amountMinor = amountMinor
        self.priceMinor = priceMinor
        self.centerId = centerId
        self.note = note
        self.validUntilMicros = validUntilMicros
        self.scope = scope
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("client_id", clientId), ("amount_minor", "\(amountMinor)"), ("price_minor", "\(priceMinor)"), ("center_id", centerId),
         ("note", note), ("valid_until", Canonical.opt(validUntilMicros)), ("scope", Canonical.scope(scope))]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(clientId, "client_id")
        v.positiveAmount(amountMinor, "amount_minor")
        v.nonNegativeAmount(priceMinor, "price_minor")
        v.id(centerId, "center_id")
        v.text(note, "note")
        v.scope(scope, "scope")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> GrantResult {
        if let validUntilMicros, validUntilMicros <= store.clock.nowMicros() {
            throw LedgerError.invalid("valid_until", "must be in the future")
        }
        let (lot, _) = try store.createLot(
            tenant: tenantId, client: clientId, origin: .order, entryType: .order, fundingAccount: Account.orders,
            amountMinor: amountMinor, centerId: centerId, validFromMicros: nil, validUntilMicros: validUntilMicros,
            scope: scope, packageId: nil, paymentRef: nil, priceMinor: priceMinor, note: note, reason: "credit_order",
            idempotencyKey: idempotencyKey ?? "")
        return GrantResult(lot: lot, balance: try store.summaryAfterExpiry(tenant: tenantId, client: clientId))
    }

    public func resultId(_ output: GrantResult) -> String { output.lot.id }
    public func resultSeq(_ output: GrantResult) -> Int64 { output.balance.seq }
}

public struct AdjustmentResult: Sendable, Equatable {
    public var adjustmentId: String
    /// The lot created by a positive adjustment.
    public var lot: Lot?
    public var allocations: [Allocation]
    public var balance: BalanceSummary
}

/// A signed manual correction with a reason: positive adds a lot, negative
/// draws from the client's valid lots (soonest expiry first).
public struct AdjustBalance: StorageCommand {
    public static let operation = "adjust"
    public var tenantId: String
    public var clientId: String
    public var amountMinor: Int64
    public var reason: String
    public var centerId: String
    public var validUntilMicros: Int64?
    public var idempotencyKey: String?

    public init(tenantId: String, clientId: String, amountMinor: Int64, reason: String, centerId: String,
                validUntilMicros: Int64?, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.clientId = clientId
        self.amountMinor = amountMinor
        self.reason = reason
        self.centerId = centerId
        self.validUntilMicros = validUntilMicros
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("client_id", clientId), ("amount_minor", "\(amountMinor)"), ("reason", reason), ("center_id", centerId),
         ("valid_until", Canonical.opt(validUntilMicros))]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(clientId, "client_id")
        v.check(amountMinor != 0, "amount_minor", "must not be 0")
        v.check(amountMinor.magnitude <= UInt64(LedgerLimits.maxAmountMinor), "amount_minor", "is out of range")
        v.text(reason, "reason", required: true)
        v.id(centerId, "center_id")
        v.check(amountMinor > 0 || validUntilMicros == nil, "valid_until", "applies only to positive adjustments")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> AdjustmentResult {
        let now = store.clock.nowMicros()
        if amountMinor > 0 {
            if let validUntilMicros, validUntilMicros <= now { throw LedgerError.invalid("valid_until", "must be in the future") }
            let (lot, entry) = try store.createLot(
                tenant: tenantId, client: clientId, origin: .adjustment, entryType: .adjustment, fundingAccount: Account.adjustments,
                amountMinor: amountMinor, centerId: centerId, validFromMicros: nil, validUntilMicros: validUntilMicros,
                scope: .any, packageId: nil, paymentRef: nil, priceMinor: 0, note: reason, reason: reason,
                idempotencyKey: idempotencyKey ?? "")
            return AdjustmentResult(adjustmentId: lot.id, lot: lot, allocations: entry.allocations,
                                    balance: try store.summaryAfterExpiry(tenant: tenantId, client: clientId))
        }
        let amount = -amountMinor
        let allocations = try store.drawEligible(tenant: tenantId, client: clientId, amountMinor: amount, centerId: nil,
                                                 serviceCategory: nil, membershipId: nil, hold: false)
        let id = IDs.make("adj", clock: store.clock)
        let entry = try store.appendEntry(tenant: tenantId, EntryPlans.negativeAdjustment(
            clientId: clientId, adjustmentId: id, amountMinor: amount, centerId: centerId, reason: reason,
            idempotencyKey: idempotencyKey ?? "", allocations: allocations))
        return AdjustmentResult(adjustmentId: id, lot: nil, allocations: allocations,
                                balance: BalanceSummary(clientId: clientId, availableMinor: entry.availableAfterMinor, heldMinor: entry.heldAfterMinor, seq: entry.seq))
    }

    public func resultId(_ output: AdjustmentResult) -> String { output.adjustmentId }
    public func resultSeq(_ output: AdjustmentResult) -> Int64 { output.balance.seq }
}
