import CreditsProto
import GRPCTransport
import NIOCore

/// `credits.testing.v1.TestService`: exercises the transport end to end
/// (method kinds, metadata, deadlines, cancellation, compression, error
/// details). Served only with `credits serve --enable-test-service`.
public enum TestService {
    typealias Service = Credits_Testing_V1_TestService
    typealias Response = Credits_Testing_V1_EchoResponse

    public static let serviceName = Service.serviceName
    /// Bounds on what a test request may ask for.
    static let maxDelayMillis: Int32 = 60_000
    static let maxResponseBytes: Int32 = 16 << 20
    static let maxStreamCount: Int32 = 100_000

    public static var routes: [RPCRoute] {
        [
            ProtoRoute.unary(Service.echo) { request, call in
                let delay = min(max(request.delayMillis, 0), maxDelayMillis)
                guard delay > 0 else { return echo(request, call) }
                let task = call.eventLoop.scheduleTask(in: .milliseconds(Int64(delay))) { echo(request, call) }
                call.call.onCancelled { task.cancel() }
            },
            ProtoRoute.serverStreaming(Service.serverStream) { request, call in
                let count = min(max(request.count, 0), maxStreamCount)
                ServerStreamer(request: request, count: count, call: call).next()
            },
            ProtoRoute.streaming(Service.clientStream) { call in Collector(call: call) },
            ProtoRoute.streaming(Service.bidiStream) { call in BidiEcho(call: call) },
        ]
    }

    static func echo(_ request: Credits_Testing_V1_EchoRequest, _ call: ProtoCall<Response>) {
        if let failure = request.failWith, failure.code != 0 {
            let code = GRPCStatusCode(rawValue: Int(failure.code)) ?? .unknown
            guard code != .ok else { return call.respond(Response()) }
            // Only a listed reason can be sent, here too: an unlisted one is the test's mistake.
            var reason: ErrorReason?
            if !failure.reason.isEmpty {
                guard let listed = ErrorReason.allKnown.first(where: { $0 != .unspecified && $0.name == failure.reason }) else {
                    return call.fail(RPCError.invalid("fail_with.reason", "is not a credits.v1.ErrorReason value"))
                }
                reason = listed
            }
            call.fail(RPCError(code, failure.message, reason: reason, domain: "credits.testing.v1"))
            return
        }
        var headers = Metadata()
        var response = Response()
        for entry in call.metadata where entry.name.hasPrefix("x-test-") {
            headers.append(entry)
            switch entry.value {
            case .string(let value): response.metadata.append("\(entry.name)=\(value)")
            case .binary(let bytes): response.metadata.append("\(entry.name)=\(bytes.map { String($0) }.joined(separator: ","))")
            }
        }
        response.metadata.sort()
        call.call.sendHeaders(headers)
        response.message = request.message
        if request.responseSize > 0 {
            let size = Int(min(request.responseSize, maxResponseBytes))
            response.payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 % 64 + 32) }
        } else {
            response.payload = request.payload
        }
        call.respond(response, trailers: headers)
    }

    /// Sends `count` responses, `interval` apart, honouring back-pressure.
    final class ServerStreamer: @unchecked Sendable {
        let request: Credits_Testing_V1_StreamRequest
        let count: Int32
        let call: ProtoCall<Response>
        var sent: Int32 = 0

        init(request: Credits_Testing_V1_StreamRequest, count: Int32, call: ProtoCall<Response>) {
            self.request = request
            self.count = count
            self.call = call
        }

        func next() {
            let server = call.call
            while sent < count {
                guard !server.isFinished else { return }
                guard server.isWritable else {
                    server.onWritable = { self.next() }
                    return
                }
                var response = Response()
                response.message = request.message
                response.count = sent
                response.payload = [UInt8](repeating: 0x61, count: Int(min(max(request.payloadSize, 0), 1 << 20)))
                call.send(response)
                sent += 1
                if request.intervalMillis > 0 && sent < count {
                    let interval = Int64(min(request.intervalMillis, maxDelayMillis))
                    server.eventLoop.scheduleTask(in: .milliseconds(interval)) { self.next() }
                    return
                }
            }
            call.finish()
        }
    }

    final class Collector: ProtoStreamHandler {
        let call: ProtoCall<Response>
        var count: Int32 = 0
        var message = ""

        init(call: ProtoCall<Response>) { self.call = call }

        func handle(_ request: Credits_Testing_V1_EchoRequest) {
            count += 1
            message += request.message
        }

        func handleEnd() {
            var response = Response()
            response.count = count
            response.message = message
            call.respond(response)
        }

        func handleCancel() {}
    }

    final class BidiEcho: ProtoStreamHandler {
        let call: ProtoCall<Response>
        var count: Int32 = 0

        init(call: ProtoCall<Response>) { self.call = call }

        func handle(_ request: Credits_Testing_V1_EchoRequest) {
            var response = Response()
            response.message = request.message
            response.payload = request.payload
            response.count = count
            count += 1
            call.send(response)
        }

        func handleEnd() { call.finish() }
        func handleCancel() {}
    }
}
