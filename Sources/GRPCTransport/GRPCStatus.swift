/// The gRPC status codes (grpc/doc/statuscodes.md). Values are the wire values.
public enum GRPCStatusCode: Int, Sendable, CaseIterable, CustomStringConvertible {
    case ok = 0
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case internalError = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16

    /// The canonical UPPER_SNAKE name, as in google.rpc.Code.
    public var description: String {
        switch self {
        case .ok: return "OK"
        case .cancelled: return "CANCELLED"
        case .unknown: return "UNKNOWN"
        case .invalidArgument: return "INVALID_ARGUMENT"
        case .deadlineExceeded: return "DEADLINE_EXCEEDED"
        case .notFound: return "NOT_FOUND"
        case .alreadyExists: return "ALREADY_EXISTS"
        case .permissionDenied: return "PERMISSION_DENIED"
        case .resourceExhausted: return "RESOURCE_EXHAUSTED"
        case .failedPrecondition: return "FAILED_PRECONDITION"
        case .aborted: return "ABORTED"
        case .outOfRange: return "OUT_OF_RANGE"
        case .unimplemented: return "UNIMPLEMENTED"
        case .internalError: return "INTERNAL"
        case .unavailable: return "UNAVAILABLE"
        case .dataLoss: return "DATA_LOSS"
        case .unauthenticated: return "UNAUTHENTICATED"
        }
    }
}

/// The outcome of a call: a code, a message for people, and optionally the
/// serialized `google.rpc.Status` sent as `grpc-status-details-bin`. The
/// transport does not look inside `details`; the service layer builds them.
public struct GRPCStatus: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: GRPCStatusCode
    public var message: String
    public var details: [UInt8]?

    public init(_ code: GRPCStatusCode, _ message: String = "", details: [UInt8]? = nil) {
        self.code = code
        self.message = message
        self.details = details
    }

    public static let ok = GRPCStatus(.ok)

    public var description: String {
        message.isEmpty ? "\(code)" : "\(code): \(message)"
    }
}

extension GRPCStatus {
    /// Status messages often quote client input (a path, a name): this many
    /// UTF-8 bytes at most go into `grpc-message`, so the trailers stay
    /// within every client's metadata limit (grpcio: 8 KiB).
    public static let maxMessageBytes = 1024

    /// `text` cut to at most `maxBytes` UTF-8 bytes at a scalar boundary,
    /// ending in "…" when cut.
    public static func bounded(_ text: String, maxBytes: Int = maxMessageBytes) -> String {
        precondition(maxBytes >= 3)
        guard text.utf8.count > maxBytes else { return text }
        var out = ""
        var bytes = 0
        for scalar in text.unicodeScalars {
            let n = UTF8.width(scalar)
            guard bytes + n <= maxBytes - 3 else { break }
            out.unicodeScalars.append(scalar)
            bytes += n
        }
        return out + "…"
    }
}
