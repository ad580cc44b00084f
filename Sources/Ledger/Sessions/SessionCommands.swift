/// Commands of session packages: create and deactivate client packages, use
/// one session to pay a payment reference, cancel a use. Every change of a
/// line is a ledger entry (see `SessionAccount`) written by `appendEntry`.

extension Validator {
    fileprivate mutating func optionalId(_ value: String?, _ field: String) {
        if let value { id(value, field, required: true) }
    }

    /// Exactly one of the two ids.
    fileprivate mutating func exactlyOne(_ a: String, _ aField: String, _ b: String, _ bField: String) {
        if a.isEmpty == b.isEmpty {
            violations.append(.init(a.isEmpty ? aField : bField, "exactly one of \(aField) and \(bField) must be given"))
        } else {
            id(a, aField, required: false)
            id(b, bField, required: false)
        }
    }
}

public struct CreateClientPackage: StorageCommand {
    public static let operation = "create_client_package"
    public var tenantId: String
    public var clientId: String
    public var name: String
    public var scopeId: String?
    public var validFromMicros: Int64
    public var validUntilMicros: Int64
    /// (service id, total sessions), in order.
    public var lines: [SessionLine]
    public var idempotencyKey: String?

    public init(tenantId: String, clientId: String, name: String, scopeId: String?, validFromMicros: Int64, validUntilMicros: Int64,
                lines: [SessionLine], idempotencyKey: String?) {
        self.tenantId = tenantId
        self.clientId = clientId
        self.name = name
        self.scopeId = scopeId
        self.validFromMicros = validFromMicros
        self.validUntilMicros = validUntilMicros
        self.lines = lines
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("client_id", clientId), ("name", name), ("scope_id", Canonical.opt(scopeId)), ("valid_from", "\(validFromMicros)"),
         ("valid_until", "\(validUntilMicros)"), ("lines", lines.map { "\($0.serviceId):\($0.totalSessions)" }.joined(separator: ","))]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(clientId, "client_id")
        v.text(name, "name", max: SessionLimits.maxNameLength)
        v.optionalId(scopeId, "scope_id")
        v.check(validFromMicros <= validUntilMicros, "valid_until", "must not be before valid_from")
        v.check(!lines.isEmpty && lines.count <= SessionLimits.maxLinesPerPackage, "lines",
                "must hold 1…\(SessionLimits.maxLinesPerPackage) service lines")
        var seen = Set<String>()
        for (i, line) in lines.enumerated() {
            v.id(line.serviceId, "lines[\(i)].service_id")
            v.check(seen.insert(line.serviceId).inserted, "lines[\(i)].service_id", "repeats a service of another line")
            v.check(line.totalSessions > 0 && line.totalSessions <= SessionLimits.maxSessionsPerLine, "lines[\(i)].total_sessions",
                    "must be 1…\(SessionLimits.maxSessionsPerLine)")
            v.check(line.usedSessions == 0 && line.forfeitedSessions == 0, "lines[\(i)]", "a new line has nothing used or forfeited")
        }
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> ClientPackageResult {
        let tenantRow = try store.requireTenant(tenantId)
        let now = store.clock.nowMicros()
        guard validUntilMicros >= now else { throw LedgerError.invalid("valid_until", "must not be in the past") }
        let package = ClientPackage(id: IDs.make("spk", clock: store.clock), clientId: clientId, name: name, scopeId: scopeId, validFromMicros: validFromMicros,
                                    validUntilMicros: validUntilMicros, active: true, lines: lines, createdSeq: tenantRow.lastSeq + 1,
                                    createdMicros: now, deactivatedMicros: nil, deactivationReason: "")
        try store.insertSessionPackage(package, tenant: tenantId)
        var seq = tenantRow.lastSeq
        for line in lines {
            let entry = try store.appendEntry(
                tenant: tenantId, type: .sessionGrant, client: clientId, amountMinor: line.totalSessions, debit: SessionAccount.granted,
                credit: SessionAccount.line(packageId: package.id, serviceId: line.serviceId), refId: package.id,
                idempotencyKey: idempotencyKey ?? "", reason: "grant", note: line.serviceId)
            precondition(entry.seq == seq + 1, "grant entries are consecutive")
            seq = entry.seq
        }
        return ClientPackageResult(package: package, seq: seq)
    }

    public func resultId(_ output: ClientPackageResult) -> String { output.package.id }
    public func resultSeq(_ output: ClientPackageResult) -> Int64 { output.seq }
}

/// Deactivates a client package: the sessions left on each line are
/// forfeited. An inactive package cannot be deactivated again.
public struct DeactivateClientPackage: StorageCommand {
    public static let operation = "deactivate_client_package"
    public var tenantId: String
    public var packageId: String
    public var reason: String
    public var idempotencyKey: String?

    public init(tenantId: String, packageId: String, reason: String, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.packageId = packageId
        self.reason = reason
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] { [("client_package_id", packageId), ("reason", reason)] }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(packageId, "client_package_id")
        v.text(reason, "reason")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> ClientPackageResult {
        var seq = try store.requireTenant(tenantId).lastSeq
        guard var package = try store.sessionPackage(tenant: tenantId, id: packageId) else {
            throw LedgerError.notFound(kind: "client_package", id: packageId)
        }
        guard package.active else { throw LedgerError.clientPackageInactive(clientPackageId: packageId) }
        for (i, line) in package.lines.enumerated() where line.sessionsLeft > 0 {
            let left = line.sessionsLeft
            let entry = try store.appendEntry(
                tenant: tenantId, type: .sessionForfeit, client: package.clientId, amountMinor: left,
                debit: SessionAccount.line(packageId: packageId, serviceId: line.serviceId), credit: SessionAccount.forfeited,
                refId: packageId, idempotencyKey: idempotencyKey ?? "", reason: "deactivated", note: reason)
            try store.changeSessionLine(tenant: tenantId, packageId: packageId, serviceId: line.serviceId,
                                       usedDelta: 0, forfeitedDelta: left)
            package.lines[i].forfeitedSessions += left
            seq = entry.seq
        }
        let now = store.clock.nowMicros()
        try store.deactivateSessionPackage(tenant: tenantId, id: packageId, atMicros: now, reason: reason)
        package.active = false
        package.deactivatedMicros = now
        package.deactivationReason = reason
        precondition(package.lines.allSatisfy { $0.sessionsLeft == 0 }, "an inactive package holds no sessions")
        return ClientPackageResult(package: package, seq: seq)
    }

    public func resultId(_ output: ClientPackageResult) -> String { output.package.id }
    public func resultSeq(_ output: ClientPackageResult) -> Int64 { output.seq }
}

/// Pays a payment reference with one session of the client's eligible
/// package that expires soonest (the seed's "Use Client Package Credit").
public struct UsePackageCredit: StorageCommand {
    public static let operation = "use_package_credit"
    public var tenantId: String
    public var paymentRef: String
    public var clientId: String
    public var serviceId: String
    /// The seed's matter_uid: only packages with this scope id qualify.
    public var scopeId: String?
    public var idempotencyKey: String?

    public init(tenantId: String, paymentRef: String, clientId: String, serviceId: String, scopeId: String?, idempotencyKey: String?) {
        self.tenantId = tenantId
        self.paymentRef = paymentRef
        self.clientId = clientId
        self.serviceId = serviceId
        self.scopeId = scopeId
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("payment_ref", paymentRef), ("client_id", clientId), ("service_id", serviceId), ("scope_id", Canonical.opt(scopeId))]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.id(paymentRef, "payment_ref")
        v.id(clientId, "client_id")
        v.id(serviceId, "service_id")
        v.optionalId(scopeId, "scope_id")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> SessionRedemptionResult {
        _ = try store.requireTenant(tenantId)
        let existing = try store.paymentRef(tenant: tenantId, ref: paymentRef)
        if let existing, existing.paid {
            throw LedgerError.alreadyPaid(paymentRef: paymentRef, redemptionId: existing.redemptionId)
        }
        if let existing, existing.clientId != clientId {
            throw LedgerError.paymentRefOtherClient(paymentRef: paymentRef)
        }
        let now = store.clock.nowMicros()
        guard let packageId = try store.sessionPackageToUse(tenant: tenantId, client: clientId, serviceId: serviceId,
                                                           scopeId: scopeId, now: now),
              var package = try store.sessionPackage(tenant: tenantId, id: packageId) else {
            throw LedgerError.noPackageToUse(clientId: clientId, serviceId: serviceId)
        }
        guard let index = package.lines.firstIndex(where: { $0.serviceId == serviceId }) else {
            preconditionFailure("the package chosen has no line for \(serviceId)")
        }
        precondition(package.active && package.isInWindow(atMicros: now) && package.lines[index].sessionsLeft > 0,
                     "the package chosen is not eligible")
        precondition(scopeId == nil || package.scopeId == scopeId, "the package chosen is out of scope")

        let id = IDs.make("rdm", clock: store.clock)
        let entry = try store.appendEntry(
            tenant: tenantId, type: .sessionUse, client: clientId, amountMinor: 1,
            debit: SessionAccount.line(packageId: packageId, serviceId: serviceId), credit: SessionAccount.used, refId: id,
            paymentRef: paymentRef, idempotencyKey: idempotencyKey ?? "", reason: "use", note: serviceId)
        try store.changeSessionLine(tenant: tenantId, packageId: packageId, serviceId: serviceId, usedDelta: 1, forfeitedDelta: 0)
        package.lines[index].usedSessions += 1
        let redemption = PackageRedemption(id: id, clientId: clientId, packageId: packageId, serviceId: serviceId, paymentRef: paymentRef,
                                           scopeId: scopeId, state: .active, seq: entry.seq, createdMicros: entry.timeMicros,
                                           cancelSeq: nil, cancelledMicros: nil, cancelReason: "")
        try store.insertSessionRedemption(redemption, tenant: tenantId)
        let payment = PaymentRefStatus(paymentRef: paymentRef, clientId: clientId, paid: true, redemptionId: id)
        try store.savePaymentRef(payment, tenant: tenantId, seq: entry.seq)
        return SessionRedemptionResult(redemption: redemption, package: package, payment: payment, seq: entry.seq)
    }

    public func resultId(_ output: SessionRedemptionResult) -> String { output.redemption.id }
    public func resultSeq(_ output: SessionRedemptionResult) -> Int64 { output.seq }
}

/// Cancels a redemption (by id, or the one paying a payment reference): the
/// session returns to its line and the payment reference is unpaid again.
/// The session returns whatever the package's window (an expired package
/// keeps it, unusable); a deactivated package forfeits it at once.
public struct CancelPackageRedemption: StorageCommand {
    public static let operation = "cancel_package_redemption"
    public var tenantId: String
    /// Exactly one of `redemptionId` and `paymentRef` is non-empty.
    public var redemptionId: String
    public var paymentRef: String
    public var reason: String
    public var idempotencyKey: String?

    public init(tenantId: String, redemptionId: String = "", paymentRef: String = "", reason: String = "", idempotencyKey: String?) {
        self.tenantId = tenantId
        self.redemptionId = redemptionId
        self.paymentRef = paymentRef
        self.reason = reason
        self.idempotencyKey = idempotencyKey
    }

    public var idempotencyFields: [(String, String)] {
        [("redemption_id", redemptionId), ("payment_ref", paymentRef), ("reason", reason)]
    }

    public func validate() throws(LedgerError) {
        var v = Validator()
        v.exactlyOne(redemptionId, "redemption_id", paymentRef, "payment_ref")
        v.text(reason, "reason")
        v.idempotencyKey(idempotencyKey, required: true)
        try v.finish()
    }

    public func apply(to store: some LedgerStorage) throws -> SessionRedemptionResult {
        _ = try store.requireTenant(tenantId)
        let id: String
        if redemptionId.isEmpty {
            guard let status = try store.paymentRef(tenant: tenantId, ref: paymentRef) else {
                throw LedgerError.notFound(kind: "payment_ref", id: paymentRef)
            }
            id = status.redemptionId
        } else {
            id = redemptionId
        }
        guard var redemption = try store.sessionRedemption(tenant: tenantId, id: id) else {
            throw LedgerError.notFound(kind: "redemption", id: id)
        }
        guard redemption.state == .active else { throw LedgerError.redemptionAlreadyCancelled(redemptionId: id) }
        guard var package = try store.sessionPackage(tenant: tenantId, id: redemption.packageId),
              let index = package.lines.firstIndex(where: { $0.serviceId == redemption.serviceId }) else {
            preconditionFailure("redemption \(id) of an unknown package line")
        }
        let line = SessionAccount.line(packageId: package.id, serviceId: redemption.serviceId)
        let key = idempotencyKey ?? ""
        let returned = try store.appendEntry(
            tenant: tenantId, type: .sessionReturn, client: redemption.clientId, amountMinor: 1, debit: SessionAccount.used, credit: line,
            refId: id, paymentRef: redemption.paymentRef, idempotencyKey: key, reason: "cancel", note: reason)
        try store.changeSessionLine(tenant: tenantId, packageId: package.id, serviceId: redemption.serviceId,
                                   usedDelta: -1, forfeitedDelta: 0)
        package.lines[index].usedSessions -= 1
        var seq = returned.seq
        if !package.active {
            let forfeit = try store.appendEntry(
                tenant: tenantId, type: .sessionForfeit, client: redemption.clientId, amountMinor: 1, debit: line,
                credit: SessionAccount.forfeited, refId: id, paymentRef: redemption.paymentRef, idempotencyKey: key,
                reason: "returned_to_inactive_package")
            try store.changeSessionLine(tenant: tenantId, packageId: package.id, serviceId: redemption.serviceId,
                                       usedDelta: 0, forfeitedDelta: 1)
            package.lines[index].forfeitedSessions += 1
            seq = forfeit.seq
        }
        try store.cancelSessionRedemption(tenant: tenantId, id: id, cancelSeq: returned.seq, cancelledMicros: returned.timeMicros,
                                          reason: reason)
        redemption.state = .cancelled
        redemption.cancelSeq = returned.seq
        redemption.cancelledMicros = returned.timeMicros
        redemption.cancelReason = reason

        guard let current = try store.paymentRef(tenant: tenantId, ref: redemption.paymentRef) else {
            preconditionFailure("active redemption \(id) without its payment reference")
        }
        precondition(current.paid && current.redemptionId == id, "an active redemption pays its payment reference")
        let payment = PaymentRefStatus(paymentRef: current.paymentRef, clientId: current.clientId, paid: false, redemptionId: id)
        try store.savePaymentRef(payment, tenant: tenantId, seq: seq)
        return SessionRedemptionResult(redemption: redemption, package: package, payment: payment, seq: seq)
    }

    public func resultId(_ output: SessionRedemptionResult) -> String { output.redemption.id }
    public func resultSeq(_ output: SessionRedemptionResult) -> Int64 { output.seq }
}
