"""Errors are complete and in the right order; no data lost through a
plausible update (issue 13 items 3 and 8).

- BadRequest lists every invalid field of a request, not only the first.
- Authentication and authorization come before the body: an unknown key is
  UNAUTHENTICATED and a staff key on an admin method PERMISSION_DENIED,
  whatever the body holds (even bytes that are not a message at all).
- UpdateCreditPackage follows AIP-134: an empty mask means "the fields set in
  the request", `*` full replacement, unknown paths INVALID_ARGUMENT.
"""

from __future__ import annotations

import grpc
import pytest

from credits_api import DENIED, INVALID, UNAUTH, Tenant, decode, expect, uid

SPEND = "/credits.v1.CreditService/SpendCredits"
CREATE_TENANT = "/credits.v1.AdminService/CreateTenant"
GARBAGE = b"\x0a\xff\xff\xff\xff\x0f"  # a length past the end: not a message
NUL_CLIENT = b"\x0a\x03a\x00b"  # client_id "a\0b"


@pytest.fixture(scope="module")
def t(cs, cchan, admin):
    return Tenant(cs, cchan, admin)


def raw(channel, path: str, body: bytes, token: str | None):
    md = [("authorization", f"Bearer {token}")] if token else []
    method = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        return method(body, metadata=md, timeout=10), None
    except grpc.RpcError as e:
        return None, e


def fields(cs, err) -> list[str]:
    f = decode(cs, err)
    assert f.code == INVALID, f"{f.code}: {f.details}"
    return [v.field for v in f.bad_request.field_violations]


def test_every_invalid_field_of_a_spend_is_listed(cs, t):
    C = cs.credits
    f = expect(cs, INVALID, t.staff.credit.SpendCredits, C.SpendCreditsRequest(idempotency_key=uid("k-")))
    got = [v.field for v in f.bad_request.field_violations]
    assert sorted(got) == sorted(["reason", "client_id", "amount_minor", "center_id"]), got
    f = expect(cs, INVALID, t.staff.credit.SpendCredits, C.SpendCreditsRequest())
    got = [v.field for v in f.bad_request.field_violations]
    assert sorted(got) == sorted(["reason", "client_id", "amount_minor", "center_id", "idempotency_key"]), got


def test_every_invalid_field_of_a_hold_and_capture_is_listed(cs, t):
    C = cs.credits
    f = expect(cs, INVALID, t.staff.credit.CreateHold, C.CreateHoldRequest(amount_minor=-5, idempotency_key=uid("k-")))
    got = [v.field for v in f.bad_request.field_violations]
    assert sorted(got) == sorted(["expire_time", "client_id", "amount_minor", "center_id"]), got
    f = expect(cs, INVALID, t.staff.credit.CaptureHold, C.CaptureHoldRequest(amount_minor=-1, reason=99,
                                                                             idempotency_key=uid("k-")))
    got = [v.field for v in f.bad_request.field_violations]
    assert sorted(got) == sorted(["reason", "amount_minor", "hold_id"]), got


def test_every_invalid_field_of_a_package_is_listed(cs, t):
    P = cs.packages
    f = expect(cs, INVALID, t.staff.packages.CreateCreditPackage, P.CreateCreditPackageRequest(validity_days=-1))
    got = [v.field for v in f.bad_request.field_violations]
    assert sorted(got) == sorted(["validity_days", "name", "credits_minor"]), got


def test_unknown_key_is_unauthenticated_whatever_the_body(cs, cchan, t):
    for body in (GARBAGE, NUL_CLIENT, b""):
        _, err = raw(cchan, SPEND, body, "key_nope.secret")
        assert err is not None and err.code() == UNAUTH, (body, err and err.code())
        _, err = raw(cchan, SPEND, body, None)
        assert err.code() == UNAUTH, body
        _, err = raw(cchan, CREATE_TENANT, body, "key_nope.secret")
        assert err.code() == UNAUTH, body


def test_missing_role_is_permission_denied_whatever_the_body(cs, cchan, t):
    for body in (GARBAGE, NUL_CLIENT, b""):
        _, err = raw(cchan, CREATE_TENANT, body, t.staff_key.token)
        assert err.code() == DENIED, (body, err.code(), err.details())
        _, err = raw(cchan, "/credits.v1.CreditService/AdjustBalance", body, t.app_key.token)
        assert err.code() == DENIED, (body, err.code(), err.details())
    # With the right key the body is looked at.
    _, err = raw(cchan, SPEND, GARBAGE, t.staff_key.token)
    assert err.code() == INVALID


def test_update_with_empty_mask_changes_only_the_fields_set(cs, t):
    P = cs.packages
    created = t.package(credits=10_000, price=9_000, name="Ten", validity_days=30,
                        scope=cs.common.Scope(service_categories=["classes"]))
    # A newcomer's update: name, credits and price, no mask.
    updated = t.staff.packages.UpdateCreditPackage(P.UpdateCreditPackageRequest(
        package=P.CreditPackage(id=created.id, name="Twelve", credits_minor=12_000, price_minor=10_000)))
    assert (updated.name, updated.credits_minor, updated.price_minor) == ("Twelve", 12_000, 10_000)
    assert updated.active is True
    assert updated.validity_days == 30
    assert list(updated.scope.service_categories) == ["classes"]

    # '*' replaces every updatable field.
    replaced = t.staff.packages.UpdateCreditPackage(P.UpdateCreditPackageRequest(
        package=P.CreditPackage(id=created.id, name="Plain", credits_minor=1_000, price_minor=0),
        update_mask={"paths": ["*"]}))
    assert (replaced.name, replaced.credits_minor, replaced.price_minor, replaced.validity_days, replaced.active) == (
        "Plain", 1_000, 0, 0, False)
    assert list(replaced.scope.service_categories) == []

    # A path naming a default value sets it.
    back = t.staff.packages.UpdateCreditPackage(P.UpdateCreditPackageRequest(
        package=P.CreditPackage(id=created.id, active=True), update_mask={"paths": ["active"]}))
    assert back.active is True and back.name == "Plain"


def test_update_mask_errors(cs, t):
    P = cs.packages
    pkg = t.package()
    for paths in (["no_such_field"], ["*", "name"], ["name", "id"]):
        f = expect(cs, INVALID, t.staff.packages.UpdateCreditPackage, P.UpdateCreditPackageRequest(
            package=P.CreditPackage(id=pkg.id, name="x"), update_mask={"paths": paths}))
        assert "update_mask" in [v.field for v in f.bad_request.field_violations], paths
    # Nothing set and no mask: nothing to update.
    expect(cs, INVALID, t.staff.packages.UpdateCreditPackage, P.UpdateCreditPackageRequest(
        package=P.CreditPackage(id=pkg.id)), fields=["update_mask"])
    assert t.staff.packages.GetCreditPackage(P.GetCreditPackageRequest(package_id=pkg.id)) == pkg


def test_every_invalid_field_of_a_statement_read_is_listed(cs, t):
    C = cs.credits
    from google.protobuf import timestamp_pb2
    far = timestamp_pb2.Timestamp(seconds=400_000_000_000)
    f = expect(cs, INVALID, t.staff.credit.ListLedgerEntries, C.ListLedgerEntriesRequest(
        page_size=-1, start_time=far, types=[999]))
    got = [v.field for v in f.bad_request.field_violations]
    assert sorted(got) == sorted(["client_id", "page_size", "start_time", "types[0]"]), got


def test_status_messages_quoting_client_input_stay_bounded(cchan):
    """A message that quotes what the client sent (here a 100 kB service name)
    is cut, so that the trailers stay within every client's header limits."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(cchan)
    for n in (5_000, 100_000):
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="x" * n), timeout=5)
            raise AssertionError("an unknown service was found")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
            assert len(e.details().encode()) <= 1024


def test_bad_request_details_stay_bounded(cs, t):
    """Hundreds of invalid repeated fields: the BadRequest lists the first 16
    and says how many more, so the trailers stay within grpcio's 8 KiB."""
    C = cs.credits
    scope = cs.common.Scope(centers=["bad center " + "x" * 150] * 300)
    f = expect(cs, INVALID, t.staff.credit.CreateCreditOrder, C.CreateCreditOrderRequest(
        client_id="c", amount_minor=5, center_id="c1", idempotency_key=uid("k-"), scope=scope))
    listed = f.bad_request.field_violations
    assert len(listed) == 17, len(listed)
    assert "more invalid fields are not listed" in listed[-1].description
    assert f.status.ByteSize() < 4096


def test_transport_messages_quoting_the_path_stay_bounded(cchan):
    method = cchan.unary_unary("/credits.v1.CreditService/" + "X" * 12_000,
                               request_serializer=None, response_deserializer=None)
    try:
        method(b"", timeout=5)
        raise AssertionError("an unknown method answered OK")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e
        assert len(e.details().encode()) <= 1024
