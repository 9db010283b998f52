"""triagent readiness: a preflight a fleet runs weekly, so that at 3 a.m. the hosts are known to be
collectable (incident readiness). One JSON line on stdout:

  {"status": "ready" | "degraded" | "not-ready", "reasons": [...], "checks": {...}, "host": ..., ...}

Exit codes: 0 ready, 1 degraded, 2 usage, 3 not-ready (never 194/168/169, which SSM reads as
reboot/step control). `aggregate()` renders many such lines as a fleet table for `push --readiness`.

Every check reads under a root (default "/") so tests can plant a fake /proc and /sys; the live-only
probes (the mmap hint for 5-level paging, adjtimex, euid) are skipped or injected for another root.

5-level paging (LA57), the signals and why:
  * /proc/cpuinfo "la57": since Linux 4.17 early_identify_cpu() clears X86_FEATURE_LA57 whenever
    pgtable_l5_enabled() is false (not built in, `no5lvl`, CPU without it), so on those kernels the
    flag means "this kernel runs with 5-level page tables", not merely "the CPU could".
  * the mmap hint probe (live only, authoritative): user addresses above 47 bits exist only with
    5-level paging; an mmap hinted at 2^50 lands there on an LA57 kernel and below 2^47 otherwise
    (Documentation/arch/x86/x86_64/5level-paging.rst).
  * /proc/kcore, when readable: VMCOREINFO's NUMBER(pgtable_l5_enabled); its apparent size (128 TiB
    plus a little with 4 levels, far more with 5) is a hint even when only stat() works.
  * CONFIG_X86_5LEVEL from /proc/config.gz and `no5lvl` on the command line are reported as context
    only: 6.x kernels dropped the option (always built in), so it cannot decide alone.
  /sys/kernel/vmcoreinfo is no help: it holds the note's physical address, not the text.
"""

from __future__ import annotations

import argparse
import base64
import bz2
import ctypes
import gzip
import json
import lzma
import os
import platform
import re
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

READY, DEGRADED, NOT_READY, SKIPPED, OK = "ready", "degraded", "not-ready", "skipped", "ok"
EXIT = {READY: 0, DEGRADED: 1, NOT_READY: 3}
EXIT_USAGE = 2
DEFAULT_THROUGHPUT_MBPS = 50.0      # MB/s to the bucket: a cautious figure for a cloud VM's egress
DEFAULT_BUDGET_S = 3600             # SSM's default executionTimeout
DEFAULT_MIN_SHM = 256 << 20         # the fetched binary plus its unpacked copy, with room to spare
MIN_AVAILABLE = 192 << 20           # the collector's peak resident memory (measured in a 512 MiB guest), rounded up
SLOW_START_S = 5.0                  # the cold-start goal is 1.2 s; five times that is worth a word
LINE_LIMIT = 2000                   # SSM keeps 2,500 characters of output
KCORE_4LEVEL_MAX = 1 << 48          # 128 TiB + headers: the 4-level kcore; 5-level ones are far larger
ISF_SUFFIXES = (".json.xz", ".json.gz", ".json.bz2", ".json")
ISF_MAX_FILES = 2000
_BANNER_RE = re.compile(rb'"linux_banner"\s*:\s*\{[^{}]*?"constant_data"\s*:\s*"([A-Za-z0-9+/=]+)"')


@dataclass
class Check:
    status: str                                 # ok | degraded | not-ready | skipped
    reason: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.reason:
            out["reason"] = self.reason
        out.update(self.facts)
        return out


def _read(path: str, limit: int = 1 << 20) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def _p(root: str, *parts: str) -> str:
    return os.path.join(root, *parts)


# ---------------------------------------------------------------------------------------------- checks

def check_root(root: str = "/", euid: int | None = None) -> Check:
    euid = os.geteuid() if euid is None else euid
    status = _read(_p(root, "proc", "self", "status")) or ""
    cap = re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M)
    facts = {"euid": euid, "cap_eff": cap.group(1) if cap else None}
    if euid != 0:
        return Check(NOT_READY, f"not root (euid {euid}): no /proc/kcore, other users' processes or files", facts)
    return Check(OK, None, facts)


def _kcore_header(data: bytes) -> tuple[dict[str, Any], str | None]:
    """ELF64 ET_CORE sanity: (facts, problem)."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return {}, "not an ELF file"
    if data[4] != 2 or data[5] != 1:
        return {}, "not ELF64 little-endian"
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    facts = {"e_machine": e_machine, "phnum": e_phnum}
    if e_type != 4:
        return facts, f"ELF type {e_type}, not ET_CORE"
    if e_machine not in (62, 183) or e_phentsize != 56 or not e_phnum or e_phoff < 64:
        return facts, "unexpected ELF header (machine, program headers)"
    return facts, None


def _vmcoreinfo(f: Any, header: bytes) -> dict[str, str]:
    """VMCOREINFO key=value pairs from the PT_NOTE of an open kcore (empty when absent)."""
    e_phoff, = struct.unpack_from("<Q", header, 32)
    e_phnum, = struct.unpack_from("<H", header, 56)
    f.seek(e_phoff)
    table = f.read(56 * min(e_phnum, 4096))
    for i in range(len(table) // 56):
        p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", table, i * 56)
        if p_type != 4:
            continue
        f.seek(p_offset)
        notes = f.read(min(p_filesz, 1 << 16))
        pos = 0
        while pos + 12 <= len(notes):
            namesz, descsz, _ntype = struct.unpack_from("<III", notes, pos)
            name_at = pos + 12
            desc_at = name_at + ((namesz + 3) & ~3)
            name = notes[name_at:name_at + namesz].rstrip(b"\0")
            desc = notes[desc_at:desc_at + descsz]
            if name == b"VMCOREINFO":
                pairs = (line.split("=", 1) for line in desc.decode("ascii", "replace").splitlines() if "=" in line)
                return dict(pairs)
            pos = desc_at + ((descsz + 3) & ~3)
    return {}


def check_kcore(root: str = "/", require_memory: bool = False) -> Check:
    path = _p(root, "proc", "kcore")
    bad = NOT_READY if require_memory else DEGRADED
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return Check(bad, "no /proc/kcore (kernel without CONFIG_PROC_KCORE, or hidden in this container): "
                     "no memory image", {"present": False})
    except OSError as exc:
        return Check(bad, f"/proc/kcore: {exc.strerror}", {"present": None})
    facts: dict[str, Any] = {"present": True, "size": size}
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            elf, problem = _kcore_header(header)
            facts.update(elf)
            if problem is None:
                info = _vmcoreinfo(f, header)
                if "NUMBER(pgtable_l5_enabled)" in info:
                    facts["pgtable_l5_enabled"] = info["NUMBER(pgtable_l5_enabled)"].strip() == "1"
                facts["vmcoreinfo"] = bool(info)
    except OSError as exc:
        facts["readable"] = False
        why = "locked down or not root" if exc.errno in (1, 13) else exc.strerror
        return Check(bad, f"/proc/kcore not readable ({why}): no memory image", facts)
    facts["readable"] = True
    if problem:
        return Check(bad, f"/proc/kcore: {problem}", facts)
    return Check(OK, None, facts)


def check_lockdown(root: str = "/") -> Check:
    text = _read(_p(root, "sys", "kernel", "security", "lockdown"))
    if text is None:
        return Check(OK, None, {"mode": None, "note": "no lockdown LSM interface"})
    m = re.search(r"\[(\w+)\]", text)
    mode = m.group(1) if m else text.strip()
    # LOCKDOWN_KCORE sits above LOCKDOWN_INTEGRITY_MAX: integrity blocks /dev/mem, confidentiality kcore too
    if mode == "confidentiality":
        return Check(DEGRADED, "kernel lockdown=confidentiality: /proc/kcore and /dev/mem are blocked", {"mode": mode})
    facts = {"mode": mode}
    if mode == "integrity":
        facts["note"] = "/dev/mem and /dev/crash blocked; /proc/kcore still allowed"
    return Check(OK, None, facts)


def mmap_la57_probe() -> bool | None:
    """True when this kernel hands out user addresses above 47 bits (5-level paging), None if unknown."""
    if platform.machine() != "x86_64":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    prot_none, map_private_anon = 0, 0x02 | 0x20
    addr = libc.mmap(ctypes.c_void_p(1 << 50), 4096, prot_none, map_private_anon, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        return None
    libc.munmap(ctypes.c_void_p(addr), 4096)
    return addr >= 1 << 47


def _kernel_config(root: str, option: str) -> str | None:
    try:
        with gzip.open(_p(root, "proc", "config.gz"), "rt", errors="replace") as f:
            for line in f:
                if line.startswith(option + "=") or line.startswith(f"# {option} is not set"):
                    return line.strip()
    except (OSError, EOFError):
        return None
    return None


def check_paging(root: str = "/", probe: Callable[[], bool | None] | None = None,
                 kcore: Check | None = None) -> Check:
    cpuinfo = _read(_p(root, "proc", "cpuinfo"), 4 << 20) or ""
    flags = re.search(r"^flags\s*:(.*)$", cpuinfo, re.M)
    cpu_la57 = bool(flags and "la57" in flags.group(1).split())
    facts: dict[str, Any] = {"cpu_la57": cpu_la57}
    cmdline = _read(_p(root, "proc", "cmdline")) or ""
    if "no5lvl" in cmdline.split():
        facts["no5lvl"] = True
    config = _kernel_config(root, "CONFIG_X86_5LEVEL")
    if config:
        facts["config"] = config
    decided: bool | None = None
    if probe is not None:
        try:
            decided = probe()
        except (OSError, AttributeError, ValueError):
            decided = None
        if decided is not None:
            facts["signal"] = "mmap-hint"
    kfacts = kcore.facts if kcore else {}
    if decided is None and "pgtable_l5_enabled" in kfacts:
        decided, facts["signal"] = kfacts["pgtable_l5_enabled"], "vmcoreinfo"
    if decided is None and kfacts.get("size"):
        decided, facts["signal"] = kfacts["size"] > KCORE_4LEVEL_MAX, "kcore-size"
    if decided is None and flags:
        decided, facts["signal"] = cpu_la57 and not facts.get("no5lvl"), "cpuinfo"
    facts["kernel_5level"] = decided
    if decided:
        return Check(DEGRADED, "5-level paging (LA57): volatility3 2.28 cannot walk this memory image "
                     "(pslist returns nothing); the image is still taken", facts)
    if decided is None:
        return Check(OK, None, facts | {"note": "paging mode unknown"})
    return Check(OK, None, facts)


def check_memory(root: str = "/", throughput_mbps: float = DEFAULT_THROUGHPUT_MBPS,
                 budget_s: float = DEFAULT_BUDGET_S) -> Check:
    text = _read(_p(root, "proc", "meminfo")) or ""
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.M)
    if not m:
        return Check(DEGRADED, "cannot read MemTotal from /proc/meminfo", {})
    total = int(m.group(1)) * 1024
    estimate = total / (throughput_mbps * 1e6)
    facts = {"mem_total": total, "throughput_mbps": throughput_mbps, "upload_estimate_s": round(estimate, 1),
             "budget_s": budget_s}
    available = re.search(r"^MemAvailable:\s*(\d+)\s*kB", text, re.M)
    if available:
        facts["mem_available"] = int(available.group(1)) * 1024
    if estimate > budget_s:
        return Check(DEGRADED, f"memory image of {total / 2**30:.1f} GiB needs ~{estimate:.0f} s at "
                     f"{throughput_mbps:g} MB/s, over the {budget_s:g} s budget", facts)
    if available and facts["mem_available"] < MIN_AVAILABLE:
        return Check(DEGRADED, f"only {facts['mem_available'] >> 20} MiB of memory available: the collector "
                     f"holds up to ~{MIN_AVAILABLE >> 20} MiB and the kernel would kill it first", facts)
    return Check(OK, None, facts)


def _mount_of(root: str, mount_point: str) -> dict[str, Any] | None:
    """The mountinfo entry visible at mount_point (the last one wins: later mounts cover earlier)."""
    found = None
    for line in (_read(_p(root, "proc", "self", "mountinfo"), 4 << 20) or "").splitlines():
        pre, sep, post = line.partition(" - ")
        fields = pre.split()
        if not sep or len(fields) < 6:
            continue
        if fields[4].replace("\\040", " ") == mount_point:
            post_fields = post.split()
            found = {"fs": post_fields[0] if post_fields else None, "options": fields[5].split(","),
                     "super_options": post_fields[2].split(",") if len(post_fields) > 2 else []}
    return found


def check_shm(root: str = "/", min_free: int = DEFAULT_MIN_SHM) -> Check:
    path = _p(root, "dev", "shm")
    if not os.path.isdir(path):
        return Check(DEGRADED, "no /dev/shm: the binary unpacks into TMPDIR or /tmp (disk, said in the summary)", {})
    try:
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
    except OSError as exc:
        return Check(DEGRADED, f"/dev/shm: {exc.strerror}", {})
    mount = _mount_of(root, "/dev/shm") or {}
    noexec = "noexec" in mount.get("options", []) or bool(st.f_flag & os.ST_NOEXEC)
    facts = {"free": free, "fs": mount.get("fs"), "noexec": noexec, "writable": os.access(path, os.W_OK)}
    problems = []
    if noexec:
        problems.append("/dev/shm is noexec: the binary falls back to another directory (disk unless "
                        "TRIAGENT_TMP/--tmp names a tmpfs)")
    if mount and mount.get("fs") not in ("tmpfs", "ramfs"):
        problems.append(f"/dev/shm is {mount.get('fs')}, not memory-backed")
    if free < min_free:
        problems.append(f"/dev/shm has {free >> 20} MiB free, under {min_free >> 20} MiB")
    if not facts["writable"]:
        problems.append("/dev/shm is not writable")
    return Check(DEGRADED, "; ".join(problems), facts) if problems else Check(OK, None, facts)


def _banner_of_isf(path: str) -> bytes | None:
    opener: Callable[..., Any] = {"xz": lzma.open, "gz": gzip.open, "bz2": bz2.open}.get(path.rsplit(".", 1)[-1], open)
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, lzma.LZMAError):
        return None
    m = _BANNER_RE.search(data)
    if m:
        return base64.b64decode(m.group(1))
    try:  # key order or nesting the quick look did not expect
        value = json.loads(data).get("symbols", {}).get("linux_banner", {}).get("constant_data")
    except (ValueError, AttributeError):
        return None
    return base64.b64decode(value) if value else None


def _norm_banner(banner: bytes | str) -> bytes:
    raw = banner.encode() if isinstance(banner, str) else banner
    return raw.rstrip(b"\0").rstrip(b"\n").strip()


def find_isf(banner: str, dirs: Iterable[str]) -> tuple[str | None, int]:
    """(the ISF whose linux_banner equals this banner, how many ISF files were looked at)."""
    want, seen = _norm_banner(banner), 0
    for top in dirs:
        for folder, _subdirs, files in os.walk(top):
            for name in sorted(files):
                if not name.endswith(ISF_SUFFIXES):
                    continue
                seen += 1
                if seen > ISF_MAX_FILES:
                    return None, seen
                found = _banner_of_isf(os.path.join(folder, name))
                if found is not None and _norm_banner(found) == want:
                    return os.path.join(folder, name), seen
    return None, seen


def isf_index_has(banner: str, url: str, ca_bundle: str | None = None, timeout: float = 10.0) -> bool:
    """volatility3's remote index format v1: {"version": 1, "linux": {b64(banner): [urls]}}."""
    from agent.ship.upload import make_session

    with make_session(ca_bundle) as session:
        resp = session.get(url, timeout=(timeout, timeout))
        resp.raise_for_status()
        index = resp.json()
    want = _norm_banner(banner)
    return any(_norm_banner(base64.b64decode(key)) == want for key in (index.get("linux") or {}))


def check_symbols(root: str = "/", symbol_dirs: Iterable[str] = (), isf_url: str | None = None,
                  ca_bundle: str | None = None, bundled: bool = True) -> Check:
    banner = (_read(_p(root, "proc", "version")) or "").strip()
    if not banner:
        return Check(DEGRADED, "cannot read the kernel banner (/proc/version)", {})
    dirs = [d for d in symbol_dirs if os.path.isdir(d)]
    if bundled:
        from collectors.parsers.volatility import bundled_symbol_dirs

        dirs += bundled_symbol_dirs()
    facts: dict[str, Any] = {"banner": banner[:160]}
    missing = [d for d in symbol_dirs if not os.path.isdir(d)]
    if missing:
        facts["missing_dirs"] = missing[:3]
    isf, seen = find_isf(banner, dirs)
    facts["isf_files_seen"] = seen
    if isf:
        facts["isf"] = isf
    if not isf and isf_url:
        from agent.ship.upload import safe_url, scrub

        try:
            facts["isf_server"] = isf_index_has(banner, isf_url, ca_bundle)
        except Exception as exc:  # noqa: BLE001 - any failure of the index is a finding, not a crash
            facts["isf_server_error"] = scrub(f"{type(exc).__name__}: {exc}")[:160]
        facts["isf_url"] = safe_url(isf_url)
    btf = _p(root, "sys", "kernel", "btf", "vmlinux")
    try:
        with open(btf, "rb") as f:
            facts["btf"] = f.read(2) == b"\x9f\xeb"
    except OSError:
        facts["btf"] = False
    if isf or facts.get("isf_server"):
        return Check(OK, None, facts)
    if facts["btf"]:
        from collectors.symbols.collector import build_would_starve

        short = build_would_starve(root)
        return Check(OK, None, facts | {"note": "no ISF for this banner; /sys/kernel/btf/vmlinux lets one be built "
                                                "from BTF" + (f" (at analysis: {short})" if short else " here")})
    return Check(DEGRADED, "no volatility symbols for this exact kernel banner and no BTF to build them", facts)


def check_clock(ntp: Callable[[], dict[str, Any]] | None = None) -> Check:
    if ntp is None:
        from collectors.volatile.system import ntp_state as ntp
    try:
        state = ntp()
    except (OSError, AttributeError) as exc:
        return Check(DEGRADED, f"adjtimex failed: {exc}", {})
    facts = {"synchronized": state.get("synchronized"), "state": state.get("state"),
             "max_error_us": state.get("max_error_us")}
    if not state.get("synchronized"):
        return Check(DEGRADED, f"clock not synchronised (STA_UNSYNC or TIME_ERROR; max error "
                     f"{(state.get('max_error_us') or 0) / 1e6:g} s): custody timestamps are unverified", facts)
    return Check(OK, None, facts)


def _stat_fields(root: str, pid: str) -> tuple[str, int, int] | None:
    """(comm, ppid, starttime in ticks) from /proc/PID/stat; comm may hold spaces and parentheses."""
    text = _read(_p(root, "proc", pid, "stat"))
    if not text or ")" not in text:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    rest = text[text.rindex(")") + 2:].split()
    return comm, int(rest[1]), int(rest[19])


def check_start(root: str = "/", pid: str = "self") -> Check:
    """Seconds from the launch of this binary to now. A onefile binary starts as a bootloader that
    unpacks and re-executes itself (and staticx adds a launcher): the outermost ancestor with our
    name is the moment the operator's command began."""
    uptime = _read(_p(root, "proc", "uptime"))
    own = _stat_fields(root, pid)
    if not uptime or own is None:
        return Check(OK, None, {"note": "process start time unavailable"})
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    now = float(uptime.split()[0])
    comm, ppid, first = own
    hops = 0
    while ppid > 1 and hops < 4:
        parent = _stat_fields(root, str(ppid))
        if parent is None or parent[0] != comm:
            break
        _, ppid, first = parent
        hops += 1
    facts = {"process_age_s": round(max(0.0, now - own[2] / hz), 2),
             "launch_age_s": round(max(0.0, now - first / hz), 2), "launcher_hops": hops,
             "frozen": bool(getattr(sys, "frozen", False))}
    if facts["launch_age_s"] > SLOW_START_S:
        return Check(DEGRADED, f"slow start: {facts['launch_age_s']} s from launch to the first check", facts)
    return Check(OK, None, facts)


def _upload_url(ticket: dict[str, Any]) -> str | None:
    for key in ("url", "blob_url", "start_url"):
        if ticket.get(key):
            return ticket[key]
    return (ticket.get("part_urls") or [None])[0]


def check_upload(target: str | None, mode: str = "put", ca_bundle: str | None = None,
                 bearer_token_file: str | None = None, timeout: float = 15.0) -> Check:
    """A tiny PUT through the same code the collector uses (and a read-back when the ticket has a
    read URL), or only a HEAD: any HTTP answer over verified TLS proves the path is open."""
    if not target:
        return Check(SKIPPED, None, {"note": "no --upload ticket given"})
    from agent.ship.upload import RetryPolicy, UploadError, load_ticket, open_upload, safe_url, scrub, verify_remote

    try:
        ticket = load_ticket(target)
    except UploadError as exc:
        return Check(NOT_READY, f"upload ticket: {exc}", {})
    facts: dict[str, Any] = {"kind": ticket.get("kind"), "mode": mode,
                             "destination": ticket.get("destination") or safe_url(_upload_url(ticket) or "")}
    started = time.monotonic()
    try:
        if mode == "head":
            from agent.ship.upload import make_session

            url = _upload_url(ticket)
            if not url:
                return Check(NOT_READY, "upload ticket has no URL", facts)
            with make_session(ca_bundle) as session:
                resp = session.head(url, timeout=(timeout, timeout), allow_redirects=False)
            facts["http_status"] = resp.status_code
        else:
            payload = (f"triagent readiness {socket.gethostname()} "
                       f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n").encode()
            policy = RetryPolicy(attempts=2, base_delay=0.2, connect_timeout=timeout, read_timeout=timeout)
            up = open_upload(ticket, ca_bundle=ca_bundle, bearer_token_file=bearer_token_file, retry=policy,
                             buffers=1)
            up.write(payload)
            result = up.close()
            facts.update(ok=result.ok, bytes=result.bytes_stored)
            if not result.ok:
                return Check(NOT_READY, f"readiness PUT failed: {(result.error or '')[:200]}", facts)
            if ticket.get("read_url"):
                back = verify_remote(ticket, expected_sha256=result.sha256, ca_bundle=ca_bundle)
                facts["read_back_match"] = back.get("match")
                if not back.get("match"):
                    return Check(NOT_READY, "readiness object read back with a different SHA-256", facts)
    except (UploadError, OSError) as exc:
        return Check(NOT_READY, f"upload endpoint: {scrub(str(exc))[:200]}", facts)
    except Exception as exc:  # noqa: BLE001 - requests' own errors; their text is scrubbed
        return Check(NOT_READY, f"upload endpoint: {type(exc).__name__}: {scrub(str(exc))[:160]}", facts)
    facts["seconds"] = round(time.monotonic() - started, 2)
    return Check(OK, None, facts)


# ---------------------------------------------------------------------------------------------- the run

def readiness(root: str = "/", *, upload: str | None = None, upload_mode: str = "put", ca_bundle: str | None = None,
              bearer_token_file: str | None = None, symbol_dirs: Iterable[str] = (), isf_url: str | None = None,
              throughput_mbps: float = DEFAULT_THROUGHPUT_MBPS, budget_s: float = DEFAULT_BUDGET_S,
              min_shm: int = DEFAULT_MIN_SHM, require_memory: bool = False, euid: int | None = None,
              paging_probe: Callable[[], bool | None] | None = None, ntp: Callable[[], dict[str, Any]] | None = None,
              bundled_symbols: bool = True) -> dict[str, Any]:
    """All checks under `root`; live probes (mmap, adjtimex) only when root is "/" unless injected."""
    started = time.monotonic()
    live = os.path.abspath(root) == "/"
    checks: dict[str, Check] = {"start": check_start(root)}
    checks["root"] = check_root(root, euid)
    checks["kcore"] = check_kcore(root, require_memory)
    checks["lockdown"] = check_lockdown(root)
    checks["paging"] = check_paging(root, paging_probe or (mmap_la57_probe if live else None), checks["kcore"])
    checks["memory"] = check_memory(root, throughput_mbps, budget_s)
    checks["shm"] = check_shm(root, min_shm)
    checks["symbols"] = check_symbols(root, symbol_dirs, isf_url, ca_bundle, bundled_symbols)
    checks["clock"] = check_clock(ntp) if (live or ntp) else Check(SKIPPED, None, {"note": "not live"})
    checks["upload"] = check_upload(upload, upload_mode, ca_bundle, bearer_token_file)
    order = [NOT_READY, DEGRADED]
    reasons = [c.reason for level in order for c in checks.values() if c.status == level and c.reason]
    status = NOT_READY if any(c.status == NOT_READY for c in checks.values()) else \
        DEGRADED if any(c.status == DEGRADED for c in checks.values()) else READY
    import agent

    # getattr: under pytest the tests' own agent/ folder can stand in for this package (a namespace)
    version = (_read(_p(root, "proc", "sys", "kernel", "osrelease")) or platform.release()).strip()
    return {"status": status, "reasons": [r[:240] for r in reasons],
            "host": socket.gethostname() if live else os.path.basename(os.path.abspath(root)),
            "kernel": version, "triagent": getattr(agent, "__version__", None),
            "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": round(time.monotonic() - started, 3),
            "checks": {name: c.as_dict() for name, c in checks.items()}}


def render(result: dict[str, Any], limit: int = LINE_LIMIT) -> str:
    """One JSON line within `limit`: the least useful details go first when it is too long."""
    text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    checks = result.get("checks", {})
    for drop in ("banner", "cap_eff", "config", "isf", "destination", "note", "missing_dirs", "isf_url"):
        if len(text) <= limit:
            break
        for c in checks.values():
            c.pop(drop, None)
        text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    if len(text) > limit:
        result["checks"] = {k: {"status": v["status"]} for k, v in checks.items()}
        text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    while len(text) > limit and result["reasons"]:
        result["reasons"] = [r[:80] for r in result["reasons"][:-1]]
        text = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    return text


def aggregate(lines: list[dict[str, Any]]) -> str:
    """A fleet table from readiness lines (worst first): host, status, main reasons, then totals."""
    rank = {NOT_READY: 0, "unknown": 1, DEGRADED: 2, READY: 3}
    rows = []
    for line in lines:
        host = str(line.get("host") or line.get("instance") or line.get("instance_id") or "?")
        status = line.get("status") if line.get("status") in rank else "unknown"
        reasons = [str(r) for r in line.get("reasons") or []] or ([str(line["error"])] if line.get("error") else [])
        main = "; ".join(r.split(":")[0] if len(r) > 60 else r for r in reasons[:3])[:160]
        if len(reasons) > 3:
            main += f" (+{len(reasons) - 3} more)"
        rows.append((rank[status], host, status, main))
    rows.sort()
    width = max([len("HOST")] + [len(r[1]) for r in rows])
    out = [f"{'HOST':<{width}}  {'STATUS':<9}  MAIN REASONS"]
    out += [f"{host:<{width}}  {status:<9}  {main or '-'}" for _, host, status, main in rows]
    counts = {s: sum(1 for r in rows if r[2] == s) for s in (READY, DEGRADED, NOT_READY, "unknown")}
    total = f"{len(rows)} hosts: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "unknown")
    return "\n".join(out + [total]) + "\n"


# ---------------------------------------------------------------------------------------------- CLI

def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def add_readiness_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add `readiness` to an argparse subparsers object (agent/cli.py)."""
    r = subparsers.add_parser("readiness", help="preflight: is this host collectable? one JSON line; exit 0 ready, "
                              "1 degraded, 3 not-ready")
    r.add_argument("--upload", metavar="TICKET|URL", help="a readiness ticket (or URL): a tiny PUT to its destination")
    r.add_argument("--upload-check", choices=("put", "head"), default="put",
                   help="put (default: a small object, read back when the ticket has a read URL) or head (only "
                   "reachability: any HTTP answer over verified TLS)")
    r.add_argument("--ca-bundle", metavar="FILE", help="also trust this CA (upload and ISF server)")
    r.add_argument("--bearer-token-file", metavar="FILE", help="Authorization: Bearer token for a plain HTTPS PUT")
    r.add_argument("--symbols", action="append", default=[], metavar="DIR",
                   help="volatility3 symbol folders (ISF .json.xz) searched for this kernel's exact banner")
    r.add_argument("--isf-url", metavar="URL", help="a volatility3 remote ISF index (banners.json) to ask as well")
    r.add_argument("--throughput", type=float, default=DEFAULT_THROUGHPUT_MBPS, metavar="MB/S",
                   help=f"assumed upload throughput for the memory image (default {DEFAULT_THROUGHPUT_MBPS:g})")
    r.add_argument("--time-budget", type=float, default=DEFAULT_BUDGET_S, metavar="SECONDS",
                   help=f"time the memory image may take to upload (default {DEFAULT_BUDGET_S}, SSM's default)")
    r.add_argument("--min-shm", type=_size, default=DEFAULT_MIN_SHM, metavar="BYTES",
                   help="free space wanted in /dev/shm (default 256M)")
    r.add_argument("--require-memory", action="store_true",
                   help="no readable /proc/kcore makes the host not-ready (default: degraded)")
    r.add_argument("--root", default="/", help="read proc/ and sys/ under this directory (tests, offline trees); "
                   "live probes (mmap, adjtimex) are then skipped")
    return r


def run_readiness(args: argparse.Namespace) -> int:
    """Run the checks named by parsed arguments; print one JSON line; return the exit code."""
    if not os.path.isdir(args.root):
        print(f"triagent readiness: --root {args.root!r} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    if args.throughput <= 0 or args.time_budget <= 0:
        print("triagent readiness: --throughput and --time-budget must be positive", file=sys.stderr)
        return EXIT_USAGE
    result = readiness(args.root, upload=args.upload, upload_mode=args.upload_check, ca_bundle=args.ca_bundle,
                       bearer_token_file=args.bearer_token_file, symbol_dirs=args.symbols, isf_url=args.isf_url,
                       throughput_mbps=args.throughput, budget_s=args.time_budget, min_shm=args.min_shm,
                       require_memory=args.require_memory)
    print(render(result), flush=True)
    return EXIT[result["status"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triagent")
    add_readiness_arguments(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else EXIT_USAGE
    return run_readiness(args)


if __name__ == "__main__":
    raise SystemExit(main())
