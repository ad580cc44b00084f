/// Reads of single records, shared by commands (on the writer's connection)
/// and by readers (on their own connections).
struct StoreReads {
    let db: SQLiteConnection

    func apiKey(id: String) throws -> APIKeyRecord? {
        try db.statement("SELECT id, tenant_id, role, label, secret_hash, created_micros, revoked_micros FROM api_keys WHERE id = ?")
            .bind(.text(id))
            .first { APIKeyRecord(id: $0.text(0), tenantId: $0.optionalText(1), role: Role(rawValue: $0.text(2))!, label: $0.text(3),
                                  secretHash: $0.blob(4), createdMicros: $0.int(5), revokedMicros: $0.optionalInt(6)) }
    }

    func package(tenant: String, id: String) throws -> CreditPackage? {
        try db.statement("SELECT \(PackageRows.columns) FROM packages WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(PackageRows.read)
    }

    func spend(tenant: String, id: String) throws -> Spend? {
        guard var spend = try db.statement("SELECT \(SpendRows.columns) FROM spends WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(SpendRows.read) else { return nil }
        spend.allocations = try allocations(tenant: tenant, seq: spend.seq)
        return spend
    }

    func hold(tenant: String, id: String) throws -> Hold? {
        guard var hold = try db.statement("SELECT \(HoldRows.columns) FROM holds WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(HoldRows.read) else { return nil }
        hold.allocations = try allocations(tenant: tenant, seq: hold.seq)
        return hold
    }

    func writeOff(tenant: String, id: String) throws -> WriteOff? {
        guard var w = try db.statement("SELECT id, client_id, amount_minor, reason, state, seq, void_seq, created_micros FROM write_offs WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(Self.readWriteOff) else { return nil }
        w.allocations = try allocations(tenant: tenant, seq: w.seq)
        return w
    }

    static func readWriteOff(_ r: Row) -> WriteOff {
        WriteOff(id: r.text(0), clientId: r.text(1), amountMinor: r.int(2), reason: r.text(3), state: WriteOffState(rawValue: r.text(4))!,
                 seq: r.int(5), voidSeq: r.optionalInt(6), createdMicros: r.int(7), allocations: [])
    }

    /// The allocations of many entries with one query (a statement page), keyed by seq.
    func allocations(tenant: String, seqs: [Int64]) throws -> [Int64: [Allocation]] {
        guard !seqs.isEmpty else { return [:] }
        precondition(seqs.count <= LedgerLimits.maxPageSize + 1)
        var list = "["
        for (i, seq) in seqs.enumerated() {
            if i > 0 { list += "," }
            list += String(seq)
        }
        list += "]"
        let rows = try db.statement("""
            SELECT seq, lot_id, remaining_delta_minor, held_delta_minor FROM allocations
            WHERE tenant_id = ? AND seq IN (SELECT value FROM json_each(?)) ORDER BY seq, ordinal
            """).bind(.text(tenant), .text(list))
            .rows { ($0.int(0), Allocation(lotId: $0.text(1), remainingDeltaMinor: $0.int(2), heldDeltaMinor: $0.int(3))) }
        var bySeq: [Int64: [Allocation]] = [:]
        for (seq, allocation) in rows { bySeq[seq, default: []].append(allocation) }
        return bySeq
    }

    func allocations(tenant: String, seq: Int64) throws -> [Allocation] {
        try db.statement("SELECT lot_id, remaining_delta_minor, held_delta_minor FROM allocations WHERE tenant_id = ? AND seq = ? ORDER BY ordinal")
            .bind(.text(tenant), .int(seq))
            .rows { Allocation(lotId: $0.text(0), remainingDeltaMinor: $0.int(1), heldDeltaMinor: $0.int(2)) }
    }
}
