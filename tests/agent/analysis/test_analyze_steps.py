"""analyze = an ordinary run of the parsers writing the analysis bundle, then plain steps over the source
bundle and the records that run wrote (as the bundle holds them: after the redaction gate, under their
member names and lines), whose findings and verdict the same run writes; nothing passes through options,
folders beside the bundle or a dict the steps fill."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from agent.analysis import analyze, steps
from agent.analysis import rules as engine
from agent.analysis.findings import AnalysisRows
from agent.bundle.reader import BundleView, stream_rows
from agent.engine.pipeline import Run, RunOptions
from agent.engine.plan import Profile, load_profile, load_secrets
from agent.engine.redact import Redactor
from collectors.base import Record

SNAPSHOT = "2026-11-23T10:00:00.000000Z"
PSLIST = "volatility.linux.pslist.PsList"


def _source(path: Path) -> str:
    custody = {"artifacts": [{"name": "processes", "started_utc": SNAPSHOT, "ended_utc": SNAPSHOT}]}
    members = {"triagent/custody.json": json.dumps(custody).encode(),
               "triagent/artifacts/processes.jsonl": json.dumps({"pid": 1, "name": "init"}).encode() + b"\n"}
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_the_writer_keeps_what_the_steps_read_as_written(tmp_path):
    with open(tmp_path / "a.tar.gz", "wb") as out:
        writer = analyze.KeepingWriter(out, "gzip", {PSLIST})
        writer.add_bytes(f"triagent/artifacts/{PSLIST}.jsonl", b'{"PID": 1}\n', time.time_ns())
        writer.add_bytes(f"triagent/artifacts/{PSLIST}.part001.jsonl", b'{"PID": 2}\n', time.time_ns())
        writer.add_bytes("triagent/artifacts/volatility.linux.lsof.Lsof.jsonl", b'{"PID": 1}\n', time.time_ns())
        kept = writer.stop_keeping()
        writer.add_bytes(f"triagent/artifacts/{PSLIST}.part002.jsonl", b'{"PID": 3}\n', time.time_ns())
        writer.seal({}, time.time_ns())
    assert [(m.rsplit("/", 1)[1], n, r["PID"]) for m, n, r in kept(PSLIST.split(".", 1)[1])] == [
        (f"{PSLIST}.jsonl", 1, 1), (f"{PSLIST}.part001.jsonl", 1, 2)]
    assert not kept.has("linux.lsof.Lsof")
    with BundleView(str(tmp_path / "a.tar.gz")) as view:  # the bundle holds everything, kept or not
        assert [r["PID"] for _, _, r in stream_rows(view, PSLIST)] == [1, 2, 3]


def test_steps_read_the_parsers_records_and_return_the_verdict(tmp_path):
    source = _source(tmp_path / "source.tar")
    book = steps.load()
    parsed = [Record(PSLIST, {"PID": 1, "COMM": "init", "CREATION TIME": "2026-11-23T09:00:00+00:00"}),
              Record(PSLIST, {"PID": 666, "COMM": "evil", "CREATION TIME": "2026-11-23T09:30:00+00:00"})]
    profile = load_profile("analysis")
    findings_spec = next(a for a in profile.artifacts if a.name == "findings")
    parser = analyze._Made(name="volatility", collector="-", order=1, budget_s=60, made=parsed)
    with open(tmp_path / "a.tar.gz", "wb") as out:
        writer = analyze.KeepingWriter(out, "gzip", book.streams_read())
        run = Run(Profile("analysis", "", 600, [parser]), writer, Redactor(load_secrets()),
                  RunOptions(root=source, output_dir=str(tmp_path)))
        run.collect_all()
        result = analyze._findings(run, findings_spec, source, writer.stop_keeping(), book)
        run.finish({})
    assert result is not None and result.verdict is not None
    hidden = [f for f in result.findings if f.get("kind") == "process_hidden_from_live_view"]
    assert [(f["rule"], f["pid"], f["evidence"]) for f in hidden] == [
        ("TRI-PROC-004", 666, [{"bundle": "analysis", "member": f"triagent/artifacts/{PSLIST}.jsonl", "line": 2}])]
    assert result.verdict["memory_analysed"] is True and result.verdict["recommendation"] == "yes"
    assert [r.name for r in run.results] == ["volatility", "findings"]
    assert run.results[-1].status == "complete" and run.results[-1].records == len(result.findings) + 1
    with BundleView(str(tmp_path / "a.tar.gz")) as view:
        written = [r for _, _, r in stream_rows(view, "findings")]
        assert written == json.loads(json.dumps(result.findings))
        assert [r for _, _, r in stream_rows(view, "verdict")] == [result.verdict]


def test_steps_out_of_time_make_the_artifact_a_timeout(tmp_path):
    source = _source(tmp_path / "source.tar")
    profile = load_profile("analysis")
    spec = next(a for a in profile.artifacts if a.name == "findings")
    spec.budget_s = -1  # no time at all: the first check stops the steps
    with open(tmp_path / "a.tar.gz", "wb") as out:
        writer = analyze.KeepingWriter(out, "gzip", set())
        run = Run(Profile("analysis", "", 600, []), writer, Redactor(load_secrets()), RunOptions(root=source))
        result = analyze._findings(run, spec, source, AnalysisRows(), steps.load())
        run.finish({})
    assert result is None and run.results[-1].status == "timeout" and run.status == "partial"


def test_sigma_reads_the_log_records_the_analysis_made(tmp_path):
    """dissect.target's log records of this analysis (kept as written) reach the Sigma rules, and the
    finding points into the analysis bundle."""
    if importlib.util.find_spec("sigma") is None:
        pytest.skip("pySigma (the analysis extra) is not installed")
    rules = tmp_path / "rules"
    shutil.copytree(engine.rules_folder(), rules, ignore=shutil.ignore_patterns("sigma"))
    (rules / "sigma").mkdir()
    (rules / "sigma" / "new_user.yml").write_text(yaml.safe_dump({
        "title": "new user", "logsource": {"product": "linux", "service": "auth"},
        "detection": {"s": {"message|contains": "new user"}, "condition": "s"}, "level": "high"}))
    book = steps.load(str(rules))
    assert "dissect.authlog" in book.streams_read()
    member = "triagent/artifacts/dissect.authlog.jsonl"
    kept = AnalysisRows({member: b'{"message": "sshd: hello"}\n{"message": "new user: name=x, UID=0,"}\n'})
    result = steps.analyse(_source(tmp_path / "source.tar"), kept, book)
    hits = [f for f in result.findings if f.get("source") == "sigma"]
    assert [(f["title"], f["evidence"][0]) for f in hits] == [
        ("new user", {"bundle": "analysis", "member": member, "line": 2})], hits


def test_the_findings_artifact_says_when_its_steps_began(tmp_path):
    """custody's times of the findings artifact cover the steps, not only the writing of their items, and
    are written as the pipeline writes every artifact's (microseconds, Z)."""
    source = _source(tmp_path / "source.tar")
    spec = next(a for a in load_profile("analysis").artifacts if a.name == "findings")
    with open(tmp_path / "a.tar.gz", "wb") as out:
        run = Run(Profile("analysis", "", 600, []), analyze.KeepingWriter(out, "gzip", set()),
                  Redactor(load_secrets()), RunOptions(root=source))
        before = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        analyze._findings(run, spec, source, AnalysisRows(), steps.load())
        run.finish({})
    result = run.results[-1]
    assert before <= result.started_utc <= result.ended_utc and len(result.started_utc) == len(result.ended_utc)
