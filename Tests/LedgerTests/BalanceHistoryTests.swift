import Testing
@testable import Ledger

/// GetBalance as of an earlier entry (issue 14): the balance read right after
/// each write, recorded, must equal the as-of read of that write's last seq
/// afterwards, exactly (summary, lots, centers, open holds, pending expiry).
@Suite struct BalanceHistoryTests {
    /// What a balance read returned right after the write that made entry `seq`.
    struct Recorded {
        var seq: Int64
        var timeMicros: Int64
        var balance: BalanceSnapshot
    }

    final class Recorder {
        let fx: Fixture
        let clients: [String]
        var records: [String: [Recorded]] = [:]

        init(_ fx: Fixture, clients: [String]) {
            self.fx = fx
            self.clients = clients
        }

        /// Reads every client's balance now (from SQLite, with details).
        func record(sourceLocation: SourceLocation = #_sourceLocation) throws {
            for client in clients {
                let balance = try fx.reader.balanceUncached(tenant: fx.tenant, client: client)
                #expect(balance.summary.seq == fx.lastSeq, sourceLocation: sourceLocation)
                records[client, default: []].append(Recorded(seq: balance.summary.seq, timeMicros: fx.now, balance: balance))
            }
        }

        /// Every recorded balance equals the as-of read of its seq, and (with
        /// details off) the same summary and pending expiry without details.
        func expectAsOfMatches(sourceLocation: SourceLocation = #_sourceLocation) throws {
            for (client, list) in records {
                for r in list {
                    let asOf = try fx.reader.balance(tenant: fx.tenant, client: client, asOf: .seq(r.seq))
                    #expect(asOf.balance == r.balance, "client \(client) as of seq \(r.seq)", sourceLocation: sourceLocation)
                    #expect(asOf.asOfMicros == r.timeMicros, sourceLocation: sourceLocation)
                    let summaryOnly = try fx.reader.balance(tenant: fx.tenant, client: client, asOf: .seq(r.seq), details: false)
                    #expect(summaryOnly.balance.summary == r.balance.summary, sourceLocation: sourceLocation)
                    #expect(summaryOnly.balance.pendingExpiryMinor == r.balance.pendingExpiryMinor, sourceLocation: sourceLocation)
                    #expect(summaryOnly.balance.lots.isEmpty && summaryOnly.balance.openHolds.isEmpty && summaryOnly.balance.centers.isEmpty)
                }
            }
        }
    }

    @Test func asOfEveryWriteEqualsTheBalanceReadRightAfterIt() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let rec = Recorder(fx, clients: ["a", "b", "nobody"])
        func step(_ body: () throws -> Void) throws {
            try body()
            try rec.record()
            fx.clock.advance(seconds: 600)
        }
        let package = try fx.apply(CreatePackage(tenantId: fx.tenant, name: "Ten", creditsMinor: 1_000, priceMinor: 900,
                                                 validityDays: 30, scope: .any, idempotencyKey: fx.key())).id
        try step { _ = try fx.apply(PurchasePackage(tenantId: fx.tenant, clientId: "a", packageId: package, centerId: "c3",
                                                    paymentRef: "pay-1", idempotencyKey: fx.key())) }
        try step { try fx.order("a", 1_000) }
        try step { try fx.order("a", 500, validDays: 2, center: "c2") }
        try step { try fx.order("b", 300) }
        var spend: SpendResult!
        try step { spend = try fx.spend("a", 1_700) }  // across three lots
        var first: Hold!
        try step { first = try fx.hold("a", 300, expiresIn: 30 * 86_400) }
        var second: Hold!
        try step { second = try fx.hold("a", 100, expiresIn: 30 * 86_400, center: "c2") }
        try step { try fx.spend("b", 50) }
        try step { _ = try fx.apply(fx.captureCmd(first.id, 200)) }  // capture + release of the rest
        try step { _ = try fx.apply(fx.releaseCmd(second.id)) }
        try step { _ = try fx.apply(fx.reverseCmd(spend.spend.id, 600)) }
        var writeOff: WriteOffResult!
        try step { writeOff = try fx.apply(fx.writeOffCmd("a", 150)) }
        try step { _ = try fx.apply(fx.voidCmd(writeOff.writeOff.id)) }
        // A 1-day lot: the next hold pins part of it.
        try step { _ = try fx.apply(fx.adjustCmd("a", 250, validUntil: fx.now + 86_400 * microsPerSecond)) }
        try step { _ = try fx.apply(fx.adjustCmd("a", -40)) }
        var third: Hold!
        try step { third = try fx.hold("a", 120, expiresIn: 30 * 86_400) }
        // Past the 2-day lot's valid_until: b's write leaves a's expiry entry
        // unwritten, so a's balance right after it has credit pending expiry.
        fx.clock.advance(seconds: 3 * 86_400)
        try step { try fx.spend("b", 10) }
        #expect(rec.records["a"]!.last!.balance.pendingExpiryMinor > 0)
        // a's next write writes the expiry entries first.
        try step { try fx.spend("a", 30) }
        #expect(try fx.entries("a").contains { $0.type == .expiry })
        try step { _ = try fx.apply(fx.captureCmd(third.id)) }
        try rec.expectAsOfMatches()
        // Open holds and lots were really exercised.
        let recordsA = rec.records["a"]!.map(\.balance)
        #expect(recordsA.contains { $0.openHolds.count == 2 })
        #expect(recordsA.contains { $0.lots.count >= 3 && $0.centers.count >= 3 })
        #expect(rec.records["nobody"]!.allSatisfy { $0.balance.summary.totalMinor == 0 && $0.balance.lots.isEmpty })
    }

    /// Every seq of the tenant (not only those recorded): the summary equals
    /// the after-balances of the client's last entry at or before it.
    @Test func asOfSummaryFollowsTheStatement() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("a", 800)
        try fx.order("b", 100)
        let h = try fx.hold("a", 200)
        try fx.spend("a", 100)
        _ = try fx.apply(fx.captureCmd(h.id, 50))
        try fx.spend("b", 20)
        _ = try fx.apply(fx.writeOffCmd("a", 30))
        let entries = try fx.entries("a").reversed()
        for seq in 1...fx.lastSeq {
            let asOf = try fx.reader.balance(tenant: fx.tenant, client: "a", asOf: .seq(seq), details: false).balance.summary
            let last = entries.last { $0.seq <= seq }
            #expect(asOf == BalanceSummary(clientId: "a", availableMinor: last?.availableAfterMinor ?? 0,
                                           heldMinor: last?.heldAfterMinor ?? 0, seq: seq))
        }
    }

    @Test func expiryByMaintenance() throws {
        let fx = try Fixture(maintenanceMillis: 50)
        defer { fx.finish() }
        let rec = Recorder(fx, clients: ["a"])
        let lot = try fx.order("a", 400, validDays: 1)
        try rec.record()
        try fx.order("a", 100)
        try rec.record()
        _ = try fx.hold("a", 150, expiresIn: 3 * 86_400)
        try rec.record()
        try fx.settleWriter()
        fx.clock.advance(seconds: 86_400)
        #expect(try fx.eventually { try fx.entries("a").first?.type == .expiry })
        try fx.settleWriter()
        try rec.record()
        #expect(try fx.lot(lot.id)?.remainingMinor == 150)
        try rec.expectAsOfMatches()
        let expirySeq = try #require(try fx.entries("a").first { $0.type == .expiry }?.seq)
        let before = try fx.reader.balance(tenant: fx.tenant, client: "a", asOf: .seq(expirySeq - 1))
        let after = try fx.reader.balance(tenant: fx.tenant, client: "a", asOf: .seq(expirySeq))
        #expect(before.balance.lots.map(\.remainingMinor) == [400, 100])
        #expect(after.balance.summary.availableMinor == 100 && after.balance.summary.heldMinor == 150)
    }

    @Test func asOfTimeIsRightAfterTheClientsLastEntryAtOrBeforeIt() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let start = fx.now
        try fx.order("a", 100)
        fx.clock.advance(seconds: 10)
        try fx.order("b", 7)
        fx.clock.advance(seconds: 10)
        try fx.order("a", 50, validDays: 1)
        let t = fx.now
        fx.clock.advance(seconds: 10)
        try fx.spend("a", 120)
        let never = try fx.reader.balance(tenant: fx.tenant, client: "a", asOf: .time(micros: start - 1))
        #expect(never.balance.summary == BalanceSummary(clientId: "a", availableMinor: 0, heldMinor: 0, seq: 0))
        #expect(never.asOfMicros == start - 1)
        let atT = try fx.reader.balance(tenant: fx.tenant, client: "a", asOf: .time(micros: t))
        #expect(atT.balance.summary == BalanceSummary(clientId: "a", availableMinor: 150, heldMinor: 0, seq: 3))
        #expect(atT.asOfMicros == t)
        #expect(atT.balance.lots == (try fx.reader.balance(tenant: fx.tenant, client: "a", asOf: .seq(3))).balance.lots)
        // "now" is the time asked for: a day later the 1-day lot counts for nothing.
        let dayLater = try fx.reader.balance(tenant: fx.tenant, client: "a", asOf: .time(micros: t + 86_400 * microsPerSecond - 5 * microsPerSecond))
        #expect(dayLater.balance.summary.availableMinor == 30)
        let later = try fx.reader.balance(tenant: fx.tenant, client: "a", asOf: .time(micros: t + 2 * 86_400 * microsPerSecond))
        #expect(later.balance.summary.availableMinor == 30 && later.balance.pendingExpiryMinor == 0)
    }

    @Test func invalidSeqsAndOtherTenants() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("a", 100)
        let last = fx.lastSeq
        for bad in [Int64(0), -1, last + 1] {
            #expect(throws: LedgerError.invalidArgument([.init("as_of_seq", "must be 1…\(last) (the tenant's latest seq)")])) {
                try fx.reader.balance(tenant: fx.tenant, client: "a", asOf: .seq(bad))
            }
        }
        _ = try fx.apply(CreateTenant(id: "t2", name: "Other", currency: "EUR", allowDirectory: false))
        _ = try fx.apply(CreateCreditOrder(tenantId: "t2", clientId: "z", amountMinor: 5, priceMinor: 5, centerId: "c1", note: "",
                                           validUntilMicros: nil, scope: .any, idempotencyKey: fx.key()))
        // t2 has one entry: seq 1 of t2 shows nothing of t1's client "a".
        let other = try fx.reader.balance(tenant: "t2", client: "a", asOf: .seq(1))
        #expect(other.balance.summary == BalanceSummary(clientId: "a", availableMinor: 0, heldMinor: 0, seq: 1))
        #expect(other.balance.lots.isEmpty)
        #expect(throws: LedgerError.notFound(kind: "tenant", id: "t3")) {
            try fx.reader.balance(tenant: "t3", client: "a", asOf: .seq(1))
        }
    }
}

/// The as-of reads are index searches and ranges only (EXPLAIN QUERY PLAN
/// with the planner statistics every start installs); since migration 5 a
/// lot's change after a seq comes from the client's entries after it, each
/// joined to its allocations by primary key.
@Suite struct BalanceHistoryPlanTests {
    @Test func everyStatementSearchesAnIndexAndLotSumsAreCovered() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        var plans: [String: [String]] = [:]
        for sql in BalanceHistory.SQL.all {
            let plan = try fx.reader.db.statement("EXPLAIN QUERY PLAN " + sql).rows { $0.text(3) }
            #expect(!plan.isEmpty)
            #expect(plan.allSatisfy { $0.hasPrefix("SEARCH ") }, "\(plan) for \(sql)")
            plans[sql] = plan
        }
        #expect(plans[BalanceHistory.SQL.allocationsAfter] == [
            "SEARCH e USING COVERING INDEX entries_by_client (tenant_id=? AND client_id=? AND seq>?)",
            "SEARCH a USING PRIMARY KEY (tenant_id=? AND seq=?)",
        ])
        #expect(plans[BalanceHistory.SQL.allocationWalk] == [
            "SEARCH e USING COVERING INDEX entries_by_client (tenant_id=? AND client_id=? AND seq<?)",
            "SEARCH a USING PRIMARY KEY (tenant_id=? AND seq=?)",
        ])
    }
}
