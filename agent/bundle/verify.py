"""Integrity check of a bundle: any changed byte is found and named.

Layers, each strict: our exact gzip header, the deflate stream with its CRC-32 and length, every
tar header re-encoded and compared byte for byte, padding and end-of-archive all zero, every
member's content and metadata against the manifest, the manifest against the seal, and the seal's
hash over every tar byte before it. A sidecar ``BUNDLE.sha256`` is checked too when present.

Strict about names too, whatever the seal says (anyone can seal a bundle): a member name with a ``..``,
empty or ``.`` component, a leading ``/``, NUL or a control character, a link leading out of
``fs/$rootfs$/`` (or anywhere else), and a name no collector writes in that place are each a named
problem (agent/bundle/reader.py ``member_problem``). Bounded whatever the bundle: it is read through
agent/bundle/reader.py, keeping only the manifest, the signature and the seal.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from agent.bundle import tarformat
from agent.bundle.reader import (
    MANIFEST_CAP,
    BundleError,
    BundleReader,
    Manifest,
    TooLarge,
    loads_bounded,
    open_regular,
    quoted,
    shown,
)
from agent.bundle.writer import MANIFEST_NAME, SEAL_NAME, SIG_NAME, canonical_json, header_fields, seal_document

READ_CHUNK = 1 << 20
MAX_MEMBERS = 250_000  # the collector's file budgets stay far below; each member costs verify ~250 bytes
PROBLEM_LIMIT = 1000  # problems kept (all are counted)
SMALL_CAP = 1 << 20  # the seal and the signature


class _Damaged(Exception):
    pass


@dataclass
class _Special:
    """The manifest, the signature or the seal: the only members whose bytes verify keeps."""
    header: tarformat.Header
    sha256: str
    data: bytes | None


@dataclass
class Result:
    path: str
    problems: list[str] = field(default_factory=list)
    members: int = 0
    status: str | None = None
    bundle_sha256: str | None = None
    plaintext_sha256: str | None = None  # of the decrypted bundle, when it was encrypted
    signature: str | None = None  # what the manifest's signature check found, when the bundle is signed
    problem_count: int = 0
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # manifest entries asked for (``keep``)
    manifest_read: bool = False  # the manifest could be compared with the members (``entries`` is complete)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < PROBLEM_LIMIT:
            self.problems.append(problem)

    def summary(self) -> dict[str, Any]:
        return {"verified": self.ok, "bundle": self.path, "bundle_sha256": self.bundle_sha256,
                **({"plaintext_sha256": self.plaintext_sha256} if self.plaintext_sha256 else {}),
                **({"signature": self.signature} if self.signature else {}),
                "members": self.members, "collection_status": shown(self.status) if self.status else self.status,
                "problems": self.problems[:20], "problem_count": max(self.problem_count, len(self.problems))}


def _read_members(reader: BundleReader, result: Result) -> tuple[list[bytes], dict[str, _Special], int | None]:
    """Walk the tar strictly, keeping of each member only its metadata as the manifest lists it and the
    SHA-256 of its content (``canonical header fields JSON + 32 digest bytes``); the manifest, signature
    and seal are kept whole. Returns those, and the offset where the seal starts."""
    seen: list[bytes] = []
    special: dict[str, _Special] = {}
    names: set[bytes] = set()
    prefix_at_seal = None
    try:
        for member in reader:
            if len(seen) >= MAX_MEMBERS:
                raise _Damaged(f"more than {MAX_MEMBERS} members: not a bundle triagent writes (not read further)")
            name = member.name
            if member.problem:
                result.add(f"member {quoted(name)}: {member.problem}")
            if member.raw_name in names:
                result.add(f"member {quoted(name)}: a second member of the same name (one hides the other)")
            names.add(member.raw_name)
            if name == SEAL_NAME:
                prefix_at_seal = member.offset
            data = None
            if name in (MANIFEST_NAME, SIG_NAME, SEAL_NAME) and member.kind == "file":
                try:
                    data = member.read_all(MANIFEST_CAP if name == MANIFEST_NAME else SMALL_CAP)
                except TooLarge as exc:
                    result.add(str(exc))
            member.finish()
            digest = member.digest.digest()  # type: ignore[union-attr]
            if data is not None or name in (MANIFEST_NAME, SIG_NAME, SEAL_NAME):
                special[name] = _Special(member.header, digest.hex(), data)
            seen.append(canonical_json(header_fields(member.header))[:-1] + digest)
    except BundleError as exc:
        raise _Damaged(str(exc)) from None
    return seen, special, prefix_at_seal


def _name_of(record: bytes) -> str:
    return json.loads(record[:-32]).get("name", "")


def _check(seen: list[bytes], special: dict[str, _Special], prefix_at_seal: int | None, result: Result,
           public_key: str | None = None, keep: Callable[[str], bool] | None = None) -> None:
    signed = len(seen) >= 3 and _name_of(seen[-2]) == SIG_NAME
    tail = 3 if signed else 2
    if len(seen) < tail or _name_of(seen[-1]) != SEAL_NAME or _name_of(seen[-tail]) != MANIFEST_NAME \
            or MANIFEST_NAME not in special or SEAL_NAME not in special:
        result.add("bundle has no manifest and seal at its end (incomplete or truncated)")
        return
    manifest_member, seal_member = special[MANIFEST_NAME], special[SEAL_NAME]
    sig_member = special.get(SIG_NAME) if signed else None
    if manifest_member.data is None or seal_member.data is None:
        return  # too large: already named
    try:
        seal = loads_bounded(seal_member.data)
        manifest = Manifest(manifest_member.data, canonical=True)
        if not isinstance(seal, dict):
            raise ValueError("not an object")
    except ValueError:
        result.add(f"{SEAL_NAME} or {MANIFEST_NAME}: not valid JSON (altered)")
        return
    prefix_bytes = prefix_at_seal or 0
    expected_seal = seal_document(manifest_member.sha256, prefix_bytes)
    if expected_seal != seal_member.data:
        if canonical_json(seal) != seal_member.data or set(seal) != set(json.loads(expected_seal)) \
                or seal.get("format") != json.loads(expected_seal)["format"]:
            result.add(f"member {SEAL_NAME!r}: content altered")
        elif seal.get("prefix_bytes") != prefix_bytes:
            result.add(f"member {SEAL_NAME!r}: content altered (prefix length)")
    if not manifest.canonical or seal.get("manifest_sha256") != manifest_member.sha256:
        result.add(f"member {MANIFEST_NAME!r}: content altered")
    fields = manifest.fields
    result.status = fields.get("status") if isinstance(fields.get("status"), str) else None
    sealed_at = fields.get("sealed_at_ns")
    for member in (manifest_member, seal_member) + ((sig_member,) if sig_member else ()):
        h = member.header
        if (h.mode, h.uid, h.gid, h.mtime_ns, h.atime_ns, h.ctime_ns) != (0o444, 0, 0, sealed_at, None, None):
            result.add(f"member {quoted(h.name)}: tar metadata altered")
    _check_signature(manifest_member, sig_member, fields, public_key, result)
    listed = manifest.entries()
    result.manifest_read = True
    try:
        for record in seen[:-tail]:
            actual = json.loads(record[:-32])
            name = actual["name"]
            entry = next(listed, None)
            if not isinstance(entry, dict) or entry.get("name") != name:
                result.add(f"member {quoted(name)}: not listed in the manifest at this position")
                continue
            if keep is not None and keep(name):
                result.entries[name] = entry
            expected = {k: entry.get(k) for k in actual}
            if set(entry) & {"atime_ns", "ctime_ns", "target"} - set(actual):
                result.add(f"member {quoted(name)}: tar metadata altered")
            elif expected != actual:
                changed = sorted(k for k in actual if expected[k] != actual[k])
                result.add(f"member {quoted(name)}: tar metadata altered ({', '.join(changed)})")
            if entry.get("sha256") != record[-32:].hex():
                result.add(f"member {quoted(name)}: content altered (SHA-256 mismatch)")
        for entry in listed:
            name = entry.get("name") if isinstance(entry, dict) else entry
            result.add(f"member {quoted(str(name))}: listed in the manifest but missing")
    except ValueError as exc:
        result.add(f"member {MANIFEST_NAME!r}: {exc}")
    if expected_seal != seal_member.data and not result.problems:
        result.add(f"member {SEAL_NAME!r}: content altered")


def _check_signature(manifest_member: _Special, sig_member: _Special | None, manifest: dict[str, Any],
                     public_key: str | None, result: Result) -> None:
    signer = manifest.get("signer")
    if sig_member is None:
        if signer:
            result.add(f"member {SIG_NAME!r}: removed (the manifest names signer {quoted(signer)})")
        elif public_key:
            result.add("the bundle is not signed (--public-key was given)")
        return
    from agent.bundle.signing import verify_signature

    try:
        sig = loads_bounded(sig_member.data or b"")
        if not isinstance(sig, dict):
            raise ValueError("not an object")
    except ValueError:
        result.add(f"member {SIG_NAME!r}: content altered (not JSON)")
        return
    if canonical_json(sig) != sig_member.data:
        result.add(f"member {SIG_NAME!r}: content altered")
        return
    ok, message = verify_signature(manifest_member.data or b"", sig, public_key)
    if not ok:
        result.add(f"member {SIG_NAME!r}: {shown(message)}")
    elif signer != sig.get("fingerprint"):
        result.add(f"member {SIG_NAME!r}: signed by {quoted(sig.get('fingerprint'))}, the manifest names "
                   f"{quoted(signer)}")
    result.signature = shown(message)


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


def verify(path: str, identities: list[Any] | None = None, public_key: str | None = None,
           keep: Callable[[str], bool] | None = None) -> Result:
    """Check a bundle; with ``identities`` an age-encrypted one is decrypted on the fly (each chunk
    authenticated) and its members checked; the sidecar .sha256 is then compared with the encrypted bytes.
    ``keep(name)`` asks for the manifest entries of those members (``result.entries``). Memory stays
    bounded whatever the bundle (agent/bundle/reader.py): only the manifest, signature and seal are kept."""
    result = Result(path)
    try:
        f = open_regular(path) if path != "-" else os.fdopen(os.dup(0), "rb")
    except OSError as exc:
        result.add(f"cannot open bundle: {shown(exc.strerror or exc)}")
        return result
    reader = None
    raw: _Hashed | None = None
    with f:
        try:
            source: Any = f
            if not identities and f.peek(32)[:19] == b"age-encryption.org/":  # type: ignore[attr-defined]
                raise _Damaged("the bundle is encrypted (age): give --identity KEY to decrypt and verify it")
            if identities:
                from agent.bundle.age import AgeError, AgeReader

                raw = _Hashed(f)
                try:
                    source = AgeReader(raw, identities)
                except AgeError as exc:
                    raise _Damaged(f"cannot decrypt: {exc}") from None
            try:
                reader = BundleReader(source, strict=True, hash_members=True, hash_file=True)
            except BundleError as exc:
                raise _Damaged(str(exc)) from None
            seen, special, prefix_at_seal = _read_members(reader, result)
            result.members = len(seen)
            _check(seen, special, prefix_at_seal, result, public_key, keep)
        except _Damaged as exc:
            result.add(str(exc))
        except (OSError, ValueError) as exc:  # age errors are ValueErrors: tampered or truncated ciphertext
            result.add(f"cannot read bundle: {shown(getattr(exc, 'strerror', None) or exc)}")
        if reader is not None:
            try:
                complete = reader.src.drain_file()
            except ValueError as exc:
                result.add(f"cannot decrypt the rest of the bundle: {shown(exc)}")
                complete = True
            if complete:
                result.bundle_sha256 = reader.src.file_sha256.hexdigest()  # type: ignore[union-attr]
            else:
                result.add("more than 16 MiB of data after the end of the bundle (not hashed)")
        if raw is not None:
            while raw.read(READ_CHUNK):
                pass
            result.plaintext_sha256, result.bundle_sha256 = result.bundle_sha256, raw.sha256.hexdigest()
    sidecar = path + ".sha256"
    if path != "-" and os.path.isfile(sidecar) and result.bundle_sha256:
        try:
            with open_regular(sidecar) as s:
                recorded = s.read(4096).decode("utf-8", "replace").split(" ", 1)[0].strip()
        except OSError:
            recorded = None
        if recorded != result.bundle_sha256:
            result.add(f"bundle SHA-256 differs from {quoted(os.path.basename(sidecar))}")
    return result
