"""The contract as a FileDescriptorSet with source info, and a walk over its
elements (services, methods, messages, fields, enums, enum values) with
their comments and source positions. Shared by tools/lint-proto,
tools/check-breaking and tools/gen-api-doc."""

from __future__ import annotations

import importlib.resources
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = "credits/v1"

# Paths in descriptor.proto (SourceCodeInfo.Location.path).
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE, FILE_SYNTAX = 4, 5, 6, 12
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE = 2
SERVICE_METHOD = 2


def build(proto_root: Path) -> descriptor_pb2.FileDescriptorSet:
    """Compiles proto_root/credits/v1/*.proto (with the well-known types
    grpc_tools bundles) into a FileDescriptorSet with source info. Exits 2
    with protoc's message when they do not compile."""
    from grpc_tools import protoc

    proto_root = Path(proto_root)
    files = sorted(p.relative_to(proto_root).as_posix() for p in (proto_root / PACKAGE_DIR).glob("*.proto"))
    if not files:
        print(f"no .proto files under {proto_root / PACKAGE_DIR}", file=sys.stderr)
        sys.exit(2)
    wkt = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.binpb")
        rc = protoc.main(["protoc", f"-I{proto_root}", f"-I{wkt}", "--include_imports", "--include_source_info",
                          f"--descriptor_set_out={out}", *files])
        if rc != 0:
            print(f"protoc failed ({rc}) for {proto_root / PACKAGE_DIR}", file=sys.stderr)
            sys.exit(2)
        return load(Path(out))


def load(path: Path) -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(Path(path).read_bytes())
    return fds


def own_files(fds: descriptor_pb2.FileDescriptorSet) -> list[descriptor_pb2.FileDescriptorProto]:
    """The contract's files (not the imported well-known types), by name."""
    return sorted((f for f in fds.file if f.name.startswith(PACKAGE_DIR + "/")), key=lambda f: f.name)


@dataclass
class Element:
    kind: str          # service, method, message, field, enum, value
    full_name: str     # credits.v1.Operation.response
    name: str          # response
    file: str          # credits/v1/credits.proto
    line: int          # 1-based, 0 if unknown
    comment: str       # leading (or else trailing) comment, stripped
    proto: object      # the descriptor proto
    parent: "Element | None" = None
    children: list = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict:
    out = {}
    for loc in file.source_code_info.location:
        out[tuple(loc.path)] = loc
    return out


def _text(loc) -> str:
    if loc is None:
        return ""
    text = loc.leading_comments.strip() or loc.trailing_comments.strip()
    return "\n".join(line.strip() for line in text.splitlines()).strip()


def file_header(file: descriptor_pb2.FileDescriptorProto) -> str:
    """The comment block at the top of the file (before `syntax`)."""
    loc = _comments(file).get((FILE_SYNTAX,))
    if loc is None:
        return ""
    blocks = list(loc.leading_detached_comments) + ([loc.leading_comments] if loc.leading_comments else [])
    return "\n\n".join("\n".join(l[1:] if l.startswith(" ") else l for l in b.rstrip("\n").split("\n")) for b in blocks).strip("\n")


def walk(file: descriptor_pb2.FileDescriptorProto) -> list[Element]:
    """Every element of the file, parents before children."""
    locs = _comments(file)
    pkg = file.package
    out: list[Element] = []

    def mk(kind, full, name, path, proto, parent):
        loc = locs.get(tuple(path))
        line = loc.span[0] + 1 if loc is not None and loc.span else 0
        e = Element(kind, full, name, file.name, line, _text(loc), proto, parent)
        out.append(e)
        if parent is not None:
            parent.children.append(e)
        return e

    def enum(en, path, scope, parent):
        e = mk("enum", f"{scope}.{en.name}", en.name, path, en, parent)
        for i, v in enumerate(en.value):
            mk("value", f"{scope}.{en.name}.{v.name}", v.name, path + [ENUM_VALUE, i], v, e)

    def message(m, path, scope, parent):
        e = mk("message", f"{scope}.{m.name}", m.name, path, m, parent)
        for i, f in enumerate(m.field):
            mk("field", f"{e.full_name}.{f.name}", f.name, path + [MESSAGE_FIELD, i], f, e)
        for i, n in enumerate(m.nested_type):
            if n.options.map_entry:
                continue
            message(n, path + [MESSAGE_NESTED, i], e.full_name, e)
        for i, en in enumerate(m.enum_type):
            enum(en, path + [MESSAGE_ENUM, i], e.full_name, e)

    for i, s in enumerate(file.service):
        e = mk("service", f"{pkg}.{s.name}", s.name, [FILE_SERVICE, i], s, None)
        for j, m in enumerate(s.method):
            mk("method", f"{e.full_name}.{m.name}", m.name, [FILE_SERVICE, i, SERVICE_METHOD, j], m, e)
    for i, m in enumerate(file.message_type):
        message(m, [FILE_MESSAGE, i], pkg, None)
    for i, en in enumerate(file.enum_type):
        enum(en, [FILE_ENUM, i], pkg, None)
    return out


TYPE_NAMES = {
    v: k[len("TYPE_"):].lower()
    for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()
}


def field_type(f: descriptor_pb2.FieldDescriptorProto, messages: dict | None = None) -> str:
    """The field's type as written in a .proto (`repeated string`,
    `map<string, string>`, `google.protobuf.Timestamp`, `optional int64`)."""
    if f.type_name:
        base = f.type_name.lstrip(".")
        if messages is not None and base in messages and messages[base].options.map_entry:
            entry = messages[base]
            k, v = entry.field[0], entry.field[1]
            return f"map<{field_type(k)}, {field_type(v)}>"
    else:
        base = TYPE_NAMES[f.type]
    if f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {base}"
    if f.proto3_optional:
        return f"optional {base}"
    return base


def all_messages(fds: descriptor_pb2.FileDescriptorSet) -> dict:
    """Full name (without the leading dot) → DescriptorProto, nested included."""
    out = {}

    def add(m, scope):
        full = f"{scope}.{m.name}" if scope else m.name
        out[full] = m
        for n in m.nested_type:
            add(n, full)

    for f in fds.file:
        for m in f.message_type:
            add(m, f.package)
    return out
