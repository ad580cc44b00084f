"""Memory stays bounded whatever a peer does: 8 connections with a zero
receive window ask for 250 large responses each and never read. The server's
RSS stays bounded, an ordinary client keeps its answers quick, the stuck
connections are closed, and memory goes back down after they leave.

The benchmark version (64 connections, figures in docs/SLOW-READERS.md) is
tools/bench/slow-readers; both use tools/bench/slow_readers.py.
"""

from __future__ import annotations

import sys
import time

import pytest

from conftest import REPO, CreditsServer, wait_until

sys.path.insert(0, str(REPO / "tools" / "bench"))
import slow_readers  # noqa: E402

MIB = 1024 * 1024
CONNECTIONS, STREAMS, RESPONSE_BYTES = 8, 250, 512 * 1024
STUCK_SECONDS = 4


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    server = CreditsServer(tmp_path_factory.mktemp("slow"), name="slow", extra_args=[
        "--enable-test-service", "--stuck-connection-timeout-seconds", str(STUCK_SECONDS)]).start()
    yield server
    assert server.terminate() == 0, server.stderr_tail()


def test_zero_window_readers_cost_bounded_memory_and_others_stay_served(target):
    pid = target.proc.pid
    unloaded, failures = slow_readers.health_latencies(target.port, 1.0)
    assert failures == 0
    idle = slow_readers.rss_bytes(pid)
    readers = []
    with slow_readers.RSSSampler(pid) as sampler:
        readers = [slow_readers.SlowReader(target.port, STREAMS, RESPONSE_BYTES) for _ in range(CONNECTIONS)]
        loaded, failures = slow_readers.health_latencies(target.port, 2.0)
        grown = sampler.peak - idle
    assert failures == 0
    p99_unloaded = slow_readers.percentile(unloaded, 99)
    p99_loaded = slow_readers.percentile(loaded, 99)
    # 8 × 250 × 512 KiB = 1000 MiB asked for; the per-connection cap is 1 MiB.
    assert grown < 96 * MIB, f"RSS grew by {grown / MIB:.0f} MiB (idle {idle / MIB:.0f} MiB)"
    assert p99_loaded < max(2 * p99_unloaded, 0.05), f"health p99 {p99_loaded * 1e3:.1f} ms loaded vs {p99_unloaded * 1e3:.1f} ms"

    # Stuck past the timeout (no progress at all): the server closes them.
    deadline = time.monotonic() + STUCK_SECONDS + 5
    while time.monotonic() < deadline and not all(r.closed_by_server() for r in readers):
        time.sleep(0.25)
    assert all(r.closed_by_server() for r in readers), "stuck connections were not closed"
    for r in readers:
        r.close()
    try:
        wait_until(lambda: slow_readers.rss_bytes(pid) - idle < 48 * MIB, 10, "memory given back after the readers left")
    except AssertionError:
        after = slow_readers.rss_bytes(pid)
        raise AssertionError(f"RSS {after / MIB:.0f} MiB 10 s after the readers left (idle {idle / MIB:.0f} MiB)") from None
    _, failures = slow_readers.health_latencies(target.port, 0.3)
    assert failures == 0
