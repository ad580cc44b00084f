import CreditsAPI
import CreditsProto
import GRPCTransport
import Ledger
import Testing

/// Authentication and roles, one coupon and one session-package flow, in
/// process: statuses, ErrorInfo reasons and the ledger after each call.
@Suite struct AuthTests {
    func orderRequest(_ client: String, _ amount: Int64, key: String) -> Credits_V1_CreateCreditOrderRequest {
        var request = Credits_V1_CreateCreditOrderRequest()
        request.clientID = client
        request.amountMinor = amount
        request.centerID = "c1"
        request.idempotencyKey = key
        return request
    }

    @Test func noKeyIsUnauthenticatedAndAppliesNothing() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        let seq = try h.lastSeq(t.id)
        let reply = try h.call(Credits_V1_CreditService.createCreditOrder, orderRequest("ana", 100, key: "o1"), token: nil)
        #expect(reply.code == .unauthenticated && reply.reason == "UNAUTHENTICATED")
        #expect(reply.messages.isEmpty)
        let forged = try h.call(Credits_V1_CreditService.createCreditOrder, orderRequest("ana", 100, key: "o1"),
                                token: String(t.staff.dropLast()) + (t.staff.hasSuffix("A") ? "B" : "A"))
        #expect(forged.code == .unauthenticated && forged.reason == "UNAUTHENTICATED")
        #expect(try h.lastSeq(t.id) == seq)
        #expect(try h.balance(t.id, "ana").availableMinor == 0)
        #expect(try h.reader.idempotency(tenant: t.id, key: "o1") == nil)
    }

    @Test func appKeyCannotCallAStaffMethod() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        let reply = try h.call(Credits_V1_CreditService.createCreditOrder, orderRequest("ana", 100, key: "o1"), token: t.app)
        #expect(reply.code == .permissionDenied && reply.reason == "PERMISSION_DENIED")
        #expect(reply.errorMetadata["role"] == "app")
        #expect(try h.lastSeq(t.id) == 0)
        // The tenant's staff key may; the admin key manages tenants only.
        _ = try h.call(Credits_V1_CreditService.createCreditOrder, orderRequest("ana", 100, key: "o1"), token: t.staff).message()
        let admin = try h.call(Credits_V1_CreditService.createCreditOrder, orderRequest("ana", 100, key: "o2"), token: APIHarness.adminToken)
        #expect(admin.code == .permissionDenied && admin.reason == "PERMISSION_DENIED")
        #expect(try h.lastSeq(t.id) == 1)
    }

    /// Revoked through AdminService: refused at once (the cache is invalidated).
    @Test func revokedKeyIsRefusedAtOnce() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        var get = Credits_V1_GetBalanceRequest()
        get.clientID = "ana"
        #expect(try h.call(Credits_V1_CreditService.getBalance, get, token: t.app).code == .ok)  // cached now
        var revoke = Credits_V1_RevokeApiKeyRequest()
        revoke.keyID = String(t.app.prefix { $0 != "." })
        _ = try h.call(Credits_V1_AdminService.revokeApiKey, revoke, token: APIHarness.adminToken).message()
        let refused = try h.call(Credits_V1_CreditService.getBalance, get, token: t.app)
        #expect(refused.code == .unauthenticated && refused.reason == "UNAUTHENTICATED")
        #expect(try h.call(Credits_V1_CreditService.getBalance, get, token: t.staff).code == .ok)
    }

    /// The key cache lives by the API clock (injected): a key revoked in the
    /// ledger behind the API's back (no invalidation) is still served from
    /// the cache until its lifetime passes on that clock, then refused.
    @Test func keyCacheLifetimeRunsOnTheInjectedClock() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        var get = Credits_V1_GetBalanceRequest()
        get.clientID = "ana"
        #expect(try h.call(Credits_V1_CreditService.getBalance, get, token: t.app).code == .ok)  // cached now
        _ = try h.ledger.write(RevokeAPIKey(keyId: String(t.app.prefix { $0 != "." })))
        #expect(try h.call(Credits_V1_CreditService.getBalance, get, token: t.app).code == .ok, "served from the cache")
        h.apiClock.advance(seconds: 2)  // past the cache's 1 s lifetime
        let refused = try h.call(Credits_V1_CreditService.getBalance, get, token: t.app)
        #expect(refused.code == .unauthenticated && refused.reason == "UNAUTHENTICATED")
    }
}

@Suite struct CouponAndSessionTests {
    @Test func couponIssuedThenRedeemedOnce() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        typealias S = Credits_V1_CouponService
        var create = Credits_V1_CreateCouponRequest()
        create.name = "Free massage"
        create.serviceID = "massage-60"
        create.maxUses = 1
        create.idempotencyKey = "cp1"
        let denied = try h.call(S.createCoupon, create, token: t.app)
        #expect(denied.code == .permissionDenied && denied.reason == "PERMISSION_DENIED")
        let coupon = try h.call(S.createCoupon, create, token: t.staff).message()
        #expect(coupon.active && coupon.maxUses == 1 && coupon.serviceID == "massage-60")

        var issue = Credits_V1_IssueCustomerCreditRequest()
        issue.clientID = "ana"
        issue.couponID = coupon.id
        issue.revenueMinor = 100
        issue.idempotencyKey = "is1"
        let issued = try h.call(S.issueCustomerCredit, issue, token: t.app)
        let credit = try #require(try issued.message().credit)
        #expect(credit.clientID == "ana" && credit.usesRemaining == 1 && credit.state == .active)
        #expect(try h.call(S.issueCustomerCredit, issue, token: t.app).messages == issued.messages, "a replay sends the stored bytes")

        var redeem = Credits_V1_RedeemCustomerCreditRequest()
        redeem.creditID = credit.id
        redeem.bookingRef = "bk1"
        redeem.idempotencyKey = "rd1"
        let redeemed = try h.call(S.redeemCustomerCredit, redeem, token: t.app).message()
        #expect(redeemed.redemption?.creditID == credit.id && redeemed.credit?.usesRemaining == 0)
        let seq = try h.lastSeq(t.id)
        redeem.idempotencyKey = "rd2"
        redeem.bookingRef = "bk2"
        let again = try h.call(S.redeemCustomerCredit, redeem, token: t.app)
        #expect(again.code == .failedPrecondition && again.reason == "CREDIT_EXHAUSTED")
        #expect(try h.lastSeq(t.id) == seq, "a refused redemption applies nothing")

        var get = Credits_V1_GetCustomerCreditRequest()
        get.creditID = credit.id
        let now = try #require(try h.call(S.getCustomerCredit, get, token: t.app).message().credit)
        #expect(now.usesRedeemed == 1 && now.usesRemaining == 0)
    }

    @Test func sessionPackageUsedUntilNoneLeft() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        typealias S = Credits_V1_SessionPackageService
        var create = Credits_V1_CreateClientPackageRequest()
        create.clientID = "ana"
        create.name = "Spa bundle"
        create.validFrom = h.timestamp(in: -60)
        create.validUntil = h.timestamp(in: 30 * 86_400)
        var line = Credits_V1_NewSessionLine()
        line.serviceID = "massage"
        line.totalSessions = 1
        create.lines = [line]
        create.idempotencyKey = "pk1"
        let package = try #require(try h.call(S.createClientPackage, create, token: t.staff).message().clientPackage)
        #expect(package.lines.map(\.sessionsLeft) == [1])

        var use = Credits_V1_UsePackageCreditRequest()
        use.paymentRef = "pay-1"
        use.clientID = "ana"
        use.serviceID = "massage"
        use.idempotencyKey = "u1"
        let used = try h.call(S.usePackageCredit, use, token: t.app).message()
        #expect(used.redemption?.clientPackageID == package.id && used.clientPackage?.lines.map(\.sessionsLeft) == [0])
        let seq = try h.lastSeq(t.id)
        use.paymentRef = "pay-2"
        use.idempotencyKey = "u2"
        let none = try h.call(S.usePackageCredit, use, token: t.app)
        #expect(none.code == .failedPrecondition && none.reason == "NO_PACKAGE_TO_USE")
        #expect(try h.lastSeq(t.id) == seq, "a refused use applies nothing")
    }
}
