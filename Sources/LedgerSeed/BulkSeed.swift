import Ledger

/// Offline bulk seeding of a tenant for scale benchmarks (issue 5, 2(e)):
/// K clients and exactly L ledger entries of realistic history, written in
/// one SQLite transaction on a connection of its own — no group-commit
/// writer, no idempotency records, no reads back from the database.
///
/// The money model is the ledger's (Sources/Ledger/Model): every entry is
/// the `EntryPlan` the command would append (same accounts, allocations,
/// draw order, splits), applied to an in-memory copy of the tenant's
/// clients, lots and system accounts; the rows go through the store's
/// `BulkLoad`, which holds all the SQL. Lots, spends and holds are
/// written once, in their final state; clients, accounts and the tenant's
/// last_seq at the end. Tenant, staff key and packages go through the normal
/// commands. `Ledger.verify` recomputes everything afterwards.
///
/// Why not the commands themselves on a `LedgerStore`: measured at 1 M
/// entries (one transaction, synchronous=OFF, 2 GiB cache) they write about
/// 10 k entries/s — over 15 minutes for 10 M. What makes this path faster:
/// entries and allocations are appended in key order; the secondary indexes
/// are built once from sorted rows at the end instead of at random keys row
/// by row; lots, spends and holds (random ids) are staged and moved in key
/// order; and with no other connection on the file the load runs with a
/// rollback journal (new pages written once, not through the WAL).
///
/// Run it with no server on the database: the transaction holds the write
/// lock until the seed is complete, and all of it or none of it is committed.

/// What to seed.
public struct BulkSeedPlan: Sendable {
    public struct StaffKey: Sendable {
        public var keyId: String
        public var label: String
        /// SHA-256 of the secret (the caller makes the token; the ledger never sees it).
        public var secretHash: [UInt8]

        public init(keyId: String, label: String, secretHash: [UInt8]) {
            self.keyId = keyId
            self.label = label
            self.secretHash = secretHash
        }
    }

    public static let maxClients = 10_000_000
    public static let maxEntries = 1_000_000_000

    public var tenantId: String
    public var tenantName: String
    public var currency = "EUR"
    /// K: clients `<clientPrefix>0` … `<clientPrefix>K-1`.
    public var clients: Int
    /// L: ledger entries written in total (exactly), at least one per client.
    public var entries: Int
    public var clientPrefix = "lg-client-"
    public var centerId = "c1"
    /// Makes the history (clients chosen, kinds, amounts, times) reproducible; ids are random as in the service.
    public var randomSeed: UInt64 = 1
    /// Entry times are spread evenly over this many days before now.
    public var historyDays = 365
    /// Each client's last entry is a credit order of this much, without expiry:
    /// its available balance at the end is at least this.
    public var reserveMinor: Int64 = 2_000_000
    /// A staff key created with the tenant, in the same transaction.
    public var staffKey: StaffKey?
    /// SQLite page cache during the seed (the normal default is restored after).
    public var cacheMiB = 2_048

    public init(tenantId: String, tenantName: String? = nil, clients: Int, entries: Int) {
        self.tenantId = tenantId
        self.tenantName = tenantName ?? "seeded \(tenantId)"
        self.clients = clients
        self.entries = entries
    }

    /// Throws `invalidArgument` naming every bad field.
    public func validate() throws(LedgerError) {
        var v = FieldValidator()
        v.id(tenantId, "tenant_id")
        v.text(tenantName, "tenant_name", max: 200, required: true)
        v.check(currency.utf8.count == 3 && currency.utf8.allSatisfy { $0 >= 65 && $0 <= 90 }, "currency",
                "must be an ISO 4217 code, three capital letters")
        v.check(clients >= 1 && clients <= Self.maxClients, "clients", "must be 1…\(Self.maxClients)")
        v.check(entries >= 1 && entries <= Self.maxEntries, "entries", "must be 1…\(Self.maxEntries)")
        v.check(entries >= clients, "entries", "must be at least clients (\(clients)): every client gets its reserve entry")
        v.id(clientPrefix + String(max(0, clients - 1)), "client_prefix")  // the longest client id
        v.id(centerId, "center_id")
        v.check(historyDays >= 1 && historyDays <= 3_650, "history_days", "must be 1…3650")
        v.check(reserveMinor >= 1 && reserveMinor <= LedgerLimits.maxAmountMinor, "reserve_minor",
                "must be 1…\(LedgerLimits.maxAmountMinor)")
        v.check(cacheMiB >= 2 && cacheMiB <= 65_536, "cache_mib", "must be 2…65536")
        if let key = staffKey {
            v.id(key.keyId, "key_id")
            v.text(key.label, "key_label", max: 200)
            v.check(key.secretHash.count == 32, "secret_hash", "must be 32 bytes")
        }
        try v.finish()
    }
}

/// What a seed wrote and how long it took.
public struct BulkSeedReport: Sendable, Equatable {
    public var tenantId: String
    public var clients = 0
    public var entries = 0
    public var lots = 0
    public var spends = 0
    public var holds = 0
    public var reversals = 0
    public var allocations = 0
    /// Time of the first and the last entry.
    public var firstEntryMicros: Int64 = 0
    public var lastEntryMicros: Int64 = 0
    /// Whether the load ran with a rollback journal (no other connection on the database) rather than the WAL.
    public var rollbackJournal = false
    /// Whether the secondary indexes were dropped for the load and built again after it.
    public var indexesRebuilt = false
    /// Generating and inserting the rows; moving the staged rows in key order and
    /// building the indexes; the commit; the closing WAL checkpoint.
    public var insertSeconds = 0.0
    public var indexSeconds = 0.0
    public var commitSeconds = 0.0
    public var checkpointSeconds = 0.0

    public var totalSeconds: Double { insertSeconds + indexSeconds + commitSeconds + checkpointSeconds }
}

public enum BulkSeed {
    /// How often `progress` is called (entries written).
    public static let progressInterval = 100_000

    /// Creates the tenant (refusing one that exists), the plan's staff key,
    /// a small package catalog and the history, in one transaction; then
    /// restores the connection's normal settings, the planner statistics, and
    /// checkpoints the WAL. `clock` gives "now": every entry time is before it.
    /// The caller holds the database's `DatabaseLock` (the seed is its only writer).
    public static func run(path: String, plan: BulkSeedPlan, clock: LedgerClock = SystemClock(),
                           progress: ((_ entriesWritten: Int) -> Void)? = nil) throws -> BulkSeedReport {
        try plan.validate()
        let load = try BulkLoad(path: path, clock: clock, cacheMiB: plan.cacheMiB)
        var report: BulkSeedReport
        do {
            report = try seedInOneTransaction(load: load, plan: plan, clock: clock, progress: progress)
        } catch {
            try? load.restoreSettings()
            throw error
        }
        let restoreStart = monotonicSeconds()
        try load.restoreSettings()
        report.rollbackJournal = load.rollbackJournal
        report.commitSeconds += monotonicSeconds() - restoreStart
        try load.installPlannerStatistics()
        let checkpointStart = monotonicSeconds()
        try load.checkpoint()
        report.checkpointSeconds = monotonicSeconds() - checkpointStart
        return report
    }

    private static func seedInOneTransaction(load: BulkLoad, plan: BulkSeedPlan, clock: LedgerClock,
                                             progress: ((Int) -> Void)?) throws -> BulkSeedReport {
        try load.begin()
        do {
            let started = monotonicSeconds()
            let seeder = try BulkSeeder(load: load, plan: plan, clock: clock, progress: progress)
            try seeder.createTenantKeyAndPackages()  // refuses an existing tenant before anything else changes
            try load.dropIndexes(plannedEntries: plan.entries)
            try seeder.writeHistory()
            let inserted = monotonicSeconds()
            try load.moveStagedRows()
            try load.rebuildIndexes()
            let indexed = monotonicSeconds()
            try load.commit()
            var report = seeder.report
            report.indexesRebuilt = load.indexesDropped
            report.insertSeconds = inserted - started
            report.indexSeconds = indexed - inserted
            report.commitSeconds = monotonicSeconds() - indexed
            return report
        } catch {
            load.rollback()
            throw error
        }
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// "Now" for the normal commands the seeder runs (tenant, packages, key), set by the seeder.
private final class SeedClock: LedgerClock, @unchecked Sendable {
    var micros: Int64
    init(_ micros: Int64) { self.micros = micros }
    func nowMicros() -> Int64 { micros }
}

/// A lot while the seed runs: written once, when no later entry can touch it
/// (exhausted and not owed by the client's last spend), or at the end.
private final class SeedLot {
    let id: String
    let origin: LotOrigin
    let amountMinor: Int64
    var remainingMinor: Int64 = 0
    var heldMinor: Int64 = 0
    let validUntilMicros: Int64?
    let package: CreditPackage?
    let paymentRef: String?
    let priceMinor: Int64
    let note: String
    let createdSeq: Int64
    let createdMicros: Int64

    init(id: String, origin: LotOrigin, amountMinor: Int64, validUntilMicros: Int64?, package: CreditPackage?,
         paymentRef: String?, priceMinor: Int64, note: String, createdSeq: Int64, createdMicros: Int64) {
        self.id = id
        self.origin = origin
        self.amountMinor = amountMinor
        self.validUntilMicros = validUntilMicros
        self.package = package
        self.paymentRef = paymentRef
        self.priceMinor = priceMinor
        self.note = note
        self.createdSeq = createdSeq
        self.createdMicros = createdMicros
    }

    var freeMinor: Int64 { remainingMinor - heldMinor }

    /// The lot as the money model sees it (its state follows its amounts).
    func value(client: String) -> Lot {
        Lot(id: id, clientId: client, origin: origin, centerId: "", amountMinor: amountMinor, remainingMinor: remainingMinor,
            heldMinor: heldMinor, validFromMicros: nil, validUntilMicros: validUntilMicros, scope: package?.scope ?? .any,
            packageId: package?.id, paymentRef: paymentRef, priceMinor: priceMinor, note: note, createdSeq: createdSeq,
            createdMicros: createdMicros, state: remainingMinor == 0 ? .exhausted : .active)
    }
}

/// A spend while it may still be reversed (the client's latest); its row is
/// written when the next spend replaces it, or at the end.
private final class SeedSpend {
    let id: String
    let amountMinor: Int64
    var reversedMinor: Int64 = 0
    let reason: SpendReason
    let bookingRef: String
    let serviceCategory: String?
    let holdId: String?
    let seq: Int64
    let createdMicros: Int64
    /// Lots drawn, in allocation order, with the part not yet returned.
    var owed: [(lot: SeedLot, minor: Int64)]

    init(id: String, amountMinor: Int64, reason: SpendReason, bookingRef: String, serviceCategory: String?, holdId: String?,
         seq: Int64, createdMicros: Int64, owed: [(lot: SeedLot, minor: Int64)]) {
        self.id = id
        self.amountMinor = amountMinor
        self.reason = reason
        self.bookingRef = bookingRef
        self.serviceCategory = serviceCategory
        self.holdId = holdId
        self.seq = seq
        self.createdMicros = createdMicros
        self.owed = owed
    }
}

private final class SeedClient {
    let id: String
    let availableAccount: String
    let heldAccount: String
    var availableMinor: Int64 = 0
    var heldMinor: Int64 = 0
    var lastSeq: Int64 = 0
    /// Lots with credit left, in draw order.
    var active: [SeedLot] = []
    /// Exhausted lots the last spend still owes (a reversal may refill them).
    var parked: [SeedLot] = []
    var lastSpend: SeedSpend?

    init(id: String) {
        self.id = id
        availableAccount = Account.available(id)
        heldAccount = Account.held(id)
    }

    /// Inserts `lot` among the active lots in draw order (`Draws.precedes`).
    func activate(_ lot: SeedLot) {
        let index = active.firstIndex {
            Draws.precedes(validUntilMicros: lot.validUntilMicros, createdSeq: lot.createdSeq, $0.validUntilMicros, $0.createdSeq)
        } ?? active.endIndex
        active.insert(lot, at: index)
    }

    /// The active or parked lot `id`.
    func lot(_ lotId: String) -> SeedLot {
        guard let lot = active.first(where: { $0.id == lotId }) ?? parked.first(where: { $0.id == lotId }) else {
            preconditionFailure("client \(id) has no lot \(lotId)")
        }
        return lot
    }
}

/// Generates and writes the history, inside the caller's transaction.
private final class BulkSeeder {
    static let microsPerDay: Int64 = 86_400_000_000
    /// Below this much free credit a client's next event is a purchase or order.
    static let lowWaterMinor: Int64 = 2_000
    /// Above it no more purchases or orders (keeps a client's active lots few, as in real use).
    static let highWaterMinor: Int64 = 80_000
    static let serviceCategories: [String?] = ["class", "spa", "pt", nil]
    static let spendReasons: [SpendReason] = [.booking, .checkIn, .service]

    let load: BulkLoad
    let plan: BulkSeedPlan
    let tenant: String
    let nowMicros: Int64
    let startMicros: Int64
    let stepMicros: Int64
    let holdWindowMicros: Int64
    let progress: ((Int) -> Void)?
    var rng: SplitMix64
    var clients: [SeedClient]
    var packages: [CreditPackage] = []
    var systemBalances: [String: Int64] = [:]
    var seq: Int64 = 0
    var report: BulkSeedReport

    init(load: BulkLoad, plan: BulkSeedPlan, clock: LedgerClock, progress: ((Int) -> Void)?) throws {
        self.load = load
        self.plan = plan
        self.progress = progress
        tenant = plan.tenantId
        nowMicros = clock.nowMicros()
        // Entries fill [start, now − 1 s): one slot of `step` per entry, in seq order.
        let endMicros = nowMicros - 1_000_000
        startMicros = endMicros - Int64(plan.historyDays) * Self.microsPerDay
        stepMicros = max(1, (endMicros - startMicros) / Int64(plan.entries))
        // A hold is captured or released by the next entry or two; it must still be open then.
        holdWindowMicros = max(2 * Self.microsPerDay, 3 * stepMicros)
        rng = SplitMix64(seed: plan.randomSeed)
        clients = (0..<plan.clients).map { SeedClient(id: plan.clientPrefix + String($0)) }
        report = BulkSeedReport(tenantId: plan.tenantId)

        try load.prepareInserts()
    }

    /// Every entry — the history, then each client's reserve — and the final
    /// rows of lots, spends, clients, accounts and the tenant's seq.
    func writeHistory() throws {
        let history = plan.entries - plan.clients
        var left = history
        while left > 0 {
            left -= try event(clients[rng.below(clients.count)], maxEntries: left)
        }
        precondition(left == 0 && seq == Int64(history), "history wrote \(seq) entries, planned \(history)")
        for client in clients { try reserve(client) }
        try finish()
        precondition(seq == Int64(plan.entries) && report.entries == plan.entries,
                     "wrote \(seq) entries, planned \(plan.entries)")
        report.clients = clients.count
        try load.setLastSeq(tenant: tenant, seq: seq)
    }

    // MARK: Tenant, key and catalog through the normal commands

    func createTenantKeyAndPackages() throws {
        let clock = SeedClock(startMicros - Self.microsPerDay)
        let tenantCommand = CreateTenant(id: tenant, name: plan.tenantName, currency: plan.currency, allowDirectory: false)
        _ = try load.apply(tenantCommand, clock: clock)  // throws alreadyExists for an existing tenant
        let catalog: [(String, Int64, Int64, Int32?)] = [
            ("10 credits", 10_000, 9_000, 730),
            ("25 credits", 25_000, 21_000, 1_095),
            ("Open 5", 5_000, 5_000, nil),
            ("Open 50", 50_000, 42_000, nil),
        ]
        for (name, credits, price, days) in catalog {
            let command = CreatePackage(tenantId: tenant, name: name, creditsMinor: credits, priceMinor: price, validityDays: days,
                                        scope: .any, idempotencyKey: nil)
            packages.append(try load.apply(command, clock: clock))
        }
        if let key = plan.staffKey {
            clock.micros = nowMicros
            let command = CreateAPIKey(keyId: key.keyId, tenantId: tenant, role: .staff, label: key.label, secretHash: key.secretHash)
            _ = try load.apply(command, clock: clock)
        }
    }

    // MARK: History

    /// One client event; returns the entries it wrote (1…3, at most `maxEntries`).
    private func event(_ client: SeedClient, maxEntries: Int) throws -> Int {
        precondition(client.heldMinor == 0, "holds are resolved within their event")
        let free = client.availableMinor
        if free < Self.lowWaterMinor { return try grant(client) }
        // About 1 in 4 events adds credit, 1 in 30 refunds the last spend, 1 in 6 books a hold; the rest spend.
        let roll = rng.unit()
        if roll < 0.25 {
            return free <= Self.highWaterMinor ? try grant(client) : try spend(client)
        }
        if roll < 0.285 {
            guard let last = client.lastSpend, last.reversedMinor < last.amountMinor else { return try spend(client) }
            return try reverse(client, last)
        }
        if roll < 0.45 && maxEntries >= 2 && holdWindowMicros <= LedgerLimits.maxHoldSeconds * 1_000_000 {
            return try holdCycle(client, maxEntries: maxEntries)
        }
        return try spend(client)
    }

    /// A package purchase or a staff credit order (PurchasePackage, CreateCreditOrder).
    private func grant(_ client: SeedClient) throws -> Int {
        let seq = self.seq + 1
        let time = timeOf(seq)
        let key = "seed-\(seq)"
        let lot: SeedLot
        let entry: EntryPlan
        if rng.chance(0.6) {
            let package = packages[rng.below(packages.count)]
            lot = SeedLot(id: IDs.make("lot", nowMicros: nowMicros), origin: .purchase, amountMinor: package.creditsMinor,
                          validUntilMicros: package.validityDays.map { time + Int64($0) * Self.microsPerDay }, package: package,
                          paymentRef: "pay-\(seq)", priceMinor: package.priceMinor, note: package.name, createdSeq: seq, createdMicros: time)
            entry = EntryPlans.fundLot(type: .purchase, clientId: client.id, lotId: lot.id, amountMinor: lot.amountMinor,
                                       fundingAccount: Account.purchases, centerId: plan.centerId, paymentRef: lot.paymentRef ?? "",
                                       idempotencyKey: key, reason: "purchase", note: lot.note)
        } else {
            let amount = rng.int64(100...1_000) * 50
            let validUntil: Int64? = rng.chance(0.5) ? time + rng.int64(730...1_825) * Self.microsPerDay : nil
            lot = SeedLot(id: IDs.make("lot", nowMicros: nowMicros), origin: .order, amountMinor: amount, validUntilMicros: validUntil, package: nil,
                          paymentRef: nil, priceMinor: amount, note: "front desk", createdSeq: seq, createdMicros: time)
            entry = EntryPlans.fundLot(type: .order, clientId: client.id, lotId: lot.id, amountMinor: amount, fundingAccount: Account.orders,
                                       centerId: plan.centerId, paymentRef: "", idempotencyKey: key, reason: "credit_order", note: lot.note)
        }
        try append(entry, client, lots: [lot])
        client.activate(lot)
        report.lots += 1
        return 1
    }

    /// The final credit order of each client: its reserve for later load, drawn last (no expiry, newest).
    private func reserve(_ client: SeedClient) throws {
        let seq = self.seq + 1
        let lot = SeedLot(id: IDs.make("lot", nowMicros: nowMicros), origin: .order, amountMinor: plan.reserveMinor, validUntilMicros: nil, package: nil,
                          paymentRef: nil, priceMinor: 0, note: "load test reserve", createdSeq: seq, createdMicros: timeOf(seq))
        try append(EntryPlans.fundLot(type: .order, clientId: client.id, lotId: lot.id, amountMinor: lot.amountMinor,
                                      fundingAccount: Account.orders, centerId: plan.centerId, paymentRef: "",
                                      idempotencyKey: "seed-\(seq)", reason: "credit_order", note: lot.note), client, lots: [lot])
        client.activate(lot)
        report.lots += 1
    }

    private func drawAmount(_ client: SeedClient) -> Int64 {
        min(client.availableMinor, rng.int64(2...120) * 50)
    }

    /// SpendCredits: draws from the lots in draw order (`Draws.draw`).
    private func spend(_ client: SeedClient) throws -> Int {
        let amount = drawAmount(client)
        let allocations = draw(amount, from: client, hold: false)
        let id = IDs.make("spd", nowMicros: nowMicros)
        let seq = self.seq + 1
        let booking = "bk-\(seq)"
        let reason = Self.spendReasons[rng.below(Self.spendReasons.count)]
        let category = Self.serviceCategories[rng.below(Self.serviceCategories.count)]
        let (entrySeq, time) = try append(EntryPlans.spend(clientId: client.id, spendId: id, amountMinor: amount, reason: reason,
                                                           centerId: plan.centerId, bookingRef: booking, idempotencyKey: "seed-\(seq)",
                                                           allocations: allocations), client, lots: client.active)
        try replaceLastSpend(client, with: SeedSpend(
            id: id, amountMinor: amount, reason: reason, bookingRef: booking, serviceCategory: category, holdId: nil,
            seq: entrySeq, createdMicros: time, owed: allocations.map { (client.lot($0.lotId), -$0.remainingDeltaMinor) }))
        return 1
    }

    /// CreateHold, then CaptureHold (whole or part, the rest released) or ReleaseHold, split by `Splits`.
    private func holdCycle(_ client: SeedClient, maxEntries: Int) throws -> Int {
        let amount = drawAmount(client)
        let pinned = draw(amount, from: client, hold: true)
        let holdId = IDs.make("hld", nowMicros: nowMicros)
        let holdSeq = self.seq + 1
        let booking = "bk-\(holdSeq)"
        let category = Self.serviceCategories[rng.below(Self.serviceCategories.count)]
        let (_, holdTime) = try append(EntryPlans.hold(clientId: client.id, holdId: holdId, amountMinor: amount, centerId: plan.centerId,
                                                       bookingRef: booking, idempotencyKey: "seed-\(holdSeq)", allocations: pinned),
                                       client, lots: client.active)
        var hold = Hold(id: holdId, clientId: client.id, amountMinor: amount, capturedMinor: 0, state: .held,
                        expiresMicros: holdTime + holdWindowMicros, centerId: plan.centerId, bookingRef: booking,
                        serviceCategory: category, membershipId: nil, seq: holdSeq, createdMicros: holdTime, spendId: nil, allocations: [])
        let pins = Splits.captureOrder(pinned.map { Splits.Pin(lot: client.lot($0.lotId).value(client: client.id), heldMinor: $0.heldDeltaMinor) })
        let key = "seed-\(self.seq + 1)"
        let roll = rng.unit()
        if roll < 0.15 {
            try append(EntryPlans.release(hold: hold, automatic: false, idempotencyKey: key, pins: pins), client, lots: client.active)
            hold.state = .released
            try stage(hold)
            return 2
        }
        let partial = roll < 0.30 && maxEntries >= 3 && amount >= 100
        let capture = partial ? rng.int64(1...(amount - 1)) : amount
        let spendId = IDs.make("spd", nowMicros: nowMicros)
        let reason: SpendReason = rng.chance(0.8) ? .checkIn : .booking
        let entries = EntryPlans.capture(hold: hold, spendId: spendId, captureMinor: capture, reason: reason, idempotencyKey: key, pins: pins)
        let (captureSeq, captureTime) = try append(entries[0], client, lots: client.active)
        for release in entries.dropFirst() { try append(release, client, lots: client.active) }
        hold.state = .captured
        hold.capturedMinor = capture
        hold.spendId = spendId
        try stage(hold)
        try replaceLastSpend(client, with: SeedSpend(
            id: spendId, amountMinor: capture, reason: reason, bookingRef: booking, serviceCategory: category, holdId: holdId,
            seq: captureSeq, createdMicros: captureTime, owed: entries[0].allocations.map { (client.lot($0.lotId), -$0.remainingDeltaMinor) }))
        return capture < amount ? 3 : 2
    }

    /// ReverseSpend of the client's last spend: credit returns to its lots,
    /// most recently drawn first (`EntryPlans.reversal`, `Splits.returning`).
    private func reverse(_ client: SeedClient, _ spend: SeedSpend) throws -> Int {
        let reversible = spend.amountMinor - spend.reversedMinor
        let amount = rng.chance(0.5) ? reversible : rng.int64(1...reversible)
        let value = Spend(id: spend.id, clientId: client.id, amountMinor: spend.amountMinor, reversedMinor: spend.reversedMinor,
                          reason: spend.reason, centerId: plan.centerId, bookingRef: spend.bookingRef, serviceCategory: spend.serviceCategory,
                          holdId: spend.holdId, seq: spend.seq, createdMicros: spend.createdMicros, allocations: [])
        let entry: EntryPlan
        do {
            entry = try EntryPlans.reversal(spend: value, amountMinor: amount, reason: "refund", idempotencyKey: "seed-\(seq + 1)",
                                            owed: spend.owed.map { Splits.Owed(lotId: $0.lot.id, minor: $0.minor) })
        } catch {
            preconditionFailure("reversing \(amount) of spend \(spend.id), \(reversible) reversible: \(error)")
        }
        for allocation in entry.allocations {
            let i = spend.owed.firstIndex { $0.lot.id == allocation.lotId }!
            spend.owed[i].minor -= allocation.remainingDeltaMinor
            precondition(spend.owed[i].minor >= 0, "returning more than spend \(spend.id) drew")
        }
        let owedLots = spend.owed.map(\.lot)
        let refilled = entry.allocations.map { a in owedLots.first { $0.id == a.lotId }! }.filter { $0.remainingMinor == 0 }
        try append(entry, client, lots: owedLots)
        spend.reversedMinor += amount
        for lot in refilled {
            client.parked.removeAll { $0 === lot }
            client.activate(lot)
        }
        report.reversals += 1
        return 1
    }

    /// `Draws.draw` over the client's active lots (all valid, scope any).
    private func draw(_ amountMinor: Int64, from client: SeedClient, hold: Bool) -> [Allocation] {
        precondition(amountMinor > 0 && amountMinor <= client.availableMinor)
        do {
            return try Draws.draw(amountMinor, from: client.active.map { $0.value(client: client.id) }, hold: hold)
        } catch {
            preconditionFailure("client \(client.id): lots hold less than its available balance: \(error)")
        }
    }

    /// The previous last spend can no longer be reversed here: write its row
    /// and the exhausted lots it owed. Lots the new spend exhausted wait.
    private func replaceLastSpend(_ client: SeedClient, with spend: SeedSpend) throws {
        try flushSpend(client)
        for lot in client.parked { try flushLot(lot, client: client) }
        client.parked = client.active.filter { $0.remainingMinor == 0 }
        client.active.removeAll { $0.remainingMinor == 0 }
        client.lastSpend = spend
    }

    // MARK: The entry, as appendEntry writes it

    private func timeOf(_ seq: Int64) -> Int64 {
        startMicros + (seq - 1) * stepMicros + Int64(truncatingIfNeeded: UInt64(bitPattern: seq &* 0x2545_F491_4F6C_DD1D) % UInt64(stepMicros))
    }

    /// Writes one planned entry (its invariants were checked when planned):
    /// the client's balances move by `plan.clientDeltas`, the system
    /// accounts by `plan.systemDeltas`, and each allocation's lot (found
    /// among `lots`) within `LotRules.checkBounds`.
    @discardableResult
    private func append(_ entry: EntryPlan, _ client: SeedClient, lots: [SeedLot]) throws -> (seq: Int64, timeMicros: Int64) {
        precondition(entry.clientId == client.id, "an entry of client \(entry.clientId) written for \(client.id)")
        seq += 1
        let time = timeOf(seq)
        let deltas = entry.clientDeltas
        client.availableMinor += deltas.availableMinor
        client.heldMinor += deltas.heldMinor
        for (account, delta) in entry.systemDeltas { systemBalances[account, default: 0] += delta }
        precondition(client.availableMinor >= 0 && client.heldMinor >= 0, "client \(client.id) balance would go negative")
        precondition(client.availableMinor + client.heldMinor <= LedgerLimits.maxBalanceMinor, "client \(client.id) balance out of range")
        try load.insertEntry(tenant: tenant, seq: seq, entry, availableAfterMinor: client.availableMinor, heldAfterMinor: client.heldMinor,
                             timeMicros: time)
        for (ordinal, allocation) in entry.allocations.enumerated() {
            guard let lot = lots.first(where: { $0.id == allocation.lotId }) else {
                preconditionFailure("entry \(seq) allocates to lot \(allocation.lotId), not among the client's")
            }
            precondition(allocation.remainingDeltaMinor != 0 || allocation.heldDeltaMinor != 0, "empty allocation")
            lot.remainingMinor += allocation.remainingDeltaMinor
            lot.heldMinor += allocation.heldDeltaMinor
            LotRules.checkBounds(lotId: lot.id, amountMinor: lot.amountMinor, remainingMinor: lot.remainingMinor, heldMinor: lot.heldMinor)
            try load.insertAllocation(tenant: tenant, seq: seq, ordinal: ordinal, allocation)
        }
        client.lastSeq = seq
        if report.entries == 0 { report.firstEntryMicros = time }
        report.lastEntryMicros = time
        report.entries += 1
        report.allocations += entry.allocations.count
        if let progress, report.entries % BulkSeed.progressInterval == 0 { progress(report.entries) }
        return (seq, time)
    }

    // MARK: Final rows

    private func flushSpend(_ client: SeedClient) throws {
        guard let s = client.lastSpend else { return }
        try load.stageSpend(Spend(id: s.id, clientId: client.id, amountMinor: s.amountMinor, reversedMinor: s.reversedMinor, reason: s.reason,
                                  centerId: plan.centerId, bookingRef: s.bookingRef, serviceCategory: s.serviceCategory, holdId: s.holdId,
                                  seq: s.seq, createdMicros: s.createdMicros, allocations: []), tenant: tenant)
        client.lastSpend = nil
        report.spends += 1
    }

    private func flushLot(_ lot: SeedLot, client: SeedClient) throws {
        var value = lot.value(client: client.id)
        value.centerId = plan.centerId
        try load.stageLot(value, tenant: tenant)
    }

    private func stage(_ h: Hold) throws {
        try load.stageHold(h, tenant: tenant)
        report.holds += 1
    }

    /// Every remaining lot and spend, each client's balance, the system accounts and the tenant's seq.
    private func finish() throws {
        for client in clients {
            precondition(client.heldMinor == 0, "client \(client.id) has credit held at the end")
            try flushSpend(client)
            for lot in client.parked + client.active { try flushLot(lot, client: client) }
            let lotsMinor = client.active.reduce(Int64(0)) { $0 + $1.remainingMinor }
            precondition(lotsMinor == client.availableMinor, "client \(client.id): lots hold \(lotsMinor), balance \(client.availableMinor)")
            precondition(client.availableMinor >= plan.reserveMinor, "client \(client.id) ends below its reserve")
            try load.insertClient(tenant: tenant, client: client.id, availableMinor: client.availableMinor, heldMinor: client.heldMinor,
                                  lastSeq: client.lastSeq)
            client.parked = []
            client.active = []
        }
        for (account, balance) in systemBalances.sorted(by: { $0.key < $1.key }) {
            try load.insertAccount(tenant: tenant, account: account, balanceMinor: balance)
        }
        let clientTotal = clients.reduce(Int64(0)) { $0 + $1.availableMinor + $1.heldMinor }
        precondition(systemBalances.values.reduce(0, +) + clientTotal == 0, "accounts do not sum to zero")
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
