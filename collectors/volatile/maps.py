"""What every running process has mapped (issue 16 item 5), read from /proc/PID/maps in-process.

Stream ``process_maps``, one record per process and distinct mapping target:

- ``kind = file``: each distinct file path a process maps (its own executable, libraries, data files), with
  the permissions of its mappings, whether it is deleted, and flags: mapped from a world-writable place
  (``writable_place``), through a hidden folder (``hidden_path``), an executable mapping of a deleted file,
  and ``injected_candidate``: a file mapped executable that is not the executable itself, lies outside the
  library folders and the executable's own tree, while neither the process's LD_PRELOAD nor
  /etc/ld.so.preload explains it (what a dlopen()-style injection leaves; the loader's DT_NEEDED closure
  would be exact but means parsing every ELF of every process, too costly on a suspect host).
- ``kind = memfd``: an anonymous memory file (memfd_create) mapped; executable ones are how fileless
  payloads run.
- ``kind = shmem``: shared anonymous memory the kernel names like a deleted file (/dev/zero, SysV
  segments, [aio]); listed only when executable.
- ``kind = anonymous``: an executable mapping with no file ([heap], [stack], [anon:NAME] or unnamed), one
  record per mapping; the kernel's own [vdso], [vsyscall], [vvar] and [uprobes] pages are not listed.
  ``jit_known`` (on every record) says the process's executable is a known JIT (Java, V8, .NET, browsers,
  QEMU, PCRE2 JIT users...), whose code caches are writable and executable by design; judged on the
  executable's name only, since a process sets its own comm.

The content of executable mappings of deleted files, memfds and files in writable places (which may exist
nowhere else) is hashed, and copied into the bundle, through /proc/PID/map_files (the mapped object
itself, whatever its name; needs CAP_SYS_ADMIN), bounded per file and in total, once per content.
The collector's own process's mappings of its own executable and unpacked runtime (a PyInstaller binary
unpacks into /dev/shm, a writable place) are listed with ``own_file`` and ``content_skipped``, never read.

Paths in /proc/PID/maps are in the process's own mount namespace (a container's, a service's PrivateTmp):
they are recorded, never opened. Only a live host has processes: with --root an image (or any root but /),
the collector yields one info Problem and nothing else. Bounded: processes, maps lines and records per
process, hashing and copying bytes, and a time budget; a PID that exits while read is counted, not an error.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from collectors.base import Context, FileCopy, Item, Problem, Record
from collectors.files.fsread import is_own_file, own_runtime_dirs, read_capped
from collectors.util import read_small, text

DELETED_SUFFIX = " (deleted)"
WRITABLE_PLACES = ["/tmp", "/var/tmp", "/dev/shm", "/run/shm"]
# where the loader and package managers put shared objects (and read-only package stores)
LIBRARY_DIRS = ["/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32",
                "/usr/libexec", "/usr/local/lib", "/usr/local/lib64", "/snap", "/nix/store", "/gnu/store"]
# shared objects an interpreter loads by design wherever its packages live (a venv, pyenv, node_modules)
EXPECTED_LIBRARIES = [r"/(site|dist)-packages/", r"/lib/python[0-9.]+/lib-dynload/", r"/node_modules/",
                      r"/gems/[^/]+/gems/", r"/perl5?/"]
# programs whose code caches are writable and executable by design (their anonymous rwx mappings are JIT code)
JIT_EXECUTABLES = ["java", "javaw", "node", "nodejs", "dotnet", "pwsh", "mono", "mono-sgen", "chrome", "chromium",
                   "chromium-browser", "chrome_crashpad_handler", "firefox", "firefox-esr", "thunderbird",
                   "electron", "code", "qemu-system-*", "qemu-*-static", "qemu-*", "luajit*", "php", "php[0-9]*",
                   "php-fpm*", "nginx", "grep", "pcre2grep", "beam.smp", "mysqld", "mariadbd", "Xorg",
                   "gnome-shell", "gjs*", "WebKitWebProcess"]
# special regions of every process: the kernel's, not a payload
KERNEL_REGIONS = ("[vdso]", "[vsyscall]", "[vvar]", "[vvar_vclock]", "[vdso_data]", "[uprobes]", "[sigpage]",
                  "[vectors]")
# shared anonymous memory that the kernel names like a deleted file
SHMEM = re.compile(r"^/(dev/zero|SYSV[0-9a-f]{8}|\[aio\]|anon_hugepage|i915|drm mm object|dmabuf:.*|kgsl-3d0)$")
HASH_CHUNK = 1 << 20


@dataclass
class _Budget:
    hash_bytes: int
    copy_bytes: int
    hash_cap: int
    copy_cap: int
    hashes: dict[tuple[int, int, int], tuple[str | None, str | None]] = field(default_factory=dict)
    copied: set[str] = field(default_factory=set)
    skipped: int = 0
    own_skipped: int = 0  # the collector's own mapped files, not read


@dataclass
class _Mapped:
    """One distinct mapping target of a process: its mappings folded together."""

    kind: str
    path: str
    deleted: bool
    perms: set[str] = field(default_factory=set)
    mappings: int = 0
    size: int = 0
    first: str = ""
    inode: int = 0
    device: str = ""


def _parse_line(line: str) -> tuple[int, int, str, str, int, str] | None:
    """(start, end, perms, device, inode, name) of one maps line; the name may hold spaces."""
    parts = line.split(None, 5)
    if len(parts) < 5:
        return None
    try:
        start_s, _, end_s = parts[0].partition("-")
        return int(start_s, 16), int(end_s, 16), parts[1], parts[3], int(parts[4]), \
            (parts[5].rstrip("\n") if len(parts) > 5 else "")
    except ValueError:
        return None


def _under(path: str, folders: list[str]) -> str | None:
    for folder in folders:
        folder = folder.rstrip("/")
        if path.startswith(folder + "/"):
            return folder
    return None


def _exe_tree(exe: str) -> str | None:
    """The folder a program ships its own libraries in ($ORIGIN, $ORIGIN/../lib): its folder, or the one
    above a bin/sbin/libexec folder; None when that is a system-wide folder."""
    folder = os.path.dirname(exe)
    if os.path.basename(folder) in ("bin", "sbin", "libexec"):
        folder = os.path.dirname(folder)
    if folder in ("", "/", "/usr", "/usr/local", "/opt", "/home", "/root") or folder.count("/") < 2:
        return None
    return folder


def _preload_entries(ctx: Context) -> set[str]:
    """Libraries /etc/ld.so.preload names, read inside the evidence root."""
    try:
        data, _, _ = read_capped(ctx, "/etc/ld.so.preload", 1 << 20)
    except (OSError, ValueError):
        return set()
    return {w for line in text(data).splitlines() for w in line.split("#", 1)[0].replace(":", " ").split()}


def _ld_preload(pid: int) -> str | None:
    """The process's LD_PRELOAD (None when absent or unreadable)."""
    try:
        env = read_small(f"/proc/{pid}/environ", 1 << 20)
    except OSError:
        return None
    for item in env.split(b"\0"):
        if item.startswith(b"LD_PRELOAD="):
            return text(item[len(b"LD_PRELOAD="):]) or None
    return None


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc))


def _content(ctx: Context, pid: int, start: int, end: int, budget: _Budget, rec: dict[str, Any]) -> FileCopy | None:
    """Hash (and copy once per content) the object behind one mapping through /proc/PID/map_files: the
    file or memfd itself, even deleted, whatever its name says."""
    path = f"/proc/{pid}/map_files/{start:x}-{end:x}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        rec["hash_error"] = _errname(exc)
        return None
    keep = False
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size)
        if key in budget.hashes:
            rec["sha256"], skipped = budget.hashes[key]
        elif st.st_size > budget.hash_cap:
            skipped = f"over {budget.hash_cap} bytes"
        elif st.st_size > budget.hash_bytes:
            skipped = "artifact hashing budget spent"
        else:
            digest, pos = hashlib.sha256(), 0
            while pos < st.st_size:
                ctx.check()
                with ctx.blocking(path):
                    chunk = os.pread(fd, HASH_CHUNK, pos)
                if not chunk:
                    break
                digest.update(chunk)
                pos += len(chunk)
            budget.hash_bytes -= pos
            rec["sha256"], skipped = digest.hexdigest(), None
        budget.hashes.setdefault(key, (rec.get("sha256"), skipped))
        if skipped:
            rec["hash_skipped"] = skipped
            budget.skipped += 1
        rec["content_size"] = st.st_size
        digest_hex = rec.get("sha256")
        if not digest_hex or digest_hex in budget.copied or not st.st_size:
            return None
        if st.st_size > budget.copy_bytes:
            rec["copy_skipped"] = "artifact copy budget spent"
            return None
        length = min(st.st_size, budget.copy_cap)
        budget.copy_bytes -= length
        budget.copied.add(digest_hex)
        rec["content_copy"] = path
        keep = True
        return FileCopy(path, fd, st, 0, length,
                        f"capped at {budget.copy_cap} bytes" if st.st_size > budget.copy_cap else None, "maps")
    except OSError as exc:
        rec["hash_error"] = _errname(exc)
        return None
    finally:
        if not keep:
            os.close(fd)


class _Settings:
    def __init__(self, ctx: Context):
        self.writable = [p.rstrip("/") for p in ctx.opt("writable_places", WRITABLE_PLACES)]
        self.library_dirs = list(ctx.opt("library_dirs", LIBRARY_DIRS))
        self.expected = [re.compile(p) for p in ctx.opt("expected_library_patterns", EXPECTED_LIBRARIES)]
        self.jit = list(ctx.opt("jit_executables", JIT_EXECUTABLES))
        self.max_lines = int(ctx.opt("max_lines_per_process", 65536))
        self.max_records = int(ctx.opt("max_records_per_process", 2048))
        self.max_anon = int(ctx.opt("max_anonymous_per_process", 64))
        self.preload = _preload_entries(ctx)
        self.own = {os.getpid()}
        if getattr(sys, "frozen", False) or os.environ.get("STATICX_PROG_PATH"):
            self.own.add(os.getppid())  # the PyInstaller/staticx launcher that unpacked and started us
        # where we unpacked ourselves (/dev/shm/_MEI*: a writable place): our own mappings of those files are
        # listed but never hashed or copied (20 MB of our own libraries in the bundle, a second of the snapshot)
        self.own_dirs = own_runtime_dirs()


def _comm(pid: int) -> str | None:
    try:
        return text(read_small(f"/proc/{pid}/comm", 64)).strip()
    except OSError:
        return None


def _is_jit(cfg: _Settings, exe: str | None) -> bool:
    name = os.path.basename(exe or "")
    return bool(name) and any(fnmatch.fnmatchcase(name, pattern) for pattern in cfg.jit)


def _process(ctx: Context, pid: int, cfg: _Settings, budget: _Budget) -> Iterator[Item]:
    """Records of one process; raises FileNotFoundError/ProcessLookupError when it is gone."""
    try:
        exe_link: str | None = os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        exe_link = None  # a kernel thread (or gone: the maps read tells)
    except OSError:
        exe_link = None
    data = read_small(f"/proc/{pid}/maps", cfg.max_lines * 256)
    if not data:
        return  # a kernel thread, or a zombie: no user memory
    lines = text(data).splitlines()
    truncated = len(lines) > cfg.max_lines or len(data) >= cfg.max_lines * 256
    exe_deleted = bool(exe_link and exe_link.endswith(DELETED_SUFFIX))
    exe = exe_link[: -len(DELETED_SUFFIX)] if exe_link and exe_deleted else exe_link
    comm = _comm(pid)
    jit = _is_jit(cfg, exe)
    own = pid in cfg.own
    targets: dict[tuple[str, str], _Mapped] = {}
    first_range: dict[tuple[str, str], tuple[int, int]] = {}  # an executable mapping's range, for map_files
    anonymous: list[dict[str, Any]] = []
    anon_dropped = 0
    for line in lines[: cfg.max_lines]:
        parsed = _parse_line(line)
        if parsed is None:
            continue
        start, end, perms, device, inode, name = parsed
        executable = "x" in perms
        if not name or name.startswith("["):
            if not executable or name in KERNEL_REGIONS:
                continue  # data memory: counted by psutil elsewhere, no evidence of code
            if len(anonymous) >= cfg.max_anon:
                anon_dropped += 1
                continue
            anonymous.append({"region": name or None, "start": f"{start:x}", "end": f"{end:x}", "perms": perms,
                              "size": end - start, "writable_executable": "w" in perms})
            continue
        deleted = name.endswith(DELETED_SUFFIX)
        path = name[: -len(DELETED_SUFFIX)] if deleted else name
        if path.startswith("/memfd:"):
            kind = "memfd"
        elif deleted and SHMEM.match(path):
            kind = "shmem"
            if not executable:
                continue
        else:
            kind = "file"
        key = (kind, name)
        mapped = targets.get(key)
        if mapped is None:
            if len(targets) >= cfg.max_records:
                continue
            mapped = targets[key] = _Mapped(kind, path, deleted, first=f"{start:x}", inode=inode, device=device)
        mapped.perms.add(perms)
        mapped.mappings += 1
        mapped.size += end - start
        if executable and key not in first_range:
            first_range[key] = (start, end)
    base = {"pid": pid, "comm": comm, "exe": exe, "exe_deleted": exe_deleted, "own_process": own, "jit_known": jit}
    ld_preload: str | None | bool = False  # read once, only when a candidate needs it
    for key, mapped in targets.items():
        executable = key in first_range
        perms = sorted(mapped.perms)
        is_exe = bool(exe) and mapped.path == exe
        place = _under(mapped.path, cfg.writable) if mapped.kind == "file" else None
        parts = mapped.path.split("/")
        hidden = mapped.kind == "file" and any(p.startswith(".") and p not in (".", "..") for p in parts[:-1])
        rec: dict[str, Any] = {
            **base, "kind": mapped.kind, "path": mapped.path, "deleted": mapped.deleted and mapped.kind == "file",
            "perms": perms, "executable": executable,
            "writable_executable": any("w" in p and "x" in p for p in perms),
            "shared": any(p.endswith("s") for p in perms), "mappings": mapped.mappings, "size": mapped.size,
            "start": mapped.first, "inode": mapped.inode, "device": mapped.device, "is_exe": is_exe,
            "writable_place": place, "hidden_path": hidden,
        }
        if mapped.kind == "memfd":
            rec["memfd_name"] = mapped.path[len("/memfd:"):]
        flags = []
        if executable and rec["deleted"]:
            flags.append("deleted_executable_mapping")
        if executable and mapped.kind in ("memfd", "shmem"):
            flags.append(f"{mapped.kind}_executable_mapping")
        if mapped.kind == "shmem" and rec["writable_executable"]:
            flags.append("anonymous_rwx")  # shared anonymous memory: code written and run in place
        if executable and place:
            flags.append("writable_place_executable_mapping")
        library = executable and mapped.kind == "file" and not is_exe
        candidate = False
        if library and not _under(mapped.path, cfg.library_dirs) \
                and not any(p.search(mapped.path) for p in cfg.expected):
            tree = _exe_tree(exe or "")
            if not (tree and mapped.path.startswith(tree + "/")):
                if hidden:  # not a venv's or the program's own: a folder made to be overlooked
                    flags.append("hidden_path_library")
                if ld_preload is False:
                    ld_preload = _ld_preload(pid)
                named = mapped.path in cfg.preload or os.path.basename(mapped.path) in \
                    {os.path.basename(p) for p in cfg.preload}
                rec["ld_preload"] = ld_preload
                rec["listed_in_ld_so_preload"] = named
                candidate = not ld_preload and not named
        rec["library"] = library
        rec["injected_candidate"] = candidate
        if candidate:
            flags.append("injected_candidate")
        rec["flags"] = flags
        copy = None
        if executable and (rec["deleted"] or mapped.kind in ("memfd", "shmem") or place):
            if own and mapped.kind == "file" and not mapped.deleted and is_own_file(mapped.path, cfg.own_dirs):
                rec["own_file"] = True
                rec["content_skipped"] = "the collector's own file (its executable or unpacked runtime)"
                budget.own_skipped += 1
            else:
                start, end = first_range[key]
                copy = _content(ctx, pid, start, end, budget, rec)
        yield Record("process_maps", rec)
        if copy is not None:
            yield copy
    for anon in anonymous:
        yield Record("process_maps", {**base, "kind": "anonymous", "path": None, "deleted": False,
                                      "perms": [anon["perms"]], "executable": True,
                                      "writable_executable": anon["writable_executable"], "region": anon["region"],
                                      "start": anon["start"], "end": anon["end"], "size": anon["size"],
                                      "mappings": 1, "is_exe": False, "writable_place": None,
                                      "hidden_path": False, "library": False, "injected_candidate": False,
                                      "flags": ["anonymous_rwx" if anon["writable_executable"]
                                                else "anonymous_executable"]})
    if truncated or len(targets) >= cfg.max_records or anon_dropped:
        yield Problem(f"pid {pid}: mappings listed in part (first {cfg.max_lines} lines, {cfg.max_records} "
                      f"targets, {cfg.max_anon} anonymous executable mappings)", path=f"/proc/{pid}/maps",
                      level="warning", detail={"pid": pid, "anonymous_not_listed": anon_dropped})


def collect(ctx: Context) -> Iterator[Item]:
    if not ctx.live or os.path.realpath(ctx.root) != "/":
        # an image has no running processes, and this machine's /proc is not the evidence's
        yield Problem("not a live host: no process mappings", level="info")
        return
    cfg = _Settings(ctx)
    budget = _Budget(hash_bytes=int(ctx.opt("hash_total_bytes", 512 << 20)),
                     copy_bytes=int(ctx.opt("copy_total_bytes", 128 << 20)),
                     hash_cap=int(ctx.opt("hash_max_bytes", 64 << 20)),
                     copy_cap=int(ctx.opt("copy_max_bytes", 32 << 20)))
    max_processes = int(ctx.opt("max_processes", 8192))
    stop_at = time.monotonic() + float(ctx.opt("time_budget_s", 90))
    try:
        pids = sorted(int(d) for d in os.listdir("/proc") if d.isdigit())
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot list /proc", "/proc")
        return
    if len(pids) > max_processes:
        yield Problem(f"{len(pids)} processes: only the first {max_processes} read", level="warning")
        pids = pids[:max_processes]
    vanished = done = 0
    denied: list[int] = []  # pids whose maps we may not read
    for pid in pids:
        ctx.check()
        if time.monotonic() > stop_at:
            yield Problem(f"time budget spent: {len(pids) - done} processes not read", level="warning",
                          detail={"next_pid": pid})
            break
        done += 1
        try:
            yield from _process(ctx, pid, cfg, budget)
        except (FileNotFoundError, ProcessLookupError):
            vanished += 1
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                # another user namespace, a ptrace-protected (Yama, dumpable=0) or exiting process: the kernel's
                # access check said no; counted in one warning, not an error per process
                denied.append(pid)
            else:
                yield Problem.from_os_error(exc, "cannot read maps", f"/proc/{pid}/maps")
    if vanished:
        yield Problem(f"{vanished} processes exited while being read (expected on a busy host)", level="info",
                      detail={"vanished": vanished})
    if denied:
        yield Problem(f"{len(denied)} processes' maps not readable (permission denied: another user namespace, "
                      "ptrace protection, or not root)", level="warning",
                      detail={"denied": len(denied), "pids": denied[:20]})
    yield Problem(f"process maps: {done} processes read; {len(budget.hashes)} mapped objects hashed or sized, "
                  f"{budget.skipped} not hashed (cap {budget.hash_cap} bytes per object), "
                  f"{len(budget.copied)} copied; {budget.own_skipped} of the collector's own mapped files not read",
                  level="info",
                  detail={"hash_max_bytes": budget.hash_cap, "hash_bytes_left": budget.hash_bytes,
                          "own_files_not_read": budget.own_skipped, "own_runtime_dirs": sorted(cfg.own_dirs),
                          "copy_max_bytes": budget.copy_cap, "copy_bytes_left": budget.copy_bytes})
