"""Short runs of the hostile checks in tools/soak (the long runs: docs/SOAK.md).

* crash-cycle: 3 kill -9 cycles of mixed writes from 16 threads on one SQLite
  file; nothing acknowledged lost, nothing applied twice, `credits verify`
  passes after every cycle.
* fuzz: a few thousand structure-aware gRPC requests and raw HTTP/2 inputs;
  the server never dies, always answers Health/Check, and the ledger never
  changes after a non-OK reply. A separate test asserts that strings holding
  U+0000 or invalid UTF-8 are refused (INVALID_ARGUMENT) rather than
  accepted, truncated at the NUL.

Uses CREDITS_BIN like the other e2e tests. About 1–2 minutes on 2 cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import credits_binary

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "soak"))
import crashcycle  # noqa: E402
import fuzzlib  # noqa: E402

CRASH_CYCLES = 3
FUZZ_INPUTS = 3000
FUZZ_SEED = 7


def _binary() -> Path:
    b = credits_binary()
    if not b.exists():
        pytest.fail(f"server binary {b} does not exist (set CREDITS_BIN)", pytrace=False)
    return b


def test_crash_cycle_loses_and_doubles_nothing(tmp_path):
    s = crashcycle.run(CRASH_CYCLES, _binary(), tmp_path / "crash", threads=16, clients=200, seed=1234,
                       max_kill=2.0, json_path=tmp_path / "crash-cycle.json", log=lambda *a: None)
    report = crashcycle.format_summary(s)
    print(report)
    assert s["cycles"] == CRASH_CYCLES
    assert s["acknowledged"] > 100, report
    assert s["lost"] == 0, report
    assert s["doubled"] == 0, report
    assert s["balance_mismatches"] == 0, report
    assert s["failed_but_applied"] == 0, report
    assert s["stray_entries"] == 0 and s["wrong_entries"] == 0, report
    assert s["unresolved"] == 0, report
    assert s["replay_errors"] == 0, report
    assert s["server_died"] == 0, report
    assert s["verify_runs"] == CRASH_CYCLES + 1 and s["verify_passes"] == s["verify_runs"], report


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fuzz")
    s = fuzzlib.run(FUZZ_INPUTS, _binary(), workdir, FUZZ_SEED, json_path=workdir / "fuzz.json",
                    log=lambda *a: None)
    s["report"] = fuzzlib.format_summary(s)
    print(s["report"])
    return s


def test_fuzz_server_survives_and_serves(fuzz_run):
    s = fuzz_run
    assert s["inputs"] == FUZZ_INPUTS, s["report"]
    assert s["h2_inputs"] > 100 and s["request_inputs"] > 1000, s["report"]
    assert s["crashes"] == 0, s["report"]
    assert s["not_serving"] == 0, s["report"]
    assert s["restarts"] == 0, s["report"]
    assert s["sigterm_exit"] == 0, s["report"]
    assert s["verify_rc"] == 0, s["report"] + "\n" + s["verify_output"]


def test_fuzz_ledger_unchanged_after_non_ok(fuzz_run):
    """A non-OK reply (including DEADLINE_EXCEEDED for a short grpc-timeout) changed nothing and
    stored nothing under its idempotency key."""
    s = fuzz_run
    assert s["non_ok_mutating_checked"] > 300, s["report"]
    assert s["ledger_changed_after_non_ok"] == 0, s["report"] + "\n" + "\n".join(
        f"input {v['input']} {v['method']}: {v['text']}" for v in s["violations"])


def test_fuzz_refuses_nul_and_invalid_utf8(fuzz_run):
    """Strings with U+0000 or invalid UTF-8 are INVALID_ARGUMENT, never accepted (e.g. client id
    'victim\\0xyz' charged to 'victim'). Fails on binaries without that validation."""
    s = fuzz_run
    bad = [f for f in s["findings"]
           if f["category"] in ("nul-truncated-id", "nul-accepted", "invalid-utf8-accepted")]
    assert not bad, "\n".join(
        f"[{f['category']}] x{f['count']} {f['method']}: {f['detail'][:160]} "
        f"(tools/soak/fuzz --seed {f['seed']} --only {f['reproducer']['input']})" for f in bad)


def test_fuzz_every_call_is_answered(fuzz_run):
    """Every unary call gets a status within the 5 s the fuzzer waits, with headers a stock client accepts."""
    s = fuzz_run
    bad = [f for f in s["findings"] if f["category"] in ("no-reply", "oversized-reply-metadata", "bad-status",
                                                          "unparseable-reply", "malformed-status-details")]
    assert not bad, "\n".join(f"[{f['category']}] x{f['count']} {f['method']}: {f['detail'][:160]}" for f in bad)


@pytest.mark.parametrize("length", [20_000, 70_000, 1 << 20])
def test_long_health_service_name_is_answered(tmp_path, length):
    """Found by tools/soak/fuzz: Health/Check with a long service name must get a bounded
    answer (NOT_FOUND or INVALID_ARGUMENT), not a hang or a trailer larger than clients accept."""
    import grpc
    from grpc_health.v1 import health_pb2

    import soaklib

    srv = soaklib.Server(_binary(), tmp_path / "health").start()
    try:
        ch = srv.channel()
        call = soaklib.RawCaller(ch)
        body = health_pb2.HealthCheckRequest(service="y" * length).SerializeToString()
        try:
            call("/grpc.health.v1.Health/Check", body, timeout=5)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
        ch.close()
        assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), f"{code.name}: {details[:200]}"
        assert soaklib.health_check(srv.port)
    finally:
        assert srv.terminate() == 0
