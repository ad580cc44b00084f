import CreditsProto
import GRPCServices
import GRPCTransport
import Ledger

/// credits.v1.CouponService: coupons, customer credits, membership credit rules.
struct CouponServiceRoutes {
    typealias S = Credits_V1_CouponService
    let core: APICore

    var routes: [RPCRoute] {
        [
            core.unary(S.createCoupon, .staff) { req, call, ctx in createCoupon(req, call, ctx) },
            core.unary(S.getCoupon, .read) { req, call, ctx in getCoupon(req, call, ctx) },
            core.unary(S.listCoupons, .read) { req, call, ctx in listCoupons(req, call, ctx) },
            core.unary(S.deactivateCoupon, .staff) { req, call, ctx in deactivateCoupon(req, call, ctx) },
            core.unary(S.issueCustomerCredit, .appWrite) { req, call, ctx in issue(req, call, ctx) },
            core.unary(S.getCustomerCredit, .read) { req, call, ctx in getCredit(req, call, ctx) },
            core.unary(S.listCustomerCredits, .read) { req, call, ctx in listCredits(req, call, ctx) },
            core.unary(S.revokeCustomerCredit, .staff) { req, call, ctx in revoke(req, call, ctx) },
            core.unary(S.redeemCustomerCredit, .appWrite) { req, call, ctx in redeem(req, call, ctx) },
            core.unary(S.cancelCreditRedemption, .appWrite) { req, call, ctx in cancelRedemption(req, call, ctx) },
            core.unary(S.createMembershipCreditRule, .staff) { req, call, ctx in createRule(req, call, ctx) },
            core.unary(S.listMembershipCreditRules, .read) { req, call, ctx in listRules(req, call, ctx) },
            core.unary(S.disableMembershipCreditRule, .staff) { req, call, ctx in disableRule(req, call, ctx) },
        ]
    }

    // MARK: Coupons

    func createCoupon(_ req: Credits_V1_CreateCouponRequest, _ call: ProtoCall<Credits_V1_Coupon>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        if req.validityDays < 0 { check.add("validity_days", "must not be negative (0: credits never expire by default)") }
        if req.maxUses < 0 { check.add("max_uses", "must not be negative (0 or 1: single-use)") }
        let currency = ctx.currency
        core.write(call, CreateCoupon(tenantId: ctx.tenantId, name: req.name, serviceId: nonEmpty(req.serviceID), valueMinor: req.valueMinor,
                                      maxUses: max(1, req.maxUses), validityDays: req.validityDays <= 0 ? nil : req.validityDays,
                                      idempotencyKey: key), check) { CouponConvert.coupon($0, currency: currency) }
    }

    func getCoupon(_ req: Credits_V1_GetCouponRequest, _ call: ProtoCall<Credits_V1_Coupon>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            try requireId(req.couponID, "coupon_id")
            guard let coupon = try ctx.reader.coupon(tenant: ctx.tenantId, id: req.couponID) else {
                throw LedgerError.notFound(kind: "coupon", id: req.couponID)
            }
            return CouponConvert.coupon(coupon, currency: ctx.currency)
        }
    }

    func listCoupons(_ req: Credits_V1_ListCouponsRequest, _ call: ProtoCall<Credits_V1_ListCouponsResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            let size = try PageToken.pageSize(req.pageSize)
            let scope = "coupons:\(req.includeInactive)"
            let after = try PageToken.decode(req.pageToken, scope: scope)
            let rows = try ctx.reader.listCoupons(tenant: ctx.tenantId, includeInactive: req.includeInactive, afterId: after, limit: size + 1)
            var r = Credits_V1_ListCouponsResponse()
            r.coupons = rows.prefix(size).map { CouponConvert.coupon($0, currency: ctx.currency) }
            if rows.count > size { r.nextPageToken = PageToken.encode(scope: scope, cursor: rows[size - 1].id) }
            return r
        }
    }

    func deactivateCoupon(_ req: Credits_V1_DeactivateCouponRequest, _ call: ProtoCall<Credits_V1_Coupon>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, DeactivateCoupon(tenantId: ctx.tenantId, couponId: req.couponID, idempotencyKey: key)) {
            CouponConvert.coupon($0, currency: currency)
        }
    }

    // MARK: Customer credits

    func issue(_ req: Credits_V1_IssueCustomerCreditRequest, _ call: ProtoCall<Credits_V1_CustomerCreditResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        let expires = check.optionalTime(req.expireTime, "expire_time")
        let currency = ctx.currency
        core.write(call, IssueCustomerCredit(tenantId: ctx.tenantId, clientId: req.clientID, couponId: req.couponID,
                                             membershipId: nonEmpty(req.membershipID), expiresMicros: expires,
                                             revenueMinor: req.revenueMinor, idempotencyKey: key), check) { out in
            CouponConvert.creditResponse(out, currency: currency)
        }
    }

    func getCredit(_ req: Credits_V1_GetCustomerCreditRequest, _ call: ProtoCall<Credits_V1_GetCustomerCreditResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            try requireId(req.creditID, "credit_id")
            if !req.clientID.isEmpty { try requireId(req.clientID, "client_id") }
            guard let (credit, redemptions) = try ctx.reader.customerCreditDetail(tenant: ctx.tenantId, id: req.creditID,
                                                                                 includeRedemptions: req.includeRedemptions),
                  req.clientID.isEmpty || req.clientID == credit.clientId else {
                throw LedgerError.notFound(kind: "customer_credit", id: req.creditID)
            }
            var r = Credits_V1_GetCustomerCreditResponse()
            r.credit = CouponConvert.credit(credit, currency: ctx.currency, now: ctx.reader.nowMicros)
            r.redemptions = redemptions.map(CouponConvert.redemption)
            return r
        }
    }

    func listCredits(_ req: Credits_V1_ListCustomerCreditsRequest, _ call: ProtoCall<Credits_V1_ListCustomerCreditsResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            var check = RequestCheck()
            check.id(req.clientID, "client_id")
            let size = check.pageSize(req.pageSize)
            try check.finish()
            if req.page != 0 && !req.pageToken.isEmpty {
                throw RPCErrorBox(RPCError.invalidArgument([
                    RPCError.FieldViolation(field: "page", description: "cannot be combined with page_token"),
                    RPCError.FieldViolation(field: "page_token", description: "cannot be combined with page"),
                ]))
            }
            guard req.page >= 0, Int(req.page) <= CouponLimits.maxPageNumber,
                  (Int(max(req.page, 1)) - 1) * size <= CouponLimits.maxOffset else {
                throw RPCErrorBox(RPCError.invalid("page", "must be 0…\(CouponLimits.maxPageNumber) (1-based) and page × page_size at most \(CouponLimits.maxOffset)"))
            }
            var query = LedgerReader.CustomerCreditQuery(tenant: ctx.tenantId, clientId: req.clientID)
            query.includeRedeemed = req.includeRedeemed
            query.includeExpired = req.includeExpired
            query.includeRevoked = req.includeRevoked
            switch req.multiUse {
            case .unspecified, .all: query.multiUse = .all
            case .multiUseOnly: query.multiUse = .multiUseOnly
            case .singleUseOnly: query.multiUse = .singleUseOnly
            default: throw RPCErrorBox(RPCError.invalid("multi_use", "is not a known filter"))
            }
            let scope = "customer_credits:\(req.clientID):\(req.includeRedeemed):\(req.includeExpired):\(req.includeRevoked):\(query.multiUse)"
            if let cursor = try PageToken.decode(req.pageToken, scope: scope) {
                guard let seq = Int64(cursor) else { throw RPCErrorBox(RPCError.invalid("page_token", "is malformed")) }
                query.beforeSeq = seq
            }
            if req.page > 1 { query.offset = (Int(req.page) - 1) * size }
            query.limit = size + 1
            let now = ctx.reader.nowMicros
            query.asOfMicros = now
            let (rows, total) = try ctx.reader.listCustomerCredits(query)
            var r = Credits_V1_ListCustomerCreditsResponse()
            r.credits = rows.prefix(size).map { CouponConvert.credit($0, currency: ctx.currency, now: now) }
            r.totalSize = Int32(clamping: total)
            if rows.count > size { r.nextPageToken = PageToken.encode(scope: scope, cursor: "\(rows[size - 1].issuedSeq)") }
            return r
        }
    }

    func revoke(_ req: Credits_V1_RevokeCustomerCreditRequest, _ call: ProtoCall<Credits_V1_CustomerCreditResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, RevokeCustomerCredit(tenantId: ctx.tenantId, creditId: req.creditID, clientId: nonEmpty(req.clientID),
                                              reason: req.reason, idempotencyKey: key)) { out in
            CouponConvert.creditResponse(out, currency: currency)
        }
    }

    func redeem(_ req: Credits_V1_RedeemCustomerCreditRequest, _ call: ProtoCall<Credits_V1_RedemptionResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, RedeemCustomerCredit(tenantId: ctx.tenantId, creditId: req.creditID, clientId: nonEmpty(req.clientID),
                                              bookingRef: req.bookingRef, centerId: req.centerID, idempotencyKey: key)) { out in
            CouponConvert.redemptionResponse(out, currency: currency)
        }
    }

    func cancelRedemption(_ req: Credits_V1_CancelCreditRedemptionRequest, _ call: ProtoCall<Credits_V1_RedemptionResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, CancelCreditRedemption(tenantId: ctx.tenantId, redemptionId: req.redemptionID, reason: req.reason,
                                                idempotencyKey: key)) { out in
            CouponConvert.redemptionResponse(out, currency: currency)
        }
    }

    // MARK: Membership credit rules

    func createRule(_ req: Credits_V1_CreateMembershipCreditRuleRequest, _ call: ProtoCall<Credits_V1_MembershipCreditRule>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        let frequency: CreditRuleFrequency
        let day: Int32
        switch req.frequency {
        case .monthly:
            if req.dayOfWeek != 0 { check.add("day_of_week", "applies to WEEKLY rules only") }
            frequency = .monthly
            day = req.dayOfMonth
        case .weekly:
            if req.dayOfMonth != 0 { check.add("day_of_month", "applies to MONTHLY rules only") }
            frequency = .weekly
            day = req.dayOfWeek
        default:
            check.add("frequency", "is required (MONTHLY or WEEKLY)")
            frequency = .monthly
            day = max(1, req.dayOfMonth)
        }
        let start = check.optionalTime(req.startTime, "start_time")
        core.write(call, CreateMembershipCreditRule(tenantId: ctx.tenantId, couponId: req.couponID, clientId: req.clientID,
                                                    membershipId: req.membershipID, frequency: frequency, day: day,
                                                    revenueMinor: req.revenueMinor, startMicros: start, idempotencyKey: key), check) {
            CouponConvert.rule($0)
        }
    }

    func listRules(_ req: Credits_V1_ListMembershipCreditRulesRequest, _ call: ProtoCall<Credits_V1_ListMembershipCreditRulesResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            var check = RequestCheck()
            check.id(req.clientID, "client_id", required: false)
            let size = check.pageSize(req.pageSize)
            try check.finish()
            let scope = "credit_rules:\(req.clientID):\(req.includeDisabled)"
            let after = try PageToken.decode(req.pageToken, scope: scope)
            let rows = try ctx.reader.listMembershipCreditRules(tenant: ctx.tenantId, clientId: nonEmpty(req.clientID),
                                                                includeDisabled: req.includeDisabled, afterId: after, limit: size + 1)
            var r = Credits_V1_ListMembershipCreditRulesResponse()
            r.rules = rows.prefix(size).map(CouponConvert.rule)
            if rows.count > size { r.nextPageToken = PageToken.encode(scope: scope, cursor: rows[size - 1].id) }
            return r
        }
    }

    func disableRule(_ req: Credits_V1_DisableMembershipCreditRuleRequest, _ call: ProtoCall<Credits_V1_MembershipCreditRule>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        core.write(call, DisableMembershipCreditRule(tenantId: ctx.tenantId, ruleId: req.ruleID, idempotencyKey: key)) {
            CouponConvert.rule($0)
        }
    }
}

/// Coupon ledger values → credits.v1 messages.
enum CouponConvert {
    static func coupon(_ c: Coupon, currency: String) -> Credits_V1_Coupon {
        var m = Credits_V1_Coupon()
        m.id = c.id
        m.name = c.name
        m.serviceID = c.serviceId ?? ""
        m.valueMinor = c.valueMinor
        m.maxUses = c.maxUses
        m.multiUse = c.multiUse
        m.validityDays = c.validityDays ?? 0
        m.active = c.active
        m.currency = currency
        m.createTime = Convert.timestamp(c.createdMicros)
        m.updateTime = Convert.timestamp(c.updatedMicros)
        return m
    }

    static func state(_ s: CustomerCreditState) -> Credits_V1_CustomerCreditState {
        switch s {
        case .active: return .active
        case .redeemed: return .redeemed
        case .revoked: return .revoked
        case .expired: return .expired
        }
    }

    /// The credit as of `now` (an active credit past its expiry shows EXPIRED, with no use left).
    static func credit(_ c: CustomerCredit, currency: String, now: Int64) -> Credits_V1_CustomerCredit {
        var m = Credits_V1_CustomerCredit()
        let effective = c.effectiveState(atMicros: now)
        m.id = c.id
        m.clientID = c.clientId
        m.couponID = c.couponId
        m.membershipID = c.membershipId ?? ""
        m.ruleID = c.ruleId ?? ""
        m.serviceID = c.serviceId ?? ""
        m.valueMinor = c.valueMinor
        m.maxUses = c.maxUses
        m.multiUse = c.multiUse
        m.usesRedeemed = c.usesRedeemed
        m.usesRemaining = effective == .active ? c.usesRemaining : 0
        m.state = state(effective)
        m.expireTime = c.expiresMicros.map(Convert.timestamp)
        m.revenueMinor = c.revenueMinor
        m.revenueAllocatedMinor = c.revenueAllocatedMinor
        m.revenueReleasedMinor = c.revenueReleasedMinor
        m.currency = currency
        m.issuedSeq = c.issuedSeq
        m.createTime = Convert.timestamp(c.createdMicros)
        m.closeTime = c.closedMicros.map(Convert.timestamp)
        return m
    }

    static func redemption(_ r: CreditRedemption) -> Credits_V1_CreditRedemption {
        var m = Credits_V1_CreditRedemption()
        m.id = r.id
        m.creditID = r.creditId
        m.clientID = r.clientId
        m.bookingRef = r.bookingRef
        m.centerID = r.centerId
        m.state = r.state == .active ? .active : .cancelled
        m.revenueMinor = r.revenueMinor
        m.seq = r.seq
        m.cancelSeq = r.cancelSeq ?? 0
        m.createTime = Convert.timestamp(r.createdMicros)
        m.cancelTime = r.cancelledMicros.map(Convert.timestamp)
        return m
    }

    static func rule(_ r: MembershipCreditRule) -> Credits_V1_MembershipCreditRule {
        var m = Credits_V1_MembershipCreditRule()
        m.id = r.id
        m.couponID = r.couponId
        m.clientID = r.clientId
        m.membershipID = r.membershipId
        switch r.frequency {
        case .monthly:
            m.frequency = .monthly
            m.dayOfMonth = r.day
        case .weekly:
            m.frequency = .weekly
            m.dayOfWeek = r.day
        }
        m.revenueMinor = r.revenueMinor
        m.enabled = r.enabled
        m.startTime = Convert.timestamp(r.startMicros)
        m.nextIssueTime = Convert.timestamp(r.nextIssueMicros)
        m.lastPeriod = r.lastPeriod ?? ""
        m.createTime = Convert.timestamp(r.createdMicros)
        m.disableTime = r.disabledMicros.map(Convert.timestamp)
        return m
    }

    /// Write results are shown as of the write (the writer's clock).
    static func creditResponse(_ out: CustomerCreditResult, currency: String) -> Credits_V1_CustomerCreditResponse {
        var r = Credits_V1_CustomerCreditResponse()
        r.credit = credit(out.credit, currency: currency, now: out.credit.closedMicros ?? out.credit.createdMicros)
        r.seq = out.seq
        return r
    }

    static func redemptionResponse(_ out: RedemptionResult, currency: String) -> Credits_V1_RedemptionResponse {
        var r = Credits_V1_RedemptionResponse()
        r.credit = credit(out.credit, currency: currency, now: out.redemption.cancelledMicros ?? out.redemption.createdMicros)
        r.redemption = redemption(out.redemption)
        r.seq = out.seq
        return r
    }
}
