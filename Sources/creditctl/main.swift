// creditctl: the command-line client of the credits API, for people and scripts.
// One gRPC call per command (or one per page with --all) over the shared
// GRPCClient; requests built from flags by the request message's schema;
// responses printed as aligned text or, with --json, as one JSON object.

import CreditsProto
import Foundation
import GRPCClient

/// Exit codes besides the gRPC status codes (1-16), from sysexits.h.
enum Exit {
    static let usage: Int32 = 64
    static let dataError: Int32 = 65
    static let noInput: Int32 = 66
    static let unavailable: Int32 = 69
}

struct Failure: Error {
    var code: Int32
    var message: String
}

let usageText = """
usage: creditctl [global flags] COMMAND [ARG] [--field value ...]

Calls the credits gRPC API. Each command's flags are the fields of its request
message (`creditctl COMMAND --help` lists them): --client-id c1 or
--client-id=c1; a bare ARG fills the command's main field; booleans may be
given bare (--include-details); repeated fields by repeating the flag;
message fields as JSON (--scope '{"center_ids":["c1"]}'); enums by name, with
or without their prefix (--reason purchase); times as RFC 3339, Unix seconds
or from now (+30m, +2h, +7d).
Money is always in minor units (amount_minor: 1250 = 12.50).

Global flags:
  --target HOST:PORT     server address (default $CREDITS_TARGET or 127.0.0.1:50051)
  --token-file FILE      read the API token from FILE (default: $CREDITS_TOKEN);
                         never given on the command line, where `ps` shows it
  --on-behalf-of TENANT  the tenant a directory key acts for (x-on-behalf-of)
  --deadline SECONDS     give up after this long (default 10)
  --json                 print the response as one JSON object (errors too, on stderr)
  --all                  paged commands: follow next_page_token and print every item
  --request JSON         start the request from this JSON object (flags override)
  -h, --help             this help; COMMAND --help lists the command's fields

Mutations take --idempotency-key KEY; without one a key is generated and
printed on stderr ("idempotency-key: ...") so a retry can reuse it; with
--json a failed call has it in its JSON error object instead.

Output: text for people; --json prints proto field names in declaration
order, every field (zero values included), int64 as JSON numbers with every
digit (readers that hold numbers as doubles, e.g. JavaScript, lose precision
above 2^53), enums by name, timestamps as RFC 3339, bytes as base64.

Exit codes: 0 OK; 1-16 the gRPC status code of the answer (3 INVALID_ARGUMENT,
4 DEADLINE_EXCEEDED, 5 NOT_FOUND, 7 PERMISSION_DENIED, 9 FAILED_PRECONDITION,
14 UNAVAILABLE, 16 UNAUTHENTICATED, ...); 64 usage error; 65 a response that
cannot be decoded; 66 token file unreadable; 69 cannot connect to the server.

Commands:
"""

func commandList() -> String {
    let width = Commands.all.map { $0.name.count + ($0.positional.map { $0.count + 3 } ?? 0) }.max() ?? 0
    return Commands.all.map { c in
        let head = c.name + (c.positional.map { " [\($0.uppercased())]" } ?? "")
        return "  " + head.padding(toLength: width + 2, withPad: " ", startingAt: 0) + c.summary
    }.joined(separator: "\n")
}

/// The global options and the request fields given on the command line.
struct Invocation {
    var target = ProcessInfo.processInfo.environment["CREDITS_TARGET"] ?? "127.0.0.1:50051"
    var tokenFile: String?
    var onBehalfOf: String?
    var deadlineSeconds = 10.0
    var json = false
    var all = false
    var help = false
    var requestJSON: String?
    var command: Command?
    /// Request fields in the order given: (field name, value text).
    var fields: [(String, String)] = []
}

func parse(_ args: [String]) throws(Failure) -> Invocation {
    var inv = Invocation()
    var rest: [String] = []
    var i = 0
    func value(_ flag: String) throws(Failure) -> String {
        i += 1
        guard i < args.count else { throw Failure(code: Exit.usage, message: "\(flag) needs a value") }
        return args[i]
    }
    // Global flags may appear anywhere; the rest is the command and its fields.
    while i < args.count {
        let arg = args[i]
        let (flag, inline) = splitFlag(arg)
        func v() throws(Failure) -> String { if let inline { return inline }; return try value(flag) }
        switch flag {
        case "--target": inv.target = try v()
        case "--token-file": inv.tokenFile = try v()
        case "--on-behalf-of": inv.onBehalfOf = try v()
        case "--deadline":
            let text = try v()
            guard let s = Double(text), s > 0, s <= 3600 else {
                throw Failure(code: Exit.usage, message: "--deadline must be seconds in (0, 3600], got '\(text)'")
            }
            inv.deadlineSeconds = s
        case "--json": inv.json = true
        case "--all": inv.all = true
        case "--request": inv.requestJSON = try v()
        case "-h", "--help": inv.help = true
        case "--token":
            throw Failure(code: Exit.usage, message: "--token is not accepted (it would show in `ps`): use $CREDITS_TOKEN or --token-file FILE")
        default: rest.append(arg)
        }
        i += 1
    }
    guard !rest.isEmpty else {
        if inv.help { return inv }
        throw Failure(code: Exit.usage, message: "no command given (creditctl --help lists them)")
    }
    guard let found = Commands.find(rest) else {
        throw Failure(code: Exit.usage, message: "unknown command '\(rest[0])' (creditctl --help lists them)")
    }
    let (command, used) = found
    inv.command = command
    guard let schema = SchemaRegistry.shared.message(command.method.requestType) else {
        throw Failure(code: Exit.usage, message: "no schema for \(command.method.requestType)")
    }
    var j = used
    while j < rest.count {
        let arg = rest[j]
        if arg.hasPrefix("--") {
            let (flag, inline) = splitFlag(arg)
            let given = String(flag.dropFirst(2))
            let name = command.aliases[given] ?? given
            let topName = String(name.split(separator: ".").first ?? "")
            guard let field = schema.field(named: topName) else {
                throw Failure(code: Exit.usage, message: "\(command.name) has no flag --\(given) (creditctl \(command.name) --help)")
            }
            let canonical = ([field.name] + name.split(separator: ".").dropFirst().map { $0.replacingOccurrences(of: "-", with: "_") })
                .joined(separator: ".")
            if let inline {
                inv.fields.append((canonical, inline))
            } else if field.type == .bool, !name.contains("."), j + 1 >= rest.count || rest[j + 1].hasPrefix("--")
                        || !["true", "false", "1", "0"].contains(rest[j + 1]) {
                inv.fields.append((canonical, "true"))
            } else {
                j += 1
                guard j < rest.count else { throw Failure(code: Exit.usage, message: "--\(given) needs a value") }
                inv.fields.append((canonical, rest[j]))
            }
        } else if let positional = command.positional, !inv.fields.contains(where: { $0.0 == positional }) {
            inv.fields.append((positional, arg))
        } else {
            throw Failure(code: Exit.usage, message: "unexpected argument '\(arg)' for \(command.name)")
        }
        j += 1
    }
    return inv
}

func splitFlag(_ arg: String) -> (String, String?) {
    guard arg.hasPrefix("--"), let eq = arg.firstIndex(of: "=") else { return (arg, nil) }
    return (String(arg[..<eq]), String(arg[arg.index(after: eq)...]))
}

/// The request as a Value: --request JSON first, then each flag (dotted names nest; repeats append).
func requestValue(_ inv: Invocation, schema: MessageSchema) throws(Failure) -> Value {
    var root: Value = .object([])
    if let text = inv.requestJSON {
        guard let data = text.data(using: .utf8), let any = try? JSONSerialization.jsonObject(with: data),
              case .object = Value(json: any) else {
            throw Failure(code: Exit.usage, message: "--request must be a JSON object")
        }
        root = Value(json: any)
    }
    for (name, text) in inv.fields {
        var v: Value = .string(text)
        if text.hasPrefix("{") || text.hasPrefix("["), let data = text.data(using: .utf8),
           let any = try? JSONSerialization.jsonObject(with: data) {
            v = Value(json: any)
        }
        set(&root, path: name.split(separator: ".").map(String.init), value: v, schema: schema)
    }
    return root
}

private func set(_ node: inout Value, path: [String], value: Value, schema: MessageSchema?) {
    guard case .object(var fields) = node, let key = path.first else { return }
    let field = schema?.field(named: key)
    let index = fields.firstIndex { $0.0 == key }
    if path.count == 1 {
        if field?.repeated == true, case .array = value {
            if let index { fields.remove(at: index) }
            fields.append((key, value))
        } else if field?.repeated == true {
            if let index, case .array(let items) = fields[index].1 {
                fields[index].1 = .array(items + [value])
            } else {
                if let index { fields.remove(at: index) }
                fields.append((key, .array([value])))
            }
        } else if let index {
            fields[index].1 = value
        } else {
            fields.append((key, value))
        }
    } else {
        var child: Value = index.map { fields[$0].1 } ?? .object([])
        if case .object = child {} else { child = .object([]) }
        set(&child, path: Array(path.dropFirst()), value: value,
            schema: field.flatMap { SchemaRegistry.shared.message($0.typeName) })
        if let index { fields[index].1 = child } else { fields.append((key, child)) }
    }
    node = .object(fields)
}

func commandHelp(_ command: Command) -> String {
    let registry = SchemaRegistry.shared
    guard let schema = registry.message(command.method.requestType) else { return "" }
    var lines = ["usage: creditctl \(command.name)" + (command.positional.map { " [\($0.uppercased())]" } ?? "") + " [--field value ...]",
                 "", "\(command.summary): \(command.method.path)",
                 "request \(command.method.requestType), response \(command.method.responseType)", "", "Fields:"]
    let reverseAliases = Dictionary(command.aliases.map { ($0.value, $0.key) }, uniquingKeysWith: { a, _ in a })
    for f in schema.fields {
        var type: String
        switch f.type {
        case .enumeration:
            type = "enum: " + (registry.enumeration(f.typeName)?.values.map(\.name).joined(separator: " | ") ?? f.typeName)
        case .message: type = f.typeName == "google.protobuf.Timestamp" ? "time (RFC 3339, Unix seconds or +N[smhd])" : "JSON \(f.typeName)"
        default: type = String(describing: f.type)
        }
        if f.repeated { type = "repeated " + type }
        let alias = reverseAliases[f.name].map { " (or --\($0))" } ?? ""
        lines.append("  --\(f.name.replacingOccurrences(of: "_", with: "-"))\(alias)  \(type)")
    }
    if command.isMutation {
        lines += ["", "A mutation: without --idempotency-key one is generated and printed on stderr."]
    }
    if command.isPaged {
        lines += ["", "Paged: --page-size N, --page-token T from next_page_token, or --all to follow every page."]
    }
    return lines.joined(separator: "\n")
}

// MARK: - running a call

/// Limits: at most this many pages are followed with --all.
let maxPages = 10_000

func readToken(_ inv: Invocation) throws(Failure) -> String? {
    if let file = inv.tokenFile {
        guard let data = FileManager.default.contents(atPath: file) else {
            let reason = FileManager.default.fileExists(atPath: file) ? "not readable" : "no such file"
            throw Failure(code: Exit.noInput, message: "cannot read token file \(file): \(reason)")
        }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw Failure(code: Exit.noInput, message: "token file \(file) is empty") }
        return token
    }
    let env = ProcessInfo.processInfo.environment["CREDITS_TOKEN"]?.trimmingCharacters(in: .whitespacesAndNewlines)
    return env?.isEmpty == false ? env : nil
}

/// An answer that is not OK: the status, its message and decoded details.
struct CallError {
    var code: Int
    var message: String
    var details: [Value]

    var exitCode: Int32 { Int32(code) }

    /// `generatedKey`: the idempotency key creditctl made up for this call, for a retry.
    func json(generatedKey: String?) -> Value {
        var fields: [(String, Value)] = [("code", .int(Int64(code))), ("status", .string(grpcStatusName(code))),
                                         ("message", .string(message)), ("details", .array(details))]
        if let generatedKey { fields.append(("idempotency_key", .string(generatedKey))) }
        return .object([("error", .object(fields))])
    }

    var text: String {
        var lines = ["error: \(grpcStatusName(code)) (\(code)): \(message)"]
        for d in details {
            let type = d["@type"].map(TextWriter.scalarText) ?? ""
            if type.hasSuffix("google.rpc.ErrorInfo") {
                lines.append("  reason: \(d["reason"].map(TextWriter.scalarText) ?? "-")"
                             + (d["domain"].map { " (domain \(TextWriter.scalarText($0)))" } ?? ""))
                if case .object(let pairs)? = d["metadata"] {
                    for (k, v) in pairs { lines.append("  \(k): \(TextWriter.scalarText(v))") }
                }
            } else if type.hasSuffix("google.rpc.BadRequest") || type.hasSuffix("credits.v1.ImportRecordFailure") {
                if case .array(let violations)? = d["field_violations"] {
                    for v in violations {
                        lines.append("  field \(v["field"].map(TextWriter.scalarText) ?? "-"): "
                                     + (v["description"].map(TextWriter.scalarText) ?? ""))
                    }
                }
            } else {
                lines.append("  detail: " + JSONWriter.render(d, pretty: false))
            }
        }
        return lines.joined(separator: "\n")
    }
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec).
func percentDecoded(_ s: String) -> String { s.removingPercentEncoding ?? s }

func callError(_ call: CompletedCall) -> CallError {
    switch call.outcome {
    case .grpcStatus(let code):
        var details: [Value] = []
        if let encoded = call.response.metadata("grpc-status-details-bin"),
           let bytes = Data(base64Encoded: padBase64(encoded)),
           let schema = SchemaRegistry.shared.message("google.rpc.Status"),
           let status = try? MessageDecoder(registry: .shared).decode(Array(bytes), as: schema),
           case .array(let items)? = status["details"] {
            details = items
        }
        return CallError(code: code, message: percentDecoded(call.grpcMessage), details: details)
    case .timedOut:
        return CallError(code: 4, message: "no answer within the deadline", details: [])
    case .connectionLost:
        return CallError(code: 14, message: "the connection closed before the answer", details: [])
    case .goaway:
        return CallError(code: 14, message: "the server is shutting down and refused the call", details: [])
    case .reset(let h2code):
        return CallError(code: h2code == 8 ? 1 : h2code == 7 ? 14 : 13, message: "stream reset (HTTP/2 error \(h2code))", details: [])
    case .httpStatus(let status):
        return CallError(code: 2, message: "HTTP \(status) without grpc-status", details: [])
    case .badResponse:
        return CallError(code: 13, message: "undecodable response", details: [])
    }
}

func padBase64(_ s: String) -> String {
    s + String(repeating: "=", count: (4 - s.count % 4) % 4)
}

/// Runs the invocation; returns the exit code.
func run(_ inv: Invocation) throws(Failure) -> Int32 {
    guard let command = inv.command else { return 0 }
    let registry = SchemaRegistry.shared
    guard let requestSchema = registry.message(command.method.requestType),
          let responseSchema = registry.message(command.method.responseType) else {
        throw Failure(code: Exit.usage, message: "no schema for \(command.method.path)")
    }
    var request = try requestValue(inv, schema: requestSchema)
    // A generated key is printed on stderr before the call (text) or after it (--json: a failure
    // carries it in its JSON error object, so stderr stays one JSON object).
    var generatedKey: String?
    if command.isMutation, request["idempotency_key"] == nil {
        let key = UUID().uuidString.lowercased()
        set(&request, path: ["idempotency_key"], value: .string(key), schema: requestSchema)
        generatedKey = key
        if !inv.json { FileHandle.standardError.write(Data("idempotency-key: \(key)\n".utf8)) }
    }
    var metadata: [(String, String)] = []
    if let token = try readToken(inv) { metadata.append(("authorization", "Bearer \(token)")) }
    if let tenant = inv.onBehalfOf { metadata.append(("x-on-behalf-of", tenant)) }
    var options = H2ClientSession.Options()
    options.keepsHeaderFields = true
    let deadline = monotonicNanos() + UInt64(inv.deadlineSeconds * 1e9)
    let connection: H2Connection
    do throws(ClientError) {
        connection = try H2Connection(target: inv.target, metadata: metadata + [("grpc-timeout", "\(Int(inv.deadlineSeconds * 1000))m")],
                                      userAgent: "creditctl/0.1", options: options,
                                      connectTimeoutMillis: Int32(min(inv.deadlineSeconds, 60) * 1000))
    } catch .badTarget(let t) {
        throw Failure(code: Exit.usage, message: "bad --target '\(t)' (want host:port)")
    } catch {
        throw Failure(code: Exit.unavailable, message: error.description)
    }

    var merged: Value?
    var pages = 0
    while true {
        let bytes: [UInt8]
        do throws(ValueError) {
            bytes = try MessageEncoder(registry: registry).encode(request, as: requestSchema)
        } catch {
            throw Failure(code: Exit.usage, message: error.description)
        }
        let call: CompletedCall
        do throws(ClientError) {
            call = try connection.unaryCall(path: command.method.path, message: bytes, deadlineNanos: deadline)
        } catch {
            throw Failure(code: Exit.unavailable, message: error.description)
        }
        guard call.outcome.isOK else {
            let error = callError(call)
            let text = inv.json ? JSONWriter.render(error.json(generatedKey: generatedKey)) : error.text
            FileHandle.standardError.write(Data((text + "\n").utf8))
            return error.exitCode
        }
        guard let body = call.firstMessage,
              let page = try? MessageDecoder(registry: registry).decode(Array(body), as: responseSchema) else {
            throw Failure(code: Exit.dataError, message: "the response could not be decoded as \(command.method.responseType)")
        }
        pages += 1
        merged = merged.map { appendPage($0, page) } ?? page
        guard inv.all, command.isPaged, case .string(let next)? = page["next_page_token"], !next.isEmpty else { break }
        guard pages < maxPages else {
            throw Failure(code: Exit.dataError, message: "more than \(maxPages) pages: narrow the query or page by hand")
        }
        set(&request, path: ["page_token"], value: .string(next), schema: requestSchema)
    }
    let output = merged ?? .object([])
    print(inv.json ? JSONWriter.render(output) : TextWriter.render(output))
    if inv.json, let generatedKey { FileHandle.standardError.write(Data("idempotency-key: \(generatedKey)\n".utf8)) }
    return 0
}

/// `page`'s repeated fields appended to `base`'s; its other fields (next_page_token) win.
func appendPage(_ base: Value, _ page: Value) -> Value {
    guard case .object(let a) = base, case .object(let b) = page else { return page }
    return .object(b.map { key, value in
        if case .array(let more) = value, case .array(let first)? = a.first(where: { $0.0 == key })?.1 {
            return (key, .array(first + more))
        }
        return (key, value)
    })
}

// MARK: - main

setvbuf(stdout, nil, _IOFBF, 1 << 16)
let arguments = Array(CommandLine.arguments.dropFirst())
let wantsJSON = arguments.contains("--json")
func fail(_ f: Failure) -> Never {
    let text = wantsJSON
        ? JSONWriter.render(.object([("error", .object([("code", .int(Int64(f.code))), ("message", .string(f.message))]))]))
        : "creditctl: \(f.message)"
    FileHandle.standardError.write(Data((text + "\n").utf8))
    exit(f.code)
}
do {
    let inv = try parse(arguments)
    if inv.help {
        print(inv.command.map(commandHelp) ?? usageText + "\n" + commandList())
        exit(0)
    }
    let code = try run(inv)
    fflush(stdout)
    exit(code)
} catch {
    fflush(stdout)
    fail(error)
}
