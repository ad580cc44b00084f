// Encoding and decoding through protobuf-c. Byte vectors were produced once
// with the Python protobuf package (upb) from the same .proto files
// (SerializeToString(deterministic=True)).

import CreditsProto
import NIOCore
import Testing

typealias Scalars = Credits_Testing_V1_CodecScalars
typealias Repeated = Credits_Testing_V1_CodecRepeated
typealias CodecMessage = Credits_Testing_V1_CodecMessage
typealias Node = Credits_Testing_V1_CodecMessage.Node

@Suite struct ScalarTests {
    static let minVector = "0880808080f8ffffffff01108080808080808080800118ffffffff0f20ffffffffffffffffff0128ffffffff0f30ffffffffffffffffff013dffffffff41ffffffffffffffff4d000000805100000000000000805d0000c0bf61182d4454fb2109406801720b68c3a96c6c6f20f09f8c8d7a04000100ff800103"
    static let maxVector = "08ffffffff0710ffffffffffffffff7f1801200128feffffff0f30feffffffffffffffff013d010000004101000000000000004dffffff7f51ffffffffffffff7f"

    static var minScalars: Scalars {
        Scalars.with {
            $0.fInt32 = .min; $0.fInt64 = .min; $0.fUint32 = .max; $0.fUint64 = .max
            $0.fSint32 = .min; $0.fSint64 = .min; $0.fFixed32 = .max; $0.fFixed64 = .max
            $0.fSfixed32 = .min; $0.fSfixed64 = .min; $0.fFloat = -1.5; $0.fDouble = 3.141592653589793
            $0.fBool = true; $0.fString = "héllo 🌍"; $0.fBytes = [0, 1, 0, 0xff]; $0.fColor = .blueGreen
        }
    }

    static var maxScalars: Scalars {
        Scalars.with {
            $0.fInt32 = .max; $0.fInt64 = .max; $0.fSint32 = .max; $0.fSint64 = .max
            $0.fSfixed32 = .max; $0.fSfixed64 = .max
            $0.fUint32 = 1; $0.fUint64 = 1; $0.fFixed32 = 1; $0.fFixed64 = 1
        }
    }

    @Test func encodesLimitsLikePython() {
        #expect(hex(Self.minScalars.serializedBytes()) == Self.minVector)
        #expect(hex(Self.maxScalars.serializedBytes()) == Self.maxVector)
        #expect(hex(Scalars.with { $0.fInt32 = -1 }.serializedBytes()) == "08ffffffffffffffffff01")
    }

    @Test func decodesPythonVectors() throws {
        #expect(try Scalars(serializedBytes: hex(Self.minVector)) == Self.minScalars)
        #expect(try Scalars(serializedBytes: hex(Self.maxVector)) == Self.maxScalars)
        #expect(try Scalars(serializedBytes: hex("08ffffffffffffffffff01")).fInt32 == -1)
    }

    @Test func roundTripsLimits() throws {
        #expect(try roundTrip(Self.minScalars) == Self.minScalars)
        #expect(try roundTrip(Self.maxScalars) == Self.maxScalars)
        let m = Scalars.with {
            $0.fFloat = .infinity; $0.fDouble = -.infinity; $0.fString = "\u{7f}ascii"; $0.fBytes = [0]
            $0.fColor = Credits_Testing_V1_CodecColor(rawValue: -5)
        }
        #expect(try roundTrip(m) == m)
        let nan = try roundTrip(Scalars.with { $0.fDouble = .nan; $0.fFloat = .nan })
        #expect(nan.fDouble.isNaN && nan.fFloat.isNaN)
    }

    @Test func defaultsEncodeToNothing() throws {
        #expect(Scalars().serializedBytes() == [])
        #expect(Scalars().serializedSize == 0)
        #expect(try Scalars(serializedBytes: [UInt8]()) == Scalars())
        #expect(try Scalars(serializedBytes: UnsafeRawBufferPointer(start: nil, count: 0)) == Scalars())
    }

    @Test func serializedSizeMatches() {
        #expect(Self.minScalars.serializedSize == hex(Self.minVector).count)
    }

    // protobuf-c limits, documented: strings are NUL-terminated C strings and
    // a negative zero float/double is "zeroish" (not encoded).
    @Test func protobufCQuirks() throws {
        #expect(try roundTrip(Scalars.with { $0.fString = "a\u{0}b" }).fString == "a")
        #expect(Scalars.with { $0.fDouble = -0.0 }.serializedBytes() == [])
        // Decoding is strict where protobuf-c is not: invalid UTF-8 or a NUL
        // in a string is refused (see StringCheckTests), never repaired or cut.
        #expect(throws: ProtoDecodingError.invalidStrings([.init(field: "f_string", problem: .invalidUTF8)])) {
            try Scalars(serializedBytes: hex("7202ff61"))
        }
        #expect(throws: ProtoDecodingError.invalidStrings([.init(field: "f_string", problem: .containsNUL)])) {
            try Scalars(serializedBytes: hex("72036100" + "62"))
        }
    }
}

@Suite struct RepeatedTests {
    static let vector = "0a1a01ffffffffffffffffff01ffffffff0780808080f8ffffffff0112140080808080808080808001ffffffffffffffff7f1a0600ffffffff0f220bffffffffffffffffff01002a070102ffffffff0f320b01feffffffffffffffff013a0807000000ffffffff420808000000000000004a04f7ffffff5208f6ffffffffffffff5a080000003f000080be62109c7500883ce4377e00000000000004c06a0301000172007201617202c3bc7a007a010082010300014d8a010208018a01009001039001fdffffffffffffffff01"

    static var value: Repeated {
        Repeated.with {
            $0.rInt32 = [1, -1, .max, .min]; $0.rInt64 = [0, .min, .max]
            $0.rUint32 = [0, .max]; $0.rUint64 = [.max, 0]; $0.rSint32 = [-1, 1, .min]
            $0.rSint64 = [-1, .max]; $0.rFixed32 = [7, .max]; $0.rFixed64 = [8]
            $0.rSfixed32 = [-9]; $0.rSfixed64 = [-10]; $0.rFloat = [0.5, -0.25]; $0.rDouble = [1e300, -2.5]
            $0.rBool = [true, false, true]; $0.rString = ["", "a", "ü"]; $0.rBytes = [[], [0]]
            $0.rColor = [.unspecified, .red, Credits_Testing_V1_CodecColor(rawValue: 77)]
            $0.rMessage = [Scalars.with { $0.fInt32 = 1 }, Scalars()]
            $0.rUnpackedInt32 = [3, -3]
        }
    }

    @Test func encodesPackedLikePython() {
        #expect(hex(Self.value.serializedBytes()) == Self.vector)
    }

    @Test func decodesPythonVector() throws {
        #expect(try Repeated(serializedBytes: hex(Self.vector)) == Self.value)
    }

    @Test func decodesUnpackedEncodingOfPackedField() throws {
        // r_int32 (packed) sent unpacked, r_unpacked_int32 sent packed: both accepted.
        let m = try Repeated(serializedBytes: hex("0801087f" + "920102" + "0304"))
        #expect(m.rInt32 == [1, 127])
        #expect(m.rUnpackedInt32 == [3, 4])
    }

    @Test func largeCountsUseHeapChunks() throws {
        let m = Repeated.with {
            $0.rInt64 = (0..<20_000).map { Int64($0) * 1_000_003 }
            $0.rString = (0..<3_000).map { "s\($0)" }
            $0.rBytes = [[UInt8](repeating: 0xab, count: 1 << 20)]
            $0.rMessage = (0..<2_000).map { i in Scalars.with { $0.fString = String(repeating: "x", count: i % 50) } }
        }
        #expect(try roundTrip(m) == m)
    }
}

@Suite struct MessageTests {
    static let vector = "080212130a04726f6f7410011a090a056368696c6420011a040a026e311a02100222060a016112013122060a016212013222070a02c3a91201332a0f08ffffffffffffffffff01120210072a0a080512060a04666976653204080110013204080010023a0808ffffffff0f10013a040801100242070a0178120200014a0b080511000000000000f83f4a0b080411000000000000e0bf52026869a201080880e2cfaa061005aa01020803b201390a33747970652e676f6f676c65617069732e636f6d2f637265646974732e74657374696e672e76312e436f6465635363616c61727312020809d0012ada01026832e2010175e8014df201026801fa01030a0105"

    static var value: CodecMessage {
        CodecMessage.with {
            $0.kind = .beta
            $0.node = Node.with { n in
                n.name = "root"; n.value = 1
                n.child = Node.with { $0.name = "child"; $0.kind = .alpha }
            }
            $0.nodes = [Node.with { $0.name = "n1" }, Node.with { $0.value = 2 }]
            $0.labels = ["b": "2", "a": "1", "é": "3"]
            $0.nodesByID = [5: Node.with { $0.name = "five" }, -1: Node.with { $0.value = 7 }]
            $0.flags = [true: 1, false: 2]
            $0.kinds = [1: .beta, .max: .alpha]
            $0.blobs = ["x": [0, 1]]
            $0.weights = [-3: 1.5, 2: -0.5]
            $0.choice = .text("hi")
            $0.at = Google_Protobuf_Timestamp.with { $0.seconds = 1_700_000_000; $0.nanos = 5 }
            $0.timeout = Google_Protobuf_Duration.with { $0.seconds = 3 }
            $0.extras = [Google_Protobuf_Any(packing: Scalars.with { $0.fInt32 = 9 })]
            $0.class = 42
            $0.protocol = "h2"
            $0.typeURL = "u"
            $0.requestID = 77
            $0.scalars = Scalars.with { $0.fBool = true }
            $0.repeated = Repeated.with { $0.rInt32 = [5] }
        }
    }

    @Test func decodesPythonVector() throws {
        let m = try CodecMessage(serializedBytes: hex(Self.vector))
        #expect(m == Self.value)
        #expect(m.node?.child?.name == "child")
        #expect(m.node?.child?.child == nil)
    }

    @Test func roundTrips() throws {
        #expect(try roundTrip(Self.value) == Self.value)
    }

    @Test func encodingIsDeterministic() {
        // Maps are encoded in key order whatever the dictionary's order.
        var a = Self.value, b = Self.value
        a.labels = [:]; b.labels = [:]
        for i in 0..<200 { a.labels["k\(i)"] = "v" }
        for i in (0..<200).reversed() { b.labels["k\(i)"] = "v" }
        #expect(a.serializedBytes() == b.serializedBytes())
        #expect(Self.value.serializedBytes() == Self.value.serializedBytes())
    }

    @Test func mapsInKeyOrder() {
        // protobuf-c omits zero keys/values inside entries (proto3 NONE label); decoders accept that.
        let m = CodecMessage.with { $0.labels = ["b": "2", "a": "1"]; $0.weights = [2: 1, -3: 1] }
        #expect(hex(m.serializedBytes()) == "22060a016112013122060a0162120132" + "4a0b080511000000000000f03f4a0b080411000000000000f03f")
    }

    @Test func mapWithDefaultEntries() throws {
        let m = CodecMessage.with {
            $0.labels = ["": ""]; $0.flags = [false: 0]; $0.nodesByID = [0: Node()]; $0.blobs = ["": []]
        }
        #expect(try roundTrip(m) == m)
        // An entry with neither key nor value ("2200") is the default key and value.
        #expect(try CodecMessage(serializedBytes: hex("2200")).labels == ["": ""])
        // Missing message value decodes as the empty message.
        #expect(try CodecMessage(serializedBytes: hex("2a020807")).nodesByID == [7: Node()])
    }

    @Test func oneofMembersAreEncodedEvenWhenDefault() throws {
        let cases: [(CodecMessage.OneOf_Choice, String)] = [
            (.text(""), "5200"), (.number(0), "5800"), (.nodeChoice(Node()), "6200"),
            (.kindChoice(.unspecified), "6800"), (.blobChoice([]), "7200"), (.flagChoice(false), "7800"),
        ]
        for (choice, vector) in cases {
            let m = CodecMessage.with { $0.choice = choice }
            #expect(hex(m.serializedBytes()) == vector)
            #expect(try CodecMessage(serializedBytes: hex(vector)).choice == choice)
        }
        #expect(try roundTrip(CodecMessage.with { $0.choice = .nodeChoice(Node.with { $0.name = "n" }) }).choice
            == .nodeChoice(Node.with { $0.name = "n" }))
        #expect(try roundTrip(CodecMessage.with { $0.choice = .number(.min) }).choice == .number(.min))
        // The last member on the wire wins.
        #expect(try CodecMessage(serializedBytes: hex("5201615805")).choice == .number(5))
        #expect(CodecMessage().choice == nil)
    }

    @Test func recursiveMessagesNest() throws {
        var node = Node.with { $0.name = "leaf" }
        for i in 0..<200 { node = Node.with { $0.value = Int32(i); $0.child = node } }
        let m = CodecMessage.with { $0.node = node }
        #expect(try roundTrip(m) == m)
    }

    @Test func keywordFields() throws {
        let m = try roundTrip(CodecMessage.with { $0.class = 1; $0.protocol = "p"; $0.typeURL = "t"; $0.requestID = 2 })
        #expect(m.class == 1 && m.protocol == "p" && m.typeURL == "t" && m.requestID == 2)
    }
}

@Suite struct EnumTests {
    typealias Status = Grpc_Health_V1_HealthCheckResponse.ServingStatus

    @Test func names() {
        #expect(Status.serving.rawValue == 1)
        #expect(Status.notServing.name == "NOT_SERVING")
        #expect(Status.allKnown == [.unknown, .serving, .notServing, .serviceUnknown])
        #expect(Status(rawValue: 42).name == nil)
        #expect(Status(rawValue: 42).description == "42")
        #expect(Status.serviceUnknown.description == "SERVICE_UNKNOWN")
        #expect(Status() == .unknown)
        #expect(Credits_Testing_V1_CodecColor.unspecified.name == "CODEC_COLOR_UNSPECIFIED")
        #expect(Credits_Testing_V1_CodecColor.codecColor2D.rawValue == 4)
        #expect(Status.protoEnumName == "grpc.health.v1.HealthCheckResponse.ServingStatus")
    }

    @Test func healthVectors() throws {
        let resp = Grpc_Health_V1_HealthCheckResponse.with { $0.status = .serving }
        #expect(hex(resp.serializedBytes()) == "0801")
        #expect(try Grpc_Health_V1_HealthCheckResponse(serializedBytes: hex("0801")) == resp)
        let req = Grpc_Health_V1_HealthCheckRequest.with { $0.service = "credits" }
        #expect(hex(req.serializedBytes()) == "0a0763726564697473")
    }

    @Test func unknownValuesArePreserved() throws {
        let m = try Grpc_Health_V1_HealthCheckResponse(serializedBytes: hex("0863"))
        #expect(m.status.rawValue == 99)
        #expect(hex(m.serializedBytes()) == "0863")
        let negative = Grpc_Health_V1_HealthCheckResponse.with { $0.status = Status(rawValue: -1) }
        #expect(try roundTrip(negative).status.rawValue == -1)
    }
}

@Suite struct MalformedTests {
    static func expectMalformed<M: ProtoMessage>(_ type: M.Type, _ vector: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: ProtoDecodingError.malformed, sourceLocation: sourceLocation) { try M(serializedBytes: hex(vector)) }
    }

    @Test func truncatedVarint() {
        Self.expectMalformed(Scalars.self, "0880")
        Self.expectMalformed(Scalars.self, "08")
        Self.expectMalformed(Scalars.self, "80")  // truncated tag
    }

    @Test func wrongWireType() {
        Self.expectMalformed(Grpc_Health_V1_HealthCheckRequest.self, "0801")  // string field as varint
        Self.expectMalformed(Scalars.self, "0d01000000")  // int32 field as fixed32
        Self.expectMalformed(CodecMessage.self, "0a01")   // enum field as length-delimited
        Self.expectMalformed(CodecMessage.self, "1001")   // message field as varint
    }

    @Test func lengthPastEnd() {
        Self.expectMalformed(Grpc_Health_V1_HealthCheckRequest.self, "0a0561")
        Self.expectMalformed(Repeated.self, "0a0501")  // packed array past end
        Self.expectMalformed(Scalars.self, "7affffffff0f00")  // bytes length 4 GiB
        Self.expectMalformed(Scalars.self, "3d0100")   // fixed32 truncated
    }

    @Test func malformedNestedMessage() {
        Self.expectMalformed(CodecMessage.self, "12020a05")  // node.name length past the node
    }

    @Test func malformedThroughEveryEntryPoint() {
        let bad = hex("0a0561")
        #expect(throws: ProtoDecodingError.malformed) { try Grpc_Health_V1_HealthCheckRequest(buffer: ByteBuffer(bytes: bad)) }
        #expect(throws: ProtoDecodingError.malformed) {
            try bad.withUnsafeBytes { try Grpc_Health_V1_HealthCheckRequest(serializedBytes: $0) }
        }
        #expect(throws: ProtoDecodingError.malformed) { try Grpc_Health_V1_HealthCheckRequest(serializedBytes: bad[...]) }
    }

    @Test func unknownFieldsAreSkipped() throws {
        // field 99 varint, field 100 length-delimited, then service.
        let m = try Grpc_Health_V1_HealthCheckRequest(serializedBytes: hex("98060122020000" + "0a0178"))
        #expect(m.service == "x")
    }
}

@Suite struct WellKnownAndServiceTests {
    static let statusVector = "08091214696e73756666696369656e7420637265646974731a7d0a28747970652e676f6f676c65617069732e636f6d2f676f6f676c652e7270632e4572726f72496e666f12510a14494e53554646494349454e545f43524544495453120a637265646974732e76311a150a0e72657175697265645f6d696e6f7212033730301a160a0f617661696c61626c655f6d696e6f7212033530301a4f0a29747970652e676f6f676c65617069732e636f6d2f676f6f676c652e7270632e4261645265717565737412220a200a0c616d6f756e745f6d696e6f7212106d75737420626520706f7369746976651a360a28747970652e676f6f676c65617069732e636f6d2f676f6f676c652e7270632e5265747279496e666f120a0a0808011080cab5ee01"

    static let errorInfo = Google_Rpc_ErrorInfo.with {
        $0.reason = "INSUFFICIENT_CREDITS"; $0.domain = "credits.v1"
        $0.metadata = ["available_minor": "500", "required_minor": "700"]
    }
    static let badRequest = Google_Rpc_BadRequest.with {
        $0.fieldViolations = [.with { $0.field = "amount_minor"; $0.description_p = "must be positive" }]
    }
    static let retryInfo = Google_Rpc_RetryInfo.with {
        $0.retryDelay = .with { $0.seconds = 1; $0.nanos = 500_000_000 }
    }

    @Test func anyPacksAndUnpacks() throws {
        let any = Google_Protobuf_Any(packing: Self.errorInfo)
        #expect(any.typeURL == "type.googleapis.com/google.rpc.ErrorInfo")
        #expect(any.value == Self.errorInfo.serializedBytes())
        #expect(any.isA(Google_Rpc_ErrorInfo.self))
        #expect(try any.unpack(Google_Rpc_ErrorInfo.self) == Self.errorInfo)
        #expect(try any.unpack(Google_Rpc_BadRequest.self) == nil)
        let custom = Google_Protobuf_Any(packing: Self.badRequest, typeURLPrefix: "example.com/types")
        #expect(custom.typeURL == "example.com/types/google.rpc.BadRequest")
        #expect(try custom.unpack(Google_Rpc_BadRequest.self) == Self.badRequest)
        var broken = any
        broken.value = hex("0a05")
        #expect(throws: ProtoDecodingError.malformed) { try broken.unpack(Google_Rpc_ErrorInfo.self) }
    }

    @Test func statusWithDetailsFromPython() throws {
        let status = try Google_Rpc_Status(serializedBytes: hex(Self.statusVector))
        #expect(status.code == 9)
        #expect(status.message == "insufficient credits")
        #expect(status.details.count == 3)
        #expect(try status.details[0].unpack(Google_Rpc_ErrorInfo.self) == Self.errorInfo)
        #expect(try status.details[1].unpack(Google_Rpc_BadRequest.self) == Self.badRequest)
        #expect(try status.details[2].unpack(Google_Rpc_RetryInfo.self) == Self.retryInfo)
        #expect(try ProtoRegistry.unpack(status.details[2]) as? Google_Rpc_RetryInfo == Self.retryInfo)
        #expect(try roundTrip(status) == status)
    }

    @Test func registry() throws {
        #expect(ProtoRegistry.messageType(named: "google.rpc.ErrorInfo") == Google_Rpc_ErrorInfo.self)
        #expect(ProtoRegistry.messageType(named: "grpc.health.v1.HealthCheckResponse") == Grpc_Health_V1_HealthCheckResponse.self)
        #expect(ProtoRegistry.messageType(named: "credits.testing.v1.CodecMessage.Node") == Node.self)
        #expect(ProtoRegistry.messageType(named: "google.protobuf.Empty") == Google_Protobuf_Empty.self)
        #expect(ProtoRegistry.messageType(named: "google.rpc.ErrorInfo.MetadataEntry") == nil)
        #expect(try ProtoRegistry.unpack(Google_Protobuf_Any.with { $0.typeURL = "x/no.Such" }) == nil)
        // Every type: its descriptor matches the generated field indices (checked
        // on first use), the empty encoding decodes, and the default encodes empty.
        #expect(ProtoRegistry.allMessageTypes.count >= 40)
        for type in ProtoRegistry.allMessageTypes {
            #expect(type._protoDescriptor.fullName == type.protoMessageName)
            let empty = try type.init(serializedBytes: [UInt8]())
            #expect(empty.serializedBytes() == [])
        }
    }

    @Test func fileDescriptorSetIsEmbedded() {
        let set = ProtoRegistry.fileDescriptorSet
        #expect(set.count > 1000)
        #expect(set.first == 0x0a)  // FileDescriptorSet.file, length-delimited
        #expect(hex(set).contains(hex(Array("grpc/health/v1/health.proto".utf8))))
    }

    @Test func methods() {
        let m = Credits_Testing_V1_TestService.bidiStream
        #expect(m.path == "/credits.testing.v1.TestService/BidiStream")
        #expect(m.clientStreaming && m.serverStreaming)
        #expect(Credits_Testing_V1_TestService.serviceName == "credits.testing.v1.TestService")
        #expect(Grpc_Health_V1_Health.watch.path == "/grpc.health.v1.Health/Watch")
        #expect(!Grpc_Health_V1_Health.check.serverStreaming)
        #expect(Grpc_Reflection_V1_ServerReflection.serverReflectionInfo.path
            == "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        #expect(Credits_Testing_V1_TestService.allMethods.map(\.name) == ["Echo", "ServerStream", "ClientStream", "BidiStream"])
        #expect(Credits_Testing_V1_TestService.echo.info.requestType == "credits.testing.v1.EchoRequest")
    }

    @Test func reflectionVectors() throws {
        let req = Grpc_Reflection_V1_ServerReflectionRequest.with {
            $0.host = "h"
            $0.messageRequest = .fileContainingExtension(.with { $0.containingType = "T"; $0.extensionNumber = 5 })
        }
        #expect(hex(req.serializedBytes()) == "0a01682a050a01541005")
        #expect(try Grpc_Reflection_V1_ServerReflectionRequest(serializedBytes: hex("0a01682a050a01541005")) == req)

        let respVector = "0a016812033a012a323b0a170a15677270632e6865616c74682e76312e4865616c74680a200a1e637265646974732e74657374696e672e76312e5465737453657276696365"
        let resp = Grpc_Reflection_V1_ServerReflectionResponse.with {
            $0.validHost = "h"
            $0.originalRequest = .with { $0.messageRequest = .listServices("*") }
            $0.messageResponse = .listServicesResponse(.with {
                $0.service = [.with { $0.name = "grpc.health.v1.Health" }, .with { $0.name = "credits.testing.v1.TestService" }]
            })
        }
        #expect(hex(resp.serializedBytes()) == respVector)
        #expect(try Grpc_Reflection_V1_ServerReflectionResponse(serializedBytes: hex(respVector)) == resp)
        let files = Grpc_Reflection_V1alpha_FileDescriptorResponse.with { $0.fileDescriptorProto = [ProtoRegistry.fileDescriptorSet, []] }
        #expect(try roundTrip(files) == files)
    }

    @Test func echoVectors() throws {
        let echo = Credits_Testing_V1_EchoRequest.with {
            $0.message = "ping"; $0.payload = [0, 0, 1]; $0.delayMillis = -5; $0.responseSize = 3
            $0.failWith = .with { $0.code = 5; $0.message = "nope"; $0.reason = "R" }
        }
        let vector = "0a0470696e67120300000118fbffffffffffffffff01220b080512046e6f70651a01522803"
        #expect(hex(echo.serializedBytes()) == vector)
        #expect(try Credits_Testing_V1_EchoRequest(serializedBytes: hex(vector)) == echo)
        let resp = Credits_Testing_V1_EchoResponse.with { $0.message = "pong"; $0.count = 2; $0.metadata = ["a: b", "", "c"] }
        #expect(hex(resp.serializedBytes()) == "0a04706f6e6718022204613a20622200220163")
        #expect(try roundTrip(Google_Protobuf_Empty()) == Google_Protobuf_Empty())
    }
}

@Suite struct ByteBufferTests {
    @Test func serializeAppendsAndDecodes() throws {
        let m = MessageTests.value
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        buffer.writeBytes([0xde, 0xad])
        let written = m.serialize(into: &buffer)
        #expect(written == m.serializedSize)
        #expect(buffer.readableBytes == 2 + written)
        #expect(Array(buffer.readableBytesView.dropFirst(2)) == m.serializedBytes())
        buffer.moveReaderIndex(forwardBy: 2)
        #expect(try CodecMessage(buffer: buffer) == m)
        #expect(buffer.readableBytes == written)  // not consumed
    }

    @Test func emptyMessageWritesNothing() throws {
        var buffer = ByteBuffer()
        #expect(Google_Protobuf_Empty().serialize(into: &buffer) == 0)
        #expect(buffer.readableBytes == 0)
        #expect(try Google_Protobuf_Empty(buffer: buffer) == Google_Protobuf_Empty())
    }

    @Test func decodesFromSlice() throws {
        var buffer = ByteBuffer(bytes: hex("ff" + "0a0763726564697473" + "ff"))
        buffer.moveReaderIndex(forwardBy: 1)
        let slice = buffer.readSlice(length: 9)!
        #expect(try Grpc_Health_V1_HealthCheckRequest(buffer: slice).service == "credits")
    }
}
