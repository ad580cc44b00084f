// tail and watch: server-streaming calls of LedgerFeedService, printed as
// they arrive (one stream) or counted (many streams, for benchmarks).

import GRPCClient
import CreditsProto
import Foundation

enum StreamKind {
    /// SubscribeLedger: entries and progress of the tenant's change feed.
    case tail
    /// WatchBalance: balance snapshots of clients.
    case watch
}

struct StreamRunOptions {
    var kind: StreamKind
    /// Streams in all, spread over the connections.
    var streams: Int
    var connections: Int
    /// Stop after this many seconds (nil: until the streams end or a signal).
    var duration: Double?
    /// Stop after this many messages in all (nil: no limit).
    var maxMessages: Int?
    /// Print every message (the default with one stream).
    var print: Bool
    // tail
    var fromSeq: Int64 = 0
    var filterClients: [String] = []
    /// Stream i follows only client <prefix>i (instead of filterClients).
    var filterPerStream = false
    var types: [Credits_V1_EntryType] = []
    var progressIntervalSeconds: Int32 = 0
    // watch: stream i watches clients.id(i)
    var details = false
    var thresholdMinor: Int64 = 0
}

struct StreamRunSummary {
    var streams = 0
    var messages = 0
    var entries = 0
    var progress = 0
    var snapshots = 0
    var crossings = 0
    var lastSeq: Int64 = 0
    var seconds = 0.0
    /// Streams that ended, by final status (e.g. "OK", "UNAVAILABLE").
    var ended: [String: Int] = [:]

    var table: String {
        var lines = ["streams \(streams), \(String(format: "%.1f", seconds)) s: \(messages) messages (\(String(format: "%.0f", Double(messages) / max(seconds, 0.001)))/s)"]
        if entries + progress > 0 { lines.append("entries \(entries), progress \(progress), last seq \(lastSeq)") }
        if snapshots > 0 { lines.append("balance snapshots \(snapshots), threshold crossings \(crossings)") }
        if !ended.isEmpty { lines.append("ended: " + ended.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")) }
        return lines.joined(separator: "\n")
    }

    func json() throws -> Data {
        let object: [String: Any] = [
            "streams": streams, "messages": messages, "entries": entries, "progress": progress, "snapshots": snapshots,
            "crossings": crossings, "last_seq": lastSeq, "seconds": seconds, "ended": ended,
        ]
        return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }
}

/// Splits a stream's bytes into gRPC messages (5-byte prefix, no compression asked for).
struct MessageSplitter {
    private var buffer: [UInt8] = []

    mutating func append(_ bytes: UnsafeRawBufferPointer, _ each: ([UInt8]) -> Void) {
        buffer.append(contentsOf: bytes)
        var offset = 0
        while buffer.count - offset >= 5 {
            let n = Int(buffer[offset + 1]) << 24 | Int(buffer[offset + 2]) << 16 | Int(buffer[offset + 3]) << 8 | Int(buffer[offset + 4])
            guard buffer.count - offset - 5 >= n else { break }
            each(Array(buffer[(offset + 5)..<(offset + 5 + n)]))
            offset += 5 + n
        }
        if offset > 0 { buffer.removeFirst(offset) }
    }
}

enum StreamPrinter {
    static func time(_ ts: Google_Protobuf_Timestamp?) -> String {
        guard let ts else { return "-" }
        let date = Date(timeIntervalSince1970: Double(ts.seconds) + Double(ts.nanos) / 1e9)
        return ISO8601DateFormatter.string(from: date, timeZone: .gmt, formatOptions: [.withInternetDateTime])
    }

    static func typeName(_ t: Credits_V1_EntryType) -> String {
        let full = "\(t)"
        return full.hasPrefix("ENTRY_TYPE_") ? String(full.dropFirst("ENTRY_TYPE_".count)) : full
    }

    static func entry(_ e: Credits_V1_LedgerEntry) -> String {
        var line = "seq=\(e.seq) \(time(e.time)) \(typeName(e.type)) client=\(e.clientID) amount=\(e.amountMinor) \(e.debitAccount) -> \(e.creditAccount)"
        line += " available_after=\(e.availableAfterMinor) held_after=\(e.heldAfterMinor)"
        if !e.refID.isEmpty { line += " ref=\(e.refID)" }
        if !e.centerID.isEmpty { line += " center=\(e.centerID)" }
        if !e.reason.isEmpty { line += " reason=\(e.reason)" }
        return line
    }

    static func progress(_ p: Credits_V1_FeedProgress) -> String {
        "progress seq=\(p.seq) tenant_seq=\(p.tenantSeq)\(p.seq == p.tenantSeq ? " (live)" : "") \(time(p.time))"
    }

    static func update(_ u: Credits_V1_BalanceUpdate) -> String {
        let s = u.balance?.summary ?? Credits_V1_BalanceSummary()
        var line = "seq=\(s.seq) client=\(s.clientID) total=\(s.totalMinor) available=\(s.availableMinor) held=\(s.heldMinor) \(s.currency)"
        if let b = u.balance, b.pendingExpiryMinor > 0 { line += " pending_expiry=\(b.pendingExpiryMinor)" }
        if let b = u.balance, !b.lots.isEmpty { line += " lots=\(b.lots.count)" }
        if let b = u.balance, !b.openHolds.isEmpty { line += " open_holds=\(b.openHolds.count)" }
        if u.crossedBelowThreshold { line += " CROSSED BELOW THRESHOLD" } else if u.belowThreshold { line += " below threshold" }
        return line
    }
}

/// Opens the streams, then reads them all on this thread until the duration,
/// the message limit, or every stream ended.
func runStreams(target: String, token: String, clients: ClientSet, options o: StreamRunOptions,
                emit: @escaping (String) -> Void) throws -> StreamRunSummary {
    precondition(o.streams > 0 && o.connections > 0)
    let metadata = [("authorization", "Bearer \(token)")]
    var connections: [H2Connection] = []
    for _ in 0..<min(o.connections, o.streams) {
        connections.append(try openConnection(target: target, metadata: metadata))
    }
    var summary = StreamRunSummary(streams: o.streams)
    var splitters = [MessageSplitter](repeating: MessageSplitter(), count: o.streams)
    var decodeFailures = 0
    for connection in connections {
        connection.onStreamingData = { tag, bytes in
            splitters[tag].append(bytes) { message in
                summary.messages += 1
                switch o.kind {
                case .tail:
                    guard let m = try? Credits_V1_LedgerFeedMessage(serializedBytes: message) else {
                        decodeFailures += 1
                        return
                    }
                    switch m.message {
                    case .entry(let e):
                        summary.entries += 1
                        summary.lastSeq = max(summary.lastSeq, e.seq)
                        if o.print { emit(StreamPrinter.entry(e)) }
                    case .progress(let p):
                        summary.progress += 1
                        summary.lastSeq = max(summary.lastSeq, p.seq)
                        if o.print { emit(StreamPrinter.progress(p)) }
                    case nil:
                        decodeFailures += 1
                    }
                case .watch:
                    guard let u = try? Credits_V1_BalanceUpdate(serializedBytes: message) else {
                        decodeFailures += 1
                        return
                    }
                    summary.snapshots += 1
                    if u.crossedBelowThreshold { summary.crossings += 1 }
                    summary.lastSeq = max(summary.lastSeq, u.balance?.summary?.seq ?? 0)
                    if o.print { emit(StreamPrinter.update(u)) }
                }
            }
        }
    }
    for i in 0..<o.streams {
        let connection = connections[i % connections.count]
        switch o.kind {
        case .tail:
            var r = Credits_V1_SubscribeLedgerRequest()
            r.fromSeq = o.fromSeq
            r.clientIds = o.filterPerStream ? [clients.id(i)] : o.filterClients
            r.types = o.types
            r.progressIntervalSeconds = o.progressIntervalSeconds
            try connection.startStreaming(path: "/credits.v1.LedgerFeedService/SubscribeLedger", message: r.serializedBytes(), tag: i)
        case .watch:
            var r = Credits_V1_WatchBalanceRequest()
            r.clientID = clients.id(i)
            r.includeDetails = o.details
            r.lowBalanceThresholdMinor = o.thresholdMinor
            try connection.startStreaming(path: "/credits.v1.LedgerFeedService/WatchBalance", message: r.serializedBytes(), tag: i)
        }
        // Send as we go: a thousand HEADERS queued at once would wait for SETTINGS anyway.
        if i % 64 == 63 { try connection.flush() }
    }
    for connection in connections { try connection.flush() }

    let start = monotonicNanos()
    let end = o.duration.map { start + UInt64($0 * 1e9) }
    var open = o.streams
    while open > 0 {
        if let end, monotonicNanos() >= end { break }
        if let limit = o.maxMessages, summary.messages >= limit { break }
        let ready = try pollConnections(connections, timeoutMillis: 100)
        for (i, connection) in connections.enumerated() where !connection.isClosed {
            if ready.isEmpty || ready[i] {
                if !(try connection.readAvailable()) { connection.abandon(.connectionLost) }
            }
            if !connection.isClosed { try connection.flush() }
            for done in connection.takeCompleted() {
                open -= 1
                let name: String
                switch done.outcome {
                case .grpcStatus(let code): name = grpcStatusName(code)
                case .httpStatus(let status): name = "HTTP \(status)"
                case .reset(let code): name = "RESET \(code)"
                case .connectionLost: name = "CONNECTION_LOST"
                case .timedOut: name = "CLIENT_TIMEOUT"
                case .goaway: name = "GOAWAY"
                case .badResponse: name = "BAD_RESPONSE"
                }
                summary.ended[name, default: 0] += 1
                if o.print {
                    let message = done.grpcMessage.removingPercentEncoding ?? done.grpcMessage
                    emit("stream ended: \(name)\(message.isEmpty ? "" : ": " + message)")
                }
            }
        }
    }
    summary.seconds = Double(monotonicNanos() - start) / 1e9
    if decodeFailures > 0 { summary.ended["UNDECODABLE_MESSAGES", default: 0] += decodeFailures }
    return summary
}
