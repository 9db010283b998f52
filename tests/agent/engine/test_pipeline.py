"""Isolation: a collector that raises, one that overruns its budget and one that hangs become
records in the collection log; the artifacts after them still run; the bundle seals and verifies."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

from agent.bundle.verify import verify
from agent.bundle.writer import BundleWriter
from agent.engine.pipeline import Run, RunOptions
from agent.engine.plan import load_profile, load_secrets
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
