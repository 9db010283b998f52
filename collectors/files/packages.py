"""Package ownership and digests read from the package databases themselves, never through dpkg or rpm.

The suspect's package manager is a host program (we run none) and may be the very thing that was
replaced, so the databases are parsed here, bounded against hostile content:

- dpkg: ``/var/lib/dpkg/status`` (which packages are installed, their conffiles), ``info/*.list``
  (which package owns which path; the .list file's mtime is when the package was last unpacked),
  ``info/*.md5sums`` (MD5 per file) and ``diversions`` (a diverted file lives under another name).
- RPM, SQLite backend (RHEL 9, Amazon Linux 2023, Fedora): the ``Packages`` table's header blobs,
  whose tag index we parse ourselves. The database is opened read-only *and immutable* through
  ``/proc/self/fd/N`` of the descriptor fsread opened inside the evidence root, so SQLite takes no
  lock and never creates a journal, WAL or shm file on the host. Transactions still in its write-ahead
  log (rpm running, or killed before a checkpoint) are applied to a copy in our memory, frame checksums
  and salts checked as SQLite's own checkpoint would; a log we cannot use makes ownership unknown.
- RPM, Berkeley DB backend (RHEL 7-8, Amazon Linux 2): the ``Packages`` hash database's pages; the
  header blobs are found in its overflow-page chains (every header is bigger than a page).

Only the paths a caller wants are kept (``keep``), so a 300 000-file package set costs no memory.
Paths are stored as they resolve inside the evidence root (``/bin/ls`` on a merged-/usr system is
``/usr/bin/ls``), so they compare with what a walk of the root finds.
"""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from collectors.base import Cancelled, Context, Problem
from collectors.files.fsread import Folder, listdir, lstat, open_regular, read_capped, resolve
from collectors.util import text

DPKG = "/var/lib/dpkg"
RPM_SQLITE = ("/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite")
RPM_BDB = ("/var/lib/rpm/Packages", "/usr/lib/sysimage/rpm/Packages")

# Bounds against a hostile or huge database.
MAX_STATUS_BYTES = 64 << 20
MAX_LIST_BYTES = 32 << 20  # one .list or .md5sums file
MAX_DB_BYTES = 1 << 30  # total bytes of dpkg metadata read
MAX_PACKAGES = 50_000
MAX_HEADER_BYTES = 64 << 20  # one RPM header blob (rpm itself refuses data stores over 256 MiB)
MAX_HEADER_TAGS = 0xFFFF  # rpm's own limit on a header's index entries
MAX_FILES_PER_PACKAGE = 1_000_000

# RPM header tags and types (rpmtag.h).
TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_INSTALLTIME, TAG_ARCH = 1000, 1001, 1002, 1003, 1008, 1022
TAG_OLDFILENAMES, TAG_FILEDIGESTS, TAG_FILEFLAGS, TAG_FILEVERIFYFLAGS = 1027, 1035, 1037, 1045
TAG_DIRINDEXES, TAG_BASENAMES, TAG_DIRNAMES, TAG_FILEDIGESTALGO = 1116, 1117, 1118, 5011
WANTED_TAGS = frozenset({TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_INSTALLTIME, TAG_ARCH, TAG_OLDFILENAMES,
                         TAG_FILEDIGESTS, TAG_FILEFLAGS, TAG_FILEVERIFYFLAGS, TAG_DIRINDEXES, TAG_BASENAMES,
                         TAG_DIRNAMES, TAG_FILEDIGESTALGO})
RPM_INT16, RPM_INT32, RPM_STRING, RPM_BIN, RPM_STRING_ARRAY, RPM_I18NSTRING = 3, 4, 6, 7, 8, 9
RPMFILE_CONFIG, RPMFILE_GHOST = 1, 64
RPMVERIFY_FILEDIGEST = 1
# PGPHASHALGO_* -> hashlib name (rpm's default, when FILEDIGESTALGO is absent, is MD5)
DIGEST_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}


@dataclass(frozen=True)
class Owner:
    """One package's claim on a path."""

    package: str
    version: str | None
    digest: str | None  # lowercase hex, in ``algo``; None when the database has none for this file
    algo: str | None
    config: bool  # a conffile / %config: admins change it, so a different digest is not tampering
    installed: float | None  # when the package was installed or last unpacked (epoch seconds)
    state: str | None = None


@dataclass
class PackageDB:
    kind: str = "none"  # dpkg | rpm-sqlite | rpm-bdb | none
    source: str | None = None
    packages: int = 0
    complete: bool = True  # False when part of the database could not be read: "unowned" is then unknown
    files: dict[str, list[Owner]] = field(default_factory=dict)

    def owners(self, path: str) -> list[Owner] | None:
        """The path's owners; [] when it is unowned; None when no complete database says either way."""
        found = self.files.get(path)
        if found:
            return found
        return [] if self.kind != "none" and self.complete else None

    def summary(self) -> dict:
        return {"package_db": self.kind, "source": self.source, "packages": self.packages,
                "complete": self.complete, "paths_indexed": len(self.files)}


class _Normalizer:
    """Evidence paths of database entries: the directory resolved inside the root (merged /usr, /lib64
    links), cached per directory."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.cache: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        folder, _, name = path.rpartition("/")
        folder = folder or "/"
        where = self.cache.get(folder)
        if where is None:
            try:
                where = resolve(self.ctx, folder)
            except (OSError, ValueError):
                where = folder  # a folder that is not there: keep the name the database gives
            self.cache[folder] = where
        return where.rstrip("/") + "/" + name


def load(ctx: Context, keep: Callable[[str], bool]) -> tuple[PackageDB, list[Problem]]:
    """The first package database found (dpkg, then RPM SQLite, then RPM Berkeley DB), with the paths
    ``keep(path)`` accepts. Never raises for a bad database: it becomes Problems and ``complete=False``."""
    problems: list[Problem] = []
    loaders: list[tuple[str, Callable[[], PackageDB | None]]] = [
        ("dpkg", lambda: _load_dpkg(ctx, keep, problems)),
        ("rpm-sqlite", lambda: _load_rpm_sqlite(ctx, keep, problems)),
        ("rpm-bdb", lambda: _load_rpm_bdb(ctx, keep, problems)),
    ]
    for kind, loader in loaders:
        try:
            db = loader()
        except Cancelled:
            raise
        except (OSError, ValueError, sqlite3.Error, struct.error, MemoryError) as exc:
            problems.append(Problem(f"{kind} database not read: {type(exc).__name__}: {exc}"[:500]))
            continue
        if db is not None and db.packages:
            return db, problems
        if db is not None:  # e.g. dpkg installed on an RPM system: an empty database owns nothing, says nothing
            problems.append(Problem(f"{kind} database {db.source} lists no installed package: not used",
                                    path=db.source, level="info"))
    return PackageDB(), problems


# ---- dpkg ---------------------------------------------------------------------------------------

def parse_dpkg_status(data: bytes) -> dict[str, dict]:
    """{package or package:arch: {version, arch, state, conffiles}} of packages dpkg holds files for."""
    packages: dict[str, dict] = {}
    for block in text(data).split("\n\n"):
        fields: dict[str, str] = {}
        last = None
        conffiles: set[str] = set()
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and last:
                if last == "Conffiles":
                    words = line.split()
                    if words and words[0].startswith("/"):
                        conffiles.add(words[0])
                continue
            key, sep, value = line.partition(":")
            if sep:
                last = key
                fields[key] = value.strip()
        name = fields.get("Package")
        if not name:
            continue
        state = fields.get("Status", "").split()[-1:] or [""]
        if state[0] in ("not-installed", "config-files", ""):
            continue  # no files of it are on disk (config-files: only conffiles, which we never judge)
        info = {"version": fields.get("Version"), "arch": fields.get("Architecture"), "state": state[0],
                "conffiles": conffiles}
        packages[name] = info
        if info["arch"]:
            packages[f"{name}:{info['arch']}"] = info
    return packages


def parse_diversions(data: bytes) -> dict[str, tuple[str, str]]:
    """{diverted path: (where it now lives, diverting package or ":" for a local diversion)}."""
    lines = text(data).splitlines()
    return {lines[i]: (lines[i + 1], lines[i + 2]) for i in range(0, len(lines) - 2, 3)}


def parse_md5sums(data: bytes, wanted: set[str] | None = None) -> dict[str, str]:
    """{path: md5} of a dpkg .md5sums file; with ``wanted``, only those paths. Read line by line from the
    bytes: a package of 40 000 files (google-cloud-cli) must not become 40 000 strings to keep 20."""
    digests = {}
    for raw in io.BytesIO(data):
        digest, _, rel_raw = raw.rstrip(b"\r\n").partition(b" ")
        if len(digest) != 32:
            continue
        rel = text(rel_raw.lstrip(b" *"))
        path = "/" + rel.lstrip("/")
        if rel and (wanted is None or path in wanted):
            digests[path] = text(digest).lower()
    return digests


def _load_dpkg(ctx: Context, keep: Callable[[str], bool], problems: list[Problem]) -> PackageDB | None:
    try:
        status, _, cut = read_capped(ctx, f"{DPKG}/status", MAX_STATUS_BYTES)
    except FileNotFoundError:
        return None
    db = PackageDB(kind="dpkg", source=f"{DPKG}/status")
    if cut:
        db.complete = False
        problems.append(Problem(f"dpkg status over {MAX_STATUS_BYTES} bytes: read in part", path=db.source,
                                level="warning"))
    installed = parse_dpkg_status(status)
    try:
        diversions = parse_diversions(read_capped(ctx, f"{DPKG}/diversions", MAX_LIST_BYTES)[0])
    except FileNotFoundError:
        diversions = {}
    except OSError as exc:
        diversions = {}
        problems.append(Problem.from_os_error(exc, "cannot read dpkg diversions", f"{DPKG}/diversions"))
    try:
        names = [name for name, is_dir in listdir(ctx, f"{DPKG}/info") if not is_dir]
        info = Folder(ctx, f"{DPKG}/info")  # its 2 000 files read by name, not each by a walk of its whole path
    except OSError as exc:
        problems.append(Problem.from_os_error(exc, "cannot list dpkg info", f"{DPKG}/info"))
        db.complete = False
        return db
    with info:
        _read_dpkg_lists(ctx, keep, problems, db, installed, diversions, names, info)
    listed = {n[:-5].split(":")[0] for n in names if n.endswith(".list")}
    missing = sorted({k.split(":")[0] for k in installed} - listed)
    if missing:  # every installed package has a .list (a metapackage's holds "/."): its files are unknown
        db.complete = False
        problems.append(Problem(f"dpkg: {len(missing)} installed packages have no file list (first: "
                                f"{', '.join(missing[:5])}): ownership of unlisted files unknown", level="warning"))
    return db


def _read_dpkg_lists(ctx: Context, keep: Callable[[str], bool], problems: list[Problem], db: PackageDB,
                     installed: dict[str, dict], diversions: dict[str, tuple[str, str]], names: list[str],
                     folder: Folder) -> None:
    """The kept paths of every installed package's .list, with their digests from its .md5sums, into ``db``."""
    present = set(names)
    normal = _Normalizer(ctx)
    budget = MAX_DB_BYTES
    packages = 0
    for name in names:
        ctx.check()
        if not name.endswith(".list"):
            continue
        stem = name[:-5]
        info = installed.get(stem) or installed.get(stem.split(":")[0])
        if info is None:
            continue  # a package dpkg no longer lists as installed: its .list is a leftover
        packages += 1
        if packages > MAX_PACKAGES:
            problems.append(Problem(f"dpkg: over {MAX_PACKAGES} packages; the rest not read", level="warning"))
            db.complete = False
            break
        try:
            listing, st, cut = folder.read_capped(name, min(MAX_LIST_BYTES, max(budget, 0)))
            # only the kept paths are decoded and held, line by line: the biggest lists (google-cloud-cli:
            # 4 MB, 40 000 paths) would otherwise cost tens of MB of strings to keep a handful
            wanted: dict[str, None] = {}
            for raw in io.BytesIO(listing):
                if raw[:1] == b"/":
                    path = text(raw.rstrip(b"\r\n"))
                    if keep(path):
                        wanted[path] = None
            size, listing = len(listing), b""  # freed before the .md5sums is read
            digests = parse_md5sums(folder.read_capped(f"{stem}.md5sums", MAX_LIST_BYTES)[0], set(wanted)) \
                if wanted and f"{stem}.md5sums" in present else {}
        except OSError as exc:
            problems.append(Problem.from_os_error(exc, "cannot read dpkg file list", f"{DPKG}/info/{name}"))
            db.complete = False
            continue
        budget -= size
        if cut or budget <= 0:
            db.complete = False
            problems.append(Problem("dpkg file list read in part (size cap)", path=f"{DPKG}/info/{name}",
                                    level="warning"))
        package = stem.split(":")[0]
        for path in wanted:
            where = path
            diverted = diversions.get(path)
            if diverted and diverted[1] != package:
                where = diverted[0]  # this package's copy was installed under the diverted name
                if not keep(where):
                    continue
            owner = Owner(package, info["version"], digests.get(path), "md5" if path in digests else None,
                          path in info["conffiles"], st.st_mtime, info["state"])
            db.files.setdefault(normal(where), []).append(owner)
    db.packages = packages


# ---- RPM headers ------------------------------------------------------------------------------

def parse_header(blob: bytes, wanted: frozenset[int] = WANTED_TAGS) -> dict[int, object]:
    """The wanted tags of an RPM header blob as stored in rpmdb (no lead, no magic: il, dl, index, data).
    Every count and offset is checked against the blob; a bad entry is skipped, a bad header raises
    ValueError."""
    if len(blob) < 8:
        raise ValueError("header shorter than its counts")
    il, dl = struct.unpack_from(">II", blob, 0)
    if il > MAX_HEADER_TAGS or dl > MAX_HEADER_BYTES or 8 + 16 * il + dl > len(blob):
        raise ValueError(f"header counts out of range (il={il}, dl={dl}, {len(blob)} bytes)")
    data_start = 8 + 16 * il
    data = bytes(blob[data_start:data_start + dl])
    out: dict[int, object] = {}
    for i in range(il):
        tag, kind, offset, count = struct.unpack_from(">IIiI", blob, 8 + 16 * i)
        if tag not in wanted or offset < 0 or offset >= dl or count == 0 or count > dl:
            continue
        try:
            out[tag] = _tag_value(data, kind, offset, count)
        except ValueError:
            continue  # one bad entry: the others may still be good
    return out


def _tag_value(data: bytes, kind: int, offset: int, count: int) -> object:
    if kind == RPM_INT32:
        if offset + 4 * count > len(data):
            raise ValueError("int32 array past the data")
        return list(struct.unpack_from(f">{count}i", data, offset))
    if kind == RPM_INT16:
        if offset + 2 * count > len(data):
            raise ValueError("int16 array past the data")
        return list(struct.unpack_from(f">{count}H", data, offset))
    if kind in (RPM_STRING, RPM_STRING_ARRAY, RPM_I18NSTRING):
        strings, pos = [], offset
        for _ in range(1 if kind == RPM_STRING else count):
            end = data.find(b"\0", pos)  # count <= dl, and each string takes at least one byte
            if end < 0:
                raise ValueError("unterminated string")
            strings.append(text(data[pos:end]))
            pos = end + 1
        return strings[0] if kind == RPM_STRING else strings
    if kind == RPM_BIN:
        if offset + count > len(data):
            raise ValueError("binary past the data")
        return data[offset:offset + count]
    raise ValueError(f"type {kind} not read")


def header_files(header: dict[int, object]) -> Iterator[tuple[str, str | None, int, int]]:
    """(path, digest hex or None, file flags, verify flags) of each file a header lists."""
    basenames = header.get(TAG_BASENAMES)
    dirnames = header.get(TAG_DIRNAMES)
    indexes = header.get(TAG_DIRINDEXES)
    if isinstance(basenames, list) and isinstance(dirnames, list) and isinstance(indexes, list):
        # a hostile header may give fewer indexes than names: the extra names are dropped
        paths = [dirnames[d] + b if 0 <= d < len(dirnames) else None
                 for b, d in zip(basenames, indexes, strict=False)]
    elif isinstance(header.get(TAG_OLDFILENAMES), list):
        paths = list(header[TAG_OLDFILENAMES])  # type: ignore[arg-type]
    else:
        return
    digests = header.get(TAG_FILEDIGESTS)
    flags = header.get(TAG_FILEFLAGS)
    verify = header.get(TAG_FILEVERIFYFLAGS)
    for i, path in enumerate(paths[:MAX_FILES_PER_PACKAGE]):
        if not path:
            continue
        digest = digests[i] if isinstance(digests, list) and i < len(digests) else None
        yield (path, (digest or None) and str(digest).lower(),
               flags[i] if isinstance(flags, list) and i < len(flags) else 0,
               verify[i] if isinstance(verify, list) and i < len(verify) else -1)


def _add_header(db: PackageDB, header: dict[int, object], keep: Callable[[str], bool], normal: _Normalizer) -> None:
    name = header.get(TAG_NAME)
    if not isinstance(name, str) or not name:
        raise ValueError("header without a name")
    version = "-".join(str(header[t]) for t in (TAG_VERSION, TAG_RELEASE) if isinstance(header.get(t), str))
    epoch = header.get(TAG_EPOCH)
    if isinstance(epoch, list) and epoch and epoch[0]:
        version = f"{epoch[0]}:{version}"
    algo_code = header.get(TAG_FILEDIGESTALGO)
    algo = DIGEST_ALGOS.get(algo_code[0] if isinstance(algo_code, list) and algo_code else 1)
    when = header.get(TAG_INSTALLTIME)
    installed = float(when[0]) if isinstance(when, list) and when else None
    arch = header.get(TAG_ARCH)
    package = f"{name}.{arch}" if isinstance(arch, str) and arch not in ("", "noarch") else name
    for path, digest, flags, verify in header_files(header):
        if not path.startswith("/") or not keep(path) or flags & RPMFILE_GHOST:
            continue  # a %ghost file is not in the package: rpm records no content for it
        if verify != -1 and not verify & RPMVERIFY_FILEDIGEST:
            digest = None  # %verify(not md5): the package says its content changes
        owner = Owner(package, version or None, digest, algo if digest else None, bool(flags & RPMFILE_CONFIG),
                      installed)
        db.files.setdefault(normal(path), []).append(owner)
    db.packages += 1


# ---- RPM SQLite -------------------------------------------------------------------------------

def _load_rpm_sqlite(ctx: Context, keep: Callable[[str], bool], problems: list[Problem]) -> PackageDB | None:
    for candidate in RPM_SQLITE:
        try:
            fd, st, where = open_regular(ctx, candidate)
        except FileNotFoundError:
            continue
        try:
            return _read_rpm_sqlite(ctx, fd, where, keep, problems)
        finally:
            os.close(fd)
    return None


def _read_rpm_sqlite(ctx: Context, fd: int, where: str, keep: Callable[[str], bool],
                     problems: list[Problem]) -> PackageDB:
    if os.pread(fd, 16, 0) != b"SQLite format 3\0":
        raise ValueError(f"{where} is not an SQLite database")
    db = PackageDB(kind="rpm-sqlite", source=where)
    wal = _pending_wal(ctx, where, problems)
    conn = None
    if wal:  # transactions not yet in the database file (rpm running, or killed): applied to a copy in memory
        data = _memory_copy(ctx, fd, where) if os.fstat(fd).st_size <= MAX_SQLITE_IN_MEMORY else None
        applied = apply_wal(data, wal) if data is not None else None
        if applied is None:
            # a package installed in a pending transaction would look unowned: the database is not complete
            db.complete = False
            problems.append(Problem(f"{where}-wal holds {len(wal)} bytes of transactions not read: ownership of "
                                    "files no package lists is unknown", path=where, level="warning"))
        else:
            conn = _deserialized(data)  # type: ignore[arg-type]
            problems.append(Problem(f"{where}-wal: {applied} committed transaction(s) applied to a copy in memory",
                                    path=where, level="info"))
    if conn is None:
        conn = _open_sqlite(ctx, fd, where, problems)
    try:
        conn.execute("PRAGMA trusted_schema = OFF")

        def progress() -> int:
            try:
                ctx.check()
            except Cancelled:
                return 1  # SQLite aborts the statement; the Cancelled is raised again below
            return 0

        conn.set_progress_handler(progress, 10_000)
        normal = _Normalizer(ctx)
        rows = conn.execute("SELECT hnum, length(blob) FROM Packages")
        numbers = []
        for hnum, size in rows:
            if size is None or size > MAX_HEADER_BYTES:
                problems.append(Problem(f"rpm header {hnum}: {size} bytes, not read", path=where, level="warning"))
                db.complete = False
                continue
            numbers.append(hnum)
            if len(numbers) > MAX_PACKAGES:
                problems.append(Problem(f"rpm: over {MAX_PACKAGES} packages; the rest not read", path=where,
                                        level="warning"))
                db.complete = False
                break
        for hnum in numbers[:MAX_PACKAGES]:
            ctx.check()
            row = conn.execute("SELECT blob FROM Packages WHERE hnum = ?", (hnum,)).fetchone()
            if row is None or not isinstance(row[0], bytes):
                continue
            try:
                _add_header(db, parse_header(bytes(row[0])), keep, normal)
            except (ValueError, TypeError, IndexError) as exc:
                problems.append(Problem(f"rpm header {hnum} not parsed: {exc}"[:300], path=where, level="warning"))
                db.complete = False
    except sqlite3.OperationalError as exc:
        ctx.check()
        raise ValueError(f"{where}: {exc}") from exc
    finally:
        conn.close()
    return db


FD_PATH = "/proc/self/fd/{fd}"
MAX_SQLITE_IN_MEMORY = 256 << 20


def _open_sqlite(ctx: Context, fd: int, where: str, problems: list[Problem]) -> sqlite3.Connection:
    """The database behind ``fd``, read-only. Through /proc/self/fd/N with immutable=1: no locks, and no
    journal, WAL or shm file is opened or created next to it (SQLite would name them after the /proc path
    anyway). Without /proc (a chroot), a copy in our memory (deserialize) when it is small enough."""
    proc = FD_PATH.format(fd=fd)
    if os.path.exists(proc):
        conn = sqlite3.connect(f"file:{proc}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        return conn
    if os.fstat(fd).st_size > MAX_SQLITE_IN_MEMORY:
        raise ValueError(f"{where}: no /proc/self/fd to open it through, and too big to copy")
    conn = _deserialized(_memory_copy(ctx, fd, where))
    problems.append(Problem(f"no /proc/self/fd: {where} read from a copy in memory", path=where, level="info"))
    return conn


def _memory_copy(ctx: Context, fd: int, where: str) -> bytearray:
    size = os.fstat(fd).st_size
    chunks, pos = [], 0
    while pos < size:
        ctx.check()
        with ctx.blocking(where):
            chunk = os.pread(fd, 1 << 20, pos)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return bytearray(b"".join(chunks))


def _deserialized(data: bytearray) -> sqlite3.Connection:
    if len(data) > 19 and data[18] == 2 and data[19] == 2:
        data[18] = data[19] = 1  # WAL mode: an in-memory copy reads as a rollback-journal database
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.deserialize(bytes(data))
    conn.execute("PRAGMA query_only = ON")
    return conn


MAX_WAL_BYTES = 64 << 20
WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums little-endian, big-endian


def _pending_wal(ctx: Context, where: str, problems: list[Problem]) -> bytes | None:
    """The write-ahead log beside the database when it holds anything (an immutable open never reads it)."""
    try:
        _, st = lstat(ctx, where + "-wal")
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return None
    if st.st_size > MAX_WAL_BYTES:
        return _too_big_wal(st.st_size, where, problems)
    try:
        data, _, _ = read_capped(ctx, where + "-wal", MAX_WAL_BYTES)
    except OSError as exc:
        problems.append(Problem.from_os_error(exc, "cannot read the rpmdb WAL", where + "-wal"))
        return b"?"  # something is pending that we cannot read: apply_wal refuses it, the database is incomplete
    return data


def _too_big_wal(size: int, where: str, problems: list[Problem]) -> bytes:
    problems.append(Problem(f"{where}-wal is {size} bytes, over {MAX_WAL_BYTES}: not applied", path=where,
                            level="warning"))
    return b"?"


def _wal_checksum(data: bytes | memoryview, order: str, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack(f"{order}{len(data) // 4}I", data)
    for i in range(0, len(words) - 1, 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def apply_wal(db: bytearray, wal: bytes) -> int | None:
    """Apply a SQLite write-ahead log's committed transactions to the database image ``db`` in place, as a
    checkpoint would: frames whose salts match the log header and whose cumulative checksums hold, up to
    the last commit frame. Returns the number of transactions applied, or None when the log cannot be
    used (then the caller reads the database as it is and says it is incomplete)."""
    if len(wal) < 32:
        return None
    magic, version, page_size, _, salt1, salt2, c1, c2 = struct.unpack_from(">8I", wal, 0)
    if magic not in WAL_MAGIC or page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return None
    order = ">" if magic & 1 else "<"
    s0, s1 = _wal_checksum(wal[:24], order, 0, 0)
    if (s0, s1) != (c1, c2):
        return None
    view = memoryview(wal)
    pending: dict[int, int] = {}  # page number -> offset of its newest frame in the log
    committed: dict[int, int] = {}
    size_pages = None
    transactions = 0
    pos = 32
    while pos + 24 + page_size <= len(wal):
        pgno, commit, fs1, fs2, fc1, fc2 = struct.unpack_from(">6I", wal, pos)
        if (fs1, fs2) != (salt1, salt2) or pgno == 0:
            break  # a frame of an older generation of the log: the valid part ends here
        s0, s1 = _wal_checksum(view[pos:pos + 8], order, s0, s1)
        s0, s1 = _wal_checksum(view[pos + 24:pos + 24 + page_size], order, s0, s1)
        if (s0, s1) != (fc1, fc2):
            break  # a torn write: nothing after it counts
        pending[pgno] = pos + 24
        if commit:
            committed.update(pending)
            pending.clear()
            size_pages = commit
            transactions += 1
        pos += 24 + page_size
    if size_pages is None:
        return 0
    if len(db) % page_size:
        return None  # the log's page size is not the database's
    needed = size_pages * page_size
    if needed > MAX_SQLITE_IN_MEMORY:
        return None
    if len(db) < needed:
        db.extend(b"\0" * (needed - len(db)))
    for pgno, offset in committed.items():
        if pgno <= size_pages:
            db[(pgno - 1) * page_size:pgno * page_size] = view[offset:offset + page_size]
    del db[needed:]
    return transactions


# ---- RPM Berkeley DB --------------------------------------------------------------------------

BDB_HASH_MAGIC = 0x061561
BDB_P_OVERFLOW = 7
BDB_P_HASH = (2, 13)  # P_HASH_UNSORTED, P_HASH
BDB_H_KEYDATA = 1
BDB_MAX_PAGES = 4_000_000


def _load_rpm_bdb(ctx: Context, keep: Callable[[str], bool], problems: list[Problem]) -> PackageDB | None:
    for candidate in RPM_BDB:
        try:
            fd, st, where = open_regular(ctx, candidate)
        except FileNotFoundError:
            continue
        try:
            return _read_rpm_bdb(ctx, fd, st, where, keep, problems)
        finally:
            os.close(fd)
    return None


def _read_rpm_bdb(ctx: Context, fd: int, st: os.stat_result, where: str, keep: Callable[[str], bool],
                  problems: list[Problem]) -> PackageDB:
    """Berkeley DB hash file: a metadata page (magic at offset 12, page size at 20), then pages with a
    26-byte header (prev_pgno 12, next_pgno 16, entries/offset-or-length 20/22, type 25). A header blob
    is bigger than a page, so each one is an overflow chain: the chain's first page is one no other
    overflow page points to; its bytes are each page's first ``hf_offset`` bytes after the header."""
    meta = os.pread(fd, 512, 0)
    if len(meta) < 32:
        raise ValueError(f"{where}: too short for a Berkeley DB file")
    for order in ("<", ">"):
        magic, = struct.unpack_from(order + "I", meta, 12)
        if magic == BDB_HASH_MAGIC:
            break
    else:
        raise ValueError(f"{where}: not a Berkeley DB hash database")
    page_size, = struct.unpack_from(order + "I", meta, 20)
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise ValueError(f"{where}: bad page size {page_size}")
    pages = min(st.st_size // page_size, BDB_MAX_PAGES)
    nexts: dict[int, tuple[int, int]] = {}  # overflow page -> (next page, bytes on it)
    pointed: set[int] = set()
    inline: list[bytes] = []  # headers small enough to sit on a hash page
    for pgno in range(1, pages):
        if pgno % 4096 == 0:
            ctx.check()
        head = os.pread(fd, 26, pgno * page_size)
        if len(head) == 26 and head[25] in BDB_P_HASH:
            inline.extend(_hash_page_data(os.pread(fd, page_size, pgno * page_size), order, page_size))
            continue
        if len(head) < 26 or head[25] != BDB_P_OVERFLOW:
            continue
        next_pgno, = struct.unpack_from(order + "I", head, 16)
        length, = struct.unpack_from(order + "H", head, 22)
        if length > page_size - 26:
            continue
        nexts[pgno] = (next_pgno, length)
        if next_pgno:
            pointed.add(next_pgno)
    db = PackageDB(kind="rpm-bdb", source=where)
    normal = _Normalizer(ctx)

    def chains() -> Iterator[tuple[int, bytes]]:
        yield from ((0, blob) for blob in inline)
        for first in sorted(set(nexts) - pointed):
            chunks, total, pgno, seen = [], 0, first, set()
            while pgno and pgno in nexts and pgno not in seen and total <= MAX_HEADER_BYTES:
                seen.add(pgno)  # a hostile chain may loop: each page is read once
                next_pgno, length = nexts[pgno]
                chunks.append(os.pread(fd, length, pgno * page_size + 26))
                total += length
                pgno = next_pgno
            if total <= MAX_HEADER_BYTES:
                yield first, b"".join(chunks)

    for first, blob in chains():
        ctx.check()
        if len(blob) < 8:
            continue
        try:
            header = parse_header(blob)
        except ValueError:
            continue  # an overflow item that is not a header (a long index key)
        if TAG_NAME not in header:
            continue
        try:
            _add_header(db, header, keep, normal)
        except (ValueError, TypeError, IndexError) as exc:
            problems.append(Problem(f"rpm header on page {first or 'a hash page'} not parsed: {exc}"[:300], path=where,
                                    level="warning"))
            db.complete = False
        if db.packages > MAX_PACKAGES:
            db.complete = False
            break
    if not db.packages:
        raise ValueError(f"{where}: no package header found")
    return db


def _hash_page_data(page: bytes, order: str, page_size: int) -> Iterator[bytes]:
    """The data items kept on a hash page (key/data pairs: odd index entries), each H_KEYDATA item a type
    byte and its bytes, laid out from the page's end downwards."""
    if len(page) < 26:
        return
    entries, = struct.unpack_from(order + "H", page, 20)
    entries = min(entries, (page_size - 26) // 2)
    offsets = [struct.unpack_from(order + "H", page, 26 + 2 * i)[0] for i in range(entries)]
    for i in range(1, entries, 2):
        start, end = offsets[i], (offsets[i - 1] if i else page_size)
        if 26 + 2 * entries <= start < end <= page_size and page[start] == BDB_H_KEYDATA and end - start > 9:
            yield page[start + 1:end]


