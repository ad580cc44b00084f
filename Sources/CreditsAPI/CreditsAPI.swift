import GRPCServices
import GRPCTransport
import Ledger

/// The credits.v1 services over one ledger.
public final class CreditsAPI: Sendable {
    let core: APICore
    let hub: StreamHub
    private let listener: Int

    /// `clock` is the API layer's own time (caches); the ledger's clock
    /// dates what it records.
    public init(ledger: Ledger, adminToken: String?, streams: StreamLimits = StreamLimits(), clock: any APIClock = SystemUptimeClock()) {
        core = APICore(ledger: ledger, auth: Authenticator(adminToken: adminToken, clock: clock))
        let hub = StreamHub(limits: streams, makeReader: { try ledger.makeReader() })
        self.hub = hub
        listener = ledger.commits.addListener { hub.notice($0) }
    }

    public static let serviceNames = ["credits.v1.AdminService", "credits.v1.CreditPackageService", "credits.v1.CreditService",
                                      "credits.v1.SessionPackageService", "credits.v1.CouponService", "credits.v1.LedgerFeedService"]

    public var routes: [RPCRoute] {
        AdminServiceRoutes(core: core).routes + PackageServiceRoutes(core: core).routes + CreditServiceRoutes(core: core).routes
            + SessionServiceRoutes(core: core).routes + CouponServiceRoutes(core: core).routes
            + FeedServiceRoutes(core: core, hub: hub).routes
    }

    /// At shutdown, before the transport drains: feed and watch streams
    /// never end by themselves, so they are ended (UNAVAILABLE) and refused.
    public func endStreams() {
        core.ledger.commits.removeListener(listener)
        hub.shutdown()
    }
}
