"""Smoke tests of the benchmark helpers under tools/bench, so that they keep working between
benchmark runs: the SQLite ceiling program and the idle-connection holder (against the real server).
The benchmark figures themselves come from `tools/bench/run`, never from tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from credits_api import channel_for

ROOT = Path(__file__).resolve().parents[2]


def test_sqlite_ceiling_runs_every_batch_size(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.fail("no C compiler (tools/install-deps installs one with the Swift toolchain's clang)", pytrace=False)
    binary = tmp_path / "sqlite-ceiling"
    subprocess.run([cc, "-O2", "-o", str(binary), str(ROOT / "tools/bench/sqlite-ceiling.c"), "-lsqlite3"], check=True)
    r = subprocess.run([str(binary), "--db", str(tmp_path / "c.sqlite"), "--batch", "1,16", "--ops", "64", "--warmup", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [line["batch"] for line in lines] == [1, 16], r.stdout
    for line in lines:
        assert line["ops"] == 64 and line["ops_per_s"] > 0 and line["commits"] == 64 // line["batch"], line
    # It cleans up after itself unless --keep.
    assert not (tmp_path / "c.sqlite").exists()


def test_idle_connections_are_held_and_the_server_still_answers(start_credits_server, tmp_path):
    srv = start_credits_server(name="idle")
    ready = tmp_path / "ready.json"
    done = tmp_path / "done.json"
    holder = subprocess.Popen([sys.executable, str(ROOT / "tools/bench/idle-conns"), "--port", str(srv.port),
                               "--count", "50", "--hold", "0", "--ready-file", str(ready), "--json", str(done)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if ready.exists() and ready.read_text().strip():
                break
            if holder.poll() is not None:
                pytest.fail(f"idle-conns exited early: {holder.stderr.read()}")
            subprocess.run(["sleep", "0.05"])
        state = json.loads(ready.read_text())
        assert state["open"] == 50, state
        # 50 idle connections do not stop the server from serving.
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        ch = channel_for(srv)
        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
        ch.close()
    finally:
        holder.terminate()
        holder.wait(timeout=10)
    final = json.loads(done.read_text())
    assert final["open"] == 50 and final["settings_exchanged"] == 50 and final["goaway"] == 0, final


def test_followers_benchmark_runs_and_reports_every_phase(tmp_path):
    """tools/bench/followers with tiny figures on the debug binaries: the
    report has each followed phase after a run alone, and the streams
    received messages."""
    from test_loadgen import loadgen_binary
    from conftest import credits_binary

    out = tmp_path / "followers.md"
    r = subprocess.run([str(ROOT / "tools/bench/followers"), "--watchers", "20", "--feeds", "3", "--client-feeds", "10",
                        "--seconds", "1",
                        "--clients", "40", "--credits-bin", str(credits_binary()), "--loadgen-bin", str(loadgen_binary()),
                        "--markdown", str(out)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 1 | spends")]
    assert len(rows) == 6, out.read_text()
    followed = rows[1::2]
    assert all("spends alone" in row for row in rows[0::2])
    assert "20 WatchBalance streams" in followed[0] and "3 SubscribeLedger streams (whole tenant)" in followed[1]
    assert "10 SubscribeLedger streams (one client each)" in followed[2]
    for row in followed:
        received = int(row.rstrip(" |").split("|")[-1].split()[0])
        assert received > 0, row


def test_import_bench_runs_with_a_tiny_count():
    from conftest import credits_binary

    r = subprocess.run([str(ROOT / "tools/bench/import"), "--records", "300", "--clients", "7", "--bin", str(credits_binary())],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "| records | 300 (applied 300, failed 0, complete True) |" in r.stdout, r.stdout
    assert "| records/s |" in r.stdout and "| server peak RSS (VmHWM) |" in r.stdout, r.stdout
    assert "1 tenants, 300 entries" in r.stdout and ": OK |" in r.stdout, r.stdout


def test_metrics_bench_smoke(tmp_path):
    """tools/bench/metrics --quick with the binaries under test: every mode runs, the
    ratios are printed, the JSON has the three medians, and the metrics mode was scraped."""
    from conftest import credits_binary
    import os
    loadgen = Path(os.environ.get("LOADGEN_BIN", ".build/debug/loadgen")).resolve()
    out = tmp_path / "metrics.json"
    r = subprocess.run([str(ROOT / "tools/bench/metrics"), "--quick", "--credits-bin", str(credits_binary()),
                        "--loadgen-bin", str(loadgen), "--json", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ratio metrics/off:" in r.stdout and "ratio access/off:" in r.stdout, r.stdout
    result = json.loads(out.read_text())
    assert set(result["medians"]) == {"off", "metrics", "access"}
    assert all(m["rps"] > 0 for m in result["medians"].values()), result
    assert "GetBalance OK count" in r.stderr and "samples" in r.stderr, r.stderr[-2000:]


def test_cxx_write_server_builds_and_commits_each_answered_spend(tmp_path, credits_stubs):
    """tools/bench/cxx-write-server (the issue-16 bar for tools/bench/run): it builds (unoptimized, to
    keep this short), answers SpendCredits with a spend id and the balance after it, refuses an
    overdraw and bad input with nothing written, takes `loadgen --scenario spend` unchanged, and each
    answered spend is one committed debit row."""
    import os
    import signal
    import sqlite3

    import grpc
    from test_loadgen import loadgen_binary

    build = subprocess.run([str(ROOT / "tools/bench/cxx-write-server/build"), str(tmp_path / "build")],
                           capture_output=True, text=True, timeout=600, env={**os.environ, "CXXFLAGS": "-O0 -g0"})
    assert build.returncode == 0, build.stderr[-2000:]
    binary = build.stdout.strip().splitlines()[-1]
    db = tmp_path / "w.sqlite"
    srv = subprocess.Popen([binary, "--db", str(db), "--port", "0", "--batch", "8", "--seed-amount", "1000"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = srv.stderr.readline()
        assert "listening on 127.0.0.1:" in line, line
        port = int(line.split("listening on 127.0.0.1:")[1].split()[0])
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = credits_stubs.credits_grpc.CreditServiceStub(ch)
        req = credits_stubs.credits.SpendCreditsRequest
        r1 = stub.SpendCredits(req(client_id="c1", amount_minor=300, center_id="x", idempotency_key="k1"), timeout=10)
        r2 = stub.SpendCredits(req(client_id="c1", amount_minor=200, center_id="x", idempotency_key="k2"), timeout=10)
        assert (r1.spend.id, r1.spend.seq, r1.spend.amount_minor, r1.balance.available_minor) == ("sp-1", 1, 300, 700)
        assert (r2.spend.id, r2.balance.available_minor, r2.balance.client_id) == ("sp-2", 500, "c1")
        for bad, code in [(req(client_id="c1", amount_minor=501), grpc.StatusCode.FAILED_PRECONDITION),
                          (req(client_id="c2", amount_minor=1001), grpc.StatusCode.FAILED_PRECONDITION),
                          (req(client_id="", amount_minor=1), grpc.StatusCode.INVALID_ARGUMENT),
                          (req(client_id="c1", amount_minor=0), grpc.StatusCode.INVALID_ARGUMENT)]:
            with pytest.raises(grpc.RpcError) as e:
                stub.SpendCredits(bad, timeout=10)
            assert e.value.code() == code, bad
        ch.close()
        # The load tool drives it as it is (auth metadata ignored): 40 spends of 1 over 4 clients.
        lg = subprocess.run([str(loadgen_binary()), "--target", f"127.0.0.1:{port}", "--scenario", "spend",
                             "--token", "unused", "--clients", "4", "--count", "40", "--amount", "1",
                             "--connections", "2", "--streams", "8", "--quiet", "--json", str(tmp_path / "lg.json")],
                            capture_output=True, text=True, timeout=120)
        assert lg.returncode == 0, lg.stdout + lg.stderr
        assert json.loads((tmp_path / "lg.json").read_text())["errors"] == 0
    finally:
        srv.send_signal(signal.SIGTERM)
        out, err = srv.communicate(timeout=30)
    assert srv.returncode == 0, err
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters["spends"] == 42 and counters["refused"] == 2 and counters["failed"] == 0, counters
    assert 1 <= counters["mean_batch"] <= 8 and counters["writer_cpu_us_per_spend"] > 0, counters
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*), sum(amount_minor) FROM debits").fetchone() == (42, 540)
    assert con.execute("SELECT available_minor FROM balances WHERE client_id = 'c1'").fetchone() == (500,)
    assert con.execute("SELECT count(*) FROM balances WHERE client_id = 'c2'").fetchone() == (0,)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()


def test_btree_ops_counts_each_statements_writes(tmp_path):
    """tools/bench/btree-ops with tiny counts on the binaries under test: the LD_PRELOAD shim
    (tools/bench/sqltrace) sees the server's spend statements and the ceiling program's, and the
    ceiling program's count is exactly what its schema implies (entries + entries_by_client,
    idempotency + idempotency_by_age, clients: 5 B-tree writes per op)."""
    import re

    from conftest import credits_binary
    from test_loadgen import loadgen_binary

    out = tmp_path / "btree.md"
    r = subprocess.run([str(ROOT / "tools/bench/btree-ops"), "--credits-bin", str(credits_binary()),
                        "--loadgen-bin", str(loadgen_binary()), "--spends", "1000", "--clients", "20",
                        "--connections", "2", "--streams", "4", "--data-dir", str(tmp_path), "--markdown", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text()
    totals = [float(x) for x in re.findall(r"\*\*([0-9.]+) B-tree writes\*\*", text)]
    assert len(totals) == 2, text
    ours, ceiling = totals
    assert ceiling == 5.0, text
    assert ours >= 5.0, text
    assert "| `INSERT INTO entries" in text and "entries INSERT 1.00 → " in text, text
    assert re.search(r"Untraced run just before .*ledger writer\) \d+", text), text
    # It removes its scratch directory unless --keep.
    assert not list(tmp_path.glob("btree-ops.*")), list(tmp_path.iterdir())
