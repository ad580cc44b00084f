// loadgen: drives a credits server with N connections x M concurrent gRPC
// calls and reports throughput, latency percentiles and errors by status.

import GRPCClient
import ArgumentParser
import CreditsProto
import Foundation

enum Scenario: String, ExpressibleByArgument, CaseIterable {
    /// Create a tenant, a staff key and one credit order per client (then --entries more); prints the token.
    case seed
    /// GetBalance over the clients, round-robin.
    case read
    /// SpendCredits of --amount per call, unique idempotency keys, clients round-robin.
    case spend
    /// ListLedgerEntries, first page of --page-size, clients round-robin.
    case statement
    /// Reads, statements, purchases, spends and holds in --mix ratios; holds of this run are
    /// later captured (--capture-percent) or released.
    case mixed
    /// Many writers on one client (--hot-client): SpendCredits, and --hot-holds percent CreateHold + CaptureHold.
    case hot
    /// SubscribeLedger: prints the tenant's change feed from --from-seq, then live (or counts, with many streams).
    case tail
    /// WatchBalance: prints a client's balance after each change (or counts, with many streams).
    case watch
}

@main
struct Loadgen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen",
        abstract: "Load generator for the credits gRPC service (h2c on libnghttp2).",
        discussion: """
        Scenarios (A: the server's admin token; T: the tenant token seed prints):
          loadgen --scenario seed --admin-token A --clients 1000 --json seed.json
          loadgen --scenario seed --admin-token A --clients 1000 --entries 100000 \\
                  --connections 4 --streams 64
          loadgen --scenario read --token T --clients 1000 --connections 16 \\
                  --streams 32 --duration 10
          loadgen --scenario spend --token T --clients 1000 --count 10000
          loadgen --scenario statement --token T --clients 1000 --page-size 50 \\
                  --duration 10
          loadgen --scenario mixed --token T --clients 1000 --connections 4 \\
                  --streams 64 --duration 30 --json mixed.json   # + mixed.svg
          loadgen --scenario mixed --token T --mix read=80,spend=10,hold=5,settle=5
          loadgen --scenario hot --token T --hot-client lg-client-7 --hot-holds 10 \\
                  --streams 256 --count 20000
          loadgen --scenario tail --token T --from-seq 0
          loadgen --scenario tail --token T --filter-client lg-client-3 --progress-interval 2
          loadgen --scenario watch --token T --client-prefix lg-client-3 --clients 1 \\
                  --threshold 500
          loadgen --scenario watch --token T --clients 1000 --connections 8 \\
                  --streams 125 --duration 30 --json watchers.json

        read: GetBalance over the clients, round-robin (with --as-of-seq-max N: as of a pseudo-random seq in 1…N). spend: SpendCredits of --amount with unique idempotency keys. statement: the first page (--page-size) of ListLedgerEntries, clients round-robin.

        mixed: --mix weights (default \(Mix.default); kinds left out weigh 0) of GetBalance (read), a ListLedgerEntries first page (statement), CreateCreditOrder of --purchase-amount (purchase), SpendCredits of --amount (spend), CreateHold of --amount (hold), and CaptureHold or ReleaseHold (settle) of a hold this run created, oldest open first: --capture-percent (default 50) are captured, the rest released; at most --max-open-holds stay open. Every write has a unique idempotency key. The summary breaks every figure down by operation (read, statement, purchase, spend, hold, capture, release).

        tail: SubscribeLedger from --from-seq (default 0), optionally only --filter-client ids; prints each entry (seq, time, type, client, amount, accounts, balance after) and progress line as it arrives, then follows new commits live until the stream ends, --duration or --max-messages. watch: WatchBalance of client <client-prefix>0 (stream i watches <client-prefix>i), printing each balance snapshot, flagging --threshold crossings. With more than one stream (--connections x --streams) nothing is printed unless --print: the summary counts messages (a benchmark of many subscribers).

        hot: many concurrent writers on one client (--hot-client, default the first client): SpendCredits of --amount, and with --hot-holds P, P% CreateHold and P% CaptureHold of those holds.

        seed --entries L: after one credit order per client, alternating small credit orders and spends of --amount over the clients until about L ledger entries exist (one entry per write), through the same concurrent load machinery. For millions of entries the offline `credits admin seed` command is the fast path.

        --json FILE also writes the latency plot (SVG, latency by percentile, per operation) next to it, mixed.json → mixed.svg, unless --plot says where. A server GOAWAY (graceful shutdown, idle timeout) counts each refused call as GOAWAY, and the connection is replaced once its calls are done (at most 1000 times per worker thread; the summary counts the reconnects).

        Exits 1 if any call failed (unless --allow-errors), 2 on a setup failure.
        """
    )

    @Option(help: "Server address host:port (h2c).")
    var target = "127.0.0.1:50051"

    @Option(help: "What to run.")
    var scenario: Scenario = .read

    @Option(help: "TCP connections.")
    var connections = 1

    @Option(help: "Concurrent calls (HTTP/2 streams) per connection.")
    var streams = 1

    @Option(help: "Worker threads (default: min(connections, cores)).")
    var threads: Int?

    @Option(help: "Run for this many seconds (default 10 unless --count is given).")
    var duration: Double?

    @Option(help: "Make exactly this many calls.")
    var count: Int?

    @Option(help: "Bearer token of a tenant key (every scenario but seed). Also LOADGEN_TOKEN.")
    var token: String?

    @Option(help: "Admin bearer token (seed). Also LOADGEN_ADMIN_TOKEN.")
    var adminToken: String?

    @Option(help: "Tenant to create (seed; default: a new random id).")
    var tenant: String?

    @Option(help: "ISO 4217 currency of the seeded tenant.")
    var currency = "EUR"

    @Option(help: "Number of clients K (ids <client-prefix>0 … <client-prefix>K-1).")
    var clients = 100

    @Option(help: "Prefix of the client ids.")
    var clientPrefix = "lg-client-"

    @Option(help: "Center of credit orders and spends.")
    var center = "c1"

    @Option(help: "Credit per client added by seed, in minor units.")
    var seedAmount: Int64 = 1_000_000

    @Option(help: "Amount of each spend and hold (and of seed --entries orders), in minor units.")
    var amount: Int64 = 1

    @Option(help: "Amount of each purchase (credit order) in mixed, in minor units.")
    var purchaseAmount: Int64 = 10

    @Option(help: "mixed: weights kind=N of read, statement, purchase, spend, hold, settle (default \(Mix.default)).",
            transform: Loadgen.parseMix)
    var mix: Mix?

    @Option(help: "mixed, hot: percent of settled holds that are captured (the rest are released).")
    var capturePercent: Int?

    @Option(help: "mixed, hot: open holds of this run kept for settling, at most.")
    var maxOpenHolds = 10_000

    @Option(help: "statement, mixed: page size of ListLedgerEntries (1…1000).")
    var pageSize: Int32 = 50

    @Option(help: "hot: the client every call writes to (default: the first client id).")
    var hotClient: String?

    @Option(help: "hot: percent of calls that are CreateHold, each later captured by another call (0…50).")
    var hotHolds: Int?

    @Option(help: "seed: about this many ledger entries in total (default 0: one credit order per client).")
    var entries: Int?

    @Option(help: "tail: send entries after this seq.")
    var fromSeq: Int64 = 0

    @Option(help: "tail: only entries of this client (repeatable, at most 100).")
    var filterClient: [String] = []

    @Flag(help: "tail: stream i follows only client <client-prefix>i (many filtered feeds).")
    var filterPerStream = false

    @Option(help: "tail: seconds between progress messages while idle (1…300; 0: the server's default).")
    var progressInterval: Int32 = 0

    @Option(help: "watch: flag snapshots whose available balance is below this (0: none).")
    var threshold: Int64 = 0

    @Flag(help: "watch: ask for lots, centers and open holds too.")
    var details = false

    @Option(help: "tail, watch: stop after this many messages in all.")
    var maxMessages: Int?

    @Flag(help: "tail, watch: print every message even with many streams.")
    var print = false

    @Option(help: "read: each GetBalance asks for the balance as of a pseudo-random tenant seq in 1…N (as_of_seq; N at most the tenant's latest seq).")
    var asOfSeqMax: Int64?

    @Option(help: "Write the latency plot (SVG) here (default: next to --json, as .svg).")
    var plot: String?

    @Option(help: "A call unanswered this many seconds ends as CLIENT_TIMEOUT.")
    var requestTimeout: Double = 10

    @Option(help: "Also write the summary as JSON to this file.")
    var json: String?

    @Flag(help: "Exit 0 even if some calls failed.")
    var allowErrors = false

    @Flag(help: "No progress lines.")
    var quiet = false

    func validate() throws {
        guard connections >= 1, connections <= 10_000 else { throw ValidationError("--connections must be 1…10000") }
        guard streams >= 1, streams <= 10_000 else { throw ValidationError("--streams must be 1…10000") }
        guard clients >= 1 else { throw ValidationError("--clients must be ≥ 1") }
        if let threads, threads < 1 { throw ValidationError("--threads must be ≥ 1") }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be > 0") }
        if let count, count < 1 { throw ValidationError("--count must be ≥ 1") }
        guard amount > 0, seedAmount > 0 else { throw ValidationError("--amount and --seed-amount must be > 0") }
        guard requestTimeout > 0 else { throw ValidationError("--request-timeout must be > 0") }
        guard purchaseAmount > 0 else { throw ValidationError("--purchase-amount must be > 0") }
        if let asOfSeqMax {
            guard asOfSeqMax >= 1 else { throw ValidationError("--as-of-seq-max must be ≥ 1") }
            guard scenario == .read else { throw ValidationError("--as-of-seq-max applies to --scenario read only") }
        }
        guard (1...1_000).contains(pageSize) else { throw ValidationError("--page-size must be 1…1000") }
        guard maxOpenHolds >= 1 else { throw ValidationError("--max-open-holds must be ≥ 1") }
        if let capturePercent, !(0...100).contains(capturePercent) { throw ValidationError("--capture-percent must be 0…100") }
        if let hotHolds, !(0...50).contains(hotHolds) { throw ValidationError("--hot-holds must be 0…50") }
        if let entries, entries < 0 { throw ValidationError("--entries must be ≥ 0") }
        if let hotClient, hotClient.isEmpty || hotClient.contains(" ") { throw ValidationError("--hot-client must be a client id") }
        try only(mix != nil, "--mix", in: [.mixed])
        try only(capturePercent != nil, "--capture-percent", in: [.mixed, .hot])
        try only(hotClient != nil, "--hot-client", in: [.hot])
        try only(hotHolds != nil, "--hot-holds", in: [.hot])
        try only(entries != nil, "--entries", in: [.seed])
    }

    @Sendable static func parseMix(_ text: String) throws -> Mix {
        do { return try Mix(parsing: text) } catch { throw ValidationError(error.description) }
    }

    /// An option that applies to some scenarios only is refused with the others (rather than ignored).
    private func only(_ given: Bool, _ option: String, in scenarios: [Scenario]) throws {
        guard !given || scenarios.contains(scenario) else {
            throw ValidationError("\(option) applies to --scenario \(scenarios.map(\.rawValue).joined(separator: "/")) only")
        }
    }

    func run() throws {
        let env = ProcessInfo.processInfo.environment
        let runID = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let calls = ScenarioCalls(clients: ClientSet(prefix: clientPrefix, count: clients), centerID: center, runID: runID)
        var summary: Summary
        let result: RunResult
        if scenario == .tail || scenario == .watch {
            guard let token = token ?? env["LOADGEN_TOKEN"] else {
                throw ValidationError("\(scenario.rawValue) needs --token (or LOADGEN_TOKEN)")
            }
            try runStreaming(token: token)
            return
        }
        do {
            if scenario == .seed {
                guard let admin = adminToken ?? env["LOADGEN_ADMIN_TOKEN"] else {
                    throw ValidationError("seed needs --admin-token (or LOADGEN_ADMIN_TOKEN)")
                }
                (summary, result) = try seed(adminToken: admin, calls: calls)
            } else {
                guard let token = token ?? env["LOADGEN_TOKEN"] else {
                    throw ValidationError("\(scenario.rawValue) needs --token (or LOADGEN_TOKEN); run --scenario seed first")
                }
                (summary, result) = try runScenario(token: token, calls: calls)
            }
        } catch let error as ClientError {
            FileHandle.standardError.write(Data("loadgen: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as UnaryCallError {
            FileHandle.standardError.write(Data("loadgen: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if let path = plot ?? json.map(Self.plotPath(nextTo:)) {
            try writePlot(result, summary: summary, to: path)
            summary.plot = path
        }
        emit(summary.table + "\n")
        if let json {
            try summary.json().write(to: URL(fileURLWithPath: json))
        }
        if summary.errors > 0 && !allowErrors { throw ExitCode(1) }
    }

    /// tail and watch: server-streaming calls, printed or counted.
    private func runStreaming(token: String) throws {
        let total = connections * streams
        var options = StreamRunOptions(kind: scenario == .tail ? .tail : .watch, streams: total, connections: connections,
                                       duration: duration, maxMessages: maxMessages, print: print || total == 1)
        options.fromSeq = fromSeq
        options.filterClients = filterClient
        options.filterPerStream = filterPerStream
        options.progressIntervalSeconds = progressInterval
        options.details = details
        options.thresholdMinor = threshold
        let summary: StreamRunSummary
        do {
            summary = try runStreams(target: target, token: token, clients: ClientSet(prefix: clientPrefix, count: clients),
                                     options: options) { line in
                FileHandle.standardOutput.write(Data((line + "\n").utf8))
            }
        } catch let error as ClientError {
            FileHandle.standardError.write(Data("loadgen: \(error)\n".utf8))
            throw ExitCode(2)
        }
        if !quiet { FileHandle.standardError.write(Data((summary.table + "\n").utf8)) }
        if let json { try summary.json().write(to: URL(fileURLWithPath: json)) }
        let failed = summary.ended.filter { $0.key != "OK" && $0.key != "CANCELLED" }.values.reduce(0, +)
        if failed > 0 && !allowErrors { throw ExitCode(1) }
    }

    /// read, spend, statement, mixed and hot: one load run with the scenario's calls.
    private func runScenario(token: String, calls c: ScenarioCalls) throws -> (Summary, RunResult) {
        let amount = amount, pageSize = pageSize
        var workload: MixedWorkload?
        let make: @Sendable (Int) -> PlannedCall
        switch scenario {
        case .read:
            let asOfSeqMax = asOfSeqMax
            make = { seq in c.getBalance(seq, asOfSeq: asOfSeqMax.map { ScenarioCalls.spread(seq, over: $0) } ?? 0) }
        case .spend:
            make = { seq in c.spend(seq, amountMinor: amount) }
        case .statement:
            make = { seq in c.statement(seq, pageSize: pageSize) }
        case .mixed, .hot:
            let w = MixedWorkload(calls: c, options: workloadOptions(clients: c.clients))
            workload = w
            make = { seq in w.makeCall(seq) }
        case .seed, .tail, .watch:
            preconditionFailure("seed, tail and watch have runs of their own")
        }
        let result = try load(token: token, count: count, duration: duration ?? (count == nil ? 10 : nil), make: make,
                              onSuccess: workload.map { w in { @Sendable seq, op, body in w.onSuccess(seq, op, body) } })
        var summary = Summary(scenario: scenario.rawValue, target: target, connections: connections,
                              streams: streams, result: result)
        if let workload {
            summary.mix = workload.options.mix.byName
            summary.openHolds = workload.pool.count
            summary.hotClient = workload.options.hotClient
        }
        return (summary, result)
    }

    /// mixed: the --mix over the clients; hot: spends (and holds, all captured) on one client.
    private func workloadOptions(clients: ClientSet) -> MixedWorkload.Options {
        let expire = MixedWorkload.expireTime(secondsFromNow: 24 * 3600)
        if scenario == .hot {
            let h = hotHolds ?? 0
            return MixedWorkload.Options(
                mix: Mix(read: 0, statement: 0, purchase: 0, spend: 100 - 2 * h, hold: h, settle: h),
                amountMinor: amount, purchaseAmountMinor: purchaseAmount, pageSize: pageSize,
                capturePercent: capturePercent ?? 100, hotClient: hotClient ?? clients.id(0),
                holdExpireTime: expire, poolCapacity: maxOpenHolds)
        }
        return MixedWorkload.Options(
            mix: mix ?? .default, amountMinor: amount, purchaseAmountMinor: purchaseAmount, pageSize: pageSize,
            capturePercent: capturePercent ?? 50, hotClient: nil, holdExpireTime: expire, poolCapacity: maxOpenHolds)
    }

    private func load(token: String, count: Int?, duration: Double?, make: @escaping @Sendable (Int) -> PlannedCall,
                      onSuccess: (@Sendable (Int, OperationKind, ArraySlice<UInt8>) -> Bool)? = nil) throws -> RunResult {
        let plan = LoadPlan(
            target: target, metadata: [("authorization", "Bearer \(token)")],
            connections: connections, streamsPerConnection: streams,
            threads: threads ?? min(connections, ProcessInfo.processInfo.activeProcessorCount),
            count: count, durationNanos: duration.map { UInt64($0 * 1e9) },
            requestTimeoutNanos: UInt64(requestTimeout * 1e9), makeCall: make, onSuccess: onSuccess
        )
        var display = ProgressDisplay()
        let result = try runLoad(plan) { progress, elapsed in
            if !quiet { display.update(progress, elapsedNanos: elapsed) }
        }
        if !quiet { display.finish() }
        return result
    }

    /// `run.json` → `run.svg` (any other name gets `.svg` appended).
    static func plotPath(nextTo json: String) -> String {
        let url = URL(fileURLWithPath: json)
        guard url.pathExtension.lowercased() == "json" else { return json + ".svg" }
        return url.deletingPathExtension().appendingPathExtension("svg").path
    }

    /// The overall curve, then one per kind of operation when the run made more than one kind.
    private func writePlot(_ result: RunResult, summary: Summary, to path: String) throws {
        var curves = [LatencyCurve(name: "all", histogram: result.latencyMicros)]
        if result.operations.count > 1 {
            for (op, r) in result.operations.sorted(by: { $0.key < $1.key }) {
                curves.append(LatencyCurve(name: op.name, histogram: r.latencyMicros))
            }
        }
        let title = String(format: "loadgen %@: %d connections × %d streams, %.0f req/s",
                           summary.scenario, summary.connections, summary.streams, summary.throughputRps)
        let subtitle = String(format: "latency of successful calls by percentile · %@ · %d requests, %d errors in %.1f s",
                              summary.target, summary.requests, summary.errors, summary.elapsedSeconds)
        let svg = LatencyPlot.svg(title: title, subtitle: subtitle, curves: curves)
        try Data(svg.utf8).write(to: URL(fileURLWithPath: path))
    }

    /// Creates the tenant (or reuses it if it exists) and a staff key, then one credit order per client,
    /// then (--entries) pairs of small orders and spends until about that many entries exist.
    private func seed(adminToken: String, calls: ScenarioCalls) throws -> (Summary, RunResult) {
        let tenantID = tenant ?? "lg-\(calls.runID)"
        var create = Credits_V1_CreateTenantRequest()
        create.tenantID = tenantID
        create.name = "loadgen \(tenantID)"
        create.currency = currency
        do {
            _ = try unaryCall(target: target, token: adminToken, path: Method.createTenant, request: create,
                              as: Credits_V1_Tenant.self)
        } catch UnaryCallError.failed(_, .grpcStatus(6), _) {
            // ALREADY_EXISTS: seed more clients into an existing tenant.
        }
        var keyRequest = Credits_V1_CreateApiKeyRequest()
        keyRequest.tenantID = tenantID
        keyRequest.role = .staff
        keyRequest.label = "loadgen"
        let key = try unaryCall(target: target, token: adminToken, path: Method.createApiKey, request: keyRequest,
                                as: Credits_V1_CreateApiKeyResponse.self)
        let c = calls
        let seedAmount = seedAmount, amount = amount
        var result = try load(token: key.token, count: clients, duration: nil) {
            c.seedOrder($0, tenant: tenantID, amountMinor: seedAmount)
        }
        let extra = (entries ?? 0) - clients
        if extra > 0 {
            result.append(try load(token: key.token, count: extra, duration: nil) {
                c.seedEntry($0, tenant: tenantID, amountMinor: amount)
            })
        }
        var summary = Summary(scenario: "seed", target: target, connections: connections, streams: streams, result: result)
        summary.tenant = tenantID
        summary.token = key.token
        summary.clients = clients
        summary.entriesWritten = result.ok
        return (summary, result)
    }
}
