/// Rows of session packages, redemptions and payment references, shared by
/// the session commands (writer connection) and reads (reader connections).
enum SessionRows {
    static let packageColumns = """
        id, client_id, name, scope_id, valid_from_micros, valid_until_micros, active, created_seq, created_micros,
        deactivated_micros, deactivation_reason
        """

    static func readPackage(_ r: Row) -> ClientPackage {
        ClientPackage(id: r.text(0), clientId: r.text(1), name: r.text(2), scopeId: r.optionalText(3), validFromMicros: r.int(4),
                      validUntilMicros: r.int(5), active: r.bool(6), lines: [], createdSeq: r.int(7), createdMicros: r.int(8),
                      deactivatedMicros: r.optionalInt(9), deactivationReason: r.text(10))
    }

    static func lines(db: SQLiteConnection, tenant: String, packageId: String) throws -> [SessionLine] {
        try db.statement("""
            SELECT service_id, total_sessions, used_sessions, forfeited_sessions FROM session_lines
            WHERE tenant_id = ? AND package_id = ? ORDER BY ordinal
            """).bind(.text(tenant), .text(packageId))
            .rows { SessionLine(serviceId: $0.text(0), totalSessions: $0.int(1), usedSessions: $0.int(2), forfeitedSessions: $0.int(3)) }
    }

    static func package(db: SQLiteConnection, tenant: String, id: String) throws -> ClientPackage? {
        guard var package = try db.statement("SELECT \(packageColumns) FROM session_packages WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(readPackage) else { return nil }
        package.lines = try lines(db: db, tenant: tenant, packageId: id)
        return package
    }

    static func insertPackage(db: SQLiteConnection, tenant: String, _ p: ClientPackage) throws {
        precondition(p.active && p.deactivatedMicros == nil, "a new client package is active")
        try db.statement("""
            INSERT INTO session_packages (tenant_id, \(packageColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, NULL, '')
            """).bind(.text(tenant), .text(p.id), .text(p.clientId), .text(p.name), p.scopeId.map(SQLValue.text) ?? .null,
                      .int(p.validFromMicros), .int(p.validUntilMicros), .int(p.createdSeq), .int(p.createdMicros)).run()
        for (ordinal, line) in p.lines.enumerated() {
            precondition(line.usedSessions == 0 && line.forfeitedSessions == 0)
            try db.statement("""
                INSERT INTO session_lines (tenant_id, package_id, service_id, ordinal, total_sessions, used_sessions, forfeited_sessions)
                VALUES (?, ?, ?, ?, ?, 0, 0)
                """).bind(.text(tenant), .text(p.id), .text(line.serviceId), .int(Int64(ordinal)), .int(line.totalSessions)).run()
        }
    }

    /// Adds to a line's used and forfeited counts; the CHECK constraints
    /// (0 ≤ used, forfeited; used + forfeited ≤ total) are the backstop.
    static func changeLine(db: SQLiteConnection, tenant: String, packageId: String, serviceId: String,
                           usedDelta: Int64, forfeitedDelta: Int64) throws {
        try db.statement("""
            UPDATE session_lines SET used_sessions = used_sessions + ?, forfeited_sessions = forfeited_sessions + ?
            WHERE tenant_id = ? AND package_id = ? AND service_id = ?
            """).bind(.int(usedDelta), .int(forfeitedDelta), .text(tenant), .text(packageId), .text(serviceId)).run()
        precondition(db.changes == 1, "no line \(serviceId) on client package \(packageId)")
    }

    static let redemptionColumns = """
        id, client_id, package_id, service_id, payment_ref, scope_id, state, seq, created_micros, cancel_seq, cancelled_micros, cancel_reason
        """

    static func readRedemption(_ r: Row) -> PackageRedemption {
        PackageRedemption(id: r.text(0), clientId: r.text(1), packageId: r.text(2), serviceId: r.text(3), paymentRef: r.text(4),
                          scopeId: r.optionalText(5), state: SessionRedemptionState(rawValue: r.text(6))!, seq: r.int(7),
                          createdMicros: r.int(8), cancelSeq: r.optionalInt(9), cancelledMicros: r.optionalInt(10),
                          cancelReason: r.text(11))
    }

    static func redemption(db: SQLiteConnection, tenant: String, id: String) throws -> PackageRedemption? {
        try db.statement("SELECT \(redemptionColumns) FROM session_redemptions WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(readRedemption)
    }

    static func insertRedemption(db: SQLiteConnection, tenant: String, _ r: PackageRedemption) throws {
        precondition(r.state == .active && r.cancelSeq == nil)
        try db.statement("""
            INSERT INTO session_redemptions (tenant_id, \(redemptionColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, NULL, NULL, '')
            """).bind(.text(tenant), .text(r.id), .text(r.clientId), .text(r.packageId), .text(r.serviceId), .text(r.paymentRef),
                      r.scopeId.map(SQLValue.text) ?? .null, .int(r.seq), .int(r.createdMicros)).run()
    }

    static func paymentRef(db: SQLiteConnection, tenant: String, ref: String) throws -> PaymentRefStatus? {
        try db.statement("SELECT payment_ref, client_id, paid, redemption_id FROM session_payment_refs WHERE tenant_id = ? AND payment_ref = ?")
            .bind(.text(tenant), .text(ref))
            .first { PaymentRefStatus(paymentRef: $0.text(0), clientId: $0.text(1), paid: $0.bool(2), redemptionId: $0.text(3)) }
    }

    static func savePaymentRef(db: SQLiteConnection, tenant: String, _ p: PaymentRefStatus, seq: Int64) throws {
        try db.statement("""
            INSERT INTO session_payment_refs (tenant_id, payment_ref, client_id, paid, redemption_id, updated_seq) VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (tenant_id, payment_ref) DO UPDATE SET paid = excluded.paid, redemption_id = excluded.redemption_id,
              updated_seq = excluded.updated_seq
            """).bind(.text(tenant), .text(p.paymentRef), .text(p.clientId), .int(p.paid ? 1 : 0), .text(p.redemptionId), .int(seq)).run()
    }

    /// The package a use draws from: active, valid_from ≤ now ≤ valid_until,
    /// a session left for the service, the scope id if one is asked for;
    /// soonest valid_until first, then the oldest. One row, by index.
    static func packageToUse(db: SQLiteConnection, tenant: String, client: String, serviceId: String, scopeId: String?,
                             now: Int64) throws -> String? {
        try db.statement("""
            SELECT p.id FROM session_packages p INDEXED BY session_packages_usable
            JOIN session_lines l ON l.tenant_id = p.tenant_id AND l.package_id = p.id AND l.service_id = ?
            WHERE p.tenant_id = ? AND p.client_id = ? AND p.active = 1 AND p.valid_until_micros >= ? AND p.valid_from_micros <= ?
              AND l.total_sessions > l.used_sessions + l.forfeited_sessions AND (? IS NULL OR p.scope_id = ?)
            ORDER BY p.valid_until_micros, p.created_seq LIMIT 1
            """).bind(.text(serviceId), .text(tenant), .text(client), .int(now), .int(now),
                      scopeId.map(SQLValue.text) ?? .null, scopeId.map(SQLValue.text) ?? .null).first { $0.text(0) }
    }
}

extension LedgerReader {
    public func clientPackage(tenant: String, id: String) throws -> ClientPackage? {
        try snapshot { try SessionRows.package(db: db, tenant: tenant, id: id) }
    }

    /// A client's packages, oldest first, after the package created at `afterSeq`.
    public func listClientPackages(tenant: String, clientId: String, includeInactive: Bool, afterSeq: Int64?,
                                   limit: Int) throws -> [ClientPackage] {
        precondition(limit > 0 && limit <= LedgerLimits.maxPageSize + 1)
        return try snapshot {
            var packages = try db.statement("""
                SELECT \(SessionRows.packageColumns) FROM session_packages INDEXED BY session_packages_by_client
                WHERE tenant_id = ? AND client_id = ? AND created_seq > ? AND (active = 1 OR ?) ORDER BY created_seq LIMIT ?
                """).bind(.text(tenant), .text(clientId), .int(afterSeq ?? 0), .int(includeInactive ? 1 : 0), .int(Int64(limit)))
                .rows(SessionRows.readPackage)
            for i in packages.indices {
                packages[i].lines = try SessionRows.lines(db: db, tenant: tenant, packageId: packages[i].id)
            }
            return packages
        }
    }

    /// A redemption by id, or the latest of a payment reference; with its
    /// package, the payment reference and the tenant seq, in one snapshot.
    public func redemption(tenant: String, id: String?, paymentRef: String?) throws -> SessionRedemptionResult? {
        precondition((id == nil) != (paymentRef == nil), "exactly one of id and paymentRef")
        return try snapshot {
            let redemptionId: String
            if let id {
                redemptionId = id
            } else {
                guard let status = try SessionRows.paymentRef(db: db, tenant: tenant, ref: paymentRef!) else { return nil }
                redemptionId = status.redemptionId
            }
            guard let redemption = try SessionRows.redemption(db: db, tenant: tenant, id: redemptionId),
                  let package = try SessionRows.package(db: db, tenant: tenant, id: redemption.packageId),
                  let payment = try SessionRows.paymentRef(db: db, tenant: tenant, ref: redemption.paymentRef),
                  let tenantRow = try LedgerStore(db: db, clock: clock).tenant(tenant) else { return nil }
            return SessionRedemptionResult(redemption: redemption, package: package, payment: payment, seq: tenantRow.lastSeq)
        }
    }

    public func paymentRefStatus(tenant: String, paymentRef: String) throws -> PaymentRefStatus? {
        try SessionRows.paymentRef(db: db, tenant: tenant, ref: paymentRef)
    }

    /// A client package with the tenant seq it reflects, in one snapshot.
    public func clientPackageResult(tenant: String, id: String) throws -> ClientPackageResult? {
        try snapshot {
            guard let package = try SessionRows.package(db: db, tenant: tenant, id: id),
                  let tenantRow = try LedgerStore(db: db, clock: clock).tenant(tenant) else { return nil }
            return ClientPackageResult(package: package, seq: tenantRow.lastSeq)
        }
    }
}
