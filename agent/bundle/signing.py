"""Ed25519 signature of a bundle's manifest (member ``triagent/manifest.sig.json``).

The manifest lists every other member's SHA-256, so signing it signs the bundle. The signature is
an OpenSSH SSHSIG blob (PROTOCOL.sshsig) with its own namespace: an SSH login key reused here can
never be made to sign anything an SSH server would accept, and an examiner can check a bundle
without triagent: the document carries the same signature armored (``armored``, the text that
``ssh-keygen -Y verify -s`` reads; the README has the recipe), and verify demands it be that signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.bundle.writer import MANIFEST_NAME

SIGNED_NAME = MANIFEST_NAME
NAMESPACE = "triagent-manifest"
SIG_FORMAT = "sshsig/1"
_MAGIC = b"SSHSIG"
_KEY_TYPE = b"ssh-ed25519"
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_SSH_LINE = re.compile(r"(?:^|\s)ssh-ed25519\s+([A-Za-z0-9+/]+=*)")


class SigningError(ValueError):
    pass


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_strings(blob: bytes, count: int) -> list[bytes]:
    """Exactly ``count`` SSH wire strings filling ``blob``; anything else is malformed."""
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(blob):
            raise SigningError("truncated")
        (length,) = struct.unpack(">I", blob[pos:pos + 4])
        pos += 4
        if pos + length > len(blob):
            raise SigningError("truncated")
        out.append(blob[pos:pos + length])
        pos += length
    if pos != len(blob):
        raise SigningError("trailing bytes")
    return out


def _key_blob(key: Ed25519PublicKey) -> bytes:
    return _string(_KEY_TYPE) + _string(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _key_from_blob(blob: bytes) -> Ed25519PublicKey:
    key_type, raw = _read_strings(blob, 2)
    if key_type != _KEY_TYPE or len(raw) != 32:
        raise SigningError(f"not an Ed25519 public key ({key_type.decode('ascii', 'replace')})")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_line(key: Ed25519PublicKey) -> str:
    """The ``ssh-ed25519 AAAA...`` form (as in a .pub or authorized_keys file, without comment)."""
    return "ssh-ed25519 " + base64.b64encode(_key_blob(key)).decode("ascii")


def fingerprint(key: Ed25519PublicKey) -> str:
    """As ``ssh-keygen -l`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(_key_blob(key)).digest()).decode("ascii").rstrip("=")


def load_private_key(path: str) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 key: OpenSSH format (``ssh-keygen -t ed25519 -N ''``) or PEM PKCS#8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SigningError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        elif b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data:
            raise SigningError(f"{path}: the key is encrypted; give an unencrypted Ed25519 key")
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying a passphrase is needed
        raise SigningError(f"{path}: the key is encrypted; give an unencrypted Ed25519 key") from None
    except SigningError:
        raise
    except (ValueError, UnsupportedAlgorithm):
        if data.lstrip().startswith((b"ssh-", b"ecdsa-", b"-----BEGIN PUBLIC KEY")):
            raise SigningError(f"{path}: this is a public key; give the private key") from None
        raise SigningError(f"{path}: not an OpenSSH or PEM PKCS#8 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 key ({type(key).__name__.removesuffix('PrivateKey')})")
    return key


def load_public_key(text_or_path: str) -> Ed25519PublicKey:
    """An ``ssh-ed25519 AAAA...`` line (a .pub file, an authorized_keys or allowed_signers line) or a
    PEM public key, given as text or as the path of a file holding it."""
    text = text_or_path
    if not text.lstrip().startswith(("ssh-", "-----BEGIN")) and os.path.isfile(text):
        try:
            with open(text, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as exc:
            raise SigningError(f"cannot read public key {text_or_path}: {exc.strerror or exc}") from None
    if "-----BEGIN" in text:
        try:
            key: Any = serialization.load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningError(f"not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningError(f"not an Ed25519 public key ({type(key).__name__.removesuffix('PublicKey')})")
        return key
    match = _SSH_LINE.search(text)
    if not match:
        other = re.search(r"(?:^|\s)((?:ssh|ecdsa|sk)-[\w@.-]+)\s+AAAA", text)
        if other:
            raise SigningError(f"not an Ed25519 public key ({other.group(1)})")
        raise SigningError("no ssh-ed25519 public key found (expected 'ssh-ed25519 AAAA...' or a PEM key)")
    try:
        return _key_from_blob(base64.b64decode(match.group(1), validate=True))
    except (binascii.Error, SigningError) as exc:
        raise SigningError(f"malformed ssh-ed25519 public key ({exc})") from None


def _signed_data(namespace: str, hash_name: str, message: bytes) -> bytes:
    return (_MAGIC + _string(namespace.encode()) + _string(b"") + _string(hash_name.encode())
            + _string(_HASHES[hash_name](message).digest()))


def sign_manifest(manifest_bytes: bytes, key: Ed25519PrivateKey) -> dict[str, Any]:
    """The signature document for ``manifest_bytes`` (the exact bytes of triagent/manifest.json)."""
    public = key.public_key()
    raw = key.sign(_signed_data(NAMESPACE, "sha512", manifest_bytes))
    blob = (_MAGIC + struct.pack(">I", 1) + _string(_key_blob(public)) + _string(NAMESPACE.encode())
            + _string(b"") + _string(b"sha512") + _string(_string(_KEY_TYPE) + _string(raw)))
    sig = {"format": SIG_FORMAT, "algorithm": "ed25519", "namespace": NAMESPACE,
           "public_key": public_key_line(public), "fingerprint": fingerprint(public),
           "signature": base64.b64encode(blob).decode("ascii"),
           "signed": SIGNED_NAME, "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest()}
    sig["armored"] = sshsig_armor(sig)  # for `ssh-keygen -Y verify` without triagent
    return sig


def sshsig_armor(sig: dict[str, Any]) -> str:
    """The signature as ``ssh-keygen -Y verify -n triagent-manifest -s FILE`` reads it."""
    body = sig["signature"]
    lines = [body[i:i + 70] for i in range(0, len(body), 70)]
    return "-----BEGIN SSH SIGNATURE-----\n" + "\n".join(lines) + "\n-----END SSH SIGNATURE-----\n"


def verify_signature(manifest_bytes: bytes, sig: dict[str, Any],
                     public_key_text_or_path: str | None) -> tuple[bool, str]:
    """Check ``sig`` (the parsed triagent/manifest.sig.json) against the manifest bytes and the key
    the examiner expects. With no expected key only the signature's own consistency is checked, and
    the message says so: anyone can sign with a key of their own."""
    if not isinstance(sig, dict):
        return False, "signature document is not a JSON object"
    missing = sorted({"format", "algorithm", "namespace", "public_key", "fingerprint", "signature", "signed",
                      "manifest_sha256"} - set(sig))
    if missing:
        return False, f"signature document lacks {', '.join(missing)}"
    if sig["format"] != SIG_FORMAT or sig["algorithm"] != "ed25519" or sig["namespace"] != NAMESPACE:
        return False, (f"unsupported signature ({sig['format']!r}, {sig['algorithm']!r}, namespace "
                       f"{sig['namespace']!r}); expected {SIG_FORMAT!r}, 'ed25519', {NAMESPACE!r}")
    if sig["signed"] != SIGNED_NAME:
        return False, f"the signature is over {sig['signed']!r}, not {SIGNED_NAME!r}"
    try:
        listed_key = load_public_key(str(sig["public_key"]))
    except SigningError as exc:
        return False, f"public key in the signature document: {exc}"
    signer = fingerprint(listed_key)
    if sig["fingerprint"] != signer:
        return False, f"fingerprint {sig['fingerprint']!r} does not belong to the listed public key ({signer})"
    if public_key_text_or_path is not None:
        try:
            expected = load_public_key(public_key_text_or_path)
        except SigningError as exc:
            return False, f"expected public key: {exc}"
        if _key_blob(expected) != _key_blob(listed_key):
            return False, f"signed by {signer}, not by the expected key {fingerprint(expected)}"
    try:
        blob = base64.b64decode(str(sig["signature"]), validate=True)
        if blob[:6] != _MAGIC or blob[6:10] != struct.pack(">I", 1):
            raise SigningError("not an SSHSIG version 1 blob")
        key_blob, namespace, _reserved, hash_name, inner = _read_strings(blob[10:], 5)
        inner_type, raw = _read_strings(inner, 2)
    except (binascii.Error, SigningError) as exc:
        return False, f"signature malformed ({exc})"
    if key_blob != _key_blob(listed_key):
        return False, f"the key inside the signature is not the listed public key {signer} (key swapped)"
    hash_text = hash_name.decode("ascii", "replace")
    if namespace != NAMESPACE.encode() or inner_type != _KEY_TYPE or hash_text not in _HASHES:
        return False, (f"signature made for another purpose (namespace {namespace.decode('ascii', 'replace')!r}, "
                       f"hash {hash_text!r}); triagent signs with namespace {NAMESPACE!r}")
    if hashlib.sha256(manifest_bytes).hexdigest() != sig["manifest_sha256"]:
        return False, f"{SIGNED_NAME} is not the signed manifest (SHA-256 differs: altered after signing)"
    try:
        listed_key.verify(raw, _signed_data(NAMESPACE, hash_text, manifest_bytes))
    except InvalidSignature:
        return False, f"signature does not verify with {signer} (manifest or signature altered)"
    if "armored" in sig and sig["armored"] != sshsig_armor(sig):
        # optional (older documents lack it), but when present it is what a reader without triagent checks
        return False, "the armored signature (for ssh-keygen) is not this document's signature (altered)"
    if public_key_text_or_path is None:
        return True, f"signature valid, made by {signer} (signer not checked: no expected public key given)"
    return True, f"good signature by the expected key {signer}"
