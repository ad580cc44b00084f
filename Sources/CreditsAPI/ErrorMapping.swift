import GRPCServices
import GRPCTransport
import Ledger

/// The one place where ledger outcomes become gRPC statuses (SPEC §8:
/// 400 → INVALID_ARGUMENT, 404 → NOT_FOUND, 422 → FAILED_PRECONDITION …).
enum ErrorMapping {
    /// Any error a handler caught: ledger outcomes and API errors as they
    /// are, SQLite failures with their result code, anything else as storage.
    static func rpcError(any error: Error) -> RPCError {
        switch error {
        case let error as LedgerError: return rpcError(error)
        case let error as RPCErrorBox: return error.error
        case let error as SQLiteError: return rpcError(.storage(code: error.code, message: error.message))
        default: return rpcError(.storage(code: -1, message: "\(error)"))
        }
    }

    static func rpcError(_ error: LedgerError) -> RPCError {
        switch error {
        case .invalidArgument(let violations):
            return .invalidArgument(violations.map { RPCError.FieldViolation(field: $0.field, description: $0.description) })
        case .notFound(let kind, let id):
            return RPCError(.notFound, "\(kind) '\(id)' not found", reason: .notFound, metadata: ["kind": kind, "id": id])
        case .alreadyExists(let kind, let id):
            return RPCError(.alreadyExists, "\(kind) '\(id)' already exists", reason: .alreadyExists, metadata: ["kind": kind, "id": id])
        case .insufficientCredits(let available, let requested):
            return RPCError(.failedPrecondition, "insufficient credits: \(available) available, \(requested) requested",
                            reason: .insufficientCredits,
                            metadata: ["available_minor": "\(available)", "requested_minor": "\(requested)"])
        case .idempotencyKeyReused(let operation, let fields, let existing):
            return RPCError(.alreadyExists,
                            "idempotency key already used for a different \(operation) request (differs in: \(fields.joined(separator: ", ")))",
                            reason: .idempotencyKeyReused,
                            metadata: ["operation": operation, "differing_fields": fields.joined(separator: ","), "existing_result_id": existing])
        case .holdNotOpen(let holdId, let state):
            let reason: ErrorReason
            switch state {
            case .captured: reason = .holdAlreadyCaptured
            case .released: reason = .holdAlreadyReleased
            case .expired: reason = .holdExpired
            case .held: preconditionFailure("an open hold is not an error")
            }
            return RPCError(.failedPrecondition, "hold '\(holdId)' is \(state.rawValue)", reason: reason,
                            metadata: ["hold_id": holdId, "state": state.rawValue])
        case .captureExceedsHold(let held, let requested):
            return RPCError(.failedPrecondition, "capture of \(requested) exceeds the hold of \(held)", reason: .captureExceedsHold,
                            metadata: ["held_minor": "\(held)", "requested_minor": "\(requested)"])
        case .reversalExceedsSpend(let reversible, let requested):
            return RPCError(.failedPrecondition, "reversal of \(requested) exceeds the \(reversible) still reversible", reason: .reversalExceedsSpend,
                            metadata: ["reversible_minor": "\(reversible)", "requested_minor": "\(requested)"])
        case .writeOffVoided(let id):
            return RPCError(.failedPrecondition, "write-off '\(id)' is already voided", reason: .writeOffVoided, metadata: ["write_off_id": id])
        case .packageInactive(let id):
            return RPCError(.failedPrecondition, "package '\(id)' is not active", reason: .packageInactive, metadata: ["package_id": id])
        case .noPackageToUse(let client, let service):
            return RPCError(.failedPrecondition, "There is no package to use", reason: .noPackageToUse,
                            metadata: ["client_id": client, "service_id": service])
        case .alreadyPaid(let ref, let redemption):
            return RPCError(.failedPrecondition, "payment reference '\(ref)' is already paid", reason: .alreadyPaid,
                            metadata: ["payment_ref": ref, "redemption_id": redemption])
        case .paymentRefOtherClient(let ref):
            return RPCError(.failedPrecondition, "payment reference '\(ref)' belongs to another client", reason: .paymentRefOtherClient,
                            metadata: ["payment_ref": ref])
        case .redemptionAlreadyCancelled(let id):
            return RPCError(.failedPrecondition, "redemption '\(id)' is already cancelled", reason: .redemptionAlreadyCancelled,
                            metadata: ["redemption_id": id])
        case .clientPackageInactive(let id):
            return RPCError(.failedPrecondition, "client package '\(id)' is not active", reason: .clientPackageInactive,
                            metadata: ["client_package_id": id])
        case .couponInactive(let id):
            return RPCError(.failedPrecondition, "coupon '\(id)' is not active", reason: .couponInactive, metadata: ["coupon_id": id])
        case .creditRevoked(let id):
            return RPCError(.failedPrecondition, "customer credit '\(id)' is revoked", reason: .creditRevoked, metadata: ["credit_id": id])
        case .creditExpired(let id, let expires):
            return RPCError(.failedPrecondition, "customer credit '\(id)' is expired", reason: .creditExpired,
                            metadata: ["credit_id": id, "expire_time_micros": "\(expires)"])
        case .creditExhausted(let id, let maxUses):
            return RPCError(.failedPrecondition, "customer credit '\(id)' has no use left (all \(maxUses) redeemed)", reason: .creditExhausted,
                            metadata: ["credit_id": id, "max_uses": "\(maxUses)"])
        case .creditAlreadyRedeemed(let id, let uses):
            return RPCError(.failedPrecondition, "customer credit '\(id)' has \(uses) use(s) redeemed and cannot be revoked",
                            reason: .creditAlreadyRedeemed, metadata: ["credit_id": id, "uses_redeemed": "\(uses)"])
        case .amountOutOfRange(let field):
            return RPCError(.outOfRange, "\(field) is out of range", reason: .outOfRange, metadata: ["field": field])
        case .tooManyLots(let limit):
            return RPCError(.resourceExhausted, "the draw would touch more than \(limit) lots", reason: .tooManyLots)
        case .deadlineExceeded:
            return RPCError(.deadlineExceeded, "deadline passed before the write was applied; nothing changed", reason: .deadlineExceeded)
        case .withdrawn:
            return RPCError(.cancelled, "the call ended before the write was applied; nothing changed", reason: .cancelled)
        case .inconsistent:
            // The details (ids, amounts) go to the operator's verify, not to the caller.
            return RPCError(.dataLoss, "the ledger's records for this read do not add up; nothing was changed (run credits verify)",
                            reason: .ledgerInconsistent)
        case .overloaded(let limit):
            return RPCError(.unavailable, "write queue full (\(limit)); retry with the same idempotency key", reason: .overloaded)
        case .unavailable:
            return RPCError(.unavailable, "the ledger is shutting down", reason: .unavailable)
        case .storage(let code, _):
            // The SQLite message may name tables or values: keep it in logs only.
            switch error.storageProblem {
            case .diskFull?:
                return RPCError(.unavailable, "disk full: the write was not applied; retry later with the same idempotency key",
                                reason: .storageFull)
            case .notWritable?:
                return RPCError(.unavailable, "the database file is read-only, moved or missing: the write was not applied; retry later with the same idempotency key",
                                reason: .storageUnavailable)
            case .ioError?:
                return RPCError(.unavailable, "storage I/O error: the write was not applied; retry later with the same idempotency key",
                                reason: .storageUnavailable)
            case nil:
                return RPCError(.internalError, "storage failure (SQLite \(code))", reason: .storage)
            }
        }
    }
}
