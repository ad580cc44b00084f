import CNghttp2
#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// The limits a server session enforces, advertised in SETTINGS where HTTP/2
/// has a setting for them.
public struct HTTP2Limits: Sendable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    public var maxConcurrentStreams: Int = 256
    /// SETTINGS_MAX_HEADER_LIST_SIZE; also enforced while decoding (name +
    /// value + 32 per field, as RFC 9113 counts), since nghttp2 does not.
    public var maxHeaderListBytes: Int = 16 * 1024
    /// SETTINGS_INITIAL_WINDOW_SIZE for each stream.
    public var initialStreamWindowBytes: Int = 1 << 20
    /// The connection-level receive window.
    public var connectionWindowBytes: Int = 16 << 20
    /// SETTINGS_MAX_FRAME_SIZE.
    public var maxFrameBytes: Int = 16 * 1024
    /// Rapid reset protection (CVE-2023-44487): a burst of this many
    /// client-reset streams, refilled at `streamResetRatePerSecond`.
    public var streamResetBurst: UInt64 = 1000
    public var streamResetRatePerSecond: UInt64 = 33
    /// CONTINUATION flood protection (CVE-2024-28182).
    public var maxContinuations: Int = 8
    /// Outbound PING/SETTINGS ACK queue bound (ping and settings floods).
    public var maxOutboundAcks: Int = 1000
    /// Entries accepted in one SETTINGS frame.
    public var maxSettingsEntries: Int = 32

    public init() {}
}

/// A header block to submit: the two every unary OK call sends, built once
/// as static nghttp2_nv arrays (no copy), or any other list.
enum HeaderFields {
    /// `:status 200`, `content-type: application/grpc`, `grpc-accept-encoding`
    /// (static) and `x-request-id` (the one field copied).
    case grpcResponse(requestID: RequestIDValue)
    /// `grpc-status: 0`.
    case grpcOK
    case list([(String, String)])
}

/// nghttp2_nv arrays that live as long as the process, sent without copying.
final class StaticHeaderBlock: @unchecked Sendable {
    let nva: UnsafeMutablePointer<nghttp2_nv>
    let count: Int
    /// The same fields as Swift values (for in-memory calls, which record them).
    let fields: [(String, String)]

    init(_ fields: [(String, String)]) {
        count = fields.count
        self.fields = fields
        nva = .allocate(capacity: fields.count)
        for (i, (name, value)) in fields.enumerated() {
            precondition(name == name.lowercased(), "HTTP/2 header names are lowercase")
            let n = strdup(name)!, v = strdup(value)!
            nva[i] = nghttp2_nv(
                name: UnsafeMutableRawPointer(n).assumingMemoryBound(to: UInt8.self),
                value: UnsafeMutableRawPointer(v).assumingMemoryBound(to: UInt8.self),
                namelen: name.utf8.count, valuelen: value.utf8.count,
                flags: UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue | NGHTTP2_NV_FLAG_NO_COPY_VALUE.rawValue))
        }
    }

    /// The last field's value is a placeholder: each call's request id takes its place.
    static let grpcResponse = StaticHeaderBlock([
        (":status", "200"), ("content-type", "application/grpc"), ("grpc-accept-encoding", MessageEncoding.acceptHeader),
        ("x-request-id", "-"),
    ])
    static let grpcOK = StaticHeaderBlock([("grpc-status", "0")])
}

/// What the data source of a response stream has ready.
enum DataFill {
    /// `count` bytes were written; `endOfData` when nothing more will follow.
    /// With `trailers` the stream ends with a HEADERS frame carrying them;
    /// without, the last DATA frame carries END_STREAM.
    case bytes(count: Int, endOfData: Bool, trailers: HeaderFields?)
    /// Nothing ready yet; `resumeData` is called when there is.
    case deferred
}

/// Told, synchronously from inside nghttp2's callbacks, what arrived. It only
/// records; work happens after `receive` or `send` returns (STYLE: callbacks
/// record, work is dispatched after them).
protocol HTTP2SessionDelegate: AnyObject {
    func sessionDidBeginHeaders(streamID: Int32)
    /// One header field of the block being received.
    func sessionDidReceiveHeader(streamID: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)
    /// A complete HEADERS block. `isRequest` for the opening block of a stream.
    func sessionDidReceiveHeaderBlock(streamID: Int32, isRequest: Bool, endStream: Bool)
    func sessionDidReceiveData(streamID: Int32, bytes: UnsafeRawBufferPointer)
    /// END_STREAM on a DATA frame.
    func sessionDidReceiveEndStream(streamID: Int32)
    func sessionDidCloseStream(streamID: Int32, errorCode: UInt32)
    /// A frame carrying END_STREAM was sent on `streamID`.
    func sessionDidSendEndStream(streamID: Int32)
    func sessionFillData(streamID: Int32, into buffer: UnsafeMutableRawBufferPointer) -> DataFill
}

enum HTTP2SessionError: Error {
    /// nghttp2 refused the input (bad preface, flood, protocol error…); the
    /// session has queued a GOAWAY if it could.
    case fatal(code: Int32, reason: String)
}

/// One nghttp2 server session: the only place that touches nghttp2's
/// pointers. Confined to one event loop; owned by the connection handler,
/// which outlives it.
final class NGHTTP2Session {
    private var session: OpaquePointer?
    /// Unchecked: the handler owns the session and is its only caller, so
    /// the delegate is alive whenever nghttp2 calls back (measured: the
    /// checked `unowned` retain was 2% of the server's CPU per call).
    unowned(unsafe) let delegate: HTTP2SessionDelegate
    /// The second SETTINGS frame (the stream limit) is the one whose ACK is withheld.
    private var scanner = InboundFrameScanner(withheldAck: 2)

    init(delegate: HTTP2SessionDelegate, limits: HTTP2Limits) {
        self.delegate = delegate
        var callbacks: OpaquePointer?
        precondition(nghttp2_session_callbacks_new(&callbacks) == 0, "nghttp2 out of memory")
        defer { nghttp2_session_callbacks_del(callbacks) }
        Self.install(callbacks)

        var option: OpaquePointer?
        precondition(nghttp2_option_new(&option) == 0, "nghttp2 out of memory")
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_stream_reset_rate_limit(option, limits.streamResetBurst, limits.streamResetRatePerSecond)
        nghttp2_option_set_max_continuations(option, limits.maxContinuations)
        nghttp2_option_set_max_outbound_ack(option, limits.maxOutboundAcks)
        nghttp2_option_set_max_settings(option, limits.maxSettingsEntries)
        nghttp2_option_set_max_send_header_block_length(option, 64 * 1024)
        // Receive windows are given back by the connection (`consumeConnection`
        // at once, `consumeStream` once a call took the bytes): a paused call
        // holds its stream's window, so its sender stops (request flow control).
        nghttp2_option_set_no_auto_window_update(option, 1)

        let me = Unmanaged.passUnretained(self).toOpaque()
        precondition(nghttp2_session_server_new2(&session, callbacks, me, option) == 0, "nghttp2 out of memory")

        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: UInt32(limits.maxHeaderListBytes)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: UInt32(limits.initialStreamWindowBytes)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_FRAME_SIZE.rawValue), value: UInt32(limits.maxFrameBytes)),
        ]
        let rv = nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        precondition(rv == 0, "nghttp2_submit_settings: \(rv)")
        // The stream limit in a SETTINGS frame of its own, whose ACK the
        // scanner withholds: nghttp2 then refuses streams over it one by one
        // (REFUSED_STREAM) instead of ending the connection (see InboundFrameScanner).
        var streamLimit = nghttp2_settings_entry(
            settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: UInt32(limits.maxConcurrentStreams))
        let rv2 = nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &streamLimit, 1)
        precondition(rv2 == 0, "nghttp2_submit_settings: \(rv2)")
        if limits.connectionWindowBytes > 65_535 {
            _ = nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32(limits.connectionWindowBytes))
        }
    }

    deinit {
        nghttp2_session_del(session)
    }

    // MARK: Input and output

    /// Feeds received bytes to the session; the delegate hears of everything
    /// they contained before this returns.
    func receive(_ bytes: UnsafeRawBufferPointer) throws(HTTP2SessionError) {
        guard bytes.count > 0 else { return }
        let session = self.session
        let verdict = try scanner.scan(bytes) { run throws(HTTP2SessionError) in
            let rv = nghttp2_session_mem_recv(session, run.baseAddress!.assumingMemoryBound(to: UInt8.self), run.count)
            if rv < 0 {
                throw .fatal(code: Int32(rv), reason: String(cString: nghttp2_strerror(Int32(rv))))
            }
            precondition(rv == run.count, "nghttp2 consumed part of the input")
        }
        if verdict == .protocolError {
            _ = nghttp2_session_terminate_session(session, UInt32(NGHTTP2_PROTOCOL_ERROR.rawValue))
            throw .fatal(code: Int32(NGHTTP2_ERR_PROTO.rawValue), reason: "HEADERS on a stream id lower than one already used (RFC 9113 §5.1.1)")
        }
    }

    /// Appends what the session wants to send to `buffer`, until it has
    /// nothing more or `buffer` holds at least `limit` bytes. Returns true
    /// when it stopped at the limit (more may follow).
    func send(into buffer: inout ByteBuffer, limit: Int) throws(HTTP2SessionError) -> Bool {
        while buffer.readableBytes < limit {
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n < 0 {
                throw .fatal(code: Int32(n), reason: String(cString: nghttp2_strerror(Int32(n))))
            }
            if n == 0 { return false }
            // Valid only until the next call: copy now.
            buffer.writeBytes(UnsafeRawBufferPointer(start: data, count: n))
        }
        return true
    }

    var wantsReadOrWrite: Bool {
        nghttp2_session_want_read(session) != 0 || nghttp2_session_want_write(session) != 0
    }

    var wantsWrite: Bool { nghttp2_session_want_write(session) != 0 }

    // MARK: Submitting

    /// Response HEADERS. With `hasBody` a data source follows (DATA frames,
    /// then trailers or END_STREAM); without, the HEADERS end the stream.
    @discardableResult
    func submitResponse(streamID: Int32, headers: HeaderFields, hasBody: Bool) -> Bool {
        let rv: Int32 = withNV(headers) { nva, count in
            if hasBody {
                var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: Self.readCallback)
                return nghttp2_submit_response(session, streamID, nva, count, &provider)
            }
            return nghttp2_submit_response(session, streamID, nva, count, nil)
        }
        return rv == 0
    }

    /// Gives `bytes` of received DATA back to the connection's receive
    /// window (WINDOW_UPDATE on stream 0 once enough have been given back).
    func consumeConnection(_ bytes: Int) {
        guard bytes > 0 else { return }
        let rv = nghttp2_session_consume_connection(session, bytes)
        assert(rv == 0, "nghttp2_session_consume_connection: \(rv)")
    }

    /// Gives `bytes` of DATA received on `streamID` back to that stream's
    /// receive window. A stream nghttp2 has closed already is ignored.
    func consumeStream(_ streamID: Int32, _ bytes: Int) {
        guard bytes > 0 else { return }
        let rv = nghttp2_session_consume_stream(session, streamID, bytes)
        assert(rv == 0, "nghttp2_session_consume_stream: \(rv)")
    }

    /// Tells nghttp2 that a deferred data source has data again.
    func resumeData(streamID: Int32) {
        _ = nghttp2_session_resume_data(session, streamID)
    }

    func resetStream(streamID: Int32, errorCode: UInt32) {
        _ = nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID, errorCode)
    }

    /// Whether the client has half-closed `streamID` (or it is gone).
    func isRemoteClosed(streamID: Int32) -> Bool {
        nghttp2_session_get_stream_remote_close(session, streamID) != 0
    }

    /// First step of a graceful shutdown: GOAWAY with the highest stream id,
    /// telling the client to open no new streams.
    func submitShutdownNotice() {
        _ = nghttp2_submit_shutdown_notice(session)
    }

    /// The final GOAWAY: streams above the last one seen will not be processed.
    func submitGoAway(errorCode: UInt32 = 0) {
        let last = nghttp2_session_get_last_proc_stream_id(session)
        _ = nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), last, errorCode, nil, 0)
    }

    private func withNV<R>(_ fields: HeaderFields, _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        switch fields {
        case .grpcResponse(let requestID):
            // The static fields as they are; the request id's bytes are
            // copied by nghttp2 during the submit (no NO_COPY flag on it).
            let block = StaticHeaderBlock.grpcResponse
            return requestID.withBytes { idBytes in
                withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: block.count) { nva in
                    for i in 0..<block.count { nva[i] = block.nva[i] }
                    let last = block.count - 1
                    nva[last].value = idBytes.baseAddress.map { UnsafeMutablePointer(mutating: $0.assumingMemoryBound(to: UInt8.self)) }
                        ?? block.nva[last].value
                    nva[last].valuelen = idBytes.count
                    // Each value is new: not indexed in HPACK's dynamic table
                    // (it would only evict the fields that repeat).
                    nva[last].flags = UInt8(NGHTTP2_NV_FLAG_NO_COPY_NAME.rawValue | NGHTTP2_NV_FLAG_NO_INDEX.rawValue)
                    return body(UnsafePointer(nva.baseAddress!), block.count)
                }
            }
        case .grpcOK: return body(StaticHeaderBlock.grpcOK.nva, StaticHeaderBlock.grpcOK.count)
        case .list(let headers): return withNVArray(headers, body)
        }
    }

    /// Runs `body` with an nghttp2_nv array over `headers` (nghttp2 copies
    /// names and values during the submit call).
    private func withNVArray<R>(_ headers: [(String, String)], _ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        // One contiguous buffer of all names and values; nghttp2 copies them.
        var storage: [UInt8] = []
        var ranges: [(Int, Int, Int, Int)] = []
        storage.reserveCapacity(headers.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count })
        ranges.reserveCapacity(headers.count)
        for (name, value) in headers {
            let n0 = storage.count
            storage.append(contentsOf: name.utf8)
            let v0 = storage.count
            storage.append(contentsOf: value.utf8)
            ranges.append((n0, v0 - n0, v0, storage.count - v0))
        }
        return storage.withUnsafeMutableBufferPointer { bytes in
            let base = bytes.baseAddress ?? UnsafeMutablePointer<UInt8>.allocate(capacity: 0)
            var nva = zip(headers, ranges).map { header, r in
                nghttp2_nv(name: base + r.0, value: base + r.2, namelen: r.1, valuelen: r.3,
                           flags: UInt8(header.0 == "x-request-id" ? NGHTTP2_NV_FLAG_NO_INDEX.rawValue : NGHTTP2_NV_FLAG_NONE.rawValue))
            }
            return nva.withUnsafeMutableBufferPointer { body($0.baseAddress!, $0.count) }
        }
    }

    /// Trailers outside the data source's read callback, for a response whose
    /// queued DATA was dropped: the data source has nothing more to send (it
    /// answers "deferred" from now on), and closing the stream detaches it.
    func submitTrailersNow(streamID: Int32, _ trailers: HeaderFields) {
        submitTrailers(streamID: streamID, trailers)
    }

    private func submitTrailers(streamID: Int32, _ trailers: HeaderFields) {
        let rv = withNV(trailers) { nva, count in nghttp2_submit_trailer(session, streamID, nva, count) }
        assert(rv == 0, "nghttp2_submit_trailer: \(rv)")
    }

    // MARK: Callbacks

    private static func session(_ userData: UnsafeMutableRawPointer?) -> NGHTTP2Session {
        Unmanaged<NGHTTP2Session>.fromOpaque(userData!).takeUnretainedValue()
    }

    private static let readCallback: nghttp2_data_source_read_callback = { _, streamID, buf, length, dataFlags, _, userData in
        let me = NGHTTP2Session.session(userData)
        let target = UnsafeMutableRawBufferPointer(start: buf, count: length)
        switch me.delegate.sessionFillData(streamID: streamID, into: target) {
        case .deferred:
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        case .bytes(let count, let endOfData, let trailers):
            precondition(count <= length, "data source overfilled nghttp2's buffer")
            if endOfData {
                var flags = NGHTTP2_DATA_FLAG_EOF.rawValue
                if let trailers {
                    flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                    me.submitTrailers(streamID: streamID, trailers)
                }
                dataFlags!.pointee |= flags
            }
            return count
        }
    }

    private static func install(_ callbacks: OpaquePointer?) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
            let me = NGHTTP2Session.session(userData)
            let hd = frame!.pointee.hd
            if hd.type == UInt8(NGHTTP2_HEADERS.rawValue) {
                me.delegate.sessionDidBeginHeaders(streamID: hd.stream_id)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, namelen, value, valuelen, _, userData in
            let me = NGHTTP2Session.session(userData)
            let hd = frame!.pointee.hd
            guard hd.type == UInt8(NGHTTP2_HEADERS.rawValue) else { return 0 }
            // A block that grew too big is not an error for nghttp2: HPACK
            // decoding must stay in step, so the delegate drops the rest of
            // the fields itself and answers when the block ends.
            me.delegate.sessionDidReceiveHeader(
                streamID: hd.stream_id,
                name: UnsafeRawBufferPointer(start: name, count: namelen),
                value: UnsafeRawBufferPointer(start: value, count: valuelen))
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
            let me = NGHTTP2Session.session(userData)
            let hd = frame!.pointee.hd
            let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            switch UInt32(hd.type) {
            case NGHTTP2_HEADERS.rawValue:
                let isRequest = frame!.pointee.headers.cat == NGHTTP2_HCAT_REQUEST
                me.delegate.sessionDidReceiveHeaderBlock(streamID: hd.stream_id, isRequest: isRequest, endStream: endStream)
            case NGHTTP2_DATA.rawValue:
                if endStream { me.delegate.sessionDidReceiveEndStream(streamID: hd.stream_id) }
            default:
                break
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, len, userData in
            let me = NGHTTP2Session.session(userData)
            me.delegate.sessionDidReceiveData(streamID: streamID, bytes: UnsafeRawBufferPointer(start: data, count: len))
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, userData in
            let me = NGHTTP2Session.session(userData)
            me.delegate.sessionDidCloseStream(streamID: streamID, errorCode: errorCode)
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks) { _, frame, userData in
            let me = NGHTTP2Session.session(userData)
            let hd = frame!.pointee.hd
            if hd.stream_id != 0, hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0,
               hd.type == UInt8(NGHTTP2_HEADERS.rawValue) || hd.type == UInt8(NGHTTP2_DATA.rawValue) {
                me.delegate.sessionDidSendEndStream(streamID: hd.stream_id)
            }
            return 0
        }
    }
}
