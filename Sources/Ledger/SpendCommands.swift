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

public struct SpendCredits: LedgerCommand {
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

    public func apply(_ store: LedgerStore) throws -> SpendResult {
        let allocations = try store.drawEligible(tenant: tenantId, client: clientId, amountMinor: amountMinor, centerId: centerId,
                                                 serviceCategory: serviceCategory, membershipId: membershipId, hold: false)
        let spend = try SpendRows.record(store: store, tenant: tenantId, clientId: clientId, amountMinor: amountMinor, reason: reason,
                                         centerId: centerId, bookingRef: bookingRef, serviceCategory: serviceCategory, holdId: nil,
                                         allocations: allocations, idempotencyKey: idempotencyKey ?? "", debit: Account.available(clientId),
                                         entryType: .spend)
        return SpendResult(spend: spend.0, balance: spend.1)
    }

    public func resultId(_ output: SpendResult) -> String { output.spend.id }
    public func resultSeq(_ output: SpendResult) -> Int64 { output.balance.seq }
}

enum SpendRows {
    static let columns = "id, client_id, amount_minor, reversed_minor, reason, center_id, booking_ref, service_category, hold_id, seq, created_micros"

    static func read(_ r: Row) -> Spend {
        Spend(id: r.text(0), clientId: r.text(1), amountMinor: r.int(2), reversedMinor: r.int(3),
              reason: SpendReason(rawValue: r.text(4)) ?? .other, centerId: r.text(5), bookingRef: r.text(6),
              serviceCategory: r.optionalText(7), holdId: r.optionalText(8), seq: r.int(9), createdMicros: r.int(10), allocations: [])
    }

    /// Appends the spend's entry and its row.
    static func record(store: LedgerStore, tenant: String, clientId: String, amountMinor: Int64, reason: SpendReason,
                       centerId: String, bookingRef: String, serviceCategory: String?, holdId: String?, allocations: [Allocation],
                       idempotencyKey: String, debit: String, entryType: EntryType) throws -> (Spend, BalanceSummary) {
        let id = IDs.make("spd")
        let entry = try store.appendEntry(
            tenant: tenant, type: entryType, client: clientId, amountMinor: amountMinor, debit: debit,
            credit: Account.consumption, refId: id, centerId: centerId, bookingRef: bookingRef,
            idempotencyKey: idempotencyKey, reason: reason.rawValue, allocations: allocations)
        let spend = Spend(id: id, clientId: clientId, amountMinor: amountMinor, reversedMinor: 0, reason: reason, centerId: centerId,
                          bookingRef: bookingRef, serviceCategory: serviceCategory, holdId: holdId, seq: entry.seq,
                          createdMicros: entry.timeMicros, allocations: allocations)
        try store.db.statement("INSERT INTO spends (tenant_id, \(columns)) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)")
            .bind(.text(tenant), .text(id), .text(clientId), .int(amountMinor), .text(reason.rawValue), .text(centerId),
                  .text(bookingRef), serviceCategory.map(SQLValue.text) ?? .null, holdId.map(SQLValue.text) ?? .null,
                  .int(entry.seq), .int(entry.timeMicros)).run()
        return (spend, BalanceSummary(clientId: clientId, availableMinor: entry.availableAfterMinor, heldMinor: entry.heldAfterMinor, seq: entry.seq))
    }
}

/// Reserves credit at booking time. The hold pins the lots it drew from, and
/// counts against the available balance at once.
public struct CreateHold: LedgerCommand {
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

    public func apply(_ store: LedgerStore) throws -> HoldResult {
        _ = try store.requireTenant(tenantId)
        let now = store.clock.nowMicros()
        guard expiresMicros > now, expiresMicros - now <= LedgerLimits.maxHoldSeconds * 1_000_000 else {
            throw LedgerError.invalid("expire_time", "must be in the future and at most \(LedgerLimits.maxHoldSeconds / 86_400) days ahead")
        }
        let allocations = try store.drawEligible(tenant: tenantId, client: clientId, amountMinor: amountMinor, centerId: centerId,
                                                 serviceCategory: serviceCategory, membershipId: membershipId, hold: true)
        let id = IDs.make("hld")
        let entry = try store.appendEntry(
            tenant: tenantId, type: .hold, client: clientId, amountMinor: amountMinor, debit: Account.available(clientId),
            credit: Account.held(clientId), refId: id, centerId: centerId, bookingRef: bookingRef,
            idempotencyKey: idempotencyKey ?? "", reason: "hold", allocations: allocations)
        let hold = Hold(id: id, clientId: clientId, amountMinor: amountMinor, capturedMinor: 0, state: .held, expiresMicros: expiresMicros,
                        centerId: centerId, bookingRef: bookingRef, serviceCategory: serviceCategory, membershipId: membershipId,
                        seq: entry.seq, createdMicros: now, spendId: nil, allocations: allocations)
        try HoldRows.insert(hold, tenant: tenantId, store: store)
        return HoldResult(hold: hold, spend: nil, balance: BalanceSummary(clientId: clientId, availableMinor: entry.availableAfterMinor,
                                                                          heldMinor: entry.heldAfterMinor, seq: entry.seq))
    }

    public func resultId(_ output: HoldResult) -> String { output.hold.id }
    public func resultSeq(_ output: HoldResult) -> Int64 { output.balance.seq }
}

enum HoldRows {
    static let columns = "id, client_id, amount_minor, captured_minor, state, expires_micros, center_id, booking_ref, service_category, membership_id, seq, created_micros, spend_id"

    static func read(_ r: Row) -> Hold {
        Hold(id: r.text(0), clientId: r.text(1), amountMinor: r.int(2), capturedMinor: r.int(3), state: HoldState(rawValue: r.text(4))!,
             expiresMicros: r.int(5), centerId: r.text(6), bookingRef: r.text(7), serviceCategory: r.optionalText(8),
             membershipId: r.optionalText(9), seq: r.int(10), createdMicros: r.int(11), spendId: r.optionalText(12), allocations: [])
    }

    static func insert(_ h: Hold, tenant: String, store: LedgerStore) throws {
        store.touch(tenant: tenant, client: h.clientId)
        try insert(h, tenant: tenant, db: store.db)
    }

    /// The row alone; outside the writer (bulk seeding of a database no server has open).
    static func insert(_ h: Hold, tenant: String, db: SQLiteConnection) throws {
        try db.statement("INSERT INTO holds (tenant_id, \(columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(.text(tenant), .text(h.id), .text(h.clientId), .int(h.amountMinor), .int(h.capturedMinor), .text(h.state.rawValue),
                  .int(h.expiresMicros), .text(h.centerId), .text(h.bookingRef), h.serviceCategory.map(SQLValue.text) ?? .null,
                  h.membershipId.map(SQLValue.text) ?? .null, .int(h.seq), .int(h.createdMicros), h.spendId.map(SQLValue.text) ?? .null).run()
    }

    /// The hold, if the tenant has it and it is still open.
    static func open(store: LedgerStore, tenant: String, holdId: String) throws -> Hold {
        _ = try store.requireTenant(tenant)
        guard let hold = try StoreReads(db: store.db).hold(tenant: tenant, id: holdId) else {
            throw LedgerError.notFound(kind: "hold", id: holdId)
        }
        guard hold.state == .held else { throw LedgerError.holdNotOpen(holdId: holdId, state: hold.state) }
        return hold
    }

    static func resolve(_ h: Hold, tenant: String, store: LedgerStore) throws {
        store.touch(tenant: tenant, client: h.clientId)
        let db = store.db
        try db.statement("UPDATE holds SET state = ?, captured_minor = ?, spend_id = ? WHERE tenant_id = ? AND id = ? AND state = 'held'")
            .bind(.text(h.state.rawValue), .int(h.capturedMinor), h.spendId.map(SQLValue.text) ?? .null, .text(tenant), .text(h.id)).run()
        precondition(db.changes == 1, "resolving a hold that is not open")
    }

    /// The lots a hold still pins, soonest expiry first.
    static func pinned(store: LedgerStore, tenant: String, holdId: String) throws -> [(lot: Lot, heldMinor: Int64)] {
        let pins = try store.db.statement("""
            SELECT a.lot_id, SUM(a.held_delta_minor) FROM allocations a
            JOIN entries e ON e.tenant_id = a.tenant_id AND e.seq = a.seq
            WHERE e.tenant_id = ? AND e.ref_id = ? GROUP BY a.lot_id HAVING SUM(a.held_delta_minor) > 0
            """).bind(.text(tenant), .text(holdId)).rows { ($0.text(0), $0.int(1)) }
        var out: [(Lot, Int64)] = []
        for (lotId, held) in pins {
            guard let lot = try store.lot(tenant: tenant, id: lotId) else { preconditionFailure("hold pins unknown lot \(lotId)") }
            precondition(lot.heldMinor >= held, "lot \(lotId) holds less than its hold pins")
            out.append((lot, held))
        }
        return out.sorted { a, b in
            switch (a.0.validUntilMicros, b.0.validUntilMicros) {
            case let (x?, y?) where x != y: return x < y
            case (nil, _?): return false
            case (_?, nil): return true
            default: return a.0.createdSeq < b.0.createdSeq
            }
        }
    }
}

/// Captures an open hold fully or partly (e.g. a no-show penalty). The part
/// not captured is released. Credit of a lot that expired while held is
/// still captured (the booking was made while it was valid); released
/// credit of an expired lot is expired at once.
public struct CaptureHold: LedgerCommand {
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

    public func apply(_ store: LedgerStore) throws -> HoldResult {
        var hold = try HoldRows.open(store: store, tenant: tenantId, holdId: holdId)
        let now = store.clock.nowMicros()
        // Past its deadline a hold can no longer be captured, even before
        // maintenance has released it.
        guard hold.expiresMicros > now else { throw LedgerError.holdNotOpen(holdId: holdId, state: .expired) }
        let capture = amountMinor ?? hold.amountMinor
        guard capture <= hold.amountMinor else {
            throw LedgerError.captureExceedsHold(heldMinor: hold.amountMinor, requestedMinor: capture)
        }
        let pins = try HoldRows.pinned(store: store, tenant: tenantId, holdId: holdId)
        precondition(pins.reduce(0) { $0 + $1.heldMinor } == hold.amountMinor, "hold \(holdId) pins a different amount than it holds")
        var left = capture
        var captureAllocations: [Allocation] = []
        var releaseAllocations: [Allocation] = []
        for (lot, held) in pins {
            let take = min(left, held)
            if take > 0 { captureAllocations.append(Allocation(lotId: lot.id, remainingDeltaMinor: -take, heldDeltaMinor: -take)) }
            if held - take > 0 { releaseAllocations.append(Allocation(lotId: lot.id, remainingDeltaMinor: 0, heldDeltaMinor: -(held - take))) }
            left -= take
        }
        precondition(left == 0)
        let key = idempotencyKey ?? ""
        let (spend, _) = try SpendRows.record(store: store, tenant: tenantId, clientId: hold.clientId, amountMinor: capture, reason: reason,
                                              centerId: hold.centerId, bookingRef: hold.bookingRef, serviceCategory: hold.serviceCategory,
                                              holdId: holdId, allocations: captureAllocations, idempotencyKey: key,
                                              debit: Account.held(hold.clientId), entryType: .capture)
        if capture < hold.amountMinor {
            try store.appendEntry(tenant: tenantId, type: .release, client: hold.clientId, amountMinor: hold.amountMinor - capture,
                                  debit: Account.held(hold.clientId), credit: Account.available(hold.clientId), refId: holdId,
                                  centerId: hold.centerId, bookingRef: hold.bookingRef, idempotencyKey: key,
                                  reason: "partial_capture", allocations: releaseAllocations)
        }
        try settleExpiredLots(store: store, tenant: tenantId, lotIds: pins.map(\.lot.id))
        // The reply's balance never counts credit past valid_until.
        try store.expireDueLots(tenant: tenantId, client: hold.clientId, now: now)
        hold.state = .captured
        hold.capturedMinor = capture
        hold.spendId = spend.id
        try HoldRows.resolve(hold, tenant: tenantId, store: store)
        return HoldResult(hold: hold, spend: spend, balance: try store.summary(tenant: tenantId, client: hold.clientId))
    }

    public func resultId(_ output: HoldResult) -> String { output.hold.id }
    public func resultSeq(_ output: HoldResult) -> Int64 { output.balance.seq }
}

/// Lots past valid_until among `lotIds`: free credit on them (released from a
/// hold, or returned by a reversal) is expired at once, and a lot with
/// nothing held any more becomes `expired`.
func settleExpiredLots(store: LedgerStore, tenant: String, lotIds: [String]) throws {
    let now = store.clock.nowMicros()
    for id in Set(lotIds).sorted() {
        guard let lot = try store.lot(tenant: tenant, id: id), let until = lot.validUntilMicros, until <= now else { continue }
        if lot.freeMinor > 0 || (lot.state == .active && lot.heldMinor == 0) {
            try store.expire(tenant: tenant, lot: lot)
        }
    }
}

/// Releases an open hold on cancellation; with `expired`, the automatic
/// release at the hold's deadline.
public struct ReleaseHold: LedgerCommand {
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

    public func apply(_ store: LedgerStore) throws -> HoldResult {
        var hold = try HoldRows.open(store: store, tenant: tenantId, holdId: holdId)
        let pins = try HoldRows.pinned(store: store, tenant: tenantId, holdId: holdId)
        let allocations = pins.map { Allocation(lotId: $0.lot.id, remainingDeltaMinor: 0, heldDeltaMinor: -$0.heldMinor) }
        try store.appendEntry(tenant: tenantId, type: .release, client: hold.clientId, amountMinor: hold.amountMinor,
                              debit: Account.held(hold.clientId), credit: Account.available(hold.clientId), refId: holdId,
                              centerId: hold.centerId, bookingRef: hold.bookingRef, idempotencyKey: idempotencyKey ?? "",
                              reason: automatic ? "hold_expired" : "released", allocations: allocations)
        try store.expireDueLots(tenant: tenantId, client: hold.clientId, now: store.clock.nowMicros())
        try settleExpiredLots(store: store, tenant: tenantId, lotIds: pins.map(\.lot.id))
        hold.state = automatic ? .expired : .released
        try HoldRows.resolve(hold, tenant: tenantId, store: store)
        return HoldResult(hold: hold, spend: nil, balance: try store.summary(tenant: tenantId, client: hold.clientId))
    }

    public func resultId(_ output: HoldResult) -> String { output.hold.id }
    public func resultSeq(_ output: HoldResult) -> Int64 { output.balance.seq }
}

/// Refunds a spend fully or partly: the credit returns to the lots it came
/// from, most recently drawn first. Credit returned to a lot that has expired
/// since is expired again at once (it no longer counts).
public struct ReverseSpend: LedgerCommand {
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

    public func apply(_ store: LedgerStore) throws -> SpendResult {
        _ = try store.requireTenant(tenantId)
        guard var spend = try StoreReads(db: store.db).spend(tenant: tenantId, id: spendId) else {
            throw LedgerError.notFound(kind: "spend", id: spendId)
        }
        let reversible = spend.amountMinor - spend.reversedMinor
        guard amountMinor <= reversible else {
            throw LedgerError.reversalExceedsSpend(reversibleMinor: reversible, requestedMinor: amountMinor)
        }
        let allocations = try returnAllocations(store: store, tenant: tenantId, refId: spendId, amountMinor: amountMinor)
        let entry = try store.appendEntry(tenant: tenantId, type: .reversal, client: spend.clientId, amountMinor: amountMinor,
                                          debit: Account.consumption, credit: Account.available(spend.clientId), refId: spendId,
                                          centerId: spend.centerId, bookingRef: spend.bookingRef,
                                          idempotencyKey: idempotencyKey ?? "", reason: reason, allocations: allocations)
        try store.db.statement("UPDATE spends SET reversed_minor = reversed_minor + ? WHERE tenant_id = ? AND id = ?")
            .bind(.int(amountMinor), .text(tenantId), .text(spendId)).run()
        spend.reversedMinor += amountMinor
        precondition(entry.amountMinor == amountMinor)
        try settleExpiredLots(store: store, tenant: tenantId, lotIds: allocations.map(\.lotId))
        try store.expireDueLots(tenant: tenantId, client: spend.clientId, now: store.clock.nowMicros())
        spend.allocations = try StoreReads(db: store.db).allocations(tenant: tenantId, seq: spend.seq)
        return SpendResult(spend: spend, balance: try store.summary(tenant: tenantId, client: spend.clientId))
    }

    public func resultId(_ output: SpendResult) -> String { output.spend.id }
    public func resultSeq(_ output: SpendResult) -> Int64 { output.balance.seq }
}

/// Allocations returning `amountMinor` to the lots that `refId` drew from and
/// still owes, most recently drawn first.
func returnAllocations(store: LedgerStore, tenant: String, refId: String, amountMinor: Int64) throws -> [Allocation] {
    let owed = try store.outstandingDraws(tenant: tenant, refId: refId)
    var left = amountMinor
    var allocations: [Allocation] = []
    for draw in owed.reversed() where left > 0 && draw.minor > 0 {
        let give = min(left, draw.minor)
        allocations.append(Allocation(lotId: draw.lotId, remainingDeltaMinor: give, heldDeltaMinor: 0))
        left -= give
    }
    precondition(left == 0, "returning more than \(refId) drew")
    return allocations
}
