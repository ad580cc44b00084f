/// A dictionary that never holds more than `capacity` entries: inserting a
/// new key into a full one evicts the oldest-inserted entry (FIFO). Every
/// operation is O(1) amortized; no "empty it when full" cliff.
public struct BoundedDictionary<Key: Hashable, Value> {
    public let capacity: Int
    private var entries: [Key: (value: Value, stamp: UInt64)] = [:]
    /// Insertion order; an element whose stamp no longer matches its key's
    /// entry (replaced or removed) is skipped and dropped when reached.
    private var order: [(key: Key, stamp: UInt64)] = []
    private var head = 0
    private var nextStamp: UInt64 = 0

    public init(capacity: Int) {
        precondition(capacity > 0, "a bounded dictionary holds at least one entry")
        self.capacity = capacity
    }

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }

    public subscript(key: Key) -> Value? {
        entries[key]?.value
    }

    /// Updates an existing entry in place (its age is kept); false if absent.
    @discardableResult
    public mutating func update(_ key: Key, _ body: (inout Value) -> Void) -> Bool {
        guard var entry = entries[key] else { return false }
        body(&entry.value)
        entries[key] = entry
        return true
    }

    /// Inserts or replaces `key` (a replaced key counts as new). Returns the
    /// entry evicted to make room, if any.
    @discardableResult
    public mutating func insert(_ key: Key, _ value: Value) -> (key: Key, value: Value)? {
        var evicted: (key: Key, value: Value)?
        if entries[key] == nil, entries.count >= capacity {
            evicted = evictOldest()
        }
        nextStamp &+= 1
        entries[key] = (value, nextStamp)
        order.append((key, nextStamp))
        compactIfNeeded()
        assert(entries.count <= capacity)
        return evicted
    }

    @discardableResult
    public mutating func removeValue(forKey key: Key) -> Value? {
        entries.removeValue(forKey: key)?.value
    }

    /// Removes and returns the oldest entry.
    public mutating func evictOldest() -> (key: Key, value: Value)? {
        while head < order.count {
            let candidate = order[head]
            head += 1
            if let entry = entries[candidate.key], entry.stamp == candidate.stamp {
                entries.removeValue(forKey: candidate.key)
                compactIfNeeded()
                return (candidate.key, entry.value)
            }
        }
        return nil
    }

    public mutating func removeAll() {
        entries.removeAll()
        order.removeAll()
        head = 0
    }

    public var values: some Sequence<Value> { entries.values.lazy.map(\.value) }

    /// The order list keeps at most about twice the live entries.
    private mutating func compactIfNeeded() {
        let live = order.count - head
        guard live > 2 * entries.count + 64 || (head > 1024 && head > order.count / 2) else { return }
        order = order[head...].filter { entries[$0.key]?.stamp == $0.stamp }
        head = 0
    }
}

extension BoundedDictionary: Sendable where Key: Sendable, Value: Sendable {}
