/// The ledger's field rules (ids, texts, checks) for input validated outside
/// the module, e.g. the bulk seed plan (LedgerSeed). Wraps `Validator`.
public struct FieldValidator {
    private var inner = Validator()

    public init() {}

    public mutating func id(_ value: String, _ field: String, required: Bool = true) { inner.id(value, field, required: required) }
    public mutating func text(_ value: String, _ field: String, max: Int, required: Bool = false) {
        inner.text(value, field, max: max, required: required)
    }
    public mutating func check(_ condition: Bool, _ field: String, _ description: String) { inner.check(condition, field, description) }
    /// Throws `invalidArgument` naming every bad field.
    public func finish() throws(LedgerError) { try inner.finish() }
}
