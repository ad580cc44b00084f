import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// The monotonic clock in nanoseconds (vDSO: no system call).
enum DispatchTimeNanos {
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// One gRPC call on the server: what the client asked for, and the way to
/// answer. Created by the transport, handed to the method's handler.
///
/// `sendHeaders`, `sendMessage` and `finish` may be called from any thread;
/// they hop to the call's event loop. Everything else is event-loop bound.
/// Once `finish` has been called (or the call was cancelled) further sends
/// are ignored.
public final class ServerCall: @unchecked Sendable {
    /// `/package.Service/Method`.
    public let path: String
    public let kind: RPCKind
    /// Custom request metadata (no pseudo-headers, no reserved headers).
    public let metadata: Metadata
    /// From `grpc-timeout`; nil when the client set none.
    public let deadline: NIODeadline?
    public let eventLoop: EventLoop
    public let allocator: ByteBufferAllocator
    /// The client's address, for logs.
    public let peer: String
    /// The client's `x-request-id` when valid (1…128 visible ASCII
    /// characters), else one made by the transport; echoed in the response
    /// headers of every call. (A made one becomes a String only when asked.)
    public var requestID: String { requestIDValue.string }
    let requestIDValue: RequestIDValue

    // MARK: Event-loop state, owned by the connection.

    let streamID: Int32
    /// Where the answer goes. Strong, not weak: a weak reference gives the
    /// handler a side table, and then every retain and release of it takes
    /// the slow path (measured: 7% of the server's CPU per GetBalance). The
    /// cycle handler → calls → call → handler is broken by the handler when
    /// the stream closes and when the connection goes (both set `.detached`).
    var output: CallOutput
    var handler: ServerCallHandler?
    var deframer: MessageDeframer
    let requestEncoding: MessageEncoding
    let responseEncoding: MessageEncoding

    /// What was answered, how far the request got, whether the handler was
    /// told of a cancel or a shutdown: every transition is in `CallStateMachine`.
    var state: CallStateMachine
    /// Unary calls queue one message: a small ring (it grows when needed).
    var outbound = CircularBuffer<ByteBuffer>(initialCapacity: 4)
    var outboundBytes = 0
    /// DATA bytes received on the stream and not yet given back to its
    /// receive window (those the deframer holds while paused).
    var unconsumedRequestBytes = 0
    /// The connection is handing messages to the handler now (a guard
    /// against re-entry from `resumeRequests` inside `handleMessage`).
    var deliveringRequests = false
    /// True once the call was cancelled (client reset, connection gone).
    public var isCancelled: Bool { state.isCancelled }
    var deadlineTask: Scheduled<Void>?
    var pendingResponseMetadata = Metadata()
    /// A plain-HTTP answer (405/415) rather than a gRPC one: no trailers.
    let plainHTTP: Bool
    /// An observer reads the call's attributes when it ends (the access log).
    let keepsAttributes: Bool
    /// When the call began (uptime nanoseconds), for its duration.
    let startNanos: UInt64
    /// The status the call was finished with (nil: not finished).
    var finalCode: GRPCStatusCode?
    /// Log attributes set by handlers (`annotate`), at most `maxAttributes`.
    var attributes: [(key: String, value: String)] = []
    public static let maxAttributes = 8

    /// Above this many queued response bytes the call stops being writable;
    /// a streaming handler should wait for `onWritable`.
    public static let highWatermark = 256 * 1024
    static let lowWatermark = 64 * 1024
    /// Messages at least this large are compressed when the response encoding is gzip.
    static let compressionThreshold = 256

    /// Called on the event loop when queued response bytes drain below the
    /// low watermark after `isWritable` was false.
    public var onWritable: (() -> Void)?
    /// Run (once, on the event loop) when every queued response byte has
    /// been handed to HTTP/2: see `whenDrained`.
    private var drainWaiter: (() -> Void)?
    private var cancelCallbacks: [() -> Void] = []
    private var shutdownCallbacks: [() -> Void] = []
    /// Set by a handler that must decide what the deadline means for it.
    var deadlineHandler: (() -> DeadlineAction)?

    /// What the transport does when the call's `grpc-timeout` passes.
    public enum DeadlineAction: Sendable {
        /// End the call with DEADLINE_EXCEEDED (and cancel the handler).
        case fail
        /// The handler's work can no longer be withdrawn (a write the ledger
        /// already took into a batch): keep the call open; the handler
        /// answers with the work's real outcome.
        case wait
    }

    init(streamID: Int32, path: String, kind: RPCKind, metadata: Metadata, deadline: NIODeadline?,
         requestEncoding: MessageEncoding, responseEncoding: MessageEncoding,
         maxMessageLength: Int, output: CallOutput, eventLoop: EventLoop,
         allocator: ByteBufferAllocator, peer: String, requestID: RequestIDValue, keepsAttributes: Bool = false,
         plainHTTP: Bool = false) {
        self.plainHTTP = plainHTTP
        self.state = plainHTTP ? .plainHTTPAnswer() : CallStateMachine()
        self.keepsAttributes = keepsAttributes
        self.startNanos = DispatchTimeNanos.now()
        self.requestIDValue = requestID
        self.streamID = streamID
        self.path = path
        self.kind = kind
        self.metadata = metadata
        self.deadline = deadline
        self.requestEncoding = requestEncoding
        self.responseEncoding = responseEncoding
        self.deframer = MessageDeframer(maxMessageLength: maxMessageLength, allocator: allocator)
        self.output = output
        self.eventLoop = eventLoop
        self.allocator = allocator
        self.peer = peer
    }

    /// True while the response queue is below its high watermark and the
    /// connection's response buffer has room (a client that does not read
    /// holds up every call of its connection). When false, wait for `onWritable`.
    public var isWritable: Bool {
        eventLoop.preconditionInEventLoop()
        guard outboundBytes < Self.highWatermark else { return false }
        if output.responseBufferFull {
            output.waitForResponseBuffer(self)
            return false
        }
        return true
    }

    /// Response bytes queued and not yet handed to HTTP/2 (the client's flow
    /// control window holds them back when it does not read).
    public var queuedResponseBytes: Int {
        eventLoop.preconditionInEventLoop()
        return outboundBytes
    }

    /// Runs `body` on the event loop once every response message queued so
    /// far has been handed to HTTP/2 (at once, later in this loop tick, if
    /// none is queued). For a handler that sends only the latest state
    /// (coalescing) rather than queueing every change. Replaces an earlier one.
    public func whenDrained(_ body: @escaping () -> Void) {
        eventLoop.preconditionInEventLoop()
        guard !isFinished else { return }
        if outbound.isEmpty {
            eventLoop.execute(body)
        } else {
            drainWaiter = body
        }
    }

    /// Ends the call now with `status`, dropping response messages still
    /// queued: for a client that stopped reading, whose queue cannot drain
    /// (a plain `finish` would wait behind it). The status goes out at once
    /// in the trailers (HEADERS are not flow controlled).
    public func abort(_ status: GRPCStatus) {
        guard eventLoop.inEventLoop else {
            eventLoop.execute { self.abort(status) }
            return
        }
        guard !isFinished else { return }
        guard case .submitTrailersNow = state.abort() else { return finish(status) }
        finalCode = status.code
        deadlineTask?.cancel()
        deadlineTask = nil
        deadlineHandler = nil
        drainWaiter = nil
        onWritable = nil
        if !outbound.isEmpty { outbound.removeAll() }
        if outboundBytes > 0 { output.responseBytesQueued(-outboundBytes) }
        outboundBytes = 0
        output.submitTrailersNow(self, trailers: .list(GRPCHeaders.trailers(status: status, metadata: Metadata())))
    }

    /// True once `finish` was called or the call was cancelled.
    public var isFinished: Bool { state.isFinished }

    // MARK: Request flow control

    /// Stops handing request messages (and the request's end) to the
    /// handler until `resumeRequests`. The bytes already received wait in the
    /// call, and their part of the stream's receive window is not given back:
    /// the client can send at most one stream window (SETTINGS_INITIAL_WINDOW_SIZE)
    /// more, then HTTP/2 flow control holds it. Other streams of the
    /// connection are not affected. Event loop only; may be called from
    /// `handleMessage` (no further message follows it).
    public func pauseRequests() {
        eventLoop.preconditionInEventLoop()
        state.pauseRequests()
    }

    /// Hands on what arrived while paused and gives the stream's window back.
    /// Event loop only.
    public func resumeRequests() {
        eventLoop.preconditionInEventLoop()
        guard state.resumeRequests() else { return }
        output.resumeRequests(self)
    }

    /// True between `pauseRequests` and `resumeRequests`.
    public var isPaused: Bool { state.isPaused }

    // MARK: Log attributes

    /// Attaches `key=value` to the call for its access-log line (the tenant
    /// known after authentication, the reason of an error). A key set again
    /// is replaced; past `maxAttributes` keys more are dropped. From any
    /// thread: it hops to the event loop (in order with a `finish` sent from
    /// the same thread afterwards).
    public func annotate(_ key: String, _ value: String) {
        guard keepsAttributes else { return }  // (nobody reads them: no allocation per call)
        guard eventLoop.inEventLoop else {
            eventLoop.execute { self.annotate(key, value) }
            return
        }
        if let index = attributes.firstIndex(where: { $0.key == key }) {
            attributes[index].value = value
        } else if attributes.count < Self.maxAttributes {
            attributes.append((key, value))
        }
    }

    /// The attributes set so far (event loop only).
    public var logAttributes: [(key: String, value: String)] {
        eventLoop.preconditionInEventLoop()
        return attributes
    }

    // MARK: Answering

    /// Response metadata to send in the HEADERS before the first message
    /// (or with the trailers of a trailers-only response).
    public func sendHeaders(_ metadata: Metadata) {
        guard eventLoop.inEventLoop else {
            eventLoop.execute { self.sendHeaders(metadata) }
            return
        }
        guard case .idle = state.response else { return }
        pendingResponseMetadata = metadata
        startResponse()
    }

    /// Sends one response message (its serialized bytes).
    public func sendMessage(_ payload: ByteBuffer) {
        guard eventLoop.inEventLoop else {
            eventLoop.execute { self.sendMessage(payload) }
            return
        }
        guard !isFinished else { return }
        var compressed = false
        var body = payload
        if responseEncoding == .gzip, payload.readableBytes >= Self.compressionThreshold,
           let gz = MessageCompression.gzip(payload, allocator: allocator) {
            body = gz
            compressed = true
        }
        enqueue(MessageFramer.frame(body, compressed: compressed, allocator: allocator))
    }

    /// Sends several serialized response messages, framed into one buffer
    /// (one queue entry, one copy) unless gzip is negotiated. Event loop only.
    public func sendMessages<Payloads: Collection<ByteBuffer>>(_ payloads: Payloads) {
        precondition(eventLoop.inEventLoop, "sendMessages(_:) runs on the call's event loop")
        guard !isFinished, !payloads.isEmpty else { return }
        if responseEncoding == .gzip || payloads.count == 1 {
            for payload in payloads { sendMessage(payload) }
            return
        }
        var out = allocator.buffer(capacity: payloads.reduce(0) { $0 + MessageDeframer.prefixLength + $1.readableBytes })
        for var payload in payloads {
            out.writeInteger(UInt8(0))
            out.writeInteger(UInt32(payload.readableBytes), endianness: .big)
            out.writeBuffer(&payload)
        }
        enqueue(out)
    }

    /// Sends one response message serialized in place by `write`, when its
    /// size is not known in advance (the frame grows as `write` appends):
    /// encoders then run once. With gzip negotiated the message is
    /// serialized first and compressed if large enough.
    public func sendMessage(_ write: (inout ByteBuffer) -> Void) {
        precondition(eventLoop.inEventLoop, "sendMessage(_:) runs on the call's event loop")
        guard !isFinished else { return }
        if responseEncoding == .gzip {
            var plain = allocator.buffer(capacity: 256)
            write(&plain)
            sendMessage(plain)
            return
        }
        enqueue(MessageFramer.frame(allocator: allocator, capacity: 128, write))
    }

    /// Ends the call with `status` and optional trailing metadata.
    public func finish(_ status: GRPCStatus, trailers: Metadata = Metadata()) {
        guard eventLoop.inEventLoop else {
            eventLoop.execute { self.finish(status, trailers: trailers) }
            return
        }
        guard !isFinished else { return }
        finalCode = status.code
        deadlineTask?.cancel()
        deadlineTask = nil
        deadlineHandler = nil
        let isPlainOK = status.code == .ok && status.message.isEmpty && trailers.isEmpty
        switch state.finish(trailers: isPlainOK ? .grpcOK : .list(GRPCHeaders.trailers(status: status, metadata: trailers))) {
        case .submitTrailersOnly:
            var fields = GRPCHeaders.responseHeaders(metadata: pendingResponseMetadata, encoding: nil, requestID: requestID)
            fields.append(contentsOf: GRPCHeaders.trailers(status: status, metadata: trailers))
            output.submitResponse(self, headers: .list(fields), hasBody: false)
        case .trailersQueued:
            output.dataReady(self)
        }
    }

    // MARK: Internals

    private func startResponse() {
        guard state.startResponse() else { return }
        if pendingResponseMetadata.isEmpty && responseEncoding == .identity {
            output.submitResponse(self, headers: .grpcResponse(requestID: requestIDValue), hasBody: true)
            return
        }
        let headers = GRPCHeaders.responseHeaders(
            metadata: pendingResponseMetadata,
            encoding: responseEncoding == .identity ? nil : responseEncoding, requestID: requestID)
        output.submitResponse(self, headers: .list(headers), hasBody: true)
    }

    private func enqueue(_ framed: ByteBuffer) {
        if !output.admitResponseBytes() {
            // The connection holds all the response bytes it may and none
            // drain: the message is dropped, not queued (memory stays bounded).
            finish(GRPCStatus(.resourceExhausted, "the connection's response buffer is full: the client does not read its responses"))
            notifyHandlerCancelled()
            return
        }
        if case .idle = state.response { startResponse() }
        queue(framed)
        if outboundBytes >= Self.highWatermark { state.writabilityWaits.insert(.queue) }
        output.dataReady(self)
    }

    /// Appends bytes to the response queue, counted for the connection and the server.
    func queue(_ bytes: ByteBuffer) {
        outboundBytes += bytes.readableBytes
        outbound.append(bytes)
        output.responseBytesQueued(bytes.readableBytes)
    }

    /// Copies queued bytes into nghttp2's DATA buffer.
    func fill(_ target: UnsafeMutableRawBufferPointer) -> DataFill {
        var written = 0
        while written < target.count, var first = outbound.first {
            let n = min(first.readableBytes, target.count - written)
            first.withUnsafeReadableBytes { src in
                UnsafeMutableRawBufferPointer(rebasing: target[written..<(written + n)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<n]))
            }
            first.moveReaderIndex(forwardBy: n)
            written += n
            if first.readableBytes == 0 {
                outbound.removeFirst()
            } else {
                outbound[outbound.startIndex] = first
            }
        }
        outboundBytes -= written
        assert(outboundBytes >= 0)
        if written > 0 { output.responseBytesQueued(-written) }
        if outboundBytes < Self.lowWatermark, state.writabilityWaits.contains(.queue) {
            state.writabilityWaits.remove(.queue)
            output.callBecameWritable(self)
        }
        if outbound.isEmpty, let waiter = drainWaiter {
            drainWaiter = nil
            eventLoop.execute(waiter)
        }
        if outbound.isEmpty {
            switch state.queueEmptied(wroteBytes: written > 0) {
            case .endStream(let trailers):
                return .bytes(count: written, endOfData: true, trailers: plainHTTP ? nil : trailers)
            case .deferData:
                return .deferred
            case .none:
                break
            }
        }
        return .bytes(count: written, endOfData: false, trailers: nil)
    }

    /// Schedules the `grpc-timeout` on the call's event loop (see `deadlinePassed`).
    func armDeadline(timeoutNanos: Int64) {
        assert(deadlineTask == nil, "a call's deadline is armed once")
        deadlineTask = eventLoop.scheduleTask(in: .nanoseconds(timeoutNanos)) { [weak self] in
            self?.deadlinePassed()
        }
    }

    /// The `grpc-timeout` passed: the handler decides (`onDeadline`) or the
    /// call fails with DEADLINE_EXCEEDED and the handler is cancelled.
    func deadlinePassed() {
        deadlineTask?.cancel()
        deadlineTask = nil
        if let decide = deadlineHandler {
            deadlineHandler = nil
            if case .wait = decide() { return }
        }
        output.failCall(self, GRPCStatus(.deadlineExceeded, "deadline exceeded"))
    }

    /// Marks the call cancelled (client reset, connection gone) and tells the
    /// handler, unless it had already finished the call.
    func cancel() {
        guard case .cancel(let notifyHandler) = state.cancel() else { return }
        deadlineTask?.cancel()
        deadlineTask = nil
        deadlineHandler = nil
        if !shutdownCallbacks.isEmpty { shutdownCallbacks.removeAll() }  // (they may hold the handler)
        // (NIO's removeAll allocates a fresh ring even when empty.)
        if !outbound.isEmpty { outbound.removeAll() }
        if outboundBytes > 0 { output.responseBytesQueued(-outboundBytes) }
        outboundBytes = 0
        onWritable = nil
        drainWaiter = nil
        requestFailureHandler = nil
        if notifyHandler { notifyHandlerCancelled() }
    }

    /// Tells the handler, once, that it gets nothing more and its answer is
    /// no longer wanted.
    func notifyHandlerCancelled() {
        guard state.cancelHandler() else { return }
        handler?.handleCancel()
        let callbacks = cancelCallbacks
        cancelCallbacks.removeAll()
        for callback in callbacks { callback() }
    }

    /// The handler answers a broken request stream itself (see `onRequestFailure`).
    var requestFailureHandler: ((GRPCStatus) -> Bool)?

    /// Asks `body` what a broken request stream means for this call (a
    /// message over the size limit, bad compression, a stream ending inside
    /// a message, request buffer budgets), instead of failing the call with
    /// the transport's status at once. `body` gets that status; true: the
    /// handler answers the call itself and gets no further messages (nor an
    /// end); false: the call fails with that status. For a handler whose work
    /// so far cannot be undone (a status would claim nothing was applied).
    /// Event loop only; replaces an earlier one.
    public func onRequestFailure(_ body: @escaping (GRPCStatus) -> Bool) {
        eventLoop.preconditionInEventLoop()
        requestFailureHandler = body
    }

    /// Asks `body` what to do when the deadline passes, instead of failing
    /// the call at once. Event loop only; replaces an earlier one.
    public func onDeadline(_ body: @escaping () -> DeadlineAction) {
        eventLoop.preconditionInEventLoop()
        deadlineHandler = body
    }

    /// Runs `body` on the event loop once the server begins a graceful
    /// shutdown (at once if it has begun): the call may run on for the grace
    /// period, then its connection is closed. For a long call that can end
    /// early with a useful answer. Event loop only.
    public func onServerShutdown(_ body: @escaping () -> Void) {
        eventLoop.preconditionInEventLoop()
        if case .notified = state.shutdown {
            body()
        } else {
            shutdownCallbacks.append(body)
        }
    }

    func notifyServerShutdown() {
        guard state.serverShutdown() else { return }
        let callbacks = shutdownCallbacks
        shutdownCallbacks.removeAll()
        guard !isFinished else { return }
        for callback in callbacks { callback() }
    }

    /// Runs `body` on the event loop if the call is cancelled (client reset,
    /// deadline, connection loss, shutdown) before the handler finished it.
    /// For handlers written as closures, which have no `handleCancel`.
    public func onCancelled(_ body: @escaping () -> Void) {
        eventLoop.preconditionInEventLoop()
        if case .cancelled = state.handler {
            body()
        } else {
            cancelCallbacks.append(body)
        }
    }
}

/// Header fields of gRPC responses.
enum GRPCHeaders {
    static func responseHeaders(metadata: Metadata, encoding: MessageEncoding?, requestID: String) -> [(String, String)] {
        var fields: [(String, String)] = [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-accept-encoding", MessageEncoding.acceptHeader),
            ("x-request-id", requestID),
        ]
        if let encoding { fields.append(("grpc-encoding", encoding.rawValue)) }
        appendCustom(metadata, to: &fields)
        return fields
    }

    static func trailers(status: GRPCStatus, metadata: Metadata) -> [(String, String)] {
        var fields: [(String, String)] = [("grpc-status", String(status.code.rawValue))]
        if !status.message.isEmpty {
            fields.append(("grpc-message", PercentEncoding.encode(GRPCStatus.bounded(status.message))))
        }
        if let details = status.details, status.code != .ok {
            fields.append(("grpc-status-details-bin", Base64.encode(details)))
        }
        appendCustom(metadata, to: &fields)
        return fields
    }

    /// Custom metadata that is valid to send; invalid names or values are a
    /// programmer error in a handler and are dropped rather than sent.
    static func appendCustom(_ metadata: Metadata, to fields: inout [(String, String)]) {
        for entry in metadata {
            guard Metadata.isValidCustomName(entry.name) else {
                assertionFailure("invalid metadata name \(entry.name)")
                continue
            }
            switch entry.value {
            case .string(let value):
                guard !entry.name.hasSuffix("-bin"), Metadata.isValidStringValue(value) else {
                    assertionFailure("invalid metadata value for \(entry.name)")
                    continue
                }
                fields.append((entry.name, value))
            case .binary(let bytes):
                guard entry.name.hasSuffix("-bin") else {
                    assertionFailure("binary metadata needs a -bin name: \(entry.name)")
                    continue
                }
                fields.append((entry.name, Base64.encode(bytes)))
            }
        }
    }
}
