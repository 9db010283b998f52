"""systemd's journal files read without systemd: Debian 12 and Amazon Linux 2023 ship no rsyslog, so
their logins, sudo and su live only in /var/log/journal (or /run/log/journal when it is volatile).

The format is systemd's docs/JOURNAL_FILE_FORMAT.md: a header, then objects (DATA, FIELD, ENTRY, hash
tables, ENTRY_ARRAY, TAG), each with its type and size, 8-byte aligned; an ENTRY lists the offsets of
the DATA objects that hold its ``FIELD=value`` payloads, which may be compressed (XZ, LZ4 or Zstandard);
"compact" files (systemd 252+) use 32-bit offsets. dissect.target's reader walks the entry-array chain
with no bound and decompresses without a limit, so a crafted file on a hostile host could loop for ever
or inflate a field to gigabytes. This one walks the objects in file order (always forward, so it ends),
reads through a bounded block cache (never mmap: a file truncated under a mapping kills the reader
with SIGBUS), caps every object, field and decompression, and counts what it had to skip."""

from __future__ import annotations

import contextlib
import datetime as _dt
import lzma
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

SIGNATURE = b"LPKSHHRH"
HEADER_MIN = 208  # up to tail_entry_monotonic: every journal since systemd 187 has at least this
OBJECT_HEADER = 16
DATA, ENTRY = 1, 3
COMPRESSED_XZ, COMPRESSED_LZ4, COMPRESSED_ZSTD = 1, 2, 4
INCOMPATIBLE_COMPRESSED = 1 | 2 | 8  # XZ, LZ4, ZSTD
INCOMPATIBLE_COMPACT = 16
MAX_OBJECT = 16 << 20  # an ENTRY or DATA object larger than this is not something journald wrote
MAX_ITEMS = 4096  # fields of one entry
FIELD_NAME = re.compile(rb"[A-Z0-9_]{1,64}")

# What the rules read; the other fields (_CAP_EFFECTIVE, _SOURCE_MONOTONIC_TIMESTAMP…) are not decoded.
DEFAULT_FIELDS = frozenset({
    "MESSAGE", "SYSLOG_IDENTIFIER", "SYSLOG_PID", "SYSLOG_FACILITY", "PRIORITY", "_PID", "_UID", "_GID",
    "_COMM", "_EXE", "_CMDLINE", "_HOSTNAME", "_SYSTEMD_UNIT", "_TRANSPORT", "_AUDIT_LOGINUID",
    "_AUDIT_SESSION", "_SYSTEMD_USER_UNIT", "UNIT", "USER_UNIT", "CODE_FUNC", "SYSLOG_RAW",
})


class JournalError(ValueError):
    """Not a journal file, or one whose header cannot be trusted."""


@dataclass
class Counts:
    entries: int = 0
    skipped_objects: int = 0  # objects with a bad size or type, passed over
    undecoded_fields: int = 0  # compressed with a method we cannot decode here, or corrupt
    capped_fields: int = 0  # longer than the field cap once decompressed
    truncated: bool = False  # the objects stop before the arena's end (a file cut short or being written)
    notes: list[str] = field(default_factory=list)


class _Blocks:
    """Positioned reads through a small LRU of fixed blocks: bounded memory, and no mmap."""

    BLOCK = 1 << 18

    def __init__(self, pread: Callable[[int, int], bytes], size: int, blocks: int = 64):
        self.pread, self.size, self.most = pread, size, blocks
        self.cache: OrderedDict[int, bytes] = OrderedDict()

    def _block(self, index: int) -> bytes:
        data = self.cache.get(index)
        if data is None:
            data = self.pread(index * self.BLOCK, self.BLOCK)
            self.cache[index] = data
            if len(self.cache) > self.most:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(index)
        return data

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        length = min(length, self.size - offset)
        if length > 4 * self.BLOCK:  # a large object: one read, not cached
            return self.pread(offset, length)
        parts = []
        while length > 0:
            index, within = divmod(offset, self.BLOCK)
            block = self._block(index)[within:within + length]
            if not block:
                break
            parts.append(block)
            offset += len(block)
            length -= len(block)
        return b"".join(parts)


def _zstd() -> Callable[[bytes, int], bytes] | None:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        try:
            from backports import zstd  # type: ignore[no-redef]  # dissect.target's dependency
        except ImportError:
            return None
    return lambda data, cap: zstd.ZstdDecompressor().decompress(data, max_length=cap)


def _lz4(data: bytes, cap: int) -> bytes:
    """journald's LZ4 payload: the uncompressed size (le64), then one LZ4 block."""
    from dissect.util.compression import lz4

    (size,) = struct.unpack_from("<Q", data)
    if size > cap:
        raise OverflowError(size)
    return bytes(lz4.decompress(data[8:], size))


class JournalFile:
    """Entries of one journal file, oldest first (file order), as ``{FIELD: value}`` plus ``__REALTIME``
    (microseconds since the epoch), ``__SEQNUM``, ``__BOOT_ID`` and ``__OFFSET``."""

    def __init__(self, pread: Callable[[int, int], bytes], size: int, *, fields: frozenset[str] | None = DEFAULT_FIELDS,
                 field_cap: int = 64 << 10, cache_entries: int = 65536, check: Callable[[], None] = lambda: None):
        self.blocks = _Blocks(pread, size)
        self.size, self.fields, self.field_cap, self.check = size, fields, field_cap, check
        self.counts = Counts()
        self._data: OrderedDict[int, tuple[str, str] | None] = OrderedDict()
        self._cache_entries = cache_entries
        header = self.blocks.read(0, 272)
        if len(header) < HEADER_MIN or header[:8] != SIGNATURE:
            raise JournalError("not a journal file (no LPKSHHRH signature)")
        self.compatible, self.incompatible = struct.unpack_from("<II", header, 8)
        self.state = header[16]
        self.machine_id = header[40:56].hex()
        self.header_size, self.arena_size = struct.unpack_from("<QQ", header, 88)
        self.n_entries = struct.unpack_from("<Q", header, 152)[0]
        self.head_realtime, self.tail_realtime = struct.unpack_from("<QQ", header, 184)
        if self.header_size < HEADER_MIN or self.header_size % 8 or self.header_size > size:
            raise JournalError(f"header size {self.header_size} is impossible for a {size}-byte file")
        self.compact = bool(self.incompatible & INCOMPATIBLE_COMPACT)
        unknown = self.incompatible & ~(INCOMPATIBLE_COMPRESSED | INCOMPATIBLE_COMPACT | 4)  # 4: keyed hash
        if unknown:
            self.counts.notes.append(f"unknown incompatible flags 0x{unknown:x}: read as far as they allow")
        self._zstd = _zstd()

    # ---------------------------------------------------------------------------------------------
    def _object(self, offset: int) -> tuple[int, int, int] | None:
        head = self.blocks.read(offset, OBJECT_HEADER)
        if len(head) < OBJECT_HEADER:
            return None
        kind, flags = head[0], head[1]
        (size,) = struct.unpack_from("<Q", head, 8)
        return kind, flags, size

    def entries(self) -> Iterator[dict[str, object]]:
        end = min(self.size, self.header_size + self.arena_size) if self.arena_size else self.size
        offset = self.header_size
        while offset + OBJECT_HEADER <= end:
            self.check()
            found = self._object(offset)
            if found is None:
                self.counts.truncated = True
                break
            kind, _flags, size = found
            if kind == 0 and size == 0:  # unused tail: the arena ends here
                break
            if size < OBJECT_HEADER or offset + size > end:
                self.counts.truncated = True
                self.counts.notes.append(f"object at {offset} claims {size} bytes: stopped there")
                break
            if kind == ENTRY:
                entry = self._entry(offset, size)
                if entry is not None:
                    self.counts.entries += 1
                    yield entry
            offset += (size + 7) & ~7

    def _entry(self, offset: int, size: int) -> dict[str, object] | None:
        if size > MAX_OBJECT or size < 64:
            self.counts.skipped_objects += 1
            return None
        raw = self.blocks.read(offset, size)
        if len(raw) < size:
            self.counts.truncated = True
            return None
        seqnum, realtime, _monotonic = struct.unpack_from("<QQQ", raw, 16)
        entry: dict[str, object] = {"__REALTIME": realtime, "__SEQNUM": seqnum, "__BOOT_ID": raw[40:56].hex(),
                                    "__OFFSET": offset}
        width = 4 if self.compact else 16
        items = min((size - 64) // width, MAX_ITEMS)
        for index in range(items):
            at = 64 + index * width
            (target,) = struct.unpack_from("<I" if self.compact else "<Q", raw, at)
            decoded = self._field(target)
            if decoded is not None:
                name, value = decoded
                entry.setdefault(name, value)  # a repeated field keeps its first value
        return entry

    def _field(self, offset: int) -> tuple[str, str] | None:
        if offset in self._data:
            self._data.move_to_end(offset)
            return self._data[offset]
        decoded = self._decode(offset)
        self._data[offset] = decoded
        if len(self._data) > self._cache_entries:
            self._data.popitem(last=False)
        return decoded

    def _decode(self, offset: int) -> tuple[str, str] | None:
        found = self._object(offset) if offset % 8 == 0 and offset >= self.header_size else None
        if found is None or found[0] != DATA or found[2] > MAX_OBJECT:
            self.counts.skipped_objects += 1
            return None
        _kind, flags, size = found
        start = 72 if self.compact else 64
        if size <= start:
            return None
        compressed = flags & (COMPRESSED_XZ | COMPRESSED_LZ4 | COMPRESSED_ZSTD)
        if not compressed and self.fields is not None:  # the name first: most fields are not wanted
            name = self.blocks.read(offset + start, 65).split(b"=", 1)[0]
            if name.decode("ascii", "replace") not in self.fields:
                return None
        payload = self.blocks.read(offset + start, size - start)
        if compressed:
            try:
                payload = self._inflate(flags, payload)
            except Exception:  # noqa: BLE001 - corrupt or hostile data: this field is lost, the entry stays
                self.counts.undecoded_fields += 1
                return None
            if payload is None:
                self.counts.undecoded_fields += 1
                return None
        name, sep, value = payload.partition(b"=")
        if not sep or not FIELD_NAME.fullmatch(name):
            self.counts.skipped_objects += 1
            return None
        text = name.decode("ascii")
        if self.fields is not None and text not in self.fields:
            return None
        if len(value) > self.field_cap:
            self.counts.capped_fields += 1
            value = value[:self.field_cap]
        return text, value.decode("utf-8", "replace")

    def _inflate(self, flags: int, payload: bytes) -> bytes | None:
        cap = self.field_cap + 66  # the name, "=" and a value at the cap
        if flags & COMPRESSED_XZ:
            return lzma.LZMADecompressor().decompress(payload, max_length=cap)
        if flags & COMPRESSED_LZ4:
            try:
                return _lz4(payload, cap)
            except OverflowError:
                self.counts.capped_fields += 1
                return None
        if self._zstd is None:
            return None
        return self._zstd(payload, cap)


def realtime_utc(microseconds: object) -> str | None:
    if not isinstance(microseconds, int) or microseconds <= 0:
        return None
    try:
        moment = _dt.datetime.fromtimestamp(microseconds / 1e6, _dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@contextlib.contextmanager
def opened(path: str, **options: Any) -> Iterator[JournalFile]:
    """A journal file of the responder's machine (tests, analysis), read by positioned reads."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield JournalFile(lambda offset, length: os.pread(fd, length, offset), os.fstat(fd).st_size, **options)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# The `logs.journal` artifact
# --------------------------------------------------------------------------------------------------

JOURNAL_GLOBS = ("/var/log/journal/*/*.journal", "/var/log/journal/*/*.journal~",
                 "/run/log/journal/*/*.journal", "/run/log/journal/*/*.journal~")


def journal_files(ctx: Any) -> Iterator[tuple[str, os.stat_result] | Any]:
    """(path, stat) of every journal file under the root, newest first (by the last write); Problems
    for what cannot be listed."""
    from collectors.base import Problem
    from collectors.files.fsread import stat_path, walk_glob

    found: dict[str, os.stat_result] = {}
    for pattern in ctx.opt("paths", JOURNAL_GLOBS):
        for hit in walk_glob(ctx, pattern):
            if isinstance(hit, Problem):
                yield hit
                continue
            try:
                where, st = stat_path(ctx, hit)
            except OSError as exc:
                yield Problem.from_os_error(exc, "cannot stat", hit)
                continue
            found[where] = st
    yield from sorted(found.items(), key=lambda item: (-item[1].st_mtime_ns, item[0]))


def record_of(entry: dict[str, object], path: str) -> dict[str, object]:
    """The fields of an entry the rules and a responder read, named like our other log records."""
    def number(name: str) -> int | None:
        value = entry.get(name)
        return int(value) if isinstance(value, str) and value.isdigit() else None

    program = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or ""
    return {"time_utc": realtime_utc(entry.get("__REALTIME")), "host": entry.get("_HOSTNAME"),
            "program": program, "pid": number("SYSLOG_PID") or number("_PID"), "uid": number("_UID"),
            "unit": entry.get("_SYSTEMD_UNIT") or entry.get("UNIT"), "priority": number("PRIORITY"),
            "transport": entry.get("_TRANSPORT"), "message": entry.get("MESSAGE"),
            "exe": entry.get("_EXE"), "boot_id": entry.get("__BOOT_ID"), "seqnum": entry.get("__SEQNUM"),
            "path": path}


def collect(ctx: Any) -> Iterator[Any]:
    """Journal files newest first: the entries of the programs that matter (sshd, sudo, su, logind, the
    kernel, account tools, cloud agents, the logging services) as ``journal`` records, parsed from up to
    ``parse_budget_bytes`` of files; whole files copied raw up to ``copy_budget_bytes`` (a tail would
    lose the header that makes a journal readable)."""
    from collectors.base import Problem, Record
    from collectors.files.fsread import copy_file, open_regular

    wanted = frozenset(ctx.opt("programs", ()))
    parse_budget = int(ctx.opt("parse_budget_bytes", 256 << 20))
    copy_budget = int(ctx.opt("copy_budget_bytes", 64 << 20))
    max_records = int(ctx.opt("max_records", 200_000))
    parsed = copied = records = 0
    for item in journal_files(ctx):
        if isinstance(item, Problem):
            yield item
            continue
        path, st = item
        if parsed + st.st_size <= parse_budget and records < max_records:
            parsed += st.st_size
            try:
                fd, st, path = open_regular(ctx, path)
            except OSError as exc:
                yield Problem.from_os_error(exc, "cannot open", path)
                continue
            try:
                def pread(offset: int, length: int, fd: int = fd, path: str = path) -> bytes:
                    with ctx.blocking(path):
                        return os.pread(fd, length, offset)

                journal = JournalFile(pread, st.st_size, check=ctx.check)
                for entry in journal.entries():
                    program = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM")
                    if wanted and program not in wanted and not (entry.get("_TRANSPORT") == "kernel"
                                                                 and "kernel" in wanted):
                        continue
                    yield Record("journal", record_of(entry, path))
                    records += 1
                    if records >= max_records:
                        yield Problem(f"journal: {max_records} records taken: the older entries are not parsed",
                                      path=path, level="warning")
                        break
                counts = journal.counts
                if counts.truncated or counts.skipped_objects or counts.undecoded_fields or counts.notes:
                    yield Problem("journal read in part", path=path, level="warning",
                                  detail={"entries": counts.entries, "truncated": counts.truncated,
                                          "skipped_objects": counts.skipped_objects,
                                          "undecoded_fields": counts.undecoded_fields,
                                          "capped_fields": counts.capped_fields, "notes": counts.notes[:5]})
            except JournalError as exc:
                yield Problem(f"not a journal file: {exc}", path=path, level="warning")
            except OSError as exc:
                yield Problem.from_os_error(exc, "cannot read", path)
            finally:
                os.close(fd)
        else:
            yield Problem("journal file not parsed: over the parse budget", path=path, level="info",
                          detail={"size": st.st_size, "parse_budget_bytes": parse_budget})
        if copied + st.st_size <= copy_budget:
            copied += st.st_size
            yield from copy_file(ctx, path, st.st_size + 1)
        else:
            yield Problem("journal file not copied: over the copy budget (whole files only)", path=path,
                          level="info", detail={"size": st.st_size, "copy_budget_bytes": copy_budget})
