@preconcurrency import Dispatch
import GRPCTransport
import Logging
import NIOConcurrencyHelpers

/// One logfmt line per call through swift-log (label `access`, level info):
/// method, tenant, status, reason, latency_us, request_id, peer. No
/// metadata values, tokens or message bodies. A token bucket bounds the
/// lines per second; what it drops is summed in one line per second.
public final class AccessLog: Sendable {
    /// Values longer than this (a path of an unknown method) are cut, and
    /// bytes outside visible ASCII become `_`: one line stays one line.
    static let maxValueLength = 128

    private let logger: Logger
    private let bucket: NIOLockedValueBox<TokenBucket>
    private let maxLinesPerSecond: Int
    private let summaryTimer: NIOLockedValueBox<DispatchSourceTimer?>

    public init(maxLinesPerSecond: Int, logger: Logger = Logger(label: "access")) {
        precondition(maxLinesPerSecond >= 1)
        self.logger = logger
        self.maxLinesPerSecond = maxLinesPerSecond
        self.bucket = NIOLockedValueBox(TokenBucket(ratePerSecond: maxLinesPerSecond, nowNanos: Self.nowNanos()))
        self.summaryTimer = NIOLockedValueBox(nil)
    }

    /// Starts the once-a-second summary of dropped lines.
    public func start() {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "credits.access-log"))
        timer.schedule(deadline: .now() + .seconds(1), repeating: .seconds(1))
        timer.setEventHandler { [weak self] in self?.reportDropped() }
        summaryTimer.withLockedValue { $0 = timer }
        timer.resume()
    }

    /// Stops the summary after reporting what is still counted.
    public func stop() {
        summaryTimer.withLockedValue { timer in
            timer?.cancel()
            timer = nil
        }
        reportDropped()
    }

    func log(_ call: EndedCall, peer: String) {
        guard bucket.withLockedValue({ $0.take(nowNanos: Self.nowNanos()) }) else { return }
        var tenant = "-"
        var reason = "-"
        for attribute in call.attributes {
            if attribute.key == "tenant" { tenant = Self.safe(attribute.value) }
            else if attribute.key == "reason" { reason = Self.safe(attribute.value) }
        }
        logger.info("call", metadata: [
            "method": .string(call.isRoutedMethod ? call.path : Self.safe(call.path)),
            "tenant": .string(tenant),
            "status": .string(call.code.description),
            "reason": .string(reason),
            "latency_us": .string(String(call.durationNanos / 1_000)),
            "request_id": .string(call.requestID),
            "peer": .string(peer),
        ])
    }

    func reportDropped() {
        let dropped = bucket.withLockedValue { $0.takeDropped() }
        guard dropped > 0 else { return }
        logger.warning("access log lines dropped by the rate limit", metadata: [
            "dropped": "\(dropped)", "max_lines_per_second": "\(maxLinesPerSecond)",
        ])
    }

    /// Visible ASCII only, at most `maxValueLength` bytes; empty → "-".
    static func safe(_ value: String) -> String {
        guard !value.isEmpty else { return "-" }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(min(value.utf8.count, maxValueLength))
        for b in value.utf8.prefix(maxValueLength) {
            bytes.append(b >= 0x21 && b <= 0x7E && b != UInt8(ascii: "\"") ? b : UInt8(ascii: "_"))
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func nowNanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
}

/// Lines allowed: `ratePerSecond` a second on average, at most one
/// second's worth at once.
struct TokenBucket {
    let ratePerSecond: Int
    private var tokensNanos: UInt64
    private var lastNanos: UInt64
    private(set) var dropped = 0
    /// One token is this many "token-nanoseconds" (1 s).
    private static let unit: UInt64 = 1_000_000_000

    init(ratePerSecond: Int, nowNanos: UInt64) {
        self.ratePerSecond = ratePerSecond
        self.tokensNanos = UInt64(ratePerSecond) * Self.unit
        self.lastNanos = nowNanos
    }

    /// Takes one token if there is one; else counts a dropped line.
    mutating func take(nowNanos: UInt64) -> Bool {
        let capacity = UInt64(ratePerSecond) * Self.unit
        if nowNanos > lastNanos {
            let elapsed = min(nowNanos - lastNanos, Self.unit)
            tokensNanos = min(capacity, tokensNanos + elapsed * UInt64(ratePerSecond))
            lastNanos = nowNanos
        }
        guard tokensNanos >= Self.unit else {
            dropped += 1
            return false
        }
        tokensNanos -= Self.unit
        return true
    }

    mutating func takeDropped() -> Int {
        defer { dropped = 0 }
        return dropped
    }
}
