"""Streaming encryption and decryption in the standard age format (age-encryption.org/v1).

A bundle encrypted here opens with the stock tools (``age -d -i KEY``) and one made by ``age -r``
opens here, so a responder never depends on triagent to read evidence. Recipients: native X25519
(``age1...``), ``ssh-ed25519`` and ``ssh-rsa`` public keys. Identities: ``AGE-SECRET-KEY-1...``
files and unencrypted OpenSSH (or PEM RSA) private keys. The ASCII armor and scrypt (passphrase)
stanzas are not supported.

Memory is constant: the payload goes through in 64 KiB STREAM chunks. The reader authenticates
each chunk before handing out its bytes and reports end of data only after the chunk marked last
has been authenticated, so a truncated or altered file always ends in :class:`AgeError`.

Error messages never include secret key material.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "MAGIC",
    "AgeError",
    "AgeReader",
    "AgeWriter",
    "Identity",
    "NoIdentityError",
    "Recipient",
    "SshEd25519Identity",
    "SshEd25519Recipient",
    "SshRsaIdentity",
    "SshRsaRecipient",
    "Stanza",
    "X25519Identity",
    "X25519Recipient",
    "decrypt_stream",
    "encrypt_stream",
    "is_age",
    "load_identities",
    "parse_identities",
    "parse_recipient",
    "parse_recipients",
]

MAGIC = b"age-encryption.org/v1\n"
CHUNK = 64 * 1024
TAG = 16
ENC_CHUNK = CHUNK + TAG
FILE_KEY_SIZE = 16
NONCE_SIZE = 16
# Sealed chunks are gathered into one sink write: a write call per 64 KiB chunk costs ~15% throughput.
BATCH_CHUNKS = 16
# No spec limit; this only stops a garbage file from making the reader buffer without end.
MAX_HEADER = 16 << 20
READ_BLOCK = BATCH_CHUNKS * ENC_CHUNK

X25519_LABEL = b"age-encryption.org/v1/X25519"
ED25519_LABEL = b"age-encryption.org/v1/ssh-ed25519"
RSA_LABEL = b"age-encryption.org/v1/ssh-rsa"
MIN_RSA_BITS = 2048

_P = 2**255 - 19
_D = (-121665 * pow(121666, -1, _P)) % _P
_ZERO_NONCE = bytes(12)


class AgeError(ValueError):
    """The age input cannot be decrypted: not age, damaged, truncated or altered."""


class NoIdentityError(AgeError):
    """None of the given identities opens any recipient stanza of the file."""


# --- encodings -------------------------------------------------------------------------------

_B64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")


def _b64(data: bytes) -> bytes:
    """age's base64: standard alphabet, no padding."""
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes, what: str) -> bytes:
    # Canonical form only (no padding, zero trailing bits), as the reference implementation requires:
    # a header has one valid encoding, so a changed byte cannot decode to the same stanza.
    if not _B64_CHARS.fullmatch(text) or len(text) % 4 == 1:
        raise AgeError(f"malformed base64 in {what}")
    data = base64.b64decode(text + b"=" * (-len(text) % 4))
    if _b64(data) != text:
        raise AgeError(f"non-canonical base64 in {what}")
    return data


_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _bech32_polymod(values: Iterable[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate(_BECH32_GEN):
            if (top >> i) & 1:
                chk ^= g
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Iterable[int], frm: int, to: int, pad: bool) -> bytes | None:
    acc = bits = 0
    out = bytearray()
    maxv = (1 << to) - 1
    for value in data:
        acc = (acc << frm) | value
        bits += frm
        while bits >= to:
            bits -= to
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to - bits)) & maxv)
    elif bits >= frm or (acc << (to - bits)) & maxv:
        return None
    return bytes(out)


def _bech32_encode(hrp: str, data: bytes) -> str:
    five = list(_convert_bits(data, 8, 5, True) or b"")
    poly = _bech32_polymod(_hrp_expand(hrp) + five + [0] * 6) ^ 1
    five += [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in five)


def _bech32_decode(text: str) -> tuple[str, bytes]:
    """Bech32 (not bech32m) without BIP 173's 90-character limit, which age lifts."""
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise ValueError("missing separator or checksum")
    hrp, rest = text[:pos], text[pos + 1 :]
    if any(not 33 <= ord(c) <= 126 for c in hrp) or any(c not in _BECH32_CHARSET for c in rest):
        raise ValueError("invalid character")
    five = [_BECH32_CHARSET.index(c) for c in rest]
    if _bech32_polymod(_hrp_expand(hrp) + five) != 1:
        raise ValueError("checksum mismatch (typo?)")
    data = _convert_bits(five[:-6], 5, 8, False)
    if data is None:
        raise ValueError("invalid padding")
    return hrp, data


# --- small crypto helpers ---------------------------------------------------------------------


def _hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _x25519(scalar: bytes, point: bytes) -> bytes:
    """X25519 on raw bytes; the all-zero result (a low-order point) is refused, as age requires."""
    try:
        return x25519.X25519PrivateKey.from_private_bytes(scalar).exchange(
            x25519.X25519PublicKey.from_public_bytes(point)
        )
    except ValueError as exc:
        raise AgeError("X25519 exchange with a low-order point") from exc


def _x25519_base(scalar: bytes) -> bytes:
    return x25519.X25519PrivateKey.from_private_bytes(scalar).public_key().public_bytes_raw()


def _ed25519_to_montgomery(public: bytes) -> bytes:
    """The X25519 public key of an Ed25519 key: u = (1 + y) / (1 - y) mod p (age spec, ssh-ed25519)."""
    if len(public) != 32:
        raise ValueError("Ed25519 public key must be 32 bytes")
    y = int.from_bytes(public, "little") & ((1 << 255) - 1)
    y %= _P
    if y == 1:
        raise ValueError("Ed25519 public key is a low-order point")
    # A point off the curve has no x with x^2 = (y^2 - 1) / (d y^2 + 1): catches a damaged key
    # that would otherwise encrypt to a key nobody holds.
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    if x2 and pow(x2, (_P - 1) // 2, _P) != 1:
        raise ValueError("Ed25519 public key is not a point on the curve")
    u = (1 + y) * pow(1 - y, -1, _P) % _P
    return u.to_bytes(32, "little")


def _ssh_wire(public_key: Any) -> bytes:
    """The SSH wire encoding of a public key, re-encoded canonically as OpenSSH does for tags."""
    line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def _ssh_tag(wire: bytes) -> str:
    return _b64(hashlib.sha256(wire).digest()[:4]).decode()


def _wrap_aead(key: bytes, plaintext: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, None)


def _unwrap_aead(key: bytes, body: bytes) -> bytes | None:
    if len(body) != FILE_KEY_SIZE + TAG:
        raise AgeError("recipient stanza body has the wrong length")
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None


# --- stanzas, recipients, identities ----------------------------------------------------------


@dataclass
class Stanza:
    type: str
    args: list[str]
    body: bytes

    def encode(self) -> bytes:
        out = bytearray(b"-> " + " ".join([self.type, *self.args]).encode() + b"\n")
        text = _b64(self.body)
        # 64 columns; the last line is always shorter, so a body that fills its lines ends in an empty one.
        for i in range(0, len(text) + 1, 64):
            out += text[i : i + 64] + b"\n"
        return bytes(out)


class Recipient:
    """Someone a file is encrypted to; ``wrap`` seals the file key in a header stanza."""

    type = ""

    def wrap(self, file_key: bytes) -> Stanza:
        raise NotImplementedError


class Identity:
    """A private key; ``unwrap`` returns the file key, or None when the stanza is not for this key."""

    type = ""

    def unwrap(self, stanza: Stanza) -> bytes | None:
        raise NotImplementedError


@dataclass(frozen=True)
class X25519Recipient(Recipient):
    public: bytes
    type = "X25519"

    def __str__(self) -> str:
        return _bech32_encode("age", self.public)

    def wrap(self, file_key: bytes) -> Stanza:
        ephemeral = os.urandom(32)
        share = _x25519_base(ephemeral)
        secret = _x25519(ephemeral, self.public)
        key = _hkdf(secret, share + self.public, X25519_LABEL)
        return Stanza("X25519", [_b64(share).decode()], _wrap_aead(key, file_key))


@dataclass(frozen=True, repr=False)
class X25519Identity(Identity):
    secret: bytes
    type = "X25519"

    def __repr__(self) -> str:
        return f"X25519Identity({self.recipient()})"

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(os.urandom(32))

    def __str__(self) -> str:
        return _bech32_encode("age-secret-key-", self.secret).upper()

    def recipient(self) -> X25519Recipient:
        return X25519Recipient(_x25519_base(self.secret))

    def unwrap(self, stanza: Stanza) -> bytes | None:
        if stanza.type != "X25519":
            return None
        if len(stanza.args) != 1:
            raise AgeError("invalid X25519 recipient stanza")
        share = _unb64(stanza.args[0].encode(), "X25519 stanza")
        if len(share) != 32:
            raise AgeError("invalid X25519 recipient stanza")
        ours = _x25519_base(self.secret)
        key = _hkdf(_x25519(self.secret, share), share + ours, X25519_LABEL)
        return _unwrap_aead(key, stanza.body)


def _ed25519_tweak(wire: bytes) -> bytes:
    return _hkdf(b"", wire, ED25519_LABEL)


@dataclass(frozen=True)
class SshEd25519Recipient(Recipient):
    wire: bytes  # SSH wire encoding of the public key
    montgomery: bytes
    type = "ssh-ed25519"

    @classmethod
    def from_key(cls, key: ed25519.Ed25519PublicKey) -> SshEd25519Recipient:
        return cls(_ssh_wire(key), _ed25519_to_montgomery(key.public_bytes_raw()))

    def wrap(self, file_key: bytes) -> Stanza:
        ephemeral = os.urandom(32)
        share = _x25519_base(ephemeral)
        secret = _x25519(_ed25519_tweak(self.wire), _x25519(ephemeral, self.montgomery))
        key = _hkdf(secret, share + self.montgomery, ED25519_LABEL)
        return Stanza("ssh-ed25519", [_ssh_tag(self.wire), _b64(share).decode()], _wrap_aead(key, file_key))


@dataclass(frozen=True, repr=False)
class SshEd25519Identity(Identity):
    wire: bytes
    secret: bytes  # X25519 scalar: SHA-512 of the Ed25519 seed, first half (X25519 clamps it)
    type = "ssh-ed25519"

    def __repr__(self) -> str:
        return f"SshEd25519Identity(tag={_ssh_tag(self.wire)})"

    @classmethod
    def from_key(cls, key: ed25519.Ed25519PrivateKey) -> SshEd25519Identity:
        seed = key.private_bytes_raw()
        return cls(_ssh_wire(key.public_key()), hashlib.sha512(seed).digest()[:32])

    def unwrap(self, stanza: Stanza) -> bytes | None:
        if stanza.type != "ssh-ed25519":
            return None
        if len(stanza.args) != 2:
            raise AgeError("invalid ssh-ed25519 recipient stanza")
        share = _unb64(stanza.args[1].encode(), "ssh-ed25519 stanza")
        if len(share) != 32:
            raise AgeError("invalid ssh-ed25519 recipient stanza")
        if stanza.args[0] != _ssh_tag(self.wire):
            return None
        secret = _x25519(_ed25519_tweak(self.wire), _x25519(self.secret, share))
        key = _hkdf(secret, share + _x25519_base(self.secret), ED25519_LABEL)
        file_key = _unwrap_aead(key, stanza.body)
        if file_key is None:
            # The tag says this stanza is for our key, so a failure means the header was altered.
            raise AgeError("the ssh-ed25519 stanza for this key does not decrypt (header altered?)")
        return file_key


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=RSA_LABEL)


@dataclass(frozen=True)
class SshRsaRecipient(Recipient):
    wire: bytes
    key: rsa.RSAPublicKey
    type = "ssh-rsa"

    @classmethod
    def from_key(cls, key: rsa.RSAPublicKey) -> SshRsaRecipient:
        return cls(_ssh_wire(key), key)

    def wrap(self, file_key: bytes) -> Stanza:
        return Stanza("ssh-rsa", [_ssh_tag(self.wire)], self.key.encrypt(file_key, _oaep()))


@dataclass(frozen=True, repr=False)
class SshRsaIdentity(Identity):
    wire: bytes
    key: rsa.RSAPrivateKey
    type = "ssh-rsa"

    def __repr__(self) -> str:
        return f"SshRsaIdentity(tag={_ssh_tag(self.wire)})"

    @classmethod
    def from_key(cls, key: rsa.RSAPrivateKey) -> SshRsaIdentity:
        return cls(_ssh_wire(key.public_key()), key)

    def unwrap(self, stanza: Stanza) -> bytes | None:
        if stanza.type != "ssh-rsa":
            return None
        if len(stanza.args) != 1:
            raise AgeError("invalid ssh-rsa recipient stanza")
        if stanza.args[0] != _ssh_tag(self.wire):
            return None
        try:
            return self.key.decrypt(stanza.body, _oaep())
        except ValueError as exc:
            raise AgeError("the ssh-rsa stanza for this key does not decrypt (header altered?)") from exc


# --- parsing keys -----------------------------------------------------------------------------

_SSH_TYPES = ("ssh-ed25519", "ssh-rsa")


def parse_recipient(text: str) -> Recipient:
    """One recipient: ``age1...``, or an ``ssh-ed25519``/``ssh-rsa`` public key line (comment allowed)."""
    text = text.strip()
    if text.lower().startswith("age1"):
        try:
            hrp, data = _bech32_decode(text)
        except ValueError as exc:
            raise ValueError(f"malformed age recipient {text!r}: {exc}") from None
        if hrp != "age" or len(data) != 32:
            raise ValueError(f"malformed age recipient {text!r}: wrong prefix or length")
        return X25519Recipient(data)
    kind = text.split(None, 1)[0] if text else ""
    if kind in _SSH_TYPES:
        try:
            key = serialization.load_ssh_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"malformed {kind} public key ({exc})") from None
        try:
            if kind == "ssh-ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
                return SshEd25519Recipient.from_key(key)
            if kind == "ssh-rsa" and isinstance(key, rsa.RSAPublicKey):
                if key.key_size < MIN_RSA_BITS:
                    raise ValueError(f"RSA key of {key.key_size} bits is too small (at least {MIN_RSA_BITS})")
                return SshRsaRecipient.from_key(key)
        except ValueError as exc:
            raise ValueError(f"unusable {kind} public key: {exc}") from None
        raise ValueError(f"{kind} public key line holds a key of another type")
    if text.startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError(f"unsupported SSH key type {kind!r}: only ssh-ed25519 and ssh-rsa can be recipients")
    if text.startswith("AGE-SECRET-KEY-"):
        raise ValueError("that is an age secret key (identity), not a recipient: use age-keygen -y to get it")
    shown = text if len(text) <= 40 else text[:37] + "..."
    raise ValueError(f"not an age recipient (age1...) nor an ssh-ed25519/ssh-rsa public key: {shown!r}")


def _looks_like_recipient(value: str) -> bool:
    return value.strip().lower().startswith("age1") or value.strip().startswith(("ssh-", "ecdsa-", "sk-"))


def parse_recipients(values: Sequence[str]) -> list[Recipient]:
    """Recipients from strings, each a recipient itself or the path of a file of them (one a line,
    ``#`` comments and blank lines ignored, like ``age -R``)."""
    out: list[Recipient] = []
    for value in values:
        # A pasted secret key goes to parse_recipient, whose message does not repeat it.
        if _looks_like_recipient(value) or value.strip().upper().startswith("AGE-SECRET-KEY-"):
            out.append(parse_recipient(value))
            continue
        if not os.path.isfile(value):
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise ValueError(f"{shown!r} is neither a recipient (age1..., ssh-ed25519, ssh-rsa) nor a readable file")
        with open(value, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        found = 0
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                out.append(parse_recipient(line))
            except ValueError as exc:
                raise ValueError(f"{value}:{number}: {exc}") from None
            found += 1
        if not found:
            raise ValueError(f"{value}: no recipients in the file")
    if not out:
        raise ValueError("no recipients given")
    return out


def _load_ssh_private(data: bytes, source: str) -> Identity:
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(f"{source}: the private key is passphrase-protected; not supported") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"{source}: unreadable private key ({exc})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return SshEd25519Identity.from_key(key)
    if isinstance(key, rsa.RSAPrivateKey):
        return SshRsaIdentity.from_key(key)
    raise ValueError(f"{source}: unsupported private key type {type(key).__name__} (ed25519 or RSA only)")


def parse_identities(data: bytes, source: str = "identity") -> list[Identity]:
    """Identities in the bytes of one identity file: ``AGE-SECRET-KEY-1...`` lines (``#`` comments
    allowed), or one OpenSSH / PEM private key (ed25519 or RSA, without passphrase)."""
    if b"-----BEGIN" in data:
        if b"PRIVATE KEY-----" not in data:
            raise ValueError(f"{source}: PEM block that is not a private key")
        return [_load_ssh_private(data, source)]
    out: list[Identity] = []
    for number, raw in enumerate(data.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        if line.startswith((b"ssh-", b"age1")):
            raise ValueError(f"{source}:{number}: this is a public key; decryption needs the private key")
        if not line.upper().startswith(b"AGE-SECRET-KEY-1"):
            raise ValueError(f"{source}:{number}: not an AGE-SECRET-KEY-1... line")
        try:
            hrp, secret = _bech32_decode(line.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{source}:{number}: malformed age secret key ({exc})") from None
        if hrp != "age-secret-key-" or len(secret) != 32:
            raise ValueError(f"{source}:{number}: malformed age secret key (wrong prefix or length)")
        out.append(X25519Identity(secret))
    if not out:
        raise ValueError(f"{source}: no identities found")
    return out


def load_identities(paths: Sequence[str | os.PathLike[str]]) -> list[Identity]:
    """Identities from identity files (see :func:`parse_identities`), in order."""
    out: list[Identity] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(1 << 20)
        except OSError as exc:
            raise ValueError(f"cannot read identity file {os.fspath(path)}: {exc.strerror or exc}") from None
        out += parse_identities(data, os.fspath(path))
    if not out:
        raise ValueError("no identities given")
    return out


# --- header -----------------------------------------------------------------------------------


def _header_mac(file_key: bytes, header_to_dashes: bytes) -> bytes:
    return hmac.new(_hkdf(file_key, b"", b"header"), header_to_dashes, hashlib.sha256).digest()


def _payload_aead(file_key: bytes, nonce: bytes) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def is_age(head: bytes) -> bool:
    """Whether a file's first bytes (at least ``len(MAGIC)``, 22) are those of a binary v1 age file."""
    return head.startswith(MAGIC)


# --- writer -----------------------------------------------------------------------------------


def _write_all(sink: BinaryIO, data: memoryview) -> None:
    # A raw (unbuffered) file or a socket may take fewer bytes than offered.
    while data:
        n = sink.write(data)
        if n is None:
            raise BlockingIOError("non-blocking sink would block")
        if n >= len(data):
            return
        data = data[n:]


class AgeWriter:
    """File-like writer: ``write`` plaintext, ``close`` to finish; the age file goes to ``sink``.

    The header (one stanza per recipient) and the payload nonce are written at construction. The
    plaintext is sealed in 64 KiB chunks with no copy for large writes; up to one chunk is held
    back because only ``close`` knows which chunk is the last. ``sink.write`` must consume its
    argument before returning (files, pipes, sockets and BytesIO do): the buffer is reused.

    Used as a context manager, an exception inside the block *aborts*: sealed chunks are written
    but the final chunk is not, so the output can never pass for a complete file. ``close_sink``
    closes the sink after finishing (or aborting).
    """

    def __init__(self, sink: BinaryIO, recipients: Sequence[Recipient], *, close_sink: bool = False):
        if not recipients:
            raise ValueError("at least one recipient is needed")
        self._sink = sink
        self._close_sink = close_sink
        file_key = os.urandom(FILE_KEY_SIZE)
        header = MAGIC + b"".join(r.wrap(file_key).encode() for r in recipients) + b"---"
        header += b" " + _b64(_header_mac(file_key, header)) + b"\n"
        nonce = os.urandom(NONCE_SIZE)
        self._aead = _payload_aead(file_key, nonce)
        self._counter = 0
        self._pending = bytearray(CHUNK)
        self._pending_len = 0
        self._out = bytearray(BATCH_CHUNKS * ENC_CHUNK)
        self._out_view = memoryview(self._out)
        self._out_len = 0
        self.closed = False
        self._failed = False
        self.plaintext_bytes = 0
        self.ciphertext_bytes = len(header) + NONCE_SIZE
        _write_all(sink, memoryview(header + nonce))

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        """Plaintext bytes written so far."""
        return self.plaintext_bytes

    def _seal(self, chunk: memoryview, last: bool) -> None:
        end = self._out_len + len(chunk) + TAG
        self._aead.encrypt_into(_chunk_nonce(self._counter, last), chunk, None, self._out_view[self._out_len : end])
        self._out_len = end
        self._counter += 1
        if end + ENC_CHUNK > len(self._out):
            self._drain()

    def _drain(self) -> None:
        if self._out_len:
            try:
                _write_all(self._sink, self._out_view[: self._out_len])
            except BaseException:
                # Part of the batch may be out: nothing written after this could be made consistent.
                self._failed = True
                raise
            self.ciphertext_bytes += self._out_len
            self._out_len = 0

    def write(self, data: Any) -> int:
        """Encrypt ``data`` (any bytes-like object); returns its length in bytes."""
        if self.closed or self._failed:
            raise ValueError("write to a closed AgeWriter" if self.closed else "AgeWriter's sink failed earlier")
        # Fast path for small writes (tar headers are 512 bytes): no memoryview set-up, which
        # costs more than the copy itself at that size.
        if type(data) is bytes or type(data) is bytearray:
            n = len(data)
            held = self._pending_len
            if held + n <= CHUNK:
                self._pending[held : held + n] = data
                self._pending_len = held + n
                self.plaintext_bytes += n
                return n
        with memoryview(data) as view, view.cast("B") if view.format != "B" or view.ndim != 1 else view as mv:
            n = len(mv)
            if not n:
                return 0
            pos = 0
            if self._pending_len:
                pos = min(CHUNK - self._pending_len, n)
                self._pending[self._pending_len : self._pending_len + pos] = mv[:pos]
                self._pending_len += pos
                if pos == n:
                    self.plaintext_bytes += n
                    return n
                # More data follows, so the held-back chunk (now full) is not the last one.
                with memoryview(self._pending) as pending:
                    self._seal(pending, last=False)
                self._pending_len = 0
            while n - pos > CHUNK:
                self._seal(mv[pos : pos + CHUNK], last=False)
                pos += CHUNK
            # Always keep the tail (1..CHUNK bytes): it may turn out to be the final chunk.
            self._pending[: n - pos] = mv[pos:]
            self._pending_len = n - pos
        self.plaintext_bytes += n
        return n

    def flush(self) -> None:
        """Write the sealed chunks out (the held-back last chunk stays until close)."""
        if not self.closed:
            self._drain()
        flush = getattr(self._sink, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        """Seal the final chunk (an empty one only for an empty plaintext) and flush the sink."""
        if self.closed:
            return
        if self._failed:
            self.abort()
            raise ValueError("AgeWriter's sink failed earlier: the output is incomplete")
        with memoryview(self._pending) as pending:
            self._seal(pending[: self._pending_len], last=True)
        self._finish()

    def abort(self) -> None:
        """Stop without the final chunk: readers will report the output as truncated.

        Best effort: a failing sink is ignored here, since abort runs while another error unwinds."""
        if not self.closed:
            try:
                self._finish()
            except Exception:
                pass

    def _finish(self) -> None:
        try:
            self._drain()
            self.closed = True
            self.flush()
        finally:
            self.closed = True
            self._out_view.release()
            if self._close_sink:
                self._sink.close()

    def __enter__(self) -> AgeWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def encrypt_stream(src: BinaryIO, dst: BinaryIO, recipients: Sequence[Recipient], block: int = 1 << 20) -> int:
    """Encrypt everything ``src`` holds to ``dst``; returns the plaintext length."""
    with AgeWriter(dst, recipients) as w:
        readinto = getattr(src, "readinto", None)
        if readinto is None:
            while data := src.read(block):
                w.write(data)
        else:
            with memoryview(bytearray(block)) as view:
                while n := readinto(view):
                    w.write(view[:n])
        return w.plaintext_bytes


# --- reader -----------------------------------------------------------------------------------


class _Input:
    """Buffered reads of the source, so header lines and payload chunks come from one buffer."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.buf = bytearray()
        self.pos = 0
        self.eof = False
        self.consumed = 0  # bytes of the source before pos

    def fill(self, need: int) -> int:
        """Read until ``need`` bytes are buffered or the source ends; returns the bytes available."""
        if self.pos and self.pos >= len(self.buf) // 2:
            del self.buf[: self.pos]
            self.pos = 0
        while len(self.buf) - self.pos < need and not self.eof:
            data = self.f.read(max(need - (len(self.buf) - self.pos), READ_BLOCK))
            if not data:
                self.eof = True
            else:
                self.buf += data
        return len(self.buf) - self.pos

    def advance(self, n: int) -> None:
        self.pos += n
        self.consumed += n

    def readline(self, limit: int) -> bytes:
        while True:
            end = self.buf.find(b"\n", self.pos, self.pos + limit)
            if end >= 0:
                line = bytes(self.buf[self.pos : end + 1])
                self.advance(len(line))
                return line
            have = len(self.buf) - self.pos
            if have >= limit:
                raise AgeError("age header too long or not terminated")
            if self.fill(have + 4096) == have:
                raise AgeError("truncated age header")


@dataclass
class _Header:
    stanzas: list[Stanza] = field(default_factory=list)
    mac: bytes = b""
    to_dashes: bytes = b""


_VCHAR_ARG = re.compile(rb"[\x21-\x7e]+")


def _read_header(inp: _Input) -> _Header:
    inp.fill(64)
    start = bytes(inp.buf[inp.pos : inp.pos + 64])
    if not start.startswith(MAGIC):
        if start.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----"):
            raise AgeError("ASCII-armored age files are not supported: decode with 'age -d' first")
        if start.startswith(b"age-encryption.org/"):
            raise AgeError("unsupported age format version")
        if MAGIC.startswith(start):
            raise AgeError("truncated age header")
        raise AgeError("not an age file (no age-encryption.org/v1 header)")
    intro = inp.readline(len(MAGIC))
    header = _Header()
    raw = bytearray(intro)
    while True:
        line = inp.readline(MAX_HEADER - len(raw))
        raw += line
        if line.startswith(b"--- "):
            header.to_dashes = bytes(raw[: len(raw) - len(line) + len(b"---")])
            header.mac = _unb64(line[4:-1], "header MAC")
            if len(header.mac) != 32:
                raise AgeError("malformed header MAC")
            return header
        if not line.startswith(b"-> "):
            raise AgeError("malformed age header line")
        args = line[3:-1].split(b" ")
        if not all(_VCHAR_ARG.fullmatch(a) for a in args):
            raise AgeError("malformed recipient stanza line")
        body = bytearray()
        while True:
            body_line = inp.readline(66)
            raw += body_line
            text = body_line[:-1]
            if len(text) > 64:
                raise AgeError("stanza body line longer than 64 columns")
            body += text
            if len(text) < 64:
                break
        stanza_type = args[0].decode()
        header.stanzas.append(Stanza(stanza_type, [a.decode() for a in args[1:]], _unb64(bytes(body), "stanza body")))


def _unlock(header: _Header, identities: Sequence[Identity]) -> bytes:
    for stanza in header.stanzas:
        for identity in identities:
            file_key = identity.unwrap(stanza)
            if file_key is None:
                continue
            if len(file_key) != FILE_KEY_SIZE:
                raise AgeError("recipient stanza holds a file key of the wrong size")
            if not hmac.compare_digest(_header_mac(file_key, header.to_dashes), header.mac):
                raise AgeError("age header MAC mismatch: the header was altered")
            return file_key
    kinds = ", ".join(sorted({s.type for s in header.stanzas})) or "none"
    raise NoIdentityError(
        f"no identity matches any of the file's {len(header.stanzas)} recipient stanza(s) (types: {kinds})"
    )


class AgeReader:
    """File-like reader of an age file's plaintext.

    ``read(n)`` returns exactly ``n`` bytes unless the plaintext ends; it returns ``b""`` only after
    the final chunk has been authenticated. Damage, truncation or trailing bytes raise
    :class:`AgeError` at the point where they are met (bytes already returned were authentic).
    """

    def __init__(self, src: BinaryIO, identities: Sequence[Identity], *, close_src: bool = False):
        if not identities:
            raise ValueError("at least one identity is needed")
        self._src = src
        self._close_src = close_src
        self._in = _Input(src)
        file_key = _unlock(_read_header(self._in), identities)
        if self._in.fill(NONCE_SIZE) < NONCE_SIZE:
            raise AgeError("age file truncated: it ends before the payload")
        nonce = bytes(self._in.buf[self._in.pos : self._in.pos + NONCE_SIZE])
        self._in.advance(NONCE_SIZE)
        self._aead = _payload_aead(file_key, nonce)
        self._counter = 0
        self._plain = b""
        self._plain_pos = 0
        self._done = False
        self.closed = False
        self.plaintext_bytes = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def _next_chunk(self) -> bytes | None:
        """The next authenticated chunk of plaintext, or None after the final chunk."""
        if self._done:
            return None
        inp = self._in
        have = inp.fill(ENC_CHUNK + 1)
        last = have <= ENC_CHUNK
        size = have if last else ENC_CHUNK
        at = inp.consumed
        if last and size < TAG:
            raise AgeError(f"age file truncated in payload chunk {self._counter} (at byte {at})")
        with memoryview(inp.buf) as buf, buf[inp.pos : inp.pos + size] as sealed:
            try:
                plain = self._aead.decrypt(_chunk_nonce(self._counter, last), sealed, None)
            except InvalidTag:
                plain = None
                if last and size == ENC_CHUNK:
                    try:
                        self._aead.decrypt(_chunk_nonce(self._counter, False), sealed, None)
                        truncated = True
                    except InvalidTag:
                        truncated = False
                    if truncated:
                        raise AgeError(
                            f"age file truncated after {self.plaintext_bytes + CHUNK} bytes of plaintext "
                            "(no final chunk)"
                        ) from None
        if plain is None:
            raise AgeError(
                f"age payload chunk {self._counter} (at byte {at}) failed authentication: altered or damaged"
            )
        if last and not plain and self._counter:
            raise AgeError("age payload ends with an empty chunk (not allowed after data)")
        inp.advance(size)
        self._counter += 1
        self.plaintext_bytes += len(plain)
        if last:
            self._done = True
        return plain

    def read(self, size: int = -1) -> bytes:
        if self.closed:
            raise ValueError("read from a closed AgeReader")
        parts: list[bytes] = []
        want = size if size is not None and size >= 0 else -1
        while want:
            if self._plain_pos >= len(self._plain):
                chunk = self._next_chunk()
                if chunk is None:
                    break
                self._plain, self._plain_pos = chunk, 0
                continue
            end = len(self._plain) if want < 0 else min(len(self._plain), self._plain_pos + want)
            piece = self._plain[self._plain_pos : end] if (self._plain_pos or end < len(self._plain)) else self._plain
            parts.append(piece)
            self._plain_pos = end
            if want > 0:
                want -= len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, b: Any) -> int:
        with memoryview(b) as view, view.cast("B") as out:
            data = self.read(len(out))
            out[: len(data)] = data
            return len(data)

    def chunks(self) -> Iterable[bytes]:
        """The remaining plaintext, one authenticated chunk at a time."""
        if self._plain_pos < len(self._plain):
            yield self._plain[self._plain_pos :]
            self._plain_pos = len(self._plain)
        while (chunk := self._next_chunk()) is not None:
            yield chunk

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._close_src:
                self._src.close()

    def __enter__(self) -> AgeReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def decrypt_stream(src: BinaryIO, dst: BinaryIO, identities: Sequence[Identity]) -> int:
    """Decrypt an age file from ``src`` into ``dst``; returns the plaintext length.

    On :class:`AgeError` the authentic chunks before the damage have already been written to
    ``dst``: treat the output as unusable unless this returns."""
    reader = AgeReader(src, identities)
    total = 0
    for chunk in reader.chunks():
        dst.write(chunk)
        total += len(chunk)
    return total
