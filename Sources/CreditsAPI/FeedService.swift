import CreditsProto
import GRPCServices
import GRPCTransport
import Ledger
import NIOConcurrencyHelpers
import NIOCore

/// Limits of the streams that follow the ledger (SubscribeLedger, WatchBalance).
public struct StreamLimits: Sendable {
    /// Feed and watch streams open at once on the server.
    public var maxStreams = 10_000
    /// A feed subscriber whose responses have not drained for this long is
    /// ended with RESOURCE_EXHAUSTED (SUBSCRIBER_STALLED).
    public var stallTimeout: TimeAmount = .seconds(60)
    /// Progress messages of an idle feed, when the request sets none.
    public var defaultProgressInterval: TimeAmount = .seconds(5)
    /// How often an open stream's key is checked again: a revoked key's
    /// streams end (UNAUTHENTICATED) within this, plus the key cache's TTL.
    public var reauthInterval: TimeAmount = .seconds(10)
    public init() {}
}

/// The open feed and watch streams, and the one place commit notices reach
/// them: the ledger's notifier thread calls `notice` once per batch of
/// commits; the hub finds the streams the commits concern (by tenant for
/// feeds, by client for watches) and wakes them with one task per event
/// loop, on which each stream then reads what it needs with its loop's own
/// reader. The writer thread never runs stream code.
final class StreamHub: @unchecked Sendable {
    let limits: StreamLimits
    private let lock = NIOLock()
    /// Feeds of whole tenants, woken by every commit of their tenant.
    private var feeds: [String: [ObjectIdentifier: FeedSubscription]] = [:]
    /// Feeds filtered on clients, woken only by commits touching one of
    /// them (their checkpoint moves on at each progress tick).
    private var clientFeeds: [LedgerClientKey: [ObjectIdentifier: FeedSubscription]] = [:]
    /// Per tenant with feeds: its newest entries, read and encoded once,
    /// and how many feeds use it.
    private var tails: [String: (tail: FeedTail, users: Int)] = [:]
    /// Reads new entries for the tails (the notifier thread only).
    private var tailReader: LedgerReader?
    private let makeReader: () throws -> LedgerReader
    private let allocator = ByteBufferAllocator()
    private var watches: [LedgerClientKey: [ObjectIdentifier: BalanceWatch]] = [:]
    private var open = 0
    private var closed = false

    init(limits: StreamLimits, makeReader: @escaping () throws -> LedgerReader) {
        precondition(limits.maxStreams > 0 && limits.stallTimeout > .zero && limits.defaultProgressInterval > .zero)
        self.limits = limits
        self.makeReader = makeReader
    }

    /// Counts a new stream in; false when the server has as many as it may.
    func admit() -> Bool {
        lock.withLock {
            guard !closed, open < limits.maxStreams else { return false }
            open += 1
            return true
        }
    }

    /// Registers a feed; returns its tenant's shared tail (created at
    /// `committedSeq`, a seq known committed, by the tenant's first feed).
    func add(_ feed: FeedSubscription, committedSeq: Int64) -> FeedTail {
        lock.withLock {
            if feed.clients.isEmpty {
                feeds[feed.tenant, default: [:]][ObjectIdentifier(feed)] = feed
            } else {
                for client in feed.clients {
                    clientFeeds[LedgerClientKey(tenant: feed.tenant, client: client), default: [:]][ObjectIdentifier(feed)] = feed
                }
            }
            if let existing = tails[feed.tenant] {
                tails[feed.tenant]!.users = existing.users + 1
                return existing.tail
            }
            let tail = FeedTail(startingAfter: committedSeq)
            tails[feed.tenant] = (tail, 1)
            for other in tails.values { other.tail.share(of: tails.count) }
            return tail
        }
    }

    func add(_ watch: BalanceWatch) {
        lock.withLock { watches[watch.key, default: [:]][ObjectIdentifier(watch)] = watch }
    }

    /// Forgets a stream that ended (and lets another in).
    func remove(_ feed: FeedSubscription) {
        lock.withLock {
            var found = false
            if feed.clients.isEmpty {
                found = feeds[feed.tenant]?.removeValue(forKey: ObjectIdentifier(feed)) != nil
                if feeds[feed.tenant]?.isEmpty == true { feeds[feed.tenant] = nil }
            } else {
                for client in feed.clients {
                    let key = LedgerClientKey(tenant: feed.tenant, client: client)
                    found = clientFeeds[key]?.removeValue(forKey: ObjectIdentifier(feed)) != nil || found
                    if clientFeeds[key]?.isEmpty == true { clientFeeds[key] = nil }
                }
            }
            guard found else { return }
            if let entry = tails[feed.tenant] {
                tails[feed.tenant] = entry.users > 1 ? (entry.tail, entry.users - 1) : nil
            }
            open -= 1
            assert(open >= 0)
        }
    }

    func remove(_ watch: BalanceWatch) {
        lock.withLock {
            guard watches[watch.key]?.removeValue(forKey: ObjectIdentifier(watch)) != nil else { return }
            if watches[watch.key]?.isEmpty == true { watches[watch.key] = nil }
            open -= 1
            assert(open >= 0)
        }
    }

    /// Called on the ledger's notifier thread: first the tails of tenants
    /// with feeds take in the new entries (one read and one encoding per
    /// entry, whatever the number of feeds), then the streams are woken.
    func notice(_ notice: CommitNotice) {
        let toFill: [(FeedTail, String, Int64)] = lock.withLock {
            notice.tenantSeqs.compactMap { tenant, seq in tails[tenant].map { ($0.tail, tenant, seq) } }
        }
        for (tail, tenant, seq) in toFill { fill(tail, tenant: tenant, through: seq) }
        var wake: [ObjectIdentifier: (EventLoop, [() -> Void])] = [:]
        func add(_ loop: EventLoop, _ task: @escaping () -> Void) {
            wake[ObjectIdentifier(loop), default: (loop, [])].1.append(task)
        }
        lock.withLock {
            for (tenant, seq) in notice.tenantSeqs {
                for feed in feeds[tenant]?.values ?? [:].values {
                    add(feed.eventLoop) { feed.committed(seq) }
                }
            }
            if notice.everyClient {
                for (key, group) in watches where notice.tenantSeqs[key.tenant] != nil {
                    for watch in group.values { add(watch.eventLoop) { watch.changed() } }
                }
                for (key, group) in clientFeeds {
                    guard let seq = notice.tenantSeqs[key.tenant] else { continue }
                    for feed in group.values { add(feed.eventLoop) { feed.committed(seq) } }
                }
            } else if !watches.isEmpty || !clientFeeds.isEmpty {
                for key in notice.clients {
                    for watch in watches[key]?.values ?? [:].values {
                        add(watch.eventLoop) { watch.changed() }
                    }
                    if let group = clientFeeds[key], let seq = notice.tenantSeqs[key.tenant] {
                        for feed in group.values { add(feed.eventLoop) { feed.committed(seq) } }
                    }
                }
            }
        }
        for (loop, tasks) in wake.values {
            loop.execute { for task in tasks { task() } }
        }
    }

    /// Reads the tenant's entries after the tail's end through `seq` (at
    /// most `FeedTail.maxItems`: older ones are left to the feeds' own reads).
    private func fill(_ tail: FeedTail, tenant: String, through seq: Int64) {
        do {
            if tailReader == nil { tailReader = try makeReader() }
            guard let reader = tailReader else { return }
            if seq - tail.end > Int64(FeedTail.maxItems) { tail.restart(after: seq - Int64(FeedTail.maxItems)) }
            while tail.end < seq {
                let page = try reader.feedPage(tenant: tenant, afterSeq: tail.end, clients: [], types: [], limit: LedgerLimits.maxPageSize)
                let items = page.entries.map { entry -> FeedTail.Item in
                    let payload = FeedSubscription.encode(entry, allocator: allocator)
                    return FeedTail.Item(seq: entry.seq, clientId: entry.clientId, type: entry.type, payload: payload,
                                         bytes: payload.readableBytes)
                }
                tail.append(items, through: page.scannedThrough)
                if page.scannedThrough >= page.tenantSeq { break }
            }
        } catch {
            // The feeds read SQLite themselves meanwhile; start over later.
            tail.restart(after: seq)
            tailReader = nil
        }
    }

    /// Server shutdown: no new streams; every open one ends UNAVAILABLE.
    func shutdown() {
        let (allFeeds, allWatches) = lock.withLock {
            closed = true
            var unique: [ObjectIdentifier: FeedSubscription] = [:]  // a feed of several clients is listed under each
            for group in feeds.values { unique.merge(group) { first, _ in first } }
            for group in clientFeeds.values { unique.merge(group) { first, _ in first } }
            return (Array(unique.values), watches.values.flatMap(\.values))
        }
        let status = RPCError(.unavailable, "the server is shutting down: resume from the last seq processed", reason: .shuttingDown)
        for feed in allFeeds { feed.eventLoop.execute { feed.end(status) } }
        for watch in allWatches { watch.eventLoop.execute { watch.end(status) } }
    }
}

/// A tenant's newest entries, each encoded once as a `LedgerFeedMessage`.
typealias FeedTail = EntryTail<ByteBuffer>

/// `credits.v1.LedgerFeedService`.
struct FeedServiceRoutes {
    let core: APICore
    let hub: StreamHub
    typealias S = Credits_V1_LedgerFeedService

    var routes: [RPCRoute] {
        [
            core.serverStreaming(S.subscribeLedger, .read) { req, call, ctx in subscribe(req, call, ctx) },
            core.serverStreaming(S.watchBalance, .read) { req, call, ctx in watch(req, call, ctx) },
        ]
    }

    static let tooManyStreams = RPCError(.resourceExhausted, "too many feed and watch streams are open on this server; retry later",
                                         reason: .tooManyStreams)

    func subscribe(_ req: Credits_V1_SubscribeLedgerRequest, _ call: ProtoCall<Credits_V1_LedgerFeedMessage>, _ ctx: CallContext) {
        var check = RequestCheck()
        if req.fromSeq < 0 { check.add("from_seq", "must be ≥ 0") }
        if req.clientIds.count > LedgerLimits.maxFeedClients {
            check.add("client_ids", "at most \(LedgerLimits.maxFeedClients) ids")
        } else {
            for (i, id) in req.clientIds.enumerated() { check.id(id, "client_ids[\(i)]") }
        }
        var types = Set<EntryType>()
        for (i, t) in req.types.enumerated() {
            if let type = Convert.entryType(t) { types.insert(type) } else { check.add("types[\(i)]", "is not a known entry type") }
        }
        let interval = req.progressIntervalSeconds
        if interval != 0 && !(1...300).contains(interval) { check.add("progress_interval_seconds", "must be 0 or 1…300") }
        let tip: Int64
        do {
            try check.finish()
            tip = try ctx.reader.tenantSeq(ctx.tenantId)
        } catch {
            call.fail(ErrorMapping.rpcError(any: error))
            return
        }
        if req.fromSeq > tip { return call.fail(RPCError.invalid("from_seq", "is beyond the tenant's latest seq \(tip)")) }
        guard hub.admit() else { return call.fail(Self.tooManyStreams) }
        let feed = FeedSubscription(
            call: call, core: core, hub: hub, tenant: ctx.tenantId, fromSeq: req.fromSeq,
            clients: Array(Set(req.clientIds)).sorted(), types: types,
            progressInterval: interval == 0 ? hub.limits.defaultProgressInterval : .seconds(Int64(interval)))
        feed.start(committedSeq: tip)
    }

    func watch(_ req: Credits_V1_WatchBalanceRequest, _ call: ProtoCall<Credits_V1_BalanceUpdate>, _ ctx: CallContext) {
        var check = RequestCheck()
        check.id(req.clientID, "client_id")
        if req.lowBalanceThresholdMinor < 0 || req.lowBalanceThresholdMinor > LedgerLimits.maxBalanceMinor {
            check.add("low_balance_threshold_minor", "must be 0…\(LedgerLimits.maxBalanceMinor)")
        }
        do {
            try check.finish()
        } catch {
            call.fail(ErrorMapping.rpcError(any: error))
            return
        }
        guard hub.admit() else { return call.fail(Self.tooManyStreams) }
        let watch = BalanceWatch(call: call, core: core, hub: hub, tenant: ctx.tenantId, currency: ctx.currency,
                                 client: req.clientID, details: req.includeDetails, threshold: req.lowBalanceThresholdMinor)
        watch.start()
    }
}

/// One SubscribeLedger call, on its event loop. It reads pages of entries
/// from SQLite only while the call is writable (its queue is below the
/// transport's watermark), so what it holds is bounded whatever the client
/// does; commit notices only move `tip` and wake it.
final class FeedSubscription: @unchecked Sendable {
    typealias Message = Credits_V1_LedgerFeedMessage
    /// Entries read per page.
    static let pageSize = 256
    /// Pages per event-loop turn before yielding to other work on the loop.
    static let pagesPerTurn = 4
    /// Tail entries a filtered feed looks at per page at most.
    static let tailScan = 4_096

    /// An entry as a serialized feed message (the tail and the SQLite pages alike).
    static func encode(_ entry: LedgerEntry, allocator: ByteBufferAllocator) -> ByteBuffer {
        var message = Message()
        message.message = .entry(Convert.entry(entry))
        var buffer = allocator.buffer(capacity: 256)
        _ = message.serialize(into: &buffer)
        return buffer
    }

    let call: ProtoCall<Message>
    let core: APICore
    let hub: StreamHub
    let tenant: String
    let clients: [String]
    let types: Set<EntryType>
    let progressInterval: TimeAmount
    var eventLoop: EventLoop { call.eventLoop }

    /// Every matching entry with seq ≤ cursor has been queued.
    private var cursor: Int64
    /// The highest committed seq known.
    private var tip: Int64 = 0
    private var pumpScheduled = false
    private var waitingWritable = false
    private var sentSinceTick = false
    private var announcedLive = false
    private var ended = false
    private var progressTask: RepeatedTask?
    private var stallTask: Scheduled<Void>?
    private var reauthTask: RepeatedTask?
    private var tail: FeedTail?
    private let clientSet: Set<String>

    init(call: ProtoCall<Message>, core: APICore, hub: StreamHub, tenant: String, fromSeq: Int64, clients: [String],
         types: Set<EntryType>, progressInterval: TimeAmount) {
        self.clientSet = Set(clients)
        self.call = call
        self.core = core
        self.hub = hub
        self.tenant = tenant
        self.cursor = fromSeq
        self.clients = clients
        self.types = types
        self.progressInterval = progressInterval
    }

    /// `committedSeq`: the tenant's seq read when the call was accepted.
    func start(committedSeq: Int64) {
        eventLoop.preconditionInEventLoop()
        call.call.onCancelled { [self] in end(nil) }
        // Registered before the first read: a commit after it wakes the pump.
        tail = hub.add(self, committedSeq: committedSeq)
        // Committed when the call was accepted: the feed is not caught up
        // before it has sent through here (however far the tail reaches).
        tip = max(tip, committedSeq)
        progressTask = eventLoop.scheduleRepeatedTask(initialDelay: progressInterval, delay: progressInterval) { [self] _ in tick() }
        reauthTask = StreamAuth.schedule(call, core: core, every: hub.limits.reauthInterval) { [self] in end(nil) }
        pump()
    }

    /// A commit notice: the tenant's entries now reach `seq`.
    func committed(_ seq: Int64) {
        guard !ended else { return }
        if seq > tip { tip = seq }
        if cursor < tip { pumpSoon() }
    }

    private func pumpSoon() {
        guard !pumpScheduled, !waitingWritable, !ended else { return }
        pumpScheduled = true
        eventLoop.execute { [self] in
            pumpScheduled = false
            pump()
        }
    }

    private func pump() {
        guard !ended, !call.call.isFinished, !waitingWritable else { return }
        for _ in 0..<Self.pagesPerTurn {
            guard call.call.isWritable else { return waitForWritable() }
            if let (matching, through) = tail?.read(after: cursor, limit: Self.pageSize, scanning: Self.tailScan, where: { [clientSet, types] item in
                (clientSet.isEmpty || clientSet.contains(item.clientId)) && (types.isEmpty || types.contains(item.type))
            }) {
                // Caught up: the entries are already encoded in the tenant's tail.
                assert(matching.first.map { $0.seq > cursor } ?? true, "each entry once, in seq order")
                if !matching.isEmpty {
                    call.call.sendMessages(matching.lazy.map(\.payload))
                    sentSinceTick = true
                }
                cursor = through
                if through > tip { tip = through }
                if cursor >= tip {
                    if !announcedLive {
                        announcedLive = true
                        sendProgress()
                    }
                    return
                }
                continue
            }
            let page: LedgerReader.FeedPage
            do {
                page = try core.readers.reader().feedPage(tenant: tenant, afterSeq: cursor, clients: clients, types: types, limit: Self.pageSize)
            } catch {
                return end(ErrorMapping.rpcError(any: error))
            }
            assert(page.scannedThrough >= cursor, "the feed never goes back")
            if page.tenantSeq > tip { tip = page.tenantSeq }
            // One queue entry for the page: the call was writable before it,
            // so the whole page is admitted (never cut off half-way).
            var payloads: [ByteBuffer] = []
            payloads.reserveCapacity(page.entries.count)
            for entry in page.entries {
                assert(entry.seq > cursor, "each entry once, in seq order")
                payloads.append(Self.encode(entry, allocator: call.call.allocator))
                cursor = entry.seq
            }
            if !payloads.isEmpty {
                call.call.sendMessages(payloads)
                sentSinceTick = true
            }
            cursor = page.scannedThrough
            if cursor >= page.tenantSeq {
                // Caught up with what is committed: say so once, then follow live.
                if !announcedLive {
                    announcedLive = true
                    sendProgress()
                }
                if cursor < tip { continue }  // a notice arrived meanwhile
                return
            }
        }
        pumpSoon()  // more to read: let other calls of this loop run first
    }

    private func sendProgress() {
        var progress = Credits_V1_FeedProgress()
        progress.seq = cursor
        progress.tenantSeq = max(tip, cursor)
        progress.time = Convert.timestamp(core.ledger.options.clock.nowMicros())
        var message = Message()
        message.message = .progress(progress)
        call.send(message)
        sentSinceTick = true
    }

    /// Every progress interval: a progress message if nothing was sent since
    /// the last tick (an idle or filtered subscriber can checkpoint).
    private func tick() {
        guard !ended, !call.call.isFinished else { return }
        defer { sentSinceTick = false }
        // A filtered feed is woken only by its clients' commits: catch up
        // with the others' first, so the checkpoint is current.
        if !clients.isEmpty && announcedLive && !waitingWritable { pump() }
        guard !sentSinceTick, call.call.isWritable, announcedLive else { return }
        sendProgress()
    }

    private func waitForWritable() {
        waitingWritable = true
        call.call.onWritable = { [self] in
            waitingWritable = false
            stallTask?.cancel()
            stallTask = nil
            pump()
        }
        if stallTask == nil {
            let timeout = hub.limits.stallTimeout
            stallTask = eventLoop.scheduleTask(in: timeout) { [self] in
                stallTask = nil
                guard waitingWritable else { return }
                let seconds = timeout.nanoseconds / 1_000_000_000
                // The queued entries cannot drain: drop them and end at once.
                end(RPCError(.resourceExhausted,
                             "the subscriber read nothing for \(seconds) s: stream ended; resume from the last seq processed",
                             reason: .subscriberStalled, metadata: ["stall_timeout_seconds": "\(seconds)"]), abort: true)
            }
        }
    }

    /// Ends the stream (nil: the call is already over) and unregisters it.
    func end(_ error: RPCError?, abort: Bool = false) {
        eventLoop.preconditionInEventLoop()
        guard !ended else { return }
        ended = true
        progressTask?.cancel()
        progressTask = nil
        stallTask?.cancel()
        stallTask = nil
        reauthTask?.cancel()
        reauthTask = nil
        call.call.onWritable = nil
        hub.remove(self)
        guard let error else { return }
        if abort { call.call.abort(error) } else { call.fail(error) }
    }
}

/// One WatchBalance call, on its event loop. A commit that touched the
/// client marks it dirty; the latest balance is read and sent only once the
/// previous update has left the call's queue, so a slow reader gets the
/// newest snapshot and never a backlog.
final class BalanceWatch: @unchecked Sendable {
    typealias Message = Credits_V1_BalanceUpdate

    let call: ProtoCall<Message>
    let core: APICore
    let hub: StreamHub
    let key: LedgerClientKey
    let currency: String
    let details: Bool
    let threshold: Int64
    var eventLoop: EventLoop { call.eventLoop }

    private var dirty = true
    private var waitingDrain = false
    private var ended = false
    private var lastSent: BalanceSnapshot?
    private var reauthTask: RepeatedTask?

    init(call: ProtoCall<Message>, core: APICore, hub: StreamHub, tenant: String, currency: String, client: String,
         details: Bool, threshold: Int64) {
        self.call = call
        self.core = core
        self.hub = hub
        self.key = LedgerClientKey(tenant: tenant, client: client)
        self.currency = currency
        self.details = details
        self.threshold = threshold
    }

    func start() {
        eventLoop.preconditionInEventLoop()
        call.call.onCancelled { [self] in end(nil) }
        hub.add(self)  // before the first read: no change is missed
        reauthTask = StreamAuth.schedule(call, core: core, every: hub.limits.reauthInterval) { [self] in end(nil) }
        sendLatest()
    }

    /// A commit touched the client.
    func changed() {
        guard !ended else { return }
        dirty = true
        sendLatest()
    }

    private func sendLatest() {
        guard !ended, dirty, !waitingDrain, !call.call.isFinished else { return }
        if call.call.queuedResponseBytes > 0 {
            waitingDrain = true
            call.call.whenDrained { [self] in
                waitingDrain = false
                sendLatest()
            }
            return
        }
        dirty = false
        let snapshot: BalanceSnapshot
        do {
            snapshot = try core.readers.reader().balance(tenant: key.tenant, client: key.client, details: details)
        } catch {
            return end(ErrorMapping.rpcError(any: error))
        }
        if let lastSent, Self.sameBalance(lastSent, snapshot) { return }
        var update = Message()
        update.balance = Convert.balance(snapshot, currency: currency, details: details)
        if threshold > 0 {
            let available = snapshot.summary.availableMinor
            update.belowThreshold = available < threshold
            update.crossedBelowThreshold = available < threshold && (lastSent.map { $0.summary.availableMinor >= threshold } ?? true)
        }
        lastSent = snapshot
        call.send(update)
    }

    /// Equal but for the tenant seq (another client's entries move it).
    static func sameBalance(_ a: BalanceSnapshot, _ b: BalanceSnapshot) -> Bool {
        var a = a
        a.summary.seq = b.summary.seq
        return a == b
    }

    func end(_ error: RPCError?) {
        eventLoop.preconditionInEventLoop()
        guard !ended else { return }
        ended = true
        reauthTask?.cancel()
        reauthTask = nil
        hub.remove(self)
        if let error { call.fail(error) }
    }
}

/// Long-lived streams check their caller's key again from time to time.
enum StreamAuth {
    /// Every `interval`: if the key is no longer valid (revoked, tenant
    /// gone), the call is answered UNAUTHENTICATED / PERMISSION_DENIED and
    /// `ended` runs.
    static func schedule<Response>(_ call: ProtoCall<Response>, core: APICore, every interval: TimeAmount,
                                   ended: @escaping () -> Void) -> RepeatedTask {
        call.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { task in
            guard !call.call.isFinished else { return task.cancel() }
            if core.context(call, .read) == nil {
                task.cancel()
                ended()
            }
        }
    }
}
