import NIOCore
import Testing
@testable import GRPCTransport

/// Request-side flow control: a call that pauses its requests gets nothing
/// more and holds its stream's receive window; the connection window and
/// the other streams keep moving.
@Suite struct FlowControlTests {
    /// 16 KiB stream windows and the default 64 KiB connection window (never
    /// enlarged), so that a window not given back shows within a few messages.
    static func harness() throws -> Harness {
        var limits = HTTP2Limits()
        limits.initialStreamWindowBytes = 16 * 1024
        limits.connectionWindowBytes = 65_535
        return try Harness(maxMessage: 4096, limits: limits)
    }

    /// `count` messages of 1000 bytes, message i filled with byte i.
    static func body(_ count: Int) -> [UInt8] {
        (0..<count).flatMap { grpcFrame(Array(repeating: UInt8(truncatingIfNeeded: $0), count: 1000)) }
    }

    @Test func pausedCallGetsNothingMoreAndItsWindowIsNotGivenBack() throws {
        let h = try Self.harness()
        let id = h.client.request(path: "/test.Svc/Pausing", headers: [("x-pause-after", "3")], body: Self.body(60))
        h.pump()
        let handler = try #require(h.observed.pausing.withLockedValue { $0.first })
        #expect(handler.received.count == 3 && handler.call.isPaused)
        // The client sent one stream window (16 KiB) and got none of it back.
        #expect(h.client.streamSendWindow(id) == 0)
        #expect(h.client.unsentBodyBytes(id) == 60 * 1005 - 16 * 1024)
        h.pump()
        #expect(handler.received.count == 3)
        #expect(h.client.responses[id]?.grpcStatus == nil)

        // Meanwhile other streams of the connection go on, with more than
        // the whole connection window (64 KiB) between them.
        let count = h.call("/test.Svc/Count", (0..<100).map { _ in Array(repeating: 1, count: 1000) })
        #expect(count.grpcStatus == 0 && count.messages == [[100]])
        #expect(h.call("/test.Svc/Echo", [[9, 9]]).messages == [[9, 9]])
        #expect(handler.received.count == 3 && h.client.streamSendWindow(id) == 0)

        // Resumed: the rest arrives, in order, then the end.
        h.loop.execute { handler.call.resumeRequests() }
        h.pump()
        #expect(handler.received.count == 60)
        #expect(handler.received.enumerated().allSatisfy { i, m in m.count == 1000 && m.allSatisfy { $0 == UInt8(i) } })
        #expect(handler.ended)
        let r = try #require(h.client.responses[id])
        #expect(r.grpcStatus == 0 && r.messages == [[60]])
        #expect(h.client.unsentBodyBytes(id) == 0)
    }

    @Test func theEndWaitsForResumeLikeTheMessages() throws {
        let h = try Self.harness()
        let id = h.client.request(path: "/test.Svc/Pausing", headers: [("x-pause-after", "2")], body: Self.body(2))
        h.pump()
        let handler = try #require(h.observed.pausing.withLockedValue { $0.first })
        #expect(handler.received.count == 2 && !handler.ended)
        #expect(h.client.responses[id]?.grpcStatus == nil)
        h.loop.execute { handler.call.resumeRequests() }
        h.pump()
        #expect(handler.ended)
        #expect(h.client.responses[id]?.messages == [[2]])
    }

    @Test func pauseInTheMiddleOfOneDataFrameKeepsTheRestForLater() throws {
        let h = try Self.harness()
        // Ten small messages arrive in one DATA frame; the call pauses after the first.
        let small = (0..<10).flatMap { grpcFrame([UInt8($0)]) }
        let id = h.client.request(path: "/test.Svc/Pausing", headers: [("x-pause-after", "1")], body: small)
        h.pump()
        let handler = try #require(h.observed.pausing.withLockedValue { $0.first })
        #expect(handler.received == [[0]])
        h.loop.execute { handler.call.resumeRequests() }
        h.pump()
        #expect(handler.received == (0..<10).map { [UInt8($0)] })
        #expect(h.client.responses[id]?.messages == [[10]])
    }

    @Test func callsThatDoNotPauseGetTheirWindowBack() throws {
        let h = try Self.harness()
        // Far more than one stream window, on one stream.
        let r = h.call("/test.Svc/Count", (0..<200).map { _ in Array(repeating: 2, count: 1000) })
        #expect(r.grpcStatus == 0 && r.messages == [[200]])
        #expect(h.call("/test.Svc/Echo", [Array(repeating: 3, count: 3000)]).messages == [Array(repeating: 3, count: 3000)])
    }

    @Test func bytesOfRefusedAndUnknownStreamsAreStillGivenBack() throws {
        let h = try Self.harness()
        // Unknown method: answered at once; the client goes on sending its
        // 50 KB body (over three stream windows), which is read and dropped.
        let id = h.client.request(path: "/test.Svc/Nope", body: Self.body(50))
        h.pump()
        #expect(h.client.responses[id]?.grpcStatus == 12)
        #expect(h.client.unsentBodyBytes(id) == 0)
        // A call that failed on its own (message too large) too.
        let big = h.client.request(path: "/test.Svc/Count", body: grpcFrame(Array(repeating: 1, count: 5000)) + Self.body(40))
        h.pump()
        #expect(h.client.responses[big]?.grpcStatus == 8)
        // The connection window was given back for all of it.
        let r = h.call("/test.Svc/Count", (0..<80).map { _ in Array(repeating: 1, count: 1000) })
        #expect(r.grpcStatus == 0 && r.messages == [[80]])
    }
}

/// `onServerShutdown`: a long call hears when the server begins to drain.
@Suite struct ServerShutdownNoticeTests {
    @Test func openCallsHearOfTheDrainAndLaterOnesAtOnce() throws {
        let h = try FlowControlTests.harness()
        let id = h.client.request(path: "/test.Svc/Pausing", body: FlowControlTests.body(1), endStream: false)
        h.pump()
        let first = try #require(h.observed.pausing.withLockedValue { $0.first })
        var heard: [String] = []
        h.loop.execute { first.call.onServerShutdown { heard.append("first") } }
        h.pump()
        #expect(heard.isEmpty)
        h.channel.pipeline.fireUserInboundEventTriggered(GracefulShutdownEvent())
        h.pump()
        #expect(heard == ["first"])
        // Registered after the drain began: called at once.
        h.loop.execute { first.call.onServerShutdown { heard.append("late") } }
        h.pump()
        #expect(heard == ["first", "late"])
        // The call itself goes on until it ends.
        h.client.send(streamID: id, [], end: true)
        h.pump()
        #expect(h.client.responses[id]?.messages == [[1]])
    }

    @Test func aFinishedCallIsNotTold() throws {
        let h = try FlowControlTests.harness()
        let id = h.client.request(path: "/test.Svc/Pausing", body: FlowControlTests.body(1), endStream: false)
        h.pump()
        let call = try #require(h.observed.pausing.withLockedValue { $0.first }).call
        var heard = 0
        h.loop.execute {
            call.onServerShutdown { heard += 1 }
            call.finish(.ok)
        }
        h.pump()
        h.channel.pipeline.fireUserInboundEventTriggered(GracefulShutdownEvent())
        h.pump()
        #expect(heard == 0)
        #expect(h.client.responses[id]?.grpcStatus == 0)
    }
}
