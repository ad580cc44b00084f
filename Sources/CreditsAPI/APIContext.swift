import CreditsProto
import Foundation
import GRPCServices
import GRPCTransport
import Ledger
import NIOPosix

/// What a method allows.
enum Permission {
    /// Any tenant key (staff, app, directory).
    case read
    /// Money movements apps may make: purchase, spend, hold, capture, release.
    case appWrite
    /// Staff only: orders, reversals, write-offs, adjustments, catalog changes.
    case staff
    /// The server's admin key.
    case admin
}

/// A per-thread ledger reader (each event loop has its own SQLite connection).
final class ReaderPool: @unchecked Sendable {
    private let ledger: Ledger
    private let readers = ThreadSpecificVariable<LedgerReader>()

    init(ledger: Ledger) { self.ledger = ledger }

    func reader() throws -> LedgerReader {
        if let reader = readers.currentValue { return reader }
        let reader = try ledger.makeReader()
        readers.currentValue = reader
        return reader
    }
}

/// The authenticated caller of one call, its tenant and a reader.
struct CallContext {
    let caller: Caller
    let tenantId: String
    /// The tenant's ISO 4217 currency (never changes).
    let currency: String
    let reader: LedgerReader
}

/// Shared plumbing of the credits services: authentication, permissions,
/// idempotency keys from field or metadata, writes through the ledger, and
/// error mapping.
final class APICore: Sendable {
    let ledger: Ledger
    let auth: Authenticator
    let readers: ReaderPool

    init(ledger: Ledger, auth: Authenticator) {
        self.ledger = ledger
        self.auth = auth
        self.readers = ReaderPool(ledger: ledger)
    }

    /// Authenticates and authorizes; on failure answers the call and returns nil.
    func context<Response>(_ call: ProtoCall<Response>, _ permission: Permission) -> CallContext? {
        do {
            let reader = try readers.reader()
            let caller: Caller
            do {
                caller = try auth.authenticate(call.metadata, reader: reader)
            } catch {
                call.fail(error.error)
                return nil
            }
            guard case .tenant(let tenantId, let role, _) = caller.kind else {
                call.fail(RPCError(.permissionDenied, "the admin key manages tenants and keys only", reason: .permissionDenied))
                return nil
            }
            switch permission {
            case .read, .appWrite: break
            case .staff:
                guard role == .staff else {
                    call.fail(RPCError(.permissionDenied, "this method needs a staff key", reason: .permissionDenied, metadata: ["role": role.rawValue]))
                    return nil
                }
            case .admin:
                call.fail(RPCError(.permissionDenied, "this method needs the admin key", reason: .permissionDenied))
                return nil
            }
            guard let tenant = try auth.tenant(tenantId, reader: reader) else {
                call.fail(RPCError(.unauthenticated, "invalid or revoked token", reason: .unauthenticated))
                return nil
            }
            call.call.annotate("tenant", tenant.id)
            return CallContext(caller: caller, tenantId: tenant.id, currency: tenant.currency, reader: reader)
        } catch {
            call.fail(ErrorMapping.rpcError(any: error))
            return nil
        }
    }

    /// A unary route of a tenant method: the caller is authenticated and
    /// authorized for `permission` before the request is decoded.
    func unary<Request, Response>(_ method: ProtoMethod<Request, Response>, _ permission: Permission,
                                  _ body: @escaping @Sendable (Request, ProtoCall<Response>, CallContext) -> Void) -> RPCRoute {
        ProtoRoute.unary(method, authorize: { [self] call in context(call, permission) }, body)
    }

    /// A server-streaming route of a tenant method, authorized like `unary`.
    func serverStreaming<Request, Response>(_ method: ProtoMethod<Request, Response>, _ permission: Permission,
                                            _ body: @escaping @Sendable (Request, ProtoCall<Response>, CallContext) -> Void) -> RPCRoute {
        ProtoRoute.serverStreaming(method, authorize: { [self] call in context(call, permission) }, body)
    }

    /// Runs a read; ledger errors become statuses.
    func read<Response>(_ call: ProtoCall<Response>, _ context: CallContext, _ body: (CallContext) throws -> Response) {
        do {
            call.respond(try body(context))
        } catch {
            call.fail(ErrorMapping.rpcError(any: error))
        }
    }

    /// The idempotency key from the request field or `idempotency-key`
    /// metadata; both given and different → INVALID_ARGUMENT.
    func idempotencyKey<Response>(_ field: String, _ call: ProtoCall<Response>) -> String?? {
        let header = call.metadata["idempotency-key"] ?? ""
        if !field.isEmpty && !header.isEmpty && field != header {
            call.fail(RPCError.invalid("idempotency_key", "differs from the idempotency-key metadata"))
            return .none
        }
        let key = field.isEmpty ? header : field
        return .some(key.isEmpty ? nil : key)
    }

    /// Queues a write; answers with `reply(output)`, or with the stored reply
    /// of an earlier request with the same idempotency key.
    ///
    /// The response is serialized once, by the writer (`reply` then
    /// `serializedBytes`, on its thread): those bytes are stored for replays
    /// and sent as they are; a replay sends the stored bytes without
    /// decoding them.
    ///
    /// A failure status means nothing was applied: until the writer takes the
    /// write into a batch, a passing deadline or a cancelled stream withdraws
    /// it (DEADLINE_EXCEEDED / CANCELLED, never applied); once taken, its
    /// outcome is final and is the reply, even if the deadline passes
    /// during the commit.
    ///
    /// Violations the handler found (`check`) are answered together with the
    /// command's own, in one BadRequest, and nothing is queued.
    func write<C: LedgerCommand, Response: ProtoMessage>(_ call: ProtoCall<Response>, _ command: C, _ check: RequestCheck = RequestCheck(),
                                                          reply: @escaping @Sendable (C.Output) -> Response) {
        if !check.violations.isEmpty {
            call.fail(check.merged(with: command))
            return
        }
        assert(command.idempotencyKey == nil || OperationResponses.messageName[C.operation] == Response.protoMessageName,
               "\(C.operation) answers \(Response.protoMessageName): update OperationResponses")
        let ticket = WriteTicket()
        if call.eventLoop.inEventLoop {  // (handlers run there; the hooks are event-loop state)
            call.call.onCancelled { _ = ticket.withdraw() }
            if call.deadline != nil {
                // Withdrawn now (or by the writer already): fail; taken: wait for the outcome.
                call.call.onDeadline { ticket.withdraw() || ticket.isWithdrawn ? .fail : .wait }
            }
        }
        ledger.submit(command, deadlineUptimeNanos: call.deadline?.uptimeNanoseconds, ticket: ticket,
                      encodeReply: { reply($0).serializedBytes() }) { result in
            switch result {
            case .success(let outcome):
                call.respond(serialized: outcome.reply)
            case .failure(let error):
                call.fail(ErrorMapping.rpcError(error))
            }
        }
    }
}

/// Field violations a handler finds before the ledger validates the command
/// (enums, timestamps, masks): reported together with the command's own, so
/// that one BadRequest lists every invalid field of the request.
struct RequestCheck {
    private(set) var violations: [RPCError.FieldViolation] = []

    mutating func add(_ field: String, _ description: String) {
        violations.append(RPCError.FieldViolation(field: field, description: description))
    }

    /// `value`, or `fallback` with a violation when it is nil.
    mutating func require<T>(_ value: T?, _ field: String, _ description: String, else fallback: T) -> T {
        if let value { return value }
        add(field, description)
        return fallback
    }

    /// A timestamp that may be unset: nil when unset or out of range (recorded).
    mutating func optionalTime(_ ts: Google_Protobuf_Timestamp?, _ field: String) -> Int64? {
        guard let ts else { return nil }
        guard let micros = Convert.micros(ts) else {
            add(field, "is out of range")
            return nil
        }
        return micros
    }

    /// A required timestamp: 0 with a violation when unset or out of range.
    mutating func requiredTime(_ ts: Google_Protobuf_Timestamp?, _ field: String) -> Int64 {
        guard ts != nil else {
            add(field, "is required")
            return 0
        }
        return optionalTime(ts, field) ?? 0
    }

    /// An id (1…128 printable ASCII), as the ledger's rules say.
    mutating func id(_ value: String, _ field: String, required: Bool = true) {
        if value.isEmpty {
            if required { add(field, "is required") }
            return
        }
        if value.utf8.count > LedgerLimits.maxIdLength || !value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
            add(field, "must be 1…\(LedgerLimits.maxIdLength) printable ASCII characters")
        }
    }

    /// page_size: 0 → default; 1…max; else a violation (and the default).
    mutating func pageSize(_ size: Int32) -> Int {
        if size == 0 { return LedgerLimits.defaultPageSize }
        guard size > 0, Int(size) <= LedgerLimits.maxPageSize else {
            add("page_size", "must be 0…\(LedgerLimits.maxPageSize)")
            return LedgerLimits.defaultPageSize
        }
        return Int(size)
    }

    /// For reads: throws INVALID_ARGUMENT listing every violation.
    func finish() throws(RPCErrorBox) {
        if !violations.isEmpty { throw RPCErrorBox(RPCError.invalidArgument(violations)) }
    }

    /// INVALID_ARGUMENT with these violations and the command's own (each
    /// field named once, the handler's first).
    func merged<C: LedgerCommand>(with command: C) -> RPCError {
        var all = violations
        do {
            try command.validate()
        } catch {
            if case .invalidArgument(let more) = error {
                let named = Set(all.map(\.field))
                all += more.filter { !named.contains($0.field) }.map { RPCError.FieldViolation(field: $0.field, description: $0.description) }
            }
        }
        return RPCError.invalidArgument(all)
    }
}

/// Opaque page tokens: the list's kind and filters, and a cursor. A token
/// given to another list or other filters is INVALID_ARGUMENT.
enum PageToken {
    static func encode(scope: String, cursor: String) -> String {
        Data("\(scope)\u{1F}\(cursor)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func decode(_ token: String, scope: String) throws(RPCErrorBox) -> String? {
        if token.isEmpty { return nil }
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.utf8.count % 4 != 0 { base64 += "=" }
        guard token.utf8.count <= 1024, let data = Data(base64Encoded: base64),
              let text = String(data: data, encoding: .utf8) else { throw invalid }
        let parts = text.split(separator: "\u{1F}", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == scope else { throw invalid }
        return String(parts[1])
    }

    private static var invalid: RPCErrorBox {
        RPCErrorBox(RPCError.invalid("page_token", "is not a token of this list with these filters"))
    }

    /// page_size: 0 → default; 1…max; else INVALID_ARGUMENT.
    static func pageSize(_ size: Int32) throws(RPCErrorBox) -> Int {
        var check = RequestCheck()
        let pageSize = check.pageSize(size)
        try check.finish()
        return pageSize
    }
}
