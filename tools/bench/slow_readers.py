"""Slow readers: clients that ask for many large responses and never let the
server send them (SETTINGS_INITIAL_WINDOW_SIZE = 0, socket never read).

Used by `tools/bench/slow-readers` (the benchmark) and by
Tests/e2e/test_slow_readers.py (a short version with assertions).
"""

from __future__ import annotations

import socket
import statistics
import struct
import threading
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TEST_SERVICE = "credits.testing.v1.TestService"


def _frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def echo_request(response_bytes: int) -> bytes:
    """TestService/Echo request (EchoRequest{response_size}) as a gRPC message."""
    body = b"\x28" + _varint(response_bytes)
    return b"\x00" + struct.pack(">I", len(body)) + body


def stream_request(count: int, payload_bytes: int) -> bytes:
    """TestService/ServerStream request (StreamRequest{count, payload_size})."""
    body = b"\x10" + _varint(count) + b"\x20" + _varint(payload_bytes)
    return b"\x00" + struct.pack(">I", len(body)) + body


class SlowReader:
    """One connection, window 0, never read: `streams` requests, every
    `echo_every`-th a unary Echo of `response_bytes` (0: none), the others
    ServerStream of many 64 KiB messages."""

    def __init__(self, port: int, streams: int, response_bytes: int, echo_every: int = 0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        encoder = hpack.Encoder()
        out = [PREFACE, _frame(0x4, 0, 0, struct.pack(">HI", 0x4, 0))]  # INITIAL_WINDOW_SIZE = 0
        for i in range(streams):
            stream = 1 + 2 * i
            method = "Echo" if echo_every and i % echo_every == 0 else "ServerStream"
            body = echo_request(response_bytes) if method == "Echo" else stream_request(100_000, 64 * 1024)
            block = encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", f"/{TEST_SERVICE}/{method}"),
                                    (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")])
            out.append(_frame(0x1, 0x4, stream, block))
            out.append(_frame(0x0, 0x1, stream, body))
        self.sock.sendall(b"".join(out))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def closed_by_server(self) -> bool:
        """True once the server has closed (reads what is left without blocking)."""
        self.sock.setblocking(False)
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    return True
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            self.sock.setblocking(True)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class RSSSampler:
    """Samples a process's RSS every `interval` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return
            time.sleep(self.interval)


def health_latencies(port: int, seconds: float, timeout: float = 5.0) -> tuple[list[float], int]:
    """Health/Check calls one after another on one channel for `seconds`.
    Returns (latencies in seconds of the successful calls, failures)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    latencies, failures = [], 0
    try:
        stub.Check(request, timeout=timeout)  # connect first
    except grpc.RpcError:
        failures += 1
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                stub.Check(request, timeout=timeout)
                latencies.append(time.perf_counter() - start)
            except grpc.RpcError:
                failures += 1
            time.sleep(0.002)
    finally:
        channel.close()
    return latencies, failures


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
