// The mixed workload (also behind `hot`): a weighted mix of reads, statement
// pages, purchases, spends and holds, where captures and releases settle holds
// this run created, taken from a bounded pool of open hold ids.

import CreditsProto
import Foundation
import Synchronization

/// Relative weights of the kinds of call in `mixed` (`--mix read=50,statement=10,…`).
struct Mix: Sendable, Equatable, CustomStringConvertible {
    enum Kind: String, CaseIterable, Sendable {
        case read, statement, purchase, spend, hold
        /// CaptureHold or ReleaseHold of an open hold of this run.
        case settle
    }

    /// Weight per kind, in `Kind.allCases` order.
    private(set) var weights: [Int]
    static let maxWeight = 1_000_000

    static let `default` = Mix(read: 50, statement: 10, purchase: 5, spend: 20, hold: 8, settle: 7)

    init(read: Int, statement: Int, purchase: Int, spend: Int, hold: Int, settle: Int) {
        weights = [read, statement, purchase, spend, hold, settle]
        precondition(weights.allSatisfy { (0...Self.maxWeight).contains($0) } && total > 0)
    }

    /// Parses `kind=weight,…`; kinds left out weigh 0.
    init(parsing text: String) throws(MixError) {
        weights = Array(repeating: 0, count: Kind.allCases.count)
        var seen: Set<Kind> = []
        let items = text.split(separator: ",", omittingEmptySubsequences: false)
        for item in items {
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw .malformed(String(item)) }
            let name = parts[0].trimmingCharacters(in: .whitespaces)
            guard let kind = Kind(rawValue: name) else { throw .unknownKind(name) }
            guard let weight = Int(parts[1].trimmingCharacters(in: .whitespaces)), (0...Self.maxWeight).contains(weight) else {
                throw .badWeight(kind.rawValue, String(parts[1]))
            }
            guard seen.insert(kind).inserted else { throw .duplicate(kind.rawValue) }
            weights[Self.index(kind)] = weight
        }
        guard total > 0 else { throw .allZero }
        guard self[.settle] == 0 || self[.hold] > 0 else { throw .settleWithoutHolds }
    }

    subscript(kind: Kind) -> Int { weights[Self.index(kind)] }
    var total: Int { weights.reduce(0, +) }

    /// The kind of call number `seq`: a hash of `seq` spread over the weights, so kinds interleave
    /// evenly and a run is reproducible.
    func pick(_ seq: Int) -> Kind {
        var r = Int(splitMix64(UInt64(bitPattern: Int64(seq))) % UInt64(total))
        for (i, w) in weights.enumerated() {
            if r < w { return Kind.allCases[i] }
            r -= w
        }
        preconditionFailure("weights sum to total")
    }

    var description: String {
        Kind.allCases.map { "\($0.rawValue)=\(self[$0])" }.joined(separator: ",")
    }

    /// The weights by kind name, for the JSON summary.
    var byName: [String: Int] {
        Dictionary(uniqueKeysWithValues: Kind.allCases.map { ($0.rawValue, self[$0]) })
    }

    private static func index(_ kind: Kind) -> Int { Kind.allCases.firstIndex(of: kind)! }
}

enum MixError: Error, CustomStringConvertible {
    case malformed(String)
    case unknownKind(String)
    case badWeight(String, String)
    case duplicate(String)
    case allZero
    case settleWithoutHolds

    var description: String {
        let kinds = Mix.Kind.allCases.map(\.rawValue).joined(separator: ", ")
        switch self {
        case .malformed(let item): return "--mix: '\(item)' is not kind=weight (kinds: \(kinds))"
        case .unknownKind(let name): return "--mix: unknown kind '\(name)' (kinds: \(kinds))"
        case .badWeight(let kind, let w): return "--mix: weight of \(kind) must be an integer 0…\(Mix.maxWeight), not '\(w)'"
        case .duplicate(let kind): return "--mix: \(kind) is given twice"
        case .allZero: return "--mix: at least one weight must be > 0"
        case .settleWithoutHolds: return "--mix: settle needs hold > 0 (only holds of this run are settled)"
        }
    }
}

/// SplitMix64's finalizer: a well-spread hash of a counter.
func splitMix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// Ids of open holds created by this run, oldest first, shared by the workers.
/// `capacity` bounds it: the workload settles instead of opening holds once it is full, so it
/// holds at most capacity + the calls in flight.
final class HoldPool: Sendable {
    private struct Queue {
        var ids: [String] = []
        var head = 0
        var count: Int { ids.count - head }
    }

    let capacity: Int
    private let queue = Mutex(Queue())

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    var count: Int { queue.withLock { $0.count } }
    var isFull: Bool { count >= capacity }

    func put(_ id: String) {
        queue.withLock { $0.ids.append(id) }
    }

    /// The oldest open hold, removed from the pool; nil when empty.
    func take() -> String? {
        queue.withLock { q in
            guard q.head < q.ids.count else { return nil }
            let id = q.ids[q.head]
            q.head += 1
            // Drop the taken prefix now and then, so the array stays within about twice the open holds.
            if q.head >= 1024 && q.head * 2 >= q.ids.count {
                q.ids.removeFirst(q.head)
                q.head = 0
            }
            return id
        }
    }
}

/// Builds the calls of `mixed` and `hot` and keeps the pool of open holds.
final class MixedWorkload: Sendable {
    struct Options: Sendable {
        var mix: Mix
        /// Amount of each spend and hold.
        var amountMinor: Int64
        /// Amount of each purchase (credit order).
        var purchaseAmountMinor: Int64
        var pageSize: Int32
        /// Which share of the settled holds are captured (the rest are released), 0…100.
        var capturePercent: Int
        /// Every call on this client (hot); nil: clients round-robin by sequence number.
        var hotClient: String?
        /// Expiry of the holds created (far enough ahead that none expires during a run).
        var holdExpireTime: Google_Protobuf_Timestamp
        var poolCapacity = 10_000
    }

    let calls: ScenarioCalls
    let options: Options
    let pool: HoldPool
    private let settled = Atomic<Int>(0)

    init(calls: ScenarioCalls, options: Options) {
        precondition((0...100).contains(options.capturePercent))
        precondition(options.amountMinor > 0 && options.purchaseAmountMinor > 0)
        self.calls = calls
        self.options = options
        pool = HoldPool(capacity: options.poolCapacity)
    }

    /// A hold expiry `seconds` from now on the wall clock (read once per run, here at the edge).
    static func expireTime(secondsFromNow seconds: Int64) -> Google_Protobuf_Timestamp {
        var t = Google_Protobuf_Timestamp()
        t.seconds = Int64(Date().timeIntervalSince1970) + seconds
        return t
    }

    func makeCall(_ seq: Int) -> PlannedCall {
        let client = options.hotClient ?? calls.clients.id(seq)
        switch options.mix.pick(seq) {
        case .read:
            return calls.getBalance(seq, clientID: client)
        case .statement:
            return calls.statement(seq, clientID: client, pageSize: options.pageSize)
        case .purchase:
            return calls.purchase(seq, clientID: client, amountMinor: options.purchaseAmountMinor)
        case .spend:
            return calls.spend(seq, clientID: client, amountMinor: options.amountMinor)
        case .hold:
            // A full pool settles one instead, so open holds stay bounded.
            if pool.isFull, let id = pool.take() { return settle(seq, holdID: id) }
            return calls.createHold(seq, clientID: client, amountMinor: options.amountMinor, expireTime: options.holdExpireTime)
        case .settle:
            if let id = pool.take() { return settle(seq, holdID: id) }
            // Nothing to settle yet (start of the run): open one instead.
            return calls.createHold(seq, clientID: client, amountMinor: options.amountMinor, expireTime: options.holdExpireTime)
        }
    }

    /// Captures `capturePercent` of the settles, spread evenly; releases the others.
    private func settle(_ seq: Int, holdID: String) -> PlannedCall {
        let n = settled.wrappingAdd(1, ordering: .relaxed).oldValue
        let share = options.capturePercent
        let capture = (n + 1) * share / 100 > n * share / 100
        return capture ? calls.captureHold(seq, holdID: holdID) : calls.releaseHold(seq, holdID: holdID)
    }

    /// Puts each new hold into the pool; false if a CreateHold response has no hold id.
    func onSuccess(_ seq: Int, _ operation: OperationKind, _ response: ArraySlice<UInt8>) -> Bool {
        guard operation == .hold else { return true }
        guard let r = try? Credits_V1_HoldResponse(serializedBytes: response), let id = r.hold?.id, !id.isEmpty else {
            return false
        }
        pool.put(id)
        return true
    }
}
