import Synchronization

/// A tenant's newest ledger entries in a form ready to send (e.g. encoded
/// once for every change-feed stream that is caught up): every entry with
/// seq in (`start`, `end`], contiguous, since a tenant's seqs have no gaps.
/// Bounded by entries and bytes: the oldest are dropped, and a reader behind
/// `start` reads the database instead. Thread-safe.
public final class EntryTail<Payload>: @unchecked Sendable {
    public struct Item {
        public let seq: Int64
        public let clientId: String
        public let type: EntryType
        public let payload: Payload
        public let bytes: Int
        public init(seq: Int64, clientId: String, type: EntryType, payload: Payload, bytes: Int) {
            self.seq = seq
            self.clientId = clientId
            self.type = type
            self.payload = payload
            self.bytes = bytes
        }
    }

    public static var maxItems: Int { 4_096 }
    /// Bytes all tails hold together at most (each gets an equal share,
    /// between `minBytes` and `maxBytes`).
    public static var totalBytes: Int { 64 << 20 }
    public static var maxBytes: Int { 2 << 20 }
    public static var minBytes: Int { 64 << 10 }

    private struct State {
        var items: [Item] = []
        var head = 0
        var bytes = 0
        var byteBudget = EntryTail.maxBytes
        var start: Int64
        var end: Int64
        var count: Int { items.count - head }
    }
    private let state: Mutex<State>

    public init(startingAfter seq: Int64) {
        state = Mutex(State(start: seq, end: seq))
    }

    public var start: Int64 { state.withLock { $0.start } }
    public var end: Int64 { state.withLock { $0.end } }
    public var count: Int { state.withLock { $0.count } }
    public var bytes: Int { state.withLock { $0.bytes } }

    /// This tail's share of `totalBytes` when `tails` tails exist.
    public func share(of tails: Int) {
        let budget = min(Self.maxBytes, max(Self.minBytes, Self.totalBytes / max(tails, 1)))
        state.withLock { $0.byteBudget = budget }
    }

    /// Forgets everything; the tail continues after `seq`.
    public func restart(after seq: Int64) {
        state.withLock {
            $0.items.removeAll()
            $0.head = 0
            $0.bytes = 0
            $0.start = seq
            $0.end = seq
        }
    }

    /// Adds the entries read after `end` through `through` (all of them:
    /// `end` becomes `through`), then drops the oldest past the bounds.
    public func append(_ new: [Item], through: Int64) {
        state.withLock { s in
            precondition(through >= s.end, "a tail only moves forward")
            var expected = s.end + 1
            for item in new {
                precondition(item.seq == expected && item.seq <= through, "tail entries are contiguous and in seq order")
                s.items.append(item)
                s.bytes += item.bytes
                expected += 1
            }
            precondition(expected == through + 1, "every entry through \(through) is appended")
            s.end = through
            while s.count > Self.maxItems || s.bytes > s.byteBudget {
                let first = s.items[s.head]
                s.head += 1
                s.bytes -= first.bytes
                s.start = first.seq
            }
            if s.head > 1024 && s.head * 2 > s.items.count {
                s.items.removeFirst(s.head)
                s.head = 0
            }
            if s.count == 0 { s.start = s.end }
            assert(s.bytes >= 0 && s.end - s.start == Int64(s.count), "the tail holds exactly (start, end]")
        }
    }

    /// Of the entries with seq > `after` (looking at `scanning` of them at
    /// most), those `matching`, at most `limit`, and the seq the look covered
    /// through; nil as for `read(after:limit:)`.
    public func read(after: Int64, limit: Int, scanning: Int, where matching: (Item) -> Bool) -> (items: [Item], through: Int64)? {
        precondition(limit > 0 && scanning > 0)
        return state.withLock { s in
            guard after >= s.start, after < s.end else { return nil }
            let from = s.head + Int(after - s.start)
            let stop = min(s.items.count, from + scanning)
            var out: [Item] = []
            var index = from
            while index < stop {
                let item = s.items[index]
                index += 1
                if matching(item) {
                    out.append(item)
                    if out.count == limit { break }
                }
            }
            return (out, index == s.items.count ? s.end : s.items[index - 1].seq)
        }
    }

    /// The entries with seq > `after`, at most `limit`, and the seq they
    /// cover through; nil when `after` is before the tail's start (read the
    /// database instead) or nothing is newer.
    public func read(after: Int64, limit: Int) -> (items: [Item], through: Int64)? {
        read(after: after, limit: limit, scanning: limit) { _ in true }
    }
}
