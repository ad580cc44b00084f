/// Numbered schema migrations, applied in order at start inside one
/// transaction each. Never edit a released migration: add a new one.
enum Schema {
    static let migrations: [(version: Int, sql: String)] = [
        (1, """
        CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            currency TEXT NOT NULL,
            allow_directory INTEGER NOT NULL DEFAULT 0,
            last_seq INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
            created_micros INTEGER NOT NULL
        ) STRICT;

        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            tenant_id TEXT REFERENCES tenants(id),
            role TEXT NOT NULL CHECK (role IN ('staff', 'app', 'directory')),
            label TEXT NOT NULL,
            secret_hash BLOB NOT NULL,
            created_micros INTEGER NOT NULL,
            revoked_micros INTEGER,
            CHECK ((role = 'directory') = (tenant_id IS NULL))
        ) STRICT;

        CREATE TABLE packages (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            credits_minor INTEGER NOT NULL CHECK (credits_minor > 0),
            price_minor INTEGER NOT NULL CHECK (price_minor >= 0),
            validity_days INTEGER,
            scope_categories TEXT NOT NULL,
            scope_centers TEXT NOT NULL,
            scope_memberships TEXT NOT NULL,
            active INTEGER NOT NULL,
            created_micros INTEGER NOT NULL,
            updated_micros INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE clients (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            client_id TEXT NOT NULL,
            available_minor INTEGER NOT NULL CHECK (available_minor >= 0),
            held_minor INTEGER NOT NULL CHECK (held_minor >= 0),
            last_seq INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, client_id)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE accounts (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            account TEXT NOT NULL,
            balance_minor INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, account)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE lots (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            origin TEXT NOT NULL,
            center_id TEXT NOT NULL,
            amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
            remaining_minor INTEGER NOT NULL CHECK (remaining_minor >= 0 AND remaining_minor <= amount_minor),
            held_minor INTEGER NOT NULL CHECK (held_minor >= 0 AND held_minor <= remaining_minor),
            valid_from_micros INTEGER,
            valid_until_micros INTEGER,
            scope_categories TEXT NOT NULL,
            scope_centers TEXT NOT NULL,
            scope_memberships TEXT NOT NULL,
            package_id TEXT,
            payment_ref TEXT,
            price_minor INTEGER NOT NULL,
            note TEXT NOT NULL,
            created_seq INTEGER NOT NULL,
            created_micros INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('active', 'exhausted', 'expired')),
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX lots_by_client ON lots (tenant_id, client_id, state, valid_until_micros, created_seq);
        CREATE INDEX lots_by_expiry ON lots (state, valid_until_micros) WHERE state = 'active' AND valid_until_micros IS NOT NULL;
        CREATE INDEX lots_by_center ON lots (tenant_id, center_id, client_id) WHERE state = 'active';

        CREATE TABLE entries (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            seq INTEGER NOT NULL CHECK (seq > 0),
            type TEXT NOT NULL,
            client_id TEXT NOT NULL,
            amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
            debit_account TEXT NOT NULL,
            credit_account TEXT NOT NULL CHECK (credit_account <> debit_account),
            available_after_minor INTEGER NOT NULL,
            held_after_minor INTEGER NOT NULL,
            time_micros INTEGER NOT NULL,
            ref_id TEXT NOT NULL,
            center_id TEXT NOT NULL,
            booking_ref TEXT NOT NULL,
            payment_ref TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            reason TEXT NOT NULL,
            note TEXT NOT NULL,
            PRIMARY KEY (tenant_id, seq)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX entries_by_client ON entries (tenant_id, client_id, seq);
        CREATE INDEX entries_by_ref ON entries (tenant_id, ref_id);

        CREATE TABLE allocations (
            tenant_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            ordinal INTEGER NOT NULL,
            lot_id TEXT NOT NULL,
            remaining_delta_minor INTEGER NOT NULL,
            held_delta_minor INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, seq, ordinal)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX allocations_by_lot ON allocations (tenant_id, lot_id);

        CREATE TABLE spends (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
            reversed_minor INTEGER NOT NULL CHECK (reversed_minor >= 0 AND reversed_minor <= amount_minor),
            reason TEXT NOT NULL,
            center_id TEXT NOT NULL,
            booking_ref TEXT NOT NULL,
            service_category TEXT,
            hold_id TEXT,
            seq INTEGER NOT NULL,
            created_micros INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE holds (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
            captured_minor INTEGER NOT NULL CHECK (captured_minor >= 0 AND captured_minor <= amount_minor),
            state TEXT NOT NULL CHECK (state IN ('held', 'captured', 'released', 'expired')),
            expires_micros INTEGER NOT NULL,
            center_id TEXT NOT NULL,
            booking_ref TEXT NOT NULL,
            service_category TEXT,
            membership_id TEXT,
            seq INTEGER NOT NULL,
            created_micros INTEGER NOT NULL,
            spend_id TEXT,
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX holds_open ON holds (expires_micros) WHERE state = 'held';
        CREATE INDEX holds_by_client ON holds (tenant_id, client_id) WHERE state = 'held';

        CREATE TABLE write_offs (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
            reason TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('active', 'voided')),
            seq INTEGER NOT NULL,
            void_seq INTEGER,
            created_micros INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX write_offs_by_client ON write_offs (tenant_id, client_id, seq);

        CREATE TABLE idempotency (
            tenant_id TEXT NOT NULL,
            key TEXT NOT NULL,
            operation TEXT NOT NULL,
            fields TEXT NOT NULL,
            result_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            reply BLOB NOT NULL,
            created_micros INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, key)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX idempotency_by_age ON idempotency (created_micros);
        """),
        (2, CouponSchema.sql),
        (3, SessionSchema.sql),
        (4, BalanceHistory.schemaSQL),
        // Issue 16: one B-tree write less per draw. allocations_by_lot served
        // only verify (now a grouped scan) and the as-of lot sums (now the lot
        // minus the client's allocations after the seq).
        (5, "DROP INDEX allocations_by_lot;"),
    ]

    /// Brings the database to the latest schema; returns the versions applied.
    @discardableResult
    static func migrate(_ db: SQLiteConnection, clock: LedgerClock) throws -> [Int] {
        try db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_micros INTEGER NOT NULL) STRICT")
        let current = try db.statement("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").first { $0.int(0) } ?? 0
        var applied: [Int] = []
        for migration in migrations where migration.version > current {
            try db.transaction {
                try db.execute(migration.sql)
                try db.statement("INSERT INTO schema_migrations (version, applied_micros) VALUES (?, ?)")
                    .bind(.int(Int64(migration.version)), .int(clock.nowMicros())).run()
            }
            applied.append(migration.version)
        }
        try installPlannerStatistics(db)
        return applied
    }

    static var latestVersion: Int { migrations.last!.version }

    /// Gives SQLite's query planner representative statistics instead of
    /// none: a tenant has very many rows, any further key column few.
    /// Without them the planner prefers a WITHOUT ROWID table's primary key
    /// on `tenant_id` alone over a secondary index on (tenant_id, client_id,
    /// …) — a scan of the whole tenant per lookup, seen with EXPLAIN QUERY
    /// PLAN. Written at every start (never from ANALYZE of real data, so
    /// plans do not change with the data), then loaded.
    static func installPlannerStatistics(_ db: SQLiteConnection) throws {
        try db.transaction {
            try db.execute("ANALYZE sqlite_schema")  // creates sqlite_stat1
            try db.execute("DELETE FROM sqlite_stat1")
            let tables = try db.statement("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").rows { $0.text(0) }
            for table in tables {
                let withoutRowid = try db.statement("SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_schema WHERE type = 'table' AND name = ?")
                    .bind(.text(table)).first { $0.bool(0) } ?? false
                let indexes = try db.statement("SELECT name, origin FROM pragma_index_list(?)").bind(.text(table)).rows { ($0.text(0), $0.text(1)) }
                for (index, origin) in indexes {
                    let columns = try db.statement("SELECT name FROM pragma_index_info(?) ORDER BY seqno").bind(.text(index)).rows { $0.text(0) }
                    guard !columns.isEmpty else { continue }
                    var stat = ["10000000"]
                    for (i, column) in columns.enumerated() {
                        stat.append(i == 0 && column == "tenant_id" ? "1000000" : i == 0 ? "10" : i == 1 ? "10" : i == 2 ? "2" : "1")
                    }
                    // A WITHOUT ROWID table's primary key is listed under the table's own name.
                    let name = withoutRowid && origin == "pk" ? table : index
                    try db.statement("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)")
                        .bind(.text(table), .text(name), .text(stat.joined(separator: " "))).run()
                }
            }
        }
        try db.execute("ANALYZE sqlite_schema")  // reload the statistics into this connection
    }
}
