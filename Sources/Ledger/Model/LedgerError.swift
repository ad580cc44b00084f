/// Domain outcomes and failures of ledger commands and reads. Each case carries
/// data, never a string to parse; the API layer maps them to gRPC statuses in
/// one place.
public enum LedgerError: Error, Equatable, Sendable {
    public struct FieldViolation: Sendable, Equatable {
        public var field: String
        public var description: String
        public init(_ field: String, _ description: String) {
            self.field = field
            self.description = description
        }
    }

    /// Bad input; nothing was changed.
    case invalidArgument([FieldViolation])
    /// `kind` ("client", "hold", "package", …) with `id` does not exist in the tenant.
    case notFound(kind: String, id: String)
    /// The resource exists already (e.g. a tenant id).
    case alreadyExists(kind: String, id: String)
    /// Not enough eligible available credit.
    case insufficientCredits(availableMinor: Int64, requestedMinor: Int64)
    /// The idempotency key was used for a different request.
    case idempotencyKeyReused(operation: String, differingFields: [String], existingResultId: String)
    /// The hold is no longer open (captured, released or expired).
    case holdNotOpen(holdId: String, state: HoldState)
    case captureExceedsHold(heldMinor: Int64, requestedMinor: Int64)
    case reversalExceedsSpend(reversibleMinor: Int64, requestedMinor: Int64)
    case writeOffVoided(writeOffId: String)
    case packageInactive(packageId: String)
    /// No client package is eligible for the use (SPEC §5: "There is no package to use").
    case noPackageToUse(clientId: String, serviceId: String)
    /// The payment reference is paid already (by `redemptionId`).
    case alreadyPaid(paymentRef: String, redemptionId: String)
    /// The payment reference belongs to another client.
    case paymentRefOtherClient(paymentRef: String)
    /// The package redemption was cancelled already.
    case redemptionAlreadyCancelled(redemptionId: String)
    /// The client package is deactivated already.
    case clientPackageInactive(clientPackageId: String)
    /// The coupon is deactivated: no credits are issued from it.
    case couponInactive(couponId: String)
    /// The customer credit was revoked (redeem or revoke of a revoked credit).
    case creditRevoked(creditId: String)
    /// The customer credit is at or past its expiry time.
    case creditExpired(creditId: String, expiresMicros: Int64)
    /// The customer credit has no use left (every use redeemed).
    case creditExhausted(creditId: String, maxUses: Int32)
    /// Revoke refused: the credit has uses redeemed (and not cancelled).
    case creditAlreadyRedeemed(creditId: String, usesRedeemed: Int32)
    /// A balance or amount would leave the representable range.
    case amountOutOfRange(field: String)
    /// More lots than one draw may touch.
    case tooManyLots(limit: Int)
    /// The command's deadline passed before it was applied; nothing changed.
    case deadlineExceeded
    /// The caller withdrew the write (stream cancelled, deadline) before the
    /// writer took it; nothing changed.
    case withdrawn
    /// Stored records that must agree do not (a read found it; nothing was
    /// changed): `credits verify` names what is wrong.
    case inconsistent(String)
    /// The write queue is full; retry later.
    case overloaded(queueLimit: Int)
    /// The ledger is shutting down.
    case unavailable
    /// The store failed (SQLite result code kept).
    case storage(code: Int32, message: String)
}

/// Why the store cannot write now; writes fail with `.storage` and change
/// nothing until it is fixed (the ledger recovers by itself).
public enum StorageProblem: Sendable, Equatable {
    /// SQLITE_FULL: the disk (or its quota) is full.
    case diskFull
    /// SQLITE_READONLY or SQLITE_CANTOPEN: the file became read-only, was
    /// moved or removed, or its directory is not writable.
    case notWritable
    /// SQLITE_IOERR: the operating system failed a read or write.
    case ioError
}

extension LedgerError {
    /// The storage problem behind a `.storage` failure, if it is one that
    /// goes away when the machine is fixed (nil for other failures).
    public var storageProblem: StorageProblem? {
        guard case .storage(let code, _) = self else { return nil }
        switch code & 0xFF {
        case 13: return .diskFull  // SQLITE_FULL
        case 8, 14: return .notWritable  // SQLITE_READONLY, SQLITE_CANTOPEN
        case 10: return .ioError  // SQLITE_IOERR
        default: return nil
        }
    }

    static func invalid(_ field: String, _ description: String) -> LedgerError {
        .invalidArgument([FieldViolation(field, description)])
    }

    static func from(_ error: Error) -> LedgerError {
        if let ledgerError = error as? LedgerError { return ledgerError }
        if let sqlite = error as? SQLiteError { return .storage(code: sqlite.code, message: sqlite.message) }
        return .storage(code: -1, message: "\(error)")
    }
}
