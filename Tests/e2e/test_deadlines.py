"""A failure the server sends means nothing was applied (issue 13 item 1).

Writes with short `grpc-timeout`s (100 µs … 5 ms) go out while other clients
keep the writer busy. The client here is a raw HTTP/2 client that sends the
deadline but never enforces it itself, so every status it reads was sent by
the server. For each write, the status and the ledger must agree:

- OK → the operation exists (GetOperation by its key) with the reply's id;
- DEADLINE_EXCEEDED / CANCELLED → the key is unknown: nothing was applied;

and the client's balance equals its opening balance minus the spends
answered OK.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from conftest import wait_until
from credits_api import NOT_FOUND, Tenant, channel_for, expect, uid

WRITES = 300
OPENING = 10_000_000
AMOUNT = 7


def grpc_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def timeout_header(micros: int) -> str:
    return f"{micros}u"


class RawCalls:
    """Unary gRPC calls over one HTTP/2 connection; statuses as the server sent them."""

    def __init__(self, port: int, token: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        self.sock.sendall(self.conn.data_to_send())
        self.token = token
        self.results: dict[int, dict] = {}

    def start(self, path: str, message: bytes, timeout_micros: int | None) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"), ("te", "trailers"),
            ("authorization", f"Bearer {self.token}"),
        ]
        if timeout_micros is not None:
            headers.append(("grpc-timeout", timeout_header(timeout_micros)))
        self.conn.send_headers(sid, headers)
        self.conn.send_data(sid, grpc_frame(message), end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        self.results[sid] = {"status": None, "data": b"", "headers": {}}
        return sid

    def wait_all(self, deadline_s: float = 60):
        end = time.monotonic() + deadline_s
        while any(r["status"] is None for r in self.results.values()):
            assert time.monotonic() < end, "the server did not answer every stream"
            data = self.sock.recv(65536)
            assert data, "connection closed by the server"
            for event in self.conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    r = self.results[event.stream_id]
                    fields = dict(event.headers)
                    r["headers"].update(fields)
                    if "grpc-status" in fields:
                        r["status"] = int(fields["grpc-status"])
                elif isinstance(event, h2.events.DataReceived):
                    self.results[event.stream_id]["data"] += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    self.results[event.stream_id]["status"] = -1
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)

    def close(self):
        self.sock.close()


def background_writes(t: Tenant, cs, stop: threading.Event, errors: list, batches: list):
    """Keeps the writer busy: credit orders and spends on other clients
    (`batches` gets an item for each 32 spends answered)."""
    C = cs.credits
    clients = [uid("load-") for _ in range(8)]
    for c in clients:
        t.order(c, 1_000_000)
    i = 0
    while not stop.is_set():
        try:
            futures = [t.staff.credit.SpendCredits.future(C.SpendCreditsRequest(
                client_id=clients[(i + k) % len(clients)], amount_minor=1, reason=C.SPEND_REASON_SERVICE,
                center_id="c1", idempotency_key=uid("bg-"))) for k in range(32)]
            for f in futures:
                f.result()
            i += 32
            batches.append(i)
        except Exception as e:  # noqa: BLE001 — reported by the test
            errors.append(e)
            return


def test_short_deadlines_status_and_ledger_agree(cs, cchan, admin, credits_server):
    C = cs.credits
    t = Tenant(cs, cchan, admin)
    client = uid("dl-")
    t.order(client, OPENING)

    stop = threading.Event()
    errors: list = []
    batches: list = []
    loaders = [threading.Thread(target=background_writes, args=(t, cs, stop, errors, batches)) for _ in range(2)]
    for th in loaders:
        th.start()
    # The writer is busy (both loaders spending) before the short deadlines start.
    wait_until(lambda: len(batches) >= 2 or errors, 30, "background spends under way")

    rng = random.Random(13)
    raw = RawCalls(credits_server.port, t.staff_key.token)
    keys: dict[int, str] = {}
    try:
        for batch in range(WRITES // 30):
            for _ in range(30):
                key = uid("dlk-")
                req = C.SpendCreditsRequest(client_id=client, amount_minor=AMOUNT, reason=C.SPEND_REASON_SERVICE,
                                            center_id="c1", idempotency_key=key)
                micros = int(100 * (50 ** rng.random()))  # 100 µs … 5 ms, log-uniform
                sid = raw.start("/credits.v1.CreditService/SpendCredits", req.SerializeToString(), micros)
                keys[sid] = key
            raw.wait_all()
            time.sleep(0.01)  # pacing between rounds (nothing is waited for)
    finally:
        stop.set()
        for th in loaders:
            th.join()
        raw.close()
    assert not errors, errors

    counts: dict[int, int] = {}
    ok_spent = 0
    for sid, key in keys.items():
        r = raw.results[sid]
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        if r["status"] == 0:
            reply = C.SpendCreditsResponse()
            reply.ParseFromString(r["data"][5:])
            op = t.staff.credit.GetOperation(C.GetOperationRequest(idempotency_key=key))
            assert op.result_id == reply.spend.id, f"stream {sid}: OK but the operation differs"
            ok_spent += AMOUNT
        else:
            assert r["status"] in (1, 4), f"stream {sid}: unexpected status {r['status']} {r['headers']}"
            expect(cs, NOT_FOUND, t.staff.credit.GetOperation, C.GetOperationRequest(idempotency_key=key))
    total = t.summary(client)[0]
    assert total == OPENING - ok_spent, f"balance {total}, expected {OPENING - ok_spent}; statuses {counts}"
    print(f"deadline test: {len(keys)} writes, statuses {counts}")
    # Both outcomes must have happened for the test to mean anything.
    assert counts.get(0, 0) > 0 and counts.get(4, 0) > 0, counts
