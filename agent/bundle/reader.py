"""The one reader of our bundle format on the responder's side: bounded, and strict about names.

A bundle comes from a machine the attacker owned, and anyone can seal one, so every responder tool
(verify, analyze, report, timeline, rank) reads bundles through this module and nothing else:

- **Bounded.** Decompression runs in steps of at most ``INFLATE_STEP`` output bytes (zlib's
  ``max_length``), so a gzip bomb costs time, never memory; a pax or GNU long-name header over
  ``tarformat.PAX_CAP`` (1 MiB) is refused before it is read; member content is handed out in chunks,
  never whole, except small JSON members under a cap; a JSON Lines line over ``LINE_CAP`` is cut and
  flagged, never loaded; a JSON document is parsed only when its estimated cost in objects fits a
  budget, and a manifest is read one entry at a time.
- **Strict names.** Every member is checked (``member_problem``): no ``..``, empty or ``.`` component,
  no leading ``/``, no NUL or control character (C0, DEL, C1), only regular files and symbolic links,
  links only among the raw copies (``fs/$rootfs$/``) and never leading out of them, and only the
  names a collector writes in that place. A refused member is never read, written or followed: the
  tools name it as a problem and go on.
- **Only regular files.** Paths given by the user are opened only when they are regular files (a
  FIFO or ``/dev/zero`` would block or never end); folder walks take regular files only, not links.

Also here: the helpers that keep what a tool prints inert (``shown``, ``dumps``): a bundle's strings
go to terminals, JSON, CSV and bodyfiles, and must not steer any of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple

from agent.bundle import tarformat
from agent.bundle.tarformat import Header
from agent.bundle.writer import GZIP_HEADER, MANIFEST_NAME, gzip_seal_member, unsafe_name_reason

READ_CHUNK = 1 << 20  # content handed out per read
FILE_CHUNK = 256 << 10  # compressed bytes read from the file per step
INFLATE_STEP = 1 << 20  # the most decompressed bytes one zlib step may produce
LINE_CAP = 1 << 20  # a JSON Lines line longer than this is cut and flagged
JSON_CAP = 16 << 20  # small JSON members (custody, verdict, signature) read whole up to this size
MANIFEST_CAP = 64 << 20  # the manifest (read whole, parsed one entry at a time)
JSON_BUDGET = 64 << 20  # estimated bytes of Python objects one JSON document may become
ENTRY_CAP = 64 << 10  # one manifest entry
FIELD_CAP = 1 << 20  # one top-level manifest field
TRAILING_CAP = 16 << 20  # bytes after a bundle's end still hashed for its SHA-256
STREAM_CACHE_BUDGET = 48 << 20  # compressed record streams a BundleView keeps in memory
ROW_BUDGET = 96 << 20  # estimated memory of the records a BundleView hands out, over all its streams
REDUCED_MANIFEST_CAP = 16 << 20  # manifest entries a BundleView hands to the rules engine

FS_ROOT = "fs/$rootfs$/"
# The names of our own members, spelled here (and in the writer) only: the responder tools ask for them.
ARTIFACTS_PREFIX = "triagent/artifacts/"
CUSTODY_NAME = "triagent/custody.json"
VERDICT_NAME = "triagent/verdict.json"
LOG_NAME = "triagent/collection.log.jsonl"
# a record stream: triagent/artifacts/<stream>.jsonl, then <stream>.partNNN.jsonl when it was split
STREAM_MEMBER = re.compile(r"triagent/artifacts/(?P<stream>.+?)(?:\.part(?P<part>\d+))?\.jsonl", re.DOTALL)
# Where each collector writes (README's bundle table); anything else is a name no collector emits.
LAYOUT = re.compile(
    r"fs/\$rootfs\$/.+"
    r"|memory/[^/]+\.(?:lime|avml)(?:\.part\d{4,})?"
    r"|symbols/linux/[^/]+\.json(?:\.xz)?"
    r"|symbols/linux/[^/]+-btf\.inputs/(?:vmlinux\.btf|kallsyms|version|config)"
    r"|triagent/artifacts/[^/]+\.jsonl"
    r"|triagent/(?:collection\.log\.jsonl|custody\.json|custody\.jsonld|manifest\.json|manifest\.sig\.json"
    r"|seal\.json|verdict\.json)", re.DOTALL)


class BundleError(ValueError):
    """The bundle cannot be read on from here (damaged or hostile structure); the message names where."""


class TooLarge(BundleError):
    pass


# --- inert text -------------------------------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_ALL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group(0)):04x}"


def shown(value: Any, limit: int | None = None, keep_newlines: bool = False) -> str:
    """Text that a terminal, a log line or a table shows as it is: control and escape characters (C0,
    DEL, C1, line separators, bidirectional overrides) written as ``\\u001b``; cut to ``limit``."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return (_CONTROL if keep_newlines else _CONTROL_ALL).sub(_escape, text)


def quoted(value: Any, limit: int = 300) -> str:
    """A member name or other bundle string inside a message: quoted and inert."""
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    text = repr(str(value)[:limit] + ("…" if len(str(value)) > limit else ""))
    return _CONTROL_ALL.sub(_escape, text)


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def dumps(obj: Any, **kw: Any) -> str:
    """json.dumps with ensure_ascii=False that still escapes what a terminal would obey: JSON escapes C0
    controls by itself, but lets DEL, C1 controls (U+0080-U+009F: 8-bit CSI...), line separators and
    bidirectional overrides through raw."""
    kw.setdefault("ensure_ascii", False)
    return _JSON_UNSAFE.sub(_escape, json.dumps(obj, **kw))


# --- paths and folders -----------------------------------------------------------------------------

def open_regular(path: str) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file (following links given by the user): a FIFO
    is not waited on, a device is not read. Raises OSError (or IsADirectoryError) otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path!r} is not a regular file ({_kind(st.st_mode)})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def is_regular(path: str) -> bool:
    """A regular file itself, not a link to one (for files found in a folder, not named by the user)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def walk_regular(folder: str, skip: Callable[[str], bool] = lambda _p: False,
                 skipped: list[str] | None = None) -> Iterator[str]:
    """Regular files under ``folder``, sorted, never through a link; other entries (FIFOs, devices, links)
    are listed in ``skipped``."""
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not skip(os.path.join(here, d))
                         and not os.path.islink(os.path.join(here, d)))
        for name in sorted(files):
            path = os.path.join(here, name)
            if is_regular(path):
                yield path
            elif skipped is not None:
                skipped.append(path)


# --- names ----------------------------------------------------------------------------------------

_C0 = re.compile(rb"[\x00-\x1f\x7f]")
_C1 = re.compile(rb"\xc2[\x80-\x9f]")  # U+0080-U+009F in UTF-8 (0xc2 is never a continuation byte)


def _control_reason(raw: bytes) -> str | None:
    if _C0.search(raw):
        return "control character"
    if _C1.search(raw):
        return "C1 control character"
    return None


def name_problem(raw: bytes) -> str | None:
    reason = unsafe_name_reason(raw) or _control_reason(raw)
    return f"unsafe name ({reason})" if reason else None


def link_problem(name: str, target: bytes) -> str | None:
    """A link is kept as evidence among the raw copies only. Its target is read in the evidence's own
    namespace, as the collector and dissect.target read it: an absolute target names a path under
    ``fs/$rootfs$``; a relative one must not climb out of ``fs/$rootfs$`` from the link's folder."""
    if not name.startswith(FS_ROOT):
        return "a symbolic link outside fs/$rootfs$/ (only raw copies may be links)"
    if not target:
        return "a symbolic link with an empty target"
    reason = "NUL byte" if b"\0" in target else _control_reason(target)
    if reason:
        return f"a symbolic link whose target has a {reason}"
    if target.startswith(b"/"):
        return None
    depth = name[len(FS_ROOT):].count("/")  # folders between fs/$rootfs$ and the link
    for part in target.split(b"/"):
        if part == b"..":
            depth -= 1
            if depth < 0:
                return f"a symbolic link leading outside the bundle ({quoted(target)})"
        elif part not in (b"", b"."):
            depth += 1
    return None


def member_problem(header: Header) -> str | None:
    """Why a member is refused (None when it is one our collectors write), for every tool alike."""
    reason = name_problem(header.name)
    if reason:
        return reason
    name = os.fsdecode(header.name)
    if header.typeflag == tarformat.SYMTYPE:
        return link_problem(name, header.linkname)
    if header.typeflag not in (tarformat.REGTYPE, tarformat.AREGTYPE):
        kinds = {b"1": "hard link", b"3": "character device", b"4": "block device", b"5": "directory", b"6": "FIFO"}
        kind = kinds.get(header.typeflag, f"tar entry type {header.typeflag!r}")
        return f"a {kind}: not in the bundle format (regular files and links only)"
    if not LAYOUT.fullmatch(name):
        return ("not a name any collector writes there (fs/$rootfs$/…, memory/<host>.lime|avml[.partNNNN], "
                "symbols/linux/…, triagent/…)")
    return None


# --- bytes of the tar -------------------------------------------------------------------------------

class _Source:
    """Uncompressed tar bytes of a bundle file, through a bounded gzip decoder when it is compressed.

    Strict (verify): exactly our gzip header, a raw deflate stream with its CRC-32 and length, then our
    gzip seal member over every compressed byte. Lenient: any gzip framing, members concatenated."""

    def __init__(self, f: Any, strict: bool, hash_file: bool):
        self.f = f
        self.strict = strict
        self.file_sha256 = hashlib.sha256() if hash_file else None
        self.file_bytes = 0
        self.position = 0  # offset in the uncompressed tar
        self._buf = b""
        self._off = 0
        self._tail = b""  # input the inflater has not consumed yet (max_length stopped it)
        self._raw = b""  # the file chunk being inflated
        self._done = False
        try:
            self._seekable = not hash_file and f.seekable()
        except (AttributeError, OSError, ValueError):
            self._seekable = False
        head = self._read_file(len(GZIP_HEADER))
        self.gzip = head[:2] == b"\x1f\x8b"
        if not self.gzip:
            self._buf = head
            return
        if strict:
            if head != GZIP_HEADER:
                raise BundleError("gzip header altered (not the one triagent writes)")
            self._inflate = zlib.decompressobj(-15)
            self._sealed_part = hashlib.sha256(head)
            self._crc = 0
            self._size = 0
        else:
            self._inflate = zlib.decompressobj(31)
            self._tail = head
            self._raw = head

    def _read_file(self, n: int) -> bytes:
        data = self.f.read(n)
        if self.file_sha256 is not None:
            self.file_sha256.update(data)
        self.file_bytes += len(data)
        return data

    def _fill(self) -> bool:
        """Next piece of tar bytes into the buffer; False at the end of the tar stream."""
        if self._done:
            return False
        if not self.gzip:
            raw = self._read_file(READ_CHUNK)
            if not raw:
                self._done = True
                return False
            self._buf, self._off = raw, 0
            return True
        if not self._tail:
            raw = self._read_file(FILE_CHUNK)
            if not raw:
                if self.strict or not self._inflate.eof:
                    raise BundleError("compressed stream truncated")
                self._done = True
                return False
            self._raw = self._tail = raw
        try:
            data = self._inflate.decompress(self._tail, INFLATE_STEP)
        except zlib.error as exc:
            raise BundleError(f"compressed stream damaged ({exc})") from None
        self._tail = self._inflate.unconsumed_tail
        self._buf, self._off = data, 0
        if self.strict:
            self._crc = zlib.crc32(data, self._crc)
            self._size += len(data)
            if self._inflate.eof:
                self._strict_end()
            elif not self._tail:
                self._sealed_part.update(self._raw)
        elif self._inflate.eof:
            unused = self._inflate.unused_data
            if unused.strip(b"\0"):  # another gzip member follows (ours: the empty seal member)
                self._inflate = zlib.decompressobj(31)
                self._raw = self._tail = unused
            elif not unused and (more := self._read_file(FILE_CHUNK)):
                self._inflate = zlib.decompressobj(31)
                self._raw = self._tail = more
            else:
                self._done = True
        return True

    def _strict_end(self) -> None:
        unused = self._inflate.unused_data
        self._sealed_part.update(self._raw[:len(self._raw) - len(unused)])
        trailer, tail = unused[:8], unused[8:]
        trailer += self._read_file(8 - len(trailer))
        self._sealed_part.update(trailer)
        if trailer != struct.pack("<II", self._crc, self._size & 0xFFFFFFFF):
            raise BundleError("compressed stream CRC/length mismatch")
        # The compressed bytes' own seal covers every file byte before it.
        expected = gzip_seal_member(self._sealed_part.hexdigest())
        if len(tail) <= len(expected):
            tail += self._read_file(len(expected) + 1 - len(tail))
        if tail != expected:
            raise BundleError("compressed bytes altered (gzip seal mismatch: deflate or gzip framing changed)")
        self._done = True
        self._tail = b""

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (fewer only at the end); callers keep ``n`` small."""
        avail = len(self._buf) - self._off
        if n <= avail:
            data = self._buf[self._off:self._off + n]
            self._off += n
            self.position += n
            return data
        parts = []
        need = n
        while need:
            avail = len(self._buf) - self._off
            if not avail:
                if not self._fill():
                    break
                continue
            take = min(avail, need)
            parts.append(self._buf[self._off:self._off + take])
            self._off += take
            need -= take
        data = b"".join(parts)
        self.position += len(data)
        return data

    def skip(self, n: int) -> int:
        """Discard ``n`` bytes (seeking an uncompressed file when nothing hashes them); the bytes skipped."""
        avail = len(self._buf) - self._off
        if n <= avail:
            self._off += n
            self.position += n
            return n
        skipped = avail
        self._off = len(self._buf)
        if not self.gzip and self._seekable:
            here = self.f.tell()
            end = self.f.seek(0, os.SEEK_END)
            target = min(end, here + n - skipped)
            self.f.seek(target)
            skipped += target - here
            self.position += skipped
            return skipped
        self.position += skipped
        while skipped < n:
            got = len(self.read(min(READ_CHUNK, n - skipped)))
            if not got:
                break
            skipped += got
        return skipped

    def at_end(self) -> bool:
        """True when no tar byte is left (reading on to find out)."""
        if len(self._buf) - self._off:
            return False
        while not (len(self._buf) - self._off):
            if not self._fill():
                return True
        return False

    def drain_file(self, cap: int = TRAILING_CAP) -> bool:
        """Read (and hash) what is left of the file, up to ``cap`` bytes; False when more was left."""
        left = cap
        while left > 0:
            data = self._read_file(min(READ_CHUNK, left))
            if not data:
                return True
            left -= len(data)
        return not self._read_file(1)


# --- members --------------------------------------------------------------------------------------

class Member:
    """One member as the reader meets it. Its content can be read while it is the current member."""

    def __init__(self, reader: BundleReader, header: Header, offset: int):
        self._reader = reader
        self.header = header
        self.raw_name = header.name
        self.name = os.fsdecode(header.name)
        self.offset = offset  # where its header(s) start in the tar
        self.kind = {tarformat.REGTYPE: "file", tarformat.AREGTYPE: "file", tarformat.SYMTYPE: "symlink"}.get(
            header.typeflag, "other")
        self.size = tarformat.content_size(header)
        self.target = os.fsdecode(header.linkname) if self.kind == "symlink" else None
        self.problem = member_problem(header)
        self.remaining = self.size
        self.digest = hashlib.sha256() if reader.hash_members else None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def is_file(self) -> bool:
        return self.kind == "file" and self.problem is None

    def _check_current(self) -> None:
        if self._reader._current is not self:
            raise BundleError(f"member {quoted(self.name)} is no longer readable (the reader moved on)")

    def read(self, n: int = READ_CHUNK) -> bytes:
        """Up to ``n`` (at most READ_CHUNK) bytes of content; b"" at its end."""
        n = min(n, READ_CHUNK, self.remaining)
        if n <= 0:
            return b""
        self._check_current()
        data = self._reader.src.read(n)
        if len(data) < n:
            raise BundleError(f"member {quoted(self.name)}: the bundle ends inside its content")
        if self.digest is not None:
            self.digest.update(data)
        self.remaining -= n
        return data

    def chunks(self) -> Iterator[bytes]:
        while data := self.read():
            yield data

    def read_all(self, cap: int = JSON_CAP) -> bytes:
        if self.size > cap:
            raise TooLarge(f"member {quoted(self.name)}: {self.size} bytes, more than the {cap}-byte cap")
        return b"".join(self.chunks())

    def json(self, cap: int = JSON_CAP, budget: int = JSON_BUDGET) -> Any:
        """The member parsed as one JSON document (bounded: TooLarge or ValueError otherwise)."""
        return loads_bounded(self.read_all(cap), budget)

    def lines(self, cap: int = LINE_CAP) -> Iterator[tuple[int, bytes, bool]]:
        return iter_lines(self.chunks(), cap)

    @property
    def stream(self) -> str | None:
        """The record stream this member holds (its ``.partNNN`` dropped), or None."""
        return stream_of(self.name)

    def rows(self, parse: bool = True) -> Iterator[Row]:
        """Its lines as Rows (each cut at LINE_CAP), parsed as JSON Lines records unless ``parse`` is False."""
        return rows(self.lines(LINE_CAP), parse)

    def finish(self) -> None:
        """Pass over what is left of the content and its padding."""
        reader = self._reader
        if self.remaining:
            self._check_current()
            if self.digest is not None or reader.strict:
                while self.read():
                    pass
            else:
                skipped = reader.src.skip(self.remaining)
                if skipped < self.remaining:
                    raise BundleError(f"member {quoted(self.name)}: the bundle ends inside its content")
                self.remaining = 0
        padding = tarformat.pad(self.size)
        if padding and reader._current is self:
            if reader.strict:
                data = reader.src.read(padding)
                if len(data) != padding or data.strip(b"\0"):
                    raise BundleError(f"member {quoted(self.name)}: padding after its content altered")
            elif reader.src.skip(padding) < padding:
                raise BundleError(f"member {quoted(self.name)}: the bundle ends inside its content")
        reader._current = None

    @property
    def sha256(self) -> str | None:
        return self.digest.hexdigest() if self.digest is not None else None


class BundleReader:
    """The members of a bundle, in order, one at a time.

    ``strict`` (verify): canonical headers, our own gzip framing and seal, zero padding, and the archive's
    end exactly where the writer puts it. Without it any ustar/pax tar (gzip or not) is read, up to its
    end-of-archive marker. Either way the limits of this module hold. Iterating raises BundleError where
    the bundle cannot be read on; refused members are yielded with ``problem`` set (``accepted()`` skips
    them, naming each in ``problems``)."""

    def __init__(self, source: str | BinaryIO, *, strict: bool = False, hash_members: bool = False,
                 hash_file: bool = False):
        self.path = source if isinstance(source, str) else getattr(source, "name", "-")
        self._owned = isinstance(source, str)
        self.f = open_regular(source) if isinstance(source, str) else source
        self.strict = strict
        self.hash_members = hash_members
        self.problems: list[str] = []
        self.refused = 0
        self.ended = False
        self.last_name = "(start of bundle)"
        self._current: Member | None = None
        self._links: set[str] = set()
        try:
            self.src = _Source(self.f, strict, hash_file)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._owned:
            self.f.close()

    def __enter__(self) -> BundleReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[Member]:
        while not self.ended:
            if self._current is not None:
                self._current.finish()
            offset = self.src.position
            try:
                parsed = tarformat.decode(self.src.read, canonical=self.strict)
            except tarformat.TarFormatError as exc:
                raise BundleError(f"header of the member after {quoted(self.last_name)}: {exc}") from None
            if parsed is None:
                self.ended = True
                self._end()
                return
            member = Member(self, parsed[0], offset)
            if member.problem is None and self._links:
                folder = member.name
                while "/" in folder:
                    folder = folder.rsplit("/", 1)[0]
                    if folder in self._links:
                        member.problem = f"its path passes through the link member {quoted(folder)}"
                        break
            if member.kind == "symlink" and member.problem is None and len(self._links) < 1_000_000:
                self._links.add(member.name)
            self._current = member
            yield member
            self.last_name = member.name

    def accepted(self) -> Iterator[Member]:
        """The members every tool may use; each refused one becomes a named problem."""
        for member in self:
            if member.problem:
                self.refused += 1
                if self.refused <= 200:
                    self.problems.append(f"member {quoted(member.name)} refused: {member.problem}")
                elif self.refused == 201:
                    self.problems.append("more members refused (only the first 200 are named)")
                continue
            yield member

    def _end(self) -> None:
        if not self.strict:
            return
        # the writer ends with two zero blocks and pads to a full 10 KiB record: exactly that, then nothing
        padding = tarformat.BLOCK + (-(self.src.position + tarformat.BLOCK) % tarformat.RECORD)
        data = self.src.read(padding)
        if len(data) != padding or data.strip(b"\0"):
            raise BundleError(f"non-zero bytes or a short record after the end-of-archive marker "
                              f"(after {quoted(self.last_name)})")
        if not self.src.at_end():
            raise BundleError(f"data after the end of the archive (after {quoted(self.last_name)})")


def iter_lines(chunks: Iterable[bytes], cap: int = LINE_CAP) -> Iterator[tuple[int, bytes, bool]]:
    """(number, line without its newline, cut) of newline-separated text given in chunks; a line longer
    than ``cap`` bytes is given cut to ``cap`` with ``cut`` set, and the rest of it is never kept."""
    number = 0
    pending = bytearray()
    cut = False
    for chunk in chunks:
        parts = chunk.split(b"\n")
        for index, part in enumerate(parts):
            if not cut:
                room = cap - len(pending)
                if len(part) > room:
                    pending += part[:room]
                    cut = True
                else:
                    pending += part
            if index < len(parts) - 1:
                number += 1
                yield number, bytes(pending), cut
                pending.clear()
                cut = False
    if pending or cut:
        yield number + 1, bytes(pending), cut


def loads_bounded(data: bytes | str, budget: int = JSON_BUDGET) -> Any:
    """json.loads, refused (ValueError) when the objects it would build could exceed ``budget`` bytes: a
    document of 60 MB of ``{},`` would become 1.5 GB of dicts. The estimate counts every container and
    value separator, as a parser would allocate them."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    cost = (2 * len(raw) + 240 * raw.count(b"{") + 80 * raw.count(b"[") + 72 * raw.count(b",")
            + 40 * raw.count(b":"))
    if cost > budget:
        raise ValueError(f"JSON document too costly to parse ({len(raw)} bytes, about {cost >> 20} MiB of objects)")
    try:
        return json.loads(data)
    except RecursionError:  # nesting deeper than the parser recurses: a hostile document, not a crash
        raise ValueError("JSON document nested too deeply to parse") from None



# --- record streams: the one way to find them and read their records -----------------------------------

def stream_of(name: str) -> str | None:
    """The stream a member holds (``triagent/artifacts/<stream>[.partNNN].jsonl``), else None."""
    match = STREAM_MEMBER.fullmatch(name)
    return match.group("stream") if match else None


def stream_member(stream: str) -> str:
    """The name of a stream's (first) member."""
    return f"{ARTIFACTS_PREFIX}{stream}.jsonl"


def stream_members(names: Iterable[str], stream: str | None = None) -> list[tuple[str, str]]:
    """(member, stream) of the record-stream members among ``names`` (only ``stream``'s when given): each
    stream's parts in order (its unnumbered member first, then by part number, not by text: part1000
    comes after part999), streams by name."""
    found = []
    for name in names:
        match = STREAM_MEMBER.fullmatch(name)
        if match and (stream is None or match.group("stream") == stream):
            found.append((match.group("stream"), int(match.group("part") or -1), name))
    found.sort()
    return [(name, found_stream) for found_stream, _, name in found]


def parse_record(raw: bytes | str) -> dict[str, Any] | None:
    """One JSON Lines record: the object, or None when the line is not a JSON object (garbage, an array,
    or nested deeper than the parser recurses: a line of 100 000 "[" raises RecursionError, not
    ValueError, and must cost only itself)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class Row(NamedTuple):
    """One line of a JSON Lines member: its 1-based number, its bytes (cut to LINE_CAP when ``cut``),
    and its record (None when it is not a JSON object, was cut, or was not asked to be parsed)."""

    number: int
    raw: bytes
    cut: bool
    record: dict[str, Any] | None


def rows(lines: Iterable[tuple[int, bytes, bool]], parse: bool = True) -> Iterator[Row]:
    """The Rows of (number, line, cut) lines (``iter_lines``, ``Member.lines``); a cut line is never parsed."""
    for number, raw, cut in lines:
        yield Row(number, raw, cut, parse_record(raw) if parse and not cut else None)


def stream_rows(bundle: Any, stream: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(member, line, record) of a record stream, its parts in order; lines that are not a JSON object, and
    lines over LINE_CAP, are skipped. Over a BundleView (how analyze, report and rank open bundles) the
    view's bounded reader does it (naming cut lines, within its memory budget); over anything with
    tarfile's ``getnames``/``extractfile`` (tests' hand-made tars) lines are read one at a time."""
    if hasattr(bundle, "stream_rows"):
        yield from bundle.stream_rows(stream)
        return
    for name, _ in stream_members(bundle.getnames(), stream):
        handle = bundle.extractfile(name)
        if handle is None:
            continue
        chunks = iter(lambda h=handle: h.read(READ_CHUNK), b"")
        for row in rows(iter_lines(chunks, LINE_CAP)):
            if row.record is not None:
                yield name, row.number, row.record


# --- the manifest, one entry at a time ----------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _canon(value: Any) -> str:
    """What bundle.canonical_json writes for a value (without the final newline), as text."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Manifest:
    """A manifest's top-level fields, and its member entries read one at a time (``entries()``): a
    bundle's manifest can list many thousands of members, and a hostile one costs many times its size
    once parsed whole. With ``canonical`` it also tells whether the bytes are exactly what
    ``bundle.canonical_json`` writes (``canonical``). Raises ValueError when it is not a JSON object."""

    def __init__(self, data: bytes, canonical: bool = False):
        self.text = data.decode("utf-8")
        self.check = canonical
        self.canonical = canonical
        self.fields: dict[str, Any] = {}
        self.count = 0
        self._members: int | None = None  # index of the members array's "["
        self._end = 0  # index after the members array's "]"
        text = self.text
        i = self._ws(0)
        if text[i:i + 1] != "{":
            raise ValueError("the manifest is not a JSON object")
        i = self._ws(i + 1)
        previous = None
        if text[i:i + 1] == "}":
            i += 1
        else:
            while True:
                start = i
                key, i = self._value(i, FIELD_CAP)
                if not isinstance(key, str):
                    raise ValueError("manifest key is not a string")
                if self.check and (_canon(key) != text[start:i] or (previous is not None and key <= previous)):
                    self.canonical = False
                previous = key
                i = self._ws(i)
                if text[i:i + 1] != ":":
                    raise ValueError("manifest: ':' expected")
                i = self._ws(i + 1)
                if key == "members" and text[i:i + 1] == "[":
                    self._members = i
                    i = self._skip_members(i)
                else:
                    start = i
                    value, i = self._value(i, FIELD_CAP)
                    self.fields[key] = value
                    if self.check and _canon(value) != text[start:i]:
                        self.canonical = False
                i = self._ws(i)
                if text[i:i + 1] == ",":
                    i = self._ws(i + 1)
                    continue
                if text[i:i + 1] == "}":
                    i += 1
                    break
                raise ValueError("manifest: ',' or '}' expected")
        if text[i:].strip(" \t\n\r"):
            raise ValueError("manifest: data after the JSON object")
        if self.check and text[i:] != "\n":
            self.canonical = False

    def _ws(self, i: int) -> int:
        if self.check:
            return i
        return _WS.match(self.text, i).end()  # type: ignore[union-attr]

    def _value(self, i: int, cap: int) -> tuple[Any, int]:
        """One JSON value at ``i``, parsed from a slice of at most ``cap`` characters."""
        text = self.text
        size = min(cap, 1024)
        while True:
            piece = text[i:i + size]  # the slice bounds what one value can cost once parsed
            try:
                value, end = _DECODER.raw_decode(piece)
            except ValueError:
                value, end = None, -1
            whole = i + size >= len(text)
            if end >= 0 and (end < len(piece) or whole):
                return value, i + end
            if whole or size >= cap:
                raise ValueError(f"manifest: unreadable JSON value at character {i}" if whole or end >= 0 else
                                 f"manifest: a JSON value at character {i} longer than {cap} characters")
            size = min(cap, size * 16)

    def _skip_members(self, i: int) -> int:
        for _ in self._walk(i):
            pass
        return self._end

    def _walk(self, i: int) -> Iterator[Any]:
        text = self.text
        i = self._ws(i + 1)
        count = 0
        if text[i:i + 1] == "]":
            self._end = i + 1
            self.count = 0
            return
        while True:
            start = i
            entry, i = self._value(i, ENTRY_CAP)
            if self.check and _canon(entry) != text[start:i]:
                self.canonical = False
            count += 1
            yield entry
            i = self._ws(i)
            if text[i:i + 1] == ",":
                i = self._ws(i + 1)
                continue
            if text[i:i + 1] == "]":
                self._end = i + 1
                self.count = count
                return
            raise ValueError("manifest: ',' or ']' expected in members")

    def entries(self) -> Iterator[Any]:
        """Each member entry, in order (as parsed: not necessarily a dict)."""
        if self._members is None:
            return iter(())
        check, self.check = self.check, False  # already checked while skipping
        try:
            yield from self._walk(self._members)
        finally:
            self.check = check


# --- a bundle as the rules, the checks and YARA read it -----------------------------------------------

class _Packed:
    """A member's content kept zlib-compressed in memory, read back in bounded steps."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.stored = 0
        self._deflate = zlib.compressobj(1)
        self._pending: list[bytes] = []
        self._pending_size = 0

    def add(self, data: bytes) -> None:
        self.size += len(data)
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= 256 << 10:
            self._flush_pending()

    def _flush_pending(self) -> None:
        out = self._deflate.compress(b"".join(self._pending))
        self._pending, self._pending_size = [], 0
        if out:
            self.parts.append(out)
            self.stored += len(out)

    def close(self) -> None:
        self._flush_pending()
        out = self._deflate.flush()
        self.parts.append(out)
        self.stored += len(out)
        del self._deflate

    def chunks(self) -> Iterator[bytes]:
        inflate = zlib.decompressobj()
        for part in self.parts:
            data = inflate.decompress(part, READ_CHUNK)
            while True:
                if data:
                    yield data
                if not inflate.unconsumed_tail:
                    break
                data = inflate.decompress(inflate.unconsumed_tail, READ_CHUNK)


class _ChunkFile(io.RawIOBase):
    """A read-only file over chunks, refusing to hand out more than ``cap`` bytes at once."""

    def __init__(self, chunks: Iterator[bytes], size: int, cap: int, name: str):
        self._chunks = chunks
        self._buf = b""
        self.size = size
        self.cap = cap
        self.name = name

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            if self.size > self.cap:
                raise TooLarge(f"member {quoted(self.name)}: {self.size} bytes, more than the {self.cap}-byte cap")
            n = self.cap
        n = min(n, self.cap)
        parts, have = [self._buf], len(self._buf)
        while have < n:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        data, self._buf = data[:n], data[n:]
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def __iter__(self) -> Iterator[bytes]:  # lines, each cut at LINE_CAP
        for _, line, _ in iter_lines(iter(lambda: self.read(READ_CHUNK), b""), LINE_CAP):
            yield line + b"\n"


class MemberInfo:
    """What tarfile.TarInfo gives the checks and YARA: name, size, isfile()."""

    __slots__ = ("name", "size", "type", "_live")

    def __init__(self, name: str, size: int, kind: str, live: Member | None = None):
        self.name, self.size, self.type, self._live = name, size, kind, live

    def isfile(self) -> bool:
        return self.type == "file"

    def issym(self) -> bool:
        return self.type == "symlink"


class BundleView:
    """A bundle as the rules engine, the host checks and YARA read it: the subset of tarfile.TarFile they
    use (``getnames``, ``getmembers``, ``extractfile``, iteration), built from one bounded pass.

    That pass keeps the names of accepted members, the small JSON members, the manifest's fields and
    (for the rules) its raw-copy entries, and the record streams ``want`` asks for, zlib-compressed in
    memory within STREAM_CACHE_BUDGET (a stream beyond it is read again from the bundle when asked
    for). Records are handed out by ``stream_rows`` within ROW_BUDGET; every refused member, cut line,
    and cut stream is a named problem in ``problems``."""

    JSON_MEMBERS = (CUSTODY_NAME, VERDICT_NAME)

    def __init__(self, path: str, want: Callable[[str], bool] = lambda _stream: True, hash_file: bool = False):
        self.path = path
        self.problems: list[str] = []
        self.infos: list[MemberInfo] = []
        self.docs: dict[str, bytes] = {}
        self.manifest_fields: dict[str, Any] = {}
        self._reduced_manifest: bytes | None = None
        self._streams: dict[str, _Packed] = {}
        self._row_cost: dict[str, int] = {}
        self._cut_streams: set[str] = set()
        self.sha256: str | None = None
        self.size = 0
        self.error: str | None = None
        cached = 0
        reader = BundleReader(path, hash_file=hash_file)
        with reader:
            try:
                for member in reader.accepted():
                    if member.kind != "file":
                        continue
                    name = member.name
                    self.infos.append(MemberInfo(name, member.size, "file"))
                    match = STREAM_MEMBER.fullmatch(name)
                    if name in self.JSON_MEMBERS:
                        self._json_member(member)
                    elif name == MANIFEST_NAME:
                        self._manifest(member)
                    elif (match and want(match.group("stream"))) or name == LOG_NAME:
                        if cached > STREAM_CACHE_BUDGET:
                            continue  # read again from the bundle when asked for
                        packed = _Packed()
                        for number, line, cut in member.lines(LINE_CAP):
                            if cut:  # kept as an empty line (the numbering holds), named once read
                                self._note(f"member {quoted(name)} line {number}: longer than {LINE_CAP} bytes, "
                                           "cut (not read)")
                                packed.add(b"\n")
                            else:
                                packed.add(line + b"\n")
                            if cached + packed.stored > STREAM_CACHE_BUDGET:
                                break
                        packed.close()
                        if member.remaining:
                            self.problems.append(f"member {quoted(name)}: kept on disk only (record streams "
                                                 "over the memory budget are read again when needed)")
                        else:
                            self._streams[name] = packed
                            cached += packed.stored
                if hash_file:
                    if not reader.src.drain_file():
                        self.problems.append("more than 16 MiB after the end of the archive: not hashed")
                    else:
                        self.sha256 = reader.src.file_sha256.hexdigest()  # type: ignore[union-attr]
            except BundleError as exc:
                self.error = str(exc)
            self.size = reader.src.file_bytes
            self.problems += reader.problems
        if self.error:
            self.problems.append(self.error)
        self._index = {i.name: i for i in self.infos}

    def _json_member(self, member: Member) -> None:
        try:
            self.docs[member.name] = member.read_all(JSON_CAP)
        except TooLarge as exc:
            self.problems.append(str(exc))

    def _manifest(self, member: Member) -> None:
        try:
            manifest = Manifest(member.read_all(MANIFEST_CAP))
        except (TooLarge, ValueError) as exc:
            self.problems.append(f"member {quoted(MANIFEST_NAME)}: {exc}")
            return
        self.manifest_fields = manifest.fields
        kept, size, cut = [], 0, False
        try:
            for entry in manifest.entries():
                if isinstance(entry, dict) and str(entry.get("name", "")).startswith("fs/"):
                    text = json.dumps(entry)
                    size += len(text) + 1
                    if size > REDUCED_MANIFEST_CAP:
                        cut = True
                        break
                    kept.append(text)
        except ValueError as exc:
            self.problems.append(f"member {quoted(MANIFEST_NAME)}: {exc}")
        if cut:
            self.problems.append(f"member {quoted(MANIFEST_NAME)}: only its first {len(kept)} raw-copy entries "
                                 f"are used ({REDUCED_MANIFEST_CAP >> 20} MiB of entries)")
        head = json.dumps(manifest.fields)[:-1]
        self._reduced_manifest = (head + (", " if manifest.fields else "") + '"members": [' + ", ".join(kept)
                                  + "]}").encode()

    # tarfile-like ---------------------------------------------------------------------------------

    def __enter__(self) -> BundleView:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._streams.clear()

    def getnames(self) -> list[str]:
        return [i.name for i in self.infos]

    def getmembers(self) -> list[MemberInfo]:
        return list(self.infos)

    def json(self, name: str) -> dict[str, Any]:
        """A small JSON member as a dict ({} when absent, too big or not an object)."""
        if name == MANIFEST_NAME:
            return dict(self.manifest_fields)
        try:
            value = loads_bounded(self.docs[name])
        except (KeyError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def __iter__(self) -> Iterator[MemberInfo]:
        """A fresh pass: each accepted regular member, readable through extractfile while it is current."""
        try:
            with BundleReader(self.path) as reader:
                for member in reader.accepted():
                    if member.kind == "file":
                        yield MemberInfo(member.name, member.size, "file", member)
        except (BundleError, OSError) as exc:
            if str(exc) not in self.problems:
                self.problems.append(str(exc))

    def extractfile(self, member: str | MemberInfo, cap: int = 64 << 20) -> Any:
        name = member if isinstance(member, str) else member.name
        live = None if isinstance(member, str) else member._live
        if name in self.docs:
            return io.BytesIO(self.docs[name])
        if name == MANIFEST_NAME and self._reduced_manifest is not None:
            return io.BytesIO(self._reduced_manifest)
        if name in self._streams:
            packed = self._streams[name]
            return _ChunkFile(packed.chunks(), packed.size, cap, name)
        if live is not None:
            return _ChunkFile(live.chunks(), live.size, cap, name)
        info = self._index.get(name)
        if info is None:
            raise KeyError(f"member {name!r} not found")
        return _ChunkFile(self._pass_chunks(name), info.size, cap, name)

    def _pass_chunks(self, name: str) -> Iterator[bytes]:
        try:
            with BundleReader(self.path) as reader:
                for member in reader.accepted():
                    if member.name == name and member.kind == "file":
                        yield from member.chunks()
                        return
        except (BundleError, OSError) as exc:
            self.problems.append(f"member {quoted(name)}: {exc}")

    def stream_rows(self, stream: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """(member, line, record) of a record stream, its parts in order; lines that are not a JSON
        object are skipped, a line over LINE_CAP is cut and named, and the records handed out stay
        within the view's ROW_BUDGET (the rest of the stream is then named as cut)."""
        names = [name for name, _ in stream_members((i.name for i in self.infos), stream)]
        cost = 0
        for name in names:
            handle = self.extractfile(name)
            for number, line, cut in iter_lines(iter(lambda h=handle: h.read(READ_CHUNK), b""), LINE_CAP):
                if cut:
                    self._note(f"member {quoted(name)} line {number}: longer than {LINE_CAP} bytes, cut (not read)")
                    continue
                cost += 2 * len(line) + 160 * line.count(b"{") + 80 * line.count(b"[") + 64 * line.count(b",") + 200
                spent = sum(c for s, c in self._row_cost.items() if s != stream)
                if spent + cost > ROW_BUDGET:
                    if stream not in self._cut_streams:
                        self._cut_streams.add(stream)
                        self.problems.append(f"stream {quoted(stream)}: records cut at {quoted(name)} line {number} "
                                             f"(the records read exceed the {ROW_BUDGET >> 20} MiB memory budget)")
                    self._row_cost[stream] = max(self._row_cost.get(stream, 0), cost)
                    return
                record = parse_record(line)
                if record is not None:
                    yield name, number, record
        self._row_cost[stream] = max(self._row_cost.get(stream, 0), cost)

    def _note(self, problem: str) -> None:
        if problem not in self.problems and len(self.problems) < 1000:
            self.problems.append(problem)
