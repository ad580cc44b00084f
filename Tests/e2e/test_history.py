"""Balance history (issue 14): GetBalance as_of_seq / as_of_time over gRPC, and
the statement's running balance (available_after_minor / held_after_minor).

- After each write the test reads GetBalance(include_details); afterwards
  GetBalance(as_of_seq = that seq, include_details) must equal it (summary,
  lots, centers, open holds, pending expiry).
- For every entry of the client's statement, the as-of summary equals the
  running balance recomputed from zero from the entries' amounts and accounts,
  and so do the entries' own after-balances.
"""

from __future__ import annotations

import time

import pytest

from credits_api import INVALID, Tenant, all_entries, expect, ts, uid


@pytest.fixture
def t(cs, cchan, admin):
    return Tenant(cs, cchan, admin)


def key():
    return uid("k-")


def as_of(t, client, seq=0, time_=None, details=True, actor=None):
    req = t.cs.credits.GetBalanceRequest(client_id=client, include_details=details, as_of_seq=seq)
    if time_ is not None:
        req.as_of_time.CopyFrom(time_)
    return (actor or t.staff).credit.GetBalance(req)


def without_as_of_time(balance):
    b = type(balance)()
    b.CopyFrom(balance)
    b.ClearField("as_of_time")
    return b


def history(cs, t):
    """A sequence of writes on client "a" (and "b" in between); returns
    [(seq, GetBalance(a, include_details) right after it)]."""
    C = cs.credits
    recorded = []

    def record():
        bal = t.balance("a", details=True)
        recorded.append((bal.summary.seq, bal))

    pkg = t.package(credits=1_000, price=900, validity_days=30)
    t.staff.credit.PurchaseCreditPackage(C.PurchaseCreditPackageRequest(
        client_id="a", package_id=pkg.id, center_id="c3", payment_ref="pay-1", idempotency_key=key()))
    record()
    t.order("a", 1_000)
    record()
    t.order("a", 500, center_id="c2")
    record()
    t.order("b", 300)
    record()
    spend = t.spend("a", 1_700).spend  # across three lots
    record()
    h1 = t.hold("a", 300, expire_time=ts(3600)).hold
    record()
    h2 = t.hold("a", 100, expire_time=ts(3600)).hold
    record()
    t.spend("b", 40)
    record()
    t.staff.credit.CaptureHold(C.CaptureHoldRequest(hold_id=h1.id, amount_minor=200,
                                                    reason=C.SPEND_REASON_CHECK_IN, idempotency_key=key()))
    record()
    t.staff.credit.ReleaseHold(C.ReleaseHoldRequest(hold_id=h2.id, idempotency_key=key()))
    record()
    t.staff.credit.ReverseSpend(C.ReverseSpendRequest(spend_id=spend.id, amount_minor=600, reason="refund",
                                                      idempotency_key=key()))
    record()
    wo = t.staff.credit.CreateWriteOff(C.CreateWriteOffRequest(client_id="a", amount_minor=150, reason="bad debt",
                                                               idempotency_key=key())).write_off
    record()
    t.staff.credit.VoidWriteOff(C.VoidWriteOffRequest(write_off_id=wo.id, idempotency_key=key()))
    record()
    t.staff.credit.AdjustBalance(C.AdjustBalanceRequest(client_id="a", amount_minor=250, reason="goodwill",
                                                        center_id="c1", idempotency_key=key()))
    record()
    t.staff.credit.AdjustBalance(C.AdjustBalanceRequest(client_id="a", amount_minor=-40, reason="correction",
                                                        center_id="c1", idempotency_key=key()))
    record()
    t.hold("a", 120, expire_time=ts(3600))
    record()
    return recorded


def test_as_of_seq_equals_the_balance_read_right_after_each_write(cs, t):
    recorded = history(cs, t)
    assert any(len(b.open_holds) == 2 for _, b in recorded)
    assert any(len(b.lots) >= 3 and len(b.centers) >= 3 for _, b in recorded)
    for seq, expected in recorded:
        got = as_of(t, "a", seq=seq)
        assert got.summary.seq == seq
        assert got.HasField("as_of_time") and got.as_of_time.seconds > 0
        assert without_as_of_time(got) == expected, f"as of seq {seq}"
        # Without details: the same summary, nothing else.
        brief = as_of(t, "a", seq=seq, details=False)
        assert brief.summary == expected.summary
        assert not brief.lots and not brief.open_holds and not brief.centers
    # A plain read has no as_of_time.
    assert not t.balance("a", details=True).HasField("as_of_time")


def test_as_of_every_statement_entry_equals_the_running_balance_from_zero(cs, t):
    history(cs, t)
    entries = all_entries(cs, t.staff, "a", oldest_first=True)
    assert len(entries) == 15  # a's entries of history(); b's are not on a's statement
    available = held = 0
    acct_available, acct_held = "client:a:available", "client:a:held"
    seqs = [e.seq for e in entries]
    assert seqs == sorted(seqs)
    for e in entries:
        assert e.amount_minor > 0
        for account, sign in ((e.debit_account, -1), (e.credit_account, +1)):
            if account == acct_available:
                available += sign * e.amount_minor
            elif account == acct_held:
                held += sign * e.amount_minor
        # The statement's running balance: the client's balance right after this entry.
        assert (e.available_after_minor, e.held_after_minor) == (available, held), f"entry {e.seq} {e.type}"
        s = as_of(t, "a", seq=e.seq, details=False).summary
        assert (s.available_minor, s.held_minor, s.total_minor, s.seq) == (available, held, available + held, e.seq)
    now = t.balance("a").summary
    assert (now.available_minor, now.held_minor) == (available, held)


def test_as_of_time(cs, t):
    t.order("a", 100)
    time.sleep(0.02)  # spacing: the three entries' times differ (what as-of-time is tested on)
    second = t.order("a", 50)
    seq2 = second.balance.seq
    entry2 = [e for e in all_entries(cs, t.staff, "a") if e.seq == seq2][0]
    time.sleep(0.02)  # spacing, as above
    t.spend("a", 120)
    # Exactly at the second entry's time: right after it.
    at = as_of(t, "a", time_=entry2.time)
    assert (at.summary.available_minor, at.summary.held_minor, at.summary.seq) == (150, 0, seq2)
    assert at.as_of_time == entry2.time
    assert without_as_of_time(at).lots == as_of(t, "a", seq=seq2).lots
    # Before the client's first entry: a zero balance.
    early = t.cs.credits.GetBalanceRequest().as_of_time
    early.FromSeconds(1_000_000_000)
    zero = as_of(t, "a", time_=early)
    assert (zero.summary.total_minor, zero.summary.seq, len(zero.lots)) == (0, 0, 0)
    # Later than everything: today's balance.
    late = t.cs.credits.GetBalanceRequest().as_of_time
    late.GetCurrentTime()
    late.seconds += 60
    assert as_of(t, "a", time_=late).summary.available_minor == 30


def test_invalid_arguments(cs, t):
    t.order("a", 100)
    last = t.balance("a").summary.seq
    C = cs.credits
    expect(cs, INVALID, t.staff.credit.GetBalance, C.GetBalanceRequest(client_id="a", as_of_seq=last + 1), fields=["as_of_seq"])
    expect(cs, INVALID, t.staff.credit.GetBalance, C.GetBalanceRequest(client_id="a", as_of_seq=-1), fields=["as_of_seq"])
    both = C.GetBalanceRequest(client_id="a", as_of_seq=last)
    both.as_of_time.GetCurrentTime()
    expect(cs, INVALID, t.staff.credit.GetBalance, both, fields=["as_of_time"])
    bad_time = C.GetBalanceRequest(client_id="a")
    bad_time.as_of_time.seconds = -5
    expect(cs, INVALID, t.staff.credit.GetBalance, bad_time, fields=["as_of_time"])
    # Every violation at once (client_id missing too).
    f = expect(cs, INVALID, t.staff.credit.GetBalance, C.GetBalanceRequest(as_of_seq=-1), fields=["client_id", "as_of_seq"])
    assert f.bad_request is not None
    # An as-of read of a client without entries by then: zero.
    z = as_of(t, "nobody", seq=last)
    assert (z.summary.total_minor, z.summary.seq, len(z.lots)) == (0, last, 0)


def test_tenant_isolation(cs, cchan, admin, t):
    t.order("a", 700)
    t.spend("a", 100)
    other = Tenant(cs, cchan, admin)
    other.order("z", 5)
    other.order("z", 6)
    # Tenant B's key asking for A's client id sees nothing of A, at any of B's seqs.
    for seq in (1, 2):
        b = as_of(other, "a", seq=seq)
        assert (b.summary.total_minor, len(b.lots), len(b.open_holds)) == (0, 0, 0)
    # A's seqs beyond B's latest are invalid for B.
    t.order("a", 1)
    expect(cs, INVALID, other.staff.credit.GetBalance,
           cs.credits.GetBalanceRequest(client_id="a", as_of_seq=t.balance("a").summary.seq), fields=["as_of_seq"])
    far = cs.credits.GetBalanceRequest().as_of_time
    far.GetCurrentTime()
    assert as_of(other, "a", time_=far).summary.total_minor == 0
    # The app key reads as-of balances too.
    assert as_of(t, "a", seq=1, actor=t.app).summary.available_minor == 700


def test_loadgen_read_as_of_seq(start_credits_server, credits_stubs, tmp_path):
    """loadgen read --as-of-seq-max N asks GetBalance for as_of_seq in 1…N (the benchmark's as-of run)."""
    from test_loadgen import loadgen, loadgen_usage_error, seed_tenant

    srv = start_credits_server(name="loadgen-asof")
    token = seed_tenant(srv, tmp_path, clients=4, amount=100)  # 4 credit orders: seqs 1…4
    ok = loadgen(srv, tmp_path, "asof", "--scenario", "read", "--token", token, "--clients", 4, "--client-prefix", "lg-",
                 "--as-of-seq-max", 4, "--count", 40)
    assert ok["requests"] == 40 and ok["ok"] == 40 and ok["errors"] == 0, ok
    # Seqs past the tenant's latest: every call is INVALID_ARGUMENT, so the seqs were really sent.
    bad = loadgen(srv, tmp_path, "asof-bad", "--scenario", "read", "--token", token, "--clients", 4, "--client-prefix", "lg-",
                  "--as-of-seq-max", 1_000_000, "--count", 40, "--allow-errors")
    assert bad["errors"] >= 35 and set(bad["errors_by_status"]) == {"INVALID_ARGUMENT"}, bad
    assert "--as-of-seq-max applies to --scenario read only" in loadgen_usage_error(
        "--scenario", "statement", "--token", "t", "--as-of-seq-max", 5)
    assert "--as-of-seq-max must be ≥ 1" in loadgen_usage_error("--scenario", "read", "--token", "t", "--as-of-seq-max", 0)
