"""Strict verify (agent/bundle/verify.py) and the signature document's ``armored`` field (agent/bundle/signing.py: the
same SSHSIG as an ``-----BEGIN SSH SIGNATURE-----`` text for ``ssh-keygen -Y verify``): a sealed, signed
bundle with it verifies, strictly, against the signer's key; one whose armored text is not the document's
own signature is a named problem and a non-zero exit, even though the seal matches."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hostile_bundles import NOW_NS, _custody

from agent.bundle.signing import fingerprint, public_key_line, sign_manifest, sshsig_armor
from agent.bundle.verify import verify
from agent.bundle.writer import BundleWriter

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _signed(path: Path, tamper=None) -> Path:
    def sign(data: bytes) -> dict:
        sig = sign_manifest(data, KEY)
        return tamper(sig, data) if tamper else sig

    with open(path, "wb") as out:
        w = BundleWriter(out, "gzip")
        w.add_bytes("triagent/custody.json", _custody(), NOW_NS)
        w.add_bytes("fs/$rootfs$/etc/hostname", b"web1\n", NOW_NS)
        w.seal({"format": "triagent-bundle/1", "status": "complete", "profile": "triage",
                "started_ns": NOW_NS - 60 * 10**9, "signer": fingerprint(KEY.public_key())}, NOW_NS, sign)
    return path


def _other_armor(sig: dict, data: bytes) -> dict:
    # a valid armored SSHSIG, but of another key's signature over the same manifest
    return dict(sig, armored=sign_manifest(data, OTHER)["armored"])


def _one_char(sig: dict, _data: bytes) -> dict:
    text = sig["armored"]
    at = text.index("\n") + 5
    return dict(sig, armored=text[:at] + ("B" if text[at] != "B" else "C") + text[at + 1:])


def _not_armored(sig: dict, _data: bytes) -> dict:
    return dict(sig, armored="ssh-ed25519 " + sig["signature"])


def test_the_armored_signature_verifies_strictly(tmp_path):
    bundle = _signed(tmp_path / "good.tar.gz")
    result = verify(str(bundle), public_key=public_key_line(KEY.public_key()))
    assert result.ok, result.problems
    assert "good signature by the expected key" in (result.signature or "")
    assert verify(str(bundle)).ok  # without an expected key too (the message says the signer is not checked)
    # an older document without the field still verifies (the field is optional)
    older = _signed(tmp_path / "older.tar.gz", lambda sig, _d: {k: v for k, v in sig.items() if k != "armored"})
    assert verify(str(older), public_key=public_key_line(KEY.public_key())).ok


@pytest.mark.parametrize("tamper", [_other_armor, _one_char, _not_armored], ids=["other_key", "one_char", "not_armor"])
def test_a_mismatching_armored_signature_is_refused(tmp_path, tamper):
    bundle = _signed(tmp_path / "bad.tar.gz", tamper)
    result = verify(str(bundle), public_key=public_key_line(KEY.public_key()))
    assert not result.ok
    assert any("manifest.sig.json" in p and "armored" in p for p in result.problems), result.problems


def test_armor_helper_matches_the_document():
    sig = sign_manifest(b"{}", KEY)
    assert sig["armored"] == sshsig_armor(sig)
    assert sig["armored"].startswith("-----BEGIN SSH SIGNATURE-----\n")
