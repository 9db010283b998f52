"""Outputs are inert (issue 14, item 4): what a suspect host wrote reaches the responder's terminal, JSON,
CSV, bodyfile and HTML only in a form that medium shows as text. One sealed bundle carries the hostile
strings: a hostname with terminal escape sequences, C1 controls and HTML; a process whose name does the
same (the host checks make a finding of it); a volatility stream whose name starts a spreadsheet formula;
a bodyfile record whose mode string carries a newline and a forged bodyfile line."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import hostile_bundles as hb
import pytest
from conftest import need

HOSTNAME = "web1<img src=x onerror=alert(1)>" + hb.ESC + hb.C1 + "\u202eevil"
PROCESS = "kworker" + hb.ESC + hb.C1 + "<script>alert(2)</script>"
FORMULA_STREAM = "volatility.=cmd|' -c calc'!A0"
FORGED = "/etc/forged"
RAW = (b"\x1b", b"\x07", b"\xc2\x9b", b"\xc2\x85", "\u202e".encode())  # what a terminal (or a reader) obeys


def _records(*records: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inert") / "fleet"
    folder.mkdir()
    return hb.write(folder / "web1.tar.gz", [
        ("triagent/artifacts/processes.jsonl", _records(
            {"pid": 666, "name": PROCESS, "exe": "/tmp/.x (deleted)", "exe_deleted": True, "user": "root",
             "cmdline": ["=HYPERLINK(\"http://198.51.100.9\")", hb.ESC], "start_time_utc": "2025-11-24T15:59:00Z"})),
        ("triagent/artifacts/histories.jsonl", _records(
            {"user": "root", "command": "echo " + hb.ESC + hb.C1 + " +cmd", "timestamp_utc": "2025-11-24T15:58:00Z"})),
        (f"triagent/artifacts/{FORMULA_STREAM}.jsonl", _records(
            {"PID": 1, "COMM": "@SUM(1+1)", "Start time": "2025-11-24T15:57:00Z"})),
        ("triagent/artifacts/bodyfile.jsonl", _records(
            {"name": "/etc/x|y", "inode": 5, "uid": 0, "gid": 0, "size": 3, "mtime": 1764000000,
             "mode_as_string": f"r/rrw-r--r--\n0|{FORGED}|0|r/rrwxrwxrwx|0|0|0|0|0|0|0"})),
        ("fs/$rootfs$/tmp/" + hb.ESC + "x", b"refused: a control character in its name\n"),
    ], hostname=HOSTNAME)


def _no_raw_controls(data: bytes, where: str) -> None:
    for raw in RAW:
        assert raw not in data, f"{where}: raw {raw!r} in {data[:3000]!r}"


def test_report_terminal_summary_and_json_line_are_inert(bundle, tmp_path):
    code, stdout, stderr, _ = hb.run_tool(["report", str(bundle), "--output", str(tmp_path / "r.html")], tmp_path)
    assert b"Traceback" not in stderr and code == 1, stderr.decode(errors="replace")[-2000:]
    _no_raw_controls(stderr, "report's terminal summary")
    _no_raw_controls(stdout, "report's JSON line")
    assert "web1<img src=x onerror=alert(1)>\\u001b]0;owned\\u0007" in stderr.decode(), stderr.decode()
    summary = json.loads(stdout)
    assert summary["host"] == HOSTNAME  # the same text, escaped for JSON only
    assert "\\u009b" in stdout.decode() and "\\u001b" in stdout.decode()


def test_report_html_is_escaped_and_renders_under_its_csp(bundle, tmp_path):
    out = tmp_path / "r.html"
    hb.run_tool(["report", str(bundle), "--output", str(out)], tmp_path)
    page = out.read_bytes()
    _no_raw_controls(page, "report HTML")
    text = page.decode()
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;\\u001b]0;owned" in text
    assert "<script>alert(2)" not in text and "&lt;script&gt;alert(2)&lt;/script&gt;" in text
    assert text.count("<script") == 1 and "default-src 'none'" in text
    assert "fs/$rootfs$/tmp/\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mx" in text  # the refused member, named
    from test_report import _chromium

    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    need(browser is not None, "headless Chromium is needed for the browser test (apt-get install chromium)")
    dom, err = _chromium(browser, tmp_path, "--dump-dom", out.as_uri())
    assert not [line for line in err.splitlines() if ":CONSOLE" in line or "Uncaught" in line], err[-3000:]
    assert 'data-ready="1"' in dom and "<img src=" not in dom and "alert(2)</script>" not in dom


def test_rank_table_and_json_are_inert(bundle, tmp_path):
    need(all(__import__("importlib").util.find_spec(m) for m in ("duckdb", "pyarrow")), "the fleet extra")
    code, table, stderr, _ = hb.run_tool(["rank", str(bundle.parent), "--jobs", "1", "--output",
                                          str(tmp_path / "t")], tmp_path)
    assert code == 0, stderr.decode()[-2000:]
    _no_raw_controls(table, "rank's table")
    assert b"web1<img src=x onerror=alert(1)>\\u001b]0;" in table, table
    code, out, stderr, _ = hb.run_tool(["rank", str(bundle.parent), "--jobs", "1", "--format", "json", "--output",
                                        str(tmp_path / "j")], tmp_path)
    _no_raw_controls(out, "rank's JSON")
    assert json.loads(out)["hosts"][0]["hostname"] == HOSTNAME


def _timeline(bundle: Path, tmp_path: Path, fmt: str) -> bytes:
    out = tmp_path / f"t.{fmt}"
    code, _, stderr, _ = hb.run_tool(["timeline", str(bundle), "--format", fmt, "--output", str(out)], tmp_path)
    assert b"Traceback" not in stderr and code in (0, 1), stderr.decode()[-2000:]
    _no_raw_controls(stderr, "timeline's summary")
    return out.read_bytes()


def test_timeline_csv_cells_never_start_a_formula(bundle, tmp_path):
    rows = list(csv.reader(io.StringIO(_timeline(bundle, tmp_path, "csv").decode())))
    descs = [r[2] for r in rows[1:]]
    assert any(d.startswith("'=cmd|") for d in descs), descs  # timestamp_desc from the stream's name
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (cell, row)


def test_timeline_bodyfile_fields_hold_no_separator_or_newline(bundle, tmp_path):
    lines = _timeline(bundle, tmp_path, "bodyfile").decode().splitlines()
    assert lines and all(len(line.split("|")) == 11 for line in lines), lines
    assert not [line for line in lines if line.split("|")[1] == FORGED], lines
    entry = next(line for line in lines if line.split("|")[1].startswith("/etc/x"))
    assert entry.split("|")[1] == "/etc/x\\x7cy" and entry.split("|")[3].startswith("r/rrw-r--r--\\u000a0\\x7c")


def test_timesketch_json_escapes_c1_controls(bundle, tmp_path):
    data = _timeline(bundle, tmp_path, "timesketch")
    _no_raw_controls(data, "timesketch JSONL")
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert any(("echo " + hb.ESC + hb.C1) in r["message"] for r in rows)  # the text itself is intact
    assert all(r["host"] == HOSTNAME for r in rows)

