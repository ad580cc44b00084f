/// `verify` for session packages: every line's counts are recomputed from
/// its ledger entries, and paid payment references match active redemptions.
extension Verifier {
    static func verifySessions(db: SQLiteConnection, tenant: String, problem: (String) -> Void) throws {
        struct Counts { var granted: Int64 = 0, used: Int64 = 0, returned: Int64 = 0, forfeited: Int64 = 0 }
        var byAccount: [String: Counts] = [:]
        var clientsByAccount: [String: Set<String>] = [:]

        // 1. Session entries move sessions between session accounts only.
        let movements = try db.statement("""
            SELECT type, client_id, debit_account, credit_account, SUM(amount_minor) FROM entries
            WHERE tenant_id = ? AND type IN ('session_grant', 'session_use', 'session_return', 'session_forfeit')
            GROUP BY type, client_id, debit_account, credit_account
            """).bind(.text(tenant)).rows { ($0.text(0), $0.text(1), $0.text(2), $0.text(3), $0.int(4)) }
        for (type, client, debit, credit, amount) in movements {
            let line: String
            switch (type, debit, credit) {
            case ("session_grant", SessionAccount.granted, _): line = credit; byAccount[line, default: .init()].granted += amount
            case ("session_use", _, SessionAccount.used): line = debit; byAccount[line, default: .init()].used += amount
            case ("session_return", SessionAccount.used, _): line = credit; byAccount[line, default: .init()].returned += amount
            case ("session_forfeit", _, SessionAccount.forfeited): line = debit; byAccount[line, default: .init()].forfeited += amount
            default:
                problem("\(type) entries of client \(client) move \(amount) from \(debit) to \(credit)")
                continue
            }
            if !line.hasPrefix("sessions:") || [SessionAccount.granted, SessionAccount.used, SessionAccount.forfeited].contains(line) {
                problem("\(type) entries of client \(client) touch \(line), not a session line account")
            }
            clientsByAccount[line, default: []].insert(client)
        }

        // 2. Each line: total = grants, used = uses − returns, forfeited =
        //    forfeits, 0 ≤ used, used + forfeited ≤ total; an inactive package
        //    holds no sessions; active redemptions of the line = used.
        let lines = try db.statement("""
            SELECT p.id, p.client_id, p.active, l.service_id, l.total_sessions, l.used_sessions, l.forfeited_sessions,
              (SELECT COUNT(*) FROM session_redemptions r WHERE r.tenant_id = l.tenant_id AND r.package_id = l.package_id
                 AND r.service_id = l.service_id AND r.state = 'active')
            FROM session_lines l JOIN session_packages p ON p.tenant_id = l.tenant_id AND p.id = l.package_id
            WHERE l.tenant_id = ?
            """).bind(.text(tenant)).rows { ($0.text(0), $0.text(1), $0.bool(2), $0.text(3), $0.int(4), $0.int(5), $0.int(6), $0.int(7)) }
        var seen = Set<String>()
        for (packageId, client, active, service, total, used, forfeited, activeRedemptions) in lines {
            let account = SessionAccount.line(packageId: packageId, serviceId: service)
            seen.insert(account)
            let c = byAccount[account] ?? Counts()
            let name = "client package \(packageId) line \(service)"
            if c.granted != total { problem("\(name): total \(total), grant entries \(c.granted)") }
            if c.used - c.returned != used { problem("\(name): used \(used), entries say \(c.used) uses − \(c.returned) returns") }
            if c.forfeited != forfeited { problem("\(name): forfeited \(forfeited), forfeit entries \(c.forfeited)") }
            if !(0 <= used && 0 <= forfeited && used + forfeited <= total) {
                problem("\(name): out of bounds: used \(used) + forfeited \(forfeited) of \(total)")
            }
            if !active && used + forfeited != total { problem("\(name): inactive with \(total - used - forfeited) sessions left") }
            if activeRedemptions != used { problem("\(name): \(activeRedemptions) active redemptions, used \(used)") }
            if let clients = clientsByAccount[account], clients != [client] {
                problem("\(name): entries of clients \(clients.sorted()), package of \(client)")
            }
        }
        for account in byAccount.keys where !seen.contains(account) {
            problem("session entries touch \(account), which is no line of a client package")
        }

        // 3. A payment reference is paid exactly when its redemption is
        //    active, and every active redemption pays its reference.
        let mismatches = try db.statement("""
            SELECT f.payment_ref, f.paid, f.client_id, r.id, r.state, r.payment_ref, r.client_id FROM session_payment_refs f
            LEFT JOIN session_redemptions r ON r.tenant_id = f.tenant_id AND r.id = f.redemption_id
            WHERE f.tenant_id = ? AND (r.id IS NULL OR r.payment_ref <> f.payment_ref OR r.client_id <> f.client_id
              OR (f.paid = 1) <> (r.state = 'active'))
            LIMIT 100
            """).bind(.text(tenant)).rows { "\($0.text(0)) (paid \($0.bool(1)), client \($0.text(2))) → redemption \($0.optionalText(3) ?? "none") \($0.optionalText(4) ?? "")" }
        for text in mismatches { problem("payment reference \(text) do not match") }
        let unpaid = try db.statement("""
            SELECT r.id, r.payment_ref FROM session_redemptions r
            LEFT JOIN session_payment_refs f ON f.tenant_id = r.tenant_id AND f.payment_ref = r.payment_ref
            WHERE r.tenant_id = ? AND r.state = 'active' AND (f.paid IS NOT 1 OR f.redemption_id <> r.id)
            LIMIT 100
            """).bind(.text(tenant)).rows { ($0.text(0), $0.text(1)) }
        for (id, ref) in unpaid { problem("active redemption \(id) does not pay its payment reference \(ref)") }
    }
}
