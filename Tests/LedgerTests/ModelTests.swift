import Testing
@testable import Ledger

/// The money model as plain function calls: no SQLite, no clock, no writer.

private let day: Int64 = 86_400 * 1_000_000
private let t0: Int64 = 1_800_000_000_000_000

private func lot(_ id: String, _ amount: Int64, remaining: Int64? = nil, held: Int64 = 0, until: Int64? = nil, from: Int64? = nil,
                 seq: Int64, scope: Scope = .any, state: LotState = .active, client: String = "c1") -> Lot {
    Lot(id: id, clientId: client, origin: .order, centerId: "c1", amountMinor: amount, remainingMinor: remaining ?? amount, heldMinor: held,
        validFromMicros: from, validUntilMicros: until, scope: scope, packageId: nil, paymentRef: nil, priceMinor: amount, note: "",
        createdSeq: seq, createdMicros: t0, state: state)
}

private func take(_ id: String, _ minor: Int64) -> Allocation { Allocation(lotId: id, remainingDeltaMinor: -minor, heldDeltaMinor: 0) }
private func pin(_ id: String, _ minor: Int64) -> Allocation { Allocation(lotId: id, remainingDeltaMinor: 0, heldDeltaMinor: minor) }
private func give(_ id: String, _ minor: Int64) -> Allocation { Allocation(lotId: id, remainingDeltaMinor: minor, heldDeltaMinor: 0) }

@Suite struct ModelDrawTests {
    @Test func drawOrderIsSoonestExpiryThenOldestWithNoExpiryLast() {
        let lots = [lot("never-old", 100, seq: 1), lot("late", 100, until: t0 + 9 * day, seq: 2),
                    lot("soon-new", 100, until: t0 + day, seq: 4), lot("soon-old", 100, until: t0 + day, seq: 3),
                    lot("never-new", 100, seq: 5)]
        #expect(lots.sorted(by: Draws.precedes).map(\.id) == ["soon-old", "soon-new", "late", "never-old", "never-new"])
        #expect(!Draws.precedes(lots[0], lots[0]))
    }

    @Test func eligibleDropsUsedInvalidAndOutOfScopeLots() {
        let lots = [lot("due", 100, until: t0, seq: 1),                                   // valid_until reached
                    lot("gym", 100, until: t0 + day, seq: 2, scope: Scope(centers: ["c2"])),
                    lot("spa", 100, until: t0 + day, seq: 3, scope: Scope(serviceCategories: ["spa"])),
                    lot("used", 100, remaining: 40, held: 40, until: t0 + day, seq: 4),  // nothing free
                    lot("future", 100, from: t0 + 1, seq: 5),                             // not valid yet
                    lot("member", 100, seq: 6, scope: Scope(membershipIds: ["m1"])),
                    lot("any", 100, seq: 7)]
        #expect(Draws.eligible(lots, now: t0, centerId: "c1", serviceCategory: nil, membershipId: nil).map(\.id) == ["any"])
        #expect(Draws.eligible(lots, now: t0, centerId: "c1", serviceCategory: "spa", membershipId: "m1").map(\.id) == ["spa", "member", "any"])
        #expect(Draws.eligible(lots, now: t0, centerId: "c2", serviceCategory: nil, membershipId: nil).map(\.id) == ["gym", "any"])
        // No center: any valid lot with free credit, whatever its scope (write-offs, negative adjustments).
        #expect(Draws.eligible(lots, now: t0, centerId: nil, serviceCategory: nil, membershipId: nil).map(\.id) == ["gym", "spa", "member", "any"])
        #expect(Draws.isDue(lots[0], now: t0) && !Draws.isDue(lots[1], now: t0) && !Draws.isDue(lots[6], now: t0))
    }

    @Test func drawTakesFreeCreditInOrderAndHoldsPin() throws {
        let lots = [lot("a", 100, remaining: 60, held: 20, until: t0 + day, seq: 1), lot("b", 100, seq: 2), lot("c", 100, seq: 3)]
        #expect(try Draws.draw(40, from: lots, hold: false) == [take("a", 40)])
        #expect(try Draws.draw(90, from: lots, hold: false) == [take("a", 40), take("b", 50)])
        #expect(try Draws.draw(240, from: lots, hold: true) == [pin("a", 40), pin("b", 100), pin("c", 100)])
    }

    @Test func drawShortOfCreditThrowsWithWhatIsFree() {
        let lots = [lot("a", 100, remaining: 60, held: 20, seq: 1), lot("b", 50, seq: 2)]
        #expect(throws: LedgerError.insufficientCredits(availableMinor: 90, requestedMinor: 91)) {
            try Draws.draw(91, from: lots, hold: false)
        }
        #expect(throws: LedgerError.insufficientCredits(availableMinor: 0, requestedMinor: 1)) {
            try Draws.draw(1, from: [], hold: true)
        }
    }
}

@Suite struct ModelLotTests {
    @Test func stateFollowsRemainingAndExpiredStaysExpired() {
        #expect(LotRules.state(after: .active, remainingMinor: 0) == .exhausted)
        #expect(LotRules.state(after: .exhausted, remainingMinor: 5) == .active)
        #expect(LotRules.state(after: .expired, remainingMinor: 0) == .expired)
        #expect(LotRules.state(after: .expired, remainingMinor: 5) == .expired)
    }

    @Test func applyingAnAllocationMovesAmountsAndState() {
        let a = lot("a", 100, remaining: 30, held: 10, seq: 1)
        let spent = LotRules.applying(take("a", 20), to: a)
        #expect(spent.remainingMinor == 10 && spent.heldMinor == 10 && spent.state == .active)
        let captured = LotRules.applying(Allocation(lotId: "a", remainingDeltaMinor: -10, heldDeltaMinor: -10), to: spent)
        #expect(captured.remainingMinor == 0 && captured.heldMinor == 0 && captured.state == .exhausted)
        let refunded = LotRules.applying(give("a", 100), to: captured)
        #expect(refunded.remainingMinor == 100 && refunded.state == .active)
    }

    @Test func aLotNeverGoesBelowZeroOrAboveItsAmount() async {
        await #expect(processExitsWith: .failure) {
            _ = LotRules.applying(Allocation(lotId: "a", remainingDeltaMinor: 1, heldDeltaMinor: 0), to: lot("a", 100, seq: 1))
        }
        await #expect(processExitsWith: .failure) {
            _ = LotRules.applying(Allocation(lotId: "a", remainingDeltaMinor: -101, heldDeltaMinor: 0), to: lot("a", 100, seq: 1))
        }
        await #expect(processExitsWith: .failure) {
            // Held above remaining.
            _ = LotRules.applying(Allocation(lotId: "a", remainingDeltaMinor: 0, heldDeltaMinor: 31), to: lot("a", 100, remaining: 30, seq: 1))
        }
    }

    @Test func expiryWritesOffTheFreePartAndKeepsWhatIsHeld() {
        let free = ExpiryPlan.of(lot("a", 100, remaining: 70, seq: 1, state: .active))
        #expect(free.allocation == take("a", 70) && free.amountMinor == 70 && free.marksExpired)
        let pinned = ExpiryPlan.of(lot("a", 100, remaining: 70, held: 30, seq: 1))
        #expect(pinned.allocation == take("a", 40) && !pinned.marksExpired)
        let allHeld = ExpiryPlan.of(lot("a", 100, remaining: 30, held: 30, seq: 1))
        #expect(allHeld.allocation == nil && allHeld.amountMinor == 0 && !allHeld.marksExpired)
        #expect(EntryPlans.expiry(of: lot("a", 100, remaining: 30, held: 30, seq: 1)) == nil)
        let entry = EntryPlans.expiry(of: lot("a", 100, remaining: 70, held: 30, seq: 1))
        #expect(entry?.type == .expiry && entry?.amountMinor == 40 && entry?.debit == Account.available("c1") && entry?.credit == Account.breakage)
    }

    @Test func settlingTouchesOnlyDueLotsWithSomethingToDo() {
        #expect(ExpiryPlan.needsSettling(lot("a", 100, remaining: 10, until: t0, seq: 1), now: t0))
        #expect(!ExpiryPlan.needsSettling(lot("a", 100, remaining: 10, until: t0 + 1, seq: 1), now: t0))
        // Exhausted while held, now released to nothing held: becomes expired.
        #expect(ExpiryPlan.needsSettling(lot("a", 100, remaining: 0, until: t0, seq: 1, state: .active), now: t0))
        // Already expired with nothing free: nothing to do.
        #expect(!ExpiryPlan.needsSettling(lot("a", 100, remaining: 0, until: t0, seq: 1, state: .expired), now: t0))
        #expect(!ExpiryPlan.needsSettling(lot("a", 100, remaining: 20, held: 20, until: t0, seq: 1, state: .active), now: t0))
    }
}

@Suite struct ModelSplitTests {
    private let pins = [Splits.Pin(lot: lot("a", 100, held: 30, until: t0 + day, seq: 1), heldMinor: 30),
                        Splits.Pin(lot: lot("b", 100, held: 50, seq: 2), heldMinor: 50)]

    @Test func captureOrderIsTheDrawOrder() {
        #expect(Splits.captureOrder(pins.reversed()).map(\.lot.id) == ["a", "b"])
    }

    @Test func wholeCaptureTakesEveryPin() {
        let split = Splits.capture(80, pins: pins)
        #expect(split.capture == [Allocation(lotId: "a", remainingDeltaMinor: -30, heldDeltaMinor: -30),
                                  Allocation(lotId: "b", remainingDeltaMinor: -50, heldDeltaMinor: -50)])
        #expect(split.release.isEmpty)
    }

    @Test func partialCaptureTakesSoonestFirstAndReleasesTheRest() {
        let split = Splits.capture(40, pins: pins)
        #expect(split.capture == [Allocation(lotId: "a", remainingDeltaMinor: -30, heldDeltaMinor: -30),
                                  Allocation(lotId: "b", remainingDeltaMinor: -10, heldDeltaMinor: -10)])
        #expect(split.release == [Allocation(lotId: "b", remainingDeltaMinor: 0, heldDeltaMinor: -40)])
        let small = Splits.capture(10, pins: pins)
        #expect(small.capture == [Allocation(lotId: "a", remainingDeltaMinor: -10, heldDeltaMinor: -10)])
        #expect(small.release == [Allocation(lotId: "a", remainingDeltaMinor: 0, heldDeltaMinor: -20),
                                  Allocation(lotId: "b", remainingDeltaMinor: 0, heldDeltaMinor: -50)])
    }

    @Test func captureAboveTheHoldIsAProgrammerError() async {
        await #expect(processExitsWith: .failure) {
            _ = Splits.capture(81, pins: [Splits.Pin(lot: lot("a", 100, held: 80, seq: 1), heldMinor: 80)])
        }
    }

    @Test func releaseFreesEveryPin() {
        #expect(Splits.release(pins: pins) == [Allocation(lotId: "a", remainingDeltaMinor: 0, heldDeltaMinor: -30),
                                               Allocation(lotId: "b", remainingDeltaMinor: 0, heldDeltaMinor: -50)])
    }

    @Test func returnsGoToTheMostRecentlyDrawnLotFirst() {
        let owed = [Splits.Owed(lotId: "a", minor: 30), Splits.Owed(lotId: "b", minor: 0), Splits.Owed(lotId: "c", minor: 20)]
        #expect(Splits.returning(15, owed: owed) == [give("c", 15)])
        #expect(Splits.returning(45, owed: owed) == [give("c", 20), give("a", 25)])
        #expect(Splits.returning(50, owed: owed) == [give("c", 20), give("a", 30)])
    }

    @Test func returningMoreThanOwedIsAProgrammerError() async {
        await #expect(processExitsWith: .failure) {
            _ = Splits.returning(51, owed: [Splits.Owed(lotId: "a", minor: 30), Splits.Owed(lotId: "c", minor: 20)])
        }
    }
}

@Suite struct ModelEntryPlanTests {
    private let hold = Hold(id: "h1", clientId: "c1", amountMinor: 80, capturedMinor: 0, state: .held, expiresMicros: t0 + day, centerId: "c1",
                            bookingRef: "b1", serviceCategory: nil, membershipId: nil, seq: 3, createdMicros: t0, spendId: nil, allocations: [])
    private let pins = [Splits.Pin(lot: lot("a", 100, held: 30, until: t0 + day, seq: 1), heldMinor: 30),
                        Splits.Pin(lot: lot("b", 100, held: 50, seq: 2), heldMinor: 50)]

    @Test func fundingASpendAndAHoldMoveTheRightAccounts() {
        let fund = EntryPlans.fundLot(type: .purchase, clientId: "c1", lotId: "l1", amountMinor: 500, fundingAccount: Account.purchases,
                                      centerId: "c1", paymentRef: "p1", idempotencyKey: "k", reason: "purchase", note: "")
        #expect(fund.clientDeltas == (500, 0) && fund.allocations == [give("l1", 500)])
        #expect(fund.systemDeltas.map(\.account) == [Account.purchases] && fund.systemDeltas.map(\.deltaMinor) == [-500])
        let spend = EntryPlans.spend(clientId: "c1", spendId: "s1", amountMinor: 70, reason: .booking, centerId: "c1", bookingRef: "b",
                                     idempotencyKey: "k", allocations: [take("a", 30), take("b", 40)])
        #expect(spend.type == .spend && spend.clientDeltas == (-70, 0) && spend.credit == Account.consumption && spend.refId == "s1")
        let held = EntryPlans.hold(clientId: "c1", holdId: "h1", amountMinor: 80, centerId: "c1", bookingRef: "b", idempotencyKey: "k",
                                   allocations: [pin("a", 30), pin("b", 50)])
        #expect(held.clientDeltas == (-80, 80) && held.systemDeltas.isEmpty)
    }

    @Test func aPartialCapturePlansTheSpendThenTheRelease() {
        let plans = EntryPlans.capture(hold: hold, spendId: "s9", captureMinor: 50, reason: .checkIn, idempotencyKey: "k", pins: pins)
        #expect(plans.map(\.type) == [.capture, .release])
        #expect(plans[0].refId == "s9" && plans[0].amountMinor == 50 && plans[0].clientDeltas == (0, -50))
        #expect(plans[1].refId == "h1" && plans[1].amountMinor == 30 && plans[1].clientDeltas == (30, -30) && plans[1].reason == "partial_capture")
        let whole = EntryPlans.capture(hold: hold, spendId: "s9", captureMinor: 80, reason: .checkIn, idempotencyKey: "k", pins: pins)
        #expect(whole.map(\.type) == [.capture])
        let release = EntryPlans.release(hold: hold, automatic: true, idempotencyKey: "", pins: pins)
        #expect(release.reason == "hold_expired" && release.clientDeltas == (80, -80))
    }

    @Test func reversalsAndVoidsReturnCreditAndRefuseTooMuch() throws {
        var spend = Spend(id: "s1", clientId: "c1", amountMinor: 70, reversedMinor: 20, reason: .booking, centerId: "c1", bookingRef: "b",
                          serviceCategory: nil, holdId: nil, seq: 4, createdMicros: t0, allocations: [])
        let owed = [Splits.Owed(lotId: "a", minor: 30), Splits.Owed(lotId: "b", minor: 20)]
        let plan = try EntryPlans.reversal(spend: spend, amountMinor: 50, reason: "refund", idempotencyKey: "k", owed: owed)
        #expect(plan.allocations == [give("b", 20), give("a", 30)] && plan.clientDeltas == (50, 0) && plan.debit == Account.consumption)
        #expect(throws: LedgerError.reversalExceedsSpend(reversibleMinor: 50, requestedMinor: 51)) {
            try EntryPlans.reversal(spend: spend, amountMinor: 51, reason: "refund", idempotencyKey: "k", owed: owed)
        }
        spend.reversedMinor = 70
        #expect(throws: LedgerError.reversalExceedsSpend(reversibleMinor: 0, requestedMinor: 1)) {
            try EntryPlans.reversal(spend: spend, amountMinor: 1, reason: "refund", idempotencyKey: "k", owed: owed)
        }

        var writeOff = WriteOff(id: "w1", clientId: "c1", amountMinor: 50, reason: "bad debt", state: .active, seq: 5, voidSeq: nil,
                                createdMicros: t0, allocations: [])
        let void = try EntryPlans.voidWriteOff(writeOff, idempotencyKey: "k", owed: owed)
        #expect(void.type == .writeOffVoid && void.debit == Account.writeOffs && void.allocations == [give("b", 20), give("a", 30)])
        writeOff.state = .voided
        #expect(throws: LedgerError.writeOffVoided(writeOffId: "w1")) { try EntryPlans.voidWriteOff(writeOff, idempotencyKey: "k", owed: owed) }
        let off = EntryPlans.writeOff(clientId: "c1", writeOffId: "w2", amountMinor: 10, reason: "r", idempotencyKey: "k", allocations: [take("a", 10)])
        #expect(off.credit == Account.writeOffs && off.clientDeltas == (-10, 0))
        let adjust = EntryPlans.negativeAdjustment(clientId: "c1", adjustmentId: "j1", amountMinor: 10, centerId: "c1", reason: "r",
                                                   idempotencyKey: "k", allocations: [take("a", 10)])
        #expect(adjust.type == .adjustment && adjust.credit == Account.adjustments)
    }

    @Test func entriesWithoutClientAccountsNeedNoAllocations() {
        let coupon = EntryPlan(type: .couponRedeem, clientId: "c1", amountMinor: 1, debit: "coupon:c1:uses", credit: "coupon:redeemed", refId: "r")
        #expect(coupon.clientDeltas == (0, 0) && coupon.systemDeltas.count == 2)
    }

    @Test func allocationsThatDoNotExplainTheMovementAreRefused() async {
        await #expect(processExitsWith: .failure) {  // spends 70, allocations take 60
            _ = EntryPlans.spend(clientId: "c1", spendId: "s1", amountMinor: 70, reason: .booking, centerId: "c1", bookingRef: "b",
                                 idempotencyKey: "k", allocations: [take("a", 60)])
        }
        await #expect(processExitsWith: .failure) {  // a hold must pin, not take
            _ = EntryPlans.hold(clientId: "c1", holdId: "h", amountMinor: 10, centerId: "c1", bookingRef: "b", idempotencyKey: "k",
                                allocations: [take("a", 10)])
        }
        await #expect(processExitsWith: .failure) {  // another client's account
            _ = EntryPlan(type: .spend, clientId: "c1", amountMinor: 5, debit: Account.available("c2"), credit: Account.consumption, refId: "s")
        }
        await #expect(processExitsWith: .failure) {
            _ = EntryPlan(type: .spend, clientId: "c1", amountMinor: 0, debit: Account.available("c1"), credit: Account.consumption, refId: "s")
        }
        await #expect(processExitsWith: .failure) {  // one lot twice
            _ = EntryPlans.spend(clientId: "c1", spendId: "s1", amountMinor: 20, reason: .booking, centerId: "c1", bookingRef: "b",
                                 idempotencyKey: "k", allocations: [take("a", 10), take("a", 10)])
        }
    }
}
