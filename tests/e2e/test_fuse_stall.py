"""Never hang: a FUSE file whose server never answers a read, where a collector looks (a home's
.config/autostart). By default the collector lists the mount and does not enter it; asked to read
it, a SIGTERM or --max-duration still seals a verifiable partial bundle within 10 s, and a read
that makes no progress is abandoned by itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TESTS, members, need, run_triagent, summary_of, triagent_source

SEAL_WITHIN_S = 10.0


def _fuse_ready() -> tuple[bool, str]:
    if not os.path.exists("/dev/fuse"):
        return False, "/dev/fuse is missing (modprobe fuse)"
    try:
        import fuse  # noqa: F401
    except (ImportError, OSError) as exc:
        return False, f"fusepy over libfuse2 is needed (pip install fusepy; apt-get install libfuse2): {exc}"
    if os.geteuid() != 0:
        return False, "mounting FUSE needs root"
    return True, ""


@pytest.fixture
def stalled_root(tmp_path):
    ok, why = _fuse_ready()
    need(ok, why)
    root = tmp_path / "root"
    for d in ("etc", "root", "home/alice/.config/autostart"):
        (root / d).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    (root / "home/alice/.bashrc").write_text("alias ll='ls -l'\n")
    mountpoint = root / "home/alice/.config/autostart"
    log = tmp_path / "fuse-ops.log"
    log.write_text("")
    server = subprocess.Popen([sys.executable, str(TESTS / "support" / "fuse_stall.py"), str(mountpoint), str(log)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not os.path.ismount(mountpoint):
        if server.poll() is not None or time.monotonic() > deadline:
            out = server.stdout.read().decode(errors="replace") if server.poll() is not None else ""
            server.kill()
            pytest.fail(f"the FUSE server did not mount: {out[-2000:]}")
        time.sleep(0.05)
    yield {"root": root, "log": log, "server": server, "mountpoint": mountpoint}
    # killing the server aborts the connection: a reader stuck in the kernel gets ENOTCONN and goes
    server.kill()
    server.wait(10)
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def _wait_for_read(log: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while "read " not in log.read_text():
        assert proc.poll() is None, "the collector ended before it read the stalled file"
        assert time.monotonic() < deadline, "the collector never read the stalled file"
        time.sleep(0.05)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(triagent_source() + args, cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, since: float, server: subprocess.Popen) -> tuple[dict, float]:
    """Read the summary up to EOF (the sealed run lets go of stdout), then release the stuck thread."""
    out = proc.stdout.read()
    elapsed = time.monotonic() - since
    server.kill()  # only now may the abandoned read come back
    proc.wait(30)
    err = proc.stderr.read()
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1, (out[-2000:], err[-2000:])
    return json.loads(lines[0]), elapsed


def _log(bundle: str) -> list[dict]:
    return [json.loads(line) for line in members(bundle)["triagent/collection.log.jsonl"].splitlines()]


def test_fuse_mount_is_listed_not_read_by_default(stalled_root, tmp_path):
    proc = run_triagent(["collect", "--root", str(stalled_root["root"]), "--output", str(tmp_path / "out"),
                         "--profile", "triage", "--max-duration", "120"], timeout=150)
    summary = summary_of(proc)
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0
    ops = stalled_root["log"].read_text()
    assert "read " not in ops and "open " not in ops, ops  # the server was never asked for the file
    notes = [e for e in _log(summary["bundle"]) if "fuse" in e["message"] and "not read" in e["message"]]
    assert notes and notes[0]["path"].startswith("/home/alice/.config/autostart"), notes
    assert "fs/$rootfs$/home/alice/.bashrc" in members(summary["bundle"])


@pytest.mark.parametrize("stop", ["sigterm", "max-duration"])
def test_a_read_that_never_returns_cannot_keep_the_bundle_from_sealing(stalled_root, tmp_path, stop):
    args = ["collect", "--root", str(stalled_root["root"]), "--output", str(tmp_path / "out"), "--profile", "triage",
            "--read-remote-fs", "--read-timeout", "600"]
    if stop == "max-duration":
        args += ["--max-duration", "20"]
    started = time.monotonic()
    proc = _start(args)
    _wait_for_read(stalled_root["log"], proc)
    since = time.monotonic()
    if stop == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:
        since = started + 20  # the run's own deadline
    summary, elapsed = _finish(proc, since, stalled_root["server"])
    print(f"\n[fuse-stall] {stop}: sealed {elapsed:.1f} s after the stop")
    assert elapsed <= SEAL_WITHIN_S, f"sealed {elapsed:.1f} s after the stop"
    assert summary["status"] == "partial"
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0
    log = _log(summary["bundle"])
    stuck = [e for e in log if "evil.desktop" in json.dumps(e) and "abandoned" in e["message"]]
    assert stuck, [e["message"] for e in log if e["level"] == "error"]


def test_a_stalled_read_is_abandoned_and_the_run_goes_on(stalled_root, tmp_path):
    proc = _start(["collect", "--root", str(stalled_root["root"]), "--output", str(tmp_path / "out"),
                   "--profile", "triage", "--read-remote-fs", "--read-timeout", "2", "--max-duration", "300"])
    _wait_for_read(stalled_root["log"], proc)
    summary, elapsed = _finish(proc, time.monotonic(), stalled_root["server"])
    assert elapsed < 60, elapsed
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0
    log = _log(summary["bundle"])
    assert any("evil.desktop" in json.dumps(e) and "no progress for 2 s" in e["message"] for e in log), \
        [e["message"] for e in log if e["level"] == "error"]
    # artifacts after the stalled one still ran
    custody = json.loads(members(summary["bundle"])["triagent/custody.json"])
    done = {r["name"]: r["status"] for r in custody["artifacts"]}
    assert done.get("files.logs") == "complete", done


def test_cleanup_tools_exist():
    need(shutil.which("umount") is not None, "umount (mount) releases the FUSE mount after the tests")
