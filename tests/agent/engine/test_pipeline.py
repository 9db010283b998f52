"""Isolation: a collector that raises, one that overruns its budget and one that hangs become
records in the collection log; the artifacts after them still run; the bundle seals and verifies."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

from agent.bundle.verify import verify
from agent.bundle.writer import BundleWriter
from agent.engine.pipeline import Run, RunOptions
from agent.engine.plan import ArtifactSpec, Profile, load_profile, load_secrets
from agent.engine.redact import Redactor

SPEC = """
[[artifact]]
name = "{name}"
collector = "sample_collectors:{name}"
order = {order}
budget_s = {budget}
"""


def _specs(tmp_path):
    (tmp_path / "artifacts").mkdir(parents=True)
    (tmp_path / "profiles").mkdir()
    spec = "".join(SPEC.format(name=n, order=i, budget=b)
                   for i, (n, b) in enumerate((("boom", 5), ("slow", 0.5), ("hang", 0.5), ("fine", 5))))
    (tmp_path / "artifacts" / "test.toml").write_text(spec)
    (tmp_path / "profiles" / "test.toml").write_text('artifacts = ["fine", "hang", "slow", "boom"]\n')
    return tmp_path


def test_failures_and_timeouts_are_isolated(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "support"))
    profile = load_profile("test", specs_dir=_specs(tmp_path / "specs"))
    assert [a.name for a in profile.artifacts] == ["boom", "slow", "hang", "fine"]  # order of volatility
    buf = io.BytesIO()
    run = Run(profile, BundleWriter(buf), Redactor(load_secrets()), RunOptions(max_duration_s=60))
    started = time.monotonic()
    run.collect_all()
    run.finish({})
    assert time.monotonic() - started < 10  # the hanging collector was abandoned at its budget
    status = {r.name: r.status for r in run.results}
    assert status == {"boom": "failed", "slow": "timeout", "hang": "timeout", "fine": "complete"}
    assert run.status == "partial"
    messages = [e["message"] for e in run.log]
    assert any("collector failed: RuntimeError: collector bug" in m for m in messages)
    assert sum("timeout" in m for m in messages) == 2
    (tmp_path / "b.tar.gz").write_bytes(buf.getvalue())
    assert verify(str(tmp_path / "b.tar.gz")).ok
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        fine = json.loads(tar.extractfile("triagent/artifacts/fine.jsonl").read())
        assert fine["environ"] == {"DB_PASSWORD": "<redacted>", "LANG": "C"}
        assert tar.extractfile("triagent/artifacts/boom.jsonl").read()  # what came before the bug is kept
        assert len(tar.extractfile("triagent/artifacts/slow.jsonl").read().splitlines()) >= 3


def test_memory_parts_bounded_and_never_interleaved() -> None:
    """AVML records and companion (LiME) chunks fill parts of their own kind up to the target; pages
    that alternate between the two kinds do not make a part per alternation; read() returns the bytes
    in order without joining them."""
    from agent.engine.pipeline import _parts
    from collectors.memory.image import Companion

    def shape(chunks: list[bytes], target: int = 10) -> list[tuple[bool, int]]:
        return [(p.companion, p.size) for p in _parts(iter(chunks), target)]

    assert shape([]) == [(False, 0)]  # an empty image is still one (empty) part
    alternating = [b"a" * 4, Companion(b"c" * 3), b"a" * 7, Companion(b"c" * 8), b"a" * 2] * 3
    parts = shape(alternating)
    assert sum(s for k, s in parts if not k) == 39 and sum(s for k, s in parts if k) == 33
    assert len(parts) == 7 and all(s <= 10 + 8 for _, s in parts), parts  # one part per alternation made 15
    part = next(_parts(iter([b"ab", b"", b"cde", b"f"]), 100))
    out = b""
    while piece := part.read(2):
        out += bytes(piece)
    assert out == b"abcdef" and part.size == 6


class _Given(ArtifactSpec):
    """An artifact whose collector is a function of this test, not a name in specs/."""

    def __init__(self, name: str, collector, budget_s: float = 30):
        super().__init__(name, f"test:{name}", 0, budget_s)
        self.collector_fn = collector

    def load(self):
        return self.collector_fn


def _run(*artifacts: ArtifactSpec) -> tuple[Run, dict[str, bytes]]:
    buf = io.BytesIO()
    run = Run(Profile("test", "", 60, list(artifacts)), BundleWriter(buf), Redactor(load_secrets()),
              RunOptions(max_duration_s=60))
    run.collect_all()
    run.finish({})
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return run, members


def test_a_stream_is_reported_as_its_collector_declares() -> None:
    """The engine knows no collector: the stream's report record, its summary line, its companion member
    and what a record adds to the custody are all declared by the collector (here, not the memory one)."""
    from collectors.base import CompanionChunk, Record, Stream

    def chunks(stop, lag=0):
        yield from (b"abc", CompanionChunk(b"zz"), b"def")

    def generated(ctx):
        yield Record("facts", {"host": "h"}, custody={"machine": {"id": "m-1"}})
        yield Stream("gen/data.bin", None, chunks, lambda: None, report_stream="gen_report", label="generated thing",
                     summary_key="gen",
                     companion="side.bin", companion_why="bytes the main format cannot hold")

    run, members = _run(_Given("gen", generated))
    assert run.results[0].status == "complete" and run.custody_facts == {"machine": {"id": "m-1"}}
    assert members["gen/data.bin.part0000"] == b"abcdef"
    assert members["gen/data.bin-side.bin.part0000"] == b"zz"
    report = json.loads(members["triagent/artifacts/gen_report.jsonl"])
    assert report["sha256"] == hashlib.sha256(b"abcdef").hexdigest() and report["complete"] is True
    assert report["companion"] == {"member": "gen/data.bin-side.bin.part*", "sha256": hashlib.sha256(b"zz").hexdigest(),
                                   "why": "bytes the main format cannot hold"}
    assert run.highlights["gen"] == {k: report[k] for k in ("member", "sha256", "bytes", "complete")}
    assert any(e["message"].startswith("generated thing gen/data.bin.part*: 8 bytes") for e in run.log)
    assert "triagent/artifacts/memory_image.jsonl" not in members and "memory" not in run.highlights


def test_a_stream_over_its_budget_says_so_once() -> None:
    """A stream still flowing when its artifact's budget ends: cut, one log line (not one per chunk), and
    the result names the budget (it said "stopped")."""
    from collectors.base import Stream

    def endless(stop, lag=0):
        while not stop():
            time.sleep(0.01)
            yield b"x" * 100

    run, _ = _run(_Given("slow", lambda ctx: iter([Stream("slow.bin", None, endless, lambda: None)]), budget_s=0.3))
    result = run.results[0]
    assert (result.status, result.reason) == ("timeout", "artifact time budget exhausted"), result
    assert sum(e["message"] == "artifact time budget exhausted while streaming" for e in run.log) == 1
