import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A tiny HTTP/1.1 server for Prometheus: `GET /metrics` answers the text
/// exposition; any other path 404, any other method 405. Its own port and
/// event loop, never the gRPC one. Requests are bounded: no body accepted
/// (413 past `maxBodyBytes`), NIO's parser bounds the head, at most
/// `maxConnections` open, idle ones closed after `idleTimeout`.
public final class MetricsHTTPServer: Sendable {
    public static let maxConnections = 32
    static let maxBodyBytes = 1_024
    static let idleTimeout = TimeAmount.seconds(30)

    private let group: MultiThreadedEventLoopGroup
    private let render: @Sendable () -> [UInt8]
    private let state = NIOLockedValueBox(State())

    private struct State {
        var listener: Channel?
        var open = 0
    }

    /// `render` makes the exposition at each scrape (on the server's thread).
    public init(render: @escaping @Sendable () -> [UInt8]) {
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.render = render
    }

    /// Binds; returns the bound address. Throws when it cannot listen.
    public func start(host: String, port: Int) throws -> SocketAddress {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                let admitted = state.withLockedValue { state -> Bool in
                    guard state.open < Self.maxConnections else { return false }
                    state.open += 1
                    return true
                }
                guard admitted else { return channel.close() }
                channel.closeFuture.whenComplete { _ in self.state.withLockedValue { $0.open -= 1 } }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(IdleStateHandler(allTimeout: Self.idleTimeout))
                    try sync.addHandler(MetricsRequestHandler(render: render))
                }
            }
        do {
            let listener = try bootstrap.bind(host: host, port: port).wait()
            state.withLockedValue { $0.listener = listener }
            return listener.localAddress!
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    public func stop() {
        let listener = state.withLockedValue { $0.listener }
        try? listener?.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// Answers one request at a time on a keep-alive connection.
final class MetricsRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let render: @Sendable () -> [UInt8]
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    init(render: @escaping @Sendable () -> [UInt8]) {
        self.render = render
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            bodyBytes = 0
        case .body(let body):
            bodyBytes += body.readableBytes
            if bodyBytes > MetricsHTTPServer.maxBodyBytes, head != nil {
                head = nil
                respond(context: context, status: .payloadTooLarge, body: "request body too large\n", keepAlive: false)
            }
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            if path != "/metrics" {
                respond(context: context, status: .notFound, body: "not found; metrics are at /metrics\n", keepAlive: head.isKeepAlive)
            } else if head.method != .GET {
                respond(context: context, status: .methodNotAllowed, body: "GET /metrics\n", keepAlive: head.isKeepAlive,
                        extra: [("allow", "GET")])
            } else {
                respond(context: context, status: .ok, bytes: render(), keepAlive: head.isKeepAlive,
                        contentType: "text/plain; version=0.0.4; charset=utf-8")
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func respond(context: ChannelHandlerContext, status: HTTPResponseStatus, body: String, keepAlive: Bool,
                         extra: [(String, String)] = []) {
        respond(context: context, status: status, bytes: Array(body.utf8), keepAlive: keepAlive,
                contentType: "text/plain; charset=utf-8", extra: extra)
    }

    private func respond(context: ChannelHandlerContext, status: HTTPResponseStatus, bytes: [UInt8], keepAlive: Bool,
                         contentType: String, extra: [(String, String)] = []) {
        var headers = HTTPHeaders([("content-type", contentType), ("content-length", String(bytes.count))])
        for (name, value) in extra { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { _ in context.close(promise: nil) } }
    }
}
