"""Memory acquisition on synthetic kcore files: range mapping, formats, refusals, corrupt input."""

from __future__ import annotations

import os
import struct

import cramjam
import kcore_fixture
import pytest

from collectors.base import Context, Problem, Record, Stream
from collectors.memory import collector
from collectors.memory.image import AVML_MAGIC, LIME_MAGIC
from collectors.memory.ranges import KcoreError, Segment, map_ranges, parse_iomem, parse_kcore

MiB = 1 << 20
RAM = [(0x1000, 0x9EFFF), (0x100000, 0x100000 + 6 * MiB - 1), (0x100000000, 0x100000000 + 3 * MiB - 1)]


def _acquire(syn, fmt="lime", **options):
    ctx = Context(root="/", live=True, options={"format": fmt, "iomem_path": str(syn.iomem),
                                                 "source_paths": {"kcore": str(syn.kcore)}, "source": "kcore",
                                                 **options})
    facts, problems, image = {}, [], None
    for item in collector.collect(ctx):
        if isinstance(item, Record):
            facts = item.data
        elif isinstance(item, Problem):
            problems.append(item)
        elif isinstance(item, Stream):
            data = b"".join(bytes(c) for c in item.open(lambda: False))
            item.close()
            image = (item, data)
    return facts, problems, image


def parse_lime(data: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        magic, version, start, end = struct.unpack_from("<IIQQ", data, pos)
        assert (magic, version) == (LIME_MAGIC, 1)
        size = end - start + 1
        out.append((start, end, data[pos + 32:pos + 32 + size]))
        pos += 32 + size
    return out


def parse_avml(data: bytes) -> list[tuple[int, int, bytes]]:
    """Walk the framed snappy stream of each record until the header's length is decoded (skipping
    padding frames), then check the u64 trailer against the stream length."""
    out, pos = [], 0
    while pos < len(data):
        magic, version, start, end = struct.unpack_from("<IIQQ", data, pos)
        assert (magic, version) == (AVML_MAGIC, 2)
        stream = pos = pos + 32
        block = b""
        while len(block) < end - start + 1:
            (header,) = struct.unpack_from("<I", data, pos)
            kind, size = header & 0xFF, header >> 8
            frame = data[pos + 8:pos + 4 + size]  # data frames: 4-byte CRC first
            if kind == 0:
                block += bytes(cramjam.snappy.decompress_raw(frame))
            elif kind == 1:
                block += frame
            else:
                assert kind in (0xFF, 0xFE)  # stream identifier, padding
            pos += 4 + size
        assert len(block) == end - start + 1
        assert struct.unpack_from("<Q", data, pos)[0] == pos - stream
        assert bytes(cramjam.snappy.decompress(data[stream:pos])) == block  # a valid framed stream as a whole
        out.append((start, end, block))
        pos += 8
    return out


def test_iomem_top_level_ram_only():
    text = ("00000000-00000fff : Reserved\n00001000-0009fbff : System RAM\n00100000-bfffffff : System RAM\n"
            "  01000000-0220bb07 : Kernel code\n  02000000-02ffffff : System RAM\n"
            "100000000-63fffffff : System RAM\nfec00000-fec003ff : IOAPIC 0\n")
    assert parse_iomem(text) == [(0x1000, 0x9FBFF), (0x100000, 0xBFFFFFFF), (0x100000000, 0x63FFFFFFF)]
    assert parse_iomem("00000000-00000000 : System RAM\n00000000-00000000 : System RAM\n") == []


def test_text_alias_not_written_twice_and_unbacked_segments_skipped():
    segs = [Segment(0xFFFF888000100000, 0x100000, 0x1000, 0x10000, ), Segment(0xFFFFFFFF81000000, 0x100000, 0x2000,
                                                                              0x400),
            Segment(0xFFFFC90000000000, 0xFFFFFFFFFFFFFFFF, 0x9000, 0x1000)]
    ranges, missing = map_ranges([(0x100000, 0x10FFFF)], segs)
    assert [(r.start, r.end) for r in ranges] == [(0x100000, 0x10FFFF)]
    assert [(p.start, p.length, p.offset) for p in ranges[0].pieces] == [(0x100000, 0x10000, 0x1000)]
    assert missing == []


@pytest.mark.parametrize("fmt", ["lime", "avml"])
def test_image_matches_physical_memory(tmp_path, fmt):
    syn = kcore_fixture.build(tmp_path, RAM, text_over=0x100000 + MiB, zero_pages=[0x100000 + 2 * MiB],
                              extra_gap=(0x200000000, 0x2000FFFFF))
    facts, problems, (item, data) = _acquire(syn, fmt)
    assert facts["status"] == "streaming" and facts["pgtable_l5_enabled"] is False
    assert [(r["start"], r["end"]) for r in facts["image_ranges"]] == RAM  # above 4 GiB included
    assert any("not present in kcore" in p.message for p in problems)  # the RAM kcore does not map
    records = parse_lime(data) if fmt == "lime" else parse_avml(data)
    assert len(data) == item.length if fmt == "lime" else item.length is None
    got = {}
    for start, _end, block in records:
        assert b"\xcc" * 64 not in block  # vmalloc/module segments never enter the image
        got[start] = block
    for start, end in RAM:
        covered = b"".join(got[s] for s in sorted(got) if start <= s <= end)
        expected = bytearray(kcore_fixture.pattern(start, end - start + 1))
        zp = 0x100000 + 2 * MiB
        if start <= zp <= end:
            expected[zp - start:zp - start + 4096] = bytes(4096)
        if fmt == "lime":
            assert covered == expected
        else:
            assert covered == bytes(expected)  # no block of this RAM is all zero: nothing skipped
    if fmt == "lime":
        assert item.length == sum(32 + e - s + 1 for s, e in RAM)


def test_avml_skips_zero_blocks(tmp_path):
    from collectors.memory.image import AVML_BLOCK

    zero_range = [(0x100000, 0x100000 + 48 * MiB - 1)]
    syn = kcore_fixture.build(tmp_path, zero_range, zero_pages=list(range(0x100000, 0x100000 + 32 * MiB, 4096)))
    _, _, (item, data) = _acquire(syn, "avml")
    assert item.length is None and item.stats.zero_blocks_skipped == 32 * MiB // AVML_BLOCK
    decoded = parse_avml(data)
    # the zero blocks are skipped; the rest comes in blocks of AVML_BLOCK
    assert [s for s, _, _ in decoded] == list(range(0x100000 + 32 * MiB, 0x100000 + 48 * MiB, AVML_BLOCK))
    assert b"".join(b for _, _, b in decoded) == kcore_fixture.pattern(0x100000 + 32 * MiB, 16 * MiB)


def test_la57_is_reported(tmp_path):
    syn = kcore_fixture.build(tmp_path, RAM[:2], la57=True)
    facts, problems, _ = _acquire(syn)
    assert facts["pgtable_l5_enabled"] is True and facts["five_level_paging"] is True
    assert any("5-level paging" in p.message and "volatility3" in p.message for p in problems)


@pytest.mark.parametrize("damage", ["not-elf", "truncated-table", "elf32", "empty"])
def test_corrupt_kcore_is_a_clean_refusal(tmp_path, damage):
    syn = kcore_fixture.build(tmp_path, RAM[:2])
    data = syn.kcore.read_bytes()[:4096]
    broken = {"not-elf": b"GARBAGE!" + data[8:], "truncated-table": data[:80], "elf32": data[:4] + b"\x01" + data[5:],
              "empty": b""}[damage]
    syn.kcore.write_bytes(broken)
    facts, problems, image = _acquire(syn)
    assert image is None and facts["status"] == "refused"
    assert any(p.detail.get("artifact_status") == "refused" for p in problems)
    with pytest.raises(KcoreError):
        parse_kcore(lambda off, n: broken[off:off + n])


def test_memory_limit_and_space_refusals(tmp_path):
    syn = kcore_fixture.build(tmp_path, RAM[:2])
    facts, problems, image = _acquire(syn, memory_limit=1 * MiB)
    assert image is None and "--memory-limit" in facts["reason"]
    facts, problems, image = _acquire(syn, space_available=1000)
    assert image is None and "not enough space" in facts["reason"]


def test_lockdown_and_missing_source_refusals(tmp_path):
    syn = kcore_fixture.build(tmp_path, RAM[:2])
    lockdown = tmp_path / "lockdown"
    lockdown.write_text("none [integrity] confidentiality\n")
    facts, problems, image = _acquire(syn, lockdown_path=str(lockdown))
    assert image is None and facts["lockdown"] == "integrity" and "lockdown" in facts["reason"]
    lockdown.write_text("[none] integrity confidentiality\n")
    facts, _, image = _acquire(syn, lockdown_path=str(lockdown))
    assert image is not None and facts["lockdown"] == "none"
    facts, _, image = _acquire(syn, source_paths={"kcore": str(tmp_path / "missing")})
    assert image is None and "No such file" in facts["reason"]
    unreadable = tmp_path / "iomem-hidden"
    unreadable.write_text("00000000-00000000 : System RAM\n")  # what a non-root reader sees
    facts, _, image = _acquire(syn, iomem_path=str(unreadable))
    assert image is None and "no System RAM" in facts["reason"]


def test_no_source_is_named_before_the_memory_limit(tmp_path):
    """A host with no memory source is told so, not that its RAM is larger than --memory-limit."""
    syn = kcore_fixture.build(tmp_path, RAM[:2])
    missing = {"kcore": str(tmp_path / "no-kcore"), "crash": str(tmp_path / "no-crash"),
               "mem": str(tmp_path / "no-mem")}
    for forced in ("kcore", None):
        facts, problems, image = _acquire(syn, memory_limit=1 * MiB, source=forced, source_paths=missing)
        assert image is None and facts["status"] == "refused"
        assert "--memory-limit" not in facts["reason"] and "No such file" in facts["reason"], facts["reason"]
        assert not any("--memory-limit" in p.message for p in problems)
    # with a source, the limit still refuses (and the source is not left open)
    facts, _, image = _acquire(syn, memory_limit=1 * MiB)
    assert image is None and "--memory-limit" in facts["reason"] and facts["ram_bytes"] > MiB


def _merged(data: bytes, companion: bytes) -> dict[int, bytes]:
    """Physical address -> bytes from an AVML image and its companion LiME image, as analyze merges them."""
    import io

    from collectors.memory.image import merge_to_lime

    out = io.BytesIO()
    merge_to_lime(io.BytesIO(data), io.BytesIO(companion), out)
    return {start: block for start, _end, block in parse_lime(out.getvalue())}


def _acquire_split(syn, fmt):
    """The image and its companion bytes, as the sink would split them (Companion chunks apart)."""
    from collectors.base import CompanionChunk

    ctx = Context(root="/", live=True, options={"format": fmt, "iomem_path": str(syn.iomem), "source": "kcore",
                                                 "source_paths": {"kcore": str(syn.kcore)}})
    for item in collector.collect(ctx):
        if isinstance(item, Stream):
            chunks = list(item.open(lambda: False))
            item.close()
            image = b"".join(bytes(c) for c in chunks if not isinstance(c, CompanionChunk))
            companion = b"".join(bytes(c) for c in chunks if isinstance(c, CompanionChunk))
            return item, image, companion
    raise AssertionError("no image")


def test_64k_pages_mixed_content_round_trips(tmp_path):
    """An arm64 host with 64 KiB pages: RAM ranges in whole 64 KiB pages, neither starting nor ending on a
    MiB boundary; pages of random bytes (snappy cannot shrink them), text and zeros interleaved. LiME holds
    every byte; AVML plus its companion hold every byte too, zero blocks aside, with no record boundary
    inside a 64 KiB page."""
    page = 64 << 10
    ram = [(0x10000, 0x10000 + 77 * page - 1), (0x4000_0000 + 3 * page, 0x4000_0000 + 3 * page + 153 * page - 1)]
    noise = os.urandom(page)
    text = (b"kernel text and slab objects " * 2300)[:page]

    def fill(paddr: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            at = paddr + len(out)
            take = min(n - len(out), page - at % page)
            kind = 0 if at // (2 * MiB) % 3 == 0 else (at // page) % 5  # whole MiBs of random bytes too
            src = {0: noise, 1: text, 2: text, 3: noise, 4: bytes(page)}[kind]
            out += src[at % page:at % page + take]
        return bytes(out)

    syn = kcore_fixture.build(tmp_path, ram, fill=fill)
    expected = {s: fill(s, e - s + 1) for s, e in ram}
    _, _, (item, data) = _acquire(syn, "lime")
    assert {s: b for s, _e, b in parse_lime(data)} == expected
    item, image, companion = _acquire_split(syn, "avml")
    assert item.stats.companion_bytes > 0 and item.stats.records > 0
    merged = _merged(image, companion)
    for start, _end, _block in parse_avml(image) + parse_lime(companion):
        assert start % page == 0  # every record begins on a page of the host
    for start, end in ram:
        got = bytearray(end - start + 1)
        for s in sorted(merged):
            if start <= s <= end:
                got[s - start:s - start + len(merged[s])] = merged[s]
        assert bytes(got) == expected[start]  # skipped zero blocks read back as zeros


def test_avml_compressible_but_not_zero_block_is_kept(tmp_path):
    """A block snappy shrinks to almost nothing (all 0xff) is not mistaken for a zero block."""
    syn = kcore_fixture.build(tmp_path, [(0x100000, 0x100000 + 4 * MiB - 1)],
                              fill=lambda paddr, n: b"\xff" * n if paddr < 0x100000 + 2 * MiB else bytes(n))
    item, image, companion = _acquire_split(syn, "avml")
    assert item.stats.zero_blocks_skipped == 2 and companion == b""
    assert b"".join(b for _, _, b in parse_avml(image)) == b"\xff" * (2 * MiB)


def test_imaging_reports_progress():
    """start with the RAM's size, advances that add up to it, finish: from the imaging loop itself."""
    import tempfile
    from pathlib import Path

    from agent.engine import progress

    events = []
    previous = progress.listen(lambda event, task, amount, total, unit: events.append((event, task, amount, total)))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            syn = kcore_fixture.build(Path(tmp), RAM)
            for fmt in ("lime", "avml"):
                events.clear()
                _acquire(syn, fmt)
                total = sum(e - s + 1 for s, e in RAM)
                assert events[0] == ("start", "memory", 0, total) and events[-1][:2] == ("finish", "memory")
                assert sum(a for e, _t, a, _ in events if e == "advance") == total
    finally:
        progress.listen(previous)


def test_avml_split_keeps_the_frames_snappy_shrank():
    """A block volatility could not read as one record: runs of compressed 64 KiB frames become AVML
    records made of those very frames, runs of stored frames go to the companion; nothing is lost."""
    from collectors.memory.image import Companion, ImageStats, _split_incompressible

    frame = 64 << 10
    text = (b"slab objects and page tables " * 3000)[:frame]
    noise = os.urandom(3 * frame)
    data = text + noise + text + text
    stats = ImageStats()
    chunks = list(_split_incompressible(0x200000, data, memoryview(bytes(cramjam.snappy.compress(data))), stats))
    kinds = [isinstance(c, Companion) for c in chunks]
    assert kinds == [False, True, False] and stats.records == 2 and stats.companion_bytes == 3 * frame
    image = b"".join(c for c in chunks if not isinstance(c, Companion))
    companion = b"".join(bytes(c) for c in chunks if isinstance(c, Companion))
    assert [(s, len(b)) for s, _e, b in parse_avml(image)] == [(0x200000, frame), (0x200000 + 4 * frame, 2 * frame)]
    merged = _merged(image, companion)
    assert b"".join(merged[s] for s in sorted(merged)) == data


def test_avml_compresses_in_pool_threads_in_order(tmp_path, monkeypatch):
    """snappy runs in the compressor threads (it releases the GIL), never on the thread that consumes the
    records, and the records still come in address order."""
    import threading

    import collectors.memory.image as image

    names = set()
    real = cramjam.snappy.compress_into

    def spy(data, out):
        names.add(threading.current_thread().name)
        return real(data, out)

    monkeypatch.setattr(image, "_compressors", lambda: 2)
    monkeypatch.setattr(cramjam.snappy, "compress_into", spy)
    syn = kcore_fixture.build(tmp_path, RAM)
    _, _, (item, data) = _acquire(syn, "avml")
    assert names and all(n.startswith("avml-compress") for n in names), names
    starts = [s for s, _, _ in parse_avml(data)]
    assert starts == sorted(starts) and item.stats.records == len(starts)
