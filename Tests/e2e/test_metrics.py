"""Prometheus metrics on the admin HTTP port (issue 15, part 1): scraped
before and after a client flow through grpcio, the request counters move by
exactly what the flow did, per method and status code; histograms and gauges
are sane; no client id appears; metrics are off by default; a metrics port in
use is a one-line error."""

from __future__ import annotations

import http.client
import re
import time
import socket
import subprocess

import pytest

from conftest import credits_binary, free_port, open_channel
from credits_api import FAILED, Tenant, admin_actor, expect, uid

CREDIT = "/credits.v1.CreditService/"
ADMIN = "/credits.v1.AdminService/"
PACKAGES = "/credits.v1.CreditPackageService/"

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape_text(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.getheader("content-type", ""), r.read().decode()
    finally:
        conn.close()


def parse(text: str) -> dict:
    """{(name, ((label, value), …)): float} of every sample line."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def scrape(port: int) -> dict:
    status, ctype, text = scrape_text(port)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    return parse(text)


def scrape_settled(port: int, timeout: float = 5.0) -> dict:
    """A scrape taken once no call is open: a call is counted when its stream
    closes on the server, which may come just after the client has its answer."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if samples.get(("credits_grpc_open_streams", ()), 0) == 0 or time.monotonic() > deadline:
            return samples
        time.sleep(0.02)


def requests(samples: dict) -> dict:
    """{(method, code): count} of credits_grpc_requests_total."""
    out = {}
    for (name, labels), value in samples.items():
        if name == "credits_grpc_requests_total":
            d = dict(labels)
            out[(d["method"], d["code"])] = value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def metrics_server(start_credits_server):
    port = free_port()
    srv = start_credits_server("--metrics-port", str(port), "--access-log", "off")
    srv.metrics_port = port
    return srv


def test_flow_moves_counters_exactly(credits_stubs, metrics_server):
    cs = credits_stubs
    srv = metrics_server
    before = scrape(srv.metrics_port)
    channel = open_channel(srv.port)
    admin = admin_actor(cs, channel)
    client = uid("client-secret-")
    t = Tenant(cs, channel, admin)  # CreateTenant + 2 × CreateApiKey
    pkg = t.package(credits=1_000, price=800)
    t.app.credit.PurchaseCreditPackage(cs.credits.PurchaseCreditPackageRequest(
        client_id=client, package_id=pkg.id, center_id="c1", payment_ref="p", idempotency_key=uid("k-")))
    t.spend(client, 300)
    expect(cs, FAILED, t.spend, client, 5_000, error_reason="INSUFFICIENT_CREDITS")
    for _ in range(7):
        t.balance(client)
    channel.close()
    after = scrape_settled(srv.metrics_port)

    moved = {k: v - requests(before).get(k, 0) for k, v in requests(after).items()}
    moved = {k: v for k, v in moved.items() if v}
    assert moved == {
        (ADMIN + "CreateTenant", "OK"): 1,
        (ADMIN + "CreateApiKey", "OK"): 2,
        (PACKAGES + "CreateCreditPackage", "OK"): 1,
        (CREDIT + "PurchaseCreditPackage", "OK"): 1,
        (CREDIT + "SpendCredits", "OK"): 1,
        (CREDIT + "SpendCredits", "FAILED_PRECONDITION"): 1,
        (CREDIT + "GetBalance", "OK"): 7,
    }, moved

    # Latency histograms counted each call of the method; buckets are cumulative.
    def hist_count(samples, method):
        return samples.get(("credits_grpc_request_duration_seconds_count", (("method", method),)), 0)
    assert hist_count(after, CREDIT + "GetBalance") - hist_count(before, CREDIT + "GetBalance") == 7
    assert hist_count(after, CREDIT + "SpendCredits") - hist_count(before, CREDIT + "SpendCredits") == 2
    buckets = sorted((float(dict(l)["le"]), v) for (n, l), v in after.items()
                     if n == "credits_grpc_request_duration_seconds_bucket" and dict(l)["method"] == CREDIT + "GetBalance")
    assert buckets[-1][0] == float("inf") and buckets[-1][1] == hist_count(after, CREDIT + "GetBalance")
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))

    # Group commit: the 7 writes (tenant, 2 keys, package, purchase, 2 spends, one
    # refused inside its batch) were taken into 1…7 batches.
    def ledger(samples, name):
        return samples.get((name, ()), 0)
    batches = ledger(after, "credits_ledger_batch_commands_count") - ledger(before, "credits_ledger_batch_commands_count")
    commands = ledger(after, "credits_ledger_batch_commands_sum") - ledger(before, "credits_ledger_batch_commands_sum")
    assert 1 <= batches <= 7 and commands == 7, (batches, commands)
    commits = ledger(after, "credits_ledger_commit_duration_seconds_count") - ledger(before, "credits_ledger_commit_duration_seconds_count")
    assert commits == batches
    assert ledger(after, "credits_ledger_write_latency_seconds_count") - ledger(before, "credits_ledger_write_latency_seconds_count") == commands
    assert ledger(after, "credits_ledger_write_queue_depth") >= 0

    # Gauges: the flow's channel is closed; the scrape connection is HTTP/1.1, not gRPC.
    assert value(after, "credits_grpc_open_streams") == 0
    assert 0 <= value(after, "credits_grpc_open_connections") <= 2
    assert value(after, "credits_ledger_last_seq", tenant=t.id) > 0
    hits = value(after, "credits_balance_cache_hits_total") - before.get(("credits_balance_cache_hits_total", ()), 0)
    misses = value(after, "credits_balance_cache_misses_total") - before.get(("credits_balance_cache_misses_total", ()), 0)
    assert hits >= 5 and misses >= 1, (hits, misses)  # 7 reads of one client: the first misses, the rest hit
    rss = value(after, "credits_process_resident_memory_bytes")
    assert 1 << 20 < rss < 8 << 30
    info = [dict(l) for (n, l), v in after.items() if n == "credits_build_info" and v == 1]
    assert len(info) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", info[0]["version"]) and info[0]["schema"].isdigit()

    # No client id anywhere in the exposition (labels are methods, codes, tenants).
    _, _, text = scrape_text(srv.metrics_port)
    assert client not in text
    assert "client-secret-" not in text


def test_unknown_methods_share_one_label(credits_stubs, metrics_server):
    srv = metrics_server
    channel = open_channel(srv.port)
    for i in range(3):
        call = channel.unary_unary(f"/nope.v1.Nope/Method{i}")
        with pytest.raises(Exception):
            call(b"", timeout=5)
    channel.close()
    reqs = requests(scrape(srv.metrics_port))
    assert reqs[("unknown", "UNIMPLEMENTED")] == 3
    assert not any("nope" in method for method, _ in reqs)


def test_http_endpoint_answers_only_metrics(metrics_server):
    status, _, _ = scrape_text(metrics_server.metrics_port, "/")
    assert status == 404
    status, _, _ = scrape_text(metrics_server.metrics_port, "/metrics/x")
    assert status == 404
    conn = http.client.HTTPConnection("127.0.0.1", metrics_server.metrics_port, timeout=10)
    conn.request("POST", "/metrics", body=b"x")
    assert conn.getresponse().status == 405
    conn.close()
    # A request body over the bound is refused, and the connection closed.
    conn = http.client.HTTPConnection("127.0.0.1", metrics_server.metrics_port, timeout=10)
    conn.request("GET", "/metrics", body=b"x" * 100_000)
    assert conn.getresponse().status == 413
    conn.close()
    # The gRPC port does not serve it.
    conn = http.client.HTTPConnection("127.0.0.1", metrics_server.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        status = conn.getresponse().status
    except (http.client.HTTPException, OSError):
        status = None  # HTTP/1.1 is not spoken there at all
    finally:
        conn.close()
    assert status != 200


def test_metrics_are_off_by_default(start_credits_server):
    srv = start_credits_server()
    log = srv.stderr_path.read_text()
    assert re.search(r" metrics=off ", log), log
    assert "--metrics-port" in subprocess.run([str(credits_binary()), "serve", "--help"],
                                              capture_output=True, text=True, timeout=30).stdout


def test_metrics_port_in_use_is_one_line_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([str(credits_binary()), "serve", "--port", str(free_port()), "--db", str(tmp_path / "m.sqlite"),
                            "--metrics-port", str(port)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: cannot listen for metrics on 127.0.0.1:{port}: Address already in use"], r.stderr
