"""Integrity check of a bundle: any changed byte is found and named.

Layers, each strict: our exact gzip header, the deflate stream with its CRC-32 and length, every
tar header re-encoded and compared byte for byte, padding and end-of-archive all zero, every
member's content and metadata against the manifest, the manifest against the seal, and the seal's
hash over every tar byte before it. A sidecar ``BUNDLE.sha256`` is checked too when present.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from agent import tarformat
from agent.bundle import (
    GZIP_HEADER,
    MANIFEST_NAME,
    SEAL_NAME,
    SIG_NAME,
    canonical_json,
    gzip_seal_member,
    header_fields,
    seal_document,
)

READ_CHUNK = 1 << 20


class _Damaged(Exception):
    pass


class _TarStream:
    """Uncompressed tar bytes from a file, through a strict gzip decoder when compressed."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.file_sha256 = hashlib.sha256()
        self.buffer = bytearray()
        self.position = 0  # offset in the uncompressed tar
        self.eof = False
        head = self._read_file(len(GZIP_HEADER))
        self.gzip = head[:2] == b"\x1f\x8b"
        if self.gzip:
            if head != GZIP_HEADER:
                raise _Damaged("gzip header altered (not the one triagent writes)")
            self._inflate = zlib.decompressobj(-15)
            self._sealed_part = hashlib.sha256(head)
            self._crc = 0
            self._size = 0
        else:
            self.buffer += head

    def _read_file(self, n: int) -> bytes:
        data = self.f.read(n)
        self.file_sha256.update(data)
        return data

    def _fill(self) -> bool:
        if self.eof:
            return False
        raw = self._read_file(READ_CHUNK)
        if not self.gzip:
            if not raw:
                self.eof = True
                return False
            self.buffer += raw
            return True
        try:
            data = self._inflate.decompress(raw) if raw else b""
        except zlib.error as exc:
            raise _Damaged(f"compressed stream damaged ({exc})") from None
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self.buffer += data
        if not self._inflate.eof:
            if not raw:
                raise _Damaged("compressed stream truncated")
            self._sealed_part.update(raw)
        else:
            unused = self._inflate.unused_data
            self._sealed_part.update(raw[:len(raw) - len(unused)])
            trailer, tail = unused[:8], unused[8:]
            trailer += self._read_file(8 - len(trailer))
            self._sealed_part.update(trailer)
            if trailer != struct.pack("<II", self._crc, self._size & 0xFFFFFFFF):
                raise _Damaged("compressed stream CRC/length mismatch")
            # The compressed bytes' own seal covers every file byte before it.
            expected = gzip_seal_member(self._sealed_part.hexdigest())
            seal = tail + self._read_file(len(expected) + 1 - len(tail))
            if seal != expected:
                raise _Damaged("compressed bytes altered (gzip seal mismatch: deflate or gzip framing changed)")
            self.eof = True
        return True

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n and self._fill():
            pass
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        self.position += len(data)
        return data

    def drain_to_end(self) -> bytes:
        out = bytearray()
        while True:
            chunk = self.read(READ_CHUNK)
            if not chunk:
                return bytes(out)
            out += chunk.strip(b"\0")[:1]  # keep only evidence that something non-zero is there


@dataclass
class Member:
    header: tarformat.Header
    sha256: str
    data: bytes | None  # kept only for our own small metadata members


@dataclass
class Result:
    path: str
    problems: list[str] = field(default_factory=list)
    members: int = 0
    status: str | None = None
    bundle_sha256: str | None = None
    plaintext_sha256: str | None = None  # of the decrypted bundle, when it was encrypted
    signature: str | None = None  # what the manifest's signature check found, when the bundle is signed

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        return {"verified": self.ok, "bundle": self.path, "bundle_sha256": self.bundle_sha256,
                **({"plaintext_sha256": self.plaintext_sha256} if self.plaintext_sha256 else {}),
                **({"signature": self.signature} if self.signature else {}),
                "members": self.members, "collection_status": self.status,
                "problems": self.problems[:20], "problem_count": len(self.problems)}


def _read_members(stream: _TarStream, result: Result) -> tuple[list[Member], int | None]:
    """Walk the tar strictly. Returns the members and the offset where the seal starts."""
    members: list[Member] = []
    prefix_at_seal = None
    last = "(start of bundle)"
    while True:
        try:
            parsed = tarformat.decode(stream.read)
        except tarformat.TarFormatError as exc:
            raise _Damaged(f"header of the member after {last!r}: {exc}") from None
        if parsed is None:
            break
        header, _raw = parsed
        name = os.fsdecode(header.name)
        if name == SEAL_NAME:
            prefix_at_seal = stream.position - len(_raw)
        if header.typeflag not in (tarformat.REGTYPE, tarformat.SYMTYPE):
            raise _Damaged(f"member {name!r}: unexpected tar entry type {header.typeflag!r}")
        digest = hashlib.sha256()
        keep = name.startswith("triagent/") and header.size <= 64 << 20
        kept = bytearray()
        remaining = header.size
        while remaining:
            chunk = stream.read(min(READ_CHUNK, remaining))
            if not chunk:
                raise _Damaged(f"member {name!r}: bundle ends inside its content")
            digest.update(chunk)
            if keep:
                kept += chunk
            remaining -= len(chunk)
        padding = stream.read(tarformat.pad(header.size))
        if padding.strip(b"\0") or len(padding) != tarformat.pad(header.size):
            raise _Damaged(f"member {name!r}: padding after its content altered")
        members.append(Member(header, digest.hexdigest(), bytes(kept) if keep else None))
        last = name
    if stream.position % tarformat.BLOCK:
        raise _Damaged("archive length is not a multiple of 512")
    if stream.drain_to_end():
        raise _Damaged(f"non-zero bytes after the end-of-archive marker (after {last!r})")
    if (stream.position) % tarformat.RECORD:
        raise _Damaged("archive end is not padded to a full tar record")
    return members, prefix_at_seal


def _check(members: list[Member], prefix_at_seal: int | None, result: Result, public_key: str | None = None) -> None:
    signed = len(members) >= 3 and os.fsdecode(members[-2].header.name) == SIG_NAME
    tail = 3 if signed else 2
    if len(members) < tail or os.fsdecode(members[-1].header.name) != SEAL_NAME \
            or os.fsdecode(members[-tail].header.name) != MANIFEST_NAME:
        result.problems.append("bundle has no manifest and seal at its end (incomplete or truncated)")
        return
    manifest_member, seal_member = members[-tail], members[-1]
    sig_member = members[-2] if signed else None
    try:
        seal = json.loads(seal_member.data or b"")
        manifest = json.loads(manifest_member.data or b"")
    except ValueError:
        result.problems.append(f"{SEAL_NAME} or {MANIFEST_NAME}: not valid JSON (altered)")
        return
    prefix_bytes = prefix_at_seal or 0
    expected_seal = seal_document(manifest_member.sha256, prefix_bytes)
    if expected_seal != seal_member.data:
        if canonical_json(seal) != seal_member.data or set(seal) != set(json.loads(expected_seal)) \
                or seal.get("format") != json.loads(expected_seal)["format"]:
            result.problems.append(f"member {SEAL_NAME!r}: content altered")
        elif seal.get("prefix_bytes") != prefix_bytes:
            result.problems.append(f"member {SEAL_NAME!r}: content altered (prefix length)")
    if canonical_json(manifest) != manifest_member.data or seal.get("manifest_sha256") != manifest_member.sha256:
        result.problems.append(f"member {MANIFEST_NAME!r}: content altered")
    result.status = manifest.get("status")
    sealed_at = manifest.get("sealed_at_ns")
    for member in (manifest_member, seal_member) + ((sig_member,) if sig_member else ()):
        h = member.header
        if (h.mode, h.uid, h.gid, h.mtime_ns, h.atime_ns, h.ctime_ns) != (0o444, 0, 0, sealed_at, None, None):
            result.problems.append(f"member {os.fsdecode(h.name)!r}: tar metadata altered")
    _check_signature(manifest_member, sig_member, manifest, public_key, result)
    listed = manifest.get("members", [])
    body = members[:-tail]
    for index, member in enumerate(body):
        name = os.fsdecode(member.header.name)
        entry = listed[index] if index < len(listed) else None
        if entry is None or entry.get("name") != name:
            result.problems.append(f"member {name!r}: not listed in the manifest at this position")
            continue
        expected = {k: entry.get(k) for k in header_fields(member.header)}
        actual = header_fields(member.header)
        if set(entry) & {"atime_ns", "ctime_ns", "target"} - set(actual):
            result.problems.append(f"member {name!r}: tar metadata altered")
        elif expected != actual:
            changed = sorted(k for k in actual if expected[k] != actual[k])
            result.problems.append(f"member {name!r}: tar metadata altered ({', '.join(changed)})")
        if entry.get("sha256") != member.sha256:
            result.problems.append(f"member {name!r}: content altered (SHA-256 mismatch)")
    for entry in listed[len(body):]:
        result.problems.append(f"member {entry.get('name')!r}: listed in the manifest but missing")
    if expected_seal != seal_member.data and not result.problems:
        result.problems.append(f"member {SEAL_NAME!r}: content altered")


def _check_signature(manifest_member: Member, sig_member: Member | None, manifest: dict[str, Any],
                     public_key: str | None, result: Result) -> None:
    signer = manifest.get("signer")
    if sig_member is None:
        if signer:
            result.problems.append(f"member {SIG_NAME!r}: removed (the manifest names signer {signer})")
        elif public_key:
            result.problems.append("the bundle is not signed (--public-key was given)")
        return
    from agent.signing import verify_signature

    try:
        sig = json.loads(sig_member.data or b"")
    except ValueError:
        result.problems.append(f"member {SIG_NAME!r}: content altered (not JSON)")
        return
    if canonical_json(sig) != sig_member.data:
        result.problems.append(f"member {SIG_NAME!r}: content altered")
        return
    ok, message = verify_signature(manifest_member.data or b"", sig, public_key)
    if not ok:
        result.problems.append(f"member {SIG_NAME!r}: {message}")
    elif signer != sig.get("fingerprint"):
        result.problems.append(f"member {SIG_NAME!r}: signed by {sig.get('fingerprint')}, the manifest names "
                               f"{signer}")
    result.signature = message


class _Hashed:
    """The raw bytes of an encrypted bundle, hashed as they are read (the shipped SHA-256)."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha256 = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha256.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def verify(path: str, identities: list[Any] | None = None, public_key: str | None = None) -> Result:
    """Check a bundle; with ``identities`` an age-encrypted one is decrypted on the fly (each chunk
    authenticated) and its members checked; the sidecar .sha256 is then compared with the encrypted bytes."""
    result = Result(path)
    try:
        f = open(path, "rb") if path != "-" else os.fdopen(os.dup(0), "rb")
    except OSError as exc:
        result.problems.append(f"cannot open bundle: {exc.strerror or exc}")
        return result
    stream = None
    raw: _Hashed | None = None
    with f:
        try:
            source: Any = f
            if not identities and f.peek(32)[:19] == b"age-encryption.org/":  # type: ignore[attr-defined]
                raise _Damaged("the bundle is encrypted (age): give --identity KEY to decrypt and verify it")
            if identities:
                from agent.age import AgeError, AgeReader

                raw = _Hashed(f)
                try:
                    source = AgeReader(raw, identities)
                except AgeError as exc:
                    raise _Damaged(f"cannot decrypt: {exc}") from None
            stream = _TarStream(source)
            members, prefix_at_seal = _read_members(stream, result)
            result.members = len(members)
            _check(members, prefix_at_seal, result, public_key)
        except _Damaged as exc:
            result.problems.append(str(exc))
        except (OSError, ValueError) as exc:  # age errors are ValueErrors: tampered or truncated ciphertext
            result.problems.append(f"cannot read bundle: {getattr(exc, 'strerror', None) or exc}")
        if stream is not None:
            try:
                while stream._read_file(READ_CHUNK):
                    pass
            except ValueError as exc:
                result.problems.append(f"cannot decrypt the rest of the bundle: {exc}")
            result.bundle_sha256 = stream.file_sha256.hexdigest()
        if raw is not None:
            while raw.read(READ_CHUNK):
                pass
            result.plaintext_sha256, result.bundle_sha256 = result.bundle_sha256, raw.sha256.hexdigest()
    sidecar = path + ".sha256"
    if path != "-" and os.path.exists(sidecar) and result.bundle_sha256:
        with open(sidecar, encoding="utf-8", errors="replace") as s:
            recorded = s.read().split(" ", 1)[0].strip()
        if recorded != result.bundle_sha256:
            result.problems.append(f"bundle SHA-256 differs from {os.path.basename(sidecar)}")
    return result
