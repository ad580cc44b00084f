/// Session packages (SPEC §5): a client owns packages of sessions per
/// service; one session pays a payment reference at zero price. Amounts of
/// session entries count sessions, not money, and move between the
/// `SessionAccount`s, never a client's money accounts.

public enum SessionLimits {
    /// Service lines one package may hold.
    public static let maxLinesPerPackage = 32
    /// Sessions one line may grant.
    public static let maxSessionsPerLine: Int64 = 10_000
    public static let maxNameLength = 200
}

/// Ledger accounts of session entries.
public enum SessionAccount {
    /// The sessions left on one line. Client package ids are generated and
    /// never contain ':', so the name is unambiguous whatever the service id.
    public static func line(packageId: String, serviceId: String) -> String { "sessions:\(packageId):\(serviceId)" }
    /// Counter-side of grants (negative: sessions issued).
    public static let granted = "sessions:granted"
    /// Sessions consumed by active redemptions.
    public static let used = "sessions:used"
    /// Sessions lost by deactivation.
    public static let forfeited = "sessions:forfeited"
}

/// One service line of a client package.
public struct SessionLine: Sendable, Equatable {
    public var serviceId: String
    public var totalSessions: Int64
    public var usedSessions: Int64
    public var forfeitedSessions: Int64

    public init(serviceId: String, totalSessions: Int64, usedSessions: Int64 = 0, forfeitedSessions: Int64 = 0) {
        self.serviceId = serviceId
        self.totalSessions = totalSessions
        self.usedSessions = usedSessions
        self.forfeitedSessions = forfeitedSessions
    }

    public var sessionsLeft: Int64 { totalSessions - usedSessions - forfeitedSessions }
}

/// A package of sessions owned by one client.
public struct ClientPackage: Sendable, Equatable {
    public var id: String
    public var clientId: String
    public var name: String
    /// The seed's matter_uid; nil: none.
    public var scopeId: String?
    /// Usable from this time on (inclusive).
    public var validFromMicros: Int64
    /// Usable up to this time (inclusive).
    public var validUntilMicros: Int64
    public var active: Bool
    public var lines: [SessionLine]
    /// The seq of its first grant entry.
    public var createdSeq: Int64
    public var createdMicros: Int64
    public var deactivatedMicros: Int64?
    public var deactivationReason: String

    /// The seed's window: valid_from ≤ now ≤ valid_until, both inclusive.
    public func isInWindow(atMicros now: Int64) -> Bool {
        validFromMicros <= now && now <= validUntilMicros
    }

    public func line(_ serviceId: String) -> SessionLine? { lines.first { $0.serviceId == serviceId } }
}

public enum SessionRedemptionState: String, Sendable, CaseIterable {
    /// The session is consumed and the payment reference paid.
    case active
    /// The session went back to its package; the payment reference is unpaid.
    case cancelled
}

/// One session used to pay a payment reference.
public struct PackageRedemption: Sendable, Equatable {
    public var id: String
    public var clientId: String
    public var packageId: String
    public var serviceId: String
    public var paymentRef: String
    /// The scope id the use asked for; nil: none.
    public var scopeId: String?
    public var state: SessionRedemptionState
    /// The seq of the session_use entry.
    public var seq: Int64
    public var createdMicros: Int64
    /// The seq of the session_return entry, once cancelled.
    public var cancelSeq: Int64?
    public var cancelledMicros: Int64?
    public var cancelReason: String
}

/// The paid/unpaid status of a payment reference (the seed's PaymentStatus).
public struct PaymentRefStatus: Sendable, Equatable {
    public var paymentRef: String
    /// The client of its first use; it belongs to that client.
    public var clientId: String
    public var paid: Bool
    /// The redemption paying it, or its last (cancelled) one.
    public var redemptionId: String
}

/// The answer of create, get and deactivate of a client package.
public struct ClientPackageResult: Sendable, Equatable {
    public var package: ClientPackage
    /// The tenant's ledger seq after the write.
    public var seq: Int64
}

/// The answer of a use or a cancellation.
public struct SessionRedemptionResult: Sendable, Equatable {
    public var redemption: PackageRedemption
    public var package: ClientPackage
    public var payment: PaymentRefStatus
    /// The tenant's ledger seq after the write.
    public var seq: Int64
}
