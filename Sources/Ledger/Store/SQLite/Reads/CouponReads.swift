/// Reads of coupons, customer credits, redemptions and membership credit rules.
extension LedgerReader {
    public func coupon(tenant: String, id: String) throws -> Coupon? {
        try CouponRows.coupon(db: db, tenant: tenant, id: id)
    }

    /// Active coupons by id (all with `includeInactive`), after `afterId`.
    public func listCoupons(tenant: String, includeInactive: Bool, afterId: String?, limit: Int) throws -> [Coupon] {
        precondition(limit > 0 && limit <= LedgerLimits.maxPageSize + 1)
        return try db.statement("""
            SELECT \(CouponRows.couponColumns) FROM coupons WHERE tenant_id = ? AND (active = 1 OR ?) AND id > ? ORDER BY id LIMIT ?
            """).bind(.text(tenant), .int(includeInactive ? 1 : 0), .text(afterId ?? ""), .int(Int64(limit))).rows(CouponRows.readCoupon)
    }

    public func customerCredit(tenant: String, id: String) throws -> CustomerCredit? {
        try CouponRows.credit(db: db, tenant: tenant, id: id)
    }

    /// The ledger clock's now, for showing credits as of a read (an active
    /// credit at or past its expiry shows as expired).
    public var nowMicros: Int64 { clock.nowMicros() }

    /// A credit and (with `includeRedemptions`) its first 1000 redemptions, in one snapshot.
    public func customerCreditDetail(tenant: String, id: String, includeRedemptions: Bool) throws -> (CustomerCredit, [CreditRedemption])? {
        try snapshot {
            guard let credit = try CouponRows.credit(db: db, tenant: tenant, id: id) else { return nil }
            let redemptions = includeRedemptions ? try creditRedemptions(tenant: tenant, creditId: id, limit: LedgerLimits.maxPageSize) : []
            return (credit, redemptions)
        }
    }

    public func creditRedemption(tenant: String, id: String) throws -> CreditRedemption? {
        try CouponRows.redemption(db: db, tenant: tenant, id: id)
    }

    /// A credit's redemptions, oldest first (at most `limit`).
    public func creditRedemptions(tenant: String, creditId: String, limit: Int) throws -> [CreditRedemption] {
        precondition(limit > 0 && limit <= LedgerLimits.maxPageSize + 1)
        return try db.statement("""
            SELECT \(CouponRows.redemptionColumns) FROM coupon_redemptions WHERE tenant_id = ? AND credit_id = ? ORDER BY seq LIMIT ?
            """).bind(.text(tenant), .text(creditId), .int(Int64(limit))).rows(CouponRows.readRedemption)
    }

    public struct CustomerCreditQuery: Sendable {
        public var tenant: String
        public var clientId: String
        public var includeRedeemed = false
        public var includeExpired = false
        public var includeRevoked = false
        public var multiUse = MultiUseFilter.all
        /// Keyset cursor: credits issued before this seq (newest first).
        public var beforeSeq: Int64?
        /// Page-number paging: rows skipped (with no cursor).
        public var offset = 0
        public var limit = LedgerLimits.defaultPageSize
        /// The time the expiry filters apply at; nil: the clock's now.
        public var asOfMicros: Int64?

        public init(tenant: String, clientId: String) {
            self.tenant = tenant
            self.clientId = clientId
        }
    }

    /// A client's credits, newest first, with the number matching the filters
    /// (in one snapshot). Active credits are always included; an active
    /// credit at or past its expiry time counts as expired.
    public func listCustomerCredits(_ q: CustomerCreditQuery) throws -> (credits: [CustomerCredit], totalSize: Int) {
        precondition(q.limit > 0 && q.limit <= LedgerLimits.maxPageSize + 1)
        precondition(q.offset >= 0 && q.offset <= CouponLimits.maxOffset)
        let now = q.asOfMicros ?? clock.nowMicros()
        let multi: Int64 = switch q.multiUse { case .all: 0; case .multiUseOnly: 1; case .singleUseOnly: 2 }
        let filter = """
            tenant_id = ?1 AND client_id = ?2 AND (
              (state = 'active' AND (expires_micros IS NULL OR expires_micros > ?3))
              OR (?4 AND state = 'redeemed') OR (?5 AND state = 'revoked')
              OR (?6 AND (state = 'expired' OR (state = 'active' AND expires_micros <= ?3))))
            AND (?7 = 0 OR (?7 = 1 AND max_uses > 1) OR (?7 = 2 AND max_uses = 1))
            """
        let binds: [SQLValue] = [.text(q.tenant), .text(q.clientId), .int(now), .int(q.includeRedeemed ? 1 : 0),
                                 .int(q.includeRevoked ? 1 : 0), .int(q.includeExpired ? 1 : 0), .int(multi)]
        return try snapshot {
            let credits = try db.statement("""
                SELECT \(CouponRows.creditColumns) FROM coupon_credits INDEXED BY coupon_credits_by_client
                WHERE \(filter) AND issued_seq < ?8 ORDER BY issued_seq DESC LIMIT ?9 OFFSET ?10
                """).bind(binds + [.int(q.beforeSeq ?? Int64.max), .int(Int64(q.limit)), .int(Int64(q.offset))]).rows(CouponRows.readCredit)
            let total = try db.statement("SELECT COUNT(*) FROM coupon_credits INDEXED BY coupon_credits_by_client WHERE \(filter)")
                .bind(binds).first { $0.int(0) } ?? 0
            return (credits, Int(total))
        }
    }

    public func membershipCreditRule(tenant: String, id: String) throws -> MembershipCreditRule? {
        try CouponRows.rule(db: db, tenant: tenant, id: id)
    }

    /// Rules by id (of one client if given; enabled only unless `includeDisabled`), after `afterId`.
    public func listMembershipCreditRules(tenant: String, clientId: String?, includeDisabled: Bool, afterId: String?,
                                          limit: Int) throws -> [MembershipCreditRule] {
        precondition(limit > 0 && limit <= LedgerLimits.maxPageSize + 1)
        return try db.statement("""
            SELECT \(CouponRows.ruleColumns) FROM coupon_rules
            WHERE tenant_id = ? AND (? = '' OR client_id = ?) AND (enabled = 1 OR ?) AND id > ? ORDER BY id LIMIT ?
            """).bind(.text(tenant), .text(clientId ?? ""), .text(clientId ?? ""), .int(includeDisabled ? 1 : 0), .text(afterId ?? ""),
                      .int(Int64(limit))).rows(CouponRows.readRule)
    }

    /// The credits a rule issued, with their periods, oldest first.
    public func ruleIssues(tenant: String, ruleId: String, limit: Int) throws -> [(period: String, creditId: String?)] {
        precondition(limit > 0 && limit <= LedgerLimits.maxPageSize + 1)
        return try db.statement("SELECT period, credit_id FROM coupon_rule_periods WHERE tenant_id = ? AND rule_id = ? ORDER BY time_micros, period LIMIT ?")
            .bind(.text(tenant), .text(ruleId), .int(Int64(limit))).rows { ($0.text(0), $0.optionalText(1)) }
    }
}
