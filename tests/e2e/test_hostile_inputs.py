"""Nothing lost, nothing crashes: hostile files, process churn and signals end in a verifiable
bundle, with every problem written to the collection log."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import fakeroot
import pytest
from conftest import REPO, jsonl, members, need, run_triagent, summary_of, triagent_source


def _log(m: dict[str, bytes]) -> list[dict]:
    return [json.loads(line) for line in m["triagent/collection.log.jsonl"].splitlines()]


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    fakeroot.build(root)
    log = root / "var/log"
    os.mkfifo(log / "pipe.log")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(log / "daemon.sock"))
    os.symlink("loop-b", log / "loop-a")
    os.symlink("loop-a", log / "loop-b")
    (log / "subdir").mkdir()
    os.symlink("..", log / "subdir" / "up")  # a directory symlink cycle, never followed
    with open(log / "huge.log", "wb") as f:
        f.truncate(2 << 30)  # 2 GB, sparse
        f.seek((2 << 30) - 18)
        f.write(b"last line of huge\n")
    (root / "etc" / "caf\xe9-\xff.conf".encode("latin-1").decode("utf-8", "surrogateescape")).write_bytes(b"x=1\n")
    secret = root / "etc" / "unreadable.conf"
    secret.write_text("no access\n")
    secret.chmod(0)
    for name, data in (("eve", os.urandom(200_000) + b"\0\xff\xfe"), ("frank", b"A" * (50 << 20) + b"\n")):
        home = root / "home" / name
        home.mkdir(parents=True)
        (home / ".bash_history").write_bytes(data)
    gina = root / "home" / "gina"
    gina.mkdir()
    os.mkfifo(gina / ".bash_history")  # a FIFO where a history should be: must not block
    yield root
    sock.close()


def test_hostile_files_are_logged_and_run_completes(hostile_root, tmp_path):
    # Without DAC override even root gets EACCES on a mode-000 file, as on a hardened host.
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE")
    cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    proc = run_triagent(["collect", "--root", str(hostile_root), "--output", str(tmp_path), "--profile", "full"],
                        cmd=cmd + triagent_source(), timeout=600)
    assert proc.returncode in (0, 1), proc.stderr.decode()[-3000:]
    summary = summary_of(proc)
    assert summary["status"] == "complete", summary
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0
    m = members(summary["bundle"])
    log = _log(m)

    def logged(path_end: str, words: str) -> bool:
        return any((e.get("path") or "").endswith(path_end) and words in e["message"] for e in log)

    assert logged("/var/log/pipe.log", "FIFO")
    assert logged("/var/log/daemon.sock", "socket")
    assert logged("/var/log/loop-a", "ELOOP") and logged("/var/log/loop-b", "ELOOP")
    assert logged("/var/log/huge.log", "capped")
    assert logged("/etc/unreadable.conf", "EACCES")
    assert logged("/home/eve/.bash_history", "binary")
    assert logged("/home/frank/.bash_history", "capped") and logged("/home/frank/.bash_history", "truncated")
    assert logged("/home/gina/.bash_history", "FIFO") or logged("/home/gina/.bash_history", "not a regular")
    assert logged(".conf", "not valid UTF-8")
    huge = m["fs/$rootfs$/var/log/huge.log"]
    assert huge.endswith(b"last line of huge\n") and len(huge) < (100 << 20)  # the tail is kept
    weird = [n for n in m if n.startswith("fs/$rootfs$/etc/caf")]
    assert weird and m[weird[0]] == b"x=1\n"
    frank = [r for r in jsonl(m, "histories") if r["path"] == "/home/frank/.bash_history"]
    assert frank and all(len(r["command"]) <= 65536 for r in frank)


def test_process_churn_during_live_collection(tmp_path):
    churn = subprocess.Popen(["bash", "-c", "for i in $(seq 200); do (sleep 0.0$((RANDOM % 9)) &) ; done; wait"])
    try:
        proc = run_triagent(["collect", "--output", str(tmp_path), "--profile", "minimal"])
    finally:
        churn.wait(timeout=60)
    summary = summary_of(proc)
    assert proc.returncode == 0 and summary["status"] == "complete", summary
    m = members(summary["bundle"])
    assert any(p["pid"] == 1 for p in jsonl(m, "processes"))
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0


def _slow_root(tmp_path: Path) -> Path:
    root = tmp_path / "slow"
    logs = root / "var/log/app"
    logs.mkdir(parents=True)
    block = os.urandom(1 << 20)
    for i in range(120):
        (logs / f"app-{i:03d}.log").write_bytes(block)
    return root


@pytest.mark.parametrize("streaming", [False, True])
def test_sigterm_at_a_random_moment_leaves_a_partial_verifiable_bundle(tmp_path, streaming):
    root = _slow_root(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    args = ["collect", "--root", str(root), "--profile", "full", "--output", "-" if streaming else str(out)]
    sink = open(tmp_path / "stream.tar.gz", "wb") if streaming else subprocess.PIPE
    proc = subprocess.Popen(triagent_source() + args, cwd=REPO, stdout=sink, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    # wait until the run is under way (bundle bytes exist), then strike at a random moment
    target = tmp_path / "stream.tar.gz" if streaming else None
    while time.monotonic() < deadline:
        files = [target] if streaming else list(out.glob("*.tar.gz"))
        if files and files[0].exists() and files[0].stat().st_size > 0:
            break
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 1.5))
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    if streaming:
        sink.close()
    assert proc.returncode == 1, stderr.decode()[-3000:]
    summary = json.loads((stderr if streaming else stdout).decode().strip().splitlines()[-1])
    assert summary["status"] == "partial" and summary["stop_reason"] == "signal SIGTERM"
    bundle = str(target) if streaming else summary["bundle"]
    verified = run_triagent(["verify", bundle])
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["collection_status"] == "partial"
    custody = json.loads(members(bundle)["triagent/custody.json"])
    assert custody["status"] == "partial"
    assert any(a["status"] in ("interrupted", "skipped") for a in custody["artifacts"])


def test_max_duration_partial(tmp_path):
    root = _slow_root(tmp_path)
    proc = run_triagent(["collect", "--root", str(root), "--profile", "full", "--output", str(tmp_path),
                         "--max-duration", "1"])
    summary = summary_of(proc)
    assert proc.returncode == 1 and summary["status"] == "partial"
    assert summary["stop_reason"] == "max-duration reached"
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0
