"""The evidence reader: every host file a collector opens is opened here, confined to the evidence root.

The host is hostile. A path from the host (an sshd_config ``AuthorizedKeysFile ../../x``, a history
path whose parent is a link to ``/``, a link to ``/etc/shadow``) must never make us read outside the
evidence root, read a secret into a parsed record, or hang the run. So:

- Every path is resolved by us, component by component, from a directory descriptor of the root,
  with ``O_NOFOLLOW`` at each step: ``..`` and absolute link targets stay inside the root, as in a
  chroot (a loop is an ELOOP error after MAX_SYMLINK_HOPS, not a hang). The final open is done by the
  kernel with ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)`` where the
  kernel has it (5.6+), else relative to the resolved parent directory's descriptor with
  ``O_NOFOLLOW``; either way the file opened is checked to be the one resolved. Live, the root is ``/``.
- The name we give a file is its resolved in-root path, never the path we were handed.
- Opens are ``O_NONBLOCK`` (a FIFO never blocks us), ``O_NOATIME`` where permitted, and checked to be
  regular files with fstat; devices, sockets and FIFOs are never read.
- FUSE and network filesystems mounted below the root (a FUSE server owned by the attacker can make
  any read wait for ever) are not entered unless the run asks for it (``--read-remote-fs``).
- A read that may block marks the context (``Context.blocking``), so the engine can abandon a
  collector stuck in the kernel and go on.
- Secrets: a file the run withholds (by its resolved path or by its content) is never returned to a
  parser: :class:`Withheld` is raised instead, naming the link, its target, size and hash.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fnmatch
import hashlib
import os
import stat
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

from collectors.base import Context, FileCopy, Problem, SymlinkCopy

MAX_SYMLINK_HOPS = 40
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Filesystems whose reads a remote or user-space server answers, or never answers.
REMOTE_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "lustre", "gpfs", "ncpfs",
    "coda", "sshfs", "davfs", "beegfs", "orangefs", "pvfs2", "fuseblk", "fuse",
})
CONTENT_CHECK_BYTES = 4096  # what the content rules see of a file before a parser does


def is_remote_fs(fstype: str) -> bool:
    return fstype in REMOTE_FS_TYPES or (fstype.startswith("fuse.") and fstype != "fusectl")


def file_type_name(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "unknown file type"


class NotRegularFile(OSError):
    def __init__(self, path: str, mode: int):
        super().__init__(errno.EINVAL, f"not a regular file ({file_type_name(mode)})", path)
        self.kind = file_type_name(mode)


class RemoteFilesystem(OSError):
    """The path lies on a FUSE or network filesystem below the root: listed, not read."""

    def __init__(self, path: str, fstype: str):
        super().__init__(errno.EREMOTE, f"on a {fstype} filesystem: not read (--read-remote-fs reads it)", path)
        self.fstype = fstype


class Withheld(OSError):
    """A secret file (by resolved path or content): never handed to a parser, only described."""

    def __init__(self, path: str, resolved: str, rule: str, size: int, sha256: str | None, link: str | None):
        what = f"{path} -> {resolved}" if resolved != path else path
        super().__init__(errno.EACCES, f"withheld secret file ({rule}): {what}", path)
        self.detail = {"path": path, "resolved": resolved, "link_target": link, "rule": rule, "size": size,
                       "sha256": sha256}


# ---- openat2 ----------------------------------------------------------------------------------

_SYS_OPENAT2 = 437  # the same number on every architecture (the unified syscall table)
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_IN_ROOT = 0x02, 0x04, 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_state: dict[str, object] = {}


def _syscall():  # noqa: ANN202 - a ctypes function
    if "fn" not in _openat2_state:
        try:
            fn = ctypes.CDLL(None, use_errno=True).syscall
            fn.restype = ctypes.c_long
            _openat2_state["fn"] = fn
        except (OSError, AttributeError):
            _openat2_state["fn"] = None
    return _openat2_state["fn"]


def _raw_openat2(fn, dir_fd: int, path: str, flags: int, resolve: int) -> int:  # noqa: ANN001
    how = _OpenHow(flags, 0, resolve)
    fd = fn(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def openat2_available() -> bool:
    """Probed once: an O_PATH openat2 of "/" (kernels before 5.6 say ENOSYS; seccomp filters ENOSYS or
    EPERM). Without it every open is the descriptor walk's."""
    if "available" not in _openat2_state:
        fn = _syscall()
        ok = False
        if fn is not None:
            try:
                os.close(_raw_openat2(fn, -100, "/", os.O_PATH | os.O_CLOEXEC, RESOLVE_IN_ROOT))  # AT_FDCWD
                ok = True
            except OSError:
                ok = False
        _openat2_state["available"] = ok
    return bool(_openat2_state["available"]) and not _openat2_state.get("missing")


def openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2); OSError(ENOSYS) where the kernel (or a seccomp filter) does not have it."""
    if not openat2_available():
        raise OSError(errno.ENOSYS, "openat2 unavailable")
    fd = _raw_openat2(_syscall(), dir_fd, path, flags, resolve)
    _openat2_state["works"] = True
    return fd


# ---- the evidence root ------------------------------------------------------------------------

def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _unescape_mount(field: str) -> str:
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape") \
        if "\\" in field else field


def _bounded_lines(fh: TextIO, budget: int) -> Iterator[str]:
    """Lines of a text file until ``budget`` characters were read (the last one may be cut)."""
    for line in fh:
        budget -= len(line)
        if budget < 0:
            return
        yield line.rstrip("\n")


def remote_mounts(below: str, mountinfo: str = "/proc/self/mountinfo") -> dict[str, str]:
    """{mount point: fstype} of FUSE and network filesystems strictly below ``below`` (a real path)."""
    found: dict[str, str] = {}
    base = below.rstrip("/") + "/"
    try:
        # line by line, at most 16 MiB in all: a host with many mounts is never held whole
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
            lines = list(_bounded_lines(fh, 16 << 20))
    except OSError:
        return found
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields, fstype = pre.split(), (post.split() or [""])[0]
        if len(fields) > 4 and is_remote_fs(fstype):
            point = _unescape_mount(fields[4])
            if point.startswith(base):
                found[point.rstrip("/")] = fstype
    return found


class EvidenceRoot:
    """A directory descriptor on the evidence root and the rules for reading under it."""

    def __init__(self, root: str, read_remote: bool = False):
        self.root = root
        self.real = os.path.realpath(root)
        self.fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.read_remote = read_remote
        self.remote = {} if read_remote else remote_mounts(self.real)

    def _host(self, parts: list[str]) -> str:
        return self.real.rstrip("/") + "/" + "/".join(parts)

    def _check_remote(self, parts: list[str]) -> None:
        if self.remote:
            fstype = self.remote.get(self._host(parts).rstrip("/"))
            if fstype:
                raise RemoteFilesystem("/" + "/".join(parts), fstype)

    def walk(self, path: str, follow_final: bool = True, final=None):  # noqa: ANN001, ANN201
        """Resolve ``path`` inside the root. Returns (in-root path, lstat of the last component, what
        ``final(parent_fd, name, in-root path)`` returned, or None). Symlinks are followed inside the root, the last
        one only with ``follow_final``."""
        pending = collections.deque(_split(path))
        parts: list[str] = []
        fds = [self.fd]
        hops = 0
        st = os.stat(self.fd)
        try:
            while pending:
                name = pending.popleft()
                if name == "..":
                    if parts:
                        parts.pop()
                        os.close(fds.pop())
                    continue
                self._check_remote(parts + [name])
                st = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode) and (pending or follow_final):
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise OSError(errno.ELOOP, "Too many levels of symbolic links", path)
                    target = os.readlink(name, dir_fd=fds[-1])
                    if target.startswith("/"):
                        for fd in fds[1:]:
                            os.close(fd)
                        parts, fds = [], [self.fd]
                    pending.extendleft(reversed(_split(target)))
                    continue
                if pending:
                    if not stat.S_ISDIR(st.st_mode):
                        raise OSError(errno.ENOTDIR, "Not a directory", "/" + "/".join(parts + [name]))
                    fds.append(os.open(name, _DIR_FLAGS, dir_fd=fds[-1]))
                parts.append(name)
            resolved = "/" + "/".join(parts)
            if final is None:
                return resolved, st, None
            if not parts:
                return resolved, st, final(self.fd, ".", resolved)
            # every component but the last has a descriptor; the last has one when ".." came after it
            parent = fds[-2] if len(fds) == len(parts) + 1 else fds[-1]
            return resolved, st, final(parent, parts[-1], resolved)
        finally:
            for fd in fds[1:]:
                os.close(fd)

    def open(self, path: str, flags: int = _READ_FLAGS, follow_final: bool = True) -> tuple[int, os.stat_result, str]:
        """Open a regular file (or, with O_DIRECTORY in ``flags``, a directory) for reading;
        returns (fd, fstat, in-root path)."""
        want_dir = bool(flags & os.O_DIRECTORY)

        def final(parent_fd: int, name: str, resolved: str) -> tuple[int, os.stat_result]:
            st = os.stat(parent_fd) if name == "." else os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if want_dir and not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, "Not a directory", resolved)
            if not want_dir and not stat.S_ISREG(st.st_mode):
                raise NotRegularFile(resolved, st.st_mode)
            fd = -1
            if openat2_available():
                try:  # the kernel keeps the open inside the root even if the tree changes under us
                    fd = _open_noatime(lambda f: openat2(self.fd, resolved.lstrip("/") or ".", f, RESOLVE_IN_ROOT
                                                         | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS), flags)
                except OSError as exc:
                    # EAGAIN: a rename raced the lookup; ELOOP: a component became a link. The walk's
                    # own descriptors decide then, under the same rules.
                    if exc.errno not in (errno.EAGAIN, errno.EXDEV, errno.ELOOP):
                        raise
            if fd < 0:
                fd = _open_noatime(lambda f: os.open(name, f, dir_fd=parent_fd), flags)
            try:
                opened = os.fstat(fd)
                if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                    raise OSError(errno.EAGAIN, "file changed while it was opened", resolved)
            except BaseException:
                os.close(fd)
                raise
            return fd, opened

        resolved, _, (fd, st) = self.walk(path, follow_final, final)
        return fd, st, resolved


def _open_noatime(opener, flags: int) -> int:  # noqa: ANN001
    try:
        return opener(flags | os.O_NOATIME)
    except PermissionError:
        # O_NOATIME needs ownership or CAP_FOWNER; fall back rather than lose the file.
        return opener(flags)


_roots: dict[tuple[str, bool], EvidenceRoot] = {}
_roots_lock = threading.Lock()


def _fresh_roots_lock() -> None:
    """In a forked child (agent/engine/child.py), a lock another thread of the parent held is held for ever."""
    global _roots_lock
    _roots_lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_roots_lock)


def evidence(ctx: Context) -> EvidenceRoot:
    """The run's evidence root (one descriptor per root, kept for the process's life)."""
    key = (ctx.root, bool(ctx.read_remote_fs))
    with _roots_lock:
        root = _roots.get(key)
        if root is None:
            if len(_roots) >= 16:  # test runs make many roots: close the oldest
                old = _roots.pop(next(iter(_roots)))
                os.close(old.fd)
            root = _roots[key] = EvidenceRoot(ctx.root, ctx.read_remote_fs)
        return root


# ---- the collector's own files -----------------------------------------------------------------

def own_runtime_dirs() -> frozenset[str]:
    """Real paths of the folders this very program unpacked itself into: PyInstaller onefile's _MEI folder
    (our patched bootloader unpacks into /dev/shm first, a memory filesystem and a writable place) and staticx's
    bundle folder. Walks of drop zones and memory filesystems, and the process maps, must recognise these as
    ours and say so, rather than hash, copy and list the collector's own libraries as a dropper's (the binary's
    bundle was four times the source run's: 20 MB of its own mapped libraries). Live host only: the caller
    compares them with host paths."""
    found = set()
    for value in (getattr(sys, "_MEIPASS", None), os.environ.get("STATICX_BUNDLE_DIR")):
        if value:
            found.add(os.path.realpath(value).rstrip("/") or "/")
    return frozenset(found - {"/"})


def own_executables() -> frozenset[str]:
    """Real paths of this program's own executable when it is a built binary (and its staticx launcher):
    pushed into /tmp by SSM or Run Command, it is the collector, not a dropped program."""
    found = set()
    candidates = [os.environ.get("STATICX_PROG_PATH")]
    if getattr(sys, "frozen", False):
        candidates.append(sys.executable)
    for path in candidates:
        if path:
            found.add(os.path.realpath(path))
    return frozenset(found)


def own_files() -> set[tuple[int, int]]:
    """(device, inode) of :func:`own_executables`, for walks that compare what they stat."""
    found = set()
    for path in own_executables():
        try:
            st = os.stat(path)  # our own file, named by our own process: not host content
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def is_own_file(path: str, dirs: frozenset[str] | None = None) -> bool:
    """Whether a host path is this program's own executable or lies in its unpacked runtime folder."""
    dirs = own_runtime_dirs() if dirs is None else dirs
    return path in own_executables() or any(path == d or path.startswith(d + "/") for d in dirs)


# ---- what collectors call ---------------------------------------------------------------------

def resolve(ctx: Context, path: str) -> str:
    """The in-root path of an evidence path, every symlink resolved inside the root."""
    with ctx.blocking(path):
        return evidence(ctx).walk(path)[0]


def lstat(ctx: Context, path: str) -> tuple[str, os.stat_result]:
    """(in-root path, lstat) of an evidence path: parents resolved inside the root, the last component
    not followed."""
    with ctx.blocking(path):
        resolved, st, _ = evidence(ctx).walk(path, follow_final=False)
    return resolved, st


def stat_path(ctx: Context, path: str) -> tuple[str, os.stat_result]:
    with ctx.blocking(path):
        resolved, st, _ = evidence(ctx).walk(path)
    return resolved, st


def readlink(ctx: Context, path: str) -> str:
    """The target of a symlink, as written on the host (never followed outside the root)."""
    with ctx.blocking(path):
        return evidence(ctx).walk(path, follow_final=False, final=lambda fd, name, _: os.readlink(name, dir_fd=fd))[2]


def exists(ctx: Context, path: str) -> bool:
    try:
        lstat(ctx, path)
    except (OSError, ValueError):
        return False
    return True


def is_dir(ctx: Context, path: str) -> bool:
    try:
        return stat.S_ISDIR(stat_path(ctx, path)[1].st_mode)
    except (OSError, ValueError):
        return False


def listdir(ctx: Context, path: str) -> list[tuple[str, bool]]:
    """[(name, is a directory, not following links)] of a directory under the root, sorted."""
    with ctx.blocking(path):
        fd, _, _ = evidence(ctx).open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with os.scandir(fd) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        finally:
            os.close(fd)
    return sorted(entries)


def open_regular(ctx: Context, path: str) -> tuple[int, os.stat_result, str]:
    """Open a regular file under the root: (fd, fstat, in-root path). The caller closes fd."""
    with ctx.blocking(path):
        return evidence(ctx).open(path)


def _pread_all(ctx: Context, fd: int, offset: int, length: int, path: str) -> bytes:
    chunks = []
    remaining, pos = length, offset
    while remaining > 0:
        ctx.check()
        with ctx.blocking(path):
            chunk = os.pread(fd, min(remaining, 1 << 20), pos)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _withheld(ctx: Context, path: str, resolved: str, fd: int, st: os.stat_result, facts_only: bool) -> None:
    """Raise Withheld when the run's secret policy withholds this file, by path or by content."""
    policy = ctx.secret_policy
    if policy is None or ctx.include_secrets:
        return
    if facts_only and resolved == _normal(path):
        return  # a parser built for this secret file, reached by its own name (no link redirected it)
    head = _pread_all(ctx, fd, 0, min(st.st_size, CONTENT_CHECK_BYTES), resolved)
    rule = policy(resolved, head) or (policy(path, head) if path != resolved else None)
    if rule is None:
        return
    digest = hashlib.sha256()
    if st.st_size <= 64 << 20:
        pos = 0
        while chunk := _pread_all(ctx, fd, pos, 1 << 20, resolved):
            digest.update(chunk)
            pos += len(chunk)
    link = None
    if resolved != path:
        try:
            link = readlink(ctx, path)
        except OSError:
            link = None
    raise Withheld(path, resolved, rule, st.st_size, digest.hexdigest() if st.st_size <= 64 << 20 else None, link)


def _normal(path: str) -> str:
    return "/" + "/".join(_split(path))


def read_capped(ctx: Context, path: str, cap: int, keep: str = "head",
                facts_only: bool = False) -> tuple[bytes, os.stat_result, bool]:
    """Read at most ``cap`` bytes of an evidence file (the head or the tail). Returns (data, stat, truncated).
    Raises Withheld for a secret file, whatever name or link it was reached by, unless ``facts_only``
    (a parser that keeps only facts of the secret it was built for: shadow's hash schemes, a private
    key's fingerprint) reads it by its own name."""
    fd, st, resolved = open_regular(ctx, path)
    try:
        _withheld(ctx, path, resolved, fd, st, facts_only)
        offset, length = _window(st.st_size, cap, keep)
        return _pread_all(ctx, fd, offset, length, resolved), st, length < st.st_size
    finally:
        os.close(fd)


def _window(size: int, cap: int, keep: str) -> tuple[int, int]:
    if size <= cap:
        return 0, size
    return (size - cap, cap) if keep == "tail" else (0, cap)


class Folder:
    """One directory under the root, opened once (confined like any open), whose entries are read by name: a
    package database's 2 000 small files cost an open each, not a walk of every component of their path. An
    entry that is a symlink is read through read_capped, resolved inside the root as its full path would be;
    the rest (the remote-filesystem refusal, the secret policy, the caps) is read_capped's own. Use as a context
    manager, or close()."""

    def __init__(self, ctx: Context, path: str):
        self.ctx, self.path, self.root = ctx, path.rstrip("/") or "/", evidence(ctx)
        with ctx.blocking(path):
            self.fd, _, self.resolved = self.root.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                                       | os.O_CLOEXEC)
        self._parts = _split(self.resolved)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_capped(self, name: str, cap: int, keep: str = "head") -> tuple[bytes, os.stat_result, bool]:
        """read_capped() of the entry ``name`` of this folder: (data, stat, truncated)."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a name in a folder: {name!r}")
        ctx = self.ctx
        path = f"{self.path.rstrip('/')}/{name}"
        resolved = f"{self.resolved.rstrip('/')}/{name}"
        with ctx.blocking(path):
            self.root._check_remote(self._parts + [name])
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return read_capped(ctx, path, cap, keep)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFile(resolved, st.st_mode)
            fd = _open_noatime(lambda f: os.open(name, f, dir_fd=self.fd), _READ_FLAGS)
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise OSError(errno.EAGAIN, "file changed while it was opened", resolved)
            _withheld(ctx, path, resolved, fd, opened, False)
            offset, length = _window(opened.st_size, cap, keep)
            return _pread_all(ctx, fd, offset, length, resolved), opened, length < opened.st_size
        finally:
            os.close(fd)


def copy_file(ctx: Context, path: str, cap: int, keep: str = "head") -> Iterator[FileCopy | SymlinkCopy | Problem]:
    """Yield a raw copy of an evidence file under its in-root path; a symlink yields itself and, when
    its target (resolved inside the root) is a regular file, that file."""
    try:
        where, st = lstat(ctx, path)
        if stat.S_ISLNK(st.st_mode):
            yield SymlinkCopy(where, readlink(ctx, where), st)
            where, st = stat_path(ctx, where)
            if stat.S_ISDIR(st.st_mode):
                return  # a symlink to a directory: recorded, not followed
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(where, st.st_mode)  # never open a socket, FIFO or device
        fd, st, where = open_regular(ctx, where)
    except NotRegularFile as exc:
        yield Problem(f"skipped: {exc.kind}", path=path, level="warning")
        return
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot open", path)
        return
    if not _is_utf8(where):
        yield Problem("file name is not valid UTF-8 (kept as its raw bytes in the bundle)", path=where, level="info")
    offset, length = _window(st.st_size, cap, keep)
    cap_reason = None
    if length < st.st_size:
        cap_reason = f"capped at {cap} bytes of {st.st_size} ({keep} kept)"
        yield Problem(f"file {cap_reason}", path=where, level="warning",
                      detail={"size": st.st_size, "cap": cap, "keep": keep})
    yield FileCopy(where, fd, st, offset, length, cap_reason, ctx.artifact)


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def walk_glob(ctx: Context, pattern: str, max_depth: int = 12) -> Iterator[str | Problem]:
    """Expand a glob (``*``, ``?``, ``[...]``, ``**``) over the evidence root, never following
    directory symlinks that a wildcard matched (a directory the pattern names literally is followed,
    inside the root). Yields in-root paths of non-directories, and Problems. ``..`` in a pattern
    cannot climb above the root."""
    parts = _split(pattern)
    if parts and parts[-1] == "**":
        parts.append("*")  # "dir/**" means every file below dir
    if ".." in parts:  # a host-supplied pattern: resolve its literal part inside the root first
        literal = []
        while parts and not any(c in parts[0] for c in "*?[") and len(parts) > 1:
            literal.append(parts.pop(0))
        try:
            base = resolve(ctx, "/" + "/".join(literal))
        except (OSError, ValueError):
            return
        parts = [p for p in parts if p != ".."]
        yield from _walk(ctx, base, parts, 0, max_depth)
        return
    yield from _walk(ctx, "/", parts, 0, max_depth)


def _walk(ctx: Context, base: str, parts: list[str], depth: int, max_depth: int) -> Iterator[str | Problem]:
    if not parts:
        return
    ctx.check()
    head, rest = parts[0], parts[1:]
    if not any(c in head for c in "*?["):
        path = base.rstrip("/") + "/" + head
        try:
            where, st = lstat(ctx, path)
        except RemoteFilesystem as exc:
            yield Problem.from_os_error(exc, "not read", path)
            return
        except (OSError, ValueError):
            return
        if rest and stat.S_ISLNK(st.st_mode):
            # A directory the pattern names literally may be a link (RHEL's /etc/init.d -> rc.d/init.d,
            # merged /usr's /lib -> usr/lib): follow it, resolved inside the root as in a chroot. Only
            # literal components are followed, once each, so a pattern cannot loop; wildcard matches
            # and "**" still never enter a linked directory.
            try:
                where, st = stat_path(ctx, where)
            except RemoteFilesystem as exc:
                yield Problem.from_os_error(exc, "not read", path)
                return
            except (OSError, ValueError):
                return  # dangling, a loop (ELOOP), or not under the root any more
        if not rest:
            yield where
        elif stat.S_ISDIR(st.st_mode):
            yield from _walk(ctx, where, rest, depth + 1, max_depth)
        return
    if depth > max_depth:
        yield Problem("directory depth limit reached", path=base, level="warning")
        return
    try:
        entries = listdir(ctx, base)
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot list directory", base)
        return
    if head == "**":
        # zero directories ...
        yield from _walk(ctx, base, rest, depth, max_depth)
        # ... or one more, keeping "**" in front
        for name, is_directory in entries:
            if is_directory:
                yield from _walk(ctx, base.rstrip("/") + "/" + name, parts, depth + 1, max_depth)
        return
    for name, is_directory in entries:
        if not fnmatch.fnmatchcase(name, head):
            continue
        path = base.rstrip("/") + "/" + name
        if rest:
            if is_directory:
                yield from _walk(ctx, path, rest, depth + 1, max_depth)
        elif not is_directory:
            yield path


def walk_tree(ctx: Context, top: str, prune: frozenset[str] = frozenset()) -> Iterator[tuple[str, list[str], int]]:
    """Walk a directory tree under the root without following links: (in-root folder, file names, dir
    fd valid during the step). Directories named in ``prune`` and remote mounts are not entered."""
    try:
        start = resolve(ctx, top)
        with ctx.blocking(start):
            fd, _, start = evidence(ctx).open(start, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    root = evidence(ctx)
    try:
        for folder, dirs, files, dir_fd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
            ctx.check()
            shown = start if folder == "." else start.rstrip("/") + "/" + folder[2:]
            keep = []
            for d in dirs:
                child = shown.rstrip("/") + "/" + d
                if d in prune or child in prune:
                    continue
                if root.remote and root._host(_split(child)).rstrip("/") in root.remote:
                    continue
                keep.append(d)
            dirs[:] = keep
            yield shown, files, dir_fd
    finally:
        os.close(fd)
