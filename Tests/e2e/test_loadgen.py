"""End-to-end tests of `loadgen` (the load tool) against the real `credits serve` on 127.0.0.1.

The binary comes from LOADGEN_BIN (default .build/debug/loadgen; `swift build --product loadgen`).
Balances after the runs are checked independently with grpcio and `credits verify --db`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from conftest import ADMIN_TOKEN, wait_until
from credits_api import Actor, all_entries, channel_for, verify_ok

CLIENTS = 20
SEED_AMOUNT = 1000
SPENDS = 200
# Every kind of call `mixed` makes, as named in the summary's "operations".
MIXED_OPERATIONS = {"read", "statement", "purchase", "spend", "hold", "capture", "release"}
SVG = "{http://www.w3.org/2000/svg}"


class Output:
    """A loadgen's stdout lines as they are printed (loadgen writes each
    line unbuffered) and its stderr, read on threads: a test waits for what
    loadgen has printed, not for a fixed time."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.readers = [threading.Thread(target=self._read, args=(proc.stdout, self.lines), daemon=True),
                        threading.Thread(target=self._read, args=(proc.stderr, self.errors), daemon=True)]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, into: list[str]) -> None:
        for line in stream:
            with self.lock:
                into.append(line)

    def snapshot(self) -> list[str]:
        with self.lock:
            return [line.rstrip("\n") for line in self.lines]

    def wait_for(self, predicate, what: str, timeout: float = 10.0) -> None:
        try:
            wait_until(lambda: predicate(self.snapshot()), timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}; printed so far: {self.snapshot()}") from None

    def finish(self, timeout: float = 30.0) -> tuple[list[str], str]:
        """Waits for the process to exit; its stdout lines and stderr."""
        self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=timeout)
        with self.lock:
            return [line.rstrip("\n") for line in self.lines], "".join(self.errors)


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
    # Per operation, the figures add up to the totals.
    ops = summary["operations"]
    assert sum(o["requests"] for o in ops.values()) == summary["requests"], summary
    assert sum(o["ok"] for o in ops.values()) == summary["ok"], summary
    assert sum(o["errors"] for o in ops.values()) == summary["errors"], summary
    return summary


def loadgen_usage_error(*args) -> str:
    """Runs loadgen with options it must refuse before any connection; returns its stderr."""
    r = subprocess.run([str(loadgen_binary()), "--target", "127.0.0.1:9", *map(str, args)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode not in (0, 1, 2), f"loadgen {args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stderr


def seed_tenant(srv, tmp_path: Path, clients: int, amount: int, prefix: str = "lg-", **kw) -> str:
    extra = [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", v)]
    seed = loadgen(srv, tmp_path, "seed", "--scenario", "seed", "--admin-token", ADMIN_TOKEN,
                   "--seed-amount", amount, "--clients", clients, "--client-prefix", prefix,
                   "--connections", 2, "--streams", 8, *extra)
    assert seed["errors"] == 0 and seed["token"], seed
    return seed["token"]


def svg_curves(path: Path) -> dict:
    """The latency curves of a loadgen plot (it must be well-formed XML): operation name -> path data."""
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg", root.tag
    curves = {p.get("data-operation"): p.get("d") for p in root.iter(f"{SVG}path") if p.get("class") == "curve"}
    for name, d in curves.items():
        assert d.startswith("M") and d.count("L") >= 1, (name, d[:80])
    return curves


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


def test_mixed_keeps_every_balance_equal_to_its_entries(start_credits_server, credits_stubs, tmp_path):
    srv = start_credits_server(name="loadgen-mixed")
    clients, seed_amount, amount, purchase = 10, 100_000, 3, 7
    token = seed_tenant(srv, tmp_path, clients, seed_amount)
    mixed = loadgen(srv, tmp_path, "mixed", "--scenario", "mixed", "--token", token, "--duration", 2,
                    "--connections", 2, "--streams", 8, "--clients", clients, "--client-prefix", "lg-",
                    "--amount", amount, "--purchase-amount", purchase)
    assert mixed["errors"] == 0 and mixed["ok"] == mixed["requests"] > 100, mixed
    ops = mixed["operations"]
    assert set(ops) == MIXED_OPERATIONS, ops
    assert mixed["mix"] == {"read": 50, "statement": 10, "purchase": 5, "spend": 20, "hold": 8, "settle": 7}
    for name, o in ops.items():
        assert o["requests"] > 0 and o["errors"] == 0 and o["errors_by_status"] == {}, (name, o)
        assert 0 < o["latency_us"]["p50"] <= o["latency_us"]["p99"] <= o["latency_us"]["max"], (name, o)
    # Reads are about half of the calls; captures and releases split the settled holds about evenly.
    assert 0.35 < ops["read"]["requests"] / mixed["requests"] < 0.65, ops
    assert abs(ops["capture"]["ok"] - ops["release"]["ok"]) <= 1, ops
    # Every hold was created before it was settled; those not settled are still open.
    assert ops["hold"]["ok"] == ops["capture"]["ok"] + ops["release"]["ok"] + mixed["open_holds"], mixed
    assert mixed["plot"] == str(tmp_path / "mixed.svg"), mixed

    # Independently of loadgen's counts: each balance is what its ledger entries imply, and the
    # last entry's running balances match GetBalance.
    cs = credits_stubs.credits
    channel = channel_for(srv)
    staff = Actor(credits_stubs, channel, token)
    common = credits_stubs.common
    kinds = {common.ENTRY_TYPE_ORDER: "order", common.ENTRY_TYPE_SPEND: "spend", common.ENTRY_TYPE_HOLD: "hold",
             common.ENTRY_TYPE_CAPTURE: "capture", common.ENTRY_TYPE_RELEASE: "release"}
    sums = {k: 0 for k in kinds.values()}
    total = held = open_holds = 0
    for n in range(clients):
        client = f"lg-{n}"
        balance = staff.credit.GetBalance(cs.GetBalanceRequest(client_id=client, include_details=True))
        entries = all_entries(credits_stubs, staff, client, page_size=500)
        mine = {k: 0 for k in kinds.values()}
        for e in entries:
            assert e.type in kinds, e
            mine[kinds[e.type]] += e.amount_minor
        s = balance.summary
        assert s.total_minor == mine["order"] - mine["spend"] - mine["capture"], (client, s, mine)
        assert s.held_minor == mine["hold"] - mine["capture"] - mine["release"], (client, s, mine)
        newest = max(entries, key=lambda e: e.seq)
        assert (newest.available_after_minor, newest.held_after_minor) == (s.available_minor, s.held_minor), client
        total += s.total_minor
        held += s.held_minor
        open_holds += len(balance.open_holds)
        for k in sums:
            sums[k] += mine[k]
    channel.close()
    # And the money matches what loadgen says it did, call by call.
    assert sums["order"] == clients * seed_amount + ops["purchase"]["ok"] * purchase, (sums, ops)
    assert sums["spend"] == ops["spend"]["ok"] * amount, (sums, ops)
    assert sums["hold"] == ops["hold"]["ok"] * amount, (sums, ops)
    assert sums["capture"] == ops["capture"]["ok"] * amount, (sums, ops)
    assert sums["release"] == ops["release"]["ok"] * amount, (sums, ops)
    assert total == clients * seed_amount + (ops["purchase"]["ok"] * purchase
                                             - (ops["spend"]["ok"] + ops["capture"]["ok"]) * amount)
    assert held == mixed["open_holds"] * amount and open_holds == mixed["open_holds"], (held, open_holds, mixed)

    # The plot next to the JSON: well-formed SVG, the overall curve and one per operation.
    curves = svg_curves(tmp_path / "mixed.svg")
    assert set(curves) == MIXED_OPERATIONS | {"all"}, set(curves)

    assert srv.terminate() == 0
    verify_ok(srv.db)


def test_mixed_with_a_custom_mix_makes_only_those_calls(start_credits_server, tmp_path):
    srv = start_credits_server(name="loadgen-mix")
    token = seed_tenant(srv, tmp_path, 5, 10_000)
    run = loadgen(srv, tmp_path, "mix", "--scenario", "mixed", "--token", token, "--count", 300,
                  "--streams", 8, "--clients", 5, "--client-prefix", "lg-",
                  "--mix", "spend=1,hold=1,settle=1", "--capture-percent", 100)
    assert run["errors"] == 0 and run["requests"] == 300, run
    assert set(run["operations"]) == {"spend", "hold", "capture"}, run["operations"]
    assert run["mix"] == {"read": 0, "statement": 0, "purchase": 0, "spend": 1, "hold": 1, "settle": 1}
    assert srv.terminate() == 0
    verify_ok(srv.db)


def test_hot_client_drops_by_exactly_what_was_spent(start_credits_server, credits_stubs, tmp_path):
    srv = start_credits_server(name="loadgen-hot")
    clients, seed_amount, amount = 5, 10_000, 2
    token = seed_tenant(srv, tmp_path, clients, seed_amount)
    hot = loadgen(srv, tmp_path, "hot", "--scenario", "hot", "--token", token, "--count", 300,
                  "--connections", 2, "--streams", 16, "--clients", clients, "--client-prefix", "lg-",
                  "--hot-client", "lg-3", "--amount", amount)
    assert hot["errors"] == 0 and hot["ok"] == 300, hot
    assert hot["hot_client"] == "lg-3" and set(hot["operations"]) == {"spend"}, hot

    # With holds: a tenth of the calls open holds, another tenth capture them.
    holds = loadgen(srv, tmp_path, "hot-holds", "--scenario", "hot", "--token", token, "--count", 300,
                    "--connections", 2, "--streams", 16, "--clients", clients, "--client-prefix", "lg-",
                    "--amount", amount, "--hot-holds", 10)
    assert holds["errors"] == 0 and holds["hot_client"] == "lg-0", holds
    ops = holds["operations"]
    assert set(ops) == {"spend", "hold", "capture"} and ops["hold"]["ok"] > 0 and ops["capture"]["ok"] > 0, ops
    assert ops["hold"]["ok"] == ops["capture"]["ok"] + holds["open_holds"], holds

    channel = channel_for(srv)
    staff = Actor(credits_stubs, channel, token)

    def summary(client):
        return staff.credit.GetBalance(credits_stubs.credits.GetBalanceRequest(client_id=client)).summary

    assert summary("lg-3").total_minor == seed_amount - hot["ok"] * amount
    s0 = summary("lg-0")
    assert s0.total_minor == seed_amount - (ops["spend"]["ok"] + ops["capture"]["ok"]) * amount, (s0, ops)
    assert s0.held_minor == holds["open_holds"] * amount, (s0, holds)
    for n in (1, 2, 4):
        assert summary(f"lg-{n}").total_minor == seed_amount, n
    channel.close()
    assert srv.terminate() == 0
    verify_ok(srv.db)


def test_statement_pages_and_seeded_entries(start_credits_server, credits_stubs, tmp_path):
    srv = start_credits_server(name="loadgen-statement")
    clients, entries, seed_amount = 8, 400, 1000
    seed = loadgen(srv, tmp_path, "seed", "--scenario", "seed", "--admin-token", ADMIN_TOKEN, "--tenant", "lg-st",
                   "--seed-amount", seed_amount, "--clients", clients, "--client-prefix", "lg-",
                   "--entries", entries, "--connections", 2, "--streams", 16)
    assert seed["errors"] == 0 and seed["requests"] == entries and seed["entries_written"] == entries, seed
    assert set(seed["operations"]) == {"purchase", "spend"}, seed["operations"]
    token = seed["token"]

    channel = channel_for(srv)
    staff = Actor(credits_stubs, channel, token)

    def count_entries():
        n = 0
        for c in range(clients):
            client = f"lg-{c}"
            n += len(all_entries(credits_stubs, staff, client, page_size=100))
            # Orders and spends of the same amount cancel out: every balance is still the seed.
            s = staff.credit.GetBalance(credits_stubs.credits.GetBalanceRequest(client_id=client)).summary
            assert s.total_minor == seed_amount, (client, s)
        return n

    assert count_entries() == entries
    # Seeding again with the same options writes nothing new (the keys are deterministic).
    again = loadgen(srv, tmp_path, "seed2", "--scenario", "seed", "--admin-token", ADMIN_TOKEN, "--tenant", "lg-st",
                    "--seed-amount", seed_amount, "--clients", clients, "--client-prefix", "lg-",
                    "--entries", entries, "--streams", 16)
    assert again["errors"] == 0, again
    assert count_entries() == entries
    channel.close()

    statement = loadgen(srv, tmp_path, "statement", "--scenario", "statement", "--token", token, "--count", 200,
                        "--streams", 8, "--clients", clients, "--client-prefix", "lg-", "--page-size", 20)
    assert statement["errors"] == 0 and statement["ok"] == 200, statement
    assert set(statement["operations"]) == {"statement"}, statement

    # --plot puts the plot where asked; a single kind of call draws only the overall curve.
    plot = tmp_path / "plots" / "statement-latency.svg"
    plot.parent.mkdir()
    loadgen(srv, tmp_path, "statement2", "--scenario", "statement", "--token", token, "--count", 50,
            "--clients", clients, "--client-prefix", "lg-", "--plot", plot)
    assert set(svg_curves(plot)) == {"all"}
    assert not (tmp_path / "statement2.svg").exists()

    assert srv.terminate() == 0
    verify_ok(srv.db)


@pytest.mark.parametrize("args, message", [
    (["--mix", "read=50,bogus=10"], "unknown kind 'bogus'"),
    (["--mix", "read=-1,spend=5"], "weight of read"),
    (["--mix", "read=x"], "weight of read"),
    (["--mix", "read"], "not kind=weight"),
    (["--mix", "read=5,read=6"], "read is given twice"),
    (["--mix", "read=0,spend=0"], "at least one weight"),
    (["--mix", "spend=5,settle=5"], "settle needs hold"),
    (["--mix", "read=1,,spend=1"], "not kind=weight"),
])
def test_invalid_mix_is_refused(args, message):
    err = loadgen_usage_error("--scenario", "mixed", "--token", "t", *args)
    assert message in err, err


@pytest.mark.parametrize("args, message", [
    (["--scenario", "read", "--mix", "read=1"], "--mix applies to --scenario mixed only"),
    (["--scenario", "spend", "--hot-client", "c"], "--hot-client applies"),
    (["--scenario", "hot", "--hot-holds", "51"], "--hot-holds must be 0…50"),
    (["--scenario", "read", "--entries", "10"], "--entries applies"),
    (["--scenario", "statement", "--page-size", "0"], "--page-size must be 1…1000"),
    (["--scenario", "mixed", "--capture-percent", "101"], "--capture-percent must be 0…100"),
])
def test_options_of_other_scenarios_are_refused(args, message):
    err = loadgen_usage_error("--token", "t", *args)
    assert message in err, err


class GoawayServer:
    """A gRPC-shaped h2c server (python h2) that answers `per_connection` calls per connection with an
    empty OK message, then sends GOAWAY naming the last answered stream and closes; it keeps accepting."""

    def __init__(self, per_connection: int):
        self.per_connection = per_connection
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket):
        try:
            self._serve_one(sock)
        except (BrokenPipeError, ConnectionResetError):
            pass  # loadgen may close a connection it has given up on while we still write

    def _serve_one(self, sock: socket.socket):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        sock.settimeout(10)
        with sock:
            sock.sendall(conn.data_to_send())
            answered = last = 0
            while answered < self.per_connection:
                data = sock.recv(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if isinstance(event, h2.events.StreamEnded) and answered < self.per_connection:
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                        conn.send_data(event.stream_id, b"\0\0\0\0\0")
                        conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)
                        answered += 1
                        last = event.stream_id
                sock.sendall(conn.data_to_send())
            # Calls after `last` are never answered: the client must count them as refused by GOAWAY.
            conn.close_connection(last_stream_id=last)
            sock.sendall(conn.data_to_send())
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.thread.join()
        self.listener.close()


def test_goaway_counts_refused_calls_and_reconnects(tmp_path):
    fake = GoawayServer(per_connection=10)
    try:
        out = tmp_path / "goaway.json"
        args = ["--target", f"127.0.0.1:{fake.port}", "--scenario", "read", "--token", "t", "--count", 60,
                "--streams", 4, "--json", out, "--allow-errors", "--request-timeout", 5]
        r = subprocess.run([str(loadgen_binary()), *map(str, args)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        summary = json.loads(out.read_text())
    finally:
        fake.close()
    assert summary["requests"] == 60, summary
    assert set(summary["errors_by_status"]) <= {"GOAWAY"}, summary
    # Each connection answers 10 calls, then goes away; the run goes on over new connections.
    assert summary["ok"] >= 30 and summary["reconnects"] >= 3, summary
    assert fake.connections >= summary["reconnects"], (fake.connections, summary)


def test_server_shutdown_ends_the_run_with_errors_not_a_crash(start_credits_server, tmp_path):
    srv = start_credits_server(name="loadgen-shutdown")
    token = seed_tenant(srv, tmp_path, 5, 1000)
    out = tmp_path / "shutdown.json"
    args = ["--target", srv.address, "--scenario", "read", "--token", token, "--clients", 5, "--client-prefix", "lg-",
            "--duration", 30, "--connections", 2, "--streams", 8, "--json", out]
    proc = subprocess.Popen([str(loadgen_binary()), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output = Output(proc)
    try:
        # Stopped in the middle of the run, once calls are being answered.
        output.wait_for(lambda lines: any(" done, " in line and "] 0 done" not in line for line in lines),
                        "loadgen reports answered calls")
        assert srv.terminate() == 0
        lines, stderr = output.finish(timeout=20)
        stdout = "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Calls the server did not answer are errors (exit 1), not a setup failure or a crash.
    assert proc.returncode in (0, 1), f"exit {proc.returncode}\n{stdout}\n{stderr}"
    summary = json.loads(out.read_text())
    assert summary["ok"] > 0 and summary["elapsed_s"] < 15, summary
    assert set(summary["errors_by_status"]) <= {"GOAWAY", "CONNECTION_LOST"}, summary
