"""creditctl, the command-line client, against the real server: every command
in text and JSON, each write checked against the ledger through grpcio, exit
codes by gRPC status with readable error details, and where the token comes
from. Needs CREDITCTL_BIN (tools/test builds and exports it)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port
from credits_api import DEFAULT_CENTER, Tenant, all_entries, uid


def creditctl_binary() -> Path:
    path = Path(os.environ.get("CREDITCTL_BIN", ".build/debug/creditctl"))
    if not path.exists():
        pytest.fail(f"creditctl binary {path} does not exist (set CREDITCTL_BIN)", pytrace=False)
    return path


class Ctl:
    """Runs creditctl against one server with one token (from the environment unless told)."""

    def __init__(self, server, token: str | None):
        self.target = server.address
        self.token = token

    def run(self, *args, token: str | None = "default", env_extra: dict | None = None, timeout: float = 30):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITS_")}
        env["CREDITS_TARGET"] = self.target
        token = self.token if token == "default" else token
        if token is not None:
            env["CREDITS_TOKEN"] = token
        env.update(env_extra or {})
        return subprocess.run([str(creditctl_binary()), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)

    def json(self, *args, **kw) -> dict:
        r = self.run(*args, "--json", **kw)
        assert r.returncode == 0, f"creditctl {args} exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        return json.loads(r.stdout)

    def text(self, *args, **kw) -> str:
        r = self.run(*args, **kw)
        assert r.returncode == 0, f"creditctl {args} exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        return r.stdout


@pytest.fixture
def tenant(cs, cchan, admin):
    return Tenant(cs, cchan, admin)


@pytest.fixture
def ctl(credits_server, tenant):
    return Ctl(credits_server, tenant.staff_key.token)


def generated_key(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.startswith("idempotency-key: ")]
    assert len(lines) == 1, stderr
    return lines[0].split(": ", 1)[1]


# ---------------------------------------------------------------- reads


def test_balance_text_and_json_match_the_ledger(ctl, tenant):
    tenant.order("alice", 1000)
    tenant.spend("alice", 250)
    got = ctl.json("balance", "alice")
    s = got["summary"]
    assert (s["client_id"], s["total_minor"], s["available_minor"], s["held_minor"]) == ("alice", 750, 750, 0)
    assert isinstance(s["seq"], int) and s["seq"] == tenant.balance("alice").summary.seq
    # Stable JSON: every field of Balance in proto order, zero values included.
    assert list(got)[:5] == ["summary", "lots", "centers", "open_holds", "pending_expiry_minor"]
    assert got["lots"] == [] and got["pending_expiry_minor"] == 0
    detailed = ctl.json("balance", "alice", "--details")
    assert [l["remaining_minor"] for l in detailed["lots"]] == [l.remaining_minor for l in tenant.balance("alice", details=True).lots]
    assert len(detailed["lots"]) == 1
    text = ctl.text("balance", "--client-id", "alice")
    assert "available_minor" in text and "750" in text and "{" not in text
    # As of an earlier sequence number: before the spend.
    first_seq = all_entries(tenant.cs, tenant.staff, "alice", oldest_first=True)[0].seq
    assert ctl.json("balance", "alice", "--as-of-seq", str(first_seq))["summary"]["available_minor"] == 1000


def test_statement_pages_and_all(ctl, tenant):
    for amount in (100, 200, 300, 400, 500):
        tenant.order("bob", amount)
    ledger = all_entries(tenant.cs, tenant.staff, "bob")
    page = ctl.json("statement", "bob", "--page-size", "2")
    assert [e["seq"] for e in page["entries"]] == [e.seq for e in ledger[:2]]
    assert page["next_page_token"]
    second = ctl.json("statement", "bob", "--page-size", "2", "--page-token", page["next_page_token"])
    assert [e["seq"] for e in second["entries"]] == [e.seq for e in ledger[2:4]]
    everything = ctl.json("statement", "bob", "--page-size", "2", "--all")
    assert [e["seq"] for e in everything["entries"]] == [e.seq for e in ledger]
    assert everything["next_page_token"] == ""
    assert everything["entries"][0]["type"].startswith("ENTRY_TYPE_")
    text = ctl.text("statement", "bob", "--all", "--oldest-first")
    header = [l for l in text.splitlines() if "SEQ" in l]
    assert header and "AMOUNT_MINOR" in header[0]
    assert sum(1 for l in text.splitlines() if " 300 " in f" {l} ") >= 1


# ---------------------------------------------------------------- writes, checked through grpcio


def test_spend_generates_a_key_that_a_retry_reuses(ctl, tenant):
    tenant.order("carol", 1000)
    r = ctl.run("spend", "carol", "--amount", "300", "--reason", "service", "--center-id", DEFAULT_CENTER)
    assert r.returncode == 0, r.stderr
    key = generated_key(r.stderr)
    assert "300" in r.stdout and "spend:" in r.stdout
    assert tenant.summary("carol") == (700, 700, 0)
    # The same key again: the same spend, nothing applied twice.
    again = ctl.json("spend", "carol", "--amount-minor", "300", "--reason", "SPEND_REASON_SERVICE",
                     "--center-id", DEFAULT_CENTER, "--idempotency-key", key)
    assert again["balance"]["available_minor"] == 700
    assert tenant.summary("carol") == (700, 700, 0)
    op = ctl.json("operation", key)
    assert op["idempotency_key"] == key and op["result_id"] == again["spend"]["id"]
    # Operation.response is a google.protobuf.Any: creditctl unpacks it by its type URL.
    assert op["response"]["@type"] == "type.googleapis.com/credits.v1.SpendCreditsResponse"
    assert op["response"]["spend"]["id"] == again["spend"]["id"]
    assert op["response"]["balance"]["available_minor"] == 700
    assert ctl.json("spend", "get", again["spend"]["id"])["spend"]["amount_minor"] == 300


def test_order_purchase_and_reverse(ctl, tenant):
    got = ctl.json("order", "dan", "--amount", "800", "--price", "700", "--center-id", DEFAULT_CENTER)
    assert got["balance"]["available_minor"] == 800
    package = tenant.package(credits=500, price=450)
    bought = ctl.json("purchase", "dan", "--package", package.id, "--center-id", DEFAULT_CENTER,
                      "--payment-ref", uid("pay-"))
    assert bought["lot"]["amount_minor"] == 500
    assert tenant.summary("dan") == (1300, 1300, 0)
    spend = ctl.json("spend", "dan", "--amount", "400", "--reason", "service", "--center-id", DEFAULT_CENTER)
    reversed_ = ctl.json("reverse", spend["spend"]["id"], "--amount", "150", "--reason", "goodwill")
    assert reversed_["spend"]["reversed_minor"] == 150
    assert tenant.summary("dan") == (1050, 1050, 0)


def test_hold_create_capture_release(ctl, tenant):
    tenant.order("erin", 1000)
    h = ctl.json("hold", "create", "erin", "--amount", "300", "--center-id", DEFAULT_CENTER, "--expire-time", "+1h")
    assert h["hold"]["state"] == "HOLD_STATE_HELD"
    assert tenant.summary("erin") == (1000, 700, 300)
    captured = ctl.json("hold", "capture", h["hold"]["id"], "--amount", "200", "--reason", "service")
    assert captured["spend"]["amount_minor"] == 200
    assert tenant.summary("erin") == (800, 800, 0)
    h2 = ctl.json("hold", "create", "erin", "--amount", "100", "--center-id", DEFAULT_CENTER,
                  "--expire-time", str(int(time.time()) + 600))
    text = ctl.text("hold", "release", h2["hold"]["id"])
    assert "HOLD_STATE_RELEASED" in text
    assert tenant.summary("erin") == (800, 800, 0)
    assert ctl.json("hold", "get", h2["hold"]["id"])["hold"]["state"] == "HOLD_STATE_RELEASED"


def test_write_off_create_list_void(ctl, tenant):
    tenant.order("fay", 1000)
    w = ctl.json("write-off", "create", "fay", "--amount", "250", "--reason", "expired card")
    assert w["write_off"]["amount_minor"] == 250
    assert tenant.summary("fay") == (750, 750, 0)
    listed = ctl.json("write-off", "list", "fay", "--all")
    assert [x["id"] for x in listed["write_offs"]] == [w["write_off"]["id"]]
    ctl.json("write-off", "void", w["write_off"]["id"])
    assert tenant.summary("fay") == (1000, 1000, 0)


def test_coupons_and_customer_credits(ctl, tenant):
    coupon = ctl.json("coupon", "create", "--name", "Free massage", "--service-id", "massage-60", "--max-uses", "1")
    cid = coupon["id"]
    assert ctl.json("coupon", "get", cid)["name"] == "Free massage"
    assert cid in [c["id"] for c in ctl.json("coupon", "list", "--all")["coupons"]]
    credit = ctl.json("credit", "issue", "gus", "--coupon-id", cid)
    credit_id = credit["credit"]["id"]
    assert [c["credit"]["id"] if "credit" in c else c["id"] for c in ctl.json("credit", "list", "gus")["credits"]] == [credit_id]
    redeemed = ctl.json("credit", "redeem", credit_id, "--booking-ref", uid("bk-"))
    ctl.json("credit", "cancel-redemption", redeemed["redemption"]["id"], "--reason", "no show")
    ctl.json("credit", "revoke", credit_id, "--reason", "mistake")
    assert ctl.json("credit", "get", credit_id)["credit"]["state"].endswith("_REVOKED")
    ctl.json("coupon", "deactivate", cid)
    assert ctl.json("coupon", "get", cid)["active"] is False


def test_session_packages(ctl, tenant):
    lines = json.dumps([{"service_id": "massage", "total_sessions": 3}])
    p = ctl.json("session", "create", "hal", "--name", "Spa", "--valid-from", "2020-01-01T00:00:00Z",
                 "--valid-until", "2099-01-01T00:00:00Z", "--lines", lines)
    pid = p["client_package"]["id"]
    assert p["client_package"]["lines"][0]["sessions_left"] == 3
    used = ctl.json("session", "use", "hal", "--service-id", "massage", "--payment-ref", "pay-1")
    assert used["client_package"]["lines"][0]["sessions_left"] == 2
    assert ctl.json("session", "redemption", used["redemption"]["id"])["redemption"]["id"] == used["redemption"]["id"]
    ctl.json("session", "cancel", used["redemption"]["id"], "--reason", "no show")
    assert ctl.json("session", "get", pid)["client_package"]["lines"][0]["sessions_left"] == 3
    assert [x["id"] for x in ctl.json("session", "list", "hal")["client_packages"]] == [pid]
    ctl.json("session", "deactivate", pid, "--reason", "refund")
    assert ctl.json("session", "get", pid)["client_package"]["active"] is False


# ---------------------------------------------------------------- errors and exit codes


def test_not_found_exit_5(ctl):
    r = ctl.run("hold", "get", "no-such-hold")
    assert r.returncode == 5, r.stderr
    assert "NOT_FOUND (5)" in r.stderr


def test_overspend_exit_9_with_reason(ctl, tenant):
    tenant.order("ivy", 100)
    r = ctl.run("spend", "ivy", "--amount", "500", "--reason", "service", "--center-id", DEFAULT_CENTER)
    assert r.returncode == 9, r.stderr
    assert "FAILED_PRECONDITION (9)" in r.stderr and "reason: INSUFFICIENT_CREDITS" in r.stderr
    assert r.stdout == ""
    j = ctl.run("spend", "ivy", "--amount", "500", "--reason", "service", "--center-id", DEFAULT_CENTER, "--json")
    assert j.returncode == 9
    err = json.loads(j.stderr)["error"]  # stderr is one JSON object
    assert err["code"] == 9 and err["status"] == "FAILED_PRECONDITION"
    assert err["idempotency_key"]  # generated: a retry can reuse it
    info = [d for d in err["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert info and info[0]["reason"] == "INSUFFICIENT_CREDITS"
    assert tenant.summary("ivy") == (100, 100, 0)


def test_invalid_argument_exit_3_with_fields(ctl):
    r = ctl.run("spend", "", "--amount", "-5", "--center-id", DEFAULT_CENTER)
    assert r.returncode == 3, r.stderr
    assert "INVALID_ARGUMENT (3)" in r.stderr
    assert "field client_id:" in r.stderr and "field amount_minor:" in r.stderr
    j = ctl.run("spend", "", "--amount", "-5", "--center-id", DEFAULT_CENTER, "--json")
    err = json.loads(j.stderr)["error"]
    fields = [v["field"] for d in err["details"] for v in d.get("field_violations", [])]
    assert "client_id" in fields and "amount_minor" in fields


def test_unauthenticated_exit_16(ctl, tenant):
    assert ctl.run("balance", "alice", token="wrong-token").returncode == 16
    r = ctl.run("balance", "alice", token=None)
    assert r.returncode == 16 and "UNAUTHENTICATED" in r.stderr


def test_token_from_file(ctl, tenant, tmp_path):
    tenant.order("jo", 42)
    f = tmp_path / "token"
    f.write_text(tenant.staff_key.token + "\n")
    r = ctl.run("balance", "jo", "--json", "--token-file", str(f), token=None)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["summary"]["available_minor"] == 42
    # The file wins over the environment.
    assert ctl.run("balance", "jo", "--token-file", str(f), token="wrong").returncode == 0
    missing = ctl.run("balance", "jo", "--token-file", str(tmp_path / "nope"))
    assert missing.returncode == 66 and "cannot read token file" in missing.stderr


def test_unreachable_server_exit_69(ctl):
    r = ctl.run("balance", "alice", "--target", f"127.0.0.1:{free_port()}")
    assert r.returncode == 69, r.stderr
    assert "cannot connect" in r.stderr


def test_usage_errors_exit_64(ctl):
    assert ctl.run("no-such-command").returncode == 64
    assert ctl.run("balance", "alice", "--no-such-field", "1").returncode == 64
    r = ctl.run("balance", "alice", "--token", "secret")
    assert r.returncode == 64 and "CREDITS_TOKEN" in r.stderr
    r = ctl.run("spend", "x", "--amount", "ten")
    assert r.returncode == 64 and "amount_minor" in r.stderr
    help_ = ctl.run("--help")
    assert help_.returncode == 0 and "Exit codes" in help_.stdout and "hold capture" in help_.stdout
    spend_help = ctl.run("spend", "--help")
    assert spend_help.returncode == 0 and "--amount-minor" in spend_help.stdout and "SPEND_REASON_SERVICE" in spend_help.stdout


# ---------------------------------------------------------------- admin and directory keys


def test_admin_creates_tenant_and_key_then_the_key_works(credits_server, tenant):
    from conftest import ADMIN_TOKEN

    admin_ctl = Ctl(credits_server, ADMIN_TOKEN)
    tid = uid("t-")
    created = admin_ctl.json("tenant", "create", tid, "--name", "Gym", "--currency", "EUR")
    assert created["id"] == tid and created["allow_directory"] is False
    assert admin_ctl.json("tenant", "get", tid)["currency"] == "EUR"
    key = admin_ctl.json("key", "create", tid, "--role", "staff", "--label", "ops")
    assert key["key"]["role"] == "ROLE_STAFF" and key["token"]
    staff = Ctl(credits_server, key["token"])
    staff.json("order", "zed", "--amount", "50", "--center-id", DEFAULT_CENTER)
    assert staff.json("balance", "zed")["summary"]["available_minor"] == 50
    assert admin_ctl.json("verify")["ok"] is True
    admin_ctl.json("key", "revoke", key["key"]["id"])
    assert staff.run("balance", "zed").returncode == 16


def test_directory_key_on_behalf_of(credits_server, cs, cchan, admin):
    from conftest import ADMIN_TOKEN

    t = Tenant(cs, cchan, admin, allow_directory=True)
    t.order("dora", 500)
    admin_ctl = Ctl(credits_server, ADMIN_TOKEN)
    directory = Ctl(credits_server, admin_ctl.json("key", "create", "--role", "directory", "--label", "dir")["token"])
    denied = directory.run("balance", "dora")
    assert denied.returncode == 7 and "ON_BEHALF_OF_REQUIRED" in denied.stderr
    assert directory.json("balance", "dora", "--on-behalf-of", t.id)["summary"]["available_minor"] == 500


def test_deadline_exit_4_against_a_server_that_never_answers(ctl):
    import socket

    # A listening socket nobody accepts on: the TCP handshake completes, no HTTP/2 answer ever comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        start = time.monotonic()
        r = ctl.run("balance", "alice", "--target", f"127.0.0.1:{port}", "--deadline", "0.5", "--json")
        elapsed = time.monotonic() - start
    assert r.returncode == 4, r.stderr
    assert json.loads(r.stderr)["error"]["status"] == "DEADLINE_EXCEEDED"
    assert elapsed < 5
    assert ctl.run("balance", "alice", "--deadline", "0").returncode == 64
