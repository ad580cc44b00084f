import CreditsProto
import Testing
@testable import creditctl

/// creditctl's schema-driven encoder and decoder, checked against the
/// generated message types (protobuf-c underneath) in both directions.
@Suite struct ValuesTests {
    let registry = SchemaRegistry.shared

    @Test func everyCommandHasItsRequestAndResponseSchema() {
        for command in Commands.all {
            #expect(registry.message(command.method.requestType) != nil, "\(command.name)")
            #expect(registry.message(command.method.responseType) != nil, "\(command.name)")
            if let positional = command.positional {
                #expect(registry.message(command.method.requestType)?.field(named: positional) != nil, "\(command.name)")
            }
            for (_, field) in command.aliases {
                #expect(registry.message(command.method.requestType)?.field(named: field) != nil, "\(command.name)")
            }
        }
        #expect(Set(Commands.all.map(\.name)).count == Commands.all.count)
    }

    @Test func flagsEncodeToWhatTheGeneratedTypeDecodes() throws {
        let schema = try #require(registry.message("credits.v1.SpendCreditsRequest"))
        let value = Value.object([("client_id", .string("alice")), ("amount_minor", .string("9007199254740993")),
                                  ("reason", .string("check-in")), ("idempotency_key", .string("k1"))])
        let bytes = try MessageEncoder(registry: registry).encode(value, as: schema)
        let decoded = try Credits_V1_SpendCreditsRequest(serializedBytes: bytes)
        #expect(decoded.clientID == "alice")
        #expect(decoded.amountMinor == 9_007_199_254_740_993)  // above 2^53: exact
        #expect(decoded.reason == .checkIn)
        #expect(decoded.idempotencyKey == "k1")
    }

    @Test func nestedRepeatedAndTimeFieldsEncode() throws {
        let schema = try #require(registry.message("credits.v1.CreateCreditOrderRequest"))
        let value = Value.object([("scope", .object([("centers", .array([.string("c1"), .string("c2")]))])),
                                  ("valid_until", .string("2030-01-02T03:04:05Z")), ("amount_minor", .int(-5))])
        let decoded = try Credits_V1_CreateCreditOrderRequest(
            serializedBytes: MessageEncoder(registry: registry).encode(value, as: schema))
        #expect(decoded.scope?.centers == ["c1", "c2"])
        #expect(decoded.validUntil?.seconds == 1_893_553_445)
        #expect(decoded.amountMinor == -5)
    }

    @Test func badValuesNameTheField() throws {
        let schema = try #require(registry.message("credits.v1.SpendCreditsRequest"))
        let encoder = MessageEncoder(registry: registry)
        #expect(throws: ValueError.self) { try encoder.encode(.object([("amount_minor", .string("ten"))]), as: schema) }
        #expect(throws: ValueError.self) { try encoder.encode(.object([("reason", .string("bogus"))]), as: schema) }
        #expect(throws: ValueError.self) { try encoder.encode(.object([("no_such_field", .string("1"))]), as: schema) }
        do {
            _ = try encoder.encode(.object([("amount_minor", .string("ten"))]), as: schema)
        } catch {
            #expect(error.description.contains("amount_minor"))
        }
    }

    @Test func responsesDecodeWithProtoNamesEveryFieldAndExactInt64() throws {
        var balance = Credits_V1_Balance()
        var summary = Credits_V1_BalanceSummary()
        summary.clientID = "alice"
        summary.availableMinor = Int64.max
        summary.heldMinor = -1
        balance.summary = summary
        var ts = Google_Protobuf_Timestamp()
        ts.seconds = 1_893_553_445
        ts.nanos = 120_000_000
        balance.asOfTime = ts
        let schema = try #require(registry.message("credits.v1.Balance"))
        let value = try MessageDecoder(registry: registry).decode(balance.serializedBytes(), as: schema)
        #expect(value["summary"]?["available_minor"] == .int(Int64.max))
        #expect(value["summary"]?["held_minor"] == .int(-1))
        #expect(value["summary"]?["total_minor"] == .int(0))  // zero values are printed
        #expect(value["lots"] == .array([]))
        #expect(value["as_of_time"] == .string("2030-01-02T03:04:05.120Z"))
        let json = JSONWriter.render(value, pretty: false)
        #expect(json.hasPrefix(#"{"summary":{"client_id":"alice","total_minor":0,"available_minor":9223372036854775807"#))
    }

    @Test func enumsDecodeByNameAndUnknownOnesByNumber() throws {
        var request = Credits_V1_SpendCreditsRequest()
        request.reason = .service
        let schema = try #require(registry.message("credits.v1.SpendCreditsRequest"))
        let value = try MessageDecoder(registry: registry).decode(request.serializedBytes(), as: schema)
        #expect(value["reason"] == .string("SPEND_REASON_SERVICE"))
        request.reason = Credits_V1_SpendReason(rawValue: 77)
        let unknown = try MessageDecoder(registry: registry).decode(request.serializedBytes(), as: schema)
        #expect(unknown["reason"] == .int(77))
    }

    @Test func jsonStringsAreEscaped() {
        #expect(JSONWriter.render(.string("a\"b\\c\n\u{1}é"), pretty: false) == #""a\"b\\c\n\u0001é""#)
    }
}
