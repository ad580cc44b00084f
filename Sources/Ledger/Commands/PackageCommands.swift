/// The credit package catalog of a tenant.

public struct CreatePackage: StorageCommand {
    public static let operation = "create_package"
    public var tenantId: String
    public var name: String
    public var creditsMinor: Int64
    public var priceMinor: Int64
    public var validityDays: Int32?
    public var scope: Scope
    public var idempotencyKey: String?

    public init(tenantId: String, name: String, creditsMinor: Int64, priceMinor: Int64, validityDays: Int32?,
                scope: Scope, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.name = name
        self.creditsMinor = creditsMinor
        self.priceMinor = priceMinor
        self.validityDays = validityDays
        self.scope = scope
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("name", name), ("credits_minor", "\(creditsMinor)"), ("price_minor", "\(priceMinor)"),
         ("validity_days", Canonical.opt(validityDays)), ("scope", Canonical.scope(scope))]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.text(name, "name", max: 200, required: true)
        v.positiveAmount(creditsMinor, "credits_minor")
        v.nonNegativeAmount(priceMinor, "price_minor")
        if let days = validityDays { v.check(days > 0 && days <= Int32(LedgerLimits.maxValidityDays), "validity_days", "must be 1…\(LedgerLimits.maxValidityDays)") }
        v.scope(scope, "scope")
        v.idempotencyKey(idempotencyKey, required: false)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> CreditPackage {
        _ = try store.requireTenant(tenantId)
        let now = store.clock.nowMicros()
        let package = CreditPackage(id: IDs.make("pkg", clock: store.clock), name: name, creditsMinor: creditsMinor, priceMinor: priceMinor,
                                    validityDays: validityDays, scope: scope, active: true, createdMicros: now, updatedMicros: now)
        try store.insertPackage(package, tenant: tenantId)
        return package
    }

    public func resultId(_ output: CreditPackage) -> String { output.id }
    public func resultSeq(_ output: CreditPackage) -> Int64 { 0 }
}

/// Changes the fields given; nil leaves a field as it is.
public struct UpdatePackage: StorageCommand {
    public static let operation = "update_package"
    public var tenantId: String
    public var packageId: String
    public var name: String?
    public var creditsMinor: Int64?
    public var priceMinor: Int64?
    /// .some(nil) clears the validity (never expires).
    public var validityDays: Int32??
    public var scope: Scope?
    public var active: Bool?
    public var idempotencyKey: String?

    public init(tenantId: String, packageId: String, name: String? = nil, creditsMinor: Int64? = nil, priceMinor: Int64? = nil,
                validityDays: Int32?? = nil, scope: Scope? = nil, active: Bool? = nil, idempotencyKey: String? = nil) {
        self.tenantId = tenantId
        self.packageId = packageId
        self.name = name
        self.creditsMinor = creditsMinor
        self.priceMinor = priceMinor
        self.validityDays = validityDays
        self.scope = scope
        self.active = active
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("package_id", packageId), ("name", Canonical.opt(name)), ("credits_minor", Canonical.opt(creditsMinor)),
         ("price_minor", Canonical.opt(priceMinor)), ("validity_days", validityDays.map { Canonical.opt($0) } ?? "-"),
         ("scope", scope.map(Canonical.scope) ?? "-"), ("active", Canonical.opt(active))]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(packageId, "package_id")
        if let name { v.text(name, "name", max: 200, required: true) }
        if let creditsMinor { v.positiveAmount(creditsMinor, "credits_minor") }
        if let priceMinor { v.nonNegativeAmount(priceMinor, "price_minor") }
        if case .some(.some(let days)) = validityDays {
            v.check(days > 0 && days <= Int32(LedgerLimits.maxValidityDays), "validity_days", "must be 1…\(LedgerLimits.maxValidityDays)")
        }
        if let scope { v.scope(scope, "scope") }
        v.idempotencyKey(idempotencyKey, required: false)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> CreditPackage {
        _ = try store.requireTenant(tenantId)
        guard var package = try store.package(tenant: tenantId, id: packageId) else {
            throw LedgerError.notFound(kind: "package", id: packageId)
        }
        if let name { package.name = name }
        if let creditsMinor { package.creditsMinor = creditsMinor }
        if let priceMinor { package.priceMinor = priceMinor }
        if let validityDays { package.validityDays = validityDays }
        if let scope { package.scope = scope }
        if let active { package.active = active }
        package.updatedMicros = store.clock.nowMicros()
        try store.updatePackage(package, tenant: tenantId)
        return package
    }

    public func resultId(_ output: CreditPackage) -> String { output.id }
    public func resultSeq(_ output: CreditPackage) -> Int64 { 0 }
}
