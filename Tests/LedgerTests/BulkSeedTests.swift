import Foundation
import Testing
@testable import Ledger
import LedgerSeed

@Suite struct BulkSeedTests {
    static let staffKey = BulkSeedPlan.StaffKey(keyId: "key_seedtest", label: "seed", secretHash: Array(repeating: 7, count: 32))

    func plan(_ f: Fixture, clients: Int, entries: Int, seed: UInt64 = 1) -> BulkSeedPlan {
        var plan = BulkSeedPlan(tenantId: f.tenant, clients: clients, entries: entries)
        plan.randomSeed = seed
        plan.staffKey = Self.staffKey
        plan.cacheMiB = 16
        return plan
    }

    /// The client's every entry, oldest first, through the reader's statement pages.
    func allEntries(_ f: Fixture, _ client: String) throws -> [LedgerEntry] {
        var out: [LedgerEntry] = []
        var query = LedgerReader.StatementQuery(tenant: f.tenant, clientId: client)
        query.newestFirst = false
        query.limit = 50
        while true {
            let page = try f.reader.statement(query)
            out += page
            guard page.count == query.limit, let last = page.last else { return out }
            query.afterSeq = last.seq
        }
    }

    func indexes(_ db: SQLiteConnection) throws -> [String] {
        try db.statement("SELECT name || ' ' || COALESCE(sql, '') FROM sqlite_schema WHERE type = 'index' ORDER BY name").rows { $0.text(0) }
    }

    @Test func seedsAValidLedgerThatTakesNormalWritesAfterwards() throws {
        let f = try Fixture(createTenant: false)
        defer { f.finish() }
        let indexesBefore = try indexes(f.reader.db)
        let report = try BulkSeed.run(path: f.path, plan: plan(f, clients: 30, entries: 3_000), clock: f.clock)
        #expect(report.clients == 30)
        #expect(report.entries == 3_000)
        // The fixture's connections are open: WAL mode throughout; the indexes were built again after the load.
        #expect(!report.rollbackJournal && report.indexesRebuilt)
        #expect(try indexes(f.reader.db) == indexesBefore)
        #expect(try f.reader.db.statement("SELECT COUNT(*) FROM sqlite_stat1 WHERE idx = 'entries_by_client'").first { $0.int(0) } == 1)
        #expect(report.lastEntryMicros < f.now && report.firstEntryMicros >= f.now - 366 * microsPerDay)
        f.expectVerifyOK()

        let tenant = try #require(try f.reader.tenant(f.tenant))
        #expect(tenant.lastSeq == 3_000)
        let stored = try f.reader.db.statement("SELECT COUNT(*), MAX(time_micros) FROM entries WHERE tenant_id = ?")
            .bind(.text(f.tenant)).first { ($0.int(0), $0.int(1)) }!
        #expect(stored.0 == 3_000 && stored.1 < f.now)
        let key = try #require(try f.reader.apiKey(id: Self.staffKey.keyId))
        #expect(key.tenantId == f.tenant && key.role == .staff && key.secretHash == Self.staffKey.secretHash)

        var types = Set<EntryType>()
        var seen = 0
        for i in 0..<30 {
            let client = "lg-client-\(i)"
            let entries = try allEntries(f, client)
            seen += entries.count
            types.formUnion(entries.map(\.type))
            var available: Int64 = 0, held: Int64 = 0
            for e in entries {
                if e.creditAccount == Account.available(client) { available += e.amountMinor }
                if e.debitAccount == Account.available(client) { available -= e.amountMinor }
                if e.creditAccount == Account.held(client) { held += e.amountMinor }
                if e.debitAccount == Account.held(client) { held -= e.amountMinor }
                #expect(e.availableAfterMinor == available && e.heldAfterMinor == held, "entry \(e.seq) of \(client)")
                #expect(e.type == .hold || e.type == .order || e.type == .purchase || e.type == .reversal
                        || e.type == .release || e.allocations.allSatisfy { $0.remainingDeltaMinor < 0 })
            }
            let balance = try f.balance(client)
            #expect(balance.summary.availableMinor == available && balance.summary.heldMinor == 0 && held == 0)
            #expect(balance.summary.availableMinor >= 2_000_000)
            #expect(balance.lots.count <= 40, "\(client) has \(balance.lots.count) active lots")
            #expect(entries.last?.type == .order && entries.last?.note == "load test reserve")
        }
        #expect(seen == 3_000)
        #expect(types.isSuperset(of: [.purchase, .order, .spend, .hold, .capture, .release, .reversal]), "\(types)")
        #expect(try f.reader.listPackages(tenant: f.tenant, includeInactive: false, afterId: nil, limit: 10).count == 4)

        // Normal writes on the seeded tenant.
        let before = try f.balance("lg-client-0").summary
        let spend = try f.spend("lg-client-0", 5_000)
        #expect(spend.balance.availableMinor == before.availableMinor - 5_000)
        #expect(spend.balance.seq == 3_001)
        let hold = try f.hold("lg-client-1", 2_500)
        let capture = try f.apply(f.captureCmd(hold.id, 1_000))
        #expect(capture.spend?.amountMinor == 1_000)
        _ = try f.apply(f.reverseCmd(spend.spend.id, 5_000))
        #expect(try f.balance("lg-client-0").summary.availableMinor == before.availableMinor)
        let packages = try f.reader.listPackages(tenant: f.tenant, includeInactive: false, afterId: nil, limit: 10)
        _ = try f.apply(PurchasePackage(tenantId: f.tenant, clientId: "lg-client-29", packageId: packages[0].id, centerId: "c1",
                                        paymentRef: "pay-after", idempotencyKey: f.key()))
        _ = try f.order("new-client", 7_000)
        f.expectVerifyOK()
    }

    /// With no other connection on the file the load runs with a rollback
    /// journal and returns the database to WAL mode.
    @Test func freshFileWithoutOtherConnections() throws {
        let directory = try tempDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("seeded.sqlite").path
        let clock = TestClock()
        var plan = BulkSeedPlan(tenantId: "lg", clients: 12, entries: 1_200)
        plan.cacheMiB = 16
        let report = try BulkSeed.run(path: path, plan: plan, clock: clock)
        #expect(report.rollbackJournal && report.indexesRebuilt && report.entries == 1_200)
        #expect(!FileManager.default.fileExists(atPath: path + "-journal"))
        let report2 = try Ledger.verify(path: path)
        #expect(report2.ok && report2.entries == 1_200 && report2.clients == 12, "\(report2)")
        var options = SQLiteConnection.OpenOptions()
        options.readOnly = true
        let db = try SQLiteConnection(path: path, options: options)
        #expect(try db.statement("PRAGMA journal_mode").first { $0.text(0) } == "wal")
        #expect(try indexes(db).contains { $0.hasPrefix("entries_by_ref ") })

        var ledgerOptions = Ledger.Options()
        ledgerOptions.clock = clock
        let ledger = try Ledger(path: path, options: ledgerOptions)
        defer { ledger.close() }
        let spend = try ledger.write(SpendCredits(tenantId: "lg", clientId: "lg-client-11", amountMinor: 1_234, reason: .booking,
                                                  centerId: "c1", bookingRef: "after", serviceCategory: nil, membershipId: nil,
                                                  idempotencyKey: "after-1"))
        guard case .applied(let result, _) = spend else { Issue.record("expected applied"); return }
        #expect(result.balance.seq == 1_201)
        #expect(try ledger.verify().ok)
    }

    @Test func oneEntryPerClientIsJustTheReserves() throws {
        let f = try Fixture(createTenant: false)
        defer { f.finish() }
        var plan = plan(f, clients: 3, entries: 3)
        plan.staffKey = nil
        plan.reserveMinor = 1_000_000
        let report = try BulkSeed.run(path: f.path, plan: plan, clock: f.clock)
        #expect(report.entries == 3 && report.lots == 3 && report.spends == 0)
        for i in 0..<3 {
            #expect(try f.balance("lg-client-\(i)").summary.availableMinor == 1_000_000)
        }
        #expect(try f.account(Account.orders) == -3_000_000)
    }

    @Test func sameSeedSameHistory() throws {
        func history(seed: UInt64) throws -> [String] {
            let f = try Fixture(createTenant: false)
            defer { f.finish() }
            _ = try BulkSeed.run(path: f.path, plan: plan(f, clients: 5, entries: 400, seed: seed), clock: f.clock)
            return try f.reader.db.statement("SELECT seq, type, client_id, amount_minor, time_micros FROM entries WHERE tenant_id = ? ORDER BY seq")
                .bind(.text(f.tenant)).rows { "\($0.int(0)) \($0.text(1)) \($0.text(2)) \($0.int(3)) \($0.int(4))" }
        }
        let a = try history(seed: 42)
        #expect(a.count == 400)
        #expect(try history(seed: 42) == a)
        #expect(try history(seed: 43) != a)
    }

    func violations(_ body: () throws -> Void) -> [String] {
        do {
            try body()
            Issue.record("expected invalid_argument")
            return []
        } catch LedgerError.invalidArgument(let violations) {
            return violations.map(\.field)
        } catch {
            Issue.record("expected invalid_argument, got \(error)")
            return []
        }
    }

    @Test func rejectsBadArgumentsAndExistingTenants() throws {
        let f = try Fixture()  // tenant t1 exists
        defer { f.finish() }
        #expect(violations { _ = try BulkSeed.run(path: f.path, plan: plan(f, clients: 0, entries: 10), clock: f.clock) } == ["clients"])
        #expect(violations { _ = try BulkSeed.run(path: f.path, plan: plan(f, clients: 10, entries: 9), clock: f.clock) } == ["entries"])
        var badPrefix = plan(f, clients: 10, entries: 100)
        badPrefix.clientPrefix = "no spaces "
        #expect(violations { _ = try BulkSeed.run(path: f.path, plan: badPrefix, clock: f.clock) } == ["client_prefix"])
        var badCurrency = plan(f, clients: 10, entries: 100)
        badCurrency.currency = "euro"
        #expect(violations { _ = try BulkSeed.run(path: f.path, plan: badCurrency, clock: f.clock) } == ["currency"])

        _ = try f.order("c-existing", 1_000)
        #expect(throws: LedgerError.alreadyExists(kind: "tenant", id: f.tenant)) {
            _ = try BulkSeed.run(path: f.path, plan: plan(f, clients: 10, entries: 100), clock: f.clock)
        }
        // Nothing of the refused seed was written: no key, no packages, no entries.
        #expect(try f.reader.apiKey(id: Self.staffKey.keyId) == nil)
        #expect(try f.reader.listPackages(tenant: f.tenant, includeInactive: true, afterId: nil, limit: 10).isEmpty)
        #expect(f.lastSeq == 1)
        #expect(try f.balance("lg-client-0").summary.availableMinor == 0)
    }
}
