#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import Synchronization

/// Response bytes held in memory (queued in calls, not yet taken by
/// nghttp2) by all connections of a server together, against one budget.
/// Each connection adds and removes its own bytes; the total is one atomic.
final class ResponseBufferBudget: Sendable {
    let limitBytes: Int
    private let used = Atomic<Int>(0)
    /// When `malloc_trim` last ran, in uptime nanoseconds.
    private let lastTrimNanos = Atomic<UInt64>(0)

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
    /// keeps freed memory in its arenas, so give it back to the system, at
    /// most once a second for the whole process (measured: without it RSS
    /// stayed hundreds of MiB above idle after slow readers left).
    func returnFreedMemory() {
        let now = NIODeadline.now().uptimeNanoseconds
        let last = lastTrimNanos.load(ordering: .relaxed)
        guard now &- last >= 1_000_000_000,
              lastTrimNanos.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged else { return }
        _ = Self.mallocTrim?(0)
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
