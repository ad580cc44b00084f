import Foundation
import Synchronization
import Testing
@testable import Ledger

/// The balance cache must never serve a balance older than a write the
/// caller has seen acknowledged, nor one that disagrees with SQLite.
@Suite struct BalanceCacheTests {
    @Test func servesFromMemoryAndAgreesWithSQLite() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 1_000)
        let first = try fx.balance("c")
        let before = fx.ledger.balanceCache.stats
        let second = try fx.balance("c")
        #expect(second == first)
        #expect(fx.ledger.balanceCache.stats.hits == before.hits + 1)
        #expect(try fx.reader.balanceUncached(tenant: fx.tenant, client: "c") == second)
    }

    @Test func everyKindOfWriteInvalidates() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        func same(_ label: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let cached = try fx.balance("c")
            let fresh = try fx.reader.balanceUncached(tenant: fx.tenant, client: "c")
            #expect(cached == fresh, "\(label)", sourceLocation: sourceLocation)
            // And again from the cache, now filled.
            #expect(try fx.balance("c") == fresh, "\(label) (second read)", sourceLocation: sourceLocation)
        }
        try same("empty")
        try fx.order("c", 1_000, validDays: 1)
        try same("order")
        try fx.order("c", 500)
        try same("second lot")
        try fx.spend("c", 100)
        try same("spend")
        let hold = try fx.hold("c", 200)
        try same("hold")
        _ = try fx.apply(fx.captureCmd(hold.id, 50))
        try same("capture")
        let hold2 = try fx.hold("c", 10)
        try same("hold 2")
        _ = try fx.apply(fx.releaseCmd(hold2.id))
        try same("release")
        // Time passes: the cached rows give the same answer as SQLite at the new time.
        fx.clock.advance(seconds: 2 * 86_400)
        try same("lot past valid_until, expiry entry not written")
        #expect(try fx.balance("c").pendingExpiryMinor > 0)
        // A write to another client of the tenant moves the seq but not this client's balance.
        try fx.order("other", 5)
        try same("other client written")
        #expect(try fx.balance("c").summary.seq == fx.balance("other").summary.seq)
        // A spend expires the due lot first (expiry entry).
        try fx.spend("c", 1)
        try same("spend after expiry")
        #expect(try fx.balance("c").pendingExpiryMinor == 0)
    }

    @Test func failedCommandsLeaveTheCacheRight() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 100)
        _ = try fx.balance("c")
        fx.expectError(.insufficientCredits(availableMinor: 100, requestedMinor: 1_000), fx.spendCmd("c", 1_000))
        #expect(try fx.balance("c") == fx.reader.balanceUncached(tenant: fx.tenant, client: "c"))
        #expect(try fx.balance("c").summary.availableMinor == 100)
    }

    @Test func disabledCacheReadsSQLite() throws {
        let cache = BalanceCache(capacity: 0)
        guard case .miss = cache.lookup(.init(tenant: "t", client: "c")) else {
            Issue.record("a disabled cache never hits")
            return
        }
        let rows = ClientBalanceState(lots: [], holds: [])
        if case .miss(let ticket) = cache.lookup(.init(tenant: "t", client: "c")) {
            cache.store(.init(tenant: "t", client: "c"), rows, tenantSeq: 1, ticket: ticket)
        }
        guard case .miss = cache.lookup(.init(tenant: "t", client: "c")) else {
            Issue.record("a disabled cache stores nothing")
            return
        }
    }

    /// A reader that read before a commit must not store its rows after it.
    @Test func staleReadIsNotStored() throws {
        let cache = BalanceCache(capacity: 10)
        let key = BalanceCache.Key(tenant: "t", client: "c")
        let old = ClientBalanceState(lots: [], holds: [])
        guard case .miss(let ticket) = cache.lookup(key) else { Issue.record("empty cache hit"); return }
        // The writer commits a change to the client after the reader's ticket.
        cache.beginCommit([key])
        // While pending, nobody hits or stores.
        cache.store(key, old, tenantSeq: 1, ticket: ticket)
        guard case .miss = cache.lookup(key) else { Issue.record("pending client served"); return }
        cache.endCommit([key], tenantSeqs: ["t": 2])
        // After: the reader's older snapshot is refused.
        cache.store(key, old, tenantSeq: 1, ticket: ticket)
        guard case .miss(let fresh) = cache.lookup(key) else { Issue.record("stale rows were stored"); return }
        // A reader that starts after the commit may store.
        cache.store(key, old, tenantSeq: 2, ticket: fresh)
        guard case .hit(_, let seq) = cache.lookup(key) else { Issue.record("fresh rows were not stored"); return }
        #expect(seq == 2)
    }

    /// A client with more rows than the per-client bound is never cached.
    @Test func clientsWithManyRowsAreNotCached() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("big", 10_000)
        for _ in 0..<BalanceCache.maxRowsPerClient { try fx.hold("big", 1) }
        let before = fx.ledger.balanceCache.stats
        #expect(try fx.balance("big").openHolds.count == BalanceCache.maxRowsPerClient)
        #expect(try fx.balance("big").summary.heldMinor == Int64(BalanceCache.maxRowsPerClient))
        #expect(fx.ledger.balanceCache.stats.hits == before.hits)
        try fx.order("small", 10)
        _ = try fx.balance("small")
        let filled = fx.ledger.balanceCache.stats.hits
        _ = try fx.balance("small")
        #expect(fx.ledger.balanceCache.stats.hits == filled + 1)
    }

    /// The lot and hold rows of all cached clients together stay within the
    /// row budget (clients' rows grow with purchases); balances stay right.
    @Test func boundedByRows() throws {
        let fx = try Fixture(balanceCacheRows: 10)
        defer { fx.finish() }
        for i in 0..<8 {
            for _ in 0..<3 { try fx.order("c\(i)", 100) }
        }
        for round in 0..<3 {
            for i in 0..<8 {
                for _ in 0..<2 {
                    let balance = try fx.balance("c\(i)")
                    #expect(balance.summary.availableMinor == 300 && balance.lots.count == 3, "round \(round)")
                    let stats = fx.ledger.balanceCache.stats
                    #expect(stats.rows <= 10 && stats.rows == stats.entries * 3)
                }
            }
        }
        // Reads were served from memory all the same (three clients fit).
        #expect(fx.ledger.balanceCache.stats.hits > 0)
        // A spend drops the client's rows from the count.
        _ = try fx.balance("c7")
        #expect(fx.ledger.balanceCache.stats.rows >= 3)
        let before = fx.ledger.balanceCache.stats
        _ = try fx.apply(fx.spendCmd("c7", 50))  // (fx.spend would read the balance again)
        #expect(fx.ledger.balanceCache.stats.rows == before.rows - 3)
        #expect(try fx.balance("c7").summary.availableMinor == 250)
    }

    /// Full: the oldest entry is evicted, one at a time (no emptying cliff):
    /// the newest clients stay cached.
    @Test func boundedByCapacity() throws {
        let cache = BalanceCache(capacity: 3)
        let rows = ClientBalanceState(lots: [], holds: [])
        for i in 0..<10 {
            let key = BalanceCache.Key(tenant: "t", client: "c\(i)")
            guard case .miss(let ticket) = cache.lookup(key) else { Issue.record("unexpected hit"); return }
            cache.store(key, rows, tenantSeq: 1, ticket: ticket)
            #expect(cache.stats.entries == min(i + 1, 3))
        }
        for i in 7..<10 {
            guard case .hit = cache.lookup(.init(tenant: "t", client: "c\(i)")) else { Issue.record("c\(i) not cached"); return }
        }
        guard case .miss = cache.lookup(.init(tenant: "t", client: "c6")) else { Issue.record("c6 not evicted"); return }
    }

    /// An evicted invalidation still refuses a reader that started before it.
    @Test func evictedInvalidationStillRefusesStaleRows() throws {
        let cache = BalanceCache(capacity: 2)
        let rows = ClientBalanceState(lots: [], holds: [])
        let a = BalanceCache.Key(tenant: "t", client: "a")
        guard case .miss(let old) = cache.lookup(a) else { Issue.record("unexpected hit"); return }
        cache.beginCommit([a])
        cache.endCommit([a], tenantSeqs: ["t": 2])  // a invalidated after `old`
        // Two other invalidations evict a's slot.
        for name in ["b", "c"] {
            let key = BalanceCache.Key(tenant: "t", client: name)
            cache.beginCommit([key])
            cache.endCommit([key], tenantSeqs: ["t": 3])
        }
        cache.store(a, rows, tenantSeq: 1, ticket: old)
        guard case .miss(let fresh) = cache.lookup(a) else { Issue.record("stale rows stored after eviction"); return }
        cache.store(a, rows, tenantSeq: 3, ticket: fresh)
        guard case .hit = cache.lookup(a) else { Issue.record("fresh rows not stored"); return }
    }

    /// Readers hammer one client's balance from other threads while spends
    /// commit: every acknowledged spend is visible to the next read on any
    /// thread, no reader ever sees the balance go back up, and at the end
    /// the cache agrees with SQLite.
    @Test func readYourWritesUnderRacingReaders() throws {
        let fx = try Fixture(synchronousFull: false)
        defer { fx.finish() }
        try fx.order("c", 100_000)
        let acknowledged = Atomic<Int64>(100_000)
        let stop = Atomic<Bool>(false)
        let violations = Mutex<[String]>([])
        let group = DispatchGroup()
        for t in 0..<3 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let reader = try fx.ledger.makeReader()
                    var last = Int64.max
                    while !stop.load(ordering: .acquiring) {
                        // Read the acknowledged value first: the balance read after must be at most that.
                        let ceiling = acknowledged.load(ordering: .acquiring)
                        let available = try reader.balance(tenant: fx.tenant, client: "c").summary.availableMinor
                        if available > ceiling || available > last {
                            violations.withLock { if $0.count < 20 { $0.append("reader \(t): saw \(available) after \(min(ceiling, last))") } }
                        }
                        last = available
                    }
                } catch {
                    violations.withLock { $0.append("reader \(t): \(error)") }
                }
            }
        }
        for i in 0..<400 {
            let result = try fx.apply(fx.spendCmd("c", 7, key: "rw-\(i)"))
            acknowledged.store(result.balance.availableMinor, ordering: .releasing)
            let seen = try fx.balance("c").summary.availableMinor
            if seen != result.balance.availableMinor {
                violations.withLock { if $0.count < 20 { $0.append("write \(i): acknowledged \(result.balance.availableMinor), read \(seen)") } }
            }
        }
        stop.store(true, ordering: .releasing)
        #expect(group.wait(timeout: .now() + 20) == .success)
        #expect(violations.withLock { $0 } == [])
        #expect(try fx.balance("c") == fx.reader.balanceUncached(tenant: fx.tenant, client: "c"))
        #expect(try fx.balance("c").summary.availableMinor == 100_000 - 400 * 7)
        #expect(fx.ledger.balanceCache.stats.hits > 0)
    }

    /// The WAL is copied back by the checkpoint thread, and the data stays whole.
    @Test func walCheckpointedInTheBackground() throws {
        let fx = try Fixture(synchronousFull: false)
        defer { fx.finish() }
        for i in 0..<400 { try fx.order("client-\(i)", 10) }
        #expect(fx.eventually { fx.ledger.checkpointsDone > 0 })
        try fx.spend("client-7", 3)
        #expect(try fx.balance("client-7").summary.availableMinor == 7)
        #expect(try fx.ledger.verify().ok)
    }
}
