import GRPCServices
import GRPCTransport
import Ledger

/// The credits.v1 services over one ledger.
public final class CreditsAPI: Sendable {
    let core: APICore

    public init(ledger: Ledger, adminToken: String?) {
        core = APICore(ledger: ledger, auth: Authenticator(adminToken: adminToken))
    }

    public static let serviceNames = ["credits.v1.AdminService", "credits.v1.CreditPackageService", "credits.v1.CreditService",
                                            "credits.v1.SessionPackageService", "credits.v1.CouponService"]

    public var routes: [RPCRoute] {
        AdminServiceRoutes(core: core).routes + PackageServiceRoutes(core: core).routes + CreditServiceRoutes(core: core).routes
            + SessionServiceRoutes(core: core).routes + CouponServiceRoutes(core: core).routes
    }
}
