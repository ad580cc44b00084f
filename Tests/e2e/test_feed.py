"""Change feed (LedgerFeedService.SubscribeLedger) and balance watches
(WatchBalance) over real gRPC: ordered and gapless replay + live follow while
8 threads write, resume from any seq, kill -9 and resume, filters, tenancy,
a subscriber that never reads, and watches that see holds, captures, expiry
and a threshold crossing."""

import random
import socket
import struct
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from conftest import wait_until
from credits_api import Tenant, channel_for, rpc_error, uid, ts

FEED_TIMEOUT = 60.0


def dedicated_tenant(cs, start_credits_server, *args):
    """A server of the test's own (started with `args`), a channel to it and a fresh tenant."""
    from credits_api import admin_actor

    srv = start_credits_server(*args)
    ch = channel_for(srv)
    return srv, ch, Tenant(cs, ch, admin_actor(cs, ch))


def tenant_seq(t: Tenant) -> int:
    """The tenant's latest committed seq."""
    return t.staff.credit.GetBalance(t.cs.credits.GetBalanceRequest(client_id="nobody")).summary.seq


class Collector:
    """Reads a SubscribeLedger stream on a thread, keeping entries and progress."""

    def __init__(self, actor, cs, **req):
        self.entries = []
        self.progress = []
        self.error = None
        self.done = threading.Event()
        self.call = actor.feed.SubscribeLedger(cs.feed.SubscribeLedgerRequest(**req), timeout=FEED_TIMEOUT)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for m in self.call:
                if m.HasField("entry"):
                    self.entries.append(m.entry)
                else:
                    self.progress.append(m.progress)
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.done.set()

    def seqs(self):
        return [e.seq for e in self.entries]

    def wait_for(self, predicate, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate(self):
                return True
            if self.done.is_set():
                break
            time.sleep(0.02)
        return predicate(self)

    def cancel(self):
        self.call.cancel()
        self.done.wait(5)


def run_writers(t: Tenant, clients, threads=8, per_thread=40):
    """8 threads of orders, spends and holds; returns the seqs of acknowledged writes."""
    acked = []
    lock = threading.Lock()

    def work(i):
        rnd = random.Random(i)
        for n in range(per_thread):
            c = rnd.choice(clients)
            kind = n % 4
            try:
                if kind == 0 or kind == 3:
                    r = t.order(c, rnd.randint(50, 500))
                    seq = r.balance.seq
                elif kind == 1:
                    r = t.spend(c, rnd.randint(1, 20))
                    seq = r.balance.seq
                else:
                    r = t.hold(c, rnd.randint(1, 20), expire_time=ts(3600))
                    seq = r.balance.seq
                with lock:
                    acked.append(seq)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e  # insufficient credits is fine

    ws = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    return acked


def test_replay_then_live_follow_is_ordered_and_gapless(cs, cchan, admin):
    t = Tenant(cs, cchan, admin)
    clients = [uid("c-") for _ in range(6)]
    for c in clients:
        t.order(c, 1000)
    before = tenant_seq(t)
    # Replay: from 0, the entries already there, then live.
    feed = Collector(t.app, cs, from_seq=0)
    assert feed.wait_for(lambda f: len(f.entries) >= before)
    assert feed.wait_for(lambda f: f.progress), "a progress message says the stream is live"
    live = feed.progress[0]
    assert live.seq == before and live.tenant_seq == before
    run_writers(t, clients)
    # A last write after the others: once the feed has it, anything sent
    # before it (a duplicate, an entry out of order) is in hand too.
    t.order(clients[0], 1)
    last = tenant_seq(t)
    assert feed.wait_for(lambda f: len(f.entries) >= last), (len(feed.entries), last)
    assert feed.seqs() == list(range(1, last + 1)), "every entry once, in seq order, no gap"
    # The feed's entries are the ledger's: compare with each client's statement.
    by_seq = {e.seq: e for e in feed.entries}
    for c in clients:
        for e in t.entries(c, oldest_first=True):
            assert by_seq[e.seq] == e
    feed.cancel()


def test_resume_from_any_seq(cs, cchan, admin):
    t = Tenant(cs, cchan, admin)
    clients = [uid("c-") for _ in range(3)]
    for c in clients:
        t.order(c, 1000)
    run_writers(t, clients, threads=4, per_thread=10)
    last = tenant_seq(t)
    for start in sorted({0, 1, last // 3, last // 2, last - 1, last}):
        feed = Collector(t.staff, cs, from_seq=start)
        assert feed.wait_for(lambda f: f.progress), start
        assert feed.seqs() == list(range(start + 1, last + 1)), start
        assert feed.progress[0].seq == last
        feed.cancel()
    # Beyond the latest seq, or negative: INVALID_ARGUMENT.
    for bad in (last + 1, -1):
        call = t.staff.feed.SubscribeLedger(cs.feed.SubscribeLedgerRequest(from_seq=bad), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            list(call)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_filters_and_progress_checkpoints(cs, cchan, admin):
    t = Tenant(cs, cchan, admin)
    a, b = uid("a-"), uid("b-")
    t.order(a, 500)
    t.order(b, 500)
    t.spend(a, 10)
    t.spend(b, 20)
    t.order(b, 5)
    last = tenant_seq(t)
    feed = Collector(t.staff, cs, from_seq=0, client_ids=[b], types=[cs.common.ENTRY_TYPE_ORDER], progress_interval_seconds=1)
    assert feed.wait_for(lambda f: f.progress)
    assert [(e.client_id, e.type, e.amount_minor) for e in feed.entries] == [(b, cs.common.ENTRY_TYPE_ORDER, 500),
                                                                              (b, cs.common.ENTRY_TYPE_ORDER, 5)]
    assert feed.progress[0].seq == last, "the checkpoint covers the skipped entries"
    # Entries of other clients move the checkpoint on, through periodic progress.
    t.spend(a, 1)
    assert feed.wait_for(lambda f: f.progress[-1].seq == last + 1 and f.progress[-1].tenant_seq == last + 1, timeout=5)
    assert len(feed.entries) == 2
    t.order(b, 7)
    assert feed.wait_for(lambda f: len(f.entries) == 3)
    assert feed.entries[-1].seq == last + 2
    feed.cancel()
    # Two clients: each of their entries once, in order, even when one commit touches both.
    both = Collector(t.staff, cs, from_seq=last + 2, client_ids=[a, b])
    assert both.wait_for(lambda f: f.progress)
    threads = [threading.Thread(target=lambda c=c: [t.order(c, 1) for _ in range(30)]) for c in (a, b, a, b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t.order(b, 1)  # the last write: the feed has all before it once it has this
    end = tenant_seq(t)
    assert both.wait_for(lambda f: len(f.entries) >= end - last - 2)
    assert both.seqs() == list(range(last + 3, end + 1))
    both.cancel()
    # Bad filters: INVALID_ARGUMENT naming them.
    err = rpc_error(lambda: list(t.staff.feed.SubscribeLedger(cs.feed.SubscribeLedgerRequest(
        client_ids=["bad id"], types=[99], progress_interval_seconds=301), timeout=5)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    for field in ("client_ids[0]", "types[0]", "progress_interval_seconds"):
        assert field in err.details()


def test_tenant_isolation_on_every_stream(cs, cchan, admin):
    ta, tb = Tenant(cs, cchan, admin), Tenant(cs, cchan, admin)
    shared = uid("same-")
    tb.order(uid("other-"), 10)
    feed_b = Collector(tb.staff, cs, from_seq=0, progress_interval_seconds=1)
    watch_b = tb.staff.feed.WatchBalance(cs.feed.WatchBalanceRequest(client_id=shared), timeout=FEED_TIMEOUT)
    first = next(watch_b)
    assert first.balance.summary.total_minor == 0
    ta.order(shared, 700)
    ta.spend(shared, 5)
    # Two of B's progress ticks (every second) after A's commits: A's notices
    # reached the event loop before the second, so a leaked entry would be in.
    ticks = len(feed_b.progress)
    assert feed_b.wait_for(lambda f: len(f.progress) >= ticks + 2, timeout=10), "B's feed ticks"
    assert [e.client_id for e in feed_b.entries] != [] and all(e.client_id != shared for e in feed_b.entries)
    assert all(p.tenant_seq == 1 for p in feed_b.progress), "B's progress shows B's seq, not A's"
    tb.order(shared, 3)
    update = next(watch_b)
    assert update.balance.summary.total_minor == 3, "B's watch sees only B's client"
    watch_b.cancel()
    feed_b.cancel()


def read_updates(call, n, timeout=10.0):
    out = []
    for u in call:
        out.append(u)
        if len(out) == n:
            break
    return out


def test_watch_sees_holds_captures_expiry_and_threshold(cs, cchan, admin):
    t = Tenant(cs, cchan, admin)
    c = uid("w-")
    watch = t.app.feed.WatchBalance(cs.feed.WatchBalanceRequest(client_id=c, include_details=True,
                                                                low_balance_threshold_minor=400), timeout=FEED_TIMEOUT)
    it = iter(watch)
    first = next(it)
    assert first.balance.summary.total_minor == 0 and first.below_threshold and first.crossed_below_threshold

    t.order(c, 1000)
    u = next(it)
    assert (u.balance.summary.available_minor, u.balance.summary.held_minor) == (1000, 0)
    assert not u.below_threshold and not u.crossed_below_threshold and len(u.balance.lots) == 1

    h = t.hold(c, 300, expire_time=ts(3600))
    u = next(it)
    assert (u.balance.summary.available_minor, u.balance.summary.held_minor) == (700, 300)
    assert [x.id for x in u.balance.open_holds] == [h.hold.id]

    t.staff.credit.CaptureHold(cs.credits.CaptureHoldRequest(hold_id=h.hold.id, amount_minor=200, idempotency_key=uid("k-")))
    u = next(it)
    assert (u.balance.summary.available_minor, u.balance.summary.held_minor) == (800, 0)
    assert list(u.balance.open_holds) == []

    t.spend(c, 450)  # 800 → 350: crosses 400 downwards
    u = next(it)
    assert u.balance.summary.available_minor == 350 and u.below_threshold and u.crossed_below_threshold
    t.spend(c, 10)
    u = next(it)
    assert u.balance.summary.available_minor == 340 and u.below_threshold and not u.crossed_below_threshold

    # Expiry: a lot that expires in 2 s; the maintenance writes its expiry entry.
    t.order(c, 500, valid_until=ts(2))
    u = next(it)
    assert u.balance.summary.available_minor == 840 and not u.below_threshold
    u = next(it)  # the expiry entry (within the maintenance interval)
    assert u.balance.summary.available_minor == 340 and u.crossed_below_threshold
    assert [e.type for e in t.entries(c)][0] == cs.common.ENTRY_TYPE_EXPIRY
    watch.cancel()


def test_watch_bad_requests(cs, cchan, admin):
    t = Tenant(cs, cchan, admin)
    err = rpc_error(lambda: list(t.staff.feed.WatchBalance(cs.feed.WatchBalanceRequest(
        client_id="", low_balance_threshold_minor=-1), timeout=5)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "client_id" in err.details() and "low_balance_threshold_minor" in err.details()
    # No key: UNAUTHENTICATED before anything else.
    from credits_api import Actor
    err = rpc_error(lambda: list(Actor(cs, cchan, None).feed.WatchBalance(cs.feed.WatchBalanceRequest(client_id="x"), timeout=5)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_kill9_mid_stream_then_resume_gets_every_committed_entry_once(cs, start_credits_server, tmp_path, admin):
    srv = start_credits_server()
    ch = channel_for(srv)
    from credits_api import admin_actor
    adm = admin_actor(cs, ch)
    t = Tenant(cs, ch, adm)
    clients = [uid("k-") for _ in range(4)]
    for c in clients:
        t.order(c, 100000)
    feed = Collector(t.staff, cs, from_seq=0)
    stop = threading.Event()
    acked = []

    def writer(i):
        while not stop.is_set():
            try:
                acked.append(t.order(clients[i], 3).balance.seq)
            except grpc.RpcError:
                return

    ws = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(4)]
    for w in ws:
        w.start()
    assert feed.wait_for(lambda f: len(f.entries) >= 200, timeout=30)
    srv.kill()
    stop.set()
    for w in ws:
        w.join(10)
    feed.done.wait(10)
    got = feed.seqs()
    assert got == list(range(1, len(got) + 1)), "ordered and gapless up to the crash"
    ch.close()

    srv2 = start_credits_server(db=srv.db)
    ch2 = channel_for(srv2)
    t.staff = type(t.staff)(cs, ch2, t.staff_key.token)
    t.cs = cs
    last = t.staff.credit.GetBalance(cs.credits.GetBalanceRequest(client_id="x")).summary.seq
    resumed = Collector(t.staff, cs, from_seq=got[-1])
    assert resumed.wait_for(lambda f: f.progress)
    all_seqs = got + resumed.seqs()
    assert all_seqs == list(range(1, last + 1)), "every committed entry exactly once across the crash"
    assert set(acked) <= set(all_seqs), "every acknowledged write is in the feed"
    resumed.cancel()
    ch2.close()


# ---- a subscriber that never reads (raw HTTP/2: its window never opens)


def grpc_frame(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


class RawStream:
    """One gRPC call on a raw h2 connection that never sends WINDOW_UPDATE."""

    def __init__(self, port, path, request: bytes, metadata, initial_window=65535):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(0.5)
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
        self.sid = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", f"127.0.0.1:{port}"),
                   ("content-type", "application/grpc"), ("te", "trailers")] + list(metadata)
        self.conn.send_headers(self.sid, headers)
        self.conn.send_data(self.sid, grpc_frame(request), end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        self.data = bytearray()
        self.trailers = None
        self.reset = False

    def pump(self, seconds):
        end = time.time() + seconds
        while time.time() < end and self.trailers is None and not self.reset:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            for ev in self.conn.receive_data(chunk):
                if isinstance(ev, h2.events.DataReceived):
                    self.data += ev.data  # never acknowledged: the window stays closed
                elif isinstance(ev, h2.events.TrailersReceived):
                    self.trailers = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamReset):
                    self.reset = True
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)

    def open_window(self, n):
        self.conn.increment_flow_control_window(n)
        self.conn.increment_flow_control_window(n, stream_id=self.sid)
        self.sock.sendall(self.conn.data_to_send())

    def messages(self):
        out, i = [], 0
        while i + 5 <= len(self.data):
            n = struct.unpack(">I", self.data[i + 1:i + 5])[0]
            if i + 5 + n > len(self.data):
                break
            out.append(bytes(self.data[i + 5:i + 5 + n]))
            i += 5 + n
        return out

    def close(self):
        self.sock.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_subscriber_that_never_reads_is_ended_and_costs_bounded_memory(cs, start_credits_server):
    srv, ch, t = dedicated_tenant(cs, start_credits_server, "--feed-stall-timeout-seconds", "4")
    clients = [uid("s-") for _ in range(8)]

    def fill(i):
        for _ in range(150):
            t.order(clients[i], 1, note="x" * 300)

    ws = [threading.Thread(target=fill, args=(i,)) for i in range(8)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    last = tenant_seq(t)
    assert last == 1200
    rss_before = rss_kib(srv.proc.pid)
    stalled = RawStream(srv.port, "/credits.v1.LedgerFeedService/SubscribeLedger",
                        cs.feed.SubscribeLedgerRequest(from_seq=0).SerializeToString(),
                        [("authorization", f"Bearer {t.staff_key.token}")])
    stalled.pump(1.0)
    received = len(stalled.data)
    assert 0 < received <= 65535, "only the client's window was sent"
    # Other clients are not slowed meanwhile.
    t0 = time.time()
    for _ in range(50):
        t.balance(clients[0])
    assert time.time() - t0 < 5
    stalled.pump(8.0)
    assert stalled.trailers is not None, "the stalled subscriber got a status"
    assert stalled.trailers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert "read nothing" in stalled.trailers.get("grpc-message", "").replace("%20", " ")
    assert rss_kib(srv.proc.pid) - rss_before < 32 * 1024
    stalled.close()
    # The server still serves feeds.
    feed = Collector(t.staff, cs, from_seq=last - 5)
    assert feed.wait_for(lambda f: f.progress)
    assert feed.seqs() == list(range(last - 4, last + 1))
    feed.cancel()
    ch.close()


def test_slow_watcher_gets_the_latest_snapshot_not_a_backlog(cs, start_credits_server):
    srv, ch, t = dedicated_tenant(cs, start_credits_server)
    c = uid("slow-")
    t.order(c, 100000)
    # A window of 10 bytes: the first snapshot does not even fit.
    raw = RawStream(srv.port, "/credits.v1.LedgerFeedService/WatchBalance",
                    cs.feed.WatchBalanceRequest(client_id=c).SerializeToString(),
                    [("authorization", f"Bearer {t.staff_key.token}")], initial_window=10)
    raw.pump(0.5)
    for _ in range(200):
        t.spend(c, 1)
    raw.open_window(1 << 20)
    raw.pump(1.5)
    updates = [cs.feed.BalanceUpdate.FromString(m) for m in raw.messages()]
    assert 2 <= len(updates) <= 3, len(updates)
    assert updates[-1].balance.summary.available_minor == 100000 - 200
    raw.close()
    ch.close()


def test_too_many_streams_are_refused(cs, start_credits_server):
    srv, ch, t = dedicated_tenant(cs, start_credits_server, "--max-feed-streams", "2")
    a = t.staff.feed.WatchBalance(cs.feed.WatchBalanceRequest(client_id="a"), timeout=FEED_TIMEOUT)
    next(a)
    b = Collector(t.staff, cs, from_seq=0)
    assert b.wait_for(lambda f: f.progress)
    err = rpc_error(lambda: list(t.staff.feed.WatchBalance(cs.feed.WatchBalanceRequest(client_id="c"), timeout=5)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    a.cancel()

    def reopened():
        """A watch on a slot freed by the cancel; None while it is not freed yet."""
        call = t.staff.feed.WatchBalance(cs.feed.WatchBalanceRequest(client_id="c"), timeout=FEED_TIMEOUT)
        try:
            return call, next(call)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            return None

    c, first = wait_until(reopened, 10, "the cancelled stream's slot is free again")
    assert first.balance.summary.total_minor == 0, "a slot freed by a cancelled stream is reused"
    c.cancel()
    b.cancel()
    ch.close()


def test_shutdown_ends_streams_with_unavailable(cs, start_credits_server):
    srv, ch, t = dedicated_tenant(cs, start_credits_server)
    feed = Collector(t.staff, cs, from_seq=0)
    assert feed.wait_for(lambda f: f.progress)
    t0 = time.time()
    assert srv.terminate() == 0
    assert time.time() - t0 < 5, "open streams do not hold the shutdown for its grace period"
    feed.done.wait(5)
    assert feed.error is not None and feed.error.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()


def test_revoked_key_ends_its_open_streams(cs, start_credits_server):
    srv = start_credits_server("--stream-reauth-seconds", "1")
    ch = channel_for(srv)
    from credits_api import admin_actor
    adm = admin_actor(cs, ch)
    t = Tenant(cs, ch, adm)
    feed = Collector(t.app, cs, from_seq=0)
    watch = t.app.feed.WatchBalance(cs.feed.WatchBalanceRequest(client_id="r"), timeout=FEED_TIMEOUT)
    assert next(watch).balance.summary.total_minor == 0
    assert feed.wait_for(lambda f: f.progress)
    adm.admin.RevokeApiKey(cs.admin.RevokeApiKeyRequest(key_id=t.app_key.key.id))
    t0 = time.time()
    with pytest.raises(grpc.RpcError) as e:
        next(watch)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert feed.done.wait(5)
    assert feed.error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert time.time() - t0 < 5
    # The staff key's streams go on.
    other = Collector(t.staff, cs, from_seq=0)
    assert other.wait_for(lambda f: f.progress)
    other.cancel()
    ch.close()


@pytest.mark.parametrize("per_thread,note", [(100, 400), (300, 1000)], ids=["from-the-tail", "from-sqlite-then-the-tail"])
def test_a_replay_larger_than_the_connection_buffer_is_never_cut_off(cs, start_credits_server, per_thread, note):
    """The connection's response buffer (64 KiB here) is smaller than a page
    of the replay: pages wait for it to drain, no entry is dropped and the
    stream is not failed; two more feeds share the connection, live. The
    history is either within the tenant's shared tail (800 entries of
    ~0.5 KB) or larger than it (2,400 of ~1.1 KB: the replay reads its first
    pages from SQLite, then the tail)."""
    srv, ch, t = dedicated_tenant(cs, start_credits_server, "--max-response-buffer-bytes-per-connection", "65536")
    live = [Collector(t.staff, cs, from_seq=0) for _ in range(2)]
    for f in live:
        assert f.wait_for(lambda f: f.progress)
    clients = [uid("m-") for _ in range(8)]

    def fill(i):
        for _ in range(per_thread):
            t.order(clients[i], 1, note="n" * note)

    ws = [threading.Thread(target=fill, args=(i,)) for i in range(8)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    last = tenant_seq(t)
    assert last == 8 * per_thread
    ch2 = channel_for(srv)
    replay = Collector(type(t.staff)(cs, ch2, t.staff_key.token), cs, from_seq=0)
    for f in live + [replay]:
        assert f.wait_for(lambda f: len(f.entries) >= last, timeout=60), (len(f.entries), f.error)
        assert f.error is None
        assert f.seqs() == list(range(1, last + 1))
    for f in live + [replay]:
        f.cancel()
    ch.close()
    ch2.close()
