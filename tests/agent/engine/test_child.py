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
    assert not _no_children_left()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, "the child lives on"


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


def test_raw_copies_scrubbed_in_the_child_are_the_copies_the_parent_would_write(tmp_path, monkeypatch):
    """Small local copies are read and scrubbed in the child: the members, their manifest entries (masked
    counts, key blocks) and the log are those of the parent's own reader and scrubber, for secrets on long and
    short lines, a key block, a tail window that begins inside a key block, a file withheld for its content, one
    bigger than SCRUB_IN_CHILD_MAX (by descriptor to the parent) and one that vanished."""
    root = tmp_path / "root"
    etc = root / "etc"
    etc.mkdir(parents=True)
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAA\n" * 40 + \
        "-----END OPENSSH PRIVATE KEY-----\n"
    (etc / "app.conf").write_text(f"user=alice\npassword = Sup3rS3cretPassw0rd!\napi_token: {token}\n" * 50)
    (etc / "long.txt").write_text(("x" * 5000 + f" AWS_SECRET_ACCESS_KEY={'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'}")
                                  * 40 + "\n")
    (etc / "embedded.txt").write_text("# notes\n" + key + "after the key\n")
    (etc / "id_ed25519").write_text(key)
    (etc / "tail.log").write_text("head line\n" + key * 3 + f"token={token}\n")
    big = "line with password=Hunter2Hunter2 in it\n" * ((child.SCRUB_IN_CHILD_MAX // 40) + 1000)
    (etc / "big.log").write_text(big)
    files = [["/etc/app.conf", 1 << 20, "head"], ["/etc/long.txt", 1 << 20, "head"],
             ["/etc/embedded.txt", 1 << 20, "head"], ["/etc/id_ed25519", 1 << 20, "head"],
             ["/etc/tail.log", 2000, "tail"], ["/etc/big.log", 16 << 20, "head"], ["/etc/gone", 1 << 20, "head"]]
    spec = _Spec("copies", "copies", 60, files=files)

    def outcome(processes: bool) -> tuple[dict, list, list]:
        run, members, _ = _run([spec], processes=processes, root=str(root))
        manifest = json.loads(members["triagent/manifest.json"])["members"]
        entries = [{k: v for k, v in e.items() if k not in ("mtime_ns", "written_ns")} for e in manifest
                   if e.get("artifact") == "copies"]
        log = [(e["level"], e["message"], e.get("path")) for e in run.log]
        fs = {k: v for k, v in members.items() if k.startswith("fs/")}
        return fs, entries, log

    seen = tmp_path / "scrubbed-in-child"
    original = child.ScrubbedCopy.of.__func__

    def noted(cls, copy, *args):  # in the child: its pid and the path, where the test reads them
        with open(seen, "a") as f:
            f.write(f"{os.getpid()} {copy.path}\n")
        return original(cls, copy, *args)

    monkeypatch.setattr(child.ScrubbedCopy, "of", classmethod(noted))
    fs_t, entries_t, log_t = outcome(False)
    fs_c, entries_c, log_c = outcome(True)
    done_in_child = [line.split() for line in seen.read_text().splitlines()]
    assert {path for _, path in done_in_child} == {"/etc/app.conf", "/etc/long.txt", "/etc/embedded.txt",
                                                  "/etc/id_ed25519", "/etc/tail.log"}  # not big.log
    assert all(int(pid) != os.getpid() for pid, _ in done_in_child)
    assert fs_c == fs_t and entries_c == entries_t and log_c == log_t
    assert token.encode() not in fs_c["fs/$rootfs$/etc/app.conf"]
    assert b"Sup3rS3cret" not in fs_c["fs/$rootfs$/etc/app.conf"]
    assert b"b3BlbnNzaC1rZXktdjEAAAAA" not in fs_c["fs/$rootfs$/etc/embedded.txt"]
    assert b"Hunter2Hunter2" not in fs_c["fs/$rootfs$/etc/big.log"]
    assert "fs/$rootfs$/etc/id_ed25519" not in fs_c
    assert any(e.get("masked") for e in entries_c) and any(e.get("redacted_private_key_blocks") for e in entries_c)


def test_what_a_child_ahead_of_the_writer_may_queue_is_bounded_in_bytes(monkeypatch):
    """A child ahead of a busy writer that reads faster than it is written (scrubbed copies carry their bytes):
    what waits in the parent stays within QUEUED_BYTES (plus one frame), and all of it is written."""
    from agent.engine import pipeline

    monkeypatch.setattr(pipeline, "QUEUED_BYTES", 4 << 20)
    peak = [0]
    taken = pipeline._Worker.taken

    def watch(self, size):
        peak[0] = max(peak[0], self.queued_bytes)
        taken(self, size)

    monkeypatch.setattr(pipeline._Worker, "taken", watch)
    specs = [_Spec("first", "slow_start", 60, sleep=1.0),
             _Spec("blobs", "blobs", 61, run_ahead=True, count=40, size=1 << 20)]
    run, members, _ = _run(specs)
    assert [r.status for r in run.results] == ["complete", "complete"], run.log
    assert sum(1 for name in members if name.startswith("blobs/")) == 40
    assert run.results[1].ahead and run.results[1].waited_s > 0.5  # it waited for room, not for ever
    assert 0 < peak[0] <= (4 << 20) + (1 << 20) + 4096, peak[0]


def test_a_collector_whose_child_cannot_be_forked_runs_on_its_thread(monkeypatch):
    """fork(2) refused (a process limit, no memory): the artifact is still collected, on the worker's thread."""
    def refuse():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(child.os, "fork", refuse)
    run, members, _ = _run([_Spec("fine", "fine", 60)])
    assert run.results[0].status == "complete", run.log
    assert _lines(members, "fine")[0]["environ"] == {"DB_PASSWORD": "<redacted>", "LANG": "C"}


@pytest.mark.parametrize("available_kib, ahead", [(24 << 20, 6), (600 << 10, 5), (350 << 10, 1), (None, 1)])
def test_how_many_children_run_ahead_follows_the_memory_the_host_has(tmp_path, available_kib, ahead):
    """Every child ahead of the writer takes memory beside the parent: a small VM runs one at a time."""
    from agent.commands.collect import _children_ahead

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\n" +
                       (f"MemAvailable:   {available_kib} kB\n" if available_kib is not None else ""))
    assert _children_ahead(str(meminfo)) == ahead
    assert _children_ahead(str(tmp_path / "missing")) == 1
