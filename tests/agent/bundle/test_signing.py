"""Ed25519 manifest signatures: good ones verify, every tampering fails with a reason that names it.

Keys come from ``ssh-keygen`` (Debian ``openssh-client``: skipped locally without it, failed when
CI=true) and from the cryptography package (runs anywhere). ssh-keygen also checks interoperability:
our signature is the SSHSIG it makes itself, and ``ssh-keygen -Y verify`` accepts ours.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import need
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from agent.bundle import signing
from agent.bundle.signing import SigningError, load_private_key, load_public_key, sign_manifest, verify_signature
from agent.bundle.writer import canonical_json

MANIFEST = canonical_json({"format": "triagent-bundle/1", "members": [
    {"name": "triagent/custody.json", "sha256": hashlib.sha256(b"custody").hexdigest(), "size": 7}]})


def _ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    need(path is not None, "ssh-keygen not installed (Debian package openssh-client)")
    return str(path)


def _write_cryptography_key(path: Path, fmt: str) -> ed25519.Ed25519PrivateKey:
    key = ed25519.Ed25519PrivateKey.generate()
    private_format = serialization.PrivateFormat.OpenSSH if fmt == "openssh" else serialization.PrivateFormat.PKCS8
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption()))
    public = key.public_key()
    if fmt == "openssh":
        text = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" x@y\n"
    else:
        text = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    Path(str(path) + ".pub").write_bytes(text)
    return key


@pytest.fixture(params=["ssh-keygen", "openssh", "pkcs8"])
def keypair(request, tmp_path) -> tuple[Path, Path]:
    """(private key path, public key path) of each kind we accept."""
    path = tmp_path / "signer"
    if request.param == "ssh-keygen":
        subprocess.run([_ssh_keygen(), "-q", "-t", "ed25519", "-N", "", "-C", "alice@lab", "-f", str(path)],
                       check=True, stdin=subprocess.DEVNULL)
    else:
        _write_cryptography_key(path, request.param)
    return path, Path(str(path) + ".pub")


@pytest.fixture
def other_public(tmp_path) -> str:
    _write_cryptography_key(tmp_path / "other", "openssh")
    return (tmp_path / "other.pub").read_text()


def _sign(private: Path) -> dict:
    # through JSON and back, as verify reads the member from a bundle
    return json.loads(canonical_json(sign_manifest(MANIFEST, load_private_key(str(private)))))


def test_good_signature_verifies(keypair):
    private, public = keypair
    sig = _sign(private)
    assert sig["signed"] == "triagent/manifest.json"
    assert sig["manifest_sha256"] == hashlib.sha256(MANIFEST).hexdigest()
    assert sig["public_key"].startswith("ssh-ed25519 AAAA") and sig["fingerprint"].startswith("SHA256:")
    for expected in (str(public), public.read_text()):  # a path, or the key's text
        ok, reason = verify_signature(MANIFEST, sig, expected)
        assert ok, reason
        assert sig["fingerprint"] in reason
    ok, reason = verify_signature(MANIFEST, sig, None)
    assert ok and "signer not checked" in reason


def test_signature_is_deterministic_and_keyed(keypair, tmp_path):
    private, _ = keypair
    assert _sign(private) == _sign(private)
    _write_cryptography_key(tmp_path / "other", "pkcs8")
    mine, other = _sign(private), _sign(tmp_path / "other")
    assert other["signature"] != mine["signature"] and other["manifest_sha256"] == mine["manifest_sha256"]


def test_flipped_manifest_byte_fails(keypair):
    private, public = keypair
    sig = _sign(private)
    for offset in (0, len(MANIFEST) // 2, len(MANIFEST) - 1):
        altered = bytearray(MANIFEST)
        altered[offset] ^= 0x01
        ok, reason = verify_signature(bytes(altered), sig, str(public))
        assert not ok and "not the signed manifest" in reason, reason
        # the recorded hash updated to match: the signature itself still catches it
        forged = dict(sig, manifest_sha256=hashlib.sha256(altered).hexdigest())
        ok, reason = verify_signature(bytes(altered), forged, str(public))
        assert not ok and "does not verify" in reason, reason


def test_wrong_key_fails(keypair, other_public):
    private, _ = keypair
    sig = _sign(private)
    ok, reason = verify_signature(MANIFEST, sig, other_public)
    assert not ok and "not by the expected key" in reason, reason
    assert sig["fingerprint"] in reason


def test_resigned_by_an_attacker_fails_only_against_the_expected_key(keypair, tmp_path):
    private, public = keypair
    attacker = _write_cryptography_key(tmp_path / "attacker", "openssh")
    sig = sign_manifest(MANIFEST, attacker)
    assert verify_signature(MANIFEST, sig, None)[0]  # self-consistent: why an expected key is needed
    ok, reason = verify_signature(MANIFEST, sig, str(public))
    assert not ok and "not by the expected key" in reason, reason


def test_swapped_public_key_fails(keypair, other_public):
    private, public = keypair
    sig = _sign(private)
    other = load_public_key(other_public)
    swapped = dict(sig, public_key=signing.public_key_line(other), fingerprint=signing.fingerprint(other))
    ok, reason = verify_signature(MANIFEST, swapped, other_public)
    assert not ok and "key swapped" in reason, reason
    # swapped inside the SSHSIG blob too: the signature no longer verifies
    blob = base64.b64decode(sig["signature"])
    old_key = base64.b64decode(sig["public_key"].split()[1])
    new_key = base64.b64decode(signing.public_key_line(other).split()[1])
    assert blob.count(old_key) == 1
    deep = dict(swapped, signature=base64.b64encode(blob.replace(old_key, new_key)).decode())
    ok, reason = verify_signature(MANIFEST, deep, other_public)
    assert not ok and "does not verify" in reason, reason
    # only the fingerprint changed
    ok, reason = verify_signature(MANIFEST, dict(sig, fingerprint=signing.fingerprint(other)), str(public))
    assert not ok and "does not belong" in reason, reason


def test_damaged_signature_fails(keypair):
    private, public = keypair
    sig = _sign(private)
    blob = bytearray(base64.b64decode(sig["signature"]))
    blob[-1] ^= 0x01  # in the raw Ed25519 signature
    ok, reason = verify_signature(MANIFEST, dict(sig, signature=base64.b64encode(blob).decode()), str(public))
    assert not ok and "does not verify" in reason, reason
    for bad in ("not base64!", base64.b64encode(b"SSHSIG\0\0\0\1").decode(), ""):
        ok, reason = verify_signature(MANIFEST, dict(sig, signature=bad), str(public))
        assert not ok and "malformed" in reason, reason
    ok, reason = verify_signature(MANIFEST, {k: v for k, v in sig.items() if k != "signature"}, str(public))
    assert not ok and "lacks signature" in reason
    ok, reason = verify_signature(MANIFEST, dict(sig, signed="triagent/custody.json"), str(public))
    assert not ok and "custody.json" in reason
    assert verify_signature(MANIFEST, [], str(public)) == (False, "signature document is not a JSON object")


def test_other_namespace_is_refused(tmp_path):
    """An SSH signature made for anything else (here ssh-keygen's 'file' namespace) is not a manifest signature."""
    keygen = _ssh_keygen()
    key = tmp_path / "k"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, stdin=subprocess.DEVNULL)
    (tmp_path / "m").write_bytes(MANIFEST)
    subprocess.run([keygen, "-q", "-Y", "sign", "-n", "file", "-f", str(key), str(tmp_path / "m")], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    armored = (tmp_path / "m.sig").read_text().splitlines()
    sig = dict(sign_manifest(MANIFEST, load_private_key(str(key))), signature="".join(armored[1:-1]))
    ok, reason = verify_signature(MANIFEST, sig, str(key) + ".pub")
    assert not ok and "namespace 'file'" in reason, reason


def test_ssh_keygen_interoperates(tmp_path):
    keygen = _ssh_keygen()
    key = tmp_path / "k"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "alice@lab", "-f", str(key)], check=True,
                   stdin=subprocess.DEVNULL)
    sig = sign_manifest(MANIFEST, load_private_key(str(key)))
    listed = subprocess.run([keygen, "-l", "-f", str(key) + ".pub"], check=True, capture_output=True).stdout.decode()
    assert listed.split()[1] == sig["fingerprint"]
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes(MANIFEST)
    # ssh-keygen's own signature of the same bytes is ours, byte for byte (Ed25519 is deterministic)
    subprocess.run([keygen, "-q", "-Y", "sign", "-n", signing.NAMESPACE, "-f", str(key), str(manifest)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    assert (tmp_path / "manifest.json.sig").read_text() == signing.sshsig_armor(sig)
    # and an examiner can check a bundle's signature without triagent
    (tmp_path / "ours.sig").write_text(signing.sshsig_armor(sig))
    (tmp_path / "allowed_signers").write_text("alice@lab " + (tmp_path / "k.pub").read_text())
    check = subprocess.run([keygen, "-Y", "verify", "-f", str(tmp_path / "allowed_signers"), "-I", "alice@lab",
                            "-n", signing.NAMESPACE, "-s", str(tmp_path / "ours.sig")],
                           input=MANIFEST, capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    check = subprocess.run([keygen, "-Y", "verify", "-f", str(tmp_path / "allowed_signers"), "-I", "alice@lab",
                            "-n", signing.NAMESPACE, "-s", str(tmp_path / "ours.sig")],
                           input=MANIFEST + b" ", capture_output=True)
    assert check.returncode != 0


def test_key_loading_errors(tmp_path):
    (tmp_path / "garbage").write_bytes(b"not a key\n")
    with pytest.raises(SigningError, match="not an OpenSSH or PEM PKCS#8 private key"):
        load_private_key(str(tmp_path / "garbage"))
    with pytest.raises(SigningError, match="cannot read signing key"):
        load_private_key(str(tmp_path / "missing"))
    _write_cryptography_key(tmp_path / "k", "openssh")
    with pytest.raises(SigningError, match="this is a public key"):
        load_private_key(str(tmp_path / "k.pub"))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa").write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    with pytest.raises(SigningError, match=r"not an Ed25519 key \(RSA\)"):
        load_private_key(str(tmp_path / "rsa"))
    encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    (tmp_path / "enc").write_bytes(encrypted)
    with pytest.raises(SigningError, match="encrypted"):
        load_private_key(str(tmp_path / "enc"))
    rsa_line = rsa_key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    with pytest.raises(SigningError, match=r"not an Ed25519 public key \(ssh-rsa\)"):
        load_public_key(rsa_line.decode())
    with pytest.raises(SigningError, match="no ssh-ed25519 public key found"):
        load_public_key("hello")
    truncated = base64.b64encode(struct.pack(">I", 11) + b"ssh-ed25519").decode()
    with pytest.raises(SigningError, match="malformed"):
        load_public_key("ssh-ed25519 " + truncated)
    ok, reason = verify_signature(MANIFEST, sign_manifest(MANIFEST, ed25519.Ed25519PrivateKey.generate()), "hello")
    assert not ok and reason.startswith("expected public key:")


def test_encrypted_openssh_key_is_refused(tmp_path):
    key = tmp_path / "k"
    subprocess.run([_ssh_keygen(), "-q", "-t", "ed25519", "-N", "secret", "-f", str(key)], check=True,
                   stdin=subprocess.DEVNULL)
    with pytest.raises(SigningError, match="encrypted"):
        load_private_key(str(key))


def test_armored_form_is_carried_and_checked(tmp_path):
    """The signature document carries the armored SSHSIG (what `ssh-keygen -Y verify -s` reads); verify
    refuses a document whose armored form is not its signature (one key's blob, another's armor)."""
    key = ed25519.Ed25519PrivateKey.generate()
    sig = sign_manifest(MANIFEST, key)
    assert sig["armored"] == signing.sshsig_armor(sig)
    assert sig["armored"].startswith("-----BEGIN SSH SIGNATURE-----\n") and "\n-----END SSH SIGNATURE-----\n" \
        in sig["armored"]
    assert verify_signature(MANIFEST, sig, None)[0]
    other = sign_manifest(MANIFEST, ed25519.Ed25519PrivateKey.generate())
    for armored in (other["armored"], sig["armored"].replace("\n", "\r\n"), "", 7):
        ok, reason = verify_signature(MANIFEST, dict(sig, armored=armored), None)
        assert not ok and "armored" in reason, (armored, reason)
    # a document written before the armored form existed still verifies
    assert verify_signature(MANIFEST, {k: v for k, v in sig.items() if k != "armored"}, None)[0]
