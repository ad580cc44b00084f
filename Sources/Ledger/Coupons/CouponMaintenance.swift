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
        let due = try store.dueCustomerCredits(now: now, limit: CouponLimits.maintenanceBatch)
        for (tenant, credit) in due {
            try store.savepoint {
                var credit = credit
                try CouponOps.close(store: store, tenant: tenant, credit: &credit, as: .expired, now: now, idempotencyKey: "", note: "expired")
                try store.updateCustomerCredit(credit, tenant: tenant)
            }
        }
    }

    /// Issues the credit of each enabled rule whose next issue time has come:
    /// one per period (the latest period whose issue time is ≤ now; periods
    /// missed entirely while the service was down are not back-filled). The
    /// UNIQUE (rule, period) row is written in the same savepoint as the
    /// credit, so a period is never issued twice.
    static func runDueRules(store: LedgerStore, now: Int64) throws {
        let due = try store.dueCreditRules(now: now, limit: CouponLimits.maintenanceBatch)
        for (tenant, rule) in due {
            try store.savepoint { try runRule(store: store, tenant: tenant, rule: rule, now: now) }
        }
    }

    static func runRule(store: LedgerStore, tenant: String, rule: MembershipCreditRule, now: Int64) throws {
        precondition(rule.enabled && rule.nextIssueMicros <= now)
        let period = RuleSchedule.latestDue(rule.frequency, day: rule.day, now: now)
        precondition(period.issueMicros >= rule.nextIssueMicros && period.issueMicros >= rule.startMicros)
        if try store.claimRulePeriod(tenant: tenant, ruleId: rule.id, period: period.key, now: now) {
            if let coupon = try store.coupon(tenant: tenant, id: rule.couponId), coupon.active {
                let issued = try CouponOps.issue(store: store, tenant: tenant, coupon: coupon, clientId: rule.clientId,
                                                 membershipId: rule.membershipId, ruleId: rule.id, expiresMicros: nil,
                                                 revenueMinor: rule.revenueMinor, idempotencyKey: "")
                try store.recordRulePeriodIssued(tenant: tenant, ruleId: rule.id, period: period.key, creditId: issued.credit.id)
            }
        }
        var next = rule
        next.nextIssueMicros = RuleSchedule.period(rule.frequency, day: rule.day, containing: period.endMicros).issueMicros
        next.lastPeriod = period.key
        precondition(next.nextIssueMicros > now, "a rule's next issue time is after now")
        try store.saveCreditRule(next, tenant: tenant)
    }
}
