import Dispatch
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing
@testable import GRPCTransport

private func bytes(_ values: [UInt8]) -> ByteBuffer {
    var b = ByteBufferAllocator().buffer(capacity: values.count)
    b.writeBytes(values)
    return b
}

/// Records what a call's handler saw; answers as its `onEnd` says.
final class ScriptedHandler: ServerCallHandler, @unchecked Sendable {
    let call: ServerCall
    var messages: [[UInt8]] = []
    var ends = 0
    var cancels = 0
    var onMessage: ((ScriptedHandler, ByteBuffer) -> Void)?
    var onEnd: ((ScriptedHandler) -> Void)?
    init(call: ServerCall) { self.call = call }
    func handleMessage(_ message: ByteBuffer) {
        messages.append(Array(message.readableBytesView))
        onMessage?(self, message)
    }
    func handleEnd() {
        ends += 1
        onEnd?(self)
    }
    func handleCancel() { cancels += 1 }
}

/// A route whose handler the test gets back, to script and inspect it.
private func scripted(_ path: String = "/test.Svc/Method", kind: RPCKind = .bidirectionalStreaming,
                      _ setUp: @escaping (ScriptedHandler) -> Void = { _ in }) -> (RPCRoute, () -> ScriptedHandler?) {
    final class Box: @unchecked Sendable { var handler: ScriptedHandler? }
    let box = Box()
    let route = RPCRoute(path: path, kind: kind) { call in
        let handler = ScriptedHandler(call: call)
        setUp(handler)
        box.handler = handler
        return handler
    }
    return (route, { box.handler })
}

@Suite struct InMemoryCallTests {
    @Test func unaryRouteAnswersWithHeadersMessageAndOK() throws {
        let loop = EmbeddedEventLoop()
        let route = RPCRoute.unary("/test.Svc/Echo") { call, request in
            call.sendMessage(request)
            call.finish(.ok)
        }
        let memory = InMemoryCall(route: route, requestID: "req-1", eventLoop: loop)
        memory.send(bytes([1, 2, 3]))
        #expect(memory.recorded.headers == nil, "nothing is answered before the request ends")
        memory.endRequest()
        let r = try memory.response.wait()
        #expect(r.header(":status") == "200")
        #expect(r.header("x-request-id") == "req-1")
        #expect(r.messages.map { Array($0.readableBytesView) } == [[1, 2, 3]])
        #expect(r.trailer("grpc-status") == "0")
        #expect(r.status == .ok)
        #expect(!r.isTrailersOnly)
        #expect(!r.isCancelled)
        #expect(memory.call.isFinished)
        loop.run()  // (the stream closes after the trailers)
        #expect(memory.call.handler == nil, "the call ⇄ handler cycle is broken when the call ends")
    }

    @Test func anErrorBeforeAnyMessageIsTrailersOnlyWithMessageAndDetails() throws {
        let loop = EmbeddedEventLoop()
        let trailers: Metadata = {
            var m = Metadata()
            m.add("why", "because")
            return m
        }()
        let route = RPCRoute.unary("/test.Svc/Fail") { call, _ in
            call.finish(GRPCStatus(.failedPrecondition, "50% off: ünïcode", details: [9, 8, 7]), trailers: trailers)
        }
        let memory = InMemoryCall(route: route, eventLoop: loop)
        memory.send(bytes([0]))
        memory.endRequest()
        let r = try memory.response.wait()
        #expect(r.isTrailersOnly)
        #expect(r.status == GRPCStatus(.failedPrecondition, "50% off: ünïcode", details: [9, 8, 7]))
        #expect(r.trailer("why") == "because")
        #expect(r.messages.isEmpty)
    }

    @Test func streamedMessagesKeepTheirOrderAndTheTrailersFollow() throws {
        let loop = EmbeddedEventLoop()
        let (route, _) = scripted { handler in
            handler.onEnd = { h in
                var headers = Metadata()
                headers.add("x-first", "1")
                h.call.sendHeaders(headers)
                for i in 0..<5 { h.call.sendMessage(bytes([UInt8(i)])) }
                h.call.sendMessages([bytes([5]), bytes([6, 6])])
                h.call.finish(GRPCStatus(.ok))
            }
        }
        let memory = InMemoryCall(route: route, eventLoop: loop)
        memory.endRequest()
        let r = try memory.response.wait()
        #expect(r.header("x-first") == "1")
        #expect(r.messages.map { Array($0.readableBytesView) } == [[0], [1], [2], [3], [4], [5], [6, 6]])
        #expect(r.status == .ok)
    }

    @Test func cancelTellsAnUnfinishedHandlerOnce() throws {
        let loop = EmbeddedEventLoop()
        let (route, handler) = scripted()
        let memory = InMemoryCall(route: route, eventLoop: loop)
        var cancelledCallbacks = 0
        memory.call.onCancelled { cancelledCallbacks += 1 }
        memory.send(bytes([1]))
        memory.cancel()
        memory.cancel()
        let r = try memory.response.wait()
        #expect(r.isCancelled)
        #expect(r.status == nil)
        #expect(handler()?.cancels == 1)
        #expect(cancelledCallbacks == 1)
        #expect(memory.call.isCancelled)
        memory.call.finish(.ok)  // ignored: the call is over
        #expect(memory.recorded.trailers == nil)
    }

    @Test func cancelAfterTheStatusDoesNotCancelTheHandler() throws {
        let loop = EmbeddedEventLoop()
        let (route, handler) = scripted { $0.onEnd = { $0.call.finish(.ok) } }
        let memory = InMemoryCall(route: route, eventLoop: loop)
        let h = try #require(handler())
        memory.endRequest()
        memory.cancel()
        #expect(h.cancels == 0)
        #expect(try memory.response.wait().status == .ok)
        #expect(try !memory.response.wait().isCancelled)
    }

    @Test func theDeadlineFailsTheCallAndCancelsTheHandler() throws {
        let loop = EmbeddedEventLoop()
        let (route, handler) = scripted()
        let memory = InMemoryCall(route: route, timeout: .milliseconds(500), eventLoop: loop)
        let h = try #require(handler())
        loop.advanceTime(by: .milliseconds(499))
        #expect(memory.recorded.status == nil)
        loop.advanceTime(by: .milliseconds(1))
        #expect(memory.recorded.status?.code == .deadlineExceeded)
        #expect(h.cancels == 1)
        #expect(try memory.response.wait().isTrailersOnly)
    }

    @Test func aHandlerThatWaitsOutTheDeadlineAnswersItself() throws {
        let loop = EmbeddedEventLoop()
        let (route, handler) = scripted { h in h.call.onDeadline { .wait } }
        let memory = InMemoryCall(route: route, eventLoop: loop)
        let h = try #require(handler())
        memory.expireDeadline()
        #expect(memory.recorded.status == nil)
        #expect(h.cancels == 0)
        h.call.finish(GRPCStatus(.aborted, "applied anyway"))
        #expect(try memory.response.wait().status == GRPCStatus(.aborted, "applied anyway"))
    }

    @Test func aPausedCallGetsItsMessagesAndTheEndAfterResume() throws {
        let loop = EmbeddedEventLoop()
        let (route, handler) = scripted { h in
            h.onMessage = { h, _ in if h.messages.count == 1 { h.call.pauseRequests() } }
        }
        let memory = InMemoryCall(route: route, eventLoop: loop)
        let h = try #require(handler())
        memory.send(bytes([1]))
        memory.send(bytes([2]))
        memory.send(bytes([3]))
        memory.endRequest()
        #expect(h.messages == [[1]])
        #expect(h.ends == 0)
        h.call.resumeRequests()
        #expect(h.messages == [[1], [2], [3]])
        #expect(h.ends == 1)
    }

    @Test func anOversizedRequestFailsUnlessTheHandlerTakesItOver() throws {
        let loop = EmbeddedEventLoop()
        let (route, handler) = scripted()
        let memory = InMemoryCall(route: route, maxReceiveMessageBytes: 4, eventLoop: loop)
        memory.send(bytes([1, 2, 3, 4, 5]))
        #expect(try memory.response.wait().status?.code == .resourceExhausted)
        #expect(handler()?.cancels == 1)
        #expect(handler()?.messages == [])

        let (route2, handler2) = scripted { h in
            h.call.onRequestFailure { status in
                h.call.finish(GRPCStatus(.dataLoss, "took over: \(status.code)"))
                return true
            }
        }
        let memory2 = InMemoryCall(route: route2, maxReceiveMessageBytes: 4, eventLoop: loop)
        memory2.send(bytes([1, 2, 3, 4, 5]))
        #expect(try memory2.response.wait().status == GRPCStatus(.dataLoss, "took over: RESOURCE_EXHAUSTED"))
        #expect(handler2()?.cancels == 0)
    }

    @Test func aCallOnARealEventLoopAnswersFromAnotherThread() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let route = RPCRoute.unary("/test.Svc/Later") { call, request in
            // As a handler that hands its work to another thread (the ledger's writer).
            DispatchQueue.global().async {
                call.sendMessage(request)
                call.finish(.ok)
            }
        }
        let memory = InMemoryCall(route: route, eventLoop: group.next())
        memory.send(bytes([7]))
        memory.endRequest()
        let r = try memory.response.wait()
        #expect(r.messages.map { Array($0.readableBytesView) } == [[7]])
        #expect(r.status == .ok)
    }
}
