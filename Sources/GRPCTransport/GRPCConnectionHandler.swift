import CNghttp2
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore

/// Sent down a connection's pipeline to start a graceful drain: GOAWAY, let
/// open calls finish, then close.
public struct GracefulShutdownEvent: Sendable {
    public init() {}
}

/// What a connection needs to know, shared by all connections of a server.
struct ConnectionConfiguration: Sendable {
    var router: GRPCRouter
    var limits: HTTP2Limits
    var maxReceiveMessageBytes: Int
    /// Bytes of partly received messages a connection may hold over all its calls.
    var maxBufferedBytesPerConnection: Int
    /// The same for all connections together.
    var requestBudget = MemoryBudget(limitBytes: 256 << 20)
    /// A connection with no open call for this long is closed (GOAWAY first).
    var idleTimeout: TimeAmount
    /// Response bytes one connection may hold queued; past it no new call
    /// starts on it (REFUSED_STREAM), streaming calls wait, and messages that
    /// cannot drain are dropped with RESOURCE_EXHAUSTED.
    var maxResponseBufferBytesPerConnection: Int = 1 << 20
    /// All connections together; past it the same holds for every
    /// connection that has response bytes queued.
    var responseBudget = MemoryBudget(limitBytes: 256 << 20)
    /// A connection whose response buffer stays full without draining for
    /// this long is closed (GOAWAY ENHANCE_YOUR_CALM, then close).
    var stuckTimeout: TimeAmount = .seconds(30)
    var logger: Logger
    /// Told of connections and of each call's end (metrics, access log).
    var observer: GRPCCallObserver?
}

/// One client connection: bytes from the NIO channel go into an nghttp2
/// session; its callbacks record what arrived; after each read the recorded
/// events become calls, messages and ends for the method handlers; answers go
/// back through the session and out to the channel.
final class GRPCConnectionHandler: ChannelDuplexHandler, HTTP2SessionDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Event {
        case headerBlock(streamID: Int32, head: RequestHead?, isRequest: Bool, endStream: Bool)
        case data(streamID: Int32, ByteBuffer)
        case endStream(streamID: Int32)
        case streamClosed(streamID: Int32, errorCode: UInt32)
    }

    let configuration: ConnectionConfiguration
    var logger: Logger
    var session: NGHTTP2Session?
    var context: ChannelHandlerContext?
    var calls: [Int32: ServerCall] = [:]
    /// The header block being received (HTTP/2 sends one at a time).
    var currentHeadStreamID: Int32 = 0
    var currentHead = RequestHead()
    var events: [Event] = []
    var endStreamsSent: [Int32] = []
    var becameWritable: [ServerCall] = []
    var bufferedInboundBytes = 0
    /// Response bytes queued in this connection's calls (also counted in
    /// `configuration.responseBudget`).
    var queuedResponseBytes = 0
    var peakQueuedResponseBytes = 0
    /// Response bytes taken from the calls by nghttp2 since the connection
    /// opened: progress, for the stuck check.
    var drainedResponseBytes = 0
    /// Calls told they are not writable because the buffer was full; told
    /// again (onWritable) once it has drained to half. At most one entry per call.
    var waitingForBuffer: [ServerCall] = []
    var stuckTask: Scheduled<Void>?
    var inSend = false
    /// Most bytes one flush takes from nghttp2 before handing them to the
    /// channel; the rest follows when the channel has taken these (so what
    /// waits in the channel stays near its write watermark).
    static let flushLimitBytes = 1 << 20
    /// Least progress over a stuck timeout that keeps a full connection open.
    static let stuckProgressBytes = 16 * 1024
    /// Streams answered with a refusal (405, 415, a trailers-only error)
    /// before the client finished sending, with the request bytes thrown away
    /// since. They are not reset at once: nghttp2 keeps their state, so a
    /// later frame that breaks RFC 9113 on them still gets the error the RFC
    /// requires. Bounded by SETTINGS_MAX_CONCURRENT_STREAMS (each is open).
    var refusedStreams: [Int32: Int] = [:]
    /// Past this many discarded request bytes a refused stream is reset
    /// (NO_ERROR, RFC 9113 §8.1): the client is uploading a body nobody reads.
    static let refusedBodyLimitBytes = 1 << 20

    var inRead = false
    var flushNeeded = false
    var flushScheduled = false
    var readHeld = false
    /// active → draining → closing → closed: see `ConnectionStateMachine`.
    var lifecycle = ConnectionStateMachine()
    var idleTask: Scheduled<Void>?
    /// A connection's calls mostly go to one method: its path string and
    /// route are kept instead of a new String and a dictionary lookup per call.
    var lastPath = ""
    var lastRoute: (path: String, route: RPCRoute)?
    /// When the connection last became idle (no calls), on the event loop's clock.
    var idleSince = NIODeadline.uptimeNanoseconds(0)
    var peer = "unknown"
    /// Observes this connection's calls (nil: no metrics, no access log).
    var callObserver: GRPCConnectionObserver?
    /// Made request ids are this, a dash and the stream id.
    let requestIDPrefix = RequestID.connectionPrefix()

    init(configuration: ConnectionConfiguration) {
        self.configuration = configuration
        self.logger = configuration.logger
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        peer = context.channel.remoteAddress?.description ?? "unknown"
        logger[metadataKey: "peer"] = "\(peer)"
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if session == nil { start(context: context) }
        context.fireChannelActive()
    }

    func start(context: ChannelHandlerContext) {
        guard session == nil else { return }
        session = NGHTTP2Session(delegate: self, limits: configuration.limits)
        callObserver = configuration.observer?.connectionOpened(peer: peer)
        logger.debug("connection opened")
        armIdleTimer()
        flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        lifecycle.channelClosed()
        idleTask?.cancel()
        stuckTask?.cancel()
        stuckTask = nil
        let open = calls.values
        calls.removeAll()
        for call in open {
            call.cancel()  // gives its queued response bytes back to the budget
            call.handler = nil
            call.output = .detached
            observeEnd(call)
        }
        callObserver?.connectionClosed()
        callObserver = nil
        waitingForBuffer.removeAll()
        inboundBytesBuffered(-bufferedInboundBytes)
        assert(queuedResponseBytes == 0, "response bytes left counted after every call was cancelled")
        logger.debug("connection closed", metadata: ["cancelled_calls": "\(open.count)"])
        session = nil
        context.fireChannelInactive()
        if peakQueuedResponseBytes >= configuration.maxResponseBufferBytesPerConnection {
            configuration.responseBudget.returnFreedMemory(on: context.eventLoop)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let session, !lifecycle.isClosing else { return }
        let bytes = unwrapInboundIn(data)
        inRead = true
        defer { inRead = false }
        do {
            try bytes.withUnsafeReadableBytes { raw throws(HTTP2SessionError) in try session.receive(raw) }
        } catch {
            processEvents()
            fail(error)
            return
        }
        processEvents()
        flushNeeded = true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if flushNeeded { flush() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            flush()
            if readHeld {
                readHeld = false
                context.read()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Back-pressure: while the socket cannot take more, read no more
    /// requests (a slow reader must not make us queue without bound).
    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            readHeld = true
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is GracefulShutdownEvent {
            beginDrain()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: Session delegate (recording only; headers and DATA in ConnectionHeaders/ConnectionMessageFlow)

    func sessionDidReceiveEndStream(streamID: Int32) {
        events.append(.endStream(streamID: streamID))
    }

    func sessionDidCloseStream(streamID: Int32, errorCode: UInt32) {
        events.append(.streamClosed(streamID: streamID, errorCode: errorCode))
    }

    func sessionDidSendEndStream(streamID: Int32) {
        endStreamsSent.append(streamID)
    }

    func sessionFillData(streamID: Int32, into buffer: UnsafeMutableRawBufferPointer) -> DataFill {
        guard let call = calls[streamID] else {
            // The call is gone (reset); end the data source.
            return .bytes(count: 0, endOfData: true, trailers: nil)
        }
        return call.fill(buffer)
    }

    // MARK: Dispatch

    func processEvents() {
        var index = 0
        // Handlers may cause more events (none today), so walk by index.
        while index < events.count {
            let event = events[index]
            index += 1
            switch event {
            case .headerBlock(let streamID, let head, let isRequest, let endStream):
                if isRequest, let head {
                    startCall(streamID: streamID, head: head)
                }
                if endStream { endOfRequest(streamID: streamID) }
            case .data(let streamID, let bytes):
                receiveData(streamID: streamID, bytes: bytes)
            case .endStream(let streamID):
                endOfRequest(streamID: streamID)
            case .streamClosed(let streamID, let errorCode):
                streamClosed(streamID: streamID, errorCode: errorCode)
            }
        }
        events.removeAll(keepingCapacity: events.capacity <= 1024)
    }

    func startCall(streamID: Int32, head: RequestHead) {
        let requestIDValue = head.requestID.map { RequestIDValue.given($0) } ?? .made(prefix: requestIDPrefix, streamID: streamID)
        var requestID: String { requestIDValue.string }  // (made only on the error paths that need a String)
        func respondTrailersOnly(streamID: Int32, _ status: GRPCStatus) {
            self.respondTrailersOnly(streamID: streamID, status, requestID: requestID, path: head.path ?? "")
        }
        guard !responseBufferFull else {
            // Not processed: a gRPC client retries it (transparently) elsewhere or later.
            session?.resetStream(streamID: streamID, errorCode: UInt32(NGHTTP2_REFUSED_STREAM.rawValue))
            scheduleFlush()
            return
        }
        guard !head.tooLarge else {
            respondTrailersOnly(streamID: streamID, GRPCStatus(.resourceExhausted, "request header list larger than \(configuration.limits.maxHeaderListBytes) bytes"))
            return
        }
        guard head.method == "POST" else {
            respondPlain(streamID: streamID, status: 405, body: "gRPC requires POST\n", extra: [("allow", "POST"), ("x-request-id", requestID)])
            return
        }
        guard head.isGRPCContentType == true else {
            respondPlain(streamID: streamID, status: 415, body: "content-type must be application/grpc\n", extra: [("x-request-id", requestID)])
            return
        }
        var requestEncoding = MessageEncoding.identity
        if let name = head.encoding {
            guard let encoding = MessageEncoding(headerValue: name) else {
                respondTrailersOnly(streamID: streamID, GRPCStatus(.unimplemented, "grpc-encoding '\(name)' is not supported; supported: \(MessageEncoding.acceptHeader)"))
                return
            }
            requestEncoding = encoding
        }
        var deadline: NIODeadline?
        var timeoutNanos: Int64?
        if let timeout = head.timeout {
            guard let nanos = GRPCTimeout.parse(timeout) else {
                respondTrailersOnly(streamID: streamID, GRPCStatus(.internalError, "malformed grpc-timeout '\(timeout)'"))
                return
            }
            if nanos < Int64.max / 2 {
                deadline = .now() + .nanoseconds(nanos)
                timeoutNanos = nanos
            }
        }
        if let name = head.invalidMetadataName {
            respondTrailersOnly(streamID: streamID, GRPCStatus(.internalError, "metadata '\(name)' is not valid base64"))
            return
        }
        let path = head.path ?? ""
        let route: RPCRoute
        if let last = lastRoute, last.path == path {
            route = last.route
        } else if let found = configuration.router.route(for: path) {
            route = found
            lastRoute = (path, found)
        } else {
            respondTrailersOnly(streamID: streamID, GRPCStatus(.unimplemented, "method not found: \(path)"))
            return
        }
        var responseEncoding = MessageEncoding.identity
        if requestEncoding != .identity, MessageEncoding.list(head.acceptEncoding ?? requestEncoding.rawValue, contains: requestEncoding) {
            responseEncoding = requestEncoding
        }
        let context = self.context!
        let call = ServerCall(
            streamID: streamID, path: path, kind: route.kind, metadata: head.metadata, deadline: deadline,
            requestEncoding: requestEncoding, responseEncoding: responseEncoding,
            maxMessageLength: configuration.maxReceiveMessageBytes, output: .connection(self),
            eventLoop: context.eventLoop, allocator: context.channel.allocator, peer: peer, requestID: requestIDValue,
            keepsAttributes: callObserver?.wantsAttributes ?? false)
        calls[streamID] = call
        callObserver?.callStarted()
        if let timeoutNanos { call.armDeadline(timeoutNanos: timeoutNanos) }
        if lifecycle.isDraining { call.notifyServerShutdown() }  // (before the handler: it hears of it when it asks)
        call.handler = route.makeHandler(call)
    }

    func streamClosed(streamID: Int32, errorCode: UInt32) {
        refusedStreams.removeValue(forKey: streamID)
        guard let call = calls.removeValue(forKey: streamID) else { return }
        inboundBytesBuffered(-call.deframer.bufferedBytes)
        if !call.isFinished {
            logger.debug("call cancelled", metadata: ["path": "\(call.path)", "http2_error": "\(errorCode)"])
        }
        call.cancel()
        call.handler = nil
        call.output = .detached
        observeEnd(call)
        if calls.isEmpty { armIdleTimer() }
    }

    /// Tells the observer a call ended (plain-HTTP answers are not gRPC calls).
    func observeEnd(_ call: ServerCall) {
        guard let callObserver, !call.plainHTTP else { return }
        callObserver.callEnded(EndedCall(
            path: call.path, isRoutedMethod: true, code: call.finalCode ?? .cancelled,
            durationNanos: DispatchTimeNanos.now() &- call.startNanos, requestIDValue: call.requestIDValue, peer: peer,
            attributes: call.attributes))
    }

    /// Answers a request that never became a call (unknown method,
    /// malformed head) with a trailers-only response; observed as a call.
    func respondTrailersOnly(streamID: Int32, _ status: GRPCStatus, requestID: String, path: String) {
        let start = DispatchTimeNanos.now()
        refused(streamID: streamID)
        var fields = GRPCHeaders.responseHeaders(metadata: Metadata(), encoding: nil, requestID: requestID)
        fields.append(contentsOf: GRPCHeaders.trailers(status: status, metadata: Metadata()))
        session?.submitResponse(streamID: streamID, headers: .list(fields), hasBody: false)
        scheduleFlush()
        if let callObserver {
            callObserver.callStarted()
            callObserver.callEnded(EndedCall(
                path: path, isRoutedMethod: false, code: status.code, durationNanos: DispatchTimeNanos.now() &- start,
                requestIDValue: .given(requestID), peer: peer, attributes: []))
        }
    }

    /// A plain HTTP answer with a short text body, for requests that are not
    /// gRPC at all (conformance tools need a response to look at).
    func respondPlain(streamID: Int32, status: Int, body: String, extra: [(String, String)]) {
        refused(streamID: streamID)
        let context = self.context!
        let call = ServerCall(
            streamID: streamID, path: "", kind: .unary, metadata: Metadata(), deadline: nil,
            requestEncoding: .identity, responseEncoding: .identity, maxMessageLength: 1,
            output: .connection(self), eventLoop: context.eventLoop, allocator: context.channel.allocator, peer: peer,
            requestID: .given("-"), plainHTTP: true)
        var bytes = context.channel.allocator.buffer(capacity: body.utf8.count)
        bytes.writeString(body)
        calls[streamID] = call
        call.queue(bytes)
        var headers: [(String, String)] = [(":status", String(status)), ("content-type", "text/plain; charset=utf-8")]
        headers.append(contentsOf: extra)
        session?.submitResponse(streamID: streamID, headers: .list(headers), hasBody: true)
        scheduleFlush()
    }
}
