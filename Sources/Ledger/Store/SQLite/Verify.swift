/// Recomputes every balance from the ledger entries and checks the
/// double-entry and lot invariants. Must always pass.
public struct VerifyReport: Sendable, CustomStringConvertible {
    public var tenants = 0
    public var entries = 0
    public var clients = 0
    public var lots = 0
    public var problems: [String] = []

    public var ok: Bool { problems.isEmpty }

    public var description: String {
        var text = "verify: \(tenants) tenants, \(entries) entries, \(clients) clients, \(lots) lots: "
        text += ok ? "OK" : "\(problems.count) problem(s)\n" + problems.prefix(100).map { "  - \($0)" }.joined(separator: "\n")
        return text
    }
}

enum Verifier {
    static func run(db: SQLiteConnection) throws -> VerifyReport {
        var report = VerifyReport()
        try db.transaction(immediate: false) {
            let tenants = try db.statement("SELECT id, last_seq FROM tenants ORDER BY id").rows { ($0.text(0), $0.int(1)) }
            report.tenants = tenants.count
            for (tenant, lastSeq) in tenants {
                try verifyTenant(db: db, tenant: tenant, lastSeq: lastSeq, report: &report)
            }
        }
        return report
    }

    private static func verifyTenant(db: SQLiteConnection, tenant: String, lastSeq: Int64, report: inout VerifyReport) throws {
        func problem(_ text: String) { report.problems.append("tenant \(tenant): \(text)") }

        // 1. Sequence numbers are 1…last_seq with no gap.
        let (count, minSeq, maxSeq) = try db.statement("SELECT COUNT(*), COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM entries WHERE tenant_id = ?")
            .bind(.text(tenant)).first { ($0.int(0), $0.int(1), $0.int(2)) }!
        report.entries += Int(count)
        if count != lastSeq || maxSeq != lastSeq || (count > 0 && minSeq != 1) {
            problem("entry seqs are not 1…\(lastSeq) (count \(count), min \(minSeq), max \(maxSeq))")
        }

        // 2. Account balances recomputed from entries (credit +, debit −) equal
        //    the stored ones, and all accounts sum to zero.
        var computed: [String: Int64] = [:]
        let movements = try db.statement("SELECT debit_account, credit_account, SUM(amount_minor) FROM entries WHERE tenant_id = ? GROUP BY debit_account, credit_account")
            .bind(.text(tenant)).rows { ($0.text(0), $0.text(1), $0.int(2)) }
        for (debit, credit, amount) in movements {
            computed[debit, default: 0] -= amount
            computed[credit, default: 0] += amount
        }
        if computed.values.reduce(0, &+) != 0 { problem("accounts do not sum to zero") }
        let stored = try db.statement("SELECT account, balance_minor FROM accounts WHERE tenant_id = ?").bind(.text(tenant)).rows { ($0.text(0), $0.int(1)) }
        var storedSystem: [String: Int64] = [:]
        for (account, balance) in stored { storedSystem[account] = balance }
        for (account, balance) in computed where !account.hasPrefix("client:") && storedSystem[account] != balance {
            problem("account \(account): stored \(storedSystem[account].map(String.init) ?? "none"), entries say \(balance)")
        }
        for (account, balance) in storedSystem where computed[account] == nil && balance != 0 {
            problem("account \(account) has balance \(balance) but no entries")
        }

        // 3. Each client's stored balance equals its accounts and its lots;
        //    the after-balance of its latest entry matches too.
        let clients = try db.statement("SELECT client_id, available_minor, held_minor, last_seq FROM clients WHERE tenant_id = ?")
            .bind(.text(tenant)).rows { ($0.text(0), $0.int(1), $0.int(2), $0.int(3)) }
        report.clients += clients.count
        for (client, available, held, clientSeq) in clients {
            let fromAvailable = computed[Account.available(client)] ?? 0
            let fromHeld = computed[Account.held(client)] ?? 0
            if fromAvailable != available || fromHeld != held {
                problem("client \(client): stored available/held \(available)/\(held), entries say \(fromAvailable)/\(fromHeld)")
            }
            let (lotRemaining, lotHeld) = try db.statement("SELECT COALESCE(SUM(remaining_minor), 0), COALESCE(SUM(held_minor), 0) FROM lots WHERE tenant_id = ? AND client_id = ?")
                .bind(.text(tenant), .text(client)).first { ($0.int(0), $0.int(1)) }!
            if lotRemaining != available + held || lotHeld != held {
                problem("client \(client): lots hold \(lotRemaining) (\(lotHeld) held), balance is \(available + held) (\(held) held)")
            }
            let holdsOpen = try db.statement("SELECT COALESCE(SUM(amount_minor), 0) FROM holds WHERE tenant_id = ? AND client_id = ? AND state = 'held'")
                .bind(.text(tenant), .text(client)).first { $0.int(0) }!
            if holdsOpen != held { problem("client \(client): open holds total \(holdsOpen), held balance is \(held)") }
            if let after = try db.statement("SELECT available_after_minor, held_after_minor FROM entries WHERE tenant_id = ? AND seq = ?")
                .bind(.text(tenant), .int(clientSeq)).first({ ($0.int(0), $0.int(1)) }), after != (available, held) {
                problem("client \(client): latest entry \(clientSeq) says \(after.0)/\(after.1), stored \(available)/\(held)")
            }
        }
        let clientsWithEntries = try db.statement("SELECT COUNT(DISTINCT client_id) FROM entries WHERE tenant_id = ?").bind(.text(tenant)).first { $0.int(0) }!
        if clientsWithEntries != Int64(clients.count) { problem("\(clientsWithEntries) clients have entries but \(clients.count) have balances") }

        // 4. Each lot's remaining and held equal the sum of its allocations;
        //    0 ≤ held ≤ remaining ≤ amount; every allocation belongs to an
        //    entry of the lot's own client (the as-of lot sums walk only that
        //    client's entries). No index on allocations by lot (migration 5):
        //    one pass over the tenant's allocations, grouped by a sort.
        var sums: [String: (remaining: Int64, held: Int64)] = [:]
        let owners = try db.statement("SELECT id, client_id FROM lots WHERE tenant_id = ?").bind(.text(tenant)).rows { ($0.text(0), $0.text(1)) }
        let ownerOf = Dictionary(owners, uniquingKeysWith: { a, _ in a })
        try db.statement("""
            SELECT a.lot_id, e.client_id, SUM(a.remaining_delta_minor), SUM(a.held_delta_minor), COUNT(*)
            FROM allocations a LEFT JOIN entries e ON e.tenant_id = a.tenant_id AND e.seq = a.seq
            WHERE a.tenant_id = ? GROUP BY a.lot_id, e.client_id
            """).bind(.text(tenant)).forEachRow { row in
            let lotId = row.text(0), client = row.optionalText(1), rows = row.int(4)
            guard let owner = ownerOf[lotId] else {
                problem("\(rows) allocation(s) to unknown lot \(lotId)")
                return true
            }
            if client == nil { problem("lot \(lotId): \(rows) allocation(s) without an entry") }
            if let client, client != owner { problem("lot \(lotId) of client \(owner): \(rows) allocation(s) in entries of client \(client)") }
            let (remaining, held) = sums[lotId] ?? (0, 0)
            sums[lotId] = (remaining + row.int(2), held + row.int(3))
            return true
        }
        let lots = try db.statement("""
            SELECT id, amount_minor, remaining_minor, held_minor, state FROM lots WHERE tenant_id = ?
            """).bind(.text(tenant)).rows { row -> (String, Int64, Int64, Int64, String, Int64, Int64) in
            let sum = sums[row.text(0)] ?? (0, 0)
            return (row.text(0), row.int(1), row.int(2), row.int(3), row.text(4), sum.remaining, sum.held)
        }
        report.lots += lots.count
        for (id, amount, remaining, held, state, sumRemaining, sumHeld) in lots {
            if remaining != sumRemaining || held != sumHeld {
                problem("lot \(id): remaining/held \(remaining)/\(held), allocations say \(sumRemaining)/\(sumHeld)")
            }
            if !(0 <= held && held <= remaining && remaining <= amount) { problem("lot \(id): out of bounds \(held) ≤ \(remaining) ≤ \(amount)") }
            if state == "exhausted" && remaining != 0 { problem("lot \(id): exhausted with \(remaining) left") }
            if state == "expired" && remaining != 0 { problem("lot \(id): expired with \(remaining) left") }
        }

        // 5. Spends: reversed ≤ amount, and reversals recorded equal reversed.
        let spends = try db.statement("""
            SELECT s.id, s.amount_minor, s.reversed_minor, COALESCE((SELECT SUM(e.amount_minor) FROM entries e
              WHERE e.tenant_id = s.tenant_id AND e.ref_id = s.id AND e.type = 'reversal'), 0)
            FROM spends s WHERE s.tenant_id = ?
            """).bind(.text(tenant)).rows { ($0.text(0), $0.int(1), $0.int(2), $0.int(3)) }
        for (id, amount, reversed, reversals) in spends where reversed != reversals || reversed > amount {
            problem("spend \(id): amount \(amount), reversed \(reversed), reversal entries \(reversals)")
        }

        // 6. Imported lots (ImportLots): each funded by one IMPORT entry.
        try verifyImports(db: db, tenant: tenant, problem: problem)

        // 7. Coupon customer credits (CouponVerify.swift).
        try CouponVerifier.verify(db: db, tenant: tenant) { problem($0) }

        // 8. Session packages (SessionVerify.swift).
        try verifySessions(db: db, tenant: tenant, problem: problem)
    }

    /// Each lot of origin IMPORT is funded by exactly one IMPORT entry of its
    /// amount, from funding:import to the client's available account; every
    /// IMPORT entry funds such a lot; nothing else moves funding:import; and
    /// funding:import holds minus the sum of the imported amounts.
    static func verifyImports(db: SQLiteConnection, tenant: String, problem: (String) -> Void) throws {
        let badLots = try db.statement("""
            SELECT l.id, l.amount_minor,
              (SELECT COUNT(*) FROM entries e WHERE e.tenant_id = l.tenant_id AND e.ref_id = l.id AND e.type = 'import'),
              (SELECT COUNT(*) FROM entries e WHERE e.tenant_id = l.tenant_id AND e.ref_id = l.id AND e.type = 'import'
                 AND e.amount_minor = l.amount_minor AND e.client_id = l.client_id AND e.debit_account = ?
                 AND e.credit_account = 'client:' || l.client_id || ':available')
            FROM lots l WHERE l.tenant_id = ? AND l.origin = 'import'
            """).bind(.text(Account.imports), .text(tenant)).rows { ($0.text(0), $0.int(1), $0.int(2), $0.int(3)) }
        for (id, amount, entries, matching) in badLots where entries != 1 || matching != 1 {
            problem("import lot \(id) of \(amount): \(entries) IMPORT entries, \(matching) of its amount from \(Account.imports) to its client")
        }
        let orphans = try db.statement("""
            SELECT e.seq, e.ref_id FROM entries e WHERE e.tenant_id = ? AND e.type = 'import'
              AND NOT EXISTS (SELECT 1 FROM lots l WHERE l.tenant_id = e.tenant_id AND l.id = e.ref_id AND l.origin = 'import')
            LIMIT 100
            """).bind(.text(tenant)).rows { ($0.int(0), $0.text(1)) }
        for (seq, ref) in orphans { problem("IMPORT entry \(seq) funds no import lot ('\(ref)')") }
        let foreign = try db.statement("""
            SELECT COUNT(*) FROM entries WHERE tenant_id = ?1 AND type <> 'import' AND (debit_account = ?2 OR credit_account = ?2)
            """).bind(.text(tenant), .text(Account.imports)).first { $0.int(0) }!
        if foreign != 0 { problem("\(foreign) entries other than IMPORT move \(Account.imports)") }
        let imported = try db.statement("SELECT COALESCE(SUM(amount_minor), 0) FROM lots WHERE tenant_id = ? AND origin = 'import'")
            .bind(.text(tenant)).first { $0.int(0) }!
        let funding = try db.statement("SELECT balance_minor FROM accounts WHERE tenant_id = ? AND account = ?")
            .bind(.text(tenant), .text(Account.imports)).first { $0.int(0) } ?? 0
        if funding != -imported { problem("account \(Account.imports) holds \(funding), imported lots total \(imported)") }
    }
}
