// loadgen: drives a credits server with N connections x M concurrent gRPC
// calls and reports throughput, latency percentiles and errors by status.

import ArgumentParser
import CreditsProto
import Foundation

enum Scenario: String, ExpressibleByArgument, CaseIterable {
    /// Create a tenant, a staff key and one credit order per client; prints the token.
    case seed
    /// GetBalance over the clients, round-robin.
    case read
    /// SpendCredits of --amount per call, unique idempotency keys, clients round-robin.
    case spend
}

@main
struct Loadgen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen",
        abstract: "Load generator for the credits gRPC service (h2c on libnghttp2).",
        discussion: """
        Typical use:
          loadgen --scenario seed --admin-token ADMIN --clients 1000 --json seed.json   # prints the token
          loadgen --scenario read --token TOKEN --clients 1000 --connections 16 --streams 32 --duration 10
          loadgen --scenario spend --token TOKEN --clients 1000 --count 10000
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

    @Option(help: "Bearer token of a tenant key (read, spend). Also LOADGEN_TOKEN.")
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

    @Option(help: "Amount of each spend, in minor units.")
    var amount: Int64 = 1

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
    }

    func run() throws {
        let env = ProcessInfo.processInfo.environment
        let runID = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        var calls = ScenarioCalls(clients: ClientSet(prefix: clientPrefix, count: clients), centerID: center, runID: runID)
        let summary: Summary
        do {
            switch scenario {
            case .seed:
                guard let admin = adminToken ?? env["LOADGEN_ADMIN_TOKEN"] else {
                    throw ValidationError("seed needs --admin-token (or LOADGEN_ADMIN_TOKEN)")
                }
                summary = try seed(adminToken: admin, calls: &calls)
            case .read, .spend:
                guard let token = token ?? env["LOADGEN_TOKEN"] else {
                    throw ValidationError("\(scenario.rawValue) needs --token (or LOADGEN_TOKEN); run --scenario seed first")
                }
                let amount = amount
                let c = calls
                let make: @Sendable (Int) -> PlannedCall
                if scenario == .read {
                    make = { seq in c.getBalance(seq) }
                } else {
                    make = { seq in c.spend(seq, amountMinor: amount) }
                }
                let result = try load(token: token, count: count, duration: duration ?? (count == nil ? 10 : nil), make: make)
                summary = Summary(scenario: scenario.rawValue, target: target, connections: connections,
                                  streams: streams, result: result)
            }
        } catch let error as ConnectionError {
            FileHandle.standardError.write(Data("loadgen: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as UnaryCallError {
            FileHandle.standardError.write(Data("loadgen: \(error)\n".utf8))
            throw ExitCode(2)
        }
        emit(summary.table + "\n")
        if let json {
            try summary.json().write(to: URL(fileURLWithPath: json))
        }
        if summary.errors > 0 && !allowErrors { throw ExitCode(1) }
    }

    private func load(token: String, count: Int?, duration: Double?, make: @escaping @Sendable (Int) -> PlannedCall) throws -> RunResult {
        let plan = LoadPlan(
            target: target, metadata: [("authorization", "Bearer \(token)")],
            connections: connections, streamsPerConnection: streams,
            threads: threads ?? min(connections, ProcessInfo.processInfo.activeProcessorCount),
            count: count, durationNanos: duration.map { UInt64($0 * 1e9) },
            requestTimeoutNanos: UInt64(requestTimeout * 1e9), makeCall: make, onSuccess: nil
        )
        var display = ProgressDisplay()
        let result = try runLoad(plan) { progress, elapsed in
            if !quiet { display.update(progress, elapsedNanos: elapsed) }
        }
        if !quiet { display.finish() }
        return result
    }

    /// Creates the tenant (or reuses it if it exists) and a staff key, then one credit order per client.
    private func seed(adminToken: String, calls: inout ScenarioCalls) throws -> Summary {
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
        let seedAmount = seedAmount
        let result = try load(token: key.token, count: clients, duration: nil) {
            c.seedOrder($0, tenant: tenantID, amountMinor: seedAmount)
        }
        var summary = Summary(scenario: "seed", target: target, connections: connections, streams: streams, result: result)
        summary.tenant = tenantID
        summary.token = key.token
        summary.clients = clients
        return summary
    }
}
