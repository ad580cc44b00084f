/// Commands that use credit: spends, holds (reserve, capture, release) and
/// reversals of spends.

public struct SpendResult: Sendable, Equatable {
    public var spend: Spend
    public var balance: BalanceSummary
}

public struct HoldResult: Sendable, Equatable {
    public var hold: Hold
    /// The spend a capture recorded.
    public var spend: Spend?
    public var balance: BalanceSummary

    public init(hold: Hold, spend: Spend?, balance: BalanceSummary) {
        self.hold = hold
        self.spend = spend
        self.balance = balance
    }
}

public struct SpendCredits: StorageCommand {
    public static let operation = "spend"
    public var tenantId: String
    public var clientId: String
    public var amountMinor: Int64
    public var reason: SpendReason
    public var centerId: String
    public var bookingRef: String
    public var serviceCategory: String?
    public var membershipId: String?
    public var idempotencyKey: String?

    public init(tenantId: String, clientId: String, amountMinor: Int64, reason: SpendReason, centerId: String, bookingRef: String,
                serviceCategory: String?, membershipId: String?, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.clientId = clientId
        self.amountMinor = amountMinor
        self.reason = reason
        self.centerId = centerId
        self.bookingRef = bookingRef
        self.serviceCategory = serviceCategory
        self.membershipId = membershipId
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("client_id", clientId), ("amount_minor", "\(amountMinor)"), ("reason", reason.rawValue), ("center_id", centerId),
         ("booking_ref", bookingRef), ("service_category", Canonical.opt(serviceCategory)), ("membership_id", Canonical.opt(membershipId))]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.draw(clientId: clientId, amountMinor: amountMinor, centerId: centerId, bookingRef: bookingRef,
               serviceCategory: serviceCategory, membershipId: membershipId, idempotencyKey: idempotencyKey)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> SpendResult {
        let allocations = try store.drawEligible(tenant: tenantId, client: clientId, amountMinor: amountMinor, centerId: centerId,
                                                 serviceCategory: serviceCategory, membershipId: membershipId, hold: false)
        let id = IDs.make("spd", clock: store.clock)
        let plan = EntryPlans.spend(clientId: clientId, spendId: id, amountMinor: amountMinor, reason: reason, centerId: centerId,
                                    bookingRef: bookingRef, idempotencyKey: idempotencyKey ?? "", allocations: allocations)
        let spend = try SpendRecord.record(store: store, tenant: tenantId, plan: plan, serviceCategory: serviceCategory, holdId: nil)
        return SpendResult(spend: spend.0, balance: spend.1)
    }

    public func resultId(_ output: SpendResult) -> String { output.spend.id }
    public func resultSeq(_ output: SpendResult) -> Int64 { output.balance.seq }
}

/// The spend record of a spend or capture entry.
enum SpendRecord {
    /// Appends the spend's planned entry (a spend, or a capture's) and its row.
    static func record(store: some LedgerStorage, tenant: String, plan: EntryPlan, serviceCategory: String?,
                       holdId: String?) throws -> (Spend, BalanceSummary) {
        precondition(plan.type == .spend || plan.type == .capture, "a spend row records a spend or capture entry")
        precondition(plan.credit == Account.consumption, "a spend's credit goes to consumption")
        let id = plan.refId, clientId = plan.clientId, amountMinor = plan.amountMinor, centerId = plan.centerId
        let bookingRef = plan.bookingRef
        let reason = SpendReason(rawValue: plan.reason)!
        let entry = try store.appendEntry(tenant: tenant, plan)
        let spend = Spend(id: id, clientId: clientId, amountMinor: amountMinor, reversedMinor: 0, reason: reason, centerId: centerId,
                          bookingRef: bookingRef, serviceCategory: serviceCategory, holdId: holdId, seq: entry.seq,
                          createdMicros: entry.timeMicros, allocations: plan.allocations)
        try store.insertSpend(spend, tenant: tenant)
        return (spend, BalanceSummary(clientId: clientId, availableMinor: entry.availableAfterMinor, heldMinor: entry.heldAfterMinor, seq: entry.seq))
    }
}

/// Reserves credit at booking time. The hold pins the lots it drew from, and
/// counts against the available balance at once.
public struct CreateHold: StorageCommand {
    public static let operation = "hold"
    public var tenantId: String
    public var clientId: String
    public var amountMinor: Int64
    public var centerId: String
    public var bookingRef: String
    public var serviceCategory: String?
    public var membershipId: String?
    /// When the hold is released automatically if not captured.
    public var expiresMicros: Int64
    public var idempotencyKey: String?

    public init(tenantId: String, clientId: String, amountMinor: Int64, centerId: String, bookingRef: String,
                serviceCategory: String?, membershipId: String?, expiresMicros: Int64, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.clientId = clientId
        self.amountMinor = amountMinor
        self.centerId = centerId
        self.bookingRef = bookingRef
        self.serviceCategory = serviceCategory
        self.membershipId = membershipId
        self.expiresMicros = expiresMicros
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("client_id", clientId), ("amount_minor", "\(amountMinor)"), ("center_id", centerId), ("booking_ref", bookingRef),
         ("service_category", Canonical.opt(serviceCategory)), ("membership_id", Canonical.opt(membershipId)),
         ("expire_time", "\(expiresMicros)")]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.draw(clientId: clientId, amountMinor: amountMinor, centerId: centerId, bookingRef: bookingRef,
               serviceCategory: serviceCategory, membershipId: membershipId, idempotencyKey: idempotencyKey)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> HoldResult {
        _ = try store.requireTenant(tenantId)
        let now = store.clock.nowMicros()
        guard expiresMicros > now, expiresMicros - now <= LedgerLimits.maxHoldSeconds * 1_000_000 else {
            throw LedgerError.invalid("expire_time", "must be in the future and at most \(LedgerLimits.maxHoldSeconds / 86_400) days ahead")
        }
        let allocations = try store.drawEligible(tenant: tenantId, client: clientId, amountMinor: amountMinor, centerId: centerId,
                                                 serviceCategory: serviceCategory, membershipId: membershipId, hold: true)
        let id = IDs.make("hld", clock: store.clock)
        let entry = try store.appendEntry(tenant: tenantId, EntryPlans.hold(
            clientId: clientId, holdId: id, amountMinor: amountMinor, centerId: centerId, bookingRef: bookingRef,
            idempotencyKey: idempotencyKey ?? "", allocations: allocations))
        let hold = Hold(id: id, clientId: clientId, amountMinor: amountMinor, capturedMinor: 0, state: .held, expiresMicros: expiresMicros,
                        centerId: centerId, bookingRef: bookingRef, serviceCategory: serviceCategory, membershipId: membershipId,
                        seq: entry.seq, createdMicros: now, spendId: nil, allocations: allocations)
        try store.insertHold(hold, tenant: tenantId)
        return HoldResult(hold: hold, spend: nil, balance: BalanceSummary(clientId: clientId, availableMinor: entry.availableAfterMinor,
                                                                          heldMinor: entry.heldAfterMinor, seq: entry.seq))
    }

    public func resultId(_ output: HoldResult) -> String { output.hold.id }
    public func resultSeq(_ output: HoldResult) -> Int64 { output.balance.seq }
}

enum OpenHold {
    /// The hold, if the tenant has it and it is still open.
    static func load(store: some LedgerStorage, tenant: String, holdId: String) throws -> Hold {
        _ = try store.requireTenant(tenant)
        guard let hold = try store.hold(tenant: tenant, id: holdId) else {
            throw LedgerError.notFound(kind: "hold", id: holdId)
        }
        guard hold.state == .held else { throw LedgerError.holdNotOpen(holdId: holdId, state: hold.state) }
        return hold
    }
}

/// Captures an open hold fully or partly (e.g. a no-show penalty). The part
/// not captured is released. Credit of a lot that expired while held is
/// still captured (the booking was made while it was valid); released
/// credit of an expired lot is expired at once.
public struct CaptureHold: StorageCommand {
    public static let operation = "capture"
    public var tenantId: String
    public var holdId: String
    /// nil captures the whole hold.
    public var amountMinor: Int64?
    public var reason: SpendReason
    public var idempotencyKey: String?

    public init(tenantId: String, holdId: String, amountMinor: Int64?, reason: SpendReason, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.holdId = holdId
        self.amountMinor = amountMinor
        self.reason = reason
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("hold_id", holdId), ("amount_minor", Canonical.opt(amountMinor)), ("reason", reason.rawValue)]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(holdId, "hold_id")
        if let amountMinor { v.positiveAmount(amountMinor, "amount_minor") }
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> HoldResult {
        var hold = try OpenHold.load(store: store, tenant: tenantId, holdId: holdId)
        let now = store.clock.nowMicros()
        // Past its deadline a hold can no longer be captured, even before
        // maintenance has released it.
        guard hold.expiresMicros > now else { throw LedgerError.holdNotOpen(holdId: holdId, state: .expired) }
        let capture = amountMinor ?? hold.amountMinor
        guard capture <= hold.amountMinor else {
            throw LedgerError.captureExceedsHold(heldMinor: hold.amountMinor, requestedMinor: capture)
        }
        let pins = try store.holdPins(tenant: tenantId, holdId: holdId)
        precondition(pins.reduce(0) { $0 + $1.heldMinor } == hold.amountMinor, "hold \(holdId) pins a different amount than it holds")
        let plans = EntryPlans.capture(hold: hold, spendId: IDs.make("spd", clock: store.clock), captureMinor: capture, reason: reason,
                                       idempotencyKey: idempotencyKey ?? "", pins: pins)
        let (spend, _) = try SpendRecord.record(store: store, tenant: tenantId, plan: plans[0], serviceCategory: hold.serviceCategory,
                                              holdId: holdId)
        for release in plans.dropFirst() { try store.appendEntry(tenant: tenantId, release) }
        try settleExpiredLots(store: store, tenant: tenantId, lotIds: pins.map(\.lot.id))
        // The reply's balance never counts credit past valid_until.
        try store.expireDueLots(tenant: tenantId, client: hold.clientId, now: now)
        hold.state = .captured
        hold.capturedMinor = capture
        hold.spendId = spend.id
        try store.resolveHold(hold, tenant: tenantId)
        return HoldResult(hold: hold, spend: spend, balance: try store.summary(tenant: tenantId, client: hold.clientId))
    }

    public func resultId(_ output: HoldResult) -> String { output.hold.id }
    public func resultSeq(_ output: HoldResult) -> Int64 { output.balance.seq }
}

/// Lots past valid_until among `lotIds`: free credit on them (released from a
/// hold, or returned by a reversal) is expired at once, and a lot with
/// nothing held any more becomes `expired`.
func settleExpiredLots(store: some LedgerStorage, tenant: String, lotIds: [String]) throws {
    let now = store.clock.nowMicros()
    for id in Set(lotIds).sorted() {
        guard let lot = try store.lot(tenant: tenant, id: id) else { preconditionFailure("settling unknown lot \(id)") }
        if ExpiryPlan.needsSettling(lot, now: now) { try store.expire(tenant: tenant, lot: lot) }
    }
}

/// Releases an open hold on cancellation; with `expired`, the automatic
/// release at the hold's deadline.
public struct ReleaseHold: StorageCommand {
    public static let operation = "release"
    public var tenantId: String
    public var holdId: String
    public var idempotencyKey: String?
    var automatic = false

    public init(tenantId: String, holdId: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.holdId = holdId
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] { [("hold_id", holdId)] }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(holdId, "hold_id")
        v.idempotencyKey(idempotencyKey, required: !automatic)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> HoldResult {
        var hold = try OpenHold.load(store: store, tenant: tenantId, holdId: holdId)
        let pins = try store.holdPins(tenant: tenantId, holdId: holdId)
        try store.appendEntry(tenant: tenantId, EntryPlans.release(hold: hold, automatic: automatic, idempotencyKey: idempotencyKey ?? "",
                                                                   pins: pins))
        try store.expireDueLots(tenant: tenantId, client: hold.clientId, now: store.clock.nowMicros())
        try settleExpiredLots(store: store, tenant: tenantId, lotIds: pins.map(\.lot.id))
        hold.state = automatic ? .expired : .released
        try store.resolveHold(hold, tenant: tenantId)
        return HoldResult(hold: hold, spend: nil, balance: try store.summary(tenant: tenantId, client: hold.clientId))
    }

    public func resultId(_ output: HoldResult) -> String { output.hold.id }
    public func resultSeq(_ output: HoldResult) -> Int64 { output.balance.seq }
}

/// Refunds a spend fully or partly: the credit returns to the lots it came
/// from, most recently drawn first. Credit returned to a lot that has expired
/// since is expired again at once (it no longer counts).
public struct ReverseSpend: StorageCommand {
    public static let operation = "reverse"
    public var tenantId: String
    public var spendId: String
    public var amountMinor: Int64
    public var reason: String
    public var idempotencyKey: String?

    public init(tenantId: String, spendId: String, amountMinor: Int64, reason: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.spendId = spendId
        self.amountMinor = amountMinor
        self.reason = reason
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("spend_id", spendId), ("amount_minor", "\(amountMinor)"), ("reason", reason)]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(spendId, "spend_id")
        v.positiveAmount(amountMinor, "amount_minor")
        v.text(reason, "reason")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> SpendResult {
        _ = try store.requireTenant(tenantId)
        guard var spend = try store.spend(tenant: tenantId, id: spendId) else {
            throw LedgerError.notFound(kind: "spend", id: spendId)
        }
        let plan = try EntryPlans.reversal(spend: spend, amountMinor: amountMinor, reason: reason, idempotencyKey: idempotencyKey ?? "",
                                           owed: try store.outstandingDraws(tenant: tenantId, refId: spendId))
        let allocations = plan.allocations
        let entry = try store.appendEntry(tenant: tenantId, plan)
        try store.addReversed(tenant: tenantId, spendId: spendId, amountMinor: amountMinor)
        spend.reversedMinor += amountMinor
        precondition(entry.amountMinor == amountMinor)
        try settleExpiredLots(store: store, tenant: tenantId, lotIds: allocations.map(\.lotId))
        try store.expireDueLots(tenant: tenantId, client: spend.clientId, now: store.clock.nowMicros())
        spend.allocations = try store.allocations(tenant: tenantId, seq: spend.seq)
        return SpendResult(spend: spend, balance: try store.summary(tenant: tenantId, client: spend.clientId))
    }

    public func resultId(_ output: SpendResult) -> String { output.spend.id }
    public func resultSeq(_ output: SpendResult) -> Int64 { output.balance.seq }
}
