import CompressNIO
import NIOCore

/// The message encodings this server speaks (`grpc-encoding`).
public enum MessageEncoding: String, Sendable, CaseIterable {
    case identity
    case gzip

    /// The `grpc-accept-encoding` value we send.
    public static let acceptHeader = "identity,gzip"

    /// An encoding name from a header; nil when we do not support it.
    public init?(headerValue: String) {
        switch headerValue.trimmingASCIISpaces().lowercased() {
        case "identity": self = .identity
        case "gzip": self = .gzip
        default: return nil
        }
    }

    /// Whether a `grpc-accept-encoding` list names this encoding.
    public static func list(_ header: String, contains encoding: MessageEncoding) -> Bool {
        header.split(separator: ",").contains { $0.trimmingASCIISpaces().lowercased() == encoding.rawValue }
    }
}

enum CompressionError: Error {
    case corrupt
    case tooLarge(limit: Int)
}

enum MessageCompression {
    /// Decompresses a gzip message, refusing to produce more than `limit` bytes
    /// (a small compressed message can expand enormously).
    static func gunzip(_ payload: ByteBuffer, limit: Int, allocator: ByteBufferAllocator) throws(CompressionError) -> ByteBuffer {
        var input = payload
        do {
            // maxSize is inclusive of the limit; one more byte tells "too large".
            let out = try input.decompress(with: .gzip(), maxSize: limit + 1, allocator: allocator)
            if out.readableBytes > limit { throw CompressionError.tooLarge(limit: limit) }
            return out
        } catch let error as CompressionError {
            throw error
        } catch let error as CompressNIOError where error == .bufferOverflow {
            throw .tooLarge(limit: limit)
        } catch {
            throw .corrupt
        }
    }

    static func gzip(_ payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer? {
        var input = payload
        return try? input.compress(with: .gzip(), allocator: allocator)
    }
}

extension StringProtocol {
    func trimmingASCIISpaces() -> Substring {
        var s = Substring(self)
        while let first = s.first, first == " " || first == "\t" { s = s.dropFirst() }
        while let last = s.last, last == " " || last == "\t" { s = s.dropLast() }
        return s
    }
}
