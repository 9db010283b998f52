"""Every process, read in-process (psutil and /proc). A PID that vanishes mid-read keeps what was
read and says so; an unreadable field is null with its error, never a lost record."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import psutil

from collectors.base import Context, FileCopy, Item, Problem, Record
from collectors.files.homes import passwd_users
from collectors.util import read_small, read_text, text, utc

HASH_CHUNK = 1 << 20
DELETED_SUFFIX = " (deleted)"


class _Vanished(Exception):
    pass


class _Fields:
    """Reads one process's fields: an unreadable field is None with its error; a vanished PID
    ends the record (raises _Vanished)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.errors: dict[str, str] = {}

    def get(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except psutil.NoSuchProcess:
            raise _Vanished() from None
        except psutil.ZombieProcess:
            self.errors[name] = "zombie"
        except psutil.AccessDenied:
            self.errors[name] = "EACCES"
        except FileNotFoundError:
            self.errors[name] = "ENOENT"
        except ProcessLookupError:
            if not os.path.exists(f"/proc/{self.pid}"):
                raise _Vanished() from None
            self.errors[name] = "ESRCH"  # e.g. environ of a kernel thread: it has no user memory
        except OSError as exc:
            self.errors[name] = errno.errorcode.get(exc.errno or 0, str(exc))
        except ValueError as exc:
            self.errors[name] = f"unparsable: {exc}"
        return None


def _names(ctx: Context) -> dict[int, str]:
    return {u["uid"]: u["name"] for u in passwd_users(ctx) if u["uid"] is not None}


def _hash_exe(pid: int, limit: int, cache: dict, ctx: Context) -> tuple[str | None, str | None]:
    """SHA-256 of the executable through /proc/PID/exe: works for deleted and memfd binaries."""
    path = f"/proc/{pid}/exe"
    try:
        st = os.stat(path)
    except OSError as exc:
        return None, errno.errorcode.get(exc.errno or 0, str(exc))
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in cache:
        return cache[key]
    if st.st_size > limit:
        cache[key] = (None, f"larger than {limit} bytes")
        return cache[key]
    digest = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(HASH_CHUNK):
                ctx.check()
                digest.update(chunk)
    except OSError as exc:
        return None, errno.errorcode.get(exc.errno or 0, str(exc))
    cache[key] = (digest.hexdigest(), None)
    return cache[key]


def _recover_exe(pid: int, rec: dict, copied: set[str], limit: int) -> FileCopy | None:
    """A deleted or memfd executable exists nowhere but in the running process: copy it from
    /proc/PID/exe (once per content) so it can be scanned and reversed later."""
    exe = rec.get("exe") or ""
    if not (rec.get("exe_deleted") or rec.get("exe_origin") == "/memfd" or exe.startswith("/memfd:")):
        return None
    digest = rec.get("exe_sha256")
    if not digest or digest in copied:
        return None
    path = f"/proc/{pid}/exe"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    copied.add(digest)
    rec["exe_copy"] = path
    return FileCopy(path, fd, st, 0, min(st.st_size, limit),
                    f"capped at {limit} bytes" if st.st_size > limit else None, "processes")


def _environ(pid: int) -> dict[str, str]:
    data = read_small(f"/proc/{pid}/environ", 1 << 20)
    env = {}
    for item in data.split(b"\0"):
        if item:
            key, _, value = item.partition(b"=")
            env[text(key)] = text(value)
    return env


def _status_fields(pid: int) -> dict[str, str]:
    out = {}
    for line in read_text(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def collect(ctx: Context) -> Iterator[Item]:
    users = _names(ctx)
    limit = int(ctx.opt("hash_exe_max_bytes", 256 << 20))
    suspicious = tuple(ctx.opt("suspicious_exe_prefixes", []))
    max_fds = int(ctx.opt("max_fds_per_process", 4096))
    hash_cache: dict = {}
    copied: set[str] = set()
    copy_limit = int(ctx.opt("copy_exe_max_bytes", 64 << 20))
    vanished = 0
    for pid in psutil.pids():
        ctx.check()
        fields = _Fields(pid)
        errors, get = fields.errors, fields.get
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            vanished += 1
            continue

        try:
            with proc.oneshot():
                rec = _process_record(pid, proc, get, users, suspicious)
            exe_link = rec.get("exe_link")
            if exe_link:
                rec["exe_sha256"], hash_error = _hash_exe(pid, limit, hash_cache, ctx)
                if hash_error:
                    errors["exe_sha256"] = hash_error
            fds = get("fds", partial(_fds, pid, max_fds))
            if fds is not None:
                rec["num_fds"] = len(fds)
                rec["num_sockets"] = sum(1 for _, target in fds if target.startswith("socket:"))
                for fd, target in fds:
                    yield Record("open_files", {"pid": pid, "fd": fd, "target": target,
                                                "deleted": target.endswith(DELETED_SUFFIX)})
                if len(fds) >= max_fds:
                    errors["fds"] = f"only the first {max_fds} descriptors listed"
        except _Vanished:
            vanished += 1
            continue
        if rec.get("kernel_thread"):
            errors.pop("exe", None)  # kernel threads have no executable
        recovered = _recover_exe(pid, rec, copied, copy_limit)
        rec["errors"] = errors
        yield Record("processes", rec)
        if recovered is not None:
            yield recovered
    if vanished:
        yield Problem(f"{vanished} processes exited while being read (expected on a busy host)", level="info",
                      detail={"vanished": vanished})


def _fds(pid: int, limit: int) -> list[tuple[int, str]]:
    out = []
    with os.scandir(f"/proc/{pid}/fd") as it:
        for entry in it:
            if len(out) >= limit:
                break
            try:
                out.append((int(entry.name), os.readlink(entry.path)))
            except OSError:
                continue
    out.sort()
    return out


def _process_record(pid: int, proc: psutil.Process, get: Callable, users: dict[int, str],
                    suspicious: tuple[str, ...]) -> dict[str, Any]:
    exe_link = get("exe", lambda: os.readlink(f"/proc/{pid}/exe"))
    deleted = bool(exe_link and exe_link.endswith(DELETED_SUFFIX))
    exe_path = exe_link[: -len(DELETED_SUFFIX)] if deleted else exe_link
    uids = get("uids", proc.uids)
    gids = get("gids", proc.gids)
    create = get("start_time", proc.create_time)
    env = get("environ", lambda: _environ(pid))
    status = get("status_file", lambda: _status_fields(pid)) or {}
    rec: dict[str, Any] = {
        "pid": pid, "ppid": get("ppid", proc.ppid), "name": get("name", proc.name),
        "cmdline": get("cmdline", proc.cmdline), "exe": exe_path, "exe_link": exe_link, "exe_deleted": deleted,
        "exe_origin": next((p.rstrip("/:") for p in suspicious if exe_path and exe_path.startswith(p)), None),
        "cwd": get("cwd", lambda: os.readlink(f"/proc/{pid}/cwd")),
        "root": get("root", lambda: os.readlink(f"/proc/{pid}/root")),
        "uids": list(uids) if uids else None, "gids": list(gids) if gids else None,
        "user": users.get(uids.real) if uids else None, "effective_user": users.get(uids.effective) if uids else None,
        "start_time_utc": utc(create), "state": get("state", proc.status),
        "threads": get("threads", proc.num_threads), "terminal": get("terminal", proc.terminal),
        "nice": get("nice", proc.nice), "cap_eff": status.get("CapEff"), "seccomp": status.get("Seccomp"),
        "tracer_pid": int(status["TracerPid"]) if status.get("TracerPid", "").isdigit() else None,
        "loginuid": get("loginuid", lambda: int(read_text(f"/proc/{pid}/loginuid"))),
        "cgroup": get("cgroup", lambda: read_text(f"/proc/{pid}/cgroup", 65536).strip().splitlines()),
        "namespaces": get("namespaces", lambda: _namespaces(pid)),
        "environ": env, "ld_preload": env.get("LD_PRELOAD") if env else None,
        "kernel_thread": get("kernel_thread", lambda: _is_kernel_thread(pid)),
    }
    mem = get("memory", proc.memory_info)
    if mem:
        rec["rss_bytes"], rec["vms_bytes"] = mem.rss, mem.vms
    return rec


PF_KTHREAD = 0x00200000


def _is_kernel_thread(pid: int) -> bool:
    stat = read_text(f"/proc/{pid}/stat", 4096)
    flags = int(stat[stat.rindex(")") + 2:].split()[6])
    return bool(flags & PF_KTHREAD)


def _namespaces(pid: int) -> dict[str, int]:
    out = {}
    for ns in ("pid", "net", "mnt", "user", "uts", "ipc", "cgroup"):
        try:
            out[ns] = os.stat(f"/proc/{pid}/ns/{ns}").st_ino
        except OSError:
            pass
    return out
