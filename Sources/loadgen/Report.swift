// The summary of a run: a table for people, JSON for scripts, and the live
// progress line.

import Foundation

/// The summary of one run, as written to `--json`.
struct Summary: Codable {
    struct Latency: Codable {
        var p50: UInt64
        var p90: UInt64
        var p99: UInt64
        var p999: UInt64
        var max: UInt64
        var mean: Double

        init(_ h: LatencyHistogram) {
            let empty = h.totalCount == 0
            p50 = empty ? 0 : h.valueAtPercentile(50)
            p90 = empty ? 0 : h.valueAtPercentile(90)
            p99 = empty ? 0 : h.valueAtPercentile(99)
            p999 = empty ? 0 : h.valueAtPercentile(99.9)
            max = empty ? 0 : h.max
            mean = empty ? 0 : h.mean
        }
    }

    /// Totals of one kind of operation (see `OperationKind`).
    struct OperationSummary: Codable {
        var requests: Int
        var ok: Int
        var errors: Int
        var throughputRps: Double
        /// Latency of its successful calls, in microseconds.
        var latencyMicros: Latency
        var errorsByStatus: [String: Int]

        enum CodingKeys: String, CodingKey {
            case requests, ok, errors
            case throughputRps = "throughput_rps", latencyMicros = "latency_us", errorsByStatus = "errors_by_status"
        }
    }

    var scenario: String
    var target: String
    var connections: Int
    var streams: Int
    var elapsedSeconds: Double
    var requests: Int
    var ok: Int
    var errors: Int
    var throughputRps: Double
    /// Latency of successful calls, in microseconds.
    var latencyMicros: Latency
    /// Failed calls by gRPC status name (or transport failure).
    var errorsByStatus: [String: Int]
    var errorSamples: [String]
    /// The same figures per kind of operation, by `OperationKind` name (read, statement, purchase, spend,
    /// hold, capture, release); only kinds that were called.
    var operations: [String: OperationSummary]
    /// Connections replaced after the server sent GOAWAY.
    var reconnects: Int
    /// Set by `seed`: the tenant and the staff token for later runs.
    var tenant: String?
    var token: String?
    var clients: Int?
    /// Set by `seed`: successful writes, each one ledger entry (one credit order per client, then --entries).
    var entriesWritten: Int?
    /// Set by `mixed` and `hot`: the weights used, and the holds of this run still open at its end.
    var mix: [String: Int]?
    var openHolds: Int?
    /// Set by `hot`: the one client written to.
    var hotClient: String?
    /// Where the latency plot was written, if anywhere.
    var plot: String?

    enum CodingKeys: String, CodingKey {
        case scenario, target, connections, streams, requests, ok, errors, tenant, token, clients
        case operations, reconnects, mix, plot
        case elapsedSeconds = "elapsed_s", throughputRps = "throughput_rps", latencyMicros = "latency_us"
        case errorsByStatus = "errors_by_status", errorSamples = "error_samples"
        case entriesWritten = "entries_written", openHolds = "open_holds", hotClient = "hot_client"
    }

    init(scenario: String, target: String, connections: Int, streams: Int, result: RunResult) {
        self.scenario = scenario
        self.target = target
        self.connections = connections
        self.streams = streams
        elapsedSeconds = Double(result.elapsedNanos) / 1e9
        requests = result.requests
        ok = result.ok
        errors = result.errors
        let seconds = elapsedSeconds
        throughputRps = seconds > 0 ? Double(result.requests) / seconds : 0
        latencyMicros = Latency(result.latencyMicros)
        errorsByStatus = result.errorsByStatus
        errorSamples = result.errorSamples
        operations = Dictionary(uniqueKeysWithValues: result.operations.map { op, r in
            (op.name, OperationSummary(requests: r.requests, ok: r.ok, errors: r.errors,
                                       throughputRps: seconds > 0 ? Double(r.requests) / seconds : 0,
                                       latencyMicros: Latency(r.latencyMicros), errorsByStatus: r.errorsByStatus))
        })
        reconnects = result.reconnects
    }

    func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    var table: String {
        func ms(_ us: UInt64) -> String { String(format: "%.3f ms", Double(us) / 1000) }
        var rows: [(String, String)] = [
            ("scenario", scenario), ("target", target),
            ("connections x streams", "\(connections) x \(streams)"),
            ("elapsed", String(format: "%.2f s", elapsedSeconds)),
            ("requests", "\(requests)"), ("ok", "\(ok)"), ("errors", "\(errors)"),
            ("throughput", String(format: "%.0f req/s", throughputRps)),
            ("latency p50", ms(latencyMicros.p50)), ("latency p90", ms(latencyMicros.p90)),
            ("latency p99", ms(latencyMicros.p99)), ("latency p99.9", ms(latencyMicros.p999)),
            ("latency max", ms(latencyMicros.max)),
        ]
        for (status, n) in errorsByStatus.sorted(by: { $0.key < $1.key }) { rows.append(("  \(status)", "\(n)")) }
        for sample in errorSamples { rows.append(("  e.g.", sample)) }
        if reconnects > 0 { rows.append(("reconnects (GOAWAY)", "\(reconnects)")) }
        if let mix { rows.append(("mix", Mix.Kind.allCases.map { "\($0.rawValue)=\(mix[$0.rawValue] ?? 0)" }.joined(separator: ","))) }
        if let openHolds { rows.append(("open holds left", "\(openHolds)")) }
        if let hotClient { rows.append(("hot client", hotClient)) }
        if let entriesWritten { rows.append(("entries written", "\(entriesWritten)")) }
        if let tenant { rows.append(("tenant", tenant)) }
        if let token { rows.append(("token", token)) }
        if let plot { rows.append(("plot", plot)) }
        let width = rows.map(\.0.count).max() ?? 0
        let main = rows.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }
        return (main + operationsTable).joined(separator: "\n")
    }

    /// Kinds of operation in report order (those of `OperationKind` first).
    var operationNames: [String] {
        let known = OperationKind.allCases.map(\.name).filter { operations[$0] != nil }
        return known + operations.keys.filter { !known.contains($0) }.sorted()
    }

    /// One line per kind of operation, when a run made more than one kind.
    private var operationsTable: [String] {
        guard operations.count > 1 else { return [] }
        func ms(_ us: UInt64) -> String { String(format: "%.3f", Double(us) / 1000) }
        var lines = [""]
        lines.append("operation".padding(toLength: 10, withPad: " ", startingAt: 0)
                     + ["requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"].map(Self.right).joined())
        for name in operationNames {
            guard let o = operations[name] else { continue }
            let cells = ["\(o.requests)", "\(o.errors)", String(format: "%.0f", o.throughputRps), ms(o.latencyMicros.p50),
                         ms(o.latencyMicros.p90), ms(o.latencyMicros.p99), ms(o.latencyMicros.max)]
            lines.append(name.padding(toLength: 10, withPad: " ", startingAt: 0) + cells.map(Self.right).joined())
        }
        return lines
    }

    private static func right(_ cell: String) -> String {
        String(repeating: " ", count: max(1, 11 - cell.count)) + cell
    }
}

/// Writes to stdout unbuffered (a redirected stdout would otherwise hold progress lines back).
func emit(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// The live progress display: one rewritten line on a terminal, plain lines otherwise.
struct ProgressDisplay {
    let isTTY = isatty(STDOUT_FILENO) != 0
    var lastCompleted = 0
    var lastNanos: UInt64 = 0

    mutating func update(_ p: SharedProgress, elapsedNanos: UInt64) {
        let done = p.completed.load(ordering: .relaxed)
        let failed = p.failed.load(ordering: .relaxed)
        let dt = Double(elapsedNanos - lastNanos) / 1e9
        let rate = dt > 0 ? Double(done - lastCompleted) / dt : 0
        lastCompleted = done
        lastNanos = elapsedNanos
        let line = String(format: "[%6.1fs] %d done, %d errors, %.0f req/s", Double(elapsedNanos) / 1e9, done, failed, rate)
        emit(isTTY ? "\r\u{1B}[2K" + line : line + "\n")
    }

    func finish() {
        if isTTY && lastNanos > 0 { emit("\n") }
    }
}
