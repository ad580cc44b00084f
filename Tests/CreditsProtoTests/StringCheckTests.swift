// Strings are exact (issue 13 item 2): protobuf-c's `char *` strings end at
// the first NUL, so decoding checks every string field on the wire first and
// refuses U+0000 and invalid UTF-8, naming each field's path.

import CreditsProto
import Testing

/// Hand-made wire bytes: a length-delimited field.
private func field(_ number: UInt8, _ bytes: [UInt8]) -> [UInt8] {
    precondition(number < 16 && bytes.count < 128)
    return [number << 3 | 2, UInt8(bytes.count)] + bytes
}

private func decodeError<M: ProtoMessage>(_ type: M.Type, _ bytes: [UInt8]) -> ProtoDecodingError? {
    do {
        _ = try M(serializedBytes: bytes)
        return nil
    } catch {
        return error
    }
}

@Suite struct StringCheckTests {
    typealias Spend = Credits_V1_SpendCreditsRequest
    typealias Order = Credits_V1_CreateCreditOrderRequest

    @Test func embeddedNULIsRefusedNotTruncated() {
        let bytes = field(1, Array("victim\0xyz".utf8))
        #expect(decodeError(Spend.self, bytes) == .invalidStrings([.init(field: "client_id", problem: .containsNUL)]))
    }

    @Test func invalidUTF8IsRefusedNotReplaced() {
        for bad: [UInt8] in [[0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82], [0x61, 0x80]] {
            #expect(decodeError(Spend.self, field(5, bad)) == .invalidStrings([.init(field: "booking_ref", problem: .invalidUTF8)]), "\(bad)")
        }
    }

    @Test func validStringsDecodeExactly() throws {
        let text = "héllo 🌍 \u{7F} ok"
        let spend = try Spend(serializedBytes: field(1, Array(text.utf8)) + field(8, Array("Q-a".utf8)))
        #expect(spend.clientID == text)
        #expect(spend.idempotencyKey == "Q-a")
        // Bytes fields may hold anything.
        var any = Google_Protobuf_Any()
        any.value = [0, 0xFF, 0]
        #expect(try Google_Protobuf_Any(serializedBytes: any.serializedBytes()).value == [0, 0xFF, 0])
    }

    @Test func everyBadFieldIsNamedWithItsPath() {
        // client_id with NUL, note with bad UTF-8, scope.centers[1] with NUL.
        let scope = field(2, Array("c1".utf8)) + field(2, [0x63, 0x00])
        let bytes = field(1, [0x61, 0x00]) + field(5, [0xFE]) + field(7, scope)  // scope = 7
        #expect(decodeError(Order.self, bytes) == .invalidStrings([
            .init(field: "client_id", problem: .containsNUL),
            .init(field: "note", problem: .invalidUTF8),
            .init(field: "scope.centers[1]", problem: .containsNUL),
        ]))
    }

    @Test func malformedStaysMalformed() {
        #expect(decodeError(Spend.self, [0x0A, 0x05, 0x61]) == .malformed)
        #expect(decodeError(Spend.self, [0x0A]) == .malformed)
    }
}
