import CreditsProto
import GRPCTransport

/// gRPC server reflection, `grpc.reflection.v1` and `grpc.reflection.v1alpha`
/// (the two versions have the same messages on the wire, so one
/// implementation with the v1 types serves both). Answers from the
/// descriptor set embedded at generation time, listing only the services
/// this server really serves.
public final class ReflectionService: Sendable {
    typealias Request = Grpc_Reflection_V1_ServerReflectionRequest
    typealias Response = Grpc_Reflection_V1_ServerReflectionResponse

    static let v1 = Grpc_Reflection_V1_ServerReflection.serverReflectionInfo
    static let v1alpha = ProtoMethod<Request, Response>(
        service: "grpc.reflection.v1alpha.ServerReflection", name: "ServerReflectionInfo",
        clientStreaming: true, serverStreaming: true)

    /// Requests answered on one stream before it is ended (a bound like any other).
    static let maxRequestsPerStream = 10_000

    private let index: DescriptorIndex
    private let servedServices: [String]

    /// `servedServices`: the full names of every service the server routes,
    /// reflection included.
    public init(servedServices: [String]) throws {
        index = try DescriptorIndex(fileDescriptorSet: ProtoRegistry.fileDescriptorSet)
        self.servedServices = servedServices.sorted()
        for service in servedServices {
            precondition(index.file(containingSymbol: service) != nil, "service \(service) is not in the embedded descriptor set")
        }
    }

    public static let serviceNames = [v1.service, v1alpha.service]

    public var routes: [RPCRoute] {
        [Self.v1, Self.v1alpha].map { method in
            ProtoRoute.streaming(method) { [self] call in StreamHandler(service: self, call: call) }
        }
    }

    final class StreamHandler: ProtoStreamHandler {
        let service: ReflectionService
        let call: ProtoCall<Response>
        var answered = 0

        init(service: ReflectionService, call: ProtoCall<Response>) {
            self.service = service
            self.call = call
        }

        func handle(_ request: Request) {
            answered += 1
            guard answered <= ReflectionService.maxRequestsPerStream else {
                call.fail(RPCError(.resourceExhausted, "more than \(ReflectionService.maxRequestsPerStream) requests on one reflection stream", reason: .tooManyRequests, domain: "grpc.reflection"))
                return
            }
            call.send(service.answer(request))
        }

        func handleEnd() { call.finish() }
        func handleCancel() {}
    }

    func answer(_ request: Request) -> Response {
        var response = Response()
        response.validHost = request.host
        response.originalRequest = request
        switch request.messageRequest {
        case .listServices:
            var list = Grpc_Reflection_V1_ListServiceResponse()
            list.service = servedServices.map { name in
                var s = Grpc_Reflection_V1_ServiceResponse()
                s.name = name
                return s
            }
            response.messageResponse = .listServicesResponse(list)
        case .fileByFilename(let name):
            response.messageResponse = files(index.files[name], notFound: "file '\(name)' not found")
        case .fileContainingSymbol(let symbol):
            response.messageResponse = files(index.file(containingSymbol: symbol), notFound: "symbol '\(symbol)' not found")
        case .fileContainingExtension(let ext):
            response.messageResponse = error(.notFound, "extension \(ext.extensionNumber) of '\(ext.containingType)' not found")
        case .allExtensionNumbersOfType(let type):
            if index.file(containingSymbol: type) != nil {
                var numbers = Grpc_Reflection_V1_ExtensionNumberResponse()
                numbers.baseTypeName = type
                response.messageResponse = .allExtensionNumbersResponse(numbers)
            } else {
                response.messageResponse = error(.notFound, "type '\(type)' not found")
            }
        case nil:
            response.messageResponse = error(.invalidArgument, "no message_request set")
        }
        return response
    }

    private func files(_ file: DescriptorIndex.File?, notFound: String) -> Response.OneOf_MessageResponse {
        guard let file else { return error(.notFound, notFound) }
        var out = Grpc_Reflection_V1_FileDescriptorResponse()
        out.fileDescriptorProto = index.withDependencies(file).map(\.bytes)
        return .fileDescriptorResponse(out)
    }

    private func error(_ code: GRPCStatusCode, _ message: String) -> Response.OneOf_MessageResponse {
        var e = Grpc_Reflection_V1_ErrorResponse()
        e.errorCode = Int32(code.rawValue)
        e.errorMessage = message
        return .errorResponse(e)
    }
}
