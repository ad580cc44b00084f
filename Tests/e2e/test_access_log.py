"""Access log and request ids (issue 15, part 2): one logfmt line per call
(method, tenant, status, reason, latency, request id, peer) and nothing
secret; x-request-id taken when valid, else generated, and echoed on every
call; the rate limit drops lines and says how many; --access-log off."""

from __future__ import annotations

import re
import time

import grpc

from conftest import open_channel
from credits_api import UNAUTH, Actor, Tenant, admin_actor, decode, expect, rpc_error, uid

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
GENERATED = r"[0-9a-f]{16}-[0-9a-f]+"
GET_BALANCE = "/credits.v1.CreditService/GetBalance"
SPEND = "/credits.v1.CreditService/SpendCredits"


def line_re(method, tenant, status, reason, request_id):
    return re.compile(
        rf"{STAMP} info access: latency_us=\d+ method={re.escape(method)} peer=127\.0\.0\.1:\d+ "
        rf"reason={reason} request_id={request_id} status={status} tenant={tenant} \[Observability\] call")


def access_lines(srv) -> list[str]:
    return [line for line in srv.stderr_path.read_text().splitlines() if " access: " in line]


def wait_for(srv, predicate, timeout=5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = access_lines(srv)
        if predicate(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def header(call_or_error, name):
    """The value of `name` in the response's headers (trailers-only answers carry them in the trailers)."""
    for md in (call_or_error.initial_metadata() or (), call_or_error.trailing_metadata() or ()):
        for key, value in md:
            if key == name:
                return value
    return None


def test_success_and_error_lines_and_echoed_ids(credits_stubs, start_credits_server):
    cs = credits_stubs
    srv = start_credits_server()
    channel = open_channel(srv.port)
    t = Tenant(cs, channel, admin_actor(cs, channel))
    client = uid("client-")
    t.order(client, 100)

    # A valid id of the client's is kept and echoed.
    _, call = t.staff.credit.GetBalance.with_call(cs.credits.GetBalanceRequest(client_id=client),
                                                  metadata=[("x-request-id", "req-abc.123")])
    assert header(call, "x-request-id") == "req-abc.123"
    # An error with a reason: the id is echoed on the trailers-only answer too.
    err = rpc_error(t.staff.credit.SpendCredits, cs.credits.SpendCreditsRequest(
        client_id=client, amount_minor=5_000, idempotency_key=uid("k-"), center_id="c1",
        reason=cs.credits.SPEND_REASON_SERVICE), metadata=[("x-request-id", "spend-1")])
    assert decode(cs, err).info.reason == "INSUFFICIENT_CREDITS"
    assert header(err, "x-request-id") == "spend-1"
    # Without one, an id is generated and echoed.
    _, call = t.staff.credit.GetBalance.with_call(cs.credits.GetBalanceRequest(client_id=client))
    generated = header(call, "x-request-id")
    assert generated and re.fullmatch(GENERATED, generated), generated
    # An invalid one (space, too long) is replaced by a generated one.
    _, call = t.staff.credit.GetBalance.with_call(cs.credits.GetBalanceRequest(client_id=client),
                                                  metadata=[("x-request-id", "bad id")])
    replaced_space = header(call, "x-request-id")
    _, call = t.staff.credit.GetBalance.with_call(cs.credits.GetBalanceRequest(client_id=client),
                                                  metadata=[("x-request-id", "x" * 129)])
    replaced_long = header(call, "x-request-id")
    assert re.fullmatch(GENERATED, replaced_space) and re.fullmatch(GENERATED, replaced_long)
    assert len({generated, replaced_space, replaced_long}) == 3
    # Unauthenticated: no tenant, its reason.
    f = expect(cs, UNAUTH, Actor(cs, channel, "not-a-real-token-xyz").credit.GetBalance,
               cs.credits.GetBalanceRequest(client_id=client), metadata=[("x-request-id", "anon-1")])
    assert f.info.reason == "UNAUTHENTICATED"
    channel.close()

    lines = wait_for(srv, lambda ls: any("request_id=anon-1 " in l for l in ls))
    def one(pattern):
        found = [l for l in lines if pattern.fullmatch(l)]
        assert len(found) == 1, f"{pattern.pattern}\n" + "\n".join(lines)
    one(line_re(GET_BALANCE, t.id, "OK", "-", re.escape("req-abc.123")))
    one(line_re(SPEND, t.id, "FAILED_PRECONDITION", "INSUFFICIENT_CREDITS", "spend-1"))
    one(line_re(GET_BALANCE, t.id, "OK", "-", generated))
    one(line_re(GET_BALANCE, t.id, "OK", "-", replaced_space))
    one(line_re(GET_BALANCE, t.id, "OK", "-", replaced_long))
    one(line_re(GET_BALANCE, "-", "UNAUTHENTICATED", "UNAUTHENTICATED", "anon-1"))
    # Nothing secret: no token, no bad id, no request field values.
    log = srv.stderr_path.read_text()
    for secret in (t.staff_key.token, t.app_key.token, "not-a-real-token-xyz", "x" * 129, "bad id"):
        assert secret not in log
    assert client not in "\n".join(lines)


def test_unknown_method_is_logged_with_an_id(credits_stubs, start_credits_server):
    srv = start_credits_server()
    channel = open_channel(srv.port)
    call = channel.unary_unary("/nope.v1.Nope/Missing")
    try:
        call.with_call(b"", metadata=[("x-request-id", "nope-1")], timeout=5)
        raise AssertionError("expected UNIMPLEMENTED")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNIMPLEMENTED
        assert header(e, "x-request-id") == "nope-1"
    channel.close()
    lines = wait_for(srv, lambda ls: any("request_id=nope-1 " in l for l in ls))
    assert [l for l in lines if line_re("/nope.v1.Nope/Missing", "-", "UNIMPLEMENTED", "-", "nope-1").fullmatch(l)]


def test_rate_limit_drops_lines_and_sums_them(credits_stubs, start_credits_server):
    cs = credits_stubs
    srv = start_credits_server("--access-log-max-lines-per-second", "5")
    channel = open_channel(srv.port)
    anon = Actor(cs, channel, "no-such-token")
    started = time.monotonic()
    for _ in range(50):
        rpc_error(anon.credit.GetBalance, cs.credits.GetBalanceRequest(client_id="c"))
    elapsed = time.monotonic() - started
    channel.close()
    lines = wait_for(srv, lambda ls: any("dropped by the rate limit" in l for l in ls), timeout=3)
    # Stopped, the server has written every summary (the last one at exit).
    assert srv.terminate() == 0
    lines = access_lines(srv)
    calls = [l for l in lines if l.endswith("] call")]
    summaries = [l for l in lines if "access log lines dropped by the rate limit" in l]
    assert summaries, "\n".join(lines)
    for s in summaries:
        assert re.fullmatch(rf"{STAMP} warning access: dropped=\d+ max_lines_per_second=5 \[Observability\] "
                            r"access log lines dropped by the rate limit", s), s
    dropped = sum(int(re.search(r"dropped=(\d+)", s).group(1)) for s in summaries)
    health = [l for l in calls if "/grpc.health.v1.Health/" in l]  # the readiness checks, before the flood
    balance = [l for l in calls if GET_BALANCE in l]
    assert len(balance) + dropped == 50, (len(balance), dropped)
    assert len(calls) == len(health) + len(balance)
    # A full bucket (5) plus what refills during the flood.
    assert 1 <= len(balance) <= 5 + int(elapsed * 5) + 1, (len(balance), elapsed)


def test_access_log_off_writes_no_lines(credits_stubs, start_credits_server):
    cs = credits_stubs
    srv = start_credits_server("--access-log", "off")
    channel = open_channel(srv.port)
    for _ in range(3):
        rpc_error(Actor(cs, channel, "no-such-token").credit.GetBalance, cs.credits.GetBalanceRequest(client_id="c"))
    _, call = channel.unary_unary("/grpc.health.v1.Health/Check").with_call(b"", timeout=5)
    assert re.fullmatch(GENERATED, header(call, "x-request-id"))  # ids are echoed all the same
    channel.close()
    # Stopped, the server has written every line it would (its log is
    # flushed at exit): none is an access line.
    assert srv.terminate() == 0
    assert access_lines(srv) == []
