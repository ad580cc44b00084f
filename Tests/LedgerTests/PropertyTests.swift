import Foundation
import Testing
@testable import Ledger

/// A model of what the ledger should show: lots with remaining/held credit,
/// spends (what they still owe each lot), holds and write-offs. Credit of a
/// lot past valid_until counts for nothing (whenever its expiry entry is
/// written), so the model drops it at once.
struct LedgerModel {
    struct ModelLot {
        var id: String
        var client: String
        var center: String
        var validUntil: Int64?
        var scope: Scope
        var order: Int
        var remaining: Int64
        var held: Int64
        var free: Int64 { remaining - held }
    }
    struct ModelSpend {
        var id: String
        var client: String
        var amount: Int64
        var reversed: Int64
        /// (lot index, minor still owed) in draw order.
        var owed: [(Int, Int64)]
    }
    struct ModelHold {
        var id: String
        var client: String
        var amount: Int64
        var state: HoldState
        var expires: Int64
        var pins: [(Int, Int64)]
    }
    struct ModelWriteOff {
        var id: String
        var client: String
        var amount: Int64
        var voided: Bool
        var owed: [(Int, Int64)]
    }

    var lots: [ModelLot] = []
    var lotIndex: [String: Int] = [:]
    var spends: [ModelSpend] = []
    var holds: [ModelHold] = []
    var writeOffs: [ModelWriteOff] = []

    static func live(_ lot: ModelLot, _ now: Int64) -> Bool { lot.validUntil.map { now < $0 } ?? true }

    static func drawOrder(_ a: ModelLot, _ b: ModelLot) -> Bool {
        switch (a.validUntil, b.validUntil) {
        case let (x?, y?) where x != y: return x < y
        case (nil, _?): return false
        case (_?, nil): return true
        default: return a.order < b.order
        }
    }

    mutating func addLot(_ lot: Lot) {
        lotIndex[lot.id] = lots.count
        lots.append(ModelLot(id: lot.id, client: lot.clientId, center: lot.centerId, validUntil: lot.validUntilMicros, scope: lot.scope,
                             order: lots.count, remaining: lot.amountMinor, held: 0))
    }

    /// Credit that no longer counts: free credit of lots past valid_until.
    mutating func dropExpired(now: Int64) {
        for i in lots.indices where !Self.live(lots[i], now) { lots[i].remaining = lots[i].held }
    }

    /// Lot indices a draw may use, in draw order (nil center: no scope check).
    func eligible(client: String, now: Int64, center: String?, category: String?, membership: String?) -> [Int] {
        lots.indices.filter { i in
            let lot = lots[i]
            return lot.client == client && lot.free > 0 && Self.live(lot, now)
                && (center.map { lot.scope.admits(center: $0, serviceCategory: category, membershipId: membership) } ?? true)
        }.sorted { Self.drawOrder(lots[$0], lots[$1]) }
    }

    /// (lot index, amount) taken, or the eligible total when short.
    func draw(_ amount: Int64, from eligible: [Int]) -> Result<[(Int, Int64)], LedgerError> {
        var left = amount
        var takes: [(Int, Int64)] = []
        for i in eligible where left > 0 {
            let take = min(left, lots[i].free)
            takes.append((i, take))
            left -= take
        }
        if left > 0 {
            return .failure(.insufficientCredits(availableMinor: eligible.reduce(0) { $0 + lots[$1].free }, requestedMinor: amount))
        }
        return .success(takes)
    }

    /// Returns credit to the lots owed, most recently drawn first.
    mutating func giveBack(_ amount: Int64, owed: inout [(Int, Int64)], now: Int64) -> [(Int, Int64)] {
        var left = amount
        var gives: [(Int, Int64)] = []
        for k in owed.indices.reversed() where left > 0 && owed[k].1 > 0 {
            let give = min(left, owed[k].1)
            owed[k].1 -= give
            lots[owed[k].0].remaining += give
            gives.append((owed[k].0, give))
            left -= give
        }
        precondition(left == 0)
        dropExpired(now: now)
        return gives
    }

    mutating func release(holdAt h: Int, state: HoldState, now: Int64) {
        for (i, minor) in holds[h].pins { lots[i].held -= minor }
        holds[h].state = state
        dropExpired(now: now)
    }

    func available(_ client: String, now: Int64) -> Int64 {
        lots.filter { $0.client == client && Self.live($0, now) }.reduce(0) { $0 + $1.free }
    }

    func held(_ client: String) -> Int64 {
        lots.filter { $0.client == client }.reduce(0) { $0 + $1.held }
    }
}

/// One random run against a real ledger, checking everything after every step.
final class PropertyRun {
    let fx: Fixture
    var rng: SplitMix64
    let maintenance: Bool
    let seed: UInt64
    var model = LedgerModel()
    let clients: [String]
    var packages: [CreditPackage] = []
    let centers = ["c1", "c2", "c3"]
    /// Per client: entries seen so far and the running balance they add up to.
    var cursor: [String: (seq: Int64, available: Int64, held: Int64)] = [:]
    /// Retries the last applied command; returns a mismatch or nil.
    var retryLast: (() -> String?)?
    var step = 0
    var counts: [String: Int] = [:]
    /// Every lot as the model's `LotRules` say the store's entries leave it
    /// (each entry's allocations applied in seq order, bounds asserted).
    var lotMirror: [String: Lot] = [:]

    init(seed: UInt64, maintenance: Bool) throws {
        self.seed = seed
        self.maintenance = maintenance
        rng = SplitMix64(seed: seed)
        // With maintenance: the writer runs it after any clock advance (the
        // interval is 1 ms of test-clock time); advanceClock() waits for it.
        fx = try Fixture(maintenanceMillis: maintenance ? 1 : 1_000_000_000_000)
        clients = (0..<rng.int(3...5)).map { "client-\($0)" }
        for client in clients { cursor[client] = (0, 0, 0) }
    }

    var now: Int64 { fx.now }

    func context() -> Comment { "seed \(seed) step \(step) (maintenance: \(maintenance))" }

    func randomScope() -> Scope {
        if rng.chance(0.4) { return .any }
        var scope = Scope()
        if rng.chance(0.5) { scope.centers = centers.filter { _ in rng.chance(0.5) } }
        if rng.chance(0.4) { scope.serviceCategories = ["yoga", "spa"].filter { _ in rng.chance(0.6) } }
        if rng.chance(0.2) { scope.membershipIds = ["m1"] }
        return scope
    }

    func setUp() throws {
        packages.append(try fx.apply(CreatePackage(tenantId: fx.tenant, name: "Open 500", creditsMinor: 500, priceMinor: 450, validityDays: nil, scope: .any, idempotencyKey: nil)))
        packages.append(try fx.apply(CreatePackage(tenantId: fx.tenant, name: "Week 300", creditsMinor: 300, priceMinor: 300, validityDays: 7,
                                                   scope: Scope(centers: ["c1", "c2"]), idempotencyKey: nil)))
        packages.append(try fx.apply(CreatePackage(tenantId: fx.tenant, name: "Yoga 200", creditsMinor: 200, priceMinor: 150, validityDays: 30,
                                                   scope: Scope(serviceCategories: ["yoga"]), idempotencyKey: nil)))
        for client in clients {
            let result = try fx.apply(fx.orderCmd(client, 300))
            model.addLot(result.lot)
        }
        try checkAll()
    }

    func run(steps: Int) throws {
        try setUp()
        for s in 1...steps {
            step = s
            try randomStep()
            try checkAll()
        }
    }

    // MARK: Steps

    func randomStep() throws {
        let roll = rng.int(0...99)
        switch roll {
        case 0..<9: try purchase()
        case 9..<19: try creditOrder()
        case 19..<39: try spend()
        case 39..<50: try hold()
        case 50..<58: try capture()
        case 58..<63: try release()
        case 63..<71: try reverse()
        case 71..<76: try writeOff()
        case 76..<80: try voidWriteOff()
        case 80..<88: try adjust()
        case 88..<97: try advanceClock()
        default: try retry()
        }
    }

    func count(_ name: String) { counts[name, default: 0] += 1 }

    // MARK: The money model's plans (Sources/Ledger/Model), from the test model's lots

    /// A test-model lot as the ledger's `Lot` value (created_seq: arrival order).
    func asLot(_ i: Int) -> Lot {
        let l = model.lots[i]
        return Lot(id: l.id, clientId: l.client, origin: .order, centerId: l.center, amountMinor: max(1, l.remaining), remainingMinor: l.remaining,
                   heldMinor: l.held, validFromMicros: nil, validUntilMicros: l.validUntil, scope: l.scope, packageId: nil, paymentRef: nil,
                   priceMinor: 0, note: "", createdSeq: Int64(l.order), createdMicros: 0, state: .active)
    }

    /// What `Draws` plans for a draw from the client's lots now.
    func plannedDraw(_ client: String, _ amount: Int64, center: String?, category: String?, membership: String?,
                     hold: Bool) -> Result<[Allocation], LedgerError> {
        let lots = model.lots.indices.filter { model.lots[$0].client == client }.map(asLot).sorted(by: Draws.precedes)
        do {
            return .success(try Draws.draw(amount, from: Draws.eligible(lots, now: now, centerId: center, serviceCategory: category,
                                                                        membershipId: membership), hold: hold))
        } catch {
            return .failure(error)
        }
    }

    /// The model's plan agrees with the test's own reckoning (and so, where
    /// the step checks the ledger against that, with the store).
    func expectPlan(_ planned: Result<[Allocation], LedgerError>, _ drawn: Result<[(Int, Int64)], LedgerError>, hold: Bool) {
        let expected = drawn.map { takes in
            takes.map { Allocation(lotId: model.lots[$0.0].id, remainingDeltaMinor: hold ? 0 : -$0.1, heldDeltaMinor: hold ? $0.1 : 0) }
        }
        #expect(planned == expected, "Draws plan — \(context())")
    }

    /// What `Splits.returning` plans for giving `amount` back to `owed`.
    func plannedReturn(_ amount: Int64, owed: [(Int, Int64)]) -> [Allocation]? {
        guard owed.reduce(0, { $0 + $1.1 }) >= amount else {
            Issue.record("the test model owes less than \(amount) — \(context())")
            return nil
        }
        return Splits.returning(amount, owed: owed.map { Splits.Owed(lotId: model.lots[$0.0].id, minor: $0.1) })
    }

    /// Writes `command`; on success checks the result with `check`, on failure
    /// expects exactly `expectedError`.
    func write<C: LedgerCommand>(_ command: C, expectedError: LedgerError?, _ check: (C.Output) throws -> Void) throws {
        let seqBefore = fx.lastSeq
        let outcome: WriteOutcome<C.Output>
        switch attempt(command) {
        case .failure(let error):
            #expect(error == expectedError, "\(context())")
            #expect(fx.lastSeq == seqBefore, "a failed write moved the seq — \(context())")
            return
        case .success(let o): outcome = o
        }
        guard case .applied(let output, _) = outcome else { Issue.record("replayed: \(outcome) — \(context())"); return }
        if let expectedError { Issue.record("expected \(expectedError), got \(output) — \(context())"); return }
        try check(output)
        let expectedId = command.resultId(output), expectedSeq = command.resultSeq(output)
        retryLast = { [self] in
            switch attempt(command) {
            case .success(.replayed(_, let id, let seq)):
                return id == expectedId && seq == expectedSeq ? nil : "replayed \(id)/\(seq), expected \(expectedId)/\(expectedSeq)"
            case .success(.applied(let again, _)): return "retry applied again: \(again)"
            case .failure(let error): return "retry failed: \(error)"
            }
        }
    }

    func attempt<C: LedgerCommand>(_ command: C) -> Result<WriteOutcome<C.Output>, LedgerError> {
        do {
            return .success(try fx.ledger.write(command))
        } catch {
            return .failure(error)
        }
    }

    func expectBalance(_ summary: BalanceSummary) throws {
        let snapshot = try fx.balance(summary.clientId)
        if maintenance {
            #expect(summary == snapshot.summary, "\(context())")
        } else {
            // Stored balance: what a read shows plus credit pending expiry (see
            // ExpiryTests.writeSummaryCountsExpiredCredit).
            #expect(summary.availableMinor == snapshot.summary.availableMinor + snapshot.pendingExpiryMinor, "\(context())")
            #expect(summary.heldMinor == snapshot.summary.heldMinor && summary.seq == snapshot.summary.seq, "\(context())")
        }
    }

    func purchase() throws {
        count("purchase")
        let client = rng.pick(clients), pkg = rng.pick(packages), center = rng.pick(centers)
        let command = PurchasePackage(tenantId: fx.tenant, clientId: client, packageId: pkg.id, centerId: center, paymentRef: "pay-\(step)", idempotencyKey: fx.key())
        try write(command, expectedError: nil) { result in
            #expect(result.lot.amountMinor == pkg.creditsMinor && result.lot.scope == pkg.scope && result.lot.centerId == center, "\(context())")
            #expect(result.lot.validUntilMicros == pkg.validityDays.map { now + Int64($0) * microsPerDay }, "\(context())")
            model.addLot(result.lot)
            try expectBalance(result.balance)
        }
    }

    func creditOrder() throws {
        count("order")
        let client = rng.pick(clients), amount = rng.int64(50...400)
        let validUntil: Int64? = rng.chance(0.5) ? nil : now + rng.int64(3_600...20 * 86_400) * microsPerSecond
        let scope = randomScope(), center = rng.pick(centers)
        let command = CreateCreditOrder(tenantId: fx.tenant, clientId: client, amountMinor: amount, priceMinor: amount, centerId: center, note: "",
                                        validUntilMicros: validUntil, scope: scope, idempotencyKey: fx.key())
        try write(command, expectedError: nil) { result in
            #expect(result.lot.amountMinor == amount && result.lot.validUntilMicros == validUntil && result.lot.scope == scope, "\(context())")
            model.addLot(result.lot)
            try expectBalance(result.balance)
        }
    }

    func randomSpendTarget() -> (String, Int64, String, String?, String?) {
        (rng.pick(clients), rng.int64(10...300), rng.pick(centers), rng.pick([nil, "yoga", "spa"]), rng.pick([nil, nil, "m1", "m2"]))
    }

    func spend() throws {
        count("spend")
        let (client, amount, center, category, membership) = randomSpendTarget()
        let drawn = model.draw(amount, from: model.eligible(client: client, now: now, center: center, category: category, membership: membership))
        expectPlan(plannedDraw(client, amount, center: center, category: category, membership: membership, hold: false), drawn, hold: false)
        let command = SpendCredits(tenantId: fx.tenant, clientId: client, amountMinor: amount, reason: .service, centerId: center, bookingRef: "b\(step)",
                                   serviceCategory: category, membershipId: membership, idempotencyKey: fx.key())
        switch drawn {
        case .failure(let error): try write(command, expectedError: error) { _ in }
        case .success(let takes):
            try write(command, expectedError: nil) { result in
                #expect(result.spend.allocations == takes.map { Allocation(lotId: model.lots[$0.0].id, remainingDeltaMinor: -$0.1, heldDeltaMinor: 0) },
                        "draw order — \(context())")
                for (i, take) in takes { model.lots[i].remaining -= take }
                model.spends.append(.init(id: result.spend.id, client: client, amount: amount, reversed: 0, owed: takes))
                try expectBalance(result.balance)
            }
        }
    }

    func hold() throws {
        count("hold")
        let (client, amount, center, category, membership) = randomSpendTarget()
        let expires = now + rng.int64(3_600...5 * 86_400) * microsPerSecond
        let drawn = model.draw(amount, from: model.eligible(client: client, now: now, center: center, category: category, membership: membership))
        expectPlan(plannedDraw(client, amount, center: center, category: category, membership: membership, hold: true), drawn, hold: true)
        let command = CreateHold(tenantId: fx.tenant, clientId: client, amountMinor: amount, centerId: center, bookingRef: "h\(step)",
                                 serviceCategory: category, membershipId: membership, expiresMicros: expires, idempotencyKey: fx.key())
        switch drawn {
        case .failure(let error): try write(command, expectedError: error) { _ in }
        case .success(let takes):
            try write(command, expectedError: nil) { result in
                #expect(result.hold.allocations == takes.map { Allocation(lotId: model.lots[$0.0].id, remainingDeltaMinor: 0, heldDeltaMinor: $0.1) },
                        "hold draw order — \(context())")
                for (i, take) in takes { model.lots[i].held += take }
                model.holds.append(.init(id: result.hold.id, client: client, amount: amount, state: .held, expires: expires, pins: takes))
                try expectBalance(result.balance)
            }
        }
    }

    /// Picks a hold, open ones more often.
    func pickHold() -> Int? {
        guard !model.holds.isEmpty else { return nil }
        let open = model.holds.indices.filter { model.holds[$0].state == .held }
        if !open.isEmpty && rng.chance(0.85) { return rng.pick(open) }
        return rng.int(0...(model.holds.count - 1))
    }

    func capture() throws {
        count("capture")
        guard let h = pickHold() else { return try hold() }
        let hold = model.holds[h]
        let amount: Int64? = rng.chance(0.4) ? nil : rng.int64(1...(hold.amount + 20))
        let command = CaptureHold(tenantId: fx.tenant, holdId: hold.id, amountMinor: amount, reason: .checkIn, idempotencyKey: fx.key())
        let capture = amount ?? hold.amount
        let expectedError: LedgerError? = hold.state != .held ? .holdNotOpen(holdId: hold.id, state: hold.state)
            : hold.expires <= now ? .holdNotOpen(holdId: hold.id, state: .expired)
            : capture > hold.amount ? .captureExceedsHold(heldMinor: hold.amount, requestedMinor: capture) : nil
        let seqBefore = fx.lastSeq
        try write(command, expectedError: expectedError) { result in
            let pins = hold.pins.sorted { LedgerModel.drawOrder(model.lots[$0.0], model.lots[$1.0]) }
            var left = capture
            var takes: [(Int, Int64)] = []
            var releases: [Allocation] = []
            for (i, held) in pins {
                let take = min(left, held)
                if take > 0 { takes.append((i, take)) }
                if held - take > 0 { releases.append(Allocation(lotId: model.lots[i].id, remainingDeltaMinor: 0, heldDeltaMinor: -(held - take))) }
                left -= take
            }
            let spend = try #require(result.spend)
            let split = Splits.capture(capture, pins: Splits.captureOrder(hold.pins.map { Splits.Pin(lot: asLot($0.0), heldMinor: $0.1) }))
            #expect(split.capture == spend.allocations, "Splits.capture plan — \(context())")
            #expect(spend.amountMinor == capture && spend.holdId == hold.id, "\(context())")
            #expect(spend.allocations == takes.map { Allocation(lotId: model.lots[$0.0].id, remainingDeltaMinor: -$0.1, heldDeltaMinor: -$0.1) },
                    "capture allocations — \(context())")
            #expect(result.hold.state == .captured && result.hold.capturedMinor == capture, "\(context())")
            let added = try newEntries(hold.client, after: seqBefore)
            #expect(added.first?.type == .capture, "\(context())")
            if capture < hold.amount {
                #expect(added.count >= 2 && added[1].type == .release && added[1].allocations == releases, "release allocations — \(context())")
                #expect(added.count >= 2 && added[1].allocations == split.release, "Splits.capture release plan — \(context())")
            } else {
                #expect(split.release.isEmpty, "\(context())")
            }
            for (i, take) in takes { model.lots[i].remaining -= take; model.lots[i].held -= take }
            for (i, held) in pins { model.lots[i].held -= held - (takes.first { $0.0 == i }?.1 ?? 0) }
            model.holds[h].state = .captured
            model.dropExpired(now: now)
            model.spends.append(.init(id: spend.id, client: hold.client, amount: capture, reversed: 0, owed: takes))
            try expectBalance(result.balance)
        }
    }

    func release() throws {
        count("release")
        guard let h = pickHold() else { return try hold() }
        let hold = model.holds[h]
        let command = ReleaseHold(tenantId: fx.tenant, holdId: hold.id, idempotencyKey: fx.key())
        let expectedError: LedgerError? = hold.state != .held ? .holdNotOpen(holdId: hold.id, state: hold.state) : nil
        try write(command, expectedError: expectedError) { result in
            #expect(result.hold.state == .released, "\(context())")
            model.release(holdAt: h, state: .released, now: now)
            try expectBalance(result.balance)
        }
    }

    func reverse() throws {
        count("reverse")
        guard !model.spends.isEmpty else { return try spend() }
        let s = rng.int(0...(model.spends.count - 1))
        let spend = model.spends[s]
        let reversible = spend.amount - spend.reversed
        let amount = rng.chance(0.5) && reversible > 0 ? reversible : rng.int64(1...(reversible + 10))
        let command = ReverseSpend(tenantId: fx.tenant, spendId: spend.id, amountMinor: amount, reason: "refund", idempotencyKey: fx.key())
        let expectedError: LedgerError? = amount > reversible ? .reversalExceedsSpend(reversibleMinor: reversible, requestedMinor: amount) : nil
        let seqBefore = fx.lastSeq
        try write(command, expectedError: expectedError) { result in
            var owed = spend.owed
            let planned = plannedReturn(amount, owed: spend.owed)
            var expectedModel = model
            let gives = expectedModel.giveBack(amount, owed: &owed, now: now)
            let expected = gives.map { Allocation(lotId: model.lots[$0.0].id, remainingDeltaMinor: $0.1, heldDeltaMinor: 0) }
            #expect(result.spend.reversedMinor == spend.reversed + amount, "\(context())")
            let added = try newEntries(spend.client, after: seqBefore)
            #expect(added.first?.type == .reversal && added.first?.amountMinor == amount, "\(context())")
            let actual = added.first?.allocations ?? []
            #expect(planned == actual, "Splits.returning plan — \(context())")
            if actual == expected {
                model = expectedModel
                model.spends[s].owed = owed
            } else {
                if spend.reversed > 0 {
                    // Known: after an earlier partial reversal the return order is off
                    // (ReversalTests.secondPartialReversalKeepsMostRecentlyDrawnFirst).
                    #expect(actual == expected, "reversal returns most recently drawn first — \(context())")
                } else {
                    #expect(actual == expected, "reversal returns most recently drawn first — \(context())")
                }
                // Follow the ledger, after checking it returned only what the spend owes.
                var owedNow = spend.owed
                var total: Int64 = 0
                for allocation in actual {
                    let k = owedNow.firstIndex { model.lots[$0.0].id == allocation.lotId }
                    #expect(k != nil && allocation.heldDeltaMinor == 0 && allocation.remainingDeltaMinor > 0
                            && allocation.remainingDeltaMinor <= (k.map { owedNow[$0].1 } ?? 0), "\(context())")
                    guard let k else { continue }
                    owedNow[k].1 -= allocation.remainingDeltaMinor
                    model.lots[owedNow[k].0].remaining += allocation.remainingDeltaMinor
                    total += allocation.remainingDeltaMinor
                }
                #expect(total == amount, "\(context())")
                model.dropExpired(now: now)
                model.spends[s].owed = owedNow
            }
            model.spends[s].reversed += amount
            try expectBalance(result.balance)
        }
    }

    func writeOff() throws {
        count("writeOff")
        let client = rng.pick(clients), amount = rng.int64(10...200)
        let command = CreateWriteOff(tenantId: fx.tenant, clientId: client, amountMinor: amount, reason: "bad debt", idempotencyKey: fx.key())
        let drawn = model.draw(amount, from: model.eligible(client: client, now: now, center: nil, category: nil, membership: nil))
        expectPlan(plannedDraw(client, amount, center: nil, category: nil, membership: nil, hold: false), drawn, hold: false)
        switch drawn {
        case .failure(let error): try write(command, expectedError: error) { _ in }
        case .success(let takes):
            try write(command, expectedError: nil) { result in
                #expect(result.writeOff.allocations == takes.map { Allocation(lotId: model.lots[$0.0].id, remainingDeltaMinor: -$0.1, heldDeltaMinor: 0) },
                        "write-off draw order — \(context())")
                for (i, take) in takes { model.lots[i].remaining -= take }
                model.writeOffs.append(.init(id: result.writeOff.id, client: client, amount: amount, voided: false, owed: takes))
                try expectBalance(result.balance)
            }
        }
    }

    func voidWriteOff() throws {
        count("void")
        guard !model.writeOffs.isEmpty else { return try writeOff() }
        let w = rng.int(0...(model.writeOffs.count - 1))
        let writeOff = model.writeOffs[w]
        let command = VoidWriteOff(tenantId: fx.tenant, writeOffId: writeOff.id, idempotencyKey: fx.key())
        let seqBefore = fx.lastSeq
        try write(command, expectedError: writeOff.voided ? .writeOffVoided(writeOffId: writeOff.id) : nil) { result in
            var owed = writeOff.owed
            let planned = plannedReturn(writeOff.amount, owed: writeOff.owed)
            let gives = model.giveBack(writeOff.amount, owed: &owed, now: now)
            model.writeOffs[w].owed = owed
            model.writeOffs[w].voided = true
            #expect(result.writeOff.state == .voided, "\(context())")
            let added = try newEntries(writeOff.client, after: seqBefore)
            #expect(added.first?.allocations == gives.map { Allocation(lotId: model.lots[$0.0].id, remainingDeltaMinor: $0.1, heldDeltaMinor: 0) },
                    "void allocations — \(context())")
            #expect(added.first?.allocations == planned, "Splits.returning plan of the void — \(context())")
            try expectBalance(result.balance)
        }
    }

    func adjust() throws {
        count("adjust")
        let client = rng.pick(clients), amount = rng.int64(10...200)
        if rng.chance(0.5) {
            let validUntil: Int64? = rng.chance(0.6) ? nil : now + rng.int64(3_600...10 * 86_400) * microsPerSecond
            let command = AdjustBalance(tenantId: fx.tenant, clientId: client, amountMinor: amount, reason: "goodwill", centerId: rng.pick(centers),
                                        validUntilMicros: validUntil, idempotencyKey: fx.key())
            try write(command, expectedError: nil) { result in
                let lot = try #require(result.lot)
                #expect(lot.amountMinor == amount && lot.validUntilMicros == validUntil && lot.scope == .any, "\(context())")
                model.addLot(lot)
                try expectBalance(result.balance)
            }
        } else {
            let command = AdjustBalance(tenantId: fx.tenant, clientId: client, amountMinor: -amount, reason: "correction", centerId: "c1",
                                        validUntilMicros: nil, idempotencyKey: fx.key())
            let drawn = model.draw(amount, from: model.eligible(client: client, now: now, center: nil, category: nil, membership: nil))
            expectPlan(plannedDraw(client, amount, center: nil, category: nil, membership: nil, hold: false), drawn, hold: false)
            switch drawn {
            case .failure(let error): try write(command, expectedError: error) { _ in }
            case .success(let takes):
                try write(command, expectedError: nil) { result in
                    #expect(result.allocations == takes.map { Allocation(lotId: model.lots[$0.0].id, remainingDeltaMinor: -$0.1, heldDeltaMinor: 0) },
                            "adjustment draw order — \(context())")
                    for (i, take) in takes { model.lots[i].remaining -= take }
                    try expectBalance(result.balance)
                }
            }
        }
    }

    func advanceClock() throws {
        count("advance")
        retryLast = nil
        let seconds = rng.chance(0.5) ? rng.int64(3_600...86_400) : rng.int64(86_400...10 * 86_400)
        fx.clock.advance(seconds: seconds)
        model.dropExpired(now: now)
        guard maintenance else { return }
        for h in model.holds.indices where model.holds[h].state == .held && model.holds[h].expires <= now {
            model.release(holdAt: h, state: .expired, now: now)
        }
        // Two no-op writes: maintenance runs between batches, so once the
        // second is answered, the run at the new time has finished.
        try fx.settleWriter()
        for client in clients {
            let snapshot = try fx.balance(client)
            #expect(snapshot.pendingExpiryMinor == 0 && !snapshot.openHolds.contains { $0.expiresMicros <= now },
                    "maintenance did not run — \(context())")
        }
    }

    func retry() throws {
        count("retry")
        guard let retryLast else { return }
        let seqBefore = fx.lastSeq
        if let problem = retryLast() { Issue.record("\(problem) — \(context())") }
        #expect(fx.lastSeq == seqBefore, "\(context())")
    }

    // MARK: Checks

    /// The client's entries after `seq`, oldest first.
    func newEntries(_ client: String, after seq: Int64) throws -> [LedgerEntry] {
        var query = LedgerReader.StatementQuery(tenant: fx.tenant, clientId: client)
        query.newestFirst = false
        query.afterSeq = seq
        query.limit = LedgerLimits.maxPageSize
        return try fx.reader.statement(query)
    }

    func checkAll() throws {
        let now = self.now
        for client in clients {
            let snapshot = try fx.balance(client)
            let summary = snapshot.summary
            // The balance cache agrees with SQLite (unless maintenance committed in between).
            let fresh = try fx.reader.balanceUncached(tenant: fx.tenant, client: client)
            if fresh.summary.seq == summary.seq {
                #expect(fresh == snapshot, "\(client): cached balance differs from SQLite — \(context())")
            }
            let available = model.available(client, now: now), held = model.held(client)
            #expect(summary.availableMinor == available && summary.heldMinor == held,
                    "\(client): ledger \(summary.availableMinor)/\(summary.heldMinor), model \(available)/\(held) — \(context())")
            #expect(summary.availableMinor >= 0 && summary.heldMinor >= 0 && snapshot.pendingExpiryMinor >= 0, "\(context())")
            if maintenance { #expect(snapshot.pendingExpiryMinor == 0, "\(client) — \(context())") }

            // Live lots, in draw order, exactly as the model has them.
            let liveModel = model.lots.filter { $0.client == client && LedgerModel.live($0, now) && $0.remaining > 0 }.sorted(by: LedgerModel.drawOrder)
            let ledgerLots = snapshot.lots.map { "\($0.id):\($0.remainingMinor)/\($0.heldMinor)" }
            #expect(ledgerLots == liveModel.map { "\($0.id):\($0.remaining)/\($0.held)" }, "\(client) lots — \(context())")
            // available + held = remaining of live lots + what expired lots still pin.
            let expiredHeld = model.lots.filter { $0.client == client && !LedgerModel.live($0, now) }.reduce(0) { $0 + $1.held }
            #expect(snapshot.lots.reduce(0) { $0 + $1.freeMinor } == summary.availableMinor, "\(context())")
            #expect(summary.availableMinor + summary.heldMinor == snapshot.lots.reduce(0) { $0 + $1.remainingMinor } + expiredHeld, "\(context())")
            // Per-center credit.
            var centers: [String: Int64] = [:]
            for lot in model.lots where lot.client == client {
                centers[lot.center, default: 0] += LedgerModel.live(lot, now) ? lot.remaining : lot.held
            }
            #expect(snapshot.centers == centers.filter { $0.value > 0 }.map { CenterBalance(centerId: $0.key, remainingMinor: $0.value) }.sorted { $0.centerId < $1.centerId },
                    "\(client) centers — \(context())")
            // Open holds.
            #expect(Set(snapshot.openHolds.map(\.id)) == Set(model.holds.filter { $0.client == client && $0.state == .held }.map(\.id)), "\(context())")

            // The entries add up to the stored balance, and each one's after-balance is the running sum.
            var state = cursor[client]!
            while true {
                let page = try newEntries(client, after: state.seq)
                for entry in page {
                    for (account, sign) in [(entry.creditAccount, Int64(1)), (entry.debitAccount, Int64(-1))] {
                        if account == Account.available(client) { state.available += sign * entry.amountMinor }
                        if account == Account.held(client) { state.held += sign * entry.amountMinor }
                    }
                    #expect(entry.availableAfterMinor == state.available && entry.heldAfterMinor == state.held, "entry \(entry.seq) — \(context())")
                    #expect(entry.availableAfterMinor >= 0 && entry.heldAfterMinor >= 0 && entry.amountMinor > 0, "\(context())")
                    for allocation in entry.allocations {
                        if lotMirror[allocation.lotId] == nil {
                            // A lot's first entry funds it: all of its amount.
                            #expect(allocation.remainingDeltaMinor > 0 && allocation.heldDeltaMinor == 0, "lot \(allocation.lotId) — \(context())")
                            lotMirror[allocation.lotId] = Lot(
                                id: allocation.lotId, clientId: client, origin: .order, centerId: "", amountMinor: allocation.remainingDeltaMinor,
                                remainingMinor: 0, heldMinor: 0, validFromMicros: nil, validUntilMicros: nil, scope: .any, packageId: nil,
                                paymentRef: nil, priceMinor: 0, note: "", createdSeq: entry.seq, createdMicros: 0, state: .active)
                        }
                        lotMirror[allocation.lotId] = LotRules.applying(allocation, to: lotMirror[allocation.lotId]!)
                    }
                    state.seq = entry.seq
                }
                if page.count < LedgerLimits.maxPageSize { break }
            }
            cursor[client] = state
            // The store's lots are what LotRules make of its entries.
            for lot in snapshot.lots {
                let mirrored = lotMirror[lot.id]
                #expect(mirrored.map { [$0.amountMinor, $0.remainingMinor, $0.heldMinor] } == [lot.amountMinor, lot.remainingMinor, lot.heldMinor]
                        && mirrored?.state == lot.state, "lot \(lot.id) differs from LotRules over its entries — \(context())")
            }
            #expect(state.available == summary.availableMinor + snapshot.pendingExpiryMinor && state.held == summary.heldMinor,
                    "\(client): entries say \(state.available)/\(state.held) — \(context())")
        }
        let report = try fx.ledger.verify()
        #expect(report.ok, "\(report) — \(context())")
    }
}

@Suite struct PropertyTests {
    /// 30 seeds × 150 steps; even seeds with background maintenance (hold
    /// auto-release, lot expiry), odd seeds with client-level expiry only.
    @Test(arguments: 0..<30)
    func randomOperationsKeepInvariants(seed: Int) throws {
        let run = try PropertyRun(seed: UInt64(seed) &* 0x9E37_79B9 &+ 17, maintenance: seed % 2 == 0)
        defer { run.fx.finish() }
        try run.run(steps: 150)
        // The run exercised every kind of step.
        for name in ["purchase", "order", "spend", "hold", "capture", "release", "reverse", "writeOff", "void", "adjust", "advance"] {
            #expect(run.counts[name, default: 0] > 0, "no \(name) step in seed \(seed)")
        }
    }
}
