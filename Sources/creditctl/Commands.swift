// creditctl's commands: each names one credits.v1 method; its flags are the
// fields of the method's request message (from the descriptor set), so every
// request field is reachable and the help is always current.

import CreditsProto

struct Command {
    /// One or two words: `balance`, `hold capture`.
    var words: [String]
    var method: ProtoMethodInfo
    var summary: String
    /// The request field a bare argument fills (`creditctl balance CLIENT`).
    var positional: String?
    /// Short flag names for request fields (`--details` for include_details).
    var aliases: [String: String] = [:]

    var name: String { words.joined(separator: " ") }
    var isPaged: Bool { SchemaRegistry.shared.message(method.requestType)?.field(named: "page_token") != nil }
    /// Commands whose request carries an idempotency key (except the lookup by key).
    var isMutation: Bool {
        method.name != "GetOperation"
            && SchemaRegistry.shared.message(method.requestType)?.field(named: "idempotency_key") != nil
    }
}

enum Commands {
    static let all: [Command] = {
        typealias C = Credits_V1_CreditService
        typealias K = Credits_V1_CouponService
        typealias S = Credits_V1_SessionPackageService
        typealias P = Credits_V1_CreditPackageService
        typealias A = Credits_V1_AdminService
        return [
            Command(words: ["balance"], method: C.getBalance.info, summary: "a client's balance",
                    positional: "client_id", aliases: ["details": "include_details"]),
            Command(words: ["balances"], method: C.listBalances.info, summary: "every client's balance (paged)"),
            Command(words: ["statement"], method: C.listLedgerEntries.info, summary: "a client's ledger entries (paged)",
                    positional: "client_id"),
            Command(words: ["purchase"], method: C.purchaseCreditPackage.info, summary: "buy a credit package for a client",
                    positional: "client_id", aliases: ["package": "package_id"]),
            Command(words: ["order"], method: C.createCreditOrder.info, summary: "grant credits by an order",
                    positional: "client_id", aliases: ["amount": "amount_minor", "price": "price_minor"]),
            Command(words: ["spend"], method: C.spendCredits.info, summary: "spend a client's credits",
                    positional: "client_id", aliases: ["amount": "amount_minor"]),
            Command(words: ["spend", "get"], method: C.getSpend.info, summary: "look up a spend", positional: "spend_id"),
            Command(words: ["reverse"], method: C.reverseSpend.info, summary: "reverse a spend (in full or in part)",
                    positional: "spend_id", aliases: ["amount": "amount_minor"]),
            Command(words: ["adjust"], method: C.adjustBalance.info, summary: "adjust a balance (admin)",
                    positional: "client_id", aliases: ["amount": "amount_minor"]),
            Command(words: ["hold", "create"], method: C.createHold.info, summary: "hold credits for a booking",
                    positional: "client_id", aliases: ["amount": "amount_minor"]),
            Command(words: ["hold", "capture"], method: C.captureHold.info, summary: "capture a hold (in full or in part)",
                    positional: "hold_id", aliases: ["amount": "amount_minor"]),
            Command(words: ["hold", "release"], method: C.releaseHold.info, summary: "release a hold", positional: "hold_id"),
            Command(words: ["hold", "get"], method: C.getHold.info, summary: "look up a hold", positional: "hold_id"),
            Command(words: ["write-off", "create"], method: C.createWriteOff.info, summary: "write off a client's credits",
                    positional: "client_id", aliases: ["amount": "amount_minor"]),
            Command(words: ["write-off", "list"], method: C.listWriteOffs.info, summary: "a client's write-offs (paged)",
                    positional: "client_id"),
            Command(words: ["write-off", "void"], method: C.voidWriteOff.info, summary: "void a write-off",
                    positional: "write_off_id"),
            Command(words: ["operation"], method: C.getOperation.info, summary: "look up an operation by its idempotency key",
                    positional: "idempotency_key"),

            Command(words: ["coupon", "create"], method: K.createCoupon.info, summary: "create a coupon"),
            Command(words: ["coupon", "get"], method: K.getCoupon.info, summary: "look up a coupon", positional: "coupon_id"),
            Command(words: ["coupon", "list"], method: K.listCoupons.info, summary: "the tenant's coupons (paged)"),
            Command(words: ["coupon", "deactivate"], method: K.deactivateCoupon.info, summary: "deactivate a coupon",
                    positional: "coupon_id"),
            Command(words: ["credit", "issue"], method: K.issueCustomerCredit.info, summary: "issue a customer credit",
                    positional: "client_id"),
            Command(words: ["credit", "get"], method: K.getCustomerCredit.info, summary: "look up a customer credit",
                    positional: "credit_id"),
            Command(words: ["credit", "list"], method: K.listCustomerCredits.info, summary: "a client's customer credits (paged)",
                    positional: "client_id"),
            Command(words: ["credit", "revoke"], method: K.revokeCustomerCredit.info, summary: "revoke a customer credit",
                    positional: "credit_id"),
            Command(words: ["credit", "redeem"], method: K.redeemCustomerCredit.info, summary: "redeem a customer credit",
                    positional: "credit_id"),
            Command(words: ["credit", "cancel-redemption"], method: K.cancelCreditRedemption.info,
                    summary: "cancel a customer credit redemption", positional: "redemption_id"),
            Command(words: ["membership-rule", "create"], method: K.createMembershipCreditRule.info,
                    summary: "create a membership credit rule"),
            Command(words: ["membership-rule", "list"], method: K.listMembershipCreditRules.info,
                    summary: "the membership credit rules"),
            Command(words: ["membership-rule", "disable"], method: K.disableMembershipCreditRule.info,
                    summary: "disable a membership credit rule"),

            Command(words: ["session", "create"], method: S.createClientPackage.info, summary: "create a client's session package",
                    positional: "client_id"),
            Command(words: ["session", "get"], method: S.getClientPackage.info, summary: "look up a session package",
                    positional: "client_package_id"),
            Command(words: ["session", "list"], method: S.listClientPackages.info, summary: "a client's session packages (paged)",
                    positional: "client_id"),
            Command(words: ["session", "deactivate"], method: S.deactivateClientPackage.info,
                    summary: "deactivate a session package", positional: "client_package_id"),
            Command(words: ["session", "use"], method: S.usePackageCredit.info, summary: "use one session of a client's packages",
                    positional: "client_id"),
            Command(words: ["session", "cancel"], method: S.cancelPackageRedemption.info, summary: "cancel a session use",
                    positional: "redemption_id"),
            Command(words: ["session", "redemption"], method: S.getPackageRedemption.info, summary: "look up a session use",
                    positional: "redemption_id"),

            Command(words: ["package", "create"], method: P.createCreditPackage.info, summary: "create a credit package (catalog)"),
            Command(words: ["package", "update"], method: P.updateCreditPackage.info, summary: "update a credit package"),
            Command(words: ["package", "deactivate"], method: P.deactivateCreditPackage.info, summary: "deactivate a credit package"),
            Command(words: ["package", "get"], method: P.getCreditPackage.info, summary: "look up a credit package"),
            Command(words: ["package", "list"], method: P.listCreditPackages.info, summary: "the credit packages (paged)"),

            Command(words: ["tenant", "create"], method: A.createTenant.info, summary: "create a tenant (admin token)",
                    positional: "tenant_id"),
            Command(words: ["tenant", "get"], method: A.getTenant.info, summary: "look up a tenant (admin token)",
                    positional: "tenant_id"),
            Command(words: ["tenant", "directory-access"], method: A.setDirectoryAccess.info,
                    summary: "allow or refuse directory keys for a tenant (admin token)", positional: "tenant_id"),
            Command(words: ["key", "create"], method: A.createApiKey.info,
                    summary: "create an API key; its token is in the answer, once (admin token)", positional: "tenant_id"),
            Command(words: ["key", "revoke"], method: A.revokeApiKey.info, summary: "revoke an API key (admin token)",
                    positional: "key_id"),
            Command(words: ["verify"], method: A.verifyLedger.info, summary: "check the ledger's invariants (admin token)"),
        ]
    }()

    /// The command named by the first one or two words of `args`, and how many words it took.
    static func find(_ args: [String]) -> (Command, Int)? {
        if args.count >= 2, let two = all.first(where: { $0.words == Array(args[0..<2]) }) { return (two, 2) }
        if let one = all.first(where: { $0.words == [args[0]] }) { return (one, 1) }
        return nil
    }
}
