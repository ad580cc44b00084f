/// Reads on a connection of their own, never waiting for the writer (WAL).
/// Not thread-safe: one reader per thread (e.g. per event loop).
public final class LedgerReader {
    let db: SQLiteConnection
    let clock: LedgerClock
    let cache: BalanceCache
    private var reads: StoreReads { StoreReads(db: db) }

    init(path: String, clock: LedgerClock, cache: BalanceCache) throws {
        var options = SQLiteConnection.OpenOptions()
        options.readOnly = true
        db = try SQLiteConnection(path: path, options: options)
        self.clock = clock
        self.cache = cache
    }

    /// Runs `body` in one read transaction: everything it reads is one snapshot.
    func snapshot<T>(_ body: () throws -> T) throws -> T {
        try db.transaction(immediate: false, body)
    }

    public func tenant(_ id: String) throws -> Tenant? {
        try LedgerStore(db: db, clock: clock).tenant(id)
    }

    public func apiKey(id: String) throws -> APIKeyRecord? { try reads.apiKey(id: id) }

    public func package(tenant: String, id: String) throws -> CreditPackage? { try reads.package(tenant: tenant, id: id) }
    public func spend(tenant: String, id: String) throws -> Spend? { try reads.spend(tenant: tenant, id: id) }
    public func hold(tenant: String, id: String) throws -> Hold? { try reads.hold(tenant: tenant, id: id) }
    public func writeOff(tenant: String, id: String) throws -> WriteOff? { try reads.writeOff(tenant: tenant, id: id) }

    /// A client's balance, lots, per-center credit and open holds, in one
    /// snapshot, with the tenant seq it reflects. Lots past valid_until count
    /// for nothing even before their expiry entry is written. Served from the
    /// balance cache when the client's rows are there; `details: false`
    /// leaves lots, centers and holds empty (the summary is the same).
    public func balance(tenant: String, client: String, details: Bool = true) throws -> BalanceSnapshot {
        let key = BalanceCache.Key(tenant: tenant, client: client)
        switch cache.lookup(key) {
        case .hit(let rows, let seq):
            return rows.snapshot(client: client, seq: seq, nowMicros: clock.nowMicros(), details: details)
        case .miss(let ticket):
            // The ticket is taken before the read transaction opens (see BalanceCache).
            let now = clock.nowMicros()
            let (rows, seq) = try balanceRows(tenant: tenant, client: client, nowMicros: now)
            if rows.overflow == nil { cache.store(key, rows, tenantSeq: seq, ticket: ticket) }
            return rows.snapshot(client: client, seq: seq, nowMicros: now, details: details)
        }
    }

    /// The same, always from SQLite (tests compare the two).
    func balanceUncached(tenant: String, client: String) throws -> BalanceSnapshot {
        let now = clock.nowMicros()
        let (rows, seq) = try balanceRows(tenant: tenant, client: client, nowMicros: now)
        return rows.snapshot(client: client, seq: seq, nowMicros: now, details: true)
    }

    /// Lots and holds one balance read lists at most; a client with more
    /// gets its summary and per-center credit from SQL totals instead.
    static let maxListedLots = LedgerLimits.maxLotsPerDraw
    static let maxListedHolds = 1_000

    /// The rows a balance is computed from, and the tenant seq, in one snapshot.
    private func balanceRows(tenant: String, client: String, nowMicros now: Int64) throws -> (ClientBalanceState, Int64) {
        try snapshot {
            guard let tenantRow = try LedgerStore(db: db, clock: clock).tenant(tenant) else {
                throw LedgerError.notFound(kind: "tenant", id: tenant)
            }
            let lots = try db.statement("""
                SELECT \(LedgerStore.lotColumns) FROM lots INDEXED BY lots_by_client WHERE tenant_id = ? AND client_id = ? AND state = 'active'
                ORDER BY valid_until_micros IS NULL, valid_until_micros, created_seq LIMIT ?
                """).bind(.text(tenant), .text(client), .int(Int64(Self.maxListedLots + 1))).rows(LedgerStore.readLot)
            let holds = try db.statement("SELECT \(HoldRows.columns) FROM holds WHERE tenant_id = ? AND client_id = ? AND state = 'held' ORDER BY seq LIMIT ?")
                .bind(.text(tenant), .text(client), .int(Int64(Self.maxListedHolds + 1))).rows(HoldRows.read)
            var state = ClientBalanceState(lots: Array(lots.prefix(Self.maxListedLots)), holds: Array(holds.prefix(Self.maxListedHolds)))
            if lots.count > Self.maxListedLots || holds.count > Self.maxListedHolds {
                state.overflow = try overflowTotals(tenant: tenant, client: client, nowMicros: now)
            }
            return (state, tenantRow.lastSeq)
        }
    }

    /// The totals of all of a client's lots (in the caller's snapshot).
    private func overflowTotals(tenant: String, client: String, nowMicros now: Int64) throws -> ClientBalanceState.Overflow {
        let book = try LedgerStore(db: db, clock: clock).clientBalance(tenant: tenant, client: client)
        let pastDue = try db.statement("""
            SELECT COALESCE(SUM(remaining_minor - held_minor), 0) FROM lots INDEXED BY lots_by_client
            WHERE tenant_id = ? AND client_id = ? AND state = 'active' AND valid_until_micros IS NOT NULL AND valid_until_micros <= ?
            """).bind(.text(tenant), .text(client), .int(now)).first { $0.int(0) } ?? 0
        let centers = try db.statement("""
            SELECT center_id, SUM(CASE WHEN valid_until_micros IS NULL OR valid_until_micros > ?1 THEN remaining_minor ELSE held_minor END)
            FROM lots INDEXED BY lots_by_client WHERE tenant_id = ?2 AND client_id = ?3 AND state = 'active'
            GROUP BY center_id ORDER BY center_id
            """).bind(.int(now), .text(tenant), .text(client)).rows { CenterBalance(centerId: $0.text(0), remainingMinor: $0.int(1)) }
        return ClientBalanceState.Overflow(nowMicros: now, availableBookMinor: book.availableMinor, heldMinor: book.heldMinor,
                                           pastDueFreeMinor: pastDue, centers: centers.filter { $0.remainingMinor > 0 })
    }

    public struct ClientBalanceRow: Sendable, Equatable {
        public var clientId: String
        public var availableMinor: Int64
        public var heldMinor: Int64
        public var lastSeq: Int64
    }

    /// Balances of the tenant's clients ordered by client id, after `afterClientId`.
    /// With `centerId`: each client's remaining credit from lots of that center.
    public func listBalances(tenant: String, centerId: String?, afterClientId: String?, limit: Int) throws -> [ClientBalanceRow] {
        try listBalanceRows(tenant: tenant, centerId: centerId, afterClientId: afterClientId, limit: limit)
    }

    /// The page and the tenant seq it reflects, read in one snapshot.
    public func listBalancesWithSeq(tenant: String, centerId: String?, afterClientId: String?, limit: Int) throws -> (rows: [ClientBalanceRow], seq: Int64) {
        try snapshot {
            guard let tenantRow = try LedgerStore(db: db, clock: clock).tenant(tenant) else {
                throw LedgerError.notFound(kind: "tenant", id: tenant)
            }
            return (try listBalanceRows(tenant: tenant, centerId: centerId, afterClientId: afterClientId, limit: limit), tenantRow.lastSeq)
        }
    }

    private func listBalanceRows(tenant: String, centerId: String?, afterClientId: String?, limit: Int) throws -> [ClientBalanceRow] {
        precondition(limit > 0 && limit <= LedgerLimits.maxPageSize + 1)
        // Like balance(): credit of lots past valid_until counts for nothing,
        // even before its expiry entry is written.
        let now = clock.nowMicros()
        if let centerId {
            return try db.statement("""
                SELECT client_id,
                  SUM(CASE WHEN valid_until_micros IS NULL OR valid_until_micros > ? THEN remaining_minor - held_minor ELSE 0 END),
                  SUM(held_minor), MAX(created_seq) FROM lots
                WHERE tenant_id = ? AND center_id = ? AND state = 'active' AND client_id > ?
                GROUP BY client_id ORDER BY client_id LIMIT ?
                """).bind(.int(now), .text(tenant), .text(centerId), .text(afterClientId ?? ""), .int(Int64(limit)))
                .rows { ClientBalanceRow(clientId: $0.text(0), availableMinor: $0.int(1), heldMinor: $0.int(2), lastSeq: $0.int(3)) }
        }
        return try db.statement("""
            SELECT c.client_id, c.available_minor - COALESCE((
                SELECT SUM(l.remaining_minor - l.held_minor) FROM lots l INDEXED BY lots_by_client
                WHERE l.tenant_id = c.tenant_id AND l.client_id = c.client_id AND l.state = 'active'
                  AND l.valid_until_micros IS NOT NULL AND l.valid_until_micros <= ?), 0),
              c.held_minor, c.last_seq
            FROM clients c WHERE c.tenant_id = ? AND c.client_id > ? ORDER BY c.client_id LIMIT ?
            """).bind(.int(now), .text(tenant), .text(afterClientId ?? ""), .int(Int64(limit)))
            .rows { ClientBalanceRow(clientId: $0.text(0), availableMinor: $0.int(1), heldMinor: $0.int(2), lastSeq: $0.int(3)) }
    }

    public struct StatementQuery: Sendable {
        public var tenant: String
        public var clientId: String
        public var newestFirst = true
        public var fromMicros: Int64?
        public var untilMicros: Int64?
        public var types: Set<EntryType> = []
        /// Keyset cursor: entries strictly after (in the chosen order) this seq.
        public var afterSeq: Int64?
        public var limit: Int = LedgerLimits.defaultPageSize

        public init(tenant: String, clientId: String) {
            self.tenant = tenant
            self.clientId = clientId
        }
    }

    /// A client's ledger entries, keyset-paginated by seq: stable under
    /// concurrent writes (new entries only ever get higher seqs).
    public func statement(_ q: StatementQuery) throws -> [LedgerEntry] {
        precondition(q.limit > 0 && q.limit <= LedgerLimits.maxPageSize + 1)
        let types = Self.inList("type", q.types.map(\.rawValue).sorted())
        let order = q.newestFirst ? "DESC" : "ASC"
        let cursor = q.newestFirst ? "seq < ?" : "seq > ?"
        let sql = """
            SELECT \(Self.entryColumns)
            FROM entries WHERE tenant_id = ? AND client_id = ? AND \(cursor) AND time_micros >= ? AND time_micros < ?\(types.sql)
            ORDER BY seq \(order) LIMIT ?
            """
        var binds: [SQLValue] = [.text(q.tenant), .text(q.clientId),
                                 .int(q.afterSeq ?? (q.newestFirst ? Int64.max : 0)),
                                 .int(q.fromMicros ?? Int64.min), .int(q.untilMicros ?? Int64.max)]
        binds += types.binds
        binds.append(.int(Int64(q.limit)))
        return try snapshot {
            try withAllocations(db.statement(sql).bind(binds).rows(Self.readEntry), tenant: q.tenant)
        }
    }

    /// The columns `readEntry` reads, in its order.
    static let entryColumns = """
        seq, type, client_id, amount_minor, debit_account, credit_account, available_after_minor, held_after_minor,
        time_micros, ref_id, center_id, booking_ref, payment_ref, idempotency_key, reason, note
        """

    /// `AND column IN (?, …)` and its binds; nothing for an empty list.
    static func inList(_ column: String, _ values: [String]) -> (sql: String, binds: [SQLValue]) {
        guard !values.isEmpty else { return ("", []) }
        return (" AND \(column) IN (\(values.map { _ in "?" }.joined(separator: ",")))", values.map { .text($0) })
    }

    /// The entries with their allocations (in the caller's snapshot).
    func withAllocations(_ entries: [LedgerEntry], tenant: String) throws -> [LedgerEntry] {
        guard !entries.isEmpty else { return entries }
        let allocations = try reads.allocations(tenant: tenant, seqs: entries.map(\.seq))
        var entries = entries
        for i in entries.indices { entries[i].allocations = allocations[entries[i].seq] ?? [] }
        return entries
    }

    static func readEntry(_ r: Row) -> LedgerEntry {
        LedgerEntry(seq: r.int(0), type: EntryType(rawValue: r.text(1))!, clientId: r.text(2), amountMinor: r.int(3),
                    debitAccount: r.text(4), creditAccount: r.text(5), availableAfterMinor: r.int(6), heldAfterMinor: r.int(7),
                    timeMicros: r.int(8), refId: r.text(9), centerId: r.text(10), bookingRef: r.text(11), paymentRef: r.text(12),
                    idempotencyKey: r.text(13), reason: r.text(14), note: r.text(15), allocations: [])
    }

    public func listPackages(tenant: String, includeInactive: Bool, afterId: String?, limit: Int) throws -> [CreditPackage] {
        try db.statement("""
            SELECT \(PackageRows.columns) FROM packages WHERE tenant_id = ? AND (active = 1 OR ?) AND id > ? ORDER BY id LIMIT ?
            """).bind(.text(tenant), .int(includeInactive ? 1 : 0), .text(afterId ?? ""), .int(Int64(limit))).rows(PackageRows.read)
    }

    public func listWriteOffs(tenant: String, clientId: String?, afterSeq: Int64?, limit: Int) throws -> [WriteOff] {
        try db.statement("""
            SELECT id, client_id, amount_minor, reason, state, seq, void_seq, created_micros FROM write_offs
            WHERE tenant_id = ? AND (? = '' OR client_id = ?) AND seq < ? ORDER BY seq DESC LIMIT ?
            """).bind(.text(tenant), .text(clientId ?? ""), .text(clientId ?? ""), .int(afterSeq ?? Int64.max), .int(Int64(limit)))
            .rows(StoreReads.readWriteOff)
    }

    public struct IdempotencyLookup: Sendable, Equatable {
        public var operation: String
        public var resultId: String
        public var seq: Int64
        public var reply: [UInt8]
        public var createdMicros: Int64
    }

    public func idempotency(tenant: String, key: String) throws -> IdempotencyLookup? {
        try LedgerStore(db: db, clock: clock).idempotencyRecord(tenant: tenant, key: key).map {
            IdempotencyLookup(operation: $0.operation, resultId: $0.resultId, seq: $0.seq, reply: $0.reply, createdMicros: $0.createdMicros)
        }
    }
}
