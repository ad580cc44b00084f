"""End-to-end tests of `loadgen` (the load tool) against the real `credits serve` on 127.0.0.1.

The binary comes from LOADGEN_BIN (default .build/debug/loadgen; `swift build --product loadgen`).
Balances after the runs are checked independently with grpcio and `credits verify --db`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ADMIN_TOKEN
from credits_api import Actor, channel_for, verify_ok

CLIENTS = 20
SEED_AMOUNT = 1000
SPENDS = 200


def loadgen_binary() -> Path:
    path = Path(os.environ.get("LOADGEN_BIN", ".build/debug/loadgen"))
    if not path.is_absolute():
        path = Path.cwd() / path
    return path


def loadgen(server, tmp_path: Path, name: str, *args, expect_rc: int = 0) -> dict:
    """Runs loadgen against `server` with `--json`, checks its exit code, returns the JSON summary."""
    binary = loadgen_binary()
    if not binary.exists():
        pytest.fail(f"loadgen binary {binary} does not exist (set LOADGEN_BIN)", pytrace=False)
    out = tmp_path / f"{name}.json"
    r = subprocess.run([str(binary), "--target", server.address, "--json", str(out), *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == expect_rc, f"loadgen {args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    if expect_rc == 2:
        return {}
    summary = json.loads(out.read_text())
    # The table on stdout carries the same totals.
    assert f"requests               {summary['requests']}" in r.stdout, r.stdout
    return summary


def test_seed_read_spend_moves_exactly_the_spent_credit(start_credits_server, credits_stubs, tmp_path):
    srv = start_credits_server(name="loadgen")
    clients = ["--clients", CLIENTS, "--client-prefix", "lg-"]

    seed = loadgen(srv, tmp_path, "seed", "--scenario", "seed", "--admin-token", ADMIN_TOKEN,
                   "--tenant", "lg-tenant", "--seed-amount", SEED_AMOUNT, "--connections", 2, "--streams", 4, *clients)
    assert seed["requests"] == CLIENTS and seed["ok"] == CLIENTS and seed["errors"] == 0, seed
    assert seed["tenant"] == "lg-tenant" and seed["token"], seed
    token = seed["token"]

    read = loadgen(srv, tmp_path, "read", "--scenario", "read", "--token", token, "--duration", 2,
                   "--connections", 2, "--streams", 8, *clients)
    assert read["requests"] > 0 and read["ok"] == read["requests"], read
    assert read["errors"] == 0 and read["errors_by_status"] == {}, read
    assert read["throughput_rps"] > 0 and 0 < read["latency_us"]["p50"] <= read["latency_us"]["max"], read
    assert 1.5 < read["elapsed_s"] < 30, read

    spend = loadgen(srv, tmp_path, "spend", "--scenario", "spend", "--token", token, "--count", SPENDS,
                    "--connections", 2, "--streams", 8, *clients)
    assert spend["requests"] == SPENDS and spend["ok"] == SPENDS and spend["errors"] == 0, spend

    # Round-robin over the clients: each one paid SPENDS / CLIENTS units (1 each).
    channel = channel_for(srv)
    staff = Actor(credits_stubs, channel, token)
    totals = []
    for n in range(CLIENTS):
        s = staff.credit.GetBalance(credits_stubs.credits.GetBalanceRequest(client_id=f"lg-{n}")).summary
        assert s.total_minor == SEED_AMOUNT - SPENDS // CLIENTS, (n, s)
        totals.append(s.total_minor)
    assert sum(totals) == CLIENTS * SEED_AMOUNT - spend["ok"]
    channel.close()

    # Seeding again into the same tenant is idempotent (same keys): no credit added.
    again = loadgen(srv, tmp_path, "seed2", "--scenario", "seed", "--admin-token", ADMIN_TOKEN,
                    "--tenant", "lg-tenant", "--seed-amount", SEED_AMOUNT, *clients)
    assert again["ok"] == CLIENTS, again
    channel = channel_for(srv)
    staff = Actor(credits_stubs, channel, token)
    s = staff.credit.GetBalance(credits_stubs.credits.GetBalanceRequest(client_id="lg-0")).summary
    assert s.total_minor == SEED_AMOUNT - SPENDS // CLIENTS
    channel.close()

    assert srv.terminate() == 0
    verify_ok(srv.db)


def test_errors_are_counted_by_status_and_fail_the_run(start_credits_server, tmp_path):
    srv = start_credits_server(name="loadgen-errors")
    bad = loadgen(srv, tmp_path, "bad", "--scenario", "read", "--token", "nokey.nosecret", "--count", 7,
                  "--streams", 3, expect_rc=1)
    assert bad["requests"] == 7 and bad["ok"] == 0, bad
    assert bad["errors_by_status"] == {"UNAUTHENTICATED": 7}, bad

    tolerated = loadgen(srv, tmp_path, "tolerated", "--scenario", "read", "--token", "nokey.nosecret",
                        "--count", 2, "--allow-errors")
    assert tolerated["errors"] == 2, tolerated

    srv.terminate()
    # Nothing listening any more: a setup failure, exit 2.
    loadgen(srv, tmp_path, "refused", "--scenario", "read", "--token", "x", "--count", 1, expect_rc=2)
