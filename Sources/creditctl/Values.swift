// Messages as plain trees of values, both ways: protobuf wire bytes → Value
// (for printing as JSON or text) and Value → wire bytes (requests built from
// flags or JSON). Driven by SchemaRegistry; int64 values stay exact (Int64).

import Foundation

/// A JSON-shaped value with object keys kept in order.
indirect enum Value: Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([Value])
    case object([(String, Value)])

    static func == (a: Value, b: Value) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.int(let x), .int(let y)): return x == y
        case (.uint(let x), .uint(let y)): return x == y
        case (.double(let x), .double(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)): return x.map(\.0) == y.map(\.0) && x.map(\.1) == y.map(\.1)
        default: return false
        }
    }

    subscript(key: String) -> Value? {
        if case .object(let fields) = self { return fields.first { $0.0 == key }?.1 }
        return nil
    }

    /// From a Foundation JSON object (JSONSerialization output).
    init(json: Any) {
        switch json {
        case let n as NSNumber where String(cString: n.objCType) == "c": self = .bool(n.boolValue)
        case let n as NSNumber:
            if let i = Int64(exactly: n) { self = .int(i) } else { self = .double(n.doubleValue) }
        case let s as String: self = .string(s)
        case let a as [Any]: self = .array(a.map(Value.init(json:)))
        case let d as [String: Any]: self = .object(d.keys.sorted().map { ($0, Value(json: d[$0]!)) })
        default: self = .null
        }
    }
}

enum ValueError: Error, CustomStringConvertible {
    case unknownField(message: String, field: String)
    case badValue(field: String, expected: String, got: String)

    var description: String {
        switch self {
        case .unknownField(let m, let f): return "\(m) has no field '\(f)'"
        case .badValue(let f, let e, let g): return "field '\(f)': expected \(e), got '\(g)'"
        }
    }
}

// MARK: - wire → Value

struct MessageDecoder {
    let registry: SchemaRegistry

    /// Every field of `schema` in declaration order: present ones with their
    /// value, absent scalars with their zero value, absent messages and oneof
    /// members left out.
    func decode(_ bytes: [UInt8], as schema: MessageSchema) throws(WireError) -> Value {
        try decode(bytes, 0..<bytes.count, as: schema)
    }

    private func decode(_ b: [UInt8], _ range: Range<Int>, as schema: MessageSchema) throws(WireError) -> Value {
        if let special = try wellKnown(b, range, schema) { return special }
        var found: [Int: [Value]] = [:]
        var r = WireReader(b, from: range.lowerBound, to: range.upperBound)
        while !r.atEnd {
            let key = try r.varint()
            let wireType = key & 7
            guard let field = schema.field(number: Int(key >> 3)) else {
                try r.skip(wireType)
                continue
            }
            if field.repeated, field.type.isPackable, wireType == 2 {
                let packed = try r.lengthDelimited()
                var p = WireReader(b, from: packed.lowerBound, to: packed.upperBound)
                while !p.atEnd { found[field.number, default: []].append(try scalar(&p, field, wireType: field.type.wireType)) }
            } else if wireType == 2, field.type == .message {
                let sub = try r.lengthDelimited()
                guard let subSchema = registry.message(field.typeName) else { continue }
                found[field.number, default: []].append(try decode(b, sub, as: subSchema))
            } else {
                found[field.number, default: []].append(try scalar(&r, field, wireType: wireType))
            }
        }
        var out: [(String, Value)] = []
        for field in schema.fields {
            let values = found[field.number]
            if field.repeated {
                if let entrySchema = registry.message(field.typeName), entrySchema.isMapEntry {
                    let pairs: [(String, Value)] = (values ?? []).map { entry in
                        (entry["key"].map(Self.keyText) ?? "", entry["value"] ?? .null)
                    }
                    out.append((field.name, .object(pairs)))
                } else {
                    out.append((field.name, .array(values ?? [])))
                }
            } else if let last = values?.last {
                out.append((field.name, last))
            } else if !field.hasPresence, field.type != .message {
                out.append((field.name, zero(field)))
            }
        }
        return .object(out)
    }

    private static func keyText(_ v: Value) -> String {
        switch v {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .uint(let u): return String(u)
        case .bool(let b): return String(b)
        default: return ""
        }
    }

    private func zero(_ field: FieldSchema) -> Value {
        switch field.type {
        case .string: return .string("")
        case .bytes: return .string("")
        case .bool: return .bool(false)
        case .double, .float: return .double(0)
        case .uint64, .fixed64, .uint32, .fixed32: return .uint(0)
        case .enumeration: return enumValue(field, 0)
        default: return .int(0)
        }
    }

    private func enumValue(_ field: FieldSchema, _ n: Int32) -> Value {
        if let name = registry.enumeration(field.typeName)?.name(of: n) { return .string(name) }
        return .int(Int64(n))
    }

    private func scalar(_ r: inout WireReader, _ field: FieldSchema, wireType: UInt64) throws(WireError) -> Value {
        switch (field.type, wireType) {
        case (.string, 2): return .string(String(decoding: r.bytes[try r.lengthDelimited()], as: UTF8.self))
        case (.bytes, 2): return .string(Data(r.bytes[try r.lengthDelimited()]).base64EncodedString())
        case (.bool, 0): return .bool(try r.varint() != 0)
        case (.int64, 0): return .int(Int64(bitPattern: try r.varint()))
        case (.int32, 0): return .int(Int64(Int32(truncatingIfNeeded: try r.varint())))
        case (.uint64, 0), (.uint32, 0): return .uint(try r.varint())
        case (.sint32, 0), (.sint64, 0):
            let v = try r.varint()
            return .int(Int64(bitPattern: (v >> 1) ^ (0 &- (v & 1))))
        case (.enumeration, 0): return enumValue(field, Int32(truncatingIfNeeded: try r.varint()))
        case (.fixed64, 1): return .uint(try r.fixed(8))
        case (.sfixed64, 1): return .int(Int64(bitPattern: try r.fixed(8)))
        case (.double, 1): return .double(Double(bitPattern: try r.fixed(8)))
        case (.fixed32, 5): return .uint(try r.fixed(4))
        case (.sfixed32, 5): return .int(Int64(Int32(bitPattern: UInt32(try r.fixed(4)))))
        case (.float, 5): return .double(Double(Float(bitPattern: UInt32(try r.fixed(4)))))
        default: throw .malformed
        }
    }

    /// Timestamp as RFC 3339 text, Duration as "1.5s", Any with its "@type" and decoded fields.
    private func wellKnown(_ b: [UInt8], _ range: Range<Int>, _ schema: MessageSchema) throws(WireError) -> Value? {
        switch schema.fullName {
        case "google.protobuf.Timestamp", "google.protobuf.Duration":
            var seconds: Int64 = 0, nanos: Int32 = 0
            var r = WireReader(b, from: range.lowerBound, to: range.upperBound)
            while !r.atEnd {
                let key = try r.varint()
                switch key {
                case 1 << 3: seconds = Int64(bitPattern: try r.varint())
                case 2 << 3: nanos = Int32(truncatingIfNeeded: try r.varint())
                default: try r.skip(key & 7)
                }
            }
            if schema.fullName.hasSuffix("Duration") {
                return .string(nanos == 0 ? "\(seconds)s" : String(format: "%.9fs", Double(seconds) + Double(nanos) / 1e9))
            }
            return .string(rfc3339(seconds: seconds, nanos: nanos))
        case "google.protobuf.Any":
            var typeURL = "", value = 0..<0
            var r = WireReader(b, from: range.lowerBound, to: range.upperBound)
            while !r.atEnd {
                let key = try r.varint()
                switch key {
                case 1 << 3 | 2: typeURL = String(decoding: b[try r.lengthDelimited()], as: UTF8.self)
                case 2 << 3 | 2: value = try r.lengthDelimited()
                default: try r.skip(key & 7)
                }
            }
            let typeName = String(typeURL.split(separator: "/").last ?? "")
            guard let inner = registry.message(typeName) else {
                return .object([("@type", .string(typeURL)), ("value", .string(Data(b[value]).base64EncodedString()))])
            }
            guard case .object(let fields) = try decode(b, value, as: inner) else { return nil }
            return .object([("@type", .string(typeURL))] + fields)
        default:
            return nil
        }
    }
}

func rfc3339(seconds: Int64, nanos: Int32) -> String {
    let date = Date(timeIntervalSince1970: TimeInterval(seconds))
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    var text = formatter.string(from: date)
    if nanos != 0 {
        text.removeLast()  // "Z"
        var fraction = String(format: "%09d", nanos)
        while fraction.hasSuffix("000") { fraction.removeLast(3) }
        text += "." + fraction + "Z"
    }
    return text
}

extension FieldType {
    var wireType: UInt64 {
        switch self {
        case .double, .fixed64, .sfixed64: return 1
        case .float, .fixed32, .sfixed32: return 5
        case .string, .bytes, .message, .group: return 2
        default: return 0
        }
    }
}

// MARK: - Value → wire

struct MessageEncoder {
    let registry: SchemaRegistry

    /// Encodes an object whose keys are field names (proto or JSON names);
    /// scalars may be given as text (flags) or JSON values.
    func encode(_ value: Value, as schema: MessageSchema, path: String = "") throws(ValueError) -> [UInt8] {
        if let special = try wellKnown(value, schema, path) { return special }
        guard case .object(let fields) = value else {
            throw .badValue(field: path.isEmpty ? schema.fullName : path, expected: "an object", got: "\(value)")
        }
        var out: [UInt8] = []
        for (name, v) in fields {
            guard let field = schema.field(named: name) else { throw .unknownField(message: schema.fullName, field: name) }
            let fieldPath = path.isEmpty ? field.name : path + "." + field.name
            if field.repeated, let entry = registry.message(field.typeName), entry.isMapEntry {
                guard case .object(let pairs) = v else { throw .badValue(field: fieldPath, expected: "an object", got: "\(v)") }
                for (k, item) in pairs {
                    let bytes = try encode(.object([("key", .string(k)), ("value", item)]), as: entry, path: fieldPath)
                    append(&out, field.number, 2); appendVarint(&out, UInt64(bytes.count)); out += bytes
                }
            } else if field.repeated, case .array(let items) = v {
                for item in items { try encodeOne(&out, field, item, fieldPath) }
            } else {
                try encodeOne(&out, field, v, fieldPath)
            }
        }
        return out
    }

    private func encodeOne(_ out: inout [UInt8], _ field: FieldSchema, _ v: Value, _ path: String) throws(ValueError) {
        func bad(_ expected: String) -> ValueError { .badValue(field: path, expected: expected, got: text(v)) }
        switch field.type {
        case .message:
            guard let schema = registry.message(field.typeName) else { throw bad(field.typeName) }
            let bytes = try encode(v, as: schema, path: path)
            append(&out, field.number, 2); appendVarint(&out, UInt64(bytes.count)); out += bytes
        case .string:
            let bytes = Array(text(v).utf8)
            append(&out, field.number, 2); appendVarint(&out, UInt64(bytes.count)); out += bytes
        case .bytes:
            guard let data = Data(base64Encoded: text(v)) else { throw bad("base64 bytes") }
            append(&out, field.number, 2); appendVarint(&out, UInt64(data.count)); out += data
        case .bool:
            let t = text(v).lowercased()
            guard t == "true" || t == "false" || t == "1" || t == "0" else { throw bad("true or false") }
            append(&out, field.number, 0); appendVarint(&out, t == "true" || t == "1" ? 1 : 0)
        case .enumeration:
            let t = text(v)
            guard let n = Int32(t) ?? registry.enumeration(field.typeName)?.number(named: t) else {
                let names = registry.enumeration(field.typeName)?.values.map(\.name).joined(separator: ", ") ?? ""
                throw bad("one of \(names)")
            }
            append(&out, field.number, 0); appendVarint(&out, UInt64(bitPattern: Int64(n)))
        case .int64, .int32, .sint32, .sint64, .sfixed32, .sfixed64:
            guard let n = Int64(text(v)) else { throw bad("an integer") }
            if field.type == .int32 || field.type == .sint32 || field.type == .sfixed32,
               Int32(exactly: n) == nil { throw bad("a 32-bit integer") }
            switch field.type {
            case .sint32, .sint64:
                append(&out, field.number, 0); appendVarint(&out, UInt64(bitPattern: (n << 1) ^ (n >> 63)))
            case .sfixed32:
                append(&out, field.number, 5); appendFixed(&out, UInt64(UInt32(bitPattern: Int32(n))), 4)
            case .sfixed64:
                append(&out, field.number, 1); appendFixed(&out, UInt64(bitPattern: n), 8)
            default:
                append(&out, field.number, 0); appendVarint(&out, UInt64(bitPattern: n))
            }
        case .uint64, .uint32, .fixed64, .fixed32:
            guard let n = UInt64(text(v)) else { throw bad("an unsigned integer") }
            switch field.type {
            case .fixed64: append(&out, field.number, 1); appendFixed(&out, n, 8)
            case .fixed32: append(&out, field.number, 5); appendFixed(&out, n & 0xFFFF_FFFF, 4)
            default: append(&out, field.number, 0); appendVarint(&out, n)
            }
        case .double, .float:
            guard let d = Double(text(v)) else { throw bad("a number") }
            if field.type == .double {
                append(&out, field.number, 1); appendFixed(&out, d.bitPattern, 8)
            } else {
                append(&out, field.number, 5); appendFixed(&out, UInt64(Float(d).bitPattern), 4)
            }
        case .group:
            throw bad("a proto3 field (groups are not supported)")
        }
    }

    /// Timestamp from RFC 3339 text, Unix seconds, or from now: +90s, +30m, +2h, +7d.
    private func wellKnown(_ v: Value, _ schema: MessageSchema, _ path: String) throws(ValueError) -> [UInt8]? {
        guard schema.fullName == "google.protobuf.Timestamp" else { return nil }
        let t = text(v)
        let seconds: Int64
        if let n = Int64(t) {
            seconds = n
        } else if t.hasPrefix("+"), let unit = t.last, let scale = ["s": 1, "m": 60, "h": 3600, "d": 86400][unit],
                  let n = Int64(t.dropFirst().dropLast()), n >= 0, n <= 100 * 365 * 86400 / scale {
            seconds = Int64(Date().timeIntervalSince1970) + n * Int64(scale)
        } else {
            let formatter = ISO8601DateFormatter()
            guard let date = formatter.date(from: t) else {
                throw .badValue(field: path, expected: "an RFC 3339 time (2026-01-31T12:00:00Z), Unix seconds or +N[smhd] from now", got: t)
            }
            seconds = Int64(date.timeIntervalSince1970)
        }
        var out: [UInt8] = []
        if seconds != 0 { append(&out, 1, 0); appendVarint(&out, UInt64(bitPattern: seconds)) }
        return out
    }

    private func text(_ v: Value) -> String {
        switch v {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .uint(let u): return String(u)
        case .double(let d): return String(d)
        case .bool(let b): return String(b)
        case .null: return ""
        case .array, .object: return JSONWriter.render(v, pretty: false)
        }
    }

    private func append(_ out: inout [UInt8], _ number: Int, _ wireType: UInt64) {
        appendVarint(&out, UInt64(number) << 3 | wireType)
    }

    private func appendVarint(_ out: inout [UInt8], _ value: UInt64) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    private func appendFixed(_ out: inout [UInt8], _ value: UInt64, _ size: Int) {
        for i in 0..<size { out.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) }
    }
}
