"""The contract in proto/ names every error reason the server sends, in one
place: the credits.v1.ErrorReason enum (proto/credits/v1/errors.proto).
RPCError takes that generated enum, so the compiler refuses an unlisted
reason; these tests check the rest: the enum holds no reason the server
never sends, every RPCError in Sources/ names its reason through the enum,
the per-service reason lists in the proto file headers agree with the enum,
and the test service cannot be made to send an unlisted reason."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "proto_tools"))
import descriptors  # noqa: E402

# The modules that build RPCErrors (the ledger core knows nothing of gRPC).
SERVER_SOURCES = sorted(p for module in ("CreditsAPI", "GRPCServices", "GRPCTransport", "credits")
                        for p in (ROOT / "Sources" / module).rglob("*.swift"))


@pytest.fixture(scope="module")
def error_reason():
    fds = descriptors.build(ROOT / "proto")
    for f in descriptors.own_files(fds):
        for e in descriptors.walk(f):
            if e.full_name == "credits.v1.ErrorReason":
                return e
    pytest.fail("proto/credits/v1 declares no credits.v1.ErrorReason")


def swift_case(value_name: str) -> str:
    """The generated Swift member of an ErrorReason value (tools/gen-swift-proto.py):
    ERROR_REASON_UNSPECIFIED → unspecified, INSUFFICIENT_CREDITS → insufficientCredits."""
    if value_name == "ERROR_REASON_UNSPECIFIED":
        return "unspecified"
    head, *rest = value_name.lower().split("_")
    return head + "".join(w.capitalize() for w in rest)


def reasons_in_sources() -> dict[str, set[str]]:
    """Swift member → files, for every `reason: .x` / `reason = .x` in the server's sources."""
    found: dict[str, set[str]] = {}
    for path in SERVER_SOURCES:
        for m in re.finditer(r"\breason(?::| =) \.([a-z][A-Za-z0-9]*)\b", path.read_text()):
            found.setdefault(m.group(1), set()).add(path.name)
    return found


def test_the_server_sends_exactly_the_error_reasons_of_the_enum(error_reason):
    values = [v.name for v in error_reason.children]
    assert values[0] == "ERROR_REASON_UNSPECIFIED" and error_reason.children[0].proto.number == 0
    listed = {swift_case(v): v for v in values[1:]}
    used = reasons_in_sources()
    assert len(used) > 30, sorted(used)
    unlisted = sorted(set(used) - set(listed))
    never_sent = sorted(listed[c] for c in set(listed) - set(used))
    assert not unlisted, f"reasons used in Sources but not in ErrorReason: {unlisted}"
    assert not never_sent, f"ErrorReason values the server never sends: {never_sent}"
    assert "unspecified" not in used


def test_reasons_are_built_from_the_enum_not_from_strings():
    rpc_error = (ROOT / "Sources" / "GRPCServices" / "ProtoRoutes.swift").read_text()
    assert re.search(r"public var reason: ErrorReason\?", rpc_error), "RPCError.reason is not the generated enum"
    assert "public typealias ErrorReason = Credits_V1_ErrorReason" in rpc_error
    offenders = []
    for path in SERVER_SOURCES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r'reason(?::| =) "[A-Z][A-Z_]+"', line) or re.search(r'\.reason = "[A-Z]', line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_header_reason_lists_agree_with_the_enum(error_reason):
    """Each `NAME  STATUS …` line of a file header's reason list names an
    ErrorReason value, with a status its enum comment gives."""
    statuses = {v.name: set(re.findall(r"\b[A-Z][A-Z_]{3,}\b", v.comment)) for v in error_reason.children}
    checked, wrong = 0, []
    for path in sorted((ROOT / "proto" / "credits" / "v1").glob("*.proto")):
        header = path.read_text().split('syntax = "proto3";')[0]
        in_list = False
        for line in header.splitlines():
            text = line[2:] if line.startswith("//") else line
            if re.search(r"[Rr]easons\b.*:\s*$|[Rr]easons \(google\.rpc\.ErrorInfo\.reason", text):
                in_list = True
                continue
            m = re.match(r"^   ([A-Z][A-Z_]+)\s{2,}([A-Z][A-Z_]+)\b", text)
            if in_list and m:
                name, status = m.groups()
                checked += 1
                if name not in statuses:
                    wrong.append(f"{path.name}: {name} is not an ErrorReason value")
                elif status not in statuses[name]:
                    wrong.append(f"{path.name}: {name} listed with {status}; errors.proto says {sorted(statuses[name])}")
            elif in_list and not text.startswith("    "):
                in_list = False
    assert checked >= 25, f"only {checked} header list lines found"
    assert not wrong, wrong


def test_the_test_service_refuses_an_unlisted_reason(stubs, test_stub):
    """The one path where a request names a reason (TestService.Echo's
    fail_with) checks it against the enum instead of sending it."""
    from grpc_status import rpc_status

    with pytest.raises(grpc.RpcError) as info:
        test_stub.Echo(stubs.pb.EchoRequest(fail_with=stubs.pb.FailWith(code=9, message="x", reason="NOT_A_REASON")),
                       timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "fail_with.reason" in info.value.details()
    status = rpc_status.from_call(info.value)
    detail = stubs.error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(detail)
    assert detail.reason == "INVALID_ARGUMENT"


def test_the_contract_imports_only_well_known_types():
    """proto/credits/v1 needs nothing a stock protoc lacks (README: "A client
    in another language"), and stock grpc_tools generates importable stubs."""
    import subprocess
    import sys
    import tempfile

    for path in (ROOT / "proto" / "credits" / "v1").glob("*.proto"):
        for imported in re.findall(r'^import "([^"]+)";', path.read_text(), flags=re.M):
            assert imported.startswith(("credits/v1/", "google/protobuf/")), f"{path.name} imports {imported}"
    with tempfile.TemporaryDirectory() as out:
        files = sorted(str(p) for p in (ROOT / "proto" / "credits" / "v1").glob("*.proto"))
        r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}",
                            f"--grpc_python_out={out}", *files], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([sys.executable, "-c", "import credits.v1.credits_pb2_grpc, credits.v1.feed_pb2_grpc"],
                           cwd=out, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_get_operation_returns_the_response_as_a_typed_any(cs, cchan, admin):
    """Operation.response is a google.protobuf.Any whose type URL names the
    write's response message, and unpacks to exactly what the write returned;
    an ImportLots record (which stores no reply) has none."""
    from credits_api import Tenant, operation_response, ts, uid

    C = cs.credits
    t = Tenant(cs, cchan, admin)
    writes = []  # (idempotency key, operation, response message)
    key = uid("order-")
    writes.append((key, "credit_order", t.order("ann", 1_000, idempotency_key=key)))
    key = uid("spend-")
    writes.append((key, "spend", t.spend("ann", 100, idempotency_key=key)))
    key = uid("hold-")
    hold = t.staff.credit.CreateHold(C.CreateHoldRequest(client_id="ann", amount_minor=50, center_id="c1",
                                                        expire_time=ts(3600), idempotency_key=key))
    writes.append((key, "hold", hold))
    key = uid("release-")
    writes.append((key, "release", t.staff.credit.ReleaseHold(C.ReleaseHoldRequest(hold_id=hold.hold.id, idempotency_key=key))))
    key = uid("adjust-")
    writes.append((key, "adjust", t.staff.credit.AdjustBalance(C.AdjustBalanceRequest(
        client_id="ann", amount_minor=25, reason="goodwill", center_id="c1", idempotency_key=key))))
    key = uid("write-off-")
    writes.append((key, "write_off", t.staff.credit.CreateWriteOff(C.CreateWriteOffRequest(
        client_id="ann", amount_minor=10, reason="bad debt", idempotency_key=key))))
    for key, operation, response in writes:
        op = t.staff.credit.GetOperation(C.GetOperationRequest(idempotency_key=key))
        assert op.operation == operation
        assert op.response.type_url == f"type.googleapis.com/credits.v1.{type(response).__name__}"
        assert operation_response(op, type(response)) == response, operation

    record_key = uid("import-")
    done = t.staff.credit.ImportLots(iter([C.ImportLotRecord(record_key=record_key, client_id="bob", amount_minor=500,
                                                             center_id="c1")]), timeout=30)
    assert done.applied == 1, done
    op = t.staff.credit.GetOperation(C.GetOperationRequest(idempotency_key=record_key))
    assert op.operation == "import" and not op.HasField("response"), op
