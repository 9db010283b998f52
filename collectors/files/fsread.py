"""Safe reading of files on a suspect host or a mounted image.

Every open is O_NOFOLLOW|O_NONBLOCK (a FIFO never blocks us), O_NOATIME where permitted (we do not
change the evidence's access times), and checked to be a regular file with fstat. Symlinks are
resolved by us, inside the evidence root, with a hop limit (a loop is an ELOOP record, not a hang).
Globs are walked without following directory symlinks, with depth and count limits.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterator

from collectors.base import Context, FileCopy, Problem, SymlinkCopy

MAX_SYMLINK_HOPS = 40
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def file_type_name(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "unknown file type"


def resolve(ctx: Context, path: str) -> str:
    """Resolve every symlink of an evidence path inside the evidence root; return the evidence path.

    Raises OSError(ELOOP) after MAX_SYMLINK_HOPS, OSError(ENOENT) for missing parts.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/" + "/".join(resolved + [part])
        st = os.lstat(ctx.host_path(candidate))
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise OSError(errno.ELOOP, "Too many levels of symbolic links", path)
            target = os.readlink(ctx.host_path(candidate))
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
        else:
            resolved.append(part)
    return "/" + "/".join(resolved)


class NotRegularFile(OSError):
    def __init__(self, path: str, mode: int):
        super().__init__(errno.EINVAL, f"not a regular file ({file_type_name(mode)})", path)
        self.kind = file_type_name(mode)


def open_regular(host_path: str) -> tuple[int, os.stat_result]:
    """Open without following a final symlink, without blocking, without touching atime."""
    try:
        fd = os.open(host_path, _OPEN_FLAGS | os.O_NOATIME)
    except PermissionError:
        # O_NOATIME needs ownership or CAP_FOWNER; fall back rather than lose the file.
        fd = os.open(host_path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(host_path, st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_capped(ctx: Context, path: str, cap: int, keep: str = "head") -> tuple[bytes, os.stat_result, bool]:
    """Read at most ``cap`` bytes of an evidence file (the head or the tail). Returns (data, stat, truncated)."""
    fd, st = open_regular(ctx.host_path(resolve(ctx, path)))
    try:
        offset, length = _window(st.st_size, cap, keep)
        chunks = []
        remaining = length
        pos = offset
        while remaining > 0:
            ctx.check()
            chunk = os.pread(fd, min(remaining, 1 << 20), pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
            remaining -= len(chunk)
        return b"".join(chunks), st, length < st.st_size
    finally:
        os.close(fd)


def _window(size: int, cap: int, keep: str) -> tuple[int, int]:
    if size <= cap:
        return 0, size
    return (size - cap, cap) if keep == "tail" else (0, cap)


def copy_file(ctx: Context, path: str, cap: int, keep: str = "head") -> Iterator[FileCopy | SymlinkCopy | Problem]:
    """Yield a raw copy of an evidence file; a symlink yields itself and, when regular, its target."""
    host = ctx.host_path(path)
    try:
        st = os.lstat(host)
        if stat.S_ISLNK(st.st_mode):
            yield SymlinkCopy(path, os.readlink(host), st)
            path = resolve(ctx, path)
            host = ctx.host_path(path)
            if stat.S_ISDIR(os.stat(host).st_mode):
                return  # a symlink to a directory: recorded, not followed
        elif not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(host, st.st_mode)  # never open a socket, FIFO or device
        fd, st = open_regular(host)
    except NotRegularFile as exc:
        yield Problem(f"skipped: {exc.kind}", path=path, level="warning")
        return
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot open", path)
        return
    if not _is_utf8(path):
        yield Problem("file name is not valid UTF-8 (kept as its raw bytes in the bundle)", path=path, level="info")
    offset, length = _window(st.st_size, cap, keep)
    cap_reason = None
    if length < st.st_size:
        cap_reason = f"capped at {cap} bytes of {st.st_size} ({keep} kept)"
        yield Problem(f"file {cap_reason}", path=path, level="warning",
                      detail={"size": st.st_size, "cap": cap, "keep": keep})
    yield FileCopy(path, fd, st, offset, length, cap_reason, ctx.artifact)


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def walk_glob(ctx: Context, pattern: str, max_depth: int = 12) -> Iterator[str | Problem]:
    """Expand a glob (``*``, ``?``, ``[...]``, ``**``) over the evidence root, never following
    directory symlinks. Yields evidence paths of non-directories, and Problems."""
    parts = [p for p in pattern.split("/") if p]
    if parts and parts[-1] == "**":
        parts.append("*")  # "dir/**" means every file below dir
    yield from _walk(ctx, "/", parts, 0, max_depth)


def _walk(ctx: Context, base: str, parts: list[str], depth: int, max_depth: int) -> Iterator[str | Problem]:
    if not parts:
        return
    ctx.check()
    head, rest = parts[0], parts[1:]
    if not any(c in head for c in "*?["):
        path = base.rstrip("/") + "/" + head
        if not rest:
            if os.path.lexists(ctx.host_path(path)):
                yield path
            return
        if os.path.isdir(ctx.host_path(path)) and not os.path.islink(ctx.host_path(path)):
            yield from _walk(ctx, path, rest, depth + 1, max_depth)
        return
    if depth > max_depth:
        yield Problem("directory depth limit reached", path=base, level="warning")
        return
    try:
        with os.scandir(ctx.host_path(base)) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot list directory", base)
        return
    if head == "**":
        # zero directories ...
        yield from _walk(ctx, base, rest, depth, max_depth)
        # ... or one more, keeping "**" in front
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(ctx, base.rstrip("/") + "/" + entry.name, parts, depth + 1, max_depth)
        return
    for entry in entries:
        if not fnmatch.fnmatchcase(entry.name, head):
            continue
        path = base.rstrip("/") + "/" + entry.name
        if rest:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(ctx, path, rest, depth + 1, max_depth)
        elif not entry.is_dir(follow_symlinks=False):
            yield path
