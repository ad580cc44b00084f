/// Custom metadata of a call: request headers the client sent, or response
/// headers/trailers a handler adds. Names are lowercase ASCII; names ending in
/// `-bin` carry binary values (base64 on the wire).
public struct Metadata: Sendable, Equatable, Sequence {
    public enum Value: Sendable, Equatable {
        case string(String)
        case binary([UInt8])
    }

    public struct Entry: Sendable, Equatable {
        public var name: String
        public var value: Value
    }

    public private(set) var entries: [Entry] = []

    public init() {}

    public init(_ pairs: [(String, String)]) {
        for (name, value) in pairs { add(name, value) }
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var count: Int { entries.count }

    public mutating func add(_ name: String, _ value: String) {
        entries.append(Entry(name: name.lowercased(), value: .string(value)))
    }

    public mutating func add(_ name: String, binary value: [UInt8]) {
        entries.append(Entry(name: name.lowercased(), value: .binary(value)))
    }

    public mutating func append(_ entry: Entry) { entries.append(entry) }

    /// The first string value under `name`.
    public subscript(name: String) -> String? {
        for entry in entries where entry.name == name {
            if case .string(let value) = entry.value { return value }
        }
        return nil
    }

    /// The first binary value under `name` (a `-bin` key).
    public func binary(_ name: String) -> [UInt8]? {
        for entry in entries where entry.name == name {
            if case .binary(let value) = entry.value { return value }
        }
        return nil
    }

    public func makeIterator() -> IndexingIterator<[Entry]> { entries.makeIterator() }

    /// Whether `name` may be sent as custom metadata: lowercase [0-9a-z-_.],
    /// not a pseudo-header, not reserved by gRPC or HTTP/2.
    public static func isValidCustomName(_ name: String) -> Bool {
        guard !name.isEmpty, !name.hasPrefix("grpc-") else { return false }
        if reservedNames.contains(name) { return false }
        for byte in name.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
                continue
            default:
                return false
            }
        }
        return true
    }

    /// A string value may hold printable ASCII only (0x20…0x7E).
    public static func isValidStringValue(_ value: String) -> Bool {
        value.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E }
    }

    static let reservedNames: Set<String> = [
        "content-type", "te", "user-agent", "content-length", "connection",
        "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host",
    ]
}

/// Base64 for `-bin` metadata: encode with padding; decode padded or not.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let reverse: [Int8] = {
        var table = [Int8](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = Int8(i) }
        return table
    }()

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)])
            out.append(alphabet[Int(n & 63)])
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            var n = UInt32(bytes[i]) << 16
            if rest == 2 { n |= UInt32(bytes[i + 1]) << 8 }
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(rest == 2 ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var bits: UInt32 = 0
        var count = 0
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count * 3 / 4)
        var padding = 0
        for byte in text.utf8 {
            if byte == UInt8(ascii: "=") { padding += 1; continue }
            if padding > 0 { return nil }  // data after padding
            let value = reverse[Int(byte)]
            guard value >= 0 else { return nil }
            bits = bits << 6 | UInt32(value)
            count += 1
            if count == 4 {
                out.append(UInt8(bits >> 16 & 0xFF))
                out.append(UInt8(bits >> 8 & 0xFF))
                out.append(UInt8(bits & 0xFF))
                bits = 0
                count = 0
            }
        }
        switch count {
        case 0: break
        case 2: out.append(UInt8(bits >> 4 & 0xFF))
        case 3:
            out.append(UInt8(bits >> 10 & 0xFF))
            out.append(UInt8(bits >> 2 & 0xFF))
        default: return nil
        }
        guard padding <= 2 else { return nil }
        return out
    }
}
