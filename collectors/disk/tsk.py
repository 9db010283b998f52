"""The raw filesystem through The Sleuth Kit (pytsk3): a mactime bodyfile and a directory cross-view.

The device is the block device holding the evidence root (from /proc/self/mountinfo), or the
image or device given as option ``disk`` (CLI ``--disk``). Chosen directories are listed from the
filesystem's own structures, so deleted names still in a directory block are seen too:

* stream ``bodyfile``: one record per name with the bodyfile fields and ``line``, the exact line
  ``fls -m`` writes (``0|name|inode|mode|uid|gid|size|atime|mtime|ctime|crtime``, ``" (deleted)"``
  after deleted names), so ``jq -r .line bodyfile.jsonl | mactime -b -`` gives a timeline;
* stream ``crossview``: allocated names the raw filesystem has that the OS listing of the same
  directory lacks (getdents hooked by a rootkit, a mount laid over them);
* stream ``disk``: what was opened, or why nothing could be (then one error Problem, no raise).

On a live host the device is read while mounted: the newest changes may still be only in the page
cache, so a name created or removed seconds ago can differ between the two views.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from collectors.base import Context, Item, Problem, Record
from collectors.disk import statx
from collectors.disk.bodyfile import META_TYPE_CHARS as META_TYPE_CHARS
from collectors.disk.bodyfile import NAME_TYPE_CHARS as NAME_TYPE_CHARS
from collectors.disk.bodyfile import Mount, Unavailable, _char, _is_utf8, _printable, make_ls, read_mounts

try:
    import pytsk3
except ImportError:  # the collector then reports "unavailable" instead of breaking the plan
    pytsk3 = None

# TSK's enum values (tsk_fs.h); tests check them against pytsk3's own constants.
NAME_FLAG_UNALLOC = 0x02
META_FLAG_ALLOC = 0x01
META_FLAG_UNALLOC = 0x02
META_TYPE_DIR = 2
META_TYPE_LNK = 6
NAME_TYPES_VIRTUAL = (10, 11)  # TSK's own entries such as $OrphanFiles: no name on disk to compare
DEFAULT_PATHS = ["/etc", "/root", "/tmp", "/var/tmp", "/dev/shm", "/var/spool/cron",
                 "/etc/systemd/system", "/usr/bin", "/usr/sbin", "/home"]


@dataclass
class Target:
    device: str
    prefix: str  # where the evidence root "/" lies inside the filesystem
    view_root: str | None  # OS view of the same tree, for the cross-view; None = no cross-view
    view_dev: int | None  # st_dev the OS view has where nothing else is mounted over it
    mounted: bool
    why_no_view: str = ""


def collect(ctx: Context) -> Iterator[Item]:
    # An image given with --disk is the evidence itself: the OS view of this machine is not a stand-in for
    # it. Otherwise the evidence root's own tree is, and its memory filesystems are walked first (the
    # most volatile, and never on a device).
    from_root = not ctx.opt("disk")
    memory_walked = from_root and bool(ctx.opt("memory_fs", True))
    if memory_walked:
        yield from _statx(ctx, memory_only=True)
    try:
        target = locate(ctx)
        img, fs = open_fs(target.device, int(ctx.opt("offset", 0)))
    except Unavailable as exc:
        device = exc.device or ctx.opt("disk")
        fallback = from_root and ctx.opt("os_fallback", True)
        if not fallback:
            yield Problem(f"raw filesystem not available: {exc}", path=device, level="error")
            yield Record("disk", {"status": "unavailable", "device": device, "reason": str(exc)})
            return
        yield Problem(f"raw filesystem not available: {exc}; the bodyfile is taken through the OS (statx) "
                      "instead, without deleted names", path=device, level="warning")
        yield Record("disk", {"status": "unavailable", "device": device, "reason": str(exc), "fallback": "statx"})
        yield from _statx(ctx, memory_only=False, skip_memory=memory_walked)
        return
    try:
        yield from _collect_open(ctx, target, fs)
    finally:
        img.close()


def _statx(ctx: Context, memory_only: bool, skip_memory: bool = False) -> Iterator[Item]:
    if memory_only:
        paths = list(ctx.opt("memory_paths", statx.MEMORY_PATHS))
        budget, most = float(ctx.opt("memory_budget_s", 30)), int(ctx.opt("memory_max_entries", 20000))
    else:
        paths = list(ctx.opt("paths", DEFAULT_PATHS))
        budget, most = float(ctx.opt("statx_budget_s", 120)), int(ctx.opt("max_entries", 50000))
    yield from statx.collect_bodyfile(ctx, statx.Options(
        paths=paths, memory_only=memory_only, skip_memory=skip_memory, max_entries=most,
        max_depth=int(ctx.opt("max_depth", 6)), budget_s=budget,
        exec_max_bytes=int(ctx.opt("exec_max_bytes", 8 << 20)), exec_max_count=int(ctx.opt("exec_max_count", 20))))


def _collect_open(ctx: Context, target: Target, fs: Any) -> Iterator[Item]:
    yield Record("disk", {
        "status": "opened", "source": "tsk", "device": target.device, "offset": int(ctx.opt("offset", 0)),
        "fs_type": fs_type_name(int(fs.info.ftype)), "block_size": int(fs.info.block_size),
        "block_count": int(fs.info.block_count), "evidence_root_in_fs": target.prefix,
        "mounted": target.mounted, "cross_view_against": target.view_root,
    })
    if target.view_root is None:
        yield Problem(f"cross-view skipped: {target.why_no_view}", path=target.device, level="info")
    walker = _Walker(ctx, fs, target, int(ctx.opt("max_depth", 6)), int(ctx.opt("max_entries", 50000)))
    for path in ctx.opt("paths", DEFAULT_PATHS):
        if walker.full:
            break
        yield from walker.walk_top(path)
    yield Record("disk", {"status": "done", "source": "tsk", "device": target.device, "entries": walker.count,
                          "deleted": walker.deleted, "hidden_from_os": walker.hidden,
                          "entry_limit_reached": walker.full})


# --- finding the device ------------------------------------------------------------------------

def locate(ctx: Context) -> Target:
    """What to open, and which OS tree (if any) shows the same filesystem."""
    if pytsk3 is None:
        raise Unavailable("pytsk3 is not installed")
    disk = ctx.opt("disk")
    mount_point = ctx.opt("mount_point")
    if disk and mount_point:
        try:
            view_dev = os.lstat(mount_point).st_dev
        except OSError as exc:
            raise Unavailable(f"mount_point {mount_point}: {exc.strerror}") from exc
        return Target(disk, "/", mount_point, view_dev, mounted=True)
    mounts = read_mounts()
    real_root = os.path.realpath(ctx.root)
    mount = mount_of(real_root, mounts)
    prefix = root_in_fs(real_root, mount) if mount is not None else "/"
    if disk:
        # An explicit device that is the one holding the evidence root still gets a cross-view.
        if mount is not None and _is_block_device_of(disk, mount):
            return Target(disk, prefix, ctx.root, os.makedev(mount.major, mount.minor), True)
        return Target(disk, "/", None, None, mounted=False,
                      why_no_view="an image was given without a mount_point showing it through the OS")
    if mount is None:
        raise Unavailable(f"no mount holds {real_root} in /proc/self/mountinfo")
    if mount.major == 0:
        raise Unavailable(f"{mount.point} is {mount.fstype} ({mount.source}), not on a block device")
    device = device_node(mount)
    if device is None:
        raise Unavailable(f"no device node for {mount.major}:{mount.minor} ({mount.source}, {mount.fstype})")
    return Target(device, prefix, ctx.root, os.makedev(mount.major, mount.minor), True)


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount a path lies on: the longest mount point above it, the last one mounted on ties."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/") + "/"
        if (path.rstrip("/") + "/").startswith(point):
            if best is None or len(mount.point) >= len(best.point):
                best = mount
    return best


def root_in_fs(path: str, mount: Mount) -> str:
    """Where a path on a mount lies inside the mounted filesystem (bind mounts start below its root)."""
    inner = os.path.relpath(path, mount.point)
    return os.path.normpath(os.path.join(mount.root, "" if inner == "." else inner))


def device_node(mount: Mount) -> str | None:
    """A block device node whose st_rdev is the mount's major:minor."""
    rdev = os.makedev(mount.major, mount.minor)
    candidates = [f"/dev/block/{mount.major}:{mount.minor}"]
    try:
        with open(f"/sys/dev/block/{mount.major}:{mount.minor}/uevent", encoding="utf-8") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    candidates.append("/dev/" + line.strip().split("=", 1)[1])
    except OSError:
        pass
    candidates.append(mount.source)
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except (OSError, ValueError):
            continue
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == rdev:
            return candidate
    return None


def _is_block_device_of(path: str, mount: Mount) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(mount.major, mount.minor)


def open_fs(device: str, offset: int = 0) -> tuple[Any, Any]:
    try:
        img = pytsk3.Img_Info(device)
    except Exception as exc:  # pytsk3 raises OSError, but any failure here means "not readable"
        raise Unavailable(f"cannot open {device}: {_tsk_reason(exc)}", device) from exc
    try:
        fs = pytsk3.FS_Info(img, offset=offset)
    except Exception as exc:
        hint = _partitions_hint(img) if offset == 0 else ""
        img.close()
        raise Unavailable(f"no filesystem TSK can read in {device} at offset {offset}: {_tsk_reason(exc)}{hint}",
                          device) from exc
    return img, fs


def _tsk_reason(exc: BaseException) -> str:
    # pytsk3 messages carry a "Img_Info_Con: (tsk3.cpp:154)" prefix that only helps its developers
    return re.sub(r"^\w+: \([\w.]+:\d+\) ", "", str(exc)).strip()


def _partitions_hint(img: Any) -> str:
    """A whole-disk image: name the partitions so the examiner can give the `offset` option."""
    try:
        volume = pytsk3.Volume_Info(img)
        block = int(volume.info.block_size)
        parts = [f"{int(p.start) * block} ({p.desc.decode('utf-8', 'replace')})" for p in volume
                 if int(p.flags) & 0x01 and int(p.len) > 0]
    except Exception:  # no volume system either: the plain message is enough
        return ""
    return f"; partitions start at byte offsets {', '.join(parts)} (option `offset`)" if parts else ""


def fs_type_name(ftype: int) -> str:
    if pytsk3 is not None:
        for name in dir(pytsk3):
            if name.startswith("TSK_FS_TYPE_") and not name.endswith(("_DETECT", "_ENUM")):
                if int(getattr(pytsk3, name)) == ftype:
                    return name[len("TSK_FS_TYPE_"):].lower()
    return str(ftype)


# --- walking -----------------------------------------------------------------------------------

class _Walker:
    def __init__(self, ctx: Context, fs: Any, target: Target, max_depth: int, max_entries: int):
        self.ctx, self.fs, self.target = ctx, fs, target
        self.max_depth, self.max_entries = max_depth, max_entries
        self.count = self.deleted = self.hidden = 0
        self.full = False
        self.listed: set[int] = set()  # directory inodes already listed (overlapping chosen paths, loops)
        self.emitted_dirs: set[str] = set()

    def walk_top(self, path: str) -> Iterator[Item]:
        evidence = os.path.normpath("/" + path.strip("/")) if path.strip("/") else "/"
        raw = os.path.normpath(os.path.join(self.target.prefix, evidence.lstrip("/")))
        try:
            top = self.fs.open(raw)
        except OSError:
            yield Problem("not found on the raw filesystem", path=evidence, level="info")
            return
        meta = top.info.meta
        if meta is None or int(meta.type) != META_TYPE_DIR:
            yield Problem("not a directory on the raw filesystem (a symlink is not followed)", path=evidence,
                          level="warning")
            return
        if int(meta.addr) in self.listed:
            return  # already listed under an earlier chosen path
        yield from self._mount_note(evidence)
        if evidence != "/" and evidence not in self.emitted_dirs:
            yield self._record(top, os.path.dirname(evidence))
        yield from self._list(int(meta.addr), evidence, 0, allocated=True)

    def _mount_note(self, evidence: str) -> Iterator[Item]:
        # A separate filesystem mounted at a chosen path (e.g. /home): the raw walk shows what lies
        # beneath that mount on this filesystem, not the mounted filesystem's contents.
        if self.target.view_root is None or self.target.view_dev is None:
            return
        try:
            st = os.lstat(os.path.join(self.target.view_root, evidence.lstrip("/")))
        except OSError:
            return
        if st.st_dev != self.target.view_dev:
            yield Problem("another filesystem is mounted here: the raw walk lists what the mount covers",
                          path=evidence, level="info")

    def _list(self, addr: int, dirpath: str, depth: int, allocated: bool) -> Iterator[Item]:
        self.listed.add(addr)
        try:
            directory = self.fs.open_dir(inode=addr)
        except OSError as exc:
            level = "warning" if allocated else "info"  # a deleted directory's blocks are often gone
            yield Problem(f"cannot list directory on the raw filesystem: {_tsk_reason(exc)}", path=dirpath,
                          level=level)
            return
        raw_names: dict[bytes, int] = {}
        subdirs: list[tuple[int, str, bool]] = []
        try:
            for entry in directory:
                self.ctx.check()
                name = entry.info.name.name
                if name in (b".", b".."):
                    continue
                if self.count >= self.max_entries:
                    self.full = True
                    yield Problem(f"entry limit of {self.max_entries} reached; later entries not listed",
                                  path=dirpath, level="warning")
                    return
                record = self._record(entry, dirpath)
                yield record
                data = record.data
                if not data["deleted"] and int(entry.info.name.type) not in NAME_TYPES_VIRTUAL:
                    raw_names[name] = data["inode"]
                meta = entry.info.meta
                if meta is not None and int(meta.type) == META_TYPE_DIR and not data["realloc"]:
                    if int(meta.addr) not in self.listed:
                        subdirs.append((int(meta.addr), data["name"], not data["deleted"]))
                    if not data["deleted"]:
                        self.emitted_dirs.add(data["name"])
        except OSError as exc:
            yield Problem(f"directory listing cut short on the raw filesystem: {_tsk_reason(exc)}",
                          path=dirpath, level="warning")
        if allocated:
            yield from self._crossview(dirpath, addr, raw_names, top=depth == 0)
        for sub_addr, sub_path, sub_allocated in subdirs:
            if sub_addr in self.listed or self.full:
                continue
            if depth >= self.max_depth:
                yield Problem("directory depth limit reached", path=sub_path, level="warning")
                continue
            yield from self._list(sub_addr, sub_path, depth + 1, allocated and sub_allocated)

    def _record(self, entry: Any, dirpath: str) -> Record:
        self.count += 1
        data = bodyfile_entry(entry, dirpath)
        self.deleted += data["deleted"]
        return Record("bodyfile", data)

    def _crossview(self, dirpath: str, addr: int, raw_names: dict[bytes, int], top: bool) -> Iterator[Item]:
        if self.target.view_root is None:
            return
        # Bytes throughout: names are compared exactly as stored, whatever their encoding.
        view = os.fsencode(os.path.join(self.target.view_root, dirpath.lstrip("/")))
        try:
            st = os.lstat(view)
        except FileNotFoundError:
            if top:  # below the top, the parent's cross-view already named this directory
                yield self._hidden(dirpath, addr, view, covered=False)
            return
        except OSError as exc:
            yield Problem.from_os_error(exc, "cross-view: cannot look at directory through the OS", dirpath)
            return
        if not stat.S_ISDIR(st.st_mode):
            yield Problem(f"cross-view: the OS shows a {_kind(st.st_mode)} where the raw filesystem has "
                          "a directory", path=dirpath, level="warning")
            return
        try:
            shown = _listdir_noatime(view)
        except OSError as exc:
            yield Problem.from_os_error(exc, "cross-view: cannot list directory through the OS", dirpath)
            return
        covered = self.target.view_dev is not None and st.st_dev != self.target.view_dev
        for name, inode in sorted(raw_names.items()):
            if name not in shown:
                yield self._hidden(dirpath.rstrip("/") + "/" + os.fsdecode(name), inode,
                                   os.path.join(view, name), covered)

    def _hidden(self, path: str, inode: int, view_path: bytes, covered: bool) -> Record:
        self.hidden += 1
        return Record("crossview", {
            "path": path, "name": os.path.basename(path), "inode": inode, "seen_raw": True, "seen_os": False,
            # a name missing from getdents but still reachable by lstat is a typical hooked readdir
            "stat_visible": os.path.lexists(view_path),
            "kind": "hidden_by_mount" if covered else "hidden_from_os",
        })


def _listdir_noatime(path: bytes) -> set[bytes]:
    """The names in a directory, opened with O_NOATIME where permitted: listing must not move the access
    time of the directory whose times the bodyfile reports."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_NOATIME)
    except PermissionError:  # O_NOATIME needs ownership or CAP_FOWNER
        fd = os.open(path, flags)
    try:
        return {os.fsencode(name) for name in os.listdir(fd)}
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    return "symlink" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else "non-directory"


# --- the bodyfile ------------------------------------------------------------------------------

def bodyfile_entry(entry: Any, dirpath: str) -> dict[str, Any]:
    """The bodyfile fields of one directory entry and the line `fls -m` prints for it."""
    name, meta = entry.info.name, entry.info.meta
    raw_path = os.fsencode(dirpath.rstrip("/")) + b"/" + name.name
    name_unalloc = bool(int(name.flags) & NAME_FLAG_UNALLOC)
    meta_flags = int(meta.flags) if meta is not None else 0
    realloc = name_unalloc and bool(meta_flags & META_FLAG_ALLOC)
    deleted = name_unalloc or bool(meta_flags & META_FLAG_UNALLOC)
    name_type = _char(NAME_TYPE_CHARS, int(name.type))
    link = None
    if meta is not None:
        mode = name_type + "/" + make_ls(int(meta.type), int(meta.mode))
        uid, gid, size = int(meta.uid), int(meta.gid), int(meta.size)
        times = [int(meta.atime), int(meta.mtime), int(meta.ctime), int(meta.crtime)]
        if int(meta.type) == META_TYPE_LNK and meta.link:
            link = bytes(meta.link)
    else:
        mode, uid, gid, size, times = name_type + "/----------", 0, 0, 0, [0, 0, 0, 0]
    shown = _printable(raw_path) + (b" -> " + _printable(link) if link else b"")
    if name_unalloc:
        shown += b" (deleted-realloc)" if realloc else b" (deleted)"
    inode = int(name.meta_addr)
    line = "|".join(["0", os.fsdecode(shown), str(inode), mode, str(uid), str(gid), str(size)]
                    + [str(t) for t in times])
    data: dict[str, Any] = {
        "md5": "0", "name": os.fsdecode(raw_path), "inode": inode, "mode_as_string": mode,
        "uid": uid, "gid": gid, "size": size, "atime": times[0], "mtime": times[1], "ctime": times[2],
        "crtime": times[3], "deleted": deleted, "realloc": realloc, "line": line, "source": "tsk",
    }
    if link is not None:
        data["link"] = os.fsdecode(link)
    if not _is_utf8(raw_path):
        data["name_hex"] = raw_path.hex()  # the exact bytes; "name" carries them as surrogate escapes
    return data
