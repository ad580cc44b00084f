import Foundation
import Testing
@testable import Ledger

// TestClock and tempLedger() live in Support.swift.

@Suite struct SmokeTests {
    @Test func purchaseSpendHoldCaptureReverseVerify() throws {
        let (ledger, _) = try tempLedger()
        defer { ledger.close() }
        _ = try ledger.write(CreateTenant(id: "t1", name: "Gym", currency: "EUR", allowDirectory: false))
        guard case .applied(let pkg, _) = try ledger.write(CreatePackage(tenantId: "t1", name: "10", creditsMinor: 1000, priceMinor: 900, validityDays: 30, scope: .any, idempotencyKey: nil)) else { Issue.record(); return }
        guard case .applied(let grant, _) = try ledger.write(PurchasePackage(tenantId: "t1", clientId: "c1", packageId: pkg.id, centerId: "ctr1", paymentRef: "pay1", idempotencyKey: "k1")) else { Issue.record(); return }
        #expect(grant.balance.availableMinor == 1000)
        guard case .applied(let spend, _) = try ledger.write(SpendCredits(tenantId: "t1", clientId: "c1", amountMinor: 300, reason: .booking, centerId: "ctr1", bookingRef: "b1", serviceCategory: nil, membershipId: nil, idempotencyKey: "k2")) else { Issue.record(); return }
        #expect(spend.balance.availableMinor == 700)
        guard case .applied(let hold, _) = try ledger.write(CreateHold(tenantId: "t1", clientId: "c1", amountMinor: 200, centerId: "ctr1", bookingRef: "b2", serviceCategory: nil, membershipId: nil, expiresMicros: TestClock().nowMicros() + 3_600_000_000, idempotencyKey: "k3")) else { Issue.record(); return }
        #expect(hold.balance.availableMinor == 500 && hold.balance.heldMinor == 200)
        guard case .applied(let cap, _) = try ledger.write(CaptureHold(tenantId: "t1", holdId: hold.hold.id, amountMinor: 50, reason: .checkIn, idempotencyKey: "k4")) else { Issue.record(); return }
        #expect(cap.balance.availableMinor == 650 && cap.balance.heldMinor == 0)
        guard case .applied(let rev, _) = try ledger.write(ReverseSpend(tenantId: "t1", spendId: spend.spend.id, amountMinor: 100, reason: "refund", idempotencyKey: "k5")) else { Issue.record(); return }
        #expect(rev.balance.availableMinor == 750)
        guard case .replayed = try ledger.write(SpendCredits(tenantId: "t1", clientId: "c1", amountMinor: 300, reason: .booking, centerId: "ctr1", bookingRef: "b1", serviceCategory: nil, membershipId: nil, idempotencyKey: "k2")) else { Issue.record(); return }
        #expect(throws: LedgerError.self) { try ledger.write(SpendCredits(tenantId: "t1", clientId: "c1", amountMinor: 301, reason: .booking, centerId: "ctr1", bookingRef: "b1", serviceCategory: nil, membershipId: nil, idempotencyKey: "k2")) }
        #expect(throws: LedgerError.insufficientCredits(availableMinor: 750, requestedMinor: 10_000)) { try ledger.write(SpendCredits(tenantId: "t1", clientId: "c1", amountMinor: 10_000, reason: .booking, centerId: "ctr1", bookingRef: "b1", serviceCategory: nil, membershipId: nil, idempotencyKey: "k9")) }
        let report = try ledger.verify()
        #expect(report.ok, "\(report)")
        let reader = try ledger.makeReader()
        let balance = try reader.balance(tenant: "t1", client: "c1")
        #expect(balance.summary.availableMinor == 750)
        let statement = try reader.statement(.init(tenant: "t1", clientId: "c1"))
        #expect(statement.map(\.type) == [.reversal, .release, .capture, .hold, .spend, .purchase])
    }
}

@Suite struct IDAndStatementCacheTests {
    @Test func idsAreWellFormedAndDistinct() {
        let alphabet = Set("0123456789abcdefghjkmnpqrstvwxyz")
        let clock = TestClock()
        var seen = Set<String>()
        for _ in 0..<5_000 {
            let id = IDs.make("spd", clock: clock)
            #expect(id.hasPrefix("spd_") && id.count == 24 && id.dropFirst(4).allSatisfy { alphabet.contains($0) }, "\(id)")
            seen.insert(id)
        }
        #expect(seen.count == 5_000)
        // Later ids sort after earlier ones (millisecond prefix).
        let first = IDs.make("x", clock: clock)
        clock.advance(micros: 1_000)
        #expect(IDs.make("x", clock: clock) > first)
    }

    /// Ids carry the injected clock's time, not the wall clock's: ids made
    /// by the ledger's commands under a test clock decode to its millisecond.
    @Test func idsCarryTheInjectedClocksTime() throws {
        let clock = TestClock(1_234_567_890_123_456)
        #expect(IDs.timeMillis(of: IDs.make("lot", clock: clock)) == 1_234_567_890_123)
        #expect(IDs.timeMillis(of: IDs.make("lot", nowMicros: 42_000)) == 42)

        let f = try Fixture()
        defer { f.finish() }
        let nowMillis = UInt64(f.clock.nowMicros() / 1_000)
        let lot = try f.order("c1", 1_000)
        let spend = try f.spend("c1", 300)
        #expect(IDs.timeMillis(of: lot.id) == nowMillis)
        #expect(IDs.timeMillis(of: spend.spend.id) == nowMillis)
        f.clock.advance(seconds: 86_400)
        let later = try f.spend("c1", 100)
        #expect(IDs.timeMillis(of: later.spend.id) == nowMillis + 86_400_000)
    }

    /// Statements that differ only between the hashed windows are still told apart.
    @Test func statementCacheComparesWholeText() throws {
        let db = try SQLiteConnection(path: ":memory:")
        let filler = String(repeating: " ", count: 200)
        let a = try db.statement("SELECT 1 \(filler) AS x \(filler) /* end */").rows { $0.int(0) }
        let b = try db.statement("SELECT 2 \(filler) AS x \(filler) /* end */").rows { $0.int(0) }
        let c = try db.statement("SELECT 1 \(filler)  AS y\(filler) /* end */").rows { $0.int(0) }
        #expect(a == [1] && b == [2] && c == [1])
        #expect(try db.statement("SELECT 2 \(filler) AS x \(filler) /* end */").rows { $0.int(0) } == [2])
    }
}
