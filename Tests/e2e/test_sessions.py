"""End-to-end tests of credits.v1.SessionPackageService (SPEC §5, seed 003
"Use Client Package Credit") against the real `credits serve` binary."""

from __future__ import annotations

import concurrent.futures
import importlib

import grpc
import pytest

from credits_api import INVALID, FAILED, DENIED, NOT_FOUND, EXISTS, Bound, Tenant, admin_actor, channel_for, decode, expect, ts, uid



@pytest.fixture(scope="module")
def cs(credits_stubs):
    # credits_stubs generated every credits/v1 proto; load the session modules.
    credits_stubs.sessions = importlib.import_module("credits.v1.sessions_pb2")
    credits_stubs.sessions_grpc = importlib.import_module("credits.v1.sessions_pb2_grpc")
    return credits_stubs


def bound(cs, cchan, token: str, on_behalf_of: str | None = None) -> Bound:
    """SessionPackageService calls with a bearer token (and x-on-behalf-of)."""
    md = [("authorization", f"Bearer {token}")]
    if on_behalf_of is not None:
        md.append(("x-on-behalf-of", on_behalf_of))
    return Bound(cs.sessions_grpc.SessionPackageServiceStub(cchan), md)


class Sessions:
    """A fresh tenant with session-package stubs bound to its staff and app keys."""

    def __init__(self, cs, cchan, admin, **kw):
        self.cs = cs
        self.S = cs.sessions
        self.t = Tenant(cs, cchan, admin, **kw)
        self.staff = bound(cs, cchan, self.t.staff_key.token)
        self.app = bound(cs, cchan, self.t.app_key.token)

    def create(self, client="alice", lines=(("massage", 10), ("facial", 5)), start=-60, end=30 * 86400, **kw):
        kw.setdefault("idempotency_key", uid("k-"))
        return self.staff.CreateClientPackage(self.S.CreateClientPackageRequest(
            client_id=client, name=kw.pop("name", "Spa bundle"), valid_from=ts(start), valid_until=ts(end),
            lines=[self.S.NewSessionLine(service_id=s, total_sessions=n) for s, n in lines], **kw))

    def use(self, ref, client="alice", service="massage", stub=None, **kw):
        kw.setdefault("idempotency_key", uid("k-"))
        return (stub or self.app).UsePackageCredit(self.S.UsePackageCreditRequest(
            payment_ref=ref, client_id=client, service_id=service, **kw))

    def cancel(self, stub=None, **kw):
        kw.setdefault("idempotency_key", uid("k-"))
        return (stub or self.app).CancelPackageRedemption(self.S.CancelPackageRedemptionRequest(**kw))

    def get(self, package_id):
        return self.staff.GetClientPackage(self.S.GetClientPackageRequest(client_package_id=package_id))


@pytest.fixture
def s(cs, cchan, admin):
    return Sessions(cs, cchan, admin)


def lines(pkg):
    return {l.service_id: (l.total_sessions, l.used_sessions, l.forfeited_sessions, l.sessions_left) for l in pkg.lines}


# ---------------------------------------------------------------- packages


def test_create_get_list_deactivate(cs, s):
    S = s.S
    r = s.create(scope_id="m1")
    p = r.client_package
    assert p.id.startswith("spk_") and p.client_id == "alice" and p.scope_id == "m1" and p.active
    assert lines(p) == {"massage": (10, 0, 0, 10), "facial": (5, 0, 0, 5)}
    assert r.seq == p.created_seq + 1
    assert s.get(p.id).client_package == p
    # Reads: any tenant key.
    assert s.app.GetClientPackage(S.GetClientPackageRequest(client_package_id=p.id)).client_package == p

    # The grants are ledger entries of the client (amounts count sessions).
    entries = s.t.entries("alice", oldest_first=True)
    assert [(e.type, e.amount_minor, e.debit_account, e.credit_account) for e in entries] == [
        (cs.common.ENTRY_TYPE_SESSION_GRANT, 10, "sessions:granted", f"sessions:{p.id}:massage"),
        (cs.common.ENTRY_TYPE_SESSION_GRANT, 5, "sessions:granted", f"sessions:{p.id}:facial"),
    ]
    assert s.t.summary("alice") == (0, 0, 0)

    p2 = s.create(lines=(("yoga", 1),)).client_package
    s.create(client="bob")
    page1 = s.staff.ListClientPackages(S.ListClientPackagesRequest(client_id="alice", page_size=1))
    assert [x.id for x in page1.client_packages] == [p.id] and page1.next_page_token
    page2 = s.staff.ListClientPackages(S.ListClientPackagesRequest(client_id="alice", page_size=1, page_token=page1.next_page_token))
    assert [x.id for x in page2.client_packages] == [p2.id] and not page2.next_page_token
    expect(cs, INVALID, s.staff.ListClientPackages,
           S.ListClientPackagesRequest(client_id="alice", page_token=page1.next_page_token, include_inactive=True), fields=["page_token"])
    expect(cs, INVALID, s.staff.ListClientPackages, S.ListClientPackagesRequest(client_id="alice", page_size=1001), fields=["page_size"])
    expect(cs, INVALID, s.staff.ListClientPackages, S.ListClientPackagesRequest(), fields=["client_id"])

    s.use("pay-1")
    d = s.staff.DeactivateClientPackage(S.DeactivateClientPackageRequest(client_package_id=p.id, reason="refund",
                                                                        idempotency_key=uid("k-")))
    assert not d.client_package.active and d.client_package.deactivation_reason == "refund"
    assert lines(d.client_package) == {"massage": (10, 1, 9, 0), "facial": (5, 0, 5, 0)}
    assert d.client_package.deactivate_time.seconds > 0
    forfeits = [e for e in s.t.entries("alice") if e.type == cs.common.ENTRY_TYPE_SESSION_FORFEIT]
    assert sorted(e.amount_minor for e in forfeits) == [5, 9]
    # Twice: CLIENT_PACKAGE_INACTIVE.
    expect(cs, FAILED, s.staff.DeactivateClientPackage,
           S.DeactivateClientPackageRequest(client_package_id=p.id, idempotency_key=uid("k-")), error_reason="CLIENT_PACKAGE_INACTIVE")
    listed = s.staff.ListClientPackages(S.ListClientPackagesRequest(client_id="alice"))
    assert [x.id for x in listed.client_packages] == [p2.id]
    listed = s.staff.ListClientPackages(S.ListClientPackagesRequest(client_id="alice", include_inactive=True))
    assert [x.id for x in listed.client_packages] == [p.id, p2.id]

    expect(cs, NOT_FOUND, s.staff.GetClientPackage, S.GetClientPackageRequest(client_package_id="spk_nope"), error_reason="NOT_FOUND")
    expect(cs, NOT_FOUND, s.staff.DeactivateClientPackage,
           S.DeactivateClientPackageRequest(client_package_id="spk_nope", idempotency_key=uid("k-")), error_reason="NOT_FOUND")


def test_create_validation_and_permissions(cs, s):
    S = s.S
    expect(cs, INVALID, s.create, lines=(), fields=["lines"])
    expect(cs, INVALID, s.create, lines=(("a", 1), ("a", 1)), fields=["lines[1].service_id"])
    expect(cs, INVALID, s.create, start=100, end=50, fields=["valid_until"])
    expect(cs, INVALID, s.create, start=-100, end=-50, fields=["valid_until"])
    expect(cs, INVALID, s.staff.CreateClientPackage, S.CreateClientPackageRequest(
        client_id="a", valid_until=ts(100), lines=[S.NewSessionLine(service_id="x", total_sessions=1)], idempotency_key="k"),
        fields=["valid_from"])
    expect(cs, INVALID, s.create, idempotency_key="", fields=["idempotency_key"])
    # Create and deactivate are staff only.
    req = S.CreateClientPackageRequest(client_id="a", valid_from=ts(0), valid_until=ts(100),
                                       lines=[S.NewSessionLine(service_id="x", total_sessions=1)], idempotency_key=uid("k-"))
    expect(cs, DENIED, s.app.CreateClientPackage, req, error_reason="PERMISSION_DENIED")
    p = s.create().client_package
    expect(cs, DENIED, s.app.DeactivateClientPackage,
           S.DeactivateClientPackageRequest(client_package_id=p.id, idempotency_key=uid("k-")), error_reason="PERMISSION_DENIED")


# ---------------------------------------------------------------- use and cancel


def test_use_then_already_paid_then_cancel_and_pay_again(cs, s):
    S = s.S
    p = s.create().client_package
    r = s.use("pay-1")
    assert r.redemption.id.startswith("rdm_") and r.redemption.client_package_id == p.id
    assert r.redemption.state == S.PACKAGE_REDEMPTION_STATE_ACTIVE and r.redemption.payment_ref == "pay-1"
    assert lines(r.client_package)["massage"] == (10, 1, 0, 9)
    assert (r.payment.paid, r.payment.price_minor, r.payment.redemption_id, r.payment.client_id) == (True, 0, r.redemption.id, "alice")
    assert r.seq == r.redemption.seq and r.seq > 0

    f = expect(cs, FAILED, s.use, "pay-1", error_reason="ALREADY_PAID")
    assert f.info.metadata["redemption_id"] == r.redemption.id

    got = s.app.GetPackageRedemption(S.GetPackageRedemptionRequest(payment_ref="pay-1"))
    assert got.redemption == r.redemption and got.payment == r.payment
    assert s.app.GetPackageRedemption(S.GetPackageRedemptionRequest(redemption_id=r.redemption.id)).redemption == r.redemption

    c = s.cancel(payment_ref="pay-1", reason="no-show waived")
    assert c.redemption.state == S.PACKAGE_REDEMPTION_STATE_CANCELLED and c.redemption.cancel_reason == "no-show waived"
    assert c.redemption.cancel_seq == c.seq and not c.payment.paid
    assert lines(c.client_package)["massage"] == (10, 0, 0, 10)
    # Twice: REDEMPTION_ALREADY_CANCELLED, by id and by payment ref.
    expect(cs, FAILED, s.cancel, redemption_id=r.redemption.id, error_reason="REDEMPTION_ALREADY_CANCELLED")
    expect(cs, FAILED, s.cancel, payment_ref="pay-1", error_reason="REDEMPTION_ALREADY_CANCELLED")

    again = s.use("pay-1")
    assert again.redemption.id != r.redemption.id and again.payment.paid
    assert lines(again.client_package)["massage"] == (10, 1, 0, 9)
    types = [e.type for e in s.t.entries("alice", oldest_first=True)]
    E = cs.common
    assert types[-3:] == [E.ENTRY_TYPE_SESSION_USE, E.ENTRY_TYPE_SESSION_RETURN, E.ENTRY_TYPE_SESSION_USE]


def test_eligibility_rules(cs, s):
    # Several eligible: the soonest valid_until first.
    late = s.create(lines=(("massage", 1),), end=40 * 86400).client_package
    soon = s.create(lines=(("massage", 1), ("facial", 3)), end=10 * 86400, scope_id="m1").client_package
    assert s.use("p1").client_package.id == soon.id
    # Used-up line: not eligible even though the facial line has sessions.
    assert s.use("p2").client_package.id == late.id
    f = expect(cs, FAILED, s.use, "p3", error_reason="NO_PACKAGE_TO_USE")
    assert f.details == "There is no package to use"
    assert s.use("p3", service="facial").client_package.id == soon.id
    # Scope id restricts the packages that qualify.
    expect(cs, FAILED, s.use, "p4", service="facial", scope_id="m2", error_reason="NO_PACKAGE_TO_USE")
    assert s.use("p4", service="facial", scope_id="m1").redemption.scope_id == "m1"
    # Not yet valid; inactive.
    future = s.create(client="carl", lines=(("massage", 1),), start=3600, end=7200).client_package
    expect(cs, FAILED, s.use, "p5", client="carl", error_reason="NO_PACKAGE_TO_USE")
    s.staff.DeactivateClientPackage(s.S.DeactivateClientPackageRequest(client_package_id=future.id, idempotency_key=uid("k-")))
    # A reference of another client.
    s.cancel(payment_ref="p4")
    s.create(client="dora", lines=(("facial", 1),))
    expect(cs, FAILED, s.use, "p4", client="dora", service="facial", error_reason="PAYMENT_REF_OTHER_CLIENT")


def test_use_and_cancel_validation_and_not_found(cs, s):
    S = s.S
    expect(cs, INVALID, s.use, "", fields=["payment_ref"])
    expect(cs, INVALID, s.use, "p", service="", fields=["service_id"])
    expect(cs, INVALID, s.use, "p", idempotency_key="", fields=["idempotency_key"])
    expect(cs, INVALID, s.cancel, fields=["redemption_id"])
    expect(cs, INVALID, s.cancel, redemption_id="rdm_x", payment_ref="p", fields=["payment_ref"])
    expect(cs, NOT_FOUND, s.cancel, redemption_id="rdm_x", error_reason="NOT_FOUND")
    expect(cs, NOT_FOUND, s.cancel, payment_ref="nope", error_reason="NOT_FOUND")
    expect(cs, INVALID, s.app.GetPackageRedemption, S.GetPackageRedemptionRequest(), fields=["redemption_id"])
    expect(cs, NOT_FOUND, s.app.GetPackageRedemption, S.GetPackageRedemptionRequest(redemption_id="rdm_x"), error_reason="NOT_FOUND")
    expect(cs, NOT_FOUND, s.app.GetPackageRedemption, S.GetPackageRedemptionRequest(payment_ref="nope"), error_reason="NOT_FOUND")


def test_idempotent_retries(cs, s):
    S = s.S
    key = uid("k-")
    created = s.create(idempotency_key=key)
    # Same key and request (same timestamps): the original answer.
    req = S.CreateClientPackageRequest(client_id="alice", name="Spa bundle", valid_from=created.client_package.valid_from,
                                       valid_until=created.client_package.valid_until, idempotency_key=key,
                                       lines=[S.NewSessionLine(service_id="massage", total_sessions=10),
                                              S.NewSessionLine(service_id="facial", total_sessions=5)])
    assert s.staff.CreateClientPackage(req) == created
    req.name = "Other"
    f = expect(cs, EXISTS, s.staff.CreateClientPackage, req, error_reason="IDEMPOTENCY_KEY_REUSED")
    assert f.info.metadata["differing_fields"] == "name"
    assert f.info.metadata["existing_result_id"] == created.client_package.id

    ukey = uid("k-")
    used = s.use("pay-1", idempotency_key=ukey)
    assert s.use("pay-1", idempotency_key=ukey) == used
    # The key as metadata.
    assert s.app.UsePackageCredit(S.UsePackageCreditRequest(payment_ref="pay-1", client_id="alice", service_id="massage"),
                                  metadata=[("idempotency-key", ukey)]) == used
    f = expect(cs, EXISTS, s.use, "pay-2", idempotency_key=ukey, error_reason="IDEMPOTENCY_KEY_REUSED")
    assert f.info.metadata["differing_fields"] == "payment_ref"
    assert lines(s.get(created.client_package.id).client_package)["massage"] == (10, 1, 0, 9)

    ckey = uid("k-")
    c = s.cancel(redemption_id=used.redemption.id, idempotency_key=ckey)
    assert s.cancel(redemption_id=used.redemption.id, idempotency_key=ckey) == c
    assert lines(s.get(created.client_package.id).client_package)["massage"] == (10, 0, 0, 10)


def test_directory_key_with_on_behalf_of_may_use_and_cancel(cs, cchan, admin):
    s = Sessions(cs, cchan, admin, allow_directory=True)
    d = admin.admin.CreateApiKey(cs.admin.CreateApiKeyRequest(role=cs.admin.ROLE_DIRECTORY, label="directory"))
    directory = bound(cs, cchan, d.token, on_behalf_of=s.t.id)
    p = s.create().client_package
    r = s.use("pay-d", stub=directory)
    assert r.client_package.id == p.id and r.payment.paid
    assert s.cancel(stub=directory, payment_ref="pay-d").payment.paid is False
    # Not staff: no package creation.
    expect(cs, DENIED, directory.CreateClientPackage, s.S.CreateClientPackageRequest(
        client_id="a", valid_from=ts(0), valid_until=ts(100), lines=[s.S.NewSessionLine(service_id="x", total_sessions=1)],
        idempotency_key=uid("k-")), error_reason="PERMISSION_DENIED")
    # Another tenant's key sees nothing of this tenant.
    other = Sessions(cs, cchan, admin)
    expect(cs, NOT_FOUND, other.staff.GetClientPackage, cs.sessions.GetClientPackageRequest(client_package_id=p.id))
    expect(cs, NOT_FOUND, other.staff.GetPackageRedemption, cs.sessions.GetPackageRedemptionRequest(redemption_id=r.redemption.id))


def test_race_many_uses_on_few_sessions(cs, s):
    n, m = 8, 60
    p = s.create(lines=(("massage", n),)).client_package
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(lambda i=i: s.use(f"race-{i}")) for i in range(m)]
        ok, failed = 0, []
        for fut in futures:
            try:
                fut.result()
                ok += 1
            except grpc.RpcError as e:
                failed.append(decode(cs, e))
    assert ok == n
    assert len(failed) == m - n
    assert all(f.code == FAILED and f.info.reason == "NO_PACKAGE_TO_USE" for f in failed)
    assert lines(s.get(p.id).client_package)["massage"] == (n, n, 0, 0)
