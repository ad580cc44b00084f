import Foundation
import Synchronization

/// Row access and the primitive movements of the ledger, used by commands
/// inside the writer's transaction. Confined to the writer thread (or to a
/// reader's thread for the `load…` functions, through `StoreReads`).
public final class LedgerStore {
    let db: SQLiteConnection
    public let clock: LedgerClock

    /// Clients whose lots, holds or balance the open transaction changed,
    /// and tenants whose seq it advanced: the balance cache drops them when
    /// the transaction ends (see `BalanceCache`).
    private(set) var touchedClients: Set<BalanceCache.Key> = []
    /// Seqs taken in the open transaction and system-account movements,
    /// kept in memory and written once per transaction (`flushPending`,
    /// before COMMIT) instead of an UPDATE per entry; savepoints restore them.
    private var pendingSeqs: [String: Int64] = [:]
    private var pendingAccountDeltas: [AccountKey: Int64] = [:]
    /// Tenants read in this transaction or committed earlier (tenants are never deleted).
    private var knownTenants: Set<String> = []

    struct AccountKey: Hashable {
        var tenant: String
        var account: String
    }

    init(db: SQLiteConnection, clock: LedgerClock) {
        self.db = db
        self.clock = clock
    }

    deinit {
        assert(pendingSeqs.isEmpty && pendingAccountDeltas.isEmpty, "a transaction's seqs or account movements were never flushed")
    }

    func touch(tenant: String, client: String) {
        touchedClients.insert(BalanceCache.Key(tenant: tenant, client: client))
    }

    /// The touched clients, emptied for the next transaction.
    func takeTouched() -> Set<BalanceCache.Key> {
        defer { touchedClients.removeAll(keepingCapacity: true) }
        return touchedClients
    }

    /// Runs `body` in a savepoint; if it throws, the database and the
    /// pending seqs and account movements are as before.
    func savepoint<T>(_ body: () throws -> T) throws -> T {
        let seqs = pendingSeqs, deltas = pendingAccountDeltas, tenants = knownTenants
        do {
            return try db.savepoint(body)
        } catch {
            pendingSeqs = seqs
            pendingAccountDeltas = deltas
            knownTenants = tenants
            throw error
        }
    }

    /// Writes the transaction's tenant seqs and account movements (call
    /// before COMMIT); returns the tenants' last seqs.
    func flushPending() throws -> [String: Int64] {
        for (tenant, seq) in pendingSeqs {
            try db.statement("UPDATE tenants SET last_seq = ? WHERE id = ? AND last_seq < ?")
                .bind(.int(seq), .text(tenant), .int(seq)).run()
            precondition(db.changes == 1, "tenant \(tenant) seq moved outside the writer")
        }
        for (key, delta) in pendingAccountDeltas where delta != 0 {
            try db.statement("""
                INSERT INTO accounts (tenant_id, account, balance_minor) VALUES (?, ?, ?)
                ON CONFLICT (tenant_id, account) DO UPDATE SET balance_minor = balance_minor + excluded.balance_minor
                """).bind(.text(key.tenant), .text(key.account), .int(delta)).run()
        }
        let seqs = pendingSeqs
        pendingSeqs.removeAll(keepingCapacity: true)
        pendingAccountDeltas.removeAll(keepingCapacity: true)
        return seqs
    }

    /// A transaction outside the writer (tools, tests): BEGIN IMMEDIATE,
    /// `body`, the pending seqs and account movements, COMMIT.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try db.run("BEGIN IMMEDIATE")
        do {
            let result = try body()
            _ = try flushPending()
            _ = takeTouched()
            try db.run("COMMIT")
            return result
        } catch {
            try? db.run("ROLLBACK")
            discardPending()
            throw error
        }
    }

    /// After a ROLLBACK of the whole transaction.
    func discardPending() {
        pendingSeqs.removeAll(keepingCapacity: true)
        pendingAccountDeltas.removeAll(keepingCapacity: true)
        knownTenants.removeAll()
        touchedClients.removeAll(keepingCapacity: true)
    }

    // MARK: Tenants

    public func tenant(_ id: String) throws -> Tenant? {
        try db.statement("SELECT id, name, currency, allow_directory, created_micros, last_seq FROM tenants WHERE id = ?")
            .bind(.text(id))
            .first { Tenant(id: $0.text(0), name: $0.text(1), currency: $0.text(2), allowDirectory: $0.bool(3), createdMicros: $0.int(4),
                            lastSeq: pendingSeqs[id] ?? $0.int(5)) }
    }

    /// Throws NOT_FOUND unless the tenant exists (remembered once seen).
    public func requireTenantExists(_ id: String) throws {
        if knownTenants.contains(id) { return }
        _ = try requireTenant(id)
        knownTenants.insert(id)
    }

    public func requireTenant(_ id: String) throws -> Tenant {
        guard let tenant = try tenant(id) else { throw LedgerError.notFound(kind: "tenant", id: id) }
        return tenant
    }

    private func nextSeq(tenant: String) throws -> Int64 {
        let last: Int64
        if let pending = pendingSeqs[tenant] {
            last = pending
        } else {
            guard let stored = try db.statement("SELECT last_seq FROM tenants WHERE id = ?").bind(.text(tenant)).first({ $0.int(0) }) else {
                throw LedgerError.notFound(kind: "tenant", id: tenant)
            }
            last = stored
        }
        pendingSeqs[tenant] = last + 1
        return last + 1
    }

    // MARK: Clients

    struct ClientBalance {
        var availableMinor: Int64
        var heldMinor: Int64
    }

    func clientBalance(tenant: String, client: String) throws -> ClientBalance {
        try db.statement("SELECT available_minor, held_minor FROM clients WHERE tenant_id = ? AND client_id = ?")
            .bind(.text(tenant), .text(client))
            .first { ClientBalance(availableMinor: $0.int(0), heldMinor: $0.int(1)) } ?? ClientBalance(availableMinor: 0, heldMinor: 0)
    }

    public func summary(tenant: String, client: String) throws -> BalanceSummary {
        let balance = try clientBalance(tenant: tenant, client: client)
        let seq = try requireTenant(tenant).lastSeq
        return BalanceSummary(clientId: client, availableMinor: balance.availableMinor, heldMinor: balance.heldMinor, seq: seq)
    }

    /// The client's balance after a write, once the client's due lots are
    /// expired (a write's reply never counts credit past valid_until).
    public func summaryAfterExpiry(tenant: String, client: String) throws -> BalanceSummary {
        try expireDueLots(tenant: tenant, client: client, now: clock.nowMicros())
        return try summary(tenant: tenant, client: client)
    }

    // MARK: The one way money moves

    /// Appends one planned entry: takes the tenant's next seq, moves the
    /// amount from debit to credit, applies the allocations to their lots,
    /// and updates the client's balance and the counter-account. Asserts that
    /// no client balance goes negative (callers check sufficiency first).
    @discardableResult
    public func appendEntry(tenant: String, _ plan: EntryPlan) throws -> LedgerEntry {
        let client = plan.clientId, amountMinor = plan.amountMinor
        touch(tenant: tenant, client: client)
        let seq = try nextSeq(tenant: tenant)
        let now = clock.nowMicros()
        let (availableDelta, heldDelta) = plan.clientDeltas

        // One statement moves the client's balance and returns it; the
        // CHECKs on clients (never negative) back the callers' sufficiency checks.
        var balance: ClientBalance
        if let updated = try db.statement("""
            UPDATE clients SET available_minor = available_minor + ?, held_minor = held_minor + ?, last_seq = ?
            WHERE tenant_id = ? AND client_id = ? RETURNING available_minor, held_minor
            """).bind(.int(availableDelta), .int(heldDelta), .int(seq), .text(tenant), .text(client))
            .first({ ClientBalance(availableMinor: $0.int(0), heldMinor: $0.int(1)) }) {
            balance = updated
        } else {
            balance = ClientBalance(availableMinor: availableDelta, heldMinor: heldDelta)
            precondition(balance.availableMinor >= 0 && balance.heldMinor >= 0, "client \(client) balance would go negative: \(balance)")
            try db.statement("INSERT INTO clients (tenant_id, client_id, available_minor, held_minor, last_seq) VALUES (?, ?, ?, ?, ?)")
                .bind(.text(tenant), .text(client), .int(balance.availableMinor), .int(balance.heldMinor), .int(seq)).run()
        }
        precondition(balance.availableMinor >= 0 && balance.heldMinor >= 0, "client \(client) balance went negative: \(balance)")
        guard balance.availableMinor + balance.heldMinor <= LedgerLimits.maxBalanceMinor else {
            // The command's savepoint rolls back the update.
            throw LedgerError.amountOutOfRange(field: "amount_minor")
        }

        try db.statement("""
            INSERT INTO entries (tenant_id, seq, type, client_id, amount_minor, debit_account, credit_account,
              available_after_minor, held_after_minor, time_micros, ref_id, center_id, booking_ref, payment_ref,
              idempotency_key, reason, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).bind(.text(tenant), .int(seq), .text(plan.type.rawValue), .text(client), .int(amountMinor), .text(plan.debit),
                      .text(plan.credit), .int(balance.availableMinor), .int(balance.heldMinor), .int(now), .text(plan.refId),
                      .text(plan.centerId), .text(plan.bookingRef), .text(plan.paymentRef), .text(plan.idempotencyKey),
                      .text(plan.reason), .text(plan.note)).run()
        for (ordinal, allocation) in plan.allocations.enumerated() {
            try applyAllocation(tenant: tenant, seq: seq, ordinal: ordinal, allocation)
        }
        for (account, delta) in plan.systemDeltas {
            pendingAccountDeltas[AccountKey(tenant: tenant, account: account), default: 0] += delta
        }

        return LedgerEntry(seq: seq, type: plan.type, clientId: client, amountMinor: amountMinor, debitAccount: plan.debit,
                           creditAccount: plan.credit, availableAfterMinor: balance.availableMinor, heldAfterMinor: balance.heldMinor,
                           timeMicros: now, refId: plan.refId, centerId: plan.centerId, bookingRef: plan.bookingRef,
                           paymentRef: plan.paymentRef, idempotencyKey: plan.idempotencyKey, reason: plan.reason, note: plan.note,
                           allocations: plan.allocations)
    }

    private func applyAllocation(tenant: String, seq: Int64, ordinal: Int, _ allocation: Allocation) throws {
        try db.statement("INSERT INTO allocations (tenant_id, seq, ordinal, lot_id, remaining_delta_minor, held_delta_minor) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(.text(tenant), .int(seq), .int(Int64(ordinal)), .text(allocation.lotId), .int(allocation.remainingDeltaMinor), .int(allocation.heldDeltaMinor)).run()
        // The CHECK constraints on lots (0 ≤ held ≤ remaining ≤ amount) are the
        // backstop. Amounts first: no index covers them, so this rewrites the
        // lot's row only. The state (in three indexes) is set only when it
        // changes (measured: setting it on every allocation was most of a
        // spend's lot update).
        guard let (remaining, held, amount, state) = try db.statement("""
            UPDATE lots SET remaining_minor = remaining_minor + ?1, held_minor = held_minor + ?2
            WHERE tenant_id = ?3 AND id = ?4 RETURNING remaining_minor, held_minor, amount_minor, state
            """).bind(.int(allocation.remainingDeltaMinor), .int(allocation.heldDeltaMinor), .text(tenant), .text(allocation.lotId))
            .first({ ($0.int(0), $0.int(1), $0.int(2), LotState(rawValue: $0.text(3))!) }) else {
            preconditionFailure("allocation to unknown lot \(allocation.lotId)")
        }
        LotRules.checkBounds(lotId: allocation.lotId, amountMinor: amount, remainingMinor: remaining, heldMinor: held)
        let newState = LotRules.state(after: state, remainingMinor: remaining)
        if newState != state {
            try db.statement("UPDATE lots SET state = ? WHERE tenant_id = ? AND id = ?")
                .bind(.text(newState.rawValue), .text(tenant), .text(allocation.lotId)).run()
            precondition(db.changes == 1, "lot \(allocation.lotId) vanished")
        }
    }

    // MARK: Lots

    static let lotColumns = """
        id, client_id, origin, center_id, amount_minor, remaining_minor, held_minor, valid_from_micros, valid_until_micros,
        scope_categories, scope_centers, scope_memberships, package_id, payment_ref, price_minor, note, created_seq, created_micros, state
        """

    static func readLot(_ r: Row) -> Lot {
        Lot(id: r.text(0), clientId: r.text(1), origin: LotOrigin(rawValue: r.text(2))!, centerId: r.text(3),
            amountMinor: r.int(4), remainingMinor: r.int(5), heldMinor: r.int(6), validFromMicros: r.optionalInt(7),
            validUntilMicros: r.optionalInt(8),
            scope: Scope(serviceCategories: ListCodec.decode(r.text(9)), centers: ListCodec.decode(r.text(10)),
                         membershipIds: ListCodec.decode(r.text(11))),
            packageId: r.optionalText(12), paymentRef: r.optionalText(13), priceMinor: r.int(14), note: r.text(15),
            createdSeq: r.int(16), createdMicros: r.int(17), state: LotState(rawValue: r.text(18))!)
    }

    public func lot(tenant: String, id: String) throws -> Lot? {
        try db.statement("SELECT \(Self.lotColumns) FROM lots WHERE tenant_id = ? AND id = ?")
            .bind(.text(tenant), .text(id)).first(Self.readLot)
    }

    /// The client's active lots, soonest expiry first (no expiry last), then oldest.
    func activeLots(tenant: String, client: String, limit: Int) throws -> [Lot] {
        try db.statement("""
            SELECT \(Self.lotColumns) FROM lots INDEXED BY lots_by_client WHERE tenant_id = ? AND client_id = ? AND state = 'active'
            ORDER BY valid_until_micros IS NULL, valid_until_micros, created_seq LIMIT ?
            """).bind(.text(tenant), .text(client), .int(Int64(limit))).rows(Self.readLot)
    }

    /// Creates a lot and the entry that funds it.
    public func createLot(tenant: String, client: String, origin: LotOrigin, entryType: EntryType, fundingAccount: String,
                   amountMinor: Int64, centerId: String, validFromMicros: Int64?, validUntilMicros: Int64?, scope: Scope,
                   packageId: String?, paymentRef: String?, priceMinor: Int64, note: String, reason: String,
                   idempotencyKey: String) throws -> (Lot, LedgerEntry) {
        let id = IDs.make("lot", clock: clock)
        let now = clock.nowMicros()
        let tenantRow = try requireTenant(tenant)
        touch(tenant: tenant, client: client)
        try db.statement("""
            INSERT INTO lots (tenant_id, id, client_id, origin, center_id, amount_minor, remaining_minor, held_minor,
              valid_from_micros, valid_until_micros, scope_categories, scope_centers, scope_memberships, package_id,
              payment_ref, price_minor, note, created_seq, created_micros, state)
            VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active')
            """).bind(.text(tenant), .text(id), .text(client), .text(origin.rawValue), .text(centerId), .int(amountMinor),
                      validFromMicros.map(SQLValue.int) ?? .null, validUntilMicros.map(SQLValue.int) ?? .null,
                      .text(ListCodec.encode(scope.serviceCategories)), .text(ListCodec.encode(scope.centers)),
                      .text(ListCodec.encode(scope.membershipIds)), packageId.map(SQLValue.text) ?? .null,
                      paymentRef.map(SQLValue.text) ?? .null, .int(priceMinor), .text(note),
                      .int(tenantRow.lastSeq + 1), .int(now)).run()
        let entry = try appendEntry(tenant: tenant, EntryPlans.fundLot(
            type: entryType, clientId: client, lotId: id, amountMinor: amountMinor, fundingAccount: fundingAccount, centerId: centerId,
            paymentRef: paymentRef ?? "", idempotencyKey: idempotencyKey, reason: reason, note: note))
        precondition(entry.seq == tenantRow.lastSeq + 1)
        return (try lot(tenant: tenant, id: id)!, entry)
    }

    // MARK: Expiry

    /// Writes expiry entries for the client's lots past valid_until that have
    /// free credit left (the held part stays pinned until its hold resolves).
    public func expireDueLots(tenant: String, client: String, now: Int64) throws {
        let due = try db.statement("""
            SELECT \(Self.lotColumns) FROM lots INDEXED BY lots_by_client WHERE tenant_id = ? AND client_id = ? AND state = 'active'
              AND valid_until_micros IS NOT NULL AND valid_until_micros <= ? ORDER BY valid_until_micros, created_seq
            """).bind(.text(tenant), .text(client), .int(now)).rows(Self.readLot)
        for lot in due { try expire(tenant: tenant, lot: lot) }
    }

    /// Returns the EXPIRY entry, if the lot had free credit to write off.
    @discardableResult
    public func expire(tenant: String, lot: Lot) throws -> LedgerEntry? {
        touch(tenant: tenant, client: lot.clientId)
        var entry: LedgerEntry?
        if let plan = EntryPlans.expiry(of: lot) {
            entry = try appendEntry(tenant: tenant, plan)
        }
        if ExpiryPlan.of(lot).marksExpired {
            try db.statement("UPDATE lots SET state = 'expired' WHERE tenant_id = ? AND id = ?").bind(.text(tenant), .text(lot.id)).run()
        }
        return entry
    }

    // MARK: Drawing

    /// The lots a spend or hold may draw from now, in draw order.
    /// With `expireDue`, first writes the expiry entries of the client's lots
    /// past valid_until (read in the same query as the active lots: due lots
    /// come first in draw order).
    public func eligibleLots(tenant: String, client: String, now: Int64, centerId: String?, serviceCategory: String?,
                      membershipId: String?, expireDue: Bool = false) throws -> [Lot] {
        var lots = try activeLots(tenant: tenant, client: client, limit: LedgerLimits.maxLotsPerDraw + 1)
        if expireDue, lots.contains(where: { Draws.isDue($0, now: now) }) {
            if lots.count > LedgerLimits.maxLotsPerDraw {
                // Not all due lots may be in this page: expire them all, then read again.
                try expireDueLots(tenant: tenant, client: client, now: now)
                lots = try activeLots(tenant: tenant, client: client, limit: LedgerLimits.maxLotsPerDraw + 1)
            } else {
                for lot in lots where Draws.isDue(lot, now: now) {
                    try expire(tenant: tenant, lot: lot)
                }
                // Expired lots are not valid now: the filter below drops them.
            }
        }
        if lots.count > LedgerLimits.maxLotsPerDraw { throw LedgerError.tooManyLots(limit: LedgerLimits.maxLotsPerDraw) }
        return Draws.eligible(lots, now: now, centerId: centerId, serviceCategory: serviceCategory, membershipId: membershipId)
    }

    /// Net amount per lot drawn by the entries of `refId` and not yet
    /// returned (spends and their reversals, write-offs and their voids).
    public func outstandingDraws(tenant: String, refId: String) throws -> [Splits.Owed] {
        try db.statement("""
            SELECT a.lot_id, -SUM(a.remaining_delta_minor), MIN(a.seq) FROM allocations a
            JOIN entries e ON e.tenant_id = a.tenant_id AND e.seq = a.seq
            WHERE e.tenant_id = ? AND e.ref_id = ? GROUP BY a.lot_id
            ORDER BY MIN(CASE WHEN a.remaining_delta_minor < 0 THEN a.seq END),
                     MIN(CASE WHEN a.remaining_delta_minor < 0 THEN a.ordinal END)
            """).bind(.text(tenant), .text(refId)).rows { Splits.Owed(lotId: $0.text(0), minor: $0.int(1)) }
    }

    // MARK: Idempotency

    struct IdempotencyRecord {
        var operation: String
        var fields: String
        var resultId: String
        var seq: Int64
        var reply: [UInt8]
        var createdMicros: Int64
    }

    func idempotencyRecord(tenant: String, key: String) throws -> IdempotencyRecord? {
        try db.statement("SELECT operation, fields, result_id, seq, reply, created_micros FROM idempotency WHERE tenant_id = ? AND key = ?")
            .bind(.text(tenant), .text(key))
            .first { IdempotencyRecord(operation: $0.text(0), fields: $0.text(1), resultId: $0.text(2), seq: $0.int(3), reply: $0.blob(4), createdMicros: $0.int(5)) }
    }

    func storeIdempotency(tenant: String, key: String, record: IdempotencyRecord) throws {
        try db.statement("INSERT INTO idempotency (tenant_id, key, operation, fields, result_id, seq, reply, created_micros) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(.text(tenant), .text(key), .text(record.operation), .text(record.fields), .text(record.resultId),
                  .int(record.seq), .blob(record.reply), .int(record.createdMicros)).run()
    }
}

/// Lists stored in one TEXT column: entries joined by a unit separator
/// (validated ids never contain control characters).
enum ListCodec {
    static let separator: Character = "\u{1F}"
    static func encode(_ list: [String]) -> String { list.joined(separator: String(separator)) }
    static func decode(_ text: String) -> [String] {
        text.isEmpty ? [] : text.split(separator: separator, omittingEmptySubsequences: false).map(String.init)
    }
}
