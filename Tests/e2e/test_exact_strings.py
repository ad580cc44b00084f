"""Strings are exact (issue 13 item 2).

protobuf-c's `char *` strings end at the first NUL. Any string field of any
request holding U+0000 or invalid UTF-8 is refused with INVALID_ARGUMENT and a
BadRequest violation naming the field path; nothing changes. (Python's
protobuf refuses to build such messages, so the requests are made valid and
then their bytes are edited.)
"""

from __future__ import annotations

import grpc
import pytest

from credits_api import INVALID, Tenant, decode, uid

SPEND = "/credits.v1.CreditService/SpendCredits"
ORDER = "/credits.v1.CreditService/CreateCreditOrder"


@pytest.fixture(scope="module")
def t(cs, cchan, admin):
    return Tenant(cs, cchan, admin)


def raw_call(channel, path: str, body: bytes, token: str):
    """A unary call with the request bytes as given; returns (response bytes, None) or (None, error)."""
    method = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        return method(body, metadata=[("authorization", f"Bearer {token}")], timeout=10), None
    except grpc.RpcError as e:
        return None, e


def edited(message, placeholder: str, replacement: bytes) -> bytes:
    """The message's bytes with one placeholder string's bytes replaced (same length)."""
    raw = message.SerializeToString()
    old = placeholder.encode()
    assert len(old) == len(replacement) and raw.count(old) == 1
    return raw.replace(old, replacement)


def violations(cs, err) -> list[str]:
    f = decode(cs, err)
    assert f.code == INVALID, f"{f.code}: {f.details}"
    assert f.bad_request is not None, f.details
    return [v.field for v in f.bad_request.field_violations]


def spend_req(cs, client: str, key: str, **kw):
    C = cs.credits
    kw.setdefault("booking_ref", "b1")
    return C.SpendCreditsRequest(client_id=client, amount_minor=10, reason=C.SPEND_REASON_SERVICE,
                                 center_id="c1", idempotency_key=key, **kw)


def test_nul_in_client_id_is_refused_not_truncated(cs, cchan, t):
    victim = uid("v")  # 13 characters
    t.order(victim, 1000)
    body = edited(spend_req(cs, victim + "Xxyz", uid("k-")), victim + "Xxyz", victim.encode() + b"\0xyz")
    reply, err = raw_call(cchan, SPEND, body, t.staff_key.token)
    assert reply is None, "a client id with NUL was accepted"
    assert violations(cs, err) == ["client_id"]
    assert t.summary(victim) == (1000, 1000, 0)
    assert len(t.entries(victim)) == 1


def test_keys_differing_after_nul_are_not_merged(cs, cchan, t):
    client = uid("c-")
    t.order(client, 1000)
    for suffix in (b"a", b"b"):
        body = edited(spend_req(cs, client, "QQQQQ0" + suffix.decode()), "QQQQQ0" + suffix.decode(), b"QQQQQ\0" + suffix)
        reply, err = raw_call(cchan, SPEND, body, t.staff_key.token)
        assert reply is None
        assert violations(cs, err) == ["idempotency_key"]
    assert t.summary(client) == (1000, 1000, 0)


def test_nul_in_booking_ref_and_scope_paths(cs, cchan, t):
    C = cs.credits
    client = uid("c-")
    order = C.CreateCreditOrderRequest(client_id=client, amount_minor=50, center_id="c1", note="NOTE1",
                                       idempotency_key=uid("k-"),
                                       scope=cs.common.Scope(centers=["c1", "CTR2"]))
    body = edited(order, "CTR2", b"CT\0R")
    body = body.replace(b"NOTE1", b"NO\xffE1")
    reply, err = raw_call(cchan, ORDER, body, t.staff_key.token)
    assert reply is None
    assert violations(cs, err) == ["note", "scope.centers[1]"]
    assert t.summary(client) == (0, 0, 0)

    t.order(client, 100)
    body = edited(spend_req(cs, client, uid("k-"), booking_ref="BOOKREF9"), "BOOKREF9", b"BOOK\0EF9")
    reply, err = raw_call(cchan, SPEND, body, t.staff_key.token)
    assert reply is None
    assert violations(cs, err) == ["booking_ref"]
    assert t.summary(client) == (100, 100, 0)


@pytest.mark.parametrize("bad", [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82"])
def test_invalid_utf8_note_is_refused_not_replaced(cs, cchan, t, bad):
    C = cs.credits
    client = uid("c-")
    placeholder = "N" * len(bad)
    order = C.CreateCreditOrderRequest(client_id=client, amount_minor=50, center_id="c1",
                                       note="x" + placeholder + "y", idempotency_key=uid("k-"))
    body = order.SerializeToString().replace(("x" + placeholder + "y").encode(), b"x" + bad + b"y")
    reply, err = raw_call(cchan, ORDER, body, t.staff_key.token)
    assert reply is None
    assert violations(cs, err) == ["note"]
    assert t.summary(client) == (0, 0, 0)


def test_valid_unicode_is_kept_exactly(cs, cchan, t):
    C = cs.credits
    client = uid("c-")
    note = "Geschenk für Zoë 🎁\tok"
    r = t.staff.credit.CreateCreditOrder(C.CreateCreditOrderRequest(
        client_id=client, amount_minor=5, center_id="c1", note=note, idempotency_key=uid("k-")))
    entries = t.entries(client)
    assert r.lot.id
    assert [e.note for e in entries] == [note]
