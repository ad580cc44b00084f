// The client side of HTTP/2 on an nghttp2 client session, bytes in and bytes
// out: no socket, no threads. `H2Connection` drives it over a TCP socket
// (loadgen, creditctl); the transport tests drive it by hand against an
// EmbeddedChannel. Knows nothing of credits or protobuf.
//
// Shape (as in nghttp2's examples): `receive` feeds bytes to
// nghttp2_session_mem_recv, whose callbacks only record headers, DATA and
// stream closes; the owner takes the finished calls (`takeCompleted`) and
// submits new ones; `outbound`/`nextOutput` drain nghttp2_session_mem_send.
// This file and H2Connection.swift are the only places in the client that
// touch C pointers.

import CNghttp2

/// A request header block packed once for nghttp2 (which copies it on submit),
/// so a caller that sends many calls on one path builds it once.
public final class H2HeaderBlock {
    let nva: UnsafeMutablePointer<nghttp2_nv>
    let count: Int
    private let storage: [UnsafeMutablePointer<UInt8>]

    /// `fields` in order: pseudo-headers first (RFC 9113 §8.3).
    public init(_ fields: [(String, String)]) {
        var storage: [UnsafeMutablePointer<UInt8>] = []
        nva = .allocate(capacity: max(1, fields.count))
        count = fields.count
        for (i, (name, value)) in fields.enumerated() {
            let n = Self.copy(name), v = Self.copy(value)
            storage += [n.0, v.0]
            (nva + i).initialize(to: nghttp2_nv(name: n.0, value: v.0, namelen: n.1, valuelen: v.1,
                                                flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue)))
        }
        self.storage = storage
    }

    /// The header block of a gRPC request: POST to `path`, then `extra` fields.
    public convenience init(grpcPath path: String, authority: String, scheme: String = "http",
                            extra: [(String, String)]) {
        self.init([(":method", "POST"), (":scheme", scheme), (":authority", authority), (":path", path),
                   ("content-type", "application/grpc"), ("te", "trailers")] + extra)
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

/// What the client has seen of one stream's response so far.
public struct H2Response: Sendable {
    public var streamID: Int32
    /// The caller's tag given at submit.
    public var tag: Int
    public var startNanos: UInt64
    /// Every header field (kept only with `Options.keepsHeaderFields`).
    public var headers: [(String, String)] = []
    /// Every trailer field (kept only with `Options.keepsHeaderFields`).
    public var trailers: [(String, String)] = []
    /// :status, 0 until the response headers arrive.
    public var httpStatus = 0
    /// grpc-status from the trailers or a trailers-only response.
    public var grpcStatus: Int?
    public var grpcMessage = ""
    /// The response DATA (length-prefixed gRPC messages), at most `Options.maxResponseBytes`.
    public var data: [UInt8] = []
    public var closed = false
    /// The HTTP/2 error code of an RST_STREAM (or a close with an error).
    public var resetCode: UInt32?
    /// More DATA arrived than `Options.maxResponseBytes`: the stream was reset by the client.
    public var overflow = false

    public init(streamID: Int32 = 0, tag: Int = 0, startNanos: UInt64 = 0) {
        self.streamID = streamID
        self.tag = tag
        self.startNanos = startNanos
    }

    public func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
    public func trailer(_ name: String) -> String? { trailers.first { $0.0 == name }?.1 }
    /// A trailer, or the header of that name in a trailers-only response.
    public func metadata(_ name: String) -> String? { trailer(name) ?? header(name) }

    /// The complete length-prefixed messages in the DATA received.
    public var messages: [[UInt8]] { GRPCFraming.messages(in: data) }

    /// The first response message, if the DATA holds a complete uncompressed one.
    public var firstMessage: ArraySlice<UInt8>? { GRPCFraming.firstMessage(in: data) }
}

/// An nghttp2 client session. Not thread-safe: owned by one thread.
public final class H2ClientSession {
    public struct Options: Sendable {
        /// SETTINGS_INITIAL_WINDOW_SIZE sent to the server.
        public var initialWindowBytes: UInt32 = 1 << 20
        /// The client's connection receive window (nil: the HTTP/2 default of 65 535).
        public var connectionWindowBytes: Int32?
        /// No WINDOW_UPDATE of the client's own: the owner grants window (`grantWindow`).
        public var manualWindow = false
        /// Keep every header and trailer field (not only :status, grpc-status, grpc-message).
        public var keepsHeaderFields = false
        /// A response with more DATA than this is reset and ends as `.reset(INTERNAL_ERROR)`.
        public var maxResponseBytes = 4 << 20

        public init() {}
    }

    private struct Body {
        var bytes: [UInt8]
        var offset = 0
        var end: Bool
    }

    public let options: Options
    private var session: OpaquePointer?
    private var open: [Int32: H2Response] = [:]
    private var bodies: [Int32: Body] = [:]
    private var completed: [CompletedCall] = []
    /// Server-streaming calls whose DATA goes to `onStreamingData` as it arrives instead of being kept.
    private var streamingIDs: Set<Int32> = []
    public var onStreamingData: ((Int, UnsafeRawBufferPointer) -> Void)?
    /// The last stream id of the server's GOAWAY, once one arrived (the lowest of several).
    public private(set) var goawayLastStreamID: Int32?
    public private(set) var pingAcks = 0

    /// Streams submitted and not yet closed.
    public var inFlight: Int { open.count }

    /// What each open stream has received so far.
    public var openResponses: [Int32: H2Response] { open }

    public init(options: Options = Options()) throws(ClientError) {
        self.options = options
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_header_callback(callbacks, Self.onHeader)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, Self.onData)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, Self.onStreamClose)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, Self.onFrameRecv)
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        defer { nghttp2_option_del(option) }
        if options.manualWindow { nghttp2_option_set_no_auto_window_update(option, 1) }
        let rc = nghttp2_session_client_new2(&session, callbacks, Unmanaged.passUnretained(self).toOpaque(), option)
        guard rc == 0 else { throw .nghttp2("nghttp2_session_client_new2", Int(rc)) }
        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                   value: options.initialWindowBytes),
        ]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        if let window = options.connectionWindowBytes {
            nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, window)
        }
    }

    deinit { nghttp2_session_del(session) }

    // MARK: submitting

    /// Opens a stream with `headers`; `body` is sent as DATA and, with
    /// `endStream`, the stream is half-closed after it (more with `send`).
    /// `streaming`: DATA of the response goes to `onStreamingData`.
    @discardableResult
    public func submit(headers: H2HeaderBlock, body: [UInt8], endStream: Bool = true, tag: Int = 0,
                       streaming: Bool = false, startNanos: UInt64 = monotonicNanos()) throws(ClientError) -> Int32 {
        let hasData = !body.isEmpty || !endStream
        let id: Int32
        if hasData {
            var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: Self.readBody)
            id = nghttp2_submit_request(session, nil, headers.nva, headers.count, &provider, nil)
        } else {
            id = nghttp2_submit_request(session, nil, headers.nva, headers.count, nil, nil)
        }
        guard id > 0 else { throw .nghttp2("nghttp2_submit_request", Int(id)) }
        open[id] = H2Response(streamID: id, tag: tag, startNanos: startNanos)
        if hasData { bodies[id] = Body(bytes: body, end: endStream) }
        if streaming { streamingIDs.insert(id) }
        return id
    }

    /// Appends request DATA to an open stream (`end` half-closes it after).
    public func send(streamID: Int32, _ bytes: [UInt8], end: Bool = false) {
        var body = bodies[streamID] ?? Body(bytes: [], end: false)
        body.bytes += bytes
        body.end = end
        bodies[streamID] = body
        nghttp2_session_resume_data(session, streamID)
    }

    public func reset(streamID: Int32, code: UInt32 = UInt32(NGHTTP2_CANCEL.rawValue)) {
        nghttp2_submit_rst_stream(session, 0, streamID, code)
    }

    /// Changes SETTINGS_INITIAL_WINDOW_SIZE (opens or closes every stream's window).
    public func setInitialWindow(_ bytes: UInt32) {
        var settings = [nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: bytes)]
        nghttp2_submit_settings(session, 0, &settings, 1)
    }

    /// WINDOW_UPDATE of `bytes` for `streamID` and for the connection.
    public func grantWindow(streamID: Int32, bytes: Int32) {
        nghttp2_submit_window_update(session, 0, streamID, bytes)
        nghttp2_submit_window_update(session, 0, 0, bytes)
    }

    /// What the server's window still lets this client send on `streamID`.
    public func streamSendWindow(_ streamID: Int32) -> Int {
        Int(nghttp2_session_get_stream_remote_window_size(session, streamID))
    }

    /// Request body bytes of `streamID` not sent yet.
    public func unsentBodyBytes(_ streamID: Int32) -> Int {
        guard let body = bodies[streamID] else { return 0 }
        return body.bytes.count - body.offset
    }

    public func ping() {
        nghttp2_submit_ping(session, 0, nil)
    }

    // MARK: bytes in and out

    /// Feeds bytes the server sent; the callbacks record what they carry.
    public func receive(_ bytes: UnsafeRawBufferPointer) throws(ClientError) {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        let rv = nghttp2_session_mem_recv(session, base, bytes.count)
        if rv < 0 { throw .nghttp2("nghttp2_session_mem_recv", rv) }
    }

    public func receive(_ bytes: [UInt8]) throws(ClientError) {
        let result = bytes.withUnsafeBytes { raw in Result { () throws(ClientError) in try receive(raw) } }
        try result.get()
    }

    /// The next chunk nghttp2 has to send (valid until the next call), or nil when it has none.
    public func nextOutput() throws(ClientError) -> UnsafeRawBufferPointer? {
        var chunk: UnsafePointer<UInt8>?
        let n = nghttp2_session_mem_send(session, &chunk)
        if n < 0 { throw .nghttp2("nghttp2_session_mem_send", n) }
        return n == 0 ? nil : UnsafeRawBufferPointer(start: chunk, count: n)
    }

    /// Everything nghttp2 has to send now.
    public func outbound() throws(ClientError) -> [UInt8] {
        var out: [UInt8] = []
        while let chunk = try nextOutput() { out.append(contentsOf: chunk) }
        return out
    }

    /// The calls finished since the last call of this method.
    public func takeCompleted() -> [CompletedCall] {
        defer { completed.removeAll(keepingCapacity: true) }
        return completed
    }

    /// Ends every call in flight with `outcome` (connection lost or timed out).
    public func abandonAll(_ outcome: CallOutcome) {
        for (_, r) in open.sorted(by: { $0.key < $1.key }) {
            completed.append(CompletedCall(response: r, outcome: outcome))
        }
        open.removeAll()
        bodies.removeAll()
        streamingIDs.removeAll()
    }

    // MARK: nghttp2 callbacks (record only)

    private static func me(_ userData: UnsafeMutableRawPointer?) -> H2ClientSession {
        Unmanaged<H2ClientSession>.fromOpaque(userData!).takeUnretainedValue()
    }

    private static let onHeader: nghttp2_on_header_callback = { _, frame, name, namelen, value, valuelen, _, userData in
        let me = me(userData)
        let id = frame!.pointee.hd.stream_id
        guard me.open[id] != nil else { return 0 }
        let n = UnsafeRawBufferPointer(start: name, count: namelen)
        let v = UnsafeRawBufferPointer(start: value, count: valuelen)
        if n.elementsEqual(":status".utf8) {
            me.open[id]!.httpStatus = Int(String(decoding: v, as: UTF8.self)) ?? 0
        } else if n.elementsEqual("grpc-status".utf8) {
            me.open[id]!.grpcStatus = Int(String(decoding: v, as: UTF8.self)) ?? 2
        } else if n.elementsEqual("grpc-message".utf8) {
            me.open[id]!.grpcMessage = String(decoding: v, as: UTF8.self)
        }
        if me.options.keepsHeaderFields {
            let pair = (String(decoding: n, as: UTF8.self), String(decoding: v, as: UTF8.self))
            if frame!.pointee.headers.cat == NGHTTP2_HCAT_HEADERS {
                me.open[id]!.trailers.append(pair)
            } else {
                me.open[id]!.headers.append(pair)
            }
        }
        return 0
    }

    private static let onData: nghttp2_on_data_chunk_recv_callback = { session, _, id, data, len, userData in
        let me = me(userData)
        guard me.open[id] != nil, !me.open[id]!.overflow else { return 0 }
        if me.streamingIDs.contains(id) {
            me.onStreamingData?(me.open[id]!.tag, UnsafeRawBufferPointer(start: data, count: len))
            return 0
        }
        if me.open[id]!.data.count + len > me.options.maxResponseBytes {
            // Cut off: the stream is reset and the call ends as .reset(INTERNAL_ERROR) once that is sent.
            me.open[id]!.overflow = true
            nghttp2_submit_rst_stream(session, 0, id, NGHTTP2_INTERNAL_ERROR.rawValue)
            return 0
        }
        me.open[id]!.data.append(contentsOf: UnsafeRawBufferPointer(start: data, count: len))
        return 0
    }

    /// Records GOAWAY (the lowest last-stream-id wins: a graceful shutdown sends two),
    /// PING acks and RST_STREAM codes.
    private static let onFrameRecv: nghttp2_on_frame_recv_callback = { _, frame, userData in
        let me = me(userData)
        guard let hd = frame?.pointee.hd else { return 0 }
        switch UInt32(hd.type) {
        case NGHTTP2_GOAWAY.rawValue:
            let last = frame!.pointee.goaway.last_stream_id
            me.goawayLastStreamID = min(me.goawayLastStreamID ?? last, last)
        case NGHTTP2_PING.rawValue where hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0:
            me.pingAcks += 1
        case NGHTTP2_RST_STREAM.rawValue where me.open[hd.stream_id] != nil:
            me.open[hd.stream_id]!.resetCode = frame!.pointee.rst_stream.error_code
        default:
            break
        }
        return 0
    }

    private static let onStreamClose: nghttp2_on_stream_close_callback = { _, id, errorCode, userData in
        let me = me(userData)
        guard var r = me.open.removeValue(forKey: id) else { return 0 }
        me.bodies[id] = nil
        me.streamingIDs.remove(id)
        r.closed = true
        if errorCode != 0 { r.resetCode = errorCode }
        let outcome: CallOutcome
        if r.overflow {
            outcome = .reset(UInt32(NGHTTP2_INTERNAL_ERROR.rawValue))
        } else if let status = r.grpcStatus {
            outcome = .grpcStatus(status)
        } else if let last = me.goawayLastStreamID,
                  id > last || errorCode == NGHTTP2_REFUSED_STREAM.rawValue {
            // Not processed by the server: refused by its GOAWAY (nghttp2 closes these streams itself).
            outcome = .goaway
            r.grpcMessage = "stream \(id) refused (GOAWAY last stream \(last))"
        } else if errorCode != 0 {
            outcome = .reset(errorCode)
        } else {
            outcome = .httpStatus(r.httpStatus)
        }
        me.completed.append(CompletedCall(response: r, outcome: outcome))
        return 0
    }

    private static let readBody: nghttp2_data_source_read_callback = { _, id, buf, length, flags, _, userData in
        let me = me(userData)
        guard var body = me.bodies[id] else { return Int(NGHTTP2_ERR_DEFERRED.rawValue) }
        let n = min(length, body.bytes.count - body.offset)
        if n > 0 {
            body.bytes.withUnsafeBytes { src in
                UnsafeMutableRawPointer(buf!).copyMemory(from: src.baseAddress! + body.offset, byteCount: n)
            }
        }
        body.offset += n
        if body.offset == body.bytes.count {
            if body.end {
                flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                me.bodies[id] = nil
                return n
            }
            if n == 0 {
                me.bodies[id] = body
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            }
        }
        me.bodies[id] = body
        return n
    }
}

/// nghttp2's text for one of its error codes.
func nghttp2ErrorString(_ rc: Int) -> String {
    String(cString: nghttp2_strerror(Int32(rc)))
}
