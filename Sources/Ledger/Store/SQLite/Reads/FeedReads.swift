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
            let tip = try tenantSeq(tenant)
            guard afterSeq < tip else { return FeedPage(entries: [], scannedThrough: max(afterSeq, 0), tenantSeq: tip) }
            let upper = min(tip, afterSeq &+ Self.feedScanWindow)
            let clientFilter = Self.inList("client_id", clients), typeFilter = Self.inList("type", types.map(\.rawValue).sorted())
            let sql = """
                SELECT \(Self.entryColumns) FROM entries
                WHERE tenant_id = ? AND seq > ? AND seq <= ?\(clientFilter.sql)\(typeFilter.sql) ORDER BY seq LIMIT ?
                """
            let binds: [SQLValue] = [.text(tenant), .int(afterSeq), .int(upper)] + clientFilter.binds + typeFilter.binds
                + [.int(Int64(limit))]
            let entries = try withAllocations(db.statement(sql).bind(binds).rows(Self.readEntry), tenant: tenant)
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
