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

/// Request header names the transport looks at, recognised from their bytes
/// without making a String.
enum HeaderName {
    case method, path, contentType, grpcTimeout, grpcEncoding, grpcAcceptEncoding, requestID
    /// Pseudo-headers and headers the transport does not pass on (:scheme,
    /// :authority, te, user-agent, content-length, other grpc-*).
    case ignored
    /// Custom metadata for the handler.
    case custom

    init(_ name: UnsafeRawBufferPointer) {
        func equals(_ literal: StaticString) -> Bool {
            literal.utf8CodeUnitCount == name.count
                && memcmp(literal.utf8Start, name.baseAddress!, name.count) == 0
        }
        guard let first = name.first else {
            self = .ignored
            return
        }
        switch first {
        case UInt8(ascii: ":"):
            self = equals(":method") ? .method : equals(":path") ? .path : .ignored
        case UInt8(ascii: "c"):
            self = equals("content-type") ? .contentType : equals("content-length") ? .ignored : .custom
        case UInt8(ascii: "g"):
            if equals("grpc-timeout") { self = .grpcTimeout }
            else if equals("grpc-encoding") { self = .grpcEncoding }
            else if equals("grpc-accept-encoding") { self = .grpcAcceptEncoding }
            else if name.count >= 5 && memcmp("grpc-", name.baseAddress!, 5) == 0 { self = .ignored }
            else { self = .custom }
        case UInt8(ascii: "t"):
            self = equals("te") ? .ignored : .custom
        case UInt8(ascii: "u"):
            self = equals("user-agent") ? .ignored : .custom
        case UInt8(ascii: "x"):
            self = equals("x-request-id") ? .requestID : .custom
        default:
            self = .custom
        }
    }
}

/// The request head being assembled from HEADERS (+ CONTINUATION) fields.
struct RequestHead {
    var method: String?
    var path: String?
    /// nil when the request has no content-type.
    var isGRPCContentType: Bool?
    var timeout: String?
    var encoding: String?
    var acceptEncoding: String?
    /// The client's x-request-id, when valid (see `RequestID.isValid`).
    var requestID: String?
    var metadata = Metadata()
    var headerListBytes = 0
    var tooLarge = false
    var invalidMetadataName: String?
}

/// One client connection: bytes from the NIO channel go into an nghttp2
/// session; its callbacks record what arrived; after each read the recorded
/// events become calls, messages and ends for the method handlers; answers go
/// back through the session and out to the channel.
final class GRPCConnectionHandler: ChannelDuplexHandler, HTTP2SessionDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Event {
        case headerBlock(streamID: Int32, head: RequestHead?, isRequest: Bool, endStream: Bool)
        case data(streamID: Int32, ByteBuffer)
        case endStream(streamID: Int32)
        case streamClosed(streamID: Int32, errorCode: UInt32)
    }

    private let configuration: ConnectionConfiguration
    private var logger: Logger
    private var session: NGHTTP2Session?
    private var context: ChannelHandlerContext?
    private var calls: [Int32: ServerCall] = [:]
    /// The header block being received (HTTP/2 sends one at a time).
    private var currentHeadStreamID: Int32 = 0
    private var currentHead = RequestHead()
    private var events: [Event] = []
    private var endStreamsSent: [Int32] = []
    private var becameWritable: [ServerCall] = []
    private var bufferedInboundBytes = 0
    /// Response bytes queued in this connection's calls (also counted in
    /// `configuration.responseBudget`).
    private var queuedResponseBytes = 0
    private var peakQueuedResponseBytes = 0
    /// Response bytes taken from the calls by nghttp2 since the connection
    /// opened: progress, for the stuck check.
    private var drainedResponseBytes = 0
    /// Calls told they are not writable because the buffer was full; told
    /// again (onWritable) once it has drained to half. At most one entry per call.
    private var waitingForBuffer: [ServerCall] = []
    private var stuckTask: Scheduled<Void>?
    private var inSend = false
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
    private var refusedStreams: [Int32: Int] = [:]
    /// Past this many discarded request bytes a refused stream is reset
    /// (NO_ERROR, RFC 9113 §8.1): the client is uploading a body nobody reads.
    static let refusedBodyLimitBytes = 1 << 20

    private var inRead = false
    private var flushNeeded = false
    private var flushScheduled = false
    private var readHeld = false
    /// active → draining → closing → closed: see `ConnectionStateMachine`.
    private var lifecycle = ConnectionStateMachine()
    private var idleTask: Scheduled<Void>?
    /// A connection's calls mostly go to one method: its path string and
    /// route are kept instead of a new String and a dictionary lookup per call.
    private var lastPath = ""
    private var lastRoute: (path: String, route: RPCRoute)?
    /// When the connection last became idle (no calls), on the event loop's clock.
    private var idleSince = NIODeadline.uptimeNanoseconds(0)
    private var peer = "unknown"
    /// Observes this connection's calls (nil: no metrics, no access log).
    private var callObserver: GRPCConnectionObserver?
    /// Made request ids are this, a dash and the stream id.
    private let requestIDPrefix = RequestID.connectionPrefix()

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

    private func start(context: ChannelHandlerContext) {
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

    // MARK: Session delegate (recording only)

    func sessionDidBeginHeaders(streamID: Int32) {
        // HTTP/2 never interleaves header blocks: one is assembled at a time.
        currentHeadStreamID = streamID
        currentHead = RequestHead()
    }

    func sessionDidReceiveHeader(streamID: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        guard streamID == currentHeadStreamID, !currentHead.tooLarge else { return }
        currentHead.headerListBytes += name.count + value.count + 32
        if currentHead.headerListBytes > configuration.limits.maxHeaderListBytes {
            currentHead.tooLarge = true
            currentHead.metadata = Metadata()
            return
        }
        switch HeaderName(name) {
        case .method: currentHead.method = String(decoding: value, as: UTF8.self)
        case .path: currentHead.path = internedPath(value)
        case .contentType: currentHead.isGRPCContentType = Self.isGRPCContentType(value)
        case .grpcTimeout: currentHead.timeout = String(decoding: value, as: UTF8.self)
        case .grpcEncoding: currentHead.encoding = String(decoding: value, as: UTF8.self)
        case .grpcAcceptEncoding: currentHead.acceptEncoding = String(decoding: value, as: UTF8.self)
        case .requestID: currentHead.requestID = RequestID.isValid(value) ? String(decoding: value, as: UTF8.self) : nil
        case .ignored: break
        case .custom:
            let key = String(decoding: name, as: UTF8.self)
            let text = String(decoding: value, as: UTF8.self)
            if key.hasSuffix("-bin") {
                if let decoded = Base64.decode(text) {
                    currentHead.metadata.append(Metadata.Entry(name: key, value: .binary(decoded)))
                } else if currentHead.invalidMetadataName == nil {
                    currentHead.invalidMetadataName = key
                }
            } else {
                currentHead.metadata.append(Metadata.Entry(name: key, value: .string(text)))
            }
        }
    }

    func sessionDidReceiveHeaderBlock(streamID: Int32, isRequest: Bool, endStream: Bool) {
        let head = streamID == currentHeadStreamID ? currentHead : nil
        currentHeadStreamID = 0
        events.append(.headerBlock(streamID: streamID, head: head, isRequest: isRequest, endStream: endStream))
    }

    func sessionDidReceiveData(streamID: Int32, bytes: UnsafeRawBufferPointer) {
        // The connection window comes back at once, whatever the stream: one
        // paused or refused stream never stalls the others. The stream's own
        // window comes back when its call took the bytes (`receiveData`).
        session?.consumeConnection(bytes.count)
        if let discarded = refusedStreams[streamID] {
            session?.consumeStream(streamID, bytes.count)
            discardRefusedBody(streamID: streamID, discarded: discarded + bytes.count)
            return
        }
        // The call may not exist yet (its HEADERS are in the same read); drop
        // only what a finished call would throw away anyway.
        if let call = calls[streamID], call.isFinished {
            session?.consumeStream(streamID, bytes.count)
            return
        }
        var buffer = context!.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        events.append(.data(streamID: streamID, buffer))
    }

    /// Counts the body bytes a refused stream sent; past the limit, asks the
    /// client once to stop (RST_STREAM NO_ERROR, queued in nghttp2).
    private func discardRefusedBody(streamID: Int32, discarded: Int) {
        guard discarded > Self.refusedBodyLimitBytes else {
            refusedStreams[streamID] = discarded
            return
        }
        refusedStreams.removeValue(forKey: streamID)  // reset once; what still arrives is dropped as for any finished stream
        session?.resetStream(streamID: streamID, errorCode: 0)
        flushNeeded = true
    }

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

    private func processEvents() {
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

    private func startCall(streamID: Int32, head: RequestHead) {
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

    /// "application/grpc" or "application/grpc+proto" (the only codec spoken
    /// here), in any case, optionally followed by parameters (";…", after
    /// optional white space). Any other codec ("+json", "+thrift") is not
    /// gRPC we can answer: HTTP 415. Compared on UTF-8 bytes: this runs for
    /// every call.
    static func isGRPCContentType<Bytes: Sequence<UInt8>>(_ value: Bytes) -> Bool {
        var bytes = value.makeIterator()
        func matches(_ expected: String.UTF8View) -> Bool {
            for e in expected {
                guard let b = bytes.next(), b | (b >= 0x41 && b <= 0x5A ? 0x20 : 0) == e else { return false }
            }
            return true
        }
        guard matches("application/grpc".utf8) else { return false }
        var next = bytes.next()
        if next == UInt8(ascii: "+") {
            guard matches("proto".utf8) else { return false }
            next = bytes.next()
        }
        while next == UInt8(ascii: " ") || next == UInt8(ascii: "\t") { next = bytes.next() }
        return next == nil || next == UInt8(ascii: ";")
    }

    private func receiveData(streamID: Int32, bytes: ByteBuffer) {
        guard let call = calls[streamID], call.state.takesRequestBytes else {
            // No call takes them (refused, reset, finished, request given up): the window comes back now.
            session?.consumeStream(streamID, bytes.readableBytes)
            return
        }
        let before = call.deframer.bufferedBytes
        call.deframer.append(bytes)
        call.unconsumedRequestBytes += bytes.readableBytes
        inboundBytesBuffered(call.deframer.bufferedBytes - before)
        if bufferedInboundBytes > configuration.maxBufferedBytesPerConnection {
            failRequest(call, GRPCStatus(.resourceExhausted, "too many partly received bytes on this connection"))
            return
        }
        if call.deframer.bufferedBytes > before && configuration.requestBudget.isExhausted {
            failRequest(call, GRPCStatus(.resourceExhausted, "too many partly received bytes on this server"))
            return
        }
        drainMessages(call)
        giveBackWindow(call)
    }

    /// Gives the stream's receive window back for the bytes its call took:
    /// all of them, except, while the call is paused, those still waiting
    /// in its deframer (so what waits is bounded by the stream window).
    private func giveBackWindow(_ call: ServerCall) {
        let waiting = call.state.isPaused && !call.isFinished ? call.deframer.bufferedBytes : 0
        let taken = call.unconsumedRequestBytes - waiting
        guard taken > 0 else { return }
        call.unconsumedRequestBytes -= taken
        session?.consumeStream(call.streamID, taken)
        scheduleFlush()
    }

    /// A paused call resumed: hands on the messages (and the end) that
    /// waited, then gives the window back.
    func resumeRequests(_ call: ServerCall) {
        guard calls[call.streamID] === call, !call.deliveringRequests else { return }  // (a running drain goes on by itself)
        drainMessages(call)
        if call.state.endIsPending { deliverEnd(call) }
        giveBackWindow(call)
    }

    private func drainMessages(_ call: ServerCall) {
        call.deliveringRequests = true
        defer { call.deliveringRequests = false }
        while call.state.deliversMessages {
            let before = call.deframer.bufferedBytes
            let next: FramedMessage?
            do {
                next = try call.deframer.next()
            } catch {
                switch error {
                case .messageTooLarge(let length, let limit):
                    failRequest(call, GRPCStatus(.resourceExhausted, "request message of \(length) bytes is larger than the limit of \(limit)"))
                case .invalidCompressedFlag(let flag):
                    failRequest(call, GRPCStatus(.internalError, "invalid compressed flag \(flag)"))
                }
                return
            }
            inboundBytesBuffered(call.deframer.bufferedBytes - before)
            guard let message = next else { return }
            var payload = message.payload
            if message.compressed {
                guard call.requestEncoding == .gzip else {
                    failRequest(call, GRPCStatus(.internalError, "compressed message without a grpc-encoding"))
                    return
                }
                do {
                    payload = try MessageCompression.gunzip(payload, limit: configuration.maxReceiveMessageBytes, allocator: call.allocator)
                } catch {
                    switch error {
                    case .tooLarge(let limit):
                        failRequest(call, GRPCStatus(.resourceExhausted, "decompressed request message is larger than the limit of \(limit)"))
                    case .corrupt:
                        failRequest(call, GRPCStatus(.internalError, "corrupt gzip message"))
                    }
                    return
                }
            }
            guard call.state.handlerIsActive, let handler = call.handler else { return }
            handler.handleMessage(payload)
        }
    }

    /// Counts partly received request bytes for the connection and the server.
    private func inboundBytesBuffered(_ delta: Int) {
        guard delta != 0 else { return }
        bufferedInboundBytes += delta
        configuration.requestBudget.add(delta)
        assert(bufferedInboundBytes >= 0)
    }

    private func endOfRequest(streamID: Int32) {
        // A paused call hears of the end after the messages that wait (on resume).
        guard let call = calls[streamID], call.state.requestEnded() else { return }
        deliverEnd(call)
    }

    private func deliverEnd(_ call: ServerCall) {
        guard call.state.endDelivered(), !call.isFinished else { return }
        if call.deframer.hasPartialMessage {
            failRequest(call, GRPCStatus(.internalError, "stream ended inside a message"))
            return
        }
        guard call.state.handlerIsActive, let handler = call.handler else { return }
        handler.handleEnd()
    }

    private func streamClosed(streamID: Int32, errorCode: UInt32) {
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
    private func observeEnd(_ call: ServerCall) {
        guard let callObserver, !call.plainHTTP else { return }
        callObserver.callEnded(EndedCall(
            path: call.path, isRoutedMethod: true, code: call.finalCode ?? .cancelled,
            durationNanos: DispatchTimeNanos.now() &- call.startNanos, requestIDValue: call.requestIDValue, peer: peer,
            attributes: call.attributes))
    }

    /// Ends a call for a reason of the transport's (deadline, bad framing,
    /// limits): the client gets `status`, the handler a cancel.
    /// The request stream broke (a message over a limit, bad compression, a
    /// stream ending inside a message, request buffer budgets): the call
    /// fails with `status`, unless its handler asked to answer such a call
    /// itself (`ServerCall.onRequestFailure`); then it gets no more messages
    /// (what the client still sends is discarded) and answers when it can.
    private func failRequest(_ call: ServerCall, _ status: GRPCStatus) {
        guard !call.isFinished else { return }
        if let hook = call.requestFailureHandler {
            call.requestFailureHandler = nil
            if hook(status) {
                call.state.requestTakenOver()
                discardRequestBytes(call)
                return
            }
        }
        failCall(call, status)
    }

    func failCall(_ call: ServerCall, _ status: GRPCStatus) {
        guard !call.isFinished else { return }
        call.finish(status)
        call.notifyHandlerCancelled()
        discardRequestBytes(call)
    }

    /// Drops what the call's deframer holds and gives the stream's whole
    /// receive window back (the call takes no more messages).
    private func discardRequestBytes(_ call: ServerCall) {
        inboundBytesBuffered(-call.deframer.bufferedBytes)
        call.deframer = MessageDeframer(maxMessageLength: configuration.maxReceiveMessageBytes, allocator: call.allocator)
        giveBackWindow(call)  // nothing waits in the deframer now: all of it
    }

    /// Notes a stream answered before its request was read: see `refusedStreams`.
    private func refused(streamID: Int32) {
        guard let session, !session.isRemoteClosed(streamID: streamID) else { return }
        refusedStreams[streamID] = 0
    }

    /// Answers a request that never became a call (unknown method,
    /// malformed head) with a trailers-only response; observed as a call.
    private func respondTrailersOnly(streamID: Int32, _ status: GRPCStatus, requestID: String, path: String) {
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
    private func respondPlain(streamID: Int32, status: Int, body: String, extra: [(String, String)]) {
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

    // MARK: Calls asking to send

    func submitResponse(_ call: ServerCall, headers: HeaderFields, hasBody: Bool) {
        guard let session, calls[call.streamID] === call else { return }
        session.submitResponse(streamID: call.streamID, headers: headers, hasBody: hasBody)
        scheduleFlush()
    }

    /// Ends a streaming response at once with `trailers` (its queued DATA
    /// was dropped): HEADERS with END_STREAM, not behind flow control.
    func submitTrailersNow(_ call: ServerCall, trailers: HeaderFields) {
        guard let session, calls[call.streamID] === call else { return }
        session.submitTrailersNow(streamID: call.streamID, trailers)
        scheduleFlush()
    }

    func dataReady(_ call: ServerCall) {
        guard let session, calls[call.streamID] === call else { return }
        if call.state.dataReady() {
            session.resumeData(streamID: call.streamID)
        }
        scheduleFlush()
    }

    func callBecameWritable(_ call: ServerCall) {
        becameWritable.append(call)
    }

    // MARK: Response buffer

    /// The connection holds all the response bytes it may: its own cap, or
    /// the server's budget while it holds any.
    var responseBufferFull: Bool {
        queuedResponseBytes >= configuration.maxResponseBufferBytesPerConnection
            || (queuedResponseBytes > 0 && configuration.responseBudget.isExhausted)
    }

    /// Called by a call that found itself not writable because of the buffer.
    func waitForResponseBuffer(_ call: ServerCall) {
        guard !call.state.writabilityWaits.contains(.connectionBuffer) else { return }
        call.state.writabilityWaits.insert(.connectionBuffer)
        waitingForBuffer.append(call)
    }

    /// Whether a call may queue another message. When the buffer is full,
    /// first hands what nghttp2 can send to the channel.
    func admitResponseBytes() -> Bool {
        guard responseBufferFull else { return true }
        drainOutput()
        return !responseBufferFull
    }

    /// Counts `delta` response bytes queued (+) or taken/dropped (−) by a call.
    func responseBytesQueued(_ delta: Int) {
        queuedResponseBytes += delta
        configuration.responseBudget.add(delta)
        assert(queuedResponseBytes >= 0)
        if delta > 0 {
            peakQueuedResponseBytes = max(peakQueuedResponseBytes, queuedResponseBytes)
            if queuedResponseBytes >= configuration.maxResponseBufferBytesPerConnection && stuckTask == nil {
                scheduleStuckCheck(drainedBefore: drainedResponseBytes)
            }
            return
        }
        drainedResponseBytes -= delta
        if !waitingForBuffer.isEmpty, queuedResponseBytes <= configuration.maxResponseBufferBytesPerConnection / 2,
           queuedResponseBytes == 0 || !configuration.responseBudget.isExhausted {
            // Half drained: the waiting calls may send again.
            for call in waitingForBuffer {
                call.state.writabilityWaits.remove(.connectionBuffer)
                becameWritable.append(call)
            }
            waitingForBuffer.removeAll()
            scheduleFlush()
        }
    }

    /// Checks after a stuck timeout that a full buffer drained at least a
    /// little; closes the connection if it did not.
    private func scheduleStuckCheck(drainedBefore: Int) {
        guard let context, !lifecycle.isClosing, configuration.stuckTimeout > .zero else { return }
        stuckTask = context.eventLoop.scheduleTask(in: configuration.stuckTimeout) {
            self.stuckTask = nil
            guard !self.lifecycle.isClosing, self.responseBufferFull else { return }
            guard self.drainedResponseBytes - drainedBefore >= Self.stuckProgressBytes else {
                self.closeStuckConnection()
                return
            }
            self.scheduleStuckCheck(drainedBefore: self.drainedResponseBytes)
        }
    }

    private func closeStuckConnection() {
        guard let session, let context, !lifecycle.isClosing else { return }
        logger.info("closing a connection whose responses do not drain", metadata: [
            "queued_response_bytes": "\(queuedResponseBytes)",
            "stuck_seconds": "\(configuration.stuckTimeout.nanoseconds / 1_000_000_000)",
        ])
        session.submitGoAway(errorCode: UInt32(NGHTTP2_ENHANCE_YOUR_CALM.rawValue))
        var out = context.channel.allocator.buffer(capacity: 0)
        _ = try? session.send(into: &out, limit: 64 * 1024)
        if out.readableBytes > 0 { context.write(wrapOutboundOut(out), promise: nil) }
        context.flush()
        // Not after the writes complete: this peer does not read.
        _ = lifecycle.close()
        context.close(promise: nil)
    }

    /// Hands what nghttp2 can send now to the channel, without the rest of
    /// `flush` (safe while events are being processed).
    private func drainOutput() {
        guard let session, let context, !lifecycle.isClosing, !inSend, context.channel.isWritable else { return }
        inSend = true
        defer { inSend = false }
        var out = context.channel.allocator.buffer(capacity: 0)
        do {
            _ = try session.send(into: &out, limit: Self.flushLimitBytes)
        } catch {
            if out.readableBytes > 0 { context.write(wrapOutboundOut(out), promise: nil) }
            fail(error)
            return
        }
        if out.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
        flushNeeded = true
        scheduleFlush()
    }

    // MARK: Output

    private func scheduleFlush() {
        if inRead {
            flushNeeded = true
            return
        }
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.execute {
            self.flushScheduled = false
            self.flush()
        }
    }

    private func flush() {
        flushNeeded = false
        guard let session, let context, !lifecycle.isClosing, !inSend else { return }
        guard context.channel.isWritable else { return }  // resumed by channelWritabilityChanged
        var out = context.channel.allocator.buffer(capacity: 0)
        var more = false
        inSend = true
        defer { inSend = false }
        do {
            more = try session.send(into: &out, limit: Self.flushLimitBytes)
            while !more && !endStreamsSent.isEmpty {
                let ended = endStreamsSent
                endStreamsSent.removeAll()
                for streamID in ended where refusedStreams[streamID] == nil && !session.isRemoteClosed(streamID: streamID) {
                    // A call's complete answer while the client still sends:
                    // ask it to stop, without error (RFC 9113 §8.1). Refusals
                    // are left open until the client ends them (`refusedStreams`).
                    session.resetStream(streamID: streamID, errorCode: 0)
                }
                more = try session.send(into: &out, limit: Self.flushLimitBytes)
            }
        } catch {
            if out.readableBytes > 0 { context.write(wrapOutboundOut(out), promise: nil) }
            fail(error)
            return
        }
        if out.readableBytes > 0 {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
        inSend = false
        processEvents()  // stream closes reported while sending
        notifyWritable()
        if (more || !endStreamsSent.isEmpty) && !lifecycle.isClosing {
            // The rest after the channel has taken this much (or became unwritable).
            scheduleFlush()
        }
        if !session.wantsReadOrWrite || (lifecycle.closesWhenCallsEnd && calls.isEmpty) {
            closeConnection()
        }
    }

    private func notifyWritable() {
        guard !becameWritable.isEmpty else { return }
        let ready = becameWritable
        becameWritable.removeAll()
        for call in ready where !call.isFinished {
            call.onWritable?()
        }
    }

    private func fail(_ error: HTTP2SessionError) {
        switch error {
        case .fatal(let code, let reason):
            logger.info("closing connection after HTTP/2 error", metadata: ["nghttp2_error": "\(code)", "reason": "\(reason)"])
        }
        if let session, let context {
            // Send what the session queued (usually a GOAWAY) before closing.
            var out = context.channel.allocator.buffer(capacity: 0)
            _ = try? session.send(into: &out, limit: 64 * 1024)
            if out.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
        }
        closeConnection()
    }

    private func closeConnection() {
        guard let context, lifecycle.close() else { return }
        // After what is already written has gone out.
        let empty = context.channel.allocator.buffer(capacity: 0)
        context.writeAndFlush(wrapOutboundOut(empty)).whenComplete { _ in
            context.close(promise: nil)
        }
    }

    // MARK: Draining and idleness

    private func beginDrain() {
        guard let session, let context, lifecycle.beginDrain() else { return }
        session.submitShutdownNotice()
        for call in calls.values { call.notifyServerShutdown() }
        flush()
        // The final GOAWAY after a round trip's grace, so that streams the
        // client opened meanwhile are still served.
        context.eventLoop.scheduleTask(in: .milliseconds(200)) {
            guard let session = self.session, self.lifecycle.sendFinalGoAway() else { return }
            session.submitGoAway()
            self.flush()
            if self.calls.isEmpty { self.closeConnection() }
        }
    }

    /// The :path value as a String, the previous call's when the bytes are the same.
    private func internedPath(_ value: UnsafeRawBufferPointer) -> String {
        guard let base = value.baseAddress, value.count > 0 else { return "" }
        let same = lastPath.utf8.count == value.count
            && lastPath.utf8.withContiguousStorageIfAvailable { memcmp($0.baseAddress!, base, value.count) == 0 } == true
        if !same { lastPath = String(decoding: value, as: UTF8.self) }
        return lastPath
    }

    /// Notes that the connection became idle. One timer per connection checks
    /// when it fires whether the connection has been idle for the whole
    /// timeout, and re-arms itself otherwise: no timer is scheduled and
    /// cancelled per call (measured: that was about 1% of the server's CPU per
    /// GetBalance under h2load).
    private func armIdleTimer() {
        guard let context, configuration.idleTimeout > .zero else { return }
        idleSince = context.eventLoop.now
        if idleTask == nil { scheduleIdleCheck(in: configuration.idleTimeout) }
    }

    private func scheduleIdleCheck(in delay: TimeAmount) {
        guard let context, !lifecycle.isClosing else { return }
        idleTask = context.eventLoop.scheduleTask(in: delay) { self.idleCheck() }
    }

    private func idleCheck() {
        idleTask = nil
        guard !lifecycle.isClosing, let session, let context else { return }
        guard calls.isEmpty else {
            // Busy: it cannot have been idle for a whole timeout before one from now.
            scheduleIdleCheck(in: configuration.idleTimeout)
            return
        }
        let idleFor = context.eventLoop.now - idleSince
        guard idleFor >= configuration.idleTimeout else {
            scheduleIdleCheck(in: configuration.idleTimeout - idleFor)
            return
        }
        logger.debug("closing idle connection")
        session.submitGoAway()
        flush()
        closeConnection()
    }
}
