import CreditsProto
import GRPCServices
import GRPCTransport
import Ledger

/// credits.v1.SessionPackageService: client session packages (SPEC §5).
struct SessionServiceRoutes {
    typealias S = Credits_V1_SessionPackageService
    let core: APICore

    var routes: [RPCRoute] {
        [
            core.unary(S.createClientPackage, .staff) { req, call, ctx in create(req, call, ctx) },
            core.unary(S.getClientPackage, .read) { req, call, ctx in get(req, call, ctx) },
            core.unary(S.listClientPackages, .read) { req, call, ctx in list(req, call, ctx) },
            core.unary(S.deactivateClientPackage, .staff) { req, call, ctx in deactivate(req, call, ctx) },
            core.unary(S.usePackageCredit, .appWrite) { req, call, ctx in use(req, call, ctx) },
            core.unary(S.cancelPackageRedemption, .appWrite) { req, call, ctx in cancel(req, call, ctx) },
            core.unary(S.getPackageRedemption, .read) { req, call, ctx in getRedemption(req, call, ctx) },
        ]
    }

    func create(_ req: Credits_V1_CreateClientPackageRequest, _ call: ProtoCall<Credits_V1_ClientPackageResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        let validFrom = check.requiredTime(req.validFrom, "valid_from")
        let validUntil = check.requiredTime(req.validUntil, "valid_until")
        let lines = req.lines.map { SessionLine(serviceId: $0.serviceID, totalSessions: $0.totalSessions) }
        core.write(call, CreateClientPackage(tenantId: ctx.tenantId, clientId: req.clientID, name: req.name, scopeId: nonEmpty(req.scopeID),
                                             validFromMicros: validFrom, validUntilMicros: validUntil, lines: lines,
                                             idempotencyKey: key), check) { SessionConvert.packageResponse($0) }
    }

    func get(_ req: Credits_V1_GetClientPackageRequest, _ call: ProtoCall<Credits_V1_ClientPackageResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            try requireId(req.clientPackageID, "client_package_id")
            guard let found = try ctx.reader.clientPackageResult(tenant: ctx.tenantId, id: req.clientPackageID) else {
                throw LedgerError.notFound(kind: "client_package", id: req.clientPackageID)
            }
            return SessionConvert.packageResponse(found)
        }
    }

    func list(_ req: Credits_V1_ListClientPackagesRequest, _ call: ProtoCall<Credits_V1_ListClientPackagesResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            var check = RequestCheck()
            check.id(req.clientID, "client_id")
            let size = check.pageSize(req.pageSize)
            try check.finish()
            let scope = "client_packages:\(req.clientID):\(req.includeInactive)"
            var after: Int64?
            if let cursor = try PageToken.decode(req.pageToken, scope: scope) {
                guard let seq = Int64(cursor) else { throw RPCErrorBox(RPCError.invalid("page_token", "is malformed")) }
                after = seq
            }
            let rows = try ctx.reader.listClientPackages(tenant: ctx.tenantId, clientId: req.clientID, includeInactive: req.includeInactive,
                                                         afterSeq: after, limit: size + 1)
            var r = Credits_V1_ListClientPackagesResponse()
            r.clientPackages = rows.prefix(size).map(SessionConvert.package)
            if rows.count > size { r.nextPageToken = PageToken.encode(scope: scope, cursor: "\(rows[size - 1].createdSeq)") }
            return r
        }
    }

    func deactivate(_ req: Credits_V1_DeactivateClientPackageRequest, _ call: ProtoCall<Credits_V1_ClientPackageResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        core.write(call, DeactivateClientPackage(tenantId: ctx.tenantId, packageId: req.clientPackageID, reason: req.reason,
                                                 idempotencyKey: key)) { SessionConvert.packageResponse($0) }
    }

    func use(_ req: Credits_V1_UsePackageCreditRequest, _ call: ProtoCall<Credits_V1_PackageRedemptionResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        core.write(call, UsePackageCredit(tenantId: ctx.tenantId, paymentRef: req.paymentRef, clientId: req.clientID, serviceId: req.serviceID,
                                          scopeId: nonEmpty(req.scopeID), idempotencyKey: key)) { SessionConvert.redemptionResponse($0) }
    }

    func cancel(_ req: Credits_V1_CancelPackageRedemptionRequest, _ call: ProtoCall<Credits_V1_PackageRedemptionResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        core.write(call, CancelPackageRedemption(tenantId: ctx.tenantId, redemptionId: req.redemptionID, paymentRef: req.paymentRef,
                                                 reason: req.reason, idempotencyKey: key)) { SessionConvert.redemptionResponse($0) }
    }

    func getRedemption(_ req: Credits_V1_GetPackageRedemptionRequest, _ call: ProtoCall<Credits_V1_PackageRedemptionResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            guard req.redemptionID.isEmpty != req.paymentRef.isEmpty else {
                throw RPCErrorBox(RPCError.invalid(req.redemptionID.isEmpty ? "redemption_id" : "payment_ref",
                                                   "exactly one of redemption_id and payment_ref must be given"))
            }
            if req.redemptionID.isEmpty {
                try requireId(req.paymentRef, "payment_ref")
                guard let found = try ctx.reader.redemption(tenant: ctx.tenantId, id: nil, paymentRef: req.paymentRef) else {
                    throw LedgerError.notFound(kind: "payment_ref", id: req.paymentRef)
                }
                return SessionConvert.redemptionResponse(found)
            }
            try requireId(req.redemptionID, "redemption_id")
            guard let found = try ctx.reader.redemption(tenant: ctx.tenantId, id: req.redemptionID, paymentRef: nil) else {
                throw LedgerError.notFound(kind: "redemption", id: req.redemptionID)
            }
            return SessionConvert.redemptionResponse(found)
        }
    }
}

/// Session package values → credits.v1 messages.
enum SessionConvert {
    static func line(_ l: SessionLine) -> Credits_V1_SessionLine {
        var m = Credits_V1_SessionLine()
        m.serviceID = l.serviceId
        m.totalSessions = l.totalSessions
        m.usedSessions = l.usedSessions
        m.forfeitedSessions = l.forfeitedSessions
        m.sessionsLeft = l.sessionsLeft
        return m
    }

    static func package(_ p: ClientPackage) -> Credits_V1_ClientPackage {
        var m = Credits_V1_ClientPackage()
        m.id = p.id
        m.clientID = p.clientId
        m.name = p.name
        m.scopeID = p.scopeId ?? ""
        m.validFrom = Convert.timestamp(p.validFromMicros)
        m.validUntil = Convert.timestamp(p.validUntilMicros)
        m.active = p.active
        m.lines = p.lines.map(line)
        m.createdSeq = p.createdSeq
        m.createTime = Convert.timestamp(p.createdMicros)
        m.deactivateTime = p.deactivatedMicros.map(Convert.timestamp)
        m.deactivationReason = p.deactivationReason
        return m
    }

    static func redemption(_ r: PackageRedemption) -> Credits_V1_PackageRedemption {
        var m = Credits_V1_PackageRedemption()
        m.id = r.id
        m.clientID = r.clientId
        m.clientPackageID = r.packageId
        m.serviceID = r.serviceId
        m.paymentRef = r.paymentRef
        m.scopeID = r.scopeId ?? ""
        switch r.state {
        case .active: m.state = .active
        case .cancelled: m.state = .cancelled
        }
        m.seq = r.seq
        m.createTime = Convert.timestamp(r.createdMicros)
        m.cancelSeq = r.cancelSeq ?? 0
        m.cancelTime = r.cancelledMicros.map(Convert.timestamp)
        m.cancelReason = r.cancelReason
        return m
    }

    static func payment(_ p: PaymentRefStatus) -> Credits_V1_PaymentReference {
        var m = Credits_V1_PaymentReference()
        m.paymentRef = p.paymentRef
        m.clientID = p.clientId
        m.paid = p.paid
        m.priceMinor = 0
        m.redemptionID = p.redemptionId
        return m
    }

    static func packageResponse(_ r: ClientPackageResult) -> Credits_V1_ClientPackageResponse {
        var m = Credits_V1_ClientPackageResponse()
        m.clientPackage = package(r.package)
        m.seq = r.seq
        return m
    }

    static func redemptionResponse(_ r: SessionRedemptionResult) -> Credits_V1_PackageRedemptionResponse {
        var m = Credits_V1_PackageRedemptionResponse()
        m.redemption = redemption(r.redemption)
        m.clientPackage = package(r.package)
        m.payment = payment(r.payment)
        m.seq = r.seq
        return m
    }
}
