import CreditsProto
import GRPCTransport
import NIOConcurrencyHelpers
import NIOCore

/// `grpc.health.v1.Health`: the serving status of the server ("") and of each
/// service, with Watch streams that hear every change.
public final class HealthService: Sendable {
    public typealias ServingStatus = Grpc_Health_V1_HealthCheckResponse.ServingStatus

    fileprivate struct Watcher {
        let call: ProtoCall<Grpc_Health_V1_HealthCheckResponse>
        let service: String
    }

    fileprivate struct State {
        var statuses: [String: ServingStatus] = [:]
        var watchers: [ObjectIdentifier: Watcher] = [:]
    }

    /// Watch streams open at once; more are refused with RESOURCE_EXHAUSTED.
    public static let maxWatchers = 10_000

    fileprivate let state = NIOLockedValueBox(State())

    public init() {}

    /// Sets the status of `service` ("" for the whole server) and tells its watchers.
    public func setStatus(_ status: ServingStatus, for service: String) {
        let toNotify = state.withLockedValue { state -> [Watcher] in
            guard state.statuses[service] != status else { return [] }
            state.statuses[service] = status
            return state.watchers.values.filter { $0.service == service }
        }
        for watcher in toNotify {
            watcher.call.send(Self.response(status))
        }
    }

    /// Sets every known service, and the server, to `status` (e.g. NOT_SERVING when draining).
    public func setAll(_ status: ServingStatus) {
        let names = state.withLockedValue { Array($0.statuses.keys) }
        for name in names { setStatus(status, for: name) }
    }

    public func status(of service: String) -> ServingStatus? {
        state.withLockedValue { $0.statuses[service] }
    }

    public var routes: [RPCRoute] {
        [
            ProtoRoute.unary(Grpc_Health_V1_Health.check) { [self] request, call in
                guard let status = status(of: request.service) else {
                    call.fail(RPCError(.notFound, "unknown service '\(request.service)'", reason: .serviceUnknown, domain: "grpc.health.v1"))
                    return
                }
                call.respond(Self.response(status))
            },
            ProtoRoute.serverStreaming(Grpc_Health_V1_Health.watch) { [self] request, call in
                watch(request.service, call)
            },
        ]
    }

    private func watch(_ service: String, _ call: ProtoCall<Grpc_Health_V1_HealthCheckResponse>) {
        let key = ObjectIdentifier(call.call)
        let admitted = state.withLockedValue { state -> ServingStatus? in
            guard state.watchers.count < Self.maxWatchers else { return nil }
            state.watchers[key] = Watcher(call: call, service: service)
            return state.statuses[service] ?? .serviceUnknown
        }
        guard let current = admitted else {
            call.fail(RPCError(.resourceExhausted, "too many health watchers", reason: .tooManyWatchers, domain: "grpc.health.v1"))
            return
        }
        call.send(Self.response(current))
        // The stream ends only when the client cancels it (or the server stops).
        call.call.eventLoop.execute {
            call.call.onCancelled { [weak self] in
                _ = self?.state.withLockedValue { $0.watchers.removeValue(forKey: key) }
            }
        }
    }

    private static func response(_ status: ServingStatus) -> Grpc_Health_V1_HealthCheckResponse {
        var response = Grpc_Health_V1_HealthCheckResponse()
        response.status = status
        return response
    }
}

extension HealthService {
    /// Ends every Watch stream (OK), e.g. when the server drains.
    public func finishWatchers() {
        let watchers = state.withLockedValue { state -> [Watcher] in
            defer { state.watchers.removeAll() }
            return Array(state.watchers.values)
        }
        for watcher in watchers { watcher.call.finish() }
    }
}
