import Dispatch
import Foundation
import Synchronization

/// Who decides the fate of a queued write: the writer, by taking it into a
/// batch, or its caller, by withdrawing it first (deadline passed, stream
/// cancelled). Exactly one of them wins; the loser learns it.
///
/// The rule this serves (a failure the server sends means nothing was
/// applied): a write withdrawn before the writer took it is never applied;
/// a write the writer took has a final outcome, which is the reply.
public final class WriteTicket: Sendable {
    private static let queued: UInt8 = 0, taken: UInt8 = 1, withdrawn: UInt8 = 2
    private let state = Atomic<UInt8>(0)

    public init() {}

    /// True if the write was still queued: it will never be applied. False
    /// if the writer has it already (its outcome will be reported).
    public func withdraw() -> Bool {
        state.compareExchange(expected: Self.queued, desired: Self.withdrawn, ordering: .acquiringAndReleasing).exchanged
    }

    /// The writer's side: true if the write is the writer's now.
    func take() -> Bool {
        state.compareExchange(expected: Self.queued, desired: Self.taken, ordering: .acquiringAndReleasing).exchanged
    }

    public var isWithdrawn: Bool { state.load(ordering: .acquiring) == Self.withdrawn }
}

/// One queued write: runs inside the writer's transaction, then reports.
final class PendingWrite {
    let deadlineUptimeNanos: UInt64?
    let ticket: WriteTicket?
    /// Applies the command (inside a savepoint) and returns how to report success.
    let execute: (LedgerStore) throws -> () -> Void
    let fail: (LedgerError) -> Void
    /// When it was queued (uptime nanoseconds), for the write-latency metric.
    let queuedNanos = WriterMetrics.nowNanos()

    init(deadlineUptimeNanos: UInt64?, ticket: WriteTicket?, execute: @escaping (LedgerStore) throws -> () -> Void,
         fail: @escaping (LedgerError) -> Void) {
        self.deadlineUptimeNanos = deadlineUptimeNanos
        self.ticket = ticket
        self.execute = execute
        self.fail = fail
    }
}

/// The single writer: every write command from every connection queues here;
/// a dedicated thread applies them in batches, one SQLite transaction per
/// batch with a savepoint per command (a failing command leaves the others
/// intact), commits, and only then answers each caller (group commit).
final class LedgerWriter: @unchecked Sendable {
    struct Configuration {
        var maxQueueDepth = 10_000
        var maxBatchSize = 256
        /// nil: no maintenance at all (a non-exclusive ledger).
        var maintenanceIntervalMicros: Int64? = 1_000_000
        /// The database file, for the storage probe's free-space check.
        var databasePath = ""
        var idempotencyRetentionMicros: Int64 = 7 * 86_400 * 1_000_000
    }

    private let store: LedgerStore
    private let configuration: Configuration
    private let cache: BalanceCache
    /// Told about every commit (on this thread: a hand-over under a lock only).
    private let feed: CommitFeed?
    private let condition = NSCondition()
    private var queue: [PendingWrite] = []
    private var queueHead = 0
    private var stopping = false
    private var stopped = false
    private var thread: Thread?
    private var nextMaintenanceMicros: Int64 = 0
    /// Sizes of recent batches, for metrics (written by the writer thread only).
    private(set) var batchesCommitted = 0
    private(set) var commandsCommitted = 0
    /// Reported through the swift-metrics facade (writer thread only).
    private var metrics = WriterMetrics()

    init(store: LedgerStore, configuration: Configuration, cache: BalanceCache, feed: CommitFeed? = nil) {
        precondition(configuration.maxQueueDepth > 0 && configuration.maxBatchSize > 0)
        self.fileIdentity = Self.identity(of: configuration.databasePath)
        self.store = store
        self.configuration = configuration
        self.cache = cache
        self.feed = feed
    }

    /// COMMITs the open transaction, dropping the clients it touched from
    /// the balance cache around it (see `BalanceCache`); ROLLBACK on failure.
    private func commit() throws {
        let touched = store.takeTouched()
        let seqs: [String: Int64]
        do {
            seqs = try store.flushPending()
            cache.beginCommit(touched)
            let started = WriterMetrics.nowNanos()
            try store.commitBatch()
            metrics.commitDuration.recordNanoseconds(Int64(WriterMetrics.nowNanos() &- started))
        } catch {
            store.rollbackBatch()
            store.discardPending()
            cache.endCommit(touched, tenantSeqs: [:])
            throw error
        }
        cache.endCommit(touched, tenantSeqs: seqs)
        feed?.committed(tenantSeqs: seqs, clients: touched)
        metrics.committed(tenantSeqs: seqs)
    }

    /// Rolls back the open transaction (if any) and forgets what it touched.
    private func rollback() {
        store.rollbackBatch()
        let touched = store.takeTouched()
        store.discardPending()
        cache.endCommit(touched, tenantSeqs: [:])
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "ledger-writer"
        thread.qualityOfService = .userInitiated
        self.thread = thread
        thread.start()
    }

    /// Queues a command; `completion` runs on the writer thread after the
    /// batch holding it committed (or failed).
    func submit<C: LedgerCommand>(_ command: C, deadlineUptimeNanos: UInt64?, ticket: WriteTicket?, encodeReply: @escaping (C.Output) -> [UInt8],
                                  completion: @escaping (Result<WriteOutcome<C.Output>, LedgerError>) -> Void) {
        do {
            try command.validate()
        } catch {
            completion(.failure(error))
            return
        }
        // The canonical request for idempotency checks, built on the caller's
        // thread: the writer thread is the bottleneck under write load.
        let fields = command.idempotencyFields.map { "\($0.0)=\(Canonical.escape($0.1))" }.joined(separator: "\n")
        let write = PendingWrite(deadlineUptimeNanos: deadlineUptimeNanos, ticket: ticket, execute: { store in
            try Self.execute(command, fields: fields, store: store, encodeReply: encodeReply, completion: completion)
        }, fail: { completion(.failure($0)) })
        condition.lock()
        if stopping {
            condition.unlock()
            completion(.failure(.unavailable))
            return
        }
        if queue.count - queueHead >= configuration.maxQueueDepth {
            condition.unlock()
            completion(.failure(.overloaded(queueLimit: configuration.maxQueueDepth)))
            return
        }
        queue.append(write)
        condition.signal()
        condition.unlock()
    }

    /// Idempotency first, then the command, then its idempotency record.
    /// `encodeReply` runs once per applied write, here (inside the savepoint):
    /// its bytes are stored with the record and are the outcome's reply; a
    /// replay returns the stored bytes as they are.
    private static func execute<C: LedgerCommand>(_ command: C, fields: String, store: LedgerStore, encodeReply: (C.Output) -> [UInt8],
                                                  completion: @escaping (Result<WriteOutcome<C.Output>, LedgerError>) -> Void) throws -> () -> Void {
        if let key = command.idempotencyKey, !key.isEmpty {
            if let existing = try store.idempotencyRecord(tenant: command.tenantId, key: key) {
                guard existing.operation == C.operation, existing.fields == fields else {
                    throw LedgerError.idempotencyKeyReused(
                        operation: existing.operation,
                        differingFields: differing(existing.operation == C.operation ? existing.fields : "", fields),
                        existingResultId: existing.resultId)
                }
                return { completion(.success(.replayed(reply: existing.reply, resultId: existing.resultId, seq: existing.seq))) }
            }
            let output = try command.apply(store)
            let reply = encodeReply(output)
            try store.storeIdempotency(tenant: command.tenantId, key: key, record: .init(
                operation: C.operation, fields: fields, resultId: command.resultId(output), seq: command.resultSeq(output),
                reply: reply, createdMicros: store.clock.nowMicros()))
            return { completion(.success(.applied(output, reply: reply))) }
        }
        let output = try command.apply(store)
        let reply = encodeReply(output)
        return { completion(.success(.applied(output, reply: reply))) }
    }

    /// Names of the fields whose values differ between two canonical field lists.
    static func differing(_ old: String, _ new: String) -> [String] {
        func parse(_ text: String) -> [String: String] {
            var out: [String: String] = [:]
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                out[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
            }
            return out
        }
        let a = parse(old), b = parse(new)
        let names = Set(a.keys).union(b.keys)
        let diff = names.filter { a[$0] != b[$0] }.sorted()
        return diff.isEmpty ? ["operation"] : diff
    }

    /// Stops taking commands, finishes those queued, and ends the thread.
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while !stopped { condition.wait() }
        condition.unlock()
    }

    var queueDepth: Int {
        condition.lock()
        defer { condition.unlock() }
        return queue.count - queueHead
    }

    // MARK: The writer thread

    private func run() {
        while true {
            condition.lock()
            while queue.count == queueHead && !stopping {
                let waitMicros = configuration.maintenanceIntervalMicros == nil ? 1_000_000
                    : max(1_000, nextMaintenanceMicros - store.clock.nowMicros())
                if !condition.wait(until: Date(timeIntervalSinceNow: Double(waitMicros) / 1_000_000)) { break }
            }
            metrics.queueDepth.record(queue.count - queueHead)
            let end = min(queue.count, queueHead + configuration.maxBatchSize)
            let batch = Array(queue[queueHead..<end])
            queueHead = end
            if queueHead == queue.count {
                queue.removeAll(keepingCapacity: queue.capacity <= 4 * configuration.maxBatchSize)
                queueHead = 0
            } else if queueHead > 4096 {
                queue.removeFirst(queueHead)
                queueHead = 0
            }
            let finished = stopping && batch.isEmpty
            condition.unlock()
            if finished { break }
            if !batch.isEmpty { apply(batch) }
            let now = store.clock.nowMicros()
            if let interval = configuration.maintenanceIntervalMicros, now >= nextMaintenanceMicros {
                if storageProblem != nil { probeStorage() }
                maintain()
                nextMaintenanceMicros = now + interval
            }
        }
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    private func apply(_ batch: [PendingWrite]) {
        var reports: [() -> Void] = []
        reports.reserveCapacity(batch.count)
        var failures: [(PendingWrite, LedgerError)] = []
        do {
            try checkFile()
            try store.beginBatch()
        } catch {
            let failure = LedgerError.from(error)
            noteStorage(failure)
            for write in batch { write.fail(failure) }
            return
        }
        var applied: [PendingWrite] = []
        for (index, write) in batch.enumerated() {
            // The moment the writer takes the write: before it, the caller may
            // withdraw it (it is then never applied); after it, its outcome
            // is final whatever the clock says.
            if let deadline = write.deadlineUptimeNanos, DispatchTime.now().uptimeNanoseconds >= deadline {
                if write.ticket?.withdraw() ?? true {
                    failures.append((write, .deadlineExceeded))
                    continue
                }
            }
            if let ticket = write.ticket, !ticket.take() {
                precondition(ticket.isWithdrawn, "a write is taken once")
                failures.append((write, .withdrawn))
                continue
            }
            do {
                let report = try store.savepoint { try write.execute(store) }
                reports.append(report)
                applied.append(write)
            } catch {
                let failure = LedgerError.from(error)
                failures.append((write, failure))
                noteStorage(failure)
                if !store.isInBatch {
                    // SQLite rolled the whole transaction back (disk full, I/O
                    // error): nothing of this batch is applied.
                    rollback()
                    for earlier in applied { earlier.fail(failure) }
                    for later in batch[(index + 1)...] { later.fail(failure) }
                    for (failed, error) in failures { failed.fail(error) }
                    return
                }
            }
        }
        do {
            try commit()
            batchesCommitted += 1
            commandsCommitted += applied.count
            // Every command the batch took, applied or refused (a refusal is
            // answered after the commit too).
            metrics.batchCommands.record(batch.count)
            let now = WriterMetrics.nowNanos()
            for write in batch { metrics.writeLatency.recordNanoseconds(Int64(now &- write.queuedNanos)) }
            if !failures.contains(where: { $0.1.storageProblem != nil }) { clearStorageProblem() }
            for report in reports { report() }
        } catch {
            let failure = LedgerError.from(error)
            noteStorage(failure)
            for write in applied { write.fail(failure) }
        }
        for (write, error) in failures { write.fail(error) }
    }

    // MARK: Storage health

    /// Free space the file system of the database needs before a full disk
    /// counts as fixed.
    static let minFreeBytes: UInt64 = 1 << 20

    /// The database file's device and inode when the writer started.
    private let fileIdentity: (dev: UInt64, ino: UInt64)?

    static func identity(of path: String) -> (dev: UInt64, ino: UInt64)? {
        guard !path.isEmpty else { return nil }
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// SQLite keeps writing to an open file that was moved or deleted (the
    /// writes would be lost with it): before each batch, the path must still
    /// name the file the writer opened, and be writable.
    private func checkFile() throws(LedgerError) {
        guard let expected = fileIdentity else { return }
        let path = configuration.databasePath
        guard let now = Self.identity(of: path), now == expected else {
            throw .storage(code: 1032, message: "database file \(path) was moved or removed")  // SQLITE_READONLY_DBMOVED
        }
        guard access(path, W_OK) == 0 else {
            throw .storage(code: 8, message: "database file \(path) is not writable")  // SQLITE_READONLY
        }
    }

    static func freeBytes(near path: String) -> UInt64? {
        guard !path.isEmpty else { return nil }
        let directory = (path as NSString).deletingLastPathComponent
        var info = statvfs()
        guard statvfs(directory.isEmpty ? "." : directory, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }

    private let problemLock = NSLock()
    private var problem: StorageProblem?

    /// Why writes fail now, if they do: set by a failed write or commit,
    /// cleared by the next commit or probe that succeeds.
    var storageProblem: StorageProblem? {
        problemLock.lock()
        defer { problemLock.unlock() }
        return problem
    }

    private func noteStorage(_ error: LedgerError) {
        guard let found = error.storageProblem else { return }
        problemLock.lock()
        problem = found
        problemLock.unlock()
    }

    private func clearStorageProblem() {
        problemLock.lock()
        problem = nil
        problemLock.unlock()
    }

    /// While writes fail for storage reasons, a small durable write at each
    /// maintenance tick tells when the storage works again, even if no client
    /// writes meanwhile.
    private func probeStorage() {
        // A small probe transaction may still fit where real writes do not
        // (the WAL reuses its space): a full disk counts as fixed only once
        // it has room again.
        if let free = Self.freeBytes(near: configuration.databasePath), free < Self.minFreeBytes {
            noteStorage(.storage(code: 13, message: "free space below \(Self.minFreeBytes) bytes"))
            return
        }
        do {
            try checkFile()
            try store.probeWrite()
            clearStorageProblem()
        } catch {
            rollback()
            noteStorage(LedgerError.from(error))
        }
    }

    /// Automatic releases of holds past their deadline, expiry of lots past
    /// valid_until, and removal of idempotency records past retention, in
    /// bounded steps.
    private func maintain() {
        let now = store.clock.nowMicros()
        do {
            try store.beginBatch()
        } catch {
            return
        }
        do {
            for (tenant, id) in try store.dueHolds(now: now, limit: 500) {
                var release = ReleaseHold(tenantId: tenant, holdId: id, idempotencyKey: nil)
                release.automatic = true
                _ = try store.savepoint { try release.apply(store) }
            }
            for (tenant, lot) in try store.dueLots(now: now, limit: 500) where lot.freeMinor > 0 || lot.heldMinor == 0 {
                try store.savepoint { try store.expire(tenant: tenant, lot: lot) }
            }
            try CouponMaintenance.run(store: store, now: now)
            try store.purgeIdempotency(before: now - configuration.idempotencyRetentionMicros, limit: 1000)
            try commit()
        } catch {
            rollback()
            // Retried at the next interval; nothing half-done stays (one transaction).
        }
    }
}
