import CreditsProto
import Ledger

/// The response message each idempotent write stores (and replays), by the
/// ledger command's `operation`: GetOperation returns the stored reply as a
/// `google.protobuf.Any` of this type. `APICore.write` checks every write
/// against it, so a handler answering with another type fails in tests.
enum OperationResponses {
    static let messageName: [String: String] = [
        PurchasePackage.operation: Credits_V1_PurchaseCreditPackageResponse.protoMessageName,
        CreateCreditOrder.operation: Credits_V1_CreateCreditOrderResponse.protoMessageName,
        AdjustBalance.operation: Credits_V1_AdjustBalanceResponse.protoMessageName,
        SpendCredits.operation: Credits_V1_SpendCreditsResponse.protoMessageName,
        CreateHold.operation: Credits_V1_HoldResponse.protoMessageName,
        CaptureHold.operation: Credits_V1_HoldResponse.protoMessageName,
        ReleaseHold.operation: Credits_V1_HoldResponse.protoMessageName,
        ReverseSpend.operation: Credits_V1_SpendCreditsResponse.protoMessageName,
        CreateWriteOff.operation: Credits_V1_WriteOffResponse.protoMessageName,
        VoidWriteOff.operation: Credits_V1_WriteOffResponse.protoMessageName,
        CreatePackage.operation: Credits_V1_CreditPackage.protoMessageName,
        UpdatePackage.operation: Credits_V1_CreditPackage.protoMessageName,
        CreateCoupon.operation: Credits_V1_Coupon.protoMessageName,
        DeactivateCoupon.operation: Credits_V1_Coupon.protoMessageName,
        IssueCustomerCredit.operation: Credits_V1_CustomerCreditResponse.protoMessageName,
        RevokeCustomerCredit.operation: Credits_V1_CustomerCreditResponse.protoMessageName,
        RedeemCustomerCredit.operation: Credits_V1_RedemptionResponse.protoMessageName,
        CancelCreditRedemption.operation: Credits_V1_RedemptionResponse.protoMessageName,
        CreateMembershipCreditRule.operation: Credits_V1_MembershipCreditRule.protoMessageName,
        DisableMembershipCreditRule.operation: Credits_V1_MembershipCreditRule.protoMessageName,
        CreateClientPackage.operation: Credits_V1_ClientPackageResponse.protoMessageName,
        DeactivateClientPackage.operation: Credits_V1_ClientPackageResponse.protoMessageName,
        UsePackageCredit.operation: Credits_V1_PackageRedemptionResponse.protoMessageName,
        CancelPackageRedemption.operation: Credits_V1_PackageRedemptionResponse.protoMessageName,
    ]

    /// The stored reply of `operation` as an Any (type URL
    /// `type.googleapis.com/credits.v1.<Message>`); nil when the operation
    /// stores no reply (ImportLots records: each record's outcome is in the
    /// ImportLots response).
    static func any(operation: String, reply: [UInt8]) -> Google_Protobuf_Any? {
        guard let name = messageName[operation] else { return nil }
        var any = Google_Protobuf_Any()
        any.typeURL = Google_Protobuf_Any.defaultTypeURLPrefix + "/" + name
        any.value = reply
        return any
    }
}
