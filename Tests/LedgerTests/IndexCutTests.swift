import Foundation
import Testing
@testable import Ledger

/// Issue 16 (part 5): migration 5 drops `allocations_by_lot` (one B-tree
/// write less per draw). Verify's lot check and the as-of lot sums work
/// without it; a database at schema 4 migrates.
@Suite struct IndexCutTests {
    /// Two clients with lots, spends, a hold and a partial capture.
    func populated() throws -> (Fixture, a: Lot, b: Lot, spend: SpendResult) {
        let fx = try Fixture()
        let a = try fx.order("a", 500, validDays: 30)
        try fx.order("a", 300)
        let b = try fx.order("b", 200)
        let spend = try fx.spend("a", 650)  // draws from both of a's lots
        try fx.spend("b", 50)
        _ = try fx.apply(fx.holdCmd("b", 40))
        return (fx, a, b, spend)
    }

    func closeAndRemove(_ fx: Fixture) {
        fx.ledger.close()
        try? FileManager.default.removeItem(at: fx.directory)
    }

    @Test func theIndexIsGoneAndVerifyStillPasses() throws {
        let (fx, _, _, _) = try populated()
        defer { fx.finish() }
        let index = try fx.reader.db.statement("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND name = 'allocations_by_lot'").first { $0.int(0) }
        #expect(index == 0)
        #expect(Schema.latestVersion == 5)
    }

    @Test func verifyCatchesALotThatDisagreesWithItsAllocations() throws {
        let (fx, a, _, _) = try populated()
        defer { closeAndRemove(fx) }
        let db = try SQLiteConnection(path: fx.path)
        try db.statement("UPDATE lots SET remaining_minor = remaining_minor + 7 WHERE id = ?").bind(.text(a.id)).run()
        let report = try fx.ledger.verify()
        #expect(report.problems.contains { $0.contains("lot \(a.id): remaining/held 7/0, allocations say 0/0") }, "\(report)")
    }

    @Test func verifyCatchesATamperedAllocation() throws {
        let (fx, _, b, _) = try populated()
        defer { closeAndRemove(fx) }
        let db = try SQLiteConnection(path: fx.path)
        try db.statement("UPDATE allocations SET held_delta_minor = held_delta_minor + 1 WHERE lot_id = ? AND held_delta_minor > 0").bind(.text(b.id)).run()
        #expect(db.changes == 1)
        let report = try fx.ledger.verify()
        #expect(report.problems.contains { $0.contains("lot \(b.id): remaining/held 150/40, allocations say 150/41") }, "\(report)")
    }

    @Test func verifyCatchesAllocationsToUnknownOrForeignLots() throws {
        let (fx, a, b, spend) = try populated()
        defer { closeAndRemove(fx) }
        let db = try SQLiteConnection(path: fx.path)
        // a's spend now says it drew from b's lot (an entry of client a) and
        // from a lot that does not exist.
        try db.statement("UPDATE allocations SET lot_id = ? WHERE seq = ? AND lot_id = ?").bind(.text(b.id), .int(spend.spend.seq), .text(a.id)).run()
        try db.statement("UPDATE allocations SET lot_id = 'lot_gone' WHERE seq = ? AND ordinal = 1").bind(.int(spend.spend.seq)).run()
        let report = try fx.ledger.verify()
        #expect(report.problems.contains { $0.contains("lot \(b.id) of client b: 1 allocation(s) in entries of client a") }, "\(report)")
        #expect(report.problems.contains { $0.contains("1 allocation(s) to unknown lot lot_gone") }, "\(report)")
        #expect(report.problems.contains { $0.contains("lot \(a.id): remaining/held 0/0, allocations say 500/0") }, "\(report)")
    }

    @Test func anAllocationWithoutAnEntryIsCaught() throws {
        let (fx, a, _, _) = try populated()
        defer { closeAndRemove(fx) }
        let db = try SQLiteConnection(path: fx.path)
        try db.statement("INSERT INTO allocations (tenant_id, seq, ordinal, lot_id, remaining_delta_minor, held_delta_minor) VALUES ('t1', 999, 0, ?, 0, 0)")
            .bind(.text(a.id)).run()
        let report = try fx.ledger.verify()
        #expect(report.problems.contains { $0.contains("lot \(a.id): 1 allocation(s) without an entry") }, "\(report)")
    }

    /// A database at schema 4 (the same tables plus the covering
    /// allocations_by_lot of migration 4, with data) migrates to 5: the index
    /// is dropped, the data verifies, and as-of reads answer as before.
    @Test func aSchema4DatabaseMigrates() throws {
        let (fx, _, _, spend) = try populated()
        defer { try? FileManager.default.removeItem(at: fx.directory) }
        let before = try fx.reader.balance(tenant: fx.tenant, client: "a", asOf: .seq(spend.spend.seq))
        let lastSeq = fx.lastSeq
        let beforeB = try fx.reader.balance(tenant: fx.tenant, client: "b", asOf: .seq(lastSeq))
        fx.ledger.close()
        do {
            let db = try SQLiteConnection(path: fx.path)
            try db.execute("""
                CREATE INDEX allocations_by_lot ON allocations (tenant_id, lot_id, seq, remaining_delta_minor, held_delta_minor);
                DELETE FROM schema_migrations WHERE version = 5;
                """)
            #expect(try db.statement("SELECT MAX(version) FROM schema_migrations").first { $0.int(0) } == 4)
        }
        #expect(try Ledger.migrate(path: fx.path) == [5])
        #expect(try Ledger.migrate(path: fx.path) == [])
        let db = try SQLiteConnection(path: fx.path)
        #expect(try db.statement("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'allocations_by_lot'").first { $0.int(0) } == 0)
        let report = try Ledger.verify(path: fx.path)
        #expect(report.ok, "\(report)")
        var options = Ledger.Options()
        options.clock = fx.clock
        options.maintenanceIntervalMillis = 1_000_000_000_000
        let reopened = try Ledger(path: fx.path, options: options)
        defer { reopened.close() }
        let reader = try reopened.makeReader()
        #expect(try reader.balance(tenant: fx.tenant, client: "a", asOf: .seq(spend.spend.seq)) == before)
        #expect(try reader.balance(tenant: fx.tenant, client: "b", asOf: .seq(lastSeq)) == beforeB)
    }
}
