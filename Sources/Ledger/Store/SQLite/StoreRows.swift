/// The SQLite rows of the core's records (tenants, API keys, packages,
/// spends, holds, write-offs): the `LedgerStorage` calls that are not the
/// movements of money in Store.swift.
extension LedgerStore: LedgerStorage {
    // MARK: Tenants and keys

    public func insertTenant(_ tenant: Tenant) throws {
        precondition(tenant.lastSeq == 0, "a new tenant starts at seq 0")
        try db.statement("INSERT INTO tenants (id, name, currency, allow_directory, last_seq, created_micros) VALUES (?, ?, ?, ?, 0, ?)")
            .bind(.text(tenant.id), .text(tenant.name), .text(tenant.currency), .int(tenant.allowDirectory ? 1 : 0),
                  .int(tenant.createdMicros)).run()
    }

    public func setDirectoryAccess(tenant: String, allow: Bool) throws {
        try db.statement("UPDATE tenants SET allow_directory = ? WHERE id = ?").bind(.int(allow ? 1 : 0), .text(tenant)).run()
    }

    public func apiKey(id: String) throws -> APIKeyRecord? {
        try StoreReads(db: db).apiKey(id: id)
    }

    public func insertAPIKey(_ key: APIKeyRecord) throws {
        precondition(key.revokedMicros == nil, "a new key is not revoked")
        try db.statement("INSERT INTO api_keys (id, tenant_id, role, label, secret_hash, created_micros) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(.text(key.id), key.tenantId.map(SQLValue.text) ?? .null, .text(key.role.rawValue), .text(key.label),
                  .blob(key.secretHash), .int(key.createdMicros)).run()
    }

    public func revokeAPIKey(id: String, atMicros: Int64) throws {
        try db.statement("UPDATE api_keys SET revoked_micros = ? WHERE id = ?").bind(.int(atMicros), .text(id)).run()
    }

    // MARK: Packages

    public func package(tenant: String, id: String) throws -> CreditPackage? {
        try StoreReads(db: db).package(tenant: tenant, id: id)
    }

    public func insertPackage(_ package: CreditPackage, tenant: String) throws {
        try PackageRows.insert(package, tenant: tenant, db: db)
    }

    public func updatePackage(_ package: CreditPackage, tenant: String) throws {
        try PackageRows.update(package, tenant: tenant, db: db)
    }

    // MARK: Spends, holds and write-offs

    public func allocations(tenant: String, seq: Int64) throws -> [Allocation] {
        try StoreReads(db: db).allocations(tenant: tenant, seq: seq)
    }

    public func spend(tenant: String, id: String) throws -> Spend? {
        try StoreReads(db: db).spend(tenant: tenant, id: id)
    }

    public func insertSpend(_ s: Spend, tenant: String) throws {
        precondition(s.reversedMinor == 0, "a new spend has nothing reversed")
        try db.statement("INSERT INTO spends (tenant_id, \(SpendRows.columns)) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)")
            .bind(.text(tenant), .text(s.id), .text(s.clientId), .int(s.amountMinor), .text(s.reason.rawValue), .text(s.centerId),
                  .text(s.bookingRef), s.serviceCategory.map(SQLValue.text) ?? .null, s.holdId.map(SQLValue.text) ?? .null,
                  .int(s.seq), .int(s.createdMicros)).run()
    }

    public func addReversed(tenant: String, spendId: String, amountMinor: Int64) throws {
        try db.statement("UPDATE spends SET reversed_minor = reversed_minor + ? WHERE tenant_id = ? AND id = ?")
            .bind(.int(amountMinor), .text(tenant), .text(spendId)).run()
    }

    public func hold(tenant: String, id: String) throws -> Hold? {
        try StoreReads(db: db).hold(tenant: tenant, id: id)
    }

    public func insertHold(_ h: Hold, tenant: String) throws {
        touch(tenant: tenant, client: h.clientId)
        try HoldRows.insert(h, tenant: tenant, db: db)
    }

    public func resolveHold(_ h: Hold, tenant: String) throws {
        precondition(h.state != .held, "resolving a hold to held")
        touch(tenant: tenant, client: h.clientId)
        try db.statement("UPDATE holds SET state = ?, captured_minor = ?, spend_id = ? WHERE tenant_id = ? AND id = ? AND state = 'held'")
            .bind(.text(h.state.rawValue), .int(h.capturedMinor), h.spendId.map(SQLValue.text) ?? .null, .text(tenant), .text(h.id)).run()
        precondition(db.changes == 1, "resolving a hold that is not open")
    }

    public func holdPins(tenant: String, holdId: String) throws -> [Splits.Pin] {
        let pins = try db.statement("""
            SELECT a.lot_id, SUM(a.held_delta_minor) FROM allocations a
            JOIN entries e ON e.tenant_id = a.tenant_id AND e.seq = a.seq
            WHERE e.tenant_id = ? AND e.ref_id = ? GROUP BY a.lot_id HAVING SUM(a.held_delta_minor) > 0
            """).bind(.text(tenant), .text(holdId)).rows { ($0.text(0), $0.int(1)) }
        var out: [Splits.Pin] = []
        for (lotId, held) in pins {
            guard let lot = try lot(tenant: tenant, id: lotId) else { preconditionFailure("hold pins unknown lot \(lotId)") }
            out.append(Splits.Pin(lot: lot, heldMinor: held))
        }
        return Splits.captureOrder(out)
    }

    public func writeOff(tenant: String, id: String) throws -> WriteOff? {
        try StoreReads(db: db).writeOff(tenant: tenant, id: id)
    }

    public func insertWriteOff(_ w: WriteOff, tenant: String) throws {
        precondition(w.state == .active && w.voidSeq == nil, "a new write-off is active")
        try db.statement("INSERT INTO write_offs (tenant_id, id, client_id, amount_minor, reason, state, seq, created_micros) VALUES (?, ?, ?, ?, ?, 'active', ?, ?)")
            .bind(.text(tenant), .text(w.id), .text(w.clientId), .int(w.amountMinor), .text(w.reason), .int(w.seq), .int(w.createdMicros)).run()
    }

    public func markWriteOffVoided(tenant: String, id: String, voidSeq: Int64) throws {
        try db.statement("UPDATE write_offs SET state = 'voided', void_seq = ? WHERE tenant_id = ? AND id = ? AND state = 'active'")
            .bind(.int(voidSeq), .text(tenant), .text(id)).run()
        precondition(db.changes == 1, "voiding a write-off that is not active")
    }
}

// MARK: Row mappings of the core's tables

enum SpendRows {
    static let columns = "id, client_id, amount_minor, reversed_minor, reason, center_id, booking_ref, service_category, hold_id, seq, created_micros"

    static func read(_ r: Row) -> Spend {
        Spend(id: r.text(0), clientId: r.text(1), amountMinor: r.int(2), reversedMinor: r.int(3),
              reason: SpendReason(rawValue: r.text(4)) ?? .other, centerId: r.text(5), bookingRef: r.text(6),
              serviceCategory: r.optionalText(7), holdId: r.optionalText(8), seq: r.int(9), createdMicros: r.int(10), allocations: [])
    }
}

enum HoldRows {
    static let columns = "id, client_id, amount_minor, captured_minor, state, expires_micros, center_id, booking_ref, service_category, membership_id, seq, created_micros, spend_id"

    static func read(_ r: Row) -> Hold {
        Hold(id: r.text(0), clientId: r.text(1), amountMinor: r.int(2), capturedMinor: r.int(3), state: HoldState(rawValue: r.text(4))!,
             expiresMicros: r.int(5), centerId: r.text(6), bookingRef: r.text(7), serviceCategory: r.optionalText(8),
             membershipId: r.optionalText(9), seq: r.int(10), createdMicros: r.int(11), spendId: r.optionalText(12), allocations: [])
    }

    /// The row alone; outside the writer (bulk seeding of a database no server has open).
    static func insert(_ h: Hold, tenant: String, db: SQLiteConnection) throws {
        try db.statement("INSERT INTO holds (tenant_id, \(columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(.text(tenant), .text(h.id), .text(h.clientId), .int(h.amountMinor), .int(h.capturedMinor), .text(h.state.rawValue),
                  .int(h.expiresMicros), .text(h.centerId), .text(h.bookingRef), h.serviceCategory.map(SQLValue.text) ?? .null,
                  h.membershipId.map(SQLValue.text) ?? .null, .int(h.seq), .int(h.createdMicros), h.spendId.map(SQLValue.text) ?? .null).run()
    }
}

enum PackageRows {
    static let columns = "id, name, credits_minor, price_minor, validity_days, scope_categories, scope_centers, scope_memberships, active, created_micros, updated_micros"

    static func read(_ r: Row) -> CreditPackage {
        CreditPackage(id: r.text(0), name: r.text(1), creditsMinor: r.int(2), priceMinor: r.int(3),
                      validityDays: r.optionalInt(4).map { Int32($0) },
                      scope: Scope(serviceCategories: ListCodec.decode(r.text(5)), centers: ListCodec.decode(r.text(6)),
                                   membershipIds: ListCodec.decode(r.text(7))),
                      active: r.bool(8), createdMicros: r.int(9), updatedMicros: r.int(10))
    }

    static func insert(_ p: CreditPackage, tenant: String, db: SQLiteConnection) throws {
        try db.statement("INSERT INTO packages (tenant_id, \(columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(values(p, tenant: tenant)).run()
    }

    static func update(_ p: CreditPackage, tenant: String, db: SQLiteConnection) throws {
        try db.statement("INSERT OR REPLACE INTO packages (tenant_id, \(columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(values(p, tenant: tenant)).run()
    }

    private static func values(_ p: CreditPackage, tenant: String) -> [SQLValue] {
        [.text(tenant), .text(p.id), .text(p.name), .int(p.creditsMinor), .int(p.priceMinor),
         p.validityDays.map { .int(Int64($0)) } ?? .null, .text(ListCodec.encode(p.scope.serviceCategories)),
         .text(ListCodec.encode(p.scope.centers)), .text(ListCodec.encode(p.scope.membershipIds)),
         .int(p.active ? 1 : 0), .int(p.createdMicros), .int(p.updatedMicros)]
    }
}
