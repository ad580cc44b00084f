import Foundation
import Testing
@testable import Ledger

// Coupon customer credits (SPEC §4): every rule and error path, on the
// ledger core. Each test ends with `fx.finish()` (verify must be OK).

extension Fixture {
    @discardableResult
    func coupon(maxUses: Int32 = 1, value: Int64 = 0, service: String? = "massage", validityDays: Int32? = nil,
                sourceLocation: SourceLocation = #_sourceLocation) throws -> Coupon {
        try apply(CreateCoupon(tenantId: tenant, name: "Free massage", serviceId: service, valueMinor: value, maxUses: maxUses,
                               validityDays: validityDays, idempotencyKey: nil), sourceLocation: sourceLocation)
    }

    func issueCmd(_ client: String, _ couponId: String, revenue: Int64 = 0, expires: Int64? = nil, membership: String? = nil,
                  key: String? = nil) -> IssueCustomerCredit {
        IssueCustomerCredit(tenantId: tenant, clientId: client, couponId: couponId, membershipId: membership, expiresMicros: expires,
                            revenueMinor: revenue, idempotencyKey: key ?? self.key())
    }

    func issue(_ client: String, _ couponId: String, revenue: Int64 = 0, expires: Int64? = nil, membership: String? = nil,
               sourceLocation: SourceLocation = #_sourceLocation) throws -> CustomerCredit {
        try apply(issueCmd(client, couponId, revenue: revenue, expires: expires, membership: membership), sourceLocation: sourceLocation).credit
    }

    func redeemCmd(_ creditId: String, booking: String = "bk-1", client: String? = nil, key: String? = nil) -> RedeemCustomerCredit {
        RedeemCustomerCredit(tenantId: tenant, creditId: creditId, clientId: client, bookingRef: booking, centerId: "c1",
                             idempotencyKey: key ?? self.key())
    }

    func redeem(_ creditId: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> RedemptionResult {
        try apply(redeemCmd(creditId), sourceLocation: sourceLocation)
    }

    func cancelCmd(_ redemptionId: String, key: String? = nil) -> CancelCreditRedemption {
        CancelCreditRedemption(tenantId: tenant, redemptionId: redemptionId, reason: "booking cancelled", idempotencyKey: key ?? self.key())
    }

    func revokeCmd(_ creditId: String, key: String? = nil) -> RevokeCustomerCredit {
        RevokeCustomerCredit(tenantId: tenant, creditId: creditId, clientId: nil, reason: "goodwill withdrawn", idempotencyKey: key ?? self.key())
    }

    func credit(_ id: String) throws -> CustomerCredit { try #require(try reader.customerCredit(tenant: tenant, id: id)) }

    /// Runs the coupon maintenance as the writer does, on a connection of its own.
    func runCouponMaintenance() throws {
        let db = try SQLiteConnection(path: path)
        let store = LedgerStore(db: db, clock: clock)
        try store.transaction { try CouponMaintenance.run(store: store, now: clock.nowMicros()) }
    }

    func couponEntries(_ client: String) throws -> [LedgerEntry] {
        try entries(client).filter { $0.type != .revenueAllocation }.reversed()
    }

    func revenueEntries(_ client: String) throws -> [LedgerEntry] {
        try entries(client).filter { $0.type == .revenueAllocation }.reversed()
    }

    func list(_ client: String, redeemed: Bool = false, expired: Bool = false, revoked: Bool = false,
              multi: MultiUseFilter = .all, before: Int64? = nil, offset: Int = 0, limit: Int = 100) throws -> [String] {
        var q = LedgerReader.CustomerCreditQuery(tenant: tenant, clientId: client)
        q.includeRedeemed = redeemed
        q.includeExpired = expired
        q.includeRevoked = revoked
        q.multiUse = multi
        q.beforeSeq = before
        q.offset = offset
        q.limit = limit
        return try reader.listCustomerCredits(q).credits.map(\.id)
    }
}

@Suite struct CouponCatalogTests {
    @Test func createGetListDeactivate() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let single = try fx.coupon(validityDays: 30)
        #expect(single.active && !single.multiUse && single.maxUses == 1 && single.validityDays == 30 && single.serviceId == "massage")
        let multi = try fx.coupon(maxUses: 10, value: 2_500, service: nil)
        #expect(multi.multiUse && multi.valueMinor == 2_500 && multi.serviceId == nil)
        #expect(try fx.reader.coupon(tenant: fx.tenant, id: single.id) == single)
        #expect(Set(try fx.reader.listCoupons(tenant: fx.tenant, includeInactive: false, afterId: nil, limit: 10).map(\.id)) == [single.id, multi.id])

        fx.clock.advance(seconds: 5)
        let off = try fx.apply(DeactivateCoupon(tenantId: fx.tenant, couponId: multi.id, idempotencyKey: nil))
        #expect(!off.active && off.updatedMicros == fx.now)
        // Twice: OK, unchanged.
        fx.clock.advance(seconds: 5)
        #expect(try fx.apply(DeactivateCoupon(tenantId: fx.tenant, couponId: multi.id, idempotencyKey: nil)) == off)
        #expect(try fx.reader.listCoupons(tenant: fx.tenant, includeInactive: false, afterId: nil, limit: 10).map(\.id) == [single.id])
        #expect(try fx.reader.listCoupons(tenant: fx.tenant, includeInactive: true, afterId: nil, limit: 10).count == 2)
        fx.expectError(.notFound(kind: "coupon", id: "cpn_nope"), DeactivateCoupon(tenantId: fx.tenant, couponId: "cpn_nope", idempotencyKey: nil))
        #expect(fx.lastSeq == 0)  // catalog changes write no entries
    }

    @Test func badCouponsAreInvalidArgument() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        fx.expectError(.invalidArgument([.init("name", "is required"), .init("service_id", "or value_minor is required (what the credit entitles to)"),
                                         .init("max_uses", "must be 1…1000")]),
                       CreateCoupon(tenantId: fx.tenant, name: "", serviceId: nil, valueMinor: 0, maxUses: 0, validityDays: nil, idempotencyKey: nil))
        fx.expectError(.invalidArgument([.init("value_minor", "must not be negative"), .init("service_id", "or value_minor is required (what the credit entitles to)"),
                                         .init("max_uses", "must be 1…1000"), .init("validity_days", "must be 1…36500")]),
                       CreateCoupon(tenantId: fx.tenant, name: "x", serviceId: nil, valueMinor: -1, maxUses: 1_001, validityDays: 0, idempotencyKey: nil))
    }
}

@Suite struct CustomerCreditTests {
    @Test func issueWritesUsesAndDeferredRevenue() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let coupon = try fx.coupon(maxUses: 3, validityDays: 10)
        let result = try fx.apply(fx.issueCmd("alice", coupon.id, revenue: 900, membership: "m1"))
        let c = result.credit
        #expect(c.state == .active && c.usesRemaining == 3 && c.maxUses == 3 && c.membershipId == "m1" && c.serviceId == "massage")
        #expect(c.expiresMicros == fx.now + 10 * microsPerDay)
        #expect(c.issuedSeq == 1 && result.seq == 2 && fx.lastSeq == 2)
        #expect(try fx.credit(c.id) == c)
        let issue = try #require(try fx.couponEntries("alice").first)
        #expect(issue.type == .couponIssue && issue.amountMinor == 3 && issue.debitAccount == "coupon_uses:issued"
                && issue.creditAccount == "coupon_uses:client:alice" && issue.refId == c.id)
        #expect(try fx.revenueEntries("alice").map(\.amountMinor) == [900])
        #expect(try fx.account(CouponAccount.uses("alice")) == 3)
        #expect(try fx.account(CouponAccount.revenueDeferred) == 900)
        // Money balance untouched.
        #expect(try fx.balance("alice").summary.totalMinor == 0)
        // Explicit expiry wins; one in the past is refused.
        let explicit = try fx.issue("alice", coupon.id, expires: fx.now + 60 * microsPerSecond)
        #expect(explicit.expiresMicros == fx.now + 60 * microsPerSecond)
        fx.expectError(.invalid("expire_time", "must be in the future"), fx.issueCmd("alice", coupon.id, expires: fx.now))
    }

    @Test func issueFromInactiveOrUnknownCouponIsRefused() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let coupon = try fx.coupon()
        _ = try fx.apply(DeactivateCoupon(tenantId: fx.tenant, couponId: coupon.id, idempotencyKey: nil))
        try fx.expectUnchanged("bob") {
            fx.expectError(.couponInactive(couponId: coupon.id), fx.issueCmd("bob", coupon.id))
            fx.expectError(.notFound(kind: "coupon", id: "cpn_x"), fx.issueCmd("bob", "cpn_x"))
            fx.expectError(.invalidArgument([.init("revenue_minor", "must not be negative")]), fx.issueCmd("bob", coupon.id, revenue: -1))
            fx.expectError(.invalidArgument([.init("idempotency_key", "is required (field or idempotency-key metadata)")]),
                           IssueCustomerCredit(tenantId: fx.tenant, clientId: "bob", couponId: coupon.id, membershipId: nil,
                                               expiresMicros: nil, revenueMinor: 0, idempotencyKey: nil))
        }
        #expect(try fx.list("bob", redeemed: true, expired: true, revoked: true).isEmpty)
    }

    @Test func singleUseRedeemThenRedeemAgainIsExhausted() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let credit = try fx.issue("c", try fx.coupon().id)
        let r = try fx.redeem(credit.id)
        #expect(r.credit.state == .redeemed && r.credit.usesRemaining == 0 && r.credit.usesRedeemed == 1)
        #expect(r.redemption.state == .active && r.redemption.bookingRef == "bk-1" && r.redemption.creditId == credit.id)
        #expect(try fx.credit(credit.id) == r.credit)
        #expect(try fx.reader.creditRedemption(tenant: fx.tenant, id: r.redemption.id) == r.redemption)
        try fx.expectUnchanged("c") {
            fx.expectError(.creditExhausted(creditId: credit.id, maxUses: 1), fx.redeemCmd(credit.id))
        }
        #expect(try fx.couponEntries("c").map(\.type) == [.couponIssue, .couponRedeem])
    }

    @Test func multiUseRecordsUsesUntilExhausted() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let credit = try fx.issue("c", try fx.coupon(maxUses: 3).id)
        #expect(try fx.redeem(credit.id).credit.usesRemaining == 2)
        #expect(try fx.redeem(credit.id).credit.usesRemaining == 1)
        let last = try fx.redeem(credit.id)
        #expect(last.credit.usesRemaining == 0 && last.credit.state == .redeemed && last.credit.usesRedeemed == 3)
        fx.expectError(.creditExhausted(creditId: credit.id, maxUses: 3), fx.redeemCmd(credit.id))
        #expect(try fx.account(CouponAccount.uses("c")) == 0)
        #expect(try fx.account(CouponAccount.usesRedeemed) == 3)
    }

    @Test func revokeRulesAndTwice() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let coupon = try fx.coupon(maxUses: 2)
        // Revoke after a redemption: refused.
        let used = try fx.issue("c", coupon.id)
        let redemption = try fx.redeem(used.id).redemption
        try fx.expectUnchanged("c") {
            fx.expectError(.creditAlreadyRedeemed(creditId: used.id, usesRedeemed: 1), fx.revokeCmd(used.id))
        }
        // …until the redemption is cancelled: then it can be revoked.
        _ = try fx.apply(fx.cancelCmd(redemption.id))
        let revoked = try fx.apply(fx.revokeCmd(used.id)).credit
        #expect(revoked.state == .revoked && revoked.usesRemaining == 0 && revoked.usesVoid == 2 && revoked.closedMicros == fx.now)
        // Twice, and redeeming a revoked credit: CREDIT_REVOKED; nothing changes.
        try fx.expectUnchanged("c") {
            fx.expectError(.creditRevoked(creditId: used.id), fx.revokeCmd(used.id))
            fx.expectError(.creditRevoked(creditId: used.id), fx.redeemCmd(used.id))
        }
        // A fully redeemed credit cannot be revoked either.
        let single = try fx.issue("c", try fx.coupon().id)
        _ = try fx.redeem(single.id)
        fx.expectError(.creditAlreadyRedeemed(creditId: single.id, usesRedeemed: 1), fx.revokeCmd(single.id))
        // Unknown, or of another client.
        fx.expectError(.notFound(kind: "customer_credit", id: "ccr_x"), fx.revokeCmd("ccr_x"))
        fx.expectError(.notFound(kind: "customer_credit", id: single.id), fx.redeemCmd(single.id, client: "someone-else"))
        #expect(try fx.account(CouponAccount.usesRevoked) == 2)
        let types = try fx.couponEntries("c").map(\.type)
        #expect(types == [.couponIssue, .couponRedeem, .couponRedemptionCancel, .couponRevoke, .couponIssue, .couponRedeem])
    }

    @Test func redeemCancelRedeemAgainAndCancelTwice() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let credit = try fx.issue("c", try fx.coupon().id, revenue: 500)
        let first = try fx.redeem(credit.id)
        #expect(first.credit.revenueAllocatedMinor == 500)
        let cancelled = try fx.apply(fx.cancelCmd(first.redemption.id))
        #expect(cancelled.redemption.state == .cancelled && cancelled.redemption.cancelSeq != nil)
        #expect(cancelled.credit.state == .active && cancelled.credit.usesRemaining == 1 && cancelled.credit.revenueAllocatedMinor == 0)
        try fx.expectUnchanged("c") {
            fx.expectError(.redemptionAlreadyCancelled(redemptionId: first.redemption.id), fx.cancelCmd(first.redemption.id))
        }
        fx.expectError(.notFound(kind: "credit_redemption", id: "crd_x"), fx.cancelCmd("crd_x"))
        let again = try fx.redeem(credit.id)
        #expect(again.credit.state == .redeemed && again.credit.revenueAllocatedMinor == 500 && again.redemption.id != first.redemption.id)
        #expect(try fx.reader.creditRedemptions(tenant: fx.tenant, creditId: credit.id, limit: 10).map(\.state) == [.cancelled, .active])
        #expect(try fx.account(CouponAccount.revenueAllocated) == 500)
        #expect(try fx.account(CouponAccount.revenueDeferred) == 0)
    }

    @Test func expiryAtTheBoundary() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let coupon = try fx.coupon(maxUses: 3)
        let credit = try fx.issue("c", coupon.id, revenue: 300, expires: fx.now + 10 * microsPerSecond)
        fx.clock.advance(micros: 10 * microsPerSecond - 1)
        #expect(try fx.redeem(credit.id).credit.usesRemaining == 2)  // one microsecond before: still valid
        fx.clock.advance(micros: 1)  // now == expires: expired
        try fx.expectUnchanged("c") {
            fx.expectError(.creditExpired(creditId: credit.id, expiresMicros: credit.expiresMicros!), fx.redeemCmd(credit.id))
            fx.expectError(.creditAlreadyRedeemed(creditId: credit.id, usesRedeemed: 1), fx.revokeCmd(credit.id))
        }
        #expect(try fx.credit(credit.id).effectiveState(atMicros: fx.now) == .expired)
        #expect(try fx.list("c").isEmpty)
        #expect(try fx.list("c", expired: true) == [credit.id])
        // Maintenance writes the expiry: 2 uses, 200 revenue released.
        try fx.runCouponMaintenance()
        let expired = try fx.credit(credit.id)
        #expect(expired.state == .expired && expired.usesVoid == 2 && expired.revenueReleasedMinor == 200 && expired.revenueAllocatedMinor == 100)
        #expect(try fx.couponEntries("c").last.map { ($0.type, $0.amountMinor, $0.creditAccount) } ?? (.spend, 0, "") == (.couponExpiry, 2, "coupon_uses:expired"))
        try fx.runCouponMaintenance()  // nothing more to do
        #expect(try fx.credit(credit.id) == expired)
        // A revoke of an unredeemed expired credit: CREDIT_EXPIRED.
        let other = try fx.issue("c", coupon.id, expires: fx.now + microsPerSecond)
        fx.clock.advance(seconds: 1)
        fx.expectError(.creditExpired(creditId: other.id, expiresMicros: other.expiresMicros!), fx.revokeCmd(other.id))
    }

    /// A redemption cancelled after its credit expired: the use returns and
    /// expires at once, its revenue share is released.
    @Test func cancelAfterExpiryExpiresTheReturnedUse() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let credit = try fx.issue("c", try fx.coupon(maxUses: 2).id, revenue: 101, expires: fx.now + microsPerSecond)
        let r = try fx.redeem(credit.id)
        #expect(r.redemption.revenueMinor == 50)
        fx.clock.advance(seconds: 2)
        try fx.runCouponMaintenance()
        let cancelled = try fx.apply(fx.cancelCmd(r.redemption.id))
        #expect(cancelled.credit.state == .expired && cancelled.credit.usesRemaining == 0 && cancelled.credit.usesVoid == 2)
        #expect(cancelled.credit.revenueAllocatedMinor == 0 && cancelled.credit.revenueReleasedMinor == 101)
        #expect(try fx.couponEntries("c").suffix(2).map(\.type) == [.couponRedemptionCancel, .couponExpiry])
    }

    @Test func revenueSplitsExactlyOverUses() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let credit = try fx.issue("c", try fx.coupon(maxUses: 3).id, revenue: 1_000)
        let shares = try (0..<3).map { _ in try fx.redeem(credit.id).redemption.revenueMinor }
        #expect(shares == [333, 333, 334])
        // Cancel the first; the use redeemed again is the last one: it takes what is left.
        let redemptions = try fx.reader.creditRedemptions(tenant: fx.tenant, creditId: credit.id, limit: 10)
        _ = try fx.apply(fx.cancelCmd(redemptions[0].id))
        #expect(try fx.credit(credit.id).revenueAllocatedMinor == 667)
        #expect(try fx.redeem(credit.id).redemption.revenueMinor == 333)
        let final = try fx.credit(credit.id)
        #expect(final.revenueAllocatedMinor == 1_000 && final.revenueDeferredMinor == 0)
        #expect(try fx.account(CouponAccount.revenueAllocated) == 1_000)
        // Less revenue than uses: zero shares write no entry, the last takes all.
        let small = try fx.issue("d", try fx.coupon(maxUses: 4).id, revenue: 3)
        let smallShares = try (0..<4).map { _ in try fx.redeem(small.id).redemption.revenueMinor }
        #expect(smallShares == [0, 0, 0, 3])
        #expect(try fx.revenueEntries("d").map(\.amountMinor) == [3, 3])
    }

    @Test func revokeReleasesRevenue() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let credit = try fx.issue("c", try fx.coupon(maxUses: 5).id, revenue: 777)
        let revoked = try fx.apply(fx.revokeCmd(credit.id))
        #expect(revoked.credit.revenueReleasedMinor == 777 && revoked.seq == fx.lastSeq)
        #expect(try fx.account(CouponAccount.revenueReleased) == 777)
        #expect(try fx.account(CouponAccount.revenueDeferred) == 0)
        #expect(try fx.account(CouponAccount.uses("c")) == 0)
    }

    @Test func idempotentRetriesAndKeyReuse() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let coupon = try fx.coupon(maxUses: 2)
        let first = try fx.apply(fx.issueCmd("c", coupon.id, key: "k-issue"))
        let seq = fx.lastSeq
        guard case .replayed(_, let id, let replaySeq) = try fx.ledger.write(fx.issueCmd("c", coupon.id, key: "k-issue")) else {
            Issue.record("expected a replay")
            return
        }
        #expect(id == first.credit.id && replaySeq == first.seq && fx.lastSeq == seq)
        fx.expectError(.idempotencyKeyReused(operation: "issue_customer_credit", differingFields: ["client_id"], existingResultId: first.credit.id),
                       fx.issueCmd("other", coupon.id, key: "k-issue"))
        let r = try fx.apply(fx.redeemCmd(first.credit.id, key: "k-redeem"))
        guard case .replayed = try fx.ledger.write(fx.redeemCmd(first.credit.id, key: "k-redeem")) else {
            Issue.record("expected a replay")
            return
        }
        #expect(try fx.credit(first.credit.id).usesRedeemed == 1)
        fx.expectError(.idempotencyKeyReused(operation: "redeem_customer_credit", differingFields: ["booking_ref"], existingResultId: r.redemption.id),
                       fx.redeemCmd(first.credit.id, booking: "other", key: "k-redeem"))
    }

    @Test func listFiltersAndPaging() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let single = try fx.coupon().id, multi = try fx.coupon(maxUses: 3).id
        let active1 = try fx.issue("c", single).id
        let redeemed = try fx.issue("c", single).id
        _ = try fx.redeem(redeemed)
        let revoked = try fx.issue("c", multi).id
        _ = try fx.apply(fx.revokeCmd(revoked))
        let expiring = try fx.issue("c", multi, expires: fx.now + microsPerSecond).id
        let partlyUsed = try fx.issue("c", multi).id
        _ = try fx.redeem(partlyUsed)
        _ = try fx.issue("someone-else", single)
        fx.clock.advance(seconds: 1)

        // Newest first; active always; others on request.
        #expect(try fx.list("c") == [partlyUsed, active1])
        #expect(try fx.list("c", redeemed: true) == [partlyUsed, redeemed, active1])
        #expect(try fx.list("c", expired: true) == [partlyUsed, expiring, active1])
        #expect(try fx.list("c", revoked: true) == [partlyUsed, revoked, active1])
        let all = [partlyUsed, expiring, revoked, redeemed, active1]
        #expect(try fx.list("c", redeemed: true, expired: true, revoked: true) == all)
        #expect(try fx.list("c", redeemed: true, expired: true, revoked: true, multi: .multiUseOnly) == [partlyUsed, expiring, revoked])
        #expect(try fx.list("c", redeemed: true, expired: true, revoked: true, multi: .singleUseOnly) == [redeemed, active1])
        // Still expired after maintenance wrote it.
        try fx.runCouponMaintenance()
        #expect(try fx.credit(expiring).state == .expired)
        #expect(try fx.list("c", expired: true) == [partlyUsed, expiring, active1])

        // Keyset pages of 2, and page numbers (offset), give the same pages.
        var q = LedgerReader.CustomerCreditQuery(tenant: fx.tenant, clientId: "c")
        (q.includeRedeemed, q.includeExpired, q.includeRevoked, q.limit) = (true, true, true, 2)
        var pages: [[String]] = []
        var cursor: Int64?
        repeat {
            q.beforeSeq = cursor
            let page = try fx.reader.listCustomerCredits(q)
            #expect(page.totalSize == 5)
            pages.append(page.credits.map(\.id))
            cursor = page.credits.count == 2 ? page.credits.last?.issuedSeq : nil
        } while cursor != nil && pages.count < 10
        #expect(pages.flatMap { $0 } == all)
        let byNumber = try (0..<3).map { try fx.list("c", redeemed: true, expired: true, revoked: true, offset: $0 * 2, limit: 2) }
        #expect(byNumber == [Array(all[0..<2]), Array(all[2..<4]), [all[4]]])
    }

    /// M ≫ N concurrent redeems of a credit with N uses: exactly N succeed.
    @Test func concurrentRedeemsNeverExceedTheUses() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let uses = 7, racers = 60
        let credit = try fx.issue("c", try fx.coupon(maxUses: Int32(uses)).id, revenue: 1_000)
        let results = Collector<Result<WriteOutcome<RedemptionResult>, LedgerError>>()
        let group = DispatchGroup()
        let commands = (0..<racers).map { fx.redeemCmd(credit.id, booking: "bk-\($0)", key: "race-\($0)") }
        DispatchQueue.concurrentPerform(iterations: racers) { i in
            group.enter()
            fx.ledger.submit(commands[i]) { r in
                results.add(r)
                group.leave()
            }
        }
        group.wait()
        let ok = results.all.filter { if case .success = $0 { return true } else { return false } }
        let exhausted = results.all.filter {
            if case .failure(let error) = $0 { return error == .creditExhausted(creditId: credit.id, maxUses: Int32(uses)) }
            return false
        }
        #expect(ok.count == uses && exhausted.count == racers - uses)
        let final = try fx.credit(credit.id)
        #expect(final.state == .redeemed && final.usesRedeemed == Int32(uses) && final.revenueAllocatedMinor == 1_000)
    }
}

extension WriteOutcome {
    /// The output of a write that must have been applied (not replayed).
    func applied() throws -> Output {
        guard case .applied(let output, _) = self else { throw UnexpectedReplay() }
        return output
    }
}

@Suite struct MembershipCreditRuleTests {
    /// 2027-01-15T00:00:00Z.
    static let jan15: Int64 = 1_799_971_200 * 1_000_000

    @Test func schedulePeriods() {
        let day = RuleSchedule.microsPerDay
        let p = RuleSchedule.period(.monthly, day: 3, containing: Self.jan15)
        #expect(p.key == "2027-01" && p.issueMicros == Self.jan15 - 12 * day && p.endMicros == Self.jan15 + 17 * day)
        #expect(RuleSchedule.firstIssue(.monthly, day: 3, atOrAfter: Self.jan15) == Self.jan15 + 19 * day)  // 2027-02-03
        #expect(RuleSchedule.firstIssue(.monthly, day: 15, atOrAfter: Self.jan15) == Self.jan15)
        #expect(RuleSchedule.latestDue(.monthly, day: 20, now: Self.jan15).key == "2026-12")
        // 2027-01-15 is a Friday (ISO 5): its week starts Monday 2027-01-11.
        let w = RuleSchedule.period(.weekly, day: 5, containing: Self.jan15 + 3_600 * 1_000_000)
        #expect(w.key == "week-2027-01-11" && w.issueMicros == Self.jan15 && w.endMicros == Self.jan15 + 3 * day)
        #expect(RuleSchedule.period(.monthly, day: 1, containing: Self.jan15 + 340 * day).key == "2027-12")
        #expect(RuleSchedule.period(.monthly, day: 1, containing: Self.jan15 + 360 * day).key == "2028-01")
    }

    /// Exactly once per period: two runs, a restart (ledger reopened on the
    /// same file), an overlapping run that finds the period row, and the
    /// clock moved across periods.
    @Test func monthlyRuleIssuesExactlyOncePerPeriod() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        fx.clock.advance(micros: Self.jan15 - fx.now)
        let coupon = try fx.coupon(maxUses: 2, validityDays: 30)
        let rule = try fx.apply(CreateMembershipCreditRule(tenantId: fx.tenant, couponId: coupon.id, clientId: "c", membershipId: "gold",
                                                           frequency: .monthly, day: 15, revenueMinor: 400, startMicros: nil,
                                                           idempotencyKey: fx.key()))
        #expect(rule.enabled && rule.nextIssueMicros == Self.jan15)
        try fx.runCouponMaintenance()
        try fx.runCouponMaintenance()
        var credits = try fx.list("c", expired: true)
        #expect(credits.count == 1)
        let first = try fx.credit(credits[0])
        #expect(first.ruleId == rule.id && first.membershipId == "gold" && first.revenueMinor == 400
                && first.expiresMicros == fx.now + 30 * microsPerDay)
        var stored = try #require(try fx.reader.membershipCreditRule(tenant: fx.tenant, id: rule.id))
        #expect(stored.lastPeriod == "2027-01" && stored.nextIssueMicros == Self.jan15 + 31 * microsPerDay)

        // Restart: reopen the ledger on the same file; later in the same month.
        fx.ledger.close()
        var options = Ledger.Options()
        options.clock = fx.clock
        options.maintenanceIntervalMillis = 1_000_000_000
        let reopened = try Ledger(path: fx.path, options: options)
        defer { reopened.close() }
        fx.clock.advance(seconds: 10 * 86_400)
        try fx.runCouponMaintenance()
        #expect(try fx.list("c", expired: true).count == 1)

        // An overlapping run that still sees the old next issue time: the
        // (rule, period) row stops it.
        let db = try SQLiteConnection(path: fx.path)
        try db.statement("UPDATE coupon_rules SET next_issue_micros = ? WHERE id = ?").bind(.int(Self.jan15), .text(rule.id)).run()
        try fx.runCouponMaintenance()
        #expect(try fx.list("c", expired: true).count == 1)
        #expect(try fx.reader.ruleIssues(tenant: fx.tenant, ruleId: rule.id, limit: 10).map(\.period) == ["2027-01"])

        // The clock moves into February (after the 15th): one more.
        fx.clock.advance(micros: Self.jan15 + 31 * microsPerDay - fx.now)
        try fx.runCouponMaintenance()
        try fx.runCouponMaintenance()
        credits = try fx.list("c", expired: true)
        #expect(credits.count == 2)
        stored = try #require(try fx.reader.membershipCreditRule(tenant: fx.tenant, id: rule.id))
        #expect(stored.lastPeriod == "2027-02")
        // Across several periods at once: only the latest due period (no back-fill).
        fx.clock.advance(seconds: 90 * 86_400)
        try fx.runCouponMaintenance()
        try fx.runCouponMaintenance()
        #expect(try fx.list("c", expired: true).count == 3)
        #expect(try fx.reader.ruleIssues(tenant: fx.tenant, ruleId: rule.id, limit: 10).map(\.period) == ["2027-01", "2027-02", "2027-05"])

        // Disabled: nothing more; disabling twice returns it unchanged.
        let disabled = try reopened.write(DisableMembershipCreditRule(tenantId: fx.tenant, ruleId: rule.id, idempotencyKey: nil)).applied()
        #expect(!disabled.enabled && disabled.disabledMicros == fx.now)
        fx.clock.advance(seconds: 60)
        #expect(try reopened.write(DisableMembershipCreditRule(tenantId: fx.tenant, ruleId: rule.id, idempotencyKey: nil)).applied() == disabled)
        fx.clock.advance(seconds: 40 * 86_400)
        try fx.runCouponMaintenance()
        #expect(try fx.list("c", expired: true).count == 3)
        #expect(try fx.reader.listMembershipCreditRules(tenant: fx.tenant, clientId: "c", includeDisabled: false, afterId: nil, limit: 10).isEmpty)
        #expect(try fx.reader.listMembershipCreditRules(tenant: fx.tenant, clientId: "c", includeDisabled: true, afterId: nil, limit: 10).map(\.id) == [rule.id])
    }

    @Test func weeklyRuleAndInactiveCoupon() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        fx.clock.advance(micros: Self.jan15 + 3_600 * microsPerSecond - fx.now)  // Friday 01:00
        let coupon = try fx.coupon()
        // Weekly on Friday, starting yesterday: this Friday's 00:00 is due now.
        let rule = try fx.apply(CreateMembershipCreditRule(tenantId: fx.tenant, couponId: coupon.id, clientId: "c", membershipId: "m",
                                                           frequency: .weekly, day: 5, revenueMinor: 0, startMicros: fx.now - microsPerDay,
                                                           idempotencyKey: fx.key()))
        #expect(rule.nextIssueMicros == Self.jan15)
        try fx.runCouponMaintenance()
        #expect(try fx.list("c").count == 1)
        // The coupon is deactivated: the next period issues nothing (and is not retried).
        _ = try fx.apply(DeactivateCoupon(tenantId: fx.tenant, couponId: coupon.id, idempotencyKey: nil))
        fx.clock.advance(seconds: 7 * 86_400)
        try fx.runCouponMaintenance()
        try fx.runCouponMaintenance()
        #expect(try fx.list("c").count == 1)
        #expect(try fx.reader.ruleIssues(tenant: fx.tenant, ruleId: rule.id, limit: 10).map(\.creditId?.isEmpty) == [false, nil])
        // New rules on an inactive coupon are refused; bad days are invalid.
        fx.expectError(.couponInactive(couponId: coupon.id),
                       CreateMembershipCreditRule(tenantId: fx.tenant, couponId: coupon.id, clientId: "c", membershipId: "m", frequency: .weekly,
                                                  day: 1, revenueMinor: 0, startMicros: nil, idempotencyKey: fx.key()))
        fx.expectError(.invalidArgument([.init("day_of_month", "must be 1…28")]),
                       CreateMembershipCreditRule(tenantId: fx.tenant, couponId: coupon.id, clientId: "c", membershipId: "m", frequency: .monthly,
                                                  day: 29, revenueMinor: 0, startMicros: nil, idempotencyKey: fx.key()))
        fx.expectError(.notFound(kind: "membership_credit_rule", id: "rul_x"),
                       DisableMembershipCreditRule(tenantId: fx.tenant, ruleId: "rul_x", idempotencyKey: nil))
    }

    /// The writer's own maintenance (real timer) runs rules and expiry.
    @Test func writerMaintenanceRunsCouponWork() throws {
        let fx = try Fixture(maintenanceMillis: 50)
        defer { fx.finish() }
        let coupon = try fx.coupon(maxUses: 2)
        let credit = try fx.issue("c", coupon.id, revenue: 10, expires: fx.now + 60 * microsPerSecond)
        _ = try fx.apply(CreateMembershipCreditRule(tenantId: fx.tenant, couponId: coupon.id, clientId: "r", membershipId: "m",
                                                    frequency: .monthly, day: 1, revenueMinor: 0, startMicros: fx.now - 40 * microsPerDay,
                                                    idempotencyKey: fx.key()))
        // Fence any maintenance run in flight before moving the clock.
        for _ in 0..<2 { _ = try fx.ledger.write(SetDirectoryAccess(tenantId: fx.tenant, allow: false)) }
        fx.clock.advance(seconds: 61)
        #expect(try fx.eventually { try fx.credit(credit.id).state == .expired })
        #expect(try fx.eventually { try fx.list("r").count == 1 })
    }
}
