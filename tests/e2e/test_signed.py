"""--sign-key through the command line: a signed bundle verifies against the examiner's public key and
against no other; removing, replacing or altering the signature member is named by verify."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import need, run_triagent, summary_of


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> tuple[Path, Path, Path]:
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen is not installed (apt-get install openssh-client)")
    folder = tmp_path_factory.mktemp("signed")
    for name in ("examiner", "intruder"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    summary = summary_of(run_triagent(["collect", "--profile", "minimal", "--compress", "none", "--output",
                                       str(folder / "out"), "--sign-key", str(folder / "examiner")]))
    return Path(summary["bundle"]), folder / "examiner.pub", folder / "intruder.pub"


def _verify(bundle: Path, key: Path | None, option: str = "--public-key") -> tuple[int, dict]:
    proc = run_triagent(["verify", str(bundle)] + ([option, str(key)] if key else []))
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("option", ["--public-key", "--pubkey"])
def test_good_signature_by_the_expected_key(signed, option):
    bundle, examiner, intruder = signed
    code, out = _verify(bundle, examiner, option)
    assert code == 0 and "expected key" in out["signature"], out
    code, out = _verify(bundle, intruder, option)
    assert code == 1 and any("manifest.sig.json" in p for p in out["problems"]), out
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        assert names[-3:] == ["triagent/manifest.json", "triagent/manifest.sig.json", "triagent/seal.json"]
        assert "triagent/custody.jsonld" in names


def _rewrite(bundle: Path, dest: Path, drop: str | None = None, flip_in: str | None = None) -> Path:
    """A copy of the (uncompressed) bundle with one member dropped or one byte of it flipped."""
    data = bytearray(bundle.read_bytes())
    with tarfile.open(bundle) as tar:
        member = tar.getmember(drop or flip_in)
    if flip_in:
        data[member.offset_data + member.size // 2] ^= 0x01
        dest.write_bytes(bytes(data))
        return dest
    # What someone stripping the signature would do: drop the member, then write a seal that is right for
    # what is left (the seal holds no secret), so only the signer named inside the manifest can tell.
    from agent.bundle import tarformat
    from agent.bundle.tarformat import Header
    from agent.bundle.writer import SEAL_NAME, seal_document

    with tarfile.open(bundle) as tar:
        manifest = tar.extractfile("triagent/manifest.json").read()
    body = bytes(data[:member.offset])
    seal = seal_document(hashlib.sha256(manifest).hexdigest(), len(body))
    sealed_at = json.loads(manifest)["sealed_at_ns"]
    out = body + tarformat.encode(Header(SEAL_NAME.encode(), size=len(seal), mode=0o444, mtime_ns=sealed_at))
    out += seal + b"\0" * tarformat.pad(len(seal))
    end = 2 * tarformat.BLOCK
    out += b"\0" * (end + -(len(out) + end) % tarformat.RECORD)
    dest.write_bytes(out)
    return dest


def test_altered_or_removed_signature_is_named(signed, tmp_path):
    bundle, examiner, _ = signed
    code, out = _verify(_rewrite(bundle, tmp_path / "flip.tar", flip_in="triagent/manifest.sig.json"), examiner)
    assert code == 1 and any("manifest.sig.json" in p for p in out["problems"]), out
    code, out = _verify(_rewrite(bundle, tmp_path / "drop.tar", drop="triagent/manifest.sig.json"), None)
    assert code == 1 and any("removed" in p for p in out["problems"]), out


def _readme_recipe() -> str:
    """The README's shell block that checks a bundle's signature with ssh-keygen alone."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    recipe = [b for b in blocks if "ssh-keygen -Y verify" in b]
    assert len(recipe) == 1, "README: no single ```sh block with the ssh-keygen -Y verify recipe"
    return recipe[0]


def test_readme_recipe_verifies_with_ssh_keygen(signed, tmp_path):
    """The armored SSHSIG inside triagent/manifest.sig.json, extracted and checked exactly as the README
    says, by the real `ssh-keygen -Y verify`: good for the examiner's key and the bundle as sealed; bad
    for another key or for a manifest that is not the signed one."""
    bundle, examiner, intruder = signed
    need(shutil.which("python3") is not None, "python3 is not on PATH (the README recipe uses it)")
    recipe = _readme_recipe().replace("BUNDLE", shlex.quote(str(bundle)))
    with tarfile.open(bundle) as tar:
        sig = json.loads(tar.extractfile("triagent/manifest.sig.json").read())
        manifest = tar.extractfile("triagent/manifest.json").read()
    assert sig["armored"].startswith("-----BEGIN SSH SIGNATURE-----\n")
    assert sig["armored"].endswith("-----END SSH SIGNATURE-----\n")

    def run(key: Path, folder: Path, script: str = recipe) -> subprocess.CompletedProcess:
        folder.mkdir()
        shutil.copy(key, folder / "examiner.pub")
        return subprocess.run(["sh", "-ec", script], cwd=folder, capture_output=True, timeout=60)

    good = run(examiner, tmp_path / "good")
    assert good.returncode == 0, (good.stdout, good.stderr)
    assert b'Good "triagent-manifest" signature' in good.stdout + good.stderr
    assert (tmp_path / "good" / "manifest.sig").read_text() == sig["armored"]
    bad = run(intruder, tmp_path / "intruder")
    assert bad.returncode != 0, (bad.stdout, bad.stderr)
    # a manifest that is not the signed one (one byte changed): ssh-keygen refuses it
    (tmp_path / "other.json").write_bytes(manifest.replace(b'"triagent-bundle/1"', b'"triagent-bundle/2"'))
    altered = recipe.replace(f"tar -xOf {shlex.quote(str(bundle))} triagent/manifest.json",
                             f"cat {shlex.quote(str(tmp_path / 'other.json'))}")
    assert altered != recipe
    bad = run(examiner, tmp_path / "altered", altered)
    assert bad.returncode != 0, (bad.stdout, bad.stderr)
