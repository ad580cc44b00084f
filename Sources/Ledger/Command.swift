/// A write to the ledger: validated, then applied by the single writer inside
/// a savepoint of a group-commit transaction.
public protocol LedgerCommand: Sendable {
    associatedtype Output: Sendable
    /// Names the operation in idempotency records ("spend", "purchase", …).
    static var operation: String { get }
    /// The tenant the command acts in (its idempotency scope).
    var tenantId: String { get }
    /// Required for money movements, optional elsewhere.
    var idempotencyKey: String? { get }
    /// The request as canonical (field, value) pairs: a retry with the same key
    /// must match them all; the names of those that differ are reported.
    var idempotencyFields: [(String, String)] { get }
    /// Throws `LedgerError.invalidArgument` for bad input. Runs before queueing.
    func validate() throws(LedgerError)
    func apply(_ store: LedgerStore) throws -> Output
    /// The id and ledger seq of the result, for the idempotency record.
    func resultId(_ output: Output) -> String
    func resultSeq(_ output: Output) -> Int64
}

/// What a write returned: applied now, or the stored reply of an earlier
/// request with the same idempotency key.
///
/// `reply` is what the write's encoder made of the output, once, on the
/// writer thread: the bytes stored for replays are the bytes answered.
public enum WriteOutcome<Output: Sendable>: Sendable {
    case applied(Output, reply: [UInt8])
    case replayed(reply: [UInt8], resultId: String, seq: Int64)

    /// The reply bytes: encoded now, or stored by the first request.
    public var reply: [UInt8] {
        switch self {
        case .applied(_, let reply), .replayed(let reply, _, _): return reply
        }
    }
}

/// Validation helpers shared by commands.
struct Validator {
    var violations: [LedgerError.FieldViolation] = []

    mutating func id(_ value: String, _ field: String, required: Bool = true) {
        if value.isEmpty {
            if required { violations.append(.init(field, "is required")) }
            return
        }
        if value.utf8.count > LedgerLimits.maxIdLength {
            violations.append(.init(field, "is longer than \(LedgerLimits.maxIdLength) bytes"))
        } else if !value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
            violations.append(.init(field, "must be printable ASCII without spaces"))
        }
    }

    mutating func ids(_ values: [String], _ field: String) {
        if values.count > LedgerLimits.maxScopeEntries {
            violations.append(.init(field, "has more than \(LedgerLimits.maxScopeEntries) entries"))
        }
        for (i, value) in values.enumerated() { id(value, "\(field)[\(i)]") }
    }

    mutating func text(_ value: String, _ field: String, max: Int = LedgerLimits.maxNoteLength, required: Bool = false) {
        if required && value.isEmpty { violations.append(.init(field, "is required")) }
        if value.utf8.count > max { violations.append(.init(field, "is longer than \(max) bytes")) }
        if value.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\n" && $0 != "\t" }) {
            violations.append(.init(field, "contains control characters"))
        }
    }

    mutating func positiveAmount(_ value: Int64, _ field: String) {
        if value <= 0 { violations.append(.init(field, "must be greater than 0")) }
        else if value > LedgerLimits.maxAmountMinor { violations.append(.init(field, "must be at most \(LedgerLimits.maxAmountMinor)")) }
    }

    mutating func nonNegativeAmount(_ value: Int64, _ field: String) {
        if value < 0 { violations.append(.init(field, "must not be negative")) }
        else if value > LedgerLimits.maxAmountMinor { violations.append(.init(field, "must be at most \(LedgerLimits.maxAmountMinor)")) }
    }

    mutating func idempotencyKey(_ value: String?, required: Bool) {
        guard let value, !value.isEmpty else {
            if required { violations.append(.init("idempotency_key", "is required (field or idempotency-key metadata)")) }
            return
        }
        id(value, "idempotency_key")
    }

    mutating func scope(_ scope: Scope, _ field: String) {
        ids(scope.serviceCategories, "\(field).service_categories")
        ids(scope.centers, "\(field).centers")
        ids(scope.membershipIds, "\(field).membership_ids")
    }

    /// The fields shared by spends and holds.
    mutating func draw(clientId: String, amountMinor: Int64, centerId: String, bookingRef: String,
                       serviceCategory: String?, membershipId: String?, idempotencyKey: String?) {
        id(clientId, "client_id")
        positiveAmount(amountMinor, "amount_minor")
        id(centerId, "center_id")
        id(bookingRef, "booking_ref", required: false)
        id(serviceCategory ?? "", "service_category", required: false)
        id(membershipId ?? "", "membership_id", required: false)
        self.idempotencyKey(idempotencyKey, required: true)
    }

    mutating func check(_ condition: Bool, _ field: String, _ description: String) {
        if !condition { violations.append(.init(field, description)) }
    }

    func finish() throws(LedgerError) {
        if !violations.isEmpty { throw .invalidArgument(violations) }
    }
}

/// Canonical text of optional and list values for idempotency fields.
enum Canonical {
    static func opt<T>(_ value: T?) -> String { value.map { "\($0)" } ?? "" }
    static func list(_ values: [String]) -> String { values.map(escape).joined(separator: ",") }

    /// Percent-escapes the separators of the canonical forms ('%', '\n', '=',
    /// ',', '|'), so that different values never encode alike.
    static func escape(_ value: String) -> String {
        // Byte scan: these separators are ASCII, never part of a multi-byte scalar.
        guard value.utf8.contains(where: { $0 == 0x25 || $0 == 0x0A || $0 == 0x3D || $0 == 0x2C || $0 == 0x7C }) else { return value }
        var out = ""
        for ch in value {
            switch ch {
            case "%": out += "%25"
            case "\n": out += "%0A"
            case "=": out += "%3D"
            case ",": out += "%2C"
            case "|": out += "%7C"
            default: out.append(ch)
            }
        }
        return out
    }
    static func scope(_ scope: Scope) -> String {
        "\(list(scope.serviceCategories))|\(list(scope.centers))|\(list(scope.membershipIds))"
    }
}
