"""Chain of custody: who ran what, where, when, with which binary, and how the clock stood."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import agent
from collectors.volatile.system import clock_facts, host_identity

_SECRET_URL = re.compile(r"(?i)(https?://[^/\s?]+[^\s?]*)\?\S*")


def mask_argument(arg: str) -> str:
    """A presigned URL is a credential: keep scheme, host and path, drop the query."""
    return _SECRET_URL.sub(lambda m: m.group(1) + "?<redacted>", arg)


def _sha256_file(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def fs_type(path: str) -> str | None:
    """Filesystem type holding ``path``, from /proc/self/mountinfo (longest matching mount point)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    real = os.path.realpath(path)
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        if len(fields) < 5 or not post:
            continue
        mount = fields[4].replace("\\040", " ")
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, best_type = mount, post.split()[0]
    return best_type


def tool_identity() -> dict[str, Any]:
    frozen = bool(getattr(sys, "frozen", False))
    info: dict[str, Any] = {"name": "triagent", "version": agent.__version__, "frozen": frozen,
                            "python": platform.python_version()}
    if frozen:
        launcher = os.environ.get("STATICX_PROG_PATH")  # the released file when staticx wraps the binary
        info["binary"] = launcher or sys.executable
        info["binary_sha256"] = _sha256_file(info["binary"])
        if launcher:
            info["runtime_dir"] = os.environ.get("STATICX_BUNDLE_DIR")
        info["unpack_requested"] = os.environ.get("TRIAGENT_TMPDIR")
        unpack = getattr(sys, "_MEIPASS", None)
        info["unpack_dir"] = unpack
        info["unpack_fs"] = fs_type(unpack) if unpack else None
        # set by our patched bootloader when /dev/shm could not be used (noexec, full, missing...)
        info["unpack_fallback"] = os.environ.pop("TRIAGENT_UNPACK_FALLBACK", None)
    else:
        info["interpreter"] = sys.executable
        info["interpreter_sha256"] = _sha256_file(sys.executable)
        info["source_sha256"] = source_digest()
    return info


def source_digest() -> str:
    """When run from source there is no single binary: hash the code and specs that ran."""
    top = Path(agent.__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in ("agent", "collectors", "specs"):
        for path in sorted((top / package).rglob("*")):
            if path.suffix in (".py", ".toml") and path.is_file():
                digest.update(str(path.relative_to(top)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def utc_ns(ns: int) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC, always with six fraction digits (the nanoseconds
    themselves go beside it): cut the same way at both ends, a later time never prints earlier."""
    seconds, rest = divmod(int(ns), 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{rest // 1000:06d}Z"


def run_end(started_ns: int, started_mono_ns: int) -> dict[str, Any]:
    """The end of the run for custody: ``ended_ns``/``ended_utc`` never before the start. The duration
    comes from the monotonic clock; a wall clock set back during the run (NTP, an operator) gives the
    start plus that duration instead, and its own reading is kept as ``wall_clock_at_end_utc``."""
    wall, duration = time.time_ns(), max(0, time.monotonic_ns() - started_mono_ns)
    ended = max(wall, started_ns + duration)
    out: dict[str, Any] = {"ended_utc": utc_ns(ended), "ended_ns": ended, "duration_ns": duration}
    if ended != wall:
        out["wall_clock_at_end_utc"] = utc_ns(wall)
    return out


def custody_record(args: dict[str, Any], argv: list[str], root: str, live: bool, started_ns: int,
                   output: dict[str, Any]) -> dict[str, Any]:
    clock, _ = clock_facts(root if live else "/")
    return {
        "case_id": args.get("case_id"), "examiner": args.get("examiner"), "notes": args.get("notes"),
        "tool": tool_identity(),
        "host": host_identity(root, live),
        "live": live, "root": root,
        "command_line": [mask_argument(a) for a in argv],
        "run_as": {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "pid": os.getpid(),
                   "cwd": os.getcwd() if os.path.exists(".") else None},
        "started_utc": utc_ns(started_ns), "started_ns": started_ns,
        "clock_at_end": clock,
        "output": output,
    }
