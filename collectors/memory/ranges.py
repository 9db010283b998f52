"""Where physical memory is and how to read it: /proc/iomem "System RAM" ranges mapped through the
PT_LOAD segments of /proc/kcore (or read directly from /dev/crash and /dev/mem, whose offsets are
physical addresses)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

PT_LOAD, PT_NOTE = 1, 4
NO_PADDR = 0xFFFFFFFFFFFFFFFF
KERNEL_TEXT_START = 0xFFFFFFFF80000000  # __START_KERNEL_map: KCORE_TEXT aliases RAM already in the direct map
_IOMEM = re.compile(r"^([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")


class KcoreError(ValueError):
    pass


@dataclass(frozen=True)
class Segment:
    vaddr: int
    paddr: int
    offset: int
    size: int

    @property
    def is_kernel_text(self) -> bool:
        """x86_64's KCORE_TEXT (at __START_KERNEL_map). Other architectures map their kernel image elsewhere
        (arm64: anywhere in the vmalloc area, by KASLR): :func:`map_ranges` tells aliases by their physical
        range instead."""
        return self.vaddr >= KERNEL_TEXT_START


def _aliases(segments: list[Segment]) -> set[Segment]:
    """Segments whose whole physical range another, larger segment maps too: the kernel image's own mapping
    (KCORE_TEXT) beside the linear/direct map of the RAM it lies in, wherever the architecture puts it."""
    return {s for s in segments
            if s.is_kernel_text or any(o is not s and o.size > s.size and o.paddr <= s.paddr
                                       and s.paddr + s.size <= o.paddr + o.size for o in segments)}


@dataclass
class Piece:
    """``length`` bytes of physical memory from ``start``, found at ``offset`` of the source."""

    start: int
    length: int
    offset: int


@dataclass
class PhysRange:
    """A contiguous physical range of the image (one LiME record); ``end`` is inclusive as in LiME."""

    start: int
    end: int
    pieces: list[Piece] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.end - self.start + 1


def parse_iomem(text: str) -> list[tuple[int, int]]:
    """Top-level "System RAM" lines of /proc/iomem as (start, end_inclusive). Nested lines (indented)
    are children of a top-level entry and never RAM ranges of their own."""
    ranges = []
    for line in text.splitlines():
        if line[:1].isspace():
            continue
        m = _IOMEM.match(line.strip())
        if not m or m.group(3).strip() != "System RAM":
            continue
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        if end < start or (start == 0 and end == 0):
            continue  # 00000000-00000000: what an unprivileged reader sees
        ranges.append((start, end))
    return sorted(ranges)


@dataclass
class Kcore:
    segments: list[Segment]
    vmcoreinfo: dict[str, str]


def _notes(data: bytes) -> dict[str, str]:
    info: dict[str, str] = {}
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, _type = struct.unpack_from("<III", data, pos)
        pos += 12
        name = data[pos:pos + namesz].rstrip(b"\0")
        pos += (namesz + 3) & ~3
        desc = data[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if name == b"VMCOREINFO":
            for line in desc.decode("ascii", "replace").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    info[key] = value
    return info


def parse_kcore(read_at) -> Kcore:
    """Parse an ELF64 core (``read_at(offset, n) -> bytes``). Raises KcoreError on anything malformed."""
    ident = read_at(0, 64)
    if len(ident) < 64 or ident[:4] != b"\x7fELF":
        raise KcoreError("not an ELF file")
    if ident[4] != 2 or ident[5] != 1:
        raise KcoreError("not a little-endian ELF64 file")
    e_type, _machine, _version, _entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum = struct.unpack_from(
        "<HHIQQQIHHH", ident, 16)
    if e_type != 4:
        raise KcoreError(f"ELF type {e_type} is not a core file")
    if phentsize != 56 or not 0 < phnum < 65535:
        raise KcoreError(f"bad program header table (entry size {phentsize}, count {phnum})")
    table = read_at(phoff, phentsize * phnum)
    if len(table) != phentsize * phnum:
        raise KcoreError("program header table truncated")
    segments, info = [], {}
    for i in range(phnum):
        p_type, _pflags, offset, vaddr, paddr, filesz, _memsz, _align = struct.unpack_from("<IIQQQQQQ", table, i * 56)
        if p_type == PT_LOAD and filesz:
            segments.append(Segment(vaddr, paddr, offset, filesz))
        elif p_type == PT_NOTE and 0 < filesz < 1 << 20:
            info.update(_notes(read_at(offset, filesz)))
    return Kcore(segments, info)


def map_ranges(ram: list[tuple[int, int]], segments: list[Segment]) -> tuple[list[PhysRange], list[tuple[int, int]]]:
    """Cover each RAM range with kcore segments, each physical byte once (direct-map segments are
    preferred over the kernel-text alias). Returns the image's ranges and the RAM not in kcore."""
    backed = [s for s in segments if s.paddr != NO_PADDR]
    aliases = _aliases(backed)
    usable = sorted(backed, key=lambda s: (s in aliases, s.paddr))
    pieces: list[Piece] = []
    missing: list[tuple[int, int]] = []
    for start, end in ram:
        uncovered = [(start, end + 1)]  # half-open while we work
        for seg in usable:
            seg_end = seg.paddr + seg.size
            still = []
            for lo, hi in uncovered:
                a, b = max(lo, seg.paddr), min(hi, seg_end)
                if a >= b:
                    still.append((lo, hi))
                    continue
                pieces.append(Piece(a, b - a, seg.offset + (a - seg.paddr)))
                if lo < a:
                    still.append((lo, a))
                if b < hi:
                    still.append((b, hi))
            uncovered = still
        missing += [(lo, hi - 1) for lo, hi in uncovered]
    return _merge(pieces), missing


def direct_ranges(ram: list[tuple[int, int]]) -> list[PhysRange]:
    """For /dev/crash and /dev/mem the file offset is the physical address."""
    return _merge([Piece(s, e - s + 1, s) for s, e in ram])


def _merge(pieces: list[Piece]) -> list[PhysRange]:
    out: list[PhysRange] = []
    for piece in sorted(pieces, key=lambda p: p.start):
        if out and out[-1].end + 1 == piece.start:
            out[-1].end += piece.length
            out[-1].pieces.append(piece)
        else:
            out.append(PhysRange(piece.start, piece.start + piece.length - 1, [piece]))
    return out
