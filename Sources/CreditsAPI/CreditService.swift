import CreditsProto
import GRPCServices
import GRPCTransport
import Ledger

/// credits.v1.CreditService: protobuf ⇄ ledger commands and reads.
struct CreditServiceRoutes {
    typealias S = Credits_V1_CreditService
    let core: APICore

    var routes: [RPCRoute] {
        [
            core.unary(S.purchaseCreditPackage, .appWrite) { req, call, ctx in purchase(req, call, ctx) },
            core.unary(S.createCreditOrder, .staff) { req, call, ctx in creditOrder(req, call, ctx) },
            core.unary(S.getBalance, .read) { req, call, ctx in getBalance(req, call, ctx) },
            core.unary(S.listBalances, .read) { req, call, ctx in listBalances(req, call, ctx) },
            core.unary(S.spendCredits, .appWrite) { req, call, ctx in spend(req, call, ctx) },
            core.unary(S.createHold, .appWrite) { req, call, ctx in createHold(req, call, ctx) },
            core.unary(S.captureHold, .appWrite) { req, call, ctx in captureHold(req, call, ctx) },
            core.unary(S.releaseHold, .appWrite) { req, call, ctx in releaseHold(req, call, ctx) },
            core.unary(S.getHold, .read) { req, call, ctx in getHold(req, call, ctx) },
            core.unary(S.reverseSpend, .staff) { req, call, ctx in reverse(req, call, ctx) },
            core.unary(S.getSpend, .read) { req, call, ctx in getSpend(req, call, ctx) },
            core.unary(S.createWriteOff, .staff) { req, call, ctx in createWriteOff(req, call, ctx) },
            core.unary(S.listWriteOffs, .read) { req, call, ctx in listWriteOffs(req, call, ctx) },
            core.unary(S.voidWriteOff, .staff) { req, call, ctx in voidWriteOff(req, call, ctx) },
            core.unary(S.adjustBalance, .staff) { req, call, ctx in adjust(req, call, ctx) },
            core.unary(S.listLedgerEntries, .read) { req, call, ctx in listEntries(req, call, ctx) },
            core.unary(S.getOperation, .read) { req, call, ctx in getOperation(req, call, ctx) },
            importLots,
        ]
    }

    // MARK: Grants

    func purchase(_ req: Credits_V1_PurchaseCreditPackageRequest, _ call: ProtoCall<Credits_V1_PurchaseCreditPackageResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, PurchasePackage(tenantId: ctx.tenantId, clientId: req.clientID, packageId: req.packageID,
                                         centerId: req.centerID, paymentRef: req.paymentRef, idempotencyKey: key)) { out in
            var r = Credits_V1_PurchaseCreditPackageResponse()
            r.lot = Convert.lot(out.lot)
            r.balance = Convert.summary(out.balance, currency: currency)
            return r
        }
    }

    func creditOrder(_ req: Credits_V1_CreateCreditOrderRequest, _ call: ProtoCall<Credits_V1_CreateCreditOrderResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        let validUntil = check.optionalTime(req.validUntil, "valid_until")
        let currency = ctx.currency
        core.write(call, CreateCreditOrder(tenantId: ctx.tenantId, clientId: req.clientID, amountMinor: req.amountMinor,
                                           priceMinor: req.priceMinor, centerId: req.centerID, note: req.note,
                                           validUntilMicros: validUntil, scope: Convert.scope(req.scope), idempotencyKey: key), check) { out in
            var r = Credits_V1_CreateCreditOrderResponse()
            r.lot = Convert.lot(out.lot)
            r.balance = Convert.summary(out.balance, currency: currency)
            return r
        }
    }

    func adjust(_ req: Credits_V1_AdjustBalanceRequest, _ call: ProtoCall<Credits_V1_AdjustBalanceResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        let validUntil = check.optionalTime(req.validUntil, "valid_until")
        let currency = ctx.currency
        core.write(call, AdjustBalance(tenantId: ctx.tenantId, clientId: req.clientID, amountMinor: req.amountMinor, reason: req.reason,
                                       centerId: req.centerID, validUntilMicros: validUntil, idempotencyKey: key), check) { out in
            var r = Credits_V1_AdjustBalanceResponse()
            r.adjustmentID = out.adjustmentId
            r.lot = out.lot.map(Convert.lot)
            r.allocations = out.allocations.map(Convert.allocation)
            r.balance = Convert.summary(out.balance, currency: currency)
            return r
        }
    }

    // MARK: Balances

    func getBalance(_ req: Credits_V1_GetBalanceRequest, _ call: ProtoCall<Credits_V1_Balance>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            var check = RequestCheck()
            check.id(req.clientID, "client_id")
            let asOf = Self.balanceAsOf(req, &check)
            try check.finish()
            guard let asOf else {
                let snapshot = try ctx.reader.balance(tenant: ctx.tenantId, client: req.clientID, details: req.includeDetails)
                return Convert.balance(snapshot, currency: ctx.currency, details: req.includeDetails)
            }
            // As-of reads go to SQLite (the balance cache holds only the present).
            let historic = try ctx.reader.balance(tenant: ctx.tenantId, client: req.clientID, asOf: asOf, details: req.includeDetails)
            var r = Convert.balance(historic.balance, currency: ctx.currency, details: req.includeDetails)
            r.asOfTime = Convert.timestamp(historic.asOfMicros)
            return r
        }
    }

    /// as_of_seq (> 0) or as_of_time, not both; nil: the balance now. The
    /// upper bound of as_of_seq (the tenant's latest seq) is the ledger's check.
    static func balanceAsOf(_ req: Credits_V1_GetBalanceRequest, _ check: inout RequestCheck) -> BalanceAsOf? {
        if req.asOfSeq < 0 { check.add("as_of_seq", "must be > 0 (or 0: not set)") }
        let time = check.optionalTime(req.asOfTime, "as_of_time")
        if req.asOfSeq != 0 && req.asOfTime != nil {
            check.add("as_of_time", "cannot be set together with as_of_seq")
            return nil
        }
        if req.asOfSeq > 0 { return .seq(req.asOfSeq) }
        return time.map { .time(micros: $0) }
    }

    func listBalances(_ req: Credits_V1_ListBalancesRequest, _ call: ProtoCall<Credits_V1_ListBalancesResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            var check = RequestCheck()
            check.id(req.centerID, "center_id", required: false)
            let size = check.pageSize(req.pageSize)
            try check.finish()
            let scope = "balances:\(req.centerID)"
            let after = try PageToken.decode(req.pageToken, scope: scope)
            let (rows, seq) = try ctx.reader.listBalancesWithSeq(tenant: ctx.tenantId, centerId: req.centerID.isEmpty ? nil : req.centerID,
                                                                 afterClientId: after, limit: size + 1)
            var r = Credits_V1_ListBalancesResponse()
            r.balances = rows.prefix(size).map {
                Convert.summary(BalanceSummary(clientId: $0.clientId, availableMinor: $0.availableMinor, heldMinor: $0.heldMinor,
                                               seq: seq), currency: ctx.currency)
            }
            if rows.count > size { r.nextPageToken = PageToken.encode(scope: scope, cursor: rows[size - 1].clientId) }
            return r
        }
    }

    // MARK: Spends and holds

    func spend(_ req: Credits_V1_SpendCreditsRequest, _ call: ProtoCall<Credits_V1_SpendCreditsResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        let reason = check.require(Convert.spendReason(req.reason), "reason", "is required (BOOKING, CHECK_IN, SERVICE or OTHER)", else: .other)
        let currency = ctx.currency
        core.write(call, SpendCredits(tenantId: ctx.tenantId, clientId: req.clientID, amountMinor: req.amountMinor, reason: reason,
                                      centerId: req.centerID, bookingRef: req.bookingRef, serviceCategory: nonEmpty(req.serviceCategory),
                                      membershipId: nonEmpty(req.membershipID), idempotencyKey: key), check) { out in
            spendResponse(out.spend, out.balance, currency)
        }
    }

    func createHold(_ req: Credits_V1_CreateHoldRequest, _ call: ProtoCall<Credits_V1_HoldResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        let expires = check.requiredTime(req.expireTime, "expire_time")
        let currency = ctx.currency
        core.write(call, CreateHold(tenantId: ctx.tenantId, clientId: req.clientID, amountMinor: req.amountMinor, centerId: req.centerID,
                                    bookingRef: req.bookingRef, serviceCategory: nonEmpty(req.serviceCategory),
                                    membershipId: nonEmpty(req.membershipID), expiresMicros: expires, idempotencyKey: key), check) { out in
            holdResponse(out, currency)
        }
    }

    func captureHold(_ req: Credits_V1_CaptureHoldRequest, _ call: ProtoCall<Credits_V1_HoldResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        var check = RequestCheck()
        let reason = check.require(req.reason == .unspecified ? SpendReason.booking : Convert.spendReason(req.reason),
                                   "reason", "is not a known spend reason", else: .booking)
        if req.amountMinor < 0 { check.add("amount_minor", "must not be negative (0 captures the whole hold)") }
        let currency = ctx.currency
        core.write(call, CaptureHold(tenantId: ctx.tenantId, holdId: req.holdID, amountMinor: req.amountMinor <= 0 ? nil : req.amountMinor,
                                     reason: reason, idempotencyKey: key), check) { out in holdResponse(out, currency) }
    }

    func releaseHold(_ req: Credits_V1_ReleaseHoldRequest, _ call: ProtoCall<Credits_V1_HoldResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, ReleaseHold(tenantId: ctx.tenantId, holdId: req.holdID, idempotencyKey: key)) { out in holdResponse(out, currency) }
    }

    func getHold(_ req: Credits_V1_GetHoldRequest, _ call: ProtoCall<Credits_V1_HoldResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            try requireId(req.holdID, "hold_id")
            guard let hold = try ctx.reader.hold(tenant: ctx.tenantId, id: req.holdID) else { throw LedgerError.notFound(kind: "hold", id: req.holdID) }
            let spend = try hold.spendId.flatMap { try ctx.reader.spend(tenant: ctx.tenantId, id: $0) }
            let balance = try ctx.reader.balance(tenant: ctx.tenantId, client: hold.clientId).summary
            return holdResponse(HoldResult(hold: hold, spend: spend, balance: balance), ctx.currency)
        }
    }

    func reverse(_ req: Credits_V1_ReverseSpendRequest, _ call: ProtoCall<Credits_V1_SpendCreditsResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, ReverseSpend(tenantId: ctx.tenantId, spendId: req.spendID, amountMinor: req.amountMinor, reason: req.reason,
                                      idempotencyKey: key)) { out in spendResponse(out.spend, out.balance, currency) }
    }

    func getSpend(_ req: Credits_V1_GetSpendRequest, _ call: ProtoCall<Credits_V1_SpendCreditsResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            try requireId(req.spendID, "spend_id")
            guard let spend = try ctx.reader.spend(tenant: ctx.tenantId, id: req.spendID) else { throw LedgerError.notFound(kind: "spend", id: req.spendID) }
            let balance = try ctx.reader.balance(tenant: ctx.tenantId, client: spend.clientId).summary
            return spendResponse(spend, balance, ctx.currency)
        }
    }

    // MARK: Write-offs

    func createWriteOff(_ req: Credits_V1_CreateWriteOffRequest, _ call: ProtoCall<Credits_V1_WriteOffResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, CreateWriteOff(tenantId: ctx.tenantId, clientId: req.clientID, amountMinor: req.amountMinor, reason: req.reason,
                                        idempotencyKey: key)) { out in writeOffResponse(out.writeOff, out.balance, currency) }
    }

    func voidWriteOff(_ req: Credits_V1_VoidWriteOffRequest, _ call: ProtoCall<Credits_V1_WriteOffResponse>, _ ctx: CallContext) {
        guard let key = core.idempotencyKey(req.idempotencyKey, call) else { return }
        let currency = ctx.currency
        core.write(call, VoidWriteOff(tenantId: ctx.tenantId, writeOffId: req.writeOffID, idempotencyKey: key)) { out in
            writeOffResponse(out.writeOff, out.balance, currency)
        }
    }

    func listWriteOffs(_ req: Credits_V1_ListWriteOffsRequest, _ call: ProtoCall<Credits_V1_ListWriteOffsResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            var check = RequestCheck()
            check.id(req.clientID, "client_id", required: false)
            let size = check.pageSize(req.pageSize)
            try check.finish()
            let scope = "write_offs:\(req.clientID)"
            let after = try PageToken.decode(req.pageToken, scope: scope).map { Int64($0) }
            if case .some(nil) = after { throw RPCErrorBox(RPCError.invalid("page_token", "is malformed")) }
            let rows = try ctx.reader.listWriteOffs(tenant: ctx.tenantId, clientId: nonEmpty(req.clientID), afterSeq: after ?? nil, limit: size + 1)
            var r = Credits_V1_ListWriteOffsResponse()
            r.writeOffs = rows.prefix(size).map(Convert.writeOff)
            if rows.count > size { r.nextPageToken = PageToken.encode(scope: scope, cursor: "\(rows[size - 1].seq)") }
            return r
        }
    }

    // MARK: Statement and operations

    func listEntries(_ req: Credits_V1_ListLedgerEntriesRequest, _ call: ProtoCall<Credits_V1_ListLedgerEntriesResponse>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            var check = RequestCheck()
            check.id(req.clientID, "client_id")
            let size = check.pageSize(req.pageSize)
            var query = LedgerReader.StatementQuery(tenant: ctx.tenantId, clientId: req.clientID)
            query.newestFirst = !req.oldestFirst
            query.fromMicros = check.optionalTime(req.startTime, "start_time")
            query.untilMicros = check.optionalTime(req.endTime, "end_time")
            var types: Set<EntryType> = []
            for (i, t) in req.types.enumerated() {
                guard let type = Convert.entryType(t) else {
                    check.add("types[\(i)]", "is not an entry type")
                    continue
                }
                types.insert(type)
            }
            try check.finish()
            query.types = types
            let scope = "entries:\(req.clientID):\(req.oldestFirst):\(query.fromMicros ?? 0):\(query.untilMicros ?? 0):\(types.map(\.rawValue).sorted())"
            if let cursor = try PageToken.decode(req.pageToken, scope: scope) {
                guard let seq = Int64(cursor) else { throw RPCErrorBox(RPCError.invalid("page_token", "is malformed")) }
                query.afterSeq = seq
            }
            query.limit = size + 1
            let entries = try ctx.reader.statement(query)
            var r = Credits_V1_ListLedgerEntriesResponse()
            r.entries = entries.prefix(size).map(Convert.entry)
            if entries.count > size { r.nextPageToken = PageToken.encode(scope: scope, cursor: "\(entries[size - 1].seq)") }
            return r
        }
    }

    func getOperation(_ req: Credits_V1_GetOperationRequest, _ call: ProtoCall<Credits_V1_Operation>, _ ctx: CallContext) {
        core.read(call, ctx) { ctx in
            let key = req.idempotencyKey.isEmpty ? (call.metadata["idempotency-key"] ?? "") : req.idempotencyKey
            try requireId(key, "idempotency_key")
            guard let found = try ctx.reader.idempotency(tenant: ctx.tenantId, key: key) else {
                throw LedgerError.notFound(kind: "operation", id: key)
            }
            var r = Credits_V1_Operation()
            r.idempotencyKey = key
            r.operation = found.operation
            r.resultID = found.resultId
            r.seq = found.seq
            r.createTime = Convert.timestamp(found.createdMicros)
            if let any = OperationResponses.any(operation: found.operation, reply: found.reply) { r.response = any }
            return r
        }
    }

    // MARK: Helpers

    private func spendResponse(_ spend: Spend, _ balance: BalanceSummary, _ currency: String) -> Credits_V1_SpendCreditsResponse {
        var r = Credits_V1_SpendCreditsResponse()
        r.spend = Convert.spend(spend)
        r.balance = Convert.summary(balance, currency: currency)
        return r
    }

    private func holdResponse(_ out: HoldResult, _ currency: String) -> Credits_V1_HoldResponse {
        var r = Credits_V1_HoldResponse()
        r.hold = Convert.hold(out.hold)
        r.spend = out.spend.map(Convert.spend)
        r.balance = Convert.summary(out.balance, currency: currency)
        return r
    }

    private func writeOffResponse(_ w: WriteOff, _ balance: BalanceSummary, _ currency: String) -> Credits_V1_WriteOffResponse {
        var r = Credits_V1_WriteOffResponse()
        r.writeOff = Convert.writeOff(w)
        r.balance = Convert.summary(balance, currency: currency)
        return r
    }
}

func nonEmpty(_ s: String) -> String? { s.isEmpty ? nil : s }

/// The same id rules as the ledger's, for reads.
func requireId(_ value: String, _ field: String) throws(RPCErrorBox) {
    var check = RequestCheck()
    check.id(value, field)
    try check.finish()
}
