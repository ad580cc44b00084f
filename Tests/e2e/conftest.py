"""End-to-end fixtures: generated Python stubs and the real `credits serve` binary.

Run from the repository root:

    CREDITS_BIN=.build/debug/credits .venv/bin/python -m pytest -q Tests/e2e

The server is started on 127.0.0.1 on a free port with a SQLite file in a
pytest tmp dir and stopped with SIGTERM (SIGKILL if it hangs). Its stderr goes
to a file whose tail is attached to the report of any failing test.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
READY_TIMEOUT = 20.0  # seconds to wait for Health/Check == SERVING
STOP_TIMEOUT = 15.0  # seconds after SIGTERM before SIGKILL

# Every channel the tests open: no proxies, only 127.0.0.1.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def credits_binary() -> Path:
    path = Path(os.environ.get("CREDITS_BIN", ".build/debug/credits"))
    if not path.is_absolute():
        path = Path.cwd() / path
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float = 10.0, what: str = "", interval: float = 0.02):
    """Polls `condition()` until it returns a truthy value, and returns that
    value; fails the test (AssertionError naming `what`) once `timeout`
    seconds pass without it. Tests wait with this for what they need, never
    with a fixed sleep (a sleep stays only where stalling is what a test
    does, and says so)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or condition}")
        time.sleep(interval)


def open_channel(port: int, options=(), compression=None) -> grpc.Channel:
    return grpc.insecure_channel(
        f"127.0.0.1:{port}", options=list(CHANNEL_OPTIONS) + list(options), compression=compression
    )


class CreditsServer:
    """One `credits serve` process on 127.0.0.1."""

    def __init__(self, workdir: Path, extra_args=(), name: str = "server", env: dict | None = None,
                 db: Path | None = None):
        self.binary = credits_binary()
        self.workdir = workdir
        self.port = free_port()
        self.db = Path(db) if db is not None else workdir / f"{name}.sqlite"
        # None: inherit this process's environment.
        self.env = env
        self.stderr_path = workdir / f"{name}.stderr.log"
        self.stdout_path = workdir / f"{name}.stdout.log"
        self.args = [
            str(self.binary), "serve",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--db", str(self.db),
            "--enable-test-service",
            "--log-level", "debug",
            *extra_args,
        ]
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "CreditsServer":
        if not self.binary.exists():
            pytest.fail(f"server binary {self.binary} does not exist (set CREDITS_BIN)", pytrace=False)
        self._stderr = open(self.stderr_path, "wb")
        self._stdout = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr, cwd=self.workdir,
            env=self.env,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"server exited with {self.proc.returncode} during startup\n{self.stderr_tail()}", pytrace=False
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError as e:
                last = f"connect: {e}"
                time.sleep(0.05)
                continue
            channel = open_channel(self.port)
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = f"health status {reply.status}"
            except grpc.RpcError as e:
                last = f"health: {e.code()} {e.details()}"
            finally:
                channel.close()
            time.sleep(0.1)
        pytest.fail(f"server not SERVING after {READY_TIMEOUT}s ({last})\n{self.stderr_tail()}", pytrace=False)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM by PID, wait, SIGKILL if it hangs. Returns the exit code (negative: killed by signal)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.returncode = "hung after SIGTERM, killed"
                self._close_files()
                return self.returncode
        self.returncode = self.proc.returncode
        self._close_files()
        return self.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._close_files()

    def _close_files(self) -> None:
        for f in (getattr(self, "_stderr", None), getattr(self, "_stdout", None)):
            if f is not None and not f.closed:
                f.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, lines: int = 60) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no stderr)"
        return f"--- {self.stderr_path} (last {lines} lines) ---\n" + "\n".join(text[-lines:])


# ---------------------------------------------------------------- stubs


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


@pytest.fixture(scope="session")
def stubs(tmp_path_factory) -> types.SimpleNamespace:
    """Python stubs for credits.testing.v1 (generated now) and google.rpc (packaged, or generated)."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    wkt = str(importlib.resources.files("grpc_tools") / "_proto")
    files = ["credits/testing/v1/test_service.proto"]
    # googleapis-common-protos (a grpcio-status dependency) ships google.rpc;
    # generating ours too would register the same proto files twice.
    have_google_rpc = _importable("google.rpc.status_pb2") and _importable("google.rpc.error_details_pb2")
    if not have_google_rpc:
        files += sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "google" / "rpc").glob("*.proto"))
    rc = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    )
    assert rc == 0, f"protoc failed ({rc}) for {files}"
    sys.path.insert(0, str(out))
    if not have_google_rpc:
        # google is a namespace package; make the generated google.rpc visible.
        import google

        google.__path__.append(str(out / "google"))
    ns = types.SimpleNamespace(
        pb=importlib.import_module("credits.testing.v1.test_service_pb2"),
        grpc=importlib.import_module("credits.testing.v1.test_service_pb2_grpc"),
        status_pb2=importlib.import_module("google.rpc.status_pb2"),
        error_details_pb2=importlib.import_module("google.rpc.error_details_pb2"),
        generated_google_rpc=not have_google_rpc,
    )
    return ns


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def server(tmp_path_factory, stubs):
    """The shared server most tests call. Its teardown asserts a clean SIGTERM exit."""
    srv = CreditsServer(tmp_path_factory.mktemp("server"), name="shared").start()
    yield srv
    rc = srv.terminate()
    assert rc == 0, f"shared server exit code after SIGTERM: {rc}\n{srv.stderr_tail()}"


@pytest.fixture
def start_server(tmp_path, stubs):
    """Factory for a dedicated server (shutdown tests, non-default flags); killed at teardown."""
    started: list[CreditsServer] = []

    def start(*extra_args, name: str = "dedicated") -> CreditsServer:
        srv = CreditsServer(tmp_path, extra_args, name=f"{name}{len(started)}")
        started.append(srv)
        return srv.start()

    start.started = started
    yield start
    for srv in started:
        if srv.alive():
            srv.terminate()


@pytest.fixture
def channel(server):
    # Client limits above the server's 4 MiB default, so size errors come from the server.
    ch = open_channel(server.port, options=[("grpc.max_send_message_length", 8 << 20),
                                            ("grpc.max_receive_message_length", 8 << 20)])
    yield ch
    ch.close()


@pytest.fixture
def test_stub(channel, stubs):
    return stubs.grpc.TestServiceStub(channel)


# ---------------------------------------------------------------- credits.v1 API

# The admin token the credits.v1 servers below are started with (CREDITS_ADMIN_KEY).
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"


def credits_env() -> dict:
    """This process's environment plus the admin token."""
    env = dict(os.environ)
    env["CREDITS_ADMIN_KEY"] = ADMIN_TOKEN
    return env


@pytest.fixture(scope="session")
def credits_stubs(stubs, tmp_path_factory) -> types.SimpleNamespace:
    """Python stubs for credits/v1/*.proto, generated now (google.rpc comes from `stubs`)."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("credits_stubs")
    wkt = str(importlib.resources.files("grpc_tools") / "_proto")
    files = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "credits" / "v1").glob("*.proto"))
    rc = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    )
    assert rc == 0, f"protoc failed ({rc}) for {files}"
    sys.path.insert(0, str(out))
    importlib.invalidate_caches()
    return types.SimpleNamespace(
        common=importlib.import_module("credits.v1.common_pb2"),
        errors=importlib.import_module("credits.v1.errors_pb2"),
        admin=importlib.import_module("credits.v1.admin_pb2"),
        admin_grpc=importlib.import_module("credits.v1.admin_pb2_grpc"),
        packages=importlib.import_module("credits.v1.packages_pb2"),
        packages_grpc=importlib.import_module("credits.v1.packages_pb2_grpc"),
        credits=importlib.import_module("credits.v1.credits_pb2"),
        credits_grpc=importlib.import_module("credits.v1.credits_pb2_grpc"),
        feed=importlib.import_module("credits.v1.feed_pb2"),
        feed_grpc=importlib.import_module("credits.v1.feed_pb2_grpc"),
        status_pb2=stubs.status_pb2,
        error_details_pb2=stubs.error_details_pb2,
    )


@pytest.fixture(scope="session")
def credits_server(tmp_path_factory, credits_stubs):
    """A shared server with an admin token for the credits.v1 tests; clean SIGTERM exit asserted."""
    srv = CreditsServer(tmp_path_factory.mktemp("credits"), name="credits", env=credits_env()).start()
    yield srv
    rc = srv.terminate()
    assert rc == 0, f"credits server exit code after SIGTERM: {rc}\n{srv.stderr_tail()}"


@pytest.fixture
def start_credits_server(tmp_path, credits_stubs):
    """Factory for dedicated servers with the admin token; `db=` reuses a database file (restarts).
    Servers still running at teardown get SIGTERM."""
    started: list[CreditsServer] = []

    def start(*extra_args, name: str = "credits", db: Path | None = None) -> CreditsServer:
        srv = CreditsServer(tmp_path, extra_args, name=f"{name}{len(started)}", env=credits_env(), db=db)
        started.append(srv)
        return srv.start()

    start.started = started
    yield start
    for srv in started:
        if srv.alive():
            srv.terminate()


# ---------------------------------------------------------------- reporting


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    servers = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, CreditsServer):
            servers.append(value)
        elif callable(value) and isinstance(getattr(value, "started", None), list):
            servers.extend(value.started)
    for srv in servers:
        report.sections.append((f"credits stderr ({srv.address})", srv.stderr_tail()))


# Fixtures shared by the credits.v1 test modules (a module may override `cs`).


@pytest.fixture(scope="module")
def cs(credits_stubs):
    return credits_stubs


@pytest.fixture(scope="module")
def cchan(credits_server):
    from credits_api import channel_for

    ch = channel_for(credits_server)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def admin(cs, cchan):
    from credits_api import admin_actor

    return admin_actor(cs, cchan)
