"""Bulk import benchmark (issue 14): N records through ImportLots into a release server.

Starts `credits serve` on 127.0.0.1 (free port) with a fresh SQLite file in a
temporary directory, creates a tenant and a staff key through AdminService,
streams N ImportLotRecords on one grpcio call as fast as the client can make
them (HTTP/2 flow control holds it back), and reports records/s, wall time,
the server's peak RSS (VmHWM, and the highest VmRSS sampled every 0.1 s) and
its RSS at the end. Then stops the server by PID (SIGTERM) and runs
`credits verify` on the database. Exit status 0 when every record was
applied and verify passed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def vm_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def stubs(work: Path):
    from grpc_tools import protoc

    out = work / "stubs"
    out.mkdir()
    wkt = str(importlib.resources.files("grpc_tools") / "_proto")
    proto = REPO / "proto"
    files = sorted(str(p.relative_to(proto)) for p in (proto / "credits" / "v1").glob("*.proto"))
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}", *files])
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc})")
    sys.path.insert(0, str(out))
    importlib.invalidate_caches()
    return (importlib.import_module("credits.v1.admin_pb2"), importlib.import_module("credits.v1.admin_pb2_grpc"),
            importlib.import_module("credits.v1.credits_pb2"), importlib.import_module("credits.v1.credits_pb2_grpc"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tools/bench/import", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=10_000, help="records are spread over this many clients")
    parser.add_argument("--bin", help="credits binary (default: swift build -c release, then .build/release/credits)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra argument for credits serve")
    parser.add_argument("--markdown", help="also write the results as Markdown to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, server log)")
    args = parser.parse_args(argv)

    binary = args.bin
    if binary is None:
        print("bench/import: swift build -c release --product credits", file=sys.stderr)
        subprocess.run(["swift", "build", "-c", "release", "--product", "credits"], cwd=REPO, check=True)
        binary = str(REPO / ".build/release/credits")

    import grpc

    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    admin_pb2, admin_grpc, credits_pb2, credits_grpc = stubs(work)
    db = work / "credits.sqlite"
    key_file = work / "admin.key"
    admin_token = secrets.token_hex(24)
    key_file.write_text(admin_token)
    key_file.chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [binary, "serve", "--host", "127.0.0.1", "--port", str(port), "--db", str(db),
               "--admin-key-file", str(key_file), "--log-level", "warning", *args.server_arg]
    log = open(work / "server.log", "wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])
    result = None
    try:
        admin_md = [("authorization", f"Bearer {admin_token}")]
        admin = admin_grpc.AdminServiceStub(channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                admin.CreateTenant(admin_pb2.CreateTenantRequest(tenant_id="bench-import", name="Bench", currency="EUR"),
                                   metadata=admin_md, timeout=2)
                break
            except grpc.RpcError as e:
                if time.monotonic() > deadline or server.poll() is not None:
                    print(f"bench/import: server not ready ({e.code()}); log: {work / 'server.log'}", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        staff = admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(tenant_id="bench-import", role=admin_pb2.ROLE_STAFF, label="bench"),
                                   metadata=admin_md, timeout=5)
        stub = credits_grpc.CreditServiceStub(channel)
        md = [("authorization", f"Bearer {staff.token}")]
        idle_rss = vm_kib(server.pid, "VmRSS")

        template = credits_pb2.ImportLotRecord(amount_minor=1000, center_id="c1", legacy_origin="gift card", price_minor=900)
        clients = [f"client-{i}" for i in range(args.clients)]

        def records():
            r = credits_pb2.ImportLotRecord()
            for i in range(args.records):
                r.CopyFrom(template)
                r.record_key = f"legacy:{i}"
                r.client_id = clients[i % len(clients)]
                r.external_ref = f"GC-{i}"
                yield r

        samples: list[int] = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append(vm_kib(server.pid, "VmRSS"))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        result = stub.ImportLots(records(), metadata=md, timeout=3600)
        wall = time.monotonic() - started
        stop.set()
        sampler.join()
        hwm = vm_kib(server.pid, "VmHWM")
        end_rss = vm_kib(server.pid, "VmRSS")
    finally:
        channel.close()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()

    verify = subprocess.run([binary, "verify", "--db", str(db)], capture_output=True, text=True)
    verify_line = (verify.stdout.strip().splitlines() or ["(no output)"])[-1]
    db_mib = sum(p.stat().st_size for p in work.glob("credits.sqlite*")) / 2**20
    mib = 1024
    ok = (result is not None and result.complete and result.applied == args.records and result.failed == 0
          and verify.returncode == 0)
    lines = [
        f"- command: `tools/bench/import {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- server: `credits serve --host 127.0.0.1 --port PORT --db DB --admin-key-file KEY --log-level warning"
        f"{(' ' + ' '.join(args.server_arg)) if args.server_arg else ''}` ({Path(binary).parent.name} build, sync=full)",
        f"- load: one grpcio ImportLots call, {args.records} records over {args.clients} clients, as fast as the client makes them",
        "",
        "| measure | value |",
        "|---|---|",
        f"| records | {args.records} (applied {result.applied if result else 'n/a'}, failed {result.failed if result else 'n/a'}, "
        f"complete {result.complete if result else 'n/a'}) |",
        f"| wall time | {wall:.1f} s |" if result else "| wall time | n/a |",
        f"| records/s | {args.records / wall:.0f} |" if result else "| records/s | n/a |",
        f"| server RSS idle, before | {idle_rss / mib:.0f} MiB |" if result else "| server RSS idle | n/a |",
        f"| server peak RSS (VmHWM) | {hwm / mib:.0f} MiB (highest sample {max(samples or [0]) / mib:.0f} MiB) |" if result else "| peak RSS | n/a |",
        f"| server RSS at the end | {end_rss / mib:.0f} MiB |" if result else "| RSS at the end | n/a |",
        f"| database (with WAL) | {db_mib:.0f} MiB |",
        f"| credits verify | {verify_line} |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.keep or not ok:
        print(f"bench/import: files kept in {work}", file=sys.stderr)
    else:
        for p in sorted(work.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        work.rmdir()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
