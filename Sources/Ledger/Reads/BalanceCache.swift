import Synchronization

/// What a client's balance is computed from: its active lots (including
/// those past valid_until whose expiry entry is not written yet) and its open
/// holds. The summary depends on the time of the read, so the cache keeps
/// these rows, not the computed balance.
struct ClientBalanceState: Sendable {
    var lots: [Lot]
    var holds: [Hold]
    /// Set when `lots` (or `holds`) is only the first part of the client's:
    /// the totals of all of them, computed in the same read for one time.
    var overflow: Overflow? = nil

    /// The summary and per-center credit of all the client's lots at
    /// `nowMicros`, for a client with more lots than one read lists.
    struct Overflow: Sendable {
        var nowMicros: Int64
        /// The client's available balance in the books (lots past valid_until included).
        var availableBookMinor: Int64
        var heldMinor: Int64
        /// Free credit of active lots past valid_until at `nowMicros`.
        var pastDueFreeMinor: Int64
        var centers: [CenterBalance]
    }

    /// The balance at `nowMicros`: lots past valid_until count for nothing.
    func snapshot(client: String, seq: Int64, nowMicros now: Int64, details: Bool) -> BalanceSnapshot {
        if let overflow {
            precondition(overflow.nowMicros == now, "overflow totals are for the read's own time")
            let live = details ? lots.filter { lot in lot.validUntilMicros.map { $0 > now } ?? true } : []
            let available = overflow.availableBookMinor - overflow.pastDueFreeMinor
            assert(available >= 0 && overflow.heldMinor >= 0 && overflow.pastDueFreeMinor >= 0)
            return BalanceSnapshot(
                summary: BalanceSummary(clientId: client, availableMinor: available, heldMinor: overflow.heldMinor, seq: seq),
                lots: live, centers: details ? overflow.centers : [], openHolds: details ? holds : [],
                pendingExpiryMinor: overflow.pastDueFreeMinor)
        }
        var available: Int64 = 0, held: Int64 = 0, pending: Int64 = 0
        var centers: [String: Int64] = [:]
        var live: [Lot] = []
        for lot in lots {
            held += lot.heldMinor
            let expired = lot.validUntilMicros.map { $0 <= now } ?? false
            if expired {
                pending += lot.freeMinor
                if details { centers[lot.centerId, default: 0] += lot.heldMinor }
            } else {
                available += lot.freeMinor
                if details {
                    centers[lot.centerId, default: 0] += lot.remainingMinor
                    live.append(lot)
                }
            }
        }
        assert(available >= 0 && held >= 0 && pending >= 0, "lot rows break 0 ≤ held ≤ remaining")
        return BalanceSnapshot(
            summary: BalanceSummary(clientId: client, availableMinor: available, heldMinor: held, seq: seq),
            lots: live,
            centers: !details ? [] : centers.filter { $0.value > 0 }.map { CenterBalance(centerId: $0.key, remainingMinor: $0.value) }
                .sorted { $0.centerId < $1.centerId },
            openHolds: details ? holds : [], pendingExpiryMinor: pending)
    }
}

/// Balance reads served from memory. Readers fill it from their SQLite
/// snapshots; the single writer invalidates every client a batch touched,
/// in two steps around COMMIT:
///
/// 1. before COMMIT, `beginCommit` drops the touched clients' entries and
///    marks them pending: until step 2 nobody reads them from the cache or
///    stores them (so no reader can see the new state from SQLite and then
///    an older one from the cache);
/// 2. after COMMIT, `endCommit` advances the generation, stamps the touched
///    clients with it and records each touched tenant's last seq. A reader
///    stores what it read only if no invalidation of that client happened
///    after the generation it noted *before* opening its read transaction,
///    so a snapshot older than a commit is never cached.
///
/// Memory is bounded twice: by clients (`capacity`) and by the lot and hold
/// rows they hold together (`rowBudget`), since a client's rows grow with its
/// purchases. When either is full the oldest entries are evicted, one at a
/// time (no "empty it all" cliff); the highest invalidation generation of
/// any evicted entry is kept as a floor for clients without an entry, so
/// that a reader that started before an evicted invalidation cannot store
/// stale rows. Thread-safe.
public final class BalanceCache: @unchecked Sendable {
    struct Key: Hashable, Sendable {
        var tenant: String
        var client: String
    }

    private struct Slot {
        var state: ClientBalanceState?
        /// Generation of the last invalidation of this client (0: none seen).
        var invalidatedAt: UInt64
    }

    /// A miss: the generation noted before the reader opened its snapshot.
    struct Ticket {
        fileprivate let generation: UInt64
        fileprivate let cacheable: Bool
    }

    enum Lookup {
        case hit(ClientBalanceState, seq: Int64)
        case miss(Ticket)
    }

    private struct State {
        var slots: BoundedDictionary<Key, Slot>
        var pending: Set<Key> = []
        var tenantSeq: [String: Int64] = [:]
        var generation: UInt64 = 1
        /// The last invalidation of any client whose slot was evicted: what a
        /// client without a slot may have been invalidated at, at most.
        var evictedFloor: UInt64 = 0
        /// Lot and hold rows of all cached states together.
        var rows = 0
        var hits = 0
        var misses = 0
    }

    public let capacity: Int
    public let rowBudget: Int
    private let state: Mutex<State>
    /// Clients with more lots and open holds than this are always read from
    /// SQLite: the cache's memory stays bounded by capacity × this many rows.
    static let maxRowsPerClient = 64

    /// Rows the cache holds at most by default: about 3 MiB of lots and holds.
    public static let defaultRowBudget = 8_192

    /// `capacity` 0 disables the cache (every read goes to SQLite).
    public init(capacity: Int, rowBudget: Int = BalanceCache.defaultRowBudget) {
        precondition(capacity >= 0 && rowBudget >= 0)
        self.capacity = capacity
        self.rowBudget = rowBudget
        self.state = Mutex(State(slots: BoundedDictionary(capacity: max(1, capacity))))
    }

    /// Evicts the oldest slot (not `keep`), keeping its invalidation as a floor.
    private static func evictOne(_ s: inout State, keep: Key?) -> Bool {
        guard var evicted = s.slots.evictOldest() else { return false }
        if evicted.key == keep {
            // Put it back as the newest; evict the next one.
            s.slots.insert(evicted.key, evicted.value)
            guard s.slots.count > 1, let next = s.slots.evictOldest() else { return false }
            evicted = next
        }
        s.evictedFloor = max(s.evictedFloor, evicted.value.invalidatedAt)
        s.rows -= rowCount(evicted.value.state)
        return true
    }

    private static func rowCount(_ rows: ClientBalanceState?) -> Int {
        rows.map { $0.lots.count + $0.holds.count } ?? 0
    }

    func lookup(_ key: Key) -> Lookup {
        state.withLock { s in
            guard capacity > 0, !s.pending.contains(key) else {
                return .miss(Ticket(generation: s.generation, cacheable: false))
            }
            if let rows = s.slots[key]?.state, let seq = s.tenantSeq[key.tenant] {
                s.hits &+= 1
                return .hit(rows, seq: seq)
            }
            s.misses &+= 1
            return .miss(Ticket(generation: s.generation, cacheable: true))
        }
    }

    /// Stores what a reader read in a snapshot opened after `ticket` was taken.
    func store(_ key: Key, _ rows: ClientBalanceState, tenantSeq seq: Int64, ticket: Ticket) {
        let newRows = Self.rowCount(rows)
        guard ticket.cacheable, newRows <= Self.maxRowsPerClient, newRows <= rowBudget else { return }
        let capacity = capacity, rowBudget = rowBudget
        state.withLock { s in
            guard !s.pending.contains(key) else { return }
            let existing = s.slots[key]
            let invalidatedAt = existing?.invalidatedAt ?? s.evictedFloor
            guard invalidatedAt <= ticket.generation else { return }
            let oldRows = Self.rowCount(existing?.state)
            while s.rows - oldRows + newRows > rowBudget {
                guard Self.evictOne(&s, keep: key) else { return }
            }
            if existing == nil {
                while s.slots.count >= capacity {
                    guard Self.evictOne(&s, keep: nil) else { return }
                }
            }
            s.rows += newRows - oldRows
            assert(s.rows >= 0 && s.rows <= rowBudget, "balance cache rows out of bounds: \(s.rows)")
            if existing != nil {
                s.slots.update(key) { $0 = Slot(state: rows, invalidatedAt: invalidatedAt) }
            } else {
                s.slots.insert(key, Slot(state: rows, invalidatedAt: invalidatedAt))
            }
            assert(s.slots.count <= capacity)
            // Seqs only grow; a reader's older seq never replaces a newer one.
            s.tenantSeq[key.tenant] = max(s.tenantSeq[key.tenant] ?? 0, seq)
        }
    }

    /// Writer, before COMMIT: the touched clients leave the cache until `endCommit`.
    func beginCommit(_ touched: Set<Key>) {
        guard !touched.isEmpty else { return }
        state.withLock { s in
            precondition(s.pending.isEmpty, "one writer: commits do not overlap")
            s.pending = touched
            for key in touched {
                s.rows -= Self.rowCount(s.slots[key]?.state)
                s.slots.update(key) { $0.state = nil }
            }
            assert(s.rows >= 0, "balance cache rows went negative")
        }
    }

    /// Writer, after COMMIT (or ROLLBACK): a newer generation stamped on the
    /// touched clients; the tenants' last seqs as committed (none after a ROLLBACK).
    func endCommit(_ touched: Set<Key>, tenantSeqs: [String: Int64]) {
        guard !touched.isEmpty || !tenantSeqs.isEmpty else { return }
        let capacity = capacity
        state.withLock { s in
            s.generation += 1
            guard capacity > 0 else { return }
            for key in touched {
                let generation = s.generation
                if let existing = s.slots[key] {
                    s.rows -= Self.rowCount(existing.state)
                    s.slots.update(key) { $0 = Slot(state: nil, invalidatedAt: generation) }
                    continue
                }
                // Remembered as a new slot; the oldest makes room (its invalidation becomes the floor).
                if s.slots.count >= capacity { _ = Self.evictOne(&s, keep: nil) }
                s.slots.insert(key, Slot(state: nil, invalidatedAt: generation))
            }
            s.pending.removeAll(keepingCapacity: true)
            for (tenant, seq) in tenantSeqs {
                s.tenantSeq[tenant] = max(s.tenantSeq[tenant] ?? 0, seq)
            }
        }
    }

    public struct Stats: Sendable, Equatable {
        public var entries: Int
        /// Lot and hold rows held by the cached entries.
        public var rows: Int
        public var hits: Int
        public var misses: Int
    }

    public var stats: Stats {
        state.withLock { s in Stats(entries: s.slots.values.count(where: { $0.state != nil }), rows: s.rows, hits: s.hits, misses: s.misses) }
    }
}
