"""tools/lint-proto: style rules of the credits.v1 contract, checked over the
FileDescriptorSet protoc builds from proto/ (with source info).

Rules (each violation is printed as `file:line: element: what is wrong`):
  names     messages, enums, services and methods PascalCase; fields
            lower_snake_case; enum values UPPER_SNAKE_CASE, prefixed with the
            enum's name in UPPER_SNAKE (LotState → LOT_STATE_ACTIVE) except in
            the enums listed in UNPREFIXED_ENUMS (documented exceptions);
  zero      every enum's zero value is `<ENUM>_UNSPECIFIED` (proto3 uses it for
            "not set", so it must not mean anything else), and comes first;
  comments  every service, method, message, field, enum and enum value has a
            comment (leading or trailing) of at least MIN_COMMENT characters;
  reserved  reserved field numbers and names of a message are not used by its
            fields, and every enum reserves what it removed the same way
            (removals themselves are found by tools/check-breaking, which
            compares with the released contract);
  package   every file's package is credits.v1.
Exit status: 0 clean, 1 violations, 2 the protos do not compile."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import descriptors as d  # noqa: E402

PASCAL = re.compile(r"^[A-Z][a-zA-Z0-9]*$")
LOWER_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
MIN_COMMENT = 3
PACKAGE = "credits.v1"

# Enums whose values are not prefixed with the enum's name, and why.
UNPREFIXED_ENUMS = {
    "credits.v1.ErrorReason": "its value names are the google.rpc.ErrorInfo reason strings (as in google.api.ErrorReason)",
}


def upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def lint(fds) -> list[str]:
    problems = []

    def bad(e, what):
        problems.append(f"{e.where}: {e.kind} {e.full_name}: {what}")

    for file in d.own_files(fds):
        if file.package != PACKAGE:
            problems.append(f"{file.name}: package is {file.package!r}, not {PACKAGE!r}")
        for e in d.walk(file):
            if e.kind in ("service", "method", "message", "enum") and not PASCAL.match(e.name):
                bad(e, "name is not PascalCase")
            if e.kind == "field" and not LOWER_SNAKE.match(e.name):
                bad(e, "name is not lower_snake_case")
            if e.kind == "value" and not UPPER_SNAKE.match(e.name):
                bad(e, "name is not UPPER_SNAKE_CASE")
            if len(e.comment) < MIN_COMMENT:
                bad(e, "has no comment")
            if e.kind == "enum":
                prefix = upper_snake(e.name) + "_"
                values = list(e.proto.value)
                zero = [v for v in values if v.number == 0]
                if not values or values[0].number != 0:
                    bad(e, "the first value is not the zero value")
                if not zero or zero[0].name != prefix + "UNSPECIFIED":
                    bad(e, f"zero value is {zero[0].name if zero else 'missing'}, not {prefix}UNSPECIFIED")
                if e.full_name not in UNPREFIXED_ENUMS:
                    for v in e.children:
                        if not v.name.startswith(prefix):
                            bad(v, f"value is not prefixed with {prefix}")
                for v in e.children:
                    n = v.proto.number
                    if any(r.start <= n <= r.end for r in e.proto.reserved_range):  # enum ranges are inclusive
                        bad(v, f"number {n} is reserved")
                    if v.name in e.proto.reserved_name:
                        bad(v, "name is reserved")
            if e.kind == "message":
                for f in e.children:
                    if f.kind != "field":
                        continue
                    n = f.proto.number
                    if any(r.start <= n < r.end for r in e.proto.reserved_range):
                        bad(f, f"number {n} is reserved")
                    if f.name in e.proto.reserved_name:
                        bad(f, "name is reserved")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tools/lint-proto", description=__doc__.splitlines()[0])
    ap.add_argument("--proto-root", type=Path, default=d.ROOT / "proto", help="directory holding credits/v1/*.proto")
    args = ap.parse_args(argv)
    fds = d.build(args.proto_root)
    problems = lint(fds)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"lint-proto: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    n = sum(len(d.walk(f)) for f in d.own_files(fds))
    print(f"lint-proto: {len(d.own_files(fds))} files, {n} elements: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
