import Testing
@testable import GRPCTransport

/// The scanner in front of nghttp2: bytes in, runs for nghttp2 out.
@Suite struct InboundFrameScannerTests {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(_ type: UInt8, _ flags: UInt8, _ stream: UInt32, _ payload: [UInt8] = []) -> [UInt8] {
        let n = payload.count
        return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags,
                UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    static let ack = frame(0x4, 0x1, 0)
    static func headers(_ stream: UInt32) -> [UInt8] { frame(0x1, 0x4, stream, [0x82]) }

    /// Feeds `chunks` one read at a time; returns what nghttp2 would see and the last verdict.
    static func run(_ scanner: inout InboundFrameScanner, _ chunks: [[UInt8]]) -> ([UInt8], InboundFrameScanner.Verdict) {
        var passed: [UInt8] = []
        var verdict = InboundFrameScanner.Verdict.pass
        for chunk in chunks where verdict == .pass {
            verdict = chunk.withUnsafeBytes { raw in
                (try? scanner.scan(raw) { run in passed += run }) ?? .pass
            }
        }
        return (passed, verdict)
    }

    @Test func theSecondSettingsAckIsWithheldAndEverythingElsePasses() {
        let settings = Self.frame(0x4, 0, 0, [0, 4, 0, 1, 0, 0])
        let data = Self.frame(0x0, 0x1, 1, [0, 0, 0, 0, 0])
        let input = Self.preface + settings + Self.ack + Self.headers(1) + Self.ack + data + Self.ack
        let expected = Self.preface + settings + Self.ack + Self.headers(1) + data + Self.ack
        // Whole, and split at every byte (frame headers cut across reads).
        var whole = InboundFrameScanner(withheldAck: 2)
        #expect(Self.run(&whole, [input]) == (expected, .pass))
        var bytewise = InboundFrameScanner(withheldAck: 2)
        #expect(Self.run(&bytewise, input.map { [$0] }) == (expected, .pass))
    }

    @Test func aSettingsAckWithPayloadIsPassedOnForNghttp2ToRefuse() {
        let badAck = Self.frame(0x4, 0x1, 0, [0, 0, 0, 0, 0, 0])
        var scanner = InboundFrameScanner(withheldAck: 2)
        let input = Self.preface + Self.ack + badAck
        #expect(Self.run(&scanner, [input]) == (input, .pass))
    }

    @Test func headersOnALowerNeverOpenedStreamIsAProtocolError() {
        var scanner = InboundFrameScanner(withheldAck: 0)
        let (passed, verdict) = Self.run(&scanner, [Self.preface + Self.headers(1) + Self.headers(5) + Self.headers(3) + Self.headers(7)])
        #expect(verdict == .protocolError)
        #expect(passed == Self.preface + Self.headers(1) + Self.headers(5))
    }

    @Test func trailersOnOpenedLowerStreamsPass() {
        var scanner = InboundFrameScanner(withheldAck: 0)
        var input = Self.preface
        for id in stride(from: UInt32(1), through: 301, by: 2) { input += Self.headers(id) }
        input += Self.headers(1) + Self.headers(151) + Self.headers(299)
        #expect(Self.run(&scanner, [input]) == (input, .pass))
        #expect(scanner.highestStreamID == 301)
    }

    @Test func idsSkippedInABigJumpAreNeverOpenedAndVeryOldIdsAreLeftToNghttp2() {
        var scanner = InboundFrameScanner(withheldAck: 0)
        let start = Self.preface + Self.headers(1) + Self.headers(201)
        #expect(Self.run(&scanner, [start]).1 == .pass)
        #expect(Self.run(&scanner, [Self.headers(1)]).1 == .pass)    // opened: trailers
        var again = scanner
        #expect(Self.run(&again, [Self.headers(99)]).1 == .protocolError)  // skipped
        // Far beyond the remembered window: unknown, nghttp2 decides.
        #expect(Self.run(&scanner, [Self.headers(201 + 2 * UInt32(InboundFrameScanner.windowIDs) + 2)]).1 == .pass)
        #expect(Self.run(&scanner, [Self.headers(3)]).1 == .pass)
    }

    /// The window is a ring: after many times its size of streams, a skipped
    /// id inside the window is still caught and opened ones still pass.
    @Test func windowWrapsAround() {
        var scanner = InboundFrameScanner(withheldAck: 0)
        let skipped: UInt32 = 4 * UInt32(InboundFrameScanner.windowIDs) + 101
        var input = Self.preface
        for id in stride(from: UInt32(1), through: 5 * UInt32(InboundFrameScanner.windowIDs), by: 2) where id != skipped {
            input += Self.headers(id)
        }
        #expect(Self.run(&scanner, [input]).1 == .pass)
        var again = scanner
        #expect(Self.run(&again, [Self.headers(skipped)]).1 == .protocolError)
        #expect(Self.run(&scanner, [Self.headers(skipped + 2)]).1 == .pass)
    }

    @Test func evenAndZeroStreamIdsAreLeftToNghttp2() {
        var scanner = InboundFrameScanner(withheldAck: 0)
        let input = Self.preface + Self.headers(5) + Self.headers(2) + Self.headers(0)
        #expect(Self.run(&scanner, [input]) == (input, .pass))
    }
}
