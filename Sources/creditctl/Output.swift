// Printing values: JSON (stable: fields in proto declaration order, proto
// field names, int64 as JSON numbers) and aligned text for people.

import Foundation

enum JSONWriter {
    static func render(_ v: Value, pretty: Bool = true) -> String {
        var out = ""
        write(v, into: &out, indent: pretty ? 0 : nil)
        return out
    }

    private static func write(_ v: Value, into out: inout String, indent: Int?) {
        switch v {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .uint(let u): out += String(u)
        case .double(let d): out += d.isFinite ? (d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)) : "null"
        case .string(let s): quote(s, into: &out)
        case .array(let items):
            writeList(items.map { (nil, $0) }, open: "[", close: "]", into: &out, indent: indent)
        case .object(let fields):
            writeList(fields.map { ($0.0, $0.1) }, open: "{", close: "}", into: &out, indent: indent)
        }
    }

    private static func writeList(_ items: [(String?, Value)], open: String, close: String,
                                  into out: inout String, indent: Int?) {
        out += open
        if items.isEmpty { out += close; return }
        let inner = indent.map { $0 + 2 }
        for (i, (key, value)) in items.enumerated() {
            if i > 0 { out += "," }
            if let inner { out += "\n" + String(repeating: " ", count: inner) }
            if let key {
                quote(key, into: &out)
                out += indent == nil ? ":" : ": "
            }
            write(value, into: &out, indent: inner)
        }
        if let indent { out += "\n" + String(repeating: " ", count: indent) }
        out += close
    }

    private static func quote(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }
}

/// Text for people: `key  value` lines aligned on the value; nested messages
/// indented; a list of messages as a table whose columns are their scalar fields.
enum TextWriter {
    static func render(_ v: Value) -> String {
        var lines: [String] = []
        write(v, indent: 0, into: &lines)
        return lines.joined(separator: "\n")
    }

    private static func write(_ v: Value, indent: Int, into lines: inout [String]) {
        let pad = String(repeating: " ", count: indent)
        guard case .object(let fields) = v else {
            lines.append(pad + scalarText(v))
            return
        }
        let width = fields.filter { isScalar($0.1) }.map(\.0.count).max() ?? 0
        for (key, value) in fields {
            switch value {
            case .object(let sub) where sub.isEmpty:
                lines.append(pad + key + ": {}")
            case .object:
                lines.append(pad + key + ":")
                write(value, indent: indent + 2, into: &lines)
            case .array(let items) where items.isEmpty:
                lines.append(pad + key + ": (none)")
            case .array(let items) where items.allSatisfy(isScalar):
                lines.append(pad + key.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                             + items.map(scalarText).joined(separator: ", "))
            case .array(let items):
                lines.append(pad + key + " (\(items.count)):")
                table(items, indent: indent + 2, into: &lines)
            default:
                lines.append(pad + key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + scalarText(value))
            }
        }
    }

    /// Rows of objects: a column per scalar field any row has; nested values as compact JSON.
    private static func table(_ rows: [Value], indent: Int, into lines: inout [String]) {
        var columns: [String] = []
        for case .object(let fields) in rows {
            for (k, _) in fields where !columns.contains(k) { columns.append(k) }
        }
        guard !columns.isEmpty else {
            rows.forEach { lines.append(String(repeating: " ", count: indent) + scalarText($0)) }
            return
        }
        let cells: [[String]] = rows.map { row in columns.map { c in row[c].map(cellText) ?? "" } }
        let widths = columns.indices.map { i in max(columns[i].count, cells.map { $0[i].count }.max() ?? 0) }
        let pad = String(repeating: " ", count: indent)
        func line(_ values: [String]) -> String {
            var parts = zip(values, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }
            parts[parts.count - 1] = values[values.count - 1]
            return pad + parts.joined(separator: "  ")
        }
        lines.append(line(columns.map { $0.uppercased() }))
        cells.forEach { lines.append(line($0)) }
    }

    private static func isScalar(_ v: Value) -> Bool {
        switch v {
        case .array, .object: return false
        default: return true
        }
    }

    private static func cellText(_ v: Value) -> String {
        isScalar(v) ? scalarText(v) : JSONWriter.render(v, pretty: false)
    }

    static func scalarText(_ v: Value) -> String {
        switch v {
        case .string(let s): return s.isEmpty ? "-" : s
        case .null: return "-"
        default: return JSONWriter.render(v, pretty: false)
        }
    }
}
