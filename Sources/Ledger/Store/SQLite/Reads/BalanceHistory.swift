/// Balances as they were right after an earlier entry (issue 14, GetBalance
/// `as_of_seq` / `as_of_time`).
///
/// The answer is today's computation (`ClientBalanceState.snapshot`) applied
/// to the client's lots and open holds as they were right after entry S,
/// with "now" = the time of entry S (or the time asked for). Nothing is
/// stored for it: lots change only through `allocations` rows (their
/// creation included), so a lot's remaining and held credit after S is the
/// sum of its allocations up to S; a hold was open after S when its HOLD
/// entry is at or before S and no entry with its id as ref_id (capture,
/// release, expiry) is.
///
/// Which lots and holds to look at, without reading the client's whole
/// history: every entry stores the client's balance right after it
/// (`available_after_minor`, `held_after_minor`), and that is exactly the sum
/// of the remaining credit of the lots active then, and of the amounts of the
/// holds open then. So the client's allocations and HOLD entries are walked
/// newest first from S, each lot or hold met for the first time is
/// reconstructed, and the walk stops as soon as what was found adds up to
/// those balances: every lot or hold not yet met held nothing after S. The
/// work is the client's entries between S and the last time the oldest lot
/// still active at S was touched (a few, typically), not the tenant's nor the
/// client's whole history. All of it runs in one read snapshot. Each lot's
/// state after S is the lot now minus what the client's allocations after S
/// changed (one walk of the client's entries after S, each joined to its
/// allocations by primary key): since migration 5 there is no index of
/// allocations by lot, one B-tree write less per draw. So the work also
/// grows with the client's entries after S.
public enum BalanceAsOf: Sendable, Equatable {
    /// Right after the tenant's entry with this seq (1…the tenant's latest).
    case seq(Int64)
    /// At this time: right after the client's last entry at or before it.
    case time(micros: Int64)
}

/// A balance as of an earlier point, and the time it is as of.
public struct HistoricBalance: Sendable, Equatable {
    /// `summary.seq`: the tenant seq asked for (`.seq`), or the client's last
    /// entry at or before the time (`.time`; 0 when there is none).
    public var balance: BalanceSnapshot
    /// The time of entry `summary.seq` (`.seq`), or the time asked for (`.time`).
    public var asOfMicros: Int64
}

extension LedgerReader {
    /// The client's balance as it was right after an earlier entry (see
    /// `BalanceHistory`), always from SQLite (never the balance cache), in
    /// one snapshot. `details: false` leaves lots, centers and holds empty.
    /// Throws `invalidArgument` for an `as_of_seq` outside 1…the tenant's
    /// latest seq; a client without entries by then has a zero balance.
    public func balance(tenant: String, client: String, asOf: BalanceAsOf, details: Bool = true) throws -> HistoricBalance {
        try snapshot {
            guard let tenantRow = try LedgerStore(db: db, clock: clock).tenant(tenant) else {
                throw LedgerError.notFound(kind: "tenant", id: tenant)
            }
            let history = BalanceHistory(db: db, tenant: tenant, client: client)
            switch asOf {
            case .seq(let seq):
                guard seq > 0, seq <= tenantRow.lastSeq else {
                    throw LedgerError.invalidArgument([.init("as_of_seq", "must be 1…\(tenantRow.lastSeq) (the tenant's latest seq)")])
                }
                guard let timeMicros = try history.entryTime(seq: seq) else {
                    preconditionFailure("tenant \(tenant): no entry \(seq) at or below last_seq \(tenantRow.lastSeq)")
                }
                if !details, let summary = try history.summaryWithoutExpiry(afterSeq: seq, nowMicros: timeMicros) {
                    return HistoricBalance(balance: BalanceSnapshot(summary: summary, lots: [], centers: [], openHolds: [], pendingExpiryMinor: 0),
                                           asOfMicros: timeMicros)
                }
                let state = try history.state(afterSeq: seq)
                return HistoricBalance(balance: BalanceHistory.listed(state.snapshot(client: client, seq: seq, nowMicros: timeMicros, details: details)),
                                       asOfMicros: timeMicros)
            case .time(let micros):
                let seq = try history.lastClientSeq(atOrBeforeMicros: micros) ?? 0
                let state = seq == 0 ? ClientBalanceState(lots: [], holds: []) : try history.state(afterSeq: seq)
                return HistoricBalance(balance: BalanceHistory.listed(state.snapshot(client: client, seq: seq, nowMicros: micros, details: details)),
                                       asOfMicros: micros)
            }
        }
    }
}

/// The reads behind an as-of balance, for one client of one tenant; run
/// inside the caller's read transaction.
struct BalanceHistory {
    let db: SQLiteConnection
    let tenant: String
    let client: String

    /// Migration 4 (released; migration 5 drops the index again):
    /// `allocations_by_lot` also carries seq and the deltas, so a lot's
    /// remaining and held credit after a seq was one range of this index.
    static let schemaSQL = """
        DROP INDEX allocations_by_lot;
        CREATE INDEX allocations_by_lot ON allocations (tenant_id, lot_id, seq, remaining_delta_minor, held_delta_minor);
        """

    /// Most lots and holds an as-of balance carries, like today's balance read.
    static let maxLots = LedgerLimits.maxLotsPerDraw
    static let maxHolds = 1_000

    func entryTime(seq: Int64) throws -> Int64? {
        try db.statement(SQL.entryTime).bind(.text(tenant), .int(seq)).first { $0.int(0) }
    }

    /// The seq of the client's last entry whose time is at or before `micros`.
    /// Entry times follow the writer's wall clock, so this walks the client's
    /// entries newest first (one index, no scan of the tenant) until one is
    /// at or before the time: its cost grows with the client's entries after it.
    func lastClientSeq(atOrBeforeMicros micros: Int64) throws -> Int64? {
        try db.statement(SQL.lastClientSeqAtTime).bind(.text(tenant), .text(client), .int(micros)).first { $0.int(0) }
    }

    /// The summary after `seq` straight from the client's last entry at or
    /// before it, when no lot of the client created by then was past its
    /// valid_until at `nowMicros` (then nothing was pending expiry, and the
    /// stored after-balances are the answer: two index searches instead of
    /// the walk); nil when some was (the walk decides).
    func summaryWithoutExpiry(afterSeq seq: Int64, nowMicros: Int64) throws -> BalanceSummary? {
        let due = try db.statement(SQL.anyLotDue).bind(.text(tenant), .text(client), .int(nowMicros), .int(seq)).first { _ in true } ?? false
        guard !due else { return nil }
        guard let last = try db.statement(SQL.lastClientEntry).bind(.text(tenant), .text(client), .int(seq))
            .first({ (available: $0.int(0), held: $0.int(1)) }) else {
            return BalanceSummary(clientId: client, availableMinor: 0, heldMinor: 0, seq: seq)
        }
        guard last.available >= 0 && last.held >= 0 else { throw LedgerError.inconsistent("negative balance stored after an entry of \(client)") }
        return BalanceSummary(clientId: client, availableMinor: last.available, heldMinor: last.held, seq: seq)
    }

    /// The snapshot with its lists cut to what one read lists (the summary
    /// and centers were computed from all the lots).
    static func listed(_ snapshot: BalanceSnapshot) -> BalanceSnapshot {
        var s = snapshot
        if s.lots.count > maxLots { s.lots = Array(s.lots.prefix(maxLots)) }
        if s.openHolds.count > maxHolds { s.openHolds = Array(s.openHolds.prefix(maxHolds)) }
        return s
    }

    /// The client's active lots and open holds as they were right after entry `seq`.
    func state(afterSeq seq: Int64) throws -> ClientBalanceState {
        guard let last = try db.statement(SQL.lastClientEntry).bind(.text(tenant), .text(client), .int(seq))
            .first({ (available: $0.int(0), held: $0.int(1)) }) else {
            return ClientBalanceState(lots: [], holds: [])
        }
        guard last.available >= 0 && last.held >= 0 else { throw LedgerError.inconsistent("negative balance stored after an entry of \(client)") }
        let lots = try lots(afterSeq: seq, remainingMinor: last.available + last.held)
        let holds = try openHolds(afterSeq: seq, heldMinor: last.held)
        // The same rows, in the same order, as today's read of the lots and
        // holds tables; all of them (the walk found them all): the caller
        // lists at most maxLots and maxHolds of them.
        return ClientBalanceState(lots: lots.sorted(by: Self.drawOrder), holds: holds.sorted { $0.seq < $1.seq })
    }

    /// `lots_by_client` order: soonest expiry first, no expiry last, then oldest (then id).
    static func drawOrder(_ a: Lot, _ b: Lot) -> Bool {
        switch (a.validUntilMicros, b.validUntilMicros) {
        case let (x?, y?) where x != y: return x < y
        case (nil, _?): return false
        case (_?, nil): return true
        default: return a.createdSeq != b.createdSeq ? a.createdSeq < b.createdSeq : a.id < b.id
        }
    }

    /// Lots with credit left after `seq`: their remaining credit adds up to
    /// `remainingMinor` (the client's available + held after it).
    private func lots(afterSeq seq: Int64, remainingMinor total: Int64) throws -> [Lot] {
        var found: [Lot] = []
        var foundMinor: Int64 = 0
        var seen: Set<String> = []
        guard total > 0 else { return [] }
        let changedSince = try lotChanges(afterSeq: seq)
        try db.statement(SQL.allocationWalk).bind(.text(tenant), .text(client), .int(seq)).forEachRow { row in
            let lotId = row.text(0)
            guard seen.insert(lotId).inserted else { return true }
            guard let lot = try lot(lotId, afterSeq: seq, changedSince: changedSince[lotId] ?? (0, 0)) else { return true }
            found.append(lot)
            foundMinor += lot.remainingMinor
            guard foundMinor <= total else {
                throw LedgerError.inconsistent("lots of \(client) after seq \(seq) hold \(foundMinor), more than the balance \(total)")
            }
            return foundMinor < total
        }
        guard foundMinor == total else {
            throw LedgerError.inconsistent("lots of \(client) after seq \(seq) hold \(foundMinor), the balance then is \(total)")
        }
        return found
    }

    /// Per lot, what the client's allocations after `seq` changed (remaining,
    /// held): the client's entries newest first down to `seq`, each joined to
    /// its allocations by primary key. Its cost grows with the client's
    /// entries after `seq` (there is no index of allocations by lot since
    /// migration 5, which took one B-tree write off every draw).
    private func lotChanges(afterSeq seq: Int64) throws -> [String: (remaining: Int64, held: Int64)] {
        var changes: [String: (remaining: Int64, held: Int64)] = [:]
        try db.statement(SQL.allocationsAfter).bind(.text(tenant), .text(client), .int(seq)).forEachRow { row in
            let (remaining, held) = changes[row.text(0)] ?? (0, 0)
            changes[row.text(0)] = (remaining + row.int(1), held + row.int(2))
            return true
        }
        return changes
    }

    /// The lot as it was right after `seq` (the lot now minus what the
    /// client's allocations after `seq` changed), or nil when nothing was
    /// left in it. Verify checks that a lot's allocations are all in entries
    /// of the lot's client, which this relies on.
    private func lot(_ id: String, afterSeq seq: Int64, changedSince change: (remaining: Int64, held: Int64)) throws -> Lot? {
        guard var lot = try db.statement(SQL.lot).bind(.text(tenant), .text(id)).first(LedgerStore.readLot) else {
            throw LedgerError.inconsistent("allocation to unknown lot \(id)")
        }
        guard lot.clientId == client else {
            throw LedgerError.inconsistent("lot \(id) of client \(lot.clientId) drawn by an entry of \(client)")
        }
        let (remaining, held) = (lot.remainingMinor - change.remaining, lot.heldMinor - change.held)
        guard held >= 0 && held <= remaining && remaining <= lot.amountMinor else {
            throw LedgerError.inconsistent("lot \(id) after seq \(seq): held \(held), remaining \(remaining) of \(lot.amountMinor)")
        }
        guard remaining > 0 else { return nil }
        lot.remainingMinor = remaining
        lot.heldMinor = held
        lot.state = .active
        return lot
    }

    /// Holds open right after `seq`: what they still held then adds up to
    /// `heldMinor`. A hold is settled by a release (ref_id = the hold; also
    /// the part a partial capture leaves) and a capture (ref_id = its spend,
    /// `holds.spend_id`); both are written by one command, so between the two
    /// entries the hold holds the part not captured yet.
    private func openHolds(afterSeq seq: Int64, heldMinor total: Int64) throws -> [Hold] {
        guard total > 0 else { return [] }
        var found: [Hold] = []
        var foundMinor: Int64 = 0
        let released = try db.statement(SQL.released)
        let captured = try db.statement(SQL.captured)
        try db.statement(SQL.holdWalk).bind(.text(tenant), .text(client), .int(seq)).forEachRow { row in
            var hold = HoldRows.read(row)
            var settledMinor = try released.bind(.text(tenant), .text(hold.id), .int(hold.seq), .int(seq)).first { $0.int(0) } ?? 0
            if let spendId = hold.spendId {
                settledMinor += try captured.bind(.text(tenant), .text(spendId), .int(seq)).first { $0.int(0) } ?? 0
            }
            guard settledMinor >= 0 && settledMinor <= hold.amountMinor else {
                throw LedgerError.inconsistent("hold \(hold.id) settled \(settledMinor) of \(hold.amountMinor)")
            }
            guard settledMinor < hold.amountMinor else { return true }
            hold.state = .held
            hold.capturedMinor = 0
            hold.spendId = nil
            found.append(hold)
            foundMinor += hold.amountMinor - settledMinor
            guard foundMinor <= total else {
                throw LedgerError.inconsistent("holds of \(client) open after seq \(seq) hold \(foundMinor), more than \(total)")
            }
            return foundMinor < total
        }
        guard foundMinor == total else {
            throw LedgerError.inconsistent("holds of \(client) open after seq \(seq) hold \(foundMinor), the held balance then is \(total)")
        }
        return found
    }

    /// The statements, each one index search or range (tests check their plans).
    enum SQL {
        static let entryTime = "SELECT time_micros FROM entries WHERE tenant_id = ? AND seq = ?"
        static let lastClientSeqAtTime = """
            SELECT seq FROM entries INDEXED BY entries_by_client
            WHERE tenant_id = ? AND client_id = ? AND time_micros <= ? ORDER BY seq DESC LIMIT 1
            """
        static let lastClientEntry = """
            SELECT available_after_minor, held_after_minor FROM entries INDEXED BY entries_by_client
            WHERE tenant_id = ? AND client_id = ? AND seq <= ? ORDER BY seq DESC LIMIT 1
            """
        /// The client's allocations, newest entry first (entries_by_client, then the allocations' primary key).
        static let allocationWalk = """
            SELECT a.lot_id FROM entries e INDEXED BY entries_by_client
            JOIN allocations a ON a.tenant_id = e.tenant_id AND a.seq = e.seq
            WHERE e.tenant_id = ? AND e.client_id = ? AND e.seq <= ? ORDER BY e.seq DESC
            """
        /// The client's allocations after a seq, newest entry first (entries_by_client, then the allocations' primary key).
        static let allocationsAfter = """
            SELECT a.lot_id, a.remaining_delta_minor, a.held_delta_minor FROM entries e INDEXED BY entries_by_client
            JOIN allocations a ON a.tenant_id = e.tenant_id AND a.seq = e.seq
            WHERE e.tenant_id = ? AND e.client_id = ? AND e.seq > ? ORDER BY e.seq DESC
            """
        static let lot = "SELECT \(LedgerStore.lotColumns) FROM lots WHERE tenant_id = ? AND id = ?"
        /// Whether any lot of the client created by a seq has a valid_until at or before a time (valid_until never changes).
        static let anyLotDue = """
            SELECT 1 FROM lots INDEXED BY lots_by_client
            WHERE tenant_id = ? AND client_id = ? AND state IN ('active', 'exhausted', 'expired')
              AND valid_until_micros <= ? AND created_seq <= ? LIMIT 1
            """
        /// The client's HOLD entries newest first, with their holds.
        static let holdWalk = """
            SELECT \(holdColumns) FROM entries e INDEXED BY entries_by_client
            JOIN holds h ON h.tenant_id = e.tenant_id AND h.id = e.ref_id
            WHERE e.tenant_id = ? AND e.client_id = ? AND e.seq <= ? AND e.type = 'hold' ORDER BY e.seq DESC
            """
        static let released = """
            SELECT COALESCE(SUM(amount_minor), 0) FROM entries INDEXED BY entries_by_ref
            WHERE tenant_id = ? AND ref_id = ? AND seq > ? AND seq <= ? AND type = 'release'
            """
        static let captured = "SELECT amount_minor FROM spends WHERE tenant_id = ? AND id = ? AND seq <= ?"
        static let all = [entryTime, lastClientSeqAtTime, lastClientEntry, allocationWalk, allocationsAfter, lot, anyLotDue, holdWalk, released, captured]

        /// `HoldRows.columns` of the `holds` table aliased `h`.
        static let holdColumns = "h." + HoldRows.columns.replacing(", ", with: ", h.")
    }
}
