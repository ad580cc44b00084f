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
            gated(S.createTenant, nil) { req, call, caller in createTenant(req, call, caller) },
            gated(S.getTenant, .app) { req, call, caller in getTenant(req, call, caller) },
            gated(S.setDirectoryAccess, .staff) { req, call, caller in setDirectoryAccess(req, call, caller) },
            gated(S.createApiKey, nil) { req, call, caller in createKey(req, call, caller) },
            gated(S.revokeApiKey, nil) { req, call, caller in revokeKey(req, call, caller) },
            gated(S.verifyLedger, nil) { req, call, caller in verify(req, call, caller) },
        ]
    }

    /// A route whose caller must be the admin, or (with `allowTenantRole`) a
    /// key of that role (`.app`: any tenant role but directory), decided
    /// before the request is decoded.
    private func gated<Request, Response>(_ method: ProtoMethod<Request, Response>, _ allowTenantRole: Role?,
                                          _ body: @escaping @Sendable (Request, ProtoCall<Response>, Caller) -> Void) -> RPCRoute {
        let core = self.core
        return ProtoRoute.unary(method, authorize: { call -> Caller? in
            let caller: Caller
            do {
                caller = try core.auth.authenticate(call.metadata, reader: try core.readers.reader())
            } catch {
                call.fail(ErrorMapping.rpcError(any: error))
                return nil
            }
            guard case .tenant(let tenantId, let role, _) = caller.kind else { return caller }
            call.call.annotate("tenant", tenantId)
            let allowed = allowTenantRole.map { needed in needed == .app ? true : role == needed } ?? false
            guard allowed, role != .directory else {
                call.fail(RPCError(.permissionDenied, "this method needs the admin key", reason: .permissionDenied))
                return nil
            }
            return caller
        }, body)
    }

    /// The tenant id to act on: `tenantId` for the admin; a tenant key acts
    /// on its own tenant only (another one: PERMISSION_DENIED, answered here).
    private func authorize<R>(_ call: ProtoCall<R>, _ caller: Caller, tenantId: String) -> String? {
        switch caller.kind {
        case .admin:
            return tenantId
        case .tenant(let own, _, _):
            guard tenantId.isEmpty || tenantId == own else {
                call.fail(RPCError(.permissionDenied, "this method needs the admin key", reason: .permissionDenied))
                return nil
            }
            return own
        }
    }

    func createTenant(_ req: Credits_V1_CreateTenantRequest, _ call: ProtoCall<Credits_V1_Tenant>, _ caller: Caller) {
        guard authorize(call, caller, tenantId: req.tenantID) != nil else { return }
        core.write(call, CreateTenant(id: req.tenantID, name: req.name, currency: req.currency, allowDirectory: req.allowDirectory)) {
            Convert.tenant($0)
        }
    }

    func getTenant(_ req: Credits_V1_GetTenantRequest, _ call: ProtoCall<Credits_V1_Tenant>, _ caller: Caller) {
        guard let tenantId = authorize(call, caller, tenantId: req.tenantID) else { return }
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

    func setDirectoryAccess(_ req: Credits_V1_SetDirectoryAccessRequest, _ call: ProtoCall<Credits_V1_Tenant>, _ caller: Caller) {
        guard let tenantId = authorize(call, caller, tenantId: req.tenantID) else { return }
        let auth = core.auth
        core.write(call, SetDirectoryAccess(tenantId: tenantId, allow: req.allowDirectory)) { tenant in
            auth.invalidate(tenantId: tenant.id)
            return Convert.tenant(tenant)
        }
    }

    func createKey(_ req: Credits_V1_CreateApiKeyRequest, _ call: ProtoCall<Credits_V1_CreateApiKeyResponse>, _ caller: Caller) {
        guard authorize(call, caller, tenantId: req.tenantID) != nil else { return }
        var check = RequestCheck()
        let role: Role
        switch req.role {
        case .staff: role = .staff
        case .app: role = .app
        case .directory: role = .directory
        default:
            check.add("role", "is required (STAFF, APP or DIRECTORY)")
            role = .staff
        }
        let keyId = IDs.make("key", clock: core.ledger.options.clock)
        let secret = Authenticator.newSecret()
        let command = CreateAPIKey(keyId: keyId, tenantId: role == .directory ? nonEmpty(req.tenantID) : req.tenantID,
                                   role: role, label: req.label, secretHash: Authenticator.hash(secret))
        core.write(call, command, check) { key in
            var r = Credits_V1_CreateApiKeyResponse()
            r.key = Convert.apiKey(key)
            r.token = "\(keyId).\(secret)"
            return r
        }
    }

    func revokeKey(_ req: Credits_V1_RevokeApiKeyRequest, _ call: ProtoCall<Credits_V1_ApiKey>, _ caller: Caller) {
        guard authorize(call, caller, tenantId: "") != nil else { return }
        let auth = core.auth
        core.write(call, RevokeAPIKey(keyId: req.keyID)) { key in
            auth.invalidate(keyId: key.id)
            return Convert.apiKey(key)
        }
    }

    func verify(_ req: Credits_V1_VerifyLedgerRequest, _ call: ProtoCall<Credits_V1_VerifyLedgerResponse>, _ caller: Caller) {
        guard authorize(call, caller, tenantId: "") != nil else { return }
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
