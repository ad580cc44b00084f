import Foundation
import Testing
@testable import Ledger

typealias SpendOutcome = Result<WriteOutcome<SpendResult>, LedgerError>

/// Submits spends from many threads at once and waits for every answer.
func submitConcurrently(_ ledger: Ledger, tenant: String, client: String, count: Int, amount: Int64,
                        keyPrefix: String) -> [SpendOutcome]? {
    let group = DispatchGroup()
    let results = Collector<SpendOutcome>()
    DispatchQueue.concurrentPerform(iterations: count) { i in
        group.enter()
        ledger.submit(SpendCredits(tenantId: tenant, clientId: client, amountMinor: amount, reason: .booking, centerId: "c1",
                                   bookingRef: "b\(i)", serviceCategory: nil, membershipId: nil, idempotencyKey: "\(keyPrefix)-\(i)")) {
            results.add($0)
            group.leave()
        }
    }
    guard group.wait(timeout: .now() + 20) == .success else { return nil }
    return results.all
}

@Suite struct ConcurrencyTests {
    @Test func racingSpendsNeverOverdraw() throws {
        let fx = try Fixture(synchronousFull: true)
        defer { fx.finish() }
        try fx.order("c", 500)
        let results = try #require(submitConcurrently(fx.ledger, tenant: "t1", client: "c", count: 500, amount: 10, keyPrefix: "race"))
        #expect(results.count == 500)
        var applied: [SpendResult] = []
        var failures: [LedgerError] = []
        for result in results {
            switch result {
            case .success(.applied(let spend, _)): applied.append(spend)
            case .success(.replayed): Issue.record("unexpected replay")
            case .failure(let error): failures.append(error)
            }
        }
        #expect(applied.count == 50)
        #expect(failures.count == 450)
        #expect(failures.allSatisfy { $0 == .insufficientCredits(availableMinor: 0, requestedMinor: 10) })
        #expect(Set(applied.map(\.spend.id)).count == 50)
        #expect(Set(applied.map(\.balance.seq)) == Set(2...51))
        #expect(Set(applied.map(\.balance.availableMinor)) == Set(stride(from: Int64(0), to: 500, by: 10)))
        #expect(try fx.balance("c").summary == BalanceSummary(clientId: "c", availableMinor: 0, heldMinor: 0, seq: 51))
        #expect(try fx.account(Account.consumption) == 500)
        #expect(try fx.entries("c").count == 51)
    }

    @Test func groupCommitAnswersEveryWrite() throws {
        let fx = try Fixture(synchronousFull: true)
        defer { fx.finish() }
        try fx.order("c", 3_000)
        let results = try #require(submitConcurrently(fx.ledger, tenant: "t1", client: "c", count: 1_000, amount: 3, keyPrefix: "gc"))
        #expect(results.count == 1_000)
        let applied = results.compactMap { r -> SpendResult? in if case .success(.applied(let s, _)) = r { return s } else { return nil } }
        #expect(applied.count == 1_000)
        #expect(Set(applied.map(\.balance.seq)) == Set(2...1_001))
        #expect(try fx.balance("c").summary == BalanceSummary(clientId: "c", availableMinor: 0, heldMinor: 0, seq: 1_001))
        // Retrying them all replays every one, changing nothing.
        let retried = try #require(submitConcurrently(fx.ledger, tenant: "t1", client: "c", count: 1_000, amount: 3, keyPrefix: "gc"))
        let replayed = retried.filter { if case .success(.replayed) = $0 { return true } else { return false } }
        #expect(replayed.count == 1_000)
        #expect(fx.lastSeq == 1_001)
    }

    @Test func backupWhileWriting() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 1_000_000)
        // Enough history that the copy takes several backup steps.
        _ = try #require(submitConcurrently(fx.ledger, tenant: "t1", client: "c", count: 2_000, amount: 1, keyPrefix: "pre"))
        let ledger = fx.ledger
        let writes = DispatchGroup()
        let failures = Collector<LedgerError>()
        let writer = Thread {
            for i in 0..<2_000 {
                writes.enter()
                ledger.submit(SpendCredits(tenantId: "t1", clientId: "c", amountMinor: 1, reason: .booking, centerId: "c1", bookingRef: "",
                                           serviceCategory: nil, membershipId: nil, idempotencyKey: "live-\(i)")) {
                    if case .failure(let e) = $0 { failures.add(e) }
                    writes.leave()
                }
                if i % 100 == 0 { Thread.sleep(forTimeInterval: 0.001) }  // pacing: writes go on during the backups (nothing is waited for)
            }
        }
        let pages = try fx.reader.db.statement("PRAGMA page_count").first { $0.int(0) } ?? 0
        #expect(pages > 256)  // more than one backup step (256 pages each)
        writer.start()
        var copies: [String] = []
        for i in 0..<2 {
            let destination = fx.directory.appendingPathComponent("backup-\(i).sqlite").path
            try Ledger.backup(path: fx.path, to: destination)
            copies.append(destination)
        }
        #expect(writes.wait(timeout: .now() + 20) == .success)
        #expect(failures.all.isEmpty)
        #expect(try fx.balance("c").summary.availableMinor == 1_000_000 - 4_000)

        for copy in copies {
            let report = try Ledger.verify(path: copy)
            #expect(report.ok, "\(report)")
            #expect(report.tenants == 1)
            #expect(try Ledger.migrate(path: copy) == [])
            var options = Ledger.Options()
            options.maintenanceIntervalMillis = 1_000_000_000_000
            options.clock = fx.clock
            let restored = try Ledger(path: copy, options: options)
            defer { restored.close() }
            let reader = try restored.makeReader()
            let summary = try reader.balance(tenant: "t1", client: "c").summary
            // A consistent snapshot: every spend in it took exactly 1.
            #expect(summary.seq >= 2_001 && summary.seq <= 4_001)
            #expect(summary.availableMinor == 1_000_000 - (summary.seq - 1))
            // The copy takes writes of its own.
            guard case .applied(let spend, _) = try restored.write(SpendCredits(tenantId: "t1", clientId: "c", amountMinor: 5, reason: .other, centerId: "c1",
                                                                              bookingRef: "", serviceCategory: nil, membershipId: nil, idempotencyKey: "after-restore")) else {
                Issue.record("not applied"); continue
            }
            #expect(spend.balance.seq == summary.seq + 1)
            #expect(try restored.verify().ok)
        }
    }

    @Test func reopenKeepsDataAndMigrationsAreIdempotent() throws {
        let directory = try tempDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("ledger.sqlite").path
        let clock = TestClock()
        var options = Ledger.Options()
        options.clock = clock
        options.maintenanceIntervalMillis = 1_000_000_000_000

        let fresh = directory.appendingPathComponent("fresh.sqlite").path
        #expect(try Ledger.migrate(path: fresh) == Schema.migrations.map(\.version))
        #expect(Ledger.schemaVersion == Schema.migrations.last?.version)
        #expect(try Ledger.migrate(path: fresh) == [])

        var snapshot: BalanceSnapshot
        var spendId: String
        do {
            let ledger = try Ledger(path: path, options: options)
            _ = try ledger.write(CreateTenant(id: "t1", name: "Gym", currency: "EUR", allowDirectory: false))
            _ = try ledger.write(CreateCreditOrder(tenantId: "t1", clientId: "c", amountMinor: 500, priceMinor: 500, centerId: "c1", note: "",
                                                   validUntilMicros: clock.nowMicros() + microsPerDay, scope: .any, idempotencyKey: "o1"))
            guard case .applied(let spend, _) = try ledger.write(SpendCredits(tenantId: "t1", clientId: "c", amountMinor: 120, reason: .booking, centerId: "c1",
                                                                            bookingRef: "", serviceCategory: nil, membershipId: nil, idempotencyKey: "s1")) else {
                Issue.record("not applied"); return
            }
            spendId = spend.spend.id
            snapshot = try ledger.makeReader().balance(tenant: "t1", client: "c")
            ledger.close()
        }
        #expect(try Ledger.migrate(path: path) == [])

        let reopened = try Ledger(path: path, options: options)
        defer { reopened.close() }
        let reader = try reopened.makeReader()
        #expect(try reader.balance(tenant: "t1", client: "c") == snapshot)
        #expect(snapshot.summary == BalanceSummary(clientId: "c", availableMinor: 380, heldMinor: 0, seq: 2))
        #expect(try reader.spend(tenant: "t1", id: spendId)?.amountMinor == 120)
        #expect(try reopened.verify().ok)
        // Idempotency records and sequence numbers carry over.
        guard case .replayed(_, let id, let seq) = try reopened.write(SpendCredits(tenantId: "t1", clientId: "c", amountMinor: 120, reason: .booking, centerId: "c1",
                                                                                  bookingRef: "", serviceCategory: nil, membershipId: nil, idempotencyKey: "s1")) else {
            Issue.record("expected a replay"); return
        }
        #expect(id == spendId && seq == 2)
        guard case .applied(let next, _) = try reopened.write(SpendCredits(tenantId: "t1", clientId: "c", amountMinor: 80, reason: .booking, centerId: "c1",
                                                                         bookingRef: "", serviceCategory: nil, membershipId: nil, idempotencyKey: "s2")) else {
            Issue.record("not applied"); return
        }
        #expect(next.balance == BalanceSummary(clientId: "c", availableMinor: 300, heldMinor: 0, seq: 3))
        #expect(try reopened.verify().ok)
    }
}

// MARK: - Background maintenance (real writer-thread timer, short interval)

@Suite struct MaintenanceTests {
    @Test func holdAutoReleasedAtDeadline() throws {
        let fx = try Fixture(maintenanceMillis: 50)
        defer { fx.finish() }
        try fx.order("c", 500)
        let hold = try fx.hold("c", 200, expiresIn: 3_600)
        let other = try fx.hold("c", 100, expiresIn: 7_200)
        try fx.settleWriter()
        fx.clock.advance(seconds: 3_600)
        let released = try fx.eventually { try fx.reader.hold(tenant: "t1", id: hold.id)?.state == .expired }
        #expect(released)
        #expect(try fx.reader.hold(tenant: "t1", id: other.id)?.state == .held)
        #expect(try fx.balance("c").summary == BalanceSummary(clientId: "c", availableMinor: 400, heldMinor: 100, seq: 4))
        let entry = try #require(try fx.entries("c").first)
        #expect(entry.type == .release && entry.reason == "hold_expired" && entry.amountMinor == 200 && entry.refId == hold.id && entry.idempotencyKey == "")
        try fx.expectUnchanged("c") {
            fx.expectError(.holdNotOpen(holdId: hold.id, state: .expired), fx.captureCmd(hold.id))
            fx.expectError(.holdNotOpen(holdId: hold.id, state: .expired), fx.releaseCmd(hold.id))
        }
        #expect(try fx.apply(fx.captureCmd(other.id)).hold.state == .captured)
    }

    @Test func lotsExpireInTheBackground() throws {
        let fx = try Fixture(maintenanceMillis: 50)
        defer { fx.finish() }
        let soon = try fx.order("c", 100, validDays: 1)
        let pinned = try fx.order("d", 100, validDays: 1)
        let hold = try fx.hold("d", 30, expiresIn: 2 * 86_400)
        try fx.order("c", 50)
        try fx.settleWriter()
        fx.clock.advance(seconds: 86_400)
        #expect(try fx.eventually { try fx.lot(soon.id)?.state == .expired })
        #expect(try fx.eventually { try fx.balance("d").pendingExpiryMinor == 0 })
        #expect(try fx.balance("c").summary == BalanceSummary(clientId: "c", availableMinor: 50, heldMinor: 0, seq: 6))
        #expect(try fx.balance("c").pendingExpiryMinor == 0)
        #expect(try fx.entries("c").map(\.type) == [.expiry, .order, .order])
        // The held part stays pinned on the lot until the hold resolves.
        let lot = try #require(try fx.lot(pinned.id))
        #expect(lot.state == .active && lot.remainingMinor == 30 && lot.heldMinor == 30)
        #expect(try fx.balance("d").summary == BalanceSummary(clientId: "d", availableMinor: 0, heldMinor: 30, seq: 6))
        try fx.settleWriter()
        fx.clock.advance(seconds: 86_400)  // the hold's deadline
        #expect(try fx.eventually { try fx.reader.hold(tenant: "t1", id: hold.id)?.state == .expired })
        #expect(try fx.eventually { try fx.lot(pinned.id)?.state == .expired })
        #expect(try fx.balance("d").summary == BalanceSummary(clientId: "d", availableMinor: 0, heldMinor: 0, seq: 8))
        #expect(try fx.account(Account.breakage) == 200)
    }

    @Test func idempotencyRecordsPurgedAfterRetention() throws {
        let fx = try Fixture(maintenanceMillis: 50, retentionSeconds: 86_400)
        defer { fx.finish() }
        let old = try fx.apply(fx.orderCmd("c", 10, key: "old"))
        fx.clock.advance(seconds: 12 * 3_600)
        try fx.apply(fx.orderCmd("c", 10, key: "new"))
        try fx.settleWriter()
        fx.clock.advance(seconds: 12 * 3_600 + 1)
        #expect(try fx.eventually { try fx.reader.idempotency(tenant: "t1", key: "old") == nil })
        #expect(try fx.reader.idempotency(tenant: "t1", key: "new") != nil)
        // After the purge the key is free again: the same key makes a new lot.
        let again = try fx.apply(fx.orderCmd("c", 10, key: "old"))
        #expect(again.lot.id != old.lot.id)
        #expect(again.balance.availableMinor == 30)
    }
}
