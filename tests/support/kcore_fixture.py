"""Synthetic /proc/kcore files (ELF64 cores) and matching /proc/iomem text, built on disk (sparse).

Physical page contents are a pattern derived from their address, so an image can be checked byte
for byte without keeping a copy."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PAGE_OFFSET = 0xFFFF888000000000
KTEXT_VADDR = 0xFFFFFFFF81000000
NO_PADDR = 0xFFFFFFFFFFFFFFFF


def pattern(paddr: int, length: int) -> bytes:
    """Every 8-byte word holds its own physical address (xor a constant, so zero pages are rare)."""
    first = paddr & ~7
    words = range(first, paddr + length + 8, 8)
    raw = b"".join(struct.pack("<Q", w ^ 0x5A5A5A5A5A5A5A5A) for w in words)
    return raw[paddr - first:paddr - first + length]


@dataclass
class Synthetic:
    kcore: Path
    iomem: Path
    ram: list[tuple[int, int]]  # (start, end inclusive)


def _note(name: bytes, desc: bytes, ntype: int = 0) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name) + 1, len(desc), ntype) + pad(name + b"\0") + pad(desc)


def build(directory: Path, ram: list[tuple[int, int]], la57: bool = False, zero_pages: list[int] = (),
          text_over: int | None = None, extra_gap: tuple[int, int] | None = None,
          fill: Callable[[int, int], bytes] = pattern) -> Synthetic:
    """Write a kcore with a direct-map PT_LOAD per RAM range, a kernel-text alias of ``text_over``
    (a physical address inside RAM), vmalloc and module segments without physical addresses, and a
    VMCOREINFO note. ``extra_gap`` is RAM listed in iomem but missing from kcore. ``fill(paddr, n)``
    gives page contents (default: the address pattern)."""
    directory.mkdir(parents=True, exist_ok=True)
    info = f"OSRELEASE=6.1.0-synthetic\nPAGESIZE=4096\nNUMBER(pgtable_l5_enabled)={int(la57)}\n".encode()
    note = _note(b"CORE", b"\0" * 16, 1) + _note(b"VMCOREINFO", info)
    segments = []  # (vaddr, paddr, size, data_source_paddr or None)
    for start, end in ram:
        segments.append((PAGE_OFFSET + start, start, end - start + 1, start))
    if text_over is not None:
        segments.append((KTEXT_VADDR, text_over, 2 << 20, text_over))
    segments.append((0xFFFFC90000000000, NO_PADDR, 1 << 20, None))  # vmalloc
    segments.append((0xFFFFFFFFA0000000, NO_PADDR, 1 << 20, None))  # modules
    phnum = 1 + len(segments)
    header_end = 64 + 56 * phnum
    note_offset = header_end
    data_offset = (note_offset + len(note) + 4095) & ~4095
    ph = [struct.pack("<IIQQQQQQ", 4, 0, note_offset, 0, 0, len(note), 0, 4)]
    offsets = []
    for vaddr, paddr, size, _src in segments:
        offsets.append(data_offset)
        ph.append(struct.pack("<IIQQQQQQ", 1, 7, data_offset, vaddr, paddr, size, size, 4096))
        data_offset += (size + 4095) & ~4095
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    kcore = directory / "kcore"
    with open(kcore, "wb") as f:
        f.write(ehdr + b"".join(ph))
        f.seek(note_offset)
        f.write(note)
        for (_vaddr, _paddr, size, src), offset in zip(segments, offsets, strict=True):
            f.seek(offset)
            if src is None:
                f.write(b"\xcc" * size)  # vmalloc/module contents: must never reach the image
                continue
            pos = 0
            while pos < size:
                n = min(1 << 20, size - pos)
                block = bytearray(fill(src + pos, n))
                for zp in zero_pages:
                    lo, hi = max(zp, src + pos), min(zp + 4096, src + pos + n)
                    if lo < hi:
                        block[lo - src - pos:hi - src - pos] = bytes(hi - lo)
                f.write(block)
                pos += n
    listed = sorted(ram + ([extra_gap] if extra_gap else []))
    lines = ["00000000-00000fff : Reserved"]
    for start, end in listed:
        lines.append(f"{start:08x}-{end:08x} : System RAM")
        lines.append(f"  {start + 0x1000:08x}-{start + 0x1fff:08x} : Kernel code")  # nested: not a range
    lines.append("fec00000-fec003ff : IOAPIC 0")
    iomem = directory / "iomem"
    iomem.write_text("\n".join(lines) + "\n")
    return Synthetic(kcore, iomem, sorted(ram))
