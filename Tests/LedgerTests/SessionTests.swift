import Dispatch
import Foundation
import Testing
@testable import Ledger

// Session packages (SPEC §5, seed 003 "Use Client Package Credit"): every
// rule and error path. Each test ends with `fx.finish()` (verify OK).

extension Fixture {
    func createPackageCmd(_ client: String, _ lines: [(String, Int64)], from: Int64? = nil, until: Int64? = nil,
                          scope: String? = nil, name: String = "bundle", key: String? = nil) -> CreateClientPackage {
        CreateClientPackage(tenantId: tenant, clientId: client, name: name, scopeId: scope, validFromMicros: from ?? now,
                            validUntilMicros: until ?? now + 30 * microsPerDay,
                            lines: lines.map { SessionLine(serviceId: $0.0, totalSessions: $0.1) }, idempotencyKey: key ?? self.key())
    }

    @discardableResult
    func createPackage(_ client: String, _ lines: [(String, Int64)], from: Int64? = nil, until: Int64? = nil, scope: String? = nil,
                       sourceLocation: SourceLocation = #_sourceLocation) throws -> ClientPackage {
        let result = try apply(createPackageCmd(client, lines, from: from, until: until, scope: scope), sourceLocation: sourceLocation)
        #expect(result.seq == lastSeq, sourceLocation: sourceLocation)
        return result.package
    }

    func useCmd(_ ref: String, client: String = "c", service: String = "massage", scope: String? = nil, key: String? = nil) -> UsePackageCredit {
        UsePackageCredit(tenantId: tenant, paymentRef: ref, clientId: client, serviceId: service, scopeId: scope, idempotencyKey: key ?? self.key())
    }

    @discardableResult
    func use(_ ref: String, client: String = "c", service: String = "massage", scope: String? = nil,
             sourceLocation: SourceLocation = #_sourceLocation) throws -> SessionRedemptionResult {
        let result = try apply(useCmd(ref, client: client, service: service, scope: scope), sourceLocation: sourceLocation)
        #expect(result.seq == lastSeq, sourceLocation: sourceLocation)
        #expect(try reader.clientPackage(tenant: tenant, id: result.package.id) == result.package, sourceLocation: sourceLocation)
        return result
    }

    func cancelCmd(redemption: String = "", ref: String = "", reason: String = "", key: String? = nil) -> CancelPackageRedemption {
        CancelPackageRedemption(tenantId: tenant, redemptionId: redemption, paymentRef: ref, reason: reason, idempotencyKey: key ?? self.key())
    }

    func deactivateCmd(_ id: String, reason: String = "closed", key: String? = nil) -> DeactivateClientPackage {
        DeactivateClientPackage(tenantId: tenant, packageId: id, reason: reason, idempotencyKey: key ?? self.key())
    }

    func package(_ id: String) throws -> ClientPackage? { try reader.clientPackage(tenant: tenant, id: id) }

    func left(_ id: String, _ service: String = "massage") throws -> Int64? { try package(id)?.line(service)?.sessionsLeft }
}

@Suite struct SessionPackageTests {
    // MARK: Create, get, list, deactivate

    @Test func createWritesOneGrantPerLineAndReadsBack() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let from = fx.now, until = fx.now + 90 * microsPerDay
        let result = try fx.apply(fx.createPackageCmd("c", [("massage", 10), ("facial", 5)], from: from, until: until, scope: "m1"))
        let p = result.package
        #expect(p.id.hasPrefix("spk_") && !p.id.contains(":"))
        #expect(p.clientId == "c" && p.name == "bundle" && p.scopeId == "m1" && p.active)
        #expect(p.validFromMicros == from && p.validUntilMicros == until)
        #expect(p.lines == [SessionLine(serviceId: "massage", totalSessions: 10), SessionLine(serviceId: "facial", totalSessions: 5)])
        #expect(p.createdSeq == 1 && result.seq == 2 && fx.lastSeq == 2)
        #expect(try fx.package(p.id) == p)

        let entries = try fx.entries("c").reversed()
        #expect(entries.map(\.type) == [.sessionGrant, .sessionGrant])
        #expect(entries.map(\.amountMinor) == [10, 5])
        #expect(entries.map(\.debitAccount) == [SessionAccount.granted, SessionAccount.granted])
        #expect(entries.map(\.creditAccount) == ["sessions:\(p.id):massage", "sessions:\(p.id):facial"])
        #expect(entries.allSatisfy { $0.refId == p.id && $0.availableAfterMinor == 0 && $0.heldAfterMinor == 0 })
        #expect(try fx.account(SessionAccount.granted) == -15)
        #expect(try fx.account("sessions:\(p.id):massage") == 10)
        // Sessions are not money: the client's credit balance is untouched.
        #expect(try fx.balance("c").summary.totalMinor == 0)
    }

    @Test func createRejectsBadInput() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        fx.expectError(.invalidArgument([.init("lines", "must hold 1…32 service lines")]), fx.createPackageCmd("c", []))
        fx.expectError(.invalidArgument([.init("lines[1].service_id", "repeats a service of another line")]),
                       fx.createPackageCmd("c", [("a", 1), ("a", 2)]))
        fx.expectError(.invalidArgument([.init("lines[0].total_sessions", "must be 1…10000")]), fx.createPackageCmd("c", [("a", 0)]))
        fx.expectError(.invalidArgument([.init("lines[0].total_sessions", "must be 1…10000")]), fx.createPackageCmd("c", [("a", 10_001)]))
        fx.expectError(.invalidArgument([.init("valid_until", "must not be before valid_from")]),
                       fx.createPackageCmd("c", [("a", 1)], from: fx.now + 10, until: fx.now + 9))
        fx.expectError(.invalidArgument([.init("valid_until", "must not be in the past")]),
                       fx.createPackageCmd("c", [("a", 1)], from: fx.now - 10, until: fx.now - 1))
        fx.expectError(.invalidArgument([.init("client_id", "is required")]), fx.createPackageCmd("", [("a", 1)]))
        fx.expectError(.invalidArgument([.init("scope_id", "must be printable ASCII without spaces")]),
                       fx.createPackageCmd("c", [("a", 1)], scope: "a b"))
        fx.expectError(.invalidArgument([.init("idempotency_key", "is required (field or idempotency-key metadata)")]),
                       CreateClientPackage(tenantId: fx.tenant, clientId: "c", name: "", scopeId: nil, validFromMicros: fx.now,
                                           validUntilMicros: fx.now + 1, lines: [SessionLine(serviceId: "a", totalSessions: 1)], idempotencyKey: nil))
        fx.expectError(.notFound(kind: "tenant", id: "nope"),
                       CreateClientPackage(tenantId: "nope", clientId: "c", name: "", scopeId: nil, validFromMicros: fx.now,
                                           validUntilMicros: fx.now + 1, lines: [SessionLine(serviceId: "a", totalSessions: 1)], idempotencyKey: "k"))
        #expect(fx.lastSeq == 0)
    }

    @Test func listIsPerClientOldestFirstPagedAndHidesInactiveByDefault() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let a = try fx.createPackage("c", [("massage", 1)])
        let b = try fx.createPackage("c", [("massage", 2)])
        let other = try fx.createPackage("d", [("massage", 3)])
        let c = try fx.createPackage("c", [("facial", 1)])
        try fx.apply(fx.deactivateCmd(b.id))
        func list(_ inactive: Bool, after: Int64? = nil, limit: Int = 10) throws -> [String] {
            try fx.reader.listClientPackages(tenant: fx.tenant, clientId: "c", includeInactive: inactive, afterSeq: after, limit: limit).map(\.id)
        }
        #expect(try list(false) == [a.id, c.id])
        #expect(try list(true) == [a.id, b.id, c.id])
        #expect(try list(true, limit: 2) == [a.id, b.id])
        #expect(try list(true, after: b.createdSeq) == [c.id])
        #expect(!(try list(true)).contains(other.id))
        #expect(try fx.reader.listClientPackages(tenant: fx.tenant, clientId: "c", includeInactive: true, afterSeq: nil, limit: 10)[1].lines[0].forfeitedSessions == 2)
    }

    @Test func deactivateForfeitsWhatIsLeftThenTwiceIsClientPackageInactive() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let p = try fx.createPackage("c", [("massage", 3), ("facial", 2), ("sauna", 1)])
        try fx.use("pay-1")
        try fx.use("pay-2", service: "sauna")
        let result = try fx.apply(fx.deactivateCmd(p.id, reason: "refunded"))
        #expect(!result.package.active && result.package.deactivationReason == "refunded" && result.package.deactivatedMicros == fx.now)
        #expect(result.package.lines.map(\.forfeitedSessions) == [2, 2, 0])
        #expect(result.package.lines.map(\.usedSessions) == [1, 0, 1])
        #expect(result.package.lines.allSatisfy { $0.sessionsLeft == 0 })
        #expect(result.seq == fx.lastSeq)
        #expect(try fx.package(p.id) == result.package)
        let forfeits = try fx.entries("c").filter { $0.type == .sessionForfeit }
        #expect(forfeits.map(\.amountMinor).sorted() == [2, 2])
        #expect(forfeits.allSatisfy { $0.creditAccount == SessionAccount.forfeited && $0.refId == p.id })
        #expect(try fx.account(SessionAccount.forfeited) == 4)
        // Twice: one defined answer, nothing changes.
        try fx.expectUnchanged("c") {
            fx.expectError(.clientPackageInactive(clientPackageId: p.id), fx.deactivateCmd(p.id))
        }
        // An inactive package is never used.
        fx.expectError(.noPackageToUse(clientId: "c", serviceId: "massage"), fx.useCmd("pay-3"))
        fx.expectError(.notFound(kind: "client_package", id: "spk_nope"), fx.deactivateCmd("spk_nope"))
    }

    @Test func deactivatingAFullyUsedPackageWritesNoEntry() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let p = try fx.createPackage("c", [("massage", 1)])
        try fx.use("pay-1")
        let seq = fx.lastSeq
        let result = try fx.apply(fx.deactivateCmd(p.id))
        #expect(result.seq == seq && fx.lastSeq == seq)
        #expect(!result.package.active)
    }

    // MARK: Use (the seed's rules)

    @Test func useConsumesOneSessionAndPaysTheReferenceAtZeroPrice() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let p = try fx.createPackage("c", [("massage", 10), ("facial", 5)])
        let r = try fx.use("pay-1")
        #expect(r.redemption.id.hasPrefix("rdm_"))
        #expect(r.redemption.packageId == p.id && r.redemption.serviceId == "massage" && r.redemption.paymentRef == "pay-1")
        #expect(r.redemption.state == .active && r.redemption.seq == r.seq && r.redemption.cancelSeq == nil)
        #expect(r.package.line("massage")?.usedSessions == 1 && r.package.line("massage")?.sessionsLeft == 9)
        #expect(r.package.line("facial")?.sessionsLeft == 5)
        #expect(r.payment == PaymentRefStatus(paymentRef: "pay-1", clientId: "c", paid: true, redemptionId: r.redemption.id))
        #expect(try fx.reader.paymentRefStatus(tenant: fx.tenant, paymentRef: "pay-1") == r.payment)
        let entry = try #require(try fx.entries("c").first)
        #expect(entry.type == .sessionUse && entry.amountMinor == 1 && entry.seq == r.seq)
        #expect(entry.debitAccount == "sessions:\(p.id):massage" && entry.creditAccount == SessionAccount.used)
        #expect(entry.refId == r.redemption.id && entry.paymentRef == "pay-1")
        let read = try #require(try fx.reader.redemption(tenant: fx.tenant, id: r.redemption.id, paymentRef: nil))
        #expect(read == r)
        #expect(try fx.reader.redemption(tenant: fx.tenant, id: nil, paymentRef: "pay-1") == r)
        #expect(try fx.reader.redemption(tenant: fx.tenant, id: "rdm_nope", paymentRef: nil) == nil)
        #expect(try fx.reader.redemption(tenant: fx.tenant, id: nil, paymentRef: "nope") == nil)
    }

    @Test func windowBoundariesAreInclusive() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        // valid_from == now: eligible.
        let start = fx.now + 10 * microsPerSecond
        let p = try fx.createPackage("c", [("massage", 5)], from: start, until: start + 100 * microsPerSecond)
        fx.clock.advance(micros: 10 * microsPerSecond - 1)
        fx.expectError(.noPackageToUse(clientId: "c", serviceId: "massage"), fx.useCmd("early"))
        fx.clock.advance(micros: 1)
        #expect(fx.now == p.validFromMicros)
        #expect(try fx.use("at-from").package.id == p.id)
        // valid_until == now: eligible; one microsecond later: not.
        fx.clock.advance(micros: p.validUntilMicros - fx.now)
        #expect(fx.now == p.validUntilMicros)
        #expect(try fx.use("at-until").package.id == p.id)
        fx.clock.advance(micros: 1)
        fx.expectError(.noPackageToUse(clientId: "c", serviceId: "massage"), fx.useCmd("late"))
        #expect(try fx.left(p.id) == 3)
    }

    @Test func inactivePackageIsNotEligible() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let soon = try fx.createPackage("c", [("massage", 5)], until: fx.now + microsPerDay)
        let later = try fx.createPackage("c", [("massage", 5)], until: fx.now + 9 * microsPerDay)
        try fx.apply(fx.deactivateCmd(soon.id))
        #expect(try fx.use("pay-1").package.id == later.id)
    }

    @Test func soonestValidUntilIsUsedFirstThenOldest() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let late = try fx.createPackage("c", [("massage", 1)], until: fx.now + 30 * microsPerDay)
        let soonOld = try fx.createPackage("c", [("massage", 1)], until: fx.now + 5 * microsPerDay)
        let soonNew = try fx.createPackage("c", [("massage", 1)], until: fx.now + 5 * microsPerDay)
        let mid = try fx.createPackage("c", [("massage", 1)], until: fx.now + 10 * microsPerDay)
        let order = try (1...4).map { try fx.use("pay-\($0)").package.id }
        #expect(order == [soonOld.id, soonNew.id, mid.id, late.id])
        fx.expectError(.noPackageToUse(clientId: "c", serviceId: "massage"), fx.useCmd("pay-5"))
    }

    @Test func usedUpLineIsNotEligibleEvenWithOtherLinesLeft() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let p = try fx.createPackage("c", [("massage", 1), ("facial", 5)])
        try fx.use("pay-1")
        try fx.expectUnchanged("c") {
            fx.expectError(.noPackageToUse(clientId: "c", serviceId: "massage"), fx.useCmd("pay-2"))
        }
        #expect(try fx.use("pay-2", service: "facial").package.id == p.id)
        // A service no package holds; another client's package.
        fx.expectError(.noPackageToUse(clientId: "c", serviceId: "yoga"), fx.useCmd("pay-3", service: "yoga"))
        fx.expectError(.noPackageToUse(clientId: "d", serviceId: "facial"), fx.useCmd("pay-4", client: "d", service: "facial"))
        // The failed references stay unknown: nothing was written for them.
        #expect(try fx.reader.paymentRefStatus(tenant: fx.tenant, paymentRef: "pay-3") == nil)
    }

    @Test func scopeIdRestrictsWhichPackagesQualify() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let unscoped = try fx.createPackage("c", [("massage", 5)], until: fx.now + microsPerDay)
        let m1 = try fx.createPackage("c", [("massage", 5)], until: fx.now + 5 * microsPerDay, scope: "m1")
        let m2 = try fx.createPackage("c", [("massage", 5)], until: fx.now + 9 * microsPerDay, scope: "m2")
        #expect(try fx.use("pay-1", scope: "m2").package.id == m2.id)
        #expect(try fx.use("pay-2", scope: "m1").package.id == m1.id)
        #expect(try fx.use("pay-3", scope: "m2").redemption.scopeId == "m2")
        fx.expectError(.noPackageToUse(clientId: "c", serviceId: "massage"), fx.useCmd("pay-4", scope: "m3"))
        // No scope id: every package qualifies (the soonest expiring first).
        #expect(try fx.use("pay-5").package.id == unscoped.id)
    }

    @Test func alreadyPaidThenOtherClientAreDistinctAndChangeNothing() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.createPackage("c", [("massage", 5)])
        try fx.createPackage("d", [("massage", 5)])
        let first = try fx.use("pay-1")
        try fx.expectUnchanged("c") {
            fx.expectError(.alreadyPaid(paymentRef: "pay-1", redemptionId: first.redemption.id), fx.useCmd("pay-1"))
            // Paid is reported before anything else (even for another client or service).
            fx.expectError(.alreadyPaid(paymentRef: "pay-1", redemptionId: first.redemption.id), fx.useCmd("pay-1", client: "d", service: "x"))
        }
        try fx.apply(fx.cancelCmd(ref: "pay-1"))
        // Unpaid again, but it belongs to client c.
        fx.expectError(.paymentRefOtherClient(paymentRef: "pay-1"), fx.useCmd("pay-1", client: "d"))
        #expect(try fx.left(first.package.id) == 5)
    }

    @Test func useRejectsBadInput() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        fx.expectError(.invalidArgument([.init("payment_ref", "is required"), .init("client_id", "is required"), .init("service_id", "is required")]),
                       fx.useCmd("", client: "", service: ""))
        fx.expectError(.invalidArgument([.init("idempotency_key", "is required (field or idempotency-key metadata)")]),
                       UsePackageCredit(tenantId: fx.tenant, paymentRef: "p", clientId: "c", serviceId: "s", scopeId: nil, idempotencyKey: nil))
    }

    // MARK: Cancel

    @Test func redeemCancelRedeemAgainWithTheSamePaymentRef() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let p = try fx.createPackage("c", [("massage", 2)])
        let first = try fx.use("pay-1")
        let cancelled = try fx.apply(fx.cancelCmd(redemption: first.redemption.id, reason: "booking cancelled"))
        #expect(cancelled.redemption.state == .cancelled && cancelled.redemption.cancelReason == "booking cancelled")
        #expect(cancelled.redemption.cancelSeq == cancelled.seq && cancelled.redemption.cancelledMicros == fx.now)
        #expect(cancelled.package.line("massage")?.usedSessions == 0 && cancelled.package.line("massage")?.sessionsLeft == 2)
        #expect(cancelled.payment == PaymentRefStatus(paymentRef: "pay-1", clientId: "c", paid: false, redemptionId: first.redemption.id))
        #expect(try fx.package(p.id) == cancelled.package)
        let ret = try #require(try fx.entries("c").first)
        #expect(ret.type == .sessionReturn && ret.amountMinor == 1 && ret.debitAccount == SessionAccount.used
                && ret.creditAccount == "sessions:\(p.id):massage" && ret.refId == first.redemption.id && ret.paymentRef == "pay-1")
        #expect(try fx.account(SessionAccount.used) == 0)

        let again = try fx.use("pay-1")
        #expect(again.redemption.id != first.redemption.id && again.payment.paid && again.payment.redemptionId == again.redemption.id)
        #expect(try fx.left(p.id) == 1)
        // The old redemption stays cancelled; the reference points at the new one.
        #expect(try fx.reader.redemption(tenant: fx.tenant, id: nil, paymentRef: "pay-1")?.redemption.id == again.redemption.id)
        #expect(try fx.reader.redemption(tenant: fx.tenant, id: first.redemption.id, paymentRef: nil)?.redemption.state == .cancelled)
    }

    @Test func cancelTwiceIsRedemptionAlreadyCancelled() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        try fx.createPackage("c", [("massage", 2)])
        let r = try fx.use("pay-1")
        try fx.apply(fx.cancelCmd(redemption: r.redemption.id))
        try fx.expectUnchanged("c") {
            fx.expectError(.redemptionAlreadyCancelled(redemptionId: r.redemption.id), fx.cancelCmd(redemption: r.redemption.id))
            // By payment reference: it is unpaid, its last redemption cancelled.
            fx.expectError(.redemptionAlreadyCancelled(redemptionId: r.redemption.id), fx.cancelCmd(ref: "pay-1"))
        }
        // Paid again: the old id is still cancelled, the reference cancels the new one.
        let again = try fx.use("pay-1")
        fx.expectError(.redemptionAlreadyCancelled(redemptionId: r.redemption.id), fx.cancelCmd(redemption: r.redemption.id))
        #expect(try fx.apply(fx.cancelCmd(ref: "pay-1")).redemption.id == again.redemption.id)
    }

    @Test func cancelByPaymentRef() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let p = try fx.createPackage("c", [("massage", 2)])
        let r = try fx.use("pay-1")
        let out = try fx.apply(fx.cancelCmd(ref: "pay-1"))
        #expect(out.redemption.id == r.redemption.id && out.redemption.state == .cancelled && !out.payment.paid)
        #expect(try fx.left(p.id) == 2)
    }

    @Test func cancelNeedsExactlyOneOfIdAndRefAndKnownOnes() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        fx.expectError(.invalidArgument([.init("redemption_id", "exactly one of redemption_id and payment_ref must be given")]), fx.cancelCmd())
        fx.expectError(.invalidArgument([.init("payment_ref", "exactly one of redemption_id and payment_ref must be given")]),
                       fx.cancelCmd(redemption: "rdm_x", ref: "pay-1"))
        fx.expectError(.notFound(kind: "redemption", id: "rdm_x"), fx.cancelCmd(redemption: "rdm_x"))
        fx.expectError(.notFound(kind: "payment_ref", id: "pay-x"), fx.cancelCmd(ref: "pay-x"))
    }

    @Test func cancelAfterExpiryReturnsTheSessionToTheExpiredPackage() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let p = try fx.createPackage("c", [("massage", 2)], until: fx.now + microsPerDay)
        let r = try fx.use("pay-1")
        fx.clock.advance(micros: 2 * microsPerDay)
        let out = try fx.apply(fx.cancelCmd(redemption: r.redemption.id))
        #expect(out.package.line("massage")?.sessionsLeft == 2 && out.package.line("massage")?.forfeitedSessions == 0)
        #expect(try fx.entries("c").first?.type == .sessionReturn)
        #expect(!out.payment.paid)
        // Returned, but the package is past valid_until: not usable.
        fx.expectError(.noPackageToUse(clientId: "c", serviceId: "massage"), fx.useCmd("pay-1"))
        #expect(try fx.left(p.id) == 2)
    }

    @Test func cancelAfterDeactivationForfeitsTheReturnedSessionAtOnce() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let p = try fx.createPackage("c", [("massage", 3)])
        let r = try fx.use("pay-1")
        try fx.apply(fx.deactivateCmd(p.id))
        let out = try fx.apply(fx.cancelCmd(ref: "pay-1"))
        let line = try #require(out.package.line("massage"))
        #expect(line.usedSessions == 0 && line.forfeitedSessions == 3 && line.sessionsLeft == 0)
        let last2 = try fx.entries("c").prefix(2).map(\.type)
        #expect(last2 == [.sessionForfeit, .sessionReturn])
        #expect(out.seq == fx.lastSeq && out.redemption.cancelSeq == fx.lastSeq - 1)
        #expect(!out.payment.paid && out.redemption.id == r.redemption.id)
        #expect(try fx.account(SessionAccount.forfeited) == 3)
    }

    // MARK: Idempotency

    @Test func retriesReplayAndDifferentRequestsNameTheFields() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let created = try fx.apply(fx.createPackageCmd("c", [("massage", 2)], key: "create-1"))
        guard case .replayed(_, let id, let seq) = try fx.ledger.write(fx.createPackageCmd("c", [("massage", 2)], from: created.package.validFromMicros,
                                                                                            until: created.package.validUntilMicros, key: "create-1")) else {
            Issue.record("expected a replay"); return
        }
        #expect(id == created.package.id && seq == created.seq)
        fx.expectError(.idempotencyKeyReused(operation: "create_client_package", differingFields: ["lines"], existingResultId: created.package.id),
                       fx.createPackageCmd("c", [("massage", 3)], from: created.package.validFromMicros, until: created.package.validUntilMicros,
                                           key: "create-1"))

        let used = try fx.apply(fx.useCmd("pay-1", key: "use-1"))
        let seqAfterUse = fx.lastSeq
        guard case .replayed(_, let useId, _) = try fx.ledger.write(fx.useCmd("pay-1", key: "use-1")) else { Issue.record("expected a replay"); return }
        #expect(useId == used.redemption.id && fx.lastSeq == seqAfterUse)
        fx.expectError(.idempotencyKeyReused(operation: "use_package_credit", differingFields: ["payment_ref"], existingResultId: used.redemption.id),
                       fx.useCmd("pay-2", key: "use-1"))
        #expect(try fx.left(created.package.id) == 1)

        let cancelled = try fx.apply(fx.cancelCmd(ref: "pay-1", key: "cancel-1"))
        guard case .replayed = try fx.ledger.write(fx.cancelCmd(ref: "pay-1", key: "cancel-1")) else { Issue.record("expected a replay"); return }
        fx.expectError(.idempotencyKeyReused(operation: "cancel_package_redemption", differingFields: ["payment_ref", "redemption_id"],
                                             existingResultId: cancelled.redemption.id),
                       fx.cancelCmd(redemption: cancelled.redemption.id, key: "cancel-1"))
        try fx.apply(fx.deactivateCmd(created.package.id, key: "deact-1"))
        guard case .replayed = try fx.ledger.write(fx.deactivateCmd(created.package.id, key: "deact-1")) else { Issue.record("expected a replay"); return }
        #expect(try fx.left(created.package.id) == 0)
    }

    // MARK: Verify and races

    @Test func verifyCatchesASessionLineThatDriftsFromItsEntries() throws {
        let fx = try Fixture()
        defer { fx.ledger.close() }
        let p = try fx.createPackage("c", [("massage", 3)])
        try fx.use("pay-1")
        #expect(try fx.ledger.verify().ok)
        let db = try SQLiteConnection(path: fx.path)
        try db.statement("UPDATE session_lines SET used_sessions = 0 WHERE package_id = ?").bind(.text(p.id)).run()
        try db.statement("UPDATE session_payment_refs SET paid = 0").run()
        let report = try fx.ledger.verify()
        #expect(!report.ok)
        #expect(report.problems.contains { $0.contains("line massage: used 0, entries say 1 uses − 0 returns") })
        #expect(report.problems.contains { $0.contains("1 active redemptions, used 0") })
        #expect(report.problems.contains { $0.contains("does not pay its payment reference pay-1") })
    }

    @Test func raceOfManyUsesOnFewSessionsExactlyNSucceed() throws {
        let fx = try Fixture()
        defer { fx.finish() }
        let sessions: Int64 = 25, racers = 400
        let p = try fx.createPackage("c", [("massage", sessions)])
        let results = Collector<Result<String, LedgerError>>()
        let done = DispatchGroup()
        DispatchQueue.concurrentPerform(iterations: racers) { i in
            done.enter()
            fx.ledger.submit(UsePackageCredit(tenantId: "t1", paymentRef: "pay-\(i)", clientId: "c", serviceId: "massage", scopeId: nil,
                                              idempotencyKey: "race-\(i)")) { result in
                results.add(result.map { outcome -> String in
                    if case .applied(let out, _) = outcome { return out.redemption.id }
                    return "replayed"
                })
                done.leave()
            }
        }
        #expect(done.wait(timeout: .now() + 60) == .success)
        let all = results.all
        let ok = all.compactMap { try? $0.get() }
        #expect(ok.count == Int(sessions) && Set(ok).count == Int(sessions))
        #expect(all.count == racers)
        for case .failure(let error) in all { #expect(error == .noPackageToUse(clientId: "c", serviceId: "massage")) }
        #expect(try fx.left(p.id) == 0)
        #expect(try fx.package(p.id)?.line("massage")?.usedSessions == sessions)
        #expect(try fx.entries("c").filter { $0.type == .sessionUse }.count == Int(sessions))
    }
}
