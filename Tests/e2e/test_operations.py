"""docs/OPERATIONS.md, tested: a backup taken while writes run restores into a
new path that a server serves, `verify` passes and every write acknowledged
before the backup is in it; and the CLI's database errors are one readable
line with a non-zero exit (no Foundation or SQLite dumps)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest

from conftest import credits_binary, credits_env
from credits_api import Actor, Tenant, admin_actor, all_entries, channel_for, cli

RAW_ERROR_MARKERS = ("NSCocoaErrorDomain", "NSPOSIXErrorDomain", "SQLite error", "Error Domain", "UserInfo", "PRAGMA")


def assert_one_readable_line(r: subprocess.CompletedProcess, expected: str) -> None:
    assert r.returncode != 0, f"exit 0: {r.stdout!r} {r.stderr!r}"
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: {expected}"], lines
    for marker in RAW_ERROR_MARKERS:
        assert marker not in r.stderr + r.stdout, (marker, r.stderr)


# ---------------------------------------------------------------- backup and restore


def test_backup_taken_during_writes_restores_with_every_acknowledged_write(cs, start_credits_server, tmp_path):
    live = start_credits_server()
    chan = channel_for(live)
    tenant = Tenant(cs, chan, admin_actor(cs, chan))
    clients = [f"member-{i}" for i in range(4)]
    amounts = itertools.count(1)  # every order a distinct amount, so each is recognisable in a statement
    acked: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            while not stop.is_set():
                amount = next(amounts)
                client = clients[amount % len(clients)]
                tenant.order(client, amount)
                with lock:
                    acked.append((client, amount))
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    writers = [threading.Thread(target=write) for _ in range(3)]
    for w in writers:
        w.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        with lock:
            before = list(acked)  # acknowledged before the backup started
        backup = tmp_path / "backups" / "credits-backup.sqlite"
        backup.parent.mkdir()
        r = cli("backup", "--db", live.db, "--to", backup)
        assert r.returncode == 0, r.stderr
        assert "OK" in r.stdout, r.stdout
        with lock:
            at_end = len(acked)
        deadline = time.monotonic() + 30
        while len(acked) < at_end + 30 and time.monotonic() < deadline:
            time.sleep(0.01)  # writes go on after the backup too
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=30)
    assert not errors, errors
    assert len(before) >= 60 and len(acked) >= len(before) + 30, (len(before), len(acked))

    # Restore: copy the backup into a new data directory and serve it.
    restored = tmp_path / "restored" / "credits.sqlite"
    restored.parent.mkdir()
    shutil.copyfile(backup, restored)
    r = cli("verify", "--db", restored)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    server = start_credits_server(db=restored, name="restored")
    rchan = channel_for(server)
    staff = Actor(cs, rchan, tenant.staff_key.token)  # keys are in the database too

    acked_before = {(c, a) for c, a in before}
    for client in clients:
        got = all_entries(cs, staff, client, oldest_first=True)
        want = tenant.entries(client, oldest_first=True)
        fields = lambda e: (e.seq, e.type, e.amount_minor, e.available_after_minor)  # noqa: E731
        # The restored statement is the live one up to the backup's moment: a prefix, entry for entry.
        assert [fields(e) for e in got] == [fields(e) for e in want[: len(got)]], client
        in_backup = {e.amount_minor for e in got}
        missing = sorted(a for c, a in acked_before if c == client and a not in in_backup)
        assert not missing, f"{client}: writes acknowledged before the backup are missing: {missing}"
        balance = staff.credit.GetBalance(cs.credits.GetBalanceRequest(client_id=client)).summary
        assert balance.available_minor == sum(e.amount_minor for e in got)
        assert balance.available_minor == (got[-1].available_after_minor if got else 0)
        assert balance.available_minor >= sum(a for c, a in before if c == client)
    rchan.close()
    chan.close()


def test_backup_refuses_an_existing_destination(start_credits_server, tmp_path):
    srv = start_credits_server()
    target = tmp_path / "exists.sqlite"
    target.write_bytes(b"")
    assert_one_readable_line(cli("backup", "--db", srv.db, "--to", target),
                             f"cannot write backup {target}: the file exists already")


# ---------------------------------------------------------------- unreadable databases


def run_cli(binary, *args, as_nobody: bool = False) -> subprocess.CompletedProcess:
    cmd = [str(binary), *map(str, args)]
    if as_nobody and os.geteuid() == 0:
        # Root ignores file permissions: drop to nobody to see what an operator sees.
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=credits_env(),
                          stdin=subprocess.DEVNULL)


def test_a_file_that_is_not_sqlite_is_one_readable_line(tmp_path):
    binary = credits_binary()
    db = tmp_path / "notes.sqlite"
    db.write_text("these are my notes, not a database\n" * 10)
    for args in (["serve", "--port", "0"], ["migrate"], ["verify"], ["backup", "--to", tmp_path / "b.sqlite"],
                 ["admin", "create-tenant", "--id", "t1", "--name", "T", "--currency", "EUR"]):
        r = run_cli(binary, *args, "--db", db)
        assert_one_readable_line(r, f"cannot open database {db}: not an SQLite database")
    assert db.read_text().startswith("these are my notes"), "the file was changed"
    assert not (tmp_path / "b.sqlite").exists()


def test_database_paths_that_cannot_exist_are_one_readable_line(tmp_path):
    binary = credits_binary()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_readable_line(run_cli(binary, "serve", "--port", "0", "--db", afile / "data" / "credits.sqlite"),
                             f"cannot create the database directory: {afile} is a file, not a directory")
    assert_one_readable_line(run_cli(binary, "verify", "--db", tmp_path / "none.sqlite"),
                             f"cannot open database {tmp_path / 'none.sqlite'}: no such file")
    assert_one_readable_line(run_cli(binary, "serve", "--port", "0", "--db", tmp_path),
                             f"cannot open database {tmp_path}: it is a directory")


@pytest.fixture
def shared_dir():
    """A directory every user may enter (pytest's tmp_path is root-only), with a copy of the binary."""
    d = Path(tempfile.mkdtemp(prefix="credits-ops-"))
    d.chmod(0o777)
    binary = d / "credits"
    shutil.copy2(credits_binary(), binary)
    binary.chmod(0o755)
    yield d, binary
    for p in d.rglob("*"):
        p.chmod(0o777 if p.is_dir() else 0o666)
    shutil.rmtree(d)


def test_permission_denied_is_one_readable_line(shared_dir):
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop privileges")
    d, binary = shared_dir
    locked = d / "locked"
    locked.mkdir()
    locked.chmod(0o555)  # not writable by anyone but root
    assert_one_readable_line(run_cli(binary, "serve", "--port", "0", "--db", locked / "credits.sqlite", as_nobody=True),
                             f"cannot create database {locked / 'credits.sqlite'}: directory {locked} is not writable "
                             "(Permission denied)")
    assert_one_readable_line(run_cli(binary, "migrate", "--db", locked / "sub" / "credits.sqlite", as_nobody=True),
                             f"cannot create the database directory {locked / 'sub'}: Permission denied")

    db = d / "credits.sqlite"
    assert run_cli(binary, "migrate", "--db", db).returncode == 0
    db.chmod(0o600)  # root's file: nobody may neither read nor write it
    for args in (["serve", "--port", "0"], ["migrate"], ["verify"]):
        assert_one_readable_line(run_cli(binary, *args, "--db", db, as_nobody=True),
                                 f"cannot read database {db}: Permission denied")
    db.chmod(0o644)  # readable, not writable: verify works, serve cannot
    r = run_cli(binary, "verify", "--db", db, as_nobody=True)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    assert_one_readable_line(run_cli(binary, "serve", "--port", "0", "--db", db, as_nobody=True),
                             f"cannot write database {db}: Permission denied")
    assert_one_readable_line(run_cli(binary, "backup", "--db", db, "--to", locked / "b.sqlite", as_nobody=True),
                             f"cannot write backup {locked / 'b.sqlite'}: directory {locked} is not writable "
                             "(Permission denied)")
