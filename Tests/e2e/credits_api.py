"""Helpers for the credits.v1 end-to-end tests: authenticated stubs, tenants,
error-detail decoding and the `credits` CLI."""

from __future__ import annotations

import subprocess
import time
import types
import uuid

import grpc
from google.protobuf import timestamp_pb2
from grpc_status import rpc_status

from conftest import ADMIN_TOKEN, credits_binary, credits_env, open_channel

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS

DOMAIN = "credits.v1"
TIMEOUT = 10.0
# The server requires center_id on every money movement (purchase, order, adjustment, spend, hold).
DEFAULT_CENTER = "c1"


def uid(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def ts(seconds_from_now: float) -> timestamp_pb2.Timestamp:
    """A timestamp relative to now; whole seconds unless the offset is fractional."""
    t = time.time() + seconds_from_now
    if float(seconds_from_now).is_integer():
        return timestamp_pb2.Timestamp(seconds=int(t))
    return timestamp_pb2.Timestamp(seconds=int(t), nanos=int((t % 1) * 1e9) // 1000 * 1000)


class Bound:
    """A stub whose methods add fixed metadata (authorization …) and a default timeout."""

    def __init__(self, stub, metadata):
        self._stub = stub
        self._metadata = list(metadata)

    def __getattr__(self, name):
        method = getattr(self._stub, name)

        def call(request, metadata=(), timeout=TIMEOUT, **kw):
            return method(request, metadata=self._metadata + list(metadata), timeout=timeout, **kw)

        def with_call(request, metadata=(), timeout=TIMEOUT, **kw):
            return method.with_call(request, metadata=self._metadata + list(metadata), timeout=timeout, **kw)

        def future(request, metadata=(), timeout=TIMEOUT, **kw):
            return method.future(request, metadata=self._metadata + list(metadata), timeout=timeout, **kw)

        call.with_call = with_call
        call.future = future
        return call


class Actor:
    """Everything one bearer token (optionally acting on behalf of a tenant) can call."""

    def __init__(self, cs, channel, token: str | None, on_behalf_of: str | None = None, extra=()):
        md = []
        if token is not None:
            md.append(("authorization", f"Bearer {token}"))
        if on_behalf_of is not None:
            md.append(("x-on-behalf-of", on_behalf_of))
        md.extend(extra)
        self.token = token
        self.credit = Bound(cs.credits_grpc.CreditServiceStub(channel), md)
        self.packages = Bound(cs.packages_grpc.CreditPackageServiceStub(channel), md)
        self.admin = Bound(cs.admin_grpc.AdminServiceStub(channel), md)
        self.feed = Bound(cs.feed_grpc.LedgerFeedServiceStub(channel), md)
        self.metadata = md


class Tenant:
    """A fresh tenant with a staff and an app key."""

    def __init__(self, cs, channel, admin: Actor, tenant_id: str | None = None, currency: str = "EUR",
                 allow_directory: bool = False):
        self.cs = cs
        self.channel = channel
        self.id = tenant_id or uid("t-")
        self.record = admin.admin.CreateTenant(cs.admin.CreateTenantRequest(
            tenant_id=self.id, name=f"Gym {self.id}", currency=currency, allow_directory=allow_directory))
        self.staff_key = admin.admin.CreateApiKey(cs.admin.CreateApiKeyRequest(
            tenant_id=self.id, role=cs.admin.ROLE_STAFF, label="staff"))
        self.app_key = admin.admin.CreateApiKey(cs.admin.CreateApiKeyRequest(
            tenant_id=self.id, role=cs.admin.ROLE_APP, label="app"))
        self.staff = Actor(cs, channel, self.staff_key.token)
        self.app = Actor(cs, channel, self.app_key.token)

    # Convenience writes as staff (each with a fresh idempotency key).

    def order(self, client_id: str, amount: int, **kw):
        kw.setdefault("idempotency_key", uid("k-"))
        kw.setdefault("center_id", DEFAULT_CENTER)
        return self.staff.credit.CreateCreditOrder(self.cs.credits.CreateCreditOrderRequest(
            client_id=client_id, amount_minor=amount, **kw))

    def spend(self, client_id: str, amount: int, actor: Actor | None = None, **kw):
        kw.setdefault("idempotency_key", uid("k-"))
        kw.setdefault("reason", self.cs.credits.SPEND_REASON_SERVICE)
        kw.setdefault("center_id", DEFAULT_CENTER)
        return (actor or self.staff).credit.SpendCredits(self.cs.credits.SpendCreditsRequest(
            client_id=client_id, amount_minor=amount, **kw))

    def hold(self, client_id: str, amount: int, **kw):
        kw.setdefault("idempotency_key", uid("k-"))
        kw.setdefault("center_id", DEFAULT_CENTER)
        return self.staff.credit.CreateHold(self.cs.credits.CreateHoldRequest(
            client_id=client_id, amount_minor=amount, **kw))

    def package(self, credits: int = 1000, price: int = 900, **kw):
        return self.staff.packages.CreateCreditPackage(self.cs.packages.CreateCreditPackageRequest(
            name=kw.pop("name", "Ten visits"), credits_minor=credits, price_minor=price, **kw))

    def balance(self, client_id: str, details: bool = False):
        return self.staff.credit.GetBalance(self.cs.credits.GetBalanceRequest(
            client_id=client_id, include_details=details))

    def summary(self, client_id: str):
        s = self.balance(client_id).summary
        return (s.total_minor, s.available_minor, s.held_minor)

    def entries(self, client_id: str, **kw):
        return all_entries(self.cs, self.staff, client_id, **kw)


def all_entries(cs, actor: Actor, client_id: str, **kw):
    """All ledger entries of a client (following page tokens)."""
    out, token = [], ""
    for _ in range(1000):
        resp = actor.credit.ListLedgerEntries(cs.credits.ListLedgerEntriesRequest(
            client_id=client_id, page_token=token, **kw))
        out.extend(resp.entries)
        token = resp.next_page_token
        if not token:
            return out
    raise AssertionError("ListLedgerEntries never ended")


def admin_actor(cs, channel) -> Actor:
    return Actor(cs, channel, ADMIN_TOKEN)


def operation_response(op, cls):
    """The response an Operation (GetOperation) holds: a google.protobuf.Any
    of type `type.googleapis.com/credits.v1.<Message>`, unpacked as `cls`."""
    assert op.HasField("response"), f"operation {op.operation} holds no response"
    assert op.response.type_url == "type.googleapis.com/" + cls.DESCRIPTOR.full_name, op.response.type_url
    out = cls()
    assert op.response.Unpack(out)
    return out


def rpc_error(fn, *args, **kw) -> grpc.RpcError:
    try:
        result = fn(*args, **kw)
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"expected an error, got OK: {result}")


class Failure(types.SimpleNamespace):
    """A decoded error: code, details (message), info (ErrorInfo or None), bad_request (or None)."""


def decode(cs, err: grpc.RpcError) -> Failure:
    info = bad = None
    status = rpc_status.from_call(err)
    if status is not None:
        for detail in status.details:
            if detail.Is(cs.error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = cs.error_details_pb2.ErrorInfo()
                detail.Unpack(info)
            elif detail.Is(cs.error_details_pb2.BadRequest.DESCRIPTOR):
                bad = cs.error_details_pb2.BadRequest()
                detail.Unpack(bad)
    if info is not None and hasattr(cs, "errors"):
        # Whatever the test expects: every reason the server sends is a value of
        # credits.v1.ErrorReason (errors.proto), never its zero value.
        assert info.reason in cs.errors.ErrorReason.keys() and info.reason != "ERROR_REASON_UNSPECIFIED", \
            f"reason {info.reason!r} is not a credits.v1.ErrorReason value"
    return Failure(code=err.code(), details=err.details() or "", info=info, bad_request=bad, status=status)


def expect(cs, code: grpc.StatusCode, fn, *args, error_reason: str | None = None, fields=None, **kw) -> Failure:
    """Calls fn(*args, **kw), asserts it fails with `code` (and ErrorInfo reason `error_reason`, BadRequest `fields`)."""
    f = decode(cs, rpc_error(fn, *args, **kw))
    assert f.code == code, f"expected {code.name}, got {f.code.name}: {f.details!r}"
    if error_reason is not None:
        assert f.info is not None, f"no ErrorInfo in the status details ({f.code.name}: {f.details!r})"
        assert f.info.domain == DOMAIN, f.info
        assert f.info.reason == error_reason, f"expected reason {error_reason}, got {f.info.reason} ({f.details!r})"
    if fields is not None:
        assert f.bad_request is not None, f"no BadRequest in the status details ({f.details!r})"
        got = [v.field for v in f.bad_request.field_violations]
        for field in fields:
            assert field in got, f"BadRequest names {got}, expected {field}"
    return f


def cli(*args, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(credits_binary()), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=credits_env())


def verify_ok(db) -> str:
    r = cli("verify", "--db", db)
    assert r.returncode == 0, f"credits verify --db {db}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "OK" in r.stdout, r.stdout
    return r.stdout


def channel_for(server, **kw) -> grpc.Channel:
    return open_channel(server.port, **kw)
