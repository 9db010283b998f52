"""Files-phase collectors in forked child processes (agent/engine/child.py): the same members, records and custody
as on threads; a raw copy is of the file that was opened (its descriptor crosses, never its path); a collector's
bug, a child killed under its feet and a read that never returns are each a record and the run goes on; no child
outlives its artifact, nor a parent killed with SIGKILL; the parent takes no object it did not list."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from agent.bundle.verify import verify
from agent.bundle.writer import BundleWriter
from agent.engine import child
from agent.engine.pipeline import Run, RunOptions
from agent.engine.plan import ArtifactSpec, Profile, load_secrets
from agent.engine.redact import Redactor

SUPPORT = Path(__file__).resolve().parents[2] / "support"
REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(not child.available(), reason="fork(2) and SCM_RIGHTS are Linux's")


class _Spec(ArtifactSpec):
    """A files-phase artifact (order 60 on) whose collector is a function of tests/support/sample_collectors."""

    def __init__(self, name: str, function: str, order: int, budget_s: float = 30, **options):
        super().__init__(name, f"sample_collectors:{function}", order, budget_s)
        self.options = dict(options)


def _run(specs: list[ArtifactSpec], processes: bool = True, root: str = "/", read_timeout_s: float = 30,
         tmp_path: Path | None = None) -> tuple[Run, dict[str, bytes], list[str]]:
    buf = io.BytesIO()
    run = Run(Profile("test", "", 60, specs), BundleWriter(buf), Redactor(load_secrets()),
              RunOptions(root=root, max_duration_s=60, processes=processes, read_timeout_s=read_timeout_s))
    run.collect_all()
    run.finish({})
    if tmp_path is not None:
        (tmp_path / "b.tar.gz").write_bytes(buf.getvalue())
        assert verify(str(tmp_path / "b.tar.gz")).ok
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        names = [m.name for m in tar.getmembers()]
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return run, members, names


def _lines(members: dict[str, bytes], stream: str) -> list[dict]:
    return [json.loads(x) for x in members[f"triagent/artifacts/{stream}.jsonl"].splitlines()]


def _no_children_left(within: float = 5.0) -> list[psutil.Process]:
    end = time.monotonic() + within
    while True:
        left = [c for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def _sample_collectors(monkeypatch):
    monkeypatch.syspath_prepend(str(SUPPORT))


def test_a_collector_in_a_child_gives_what_it_gives_on_a_thread(tmp_path):
    """The same artifacts on threads and in children: the same members in the same order with the same records,
    the gate applied in the parent (a secret in an environment redacted), a bug recorded with its own type."""
    specs = [_Spec("fine", "fine", 60), _Spec("boom", "boom", 61), _Spec("slow", "slow", 62, budget_s=0.6)]
    run_t, members_t, names_t = _run(specs, processes=False)
    run_c, members_c, names_c = _run(specs, processes=True, tmp_path=tmp_path)
    assert names_c == names_t
    for stream in ("fine", "boom"):
        assert members_c[f"triagent/artifacts/{stream}.jsonl"] == members_t[f"triagent/artifacts/{stream}.jsonl"]
    assert _lines(members_c, "fine")[0]["environ"] == {"DB_PASSWORD": "<redacted>", "LANG": "C"}
    assert run_c.redactor.redactions == run_t.redactor.redactions > 0  # gated in the child, counted in the parent
    assert {r.name: r.status for r in run_c.results} == {"fine": "complete", "boom": "failed", "slow": "timeout"}
    assert any("collector failed: RuntimeError: collector bug" in e["message"] for e in run_c.log)
    assert len(_lines(members_c, "slow")) >= 3
    assert not _no_children_left()


def test_a_raw_copy_is_of_the_opened_file_not_of_its_path_later(tmp_path):
    """The child opens the file through the confined reader, then replaces it: the parent copies the bytes of the
    descriptor it was sent. Reopening by path would copy the replacement."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "motd").write_text("ORIGINAL CONTENT\n" * 1000)
    run, members, _ = _run([_Spec("copy", "copy_then_swap", 60, path="/etc/motd")], root=str(root))
    assert run.results[0].status == "complete", run.log
    assert members["fs/$rootfs$/etc/motd"] == b"ORIGINAL CONTENT\n" * 1000
    assert (root / "etc" / "motd").read_text() == "SWAPPED IN AFTER THE OPEN\n"
    assert _lines(members, "copied")[0]["pid"] != os.getpid()  # it did run in a child
    assert not _no_children_left()


def test_a_child_killed_under_its_feet_is_a_failure_and_the_run_goes_on():
    run, members, _ = _run([_Spec("dies", "dies", 60), _Spec("fine", "fine", 61)])
    status = {r.name: r.status for r in run.results}
    assert status == {"dies": "failed", "fine": "complete"}, run.log
    assert _lines(members, "dies") == [{"before": True}]  # what came before is kept
    assert any("child process ended" in e["message"] for e in run.log), run.log
    assert not _no_children_left()


def test_a_read_that_never_returns_in_a_child_is_abandoned_and_the_child_killed(tmp_path):
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    run, members, _ = _run([_Spec("stuck", "stuck_read", 60, budget_s=60, pid_file=str(pid_file)),
                            _Spec("fine", "fine", 61)], read_timeout_s=1.0)
    assert time.monotonic() - started < 10
    status = {r.name: r.status for r in run.results}
    assert status == {"stuck": "timeout", "fine": "complete"}, run.log
    message = next(e["message"] for e in run.log if e["artifact"] == "stuck" and e["level"] == "error")
    assert "a read of /never/returns made no progress for 1 s" in message, message
    assert "its read of /never/returns never returned" in message and run.abandoned_reads == 1
    assert _lines(members, "stuck") == [{"before": True}]
    pid = int(pid_file.read_text())
    assert not _no_children_left() and not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_values_no_json_knows_arrive_as_the_sink_would_write_them_and_through_the_gate():
    run_t, members_t, _ = _run([_Spec("odd", "odd_values", 60)], processes=False)
    run_c, members_c, _ = _run([_Spec("odd", "odd_values", 60)], processes=True)
    assert run_c.results[0].status == "complete", run_c.log
    odd = _lines(members_c, "odd")[0]
    assert odd == _lines(members_t, "odd")[0]
    assert odd["when"] == "2026-01-02 03:04:05" and odd["where"] == "/etc/x" and odd["what"] == "custom-value"
    assert "a1B2c3D4e5F6g7H8i9J0" not in json.dumps(odd)  # the token was masked in the parent's gate


def test_the_parent_unpickles_no_class_it_did_not_list():
    import pickle

    payload = pickle.dumps([os.system], protocol=pickle.HIGHEST_PROTOCOL)  # a global a frame could name
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        child._Unpickler(io.BytesIO(payload)).load()


def test_a_child_dies_with_its_parent(tmp_path):
    """SIGKILL the collector while a child walks: the child must not go on reading the host (PR_SET_PDEATHSIG)."""
    pid_file = tmp_path / "pid"
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import io, sys
        sys.path[:0] = [{str(REPO)!r}, {str(SUPPORT)!r}]
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_child import _Spec
        from agent.bundle.writer import BundleWriter
        from agent.engine.pipeline import Run, RunOptions
        from agent.engine.plan import Profile, load_secrets
        from agent.engine.redact import Redactor
        spec = _Spec("stuck", "stuck_read", 60, budget_s=300, pid_file={str(pid_file)!r})
        Run(Profile("t", "", 600, [spec]), BundleWriter(io.BytesIO()), Redactor(load_secrets()),
            RunOptions(max_duration_s=600, processes=True, read_timeout_s=300)).collect_all()
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert parent.poll() is None and time.monotonic() < end, "the child never started"
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        assert psutil.Process(pid).ppid() == parent.pid
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        end = time.monotonic() + 5
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < end, "the child outlived its parent"
            time.sleep(0.05)
    finally:
        parent.kill()


def test_a_child_holds_neither_the_parents_stdio_nor_another_childs_socket():
    """stdout may be the bundle stream or SSM's pipe: a child stuck in the kernel must not keep it open after the
    parent ends. Three children at once: each holds its own socket only, so the parent sees each one end."""
    specs = [_Spec(f"inherited{n}", "inherited", 60 + n, run_ahead=True, sleep=0.3) for n in range(3)]
    buf = io.BytesIO()
    run = Run(Profile("test", "", 60, specs), BundleWriter(buf), Redactor(load_secrets()),
              RunOptions(max_duration_s=60, processes=True, parallel=3))
    run.collect_all()
    run.finish({})
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert [r.ahead for r in run.results] == [False, True, True]
    for n in range(3):
        seen = _lines(members, f"inherited{n}")[0]
        assert seen["stdio"] == ["/dev/null"] * 3, seen
        assert seen["sockets"] == 1, seen
