import CreditsProto
import GRPCServices
import GRPCTransport
import Ledger

/// credits.v1.AdminService: tenants, keys, verification.
struct AdminServiceRoutes {
    typealias S = Credits_V1_AdminService
    let core: APICore

    var routes: [RPCRoute] {
        [
            ProtoRoute.unary(S.createTenant) { req, call in createTenant(req, call) },
            ProtoRoute.unary(S.getTenant) { req, call in getTenant(req, call) },
            ProtoRoute.unary(S.setDirectoryAccess) { req, call in setDirectoryAccess(req, call) },
            ProtoRoute.unary(S.createApiKey) { req, call in createKey(req, call) },
            ProtoRoute.unary(S.revokeApiKey) { req, call in revokeKey(req, call) },
            ProtoRoute.unary(S.verifyLedger) { req, call in verify(req, call) },
        ]
    }

    /// The caller, if it is the admin or (with `allowStaff`) staff of `tenantId`.
    /// Returns the tenant id to act on; answers the call and returns nil otherwise.
    private func authorize<R>(_ call: ProtoCall<R>, tenantId: String, allowTenantRole: Role?) -> String? {
        let caller: Caller
        do {
            caller = try core.auth.authenticate(call.metadata, reader: try core.readers.reader())
        } catch {
            call.fail(ErrorMapping.rpcError(any: error))
            return nil
        }
        switch caller.kind {
        case .admin:
            return tenantId
        case .tenant(let own, let role, _):
            let allowed = allowTenantRole.map { needed in needed == .app ? true : role == needed } ?? false
            guard allowed, role != .directory, tenantId.isEmpty || tenantId == own else {
                call.fail(RPCError(.permissionDenied, "this method needs the admin key", reason: "PERMISSION_DENIED"))
                return nil
            }
            return own
        }
    }

    func createTenant(_ req: Credits_V1_CreateTenantRequest, _ call: ProtoCall<Credits_V1_Tenant>) {
        guard authorize(call, tenantId: req.tenantID, allowTenantRole: nil) != nil else { return }
        core.write(call, CreateTenant(id: req.tenantID, name: req.name, currency: req.currency, allowDirectory: req.allowDirectory)) {
            Convert.tenant($0)
        }
    }

    func getTenant(_ req: Credits_V1_GetTenantRequest, _ call: ProtoCall<Credits_V1_Tenant>) {
        guard let tenantId = authorize(call, tenantId: req.tenantID, allowTenantRole: .app) else { return }
        do {
            try requireId(tenantId, "tenant_id")
            guard let tenant = try core.readers.reader().tenant(tenantId) else {
                call.fail(ErrorMapping.rpcError(.notFound(kind: "tenant", id: tenantId)))
                return
            }
            call.respond(Convert.tenant(tenant))
        } catch {
            call.fail(ErrorMapping.rpcError(any: error))
        }
    }

    func setDirectoryAccess(_ req: Credits_V1_SetDirectoryAccessRequest, _ call: ProtoCall<Credits_V1_Tenant>) {
        guard let tenantId = authorize(call, tenantId: req.tenantID, allowTenantRole: .staff) else { return }
        let auth = core.auth
        core.write(call, SetDirectoryAccess(tenantId: tenantId, allow: req.allowDirectory)) { tenant in
            auth.invalidate(tenantId: tenant.id)
            return Convert.tenant(tenant)
        }
    }

    func createKey(_ req: Credits_V1_CreateApiKeyRequest, _ call: ProtoCall<Credits_V1_CreateApiKeyResponse>) {
        guard authorize(call, tenantId: req.tenantID, allowTenantRole: nil) != nil else { return }
        let role: Role
        switch req.role {
        case .staff: role = .staff
        case .app: role = .app
        case .directory: role = .directory
        default:
            call.fail(RPCError.invalid("role", "is required (STAFF, APP or DIRECTORY)"))
            return
        }
        let keyId = IDs.make("key")
        let secret = Authenticator.newSecret()
        let command = CreateAPIKey(keyId: keyId, tenantId: role == .directory ? nonEmpty(req.tenantID) : req.tenantID,
                                   role: role, label: req.label, secretHash: Authenticator.hash(secret))
        core.write(call, command) { key in
            var r = Credits_V1_CreateApiKeyResponse()
            r.key = Convert.apiKey(key)
            r.token = "\(keyId).\(secret)"
            return r
        }
    }

    func revokeKey(_ req: Credits_V1_RevokeApiKeyRequest, _ call: ProtoCall<Credits_V1_ApiKey>) {
        guard authorize(call, tenantId: "", allowTenantRole: nil) != nil else { return }
        let auth = core.auth
        core.write(call, RevokeAPIKey(keyId: req.keyID)) { key in
            auth.invalidate(keyId: key.id)
            return Convert.apiKey(key)
        }
    }

    func verify(_ req: Credits_V1_VerifyLedgerRequest, _ call: ProtoCall<Credits_V1_VerifyLedgerResponse>) {
        guard authorize(call, tenantId: "", allowTenantRole: nil) != nil else { return }
        let ledger = core.ledger
        // A full recompute: off the event loop.
        Thread.detachNewThread {
            do {
                let report = try ledger.verify()
                var r = Credits_V1_VerifyLedgerResponse()
                r.ok = report.ok
                r.tenants = Int64(report.tenants)
                r.entries = Int64(report.entries)
                r.clients = Int64(report.clients)
                r.lots = Int64(report.lots)
                r.problems = report.problems
                call.respond(r)
            } catch {
                call.fail(ErrorMapping.rpcError(any: error))
            }
        }
    }
}

import Foundation
