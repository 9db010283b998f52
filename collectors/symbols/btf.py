"""Dependency-free reader for the BPF Type Format (BTF).

The kernel exports its own type information as BTF in /sys/kernel/btf/vmlinux and in the ``.BTF`` section of
vmlinux.  Format reference: https://docs.kernel.org/bpf/btf.html.  Every malformed input is reported as
:class:`BTFError`; the parser validates all offsets and type references up front so that consumers can walk the
type graph without defensive checks.

Helpers at the bottom find the ``.BTF`` section in an ELF vmlinux and unpack a vmlinux from a bzImage, so an ISF
can also be built from /boot/vmlinuz-* when /sys/kernel/btf is absent.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

__all__ = [
    "BTF",
    "BTFEnumValue",
    "BTFError",
    "BTFMember",
    "BTFParam",
    "BTFType",
    "BTFVarSecInfo",
    "KIND_NAMES",
    "btf_from_blob",
    "elf_section",
    "parse_btf",
    "vmlinux_from_bzimage",
]

BTF_MAGIC = 0xEB9F

KIND_UNKN = 0
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

KIND_NAMES = {
    KIND_UNKN: "UNKN",
    KIND_INT: "INT",
    KIND_PTR: "PTR",
    KIND_ARRAY: "ARRAY",
    KIND_STRUCT: "STRUCT",
    KIND_UNION: "UNION",
    KIND_ENUM: "ENUM",
    KIND_FWD: "FWD",
    KIND_TYPEDEF: "TYPEDEF",
    KIND_VOLATILE: "VOLATILE",
    KIND_CONST: "CONST",
    KIND_RESTRICT: "RESTRICT",
    KIND_FUNC: "FUNC",
    KIND_FUNC_PROTO: "FUNC_PROTO",
    KIND_VAR: "VAR",
    KIND_DATASEC: "DATASEC",
    KIND_FLOAT: "FLOAT",
    KIND_DECL_TAG: "DECL_TAG",
    KIND_TYPE_TAG: "TYPE_TAG",
    KIND_ENUM64: "ENUM64",
}

# INT encoding bits
INT_SIGNED = 1
INT_CHAR = 2
INT_BOOL = 4

# Kinds whose third header word is a size rather than a type reference.
_SIZED_KINDS = frozenset({KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_DATASEC, KIND_FLOAT, KIND_ENUM64})
# Kinds that merely qualify or rename another type; chains of these are followed by BTF.resolve().
MODIFIER_KINDS = frozenset({KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG})

_HEADER_LEN = 24


class BTFError(ValueError):
    """Raised for any truncated, corrupt or unsupported BTF input."""


class BTFMember(NamedTuple):
    name: str
    type: int
    bit_offset: int
    # 0 means "not a bitfield"; only non-zero when the struct's kind_flag is set.
    bitfield_size: int


class BTFEnumValue(NamedTuple):
    name: str
    value: int


class BTFParam(NamedTuple):
    name: str
    type: int


class BTFVarSecInfo(NamedTuple):
    type: int
    offset: int
    size: int


class BTFType:
    """One BTF type record.  Which attributes are meaningful depends on ``kind``."""

    __slots__ = (
        "id",
        "kind",
        "name",
        "kind_flag",
        "vlen",
        "size",
        "type",
        "encoding",
        "int_offset",
        "bits",
        "elem_type",
        "index_type",
        "nelems",
        "members",
        "values",
        "params",
        "linkage",
        "vars",
        "component_idx",
    )

    def __init__(self, type_id: int, kind: int, name: str, kind_flag: int, vlen: int) -> None:
        self.id = type_id
        self.kind = kind
        self.name = name
        self.kind_flag = kind_flag
        self.vlen = vlen
        self.size = 0
        self.type = 0
        self.encoding = 0
        self.int_offset = 0
        self.bits = 0
        self.elem_type = 0
        self.index_type = 0
        self.nelems = 0
        # shared empty tuple: most of the ~100k records have no list, and 4 empty lists each cost ~20 MB
        self.members: Sequence[BTFMember] = ()
        self.values: Sequence[BTFEnumValue] = ()
        self.params: Sequence[BTFParam] = ()
        self.linkage = 0
        self.vars: Sequence[BTFVarSecInfo] = ()
        self.component_idx = -1

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, str(self.kind))

    def __repr__(self) -> str:
        return f"<BTFType #{self.id} {self.kind_name} {self.name!r}>"


class BTF:
    """Parsed BTF: ``types[0]`` is the implicit void type, ids index directly into ``types``."""

    def __init__(self, types: list[BTFType], endian: str, version: int, flags: int) -> None:
        self.types = types
        self.endian = endian
        self.version = version
        self.flags = flags
        self._by_name: dict[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.types)

    def __getitem__(self, type_id: int) -> BTFType:
        if not 0 <= type_id < len(self.types):
            raise BTFError(f"type id {type_id} out of range (have {len(self.types)})")
        return self.types[type_id]

    def __iter__(self) -> Iterator[BTFType]:
        return iter(self.types)

    def by_name(self, name: str, kind: int | None = None) -> list[BTFType]:
        """All types called ``name`` (optionally of one kind), in id order."""
        if self._by_name is None:
            index: dict[str, list[int]] = {}
            for t in self.types:
                if t.name:
                    index.setdefault(t.name, []).append(t.id)
            self._by_name = index
        found = [self.types[i] for i in self._by_name.get(name, ())]
        if kind is not None:
            found = [t for t in found if t.kind == kind]
        return found

    def resolve(self, type_id: int) -> BTFType:
        """Follow typedef/const/volatile/restrict/type_tag links to the underlying type."""
        t = self[type_id]
        # parse_btf() rejects cycles, but BTF objects can also be assembled by hand; stay bounded regardless.
        for _ in range(len(self.types) + 1):
            if t.kind not in MODIFIER_KINDS:
                return t
            t = self[t.type]
        raise BTFError(f"cyclic type chain starting at type id {type_id}")


def parse_btf(data: bytes | bytearray | memoryview) -> BTF:
    """Parse a complete (non-split) BTF blob such as /sys/kernel/btf/vmlinux."""
    mv = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if len(mv) < 8:
        raise BTFError(f"BTF blob too short for a header ({len(mv)} bytes)")
    if mv[0] == 0x9F and mv[1] == 0xEB:
        bo, endian = "<", "little"
    elif mv[0] == 0xEB and mv[1] == 0x9F:
        bo, endian = ">", "big"
    else:
        raise BTFError(f"bad BTF magic {bytes(mv[:2]).hex()}")
    version, flags = mv[2], mv[3]
    if version != 1:
        raise BTFError(f"unsupported BTF version {version}")
    (hdr_len,) = struct.unpack_from(bo + "I", mv, 4)
    if hdr_len < _HEADER_LEN or len(mv) < hdr_len:
        raise BTFError(f"truncated BTF header (hdr_len={hdr_len}, blob={len(mv)} bytes)")
    type_off, type_len, str_off, str_len = struct.unpack_from(bo + "4I", mv, 8)
    end = len(mv) - hdr_len
    if type_off + type_len > end or str_off + str_len > end:
        raise BTFError(
            f"BTF sections exceed blob: types {type_off}+{type_len}, strings {str_off}+{str_len}, data {end} bytes"
        )
    if type_len % 4:
        raise BTFError(f"type section length {type_len} is not a multiple of 4")
    strings = bytes(mv[hdr_len + str_off : hdr_len + str_off + str_len])
    if str_len and strings[0] != 0:
        raise BTFError("string section does not start with an empty string")
    tdata = bytes(mv[hdr_len + type_off : hdr_len + type_off + type_len])
    types = _parse_types(tdata, bo, strings)
    btf = BTF(types, endian, version, flags)
    _validate(btf)
    return btf


def _parse_types(tdata: bytes, bo: str, strings: bytes) -> list[BTFType]:
    """Decode the type section: a run of 12-byte headers, each followed by a kind-specific tail."""
    codec = _Codec.for_order(bo, _name_reader(strings))
    name_at = codec.name_at
    hdr = struct.Struct(bo + "III")
    readers = _TAIL_READERS
    types: list[BTFType] = [BTFType(0, KIND_UNKN, "void", 0, 0)]
    pos = 0
    n = len(tdata)
    tid = 0
    # One pass with locals bound up front: this loop runs ~100k times per kernel and is on the benchmarked path.
    while pos < n:
        tid += 1
        if pos + 12 > n:
            raise BTFError(f"truncated type header for type id {tid} at offset {pos}")
        name_off, info, size_type = hdr.unpack_from(tdata, pos)
        pos += 12
        kind = (info >> 24) & 0x1F
        t = BTFType(tid, kind, name_at(name_off), info >> 31, info & 0xFFFF)
        if kind in _SIZED_KINDS:
            t.size = size_type
        else:
            t.type = size_type
        reader = readers.get(kind)
        if reader is None:
            if kind not in _HEADER_ONLY_KINDS:
                raise BTFError(f"unknown BTF kind {kind} for type id {tid}")
        else:
            try:
                pos = reader(t, tdata, pos, codec)
            except struct.error as exc:
                raise BTFError(f"truncated data for type id {tid} ({KIND_NAMES.get(kind, kind)})") from exc
        types.append(t)
    return types


def _name_reader(strings: bytes) -> Callable[[int], str]:
    """A string-section lookup that checks the offset and memoises, since member names repeat thousands of times."""
    str_len = len(strings)
    name_cache: dict[int, str] = {0: ""}

    def name_at(off: int) -> str:
        cached = name_cache.get(off)
        if cached is not None:
            return cached
        if off >= str_len:
            raise BTFError(f"string offset {off} out of range (string section is {str_len} bytes)")
        nul = strings.find(b"\0", off)
        if nul < 0:
            raise BTFError(f"unterminated string at offset {off}")
        s = strings[off:nul].decode("utf-8", "replace")
        name_cache[off] = s
        return s

    return name_at


class _Codec(NamedTuple):
    """The byte-order-specific decoders and string lookup that every tail reader of one parse shares."""

    u32: struct.Struct
    i32: struct.Struct
    triple: struct.Struct
    pair_fmt: str
    pair_signed_fmt: str
    triple_fmt: str
    name_at: Callable[[int], str]

    @classmethod
    def for_order(cls, bo: str, name_at: Callable[[int], str]) -> _Codec:
        return cls(
            struct.Struct(bo + "I"),
            struct.Struct(bo + "i"),
            struct.Struct(bo + "III"),
            bo + "II",
            bo + "Ii",
            bo + "III",
            name_at,
        )


def _vlen_chunk(tdata: bytes, pos: int, t: BTFType, record_size: int, what: str) -> bytes:
    """The ``vlen`` fixed-size records after a header; *what* names them in the error (``... type id N``)."""
    size = record_size * t.vlen
    chunk = tdata[pos : pos + size]
    if len(chunk) != size:
        raise BTFError(f"truncated {what} {t.id}")
    return chunk


# Each tail reader fills in *t* from the bytes at *pos* and returns the offset just past them; a short read raises
# struct.error, which _parse_types reports as a truncated type.


def _read_int(t: BTFType, tdata: bytes, pos: int, c: _Codec) -> int:
    (enc,) = c.u32.unpack_from(tdata, pos)
    t.encoding = (enc >> 24) & 0x0F
    t.int_offset = (enc >> 16) & 0xFF
    t.bits = enc & 0xFF
    return pos + 4


def _read_array(t: BTFType, tdata: bytes, pos: int, c: _Codec) -> int:
    t.elem_type, t.index_type, t.nelems = c.triple.unpack_from(tdata, pos)
    return pos + 12


def _read_members(t: BTFType, tdata: bytes, pos: int, c: _Codec) -> int:
    chunk = _vlen_chunk(tdata, pos, t, 12, "member list for type id")
    name_at = c.name_at
    # With kind_flag set the offset word packs the bitfield size into its top 8 bits.
    if t.kind_flag:
        t.members = [
            BTFMember(name_at(m_name), m_type, off & 0xFFFFFF, off >> 24)
            for m_name, m_type, off in struct.iter_unpack(c.triple_fmt, chunk)
        ]
    else:
        t.members = [
            BTFMember(name_at(m_name), m_type, off, 0)
            for m_name, m_type, off in struct.iter_unpack(c.triple_fmt, chunk)
        ]
    return pos + len(chunk)


def _read_enum(t: BTFType, tdata: bytes, pos: int, c: _Codec) -> int:
    chunk = _vlen_chunk(tdata, pos, t, 8, "enumerator list for type id")
    name_at = c.name_at
    # kind_flag marks a signed enum.
    fmt = c.pair_signed_fmt if t.kind_flag else c.pair_fmt
    t.values = [BTFEnumValue(name_at(e_name), val) for e_name, val in struct.iter_unpack(fmt, chunk)]
    return pos + len(chunk)


def _read_enum64(t: BTFType, tdata: bytes, pos: int, c: _Codec) -> int:
    chunk = _vlen_chunk(tdata, pos, t, 12, "enumerator list for type id")
    name_at = c.name_at
    signed = t.kind_flag
    values = []
    for e_name, lo, hi in struct.iter_unpack(c.triple_fmt, chunk):
        val = (hi << 32) | lo
        if signed and val >= 1 << 63:
            val -= 1 << 64
        values.append(BTFEnumValue(name_at(e_name), val))
    t.values = values
    return pos + len(chunk)


def _read_params(t: BTFType, tdata: bytes, pos: int, c: _Codec) -> int:
    chunk = _vlen_chunk(tdata, pos, t, 8, "parameter list for type id")
    name_at = c.name_at
    t.params = [BTFParam(name_at(p_name), p_type) for p_name, p_type in struct.iter_unpack(c.pair_fmt, chunk)]
    return pos + len(chunk)


def _read_var(t: BTFType, tdata: bytes, pos: int, c: _Codec) -> int:
    (t.linkage,) = c.u32.unpack_from(tdata, pos)
    return pos + 4


def _read_datasec(t: BTFType, tdata: bytes, pos: int, c: _Codec) -> int:
    chunk = _vlen_chunk(tdata, pos, t, 12, "variable list for DATASEC type id")
    t.vars = [BTFVarSecInfo(*v) for v in struct.iter_unpack(c.triple_fmt, chunk)]
    return pos + len(chunk)


def _read_decl_tag(t: BTFType, tdata: bytes, pos: int, c: _Codec) -> int:
    (t.component_idx,) = c.i32.unpack_from(tdata, pos)
    return pos + 4


_TAIL_READERS: dict[int, Callable[[BTFType, bytes, int, _Codec], int]] = {
    KIND_INT: _read_int,
    KIND_ARRAY: _read_array,
    KIND_STRUCT: _read_members,
    KIND_UNION: _read_members,
    KIND_ENUM: _read_enum,
    KIND_ENUM64: _read_enum64,
    KIND_FUNC_PROTO: _read_params,
    KIND_VAR: _read_var,
    KIND_DATASEC: _read_datasec,
    KIND_DECL_TAG: _read_decl_tag,
}
# Kinds that are all header: a reference or a size, nothing after it.
_HEADER_ONLY_KINDS = frozenset(
    {KIND_PTR, KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FLOAT, KIND_TYPE_TAG}
)


def _refs(t: BTFType) -> list[int]:
    """Type ids a record points at (used for range and cycle checks)."""
    k = t.kind
    if k in MODIFIER_KINDS or k in (KIND_PTR, KIND_FUNC, KIND_VAR, KIND_DECL_TAG):
        return [t.type]
    if k == KIND_ARRAY:
        return [t.elem_type, t.index_type]
    if k in (KIND_STRUCT, KIND_UNION):
        return [m.type for m in t.members]
    if k == KIND_FUNC_PROTO:
        return [t.type, *(p.type for p in t.params)]
    if k == KIND_DATASEC:
        return [v.type for v in t.vars]
    return []


def _validate(btf: BTF) -> None:
    types = btf.types
    count = len(types)
    for t in types:
        for ref in _refs(t):
            if ref >= count:
                raise BTFError(f"type id {t.id} ({t.kind_name} {t.name!r}) references type id {ref} out of range")
    # A legal C type graph only loops through a struct/union (e.g. a list_head pointing at itself).  Any other
    # loop, such as typedef A -> typedef B -> typedef A, would send every resolver into an endless walk.
    state = bytearray(count)  # 0 = unseen, 1 = on stack, 2 = done
    breakers = (KIND_STRUCT, KIND_UNION, KIND_DATASEC)
    for root in range(1, count):
        if state[root]:
            continue
        stack: list[tuple[int, Iterator[int]]] = [(root, iter(_refs(types[root])))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                continue
            if nxt == 0 or types[nxt].kind in breakers:
                continue
            if state[nxt] == 1:
                raise BTFError(f"cyclic type reference through type id {nxt} ({types[nxt].kind_name})")
            if state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(_refs(types[nxt]))))


# ---------------------------------------------------------------------------------------------------------------
# Containers: ELF vmlinux and bzImage


def elf_section(data: bytes | memoryview, name: str) -> memoryview | None:
    """Return the contents of ELF section ``name`` (None when absent); BTFError for a malformed ELF."""
    mv = memoryview(data)
    if len(mv) < 0x34 or bytes(mv[:4]) != b"\x7fELF":
        raise BTFError("not an ELF file")
    ei_class, ei_data = mv[4], mv[5]
    bo = "<" if ei_data == 1 else ">" if ei_data == 2 else None
    if bo is None or ei_class not in (1, 2):
        raise BTFError("unsupported ELF class/data encoding")
    try:
        if ei_class == 2:
            (shoff,) = struct.unpack_from(bo + "Q", mv, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(bo + "HHH", mv, 0x3A)
            sh = struct.Struct(bo + "IIQQQQIIQQ")
        else:
            (shoff,) = struct.unpack_from(bo + "I", mv, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(bo + "HHH", mv, 0x2E)
            sh = struct.Struct(bo + "IIIIIIIIII")
        if shentsize < sh.size or shstrndx >= shnum:
            raise BTFError("malformed ELF section header table")
        headers = [sh.unpack_from(mv, shoff + i * shentsize) for i in range(shnum)]
        str_hdr = headers[shstrndx]
        shstr = bytes(mv[str_hdr[4] : str_hdr[4] + str_hdr[5]])
        want = name.encode()
        for h in headers:
            nul = shstr.find(b"\0", h[0])
            if shstr[h[0] : nul] == want:
                if h[1] == 8:  # SHT_NOBITS has no file contents
                    return None
                if h[4] + h[5] > len(mv):
                    raise BTFError(f"ELF section {name} extends past end of file")
                return mv[h[4] : h[4] + h[5]]
    except struct.error as exc:
        raise BTFError("truncated ELF file") from exc
    return None


def _lz4_legacy(payload: memoryview) -> bytes:
    """Decode the LZ4 'legacy' frame the kernel uses for CONFIG_KERNEL_LZ4 (needs cramjam or lz4)."""
    try:
        import cramjam  # type: ignore[import-not-found]

        def block(b: bytes) -> bytes:
            return bytes(cramjam.lz4.decompress_block(b, output_len=8 << 20))
    except ImportError:
        try:
            import lz4.block  # type: ignore[import-not-found]

            def block(b: bytes) -> bytes:
                return lz4.block.decompress(b, uncompressed_size=8 << 20)
        except ImportError as exc:
            raise BTFError("LZ4-compressed kernel: install 'cramjam' or 'lz4' to unpack it") from exc
    out = []
    pos = 4
    while pos + 4 <= len(payload):
        (n,) = struct.unpack_from("<I", payload, pos)
        if n == 0x184C2102:  # concatenated legacy frames repeat the magic
            pos += 4
            continue
        if pos + 4 + n > len(payload):
            break  # the trailing word is the kernel's appended uncompressed size
        try:
            out.append(block(bytes(payload[pos + 4 : pos + 4 + n])))
        except Exception as exc:  # the decoders raise their own private error types
            raise BTFError(f"corrupt LZ4 block at offset {pos}: {exc}") from exc
        pos += 4 + n
    return b"".join(out)


def _zstd(payload: memoryview) -> bytes:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
    except ImportError:
        try:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        except ImportError as exc:
            raise BTFError("zstd-compressed kernel: install 'backports.zstd' to unpack it") from exc
    dec = zstd.ZstdDecompressor()
    return dec.decompress(bytes(payload))


def vmlinux_from_bzimage(data: bytes | memoryview) -> bytes:
    """Unpack the vmlinux ELF embedded in an x86 bzImage (gzip, xz, lzma, bzip2, zstd or lz4)."""
    mv = memoryview(data)
    if len(mv) < 0x250 or bytes(mv[0x202:0x206]) != b"HdrS":
        raise BTFError("not a bzImage (no HdrS boot header)")
    (proto,) = struct.unpack_from("<H", mv, 0x206)
    if proto < 0x208:
        raise BTFError(f"boot protocol {proto:#x} too old to locate the payload")
    setup_sects = mv[0x1F1] or 4
    payload_off, payload_len = struct.unpack_from("<II", mv, 0x248)
    start = (setup_sects + 1) * 512 + payload_off
    payload = mv[start : start + payload_len]
    if len(payload) != payload_len or payload_len < 8:
        raise BTFError("bzImage payload truncated")
    magic = bytes(payload[:6])
    try:
        if magic[:2] == b"\x1f\x8b":
            out = zlib.decompressobj(wbits=31).decompress(bytes(payload))
        elif magic == b"\xfd7zXZ\x00":
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bytes(payload))
        elif magic[:3] == b"\x5d\x00\x00":
            out = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(bytes(payload))
        elif magic[:3] == b"BZh":
            out = bz2.BZ2Decompressor().decompress(bytes(payload))
        elif magic[:4] == b"\x28\xb5\x2f\xfd":
            out = _zstd(payload)
        elif magic[:4] == b"\x02\x21\x4c\x18":
            out = _lz4_legacy(payload)
        else:
            raise BTFError(f"unsupported bzImage compression (magic {magic.hex()})")
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError) as exc:
        if isinstance(exc, BTFError):
            raise
        raise BTFError(f"cannot decompress bzImage payload: {exc}") from exc
    if out[:4] != b"\x7fELF":
        raise BTFError("decompressed bzImage payload is not an ELF vmlinux")
    return out


def btf_from_blob(data: bytes | memoryview) -> memoryview:
    """Accept raw BTF, an ELF vmlinux with a .BTF section, or a bzImage; return the raw BTF bytes."""
    mv = memoryview(data)
    head = bytes(mv[:4])
    if head[:2] in (b"\x9f\xeb", b"\xeb\x9f"):
        return mv
    if head == b"\x7fELF":
        sec = elf_section(mv, ".BTF")
        if sec is None:
            raise BTFError("ELF file has no .BTF section (kernel built without CONFIG_DEBUG_INFO_BTF)")
        return sec
    if len(mv) >= 0x206 and bytes(mv[0x202:0x206]) == b"HdrS":
        return btf_from_blob(vmlinux_from_bzimage(mv))
    raise BTFError("input is neither BTF, an ELF vmlinux nor a bzImage")
