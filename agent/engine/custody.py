"""Chain of custody: who ran what, where, when, with which binary, and how the clock stood."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import agent
from collectors.base import Context
from collectors.files.fsread import read_capped
from collectors.util import sha256_file, text, utc_ns
from collectors.volatile.system import clock_facts, host_identity

_SECRET_URL = re.compile(r"(?i)(https?://[^/\s?]+[^\s?]*)\?\S*")


def mask_argument(arg: str) -> str:
    """A presigned URL is a credential: keep scheme, host and path, drop the query."""
    return _SECRET_URL.sub(lambda m: m.group(1) + "?<redacted>", arg)


def _sha256_file(path: str) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


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
        info["sbom"], info["sbom_sha256"] = _sbom(bool(launcher))
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


def _sbom(portable: bool) -> tuple[str | None, str | None]:
    """The CycloneDX SBOM of this binary (build/sbom.py): its name and SHA-256, as build.sh put them inside
    the binary (triagent-sbom.json), so a bundle names exactly what collected it. (None, None) for a binary
    built before SBOMs or a file that cannot be read."""
    try:
        with open(os.path.join(getattr(sys, "_MEIPASS", ""), "triagent-sbom.json"), encoding="utf-8") as fh:
            entry = json.load(fh).get("portable" if portable else "onefile") or {}
        return str(entry["name"]), str(entry["sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, None


def source_digest() -> str:
    """When run from source there is no single binary: hash the code and specs that ran."""
    top = Path(agent.__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in ("agent", "collectors", "specs"):
        for path in sorted((top / package).rglob("*")):
            if path.suffix in (".py", ".toml") and path.is_file():
                digest.update(str(path.relative_to(top)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


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


OS_RELEASE_KEYS = ("NAME", "ID", "ID_LIKE", "VERSION", "VERSION_ID", "VERSION_CODENAME", "BUILD_ID", "VARIANT_ID",
                   "PRETTY_NAME")


def _evidence_files(root: str, read_remote: bool) -> dict[str, Any]:
    ctx = Context(root=root, live=os.path.realpath(root) == "/", options={}, read_remote_fs=read_remote)

    def read(path: str, cap: int = 4096) -> str | None:
        try:
            return text(read_capped(ctx, path, cap)[0])
        except (OSError, ValueError):
            return None

    def first_line(path: str) -> str | None:
        data = read(path)
        return next((line.strip() for line in (data or "").splitlines()
                     if line.strip() and not line.lstrip().startswith("#")), None)

    ident: dict[str, Any] = {"hostname_file": first_line("/etc/hostname"), "machine_id": first_line("/etc/machine-id"),
                             "cloud_instance_id": first_line("/var/lib/cloud/data/instance-id")}
    release = read("/etc/os-release", 65536) or read("/usr/lib/os-release", 65536)
    if release is not None:
        fields = {}
        for line in release.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() in OS_RELEASE_KEYS:
                fields[key.strip()] = value.strip().strip('"').strip("'")
        ident["os_release"] = fields
    return ident


def evidence_identity(root: str, read_remote: bool = False, timeout_s: float = 30.0) -> dict[str, Any]:
    """Who the evidence says it is: its /etc/hostname, /etc/machine-id, os-release and cloud instance
    id, read inside ``root`` through the collectors' confined reader (a link in an image resolves inside
    the image, never on the collecting machine). A read that does not come back within ``timeout_s``
    (a stalled FUSE server) leaves the fields unknown."""
    out: dict[str, Any] = {}

    def work() -> None:
        out.update(_evidence_files(root, read_remote))

    worker = threading.Thread(target=work, name="triagent-identity", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        return {"identity_unread": f"reading the evidence's identity files took over {timeout_s:g}s"}
    return out


def collector_identity() -> dict[str, Any]:
    """The machine that runs triagent (with --root, not the evidence)."""
    uname = os.uname()
    ident = host_identity("/", True)
    return {"hostname": uname.nodename, "kernel_release": uname.release, "machine": uname.machine,
            **{k: ident.get(k) for k in ("machine_id", "boot_id", "product_uuid")}}


def bundle_host(evidence: dict[str, Any], live: bool) -> str:
    """The host part of the bundle's name: the running system's name live, the evidence's own otherwise."""
    import socket

    name = socket.gethostname() if live else (evidence.get("hostname_file") or "unknown-host")
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)[:64] or "host"


def custody_record(args: dict[str, Any], argv: list[str], root: str, live: bool, started_ns: int,
                   output: dict[str, Any], evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """``evidence`` is ``evidence_identity(root)`` (read again when not given). Live, ``host`` is this
    machine; with --root it is only what the evidence's files say, and ``collector`` is this machine."""
    clock, _ = clock_facts(root if live else "/")
    if evidence is None:
        evidence = evidence_identity(root, bool(args.get("read_remote_fs")))
    if live:
        host = dict(host_identity(root, live), os_release=evidence.get("os_release"))
    else:
        host = dict(evidence, hostname=evidence.get("hostname_file"))
    return {
        "case_id": args.get("case_id"), "examiner": args.get("examiner"), "notes": args.get("notes"),
        "tool": tool_identity(),
        "host": host, "collector": collector_identity(),
        "live": live, "root": root,
        "command_line": [mask_argument(a) for a in argv],
        "run_as": {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "pid": os.getpid(),
                   "cwd": os.getcwd() if os.path.exists(".") else None},
        "started_utc": utc_ns(started_ns), "started_ns": started_ns,
        "clock_at_end": clock,
        "output": output,
    }


def profile_file_record(profile: Any) -> dict[str, Any]:
    """What custody keeps of a responder's own profile file (`collect --profile FILE.toml`): its path, size
    and the SHA-256 of exactly the bytes that were parsed, the profile it extends, the artifacts it declares,
    and the plan it gave (each artifact's collector and options), so the bundle says what was asked for even
    when the file is gone."""
    source = dict(profile.source or {})
    source["plan"] = [{"name": a.name, "collector": a.collector, "options": a.options}
                      for a in profile.artifacts if a.name in source.get("artifacts", [])]
    return source
