// The runtime under the generated message types (Generated/*.swift): encoding
// and decoding through protobuf-c. This file is the only place in the codebase
// that touches protobuf-c pointers.
//
// Decoding: protobuf_c_message_unpack builds the C message tree; ProtoReader
// copies every field into the Swift value; the tree is discarded.
// Encoding: ProtoWriter builds a C message tree from the Swift value;
// protobuf_c_message_get_packed_size / protobuf_c_message_pack serialize it.
//
// Both C trees live in a ProtoArena: a 1 KiB stack buffer, then malloc'd chunks,
// all released in one go (unpack is given the arena as its ProtobufCAllocator),
// so a small message costs no malloc at all and nothing is freed field by field.
// Generated code addresses a field by its index in the descriptor's `fields`
// array (sorted by number; checked once per type by ProtoDescriptor).

import CProtobufC
import CreditsProtoC
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Public API

/// A protobuf message as a plain Swift value (generated from a .proto).
public protocol ProtoMessage: Sendable, Equatable {
    /// The message with every field at its proto3 default.
    init()
    /// The full proto name, e.g. "google.rpc.ErrorInfo".
    static var protoMessageName: String { get }

    // Implementation hooks, generated; not for direct use.
    static var _protoDescriptor: ProtoDescriptor { get }
    init(_protoReader reader: ProtoReader)
    func _protoWrite(to writer: ProtoWriter)
}

/// A protobuf enum: open (unknown values are kept in `rawValue`).
public protocol ProtoEnum: RawRepresentable, Sendable, Hashable, CustomStringConvertible where RawValue == Int32 {
    /// The zero value.
    init()
    init(rawValue: Int32)
    /// The full proto name, e.g. "grpc.health.v1.HealthCheckResponse.ServingStatus".
    static var protoEnumName: String { get }
    /// Every value declared in the .proto.
    static var allKnown: [Self] { get }
    /// The value's name in the .proto, or nil if the value is unknown.
    var name: String? { get }
}

extension ProtoEnum {
    public var description: String { name ?? String(rawValue) }
}

public enum ProtoDecodingError: Error, Equatable, Sendable {
    /// The bytes are not a valid encoding of the message (protobuf-c's unpack failed).
    case malformed
    /// Well formed, but string fields hold what a proto3 string may not
    /// (invalid UTF-8) or what protobuf-c's NUL-terminated strings cannot
    /// carry (U+0000): every such field, in wire order.
    case invalidStrings([ProtoStringViolation])
}

/// A string field of a decoded message whose bytes are not acceptable.
public struct ProtoStringViolation: Equatable, Sendable {
    public enum Problem: Equatable, Sendable {
        case containsNUL
        case invalidUTF8
    }
    /// The field path with proto field names: `client_id`,
    /// `scope.centers[1]`, `package.name`.
    public var field: String
    public var problem: Problem

    public init(field: String, problem: Problem) {
        self.field = field
        self.problem = problem
    }

    public var description: String {
        switch problem {
        case .containsNUL: return "must not contain U+0000 (NUL)"
        case .invalidUTF8: return "is not valid UTF-8"
        }
    }
}

extension ProtoMessage {
    /// Decodes the message from its protobuf encoding.
    /// Strings are exact: a string field with U+0000 or invalid UTF-8 is
    /// refused (`.invalidStrings`), never truncated or replaced.
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(ProtoDecodingError) {
        self = try _protoDecodeChecked(Self.self, bytes)
    }

    /// Decodes the message from its protobuf encoding ([UInt8], ArraySlice, Data, ...).
    public init<Bytes: Sequence>(serializedBytes bytes: Bytes) throws(ProtoDecodingError) where Bytes.Element == UInt8 {
        let decoded: Result<Self, ProtoDecodingError>
        if let result = bytes.withContiguousStorageIfAvailable({ raw in
            Result { () throws(ProtoDecodingError) in try _protoDecodeChecked(Self.self, UnsafeRawBufferPointer(raw)) }
        }) {
            decoded = result
        } else {
            decoded = Array(bytes).withUnsafeBytes { raw in
                Result { () throws(ProtoDecodingError) in try _protoDecodeChecked(Self.self, raw) }
            }
        }
        self = try decoded.get()
    }

    /// Decodes the message from the readable bytes of `buffer` (which is not consumed).
    public init(buffer: ByteBuffer) throws(ProtoDecodingError) {
        let decoded = buffer.withUnsafeReadableBytes { raw in
            Result { () throws(ProtoDecodingError) in try _protoDecodeChecked(Self.self, raw) }
        }
        self = try decoded.get()
    }

    /// The protobuf encoding of the message.
    public func serializedBytes() -> [UInt8] {
        _protoWithCMessage(self) { message in
            let size = protobuf_c_message_get_packed_size(message)
            guard size > 0 else { return [] }
            return [UInt8](unsafeUninitializedCapacity: size) { out, count in
                count = protobuf_c_message_pack(message, out.baseAddress!)
                precondition(count == size, "protobuf-c packed \(count) bytes, expected \(size)")
            }
        }
    }

    /// Appends the protobuf encoding of the message to `buffer`, packing it in
    /// place (the exact size is reserved first). Returns the number of bytes written.
    @discardableResult
    public func serialize(into buffer: inout ByteBuffer) -> Int {
        _protoWithCMessage(self) { message in
            let size = protobuf_c_message_get_packed_size(message)
            guard size > 0 else { return 0 }
            return buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
                let written = protobuf_c_message_pack(message, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
                precondition(written == size, "protobuf-c packed \(written) bytes, expected \(size)")
                return written
            }
        }
    }

    /// The size of the protobuf encoding (costs about as much as encoding).
    public var serializedSize: Int {
        _protoWithCMessage(self) { protobuf_c_message_get_packed_size($0) }
    }

    /// `Self()` modified by `body`: `let r = Req.with { $0.name = "x" }`.
    public static func with(_ body: (inout Self) throws -> Void) rethrows -> Self {
        var message = Self()
        try body(&message)
        return message
    }
}

/// A method of a gRPC service, typed by its request and response messages.
public struct ProtoMethod<Request: ProtoMessage, Response: ProtoMessage>: Sendable {
    public let service: String
    public let name: String
    public let clientStreaming: Bool
    public let serverStreaming: Bool
    /// "/package.Service/Method", the HTTP/2 :path.
    public let path: String

    public init(service: String, name: String, clientStreaming: Bool, serverStreaming: Bool) {
        self.service = service
        self.name = name
        self.clientStreaming = clientStreaming
        self.serverStreaming = serverStreaming
        self.path = "/\(service)/\(name)"
    }

    /// The method without its types.
    public var info: ProtoMethodInfo {
        ProtoMethodInfo(service: service, name: name, path: path, clientStreaming: clientStreaming,
                        serverStreaming: serverStreaming, requestType: Request.protoMessageName,
                        responseType: Response.protoMessageName)
    }
}

/// A method of a gRPC service, untyped (see `ProtoMethod`).
public struct ProtoMethodInfo: Sendable, Hashable {
    public let service: String
    public let name: String
    public let path: String
    public let clientStreaming: Bool
    public let serverStreaming: Bool
    /// Full proto names of the request and response messages.
    public let requestType: String
    public let responseType: String
}

/// Every generated message type, and the FileDescriptorSet of every .proto.
public enum ProtoRegistry {
    /// Every generated message type (map entries excepted), sorted by full name.
    public static var allMessageTypes: [any ProtoMessage.Type] { _generatedMessageTypes }

    /// The generated type for a full proto name ("google.rpc.ErrorInfo").
    public static func messageType(named fullName: String) -> (any ProtoMessage.Type)? {
        byName[fullName]
    }

    private static let byName: [String: any ProtoMessage.Type] = {
        var types: [String: any ProtoMessage.Type] = [:]
        for type in _generatedMessageTypes { types[type.protoMessageName] = type }
        return types
    }()

    /// The serialized google.protobuf.FileDescriptorSet of our .proto files and
    /// their imports (for gRPC server reflection).
    public static let fileDescriptorSet: [UInt8] = {
        var length = 0
        guard let bytes = credits_descriptor_set(&length) else { return [] }
        return Array(UnsafeBufferPointer(start: bytes, count: length))
    }()

    /// Decodes `any` as whichever generated type its type URL names; nil if
    /// no generated type has that name.
    public static func unpack(_ any: Google_Protobuf_Any) throws(ProtoDecodingError) -> (any ProtoMessage)? {
        guard let type = messageType(named: String(any.typeName)) else { return nil }
        return try type.init(serializedBytes: any.value)
    }
}

extension Google_Protobuf_Any {
    public static let defaultTypeURLPrefix = "type.googleapis.com"

    /// Packs `message`: type URL "type.googleapis.com/<full name>", value its encoding.
    public init<M: ProtoMessage>(packing message: M, typeURLPrefix: String = Google_Protobuf_Any.defaultTypeURLPrefix) {
        self.init()
        typeURL = typeURLPrefix + "/" + M.protoMessageName
        value = message.serializedBytes()
    }

    /// The full message name in the type URL (what follows its last "/").
    public var typeName: Substring {
        guard let slash = typeURL.lastIndex(of: "/") else { return typeURL[...] }
        return typeURL[typeURL.index(after: slash)...]
    }

    /// Whether the type URL names `M`.
    public func isA<M: ProtoMessage>(_ type: M.Type) -> Bool {
        typeName == M.protoMessageName
    }

    /// The packed message if the type URL names `M`, else nil; throws if the
    /// type matches but the value is malformed.
    public func unpack<M: ProtoMessage>(_ type: M.Type) throws(ProtoDecodingError) -> M? {
        guard isA(type) else { return nil }
        return try M(serializedBytes: value)
    }
}

/// protoc-c's descriptor of a message type (opaque outside this module).
public struct ProtoDescriptor: @unchecked Sendable {
    let c: UnsafePointer<ProtobufCMessageDescriptor>

    /// `fieldNumbers` are the generated code's view of the message; they must
    /// match the descriptor's number-sorted fields, which the code indexes.
    init(_ c: UnsafePointer<ProtobufCMessageDescriptor>?, fieldNumbers: [UInt32]) {
        guard let c else { fatalError("CreditsProto: missing protobuf-c descriptor") }
        let d = c.pointee
        precondition(d.magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "CreditsProto: not a message descriptor")
        var matches = Int(d.n_fields) == fieldNumbers.count
        if matches {
            for i in 0..<fieldNumbers.count where d.fields[i].id != fieldNumbers[i] { matches = false }
        }
        precondition(matches, "CreditsProto: \(String(cString: d.name)): protobuf-c fields do not match the generated code; run tools/gen-proto")
        self.c = c
    }

    /// The message's full proto name.
    public var fullName: String { String(cString: c.pointee.name) }
}

// MARK: - Reading a C message

/// Reads the fields of an unpacked protobuf-c message (generated code only).
public struct ProtoReader {
    let base: UnsafeRawPointer
    let fields: UnsafePointer<ProtobufCFieldDescriptor>

    init(_ message: UnsafeRawPointer) {
        base = message
        // ProtobufCMessage starts with its descriptor.
        fields = _protoFields(message.load(as: UnsafePointer<ProtobufCMessageDescriptor>.self))
    }

    @inline(__always)
    func value<T: _ProtoCValue>(_ i: Int) -> T {
        T._protoLoad(base + Int(fields[i].offset))
    }

    @inline(__always)
    func message<T: ProtoMessage>(_ i: Int) -> T? {
        guard let p = base.load(fromByteOffset: Int(fields[i].offset), as: UnsafeRawPointer?.self) else { return nil }
        return T(_protoReader: ProtoReader(p))
    }

    func repeated<T: _ProtoCValue>(_ i: Int) -> [T] {
        let f = fields[i]
        let n = base.load(fromByteOffset: Int(f.quantifier_offset), as: Int.self)
        guard n > 0, let array = base.load(fromByteOffset: Int(f.offset), as: UnsafeRawPointer?.self) else { return [] }
        let stride = T._protoCSize
        return [T](unsafeUninitializedCapacity: n) { out, count in
            for j in 0..<n { (out.baseAddress! + j).initialize(to: T._protoLoad(array + j &* stride)) }
            count = n
        }
    }

    func map<K: _ProtoMapKey, V: _ProtoCValue>(_ i: Int) -> [K: V] {
        let f = fields[i]
        let n = base.load(fromByteOffset: Int(f.quantifier_offset), as: Int.self)
        guard n > 0, let entries = base.load(fromByteOffset: Int(f.offset), as: UnsafePointer<UnsafeRawPointer>?.self) else {
            return [:]
        }
        let entryFields = f.descriptor.assumingMemoryBound(to: ProtobufCMessageDescriptor.self).pointee.fields!
        let keyOffset = Int(entryFields[0].offset), valueOffset = Int(entryFields[1].offset)
        var result = [K: V](minimumCapacity: n)
        for j in 0..<n {
            let entry = entries[j]
            result[K._protoLoad(entry + keyOffset)] = V._protoLoad(entry + valueOffset)
        }
        return result
    }

    /// The number of the oneof member that is set (0: none), given any member.
    @inline(__always)
    func oneofCase(_ i: Int) -> UInt32 {
        base.load(fromByteOffset: Int(fields[i].quantifier_offset), as: UInt32.self)
    }
}

// MARK: - Building a C message

/// Fills the fields of a protobuf-c message being built (generated code only).
public struct ProtoWriter {
    let base: UnsafeMutableRawPointer
    let fields: UnsafePointer<ProtobufCFieldDescriptor>
    let arena: UnsafeMutablePointer<ProtoArena>

    /// A singular field; defaults are left as protobuf_c_message_init set them.
    @inline(__always)
    func value<T: _ProtoCValue>(_ i: Int, _ v: T) {
        if v._protoIsDefault { return }
        v._protoStore(base + Int(fields[i].offset), arena)
    }

    @inline(__always)
    func message<T: ProtoMessage>(_ i: Int, _ v: T) {
        (base + Int(fields[i].offset)).storeBytes(of: _protoBuild(v, arena), as: UnsafeMutableRawPointer.self)
    }

    func repeated<T: _ProtoCValue>(_ i: Int, _ values: [T]) {
        let f = fields[i]
        let stride = T._protoCSize
        let array = arena.pointee.allocate(values.count &* stride)
        for (j, v) in values.enumerated() { v._protoStore(array + j &* stride, arena) }
        (base + Int(f.quantifier_offset)).storeBytes(of: values.count, as: Int.self)
        (base + Int(f.offset)).storeBytes(of: array, as: UnsafeMutableRawPointer.self)
    }

    /// Entries in key order, so that the encoding is deterministic.
    func map<K: _ProtoMapKey, V: _ProtoCValue>(_ i: Int, _ values: [K: V]) {
        let f = fields[i]
        let entryDescriptor = f.descriptor.assumingMemoryBound(to: ProtobufCMessageDescriptor.self)
        let entrySize = entryDescriptor.pointee.sizeof_message
        let entryFields = entryDescriptor.pointee.fields!
        let keyOffset = Int(entryFields[0].offset), valueOffset = Int(entryFields[1].offset)
        let entries = arena.pointee.allocate(values.count &* MemoryLayout<UnsafeRawPointer>.stride)
            .bindMemory(to: UnsafeMutableRawPointer.self, capacity: values.count)
        for (j, (k, v)) in values.sorted(by: { K._protoLess($0.key, $1.key) }).enumerated() {
            let entry = arena.pointee.allocate(entrySize)
            protobuf_c_message_init(entryDescriptor, entry)
            k._protoStore(entry + keyOffset, arena)
            v._protoStore(entry + valueOffset, arena)
            entries[j] = entry
        }
        (base + Int(f.quantifier_offset)).storeBytes(of: values.count, as: Int.self)
        (base + Int(f.offset)).storeBytes(of: UnsafeMutableRawPointer(entries), as: UnsafeMutableRawPointer.self)
    }

    /// A oneof member: sets the case and stores the value even if it is the
    /// default (a set oneof member is always encoded).
    @inline(__always)
    func oneof<T: _ProtoCValue>(_ i: Int, _ v: T) {
        let f = fields[i]
        (base + Int(f.quantifier_offset)).storeBytes(of: f.id, as: UInt32.self)
        v._protoStore(base + Int(f.offset), arena)
    }
}

// MARK: - C storage of field values

/// How a Swift field value is stored in a protobuf-c struct member or array
/// element. int32/sint32/sfixed32 etc. share one C representation; protobuf-c
/// does the wire encoding.
protocol _ProtoCValue {
    /// Size of one element in a C array of this type.
    static var _protoCSize: Int { get }
    static func _protoLoad(_ p: UnsafeRawPointer) -> Self
    func _protoStore(_ p: UnsafeMutableRawPointer, _ arena: UnsafeMutablePointer<ProtoArena>)
    /// The proto3 default: a singular field with it is not stored at all.
    var _protoIsDefault: Bool { get }
}

/// Map keys, ordered for a deterministic encoding.
protocol _ProtoMapKey: _ProtoCValue, Hashable {
    static func _protoLess(_ a: Self, _ b: Self) -> Bool
}

extension _ProtoCValue where Self: FixedWidthInteger {
    static var _protoCSize: Int { MemoryLayout<Self>.size }
    @inline(__always) static func _protoLoad(_ p: UnsafeRawPointer) -> Self { p.load(as: Self.self) }
    @inline(__always) func _protoStore(_ p: UnsafeMutableRawPointer, _ arena: UnsafeMutablePointer<ProtoArena>) {
        p.storeBytes(of: self, as: Self.self)
    }
    var _protoIsDefault: Bool { self == 0 }
}

extension _ProtoMapKey where Self: FixedWidthInteger {
    static func _protoLess(_ a: Self, _ b: Self) -> Bool { a < b }
}

extension Int32: _ProtoMapKey {}
extension UInt32: _ProtoMapKey {}
extension Int64: _ProtoMapKey {}
extension UInt64: _ProtoMapKey {}

extension Float: _ProtoCValue {
    static var _protoCSize: Int { 4 }
    @inline(__always) static func _protoLoad(_ p: UnsafeRawPointer) -> Float { p.load(as: Float.self) }
    @inline(__always) func _protoStore(_ p: UnsafeMutableRawPointer, _ arena: UnsafeMutablePointer<ProtoArena>) {
        p.storeBytes(of: self, as: Float.self)
    }
    var _protoIsDefault: Bool { bitPattern == 0 }
}

extension Double: _ProtoCValue {
    static var _protoCSize: Int { 8 }
    @inline(__always) static func _protoLoad(_ p: UnsafeRawPointer) -> Double { p.load(as: Double.self) }
    @inline(__always) func _protoStore(_ p: UnsafeMutableRawPointer, _ arena: UnsafeMutablePointer<ProtoArena>) {
        p.storeBytes(of: self, as: Double.self)
    }
    var _protoIsDefault: Bool { bitPattern == 0 }
}

extension Bool: _ProtoMapKey {
    // protobuf_c_boolean is a C int.
    static var _protoCSize: Int { MemoryLayout<protobuf_c_boolean>.size }
    @inline(__always) static func _protoLoad(_ p: UnsafeRawPointer) -> Bool { p.load(as: protobuf_c_boolean.self) != 0 }
    @inline(__always) func _protoStore(_ p: UnsafeMutableRawPointer, _ arena: UnsafeMutablePointer<ProtoArena>) {
        p.storeBytes(of: self ? 1 : 0, as: protobuf_c_boolean.self)
    }
    var _protoIsDefault: Bool { !self }
    static func _protoLess(_ a: Bool, _ b: Bool) -> Bool { !a && b }
}

extension String: _ProtoMapKey {
    // char *, NUL-terminated (so a string cannot carry U+0000 through protobuf-c).
    static var _protoCSize: Int { MemoryLayout<UnsafePointer<CChar>>.size }
    @inline(__always) static func _protoLoad(_ p: UnsafeRawPointer) -> String {
        guard let s = p.load(as: UnsafePointer<CChar>?.self) else { return "" }
        return String(cString: s)
    }
    func _protoStore(_ p: UnsafeMutableRawPointer, _ arena: UnsafeMutablePointer<ProtoArena>) {
        var s = self
        let copy = s.withUTF8 { utf8 -> UnsafeMutableRawPointer in
            let d = arena.pointee.allocate(utf8.count &+ 1)
            if let src = utf8.baseAddress { d.copyMemory(from: src, byteCount: utf8.count) }
            d.storeBytes(of: 0, toByteOffset: utf8.count, as: UInt8.self)
            return d
        }
        p.storeBytes(of: copy, as: UnsafeMutableRawPointer.self)
    }
    var _protoIsDefault: Bool { isEmpty }
    static func _protoLess(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
}

extension Array: _ProtoCValue where Element == UInt8 {
    // ProtobufCBinaryData.
    static var _protoCSize: Int { MemoryLayout<ProtobufCBinaryData>.stride }
    @inline(__always) static func _protoLoad(_ p: UnsafeRawPointer) -> [UInt8] {
        let b = p.load(as: ProtobufCBinaryData.self)
        guard b.len > 0, let data = b.data else { return [] }
        return Array(UnsafeBufferPointer(start: data, count: b.len))
    }
    func _protoStore(_ p: UnsafeMutableRawPointer, _ arena: UnsafeMutablePointer<ProtoArena>) {
        let d = arena.pointee.allocate(count)  // never NULL, even for 0 bytes
        withUnsafeBytes { if let src = $0.baseAddress { d.copyMemory(from: src, byteCount: $0.count) } }
        p.storeBytes(of: ProtobufCBinaryData(len: count, data: d.assumingMemoryBound(to: UInt8.self)),
                     as: ProtobufCBinaryData.self)
    }
    var _protoIsDefault: Bool { isEmpty }
}

extension _ProtoCValue where Self: ProtoEnum {
    // A C enum, int-sized (PROTOBUF_C__FORCE_ENUM_TO_BE_INT_SIZE).
    static var _protoCSize: Int { 4 }
    @inline(__always) static func _protoLoad(_ p: UnsafeRawPointer) -> Self { Self(rawValue: p.load(as: Int32.self)) }
    @inline(__always) func _protoStore(_ p: UnsafeMutableRawPointer, _ arena: UnsafeMutablePointer<ProtoArena>) {
        p.storeBytes(of: rawValue, as: Int32.self)
    }
    var _protoIsDefault: Bool { rawValue == 0 }
}

extension _ProtoCValue where Self: ProtoMessage {
    // A pointer to the sub-message (as a oneof member, repeated element or map value).
    static var _protoCSize: Int { MemoryLayout<UnsafeRawPointer>.size }
    @inline(__always) static func _protoLoad(_ p: UnsafeRawPointer) -> Self {
        guard let m = p.load(as: UnsafeRawPointer?.self) else { return Self() }
        return Self(_protoReader: ProtoReader(m))
    }
    @inline(__always) func _protoStore(_ p: UnsafeMutableRawPointer, _ arena: UnsafeMutablePointer<ProtoArena>) {
        p.storeBytes(of: _protoBuild(self, arena), as: UnsafeMutableRawPointer.self)
    }
    var _protoIsDefault: Bool { false }
}

/// Storage for a singular message field whose type contains the message
/// itself (a struct cannot contain itself inline).
enum _ProtoIndirect<T: Sendable & Hashable>: Sendable, Hashable {
    indirect case boxed(T)
    init(_ value: T) { self = .boxed(value) }
    var value: T { switch self { case .boxed(let v): return v } }
}

// MARK: - Encoding and decoding

@inline(__always)
func _protoBuild<M: ProtoMessage>(_ message: M, _ arena: UnsafeMutablePointer<ProtoArena>) -> UnsafeMutableRawPointer {
    let descriptor = M._protoDescriptor.c
    let p = arena.pointee.allocate(descriptor.pointee.sizeof_message)
    protobuf_c_message_init(descriptor, p)
    message._protoWrite(to: ProtoWriter(base: p, fields: _protoFields(descriptor), arena: arena))
    return p
}

/// The descriptor's fields; NULL (a message without fields) becomes a dangling
/// pointer that nothing dereferences.
@inline(__always)
func _protoFields(_ descriptor: UnsafePointer<ProtobufCMessageDescriptor>) -> UnsafePointer<ProtobufCFieldDescriptor> {
    descriptor.pointee.fields ?? UnsafePointer(bitPattern: MemoryLayout<ProtobufCFieldDescriptor>.alignment).unsafelyUnwrapped
}

/// Runs `body` with `message` built as a protobuf-c message; the C message is
/// valid only inside `body`.
func _protoWithCMessage<M: ProtoMessage, R>(_ message: M, _ body: (UnsafePointer<ProtobufCMessage>) -> R) -> R {
    withUnsafeTemporaryAllocation(byteCount: ProtoArena.initialSize, alignment: ProtoArena.alignment) { initial in
        var arena = ProtoArena(initial)
        defer { arena.release() }
        return withUnsafeMutablePointer(to: &arena) { arena in
            let c = _protoBuild(message, arena)
            return body(c.assumingMemoryBound(to: ProtobufCMessage.self))
        }
    }
}

/// Decodes strictly: `.invalidStrings` if a string field anywhere in the
/// message holds NUL or invalid UTF-8 (checked on the wire bytes, where each
/// string's length is known; protobuf-c's `char *` would end at a NUL), else
/// `.malformed` if protobuf-c rejects the bytes.
func _protoDecodeChecked<M: ProtoMessage>(_ type: M.Type, _ bytes: UnsafeRawBufferPointer) throws(ProtoDecodingError) -> M {
    var violations: [ProtoStringViolation] = []
    ProtoWireCheck.strings(bytes, M._protoDescriptor.c, path: "", depth: 0, into: &violations)
    if !violations.isEmpty { throw .invalidStrings(violations) }
    guard let message = _protoDecode(type, bytes) else { throw .malformed }
    return message
}

/// nil if protobuf-c rejects the bytes.
func _protoDecode<M: ProtoMessage>(_ type: M.Type, _ bytes: UnsafeRawBufferPointer) -> M? {
    let descriptor = M._protoDescriptor.c
    return withUnsafeTemporaryAllocation(byteCount: ProtoArena.initialSize, alignment: ProtoArena.alignment) { initial in
        var arena = ProtoArena(initial)
        defer { arena.release() }
        return withUnsafeMutablePointer(to: &arena) { arena -> M? in
            var allocator = ProtobufCAllocator(alloc: _protoArenaAlloc, free: _protoArenaFree,
                                               allocator_data: UnsafeMutableRawPointer(arena))
            // len 0 with a NULL pointer is a valid (empty) message.
            guard let c = protobuf_c_message_unpack(descriptor, &allocator, bytes.count,
                                                    bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
                return nil
            }
            // Nothing to free field by field: the whole tree is in the arena.
            return M(_protoReader: ProtoReader(UnsafeRawPointer(c)))
        }
    }
}

private func _protoArenaAlloc(_ data: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    data.unsafelyUnwrapped.assumingMemoryBound(to: ProtoArena.self).pointee.allocateIfPossible(size)
}

private func _protoArenaFree(_ data: UnsafeMutableRawPointer?, _ pointer: UnsafeMutableRawPointer?) {
    // Released with the arena.
}

/// Bump allocator for one encode or decode: a caller-provided first buffer
/// (on the stack), then malloc'd chunks, all released together.
struct ProtoArena {
    static let initialSize = 1024
    static let alignment = 16
    private static let chunkHeader = 16  // link to the previous chunk, padded
    private static let maxChunkSize = 1 << 20

    private var cursor: UnsafeMutableRawPointer
    private var remaining: Int
    private var chunks: UnsafeMutableRawPointer? = nil
    private var nextChunkSize = 4096

    init(_ initial: UnsafeMutableRawBufferPointer) {
        cursor = initial.baseAddress!
        remaining = initial.count
    }

    /// 8-byte aligned memory for `size` bytes (a distinct pointer even for 0).
    @inline(__always)
    mutating func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        guard let p = allocateIfPossible(size) else { fatalError("CreditsProto: out of memory") }
        return p
    }

    @inline(__always)
    mutating func allocateIfPossible(_ size: Int) -> UnsafeMutableRawPointer? {
        let rounded = (size &+ 7) & ~7
        if rounded <= remaining, size >= 0 {
            let p = cursor
            cursor += rounded
            remaining &-= rounded
            return p
        }
        return allocateChunk(rounded)
    }

    @inline(never)
    private mutating func allocateChunk(_ size: Int) -> UnsafeMutableRawPointer? {
        guard size >= 0, size <= Int.max / 2 else { return nil }
        if size > nextChunkSize / 2 {
            // A chunk of its own; the current one stays in use.
            guard let chunk = newChunk(size) else { return nil }
            return chunk
        }
        guard let chunk = newChunk(nextChunkSize - Self.chunkHeader) else { return nil }
        cursor = chunk + size
        remaining = nextChunkSize - Self.chunkHeader - size
        nextChunkSize = min(nextChunkSize * 2, Self.maxChunkSize)
        return chunk
    }

    private mutating func newChunk(_ payload: Int) -> UnsafeMutableRawPointer? {
        guard let chunk = malloc(Self.chunkHeader + max(payload, 8)) else { return nil }
        chunk.storeBytes(of: chunks, as: UnsafeMutableRawPointer?.self)
        chunks = chunk
        return chunk + Self.chunkHeader
    }

    func release() {
        var chunk = chunks
        while let c = chunk {
            chunk = c.load(as: UnsafeMutableRawPointer?.self)
            free(c)
        }
    }
}
