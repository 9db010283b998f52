"""Dangerous permissions, found in one bounded walk of the system folders: file capabilities, set-user-ID and
set-group-ID files, world-writable system files and folders, and immutable or append-only flags.

Why each matters on a compromised host:

- a file capability (the ``security.capability`` extended attribute) gives root's powers to whoever runs the
  file, without the set-user-ID bit that every SUID sweep looks for: ``setcap cap_setuid+ep python3`` is a
  root shell for any local user;
- a set-user-ID interpreter, shell or editor is the same back door the old way;
- a world-writable file under /etc or /usr lets any account plant code that root runs;
- ``chattr +i`` (immutable) or ``+a`` (append-only) on authorized_keys, a crontab, /etc/ld.so.preload or a
  dropped binary makes it survive ``rm`` and editors during clean-up, even by root.

The walk (our own, never a host program) covers the persistence paths first (each home's .ssh and shell start-up
files, cron, sudoers, passwd/shadow, ld.so.preload, systemd units), then the system folders, then the drop
zones (/tmp, /var/tmp, /dev/shm). It never follows a link, never enters pseudo, FUSE, network, overlay or squashfs
mounts (an attacker's FUSE server can make a read hang; overlay and squashfs are container layers and snaps,
other people's file systems), prunes container stores, and stops at an entry and a time budget; within a
folder the newest sub-folders are walked first, so a cut walk keeps what changed last. Per entry it costs one
statx(2) (mode, owner, times, birth time and the immutable/append-only attributes, without opening the file:
opening a device or FIFO of the host can have effects) and, for regular files, one lgetxattr(2) through the
folder's descriptor. Only entries with a finding become records."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import platform
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from collectors.base import Cancelled, Context, Item, Problem, Record
from collectors.files import packages
from collectors.files.fsread import evidence, is_remote_fs, own_runtime_dirs, resolve
from collectors.files.homes import Home, homes
from collectors.files.suid import PSEUDO_DIRS, PSEUDO_FS
from collectors.util import read_text, utc

# ---- capabilities ------------------------------------------------------------------------------

# include/uapi/linux/capability.h, by bit number
CAP_NAMES = (
    "cap_chown", "cap_dac_override", "cap_dac_read_search", "cap_fowner", "cap_fsetid", "cap_kill", "cap_setgid",
    "cap_setuid", "cap_setpcap", "cap_linux_immutable", "cap_net_bind_service", "cap_net_broadcast",
    "cap_net_admin", "cap_net_raw", "cap_ipc_lock", "cap_ipc_owner", "cap_sys_module", "cap_sys_rawio",
    "cap_sys_chroot", "cap_sys_ptrace", "cap_sys_pacct", "cap_sys_admin", "cap_sys_boot", "cap_sys_nice",
    "cap_sys_resource", "cap_sys_time", "cap_sys_tty_config", "cap_mknod", "cap_lease", "cap_audit_write",
    "cap_audit_control", "cap_setfcap", "cap_mac_override", "cap_mac_admin", "cap_syslog", "cap_wake_alarm",
    "cap_block_suspend", "cap_audit_read", "cap_perfmon", "cap_bpf", "cap_checkpoint_restore",
)
VFS_CAP_REVISION_MASK = 0xFF000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001
# revision -> (number of 32-bit permitted/inheritable pairs, size of the attribute)
VFS_CAP_REVISIONS = {0x01000000: (1, 12), 0x02000000: (2, 20), 0x03000000: (2, 24)}
XATTR_CAPS = "security.capability"


def cap_names(mask: int) -> list[str]:
    return [CAP_NAMES[bit] if bit < len(CAP_NAMES) else f"cap_{bit}" for bit in range(64) if mask >> bit & 1]


def decode_capability(raw: bytes) -> dict[str, Any]:
    """struct vfs_cap_data / vfs_ns_cap_data (v1, v2, v3) into capability names. A value the kernel would
    refuse is kept, described as malformed (someone wrote it with setfattr, not setcap)."""
    out: dict[str, Any] = {"raw": raw[:64].hex()}
    if len(raw) < 4:
        return {**out, "version": None, "malformed": "shorter than its header"}
    magic = struct.unpack_from("<I", raw)[0]
    revision = magic & VFS_CAP_REVISION_MASK
    shape = VFS_CAP_REVISIONS.get(revision)
    if shape is None:
        return {**out, "version": None, "malformed": f"unknown revision 0x{revision >> 24:02x}"}
    pairs, size = shape
    if len(raw) < size:
        return {**out, "version": revision >> 24, "malformed": f"{len(raw)} bytes, revision needs {size}"}
    permitted = inheritable = 0
    for i in range(pairs):
        p, h = struct.unpack_from("<II", raw, 4 + 8 * i)
        permitted |= p << (32 * i)
        inheritable |= h << (32 * i)
    out.update({"version": revision >> 24, "effective": bool(magic & VFS_CAP_FLAGS_EFFECTIVE),
                "permitted": cap_names(permitted), "inheritable": cap_names(inheritable)})
    if revision == 0x03000000:  # a capability valid only in the user namespace whose root is this uid
        out["rootid"] = struct.unpack_from("<I", raw, 20)[0]
    return out


# ---- statx and FS_IOC_GETFLAGS -------------------------------------------------------------------

AT_SYMLINK_NOFOLLOW, AT_NO_AUTOMOUNT, AT_STATX_DONT_SYNC = 0x100, 0x800, 0x4000
STATX_BASIC_STATS, STATX_BTIME = 0x7FF, 0x800
FS_IMMUTABLE_FL, FS_APPEND_FL = 0x10, 0x20  # statx's STATX_ATTR_IMMUTABLE / _APPEND have the same values
_STATX_HEAD = struct.Struct("=IIQIIIHHQQQQ")
_STATX_TIME = struct.Struct("=qI")


def _ioc_getflags() -> int:
    """FS_IOC_GETFLAGS = _IOR('f', 1, long): 0x80086601 on 64-bit x86 and arm, 0x80046601 on 32-bit; powerpc,
    mips and sparc encode the direction in three bits from bit 29 instead of two from bit 30."""
    size = ctypes.sizeof(ctypes.c_long)
    if platform.machine().lower().startswith(("ppc", "powerpc", "mips", "sparc")):
        return (2 << 29) | (size << 16) | (ord("f") << 8) | 1
    return (2 << 30) | (size << 16) | (ord("f") << 8) | 1


FS_IOC_GETFLAGS = _ioc_getflags()


@dataclass
class Entry:
    mode: int
    uid: int
    gid: int
    size: int
    ino: int
    dev: tuple[int, int]
    mtime: float
    ctime: float
    btime: float | None
    flags: int | None  # FS_*_FL bits we know (immutable, append-only), None when unknown
    flags_via: str | None


_statx_state: dict[str, Any] = {}
_statx_local = threading.local()  # one result buffer per thread: artifacts may run side by side
_STATX_FLAGS = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_STATX_DONT_SYNC
_STATX_MASK = STATX_BASIC_STATS | STATX_BTIME
_STATX_MODE = struct.Struct("=H")  # stx_mode, at 28
_STATX_DEV = struct.Struct("=II")  # stx_dev_major, stx_dev_minor, at 136
_FLAG_BITS = FS_IMMUTABLE_FL | FS_APPEND_FL


def _statx_fn() -> Any:
    if "fn" not in _statx_state:
        try:
            fn = ctypes.CDLL(None, use_errno=True).statx  # glibc 2.28+, musl 1.2.5+
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _statx_state["fn"] = fn
    return _statx_state["fn"]


def _statx_buf() -> Any:
    buf = getattr(_statx_local, "buf", None)
    if buf is None:
        buf = _statx_local.buf = ctypes.create_string_buffer(256)
    return buf


def _entry_from(buf: Any) -> Entry:
    """An Entry from a filled struct statx (read in place: no copy of the buffer)."""
    (mask, _, attrs, _, uid, gid, mode, _, ino, size, _, attrs_mask) = _STATX_HEAD.unpack_from(buf, 0)
    bsec, bns = _STATX_TIME.unpack_from(buf, 80)
    csec, cns = _STATX_TIME.unpack_from(buf, 96)
    msec, mns = _STATX_TIME.unpack_from(buf, 112)
    known = attrs_mask & _FLAG_BITS == _FLAG_BITS
    return Entry(mode, uid, gid, size, ino, _STATX_DEV.unpack_from(buf, 136), msec + mns / 1e9, csec + cns / 1e9,
                 bsec + bns / 1e9 if mask & STATX_BTIME else None, attrs & _FLAG_BITS if known else None,
                 "statx" if known else None)


def stat_entry(dir_fd: int, name: str, use_statx: bool = True) -> Entry:
    """statx(dir_fd, name, AT_SYMLINK_NOFOLLOW): never follows the last component, never opens the file."""
    fn = _statx_fn() if use_statx else None
    if fn is not None:
        buf = _statx_buf()
        if fn(dir_fd, os.fsencode(name), _STATX_FLAGS, _STATX_MASK, buf) == 0:
            return _entry_from(buf)
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EPERM):  # EPERM: a seccomp filter; use the old calls
            raise OSError(code, os.strerror(code), name)
        _statx_state["fn"] = None
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    return Entry(st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino, (os.major(st.st_dev), os.minor(st.st_dev)),
                 st.st_mtime, st.st_ctime, None, None, None)


def ioctl_flags(dir_fd: int, name: str, entry: Entry) -> int | None:
    """FS_IOC_GETFLAGS on a regular file or folder opened O_RDONLY|O_NOFOLLOW|O_NONBLOCK (never a device,
    FIFO or socket); None when it cannot be opened; OSError when the filesystem has no such flags."""
    if not (stat.S_ISREG(entry.mode) or stat.S_ISDIR(entry.mode)):
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    if stat.S_ISDIR(entry.mode):
        flags |= os.O_DIRECTORY
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_ino != entry.ino:
            return None  # replaced between the stat and the open
        buf = bytearray(ctypes.sizeof(ctypes.c_long))
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)  # OSError(ENOTTY, EOPNOTSUPP): the filesystem has no such flags
        return struct.unpack_from("=I", buf)[0]  # the kernel writes an int whatever the request's size says
    finally:
        os.close(fd)


def sha256_at(ctx: Context, dir_fd: int, name: str, ino: int, limit: int) -> str | None:
    """SHA-256 of a regular file of at most ``limit`` bytes, opened through its folder's descriptor without
    following it, O_NOATIME where we may (suid.py's hash moves the access time, which a timeline reads)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        try:
            fd = os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
        except PermissionError:
            fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_ino != ino or st.st_size > limit:
            return None
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            ctx.check()
            digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)


# ---- the walk ------------------------------------------------------------------------------------

SKIP_FS = PSEUDO_FS | {"overlay", "squashfs", "iso9660", "udf"}
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
PERSISTENCE_PATHS = (
    "/etc/ld.so.preload", "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/sudoers",
    "/etc/sudoers.d", "/etc/crontab", "/etc/cron.d", "/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly",
    "/etc/cron.monthly", "/etc/cron.yearly", "/etc/cron.allow", "/etc/anacrontab", "/var/spool/cron",
    "/etc/systemd/system", "/etc/rc.local", "/etc/profile", "/etc/profile.d", "/etc/bash.bashrc", "/etc/pam.d",
    "/etc/ssh/sshd_config", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
)
HOME_PATHS = (".ssh", ".bashrc", ".bash_profile", ".profile", ".bash_logout", ".zshrc", ".config/autostart")


def _skipped_mounts(ctx: Context) -> set[str]:
    """In-root mount points not to enter: pseudo, FUSE, network, overlay and squashfs (read live from
    mountinfo; under --root only the pseudo folders are known, and fsread's own list of remote mounts)."""
    skipped = set(PSEUDO_DIRS) - {"/dev"}  # /dev/shm is a drop zone; /dev itself is never a top
    if not ctx.live or ctx.root != "/":
        return skipped
    try:
        for line in read_text("/proc/self/mountinfo", 16 << 20).splitlines():
            pre, _, post = line.partition(" - ")
            fields, fstype = pre.split(), (post.split() or [""])[0]
            if len(fields) > 4 and fields[4] != "/" and (fstype in SKIP_FS or is_remote_fs(fstype)):
                skipped.add(fields[4].replace("\\040", " "))
    except OSError:
        pass
    return skipped


class Walk:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.max_entries = int(ctx.opt("max_entries", 400_000))
        self.limit = self.max_entries  # lowered for the drop zones, walked last (drop_max_entries)
        self.max_depth = int(ctx.opt("max_depth", 32))
        self.max_records = int(ctx.opt("max_records", 5000))
        self.hash_limit = int(ctx.opt("hash_limit_bytes", 64 << 20))
        self.ends = time.monotonic() + float(ctx.opt("time_budget_s", 60))
        self.prune = set(ctx.opt("prune", []))
        self.drop = set(ctx.opt("drop_paths", []))  # below these, world-writable is the point, not a finding
        self.skipped = _skipped_mounts(ctx)
        self.root = evidence(ctx)
        self.use_statx = bool(ctx.opt("use_statx", True))
        self.entries = 0
        self.drop_start = 0
        self.cut: str | None = None
        self.errors: list[str] = []
        self.records: list[tuple[float, dict[str, Any]]] = []  # (the later of mtime and ctime, record)
        self.dropped = 0
        self.done: set[str] = set()
        self.done_names: dict[str, set[str]] = {}  # the same paths, by folder: the walk's check costs no string
        # security.capability is read on a regular file someone can run with it: one with an execute bit, or one
        # not owned by root (its owner may chmod +x it later: a dormant capability). A root-owned file without
        # an execute bit only root can make runnable, and root needs no capability; not asking saves ~150 000
        # getxattr calls on /usr. capability_all_files = true asks every file; the summary counts those not asked.
        self.all_caps = bool(ctx.opt("capability_all_files", False))
        self.caps_not_read = 0
        self.walked: set[tuple[tuple[int, int], int]] = set()
        self.no_xattr: set[tuple[int, int]] = set()
        self.no_flags: set[tuple[int, int]] = set()
        self.proc_fd = os.path.isdir("/proc/self/fd")
        # the collector's own unpacked runtime (a PyInstaller binary unpacks into /dev/shm, a drop zone): not
        # walked, and said so in the summary (live root only: host paths)
        self.own_dirs = own_runtime_dirs() if ctx.live and self.root.real == "/" else frozenset()
        self.own_skipped: list[str] = []

    # -- budget
    def spent(self) -> bool:
        if self.cut is not None:
            return True
        if self.entries >= self.max_entries:
            self.cut = f"entry budget ({self.max_entries}) reached"
        elif self.entries >= self.limit:
            self.cut = f"drop-zone entry budget ({self.limit - self.drop_start}) reached"
        elif self.entries % 256 == 0 and time.monotonic() > self.ends:
            self.cut = "time budget reached"
        return self.cut is not None

    # -- one entry
    def visit(self, dir_fd: int, name: str, path: str, zone: str, depth: int, recurse: bool) -> None:
        if path in self.done:
            return
        self.done.add(path)
        folder, _, base = path.rpartition("/")
        self.done_names.setdefault(folder, set()).add(base)
        self.entries += 1
        try:
            with self.ctx.blocking(path):
                entry = stat_entry(dir_fd, name, self.use_statx)
        except OSError as exc:
            self.errors.append(f"{path}: {exc.strerror}")
            return
        if stat.S_ISLNK(entry.mode):
            return  # never followed; a link has no flags and its mode bits mean nothing
        if stat.S_ISDIR(entry.mode) and (entry.dev, entry.ino) in self.walked:
            return  # a top reached again through a link (/lib64 -> usr/lib64): inspected and walked already
        record = self.inspect(dir_fd, name, path, entry, zone)
        if record is not None:
            self.keep(record, entry)
        if recurse and stat.S_ISDIR(entry.mode):
            self.descend(dir_fd, name, path, entry, zone, depth)

    def descend(self, dir_fd: int, name: str, path: str, entry: Entry, zone: str, depth: int) -> None:
        if path in self.prune or path in self.skipped or (self.root.remote and self._host(path) in self.root.remote):
            return
        if (entry.dev, entry.ino) in self.walked:
            return  # a bind mount or a top reached twice
        if path in self.own_dirs:
            self.own_skipped.append(path)
            return
        if depth >= self.max_depth:
            self.errors.append(f"{path}: depth limit {self.max_depth}")
            return
        self.walked.add((entry.dev, entry.ino))
        try:
            with self.ctx.blocking(path):
                fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self.errors.append(f"{path}: {exc.strerror}")
            return
        try:
            if os.fstat(fd).st_ino != entry.ino:
                return  # swapped under us
            children = self._list(fd, path, zone)
            if children is None:
                return
            children.sort(key=lambda c: c[0], reverse=True)  # newest first: a cut walk keeps what changed last
            for _, child, sub in children:
                if self.spent():
                    return
                child_path = path.rstrip("/") + "/" + child
                self.descend(fd, child, child_path, sub, "drop" if child_path in self.drop else zone, depth + 1)
        finally:
            os.close(fd)

    def _list(self, fd: int, path: str, zone: str) -> list[tuple[float, str, Entry]] | None:
        """Look at every name of one opened folder; its sub-folders, or None when the budget ran out. The hot
        loop of the walk (400 000 names): one statx per name read in place, and a file with no special bit, no
        flag and no capability to read is dropped before any object is made for it. One blocking mark for the
        folder, renewed every 256 names, so the engine still sees a call that never returns."""
        children: list[tuple[float, str, Entry]] = []
        base = path.rstrip("/")
        done = self.done_names.get(base)  # persistence paths seen first in this folder
        fn = _statx_fn() if self.use_statx else None
        buf = _statx_buf()
        ctx, no_flags, no_xattr, all_caps = self.ctx, self.no_flags, self.no_xattr, self.all_caps
        head, dev_of = _STATX_HEAD.unpack_from, _STATX_DEV.unpack_from
        special = stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH
        count = 0
        # spent() answers yes only from these entry counts on, or (its clock) at a multiple of 256: asked then
        stop_at = min(self.max_entries, self.limit)
        with ctx.blocking(path), os.scandir(fd) as listing:  # lazily: a folder of millions of names is cut
            while True:
                try:
                    item = next(listing, None)
                except OSError as exc:
                    self.errors.append(f"{path}: {exc.strerror}")
                    break
                if item is None:
                    break
                count += 1
                if count & 255 == 0:
                    ctx.reading = (path, time.monotonic())
                    ctx.check()
                if (self.entries >= stop_at or not self.entries & 255) and self.spent():
                    return None
                child = item.name
                if done is not None and child in done:
                    continue  # a persistence path, seen first (only those are remembered: a walk's worth of
                    # paths would cost tens of megabytes; folders are remembered by device and inode instead)
                self.entries += 1
                if fn is not None and fn(fd, os.fsencode(child), _STATX_FLAGS, _STATX_MASK, buf) == 0:
                    (_, _, attrs, _, uid, _, mode, _, _, _, _, attrs_mask) = head(buf, 0)
                    kind = stat.S_IFMT(mode)
                    if kind == stat.S_IFREG and not mode & special:
                        if attrs_mask & _FLAG_BITS == _FLAG_BITS:
                            flagged = attrs & _FLAG_BITS
                        else:
                            flagged = tuple(dev_of(buf, 136)) not in no_flags  # unknown: ioctl asks
                        capable = all_caps or mode & 0o111 or uid != 0
                        if not capable:
                            self.caps_not_read += 1
                        elif tuple(dev_of(buf, 136)) in no_xattr:
                            capable = False
                        if not flagged and not capable:
                            continue
                    elif kind != stat.S_IFREG and kind != stat.S_IFDIR:
                        continue  # links (never followed), devices, FIFOs, sockets: nothing to find, never opened
                    sub = _entry_from(buf)
                else:
                    try:  # statx refused (the error it gave, or a kernel without it: the old calls)
                        sub = stat_entry(fd, child, self.use_statx)
                    except OSError as exc:
                        self.errors.append(f"{base}/{child}: {exc.strerror}")
                        continue
                    if stat.S_ISLNK(sub.mode):
                        continue
                record = self.inspect(fd, child, f"{base}/{child}", sub, zone)
                if record is not None:
                    self.keep(record, sub)
                if stat.S_ISDIR(sub.mode):
                    children.append((max(sub.mtime, sub.ctime), child, sub))
        return children

    def _host(self, path: str) -> str:
        return (self.root.real.rstrip("/") + path).rstrip("/")

    def inspect(self, dir_fd: int, name: str, path: str, entry: Entry, zone: str) -> dict[str, Any] | None:
        mode = entry.mode
        regular, folder = stat.S_ISREG(mode), stat.S_ISDIR(mode)
        if not (regular or folder):
            return None  # devices, FIFOs, sockets: never opened, and their bits grant nothing that matters here
        kinds: list[str] = []
        if regular and mode & stat.S_ISUID:
            kinds.append("setuid")
        if regular and mode & stat.S_ISGID:
            kinds.append("setgid")
        if mode & stat.S_IWOTH and zone != "drop" and (regular or not mode & stat.S_ISVTX):
            kinds.append("world_writable")
        flags, via = entry.flags, entry.flags_via
        if flags is None and entry.dev not in self.no_flags:
            try:
                flags, via = ioctl_flags(dir_fd, name, entry), "ioctl"
            except OSError as exc:
                if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    self.no_flags.add(entry.dev)  # not one open per file on a filesystem without flags
            if flags is None:
                via = None
        if flags and flags & FS_IMMUTABLE_FL:
            kinds.append("immutable")
        if flags and flags & FS_APPEND_FL:
            kinds.append("append_only")
        capable = regular and (self.all_caps or bool(mode & 0o111) or entry.uid != 0)
        caps = self.capability(dir_fd, name, path, entry) if capable else None
        if caps is not None:
            kinds.append("capability")
        if not kinds:
            return None
        record: dict[str, Any] = {
            "path": path, "name": name, "type": "file" if regular else "directory", "zone": zone, "kinds": kinds,
            "mode": f"{stat.S_IMODE(mode):04o}", "setuid": "setuid" in kinds, "setgid": "setgid" in kinds,
            "sticky": bool(mode & stat.S_ISVTX), "world_writable": bool(mode & stat.S_IWOTH),
            "immutable": "immutable" in kinds, "append_only": "append_only" in kinds, "flags_via": via,
            "uid": entry.uid, "gid": entry.gid, "size": entry.size, "inode": entry.ino,
            "mtime_utc": utc(entry.mtime), "ctime_utc": utc(entry.ctime), "btime_utc": utc(entry.btime),
            "capabilities": sorted(set(caps.get("permitted", [])) | set(caps.get("inheritable", []))) if caps else [],
            "capability": caps, "sha256": None,
        }
        if regular:
            with self.ctx.blocking(path):
                record["sha256"] = sha256_at(self.ctx, dir_fd, name, entry.ino, self.hash_limit)
        return record

    def capability(self, dir_fd: int, name: str, path: str, entry: Entry) -> dict[str, Any] | None:
        """lgetxattr through the folder's descriptor (/proc/self/fd/N/name: the folder is the one we opened,
        the name one component, the last never followed)."""
        if entry.dev in self.no_xattr:
            return None
        try:
            with self.ctx.blocking(path):
                if self.proc_fd:
                    raw = os.getxattr(f"/proc/self/fd/{dir_fd}/{name}", XATTR_CAPS, follow_symlinks=False)
                else:
                    raw = self._xattr_by_fd(dir_fd, name, entry)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                self.no_xattr.add(entry.dev)  # this filesystem has no extended attributes at all
            elif exc.errno not in (errno.ENODATA, errno.ENOENT):
                self.errors.append(f"{path}: {XATTR_CAPS}: {exc.strerror}")
            return None
        if raw is None:
            return None
        return decode_capability(raw)

    @staticmethod
    def _xattr_by_fd(dir_fd: int, name: str, entry: Entry) -> bytes | None:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if os.fstat(fd).st_ino != entry.ino:
                return None
            return os.getxattr(fd, XATTR_CAPS)
        finally:
            os.close(fd)

    def keep(self, record: dict[str, Any], entry: Entry) -> None:
        self.records.append((max(entry.mtime, entry.ctime), record))
        if len(self.records) > 2 * self.max_records:
            self._trim()

    def _trim(self) -> None:
        """Keep the newest records (by the later of mtime and ctime) when there are too many."""
        if len(self.records) > self.max_records:
            self.records.sort(key=lambda r: r[0], reverse=True)
            self.dropped += len(self.records) - self.max_records
            del self.records[self.max_records:]

    def found(self) -> list[dict[str, Any]]:
        return [record for _, record in self.records]

    # -- starting points
    def start(self, path: str, zone: str, recurse: bool = True) -> None:
        """Visit an evidence path (its folders resolved inside the root, the last component not followed)."""
        if self.spent():
            return

        def final(parent_fd: int, name: str, resolved: str) -> None:
            if name == ".":
                return
            self.visit(parent_fd, name, resolved, zone, 0, recurse)

        try:
            with self.ctx.blocking(path):
                self.root.walk(path, follow_final=False, final=final)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            self.errors.append(f"{path}: {exc}")

    def top(self, path: str, zone: str) -> None:
        """A system folder: followed when it is a link (merged /usr's /bin), once."""
        try:
            where = resolve(self.ctx, path)
        except (OSError, ValueError):
            return
        self.start(where, zone)


def _owned(ctx: Context, records: list[dict[str, Any]]) -> tuple[Callable[[str], list[str] | None], list[Problem]]:
    """Package owners of the recorded paths, from the package database read without the package manager.
    The database names a file by its packaged path (/bin/su on merged /usr): filter by base name, then look
    up our resolved path among the normalised ones."""
    names = {r["path"].rpartition("/")[2] for r in records if r["type"] == "file"}
    if not names:
        return (lambda _: None), []
    db, problems = packages.load(ctx, lambda p: p.rpartition("/")[2] in names)

    def owners(path: str) -> list[str] | None:
        found = db.owners(path)
        return None if found is None else sorted({o.package for o in found})

    return owners, problems


def collect(ctx: Context) -> Iterator[Item]:
    started = time.monotonic()
    walk = Walk(ctx)
    problems: list[Problem] = []
    drop_cuts: list[str] = []
    try:
        # 1. persistence paths: tiny, and what an attacker locks with chattr
        for path in ctx.opt("persistence_paths", list(PERSISTENCE_PATHS)):
            walk.start(path, "persistence")
        for home in homes(ctx):
            if isinstance(home, Home):
                for sub in ctx.opt("home_paths", list(HOME_PATHS)):
                    walk.start(home.path.rstrip("/") + "/" + sub, "persistence")
            if len(walk.done) > walk.max_entries:
                break
        # 2. system folders, 3. drop zones
        for path in ctx.opt("system_paths", []):
            walk.top(path, "system")
        # /tmp of a build or test machine holds hundreds of thousands of names (a checkout, a pytest tree): the
        # drop zones get an entry budget of their own, newest folders first, so they cannot take the walk's time
        for path in ctx.opt("drop_paths", []):
            if walk.cut:
                break
            walk.drop_start = walk.entries
            walk.limit = min(walk.max_entries, walk.entries + int(ctx.opt("drop_max_entries", 50_000)))
            walk.top(path, "drop")
            if walk.cut and walk.cut.startswith("drop-zone"):
                drop_cuts.append(path)
                walk.cut = None  # the next drop zone has its own budget
    except Cancelled:
        walk.cut = walk.cut or "collector budget reached"
    walk._trim()
    if walk.cut:
        problems.append(Problem(f"permissions walk cut: {walk.cut} after {walk.entries} entries (newest folders "
                                "walked first)", level="warning", detail={"entries": walk.entries}))
    if drop_cuts:
        limit = int(ctx.opt("drop_max_entries", 50_000))
        problems.append(Problem(f"permissions walk: drop zones cut at {limit} entries each (newest folders walked "
                                f"first): {', '.join(drop_cuts)}", level="warning",
                                detail={"drop_max_entries": limit, "cut": drop_cuts}))
    found = walk.found()
    owners: Callable[[str], list[str] | None] = lambda _: None  # noqa: E731
    if ctx.opt("package_owner", True) and found:
        try:
            owners, db_problems = _owned(ctx, found)
            problems.extend(p for p in db_problems if p.level != "info")
        except Cancelled:
            problems.append(Problem("package database not read: budget reached", level="warning"))
    for record in found:
        names = owners(record["path"]) if record["type"] == "file" else None
        record["packages"] = names
        record["package_owned"] = None if names is None else bool(names)
        yield Record("permissions", record)
    if walk.dropped:
        problems.append(Problem(f"permissions: {walk.dropped} older findings dropped (max_records "
                                f"{walk.max_records}; the newest kept)", level="warning"))
    if walk.errors:
        problems.append(Problem(f"permissions walk: {len(walk.errors)} entries not read (first: "
                                f"{walk.errors[0][:200]})", level="warning"))
    yield from problems
    counts: dict[str, int] = {}
    for record in found:
        for kind in record["kinds"]:
            counts[kind] = counts.get(kind, 0) + 1
    yield Problem(f"permissions: {walk.entries} entries in {time.monotonic() - started:.1f} s; "
                  + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing found"), level="info",
                  detail={"entries": walk.entries, "counts": counts, "cut": walk.cut,
                          "own_runtime_not_walked": walk.own_skipped,
                          "capability_all_files": walk.all_caps,
                          "capability_not_read": walk.caps_not_read,
                          "capability_not_read_why": "root-owned regular files without an execute bit: none can "
                                                     "run with a file capability, and only root can make them "
                                                     "runnable (capability_all_files = true reads them too)"})
