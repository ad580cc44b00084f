/// How credit already drawn goes back or moves on: capture and release of
/// holds, reversal of spends and void of write-offs. Pure functions.
public enum Splits {
    /// A lot a hold pins, and how much of it.
    public struct Pin: Sendable, Equatable {
        public var lot: Lot
        public var heldMinor: Int64
        public init(lot: Lot, heldMinor: Int64) {
            precondition(heldMinor > 0, "a pin holds a positive amount")
            precondition(lot.heldMinor >= heldMinor, "lot \(lot.id) holds less than its hold pins")
            self.lot = lot
            self.heldMinor = heldMinor
        }
    }

    /// What a lot still owes a spend or write-off (net of its returns), and
    /// the order it was drawn in.
    public struct Owed: Sendable, Equatable {
        public var lotId: String
        public var minor: Int64
        public init(lotId: String, minor: Int64) {
            self.lotId = lotId
            self.minor = minor
        }
    }

    /// The order a capture consumes a hold's pins in: soonest expiry first
    /// (the draw order).
    public static func captureOrder(_ pins: [Pin]) -> [Pin] {
        pins.sorted { Draws.precedes($0.lot, $1.lot) }
    }

    /// A capture of `captureMinor` from a hold pinning `pins` (in capture
    /// order): the captured part leaves the lots (remaining and held −), the
    /// rest is released (held −).
    public static func capture(_ captureMinor: Int64, pins: [Pin]) -> (capture: [Allocation], release: [Allocation]) {
        let heldMinor = pins.reduce(Int64(0)) { $0 + $1.heldMinor }
        precondition(captureMinor > 0 && captureMinor <= heldMinor, "capture of \(captureMinor) from a hold of \(heldMinor)")
        var left = captureMinor
        var captured: [Allocation] = []
        var released: [Allocation] = []
        for pin in pins {
            let take = min(left, pin.heldMinor)
            if take > 0 { captured.append(Allocation(lotId: pin.lot.id, remainingDeltaMinor: -take, heldDeltaMinor: -take)) }
            if pin.heldMinor - take > 0 {
                released.append(Allocation(lotId: pin.lot.id, remainingDeltaMinor: 0, heldDeltaMinor: -(pin.heldMinor - take)))
            }
            left -= take
        }
        precondition(left == 0, "a capture took less than asked")
        precondition(-captured.reduce(0) { $0 + $1.heldDeltaMinor } == captureMinor, "captured allocations sum to the capture")
        precondition(-released.reduce(0) { $0 + $1.heldDeltaMinor } == heldMinor - captureMinor, "released allocations sum to the rest")
        return (captured, released)
    }

    /// A release of a whole hold: every pin's held credit is freed.
    public static func release(pins: [Pin]) -> [Allocation] {
        pins.map { Allocation(lotId: $0.lot.id, remainingDeltaMinor: 0, heldDeltaMinor: -$0.heldMinor) }
    }

    /// Returning `amountMinor` to the lots a spend or write-off drew from and
    /// still owe (`owed` in draw order): most recently drawn first.
    public static func returning(_ amountMinor: Int64, owed: [Owed]) -> [Allocation] {
        precondition(amountMinor > 0, "a return gives back a positive amount")
        var left = amountMinor
        var allocations: [Allocation] = []
        for draw in owed.reversed() where left > 0 && draw.minor > 0 {
            let give = min(left, draw.minor)
            allocations.append(Allocation(lotId: draw.lotId, remainingDeltaMinor: give, heldDeltaMinor: 0))
            left -= give
        }
        precondition(left == 0, "returning \(amountMinor), more than was drawn and is still owed")
        return allocations
    }
}
