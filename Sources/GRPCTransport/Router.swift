import NIOCore

/// How many messages flow each way.
public enum RPCKind: Sendable {
    case unary
    case serverStreaming
    case clientStreaming
    case bidirectionalStreaming

    public var clientStreams: Bool { self == .clientStreaming || self == .bidirectionalStreaming }
    public var serverStreams: Bool { self == .serverStreaming || self == .bidirectionalStreaming }
}

/// Receives what the client sends on one call. All methods run on the call's
/// event loop, in order: any number of `handleMessage`, then `handleEnd` when
/// the client half-closes, or `handleCancel` at any point (client reset,
/// deadline, connection loss, server shutdown), after which nothing more comes.
public protocol ServerCallHandler: AnyObject {
    func handleMessage(_ message: ByteBuffer)
    func handleEnd()
    func handleCancel()
}

/// A method the server serves: its path `/package.Service/Method`, its kind,
/// and how to make a handler for one call.
public struct RPCRoute: Sendable {
    public let path: String
    public let kind: RPCKind
    public let makeHandler: @Sendable (ServerCall) -> ServerCallHandler

    public init(path: String, kind: RPCKind, makeHandler: @escaping @Sendable (ServerCall) -> ServerCallHandler) {
        precondition(path.hasPrefix("/") && path.dropFirst().contains("/"), "a route path is /service/method")
        self.path = path
        self.kind = kind
        self.makeHandler = makeHandler
    }

    /// A unary method: exactly one request message, then `body` runs and must
    /// eventually call `call.finish` (directly or from another thread).
    public static func unary(_ path: String, _ body: @escaping @Sendable (ServerCall, ByteBuffer) -> Void) -> RPCRoute {
        RPCRoute(path: path, kind: .unary) { call in SingleRequestHandler(call: call, body: body) }
    }

    /// A server-streaming method: exactly one request message, then `body`
    /// sends any number of messages and finishes the call.
    public static func serverStreaming(_ path: String, _ body: @escaping @Sendable (ServerCall, ByteBuffer) -> Void) -> RPCRoute {
        RPCRoute(path: path, kind: .serverStreaming) { call in SingleRequestHandler(call: call, body: body) }
    }

    /// The service part of the path: `package.Service`.
    public var serviceName: String {
        String(path.dropFirst().split(separator: "/", maxSplits: 1)[0])
    }
}

/// Collects the single request of a unary or server-streaming call. A second
/// message, or none at all, violates the method's request cardinality:
/// UNIMPLEMENTED, as the gRPC status-code document says (grpc-java and
/// grpc-go answer INTERNAL; the document is followed, not them).
final class SingleRequestHandler: ServerCallHandler {
    private let call: ServerCall
    private let body: @Sendable (ServerCall, ByteBuffer) -> Void
    private var request: ByteBuffer?
    private var failed = false

    init(call: ServerCall, body: @escaping @Sendable (ServerCall, ByteBuffer) -> Void) {
        self.call = call
        self.body = body
    }

    func handleMessage(_ message: ByteBuffer) {
        guard !failed else { return }
        if request != nil {
            failed = true
            call.finish(GRPCStatus(.unimplemented, "more than one request message on a single-request method"))
            return
        }
        request = message
    }

    func handleEnd() {
        guard !failed else { return }
        guard let request else {
            call.finish(GRPCStatus(.unimplemented, "no request message on a single-request method"))
            return
        }
        self.request = nil
        body(call, request)
    }

    func handleCancel() {
        request = nil
    }
}

/// The methods a server serves, fixed before it starts.
public struct GRPCRouter: Sendable {
    private var routes: [String: RPCRoute] = [:]

    public init() {}

    public init(_ routes: [RPCRoute]) {
        for route in routes { add(route) }
    }

    public mutating func add(_ route: RPCRoute) {
        precondition(routes[route.path] == nil, "route \(route.path) registered twice")
        routes[route.path] = route
    }

    public mutating func add(contentsOf routes: [RPCRoute]) {
        for route in routes { add(route) }
    }

    public func route(for path: String) -> RPCRoute? { routes[path] }

    /// Every service with at least one method, sorted.
    public var serviceNames: [String] {
        Array(Set(routes.values.map(\.serviceName))).sorted()
    }

    public var allPaths: [String] { routes.keys.sorted() }
}
