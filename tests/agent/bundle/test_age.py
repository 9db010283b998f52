"""age encryption: our writer against the stock ``age`` binary and back, and every kind of damage.

Interoperability tests need ``age``/``age-keygen`` (Debian package ``age``) and ``ssh-keygen``
(``openssh-client``): skipped locally without them, failed when CI=true. The rest runs anywhere,
with SSH keys made by the cryptography package.
"""

from __future__ import annotations

import array
import io
import os
import random
import shutil
import subprocess
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import need
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from agent.bundle import age

CHUNK = age.CHUNK
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * 1024 * 1024 + 12345]
KINDS = ["x25519", "ssh-ed25519", "ssh-rsa"]


def _random(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _encrypt(recipients: list[age.Recipient], data: bytes, piece: int | None = None) -> bytes:
    out = io.BytesIO()
    with age.AgeWriter(out, recipients) as w:
        if piece is None:
            assert w.write(data) == len(data)
        else:
            for i in range(0, len(data), piece):
                w.write(data[i : i + piece])
    return out.getvalue()


def _decrypt(blob: bytes, identities: list[age.Identity]) -> bytes:
    out = io.BytesIO()
    n = age.decrypt_stream(io.BytesIO(blob), out, identities)
    assert n == len(out.getvalue())
    return out.getvalue()


def _payload_offset(blob: bytes) -> int:
    """Where the first payload chunk starts: after the MAC line and the 16-byte nonce."""
    return blob.index(b"\n", blob.index(b"\n--- ") + 1) + 1 + age.NONCE_SIZE


# --- keys made in-process (no external tools) ------------------------------------------------


@dataclass
class LocalKey:
    recipient: str
    identity_text: bytes

    def identities(self) -> list[age.Identity]:
        return age.parse_identities(self.identity_text)


def _local_ed25519() -> LocalKey:
    key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    return LocalKey(pub.decode() + " test@host", priv)


def _local_rsa(bits: int = 2048, fmt: serialization.PrivateFormat = serialization.PrivateFormat.OpenSSH) -> LocalKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    priv = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    return LocalKey(pub.decode(), priv)


def _local_x25519() -> LocalKey:
    ident = age.X25519Identity.generate()
    return LocalKey(str(ident.recipient()), f"# created: test\n{ident}\n".encode())


@pytest.fixture(scope="module")
def local_keys() -> dict[str, LocalKey]:
    return {"x25519": _local_x25519(), "ssh-ed25519": _local_ed25519(), "ssh-rsa": _local_rsa()}


# --- round trips through our own reader --------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(local_keys, kind, size):
    key = local_keys[kind]
    data = _random(size, size)
    blob = _encrypt([age.parse_recipient(key.recipient)], data)
    chunks = max(1, -(-size // CHUNK))
    # Exactly one chunk per started 64 KiB, the last one may be full; an empty final chunk only when empty.
    assert len(blob) - _payload_offset(blob) == size + chunks * age.TAG
    assert _decrypt(blob, key.identities()) == data
    with age.AgeReader(io.BytesIO(blob), key.identities()) as r:
        got = bytearray()
        while piece := r.read(7777):
            got += piece
        assert r.read() == b""
    assert got == data


@pytest.mark.parametrize("piece", [1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 3])
def test_write_pieces_do_not_change_the_output_length(local_keys, piece):
    key = local_keys["x25519"]
    data = _random(4 * CHUNK + 17 if piece > 1 else 2 * CHUNK + 3)
    blob = _encrypt([age.parse_recipient(key.recipient)], data, piece)
    assert _decrypt(blob, key.identities()) == data


def test_any_bytes_like_is_accepted(local_keys):
    key = local_keys["x25519"]
    values = array.array("I", range(50_000))
    out = io.BytesIO()
    with age.AgeWriter(out, [age.parse_recipient(key.recipient)]) as w:
        w.write(bytearray(b"head"))
        w.write(memoryview(values))
        w.write(values)
        assert w.tell() == 4 + 2 * len(values.tobytes())
    assert _decrypt(out.getvalue(), key.identities()) == b"head" + values.tobytes() * 2


def test_readinto_and_short_reads_from_a_pipe_like_source(local_keys):
    key = local_keys["ssh-ed25519"]
    data = _random(2 * CHUNK + 999)
    blob = _encrypt([age.parse_recipient(key.recipient)], data)

    class Trickle(io.RawIOBase):
        def __init__(self, b: bytes):
            self.b, self.pos = b, 0

        def readable(self) -> bool:
            return True

        def readinto(self, out) -> int:  # at most 1000 bytes a call, as a pipe might give
            n = min(len(out), 1000, len(self.b) - self.pos)
            out[:n] = self.b[self.pos : self.pos + n]
            self.pos += n
            return n

    r = age.AgeReader(Trickle(blob), key.identities())
    buf = bytearray(50_000)
    got = bytearray()
    while n := r.readinto(buf):
        got += buf[:n]
    assert got == data


def test_multiple_recipients_each_identity_opens_it(local_keys):
    extra = _local_x25519()
    keys = [*local_keys.values(), extra]
    data = _random(CHUNK * 2 + 5)
    blob = _encrypt([age.parse_recipient(k.recipient) for k in keys], data)
    assert blob.count(b"\n-> ") == 4
    for k in keys:
        assert _decrypt(blob, k.identities()) == data


def test_rsa_3072_body_fills_its_lines_and_ends_in_an_empty_line():
    # 384 bytes of OAEP output are 512 base64 columns: the body must end with an empty line.
    key = _local_rsa(3072, serialization.PrivateFormat.TraditionalOpenSSL)
    blob = _encrypt([age.parse_recipient(key.recipient)], b"x")
    header = blob[: blob.index(b"\n--- ")]
    assert header.endswith(b"\n")  # the empty line before ---
    assert _decrypt(blob, key.identities()) == b"x"


def test_memory_stays_constant_for_large_streams(local_keys):
    key = local_keys["x25519"]
    block = _random(1 << 20)

    class Sink:
        n = 0

        def write(self, b) -> int:
            self.n += len(b)
            return len(b)

    sink = Sink()
    tracemalloc.start()
    try:
        with age.AgeWriter(sink, [age.parse_recipient(key.recipient)]) as w:
            for _ in range(48):
                w.write(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.plaintext_bytes == 48 << 20
    assert sink.n == w.ciphertext_bytes
    assert peak < 4 << 20, f"writer peaked at {peak} bytes of Python memory for a 48 MiB stream"


# --- damage -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(local_keys) -> tuple[bytes, bytes, list[age.Identity]]:
    data = _random(3 * CHUNK + 100, 7)
    recipients = [age.parse_recipient(k.recipient) for k in local_keys.values()]
    return _encrypt(recipients, data), data, local_keys["x25519"].identities()


def test_every_changed_header_byte_is_refused(sample):
    blob, _, ids = sample
    end = _payload_offset(blob)
    for i in range(end):
        for flip in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= flip
            with pytest.raises(age.AgeError):
                _decrypt(bytes(bad), ids)


def test_changed_payload_bytes_are_refused(sample):
    blob, _, ids = sample
    start = _payload_offset(blob)
    enc = age.ENC_CHUNK
    for i in [start, start + 1, start + enc - 1, start + enc, start + 2 * enc + 500, len(blob) - 17, len(blob) - 1]:
        bad = bytearray(blob)
        bad[i] ^= 0x20
        with pytest.raises(age.AgeError, match="failed authentication"):
            _decrypt(bytes(bad), ids)


def test_reordered_or_appended_chunks_are_refused(sample):
    blob, _, ids = sample
    start, enc = _payload_offset(blob), age.ENC_CHUNK
    c = [blob[start + i * enc : start + (i + 1) * enc] for i in range(4)]
    for payload in (c[1] + c[0] + c[2] + c[3], c[0] + c[1] + c[2] + c[3] + b"\0", c[0] + c[0] + c[1] + c[2] + c[3]):
        with pytest.raises(age.AgeError):
            _decrypt(blob[:start] + payload, ids)


def test_truncation_is_an_error_never_a_short_success(sample):
    blob, data, ids = sample
    start, enc = _payload_offset(blob), age.ENC_CHUNK
    for cut in [0, 10, 30, start - 16, start - 1, start, start + 5, start + enc, start + enc + 1,
                start + 3 * enc, len(blob) - 1]:
        with pytest.raises(age.AgeError) as err:
            _decrypt(blob[:cut], ids)
        if cut in (start + enc, start + 3 * enc):
            assert "truncated" in str(err.value)
    # The streaming reader hands out authenticated chunks, then raises instead of reporting EOF.
    r = age.AgeReader(io.BytesIO(blob[: start + 2 * enc]), ids)
    assert r.read(CHUNK) == data[:CHUNK]
    with pytest.raises(age.AgeError, match="truncated"):
        r.read(1)


def test_an_empty_final_chunk_after_data_is_refused(local_keys):
    # Built by hand: a correct writer never emits it, but a reader must not accept it either.
    key = local_keys["x25519"]
    blob = _encrypt([age.parse_recipient(key.recipient)], b"")
    [ident] = key.identities()
    header = blob[: _payload_offset(blob) - age.NONCE_SIZE]
    nonce = blob[len(header) : len(header) + age.NONCE_SIZE]
    stanza = age._read_header(age._Input(io.BytesIO(header)))
    aead = age._payload_aead(age._unlock(stanza, [ident]), nonce)
    payload = aead.encrypt(age._chunk_nonce(0, False), b"a" * CHUNK, None)
    payload += aead.encrypt(age._chunk_nonce(1, True), b"", None)
    with pytest.raises(age.AgeError, match="empty chunk"):
        _decrypt(header + nonce + payload, [ident])


def test_wrong_identity_is_named(sample):
    blob, _, _ = sample
    for other in (_local_x25519(), _local_ed25519(), _local_rsa()):
        with pytest.raises(age.NoIdentityError, match="no identity matches any of the file's 3"):
            _decrypt(blob, other.identities())


def test_not_age_and_armored_input(local_keys):
    ids = local_keys["x25519"].identities()
    with pytest.raises(age.AgeError, match="not an age file"):
        _decrypt(b"\x1f\x8b\x08\x00" + bytes(100), ids)
    with pytest.raises(age.AgeError, match="armored"):
        _decrypt(b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n", ids)
    assert age.is_age(_encrypt([age.parse_recipient(local_keys["x25519"].recipient)], b""))


def test_exception_in_with_block_leaves_a_truncated_file(local_keys):
    key = local_keys["x25519"]
    out = io.BytesIO()
    with pytest.raises(RuntimeError), age.AgeWriter(out, [age.parse_recipient(key.recipient)]) as w:
        w.write(_random(CHUNK * 3))
        raise RuntimeError("collector failed")
    assert w.closed
    with pytest.raises(age.AgeError, match="truncated"):
        _decrypt(out.getvalue(), key.identities())
    with pytest.raises(ValueError, match="closed"):
        w.write(b"more")


def test_a_failing_sink_stops_the_writer(local_keys):
    class Full(io.BytesIO):
        def write(self, b) -> int:
            if self.tell() > 1000:
                raise OSError(28, "No space left on device")
            return super().write(b)

    out = Full()
    w = age.AgeWriter(out, [age.parse_recipient(local_keys["x25519"].recipient)])
    with pytest.raises(OSError, match="No space"):
        w.write(_random(40 * CHUNK))
    with pytest.raises(ValueError, match="failed earlier"):
        w.write(b"x")
    with pytest.raises(ValueError, match="incomplete"):
        w.close()
    assert w.closed


# --- parsing keys -----------------------------------------------------------------------------


def test_recipient_parsing_errors(tmp_path, local_keys):
    good = local_keys["x25519"].recipient
    bad_checksum = good[:-1] + ("q" if good[-1] != "q" else "p")
    cases = {
        bad_checksum: "checksum",
        good.upper()[:10] + good[10:]: "mixed case",
        "age1qqqq": "malformed age recipient",
        "ssh-ed25519 AAAAnotbase64!": "malformed ssh-ed25519",
        "ecdsa-sha2-nistp256 AAAAE2VjZHNh": "unsupported SSH key type",
        "ssh-dss AAAAB3NzaC1kc3M": "unsupported SSH key type",
        str(age.X25519Identity.generate()): "secret key",
        "hello": "not an age recipient",
        str(tmp_path / "missing.txt"): "neither a recipient",
    }
    for text, message in cases.items():
        with pytest.raises(ValueError, match=message):
            age.parse_recipient(text) if "missing" not in text else age.parse_recipients([text])
    with pytest.raises(ValueError, match="secret key") as err:
        age.parse_recipients([str(age.X25519Identity.generate())])
    assert "AGE-SECRET-KEY-1" not in str(err.value)
    small = _local_rsa(1024)
    with pytest.raises(ValueError, match="too small"):
        age.parse_recipient(small.recipient)
    ed = local_keys["ssh-ed25519"].recipient.split()
    with pytest.raises(ValueError, match="malformed ssh-rsa"):
        age.parse_recipient("ssh-rsa " + ed[1])
    with pytest.raises(ValueError, match="no recipients"):
        age.parse_recipients([])


def test_off_curve_ed25519_key_is_refused():
    wire = b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + (2).to_bytes(32, "little")  # y = 2 is not on the curve
    line = "ssh-ed25519 " + __import__("base64").b64encode(wire).decode()
    with pytest.raises(ValueError, match="not a point on the curve"):
        age.parse_recipient(line)


def test_recipients_file_with_comments(tmp_path, local_keys):
    f = tmp_path / "recipients.txt"
    f.write_text("# incident 42\n\n" + "\n".join(k.recipient for k in local_keys.values()) + "\n")
    extra = _local_x25519()
    recipients = age.parse_recipients([str(f), extra.recipient])
    assert [r.type for r in recipients] == ["X25519", "ssh-ed25519", "ssh-rsa", "X25519"]
    f.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="no recipients in the file"):
        age.parse_recipients([str(f)])
    f.write_text(local_keys["x25519"].recipient + "\nbogus line\n")
    with pytest.raises(ValueError, match=r"recipients.txt:2: not an age recipient"):
        age.parse_recipients([str(f)])


def test_identity_parsing_errors(tmp_path, local_keys):
    secret = str(age.X25519Identity.generate())
    cases = {
        b"": "no identities",
        b"# nothing\n": "no identities",
        local_keys["ssh-ed25519"].recipient.encode(): "public key",
        secret[:-1].encode() + (b"Q" if secret[-1] != "Q" else b"P"): "checksum",
        b"garbage\n": "not an AGE-SECRET-KEY",
        b"-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n": "not a private key",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n": "unreadable",
    }
    for text, message in cases.items():
        with pytest.raises(ValueError, match=message):
            age.parse_identities(text)
        # A secret must never leak into a message, whatever went wrong.
        try:
            age.parse_identities(text)
        except ValueError as exc:
            assert secret[20:] not in str(exc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(ValueError, match="passphrase"):
        age.parse_identities(locked)
    with pytest.raises(ValueError, match="cannot read identity file"):
        age.load_identities([tmp_path / "nope"])
    multi = tmp_path / "keys.txt"
    a, b = age.X25519Identity.generate(), age.X25519Identity.generate()
    multi.write_text(f"# two keys\n{a}\n{b}\n")
    ids = age.load_identities([multi])
    assert len(ids) == 2 and secret not in repr(ids) and str(a) not in repr(ids)
    blob = _encrypt([b.recipient()], b"for b")
    assert _decrypt(blob, ids) == b"for b"


# --- interoperability with the stock age binary --------------------------------------------------


@dataclass
class ToolKey:
    recipient: str  # what goes after age -r
    public_file: Path  # what goes after age -R (a recipients file)
    identity_file: Path


@pytest.fixture(scope="module")
def tool_keys(tmp_path_factory) -> dict[str, ToolKey]:
    need(shutil.which("age") is not None and shutil.which("age-keygen") is not None,
         "the age binary is needed (apt-get install age)")
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen is needed (apt-get install openssh-client)")
    d = tmp_path_factory.mktemp("age-keys")
    subprocess.run(["age-keygen", "-o", str(d / "native.txt")], check=True, capture_output=True)
    native = subprocess.run(["age-keygen", "-y", str(d / "native.txt")], check=True, capture_output=True,
                            text=True).stdout.strip()
    (d / "native.pub").write_text(native + "\n")
    # RSA 3072 (ssh-keygen's default) wraps to a body that exactly fills its lines.
    for kind, args in (("ed25519", ["-t", "ed25519"]), ("rsa", ["-t", "rsa", "-b", "3072"])):
        subprocess.run(["ssh-keygen", "-q", *args, "-N", "", "-C", f"{kind}@test", "-f", str(d / kind)],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return {
        "x25519": ToolKey(native, d / "native.pub", d / "native.txt"),
        "ssh-ed25519": ToolKey((d / "ed25519.pub").read_text().strip(), d / "ed25519.pub", d / "ed25519"),
        "ssh-rsa": ToolKey((d / "rsa.pub").read_text().strip(), d / "rsa.pub", d / "rsa"),
    }


def _age(args: list[str], data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(["age", *args], input=data, capture_output=True, timeout=120)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_stock_age_decrypts_ours(tool_keys, kind, size):
    key = tool_keys[kind]
    data = _random(size, size + 1)
    blob = _encrypt(age.parse_recipients([key.recipient]), data)
    proc = _age(["-d", "-i", str(key.identity_file)], blob)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == data


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_we_decrypt_stock_age(tool_keys, kind, size):
    key = tool_keys[kind]
    data = _random(size, size + 2)
    # -r for the native key, -R (a recipients file) for the SSH ones: both ways age takes recipients.
    args = ["-r", key.recipient] if kind == "x25519" else ["-R", str(key.public_file)]
    proc = _age(args, data)
    assert proc.returncode == 0, proc.stderr.decode()
    assert _decrypt(proc.stdout, age.load_identities([key.identity_file])) == data


def test_stock_age_multiple_recipients_both_ways(tool_keys):
    data = _random(CHUNK * 5 + 3, 99)
    ours = _encrypt(age.parse_recipients([str(k.public_file) for k in tool_keys.values()]), data)
    theirs = _age([a for k in tool_keys.values() for a in ("-R", str(k.public_file))], data).stdout
    for key in tool_keys.values():
        proc = _age(["-d", "-i", str(key.identity_file)], ours)
        assert proc.returncode == 0 and proc.stdout == data, proc.stderr.decode()
        assert _decrypt(theirs, age.load_identities([key.identity_file])) == data
    # All identities at once, as `age -d -i A -i B` would take them.
    all_ids = age.load_identities([k.identity_file for k in tool_keys.values()])
    assert _decrypt(ours, all_ids) == data


def test_stock_age_refuses_our_damaged_or_truncated_output(tool_keys):
    key = tool_keys["x25519"]
    data = _random(2 * CHUNK + 10, 5)
    blob = _encrypt(age.parse_recipients([key.recipient]), data)
    start = _payload_offset(blob)
    bad = bytearray(blob)
    bad[start + 100] ^= 1
    for damaged in (bytes(bad), blob[: start + age.ENC_CHUNK]):
        proc = _age(["-d", "-i", str(key.identity_file)], damaged)
        assert proc.returncode != 0
        with pytest.raises(age.AgeError):
            _decrypt(damaged, age.load_identities([key.identity_file]))


def test_pem_rsa_identity_from_ssh_keygen(tmp_path):
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen is needed (apt-get install openssh-client)")
    path = tmp_path / "rsa_pem"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(path)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    blob = _encrypt(age.parse_recipients([str(path) + ".pub"]), b"pem")
    assert _decrypt(blob, age.load_identities([path])) == b"pem"
    assert os.path.getsize(path) > 0
