"""Shared fixtures: a fake evidence root, a way to run triagent (from source or as the built
binary), and bundle readers that go through the standard tarfile module (not our own reader)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path[:0] = [str(TESTS / "support"), str(TESTS / "bench")]

import fakeroot  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip locally with a clear reason; in CI a missing component is a failure."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def evidence_root(tmp_path_factory) -> tuple[Path, fakeroot.Expected]:
    root = tmp_path_factory.mktemp("evidence-root")
    return root, fakeroot.build(root)


def triagent_source() -> list[str]:
    return [sys.executable, "-m", "agent"]


def run_triagent(args: list[str], cmd: list[str] | None = None, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("timeout", 600)
    kw.setdefault("cwd", REPO)
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run((cmd or triagent_source()) + args, **kw)


def summary_of(proc: subprocess.CompletedProcess) -> dict:
    lines = proc.stdout.decode().strip().splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line, got: {proc.stdout[:500]!r} / {proc.stderr[-2000:]!r}"
    assert len(lines[0]) < 2000
    return json.loads(lines[0])


def members(bundle: str | Path) -> dict[str, bytes]:
    """Every regular member's bytes, read with the standard library's tarfile."""
    out = {}
    with tarfile.open(bundle) as tar:
        for m in tar.getmembers():
            if m.isfile():
                out[m.name] = tar.extractfile(m).read()
    return out


def jsonl(bundle_members: dict[str, bytes], stream: str) -> list[dict]:
    data = b"".join(v for k, v in sorted(bundle_members.items())
                    if k == f"triagent/artifacts/{stream}.jsonl" or k.startswith(f"triagent/artifacts/{stream}.part"))
    return [json.loads(line) for line in data.splitlines()]


def raw_tar_bytes(bundle: str | Path) -> bytes:
    data = Path(bundle).read_bytes()
    if data[:2] == b"\x1f\x8b":
        import gzip
        return gzip.decompress(data)
    return data
