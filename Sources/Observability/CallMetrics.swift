import CoreMetrics
#if canImport(Glibc)
import Glibc
#endif
import GRPCTransport
import NIOConcurrencyHelpers
import Prometheus

/// The Prometheus registry of the server and the swift-metrics backend
/// over it (so the ledger's facade metrics land in the same exposition).
public final class MetricsRegistry: Sendable {
    public let registry = PrometheusCollectorRegistry()

    /// Latency buckets of gRPC calls and ledger writes: 50 µs … 10 s.
    static let latencyBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .microseconds(2_500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .microseconds(2_500_000), .seconds(5), .seconds(10),
    ]
    /// Commands per group commit: powers of two up to the largest batch allowed.
    static let batchBuckets: [Double] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 2_048, 4_096, 10_000]

    public init() {}

    /// Makes swift-metrics report into this registry (once per process).
    public func bootstrapMetricsSystem() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = Self.latencyBuckets
        factory.defaultValueHistogramBuckets = Self.batchBuckets
        MetricsSystem.bootstrap(factory)
    }

    /// The text exposition (format 0.0.4): the registry, then `extra`
    /// values read at scrape time.
    public func exposition(extra: [ScrapeValue]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16 * 1024)
        registry.emit(into: &out)
        for value in extra { value.emit(into: &out) }
        return out
    }
}

/// One sample computed at scrape time (process memory, cache counters).
public struct ScrapeValue: Sendable {
    public enum Kind: String, Sendable { case counter, gauge }
    public var name: String
    public var kind: Kind
    public var help: String
    public var labels: [(String, String)]
    public var value: Double

    public init(name: String, kind: Kind, help: String, labels: [(String, String)] = [], value: Double) {
        self.name = name
        self.kind = kind
        self.help = help
        self.labels = labels
        self.value = value
    }

    func emit(into out: inout [UInt8]) {
        out.append(contentsOf: "# HELP \(name) \(help)\n# TYPE \(name) \(kind.rawValue)\n\(name)".utf8)
        if !labels.isEmpty {
            let rendered = labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",")
            out.append(contentsOf: "{\(rendered)}".utf8)
        }
        let number = value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        out.append(contentsOf: " \(number)\n".utf8)
    }

    /// Label values escaped as the text format asks (backslash, quote, newline).
    static func escape(_ value: String) -> String {
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}

/// gRPC request metrics: calls by method and status code, latency by
/// method, open connections and streams. Method labels are the router's
/// paths (a fixed set); requests for any other path count as "unknown", so
/// clients cannot grow the label set.
final class GRPCMetrics: Sendable {
    static let unknownMethod = "unknown"
    let registry: PrometheusCollectorRegistry
    let openConnections: Prometheus.Gauge
    let openStreams: Prometheus.Gauge
    private let methods: [String: MethodSeries]
    private let unknown: MethodSeries

    init(registry: PrometheusCollectorRegistry, methods paths: [String]) {
        self.registry = registry
        openConnections = registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "credits", subsystem: "grpc", metricName: "open", unitName: "connections",
            helpText: "HTTP/2 connections open now."))
        openStreams = registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "credits", subsystem: "grpc", metricName: "open", unitName: "streams",
            helpText: "gRPC calls (streams) open now."))
        var methods: [String: MethodSeries] = [:]
        for path in paths { methods[path] = MethodSeries(registry: registry, method: path) }
        self.methods = methods
        unknown = MethodSeries(registry: registry, method: Self.unknownMethod)
    }

    /// The series of a method (immutable table: no lock).
    func series(path: String, routed: Bool) -> MethodSeries {
        routed ? methods[path] ?? unknown : unknown
    }
}

/// The series of one method: its latency histogram and one request counter
/// per status code, made when that code is first seen (the OK one at once).
final class MethodSeries: Sendable {
    let method: String
    let latency: DurationHistogram
    private let registry: PrometheusCollectorRegistry
    private let counters: NIOLockedValueBox<[Prometheus.Counter?]>

    init(registry: PrometheusCollectorRegistry, method: String) {
        self.method = method
        self.registry = registry
        latency = registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(
                namespace: "credits", subsystem: "grpc", metricName: "request_duration", unitName: "seconds",
                helpText: "gRPC call duration by method, from the request headers to the end of the response."),
            labels: [("method", method)], buckets: MetricsRegistry.latencyBuckets)
        var initial = [Prometheus.Counter?](repeating: nil, count: GRPCStatusCode.allCases.count)
        initial[0] = Self.makeCounter(registry, method, .ok)
        counters = NIOLockedValueBox(initial)
    }

    func counter(_ code: GRPCStatusCode) -> Prometheus.Counter {
        counters.withLockedValue { counters in
            if let counter = counters[code.rawValue] { return counter }
            let counter = Self.makeCounter(registry, method, code)
            counters[code.rawValue] = counter
            return counter
        }
    }

    private static func makeCounter(_ registry: PrometheusCollectorRegistry, _ method: String, _ code: GRPCStatusCode) -> Prometheus.Counter {
        registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "credits", subsystem: "grpc", metricName: "requests", unitName: "total",
                helpText: "gRPC calls ended, by method and status code."),
            labels: [("method", method), ("code", code.description)])
    }
}

/// What the kernel says of this process.
public enum ProcessStats {
    /// Resident memory in bytes (/proc/self/statm, read at each call); nil
    /// where there is no /proc.
    public static func residentBytes() -> Int? {
        guard let fd = Optional(open("/proc/self/statm", O_RDONLY)), fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        let fields = String(decoding: buffer[0..<n], as: UTF8.self).split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
