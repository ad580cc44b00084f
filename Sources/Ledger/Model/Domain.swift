/// Domain types of the credits ledger. Money is Int64 minor units of the
/// tenant's currency; times are Int64 microseconds since the Unix epoch.

/// The source of "now" for the ledger (expiry, holds, idempotency retention).
/// Injected so tests can move time.
public protocol LedgerClock: Sendable {
    func nowMicros() -> Int64
}

public struct SystemClock: LedgerClock {
    public init() {}
    public func nowMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1_000
    }
}

/// Limits the ledger enforces (STYLE: everything has a limit).
public enum LedgerLimits {
    public static let maxIdLength = 128
    public static let maxNoteLength = 1_000
    public static let maxScopeEntries = 64
    public static let maxAmountMinor: Int64 = 1_000_000_000_000_000  // 10^15 minor units per movement
    public static let maxBalanceMinor: Int64 = 4_000_000_000_000_000
    public static let maxPageSize = 1_000
    public static let defaultPageSize = 100
    /// Lots one spend, hold or write-off may draw from.
    public static let maxLotsPerDraw = 1_000
    public static let maxValidityDays = 36_500
    public static let maxHoldSeconds: Int64 = 90 * 24 * 3600
    /// Client ids one change-feed subscription may filter on.
    public static let maxFeedClients = 100
}

public enum Role: String, Sendable, CaseIterable {
    /// Everything within the tenant.
    case staff
    /// Read, purchase, spend, hold, redeem; no write-offs, revokes or adjustments.
    case app
    /// A platform key acting for a tenant named in x-on-behalf-of, if that tenant allows it.
    case directory
}

public struct Tenant: Sendable, Equatable {
    public var id: String
    public var name: String
    /// ISO 4217 code, e.g. "EUR".
    public var currency: String
    /// Whether platform directory keys may act for this tenant.
    public var allowDirectory: Bool
    public var createdMicros: Int64
    /// The tenant's ledger sequence number: the seq of its latest entry.
    public var lastSeq: Int64
}

public struct APIKeyRecord: Sendable, Equatable {
    public var id: String
    /// nil for platform directory keys.
    public var tenantId: String?
    public var role: Role
    public var label: String
    public var secretHash: [UInt8]
    public var createdMicros: Int64
    public var revokedMicros: Int64?
}

/// Which spends a lot may pay for. An empty list admits everything.
public struct Scope: Sendable, Equatable {
    public var serviceCategories: [String]
    public var centers: [String]
    public var membershipIds: [String]

    public init(serviceCategories: [String] = [], centers: [String] = [], membershipIds: [String] = []) {
        self.serviceCategories = serviceCategories
        self.centers = centers
        self.membershipIds = membershipIds
    }

    public static let any = Scope()

    public func admits(center: String, serviceCategory: String?, membershipId: String?) -> Bool {
        if !centers.isEmpty && !centers.contains(center) { return false }
        if !serviceCategories.isEmpty {
            guard let serviceCategory, serviceCategories.contains(serviceCategory) else { return false }
        }
        if !membershipIds.isEmpty {
            guard let membershipId, membershipIds.contains(membershipId) else { return false }
        }
        return true
    }
}

public struct CreditPackage: Sendable, Equatable {
    public var id: String
    public var name: String
    /// Credits granted on purchase.
    public var creditsMinor: Int64
    /// Price charged; may differ from the credits granted (bonus credit).
    public var priceMinor: Int64
    /// Lots bought from it expire this many days after purchase; nil: never.
    public var validityDays: Int32?
    public var scope: Scope
    public var active: Bool
    public var createdMicros: Int64
    public var updatedMicros: Int64
}

public enum LotOrigin: String, Sendable, CaseIterable {
    case purchase
    case order
    case adjustment
    case `import`
}

public enum LotState: String, Sendable, CaseIterable {
    /// May have credit left.
    case active
    /// Fully used.
    case exhausted
    /// Past valid_until; its remainder was written off as breakage.
    case expired
}

/// A positive amount of credit added to a client, drawn down by spends.
public struct Lot: Sendable, Equatable {
    public var id: String
    public var clientId: String
    public var origin: LotOrigin
    public var centerId: String
    public var amountMinor: Int64
    /// Credit left, including the part held.
    public var remainingMinor: Int64
    /// Part of `remainingMinor` pinned by open holds.
    public var heldMinor: Int64
    public var validFromMicros: Int64?
    public var validUntilMicros: Int64?
    public var scope: Scope
    public var packageId: String?
    public var paymentRef: String?
    public var priceMinor: Int64
    public var note: String
    public var createdSeq: Int64
    public var createdMicros: Int64
    public var state: LotState

    public var freeMinor: Int64 { remainingMinor - heldMinor }

    public func isValid(atMicros now: Int64) -> Bool {
        if let from = validFromMicros, now < from { return false }
        if let until = validUntilMicros, now >= until { return false }
        return true
    }

    public init(id: String, clientId: String, origin: LotOrigin, centerId: String, amountMinor: Int64, remainingMinor: Int64, heldMinor: Int64, validFromMicros: Int64?, validUntilMicros: Int64?, scope: Scope, packageId: String?, paymentRef: String?, priceMinor: Int64, note: String, createdSeq: Int64, createdMicros: Int64, state: LotState) {
        self.id = id
        self.clientId = clientId
        self.origin = origin
        self.centerId = centerId
        self.amountMinor = amountMinor
        self.remainingMinor = remainingMinor
        self.heldMinor = heldMinor
        self.validFromMicros = validFromMicros
        self.validUntilMicros = validUntilMicros
        self.scope = scope
        self.packageId = packageId
        self.paymentRef = paymentRef
        self.priceMinor = priceMinor
        self.note = note
        self.createdSeq = createdSeq
        self.createdMicros = createdMicros
        self.state = state
    }
}

public enum EntryType: String, Sendable, CaseIterable {
    case purchase
    case order
    case adjustment
    case spend
    case hold
    case capture
    case release
    case reversal
    case expiry
    case writeOff = "write_off"
    case writeOffVoid = "write_off_void"
    case `import`
    // Coupon credits (amount = uses) and their revenue allocation (amount = minor units).
    case couponIssue = "coupon_issue"
    case couponRedeem = "coupon_redeem"
    case couponRedemptionCancel = "coupon_redemption_cancel"
    case couponRevoke = "coupon_revoke"
    case couponExpiry = "coupon_expiry"
    case revenueAllocation = "revenue_allocation"
    // Session packages (amount = sessions).
    case sessionGrant = "session_grant"
    case sessionUse = "session_use"
    case sessionReturn = "session_return"
    case sessionForfeit = "session_forfeit"
}

/// How one entry changed one lot.
public struct Allocation: Sendable, Equatable {
    public var lotId: String
    public var remainingDeltaMinor: Int64
    public var heldDeltaMinor: Int64
}

/// An immutable journal record of one movement: `amountMinor` moves from
/// `debitAccount` to `creditAccount` (the two sides sum to zero).
public struct LedgerEntry: Sendable, Equatable {
    public var seq: Int64
    public var type: EntryType
    public var clientId: String
    public var amountMinor: Int64
    public var debitAccount: String
    public var creditAccount: String
    /// The client's balance right after this entry.
    public var availableAfterMinor: Int64
    public var heldAfterMinor: Int64
    public var timeMicros: Int64
    /// The spend, hold, lot or write-off this entry belongs to.
    public var refId: String
    public var centerId: String
    public var bookingRef: String
    public var paymentRef: String
    public var idempotencyKey: String
    public var reason: String
    public var note: String
    public var allocations: [Allocation]

    public var totalAfterMinor: Int64 { availableAfterMinor + heldAfterMinor }
}

public enum SpendReason: String, Sendable, CaseIterable {
    case booking
    case checkIn = "check_in"
    case service
    case other
}

public struct Spend: Sendable, Equatable {
    public var id: String
    public var clientId: String
    public var amountMinor: Int64
    public var reversedMinor: Int64
    public var reason: SpendReason
    public var centerId: String
    public var bookingRef: String
    public var serviceCategory: String?
    /// The hold this spend captured, if any.
    public var holdId: String?
    public var seq: Int64
    public var createdMicros: Int64
    public var allocations: [Allocation]

    public init(id: String, clientId: String, amountMinor: Int64, reversedMinor: Int64, reason: SpendReason, centerId: String, bookingRef: String, serviceCategory: String?, holdId: String?, seq: Int64, createdMicros: Int64, allocations: [Allocation]) {
        self.id = id
        self.clientId = clientId
        self.amountMinor = amountMinor
        self.reversedMinor = reversedMinor
        self.reason = reason
        self.centerId = centerId
        self.bookingRef = bookingRef
        self.serviceCategory = serviceCategory
        self.holdId = holdId
        self.seq = seq
        self.createdMicros = createdMicros
        self.allocations = allocations
    }
}

public enum HoldState: String, Sendable, CaseIterable {
    case held
    case captured
    case released
    /// Released automatically at its deadline.
    case expired
}

public struct Hold: Sendable, Equatable {
    public var id: String
    public var clientId: String
    public var amountMinor: Int64
    public var capturedMinor: Int64
    public var state: HoldState
    public var expiresMicros: Int64
    public var centerId: String
    public var bookingRef: String
    public var serviceCategory: String?
    public var membershipId: String?
    public var seq: Int64
    public var createdMicros: Int64
    /// The spend recorded by the capture.
    public var spendId: String?
    public var allocations: [Allocation]

    public init(id: String, clientId: String, amountMinor: Int64, capturedMinor: Int64, state: HoldState, expiresMicros: Int64, centerId: String, bookingRef: String, serviceCategory: String?, membershipId: String?, seq: Int64, createdMicros: Int64, spendId: String?, allocations: [Allocation]) {
        self.id = id
        self.clientId = clientId
        self.amountMinor = amountMinor
        self.capturedMinor = capturedMinor
        self.state = state
        self.expiresMicros = expiresMicros
        self.centerId = centerId
        self.bookingRef = bookingRef
        self.serviceCategory = serviceCategory
        self.membershipId = membershipId
        self.seq = seq
        self.createdMicros = createdMicros
        self.spendId = spendId
        self.allocations = allocations
    }
}

public enum WriteOffState: String, Sendable, CaseIterable {
    case active
    case voided
}

public struct WriteOff: Sendable, Equatable {
    public var id: String
    public var clientId: String
    public var amountMinor: Int64
    public var reason: String
    public var state: WriteOffState
    public var seq: Int64
    public var voidSeq: Int64?
    public var createdMicros: Int64
    public var allocations: [Allocation]
}

/// A client's balance as of a ledger sequence number.
public struct BalanceSummary: Sendable, Equatable {
    public var clientId: String
    public var availableMinor: Int64
    public var heldMinor: Int64
    public var seq: Int64

    public init(clientId: String, availableMinor: Int64, heldMinor: Int64, seq: Int64) {
        self.clientId = clientId
        self.availableMinor = availableMinor
        self.heldMinor = heldMinor
        self.seq = seq
    }
    public var totalMinor: Int64 { availableMinor + heldMinor }
}

public struct CenterBalance: Sendable, Equatable {
    public var centerId: String
    public var remainingMinor: Int64
}

/// Everything about a client's credit in one consistent snapshot.
public struct BalanceSnapshot: Sendable, Equatable {
    public var summary: BalanceSummary
    /// Lots with credit left (expired ones excluded), soonest expiry first.
    public var lots: [Lot]
    public var centers: [CenterBalance]
    public var openHolds: [Hold]
    /// Credit of lots past valid_until whose expiry entry is not written yet;
    /// not counted in the summary.
    public var pendingExpiryMinor: Int64
}

/// Ledger account names. Client accounts hold what is owed to the client;
/// the others are the counter-sides of every movement.
public enum Account {
    public static func available(_ clientId: String) -> String { "client:\(clientId):available" }
    public static func held(_ clientId: String) -> String { "client:\(clientId):held" }
    public static let purchases = "funding:purchase"
    public static let orders = "funding:order"
    public static let imports = "funding:import"
    public static let adjustments = "adjustment"
    public static let consumption = "consumption"
    public static let breakage = "breakage"
    public static let writeOffs = "write_off"
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
