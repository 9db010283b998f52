"""Hostile bundles, made with the project's own writer (agent/bundle/writer.py BundleWriter) and sealed: what an
attacker who owns the host, or anyone who can seal a bundle, can hand a responder. Each builder writes
one bundle and returns its path; big ones are mostly zeros, so they are small on disk and quick to make.

Also the measure every test here uses: run a responder tool as a child process and read the child's
peak RSS (os.wait4), with a snapshot of the folders around it to prove nothing was written outside
--output."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import agent.bundle.writer as bundle_module
from agent.bundle import tarformat
from agent.bundle.writer import BundleWriter

REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20
NOW_NS = 1_764_000_000_000_000_000
ESC = "\x1b]0;owned\x07\x1b[2J\x1b[31m"  # window title, clear screen, red
C1 = "\u009b31m\u0085"  # 8-bit CSI and NEL: JSON with ensure_ascii=False lets them through


@contextlib.contextmanager
def any_member_name() -> Iterator[None]:
    """The writer refuses unsafe names (member_name); a hostile bundle is exactly one that does not."""
    saved = bundle_module.member_name
    bundle_module.member_name = lambda name: name if isinstance(name, bytes) else os.fsencode(name)
    try:
        yield
    finally:
        bundle_module.member_name = saved


def _zeros(total: int, byte: bytes = b"\0"):
    block = byte * MiB
    left = [total]

    def read(n: int) -> bytes:
        n = min(n, left[0], MiB)
        left[0] -= n
        return block[:n]
    return read


def _custody(hostname: str = "web1") -> bytes:
    return json.dumps({"host": {"hostname": hostname, "machine_id": "0" * 32}, "profile": "triage",
                       "started_utc": "2025-11-24T16:00:00.000000Z", "ended_utc": "2025-11-24T16:01:00.000000Z",
                       "status": "complete", "artifacts": []}, indent=1).encode()


def seal(writer: BundleWriter) -> None:
    writer.seal({"format": "triagent-bundle/1", "status": "complete", "profile": "triage",
                 "started_ns": NOW_NS - 60 * 10**9}, NOW_NS)


def write(path: Path, members: list[tuple[str, bytes]], compress: str = "gzip",
          links: list[tuple[str, str]] = (), hostname: str = "web1") -> Path:
    """A sealed bundle of ``members`` (any names), ``links`` (name, target) and a custody record."""
    st = os.stat(REPO)
    with open(path, "wb") as out, any_member_name():
        w = BundleWriter(out, compress)
        w.add_bytes("triagent/custody.json", _custody(hostname), NOW_NS)
        for name, data in members:
            w.add_bytes(name, data, NOW_NS)
        for name, target in links:
            w.add_symlink(name, target, st)
        seal(w)
    return path


BAD_NAMES = {
    "dotdot": "fs/$rootfs$/../../../../etc/cron.d/x",
    "absolute": "/etc/passwd",
    "escape": "fs/$rootfs$/tmp/" + ESC + "name",
    "c1": "fs/$rootfs$/tmp/" + C1 + "name",
    "nul": "fs/$rootfs$/tmp/a\0b" + "-long" * 30,  # long: carried by a pax record, NUL included
    "unknown_place": "notes/readme.txt",
    "unknown_triagent": "triagent/tools/run.sh",
    "unknown_memory": "memory/x",
    "symbols_dotdot": "symbols/linux/k-btf.inputs/..",
}
BAD_LINKS = {
    "link_escapes": ("fs/$rootfs$/etc/evil", "../../../../etc/shadow"),
    "link_outside_fs": ("triagent/artifacts/link.jsonl", "/etc/passwd"),
}


def bad_name_bundle(folder: Path, key: str) -> Path:
    if key in BAD_LINKS:
        return write(folder / f"{key}.tar.gz", [("fs/$rootfs$/etc/hostname", b"web1\n")], links=[BAD_LINKS[key]])
    members = [("fs/$rootfs$/etc/hostname", b"web1\n"), (BAD_NAMES[key], b"* * * * * root id\n")]
    return write(folder / f"{key}.tar.gz", members)


def gzip_bomb(path: Path) -> Path:
    """16 x 64 MiB of zeros in the bundle's own gzip framing (~1 MiB on disk), as memory image parts."""
    with open(path, "wb") as out:
        w = BundleWriter(out, "gzip", level=1)
        w.add_bytes("triagent/custody.json", _custody(), NOW_NS)
        for part in range(16):
            w.add_generated(f"memory/web1.lime.part{part:04d}", _zeros(64 * MiB), 64 * MiB, NOW_NS)
        seal(w)
    return path


def big_meta_members(path: Path) -> Path:
    """12 x 60 MB triagent/ members (record streams the tools read), each of them once kept in memory."""
    with open(path, "wb") as out:
        w = BundleWriter(out, "gzip", level=1)
        w.add_bytes("triagent/custody.json", _custody(), NOW_NS)
        for part in range(12):
            w.add_generated(f"triagent/artifacts/processes.part{part + 1:03d}.jsonl", _zeros(60_000_000, b" "),
                            60_000_000, NOW_NS)
        seal(w)
    return path


def long_line(path: Path, size: int = 400_000_000) -> Path:
    """One JSON Lines line of 400 MB in the process records (and a record after it that must still count)."""
    head = b'{"pid": 4242, "name": "x", "exe": "/tmp/x", "cmdline": "'
    tail = b'"}\n{"pid": 7, "name": "evil", "exe": "/dev/shm/.x", "exe_deleted": true}\n'
    body = size - len(head) - len(tail)
    parts = [head, _zeros(body, b"A"), tail]

    def read(n: int) -> bytes:
        while parts:
            current = parts[0]
            if isinstance(current, bytes):
                parts.pop(0)
                if current:
                    return current
                continue
            data = current(n)
            if data:
                return data
            parts.pop(0)
        return b""
    with open(path, "wb") as out:
        w = BundleWriter(out, "gzip", level=1)
        w.add_bytes("triagent/custody.json", _custody(), NOW_NS)
        w.add_generated("triagent/artifacts/processes.jsonl", read, size, NOW_NS)
        seal(w)
    return path


def pax_bomb(path: Path, claimed: int = 3 << 30, present: int = 300 * MiB) -> Path:
    """A pax header that claims 3 GiB (followed by 300 MiB of it), between real members, sealed."""
    with open(path, "wb") as out:
        w = BundleWriter(out, "gzip", level=1)
        w.add_bytes("triagent/custody.json", _custody(), NOW_NS)
        pax = tarformat._ustar_block(b"PaxHeaders/x", claimed, 0o644, 0, 0, 0, tarformat.PAXTYPE, b"")
        w._out.write(pax)
        read = _zeros(present)
        while chunk := read(MiB):
            w._out.write(bytes(chunk))
        w.add_bytes("fs/$rootfs$/etc/hostname", b"web1\n", NOW_NS)
        seal(w)
    return path


def memory_image(path: Path, size: int = 1 << 30) -> Path:
    """A 1 GiB memory image (zeros) in a ~1 MiB bundle, declared as such in the manifest."""
    with open(path, "wb") as out:
        w = BundleWriter(out, "gzip", level=1)
        w.add_bytes("triagent/custody.json", _custody(), NOW_NS)
        w.add_generated("memory/web1.lime", _zeros(size), size, NOW_NS)
        seal(w)
    return path


# --- running a tool -------------------------------------------------------------------------------

# Starts the tool and reports the tool's peak RSS on the descriptor named first. A process's ru_maxrss
# keeps the high-water mark of the memory it had before exec, that is of whoever forked it: measured
# straight from pytest (hundreds of MB after a long session) the figure would be pytest's. This small
# launcher forks the tool instead.
_LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
os.write(int(sys.argv[1]), str(usage.ru_maxrss).encode())
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_tool(args: list[str], cwd: Path, timeout: float = 300, code: str | None = None,
             env: dict[str, str] | None = None) -> tuple[int, bytes, bytes, int]:
    """(exit code, stdout, stderr, peak RSS in bytes) of ``python -m agent ARGS`` (or ``python -c CODE
    ARGS``) run in ``cwd``; the peak is the tool's own ru_maxrss, read with wait4 by a small launcher."""
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "agent", *args]
    environ = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    read_rss, write_rss = os.pipe()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(write_rss), *cmd], cwd=cwd, stdout=out,
                                    stderr=err, stdin=subprocess.DEVNULL, env=environ, pass_fds=(write_rss,),
                                    start_new_session=True)
        finally:
            os.close(write_rss)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise TimeoutError(f"{args[:1]} did not finish in {timeout} s") from None
        finally:
            with os.fdopen(read_rss, "rb") as rss:
                peak = rss.read()
        out.seek(0)
        err.seek(0)
        returncode = proc.returncode if proc.returncode <= 128 else 128 - proc.returncode  # killed: -signal
        return returncode, out.read(), err.read(), int(peak or 0) * 1024


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every path under the folders (not following links) with its size and mtime."""
    seen: dict[str, tuple[int, int]] = {}
    for folder in folders:
        for here, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(here, name)
                st = os.lstat(path)
                seen[path] = (st.st_size, st.st_mtime_ns)
    return seen
