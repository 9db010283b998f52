"""A small, strict POSIX (pax) tar encoder and decoder.

We write tar ourselves rather than through ``tarfile`` so that every header byte is ours to hash
and to check: ``verify`` re-encodes each parsed header and demands byte equality, which catches a
change anywhere in a header (pax records included) that a lenient reader would skip over.
Any standard tar reader (GNU tar, Python's tarfile, dissect.target) reads the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BLOCK = 512
RECORD = 20 * BLOCK  # tar pads the archive end to a 10 KiB record, as GNU tar does
REGTYPE, SYMTYPE, PAXTYPE = b"0", b"2", b"x"
_NS = 1_000_000_000


@dataclass
class Header:
    name: bytes
    size: int = 0
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    atime_ns: int | None = None
    ctime_ns: int | None = None
    typeflag: bytes = REGTYPE
    linkname: bytes = b""
    extra: dict[str, bytes] = field(default_factory=dict)  # further pax records (vendor keys)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _fits(value: int, width: int) -> bool:
    return 0 <= value < 8 ** (width - 1)


def _time_text(ns: int) -> bytes:
    sign = b"-" if ns < 0 else b""
    ns = abs(ns)
    return sign + b"%d.%09d" % (ns // _NS, ns % _NS)


def _parse_time(text: bytes) -> int:
    negative = text.startswith(b"-")
    whole, _, frac = text.lstrip(b"-").partition(b".")
    ns = int(whole) * _NS + int((frac + b"000000000")[:9] or b"0")
    return -ns if negative else ns


def _pax_records(records: list[tuple[bytes, bytes]]) -> bytes:
    out = []
    for key, value in records:
        body = b" " + key + b"=" + value + b"\n"
        length = len(body) + 1
        while len(b"%d" % length) + len(body) != length:
            length = len(b"%d" % length) + len(body)
        out.append(b"%d" % length + body)
    return b"".join(out)


def _ustar_block(name: bytes, size: int, mode: int, uid: int, gid: int, mtime: int,
                 typeflag: bytes, linkname: bytes) -> bytes:
    buf = bytearray(BLOCK)
    buf[0:100] = name[:100].ljust(100, b"\0")
    buf[100:108] = _octal(mode & 0o7777, 8)
    buf[108:116] = _octal(uid, 8)
    buf[116:124] = _octal(gid, 8)
    buf[124:136] = _octal(size, 12)
    buf[136:148] = _octal(mtime, 12)
    buf[148:156] = b" " * 8
    buf[156:157] = typeflag
    buf[157:257] = linkname[:100].ljust(100, b"\0")
    buf[257:265] = b"ustar\x0000"
    buf[329:337] = _octal(0, 8)
    buf[337:345] = _octal(0, 8)
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf)


def _ascii_safe(name: bytes) -> bytes:
    try:
        name.decode("ascii")
    except UnicodeDecodeError:
        return b"non-ascii-name"
    return name if len(name) <= 100 else name[-100:].lstrip(b"/")


def pad(size: int) -> int:
    return -size % BLOCK


def encode(h: Header) -> bytes:
    """Header bytes for one member: a pax extended header (when needed) and the ustar block."""
    records: list[tuple[bytes, bytes]] = []
    simple_name = len(h.name) <= 100 and h.name.isascii()
    if not simple_name:
        # raw bytes when the name is not UTF-8 (readers fall back to them; GNU tar warns on hdrcharset)
        records.append((b"path", h.name))
    if h.linkname and (len(h.linkname) > 100 or not h.linkname.isascii()):
        records.append((b"linkpath", h.linkname))
    for key, value, width in ((b"uid", h.uid, 8), (b"gid", h.gid, 8), (b"size", h.size, 12)):
        if not _fits(value, width):
            records.append((key, b"%d" % value))
    if h.mtime_ns % _NS or not _fits(h.mtime_ns // _NS, 12):
        records.append((b"mtime", _time_text(h.mtime_ns)))
    if h.atime_ns is not None:
        records.append((b"atime", _time_text(h.atime_ns)))
    if h.ctime_ns is not None:
        records.append((b"ctime", _time_text(h.ctime_ns)))
    for key, value in sorted(h.extra.items()):
        records.append((key.encode(), value))
    mtime = h.mtime_ns // _NS
    ustar = _ustar_block(
        h.name if simple_name else _ascii_safe(h.name),
        h.size if _fits(h.size, 12) else 0, h.mode,
        h.uid if _fits(h.uid, 8) else 0, h.gid if _fits(h.gid, 8) else 0,
        mtime if _fits(mtime, 12) else 0, h.typeflag,
        h.linkname if len(h.linkname) <= 100 and h.linkname.isascii() else _ascii_safe(h.linkname),
    )
    if not records:
        return ustar
    body = _pax_records(records)
    pax_name = b"PaxHeaders/" + _ascii_safe(h.name.rsplit(b"/", 1)[-1])[:80]
    pax_header = _ustar_block(pax_name, len(body), 0o644, 0, 0, 0, PAXTYPE, b"")
    return pax_header + body + b"\0" * pad(len(body)) + ustar


class TarFormatError(ValueError):
    pass


PAX_CAP = 1 << 20  # a pax (or GNU long-name) header body larger than this is refused, never read
AREGTYPE, LNKTYPE, DIRTYPE, GLOBALTYPE = b"\0", b"1", b"5", b"g"
GNU_LONGNAME, GNU_LONGLINK = b"L", b"K"
_CONTENT_TYPES = (REGTYPE, AREGTYPE, b"7")  # types whose size is followed by content (as tarfile reads them)


def content_size(header: Header) -> int:
    """Bytes of content that follow a header: its size for regular files (and types unknown to tar, as
    tarfile reads them), none for links, directories and devices whatever their size field says."""
    if header.typeflag in _CONTENT_TYPES or header.typeflag not in (SYMTYPE, LNKTYPE, DIRTYPE, b"3", b"4", b"6"):
        return header.size
    return 0


def _field_octal(buf: bytes, start: int, end: int, what: str) -> int:
    text = buf[start:end].split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise TarFormatError(f"bad {what} field") from None


def _field_number(buf: bytes, start: int, end: int, what: str) -> int:
    """Octal, or GNU base-256 (first byte 0x80 / 0xff), as other tar writers use for large values."""
    if buf[start] in (0x80, 0xFF):
        value = int.from_bytes(buf[start + 1:end], "big")
        return value - (1 << (8 * (end - start - 1))) if buf[start] == 0xFF else value
    return _field_octal(buf, start, end, what)


def _parse_block(buf: bytes) -> Header:
    stored = buf[148:156]
    computed = sum(buf[:148]) + 8 * 32 + sum(buf[156:])
    if stored != b"%06o\0 " % computed:
        raise TarFormatError("header checksum mismatch")
    if buf[257:265] != b"ustar\x0000":
        raise TarFormatError("not a POSIX ustar header")
    return Header(
        name=buf[0:100].split(b"\0", 1)[0],
        mode=_field_octal(buf, 100, 108, "mode"),
        uid=_field_octal(buf, 108, 116, "uid"),
        gid=_field_octal(buf, 116, 124, "gid"),
        size=_field_octal(buf, 124, 136, "size"),
        mtime_ns=_field_octal(buf, 136, 148, "mtime") * _NS,
        typeflag=buf[156:157],
        linkname=buf[157:257].split(b"\0", 1)[0],
    )


def _parse_block_lenient(buf: bytes) -> Header:
    """Any ustar header (POSIX or GNU, as tarfile and GNU tar write them): the checksum still has to hold."""
    try:
        stored = int(buf[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        raise TarFormatError("bad checksum field") from None
    if stored not in (sum(buf[:148]) + 8 * 32 + sum(buf[156:]),
                      sum(b - 256 if b > 127 else b for b in buf[:148] + b" " * 8 + buf[156:])):
        raise TarFormatError("header checksum mismatch")
    if buf[257:263] not in (b"ustar\0", b"ustar "):
        raise TarFormatError("not a ustar header")
    name = buf[0:100].split(b"\0", 1)[0]
    prefix = buf[345:500].split(b"\0", 1)[0] if buf[257:263] == b"ustar\0" else b""
    return Header(
        name=prefix + b"/" + name if prefix else name,
        mode=_field_number(buf, 100, 108, "mode"),
        uid=_field_number(buf, 108, 116, "uid"),
        gid=_field_number(buf, 116, 124, "gid"),
        size=_field_number(buf, 124, 136, "size"),
        mtime_ns=_field_number(buf, 136, 148, "mtime") * _NS,
        typeflag=buf[156:157],
        linkname=buf[157:257].split(b"\0", 1)[0],
    )


def _parse_pax(body: bytes) -> list[tuple[bytes, bytes]]:
    records = []
    pos = 0
    while pos < len(body):
        space = body.find(b" ", pos, pos + 24)
        if space < 0:
            raise TarFormatError("bad pax record")
        try:
            length = int(body[pos:space])
        except ValueError:
            raise TarFormatError("bad pax record length") from None
        record = body[pos:pos + length]
        if length <= 0 or len(record) != length or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("bad pax record")
        key, _, value = record[space - pos + 1:-1].partition(b"=")
        records.append((key, value))
        pos += length
    return records


def decode(read_exact, canonical: bool = True, pax_cap: int = PAX_CAP) -> tuple[Header, bytes] | None:
    """Read one member's header(s) with ``read_exact(n) -> bytes``. Returns (header, raw bytes),
    or None at the end-of-archive marker. With ``canonical`` (verify) raises TarFormatError on anything
    that is not exactly what ``encode`` writes; without it reads any ustar/pax header. Either way a pax
    or long-name body over ``pax_cap`` bytes is refused before it is read."""
    raw = read_exact(BLOCK)
    if len(raw) < BLOCK:
        raise TarFormatError("archive ends inside a header")
    if raw == b"\0" * BLOCK:
        return None
    try:
        return _decode(raw, read_exact, canonical, pax_cap)
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, TarFormatError):
            raise
        raise TarFormatError(f"bad pax value ({exc})") from None


def _read_body(read_exact, header: Header, pax_cap: int, what: str) -> bytes:
    if header.size < 0 or header.size > pax_cap:
        raise TarFormatError(f"{what} of {header.size} bytes (more than the {pax_cap}-byte cap): refused")
    body = read_exact(header.size + pad(header.size))
    if len(body) < header.size + pad(header.size):
        raise TarFormatError("archive ends inside a header")
    return body


def _decode(raw: bytes, read_exact, canonical: bool = True, pax_cap: int = PAX_CAP) -> tuple[Header, bytes]:
    parse = _parse_block if canonical else _parse_block_lenient
    header = parse(raw)
    records: list[tuple[bytes, bytes]] = []
    long_name = long_link = None
    for _ in range(8):  # extended headers before the member's own (pax, GNU long names, pax globals)
        if header.typeflag == PAXTYPE or (not canonical and header.typeflag in (GLOBALTYPE, GNU_LONGNAME,
                                                                                 GNU_LONGLINK)):
            body = _read_body(read_exact, header, pax_cap, "extended header")
            raw += body
            if header.typeflag == PAXTYPE:
                records += _parse_pax(body[:header.size])
            elif header.typeflag == GNU_LONGNAME:
                long_name = body[:header.size].split(b"\0", 1)[0]
            elif header.typeflag == GNU_LONGLINK:
                long_link = body[:header.size].split(b"\0", 1)[0]
            block = read_exact(BLOCK)
            if len(block) < BLOCK:
                raise TarFormatError("archive ends inside a header")
            if not canonical and block == b"\0" * BLOCK:
                raise TarFormatError("archive ends after an extended header")
            raw += block
            header = parse(block)
            if canonical:
                break
        else:
            break
    else:
        raise TarFormatError("too many extended headers in a row")
    if canonical and header.typeflag == PAXTYPE:
        raise TarFormatError("header is not in canonical form (altered)")
    if long_name is not None:
        header.name = long_name
    if long_link is not None:
        header.linkname = long_link
    for key, value in records:
        if key == b"path":
            header.name = value
        elif key == b"linkpath":
            header.linkname = value
        elif key in (b"uid", b"gid", b"size"):
            setattr(header, key.decode(), int(value))
        elif key == b"mtime":
            header.mtime_ns = _parse_time(value)
        elif key == b"atime":
            header.atime_ns = _parse_time(value)
        elif key == b"ctime":
            header.ctime_ns = _parse_time(value)
        else:
            header.extra[key.decode("utf-8", "backslashreplace")] = value
    if header.size < 0:
        raise TarFormatError("negative size")
    if canonical and encode(header) != raw:
        raise TarFormatError("header is not in canonical form (altered)")
    return header, raw
