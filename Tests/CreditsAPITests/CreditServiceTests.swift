import CreditsAPI
import CreditsProto
import GRPCTransport
import Ledger
import Testing

typealias CreditService = Credits_V1_CreditService

/// CreditService handlers in process: replies, statuses and error details,
/// and the ledger's state after each call (a failure applied nothing).
@Suite struct CreditServiceTests {
    func order(_ h: APIHarness, _ t: TestTenant, _ client: String, _ amount: Int64, key: String) throws -> Credits_V1_CreateCreditOrderResponse {
        var request = Credits_V1_CreateCreditOrderRequest()
        request.clientID = client
        request.amountMinor = amount
        request.centerID = "c1"
        request.idempotencyKey = key
        return try h.call(CreditService.createCreditOrder, request, token: t.staff).message()
    }

    func spendRequest(_ client: String, _ amount: Int64, key: String) -> Credits_V1_SpendCreditsRequest {
        var request = Credits_V1_SpendCreditsRequest()
        request.clientID = client
        request.amountMinor = amount
        request.reason = .service
        request.centerID = "c1"
        request.idempotencyKey = key
        return request
    }

    @Test func spendAnswersTheSpendAndTheLedgerHasIt() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        _ = try order(h, t, "ana", 1_000, key: "o1")
        let reply = try h.call(CreditService.spendCredits, spendRequest("ana", 300, key: "s1"), token: t.app)
        let spent = try reply.message()
        #expect(spent.spend?.amountMinor == 300 && spent.spend?.clientID == "ana" && spent.spend?.id.hasPrefix("spd_") == true)
        #expect(spent.balance?.availableMinor == 700 && spent.balance?.seq == 2)
        #expect(try h.balance(t.id, "ana") == BalanceSummary(clientId: "ana", availableMinor: 700, heldMinor: 0, seq: 2))
        #expect(try h.lastSeq(t.id) == 2)
        #expect(try h.reader.spend(tenant: t.id, id: spent.spend?.id ?? "")?.amountMinor == 300)
    }

    @Test func insufficientCreditsIsFailedPreconditionAndAppliesNothing() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        _ = try order(h, t, "ana", 100, key: "o1")
        let reply = try h.call(CreditService.spendCredits, spendRequest("ana", 101, key: "s1"), token: t.app)
        #expect(reply.code == .failedPrecondition)
        #expect(reply.reason == "INSUFFICIENT_CREDITS")
        #expect(reply.errorMetadata == ["available_minor": "100", "requested_minor": "101"])
        #expect(reply.messages.isEmpty)
        #expect(try h.balance(t.id, "ana").availableMinor == 100)
        #expect(try h.lastSeq(t.id) == 1)
        #expect(try h.reader.idempotency(tenant: t.id, key: "s1") == nil, "a refused spend keeps no idempotency record")
    }

    @Test func invalidFieldsAreListedInOneBadRequest() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        _ = try order(h, t, "ana", 100, key: "o1")
        var request = spendRequest("", 0, key: "")
        request.centerID = "bad id"
        let reply = try h.call(CreditService.spendCredits, request, token: t.app)
        #expect(reply.code == .invalidArgument)
        #expect(reply.reason == "INVALID_ARGUMENT")
        #expect(Set(reply.violatedFields) == ["client_id", "amount_minor", "center_id", "idempotency_key"], "\(reply.violatedFields)")
        #expect(try h.lastSeq(t.id) == 1)
    }

    /// Encode once: the reply is the bytes the writer stored; a replay sends
    /// those stored bytes as they are, even after the ledger moved on.
    @Test func replayIsByteIdenticalToTheFirstReplyAndItsStoredBytes() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        _ = try order(h, t, "ana", 1_000, key: "o1")
        let first = try h.call(CreditService.spendCredits, spendRequest("ana", 250, key: "s1"), token: t.app)
        let firstSpend = try first.message()
        let stored = try #require(try h.reader.idempotency(tenant: t.id, key: "s1"))
        #expect(first.messages == [stored.reply], "what was sent is what was stored")
        #expect(stored.resultId == firstSpend.spend?.id && stored.operation == "spend")
        // The ledger moves on (time and balance) before the retry.
        h.ledgerClock.advance(seconds: 600)
        _ = try order(h, t, "ana", 5, key: "o2")
        let again = try h.call(CreditService.spendCredits, spendRequest("ana", 250, key: "s1"), token: t.app)
        #expect(again.code == .ok)
        #expect(again.messages == first.messages, "a replay sends the stored bytes")
        #expect(try h.balance(t.id, "ana").availableMinor == 755, "spent once")
        #expect(try h.lastSeq(t.id) == 3)
        // The same key with other fields: refused, naming them, nothing applied.
        let reused = try h.call(CreditService.spendCredits, spendRequest("ana", 200, key: "s1"), token: t.app)
        #expect(reused.code == .alreadyExists)
        #expect(reused.reason == "IDEMPOTENCY_KEY_REUSED")
        #expect(reused.errorMetadata["differing_fields"] == "amount_minor")
        #expect(reused.errorMetadata["existing_result_id"] == firstSpend.spend?.id)
        #expect(reused.messages.isEmpty)
        #expect(try h.balance(t.id, "ana").availableMinor == 755)
        #expect(try h.lastSeq(t.id) == 3)
    }

    @Test func holdThenCaptureAndHoldThenRelease() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        _ = try order(h, t, "ana", 1_000, key: "o1")
        func hold(_ amount: Int64, key: String) throws -> Credits_V1_HoldResponse {
            var request = Credits_V1_CreateHoldRequest()
            request.clientID = "ana"
            request.amountMinor = amount
            request.centerID = "c1"
            request.expireTime = h.timestamp(in: 3_600)
            request.idempotencyKey = key
            return try h.call(CreditService.createHold, request, token: t.app).message()
        }
        let first = try hold(400, key: "h1")
        #expect(first.hold?.state == .held && first.balance?.availableMinor == 600 && first.balance?.heldMinor == 400)
        #expect(try h.balance(t.id, "ana") == BalanceSummary(clientId: "ana", availableMinor: 600, heldMinor: 400, seq: 2))

        var capture = Credits_V1_CaptureHoldRequest()
        capture.holdID = first.hold?.id ?? ""
        capture.amountMinor = 150
        capture.reason = .checkIn
        capture.idempotencyKey = "c1"
        let captured = try h.call(CreditService.captureHold, capture, token: t.app).message()
        #expect(captured.hold?.state == .captured && captured.hold?.capturedMinor == 150 && captured.spend?.amountMinor == 150)
        #expect(try h.balance(t.id, "ana").availableMinor == 850, "the rest of the hold is available again")
        #expect(try h.balance(t.id, "ana").heldMinor == 0)
        #expect(try h.reader.hold(tenant: t.id, id: capture.holdID)?.capturedMinor == 150)

        // A second capture of the same hold: refused, nothing applied.
        let seq = try h.lastSeq(t.id)
        capture.idempotencyKey = "c2"
        let twice = try h.call(CreditService.captureHold, capture, token: t.app)
        #expect(twice.code == .failedPrecondition && twice.reason == "HOLD_ALREADY_CAPTURED")
        #expect(try h.lastSeq(t.id) == seq)

        let second = try hold(300, key: "h2")
        var release = Credits_V1_ReleaseHoldRequest()
        release.holdID = second.hold?.id ?? ""
        release.idempotencyKey = "r1"
        let released = try h.call(CreditService.releaseHold, release, token: t.app).message()
        #expect(released.hold?.state == .released && released.balance?.availableMinor == 850 && released.balance?.heldMinor == 0)
        #expect(try h.balance(t.id, "ana") == BalanceSummary(clientId: "ana", availableMinor: 850, heldMinor: 0, seq: try h.lastSeq(t.id)))
    }

    @Test func getBalanceReadsTheLedger() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        _ = try order(h, t, "ana", 500, key: "o1")
        _ = try h.call(CreditService.spendCredits, spendRequest("ana", 120, key: "s1"), token: t.app).message()
        var request = Credits_V1_GetBalanceRequest()
        request.clientID = "ana"
        request.includeDetails = true
        let balance = try h.call(CreditService.getBalance, request, token: t.app).message()
        let summary = try #require(balance.summary)
        #expect((summary.clientID, summary.totalMinor, summary.availableMinor, summary.heldMinor, summary.seq, summary.currency)
                == ("ana", 380, 380, 0, 2, "EUR"))
        #expect(balance.lots.count == 1 && balance.lots.first?.remainingMinor == 380)
        #expect(try h.balance(t.id, "ana").availableMinor == summary.availableMinor)
        // A client never seen: zero, not an error.
        request.clientID = "nobody"
        #expect(try h.call(CreditService.getBalance, request, token: t.app).message().summary?.totalMinor == 0)
    }

    @Test func listLedgerEntriesPagesInSeqOrder() throws {
        let h = try APIHarness()
        defer { h.finish() }
        let t = try TestTenant(h)
        for i in 1...5 { _ = try order(h, t, "ana", Int64(i * 10), key: "o\(i)") }
        _ = try order(h, t, "bob", 99, key: "ob")
        var request = Credits_V1_ListLedgerEntriesRequest()
        request.clientID = "ana"
        request.oldestFirst = true
        request.pageSize = 2
        var seen: [Credits_V1_LedgerEntry] = []
        var pages = 0
        repeat {
            let page = try h.call(CreditService.listLedgerEntries, request, token: t.staff).message()
            #expect(page.entries.count <= 2)
            seen += page.entries
            request.pageToken = page.nextPageToken
            pages += 1
        } while !request.pageToken.isEmpty && pages < 10
        #expect(pages == 3)
        #expect(seen.map(\.seq) == [1, 2, 3, 4, 5])
        #expect(seen.map(\.amountMinor) == [10, 20, 30, 40, 50])
        #expect(seen.allSatisfy { $0.clientID == "ana" && $0.type == .order })
        // A token of another list is refused.
        var other = Credits_V1_ListLedgerEntriesRequest()
        other.clientID = "bob"
        other.pageSize = 2
        request.pageToken = try h.call(CreditService.listLedgerEntries, { var r = request; r.pageToken = ""; return r }(), token: t.staff)
            .message().nextPageToken
        other.pageToken = request.pageToken
        let refused = try h.call(CreditService.listLedgerEntries, other, token: t.staff)
        #expect(refused.code == .invalidArgument && refused.violatedFields == ["page_token"])
    }
}
