/// Balance write-offs (seed 000): remove credit from a client with a reason;
/// a void puts it back where it came from.

public struct WriteOffResult: Sendable, Equatable {
    public var writeOff: WriteOff
    public var balance: BalanceSummary
}

public struct CreateWriteOff: StorageCommand {
    public static let operation = "write_off"
    public var tenantId: String
    public var clientId: String
    public var amountMinor: Int64
    public var reason: String
    public var idempotencyKey: String?

    public init(tenantId: String, clientId: String, amountMinor: Int64, reason: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.clientId = clientId
        self.amountMinor = amountMinor
        self.reason = reason
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("client_id", clientId), ("amount_minor", "\(amountMinor)"), ("reason", reason)]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(clientId, "client_id")
        v.positiveAmount(amountMinor, "amount_minor")
        v.text(reason, "reason", required: true)
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> WriteOffResult {
        let now = store.clock.nowMicros()
        let allocations = try store.drawEligible(tenant: tenantId, client: clientId, amountMinor: amountMinor, centerId: nil,
                                                 serviceCategory: nil, membershipId: nil, hold: false)
        let id = IDs.make("wof", clock: store.clock)
        let entry = try store.appendEntry(tenant: tenantId, EntryPlans.writeOff(
            clientId: clientId, writeOffId: id, amountMinor: amountMinor, reason: reason, idempotencyKey: idempotencyKey ?? "",
            allocations: allocations))
        let writeOff = WriteOff(id: id, clientId: clientId, amountMinor: amountMinor, reason: reason, state: .active, seq: entry.seq,
                                voidSeq: nil, createdMicros: now, allocations: allocations)
        try store.insertWriteOff(writeOff, tenant: tenantId)
        return WriteOffResult(writeOff: writeOff, balance: BalanceSummary(clientId: clientId, availableMinor: entry.availableAfterMinor,
                                                                          heldMinor: entry.heldAfterMinor, seq: entry.seq))
    }

    public func resultId(_ output: WriteOffResult) -> String { output.writeOff.id }
    public func resultSeq(_ output: WriteOffResult) -> Int64 { output.balance.seq }
}

/// Voids a write-off: the credit returns to the lots it was taken from
/// (credit of lots expired since is expired again at once).
public struct VoidWriteOff: StorageCommand {
    public static let operation = "void_write_off"
    public var tenantId: String
    public var writeOffId: String
    public var idempotencyKey: String?

    public init(tenantId: String, writeOffId: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.writeOffId = writeOffId
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] { [("write_off_id", writeOffId)] }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(writeOffId, "write_off_id")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> WriteOffResult {
        _ = try store.requireTenant(tenantId)
        guard var writeOff = try store.writeOff(tenant: tenantId, id: writeOffId) else {
            throw LedgerError.notFound(kind: "write_off", id: writeOffId)
        }
        guard writeOff.state == .active else { throw LedgerError.writeOffVoided(writeOffId: writeOffId) }
        let plan = try EntryPlans.voidWriteOff(writeOff, idempotencyKey: idempotencyKey ?? "",
                                               owed: try store.outstandingDraws(tenant: tenantId, refId: writeOffId))
        let allocations = plan.allocations
        let entry = try store.appendEntry(tenant: tenantId, plan)
        try store.markWriteOffVoided(tenant: tenantId, id: writeOffId, voidSeq: entry.seq)
        try settleExpiredLots(store: store, tenant: tenantId, lotIds: allocations.map(\.lotId))
        try store.expireDueLots(tenant: tenantId, client: writeOff.clientId, now: store.clock.nowMicros())
        writeOff.state = .voided
        writeOff.voidSeq = entry.seq
        writeOff.allocations = try store.allocations(tenant: tenantId, seq: writeOff.seq)
        return WriteOffResult(writeOff: writeOff, balance: try store.summary(tenant: tenantId, client: writeOff.clientId))
    }

    public func resultId(_ output: WriteOffResult) -> String { output.writeOff.id }
    public func resultSeq(_ output: WriteOffResult) -> Int64 { output.balance.seq }
}
