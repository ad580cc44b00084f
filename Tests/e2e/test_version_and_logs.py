"""`credits --version`, the version in the start-up log, and log lines with
millisecond UTC timestamps in both log formats (issue 15, first part)."""

from __future__ import annotations

import json
import re
import subprocess

from conftest import credits_binary

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_version_names_the_release_api_and_schema():
    r = subprocess.run([str(credits_binary()), "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"credits \d+\.\d+\.\d+ \(credits\.v1, schema \d+\)\n", r.stdout), r.stdout


def test_text_log_lines_have_millisecond_utc_times_and_the_version(start_credits_server):
    srv = start_credits_server()
    srv.terminate()
    lines = [line for line in srv.stderr_path.read_text().splitlines() if line]
    assert lines
    for line in lines:
        assert re.match(STAMP + r" (trace|debug|info|notice|warning|error|critical) \S+:", line), line
    serving = [line for line in lines if line.endswith("] serving")]
    assert len(serving) == 1 and re.search(r" version=\d+\.\d+\.\d+ ", serving[0]), serving


def test_json_log_lines_have_millisecond_utc_times_and_the_version(start_credits_server):
    srv = start_credits_server("--log-format", "json")
    srv.terminate()
    objects = [json.loads(line) for line in srv.stderr_path.read_text().splitlines() if line]
    assert objects
    for o in objects:
        assert re.fullmatch(STAMP, o["time"]), o
    serving = [o for o in objects if o["message"] == "serving"]
    assert len(serving) == 1 and re.fullmatch(r"\d+\.\d+\.\d+", serving[0]["version"]), serving


def test_cli_errors_are_one_readable_line(start_credits_server, tmp_path):
    binary = str(credits_binary())
    r = subprocess.run([binary, "serve", "--admin-key-file", str(tmp_path / "missing.key"), "--db", str(tmp_path / "a.sqlite"),
                        "--port", "1"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"Error: cannot read the admin key file {tmp_path / 'missing.key'}: No such file or directory" in r.stderr, r.stderr
    assert "NSCocoaErrorDomain" not in r.stderr
    srv = start_credits_server()
    r = subprocess.run([binary, "serve", "--port", str(srv.port), "--db", str(tmp_path / "b.sqlite")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"Error: cannot listen on 127.0.0.1:{srv.port}: Address already in use" in r.stderr, r.stderr
    assert "errno" not in r.stderr and "bind(" not in r.stderr
