"""End-to-end tests of credits.v1.CouponService (coupon customer credits): the real
`credits serve` binary called by grpcio. Every RPC, every error reason, app vs staff keys.

Fixtures (servers, generated stubs) are in conftest.py; helpers in credits_api.py.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import importlib
import time
import types

import grpc
import pytest

from conftest import wait_until
from credits_api import operation_response, INVALID, FAILED, DENIED, NOT_FOUND, EXISTS, Bound, Tenant, admin_actor, all_entries, channel_for, expect, ts, uid, verify_ok



@pytest.fixture(scope="module")
def cp(credits_stubs):
    """coupons.proto messages and stubs (generated with the other credits/v1 protos)."""
    return types.SimpleNamespace(pb=importlib.import_module("credits.v1.coupons_pb2"),
                                 grpc=importlib.import_module("credits.v1.coupons_pb2_grpc"))


class CouponTenant:
    """A fresh tenant with CouponService stubs for its staff and app keys."""

    def __init__(self, cs, cp, channel, admin):
        self.t = Tenant(cs, channel, admin)
        self.pb = cp.pb
        stub = cp.grpc.CouponServiceStub(channel)
        self.staff = Bound(stub, [("authorization", f"Bearer {self.t.staff_key.token}")])
        self.app = Bound(stub, [("authorization", f"Bearer {self.t.app_key.token}")])

    def coupon(self, max_uses=1, **kw):
        kw.setdefault("name", "Free massage")
        kw.setdefault("service_id", "massage-60")
        return self.staff.CreateCoupon(self.pb.CreateCouponRequest(max_uses=max_uses, **kw))

    def issue(self, client, coupon_id, actor=None, **kw):
        kw.setdefault("idempotency_key", uid("k-"))
        return (actor or self.app).IssueCustomerCredit(self.pb.IssueCustomerCreditRequest(
            client_id=client, coupon_id=coupon_id, **kw))

    def redeem(self, credit_id, actor=None, **kw):
        kw.setdefault("idempotency_key", uid("k-"))
        kw.setdefault("booking_ref", uid("bk-"))
        return (actor or self.app).RedeemCustomerCredit(self.pb.RedeemCustomerCreditRequest(credit_id=credit_id, **kw))

    def cancel(self, redemption_id, actor=None, **kw):
        kw.setdefault("idempotency_key", uid("k-"))
        return (actor or self.app).CancelCreditRedemption(self.pb.CancelCreditRedemptionRequest(
            redemption_id=redemption_id, **kw))

    def revoke(self, credit_id, **kw):
        kw.setdefault("idempotency_key", uid("k-"))
        return self.staff.RevokeCustomerCredit(self.pb.RevokeCustomerCreditRequest(credit_id=credit_id, **kw))

    def get(self, credit_id, **kw):
        return self.app.GetCustomerCredit(self.pb.GetCustomerCreditRequest(credit_id=credit_id, **kw))

    def list(self, client, **kw):
        return self.app.ListCustomerCredits(self.pb.ListCustomerCreditsRequest(client_id=client, **kw))


@pytest.fixture
def ct(cs, cp, cchan, admin):
    return CouponTenant(cs, cp, cchan, admin)


# ---------------------------------------------------------------- coupons


def test_coupon_catalog_create_get_list_deactivate(cs, ct):
    P = ct.pb
    single = ct.coupon(validity_days=30)
    assert single.id and single.active and not single.multi_use and single.max_uses == 1
    assert (single.service_id, single.validity_days, single.currency) == ("massage-60", 30, "EUR")
    multi = ct.coupon(max_uses=5, service_id="", value_minor=2_500, name="Five classes")
    assert multi.multi_use and multi.max_uses == 5 and multi.value_minor == 2_500 and multi.service_id == ""
    # Reads: any key.
    assert ct.app.GetCoupon(P.GetCouponRequest(coupon_id=single.id)) == single
    assert sorted(c.id for c in ct.app.ListCoupons(P.ListCouponsRequest()).coupons) == sorted([single.id, multi.id])
    page = ct.app.ListCoupons(P.ListCouponsRequest(page_size=1))
    assert len(page.coupons) == 1 and page.next_page_token
    rest = ct.app.ListCoupons(P.ListCouponsRequest(page_size=1, page_token=page.next_page_token))
    assert len(rest.coupons) == 1 and not rest.next_page_token

    off = ct.staff.DeactivateCoupon(P.DeactivateCouponRequest(coupon_id=multi.id))
    assert off.active is False
    # Twice: OK, unchanged.
    assert ct.staff.DeactivateCoupon(P.DeactivateCouponRequest(coupon_id=multi.id)) == off
    assert [c.id for c in ct.app.ListCoupons(P.ListCouponsRequest()).coupons] == [single.id]
    assert len(ct.app.ListCoupons(P.ListCouponsRequest(include_inactive=True)).coupons) == 2

    expect(cs, NOT_FOUND, ct.app.GetCoupon, P.GetCouponRequest(coupon_id="cpn_missing"), error_reason="NOT_FOUND")
    expect(cs, NOT_FOUND, ct.staff.DeactivateCoupon, P.DeactivateCouponRequest(coupon_id="cpn_missing"), error_reason="NOT_FOUND")
    expect(cs, INVALID, ct.staff.CreateCoupon, P.CreateCouponRequest(name="", max_uses=2_000),
           error_reason="INVALID_ARGUMENT", fields=["name", "service_id", "max_uses"])
    expect(cs, INVALID, ct.staff.CreateCoupon, P.CreateCouponRequest(name="x", service_id="s", validity_days=-1), fields=["validity_days"])


def test_app_key_cannot_change_coupons_revoke_or_rules(cs, ct):
    P = ct.pb
    expect(cs, DENIED, ct.app.CreateCoupon, P.CreateCouponRequest(name="x", service_id="s"), error_reason="PERMISSION_DENIED")
    coupon = ct.coupon()
    expect(cs, DENIED, ct.app.DeactivateCoupon, P.DeactivateCouponRequest(coupon_id=coupon.id))
    credit = ct.issue("c1", coupon.id).credit
    expect(cs, DENIED, ct.app.RevokeCustomerCredit, P.RevokeCustomerCreditRequest(credit_id=credit.id, idempotency_key=uid()))
    expect(cs, DENIED, ct.app.CreateMembershipCreditRule, P.CreateMembershipCreditRuleRequest(
        coupon_id=coupon.id, client_id="c1", membership_id="m", frequency=P.CREDIT_RULE_FREQUENCY_MONTHLY, day_of_month=1,
        idempotency_key=uid()))
    expect(cs, DENIED, ct.app.DisableMembershipCreditRule, P.DisableMembershipCreditRuleRequest(rule_id="rul_x"))
    assert ct.get(credit.id).credit.state == P.CUSTOMER_CREDIT_STATE_ACTIVE
    # No key at all.
    expect(cs, grpc.StatusCode.UNAUTHENTICATED, Bound(ct.app._stub, []).GetCoupon, P.GetCouponRequest(coupon_id=coupon.id))


def test_tenants_are_isolated(cs, cp, cchan, admin, ct):
    other = CouponTenant(cs, cp, cchan, admin)
    coupon = ct.coupon()
    credit = ct.issue("c1", coupon.id).credit
    expect(cs, NOT_FOUND, other.app.GetCoupon, ct.pb.GetCouponRequest(coupon_id=coupon.id))
    expect(cs, NOT_FOUND, other.get, credit.id)
    expect(cs, NOT_FOUND, other.redeem, credit.id)
    expect(cs, NOT_FOUND, other.issue, "c1", coupon.id)
    assert len(other.list("c1").credits) == 0


# ---------------------------------------------------------------- issue, redeem, cancel


def test_issue_and_redeem_single_use(cs, ct):
    P = ct.pb
    coupon = ct.coupon(validity_days=10)
    resp = ct.issue("alice", coupon.id, membership_id="gold", revenue_minor=5_000)
    c = resp.credit
    assert c.id and c.client_id == "alice" and c.coupon_id == coupon.id and c.membership_id == "gold"
    assert (c.max_uses, c.uses_remaining, c.uses_redeemed, c.multi_use) == (1, 1, 0, False)
    assert c.state == P.CUSTOMER_CREDIT_STATE_ACTIVE and c.revenue_minor == 5_000 and c.service_id == "massage-60"
    assert abs(c.expire_time.seconds - (time.time() + 10 * 86_400)) < 60
    assert resp.seq == c.issued_seq + 1  # the issue entry, then the revenue deferral

    r = ct.redeem(c.id, booking_ref="bk-1", center_id="c1", client_id="alice")
    assert r.credit.state == P.CUSTOMER_CREDIT_STATE_REDEEMED and r.credit.uses_remaining == 0
    assert r.redemption.state == P.REDEMPTION_STATE_ACTIVE and r.redemption.booking_ref == "bk-1"
    assert r.redemption.revenue_minor == 5_000 and r.credit.revenue_allocated_minor == 5_000
    f = expect(cs, FAILED, ct.redeem, c.id, error_reason="CREDIT_EXHAUSTED")
    assert f.info.metadata["credit_id"] == c.id and f.info.metadata["max_uses"] == "1"

    got = ct.get(c.id, include_redemptions=True)
    assert got.credit == r.credit and [x.id for x in got.redemptions] == [r.redemption.id]
    expect(cs, NOT_FOUND, ct.get, c.id, client_id="bob", error_reason="NOT_FOUND")
    expect(cs, NOT_FOUND, ct.get, "ccr_missing")
    expect(cs, NOT_FOUND, ct.redeem, "ccr_missing")
    # The ledger shows every change; the money balance is untouched.
    types_ = [e.type for e in all_entries(cs, ct.t.staff, "alice", oldest_first=True)]
    C = cs.common
    assert types_ == [C.ENTRY_TYPE_COUPON_ISSUE, C.ENTRY_TYPE_REVENUE_ALLOCATION, C.ENTRY_TYPE_COUPON_REDEEM,
                      C.ENTRY_TYPE_REVENUE_ALLOCATION]
    issue = all_entries(cs, ct.t.staff, "alice", oldest_first=True)[0]
    assert (issue.debit_account, issue.credit_account, issue.amount_minor) == ("coupon_uses:issued", "coupon_uses:client:alice", 1)
    assert ct.t.summary("alice") == (0, 0, 0)


def test_multi_use_revenue_split_cancel_and_cancel_twice(cs, ct):
    P = ct.pb
    credit = ct.issue("c1", ct.coupon(max_uses=3).id, revenue_minor=1_000).credit
    assert credit.multi_use and credit.uses_remaining == 3
    rs = [ct.redeem(credit.id) for _ in range(3)]
    assert [r.credit.uses_remaining for r in rs] == [2, 1, 0]
    assert [r.redemption.revenue_minor for r in rs] == [333, 333, 334]
    assert rs[-1].credit.state == P.CUSTOMER_CREDIT_STATE_REDEEMED and rs[-1].credit.revenue_allocated_minor == 1_000
    expect(cs, FAILED, ct.redeem, credit.id, error_reason="CREDIT_EXHAUSTED")

    cancelled = ct.cancel(rs[0].redemption.id, reason="booking cancelled")
    assert cancelled.redemption.state == P.REDEMPTION_STATE_CANCELLED and cancelled.redemption.cancel_seq > 0
    assert cancelled.credit.state == P.CUSTOMER_CREDIT_STATE_ACTIVE and cancelled.credit.uses_remaining == 1
    assert cancelled.credit.revenue_allocated_minor == 667
    f = expect(cs, FAILED, ct.cancel, rs[0].redemption.id, error_reason="REDEMPTION_ALREADY_CANCELLED")
    assert f.info.metadata["redemption_id"] == rs[0].redemption.id
    expect(cs, NOT_FOUND, ct.cancel, "crd_missing", error_reason="NOT_FOUND")
    again = ct.redeem(credit.id)
    assert again.redemption.revenue_minor == 333 and again.credit.revenue_allocated_minor == 1_000
    # Staff may redeem and cancel too.
    assert ct.cancel(again.redemption.id, actor=ct.staff).credit.uses_remaining == 1


def test_revoke_rules_and_twice(cs, ct):
    P = ct.pb
    coupon = ct.coupon(max_uses=2)
    used = ct.issue("c1", coupon.id).credit
    r = ct.redeem(used.id)
    f = expect(cs, FAILED, ct.revoke, used.id, error_reason="CREDIT_ALREADY_REDEEMED")
    assert f.info.metadata["uses_redeemed"] == "1"
    ct.cancel(r.redemption.id)
    revoked = ct.revoke(used.id, reason="goodwill withdrawn", client_id="c1")
    assert revoked.credit.state == P.CUSTOMER_CREDIT_STATE_REVOKED and revoked.credit.uses_remaining == 0
    assert revoked.credit.close_time.seconds > 0
    expect(cs, FAILED, ct.revoke, used.id, error_reason="CREDIT_REVOKED")
    expect(cs, FAILED, ct.redeem, used.id, error_reason="CREDIT_REVOKED")
    expect(cs, NOT_FOUND, ct.revoke, "ccr_missing", error_reason="NOT_FOUND")
    expect(cs, INVALID, ct.revoke, used.id, idempotency_key="", fields=["idempotency_key"])


def test_inactive_coupon_is_refused(cs, ct):
    P = ct.pb
    coupon = ct.coupon()
    ct.staff.DeactivateCoupon(P.DeactivateCouponRequest(coupon_id=coupon.id))
    f = expect(cs, FAILED, ct.issue, "c1", coupon.id, error_reason="COUPON_INACTIVE")
    assert f.info.metadata["coupon_id"] == coupon.id
    expect(cs, FAILED, ct.staff.CreateMembershipCreditRule, P.CreateMembershipCreditRuleRequest(
        coupon_id=coupon.id, client_id="c1", membership_id="m", frequency=P.CREDIT_RULE_FREQUENCY_WEEKLY, day_of_week=1,
        idempotency_key=uid()), error_reason="COUPON_INACTIVE")
    expect(cs, NOT_FOUND, ct.issue, "c1", "cpn_missing", error_reason="NOT_FOUND")
    assert len(ct.list("c1", include_redeemed=True, include_expired=True, include_revoked=True).credits) == 0


def test_expiry(cs, ct):
    P = ct.pb
    coupon = ct.coupon(max_uses=2)
    expect(cs, INVALID, ct.issue, "c1", coupon.id, expire_time=ts(-5), fields=["expire_time"])
    credit = ct.issue("c1", coupon.id, expire_time=ts(1.5), revenue_minor=100).credit
    ct.redeem(credit.id)
    # Expired by time on every read once expire_time passes (no write needed).
    wait_until(lambda: ct.get(credit.id).credit.state == P.CUSTOMER_CREDIT_STATE_EXPIRED, 10, "the credit expires")
    f = expect(cs, FAILED, ct.redeem, credit.id, error_reason="CREDIT_EXPIRED")
    assert f.info.metadata["credit_id"] == credit.id
    got = ct.get(credit.id).credit
    assert got.state == P.CUSTOMER_CREDIT_STATE_EXPIRED and got.uses_remaining == 0
    assert [c.id for c in ct.list("c1").credits] == []
    assert [c.id for c in ct.list("c1", include_expired=True).credits] == [credit.id]
    # The server's maintenance writes the expiry entry (1 use, 50 revenue released).
    deadline = time.time() + 10
    while time.time() < deadline:
        entries = all_entries(cs, ct.t.staff, "c1")
        if any(e.type == cs.common.ENTRY_TYPE_COUPON_EXPIRY for e in entries):
            break
        time.sleep(0.1)
    expiry = [e for e in entries if e.type == cs.common.ENTRY_TYPE_COUPON_EXPIRY]
    assert len(expiry) == 1 and expiry[0].amount_minor == 1 and expiry[0].credit_account == "coupon_uses:expired"
    assert ct.get(credit.id).credit.revenue_released_minor == 50
    # Revoking an expired credit (with a use redeemed) is refused.
    expect(cs, FAILED, ct.revoke, credit.id, error_reason="CREDIT_ALREADY_REDEEMED")
    other = ct.issue("c1", coupon.id, expire_time=ts(1)).credit
    wait_until(lambda: ct.get(other.id).credit.state == P.CUSTOMER_CREDIT_STATE_EXPIRED, 10, "the other credit expires")
    expect(cs, FAILED, ct.revoke, other.id, error_reason="CREDIT_EXPIRED")


# ---------------------------------------------------------------- list


def test_list_filters_and_paging(cs, ct):
    P = ct.pb
    single, multi = ct.coupon().id, ct.coupon(max_uses=3).id
    active = ct.issue("c1", single).credit.id
    redeemed = ct.issue("c1", single).credit.id
    ct.redeem(redeemed)
    revoked = ct.issue("c1", multi).credit.id
    ct.revoke(revoked)
    partly = ct.issue("c1", multi).credit.id
    ct.redeem(partly)
    ct.issue("someone-else", single)

    def ids(**kw):
        return [c.id for c in ct.list("c1", **kw).credits]

    assert ids() == [partly, active]
    assert ids(include_redeemed=True) == [partly, redeemed, active]
    assert ids(include_revoked=True) == [partly, revoked, active]
    everything = [partly, revoked, redeemed, active]
    assert ids(include_redeemed=True, include_revoked=True, include_expired=True) == everything
    assert ids(include_redeemed=True, include_revoked=True, multi_use=P.MULTI_USE_FILTER_MULTI_USE_ONLY) == [partly, revoked]
    assert ids(include_redeemed=True, include_revoked=True, multi_use=P.MULTI_USE_FILTER_SINGLE_USE_ONLY) == [redeemed, active]
    assert ids(include_redeemed=True, include_revoked=True, multi_use=P.MULTI_USE_FILTER_ALL) == everything

    flt = dict(include_redeemed=True, include_revoked=True)
    first = ct.list("c1", page_size=3, **flt)
    assert [c.id for c in first.credits] == everything[:3] and first.total_size == 4 and first.next_page_token
    second = ct.list("c1", page_size=3, page_token=first.next_page_token, **flt)
    assert [c.id for c in second.credits] == everything[3:] and not second.next_page_token
    # Page numbers (1-based) give the same pages.
    assert [c.id for c in ct.list("c1", page_size=3, page=1, **flt).credits] == everything[:3]
    assert [c.id for c in ct.list("c1", page_size=3, page=2, **flt).credits] == everything[3:]
    assert ct.list("c1", page_size=3, page=3, **flt).credits == []
    expect(cs, INVALID, ct.list, "c1", page_size=3, page=2, page_token=first.next_page_token, fields=["page", "page_token"])
    expect(cs, INVALID, ct.list, "c1", page=-1, fields=["page"])
    expect(cs, INVALID, ct.list, "c1", page_size=5_000, fields=["page_size"])
    # A token is bound to its filters.
    expect(cs, INVALID, ct.list, "c1", page_size=3, page_token=first.next_page_token, fields=["page_token"])
    expect(cs, INVALID, ct.list, "", fields=["client_id"])


# ---------------------------------------------------------------- idempotency


def test_idempotency_keys(cs, ct):
    P = ct.pb
    coupon = ct.coupon(max_uses=5)
    req = P.IssueCustomerCreditRequest(client_id="c1", coupon_id=coupon.id, revenue_minor=10, idempotency_key="issue-1")
    first = ct.app.IssueCustomerCredit(req)
    assert ct.app.IssueCustomerCredit(req) == first
    f = expect(cs, EXISTS, ct.app.IssueCustomerCredit, P.IssueCustomerCreditRequest(
        client_id="c1", coupon_id=coupon.id, revenue_minor=11, idempotency_key="issue-1"), error_reason="IDEMPOTENCY_KEY_REUSED")
    assert f.info.metadata["differing_fields"] == "revenue_minor" and f.info.metadata["existing_result_id"] == first.credit.id
    expect(cs, INVALID, ct.app.IssueCustomerCredit, P.IssueCustomerCreditRequest(client_id="c1", coupon_id=coupon.id),
           fields=["idempotency_key"])
    # The key may come as metadata.
    via_md = ct.app.IssueCustomerCredit(P.IssueCustomerCreditRequest(client_id="c1", coupon_id=coupon.id),
                                        metadata=[("idempotency-key", "issue-md")])
    assert ct.app.IssueCustomerCredit(P.IssueCustomerCreditRequest(client_id="c1", coupon_id=coupon.id),
                                      metadata=[("idempotency-key", "issue-md")]) == via_md
    # Redeem and cancel replays change nothing.
    r1 = ct.redeem(first.credit.id, idempotency_key="redeem-1", booking_ref="bk-1")
    assert ct.redeem(first.credit.id, idempotency_key="redeem-1", booking_ref="bk-1") == r1
    c1 = ct.cancel(r1.redemption.id, idempotency_key="cancel-1")
    assert ct.cancel(r1.redemption.id, idempotency_key="cancel-1") == c1
    assert ct.get(first.credit.id).credit.uses_redeemed == 0
    op = ct.t.staff.credit.GetOperation(cs.credits.GetOperationRequest(idempotency_key="redeem-1"))
    assert op.operation == "redeem_customer_credit" and op.result_id == r1.redemption.id
    assert operation_response(op, P.RedemptionResponse) == r1


def test_concurrent_redeems_never_exceed_uses(cs, ct, credits_server):
    uses, racers = 5, 40
    credit = ct.issue("c1", ct.coupon(max_uses=uses).id, revenue_minor=100).credit

    def one(i):
        try:
            ct.redeem(credit.id, idempotency_key=f"race-{credit.id}-{i}")
            return "ok"
        except grpc.RpcError as e:
            return e.code()

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(racers)))
    assert results.count("ok") == uses
    assert results.count(FAILED) == racers - uses
    final = ct.get(credit.id).credit
    assert final.uses_redeemed == uses and final.revenue_allocated_minor == 100
    verify_ok(credits_server.db)


# ---------------------------------------------------------------- membership credit rules


def test_membership_credit_rules(cs, ct, credits_server):
    P = ct.pb
    coupon = ct.coupon(max_uses=2, validity_days=30)
    today = datetime.datetime.now(datetime.timezone.utc).isoweekday()
    start = ts(-86_400)
    rule = ct.staff.CreateMembershipCreditRule(P.CreateMembershipCreditRuleRequest(
        coupon_id=coupon.id, client_id="member", membership_id="gold", frequency=P.CREDIT_RULE_FREQUENCY_WEEKLY,
        day_of_week=today, revenue_minor=900, start_time=start, idempotency_key=uid()))
    assert rule.id and rule.enabled and rule.day_of_week == today and rule.day_of_month == 0
    assert rule.next_issue_time.seconds <= time.time()
    # Due now: the server's maintenance issues this week's credit within a few seconds, once.
    wait_until(lambda: ct.list("member").credits, 10, "maintenance issues the rule's credit")
    # What is under test, not a wait for it: the passes that follow (one a
    # second) must not issue it again. A pass that issues nothing leaves no
    # trace to poll for, so the test lets at least one run.
    time.sleep(1.5)
    credits = ct.list("member").credits
    assert len(credits) == 1
    c = credits[0]
    assert (c.rule_id, c.membership_id, c.revenue_minor, c.max_uses) == (rule.id, "gold", 900, 2)
    listed = ct.app.ListMembershipCreditRules(P.ListMembershipCreditRulesRequest(client_id="member")).rules
    assert [r.id for r in listed] == [rule.id]
    assert listed[0].last_period.startswith("week-") and listed[0].next_issue_time.seconds > time.time()

    disabled = ct.staff.DisableMembershipCreditRule(P.DisableMembershipCreditRuleRequest(rule_id=rule.id))
    assert not disabled.enabled and disabled.disable_time.seconds > 0
    assert ct.staff.DisableMembershipCreditRule(P.DisableMembershipCreditRuleRequest(rule_id=rule.id)) == disabled
    assert ct.app.ListMembershipCreditRules(P.ListMembershipCreditRulesRequest(client_id="member")).rules == []
    assert len(ct.app.ListMembershipCreditRules(P.ListMembershipCreditRulesRequest(include_disabled=True)).rules) == 1
    expect(cs, NOT_FOUND, ct.staff.DisableMembershipCreditRule, P.DisableMembershipCreditRuleRequest(rule_id="rul_x"),
           error_reason="NOT_FOUND")

    monthly = ct.staff.CreateMembershipCreditRule(P.CreateMembershipCreditRuleRequest(
        coupon_id=coupon.id, client_id="member2", membership_id="m", frequency=P.CREDIT_RULE_FREQUENCY_MONTHLY, day_of_month=28,
        idempotency_key=uid()))
    assert monthly.day_of_month == 28 and monthly.next_issue_time.seconds >= int(time.time()) - 1
    bad = dict(coupon_id=coupon.id, client_id="c", membership_id="m", idempotency_key=uid())
    expect(cs, INVALID, ct.staff.CreateMembershipCreditRule, P.CreateMembershipCreditRuleRequest(**bad), fields=["frequency"])
    expect(cs, INVALID, ct.staff.CreateMembershipCreditRule, P.CreateMembershipCreditRuleRequest(
        frequency=P.CREDIT_RULE_FREQUENCY_MONTHLY, day_of_month=29, **bad), fields=["day_of_month"])
    expect(cs, INVALID, ct.staff.CreateMembershipCreditRule, P.CreateMembershipCreditRuleRequest(
        frequency=P.CREDIT_RULE_FREQUENCY_WEEKLY, day_of_week=8, **bad), fields=["day_of_week"])
    expect(cs, INVALID, ct.staff.CreateMembershipCreditRule, P.CreateMembershipCreditRuleRequest(
        frequency=P.CREDIT_RULE_FREQUENCY_WEEKLY, day_of_week=1, day_of_month=3, **bad), fields=["day_of_month"])
    expect(cs, NOT_FOUND, ct.staff.CreateMembershipCreditRule, P.CreateMembershipCreditRuleRequest(
        coupon_id="cpn_missing", client_id="c", membership_id="m", frequency=P.CREDIT_RULE_FREQUENCY_WEEKLY, day_of_week=1,
        idempotency_key=uid()), error_reason="NOT_FOUND")
    verify_ok(credits_server.db)
