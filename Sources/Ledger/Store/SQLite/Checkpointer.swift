import Foundation

/// Copies the WAL back into the database file on a thread and connection of
/// its own, so that the writer's commits never wait for a checkpoint (with
/// SQLite's automatic checkpoints, every ~1,000 frames one commit also
/// reads the WAL, writes the pages into the database and syncs it).
///
/// The writer's WAL hook asks for a checkpoint once the WAL holds
/// `requestFrames`; PASSIVE checkpoints never block the writer or readers.
/// Should this thread fall behind, the writer checkpoints inline at
/// `writerFallbackFrames`, so the WAL stays bounded either way.
final class Checkpointer: @unchecked Sendable {
    static let requestFrames = 1_000
    static let writerFallbackFrames = 50_000

    private let db: SQLiteConnection
    private let condition = NSCondition()
    private var requested = false
    private var stopping = false
    private var stopped = false
    private var thread: Thread?
    private var completed = 0

    init(path: String, synchronousFull: Bool) throws {
        var options = SQLiteConnection.OpenOptions()
        options.synchronousFull = synchronousFull
        db = try SQLiteConnection(path: path, options: options)
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "ledger-checkpoint"
        self.thread = thread
        thread.start()
    }

    /// Any thread: asks for a checkpoint soon (requests coalesce).
    func request() {
        condition.lock()
        requested = true
        condition.signal()
        condition.unlock()
    }

    /// Checkpoints done so far.
    var checkpoints: Int {
        condition.lock()
        defer { condition.unlock() }
        return completed
    }

    /// Runs a last checkpoint and ends the thread.
    func stop() {
        condition.lock()
        stopping = true
        requested = true
        condition.broadcast()
        while !stopped && thread != nil { condition.wait() }
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while !requested { condition.wait() }
            requested = false
            let last = stopping
            condition.unlock()
            // A failed checkpoint leaves the WAL as it was; the next request retries.
            let ok = (try? db.checkpointPassive()) != nil
            condition.lock()
            if ok { completed += 1 }
            condition.unlock()
            if last { break }
        }
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }
}
