import ArgumentParser
import GRPCTransport
import Ledger
import Logging
import NIOCore
import Observability

enum OnOff: String, ExpressibleByArgument, CaseIterable {
    case on
    case off
}

/// The metrics endpoint and the access log of `credits serve`, wired from
/// its flags: made before the ledger (whose facade metrics must find the
/// backend), started before the gRPC port, stopped after it.
final class ServeObservability {
    let registry: MetricsRegistry?
    let accessLog: AccessLog?
    private var server: MetricsHTTPServer?

    init(metricsEnabled: Bool, accessLog: Bool, maxAccessLinesPerSecond: Int) {
        if metricsEnabled {
            let registry = MetricsRegistry()
            registry.bootstrapMetricsSystem()
            self.registry = registry
        } else {
            registry = nil
        }
        self.accessLog = accessLog ? AccessLog(maxLinesPerSecond: maxAccessLinesPerSecond) : nil
    }

    /// The transport's observer, or nil when neither metrics nor access log are on.
    func callObserver(methods: [String]) -> GRPCCallObserver? {
        guard registry != nil || accessLog != nil else { return nil }
        return CallObserver(metrics: registry, methods: methods, accessLog: accessLog)
    }

    /// Starts the metrics port (if metrics are on) and the access log's summary.
    func start(host: String, port: Int, ledger: Ledger) throws -> SocketAddress? {
        accessLog?.start()
        guard let registry else { return nil }
        let build = [("version", CreditsVersion.number), ("schema", String(Ledger.schemaVersion))]
        let server = MetricsHTTPServer(render: {
            let cache = ledger.balanceCache.stats
            var extra = [
                ScrapeValue(name: "credits_build_info", kind: .gauge, help: "Version and newest schema of this build (value 1).",
                            labels: build, value: 1),
                ScrapeValue(name: "credits_balance_cache_hits_total", kind: .counter,
                            help: "GetBalance-style reads answered from the balance cache.", value: Double(cache.hits)),
                ScrapeValue(name: "credits_balance_cache_misses_total", kind: .counter,
                            help: "Balance reads that went to SQLite.", value: Double(cache.misses)),
                ScrapeValue(name: "credits_balance_cache_entries", kind: .gauge,
                            help: "Clients whose balance rows the cache holds now.", value: Double(cache.entries)),
            ]
            if let rss = ProcessStats.residentBytes() {
                extra.append(ScrapeValue(name: "credits_process_resident_memory_bytes", kind: .gauge,
                                         help: "Resident memory of the process (/proc/self/statm, at scrape time).", value: Double(rss)))
            }
            return registry.exposition(extra: extra)
        })
        let address = try server.start(host: host, port: port)
        self.server = server
        return address
    }

    func stop() {
        server?.stop()
        accessLog?.stop()
    }
}
