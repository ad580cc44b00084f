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
    /// Set by `seed`: the tenant and the staff token for later runs.
    var tenant: String?
    var token: String?
    var clients: Int?

    enum CodingKeys: String, CodingKey {
        case scenario, target, connections, streams, requests, ok, errors, tenant, token, clients
        case elapsedSeconds = "elapsed_s", throughputRps = "throughput_rps", latencyMicros = "latency_us"
        case errorsByStatus = "errors_by_status", errorSamples = "error_samples"
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
        throughputRps = elapsedSeconds > 0 ? Double(result.requests) / elapsedSeconds : 0
        let h = result.latencyMicros
        let empty = h.totalCount == 0
        latencyMicros = Latency(p50: empty ? 0 : h.valueAtPercentile(50), p90: empty ? 0 : h.valueAtPercentile(90),
                                p99: empty ? 0 : h.valueAtPercentile(99), p999: empty ? 0 : h.valueAtPercentile(99.9),
                                max: empty ? 0 : h.max, mean: empty ? 0 : h.mean)
        errorsByStatus = result.errorsByStatus
        errorSamples = result.errorSamples
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
        if let tenant { rows.append(("tenant", tenant)) }
        if let token { rows.append(("token", token)) }
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
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
