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


# ---------------------------------------------------------------- the benchmark

def _machine() -> str:
    import os
    import platform

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    return f"{os.cpu_count()} cores ({model}), {mem} MiB RAM, Linux {platform.release()}"


def main(argv=None) -> int:
    import argparse
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(prog="tools/bench/slow-readers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=str(repo / ".build/release/credits"), help="credits binary")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--streams", type=int, default=250, help="requests per connection")
    parser.add_argument("--response-bytes", type=int, default=256 * 1024, help="size of each unary Echo response")
    parser.add_argument("--echo-every", type=int, default=2, help="every n-th request is a unary Echo (0: none)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the slow readers stay")
    parser.add_argument("--after-seconds", type=float, default=3.0, help="wait after they left before measuring RSS")
    parser.add_argument("--server-arg", action="append", default=[], help="extra argument for credits serve")
    parser.add_argument("--markdown", help="write the results as a Markdown section to this file")
    args = parser.parse_args(argv)

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    work = Path(tempfile.mkdtemp(prefix="slow-readers-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [args.bin, "serve", "--port", str(port), "--db", str(work / "credits.sqlite"),
               "--enable-test-service", *args.server_arg]
    log = open(work / "server.log", "wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)])
        deadline = time.monotonic() + 20
        while True:
            try:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print(f"server did not start; log in {work / 'server.log'}", file=sys.stderr)
                    return 1
                time.sleep(0.1)
        channel.close()

        # As long as the loaded measurement: a p99 over a few hundred calls is noise.
        unloaded, unloaded_failures = health_latencies(port, args.seconds)
        time.sleep(0.5)
        idle = rss_bytes(server.pid)
        asked = args.connections * args.streams
        with RSSSampler(server.pid) as sampler:
            started = time.monotonic()
            readers = [SlowReader(port, args.streams, args.response_bytes, args.echo_every)
                       for _ in range(args.connections)]
            opened_in = time.monotonic() - started
            loaded, loaded_failures = health_latencies(port, args.seconds)
            closed_by_server = sum(r.closed_by_server() for r in readers)
            for r in readers:
                r.close()
            time.sleep(args.after_seconds)
            peak = sampler.peak
        after = rss_bytes(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()

    mib = 1024 * 1024
    p50u, p99u = percentile(unloaded, 50) * 1e3, percentile(unloaded, 99) * 1e3
    p50l, p99l = percentile(loaded, 50) * 1e3, percentile(loaded, 99) * 1e3
    rss_ok = peak - idle <= 256 * mib
    p99_ok = p99l <= 2 * p99u and loaded_failures == 0
    lines = [
        f"- command: `tools/bench/slow-readers {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- server: `{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(command))}`",
        f"- machine: {_machine()}",
        f"- load: {args.connections} connections × {args.streams} requests "
        f"({asked} calls; every {args.echo_every or '—'}-th a unary Echo of {args.response_bytes // 1024} KiB, "
        f"the others ServerStream of 100000 × 64 KiB), SETTINGS_INITIAL_WINDOW_SIZE 0, never read; "
        f"opened in {opened_in:.2f} s, held {args.seconds:.0f} s; {closed_by_server} closed by the server meanwhile",
        "",
        "| RSS | MiB |",
        "|---|---|",
        f"| idle, before | {idle / mib:.0f} |",
        f"| peak, during | {peak / mib:.0f} (+{(peak - idle) / mib:.0f}) |",
        f"| {args.after_seconds:.0f} s after they left | {after / mib:.0f} (+{(after - idle) / mib:.0f}) |",
        "",
        "| Health/Check, one grpcio client | calls | failed | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
        f"| unloaded | {len(unloaded)} | {unloaded_failures} | {p50u:.2f} | {p99u:.2f} |",
        f"| during the slow readers | {len(loaded)} | {loaded_failures} | {p50l:.2f} | {p99l:.2f} |",
        "",
        f"Targets: peak RSS within 256 MiB of idle: {'met' if rss_ok else 'MISSED'}; "
        f"loaded p99 under 2 × unloaded: {'met' if p99_ok else 'MISSED'} ({p99l / p99u if p99u else float('nan'):.2f} ×).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0 if rss_ok and p99_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
