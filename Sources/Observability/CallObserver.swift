import GRPCTransport
import Prometheus

/// Counts and logs every call the transport reports: request metrics
/// (when `metrics` is set) and access-log lines (when `accessLog` is).
public final class CallObserver: GRPCCallObserver {
    let metrics: GRPCMetrics?
    let accessLog: AccessLog?

    /// `methods`: the router's paths (the method label values).
    public init(metrics: MetricsRegistry?, methods: [String], accessLog: AccessLog?) {
        self.metrics = metrics.map { GRPCMetrics(registry: $0.registry, methods: methods) }
        self.accessLog = accessLog
    }

    public func connectionOpened(peer: String) -> GRPCConnectionObserver {
        metrics?.openConnections.increment()
        return ConnectionCallObserver(metrics: metrics, accessLog: accessLog, peer: Self.hostPort(peer))
    }

    /// "127.0.0.1:5000" from NIO's "[IPv4]127.0.0.1/127.0.0.1:5000".
    static func hostPort(_ description: String) -> String {
        guard let slash = description.lastIndex(of: "/") else { return AccessLog.safe(description) }
        return AccessLog.safe(String(description[description.index(after: slash)...]))
    }
}

/// One connection's observer (event-loop bound): keeps the series of the
/// methods it served, so a call costs no shared lookup.
final class ConnectionCallObserver: GRPCConnectionObserver {
    private let metrics: GRPCMetrics?
    private let accessLog: AccessLog?
    private let peer: String
    /// The last method's series and counters (most connections call one
    /// method over and over); others in `cached`.
    private var last: CachedMethod?
    private var cached: [String: CachedMethod] = [:]
    private static let maxCachedMethods = 256

    init(metrics: GRPCMetrics?, accessLog: AccessLog?, peer: String) {
        self.metrics = metrics
        self.accessLog = accessLog
        self.peer = peer
    }

    /// Only the access log reads the tenant and reason.
    var wantsAttributes: Bool { accessLog != nil }

    func callStarted() {
        metrics?.openStreams.increment()
    }

    func callEnded(_ call: EndedCall) {
        if let metrics {
            let method = cachedMethod(call, metrics)
            method.counter(call.code).increment()
            method.series.latency.recordNanoseconds(Int64(clamping: call.durationNanos))
            // Last: a scrape that sees no open stream sees every ended call counted.
            metrics.openStreams.decrement()
        }
        accessLog?.log(call, peer: peer)
    }

    func connectionClosed() {
        metrics?.openConnections.decrement()
    }

    private func cachedMethod(_ call: EndedCall, _ metrics: GRPCMetrics) -> CachedMethod {
        let key = call.isRoutedMethod ? call.path : GRPCMetrics.unknownMethod
        if let last, last.key == key { return last }
        let method: CachedMethod
        if let found = cached[key] {
            method = found
        } else {
            method = CachedMethod(key: key, series: metrics.series(path: call.path, routed: call.isRoutedMethod))
            if cached.count < Self.maxCachedMethods { cached[key] = method }
        }
        last = method
        return method
    }
}

/// A method's series as one connection holds them: its counters by status
/// code, fetched from the shared series once each.
final class CachedMethod {
    let key: String
    let series: MethodSeries
    private var counters: [Counter?]

    init(key: String, series: MethodSeries) {
        self.key = key
        self.series = series
        counters = [Counter?](repeating: nil, count: GRPCStatusCode.allCases.count)
    }

    func counter(_ code: GRPCStatusCode) -> Counter {
        if let counter = counters[code.rawValue] { return counter }
        let counter = series.counter(code)
        counters[code.rawValue] = counter
        return counter
    }
}
