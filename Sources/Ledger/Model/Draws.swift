/// The rules of drawing credit: which lots a spend, hold, write-off or
/// negative adjustment may use, in what order, and how much of each.
/// Pure functions over values: no storage, no clock (callers pass `now`).
public enum Draws {
    /// Draw order: soonest valid_until first (no expiry last), then the
    /// oldest lot (lowest created_seq). The store reads active lots in this
    /// order (`ORDER BY valid_until_micros IS NULL, valid_until_micros,
    /// created_seq`); `eligible` asserts it.
    public static func precedes(_ a: Lot, _ b: Lot) -> Bool {
        precedes(validUntilMicros: a.validUntilMicros, createdSeq: a.createdSeq, b.validUntilMicros, b.createdSeq)
    }

    /// The draw order on the two keys it uses (for callers that keep lots in
    /// their own shape, e.g. the bulk seeder).
    public static func precedes(validUntilMicros a: Int64?, createdSeq aSeq: Int64, _ b: Int64?, _ bSeq: Int64) -> Bool {
        switch (a, b) {
        case let (x?, y?) where x != y: return x < y
        case (nil, _?): return false
        case (_?, nil): return true
        default: return aSeq < bSeq
        }
    }

    /// Whether `lot` is past valid_until at `now` (its free credit must be
    /// expired before anything else happens to the client).
    public static func isDue(_ lot: Lot, now: Int64) -> Bool {
        lot.validUntilMicros.map { $0 <= now } ?? false
    }

    /// The lots of `lots` (in draw order) a draw may use at `now`: free
    /// credit left, valid now, and (unless `centerId` is nil: any lot,
    /// whatever its scope) admitted by the lot's scope.
    public static func eligible(_ lots: [Lot], now: Int64, centerId: String?, serviceCategory: String?, membershipId: String?) -> [Lot] {
        for i in lots.indices.dropFirst() {
            precondition(!precedes(lots[i], lots[i - 1]), "lots \(lots[i - 1].id), \(lots[i].id) are not in draw order")
        }
        return lots.filter { lot in
            lot.freeMinor > 0 && lot.isValid(atMicros: now)
                && (centerId.map { lot.scope.admits(center: $0, serviceCategory: serviceCategory, membershipId: membershipId) } ?? true)
        }
    }

    /// The allocations of a draw of `amountMinor` from `lots` in order: each
    /// lot gives what it has free until the amount is met. A hold pins the
    /// credit (held +); a spend takes it (remaining −). Throws
    /// insufficientCredits with the free credit of `lots` when they do not cover it.
    public static func draw(_ amountMinor: Int64, from lots: [Lot], hold: Bool) throws(LedgerError) -> [Allocation] {
        precondition(amountMinor > 0, "a draw takes a positive amount")
        var left = amountMinor
        var allocations: [Allocation] = []
        for lot in lots where left > 0 && lot.freeMinor > 0 {
            let take = min(left, lot.freeMinor)
            allocations.append(hold
                ? Allocation(lotId: lot.id, remainingDeltaMinor: 0, heldDeltaMinor: take)
                : Allocation(lotId: lot.id, remainingDeltaMinor: -take, heldDeltaMinor: 0))
            left -= take
        }
        guard left == 0 else {
            let available = lots.reduce(Int64(0)) { $0 + max(0, $1.freeMinor) }
            precondition(available < amountMinor, "a draw fell short with enough free credit")
            throw LedgerError.insufficientCredits(availableMinor: available, requestedMinor: amountMinor)
        }
        precondition(allocations.reduce(0) { $0 + $1.remainingDeltaMinor + $1.heldDeltaMinor } == (hold ? amountMinor : -amountMinor),
                     "a draw's allocations sum to its amount")
        return allocations
    }
}
