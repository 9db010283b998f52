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


class _Ordered(_Given):
    def __init__(self, name: str, collector, order: int, budget_s: float = 30, run_ahead: bool = False):
        super().__init__(name, collector, budget_s)
        self.order = order
        self.options = {"run_ahead": True} if run_ahead else {}


def _run_with(artifacts: list[ArtifactSpec], parallel: int) -> tuple[Run, list[str], dict[str, bytes]]:
    buf = io.BytesIO()
    run = Run(Profile("test", "", 60, artifacts), BundleWriter(buf), Redactor(load_secrets()),
              RunOptions(max_duration_s=60, parallel=parallel))
    run.collect_all()
    run.finish({})
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        names = [m.name for m in tar.getmembers()]
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return run, names, members


def _files_phase(log: list[tuple[str, str, float]]) -> list[ArtifactSpec]:
    """A volatile artifact, then files-phase ones: a long walk (the biggest budget: started ahead of the writer),
    small ones that yield as they go, and one whose records overflow the queue it has while it runs ahead."""
    from collectors.base import Blob, Record

    def probe(name: str, records: int, work_s: float = 0.0, blob: bool = False):
        def collect(ctx):
            log.append((name, "start", time.monotonic()))
            time.sleep(work_s)
            if blob:
                yield Blob(f"{name}/first.bin", name.encode())
            for i in range(records):
                yield Record(name, {"i": i})
            log.append((name, "end", time.monotonic()))
        return collect

    return [_Ordered("processes", probe("processes", 3, 0.2), 20),
            _Ordered("config", probe("config", 5, 0.1, blob=True), 66, budget_s=10),
            _Ordered("permissions", probe("permissions", 2, 0.1), 71, budget_s=20),
            _Ordered("bodyfile", probe("bodyfile", 1000, 0.3, blob=True), 95, budget_s=300, run_ahead=True),
            _Ordered("unmarked", probe("unmarked", 1, 0.1), 96 - 1, budget_s=400),
            _Ordered("findings", probe("findings", 1), 99, budget_s=300, run_ahead=True)]


def test_files_phase_runs_ahead_but_writes_in_order():
    """parallel = 2: the longest files-phase collector marked run_ahead runs ahead of the writer (an unmarked one
    with a longer budget does not), never before the volatile phase is written, never the parsers; the bundle's
    members, the records and the custody come out exactly as in a run one after another; the custody says which
    ran ahead and how long it waited for the writer."""
    log: list[tuple[str, str, float]] = []
    run, names, members = _run_with(_files_phase(log), parallel=2)
    at = {(n, what): t for n, what, t in log}
    assert at[("bodyfile", "start")] < at[("config", "end")]  # ahead: it ran beside config
    assert at[("bodyfile", "start")] >= at[("processes", "end")]  # never beside the volatile phase
    assert at[("findings", "start")] >= at[("bodyfile", "end")]  # the parsers alone, at the end
    assert at[("unmarked", "start")] >= at[("bodyfile", "end")]  # not marked run_ahead: in its turn
    results = {r.name: r for r in run.results}
    assert results["bodyfile"].ahead and not results["config"].ahead and not results["processes"].ahead
    assert all(r.status == "complete" for r in run.results)
    assert results["bodyfile"].waited_s > 0  # its 1000 records did not fit its queue while config was written
    assert results["bodyfile"].started_utc < results["config"].ended_utc
    assert len(members["triagent/artifacts/bodyfile.jsonl"].splitlines()) == 1000
    order = [n for n in names if not n.startswith("triagent/") or "/artifacts/" in n]
    log.clear()
    _, names_one, members_one = _run_with(_files_phase(log), parallel=1)
    assert order == [n for n in names_one if not n.startswith("triagent/") or "/artifacts/" in n]
    assert {k: v for k, v in members.items() if "/artifacts/" in k} == \
        {k: v for k, v in members_one.items() if "/artifacts/" in k}
    assert [(n, w) for n, w, _ in log] == [(n, w) for n in ("processes", "config", "permissions", "bodyfile",
                                                            "unmarked", "findings") for w in ("start", "end")]


def test_progress_tells_each_artifact():
    from agent.engine import progress

    events: list[tuple[str, str, int, int | None, str]] = []
    previous = progress.listen(lambda *e: events.append(e))
    try:
        _run_with(_files_phase([]), parallel=2)
    finally:
        progress.listen(previous)
    mine = [(e, t, a) for e, t, a, _, _ in events if t == "artifacts" or t.startswith("artifact:")]
    assert mine[0] == ("start", "artifacts", 0) and events[0][3] == 6 and events[0][4] == "artifacts"
    assert mine[-1] == ("finish", "artifacts", 0)
    for name in ("processes", "config", "permissions", "bodyfile", "findings"):
        i = mine.index(("start", f"artifact:{name}", 0))
        assert mine[i + 1:i + 3] == [("finish", f"artifact:{name}", 0), ("advance", "artifacts", 1)]


def test_a_collector_waiting_for_the_writer_is_not_taken_for_a_stuck_read():
    """A collector that runs ahead and yields while it marks a host read (its mark held across the yield) waits
    for the writer longer than the read timeout: that wait is no stuck read, so the writer, reaching it, must not
    abandon it (the wait on a full queue suspends the mark and renews it after)."""
    from collectors.base import Record

    def slow_first(ctx):
        time.sleep(1.5)
        yield Record("first", {"x": 1})

    def marks_across_yields(ctx):
        with ctx.blocking("/some/dir"):  # one mark for a folder's worth of work, records yielded on the way
            for i in range(400):
                yield Record("walk", {"i": i})
            time.sleep(0.3)  # more work under the same mark, well within the read timeout

    buf = io.BytesIO()
    artifacts = [_Ordered("first", slow_first, 60, budget_s=10), _Ordered("walk", marks_across_yields, 70,
                                                                            budget_s=30, run_ahead=True)]
    run = Run(Profile("test", "", 60, artifacts), BundleWriter(buf), Redactor(load_secrets()),
              RunOptions(max_duration_s=60, parallel=2, read_timeout_s=0.5))
    run.collect_all()
    run.finish({})
    results = {r.name: r for r in run.results}
    assert results["walk"].ahead and results["walk"].status == "complete", results["walk"]
    assert results["walk"].records == 400 and run.abandoned_reads == 0


def test_a_stop_cancels_what_runs_ahead():
    """A stop request while a later collector runs ahead: the rest are skipped, the one ahead is cancelled, the
    bundle seals."""
    from collectors.base import Record

    def first(ctx):
        yield Record("first", {"x": 1})
        run.request_stop("test stop")

    def ahead(ctx):
        while True:
            ctx.check()
            time.sleep(0.01)
            yield Record("ahead", {"x": 1})

    buf = io.BytesIO()
    artifacts = [_Ordered("first", first, 60, budget_s=10), _Ordered("ahead", ahead, 90, budget_s=300,
                                                                      run_ahead=True)]
    run = Run(Profile("test", "", 60, artifacts), BundleWriter(buf), Redactor(load_secrets()),
              RunOptions(max_duration_s=60, parallel=2))
    started = time.monotonic()
    run.collect_all()
    run.finish({})
    assert time.monotonic() - started < 5
    assert [r.status for r in run.results] == ["interrupted", "skipped"] and run.status == "partial"
    import threading

    end = time.monotonic() + 3
    while any(t.name == "collector:ahead" for t in threading.enumerate()) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(t.name == "collector:ahead" for t in threading.enumerate())  # cancelled, not left running


def test_a_big_stream_is_written_in_parts_and_read_back_whole():
    """A stream over JSONL_PART_BYTES is not held whole until its artifact ends (a 50 000-name timeline held
    14 MB of lines: the triage run's peak RSS): it becomes <stream>.jsonl, <stream>.part001.jsonl, ... which
    the one reader joins in order."""
    from agent.bundle.reader import stream_rows
    from agent.engine import pipeline
    from collectors.base import Record

    pad = "x" * 1000
    count = pipeline.JSONL_PART_BYTES // 1000 + 500  # a little over one part

    def big(ctx):
        for i in range(count):
            yield Record("big", {"i": i, "pad": pad})

    assert pipeline.JSONL_PART_BYTES <= 8 << 20
    _, names, members = _run_with([_Ordered("big", big, 60)], parallel=1)
    assert "triagent/artifacts/big.jsonl" in names and "triagent/artifacts/big.part001.jsonl" in names
    with tarfile.open(fileobj=io.BytesIO(_tar(members))) as tar:
        rows = [r["i"] for _, _, r in stream_rows(tar, "big")]
    assert rows == list(range(count))


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
