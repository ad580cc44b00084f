// The scenarios: which calls a run makes, built from the generated message types.

import GRPCClient
import CreditsProto

enum Method {
    static let createTenant = "/credits.v1.AdminService/CreateTenant"
    static let createApiKey = "/credits.v1.AdminService/CreateApiKey"
    static let createCreditOrder = "/credits.v1.CreditService/CreateCreditOrder"
    static let getBalance = "/credits.v1.CreditService/GetBalance"
    static let spendCredits = "/credits.v1.CreditService/SpendCredits"
    static let createHold = "/credits.v1.CreditService/CreateHold"
    static let captureHold = "/credits.v1.CreditService/CaptureHold"
    static let releaseHold = "/credits.v1.CreditService/ReleaseHold"
    static let listLedgerEntries = "/credits.v1.CreditService/ListLedgerEntries"
}

/// The kinds of call the report breaks down, in report order.
enum OperationKind: Int, CaseIterable, Sendable, Comparable {
    /// GetBalance.
    case read
    /// ListLedgerEntries, first page (a statement page).
    case statement
    /// CreateCreditOrder (a purchase at the front desk).
    case purchase
    /// SpendCredits.
    case spend
    /// CreateHold.
    case hold
    /// CaptureHold of a hold this run created.
    case capture
    /// ReleaseHold of a hold this run created.
    case release

    var name: String { "\(self)" }

    static func < (a: OperationKind, b: OperationKind) -> Bool { a.rawValue < b.rawValue }
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

    /// `asOfSeq` > 0: the balance as of that tenant seq (GetBalance as_of_seq).
    func getBalance(_ seq: Int, asOfSeq: Int64 = 0) -> PlannedCall {
        getBalance(seq, clientID: clients.id(seq), asOfSeq: asOfSeq)
    }

    /// 1…max, spread evenly and reproducibly over call numbers (SplitMix64 of `seq`).
    static func spread(_ seq: Int, over max: Int64) -> Int64 {
        precondition(max >= 1)
        var z = UInt64(truncatingIfNeeded: seq) &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return 1 + Int64(z % UInt64(max))
    }

    func spend(_ seq: Int, amountMinor: Int64) -> PlannedCall {
        spend(seq, clientID: clients.id(seq), amountMinor: amountMinor)
    }

    /// One credit order per client; the key depends only on the tenant and client, so re-seeding is idempotent.
    func seedOrder(_ seq: Int, tenant: String, amountMinor: Int64) -> PlannedCall {
        order(clientID: clients.id(seq), amountMinor: amountMinor, priceMinor: 0, note: "loadgen seed",
              key: "lg-seed-\(tenant)-\(clients.id(seq))")
    }

    /// Seed's extra entries: pairs of a small credit order and a spend of the same amount on one client
    /// (clients round-robin by pair), so balances end where they started. Keys depend on the tenant, the
    /// position, the client and the amount: seeding again with the same options adds nothing.
    func seedEntry(_ seq: Int, tenant: String, amountMinor: Int64) -> PlannedCall {
        let client = clients.id(seq / 2)
        let key = "lg-seed-\(tenant)-e\(seq)-\(client)-\(amountMinor)"
        if seq % 2 == 0 {
            return order(clientID: client, amountMinor: amountMinor, priceMinor: 0, note: "loadgen seed entries", key: key)
        }
        return spend(clientID: client, amountMinor: amountMinor, key: key)
    }

    /// A purchase at the front desk: a credit order paid in full (no package needed).
    func purchase(_ seq: Int, clientID: String, amountMinor: Int64) -> PlannedCall {
        order(clientID: clientID, amountMinor: amountMinor, priceMinor: amountMinor, note: "loadgen purchase",
              key: "lg-order-\(runID)-\(seq)")
    }

    func spend(_ seq: Int, clientID: String, amountMinor: Int64) -> PlannedCall {
        spend(clientID: clientID, amountMinor: amountMinor, key: "lg-spend-\(runID)-\(seq)")
    }

    /// The first page of a client's statement (newest first).
    func statement(_ seq: Int, clientID: String? = nil, pageSize: Int32) -> PlannedCall {
        var m = Credits_V1_ListLedgerEntriesRequest()
        m.clientID = clientID ?? clients.id(seq)
        m.pageSize = pageSize
        return PlannedCall(path: Method.listLedgerEntries, message: m.serializedBytes(), operation: .statement)
    }

    func getBalance(_ seq: Int, clientID: String, asOfSeq: Int64 = 0) -> PlannedCall {
        var m = Credits_V1_GetBalanceRequest()
        m.clientID = clientID
        m.asOfSeq = asOfSeq
        return PlannedCall(path: Method.getBalance, message: m.serializedBytes(), operation: .read)
    }

    func createHold(_ seq: Int, clientID: String, amountMinor: Int64, expireTime: Google_Protobuf_Timestamp) -> PlannedCall {
        var m = Credits_V1_CreateHoldRequest()
        m.clientID = clientID
        m.amountMinor = amountMinor
        m.centerID = centerID
        m.bookingRef = "lg-booking-\(runID)-\(seq)"
        m.expireTime = expireTime
        m.idempotencyKey = "lg-hold-\(runID)-\(seq)"
        return PlannedCall(path: Method.createHold, message: m.serializedBytes(), operation: .hold)
    }

    /// Captures the whole hold.
    func captureHold(_ seq: Int, holdID: String) -> PlannedCall {
        var m = Credits_V1_CaptureHoldRequest()
        m.holdID = holdID
        m.reason = .booking
        m.idempotencyKey = "lg-capture-\(runID)-\(seq)"
        return PlannedCall(path: Method.captureHold, message: m.serializedBytes(), operation: .capture)
    }

    func releaseHold(_ seq: Int, holdID: String) -> PlannedCall {
        var m = Credits_V1_ReleaseHoldRequest()
        m.holdID = holdID
        m.idempotencyKey = "lg-release-\(runID)-\(seq)"
        return PlannedCall(path: Method.releaseHold, message: m.serializedBytes(), operation: .release)
    }

    private func order(clientID: String, amountMinor: Int64, priceMinor: Int64, note: String, key: String) -> PlannedCall {
        var m = Credits_V1_CreateCreditOrderRequest()
        m.clientID = clientID
        m.amountMinor = amountMinor
        m.priceMinor = priceMinor
        m.centerID = centerID
        m.note = note
        m.idempotencyKey = key
        return PlannedCall(path: Method.createCreditOrder, message: m.serializedBytes(), operation: .purchase)
    }

    private func spend(clientID: String, amountMinor: Int64, key: String) -> PlannedCall {
        var m = Credits_V1_SpendCreditsRequest()
        m.clientID = clientID
        m.amountMinor = amountMinor
        m.reason = .service
        m.centerID = centerID
        m.idempotencyKey = key
        return PlannedCall(path: Method.spendCredits, message: m.serializedBytes(), operation: .spend)
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
    let connection = try openConnection(target: target, metadata: [("authorization", "Bearer \(token)")])
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
