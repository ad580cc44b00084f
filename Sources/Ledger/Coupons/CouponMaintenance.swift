/// Coupon work of the writer's maintenance (`LedgerWriter.maintain()`), run
/// inside its transaction: expiry of credits past their expiry time, and the
/// membership credit rules that are due. Each item runs in a savepoint; at
/// most `CouponLimits.maintenanceBatch` of each per pass (the rest next pass).
enum CouponMaintenance {
    static func run(store: LedgerStore, now: Int64) throws {
        try expireDue(store: store, now: now)
        try runDueRules(store: store, now: now)
    }

    /// Writes couponExpiry (and revenue release) entries for active credits
    /// whose expiry time is at or before `now`.
    static func expireDue(store: LedgerStore, now: Int64) throws {
        let due = try store.db.statement("""
            SELECT \(CouponRows.creditColumns), tenant_id FROM coupon_credits INDEXED BY coupon_credits_due
            WHERE state = 'active' AND expires_micros IS NOT NULL AND expires_micros <= ? ORDER BY expires_micros LIMIT ?
            """).bind(.int(now), .int(Int64(CouponLimits.maintenanceBatch))).rows { ($0.text(18), CouponRows.readCredit($0)) }
        for (tenant, credit) in due {
            try store.savepoint {
                var credit = credit
                try CouponOps.close(store: store, tenant: tenant, credit: &credit, as: .expired, now: now, idempotencyKey: "", note: "expired")
                try CouponRows.update(credit, tenant: tenant, db: store.db)
            }
        }
    }

    /// Issues the credit of each enabled rule whose next issue time has come:
    /// one per period (the latest period whose issue time is ≤ now; periods
    /// missed entirely while the service was down are not back-filled). The
    /// UNIQUE (rule, period) row is written in the same savepoint as the
    /// credit, so a period is never issued twice.
    static func runDueRules(store: LedgerStore, now: Int64) throws {
        let due = try store.db.statement("""
            SELECT \(CouponRows.ruleColumns), tenant_id FROM coupon_rules INDEXED BY coupon_rules_due
            WHERE enabled = 1 AND next_issue_micros <= ? ORDER BY next_issue_micros LIMIT ?
            """).bind(.int(now), .int(Int64(CouponLimits.maintenanceBatch))).rows { ($0.text(13), CouponRows.readRule($0)) }
        for (tenant, rule) in due {
            try store.savepoint { try runRule(store: store, tenant: tenant, rule: rule, now: now) }
        }
    }

    static func runRule(store: LedgerStore, tenant: String, rule: MembershipCreditRule, now: Int64) throws {
        precondition(rule.enabled && rule.nextIssueMicros <= now)
        let period = RuleSchedule.latestDue(rule.frequency, day: rule.day, now: now)
        precondition(period.issueMicros >= rule.nextIssueMicros && period.issueMicros >= rule.startMicros)
        try store.db.statement("""
            INSERT INTO coupon_rule_periods (tenant_id, rule_id, period, credit_id, outcome, time_micros)
            VALUES (?, ?, ?, NULL, 'coupon_inactive', ?) ON CONFLICT DO NOTHING
            """).bind(.text(tenant), .text(rule.id), .text(period.key), .int(now)).run()
        if store.db.changes == 1 {
            if let coupon = try CouponRows.coupon(db: store.db, tenant: tenant, id: rule.couponId), coupon.active {
                let issued = try CouponOps.issue(store: store, tenant: tenant, coupon: coupon, clientId: rule.clientId,
                                                 membershipId: rule.membershipId, ruleId: rule.id, expiresMicros: nil,
                                                 revenueMinor: rule.revenueMinor, idempotencyKey: "")
                try store.db.statement("UPDATE coupon_rule_periods SET credit_id = ?, outcome = 'issued' WHERE tenant_id = ? AND rule_id = ? AND period = ?")
                    .bind(.text(issued.credit.id), .text(tenant), .text(rule.id), .text(period.key)).run()
            }
        }
        var next = rule
        next.nextIssueMicros = RuleSchedule.period(rule.frequency, day: rule.day, containing: period.endMicros).issueMicros
        next.lastPeriod = period.key
        precondition(next.nextIssueMicros > now, "a rule's next issue time is after now")
        try CouponRows.save(next, tenant: tenant, db: store.db)
    }
}
