// The socket driver of `H2ClientSession`: one TCP connection (h2c, prior
// knowledge) carrying gRPC calls. Used by loadgen (many connections polled by
// one thread) and creditctl (one blocking call). This file is the only place
// in the client that touches sockets and poll.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One h2c connection carrying gRPC calls. Not thread-safe: owned by one thread.
public final class H2Connection {
    /// Limits: bytes read per read(2), bytes of nghttp2 output queued before a send.
    static let readChunkBytes = 64 << 10
    static let maxQueuedOutputBytes = 256 << 10

    public let fd: Int32
    public let session: H2ClientSession
    private var headerBlocks: [String: H2HeaderBlock] = [:]
    private let authority: String
    private let extraHeaders: [(String, String)]
    private var out: [UInt8] = []
    private var outOffset = 0
    private var readBuffer: [UInt8]
    public private(set) var isClosed = false

    /// Whether new calls may be started here (open, and no GOAWAY received).
    public var acceptsCalls: Bool { !isClosed && session.goawayLastStreamID == nil }
    /// The last stream id of the server's GOAWAY, once one arrived: no new calls go on this connection.
    public var goawayLastStreamID: Int32? { session.goawayLastStreamID }
    /// Calls submitted and not yet completed.
    public var inFlight: Int { session.inFlight }
    /// Whether the socket should be polled for writability.
    public var wantsWrite: Bool { outOffset < out.count }
    /// Server-streaming calls (`startStreaming`): their DATA goes here (tag, bytes) as it arrives.
    public var onStreamingData: ((Int, UnsafeRawBufferPointer) -> Void)? {
        get { session.onStreamingData }
        set { session.onStreamingData = newValue }
    }

    /// Connects (blocking, at most `connectTimeoutMillis`), then leaves the socket non-blocking.
    /// `metadata` is sent with every call after content-type, te and user-agent.
    public init(target: String, metadata: [(String, String)], userAgent: String,
                options: H2ClientSession.Options = H2ClientSession.Options(),
                connectTimeoutMillis: Int32 = 10_000) throws(ClientError) {
        let socket = try Self.connect(target, timeoutMillis: connectTimeoutMillis)
        do throws(ClientError) {
            session = try H2ClientSession(options: options)
        } catch {
            close(socket)
            throw error
        }
        fd = socket
        authority = target
        extraHeaders = [("user-agent", userAgent)] + metadata
        readBuffer = [UInt8](repeating: 0, count: Self.readChunkBytes)
    }

    deinit { close(fd) }

    /// Submits a server-streaming call; its response bytes go to `onStreamingData`.
    public func startStreaming(path: String, message: [UInt8], tag: Int) throws(ClientError) {
        try start(path: path, message: message, tag: tag, streaming: true)
    }

    /// Submits a unary call: `message` is the serialized request (framed here).
    @discardableResult
    public func start(path: String, message: [UInt8], tag: Int, streaming: Bool = false) throws(ClientError) -> Int32 {
        let block: H2HeaderBlock
        if let cached = headerBlocks[path] {
            block = cached
        } else {
            block = H2HeaderBlock(grpcPath: path, authority: authority, extra: extraHeaders)
            headerBlocks[path] = block
        }
        return try session.submit(headers: block, body: GRPCFraming.frame(message), tag: tag, streaming: streaming)
    }

    /// The calls finished since the last call of this method.
    public func takeCompleted() -> [CompletedCall] { session.takeCompleted() }

    /// Ends every call in flight with `outcome` (connection lost or timed out) and stops using the connection.
    public func abandon(_ outcome: CallOutcome) {
        session.abandonAll(outcome)
        isClosed = true
    }

    /// Writes what nghttp2 has to send, until the socket would block.
    public func flush() throws(ClientError) {
        while true {
            if outOffset == out.count {
                out.removeAll(keepingCapacity: true)
                outOffset = 0
                while out.count < Self.maxQueuedOutputBytes, let chunk = try session.nextOutput() {
                    out.append(contentsOf: chunk)
                }
                if out.isEmpty { return }
            }
            // send + MSG_NOSIGNAL: a peer that went away is an error here, not a SIGPIPE.
            let written = out.withUnsafeBytes { send(fd, $0.baseAddress! + outOffset, $0.count - outOffset, Int32(MSG_NOSIGNAL)) }
            if written < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return }
                throw .io("send", errno)
            }
            outOffset += written
        }
    }

    /// Reads what the socket has and feeds it to the session. Returns false at EOF.
    public func readAvailable() throws(ClientError) -> Bool {
        while true {
            let n = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return true }
                throw .io("read", errno)
            }
            if n == 0 { return false }
            let fed = readBuffer.withUnsafeBytes { raw in
                Result { () throws(ClientError) in try session.receive(UnsafeRawBufferPointer(rebasing: raw[..<n])) }
            }
            try fed.get()
            if n < readBuffer.count { return true }
        }
    }

    /// Runs one unary call to its end or until `deadlineNanos` (monotonic):
    /// submit, then poll, read and flush. Never throws for the call's own
    /// failure: that is its outcome (`.timedOut`, `.connectionLost`, a status).
    public func unaryCall(path: String, message: [UInt8], deadlineNanos: UInt64) throws(ClientError) -> CompletedCall {
        let id = try start(path: path, message: message, tag: 0)
        while true {
            if !isClosed { try flush() }
            if let done = takeCompleted().first(where: { $0.response.streamID == id }) {
                return done
            }
            let now = monotonicNanos()
            if now >= deadlineNanos {
                // The connection is given up with the call (closing it tells the server).
                abandon(.timedOut)
                return takeCompleted().first { $0.response.streamID == id }!
            }
            let waitMillis = Int32(min(1_000, (deadlineNanos - now) / 1_000_000 + 1))
            let readable = try pollConnections([self], timeoutMillis: waitMillis)
            if readable.first == true, try !readAvailable() { abandon(.connectionLost) }
        }
    }

    // MARK: sockets

    private static func connect(_ target: String, timeoutMillis: Int32) throws(ClientError) -> Int32 {
        guard let colon = target.lastIndex(of: ":"), let port = UInt16(target[target.index(after: colon)...]) else {
            throw .badTarget(target)
        }
        var host = String(target[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw .badTarget(target) }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else { throw .resolve(target, rc) }
        defer { freeaddrinfo(list) }
        var lastErrno: Int32 = 0
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            ai = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype, a.pointee.ai_protocol)
            guard fd >= 0 else {
                lastErrno = errno
                continue
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            let error = connectNonBlocking(fd, a.pointee.ai_addr, a.pointee.ai_addrlen, timeoutMillis: timeoutMillis)
            if error == 0 {
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                return fd
            }
            lastErrno = error
            close(fd)
        }
        throw .connect(target, lastErrno)
    }

    /// connect(2) on a non-blocking socket, waiting at most `timeoutMillis`; 0 or the errno.
    private static func connectNonBlocking(_ fd: Int32, _ addr: UnsafeMutablePointer<sockaddr>, _ len: socklen_t,
                                           timeoutMillis: Int32) -> Int32 {
        #if canImport(Glibc)
        let rc = Glibc.connect(fd, addr, len)
        #else
        let rc = Darwin.connect(fd, addr, len)
        #endif
        if rc == 0 { return 0 }
        guard errno == EINPROGRESS else { return errno }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        var n: Int32
        repeat { n = poll(&p, 1, timeoutMillis) } while n < 0 && errno == EINTR
        if n == 0 { return ETIMEDOUT }
        if n < 0 { return errno }
        var error: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 else { return errno }
        return error
    }
}

/// Waits until some connection is readable (or writable, where it has output queued).
/// Returns, per connection, whether it should be read; empty on timeout.
public func pollConnections(_ connections: [H2Connection], timeoutMillis: Int32) throws(ClientError) -> [Bool] {
    var fds = connections.map { c -> pollfd in
        pollfd(fd: c.isClosed ? -1 : c.fd, events: Int16(POLLIN) | (c.wantsWrite ? Int16(POLLOUT) : 0), revents: 0)
    }
    let n = poll(&fds, nfds_t(fds.count), timeoutMillis)
    if n < 0 {
        if errno == EINTR { return [] }
        throw .io("poll", errno)
    }
    if n == 0 { return [] }
    return fds.map { $0.revents & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0 }
}
