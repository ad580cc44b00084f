import Crypto
import Dispatch
import GRPCServices
import GRPCTransport
import Ledger
import NIOConcurrencyHelpers
import NIOPosix
import Synchronization

/// Who is calling, resolved from `authorization: Bearer <token>`.
public struct Caller: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The server's admin key.
        case admin
        /// A tenant key (staff or app), or a directory key acting for a tenant.
        case tenant(id: String, role: Role, keyId: String)
    }
    public var kind: Kind

    public var tenantId: String? {
        if case .tenant(let id, _, _) = kind { return id }
        return nil
    }

    public var role: Role? {
        if case .tenant(_, let role, _) = kind { return role }
        return nil
    }
}

/// The time the API layer reads itself (cache lifetimes): monotonic,
/// injected so that tests can move it. Times of the ledger's records come
/// from the ledger's `LedgerClock`.
public protocol APIClock: Sendable {
    /// Nanoseconds since a fixed point in the past; never goes back.
    func uptimeNanos() -> UInt64
}

/// The system's monotonic clock.
public struct SystemUptimeClock: APIClock {
    public init() {}
    public func uptimeNanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
}

/// Bearer tokens are "<key id>.<secret>"; only SHA-256(secret) is stored and
/// compared in constant time. The admin token comes from configuration.
public final class Authenticator: Sendable {
    private let adminTokenHash: [UInt8]?
    /// Keys and tenants read from the ledger, kept for at most
    /// `cacheTTLNanos`: a revoke or directory-access change invalidates at
    /// once, and the TTL bounds how long a read that raced with it can keep
    /// an old value.
    private let cache = NIOLockedValueBox(BoundedDictionary<String, CachedKey>(capacity: Authenticator.maxCachedKeys))

    /// A key as read from the ledger and, once a call proved it, the secret
    /// that hashed to its stored hash: later calls within the TTL compare
    /// against it in constant time instead of hashing again.
    private struct CachedKey {
        var key: APIKeyRecord
        var until: UInt64
        var verifiedSecret: [UInt8]?
    }
    private let tenants = NIOLockedValueBox(BoundedDictionary<String, (tenant: Tenant, until: UInt64)>(capacity: Authenticator.maxCachedKeys))

    /// The last key and tenant each thread resolved: the calls of one
    /// connection (one event loop) mostly carry one token, and this skips the
    /// shared caches' lock, dictionary and key-id string (measured: those were
    /// most of auth's 9% of the server's CPU per GetBalance). An entry is used
    /// only while `generation` is what it was before the entry was read (every
    /// invalidation bumps it) and until the shared cache's TTL.
    private final class ThreadMemo: @unchecked Sendable {  // confined to its thread
        var token: [UInt8] = []
        var key: APIKeyRecord?
        var keyUntil: UInt64 = 0
        var keyGeneration: UInt64 = 0
        var tenant: Tenant?
        var tenantUntil: UInt64 = 0
        var tenantGeneration: UInt64 = 0
    }
    private let memos = ThreadSpecificVariable<ThreadMemo>()
    private let generation = Atomic<UInt64>(1)

    private var memo: ThreadMemo {
        if let memo = memos.currentValue { return memo }
        let memo = ThreadMemo()
        memos.currentValue = memo
        return memo
    }
    static let maxCachedKeys = 100_000
    static let cacheTTLNanos: UInt64 = 1_000_000_000

    /// The clock of the caches' lifetimes (`cacheTTLNanos`).
    private let clock: any APIClock
    private var now: UInt64 { clock.uptimeNanos() }

    /// A tenant's name, currency and directory access, cached (their
    /// `lastSeq` is not kept: read seqs from the ledger). Only tenants that
    /// exist are cached; SetDirectoryAccess invalidates.
    func tenant(_ id: String, reader: LedgerReader) throws -> Tenant? {
        let now = self.now
        let generation = generation.load(ordering: .acquiring)
        let memo = memo
        if memo.tenantGeneration == generation, memo.tenantUntil > now, let tenant = memo.tenant, tenant.id == id { return tenant }
        let found: (tenant: Tenant, until: UInt64)
        if let cached = tenants.withLockedValue({ $0[id] }), cached.until > now {
            found = cached
        } else {
            guard var tenant = try reader.tenant(id) else { return nil }
            tenant.lastSeq = 0
            found = (tenant, now + Self.cacheTTLNanos)
            tenants.withLockedValue { tenants in
                tenants.insert(id, found)  // the oldest goes when full
            }
        }
        memo.tenant = found.tenant
        memo.tenantUntil = found.until
        memo.tenantGeneration = generation
        return found.tenant
    }

    public func invalidate(tenantId: String) {
        _ = tenants.withLockedValue { $0.removeValue(forKey: tenantId) }
        generation.add(1, ordering: .releasing)
    }

    public init(adminToken: String?, clock: any APIClock = SystemUptimeClock()) {
        self.clock = clock
        adminTokenHash = adminToken.flatMap { $0.isEmpty ? nil : Self.hash($0) }
    }

    public static func hash<S: StringProtocol>(_ secret: S) -> [UInt8] {
        // Hash the string's own UTF-8 storage when it is contiguous (native strings): no copy.
        if let digest = secret.utf8.withContiguousStorageIfAvailable({ SHA256.hash(data: UnsafeRawBufferPointer($0)) }) {
            return Array(digest)
        }
        return Array(SHA256.hash(data: Array(secret.utf8)))
    }

    /// A new random token for a key id: "<id>.<43 url-safe base64 chars>".
    public static func newSecret() -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var out = ""
        var bits = 0, value = 0
        for byte in bytes {
            value = value << 8 | Int(byte)
            bits += 8
            while bits >= 6 {
                bits -= 6
                out.append(alphabet[(value >> bits) & 63])
            }
        }
        if bits > 0 { out.append(alphabet[(value << (6 - bits)) & 63]) }
        return out
    }

    /// Time depends on the lengths only.
    static func constantTimeEqual(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in constantTimeEqual(a, b) } }
    }

    /// The same over a string's bytes: in place when they are contiguous
    /// (native strings), else over a copy.
    static func constantTimeEqual(_ a: Substring.UTF8View, _ b: [UInt8]) -> Bool {
        if let equal = a.withContiguousStorageIfAvailable({ a in b.withUnsafeBufferPointer { b in constantTimeEqual(a, b) } }) {
            return equal
        }
        return constantTimeEqual(Array(a), b)
    }

    /// Forgets a cached key (after a revoke).
    public func invalidate(keyId: String) {
        _ = cache.withLockedValue { $0.removeValue(forKey: keyId) }
        generation.add(1, ordering: .releasing)
    }

    /// Resolves the caller; throws UNAUTHENTICATED or PERMISSION_DENIED.
    func authenticate(_ metadata: Metadata, reader: LedgerReader) throws(RPCErrorBox) -> Caller {
        guard let header = metadata["authorization"] else {
            throw RPCErrorBox(RPCError(.unauthenticated, "missing authorization: Bearer <token>", reason: .unauthenticated))
        }
        guard let token = Self.bearerToken(header) else {
            throw RPCErrorBox(RPCError(.unauthenticated, "authorization must be 'Bearer <token>'", reason: .unauthenticated))
        }
        if let key = try matchingKey(token, reader: reader) {
            return try caller(for: key, metadata: metadata, reader: reader)
        }
        // Only when no key matched: one SHA-256 per call either way.
        if let adminTokenHash, Self.constantTimeEqual(Self.hash(token), adminTokenHash) {
            return Caller(kind: .admin)
        }
        throw RPCErrorBox(RPCError(.unauthenticated, "invalid or revoked token", reason: .unauthenticated))
    }

    /// The token of "Bearer <token>": the scheme in any case, then spaces or
    /// tabs, the token, and optional trailing spaces or tabs. Works on UTF-8
    /// bytes (this runs on every call).
    static func bearerToken(_ header: String) -> Substring? {
        let bytes = header.utf8
        func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }
        var i = bytes.startIndex
        while i < bytes.endIndex, isBlank(bytes[i]) { i = bytes.index(after: i) }
        for expected in "bearer".utf8 {
            guard i < bytes.endIndex, bytes[i] | 0x20 == expected else { return nil }
            i = bytes.index(after: i)
        }
        guard i < bytes.endIndex, isBlank(bytes[i]) else { return nil }
        while i < bytes.endIndex, isBlank(bytes[i]) { i = bytes.index(after: i) }
        var end = bytes.endIndex
        while end > i, isBlank(bytes[bytes.index(before: end)]) { end = bytes.index(before: end) }
        guard i < end else { return nil }
        return header[i..<end]
    }

    /// The unrevoked key whose id and secret the token carries ("<id>.<secret>").
    private func matchingKey(_ token: Substring, reader: LedgerReader) throws(RPCErrorBox) -> APIKeyRecord? {
        let now = self.now
        let generation = generation.load(ordering: .acquiring)
        let memo = memo
        if memo.keyGeneration == generation, memo.keyUntil > now, let key = memo.key, Self.constantTimeEqual(token.utf8, memo.token) {
            return key
        }
        guard let dot = token.utf8.firstIndex(of: UInt8(ascii: ".")) else { return nil }
        let idPart = token[..<dot], secretPart = token[token.utf8.index(after: dot)...]
        guard !idPart.isEmpty, !secretPart.isEmpty, idPart.utf8.count <= 64, secretPart.utf8.count <= 128 else { return nil }
        let keyId = String(idPart)
        let cached = cache.withLockedValue { $0[keyId] }.flatMap { $0.until > now ? $0 : nil }
        if let cached, let verified = cached.verifiedSecret, cached.key.revokedMicros == nil {
            guard Self.constantTimeEqual(secretPart.utf8, verified) else { return nil }
            remember(token, key: cached.key, until: cached.until, generation: generation, in: memo)
            return cached.key
        }
        var key = cached?.key
        if key == nil {
            let stored: APIKeyRecord?
            do {
                stored = try reader.apiKey(id: keyId)
            } catch {
                throw RPCErrorBox(RPCError(.unavailable, "cannot read keys now; retry", reason: .storage))
            }
            guard let stored else { return nil }
            key = stored
            if stored.revokedMicros == nil {
                cache.withLockedValue { cache in
                    cache.insert(keyId, CachedKey(key: stored, until: now + Self.cacheTTLNanos, verifiedSecret: nil))  // the oldest goes when full
                }
            }
        }
        guard let key, key.revokedMicros == nil, Self.constantTimeEqual(Self.hash(secretPart), key.secretHash) else {
            return nil
        }
        let secret = Array(secretPart.utf8)
        let until = cache.withLockedValue { cache -> UInt64? in
            // Only onto the entry this key was read into (not one re-read since).
            guard cache[keyId]?.key == key else { return nil }
            cache.update(keyId) { $0.verifiedSecret = secret }
            return cache[keyId]?.until
        }
        if let until { remember(token, key: key, until: until, generation: generation, in: memo) }
        return key
    }

    /// This thread's memo of a verified, unrevoked key (see `ThreadMemo`).
    private func remember(_ token: Substring, key: APIKeyRecord, until: UInt64, generation: UInt64, in memo: ThreadMemo) {
        assert(key.revokedMicros == nil, "a revoked key is never remembered")
        memo.token = Array(token.utf8)
        memo.key = key
        memo.keyUntil = until
        memo.keyGeneration = generation
    }

    /// The caller a matching key stands for, checking x-on-behalf-of.
    private func caller(for key: APIKeyRecord, metadata: Metadata, reader: LedgerReader) throws(RPCErrorBox) -> Caller {
        let invalid = RPCErrorBox(RPCError(.unauthenticated, "invalid or revoked token", reason: .unauthenticated))
        let onBehalfOf = metadata["x-on-behalf-of"]
        switch key.role {
        case .directory:
            guard let tenantId = onBehalfOf, !tenantId.isEmpty else {
                throw RPCErrorBox(RPCError(.permissionDenied, "a directory key must name the tenant in x-on-behalf-of", reason: .onBehalfOfRequired))
            }
            guard let tenant = try? self.tenant(tenantId, reader: reader), tenant.allowDirectory else {
                // The same answer whether the tenant is unknown or does not allow it: nothing leaks.
                throw RPCErrorBox(RPCError(.permissionDenied, "tenant does not allow directory access", reason: .directoryAccessDenied))
            }
            return Caller(kind: .tenant(id: tenantId, role: .directory, keyId: key.id))
        case .staff, .app:
            guard let tenantId = key.tenantId else { throw invalid }
            if let onBehalfOf, !onBehalfOf.isEmpty, onBehalfOf != tenantId {
                throw RPCErrorBox(RPCError(.permissionDenied, "this key cannot act for another tenant", reason: .crossTenantDenied))
            }
            return Caller(kind: .tenant(id: tenantId, role: key.role, keyId: key.id))
        }
    }
}

/// Wraps RPCError for typed throws.
struct RPCErrorBox: Error {
    let error: RPCError
    init(_ error: RPCError) { self.error = error }
}

import Foundation
