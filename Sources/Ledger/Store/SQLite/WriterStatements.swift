/// The writer's own statements: the group-commit transaction around a batch,
/// the storage probe, and maintenance's due holds, due lots and the
/// idempotency purge. The writer (Writer/Writer.swift) decides when; the SQL
/// lives here, with the rest of the store's.
extension LedgerStore {
    /// Opens the batch's write transaction (the database's write lock).
    func beginBatch() throws {
        try db.run("BEGIN IMMEDIATE")
    }

    /// Makes the batch durable (WAL, synchronous=FULL when configured).
    func commitBatch() throws {
        try db.run("COMMIT")
    }

    /// Rolls the open transaction back, if one is open.
    func rollbackBatch() {
        if db.isInTransaction { try? db.run("ROLLBACK") }
    }

    /// False once SQLite has rolled the whole transaction back by itself
    /// (disk full, I/O error): nothing of the batch is applied then.
    var isInBatch: Bool { db.isInTransaction }

    /// A small durable write that changes nothing: proves the file takes
    /// writes again after a storage failure.
    func probeWrite() throws {
        try beginBatch()
        do {
            try db.run("UPDATE schema_migrations SET applied_micros = applied_micros WHERE version = (SELECT MAX(version) FROM schema_migrations)")
            try commitBatch()
        } catch {
            rollbackBatch()
            throw error
        }
    }

    /// Holds still held past their deadline, oldest deadline first.
    func dueHolds(now: Int64, limit: Int) throws -> [(tenant: String, holdId: String)] {
        precondition(limit > 0)
        return try db.statement("SELECT tenant_id, id FROM holds WHERE state = 'held' AND expires_micros <= ? ORDER BY expires_micros LIMIT ?")
            .bind(.int(now), .int(Int64(limit))).rows { (tenant: $0.text(0), holdId: $0.text(1)) }
    }

    /// Active lots past their valid_until, soonest first.
    func dueLots(now: Int64, limit: Int) throws -> [(tenant: String, lot: Lot)] {
        precondition(limit > 0)
        return try db.statement("""
            SELECT \(LedgerStore.lotColumns), tenant_id FROM lots WHERE state = 'active' AND valid_until_micros IS NOT NULL
              AND valid_until_micros <= ? ORDER BY valid_until_micros LIMIT ?
            """).bind(.int(now), .int(Int64(limit))).rows { (tenant: $0.text(19), lot: LedgerStore.readLot($0)) }
    }

    /// Removes at most `limit` idempotency records made before `cutoffMicros`.
    func purgeIdempotency(before cutoffMicros: Int64, limit: Int) throws {
        precondition(limit > 0)
        try db.statement("""
            DELETE FROM idempotency WHERE (tenant_id, key) IN
              (SELECT tenant_id, key FROM idempotency WHERE created_micros < ? LIMIT ?)
            """).bind(.int(cutoffMicros), .int(Int64(limit))).run()
    }
}
