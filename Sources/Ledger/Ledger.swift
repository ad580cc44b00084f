import Dispatch

/// The credits ledger over one SQLite file: one writer with group commit,
/// any number of readers (one per thread), verify and backup.
public final class Ledger: @unchecked Sendable {
    public struct Options: Sendable {
        /// `synchronous=FULL` (default): an acknowledged write survives power loss.
        public var synchronousFull = true
        public var maxQueueDepth = 10_000
        public var maxBatchSize = 256
        public var idempotencyRetentionSeconds: Int64 = 7 * 86_400
        public var maintenanceIntervalMillis: Int64 = 1_000
        /// Clients whose balance rows are kept in memory for GetBalance (0: off).
        public var balanceCacheEntries = 20_000
        /// Lot and hold rows the balance cache holds at most, all clients together.
        public var balanceCacheRows = BalanceCache.defaultRowBudget
        public var clock: LedgerClock = SystemClock()
        /// Take the database's exclusive lock (`DatabaseLock`): the default,
        /// and what a server does. Off only for short administrative writes
        /// beside a running server (tenants and keys, which no balance cache
        /// holds); such a ledger runs no maintenance (expiry, hold releases).
        public var exclusive = true
        public init() {}
    }

    public let path: String
    public let options: Options
    private let writer: LedgerWriter
    private let checkpointer: Checkpointer
    /// Balance reads from memory, invalidated by the writer at each commit.
    public let balanceCache: BalanceCache
    /// Commits as they happen, for streams that follow the ledger.
    public let commits: CommitFeed
    /// This process is the database's only writer while it holds this.
    private let lock: DatabaseLock?

    /// Opens (creating if needed) the database and runs the migrations.
    /// Throws `DatabaseLock.InUse` when another process has it open.
    public init(path: String, options: Options = Options()) throws {
        precondition(options.idempotencyRetentionSeconds >= 86_400, "idempotency keys are kept at least a day")
        self.lock = options.exclusive ? try DatabaseLock(databasePath: path) : nil
        self.path = path
        self.options = options
        var connectionOptions = SQLiteConnection.OpenOptions()
        connectionOptions.synchronousFull = options.synchronousFull
        connectionOptions.cacheKiB = 8 * 1024
        let db = try SQLiteConnection(path: path, options: connectionOptions)
        try Schema.migrate(db, clock: options.clock)
        let checkpointer = try Checkpointer(path: path, synchronousFull: options.synchronousFull)
        self.checkpointer = checkpointer
        db.onWALCommit { [unowned db] frames in
            if frames >= Checkpointer.requestFrames { checkpointer.request() }
            if frames >= Checkpointer.writerFallbackFrames { _ = try? db.checkpointPassive() }
        }
        checkpointer.start()
        precondition(options.balanceCacheEntries >= 0 && options.balanceCacheRows >= 0)
        balanceCache = BalanceCache(capacity: options.balanceCacheEntries, rowBudget: options.balanceCacheRows)
        commits = CommitFeed()
        commits.start()
        writer = LedgerWriter(store: LedgerStore(db: db, clock: options.clock), configuration: .init(
            maxQueueDepth: options.maxQueueDepth, maxBatchSize: options.maxBatchSize,
            maintenanceIntervalMicros: options.exclusive ? options.maintenanceIntervalMillis * 1_000 : nil, databasePath: path,
            idempotencyRetentionMicros: options.idempotencyRetentionSeconds * 1_000_000), cache: balanceCache, feed: commits)
        writer.start()
    }

    /// Applies the migrations to the database at `path` and returns the versions applied.
    public static func migrate(path: String) throws -> [Int] {
        let lock = try DatabaseLock(databasePath: path)
        defer { lock.release() }
        let db = try SQLiteConnection(path: path)
        return try Schema.migrate(db, clock: SystemClock())
    }

    public static var schemaVersion: Int { Schema.latestVersion }

    /// Queues a write. `completion` runs on the writer thread once the batch
    /// holding it has committed (or with the error that stopped it).
    /// `encodeReply` turns the result into the reply bytes (for the API
    /// layer, its serialized response): a pure function, run once on the
    /// writer thread for each applied write; the same bytes are stored for
    /// idempotent replays and returned in `.applied(_, reply:)`.
    ///
    /// With a `ticket`, the caller may withdraw the write until the writer
    /// takes it into a batch (see `WriteTicket`); a write whose deadline has
    /// passed when the writer reaches it is withdrawn by the writer and fails
    /// with `.deadlineExceeded`.
    public func submit<C: LedgerCommand>(_ command: C, deadlineUptimeNanos: UInt64? = nil, ticket: WriteTicket? = nil,
                                         encodeReply: @escaping (C.Output) -> [UInt8] = { _ in [] },
                                         completion: @escaping (Result<WriteOutcome<C.Output>, LedgerError>) -> Void) {
        writer.submit(command, deadlineUptimeNanos: deadlineUptimeNanos, ticket: ticket, encodeReply: encodeReply, completion: completion)
    }

    /// Synchronous write, for the CLI and tests (never on an event loop).
    public func write<C: LedgerCommand>(_ command: C, encodeReply: @escaping (C.Output) -> [UInt8] = { _ in [] }) throws(LedgerError) -> WriteOutcome<C.Output> {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<WriteOutcome<C.Output>, LedgerError>?
        submit(command, encodeReply: encodeReply) { r in
            result = r
            done.signal()
        }
        done.wait()
        return try result!.get()
    }

    /// A new reader on its own connection; confine it to one thread.
    public func makeReader() throws -> LedgerReader {
        try LedgerReader(path: path, clock: options.clock, cache: balanceCache)
    }

    /// Recomputes everything from the entries, on a connection of its own.
    public func verify() throws -> VerifyReport {
        try Self.verify(path: path)
    }

    public static func verify(path: String) throws -> VerifyReport {
        var options = SQLiteConnection.OpenOptions()
        options.readOnly = true
        return try Verifier.run(db: SQLiteConnection(path: path, options: options))
    }

    /// Online backup to `destination`, safe while the server writes.
    public static func backup(path: String, to destination: String) throws {
        var options = SQLiteConnection.OpenOptions()
        options.readOnly = true
        try SQLiteConnection(path: path, options: options).backup(to: destination)
    }

    public var queueDepth: Int { writer.queueDepth }

    /// Why writes fail now (disk full, file not writable, I/O errors), or nil
    /// when the last write or probe succeeded. Reads are not affected.
    public var storageProblem: StorageProblem? { writer.storageProblem }

    /// Background checkpoints done (the writer's commits never run one).
    var checkpointsDone: Int { checkpointer.checkpoints }

    /// Finishes queued writes and stops the writer.
    public func close() {
        writer.stop()
        commits.stop()
        checkpointer.stop()
        lock?.release()
    }
}
