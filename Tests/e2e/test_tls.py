"""TLS and mTLS (issue 15, deliverable 3): `serve --tls-cert/--tls-key[/--tls-client-ca]`.

A throwaway PKI is made with the `openssl` CLI in a temp dir: a CA, two server
certificates for 127.0.0.1/localhost (serials 1001 and 2002, so a reload can be
seen), a client certificate from the CA and one from another CA.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import READY_TIMEOUT, CreditsServer, credits_binary, credits_env
from credits_api import Tenant, admin_actor, uid

HEALTH = "/grpc.health.v1.Health/Check"
EMPTY_GRPC_MESSAGE = b"\x00\x00\x00\x00\x00"


# ---------------------------------------------------------------- PKI


def openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, errors="replace", timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)} failed:\n{r.stderr}"


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=d)


def make_leaf(d: Path, ca: str, name: str, serial: str, usage: str) -> None:
    ext = d / f"{name}.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                   f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-set_serial", f"0x{serial}", "-days", "2", "-out", f"{name}.pem", "-extfile", ext.name, cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is missing (tools/install-deps installs it)", pytrace=False)
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_leaf(d, "ca", "server-a", "1001", "serverAuth")
    make_leaf(d, "ca", "server-b", "2002", "serverAuth")
    make_leaf(d, "ca", "client", "3003", "clientAuth")
    make_leaf(d, "other-ca", "stranger", "4004", "clientAuth")
    (d / "garbage.pem").write_text("this is not PEM\n")
    return d


def install(pki: Path, dest: Path, name: str) -> tuple[Path, Path]:
    """Copies NAME.pem/NAME.key to dest/server.pem/server.key (replacing whole files)."""
    cert, key = dest / "server.pem", dest / "server.key"
    for src, dst in ((pki / f"{name}.pem", cert), (pki / f"{name}.key", key)):
        tmp = dst.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    return cert, key


# ---------------------------------------------------------------- clients


def client_context(pki: Path, client: str | None = None, alpn=("h2",)) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if alpn is not None:
        ctx.set_alpn_protocols(list(alpn))
    if client is not None:
        ctx.load_cert_chain(str(pki / f"{client}.pem"), str(pki / f"{client}.key"))
    return ctx


def tls_connect(port: int, ctx: ssl.SSLContext, timeout: float = 5) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def served_serial(port: int, pki: Path, client: str | None = None) -> str:
    """The serial of the certificate a NEW connection is served."""
    with tls_connect(port, client_context(pki, client)) as s:
        return s.getpeercert()["serialNumber"]


def secure_channel(port: int, pki: Path, client: str | None = None) -> grpc.Channel:
    kw = {}
    if client is not None:
        kw = {"private_key": (pki / f"{client}.key").read_bytes(),
              "certificate_chain": (pki / f"{client}.pem").read_bytes()}
    creds = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes(), **kw)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds)


def health(channel: grpc.Channel, timeout: float = 5) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status


class H2Client:
    """HTTP/2 over one TLS socket (h2 package): health checks on the SAME connection."""

    def __init__(self, sock: ssl.SSLSocket):
        assert sock.selected_alpn_protocol() == "h2"
        self.sock = sock
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def health_check(self) -> str:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":authority", "127.0.0.1"),
                                     (":path", HEALTH), ("content-type", "application/grpc"), ("te", "trailers")])
        self.conn.send_data(sid, EMPTY_GRPC_MESSAGE, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        status = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            for ev in self.conn.receive_data(data):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and ev.stream_id == sid:
                    for k, v in ev.headers:
                        if k in (b"grpc-status", "grpc-status"):
                            status = v.decode() if isinstance(v, bytes) else v
                elif isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    self.sock.sendall(self.conn.data_to_send())
                    return status
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise AssertionError(f"GOAWAY: {ev}")
            self.sock.sendall(self.conn.data_to_send())
        raise AssertionError("no response within 5 s")


# ---------------------------------------------------------------- servers


class TLSServer(CreditsServer):
    """`credits serve` with TLS flags; ready when a secure health check says SERVING."""

    def __init__(self, workdir: Path, pki: Path, extra_args=(), name="tls", client: str | None = None):
        super().__init__(workdir, extra_args, name=name, env=credits_env())
        self.pki = pki
        self.client = client

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode} during startup\n{self.stderr_tail()}",
                            pytrace=False)
            ch = secure_channel(self.port, self.pki, self.client)
            try:
                if health(ch, timeout=1) == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as e:
                last = f"{e.code()} {e.details()}"
            finally:
                ch.close()
            time.sleep(0.1)
        pytest.fail(f"TLS server not SERVING after {READY_TIMEOUT}s ({last})\n{self.stderr_tail()}", pytrace=False)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_log(self, needle: str, count: int = 1, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stderr_text().count(needle) >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"log line {needle!r} (x{count}) not seen within {timeout}s\n{self.stderr_tail()}")


@pytest.fixture
def start_tls(tmp_path, pki, credits_stubs):
    started: list[TLSServer] = []

    def start(*extra_args, cert="server-a", client_ca=False, client=None, reload_check=0) -> TLSServer:
        certs = tmp_path / f"certs{len(started)}"
        certs.mkdir()
        cert_path, key_path = install(pki, certs, cert)
        args = ["--tls-cert", str(cert_path), "--tls-key", str(key_path),
                "--tls-reload-check-seconds", str(reload_check), *extra_args]
        if client_ca:
            args += ["--tls-client-ca", str(pki / "ca.pem")]
        srv = TLSServer(tmp_path, pki, args, name=f"tls{len(started)}", client=client)
        srv.certs = certs
        started.append(srv)
        return srv.start()

    start.started = started
    yield start
    for srv in started:
        if srv.alive():
            rc = srv.terminate()
            assert rc == 0, f"exit code after SIGTERM: {rc}\n{srv.stderr_tail()}"


# ---------------------------------------------------------------- tests


def test_grpcio_secure_channel_calls_health_and_credits(start_tls, pki, credits_stubs):
    srv = start_tls()
    ch = secure_channel(srv.port, pki)
    try:
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING
        cs = credits_stubs
        tenant = Tenant(cs, ch, admin_actor(cs, ch))
        client = uid("c-")
        tenant.order(client, 700)
        assert tenant.summary(client)[0] == 700
    finally:
        ch.close()
    text = srv.stderr_text()
    assert "mode=tls" in text or '"mode":"tls"' in text, text[-2000:]
    assert "serial=1001" in text or '"serial":"1001"' in text, text[-2000:]


def test_plain_h2c_on_a_tls_port_fails_cleanly(start_tls, pki, tmp_path):
    srv = start_tls()
    plain = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    try:
        with pytest.raises(grpc.RpcError) as e:
            health(plain, timeout=3)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        plain.close()
    req = tmp_path / "health.bin"
    req.write_bytes(EMPTY_GRPC_MESSAGE)
    r = subprocess.run(["h2load", "-n", "4", "-c", "1", "-d", str(req), "-H", "content-type: application/grpc",
                        f"http://127.0.0.1:{srv.port}{HEALTH}"], capture_output=True, text=True, errors="replace", timeout=30)
    assert "0 succeeded" in r.stdout, r.stdout + r.stderr
    # The server is unharmed and says why it closed them (debug level).
    ch = secure_channel(srv.port, pki)
    try:
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING
    finally:
        ch.close()
    assert "TLS handshake failed" in srv.stderr_text()


@pytest.mark.parametrize("alpn", [None, ("http/1.1",)], ids=["no-alpn", "http1.1-only"])
def test_a_client_that_does_not_negotiate_h2_is_closed(start_tls, pki, alpn):
    srv = start_tls()
    with tls_connect(srv.port, client_context(pki, alpn=alpn)) as s:
        assert s.selected_alpn_protocol() is None
        t0 = time.monotonic()
        try:
            data = s.recv(1024)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        assert data == b"", f"the server sent {data!r} instead of closing"
        assert time.monotonic() - t0 < 3
    assert "did not negotiate h2" in srv.stderr_text()
    # An h2 client on the same server gets the HTTP/2 preface (SETTINGS) and an answer.
    with tls_connect(srv.port, client_context(pki)) as s:
        assert H2Client(s).health_check() == "0"


def test_handshake_timeout_closes_a_silent_connection(start_tls, pki):
    srv = start_tls("--tls-handshake-timeout-seconds", "1", "--idle-timeout-seconds", "300")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(1) == b""
        waited = time.monotonic() - t0
    assert 0.8 <= waited < 5, f"closed after {waited:.2f}s, want about 1 s"
    assert "TLS handshake not finished in time" in srv.stderr_text()


def test_mtls_accepts_a_client_of_the_ca_and_refuses_others(start_tls, pki, credits_stubs):
    srv = start_tls(client_ca=True, client="client")
    good = secure_channel(srv.port, pki, "client")
    try:
        assert health(good) == health_pb2.HealthCheckResponse.SERVING
        cs = credits_stubs
        tenant = Tenant(cs, good, admin_actor(cs, good))
        client = uid("c-")
        tenant.order(client, 300)
        assert tenant.summary(client)[0] == 300
    finally:
        good.close()
    for who in ("stranger", None):
        ch = secure_channel(srv.port, pki, who)
        try:
            with pytest.raises(grpc.RpcError) as e:
                health(ch, timeout=3)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, f"{who}: {e.value}"
        finally:
            ch.close()
        # The same at the TLS level: the server does not serve the connection.
        with pytest.raises((ssl.SSLError, ConnectionResetError, AssertionError)):
            with tls_connect(srv.port, client_context(pki, who)) as s:
                H2Client(s).health_check()
    assert srv.alive()
    assert "mode=mtls" in srv.stderr_text()


def test_h2load_over_tls_makes_grpc_calls(start_tls, pki, credits_stubs, tmp_path):
    srv = start_tls()
    cs = credits_stubs
    ch = secure_channel(srv.port, pki)
    try:
        tenant = Tenant(cs, ch, admin_actor(cs, ch))
        client = uid("c-")
        tenant.order(client, 500)
    finally:
        ch.close()
    body = cs.credits.GetBalanceRequest(client_id=client).SerializeToString()
    req = tmp_path / "getbalance.bin"
    req.write_bytes(b"\x00" + len(body).to_bytes(4, "big") + body)
    url = f"https://127.0.0.1:{srv.port}/credits.v1.CreditService/GetBalance"
    r = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "10", "-d", str(req),
                        "-H", "content-type: application/grpc", "-H", "te: trailers",
                        "-H", f"authorization: Bearer {tenant.staff_key.token}", url],
                       capture_output=True, text=True, errors="replace", timeout=60)
    assert "400 succeeded, 0 failed, 0 errored" in r.stdout, r.stdout + r.stderr
    assert "Application protocol: h2" in r.stdout, r.stdout
    assert "TLS Protocol: TLSv1.3" in r.stdout or "TLS Protocol: TLSv1.2" in r.stdout, r.stdout
    # The same request answered grpc-status 0 (h2load counts any :status 200 as success).
    v = subprocess.run(["nghttp", "-v", "-d", str(req), "-H", "content-type: application/grpc", "-H", "te: trailers",
                        "-H", f"authorization: Bearer {tenant.staff_key.token}", url],
                       capture_output=True, text=True, errors="replace", timeout=30)
    assert "grpc-status: 0" in v.stdout, v.stdout


def test_sighup_reload_new_connections_get_the_new_certificate_open_ones_keep_working(start_tls, pki):
    srv = start_tls()
    assert served_serial(srv.port, pki) == "1001"
    before = tls_connect(srv.port, client_context(pki))
    early = H2Client(before)
    assert early.health_check() == "0"
    early_channel = secure_channel(srv.port, pki)
    assert health(early_channel) == health_pb2.HealthCheckResponse.SERVING
    try:
        install(pki, srv.certs, "server-b")
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_log("TLS certificate reloaded")
        assert served_serial(srv.port, pki) == "2002"
        with tls_connect(srv.port, client_context(pki)) as s:
            assert s.getpeercert()["subject"] == ((("commonName", "server-b"),),)
        # Opened before the reload: the same TCP+TLS connection still serves.
        assert early.health_check() == "0"
        assert early.health_check() == "0"
        assert before.getpeercert()["serialNumber"] == "1001"
        assert health(early_channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        before.close()
        early_channel.close()
    assert srv.alive()


def test_changed_files_are_reloaded_without_a_signal(start_tls, pki):
    srv = start_tls(reload_check=1)
    assert served_serial(srv.port, pki) == "1001"
    install(pki, srv.certs, "server-b")
    deadline = time.monotonic() + 10
    while served_serial(srv.port, pki) != "2002":
        assert time.monotonic() < deadline, f"not reloaded within 10 s\n{srv.stderr_tail()}"
        time.sleep(0.2)
    assert "trigger=files changed" in srv.stderr_text() or '"trigger":"files changed"' in srv.stderr_text()


@pytest.mark.parametrize("bad", ["garbage-cert", "mismatched-key", "missing-key", "garbage-key"])
def test_a_bad_replacement_is_refused_and_the_old_certificate_stays(start_tls, pki, bad):
    srv = start_tls(reload_check=1)
    early = H2Client(tls_connect(srv.port, client_context(pki)))
    cert, key = srv.certs / "server.pem", srv.certs / "server.key"
    if bad == "garbage-cert":
        shutil.copyfile(pki / "garbage.pem", cert)
    elif bad == "mismatched-key":
        shutil.copyfile(pki / "server-b.key", key)
    elif bad == "missing-key":
        key.unlink()
    else:
        shutil.copyfile(pki / "garbage.pem", key)
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log("TLS reload refused")
    # The poll sees the same change: reported once, not every second. What is
    # under test is that later polls stay silent: the test lets two of them run.
    time.sleep(2.5)
    text = srv.stderr_text()
    assert text.count("TLS reload refused") == 1, text[-3000:]
    assert "TLS certificate reloaded" not in text
    assert served_serial(srv.port, pki) == "1001"
    assert early.health_check() == "0"
    early.sock.close()
    # A good file afterwards is taken.
    install(pki, srv.certs, "server-b")
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_log("TLS certificate reloaded")
    assert served_serial(srv.port, pki) == "2002"


@pytest.mark.parametrize("case", ["missing-cert", "garbage-cert", "mismatched-key", "garbage-ca", "missing-ca"])
def test_bad_files_at_startup_give_one_readable_line(pki, tmp_path, case):
    cert, key, ca = pki / "server-a.pem", pki / "server-a.key", None
    if case == "missing-cert":
        cert = tmp_path / "nope.pem"
    elif case == "garbage-cert":
        cert = pki / "garbage.pem"
    elif case == "mismatched-key":
        key = pki / "server-b.key"
    elif case == "garbage-ca":
        ca = pki / "garbage.pem"
    else:
        ca = tmp_path / "no-ca.pem"
    args = [str(credits_binary()), "serve", "--host", "127.0.0.1", "--port", "0", "--db", str(tmp_path / "x.sqlite"),
            "--tls-cert", str(cert), "--tls-key", str(key)]
    if ca is not None:
        args += ["--tls-client-ca", str(ca)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    line = lines[0]
    for raw in ("NIOSSL", "BoringSSL", "Error Domain", "errno"):
        assert raw not in line, line
    named = {"missing-cert": cert, "garbage-cert": cert, "mismatched-key": key, "garbage-ca": ca, "missing-ca": ca}[case]
    assert str(named) in line, line
    if case == "missing-cert" or case == "missing-ca":
        assert "No such file or directory" in line, line
    if case == "mismatched-key":
        assert "does not match" in line, line


def test_tls_flags_go_together(pki, tmp_path):
    base = [str(credits_binary()), "serve", "--port", "0", "--db", str(tmp_path / "x.sqlite")]
    for extra, says in ((["--tls-cert", str(pki / "server-a.pem")], "--tls-cert and --tls-key go together"),
                        (["--tls-key", str(pki / "server-a.key")], "--tls-cert and --tls-key go together"),
                        (["--tls-client-ca", str(pki / "ca.pem")], "--tls-client-ca needs --tls-cert and --tls-key")):
        r = subprocess.run(base + extra, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode != 0, extra
        assert says in r.stderr, r.stderr


def test_handshaking_connections_count_against_max_connections(start_tls, pki):
    srv = start_tls("--max-connections", "1", "--tls-handshake-timeout-seconds", "30")
    # The readiness check's connection may still be closing: retry until the
    # silent (handshaking) connection holds the one slot.
    deadline = time.monotonic() + 5
    while True:
        silent = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        time.sleep(0.3)  # the server's chance to refuse it (a closed socket shows it did); retried in a bounded loop
        silent.setblocking(False)
        try:
            closed = silent.recv(1) == b""
        except BlockingIOError:
            closed = False
        except ConnectionResetError:
            closed = True
        if not closed:
            break
        silent.close()
        assert time.monotonic() < deadline, srv.stderr_tail()
    try:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, OSError)):
            with tls_connect(srv.port, client_context(pki)) as s:
                H2Client(s).health_check()
    finally:
        silent.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert served_serial(srv.port, pki) == "1001"
            break
        except (ssl.SSLError, ConnectionResetError, OSError):
            assert time.monotonic() < deadline, srv.stderr_tail()
            time.sleep(0.1)
    assert "limit reached" in srv.stderr_text()


def test_idle_timeout_applies_after_the_handshake(start_tls, pki):
    srv = start_tls("--idle-timeout-seconds", "1")
    with tls_connect(srv.port, client_context(pki), timeout=10) as s:
        c = H2Client(s)
        assert c.health_check() == "0"
        t0 = time.monotonic()
        goaway = False
        while time.monotonic() - t0 < 8:
            try:
                data = s.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break
            if not data:
                break
            goaway |= any(isinstance(ev, h2.events.ConnectionTerminated) for ev in c.conn.receive_data(data))
        waited = time.monotonic() - t0
    assert goaway, "no GOAWAY before the close"
    assert 0.8 <= waited < 5, f"closed after {waited:.2f}s"


def test_tls_benchmark_runs_with_tiny_settings(tmp_path):
    """tools/bench/tls on the debug binaries, 1 s and 1 round: every target
    answers grpc-status 0 and the report has its ratios (the figures come
    from release runs, never from tests)."""
    from test_loadgen import loadgen_binary

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "tls.md"
    r = subprocess.run([str(root / "tools/bench/tls"), "-D", "1", "-w", "0", "-r", "1", "-c", "2", "-m", "4",
                        "--credits-bin", str(credits_binary()), "--loadgen-bin", str(loadgen_binary()),
                        "--markdown", str(out)], capture_output=True, text=True, errors="replace", timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert "credits `TLSv1.3 TLS_AES_128_GCM_SHA256`" in text, text
    median = [ln for ln in text.splitlines() if ln.startswith("| **median**")]
    assert len(median) == 1 and "n/a" not in median[0], text
    assert "nghttpd 0, credits TLS 0, credits h2c 0" in text, text


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_2_is_the_minimum(start_tls, pki):
    srv = start_tls()
    ctx12 = client_context(pki)
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_connect(srv.port, ctx12) as s:
        assert s.version() == "TLSv1.2"
        assert H2Client(s).health_check() == "0"
    ctx11 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx11.check_hostname = False
    ctx11.verify_mode = ssl.CERT_NONE
    ctx11.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx11.minimum_version = ssl.TLSVersion.TLSv1
    ctx11.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx11.set_alpn_protocols(["h2"])
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        with tls_connect(srv.port, ctx11):
            pass
    # Refused by the server for its version (the client did offer TLS 1.1).
    srv.wait_log("UNSUPPORTED_PROTOCOL")
