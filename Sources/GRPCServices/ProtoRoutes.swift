import CreditsProto
import GRPCTransport
import NIOCore

/// The reasons an `RPCError` may carry (generated from errors.proto).
public typealias ErrorReason = Credits_V1_ErrorReason

/// An error a handler answers with: a status code, a message for people, and
/// the machine-readable details of `google.rpc.Status` (ErrorInfo and
/// BadRequest) sent in `grpc-status-details-bin`.
public struct RPCError: Error, Sendable, Equatable {
    public var code: GRPCStatusCode
    public var message: String
    /// google.rpc.ErrorInfo.reason: a value of `credits.v1.ErrorReason`
    /// (proto/credits/v1/errors.proto), sent as its name (e.g.
    /// "INSUFFICIENT_CREDITS"). Taking the generated enum, not a string, is
    /// what keeps the server from sending a reason the contract does not
    /// list. nil: no ErrorInfo.
    public var reason: ErrorReason?
    public var domain: String
    public var metadata: [String: String]
    /// google.rpc.BadRequest field violations: (field path, what is wrong).
    public var fieldViolations: [FieldViolation]

    public struct FieldViolation: Sendable, Equatable {
        public var field: String
        public var description: String
        public init(field: String, description: String) {
            self.field = field
            self.description = description
        }
    }

    public init(_ code: GRPCStatusCode, _ message: String, reason: ErrorReason? = nil, domain: String = "credits.v1",
                metadata: [String: String] = [:], fieldViolations: [FieldViolation] = []) {
        precondition(code != .ok, "an RPCError is never OK")
        precondition(reason.map { $0 != .unspecified && $0.name != nil } ?? true,
                     "an ErrorInfo reason is a declared credits.v1.ErrorReason value other than UNSPECIFIED")
        self.code = code
        self.message = GRPCStatus.bounded(message)
        self.reason = reason
        self.domain = domain
        self.metadata = metadata
        self.fieldViolations = fieldViolations
    }

    /// BadRequest lists at most this many violations (and says how many more).
    public static let maxListedViolations = 16

    /// INVALID_ARGUMENT for one bad field.
    public static func invalid(_ field: String, _ description: String) -> RPCError {
        invalidArgument([FieldViolation(field: field, description: description)])
    }

    public static func invalidArgument(_ violations: [FieldViolation]) -> RPCError {
        let summary = violations.map { "\($0.field): \($0.description)" }.joined(separator: "; ")
        return RPCError(.invalidArgument, summary, reason: .invalidArgument, fieldViolations: violations)
    }

    /// The transport status, with the details packed.
    public var status: GRPCStatus {
        var details = Google_Rpc_Status()
        details.code = Int32(code.rawValue)
        details.message = message
        if let reason, let name = reason.name {
            var info = Google_Rpc_ErrorInfo()
            info.reason = name
            info.domain = domain
            info.metadata = metadata
            details.details.append(Google_Protobuf_Any(packing: info))
        }
        if !fieldViolations.isEmpty {
            // Bounded, like the message: the trailers must stay within every
            // client's metadata limit (grpcio: 8 KiB) however many fields
            // (e.g. repeated ones) a request gets wrong.
            var badRequest = Google_Rpc_BadRequest()
            badRequest.fieldViolations = fieldViolations.prefix(Self.maxListedViolations).map {
                var v = Google_Rpc_BadRequest.FieldViolation()
                v.field = GRPCStatus.bounded($0.field, maxBytes: 200)
                v.description_p = GRPCStatus.bounded($0.description, maxBytes: 200)
                return v
            }
            if fieldViolations.count > Self.maxListedViolations {
                var more = Google_Rpc_BadRequest.FieldViolation()
                more.description_p = "\(fieldViolations.count - Self.maxListedViolations) more invalid fields are not listed"
                badRequest.fieldViolations.append(more)
            }
            details.details.append(Google_Protobuf_Any(packing: badRequest))
        }
        return GRPCStatus(code, message, details: details.serializedBytes())
    }
}

/// The typed face of a call: send responses of one message type, finish with
/// OK or an `RPCError`. Thread-safe like `ServerCall`.
public struct ProtoCall<Response: ProtoMessage>: Sendable {
    public let call: ServerCall

    public init(_ call: ServerCall) { self.call = call }

    public var metadata: Metadata { call.metadata }
    public var deadline: NIODeadline? { call.deadline }
    public var eventLoop: EventLoop { call.eventLoop }

    public func send(_ response: Response) {
        if call.eventLoop.inEventLoop {
            // serialize(into:) reserves the exact size itself: the message is encoded once.
            call.sendMessage { response.serialize(into: &$0) }
        } else {
            call.eventLoop.execute { self.send(response) }
        }
    }

    /// Sends the one response of a unary call and ends it OK.
    public func respond(_ response: Response, trailers: Metadata = Metadata()) {
        if call.eventLoop.inEventLoop {
            send(response)
            call.finish(.ok, trailers: trailers)
        } else {
            call.eventLoop.execute { self.respond(response, trailers: trailers) }
        }
    }

    /// Sends the one response of a unary call, already serialized (bytes of
    /// a `Response`, e.g. a stored reply), as they are, and ends it OK.
    public func respond(serialized bytes: [UInt8], trailers: Metadata = Metadata()) {
        if call.eventLoop.inEventLoop {
            call.sendMessage { buffer in
                buffer.reserveCapacity(minimumWritableBytes: bytes.count)
                buffer.writeBytes(bytes)
            }
            call.finish(.ok, trailers: trailers)
        } else {
            call.eventLoop.execute { self.respond(serialized: bytes, trailers: trailers) }
        }
    }

    public func finish(trailers: Metadata = Metadata()) {
        call.finish(.ok, trailers: trailers)
    }

    public func fail(_ error: RPCError, trailers: Metadata = Metadata()) {
        call.fail(error, trailers: trailers)
    }

    public func fail(_ status: GRPCStatus) {
        call.finish(status)
    }
}

/// Receives the requests of a client- or bidirectional-streaming call, typed.
public protocol ProtoStreamHandler: AnyObject {
    associatedtype Request: ProtoMessage
    func handle(_ request: Request)
    func handleEnd()
    func handleCancel()
}

/// Receives the requests of a client-streaming call one by one, each as the
/// result of decoding it: a message that does not decode is the handler's
/// to answer (e.g. as a failed record), and the stream goes on.
public protocol ProtoRecordStreamHandler: AnyObject {
    associatedtype Request: ProtoMessage
    func handle(_ request: Result<Request, ProtoDecodingError>)
    func handleEnd()
    func handleCancel()
}

/// Routes for methods described by the generated `ProtoMethod`s.
public enum ProtoRoute {
    public static func unary<Request, Response>(
        _ method: ProtoMethod<Request, Response>,
        _ body: @escaping @Sendable (Request, ProtoCall<Response>) -> Void
    ) -> RPCRoute {
        precondition(!method.clientStreaming && !method.serverStreaming, "\(method.path) is not unary")
        return .unary(method.path) { call, bytes in decodeThen(call, bytes, body) }
    }

    /// A unary method whose caller is authorized before its request is
    /// decoded: `authorize` answers the call itself and returns nil when the
    /// caller may not call it (so an unknown key is UNAUTHENTICATED and a
    /// missing role PERMISSION_DENIED whatever the body holds); then the
    /// request is decoded (INVALID_ARGUMENT if it does not) and `body` runs.
    public static func unary<Request, Response, Context>(
        _ method: ProtoMethod<Request, Response>,
        authorize: @escaping @Sendable (ProtoCall<Response>) -> Context?,
        _ body: @escaping @Sendable (Request, ProtoCall<Response>, Context) -> Void
    ) -> RPCRoute {
        precondition(!method.clientStreaming && !method.serverStreaming, "\(method.path) is not unary")
        return .unary(method.path) { call, bytes in
            let typed = ProtoCall<Response>(call)
            guard let context = authorize(typed) else { return }
            decodeThen(call, bytes) { (request: Request, typed: ProtoCall<Response>) in body(request, typed, context) }
        }
    }

    public static func serverStreaming<Request, Response>(
        _ method: ProtoMethod<Request, Response>,
        _ body: @escaping @Sendable (Request, ProtoCall<Response>) -> Void
    ) -> RPCRoute {
        precondition(!method.clientStreaming && method.serverStreaming, "\(method.path) is not server-streaming")
        return .serverStreaming(method.path) { call, bytes in decodeThen(call, bytes, body) }
    }

    /// A server-streaming method whose caller is authorized before its
    /// request is decoded (as for `unary(_:authorize:_:)`).
    public static func serverStreaming<Request, Response, Context>(
        _ method: ProtoMethod<Request, Response>,
        authorize: @escaping @Sendable (ProtoCall<Response>) -> Context?,
        _ body: @escaping @Sendable (Request, ProtoCall<Response>, Context) -> Void
    ) -> RPCRoute {
        precondition(!method.clientStreaming && method.serverStreaming, "\(method.path) is not server-streaming")
        return .serverStreaming(method.path) { call, bytes in
            let typed = ProtoCall<Response>(call)
            guard let context = authorize(typed) else { return }
            decodeThen(call, bytes) { (request: Request, typed: ProtoCall<Response>) in body(request, typed, context) }
        }
    }

    /// Client-streaming or bidirectional: `makeHandler` makes the per-call handler.
    public static func streaming<Request, Response, Handler: ProtoStreamHandler>(
        _ method: ProtoMethod<Request, Response>,
        _ makeHandler: @escaping @Sendable (ProtoCall<Response>) -> Handler
    ) -> RPCRoute where Handler.Request == Request {
        precondition(method.clientStreaming, "\(method.path) is not client-streaming")
        let kind: RPCKind = method.serverStreaming ? .bidirectionalStreaming : .clientStreaming
        return RPCRoute(path: method.path, kind: kind) { call in
            TypedStreamAdapter(call: call, handler: makeHandler(ProtoCall(call)))
        }
    }

    /// A client-streaming method whose caller is authorized when the call
    /// starts, before any request is decoded (`authorize` answers the call
    /// itself and returns nil when the caller may not call it; the requests
    /// that follow are then dropped). Each request reaches the handler as
    /// its decode result.
    public static func streaming<Request, Response, Context, Handler: ProtoRecordStreamHandler>(
        _ method: ProtoMethod<Request, Response>,
        authorize: @escaping @Sendable (ProtoCall<Response>) -> Context?,
        _ makeHandler: @escaping @Sendable (ProtoCall<Response>, Context) -> Handler
    ) -> RPCRoute where Handler.Request == Request {
        precondition(method.clientStreaming && !method.serverStreaming, "\(method.path) is not client-streaming")
        return RPCRoute(path: method.path, kind: .clientStreaming) { call in
            let typed = ProtoCall<Response>(call)
            return RecordStreamAdapter(handler: authorize(typed).map { makeHandler(typed, $0) })
        }
    }

    private static func decodeThen<Request: ProtoMessage, Response>(
        _ call: ServerCall, _ bytes: ByteBuffer, _ body: (Request, ProtoCall<Response>) -> Void
    ) {
        do {
            let request = try Request(buffer: bytes)
            body(request, ProtoCall(call))
        } catch {
            call.fail(refusal(Request.self, error))
        }
    }

    /// The answer to a request message that does not decode.
    static func refusal<Request: ProtoMessage>(_ type: Request.Type, _ error: ProtoDecodingError) -> RPCError {
        undecodable(Request.self, error)
    }

    /// What is wrong with a message that does not decode: MALFORMED_REQUEST,
    /// or INVALID_ARGUMENT naming each bad string field. `noun` names the
    /// message to people ("request", "record").
    public static func undecodable<Request: ProtoMessage>(_ type: Request.Type, _ error: ProtoDecodingError,
                                                          noun: String = "request") -> RPCError {
        switch error {
        case .malformed:
            return RPCError(.invalidArgument, "\(noun) is not a valid \(Request.protoMessageName) message", reason: .malformedRequest)
        case .invalidStrings(let violations):
            return RPCError.invalidArgument(violations.map { RPCError.FieldViolation(field: $0.field, description: $0.description) })
        }
    }
}

/// Decodes each request message for a typed stream handler.
final class TypedStreamAdapter<Handler: ProtoStreamHandler>: ServerCallHandler {
    private let call: ServerCall
    private var handler: Handler?

    init(call: ServerCall, handler: Handler) {
        self.call = call
        self.handler = handler
    }

    func handleMessage(_ message: ByteBuffer) {
        guard let handler else { return }
        do {
            handler.handle(try Handler.Request(buffer: message))
        } catch {
            self.handler = nil
            call.fail(ProtoRoute.refusal(Handler.Request.self, error))
            handler.handleCancel()
        }
    }

    func handleEnd() {
        handler?.handleEnd()
    }

    func handleCancel() {
        handler?.handleCancel()
        handler = nil
    }
}

/// Decodes each request message for a record stream handler; without a
/// handler (the caller was refused) drops everything.
final class RecordStreamAdapter<Handler: ProtoRecordStreamHandler>: ServerCallHandler {
    private var handler: Handler?

    init(handler: Handler?) {
        self.handler = handler
    }

    func handleMessage(_ message: ByteBuffer) {
        guard let handler else { return }
        do {
            handler.handle(.success(try Handler.Request(buffer: message)))
        } catch {
            handler.handle(.failure(error))
        }
    }

    func handleEnd() {
        handler?.handleEnd()
    }

    func handleCancel() {
        handler?.handleCancel()
        handler = nil
    }
}

extension ServerCall {
    /// Ends the call with `error`, its ErrorInfo reason noted for the access log.
    public func fail(_ error: RPCError, trailers: Metadata = Metadata()) {
        if let name = error.reason?.name { annotate("reason", name) }
        finish(error.status, trailers: trailers)
    }

    /// Aborts the call with `error` (see `abort`), its reason noted like `fail`.
    public func abort(_ error: RPCError) {
        if let name = error.reason?.name { annotate("reason", name) }
        abort(error.status)
    }
}
