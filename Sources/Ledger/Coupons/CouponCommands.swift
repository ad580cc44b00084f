/// Commands of coupon customer credits: the coupon catalog, issue, revoke,
/// redeem and cancel a redemption, and membership credit rules. Every change
/// of a credit's uses or revenue is a ledger entry through `appendEntry`
/// (accounts: see CouponDomain.swift).

// MARK: - Coupon catalog

public struct CreateCoupon: StorageCommand {
    public static let operation = "create_coupon"
    public var tenantId: String
    public var name: String
    public var serviceId: String?
    public var valueMinor: Int64
    /// 1: single-use.
    public var maxUses: Int32
    public var validityDays: Int32?
    public var idempotencyKey: String?

    public init(tenantId: String, name: String, serviceId: String?, valueMinor: Int64, maxUses: Int32, validityDays: Int32?,
                idempotencyKey: String?) {
        self.tenantId = tenantId
        self.name = name
        self.serviceId = serviceId
        self.valueMinor = valueMinor
        self.maxUses = maxUses
        self.validityDays = validityDays
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("name", name), ("service_id", Canonical.opt(serviceId)), ("value_minor", "\(valueMinor)"), ("max_uses", "\(maxUses)"),
         ("validity_days", Canonical.opt(validityDays))]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.text(name, "name", max: CouponLimits.maxNameLength, required: true)
        v.id(serviceId ?? "", "service_id", required: false)
        v.nonNegativeAmount(valueMinor, "value_minor")
        v.check(serviceId != nil || valueMinor > 0, "service_id", "or value_minor is required (what the credit entitles to)")
        v.check(maxUses >= 1 && maxUses <= CouponLimits.maxUses, "max_uses", "must be 1…\(CouponLimits.maxUses)")
        if let days = validityDays {
            v.check(days > 0 && days <= Int32(LedgerLimits.maxValidityDays), "validity_days", "must be 1…\(LedgerLimits.maxValidityDays)")
        }
        v.idempotencyKey(idempotencyKey, required: false)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> Coupon {
        _ = try store.requireTenant(tenantId)
        let now = store.clock.nowMicros()
        let coupon = Coupon(id: IDs.make("cpn", clock: store.clock), name: name, serviceId: serviceId, valueMinor: valueMinor, maxUses: maxUses,
                            validityDays: validityDays, active: true, createdMicros: now, updatedMicros: now)
        try store.insertCoupon(coupon, tenant: tenantId)
        return coupon
    }

    public func resultId(_ output: Coupon) -> String { output.id }
    public func resultSeq(_ output: Coupon) -> Int64 { 0 }
}

/// Stops issuing from a coupon; credits already issued are unaffected.
/// Deactivating an inactive coupon changes nothing and returns it.
public struct DeactivateCoupon: StorageCommand {
    public static let operation = "deactivate_coupon"
    public var tenantId: String
    public var couponId: String
    public var idempotencyKey: String?

    public init(tenantId: String, couponId: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.couponId = couponId
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] { [("coupon_id", couponId)] }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(couponId, "coupon_id")
        v.idempotencyKey(idempotencyKey, required: false)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> Coupon {
        guard var coupon = try store.coupon(tenant: tenantId, id: couponId) else {
            throw LedgerError.notFound(kind: "coupon", id: couponId)
        }
        guard coupon.active else { return coupon }
        coupon.active = false
        coupon.updatedMicros = store.clock.nowMicros()
        try store.deactivateCoupon(tenant: tenantId, id: couponId, updatedMicros: coupon.updatedMicros)
        return coupon
    }

    public func resultId(_ output: Coupon) -> String { output.id }
    public func resultSeq(_ output: Coupon) -> Int64 { 0 }
}

// MARK: - Customer credits

/// Issues a credit from an active coupon. There is no free-form grant.
public struct IssueCustomerCredit: StorageCommand {
    public static let operation = "issue_customer_credit"
    public var tenantId: String
    public var clientId: String
    public var couponId: String
    public var membershipId: String?
    /// nil: the coupon's default validity (or never).
    public var expiresMicros: Int64?
    /// Revenue allocated over the uses as they are redeemed.
    public var revenueMinor: Int64
    public var idempotencyKey: String?

    public init(tenantId: String, clientId: String, couponId: String, membershipId: String?, expiresMicros: Int64?,
                revenueMinor: Int64, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.clientId = clientId
        self.couponId = couponId
        self.membershipId = membershipId
        self.expiresMicros = expiresMicros
        self.revenueMinor = revenueMinor
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("client_id", clientId), ("coupon_id", couponId), ("membership_id", Canonical.opt(membershipId)),
         ("expire_time", Canonical.opt(expiresMicros)), ("revenue_minor", "\(revenueMinor)")]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(clientId, "client_id")
        v.id(couponId, "coupon_id")
        v.id(membershipId ?? "", "membership_id", required: false)
        v.nonNegativeAmount(revenueMinor, "revenue_minor")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> CustomerCreditResult {
        _ = try store.requireTenant(tenantId)
        let now = store.clock.nowMicros()
        if let expiresMicros, expiresMicros <= now { throw LedgerError.invalid("expire_time", "must be in the future") }
        guard let coupon = try store.coupon(tenant: tenantId, id: couponId) else {
            throw LedgerError.notFound(kind: "coupon", id: couponId)
        }
        guard coupon.active else { throw LedgerError.couponInactive(couponId: couponId) }
        return try CouponOps.issue(store: store, tenant: tenantId, coupon: coupon, clientId: clientId, membershipId: membershipId,
                                   ruleId: nil, expiresMicros: expiresMicros, revenueMinor: revenueMinor,
                                   idempotencyKey: idempotencyKey ?? "")
    }

    public func resultId(_ output: CustomerCreditResult) -> String { output.credit.id }
    public func resultSeq(_ output: CustomerCreditResult) -> Int64 { output.seq }
}

/// Revokes a credit so it can no longer be redeemed. Refused once a use is
/// redeemed (and not cancelled), for a revoked credit, and for an expired one.
public struct RevokeCustomerCredit: StorageCommand {
    public static let operation = "revoke_customer_credit"
    public var tenantId: String
    public var creditId: String
    /// If given, the credit must belong to this client (else NOT_FOUND).
    public var clientId: String?
    public var reason: String
    public var idempotencyKey: String?

    public init(tenantId: String, creditId: String, clientId: String?, reason: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.creditId = creditId
        self.clientId = clientId
        self.reason = reason
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("credit_id", creditId), ("client_id", Canonical.opt(clientId)), ("reason", reason)]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(creditId, "credit_id")
        v.id(clientId ?? "", "client_id", required: false)
        v.text(reason, "reason")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> CustomerCreditResult {
        var credit = try CouponOps.requireCredit(store: store, tenant: tenantId, id: creditId, clientId: clientId)
        let now = store.clock.nowMicros()
        // Checked in this order: revoked, a use redeemed, expired.
        if credit.state == .revoked { throw LedgerError.creditRevoked(creditId: creditId) }
        guard credit.usesRedeemed == 0 else {
            throw LedgerError.creditAlreadyRedeemed(creditId: creditId, usesRedeemed: credit.usesRedeemed)
        }
        if credit.effectiveState(atMicros: now) == .expired {
            throw LedgerError.creditExpired(creditId: creditId, expiresMicros: credit.expiresMicros ?? 0)
        }
        let seq = try CouponOps.close(store: store, tenant: tenantId, credit: &credit, as: .revoked, now: now,
                                      idempotencyKey: idempotencyKey ?? "", note: reason)
        guard let seq else { preconditionFailure("an active credit has uses left to revoke") }
        try store.updateCustomerCredit(credit, tenant: tenantId)
        return CustomerCreditResult(credit: credit, seq: seq)
    }

    public func resultId(_ output: CustomerCreditResult) -> String { output.credit.id }
    public func resultSeq(_ output: CustomerCreditResult) -> Int64 { output.seq }
}

/// Redeems one use of a credit against a booking.
public struct RedeemCustomerCredit: StorageCommand {
    public static let operation = "redeem_customer_credit"
    public var tenantId: String
    public var creditId: String
    public var clientId: String?
    public var bookingRef: String
    public var centerId: String
    public var idempotencyKey: String?

    public init(tenantId: String, creditId: String, clientId: String?, bookingRef: String, centerId: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.creditId = creditId
        self.clientId = clientId
        self.bookingRef = bookingRef
        self.centerId = centerId
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("credit_id", creditId), ("client_id", Canonical.opt(clientId)), ("booking_ref", bookingRef), ("center_id", centerId)]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(creditId, "credit_id")
        v.id(clientId ?? "", "client_id", required: false)
        v.id(bookingRef, "booking_ref")
        v.id(centerId, "center_id", required: false)
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> RedemptionResult {
        var credit = try CouponOps.requireCredit(store: store, tenant: tenantId, id: creditId, clientId: clientId)
        let now = store.clock.nowMicros()
        // Checked in this order: revoked, expired, no use left.
        if credit.state == .revoked { throw LedgerError.creditRevoked(creditId: creditId) }
        if credit.effectiveState(atMicros: now) == .expired {
            throw LedgerError.creditExpired(creditId: creditId, expiresMicros: credit.expiresMicros ?? 0)
        }
        guard credit.usesRemaining > 0 else { throw LedgerError.creditExhausted(creditId: creditId, maxUses: credit.maxUses) }
        precondition(credit.state == .active)

        // Revenue: an equal share per use, the last use takes what is left,
        // so the shares of all uses sum to revenue_minor exactly.
        let lastUse = credit.usesRedeemed + 1 == credit.maxUses
        let share = lastUse ? credit.revenueMinor - credit.revenueAllocatedMinor : credit.revenueMinor / Int64(credit.maxUses)
        precondition(share >= 0 && share <= credit.revenueDeferredMinor, "revenue share \(share) of credit \(credit.id) out of bounds")

        let id = IDs.make("crd", clock: store.clock)
        let entry = try store.appendEntry(
            tenant: tenantId, type: .couponRedeem, client: credit.clientId, amountMinor: 1, debit: CouponAccount.uses(credit.clientId),
            credit: CouponAccount.usesRedeemed, refId: id, centerId: centerId, bookingRef: bookingRef,
            idempotencyKey: idempotencyKey ?? "", reason: "redeem", note: credit.id)
        var seq = entry.seq
        if share > 0 {
            seq = try store.appendEntry(
                tenant: tenantId, type: .revenueAllocation, client: credit.clientId, amountMinor: share,
                debit: CouponAccount.revenueDeferred, credit: CouponAccount.revenueAllocated, refId: id, centerId: centerId,
                bookingRef: bookingRef, idempotencyKey: idempotencyKey ?? "", reason: "allocate", note: credit.id).seq
        }
        let redemption = CreditRedemption(id: id, creditId: credit.id, clientId: credit.clientId, bookingRef: bookingRef,
                                          centerId: centerId, state: .active, revenueMinor: share, seq: entry.seq, cancelSeq: nil,
                                          createdMicros: now, cancelledMicros: nil)
        try store.insertCouponRedemption(redemption, tenant: tenantId)
        credit.usesRedeemed += 1
        credit.revenueAllocatedMinor += share
        if credit.usesRemaining == 0 { credit.state = .redeemed }
        try store.updateCustomerCredit(credit, tenant: tenantId)
        return RedemptionResult(credit: credit, redemption: redemption, seq: seq)
    }

    public func resultId(_ output: RedemptionResult) -> String { output.redemption.id }
    public func resultSeq(_ output: RedemptionResult) -> Int64 { output.seq }
}

/// Cancels a redemption: its use returns to the credit and its revenue share
/// to deferred. If the credit is expired by then, the returned use (and the
/// share) expire at once. Cancelling a cancelled redemption is refused.
public struct CancelCreditRedemption: StorageCommand {
    public static let operation = "cancel_credit_redemption"
    public var tenantId: String
    public var redemptionId: String
    public var reason: String
    public var idempotencyKey: String?

    public init(tenantId: String, redemptionId: String, reason: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.redemptionId = redemptionId
        self.reason = reason
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] { [("redemption_id", redemptionId), ("reason", reason)] }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(redemptionId, "redemption_id")
        v.text(reason, "reason")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> RedemptionResult {
        guard var redemption = try store.couponRedemption(tenant: tenantId, id: redemptionId) else {
            throw LedgerError.notFound(kind: "credit_redemption", id: redemptionId)
        }
        guard redemption.state == .active else { throw LedgerError.redemptionAlreadyCancelled(redemptionId: redemptionId) }
        guard var credit = try store.customerCredit(tenant: tenantId, id: redemption.creditId) else {
            preconditionFailure("redemption \(redemptionId) of unknown credit \(redemption.creditId)")
        }
        precondition(credit.state != .revoked && credit.usesRedeemed > 0, "active redemption on credit \(credit)")
        let now = store.clock.nowMicros()
        let key = idempotencyKey ?? ""
        let entry = try store.appendEntry(
            tenant: tenantId, type: .couponRedemptionCancel, client: credit.clientId, amountMinor: 1, debit: CouponAccount.usesRedeemed,
            credit: CouponAccount.uses(credit.clientId), refId: redemption.id, centerId: redemption.centerId,
            bookingRef: redemption.bookingRef, idempotencyKey: key, reason: "cancel", note: reason)
        var seq = entry.seq
        if redemption.revenueMinor > 0 {
            seq = try store.appendEntry(
                tenant: tenantId, type: .revenueAllocation, client: credit.clientId, amountMinor: redemption.revenueMinor,
                debit: CouponAccount.revenueAllocated, credit: CouponAccount.revenueDeferred, refId: redemption.id,
                centerId: redemption.centerId, bookingRef: redemption.bookingRef, idempotencyKey: key, reason: "unallocate", note: reason).seq
        }
        redemption.state = .cancelled
        redemption.cancelSeq = entry.seq
        redemption.cancelledMicros = now
        try store.markCouponRedemptionCancelled(redemption, tenant: tenantId)
        credit.usesRedeemed -= 1
        credit.revenueAllocatedMinor -= redemption.revenueMinor
        if credit.state == .redeemed { credit.state = .active }
        if credit.state == .expired || credit.effectiveState(atMicros: now) == .expired {
            seq = try CouponOps.close(store: store, tenant: tenantId, credit: &credit, as: .expired, now: now, idempotencyKey: key,
                                      note: "expired") ?? seq
        }
        try store.updateCustomerCredit(credit, tenant: tenantId)
        return RedemptionResult(credit: credit, redemption: redemption, seq: seq)
    }

    public func resultId(_ output: RedemptionResult) -> String { output.redemption.id }
    public func resultSeq(_ output: RedemptionResult) -> Int64 { output.seq }
}

// MARK: - Membership credit rules

public struct CreateMembershipCreditRule: StorageCommand {
    public static let operation = "create_membership_credit_rule"
    public var tenantId: String
    public var couponId: String
    public var clientId: String
    public var membershipId: String
    public var frequency: CreditRuleFrequency
    public var day: Int32
    public var revenueMinor: Int64
    /// nil: now.
    public var startMicros: Int64?
    public var idempotencyKey: String?

    public init(tenantId: String, couponId: String, clientId: String, membershipId: String, frequency: CreditRuleFrequency,
                day: Int32, revenueMinor: Int64, startMicros: Int64?, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.couponId = couponId
        self.clientId = clientId
        self.membershipId = membershipId
        self.frequency = frequency
        self.day = day
        self.revenueMinor = revenueMinor
        self.startMicros = startMicros
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("coupon_id", couponId), ("client_id", clientId), ("membership_id", membershipId), ("frequency", frequency.rawValue),
         (frequency == .monthly ? "day_of_month" : "day_of_week", "\(day)"), ("revenue_minor", "\(revenueMinor)"),
         ("start_time", Canonical.opt(startMicros))]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(couponId, "coupon_id")
        v.id(clientId, "client_id")
        v.id(membershipId, "membership_id")
        switch frequency {
        case .monthly: v.check(day >= 1 && day <= 28, "day_of_month", "must be 1…28")
        case .weekly: v.check(day >= 1 && day <= 7, "day_of_week", "must be 1 (Monday)…7 (Sunday)")
        }
        v.nonNegativeAmount(revenueMinor, "revenue_minor")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> MembershipCreditRule {
        _ = try store.requireTenant(tenantId)
        guard let coupon = try store.coupon(tenant: tenantId, id: couponId) else {
            throw LedgerError.notFound(kind: "coupon", id: couponId)
        }
        guard coupon.active else { throw LedgerError.couponInactive(couponId: couponId) }
        let now = store.clock.nowMicros()
        let start = startMicros ?? now
        let rule = MembershipCreditRule(
            id: IDs.make("rul", clock: store.clock), couponId: couponId, clientId: clientId, membershipId: membershipId, frequency: frequency, day: day,
            revenueMinor: revenueMinor, enabled: true, startMicros: start,
            nextIssueMicros: RuleSchedule.firstIssue(frequency, day: day, atOrAfter: start), lastPeriod: nil, createdMicros: now,
            disabledMicros: nil)
        try store.saveCreditRule(rule, tenant: tenantId)
        return rule
    }

    public func resultId(_ output: MembershipCreditRule) -> String { output.id }
    public func resultSeq(_ output: MembershipCreditRule) -> Int64 { 0 }
}

/// Stops a rule; credits it issued stay. Disabling a disabled rule changes
/// nothing and returns it.
public struct DisableMembershipCreditRule: StorageCommand {
    public static let operation = "disable_membership_credit_rule"
    public var tenantId: String
    public var ruleId: String
    public var idempotencyKey: String?

    public init(tenantId: String, ruleId: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.ruleId = ruleId
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] { [("rule_id", ruleId)] }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(ruleId, "rule_id")
        v.idempotencyKey(idempotencyKey, required: false)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> MembershipCreditRule {
        guard var rule = try store.creditRule(tenant: tenantId, id: ruleId) else {
            throw LedgerError.notFound(kind: "membership_credit_rule", id: ruleId)
        }
        guard rule.enabled else { return rule }
        rule.enabled = false
        rule.disabledMicros = store.clock.nowMicros()
        try store.saveCreditRule(rule, tenant: tenantId)
        return rule
    }

    public func resultId(_ output: MembershipCreditRule) -> String { output.id }
    public func resultSeq(_ output: MembershipCreditRule) -> Int64 { 0 }
}

// MARK: - Shared movements

enum CouponOps {
    static func requireCredit(store: some LedgerStorage, tenant: String, id: String, clientId: String?) throws -> CustomerCredit {
        guard let credit = try store.customerCredit(tenant: tenant, id: id),
              clientId == nil || clientId == credit.clientId else {
            throw LedgerError.notFound(kind: "customer_credit", id: id)
        }
        return credit
    }

    /// Creates the credit: its uses (couponIssue) and its deferred revenue.
    static func issue(store: some LedgerStorage, tenant: String, coupon: Coupon, clientId: String, membershipId: String?, ruleId: String?,
                      expiresMicros: Int64?, revenueMinor: Int64, idempotencyKey: String) throws -> CustomerCreditResult {
        precondition(coupon.active && coupon.maxUses >= 1 && revenueMinor >= 0)
        let now = store.clock.nowMicros()
        let expires = expiresMicros ?? coupon.validityDays.map { now + Int64($0) * RuleSchedule.microsPerDay }
        let id = IDs.make("ccr", clock: store.clock)
        let entry = try store.appendEntry(
            tenant: tenant, type: .couponIssue, client: clientId, amountMinor: Int64(coupon.maxUses), debit: CouponAccount.usesIssued,
            credit: CouponAccount.uses(clientId), refId: id, idempotencyKey: idempotencyKey, reason: "issue", note: coupon.id)
        var seq = entry.seq
        if revenueMinor > 0 {
            seq = try store.appendEntry(
                tenant: tenant, type: .revenueAllocation, client: clientId, amountMinor: revenueMinor, debit: CouponAccount.revenueIssued,
                credit: CouponAccount.revenueDeferred, refId: id, idempotencyKey: idempotencyKey, reason: "defer", note: coupon.id).seq
        }
        let credit = CustomerCredit(
            id: id, clientId: clientId, couponId: coupon.id, membershipId: membershipId, ruleId: ruleId, serviceId: coupon.serviceId,
            valueMinor: coupon.valueMinor, maxUses: coupon.maxUses, usesRedeemed: 0, usesVoid: 0, state: .active, expiresMicros: expires,
            revenueMinor: revenueMinor, revenueAllocatedMinor: 0, revenueReleasedMinor: 0, issuedSeq: entry.seq, createdMicros: now,
            closedMicros: nil)
        try store.insertCustomerCredit(credit, tenant: tenant)
        return CustomerCreditResult(credit: credit, seq: seq)
    }

    /// Revokes or expires a credit: writes off the uses left and releases the
    /// deferred revenue. The caller saves the credit. Returns the seq of the
    /// last entry written (nil if none was needed).
    @discardableResult
    static func close(store: some LedgerStorage, tenant: String, credit: inout CustomerCredit, as state: CustomerCreditState, now: Int64,
                      idempotencyKey: String, note: String) throws -> Int64? {
        precondition(state == .revoked || state == .expired)
        var seq: Int64?
        let uses = credit.usesRemaining
        if uses > 0 {
            seq = try store.appendEntry(
                tenant: tenant, type: state == .revoked ? .couponRevoke : .couponExpiry, client: credit.clientId, amountMinor: Int64(uses),
                debit: CouponAccount.uses(credit.clientId), credit: state == .revoked ? CouponAccount.usesRevoked : CouponAccount.usesExpired,
                refId: credit.id, idempotencyKey: idempotencyKey, reason: state == .revoked ? "revoke" : "expired", note: note).seq
        }
        let deferred = credit.revenueDeferredMinor
        if deferred > 0 {
            seq = try store.appendEntry(
                tenant: tenant, type: .revenueAllocation, client: credit.clientId, amountMinor: deferred,
                debit: CouponAccount.revenueDeferred, credit: CouponAccount.revenueReleased, refId: credit.id,
                idempotencyKey: idempotencyKey, reason: "release", note: note).seq
        }
        credit.usesVoid += uses
        credit.revenueReleasedMinor += deferred
        credit.state = state
        if credit.closedMicros == nil { credit.closedMicros = now }
        return seq
    }
}
