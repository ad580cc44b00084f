import Foundation
import Synchronization

/// Random, prefixed identifiers: `lot_` + 20 base-32 characters (100 bits).
public enum IDs {
    private static let alphabet: [UInt8] = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)
    private static let pool = Mutex(RandomPool())

    /// "<prefix>_" and 20 characters of base32 (alphabet in ASCII order):
    /// 10 for the milliseconds since 1970, then 10 for 50 random bits. Ids
    /// made later sort after earlier ones, so the B-trees keyed by them
    /// (spends, holds, lots, entries by ref) grow at their right edge instead
    /// of touching a random page per insert; 50 random bits keep them
    /// unguessable and distinct within a millisecond.
    /// The time prefix is the ledger's clock (`LedgerClock`), never the wall
    /// clock read here: tests with a fixed clock get ids of that time.
    public static func make(_ prefix: String, clock: any LedgerClock) -> String {
        make(prefix, nowMicros: clock.nowMicros())
    }

    public static func make(_ prefix: String, nowMicros: Int64) -> String {
        let millis = UInt64(max(0, nowMicros / 1000))
        var random = pool.withLock { $0.next() }
        var bytes = [UInt8](repeating: 0, count: prefix.utf8.count + 21)
        var i = 0
        for b in prefix.utf8 { bytes[i] = b; i += 1 }
        bytes[i] = UInt8(ascii: "_")
        i += 1
        for k in 0..<10 {  // most significant first: string order = time order
            bytes[i + k] = alphabet[Int((millis >> UInt64(5 * (9 - k))) & 31)]
        }
        for k in 10..<20 {
            bytes[i + k] = alphabet[Int(random & 31)]
            random >>= 5
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension IDs {
    /// The milliseconds since 1970 an id made by `make` carries (its time
    /// prefix); nil if `id` is not such an id.
    public static func timeMillis(of id: String) -> UInt64? {
        guard let underscore = id.utf8.lastIndex(of: UInt8(ascii: "_")) else { return nil }
        let body = Array(id.utf8[id.utf8.index(after: underscore)...])
        guard body.count == 20 else { return nil }
        var millis: UInt64 = 0
        for b in body.prefix(10) {
            guard let digit = alphabet.firstIndex(of: b) else { return nil }
            millis = millis << 5 | UInt64(digit)
        }
        return millis
    }
}

/// Random words from the kernel, read from /dev/urandom 4 KiB at a time
/// (one read per 512 words instead of a getrandom call per word).
private struct RandomPool {
    private static let urandom: Int32 = {
        let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        precondition(fd >= 0, "cannot open /dev/urandom: errno \(errno)")
        return fd
    }()

    private var words = [UInt64](repeating: 0, count: 512)
    private var index = 512

    mutating func next() -> UInt64 {
        if index == words.count {
            words.withUnsafeMutableBytes { buffer in
                var filled = 0
                while filled < buffer.count {
                    let n = read(Self.urandom, buffer.baseAddress! + filled, buffer.count - filled)
                    if n > 0 { filled += n } else { precondition(n < 0 && errno == EINTR, "reading /dev/urandom failed: errno \(errno)") }
                }
            }
            index = 0
        }
        defer { index += 1 }
        return words[index]
    }
}
