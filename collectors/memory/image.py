"""Memory image formats and the streaming reader.

LiME: per range a 32-byte header (magic 0x4C694D45, version 1, start, end inclusive, 8 zero bytes)
and the range's bytes; its size is known before reading. AVML (compressed): per block of at most
1 MiB (AVML allows 16) a header with magic 0x4C4D5641 and version 2, a snappy framed stream of the block and its
length as a u64; all-zero blocks are skipped, as AVML does; its size is known only at the end.
Both are opened by volatility3 as they are. volatility3 2.28 hangs on an AVML record that snappy
could not shrink, so the 64 KiB frames that do not compress go to a companion LiME file instead (never lost).

Reading runs in its own thread, ahead of the consumer (bounded), so reading, hashing and writing
overlap: hashlib, pread and write all release the GIL. AVML blocks are compressed by a few threads at
once (cramjam's snappy releases the GIL too), their records handed on in address order.

No size here depends on the host's page size (4, 16 or 64 KiB on arm64): ranges come from /proc/iomem
in whole pages, and blocks (1 MiB) and snappy frames (64 KiB) are multiples of every page size, so a
record always starts and ends on a page boundary of the host.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, BinaryIO

from agent.engine import progress
from collectors.base import ChunkReader as ChunkReader  # re-exported: it was defined here
from collectors.base import CompanionChunk
from collectors.memory.ranges import PhysRange

BLOCK = 16 << 20
# AVML blocks of 1 MiB: the reading ring and every compressor's scratch buffer and block in flight scale
# with it, and a 512 MiB cloud VM must not swap or meet its OOM killer while we image it.
AVML_BLOCK = 1 << 20
AVML_PREFETCH = 2  # reading outruns snappy: two blocks ahead keep the compressors fed
MAX_COMPRESSORS = 4  # threads compressing AVML blocks at once (at most; never more than our usable cores)
LIME_MAGIC, AVML_MAGIC = 0x4C694D45, 0x4C4D5641
HEADER = struct.Struct("<IIQQ8x")
SNAPPY_STREAM_ID = b"\xff\x06\x00\x00sNaPpY"
SNAPPY_CHUNK = 65536
PREFETCH_BLOCKS = 4
# LiME is read in small blocks that stay in the CPU cache between the read, the hash and the write:
# with 16 MiB blocks every byte crossed main memory three times and throughput fell by a third.
LIME_READ_BLOCK = 1 << 20
LIME_PREFETCH = 8
_ZEROS = bytes(BLOCK)


@dataclass
class ImageStats:
    bytes_read: int = 0
    zero_blocks_skipped: int = 0
    records: int = 0
    companion_bytes: int = 0  # AVML: memory kept in the companion LiME file instead
    read_errors: list[dict] = field(default_factory=list)


def blocks(ranges: list[PhysRange], block: int = BLOCK) -> Iterator[tuple[int, int]]:
    for r in ranges:
        pos = r.start
        while pos <= r.end:
            size = min(block, r.end + 1 - pos)
            yield pos, size
            pos += size


def lime_size(ranges: list[PhysRange]) -> int:
    return sum(HEADER.size + r.size for r in ranges)


def avml_record_bound(size: int) -> int:
    """Largest AVML record for a block: header, stream id, one 8-byte frame header+CRC per 64 KiB
    (incompressible data is stored as is), the block, the u64 trailer."""
    return HEADER.size + len(SNAPPY_STREAM_ID) + size + 8 * -(-size // SNAPPY_CHUNK) + 8


def avml_bound(ranges: list[PhysRange]) -> int:
    return sum(avml_record_bound(size) for _, size in blocks(ranges, AVML_BLOCK))


class _Prefetcher:
    """Reads blocks in order in a background thread into a small ring of reused buffers (fresh 16 MiB
    buffers would cost a page fault and a zeroing per page); zero-fills and records what cannot be read.

    A buffer is handed out as a memoryview and reused once the consumer has pulled
    ``consumer_lag + 1`` further blocks: a consumer that keeps chunks after asking for the next one
    (an asynchronous writer) says how many it may hold."""

    def __init__(self, fd: int, ranges: list[PhysRange], stats: ImageStats, stop: Callable[[], bool],
                 consumer_lag: int = 0, block: int = BLOCK, prefetch: int = PREFETCH_BLOCKS):
        self.fd, self.ranges, self.stats, self.stop = fd, ranges, stats, stop
        self.lag, self.block = consumer_lag, block
        self.slots: list[bytearray | None] = [None] * (prefetch + consumer_lag + 2)
        self.pulled = 0
        self.progress = threading.Condition()
        self.queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=self._run, name="memory-reader", daemon=True)
        self.thread.start()

    def _buffer(self, index: int) -> bytearray | None:
        """The ring slot for block ``index``, once the block that used it before is released."""
        slot = index % len(self.slots)
        with self.progress:
            while index >= len(self.slots) and self.pulled <= index - len(self.slots) + 1 + self.lag:
                if self.cancel.is_set():
                    return None
                self.progress.wait(0.2)
        if self.slots[slot] is None:
            self.slots[slot] = bytearray(self.block)
        return self.slots[slot]

    def _read_block(self, buf: bytearray, start: int, size: int) -> memoryview:
        view = memoryview(buf)[:size]  # every byte is read below (ranges are made of whole pieces) or zeroed
        for r in self.ranges:
            if not r.start <= start <= r.end:
                continue
            for piece in r.pieces:
                lo, hi = max(start, piece.start), min(start + size, piece.start + piece.length)
                pos = lo
                while pos < hi:
                    try:
                        got = os.preadv(self.fd, [view[pos - start:hi - start]], piece.offset + (pos - piece.start))
                    except OSError as exc:
                        view[pos - start:hi - start] = _ZEROS[:hi - pos]
                        self.stats.read_errors.append({"start": pos, "length": hi - pos, "errno": exc.errno,
                                                       "error": exc.strerror})
                        break  # the rest of this piece is zero-filled
                    if got <= 0:
                        view[pos - start:hi - start] = _ZEROS[:hi - pos]
                        self.stats.read_errors.append({"start": pos, "length": hi - pos, "error": "short read"})
                        break
                    pos += got
                    self.stats.bytes_read += got
        return view

    def _run(self) -> None:
        try:
            for index, (start, size) in enumerate(blocks(self.ranges, self.block)):
                if self.cancel.is_set() or self.stop():
                    break
                buf = self._buffer(index)
                if buf is None:
                    break
                item = (start, size, self._read_block(buf, start, size))
                while not self.cancel.is_set():
                    try:
                        self.queue.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the consumer, never lost in a thread
            self.queue.put(exc)
        self.queue.put(None)

    def __iter__(self) -> Iterator[tuple[int, int, memoryview]]:
        progress.start("memory", sum(r.size for r in self.ranges), "B")
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                with self.progress:
                    self.pulled += 1
                    self.progress.notify()
                progress.advance("memory", item[1])
                yield item
        finally:
            self.cancel.set()
            progress.finish("memory")


def lime_chunks(fd: int, ranges: list[PhysRange], stats: ImageStats, stop: Callable[[], bool] = lambda: False,
                consumer_lag: int = 0) -> Iterator[bytes | memoryview]:
    boundaries = {r.start: r for r in ranges}
    for start, _size, data in _Prefetcher(fd, ranges, stats, stop, consumer_lag, LIME_READ_BLOCK, LIME_PREFETCH):
        if start in boundaries:
            r = boundaries[start]
            stats.records += 1
            yield HEADER.pack(LIME_MAGIC, 1, r.start, r.end)
        yield data


class Companion(CompanionChunk):
    """Bytes of the companion LiME file: memory an AVML image cannot hold (see avml_chunks)."""


def avml_record(start: int, data: bytes | memoryview, scratch: bytearray | None = None) -> bytes:
    """One AVML record; with ``scratch`` (at least avml_record_bound(len(data)) bytes) snappy writes
    into it and only the finished record is copied out, so no transient block-sized copies pile up."""
    import cramjam  # snappy framed format at GB/s; imported only when AVML is asked for

    if scratch is None or len(scratch) < avml_record_bound(len(data)):
        scratch = bytearray(avml_record_bound(len(data)))
    view = memoryview(scratch)
    framed = cramjam.snappy.compress_into(data, view[HEADER.size:])
    HEADER.pack_into(view, 0, AVML_MAGIC, 2, start, start + len(data) - 1)
    struct.pack_into("<Q", view, HEADER.size + framed, framed)
    return bytes(view[:HEADER.size + framed + 8])


def _readable_by_volatility(record: bytes, size: int) -> bool:
    """volatility3 2.28 reads only ``end - start`` bytes of a record's snappy stream and loops for ever
    when the stream is longer: a block that snappy cannot shrink is unreadable to it."""
    return len(record) - HEADER.size - 8 + 16 < size


def _varint(data: memoryview, pos: int) -> int:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        pos, shift = pos + 1, shift + 7


def _frames(stream: memoryview) -> Iterator[tuple[bool, int, memoryview]]:
    """(compressed, bytes of the block it holds, frame) for each data frame of a framed snappy stream, in
    order: a compressed frame's raw snappy data begins with its length (a varint) after the CRC; a stored
    frame holds the bytes themselves after the CRC. Other frames (stream identifier, padding) hold none."""
    pos = 0
    while pos < len(stream):
        kind = stream[pos]
        length = int.from_bytes(stream[pos + 1:pos + 4], "little")
        frame = stream[pos:pos + 4 + length]
        if kind == 0x00:
            yield True, _varint(stream, pos + 8), frame
        elif kind == 0x01:
            yield False, length - 4, frame
        pos += 4 + length


def _split_incompressible(start: int, data: bytes | memoryview, stream: memoryview,
                          stats: ImageStats) -> Iterator[bytes]:
    """Keep the runs of 64 KiB frames snappy could shrink in AVML records (the frames reused as they
    are: nothing is compressed twice); the frames it stored as they were go, as LiME records, to the
    companion file. Nothing is dropped."""
    runs: list[tuple[bool, int, int, list[memoryview]]] = []  # (compressed, offset, length, frames)
    offset = 0
    for compressed, size, frame in _frames(stream):
        if runs and runs[-1][0] == compressed:
            good, at, length, frames = runs[-1]
            frames.append(frame)
            runs[-1] = (good, at, length + size, frames)
        else:
            runs.append((compressed, offset, size, [frame]))
        offset += size
    if offset != len(data):  # not the stream we expect: keep the whole block, uncompressed
        runs = [(False, 0, len(data), [])]
    for good, offset, length, frames in runs:
        record = b""
        if good:
            body = SNAPPY_STREAM_ID + b"".join(frames)
            record = HEADER.pack(AVML_MAGIC, 2, start + offset, start + offset + length - 1) + body \
                + struct.pack("<Q", len(body))
        if good and _readable_by_volatility(record, length):
            stats.records += 1
            yield record
        else:
            stats.companion_bytes += length
            header = HEADER.pack(LIME_MAGIC, 1, start + offset, start + offset + length - 1)
            yield Companion(b"".join((header, data[offset:offset + length])))  # two copies of the block, not three


@lru_cache(maxsize=8)
def _zero_stream_length(size: int) -> int:
    """Length of the framed snappy stream of ``size`` zero bytes: a block whose stream is no longer may
    be all zero (then one comparison says so); any other block cannot be."""
    import cramjam

    return len(cramjam.snappy.compress(bytes(size)))


def _compressors() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(MAX_COMPRESSORS, cores))


class _Compressor:
    """Compresses one AVML block in a pool thread (the GIL released while snappy runs), into the scratch
    buffer of that thread; returns the finished record's bytes, or None for an all-zero block, or the
    block's framed stream when volatility could not read it as one record."""

    def __init__(self) -> None:
        self.local = threading.local()

    def __call__(self, start: int, data: memoryview) -> tuple[str, Any]:
        import cramjam

        scratch = getattr(self.local, "scratch", None)
        if scratch is None:
            scratch = self.local.scratch = bytearray(avml_record_bound(AVML_BLOCK))
        view = memoryview(scratch)
        framed = cramjam.snappy.compress_into(data, view[HEADER.size:])
        if framed <= _zero_stream_length(len(data)) and data == bytes(len(data)):
            return "zero", None
        HEADER.pack_into(view, 0, AVML_MAGIC, 2, start, start + len(data) - 1)
        struct.pack_into("<Q", view, HEADER.size + framed, framed)
        record = view[:HEADER.size + framed + 8]
        if _readable_by_volatility(record, len(data)):
            return "record", bytes(record)
        return "split", bytes(view[HEADER.size:HEADER.size + framed])


def avml_chunks(fd: int, ranges: list[PhysRange], stats: ImageStats, stop: Callable[[], bool] = lambda: False,
                consumer_lag: int = 0) -> Iterator[bytes]:
    """AVML records, one per block, in address order; all-zero blocks are skipped (counted in stats).
    Blocks are compressed by up to MAX_COMPRESSORS threads, a bounded number in flight (the reading ring
    keeps their buffers until their records are out). Records are new bytes, so the reading buffers are
    free again at once whatever ``consumer_lag`` says. Frames that snappy cannot shrink come as Companion
    chunks (a LiME stream of its own)."""
    from concurrent.futures import ThreadPoolExecutor

    workers = _compressors()
    in_flight = workers + 1  # one more than the threads: a thread never waits for the next block
    compress = _Compressor()
    blocks = _Prefetcher(fd, ranges, stats, stop, consumer_lag=in_flight, block=AVML_BLOCK, prefetch=AVML_PREFETCH)
    pending: deque = deque()

    def done(start: int, data: memoryview, result: tuple[str, Any]) -> Iterator[bytes]:
        kind, value = result
        if kind == "zero":
            stats.zero_blocks_skipped += 1
        elif kind == "record":
            stats.records += 1
            yield value
        else:
            yield from _split_incompressible(start, data, memoryview(value), stats)

    with ThreadPoolExecutor(workers, thread_name_prefix="avml-compress") as pool:
        try:
            for start, _size, data in blocks:
                pending.append((start, data, pool.submit(compress, start, data)))
                if len(pending) >= in_flight:
                    first, view, future = pending.popleft()
                    yield from done(first, view, future.result())
            while pending:
                first, view, future = pending.popleft()
                yield from done(first, view, future.result())
        finally:
            for _start, _data, future in pending:
                future.cancel()


# --------------------------------------------------------------------------------------------------
# Reading images back (responder side)


def _next_header(fh: BinaryIO, fmt: str, magic: int, version: int) -> tuple[int, int] | None:
    """(start, end inclusive) of the next record, or None at the end of the file."""
    header = fh.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise ValueError(f"{fmt}: truncated record header")
    got_magic, got_version, start, end = HEADER.unpack(header)
    if got_magic != magic or got_version != version or end < start:
        raise ValueError(f"{fmt}: bad record header at offset {fh.tell() - HEADER.size}")
    return start, end


def lime_records(fh: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    """(start, end inclusive, bytes) of each record of a LiME file, in file order."""
    while (span := _next_header(fh, "LiME", LIME_MAGIC, 1)) is not None:
        start, end = span
        data = fh.read(end - start + 1)
        if len(data) != end - start + 1:
            raise ValueError(f"LiME: record {start:#x}-{end:#x} is truncated")
        yield start, end, data


def avml_records(fh: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    """(start, end inclusive, decompressed bytes) of each record of an AVML (version 2) file."""
    import cramjam

    while (span := _next_header(fh, "AVML", AVML_MAGIC, 2)) is not None:
        start, end = span
        want, out, framed = end - start + 1, bytearray(), 0
        while len(out) < want:
            chunk_header = fh.read(4)
            if len(chunk_header) < 4:
                raise ValueError(f"AVML: record {start:#x}-{end:#x} is truncated")
            kind, length = chunk_header[0], int.from_bytes(chunk_header[1:4], "little")
            body = fh.read(length)
            if len(body) != length:
                raise ValueError(f"AVML: record {start:#x}-{end:#x} is truncated")
            framed += 4 + length
            if kind == 0x00:  # compressed: masked CRC-32C, then raw snappy
                out += cramjam.snappy.decompress_raw(body[4:])
            elif kind == 0x01:  # stored: masked CRC-32C, then the bytes
                out += body[4:]
            elif 0x02 <= kind <= 0x7F:
                raise ValueError(f"AVML: unskippable snappy chunk type {kind:#x} in record {start:#x}")
            # 0xff (stream identifier), 0xfe (padding) and 0x80-0xfd are skipped
        trailer = fh.read(8)
        if len(out) != want or len(trailer) != 8 or struct.unpack("<Q", trailer)[0] != framed:
            raise ValueError(f"AVML: record {start:#x}-{end:#x} does not decode to its length")
        yield start, end, bytes(out)


def merge_to_lime(avml: BinaryIO, companion: BinaryIO, out: BinaryIO) -> int:
    """One LiME image from an AVML image and its companion LiME file (the pages snappy could not
    shrink), records in address order as volatility's LiME layer requires; returns the records written.
    Both inputs are already in address order, so a two-way merge holds one record of each at a time."""
    import heapq

    written = 0
    for start, end, data in heapq.merge(avml_records(avml), lime_records(companion), key=lambda r: r[0]):
        out.write(HEADER.pack(LIME_MAGIC, 1, start, end))
        out.write(data)
        written += 1
    return written
