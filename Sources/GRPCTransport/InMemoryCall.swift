import NIOCore

/// What a call sent, as a client would have seen it.
public struct RecordedResponse: Sendable {
    /// The response HEADERS (for a trailers-only response they hold the
    /// status too); nil until sent.
    public internal(set) var headers: [(name: String, value: String)]?
    /// Each response message's payload (unframed, decompressed), in order.
    public internal(set) var messages: [ByteBuffer] = []
    /// The trailers (for a trailers-only response: the same fields as
    /// `headers`); nil until the call ended with a status.
    public internal(set) var trailers: [(name: String, value: String)]?
    /// From `grpc-status`, `grpc-message` and `grpc-status-details-bin`.
    public internal(set) var status: GRPCStatus?
    /// The client side reset the call (`InMemoryCall.cancel`) before a status came.
    public internal(set) var isCancelled = false

    public init() {}

    /// A trailers-only response: a status and no HEADERS before it.
    public var isTrailersOnly: Bool { headers != nil && trailers != nil && messages.isEmpty && trailersCameWithHeaders }
    var trailersCameWithHeaders = false

    /// The first value of header `name` in the HEADERS.
    public func header(_ name: String) -> String? { headers?.first { $0.name == name }?.value }

    /// The first value of `name` in the trailers.
    public func trailer(_ name: String) -> String? { trailers?.first { $0.name == name }?.value }

    /// The status carried by `fields` (nil without `grpc-status`).
    static func status(in fields: [(name: String, value: String)]) -> GRPCStatus? {
        guard let raw = fields.first(where: { $0.name == "grpc-status" })?.value else { return nil }
        let code = Int(raw).flatMap(GRPCStatusCode.init(rawValue:)) ?? .unknown
        let message = fields.first { $0.name == "grpc-message" }.map { PercentEncoding.decode($0.value) } ?? ""
        let details = fields.first { $0.name == "grpc-status-details-bin" }.flatMap { Base64.decode($0.value) }
        return GRPCStatus(code, message, details: details)
    }
}

/// A gRPC call served in memory: no connection, no socket, no HTTP/2. For
/// testing a method's handler in-process: it makes the `ServerCall` the
/// handler gets (the same class the connection makes), hands it request
/// messages the way the connection does (in order, held while the call is
/// paused, then the request's end; a failed request goes through
/// `onRequestFailure`), and records what the call sends. The test plays the
/// client: it sends, half-closes, resets (`cancel`), and lets the deadline
/// pass (`expireDeadline`, or time on an `EmbeddedEventLoop`).
///
/// Response bytes are taken as soon as the call queues them (a client that
/// always reads): the call stays writable.
///
/// The methods may be called from any thread: they run on `eventLoop` (at
/// once when already on it). `recorded` is read on the event loop;
/// `response` completes with it when the call has ended.
public final class InMemoryCall: @unchecked Sendable {
    public let call: ServerCall
    public var eventLoop: EventLoop { call.eventLoop }
    /// What the call has sent so far (event loop only).
    public private(set) var recorded = RecordedResponse()
    private let ended: EventLoopPromise<RecordedResponse>
    private var responseDeframer: MessageDeframer
    /// Request messages sent by the test and not yet handed to the handler.
    private var pendingRequests = CircularBuffer<ByteBuffer>(initialCapacity: 4)
    private var requestEnded = false
    private var delivering = false
    private var isEnded = false
    private let maxReceiveMessageBytes: Int
    /// At most this many request messages wait (a paused handler): more is a bug in the test.
    public static let maxPendingRequests = 4096
    /// Response messages above this size fail the recording (as a client's limit would).
    public static let maxResponseMessageBytes = 64 << 20

    /// Starts a call of `route` (its handler is made at once, on the event
    /// loop). `timeout` arms the call's deadline as `grpc-timeout` would.
    public init(route: RPCRoute, metadata: Metadata = Metadata(), timeout: TimeAmount? = nil,
                requestID: String = "in-memory", peer: String = "in-memory",
                maxReceiveMessageBytes: Int = 4 << 20, keepsAttributes: Bool = false,
                eventLoop: EventLoop, allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        precondition(timeout.map { $0.nanoseconds > 0 } ?? true, "a timeout is positive")
        self.maxReceiveMessageBytes = maxReceiveMessageBytes
        self.call = ServerCall(
            streamID: 1, path: route.path, kind: route.kind, metadata: metadata,
            deadline: timeout.map { .now() + $0 },
            requestEncoding: .identity, responseEncoding: .identity, maxMessageLength: maxReceiveMessageBytes,
            output: .detached, eventLoop: eventLoop, allocator: allocator, peer: peer,
            requestID: .given(requestID), keepsAttributes: keepsAttributes)
        self.ended = eventLoop.makePromise(of: RecordedResponse.self)
        self.responseDeframer = MessageDeframer(maxMessageLength: Self.maxResponseMessageBytes, allocator: allocator)
        onLoop {
            self.call.output = .memory(self)
            if let timeout { self.call.armDeadline(timeoutNanos: timeout.nanoseconds) }
            self.call.handler = route.makeHandler(self.call)
        }
    }

    /// Completes when the call has ended: a status was sent, or `cancel`.
    public var response: EventLoopFuture<RecordedResponse> { ended.futureResult }

    /// The client sends one request message (its serialized bytes).
    public func send(_ message: ByteBuffer) {
        onLoop {
            guard !self.requestEnded else { preconditionFailure("a request message after the request's end") }
            guard self.call.state.takesRequestBytes else { return }  // (thrown away, as the connection does)
            guard message.readableBytes <= self.maxReceiveMessageBytes else {
                return self.failRequest(GRPCStatus(.resourceExhausted,
                    "request message of \(message.readableBytes) bytes is larger than the limit of \(self.maxReceiveMessageBytes)"))
            }
            precondition(self.pendingRequests.count < Self.maxPendingRequests, "too many request messages wait for a paused handler")
            self.pendingRequests.append(message)
            self.deliverRequests()
        }
    }

    /// The client half-closes: no more request messages.
    public func endRequest() {
        onLoop {
            guard !self.requestEnded else { return }
            self.requestEnded = true
            _ = self.call.state.requestEnded()  // (told by deliverRequests, after what waits)
            self.deliverRequests()
        }
    }

    /// The client resets the call (or its connection is lost): the handler
    /// is cancelled unless it had already finished the call.
    public func cancel() {
        onLoop {
            guard !self.isEnded else { return }
            self.call.cancel()
            self.recorded.isCancelled = true
            self.end()
        }
    }

    /// The call's deadline passes now (whether or not `timeout` was given).
    public func expireDeadline() {
        onLoop { self.call.deadlinePassed() }
    }

    // MARK: The call's output (event loop)

    func recordHeaders(_ headers: HeaderFields, hasBody: Bool) {
        let fields = Self.fields(headers)
        recorded.headers = fields
        guard !hasBody else { return }
        recorded.trailersCameWithHeaders = true
        recordTrailers(headers)
    }

    func recordTrailers(_ trailers: HeaderFields) {
        let fields = Self.fields(trailers)
        recorded.trailers = fields
        recorded.status = RecordedResponse.status(in: fields)
        end()
    }

    /// Takes every byte the call has queued (and its trailers when it finished).
    func takeResponseData() {
        _ = call.state.dataReady()  // (no data source to resume: the bytes are taken now)
        withUnsafeTemporaryAllocation(byteCount: 16 * 1024, alignment: 1) { scratch in
            while true {
                switch call.fill(scratch) {
                case .deferred:
                    return
                case .bytes(let count, let endOfData, let trailers):
                    responseDeframer.append(UnsafeRawBufferPointer(rebasing: scratch[0..<count]))
                    guard deframeResponses() else { return }
                    if endOfData {
                        if let trailers { recordTrailers(trailers) } else { end() }
                        return
                    }
                }
            }
        }
    }

    func callBecameWritable() {
        eventLoop.execute {
            guard !self.call.isFinished else { return }
            self.call.onWritable?()
        }
    }

    /// Hands waiting request messages, then the end, to the handler while
    /// the call is not paused (as `GRPCConnectionHandler` does).
    func deliverRequests() {
        guard !delivering else { return }  // (a running delivery goes on by itself)
        delivering = true
        defer { delivering = false }
        while call.state.deliversMessages, let message = pendingRequests.popFirst() {
            guard call.state.handlerIsActive, let handler = call.handler else { break }
            handler.handleMessage(message)
        }
        guard pendingRequests.isEmpty, call.state.endIsPending, call.state.endDelivered(), !call.isFinished,
              call.state.handlerIsActive, let handler = call.handler else { return }
        handler.handleEnd()
    }

    /// The transport ends the call (deadline, limits): status out, handler cancelled.
    func failCall(_ status: GRPCStatus) {
        guard !call.isFinished else { return }
        call.finish(status)
        call.notifyHandlerCancelled()
        pendingRequests.removeAll()
    }

    // MARK: Internals

    private func onLoop(_ body: @escaping () -> Void) {
        if eventLoop.inEventLoop { body() } else { eventLoop.execute(body) }
    }

    /// The request stream broke: the handler may take it over (`onRequestFailure`).
    private func failRequest(_ status: GRPCStatus) {
        guard !call.isFinished else { return }
        if let hook = call.requestFailureHandler {
            call.requestFailureHandler = nil
            if hook(status) {
                call.state.requestTakenOver()
                pendingRequests.removeAll()
                return
            }
        }
        failCall(status)
    }

    /// Moves complete response messages into `recorded`; false (and the call
    /// reset) when the response stream is malformed.
    private func deframeResponses() -> Bool {
        do {
            while let message = try responseDeframer.next() {
                var payload = message.payload
                if message.compressed {
                    payload = try MessageCompression.gunzip(payload, limit: Self.maxResponseMessageBytes, allocator: call.allocator)
                }
                recorded.messages.append(payload)
            }
            return true
        } catch {
            assertionFailure("the call sent a malformed response stream: \(error)")
            cancel()
            return false
        }
    }

    /// Recorded once: the call is done. Its stream closes after this event
    /// (as a connection's does once the trailers are sent): the call is
    /// marked cancelled (its handler is told only if it had not finished),
    /// and the cycles call ⇄ output and call ⇄ handler are broken.
    private func end() {
        guard !isEnded else { return }
        isEnded = true
        pendingRequests.removeAll()
        ended.succeed(recorded)
        eventLoop.execute {
            self.call.cancel()
            self.call.handler = nil
            self.call.output = .detached
        }
    }

    static func fields(_ headers: HeaderFields) -> [(name: String, value: String)] {
        switch headers {
        case .grpcResponse(let requestID):
            var fields = StaticHeaderBlock.grpcResponse.fields.map { (name: $0.0, value: $0.1) }
            fields[fields.count - 1].value = requestID.string
            return fields
        case .grpcOK:
            return StaticHeaderBlock.grpcOK.fields.map { (name: $0.0, value: $0.1) }
        case .list(let list):
            return list.map { (name: $0.0, value: $0.1) }
        }
    }
}
