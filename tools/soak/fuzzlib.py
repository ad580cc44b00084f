"""Structure-aware fuzzer of `credits serve` (SPEC §8: bad input of any kind
gets a clear gRPC/HTTP/2 error, never crashes the process and never touches
the ledger).

(a) Request level: for every method of every service in proto/credits/v1 and
    grpc.health.v1, a request is built from the message descriptors with our
    own protobuf wire encoder (so it can carry what the Python runtime
    refuses: invalid UTF-8, wrong wire types, unknown fields, overlong
    varints, out-of-range enums/int32s), sometimes byte-mutated afterwards
    (bit flips, truncation, insertion, random bytes), and sent over a grpcio
    channel with the staff key (sometimes the app, admin, a bogus or no key,
    idempotency-key metadata, gzip, a short deadline). Checked per input:
    the server is alive; the reply is a well-formed gRPC status (INTERNAL and
    UNKNOWN are reported as findings); an OK reply parses as the output type;
    after a non-OK reply of a mutating method the tenant's ledger is unchanged
    (GetTenant.last_seq before/after, with moves explained only by the
    server's own maintenance: hold/lot/coupon expiry) and nothing is stored
    under its idempotency key (GetOperation → NOT_FOUND); an OK reply to a
    request whose string fields hold U+0000 or invalid UTF-8 is a finding.
(b) Raw HTTP/2: a (mostly) valid preface and random/mutated frames — HEADERS
    with random HPACK, CONTINUATION, DATA, SETTINGS, WINDOW_UPDATE,
    RST_STREAM, PRIORITY, PING, GOAWAY, PUSH_PROMISE, unknown types, bad
    lengths and padding — on a fresh TCP connection; afterwards the server
    must be alive and answer Health/Check on a fresh connection.

Input i depends only on (seed, i) and the objects the setup created (their
server-assigned ids are picked by index), so `--seed S --only I` replays one
input. Entry point: run(...) -> summary dict (see tools/soak/fuzz).
"""

from __future__ import annotations

import json
import random
import socket
import struct
import time
from collections import defaultdict
from pathlib import Path

import grpc
from google.protobuf import descriptor as D
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2

import soaklib as L

INT64_MAX, INT64_MIN = (1 << 63) - 1, -(1 << 63)
INT32_MAX, INT32_MIN = (1 << 31) - 1, -(1 << 31)
UINT64_MAX = (1 << 64) - 1
KNOWN_CODES = {c for c in grpc.StatusCode}
# Read-only methods (by name prefix); everything else may write.
READ_PREFIXES = ("Get", "List", "Check", "Watch", "Verify")
# Entry types the server writes on its own (maintenance), without a request.
BACKGROUND_TYPES = {"ENTRY_TYPE_EXPIRY", "ENTRY_TYPE_RELEASE", "ENTRY_TYPE_COUPON_EXPIRY",
                    "ENTRY_TYPE_SESSION_FORFEIT", "ENTRY_TYPE_COUPON_ISSUE", "ENTRY_TYPE_REVENUE_ALLOCATION"}
AMBIGUOUS = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE,
             grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
CALL_TIMEOUT = 5.0  # a unary call unanswered for this long is a finding (no-reply)
# What grpcio says when its *own* timer ends a call: the server sent nothing,
# so the outcome is unknown (the service's rule covers statuses it sends; a
# client-side timeout is looked up by key). The server's own DEADLINE_EXCEEDED
# texts are "deadline exceeded" (transport) and "deadline passed before …".
CLIENT_DEADLINE_TEXT = "Deadline Exceeded"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


# ---------------------------------------------------------------- wire encoding


def varint(n: int) -> bytes:
    n &= UINT64_MAX
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint((number << 3) | wire)


def ld(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


class Input:
    """One generated request: method, body, how it is sent, and what it holds."""

    def __init__(self, i: int):
        self.i = i
        self.kind = "request"
        self.method = ""
        self.body = b""
        self.auth = "staff"
        self.metadata_key = False
        self.gzip = False
        self.timeout = CALL_TIMEOUT
        self.idempotency_key = ""
        self.fresh_key = False
        self.client_id = None
        self.nul = []          # fields whose string value holds U+0000
        self.bad_utf8 = []     # fields whose string value is not UTF-8
        self.mutations = []    # byte-level mutations applied after encoding
        self.notes = []
        self.frames = []       # h2: descriptions

    def repro(self) -> dict:
        d = {"input": self.i, "kind": self.kind}
        if self.kind == "request":
            d.update(method=self.method, auth=self.auth, idempotency_key_metadata=self.metadata_key, gzip=self.gzip,
                     timeout=self.timeout, body_len=len(self.body), body_hex=self.body[:2048].hex(),
                     nul_fields=self.nul, invalid_utf8_fields=self.bad_utf8, mutations=self.mutations)
        else:
            d.update(frames=self.frames[:40], bytes_len=len(self.body), bytes_hex=self.body[:2048].hex())
        return d


class Generator:
    """Builds request bodies from message descriptors."""

    def __init__(self, rng: random.Random, pools: dict, seed: int, i: int, gentle: bool = False):
        self.rng = rng
        self.pools = pools
        self.seed = seed
        self.i = i
        # Gentle: mostly valid values with a rare hostile one, so requests get past
        # validation into the ledger (and a lone U+0000 meets otherwise valid fields).
        self.gentle = gentle
        self.last_fresh = False

    # -------------------------------------------------- values

    def hostile_string(self, name: str) -> tuple[bytes, str]:
        r = self.rng
        base = self.pool_value(name) or "fz-client-1"
        # Gentle inputs: mostly U+0000 / invalid UTF-8 inside an otherwise valid id.
        choice = r.choice([1, 2, 3, 4, 16]) if self.gentle and r.random() < 0.6 else r.randrange(22)
        if choice == 0:
            return b"", ""
        if choice == 1:
            return (base + "\x00xyz").encode(), "nul"
        if choice == 2:
            return ("\x00" + base).encode(), "nul"
        if choice == 3:
            return base.encode() + b"\xff\xfe", "utf8"
        if choice == 4:
            return b"\xc0\x80" + base.encode(), "utf8"      # overlong NUL
        if choice == 5:
            return b"\xed\xa0\x80", "utf8"                    # a lone surrogate
        if choice == 6:
            return bytes(r.randrange(256) for _ in range(r.randint(1, 40))), "raw"
        if choice == 7:
            return ("x" * r.choice([128, 129, 200, 1000, 65536])).encode(), ""
        if choice == 8:
            return ("y" * r.choice([1 << 20, 3 << 20])).encode(), ""
        if choice == 9:
            return "client with spaces".encode(), ""
        if choice == 10:
            return "émoji-💳-ü".encode(), ""
        if choice == 11:
            return "' OR 1=1; DROP TABLE lots; --".encode(), ""
        if choice == 12:
            return "%s%n%x\\\n\r\t".encode(), ""
        if choice == 13:
            return "\u202e\u200b\ufeff".encode(), ""
        if choice == 14:
            return "../../etc/passwd".encode(), ""
        if choice == 15:
            return str(r.choice([0, -1, INT64_MAX, INT64_MIN])).encode(), ""
        if choice == 16:
            return (base + "\x00").encode(), "nul"
        if choice == 17:
            return b"\x80", "utf8"
        if choice == 18:
            return ("\x01\x7f" + base).encode(), ""
        if choice == 19:
            return base.upper().encode(), ""
        if choice == 20:
            return (base + " ").encode(), ""
        return ("fz-" + "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789-_.:") for _ in range(r.randint(1, 20)))
                ).encode(), ""

    def pool_value(self, name: str) -> str | None:
        pool = self.pools.get(name)
        if not pool:
            if name.endswith("_ids"):
                pool = self.pools.get(name[:-1])
            elif name in ("id",):
                pool = self.pools.get("any_id")
        if pool:
            return self.rng.choice(pool)
        return None

    def string_value(self, f: D.FieldDescriptor, inp: Input, path: str) -> bytes:
        r = self.rng
        self.last_fresh = False
        if f.name == "idempotency_key":
            x = r.random()
            if x < 0.75:
                self.last_fresh = True
                return f"fz-{self.seed}-{self.i}-{r.randrange(1 << 30)}".encode()
            if x < 0.85 and self.pools.get("idempotency_key"):
                return r.choice(self.pools["idempotency_key"]).encode()
        elif r.random() < (0.93 if self.gentle else 0.6):
            v = self.pool_value(f.name)
            if v is not None:
                return v.encode()
        if r.random() < (0.9 if self.gentle else 0.35):
            return ("fz-" + str(r.randrange(10))).encode()
        value, flavour = self.hostile_string(f.name)
        if flavour == "nul":
            inp.nul.append(path)
        elif flavour == "utf8":
            inp.bad_utf8.append(path)
        elif flavour == "raw":
            try:
                text = value.decode("utf-8")
                if "\x00" in text:
                    inp.nul.append(path)
            except UnicodeDecodeError:
                inp.bad_utf8.append(path)
        return value

    def int_value(self, f: D.FieldDescriptor) -> int:
        r = self.rng
        name = f.name
        if self.gentle and r.random() < 0.92:
            if name in ("page_size", "max_uses", "validity_days", "total_sessions"):
                return r.choice([0, 1, 2, 10])
            return r.randint(1, 500)
        if name.endswith("_minor") and r.random() < 0.5:
            return r.choice([1, 10, 100, 500, 1000, r.randint(1, 5000)])
        if name in ("page_size", "max_uses", "validity_days", "total_sessions") and r.random() < 0.5:
            return r.choice([0, 1, 2, 10, 1000, 1001])
        return r.choice([0, 0, 1, -1, 2, r.randint(-1000, 1000), INT32_MAX, INT32_MIN, INT32_MAX + 1,
                         1 << 53, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1, r.randrange(INT64_MIN, INT64_MAX)])

    def timestamp(self) -> bytes:
        r = self.rng
        now = int(time.time())
        choice = r.randrange(10) if not self.gentle or r.random() < 0.1 else 9
        if choice == 0:
            secs, nanos = 0, 0
        elif choice == 1:
            secs, nanos = now - r.randint(1, 10 ** 8), r.randrange(10 ** 9)
        elif choice == 2:
            secs, nanos = now + r.randint(86400, 10 ** 8), r.randrange(10 ** 9)
        elif choice == 3:
            secs, nanos = r.choice([INT64_MAX, INT64_MIN, 253402300800, -62135596801, 1 << 40]), 0
        elif choice == 4:
            secs, nanos = now + 30 * 86400, r.choice([-1, 10 ** 9, INT32_MAX, INT32_MIN])
        elif choice == 5:
            # Near future: expiries the server's maintenance acts on a few seconds later.
            secs, nanos = now + r.randint(1, 20), 0
        else:
            secs, nanos = now + r.randint(3600, 90 * 86400), 0
        out = b""
        if secs or r.random() < 0.2:
            out += tag(1, 0) + varint(secs)
        if nanos or r.random() < 0.2:
            out += tag(2, 0) + varint(nanos)
        return out

    def scalar(self, f: D.FieldDescriptor, inp: Input, path: str) -> tuple[int, bytes]:
        """(wire type, encoded value without tag)."""
        r = self.rng
        t = f.type
        if t == D.FieldDescriptor.TYPE_STRING:
            v = self.string_value(f, inp, path)
            return 2, varint(len(v)) + v
        if t == D.FieldDescriptor.TYPE_BYTES:
            v = bytes(r.randrange(256) for _ in range(r.randint(0, 64)))
            return 2, varint(len(v)) + v
        if t == D.FieldDescriptor.TYPE_BOOL:
            return 0, varint(r.choice([0, 1, 1, 2, 255, UINT64_MAX]))
        if t == D.FieldDescriptor.TYPE_ENUM:
            values = [v.number for v in f.enum_type.values]
            if self.gentle and r.random() < 0.95:
                return 0, varint(r.choice(values[1:] or values))
            return 0, varint(r.choice(values + values + [-1, 99, INT32_MAX, INT32_MIN, 1 << 40]))
        if t in (D.FieldDescriptor.TYPE_INT64, D.FieldDescriptor.TYPE_INT32, D.FieldDescriptor.TYPE_UINT64,
                 D.FieldDescriptor.TYPE_UINT32):
            return 0, varint(self.int_value(f))
        if t in (D.FieldDescriptor.TYPE_SINT64, D.FieldDescriptor.TYPE_SINT32):
            n = self.int_value(f)
            return 0, varint((n << 1) ^ (n >> 63))
        if t in (D.FieldDescriptor.TYPE_FIXED64, D.FieldDescriptor.TYPE_SFIXED64, D.FieldDescriptor.TYPE_DOUBLE):
            return 1, struct.pack("<Q", self.int_value(f) & UINT64_MAX)
        if t in (D.FieldDescriptor.TYPE_FIXED32, D.FieldDescriptor.TYPE_SFIXED32, D.FieldDescriptor.TYPE_FLOAT):
            return 5, struct.pack("<I", self.int_value(f) & 0xFFFFFFFF)
        raise ValueError(f"unhandled field type {t}")

    def wrong_wire(self, number: int) -> bytes:
        """The field number with a wire type or payload that does not fit."""
        r = self.rng
        choice = r.randrange(7)
        if choice == 0:
            return tag(number, 0) + varint(r.randrange(1 << 64))
        if choice == 1:
            return tag(number, 1) + bytes(r.randrange(256) for _ in range(8))
        if choice == 2:
            return tag(number, 5) + bytes(r.randrange(256) for _ in range(4))
        if choice == 3:
            p = bytes(r.randrange(256) for _ in range(r.randint(0, 20)))
            return tag(number, 2) + varint(len(p)) + p
        if choice == 4:
            return tag(number, 3) + tag(1, 0) + varint(7) + tag(number, 4)   # a group
        if choice == 5:
            return tag(number, r.choice([6, 7])) + bytes(r.randrange(256) for _ in range(r.randint(0, 9)))
        return tag(number, 2) + varint(r.choice([1 << 31, UINT64_MAX, 1 << 20]))  # length past the end

    def message(self, desc: D.Descriptor, inp: Input, depth: int = 0, path: str = "") -> bytes:
        r = self.rng
        if desc.full_name == "google.protobuf.Timestamp":
            return self.timestamp()
        out = bytearray()
        fields = list(desc.fields)
        r.shuffle(fields) if r.random() < 0.1 else None
        for f in fields:
            fpath = f"{path}{f.name}"
            if r.random() < (0.2 if depth == 0 else 0.35) * (0.3 if self.gentle else 1):
                continue  # unset
            if r.random() < (0.002 if self.gentle else 0.04):
                out += self.wrong_wire(f.number)
                inp.notes.append(f"wrong wire type: {fpath}")
                continue
            repeated = f.is_repeated
            count = r.choice([1, 1, 2, 3, 0, 50]) if repeated else (2 if r.random() < 0.03 else 1)
            if f.type == D.FieldDescriptor.TYPE_MESSAGE:
                if depth >= 4:
                    continue
                for _ in range(count):
                    out += ld(f.number, self.message(f.message_type, inp, depth + 1, fpath + "."))
                continue
            if repeated and f.type not in (D.FieldDescriptor.TYPE_STRING, D.FieldDescriptor.TYPE_BYTES) \
                    and r.random() < 0.5:
                packed = bytearray()
                wire = 0
                for _ in range(count):
                    wire, v = self.scalar(f, inp, fpath)
                    packed += v
                out += ld(f.number, bytes(packed))
                continue
            for _ in range(count):
                wire, v = self.scalar(f, inp, fpath)
                out += tag(f.number, wire) + v
                if f.name == "idempotency_key" and wire == 2 and depth == 0:
                    inp.idempotency_key = _ld_value(v)
                    inp.fresh_key = self.last_fresh
                if f.name == "client_id" and wire == 2 and depth == 0:
                    inp.client_id = _ld_value(v)
        if r.random() < (0.01 if self.gentle else 0.08):
            number = r.choice([99, 1000, 4095, 19000, 536870911])
            wire = r.choice([0, 1, 2, 5])
            payload = {0: varint(r.randrange(1 << 64)), 1: bytes(8), 2: varint(3) + b"abc", 5: bytes(4)}[wire]
            out += tag(number, wire) + payload
            inp.notes.append(f"unknown field {number}")
        if r.random() < 0.02:
            out += tag(0, 0) + varint(1)          # field number 0
            inp.notes.append("field 0")
        if r.random() < 0.02:
            out += bytes([0x08]) + b"\xff" * 10 + b"\x01"  # an overlong varint
            inp.notes.append("overlong varint")
        return bytes(out)

    def mutate_bytes(self, body: bytes, inp: Input) -> bytes:
        r = self.rng
        b = bytearray(body)
        for _ in range(r.randint(1, 3)):
            choice = r.randrange(6)
            if choice == 0 and b:
                pos = r.randrange(len(b))
                b[pos] ^= 1 << r.randrange(8)
                inp.mutations.append(f"bitflip@{pos}")
            elif choice == 1 and b:
                cut = r.randrange(len(b))
                del b[cut:]
                inp.mutations.append(f"truncate@{cut}")
            elif choice == 2:
                pos = r.randint(0, len(b))
                junk = bytes(r.randrange(256) for _ in range(r.randint(1, 16)))
                b[pos:pos] = junk
                inp.mutations.append(f"insert{len(junk)}@{pos}")
            elif choice == 3 and b:
                pos = r.randrange(len(b))
                b[pos] = r.choice([0x00, 0xFF, 0x7F, 0x80])
                inp.mutations.append(f"set@{pos}")
            elif choice == 4 and len(b) > 1:
                a = r.randrange(len(b))
                chunk = b[a:a + r.randint(1, 32)]
                b[a:a] = chunk
                inp.mutations.append(f"dup@{a}")
            else:
                b = bytearray(r.randrange(256) for _ in range(r.randint(0, 128)))
                inp.mutations.append("random")
        return bytes(b)


def _ld_value(v: bytes) -> bytes:
    """The payload of an encoded length-delimited value (length varint + payload)."""
    n, shift, pos = 0, 0, 0
    while pos < len(v):
        c = v[pos]
        n |= (c & 0x7F) << shift
        pos += 1
        if not c & 0x80:
            break
        shift += 7
    return v[pos:pos + n]


# ---------------------------------------------------------------- the fuzzer


def _record_refused(reply) -> bool:
    """A per-record reply (ImportLotsResponse) that lists record 0 as INVALID_ARGUMENT and applied nothing."""
    failures = getattr(reply, "failures", None)
    return (failures is not None and getattr(reply, "applied", 1) == 0
            and any(f.index == 0 and f.reason == "INVALID_ARGUMENT" for f in failures))


class Method:
    def __init__(self, service: D.ServiceDescriptor, m: D.MethodDescriptor, output_class):
        self.service = service.full_name
        self.name = m.name
        self.path = f"/{service.full_name}/{m.name}"
        self.input = m.input_type
        self.output_class = output_class
        self.server_streaming = m.server_streaming
        self.client_streaming = m.client_streaming
        self.mutating = not m.name.startswith(READ_PREFIXES) and service.full_name.startswith("credits.v1")


def all_methods(stubs) -> list[Method]:
    from google.protobuf import message_factory

    out = []
    files = [getattr(stubs, n).DESCRIPTOR for n in stubs.names] + [health_pb2.DESCRIPTOR]
    for fd in files:
        for service in fd.services_by_name.values():
            for m in service.methods:
                out.append(Method(service, m, message_factory.GetMessageClass(m.output_type)))
    return out


class Fuzzer:
    def __init__(self, binary: Path, workdir: Path, seed: int, h2_share: float = 0.15, log=print,
                 health_every: int = 25):
        self.stubs = L.load_stubs()
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.seed = seed
        self.h2_share = h2_share
        self.log = log
        self.health_every = health_every
        self.server = L.Server(self.binary, self.workdir, admin_token=L.new_token())
        self.methods = sorted(all_methods(self.stubs), key=lambda m: m.path)
        self.pools: dict[str, list[str]] = {}
        self.known_clients: set[str] = set()
        self.findings: dict[tuple, dict] = {}
        self.counts = defaultdict(int)
        # Idempotency keys of writes whose outcome is unknown (client-side timeout).
        self.unknown_keys: set[str] = set()
        self.codes = defaultdict(int)
        self.by_method = defaultdict(lambda: defaultdict(int))
        self.violations: list[dict] = []
        self.tenant = None
        self.channel = None
        self.call = None

    # -------------------------------------------------- setup

    def connect(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.channel = self.server.channel()
        self.call = L.RawCaller(self.channel)

    def setup(self) -> None:
        s = self.stubs
        self.server.start()
        self.connect()
        ch = self.channel
        self.tenant = L.create_tenant(s, ch, self.server.admin_token, f"fuzz-{self.seed}-{int(time.time())}")
        md = L.bearer(self.tenant.staff)
        C, P = s.credits, s.packages
        cr = s.credits_grpc.CreditServiceStub(ch)
        pk = s.packages_grpc.CreditPackageServiceStub(ch)
        cp = s.coupons_grpc.CouponServiceStub(ch)
        se = s.sessions_grpc.SessionPackageServiceStub(ch)
        clients = [f"fz-client-{n}" for n in range(6)]
        pools = defaultdict(list)
        pools["client_id"] = clients
        pools["center_id"] = ["c1", "c2"]
        pools["tenant_id"] = [self.tenant.tenant_id]
        # The checks use a key of their own that no fuzz input names (RevokeApiKey
        # inputs get decoy key ids only), so fuzzing cannot lock the checks out.
        A = s.admin
        admin = s.admin_grpc.AdminServiceStub(ch)
        amd = L.bearer(self.server.admin_token)
        self.checker_token = admin.CreateApiKey(A.CreateApiKeyRequest(
            tenant_id=self.tenant.tenant_id, role=A.ROLE_STAFF, label="fuzz checker"), metadata=amd, timeout=10).token
        pools["key_id"] = [admin.CreateApiKey(A.CreateApiKeyRequest(
            tenant_id=self.tenant.tenant_id, role=role, label="decoy"), metadata=amd, timeout=10).key.id
            for role in (A.ROLE_STAFF, A.ROLE_APP)]
        pools["currency"] = ["EUR", "USD"]
        pools["service_id"] = ["massage", "facial"]
        pools["service_category"] = ["massage", "classes"]
        pools["paths"] = ["name", "price_minor", "credits_minor", "active", "scope", "validity_days", "bogus"]
        n = 0

        def key():
            nonlocal n
            n += 1
            k = f"fz-setup-{self.seed}-{n}-{time.time_ns()}"
            pools["idempotency_key"].append(k)
            return k

        def attempt(fn, *a, **kw):
            try:
                return fn(*a, metadata=md, timeout=CALL_TIMEOUT, **kw)
            except grpc.RpcError as e:
                self.log(f"  setup call failed: {e.code().name} {e.details()}")
                return None

        pkg = attempt(pk.CreateCreditPackage, P.CreateCreditPackageRequest(name="Fuzz pack", credits_minor=1000,
                                                                           price_minor=900, idempotency_key=key()))
        if pkg:
            pools["package_id"].append(pkg.id)
        for c in clients:
            o = attempt(cr.CreateCreditOrder, C.CreateCreditOrderRequest(client_id=c, amount_minor=10 ** 9,
                                                                         center_id="c1", idempotency_key=key()))
            if o:
                pools["lot_id"].append(o.lot.id)
            sp = attempt(cr.SpendCredits, C.SpendCreditsRequest(client_id=c, amount_minor=100, reason=1,
                                                                center_id="c1", idempotency_key=key()))
            if sp:
                pools["spend_id"].append(sp.spend.id)
            for _ in range(2):
                h = attempt(cr.CreateHold, C.CreateHoldRequest(
                    client_id=c, amount_minor=50, center_id="c1", idempotency_key=key(),
                    expire_time=timestamp_pb2.Timestamp(seconds=int(time.time()) + 60 * 86400)))
                if h:
                    pools["hold_id"].append(h.hold.id)
            w = attempt(cr.CreateWriteOff, C.CreateWriteOffRequest(client_id=c, amount_minor=10, reason="fuzz",
                                                                   idempotency_key=key()))
            if w:
                pools["write_off_id"].append(w.write_off.id)
        CP = s.coupons
        cpn = attempt(cp.CreateCoupon, CP.CreateCouponRequest(name="Fuzz coupon", service_id="massage", value_minor=500,
                                                              max_uses=3, idempotency_key=key()))
        if cpn:
            pools["coupon_id"].append(cpn.id)
            for c in clients[:3]:
                cc = attempt(cp.IssueCustomerCredit, CP.IssueCustomerCreditRequest(client_id=c, coupon_id=cpn.id,
                                                                                   idempotency_key=key()))
                if cc:
                    for name in ("credit_id", "customer_credit_id"):
                        pools[name].append(cc.credit.id)
        S = s.sessions
        for c in clients[:3]:
            now = int(time.time())
            p = attempt(se.CreateClientPackage, S.CreateClientPackageRequest(
                client_id=c, name="Fuzz sessions", valid_from=timestamp_pb2.Timestamp(seconds=now - 60),
                valid_until=timestamp_pb2.Timestamp(seconds=now + 60 * 86400),
                lines=[S.NewSessionLine(service_id="massage", total_sessions=50)], idempotency_key=key()))
            if p:
                pools["client_package_id"].append(p.client_package.id)
            u = attempt(se.UsePackageCredit, S.UsePackageCreditRequest(payment_ref=f"pay-{c}", client_id=c,
                                                                       service_id="massage", idempotency_key=key()))
            if u:
                pools["redemption_id"].append(u.redemption.id)
                pools["payment_ref"].append(f"pay-{c}")
        pools["any_id"] = sorted({v for k, vs in pools.items() if k.endswith("_id") for v in vs})
        self.pools = {k: list(v) for k, v in pools.items()}
        self.known_clients.update(clients)
        self.log(f"fuzz setup: tenant {self.tenant.tenant_id}; pools "
                 + ", ".join(f"{k} {len(v)}" for k, v in sorted(self.pools.items())))

    # -------------------------------------------------- generation

    def generate(self, i: int) -> Input:
        rng = random.Random(f"{self.seed}:{i}")
        inp = Input(i)
        if rng.random() < self.h2_share:
            return self.generate_h2(rng, inp)
        deadline_probe = False
        x = rng.random()
        if x < 0.08:
            m, body = self.probe(rng, inp)
        elif x < 0.11:
            # A valid write with a grpc-timeout of a few ms: DEADLINE_EXCEEDED must mean not applied.
            m, body = self.probe(rng, inp, clean=True)
            deadline_probe = True
        else:
            m, body = rng.choice(self.methods), None
        inp.method = m.path
        gen = Generator(rng, self.pools, self.seed, i, gentle=rng.random() < 0.45)
        shape = rng.random()
        if body is not None:
            inp.body = body
        elif shape < 0.03:
            inp.body = b""
            inp.notes.append("empty body")
        elif shape < 0.06:
            inp.body = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
            inp.mutations.append("random body")
        else:
            inp.body = gen.message(m.input, inp)
            if rng.random() < (0.03 if gen.gentle else 0.25):
                inp.body = gen.mutate_bytes(inp.body, inp)
        x = rng.random()
        inp.auth = "staff" if x < 0.75 else "app" if x < 0.85 else "none" if x < 0.9 else "bogus" if x < 0.95 else "admin"
        if m.service == "credits.v1.AdminService" and rng.random() < 0.5:
            inp.auth = "admin"
        inp.metadata_key = rng.random() < 0.05
        inp.gzip = rng.random() < 0.05
        if m.mutating and rng.random() < 0.05:
            inp.timeout = rng.choice([0.0005, 0.001, 0.002, 0.005, 0.01, 0.05])
        if deadline_probe:
            inp.auth = "staff"
            inp.timeout = rng.choice([0.001, 0.002, 0.003, 0.005, 0.01, 0.02])
        if m.server_streaming:
            inp.timeout = 0.3
        inp._method = m
        return inp

    def probe(self, rng: random.Random, inp: Input, clean: bool = False):
        """A valid write with one string field replaced (appended: the last value wins)
        by the same value holding U+0000 or invalid UTF-8."""
        s, P = self.stubs, self.pools
        C = s.credits
        now = int(time.time())
        key = f"fz-probe-{self.seed}-{inp.i}"
        client = rng.choice(P["client_id"])
        templates = [
            ("CreditService", "CreateCreditOrder", C.CreateCreditOrderRequest(
                client_id=client, amount_minor=rng.randint(1, 500), center_id="c1", note="probe", idempotency_key=key)),
            ("CreditService", "SpendCredits", C.SpendCreditsRequest(
                client_id=client, amount_minor=rng.randint(1, 50), reason=1, center_id="c1", booking_ref="bk-probe",
                idempotency_key=key)),
            ("CreditService", "CreateHold", C.CreateHoldRequest(
                client_id=client, amount_minor=rng.randint(1, 50), center_id="c1", idempotency_key=key,
                expire_time=timestamp_pb2.Timestamp(seconds=now + 30 * 86400))),
            ("CreditService", "CreateWriteOff", C.CreateWriteOffRequest(
                client_id=client, amount_minor=1, reason="probe", idempotency_key=key)),
            ("CreditService", "AdjustBalance", C.AdjustBalanceRequest(
                client_id=client, amount_minor=rng.choice([5, -1]), reason="probe", center_id="c1", idempotency_key=key)),
            ("CreditService", "GetBalance", C.GetBalanceRequest(client_id=client)),
        ]
        if P.get("package_id"):
            templates.append(("CreditService", "PurchaseCreditPackage", C.PurchaseCreditPackageRequest(
                client_id=client, package_id=P["package_id"][0], center_id="c1", payment_ref="pay-probe",
                idempotency_key=key)))
        if P.get("coupon_id"):
            templates.append(("CouponService", "IssueCustomerCredit", s.coupons.IssueCustomerCreditRequest(
                client_id=client, coupon_id=P["coupon_id"][0], idempotency_key=key)))
        svc, name, msg = rng.choice(templates)
        m = next(x for x in self.methods if x.path == f"/credits.v1.{svc}/{name}")
        if clean:
            inp.idempotency_key = key.encode() if "idempotency_key" in msg.DESCRIPTOR.fields_by_name else b""
            inp.fresh_key = True
            inp.client_id = client.encode()
            inp.notes.append(f"deadline probe {name}")
            return m, msg.SerializeToString()
        strings = [f for f in msg.DESCRIPTOR.fields if f.type == D.FieldDescriptor.TYPE_STRING and getattr(msg, f.name)]
        f = rng.choice([x for x in strings if x.name == "client_id"] * 3 + strings)
        value = getattr(msg, f.name).encode()
        kind = rng.randrange(5)
        bad = {0: value + b"\x00xyz", 1: value + b"\x00", 2: b"\x00" + value, 3: value + b"\xff", 4: value + b"\xc0\x80"}[kind]
        (inp.nul if kind <= 2 else inp.bad_utf8).append(f.name)
        if f.name == "client_id":
            inp.client_id = bad
        if f.name == "idempotency_key":
            inp.idempotency_key = bad
        else:
            inp.idempotency_key = key.encode()
        inp.fresh_key = True
        inp.notes.append(f"probe {name}.{f.name}")
        return m, msg.SerializeToString() + ld(f.number, bad)

    def generate_h2(self, rng: random.Random, inp: Input) -> Input:
        import hpack

        inp.kind = "h2"
        frames = []

        def frame(ftype, flags, sid, payload, length=None, note=""):
            n = len(payload) if length is None else length
            frames.append(struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", sid & 0xFFFFFFFF) + payload)
            inp.frames.append(f"type={ftype} flags={flags:#x} sid={sid} len={n}/{len(payload)} {note}".strip())

        preface = H2_PREFACE
        if rng.random() < 0.04:
            preface = bytearray(preface)
            preface[rng.randrange(len(preface))] ^= 1 << rng.randrange(8)
            preface = bytes(preface)
            inp.frames.append("mutated preface")
        out = bytearray(preface)
        # The client SETTINGS (usually valid).
        settings = b""
        for _ in range(rng.randint(0, 4)):
            ident = rng.choice([1, 2, 3, 4, 5, 6, 8, 0, 7, 0x99])
            value = rng.choice([0, 1, 100, 16384, 65535, 1 << 24, INT32_MAX, INT32_MAX + 1, 0xFFFFFFFF])
            settings += struct.pack(">HI", ident, value)
        frame(4, 0, 0, settings, note="client settings")
        encoder = hpack.Encoder()
        methods = [m for m in self.methods if not m.server_streaming]
        sid = 1
        for _ in range(rng.randint(1, 12)):
            kind = rng.randrange(14)
            stream = rng.choice([sid, sid, sid, 0, sid + 2, 2, INT32_MAX, sid - 2 if sid > 2 else 3])
            if kind <= 3:  # HEADERS (+ DATA)
                m = rng.choice(methods)
                auth = "none"
                if not m.mutating and rng.random() < 0.7:
                    auth = "staff"
                headers = [(":method", rng.choice(["POST", "POST", "GET", "PUT", ""])),
                           (":scheme", rng.choice(["http", "https", "ftp"])),
                           (":path", rng.choice([m.path, m.path, "/", "", "*", m.path + "x", "/" + "a" * 5000])),
                           (":authority", "127.0.0.1"),
                           ("content-type", rng.choice(["application/grpc", "application/grpc+proto",
                                                        "application/json", "text/plain", ""])),
                           ("te", rng.choice(["trailers", "trailers", "gzip", ""]))]
                if auth == "staff":
                    headers.append(("authorization", f"Bearer {self.tenant.staff}"))
                if rng.random() < 0.3:
                    headers.append(("grpc-timeout", rng.choice(["1S", "100m", "0n", "99999999H", "-1S", "abc",
                                                                "1", "123456789S"])))
                if rng.random() < 0.2:
                    headers.append(("grpc-encoding", rng.choice(["gzip", "deflate", "identity", "br", "x"])))
                if rng.random() < 0.15:
                    headers.append((rng.choice(["x-junk", "Upper-Case", "connection", ":bogus", "x\x00y"]),
                                    rng.choice(["v", "a" * 20000, "\r\n", "\x00"])))
                rng.shuffle(headers) if rng.random() < 0.1 else None
                try:
                    block = encoder.encode(headers)
                except Exception:  # noqa: BLE001 - hpack refuses some names; send junk instead
                    block = bytes(rng.randrange(256) for _ in range(20))
                if rng.random() < 0.15:
                    block = bytearray(block)
                    for _ in range(rng.randint(1, 4)):
                        if block:
                            block[rng.randrange(len(block))] = rng.randrange(256)
                    block = bytes(block)
                if rng.random() < 0.05:
                    block = rng.choice([b"\x3f\xe1\xff\xff\x0f", b"\xff\xff\xff\xff\x7f", b"\x7e", b"\x00\x81\xff"])
                flags = 0x4  # END_HEADERS
                split = rng.random() < 0.15 and len(block) > 2
                first = block
                if split:
                    flags = 0
                    cut = rng.randrange(1, len(block))
                    first, rest = block[:cut], block[cut:]
                if rng.random() < 0.1:
                    flags |= 0x8  # PADDED
                    pad = rng.randint(0, 300)
                    first = bytes([pad & 0xFF]) + first + bytes(rng.randint(0, 10))
                if rng.random() < 0.1:
                    flags |= 0x20  # PRIORITY
                    first = struct.pack(">IB", rng.choice([stream, 0, 3]), rng.randrange(256)) + first
                end_stream = rng.random() < 0.15
                if end_stream:
                    flags |= 0x1
                frame(1, flags, stream, first, note=f"HEADERS {m.path}")
                if split:
                    frame(9, 0x4 if rng.random() < 0.8 else 0, rng.choice([stream, stream, stream + 2]), rest,
                          note="CONTINUATION")
                if not end_stream and rng.random() < 0.85:
                    gen = Generator(rng, self.pools, self.seed, inp.i)
                    msg = gen.message(m.input, Input(inp.i))
                    if rng.random() < 0.2:
                        msg = gen.mutate_bytes(msg, Input(inp.i))
                    prefix_len = len(msg) if rng.random() < 0.85 else rng.choice([0, len(msg) + 5, 0xFFFFFFFF, 1 << 24])
                    compressed = 0 if rng.random() < 0.9 else rng.choice([1, 2, 255])
                    data = bytes([compressed]) + struct.pack(">I", prefix_len) + msg
                    dflags = 0x1 if rng.random() < 0.85 else 0
                    if rng.random() < 0.08:
                        dflags |= 0x8
                        data = bytes([rng.choice([0, 5, 255])]) + data
                    frame(0, dflags, stream, data, note="DATA grpc message")
                if stream == sid:
                    sid += 2
            elif kind == 4:
                frame(0, rng.choice([0, 1, 8, 9]), stream, bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))),
                      note="DATA random")
            elif kind == 5:
                payload = b"".join(struct.pack(">HI", rng.randrange(10), rng.randrange(1 << 32))
                                   for _ in range(rng.randint(0, 3)))
                if rng.random() < 0.3:
                    payload += b"\x00\x01"
                frame(4, rng.choice([0, 0, 1]), rng.choice([0, 0, stream]), payload, note="SETTINGS")
            elif kind == 6:
                inc = rng.choice([0, 1, 65535, INT32_MAX, 0xFFFFFFFF])
                payload = struct.pack(">I", inc) if rng.random() < 0.9 else b"\x00\x00\x01"
                frame(8, 0, rng.choice([0, stream]), payload, note="WINDOW_UPDATE")
            elif kind == 7:
                payload = struct.pack(">I", rng.randrange(16)) if rng.random() < 0.9 else b"\x00" * rng.randint(0, 8)
                frame(3, 0, stream, payload, note="RST_STREAM")
            elif kind == 8:
                payload = struct.pack(">IB", rng.choice([stream, 0, 1, 0x80000000 | stream]), rng.randrange(256))
                if rng.random() < 0.1:
                    payload = payload[:3]
                frame(2, 0, stream, payload, note="PRIORITY")
            elif kind == 9:
                payload = bytes(rng.randrange(256) for _ in range(rng.choice([8, 8, 8, 0, 7, 9, 64])))
                frame(6, rng.choice([0, 0, 1]), rng.choice([0, 0, stream]), payload, note="PING")
            elif kind == 10:
                payload = struct.pack(">II", rng.randrange(1 << 31), rng.randrange(16)) + b"fuzz" * rng.randint(0, 3)
                frame(7, 0, rng.choice([0, 0, stream]), payload, note="GOAWAY")
            elif kind == 11:
                frame(5, 0x4, stream, struct.pack(">I", sid + 1) + encoder.encode([(":method", "GET")]),
                      note="PUSH_PROMISE")
            elif kind == 12:
                frame(rng.randrange(10, 256), rng.randrange(256), stream,
                      bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))), note="unknown type")
            else:
                # A length that lies about the payload, or one past SETTINGS_MAX_FRAME_SIZE.
                ftype = rng.randrange(10)
                payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 30)))
                length = rng.choice([len(payload) + rng.randint(1, 50), max(0, len(payload) - 1), 16385, 0xFFFFFF])
                frame(ftype, rng.randrange(256), stream, payload, length=length, note="bad length")
        for f in frames:
            out += f
        inp.body = bytes(out)
        inp.split = rng.random() < 0.2
        inp.linger_reset = rng.random() < 0.2
        return inp

    # -------------------------------------------------- execution

    def metadata(self, inp: Input) -> list:
        md = []
        if inp.auth == "staff":
            md = L.bearer(self.tenant.staff)
        elif inp.auth == "app":
            md = L.bearer(self.tenant.app)
        elif inp.auth == "admin":
            md = L.bearer(self.server.admin_token)
        elif inp.auth == "bogus":
            md = [("authorization", "Bearer " + self.tenant.staff[:-2] + "zz")]
        if inp.metadata_key:
            md.append(("idempotency-key", f"fz-md-{self.seed}-{inp.i}"))
            inp.fresh_key = True
            inp.idempotency_key = f"fz-md-{self.seed}-{inp.i}".encode()
        return md

    def last_seq(self) -> int:
        t = self.stubs.admin_grpc.AdminServiceStub(self.channel).GetTenant(
            self.stubs.admin.GetTenantRequest(), metadata=L.bearer(self.checker_token), timeout=CALL_TIMEOUT)
        return t.last_seq

    def finding(self, category: str, inp: Input, detail: str, signature: str = "") -> None:
        key = (category, inp.method if inp.kind == "request" else "h2", signature)
        self.counts[f"finding:{category}"] += 1
        f = self.findings.get(key)
        if f is None:
            self.findings[key] = {"category": category, "method": key[1], "signature": signature, "count": 1,
                                  "detail": detail[:1000], "reproducer": inp.repro(), "seed": self.seed}
            self.log(f"  FINDING {category} {key[1]} {signature}: {detail[:300]} (input {inp.i})")
        else:
            f["count"] += 1

    def run_request(self, inp: Input) -> None:
        m: Method = inp._method
        md = self.metadata(inp)
        check_ledger = m.mutating and inp.auth in ("staff", "app")
        before = None
        if check_ledger:
            before = self.last_seq()
        compression = grpc.Compression.Gzip if inp.gzip else None
        code, reply, details, err = grpc.StatusCode.OK, None, "", None
        try:
            if m.server_streaming:
                stream = self.channel.unary_stream(m.path, request_serializer=None, response_deserializer=None)
                it = stream(inp.body, metadata=md, timeout=inp.timeout, compression=compression)
                reply = next(iter(it), None)
                it.cancel()
            else:
                reply = self.call(m.path, inp.body, metadata=md, timeout=inp.timeout, compression=compression)
        except grpc.RpcError as e:
            code, details, err = e.code(), e.details() or "", e
        except StopIteration:
            pass
        self.codes[code.name] += 1
        self.by_method[m.path][code.name] += 1
        if m.server_streaming and code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            return  # a Watch stream that we stopped
        if code not in KNOWN_CODES:
            self.finding("bad-status", inp, f"status {code}")
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            self.finding(f"status-{code.name}", inp, details, signature=details[:80])
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and inp.timeout >= CALL_TIMEOUT:
            self.finding("no-reply", inp, f"no answer within {inp.timeout:g} s ({details}); body {len(inp.body)} bytes")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata size exceeds" in details:
            # grpcio refused the server's reply: its headers/trailers exceed the client's limit.
            self.finding("oversized-reply-metadata", inp, f"{details[:200]}; body {len(inp.body)} bytes")
        if err is not None:
            reason = L.error_reason(err)
            if reason == "?malformed-status-details":
                self.finding("malformed-status-details", inp, details)
        if code == grpc.StatusCode.OK and reply is not None:
            try:
                parsed = m.output_class.FromString(reply)
            except Exception as e:  # noqa: BLE001
                self.finding("unparseable-reply", inp, f"{type(e).__name__}: {e}")
                parsed = None
            if parsed is not None:
                self.learn_clients(parsed)
                self.check_ok_reply(inp, m, parsed)
        if check_ledger and code != grpc.StatusCode.OK:
            self.check_unchanged(inp, m, code, details, before)

    def learn_clients(self, msg) -> None:
        for fd, value in msg.ListFields():
            if fd.type == D.FieldDescriptor.TYPE_MESSAGE:
                for v in (value if fd.is_repeated else [value]):
                    self.learn_clients(v)
            elif fd.name == "client_id" and value:
                self.known_clients.add(value)

    def check_ok_reply(self, inp: Input, m: Method, parsed) -> None:
        if inp.mutations:
            return  # the plan no longer says what the bytes hold
        if m.client_streaming and (inp.nul or inp.bad_utf8) and _record_refused(parsed):
            return  # a per-record answer (ImportLots): the one record is listed as failed, nothing applied
        if inp.nul:
            sent = inp.client_id.decode("utf-8", "replace") if inp.client_id is not None else None
            got = _first_field(parsed, "client_id")
            detail = f"OK for a request with U+0000 in {inp.nul}"
            if sent is not None and got is not None and "\x00" in sent and got != sent:
                self.finding("nul-truncated-id", inp, f"client_id {sent!r} was answered as client {got!r}",
                             signature=inp.method)
            self.finding("nul-accepted", inp, detail)
        if inp.bad_utf8:
            self.finding("invalid-utf8-accepted", inp, f"OK for a request with invalid UTF-8 in {inp.bad_utf8}")

    def check_unchanged(self, inp: Input, m: Method, code, details: str, before: int) -> None:
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and details == CLIENT_DEADLINE_TEXT:
            # Not a reply: the outcome is unknown, not "not applied". Its write
            # may still land: let it, and excuse its entries in later checks.
            self.counts["client_deadline_unknown"] += 1
            if inp.idempotency_key:
                self.unknown_keys.add(inp.idempotency_key.decode("utf-8", "replace"))
            time.sleep(0.3)
            return
        self.counts["non_ok_mutating"] += 1
        if code in AMBIGUOUS:
            time.sleep(0.3)  # let a write still in the server's queue land before looking
        after = self.last_seq()
        stored = None
        if inp.fresh_key and inp.idempotency_key and not inp.mutations:
            try:
                op = self.stubs.credits_grpc.CreditServiceStub(self.channel).GetOperation(
                    self.stubs.credits.GetOperationRequest(idempotency_key=inp.idempotency_key.decode("utf-8", "replace")),
                    metadata=L.bearer(self.checker_token), timeout=CALL_TIMEOUT)
                stored = op
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND and e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    self.finding("getoperation-error", inp, f"{e.code().name} {e.details()}")
        problems = []
        if stored is not None:
            problems.append(f"GetOperation finds {stored.operation} {stored.result_id} at seq {stored.seq}")
        if after != before:
            unexplained = self.explain(before, after, inp)
            if unexplained:
                problems.append(f"the ledger moved {before} → {after}: {unexplained}")
            else:
                self.counts["background_moves"] += 1
        if problems:
            self.violation(inp, code, details, f"answered {code.name} ({details[:120]}) but " + "; ".join(problems))

    def violation(self, inp: Input, code, details: str, text: str) -> None:
        self.counts["ledger_changed_after_non_ok"] += 1
        self.violations.append({"input": inp.i, "method": inp.method, "code": code.name, "text": text})
        self.finding("ledger-changed-after-non-OK", inp, text, signature=f"{code.name} ({details[:40]})")

    def explain(self, before: int, after: int, inp: Input) -> str:
        """'' if every entry in (before, after] is the server's own maintenance; else what is not."""
        C = self.stubs.credits
        enum = self.stubs.common.EntryType
        stub = self.stubs.credits_grpc.CreditServiceStub(self.channel)
        found = {}
        # The request's own client first (and its NUL-truncated form), then the setup's, then the rest.
        first = []
        if inp.client_id:
            text = inp.client_id.decode("utf-8", "replace")
            first = [text, text.split("\x00")[0]]
        first += self.pools.get("client_id", [])
        order = list(dict.fromkeys(first + sorted(self.known_clients)))[:3000]
        for client in order:
            if len(found) >= after - before:
                break
            try:
                page = stub.ListLedgerEntries(C.ListLedgerEntriesRequest(client_id=client, page_size=50),
                                              metadata=L.bearer(self.checker_token), timeout=CALL_TIMEOUT)
            except grpc.RpcError:
                continue
            for e in page.entries:
                if before < e.seq <= after:
                    found[e.seq] = e
        bad = [f"seq {e.seq} {enum.Name(e.type)} client {e.client_id!r} key {e.idempotency_key!r}"
               for e in found.values()
               if (e.idempotency_key or enum.Name(e.type) not in BACKGROUND_TYPES)
               and e.idempotency_key not in self.unknown_keys]
        missing = (after - before) - len(found)
        if missing > 0:
            bad.append(f"{missing} entries of clients the fuzzer does not know")
        return "; ".join(bad)

    def run_h2(self, inp: Input) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=2)
        except OSError as e:
            self.finding("h2-connect-failed", inp, str(e))
            return
        closed = False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                if getattr(inp, "split", False):
                    for a in range(0, len(inp.body), 7):
                        sock.sendall(inp.body[a:a + 7])
                else:
                    sock.sendall(inp.body)
            except OSError:
                closed = True
            sock.settimeout(0.03)
            deadline = time.monotonic() + 0.15
            while not closed and time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                    if not data:
                        closed = True
                except socket.timeout:
                    break
                except OSError:
                    closed = True
        finally:
            if getattr(inp, "linger_reset", False):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        self.counts["h2_closed_by_server" if closed else "h2_left_open"] += 1

    def alive_and_serving(self, inp: Input, health: bool) -> bool:
        if not self.server.alive():
            self.finding("crash", inp, f"server exited with {self.server.proc.returncode}\n{self.server.stderr_tail(20)}")
            return False
        if health and not L.health_check(self.server.port, timeout=5):
            if not self.server.alive():
                self.finding("crash", inp, f"server exited with {self.server.proc.returncode}")
            else:
                self.finding("not-serving", inp, "Health/Check failed on a fresh connection")
            return False
        return True

    def restart(self) -> None:
        self.counts["restarts"] += 1
        if self.server.alive():
            self.server.kill9()
        self.server.start()
        self.connect()

    def run(self, inputs: int, only: int | None = None, time_limit: float | None = None, progress_every: int = 5000) -> dict:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        t0 = time.monotonic()
        self.log(f"fuzz: seed {self.seed}, {inputs} inputs, binary {self.binary}, workdir {self.workdir}")
        self.setup()
        done = 0
        rng_ids = [only] if only is not None else range(inputs)
        try:
            for i in rng_ids:
                if time_limit is not None and time.monotonic() - t0 > time_limit:
                    self.log(f"fuzz: time limit reached after {done} inputs")
                    break
                inp = self.generate(i)
                self.counts[f"kind:{inp.kind}"] += 1
                try:
                    if inp.kind == "h2":
                        self.run_h2(inp)
                    else:
                        self.run_request(inp)
                except grpc.RpcError as e:
                    # A snapshot call (GetTenant, GetOperation) failed: the server may be down.
                    self.finding("check-call-failed", inp, f"{e.code().name} {e.details()}")
                done += 1
                health = inp.kind == "h2" or done % self.health_every == 0
                if not self.alive_and_serving(inp, health):
                    self.restart()
                if progress_every and done % progress_every == 0:
                    rate = done / (time.monotonic() - t0)
                    self.log(f"  {done} inputs, {rate:.0f}/s, findings {sum(f['count'] for f in self.findings.values())}")
        finally:
            rc = self.server.terminate()
            if self.channel is not None:
                self.channel.close()
        vrc, vout = L.verify_db(self.binary, self.server.db)
        seconds = time.monotonic() - t0
        by_cat = defaultdict(int)
        for f in self.findings.values():
            by_cat[f["category"]] += f["count"]
        return {
            "started": started, "seconds": round(seconds, 1), "seed": self.seed, "binary": str(self.binary),
            "db": str(self.server.db), "inputs": done, "rate_per_s": round(done / max(seconds, 1e-9), 1),
            "request_inputs": self.counts["kind:request"], "h2_inputs": self.counts["kind:h2"],
            "codes": dict(sorted(self.codes.items())),
            "non_ok_mutating_checked": self.counts["non_ok_mutating"],
            "ledger_changed_after_non_ok": self.counts["ledger_changed_after_non_ok"],
            "background_moves_explained": self.counts["background_moves"],
            "client_deadline_unknown": self.counts["client_deadline_unknown"],
            "crashes": by_cat.get("crash", 0), "not_serving": by_cat.get("not-serving", 0),
            "restarts": self.counts["restarts"],
            "h2_closed_by_server": self.counts["h2_closed_by_server"], "h2_left_open": self.counts["h2_left_open"],
            "sigterm_exit": rc, "verify_rc": vrc, "verify_output": vout[-500:],
            "findings_by_category": dict(sorted(by_cat.items())),
            "findings": sorted(self.findings.values(), key=lambda f: (f["category"], f["method"])),
            "violations": self.violations[:100],
            "by_method": {k: dict(v) for k, v in sorted(self.by_method.items())},
        }


def _first_field(msg, name: str):
    for fd, value in msg.ListFields():
        if fd.name == name and fd.type == D.FieldDescriptor.TYPE_STRING:
            return value
        if fd.type == D.FieldDescriptor.TYPE_MESSAGE:
            for v in (value if fd.is_repeated else [value]):
                got = _first_field(v, name)
                if got is not None:
                    return got
    return None


def format_summary(s: dict) -> str:
    lines = [
        f"fuzz summary (seed {s['seed']}, {s['seconds']} s)",
        f"  inputs                 {s['inputs']} ({s['request_inputs']} requests, {s['h2_inputs']} raw HTTP/2), "
        f"{s['rate_per_s']}/s",
        f"  status codes           " + ", ".join(f"{k} {v}" for k, v in s["codes"].items()),
        f"  non-OK mutating calls  {s['non_ok_mutating_checked']} checked; ledger changed after non-OK: "
        f"{s['ledger_changed_after_non_ok']} (maintenance moves explained: {s['background_moves_explained']}); "
        f"client-side timeouts (outcome unknown, not checked): {s['client_deadline_unknown']}",
        f"  crashes / not serving  {s['crashes']} / {s['not_serving']} (restarts {s['restarts']})",
        f"  raw HTTP/2             server closed {s['h2_closed_by_server']}, left open {s['h2_left_open']}",
        f"  SIGTERM exit           {s['sigterm_exit']}; credits verify exit {s['verify_rc']}",
        "  findings by category:  " + (", ".join(f"{k} {v}" for k, v in s["findings_by_category"].items()) or "none"),
    ]
    for f in s["findings"][:40]:
        r = f["reproducer"]
        lines.append(f"    [{f['category']}] x{f['count']} {f['method']} {f['signature'][:60]}: {f['detail'][:200]}")
        lines.append(f"        reproduce: --seed {f['seed']} --only {r['input']}")
    return "\n".join(lines)


def run(inputs: int, binary: Path, workdir: Path, seed: int, only: int | None = None, h2_share: float = 0.15,
        time_limit: float | None = None, json_path: Path | None = None, log=print) -> dict:
    fz = Fuzzer(binary, workdir, seed, h2_share=h2_share, log=log)
    s = fz.run(inputs, only=only, time_limit=time_limit)
    if json_path:
        Path(json_path).write_text(json.dumps(s, indent=1, default=str))
    return s
