/// Tenants and API keys (admin operations).

public struct CreateTenant: StorageCommand {
    public static let operation = "create_tenant"
    public var id: String
    public var name: String
    public var currency: String
    public var allowDirectory: Bool

    public init(id: String, name: String, currency: String, allowDirectory: Bool) {
        self.id = id
        self.name = name
        self.currency = currency
        self.allowDirectory = allowDirectory
    }

    public var tenantId: String { id }
    public var idempotencyKey: String? { nil }
    public var idempotencyFields: [(String, String)] { [] }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(id, "tenant_id")
        v.text(name, "name", max: 200, required: true)
        v.check(currency.utf8.count == 3 && currency.utf8.allSatisfy { $0 >= 65 && $0 <= 90 }, "currency", "must be an ISO 4217 code, three capital letters")
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> Tenant {
        if try store.tenant(id) != nil { throw LedgerError.alreadyExists(kind: "tenant", id: id) }
        let now = store.clock.nowMicros()
        let tenant = Tenant(id: id, name: name, currency: currency, allowDirectory: allowDirectory, createdMicros: now, lastSeq: 0)
        try store.insertTenant(tenant)
        return tenant
    }

    public func resultId(_ output: Tenant) -> String { output.id }
    public func resultSeq(_ output: Tenant) -> Int64 { 0 }
}

public struct SetDirectoryAccess: StorageCommand {
    public static let operation = "set_directory_access"
    public var tenantId: String
    public var allow: Bool

    public init(tenantId: String, allow: Bool) {
        self.tenantId = tenantId
        self.allow = allow
    }

    public var idempotencyKey: String? { nil }
    public var idempotencyFields: [(String, String)] { [] }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(tenantId, "tenant_id")
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> Tenant {
        var tenant = try store.requireTenant(tenantId)
        try store.setDirectoryAccess(tenant: tenantId, allow: allow)
        tenant.allowDirectory = allow
        return tenant
    }

    public func resultId(_ output: Tenant) -> String { output.id }
    public func resultSeq(_ output: Tenant) -> Int64 { output.lastSeq }
}

public struct CreateAPIKey: StorageCommand {
    public static let operation = "create_api_key"
    public var keyId: String
    /// nil for directory keys.
    public var keyTenantId: String?
    public var role: Role
    public var label: String
    public var secretHash: [UInt8]

    public init(keyId: String, tenantId: String?, role: Role, label: String, secretHash: [UInt8]) {
        self.keyId = keyId
        self.keyTenantId = tenantId
        self.role = role
        self.label = label
        self.secretHash = secretHash
    }

    public var tenantId: String { keyTenantId ?? "" }
    public var idempotencyKey: String? { nil }
    public var idempotencyFields: [(String, String)] { [] }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(keyId, "key_id")
        if role == .directory {
            v.check(keyTenantId == nil, "tenant_id", "must be empty for a directory key")
        } else {
            v.id(keyTenantId ?? "", "tenant_id")
        }
        v.text(label, "label", max: 200)
        v.check(secretHash.count == 32, "secret_hash", "must be 32 bytes")
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> APIKeyRecord {
        if let keyTenantId { _ = try store.requireTenant(keyTenantId) }
        if try store.apiKey(id: keyId) != nil { throw LedgerError.alreadyExists(kind: "api_key", id: keyId) }
        let now = store.clock.nowMicros()
        let key = APIKeyRecord(id: keyId, tenantId: keyTenantId, role: role, label: label, secretHash: secretHash, createdMicros: now,
                               revokedMicros: nil)
        try store.insertAPIKey(key)
        return key
    }

    public func resultId(_ output: APIKeyRecord) -> String { output.id }
    public func resultSeq(_ output: APIKeyRecord) -> Int64 { 0 }
}

public struct RevokeAPIKey: StorageCommand {
    public static let operation = "revoke_api_key"
    public var keyId: String

    public init(keyId: String) { self.keyId = keyId }

    public var tenantId: String { "" }
    public var idempotencyKey: String? { nil }
    public var idempotencyFields: [(String, String)] { [] }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(keyId, "key_id")
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> APIKeyRecord {
        guard var key = try store.apiKey(id: keyId) else { throw LedgerError.notFound(kind: "api_key", id: keyId) }
        if key.revokedMicros == nil {
            let now = store.clock.nowMicros()
            try store.revokeAPIKey(id: keyId, atMicros: now)
            key.revokedMicros = now
        }
        return key
    }

    public func resultId(_ output: APIKeyRecord) -> String { output.id }
    public func resultSeq(_ output: APIKeyRecord) -> Int64 { 0 }
}
