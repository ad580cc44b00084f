"""tools/check-breaking: compares the contract in proto/ with the committed
descriptor of the last release (proto/baseline/*.binpb) and fails on any
change that breaks clients built from the release:

  files     a file of the release removed, or its package changed;
  messages  a message removed (renamed counts as removed);
  fields    a field removed without reserving its number AND name; a field
            whose number now has another name, type, message/enum type,
            label (repeated/optional) or oneof; a reserved number or name
            of the release no longer reserved;
  enums     an enum removed; a value removed without reserving its number
            and name; a value whose number now has another name;
  services  a service removed; a method removed, or its request type,
            response type or streaming changed.

Each finding is printed as `file:line: element: what changed` (the line
is in the new tree, or the release's for what was removed).

Allowed breaks: proto/baseline/ALLOWED_BREAKS lists findings the project
accepted on purpose, one per line (the finding's text after `file:line: `),
each with a `#` comment saying why; they are reported but do not fail. An
entry that no longer matches a finding fails, so the list cannot go stale.
When a release is cut, its descriptor becomes the new baseline and the
list is emptied.
Exit status: 0 compatible, 1 breaking changes, 2 cannot compare."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import descriptors as d  # noqa: E402
from google.protobuf import descriptor_pb2  # noqa: E402

F = descriptor_pb2.FieldDescriptorProto
DEFAULT_BASELINE_DIR = d.ROOT / "proto" / "baseline"


def index(fds):
    """full name → Element for the contract's files, plus file protos by name."""
    elements = {}
    files = {}
    for f in d.own_files(fds):
        files[f.name] = f
        for e in d.walk(f):
            elements[(e.kind, e.full_name)] = e
    return elements, files


def label(f) -> str:
    if f.label == F.LABEL_REPEATED:
        return "repeated"
    if f.proto3_optional:
        return "optional"
    return "singular"


def kind_of(f, msgs) -> str:
    """The field's type as the wire and the generated code see it."""
    return d.field_type(f, msgs)


def compare(old_fds, new_fds) -> list[tuple[str, str]]:
    """(where, finding) pairs."""
    old, old_files = index(old_fds)
    new, new_files = index(new_fds)
    old_msgs, new_msgs = d.all_messages(old_fds), d.all_messages(new_fds)
    out = []

    for name, f in old_files.items():
        if name not in new_files:
            out.append((name, f"file {name}: removed"))
        elif new_files[name].package != f.package:
            out.append((name, f"file {name}: package changed from {f.package} to {new_files[name].package}"))

    for (kind, full), e in old.items():
        n = new.get((kind, full))
        if kind in ("message", "enum", "service"):
            if n is None:
                out.append((e.where, f"{kind} {full}: removed (a rename is a removal)"))
                continue
        if kind == "message" and n is not None:
            o_fields = {f.number: f for f in e.proto.field}
            n_fields = {f.number: f for f in n.proto.field}
            n_reserved_numbers = lambda num: any(r.start <= num < r.end for r in n.proto.reserved_range)  # noqa: E731
            for num, of in sorted(o_fields.items()):
                nf = n_fields.get(num)
                what = f"field {full}.{of.name} = {num}"
                if nf is None:
                    if not (n_reserved_numbers(num) and of.name in n.proto.reserved_name):
                        out.append((e.where, f"{what}: removed without `reserved {num};` and `reserved \"{of.name}\";`"))
                    continue
                if nf.name != of.name:
                    out.append((n.where, f"{what}: renamed to {nf.name}"))
                ot, nt = kind_of(of, old_msgs), kind_of(nf, new_msgs)
                if (of.type, of.type_name) != (nf.type, nf.type_name) and ot != nt:
                    out.append((n.where, f"{what}: type changed from {ot} to {nt}"))
                elif label(of) != label(nf):
                    out.append((n.where, f"{what}: label changed from {label(of)} to {label(nf)}"))
                o_oneof = e.proto.oneof_decl[of.oneof_index].name if of.HasField("oneof_index") and not of.proto3_optional else None
                n_oneof = n.proto.oneof_decl[nf.oneof_index].name if nf.HasField("oneof_index") and not nf.proto3_optional else None
                if o_oneof != n_oneof:
                    out.append((n.where, f"{what}: oneof changed from {o_oneof} to {n_oneof}"))
            for r in e.proto.reserved_range:
                for num in range(r.start, r.end):
                    if num not in n_fields and not n_reserved_numbers(num):
                        out.append((n.where, f"message {full}: reserved number {num} no longer reserved"))
                        break
            for rn in e.proto.reserved_name:
                if rn not in n.proto.reserved_name:
                    out.append((n.where, f"message {full}: reserved name \"{rn}\" no longer reserved"))
        if kind == "enum" and n is not None:
            o_vals = {v.number: v for v in e.proto.value}
            n_vals = {v.number: v for v in n.proto.value}
            for num, ov in sorted(o_vals.items()):
                nv = n_vals.get(num)
                what = f"enum value {full}.{ov.name} = {num}"
                if nv is None:
                    reserved = any(r.start <= num <= r.end for r in n.proto.reserved_range)
                    if not (reserved and ov.name in n.proto.reserved_name):
                        out.append((e.where, f"{what}: removed without `reserved {num};` and `reserved \"{ov.name}\";`"))
                elif nv.name != ov.name:
                    out.append((n.where, f"{what}: renamed to {nv.name}"))
        if kind == "service" and n is not None:
            n_methods = {m.name: m for m in n.proto.method}
            for om in e.proto.method:
                nm = n_methods.get(om.name)
                what = f"method {full}.{om.name}"
                if nm is None:
                    out.append((e.where, f"{what}: removed (a rename is a removal)"))
                    continue
                if nm.input_type != om.input_type:
                    out.append((n.where, f"{what}: request type changed from {om.input_type.lstrip('.')} to {nm.input_type.lstrip('.')}"))
                if nm.output_type != om.output_type:
                    out.append((n.where, f"{what}: response type changed from {om.output_type.lstrip('.')} to {nm.output_type.lstrip('.')}"))
                if (nm.client_streaming, nm.server_streaming) != (om.client_streaming, om.server_streaming):
                    out.append((n.where, f"{what}: streaming changed"))
    return out


def read_allowed(path: Path) -> dict[str, str]:
    allowed = {}
    if not path.exists():
        return allowed
    for line in path.read_text().splitlines():
        text, _, why = line.partition("#")
        text = text.strip()
        if text:
            allowed[text] = why.strip()
    return allowed


def latest_baseline(directory: Path) -> Path:
    def version(p: Path):
        m = re.search(r"(\d+)\.(\d+)\.(\d+)$", p.stem)
        return tuple(int(x) for x in m.groups()) if m else (-1,)
    found = sorted(directory.glob("*.binpb"), key=version)
    if not found:
        sys.exit(f"check-breaking: no baseline descriptor (*.binpb) in {directory}")
    return found[-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tools/check-breaking", description=__doc__.splitlines()[0])
    ap.add_argument("--proto-root", type=Path, default=d.ROOT / "proto", help="directory holding credits/v1/*.proto")
    ap.add_argument("--baseline", type=Path, help="the release's FileDescriptorSet (default: the newest in proto/baseline)")
    ap.add_argument("--allowed", type=Path, help="accepted breaks (default: ALLOWED_BREAKS next to the baseline)")
    args = ap.parse_args(argv)
    baseline = args.baseline or latest_baseline(DEFAULT_BASELINE_DIR)
    allowed_path = args.allowed or baseline.parent / "ALLOWED_BREAKS"
    findings = compare(d.load(baseline), d.build(args.proto_root))
    allowed = read_allowed(allowed_path)
    failing, accepted = [], []
    for where, text in findings:
        (accepted if text in allowed else failing).append(f"{where}: {text}")
    stale = [a for a in allowed if a not in {t for _, t in findings}]
    for a in accepted:
        print(f"allowed ({allowed_path.name}): {a}")
    for f in failing:
        print(f, file=sys.stderr)
    for s in stale:
        print(f"{allowed_path}: listed break no longer occurs (remove it): {s}", file=sys.stderr)
    if failing or stale:
        print(f"check-breaking: {len(failing)} breaking change(s) against {baseline.name}"
              + (f", {len(stale)} stale allowed break(s)" if stale else ""), file=sys.stderr)
        return 1
    print(f"check-breaking: compatible with {baseline.name} ({len(accepted)} allowed break(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
