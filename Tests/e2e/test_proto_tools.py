"""tools/lint-proto, tools/check-breaking and tools/gen-api-doc: each passes
on the real tree and fails, naming the file and the element, on a violation
planted in a copy of proto/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"


def run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOOLS / tool), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of proto/ to plant violations in."""
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    return tmp_path / "proto"


def plant(tree: Path, file: str, old: str, new: str) -> None:
    path = tree / "credits" / "v1" / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not found once in {file}"
    path.write_text(text.replace(old, new))


def fails(r: subprocess.CompletedProcess, *needles: str) -> str:
    out = r.stdout + r.stderr
    assert r.returncode == 1, f"exit {r.returncode}: {out}"
    for n in needles:
        assert n in out, f"{n!r} not in: {out}"
    return out


# ---------------------------------------------------------------- lint-proto


def test_lint_passes_on_the_real_tree():
    r = run("lint-proto")
    assert r.returncode == 0, r.stderr
    assert "clean" in r.stdout


def test_lint_finds_an_uncommented_field(tree):
    plant(tree, "common.proto", "  // What the client can spend now (total minus holds).\n", "")
    out = fails(run("lint-proto", "--proto-root", str(tree)),
                "credits/v1/common.proto:", "field credits.v1.BalanceSummary.available_minor: has no comment")
    assert "1 problem(s)" in out


def test_lint_finds_an_uncommented_rpc_message_and_enum_value(tree):
    plant(tree, "admin.proto", "  // Revokes a key at once. Revoking a revoked key returns it unchanged.\n", "")
    plant(tree, "admin.proto", "// Request of AdminService.VerifyLedger (no parameters: all tenants are\n// checked).\n", "")
    plant(tree, "admin.proto", "  // Everything within its tenant.\n", "")
    fails(run("lint-proto", "--proto-root", str(tree)),
          "method credits.v1.AdminService.RevokeApiKey: has no comment",
          "message credits.v1.VerifyLedgerRequest: has no comment",
          "value credits.v1.Role.ROLE_STAFF: has no comment",
          "3 problem(s)")


@pytest.mark.parametrize("planted, message", [
    ("// A note.\nmessage lower_case_message {\n  // A field.\n  string id = 1;\n}\n",
     "message credits.v1.lower_case_message: name is not PascalCase"),
    ("// A note.\nmessage Planted {\n  // A field.\n  string clientId = 1;\n}\n",
     "field credits.v1.Planted.clientId: name is not lower_snake_case"),
    ("// A note.\nenum Planted {\n  // Zero.\n  PLANTED_UNSPECIFIED = 0;\n  // Not prefixed.\n  ACTIVE = 1;\n}\n",
     "value credits.v1.Planted.ACTIVE: value is not prefixed with PLANTED_"),
    ("// A note.\nenum Planted {\n  // A meaningful zero.\n  PLANTED_ACTIVE = 0;\n}\n",
     "enum credits.v1.Planted: zero value is PLANTED_ACTIVE, not PLANTED_UNSPECIFIED"),
    ("// A note.\nenum Planted {\n  // Zero.\n  PLANTED_UNSPECIFIED = 0;\n  // Mixed case.\n  PLANTED_Active = 1;\n}\n",
     "value credits.v1.Planted.PLANTED_Active: name is not UPPER_SNAKE_CASE"),
])
def test_lint_finds_a_bad_name_or_zero_value(tree, planted, message):
    with (tree / "credits" / "v1" / "common.proto").open("a") as f:
        f.write("\n" + planted)
    fails(run("lint-proto", "--proto-root", str(tree)), "credits/v1/common.proto:", message)


def test_lint_refuses_a_reused_field_number(tree):
    plant(tree, "common.proto", "  string currency = 6;\n}", "  string currency = 6;\n  // Reuses 5.\n  int64 planted = 5;\n}")
    r = run("lint-proto", "--proto-root", str(tree))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "common.proto" in r.stderr and "5" in r.stderr, r.stderr


# ---------------------------------------------------------------- check-breaking


def test_breaking_check_passes_on_the_real_tree():
    r = run("check-breaking")
    assert r.returncode == 0, r.stderr
    # The one accepted break, reported as such.
    assert "allowed (ALLOWED_BREAKS): credits/v1/credits.proto" in r.stdout
    assert "credits.v1.Operation.response = 6: type changed from bytes to google.protobuf.Any" in r.stdout


def test_breaking_check_finds_a_removed_field(tree):
    plant(tree, "common.proto", "  string currency = 6;\n}", "}")
    fails(run("check-breaking", "--proto-root", str(tree)),
          "credits/v1/common.proto:", "field credits.v1.BalanceSummary.currency = 6: removed without `reserved 6;`")


def test_breaking_check_accepts_a_removed_field_that_is_reserved(tree):
    plant(tree, "common.proto", "  string currency = 6;\n}", '  reserved 6;\n  reserved "currency";\n}')
    r = run("check-breaking", "--proto-root", str(tree))
    assert r.returncode == 0, r.stderr


def test_breaking_check_finds_a_reused_number(tree):
    plant(tree, "common.proto", "  string currency = 6;\n}", "  string currency_code = 6;\n}")
    fails(run("check-breaking", "--proto-root", str(tree)),
          "field credits.v1.BalanceSummary.currency = 6: renamed to currency_code")


def test_breaking_check_finds_a_changed_type_and_label(tree):
    plant(tree, "common.proto", "  int64 held_minor = 4;", "  int32 held_minor = 4;")
    plant(tree, "common.proto", "  repeated string centers = 2;", "  string centers = 2;")
    fails(run("check-breaking", "--proto-root", str(tree)),
          "field credits.v1.BalanceSummary.held_minor = 4: type changed from int64 to int32",
          "field credits.v1.Scope.centers = 2: label changed from repeated to singular",
          "2 breaking change(s)")


def test_breaking_check_finds_removed_methods_values_and_changed_signatures(tree):
    plant(tree, "admin.proto", "  rpc RevokeApiKey(RevokeApiKeyRequest) returns (ApiKey);\n", "")
    plant(tree, "admin.proto", "  rpc GetTenant(GetTenantRequest) returns (Tenant);",
          "  rpc GetTenant(GetTenantRequest) returns (stream Tenant);")
    plant(tree, "admin.proto", "  ROLE_DIRECTORY = 3;\n", "")
    fails(run("check-breaking", "--proto-root", str(tree)),
          "method credits.v1.AdminService.RevokeApiKey: removed",
          "method credits.v1.AdminService.GetTenant: streaming changed",
          "enum value credits.v1.Role.ROLE_DIRECTORY = 3: removed without `reserved 3;`")


def test_breaking_check_finds_a_renamed_message(tree):
    plant(tree, "admin.proto", "message VerifyLedgerRequest {}", "message CheckLedgerRequest {}")
    plant(tree, "admin.proto", "rpc VerifyLedger(VerifyLedgerRequest)", "rpc VerifyLedger(CheckLedgerRequest)")
    fails(run("check-breaking", "--proto-root", str(tree)),
          "credits/v1/admin.proto:", "message credits.v1.VerifyLedgerRequest: removed (a rename is a removal)",
          "method credits.v1.AdminService.VerifyLedger: request type changed from credits.v1.VerifyLedgerRequest to credits.v1.CheckLedgerRequest")


def test_breaking_check_finds_a_package_change(tree):
    plant(tree, "admin.proto", "package credits.v1;", "package credits.v2;")
    fails(run("check-breaking", "--proto-root", str(tree)),
          "file credits/v1/admin.proto: package changed from credits.v1 to credits.v2",
          "service credits.v1.AdminService: removed")


def test_breaking_check_fails_on_a_stale_allowed_break(tmp_path):
    allowed = tmp_path / "ALLOWED_BREAKS"
    allowed.write_text((ROOT / "proto" / "baseline" / "ALLOWED_BREAKS").read_text()
                       + "field credits.v1.Lot.note = 14: removed  # planted\n")
    fails(run("check-breaking", "--allowed", str(allowed)),
          "listed break no longer occurs (remove it): field credits.v1.Lot.note = 14: removed")


def test_breaking_check_fails_without_the_allowed_list(tmp_path):
    empty = tmp_path / "none"
    empty.write_text("")
    fails(run("check-breaking", "--allowed", str(empty)),
          "credits/v1/credits.proto:", "field credits.v1.Operation.response = 6: type changed from bytes to google.protobuf.Any")


# ---------------------------------------------------------------- gen-api-doc


def test_api_doc_is_current():
    r = run("gen-api-doc", "--check")
    assert r.returncode == 0, r.stderr


def test_api_doc_check_fails_after_a_comment_change(tree):
    plant(tree, "common.proto", "  // What the client can spend now (total minus holds).",
          "  // What the client may spend right now.")
    fails(run("gen-api-doc", "--check", "--proto-root", str(tree)), "docs/API.md is stale",
          "What the client may spend right now.")


def test_api_doc_lists_every_rpc_message_and_error_reason():
    doc = (ROOT / "docs" / "API.md").read_text()
    text = "".join(p.read_text() for p in (ROOT / "proto" / "credits" / "v1").glob("*.proto"))
    import re
    for rpc in re.findall(r"^\s*rpc (\w+)\(", text, flags=re.M):
        assert f"[{rpc}](#" in doc, rpc
    for message in re.findall(r"^message (\w+) ", text, flags=re.M):
        assert f"### {message} (message)" in doc, message
    for reason in re.findall(r"^  ([A-Z][A-Z_]+) = [1-9]\d*;", (ROOT / "proto" / "credits" / "v1" / "errors.proto").read_text(), flags=re.M):
        assert f"| `{reason}` |" in doc, reason
