// Plain values of the gRPC client: how a call ended, a finished call, the
// length-prefixed message framing, and the client's errors.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How one call ended, as seen by the client.
public enum CallOutcome: Equatable, Sendable {
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

    public var isOK: Bool { self == .grpcStatus(0) }

    /// A stable label for reports: the gRPC status name, or a transport failure.
    public var label: String {
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

/// The canonical name of a gRPC status code ("NOT_FOUND"), or "STATUS_<n>".
public func grpcStatusName(_ code: Int) -> String {
    grpcStatusNames.indices.contains(code) ? grpcStatusNames[code] : "STATUS_\(code)"
}

/// The gRPC status names by code (0 ... 16).
public let grpcStatusNames = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                              "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                              "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                              "UNAUTHENTICATED"]

/// One finished call.
public struct CompletedCall: Sendable {
    /// What was received on the stream (headers and trailers only with `keepsHeaderFields`).
    public var response: H2Response
    public var outcome: CallOutcome

    public init(response: H2Response, outcome: CallOutcome) {
        self.response = response
        self.outcome = outcome
    }

    /// A call that ended without a stream's answer (e.g. it could not be submitted).
    public init(tag: Int, startNanos: UInt64, outcome: CallOutcome, grpcMessage: String, data: [UInt8]) {
        var response = H2Response(streamID: 0, tag: tag, startNanos: startNanos)
        response.grpcMessage = grpcMessage
        response.data = data
        self.init(response: response, outcome: outcome)
    }

    /// The caller's tag given at submit.
    public var tag: Int { response.tag }
    public var startNanos: UInt64 { response.startNanos }
    public var grpcMessage: String { response.grpcMessage }
    /// The response DATA (length-prefixed gRPC messages).
    public var data: [UInt8] { response.data }
    /// The first response message, if the DATA holds a complete uncompressed one.
    public var firstMessage: ArraySlice<UInt8>? { response.firstMessage }
}

/// gRPC's length-prefixed messages: 1 byte compressed flag, 4 bytes big-endian length, the bytes.
public enum GRPCFraming {
    /// Frames one message (uncompressed unless `compressed`).
    public static func frame(_ payload: [UInt8], compressed: Bool = false) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(5 + payload.count)
        let n = UInt32(payload.count)
        out += [compressed ? 1 : 0, UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)]
        out += payload
        return out
    }

    /// The complete messages in `data`, in order (a cut-off last one is left out).
    public static func messages(in data: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var i = 0
        while i + 5 <= data.count {
            let n = length(data, at: i)
            guard i + 5 + n <= data.count else { break }
            out.append(Array(data[(i + 5)..<(i + 5 + n)]))
            i += 5 + n
        }
        return out
    }

    /// The first message, if `data` holds a complete uncompressed one.
    public static func firstMessage(in data: [UInt8]) -> ArraySlice<UInt8>? {
        guard data.count >= 5, data[0] == 0 else { return nil }
        let n = length(data, at: 0)
        guard data.count >= 5 + n else { return nil }
        return data[5..<(5 + n)]
    }

    private static func length(_ data: [UInt8], at i: Int) -> Int {
        Int(data[i + 1]) << 24 | Int(data[i + 2]) << 16 | Int(data[i + 3]) << 8 | Int(data[i + 4])
    }
}

/// Why the client could not talk to the server.
public enum ClientError: Error, CustomStringConvertible, Equatable {
    case badTarget(String)
    case resolve(String, Int32)
    case connect(String, Int32)
    case io(String, Int32)
    case nghttp2(String, Int)

    public var description: String {
        switch self {
        case .badTarget(let t): return "bad target '\(t)' (want host:port)"
        case .resolve(let t, let rc): return "cannot resolve \(t): \(String(cString: gai_strerror(rc)))"
        case .connect(let t, let e): return "cannot connect to \(t): \(String(cString: strerror(e)))"
        case .io(let what, let e): return "\(what): \(String(cString: strerror(e)))"
        case .nghttp2(let what, let rc): return "\(what): \(nghttp2ErrorString(rc))"
        }
    }
}

/// Monotonic clock in nanoseconds.
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
