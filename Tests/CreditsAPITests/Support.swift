import CreditsAPI
import CreditsProto
import Foundation
import GRPCServices
import GRPCTransport
import Ledger
import NIOCore
import NIOPosix
import Testing

/// The ledger's time in the tests: fixed until a test moves it.
final class TestLedgerClock: LedgerClock, @unchecked Sendable {
    private let lock = NSLock()
    private var now: Int64
    init(_ start: Int64 = 1_800_000_000_000_000) { now = start }
    func nowMicros() -> Int64 { lock.lock(); defer { lock.unlock() }; return now }
    func advance(seconds: Int64) { lock.lock(); now += seconds * 1_000_000; lock.unlock() }
}

/// The API layer's own time (its caches) in the tests.
final class TestAPIClock: APIClock, @unchecked Sendable {
    private let lock = NSLock()
    private var now: UInt64 = 1_000_000_000
    func uptimeNanos() -> UInt64 { lock.lock(); defer { lock.unlock() }; return now }
    func advance(seconds: UInt64) { lock.lock(); now += seconds * 1_000_000_000; lock.unlock() }
}

/// What a call answered, as a client sees it: the status, ErrorInfo and
/// BadRequest of its details, and the response messages' bytes.
struct Reply<Response: ProtoMessage> {
    let status: GRPCStatus
    /// The serialized response messages, as sent.
    let messages: [[UInt8]]

    var code: GRPCStatusCode { status.code }

    /// The one response message of an OK unary call.
    func message(sourceLocation: SourceLocation = #_sourceLocation) throws -> Response {
        #expect(status.code == .ok, "status \(status)", sourceLocation: sourceLocation)
        #expect(messages.count == 1, "\(messages.count) messages", sourceLocation: sourceLocation)
        guard status.code == .ok, let bytes = messages.first else { throw UnexpectedReply(status: status) }
        return try Response(serializedBytes: bytes)
    }

    private var details: Google_Rpc_Status? {
        status.details.flatMap { try? Google_Rpc_Status(serializedBytes: $0) }
    }

    /// google.rpc.ErrorInfo.reason (e.g. "INSUFFICIENT_CREDITS"), nil without one.
    var reason: String? {
        details?.details.lazy.compactMap { try? $0.unpack(Google_Rpc_ErrorInfo.self) }.first?.reason
    }

    var errorMetadata: [String: String] {
        details?.details.lazy.compactMap { try? $0.unpack(Google_Rpc_ErrorInfo.self) }.first?.metadata ?? [:]
    }

    /// The fields named by google.rpc.BadRequest.
    var violatedFields: [String] {
        details?.details.lazy.compactMap { try? $0.unpack(Google_Rpc_BadRequest.self) }.first?.fieldViolations.map(\.field) ?? []
    }
}

struct UnexpectedReply: Error {
    let status: GRPCStatus
}

/// The credits services over a real ledger in a temporary directory, called
/// in memory: each call is an `InMemoryCall` of the service's route (no
/// connection, no socket), on an event loop of its own like a connection's.
/// Test clocks for the ledger and the API layer.
final class APIHarness {
    static let adminToken = "api-tests-admin-token-0123456789"
    let ledgerClock = TestLedgerClock()
    let apiClock = TestAPIClock()
    let directory: URL
    let ledger: Ledger
    let api: CreditsAPI
    let router: GRPCRouter
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    /// A reader of the test's own, for the ledger's state after the calls.
    let reader: LedgerReader

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("credits-api-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var options = Ledger.Options()
        options.clock = ledgerClock
        options.maintenanceIntervalMillis = 3_600_000  // no background maintenance during a test
        options.synchronousFull = false
        ledger = try Ledger(path: directory.appendingPathComponent("credits.sqlite").path, options: options)
        api = CreditsAPI(ledger: ledger, adminToken: Self.adminToken, clock: apiClock)
        router = GRPCRouter(api.routes)
        reader = try ledger.makeReader()
    }

    func finish() {
        api.endStreams()
        try? group.syncShutdownGracefully()
        ledger.close()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Calls a unary method with `token` (nil: no authorization header).
    func call<Request, Response>(_ method: ProtoMethod<Request, Response>, _ request: Request, token: String?,
                                 metadata: [(String, String)] = []) throws -> Reply<Response> {
        let route = try #require(router.route(for: method.path), "no route \(method.path)")
        var headers = Metadata()
        if let token { headers.add("authorization", "Bearer \(token)") }
        for (name, value) in metadata { headers.add(name, value) }
        let call = InMemoryCall(route: route, metadata: headers, eventLoop: group.next())
        call.send(ByteBuffer(bytes: request.serializedBytes()))
        call.endRequest()
        let recorded = try call.response.wait()
        let status = try #require(recorded.status, "the call ended without a status")
        return Reply(status: status, messages: recorded.messages.map { Array($0.readableBytesView) })
    }

    // MARK: The ledger's state

    func balance(_ tenant: String, _ client: String) throws -> BalanceSummary {
        try reader.balance(tenant: tenant, client: client).summary
    }

    func lastSeq(_ tenant: String) throws -> Int64 {
        try #require(try reader.tenant(tenant)).lastSeq
    }

    var now: Int64 { ledgerClock.nowMicros() }

    /// A timestamp `seconds` from the ledger's now.
    func timestamp(in seconds: Int64) -> Google_Protobuf_Timestamp {
        var ts = Google_Protobuf_Timestamp()
        ts.seconds = now / 1_000_000 + seconds
        return ts
    }
}

/// A tenant made through AdminService, with a staff and an app key.
struct TestTenant {
    let id: String
    let staff: String
    let app: String

    init(_ h: APIHarness, id: String = "gym", currency: String = "EUR") throws {
        self.id = id
        var create = Credits_V1_CreateTenantRequest()
        create.tenantID = id
        create.name = "Gym \(id)"
        create.currency = currency
        _ = try h.call(Credits_V1_AdminService.createTenant, create, token: APIHarness.adminToken).message()
        staff = try Self.key(h, id, .staff)
        app = try Self.key(h, id, .app)
    }

    private static func key(_ h: APIHarness, _ tenant: String, _ role: Credits_V1_Role) throws -> String {
        var request = Credits_V1_CreateApiKeyRequest()
        request.tenantID = tenant
        request.role = role
        request.label = "tests"
        let token = try h.call(Credits_V1_AdminService.createApiKey, request, token: APIHarness.adminToken).message().token
        #expect(!token.isEmpty)
        return token
    }
}
