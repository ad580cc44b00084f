import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// How a server listens and what it allows.
public struct GRPCServerConfiguration: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 50051
    /// Event loops (threads) serving connections.
    public var threads: Int = System.coreCount
    public var limits = HTTP2Limits()
    /// Largest request message, after decompression.
    public var maxReceiveMessageBytes: Int = 4 * 1024 * 1024
    /// Bytes of partly received messages one connection may hold.
    public var maxBufferedBytesPerConnection: Int = 64 * 1024 * 1024
    /// The same for all connections together.
    public var maxBufferedBytes: Int = 256 * 1024 * 1024
    /// Connections open at once; further ones are closed on accept.
    public var maxConnections: Int = 10_000
    /// A connection with no open call for this long is closed.
    public var idleTimeout: TimeAmount = .seconds(300)
    /// Response bytes one connection may hold queued (a client that does not
    /// read them): past it no new call starts on that connection
    /// (RST_STREAM REFUSED_STREAM, which gRPC clients retry), streaming
    /// calls wait, and messages that cannot drain end their call with
    /// RESOURCE_EXHAUSTED.
    public var maxResponseBufferBytesPerConnection: Int = 1 << 20
    /// The same for all connections together.
    public var maxResponseBufferBytes: Int = 256 << 20
    /// A connection whose full response buffer does not drain for this long
    /// is closed (GOAWAY ENHANCE_YOUR_CALM); zero: never.
    public var stuckConnectionTimeout: TimeAmount = .seconds(30)
    /// How long open calls may run on after a shutdown begins.
    public var shutdownGracePeriod: TimeAmount = .seconds(10)
    /// Set: every connection is TLS (context taken from the store when it is
    /// accepted) in front of the same HTTP/2 handler; nil: h2c.
    public var tls: TLSContextStore?
    /// A TLS connection whose handshake has not finished by then is closed
    /// (it holds a connection slot meanwhile).
    public var tlsHandshakeTimeout: TimeAmount = .seconds(10)
    public var logger = Logger(label: "credits.transport")
    /// Told of connections and of every call's end (metrics, access log); nil: none.
    public var observer: GRPCCallObserver?

    public init() {}
}

/// A gRPC server: a listening socket, one nghttp2 session per connection,
/// calls routed to handlers.
public final class GRPCServer: @unchecked Sendable {
    public let configuration: GRPCServerConfiguration
    public let group: EventLoopGroup
    private let ownsGroup: Bool
    private let router: GRPCRouter
    private let state = NIOLockedValueBox(State())

    private struct State {
        var listener: Channel?
        var connections: [ObjectIdentifier: Channel] = [:]
        var shuttingDown = false
    }

    public init(configuration: GRPCServerConfiguration, router: GRPCRouter, group: EventLoopGroup? = nil) {
        precondition(configuration.maxReceiveMessageBytes > 0 && configuration.maxConnections > 0)
        precondition(configuration.maxResponseBufferBytesPerConnection > 0 && configuration.maxResponseBufferBytes > 0)
        self.configuration = configuration
        self.router = router
        if let group {
            self.group = group
            ownsGroup = false
        } else {
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
            ownsGroup = true
        }
    }

    /// Binds and starts accepting; returns the bound address (port 0 picks one).
    @discardableResult
    public func start() throws -> SocketAddress {
        let connectionConfiguration = ConnectionConfiguration(
            router: router, limits: configuration.limits,
            maxReceiveMessageBytes: configuration.maxReceiveMessageBytes,
            maxBufferedBytesPerConnection: configuration.maxBufferedBytesPerConnection,
            requestBudget: MemoryBudget(limitBytes: configuration.maxBufferedBytes),
            idleTimeout: configuration.idleTimeout,
            maxResponseBufferBytesPerConnection: configuration.maxResponseBufferBytesPerConnection,
            responseBudget: MemoryBudget(limitBytes: configuration.maxResponseBufferBytes),
            stuckTimeout: configuration.stuckConnectionTimeout,
            logger: configuration.logger, observer: configuration.observer)
        let maxConnections = configuration.maxConnections
        let tls = configuration.tls
        let handshakeTimeout = configuration.tlsHandshakeTimeout
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
            .childChannelInitializer { [self] channel in
                let admitted = self.state.withLockedValue { state -> Bool in
                    guard !state.shuttingDown, state.connections.count < maxConnections else { return false }
                    state.connections[ObjectIdentifier(channel)] = channel
                    return true
                }
                guard admitted else {
                    self.configuration.logger.warning("refusing connection: limit reached or shutting down",
                                                      metadata: ["max_connections": "\(maxConnections)"])
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in
                    _ = self.state.withLockedValue { $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
                }
                guard let tls else {
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(GRPCConnectionHandler(configuration: connectionConfiguration))
                    }
                }
                // TLS: decrypt, then the same HTTP/2 handler once the
                // handshake has negotiated h2 (see TLSHandshakeGate).
                let context = tls.identity.context
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        NIOSSLServerHandler(context: context),
                        TLSHandshakeGate(timeout: handshakeTimeout, logger: self.configuration.logger) {
                            GRPCConnectionHandler(configuration: connectionConfiguration)
                        },
                    ])
                }
            }
        let listener = try bootstrap.bind(host: configuration.host, port: configuration.port).wait()
        state.withLockedValue { $0.listener = listener }
        return listener.localAddress!
    }

    /// Connections open now.
    public var connectionCount: Int { state.withLockedValue { $0.connections.count } }

    /// Stops accepting, sends GOAWAY on every connection, lets open calls
    /// finish for up to the grace period, then closes what is left.
    public func shutdownGracefully() throws {
        let (listener, connections) = state.withLockedValue { state -> (Channel?, [Channel]) in
            state.shuttingDown = true
            return (state.listener, Array(state.connections.values))
        }
        try? listener?.close().wait()
        for channel in connections {
            channel.pipeline.fireUserInboundEventTriggered(GracefulShutdownEvent())
        }
        let deadline = NIODeadline.now() + configuration.shutdownGracePeriod
        while connectionCount > 0 && NIODeadline.now() < deadline {
            usleep(20_000)
        }
        let left = state.withLockedValue { Array($0.connections.values) }
        if !left.isEmpty {
            configuration.logger.warning("closing connections still open after the grace period", metadata: ["count": "\(left.count)"])
        }
        for channel in left { try? channel.close().wait() }
        if ownsGroup { try group.syncShutdownGracefully() }
    }
}
