import CreditsProto
import Ledger

/// Ledger domain values → credits.v1 messages.
enum Convert {
    static func timestamp(_ micros: Int64) -> Google_Protobuf_Timestamp {
        var ts = Google_Protobuf_Timestamp()
        ts.seconds = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
        ts.nanos = Int32((micros - ts.seconds * 1_000_000) * 1_000)
        return ts
    }

    /// Timestamp → micros, or nil if out of the range we accept (years 1970–9999).
    static func micros(_ ts: Google_Protobuf_Timestamp) -> Int64? {
        guard ts.seconds >= 0, ts.seconds < 253_402_300_800, ts.nanos >= 0, ts.nanos < 1_000_000_000 else { return nil }
        return ts.seconds * 1_000_000 + Int64(ts.nanos) / 1_000
    }

    static func summary(_ s: BalanceSummary, currency: String) -> Credits_V1_BalanceSummary {
        var m = Credits_V1_BalanceSummary()
        m.clientID = s.clientId
        m.availableMinor = s.availableMinor
        m.heldMinor = s.heldMinor
        m.totalMinor = s.totalMinor
        m.seq = s.seq
        m.currency = currency
        return m
    }

    static func scope(_ s: Scope) -> Credits_V1_Scope {
        var m = Credits_V1_Scope()
        m.serviceCategories = s.serviceCategories
        m.centers = s.centers
        m.membershipIds = s.membershipIds
        return m
    }

    static func scope(_ m: Credits_V1_Scope?) -> Scope {
        guard let m else { return .any }
        return Scope(serviceCategories: m.serviceCategories, centers: m.centers, membershipIds: m.membershipIds)
    }

    static func allocation(_ a: Allocation) -> Credits_V1_Allocation {
        var m = Credits_V1_Allocation()
        m.lotID = a.lotId
        m.remainingDeltaMinor = a.remainingDeltaMinor
        m.heldDeltaMinor = a.heldDeltaMinor
        return m
    }

    static func lot(_ l: Lot) -> Credits_V1_Lot {
        var m = Credits_V1_Lot()
        m.id = l.id
        m.clientID = l.clientId
        switch l.origin {
        case .purchase: m.origin = .purchase
        case .order: m.origin = .order
        case .adjustment: m.origin = .adjustment
        case .import: m.origin = .import
        }
        m.centerID = l.centerId
        m.amountMinor = l.amountMinor
        m.remainingMinor = l.remainingMinor
        m.heldMinor = l.heldMinor
        m.validFrom = l.validFromMicros.map(timestamp)
        m.validUntil = l.validUntilMicros.map(timestamp)
        m.scope = scope(l.scope)
        m.packageID = l.packageId ?? ""
        m.paymentRef = l.paymentRef ?? ""
        m.priceMinor = l.priceMinor
        m.note = l.note
        switch l.state {
        case .active: m.state = .active
        case .exhausted: m.state = .exhausted
        case .expired: m.state = .expired
        }
        m.createdSeq = l.createdSeq
        m.createTime = timestamp(l.createdMicros)
        return m
    }

    static let entryTypes: [(EntryType, Credits_V1_EntryType)] = [
        (.purchase, .purchase), (.order, .order), (.adjustment, .adjustment), (.spend, .spend), (.hold, .hold),
        (.capture, .capture), (.release, .release), (.reversal, .reversal), (.expiry, .expiry), (.writeOff, .writeOff),
        (.writeOffVoid, .writeOffVoid), (.import, .import),
        (.couponIssue, .couponIssue), (.couponRedeem, .couponRedeem), (.couponRedemptionCancel, .couponRedemptionCancel),
        (.couponRevoke, .couponRevoke), (.couponExpiry, .couponExpiry), (.revenueAllocation, .revenueAllocation),
        (.sessionGrant, .sessionGrant), (.sessionUse, .sessionUse), (.sessionReturn, .sessionReturn), (.sessionForfeit, .sessionForfeit),
    ]

    /// A balance snapshot; lots, centers and holds only with `details`.
    static func balance(_ snapshot: BalanceSnapshot, currency: String, details: Bool) -> Credits_V1_Balance {
        var r = Credits_V1_Balance()
        r.summary = summary(snapshot.summary, currency: currency)
        r.pendingExpiryMinor = snapshot.pendingExpiryMinor
        if details {
            r.lots = snapshot.lots.map(lot)
            r.centers = snapshot.centers.map {
                var c = Credits_V1_CenterBalance()
                c.centerID = $0.centerId
                c.remainingMinor = $0.remainingMinor
                return c
            }
            r.openHolds = snapshot.openHolds.map(hold)
        }
        return r
    }

    static func entryType(_ t: EntryType) -> Credits_V1_EntryType {
        entryTypes.first { $0.0 == t }!.1
    }

    static func entryType(_ t: Credits_V1_EntryType) -> EntryType? {
        entryTypes.first { $0.1 == t }?.0
    }

    static func entry(_ e: LedgerEntry) -> Credits_V1_LedgerEntry {
        var m = Credits_V1_LedgerEntry()
        m.seq = e.seq
        m.type = entryType(e.type)
        m.clientID = e.clientId
        m.amountMinor = e.amountMinor
        m.debitAccount = e.debitAccount
        m.creditAccount = e.creditAccount
        m.availableAfterMinor = e.availableAfterMinor
        m.heldAfterMinor = e.heldAfterMinor
        m.time = timestamp(e.timeMicros)
        m.refID = e.refId
        m.centerID = e.centerId
        m.bookingRef = e.bookingRef
        m.paymentRef = e.paymentRef
        m.idempotencyKey = e.idempotencyKey
        m.reason = e.reason
        m.note = e.note
        m.allocations = e.allocations.map(allocation)
        return m
    }

    static func spendReason(_ r: SpendReason) -> Credits_V1_SpendReason {
        switch r {
        case .booking: return .booking
        case .checkIn: return .checkIn
        case .service: return .service
        case .other: return .other
        }
    }

    static func spendReason(_ r: Credits_V1_SpendReason) -> SpendReason? {
        switch r {
        case .booking: return .booking
        case .checkIn: return .checkIn
        case .service: return .service
        case .other: return .other
        default: return nil
        }
    }

    static func spend(_ s: Spend) -> Credits_V1_Spend {
        var m = Credits_V1_Spend()
        m.id = s.id
        m.clientID = s.clientId
        m.amountMinor = s.amountMinor
        m.reversedMinor = s.reversedMinor
        m.reason = spendReason(s.reason)
        m.centerID = s.centerId
        m.bookingRef = s.bookingRef
        m.serviceCategory = s.serviceCategory ?? ""
        m.holdID = s.holdId ?? ""
        m.seq = s.seq
        m.createTime = timestamp(s.createdMicros)
        m.allocations = s.allocations.map(allocation)
        return m
    }

    static func hold(_ h: Hold) -> Credits_V1_Hold {
        var m = Credits_V1_Hold()
        m.id = h.id
        m.clientID = h.clientId
        m.amountMinor = h.amountMinor
        m.capturedMinor = h.capturedMinor
        switch h.state {
        case .held: m.state = .held
        case .captured: m.state = .captured
        case .released: m.state = .released
        case .expired: m.state = .expired
        }
        m.expireTime = timestamp(h.expiresMicros)
        m.centerID = h.centerId
        m.bookingRef = h.bookingRef
        m.serviceCategory = h.serviceCategory ?? ""
        m.membershipID = h.membershipId ?? ""
        m.seq = h.seq
        m.createTime = timestamp(h.createdMicros)
        m.spendID = h.spendId ?? ""
        m.allocations = h.allocations.map(allocation)
        return m
    }

    static func writeOff(_ w: WriteOff) -> Credits_V1_WriteOff {
        var m = Credits_V1_WriteOff()
        m.id = w.id
        m.clientID = w.clientId
        m.amountMinor = w.amountMinor
        m.reason = w.reason
        m.state = w.state == .active ? .active : .voided
        m.seq = w.seq
        m.voidSeq = w.voidSeq ?? 0
        m.createTime = timestamp(w.createdMicros)
        m.allocations = w.allocations.map(allocation)
        return m
    }

    static func package(_ p: CreditPackage, currency: String) -> Credits_V1_CreditPackage {
        var m = Credits_V1_CreditPackage()
        m.id = p.id
        m.name = p.name
        m.creditsMinor = p.creditsMinor
        m.priceMinor = p.priceMinor
        m.validityDays = p.validityDays ?? 0
        m.scope = scope(p.scope)
        m.active = p.active
        m.currency = currency
        m.createTime = timestamp(p.createdMicros)
        m.updateTime = timestamp(p.updatedMicros)
        return m
    }

    static func tenant(_ t: Tenant) -> Credits_V1_Tenant {
        var m = Credits_V1_Tenant()
        m.id = t.id
        m.name = t.name
        m.currency = t.currency
        m.allowDirectory = t.allowDirectory
        m.lastSeq = t.lastSeq
        m.createTime = timestamp(t.createdMicros)
        return m
    }

    static func apiKey(_ k: APIKeyRecord) -> Credits_V1_ApiKey {
        var m = Credits_V1_ApiKey()
        m.id = k.id
        m.tenantID = k.tenantId ?? ""
        switch k.role {
        case .staff: m.role = .staff
        case .app: m.role = .app
        case .directory: m.role = .directory
        }
        m.label = k.label
        m.createTime = timestamp(k.createdMicros)
        m.revokeTime = k.revokedMicros.map(timestamp)
        return m
    }
}
