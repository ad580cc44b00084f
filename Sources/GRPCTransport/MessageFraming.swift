import NIOCore

/// Errors in the length-prefixed message stream of a call.
public enum MessageFramingError: Error, Equatable, Sendable {
    /// The announced message length is above the receive limit.
    case messageTooLarge(length: Int, limit: Int)
    /// The compressed-flag byte is neither 0 nor 1.
    case invalidCompressedFlag(UInt8)
}

/// One gRPC message as it came off the wire.
public struct FramedMessage: Sendable, Equatable {
    public var compressed: Bool
    public var payload: ByteBuffer
}

/// Reassembles `Compressed-Flag(1) Message-Length(4, big endian) Message`
/// records from DATA payloads that may split or coalesce them in any way.
/// Never buffers more than one message plus its 5-byte prefix: the length is
/// checked against the limit before any of the message is kept.
public struct MessageDeframer {
    public static let prefixLength = 5
    private static let empty = ByteBufferAllocator().buffer(capacity: 0)

    public let maxMessageLength: Int
    private var buffer: ByteBuffer
    private var pending: (compressed: Bool, length: Int)?

    public init(maxMessageLength: Int, allocator: ByteBufferAllocator = ByteBufferAllocator()) {
        precondition(maxMessageLength > 0 && maxMessageLength <= Int(UInt32.max))
        self.maxMessageLength = maxMessageLength
        self.buffer = allocator.buffer(capacity: 0)
    }

    /// Bytes held for a message not yet complete.
    public var bufferedBytes: Int { buffer.readableBytes }

    /// True when some bytes of a message have arrived but not all of them.
    public var hasPartialMessage: Bool { pending != nil || buffer.readableBytes > 0 }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        buffer.writeBytes(bytes)
    }

    public mutating func append(_ bytes: ByteBuffer) {
        // Nothing held: keep the caller's buffer itself (no copy; the common
        // case of a whole message in one DATA frame).
        if buffer.readableBytes == 0 {
            buffer = bytes
            return
        }
        var bytes = bytes
        buffer.writeBuffer(&bytes)
    }

    /// The next complete message, or nil if more bytes are needed.
    public mutating func next() throws(MessageFramingError) -> FramedMessage? {
        if pending == nil {
            guard buffer.readableBytes >= Self.prefixLength else { return nil }
            let flag = buffer.readInteger(as: UInt8.self)!
            let length = Int(buffer.readInteger(endianness: .big, as: UInt32.self)!)
            guard flag <= 1 else { throw .invalidCompressedFlag(flag) }
            guard length <= maxMessageLength else {
                throw .messageTooLarge(length: length, limit: maxMessageLength)
            }
            pending = (flag == 1, length)
        }
        guard let header = pending, buffer.readableBytes >= header.length else { return nil }
        let payload = buffer.readSlice(length: header.length)!
        pending = nil
        if buffer.readableBytes == 0 {
            // Everything consumed: drop the storage so an idle stream holds
            // nothing (clear() would allocate a copy: the payload shares it).
            buffer = Self.empty
        } else if buffer.readerIndex > 65_536 {
            buffer.discardReadBytes()
        }
        return FramedMessage(compressed: header.compressed, payload: payload)
    }
}

/// Writes the 5-byte prefix and the message into one buffer.
public enum MessageFramer {
    public static func frame(_ payload: ByteBuffer, compressed: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload = payload
        var out = allocator.buffer(capacity: MessageDeframer.prefixLength + payload.readableBytes)
        out.writeInteger(compressed ? UInt8(1) : UInt8(0))
        out.writeInteger(UInt32(payload.readableBytes), endianness: .big)
        out.writeBuffer(&payload)
        return out
    }

    /// Frames a message written in place by `body` after a reserved prefix:
    /// no intermediate copy of the message.
    public static func frame(allocator: ByteBufferAllocator, capacity: Int, _ body: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var out = allocator.buffer(capacity: MessageDeframer.prefixLength + capacity)
        out.writeInteger(UInt8(0))
        out.writeInteger(UInt32(0), endianness: .big)
        body(&out)
        let length = out.readableBytes - MessageDeframer.prefixLength
        precondition(length >= 0 && length <= Int(UInt32.max))
        out.setInteger(UInt32(length), at: out.readerIndex + 1, endianness: .big)
        return out
    }
}
