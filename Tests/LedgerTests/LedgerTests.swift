import Foundation
import Testing
@testable import Ledger

// Unit tests of every ledger command and read, and their error paths.
// Each test ends with `fx.finish()`, which checks `verify()` is OK.

// MARK: - Tenants and API keys

@Suite struct TenantTests {
    @Test func createTenantThenDuplicateIsAlreadyExists() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let tenant = try #require(try fx.reader.tenant("t1"))
        #expect(tenant == Tenant(id: "t1", name: "Gym One", currency: "EUR", allowDirectory: false, createdMicros: fx.now, lastSeq: 0))
        fx.expectError(.alreadyExists(kind: "tenant", id: "t1"), CreateTenant(id: "t1", name: "Other", currency: "USD", allowDirectory: true))
        #expect(try fx.reader.tenant("t1") == tenant)
        let second = try fx.apply(CreateTenant(id: "t2", name: "Spa", currency: "CHF", allowDirectory: true))
        #expect(second == Tenant(id: "t2", name: "Spa", currency: "CHF", allowDirectory: true, createdMicros: fx.now, lastSeq: 0))
        #expect(try fx.reader.tenant("t2") == second)
    }

    @Test(arguments: ["eur", "EU", "EURO", "E1R", "", "€UR"])
    func badCurrencyIsInvalidArgument(code: String) throws {
        let fx = try Fixture()
        defer { fx.finish() }
        fx.expectError(.invalidArgument([.init("currency", "must be an ISO 4217 code, three capital letters")]),
                       CreateTenant(id: "t2", name: "Spa", currency: code, allowDirectory: false))
        #expect(try fx.reader.tenant("t2") == nil)
    }

    @Test func badIdAndNameAreInvalidArgument() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        fx.expectError(.invalidArgument([.init("tenant_id", "is required"), .init("name", "is required")]),
                       CreateTenant(id: "", name: "", currency: "EUR", allowDirectory: false))
        fx.expectError(.invalidArgument([.init("tenant_id", "must be printable ASCII without spaces")]),
                       CreateTenant(id: "a b", name: "X", currency: "EUR", allowDirectory: false))
        fx.expectError(.invalidArgument([.init("tenant_id", "is longer than 128 bytes")]),
                       CreateTenant(id: String(repeating: "x", count: 129), name: "X", currency: "EUR", allowDirectory: false))
    }

    @Test func setDirectoryAccess() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let on = try fx.apply(SetDirectoryAccess(tenantId: "t1", allow: true))
        #expect(on.allowDirectory == true)
        #expect(try fx.reader.tenant("t1")?.allowDirectory == true)
        let off = try fx.apply(SetDirectoryAccess(tenantId: "t1", allow: false))
        #expect(off.allowDirectory == false)
        #expect(try fx.reader.tenant("t1")?.allowDirectory == false)
        fx.expectError(.notFound(kind: "tenant", id: "nope"), SetDirectoryAccess(tenantId: "nope", allow: true))
    }

    /// Commands that name only a tenant (and a client) report the tenant missing.
    @Test func unknownTenantIsNotFoundTenant() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let t = "nope"
        let expected = LedgerError.notFound(kind: "tenant", id: t)
        func check<C: LedgerCommand>(_ command: C, sourceLocation: SourceLocation = #_sourceLocation) {
            fx.expectError(expected, command, sourceLocation: sourceLocation)
        }
        check(SetDirectoryAccess(tenantId: t, allow: true))
        check(CreateAPIKey(keyId: "k1", tenantId: t, role: .staff, label: "x", secretHash: Array(repeating: 1, count: 32)))
        check(CreatePackage(tenantId: t, name: "P", creditsMinor: 100, priceMinor: 100, validityDays: nil, scope: .any, idempotencyKey: nil))
        check(CreateCreditOrder(tenantId: t, clientId: "c", amountMinor: 100, priceMinor: 100, centerId: "c1", note: "", validUntilMicros: nil, scope: .any, idempotencyKey: "k"))
        check(AdjustBalance(tenantId: t, clientId: "c", amountMinor: 100, reason: "r", centerId: "c1", validUntilMicros: nil, idempotencyKey: "k"))
        check(AdjustBalance(tenantId: t, clientId: "c", amountMinor: -100, reason: "r", centerId: "c1", validUntilMicros: nil, idempotencyKey: "k"))
        check(SpendCredits(tenantId: t, clientId: "c", amountMinor: 1, reason: .booking, centerId: "c1", bookingRef: "", serviceCategory: nil, membershipId: nil, idempotencyKey: "k"))
        check(CreateHold(tenantId: t, clientId: "c", amountMinor: 1, centerId: "c1", bookingRef: "", serviceCategory: nil, membershipId: nil, expiresMicros: fx.now + 60 * microsPerSecond, idempotencyKey: "k"))
        check(CreateWriteOff(tenantId: t, clientId: "c", amountMinor: 1, reason: "r", idempotencyKey: "k"))
        #expect(throws: expected) { try fx.reader.balance(tenant: t, client: "c") }
        #expect(try fx.reader.tenant(t) == nil)
    }

    /// Records of one tenant are invisible to another.
    @Test func tenantsAreIsolated() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.apply(CreateTenant(id: "t2", name: "Two", currency: "EUR", allowDirectory: false))
        try fx.order("c", 100)
        let pkg = try fx.apply(CreatePackage(tenantId: "t1", name: "P", creditsMinor: 5, priceMinor: 5, validityDays: nil, scope: .any, idempotencyKey: nil))
        let hold = try fx.hold("c", 10)
        let spend = try fx.spend("c", 10).spend
        let writeOff = try fx.apply(fx.writeOffCmd("c", 10)).writeOff
        try fx.expectUnchanged("c") {
            fx.expectError(.notFound(kind: "hold", id: hold.id), CaptureHold(tenantId: "t2", holdId: hold.id, amountMinor: nil, reason: .booking, idempotencyKey: "k"))
            fx.expectError(.notFound(kind: "hold", id: hold.id), ReleaseHold(tenantId: "t2", holdId: hold.id, idempotencyKey: "k"))
            fx.expectError(.notFound(kind: "spend", id: spend.id), ReverseSpend(tenantId: "t2", spendId: spend.id, amountMinor: 1, reason: "", idempotencyKey: "k"))
            fx.expectError(.notFound(kind: "write_off", id: writeOff.id), VoidWriteOff(tenantId: "t2", writeOffId: writeOff.id, idempotencyKey: "k"))
            fx.expectError(.notFound(kind: "package", id: pkg.id),
                           PurchasePackage(tenantId: "t2", clientId: "c", packageId: pkg.id, centerId: "c1", paymentRef: "", idempotencyKey: "k"))
            fx.expectError(.insufficientCredits(availableMinor: 0, requestedMinor: 1),
                           SpendCredits(tenantId: "t2", clientId: "c", amountMinor: 1, reason: .booking, centerId: "c1", bookingRef: "", serviceCategory: nil, membershipId: nil, idempotencyKey: "k"))
        }
        #expect(try fx.reader.balance(tenant: "t2", client: "c").summary == BalanceSummary(clientId: "c", availableMinor: 0, heldMinor: 0, seq: 0))
        #expect(try fx.reader.hold(tenant: "t2", id: hold.id) == nil)
        #expect(try fx.reader.spend(tenant: "t2", id: spend.id) == nil)
        #expect(try fx.reader.writeOff(tenant: "t2", id: writeOff.id) == nil)
        #expect(try fx.reader.package(tenant: "t2", id: pkg.id) == nil)
        #expect(try fx.reader.listWriteOffs(tenant: "t2", clientId: nil, afterSeq: nil, limit: 10).isEmpty)
        #expect(try fx.reader.statement(.init(tenant: "t2", clientId: "c")).isEmpty)
        #expect(try fx.reader.tenant("t2")?.lastSeq == 0)
    }

    /// Commands that name a package, hold, spend or write-off of an unknown
    /// tenant report that record missing rather than the tenant.
    /// Regression (ledger-unknown-tenant): unknown tenant on id-based commands is not notFound(kind: \"tenant\")
    @Test
    func unknownTenantOnIdBasedCommands() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let t = "nope"
        let cases: [(String, LedgerError?)] = [
            ("PurchasePackage", fx.error(PurchasePackage(tenantId: t, clientId: "c", packageId: "pkg_x", centerId: "c1", paymentRef: "", idempotencyKey: "k"))),
            ("UpdatePackage", fx.error(UpdatePackage(tenantId: t, packageId: "pkg_x", active: false))),
            ("CaptureHold", fx.error(CaptureHold(tenantId: t, holdId: "hld_x", amountMinor: nil, reason: .booking, idempotencyKey: "k"))),
            ("ReleaseHold", fx.error(ReleaseHold(tenantId: t, holdId: "hld_x", idempotencyKey: "k"))),
            ("ReverseSpend", fx.error(ReverseSpend(tenantId: t, spendId: "spd_x", amountMinor: 1, reason: "r", idempotencyKey: "k"))),
            ("VoidWriteOff", fx.error(VoidWriteOff(tenantId: t, writeOffId: "wof_x", idempotencyKey: "k"))),
        ]
        for (name, error) in cases {
            #expect(error == .notFound(kind: "tenant", id: t), "\(name)")
        }
    }
}

@Suite struct APIKeyTests {
    let hash = Array(repeating: UInt8(7), count: 32)

    @Test func createLookupRevoke() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let staff = try fx.apply(CreateAPIKey(keyId: "key_staff", tenantId: "t1", role: .staff, label: "front desk", secretHash: hash))
        #expect(staff == APIKeyRecord(id: "key_staff", tenantId: "t1", role: .staff, label: "front desk", secretHash: hash, createdMicros: fx.now, revokedMicros: nil))
        #expect(try fx.reader.apiKey(id: "key_staff") == staff)
        let directory = try fx.apply(CreateAPIKey(keyId: "key_dir", tenantId: nil, role: .directory, label: "platform", secretHash: hash))
        #expect(directory.tenantId == nil && directory.role == .directory)
        #expect(try fx.reader.apiKey(id: "key_dir") == directory)

        fx.clock.advance(seconds: 10)
        let revoked = try fx.apply(RevokeAPIKey(keyId: "key_staff"))
        #expect(revoked.revokedMicros == fx.now)
        fx.clock.advance(seconds: 10)
        let again = try fx.apply(RevokeAPIKey(keyId: "key_staff"))
        #expect(again.revokedMicros == fx.now - 10 * microsPerSecond)  // first revocation time kept
        #expect(try fx.reader.apiKey(id: "key_staff") == again)
        fx.expectError(.notFound(kind: "api_key", id: "key_nope"), RevokeAPIKey(keyId: "key_nope"))
        #expect(try fx.reader.apiKey(id: "key_nope") == nil)
    }

    @Test func invalidKeys() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        fx.expectError(.invalidArgument([.init("tenant_id", "must be empty for a directory key")]),
                       CreateAPIKey(keyId: "k", tenantId: "t1", role: .directory, label: "", secretHash: hash))
        fx.expectError(.invalidArgument([.init("tenant_id", "is required")]),
                       CreateAPIKey(keyId: "k", tenantId: nil, role: .app, label: "", secretHash: hash))
        fx.expectError(.invalidArgument([.init("secret_hash", "must be 32 bytes")]),
                       CreateAPIKey(keyId: "k", tenantId: "t1", role: .app, label: "", secretHash: Array(hash.dropLast())))
        fx.expectError(.invalidArgument([.init("key_id", "is required")]), RevokeAPIKey(keyId: ""))
    }

    /// Regression (ledger-duplicate-api-key): CreateAPIKey with an existing key id is a storage error, not alreadyExists
    @Test
    func duplicateKeyId() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.apply(CreateAPIKey(keyId: "key_a", tenantId: "t1", role: .app, label: "a", secretHash: hash))
        let error = fx.error(CreateAPIKey(keyId: "key_a", tenantId: "t1", role: .staff, label: "b", secretHash: hash))
        #expect(error != nil)
        #expect(try fx.reader.apiKey(id: "key_a")?.role == .app)
        #expect(error == .alreadyExists(kind: "api_key", id: "key_a"))
    }
}

// MARK: - Packages and purchases

@Suite struct PackageTests {
    @Test func createUpdateDeactivate() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let scope = Scope(serviceCategories: ["yoga"], centers: ["c1", "c2"], membershipIds: [])
        let created = fx.now
        let pkg = try fx.apply(CreatePackage(tenantId: "t1", name: "Ten", creditsMinor: 1_000, priceMinor: 900, validityDays: 30, scope: scope, idempotencyKey: nil))
        #expect(pkg.id.hasPrefix("pkg_"))
        #expect(pkg == CreditPackage(id: pkg.id, name: "Ten", creditsMinor: 1_000, priceMinor: 900, validityDays: 30, scope: scope,
                                     active: true, createdMicros: created, updatedMicros: created))
        #expect(try fx.reader.package(tenant: "t1", id: pkg.id) == pkg)

        fx.clock.advance(seconds: 5)
        let updated = try fx.apply(UpdatePackage(tenantId: "t1", packageId: pkg.id, name: "Twelve", creditsMinor: 1_200, priceMinor: 1_000,
                                                 validityDays: .some(nil), scope: .any))
        #expect(updated == CreditPackage(id: pkg.id, name: "Twelve", creditsMinor: 1_200, priceMinor: 1_000, validityDays: nil, scope: .any,
                                         active: true, createdMicros: created, updatedMicros: fx.now))
        #expect(try fx.reader.package(tenant: "t1", id: pkg.id) == updated)

        // nil fields are left as they are.
        let renamed = try fx.apply(UpdatePackage(tenantId: "t1", packageId: pkg.id, name: "Dozen"))
        #expect(renamed.creditsMinor == 1_200 && renamed.validityDays == nil && renamed.name == "Dozen" && renamed.active)
        let withValidity = try fx.apply(UpdatePackage(tenantId: "t1", packageId: pkg.id, validityDays: .some(7)))
        #expect(withValidity.validityDays == 7 && withValidity.name == "Dozen")

        let other = try fx.apply(CreatePackage(tenantId: "t1", name: "Other", creditsMinor: 5, priceMinor: 0, validityDays: nil, scope: .any, idempotencyKey: nil))
        let inactive = try fx.apply(UpdatePackage(tenantId: "t1", packageId: pkg.id, active: false))
        #expect(inactive.active == false)
        #expect(try fx.reader.listPackages(tenant: "t1", includeInactive: false, afterId: nil, limit: 10).map(\.id) == [other.id])
        let all = try fx.reader.listPackages(tenant: "t1", includeInactive: true, afterId: nil, limit: 10)
        #expect(all.map(\.id) == [pkg.id, other.id].sorted())
        let firstPage = try fx.reader.listPackages(tenant: "t1", includeInactive: true, afterId: nil, limit: 1)
        let secondPage = try fx.reader.listPackages(tenant: "t1", includeInactive: true, afterId: firstPage[0].id, limit: 1)
        #expect((firstPage + secondPage).map(\.id) == all.map(\.id))

        // Purchase of the inactive package fails and changes nothing; reactivated it works.
        try fx.expectUnchanged("c") {
            fx.expectError(.packageInactive(packageId: pkg.id),
                           PurchasePackage(tenantId: "t1", clientId: "c", packageId: pkg.id, centerId: "c1", paymentRef: "p", idempotencyKey: fx.key()))
        }
        try fx.apply(UpdatePackage(tenantId: "t1", packageId: pkg.id, active: true))
        let grant = try fx.apply(PurchasePackage(tenantId: "t1", clientId: "c", packageId: pkg.id, centerId: "c1", paymentRef: "p", idempotencyKey: fx.key()))
        #expect(grant.lot.amountMinor == 1_200 && grant.lot.validUntilMicros == fx.now + 7 * microsPerDay)

        fx.expectError(.notFound(kind: "package", id: "pkg_missing"), UpdatePackage(tenantId: "t1", packageId: "pkg_missing", active: false))
        #expect(try fx.reader.package(tenant: "t1", id: "pkg_missing") == nil)
    }

    @Test func packageValidation() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        func create(name: String = "P", credits: Int64 = 1, price: Int64 = 0, days: Int32? = nil) -> CreatePackage {
            CreatePackage(tenantId: "t1", name: name, creditsMinor: credits, priceMinor: price, validityDays: days, scope: .any, idempotencyKey: nil)
        }
        fx.expectError(.invalidArgument([.init("name", "is required")]), create(name: ""))
        fx.expectError(.invalidArgument([.init("credits_minor", "must be greater than 0")]), create(credits: 0))
        fx.expectError(.invalidArgument([.init("price_minor", "must not be negative")]), create(price: -1))
        fx.expectError(.invalidArgument([.init("validity_days", "must be 1…36500")]), create(days: 0))
        fx.expectError(.invalidArgument([.init("validity_days", "must be 1…36500")]), create(days: 36_501))
        fx.expectError(.invalidArgument([.init("credits_minor", "must be greater than 0")]),
                       UpdatePackage(tenantId: "t1", packageId: "pkg_x", creditsMinor: -5))
        #expect(try fx.reader.listPackages(tenant: "t1", includeInactive: true, afterId: nil, limit: 10).isEmpty)
    }

    @Test func purchaseCreatesLotFromPackage() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let scope = Scope(serviceCategories: ["spa"], centers: ["c2"], membershipIds: ["m1"])
        let pkg = try fx.apply(CreatePackage(tenantId: "t1", name: "Spa 5", creditsMinor: 500, priceMinor: 450, validityDays: 30, scope: scope, idempotencyKey: nil))
        fx.clock.advance(seconds: 77)
        let grant = try fx.apply(PurchasePackage(tenantId: "t1", clientId: "alice", packageId: pkg.id, centerId: "c2", paymentRef: "pay-1", idempotencyKey: "buy-1"))
        let lot = grant.lot
        #expect(lot.id.hasPrefix("lot_"))
        #expect(lot == Lot(id: lot.id, clientId: "alice", origin: .purchase, centerId: "c2", amountMinor: 500, remainingMinor: 500, heldMinor: 0,
                           validFromMicros: nil, validUntilMicros: fx.now + 30 * microsPerDay, scope: scope, packageId: pkg.id,
                           paymentRef: "pay-1", priceMinor: 450, note: "Spa 5", createdSeq: 1, createdMicros: fx.now, state: .active))
        #expect(grant.balance == BalanceSummary(clientId: "alice", availableMinor: 500, heldMinor: 0, seq: 1))
        try fx.expectSummary(grant.balance)
        #expect(try fx.balance("alice").lots == [lot])
        let entry = try #require(try fx.entries("alice").first)
        #expect(entry == LedgerEntry(seq: 1, type: .purchase, clientId: "alice", amountMinor: 500, debitAccount: Account.purchases,
                                     creditAccount: Account.available("alice"), availableAfterMinor: 500, heldAfterMinor: 0, timeMicros: fx.now,
                                     refId: lot.id, centerId: "c2", bookingRef: "", paymentRef: "pay-1", idempotencyKey: "buy-1",
                                     reason: "purchase", note: "Spa 5",
                                     allocations: [Allocation(lotId: lot.id, remainingDeltaMinor: 500, heldDeltaMinor: 0)]))
        #expect(try fx.account(Account.purchases) == -500)

        // Changing the package later does not touch lots already bought.
        try fx.apply(UpdatePackage(tenantId: "t1", packageId: pkg.id, creditsMinor: 9, validityDays: .some(nil), scope: .any))
        #expect(try fx.lot(lot.id) == lot)

        // No validity: never expires; empty payment ref is stored as none.
        let open = try fx.apply(CreatePackage(tenantId: "t1", name: "Open", creditsMinor: 100, priceMinor: 100, validityDays: nil, scope: .any, idempotencyKey: nil))
        let grant2 = try fx.apply(PurchasePackage(tenantId: "t1", clientId: "alice", packageId: open.id, centerId: "c1", paymentRef: "", idempotencyKey: "buy-2"))
        #expect(grant2.lot.validUntilMicros == nil && grant2.lot.paymentRef == nil && grant2.lot.createdSeq == 2)
        #expect(grant2.balance == BalanceSummary(clientId: "alice", availableMinor: 600, heldMinor: 0, seq: 2))

        try fx.expectUnchanged("alice") {
            fx.expectError(.notFound(kind: "package", id: "pkg_nope"),
                           PurchasePackage(tenantId: "t1", clientId: "alice", packageId: "pkg_nope", centerId: "c1", paymentRef: "", idempotencyKey: "buy-3"))
        }
    }
}

// MARK: - Idempotency

@Suite struct IdempotencyTests {
    func setUp() throws -> (Fixture, CreditPackage) {
        let fx = try Fixture()
        let pkg = try fx.apply(CreatePackage(tenantId: "t1", name: "Ten", creditsMinor: 1_000, priceMinor: 900, validityDays: nil, scope: .any, idempotencyKey: nil))
        return (fx, pkg)
    }

    func purchase(_ fx: Fixture, _ pkg: CreditPackage, key: String?, client: String = "c", center: String = "c1", payment: String = "pay") -> PurchasePackage {
        PurchasePackage(tenantId: "t1", clientId: client, packageId: pkg.id, centerId: center, paymentRef: payment, idempotencyKey: key)
    }

    /// Encode once: the encoder runs once per applied write (with or without
    /// a key), its bytes are the outcome's reply, and a replay returns the
    /// stored bytes without running it.
    @Test func encoderRunsOncePerAppliedWriteAndNeverOnReplay() throws {
        let (fx, pkg) = try setUp()
        defer { fx.finish() }
        var encoded = 0
        let outcome = try fx.ledger.write(purchase(fx, pkg, key: "once")) { grant in
            encoded += 1
            return Array("grant:\(grant.lot.id)".utf8)
        }
        guard case .applied(let grant, let reply) = outcome else { Issue.record("expected applied, got \(outcome)"); return }
        #expect(encoded == 1)
        #expect(reply == Array("grant:\(grant.lot.id)".utf8))
        #expect(outcome.reply == reply)
        let replay = try fx.ledger.write(purchase(fx, pkg, key: "once")) { _ in
            encoded += 1
            return []
        }
        guard case .replayed(let stored, _, _) = replay else { Issue.record("expected replay, got \(replay)"); return }
        #expect(stored == reply)
        #expect(encoded == 1)
        let keyless = try fx.ledger.write(CreatePackage(tenantId: "t1", name: "Five", creditsMinor: 500, priceMinor: 450, validityDays: nil,
                                                        scope: .any, idempotencyKey: nil)) { created in
            encoded += 1
            return Array(created.id.utf8)
        }
        guard case .applied(let created, let keylessReply) = keyless else { Issue.record("expected applied, got \(keyless)"); return }
        #expect(keylessReply == Array(created.id.utf8))
        #expect(encoded == 2)
    }

    @Test func purchaseRequiresKey() throws {
        let (fx, pkg) = try setUp()
        defer { fx.finish() }
        let violation = LedgerError.invalidArgument([.init("idempotency_key", "is required (field or idempotency-key metadata)")])
        fx.expectError(violation, purchase(fx, pkg, key: nil))
        fx.expectError(violation, purchase(fx, pkg, key: ""))
        fx.expectError(.invalidArgument([.init("idempotency_key", "must be printable ASCII without spaces")]), purchase(fx, pkg, key: "a key"))
        #expect(fx.lastSeq == 0)
    }

    @Test func replayReturnsStoredReply() throws {
        let (fx, pkg) = try setUp()
        defer { fx.finish() }
        let command = purchase(fx, pkg, key: "buy-1")
        guard case .applied(let grant, let firstReply) = try fx.ledger.write(command, encodeReply: { Array("reply:\($0.lot.id)".utf8) }) else {
            Issue.record("first write not applied"); return
        }
        let stored = Array("reply:\(grant.lot.id)".utf8)
        #expect(firstReply == stored)  // the encoder's bytes are the reply, and are what is stored
        let before = try fx.balance("c")
        fx.clock.advance(seconds: 60)
        let outcome = try fx.ledger.write(command, encodeReply: { _ in Array("different".utf8) })
        guard case .replayed(let reply, let resultId, let seq) = outcome else { Issue.record("expected replay, got \(outcome)"); return }
        #expect(reply == stored)
        #expect(resultId == grant.lot.id)
        #expect(seq == 1)
        #expect(try fx.balance("c") == before)
        #expect(fx.lastSeq == 1)
        #expect(try fx.entries("c").count == 1)
        #expect(try fx.reader.idempotency(tenant: "t1", key: "buy-1")
                == LedgerReader.IdempotencyLookup(operation: "purchase", resultId: grant.lot.id, seq: 1, reply: stored, createdMicros: fx.now - 60 * microsPerSecond))
        #expect(try fx.reader.idempotency(tenant: "t1", key: "nope") == nil)
        #expect(try fx.reader.idempotency(tenant: "t2", key: "buy-1") == nil)
    }

    @Test func sameKeyDifferentFieldsNamesThem() throws {
        let (fx, pkg) = try setUp()
        defer { fx.finish() }
        let grant = try fx.apply(purchase(fx, pkg, key: "buy-1"))
        let lotId = grant.lot.id
        try fx.expectUnchanged("c") {
            fx.expectError(.idempotencyKeyReused(operation: "purchase", differingFields: ["payment_ref"], existingResultId: lotId),
                           purchase(fx, pkg, key: "buy-1", payment: "pay-2"))
            fx.expectError(.idempotencyKeyReused(operation: "purchase", differingFields: ["center_id", "payment_ref"], existingResultId: lotId),
                           purchase(fx, pkg, key: "buy-1", center: "c2", payment: "pay-2"))
        }
        try fx.expectUnchanged("d") {
            fx.expectError(.idempotencyKeyReused(operation: "purchase", differingFields: ["client_id"], existingResultId: lotId),
                           purchase(fx, pkg, key: "buy-1", client: "d"))
        }
        // The same key on another operation.
        try fx.expectUnchanged("c") {
            fx.expectError(.idempotencyKeyReused(operation: "purchase",
                                                 differingFields: ["amount_minor", "booking_ref", "center_id", "client_id", "membership_id", "reason", "service_category"],
                                                 existingResultId: lotId),
                           fx.spendCmd("c", 10, key: "buy-1"))
            fx.expectError(.idempotencyKeyReused(operation: "purchase", differingFields: ["write_off_id"], existingResultId: lotId),
                           fx.voidCmd("wof_x", key: "buy-1"))
        }
        // Keys are per tenant.
        try fx.apply(CreateTenant(id: "t2", name: "Two", currency: "EUR", allowDirectory: false))
        let other = try fx.apply(CreateCreditOrder(tenantId: "t2", clientId: "c", amountMinor: 5, priceMinor: 5, centerId: "c1", note: "",
                                                   validUntilMicros: nil, scope: .any, idempotencyKey: "buy-1"))
        #expect(other.balance == BalanceSummary(clientId: "c", availableMinor: 5, heldMinor: 0, seq: 1))
    }

    @Test func spendReplayIgnoresTodaysBalanceAndFailuresStoreNoKey() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 100)
        let spend = try fx.apply(fx.spendCmd("c", 100, key: "s1"))
        // The client has nothing left, yet the retry is answered from the record.
        guard case .replayed(_, let id, let seq) = try fx.ledger.write(fx.spendCmd("c", 100, key: "s1")) else { Issue.record(); return }
        #expect(id == spend.spend.id && seq == spend.balance.seq)
        // A failed command records nothing: the key is free for a later success.
        fx.expectError(.insufficientCredits(availableMinor: 0, requestedMinor: 50), fx.spendCmd("c", 50, key: "s2"))
        #expect(try fx.reader.idempotency(tenant: "t1", key: "s2") == nil)
        try fx.order("c", 60)
        let later = try fx.apply(fx.spendCmd("c", 50, key: "s2"))
        #expect(later.balance.availableMinor == 10)
        #expect(try fx.reader.idempotency(tenant: "t1", key: "s2")?.resultId == later.spend.id)
        // A package create with a key is idempotent too.
        let create = CreatePackage(tenantId: "t1", name: "P", creditsMinor: 1, priceMinor: 1, validityDays: nil, scope: .any, idempotencyKey: "pk")
        let pkg = try fx.apply(create)
        guard case .replayed(_, let pkgId, _) = try fx.ledger.write(create) else { Issue.record(); return }
        #expect(pkgId == pkg.id)
        #expect(try fx.reader.listPackages(tenant: "t1", includeInactive: true, afterId: nil, limit: 10).count == 1)
    }
}

extension IdempotencyTests {
    /// Validated text fields (note, reason, name) may hold a newline; the
    /// canonical field list is newline-separated, so the names of the
    /// differing fields come out wrong.
    /// Regression (ledger-idempotency-newline): differing field names are wrong when a value holds a newline
    @Test
    func differingFieldNamesWithNewlineInValue() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let lot = try fx.apply(fx.orderCmd("c", 10, note: "line1\nline2", key: "o")).lot
        let error = fx.error(fx.orderCmd("c", 10, note: "line1\nline3", key: "o"))
        guard case .idempotencyKeyReused(let operation, _, let existing)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(operation == "credit_order" && existing == lot.id)
        #expect(error == .idempotencyKeyReused(operation: "credit_order", differingFields: ["note"], existingResultId: lot.id))
    }

    /// Scope lists are joined with "," but ids may contain ","; two different
    /// scopes then look like the same request and the retry is "replayed".
    /// Regression (ledger-idempotency-scope-collision): scopes [\"a,b\"] and [\"a\",\"b\"] have the same idempotency fields
    @Test
    func scopeListsWithCommasCollide() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let lot = try fx.apply(fx.orderCmd("c", 10, scope: Scope(centers: ["c1", "c2"]), key: "o")).lot
        let retry = fx.orderCmd("c", 10, scope: Scope(centers: ["c1,c2"]), key: "o")
        let error = fx.error(retry)
        #expect(error == .idempotencyKeyReused(operation: "credit_order", differingFields: ["scope"], existingResultId: lot.id))
        #expect(try fx.balance("c").lots.map(\.scope) == [Scope(centers: ["c1", "c2"])])
    }
}

// MARK: - Limits

@Suite struct LimitTests {
    /// A client balance above LedgerLimits.maxBalanceMinor must be refused
    /// with amountOutOfRange; today the writer thread traps (process exits).
    /// Regression (ledger-balance-limit-crash): balance above maxBalanceMinor crashes the process instead of amountOutOfRange
    @Test
    func balanceAboveLimitIsRefused() async {
        await #expect(processExitsWith: .success) {
            let fx = try Fixture()
            for _ in 0..<4 { try fx.apply(fx.orderCmd("c", LedgerLimits.maxAmountMinor)) }
            // 4 × 10^15 = maxBalanceMinor exactly; one more minor unit is too much.
            let error = fx.error(fx.orderCmd("c", 1))
            guard case .amountOutOfRange? = error else { exit(1) }
            guard try fx.balance("c").summary.availableMinor == LedgerLimits.maxBalanceMinor, try fx.ledger.verify().ok else { exit(2) }
        }
    }

    @Test func balanceAtLimitIsAccepted() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        for _ in 0..<4 { try fx.apply(fx.orderCmd("c", LedgerLimits.maxAmountMinor)) }
        #expect(try fx.balance("c").summary.availableMinor == LedgerLimits.maxBalanceMinor)
        let spend = try fx.spend("c", LedgerLimits.maxAmountMinor)
        #expect(spend.balance.availableMinor == 3 * LedgerLimits.maxAmountMinor)
    }
}

// MARK: - Spends

@Suite struct SpendTests {
    @Test func drawsSoonestExpiryFirstThenOldestNoExpiryLast() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let a = try fx.order("c", 100)                 // no expiry, oldest
        let b = try fx.order("c", 100, validDays: 30)
        let c = try fx.order("c", 100, validDays: 10)
        let d = try fx.order("c", 100, validDays: 10)  // same expiry as c, newer
        let e = try fx.order("c", 100)                 // no expiry, newest
        #expect(try fx.balance("c").lots.map(\.id) == [c.id, d.id, b.id, a.id, e.id])
        let result = try fx.spend("c", 450, center: "c7")
        #expect(result.spend.allocations == [
            Allocation(lotId: c.id, remainingDeltaMinor: -100, heldDeltaMinor: 0),
            Allocation(lotId: d.id, remainingDeltaMinor: -100, heldDeltaMinor: 0),
            Allocation(lotId: b.id, remainingDeltaMinor: -100, heldDeltaMinor: 0),
            Allocation(lotId: a.id, remainingDeltaMinor: -100, heldDeltaMinor: 0),
            Allocation(lotId: e.id, remainingDeltaMinor: -50, heldDeltaMinor: 0),
        ])
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 50, heldMinor: 0, seq: 6))
        let snapshot = try fx.balance("c")
        #expect(snapshot.lots.map(\.id) == [e.id] && snapshot.lots[0].remainingMinor == 50)
        #expect(try fx.lot(c.id)?.state == .exhausted)
        #expect(try fx.reader.spend(tenant: "t1", id: result.spend.id) == result.spend)
        #expect(result.spend == Spend(id: result.spend.id, clientId: "c", amountMinor: 450, reversedMinor: 0, reason: .booking, centerId: "c7",
                                      bookingRef: "b1", serviceCategory: nil, holdId: nil, seq: 6, createdMicros: fx.now,
                                      allocations: result.spend.allocations))
        let entries = try fx.entries("c")
        let entry = try #require(entries.first)
        // The statement page reads every entry's allocations with one query; each must get its own.
        #expect(entry.allocations == result.spend.allocations)
        #expect(entries.dropFirst().allSatisfy { $0.allocations.count <= 1 && $0.allocations.allSatisfy { $0.remainingDeltaMinor == 100 } })
        #expect(entry.type == .spend && entry.amountMinor == 450 && entry.debitAccount == Account.available("c")
                && entry.creditAccount == Account.consumption && entry.refId == result.spend.id && entry.availableAfterMinor == 50
                && entry.reason == "booking" && entry.centerId == "c7" && entry.bookingRef == "b1")
        #expect(try fx.account(Account.consumption) == 450)
        #expect(try fx.reader.spend(tenant: "t1", id: "spd_nope") == nil)
    }

    @Test func scopeRestrictsEligibleLots() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let x = try fx.order("c", 100, validDays: 5, scope: Scope(centers: ["c1"]))
        let y = try fx.order("c", 100, validDays: 6, scope: Scope(serviceCategories: ["yoga"]))
        let z = try fx.order("c", 100, validDays: 7, scope: Scope(membershipIds: ["m1"]))
        let w = try fx.order("c", 100)
        func alloc(_ lot: Lot, _ minor: Int64) -> Allocation { Allocation(lotId: lot.id, remainingDeltaMinor: -minor, heldDeltaMinor: 0) }

        #expect(try fx.spend("c", 50, center: "c2", category: "spa").spend.allocations == [alloc(w, 50)])
        try fx.expectUnchanged("c") {
            fx.expectError(.insufficientCredits(availableMinor: 50, requestedMinor: 150), fx.spendCmd("c", 150, center: "c2", category: "spa"))
        }
        #expect(try fx.spend("c", 30, center: "c1", category: "yoga", membership: "m1").spend.allocations == [alloc(x, 30)])
        #expect(try fx.spend("c", 100, center: "c2", category: "yoga", membership: "m1").spend.allocations == [alloc(y, 100)])
        // No membership: z is out; no category: y would be out (it is empty anyway).
        #expect(try fx.spend("c", 120, center: "c1").spend.allocations == [alloc(x, 70), alloc(w, 50)])
        try fx.expectUnchanged("c") {
            fx.expectError(.insufficientCredits(availableMinor: 0, requestedMinor: 1), fx.spendCmd("c", 1, center: "c1", membership: "m2"))
        }
        #expect(try fx.balance("c").summary.availableMinor == 100)
        #expect(try fx.spend("c", 100, center: "c3", category: "pilates", membership: "m1").spend.allocations == [alloc(z, 100)])

        // Several restrictions at once must all hold.
        let both = try fx.order("d", 100, scope: Scope(serviceCategories: ["yoga"], centers: ["c1", "c2"]))
        try fx.expectUnchanged("d") {
            fx.expectError(.insufficientCredits(availableMinor: 0, requestedMinor: 10), fx.spendCmd("d", 10, center: "c2"))
            fx.expectError(.insufficientCredits(availableMinor: 0, requestedMinor: 10), fx.spendCmd("d", 10, center: "c3", category: "yoga"))
        }
        #expect(try fx.spend("d", 10, center: "c2", category: "yoga").spend.allocations == [alloc(both, 10)])
    }

    @Test func insufficientChangesNothingEvenWithExpiryDue() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let open = try fx.order("c", 50)
        try fx.hold("c", 20)
        let soon = try fx.order("c", 100, validDays: 1)
        fx.clock.advance(seconds: 2 * 86_400)
        let before = try fx.balance("c")
        #expect(before.summary == BalanceSummary(clientId: "c", availableMinor: 30, heldMinor: 20, seq: 3))
        #expect(before.pendingExpiryMinor == 100)
        try fx.expectUnchanged("c") {
            fx.expectError(.insufficientCredits(availableMinor: 30, requestedMinor: 80), fx.spendCmd("c", 80))
            fx.expectError(.insufficientCredits(availableMinor: 30, requestedMinor: 31), fx.holdCmd("c", 31))
            fx.expectError(.insufficientCredits(availableMinor: 30, requestedMinor: 31), fx.writeOffCmd("c", 31))
            fx.expectError(.insufficientCredits(availableMinor: 30, requestedMinor: 31), fx.adjustCmd("c", -31))
        }
        // The expiry entry the failed spends wrote first was rolled back with them.
        #expect(try fx.lot(soon.id).map { [$0.remainingMinor, $0.heldMinor] } == [100, 0])
        #expect(try fx.lot(soon.id)?.state == .active)
        #expect(try fx.account(Account.breakage) == 0)
        // A spend that fits writes the expiry first.
        let result = try fx.spend("c", 30)
        #expect(result.spend.allocations == [Allocation(lotId: open.id, remainingDeltaMinor: -30, heldDeltaMinor: 0)])
        #expect(try fx.entries("c").map(\.type) == [.spend, .expiry, .order, .hold, .order])
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 0, heldMinor: 20, seq: 5))
    }

    @Test func spendValidation() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        fx.expectError(.invalidArgument([.init("amount_minor", "must be greater than 0")]), fx.spendCmd("c", 0))
        fx.expectError(.invalidArgument([.init("amount_minor", "must be greater than 0")]), fx.spendCmd("c", -5))
        fx.expectError(.invalidArgument([.init("amount_minor", "must be at most 1000000000000000")]), fx.spendCmd("c", LedgerLimits.maxAmountMinor + 1))
        fx.expectError(.invalidArgument([.init("client_id", "is required"), .init("center_id", "is required")]), fx.spendCmd("", 5, center: ""))
        fx.expectError(.invalidArgument([.init("service_category", "must be printable ASCII without spaces")]), fx.spendCmd("c", 5, category: "hot yoga"))
        fx.expectError(.invalidArgument([.init("idempotency_key", "is required (field or idempotency-key metadata)")]),
                       SpendCredits(tenantId: "t1", clientId: "c", amountMinor: 5, reason: .other, centerId: "c1", bookingRef: "", serviceCategory: nil, membershipId: nil, idempotencyKey: nil))
        fx.expectError(.insufficientCredits(availableMinor: 0, requestedMinor: 5), fx.spendCmd("nobody", 5))
        #expect(fx.lastSeq == 0)
    }
}

// MARK: - Holds

@Suite struct HoldTests {
    @Test func holdReducesAvailableAndPinsLots() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let lot = try fx.order("c", 500)
        let result = try fx.apply(fx.holdCmd("c", 300, expiresIn: 7_200))
        try fx.expectSummary(result.balance)
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 200, heldMinor: 300, seq: 2))
        let hold = result.hold
        #expect(hold.id.hasPrefix("hld_"))
        #expect(hold == Hold(id: hold.id, clientId: "c", amountMinor: 300, capturedMinor: 0, state: .held, expiresMicros: fx.now + 7_200 * microsPerSecond,
                             centerId: "c1", bookingRef: "bk", serviceCategory: nil, membershipId: nil, seq: 2, createdMicros: fx.now, spendId: nil,
                             allocations: [Allocation(lotId: lot.id, remainingDeltaMinor: 0, heldDeltaMinor: 300)]))
        #expect(try fx.reader.hold(tenant: "t1", id: hold.id) == hold)
        let snapshot = try fx.balance("c")
        #expect(snapshot.openHolds == [Hold(id: hold.id, clientId: "c", amountMinor: 300, capturedMinor: 0, state: .held, expiresMicros: hold.expiresMicros,
                                            centerId: "c1", bookingRef: "bk", serviceCategory: nil, membershipId: nil, seq: 2, createdMicros: fx.now,
                                            spendId: nil, allocations: [])])
        #expect(snapshot.lots.map { [$0.remainingMinor, $0.heldMinor] } == [[500, 300]])
        #expect(snapshot.centers == [CenterBalance(centerId: "c1", remainingMinor: 500)])
        let entry = try #require(try fx.entries("c").first)
        #expect(entry.type == .hold && entry.amountMinor == 300 && entry.debitAccount == Account.available("c") && entry.creditAccount == Account.held("c"))

        // Pinned credit cannot be spent.
        try fx.expectUnchanged("c") {
            fx.expectError(.insufficientCredits(availableMinor: 200, requestedMinor: 300), fx.spendCmd("c", 300))
            fx.expectError(.insufficientCredits(availableMinor: 200, requestedMinor: 201), fx.holdCmd("c", 201))
        }
        let spend = try fx.spend("c", 200)
        #expect(spend.balance == BalanceSummary(clientId: "c", availableMinor: 0, heldMinor: 300, seq: 3))
        #expect(try fx.lot(lot.id).map { [$0.remainingMinor, $0.heldMinor] } == [300, 300])
    }

    @Test func holdValidation() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 100)
        let bad = LedgerError.invalidArgument([.init("expire_time", "must be in the future and at most 90 days ahead")])
        try fx.expectUnchanged("c") {
            fx.expectError(bad, fx.holdCmd("c", 10, expiresIn: 0))
            fx.expectError(bad, fx.holdCmd("c", 10, expiresIn: -1))
            fx.expectError(bad, fx.holdCmd("c", 10, expiresIn: 90 * 86_400 + 1))
            fx.expectError(.insufficientCredits(availableMinor: 100, requestedMinor: 101), fx.holdCmd("c", 101))
            fx.expectError(.notFound(kind: "hold", id: "hld_nope"), fx.captureCmd("hld_nope"))
            fx.expectError(.notFound(kind: "hold", id: "hld_nope"), fx.releaseCmd("hld_nope"))
            fx.expectError(.invalidArgument([.init("amount_minor", "must be greater than 0")]), fx.captureCmd("hld_x", 0))
            fx.expectError(.invalidArgument([.init("hold_id", "is required")]), fx.releaseCmd(""))
        }
        try fx.hold("c", 10, expiresIn: 90 * 86_400)
    }

    @Test func captureFull() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let lot = try fx.order("c", 500)
        let hold = try fx.hold("c", 300)
        fx.clock.advance(seconds: 60)
        let result = try fx.apply(fx.captureCmd(hold.id))
        try fx.expectSummary(result.balance)
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 200, heldMinor: 0, seq: 3))
        let spend = try #require(result.spend)
        #expect(spend == Spend(id: spend.id, clientId: "c", amountMinor: 300, reversedMinor: 0, reason: .checkIn, centerId: "c1", bookingRef: "bk",
                               serviceCategory: nil, holdId: hold.id, seq: 3, createdMicros: fx.now,
                               allocations: [Allocation(lotId: lot.id, remainingDeltaMinor: -300, heldDeltaMinor: -300)]))
        #expect(result.hold.state == .captured && result.hold.capturedMinor == 300 && result.hold.spendId == spend.id)
        let stored = try #require(try fx.reader.hold(tenant: "t1", id: hold.id))
        #expect(stored.state == .captured && stored.capturedMinor == 300 && stored.spendId == spend.id)
        #expect(try fx.reader.spend(tenant: "t1", id: spend.id) == spend)
        let entry = try #require(try fx.entries("c").first)
        #expect(entry.type == .capture && entry.debitAccount == Account.held("c") && entry.creditAccount == Account.consumption && entry.refId == spend.id)
        #expect(try fx.balance("c").openHolds.isEmpty)
        try fx.expectUnchanged("c") {
            fx.expectError(.holdNotOpen(holdId: hold.id, state: .captured), fx.captureCmd(hold.id))
            fx.expectError(.holdNotOpen(holdId: hold.id, state: .captured), fx.captureCmd(hold.id, 1))
            fx.expectError(.holdNotOpen(holdId: hold.id, state: .captured), fx.releaseCmd(hold.id))
        }
    }

    @Test func capturePartialReleasesTheRest() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let a = try fx.order("c", 200, validDays: 5)
        let b = try fx.order("c", 300)
        let hold = try fx.hold("c", 400)
        #expect(hold.allocations == [Allocation(lotId: a.id, remainingDeltaMinor: 0, heldDeltaMinor: 200),
                                     Allocation(lotId: b.id, remainingDeltaMinor: 0, heldDeltaMinor: 200)])
        try fx.expectUnchanged("c") {
            fx.expectError(.captureExceedsHold(heldMinor: 400, requestedMinor: 401), fx.captureCmd(hold.id, 401))
        }
        let result = try fx.apply(fx.captureCmd(hold.id, 250, key: "cap"))
        try fx.expectSummary(result.balance)
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 250, heldMinor: 0, seq: 5))
        #expect(result.spend?.amountMinor == 250)
        #expect(result.spend?.allocations == [Allocation(lotId: a.id, remainingDeltaMinor: -200, heldDeltaMinor: -200),
                                              Allocation(lotId: b.id, remainingDeltaMinor: -50, heldDeltaMinor: -50)])
        #expect(result.hold.state == .captured && result.hold.capturedMinor == 250)
        let entries = try fx.entries("c")
        #expect(entries.map(\.type) == [.release, .capture, .hold, .order, .order])
        #expect(entries[0].amountMinor == 150 && entries[0].reason == "partial_capture" && entries[0].idempotencyKey == "cap"
                && entries[0].allocations == [Allocation(lotId: b.id, remainingDeltaMinor: 0, heldDeltaMinor: -150)])
        #expect(try fx.lot(a.id)?.state == .exhausted)
        #expect(try fx.balance("c").lots.map { [$0.remainingMinor, $0.heldMinor] } == [[250, 0]])
        fx.expectError(.holdNotOpen(holdId: hold.id, state: .captured), fx.captureCmd(hold.id, 1))
    }

    @Test func releaseThenReleaseOrCaptureAgain() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 500)
        let hold = try fx.hold("c", 300)
        let result = try fx.apply(fx.releaseCmd(hold.id, key: "rel"))
        try fx.expectSummary(result.balance)
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 500, heldMinor: 0, seq: 3))
        #expect(result.hold.state == .released && result.spend == nil)
        #expect(try fx.reader.hold(tenant: "t1", id: hold.id)?.state == .released)
        let entry = try #require(try fx.entries("c").first)
        #expect(entry.type == .release && entry.reason == "released" && entry.amountMinor == 300 && entry.debitAccount == Account.held("c"))
        try fx.expectUnchanged("c") {
            fx.expectError(.holdNotOpen(holdId: hold.id, state: .released), fx.releaseCmd(hold.id))
            fx.expectError(.holdNotOpen(holdId: hold.id, state: .released), fx.captureCmd(hold.id))
        }
        // The release is idempotent under its key.
        guard case .replayed(_, let id, _) = try fx.ledger.write(fx.releaseCmd(hold.id, key: "rel")) else { Issue.record(); return }
        #expect(id == hold.id)
    }

    /// A lot past valid_until while held: the held part stays pinned (and
    /// counted as held); the rest is pending expiry.
    func expiredWhileHeld() throws -> (Fixture, Lot, Hold) {
        let fx = try Fixture()
        let lot = try fx.order("c", 500, validDays: 10)
        let hold = try fx.hold("c", 300, expiresIn: 20 * 86_400)
        fx.clock.advance(seconds: 11 * 86_400)
        let snapshot = try fx.balance("c")
        #expect(snapshot.summary == BalanceSummary(clientId: "c", availableMinor: 0, heldMinor: 300, seq: 2))
        #expect(snapshot.pendingExpiryMinor == 200)
        #expect(snapshot.lots.isEmpty)
        #expect(snapshot.centers == [CenterBalance(centerId: "c1", remainingMinor: 300)])
        return (fx, lot, hold)
    }

    @Test func lotExpiredWhileHeldCaptureFull() throws {
        let (fx, lot, hold) = try expiredWhileHeld()
        defer { fx.finish() }
        let result = try fx.apply(fx.captureCmd(hold.id))
        try fx.expectSummary(result.balance)
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 0, heldMinor: 0, seq: 4))
        #expect(result.spend?.allocations == [Allocation(lotId: lot.id, remainingDeltaMinor: -300, heldDeltaMinor: -300)])
        let entries = try fx.entries("c")
        #expect(entries.map(\.type) == [.expiry, .capture, .hold, .order])
        #expect(entries[0].amountMinor == 200 && entries[0].creditAccount == Account.breakage && entries[0].refId == lot.id)
        #expect(try fx.lot(lot.id).map { [$0.remainingMinor, $0.heldMinor] } == [0, 0])
        #expect(try fx.lot(lot.id)?.state == .expired)
        #expect(try fx.account(Account.breakage) == 200)
        #expect(try fx.account(Account.consumption) == 300)
        #expect(try fx.balance("c").pendingExpiryMinor == 0)
    }

    @Test func lotExpiredWhileHeldCapturePartial() throws {
        let (fx, lot, hold) = try expiredWhileHeld()
        defer { fx.finish() }
        let result = try fx.apply(fx.captureCmd(hold.id, 100))
        try fx.expectSummary(result.balance)
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 0, heldMinor: 0, seq: 5))
        let entries = try fx.entries("c")
        #expect(entries.map(\.type) == [.expiry, .release, .capture, .hold, .order])
        #expect(entries.map(\.amountMinor) == [400, 200, 100, 300, 500])
        #expect(try fx.lot(lot.id)?.state == .expired)
        #expect(try fx.account(Account.breakage) == 400)
        #expect(try fx.account(Account.consumption) == 100)
    }

    @Test func lotExpiredWhileHeldRelease() throws {
        let (fx, lot, hold) = try expiredWhileHeld()
        defer { fx.finish() }
        let result = try fx.apply(fx.releaseCmd(hold.id))
        try fx.expectSummary(result.balance)
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 0, heldMinor: 0, seq: 4))
        let entries = try fx.entries("c")
        #expect(entries.map(\.type) == [.expiry, .release, .hold, .order])
        #expect(entries[0].amountMinor == 500 && entries[0].allocations == [Allocation(lotId: lot.id, remainingDeltaMinor: -500, heldDeltaMinor: 0)])
        #expect(try fx.lot(lot.id)?.state == .expired)
        #expect(try fx.account(Account.breakage) == 500)
        #expect(try fx.balance("c").pendingExpiryMinor == 0)
    }

    /// Without maintenance a hold past its deadline stays open (held) until
    /// the writer's maintenance releases it; it can still be captured.
    /// Past its deadline a hold cannot be captured, even before maintenance
    /// released it; it can still be released by hand.
    @Test func holdPastDeadlineCannotBeCapturedBeforeMaintenance() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 100)
        let hold = try fx.hold("c", 40, expiresIn: 60)
        fx.clock.advance(seconds: 120)
        #expect(try fx.balance("c").summary.heldMinor == 40)
        #expect(fx.error(fx.captureCmd(hold.id)) == .holdNotOpen(holdId: hold.id, state: .expired))
        #expect(try fx.balance("c").summary.heldMinor == 40)
        let released = try fx.apply(fx.releaseCmd(hold.id))
        #expect(released.hold.state == .released)
        #expect(released.balance.availableMinor == 100 && released.balance.heldMinor == 0)
    }
}

// MARK: - Reversals

@Suite struct ReversalTests {
    @Test func partialThenFullReturnsToLotsMostRecentlyDrawnFirst() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let a = try fx.order("c", 100, validDays: 5)
        let b = try fx.order("c", 100)
        let spend = try fx.spend("c", 150)
        #expect(spend.spend.allocations == [Allocation(lotId: a.id, remainingDeltaMinor: -100, heldDeltaMinor: 0),
                                            Allocation(lotId: b.id, remainingDeltaMinor: -50, heldDeltaMinor: 0)])
        let first = try fx.apply(fx.reverseCmd(spend.spend.id, 60))
        try fx.expectSummary(first.balance)
        #expect(first.balance == BalanceSummary(clientId: "c", availableMinor: 110, heldMinor: 0, seq: 4))
        #expect(first.spend.reversedMinor == 60)
        #expect(first.spend.allocations == spend.spend.allocations)
        let entry = try #require(try fx.entries("c").first)
        #expect(entry.type == .reversal && entry.amountMinor == 60 && entry.refId == spend.spend.id && entry.reason == "refund"
                && entry.debitAccount == Account.consumption && entry.creditAccount == Account.available("c"))
        #expect(entry.allocations == [Allocation(lotId: b.id, remainingDeltaMinor: 50, heldDeltaMinor: 0),
                                      Allocation(lotId: a.id, remainingDeltaMinor: 10, heldDeltaMinor: 0)])
        #expect(try fx.balance("c").lots.map(\.remainingMinor) == [10, 100])
        #expect(try fx.lot(a.id)?.state == .active)

        try fx.expectUnchanged("c") {
            fx.expectError(.reversalExceedsSpend(reversibleMinor: 90, requestedMinor: 100), fx.reverseCmd(spend.spend.id, 100))
        }
        let second = try fx.apply(fx.reverseCmd(spend.spend.id, 90))
        try fx.expectSummary(second.balance)
        #expect(second.spend.reversedMinor == 150 && second.balance.availableMinor == 200)
        #expect(try fx.entries("c").first?.allocations == [Allocation(lotId: a.id, remainingDeltaMinor: 90, heldDeltaMinor: 0)])
        #expect(try fx.reader.spend(tenant: "t1", id: spend.spend.id)?.reversedMinor == 150)
        #expect(try fx.account(Account.consumption) == 0)
        try fx.expectUnchanged("c") {
            fx.expectError(.reversalExceedsSpend(reversibleMinor: 0, requestedMinor: 1), fx.reverseCmd(spend.spend.id, 1))
            fx.expectError(.notFound(kind: "spend", id: "spd_nope"), fx.reverseCmd("spd_nope", 1))
            fx.expectError(.invalidArgument([.init("amount_minor", "must be greater than 0")]), fx.reverseCmd(spend.spend.id, 0))
        }
    }

    /// After a partial reversal, the next reversal must still return credit
    /// to the lots most recently drawn first.
    /// Regression (ledger-reversal-order): second partial reversal returns credit in the wrong lot order
    @Test
    func secondPartialReversalKeepsMostRecentlyDrawnFirst() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let a = try fx.order("c", 100, validDays: 5)
        let b = try fx.order("c", 100, validDays: 10)
        let c = try fx.order("c", 100)
        let spend = try fx.spend("c", 300)
        #expect(spend.spend.allocations == [Allocation(lotId: a.id, remainingDeltaMinor: -100, heldDeltaMinor: 0),
                                            Allocation(lotId: b.id, remainingDeltaMinor: -100, heldDeltaMinor: 0),
                                            Allocation(lotId: c.id, remainingDeltaMinor: -100, heldDeltaMinor: 0)])
        try fx.apply(fx.reverseCmd(spend.spend.id, 50))
        #expect(try fx.entries("c").first?.allocations == [Allocation(lotId: c.id, remainingDeltaMinor: 50, heldDeltaMinor: 0)])
        let second = try fx.apply(fx.reverseCmd(spend.spend.id, 100))
        try fx.expectSummary(second.balance)
        #expect(second.balance.availableMinor == 150)
        let allocations = try #require(try fx.entries("c").first).allocations
        let remaining = try fx.balance("c").lots.map(\.remainingMinor)
        #expect(allocations == [Allocation(lotId: c.id, remainingDeltaMinor: 50, heldDeltaMinor: 0),
                                Allocation(lotId: b.id, remainingDeltaMinor: 50, heldDeltaMinor: 0)])
        #expect(remaining == [50, 100])
    }

    @Test func reversalOfCapturedSpend() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let lot = try fx.order("c", 100)
        let hold = try fx.hold("c", 70)
        let spend = try #require(try fx.apply(fx.captureCmd(hold.id)).spend)
        let result = try fx.apply(fx.reverseCmd(spend.id, 70))
        try fx.expectSummary(result.balance)
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 100, heldMinor: 0, seq: 4))
        #expect(try fx.lot(lot.id).map { [$0.remainingMinor, $0.heldMinor] } == [100, 0])
    }

    @Test func reversalToExpiredLotExpiresAgain() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let a = try fx.order("c", 100, validDays: 5)
        let b = try fx.order("c", 100)
        let spend = try fx.spend("c", 150)
        fx.clock.advance(seconds: 6 * 86_400)
        #expect(try fx.balance("c").summary.availableMinor == 50)
        let result = try fx.apply(fx.reverseCmd(spend.spend.id, 150))
        try fx.expectSummary(result.balance)
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 100, heldMinor: 0, seq: 5))
        let entries = try fx.entries("c")
        #expect(entries.map(\.type) == [.expiry, .reversal, .spend, .order, .order])
        #expect(entries[1].allocations == [Allocation(lotId: b.id, remainingDeltaMinor: 50, heldDeltaMinor: 0),
                                           Allocation(lotId: a.id, remainingDeltaMinor: 100, heldDeltaMinor: 0)])
        #expect(entries[0].amountMinor == 100 && entries[0].refId == a.id)
        #expect(try fx.lot(a.id)?.state == .expired)
        #expect(try fx.account(Account.breakage) == 100)
        #expect(try fx.balance("c").pendingExpiryMinor == 0)
    }

    @Test func reversalToExpiredLotWithPendingRemainder() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let a = try fx.order("c", 100, validDays: 5)
        let spend = try fx.spend("c", 40)
        fx.clock.advance(seconds: 6 * 86_400)
        #expect(try fx.balance("c").pendingExpiryMinor == 60)
        let result = try fx.apply(fx.reverseCmd(spend.spend.id, 40))
        try fx.expectSummary(result.balance)
        #expect(result.balance.availableMinor == 0)
        #expect(try fx.entries("c").map(\.amountMinor) == [100, 40, 40, 100])
        #expect(try fx.lot(a.id)?.state == .expired)
    }
}

// MARK: - Write-offs

@Suite struct WriteOffTests {
    @Test func createListVoid() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let a = try fx.order("c", 100, validDays: 5)
        let b = try fx.order("c", 300)
        try fx.order("d", 50)
        let first = try fx.apply(fx.writeOffCmd("c", 150))
        try fx.expectSummary(first.balance)
        #expect(first.balance == BalanceSummary(clientId: "c", availableMinor: 250, heldMinor: 0, seq: 4))
        let w1 = first.writeOff
        #expect(w1.id.hasPrefix("wof_"))
        #expect(w1 == WriteOff(id: w1.id, clientId: "c", amountMinor: 150, reason: "bad debt", state: .active, seq: 4, voidSeq: nil, createdMicros: fx.now,
                               allocations: [Allocation(lotId: a.id, remainingDeltaMinor: -100, heldDeltaMinor: 0),
                                             Allocation(lotId: b.id, remainingDeltaMinor: -50, heldDeltaMinor: 0)]))
        #expect(try fx.reader.writeOff(tenant: "t1", id: w1.id) == w1)
        let entry = try #require(try fx.entries("c").first)
        #expect(entry.type == .writeOff && entry.creditAccount == Account.writeOffs && entry.reason == "bad debt")
        let w2 = try fx.apply(fx.writeOffCmd("c", 50)).writeOff
        let w3 = try fx.apply(fx.writeOffCmd("d", 10)).writeOff

        var listed = w1
        listed.allocations = []
        #expect(try fx.reader.listWriteOffs(tenant: "t1", clientId: "c", afterSeq: nil, limit: 10).map(\.id) == [w2.id, w1.id])
        #expect(try fx.reader.listWriteOffs(tenant: "t1", clientId: "c", afterSeq: w2.seq, limit: 10) == [listed])
        #expect(try fx.reader.listWriteOffs(tenant: "t1", clientId: "c", afterSeq: nil, limit: 1).map(\.id) == [w2.id])
        #expect(try fx.reader.listWriteOffs(tenant: "t1", clientId: nil, afterSeq: nil, limit: 10).map(\.id) == [w3.id, w2.id, w1.id])
        #expect(try fx.reader.listWriteOffs(tenant: "t1", clientId: "e", afterSeq: nil, limit: 10).isEmpty)

        fx.clock.advance(seconds: 30)
        let voided = try fx.apply(fx.voidCmd(w1.id))
        try fx.expectSummary(voided.balance)
        #expect(voided.balance == BalanceSummary(clientId: "c", availableMinor: 350, heldMinor: 0, seq: 7))
        #expect(voided.writeOff.state == .voided && voided.writeOff.voidSeq == 7 && voided.writeOff.allocations == w1.allocations)
        let voidEntry = try #require(try fx.entries("c").first)
        #expect(voidEntry.type == .writeOffVoid && voidEntry.amountMinor == 150 && voidEntry.debitAccount == Account.writeOffs
                && voidEntry.allocations == [Allocation(lotId: b.id, remainingDeltaMinor: 50, heldDeltaMinor: 0),
                                             Allocation(lotId: a.id, remainingDeltaMinor: 100, heldDeltaMinor: 0)])
        #expect(try fx.balance("c").lots.map(\.remainingMinor) == [100, 250])
        #expect(try fx.reader.writeOff(tenant: "t1", id: w1.id)?.state == .voided)
        #expect(try fx.reader.listWriteOffs(tenant: "t1", clientId: "c", afterSeq: nil, limit: 10).map(\.state) == [.active, .voided])
        #expect(try fx.account(Account.writeOffs) == 60)
        try fx.expectUnchanged("c") {
            fx.expectError(.writeOffVoided(writeOffId: w1.id), fx.voidCmd(w1.id))
            fx.expectError(.notFound(kind: "write_off", id: "wof_nope"), fx.voidCmd("wof_nope"))
            fx.expectError(.insufficientCredits(availableMinor: 350, requestedMinor: 351), fx.writeOffCmd("c", 351))
            fx.expectError(.invalidArgument([.init("reason", "is required")]),
                           CreateWriteOff(tenantId: "t1", clientId: "c", amountMinor: 1, reason: "", idempotencyKey: "k"))
        }
    }

    @Test func voidToExpiredLotExpiresAgain() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let a = try fx.order("c", 100, validDays: 5)
        let w = try fx.apply(fx.writeOffCmd("c", 100)).writeOff
        fx.clock.advance(seconds: 6 * 86_400)
        let result = try fx.apply(fx.voidCmd(w.id))
        try fx.expectSummary(result.balance)
        #expect(result.balance.availableMinor == 0)
        #expect(try fx.entries("c").map(\.type) == [.expiry, .writeOffVoid, .writeOff, .order])
        #expect(try fx.lot(a.id)?.state == .expired)
        #expect(try fx.account(Account.breakage) == 100)
    }
}

// MARK: - Adjustments and credit orders

@Suite struct AdjustmentTests {
    @Test func positiveCreatesLotNegativeDraws() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let until = fx.now + 5 * microsPerDay
        let plus = try fx.apply(fx.adjustCmd("c", 200, validUntil: until))
        try fx.expectSummary(plus.balance)
        let lot = try #require(plus.lot)
        #expect(plus.adjustmentId == lot.id)
        #expect(lot == Lot(id: lot.id, clientId: "c", origin: .adjustment, centerId: "c1", amountMinor: 200, remainingMinor: 200, heldMinor: 0,
                           validFromMicros: nil, validUntilMicros: until, scope: .any, packageId: nil, paymentRef: nil, priceMinor: 0,
                           note: "correction", createdSeq: 1, createdMicros: fx.now, state: .active))
        #expect(plus.allocations == [Allocation(lotId: lot.id, remainingDeltaMinor: 200, heldDeltaMinor: 0)])
        #expect(plus.balance == BalanceSummary(clientId: "c", availableMinor: 200, heldMinor: 0, seq: 1))
        let b = try fx.order("c", 100)

        let minus = try fx.apply(fx.adjustCmd("c", -250))
        try fx.expectSummary(minus.balance)
        #expect(minus.lot == nil && minus.adjustmentId.hasPrefix("adj_"))
        #expect(minus.allocations == [Allocation(lotId: lot.id, remainingDeltaMinor: -200, heldDeltaMinor: 0),
                                      Allocation(lotId: b.id, remainingDeltaMinor: -50, heldDeltaMinor: 0)])
        #expect(minus.balance == BalanceSummary(clientId: "c", availableMinor: 50, heldMinor: 0, seq: 3))
        let entry = try #require(try fx.entries("c").first)
        #expect(entry.type == .adjustment && entry.amountMinor == 250 && entry.debitAccount == Account.available("c")
                && entry.creditAccount == Account.adjustments && entry.refId == minus.adjustmentId && entry.reason == "correction")
        #expect(try fx.account(Account.adjustments) == 50)

        try fx.expectUnchanged("c") {
            fx.expectError(.insufficientCredits(availableMinor: 50, requestedMinor: 100), fx.adjustCmd("c", -100))
            fx.expectError(.invalidArgument([.init("amount_minor", "must not be 0")]), fx.adjustCmd("c", 0))
            fx.expectError(.invalidArgument([.init("valid_until", "applies only to positive adjustments")]), fx.adjustCmd("c", -1, validUntil: fx.now + 1))
            fx.expectError(.invalidArgument([.init("valid_until", "must be in the future")]), fx.adjustCmd("c", 1, validUntil: fx.now))
            fx.expectError(.invalidArgument([.init("reason", "is required")]),
                           AdjustBalance(tenantId: "t1", clientId: "c", amountMinor: 1, reason: "", centerId: "c1", validUntilMicros: nil, idempotencyKey: "k"))
        }
    }

    @Test func creditOrderFieldsAndValidation() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let scope = Scope(serviceCategories: ["yoga"], centers: [], membershipIds: ["m9"])
        let until = fx.now + 3 * microsPerDay
        let result = try fx.apply(CreateCreditOrder(tenantId: "t1", clientId: "c", amountMinor: 700, priceMinor: 650, centerId: "c2", note: "desk sale",
                                                    validUntilMicros: until, scope: scope, idempotencyKey: "o1"))
        try fx.expectSummary(result.balance)
        #expect(result.lot == Lot(id: result.lot.id, clientId: "c", origin: .order, centerId: "c2", amountMinor: 700, remainingMinor: 700, heldMinor: 0,
                                  validFromMicros: nil, validUntilMicros: until, scope: scope, packageId: nil, paymentRef: nil, priceMinor: 650,
                                  note: "desk sale", createdSeq: 1, createdMicros: fx.now, state: .active))
        let entry = try #require(try fx.entries("c").first)
        #expect(entry.type == .order && entry.debitAccount == Account.orders && entry.note == "desk sale" && entry.reason == "credit_order")
        try fx.expectUnchanged("c") {
            fx.expectError(.invalidArgument([.init("valid_until", "must be in the future")]), fx.orderCmd("c", 10, validUntil: fx.now))
            fx.expectError(.invalidArgument([.init("amount_minor", "must be greater than 0")]), fx.orderCmd("c", 0))
            fx.expectError(.invalidArgument([.init("scope.centers[0]", "must be printable ASCII without spaces")]),
                           fx.orderCmd("c", 10, scope: Scope(centers: ["bad center"])))
            fx.expectError(.invalidArgument([.init("scope.service_categories", "has more than 64 entries")]),
                           fx.orderCmd("c", 10, scope: Scope(serviceCategories: (0...64).map { "s\($0)" })))
            fx.expectError(.invalidArgument([.init("note", "contains control characters")]), fx.orderCmd("c", 10, note: "a\u{7}b"))
        }
    }
}

// MARK: - Expiry

@Suite struct ExpiryTests {
    @Test func balanceExcludesExpiredLotAtOnceAndSpendWritesExpiryFirst() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let l = try fx.order("c", 300, validDays: 10, center: "c1")
        let m = try fx.order("c", 200, center: "c2")

        // One microsecond before valid_until the lot still counts and pays.
        fx.clock.advance(micros: 10 * microsPerDay - 1)
        #expect(try fx.balance("c").summary.availableMinor == 500)
        let early = try fx.spend("c", 10)
        #expect(early.spend.allocations == [Allocation(lotId: l.id, remainingDeltaMinor: -10, heldDeltaMinor: 0)])

        fx.clock.advance(micros: 1)  // now == valid_until: expired
        let snapshot = try fx.balance("c")
        #expect(snapshot.summary == BalanceSummary(clientId: "c", availableMinor: 200, heldMinor: 0, seq: 3))
        #expect(snapshot.pendingExpiryMinor == 290)
        #expect(snapshot.lots.map(\.id) == [m.id])
        #expect(snapshot.centers == [CenterBalance(centerId: "c2", remainingMinor: 200)])
        #expect(try fx.entries("c").count == 3)  // no expiry entry written yet
        #expect(try fx.lot(l.id)?.state == .active)

        let result = try fx.spend("c", 50)
        #expect(result.spend.allocations == [Allocation(lotId: m.id, remainingDeltaMinor: -50, heldDeltaMinor: 0)])
        #expect(result.balance == BalanceSummary(clientId: "c", availableMinor: 150, heldMinor: 0, seq: 5))
        let entries = try fx.entries("c")
        #expect(entries.map(\.type) == [.spend, .expiry, .spend, .order, .order])
        #expect(entries[1] == LedgerEntry(seq: 4, type: .expiry, clientId: "c", amountMinor: 290, debitAccount: Account.available("c"),
                                          creditAccount: Account.breakage, availableAfterMinor: 200, heldAfterMinor: 0, timeMicros: fx.now,
                                          refId: l.id, centerId: "c1", bookingRef: "", paymentRef: "", idempotencyKey: "", reason: "expired",
                                          note: "", allocations: [Allocation(lotId: l.id, remainingDeltaMinor: -290, heldDeltaMinor: 0)]))
        #expect(try fx.lot(l.id)?.state == .expired && fx.lot(l.id)?.remainingMinor == 0)
        #expect(try fx.balance("c").pendingExpiryMinor == 0)
        #expect(try fx.account(Account.breakage) == 290)
        // Only the expired credit was short: the error names the eligible rest.
        try fx.expectUnchanged("c") {
            fx.expectError(.insufficientCredits(availableMinor: 150, requestedMinor: 151), fx.spendCmd("c", 151))
        }
    }

    @Test func purchaseWithValidityExpires() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let pkg = try fx.apply(CreatePackage(tenantId: "t1", name: "Week", creditsMinor: 100, priceMinor: 100, validityDays: 7, scope: .any, idempotencyKey: nil))
        try fx.apply(PurchasePackage(tenantId: "t1", clientId: "c", packageId: pkg.id, centerId: "c1", paymentRef: "", idempotencyKey: "p"))
        fx.clock.advance(seconds: 7 * 86_400)
        #expect(try fx.balance("c").summary.availableMinor == 0)
        #expect(try fx.balance("c").pendingExpiryMinor == 100)
        fx.expectError(.insufficientCredits(availableMinor: 0, requestedMinor: 1), fx.spendCmd("c", 1))
    }

    /// Writes that do not expire the client's due lots first return a balance
    /// that still counts credit already past valid_until, unlike a read at
    /// the same moment (and unlike spends, holds, releases, partial captures).
    /// Regression (ledger-stale-write-summary): write BalanceSummary counts credit of lots past valid_until
    @Test
    func writeSummaryCountsExpiredCredit() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let pkg = try fx.apply(CreatePackage(tenantId: "t1", name: "P", creditsMinor: 5, priceMinor: 5, validityDays: nil, scope: .any, idempotencyKey: nil))
        // Each client: 50 that never expires (possibly held/spent/written off),
        // then 100 that will be pending expiry.
        var holds: [String: Hold] = [:], spends: [String: Spend] = [:], writeOffs: [String: WriteOff] = [:]
        for client in ["order", "adjust", "purchase", "capture", "reverse", "void", "spend", "hold", "release", "partial", "writeoff"] {
            try fx.order(client, 50)
            switch client {
            case "capture", "release", "partial": holds[client] = try fx.hold(client, 10, expiresIn: 10 * 86_400)
            case "reverse": spends[client] = try fx.spend(client, 10).spend
            case "void": writeOffs[client] = try fx.apply(fx.writeOffCmd(client, 10)).writeOff
            default: break
            }
            try fx.order(client, 100, validDays: 1)
        }
        fx.clock.advance(seconds: 2 * 86_400)
        for client in ["order", "adjust", "purchase", "spend"] {
            #expect(try fx.balance(client).summary.availableMinor == 50)
            #expect(try fx.balance(client).pendingExpiryMinor == 100)
        }
        func result(_ name: String, _ summary: BalanceSummary) throws -> (String, BalanceSummary, BalanceSummary) {
            (name, summary, try fx.balance(name).summary)
        }
        let buggy = [
            try result("order", fx.apply(fx.orderCmd("order", 5)).balance),
            try result("adjust", fx.apply(fx.adjustCmd("adjust", 5)).balance),
            try result("purchase", fx.apply(PurchasePackage(tenantId: "t1", clientId: "purchase", packageId: pkg.id, centerId: "c1", paymentRef: "", idempotencyKey: fx.key())).balance),
            try result("capture", fx.apply(fx.captureCmd(holds["capture"]!.id)).balance),
            try result("reverse", fx.apply(fx.reverseCmd(spends["reverse"]!.id, 10)).balance),
            try result("void", fx.apply(fx.voidCmd(writeOffs["void"]!.id)).balance),
        ]
        let fine = [
            try result("spend", fx.apply(fx.spendCmd("spend", 5)).balance),
            try result("hold", fx.apply(fx.holdCmd("hold", 5)).balance),
            try result("release", fx.apply(fx.releaseCmd(holds["release"]!.id)).balance),
            try result("partial", fx.apply(fx.captureCmd(holds["partial"]!.id, 4)).balance),
            try result("writeoff", fx.apply(fx.writeOffCmd("writeoff", 5)).balance),
        ]
        for (name, returned, read) in fine {
            #expect(returned == read, "\(name)")
        }
        for (name, returned, read) in buggy {
            #expect(returned == read, "\(name): returned \(returned), read \(read)")
        }
    }
}

// MARK: - Statements and listings

@Suite struct StatementTests {
    /// seqs: 1 order(c) t0, 2 order(other) t0+1, 3 spend(c) t0+2, 4 hold(c) t0+3,
    /// 5 capture(c) t0+4, 6 spend(c) t0+5, 7 order(c) t0+6.
    func history() throws -> (Fixture, Int64) {
        let fx = try Fixture()
        let t0 = fx.now
        try fx.order("c", 1_000)
        fx.clock.advance(seconds: 1)
        try fx.order("other", 5)
        fx.clock.advance(seconds: 1)
        try fx.spend("c", 10)
        fx.clock.advance(seconds: 1)
        let hold = try fx.hold("c", 20)
        fx.clock.advance(seconds: 1)
        try fx.apply(fx.captureCmd(hold.id))
        fx.clock.advance(seconds: 1)
        try fx.spend("c", 30)
        fx.clock.advance(seconds: 1)
        try fx.order("c", 5)
        return (fx, t0)
    }

    func query(_ fx: Fixture, _ configure: (inout LedgerReader.StatementQuery) -> Void = { _ in }) throws -> [Int64] {
        var q = LedgerReader.StatementQuery(tenant: "t1", clientId: "c")
        configure(&q)
        return try fx.reader.statement(q).map(\.seq)
    }

    @Test func orderFiltersAndRange() throws {
        let (fx, t0) = try history()
        defer { fx.finish() }
        #expect(try query(fx) == [7, 6, 5, 4, 3, 1])
        #expect(try query(fx) { $0.newestFirst = false } == [1, 3, 4, 5, 6, 7])
        #expect(try query(fx) { $0.types = [.spend] } == [6, 3])
        #expect(try query(fx) { $0.types = [.spend, .capture] } == [6, 5, 3])
        #expect(try query(fx) { $0.types = [.expiry] } == [])
        #expect(try query(fx) { $0.fromMicros = t0 + 2 * microsPerSecond; $0.untilMicros = t0 + 5 * microsPerSecond } == [5, 4, 3])
        #expect(try query(fx) { $0.fromMicros = t0 + 5 * microsPerSecond } == [7, 6])
        #expect(try query(fx) { $0.untilMicros = t0 + 1 } == [1])
        #expect(try query(fx) { $0.newestFirst = false; $0.types = [.order, .spend]; $0.fromMicros = t0 + 1 } == [3, 6, 7])
        #expect(try query(fx) { $0.clientId = "other" } == [2])
        #expect(try query(fx) { $0.clientId = "nobody" } == [])
        // Every entry's after-balance is the running sum of the client's movements.
        var available: Int64 = 0, held: Int64 = 0
        var q = LedgerReader.StatementQuery(tenant: "t1", clientId: "c")
        q.newestFirst = false
        for entry in try fx.reader.statement(q) {
            for (account, sign) in [(entry.creditAccount, Int64(1)), (entry.debitAccount, Int64(-1))] {
                if account == Account.available("c") { available += sign * entry.amountMinor }
                if account == Account.held("c") { held += sign * entry.amountMinor }
            }
            #expect(entry.availableAfterMinor == available && entry.heldAfterMinor == held)
        }
        #expect(available == 945 && held == 0)
        #expect(try fx.balance("c").summary == BalanceSummary(clientId: "c", availableMinor: 945, heldMinor: 0, seq: 7))
    }

    @Test func keysetPaginationNewestFirstWithWritesBetweenPages() throws {
        let (fx, _) = try history()
        defer { fx.finish() }
        var seen: [Int64] = []
        var cursor: Int64? = nil
        var page = 0
        while true {
            let seqs = try query(fx) { $0.limit = 2; $0.afterSeq = cursor }
            if seqs.isEmpty { break }
            seen += seqs
            cursor = seqs.last
            page += 1
            try fx.spend("c", 1)  // new entries between pages get higher seqs
            try fx.order("other", 1)
        }
        #expect(seen == [7, 6, 5, 4, 3, 1])
        #expect(page == 3)
        #expect(try query(fx) { $0.limit = 3 } == [12, 10, 8])
    }

    @Test func keysetPaginationOldestFirstWithWritesBetweenPages() throws {
        let (fx, _) = try history()
        defer { fx.finish() }
        var seen: [Int64] = []
        var cursor: Int64? = nil
        var writes = 0
        while true {
            let seqs = try query(fx) { $0.limit = 2; $0.newestFirst = false; $0.afterSeq = cursor }
            if seqs.isEmpty { break }
            seen += seqs
            cursor = seqs.last
            if writes < 3 {
                writes += 1
                try fx.order("other", 1)
                try fx.spend("c", 1)
            }
        }
        // The three spends written while paging show up at the end, once.
        #expect(seen == [1, 3, 4, 5, 6, 7, 9, 11, 13])
        #expect(Set(seen).count == seen.count)
    }

    @Test func listBalancesAndCenters() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("b", 100, center: "c1")
        try fx.order("a", 50, center: "c2")
        try fx.order("c", 30, center: "c1")
        try fx.order("c", 20, center: "c2")
        try fx.hold("c", 40)
        let all = try fx.reader.listBalances(tenant: "t1", centerId: nil, afterClientId: nil, limit: 10)
        #expect(all == [
            .init(clientId: "a", availableMinor: 50, heldMinor: 0, lastSeq: 2),
            .init(clientId: "b", availableMinor: 100, heldMinor: 0, lastSeq: 1),
            .init(clientId: "c", availableMinor: 10, heldMinor: 40, lastSeq: 5),
        ])
        let page1 = try fx.reader.listBalances(tenant: "t1", centerId: nil, afterClientId: nil, limit: 2)
        let page2 = try fx.reader.listBalances(tenant: "t1", centerId: nil, afterClientId: page1.last?.clientId, limit: 2)
        #expect(page1 + page2 == all)
        let c2 = try fx.reader.listBalances(tenant: "t1", centerId: "c2", afterClientId: nil, limit: 10)
        #expect(c2.map(\.clientId) == ["a", "c"])
        #expect(c2.map(\.availableMinor) == [50, 10])
        #expect(c2.map(\.heldMinor) == [0, 10])
        let snapshot = try fx.balance("c")
        #expect(snapshot.centers == [CenterBalance(centerId: "c1", remainingMinor: 30), CenterBalance(centerId: "c2", remainingMinor: 20)])
        #expect(try fx.reader.listBalances(tenant: "t2", centerId: nil, afterClientId: nil, limit: 10).isEmpty)
    }
}

extension StatementTests {
    /// listBalances reads the stored balance (and active lots), which still
    /// counts credit past valid_until until its expiry entry is written; the
    /// balance read excludes it at once.
    /// Regression (ledger-list-balances-pending-expiry): listBalances counts credit pending expiry, unlike balance()
    @Test
    func listBalancesAgreesWithBalanceAfterExpiry() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 100, validDays: 1)
        try fx.order("c", 50)
        fx.clock.advance(seconds: 2 * 86_400)
        #expect(try fx.balance("c").summary.availableMinor == 50)
        let all = try fx.reader.listBalances(tenant: "t1", centerId: nil, afterClientId: nil, limit: 10)
        let c1 = try fx.reader.listBalances(tenant: "t1", centerId: "c1", afterClientId: nil, limit: 10)
        #expect(all.map(\.availableMinor) == [50])
        #expect(c1.map(\.availableMinor) == [50])
        // Once the expiry entry is written they agree.
        try fx.spend("c", 1)
        #expect(try fx.reader.listBalances(tenant: "t1", centerId: nil, afterClientId: nil, limit: 10).map(\.availableMinor) == [49])
        #expect(try fx.reader.listBalances(tenant: "t1", centerId: "c1", afterClientId: nil, limit: 10).map(\.availableMinor) == [49])
    }
}

// MARK: - The writer: submit, deadlines, queue limit, shutdown

@Suite struct WriterTests {
    @Test func submitReportsAsynchronouslyAndValidatesFirst() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 100)
        let done = DispatchSemaphore(value: 0)
        let results = Collector<Result<WriteOutcome<SpendResult>, LedgerError>>()
        fx.ledger.submit(fx.spendCmd("c", 40)) { results.add($0); done.signal() }
        #expect(done.wait(timeout: .now() + 10) == .success)
        guard case .success(.applied(let spend, _))? = results.all.first else { Issue.record("\(results.all)"); return }
        #expect(spend.balance.availableMinor == 60)

        // Invalid input is reported before submit returns, without queueing.
        let invalid = Collector<Result<WriteOutcome<SpendResult>, LedgerError>>()
        fx.ledger.submit(fx.spendCmd("c", 0)) { invalid.add($0) }
        #expect(invalid.all.count == 1)
        if case .failure(let error)? = invalid.all.first {
            #expect(error == .invalidArgument([.init("amount_minor", "must be greater than 0")]))
        } else { Issue.record("\(invalid.all)") }
    }

    @Test func deadlinePassedChangesNothing() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 100)
        try fx.expectUnchanged("c") {
            let done = DispatchSemaphore(value: 0)
            let results = Collector<Result<WriteOutcome<SpendResult>, LedgerError>>()
            fx.ledger.submit(fx.spendCmd("c", 40, key: "late"), deadlineUptimeNanos: 1) { results.add($0); done.signal() }
            #expect(done.wait(timeout: .now() + 10) == .success)
            if case .failure(let error)? = results.all.first { #expect(error == .deadlineExceeded) } else { Issue.record("\(results.all)") }
        }
        #expect(try fx.reader.idempotency(tenant: "t1", key: "late") == nil)
    }

    /// A write withdrawn while queued is never applied; a write the writer
    /// took cannot be withdrawn and its outcome is reported.
    @Test func withdrawnWhileQueuedIsNeverApplied() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 100)
        let started = DispatchSemaphore(value: 0), gate = DispatchSemaphore(value: 0), all = DispatchGroup()
        all.enter()
        // The first completion blocks the writer thread: the next writes stay queued.
        fx.ledger.submit(fx.spendCmd("c", 1)) { _ in started.signal(); gate.wait(); all.leave() }
        #expect(started.wait(timeout: .now() + 10) == .success)
        let queued = WriteTicket(), kept = WriteTicket()
        let results = Collector<(String, Result<WriteOutcome<SpendResult>, LedgerError>)>()
        all.enter()
        fx.ledger.submit(fx.spendCmd("c", 10, key: "withdrawn"), ticket: queued) { results.add(("withdrawn", $0)); all.leave() }
        all.enter()
        fx.ledger.submit(fx.spendCmd("c", 20, key: "kept"), ticket: kept) { results.add(("kept", $0)); all.leave() }
        #expect(queued.withdraw())
        #expect(queued.isWithdrawn)
        gate.signal()
        #expect(all.wait(timeout: .now() + 10) == .success)
        // Taken by the writer: too late to withdraw.
        #expect(!kept.withdraw())
        #expect(!kept.isWithdrawn)
        for (name, result) in results.all {
            switch (name, result) {
            case ("withdrawn", .failure(let error)): #expect(error == .withdrawn)
            case ("kept", .success(.applied(let spend, _))): #expect(spend.balance.availableMinor == 79)
            default: Issue.record("\(name): \(result)")
            }
        }
        #expect(try fx.reader.idempotency(tenant: "t1", key: "withdrawn") == nil)
        #expect(try fx.reader.idempotency(tenant: "t1", key: "kept") != nil)
        #expect(try fx.balance("c").summary.availableMinor == 79)
        fx.expectVerifyOK()
    }

    /// The writer withdraws a write whose deadline passed before it reached
    /// it; the caller's later withdraw sees it withdrawn.
    @Test func writerWithdrawsPastDeadline() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.order("c", 100)
        let ticket = WriteTicket()
        let done = DispatchSemaphore(value: 0)
        let results = Collector<Result<WriteOutcome<SpendResult>, LedgerError>>()
        fx.ledger.submit(fx.spendCmd("c", 40, key: "late"), deadlineUptimeNanos: 1, ticket: ticket) { results.add($0); done.signal() }
        #expect(done.wait(timeout: .now() + 10) == .success)
        if case .failure(let error)? = results.all.first { #expect(error == .deadlineExceeded) } else { Issue.record("\(results.all)") }
        #expect(!ticket.withdraw() && ticket.isWithdrawn)
        #expect(try fx.balance("c").summary.availableMinor == 100)
    }

    @Test func fullQueueIsOverloaded() throws {
        let fx = try Fixture(maxQueueDepth: 2)
        defer { fx.finish() }
        try fx.order("c", 100)
        let started = DispatchSemaphore(value: 0), gate = DispatchSemaphore(value: 0), all = DispatchGroup()
        let results = Collector<Result<WriteOutcome<SpendResult>, LedgerError>>()
        all.enter()
        // The first completion blocks the writer thread until the gate opens.
        fx.ledger.submit(fx.spendCmd("c", 1)) { results.add($0); started.signal(); gate.wait(); all.leave() }
        #expect(started.wait(timeout: .now() + 10) == .success)
        for _ in 0..<3 {
            all.enter()
            fx.ledger.submit(fx.spendCmd("c", 1)) { results.add($0); all.leave() }
        }
        // The third queued one found the queue full and was answered at once.
        #expect(fx.ledger.queueDepth == 2)
        gate.signal()
        #expect(all.wait(timeout: .now() + 10) == .success)
        let failures = results.all.compactMap { r -> LedgerError? in if case .failure(let e) = r { return e } else { return nil } }
        #expect(failures == [.overloaded(queueLimit: 2)])
        #expect(try fx.balance("c").summary.availableMinor == 97)
    }

    @Test func writesAfterCloseAreUnavailable() throws {
        let fx = try Fixture()
        try fx.order("c", 100)
        fx.expectVerifyOK()
        fx.ledger.close()
        fx.expectError(.unavailable, fx.spendCmd("c", 1))
        #expect(try fx.balance("c").summary.availableMinor == 100)
        try? FileManager.default.removeItem(at: fx.directory)
    }
}
