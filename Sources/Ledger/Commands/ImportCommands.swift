/// Opening lots loaded from a legacy system (ImportLots): one command per
/// record, idempotent by the record's own key.

/// What one imported record became: its lot and the tenant's seq after it.
public struct ImportLotResult: Sendable, Equatable {
    public var lotId: String
    /// The seq of the record's last entry (the IMPORT entry, or the EXPIRY
    /// entry that follows it at once when valid_until is already past).
    public var seq: Int64
    /// The record's valid_until was already past: the lot was expired at
    /// once, its credit written off as breakage.
    public var expiredAtOnce: Bool
}

/// Creates one lot of origin IMPORT, funded from `funding:import` by one
/// IMPORT entry. The record key is the idempotency key (operation "import"),
/// and every record field is an idempotency field: the same record again
/// replays, the same key with other fields is IDEMPOTENCY_KEY_REUSED.
///
/// A valid_until that is already past is allowed: the lot is expired in the
/// same command (an EXPIRY entry to breakage right after the IMPORT entry),
/// so the ledger never shows an imported balance that is already void.
public struct ImportLot: StorageCommand {
    public static let operation = "import"
    /// legacy_origin is stored as the entry's reason; reasons are short.
    public static let maxLegacyOriginBytes = 128

    public var tenantId: String
    public var recordKey: String
    public var clientId: String
    public var amountMinor: Int64
    public var centerId: String
    public var scope: Scope
    public var validFromMicros: Int64?
    public var validUntilMicros: Int64?
    /// The legacy system's reference: the lot's and the entry's payment_ref.
    public var externalRef: String
    /// What the credit was in the legacy system: the entry's reason.
    public var legacyOrigin: String
    public var priceMinor: Int64
    public var note: String

    public init(tenantId: String, recordKey: String, clientId: String, amountMinor: Int64, centerId: String, scope: Scope,
                validFromMicros: Int64?, validUntilMicros: Int64?, externalRef: String, legacyOrigin: String,
                priceMinor: Int64, note: String) {
        self.tenantId = tenantId
        self.recordKey = recordKey
        self.clientId = clientId
        self.amountMinor = amountMinor
        self.centerId = centerId
        self.scope = scope
        self.validFromMicros = validFromMicros
        self.validUntilMicros = validUntilMicros
        self.externalRef = externalRef
        self.legacyOrigin = legacyOrigin
        self.priceMinor = priceMinor
        self.note = note
    }

    public var idempotencyKey: String? { recordKey }

    public var idempotencyFields: [(String, String)] {
        [("client_id", clientId), ("amount_minor", "\(amountMinor)"), ("center_id", centerId), ("scope", Canonical.scope(scope)),
         ("valid_from", Canonical.opt(validFromMicros)), ("valid_until", Canonical.opt(validUntilMicros)),
         ("external_ref", externalRef), ("legacy_origin", legacyOrigin), ("price_minor", "\(priceMinor)"), ("note", note)]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(recordKey, "record_key")
        v.id(clientId, "client_id")
        v.positiveAmount(amountMinor, "amount_minor")
        v.id(centerId, "center_id")
        v.scope(scope, "scope")
        if let validFromMicros, let validUntilMicros {
            v.check(validUntilMicros > validFromMicros, "valid_until", "must be after valid_from")
        }
        v.id(externalRef, "external_ref", required: false)
        v.text(legacyOrigin, "legacy_origin", max: Self.maxLegacyOriginBytes)
        v.nonNegativeAmount(priceMinor, "price_minor")
        v.text(note, "note")
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> ImportLotResult {
        let (lot, entry) = try store.createLot(
            tenant: tenantId, client: clientId, origin: .import, entryType: .import, fundingAccount: Account.imports,
            amountMinor: amountMinor, centerId: centerId, validFromMicros: validFromMicros, validUntilMicros: validUntilMicros,
            scope: scope, packageId: nil, paymentRef: externalRef.isEmpty ? nil : externalRef, priceMinor: priceMinor,
            note: note, reason: legacyOrigin, idempotencyKey: recordKey)
        precondition(entry.amountMinor == amountMinor && lot.amountMinor == amountMinor, "an import lot holds its record's amount")
        guard let validUntilMicros, validUntilMicros <= store.clock.nowMicros() else {
            return ImportLotResult(lotId: lot.id, seq: entry.seq, expiredAtOnce: false)
        }
        guard let expiry = try store.expire(tenant: tenantId, lot: lot) else {
            preconditionFailure("a new lot has all its credit free")
        }
        precondition(expiry.seq == entry.seq + 1 && expiry.amountMinor == amountMinor, "an expired import is its IMPORT entry and one EXPIRY entry of it all")
        return ImportLotResult(lotId: lot.id, seq: expiry.seq, expiredAtOnce: true)
    }

    public func resultId(_ output: ImportLotResult) -> String { output.lotId }
    public func resultSeq(_ output: ImportLotResult) -> Int64 { output.seq }
}
