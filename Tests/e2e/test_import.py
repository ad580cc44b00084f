"""CreditService.ImportLots end to end: the per-record contract (applied,
already applied, failed with a reason), re-sending a file, permissions and
tenants, a fast sender's memory (request flow control), the deadline, and
`credits verify` after imports."""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time

import grpc
import pytest
import h2.config
import h2.connection
import h2.events

from conftest import wait_until
from credits_api import DENIED, NOT_FOUND, Tenant, admin_actor, channel_for, expect, ts, uid, verify_ok

PATH = "/credits.v1.CreditService/ImportLots"


def record(cs, key: str, client: str, amount: int, **kw):
    kw.setdefault("center_id", "c1")
    return cs.credits.ImportLotRecord(record_key=key, client_id=client, amount_minor=amount, **kw)


def import_lots(actor, records, timeout: float = 60):
    return actor.credit.ImportLots(iter(records), timeout=timeout)


def raw_import(cs, channel, token: str, payloads, timeout: float = 60):
    """ImportLots with each record given as its encoded bytes (what a protobuf library would refuse to send)."""
    method = channel.stream_unary(PATH, request_serializer=lambda b: b,
                                  response_deserializer=cs.credits.ImportLotsResponse.FromString)
    return method(iter(payloads), metadata=[("authorization", f"Bearer {token}")], timeout=timeout)


def snapshot(t: Tenant, clients):
    """Each client's balance summary and ledger entries, to compare before/after."""
    return {c: (t.summary(c), [(e.seq, e.type, e.amount_minor, e.idempotency_key) for e in t.entries(c)]) for c in clients}


def a_file(cs, prefix: str, clients, n: int):
    """n records over `clients`, amounts 100 + i, with every optional field on some."""
    out = []
    for i in range(n):
        kw = {}
        if i % 3 == 0:
            kw["external_ref"] = f"GC-{i}"
            kw["legacy_origin"] = "gift card"
        if i % 5 == 0:
            kw["scope"] = cs.common.Scope(centers=["c1", "c2"])
            kw["note"] = f"row {i}"
        if i % 7 == 0:
            kw["valid_until"] = ts(365 * 86400)
        out.append(record(cs, f"{prefix}:{i}", clients[i % len(clients)], 100 + i, price_minor=i, **kw))
    return out


def test_import_a_file_twice_second_run_applies_nothing(cs, cchan, admin, credits_server):
    t = Tenant(cs, cchan, admin)
    clients = [uid("imp-") for _ in range(7)]
    records = a_file(cs, uid("legacy-"), clients, 210)
    first = import_lots(t.staff, records)
    assert (first.processed, first.applied, first.already_applied, first.failed, first.complete) == (210, 210, 0, 0, True)
    assert first.last_seq == 210 and list(first.failures) == []

    # The ledger says the same, not only the response.
    for c in clients:
        mine = [r for r in records if r.client_id == c]
        assert t.summary(c) == (sum(r.amount_minor for r in mine),) * 2 + (0,)
        entries = t.entries(c)
        assert sorted(e.idempotency_key for e in entries) == sorted(r.record_key for r in mine)
        by_key = {r.record_key: r for r in mine}
        for e in entries:
            r = by_key[e.idempotency_key]
            assert e.type == cs.common.ENTRY_TYPE_IMPORT and e.amount_minor == r.amount_minor
            assert e.debit_account == "funding:import" and e.credit_account == f"client:{c}:available"
            assert e.reason == r.legacy_origin and e.payment_ref == r.external_ref
    lots = t.balance(clients[0], details=True).lots
    assert lots and all(lot.origin == cs.common.LOT_ORIGIN_IMPORT for lot in lots)

    before = snapshot(t, clients)
    second = import_lots(t.staff, records)
    assert (second.processed, second.applied, second.already_applied, second.failed, second.complete) == (210, 0, 210, 0, True)
    assert second.last_seq == 0
    assert snapshot(t, clients) == before
    verify_ok(credits_server.db)


def test_bad_records_fail_one_by_one_and_the_good_ones_apply(cs, cchan, admin, credits_server):
    t = Tenant(cs, cchan, admin)
    c = uid("mix-")
    p = uid("mix-")
    good0 = record(cs, f"{p}:0", c, 10)
    good7 = record(cs, f"{p}:7", c, 70, legacy_origin="voucher")
    nul = bytearray(record(cs, f"{p}:4", c, 40, note="xx").SerializeToString())
    nul[nul.index(b"xx")] = 0  # note = "\0x": valid protobuf, a string protobuf-c cannot carry
    bad_utf8 = bytearray(record(cs, f"{p}:9", c + "Q", 90).SerializeToString())
    bad_utf8[bad_utf8.index(b"Q")] = 0xFF
    later = ts(86400)
    earlier = ts(3600)
    payloads = [
        good0.SerializeToString(),
        record(cs, f"{p}:1", c, 0).SerializeToString(),                       # bad amount
        record(cs, f"{p}:2", "", 20).SerializeToString(),                      # missing client
        record(cs, f"{p}:3", "bad id!é", 30).SerializeToString(),              # bad id characters
        bytes(nul),                                                             # NUL in a string
        record(cs, f"{p}:0", c, 11).SerializeToString(),                       # key of record 0, other amount
        b"\x0a\xff\x01zz",                                                      # undecodable
        good7.SerializeToString(),
        record(cs, f"{p}:8", c, 80, valid_from=later, valid_until=earlier).SerializeToString(),
        bytes(bad_utf8),                                                        # invalid UTF-8
    ]
    r = raw_import(cs, cchan, t.staff_key.token, payloads)
    assert (r.processed, r.applied, r.already_applied, r.failed, r.complete) == (10, 2, 0, 8, True)
    got = [(f.index, f.record_key, f.reason, [v.field for v in f.field_violations]) for f in r.failures]
    assert got == [
        (1, f"{p}:1", "INVALID_ARGUMENT", ["amount_minor"]),
        (2, f"{p}:2", "INVALID_ARGUMENT", ["client_id"]),
        (3, f"{p}:3", "INVALID_ARGUMENT", ["client_id"]),
        (4, "", "INVALID_ARGUMENT", ["note"]),
        (5, f"{p}:0", "IDEMPOTENCY_KEY_REUSED", []),
        (6, "", "MALFORMED_REQUEST", []),
        (8, f"{p}:8", "INVALID_ARGUMENT", ["valid_until"]),
        (9, "", "INVALID_ARGUMENT", ["client_id"]),
    ], got
    assert "amount_minor" in r.failures[4].message
    assert all(f.message for f in r.failures)
    assert t.summary(c) == (80, 80, 0)
    assert sorted(e.idempotency_key for e in t.entries(c)) == [f"{p}:0", f"{p}:7"]


def test_app_key_is_denied_and_nothing_is_applied(cs, cchan, admin):
    t = Tenant(cs, cchan, admin)
    c = uid("app-")
    expect(cs, DENIED, import_lots, t.app, [record(cs, uid("k-"), c, 5) for _ in range(20)], error_reason="PERMISSION_DENIED")
    assert t.summary(c) == (0, 0, 0)
    assert t.entries(c) == []
    # Decided before any record is read: an undecodable one changes nothing.
    f = expect(cs, DENIED, raw_import, cs, cchan, t.app_key.token, [b"\x0a\xff"])
    assert f.info.reason == "PERMISSION_DENIED"


def test_one_tenants_import_is_invisible_to_another(cs, cchan, admin):
    a, b = Tenant(cs, cchan, admin), Tenant(cs, cchan, admin)
    c = uid("shared-")
    key = uid("legacy-")
    r = import_lots(a.staff, [record(cs, key, c, 123)])
    assert r.applied == 1
    assert a.summary(c) == (123, 123, 0)
    assert b.summary(c) == (0, 0, 0) and b.entries(c) == []
    # Record keys are per tenant: the same record is new to B.
    rb = import_lots(b.staff, [record(cs, key, c, 123)])
    assert (rb.applied, rb.already_applied) == (1, 0)
    assert a.summary(c) == (123, 123, 0)


def vm(pid: int, field: str) -> int:
    """VmRSS / VmHWM of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


FAST_RECORDS = 200_000
# What the server may grow by while a fast sender streams FAST_RECORDS: the
# in-flight records (512), one stream window (1 MiB) and SQLite's caches,
# not the records themselves (200k records are ~20 MB on the wire;
# measured: +17 MiB, debug build).
RSS_GROWTH_LIMIT_KIB = 64 * 1024


def test_a_fast_sender_costs_bounded_memory_and_everything_is_applied(cs, start_credits_server):
    srv = start_credits_server(name="import-rss")
    ch = channel_for(srv)
    try:
        t = Tenant(cs, ch, admin_actor(cs, ch))
        # 200 lots a client (GetBalance reads at most 1,000 lots of a client).
        clients = [f"fast-{i}" for i in range(1000)]
        prefix = uid("fast-")
        import_lots(t.staff, [record(cs, f"{prefix}:warm", "warm", 1)])  # code paths warm before the baseline
        baseline = vm(srv.proc.pid, "VmRSS")
        samples, stop = [], threading.Event()

        def sample():
            while not stop.is_set():
                samples.append(vm(srv.proc.pid, "VmRSS"))
                time.sleep(0.1)  # the sampling period (nothing is waited for)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        template = record(cs, "", "", 1, legacy_origin="card", note="n" * 40)

        def records():
            for i in range(FAST_RECORDS):
                r = cs.credits.ImportLotRecord()
                r.CopyFrom(template)
                r.record_key = f"{prefix}:{i}"
                r.client_id = clients[i % 1000]
                yield r

        started = time.monotonic()
        r = import_lots(t.staff, records(), timeout=600)
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
        peak = max(samples + [vm(srv.proc.pid, "VmHWM")])
        print(f"\n{FAST_RECORDS} records in {elapsed:.1f}s ({FAST_RECORDS / elapsed:.0f}/s); "
              f"RSS baseline {baseline} KiB, peak {peak} KiB (+{peak - baseline} KiB)")
        assert (r.processed, r.applied, r.failed, r.complete) == (FAST_RECORDS, FAST_RECORDS, 0, True)
        assert r.last_seq == FAST_RECORDS + 1
        assert max(samples) - baseline < RSS_GROWTH_LIMIT_KIB, (baseline, max(samples))
        for c in clients[:5]:
            assert t.summary(c) == (FAST_RECORDS // 1000,) * 2 + (0,)
    finally:
        ch.close()
    srv.terminate()
    verify_ok(srv.db)


class RawImport:
    """One ImportLots stream over HTTP/2 with a grpc-timeout of our choosing (grpcio
    would end the call itself at its own deadline, before the server answers)."""

    def __init__(self, port: int, token: str, timeout_ms: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(self.sid, [
            (":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"), ("te", "trailers"),
            ("authorization", f"Bearer {token}"), ("grpc-timeout", f"{timeout_ms}m"),
        ])
        self.sock.sendall(self.conn.data_to_send())
        self.status: int | None = None
        self.data = b""

    def send(self, payload: bytes) -> bool:
        """Sends one record if the stream is open and the window allows; False otherwise."""
        frame = struct.pack(">BI", 0, len(payload)) + payload
        if self.status is not None or self.conn.local_flow_control_window(self.sid) < len(frame):
            return False
        self.conn.send_data(self.sid, frame)
        self.sock.sendall(self.conn.data_to_send())
        return True

    def poll(self, wait: float) -> None:
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        assert data, "connection closed by the server"
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.data += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                fields = dict(event.headers)
                if "grpc-status" in fields:
                    self.status = int(fields["grpc-status"])
            elif isinstance(event, h2.events.StreamReset):
                self.status = self.status if self.status is not None else -1
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)


def test_deadline_mid_import_answers_ok_with_what_was_processed(cs, cchan, admin, credits_server):
    t = Tenant(cs, cchan, admin)
    clients = [uid("dl-") for _ in range(4)]
    prefix = uid("dl-")
    call = RawImport(credits_server.port, t.staff_key.token, timeout_ms=1500)
    sent = 0
    end = time.monotonic() + 10
    # 40 records every 50 ms for well past the deadline.
    while call.status is None and time.monotonic() < end:
        for _ in range(40):
            if not call.send(record(cs, f"{prefix}:{sent}", clients[sent % 4], 1).SerializeToString()):
                break
            sent += 1
        call.poll(0.05)
    call.sock.close()
    assert call.status == 0, (call.status, call.data)
    r = cs.credits.ImportLotsResponse.FromString(call.data[5:])
    assert not r.complete
    assert 0 < r.processed <= sent and r.applied == r.processed and r.failed == 0
    # Every processed record is in the ledger, and nothing beyond.
    keys = sorted((e.idempotency_key for c in clients for e in t.entries(c)), key=lambda k: int(k.rsplit(":", 1)[1]))
    assert keys == [f"{prefix}:{i}" for i in range(r.processed)]
    assert sum(t.summary(c)[0] for c in clients) == r.processed
    assert r.last_seq == r.processed
    # Sent again from `processed` on, the rest completes the file.
    rest = import_lots(t.staff, [record(cs, f"{prefix}:{i}", clients[i % 4], 1) for i in range(r.processed, sent)])
    assert (rest.applied, rest.complete) == (sent - r.processed, True)
    verify_ok(credits_server.db)


def test_deadline_before_anything_applied_is_deadline_exceeded(cs, cchan, admin):
    t = Tenant(cs, cchan, admin)
    c = uid("dl0-")

    resumed = threading.Event()

    def slow():
        time.sleep(1.5)  # the stall under test: the client sends nothing past its deadline
        resumed.set()
        yield record(cs, uid("k-"), c, 5)

    f = expect(cs, grpc.StatusCode.DEADLINE_EXCEEDED, import_lots, t.staff, slow(), timeout=0.5)
    assert f.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The late record is made (and offered to the call) after the deadline;
    # a write after it goes through the same writer: were the record taken,
    # it would be committed before this one is answered.
    wait_until(resumed.is_set, 10, "the stalled client makes its record")
    t.order(uid("dl0-fence-"), 1)
    assert t.summary(c) == (0, 0, 0)


def test_get_operation_finds_an_imported_record(cs, cchan, admin):
    t = Tenant(cs, cchan, admin)
    key = uid("legacy-")
    import_lots(t.staff, [record(cs, key, uid("op-"), 9)])
    op = t.staff.credit.GetOperation(cs.credits.GetOperationRequest(idempotency_key=key))
    assert op.operation == "import"
    expect(cs, NOT_FOUND, t.staff.credit.GetOperation, cs.credits.GetOperationRequest(idempotency_key=key + "x"))


def key_indices(keys, prefix: str):
    return sorted(int(k.rsplit(":", 1)[1]) for k in keys if k.startswith(prefix + ":"))


def test_client_cancel_stops_the_import_and_keeps_the_ledger_whole(cs, cchan, admin, credits_server):
    t = Tenant(cs, cchan, admin)
    clients = [uid("cx-") for _ in range(40)]  # (GetBalance reads at most 1,000 lots a client)
    prefix = uid("cx-")

    def records():
        for i in range(1_000_000):
            yield record(cs, f"{prefix}:{i}", clients[i % 40], 1)

    future = t.staff.credit.ImportLots.future(records(), timeout=60)
    # Records are being applied: the cancel lands in the middle of the stream.
    wait_until(lambda: t.summary(clients[0])[0] > 0, 30, "the import applies records")
    assert future.cancel()
    # A write on the same connection after the cancel: the server handles the
    # cancel first (it submits no record after it) and the writer answers in
    # order, so what it had taken is committed once this one is answered.
    t.order(uid("cx-fence-"), 1)
    applied = key_indices([e.idempotency_key for c in clients for e in t.entries(c)], prefix)
    # What was queued and not taken was withdrawn: the records applied are a
    # prefix of the stream (the writer takes them in order), and stay applied.
    assert applied and applied == list(range(len(applied)))
    assert sum(t.summary(c)[0] for c in clients) == len(applied)
    verify_ok(credits_server.db)


def test_server_shutdown_ends_the_import_ok_and_incomplete(cs, start_credits_server):
    import sqlite3

    srv = start_credits_server(name="import-shutdown")
    ch = channel_for(srv)
    t = Tenant(cs, ch, admin_actor(cs, ch))
    prefix = uid("sd-")
    sent = []

    def records():
        for i in range(100_000):
            sent.append(i)
            yield record(cs, f"{prefix}:{i}", "sd-client", 1)
            time.sleep(0.002)  # pacing: the stream is still going when the server stops

    # SIGTERM in the middle of the stream (what is under test), not a wait for something.
    threading.Timer(1.5, lambda: srv.proc.send_signal(signal.SIGTERM)).start()
    r = import_lots(t.staff, records(), timeout=30)
    ch.close()
    assert not r.complete and 0 < r.processed <= len(sent)
    assert r.applied == r.processed and r.failed == 0
    assert srv.terminate() == 0
    db = sqlite3.connect(srv.db)
    keys = [k for (k,) in db.execute("SELECT idempotency_key FROM entries WHERE type = 'import'")]
    db.close()
    assert key_indices(keys, prefix) == list(range(r.processed))
    verify_ok(srv.db)


def test_at_most_1000_failures_are_listed_and_failed_counts_all(cs, cchan, admin):
    t = Tenant(cs, cchan, admin)
    c = uid("many-")
    prefix = uid("many-")
    bad = [record(cs, f"{prefix}:{i}", c, 0, scope=cs.common.Scope(centers=["bad id"] * 20)) for i in range(1200)]
    r = import_lots(t.staff, bad + [record(cs, f"{prefix}:good", c, 5)])
    assert (r.processed, r.applied, r.failed, r.complete) == (1201, 1, 1200, True)
    assert [f.index for f in r.failures] == list(range(1000))
    # Each failure bounded: 8 violations listed and a count of the rest.
    f = r.failures[0]
    assert f.reason == "INVALID_ARGUMENT" and len(f.field_violations) == 9
    assert f.field_violations[-1].description == "13 more invalid fields are not listed"
    assert r.ByteSize() < 4 << 20
    assert t.summary(c) == (5, 5, 0)


def test_a_record_over_the_message_limit_after_applied_ones_ends_ok_and_incomplete(cs, start_credits_server):
    """The transport cannot read a record (larger than --max-message-bytes):
    with records already applied or in flight the call is not failed (that
    would claim nothing was applied) but answers what was done, complete =
    false; with nothing applied, RESOURCE_EXHAUSTED as before."""
    srv = start_credits_server("--max-message-bytes", "65536", name="import-toolarge")
    ch = channel_for(srv)
    t = Tenant(cs, ch, admin_actor(cs, ch))
    prefix = uid("big-")
    good = [record(cs, f"{prefix}:{i}", "big-client", 1).SerializeToString() for i in range(50)]
    huge = record(cs, f"{prefix}:huge", "big-client", 1, note="x" * 100_000).SerializeToString()
    after = [record(cs, f"{prefix}:after{i}", "big-client", 1).SerializeToString() for i in range(5)]
    r = raw_import(cs, ch, t.staff_key.token, good + [huge] + after)
    assert not r.complete and r.processed == 50 and r.applied == 50 and r.failed == 0
    assert t.summary("big-client") == (50, 50, 0), "the 50 before it, nothing after"
    # Nothing applied before the bad record: the transport's status stands.
    with pytest.raises(grpc.RpcError) as e:
        raw_import(cs, ch, t.staff_key.token, [huge] + after)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert t.summary("big-client") == (50, 50, 0)
    ch.close()
    srv.terminate()
    verify_ok(srv.db)
