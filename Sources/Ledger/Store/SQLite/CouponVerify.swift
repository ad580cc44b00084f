/// Verify for coupon customer credits (called from `Verifier.verifyTenant`):
/// every credit's uses and revenue recomputed from its ledger entries and
/// its redemptions, and the coupon accounts against the credits. (The
/// generic check already recomputes every account from the entries.)
enum CouponVerifier {
    static func verify(db: SQLiteConnection, tenant: String, problem: (String) -> Void) throws {
        func sum(_ sql: String, _ binds: SQLValue...) throws -> Int64 {
            try db.statement(sql).bind(binds).first { $0.int(0) } ?? 0
        }
        let credits = try db.statement("SELECT \(CouponRows.creditColumns) FROM coupon_credits WHERE tenant_id = ?")
            .bind(.text(tenant)).rows(CouponRows.readCredit)
        var usesByClient: [String: Int64] = [:]
        var deferredTotal: Int64 = 0
        for c in credits {
            func bad(_ text: String) { problem("customer credit \(c.id): \(text)") }
            usesByClient[c.clientId, default: 0] += Int64(c.usesRemaining)
            deferredTotal += c.revenueDeferredMinor
            func entries(_ type: EntryType, credit account: String? = nil) throws -> Int64 {
                try sum("""
                    SELECT COALESCE(SUM(amount_minor), 0) FROM entries WHERE tenant_id = ? AND ref_id = ? AND type = ?
                      AND (? = '' OR credit_account = ?)
                    """, .text(tenant), .text(c.id), .text(type.rawValue), .text(account ?? ""), .text(account ?? ""))
            }
            let issued = try entries(.couponIssue), revoked = try entries(.couponRevoke), expired = try entries(.couponExpiry)
            let (redeemed, cancelled, active, activeRevenue, allocatedNet) = try db.statement("""
                SELECT
                  COALESCE(SUM((SELECT COUNT(*) FROM entries e WHERE e.tenant_id = r.tenant_id AND e.ref_id = r.id AND e.type = 'coupon_redeem')), 0),
                  COALESCE(SUM((SELECT COUNT(*) FROM entries e WHERE e.tenant_id = r.tenant_id AND e.ref_id = r.id AND e.type = 'coupon_redemption_cancel')), 0),
                  COALESCE(SUM(r.state = 'active'), 0),
                  COALESCE(SUM(CASE WHEN r.state = 'active' THEN r.revenue_minor ELSE 0 END), 0),
                  COALESCE(SUM((SELECT COALESCE(SUM(CASE WHEN e.credit_account = 'coupon_revenue:allocated' THEN e.amount_minor ELSE -e.amount_minor END), 0)
                     FROM entries e WHERE e.tenant_id = r.tenant_id AND e.ref_id = r.id AND e.type = 'revenue_allocation')), 0)
                FROM coupon_redemptions r WHERE r.tenant_id = ? AND r.credit_id = ?
                """).bind(.text(tenant), .text(c.id)).first { ($0.int(0), $0.int(1), $0.int(2), $0.int(3), $0.int(4)) }!
            if issued != Int64(c.maxUses) { bad("issue entries say \(issued) uses, max_uses is \(c.maxUses)") }
            if redeemed - cancelled != Int64(c.usesRedeemed) || active != Int64(c.usesRedeemed) {
                bad("uses_redeemed \(c.usesRedeemed), entries say \(redeemed) redeemed − \(cancelled) cancelled, \(active) active redemptions")
            }
            if revoked + expired != Int64(c.usesVoid) { bad("uses_void \(c.usesVoid), revoke/expiry entries say \(revoked + expired)") }
            let remaining = issued - redeemed + cancelled - revoked - expired
            if remaining != Int64(c.usesRemaining) || remaining < 0 { bad("uses left \(c.usesRemaining), entries say \(remaining)") }
            switch c.state {
            case .active: if remaining <= 0 { bad("active without uses left") }
            case .redeemed: if remaining != 0 || c.usesVoid != 0 { bad("redeemed with \(remaining) uses left, \(c.usesVoid) void") }
            case .revoked: if remaining != 0 || c.usesRedeemed != 0 || expired != 0 { bad("revoked with uses left, redeemed or expired") }
            case .expired: if remaining != 0 || revoked != 0 { bad("expired with \(remaining) uses left or revoked uses") }
            }
            // Revenue: deferred at issue; allocated = the active redemptions' shares; released at close.
            let deferredIn = try entries(.revenueAllocation, credit: CouponAccount.revenueDeferred)
            let released = try entries(.revenueAllocation, credit: CouponAccount.revenueReleased)
            if deferredIn != c.revenueMinor { bad("revenue \(c.revenueMinor), deferred at issue \(deferredIn)") }
            if allocatedNet != c.revenueAllocatedMinor || activeRevenue != c.revenueAllocatedMinor {
                bad("revenue allocated \(c.revenueAllocatedMinor), entries say \(allocatedNet), active redemptions \(activeRevenue)")
            }
            if released != c.revenueReleasedMinor { bad("revenue released \(c.revenueReleasedMinor), entries say \(released)") }
            if c.revenueDeferredMinor < 0 { bad("allocated + released exceed the revenue") }
            if c.state == .redeemed && c.revenueAllocatedMinor != c.revenueMinor {
                bad("fully redeemed but \(c.revenueAllocatedMinor) of \(c.revenueMinor) revenue allocated")
            }
            if (c.state == .revoked || c.state == .expired) && c.revenueDeferredMinor != 0 {
                bad("closed with \(c.revenueDeferredMinor) revenue still deferred")
            }
        }
        // Accounts: each client's uses account holds its credits' uses left;
        // the deferred revenue account the credits' deferred revenue.
        let accounts = try db.statement("SELECT account, balance_minor FROM accounts WHERE tenant_id = ? AND account LIKE 'coupon_uses:client:%'")
            .bind(.text(tenant)).rows { ($0.text(0), $0.int(1)) }
        var stored: [String: Int64] = [:]
        for (account, balance) in accounts { stored[account] = balance }
        for (client, uses) in usesByClient where (stored[CouponAccount.uses(client)] ?? 0) != uses {
            problem("account \(CouponAccount.uses(client)): \(stored[CouponAccount.uses(client)] ?? 0), credits have \(uses) uses left")
        }
        let known = Set(usesByClient.keys.map(CouponAccount.uses))
        for (account, balance) in stored where !known.contains(account) && balance != 0 {
            problem("account \(account) has \(balance) uses but no credits")
        }
        let deferredAccount = try sum("SELECT COALESCE(SUM(balance_minor), 0) FROM accounts WHERE tenant_id = ? AND account = ?",
                                      .text(tenant), .text(CouponAccount.revenueDeferred))
        if deferredAccount != deferredTotal { problem("account \(CouponAccount.revenueDeferred): \(deferredAccount), credits defer \(deferredTotal)") }
        // Redemptions point at credits of the same client.
        let orphans = try sum("""
            SELECT COUNT(*) FROM coupon_redemptions r LEFT JOIN coupon_credits c ON c.tenant_id = r.tenant_id AND c.id = r.credit_id
            WHERE r.tenant_id = ? AND (c.id IS NULL OR c.client_id <> r.client_id)
            """, .text(tenant))
        if orphans != 0 { problem("\(orphans) coupon redemptions without their credit") }
    }
}
