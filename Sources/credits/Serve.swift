import ArgumentParser
import CreditsAPI
import Dispatch
import Foundation
import GRPCServices
import GRPCTransport
import Ledger
import Logging
import NIOCore

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gRPC service.",
        discussion: "Stops gracefully on SIGTERM or SIGINT: GOAWAY, open calls finish within the grace period, exit 0.")

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "TCP port to listen on.")
    var port = 50051

    @Option(help: "SQLite database file (created, with its directory, if missing).")
    var db = "./data/credits.sqlite"

    @Option(help: "SQLite durability: full (an acknowledged write survives power loss) or normal (survives a crash of the process).")
    var sync: SyncMode = .full

    @Option(help: "File holding the admin token (creates tenants and keys). Else the CREDITS_ADMIN_KEY environment variable; with neither, admin calls are refused.")
    var adminKeyFile: String?

    @Option(help: "Days idempotency keys are kept (at least 7).")
    var idempotencyRetentionDays = 7

    @Option(help: "Writes waiting for the writer at most; beyond, UNAVAILABLE (retry).")
    var maxWriteQueue = 10_000

    @Option(help: "Writes committed together in one transaction at most (group commit).")
    var maxWriteBatch = 256

    @Option(help: "Clients whose balance rows are kept in memory for GetBalance (0: read SQLite every time). Writes invalidate them at commit.")
    var balanceCacheEntries = 20_000

    @Option(help: "Lot and hold rows the balance cache holds at most, all clients together (about 400 bytes each); when full it starts over.")
    var balanceCacheRows = BalanceCache.defaultRowBudget

    @Option(help: "Event-loop threads serving connections (default: one per core).")
    var threads = System.coreCount

    @Option(help: "Largest request message in bytes, after decompression (RESOURCE_EXHAUSTED above).")
    var maxMessageBytes = 4 * 1024 * 1024

    @Option(help: "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection.")
    var maxConcurrentStreams = 256

    @Option(help: "HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE in bytes (larger request headers → RESOURCE_EXHAUSTED).")
    var maxHeaderListBytes = 16 * 1024

    @Option(help: "Connections open at once; more are closed on accept.")
    var maxConnections = 10_000

    @Option(help: "Close a connection with no open call after this many seconds (0: never).")
    var idleTimeoutSeconds = 300

    @Option(help: "Response bytes one connection may hold queued because its client does not read them; past it no new call starts on that connection (REFUSED_STREAM, retried by gRPC clients) and messages that cannot drain end their call with RESOURCE_EXHAUSTED.")
    var maxResponseBufferBytesPerConnection = 1 << 20

    @Option(help: "The same for all connections together.")
    var maxResponseBufferBytes = 256 << 20

    @Option(help: "Bytes of partly received request messages one connection may hold over all its calls; past it the call that adds more ends with RESOURCE_EXHAUSTED.")
    var maxRequestBufferBytesPerConnection = 64 << 20

    @Option(help: "The same for all connections together.")
    var maxRequestBufferBytes = 256 << 20

    @Option(help: "Close a connection whose full response buffer has not drained for this many seconds (GOAWAY ENHANCE_YOUR_CALM; 0: never).")
    var stuckConnectionTimeoutSeconds = 30

    @Option(help: "Change-feed (SubscribeLedger) and balance-watch (WatchBalance) streams open at once on the server; more are refused with RESOURCE_EXHAUSTED.")
    var maxFeedStreams = 10_000

    @Option(help: "End a SubscribeLedger stream whose client has read nothing for this many seconds (RESOURCE_EXHAUSTED, SUBSCRIBER_STALLED; the client resumes from its last seq).")
    var feedStallTimeoutSeconds = 60

    @Option(help: "How often the key of an open feed or watch stream is checked again (a revoked key's streams end UNAUTHENTICATED).")
    var streamReauthSeconds = 10

    @Option(help: "On SIGTERM/SIGINT, how long open calls may run on before connections are closed.")
    var shutdownGraceSeconds = 10

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Option(help: "Log format: text or json (one object per line). Logs go to stderr.")
    var logFormat: LogFormat = .text

    @Option(help: "TLS: the server certificate chain (PEM, leaf first). With --tls-key; without both, plain h2c.")
    var tlsCert: String?

    @Option(help: "TLS: the certificate's private key (PEM, unencrypted).")
    var tlsKey: String?

    @Option(help: "mTLS: CA certificates (PEM) client certificates must chain to; clients without such a certificate are refused.")
    var tlsClientCa: String?

    @Option(help: "TLS: close a connection whose handshake has not finished after this many seconds.")
    var tlsHandshakeTimeoutSeconds = 10

    @Option(help: "TLS: check the certificate, key and client CA files for changes every this many seconds and reload them (0: only on SIGHUP).")
    var tlsReloadCheckSeconds = 5
    @Option(help: "Port of the Prometheus metrics endpoint (GET /metrics over HTTP/1.1; 0: no metrics).")
    var metricsPort = 0

    @Option(help: "Address the metrics endpoint listens on.")
    var metricsHost = "127.0.0.1"

    @Option(help: "Access log: one line per call (label access, level info): on or off.")
    var accessLog: OnOff = .on

    @Option(help: "Access-log lines per second at most (token bucket); lines over it are dropped and counted in one line per second.")
    var accessLogMaxLinesPerSecond = 1_000

    @Flag(help: "Also serve credits.testing.v1.TestService (for the transport's end-to-end tests).")
    var enableTestService = false

    func validate() throws {
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be 0…65535") }
        guard threads >= 1 && threads <= 256 else { throw ValidationError("--threads must be 1…256") }
        guard maxMessageBytes >= 1024 && maxMessageBytes <= 64 << 20 else { throw ValidationError("--max-message-bytes must be 1 KiB…64 MiB") }
        guard maxConcurrentStreams >= 1 && maxConcurrentStreams <= 10_000 else { throw ValidationError("--max-concurrent-streams must be 1…10000") }
        guard maxHeaderListBytes >= 1024 && maxHeaderListBytes <= 1 << 20 else { throw ValidationError("--max-header-list-bytes must be 1 KiB…1 MiB") }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        guard idleTimeoutSeconds >= 0, shutdownGraceSeconds >= 0, stuckConnectionTimeoutSeconds >= 0 else { throw ValidationError("timeouts are not negative") }
        guard maxResponseBufferBytesPerConnection >= 64 * 1024 && maxResponseBufferBytesPerConnection <= 1 << 30 else {
            throw ValidationError("--max-response-buffer-bytes-per-connection must be 64 KiB…1 GiB")
        }
        guard maxResponseBufferBytes >= maxResponseBufferBytesPerConnection && maxResponseBufferBytes <= 1 << 40 else {
            throw ValidationError("--max-response-buffer-bytes must be at least --max-response-buffer-bytes-per-connection")
        }
        guard maxRequestBufferBytesPerConnection >= maxMessageBytes && maxRequestBufferBytesPerConnection <= 1 << 40 else {
            throw ValidationError("--max-request-buffer-bytes-per-connection must be at least --max-message-bytes")
        }
        guard maxRequestBufferBytes >= maxRequestBufferBytesPerConnection && maxRequestBufferBytes <= 1 << 40 else {
            throw ValidationError("--max-request-buffer-bytes must be at least --max-request-buffer-bytes-per-connection")
        }
        guard idempotencyRetentionDays >= 7 && idempotencyRetentionDays <= 3650 else { throw ValidationError("--idempotency-retention-days must be 7…3650") }
        guard maxWriteQueue >= 1 && maxWriteQueue <= 1_000_000 else { throw ValidationError("--max-write-queue must be 1…1000000") }
        guard maxWriteBatch >= 1 && maxWriteBatch <= 10_000 else { throw ValidationError("--max-write-batch must be 1…10000") }
        guard balanceCacheEntries >= 0 && balanceCacheEntries <= 10_000_000 else { throw ValidationError("--balance-cache-entries must be 0…10000000") }
        guard streamReauthSeconds >= 1 && streamReauthSeconds <= 3600 else { throw ValidationError("--stream-reauth-seconds must be 1…3600") }
        guard maxFeedStreams >= 1 && maxFeedStreams <= 1_000_000 else { throw ValidationError("--max-feed-streams must be 1…1000000") }
        guard feedStallTimeoutSeconds >= 1 && feedStallTimeoutSeconds <= 86_400 else { throw ValidationError("--feed-stall-timeout-seconds must be 1…86400") }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard tlsClientCa == nil || tlsCert != nil else { throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key") }
        guard tlsHandshakeTimeoutSeconds >= 1 && tlsHandshakeTimeoutSeconds <= 300 else { throw ValidationError("--tls-handshake-timeout-seconds must be 1…300") }
        guard tlsReloadCheckSeconds >= 0 && tlsReloadCheckSeconds <= 86_400 else { throw ValidationError("--tls-reload-check-seconds must be 0…86400") }
        guard balanceCacheRows >= 0 && balanceCacheRows <= 10_000_000 else { throw ValidationError("--balance-cache-rows must be 0…10000000") }
        guard (0...65_535).contains(metricsPort) else { throw ValidationError("--metrics-port must be 0…65535") }
        guard (1...1_000_000).contains(accessLogMaxLinesPerSecond) else { throw ValidationError("--access-log-max-lines-per-second must be 1…1000000") }
    }

    func run() throws {
        LogSetup.bootstrap(level: logLevel, format: logFormat)
        let logger = Logger(label: "credits")

        let dbURL = URL(fileURLWithPath: db)
        try DatabaseAccess.check(dbURL.path, for: .write)

        // TLS files first: a bad one stops the start with one line.
        var tls: TLSContextStore?
        if let tlsCert, let tlsKey {
            do {
                tls = try TLSContextStore(files: TLSFiles(certificateChain: tlsCert, privateKey: tlsKey, clientCA: tlsClientCa),
                                          logger: Logger(label: "credits.tls"))
            } catch {
                throw CLIError("\(error)")
            }
        }

        let adminToken = try AdminToken.load(file: adminKeyFile)
        if adminToken == nil {
            logger.warning("no admin key (--admin-key-file or CREDITS_ADMIN_KEY): admin calls are refused")
        }
        let observability = ServeObservability(metricsEnabled: metricsPort != 0, accessLog: accessLog == .on,
                                               maxAccessLinesPerSecond: accessLogMaxLinesPerSecond)
        var ledgerOptions = Ledger.Options()
        ledgerOptions.synchronousFull = sync == .full
        ledgerOptions.maxQueueDepth = maxWriteQueue
        ledgerOptions.maxBatchSize = maxWriteBatch
        ledgerOptions.balanceCacheEntries = balanceCacheEntries
        ledgerOptions.balanceCacheRows = balanceCacheRows
        ledgerOptions.idempotencyRetentionSeconds = Int64(idempotencyRetentionDays) * 86_400
        let ledger = try DatabaseAccess.opening(dbURL.path) { try Ledger(path: dbURL.path, options: ledgerOptions) }

        let health = HealthService()
        var router = GRPCRouter()
        router.add(contentsOf: health.routes)
        var streamLimits = StreamLimits()
        streamLimits.maxStreams = maxFeedStreams
        streamLimits.stallTimeout = .seconds(Int64(feedStallTimeoutSeconds))
        streamLimits.reauthInterval = .seconds(Int64(streamReauthSeconds))
        let api = CreditsAPI(ledger: ledger, adminToken: adminToken, streams: streamLimits)
        router.add(contentsOf: api.routes)
        if enableTestService { router.add(contentsOf: TestService.routes) }
        let served = Array(Set(router.serviceNames + ReflectionService.serviceNames)).sorted()
        let reflection = try ReflectionService(servedServices: served)
        router.add(contentsOf: reflection.routes)

        var configuration = GRPCServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.threads = threads
        configuration.maxReceiveMessageBytes = maxMessageBytes
        configuration.limits.maxConcurrentStreams = maxConcurrentStreams
        configuration.limits.maxHeaderListBytes = maxHeaderListBytes
        configuration.maxConnections = maxConnections
        configuration.idleTimeout = .seconds(Int64(idleTimeoutSeconds))
        configuration.maxResponseBufferBytesPerConnection = maxResponseBufferBytesPerConnection
        configuration.maxResponseBufferBytes = maxResponseBufferBytes
        configuration.maxBufferedBytes = maxRequestBufferBytes
        configuration.maxBufferedBytesPerConnection = maxRequestBufferBytesPerConnection
        configuration.stuckConnectionTimeout = .seconds(Int64(stuckConnectionTimeoutSeconds))
        configuration.shutdownGracePeriod = .seconds(Int64(shutdownGraceSeconds))
        configuration.logger = Logger(label: "credits.transport")
        configuration.tls = tls
        configuration.tlsHandshakeTimeout = .seconds(Int64(tlsHandshakeTimeoutSeconds))
        configuration.observer = observability.callObserver(methods: router.allPaths)
        let metricsAddress: SocketAddress?
        do {
            metricsAddress = try observability.start(host: metricsHost, port: metricsPort, ledger: ledger)
        } catch {
            ledger.close()
            throw CLIError("cannot listen for metrics on \(metricsHost):\(metricsPort): \(CLIError.reason(error))")
        }

        let server = GRPCServer(configuration: configuration, router: router)
        let address: SocketAddress
        do {
            address = try server.start()
        } catch {
            observability.stop()
            ledger.close()
            throw CLIError("cannot listen on \(host):\(port): \(CLIError.reason(error))")
        }
        for service in router.serviceNames { health.setStatus(.serving, for: service) }
        health.setStatus(.serving, for: "")
        logger.info("serving", metadata: [
            "version": "\(CreditsVersion.number)",
            "address": "\(address)", "db": "\(dbURL.path)", "sync": "\(sync.rawValue)", "threads": "\(threads)",
            "services": "\(router.serviceNames.joined(separator: ","))",
            "metrics": "\(metricsAddress.map { "\($0)" } ?? "off")", "access_log": "\(accessLog.rawValue)",
        ])
        // TLS reload: SIGHUP, and a poll of the files' modification times.
        var hangup: DispatchSourceSignal?
        if let tls {
            logger.info("TLS certificate in service", metadata: [
                "mode": "\(tls.identity.mutualTLS ? "mtls" : "tls")", "serial": "\(tls.identity.serial)", "subject": "\(tls.identity.subject)",
                "reload_check_seconds": "\(tlsReloadCheckSeconds)",
            ])
            signal(SIGHUP, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
            source.setEventHandler { tls.reload(trigger: "SIGHUP") }
            source.resume()
            hangup = source
            tls.startWatching(every: .seconds(Int64(tlsReloadCheckSeconds)))
        }

        // Health follows the storage: while writes fail (disk full, file not
        // writable) the server and the credits services are NOT_SERVING;
        // reads keep working, and the writer's probe notices the recovery.
        let storageWatch = StorageHealthWatch(ledger: ledger, health: health, services: CreditsAPI.serviceNames, logger: logger)
        storageWatch.start()

        let stop = DispatchSemaphore(value: 0)
        let signals = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { stop.signal() }
            source.resume()
            return source
        }
        stop.wait()
        logger.info("shutting down", metadata: ["grace_seconds": "\(shutdownGraceSeconds)"])
        storageWatch.stop()
        health.setAll(.notServing)
        health.finishWatchers()
        api.endStreams()
        try server.shutdownGracefully()
        observability.stop()
        ledger.close()
        signals.forEach { $0.cancel() }
        hangup?.cancel()
        tls?.stopWatching()
        logger.info("stopped")
    }
}

/// Polls the ledger's storage state once a second and reflects it in health.
final class StorageHealthWatch: @unchecked Sendable {
    private let ledger: Ledger
    private let health: HealthService
    private let services: [String]
    private let logger: Logger
    private let queue = DispatchQueue(label: "credits.storage-health")
    private var timer: DispatchSourceTimer?
    private var last: StorageProblem?

    init(ledger: Ledger, health: HealthService, services: [String], logger: Logger) {
        self.ledger = ledger
        self.health = health
        self.services = services
        self.logger = logger
    }

    func start() {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + .seconds(1), repeating: .seconds(1))
        timer.setEventHandler { [weak self] in self?.check() }
        self.timer = timer
        timer.resume()
    }

    func stop() {
        queue.sync {
            timer?.cancel()
            timer = nil
        }
    }

    private func check() {
        guard timer != nil else { return }
        let now = ledger.storageProblem
        guard now != last else { return }
        last = now
        let status: HealthService.ServingStatus = now == nil ? .serving : .notServing
        for service in services + [""] { health.setStatus(status, for: service) }
        if let now {
            logger.error("writes fail: storage problem; health NOT_SERVING until it is fixed", metadata: ["problem": "\(now)"])
        } else {
            logger.notice("storage writable again; health SERVING")
        }
    }
}
