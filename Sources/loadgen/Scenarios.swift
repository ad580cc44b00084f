// The scenarios: which calls a run makes, built from the generated message types.

import CreditsProto

enum Method {
    static let createTenant = "/credits.v1.AdminService/CreateTenant"
    static let createApiKey = "/credits.v1.AdminService/CreateApiKey"
    static let createCreditOrder = "/credits.v1.CreditService/CreateCreditOrder"
    static let getBalance = "/credits.v1.CreditService/GetBalance"
    static let spendCredits = "/credits.v1.CreditService/SpendCredits"
}

/// The client ids a run works on: `prefix0` … `prefix(K-1)`.
struct ClientSet: Sendable {
    var prefix: String
    var count: Int

    func id(_ n: Int) -> String {
        precondition(count > 0)
        return prefix + String(n % count)
    }
}

/// Builders for each scenario's calls. `runID` makes idempotency keys unique across runs.
struct ScenarioCalls: Sendable {
    var clients: ClientSet
    var centerID: String
    var runID: String

    func getBalance(_ seq: Int) -> PlannedCall {
        var m = Credits_V1_GetBalanceRequest()
        m.clientID = clients.id(seq)
        return PlannedCall(path: Method.getBalance, message: m.serializedBytes())
    }

    func spend(_ seq: Int, amountMinor: Int64) -> PlannedCall {
        var m = Credits_V1_SpendCreditsRequest()
        m.clientID = clients.id(seq)
        m.amountMinor = amountMinor
        m.reason = .service
        m.centerID = centerID
        m.idempotencyKey = "lg-spend-\(runID)-\(seq)"
        return PlannedCall(path: Method.spendCredits, message: m.serializedBytes())
    }

    /// One credit order per client; the key depends only on the tenant and client, so re-seeding is idempotent.
    func seedOrder(_ seq: Int, tenant: String, amountMinor: Int64) -> PlannedCall {
        var m = Credits_V1_CreateCreditOrderRequest()
        m.clientID = clients.id(seq)
        m.amountMinor = amountMinor
        m.priceMinor = 0
        m.centerID = centerID
        m.note = "loadgen seed"
        m.idempotencyKey = "lg-seed-\(tenant)-\(m.clientID)"
        return PlannedCall(path: Method.createCreditOrder, message: m.serializedBytes())
    }
}

enum UnaryCallError: Error, CustomStringConvertible {
    case failed(path: String, outcome: CallOutcome, message: String)
    case badResponse(path: String)

    var description: String {
        switch self {
        case .failed(let path, let outcome, let message): return "\(path) failed: \(outcome.label) \(message)"
        case .badResponse(let path): return "\(path): undecodable response"
        }
    }
}

/// One call on its own connection, waiting for the answer (for setup steps such as seeding).
func unaryCall<Response: ProtoMessage>(
    target: String, token: String, path: String, request: some ProtoMessage, as: Response.Type,
    timeoutNanos: UInt64 = 10_000_000_000
) throws -> Response {
    let connection = try H2Connection(target: target, metadata: [("authorization", "Bearer \(token)")])
    try connection.start(path: path, message: request.serializedBytes(), tag: 0)
    let deadline = monotonicNanos() + timeoutNanos
    while true {
        try connection.flush()
        if let call = connection.takeCompleted().first {
            guard call.outcome.isOK else { throw UnaryCallError.failed(path: path, outcome: call.outcome, message: call.grpcMessage) }
            guard let body = call.firstMessage, let response = try? Response(serializedBytes: body) else {
                throw UnaryCallError.badResponse(path: path)
            }
            return response
        }
        if monotonicNanos() > deadline {
            throw UnaryCallError.failed(path: path, outcome: .timedOut, message: "")
        }
        let readable = try pollConnections([connection], timeoutMillis: 100)
        if readable.first == true, try !connection.readAvailable() {
            connection.abandon(.connectionLost)
        }
    }
}
