import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing
@testable import GRPCTransport

/// What the test handlers saw, for assertions.
final class Observed: Sendable {
    let cancels = NIOLockedValueBox(0)
    let messages = NIOLockedValueBox<[[UInt8]]>([])
    let pausing = NIOLockedValueBox<[PausingHandler]>([])
}

/// Pauses its requests after `pauseAfter` messages; the test resumes it.
/// Answers with the count of messages it got once the request ended.
final class PausingHandler: ServerCallHandler, @unchecked Sendable {
    let call: ServerCall
    let pauseAfter: Int
    var received: [[UInt8]] = []
    var ended = false
    init(call: ServerCall, pauseAfter: Int) {
        self.call = call
        self.pauseAfter = pauseAfter
    }
    func handleMessage(_ message: ByteBuffer) {
        precondition(!call.isPaused, "a message reached a paused call")
        received.append(Array(message.readableBytesView))
        if received.count == pauseAfter { call.pauseRequests() }
    }
    func handleEnd() {
        precondition(!call.isPaused, "the end reached a paused call")
        ended = true
        call.sendMessage(buffer([UInt8(truncatingIfNeeded: received.count)]))
        call.finish(.ok)
    }
    func handleCancel() {}
}

private func buffer(_ bytes: [UInt8]) -> ByteBuffer {
    var b = ByteBufferAllocator().buffer(capacity: bytes.count)
    b.writeBytes(bytes)
    return b
}

final class CountingHandler: ServerCallHandler {
    let call: ServerCall
    var count = 0
    init(call: ServerCall) { self.call = call }
    func handleMessage(_ message: ByteBuffer) { count += 1 }
    func handleEnd() {
        call.sendMessage(buffer([UInt8(count)]))
        call.finish(.ok)
    }
    func handleCancel() {}
}

final class BidiEchoHandler: ServerCallHandler {
    let call: ServerCall
    init(call: ServerCall) { self.call = call }
    func handleMessage(_ message: ByteBuffer) { call.sendMessage(message) }
    func handleEnd() { call.finish(.ok) }
    func handleCancel() {}
}

final class NeverHandler: ServerCallHandler {
    let observed: Observed
    init(observed: Observed) { self.observed = observed }
    func handleMessage(_ message: ByteBuffer) {}
    func handleEnd() {}
    func handleCancel() { observed.cancels.withLockedValue { $0 += 1 } }
}

/// Sends `left` 8 KiB messages, waiting for onWritable whenever the call is not writable.
final class Streamer: @unchecked Sendable {
    let call: ServerCall
    var left: Int
    init(call: ServerCall, left: Int) {
        self.call = call
        self.left = left
    }
    func next() {
        while left > 0 {
            guard !call.isFinished else { return }
            guard call.isWritable else {
                call.onWritable = { self.next() }
                return
            }
            call.sendMessage(buffer(Array(repeating: 0x62, count: 8 * 1024)))
            left -= 1
        }
        call.finish(.ok)
    }
}

/// A server connection on an EmbeddedChannel, driven by an nghttp2 client.
final class Harness {
    let channel: EmbeddedChannel
    let client: H2TestClient
    let observed = Observed()
    var loop: EmbeddedEventLoop { channel.embeddedEventLoop }
    let budget: MemoryBudget
    let requestBudget: MemoryBudget

    init(maxMessage: Int = 1024, limits: HTTP2Limits = HTTP2Limits(), clientWindow: UInt32 = 1 << 20, manualWindow: Bool = false,
         responseBufferBytes: Int = 1 << 20, budgetBytes: Int = 256 << 20, stuckTimeout: TimeAmount = .seconds(30),
         requestBudgetBytes: Int = 256 << 20, observer: GRPCCallObserver? = nil) throws {
        client = H2TestClient(initialWindowBytes: clientWindow, manualWindow: manualWindow)
        budget = MemoryBudget(limitBytes: budgetBytes)
        requestBudget = MemoryBudget(limitBytes: requestBudgetBytes)
        let requestBudget = self.requestBudget
        let observed = self.observed
        let router = GRPCRouter([
            .unary("/test.Svc/Echo") { call, request in
                var headers = Metadata()
                if let v = call.metadata["x-echo"] { headers.add("x-echo", v) }
                if let b = call.metadata.binary("x-echo-bin") { headers.add("x-echo-bin", binary: b) }
                call.sendHeaders(headers)
                call.sendMessage(request)
                var trailers = Metadata()
                trailers.add("x-trailer", "done")
                call.finish(.ok, trailers: trailers)
            },
            // Notes log attributes (one set twice), then fails.
            .unary("/test.Svc/Annotated") { call, _ in
                call.annotate("tenant", "t1")
                call.annotate("reason", "FIRST")
                call.annotate("reason", "NO_LUCK")
                call.finish(GRPCStatus(.failedPrecondition, "no"))
            },
            .unary("/test.Svc/Fail") { call, _ in
                call.finish(GRPCStatus(.failedPrecondition, "no 100% ✓", details: [1, 2, 3]))
            },
            RPCRoute(path: "/test.Svc/Never", kind: .unary) { _ in NeverHandler(observed: observed) },
            .serverStreaming("/test.Svc/Stream") { call, request in
                let n = request.readableBytesView.first ?? 0
                for i in 0..<n { call.sendMessage(buffer([i])) }
                call.finish(.ok)
            },
            RPCRoute(path: "/test.Svc/Count", kind: .clientStreaming) { CountingHandler(call: $0) },
            // Answers later (on the next loop turn) with (first byte) KiB.
            .unary("/test.Svc/BigLater") { call, request in
                let kib = Int(request.readableBytesView.first ?? 1)
                call.eventLoop.execute {
                    call.sendMessage(buffer(Array(repeating: 0x61, count: kib * 1024)))
                    call.finish(.ok)
                }
            },
            // Streams (first byte) messages of 8 KiB, honouring isWritable.
            .serverStreaming("/test.Svc/Flow") { call, request in
                Streamer(call: call, left: Int(request.readableBytesView.first ?? 0)).next()
            },
            RPCRoute(path: "/test.Svc/Bidi", kind: .bidirectionalStreaming) { BidiEchoHandler(call: $0) },
            // Pauses after (x-pause-after) messages.
            RPCRoute(path: "/test.Svc/Pausing", kind: .clientStreaming) { call in
                let handler = PausingHandler(call: call, pauseAfter: Int(call.metadata["x-pause-after"] ?? "") ?? 3)
                observed.pausing.withLockedValue { $0.append(handler) }
                return handler
            },
        ])
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let configuration = ConnectionConfiguration(
            router: router, limits: limits, maxReceiveMessageBytes: maxMessage,
            maxBufferedBytesPerConnection: 1 << 20, requestBudget: requestBudget, idleTimeout: .seconds(60),
            maxResponseBufferBytesPerConnection: responseBufferBytes, responseBudget: budget,
            stuckTimeout: stuckTimeout, logger: logger, observer: observer)
        channel = EmbeddedChannel(handler: GRPCConnectionHandler(configuration: configuration))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        pump()
    }

    /// Moves bytes both ways until neither side has anything to say.
    func pump() {
        for _ in 0..<100 {
            var progressed = false
            let out = client.outbound()
            if !out.isEmpty, channel.isActive {
                _ = try? channel.writeInbound(buffer(out))
                progressed = true
            }
            loop.run()
            while let bytes = try? channel.readOutbound(as: ByteBuffer.self) {
                client.receive(Array(bytes.readableBytesView))
                progressed = true
            }
            if !progressed { return }
        }
    }

    func call(_ path: String, _ messages: [[UInt8]], headers: [(String, String)] = []) -> H2TestClient.Response {
        let id = client.request(path: path, headers: headers, body: messages.flatMap { grpcFrame($0) })
        pump()
        return client.responses[id] ?? .init()
    }
}

@Suite struct ConnectionTests {
    @Test func unaryEchoWithMetadataBothWays() throws {
        let h = try Harness()
        let r = h.call("/test.Svc/Echo", [[1, 2, 3]], headers: [("x-echo", "hello"), ("x-echo-bin", "AAEC")])
        #expect(r.header(":status") == "200")
        #expect(r.header("content-type") == "application/grpc")
        #expect(r.header("x-echo") == "hello")
        #expect(r.header("x-echo-bin") == "AAEC")
        #expect(r.messages == [[1, 2, 3]])
        #expect(r.grpcStatus == 0)
        #expect(r.trailer("x-trailer") == "done")
        #expect(r.closed && r.resetCode == nil)
    }

    @Test func messageSplitAcrossManyDataFrames() throws {
        let h = try Harness()
        let wire = grpcFrame(Array(repeating: 7, count: 300))
        let id = h.client.request(path: "/test.Svc/Echo", body: [], endStream: false)
        for byte in wire {
            h.client.send(streamID: id, [byte])
            h.pump()
        }
        h.client.send(streamID: id, [], end: true)
        h.pump()
        let r = try #require(h.client.responses[id])
        #expect(r.grpcStatus == 0)
        #expect(r.messages == [Array(repeating: 7, count: 300)])
    }

    @Test func errorStatusIsTrailersOnlyWithDetails() throws {
        let h = try Harness()
        let r = h.call("/test.Svc/Fail", [[]])
        #expect(r.header("grpc-status") == "9")
        #expect(r.header("grpc-message") == "no 100%25 %E2%9C%93")
        #expect(r.header("grpc-status-details-bin") == "AQID")
        #expect(r.data.isEmpty && r.trailers.isEmpty)
    }

    @Test func unknownMethodIsUnimplemented() throws {
        let h = try Harness()
        #expect(h.call("/test.Svc/Nope", [[]]).grpcStatus == 12)
        #expect(h.call("/other.Svc/Echo", [[]]).grpcStatus == 12)
        #expect(h.call("/", [[]]).grpcStatus == 12)
    }

    @Test func nonPostIs405AndWrongContentTypeIs415() throws {
        let h = try Harness()
        let get = h.client.request(path: "/test.Svc/Echo", method: "GET")
        let json = h.client.request(path: "/test.Svc/Echo", contentType: "application/json", body: [1])
        let none = h.client.request(path: "/test.Svc/Echo", contentType: nil, body: [1])
        h.pump()
        #expect(h.client.responses[get]?.header(":status") == "405")
        #expect(h.client.responses[get]?.header("allow") == "POST")
        #expect(h.client.responses[json]?.header(":status") == "415")
        #expect(h.client.responses[none]?.header(":status") == "415")
        let body = String(decoding: h.client.responses[json]?.data ?? [], as: UTF8.self)
        #expect(body.contains("application/grpc"))
        // Still serving.
        #expect(h.call("/test.Svc/Echo", [[9]]).grpcStatus == 0)
    }

    @Test func grpcContentTypeVariantsAreAccepted() throws {
        let h = try Harness()
        for type in ["application/grpc", "application/grpc+proto", "application/grpc; charset=utf-8"] {
            let id = h.client.request(path: "/test.Svc/Echo", contentType: type, body: grpcFrame([1]))
            h.pump()
            #expect(h.client.responses[id]?.grpcStatus == 0, "\(type)")
        }
        for type in ["application/grpcx", "application/grpc+json"] {
            let id = h.client.request(path: "/test.Svc/Echo", contentType: type, body: grpcFrame([1]))
            h.pump()
            #expect(h.client.responses[id]?.header(":status") == "415", "\(type)")
        }
    }

    /// The connection keeps the last path and route: calls alternating between
    /// methods (Echo and Fail have paths of the same length) and unknown
    /// paths must each reach their own.
    @Test func alternatingMethodsOnOneConnectionRouteCorrectly() throws {
        let h = try Harness()
        for path in ["/test.Svc/Echo", "/test.Svc/Fail", "/test.Svc/Echo", "/test.Svc/Echx", "/test.Svc/Fail", "/test.Svc/Echo"] {
            let r = h.call(path, [[4]])
            switch path {
            case "/test.Svc/Echo": #expect(r.grpcStatus == 0 && r.messages == [[4]], "\(path)")
            case "/test.Svc/Fail": #expect(r.grpcStatus == 9, "\(path)")
            default: #expect(r.grpcStatus == 12, "\(path)")
            }
        }
    }

    @Test func contentTypeCheckIsCaseInsensitiveAndExact() {
        for ok in ["application/grpc", "Application/GRPC", "application/grpc+proto", "APPLICATION/GRPC;charset=utf-8",
                   "application/grpc+PROTO; charset=utf-8", "application/grpc ;a=b"] {
            #expect(GRPCConnectionHandler.isGRPCContentType(ok.utf8), "\(ok)")
        }
        for bad in ["", "application/grp", "application/grpcx", "application/grpc-web", "application/json", "xapplication/grpc",
                    "application/grpc+json", "application/grpc+JSON;charset=utf-8", "application/grpc+thrift",
                    "application/grpc+", "application/grpc+protox", "application/grpc+proto+json", "application/grpc x",
                    "application/gRPC\u{0}", "application\u{0F}grpc"] {
            #expect(!GRPCConnectionHandler.isGRPCContentType(bad.utf8), "\(bad)")
        }
    }

    @Test func oversizedMessageIsResourceExhausted() throws {
        let h = try Harness(maxMessage: 100)
        let r = h.call("/test.Svc/Echo", [Array(repeating: 1, count: 101)])
        #expect(r.grpcStatus == 8)
        #expect(h.call("/test.Svc/Echo", [Array(repeating: 1, count: 100)]).grpcStatus == 0)
    }

    @Test func compressedFlagWithoutEncodingIsInternal() throws {
        let h = try Harness()
        let id = h.client.request(path: "/test.Svc/Echo", body: grpcFrame([1, 2], compressed: true))
        h.pump()
        #expect(h.client.responses[id]?.grpcStatus == 13)
    }

    @Test func unsupportedEncodingIsUnimplementedAndNamesSupported() throws {
        let h = try Harness()
        let r = h.call("/test.Svc/Echo", [[1]], headers: [("grpc-encoding", "snappy")])
        #expect(r.grpcStatus == 12)
        #expect(r.header("grpc-accept-encoding") == "identity,gzip")
    }

    @Test func gzipRequestAndResponse() throws {
        let h = try Harness(maxMessage: 4096)
        let plain = Array(repeating: UInt8(ascii: "a"), count: 1000)
        let gz = try #require(MessageCompression.gzip(buffer(plain), allocator: ByteBufferAllocator()))
        let id = h.client.request(path: "/test.Svc/Echo",
                                  headers: [("grpc-encoding", "gzip"), ("grpc-accept-encoding", "identity,gzip")],
                                  body: grpcFrame(Array(gz.readableBytesView), compressed: true))
        h.pump()
        let r = try #require(h.client.responses[id])
        #expect(r.grpcStatus == 0)
        #expect(r.header("grpc-encoding") == "gzip")
        #expect(r.data[0] == 1, "response message is compressed")
        let back = try MessageCompression.gunzip(buffer(r.messages[0]), limit: 4096, allocator: ByteBufferAllocator())
        #expect(Array(back.readableBytesView) == plain)
    }

    @Test func gzipBombIsRefused() throws {
        let h = try Harness(maxMessage: 1000)
        let gz = try #require(MessageCompression.gzip(buffer(Array(repeating: 0, count: 100_000)), allocator: ByteBufferAllocator()))
        #expect(gz.readableBytes < 1000)
        let id = h.client.request(path: "/test.Svc/Echo", headers: [("grpc-encoding", "gzip")],
                                  body: grpcFrame(Array(gz.readableBytesView), compressed: true))
        h.pump()
        #expect(h.client.responses[id]?.grpcStatus == 8)
    }

    @Test func deadlineExceededCancelsTheHandler() throws {
        let h = try Harness()
        let id = h.client.request(path: "/test.Svc/Never", headers: [("grpc-timeout", "50m")], body: grpcFrame([1]))
        h.pump()
        #expect(h.client.responses[id]?.grpcStatus == nil)
        h.loop.advanceTime(by: .milliseconds(60))
        h.pump()
        #expect(h.client.responses[id]?.grpcStatus == 4)
        #expect(h.observed.cancels.withLockedValue { $0 } == 1)
    }

    @Test func malformedTimeoutIsRefused() throws {
        let h = try Harness()
        #expect(h.call("/test.Svc/Echo", [[1]], headers: [("grpc-timeout", "soon")]).grpcStatus == 13)
    }

    @Test func clientResetCancelsTheHandler() throws {
        let h = try Harness()
        let id = h.client.request(path: "/test.Svc/Never", body: grpcFrame([1]))
        h.pump()
        h.client.reset(streamID: id)
        h.pump()
        #expect(h.observed.cancels.withLockedValue { $0 } == 1)
        #expect(h.call("/test.Svc/Echo", [[1]]).grpcStatus == 0)
    }

    /// The gRPC status-code document: a request cardinality violation is UNIMPLEMENTED.
    @Test func singleRequestMethodsWithTwoMessagesOrNoneAreUnimplemented() throws {
        let h = try Harness()
        #expect(h.call("/test.Svc/Echo", [[1], [2]]).grpcStatus == 12)
        #expect(h.call("/test.Svc/Echo", []).grpcStatus == 12)
        #expect(h.call("/test.Svc/Stream", [[1], [2]]).grpcStatus == 12)
        #expect(h.call("/test.Svc/Stream", []).grpcStatus == 12)
        #expect(h.call("/test.Svc/Echo", [[3]]).grpcStatus == 0)
    }

    @Test func streamEndingInsideAMessageIsInternal() throws {
        let h = try Harness()
        let id = h.client.request(path: "/test.Svc/Echo", body: Array(grpcFrame([1, 2, 3]).prefix(6)))
        h.pump()
        #expect(h.client.responses[id]?.grpcStatus == 13)
    }

    @Test func serverStreaming() throws {
        let h = try Harness()
        let r = h.call("/test.Svc/Stream", [[5]])
        #expect(r.messages == [[0], [1], [2], [3], [4]])
        #expect(r.grpcStatus == 0)
    }

    @Test func clientStreaming() throws {
        let h = try Harness()
        let r = h.call("/test.Svc/Count", [[1], [2], [3], [4]])
        #expect(r.messages == [[4]])
    }

    @Test func bidiAnswersEachMessageBeforeTheEnd() throws {
        let h = try Harness()
        let id = h.client.request(path: "/test.Svc/Bidi", body: grpcFrame([1]), endStream: false)
        h.pump()
        #expect(h.client.responses[id]?.messages == [[1]])
        h.client.send(streamID: id, grpcFrame([2]))
        h.pump()
        #expect(h.client.responses[id]?.messages == [[1], [2]])
        #expect(h.client.responses[id]?.grpcStatus == nil)
        h.client.send(streamID: id, [], end: true)
        h.pump()
        #expect(h.client.responses[id]?.grpcStatus == 0)
    }

    @Test func hugeHeaderListIsRefusedAndConnectionSurvives() throws {
        var limits = HTTP2Limits()
        limits.maxHeaderListBytes = 4096
        let h = try Harness(limits: limits)
        let big = (0..<40).map { ("x-h\($0)", String(repeating: "v", count: 200)) }
        let r = h.call("/test.Svc/Echo", [[1]], headers: big)
        #expect(r.grpcStatus == 8)
        #expect(h.call("/test.Svc/Echo", [[1]]).grpcStatus == 0)
    }

    @Test func pingIsAnswered() throws {
        let h = try Harness()
        h.client.ping()
        h.pump()
        #expect(h.client.pingAcks == 1)
    }

    @Test func garbageClosesTheConnectionWithoutCrashing() throws {
        let h = try Harness()
        _ = try? h.channel.writeInbound(buffer(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)))
        h.loop.run()
        #expect(!h.channel.isActive)
    }

    @Test func gracefulShutdownLetsOpenCallsFinish() throws {
        let h = try Harness()
        let id = h.client.request(path: "/test.Svc/Bidi", body: grpcFrame([1]), endStream: false)
        h.pump()
        h.channel.pipeline.fireUserInboundEventTriggered(GracefulShutdownEvent())
        h.pump()
        #expect(h.client.goAwayReceived)
        h.loop.advanceTime(by: .milliseconds(250))
        h.pump()
        #expect(h.channel.isActive, "an open call keeps the connection")
        h.client.send(streamID: id, grpcFrame([2]), end: true)
        h.pump()
        #expect(h.client.responses[id]?.messages == [[1], [2]])
        #expect(h.client.responses[id]?.grpcStatus == 0)
        h.loop.run()
        #expect(!h.channel.isActive)
    }
}

/// The idle timeout (60 s in the harness): a connection without calls gets a
/// GOAWAY and is closed once it has been idle for the whole timeout; calls
/// in between postpone that.
@Suite struct IdleTimeoutTests {
    @Test func idleConnectionIsClosedAfterTheTimeout() throws {
        let h = try Harness()
        h.loop.advanceTime(by: .seconds(59))
        h.pump()
        #expect(h.channel.isActive)
        h.loop.advanceTime(by: .seconds(2))
        h.pump()
        #expect(!h.channel.isActive)
        #expect(h.client.goAwayReceived)
    }

    @Test func callsPostponeTheClose() throws {
        let h = try Harness()
        h.loop.advanceTime(by: .seconds(50))
        #expect(h.call("/test.Svc/Echo", [[1]]).grpcStatus == 0)  // idle again from t = 50 s
        h.loop.advanceTime(by: .seconds(20))                      // t = 70 s: idle for 20 s only
        h.pump()
        #expect(h.channel.isActive)
        h.loop.advanceTime(by: .seconds(39))                      // t = 109 s: idle for 59 s
        h.pump()
        #expect(h.channel.isActive)
        h.loop.advanceTime(by: .seconds(2))                       // t = 111 s: idle for 61 s
        h.pump()
        #expect(!h.channel.isActive)
    }

    @Test func aCallInFlightKeepsTheConnectionOpen() throws {
        let h = try Harness()
        let id = h.client.request(path: "/test.Svc/Never", body: grpcFrame([1]))
        h.pump()
        h.loop.advanceTime(by: .seconds(200))
        h.pump()
        #expect(h.channel.isActive)
        #expect(h.client.responses[id]?.closed != true)
    }
}

/// Response bytes a client does not read: bounded per connection and per server.
@Suite struct ResponseBufferTests {
    @Test func aFullBufferRefusesNewStreamsAndDropsMessagesThatCannotDrain() throws {
        let h = try Harness(clientWindow: 0, responseBufferBytes: 64 * 1024)
        // Three calls admitted at once; their answers come later.
        let ids = (0..<3).map { _ in h.client.request(path: "/test.Svc/BigLater", body: grpcFrame([40])) }
        h.pump()
        // 2 × 40 KiB queued (the second took it past 64 KiB); the third could not drain.
        #expect(h.budget.usedBytes == 2 * (40 * 1024 + 5))
        #expect(h.client.responses[ids[2]]?.grpcStatus == 8)
        #expect(h.client.responses[ids[0]]?.grpcStatus == nil && h.client.responses[ids[1]]?.grpcStatus == nil)
        // Full: a new stream is refused, not processed.
        let refused = h.client.request(path: "/test.Svc/Echo", body: grpcFrame([1]))
        h.pump()
        #expect(h.client.responses[refused]?.resetCode == 7)
        // The client opens its window: everything drains and calls start again.
        h.client.setInitialWindow(1 << 20)
        h.pump()
        #expect(h.client.responses[ids[0]]?.grpcStatus == 0 && h.client.responses[ids[1]]?.grpcStatus == 0)
        #expect(h.client.responses[ids[0]]?.messages.first?.count == 40 * 1024)
        #expect(h.budget.usedBytes == 0)
        #expect(h.call("/test.Svc/Echo", [[5]]).grpcStatus == 0)
    }

    @Test func streamingCallsWaitForTheConnectionBufferAndResume() throws {
        let h = try Harness(clientWindow: 0, responseBufferBytes: 64 * 1024)
        let a = h.client.request(path: "/test.Svc/Flow", body: grpcFrame([40]))
        let b = h.client.request(path: "/test.Svc/Flow", body: grpcFrame([40]))
        h.pump()
        // Each stops when the connection is full: a few messages each, not 320 KiB each.
        #expect(h.budget.usedBytes >= 64 * 1024 && h.budget.usedBytes < 64 * 1024 + 2 * (8 * 1024 + 5))
        h.client.setInitialWindow(1 << 20)
        h.pump()
        for id in [a, b] {
            #expect(h.client.responses[id]?.grpcStatus == 0)
            #expect(h.client.responses[id]?.messages.count == 40)
        }
        #expect(h.budget.usedBytes == 0)
    }

    @Test func theServerBudgetStopsConnectionsHoldingBytes() throws {
        // The budget is below one connection's own cap: it is what stops the calls.
        let h = try Harness(clientWindow: 0, responseBufferBytes: 1 << 20, budgetBytes: 64 * 1024)
        let ids = (0..<3).map { _ in h.client.request(path: "/test.Svc/BigLater", body: grpcFrame([40])) }
        h.pump()
        #expect(h.client.responses[ids[2]]?.grpcStatus == 8)
        let refused = h.client.request(path: "/test.Svc/Echo", body: grpcFrame([1]))
        h.pump()
        #expect(h.client.responses[refused]?.resetCode == 7)
    }

    @Test func aStuckConnectionIsClosedAndItsBytesAreGivenBack() throws {
        let h = try Harness(clientWindow: 0, responseBufferBytes: 64 * 1024, stuckTimeout: .seconds(5))
        for _ in 0..<2 { h.client.request(path: "/test.Svc/BigLater", body: grpcFrame([40])) }
        h.pump()
        #expect(h.budget.usedBytes > 64 * 1024)
        h.loop.advanceTime(by: .seconds(4))
        h.pump()
        #expect(h.channel.isActive)
        h.loop.advanceTime(by: .seconds(2))
        h.pump()
        #expect(h.client.goAwayReceived)
        #expect(!h.channel.isActive)
        #expect(h.budget.usedBytes == 0)
    }

    @Test func aConnectionThatDrainsSlowlyIsNotStuck() throws {
        let h = try Harness(clientWindow: 0, manualWindow: true, responseBufferBytes: 64 * 1024, stuckTimeout: .seconds(5))
        let a = h.client.request(path: "/test.Svc/Flow", body: grpcFrame([40]))
        h.pump()
        for round in 1...4 {
            h.loop.advanceTime(by: .seconds(4))
            h.client.grantWindow(streamID: a, bytes: 32 * 1024)  // 32 KiB every 4 s: slow, but progress
            h.pump()
            #expect(h.channel.isActive)
            #expect(h.client.responses[a]?.data.count == round * 32 * 1024)
        }
        #expect(h.client.responses[a]?.grpcStatus == nil)
        // No progress for a whole timeout: closed.
        h.loop.advanceTime(by: .seconds(6))
        h.pump()
        #expect(!h.channel.isActive)
        #expect(h.budget.usedBytes == 0)
    }

    @Test func partlyReceivedRequestsAreBoundedForTheServer() throws {
        let h = try Harness(maxMessage: 1 << 20, requestBudgetBytes: 64 * 1024)
        // Two client-streaming calls, each 40 KiB into a message of 100 KiB.
        let partial = Array(grpcFrame(Array(repeating: 1, count: 100 * 1024)).prefix(40 * 1024))
        let a = h.client.request(path: "/test.Svc/Count", body: partial, endStream: false)
        h.pump()
        #expect(h.requestBudget.usedBytes == 40 * 1024 - 5)  // the payload, not its prefix
        let b = h.client.request(path: "/test.Svc/Count", body: partial, endStream: false)
        h.pump()
        #expect(h.client.responses[b]?.grpcStatus == 8)
        #expect(h.client.responses[a]?.grpcStatus == nil)
        #expect(h.requestBudget.usedBytes == 40 * 1024 - 5)  // the payload, not its prefix
        h.client.reset(streamID: a)
        h.pump()
        #expect(h.requestBudget.usedBytes == 0)
        _ = try h.channel.finish()
    }
}
