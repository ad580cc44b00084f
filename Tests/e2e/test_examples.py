"""The client examples in three languages (examples/python, examples/go,
examples/cpp) against the real server, through tools/examples: each generates
its stubs from proto/ with stock tooling, builds from clean, runs tenant ->
key -> package -> purchase -> spend -> refused overspend (ErrorInfo decoded)
-> statement, and its transcript is checked line by line."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, credits_binary

TOOL = REPO / "tools" / "examples"


def load_tool():
    loader = importlib.machinery.SourceFileLoader("credits_tools_examples", str(TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


GOOD = """\
tenant     gym-0123abcd (EUR)
key        key_x (role STAFF; token printed once by the server, kept in memory here)
package    pkg_x "Ten visits": 1000 credits for 900
purchase   lot lot_x: +1000, available 1000
spend      spend_x: -300, available 700
overspend  refused: FAILED_PRECONDITION reason=INSUFFICIENT_CREDITS domain=credits.v1 available_minor=700 requested_minor=5000
           message: insufficient credits: 700 available, 5000 requested
statement
  seq 3   PURCHASE    1000  available after 1000
  seq 4   SPEND        300  available after 700
"""


def test_transcript_check_accepts_the_flow_and_rejects_deviations():
    check = load_tool().check_transcript
    assert check(GOOD) == []
    # The overspend accepted, the ErrorInfo missing its metadata, an extra statement line, a cut transcript.
    assert check(GOOD.replace("available 700\n", "available -4300\n", 1))
    assert check(GOOD.replace(" available_minor=700 requested_minor=5000", ""))
    assert check(GOOD + "  seq 5   SPEND       5000  available after -4300\n")
    assert check("\n".join(GOOD.split("\n")[:6]))


@pytest.mark.parametrize("lang", ["python", "go", "cpp"])
def test_example_runs_the_whole_flow_against_the_server(lang):
    # From clean: the stubs are generated and the program built in this run.
    shutil.rmtree(REPO / "examples" / lang / ("gen" if lang == "python" else "build"), ignore_errors=True)
    done = subprocess.run([sys.executable, str(TOOL), "--bin", str(credits_binary()), lang], cwd=REPO,
                          capture_output=True, text=True, timeout=1500, env=dict(os.environ))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert f"tools/examples: OK ({lang})" in done.stdout
    assert "reason=INSUFFICIENT_CREDITS domain=credits.v1 available_minor=700 requested_minor=5000" in done.stdout
