/// Tables of coupon customer credits (migration 2) and their row access,
/// shared by commands (writer connection) and reads (reader connections).
enum CouponSchema {
    static let sql = """
        CREATE TABLE coupons (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            service_id TEXT,
            value_minor INTEGER NOT NULL CHECK (value_minor >= 0),
            max_uses INTEGER NOT NULL CHECK (max_uses >= 1 AND max_uses <= 1000),
            validity_days INTEGER,
            active INTEGER NOT NULL,
            created_micros INTEGER NOT NULL,
            updated_micros INTEGER NOT NULL,
            CHECK (service_id IS NOT NULL OR value_minor > 0),
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;

        CREATE TABLE coupon_credits (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            coupon_id TEXT NOT NULL,
            membership_id TEXT,
            rule_id TEXT,
            service_id TEXT,
            value_minor INTEGER NOT NULL,
            max_uses INTEGER NOT NULL CHECK (max_uses >= 1),
            uses_redeemed INTEGER NOT NULL CHECK (uses_redeemed >= 0),
            uses_void INTEGER NOT NULL CHECK (uses_void >= 0),
            state TEXT NOT NULL CHECK (state IN ('active', 'redeemed', 'revoked', 'expired')),
            expires_micros INTEGER,
            revenue_minor INTEGER NOT NULL CHECK (revenue_minor >= 0),
            revenue_allocated_minor INTEGER NOT NULL CHECK (revenue_allocated_minor >= 0),
            revenue_released_minor INTEGER NOT NULL CHECK (revenue_released_minor >= 0),
            issued_seq INTEGER NOT NULL,
            created_micros INTEGER NOT NULL,
            closed_micros INTEGER,
            CHECK (uses_redeemed + uses_void <= max_uses),
            CHECK (revenue_allocated_minor + revenue_released_minor <= revenue_minor),
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX coupon_credits_by_client ON coupon_credits (tenant_id, client_id, issued_seq);
        CREATE INDEX coupon_credits_due ON coupon_credits (expires_micros) WHERE state = 'active' AND expires_micros IS NOT NULL;

        CREATE TABLE coupon_redemptions (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            id TEXT NOT NULL,
            credit_id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            booking_ref TEXT NOT NULL,
            center_id TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('active', 'cancelled')),
            revenue_minor INTEGER NOT NULL CHECK (revenue_minor >= 0),
            seq INTEGER NOT NULL,
            cancel_seq INTEGER,
            created_micros INTEGER NOT NULL,
            cancelled_micros INTEGER,
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX coupon_redemptions_by_credit ON coupon_redemptions (tenant_id, credit_id, seq);

        CREATE TABLE coupon_rules (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            id TEXT NOT NULL,
            coupon_id TEXT NOT NULL,
            client_id TEXT NOT NULL,
            membership_id TEXT NOT NULL,
            frequency TEXT NOT NULL CHECK (frequency IN ('monthly', 'weekly')),
            day INTEGER NOT NULL CHECK (day >= 1 AND day <= 28),
            revenue_minor INTEGER NOT NULL CHECK (revenue_minor >= 0),
            enabled INTEGER NOT NULL,
            start_micros INTEGER NOT NULL,
            next_issue_micros INTEGER NOT NULL,
            last_period TEXT,
            created_micros INTEGER NOT NULL,
            disabled_micros INTEGER,
            PRIMARY KEY (tenant_id, id)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX coupon_rules_due ON coupon_rules (next_issue_micros) WHERE enabled = 1;
        CREATE INDEX coupon_rules_by_client ON coupon_rules (tenant_id, client_id, id);

        -- One row per (rule, period), written in the same transaction as the
        -- credit it issued: a rule issues at most once per period, whatever
        -- restarts or overlapping runs happen.
        CREATE TABLE coupon_rule_periods (
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            rule_id TEXT NOT NULL,
            period TEXT NOT NULL,
            credit_id TEXT,
            outcome TEXT NOT NULL CHECK (outcome IN ('issued', 'coupon_inactive')),
            time_micros INTEGER NOT NULL,
            PRIMARY KEY (tenant_id, rule_id, period)
        ) STRICT, WITHOUT ROWID;
        """
}

enum CouponRows {
    // MARK: Coupons

    static let couponColumns = "id, name, service_id, value_minor, max_uses, validity_days, active, created_micros, updated_micros"

    static func readCoupon(_ r: Row) -> Coupon {
        Coupon(id: r.text(0), name: r.text(1), serviceId: r.optionalText(2), valueMinor: r.int(3), maxUses: Int32(r.int(4)),
               validityDays: r.optionalInt(5).map { Int32($0) }, active: r.bool(6), createdMicros: r.int(7), updatedMicros: r.int(8))
    }

    static func coupon(db: SQLiteConnection, tenant: String, id: String) throws -> Coupon? {
        try db.statement("SELECT \(couponColumns) FROM coupons WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(readCoupon)
    }

    static func insert(_ c: Coupon, tenant: String, db: SQLiteConnection) throws {
        try db.statement("INSERT INTO coupons (tenant_id, \(couponColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(.text(tenant), .text(c.id), .text(c.name), c.serviceId.map(SQLValue.text) ?? .null, .int(c.valueMinor),
                  .int(Int64(c.maxUses)), c.validityDays.map { .int(Int64($0)) } ?? .null, .int(c.active ? 1 : 0),
                  .int(c.createdMicros), .int(c.updatedMicros)).run()
    }

    // MARK: Credits

    static let creditColumns = """
        id, client_id, coupon_id, membership_id, rule_id, service_id, value_minor, max_uses, uses_redeemed, uses_void, state,
        expires_micros, revenue_minor, revenue_allocated_minor, revenue_released_minor, issued_seq, created_micros, closed_micros
        """

    static func readCredit(_ r: Row) -> CustomerCredit {
        CustomerCredit(id: r.text(0), clientId: r.text(1), couponId: r.text(2), membershipId: r.optionalText(3), ruleId: r.optionalText(4),
                       serviceId: r.optionalText(5), valueMinor: r.int(6), maxUses: Int32(r.int(7)), usesRedeemed: Int32(r.int(8)),
                       usesVoid: Int32(r.int(9)), state: CustomerCreditState(rawValue: r.text(10))!, expiresMicros: r.optionalInt(11),
                       revenueMinor: r.int(12), revenueAllocatedMinor: r.int(13), revenueReleasedMinor: r.int(14), issuedSeq: r.int(15),
                       createdMicros: r.int(16), closedMicros: r.optionalInt(17))
    }

    static func credit(db: SQLiteConnection, tenant: String, id: String) throws -> CustomerCredit? {
        try db.statement("SELECT \(creditColumns) FROM coupon_credits WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(readCredit)
    }

    static func insert(_ c: CustomerCredit, tenant: String, db: SQLiteConnection) throws {
        try db.statement("INSERT INTO coupon_credits (tenant_id, \(creditColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(.text(tenant), .text(c.id), .text(c.clientId), .text(c.couponId), c.membershipId.map(SQLValue.text) ?? .null,
                  c.ruleId.map(SQLValue.text) ?? .null, c.serviceId.map(SQLValue.text) ?? .null, .int(c.valueMinor),
                  .int(Int64(c.maxUses)), .int(Int64(c.usesRedeemed)), .int(Int64(c.usesVoid)), .text(c.state.rawValue),
                  c.expiresMicros.map(SQLValue.int) ?? .null, .int(c.revenueMinor), .int(c.revenueAllocatedMinor),
                  .int(c.revenueReleasedMinor), .int(c.issuedSeq), .int(c.createdMicros), c.closedMicros.map(SQLValue.int) ?? .null).run()
    }

    /// Saves the mutable columns of a credit.
    static func update(_ c: CustomerCredit, tenant: String, db: SQLiteConnection) throws {
        precondition(c.usesRemaining >= 0 && c.revenueDeferredMinor >= 0, "credit \(c.id) out of bounds: \(c)")
        switch c.state {
        case .active: precondition(c.usesRemaining > 0, "active credit \(c.id) without uses left")
        case .redeemed: precondition(c.usesRemaining == 0 && c.usesVoid == 0, "redeemed credit \(c.id) with uses left or void")
        case .revoked, .expired: precondition(c.usesRemaining == 0, "closed credit \(c.id) with uses left")
        }
        try db.statement("""
            UPDATE coupon_credits SET uses_redeemed = ?, uses_void = ?, state = ?, revenue_allocated_minor = ?,
              revenue_released_minor = ?, closed_micros = ? WHERE tenant_id = ? AND id = ?
            """).bind(.int(Int64(c.usesRedeemed)), .int(Int64(c.usesVoid)), .text(c.state.rawValue), .int(c.revenueAllocatedMinor),
                      .int(c.revenueReleasedMinor), c.closedMicros.map(SQLValue.int) ?? .null, .text(tenant), .text(c.id)).run()
        precondition(db.changes == 1, "update of unknown credit \(c.id)")
    }

    // MARK: Redemptions

    static let redemptionColumns = "id, credit_id, client_id, booking_ref, center_id, state, revenue_minor, seq, cancel_seq, created_micros, cancelled_micros"

    static func readRedemption(_ r: Row) -> CreditRedemption {
        CreditRedemption(id: r.text(0), creditId: r.text(1), clientId: r.text(2), bookingRef: r.text(3), centerId: r.text(4),
                         state: RedemptionState(rawValue: r.text(5))!, revenueMinor: r.int(6), seq: r.int(7), cancelSeq: r.optionalInt(8),
                         createdMicros: r.int(9), cancelledMicros: r.optionalInt(10))
    }

    static func redemption(db: SQLiteConnection, tenant: String, id: String) throws -> CreditRedemption? {
        try db.statement("SELECT \(redemptionColumns) FROM coupon_redemptions WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(readRedemption)
    }

    static func insert(_ r: CreditRedemption, tenant: String, db: SQLiteConnection) throws {
        try db.statement("INSERT INTO coupon_redemptions (tenant_id, \(redemptionColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(.text(tenant), .text(r.id), .text(r.creditId), .text(r.clientId), .text(r.bookingRef), .text(r.centerId),
                  .text(r.state.rawValue), .int(r.revenueMinor), .int(r.seq), r.cancelSeq.map(SQLValue.int) ?? .null,
                  .int(r.createdMicros), r.cancelledMicros.map(SQLValue.int) ?? .null).run()
    }

    static func markCancelled(_ r: CreditRedemption, tenant: String, db: SQLiteConnection) throws {
        try db.statement("""
            UPDATE coupon_redemptions SET state = 'cancelled', cancel_seq = ?, cancelled_micros = ?
            WHERE tenant_id = ? AND id = ? AND state = 'active'
            """).bind(r.cancelSeq.map(SQLValue.int) ?? .null, r.cancelledMicros.map(SQLValue.int) ?? .null, .text(tenant), .text(r.id)).run()
        precondition(db.changes == 1, "redemption \(r.id) was not active")
    }

    // MARK: Membership credit rules

    static let ruleColumns = """
        id, coupon_id, client_id, membership_id, frequency, day, revenue_minor, enabled, start_micros, next_issue_micros,
        last_period, created_micros, disabled_micros
        """

    static func readRule(_ r: Row) -> MembershipCreditRule {
        MembershipCreditRule(id: r.text(0), couponId: r.text(1), clientId: r.text(2), membershipId: r.text(3),
                             frequency: CreditRuleFrequency(rawValue: r.text(4))!, day: Int32(r.int(5)), revenueMinor: r.int(6),
                             enabled: r.bool(7), startMicros: r.int(8), nextIssueMicros: r.int(9), lastPeriod: r.optionalText(10),
                             createdMicros: r.int(11), disabledMicros: r.optionalInt(12))
    }

    static func rule(db: SQLiteConnection, tenant: String, id: String) throws -> MembershipCreditRule? {
        try db.statement("SELECT \(ruleColumns) FROM coupon_rules WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(readRule)
    }

    static func save(_ r: MembershipCreditRule, tenant: String, db: SQLiteConnection) throws {
        try db.statement("INSERT OR REPLACE INTO coupon_rules (tenant_id, \(ruleColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(.text(tenant), .text(r.id), .text(r.couponId), .text(r.clientId), .text(r.membershipId), .text(r.frequency.rawValue),
                  .int(Int64(r.day)), .int(r.revenueMinor), .int(r.enabled ? 1 : 0), .int(r.startMicros), .int(r.nextIssueMicros),
                  r.lastPeriod.map(SQLValue.text) ?? .null, .int(r.createdMicros), r.disabledMicros.map(SQLValue.int) ?? .null).run()
    }
}
