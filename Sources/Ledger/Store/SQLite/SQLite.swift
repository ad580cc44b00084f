import CSQLite

/// An SQLite failure, keeping the C result code so that SQLITE_BUSY stays
/// distinguishable from SQLITE_CONSTRAINT.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let message: String
    public let sql: String?

    public var primaryCode: Int32 { code & 0xFF }
    public var isBusy: Bool { primaryCode == SQLITE_BUSY || primaryCode == SQLITE_LOCKED }
    public var isConstraint: Bool { primaryCode == SQLITE_CONSTRAINT }

    public var description: String {
        "SQLite error \(code): \(message)" + (sql.map { " [\($0)]" } ?? "")
    }
}

/// A value bound to, or read from, a statement.
public enum SQLValue: Sendable, Equatable {
    case null
    case int(Int64)
    case text(String)
    case blob([UInt8])
}

/// One SQLite connection with a prepared-statement cache. Not thread-safe:
/// confine each to one thread (the writer, or one event loop's reads).
public final class SQLiteConnection {
    private var db: OpaquePointer?
    private var cache: [SQLKey: PreparedStatement] = [:]
    private var walHook: WALHookBox?
    public let path: String

    public struct OpenOptions: Sendable {
        public var readOnly = false
        public var synchronousFull = true
        public var busyTimeoutMillis: Int32 = 5_000
        /// Page cache in KiB (SQLite's default is 2,000 KiB).
        public var cacheKiB: Int = 2_000
        public init() {}
    }

    /// Process-wide SQLite settings, applied once before the first connection.
    private static let configureOnce: Void = {
        let rc = credits_sqlite3_disable_memstatus()
        assert(rc == SQLITE_OK || rc == SQLITE_MISUSE, "sqlite3_config(MEMSTATUS): \(rc)")
    }()

    public init(path: String, options: OpenOptions = OpenOptions()) throws {
        Self.configureOnce
        self.path = path
        let flags = options.readOnly
            ? SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX
            : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close_v2(db)
            throw SQLiteError(code: rc, message: message, sql: nil)
        }
        sqlite3_busy_timeout(db, options.busyTimeoutMillis)
        sqlite3_extended_result_codes(db, 1)
        if !options.readOnly {
            try execute("PRAGMA journal_mode=WAL")
        }
        try execute(options.synchronousFull ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL")
        try execute("PRAGMA foreign_keys=ON")
        try execute("PRAGMA temp_store=MEMORY")
        precondition(options.cacheKiB > 0)
        try execute("PRAGMA cache_size=-\(options.cacheKiB)")
    }

    deinit {
        cache.removeAll()  // finalize statements before closing
        if walHook != nil { sqlite3_wal_hook(db, nil, nil) }
        sqlite3_close_v2(db)
    }

    /// Runs SQL without results (may hold several statements).
    public func execute(_ sql: String) throws {
        var errorMessage: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &errorMessage)
        if rc != SQLITE_OK {
            let message = errorMessage.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(db))
            sqlite3_free(errorMessage)
            throw SQLiteError(code: rc, message: message, sql: sql)
        }
    }

    /// Runs a fixed statement without results through the statement cache
    /// (BEGIN, COMMIT, SAVEPOINT…: no parsing per call, unlike `execute`).
    public func run(_ sql: String) throws {
        try statement(sql).run()
    }

    /// A cached prepared statement for `sql`, reset and ready to bind.
    public func statement(_ sql: String) throws -> PreparedStatement {
        if let cached = cache[SQLKey(sql)] {
            cached.reset()
            return cached
        }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else {
            throw SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(db)), sql: sql)
        }
        let prepared = PreparedStatement(stmt: stmt, connection: self, sql: sql)
        cache[SQLKey(sql)] = prepared
        return prepared
    }

    /// Runs `body` in a transaction: commits when it returns, rolls back when
    /// it throws (rethrowing the first error). `immediate` takes the write
    /// lock at BEGIN, as every write transaction should.
    public func transaction<T>(immediate: Bool = true, _ body: () throws -> T) throws -> T {
        try run(immediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED")
        do {
            let result = try body()
            try run("COMMIT")
            return result
        } catch {
            try? run("ROLLBACK")
            throw error
        }
    }

    /// Runs `body` inside a savepoint: released on return, rolled back to
    /// (and released) on throw, so one failing command leaves the enclosing
    /// transaction as it was.
    public func savepoint<T>(_ body: () throws -> T) throws -> T {
        try run("SAVEPOINT cmd")
        do {
            let result = try body()
            try run("RELEASE cmd")
            return result
        } catch {
            try? run("ROLLBACK TO cmd")
            try? run("RELEASE cmd")
            throw error
        }
    }

    public var changes: Int { Int(sqlite3_changes(db)) }

    /// Called after each commit with the number of frames in the WAL.
    /// Replaces SQLite's automatic checkpoints on this connection: the
    /// handler decides when and where to checkpoint.
    public func onWALCommit(_ handler: @escaping (Int) -> Void) {
        walHook = WALHookBox(handler)
        let context = Unmanaged.passUnretained(walHook!).toOpaque()
        sqlite3_wal_hook(db, { context, _, _, frames in
            Unmanaged<WALHookBox>.fromOpaque(context!).takeUnretainedValue().handler(Int(frames))
            return SQLITE_OK
        }, context)
    }

    /// A PASSIVE checkpoint (copies what it can without waiting for readers
    /// or writers); returns the WAL's frames and how many are now in the database.
    @discardableResult
    public func checkpointPassive() throws -> (walFrames: Int, checkpointed: Int) {
        var log: Int32 = 0, done: Int32 = 0
        let rc = sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, &log, &done)
        guard rc == SQLITE_OK else { throw error(rc, sql: "wal_checkpoint(PASSIVE)") }
        return (Int(log), Int(done))
    }

    public var isInTransaction: Bool { sqlite3_get_autocommit(db) == 0 }

    func error(_ rc: Int32, sql: String?) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(db)), sql: sql)
    }

    /// Online backup of this database into `destinationPath` (SQLite backup
    /// API), in steps so that writers are not blocked for long.
    public func backup(to destinationPath: String, pagesPerStep: Int32 = 256) throws {
        var dest: OpaquePointer?
        var rc = sqlite3_open_v2(destinationPath, &dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nil)
        defer { sqlite3_close_v2(dest) }
        guard rc == SQLITE_OK else {
            throw SQLiteError(code: rc, message: "cannot open backup destination", sql: nil)
        }
        guard let backup = sqlite3_backup_init(dest, "main", db, "main") else {
            throw SQLiteError(code: sqlite3_errcode(dest), message: String(cString: sqlite3_errmsg(dest)), sql: nil)
        }
        repeat {
            rc = sqlite3_backup_step(backup, pagesPerStep)
            if rc == SQLITE_BUSY || rc == SQLITE_LOCKED { sqlite3_sleep(5) }
        } while rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED
        let finish = sqlite3_backup_finish(backup)
        guard rc == SQLITE_DONE, finish == SQLITE_OK else {
            throw SQLiteError(code: rc == SQLITE_DONE ? finish : rc, message: String(cString: sqlite3_errmsg(dest)), sql: nil)
        }
    }
}

/// A prepared statement: bind by position (1-based), step, read columns.
public final class PreparedStatement {
    private let stmt: OpaquePointer
    private unowned let connection: SQLiteConnection
    let sql: String

    init(stmt: OpaquePointer, connection: SQLiteConnection, sql: String) {
        self.stmt = stmt
        self.connection = connection
        self.sql = sql
    }

    deinit { sqlite3_finalize(stmt) }

    func reset() {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
    }

    @discardableResult
    public func bind(_ values: SQLValue...) throws -> PreparedStatement {
        try bind(values)
    }

    @discardableResult
    public func bind(_ values: [SQLValue]) throws -> PreparedStatement {
        precondition(values.count == Int(sqlite3_bind_parameter_count(stmt)), "wrong number of bindings for \(sql)")
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(stmt, index)
            case .int(let v): rc = sqlite3_bind_int64(stmt, index, v)
            case .text(var s):
                // No C-string copy for native strings; SQLite copies the bytes.
                rc = s.withUTF8 { utf8 in
                    guard let base = utf8.baseAddress, utf8.count > 0 else { return sqlite3_bind_text(stmt, index, "", 0, SQLITE_TRANSIENT) }
                    return base.withMemoryRebound(to: CChar.self, capacity: utf8.count) {
                        sqlite3_bind_text(stmt, index, $0, Int32(utf8.count), SQLITE_TRANSIENT)
                    }
                }
            case .blob(let b):
                rc = b.withUnsafeBytes { sqlite3_bind_blob(stmt, index, $0.baseAddress, Int32($0.count), SQLITE_TRANSIENT) }
            }
            guard rc == SQLITE_OK else { throw connection.error(rc, sql: sql) }
        }
        return self
    }

    /// Steps once: true while a row is available.
    public func step() throws -> Bool {
        let rc = sqlite3_step(stmt)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw connection.error(rc, sql: sql)
        }
    }

    /// Runs a statement that returns no rows.
    public func run() throws {
        while try step() {}
        sqlite3_reset(stmt)
    }

    /// Each row, read by `read`.
    public func rows<T>(_ read: (Row) throws -> T) throws -> [T] {
        var out: [T] = []
        while try step() { out.append(try read(Row(stmt: stmt))) }
        sqlite3_reset(stmt)
        return out
    }

    /// Steps row by row while `body` returns true: rows after the one that
    /// returns false are never computed (a walk that stops early).
    public func forEachRow(_ body: (Row) throws -> Bool) throws {
        defer { sqlite3_reset(stmt) }
        while try step() {
            guard try body(Row(stmt: stmt)) else { return }
        }
    }

    /// The first row, or nil.
    public func first<T>(_ read: (Row) throws -> T) throws -> T? {
        defer { sqlite3_reset(stmt) }
        return try step() ? try read(Row(stmt: stmt)) : nil
    }
}

/// The current row of a statement; columns by 0-based index.
public struct Row {
    fileprivate let stmt: OpaquePointer

    public func int(_ i: Int32) -> Int64 { sqlite3_column_int64(stmt, i) }
    public func bool(_ i: Int32) -> Bool { sqlite3_column_int64(stmt, i) != 0 }
    public func isNull(_ i: Int32) -> Bool { sqlite3_column_type(stmt, i) == SQLITE_NULL }
    public func optionalInt(_ i: Int32) -> Int64? { isNull(i) ? nil : int(i) }

    public func text(_ i: Int32) -> String {
        guard let p = sqlite3_column_text(stmt, i) else { return "" }
        let n = Int(sqlite3_column_bytes(stmt, i))
        return String(decoding: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self)
    }

    public func optionalText(_ i: Int32) -> String? { isNull(i) ? nil : text(i) }

    public func blob(_ i: Int32) -> [UInt8] {
        guard let p = sqlite3_column_blob(stmt, i) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: Int(sqlite3_column_bytes(stmt, i))))
    }
}

private let SQLITE_TRANSIENT = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// Keeps the WAL hook's handler alive for as long as the connection.
private final class WALHookBox {
    let handler: (Int) -> Void
    init(_ handler: @escaping (Int) -> Void) { self.handler = handler }
}

/// The statement cache's key: the SQL text, hashed on its length and three
/// 16-byte windows instead of every byte (statements are hundreds of bytes
/// and looked up on every use); equality still compares the whole text.
private struct SQLKey: Hashable {
    let sql: String
    init(_ sql: String) { self.sql = sql }

    func hash(into hasher: inout Hasher) {
        var copy = sql
        copy.withUTF8 { bytes in
            let raw = UnsafeRawBufferPointer(bytes)
            hasher.combine(raw.count)
            let window = 16
            guard raw.count > 3 * window else {
                hasher.combine(bytes: raw)
                return
            }
            for start in [0, raw.count / 2 - window / 2, raw.count - window] {
                hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: raw[start..<(start + window)]))
            }
        }
    }

    static func == (a: SQLKey, b: SQLKey) -> Bool { a.sql == b.sql }
}
