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
from collections.abc import Callable
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


class _Output:
    """Byte sink: optional gzip, counts and hashes what reaches the file (the bundle's SHA-256).

    Compression, hashing and writing run in their own thread, overlapping the caller's work (the
    member hash, reading the source). Callers must not change a buffer after passing it, for
    ``QUEUE + 1`` further writes; an error in the thread is raised at the next write or at finish."""

    QUEUE = 8

    def __init__(self, out: BinaryIO, compress: str, level: int):
        self.out = out
        self.sha256 = hashlib.sha256()
        self.bytes_out = 0
        self.tar_bytes = 0
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -15) if compress == "gzip" else None
        self._crc = 0
        self._queue: queue.Queue = queue.Queue(maxsize=self.QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bundle-writer", daemon=True)
        self._thread.start()
        if self._deflate:
            self._emit(GZIP_HEADER)

    def _emit(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.sha256.update(data)
            self.bytes_out += len(data)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the caller learns of the error at its next write
            try:
                if self._deflate:
                    self._crc = zlib.crc32(data, self._crc)
                    self._emit(self._deflate.compress(data))
                else:
                    self._emit(data)
            except BaseException as exc:
                self._error = exc

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self.tar_bytes += len(data)
        self._queue.put(data)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._deflate:
            self._emit(self._deflate.flush())
            self._emit(struct.pack("<II", self._crc, self.tar_bytes & 0xFFFFFFFF))
            self._emit(gzip_seal_member(self.sha256.hexdigest()))
        self.out.flush()


class BundleWriter:
    QUEUE_DEPTH = _Output.QUEUE

    def __init__(self, out: BinaryIO, compress: str = "gzip", level: int = 6):
        self._out = _Output(out, compress, level)
        self.compress = compress
        self.entries: list[dict[str, Any]] = []
        self._names: set[bytes] = set()
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
                      should_stop: Callable[[], bool] = lambda: False, **extra: Any) -> dict[str, Any]:
        """A stream we produce (a memory image): root-owned, read-only, of a size known in advance."""
        header = Header(self._unique(member_name(name)), size=length, mode=0o400, mtime_ns=mtime_ns)
        return self._copy(header, read, should_stop, extra)

    def _copy(self, header: Header, read: Callable[[int], bytes], should_stop: Callable[[], bool],
              extra: dict[str, Any]) -> dict[str, Any]:
        """Copy exactly ``header.size`` bytes from ``read``. The tar header needs the size first, so a
        source that ends early, or a stop request, is padded with zeros and recorded.
        ``read`` may return fewer bytes than asked; only b"" means the end."""
        length = header.size
        self._out.write(tarformat.encode(header))
        digest = hashlib.sha256()
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
            digest.update(chunk)
            self._out.write(chunk)
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
        self.sealed = True
        return self._out.sha256.hexdigest()
