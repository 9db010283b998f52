"""Executables where attackers drop them, and the system binaries they replace (issue 20).

Stream ``executables``, one record per file, ``place`` telling which walk found it:

- ``writable``: every regular file in /tmp, /var/tmp, /dev/shm, /run/shm (hidden ones included; walk
  bounded by entries and depth): times (birth where statx has it), type from its magic (ELF and what
  kind, script and its shebang, other), SHA-256 of ELFs and scripts under a size cap, and a raw copy of
  the small ones so YARA on the responder's side reads them.
- ``system``: the system binary folders, PAM module folders and every libkeyutils.so*, judged against
  the package database (collectors/files/packages.py, read without the package manager). Hashed: files
  changed since their package was installed, PAM modules, libkeyutils, the binaries named in
  ``always_hash``, and (``hash_path_binaries``, why ``path``) every file in the PATH folders, from a budget of
  its own (``path_hash_limit_bytes`` per file, ``path_hash_total_bytes`` in all; a file over either is listed
  with ``hash_skipped`` naming the cap, and the closing info Problem carries both caps). Other files (in
  security folders: untouched ones) are listed when unowned or changed recently, else only counted.

Stream ``package_db``: one record naming the database that was read (``dpkg | rpm-sqlite | rpm-bdb |
none``), so that no rule calls a file unowned when no database could say so.

Fields of every row: place, area (writable: the place as configured; system: bin | local_bin | security
| local_security | libkeyutils), path, name, size, mode, exec_bit, uid, gid, inode, mtime_utc, ctime_utc,
birth_utc (statx, when read and the filesystem keeps it), file_type (elf | script | other | symlink),
elf_kind (executable | shared-object | relocatable | core | malformed), elf_class, elf_machine, shebang,
interpreter, sha256, hash_skipped, withheld (a secret: type and digest only), recent.
Writable rows add hidden (own name, or the folder made in the place), hidden_path (any component), depth,
tree (the top folder in the place), tree_files (files under it), copied, copy_skipped, copy_of (the path whose
copy holds the same bytes: each content is copied once; core dumps are never copied).
System rows add package_db, owned (true | false | null when no complete database), package,
package_version, packages (when several), digest_algo, digest, package_digest, verify (ok | mismatch |
config | no_digest | not_hashed | null), config, package_installed_utc, changed_since_install, why (the
reasons it is listed: always_hash, pam_module, libkeyutils, changed_since_install, unowned, recent, path),
link_target (symlinks in security folders and libkeyutils).
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fnmatch
import hashlib
import json
import os
import platform
import posixpath
import re
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from collectors.base import Context, Item, Problem, Record
from collectors.files import packages
from collectors.files.fsread import (
    RemoteFilesystem,
    copy_file,
    evidence,
    is_dir,
    listdir,
    lstat,
    open_regular,
    own_files,
    own_runtime_dirs,
    readlink,
    resolve,
    walk_glob,
)
from collectors.util import text, utc

WRITABLE = ["/tmp", "/var/tmp", "/dev/shm", "/run/shm"]
BIN_FOLDERS = ["/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"]
SECURITY_GLOBS = ["/lib*/security", "/usr/lib*/security", "/lib*/*-linux-gnu*/security",
                  "/usr/lib*/*-linux-gnu*/security", "/usr/local/lib*/security"]
LIBRARY_GLOBS = ["/lib*", "/usr/lib*", "/lib*/*-linux-gnu*", "/usr/lib*/*-linux-gnu*", "/usr/local/lib*"]
ALWAYS_HASH = ["sshd", "sshd-session", "sshd-auth", "unix_chkpwd", "sudo", "su", "login", "passwd", "ps", "ls",
               "netstat", "ss", "top", "lsof", "find"]
# OpenSSH 9.8+ splits sshd: the code that handles a login runs from sshd-session (and 10.0's sshd-auth),
# outside the bin folders; a backdoor there is as good as a replaced sshd.
EXTRA_GLOBS = ["/usr/lib/openssh/sshd-*", "/usr/libexec/openssh/sshd-*", "/usr/lib/ssh/sshd-*",
               "/usr/libexec/sshd-*"]
HEAD_BYTES = 4096


# ---- file facts ---------------------------------------------------------------------------------

def magic(head: bytes) -> dict[str, Any]:
    """File type from the first bytes: ELF (with its kind), a script with its shebang, or other."""
    if head[:4] == b"\x7fELF":
        return {"file_type": "elf", **elf_facts(head)}
    if head[:2] == b"#!":
        line = text(head[2:].split(b"\n", 1)[0][:256]).strip()
        program = line.split()[0] if line.split() else ""
        interpreter = os.path.basename(program)
        if interpreter == "env" and len(line.split()) > 1:
            interpreter = next((w for w in line.split()[1:] if not w.startswith("-")), "env")
        return {"file_type": "script", "shebang": line, "interpreter": interpreter}
    return {"file_type": "other"}


ELF_TYPES = {1: "relocatable", 2: "executable", 3: "shared-object", 4: "core"}
PT_INTERP, PT_DYNAMIC = 3, 2
DF_1_PIE = 0x08000000
DT_FLAGS_1 = 0x6FFFFFFB


def elf_facts(head: bytes, dynamic: bytes | None = None) -> dict[str, Any]:
    """Class, machine and kind of an ELF from its header and program headers (when they are in ``head``).
    ``elf_kind``: executable (ET_EXEC, or ET_DYN with an interpreter: a PIE), shared-object (ET_DYN
    without one), relocatable, core. A static PIE has no interpreter either; ``dynamic`` (the PT_DYNAMIC
    segment's bytes) tells it apart by DF_1_PIE."""
    if len(head) < 52 or head[4] not in (1, 2) or head[5] not in (1, 2):
        return {"elf_kind": "malformed"}
    order = "<" if head[5] == 1 else ">"
    wide = head[4] == 2
    e_type, machine = struct.unpack_from(order + "HH", head, 16)
    facts: dict[str, Any] = {"elf_class": 64 if wide else 32, "elf_machine": machine,
                             "elf_kind": ELF_TYPES.get(e_type, f"type-{e_type}")}
    try:
        if wide:
            phoff, = struct.unpack_from(order + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
        else:
            phoff, = struct.unpack_from(order + "I", head, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
    except struct.error:
        return facts
    interp, dyn = False, None
    for i in range(min(phnum, 256)):
        at = phoff + i * phentsize
        if phentsize < (56 if wide else 32) or at + phentsize > len(head):
            break  # program headers outside the head: keep what the ELF header says
        p_type, = struct.unpack_from(order + "I", head, at)
        if p_type == PT_INTERP:
            interp = True
        elif p_type == PT_DYNAMIC:
            dyn = struct.unpack_from(order + ("QQ" if wide else "II"), head, at + (8 if wide else 4))
    if e_type == 3:
        if interp:
            facts["elf_kind"] = "executable"  # a PIE: ET_DYN with an interpreter
        elif dynamic is not None and _pie_flag(dynamic, order, wide):
            facts["elf_kind"] = "executable"  # a static PIE
        elif dyn is None and phnum:
            facts["elf_kind"] = "executable"  # no dynamic segment at all: nothing could load it as a library
    facts["elf_dynamic"] = dyn  # (offset, virtual address) of PT_DYNAMIC, for the caller to read
    return facts


def _pie_flag(dynamic: bytes, order: str, wide: bool) -> bool:
    size = 16 if wide else 8
    fmt = order + ("qQ" if wide else "iI")
    for at in range(0, min(len(dynamic), 64 << 10) - size + 1, size):
        tag, value = struct.unpack_from(fmt, dynamic, at)
        if tag == 0:
            break
        if tag == DT_FLAGS_1:
            return bool(value & DF_1_PIE)
    return False


# statx(2) for the birth time (os.stat has none on Linux): by descriptor, AT_EMPTY_PATH.
_STATX_NR = {"x86_64": 332, "aarch64": 291, "riscv64": 291, "i686": 383, "i386": 383, "armv7l": 397,
             "ppc64le": 383, "ppc64": 383, "s390x": 379, "loongarch64": 291}
AT_EMPTY_PATH, STATX_BTIME = 0x1000, 0x800
_statx_state: dict[str, Any] = {}


def birth_time(fd: int) -> float | None:
    """The file's birth time from statx on its descriptor, or None (no statx, or the filesystem keeps none)."""
    number = _STATX_NR.get(platform.machine())
    if number is None or _statx_state.get("broken"):
        return None
    if "fn" not in _statx_state:
        try:
            fn = ctypes.CDLL(None, use_errno=True).syscall
            fn.restype = ctypes.c_long
            _statx_state["fn"] = fn
        except (OSError, AttributeError):
            _statx_state["broken"] = True
            return None
    buf = ctypes.create_string_buffer(256)
    rc = _statx_state["fn"](ctypes.c_long(number), ctypes.c_int(fd), ctypes.c_char_p(b""),
                            ctypes.c_int(AT_EMPTY_PATH), ctypes.c_uint(STATX_BTIME), buf)
    if rc != 0:
        if ctypes.get_errno() in (38, 1):  # ENOSYS, EPERM (seccomp): do not ask again
            _statx_state["broken"] = True
        return None
    mask, = struct.unpack_from("=I", buf.raw, 0)
    if not mask & STATX_BTIME:
        return None
    sec, nsec = struct.unpack_from("=qI", buf.raw, 80)
    return sec + nsec / 1e9 if sec > 0 else None


@dataclass
class Budget:
    """What the artifact may still spend: entries walked, bytes hashed, bytes copied."""

    entries: int
    copy_bytes: int
    hashed_bytes: int
    notes: list[str] = field(default_factory=list)


def _read_facts(ctx: Context, path: str, want_digest: str | None, hash_limit: int,
                budget: Budget) -> tuple[dict[str, Any], os.stat_result, str]:
    """Open a regular file through fsread and read what we need in one pass: head (magic), birth time,
    SHA-256 and, when asked, the package database's digest (same bytes, second hash)."""
    fd, st, where = open_regular(ctx, path)
    try:
        return _facts_of(ctx, fd, st, where, want_digest, hash_limit, budget), st, where
    finally:
        os.close(fd)


def _facts_of(ctx: Context, fd: int, st: os.stat_result, where: str, want_digest: str | None, hash_limit: int,
              budget: Budget) -> dict[str, Any]:
    """What _read_facts reads, from a file already opened (and checked regular) by the caller."""
    with ctx.blocking(where):
        head = os.pread(fd, HEAD_BYTES, 0)
    facts = magic(head)
    policy = ctx.secret_policy
    rule = policy(where, head) if policy is not None and not ctx.include_secrets else None
    if rule:  # a secret (by path or content): its type and digest only, never a line of it
        facts = {"file_type": facts["file_type"], "withheld": rule}
    birth = birth_time(fd)
    facts["birth_utc"] = utc(birth) if birth else None
    if facts.get("elf_dynamic") and facts.get("elf_kind") == "shared-object":
        offset = facts["elf_dynamic"][0]
        if 0 < offset < st.st_size:
            with ctx.blocking(where):
                dynamic = os.pread(fd, 4096, offset)
            facts.update(elf_facts(head, dynamic))
    facts.pop("elf_dynamic", None)
    hash_it = want_digest is not None or facts["file_type"] in ("elf", "script")
    if hash_it and st.st_size > hash_limit:
        facts["hash_skipped"] = f"over {hash_limit} bytes"
    elif hash_it and budget.hashed_bytes < st.st_size:
        facts["hash_skipped"] = "artifact hashing budget spent"
    elif hash_it:
        sha = hashlib.sha256()
        other = hashlib.new(want_digest) if want_digest and want_digest != "sha256" else None
        pos = 0
        while pos < st.st_size:
            ctx.check()
            with ctx.blocking(where):
                chunk = os.pread(fd, 1 << 20, pos)
            if not chunk:
                break
            sha.update(chunk)
            if other:
                other.update(chunk)
            pos += len(chunk)
        budget.hashed_bytes -= pos
        facts["sha256"] = sha.hexdigest()
        if want_digest:
            facts["digest"] = other.hexdigest() if other else facts["sha256"]
    return facts


def _times(st: os.stat_result) -> dict[str, Any]:
    return {"size": st.st_size, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "exec_bit": bool(st.st_mode & 0o111),
            "uid": st.st_uid, "gid": st.st_gid, "inode": st.st_ino,
            "mtime_utc": utc(st.st_mtime), "ctime_utc": utc(st.st_ctime)}


def _recent(st: os.stat_result, birth_utc: str | None, now: float, days: float) -> bool:
    newest = max(st.st_mtime, st.st_ctime)
    return 0 <= now - newest <= days * 86400 or (birth_utc is not None and 0 <= now - _epoch(birth_utc) <= days * 86400)


def _epoch(iso: str) -> float:
    import datetime as _dt

    return _dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# ---- writable places --------------------------------------------------------------------------

def _own_runtime_dirs() -> set[str]:
    """Where this very program unpacked itself (fsread.own_runtime_dirs): its own libraries must not be
    reported as dropped executables."""
    return set(own_runtime_dirs())


def _own_files() -> set[tuple[int, int]]:
    """(device, inode) of this program's own executable and its staticx launcher (fsread.own_files)."""
    return own_files()


def _walk_writable(ctx: Context, top: str, max_depth: int, budget: Budget,
                   skip: set[str]) -> Iterator[tuple[str, int, int, str] | Problem]:
    """(path, depth, folder descriptor, name) of every non-directory below ``top``, breadth first, bounded by
    depth and entries; links are never followed, remote filesystems never entered (fsread refuses them). Each
    folder is opened once through the evidence reader, and its files are looked at through that descriptor
    (the descriptor is valid until the next item is asked for): a /tmp of 12 000 files cost a full path
    resolution, twice, per file."""
    queue = collections.deque([(top, 0)])
    root = evidence(ctx)
    while queue:
        folder, depth = queue.popleft()
        ctx.check()
        try:
            with ctx.blocking(folder):
                fd, _, _ = root.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except RemoteFilesystem as exc:
            yield Problem.from_os_error(exc, "not read", folder)
            continue
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot list directory", folder)
            continue
        try:
            try:
                with ctx.blocking(folder), os.scandir(fd) as listing:
                    entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in listing)
            except OSError as exc:
                yield Problem.from_os_error(exc, "cannot list directory", folder)
                continue
            for name, directory in entries:
                path = folder.rstrip("/") + "/" + name
                budget.entries -= 1
                if budget.entries < 0:
                    yield Problem(f"entry limit reached in {top}: the rest of the walk not done", path=folder,
                                  level="warning")
                    return
                if directory:
                    if path in skip:
                        yield Problem("this collector's own unpacked runtime: not listed", path=path, level="info")
                    elif depth + 1 > max_depth:
                        budget.notes.append(path)  # summed up in one Problem: a deep tree must not flood the log
                    else:
                        queue.append((path, depth + 1))
                else:
                    yield path, depth + 1, fd, name
        finally:
            os.close(fd)


def _open_in(ctx: Context, dir_fd: int, name: str, where: str, st: os.stat_result) -> int:
    """Open a regular file by name in a folder we hold, never following it, O_NOATIME where we may, O_NONBLOCK
    (a FIFO swapped in never blocks us); checked to be the file we stat'ed."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    with ctx.blocking(where):
        try:
            fd = os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
        except PermissionError:
            fd = os.open(name, flags, dir_fd=dir_fd)
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(opened.st_mode):
        os.close(fd)
        raise OSError(errno.EAGAIN, "file changed while it was opened", where)
    return fd


def _writable(ctx: Context, budget: Budget, now: float) -> Iterator[Item]:
    max_depth = int(ctx.opt("max_depth", 8))
    hash_limit = int(ctx.opt("hash_limit_bytes", 64 << 20))
    copy_cap = int(ctx.opt("copy_cap_bytes", 4 << 20))
    days = float(ctx.opt("recent_days", 30))
    own_host = ctx.live and ctx.root == "/"
    skip = _own_runtime_dirs() if own_host else set()
    own = _own_files() if own_host else set()
    done: set[str] = set()
    counts = {"files": 0, "executables": 0, "copied": 0, "same_content": 0}
    copied_by_hash: dict[str, str] = {}  # sha256 -> the path whose copy holds those bytes
    for place in ctx.opt("writable_places", WRITABLE):
        try:
            top = resolve(ctx, place)
        except (OSError, ValueError):
            continue
        if top in done or not is_dir(ctx, top):
            continue
        done.add(top)
        # held until the place is walked (each row learns its tree's size), as JSON: 20 000 rows as dicts cost
        # ~30 MB, as text ~9 MB (every value is a JSON scalar, so nothing changes on the way back)
        rows: list[tuple[str, str]] = []
        trees: collections.Counter[str] = collections.Counter()
        for hit in _walk_writable(ctx, top, max_depth, budget, skip):
            if isinstance(hit, Problem):
                yield hit
                continue
            where, depth, dir_fd, name = hit
            try:
                with ctx.blocking(where):
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError as exc:
                yield Problem.from_os_error(exc, "cannot stat", where)
                continue
            parts = where[len(top):].lstrip("/").split("/")
            # hidden: the dropper's own choice, the file's name or the folder it made in the place
            # (/tmp/.ICE-unix/x, /dev/shm/.x); a hidden folder deep in a project someone unpacked (.git/hooks,
            # .npm) is only hidden_path
            tree = top.rstrip("/") + "/" + parts[0]
            base = {"place": "writable", "area": place, "path": where, "name": os.path.basename(where),
                    "hidden": parts[0].startswith(".") or parts[-1].startswith("."),
                    "hidden_path": any(part.startswith(".") for part in parts), "depth": depth, "tree": tree}
            if not stat.S_ISREG(st.st_mode):
                continue  # links (what they point at is walked where it lives), sockets, FIFOs, devices
            if (st.st_dev, st.st_ino) in own:
                yield Problem("this collector's own executable: not listed", path=where, level="info")
                continue
            counts["files"] += 1
            try:
                fd = _open_in(ctx, dir_fd, name, where, st)
                try:
                    st = os.fstat(fd)
                    facts = _facts_of(ctx, fd, st, where, None, hash_limit, budget)
                finally:
                    os.close(fd)
            except OSError as exc:
                yield Problem.from_os_error(exc, "cannot read", where)
                continue
            row = {**base, **_times(st), **facts, "recent": _recent(st, facts.get("birth_utc"), now, days)}
            copied = False
            if facts["file_type"] in ("elf", "script"):
                counts["executables"] += 1
                first = copied_by_hash.get(facts.get("sha256") or "")
                if first:
                    # the same bytes copied once (a kit unpacked twice, a test tree repeated): its hash names it
                    row["copy_of"] = first
                    counts["same_content"] += 1
                elif facts.get("elf_kind") == "core":
                    row["copy_skipped"] = "core dump: process memory, not a program"
                elif 0 < st.st_size <= copy_cap and st.st_size <= budget.copy_bytes:
                    budget.copy_bytes -= st.st_size
                    copies = list(copy_file(ctx, where, copy_cap))
                    copied = any(not isinstance(c, Problem) for c in copies)
                    counts["copied"] += copied
                    if copied and facts.get("sha256"):
                        copied_by_hash[facts["sha256"]] = where
                    yield from copies
                elif st.st_size > copy_cap:
                    row["copy_skipped"] = f"over {copy_cap} bytes"
                else:
                    row["copy_skipped"] = "artifact copy budget spent"
            row["copied"] = copied
            rows.append((tree, json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str)))
            trees[tree] += 1
        rows.reverse()  # popped from the end, in walk order, each freed once it is a record
        while rows:
            tree, data = rows.pop()
            row = json.loads(data)
            # files under the same top folder of the place: a lone dropped program or a small kit, or one file
            # of a source tree, build or unpacked archive of hundreds
            row["tree_files"] = trees[tree]
            yield Record("executables", row)
    if budget.notes:
        yield Problem(f"depth limit {max_depth}: {len(budget.notes)} folders not entered (first: {budget.notes[0]})",
                      path=budget.notes[0], level="warning", detail={"folders": budget.notes[:20]})
    yield Problem(f"writable places: {counts['files']} files, {counts['executables']} ELF or scripts, "
                  f"{counts['copied']} copied, {counts['same_content']} the same content as one copied", level="info")


# ---- system folders ---------------------------------------------------------------------------

def _expand_dirs(ctx: Context, pattern: str) -> list[str]:
    """Directories (resolved inside the root) matching a glob whose parts may hold * ? [...]."""
    found = ["/"]
    for part in [p for p in pattern.split("/") if p]:
        nxt = []
        for base in found:
            if not any(c in part for c in "*?["):
                nxt.append(base.rstrip("/") + "/" + part)
                continue
            try:
                names = [name for name, _ in listdir(ctx, base)]
            except OSError:
                continue
            nxt.extend(base.rstrip("/") + "/" + n for n in names if fnmatch.fnmatchcase(n, part))
        found = nxt
    out = []
    for path in found:
        if is_dir(ctx, path):
            try:
                out.append(resolve(ctx, path))
            except (OSError, ValueError):
                continue
    return out


def _system_folders(ctx: Context) -> list[tuple[str, str]]:
    """(resolved folder, area) with area bin | local_bin | security | local_security; merged-/usr aliases
    counted once."""
    seen: dict[str, str] = {}
    for folder in ctx.opt("bin_folders", BIN_FOLDERS):
        for where in _expand_dirs(ctx, folder):
            seen.setdefault(where, "local_bin" if where.startswith("/usr/local/") else "bin")
    for pattern in ctx.opt("security_globs", SECURITY_GLOBS):
        for where in _expand_dirs(ctx, pattern):
            # /usr/local is no package's: a PAM module there is the admin's build (pam_google_authenticator)
            seen.setdefault(where, "local_security" if where.startswith("/usr/local/") else "security")
    return sorted(seen.items())


def _files_in(ctx: Context, folder: str, recursive: bool, budget: Budget) -> Iterator[str | Problem]:
    queue = collections.deque([(folder, 0)])
    while queue:
        current, depth = queue.popleft()
        ctx.check()
        try:
            entries = listdir(ctx, current)
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot list directory", current)
            continue
        for name, directory in entries:
            budget.entries -= 1
            if budget.entries < 0:
                yield Problem("entry limit reached in the system folders", path=current, level="warning")
                return
            path = current.rstrip("/") + "/" + name
            if directory:
                if recursive and depth < 4:
                    queue.append((path, depth + 1))
            else:
                yield path


def _keeper(extra: list[str]) -> Callable[[str], bool]:
    # every path of every package passes here (135 000 on a desktop-sized Debian): the extra globs are one
    # compiled pattern, not an fnmatch call per glob per path (0.2 s of the triage run's CPU)
    extra_match = re.compile("|".join(fnmatch.translate(g) for g in extra)).match if extra else None

    def keep(path: str) -> bool:
        """Database entries worth keeping: files directly in bin/sbin folders, below a security folder, a
        libkeyutils, or an extra file. Paths are compared again once resolved."""
        folder, _, name = path.rpartition("/")
        return folder.endswith(("/bin", "/sbin", "/security")) or "/security/" in folder + "/" \
            or name.startswith("libkeyutils.so") or (extra_match is not None and extra_match(path) is not None)

    return keep


def _verify(owners: list[packages.Owner] | None, facts: dict[str, Any], algo: str | None) -> str | None:
    """ok | mismatch | config | no_digest | None (not hashed) for a hashed file against its owners."""
    if not owners:
        return None
    with_digest = [o for o in owners if o.digest and o.algo == algo]
    if not with_digest:
        return "no_digest"
    if "digest" not in facts:
        return None
    if any(o.digest == facts["digest"] for o in with_digest):
        return "ok"
    if all(o.config for o in with_digest):
        return "config"  # a conffile the admin changed: not judged
    return "mismatch"


def _system(ctx: Context, budget: Budget, now: float) -> Iterator[Item]:
    extra = list(ctx.opt("extra_globs", EXTRA_GLOBS))
    db, problems = packages.load(ctx, _keeper(extra))
    yield from problems
    yield Record("package_db", db.summary())
    if db.kind == "none":
        yield Problem("no package database (dpkg, rpm) found: ownership and integrity of system files unknown",
                      level="warning")
    hash_limit = int(ctx.opt("hash_limit_bytes", 64 << 20))
    days = float(ctx.opt("recent_days", 30))
    slack = float(ctx.opt("install_slack_s", 600))
    always = set(ctx.opt("always_hash", ALWAYS_HASH))
    # every program in the PATH folders hashed (issue 16 item 5), from a budget of its own so that the
    # files the rules need are never starved by a thousand untouched ones
    path_all = bool(ctx.opt("hash_path_binaries", True))
    # A PATH program its package database vouches for (owned, with a digest, its ctime within install_slack_s of
    # the package's install: no write since dpkg or rpm put it there; ctime cannot be set back from user space)
    # is listed, not read, unless path_hash_untouched: reading every untouched program costs hundreds of MB of
    # I/O (500 MB, ~1.5 s warm and several seconds on a cold cloud disk here) and finds nothing the ctime test
    # misses. Changed, unowned, undigested and always_hash files are hashed whatever this says.
    path_untouched = bool(ctx.opt("path_hash_untouched", False))
    path_limit = int(ctx.opt("path_hash_limit_bytes", hash_limit))
    path_budget = Budget(entries=0, copy_bytes=0, hashed_bytes=int(ctx.opt("path_hash_total_bytes", 1 << 30)))
    path_total = path_budget.hashed_bytes
    targets: list[tuple[str, str]] = []
    for folder, area in _system_folders(ctx):
        for hit in _files_in(ctx, folder, area.endswith("security"), budget):
            if isinstance(hit, Problem):
                yield hit
            else:
                targets.append((hit, area))
    for pattern in extra:
        targets.extend((hit, "bin") for hit in walk_glob(ctx, pattern, 4) if isinstance(hit, str))
    for pattern in ctx.opt("library_globs", LIBRARY_GLOBS):
        for folder in _expand_dirs(ctx, pattern):
            try:
                names = [n for n, d in listdir(ctx, folder) if not d and n.startswith("libkeyutils.so")]
            except OSError:
                continue
            targets.extend((folder.rstrip("/") + "/" + n, "libkeyutils") for n in names)
    seen: set[tuple[int, int]] = set()
    counts = {"files": 0, "listed": 0, "hashed": 0, "mismatch": 0, "unowned": 0, "path_hashed": 0,
              "path_skipped": 0, "path_vouched": 0}
    for path, area in targets:
        ctx.check()
        try:
            where, st = lstat(ctx, path)
        except (OSError, ValueError):
            continue
        if (st.st_dev, st.st_ino) in seen and not stat.S_ISLNK(st.st_mode):
            continue  # the same file reached through two names (a merged /usr alias, a hard link)
        seen.add((st.st_dev, st.st_ino))
        counts["files"] += 1
        owners = db.owners(where)
        owned = None if owners is None else bool(owners)
        name = os.path.basename(where)
        base = {"place": "system", "area": area, "path": where, "name": name, "package_db": db.kind,
                "owned": owned, "package": owners[0].package if owners else None,
                "package_version": owners[0].version if owners else None,
                "packages": sorted({o.package for o in owners}) if owners and len(owners) > 1 else None}
        if stat.S_ISLNK(st.st_mode):
            if area in ("security", "local_security", "libkeyutils"):  # Ebury repoints libkeyutils.so.1
                try:
                    target = readlink(ctx, where)
                except OSError:
                    target = None
                counts["listed"] += 1
                yield Record("executables", {**base, "file_type": "symlink", "link_target": target,
                                             **_link_facts(db, where, target, owners), **_times(st)})
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        installed = max((o.installed for o in owners or [] if o.installed), default=None)
        changed = installed is not None and st.st_ctime > installed + slack
        recent = _recent(st, None, now, days)
        reasons = [r for r, yes in (("always_hash", name in always), ("pam_module", area.endswith("security")),
                                    ("libkeyutils", area == "libkeyutils"), ("changed_since_install", changed),
                                    ("unowned", owned is False), ("recent", recent),
                                    ("path", path_all and area in ("bin", "local_bin"))) if yes]
        if not reasons:
            continue
        algo = next((o.algo for o in owners or [] if o.digest and o.algo), None)
        hash_it = any(r != "recent" for r in reasons) or db.kind == "none"
        path_only = all(r in ("path", "recent") for r in reasons) and db.kind != "none"
        vouched = hash_it and path_only and not path_untouched and installed is not None and not changed \
            and _package_digest(owners, algo) is not None
        try:
            if vouched:
                facts = {"hash_skipped": f"untouched since its package's install (ctime within {slack:g} s of it): "
                                         "not read (path_hash_untouched)"}
                counts["path_vouched"] += 1
            elif hash_it:
                facts, st, where = _read_facts(ctx, where, algo or "sha256", path_limit if path_only else hash_limit,
                                               path_budget if path_only else budget)
                counts["hashed"] += "sha256" in facts
                if path_only:
                    counts["path_hashed"] += "sha256" in facts
                    counts["path_skipped"] += "hash_skipped" in facts
                    if facts.get("hash_skipped") == "artifact hashing budget spent":
                        facts["hash_skipped"] = f"PATH hashing budget ({path_total} bytes) spent"
            else:
                facts = {}
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot read", where)
            facts = {"unreadable": True}
        verify = _verify(owners, facts, algo)
        if "hash_skipped" in facts and owners:
            verify = "not_hashed"
        counts["mismatch"] += verify == "mismatch"
        counts["unowned"] += owned is False
        counts["listed"] += 1
        row = {**base, **_times(st), **{k: v for k, v in facts.items() if k != "digest"},
               "digest_algo": algo, "package_digest": _package_digest(owners, algo),
               "digest": facts.get("digest") if algo else None, "verify": verify,
               "config": bool(owners) and all(o.config for o in owners or []),
               "package_installed_utc": utc(installed), "changed_since_install": changed, "recent": recent,
               "why": reasons}
        yield Record("executables", row)
    yield Problem(f"system folders: {counts['files']} files, {counts['listed']} listed, {counts['hashed']} hashed, "
                  f"{counts['mismatch']} digest mismatches, {counts['unowned']} unowned ({db.kind}); PATH programs: "
                  f"{counts['path_hashed']} hashed, {counts['path_skipped']} not (cap {path_limit} bytes per file, "
                  f"{path_total} in all), {counts['path_vouched']} untouched since install not read", level="info",
                  detail={"path_hashed": counts["path_hashed"], "path_not_hashed": counts["path_skipped"],
                          "path_untouched_not_read": counts["path_vouched"], "path_hash_untouched": path_untouched,
                          "path_hash_limit_bytes": path_limit, "path_hash_total_bytes": path_total,
                          "path_hash_bytes_left": path_budget.hashed_bytes, "hash_limit_bytes": hash_limit})


def _link_facts(db: packages.PackageDB, link: str, target: str | None,
                owners: list[packages.Owner] | None) -> dict[str, Any]:
    """Where a packaged link points, and whether its own package ships that file. Ebury's trick is to
    repoint libkeyutils.so.1 at a library no package ships: the link's package lists every file it
    installs, so this holds even when other packages' lists are missing."""
    if not target:
        return {}
    path = posixpath.normpath(target if target.startswith("/") else posixpath.join(posixpath.dirname(link), target))
    facts: dict[str, Any] = {"target_path": path}
    if owners:
        mine = {o.package for o in owners}
        facts["target_in_link_package"] = any(o.package in mine for o in db.files.get(path) or [])
    return facts


def _package_digest(owners: list[packages.Owner] | None, algo: str | None) -> str | None:
    for o in owners or []:
        if o.digest and o.algo == algo:
            return o.digest
    return None


def collect(ctx: Context) -> Iterator[Item]:
    now = time.time()
    budget = Budget(entries=int(ctx.opt("max_entries", 50_000)),
                    copy_bytes=int(ctx.opt("copy_total_bytes", 64 << 20)),
                    hashed_bytes=int(ctx.opt("hash_total_bytes", 2 << 30)))
    writable_budget = Budget(entries=int(ctx.opt("max_writable_entries", 20_000)), copy_bytes=budget.copy_bytes,
                             hashed_bytes=budget.hashed_bytes // 2)
    yield from _writable(ctx, writable_budget, now)
    budget.hashed_bytes -= (budget.hashed_bytes // 2 - writable_budget.hashed_bytes)
    yield from _system(ctx, budget, now)
