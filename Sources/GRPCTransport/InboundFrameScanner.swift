/// Follows the client's bytes frame by frame, ahead of nghttp2, for the two
/// rules nghttp2 1.52 does not apply as RFC 9113 says (measured, and read in
/// `lib/nghttp2_session.c`, `nghttp2_session_on_request_headers_received`):
///
/// 1. **SETTINGS_MAX_CONCURRENT_STREAMS (§5.1.2).** A stream over the limit
///    must be refused on its own (a stream error). nghttp2 does that, with
///    RST_STREAM(REFUSED_STREAM), only while the setting is still
///    unacknowledged ("pending"); once the client acknowledged it, nghttp2
///    ends the whole connection with GOAWAY(PROTOCOL_ERROR). So the session
///    sends the limit in a SETTINGS frame of its own, second, and this scanner
///    withholds the client's acknowledgement of that frame (the second
///    SETTINGS ACK): nghttp2 then keeps the limit as pending and refuses
///    stream by stream, which is what the client was told.
/// 2. **Stream identifiers only grow (§5.1.1).** A HEADERS frame opening a
///    stream whose id is below one already used is a connection error
///    PROTOCOL_ERROR; nghttp2 ignores it unless it still holds that stream.
///    The scanner remembers which of the recent client stream ids were
///    opened and reports a HEADERS on a lower id that never was.
///
/// It never buffers payload: it splits the input into runs to pass on, and
/// holds back at most the 8 bytes of an incomplete frame header.
struct InboundFrameScanner {
    /// What to do with a complete frame header.
    enum Verdict: Equatable {
        case pass
        /// Swallow it (the withheld SETTINGS ACK; it has no payload).
        case drop
        /// A connection error PROTOCOL_ERROR (§5.1.1).
        case protocolError
    }

    private enum State {
        case preface(remaining: Int)
        case header
        case payload(remaining: Int)
    }

    static let prefaceLength = 24
    /// Client stream ids remembered below the highest (odd ids only).
    static let windowIDs = 2048

    private var state = State.preface(remaining: prefaceLength)
    /// Bytes of a frame header split across reads.
    private var heldHeader: [UInt8] = []
    private var settingsAcks = 0
    /// Which SETTINGS ACK to withhold (1-based); 0 for none.
    let withheldAck: Int

    /// The highest client stream id a HEADERS frame has used.
    private(set) var highestStreamID: UInt32 = 0
    /// A ring of `windowIDs` bits: the bit of client stream id `id` (at
    /// `(id / 2) % windowIDs`) says whether a HEADERS frame opened it, for
    /// the ids within the window below `highestStreamID`. Moving up costs one
    /// bit per id passed (no shifting of the whole window per stream).
    private var opened = [UInt64](repeating: 0, count: windowIDs / 64)

    @inline(__always)
    private static func slot(_ id: UInt32) -> (word: Int, mask: UInt64) {
        let bit = Int(id >> 1) & (windowIDs - 1)
        return (bit >> 6, 1 << UInt64(bit & 63))
    }

    init(withheldAck: Int) {
        self.withheldAck = withheldAck
    }

    /// Splits `input` into runs for nghttp2: `pass` is called with each run
    /// (in order) that nghttp2 must see. Stops and returns `.protocolError`
    /// when the client broke §5.1.1; else returns `.pass`.
    mutating func scan(_ input: UnsafeRawBufferPointer, pass: (UnsafeRawBufferPointer) throws(HTTP2SessionError) -> Void) throws(HTTP2SessionError) -> Verdict {
        var i = 0
        var runStart = 0
        let n = input.count
        while i < n {
            switch state {
            case .preface(let remaining):
                let k = min(remaining, n - i)
                i += k
                state = remaining == k ? .header : .preface(remaining: remaining - k)
            case .payload(let remaining):
                let k = min(remaining, n - i)
                i += k
                state = remaining == k ? .header : .payload(remaining: remaining - k)
            case .header:
                if heldHeader.isEmpty && n - i >= 9 {
                    let verdict = frameHeader(UnsafeRawBufferPointer(rebasing: input[i..<(i + 9)]))
                    switch verdict {
                    case .pass:
                        i += 9
                    case .drop:
                        if i > runStart { try pass(UnsafeRawBufferPointer(rebasing: input[runStart..<i])) }
                        i += 9
                        runStart = i
                    case .protocolError:
                        if i > runStart { try pass(UnsafeRawBufferPointer(rebasing: input[runStart..<i])) }
                        return .protocolError
                    }
                } else {
                    // A header split across reads: hand on what came before it,
                    // keep its bytes until the header is whole.
                    if i > runStart { try pass(UnsafeRawBufferPointer(rebasing: input[runStart..<i])) }
                    let k = min(9 - heldHeader.count, n - i)
                    heldHeader.append(contentsOf: input[i..<(i + k)])
                    i += k
                    runStart = i
                    guard heldHeader.count == 9 else { break }
                    let header = heldHeader
                    heldHeader.removeAll(keepingCapacity: true)
                    let verdict = header.withUnsafeBytes { frameHeader($0) }
                    switch verdict {
                    case .pass:
                        var failure: HTTP2SessionError?
                        header.withUnsafeBytes { raw in
                            do throws(HTTP2SessionError) { try pass(raw) } catch { failure = error }
                        }
                        if let failure { throw failure }
                    case .drop: break
                    case .protocolError: return .protocolError
                    }
                }
            }
        }
        if n > runStart { try pass(UnsafeRawBufferPointer(rebasing: input[runStart..<n])) }
        return .pass
    }

    /// Looks at one complete 9-byte frame header and moves to its payload.
    private mutating func frameHeader(_ h: UnsafeRawBufferPointer) -> Verdict {
        let length = Int(h[0]) << 16 | Int(h[1]) << 8 | Int(h[2])
        let type = h[3], flags = h[4]
        let streamID = (UInt32(h[5]) << 24 | UInt32(h[6]) << 16 | UInt32(h[7]) << 8 | UInt32(h[8])) & 0x7FFF_FFFF
        state = length == 0 ? .header : .payload(remaining: length)
        switch type {
        case 0x4 where flags & 0x1 != 0 && streamID == 0:  // SETTINGS ACK
            settingsAcks += 1
            // With a payload it is malformed: nghttp2 must see it and fail.
            return settingsAcks == withheldAck && length == 0 ? .drop : .pass
        case 0x1 where streamID & 1 == 1:  // HEADERS on a client stream id
            return headers(streamID: streamID)
        default:
            return .pass
        }
    }

    private mutating func headers(streamID: UInt32) -> Verdict {
        if streamID > highestStreamID {
            // Ids skipped between the old highest and this one are closed for
            // good: their bits (holding ids a window older) are cleared.
            let skipped = Int((streamID - highestStreamID) / 2) - (highestStreamID == 0 ? 0 : 1)
            if skipped >= Self.windowIDs {
                for w in opened.indices { opened[w] = 0 }
            } else if skipped > 0 {
                var id = highestStreamID == 0 ? 1 : highestStreamID + 2
                for _ in 0..<skipped {
                    let (word, mask) = Self.slot(id)
                    opened[word] &= ~mask
                    id += 2
                }
            }
            highestStreamID = streamID
            let (word, mask) = Self.slot(streamID)
            opened[word] |= mask
            return .pass
        }
        let back = Int((highestStreamID - streamID) / 2)
        guard back < Self.windowIDs else { return .pass }  // too old to know: nghttp2 decides
        let (word, mask) = Self.slot(streamID)
        let wasOpened = opened[word] & mask != 0
        // Trailers, or frames on a stream nghttp2 knows the state of.
        return wasOpened ? .pass : .protocolError
    }
}
