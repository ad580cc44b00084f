import Foundation
import Testing
@testable import Ledger

/// A clock the tests move by hand.
final class TestClock: LedgerClock, @unchecked Sendable {
    private let lock = NSLock()
    private var now: Int64
    init(_ start: Int64 = 1_800_000_000_000_000) { now = start }
    func nowMicros() -> Int64 { lock.lock(); defer { lock.unlock() }; return now }
    func advance(seconds: Int64) { advance(micros: seconds * 1_000_000) }
    func advance(micros: Int64) { lock.lock(); now += micros; lock.unlock() }
}

let microsPerSecond: Int64 = 1_000_000
let microsPerDay: Int64 = 86_400 * 1_000_000

/// A fresh temporary directory for one ledger file.
func tempDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ledger-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

func tempLedger(clock: TestClock = TestClock()) throws -> (Ledger, String) {
    let path = try tempDirectory().appendingPathComponent("l.sqlite").path
    var options = Ledger.Options()
    options.clock = clock
    options.maintenanceIntervalMillis = 3_600_000
    return (try Ledger(path: path, options: options), path)
}

/// The property tests draw from the ledger's SplitMix64 (seeded, reproducible).
struct UnexpectedReplay: Error {}

/// A ledger on a temporary file with a test clock, a reader, and tenant "t1".
/// Background maintenance is off unless `maintenanceMillis` is given.
final class Fixture {
    let clock: TestClock
    let ledger: Ledger
    let path: String
    let directory: URL
    let reader: LedgerReader
    let tenant = "t1"
    private var keyCounter = 0

    init(maintenanceMillis: Int64 = 1_000_000_000_000, synchronousFull: Bool = false, maxQueueDepth: Int = 10_000,
         retentionSeconds: Int64 = 7 * 86_400, createTenant: Bool = true,
         balanceCacheRows: Int = BalanceCache.defaultRowBudget) throws {
        clock = TestClock()
        directory = try tempDirectory()
        path = directory.appendingPathComponent("ledger.sqlite").path
        var options = Ledger.Options()
        options.clock = clock
        options.maintenanceIntervalMillis = maintenanceMillis
        options.synchronousFull = synchronousFull
        options.maxQueueDepth = maxQueueDepth
        options.idempotencyRetentionSeconds = retentionSeconds
        options.balanceCacheRows = balanceCacheRows
        ledger = try Ledger(path: path, options: options)
        reader = try ledger.makeReader()
        if createTenant {
            _ = try ledger.write(CreateTenant(id: tenant, name: "Gym One", currency: "EUR", allowDirectory: false))
        }
    }

    var now: Int64 { clock.nowMicros() }

    func key() -> String {
        keyCounter += 1
        return "key-\(keyCounter)"
    }

    /// Writes and expects the command to be applied (not replayed).
    @discardableResult
    func apply<C: LedgerCommand>(_ command: C, sourceLocation: SourceLocation = #_sourceLocation) throws -> C.Output {
        switch try ledger.write(command) {
        case .applied(let output, _): return output
        case .replayed(_, let id, _):
            Issue.record("expected the command to be applied, it was replayed (result \(id))", sourceLocation: sourceLocation)
            throw UnexpectedReplay()
        }
    }

    /// Writes and expects exactly `expected`.
    func expectError<C: LedgerCommand>(_ expected: LedgerError, _ command: C, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let outcome = try ledger.write(command)
            Issue.record("expected \(expected), got \(outcome)", sourceLocation: sourceLocation)
        } catch {
            #expect(error == expected, sourceLocation: sourceLocation)
        }
    }

    /// The error a write throws, or nil when it succeeds.
    func error<C: LedgerCommand>(_ command: C) -> LedgerError? {
        do {
            _ = try ledger.write(command)
            return nil
        } catch {
            return error
        }
    }

    // MARK: Command shorthands

    func orderCmd(_ client: String, _ amount: Int64, validDays: Int64? = nil, validUntil: Int64? = nil, scope: Scope = .any,
                  center: String = "c1", note: String = "order", key: String? = nil) -> CreateCreditOrder {
        CreateCreditOrder(tenantId: tenant, clientId: client, amountMinor: amount, priceMinor: amount, centerId: center, note: note,
                          validUntilMicros: validUntil ?? validDays.map { now + $0 * microsPerDay }, scope: scope,
                          idempotencyKey: key ?? self.key())
    }

    @discardableResult
    func order(_ client: String, _ amount: Int64, validDays: Int64? = nil, scope: Scope = .any, center: String = "c1",
               sourceLocation: SourceLocation = #_sourceLocation) throws -> Lot {
        let result = try apply(orderCmd(client, amount, validDays: validDays, scope: scope, center: center), sourceLocation: sourceLocation)
        try expectSummary(result.balance, sourceLocation: sourceLocation)
        return result.lot
    }

    func spendCmd(_ client: String, _ amount: Int64, center: String = "c1", category: String? = nil, membership: String? = nil,
                  booking: String = "b1", reason: SpendReason = .booking, key: String? = nil) -> SpendCredits {
        SpendCredits(tenantId: tenant, clientId: client, amountMinor: amount, reason: reason, centerId: center, bookingRef: booking,
                     serviceCategory: category, membershipId: membership, idempotencyKey: key ?? self.key())
    }

    @discardableResult
    func spend(_ client: String, _ amount: Int64, center: String = "c1", category: String? = nil, membership: String? = nil,
               sourceLocation: SourceLocation = #_sourceLocation) throws -> SpendResult {
        let result = try apply(spendCmd(client, amount, center: center, category: category, membership: membership), sourceLocation: sourceLocation)
        try expectSummary(result.balance, sourceLocation: sourceLocation)
        return result
    }

    func holdCmd(_ client: String, _ amount: Int64, expiresIn seconds: Int64 = 3_600, center: String = "c1",
                 category: String? = nil, membership: String? = nil, key: String? = nil) -> CreateHold {
        CreateHold(tenantId: tenant, clientId: client, amountMinor: amount, centerId: center, bookingRef: "bk",
                   serviceCategory: category, membershipId: membership, expiresMicros: now + seconds * microsPerSecond,
                   idempotencyKey: key ?? self.key())
    }

    @discardableResult
    func hold(_ client: String, _ amount: Int64, expiresIn seconds: Int64 = 3_600, center: String = "c1",
              sourceLocation: SourceLocation = #_sourceLocation) throws -> Hold {
        let result = try apply(holdCmd(client, amount, expiresIn: seconds, center: center), sourceLocation: sourceLocation)
        try expectSummary(result.balance, sourceLocation: sourceLocation)
        return result.hold
    }

    func captureCmd(_ holdId: String, _ amount: Int64? = nil, key: String? = nil) -> CaptureHold {
        CaptureHold(tenantId: tenant, holdId: holdId, amountMinor: amount, reason: .checkIn, idempotencyKey: key ?? self.key())
    }

    func releaseCmd(_ holdId: String, key: String? = nil) -> ReleaseHold {
        ReleaseHold(tenantId: tenant, holdId: holdId, idempotencyKey: key ?? self.key())
    }

    func reverseCmd(_ spendId: String, _ amount: Int64, key: String? = nil) -> ReverseSpend {
        ReverseSpend(tenantId: tenant, spendId: spendId, amountMinor: amount, reason: "refund", idempotencyKey: key ?? self.key())
    }

    func writeOffCmd(_ client: String, _ amount: Int64, key: String? = nil) -> CreateWriteOff {
        CreateWriteOff(tenantId: tenant, clientId: client, amountMinor: amount, reason: "bad debt", idempotencyKey: key ?? self.key())
    }

    func voidCmd(_ writeOffId: String, key: String? = nil) -> VoidWriteOff {
        VoidWriteOff(tenantId: tenant, writeOffId: writeOffId, idempotencyKey: key ?? self.key())
    }

    func adjustCmd(_ client: String, _ amount: Int64, validUntil: Int64? = nil, key: String? = nil) -> AdjustBalance {
        AdjustBalance(tenantId: tenant, clientId: client, amountMinor: amount, reason: "correction", centerId: "c1",
                      validUntilMicros: validUntil, idempotencyKey: key ?? self.key())
    }

    // MARK: Reads

    func balance(_ client: String) throws -> BalanceSnapshot {
        try reader.balance(tenant: tenant, client: client)
    }

    /// A write's balance summary must equal a fresh read.
    func expectSummary(_ summary: BalanceSummary, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let fresh = try balance(summary.clientId).summary
        #expect(summary == fresh, "write returned \(summary), a fresh read says \(fresh)", sourceLocation: sourceLocation)
    }

    var lastSeq: Int64 { (try? reader.tenant(tenant)?.lastSeq) ?? -1 }

    /// Any lot, whatever its state (through the store's internal read).
    func lot(_ id: String) throws -> Lot? {
        try LedgerStore(db: reader.db, clock: clock).lot(tenant: tenant, id: id)
    }

    /// A system account's balance (breakage, consumption, …).
    func account(_ name: String) throws -> Int64 {
        try reader.db.statement("SELECT balance_minor FROM accounts WHERE tenant_id = ? AND account = ?")
            .bind(.text(tenant), .text(name)).first { $0.int(0) } ?? 0
    }

    /// Every entry of a client, newest first.
    func entries(_ client: String) throws -> [LedgerEntry] {
        var query = LedgerReader.StatementQuery(tenant: tenant, clientId: client)
        query.limit = LedgerLimits.maxPageSize
        return try reader.statement(query)
    }

    /// Runs `body` and expects nothing about the client to have changed.
    func expectUnchanged(_ client: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) throws {
        let before = try balance(client), seqBefore = lastSeq, entriesBefore = try entries(client)
        try body()
        #expect(try balance(client) == before, sourceLocation: sourceLocation)
        #expect(lastSeq == seqBefore, sourceLocation: sourceLocation)
        #expect(try entries(client) == entriesBefore, sourceLocation: sourceLocation)
    }

    func expectVerifyOK(sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let report = try ledger.verify()
            #expect(report.ok, "\(report)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("verify threw \(error)", sourceLocation: sourceLocation)
        }
    }

    /// Verifies, stops the writer and removes the files.
    func finish(sourceLocation: SourceLocation = #_sourceLocation) {
        expectVerifyOK(sourceLocation: sourceLocation)
        ledger.close()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Returns once any maintenance run the writer has started is finished
    /// and its next run is scheduled: maintenance runs on the writer thread
    /// between batches (after a batch's replies), so two no-op writes in a row
    /// fence it. Call before moving the clock again, or the writer may
    /// schedule its next run from the moved clock and skip the due work.
    func settleWriter() throws {
        for _ in 0..<2 { _ = try ledger.write(SetDirectoryAccess(tenantId: tenant, allow: false)) }
    }

    /// Polls `condition` (on this thread) until it holds or `seconds` pass.
    func eventually(seconds: Double = 5, _ condition: () throws -> Bool) rethrows -> Bool {
        try waitUntil(seconds: seconds, condition)
    }
}

/// Polls `condition` (on this thread) until it holds or `seconds` pass;
/// true if it held. Tests wait with this for what they need, never with a
/// fixed sleep.
func waitUntil(seconds: Double = 5, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.005)
    }
    return try condition()
}

/// Collects results from completion handlers running on other threads.
final class Collector<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    func add(_ item: T) { lock.lock(); items.append(item); lock.unlock() }
    var all: [T] { lock.lock(); defer { lock.unlock() }; return items }
}
