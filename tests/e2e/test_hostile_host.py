"""The host is hostile: a root built the way an attacker would build it must not steer the collector.
No byte from outside the evidence root and no secret byte may reach the bundle, whatever path, link
or record it arrives by; no member name may climb; the run ends and seals."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import members, need, run_triagent, summary_of
from openssl_trap import evil_openssl_conf

CLIMB = "../" * 16  # more than enough to reach the host's / from anywhere


def _ssh_keygen(path: Path) -> list[bytes]:
    need(subprocess.run(["which", "ssh-keygen"], capture_output=True).returncode == 0,
         "ssh-keygen (openssh-client) makes the private key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@host", "-f", str(path)], check=True)
    body = path.read_bytes().splitlines()[1:-1]
    return [line for line in body if len(line) >= 20]


@pytest.fixture(scope="module")
def attack(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("attack")
    outside = base / "outside"  # the responder's own machine: nothing of it may be read
    (outside / "share/fish").mkdir(parents=True)
    canary = f"CANARY-OUTSIDE-{secrets.token_hex(6)}"
    (outside / "canary.conf").write_text(f"Banner /{canary}-include\n")
    (outside / "canary_keys").write_text(f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA {canary}-akf\n")
    (outside / "share/fish/fish_history").write_text(f"- cmd: echo {canary}-fish\n  when: 1700000000\n")
    root = base / "root"
    for d in ("etc/ssh", "etc/cron.d", "root", "home/alice/.ssh", "home/bob", "tmp", "var/log"):
        (root / d).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n"
                                     "alice:x:1000:1000::/home/alice:/bin/zsh\n"
                                     "bob:x:1001:1001::/home/bob:/usr/bin/fish\n")
    (root / "etc/group").write_text("root:x:0:\nalice:x:1000:\n")
    hashes = [f"$6${secrets.token_hex(4)}${secrets.token_urlsafe(64)}" for _ in range(2)]
    (root / "etc/shadow").write_text(f"root:{hashes[0]}:19000:0:99999:7:::\n")
    (root / "etc/shadow.bak").write_text(f"root:{hashes[1]}:18000:0:99999:7:::\n")
    key_lines = _ssh_keygen(root / "home/alice/.ssh/id_ed25519")
    # sshd_config: '..' that climbs out of the root, an Include of the responder's files, and one that
    # names shadow through a home
    outside_rel = str(outside).lstrip("/")
    (root / "etc/ssh/sshd_config").write_text(
        f"AuthorizedKeysFile {CLIMB}{outside_rel}/canary_keys\n"
        f"AuthorizedKeysFile ../etc/shadow\n"
        f"Include {CLIMB}{outside_rel}/*.conf\n")
    # symlinked secrets where parsers look
    os.symlink("/etc/shadow", root / "root/.bash_history")
    os.symlink("/home/alice/.ssh/id_ed25519", root / "home/alice/.zsh_history")
    os.symlink("../../../etc/shadow.bak", root / "home/alice/.ssh/authorized_keys")
    os.symlink("/etc/shadow", root / "etc/ld.so.preload")
    os.symlink("/etc/shadow", root / "etc/cron.d/evil")
    # a history whose parent folder is a link to the responder's machine
    os.symlink(str(outside), root / "home/bob/.local")
    return {"root": root, "canary": canary.encode(), "secrets": [h.encode() for h in hashes] + key_lines}


@pytest.mark.parametrize("profile", ["triage", "full"])
def test_hostile_root_cannot_steer_the_collector(attack, tmp_path, profile):
    proc = run_triagent(["collect", "--root", str(attack["root"]), "--output", str(tmp_path), "--profile", profile])
    summary = summary_of(proc)
    bundle = summary["bundle"]
    assert run_triagent(["verify", bundle]).returncode == 0
    with tarfile.open(bundle) as tar:
        names = [m.name for m in tar.getmembers()]
        links = [m.linkname for m in tar.getmembers() if m.issym()]
    assert not [n for n in names if n.startswith("/") or ".." in n.split("/")], names
    found = members(bundle)
    everything = b"\n".join(list(found.values()) + [n.encode() for n in names] + [t.encode() for t in links])
    assert attack["canary"] not in everything, "bytes from outside the evidence root reached the bundle"
    leaked = [s[:16] for s in attack["secrets"] if s in everything]
    assert not leaked, f"secret bytes reached the bundle: {leaked}"
    log = [json.loads(line) for line in found["triagent/collection.log.jsonl"].splitlines()]
    withheld = {e.get("path"): e for e in log if "withheld" in e["message"] and e.get("detail")}
    # each link to a secret is recorded as such: link, target, size and hash of the target
    shadow = withheld.get("/root/.bash_history")
    assert shadow and shadow["detail"]["resolved"] == "/etc/shadow", sorted(withheld)
    assert shadow["detail"]["link_target"] == "/etc/shadow" and len(shadow["detail"]["sha256"]) == 64
    assert withheld["/home/alice/.zsh_history"]["detail"]["resolved"] == "/home/alice/.ssh/id_ed25519"
    for path in ("/etc/ld.so.preload", "/etc/cron.d/evil", "/home/alice/.ssh/authorized_keys"):
        assert path in withheld, (path, sorted(withheld))
    # the links themselves are evidence and are kept as links
    assert "fs/$rootfs$/root/.bash_history" in names


def test_a_key_block_that_begins_before_a_tail_window_is_still_overwritten(tmp_path):
    """Logs keep their newest end: when the window starts inside a private-key block, the block's
    start is before the window, yet its body must not ship."""
    root = tmp_path / "root"
    (root / "var/log").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    key = tmp_path / "k"
    body = _ssh_keygen(key)
    block = key.read_bytes()
    cap = 2 << 20  # files.logs keeps the last 2 MiB of a log
    line = b"Dec  5 10:00:00 host app[1]: ordinary line\n"
    head = line * ((3 << 20) // len(line))
    cut = len(head) + len(block) // 2  # the window starts half way into the key block
    tail_len = cap - (len(block) - len(block) // 2)
    tail = (line * (tail_len // len(line) + 1))[-tail_len:]
    log = head + block + tail
    assert len(log) - cap == cut
    (root / "var/log/syslog").write_bytes(log)
    proc = run_triagent(["collect", "--root", str(root), "--output", str(tmp_path / "out"),
                         "--artifacts", "files.logs"])
    bundle = summary_of(proc)["bundle"]
    copy = members(bundle)["fs/$rootfs$/var/log/syslog"]
    assert len(copy) == cap and copy.endswith(line)
    assert not [b for b in body if b in copy], "key body lines shipped"


def test_the_hosts_openssl_configuration_is_never_loaded(tmp_path):
    """OPENSSL_CONF (and the host's /usr/lib/ssl/openssl.cnf, which it stands in for here) can name a provider or
    engine: a shared object OpenSSL loads into the collector, running as root, the moment hashlib or ssl starts
    it. The collector reads no OpenSSL configuration at all; the proof that the trap is real comes first."""
    conf, marker = evil_openssl_conf(tmp_path)
    env = dict(os.environ, OPENSSL_CONF=str(conf))
    subprocess.run(["python3", "-c", "import hashlib; hashlib.sha256(b'')"], env=env, timeout=60, check=False)
    assert marker.exists(), "the trap did not fire: this OpenSSL does not load providers from its configuration"
    marker.unlink()

    out = tmp_path / "out"
    proc = run_triagent(["collect", "--artifacts", "clock,system", "--output", str(out)], env=env)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert not marker.exists(), "the collector loaded a provider named by the host's OpenSSL configuration"
