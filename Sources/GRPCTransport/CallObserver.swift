/// Told of connections and of every gRPC call's end, for metrics and
/// access logs. The transport stays free of what is done with it.
public protocol GRPCCallObserver: Sendable {
    /// A connection opened. The returned observer is used for that
    /// connection's calls only, on its event loop only (it may cache
    /// without locks).
    func connectionOpened(peer: String) -> GRPCConnectionObserver
}

/// The observer of one connection's calls; event-loop bound.
public protocol GRPCConnectionObserver: AnyObject {
    /// Whether `EndedCall.attributes` are read: when false, `ServerCall.annotate`
    /// keeps nothing (no allocation per call).
    var wantsAttributes: Bool { get }
    /// A call began (its stream is open).
    func callStarted()
    /// A call ended: its stream closed, or it was answered before a call
    /// existed (unknown method, malformed head). Once per `callStarted`.
    func callEnded(_ call: EndedCall)
    func connectionClosed()
}

/// What one call was and how it ended.
public struct EndedCall {
    /// `/package.Service/Method` as the client sent it (bounded by the header list limit).
    public var path: String
    /// The path is one of the router's methods (else: unimplemented, or a malformed head).
    public var isRoutedMethod: Bool
    /// The status sent; CANCELLED when the stream closed (client reset,
    /// connection lost) before the call finished.
    public var code: GRPCStatusCode
    /// From the call's start (its request HEADERS) to its end.
    public var durationNanos: UInt64
    /// Made into a String only when read (metrics never do).
    public var requestID: String { requestIDValue.string }
    let requestIDValue: RequestIDValue
    public var peer: String
    /// Set by handlers with `ServerCall.annotate` (e.g. tenant, reason).
    public var attributes: [(key: String, value: String)]
}

/// Request ids: a valid `x-request-id` of the client is kept; otherwise
/// one is made from the connection's random prefix and the stream id.
enum RequestID {
    static let maxLength = 128

    /// 1…128 visible ASCII characters (no space, no control bytes).
    static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard !bytes.isEmpty, bytes.count <= maxLength else { return false }
        for b in bytes where b < 0x21 || b > 0x7E { return false }
        return true
    }

    /// 16 hex digits from the system's random source, one per connection.
    static func connectionPrefix() -> String {
        var generator = SystemRandomNumberGenerator()
        let hex = String(generator.next() as UInt64, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    static func make(prefix: String, streamID: Int32) -> String {
        prefix + "-" + String(streamID, radix: 16)
    }

    /// Runs `body` with the bytes of `make(prefix:streamID:)`, formatted on
    /// the stack (no String, no allocation: the per-call header path).
    static func withBytes<R>(prefix: String, streamID: Int32, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        var prefix = prefix
        return prefix.withUTF8 { head in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: head.count + 9) { out in
                var n = 0
                for b in head { out[n] = b; n += 1 }
                out[n] = UInt8(ascii: "-"); n += 1
                let value = UInt32(bitPattern: streamID)
                var shift = 28
                while shift > 0 && (value >> UInt32(shift)) & 0xF == 0 { shift -= 4 }
                while shift >= 0 {
                    let d = UInt8((value >> UInt32(shift)) & 0xF)
                    out[n] = d < 10 ? UInt8(ascii: "0") + d : UInt8(ascii: "a") + d - 10; n += 1
                    shift -= 4
                }
                return body(UnsafeRawBufferPointer(start: out.baseAddress, count: n))
            }
        }
    }
}

/// A call's request id as the response-header path needs it.
enum RequestIDValue {
    /// The client's own (valid) x-request-id.
    case given(String)
    /// One to make from the connection's prefix and the stream id.
    case made(prefix: String, streamID: Int32)

    var string: String {
        switch self {
        case .given(let id): return id
        case .made(let prefix, let streamID): return RequestID.make(prefix: prefix, streamID: streamID)
        }
    }

    func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        switch self {
        case .given(var id): return id.withUTF8 { body(UnsafeRawBufferPointer($0)) }
        case .made(let prefix, let streamID): return RequestID.withBytes(prefix: prefix, streamID: streamID, body)
        }
    }
}
