// The load engine: worker threads, each owning some connections, keep M
// calls in flight per connection until the duration or the count is used up.
// Each worker records latencies in its own histogram; they are merged at the end.

import GRPCClient
import Foundation
import Histogram
import Synchronization

/// One request to send: the method path, the serialized message, and what kind of operation it is (for the report).
struct PlannedCall: Sendable {
    var path: String
    var message: [UInt8]
    var operation: OperationKind
}

/// What a run does. `makeCall` gets a global sequence number (0, 1, 2 …), unique within the run.
struct LoadPlan: Sendable {
    var target: String
    var metadata: [(String, String)]
    var connections: Int
    var streamsPerConnection: Int
    var threads: Int
    /// Stop issuing after this many calls (nil: no limit).
    var count: Int?
    /// Stop issuing after this long (nil: no limit).
    var durationNanos: UInt64?
    /// A call with no answer for this long ends as CLIENT_TIMEOUT (its connection is dropped).
    var requestTimeoutNanos: UInt64
    var makeCall: @Sendable (Int) -> PlannedCall
    /// Called on each successful call with its sequence number, operation and response message (optional).
    /// Returning false counts the call as a BAD_RESPONSE error (e.g. an undecodable response).
    var onSuccess: (@Sendable (Int, OperationKind, ArraySlice<UInt8>) -> Bool)?
    /// A connection that received GOAWAY is replaced by a new one at most this many times per worker.
    var maxReconnectsPerWorker = 1_000
}

/// Histograms in microseconds, up to one hour.
typealias LatencyHistogram = Histogram<UInt64>
func makeLatencyHistogram() -> LatencyHistogram {
    LatencyHistogram(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
}

/// Totals of one kind of operation: successful calls with their latency, failures by status.
struct OperationResult {
    var latencyMicros = makeLatencyHistogram()
    var ok = 0
    var errorsByStatus: [String: Int] = [:]

    var requests: Int { ok + errors }
    var errors: Int { errorsByStatus.values.reduce(0, +) }

    mutating func merge(_ other: OperationResult) {
        latencyMicros.add(other.latencyMicros)
        ok += other.ok
        errorsByStatus.merge(other.errorsByStatus, uniquingKeysWith: +)
    }
}

/// Totals of a run (or of one worker).
struct RunResult {
    var latencyMicros = makeLatencyHistogram()
    var ok = 0
    var errorsByStatus: [String: Int] = [:]
    /// The same totals per kind of operation (only kinds that were called).
    var operations: [OperationKind: OperationResult] = [:]
    /// A few error messages, for people (at most `maxSamples`).
    var errorSamples: [String] = []
    /// Connections replaced after the server sent GOAWAY.
    var reconnects = 0
    var elapsedNanos: UInt64 = 0
    static let maxSamples = 5

    var requests: Int { ok + errorsByStatus.values.reduce(0, +) }
    var errors: Int { errorsByStatus.values.reduce(0, +) }

    mutating func merge(_ other: RunResult) {
        latencyMicros.add(other.latencyMicros)
        ok += other.ok
        errorsByStatus.merge(other.errorsByStatus, uniquingKeysWith: +)
        for (op, r) in other.operations { operations[op, default: OperationResult()].merge(r) }
        for sample in other.errorSamples where errorSamples.count < Self.maxSamples && !errorSamples.contains(sample) {
            errorSamples.append(sample)
        }
        reconnects += other.reconnects
    }

    /// Totals of consecutive phases (e.g. seed's orders, then its extra entries): elapsed times add up.
    mutating func append(_ other: RunResult) {
        merge(other)
        elapsedNanos += other.elapsedNanos
    }
}

/// Counters shared by the workers and the progress display.
final class SharedProgress: Sendable {
    let issued = Atomic<Int>(0)
    let completed = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
}

/// Runs a plan to the end and returns the merged result. `progress` is called about once a second.
func runLoad(_ plan: LoadPlan, progress: ((SharedProgress, UInt64) -> Void)? = nil) throws -> RunResult {
    precondition(plan.connections > 0 && plan.streamsPerConnection > 0 && plan.threads > 0)
    precondition(plan.count != nil || plan.durationNanos != nil, "a run needs a count or a duration")
    let shared = SharedProgress()
    let start = monotonicNanos()
    let deadline = plan.durationNanos.map { start + $0 }
    let threads = min(plan.threads, plan.connections)

    // Connect every connection first, so a bad target fails before any load.
    var connections: [H2Connection] = []
    for _ in 0..<plan.connections {
        connections.append(try openConnection(target: plan.target, metadata: plan.metadata))
    }
    let groups: [[H2Connection]] = (0..<threads).map { t in
        stride(from: t, to: connections.count, by: threads).map { connections[$0] }
    }
    connections.removeAll()

    let results = Mutex<[RunResult]>([])
    let group = DispatchGroup()
    for conns in groups {
        group.enter()
        let box = UncheckedBox(conns)
        let thread = Thread {
            var worker = Worker(plan: plan, shared: shared, deadline: deadline, connections: box.value)
            let result = worker.run()
            results.withLock { $0.append(result) }
            group.leave()
        }
        thread.start()
    }
    while group.wait(timeout: .now() + 1) == .timedOut {
        progress?(shared, monotonicNanos() - start)
    }
    var total = RunResult()
    for r in results.withLock({ $0 }) { total.merge(r) }
    total.elapsedNanos = monotonicNanos() - start
    return total
}

/// Hands non-Sendable connections to the thread that will own them from then on.
private struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// One thread's loop over its connections.
private struct Worker {
    let plan: LoadPlan
    let shared: SharedProgress
    let deadline: UInt64?
    var connections: [H2Connection]
    /// Connections closed after a GOAWAY that could not be (or need not be) replaced.
    var retired: [Bool]
    var result = RunResult()
    /// The operation of each call in flight, by sequence number.
    var operationOf: [Int: OperationKind] = [:]
    var exhausted = false
    var lastProgressNanos = monotonicNanos()

    init(plan: LoadPlan, shared: SharedProgress, deadline: UInt64?, connections: [H2Connection]) {
        self.plan = plan
        self.shared = shared
        self.deadline = deadline
        self.connections = connections
        retired = Array(repeating: false, count: connections.count)
        operationOf.reserveCapacity(connections.count * plan.streamsPerConnection)
    }

    /// The next sequence number to issue, or nil once the count or duration is used up.
    mutating func nextSequence() -> Int? {
        if exhausted { return nil }
        if let deadline, monotonicNanos() >= deadline {
            exhausted = true
            return nil
        }
        let seq = shared.issued.wrappingAdd(1, ordering: .relaxed).oldValue
        if let count = plan.count, seq >= count {
            exhausted = true
            return nil
        }
        return seq
    }

    mutating func fill(_ c: H2Connection) {
        while c.acceptsCalls, c.inFlight < plan.streamsPerConnection, let seq = nextSequence() {
            let call = plan.makeCall(seq)
            operationOf[seq] = call.operation
            do {
                try c.start(path: call.path, message: call.message, tag: seq)
            } catch {
                record(CompletedCall(tag: seq, startNanos: monotonicNanos(), outcome: .connectionLost,
                                     grpcMessage: "\(error)", data: []))
                c.abandon(.connectionLost)
            }
        }
    }

    mutating func record(_ call: CompletedCall) {
        let now = monotonicNanos()
        guard let operation = operationOf.removeValue(forKey: call.tag) else {
            preconditionFailure("completed call \(call.tag) was never started")
        }
        var outcome = call.outcome
        var message = call.grpcMessage
        if outcome.isOK, let onSuccess = plan.onSuccess, !onSuccess(call.tag, operation, call.firstMessage ?? []) {
            outcome = .badResponse
            message = "unusable \(operation.name) response"
        }
        if outcome.isOK {
            let micros = max(1, (now - call.startNanos) / 1000)
            _ = result.latencyMicros.record(micros)
            _ = result.operations[operation, default: OperationResult()].latencyMicros.record(micros)
            result.ok += 1
            result.operations[operation, default: OperationResult()].ok += 1
        } else {
            result.errorsByStatus[outcome.label, default: 0] += 1
            result.operations[operation, default: OperationResult()].errorsByStatus[outcome.label, default: 0] += 1
            let sample = message.isEmpty ? outcome.label : "\(outcome.label): \(message)"
            if result.errorSamples.count < RunResult.maxSamples, !result.errorSamples.contains(sample) {
                result.errorSamples.append(sample)
            }
            shared.failed.wrappingAdd(1, ordering: .relaxed)
        }
        shared.completed.wrappingAdd(1, ordering: .relaxed)
        lastProgressNanos = now
    }

    mutating func drain(_ c: H2Connection) {
        for call in c.takeCompleted() { record(call) }
    }

    /// Replaces each connection that got GOAWAY and has nothing left in flight (or was closed since)
    /// with a new one, while there is work left. A failed connect leaves it closed.
    mutating func replaceDrainedConnections() {
        for i in connections.indices where !retired[i] {
            let c = connections[i]
            guard c.goawayLastStreamID != nil, c.inFlight == 0 || c.isClosed else { continue }
            if !c.isClosed { c.abandon(.goaway) }
            drain(c)
            guard !exhausted, result.reconnects < plan.maxReconnectsPerWorker,
                  let fresh = try? openConnection(target: plan.target, metadata: plan.metadata) else {
                retired[i] = true
                continue
            }
            result.reconnects += 1
            connections[i] = fresh
            fill(fresh)
        }
    }

    mutating func run() -> RunResult {
        for c in connections { fill(c) }
        while true {
            replaceDrainedConnections()
            for c in connections where !c.isClosed {
                do { try c.flush() } catch { c.abandon(.connectionLost); drain(c) }
            }
            let live = connections.filter { !$0.isClosed && $0.inFlight > 0 }
            if live.isEmpty && (exhausted || connections.allSatisfy({ !$0.acceptsCalls })) {
                break
            }
            if monotonicNanos() - lastProgressNanos > plan.requestTimeoutNanos {
                for c in live { c.abandon(.timedOut); drain(c) }
                lastProgressNanos = monotonicNanos()
                continue
            }
            let readable: [Bool]
            do { readable = try pollConnections(connections, timeoutMillis: 100) } catch { break }
            for (i, c) in connections.enumerated() where readable.indices.contains(i) && readable[i] && !c.isClosed {
                do {
                    if try !c.readAvailable() { c.abandon(.connectionLost) }
                } catch {
                    c.abandon(.connectionLost)
                }
                drain(c)
                fill(c)
            }
            // Top up connections even without input (duration runs with nothing in flight yet).
            for c in connections where c.inFlight == 0 && c.acceptsCalls { fill(c) }
        }
        return result
    }
}
