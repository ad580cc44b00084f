/// Reads for streams that follow a tenant's ledger in seq order.
extension LedgerReader {
    public struct FeedPage: Sendable, Equatable {
        /// The matching entries, in seq order, with their allocations.
        public var entries: [LedgerEntry]
        /// Every matching entry with seq ≤ this is in `entries` (or was
        /// before `afterSeq`): the resume point after this page.
        public var scannedThrough: Int64
        /// The tenant's latest committed seq in the same snapshot.
        public var tenantSeq: Int64
    }

    /// Entries scanned per page at most, matching or not: a narrow filter
    /// over a long history costs bounded work per page.
    public static let feedScanWindow: Int64 = 8_192

    /// The tenant's entries with seq > `afterSeq`, oldest first, at most
    /// `limit`, only of `clients` and `types` when given. Never returns a
    /// seq past the snapshot's latest seq, so a page is a gapless prefix of
    /// what follows `afterSeq`.
    public func feedPage(tenant: String, afterSeq: Int64, clients: [String], types: Set<EntryType>, limit: Int) throws -> FeedPage {
        precondition(limit > 0 && limit <= LedgerLimits.maxPageSize && afterSeq >= 0)
        precondition(clients.count <= LedgerLimits.maxFeedClients)
        return try snapshot {
            guard let tenantRow = try LedgerStore(db: db, clock: clock).tenant(tenant) else {
                throw LedgerError.notFound(kind: "tenant", id: tenant)
            }
            let tip = tenantRow.lastSeq
            guard afterSeq < tip else { return FeedPage(entries: [], scannedThrough: max(afterSeq, 0), tenantSeq: tip) }
            let upper = min(tip, afterSeq &+ Self.feedScanWindow)
            var sql = """
                SELECT seq, type, client_id, amount_minor, debit_account, credit_account, available_after_minor, held_after_minor,
                  time_micros, ref_id, center_id, booking_ref, payment_ref, idempotency_key, reason, note
                FROM entries WHERE tenant_id = ? AND seq > ? AND seq <= ?
                """
            var binds: [SQLValue] = [.text(tenant), .int(afterSeq), .int(upper)]
            if !clients.isEmpty {
                sql += " AND client_id IN (\(clients.map { _ in "?" }.joined(separator: ",")))"
                binds += clients.map { .text($0) }
            }
            if !types.isEmpty {
                let names = types.map(\.rawValue).sorted()
                sql += " AND type IN (\(names.map { _ in "?" }.joined(separator: ",")))"
                binds += names.map { .text($0) }
            }
            sql += " ORDER BY seq LIMIT ?"
            binds.append(.int(Int64(limit)))
            var entries = try db.statement(sql).bind(binds).rows(Self.readEntry)
            if !entries.isEmpty {
                let allocations = try StoreReads(db: db).allocations(tenant: tenant, seqs: entries.map(\.seq))
                for i in entries.indices { entries[i].allocations = allocations[entries[i].seq] ?? [] }
            }
            // A full page ends at its last entry; a short one covers the window.
            let through = entries.count == limit ? entries[entries.count - 1].seq : upper
            assert(through > afterSeq && through <= tip, "a feed page moves forward within the committed entries")
            return FeedPage(entries: entries, scannedThrough: through, tenantSeq: tip)
        }
    }

    /// The tenant's latest committed seq (0: no entries yet).
    public func tenantSeq(_ tenant: String) throws -> Int64 {
        guard let row = try LedgerStore(db: db, clock: clock).tenant(tenant) else {
            throw LedgerError.notFound(kind: "tenant", id: tenant)
        }
        return row.lastSeq
    }
}
