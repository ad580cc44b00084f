import CProtobufC

/// Checks the string fields of an encoded message on the wire, before
/// protobuf-c unpacks it into NUL-terminated `char *` strings (which would
/// silently end at an embedded NUL): each string's bytes, with the length the
/// wire gives them, must be valid UTF-8 without U+0000. Sub-messages (and map
/// entries) are walked with their descriptors.
///
/// Only the checks are done here: malformed framing stops the walk and is
/// left to protobuf-c's unpack, which rejects it.
enum ProtoWireCheck {
    /// Nesting deeper than this is not walked (protobuf-c has its own limit).
    static let maxDepth = 64
    /// A message reporting more violations than this stops there.
    static let maxViolations = 64
    // protobuf-c.h's PROTOBUF_C_TYPE_STRING, _MESSAGE and PROTOBUF_C_LABEL_REPEATED
    // (the enumerators of its anonymous enums do not import into Swift).
    static let typeString = ProtobufCType(rawValue: 14)
    static let typeMessage = ProtobufCType(rawValue: 16)
    static let labelRepeated = ProtobufCLabel(rawValue: 2)

    static func strings(_ bytes: UnsafeRawBufferPointer, _ descriptor: UnsafePointer<ProtobufCMessageDescriptor>,
                        path: String, depth: Int, into violations: inout [ProtoStringViolation]) {
        guard depth < maxDepth, let base = bytes.baseAddress else { return }
        let end = bytes.count
        var at = 0
        // Occurrences of repeated fields so far, for `[i]` in paths (few fields repeat).
        var seen: [(number: UInt32, count: Int)] = []
        while at < end {
            guard let tag = varint(base, end, &at), tag >> 3 != 0, tag >> 3 <= UInt64(UInt32.max) else { return }
            let number = UInt32(truncatingIfNeeded: tag >> 3)
            switch tag & 7 {
            case 0:
                guard varint(base, end, &at) != nil else { return }
            case 1:
                guard end - at >= 8 else { return }
                at += 8
            case 5:
                guard end - at >= 4 else { return }
                at += 4
            case 2:
                guard let length = varint(base, end, &at), length <= UInt64(end - at) else { return }
                let start = at
                at += Int(length)
                guard let field = protobuf_c_message_descriptor_get_field(descriptor, number) else { continue }
                let type = field.pointee.type
                guard type == typeString || type == typeMessage else { continue }
                var fieldPath = path.isEmpty ? String(cString: field.pointee.name) : path + "." + String(cString: field.pointee.name)
                if field.pointee.label == labelRepeated {
                    var index = 0
                    if let i = seen.firstIndex(where: { $0.number == number }) {
                        index = seen[i].count
                        seen[i].count += 1
                    } else {
                        seen.append((number, 1))
                    }
                    fieldPath += "[\(index)]"
                }
                let value = UnsafeRawBufferPointer(start: base + start, count: Int(length))
                if type == typeString {
                    if let problem = check(value) {
                        violations.append(ProtoStringViolation(field: fieldPath, problem: problem))
                        if violations.count >= maxViolations { return }
                    }
                } else if let sub = field.pointee.descriptor {
                    strings(value, sub.assumingMemoryBound(to: ProtobufCMessageDescriptor.self), path: fieldPath,
                            depth: depth + 1, into: &violations)
                    if violations.count >= maxViolations { return }
                }
            default:
                return  // groups (3, 4) and invalid wire types: protobuf-c decides
            }
        }
    }

    @inline(__always)
    static func varint(_ base: UnsafeRawPointer, _ end: Int, _ at: inout Int) -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while at < end, shift < 64 {
            let byte = base.load(fromByteOffset: at, as: UInt8.self)
            at += 1
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
        return nil
    }

    /// nil when the bytes are valid UTF-8 without NUL (RFC 3629: no overlong
    /// forms, no surrogates, nothing above U+10FFFF).
    static func check(_ bytes: UnsafeRawBufferPointer) -> ProtoStringViolation.Problem? {
        var i = 0
        let n = bytes.count
        var sawNUL = false
        while i < n {
            let b0 = bytes[i]
            if b0 < 0x80 {
                if b0 == 0 { sawNUL = true }
                i += 1
                continue
            }
            let length: Int
            var lower: UInt8 = 0x80, upper: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lower = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; upper = 0x9F
            case 0xF0: length = 4; lower = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; upper = 0x8F
            default: return .invalidUTF8
            }
            guard n - i >= length else { return .invalidUTF8 }
            let b1 = bytes[i + 1]
            guard b1 >= lower && b1 <= upper else { return .invalidUTF8 }
            for k in 2..<length where bytes[i + k] & 0xC0 != 0x80 { return .invalidUTF8 }
            i += length
        }
        return sawNUL ? .containsNUL : nil
    }
}
