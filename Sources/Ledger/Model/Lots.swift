/// The rules of one lot's amounts and state. Pure functions over values.
public enum LotRules {
    /// Asserts a lot's bounds: 0 ≤ held ≤ remaining ≤ amount (the CHECK
    /// constraints of the store are the backstop, this is the rule).
    public static func checkBounds(lotId: String, amountMinor: Int64, remainingMinor: Int64, heldMinor: Int64) {
        precondition(amountMinor > 0, "lot \(lotId) has a non-positive amount \(amountMinor)")
        precondition(heldMinor >= 0, "lot \(lotId) holds \(heldMinor) < 0")
        precondition(heldMinor <= remainingMinor, "lot \(lotId) holds \(heldMinor) > its remaining \(remainingMinor)")
        precondition(remainingMinor <= amountMinor, "lot \(lotId) has \(remainingMinor) left > its amount \(amountMinor)")
    }

    /// A lot's state after an allocation: an expired lot stays expired;
    /// otherwise it is exhausted exactly when nothing remains.
    public static func state(after previous: LotState, remainingMinor: Int64) -> LotState {
        previous == .expired ? .expired : (remainingMinor == 0 ? .exhausted : .active)
    }

    /// `lot` with `allocation` applied (amounts and state), bounds asserted.
    public static func applying(_ allocation: Allocation, to lot: Lot) -> Lot {
        precondition(allocation.lotId == lot.id, "allocation to \(allocation.lotId) applied to lot \(lot.id)")
        precondition(allocation.remainingDeltaMinor != 0 || allocation.heldDeltaMinor != 0, "empty allocation")
        var out = lot
        out.remainingMinor += allocation.remainingDeltaMinor
        out.heldMinor += allocation.heldDeltaMinor
        checkBounds(lotId: out.id, amountMinor: out.amountMinor, remainingMinor: out.remainingMinor, heldMinor: out.heldMinor)
        out.state = state(after: lot.state, remainingMinor: out.remainingMinor)
        return out
    }
}

/// What expiring one lot does: the free credit goes to breakage (the part
/// held stays pinned until its hold resolves), and the lot becomes
/// `expired` once nothing is held on it.
public struct ExpiryPlan: Sendable, Equatable {
    /// The EXPIRY entry's allocation, nil when the lot has no free credit.
    public var allocation: Allocation?
    /// Whether the lot's state becomes `expired` now.
    public var marksExpired: Bool

    public var amountMinor: Int64 { -(allocation?.remainingDeltaMinor ?? 0) }

    public static func of(_ lot: Lot) -> ExpiryPlan {
        precondition(lot.freeMinor >= 0, "lot \(lot.id) holds more than it has")
        let allocation = lot.freeMinor > 0 ? Allocation(lotId: lot.id, remainingDeltaMinor: -lot.freeMinor, heldDeltaMinor: 0) : nil
        return ExpiryPlan(allocation: allocation, marksExpired: lot.heldMinor == 0)
    }

    /// Whether a lot touched by a release, reversal or void must be settled
    /// at once: past valid_until with free credit (which no longer counts),
    /// or still active with nothing held (it can only become expired).
    public static func needsSettling(_ lot: Lot, now: Int64) -> Bool {
        guard Draws.isDue(lot, now: now) else { return false }
        return lot.freeMinor > 0 || (lot.state == .active && lot.heldMinor == 0)
    }
}
