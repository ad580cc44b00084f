/// One entry a command will append, before the store gives it a seq, a time
/// and the balances after it: `amountMinor` moves from `debit` to `credit`,
/// and `allocations` say which lots explain the client's side of it.
/// Every plan is checked when made (see `init`).
public struct EntryPlan: Sendable, Equatable {
    public var type: EntryType
    public var clientId: String
    public var amountMinor: Int64
    public var debit: String
    public var credit: String
    /// The spend, hold, lot, write-off, coupon or session record it belongs to.
    public var refId: String
    public var centerId: String
    public var bookingRef: String
    public var paymentRef: String
    public var idempotencyKey: String
    public var reason: String
    public var note: String
    public var allocations: [Allocation]
    /// How the entry moves the client's available and held balances (set by `init`).
    public private(set) var availableDeltaMinor: Int64 = 0
    public private(set) var heldDeltaMinor: Int64 = 0
    public var clientDeltas: (availableMinor: Int64, heldMinor: Int64) { (availableDeltaMinor, heldDeltaMinor) }

    /// Asserts the invariants of an entry: a positive amount between two
    /// different accounts; client accounts only of its own client; each lot
    /// at most once; and the allocations account for the client's side
    /// exactly (Σ remaining Δ = Δ(available + held), Σ held Δ = Δ held).
    public init(type: EntryType, clientId: String, amountMinor: Int64, debit: String, credit: String, refId: String,
                centerId: String = "", bookingRef: String = "", paymentRef: String = "", idempotencyKey: String = "",
                reason: String = "", note: String = "", allocations: [Allocation] = []) {
        self.type = type
        self.clientId = clientId
        self.amountMinor = amountMinor
        self.debit = debit
        self.credit = credit
        self.refId = refId
        self.centerId = centerId
        self.bookingRef = bookingRef
        self.paymentRef = paymentRef
        self.idempotencyKey = idempotencyKey
        self.reason = reason
        self.note = note
        self.allocations = allocations
        // The client's two account names, made once (an entry is on the writer's hot path).
        let available = Account.available(clientId), held = Account.held(clientId)
        // No array literals here: this runs for every entry on the writer thread.
        if debit == available { availableDeltaMinor -= amountMinor } else if debit == held { heldDeltaMinor -= amountMinor }
        if credit == available { availableDeltaMinor += amountMinor } else if credit == held { heldDeltaMinor += amountMinor }
        let deltas = clientDeltas
        precondition(amountMinor > 0, "ledger entries move a positive amount")
        precondition(debit != credit, "an entry moves money between two different accounts")
        precondition(!debit.hasPrefix("client:") || debit == available || debit == held, "an entry touches only its own client's accounts")
        precondition(!credit.hasPrefix("client:") || credit == available || credit == held, "an entry touches only its own client's accounts")
        for (i, allocation) in allocations.enumerated() {
            precondition(allocation.remainingDeltaMinor != 0 || allocation.heldDeltaMinor != 0, "empty allocation")
            if allocations.count <= 16 {
                for other in allocations[..<i] { precondition(other.lotId != allocation.lotId, "an entry allocates to each lot at most once") }
            }
        }
        if allocations.count > 16 {
            precondition(Set(allocations.map(\.lotId)).count == allocations.count, "an entry allocates to each lot at most once")
        }
        precondition(allocations.reduce(0) { $0 + $1.remainingDeltaMinor } == deltas.availableMinor + deltas.heldMinor,
                     "\(type) entry: the allocations' remaining Δ is not the client's balance Δ")
        precondition(allocations.reduce(0) { $0 + $1.heldDeltaMinor } == deltas.heldMinor,
                     "\(type) entry: the allocations' held Δ is not the client's held Δ")
    }

    /// The system (non-client) accounts the entry moves, with their Δ.
    public var systemDeltas: [(account: String, deltaMinor: Int64)] {
        [(debit, -amountMinor), (credit, amountMinor)].filter { !$0.0.hasPrefix("client:") }
    }
}

/// The entry of each command that moves credit: who is debited and credited,
/// and which allocations go with it. Every command of the core (grants,
/// imports, spends, holds, captures, releases, reversals, expiry, write-offs
/// and their voids, negative adjustments) plans its entries here.
public enum EntryPlans {
    /// A new lot funded from `fundingAccount` (purchase, order, import,
    /// positive adjustment): the whole amount is the lot's remaining credit.
    public static func fundLot(type: EntryType, clientId: String, lotId: String, amountMinor: Int64, fundingAccount: String,
                               centerId: String, paymentRef: String, idempotencyKey: String, reason: String, note: String) -> EntryPlan {
        precondition([.purchase, .order, .import, .adjustment].contains(type), "\(type) does not fund a lot")
        return EntryPlan(type: type, clientId: clientId, amountMinor: amountMinor, debit: fundingAccount, credit: Account.available(clientId),
                         refId: lotId, centerId: centerId, paymentRef: paymentRef, idempotencyKey: idempotencyKey, reason: reason,
                         note: note, allocations: [Allocation(lotId: lotId, remainingDeltaMinor: amountMinor, heldDeltaMinor: 0)])
    }

    /// A spend of drawn credit (`allocations` from `Draws.draw(hold: false)`).
    public static func spend(clientId: String, spendId: String, amountMinor: Int64, reason: SpendReason, centerId: String,
                             bookingRef: String, idempotencyKey: String, allocations: [Allocation]) -> EntryPlan {
        EntryPlan(type: .spend, clientId: clientId, amountMinor: amountMinor, debit: Account.available(clientId),
                  credit: Account.consumption, refId: spendId, centerId: centerId, bookingRef: bookingRef,
                  idempotencyKey: idempotencyKey, reason: reason.rawValue, allocations: allocations)
    }

    /// A hold: available → held, pinning the drawn lots (`Draws.draw(hold: true)`).
    public static func hold(clientId: String, holdId: String, amountMinor: Int64, centerId: String, bookingRef: String,
                            idempotencyKey: String, allocations: [Allocation]) -> EntryPlan {
        EntryPlan(type: .hold, clientId: clientId, amountMinor: amountMinor, debit: Account.available(clientId),
                  credit: Account.held(clientId), refId: holdId, centerId: centerId, bookingRef: bookingRef,
                  idempotencyKey: idempotencyKey, reason: "hold", allocations: allocations)
    }

    /// A capture: the captured part of a hold leaves held for consumption
    /// (the entry of the spend it records); the rest, if any, is released.
    public static func capture(hold: Hold, spendId: String, captureMinor: Int64, reason: SpendReason, idempotencyKey: String,
                               pins: [Splits.Pin]) -> [EntryPlan] {
        let split = Splits.capture(captureMinor, pins: pins)
        var plans = [EntryPlan(type: .capture, clientId: hold.clientId, amountMinor: captureMinor, debit: Account.held(hold.clientId),
                               credit: Account.consumption, refId: spendId, centerId: hold.centerId, bookingRef: hold.bookingRef,
                               idempotencyKey: idempotencyKey, reason: reason.rawValue, allocations: split.capture)]
        if captureMinor < hold.amountMinor {
            plans.append(EntryPlan(type: .release, clientId: hold.clientId, amountMinor: hold.amountMinor - captureMinor,
                                   debit: Account.held(hold.clientId), credit: Account.available(hold.clientId), refId: hold.id,
                                   centerId: hold.centerId, bookingRef: hold.bookingRef, idempotencyKey: idempotencyKey,
                                   reason: "partial_capture", allocations: split.release))
        }
        return plans
    }

    /// A release of the whole hold (cancellation, or automatic at its deadline).
    public static func release(hold: Hold, automatic: Bool, idempotencyKey: String, pins: [Splits.Pin]) -> EntryPlan {
        precondition(pins.reduce(0) { $0 + $1.heldMinor } == hold.amountMinor, "hold \(hold.id) pins a different amount than it holds")
        return EntryPlan(type: .release, clientId: hold.clientId, amountMinor: hold.amountMinor, debit: Account.held(hold.clientId),
                         credit: Account.available(hold.clientId), refId: hold.id, centerId: hold.centerId, bookingRef: hold.bookingRef,
                         idempotencyKey: idempotencyKey, reason: automatic ? "hold_expired" : "released",
                         allocations: Splits.release(pins: pins))
    }

    /// A reversal of `amountMinor` of `spend`: back to the lots it drew from,
    /// most recently drawn first. Throws when more than what is left to reverse.
    public static func reversal(spend: Spend, amountMinor: Int64, reason: String, idempotencyKey: String,
                                owed: [Splits.Owed]) throws(LedgerError) -> EntryPlan {
        let reversible = spend.amountMinor - spend.reversedMinor
        precondition(reversible >= 0, "spend \(spend.id) reversed more than it spent")
        guard amountMinor <= reversible else {
            throw LedgerError.reversalExceedsSpend(reversibleMinor: reversible, requestedMinor: amountMinor)
        }
        return EntryPlan(type: .reversal, clientId: spend.clientId, amountMinor: amountMinor, debit: Account.consumption,
                         credit: Account.available(spend.clientId), refId: spend.id, centerId: spend.centerId,
                         bookingRef: spend.bookingRef, idempotencyKey: idempotencyKey, reason: reason,
                         allocations: Splits.returning(amountMinor, owed: owed))
    }

    /// The EXPIRY entry of a lot, nil when it has no free credit.
    public static func expiry(of lot: Lot) -> EntryPlan? {
        let plan = ExpiryPlan.of(lot)
        guard let allocation = plan.allocation else { return nil }
        return EntryPlan(type: .expiry, clientId: lot.clientId, amountMinor: plan.amountMinor, debit: Account.available(lot.clientId),
                         credit: Account.breakage, refId: lot.id, centerId: lot.centerId, reason: "expired", allocations: [allocation])
    }

    /// A write-off of drawn credit (any lot, whatever its scope).
    public static func writeOff(clientId: String, writeOffId: String, amountMinor: Int64, reason: String, idempotencyKey: String,
                                allocations: [Allocation]) -> EntryPlan {
        EntryPlan(type: .writeOff, clientId: clientId, amountMinor: amountMinor, debit: Account.available(clientId),
                  credit: Account.writeOffs, refId: writeOffId, idempotencyKey: idempotencyKey, reason: reason, allocations: allocations)
    }

    /// The void of an active write-off: all of it back to the lots it came from.
    public static func voidWriteOff(_ writeOff: WriteOff, idempotencyKey: String, owed: [Splits.Owed]) throws(LedgerError) -> EntryPlan {
        guard writeOff.state == .active else { throw LedgerError.writeOffVoided(writeOffId: writeOff.id) }
        return EntryPlan(type: .writeOffVoid, clientId: writeOff.clientId, amountMinor: writeOff.amountMinor, debit: Account.writeOffs,
                         credit: Account.available(writeOff.clientId), refId: writeOff.id, idempotencyKey: idempotencyKey,
                         reason: "void", allocations: Splits.returning(writeOff.amountMinor, owed: owed))
    }

    /// A negative adjustment: drawn credit goes to the adjustment account.
    public static func negativeAdjustment(clientId: String, adjustmentId: String, amountMinor: Int64, centerId: String, reason: String,
                                          idempotencyKey: String, allocations: [Allocation]) -> EntryPlan {
        EntryPlan(type: .adjustment, clientId: clientId, amountMinor: amountMinor, debit: Account.available(clientId),
                  credit: Account.adjustments, refId: adjustmentId, centerId: centerId, idempotencyKey: idempotencyKey,
                  reason: reason, allocations: allocations)
    }
}
