import Foundation

/// A client of a tenant, as commit notices name it.
public struct LedgerClientKey: Hashable, Sendable {
    public var tenant: String
    public var client: String
    public init(tenant: String, client: String) {
        self.tenant = tenant
        self.client = client
    }
}

/// What one or more commits changed: the tenants that got entries (with
/// their latest committed seq) and the clients whose balance rows changed.
public struct CommitNotice: Sendable {
    /// Each tenant with new entries and its latest committed seq.
    public var tenantSeqs: [String: Int64]
    /// Clients touched by the commits. When too many were touched between two
    /// notices to list them (`everyClient`), this is empty and every client of
    /// the tenants in `tenantSeqs` may have changed.
    public var clients: Set<LedgerClientKey>
    public var everyClient: Bool
}

/// Tells listeners about commits, off the writer thread.
///
/// The writer hands each commit's tenant seqs and touched clients over under
/// a lock (constant work per touched client, no listener code); one notifier
/// thread merges what arrived since it last ran and calls every listener
/// with one `CommitNotice`. However many streams follow the ledger, the
/// writer does the same small hand-over per commit, and a listener that is
/// slow delays only later notices (merged, never lost), not commits.
public final class CommitFeed: @unchecked Sendable {
    public typealias Listener = @Sendable (CommitNotice) -> Void

    /// Clients remembered between two notices at most; beyond, the notice
    /// says "every client of these tenants" (memory stays bounded).
    static let maxPendingClients = 65_536

    private let condition = NSCondition()
    private var pendingSeqs: [String: Int64] = [:]
    private var pendingClients: Set<BalanceCache.Key> = []
    private var pendingEveryClient = false
    private var latestSeqs: [String: Int64] = [:]
    private var listeners: [Int: Listener] = [:]
    private var nextListenerID = 0
    private var stopping = false
    private var thread: Thread?

    init() {}

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "ledger-feed"
        self.thread = thread
        thread.start()
    }

    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    /// The writer, right after a COMMIT.
    func committed(tenantSeqs: [String: Int64], clients: Set<BalanceCache.Key>) {
        guard !tenantSeqs.isEmpty || !clients.isEmpty else { return }
        condition.lock()
        for (tenant, seq) in tenantSeqs where seq > pendingSeqs[tenant] ?? 0 {
            pendingSeqs[tenant] = seq
        }
        if !pendingEveryClient {
            if pendingClients.count + clients.count > Self.maxPendingClients {
                pendingEveryClient = true
                pendingClients.removeAll()
            } else {
                pendingClients.formUnion(clients)
            }
        }
        condition.signal()
        condition.unlock()
    }

    /// Adds a listener; it is called on the notifier thread. Returns its id.
    public func addListener(_ listener: @escaping Listener) -> Int {
        condition.lock()
        defer { condition.unlock() }
        nextListenerID += 1
        listeners[nextListenerID] = listener
        return nextListenerID
    }

    public func removeListener(_ id: Int) {
        condition.lock()
        listeners[id] = nil
        condition.unlock()
    }

    /// The latest committed seq of `tenant` this process has seen committed
    /// (nil: none since start).
    public func latestSeq(tenant: String) -> Int64? {
        condition.lock()
        defer { condition.unlock() }
        return latestSeqs[tenant]
    }

    private func run() {
        while true {
            condition.lock()
            while pendingSeqs.isEmpty && pendingClients.isEmpty && !pendingEveryClient && !stopping {
                condition.wait()
            }
            if stopping {
                condition.unlock()
                return
            }
            let seqs = pendingSeqs
            let touched = pendingClients
            let every = pendingEveryClient
            pendingSeqs.removeAll(keepingCapacity: true)
            pendingClients.removeAll(keepingCapacity: true)
            pendingEveryClient = false
            for (tenant, seq) in seqs where seq > latestSeqs[tenant] ?? 0 { latestSeqs[tenant] = seq }
            let current = Array(listeners.values)
            condition.unlock()

            var clients = Set<LedgerClientKey>(minimumCapacity: touched.count)
            for key in touched { clients.insert(LedgerClientKey(tenant: key.tenant, client: key.client)) }
            let notice = CommitNotice(tenantSeqs: seqs, clients: clients, everyClient: every)
            for listener in current { listener(notice) }
        }
    }
}
