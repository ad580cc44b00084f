"""The contract in proto/ names every error reason the server sends: each
`reason: "X"` in Sources/ (credits.v1 domain) is documented in
proto/credits/v1, and the health and reflection ones in the README."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def reasons_in_sources():
    found = {}
    for path in (ROOT / "Sources").rglob("*.swift"):
        if "Generated" in path.parts or path.parts[-2] == "loadgen":
            continue
        for line in path.read_text().splitlines():
            for reason in re.findall(r'reason(?::| =) "([A-Z_]+)"', line):
                domain = re.search(r'domain: "([a-z0-9.]+)"', line)
                found.setdefault(reason, set()).add(domain.group(1) if domain else "credits.v1")
    return found


def test_every_error_reason_the_server_sends_is_documented():
    protos = "\n".join(p.read_text() for p in (ROOT / "proto" / "credits" / "v1").glob("*.proto"))
    readme = (ROOT / "README.md").read_text()
    found = reasons_in_sources()
    assert len(found) > 30, sorted(found)
    missing = []
    for reason, domains in sorted(found.items()):
        if all(d.startswith("grpc.") for d in domains):
            if f"`{reason}`" not in readme:
                missing.append(f"{reason} ({', '.join(sorted(domains))}) not in README.md")
        elif not re.search(rf"\b{reason}\b", protos):
            missing.append(f"{reason} not in proto/credits/v1")
    assert not missing, missing


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
