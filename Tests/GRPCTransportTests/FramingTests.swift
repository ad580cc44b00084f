import NIOCore
import Testing
@testable import GRPCTransport

@Suite struct MessageDeframerTests {
    private func frame(_ payload: [UInt8], compressed: Bool = false) -> [UInt8] {
        let n = UInt32(payload.count)
        return [compressed ? 1 : 0, UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + payload
    }

    private func feed(_ deframer: inout MessageDeframer, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { deframer.append($0) }
    }

    private func drain(_ deframer: inout MessageDeframer) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        while let message = try deframer.next() {
            out.append(Array(message.payload.readableBytesView))
        }
        return out
    }

    @Test func singleMessageInOneChunk() throws {
        var d = MessageDeframer(maxMessageLength: 100)
        feed(&d, frame([1, 2, 3]))
        #expect(try drain(&d) == [[1, 2, 3]])
        #expect(!d.hasPartialMessage)
        #expect(d.bufferedBytes == 0)
    }

    /// ByteBuffer chunks (what the connection feeds): a chunk arriving when
    /// nothing is held is kept as is, later ones are copied after it; the
    /// messages and their bytes must come out the same for every split.
    @Test func byteBufferChunksAtEverySplit() throws {
        let messages: [[UInt8]] = [[1, 2, 3], [], Array(0..<40).map { UInt8($0) }, [7]]
        let wire = messages.flatMap { frame($0) }
        for cut in 0...wire.count {
            for second in cut...wire.count {
                var d = MessageDeframer(maxMessageLength: 100)
                var out: [[UInt8]] = []
                for part in [wire[0..<cut], wire[cut..<second], wire[second...]] where !part.isEmpty {
                    var chunk = ByteBufferAllocator().buffer(capacity: part.count + 3)
                    chunk.writeBytes([0xEE, 0xEE, 0xEE])  // bytes already read by someone else
                    chunk.moveReaderIndex(forwardBy: 3)
                    chunk.writeBytes(Array(part))
                    d.append(chunk)
                    out += try drain(&d)
                }
                #expect(out == messages, "cuts \(cut), \(second)")
                #expect(!d.hasPartialMessage && d.bufferedBytes == 0)
            }
        }
    }

    @Test func emptyMessage() throws {
        var d = MessageDeframer(maxMessageLength: 100)
        feed(&d, frame([]))
        #expect(try drain(&d) == [[]])
    }

    @Test func splitAtEveryByte() throws {
        let messages: [[UInt8]] = [[9, 8, 7, 6], [], Array(0..<200).map { UInt8($0) }, [42]]
        let wire = messages.flatMap { frame($0) }
        var d = MessageDeframer(maxMessageLength: 1000)
        var got: [[UInt8]] = []
        for byte in wire {
            feed(&d, [byte])
            got += try drain(&d)
        }
        #expect(got == messages)
        #expect(!d.hasPartialMessage)
    }

    @Test func coalescedAndSplitInRandomChunks() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let messages: [[UInt8]] = (0..<Int.random(in: 1...20, using: &rng)).map { _ in
                (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
            let wire = messages.flatMap { frame($0) }
            var d = MessageDeframer(maxMessageLength: 1000)
            var got: [[UInt8]] = []
            var i = 0
            while i < wire.count {
                let n = Int.random(in: 1...700, using: &rng)
                feed(&d, Array(wire[i..<min(wire.count, i + n)]))
                got += try drain(&d)
                i += n
            }
            #expect(got == messages)
        }
    }

    @Test func partialMessageIsReported() throws {
        var d = MessageDeframer(maxMessageLength: 100)
        feed(&d, Array(frame([1, 2, 3]).prefix(6)))
        #expect(try drain(&d) == [])
        #expect(d.hasPartialMessage)
        var e = MessageDeframer(maxMessageLength: 100)
        feed(&e, [0, 0])
        #expect(try drain(&e) == [])
        #expect(e.hasPartialMessage)
    }

    @Test func lengthAboveLimitIsRefusedBeforeBuffering() {
        var d = MessageDeframer(maxMessageLength: 10)
        feed(&d, [0, 0, 0, 0, 11])
        #expect(throws: MessageFramingError.messageTooLarge(length: 11, limit: 10)) { try d.next() }
        var e = MessageDeframer(maxMessageLength: 4 << 20)
        feed(&e, [0, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: MessageFramingError.messageTooLarge(length: Int(UInt32.max), limit: 4 << 20)) { try e.next() }
    }

    @Test func badCompressedFlag() {
        var d = MessageDeframer(maxMessageLength: 10)
        feed(&d, [2, 0, 0, 0, 1, 7])
        #expect(throws: MessageFramingError.invalidCompressedFlag(2)) { try d.next() }
    }

    @Test func compressedFlagIsKept() throws {
        var d = MessageDeframer(maxMessageLength: 10)
        feed(&d, frame([5], compressed: true))
        let message = try #require(try d.next())
        #expect(message.compressed)
    }

    @Test func framerWritesPrefix() {
        let allocator = ByteBufferAllocator()
        var payload = allocator.buffer(capacity: 3)
        payload.writeBytes([1, 2, 3])
        let framed = MessageFramer.frame(payload, compressed: false, allocator: allocator)
        #expect(Array(framed.readableBytesView) == [0, 0, 0, 0, 3, 1, 2, 3])
        let inPlace = MessageFramer.frame(allocator: allocator, capacity: 2) { $0.writeBytes([7, 7, 7, 7]) }
        #expect(Array(inPlace.readableBytesView) == [0, 0, 0, 0, 4, 7, 7, 7, 7])
    }
}

@Suite struct TimeoutTests {
    @Test func parsesEveryUnit() {
        #expect(GRPCTimeout.parse("1H") == 3_600_000_000_000)
        #expect(GRPCTimeout.parse("2M") == 120_000_000_000)
        #expect(GRPCTimeout.parse("3S") == 3_000_000_000)
        #expect(GRPCTimeout.parse("4m") == 4_000_000)
        #expect(GRPCTimeout.parse("5u") == 5_000)
        #expect(GRPCTimeout.parse("6n") == 6)
        #expect(GRPCTimeout.parse("0m") == 0)
        #expect(GRPCTimeout.parse("99999999S") == 99_999_999_000_000_000)
    }

    @Test func clampsOverflow() {
        #expect(GRPCTimeout.parse("99999999H") == Int64.max)
    }

    @Test func rejectsMalformed() {
        for bad in ["", "S", "1", "1x", "123456789S", "-1S", "1.5S", " 1S", "1 S", "1s", "abS"] {
            #expect(GRPCTimeout.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func formatsWithinEightDigitsRoundingUp() {
        #expect(GRPCTimeout.format(nanoseconds: 0) == "0n")
        #expect(GRPCTimeout.format(nanoseconds: 99_999_999) == "99999999n")
        #expect(GRPCTimeout.format(nanoseconds: 100_000_000) == "100000u")
        #expect(GRPCTimeout.format(nanoseconds: 100_000_001) == "100001u")
        #expect(GRPCTimeout.format(nanoseconds: Int64.max) == "2562048H")
        for nanos: Int64 in [1, 999, 1_234_567_890, 86_400_000_000_000] {
            let text = GRPCTimeout.format(nanoseconds: nanos)
            let back = GRPCTimeout.parse(text)!
            #expect(back >= nanos)
        }
    }
}

@Suite struct PercentEncodingTests {
    @Test func leavesPrintableASCIIAlone() {
        let text = "insufficient credits: available 500 < 700 (client c-1)"
        #expect(PercentEncoding.encode(text) == text)
    }

    @Test func encodesPercentControlAndUnicode() {
        #expect(PercentEncoding.encode("100%") == "100%25")
        #expect(PercentEncoding.encode("a\nb") == "a%0Ab")
        #expect(PercentEncoding.encode("café ✓") == "caf%C3%A9 %E2%9C%93")
    }

    @Test func roundTrips() {
        for text in ["", "plain", "100% sure", "ünïcödé\t\r\n", "%%%", "emoji 🎉"] {
            #expect(PercentEncoding.decode(PercentEncoding.encode(text)) == text)
        }
    }

    @Test func decodesLeniently() {
        #expect(PercentEncoding.decode("bad %zz and %4") == "bad %zz and %4")
        #expect(PercentEncoding.decode("%41%62") == "Ab")
    }
}

@Suite struct HeaderEncodingTests {
    @Test func trailersCarryStatusMessageAndDetails() {
        let status = GRPCStatus(.failedPrecondition, "not enough: 5%", details: [1, 2, 3, 250])
        var md = Metadata()
        md.add("x-extra", "yes")
        md.add("x-trace-bin", binary: [0, 255])
        let fields = GRPCHeaders.trailers(status: status, metadata: md)
        #expect(fields.map(\.0) == ["grpc-status", "grpc-message", "grpc-status-details-bin", "x-extra", "x-trace-bin"])
        #expect(fields[0].1 == "9")
        #expect(fields[1].1 == "not enough: 5%25")
        #expect(Base64.decode(fields[2].1) == [1, 2, 3, 250])
        #expect(fields[4].1 == "AP8=")
    }

    @Test func okHasNoMessageOrDetails() {
        let fields = GRPCHeaders.trailers(status: .ok, metadata: Metadata())
        #expect(fields.count == 1)
        #expect(fields[0] == ("grpc-status", "0"))
    }

    @Test func responseHeadersAdvertiseEncodings() {
        let fields = GRPCHeaders.responseHeaders(metadata: Metadata(), encoding: .gzip, requestID: "r1")
        #expect(fields.contains { $0 == (":status", "200") })
        #expect(fields.contains { $0 == ("content-type", "application/grpc") })
        #expect(fields.contains { $0 == ("grpc-accept-encoding", "identity,gzip") })
        #expect(fields.contains { $0 == ("grpc-encoding", "gzip") })
    }

    @Test func base64RoundTripsPaddedAndUnpadded() {
        for n in 0..<20 {
            let bytes = (0..<n).map { UInt8(($0 * 37 + 11) & 0xFF) }
            let encoded = Base64.encode(bytes)
            #expect(Base64.decode(encoded) == bytes)
            #expect(Base64.decode(String(encoded.filter { $0 != "=" })) == bytes)
        }
        #expect(Base64.decode("a") == nil)
        #expect(Base64.decode("ab!d") == nil)
        #expect(Base64.decode("ab=c") == nil)
    }

    @Test func metadataNameRules() {
        #expect(Metadata.isValidCustomName("x-request-id"))
        #expect(Metadata.isValidCustomName("idempotency-key"))
        #expect(!Metadata.isValidCustomName("grpc-status"))
        #expect(!Metadata.isValidCustomName("X-Upper"))
        #expect(!Metadata.isValidCustomName("content-type"))
        #expect(!Metadata.isValidCustomName(""))
        #expect(Metadata.isValidStringValue("abc 123"))
        #expect(!Metadata.isValidStringValue("tab\t"))
    }
}
