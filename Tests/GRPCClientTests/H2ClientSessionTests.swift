import Testing
@testable import GRPCClient

/// HTTP/2 frames a server would send, built by hand (HPACK without Huffman or indexing).
private enum ServerFrames {
    static func frame(type: UInt8, flags: UInt8, stream: Int32, _ payload: [UInt8]) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags,
                UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    static let settings = frame(type: 4, flags: 0, stream: 0, [])

    /// A literal header field without indexing, new name.
    static func literal(_ name: String, _ value: String) -> [UInt8] {
        [0x00, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
    }

    /// HEADERS with :status 200 (static index 8) and `fields`.
    static func headers(stream: Int32, _ fields: [(String, String)], endStream: Bool) -> [UInt8] {
        frame(type: 1, flags: endStream ? 0x5 : 0x4, stream: stream, [0x88] + fields.flatMap { literal($0.0, $0.1) })
    }

    static func trailers(stream: Int32, _ fields: [(String, String)]) -> [UInt8] {
        frame(type: 1, flags: 0x5, stream: stream, fields.flatMap { literal($0.0, $0.1) })
    }

    static func data(stream: Int32, _ bytes: [UInt8]) -> [UInt8] { frame(type: 0, flags: 0, stream: stream, bytes) }

    static func goaway(lastStream: Int32) -> [UInt8] {
        frame(type: 7, flags: 0, stream: 0, [UInt8(lastStream >> 24), UInt8(lastStream >> 16 & 0xFF),
                                             UInt8(lastStream >> 8 & 0xFF), UInt8(lastStream & 0xFF), 0, 0, 0, 0])
    }
}

@Suite struct H2ClientSessionTests {
    private func session(keepsHeaders: Bool = true, maxResponseBytes: Int = 4 << 20) throws -> H2ClientSession {
        var options = H2ClientSession.Options()
        options.keepsHeaderFields = keepsHeaders
        options.maxResponseBytes = maxResponseBytes
        return try H2ClientSession(options: options)
    }

    private func submit(_ s: H2ClientSession, _ message: [UInt8] = [1, 2, 3]) throws -> Int32 {
        let id = try s.submit(headers: H2HeaderBlock(grpcPath: "/p.S/M", authority: "x", extra: []),
                              body: GRPCFraming.frame(message), tag: 42)
        _ = try s.outbound()
        try s.receive(ServerFrames.settings)
        return id
    }

    @Test func sendsThePrefaceAndTheFramedRequest() throws {
        let s = try session()
        try s.submit(headers: H2HeaderBlock(grpcPath: "/p.S/M", authority: "x", extra: []), body: GRPCFraming.frame([9, 8, 7]))
        let out = try s.outbound()
        #expect(out.starts(with: Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)))
        let framed: [UInt8] = [0, 0, 0, 0, 3, 9, 8, 7]
        #expect((0...(out.count - framed.count)).contains { Array(out[$0..<($0 + framed.count)]) == framed })
        #expect(s.inFlight == 1)
    }

    @Test func unaryCallCompletesWithItsMessageAndStatus() throws {
        let s = try session()
        let id = try submit(s)
        try s.receive(ServerFrames.headers(stream: id, [("content-type", "application/grpc")], endStream: false)
                      + ServerFrames.data(stream: id, GRPCFraming.frame([5, 6]))
                      + ServerFrames.trailers(stream: id, [("grpc-status", "0")]))
        let done = s.takeCompleted()
        #expect(done.count == 1)
        #expect(done[0].outcome == .grpcStatus(0))
        #expect(done[0].tag == 42)
        #expect(done[0].firstMessage.map(Array.init) == [5, 6])
        #expect(done[0].response.header("content-type") == "application/grpc")
        #expect(done[0].response.trailer("grpc-status") == "0")
        #expect(s.inFlight == 0)
        #expect(s.takeCompleted().isEmpty)
    }

    @Test func trailersOnlyErrorKeepsStatusMessageAndDetails() throws {
        let s = try session()
        let id = try submit(s)
        try s.receive(ServerFrames.headers(stream: id, [("grpc-status", "9"), ("grpc-message", "no%20credits"),
                                                        ("grpc-status-details-bin", "CAk")], endStream: true))
        let done = try #require(s.takeCompleted().first)
        #expect(done.outcome == .grpcStatus(9))
        #expect(done.grpcMessage == "no%20credits")
        #expect(done.response.metadata("grpc-status-details-bin") == "CAk")
    }

    @Test func withoutKeptHeadersOnlyStatusIsRecorded() throws {
        let s = try session(keepsHeaders: false)
        let id = try submit(s)
        try s.receive(ServerFrames.headers(stream: id, [("grpc-status", "5"), ("grpc-message", "gone")], endStream: true))
        let done = try #require(s.takeCompleted().first)
        #expect(done.outcome == .grpcStatus(5))
        #expect(done.grpcMessage == "gone")
        #expect(done.response.headers.isEmpty)
        #expect(done.response.httpStatus == 200)
    }

    @Test func responseOverTheLimitIsResetNotKept() throws {
        let s = try session(maxResponseBytes: 8)
        let id = try submit(s)
        try s.receive(ServerFrames.headers(stream: id, [], endStream: false)
                      + ServerFrames.data(stream: id, [UInt8](repeating: 1, count: 20)))
        // The client resets the stream; the call ends when that RST_STREAM is sent.
        let out = try s.outbound()
        var frameTypes: [UInt8] = []
        var i = 0
        while i + 9 <= out.count {
            frameTypes.append(out[i + 3])
            i += 9 + (Int(out[i]) << 16 | Int(out[i + 1]) << 8 | Int(out[i + 2]))
        }
        #expect(frameTypes.contains(3))  // RST_STREAM
        let done = try #require(s.takeCompleted().first)
        #expect(done.outcome == .reset(2))
        #expect(done.data.isEmpty)
    }

    @Test func streamsBeyondGoawayAreRefused() throws {
        let s = try session()
        let id = try submit(s)
        try s.receive(ServerFrames.goaway(lastStream: 0))
        #expect(s.goawayLastStreamID == 0)
        let done = try #require(s.takeCompleted().first)
        #expect(done.response.streamID == id)
        #expect(done.outcome == .goaway)
    }

    @Test func abandonEndsEveryOpenCall() throws {
        let s = try session()
        _ = try submit(s)
        try s.submit(headers: H2HeaderBlock(grpcPath: "/p.S/M", authority: "x", extra: []), body: [], tag: 7)
        s.abandonAll(.connectionLost)
        let done = s.takeCompleted()
        #expect(done.map(\.tag) == [42, 7])
        #expect(done.allSatisfy { $0.outcome == .connectionLost })
        #expect(s.inFlight == 0)
    }

    @Test func framingSplitsMessagesAndLeavesACutOffOneOut() {
        let data = GRPCFraming.frame([1]) + GRPCFraming.frame([]) + GRPCFraming.frame([2, 3]) + [0, 0, 0, 0, 9, 1]
        #expect(GRPCFraming.messages(in: data) == [[1], [], [2, 3]])
        #expect(GRPCFraming.firstMessage(in: data).map(Array.init) == [1])
        #expect(GRPCFraming.firstMessage(in: GRPCFraming.frame([1], compressed: true)) == nil)
    }

    @Test func statusNames() {
        #expect(CallOutcome.grpcStatus(9).label == "FAILED_PRECONDITION")
        #expect(CallOutcome.grpcStatus(16).label == "UNAUTHENTICATED")
        #expect(CallOutcome.grpcStatus(99).label == "STATUS_99")
    }
}
