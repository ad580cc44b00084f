"""Unwritable storage (issue 13 item 7).

A full disk (a small tmpfs, as root) and a moved database file: writes get
UNAVAILABLE with a message a person understands, nothing of them is applied,
health reports NOT_SERVING, reads keep working, the service recovers by
itself when the storage is back, and `credits verify` passes.
"""

from __future__ import annotations

import os
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import CreditsServer, credits_env
from credits_api import NOT_FOUND, Tenant, admin_actor, channel_for, decode, expect, uid, verify_ok

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def health(channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_health(channel, want: int, seconds: float = 15.0):
    end = time.monotonic() + seconds
    while True:
        got = health(channel)
        if got == want:
            return
        assert time.monotonic() < end, f"health stayed {got}, expected {want}"
        time.sleep(0.1)


def try_spend(cs, t: Tenant, client: str, amount: int):
    """(key, None) when applied; (key, error) otherwise."""
    key = uid("k-")
    try:
        t.spend(client, amount, idempotency_key=key)
        return key, None
    except grpc.RpcError as e:
        return key, e


def write_until_failure(cs, t: Tenant, client: str, expected_total: int, tries: int = 400):
    """Spends 1 until one fails; checks each outcome against the ledger. Returns (failure, total)."""
    for _ in range(tries):
        key, err = try_spend(cs, t, client, 1)
        if err is None:
            expected_total -= 1
            continue
        f = decode(cs, err)
        assert f.code == UNAVAILABLE, f"{f.code}: {f.details}"
        expect(cs, NOT_FOUND, t.staff.credit.GetOperation, cs.credits.GetOperationRequest(idempotency_key=key))
        return f, expected_total
    raise AssertionError("no write failed")


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path, chunk=64 * 1024):
    """Writes zeros to `path` until the file system is full. Unbuffered: with a
    buffer, the bytes a failed write left in it made close() raise ENOSPC again
    whenever the free space was not a multiple of the chunk."""
    with open(path, "wb", buffering=0) as f:
        block = b"\0" * chunk
        try:
            while True:
                f.write(block)
        except OSError:
            pass
        try:
            os.fsync(f.fileno())
        except OSError:
            pass


def test_disk_full_is_unavailable_and_recovers(cs, tmpfs, tmp_path):
    db = tmpfs / "credits.sqlite"
    srv = CreditsServer(tmp_path, name="full", env=credits_env(), db=db).start()
    ch = channel_for(srv)
    try:
        t = Tenant(cs, ch, admin_actor(cs, ch))
        client = uid("c-")
        t.order(client, 1_000_000)
        total = 1_000_000
        filler = tmpfs / "filler"
        fill(filler)
        failure, total = write_until_failure(cs, t, client, total)
        assert "disk full" in failure.details, failure.details
        assert failure.info.reason == "STORAGE_FULL"
        # Reads keep working; health tells.
        assert t.summary(client)[0] == total
        wait_health(ch, health_pb2.HealthCheckResponse.NOT_SERVING)
        # More writes fail the same way and change nothing.
        for _ in range(5):
            key, err = try_spend(cs, t, client, 1)
            if err is None:
                total -= 1
            else:
                assert err.code() == UNAVAILABLE
        assert t.summary(client)[0] == total

        os.remove(filler)
        wait_health(ch, health_pb2.HealthCheckResponse.SERVING)
        t.spend(client, 10)
        assert t.summary(client)[0] == total - 10
    finally:
        ch.close()
        assert srv.terminate() == 0, srv.stderr_tail()
    verify_ok(db)


def test_moved_database_file_is_unavailable_and_recovers(cs, tmp_path):
    work = tmp_path / "moved"
    work.mkdir()
    db = work / "credits.sqlite"
    srv = CreditsServer(tmp_path, name="moved", env=credits_env(), db=db).start()
    ch = channel_for(srv)
    try:
        t = Tenant(cs, ch, admin_actor(cs, ch))
        client = uid("c-")
        t.order(client, 1000)
        os.rename(db, work / "elsewhere.sqlite")
        failure, total = write_until_failure(cs, t, client, 1000, tries=5)
        assert "read-only, moved or missing" in failure.details, failure.details
        assert failure.info.reason == "STORAGE_UNAVAILABLE"
        assert t.summary(client)[0] == total
        wait_health(ch, health_pb2.HealthCheckResponse.NOT_SERVING)

        os.rename(work / "elsewhere.sqlite", db)
        wait_health(ch, health_pb2.HealthCheckResponse.SERVING)
        t.spend(client, 10)
        assert t.summary(client)[0] == total - 10
    finally:
        ch.close()
        assert srv.terminate() == 0, srv.stderr_tail()
    verify_ok(db)
