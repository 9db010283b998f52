"""The single binary, run as SSM runs it (env -i, no HOME, tiny PATH, cwd /usr/bin), under strace:
it executes no other program and creates nothing outside --output and its unpack directory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, members, need, run_triagent, summary_of
from openssl_trap import evil_openssl_conf

BINARY = REPO / "dist" / "triagent"
SSM_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
SOURCE_SUFFIXES = (".py", ".toml", ".spec", ".sh", ".patch", ".cfg", ".yaml", ".yml", ".yar", ".lock")


def source_digest() -> str:
    """Same digest as build/build.sh writes to dist/triagent.sources."""
    files = [p for top in ("agent", "collectors", "specs", "build", "setup.cfg") for p in
             ([REPO / top] if (REPO / top).is_file() else (REPO / top).rglob("*"))
             if p.is_file() and p.name.endswith(SOURCE_SUFFIXES) and ".venv" not in p.parts
             and "__pycache__" not in p.parts and not str(p.relative_to(REPO)).startswith("build/work/")]
    lines = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(REPO)}\n"
                    for p in sorted(files, key=lambda p: str(p.relative_to(REPO)).encode()))
    return hashlib.sha256(lines.encode()).hexdigest()


# The collector binary lands on suspect hosts (pushed, downloaded, carried on trusted media): its budget.
# It fits because it leaves out the responder-only rule kinds; dist/triagent-responder carries them.
COLLECTOR_MAX_BYTES = 40_000_000


def _stale(path: Path = BINARY) -> bool:
    stamp = path.with_name(f"{path.name}.sources")
    return not path.exists() or not stamp.exists() or stamp.read_text().strip() != source_digest()


def fresh(path: Path, build_if_missing: bool = True) -> Path:
    """``path`` built from the current sources: build/build.sh (which builds every binary) runs when it is
    stale. A missing binary is built too, or, with build_if_missing=False, skipped locally with the reason
    (and a failure in CI, where tests/run.sh has built it)."""
    if not path.exists() and not build_if_missing:
        need(False, f"{path.relative_to(REPO)} is missing (bash build/build.sh builds it)")
    if _stale(path):
        proc = subprocess.run(["bash", "build/build.sh"], cwd=REPO, capture_output=True, timeout=3600)
        need(proc.returncode == 0, f"build/build.sh failed: {proc.stderr.decode()[-1500:]}")
        need(path.exists(), f"build/build.sh did not build {path.relative_to(REPO)}")
    return path


@pytest.fixture(scope="session")
def binary() -> Path:
    """Build once per session (tests/run.sh builds before pytest; this catches a stale binary)."""
    return fresh(BINARY)


def test_collector_binary_stays_within_its_budget(binary):
    size = binary.stat().st_size
    assert size <= COLLECTOR_MAX_BYTES, f"{binary} is {size} bytes, over {COLLECTOR_MAX_BYTES}"


def _ssm_run(binary: Path, args: list[str], prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run((prefix or []) + [str(binary)] + args, env=SSM_ENV, cwd="/usr/bin",
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=900)


def test_binary_collects_like_ssm_runs_it(binary, tmp_path):
    proc = _ssm_run(binary, ["collect", "--output", str(tmp_path), "--case-id", "SSM-1"])
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    summary = summary_of(proc)
    assert summary["status"] == "complete" and "warning" not in summary, summary
    check = _ssm_run(binary, ["verify", summary["bundle"]])
    assert check.returncode == 0, check.stdout
    custody = json.loads(members(summary["bundle"])["triagent/custody.json"])
    tool = custody["tool"]
    assert tool["frozen"] is True
    assert tool["binary_sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()
    sbom = binary.parent / f"{binary.name}.cdx.json"  # build/sbom.py writes it beside the binary
    assert tool["sbom"] == sbom.name and tool["sbom_sha256"] == hashlib.sha256(sbom.read_bytes()).hexdigest()
    assert tool["unpack_dir"].startswith("/dev/shm/") and tool["unpack_fs"] == "tmpfs"
    m = members(summary["bundle"])
    assert any(p["pid"] == 1 for p in map(json.loads, m["triagent/artifacts/processes.jsonl"].splitlines()))
    assert not os.listdir("/dev/shm") or not any(n.startswith("_MEI") for n in os.listdir("/dev/shm")), \
        "the unpack directory must be removed at exit"


def test_trusted_media_self_check(binary, tmp_path):
    """--expect-sha256: the value build.sh printed lets the binary run; any other refuses before collecting."""
    recorded = (binary.parent / f"{binary.name}.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(binary.read_bytes()).hexdigest()
    proc = _ssm_run(binary, ["collect", "--profile", "minimal", "--output", str(tmp_path / "ok"),
                             "--expect-sha256", recorded])
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    custody = json.loads(members(summary_of(proc)["bundle"])["triagent/custody.json"])
    assert custody["tool"]["expected_sha256_matched"] is True
    wrong = "0" * 64
    proc = _ssm_run(binary, ["collect", "--profile", "minimal", "--output", str(tmp_path / "no"),
                             "--expect-sha256", wrong])
    assert proc.returncode == 3 and b"refusing to run" in proc.stderr, proc.stderr
    assert not (tmp_path / "no").exists(), "a refused run must write nothing"


def _strace(tmp_path: Path, calls: str, cmd: list[str], out: Path | str, env: dict | None, cwd: str) -> str:
    need(shutil.which("strace") is not None, "strace is needed (apt-get install strace)")
    log = tmp_path / "strace.log"
    proc = subprocess.run(["strace", "-f", "-qq", "-y", "-s", "512", "-e", f"trace={calls}", "-o", str(log)]
                          + cmd + ["collect", "--output", str(out), "--profile", "triage"],
                          env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=900)
    if out == "-":
        assert proc.stdout[:2] == b"\x1f\x8b" and len(proc.stdout) > 10000  # the bundle came out on stdout
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return log.read_text(errors="replace")


@pytest.mark.parametrize("mode", ["binary", "source"])
def test_no_program_but_itself_is_executed(request, tmp_path, mode):
    out = tmp_path / "out"
    if mode == "binary":
        binary = request.getfixturevalue("binary")
        cmd, env, cwd, allowed = [str(binary)], SSM_ENV, "/usr/bin", {os.path.realpath(binary)}
    else:
        import sys
        cmd, env, cwd = [sys.executable, "-m", "agent"], None, str(REPO)
        allowed = {os.path.realpath(sys.executable), sys.executable}
    log = _strace(tmp_path, "execve,execveat", cmd, out, env, cwd)
    executed = re.findall(r'execve(?:at)?\((?:[^,]*, )?"([^"]+)"', log)
    assert executed, log[:2000]
    strangers = sorted({p for p in executed if os.path.realpath(p) not in allowed and p not in allowed})
    assert not strangers, f"host programs executed: {strangers}"


WRITE_CALL = re.compile(
    r'^\d+\s+(?P<call>openat2?|open|creat|mkdirat|mkdir|renameat2?|rename|linkat|link|symlinkat|symlink|mknodat|mknod|'
    r'unlinkat|unlink|rmdir|truncate)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+)')


def _created_paths(log: str) -> list[tuple[str, str]]:
    """(call, path) for every successful call that creates, changes or removes a directory entry or
    opens a file for writing. Paths come decorated by strace -y (dirfd<path>) or as given."""
    found = []
    for line in log.splitlines():
        m = WRITE_CALL.match(line)
        if not m or m.group("ret").startswith("-"):
            continue
        call, args = m.group("call"), m.group("args")
        if call.startswith("open"):
            if not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", args):
                continue
        dirfd = re.match(r"\d+<([^>]*)>, ", args)
        for path in re.findall(r'"([^"]*)"', args)[:2]:
            if not path.startswith("/") and dirfd:
                path = dirfd.group(1).rstrip("/") + "/" + path
            found.append((call, path))
    return found


# The collector's own settings under /proc/self: they change how the kernel treats this process (the OOM killer
# takes it first), not anything on disk. Any other /proc or /sys write is still a footprint and fails the test.
OWN_PROCESS_TUNABLES = ("/proc/self/oom_score_adj",)


@pytest.mark.parametrize("streaming", [False, True])
def test_nothing_created_outside_output_and_unpack_dir(binary, tmp_path, streaming):
    out = tmp_path / "out"
    log = _strace(tmp_path, "%file,creat", [str(binary)], "-" if streaming else out, SSM_ENV, "/usr/bin")
    allowed = ("\0",) if streaming else (str(out) + "/", str(out))  # streaming: nothing at all
    writes = _created_paths(log)
    if not streaming:
        assert any(p.startswith(str(out)) for _, p in writes), "the bundle itself must show up as a write"
    unpack = [p for _, p in writes if re.match(r"/dev/shm/_MEI\w+", p)]
    assert unpack, "expected the onefile to unpack under /dev/shm"
    bad = sorted({(c, p) for c, p in writes if not p.startswith(allowed) and not re.match(r"/dev/shm/_MEI\w+", p)
                  and p not in ("/dev/null", "/dev/tty") and p not in OWN_PROCESS_TUNABLES})
    assert not bad, f"writes outside --output and the unpack dir: {bad[:20]}"


def _unpack_writers(binary: Path, tmp_path: Path, env: dict[str, str]) -> set[str]:
    """The processes that create the onefile's unpacked files (strace -f), before the Python child starts."""
    log = tmp_path / "unpack.strace"
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,execve", "-o", str(log), str(binary),
                           "--version"], env=env, cwd="/usr/bin", stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    writers = set()
    for line in log.read_text(errors="replace").splitlines():
        pid, _, call = line.partition(" ")
        call = call.lstrip()
        if call.startswith("execve(") and " = 0" in call and writers:
            break  # the Python child: unpacking is over
        if re.match(r'openat\(AT_FDCWD, "/dev/shm/_MEI\w+/[^"]+", O_WRONLY\|O_CREAT', call) and not call.endswith("-1"):
            writers.add(pid)
    return writers


def test_unpack_is_shared_by_two_processes(binary, tmp_path):
    """The patched bootloader (build/bootloader-parallel-extract.patch) inflates the archive in two processes,
    its most expensive start-up step (0.27 -> 0.16 s for `--version` here); TRIAGENT_UNPACK_SERIAL=1 keeps it
    in one, as stock PyInstaller does."""
    need(shutil.which("strace") is not None, "strace is missing (apt-get install strace)")
    assert len(_unpack_writers(binary, tmp_path, SSM_ENV)) == 2
    assert len(_unpack_writers(binary, tmp_path, dict(SSM_ENV, TRIAGENT_UNPACK_SERIAL="1"))) == 1


def _unpacked_entries(binary: Path) -> dict[str, str]:
    """{name: SHA-256} of the files a onefile binary unpacks (binaries, data, zip files), read by PyInstaller."""
    py = REPO / "build" / ".venv" / "bin" / "python"
    need(py.exists(), f"{py} is missing (bash build/build.sh makes the build venv, which has PyInstaller)")
    listing = subprocess.run([str(py), "-c", """if True:
        import hashlib, json, sys
        from PyInstaller.archive.readers import CArchiveReader
        r = CArchiveReader(sys.argv[1])
        print(json.dumps({n: hashlib.sha256(r.extract(n)).hexdigest() for n, e in r.toc.items() if e[4] in "bxZ"}))
        """, str(binary)], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(listing.stdout)


def test_collector_unpacks_nothing_it_never_uses(binary):
    """Every start unpacks every file: the collector leaves out chardet (cyclonedx-bom's, in the build venv only)
    and volatility3's Windows and macOS symbol tables and plugin sources (analyze reads Linux memory), and keeps
    the Linux plugins volatility3 finds by walking its folders."""
    names = set(_unpacked_entries(binary))
    assert not [n for n in names if n.startswith("chardet/")]
    for os_name in ("windows", "mac"):
        assert not [n for n in names if n.startswith((f"volatility3/framework/symbols/{os_name}/",
                                                      f"volatility3/framework/plugins/{os_name}/"))], os_name
    assert "volatility3/framework/plugins/linux/pslist.py" in names
    assert any(n.startswith("volatility3/framework/symbols/linux/") for n in names)


def test_unpacked_tree_is_the_archive(binary, tmp_path):
    """Every file the two unpacking processes write is the archive's entry, byte for byte, and none is missing
    or extra: read while the collector runs (its bundle goes to a pipe nobody reads yet)."""
    expected = _unpacked_entries(binary)
    unpack = tmp_path / "unpack"
    unpack.mkdir()
    proc = subprocess.Popen([str(binary), "--tmp", str(unpack), "collect", "--artifacts", "config", "--output", "-",
                             "-q"], env=SSM_ENV, cwd="/usr/bin", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.read(2) == b"\x1f\x8b"  # Python runs: unpacking is over
        (home,) = unpack.glob("_MEI*")
        found = {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in home.rglob("*") if p.is_file() and not p.is_symlink()}
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=60)
    assert found == expected


def test_binary_loads_no_openssl_configuration(binary, tmp_path):
    """As from source (tests/e2e/test_hostile_host.py): neither OPENSSL_CONF nor the host's openssl.cnf reaches the
    binary's libcrypto, which would load the provider it names into the collector."""
    conf, marker = evil_openssl_conf(tmp_path)
    log = tmp_path / "openat.strace"
    need(shutil.which("strace") is not None, "strace is missing (apt-get install strace)")
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(log), str(binary), "collect",
                           "--artifacts", "clock,system", "--output", str(tmp_path / "out")],
                          env=dict(SSM_ENV, OPENSSL_CONF=str(conf)), cwd="/usr/bin", stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert not marker.exists(), "the binary loaded a provider named by OPENSSL_CONF"
    opened = log.read_text(errors="replace")
    assert "openssl.cnf" not in opened and str(conf) not in opened, "an OpenSSL configuration was read"


def test_source_collect_matches_binary_verify(binary, tmp_path):
    """A bundle made from source verifies with the binary, and the other way round."""
    proc = run_triagent(["collect", "--output", str(tmp_path), "--profile", "minimal"])
    summary = summary_of(proc)
    assert _ssm_run(binary, ["verify", summary["bundle"]]).returncode == 0
