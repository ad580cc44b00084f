/// Tables of session packages (schema migration 3, see `Schema.migrations`).
enum SessionSchema {
    static let sql = """
        CREATE TABLE session_packages (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            name TEXT NOT NULL,
            scope_id TEXT,
            valid_from_micros INTEGER NOT NULL,
            valid_until_micros INTEGER NOT NULL CHECK (valid_until_micros >= valid_from_micros),
            active INTEGER NOT NULL CHECK (active IN (0, 1)),
            created_seq INTEGER NOT NULL,
            created_micros INTEGER NOT NULL,
            deactivated_micros INTEGER,
            deactivation_reason TEXT NOT NULL DEFAULT '',
            CHECK ((active = 1) = (deactivated_micros IS NULL)),
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX session_packages_by_client ON session_packages (tenant_id, client_id, created_seq);
        CREATE INDEX session_packages_usable ON session_packages (tenant_id, client_id, valid_until_micros, created_seq) WHERE active = 1;

        CREATE TABLE session_lines (
            tenant_id TEXT NOT NULL,
            package_id TEXT NOT NULL,
            service_id TEXT NOT NULL,
            ordinal INTEGER NOT NULL,
            total_sessions INTEGER NOT NULL CHECK (total_sessions > 0),
            used_sessions INTEGER NOT NULL CHECK (used_sessions >= 0),
            forfeited_sessions INTEGER NOT NULL CHECK (forfeited_sessions >= 0),
            CHECK (used_sessions + forfeited_sessions <= total_sessions),
            PRIMARY KEY (tenant_id, package_id, service_id)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE session_redemptions (
            tenant_id TEXT NOT NULL,
            id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            package_id TEXT NOT NULL,
            service_id TEXT NOT NULL,
            payment_ref TEXT NOT NULL,
            scope_id TEXT,
            state TEXT NOT NULL CHECK (state IN ('active', 'cancelled')),
            seq INTEGER NOT NULL,
            created_micros INTEGER NOT NULL,
            cancel_seq INTEGER,
            cancelled_micros INTEGER,
            cancel_reason TEXT NOT NULL DEFAULT '',
            CHECK ((state = 'cancelled') = (cancel_seq IS NOT NULL)),
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX session_redemptions_by_ref ON session_redemptions (tenant_id, payment_ref, seq);
        CREATE INDEX session_redemptions_by_package ON session_redemptions (tenant_id, package_id, service_id);

        CREATE TABLE session_payment_refs (
            tenant_id TEXT NOT NULL,
            payment_ref TEXT NOT NULL,
            client_id TEXT NOT NULL,
            paid INTEGER NOT NULL CHECK (paid IN (0, 1)),
            redemption_id TEXT NOT NULL,
            updated_seq INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, payment_ref)
        ) STRICT, WITHOUT ROWID;
        """
}
