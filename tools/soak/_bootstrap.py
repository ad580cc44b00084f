"""Makes the thin executables run under the repository's .venv (made by
tools/install-deps) when started with a Python that lacks grpcio."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def ensure_venv() -> None:
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
        return
    except ImportError:
        pass
    venv_python = REPO / ".venv" / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != (REPO / ".venv").resolve() \
            and not os.environ.get("CREDITS_SOAK_REEXEC"):
        os.environ["CREDITS_SOAK_REEXEC"] = "1"
        os.execv(str(venv_python), [str(venv_python), *sys.argv])
    sys.exit("grpcio is missing: run tools/install-deps (creates ./.venv)")
