"""The only writer of evidence: a streamed tar (optionally gzip), every member hashed as written.

Layout of a bundle:
  fs/$rootfs$/<absolute path>      raw file copies (acquire's layout: dissect.target opens it)
  triagent/artifacts/<name>.jsonl  parsed records, one JSON object a line
  triagent/collection.log.jsonl    every error, cap, skip and timing of the run
  triagent/custody.json            who, what, when, where, with what
  triagent/manifest.json           every member above: size, SHA-256, metadata  (second to last)
  triagent/seal.json               SHA-256 of the manifest and where the seal starts (last)
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from agent.bundle import tarformat
from agent.bundle.tarformat import Header

FS_PREFIX = "fs/$rootfs$"
META_PREFIX = "triagent"
MANIFEST_NAME = f"{META_PREFIX}/manifest.json"
SEAL_NAME = f"{META_PREFIX}/seal.json"
SIG_NAME = f"{META_PREFIX}/manifest.sig.json"  # optional, between the manifest and the seal
# Our gzip header: no name, no mtime, OS "unknown". verify demands exactly these bytes, so even the
# header bytes that gzip itself never checks are covered.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
COPY_CHUNK = 1 << 20
# A member at least this long is hashed in a thread of its own (its hash then overlaps the bundle's and the
# reading); a smaller one in the caller's thread, where a hand-over would cost more than it saves.
THREADED_HASH_MIN = 4 << 20
# Deflate has redundant bits (a flipped bit can decode to the same bytes), so the compressed bytes
# get their own seal: a second, empty gzip member whose comment holds the SHA-256 of every byte
# before it. gzip readers concatenate members, so tar readers see nothing of it.
GZIP_SEAL_PREFIX = b"triagent-gzip-seal sha256="


def gzip_seal_member(sha256_hex: str) -> bytes:
    empty_deflate = b"\x03\x00"
    return (b"\x1f\x8b\x08\x10\x00\x00\x00\x00\x00\xff" + GZIP_SEAL_PREFIX + sha256_hex.encode() + b"\0"
            + empty_deflate + struct.pack("<II", 0, 0))


def canonical_json(obj: Any) -> bytes:
    """One spelling per value, so verify can demand byte equality after a round trip."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8", "backslashreplace") + b"\n"


def seal_document(manifest_sha256: str, prefix_bytes: int) -> bytes:
    """The last member: the manifest's hash (the manifest lists every other member's hash) and where
    the seal starts. verify demands exactly these bytes."""
    return canonical_json({"format": "triagent-seal/2", "manifest_sha256": manifest_sha256,
                           "prefix_bytes": prefix_bytes})


def header_fields(header: Header) -> dict[str, Any]:
    """A member's tar metadata as the manifest lists it (verify compares the two)."""
    fields: dict[str, Any] = {
        "name": os.fsdecode(header.name), "type": "symlink" if header.typeflag == tarformat.SYMTYPE else "file",
        "size": header.size, "mode": header.mode, "uid": header.uid, "gid": header.gid,
        "mtime_ns": header.mtime_ns,
    }
    if header.atime_ns is not None:
        fields["atime_ns"] = header.atime_ns
    if header.ctime_ns is not None:
        fields["ctime_ns"] = header.ctime_ns
    if header.linkname:
        fields["target"] = os.fsdecode(header.linkname)
    return fields


class UnsafeMemberName(ValueError):
    """A member name that could climb out of an extraction folder or hide itself."""


def unsafe_name_reason(name: bytes) -> str | None:
    """Why a member name is refused (None when it is safe): a leading '/', a '..' component, an empty
    or '.' component, NUL."""
    if not name:
        return "empty name"
    if name.startswith(b"/"):
        return "leading '/'"
    if b"\0" in name:
        return "NUL byte"
    parts = name.split(b"/")
    if b".." in parts:
        return "'..' component"
    if any(p in (b"", b".") for p in parts):
        return "empty or '.' component"
    return None


def member_name(name: str | bytes) -> bytes:
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    reason = unsafe_name_reason(raw)
    if reason:
        raise UnsafeMemberName(f"refused member name {raw[:200]!r}: {reason}")
    return raw


_STOP = object()


class _Worker:
    """A thread that applies ``work`` to each item put to it, in order, through a bounded queue: the part
    of a stage that releases the GIL (SHA-256, deflate, a write) runs beside the caller's work instead of
    after it. Callers must not change a buffer after putting it, for ``depth + 1`` further puts. An error
    is kept, later items are dropped, and the caller learns of it at its next put, ``drain`` or ``close``."""

    def __init__(self, name: str, work: Callable[[Any], None], depth: int):
        self.work = work
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not _STOP:
            if isinstance(item, threading.Event):  # a drain marker: everything before it is done
                item.set()
            elif self.error is None:
                try:
                    self.work(item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller, never lost in a thread
                    self.error = exc

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def drain(self) -> None:
        """Wait until every item put so far is done."""
        done = threading.Event()
        self.queue.put(done)
        done.wait()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.queue.put(_STOP)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _update(item: tuple[Any, Any]) -> None:
    item[0].update(item[1])


class _Output:
    """Byte sink: optional gzip, counts and hashes what reaches the file (the bundle's SHA-256).

    Compression and writing run in one thread, the bundle's SHA-256 in another, both overlapping the
    caller's work (the member's hash, reading the source): SHA-256, deflate and write release the GIL, so
    on two cores the bundle's hash never waits for the member's. A sink that hashes every byte it is given
    (it has ``input_sha256() -> hex``, as the shipment does) is not hashed a second time. Callers must not
    change a buffer after passing it, for ``QUEUE + 1`` further writes; an error in a thread is raised at
    the next write or at finish."""

    QUEUE = 8

    def __init__(self, out: BinaryIO, compress: str, level: int):
        self.out = out
        sink_hash = getattr(out, "input_sha256", None)
        self._sink_hash: Callable[[], str] | None = sink_hash if callable(sink_hash) else None
        self.sha256 = None if self._sink_hash else hashlib.sha256()
        self.bytes_out = 0
        self.tar_bytes = 0
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -15) if compress == "gzip" else None
        self._crc = 0
        self.final_sha256: str | None = None
        # the bundle's hash: of the bytes as given (no compression), else of what deflate makes (in the writer)
        self._hasher = _Worker("bundle-hash", self.sha256.update, self.QUEUE) if self.sha256 is not None else None
        self._writer = _Worker("bundle-writer", self._write, self.QUEUE)
        if self._deflate:
            self._writer.put(None)  # the gzip header, written first by the writer thread

    def _emit(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.bytes_out += len(data)
            if self._deflate and self._hasher is not None:
                self._hasher.put(data)  # new bytes of deflate's: no buffer of the caller's is held

    def _write(self, data: Any) -> None:
        if data is None:
            self._emit(GZIP_HEADER)
        elif self._deflate:
            self._crc = zlib.crc32(data, self._crc)
            self._emit(self._deflate.compress(data))
        else:
            self._emit(data)

    def write(self, data: Any) -> None:
        self.tar_bytes += len(data)
        if self._hasher is not None and not self._deflate:
            self._hasher.put(data)
        self._writer.put(data)

    def hexdigest(self) -> str:
        """SHA-256 of every byte that reached the sink so far (the writer drained first)."""
        if self.final_sha256 is not None:
            return self.final_sha256
        if self._sink_hash is not None:
            return self._sink_hash()
        assert self._hasher is not None and self.sha256 is not None
        self._hasher.drain()
        return self.sha256.hexdigest()

    def finish(self) -> None:
        self._writer.close()
        if self._deflate:
            self._emit(self._deflate.flush())
            self._emit(struct.pack("<II", self._crc, self.tar_bytes & 0xFFFFFFFF))
            self._emit(gzip_seal_member(self.hexdigest()))
        self.out.flush()
        self.final_sha256 = self.hexdigest()
        if self._hasher is not None:
            self._hasher.close()


class BundleWriter:
    QUEUE_DEPTH = _Output.QUEUE

    def __init__(self, out: BinaryIO, compress: str = "gzip", level: int = 6):
        self._out = _Output(out, compress, level)
        self.compress = compress
        self.entries: list[dict[str, Any]] = []
        self._names: set[bytes] = set()
        self._hashers: list[_Worker] = []  # started at the first large member, one per hash it asks
        self.sealed = False

    @property
    def bytes_written(self) -> int:
        return self._out.bytes_out

    def _unique(self, name: bytes) -> bytes:
        if name not in self._names:
            self._names.add(name)
            return name
        n = 1
        while name + b".dup%d" % n in self._names:
            n += 1
        self._names.add(name + b".dup%d" % n)
        return name + b".dup%d" % n

    def _entry(self, header: Header, sha256: str, **extra: Any) -> dict[str, Any]:
        entry = dict(header_fields(header), sha256=sha256)
        entry.update({k: v for k, v in extra.items() if v is not None})
        self.entries.append(entry)
        return entry

    def add_bytes(self, name: str | bytes, data: bytes, mtime_ns: int, mode: int = 0o444,
                  **extra: Any) -> dict[str, Any]:
        header = Header(self._unique(member_name(name)), size=len(data), mode=mode, mtime_ns=mtime_ns)
        self._out.write(tarformat.encode(header))
        self._out.write(data)
        self._out.write(b"\0" * tarformat.pad(len(data)))
        return self._entry(header, hashlib.sha256(data).hexdigest(), **extra)

    def add_symlink(self, name: str | bytes, target: str | bytes, st: os.stat_result, **extra: Any) -> dict[str, Any]:
        header = Header(self._unique(member_name(name)), mode=st.st_mode & 0o7777, uid=st.st_uid,
                        gid=st.st_gid, mtime_ns=st.st_mtime_ns, atime_ns=st.st_atime_ns,
                        ctime_ns=st.st_ctime_ns, typeflag=tarformat.SYMTYPE,
                        linkname=target if isinstance(target, bytes) else os.fsencode(target))
        self._out.write(tarformat.encode(header))
        return self._entry(header, hashlib.sha256(b"").hexdigest(), **extra)

    def add_stream(self, name: str | bytes, read: Callable[[int], bytes], length: int, st: os.stat_result,
                   should_stop: Callable[[], bool] = lambda: False, **extra: Any) -> dict[str, Any]:
        """Copy a file's ``length`` bytes from ``read``, keeping its metadata (see _copy)."""
        header = Header(self._unique(member_name(name)), size=length, mode=st.st_mode & 0o7777,
                        uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns,
                        atime_ns=st.st_atime_ns, ctime_ns=st.st_ctime_ns)
        return self._copy(header, read, should_stop, extra)

    def add_generated(self, name: str, read: Callable[[int], bytes], length: int, mtime_ns: int,
                      should_stop: Callable[[], bool] = lambda: False, also_hash: Sequence[Any] = (),
                      **extra: Any) -> dict[str, Any]:
        """A stream we produce (a memory image): root-owned, read-only, of a size known in advance.
        ``also_hash``: further hash objects to update with the member's bytes, each in its own thread (the
        hash of a stream written in parts, over all of them), instead of a second pass by the caller."""
        header = Header(self._unique(member_name(name)), size=length, mode=0o400, mtime_ns=mtime_ns)
        return self._copy(header, read, should_stop, extra, also_hash)

    def _hash_workers(self, count: int) -> list[_Worker]:
        while len(self._hashers) < count:
            self._hashers.append(_Worker(f"member-hash-{len(self._hashers)}", _update, self._out.QUEUE))
        return self._hashers[:count]

    def _copy(self, header: Header, read: Callable[[int], bytes], should_stop: Callable[[], bool],
              extra: dict[str, Any], also_hash: Sequence[Any] = ()) -> dict[str, Any]:
        """Copy exactly ``header.size`` bytes from ``read``. The tar header needs the size first, so a
        source that ends early, or a stop request, is padded with zeros and recorded.
        ``read`` may return fewer bytes than asked; only b"" means the end. A large member is hashed in
        threads (see _Worker), in the order read, while the next chunk is read and the bundle hashed."""
        length = header.size
        self._out.write(tarformat.encode(header))
        digest = hashlib.sha256()
        hashes = [digest, *also_hash]
        workers = self._hash_workers(len(hashes)) if length >= THREADED_HASH_MIN else []
        remaining = length
        short_reason: str | None = None
        padded_from = None
        while remaining > 0:
            chunk = b""
            if short_reason is None:
                if should_stop():
                    short_reason = "interrupted"
                else:
                    try:
                        chunk = read(min(COPY_CHUNK, remaining))
                    except OSError as exc:
                        short_reason = f"read error: {exc.strerror or exc}"
                    else:
                        if not chunk:
                            short_reason = "file shrank while being read"
            if short_reason is not None:
                if padded_from is None:
                    padded_from = length - remaining
                chunk = b"\0" * min(COPY_CHUNK, remaining)
            remaining -= len(chunk)
            if workers:
                for worker, hashed in zip(workers, hashes, strict=True):
                    worker.put((hashed, chunk))
            else:
                for hashed in hashes:
                    hashed.update(chunk)
            self._out.write(chunk)
        for worker in workers:
            worker.drain()
        self._out.write(b"\0" * tarformat.pad(length))
        padded = None if short_reason is None else {"reason": short_reason, "zero_padded_from": padded_from}
        return self._entry(header, digest.hexdigest(), incomplete=padded, **extra)

    def seal(self, manifest_meta: dict[str, Any], mtime_ns: int,
             sign: Callable[[bytes], dict[str, Any]] | None = None) -> str:
        """Write the manifest, its signature when ``sign`` is given, then the seal; end the archive.
        Returns the bundle's SHA-256."""
        manifest = dict(manifest_meta, members=self.entries, compression=self.compress, sealed_at_ns=mtime_ns)
        data = canonical_json(manifest)
        self.add_bytes(MANIFEST_NAME, data, mtime_ns)
        self.entries.pop()  # the manifest does not list itself; the seal covers it
        if sign is not None:  # it signs the manifest's bytes, so it cannot be listed in it; the seal covers it
            self.add_bytes(SIG_NAME, canonical_json(sign(data)), mtime_ns)
            self.entries.pop()
        seal_data = seal_document(hashlib.sha256(data).hexdigest(), self._out.tar_bytes)
        header = Header(member_name(SEAL_NAME), size=len(seal_data), mode=0o444, mtime_ns=mtime_ns)
        self._out.write(tarformat.encode(header) + seal_data + b"\0" * tarformat.pad(len(seal_data)))
        end = 2 * tarformat.BLOCK
        end += -(self._out.tar_bytes + end) % tarformat.RECORD
        self._out.write(b"\0" * end)
        self._out.finish()
        for worker in self._hashers:
            worker.close()
        self.sealed = True
        return self._out.hexdigest()
