"""One process per database (issue 13 item 4): serve, migrate and admin seed
hold an exclusive lock on `<db>.lock` for their lifetime; a second one exits
non-zero at once naming the holder's pid; verify, backup and the tenant/key
admin commands keep working beside a running server; a lock left by a killed
process never blocks a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from conftest import CreditsServer, credits_binary
from credits_api import cli, verify_ok


def in_use_message(db, pid: int) -> str:
    return f"database {db} is in use by pid {pid}"


def test_second_writer_is_refused_and_readers_work(tmp_path):
    first = CreditsServer(tmp_path, name="first").start()
    try:
        db = first.db
        started = time.monotonic()
        second = subprocess.run([str(credits_binary()), "serve", "--host", "127.0.0.1", "--port", "0", "--db", str(db)],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode != 0
        assert in_use_message(db, first.proc.pid) in second.stderr, second.stderr
        assert time.monotonic() - started < 10, "the second server waited instead of failing at once"

        for args in (("migrate", "--db", db),
                     ("admin", "seed", "--db", db, "--tenant", "t-seed", "--clients", "10", "--entries", "20",
                      "--token-file", tmp_path / "seed.token", "--quiet")):
            r = cli(*args)
            assert r.returncode != 0, f"{args[0]} ran beside a server"
            assert in_use_message(db, first.proc.pid) in r.stderr, (args, r.stderr)

        # Tenants and keys may still be created beside the server (SQLite
        # serializes the writes; no cache of the server holds them).
        r = cli("admin", "create-tenant", "--db", db, "--id", "t-x", "--name", "X", "--currency", "EUR")
        assert r.returncode == 0, r.stderr
        verify_ok(db)
        r = cli("backup", "--db", db, "--to", tmp_path / "copy.sqlite")
        assert r.returncode == 0, r.stderr
        assert first.alive()
    finally:
        first.terminate()


def test_lock_of_a_killed_server_does_not_block_a_restart(tmp_path):
    first = CreditsServer(tmp_path, name="killed").start()
    db = first.db
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    assert os.path.exists(f"{db}.lock")
    again = CreditsServer(tmp_path, name="again", db=db).start()
    try:
        assert again.alive()
    finally:
        assert again.terminate() == 0
    r = cli("migrate", "--db", db)
    assert r.returncode == 0, r.stderr
