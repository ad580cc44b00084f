"""End-to-end tests of the credits.v1 API: the real `credits serve` binary called by grpcio.

Fixtures (servers, generated stubs) are in conftest.py; helpers in credits_api.py.
"""

from __future__ import annotations

import concurrent.futures
import random
import signal
import threading
import time

import grpc
import pytest

from conftest import wait_until
from credits_api import (
    operation_response,
    DENIED, EXISTS, FAILED, INVALID, NOT_FOUND, OK, UNAUTH, Actor, Tenant, admin_actor, all_entries, channel_for, cli, decode, expect, rpc_error, ts, uid, verify_ok,
)

# ---------------------------------------------------------------- fixtures


@pytest.fixture
def t(cs, cchan, admin):
    """A fresh tenant (EUR) with a staff and an app key."""
    return Tenant(cs, cchan, admin)


# ---------------------------------------------------------------- 1. packages


def test_packages_create_get_list_update_deactivate(cs, t):
    P = cs.packages
    created = t.package(credits=10_000, price=9_000, name="Ten classes", validity_days=30,
                        scope=cs.common.Scope(service_categories=["classes"]))
    assert created.id
    assert (created.name, created.credits_minor, created.price_minor, created.validity_days) == ("Ten classes", 10_000, 9_000, 30)
    assert list(created.scope.service_categories) == ["classes"]
    assert created.active is True
    assert created.currency == "EUR"
    assert created.create_time.seconds > 0

    assert t.staff.packages.GetCreditPackage(P.GetCreditPackageRequest(package_id=created.id)) == created
    # Reads are open to any tenant key.
    assert t.app.packages.GetCreditPackage(P.GetCreditPackageRequest(package_id=created.id)) == created

    other = t.package(credits=500, price=500, name="Five")
    ids = [p.id for p in t.staff.packages.ListCreditPackages(P.ListCreditPackagesRequest()).packages]
    assert sorted(ids) == sorted([created.id, other.id])

    # update_mask: only name and price_minor change, credits_minor stays.
    updated = t.staff.packages.UpdateCreditPackage(P.UpdateCreditPackageRequest(
        package=P.CreditPackage(id=created.id, name="Ten classes (promo)", price_minor=7_500, credits_minor=1),
        update_mask={"paths": ["name", "price_minor"]}))
    assert (updated.name, updated.price_minor, updated.credits_minor, updated.validity_days) == (
        "Ten classes (promo)", 7_500, 10_000, 30)
    assert updated.active is True
    assert t.staff.packages.GetCreditPackage(P.GetCreditPackageRequest(package_id=created.id)) == updated
    expect(cs, INVALID, t.staff.packages.UpdateCreditPackage, P.UpdateCreditPackageRequest(
        package=P.CreditPackage(id=created.id, name="x"), update_mask={"paths": ["no_such_field"]}),
        error_reason="INVALID_ARGUMENT")
    expect(cs, NOT_FOUND, t.staff.packages.GetCreditPackage, P.GetCreditPackageRequest(package_id="pkg-missing"),
           error_reason="NOT_FOUND")

    deactivated = t.staff.packages.DeactivateCreditPackage(P.DeactivateCreditPackageRequest(package_id=other.id))
    assert deactivated.active is False
    active = t.staff.packages.ListCreditPackages(P.ListCreditPackagesRequest()).packages
    assert [p.id for p in active] == [created.id]
    everything = t.staff.packages.ListCreditPackages(P.ListCreditPackagesRequest(include_inactive=True)).packages
    assert sorted(p.id for p in everything) == sorted([created.id, other.id])
    assert {p.id: p.active for p in everything} == {created.id: True, other.id: False}

    f = expect(cs, FAILED, t.app.credit.PurchaseCreditPackage, cs.credits.PurchaseCreditPackageRequest(center_id="c1",
        client_id="c1", package_id=other.id, payment_ref="pay-1", idempotency_key=uid()), error_reason="PACKAGE_INACTIVE")
    assert f.info.metadata["package_id"] == other.id
    assert t.summary("c1") == (0, 0, 0)


def test_app_key_cannot_change_the_catalog(cs, t):
    P = cs.packages
    expect(cs, DENIED, t.app.packages.CreateCreditPackage,
           P.CreateCreditPackageRequest(name="x", credits_minor=100, price_minor=100))
    pkg = t.package()
    expect(cs, DENIED, t.app.packages.DeactivateCreditPackage, P.DeactivateCreditPackageRequest(package_id=pkg.id))
    expect(cs, DENIED, t.app.packages.UpdateCreditPackage, P.UpdateCreditPackageRequest(
        package=P.CreditPackage(id=pkg.id, name="y"), update_mask={"paths": ["name"]}))
    assert t.staff.packages.GetCreditPackage(P.GetCreditPackageRequest(package_id=pkg.id)) == pkg


# ---------------------------------------------------------------- 2. purchases and idempotency


def test_purchase_and_idempotent_retry(cs, t):
    C = cs.credits
    pkg = t.package(credits=1_000, price=800, validity_days=30)
    key = uid("purchase-")
    req = C.PurchaseCreditPackageRequest(client_id="alice", package_id=pkg.id, center_id="c1",
                                         payment_ref="pay-1", idempotency_key=key)
    first = t.app.credit.PurchaseCreditPackage(req)
    assert first.lot.id
    assert first.lot.client_id == "alice"
    assert first.lot.origin == cs.common.LOT_ORIGIN_PURCHASE
    assert (first.lot.amount_minor, first.lot.remaining_minor, first.lot.price_minor) == (1_000, 1_000, 800)
    assert (first.lot.package_id, first.lot.payment_ref, first.lot.center_id) == (pkg.id, "pay-1", "c1")
    assert first.lot.state == cs.common.LOT_STATE_ACTIVE
    # validity_days=30 → valid_until 30 days after the purchase.
    assert abs(first.lot.valid_until.seconds - (first.lot.create_time.seconds + 30 * 86_400)) <= 1
    b = first.balance
    assert (b.client_id, b.total_minor, b.available_minor, b.held_minor, b.currency) == ("alice", 1_000, 1_000, 0, "EUR")
    assert b.seq > 0 and first.lot.created_seq == b.seq

    again = t.app.credit.PurchaseCreditPackage(req)
    assert again == first
    assert t.summary("alice") == (1_000, 1_000, 0)

    f = expect(cs, EXISTS, t.app.credit.PurchaseCreditPackage,
               C.PurchaseCreditPackageRequest(client_id="alice", package_id=pkg.id, center_id="c1",
                                              payment_ref="pay-2", idempotency_key=key),
               error_reason="IDEMPOTENCY_KEY_REUSED")
    assert f.info.metadata["differing_fields"] == "payment_ref"
    assert f.info.metadata["existing_result_id"] == first.lot.id
    assert f.info.metadata["operation"] == "purchase"
    assert t.summary("alice") == (1_000, 1_000, 0)

    op = t.app.credit.GetOperation(C.GetOperationRequest(idempotency_key=key))
    assert (op.idempotency_key, op.operation, op.result_id, op.seq) == (key, "purchase", first.lot.id, first.balance.seq)
    assert operation_response(op, C.PurchaseCreditPackageResponse) == first
    expect(cs, NOT_FOUND, t.app.credit.GetOperation, C.GetOperationRequest(idempotency_key=uid("unknown-")))


def test_purchase_idempotency_key_required_and_via_metadata(cs, t):
    C = cs.credits
    pkg = t.package(credits=1_000, price=1_000)
    req = C.PurchaseCreditPackageRequest(center_id="c1", client_id="bob", package_id=pkg.id, payment_ref="p")
    expect(cs, INVALID, t.app.credit.PurchaseCreditPackage, req, error_reason="INVALID_ARGUMENT", fields=["idempotency_key"])
    assert t.summary("bob") == (0, 0, 0)

    key = uid("md-")
    first = t.app.credit.PurchaseCreditPackage(req, metadata=[("idempotency-key", key)])
    assert first.balance.available_minor == 1_000
    # The same key as a field is the same operation.
    again = t.app.credit.PurchaseCreditPackage(
        C.PurchaseCreditPackageRequest(center_id="c1", client_id="bob", package_id=pkg.id, payment_ref="p", idempotency_key=key))
    assert again == first
    op = t.app.credit.GetOperation(C.GetOperationRequest(idempotency_key=key))
    assert op.result_id == first.lot.id
    # Field and metadata both given and different.
    expect(cs, INVALID, t.app.credit.PurchaseCreditPackage,
           C.PurchaseCreditPackageRequest(center_id="c1", client_id="bob", package_id=pkg.id, payment_ref="p", idempotency_key=uid()),
           metadata=[("idempotency-key", uid())], error_reason="INVALID_ARGUMENT", fields=["idempotency_key"])
    assert t.summary("bob") == (1_000, 1_000, 0)
    expect(cs, NOT_FOUND, t.app.credit.PurchaseCreditPackage, C.PurchaseCreditPackageRequest(center_id="c1",
        client_id="bob", package_id="pkg-nope", payment_ref="p", idempotency_key=uid()), error_reason="NOT_FOUND")


def test_a_replay_sends_the_bytes_of_the_first_reply(cs, cchan, t):
    """Encode once: the reply is serialized by the writer and stored; a retry
    gets those very bytes (not a re-encoding), even after the client's
    balance and the clock moved on."""
    C = cs.credits
    t.order("byte", 1_000)
    spend = cchan.unary_unary("/credits.v1.CreditService/SpendCredits")  # bytes in, bytes out
    md = [("authorization", f"Bearer {t.app_key.token}")]
    request = C.SpendCreditsRequest(client_id="byte", amount_minor=40, reason=C.SPEND_REASON_SERVICE, center_id="c1",
                                    idempotency_key=uid("byte-")).SerializeToString()
    first = spend(request, metadata=md, timeout=10)
    assert C.SpendCreditsResponse.FromString(first).balance.available_minor == 960
    t.order("byte", 5)
    again = spend(request, metadata=md, timeout=10)
    assert isinstance(first, bytes) and again == first
    assert t.summary("byte") == (965, 965, 0)


def test_replays_of_state_changes_return_the_original_response(cs, t):
    """A retry with the same key and request returns the original response even when the target has
    changed state since (a captured hold, a voided write-off, a reversed spend)."""
    C = cs.credits
    t.order("rex", 1_000)
    h = t.hold("rex", 300, expire_time=ts(3600))
    cap_req = C.CaptureHoldRequest(hold_id=h.hold.id, amount_minor=120, idempotency_key=uid("cap-"))
    cap = t.staff.credit.CaptureHold(cap_req)
    assert t.staff.credit.CaptureHold(cap_req) == cap
    h2 = t.hold("rex", 100, expire_time=ts(3600))
    rel_req = C.ReleaseHoldRequest(hold_id=h2.hold.id, idempotency_key=uid("rel-"))
    rel = t.staff.credit.ReleaseHold(rel_req)
    assert t.staff.credit.ReleaseHold(rel_req) == rel
    wo = t.staff.credit.CreateWriteOff(C.CreateWriteOffRequest(client_id="rex", amount_minor=50, reason="r",
                                                               idempotency_key=uid()))
    void_req = C.VoidWriteOffRequest(write_off_id=wo.write_off.id, idempotency_key=uid("void-"))
    void = t.staff.credit.VoidWriteOff(void_req)
    assert t.staff.credit.VoidWriteOff(void_req) == void
    rev_req = C.ReverseSpendRequest(spend_id=cap.spend.id, amount_minor=120, reason="r", idempotency_key=uid("rev-"))
    rev = t.staff.credit.ReverseSpend(rev_req)
    assert t.staff.credit.ReverseSpend(rev_req) == rev
    assert t.summary("rex") == (1_000, 1_000, 0)
    ops = {}
    for req, name in ((cap_req, "capture"), (rel_req, "release"), (void_req, None), (rev_req, None)):
        ops[req.idempotency_key] = op = t.staff.credit.GetOperation(C.GetOperationRequest(idempotency_key=req.idempotency_key))
        if name:
            assert op.operation == name
        assert op.result_id
    assert operation_response(ops[cap_req.idempotency_key], type(cap)) == cap
    assert operation_response(ops[void_req.idempotency_key], type(void)) == void
    # The same key for another kind of operation.
    f = expect(cs, EXISTS, t.spend, "rex", 10, idempotency_key=cap_req.idempotency_key,
               error_reason="IDEMPOTENCY_KEY_REUSED")
    assert f.info.metadata["operation"] == "capture"
    assert f.info.metadata["existing_result_id"] == ops[cap_req.idempotency_key].result_id
    # The same spend key with another amount.
    s1 = t.spend("rex", 10, idempotency_key="rex-spend-1")
    f = expect(cs, EXISTS, t.spend, "rex", 11, idempotency_key="rex-spend-1", error_reason="IDEMPOTENCY_KEY_REUSED")
    assert (f.info.metadata["operation"], f.info.metadata["differing_fields"], f.info.metadata["existing_result_id"]) == (
        "spend", "amount_minor", s1.spend.id)
    assert t.summary("rex") == (990, 990, 0)


def test_idempotency_keys_are_per_tenant(cs, cchan, admin, t):
    C = cs.credits
    b = Tenant(cs, cchan, admin)
    t.order("same", 1_000)
    b.order("same", 1_000)
    key = uid("shared-key-")
    ra = t.spend("same", 100, idempotency_key=key)
    rb = b.spend("same", 200, idempotency_key=key)  # not a replay of A's spend, nor a conflict
    assert rb.spend.id != ra.spend.id and rb.spend.amount_minor == 200
    assert t.summary("same") == (900, 900, 0)
    assert b.summary("same") == (800, 800, 0)
    assert t.staff.credit.GetOperation(C.GetOperationRequest(idempotency_key=key)).result_id == ra.spend.id
    assert b.staff.credit.GetOperation(C.GetOperationRequest(idempotency_key=key)).result_id == rb.spend.id


# ---------------------------------------------------------------- 3. credit orders and scope


def test_credit_order_staff_only_with_expiry_and_scope(cs, t):
    C = cs.credits
    until = ts(10 * 86_400)
    scope = cs.common.Scope(centers=["center-a"], service_categories=["massage"])
    r = t.order("carol", 2_500, price_minor=2_000, center_id="center-a", note="front desk", valid_until=until, scope=scope)
    assert r.lot.origin == cs.common.LOT_ORIGIN_ORDER
    assert (r.lot.amount_minor, r.lot.remaining_minor, r.lot.price_minor, r.lot.note) == (2_500, 2_500, 2_000, "front desk")
    assert r.lot.valid_until.seconds == until.seconds
    assert r.lot.scope == scope
    assert (r.balance.total_minor, r.balance.available_minor, r.balance.held_minor) == (2_500, 2_500, 0)

    expect(cs, DENIED, t.app.credit.CreateCreditOrder,
           C.CreateCreditOrderRequest(center_id="c1", client_id="carol", amount_minor=100, idempotency_key=uid()))
    expect(cs, INVALID, t.staff.credit.CreateCreditOrder,
           C.CreateCreditOrderRequest(center_id="c1", client_id="carol", amount_minor=100, valid_until=ts(-3600), idempotency_key=uid()),
           error_reason="INVALID_ARGUMENT", fields=["valid_until"])
    expect(cs, INVALID, t.staff.credit.CreateCreditOrder,
           C.CreateCreditOrderRequest(center_id="c1", client_id="carol", amount_minor=0, idempotency_key=uid()),
           error_reason="INVALID_ARGUMENT", fields=["amount_minor"])
    assert t.summary("carol") == (2_500, 2_500, 0)

    # Scope: a center-a/massage lot does not pay at center-b nor for classes.
    f = expect(cs, FAILED, t.spend, "carol", 100, center_id="center-b", service_category="massage",
               error_reason="INSUFFICIENT_CREDITS")
    assert f.info.metadata["requested_minor"] == "100"
    expect(cs, FAILED, t.spend, "carol", 100, center_id="center-a", service_category="classes",
           error_reason="INSUFFICIENT_CREDITS")
    assert t.summary("carol") == (2_500, 2_500, 0)
    s = t.spend("carol", 100, center_id="center-a", service_category="massage")
    assert [(a.lot_id, a.remaining_delta_minor) for a in s.spend.allocations] == [(r.lot.id, -100)]
    assert s.balance.available_minor == 2_400


# ---------------------------------------------------------------- 4. spends


def test_spend_soonest_expiry_first(cs, t):
    late = t.order("dan", 500, valid_until=ts(10 * 86_400)).lot
    never = t.order("dan", 500).lot
    soon = t.order("dan", 500, valid_until=ts(5 * 86_400)).lot
    assert t.summary("dan") == (1_500, 1_500, 0)
    # Lots with credit left, soonest expiry first (no expiry last).
    assert [lot.id for lot in t.balance("dan", details=True).lots] == [soon.id, late.id, never.id]

    r = t.spend("dan", 700, center_id="c1", booking_ref="b-1")
    assert [(a.lot_id, a.remaining_delta_minor) for a in r.spend.allocations] == [(soon.id, -500), (late.id, -200)]
    assert (r.spend.amount_minor, r.spend.reversed_minor, r.spend.booking_ref) == (700, 0, "b-1")
    assert (r.balance.total_minor, r.balance.available_minor, r.balance.held_minor) == (800, 800, 0)
    got = t.staff.credit.GetSpend(cs.credits.GetSpendRequest(spend_id=r.spend.id))
    assert got.spend == r.spend

    lots = {lot.id: lot for lot in t.balance("dan", details=True).lots}
    assert soon.id not in lots or lots[soon.id].remaining_minor == 0
    assert lots[late.id].remaining_minor == 300
    assert lots[never.id].remaining_minor == 500

    r2 = t.spend("dan", 400)
    assert [(a.lot_id, a.remaining_delta_minor) for a in r2.spend.allocations] == [(late.id, -300), (never.id, -100)]
    assert r2.balance.available_minor == 400


def test_spend_insufficient_and_invalid(cs, t):
    C = cs.credits
    t.order("erin", 800)
    f = expect(cs, FAILED, t.spend, "erin", 801, error_reason="INSUFFICIENT_CREDITS")
    assert f.info.metadata["available_minor"] == "800"
    assert f.info.metadata["requested_minor"] == "801"
    assert t.summary("erin") == (800, 800, 0)

    expect(cs, INVALID, t.spend, "erin", 100, reason=C.SPEND_REASON_UNSPECIFIED, fields=["reason"])
    expect(cs, INVALID, t.spend, "erin", 0, fields=["amount_minor"])
    expect(cs, INVALID, t.spend, "erin", -5, fields=["amount_minor"])
    assert t.summary("erin") == (800, 800, 0)
    r = t.spend("erin", 800, actor=t.app, reason=C.SPEND_REASON_CHECK_IN)
    assert r.balance.available_minor == 0 and r.spend.reason == C.SPEND_REASON_CHECK_IN
    # A client never seen has a zero balance.
    assert t.summary("nobody") == (0, 0, 0)


def test_failed_write_leaves_no_operation(cs, t):
    """INSUFFICIENT_CREDITS changes nothing: no operation is recorded under the key, and the same request
    succeeds once credit is there."""
    C = cs.credits
    req = C.SpendCreditsRequest(center_id="c1", client_id="late", amount_minor=300, reason=C.SPEND_REASON_BOOKING,
                                idempotency_key=uid("late-"))
    expect(cs, FAILED, t.staff.credit.SpendCredits, req, error_reason="INSUFFICIENT_CREDITS")
    expect(cs, NOT_FOUND, t.staff.credit.GetOperation, C.GetOperationRequest(idempotency_key=req.idempotency_key))
    t.order("late", 300)
    r = t.staff.credit.SpendCredits(req)
    assert r.balance.available_minor == 0
    assert t.staff.credit.GetOperation(C.GetOperationRequest(idempotency_key=req.idempotency_key)).result_id == r.spend.id


# ---------------------------------------------------------------- 5. holds


def test_hold_capture_release_errors(cs, t):
    C = cs.credits
    lot = t.order("fay", 1_000).lot
    h = t.hold("fay", 300, center_id="c1", booking_ref="bk-1", expire_time=ts(3600))
    assert h.hold.state == C.HOLD_STATE_HELD
    assert (h.hold.amount_minor, h.hold.captured_minor) == (300, 0)
    assert (h.balance.total_minor, h.balance.available_minor, h.balance.held_minor) == (1_000, 700, 300)
    assert [(a.lot_id, a.held_delta_minor) for a in h.hold.allocations] == [(lot.id, 300)]
    open_holds = t.balance("fay", details=True).open_holds
    assert [x.id for x in open_holds] == [h.hold.id]

    cap = t.staff.credit.CaptureHold(C.CaptureHoldRequest(hold_id=h.hold.id, amount_minor=100, idempotency_key=uid()))
    assert cap.hold.state == C.HOLD_STATE_CAPTURED
    assert cap.hold.captured_minor == 100
    assert cap.spend.id and cap.hold.spend_id == cap.spend.id
    assert (cap.spend.amount_minor, cap.spend.hold_id, cap.spend.reason) == (100, h.hold.id, C.SPEND_REASON_BOOKING)
    assert (cap.balance.total_minor, cap.balance.available_minor, cap.balance.held_minor) == (900, 900, 0)
    assert t.staff.credit.GetHold(C.GetHoldRequest(hold_id=h.hold.id)).hold.state == C.HOLD_STATE_CAPTURED
    assert t.staff.credit.GetSpend(C.GetSpendRequest(spend_id=cap.spend.id)).spend.amount_minor == 100

    expect(cs, FAILED, t.staff.credit.CaptureHold, C.CaptureHoldRequest(hold_id=h.hold.id, idempotency_key=uid()),
           error_reason="HOLD_ALREADY_CAPTURED")
    expect(cs, FAILED, t.staff.credit.ReleaseHold, C.ReleaseHoldRequest(hold_id=h.hold.id, idempotency_key=uid()),
           error_reason="HOLD_ALREADY_CAPTURED")

    h2 = t.hold("fay", 200, expire_time=ts(3600))
    rel = t.staff.credit.ReleaseHold(C.ReleaseHoldRequest(hold_id=h2.hold.id, idempotency_key=uid()))
    assert rel.hold.state == C.HOLD_STATE_RELEASED
    assert (rel.balance.total_minor, rel.balance.available_minor, rel.balance.held_minor) == (900, 900, 0)
    expect(cs, FAILED, t.staff.credit.CaptureHold, C.CaptureHoldRequest(hold_id=h2.hold.id, idempotency_key=uid()),
           error_reason="HOLD_ALREADY_RELEASED")
    expect(cs, FAILED, t.staff.credit.ReleaseHold, C.ReleaseHoldRequest(hold_id=h2.hold.id, idempotency_key=uid()),
           error_reason="HOLD_ALREADY_RELEASED")

    h3 = t.hold("fay", 200, expire_time=ts(3600))
    f = expect(cs, FAILED, t.staff.credit.CaptureHold,
               C.CaptureHoldRequest(hold_id=h3.hold.id, amount_minor=300, idempotency_key=uid()),
               error_reason="CAPTURE_EXCEEDS_HOLD")
    assert (f.info.metadata["held_minor"], f.info.metadata["requested_minor"]) == ("200", "300")
    assert t.summary("fay") == (900, 700, 200)
    # Amount 0 captures the whole hold.
    full = t.app.credit.CaptureHold(C.CaptureHoldRequest(hold_id=h3.hold.id, idempotency_key=uid()))
    assert (full.hold.captured_minor, full.spend.amount_minor) == (200, 200)
    assert t.summary("fay") == (700, 700, 0)

    expect(cs, FAILED, t.hold, "fay", 701, expire_time=ts(3600), error_reason="INSUFFICIENT_CREDITS")
    expect(cs, INVALID, t.hold, "fay", 10, fields=["expire_time"])  # missing
    assert t.summary("fay") == (700, 700, 0)
    expect(cs, NOT_FOUND, t.staff.credit.GetHold, C.GetHoldRequest(hold_id="hold-missing"), error_reason="NOT_FOUND")


def test_hold_expire_time_errors_name_the_proto_field(cs, t):
    C = cs.credits
    t.order("hex", 1_000)
    expect(cs, INVALID, t.hold, "hex", 10, expire_time=ts(-60), error_reason="INVALID_ARGUMENT", fields=["expire_time"])
    expect(cs, INVALID, t.hold, "hex", 10, expire_time=ts(91 * 86_400), error_reason="INVALID_ARGUMENT",
           fields=["expire_time"])
    h = t.hold("hex", 10, expire_time=ts(3600), idempotency_key="hex-hold")
    f = expect(cs, EXISTS, t.hold, "hex", 10, expire_time=ts(7200), idempotency_key="hex-hold",
               error_reason="IDEMPOTENCY_KEY_REUSED")
    assert (f.info.metadata["differing_fields"], f.info.metadata["existing_result_id"]) == ("expire_time", h.hold.id)
    assert t.summary("hex") == (1_000, 990, 10)


def test_holds_and_lots_expire_automatically(cs, t):
    """Server maintenance (every second): a hold past expire_time is released (EXPIRED); a lot past
    valid_until expires (breakage) except its held part, which can still be captured, and which
    expires at once when its hold is released."""
    C, E = cs.credits, cs.common
    t.order("gus", 1_000)
    h = t.hold("gus", 400, expire_time=ts(1.5))
    assert t.summary("gus") == (1_000, 600, 400)

    short = t.order("lia", 500, valid_until=ts(1.5)).lot
    t.order("lia", 300)
    held = t.hold("lia", 200, expire_time=ts(3600))
    held2 = t.hold("lia", 100, expire_time=ts(3600))
    assert [a.lot_id for a in held.hold.allocations] == [short.id]  # soonest expiry first
    assert [a.lot_id for a in held2.hold.allocations] == [short.id]
    assert t.summary("lia") == (800, 500, 300)

    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        state = t.staff.credit.GetHold(C.GetHoldRequest(hold_id=h.hold.id)).hold.state
        expiries = t.entries("lia", types=[E.ENTRY_TYPE_EXPIRY])
        if state != C.HOLD_STATE_HELD and expiries:
            break
        time.sleep(0.2)
    assert state == C.HOLD_STATE_EXPIRED, f"hold state {C.HoldState.Name(state)} 5 s after creation (expire in 1.5 s)"
    assert t.summary("gus") == (1_000, 1_000, 0)
    expect(cs, FAILED, t.staff.credit.CaptureHold, C.CaptureHoldRequest(hold_id=h.hold.id, idempotency_key=uid()),
           error_reason="HOLD_EXPIRED")
    expect(cs, FAILED, t.staff.credit.ReleaseHold, C.ReleaseHoldRequest(hold_id=h.hold.id, idempotency_key=uid()),
           error_reason="HOLD_EXPIRED")
    releases = t.entries("gus", types=[E.ENTRY_TYPE_RELEASE])
    assert [(e.ref_id, e.amount_minor) for e in releases] == [(h.hold.id, 400)]

    # The free 200 of the short lot expired; the held 300 did not.
    assert [e.amount_minor for e in expiries] == [200], [(e.amount_minor, e.ref_id) for e in expiries]
    assert expiries[0].credit_account == "breakage"
    bal = t.balance("lia", details=True)
    assert (bal.summary.total_minor, bal.summary.available_minor, bal.summary.held_minor) == (600, 300, 300)
    assert bal.pending_expiry_minor == 0
    cap = t.staff.credit.CaptureHold(C.CaptureHoldRequest(hold_id=held.hold.id, idempotency_key=uid()))
    assert cap.spend.amount_minor == 200
    assert [(a.lot_id, a.remaining_delta_minor) for a in cap.spend.allocations] == [(short.id, -200)]
    assert (cap.balance.total_minor, cap.balance.available_minor, cap.balance.held_minor) == (400, 300, 100)
    rel = t.staff.credit.ReleaseHold(C.ReleaseHoldRequest(hold_id=held2.hold.id, idempotency_key=uid()))
    assert rel.hold.state == C.HOLD_STATE_RELEASED
    assert (rel.balance.total_minor, rel.balance.available_minor, rel.balance.held_minor) == (300, 300, 0)
    assert sum(e.amount_minor for e in t.entries("lia", types=[E.ENTRY_TYPE_EXPIRY])) == 300
    expect(cs, FAILED, t.spend, "lia", 301, error_reason="INSUFFICIENT_CREDITS")


# ---------------------------------------------------------------- 6. reversals


def test_reverse_spend(cs, t):
    C = cs.credits
    t.order("hal", 1_000)
    s = t.spend("hal", 500)
    r = t.staff.credit.ReverseSpend(C.ReverseSpendRequest(spend_id=s.spend.id, amount_minor=200, reason="cancelled",
                                                          idempotency_key=uid()))
    assert (r.spend.id, r.spend.amount_minor, r.spend.reversed_minor) == (s.spend.id, 500, 200)
    assert (r.balance.total_minor, r.balance.available_minor) == (700, 700)
    f = expect(cs, FAILED, t.staff.credit.ReverseSpend,
               C.ReverseSpendRequest(spend_id=s.spend.id, amount_minor=400, reason="x", idempotency_key=uid()),
               error_reason="REVERSAL_EXCEEDS_SPEND")
    assert (f.info.metadata["reversible_minor"], f.info.metadata["requested_minor"]) == ("300", "400")
    expect(cs, DENIED, t.app.credit.ReverseSpend,
           C.ReverseSpendRequest(spend_id=s.spend.id, amount_minor=1, reason="x", idempotency_key=uid()))
    r2 = t.staff.credit.ReverseSpend(C.ReverseSpendRequest(spend_id=s.spend.id, amount_minor=300, reason="rest",
                                                           idempotency_key=uid()))
    assert r2.spend.reversed_minor == 500 and r2.balance.available_minor == 1_000
    expect(cs, FAILED, t.staff.credit.ReverseSpend,
           C.ReverseSpendRequest(spend_id=s.spend.id, amount_minor=1, reason="x", idempotency_key=uid()),
           error_reason="REVERSAL_EXCEEDS_SPEND")
    assert t.summary("hal") == (1_000, 1_000, 0)


# ---------------------------------------------------------------- 7. write-offs


def test_write_offs(cs, t):
    C = cs.credits
    t.order("ivy", 1_000)
    w1 = t.staff.credit.CreateWriteOff(C.CreateWriteOffRequest(client_id="ivy", amount_minor=100, reason="fraud",
                                                               idempotency_key=uid()))
    w2 = t.staff.credit.CreateWriteOff(C.CreateWriteOffRequest(client_id="ivy", amount_minor=200, reason="closed",
                                                               idempotency_key=uid()))
    assert w1.write_off.state == C.WRITE_OFF_STATE_ACTIVE
    assert (w2.write_off.amount_minor, w2.write_off.reason) == (200, "closed")
    assert (w2.balance.total_minor, w2.balance.available_minor) == (700, 700)
    expect(cs, FAILED, t.staff.credit.CreateWriteOff, C.CreateWriteOffRequest(
        client_id="ivy", amount_minor=701, reason="x", idempotency_key=uid()), error_reason="INSUFFICIENT_CREDITS")

    pages, token = [], ""
    for _ in range(10):
        resp = t.staff.credit.ListWriteOffs(C.ListWriteOffsRequest(client_id="ivy", page_size=1, page_token=token))
        assert len(resp.write_offs) <= 1
        pages.append([w.id for w in resp.write_offs])
        token = resp.next_page_token
        if not token:
            break
    assert [i for p in pages for i in p] == [w2.write_off.id, w1.write_off.id]  # newest first
    assert pages[0] == [w2.write_off.id] and pages[1] == [w1.write_off.id]

    v = t.staff.credit.VoidWriteOff(C.VoidWriteOffRequest(write_off_id=w1.write_off.id, idempotency_key=uid()))
    assert v.write_off.state == C.WRITE_OFF_STATE_VOIDED
    assert v.write_off.void_seq > w2.write_off.seq
    assert (v.balance.total_minor, v.balance.available_minor) == (800, 800)
    f = expect(cs, FAILED, t.staff.credit.VoidWriteOff,
               C.VoidWriteOffRequest(write_off_id=w1.write_off.id, idempotency_key=uid()), error_reason="WRITE_OFF_VOIDED")
    assert f.info.metadata["write_off_id"] == w1.write_off.id
    expect(cs, DENIED, t.app.credit.CreateWriteOff, C.CreateWriteOffRequest(
        client_id="ivy", amount_minor=1, reason="x", idempotency_key=uid()))
    expect(cs, DENIED, t.app.credit.VoidWriteOff, C.VoidWriteOffRequest(
        write_off_id=w2.write_off.id, idempotency_key=uid()))
    assert t.summary("ivy") == (800, 800, 0)


# ---------------------------------------------------------------- 8. adjustments


def test_adjust_balance(cs, t):
    C = cs.credits
    plus = t.staff.credit.AdjustBalance(C.AdjustBalanceRequest(client_id="jon", amount_minor=300, reason="goodwill",
                                                               center_id="c1", idempotency_key=uid()))
    assert plus.adjustment_id
    assert plus.lot.origin == cs.common.LOT_ORIGIN_ADJUSTMENT and plus.lot.amount_minor == 300
    assert (plus.balance.total_minor, plus.balance.available_minor) == (300, 300)
    minus = t.staff.credit.AdjustBalance(C.AdjustBalanceRequest(center_id="c1", client_id="jon", amount_minor=-120, reason="correction",
                                                                idempotency_key=uid()))
    assert minus.adjustment_id and minus.adjustment_id != plus.adjustment_id
    assert not minus.HasField("lot")
    assert [(a.lot_id, a.remaining_delta_minor) for a in minus.allocations] == [(plus.lot.id, -120)]
    assert (minus.balance.total_minor, minus.balance.available_minor) == (180, 180)

    expect(cs, INVALID, t.staff.credit.AdjustBalance, C.AdjustBalanceRequest(center_id="c1",
        client_id="jon", amount_minor=50, idempotency_key=uid()), error_reason="INVALID_ARGUMENT", fields=["reason"])
    expect(cs, INVALID, t.staff.credit.AdjustBalance, C.AdjustBalanceRequest(center_id="c1",
        client_id="jon", amount_minor=0, reason="r", idempotency_key=uid()), fields=["amount_minor"])
    expect(cs, FAILED, t.staff.credit.AdjustBalance, C.AdjustBalanceRequest(center_id="c1",
        client_id="jon", amount_minor=-181, reason="r", idempotency_key=uid()), error_reason="INSUFFICIENT_CREDITS")
    expect(cs, DENIED, t.app.credit.AdjustBalance, C.AdjustBalanceRequest(center_id="c1",
        client_id="jon", amount_minor=10, reason="r", idempotency_key=uid()))
    assert t.summary("jon") == (180, 180, 0)


# ---------------------------------------------------------------- 9. statements


def test_statement_order_filters_and_pages(cs, t):
    C, E = cs.credits, cs.common
    pkg = t.package(credits=1_000, price=1_000)
    t.app.credit.PurchaseCreditPackage(C.PurchaseCreditPackageRequest(center_id="c1", client_id="kim", package_id=pkg.id,
                                                                      payment_ref="p", idempotency_key=uid()))
    t.order("kim", 500)
    t.order("other-client", 999)
    t.spend("kim", 100)
    h = t.hold("kim", 200, expire_time=ts(3600))
    t.staff.credit.ReleaseHold(C.ReleaseHoldRequest(hold_id=h.hold.id, idempotency_key=uid()))
    t.spend("kim", 50)
    t.staff.credit.AdjustBalance(C.AdjustBalanceRequest(center_id="c1", client_id="kim", amount_minor=25, reason="r", idempotency_key=uid()))

    newest = t.staff.credit.ListLedgerEntries(C.ListLedgerEntriesRequest(client_id="kim")).entries
    assert [e.type for e in newest] == [E.ENTRY_TYPE_ADJUSTMENT, E.ENTRY_TYPE_SPEND, E.ENTRY_TYPE_RELEASE,
                                        E.ENTRY_TYPE_HOLD, E.ENTRY_TYPE_SPEND, E.ENTRY_TYPE_ORDER, E.ENTRY_TYPE_PURCHASE]
    seqs = [e.seq for e in newest]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
    assert all(e.client_id == "kim" and e.amount_minor > 0 for e in newest)
    assert newest[0].available_after_minor == 1_375 and newest[0].held_after_minor == 0
    assert newest[3].available_after_minor == 1_200 and newest[3].held_after_minor == 200  # after the hold
    oldest = t.staff.credit.ListLedgerEntries(C.ListLedgerEntriesRequest(client_id="kim", oldest_first=True)).entries
    assert list(oldest) == list(reversed(newest))

    spends = t.staff.credit.ListLedgerEntries(C.ListLedgerEntriesRequest(
        client_id="kim", types=[E.ENTRY_TYPE_SPEND])).entries
    assert [e.amount_minor for e in spends] == [50, 100]
    grants = t.staff.credit.ListLedgerEntries(C.ListLedgerEntriesRequest(
        client_id="kim", types=[E.ENTRY_TYPE_PURCHASE, E.ENTRY_TYPE_ORDER], oldest_first=True)).entries
    assert [(e.type, e.amount_minor) for e in grants] == [(E.ENTRY_TYPE_PURCHASE, 1_000), (E.ENTRY_TYPE_ORDER, 500)]

    for oldest_first in (False, True):
        collected, token, pages = [], "", 0
        while True:
            resp = t.staff.credit.ListLedgerEntries(C.ListLedgerEntriesRequest(
                client_id="kim", page_size=2, page_token=token, oldest_first=oldest_first))
            assert len(resp.entries) <= 2
            collected.extend(resp.entries)
            pages += 1
            token = resp.next_page_token
            if not token:
                break
            assert pages < 20
            # New entries written meanwhile do not disturb the keyset pages.
            if pages == 1:
                t.order("kim", 1)
        expected = newest if not oldest_first else oldest
        if not oldest_first:
            assert [e.seq for e in collected] == [e.seq for e in expected]
        else:
            assert [e.seq for e in collected][:len(expected)] == [e.seq for e in expected]
    # A page token reused with other filters.
    first = t.staff.credit.ListLedgerEntries(C.ListLedgerEntriesRequest(client_id="kim", page_size=2))
    assert first.next_page_token
    expect(cs, INVALID, t.staff.credit.ListLedgerEntries, C.ListLedgerEntriesRequest(
        client_id="kim", page_size=2, page_token=first.next_page_token, types=[E.ENTRY_TYPE_SPEND]),
        error_reason="INVALID_ARGUMENT", fields=["page_token"])
    expect(cs, INVALID, t.staff.credit.ListLedgerEntries, C.ListLedgerEntriesRequest(
        client_id="kim", page_size=2, page_token=first.next_page_token, oldest_first=True),
        error_reason="INVALID_ARGUMENT", fields=["page_token"])
    expect(cs, INVALID, t.staff.credit.ListLedgerEntries, C.ListLedgerEntriesRequest(
        client_id="other-client", page_size=2, page_token=first.next_page_token),
        error_reason="INVALID_ARGUMENT", fields=["page_token"])
    expect(cs, INVALID, t.staff.credit.ListLedgerEntries, C.ListLedgerEntriesRequest(
        client_id="kim", page_token="garbage!"), error_reason="INVALID_ARGUMENT", fields=["page_token"])
    # A token of another list.
    expect(cs, INVALID, t.staff.credit.ListBalances, C.ListBalancesRequest(page_token=first.next_page_token),
           error_reason="INVALID_ARGUMENT", fields=["page_token"])


def test_tenant_seq_is_gapless_across_clients(cs, t):
    C = cs.credits
    t.order("s1", 1_000)
    t.order("s2", 500)
    t.spend("s1", 100)
    h = t.hold("s2", 50, expire_time=ts(3600))
    t.staff.credit.CaptureHold(C.CaptureHoldRequest(hold_id=h.hold.id, amount_minor=20, idempotency_key=uid()))
    t.staff.credit.CreateWriteOff(C.CreateWriteOffRequest(client_id="s1", amount_minor=5, reason="r", idempotency_key=uid()))
    seqs = sorted(e.seq for c in ("s1", "s2") for e in t.entries(c))
    last = t.staff.admin.GetTenant(cs.admin.GetTenantRequest()).last_seq
    assert seqs == list(range(1, last + 1)), (seqs, last)
    assert len(seqs) >= 6
    assert t.balance("s2").summary.seq <= last


def test_statement_time_filters(cs, t):
    C = cs.credits
    for amount in (100, 200, 300, 400):
        t.order("tim", amount)
        time.sleep(0.01)  # spacing: the entries' times differ (what the filters are tested on), nothing is waited for
    entries = t.entries("tim", oldest_first=True)
    assert [e.amount_minor for e in entries] == [100, 200, 300, 400]
    key = lambda e: (e.time.seconds, e.time.nanos)
    pivot = entries[2].time
    after = t.entries("tim", oldest_first=True, start_time=pivot)
    assert [e.seq for e in after] == [e.seq for e in entries if key(e) >= key(entries[2])]
    before = t.entries("tim", oldest_first=True, end_time=pivot)
    assert [e.seq for e in before] == [e.seq for e in entries if key(e) < key(entries[2])]
    window = t.entries("tim", start_time=entries[1].time, end_time=entries[3].time)
    assert [e.amount_minor for e in window] == [300, 200]
    assert t.entries("tim", start_time=ts(3600)) == []


# ---------------------------------------------------------------- 10. balances


def test_list_balances_paged_and_per_center(cs, t):
    C = cs.credits
    t.order("c-1", 100, center_id="north")
    t.order("c-1", 200, center_id="south")
    t.order("c-2", 300, center_id="north")
    t.order("c-3", 400, center_id="south")
    t.hold("c-3", 150, expire_time=ts(3600))

    collected, token = [], ""
    for _ in range(10):
        resp = t.staff.credit.ListBalances(C.ListBalancesRequest(page_size=2, page_token=token))
        assert len(resp.balances) <= 2
        collected.extend(resp.balances)
        token = resp.next_page_token
        if not token:
            break
    assert [(b.client_id, b.total_minor, b.available_minor, b.held_minor, b.currency) for b in collected] == [
        ("c-1", 300, 300, 0, "EUR"), ("c-2", 300, 300, 0, "EUR"), ("c-3", 400, 250, 150, "EUR")]

    north = t.staff.credit.ListBalances(C.ListBalancesRequest(center_id="north")).balances
    got = {b.client_id: b.available_minor for b in north if b.total_minor or b.available_minor}
    assert got == {"c-1": 100, "c-2": 300}
    south = t.staff.credit.ListBalances(C.ListBalancesRequest(center_id="south")).balances
    got = {b.client_id: (b.available_minor, b.held_minor) for b in south if b.total_minor or b.available_minor}
    assert got == {"c-1": (200, 0), "c-3": (250, 150)}

    centers = {c.center_id: c.remaining_minor for c in t.balance("c-1", details=True).centers}
    assert centers == {"north": 100, "south": 200}
    expect(cs, INVALID, t.staff.credit.ListBalances, C.ListBalancesRequest(page_size=1001), fields=["page_size"])


# ---------------------------------------------------------------- 11. access


def test_authentication(cs, cchan, admin, t):
    C = cs.credits
    req = C.GetBalanceRequest(client_id="x")
    expect(cs, UNAUTH, Actor(cs, cchan, None).credit.GetBalance, req)
    expect(cs, UNAUTH, Actor(cs, cchan, "not-a-token").credit.GetBalance, req)
    key_id = t.staff_key.key.id
    expect(cs, UNAUTH, Actor(cs, cchan, f"{key_id}.wrong-secret").credit.GetBalance, req)
    expect(cs, UNAUTH, Actor(cs, cchan, "x", extra=()).admin.GetTenant, cs.admin.GetTenantRequest())

    extra = admin.admin.CreateApiKey(cs.admin.CreateApiKeyRequest(tenant_id=t.id, role=cs.admin.ROLE_STAFF, label="tmp"))
    assert extra.token.startswith(extra.key.id + ".")
    tmp = Actor(cs, cchan, extra.token)
    assert tmp.credit.GetBalance(req).summary.client_id == "x"  # used once (cached)
    assert tmp.credit.GetBalance(req).summary.client_id == "x"  # again: from the event loop's memo
    revoked = admin.admin.RevokeApiKey(cs.admin.RevokeApiKeyRequest(key_id=extra.key.id))
    assert revoked.revoke_time.seconds > 0
    expect(cs, UNAUTH, tmp.credit.GetBalance, req)
    expect(cs, UNAUTH, tmp.credit.SpendCredits, C.SpendCreditsRequest(center_id="c1",
        client_id="x", amount_minor=1, reason=C.SPEND_REASON_OTHER, idempotency_key=uid()))
    again = admin.admin.RevokeApiKey(cs.admin.RevokeApiKeyRequest(key_id=extra.key.id))
    assert again.revoke_time == revoked.revoke_time
    # Other keys of the tenant still work.
    assert t.staff.credit.GetBalance(req).summary.available_minor == 0

    # Once a key's secret has been verified (and is remembered for a while),
    # near misses of it are still refused.
    good = t.staff_key.token
    assert Actor(cs, cchan, good).credit.GetBalance(req).summary.client_id == "x"
    for bad in (good + "x", good[:-1], good[:-1] + ("A" if good[-1] != "A" else "B"), f"{key_id}.", f".{good.split('.', 1)[1]}"):
        expect(cs, UNAUTH, Actor(cs, cchan, bad).credit.GetBalance, req)
    # The scheme is case-insensitive and blanks around the token are ignored; anything else is refused.
    for header in (f"bearer {good}", f"BEARER   {good}"):
        assert Actor(cs, cchan, None, extra=[("authorization", header)]).credit.GetBalance(req).summary.client_id == "x"
    for header in (f"Bearer{good}", "Bearer", f"Basic {good}", good):
        expect(cs, UNAUTH, Actor(cs, cchan, None, extra=[("authorization", header)]).credit.GetBalance, req)


def test_tenant_isolation(cs, cchan, admin, t):
    C = cs.credits
    b = Tenant(cs, cchan, admin)
    b.order("shared-name", 1_000)
    b_spend = b.spend("shared-name", 100)
    b_hold = b.hold("shared-name", 100, expire_time=ts(3600))
    b_wo = b.staff.credit.CreateWriteOff(C.CreateWriteOffRequest(client_id="shared-name", amount_minor=10, reason="r",
                                                                 idempotency_key=uid()))
    b_pkg = b.package()
    b_key = uid("b-key-")
    b.spend("shared-name", 1, idempotency_key=b_key)

    failures = [
        expect(cs, NOT_FOUND, t.staff.credit.GetHold, C.GetHoldRequest(hold_id=b_hold.hold.id)),
        expect(cs, NOT_FOUND, t.staff.credit.GetSpend, C.GetSpendRequest(spend_id=b_spend.spend.id)),
        expect(cs, NOT_FOUND, t.staff.credit.CaptureHold, C.CaptureHoldRequest(hold_id=b_hold.hold.id, idempotency_key=uid())),
        expect(cs, NOT_FOUND, t.staff.credit.ReleaseHold, C.ReleaseHoldRequest(hold_id=b_hold.hold.id, idempotency_key=uid())),
        expect(cs, NOT_FOUND, t.staff.credit.ReverseSpend, C.ReverseSpendRequest(
            spend_id=b_spend.spend.id, amount_minor=1, reason="r", idempotency_key=uid())),
        expect(cs, NOT_FOUND, t.staff.credit.VoidWriteOff, C.VoidWriteOffRequest(
            write_off_id=b_wo.write_off.id, idempotency_key=uid())),
        expect(cs, NOT_FOUND, t.staff.packages.GetCreditPackage, cs.packages.GetCreditPackageRequest(package_id=b_pkg.id)),
        expect(cs, NOT_FOUND, t.staff.credit.PurchaseCreditPackage, C.PurchaseCreditPackageRequest(center_id="c1",
            client_id="shared-name", package_id=b_pkg.id, payment_ref="p", idempotency_key=uid())),
        expect(cs, NOT_FOUND, t.staff.credit.GetOperation, C.GetOperationRequest(idempotency_key=b_key)),
        expect(cs, DENIED, t.staff.credit.GetBalance, C.GetBalanceRequest(client_id="shared-name"),
               metadata=[("x-on-behalf-of", b.id)]),
        expect(cs, DENIED, t.staff.admin.GetTenant, cs.admin.GetTenantRequest(tenant_id=b.id)),
    ]
    for f in failures:
        assert b.id not in f.details, f"error message names tenant B: {f.details!r}"
        if f.info is not None:
            assert all(b.id not in v for v in f.info.metadata.values()), f.info
    # Clients are per tenant: A sees nothing of B's "shared-name".
    assert t.summary("shared-name") == (0, 0, 0)
    assert list(t.staff.credit.ListBalances(C.ListBalancesRequest()).balances) == []
    assert t.entries("shared-name") == []
    assert list(t.staff.credit.ListWriteOffs(C.ListWriteOffsRequest()).write_offs) == []
    assert b.summary("shared-name") == (889, 789, 100)
    # x-on-behalf-of naming the key's own tenant is fine.
    assert t.staff.credit.GetBalance(C.GetBalanceRequest(client_id="x"), metadata=[("x-on-behalf-of", t.id)]).summary.client_id == "x"
    # A's own tenant is visible with its own key.
    assert t.staff.admin.GetTenant(cs.admin.GetTenantRequest()).id == t.id


def test_directory_keys(cs, cchan, admin, t):
    C = cs.credits
    d = admin.admin.CreateApiKey(cs.admin.CreateApiKeyRequest(role=cs.admin.ROLE_DIRECTORY, label="directory"))
    assert d.key.tenant_id == "" and d.key.role == cs.admin.ROLE_DIRECTORY
    t.order("dora", 1_000)
    spend_req = lambda: C.SpendCreditsRequest(center_id="c1", client_id="dora", amount_minor=100, reason=C.SPEND_REASON_BOOKING,
                                              idempotency_key=uid())

    expect(cs, DENIED, Actor(cs, cchan, d.token).credit.SpendCredits, spend_req())
    directory = Actor(cs, cchan, d.token, on_behalf_of=t.id)
    expect(cs, DENIED, directory.credit.SpendCredits, spend_req())
    expect(cs, DENIED, directory.credit.GetBalance, C.GetBalanceRequest(client_id="dora"))
    expect(cs, DENIED, Actor(cs, cchan, d.token, on_behalf_of=uid("t-unknown-")).credit.GetBalance,
           C.GetBalanceRequest(client_id="dora"))
    # Staff of another tenant cannot allow it for this one.
    other = Tenant(cs, cchan, admin)
    expect(cs, DENIED, other.staff.admin.SetDirectoryAccess,
           cs.admin.SetDirectoryAccessRequest(tenant_id=t.id, allow_directory=True))
    expect(cs, DENIED, t.app.admin.SetDirectoryAccess, cs.admin.SetDirectoryAccessRequest(allow_directory=True))
    assert t.summary("dora") == (1_000, 1_000, 0)

    tenant = admin.admin.SetDirectoryAccess(cs.admin.SetDirectoryAccessRequest(tenant_id=t.id, allow_directory=True))
    assert tenant.allow_directory is True and tenant.id == t.id
    r = directory.credit.SpendCredits(spend_req())
    assert r.balance.available_minor == 900
    pkg = t.package(credits=300, price=300)
    p = directory.credit.PurchaseCreditPackage(C.PurchaseCreditPackageRequest(center_id="c1",
        client_id="dora", package_id=pkg.id, payment_ref="d-1", idempotency_key=uid()))
    assert p.balance.available_minor == 1_200
    assert directory.credit.GetBalance(C.GetBalanceRequest(client_id="dora")).summary.available_minor == 1_200
    expect(cs, DENIED, directory.credit.CreateWriteOff, C.CreateWriteOffRequest(
        client_id="dora", amount_minor=1, reason="r", idempotency_key=uid()))
    expect(cs, DENIED, directory.credit.CreateCreditOrder, C.CreateCreditOrderRequest(center_id="c1",
        client_id="dora", amount_minor=1, idempotency_key=uid()))
    expect(cs, DENIED, directory.packages.CreateCreditPackage, cs.packages.CreateCreditPackageRequest(
        name="x", credits_minor=1, price_minor=1))
    # The other tenant does not allow it.
    expect(cs, DENIED, Actor(cs, cchan, d.token, on_behalf_of=other.id).credit.GetBalance,
           C.GetBalanceRequest(client_id="dora"))
    # Staff of the tenant turn it off again.
    off = t.staff.admin.SetDirectoryAccess(cs.admin.SetDirectoryAccessRequest(allow_directory=False))
    assert off.allow_directory is False
    expect(cs, DENIED, directory.credit.SpendCredits, spend_req())
    assert t.summary("dora") == (1_200, 1_200, 0)


def test_admin_and_key_permissions(cs, cchan, admin, t):
    C = cs.credits
    expect(cs, DENIED, admin.credit.GetBalance, C.GetBalanceRequest(client_id="x"))
    expect(cs, DENIED, admin.credit.SpendCredits, C.SpendCreditsRequest(center_id="c1",
        client_id="x", amount_minor=1, reason=C.SPEND_REASON_OTHER, idempotency_key=uid()))
    expect(cs, DENIED, admin.packages.ListCreditPackages, cs.packages.ListCreditPackagesRequest())
    expect(cs, DENIED, t.app.admin.CreateApiKey, cs.admin.CreateApiKeyRequest(
        tenant_id=t.id, role=cs.admin.ROLE_STAFF, label="escalate"))
    expect(cs, DENIED, t.app.admin.CreateTenant, cs.admin.CreateTenantRequest(
        tenant_id=uid("t-"), name="n", currency="EUR"))
    expect(cs, DENIED, t.staff.admin.RevokeApiKey, cs.admin.RevokeApiKeyRequest(key_id=t.app_key.key.id))
    assert t.app.credit.GetBalance(C.GetBalanceRequest(client_id="x")).summary.client_id == "x"

    expect(cs, EXISTS, admin.admin.CreateTenant, cs.admin.CreateTenantRequest(tenant_id=t.id, name="dup", currency="EUR"))
    expect(cs, INVALID, admin.admin.CreateTenant, cs.admin.CreateTenantRequest(tenant_id=uid("t-"), name="n", currency="eur"),
           fields=["currency"])
    expect(cs, NOT_FOUND, admin.admin.CreateApiKey, cs.admin.CreateApiKeyRequest(
        tenant_id=uid("t-missing-"), role=cs.admin.ROLE_STAFF, label="x"))
    got = admin.admin.GetTenant(cs.admin.GetTenantRequest(tenant_id=t.id))
    assert (got.id, got.currency, got.allow_directory) == (t.id, "EUR", False)
    expect(cs, INVALID, admin.admin.CreateApiKey, cs.admin.CreateApiKeyRequest(tenant_id=t.id, label="x"),
           fields=["role"])
    expect(cs, INVALID, admin.admin.CreateApiKey, cs.admin.CreateApiKeyRequest(
        tenant_id=t.id, role=cs.admin.ROLE_DIRECTORY, label="x"), fields=["tenant_id"])
    expect(cs, INVALID, admin.admin.CreateApiKey, cs.admin.CreateApiKeyRequest(role=cs.admin.ROLE_STAFF, label="x"),
           fields=["tenant_id"])
    expect(cs, NOT_FOUND, admin.admin.RevokeApiKey, cs.admin.RevokeApiKeyRequest(key_id="key_nope"))
    report = admin.admin.VerifyLedger(cs.admin.VerifyLedgerRequest())
    assert report.ok is True and list(report.problems) == [] and report.tenants >= 1
    expect(cs, DENIED, t.staff.admin.VerifyLedger, cs.admin.VerifyLedgerRequest())


# ---------------------------------------------------------------- 12. concurrent spends


def test_concurrent_spends_never_overdraw(cs, credits_server, t):
    C = cs.credits
    N, M, AMOUNT = 20, 300, 100
    t.order("race", N * AMOUNT)
    channels = [channel_for(credits_server) for _ in range(4)]
    try:
        stubs = [Actor(cs, ch, t.app_key.token).credit for ch in channels]

        def one(i):
            req = C.SpendCreditsRequest(center_id="c1", client_id="race", amount_minor=AMOUNT, reason=C.SPEND_REASON_CHECK_IN,
                                        idempotency_key=f"race-{uid()}-{i}")
            try:
                stubs[i % 4].SpendCredits(req, timeout=30)
                return ("OK", None)
            except grpc.RpcError as e:
                f = decode(cs, e)
                return (f.code.name, f.info.reason if f.info else None)

        with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
            outcomes = list(pool.map(one, range(M)))
    finally:
        for ch in channels:
            ch.close()
    counts = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    assert counts == {("OK", None): N, ("FAILED_PRECONDITION", "INSUFFICIENT_CREDITS"): M - N}, counts
    assert t.summary("race") == (0, 0, 0)
    assert len(t.entries("race", types=[cs.common.ENTRY_TYPE_SPEND])) == N
    verify_ok(credits_server.db)


def test_concurrent_requests_with_one_key_apply_once(cs, credits_server, t):
    """Concurrent copies of one request (same key) all get the same response and apply once; concurrent
    different requests under one key: exactly one applies, the rest are IDEMPOTENCY_KEY_REUSED."""
    C = cs.credits
    pkg = t.package(credits=500, price=500)
    channels = [channel_for(credits_server) for _ in range(4)]
    try:
        actors = [Actor(cs, ch, t.app_key.token).credit for ch in channels]
        same = C.PurchaseCreditPackageRequest(center_id="c1", client_id="dup", package_id=pkg.id, payment_ref="p",
                                              idempotency_key=uid("dup-"))
        futures = [actors[i % 4].PurchaseCreditPackage.future(same) for i in range(40)]
        results = [f.result() for f in futures]
        assert all(r == results[0] for r in results)
        assert t.summary("dup") == (500, 500, 0)

        key = uid("conflict-")
        reqs = [C.SpendCreditsRequest(center_id="c1", client_id="dup", amount_minor=1 + i, reason=C.SPEND_REASON_OTHER,
                                      idempotency_key=key) for i in range(40)]
        futures = [actors[i % 4].SpendCredits.future(r) for i, r in enumerate(reqs)]
        ok, reused = [], []
        for f in futures:
            try:
                ok.append(f.result())
            except grpc.RpcError as e:
                d = decode(cs, e)
                assert (d.code, d.info.reason if d.info else None) == (EXISTS, "IDEMPOTENCY_KEY_REUSED"), d
                reused.append(d)
        assert len(ok) == 1 and len(reused) == 39
        assert all(d.info.metadata["existing_result_id"] == ok[0].spend.id for d in reused)
        assert t.summary("dup") == (500 - ok[0].spend.amount_minor,) * 2 + (0,)
    finally:
        for ch in channels:
            ch.close()
    verify_ok(credits_server.db)


# ---------------------------------------------------------------- 13. crash (kill -9) and recovery


CRASH_CYCLES = 3


def _crash_tenant(cs, server):
    ch = channel_for(server)
    admin = admin_actor(cs, ch)
    tenant = Tenant(cs, ch, admin)
    pkg = tenant.package(credits=700, price=700)
    tenant.order("crash", 10_000_000)  # spends never run out
    return ch, tenant, pkg


def test_kill_9_keeps_every_acknowledged_write(cs, start_credits_server):
    """kill -9 mid-load, restart on the same file: acknowledged writes are all there, every attempted
    request can be re-sent with its key and applies exactly once, and the ledger verifies."""
    C = cs.credits
    srv = start_credits_server("--sync", "full", name="crash")
    db = srv.db
    ch, tenant, pkg = _crash_tenant(cs, srv)
    staff_token = tenant.staff_key.token
    ch.close()
    expected_total = 10_000_000
    all_attempted: dict[str, tuple] = {}  # key → (kind, request)

    for cycle in range(CRASH_CYCLES):
        attempted: dict[str, tuple] = {}
        acked: dict[str, object] = {}
        stop = threading.Event()
        lock = threading.Lock()

        def load(worker: int):
            ch = channel_for(srv)
            actor = Actor(cs, ch, staff_token)
            rng = random.Random(cycle * 100 + worker)
            try:
                n = 0
                while not stop.is_set():
                    n += 1
                    key = f"crash-{cycle}-{worker}-{n}-{uid()}"
                    if rng.random() < 0.4:
                        kind = "purchase"
                        req = C.PurchaseCreditPackageRequest(center_id="c1", client_id="crash", package_id=pkg.id,
                                                             payment_ref=f"pay-{key}", idempotency_key=key)
                        fn = actor.credit.PurchaseCreditPackage
                    else:
                        kind = "spend"
                        req = C.SpendCreditsRequest(center_id="c1", client_id="crash", amount_minor=rng.randint(1, 300),
                                                    reason=C.SPEND_REASON_SERVICE, idempotency_key=key)
                        fn = actor.credit.SpendCredits
                    with lock:
                        attempted[key] = (kind, req)
                    try:
                        resp = fn(req, timeout=5)
                    except grpc.RpcError:
                        return  # the server died under us
                    with lock:
                        acked[key] = resp
            finally:
                ch.close()

        workers = [threading.Thread(target=load, args=(w,), daemon=True) for w in range(3)]
        for w in workers:
            w.start()
        # Killed in the middle of the load, once writes are being acknowledged.
        wait_until(lambda: len(acked) >= 20, 10, f"cycle {cycle}: writes acknowledged")
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=10)
        srv.kill()
        stop.set()
        for w in workers:
            w.join(timeout=10)
            assert not w.is_alive()
        assert len(acked) >= 20, f"cycle {cycle}: only {len(acked)} writes acknowledged"
        verify_ok(db)  # the file as the crash left it

        srv = start_credits_server("--sync", "full", name="crash", db=db)
        ch = channel_for(srv)
        actor = Actor(cs, ch, staff_token)
        try:
            # Every acknowledged write survived the crash.
            for key, resp in acked.items():
                op = actor.credit.GetOperation(C.GetOperationRequest(idempotency_key=key))
                kind, _ = attempted[key]
                assert op.operation == kind
                if kind == "purchase":
                    assert op.result_id == resp.lot.id
                    assert operation_response(op, C.PurchaseCreditPackageResponse) == resp
                else:
                    assert op.result_id == resp.spend.id
                    assert operation_response(op, C.SpendCreditsResponse) == resp
            # Requests in flight at the kill: applied entirely or not at all.
            in_flight = {}
            for key in attempted.keys() - acked.keys():
                try:
                    in_flight[key] = actor.credit.GetOperation(C.GetOperationRequest(idempotency_key=key))
                except grpc.RpcError as e:
                    assert e.code() == NOT_FOUND, f"{e.code()}: {e.details()}"
            assert len(attempted) - len(acked) <= 3  # one call at a time per worker
            # Re-sending every attempted request succeeds; acknowledged ones return the original response.
            for key, (kind, req) in attempted.items():
                fn = actor.credit.PurchaseCreditPackage if kind == "purchase" else actor.credit.SpendCredits
                resp = fn(req)
                if key in acked:
                    assert resp == acked[key], f"cycle {cycle}: replay of {key} differs"
                elif key in in_flight:
                    assert resp == operation_response(in_flight[key], type(resp)), f"cycle {cycle}: replay of {key}"
                again = fn(req)
                assert again == resp
                expected_total += 700 if kind == "purchase" else -req.amount_minor
            all_attempted.update(attempted)
            bal = actor.credit.GetBalance(C.GetBalanceRequest(client_id="crash")).summary
            assert (bal.total_minor, bal.available_minor, bal.held_minor) == (expected_total, expected_total, 0), (
                f"cycle {cycle}: balance {bal.available_minor}, expected {expected_total} from {len(all_attempted)} operations")
            entries = all_entries(cs, actor, "crash")
            purchases = sum(1 for e in entries if e.type == cs.common.ENTRY_TYPE_PURCHASE)
            spends = sum(1 for e in entries if e.type == cs.common.ENTRY_TYPE_SPEND)
            assert purchases == sum(1 for k, _ in all_attempted.values() if k == "purchase")
            assert spends == sum(1 for k, _ in all_attempted.values() if k == "spend")
            keys = [e.idempotency_key for e in entries if e.idempotency_key]
            assert len(keys) == len(set(keys)), "an idempotency key applied twice"
        finally:
            ch.close()
        verify_ok(db)
    assert srv.terminate() == 0


# ---------------------------------------------------------------- 14. deadlines


def test_expired_deadline_applies_at_most_once(cs, t):
    """Writes whose deadline expires: each is either applied once or not at all, never half; a retry
    with the same key completes it exactly once. Timeouts range from already-expired to ~1 ms so
    some expire before sending and some while the server works."""
    C = cs.credits
    t.order("dl", 1_000_000)
    expected = 1_000_000
    amounts = []
    outcomes = {"ok": 0, "deadline-applied": 0, "deadline-not-applied": 0}
    # Locally a call often completes before grpc's timer fires even at 1 µs: try until 5 expired.
    timeouts = [1e-6, 5e-5, 2e-4, 5e-4, 1e-3, 2e-3] * 50
    for i, timeout in enumerate(timeouts):
        if outcomes["deadline-applied"] + outcomes["deadline-not-applied"] >= 5:
            break
        amount = 10 + i
        amounts.append(amount)
        key = uid(f"dl-{i}-")
        req = C.SpendCreditsRequest(center_id="c1", client_id="dl", amount_minor=amount,
                                    reason=C.SPEND_REASON_OTHER, idempotency_key=key)
        try:
            t.staff.credit.SpendCredits(req, timeout=timeout)
            outcomes["ok"] += 1
            expected -= amount
            assert t.summary("dl")[1] == expected
            continue
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"{err.code()}: {err.details()}"
        time.sleep(0.1)  # let a write the server still had in hand settle
        try:
            op = t.staff.credit.GetOperation(C.GetOperationRequest(idempotency_key=key))
        except grpc.RpcError as e:
            assert e.code() == NOT_FOUND, f"{e.code()}: {e.details()}"
            op = None
        if op is not None:
            outcomes["deadline-applied"] += 1
            assert op.operation == "spend"
            spend = operation_response(op, C.SpendCreditsResponse).spend
            assert (spend.id, spend.amount_minor) == (op.result_id, amount)
            expected -= amount
        else:
            outcomes["deadline-not-applied"] += 1
        assert t.summary("dl")[1] == expected, f"attempt {i} (timeout {timeout}): operation found={op is not None}"
        # The retry applies it exactly once in total.
        r = t.staff.credit.SpendCredits(req)
        assert r.spend.amount_minor == amount
        if op is not None:
            assert r.spend.id == op.result_id
        else:
            expected -= amount
        assert t.summary("dl")[1] == expected
    assert outcomes["deadline-applied"] + outcomes["deadline-not-applied"] >= 5, outcomes
    spends = t.entries("dl", types=[cs.common.ENTRY_TYPE_SPEND])
    assert sorted(e.amount_minor for e in spends) == amounts, outcomes
    assert t.summary("dl") == (1_000_000 - sum(amounts), 1_000_000 - sum(amounts), 0)


# ---------------------------------------------------------------- 15. CLI


def test_backup_while_serving(cs, credits_server, t, tmp_path):
    t.order("bk", 1_000)
    stop = threading.Event()
    errors = []

    spent = []

    def load():
        while not stop.is_set():
            try:
                t.spend("bk", 1)
                spent.append(1)
            except grpc.RpcError as e:
                errors.append(e)
                return

    th = threading.Thread(target=load, daemon=True)
    th.start()
    try:
        wait_until(lambda: len(spent) >= 5 or errors, 10, "spends under way before the backup")
        dest = tmp_path / "backup.sqlite"
        r = cli("backup", "--db", credits_server.db, "--to", dest)
        assert r.returncode == 0, f"backup exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    finally:
        stop.set()
        th.join(timeout=10)
    assert not errors, errors
    assert dest.exists()
    out = verify_ok(dest)
    assert "OK" in out
    # A second backup to the same file is refused.
    r = cli("backup", "--db", credits_server.db, "--to", dest)
    assert r.returncode != 0


def test_cli_admin_migrate_and_verify(cs, start_credits_server, tmp_path):
    db = tmp_path / "cli.sqlite"
    r = cli("migrate", "--db", db)
    assert r.returncode == 0, r.stderr
    r = cli("migrate", "--db", db)
    assert r.returncode == 0 and "current" in r.stdout, r.stdout
    tid = uid("cli-")
    r = cli("admin", "create-tenant", "--db", db, "--id", tid, "--name", "CLI Gym", "--currency", "CHF")
    assert r.returncode == 0, r.stderr
    r = cli("admin", "create-key", "--db", db, "--tenant", tid, "--role", "staff", "--label", "cli")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    assert "." in token
    r = cli("admin", "create-tenant", "--db", db, "--id", tid, "--name", "again", "--currency", "CHF")
    assert r.returncode != 0

    srv = start_credits_server(db=db)
    ch = channel_for(srv)
    try:
        staff = Actor(cs, ch, token)
        r = staff.credit.CreateCreditOrder(cs.credits.CreateCreditOrderRequest(center_id="c1",
            client_id="z", amount_minor=500, idempotency_key=uid()))
        assert (r.balance.available_minor, r.balance.currency) == (500, "CHF")
        # A key created by the CLI next to the running server works at once.
        r2 = cli("admin", "create-key", "--db", db, "--tenant", tid, "--role", "app", "--label", "cli2")
        assert r2.returncode == 0, r2.stderr
        app = Actor(cs, ch, r2.stdout.strip().splitlines()[-1])
        assert app.credit.GetBalance(cs.credits.GetBalanceRequest(client_id="z")).summary.available_minor == 500
    finally:
        ch.close()
    verify_ok(db)
    assert srv.terminate() == 0
