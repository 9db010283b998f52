"""A bodyfile from the OS, for what The Sleuth Kit cannot read: statx(2) through the evidence reader's rules.

TSK reads ext2-4, FAT, NTFS, HFS+, APFS, UFS and ISO 9660 from the raw device, and nothing else: not XFS
(the default root of Amazon Linux and RHEL), Btrfs, overlayfs, ZFS, nor a raw device the host refuses
to open. Memory filesystems (tmpfs under /dev/shm, /run, often /tmp) it never sees at all, and they are
where droppers put what they run. This walk gives the same bodyfile fields from ``statx(2)``, whose
``stx_btime`` is the birth time where the filesystem keeps one (ext4, XFS, Btrfs, tmpfs since 5.x): the
``STATX_BTIME`` bit of ``stx_mask`` says whether it is valid, and ``crtime`` is 0 when it is not, as fls
writes it.

The walk follows the evidence reader's rules (collectors/files/fsread.py): every directory is opened
from a descriptor resolved inside the evidence root, with ``O_NOFOLLOW`` (a link is recorded, never
followed), FUSE and network filesystems are not entered (``--read-remote-fs`` says otherwise), nor are
pseudo filesystems (proc, sysfs, cgroup, autofs, whose entry would mount something). It is bounded by
time and entries: every entry is looked at until the budget runs out, and the newest ``max_entries`` by
max(mtime, ctime, btime) are kept (a heap) and written newest first, so a cut loses the oldest names.

Small executables found on a memory filesystem (an execute bit, an ELF or ``#!`` head) are copied
too, newest first and bounded by size and count: a file in tmpfs is gone at the next reboot.
"""

from __future__ import annotations

import ctypes
import errno
import heapq
import os
import platform
import stat
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from collectors.base import Context, Item, Problem, Record
from collectors.disk.bodyfile import NAME_TYPE_CHARS, Mount, Unavailable, _is_utf8, make_ls, read_mounts
from collectors.files import fsread

MEMORY_FS = frozenset({"tmpfs", "ramfs"})
# Filesystems made by the kernel on the fly: nothing of a timeline in them, and reads that can hang
# (autofs mounts a share when a name under it is looked at).
PSEUDO_FS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "configfs", "pstore", "efivarfs",
    "fusectl", "binfmt_misc", "autofs", "nsfs", "bpf", "devpts", "selinuxfs", "rpc_pipefs", "nfsd",
})
MEMORY_PATHS = ["/dev/shm", "/run", "/tmp"]

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
AT_STATX_DONT_SYNC = 0x4000  # a network filesystem answers from its cache, never a round trip
STATX_BASIC_STATS = 0x7FF
STATX_BTIME = 0x800
STATX_SYSCALL = {"x86_64": 332, "aarch64": 291}
_FLAGS = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_STATX_DONT_SYNC
_MASK = STATX_BASIC_STATS | STATX_BTIME

# (bodyfile name-type index, meta-type index) in tsk's NAME_TYPE_CHARS / META_TYPE_CHARS, by S_IFMT
_TYPE_INDEX = {
    stat.S_IFREG: (5, 1), stat.S_IFDIR: (3, 2), stat.S_IFIFO: (1, 3), stat.S_IFCHR: (2, 4),
    stat.S_IFBLK: (4, 5), stat.S_IFLNK: (6, 6), stat.S_IFSOCK: (7, 8),
}


class _Timestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32), ("reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    """struct statx (include/uapi/linux/stat.h), 256 bytes."""

    _fields_ = [
        ("stx_mask", ctypes.c_uint32), ("stx_blksize", ctypes.c_uint32), ("stx_attributes", ctypes.c_uint64),
        ("stx_nlink", ctypes.c_uint32), ("stx_uid", ctypes.c_uint32), ("stx_gid", ctypes.c_uint32),
        ("stx_mode", ctypes.c_uint16), ("spare0", ctypes.c_uint16),
        ("stx_ino", ctypes.c_uint64), ("stx_size", ctypes.c_uint64), ("stx_blocks", ctypes.c_uint64),
        ("stx_attributes_mask", ctypes.c_uint64),
        ("stx_atime", _Timestamp), ("stx_btime", _Timestamp), ("stx_ctime", _Timestamp), ("stx_mtime", _Timestamp),
        ("stx_rdev_major", ctypes.c_uint32), ("stx_rdev_minor", ctypes.c_uint32),
        ("stx_dev_major", ctypes.c_uint32), ("stx_dev_minor", ctypes.c_uint32),
        ("stx_mnt_id", ctypes.c_uint64), ("spare", ctypes.c_uint64 * 13),
    ]


class StatxResult(NamedTuple):
    """One name's stat fields (a tuple: made once per name of the walk, 40 000 times, so it must be cheap)."""

    mode: int
    ino: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    btime_ns: int | None  # None: the filesystem (or the kernel) keeps no birth time
    dev: tuple[int, int]

    @property
    def newest_ns(self) -> int:
        return max(self.mtime_ns, self.ctime_ns, self.btime_ns or 0)


# struct statx up to stx_dev_minor, read in place from the buffer: the head, four timestamps, rdev, dev
_STATX_LAYOUT = struct.Struct("=IIQIIIHHQQQQ" + "qIi" * 4 + "IIII")
_local = threading.local()  # one result buffer per thread: artifacts may walk side by side


class _Caller:
    """statx through glibc (2.28+), else the raw system call, else lstat (no birth time)."""

    def __init__(self) -> None:
        self.how = "lstat"
        self.fn: Any = None
        self.nr: int | None = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return
        fn = getattr(libc, "statx", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_Statx)]
            fn.restype = ctypes.c_int
            self.fn, self.how = fn, "libc"
        elif platform.machine() in STATX_SYSCALL:
            libc.syscall.restype = ctypes.c_long
            self.fn, self.nr, self.how = libc.syscall, STATX_SYSCALL[platform.machine()], "syscall"
        if self.fn is not None:
            try:  # a kernel before 4.11 (or a seccomp filter) refuses it: lstat then
                self.call(AT_FDCWD, b"/")
            except OSError as exc:
                if exc.errno in (errno.ENOSYS, errno.EPERM):
                    self.fn, self.how = None, "lstat"

    def call(self, dir_fd: int, name: bytes) -> StatxResult:
        if self.fn is None:
            return _from_lstat(os.stat(name, dir_fd=None if dir_fd == AT_FDCWD else dir_fd, follow_symlinks=False))
        buf = getattr(_local, "buf", None)
        if buf is None:
            buf = _local.buf = _Statx()
        if self.nr is None:
            rc = self.fn(dir_fd, name, _FLAGS, _MASK, buf)
        else:
            rc = self.fn(ctypes.c_long(self.nr), ctypes.c_int(dir_fd), ctypes.c_char_p(name),
                         ctypes.c_int(_FLAGS), ctypes.c_uint(_MASK), ctypes.byref(buf))
        if rc != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), os.fsdecode(name))
        (mask, _, _, _, uid, gid, mode, _, ino, size, _, _, asec, ans, _, bsec, bns, _, csec, cns, _, msec, mns, _,
         _, _, major, minor) = _STATX_LAYOUT.unpack_from(buf)
        return StatxResult(mode, ino, uid, gid, size, asec * 1_000_000_000 + ans, msec * 1_000_000_000 + mns,
                           csec * 1_000_000_000 + cns, bsec * 1_000_000_000 + bns if mask & STATX_BTIME else None,
                           (major, minor))


def _from_lstat(st: os.stat_result) -> StatxResult:
    return StatxResult(st.st_mode, st.st_ino, st.st_uid, st.st_gid, st.st_size, st.st_atime_ns, st.st_mtime_ns,
                       st.st_ctime_ns, None, (os.major(st.st_dev), os.minor(st.st_dev)))


_callers: list[_Caller] = []


def _caller() -> _Caller:
    if not _callers:
        _callers.append(_Caller())
    return _callers[0]


def statx(dir_fd: int, name: str | bytes) -> StatxResult:
    """statx(dir_fd, name, AT_SYMLINK_NOFOLLOW): the last component is never followed."""
    return _caller().call(dir_fd, os.fsencode(name))


def statx_how() -> str:
    """"libc", "syscall" or "lstat" (no birth time): how this process calls statx."""
    return _caller().how


# --- the walk ------------------------------------------------------------------------------------

@dataclass
class Options:
    paths: list[str]
    memory_only: bool  # keep only entries on tmpfs/ramfs (TSK read the rest)
    skip_memory: bool = False  # leave tmpfs/ramfs out (a memory-only walk of this run has them)
    max_entries: int = 50000
    max_depth: int = 6
    budget_s: float = 60.0
    exec_max_bytes: int = 8 << 20
    exec_max_count: int = 20
    max_dir_entries: int = 200000
    exec_probe_max: int = 5000  # files on a memory filesystem whose head is read to see if they are programs


# One kept entry's stat fields, packed: the walk holds max_entries (50 000) of these until it is done, and
# as Python objects (a dataclass of ten ints and a tuple) each cost ~600 bytes; packed, about 250.
_PACKED = struct.Struct("<IQIIQqqqqBII")  # mode ino uid gid size atime mtime ctime btime has_btime dev


class _Kept:
    """A kept entry, ordered by (newest time, walk order) for the heap."""

    __slots__ = ("key", "seq", "blob", "fstype", "link", "executable")

    def __init__(self, key: int, seq: int, raw_path: bytes, st: StatxResult, fstype: str,
                 link: bytes | None = None) -> None:
        self.key, self.seq, self.fstype, self.link, self.executable = key, seq, fstype, link, False
        self.blob = _PACKED.pack(st.mode, st.ino, st.uid, st.gid, st.size, st.atime_ns, st.mtime_ns, st.ctime_ns,
                                 st.btime_ns or 0, st.btime_ns is not None, *st.dev) + raw_path

    def __lt__(self, other: _Kept) -> bool:
        return (self.key, self.seq) < (other.key, other.seq)

    def order(self) -> tuple[int, int]:
        return self.key, self.seq

    @property
    def raw_path(self) -> bytes:
        return self.blob[_PACKED.size:]

    @property
    def st(self) -> StatxResult:
        mode, ino, uid, gid, size, atime, mtime, ctime, btime, has_btime, major, minor = \
            _PACKED.unpack_from(self.blob)
        return StatxResult(mode, ino, uid, gid, size, atime, mtime, ctime, btime if has_btime else None,
                           (major, minor))


class _Walk:
    def __init__(self, ctx: Context, opts: Options, mounts: list[Mount]):
        self.ctx, self.opts = ctx, opts
        self.fstypes = {(m.major, m.minor): m.fstype for m in mounts}
        self.root = fsread.evidence(ctx)
        real = self.root.real.rstrip("/")
        # memory mounts below the root, as in-root paths: a directory on disk above one is still entered
        self.memory_points = sorted({m.point[len(real):] or "/" for m in mounts if m.fstype in MEMORY_FS
                                     and (m.point + "/").startswith(real + "/")})
        # FUSE and network mounts below the root (none with --read-remote-fs), by in-root path: such a
        # name is not even looked at (statx of a FUSE mount point asks its server)
        self.remote = {os.fsencode(point[len(real):]): fstype for point, fstype in self.root.remote.items()}
        self.heap: list[_Kept] = []
        self.execs: list[_Kept] = []
        self.seq = self.scanned = self.probes = 0
        self.with_btime = self.depth_cut = 0
        self.depth_examples: list[str] = []
        self.listed: set[tuple[tuple[int, int], int]] = set()
        self.filesystems: dict[str, int] = {}
        # the collector's own unpacked runtime (a PyInstaller binary unpacks into /dev/shm): its folder is listed,
        # not entered, and named in the summary, so its libraries are neither copied as small programs found on
        # a memory filesystem nor crowd the timeline (live root only: they are host paths)
        self.own_dirs = fsread.own_runtime_dirs() if ctx.live and self.root.real == "/" else frozenset()
        self.own_skipped: list[str] = []
        self.stop_reason = ""
        start = time.monotonic()
        self.deadline = min(start + opts.budget_s, ctx.deadline - 2.0)

    def over(self) -> bool:
        if self.stop_reason:
            return True
        self.ctx.check()  # a cancelled run stops at once
        if time.monotonic() > self.deadline:
            self.stop_reason = "time"
        return bool(self.stop_reason)

    def fstype(self, dev: tuple[int, int]) -> str:
        return self.fstypes.get(dev, "")

    def top(self, path: str) -> Iterator[Item]:
        try:
            resolved = fsread.resolve(self.ctx, path)
            with self.ctx.blocking(resolved):
                fd, _, resolved = self.root.open(resolved, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                                 | os.O_CLOEXEC)
        except fsread.RemoteFilesystem as exc:
            yield Problem.from_os_error(exc, "not walked", path)
            return
        except FileNotFoundError:
            yield Problem("not found", path=path, level="info")
            return
        except (OSError, ValueError) as exc:
            yield Problem(f"cannot open directory: {exc}", path=path, level="warning")
            return
        try:
            st = statx(fd, b".")
            if not self._enter(st, resolved):
                return
            if resolved != "/":
                self.scanned += 1
                self._entry(-1, os.fsencode(resolved), st)  # the chosen directory itself, as fls lists it
            yield from self._list(fd, resolved, st, 0)
        finally:
            os.close(fd)

    def _enter(self, st: StatxResult, path: str) -> bool:
        """Whether a directory is walked: not a pseudo or remote filesystem, not listed already, and (when
        only memory filesystems are wanted) on one or above one."""
        fstype = self.fstype(st.dev)
        if fstype in PSEUDO_FS or (st.dev, st.ino) in self.listed:
            return False
        if self.opts.skip_memory and fstype in MEMORY_FS:
            return False
        if self.opts.memory_only and fstype not in MEMORY_FS:
            below = path.rstrip("/") + "/"
            return any(p.startswith(below) for p in self.memory_points)
        return True

    def _list(self, fd: int, path: str, st: StatxResult, depth: int) -> Iterator[Item]:
        self.listed.add((st.dev, st.ino))
        names: list[bytes] = []
        try:
            with self.ctx.blocking(path), os.scandir(fd) as entries:
                for entry in entries:
                    if len(names) >= self.opts.max_dir_entries:
                        # a directory stuffed with millions of names must not fill our memory
                        yield Problem(f"directory has more than {self.opts.max_dir_entries} names: the rest are "
                                      "not looked at", path=path, level="warning")
                        break
                    names.append(os.fsencode(entry.name))
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot list directory", path)
            if not names:
                return
        base = os.fsencode(path.rstrip("/")) + b"/"
        subdirs: list[tuple[bytes, StatxResult]] = []
        ctx, call = self.ctx, _caller().call
        for name in sorted(names):
            if self.over():
                return
            if (base + name) in self.remote:
                yield Problem(f"not walked: a {self.remote[base + name]} filesystem (--read-remote-fs reads it)",
                              path=os.fsdecode(base + name), level="warning")
                continue
            # the engine sees a statx that never returns, and moves on (the mark set by hand: Context.blocking's
            # context manager cost more than the statx itself, 40 000 times)
            mark = ctx.reading is None
            if mark:
                ctx.reading = (path, time.monotonic())
            try:
                child = call(fd, name)
            except OSError as exc:
                if exc.errno != errno.ENOENT:  # removed while we listed: nothing to say
                    yield Problem.from_os_error(exc, "statx", os.fsdecode(base + name))
                continue
            finally:
                if mark:
                    ctx.reading = None
            self.scanned += 1
            self._entry(fd, base + name, child)
            if stat.S_ISDIR(child.mode):
                subdirs.append((name, child))
        for name, child in subdirs:
            if self.over():
                return
            sub = os.fsdecode(base + name)
            if not self._enter(child, sub):
                continue
            if sub in self.own_dirs:
                self.own_skipped.append(sub)
                yield Problem("this collector's own unpacked runtime: listed, not walked", path=sub, level="info")
                continue
            if depth >= self.opts.max_depth:
                self.depth_cut += 1  # one summary Problem at the end: deep trees (node_modules) have thousands
                if len(self.depth_examples) < 5:
                    self.depth_examples.append(sub)
                continue
            try:
                with self.ctx.blocking(sub):
                    # O_NOATIME: listing a directory would otherwise move its access time
                    sub_fd = fsread._open_noatime(lambda f: os.open(name, f, dir_fd=fd),  # noqa: B023 - called now
                                                  os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    yield Problem.from_os_error(exc, "cannot open directory", sub)
                continue
            try:
                opened = os.fstat(sub_fd)
                if (opened.st_ino, (os.major(opened.st_dev), os.minor(opened.st_dev))) != (child.ino, child.dev):
                    continue  # swapped for another directory (or a mount) between statx and open
                yield from self._list(sub_fd, sub, child, depth + 1)
            finally:
                os.close(sub_fd)

    def _entry(self, dir_fd: int, raw_path: bytes, st: StatxResult) -> None:
        fstype = self.fstype(st.dev)
        if (self.opts.memory_only and fstype not in MEMORY_FS) or (self.opts.skip_memory and fstype in MEMORY_FS):
            return
        self.filesystems[fstype or "?"] = self.filesystems.get(fstype or "?", 0) + 1
        self.seq += 1
        link = None
        if stat.S_ISLNK(st.mode) and dir_fd >= 0:
            try:
                link = os.readlink(os.path.basename(raw_path), dir_fd=dir_fd)
            except OSError:
                link = None
        kept = _Kept(st.newest_ns, self.seq, raw_path, st, fstype, link)
        if fstype in MEMORY_FS and stat.S_ISREG(st.mode) and 0 < st.size <= self.opts.exec_max_bytes \
                and dir_fd >= 0 and self._is_program(dir_fd, raw_path, st):
            kept.executable = True
            _push(self.execs, kept, self.opts.exec_max_count)
        if st.btime_ns is not None:
            self.with_btime += 1
        _push(self.heap, kept, self.opts.max_entries)

    def _is_program(self, dir_fd: int, raw_path: bytes, st: StatxResult) -> bool:
        if st.mode & 0o111:
            return True
        if self.probes >= self.opts.exec_probe_max:
            return False
        self.probes += 1
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:  # O_NOATIME: looking must not change the access time the timeline reports
            fd = fsread._open_noatime(lambda f: os.open(os.path.basename(raw_path), f, dir_fd=dir_fd), flags)
        except OSError:
            return False
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or opened.st_ino != st.ino:
                return False
            head = os.pread(fd, 4, 0)
        except OSError:
            return False
        finally:
            os.close(fd)
        return head == b"\x7fELF" or head.startswith(b"#!")


def _push(heap: list[_Kept], kept: _Kept, most: int) -> None:
    if most <= 0:
        return
    if len(heap) < most:
        heap.append(kept)  # unordered until full (the reader sorts): no Python-level comparison per name
        if len(heap) == most:
            heapq.heapify(heap)
    elif kept > heap[0]:
        heapq.heapreplace(heap, kept)


def collect_bodyfile(ctx: Context, opts: Options) -> Iterator[Item]:
    """Bodyfile records (source "statx") of ``opts.paths``, newest first, then copies of small programs
    found on memory filesystems, then one ``disk`` summary record."""
    try:
        mounts = read_mounts()
    except Unavailable as exc:
        yield Problem(f"statx walk: {exc}; filesystem types unknown", level="warning")
        mounts = []
    walk = _Walk(ctx, opts, mounts)
    seen_tops: set[str] = set()
    for path in opts.paths:
        if walk.over():
            break
        if path in seen_tops:
            continue
        seen_tops.add(path)
        yield from walk.top(path)
    if walk.depth_cut:
        yield Problem(f"directory depth limit ({opts.max_depth}) reached: {walk.depth_cut} directories not entered",
                      level="warning", detail={"examples": walk.depth_examples})
    if walk.stop_reason == "time":
        yield Problem(f"statx walk stopped at its time budget ({opts.budget_s:g} s) after {walk.scanned} entries; "
                      "the newest of those are kept", level="warning")
    kept = walk.heap
    walk.heap = []
    kept.sort(key=_Kept.order)  # oldest first: popped from the end, newest first, each entry freed once it is a record
    entries = len(kept)
    if walk.seq > entries:
        yield Problem(f"entry limit of {opts.max_entries} reached: the newest {entries} of {walk.seq} entries "
                      "are kept (by max(mtime, ctime, btime))", level="warning")
    copies = {k.raw_path for k in walk.execs}
    while kept:
        item = kept.pop()
        yield Record("bodyfile", statx_entry(item.raw_path, item.st, item.link, item.fstype,
                                             executable=item.executable, copied=item.raw_path in copies))
    copied = 0
    for item in sorted(walk.execs, key=_Kept.order, reverse=True):
        path = os.fsdecode(item.raw_path)
        for out in fsread.copy_file(ctx, path, opts.exec_max_bytes):
            copied += not isinstance(out, Problem)
            yield out
    yield Record("disk", {
        "status": "done", "source": "statx", "statx": statx_how(),
        "scope": "memory filesystems" if opts.memory_only else "evidence root", "paths": opts.paths,
        "scanned": walk.scanned, "entries": entries, "with_btime": walk.with_btime,
        "newest_first": True, "entry_limit_reached": walk.seq > entries, "depth_limited_dirs": walk.depth_cut,
        "time_limit_reached": walk.stop_reason == "time", "filesystems": walk.filesystems,
        "executables_copied": copied, "own_runtime_not_walked": walk.own_skipped,
    })


_MODE_STRINGS: dict[int, str] = {}  # st_mode -> its bodyfile letters (at most 65 536 keys)


def statx_entry(raw_path: bytes, st: StatxResult, link: bytes | None, fstype: str, executable: bool = False,
                copied: bool = False) -> dict[str, Any]:
    """The bodyfile fields of one name seen through the OS. Leaner than a TSK record, whose fields it shares:
    no ``line`` (the fls -m line: ``bodyfile.fls_line(record)`` and the responder's timeline make it from
    these fields), no ``md5`` ("0"), ``deleted`` or ``realloc`` (false: the OS shows no deleted names). A
    50 000-entry timeline is a third smaller in the bundle and in the collector's memory."""
    mode = _MODE_STRINGS.get(st.mode)
    if mode is None:  # a few dozen distinct modes on a host: made once each
        name_index, meta_index = _TYPE_INDEX.get(stat.S_IFMT(st.mode), (0, 0))
        mode = _MODE_STRINGS[st.mode] = NAME_TYPE_CHARS[name_index] + "/" + make_ls(meta_index, stat.S_IMODE(st.mode))
    data: dict[str, Any] = {
        "name": os.fsdecode(raw_path), "inode": st.ino, "mode_as_string": mode,
        "uid": st.uid, "gid": st.gid, "size": st.size, "atime": st.atime_ns // 1_000_000_000,
        "mtime": st.mtime_ns // 1_000_000_000, "ctime": st.ctime_ns // 1_000_000_000,
        "crtime": st.btime_ns // 1_000_000_000 if st.btime_ns is not None else 0,
        "btime_valid": st.btime_ns is not None, "source": "statx", "fs_type": fstype,
    }
    if link is not None:
        data["link"] = os.fsdecode(link)
    if executable:
        data["executable"] = True
        data["copied"] = copied
    if not _is_utf8(raw_path):
        data["name_hex"] = raw_path.hex()
    return data
