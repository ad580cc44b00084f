/// The store's side of the offline bulk seed (LedgerSeed): every SQL
/// statement the seed runs, on a connection of its own. The seeder plans the
/// rows with the money model (Sources/Ledger/Model); this writes them.
/// One transaction (`begin` … `commit`); run it with no server on the database.
public final class BulkLoad {
    let db: SQLiteConnection
    private let settings: LoadSettings
    private var indexes: DeferredIndexes?
    private var statements: Statements?

    /// Whether the load runs with a rollback journal (no other connection on the database) rather than the WAL.
    public var rollbackJournal: Bool { settings.rollbackJournal }
    /// Whether `dropIndexes` dropped the secondary indexes (built again by `rebuildIndexes`).
    public var indexesDropped: Bool { !(indexes?.dropped.isEmpty ?? true) }

    private struct Statements {
        let insertEntry: PreparedStatement
        let insertAllocation: PreparedStatement
        let stageLot: PreparedStatement
        let stageSpend: PreparedStatement
        let stageHold: PreparedStatement
        let insertClient: PreparedStatement
        let insertAccount: PreparedStatement
    }

    static let stagedTables = ["lots", "spends", "holds"]

    /// Opens the database, runs the migrations and sets the load's connection settings.
    public init(path: String, clock: LedgerClock, cacheMiB: Int) throws {
        db = try SQLiteConnection(path: path)
        try Schema.migrate(db, clock: clock)
        settings = try LoadSettings(db: db, cacheMiB: cacheMiB)
    }

    public func begin() throws { try db.run("BEGIN IMMEDIATE") }
    public func commit() throws { try db.run("COMMIT") }
    public func rollback() { try? db.run("ROLLBACK") }

    /// Runs a normal command on a store over the load's connection (tenant, key, packages).
    public func apply<C: LedgerCommand>(_ command: C, clock: LedgerClock) throws -> C.Output {
        try command.validate()
        return try command.apply(LedgerStore(db: db, clock: clock))
    }

    /// Drops the secondary indexes of the filled tables when the load is at
    /// least as large as what the database holds (see `DeferredIndexes`).
    public func dropIndexes(plannedEntries: Int) throws {
        indexes = try DeferredIndexes.drop(db: db, plannedEntries: plannedEntries)
    }

    public func rebuildIndexes() throws {
        try indexes?.rebuild()
    }

    /// Creates the staging tables of lots, spends and holds (random ids:
    /// staged in arrival order, moved in key order) and prepares the inserts.
    public func prepareInserts() throws {
        for table in Self.stagedTables {
            // Same columns, in the same order; no key, no constraint (checked when the rows move).
            try db.execute("CREATE TEMP TABLE seed_\(table) AS SELECT * FROM main.\(table) WHERE 0")
        }
        statements = Statements(
            insertEntry: try db.statement("""
                INSERT INTO entries (tenant_id, seq, type, client_id, amount_minor, debit_account, credit_account,
                  available_after_minor, held_after_minor, time_micros, ref_id, center_id, booking_ref, payment_ref,
                  idempotency_key, reason, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """),
            insertAllocation: try db.statement("""
                INSERT INTO allocations (tenant_id, seq, ordinal, lot_id, remaining_delta_minor, held_delta_minor) VALUES (?, ?, ?, ?, ?, ?)
                """),
            stageLot: try db.statement("""
                INSERT INTO temp.seed_lots (tenant_id, \(LedgerStore.lotColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """),
            stageSpend: try db.statement("INSERT INTO temp.seed_spends (tenant_id, \(SpendRows.columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            stageHold: try db.statement("INSERT INTO temp.seed_holds (tenant_id, \(HoldRows.columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            insertClient: try db.statement("INSERT INTO clients (tenant_id, client_id, available_minor, held_minor, last_seq) VALUES (?, ?, ?, ?, ?)"),
            insertAccount: try db.statement("INSERT INTO accounts (tenant_id, account, balance_minor) VALUES (?, ?, ?)"))
    }

    private var prepared: Statements {
        guard let statements else { preconditionFailure("BulkLoad.prepareInserts was not called") }
        return statements
    }

    /// The row `LedgerStore.appendEntry` writes for `entry` at `seq`.
    public func insertEntry(tenant: String, seq: Int64, _ entry: EntryPlan, availableAfterMinor: Int64, heldAfterMinor: Int64,
                            timeMicros: Int64) throws {
        try prepared.insertEntry.bind(
            .text(tenant), .int(seq), .text(entry.type.rawValue), .text(entry.clientId), .int(entry.amountMinor), .text(entry.debit),
            .text(entry.credit), .int(availableAfterMinor), .int(heldAfterMinor), .int(timeMicros), .text(entry.refId), .text(entry.centerId),
            .text(entry.bookingRef), .text(entry.paymentRef), .text(entry.idempotencyKey), .text(entry.reason), .text(entry.note)).run()
    }

    public func insertAllocation(tenant: String, seq: Int64, ordinal: Int, _ a: Allocation) throws {
        try prepared.insertAllocation.bind(.text(tenant), .int(seq), .int(Int64(ordinal)), .text(a.lotId), .int(a.remainingDeltaMinor),
                                           .int(a.heldDeltaMinor)).run()
    }

    /// A lot in its final state (nothing held).
    public func stageLot(_ lot: Lot, tenant: String) throws {
        precondition(lot.heldMinor == 0, "lot \(lot.id) is written with credit held")
        try prepared.stageLot.bind(
            .text(tenant), .text(lot.id), .text(lot.clientId), .text(lot.origin.rawValue), .text(lot.centerId), .int(lot.amountMinor),
            .int(lot.remainingMinor), .int(lot.heldMinor), lot.validFromMicros.map(SQLValue.int) ?? .null,
            lot.validUntilMicros.map(SQLValue.int) ?? .null, .text(ListCodec.encode(lot.scope.serviceCategories)),
            .text(ListCodec.encode(lot.scope.centers)), .text(ListCodec.encode(lot.scope.membershipIds)),
            lot.packageId.map(SQLValue.text) ?? .null, lot.paymentRef.map(SQLValue.text) ?? .null, .int(lot.priceMinor), .text(lot.note),
            .int(lot.createdSeq), .int(lot.createdMicros), .text(lot.state.rawValue)).run()
    }

    public func stageSpend(_ s: Spend, tenant: String) throws {
        try prepared.stageSpend.bind(
            .text(tenant), .text(s.id), .text(s.clientId), .int(s.amountMinor), .int(s.reversedMinor), .text(s.reason.rawValue),
            .text(s.centerId), .text(s.bookingRef), s.serviceCategory.map(SQLValue.text) ?? .null, s.holdId.map(SQLValue.text) ?? .null,
            .int(s.seq), .int(s.createdMicros)).run()
    }

    /// The row `HoldRows.insert` writes.
    public func stageHold(_ h: Hold, tenant: String) throws {
        try prepared.stageHold.bind(
            .text(tenant), .text(h.id), .text(h.clientId), .int(h.amountMinor), .int(h.capturedMinor), .text(h.state.rawValue),
            .int(h.expiresMicros), .text(h.centerId), .text(h.bookingRef), h.serviceCategory.map(SQLValue.text) ?? .null,
            h.membershipId.map(SQLValue.text) ?? .null, .int(h.seq), .int(h.createdMicros), h.spendId.map(SQLValue.text) ?? .null).run()
    }

    public func insertClient(tenant: String, client: String, availableMinor: Int64, heldMinor: Int64, lastSeq: Int64) throws {
        try prepared.insertClient.bind(.text(tenant), .text(client), .int(availableMinor), .int(heldMinor), .int(lastSeq)).run()
    }

    public func insertAccount(tenant: String, account: String, balanceMinor: Int64) throws {
        try prepared.insertAccount.bind(.text(tenant), .text(account), .int(balanceMinor)).run()
    }

    public func setLastSeq(tenant: String, seq: Int64) throws {
        try db.statement("UPDATE tenants SET last_seq = ? WHERE id = ?").bind(.int(seq), .text(tenant)).run()
        precondition(db.changes == 1, "tenant \(tenant) vanished during the seed")
    }

    /// Lots, spends and holds have random ids: staged in arrival order, then
    /// written in key order (a sort instead of a random B-tree insert per row).
    public func moveStagedRows() throws {
        for table in Self.stagedTables {
            try db.execute("INSERT INTO main.\(table) SELECT * FROM temp.seed_\(table) ORDER BY tenant_id, id")
            try db.execute("DROP TABLE temp.seed_\(table)")
        }
    }

    /// The connection's normal settings, with the data made durable.
    public func restoreSettings() throws { try settings.restore() }

    /// DROP INDEX removed their statistics; the server writes them at every start too.
    public func installPlannerStatistics() throws { try Schema.installPlannerStatistics(db) }

    public func checkpoint() throws { try settings.checkpoint() }
}

/// Connection settings for the load, and the normal ones after it.
private struct LoadSettings {
    let db: SQLiteConnection
    let normalCacheSize: Int64
    /// With no other connection on the database, the load runs with a rollback
    /// journal: new pages go straight to the file, once, instead of through
    /// the WAL and a checkpoint. (The commit stays atomic: a crash leaves a hot
    /// journal that the next open rolls back.)
    let rollbackJournal: Bool

    init(db: SQLiteConnection, cacheMiB: Int) throws {
        self.db = db
        normalCacheSize = try db.statement("PRAGMA cache_size").first { $0.int(0) } ?? -2_000
        do {
            rollbackJournal = try db.statement("PRAGMA journal_mode=DELETE").first { $0.text(0) } == "delete"
        } catch let error as SQLiteError where error.isBusy {
            rollbackJournal = false  // another connection has the database open: stay in WAL mode
        }
        // No fsync per commit: the seed is one transaction, made durable once after it.
        try db.execute("PRAGMA synchronous=OFF")
        try db.execute("PRAGMA cache_size=-\(cacheMiB * 1_024)")
        // Every row the seed writes belongs to the tenant it creates first, in the same transaction.
        try db.execute("PRAGMA foreign_keys=OFF")
        // Staged rows and sorts go to temporary files, not memory.
        try db.execute("PRAGMA temp_store=FILE")
    }

    /// What `SQLiteConnection` sets at open, then the data made durable: the
    /// WAL checkpointed with synchronous=FULL, or the file synced.
    func restore() throws {
        try db.execute("PRAGMA synchronous=FULL")
        try db.execute("PRAGMA cache_size=\(normalCacheSize)")
        try db.execute("PRAGMA foreign_keys=ON")
        try db.execute("PRAGMA temp_store=MEMORY")
        if rollbackJournal {
            let mode = try db.statement("PRAGMA journal_mode=WAL").first { $0.text(0) }
            guard mode == "wal" else { throw SQLiteError(code: SQLITE_ERROR, message: "cannot return to WAL mode (\(mode ?? "?"))", sql: nil) }
            try syncFile()
        }
    }

    func checkpoint() throws {
        let busy = try db.statement("PRAGMA wal_checkpoint(TRUNCATE)").first { $0.int(0) } ?? 0
        if busy != 0 {
            // Another connection reads: the data is committed and durable in the WAL; SQLite checkpoints it later.
            try db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        }
    }

    private func syncFile() throws {
        let fd = open(db.path, O_RDONLY)
        guard fd >= 0 else { throw SQLiteError(code: SQLITE_IOERR, message: "cannot open \(db.path) to sync it", sql: nil) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw SQLiteError(code: SQLITE_IOERR, message: "fsync of \(db.path) failed", sql: nil) }
    }
}

/// The secondary indexes of the tables the seed fills. Inserting into them
/// row by row at random keys dominates a large load; building them once
/// from sorted rows is several times faster. Dropped and built again inside
/// the seed's transaction (a failure rolls both back), from their own SQL in
/// sqlite_schema; only when the seed writes at least as many entries as the
/// database holds already (else rebuilding costs more than it saves).
private struct DeferredIndexes {
    static let tables = ["entries", "allocations", "lots", "holds", "spends"]

    let db: SQLiteConnection
    let dropped: [(name: String, sql: String)]

    static func drop(db: SQLiteConnection, plannedEntries: Int) throws -> DeferredIndexes {
        let existing = try db.statement("SELECT COUNT(*) FROM entries").first { $0.int(0) } ?? 0
        guard Int64(plannedEntries) >= existing else { return DeferredIndexes(db: db, dropped: []) }
        let placeholders = tables.map { _ in "?" }.joined(separator: ", ")
        let indexes = try db.statement("""
            SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN (\(placeholders)) ORDER BY name
            """).bind(tables.map(SQLValue.text)).rows { (name: $0.text(0), sql: $0.text(1)) }
        for index in indexes {
            let quoted = index.name.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"")
            try db.execute("DROP INDEX main.\"\(quoted)\"")
        }
        return DeferredIndexes(db: db, dropped: indexes)
    }

    func rebuild() throws {
        for index in dropped { try db.execute(index.sql) }
    }
}

import CSQLite
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
