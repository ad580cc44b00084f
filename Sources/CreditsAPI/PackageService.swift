import CreditsProto
import GRPCServices
import GRPCTransport
import Ledger

/// credits.v1.CreditPackageService.
struct PackageServiceRoutes {
    typealias S = Credits_V1_CreditPackageService
    let core: APICore

    var routes: [RPCRoute] {
        [
            ProtoRoute.unary(S.createCreditPackage) { req, call in create(req, call) },
            ProtoRoute.unary(S.updateCreditPackage) { req, call in update(req, call) },
            ProtoRoute.unary(S.deactivateCreditPackage) { req, call in deactivate(req, call) },
            ProtoRoute.unary(S.getCreditPackage) { req, call in get(req, call) },
            ProtoRoute.unary(S.listCreditPackages) { req, call in list(req, call) },
        ]
    }

    func create(_ req: Credits_V1_CreateCreditPackageRequest, _ call: ProtoCall<Credits_V1_CreditPackage>) {
        guard let ctx = core.context(call, .staff), let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        guard req.validityDays >= 0 else {
            call.fail(RPCError.invalid("validity_days", "must not be negative (0: never expires)"))
            return
        }
        let currency = ctx.currency
        core.write(call, CreatePackage(tenantId: ctx.tenantId, name: req.name, creditsMinor: req.creditsMinor, priceMinor: req.priceMinor,
                                       validityDays: req.validityDays == 0 ? nil : req.validityDays, scope: Convert.scope(req.scope),
                                       idempotencyKey: key)) { Convert.package($0, currency: currency) }
    }

    static let updatablePaths: Set<String> = ["name", "credits_minor", "price_minor", "validity_days", "scope", "active"]

    func update(_ req: Credits_V1_UpdateCreditPackageRequest, _ call: ProtoCall<Credits_V1_CreditPackage>) {
        guard let ctx = core.context(call, .staff), let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        guard let package = req.package else {
            call.fail(RPCError.invalid("package", "is required"))
            return
        }
        let paths = Set(req.updateMask?.paths ?? [])
        if let unknown = paths.subtracting(Self.updatablePaths).sorted().first {
            call.fail(RPCError.invalid("update_mask", "'\(unknown)' cannot be updated"))
            return
        }
        let all = paths.isEmpty
        func wants(_ path: String) -> Bool { all || paths.contains(path) }
        guard !wants("validity_days") || package.validityDays >= 0 else {
            call.fail(RPCError.invalid("package.validity_days", "must not be negative"))
            return
        }
        let command = UpdatePackage(
            tenantId: ctx.tenantId, packageId: package.id,
            name: wants("name") ? package.name : nil,
            creditsMinor: wants("credits_minor") ? package.creditsMinor : nil,
            priceMinor: wants("price_minor") ? package.priceMinor : nil,
            validityDays: wants("validity_days") ? .some(package.validityDays == 0 ? nil : package.validityDays) : nil,
            scope: wants("scope") ? Convert.scope(package.scope) : nil,
            active: wants("active") ? package.active : nil,
            idempotencyKey: key)
        let currency = ctx.currency
        core.write(call, command) { Convert.package($0, currency: currency) }
    }

    func deactivate(_ req: Credits_V1_DeactivateCreditPackageRequest, _ call: ProtoCall<Credits_V1_CreditPackage>) {
        guard let ctx = core.context(call, .staff), let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, UpdatePackage(tenantId: ctx.tenantId, packageId: req.packageID, active: false, idempotencyKey: key)) {
            Convert.package($0, currency: currency)
        }
    }

    func get(_ req: Credits_V1_GetCreditPackageRequest, _ call: ProtoCall<Credits_V1_CreditPackage>) {
        core.read(call, .read) { ctx in
            try requireId(req.packageID, "package_id")
            guard let package = try ctx.reader.package(tenant: ctx.tenantId, id: req.packageID) else {
                throw LedgerError.notFound(kind: "package", id: req.packageID)
            }
            return Convert.package(package, currency: ctx.currency)
        }
    }

    func list(_ req: Credits_V1_ListCreditPackagesRequest, _ call: ProtoCall<Credits_V1_ListCreditPackagesResponse>) {
        core.read(call, .read) { ctx in
            let size = try PageToken.pageSize(req.pageSize)
            let scope = "packages:\(req.includeInactive)"
            let after = try PageToken.decode(req.pageToken, scope: scope)
            let rows = try ctx.reader.listPackages(tenant: ctx.tenantId, includeInactive: req.includeInactive, afterId: after, limit: size + 1)
            var r = Credits_V1_ListCreditPackagesResponse()
            r.packages = rows.prefix(size).map { Convert.package($0, currency: ctx.currency) }
            if rows.count > size { r.nextPageToken = PageToken.encode(scope: scope, cursor: rows[size - 1].id) }
            return r
        }
    }
}
