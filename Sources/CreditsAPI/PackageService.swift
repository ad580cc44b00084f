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
            core.unary(S.createCreditPackage, .staff) { req, call, ctx in create(req, call, ctx) },
            core.unary(S.updateCreditPackage, .staff) { req, call, ctx in update(req, call, ctx) },
            core.unary(S.deactivateCreditPackage, .staff) { req, call, ctx in deactivate(req, call, ctx) },
            core.unary(S.getCreditPackage, .read) { req, call, ctx in get(req, call, ctx) },
            core.unary(S.listCreditPackages, .read) { req, call, ctx in list(req, call, ctx) },
        ]
    }

    func create(_ req: Credits_V1_CreateCreditPackageRequest, _ call: ProtoCall<Credits_V1_CreditPackage>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        if req.validityDays < 0 { check.add("validity_days", "must not be negative (0: never expires)") }
        let currency = ctx.currency
        core.write(call, CreatePackage(tenantId: ctx.tenantId, name: req.name, creditsMinor: req.creditsMinor, priceMinor: req.priceMinor,
                                       validityDays: req.validityDays <= 0 ? nil : req.validityDays, scope: Convert.scope(req.scope),
                                       idempotencyKey: key), check) { Convert.package($0, currency: currency) }
    }

    static let updatablePaths: [String] = ["name", "credits_minor", "price_minor", "validity_days", "scope", "active"]

    /// The fields an update changes, by AIP-134: the mask's paths; `*` alone
    /// for every field (full replacement); an empty mask for the fields that
    /// are set in the request (non-default values, a present scope). Unknown
    /// paths are violations.
    static func updatedFields(mask: [String], package: Credits_V1_CreditPackage, _ check: inout RequestCheck) -> Set<String> {
        if mask.isEmpty {
            var set = Set<String>()
            if !package.name.isEmpty { set.insert("name") }
            if package.creditsMinor != 0 { set.insert("credits_minor") }
            if package.priceMinor != 0 { set.insert("price_minor") }
            if package.validityDays != 0 { set.insert("validity_days") }
            if package.scope != nil { set.insert("scope") }
            if package.active { set.insert("active") }
            if set.isEmpty { check.add("update_mask", "is empty and no field of package is set: nothing to update") }
            return set
        }
        if mask.contains("*") {
            if mask != ["*"] { check.add("update_mask", "'*' (full replacement) must be the only path") }
            return Set(updatablePaths)
        }
        var set = Set<String>()
        for path in mask {
            if updatablePaths.contains(path) {
                set.insert(path)
            } else {
                check.add("update_mask", "'\(path)' is not an updatable field (\(updatablePaths.joined(separator: ", ")) or '*')")
            }
        }
        return set
    }

    func update(_ req: Credits_V1_UpdateCreditPackageRequest, _ call: ProtoCall<Credits_V1_CreditPackage>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        if req.package == nil { check.add("package", "is required") }
        let package = req.package ?? Credits_V1_CreditPackage()
        let fields = Self.updatedFields(mask: req.updateMask?.paths ?? [], package: package, &check)
        func wants(_ path: String) -> Bool { fields.contains(path) }
        if wants("validity_days") && package.validityDays < 0 { check.add("package.validity_days", "must not be negative") }
        let command = UpdatePackage(
            tenantId: ctx.tenantId, packageId: package.id,
            name: wants("name") ? package.name : nil,
            creditsMinor: wants("credits_minor") ? package.creditsMinor : nil,
            priceMinor: wants("price_minor") ? package.priceMinor : nil,
            validityDays: wants("validity_days") ? .some(package.validityDays <= 0 ? nil : package.validityDays) : nil,
            scope: wants("scope") ? Convert.scope(package.scope) : nil,
            active: wants("active") ? package.active : nil,
            idempotencyKey: key)
        let currency = ctx.currency
        core.write(call, command, check) { Convert.package($0, currency: currency) }
    }

    func deactivate(_ req: Credits_V1_DeactivateCreditPackageRequest, _ call: ProtoCall<Credits_V1_CreditPackage>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, UpdatePackage(tenantId: ctx.tenantId, packageId: req.packageID, active: false, idempotencyKey: key)) {
            Convert.package($0, currency: currency)
        }
    }

    func get(_ req: Credits_V1_GetCreditPackageRequest, _ call: ProtoCall<Credits_V1_CreditPackage>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            try requireId(req.packageID, "package_id")
            guard let package = try ctx.reader.package(tenant: ctx.tenantId, id: req.packageID) else {
                throw LedgerError.notFound(kind: "package", id: req.packageID)
            }
            return Convert.package(package, currency: ctx.currency)
        }
    }

    func list(_ req: Credits_V1_ListCreditPackagesRequest, _ call: ProtoCall<Credits_V1_ListCreditPackagesResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
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
