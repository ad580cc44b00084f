// The message schemas creditctl reads and writes, taken from the
// FileDescriptorSet compiled into CreditsProto (ProtoRegistry.fileDescriptorSet):
// field names, numbers, types and enum value names. With them any request is
// built from flags or JSON and any response is printed by its proto field
// names, with no per-message code.

import CreditsProto

/// A reader of protobuf wire format over a byte array.
struct WireReader {
    let bytes: [UInt8]
    var offset: Int
    let end: Int

    init(_ bytes: [UInt8], from start: Int = 0, to end: Int? = nil) {
        self.bytes = bytes
        offset = start
        self.end = end ?? bytes.count
    }

    var atEnd: Bool { offset >= end }

    mutating func varint() throws(WireError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while offset < end, shift < 64 {
            let b = bytes[offset]
            offset += 1
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
        throw .malformed
    }

    mutating func fixed(_ size: Int) throws(WireError) -> UInt64 {
        guard end - offset >= size else { throw .malformed }
        var v: UInt64 = 0
        for i in 0..<size { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        offset += size
        return v
    }

    /// A length-delimited field: the range of its bytes.
    mutating func lengthDelimited() throws(WireError) -> Range<Int> {
        let n = try varint()
        guard n <= UInt64(end - offset) else { throw .malformed }
        let range = offset..<(offset + Int(n))
        offset += Int(n)
        return range
    }

    /// Skips a field of `wireType` (groups are not used by proto3 and are refused).
    mutating func skip(_ wireType: UInt64) throws(WireError) {
        switch wireType {
        case 0: _ = try varint()
        case 1: _ = try fixed(8)
        case 2: _ = try lengthDelimited()
        case 5: _ = try fixed(4)
        default: throw .malformed
        }
    }
}

enum WireError: Error {
    case malformed
}

/// google.protobuf.FieldDescriptorProto.Type values used here.
enum FieldType: Int {
    case double = 1, float, int64, uint64, int32, fixed64, fixed32, bool, string, group, message, bytes,
         uint32, enumeration, sfixed32, sfixed64, sint32, sint64

    var isPackable: Bool { ![.string, .bytes, .message, .group].contains(self) }
}

struct FieldSchema {
    var name = ""
    var jsonName = ""
    var number = 0
    var repeated = false
    var type = FieldType.string
    /// Full name without the leading dot, for messages and enums.
    var typeName = ""
    /// A member of a oneof (or a proto3 optional): printed only when present.
    var hasPresence = false
}

struct MessageSchema {
    var fullName = ""
    var fields: [FieldSchema] = []
    var isMapEntry = false

    func field(named name: String) -> FieldSchema? {
        let wanted = name.replacingOccurrences(of: "-", with: "_")
        return fields.first { $0.name == wanted || $0.jsonName == name }
    }

    func field(number: Int) -> FieldSchema? { fields.first { $0.number == number } }
}

struct EnumSchema {
    var fullName = ""
    var values: [(name: String, number: Int32)] = []

    func name(of number: Int32) -> String? { values.first { $0.number == number }?.name }

    /// A value by its name; case-insensitive, with or without the enum's
    /// common prefix (`purchase` for `SPEND_REASON_PURCHASE`).
    func number(named text: String) -> Int32? {
        let upper = text.uppercased().replacingOccurrences(of: "-", with: "_")
        if let exact = values.first(where: { $0.name == upper }) { return exact.number }
        return values.first { $0.name.hasSuffix("_" + upper) }?.number
    }
}

/// Every message and enum of the compiled-in descriptor set, by full name.
struct SchemaRegistry {
    private(set) var messages: [String: MessageSchema] = [:]
    private(set) var enums: [String: EnumSchema] = [:]

    static let shared: SchemaRegistry = {
        var registry = SchemaRegistry()
        // The descriptor set is compiled into the binary: failing to read it is a build defect.
        try! registry.load(ProtoRegistry.fileDescriptorSet)
        return registry
    }()

    func message(_ fullName: String) -> MessageSchema? { messages[fullName] }
    func enumeration(_ fullName: String) -> EnumSchema? { enums[fullName] }

    private mutating func load(_ set: [UInt8]) throws(WireError) {
        var r = WireReader(set)
        while !r.atEnd {
            let key = try r.varint()
            if key >> 3 == 1, key & 7 == 2 {
                try loadFile(set, try r.lengthDelimited())
            } else {
                try r.skip(key & 7)
            }
        }
    }

    private mutating func loadFile(_ b: [UInt8], _ range: Range<Int>) throws(WireError) {
        var r = WireReader(b, from: range.lowerBound, to: range.upperBound)
        var package = ""
        var messageRanges: [Range<Int>] = [], enumRanges: [Range<Int>] = []
        while !r.atEnd {
            let key = try r.varint()
            switch (key >> 3, key & 7) {
            case (2, 2): package = string(b, try r.lengthDelimited())
            case (4, 2): messageRanges.append(try r.lengthDelimited())
            case (5, 2): enumRanges.append(try r.lengthDelimited())
            default: try r.skip(key & 7)
            }
        }
        let prefix = package.isEmpty ? "" : package + "."
        for m in messageRanges { try loadMessage(b, m, prefix: prefix) }
        for e in enumRanges { try loadEnum(b, e, prefix: prefix) }
    }

    private mutating func loadMessage(_ b: [UInt8], _ range: Range<Int>, prefix: String) throws(WireError) {
        var r = WireReader(b, from: range.lowerBound, to: range.upperBound)
        var schema = MessageSchema()
        var nested: [Range<Int>] = [], nestedEnums: [Range<Int>] = []
        while !r.atEnd {
            let key = try r.varint()
            switch (key >> 3, key & 7) {
            case (1, 2): schema.fullName = prefix + string(b, try r.lengthDelimited())
            case (2, 2): schema.fields.append(try loadField(b, try r.lengthDelimited()))
            case (3, 2): nested.append(try r.lengthDelimited())
            case (4, 2): nestedEnums.append(try r.lengthDelimited())
            case (7, 2):
                // MessageOptions: map_entry = 7.
                let options = try r.lengthDelimited()
                var o = WireReader(b, from: options.lowerBound, to: options.upperBound)
                while !o.atEnd {
                    let k = try o.varint()
                    if k == (7 << 3) { schema.isMapEntry = try o.varint() != 0 } else { try o.skip(k & 7) }
                }
            default: try r.skip(key & 7)
            }
        }
        messages[schema.fullName] = schema
        for n in nested { try loadMessage(b, n, prefix: schema.fullName + ".") }
        for e in nestedEnums { try loadEnum(b, e, prefix: schema.fullName + ".") }
    }

    private func loadField(_ b: [UInt8], _ range: Range<Int>) throws(WireError) -> FieldSchema {
        var r = WireReader(b, from: range.lowerBound, to: range.upperBound)
        var f = FieldSchema()
        while !r.atEnd {
            let key = try r.varint()
            switch (key >> 3, key & 7) {
            case (1, 2): f.name = string(b, try r.lengthDelimited())
            case (3, 0): f.number = Int(try r.varint())
            case (4, 0): f.repeated = try r.varint() == 3
            case (5, 0): f.type = FieldType(rawValue: Int(try r.varint())) ?? .bytes
            case (6, 2): f.typeName = String(string(b, try r.lengthDelimited()).drop(while: { $0 == "." }))
            case (9, 0): _ = try r.varint(); f.hasPresence = true
            case (10, 2): f.jsonName = string(b, try r.lengthDelimited())
            default: try r.skip(key & 7)
            }
        }
        return f
    }

    private mutating func loadEnum(_ b: [UInt8], _ range: Range<Int>, prefix: String) throws(WireError) {
        var r = WireReader(b, from: range.lowerBound, to: range.upperBound)
        var schema = EnumSchema()
        while !r.atEnd {
            let key = try r.varint()
            switch (key >> 3, key & 7) {
            case (1, 2): schema.fullName = prefix + string(b, try r.lengthDelimited())
            case (2, 2):
                let valueRange = try r.lengthDelimited()
                var v = WireReader(b, from: valueRange.lowerBound, to: valueRange.upperBound)
                var name = "", number: Int32 = 0
                while !v.atEnd {
                    let k = try v.varint()
                    switch (k >> 3, k & 7) {
                    case (1, 2): name = string(b, try v.lengthDelimited())
                    case (2, 0): number = Int32(truncatingIfNeeded: try v.varint())
                    default: try v.skip(k & 7)
                    }
                }
                schema.values.append((name, number))
            default: try r.skip(key & 7)
            }
        }
        enums[schema.fullName] = schema
    }

    private func string(_ b: [UInt8], _ range: Range<Int>) -> String {
        String(decoding: b[range], as: UTF8.self)
    }
}
