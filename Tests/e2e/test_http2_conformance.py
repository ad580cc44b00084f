"""HTTP/2 and gRPC exactly as RFC 9113 and the gRPC documents say.

Raw frames over a socket to the real server, in the manner of h2spec
(sections 5.1, 5.1.1, 5.1.2, 6.1, 6.9, 8.1, 8.1.2.1, 8.1.2.6): send frames,
read frames with a timeout, and assert the exact error the RFC requires. A
stream error is an RST_STREAM with the code (a GOAWAY with the code is also
accepted, as h2spec does); a connection error is a GOAWAY with the code
followed by the connection closing.

Each protocol error is tried on a stream the server has already answered or
refused (405, 415, unknown method) while the client is still sending: the
answer must not make the server forget the stream.
"""

from __future__ import annotations

import socket
import struct
import time

import hpack
import pytest

from conftest import CreditsServer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
NO_ERROR, PROTOCOL_ERROR, STREAM_CLOSED, REFUSED_STREAM, CANCEL = 0x0, 0x1, 0x5, 0x7, 0x8
SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE = 0x3, 0x4

TEST_SERVICE = "credits.testing.v1.TestService"
READ_TIMEOUT = 3.0


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class Peer:
    """A client speaking raw frames. Answers PING and SETTINGS; records everything else."""

    def __init__(self, port: int, settings: dict[int, int] | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        self.buf = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.closed = False
        self.headers: dict[int, list[list[tuple[str, str]]]] = {}
        self.data: dict[int, bytes] = {}
        self.server_settings: dict[int, int] = {}
        payload = b"".join(struct.pack(">HI", k, v) for k, v in (settings or {}).items())
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, payload))
        # The handshake is over when the server acknowledged our SETTINGS
        # (it sends its own before).
        while True:
            f = self.next_frame()
            assert f is not None, "server closed during the handshake"
            if f[0] == SETTINGS and f[1] & ACK:
                break

    def close(self):
        self.sock.close()

    def send(self, *frames: bytes):
        self.sock.sendall(b"".join(frames))

    def block(self, fields) -> bytes:
        return self.encoder.encode(list(fields))

    def request_headers(self, stream: int, fields, end_stream: bool) -> bytes:
        return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, self.block(fields))

    def next_frame(self, timeout: float = READ_TIMEOUT):
        """The next frame (type, flags, stream, payload), or None once the server closed."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    ftype, flags = self.buf[3], self.buf[4]
                    stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload = self.buf[9:9 + length]
                    self.buf = self.buf[9 + length:]
                    self._record(ftype, flags, stream, payload)
                    return ftype, flags, stream, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame from the server in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no frame from the server in time") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk

    def _record(self, ftype, flags, stream, payload):
        if ftype == SETTINGS and not flags & ACK:
            for i in range(0, len(payload), 6):
                key, value = struct.unpack(">HI", payload[i:i + 6])
                self.server_settings[key] = value
            self.sock.sendall(frame(SETTINGS, ACK, 0))
        elif ftype == PING and not flags & ACK:
            self.sock.sendall(frame(PING, ACK, 0, payload))
        elif ftype == HEADERS:
            assert flags & END_HEADERS, "the server sends whole header blocks"
            fields = [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
                      for k, v in self.decoder.decode(payload)]
            self.headers.setdefault(stream, []).append(fields)
        elif ftype == DATA:
            self.data[stream] = self.data.get(stream, b"") + payload

    def wait_for(self, predicate, what: str, timeout: float = READ_TIMEOUT):
        """Reads frames until `predicate(frame)` holds; returns that frame."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.next_frame(max(0.01, deadline - time.monotonic()))
            if f is None:
                pytest.fail(f"connection closed while waiting for {what}")
            if predicate(f):
                return f

    def response_complete(self, stream: int):
        """Waits for the frame that ends `stream` from the server side; returns its headers blocks."""
        self.wait_for(lambda f: f[2] == stream and f[0] in (HEADERS, DATA) and f[1] & END_STREAM,
                      f"the end of the response on stream {stream}")
        return self.headers.get(stream, [])

    def expect_stream_error(self, stream: int, code: int):
        """RST_STREAM(code) on `stream`, or a GOAWAY(code): what h2spec accepts for a stream error."""
        while True:
            try:
                f = self.next_frame()
            except TimeoutError:
                pytest.fail(f"no RST_STREAM or GOAWAY with code {code} for stream {stream} within {READ_TIMEOUT}s")
            if f is None:
                pytest.fail(f"connection closed without RST_STREAM/GOAWAY code {code}")
            ftype, _, sid, payload = f
            if ftype == RST_STREAM and sid == stream:
                got = int.from_bytes(payload[:4], "big")
                assert got == code, f"RST_STREAM code {got} on stream {stream}, expected {code}"
                return "rst"
            if ftype == RST_STREAM:
                pytest.fail(f"RST_STREAM on stream {sid}, expected one on {stream}")
            if ftype == GOAWAY:
                got = int.from_bytes(payload[4:8], "big")
                assert got == code, f"GOAWAY code {got}, expected {code} (stream {stream})"
                return "goaway"

    def expect_connection_error(self, code: int):
        """GOAWAY(code), then the server closes."""
        goaway = None
        while True:
            try:
                f = self.next_frame()
            except TimeoutError:
                pytest.fail(f"no GOAWAY {code} and close within {READ_TIMEOUT}s (goaway: {goaway})")
            if f is None:
                break
            if f[0] == GOAWAY:
                goaway = int.from_bytes(f[3][4:8], "big")
            elif f[0] == RST_STREAM and goaway is None:
                pytest.fail(f"RST_STREAM code {int.from_bytes(f[3], 'big')} on stream {f[2]}; "
                            f"a connection error (GOAWAY {code}) was expected")
        assert goaway == code, f"GOAWAY code {goaway}, expected {code}"

    def assert_alive(self):
        self.send(frame(PING, 0, 0, b"alive!!!"))
        self.wait_for(lambda f: f[0] == PING and f[1] & ACK and f[3] == b"alive!!!", "the PING ACK")


def request_fields(path: str, method: str = "POST", content_type: str | None = "application/grpc", extra=()):
    fields = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost")]
    if content_type is not None:
        fields.append(("content-type", content_type))
    fields.append(("te", "trailers"))
    fields.extend(extra)
    return fields


# Requests the server refuses at once, before the client has sent its whole body.
REFUSALS = {
    "get-405": dict(method="GET", content_type=None, path="/"),
    "json-415": dict(method="POST", content_type="application/json", path=f"/{TEST_SERVICE}/Echo"),
    "grpc+json-415": dict(method="POST", content_type="application/grpc+json", path=f"/{TEST_SERVICE}/Echo"),
    "unknown-method": dict(method="POST", content_type="application/grpc", path="/no.Such/Method"),
    "grpc-call": dict(method="POST", content_type="application/grpc", path="/grpc.health.v1.Health/Check"),
}


def refused_request(peer: Peer, stream: int, kind: str, end_stream: bool = False, extra=()) -> bytes:
    r = REFUSALS[kind]
    return peer.request_headers(stream, request_fields(r["path"], r["method"], r["content_type"], extra), end_stream)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    server = CreditsServer(tmp_path_factory.mktemp("h2conf"), extra_args=["--enable-test-service"],
                           name="h2conf").start()
    yield server
    assert server.terminate() == 0, server.stderr_tail()


@pytest.fixture()
def peer(target):
    p = Peer(target.port)
    yield p
    p.close()


def answered(peer: Peer, stream: int, kind: str):
    """Waits until the server answered the refusal on `stream` (not for a real call, which waits for the body)."""
    if kind != "grpc-call":
        peer.response_complete(stream)


# ---------------------------------------------------------------- 5.1 stream states

@pytest.mark.parametrize("kind", REFUSALS)
def test_data_after_end_stream_is_stream_closed(peer, kind):
    """5.1: half-closed (remote) or closed after END_STREAM: DATA → STREAM_CLOSED."""
    peer.send(refused_request(peer, 1, kind, end_stream=True))
    if kind == "grpc-call":
        peer.response_complete(1)  # no message: answered at once
    else:
        answered(peer, 1, kind)
    peer.send(frame(DATA, 0, 1, b"test"))
    peer.expect_stream_error(1, STREAM_CLOSED)


@pytest.mark.parametrize("kind", REFUSALS)
def test_headers_after_client_rst_stream_is_stream_closed(peer, kind):
    """5.1: closed after the client's RST_STREAM: HEADERS → STREAM_CLOSED."""
    peer.send(refused_request(peer, 1, kind))
    answered(peer, 1, kind)
    peer.send(frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)),
              peer.request_headers(1, [("x-after", "reset")], end_stream=True))
    peer.expect_stream_error(1, STREAM_CLOSED)


@pytest.mark.parametrize("kind", REFUSALS)
def test_data_after_client_rst_stream_is_stream_closed(peer, kind):
    """5.1: closed after the client's RST_STREAM: DATA → STREAM_CLOSED."""
    peer.send(refused_request(peer, 1, kind))
    answered(peer, 1, kind)
    peer.send(frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)), frame(DATA, 0, 1, b"test"))
    peer.expect_stream_error(1, STREAM_CLOSED)


# ---------------------------------------------------------------- 5.1.1 stream identifiers

@pytest.mark.parametrize("kind", REFUSALS)
def test_lower_stream_id_after_answered_stream_is_protocol_error(peer, kind):
    """5.1.1: a new stream's id must exceed every id used before, even once that stream was answered."""
    peer.send(refused_request(peer, 5, kind, end_stream=True))
    peer.response_complete(5)
    peer.send(refused_request(peer, 3, kind, end_stream=True))
    peer.expect_connection_error(PROTOCOL_ERROR)


def test_lower_stream_id_in_one_write_is_protocol_error(peer):
    peer.send(refused_request(peer, 5, "get-405", end_stream=True), refused_request(peer, 3, "get-405", end_stream=True))
    peer.expect_connection_error(PROTOCOL_ERROR)


def test_even_stream_id_is_protocol_error(peer):
    peer.send(refused_request(peer, 2, "get-405", end_stream=True))
    peer.expect_connection_error(PROTOCOL_ERROR)


# ---------------------------------------------------------------- 6.1 DATA

@pytest.mark.parametrize("kind", REFUSALS)
def test_data_with_invalid_pad_length_is_protocol_error(peer, kind):
    """6.1: padding length >= frame payload length → connection error PROTOCOL_ERROR."""
    peer.send(refused_request(peer, 1, kind))
    answered(peer, 1, kind)
    peer.send(frame(DATA, PADDED | END_STREAM, 1, bytes([6]) + b"test"))
    peer.expect_connection_error(PROTOCOL_ERROR)


# ---------------------------------------------------------------- 6.9 WINDOW_UPDATE

@pytest.mark.parametrize("kind", REFUSALS)
def test_stream_window_update_of_zero_is_protocol_error(peer, kind):
    """6.9: a flow-control window increment of 0 on a stream → PROTOCOL_ERROR."""
    peer.send(refused_request(peer, 1, kind))
    answered(peer, 1, kind)
    peer.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0)))
    peer.expect_stream_error(1, PROTOCOL_ERROR)


def test_connection_window_update_of_zero_is_protocol_error(peer):
    peer.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)))
    peer.expect_connection_error(PROTOCOL_ERROR)


# ---------------------------------------------------------------- 8.1 message framing

@pytest.mark.parametrize("kind", REFUSALS)
def test_second_headers_without_end_stream_is_protocol_error(peer, kind):
    """8.1: trailers without END_STREAM → PROTOCOL_ERROR."""
    peer.send(refused_request(peer, 1, kind))
    answered(peer, 1, kind)
    peer.send(frame(DATA, 0, 1, grpc_message(b"")),
              peer.request_headers(1, [("x-trailer", "1")], end_stream=False))
    peer.expect_stream_error(1, PROTOCOL_ERROR)


@pytest.mark.parametrize("kind", REFUSALS)
def test_pseudo_header_in_trailers_is_protocol_error(peer, kind):
    """8.1.2.1: pseudo-header fields in trailers → PROTOCOL_ERROR."""
    peer.send(refused_request(peer, 1, kind))
    answered(peer, 1, kind)
    peer.send(frame(DATA, 0, 1, grpc_message(b"")),
              peer.request_headers(1, [(":method", "POST"), ("x-trailer", "1")], end_stream=True))
    peer.expect_stream_error(1, PROTOCOL_ERROR)


@pytest.mark.parametrize("kind", REFUSALS)
def test_content_length_not_matching_data_is_protocol_error(peer, kind):
    """8.1.2.6: content-length that does not match the DATA → PROTOCOL_ERROR."""
    peer.send(refused_request(peer, 1, kind, extra=[("content-length", "1")]))
    answered(peer, 1, kind)
    peer.send(frame(DATA, END_STREAM, 1, b"test"))
    peer.expect_stream_error(1, PROTOCOL_ERROR)


@pytest.mark.parametrize("kind", ["get-405", "json-415", "unknown-method"])
def test_refused_request_whose_body_follows_is_served_and_connection_goes_on(peer, kind):
    """The refusal is a complete answer; the client may then finish its body, and the connection serves on."""
    peer.send(refused_request(peer, 1, kind))
    answered(peer, 1, kind)
    peer.send(frame(DATA, END_STREAM, 1, grpc_message(b"")))
    peer.send(peer.request_headers(3, request_fields("/grpc.health.v1.Health/Check"), end_stream=False),
              frame(DATA, END_STREAM, 3, grpc_message(b"")))
    blocks = peer.response_complete(3)
    assert dict(blocks[-1]).get("grpc-status") == "0", blocks
    peer.assert_alive()


# ---------------------------------------------------------------- 5.1.2 concurrency

@pytest.fixture(scope="module")
def few_streams(tmp_path_factory):
    server = CreditsServer(tmp_path_factory.mktemp("h2mcs"),
                           extra_args=["--enable-test-service", "--max-concurrent-streams", "4"], name="h2mcs").start()
    yield server
    assert server.terminate() == 0, server.stderr_tail()


def test_stream_beyond_max_concurrent_streams_is_refused_and_the_rest_go_on(few_streams):
    """5.1.2: a stream over the advertised limit is refused (REFUSED_STREAM) on its own."""
    peer = Peer(few_streams.port)
    try:
        assert peer.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS) == 4, peer.server_settings
        bidi = request_fields(f"/{TEST_SERVICE}/BidiStream")
        for stream in (1, 3, 5, 7):
            peer.send(peer.request_headers(stream, bidi, end_stream=False))
        peer.assert_alive()  # all four admitted, and the SETTINGS exchange is long over
        peer.send(peer.request_headers(9, bidi, end_stream=False))
        assert peer.expect_stream_error(9, REFUSED_STREAM) == "rst"
        # The admitted calls go on.
        peer.send(frame(DATA, END_STREAM, 1, grpc_message(b"\x0a\x02hi")))
        blocks = peer.response_complete(1)
        assert dict(blocks[-1]).get("grpc-status") == "0", blocks
        assert b"hi" in peer.data.get(1, b"")
        # A slot is free again: a new stream is served.
        peer.send(peer.request_headers(11, bidi, end_stream=False), frame(DATA, END_STREAM, 11, grpc_message(b"\x0a\x02yo")))
        blocks = peer.response_complete(11)
        assert dict(blocks[-1]).get("grpc-status") == "0", blocks
        peer.assert_alive()
    finally:
        peer.close()


def test_many_streams_beyond_the_limit_in_one_write_are_each_refused(few_streams):
    peer = Peer(few_streams.port)
    try:
        bidi = request_fields(f"/{TEST_SERVICE}/BidiStream")
        peer.send(*[peer.request_headers(s, bidi, end_stream=False) for s in range(1, 41, 2)])
        refused = set()
        while len(refused) < 16:
            f = peer.wait_for(lambda f: f[0] in (RST_STREAM, GOAWAY), "RST_STREAM for each stream over the limit")
            assert f[0] == RST_STREAM, f"GOAWAY {f[3][4:8].hex()}: the connection was ended"
            assert int.from_bytes(f[3], "big") == REFUSED_STREAM
            refused.add(f[2])
        assert refused == set(range(9, 41, 2))
        peer.assert_alive()
    finally:
        peer.close()


# ---------------------------------------------------------------- gRPC: content type and cardinality

@pytest.mark.parametrize("content_type,status", [
    ("application/grpc+json", "415"),
    ("application/grpc+JSON; charset=utf-8", "415"),
    ("application/grpc+thrift", "415"),
    ("application/grpc-web", "415"),
    ("application/grpc+proto", "200"),
    ("APPLICATION/GRPC+PROTO;charset=utf-8", "200"),
    ("application/grpc; charset=utf-8", "200"),
])
def test_content_type_codec(peer, content_type, status):
    fields = request_fields("/grpc.health.v1.Health/Check", content_type=content_type)
    peer.send(peer.request_headers(1, fields, end_stream=False), frame(DATA, END_STREAM, 1, grpc_message(b"")))
    blocks = peer.response_complete(1)
    assert dict(blocks[0]).get(":status") == status, blocks


@pytest.mark.parametrize("path,body", [
    ("/grpc.health.v1.Health/Check", b""),
    ("/grpc.health.v1.Health/Check", grpc_message(b"") + grpc_message(b"")),
    (f"/{TEST_SERVICE}/Echo", grpc_message(b"\x0a\x01a") * 2),
    (f"/{TEST_SERVICE}/ServerStream", b""),
    (f"/{TEST_SERVICE}/ServerStream", grpc_message(b"\x10\x01") * 2),
])
def test_request_cardinality_violation_is_unimplemented(peer, path, body):
    """Zero or two request messages on a unary or server-streaming method → UNIMPLEMENTED (12)."""
    peer.send(peer.request_headers(1, request_fields(path), end_stream=not body))
    if body:
        peer.send(frame(DATA, END_STREAM, 1, body))
    blocks = peer.response_complete(1)
    assert dict(blocks[-1]).get("grpc-status") == "12", blocks
