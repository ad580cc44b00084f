"""End-to-end transport tests: the real `credits serve` binary called by grpcio.

Fixtures (server process, generated stubs) are in conftest.py.
"""

from __future__ import annotations

import gzip
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from conftest import open_channel

TEST_SERVICE = "credits.testing.v1.TestService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
TEST_PROTO_FILE = "credits/testing/v1/test_service.proto"


def assert_code(err: grpc.RpcError, code: grpc.StatusCode):
    assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()!r}"


def assert_serves(stubs, port: int):
    """A fresh channel's Echo round-trips: the server is still healthy."""
    ch = open_channel(port)
    try:
        reply = stubs.grpc.TestServiceStub(ch).Echo(stubs.pb.EchoRequest(message="still here"), timeout=5)
        assert reply.message == "still here"
    finally:
        ch.close()


# ---------------------------------------------------------------- 1. unary + metadata


def test_unary_echo_message_payload_and_metadata(stubs, test_stub):
    payload = bytes(range(256)) * 4
    reply, call = test_stub.Echo.with_call(
        stubs.pb.EchoRequest(message="hello ✓", payload=payload),
        metadata=[("x-test-a", "1"), ("x-test-b-bin", b"\x00\xff"), ("other", "not copied")],
        timeout=5,
    )
    assert reply.message == "hello ✓"
    assert reply.payload == payload
    assert call.code() == grpc.StatusCode.OK

    initial = list(call.initial_metadata())
    trailing = list(call.trailing_metadata())
    for md, where in ((initial, "initial"), (trailing, "trailing")):
        assert ("x-test-a", "1") in md, f"{where} metadata: {md}"
        assert ("x-test-b-bin", b"\x00\xff") in md, f"{where} metadata: {md}"
        assert not any(k == "other" for k, _ in md), f"{where} metadata copies non x-test-* keys: {md}"
    # The handler reports the x-test-* request metadata it saw, sorted.
    assert len(reply.metadata) == 2, list(reply.metadata)
    assert reply.metadata[0] == "x-test-a=1"
    assert reply.metadata[1].startswith("x-test-b-bin=")
    assert list(reply.metadata) == sorted(reply.metadata)


def test_unary_echo_empty_request(stubs, test_stub):
    reply, call = test_stub.Echo.with_call(stubs.pb.EchoRequest(), timeout=5)
    assert reply == stubs.pb.EchoResponse()
    assert call.code() == grpc.StatusCode.OK


# ---------------------------------------------------------------- 2. server streaming


def test_server_streaming_counts(stubs, test_stub):
    call = test_stub.ServerStream(stubs.pb.StreamRequest(message="s", count=5, payload_size=3), timeout=10)
    replies = list(call)
    assert [r.count for r in replies] == [0, 1, 2, 3, 4]
    assert all(r.message == "s" and len(r.payload) == 3 for r in replies)
    assert call.code() == grpc.StatusCode.OK


def test_server_streaming_zero(stubs, test_stub):
    call = test_stub.ServerStream(stubs.pb.StreamRequest(count=0), timeout=5)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


# ---------------------------------------------------------------- 3. client streaming


def test_client_streaming(stubs, test_stub):
    requests = iter([stubs.pb.EchoRequest(message=m) for m in ("ab", "c", "✓d")])
    reply, call = test_stub.ClientStream.with_call(requests, timeout=5)
    assert reply.count == 3
    assert reply.message == "abc✓d"
    assert call.code() == grpc.StatusCode.OK


def test_client_streaming_no_requests(stubs, test_stub):
    reply = test_stub.ClientStream(iter([]), timeout=5)
    assert reply.count == 0
    assert reply.message == ""


# ---------------------------------------------------------------- 4. bidi


def test_bidi_interleaved(stubs, test_stub):
    outbox: queue.Queue = queue.Queue()
    done = object()

    def requests():
        while True:
            item = outbox.get()
            if item is done:
                return
            yield item

    call = test_stub.BidiStream(requests(), timeout=10)
    for i in range(5):
        # The next request is only queued after the previous answer arrived:
        # the server must answer each request as it comes, not at half-close.
        outbox.put(stubs.pb.EchoRequest(message=f"m{i}", payload=bytes([i]) * i))
        reply = next(call)
        assert reply.message == f"m{i}"
        assert reply.payload == bytes([i]) * i
        assert reply.count == i
    outbox.put(done)
    with pytest.raises(StopIteration):
        next(call)
    assert call.code() == grpc.StatusCode.OK


# ---------------------------------------------------------------- 5. deadline


def test_deadline_exceeded(stubs, test_stub, server):
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        test_stub.Echo(stubs.pb.EchoRequest(message="slow", delay_millis=2000), timeout=0.2)
    elapsed = time.monotonic() - start
    assert_code(info.value, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert elapsed < 1.0, f"DEADLINE_EXCEEDED after {elapsed:.2f}s"
    # Same channel, then a fresh one.
    assert test_stub.Echo(stubs.pb.EchoRequest(message="after"), timeout=5).message == "after"
    assert_serves(stubs, server.port)


# ---------------------------------------------------------------- 6. cancellation


def test_cancel_server_stream(stubs, test_stub, server):
    call = test_stub.ServerStream(stubs.pb.StreamRequest(count=1000, interval_millis=10), timeout=30)
    assert next(call).count == 0
    assert next(call).count == 1
    assert call.cancel() is True
    with pytest.raises(grpc.RpcError) as info:
        for _ in call:
            pass
    assert_code(info.value, grpc.StatusCode.CANCELLED)
    assert test_stub.Echo(stubs.pb.EchoRequest(message="after cancel"), timeout=5).message == "after cancel"
    assert_serves(stubs, server.port)


def test_cancel_slow_unary(stubs, test_stub, server):
    future = test_stub.Echo.future(stubs.pb.EchoRequest(delay_millis=3000), timeout=10)
    # When the client cancels is part of the scenario (a call in its 3 s
    # delay); the assertions below hold whenever the cancel lands.
    time.sleep(0.2)
    assert future.cancel() is True
    assert future.cancelled()
    assert_serves(stubs, server.port)


# ---------------------------------------------------------------- 7. unknown method / service


@pytest.mark.parametrize(
    "path",
    [f"/{TEST_SERVICE}/Nope", "/credits.testing.v1.NoSuchService/Echo", "/nope/nope"],
)
def test_unknown_method_or_service(channel, path):
    method = channel.unary_unary(path)  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as info:
        method(b"", timeout=5)
    assert_code(info.value, grpc.StatusCode.UNIMPLEMENTED)


# ---------------------------------------------------------------- 8. message size


def test_oversized_request_rejected(stubs, test_stub, server):
    with pytest.raises(grpc.RpcError) as info:
        test_stub.Echo(stubs.pb.EchoRequest(payload=b"x" * (5 << 20)), timeout=10)
    assert_code(info.value, grpc.StatusCode.RESOURCE_EXHAUSTED)
    # Below the 4 MiB default is fine.
    big = os.urandom(3 << 20)
    assert test_stub.Echo(stubs.pb.EchoRequest(payload=big), timeout=10).payload == big
    assert_serves(stubs, server.port)


def test_max_message_bytes_flag(stubs, start_server):
    srv = start_server("--max-message-bytes", "1024", name="small")
    ch = open_channel(srv.port)
    gz = open_channel(srv.port, compression=grpc.Compression.Gzip)
    try:
        stub = stubs.grpc.TestServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.Echo(stubs.pb.EchoRequest(payload=os.urandom(2000)), timeout=5)
        assert_code(info.value, grpc.StatusCode.RESOURCE_EXHAUSTED)
        small = os.urandom(500)
        assert stub.Echo(stubs.pb.EchoRequest(payload=small), timeout=5).payload == small
        # The limit applies after decompression: 2000 zero bytes gzip to a few dozen.
        with pytest.raises(grpc.RpcError) as info:
            stubs.grpc.TestServiceStub(gz).Echo(stubs.pb.EchoRequest(payload=bytes(2000)), timeout=5)
        assert_code(info.value, grpc.StatusCode.RESOURCE_EXHAUSTED)
        # The answer is not limited by the request limit.
        assert len(stub.Echo(stubs.pb.EchoRequest(response_size=4000), timeout=5).payload) == 4000
    finally:
        ch.close()
        gz.close()
    assert srv.terminate() == 0, srv.stderr_tail()


# ---------------------------------------------------------------- 9. gzip


def test_gzip_both_ways(stubs, server, test_stub):
    ch = open_channel(server.port, compression=grpc.Compression.Gzip,
                      options=[("grpc.max_receive_message_length", 8 << 20)])
    try:
        stub = stubs.grpc.TestServiceStub(ch)
        payload = b"credits " * (256 * 1024)  # 2 MiB, compressible
        reply = stub.Echo(stubs.pb.EchoRequest(message="gz", payload=payload), timeout=10)
        assert reply.message == "gz"
        assert reply.payload == payload
        reply = stub.Echo(stubs.pb.EchoRequest(message="big answer", response_size=3 << 20), timeout=10)
        assert len(reply.payload) == 3 << 20
        # Per-call compression on an uncompressed channel, streaming too.
        replies = list(test_stub.ServerStream(stubs.pb.StreamRequest(count=3, payload_size=100_000), timeout=10,
                                          compression=grpc.Compression.Gzip))
        assert [len(r.payload) for r in replies] == [100_000] * 3
    finally:
        ch.close()


@pytest.mark.parametrize("gzip_request", [True, False], ids=["gzip", "identity"])
def test_gzip_response_is_compressed_on_the_wire(stubs, server, gzip_request):
    """grpcio hides the compressed flag, so read the response frames from a raw HTTP/2 stream."""
    request = stubs.pb.EchoRequest(message="raw", response_size=100_000).SerializeToString()
    if gzip_request:
        body = b"\x01" + len(gz := gzip.compress(request)).to_bytes(4, "big") + gz
        extra = [("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")]
    else:
        body = b"\x00" + len(request).to_bytes(4, "big") + request
        extra = [("grpc-accept-encoding", "identity")]
    with RawH2(server.port) as h2:
        h2.handshake()
        h2.request(1, f"/{TEST_SERVICE}/Echo", server.address, extra, body)
        data, trailers_seen = h2.read_response(1)
    assert trailers_seen, "no END_STREAM HEADERS (trailers) on stream 1"
    assert len(data) >= 5, f"no gRPC message in response DATA: {data[:40]!r}"
    flag, length = data[0], int.from_bytes(data[1:5], "big")
    message = data[5:5 + length]
    assert len(message) == length
    if gzip_request:
        assert flag == 1, "response not compressed although the client sent and accepts gzip"
        assert length < 10_000, f"compressed answer is {length} bytes"
        message = gzip.decompress(message)
    else:
        assert flag == 0, "response compressed although the client accepts only identity"
    reply = stubs.pb.EchoResponse.FromString(message)
    assert reply.message == "raw"
    assert len(reply.payload) == 100_000


# ---------------------------------------------------------------- 10. error details


def test_error_details(stubs, test_stub):
    message = "not enough ✓ 100%"
    with pytest.raises(grpc.RpcError) as info:
        test_stub.Echo(
            stubs.pb.EchoRequest(fail_with=stubs.pb.FailWith(code=9, message=message, reason="INSUFFICIENT_CREDITS")),
            timeout=5,
        )
    err = info.value
    assert_code(err, grpc.StatusCode.FAILED_PRECONDITION)
    assert err.details() == message
    status = rpc_status.from_call(err)
    assert status is not None, f"no grpc-status-details-bin in trailers: {err.trailing_metadata()}"
    assert status.code == 9
    assert status.message == message
    assert len(status.details) >= 1
    info_detail = stubs.error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info_detail), status.details[0].type_url
    assert info_detail.reason == "INSUFFICIENT_CREDITS"
    assert info_detail.domain == "credits.testing.v1"


def test_error_without_reason_has_no_details(stubs, test_stub):
    with pytest.raises(grpc.RpcError) as info:
        test_stub.Echo(stubs.pb.EchoRequest(fail_with=stubs.pb.FailWith(code=5, message="plain")), timeout=5)
    assert_code(info.value, grpc.StatusCode.NOT_FOUND)
    assert info.value.details() == "plain"
    # Without a reason there is no ErrorInfo; a details Status, if sent at all, must match and be empty.
    status = rpc_status.from_call(info.value)
    if status is not None:
        assert (status.code, status.message, len(status.details)) == (5, "plain", 0), status


# ---------------------------------------------------------------- 11. health


def test_health(channel):
    health = health_pb2_grpc.HealthStub(channel)
    SERVING = health_pb2.HealthCheckResponse.SERVING
    for service in ("", TEST_SERVICE, HEALTH_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == SERVING, service
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert_code(info.value, grpc.StatusCode.NOT_FOUND)


def test_health_watch(channel):
    health = health_pb2_grpc.HealthStub(channel)
    call = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    first = next(call)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    assert call.cancel() is True
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    assert_code(info.value, grpc.StatusCode.CANCELLED)


# ---------------------------------------------------------------- 12. reflection


def test_reflection_v1alpha_descriptor_database(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {HEALTH_SERVICE, TEST_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA} <= services, services

    pool = descriptor_pool.DescriptorPool(db)
    service = pool.FindServiceByName(TEST_SERVICE)
    assert service.file.name == TEST_PROTO_FILE
    echo = service.methods_by_name["Echo"]
    assert echo.input_type.full_name == "credits.testing.v1.EchoRequest"
    assert echo.output_type.full_name == "credits.testing.v1.EchoResponse"
    assert set(service.methods_by_name) == {"Echo", "ServerStream", "ClientStream", "BidiStream"}
    assert service.methods_by_name["BidiStream"].client_streaming
    assert service.methods_by_name["BidiStream"].server_streaming
    assert pool.FindMessageTypeByName("credits.testing.v1.FailWith").fields_by_name["reason"].number == 3
    check = pool.FindServiceByName(HEALTH_SERVICE).methods_by_name["Check"]
    assert check.output_type.full_name == "grpc.health.v1.HealthCheckResponse"


def test_reflection_v1_raw(channel):
    # grpcio-reflection ships only v1alpha messages; v1 is the same wire format
    # (only the proto package differs), so they serialize v1 requests exactly.
    method = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=TEST_SERVICE),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="credits.testing.v1.EchoRequest"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
    ]
    responses = list(method(iter(requests), timeout=10))
    assert len(responses) == 4

    listed = responses[0]
    assert listed.WhichOneof("message_response") == "list_services_response", listed
    names = {s.name for s in listed.list_services_response.service}
    assert {HEALTH_SERVICE, TEST_SERVICE, REFLECTION_V1, REFLECTION_V1ALPHA} <= names, names
    assert listed.original_request.WhichOneof("message_request") == "list_services"

    for resp in responses[1:3]:
        assert resp.WhichOneof("message_response") == "file_descriptor_response", resp
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in resp.file_descriptor_response.file_descriptor_proto]
        test_file = [f for f in files if f.name == TEST_PROTO_FILE]
        assert test_file, [f.name for f in files]
        assert test_file[0].package == "credits.testing.v1"
        (svc,) = [s for s in test_file[0].service if s.name == "TestService"]
        assert "Echo" in [m.name for m in svc.method]

    missing = responses[3]
    assert missing.WhichOneof("message_response") == "error_response", missing
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


# ---------------------------------------------------------------- 13. shutdown


def test_sigterm_idle_server_exits_zero(stubs, start_server):
    srv = start_server(name="idle")
    ch = open_channel(srv.port)  # an idle, open connection must not hold up shutdown
    try:
        assert stubs.grpc.TestServiceStub(ch).Echo(stubs.pb.EchoRequest(message="x"), timeout=5).message == "x"
        start = time.monotonic()
        rc = srv.terminate()
        elapsed = time.monotonic() - start
    finally:
        ch.close()
    assert rc == 0, f"exit code {rc}\n{srv.stderr_tail()}"
    assert elapsed < 5, f"idle server took {elapsed:.1f}s to stop"


def test_graceful_shutdown_finishes_inflight_call(stubs, start_server):
    srv = start_server(name="drain")
    ch = open_channel(srv.port)
    try:
        stub = stubs.grpc.TestServiceStub(ch)
        stub.Echo(stubs.pb.EchoRequest(), timeout=5)  # connection up
        future = stub.Echo.future(stubs.pb.EchoRequest(message="in flight", delay_millis=500), timeout=10)
        time.sleep(0.15)  # the call has reached the server
        start = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        reply = future.result(timeout=10)
        assert reply.message == "in flight"
        assert future.code() == grpc.StatusCode.OK
        rc = srv.proc.wait(timeout=12)  # default grace period is 10 s
        elapsed = time.monotonic() - start
    finally:
        ch.close()
    assert rc == 0, f"exit code {rc}\n{srv.stderr_tail()}"
    assert elapsed < 10, f"took {elapsed:.1f}s to exit after the in-flight call finished"
    # It is really gone.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


# ---------------------------------------------------------------- 14. concurrency


def test_many_concurrent_calls(stubs, test_stub):
    futures = [test_stub.Echo.future(stubs.pb.EchoRequest(message=f"n{i}", payload=bytes([i % 256]) * 64),
                                     timeout=30) for i in range(200)]
    replies = [f.result() for f in futures]
    assert [r.message for r in replies] == [f"n{i}" for i in range(200)]
    assert all(r.payload == bytes([i % 256]) * 64 for i, r in enumerate(replies))


def test_concurrent_streams_on_many_channels(stubs, server):
    errors = []

    def worker(k):
        ch = open_channel(server.port)
        try:
            stub = stubs.grpc.TestServiceStub(ch)
            got = [r.count for r in stub.ServerStream(stubs.pb.StreamRequest(count=20, payload_size=1000), timeout=20)]
            if got != list(range(20)):
                errors.append((k, got))
        except grpc.RpcError as e:
            errors.append((k, e.code(), e.details()))
        finally:
            ch.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []


# ---------------------------------------------------------------- 15. raw sockets

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_literal(name: str, value: str) -> bytes:
    """Literal header field without indexing, new name, no Huffman."""
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v


class RawH2:
    """Just enough HTTP/2 to send one request and read frames (no HPACK decoding)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.frames: list[tuple[int, int, int, bytes]] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def handshake(self):
        # Big receive windows so the server is never blocked on flow control.
        settings = (4).to_bytes(2, "big") + (1 << 24).to_bytes(4, "big")
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings)
                          + frame(WINDOW_UPDATE, 0, 0, (1 << 24).to_bytes(4, "big")))

    def request(self, stream: int, path: str, authority: str, extra, body: bytes):
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
                   ("content-type", "application/grpc"), ("te", "trailers"), *extra]
        block = b"".join(hpack_literal(k, v) for k, v in headers)
        out = frame(HEADERS, END_HEADERS, stream, block)
        for i in range(0, len(body), 16384):
            chunk = body[i:i + 16384]
            out += frame(DATA, END_STREAM if i + 16384 >= len(body) else 0, stream, chunk)
        self.sock.sendall(out)

    def next_frame(self):
        """The next frame, or None when the server closed the connection."""
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    ftype, flags = self.buf[3], self.buf[4]
                    stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload = self.buf[9:9 + length]
                    self.buf = self.buf[9 + length:]
                    f = (ftype, flags, stream, payload)
                    self.frames.append(f)
                    if ftype == SETTINGS and not flags & ACK:
                        self.sock.sendall(frame(SETTINGS, ACK, 0))
                    elif ftype == PING and not flags & ACK:
                        self.sock.sendall(frame(PING, ACK, 0, payload))
                    return f
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def read_response(self, stream: int):
        data = b""
        while (f := self.next_frame()) is not None:
            ftype, flags, sid, payload = f
            if sid == stream and ftype == DATA:
                data += payload
            elif sid == stream and ftype == HEADERS and flags & END_STREAM:
                return data, True
            elif (sid == stream and ftype == RST_STREAM) or ftype == GOAWAY:
                return data, False
        return data, False


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the connection open."""
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except socket.timeout:
            pytest.fail(f"server kept the connection open {timeout}s after garbage; got {received[:80]!r}")
        if not chunk:
            return received
        received += chunk
        if time.monotonic() > deadline:
            pytest.fail(f"server kept sending for {timeout}s after garbage")


def goaway_codes(data: bytes) -> list[int]:
    """Error codes of the GOAWAY frames in a server byte stream."""
    codes = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if data[3] == GOAWAY and len(data) >= 9 + length >= 17:
            codes.append(int.from_bytes(data[13:17], "big"))
        data = data[9 + length:]
    return codes


def test_http1_request_is_closed(stubs, server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
        read_until_closed(s)
    assert server.alive()
    assert_serves(stubs, server.port)


def test_garbage_after_preface_gets_goaway_and_close(stubs, server):
    garbage = b"\xff" + os.urandom(255)  # frame length >= 0xff0000: never a valid first frame
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(PREFACE + garbage)
        received = read_until_closed(s)
    codes = goaway_codes(received)
    assert codes, f"no GOAWAY before close: {received[:80]!r}"
    assert codes[-1] != 0, "GOAWAY with NO_ERROR for a protocol violation"
    assert server.alive()
    assert_serves(stubs, server.port)


def test_protocol_error_after_settings_gets_goaway_and_close(stubs, server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        # A valid start, then HEADERS on stream 0 (PROTOCOL_ERROR).
        s.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 0, hpack_literal("a", "b")))
        received = read_until_closed(s)
    codes = goaway_codes(received)
    assert codes, f"no GOAWAY before close: {received[:80]!r}"
    assert codes[-1] == 0x1, f"GOAWAY error code {codes[-1]}, expected PROTOCOL_ERROR"
    assert_serves(stubs, server.port)


def test_half_preface_then_hangup(stubs, server):
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(PREFACE[:10])
    assert_serves(stubs, server.port)


NGHTTP = shutil.which("nghttp")


def nghttp_status(args, timeout=10) -> int:
    proc = subprocess.run([NGHTTP, "-v", "-t", "5", *args], capture_output=True, text=True, timeout=timeout)
    statuses = re.findall(r":status: (\d+)", proc.stdout)
    assert statuses, f"nghttp got no :status (rc {proc.returncode})\n{proc.stdout}\n{proc.stderr}"
    return int(statuses[0])


@pytest.mark.skipif(NGHTTP is None, reason="nghttp (nghttp2-client) not installed")
def test_http_get_is_405(stubs, server):
    assert nghttp_status([f"http://{server.address}/{TEST_SERVICE}/Echo"]) == 405
    assert_serves(stubs, server.port)


@pytest.mark.skipif(NGHTTP is None, reason="nghttp (nghttp2-client) not installed")
def test_http_post_json_is_415(stubs, server, tmp_path):
    body = tmp_path / "body.json"
    body.write_text("{}")
    status = nghttp_status(["-d", str(body), "-H", "content-type: application/json",
                            f"http://{server.address}/{TEST_SERVICE}/Echo"])
    assert status == 415
    assert_serves(stubs, server.port)


def test_request_buffer_per_connection_flag(stubs, start_server):
    """--max-request-buffer-bytes-per-connection bounds the partly received
    request bytes of one connection: the call that goes past it ends with
    RESOURCE_EXHAUSTED; the connection and its other calls go on."""
    import socket as _socket
    import struct as _struct

    import h2.config
    import h2.connection
    import h2.events

    srv = start_server("--max-message-bytes", "65536", "--max-request-buffer-bytes-per-connection", "100000",
                       name="reqbuf")
    sock = _socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    seen_settings = seen_window = False
    while not (seen_settings and seen_window):
        for event in conn.receive_data(sock.recv(65536)):
            seen_settings |= isinstance(event, h2.events.RemoteSettingsChanged)
            seen_window |= isinstance(event, h2.events.WindowUpdated) and event.stream_id == 0
        sock.sendall(conn.data_to_send())

    def send(sid, data, end_stream=False):
        for i in range(0, len(data), 16_384):
            conn.send_data(sid, data[i:i + 16_384], end_stream=end_stream and i + 16_384 >= len(data))
        sock.sendall(conn.data_to_send())

    headers = [(":method", "POST"), (":scheme", "http"), (":path", "/credits.testing.v1.TestService/Echo"),
               (":authority", "127.0.0.1"), ("content-type", "application/grpc"), ("te", "trailers")]
    statuses = {}
    first, second = 1, 3
    for sid in (first, second):
        conn.send_headers(sid, headers)
        # A message that announces 60,000 bytes and sends 50,001 of them: not complete, so buffered.
        send(sid, _struct.pack(">BI", 0, 60_000) + b"\0" * 50_001)
    end = time.monotonic() + 10
    while second not in statuses and time.monotonic() < end:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        for event in conn.receive_data(data):
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                fields = dict(event.headers)
                if "grpc-status" in fields:
                    statuses[event.stream_id] = int(fields["grpc-status"])
        sock.sendall(conn.data_to_send())
    assert statuses.get(second) == 8, statuses  # RESOURCE_EXHAUSTED
    assert first not in statuses
    # The first call completes normally once its message is whole.
    send(first, b"\0" * (60_000 - 50_001), end_stream=True)
    end = time.monotonic() + 10
    while first not in statuses and time.monotonic() < end:
        for event in conn.receive_data(sock.recv(65536)):
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                fields = dict(event.headers)
                if "grpc-status" in fields:
                    statuses[event.stream_id] = int(fields["grpc-status"])
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        sock.sendall(conn.data_to_send())
    sock.close()
    assert statuses.get(first) in (0, 3), statuses  # answered (OK, or INVALID_ARGUMENT for a zero-filled body)
    assert srv.terminate() == 0, srv.stderr_tail()
