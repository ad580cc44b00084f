/// An index over a serialized `google.protobuf.FileDescriptorSet`: which file
/// declares which fully-qualified symbol, and what each file imports. Built
/// once from the descriptor set embedded at generation time; the file
/// descriptors are served to reflection clients as the exact bytes protoc
/// wrote. Reads only the few descriptor fields it needs (names, package,
/// dependencies, nested declarations) and skips the rest.
public struct DescriptorIndex: Sendable {
    public struct File: Sendable {
        public let name: String
        public let package: String
        public let dependencies: [String]
        /// The serialized FileDescriptorProto.
        public let bytes: [UInt8]
        /// Fully-qualified names of the messages, enums, services and methods
        /// (`pkg.Service.Method`) it declares.
        public let symbols: [String]
        public let services: [String]
    }

    public enum ParseError: Error {
        case malformed
    }

    public private(set) var files: [String: File] = [:]
    private var fileBySymbol: [String: String] = [:]

    public init(fileDescriptorSet bytes: [UInt8]) throws(ParseError) {
        var reader = WireReader(bytes[...])
        while let (field, value) = try reader.next() {
            guard field == 1, case .bytes(let fileBytes) = value else { continue }
            let file = try Self.parseFile(fileBytes)
            files[file.name] = file
            for symbol in file.symbols { fileBySymbol[symbol] = file.name }
        }
    }

    /// The file declaring `symbol` (a message, enum, service or method).
    public func file(containingSymbol symbol: String) -> File? {
        let name = symbol.hasPrefix(".") ? String(symbol.dropFirst()) : symbol
        return fileBySymbol[name].flatMap { files[$0] }
    }

    /// `file` and every file it imports, transitively, each once, the asked-for file first.
    public func withDependencies(_ file: File) -> [File] {
        var out: [File] = []
        var seen: Set<String> = []
        var stack = [file.name]
        while let name = stack.popLast() {
            guard !seen.contains(name), let f = files[name] else { continue }
            seen.insert(name)
            out.append(f)
            stack.append(contentsOf: f.dependencies.reversed())
        }
        return out
    }

    public func isMessage(_ fullName: String) -> Bool {
        file(containingSymbol: fullName) != nil
    }

    private static func parseFile(_ bytes: ArraySlice<UInt8>) throws(ParseError) -> File {
        var reader = WireReader(bytes)
        var name = "", package = ""
        var dependencies: [String] = []
        var messages: [ArraySlice<UInt8>] = [], enums: [ArraySlice<UInt8>] = [], services: [ArraySlice<UInt8>] = []
        while let (field, value) = try reader.next() {
            guard case .bytes(let b) = value else { continue }
            switch field {
            case 1: name = String(decoding: b, as: UTF8.self)
            case 2: package = String(decoding: b, as: UTF8.self)
            case 3: dependencies.append(String(decoding: b, as: UTF8.self))
            case 4: messages.append(b)
            case 5: enums.append(b)
            case 6: services.append(b)
            default: break
            }
        }
        let prefix = package.isEmpty ? "" : package + "."
        var symbols: [String] = []
        for m in messages { try collectMessage(m, prefix: prefix, into: &symbols) }
        for e in enums { symbols.append(prefix + (try nameField(e))) }
        var serviceNames: [String] = []
        for s in services {
            let (serviceName, methods) = try parseService(s)
            let full = prefix + serviceName
            serviceNames.append(full)
            symbols.append(full)
            for method in methods { symbols.append(full + "." + method) }
        }
        return File(name: name, package: package, dependencies: dependencies, bytes: Array(bytes),
                    symbols: symbols, services: serviceNames)
    }

    private static func collectMessage(_ bytes: ArraySlice<UInt8>, prefix: String, into symbols: inout [String]) throws(ParseError) {
        var reader = WireReader(bytes)
        var name = ""
        var nested: [ArraySlice<UInt8>] = [], enums: [ArraySlice<UInt8>] = []
        while let (field, value) = try reader.next() {
            guard case .bytes(let b) = value else { continue }
            switch field {
            case 1: name = String(decoding: b, as: UTF8.self)
            case 3: nested.append(b)
            case 4: enums.append(b)
            default: break
            }
        }
        let full = prefix + name
        symbols.append(full)
        for n in nested { try collectMessage(n, prefix: full + ".", into: &symbols) }
        for e in enums { symbols.append(full + "." + (try nameField(e))) }
    }

    private static func parseService(_ bytes: ArraySlice<UInt8>) throws(ParseError) -> (String, [String]) {
        var reader = WireReader(bytes)
        var name = ""
        var methods: [String] = []
        while let (field, value) = try reader.next() {
            guard case .bytes(let b) = value else { continue }
            if field == 1 { name = String(decoding: b, as: UTF8.self) }
            if field == 2 { methods.append(try nameField(b)) }
        }
        return (name, methods)
    }

    private static func nameField(_ bytes: ArraySlice<UInt8>) throws(ParseError) -> String {
        var reader = WireReader(bytes)
        while let (field, value) = try reader.next() {
            if field == 1, case .bytes(let b) = value { return String(decoding: b, as: UTF8.self) }
        }
        return ""
    }
}

/// Walks protobuf wire format: field number and value, skipping what it does not need.
struct WireReader {
    enum Value {
        case varint(UInt64)
        case bytes(ArraySlice<UInt8>)
        case fixed
    }

    private var bytes: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

    mutating func next() throws(DescriptorIndex.ParseError) -> (Int, Value)? {
        guard !bytes.isEmpty else { return nil }
        let key = try varint()
        let field = Int(key >> 3)
        switch key & 7 {
        case 0: return (field, .varint(try varint()))
        case 1: try skip(8); return (field, .fixed)
        case 2:
            let length = try varint()
            guard length <= UInt64(bytes.count) else { throw .malformed }
            let value = bytes.prefix(Int(length))
            bytes = bytes.dropFirst(Int(length))
            return (field, .bytes(value))
        case 5: try skip(4); return (field, .fixed)
        default: throw .malformed
        }
    }

    private mutating func skip(_ n: Int) throws(DescriptorIndex.ParseError) {
        guard bytes.count >= n else { throw .malformed }
        bytes = bytes.dropFirst(n)
    }

    private mutating func varint() throws(DescriptorIndex.ParseError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while let byte = bytes.first {
            bytes = bytes.dropFirst()
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
            guard shift < 64 else { throw .malformed }
        }
        throw .malformed
    }
}
