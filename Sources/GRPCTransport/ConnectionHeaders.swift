import CNghttp2
#if canImport(Glibc)
import Glibc
#endif
import NIOCore

// The connection's header job: request header blocks are assembled into a
// `RequestHead` as nghttp2 reports their fields (recognised from their bytes,
// bounded by the header-list limit), and the few values every call needs
// (content-type, :path) are read without making Strings where possible.

/// Request header names the transport looks at, recognised from their bytes
/// without making a String.
enum HeaderName {
    case method, path, contentType, grpcTimeout, grpcEncoding, grpcAcceptEncoding, requestID
    /// Pseudo-headers and headers the transport does not pass on (:scheme,
    /// :authority, te, user-agent, content-length, other grpc-*).
    case ignored
    /// Custom metadata for the handler.
    case custom

    init(_ name: UnsafeRawBufferPointer) {
        func equals(_ literal: StaticString) -> Bool {
            literal.utf8CodeUnitCount == name.count
                && memcmp(literal.utf8Start, name.baseAddress!, name.count) == 0
        }
        guard let first = name.first else {
            self = .ignored
            return
        }
        switch first {
        case UInt8(ascii: ":"):
            self = equals(":method") ? .method : equals(":path") ? .path : .ignored
        case UInt8(ascii: "c"):
            self = equals("content-type") ? .contentType : equals("content-length") ? .ignored : .custom
        case UInt8(ascii: "g"):
            if equals("grpc-timeout") { self = .grpcTimeout }
            else if equals("grpc-encoding") { self = .grpcEncoding }
            else if equals("grpc-accept-encoding") { self = .grpcAcceptEncoding }
            else if name.count >= 5 && memcmp("grpc-", name.baseAddress!, 5) == 0 { self = .ignored }
            else { self = .custom }
        case UInt8(ascii: "t"):
            self = equals("te") ? .ignored : .custom
        case UInt8(ascii: "u"):
            self = equals("user-agent") ? .ignored : .custom
        case UInt8(ascii: "x"):
            self = equals("x-request-id") ? .requestID : .custom
        default:
            self = .custom
        }
    }
}

/// The request head being assembled from HEADERS (+ CONTINUATION) fields.
struct RequestHead {
    var method: String?
    var path: String?
    /// nil when the request has no content-type.
    var isGRPCContentType: Bool?
    var timeout: String?
    var encoding: String?
    var acceptEncoding: String?
    /// The client's x-request-id, when valid (see `RequestID.isValid`).
    var requestID: String?
    var metadata = Metadata()
    var headerListBytes = 0
    var tooLarge = false
    var invalidMetadataName: String?
}
extension GRPCConnectionHandler {
    func sessionDidBeginHeaders(streamID: Int32) {
        // HTTP/2 never interleaves header blocks: one is assembled at a time.
        currentHeadStreamID = streamID
        currentHead = RequestHead()
    }

    func sessionDidReceiveHeader(streamID: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        guard streamID == currentHeadStreamID, !currentHead.tooLarge else { return }
        currentHead.headerListBytes += name.count + value.count + 32
        if currentHead.headerListBytes > configuration.limits.maxHeaderListBytes {
            currentHead.tooLarge = true
            currentHead.metadata = Metadata()
            return
        }
        switch HeaderName(name) {
        case .method: currentHead.method = String(decoding: value, as: UTF8.self)
        case .path: currentHead.path = internedPath(value)
        case .contentType: currentHead.isGRPCContentType = Self.isGRPCContentType(value)
        case .grpcTimeout: currentHead.timeout = String(decoding: value, as: UTF8.self)
        case .grpcEncoding: currentHead.encoding = String(decoding: value, as: UTF8.self)
        case .grpcAcceptEncoding: currentHead.acceptEncoding = String(decoding: value, as: UTF8.self)
        case .requestID: currentHead.requestID = RequestID.isValid(value) ? String(decoding: value, as: UTF8.self) : nil
        case .ignored: break
        case .custom:
            let key = String(decoding: name, as: UTF8.self)
            let text = String(decoding: value, as: UTF8.self)
            if key.hasSuffix("-bin") {
                if let decoded = Base64.decode(text) {
                    currentHead.metadata.append(Metadata.Entry(name: key, value: .binary(decoded)))
                } else if currentHead.invalidMetadataName == nil {
                    currentHead.invalidMetadataName = key
                }
            } else {
                currentHead.metadata.append(Metadata.Entry(name: key, value: .string(text)))
            }
        }
    }

    func sessionDidReceiveHeaderBlock(streamID: Int32, isRequest: Bool, endStream: Bool) {
        let head = streamID == currentHeadStreamID ? currentHead : nil
        currentHeadStreamID = 0
        events.append(.headerBlock(streamID: streamID, head: head, isRequest: isRequest, endStream: endStream))
    }

    /// "application/grpc" or "application/grpc+proto" (the only codec spoken
    /// here), in any case, optionally followed by parameters (";…", after
    /// optional white space). Any other codec ("+json", "+thrift") is not
    /// gRPC we can answer: HTTP 415. Compared on UTF-8 bytes: this runs for
    /// every call.
    static func isGRPCContentType<Bytes: Sequence<UInt8>>(_ value: Bytes) -> Bool {
        var bytes = value.makeIterator()
        func matches(_ expected: String.UTF8View) -> Bool {
            for e in expected {
                guard let b = bytes.next(), b | (b >= 0x41 && b <= 0x5A ? 0x20 : 0) == e else { return false }
            }
            return true
        }
        guard matches("application/grpc".utf8) else { return false }
        var next = bytes.next()
        if next == UInt8(ascii: "+") {
            guard matches("proto".utf8) else { return false }
            next = bytes.next()
        }
        while next == UInt8(ascii: " ") || next == UInt8(ascii: "\t") { next = bytes.next() }
        return next == nil || next == UInt8(ascii: ";")
    }

    /// The :path value as a String, the previous call's when the bytes are the same.
    func internedPath(_ value: UnsafeRawBufferPointer) -> String {
        guard let base = value.baseAddress, value.count > 0 else { return "" }
        let same = lastPath.utf8.count == value.count
            && lastPath.utf8.withContiguousStorageIfAvailable { memcmp($0.baseAddress!, base, value.count) == 0 } == true
        if !same { lastPath = String(decoding: value, as: UTF8.self) }
        return lastPath
    }
}
