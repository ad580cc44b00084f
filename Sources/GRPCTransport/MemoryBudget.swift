#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import Synchronization

/// Bytes of one kind held in memory by all connections of a server
/// together, against one budget: response bytes queued in calls (not yet
/// taken by nghttp2), or partly received request messages. Each connection
/// adds and removes its own bytes; the total is one atomic.
final class MemoryBudget: Sendable {
    let limitBytes: Int
    private let used = Atomic<Int>(0)
    /// A `malloc_trim` is scheduled (one at a time for the process).
    private let trimScheduled = Atomic<Bool>(false)

    init(limitBytes: Int) {
        precondition(limitBytes > 0)
        self.limitBytes = limitBytes
    }

    func add(_ delta: Int) {
        used.wrappingAdd(delta, ordering: .relaxed)
    }

    var usedBytes: Int { used.load(ordering: .relaxed) }

    var isExhausted: Bool { usedBytes >= limitBytes }

    /// After a connection that held many response bytes went away: glibc
    /// keeps freed memory in its arenas, so give it back to the system. One
    /// trim shortly after, for all the connections that leave meanwhile (slow
    /// readers tend to leave together), at most one pending for the process.
    func returnFreedMemory(on eventLoop: EventLoop) {
        guard Self.mallocTrim != nil, !trimScheduled.exchange(true, ordering: .relaxed) else { return }
        eventLoop.scheduleTask(in: .milliseconds(250)) {
            self.trimScheduled.store(false, ordering: .relaxed)
            _ = Self.mallocTrim?(0)
        }
    }

    /// glibc's `malloc_trim` (in <malloc.h>, which Glibc does not import);
    /// nil where the C library has none.
    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        #if canImport(Glibc)
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
        #else
        return nil
        #endif
    }()
}
