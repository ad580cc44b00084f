import Foundation
import Synchronization
import Testing
@testable import Ledger

/// The ledger's side of the change feed: commit notices and feed pages.
@Suite struct FeedTests {
    @Test func commitNoticesNameTenantSeqsAndClientsOffTheWriterThread() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let notices = Mutex<[CommitNotice]>([])
        let id = fx.ledger.commits.addListener { notice in
            let first = notices.withLock { $0.append(notice); return $0.count == 1 }
            if first { Thread.sleep(forTimeInterval: 0.5) }  // under test: a slow listener (not a wait)
        }
        let start = Date()
        try fx.order("a", 100)
        try fx.spend("a", 10)
        try fx.order("b", 5)
        #expect(Date().timeIntervalSince(start) < 0.4, "a slow listener does not hold up the writer")
        let seq = fx.lastSeq
        _ = waitUntil { notices.withLock({ $0.last?.tenantSeqs[fx.tenant] }) == seq }
        let all = notices.withLock { $0 }
        #expect(all.last?.tenantSeqs[fx.tenant] == seq)
        let clients = all.reduce(into: Set<LedgerClientKey>()) { $0.formUnion($1.clients) }
        #expect(clients == [LedgerClientKey(tenant: fx.tenant, client: "a"), LedgerClientKey(tenant: fx.tenant, client: "b")])
        #expect(all.allSatisfy { !$0.everyClient })
        #expect(fx.ledger.commits.latestSeq(tenant: fx.tenant) == seq)
        // A listener still registered hears each notice after the removed one
        // would have (one pass over the listeners per notice): once it has
        // heard the next commit, the removed listener has missed it.
        let heard = Mutex<Int64>(0)
        let probe = fx.ledger.commits.addListener { notice in
            if let seq = notice.tenantSeqs[fx.tenant] { heard.withLock { $0 = max($0, seq) } }
        }
        defer { fx.ledger.commits.removeListener(probe) }
        fx.ledger.commits.removeListener(id)
        let count = all.count
        try fx.order("c", 1)
        let next = fx.lastSeq
        #expect(waitUntil { heard.withLock { $0 } >= next }, "the probe hears the commit")
        #expect(notices.withLock { $0.count } == count, "a removed listener hears nothing")
    }

    @Test func tooManyClientsBetweenNoticesBecomeEveryClient() {
        let feed = CommitFeed()
        // Not started: notices pile up as the notifier would see them.
        var many = Set<BalanceCache.Key>()
        for i in 0..<(CommitFeed.maxPendingClients + 1) { many.insert(BalanceCache.Key(tenant: "t", client: "c\(i)")) }
        feed.committed(tenantSeqs: ["t": 7], clients: many)
        let got = Mutex<CommitNotice?>(nil)
        _ = feed.addListener { n in got.withLock { $0 = n } }
        feed.start()
        defer { feed.stop() }
        _ = waitUntil { got.withLock({ $0 }) != nil }
        let notice = got.withLock { $0 }
        #expect(notice?.everyClient == true)
        #expect(notice?.clients.isEmpty == true)
        #expect(notice?.tenantSeqs == ["t": 7])
    }

    @Test func feedPagesAreGaplessPrefixesWithFilters() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        for i in 0..<30 {
            try fx.order(i % 3 == 0 ? "x" : "y", Int64(10 + i))
            if i % 5 == 4 { try fx.spend("y", 1) }
        }
        let last = fx.lastSeq
        // Unfiltered, small pages: every seq once, in order.
        var cursor: Int64 = 0
        var seen: [Int64] = []
        while cursor < last {
            let page = try fx.reader.feedPage(tenant: fx.tenant, afterSeq: cursor, clients: [], types: [], limit: 7)
            #expect(page.tenantSeq == last)
            #expect(page.scannedThrough > cursor)
            seen += page.entries.map(\.seq)
            cursor = page.scannedThrough
        }
        #expect(seen == Array(1...last))
        // Filtered: only x's orders; the checkpoint reaches the end anyway.
        let page = try fx.reader.feedPage(tenant: fx.tenant, afterSeq: 0, clients: ["x"], types: [.order], limit: 100)
        #expect(page.entries.count == 10 && page.entries.allSatisfy { $0.clientId == "x" && $0.type == .order })
        #expect(page.scannedThrough == last)
        // Entries carry their allocations and the balance after them.
        let spend = try fx.reader.feedPage(tenant: fx.tenant, afterSeq: 0, clients: ["y"], types: [.spend], limit: 1).entries[0]
        #expect(spend.allocations.count == 1 && spend.allocations[0].remainingDeltaMinor == -1)
        #expect(spend.availableAfterMinor == (try fx.entries("y").first { $0.seq == spend.seq }?.availableAfterMinor))
        // Caught up: empty, checkpoint stays.
        let end = try fx.reader.feedPage(tenant: fx.tenant, afterSeq: last, clients: [], types: [], limit: 10)
        #expect(end.entries.isEmpty && end.scannedThrough == last)
    }

    @Test func aNarrowFilterScansABoundedWindowPerPage() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("rare", 1)
        let window = Int(LedgerReader.feedScanWindow)
        try fx.ledger.write(BulkOrders(tenant: fx.tenant, client: "busy", count: window + 10))
        try fx.order("rare", 2)
        let last = fx.lastSeq
        let first = try fx.reader.feedPage(tenant: fx.tenant, afterSeq: 0, clients: ["rare"], types: [], limit: 100)
        #expect(first.entries.map(\.seq) == [1])
        #expect(first.scannedThrough == LedgerReader.feedScanWindow, "one window per page, not the whole history")
        let second = try fx.reader.feedPage(tenant: fx.tenant, afterSeq: first.scannedThrough, clients: ["rare"], types: [], limit: 100)
        #expect(second.entries.map(\.seq) == [last])
        #expect(second.scannedThrough == last)
    }
}

/// Many small orders of one client in one command (test data only).
struct BulkOrders: LedgerCommand {
    static let operation = "test-bulk-orders"
    var tenant: String
    var client: String
    var count: Int
    var tenantId: String { tenant }
    var idempotencyKey: String? { nil }
    var idempotencyFields: [(String, String)] { [] }
    func validate() throws(LedgerError) {}
    func apply(_ store: LedgerStore) throws -> Int {
        for _ in 0..<count {
            _ = try store.createLot(tenant: tenant, client: client, origin: .order, entryType: .order, fundingAccount: Account.orders,
                                    amountMinor: 1, centerId: "c1", validFromMicros: nil, validUntilMicros: nil, scope: .any,
                                    packageId: nil, paymentRef: nil, priceMinor: 0, note: "", reason: "test", idempotencyKey: "")
        }
        return count
    }
    func resultId(_ output: Int) -> String { "" }
    func resultSeq(_ output: Int) -> Int64 { 0 }
}

@Suite struct EntryTailTests {
    typealias Tail = EntryTail<Int>

    func items(_ seqs: ClosedRange<Int64>, bytes: Int = 10) -> [Tail.Item] {
        seqs.map { Tail.Item(seq: $0, clientId: "c\($0 % 3)", type: .spend, payload: Int($0), bytes: bytes) }
    }

    @Test func readsContiguousSlicesAndSaysWhenToReadTheDatabase() {
        let tail = Tail(startingAfter: 100)
        #expect(tail.read(after: 100, limit: 10) == nil, "nothing newer")
        tail.append(items(101...120), through: 120)
        let first = tail.read(after: 100, limit: 5)!
        #expect(first.items.map(\.seq) == [101, 102, 103, 104, 105] && first.through == 105)
        let rest = tail.read(after: 105, limit: 100)!
        #expect(rest.items.map(\.seq) == Array(106...120) && rest.through == 120)
        #expect(tail.read(after: 120, limit: 10) == nil)
        #expect(tail.read(after: 99, limit: 10) == nil, "before the start: read the database")
    }

    @Test func filteredReadsScanABoundedSpanAndSayHowFarTheyLooked() {
        let tail = Tail(startingAfter: 0)
        tail.append(items(1...100), through: 100)
        // Every third entry is c1's (seq % 3 == 1).
        let c1 = tail.read(after: 0, limit: 5, scanning: 1_000) { $0.clientId == "c1" }!
        #expect(c1.items.map(\.seq) == [1, 4, 7, 10, 13] && c1.through == 13, "stops at the limit")
        let scan = tail.read(after: 13, limit: 100, scanning: 10) { $0.clientId == "c1" }!
        #expect(scan.items.map(\.seq) == [16, 19, 22] && scan.through == 23, "stops after scanning 10")
        let none = tail.read(after: 23, limit: 10, scanning: 1_000) { $0.clientId == "nobody" }!
        #expect(none.items.isEmpty && none.through == 100, "a checkpoint through the end")
        #expect(tail.read(after: 100, limit: 1, scanning: 1) { _ in true } == nil)
    }

    @Test func dropsTheOldestPastItsBoundsAndRestarts() {
        let tail = Tail(startingAfter: 0)
        let n = Int64(Tail.maxItems)
        tail.append(items(1...(n + 10)), through: n + 10)
        #expect(tail.count == Tail.maxItems && tail.start == 10 && tail.end == n + 10)
        #expect(tail.read(after: 5, limit: 1) == nil)
        #expect(tail.read(after: 10, limit: 1)?.items.first?.seq == 11)
        // Bytes: a small share keeps fewer entries.
        tail.share(of: 100_000)
        tail.append(items((n + 11)...(n + 11), bytes: Tail.minBytes), through: n + 11)
        #expect(tail.bytes <= Tail.minBytes && tail.count == 1 && tail.start == n + 10)
        tail.restart(after: 5_000)
        #expect(tail.count == 0 && tail.start == 5_000 && tail.end == 5_000 && tail.bytes == 0)
        tail.append(items(5_001...5_003), through: 5_003)
        #expect(tail.read(after: 5_000, limit: 10)?.items.map(\.payload) == [5_001, 5_002, 5_003])
    }
}

extension EntryTail<Int>.Item: Equatable {
    public static func == (a: Self, b: Self) -> Bool { a.seq == b.seq && a.payload == b.payload }
}

/// A client with more lots than one read lists: the balance is still exact.
@Suite struct ManyLotsBalanceTests {
    @Test func summaryAndCentersCountEveryLotBeyondTheListedThousand() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.ledger.write(BulkOrders(tenant: fx.tenant, client: "big", count: 1_100))
        try fx.order("big", 50, validDays: 1)
        let now = try fx.balance("big")
        #expect(now.summary.availableMinor == 1_150 && now.summary.heldMinor == 0)
        #expect(now.lots.count == LedgerReader.maxListedLots)
        #expect(now.centers == [CenterBalance(centerId: "c1", remainingMinor: 1_150)])
        // The 1-day lot passes valid_until: pending expiry, not available.
        fx.clock.advance(seconds: 2 * 86_400)
        let later = try fx.balance("big")
        #expect(later.summary.availableMinor == 1_100 && later.pendingExpiryMinor == 50)
        #expect(later.centers == [CenterBalance(centerId: "c1", remainingMinor: 1_100)])
        // As of the last entry (the walk finds every lot), with and without details.
        let seq = fx.lastSeq
        let asOf = try fx.reader.balance(tenant: fx.tenant, client: "big", asOf: .seq(seq), details: true).balance
        #expect(asOf.summary.availableMinor == 1_150 && asOf.lots.count == LedgerReader.maxListedLots)
        #expect(asOf.centers == [CenterBalance(centerId: "c1", remainingMinor: 1_150)])
        let summaryOnly = try fx.reader.balance(tenant: fx.tenant, client: "big", asOf: .seq(seq), details: false).balance
        #expect(summaryOnly.summary.availableMinor == 1_150)
    }
}

@Suite struct AsOfInconsistencyTests {
    /// Records that do not add up make an as-of read fail (`inconsistent`,
    /// DATA_LOSS to the caller), not stop the process.
    @Test func aTamperedAfterBalanceIsReportedNotFatal() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 100, validDays: 1)
        try fx.spend("c", 10)
        let seq = fx.lastSeq
        let db = try SQLiteConnection(path: fx.path)
        try db.execute("UPDATE entries SET available_after_minor = available_after_minor + 5 WHERE seq = \(seq)")
        #expect(throws: LedgerError.self) {
            _ = try fx.reader.balance(tenant: fx.tenant, client: "c", asOf: .seq(seq), details: true)
        }
        do {
            _ = try fx.reader.balance(tenant: fx.tenant, client: "c", asOf: .seq(seq), details: true)
        } catch let error as LedgerError {
            guard case .inconsistent = error else { Issue.record("expected inconsistent, got \(error)"); return }
        }
        // Put it back: verify at finish stays clean.
        try db.execute("UPDATE entries SET available_after_minor = available_after_minor - 5 WHERE seq = \(seq)")
    }
}
