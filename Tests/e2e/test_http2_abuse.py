"""Hostile HTTP/2 clients (SPEC §8): floods of resets, pings, settings,
CONTINUATION frames and streams, huge headers, and a slow reader. Each must
cost bounded memory, never crash the server, and leave it serving others.

Driven with the `h2` library (and raw frames where h2 would refuse) over
sockets to 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import CreditsServer, open_channel

RSS_LIMIT_BYTES = 300 * 1024 * 1024  # the server stays far below this under every attack here


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    server = CreditsServer(tmp_path_factory.mktemp("abuse"), name="abuse").start()
    yield server
    assert server.terminate() == 0, server.stderr_tail()


def rss_bytes(server: CreditsServer) -> int:
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_still_serving(server: CreditsServer):
    assert server.alive(), server.stderr_tail()
    channel = open_channel(server.port)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()
    assert rss_bytes(server) < RSS_LIMIT_BYTES


def h2_client(port: int, window: int | None = None):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    if window is not None:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    sock.sendall(conn.data_to_send())
    return sock, conn


def grpc_headers(path: str, extra=()):
    return [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"), (":path", path),
            ("content-type", "application/grpc"), ("te", "trailers"), *extra]


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([frame_type, flags]) + struct.pack(">I", stream_id) + payload


def drain_until_closed(sock: socket.socket, conn: h2.connection.H2Connection | None, seconds: float):
    """Reads until the server closes or `seconds` pass. Returns (closed, events)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    events = []
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True, events
        if not data:
            return True, events
        if conn is not None:
            try:
                events.extend(conn.receive_data(data))
            except Exception:  # the server may send frames h2 considers errors after our abuse
                conn = None
    return False, events


def send_all_tolerant(sock: socket.socket, data: bytes) -> bool:
    """Sends as much as the server accepts; False once it closed on us."""
    try:
        sock.sendall(data)
        return True
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        return False


def test_rapid_reset_flood(target):
    sock, conn = h2_client(target.port)
    batch = bytearray()
    for i in range(4000):
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, grpc_headers("/grpc.health.v1.Health/Check"))
        conn.reset_stream(stream_id)
        batch += conn.data_to_send()
        if len(batch) > 64 * 1024:
            if not send_all_tolerant(sock, bytes(batch)):
                break
            batch.clear()
    send_all_tolerant(sock, bytes(batch))
    closed, events = drain_until_closed(sock, conn, 5)
    goaways = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert closed or goaways, "4000 rapid resets neither closed the connection nor got a GOAWAY"
    sock.close()
    assert_still_serving(target)


def test_ping_flood_without_reading(target):
    sock, conn = h2_client(target.port)
    ping = frame(0x6, 0, 0, b"12345678")
    sent = 0
    for _ in range(200):
        if not send_all_tolerant(sock, ping * 1000):
            break
        sent += 1000
    closed, _ = drain_until_closed(sock, None, 10)
    assert closed, f"server kept a connection that sent {sent} PINGs without reading ACKs"
    sock.close()
    assert_still_serving(target)


def test_settings_flood_without_reading(target):
    sock, conn = h2_client(target.port)
    settings = frame(0x4, 0, 0, struct.pack(">HI", 0x3, 100))
    for _ in range(200):
        if not send_all_tolerant(sock, settings * 1000):
            break
    closed, _ = drain_until_closed(sock, None, 10)
    assert closed, "server kept a connection flooding SETTINGS"
    sock.close()
    assert_still_serving(target)


def test_continuation_flood(target):
    sock, conn = h2_client(target.port)
    encoder_block = conn.encoder.encode(grpc_headers("/grpc.health.v1.Health/Check"))
    data = frame(0x1, 0x0, 1, encoder_block)  # HEADERS without END_HEADERS
    for _ in range(10_000):
        data += frame(0x9, 0x0, 1, b"\x40\x01a\x01b")  # CONTINUATION: literal header a: b
    send_all_tolerant(sock, data)
    closed, _ = drain_until_closed(sock, None, 10)
    assert closed, "server kept a connection sending endless CONTINUATION frames"
    sock.close()
    assert_still_serving(target)


def test_huge_header_value_is_refused(target):
    sock, conn = h2_client(target.port)
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, grpc_headers("/grpc.health.v1.Health/Check", [("x-big", "v" * 200_000)]), end_stream=False)
    conn.send_data(stream_id, b"\x00\x00\x00\x00\x00", end_stream=True)
    send_all_tolerant(sock, conn.data_to_send())
    closed, events = drain_until_closed(sock, conn, 3)
    # Either the stream is refused with a gRPC status, or the connection is
    # closed (the block spans more CONTINUATION frames than allowed).
    statuses = [dict(e.headers).get("grpc-status") for e in events
                if isinstance(e, (h2.events.ResponseReceived, h2.events.TrailersReceived))]
    assert closed or "8" in statuses or any(isinstance(e, h2.events.StreamReset) for e in events), (closed, events)
    sock.close()
    assert_still_serving(target)


def test_many_headers_below_frame_limits_get_resource_exhausted(target):
    sock, conn = h2_client(target.port)
    stream_id = conn.get_next_available_stream_id()
    many = [(f"x-h{i}", "v" * 100) for i in range(120)]  # ~16.5 KiB decoded, > 16 KiB limit
    conn.send_headers(stream_id, grpc_headers("/grpc.health.v1.Health/Check", many), end_stream=False)
    conn.send_data(stream_id, b"\x00\x00\x00\x00\x00", end_stream=True)
    send_all_tolerant(sock, conn.data_to_send())
    _, events = drain_until_closed(sock, conn, 2)
    statuses = [dict(e.headers).get("grpc-status") for e in events
                if isinstance(e, (h2.events.ResponseReceived, h2.events.TrailersReceived))]
    assert "8" in statuses, events
    sock.close()
    assert_still_serving(target)


def test_stream_flood_beyond_max_concurrent_streams(target):
    sock, conn = h2_client(target.port)
    # Ignore the server's SETTINGS_MAX_CONCURRENT_STREAMS: open 1000 streams
    # on a slow method without ending them.
    conn.local_settings = h2.settings.Settings(client=True)
    conn.remote_settings.max_concurrent_streams = 100_000
    for _ in range(1000):
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, grpc_headers("/credits.testing.v1.TestService/BidiStream"))
    send_all_tolerant(sock, conn.data_to_send())
    closed, events = drain_until_closed(sock, conn, 3)
    refused = [e for e in events if isinstance(e, h2.events.StreamReset)]
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert closed or refused or goaway, "1000 streams over a limit of 256 were all accepted"
    sock.close()
    assert_still_serving(target)


def test_slow_reader_costs_bounded_memory(target):
    before = rss_bytes(target)
    sock, conn = h2_client(target.port, window=65_535)
    # 2000 responses of 64 KiB each = 128 MiB the server must not queue.
    request = b"\x10\xd0\x0f" + b"\x20\x80\x80\x04"  # StreamRequest{count: 2000, payload_size: 65536}
    body = b"\x00" + struct.pack(">I", len(request)) + request
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, grpc_headers("/credits.testing.v1.TestService/ServerStream"))
    conn.send_data(stream_id, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    time.sleep(3)  # the stall under test: the client never reads while the server streams
    grown = rss_bytes(target) - before
    assert grown < 64 * 1024 * 1024, f"RSS grew by {grown} bytes for a client that does not read"
    assert_still_serving(target)
    sock.close()
    # Under test: the server tears the stalled stream down without harm; no
    # event tells when it has, so it gets half a second before the check.
    time.sleep(0.5)
    assert_still_serving(target)
