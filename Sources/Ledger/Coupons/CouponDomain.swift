/// Customer credits from coupons (SPEC §4): coupon templates, the credits
/// issued from them, their redemptions, and membership credit rules.
///
/// Coupon ledger entries count USES in `amountMinor` (not money); their
/// revenue moves as `revenueAllocation` entries in minor units. Accounts:
///
///   uses (per credit: issue → redeem / revoke / expiry; cancel returns a use)
///     coupon_uses:issued          → coupon_uses:client:<id>     couponIssue (max_uses)
///     coupon_uses:client:<id>     → coupon_uses:redeemed        couponRedeem (1)
///     coupon_uses:redeemed        → coupon_uses:client:<id>     couponRedemptionCancel (1)
///     coupon_uses:client:<id>     → coupon_uses:revoked         couponRevoke (uses left)
///     coupon_uses:client:<id>     → coupon_uses:expired         couponExpiry (uses left)
///   revenue (minor units; all revenueAllocation entries)
///     coupon_revenue:issued       → coupon_revenue:deferred     at issue (revenue_minor)
///     coupon_revenue:deferred     → coupon_revenue:allocated    at redemption (the use's share)
///     coupon_revenue:allocated    → coupon_revenue:deferred     at cancellation (that share back)
///     coupon_revenue:deferred     → coupon_revenue:released     at revoke / expiry (what is left)
///
/// So `coupon_uses:client:<id>` is the uses a client has left, and
/// `coupon_revenue:deferred` the revenue still waiting for redemptions.

public enum CouponAccount {
    /// Uses a client has left (never starts with "client:": not money).
    public static func uses(_ clientId: String) -> String { "coupon_uses:client:\(clientId)" }
    public static let usesIssued = "coupon_uses:issued"
    public static let usesRedeemed = "coupon_uses:redeemed"
    public static let usesRevoked = "coupon_uses:revoked"
    public static let usesExpired = "coupon_uses:expired"
    public static let revenueIssued = "coupon_revenue:issued"
    public static let revenueDeferred = "coupon_revenue:deferred"
    public static let revenueAllocated = "coupon_revenue:allocated"
    public static let revenueReleased = "coupon_revenue:released"
}

public enum CouponLimits {
    /// Uses one multi-use coupon may grant.
    public static let maxUses: Int32 = 1_000
    public static let maxNameLength = 200
    /// Coupon credits expired, and membership rules run, per maintenance pass.
    public static let maintenanceBatch = 500
    /// Highest page number a list accepts (page × page_size is bounded too).
    public static let maxPageNumber = 100_000
    public static let maxOffset = 1_000_000
}

/// A template: what a credit issued from it entitles the client to.
public struct Coupon: Sendable, Equatable {
    public var id: String
    public var name: String
    /// The service / offering the credit pays for; nil: any (value only).
    public var serviceId: String?
    /// Monetary value in minor units; 0: none (service only).
    public var valueMinor: Int64
    /// 1: single-use; more: multi-use.
    public var maxUses: Int32
    /// Credits issued from it expire this many days after issue; nil: never.
    public var validityDays: Int32?
    /// Only active coupons issue credits.
    public var active: Bool
    public var createdMicros: Int64
    public var updatedMicros: Int64

    public var multiUse: Bool { maxUses > 1 }
}

public enum CustomerCreditState: String, Sendable, CaseIterable {
    /// Has uses left and is not past its expiry.
    case active
    /// Every use redeemed (single-use: the one use).
    case redeemed
    /// Revoked by staff; can no longer be redeemed.
    case revoked
    /// Past its expiry; the uses left were written off.
    case expired
}

/// A coupon credit issued to a client.
public struct CustomerCredit: Sendable, Equatable {
    public var id: String
    public var clientId: String
    public var couponId: String
    public var membershipId: String?
    /// The membership credit rule that issued it, if any.
    public var ruleId: String?
    /// Copied from the coupon at issue.
    public var serviceId: String?
    public var valueMinor: Int64
    public var maxUses: Int32
    /// Uses redeemed and not cancelled.
    public var usesRedeemed: Int32
    /// Uses written off by revoke or expiry.
    public var usesVoid: Int32
    /// As stored; see `effectiveState(atMicros:)`.
    public var state: CustomerCreditState
    public var expiresMicros: Int64?
    /// Revenue allocated over the uses as they are redeemed.
    public var revenueMinor: Int64
    public var revenueAllocatedMinor: Int64
    /// Revenue released unallocated by revoke or expiry.
    public var revenueReleasedMinor: Int64
    public var issuedSeq: Int64
    public var createdMicros: Int64
    /// When it was revoked or expired.
    public var closedMicros: Int64?

    public var usesRemaining: Int32 { maxUses - usesRedeemed - usesVoid }
    public var multiUse: Bool { maxUses > 1 }
    public var revenueDeferredMinor: Int64 { revenueMinor - revenueAllocatedMinor - revenueReleasedMinor }

    /// An active credit at or past its expiry counts as expired even before
    /// maintenance writes its expiry entry (`expires == now` is expired).
    public func effectiveState(atMicros now: Int64) -> CustomerCreditState {
        if state == .active, let expires = expiresMicros, expires <= now { return .expired }
        return state
    }
}

public enum RedemptionState: String, Sendable, CaseIterable {
    case active
    case cancelled
}

/// One use of a credit, against a booking.
public struct CreditRedemption: Sendable, Equatable {
    public var id: String
    public var creditId: String
    public var clientId: String
    public var bookingRef: String
    public var centerId: String
    public var state: RedemptionState
    /// Revenue this use allocated (returned on cancellation).
    public var revenueMinor: Int64
    public var seq: Int64
    public var cancelSeq: Int64?
    public var createdMicros: Int64
    public var cancelledMicros: Int64?
}

public enum CreditRuleFrequency: String, Sendable, CaseIterable {
    /// On day `day` (1…28) of every month, 00:00 UTC.
    case monthly
    /// On ISO weekday `day` (1 = Monday … 7 = Sunday) of every week, 00:00 UTC.
    case weekly
}

/// Issues a coupon credit to a client's membership once per period.
public struct MembershipCreditRule: Sendable, Equatable {
    public var id: String
    public var couponId: String
    public var clientId: String
    public var membershipId: String
    public var frequency: CreditRuleFrequency
    /// Day of month (monthly) or ISO weekday (weekly).
    public var day: Int32
    public var revenueMinor: Int64
    public var enabled: Bool
    /// No credit for a period whose issue time is before this.
    public var startMicros: Int64
    /// The next issue time the rule waits for.
    public var nextIssueMicros: Int64
    /// Key of the latest period issued ("2026-03", "week-2026-03-02").
    public var lastPeriod: String?
    public var createdMicros: Int64
    public var disabledMicros: Int64?
}

/// Which credits a list returns: active ones always; the others on request.
public enum MultiUseFilter: Sendable, Equatable {
    case all
    case multiUseOnly
    case singleUseOnly
}

public struct CustomerCreditResult: Sendable, Equatable {
    public var credit: CustomerCredit
    /// The tenant's ledger seq after the write.
    public var seq: Int64
}

public struct RedemptionResult: Sendable, Equatable {
    public var credit: CustomerCredit
    public var redemption: CreditRedemption
    public var seq: Int64
}

/// Periods of membership credit rules, in UTC.
public enum RuleSchedule {
    static let microsPerDay: Int64 = 86_400 * 1_000_000

    public struct Period: Sendable, Equatable {
        public var key: String
        public var startMicros: Int64
        public var endMicros: Int64
        /// When the rule issues in this period.
        public var issueMicros: Int64
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }

    /// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian).
    static func civil(days z0: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = z0 + 719_468
        let era = floorDiv(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }

    static func days(year y0: Int64, month m: Int64, day d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = floorDiv(y, 400)
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func pad(_ n: Int64, _ width: Int) -> String {
        let s = String(n)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }

    /// The period containing `micros`.
    public static func period(_ frequency: CreditRuleFrequency, day: Int32, containing micros: Int64) -> Period {
        let dayIndex = floorDiv(micros, microsPerDay)
        switch frequency {
        case .monthly:
            let (y, m, _) = civil(days: dayIndex)
            let start = days(year: y, month: m, day: 1)
            let end = m == 12 ? days(year: y + 1, month: 1, day: 1) : days(year: y, month: m + 1, day: 1)
            return Period(key: "\(pad(y, 4))-\(pad(m, 2))", startMicros: start * microsPerDay, endMicros: end * microsPerDay,
                          issueMicros: (start + Int64(day) - 1) * microsPerDay)
        case .weekly:
            // ISO weekday, Monday = 1 (1970-01-01 was a Thursday, 4).
            let weekday = (dayIndex + 3) - floorDiv(dayIndex + 3, 7) * 7 + 1
            let monday = dayIndex - (weekday - 1)
            let (y, m, d) = civil(days: monday)
            return Period(key: "week-\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))", startMicros: monday * microsPerDay,
                          endMicros: (monday + 7) * microsPerDay, issueMicros: (monday + Int64(day) - 1) * microsPerDay)
        }
    }

    /// The first issue time at or after `micros`.
    public static func firstIssue(_ frequency: CreditRuleFrequency, day: Int32, atOrAfter micros: Int64) -> Int64 {
        let p = period(frequency, day: day, containing: micros)
        return p.issueMicros >= micros ? p.issueMicros : period(frequency, day: day, containing: p.endMicros).issueMicros
    }

    /// The latest period whose issue time is at or before `now`.
    public static func latestDue(_ frequency: CreditRuleFrequency, day: Int32, now: Int64) -> Period {
        let p = period(frequency, day: day, containing: now)
        let due = p.issueMicros <= now ? p : period(frequency, day: day, containing: p.startMicros - 1)
        precondition(due.issueMicros <= now)
        return due
    }
}
