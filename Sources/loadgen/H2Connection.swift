// The thin C wrapper of the load tool: one TCP socket and one nghttp2 client
// session per connection, unary gRPC calls over h2c. This file is the only
// place in loadgen that touches C pointers (nghttp2, sockets, poll).
//
// Shape (as in nghttp2's examples): bytes read from the socket go to
// nghttp2_session_mem_recv; its callbacks only record headers, DATA and stream
// closes into `streams`/`completed`; the caller takes the completed calls and
// submits new ones; `flush` drains nghttp2_session_mem_send to the socket.

import CNghttp2

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How one call ended, as seen by the client.
enum CallOutcome: Equatable, Sendable {
    /// The server answered with this grpc-status (0 is OK).
    case grpcStatus(Int)
    /// An HTTP response without grpc-status (e.g. 415), by :status.
    case httpStatus(Int)
    /// The stream was reset (RST_STREAM or GOAWAY) with this HTTP/2 error code.
    case reset(UInt32)
    /// The connection failed or closed with the call in flight.
    case connectionLost
    /// No answer within the request timeout.
    case timedOut
    /// The server sent GOAWAY and will not process this call (refused, or beyond its last stream id).
    case goaway
    /// The call succeeded but its response could not be used (e.g. undecodable).
    case badResponse

    var isOK: Bool { self == .grpcStatus(0) }

    /// A stable label for reports: the gRPC status name, or a transport failure.
    var label: String {
        switch self {
        case .grpcStatus(let code): return grpcStatusName(code)
        case .httpStatus(let code): return "HTTP_\(code)"
        case .reset(let code): return "RST_STREAM_\(code)"
        case .connectionLost: return "CONNECTION_LOST"
        case .timedOut: return "CLIENT_TIMEOUT"
        case .goaway: return "GOAWAY"
        case .badResponse: return "BAD_RESPONSE"
        }
    }
}

func grpcStatusName(_ code: Int) -> String {
    let names = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                 "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                 "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]
    return names.indices.contains(code) ? names[code] : "STATUS_\(code)"
}

/// One finished call.
struct CompletedCall {
    /// The caller's tag given to `start`.
    var tag: Int
    var startNanos: UInt64
    var outcome: CallOutcome
    var grpcMessage: String
    /// The response DATA (length-prefixed gRPC messages).
    var data: [UInt8]

    /// The first response message, if the DATA holds a complete uncompressed one.
    var firstMessage: ArraySlice<UInt8>? {
        guard data.count >= 5, data[0] == 0 else { return nil }
        let n = Int(data[1]) << 24 | Int(data[2]) << 16 | Int(data[3]) << 8 | Int(data[4])
        guard data.count >= 5 + n else { return nil }
        return data[5..<(5 + n)]
    }
}

enum ConnectionError: Error, CustomStringConvertible {
    case badTarget(String)
    case resolve(String, Int32)
    case connect(String, Int32)
    case io(String, Int32)
    case nghttp2(String, Int)

    var description: String {
        switch self {
        case .badTarget(let t): return "bad target '\(t)' (want host:port)"
        case .resolve(let t, let rc): return "cannot resolve \(t): \(String(cString: gai_strerror(rc)))"
        case .connect(let t, let e): return "cannot connect to \(t): \(String(cString: strerror(e)))"
        case .io(let what, let e): return "\(what): \(String(cString: strerror(e)))"
        case .nghttp2(let what, let rc): return "\(what): \(String(cString: nghttp2_strerror(Int32(rc))))"
        }
    }
}

/// Monotonic clock in nanoseconds.
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// The request headers of one method path, packed once for nghttp2 (which copies them on submit).
private final class HeaderBlock {
    let nva: UnsafeMutablePointer<nghttp2_nv>
    let count: Int
    private let storage: [UnsafeMutablePointer<UInt8>]

    init(_ fields: [(String, String)]) {
        var storage: [UnsafeMutablePointer<UInt8>] = []
        nva = .allocate(capacity: fields.count)
        count = fields.count
        for (i, (name, value)) in fields.enumerated() {
            let n = Self.copy(name), v = Self.copy(value)
            storage += [n.0, v.0]
            (nva + i).initialize(to: nghttp2_nv(name: n.0, value: v.0, namelen: n.1, valuelen: v.1,
                                                flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
        }
        self.storage = storage
    }

    deinit {
        nva.deinitialize(count: count)
        nva.deallocate()
        storage.forEach { $0.deallocate() }
    }

    private static func copy(_ s: String) -> (UnsafeMutablePointer<UInt8>, Int) {
        let bytes = Array(s.utf8)
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, bytes.count))
        p.initialize(from: bytes, count: bytes.count)
        return (p, bytes.count)
    }
}

/// One h2c connection carrying unary gRPC calls. Not thread-safe: owned by one worker.
final class H2Connection {
    /// Limits: a response bigger than this is cut off and counted as a reset (never silently kept).
    static let maxResponseBytes = 4 << 20
    static let readChunkBytes = 64 << 10
    static let maxQueuedOutputBytes = 256 << 10

    private struct Stream {
        var tag: Int
        var startNanos: UInt64
        var body: [UInt8]
        var bodyOffset = 0
        var httpStatus = 0
        var grpcStatus: Int?
        var grpcMessage = ""
        var data: [UInt8] = []
        var overflow = false
    }

    let fd: Int32
    private var session: OpaquePointer?
    private var streams: [Int32: Stream] = [:]
    private var completed: [CompletedCall] = []
    private var headerBlocks: [String: HeaderBlock] = [:]
    private let authority: String
    private let baseHeaders: [(String, String)]
    private var out: [UInt8] = []
    private var outOffset = 0
    private var readBuffer: [UInt8]
    private(set) var isClosed = false
    /// The last stream id of the server's GOAWAY, once one arrived: no new calls go on this connection.
    private(set) var goawayLastStreamID: Int32?

    /// Server-streaming calls (`startStreaming`): their DATA goes to
    /// `onStreamingData` (tag, bytes) as it arrives instead of being kept.
    private var streamingIDs: Set<Int32> = []
    var onStreamingData: ((Int, UnsafeRawBufferPointer) -> Void)?

    /// Whether new calls may be started here (open, and no GOAWAY received).
    var acceptsCalls: Bool { !isClosed && goawayLastStreamID == nil }

    /// Calls submitted and not yet completed.
    var inFlight: Int { streams.count }
    /// Whether the socket should be polled for writability.
    var wantsWrite: Bool { outOffset < out.count }

    /// Connects (blocking), then switches the socket to non-blocking.
    init(target: String, metadata: [(String, String)]) throws(ConnectionError) {
        fd = try Self.connect(target)
        authority = target
        baseHeaders = [("content-type", "application/grpc"), ("te", "trailers"),
                       ("user-agent", "credits-loadgen/0.1")] + metadata
        readBuffer = [UInt8](repeating: 0, count: Self.readChunkBytes)
        try startSession()
    }

    deinit {
        nghttp2_session_del(session)
        close(fd)
    }

    private func startSession() throws(ConnectionError) {
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_header_callback(callbacks, Self.onHeader)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, Self.onData)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, Self.onStreamClose)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, Self.onFrameRecv)
        let rc = nghttp2_session_client_new(&session, callbacks, Unmanaged.passUnretained(self).toOpaque())
        guard rc == 0 else { throw .nghttp2("nghttp2_session_client_new", Int(rc)) }
        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: 1 << 20),
        ]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, 1 << 24)
    }

    /// Submits a server-streaming call; its response bytes go to `onStreamingData`.
    func startStreaming(path: String, message: [UInt8], tag: Int) throws(ConnectionError) {
        streamingIDs.insert(try start(path: path, message: message, tag: tag))
    }

    /// Submits a unary call: `message` is the serialized request (framed here).
    @discardableResult
    func start(path: String, message: [UInt8], tag: Int) throws(ConnectionError) -> Int32 {
        let block: HeaderBlock
        if let cached = headerBlocks[path] {
            block = cached
        } else {
            // Pseudo-headers first (RFC 9113 §8.3), then the fixed and caller's fields.
            block = HeaderBlock([(":method", "POST"), (":scheme", "http"), (":authority", authority), (":path", path)]
                                + baseHeaders)
            headerBlocks[path] = block
        }
        var body = [UInt8]()
        body.reserveCapacity(5 + message.count)
        let n = UInt32(message.count)
        body += [0, UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)]
        body += message
        var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: Self.readBody)
        let id = nghttp2_submit_request(session, nil, block.nva, block.count, &provider, nil)
        guard id > 0 else { throw .nghttp2("nghttp2_submit_request", Int(id)) }
        streams[id] = Stream(tag: tag, startNanos: monotonicNanos(), body: body)
        return id
    }

    /// The calls finished since the last call of this method.
    func takeCompleted() -> [CompletedCall] {
        defer { completed.removeAll(keepingCapacity: true) }
        return completed
    }

    /// Writes what nghttp2 has to send, until the socket would block.
    func flush() throws(ConnectionError) {
        while true {
            if outOffset == out.count {
                out.removeAll(keepingCapacity: true)
                outOffset = 0
                while out.count < Self.maxQueuedOutputBytes {
                    var chunk: UnsafePointer<UInt8>?
                    let n = nghttp2_session_mem_send(session, &chunk)
                    if n < 0 { throw .nghttp2("nghttp2_session_mem_send", n) }
                    if n == 0 { break }
                    out.append(contentsOf: UnsafeBufferPointer(start: chunk, count: n))
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
    func readAvailable() throws(ConnectionError) -> Bool {
        while true {
            let n = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return true }
                throw .io("read", errno)
            }
            if n == 0 { return false }
            let rv = readBuffer.withUnsafeBufferPointer { nghttp2_session_mem_recv(session, $0.baseAddress!, n) }
            if rv < 0 { throw .nghttp2("nghttp2_session_mem_recv", rv) }
            if n < readBuffer.count { return true }
        }
    }

    /// Ends every call in flight with `outcome` (connection lost or timed out) and stops using the connection.
    func abandon(_ outcome: CallOutcome) {
        for (_, s) in streams {
            completed.append(CompletedCall(tag: s.tag, startNanos: s.startNanos, outcome: outcome, grpcMessage: "", data: []))
        }
        streams.removeAll()
        isClosed = true
    }

    // MARK: nghttp2 callbacks (record only)

    private static func connection(_ userData: UnsafeMutableRawPointer?) -> H2Connection {
        Unmanaged<H2Connection>.fromOpaque(userData!).takeUnretainedValue()
    }

    private static let onHeader: nghttp2_on_header_callback = { _, frame, name, namelen, value, valuelen, _, userData in
        let me = connection(userData)
        let id = frame!.pointee.hd.stream_id
        guard me.streams[id] != nil else { return 0 }
        let n = UnsafeRawBufferPointer(start: name, count: namelen)
        let v = UnsafeRawBufferPointer(start: value, count: valuelen)
        if n.elementsEqual(":status".utf8) {
            me.streams[id]!.httpStatus = Int(String(decoding: v, as: UTF8.self)) ?? 0
        } else if n.elementsEqual("grpc-status".utf8) {
            me.streams[id]!.grpcStatus = Int(String(decoding: v, as: UTF8.self)) ?? 2
        } else if n.elementsEqual("grpc-message".utf8) {
            me.streams[id]!.grpcMessage = String(decoding: v, as: UTF8.self)
        }
        return 0
    }

    private static let onData: nghttp2_on_data_chunk_recv_callback = { _, _, id, data, len, userData in
        let me = connection(userData)
        guard me.streams[id] != nil else { return 0 }
        if me.streamingIDs.contains(id) {
            me.onStreamingData?(me.streams[id]!.tag, UnsafeRawBufferPointer(start: data, count: len))
            return 0
        }
        if me.streams[id]!.data.count + len > maxResponseBytes {
            me.streams[id]!.overflow = true
            return Int32(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        me.streams[id]!.data.append(contentsOf: UnsafeBufferPointer(start: data, count: len))
        return 0
    }

    /// Records a GOAWAY (the lowest last-stream-id wins: a graceful shutdown sends two).
    private static let onFrameRecv: nghttp2_on_frame_recv_callback = { _, frame, userData in
        let me = connection(userData)
        guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_GOAWAY.rawValue) else { return 0 }
        let last = frame.pointee.goaway.last_stream_id
        me.goawayLastStreamID = min(me.goawayLastStreamID ?? last, last)
        return 0
    }

    private static let onStreamClose: nghttp2_on_stream_close_callback = { _, id, errorCode, userData in
        let me = connection(userData)
        guard let s = me.streams.removeValue(forKey: id) else { return 0 }
        me.streamingIDs.remove(id)
        let outcome: CallOutcome
        if s.overflow {
            outcome = .reset(UInt32(NGHTTP2_INTERNAL_ERROR.rawValue))
        } else if let status = s.grpcStatus {
            outcome = .grpcStatus(status)
        } else if let last = me.goawayLastStreamID,
                  id > last || errorCode == NGHTTP2_REFUSED_STREAM.rawValue {
            // Not processed by the server: refused by its GOAWAY (nghttp2 closes these streams itself).
            outcome = .goaway
        } else if errorCode != 0 {
            outcome = .reset(errorCode)
        } else {
            outcome = .httpStatus(s.httpStatus)
        }
        let message = outcome == .goaway ? "stream \(id) refused (GOAWAY last stream \(me.goawayLastStreamID ?? 0))" : s.grpcMessage
        me.completed.append(CompletedCall(tag: s.tag, startNanos: s.startNanos, outcome: outcome,
                                          grpcMessage: message, data: s.data))
        return 0
    }

    private static let readBody: nghttp2_data_source_read_callback = { _, id, buf, length, flags, _, userData in
        let me = connection(userData)
        guard var s = me.streams[id] else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        let n = min(length, s.body.count - s.bodyOffset)
        if n > 0 {
            s.body.withUnsafeBytes { src in
                UnsafeMutableRawPointer(buf!).copyMemory(from: src.baseAddress! + s.bodyOffset, byteCount: n)
            }
        }
        s.bodyOffset += n
        if s.bodyOffset == s.body.count {
            flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            s.body = []
            s.bodyOffset = 0
        }
        me.streams[id] = s
        return n
    }

    // MARK: sockets

    private static func connect(_ target: String) throws(ConnectionError) -> Int32 {
        guard let colon = target.lastIndex(of: ":"), let port = UInt16(target[target.index(after: colon)...]) else {
            throw .badTarget(target)
        }
        var host = String(target[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
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
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype, a.pointee.ai_protocol)
            if fd >= 0 {
                if Glibc.connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 {
                    var one: Int32 = 1
                    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                    return fd
                }
                lastErrno = errno
                close(fd)
            } else {
                lastErrno = errno
            }
            ai = a.pointee.ai_next
        }
        throw .connect(target, lastErrno)
    }
}

/// Waits until some connection is readable (or writable, where it has output queued).
/// Returns, per connection, whether it should be read; empty on timeout.
func pollConnections(_ connections: [H2Connection], timeoutMillis: Int32) throws(ConnectionError) -> [Bool] {
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
