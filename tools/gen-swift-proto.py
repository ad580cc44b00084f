#!/usr/bin/env python3
"""Generates Swift value types over protobuf-c messages.

Called by tools/gen-proto; reads the FileDescriptorSet that protoc-c wrote and
emits, deterministically:

  --c-src-dir      credits_descriptors.c  one accessor per message descriptor
                                          (Swift cannot take the address of an
                                          imported `extern const` struct) and
                                          the FileDescriptorSet, #embed-ded;
  --c-include-dir  credits_descriptors.h, credits_proto_c.h (umbrella) and
                   module.modulemap (module CreditsProtoC, headers listed);
  --swift-dir      one Swift file per proto file in --generate, plus
                   _proto_registry.swift (every message type, for Any).

The Swift code addresses a field by its index in protoc-c's field descriptor
array, which protoc-c sorts by field number; the index is resolved here and
checked at run time (ProtoDescriptor) the first time a type is used.
"""

import argparse
import os
import re
import sys

from google.protobuf import descriptor_pb2

FDP = descriptor_pb2.FieldDescriptorProto

# --------------------------------------------------------------------------
# Naming (modelled on swift-protobuf's conventions)
# --------------------------------------------------------------------------

SWIFT_KEYWORDS = {
    # declarations
    "associatedtype", "class", "deinit", "enum", "extension", "fileprivate",
    "func", "import", "init", "inout", "internal", "let", "open", "operator",
    "private", "precedencegroup", "protocol", "public", "rethrows", "static",
    "struct", "subscript", "typealias", "var",
    # statements
    "break", "case", "catch", "continue", "default", "defer", "do", "else",
    "fallthrough", "for", "guard", "if", "in", "repeat", "return", "throw",
    "switch", "where", "while",
    # expressions and types
    "Any", "as", "await", "false", "is", "nil", "self", "Self", "super",
    "throws", "true", "try",
}

# Field (property) names that cannot be used even with backticks, or that
# would shadow members every message has: these get a "_p" suffix.
RESERVED_FIELD_NAMES = {
    "self", "init", "Type", "Protocol", "description", "debugDescription",
    "hashValue", "dynamicType", "serializedBytes", "serializedSize",
    "serialize", "protoMessageName",
}

# Enum value names that would clash with members of the enum struct.
RESERVED_ENUM_VALUE_NAMES = {
    "allCases", "allKnown", "debugDescription", "description", "dynamicType",
    "hashValue", "init", "name", "rawValue", "self", "protoEnumName",
}

# Nested type names that would clash with Swift's own (Foo.Type) or ours.
RESERVED_TYPE_NAMES = {
    "Type", "Protocol", "Self", "Any", "Sendable", "Equatable", "Hashable",
    "String", "Int32", "Int64", "UInt32", "UInt64", "Bool", "Float", "Double",
    "Array", "Dictionary", "Optional",
}

ABBREVIATIONS = {"url", "http", "https", "id"}


def _segments(name):
    """Split a proto identifier at underscores, case changes and digits."""
    segs, cur, last = [], "", None
    for ch in name:
        if ch.isdigit():
            cls = "digit"
        elif "a" <= ch <= "z":
            cls = "lower"
        elif "A" <= ch <= "Z":
            cls = "upper"
        elif ch == "_":
            cls = "underscore"
        else:
            raise SystemExit(f"gen-swift-proto: unsupported character in identifier {name!r}")
        if cls == "underscore":
            if cur:
                segs.append(cur)
            cur = ""
        elif cls == "digit":
            if last != "digit" and cur:
                segs.append(cur)
                cur = ""
            cur += ch
        elif cls == "upper":
            if last != "upper" and cur:
                segs.append(cur)
                cur = ""
            cur += ch.lower()
        else:  # lower
            if last not in ("lower", "upper") and cur:
                segs.append(cur)
                cur = ""
            cur += ch
        last = cls
    if cur:
        segs.append(cur)
    return segs


def camel(name, upper_first):
    segs = _segments(name)
    out = ""
    for i, s in enumerate(segs):
        if i == 0 and not upper_first:
            out += s
        elif s in ABBREVIATIONS:
            out += s.upper()
        else:
            out += s[0].upper() + s[1:]
    if not out or out[0].isdigit():
        out = "_" + out
    return out


def lower_camel(name):
    return camel(name, upper_first=False)


def upper_camel(name):
    return camel(name, upper_first=True)


def quote(name):
    return f"`{name}`" if name in SWIFT_KEYWORDS else name


def field_name(proto_name):
    n = lower_camel(proto_name)
    if n in RESERVED_FIELD_NAMES:
        n += "_p"
    return n


def type_name(proto_name, disambiguator):
    if proto_name in RESERVED_TYPE_NAMES or proto_name in SWIFT_KEYWORDS:
        return proto_name + disambiguator
    return proto_name


def package_prefix(package):
    if not package:
        return ""
    parts = []
    for comp in package.split("."):
        p = "".join(s[:1].upper() + s[1:] for s in comp.split("_") if s)
        if p and p[0].isdigit():
            p = "_" + p
        parts.append(p)
    return "_".join(parts) + "_"


def strip_enum_prefix(enum_name, value_name):
    """REASON_UNSPECIFIED in enum Reason -> UNSPECIFIED (None if not a prefix
    or if what is left would not start with a letter)."""
    prefix = enum_name.lower().replace("_", "")
    v = value_name.lower()
    i = j = 0
    while j < len(prefix):
        if i == len(v):
            return None
        if v[i] == "_":
            i += 1
            continue
        if v[i] != prefix[j]:
            return None
        i += 1
        j += 1
    while i < len(v) and v[i] == "_":
        i += 1
    if i == len(v) or not ("a" <= v[i] <= "z"):
        return None
    return value_name[i:]


def c_lower(full_name):
    """protoc-c's FullNameToLower: google.rpc.BadRequest -> google__rpc__bad_request."""
    pieces = []
    for piece in full_name.split("."):
        if not piece:
            continue
        out, was_upper = "", True
        for ch in piece:
            is_upper = "A" <= ch <= "Z"
            if is_upper:
                if not was_upper:
                    out += "_"
                out += ch.lower()
            else:
                out += ch
            was_upper = is_upper
        pieces.append(out)
    return "__".join(pieces)


def swift_file_name(proto_path):
    base = proto_path[:-len(".proto")] if proto_path.endswith(".proto") else proto_path
    return re.sub(r"[^A-Za-z0-9]", "_", base) + ".swift"


def swift_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

SCALARS = {
    FDP.TYPE_INT32: "Int32", FDP.TYPE_SINT32: "Int32", FDP.TYPE_SFIXED32: "Int32",
    FDP.TYPE_UINT32: "UInt32", FDP.TYPE_FIXED32: "UInt32",
    FDP.TYPE_INT64: "Int64", FDP.TYPE_SINT64: "Int64", FDP.TYPE_SFIXED64: "Int64",
    FDP.TYPE_UINT64: "UInt64", FDP.TYPE_FIXED64: "UInt64",
    FDP.TYPE_BOOL: "Bool", FDP.TYPE_FLOAT: "Float", FDP.TYPE_DOUBLE: "Double",
    FDP.TYPE_STRING: "String", FDP.TYPE_BYTES: "[UInt8]",
}

SCALAR_DEFAULTS = {
    "Int32": "0", "UInt32": "0", "Int64": "0", "UInt64": "0", "Bool": "false",
    "Float": "0", "Double": "0", "String": '""', "[UInt8]": "[]",
}


class TypeInfo:
    def __init__(self, kind, full_name, swift_name, proto, file, parent=None):
        self.kind = kind          # "message" or "enum"
        self.full_name = full_name
        self.swift_name = swift_name
        self.proto = proto
        self.file = file
        self.parent = parent
        self.is_map_entry = kind == "message" and proto.options.map_entry


class Generator:
    def __init__(self, fds, generate):
        self.files = {f.name: f for f in fds.file}
        self.generate = generate
        for name in generate:
            if name not in self.files:
                fallback = bundled_wkt(name)
                if fallback is None:
                    raise SystemExit(f"gen-swift-proto: {name} is not in the descriptor set")
                self.files[name] = fallback
        self.types = {}
        for f in self.files.values():
            prefix = package_prefix(f.package)
            pkg = "." + f.package if f.package else ""
            for m in f.message_type:
                self._index_message(m, pkg, prefix, None, f)
            for e in f.enum_type:
                full = f"{pkg}.{e.name}"
                self.types[full] = TypeInfo("enum", full[1:], prefix + e.name, e, f)
        names = {}
        for t in self.types.values():
            if t.is_map_entry:
                continue
            if t.swift_name in names:
                raise SystemExit(f"gen-swift-proto: {t.full_name} and {names[t.swift_name]} both map to {t.swift_name}")
            names[t.swift_name] = t.full_name
        self.recursive_edges = self._find_recursive_edges()

    def _index_message(self, m, scope, swift_scope, parent, f):
        full = f"{scope}.{m.name}"
        swift = swift_scope + m.name if parent is None else f"{swift_scope}.{type_name(m.name, 'Message')}"
        info = TypeInfo("message", full[1:], swift, m, f, parent)
        self.types[full] = info
        for n in m.nested_type:
            self._index_message(n, full, swift, info, f)
        for e in m.enum_type:
            efull = f"{full}.{e.name}"
            self.types[efull] = TypeInfo("enum", efull[1:], f"{swift}.{type_name(e.name, 'Enum')}", e, f, info)

    # Singular message fields (including oneof members) are stored inline in
    # the Swift struct; a cycle of those needs an indirection.
    def _find_recursive_edges(self):
        graph = {}
        for full, t in self.types.items():
            if t.kind != "message":
                continue
            graph[full] = [
                fld.type_name for fld in t.proto.field
                if fld.type == FDP.TYPE_MESSAGE and fld.label != FDP.LABEL_REPEATED
            ]

        def reaches(src, dst):
            seen, stack = set(), [src]
            while stack:
                n = stack.pop()
                if n == dst:
                    return True
                if n in seen:
                    continue
                seen.add(n)
                stack.extend(graph.get(n, []))
            return False

        edges = set()
        for a, outs in graph.items():
            for b in outs:
                if reaches(b, a):
                    edges.add((a, b))
        return edges

    def type_of(self, type_name_):
        t = self.types.get(type_name_)
        if t is None:
            raise SystemExit(f"gen-swift-proto: unknown type {type_name_}")
        return t

    # ---------------------------------------------------------------- Swift

    def swift_file(self, fname):
        f = self.files[fname]
        if f.syntax != "proto3":
            raise SystemExit(f"gen-swift-proto: {fname}: only proto3 is supported (syntax {f.syntax or 'proto2'!r})")
        out = Out()
        out.line(f"// Generated by tools/gen-swift-proto.py from {fname}. DO NOT EDIT.")
        out.line("// swiftlint:disable all")
        out.line()
        out.line("import CreditsProtoC")
        pkg = "." + f.package if f.package else ""
        for e in f.enum_type:
            out.line()
            self.emit_enum(out, self.types[f"{pkg}.{e.name}"])
        for m in f.message_type:
            out.line()
            self.emit_message(out, self.types[f"{pkg}.{m.name}"])
        for s in f.service:
            out.line()
            self.emit_service(out, f, s)
        # Codec conformances, after the declarations.
        for m in f.message_type:
            self.emit_message_impl(out, self.types[f"{pkg}.{m.name}"])
        for e in f.enum_type:
            out.line()
            out.line(f"extension {self.types[f'{pkg}.{e.name}'].swift_name}: _ProtoCValue {{}}")
        return out.text()

    def emit_enum(self, out, t):
        e = t.proto
        local = t.swift_name.rsplit(".", 1)[-1]
        out.line(f"/// `{t.full_name}` (open enum: unknown values are kept in `rawValue`).")
        out.open(f"public struct {local}: ProtoEnum")
        out.line(f"public static let protoEnumName = {swift_string(t.full_name)}")
        out.line()
        out.line("public var rawValue: Int32")
        out.line()
        out.line("public init() { self.rawValue = 0 }")
        out.line()
        out.line("public init(rawValue: Int32) { self.rawValue = rawValue }")
        out.line()
        seen_numbers = {}
        names = {}
        known = []
        for v in e.value:
            stripped = strip_enum_prefix(e.name, v.name)
            n = lower_camel(stripped if stripped is not None else v.name)
            if n in RESERVED_ENUM_VALUE_NAMES:
                n += "_"
            if n in names:
                raise SystemExit(f"gen-swift-proto: {t.full_name}: {v.name} and {names[n]} both map to .{n}")
            names[n] = v.name
            out.line(f"public static let {quote(n)} = Self(rawValue: {v.number})")
            if v.number not in seen_numbers:
                seen_numbers[v.number] = v.name
                known.append(n)
        out.line()
        out.line("/// Every value declared in the .proto, in declaration order (aliases once).")
        out.line("public static let allKnown: [Self] = [" + ", ".join("." + quote(n) for n in known) + "]")
        out.line()
        out.line("/// The value's name in the .proto, or nil for an unknown value.")
        out.open("public var name: String?")
        out.open_switch("switch rawValue")
        for number, name in seen_numbers.items():
            out.line(f"case {number}: return {swift_string(name)}")
        out.line("default: return nil")
        out.close_switch()
        out.close()
        out.close()

    def message_fields(self, t):
        """(plain fields, oneofs) with Swift names; each field gets its index
        in protoc-c's number-sorted field array."""
        m = t.proto
        index = {fld.number: i for i, fld in enumerate(sorted(m.field, key=lambda f: f.number))}
        plain, oneofs = [], []
        for oi, o in enumerate(m.oneof_decl):
            oneofs.append({"decl": o, "name": field_name(o.name),
                           "type": "OneOf_" + upper_camel(o.name), "members": []})
        used = {}
        for fld in m.field:
            if fld.proto3_optional:
                raise SystemExit(f"gen-swift-proto: {t.full_name}.{fld.name}: proto3 optional is not supported by protoc-c 1.4.1")
            if fld.type == FDP.TYPE_GROUP:
                raise SystemExit(f"gen-swift-proto: {t.full_name}.{fld.name}: groups are not supported")
            info = self.field_info(t, fld)
            info["index"] = index[fld.number]
            if fld.HasField("oneof_index"):
                oneofs[fld.oneof_index]["members"].append(info)
            else:
                plain.append(info)
                if info["name"] in used:
                    raise SystemExit(f"gen-swift-proto: {t.full_name}: two fields map to {info['name']}")
                used[info["name"]] = True
        for o in oneofs:
            if o["name"] in used:
                raise SystemExit(f"gen-swift-proto: {t.full_name}: oneof {o['decl'].name} clashes with a field")
            used[o["name"]] = True
        return plain, oneofs

    def field_info(self, t, fld):
        info = {"proto": fld, "name": field_name(fld.name), "number": fld.number}
        repeated = fld.label == FDP.LABEL_REPEATED
        if fld.type == FDP.TYPE_MESSAGE:
            target = self.type_of(fld.type_name)
            if target.is_map_entry:
                kf, vf = sorted(target.proto.field, key=lambda f: f.number)
                ktype = SCALARS[kf.type]
                if vf.type == FDP.TYPE_MESSAGE or vf.type == FDP.TYPE_ENUM:
                    vtype = self.type_of(vf.type_name).swift_name
                else:
                    vtype = SCALARS[vf.type]
                info.update(kind="map", swift=f"[{ktype}: {vtype}]", default="[:]")
                return info
            ts = target.swift_name
            if repeated:
                info.update(kind="repeated", swift=f"[{ts}]", default="[]", elem=ts)
            else:
                boxed = (t.full_name and ("." + t.full_name, fld.type_name) in self.recursive_edges)
                info.update(kind="message", swift=f"{ts}?", default="nil", elem=ts, boxed=bool(boxed))
            return info
        if fld.type == FDP.TYPE_ENUM:
            ts = self.type_of(fld.type_name).swift_name
            default = ".init()"
        else:
            ts = SCALARS[fld.type]
            default = SCALAR_DEFAULTS[ts]
        if repeated:
            info.update(kind="repeated", swift=f"[{ts}]", default="[]", elem=ts)
        else:
            info.update(kind="value", swift=ts, default=default, elem=ts)
        return info

    def emit_message(self, out, t):
        m = t.proto
        local = t.swift_name.rsplit(".", 1)[-1]
        plain, oneofs = self.message_fields(t)
        out.line(f"/// `{t.full_name}`")
        out.open(f"public struct {local}: ProtoMessage, Hashable")
        out.line(f"public static let protoMessageName = {swift_string(t.full_name)}")
        out.line()
        # Fields and oneofs in declaration order (a oneof at its first member).
        emitted_oneofs = set()
        for fld in m.field:
            if fld.HasField("oneof_index"):
                oi = fld.oneof_index
                if oi in emitted_oneofs:
                    continue
                emitted_oneofs.add(oi)
                o = oneofs[oi]
                out.line(f"public var {quote(o['name'])}: {o['type']}? = nil")
                continue
            info = next(i for i in plain if i["number"] == fld.number)
            if info.get("boxed"):
                out.line(f"internal var _{info['name']}: _ProtoIndirect<{info['elem']}>? = nil")
                out.line(f"public var {quote(info['name'])}: {info['swift']} {{")
                out.line(f"  get {{ _{info['name']}?.value }}")
                out.line(f"  set {{ _{info['name']} = newValue.map {{ _ProtoIndirect($0) }} }}")
                out.line("}")
            else:
                out.line(f"public var {quote(info['name'])}: {info['swift']} = {info['default']}")
        out.line()
        out.line("public init() {}")
        for o in oneofs:
            out.line()
            out.open(f"public enum {o['type']}: Sendable, Hashable")
            for mem in o["members"]:
                indirect = ""
                if mem["kind"] == "message":
                    if mem.get("boxed"):
                        indirect = "indirect "
                    ts = mem["elem"]
                else:
                    ts = mem["swift"]
                out.line(f"{indirect}case {quote(mem['name'])}({ts})")
            out.close()
        for e in m.enum_type:
            out.line()
            self.emit_enum(out, self.types[f".{t.full_name}.{e.name}"])
        for n in m.nested_type:
            nt = self.types[f".{t.full_name}.{n.name}"]
            if nt.is_map_entry:
                continue
            out.line()
            self.emit_message(out, nt)
        out.close()

    def emit_message_impl(self, out, t):
        plain, oneofs = self.message_fields(t)
        numbers = sorted(f.number for f in t.proto.field)
        out.line()
        out.line(f"extension {t.swift_name}: _ProtoCValue {{}}")
        out.line()
        out.open(f"extension {t.swift_name}")
        out.line(f"public static let _protoDescriptor = ProtoDescriptor(credits_desc_{c_lower(t.full_name)}(), fieldNumbers: [{', '.join(map(str, numbers))}])")
        out.line()
        out.open("public init(_protoReader r: ProtoReader)")
        if not plain and not oneofs:
            out.line("self.init()")
        for info in plain:
            name, i = quote(info["name"]), info["index"]
            if info["kind"] == "value":
                out.line(f"{name} = r.value({i})")
            elif info["kind"] == "message":
                out.line(f"{name} = r.message({i})")
            elif info["kind"] == "repeated":
                out.line(f"{name} = r.repeated({i})")
            elif info["kind"] == "map":
                out.line(f"{name} = r.map({i})")
        for o in oneofs:
            first = min(mem["index"] for mem in o["members"])
            out.open_switch(f"switch r.oneofCase({first})")
            for mem in o["members"]:
                out.line(f"case {mem['number']}: {quote(o['name'])} = .{quote(mem['name'])}(r.value({mem['index']}))")
            out.line(f"default: {quote(o['name'])} = nil")
            out.close_switch()
        out.close()
        out.line()
        out.open("public func _protoWrite(to w: ProtoWriter)")
        for info in plain:
            name, i = info["name"], info["index"]
            ref = quote(name)
            if info["kind"] == "value":
                out.line(f"w.value({i}, {ref})")
            elif info["kind"] == "message":
                out.line(f"if let v = {ref} {{ w.message({i}, v) }}")
            elif info["kind"] == "repeated":
                out.line(f"if !{ref}.isEmpty {{ w.repeated({i}, {ref}) }}")
            elif info["kind"] == "map":
                out.line(f"if !{ref}.isEmpty {{ w.map({i}, {ref}) }}")
        for o in oneofs:
            out.open_switch(f"switch {quote(o['name'])}")
            for mem in o["members"]:
                out.line(f"case .{quote(mem['name'])}(let v)?: w.oneof({mem['index']}, v)")
            out.line("case nil: break")
            out.close_switch()
        out.close()
        out.close()
        m = t.proto
        for e in m.enum_type:
            out.line()
            out.line(f"extension {self.types[f'.{t.full_name}.{e.name}'].swift_name}: _ProtoCValue {{}}")
        for n in m.nested_type:
            nt = self.types[f".{t.full_name}.{n.name}"]
            if not nt.is_map_entry:
                self.emit_message_impl(out, nt)

    def emit_service(self, out, f, s):
        full = f"{f.package}.{s.name}" if f.package else s.name
        swift = package_prefix(f.package) + s.name
        out.line(f"/// Methods of the gRPC service `{full}`.")
        out.open(f"public enum {swift}")
        out.line(f"public static let serviceName = {swift_string(full)}")
        used = {"serviceName", "allMethods"}
        names = []
        for meth in s.method:
            n = lower_camel(meth.name)
            if n in used or n in RESERVED_FIELD_NAMES:
                n += "_"
            used.add(n)
            names.append(n)
            req = self.type_of(meth.input_type).swift_name
            resp = self.type_of(meth.output_type).swift_name
            cs = "true" if meth.client_streaming else "false"
            ss = "true" if meth.server_streaming else "false"
            out.line()
            out.line(f"/// `rpc {meth.name}({'stream ' if meth.client_streaming else ''}{meth.input_type[1:]}) returns ({'stream ' if meth.server_streaming else ''}{meth.output_type[1:]})`")
            out.line(f"public static let {quote(n)} = ProtoMethod<{req}, {resp}>(")
            out.line(f"    service: serviceName, name: {swift_string(meth.name)}, clientStreaming: {cs}, serverStreaming: {ss})")
        out.line()
        out.line("/// Every method, in declaration order.")
        out.line("public static let allMethods: [ProtoMethodInfo] = [" + ", ".join(f"{quote(n)}.info" for n in names) + "]")
        out.close()

    # ---------------------------------------------------------------- C

    def all_messages(self, files):
        """Every message (nested and map entries too) of the given files, by full name."""
        out = []
        for t in self.types.values():
            if t.kind == "message" and t.file.name in files:
                out.append(t)
        return sorted(out, key=lambda t: t.full_name)


class Out:
    def __init__(self):
        self.lines = []
        self.depth = 0

    def line(self, s=""):
        self.lines.append(("    " * self.depth + s) if s else "")

    def open(self, s):
        self.line(s + " {")
        self.depth += 1

    def close(self):
        self.depth -= 1
        self.line("}")

    def open_switch(self, s):
        """A switch: cases at the switch's own indentation (Swift style)."""
        self.line(s + " {")

    def close_switch(self):
        self.line("}")

    def text(self):
        return "\n".join(self.lines) + "\n"


def bundled_wkt(name):
    """A well-known type's descriptor from the protobuf Python package, for a
    file in --generate that no other file imports (so the set lacks it)."""
    modules = {
        "google/protobuf/any.proto": "any_pb2",
        "google/protobuf/duration.proto": "duration_pb2",
        "google/protobuf/timestamp.proto": "timestamp_pb2",
        "google/protobuf/empty.proto": "empty_pb2",
    }
    mod = modules.get(name)
    if mod is None:
        return None
    import importlib
    d = importlib.import_module("google.protobuf." + mod).DESCRIPTOR
    fdp = descriptor_pb2.FileDescriptorProto()
    d.CopyToProto(fdp)
    return fdp


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--descriptor-set", required=True)
    ap.add_argument("--c-include-dir", required=True)
    ap.add_argument("--c-src-dir", required=True)
    ap.add_argument("--swift-dir", required=True)
    ap.add_argument("--generate", nargs="+", required=True)
    args = ap.parse_args()

    fds = descriptor_pb2.FileDescriptorSet()
    with open(args.descriptor_set, "rb") as fh:
        fds.ParseFromString(fh.read())
    generate = sorted(set(args.generate))
    gen = Generator(fds, generate)

    # Swift
    swift_names = {}
    for fname in generate:
        sname = swift_file_name(fname)
        if sname in swift_names:
            raise SystemExit(f"gen-swift-proto: {fname} and {swift_names[sname]} both map to {sname}")
        swift_names[sname] = fname
        write(os.path.join(args.swift_dir, sname), gen.swift_file(fname))

    messages = gen.all_messages(set(generate))
    reg = Out()
    reg.line("// Generated by tools/gen-swift-proto.py from every --generate file. DO NOT EDIT.")
    reg.line()
    reg.open("extension ProtoRegistry")
    reg.line("/// Every generated message type (map entries excepted), by full proto name.")
    reg.open("static let _generatedMessageTypes: [any ProtoMessage.Type] =")
    # Replace the trailing " {" by "[".
    reg.lines[-1] = reg.lines[-1][:-2] + " ["
    for t in messages:
        if not t.is_map_entry:
            reg.line(f"{t.swift_name}.self,")
    reg.depth -= 1
    reg.line("]")
    reg.close()
    write(os.path.join(args.swift_dir, "_proto_registry.swift"), reg.text())

    # C: check protoc-c's names, then the accessors.
    headers = []
    for root, _dirs, files in os.walk(args.c_include_dir):
        for fn in files:
            if fn.endswith(".pb-c.h"):
                headers.append(os.path.relpath(os.path.join(root, fn), args.c_include_dir).replace(os.sep, "/"))
    headers.sort()
    header_text = {}
    for h in headers:
        with open(os.path.join(args.c_include_dir, h), encoding="utf-8") as fh:
            header_text[h] = fh.read()
    for t in messages:
        h = t.file.name[:-len(".proto")] + ".pb-c.h"
        sym = c_lower(t.full_name) + "__descriptor"
        if h not in header_text or f"extern const ProtobufCMessageDescriptor {sym};" not in header_text[h]:
            raise SystemExit(f"gen-swift-proto: {sym} not declared in {h} (protoc-c naming changed?)")

    dh = Out()
    dh.line("/* Generated by tools/gen-swift-proto.py. DO NOT EDIT. */")
    dh.line("#ifndef CREDITS_DESCRIPTORS_H")
    dh.line("#define CREDITS_DESCRIPTORS_H")
    dh.line()
    dh.line("#include <stddef.h>")
    dh.line("#include <protobuf-c/protobuf-c.h>")
    dh.line()
    dh.line("PROTOBUF_C__BEGIN_DECLS")
    dh.line()
    dh.line("/* The FileDescriptorSet of every .proto (with imports), for reflection. */")
    dh.line("const unsigned char *credits_descriptor_set(size_t *length);")
    dh.line()
    dh.line("/* protoc-c's message descriptors (Swift cannot take the address of an extern const). */")
    for t in messages:
        dh.line(f"const ProtobufCMessageDescriptor *credits_desc_{c_lower(t.full_name)}(void);")
    dh.line()
    dh.line("PROTOBUF_C__END_DECLS")
    dh.line()
    dh.line("#endif")
    write(os.path.join(args.c_include_dir, "credits_descriptors.h"), dh.text())

    dc = Out()
    dc.line("/* Generated by tools/gen-swift-proto.py. DO NOT EDIT. */")
    dc.line('#include "credits_proto_c.h"')
    dc.line()
    embed = os.path.relpath(args.descriptor_set, args.c_src_dir).replace(os.sep, "/")
    dc.line("static const unsigned char credits_descriptor_set_data[] = {")
    dc.line(f'#embed "{embed}"')
    dc.line("};")
    dc.line()
    dc.line("const unsigned char *credits_descriptor_set(size_t *length) {")
    dc.line("  *length = sizeof credits_descriptor_set_data;")
    dc.line("  return credits_descriptor_set_data;")
    dc.line("}")
    for t in messages:
        sym = c_lower(t.full_name)
        dc.line()
        dc.line(f"const ProtobufCMessageDescriptor *credits_desc_{sym}(void) {{")
        dc.line(f"  return &{sym}__descriptor;")
        dc.line("}")
    write(os.path.join(args.c_src_dir, "credits_descriptors.c"), dc.text())

    um = Out()
    um.line("/* Generated by tools/gen-swift-proto.py. DO NOT EDIT. */")
    um.line("#ifndef CREDITS_PROTO_C_H")
    um.line("#define CREDITS_PROTO_C_H")
    um.line()
    for h in headers:
        um.line(f'#include "{h}"')
    um.line('#include "credits_descriptors.h"')
    um.line()
    um.line("#endif")
    write(os.path.join(args.c_include_dir, "credits_proto_c.h"), um.text())

    mm = Out()
    mm.line("// Generated by tools/gen-swift-proto.py. DO NOT EDIT.")
    mm.open("module CreditsProtoC")
    mm.line('header "credits_proto_c.h"')
    for h in headers:
        mm.line(f'header "{h}"')
    mm.line('header "credits_descriptors.h"')
    mm.line("export *")
    mm.close()
    write(os.path.join(args.c_include_dir, "module.modulemap"), mm.text())


if __name__ == "__main__":
    main()
