"""`loadgen --scenario tail` and `--scenario watch` against a real server:
what they print is the ledger's feed and the client's balances, live."""

from __future__ import annotations

import json
import subprocess

from conftest import free_port, wait_until
from credits_api import uid
from test_feed import dedicated_tenant
from test_loadgen import Output, loadgen_binary
from test_metrics import scrape


def start_loadgen(server, token, *args):
    return subprocess.Popen([str(loadgen_binary()), "--target", server.address, "--token", token, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_tail_prints_the_feed_then_follows_live(cs, start_credits_server, tmp_path):
    srv, ch, t = dedicated_tenant(cs, start_credits_server)
    c = uid("tail-")
    t.order(c, 500)
    t.spend(c, 20)
    out = tmp_path / "tail.json"
    p = start_loadgen(srv, t.staff_key.token, "--scenario", "tail", "--from-seq", "0", "--max-messages", "5",
                      "--duration", "20", "--json", out)
    out_lines = Output(p)
    out_lines.wait_for(lambda lines: any(line.startswith("progress ") for line in lines), "the tail goes live")
    t.spend(c, 30)   # live, after the replay
    t.order(c, 7)
    lines, stderr = out_lines.finish()
    assert p.returncode == 0, stderr
    assert lines[0].startswith("seq=1 ") and " ORDER client=" + c + " amount=500 " in lines[0], lines
    assert lines[1].startswith("seq=2 ") and " SPEND " in lines[1] and "available_after=480" in lines[1], lines
    assert lines[2] == lines[2] and lines[2].startswith("progress seq=2 tenant_seq=2 (live)"), lines
    assert lines[3].startswith("seq=3 ") and "available_after=450" in lines[3], lines
    assert lines[4].startswith("seq=4 ") and " ORDER " in lines[4], lines
    summary = json.loads(out.read_text())
    assert summary["entries"] == 4 and summary["progress"] == 1 and summary["last_seq"] == 4


def test_watch_prints_balance_changes_and_threshold(cs, start_credits_server, tmp_path):
    srv, ch, t = dedicated_tenant(cs, start_credits_server)
    prefix = uid("watch-")
    c = prefix + "0"  # stream 0 watches <client-prefix>0
    t.order(c, 1000)
    p = start_loadgen(srv, t.app_key.token, "--scenario", "watch", "--client-prefix", prefix, "--clients", "1",
                      "--threshold", "500", "--max-messages", "3", "--duration", "20")
    out_lines = Output(p)
    out_lines.wait_for(lambda lines: len(lines) >= 1, "the watch's first balance")
    t.spend(c, 100)
    # A watch sends the latest snapshot once the previous one has left
    # (coalescing): the second spend waits until the first change is printed.
    out_lines.wait_for(lambda lines: len(lines) >= 2, "the watch's first change")
    t.spend(c, 600)
    lines, stderr = out_lines.finish()
    assert p.returncode == 0, stderr
    assert len(lines) == 3, lines
    assert f"client={c} " in lines[0]
    assert "total=1000 available=1000 held=0 EUR" in lines[0] and "threshold" not in lines[0], lines
    assert "available=900" in lines[1] and "threshold" not in lines[1], lines
    assert "available=300" in lines[2] and "CROSSED BELOW THRESHOLD" in lines[2], lines


def test_many_watchers_are_counted(cs, start_credits_server, tmp_path):
    metrics_port = free_port()
    srv, ch, t = dedicated_tenant(cs, start_credits_server, "--metrics-port", str(metrics_port))
    prefix = uid("many-")
    out = tmp_path / "watchers.json"
    p = start_loadgen(srv, t.app_key.token, "--scenario", "watch", "--client-prefix", prefix, "--clients", "50",
                      "--connections", "2", "--streams", "25", "--duration", "4", "--json", out)
    # The orders must come once every watch is open (each then sees its first
    # snapshot and, for ten of them, one change): the server counts them.
    wait_until(lambda: scrape(metrics_port).get(("credits_grpc_open_streams", ()), 0) >= 50, 3.0,
               "50 watch streams open on the server")
    for i in range(10):
        t.order(f"{prefix}{i}", 5)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 0, stderr
    assert stdout == "", "nothing printed with many streams"
    summary = json.loads(out.read_text())
    assert summary["streams"] == 50
    assert summary["snapshots"] == 50 + 10, summary
