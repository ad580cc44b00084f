import CNghttp2
import NIOCore

/// A minimal HTTP/2 client on an nghttp2 client session, for driving the
/// server in tests by bytes: `outbound()` gives what to feed the server,
/// `receive` takes what the server wrote.
final class H2TestClient {
    struct Response {
        var headers: [(String, String)] = []
        var trailers: [(String, String)] = []
        var data: [UInt8] = []
        var closed = false
        var resetCode: UInt32?

        func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
        func trailer(_ name: String) -> String? { trailers.first { $0.0 == name }?.1 }
        /// grpc-status from the trailers, or from the headers of a trailers-only response.
        var grpcStatus: Int? { (trailer("grpc-status") ?? header("grpc-status")).flatMap(Int.init) }
        var grpcMessage: String? { trailer("grpc-message") ?? header("grpc-message") }

        /// The length-prefixed messages in the DATA received.
        var messages: [[UInt8]] {
            var out: [[UInt8]] = []
            var i = 0
            while i + 5 <= data.count {
                let n = Int(data[i + 1]) << 24 | Int(data[i + 2]) << 16 | Int(data[i + 3]) << 8 | Int(data[i + 4])
                guard i + 5 + n <= data.count else { break }
                out.append(Array(data[(i + 5)..<(i + 5 + n)]))
                i += 5 + n
            }
            return out
        }
    }

    private var session: OpaquePointer?
    private(set) var responses: [Int32: Response] = [:]
    private var bodies: [Int32: (bytes: [UInt8], offset: Int, end: Bool)] = [:]
    private(set) var goAwayReceived = false
    private(set) var pingAcks = 0
    private var inHeaders: Set<Int32> = []

    /// With `manualWindow` the client sends no WINDOW_UPDATE of its own: the
    /// test grants window with `grantWindow`.
    init(initialWindowBytes: UInt32 = 1 << 20, manualWindow: Bool = false) {
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, namelen, value, valuelen, _, userData in
            let me = Unmanaged<H2TestClient>.fromOpaque(userData!).takeUnretainedValue()
            let id = frame!.pointee.hd.stream_id
            let pair = (String(decoding: UnsafeRawBufferPointer(start: name, count: namelen), as: UTF8.self),
                        String(decoding: UnsafeRawBufferPointer(start: value, count: valuelen), as: UTF8.self))
            if frame!.pointee.headers.cat == NGHTTP2_HCAT_HEADERS {
                me.responses[id, default: Response()].trailers.append(pair)
            } else {
                me.responses[id, default: Response()].headers.append(pair)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, id, data, len, userData in
            let me = Unmanaged<H2TestClient>.fromOpaque(userData!).takeUnretainedValue()
            me.responses[id, default: Response()].data.append(contentsOf: UnsafeRawBufferPointer(start: data, count: len))
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, id, code, userData in
            let me = Unmanaged<H2TestClient>.fromOpaque(userData!).takeUnretainedValue()
            me.responses[id, default: Response()].closed = true
            if code != 0 { me.responses[id, default: Response()].resetCode = code }
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
            let me = Unmanaged<H2TestClient>.fromOpaque(userData!).takeUnretainedValue()
            let hd = frame!.pointee.hd
            if hd.type == UInt8(NGHTTP2_GOAWAY.rawValue) { me.goAwayReceived = true }
            if hd.type == UInt8(NGHTTP2_PING.rawValue), hd.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0 { me.pingAcks += 1 }
            if hd.type == UInt8(NGHTTP2_RST_STREAM.rawValue) {
                me.responses[hd.stream_id, default: Response()].resetCode = frame!.pointee.rst_stream.error_code
            }
            return 0
        }
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        defer { nghttp2_option_del(option) }
        if manualWindow { nghttp2_option_set_no_auto_window_update(option, 1) }
        nghttp2_session_client_new2(&session, callbacks, Unmanaged.passUnretained(self).toOpaque(), option)
        var settings = [nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: initialWindowBytes)]
        nghttp2_submit_settings(session, 0, &settings, 1)
    }

    deinit { nghttp2_session_del(session) }

    /// Opens a stream. `body` is sent as DATA; `endStream` half-closes after it.
    @discardableResult
    func request(path: String, headers extra: [(String, String)] = [], method: String = "POST",
                 contentType: String? = "application/grpc", body: [UInt8] = [], endStream: Bool = true) -> Int32 {
        var fields: [(String, String)] = [(":method", method), (":scheme", "http"), (":authority", "localhost"), (":path", path)]
        if let contentType { fields.append(("content-type", contentType)) }
        fields.append(("te", "trailers"))
        fields += extra
        let hasData = !body.isEmpty || !endStream
        let id: Int32 = withNV(fields) { nva, count in
            if hasData {
                var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: Self.read)
                return nghttp2_submit_request(session, nil, nva, count, &provider, nil)
            }
            return nghttp2_submit_request(session, nil, nva, count, nil, nil)
        }
        precondition(id > 0, "submit_request failed: \(id)")
        if hasData { bodies[id] = (body, 0, endStream) }
        return id
    }

    /// Appends more request DATA to an open stream.
    func send(streamID: Int32, _ bytes: [UInt8], end: Bool = false) {
        var body = bodies[streamID] ?? ([], 0, false)
        body.bytes += bytes
        body.end = end
        bodies[streamID] = body
        nghttp2_session_resume_data(session, streamID)
    }

    func reset(streamID: Int32, code: UInt32 = 8) {
        nghttp2_submit_rst_stream(session, 0, streamID, code)
    }

    /// Changes SETTINGS_INITIAL_WINDOW_SIZE (opens or closes every stream's window).
    func setInitialWindow(_ bytes: UInt32) {
        var settings = [nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: bytes)]
        nghttp2_submit_settings(session, 0, &settings, 1)
    }

    /// WINDOW_UPDATE of `bytes` for `streamID` and for the connection.
    func grantWindow(streamID: Int32, bytes: Int32) {
        nghttp2_submit_window_update(session, 0, streamID, bytes)
        nghttp2_submit_window_update(session, 0, 0, bytes)
    }

    /// What the server's window still lets this client send on `streamID`.
    func streamSendWindow(_ streamID: Int32) -> Int {
        Int(nghttp2_session_get_stream_remote_window_size(session, streamID))
    }

    /// Request body bytes of `streamID` not sent yet.
    func unsentBodyBytes(_ streamID: Int32) -> Int {
        guard let body = bodies[streamID] else { return 0 }
        return body.bytes.count - body.offset
    }

    func ping() {
        nghttp2_submit_ping(session, 0, nil)
    }

    func outbound() -> [UInt8] {
        var out: [UInt8] = []
        while true {
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n <= 0 { break }
            out.append(contentsOf: UnsafeRawBufferPointer(start: data, count: n))
        }
        return out
    }

    func receive(_ bytes: [UInt8]) {
        let rv = bytes.withUnsafeBufferPointer { nghttp2_session_mem_recv(session, $0.baseAddress, $0.count) }
        precondition(rv >= 0, "client could not parse server output: \(String(cString: nghttp2_strerror(Int32(rv))))")
    }

    private static let read: nghttp2_data_source_read_callback = { _, id, buf, length, flags, _, userData in
        let me = Unmanaged<H2TestClient>.fromOpaque(userData!).takeUnretainedValue()
        guard var body = me.bodies[id] else { return Int(NGHTTP2_ERR_DEFERRED.rawValue) }
        let n = min(length, body.bytes.count - body.offset)
        if n > 0 {
            body.bytes.withUnsafeBytes { src in
                UnsafeMutableRawPointer(buf!).copyMemory(from: src.baseAddress! + body.offset, byteCount: n)
            }
        }
        body.offset += n
        me.bodies[id] = body
        if body.offset == body.bytes.count {
            if body.end {
                flags!.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                me.bodies[id] = nil
            } else if n == 0 {
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            }
        }
        return n
    }

    private func withNV<R>(_ fields: [(String, String)], _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        var storage: [[UInt8]] = []
        for (n, v) in fields {
            storage.append(Array(n.utf8))
            storage.append(Array(v.utf8))
        }
        let pointers = storage.map { bytes -> UnsafeMutablePointer<UInt8> in
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, bytes.count))
            p.initialize(from: bytes, count: bytes.count)
            return p
        }
        defer { pointers.forEach { $0.deallocate() } }
        var nva: [nghttp2_nv] = []
        for i in 0..<fields.count {
            nva.append(nghttp2_nv(name: pointers[2 * i], value: pointers[2 * i + 1],
                                  namelen: storage[2 * i].count, valuelen: storage[2 * i + 1].count, flags: 0))
        }
        return nva.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
    }
}

/// Frames one gRPC message.
func grpcFrame(_ payload: [UInt8], compressed: Bool = false) -> [UInt8] {
    let n = UInt32(payload.count)
    return [compressed ? 1 : 0, UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + payload
}
