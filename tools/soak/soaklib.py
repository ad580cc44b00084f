"""Shared plumbing of the hostile checks (crash-cycle soak, fuzzer): the real
`credits serve` process, Python stubs generated from proto/, a tenant with
keys, raw (bytes in, bytes out) gRPC calls and `credits verify`.

No pytest dependency: tools/soak/crash-cycle and tools/soak/fuzz import this,
and so does Tests/e2e/test_soak.py.
"""

from __future__ import annotations

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
import types
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    # Fail fast while the server is down instead of backing off for seconds.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def default_binary() -> Path:
    path = Path(os.environ.get("CREDITS_BIN", REPO / ".build/debug/credits"))
    return path if path.is_absolute() else Path.cwd() / path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_channel(port: int, options=()) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS + list(options))


# ---------------------------------------------------------------- stubs

_stubs_lock = threading.Lock()
_stubs: types.SimpleNamespace | None = None


def load_stubs() -> types.SimpleNamespace:
    """Python modules for credits/v1/*.proto (generated once per process into a temp dir,
    unless already importable, e.g. from the e2e `credits_stubs` fixture)."""
    global _stubs
    with _stubs_lock:
        if _stubs is not None:
            return _stubs
        names = sorted(p.stem for p in (PROTO_DIR / "credits" / "v1").glob("*.proto"))
        try:
            for n in names:
                importlib.import_module(f"credits.v1.{n}_pb2")
        except ImportError:
            from grpc_tools import protoc

            out = tempfile.mkdtemp(prefix="credits-soak-stubs-")
            wkt = str(importlib.resources.files("grpc_tools") / "_proto")
            files = [f"credits/v1/{n}.proto" for n in names]
            rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{wkt}", f"--python_out={out}",
                              f"--grpc_python_out={out}", *files])
            if rc != 0:
                raise RuntimeError(f"protoc failed ({rc}) for {files}")
            sys.path.insert(0, out)
            importlib.invalidate_caches()
        ns = types.SimpleNamespace(names=names)
        for n in names:
            setattr(ns, n, importlib.import_module(f"credits.v1.{n}_pb2"))
            setattr(ns, f"{n}_grpc", importlib.import_module(f"credits.v1.{n}_pb2_grpc"))
        from google.rpc import error_details_pb2, status_pb2

        ns.status_pb2 = status_pb2
        ns.error_details_pb2 = error_details_pb2
        ns.health_pb2 = health_pb2
        _stubs = ns
        return ns


# ---------------------------------------------------------------- the server


class ServerError(RuntimeError):
    pass


class Server:
    """`credits serve` on 127.0.0.1 with one SQLite file that outlives restarts.
    Every start picks a free port; stderr of all runs is appended to one log."""

    def __init__(self, binary: Path, workdir: Path, db: Path | None = None, admin_token: str | None = None,
                 extra_args=(), log_level: str = "info"):
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = Path(db) if db else self.workdir / "credits.sqlite"
        self.admin_token = admin_token
        self.admin_key_file = None
        if admin_token is not None:
            self.admin_key_file = self.workdir / "admin.key"
            self.admin_key_file.write_text(admin_token)
            os.chmod(self.admin_key_file, 0o600)
        self.extra_args = list(extra_args)
        self.log_level = log_level
        self.log_path = self.workdir / "server.stderr.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.starts = 0

    def args(self) -> list[str]:
        a = [str(self.binary), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--db", str(self.db),
             "--log-level", self.log_level]
        if self.admin_key_file is not None:
            a += ["--admin-key-file", str(self.admin_key_file)]
        return a + self.extra_args

    def start(self, ready_timeout: float = 30.0) -> "Server":
        if not self.binary.exists():
            raise ServerError(f"server binary {self.binary} does not exist (--bin or CREDITS_BIN)")
        self.port = free_port()
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} port {self.port} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            env = {k: v for k, v in os.environ.items() if k != "CREDITS_ADMIN_KEY"}
            self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.workdir, env=env)
        deadline = time.monotonic() + ready_timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with {self.proc.returncode} during startup\n{self.stderr_tail()}")
            if health_check(self.port, timeout=1.0):
                return self
            last = "health check failed"
            time.sleep(0.05)
        self.kill()
        raise ServerError(f"server not SERVING after {ready_timeout}s ({last})\n{self.stderr_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL by pid (the crash)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    kill = kill9

    def terminate(self, timeout: float = 15.0):
        """SIGTERM by pid; SIGKILL if it hangs. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                return "hung after SIGTERM, killed"
        return self.proc.returncode

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no stderr)"
        return f"--- {self.log_path} (last {lines} lines) ---\n" + "\n".join(text[-lines:])

    def channel(self, options=()) -> grpc.Channel:
        return open_channel(self.port, options)


def health_check(port: int, timeout: float = 5.0) -> bool:
    """Health/Check on a fresh connection: True if SERVING."""
    channel = open_channel(port)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def verify_db(binary: Path, db: Path, timeout: float = 300) -> tuple[int, str]:
    """`credits verify --db FILE`: (exit code, output)."""
    r = subprocess.run([str(binary), "verify", "--db", str(db)], capture_output=True, text=True, timeout=timeout,
                       env={k: v for k, v in os.environ.items() if k != "CREDITS_ADMIN_KEY"})
    return r.returncode, (r.stdout + r.stderr).strip()


# ---------------------------------------------------------------- calls


def bearer(token: str | None) -> list[tuple[str, str]]:
    return [] if token is None else [("authorization", f"Bearer {token}")]


class RawCaller:
    """Unary calls with bytes in and bytes out (byte-for-byte resends, mutated bodies)."""

    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self._methods = {}

    def __call__(self, path: str, body: bytes, metadata=(), timeout: float | None = 10.0, compression=None):
        m = self._methods.get(path)
        if m is None:
            m = self._methods[path] = self.channel.unary_unary(path, request_serializer=None,
                                                               response_deserializer=None)
        return m(body, metadata=list(metadata), timeout=timeout, compression=compression)


def error_reason(err: grpc.RpcError) -> str:
    """The google.rpc.ErrorInfo reason of a failed call, or ''."""
    from google.rpc import error_details_pb2, status_pb2

    try:
        for key, value in err.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                st = status_pb2.Status.FromString(value)
                for d in st.details:
                    if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                        info = error_details_pb2.ErrorInfo()
                        d.Unpack(info)
                        return info.reason
    except Exception:  # noqa: BLE001 - a malformed details trailer is reported by the caller
        return "?malformed-status-details"
    return ""


def new_token() -> str:
    return "soak-admin-" + secrets.token_hex(16)


class TenantKeys(types.SimpleNamespace):
    """tenant_id, staff token, app token."""


def create_tenant(stubs, channel: grpc.Channel, admin_token: str, tenant_id: str, currency: str = "EUR") -> TenantKeys:
    A = stubs.admin
    admin = stubs.admin_grpc.AdminServiceStub(channel)
    md = bearer(admin_token)
    admin.CreateTenant(A.CreateTenantRequest(tenant_id=tenant_id, name=f"Soak {tenant_id}", currency=currency),
                       metadata=md, timeout=10)
    staff = admin.CreateApiKey(A.CreateApiKeyRequest(tenant_id=tenant_id, role=A.ROLE_STAFF, label="soak staff"),
                               metadata=md, timeout=10)
    app = admin.CreateApiKey(A.CreateApiKeyRequest(tenant_id=tenant_id, role=A.ROLE_APP, label="soak app"),
                             metadata=md, timeout=10)
    return TenantKeys(tenant_id=tenant_id, staff=staff.token, app=app.token, staff_key_id=staff.key.id,
                      app_key_id=app.key.id)
