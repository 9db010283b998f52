"""Sigma means Sigma (issue 14): each case of tests/data/sigma_corpus/modifiers.yml is a rule and log
records with the records the Sigma specification says it matches; agent/analysis/sigma.py must match
exactly those, through the interface the analysis uses (load a folder, evaluate over streams of rows),
and refuse — with a reason — what it cannot evaluate."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

pytest.importorskip("sigma.backends.sqlite")

from agent.analysis import sigma  # noqa: E402
from collectors.base import Cancelled, Problem  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data" / "sigma_corpus"
CASES = yaml.safe_load((DATA / "modifiers.yml").read_text(encoding="utf-8"))
PROJECT_RULES = Path(__file__).resolve().parents[3] / "specs" / "rules" / "sigma"


def rule_text(case: dict, number: int) -> str:
    """The case as a Sigma rule file (and, for a correlation case, the correlation rule that counts it)."""
    rule = {"title": case["name"], "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"triagent-sigma-case-{number}")),
            "status": "test", "logsource": case.get("logsource") or {"product": "linux", "service": "syslog"},
            "detection": case["detection"], "level": "medium"}
    if not case.get("correlation"):
        return yaml.safe_dump(rule, sort_keys=False, allow_unicode=True)
    rule["name"] = f"case_{number}"
    correlation = {"title": f"{case['name']} (correlation)", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"c-{number}")),
                   "status": "test", "correlation": {"type": "event_count", "rules": [f"case_{number}"],
                                                     "group-by": ["service"], "timespan": "5m",
                                                     "condition": {"gte": 2}}, "level": "high"}
    return yaml.safe_dump_all([rule, correlation], sort_keys=False, allow_unicode=True)


def stream_of(case: dict) -> str:
    service = ((case.get("logsource") or {}).get("service") or "syslog").lower()
    return f"dissect.{sigma.STREAMS.get(service, sigma.ALL_LOGS)[0]}"


def run_case(tmp_path: Path, case: dict, number: int) -> tuple[list[int], list[str]]:
    """(records matched, 0-based; texts of the refusals) of the case's rule over its records."""
    folder = tmp_path / "sigma"
    folder.mkdir()
    (folder / "rule.yml").write_text(rule_text(case, number), encoding="utf-8")
    records = [dict(r) for r in case["events"]]
    stream = stream_of(case)

    def rows(name: str):
        return iter([("source", "m", n, r) for n, r in enumerate(records, 1)] if name == stream else [])

    found = list(sigma.evaluate(sigma.load(str(folder)), rows))
    matched = sorted(e["line"] - 1 for f in found if f.get("kind") == "sigma" and f["title"] == case["name"]
                     for e in f["evidence"])
    refused = [f["summary"] for f in found if f.get("kind") == "sigma_refused"]
    return matched, refused


@pytest.mark.parametrize("number", range(len(CASES)), ids=[c["name"] for c in CASES])
def test_the_specification(tmp_path, number):
    case = CASES[number]
    assert len(case["events"]) <= 10  # a finding names its first 10 lines
    matched, refused = run_case(tmp_path, case, number)
    assert matched == case["expect"], (case["name"], case.get("bug"))
    if case.get("refused"):
        assert refused and all(case["refused"] in text for text in refused), refused
    else:
        assert not refused, refused


def test_refusals_go_to_the_analysis_log_when_asked(tmp_path):
    """With a problems list (the analysis log) a refusal is a warning there, not a finding; the rules of one
    log source that a bundle lacks are one line."""
    for number in range(3):
        (tmp_path / f"proc_{number}.yml").write_text(yaml.safe_dump({
            "title": f"process {number}", "logsource": {"product": "linux", "category": "process_creation"},
            "detection": {"s": {"Image|endswith": f"/x{number}"}, "condition": "s"}}))
    (tmp_path / "broken.yml").write_text("title: [unclosed\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ok.yml").write_text(yaml.safe_dump({
        "title": "ok", "logsource": {"product": "linux", "service": "auth"},
        "detection": {"s": {"message|contains": "new user"}, "condition": "s"}, "level": "high"}))
    problems: list = []
    rows = {"dissect.authlog": [("source", "var/log/auth.log", 7, {"message": "new user: name=x, UID=0,"})]}
    found = list(sigma.evaluate(sigma.load(str(tmp_path)), lambda s: iter(rows.get(s, [])), problems=problems))
    assert [(f["title"], f["evidence"]) for f in found] == [
        ("ok", [{"bundle": "source", "member": "var/log/auth.log", "line": 7}])]
    assert all(isinstance(p, Problem) and p.level == "warning" for p in problems), problems
    texts = sorted(p.message for p in problems)
    assert len(texts) == 2, texts
    assert texts[0].startswith("sigma rule not evaluated: broken.yml: does not parse: "), texts
    assert texts[1].startswith("sigma: 3 rule(s) not evaluated, log source category 'process_creation'"), texts
    assert sorted(next(p for p in problems if "process_creation" in p.message).detail["sigma_refused"]) == [
        f"proc_{n}.yml (process {n})" for n in range(3)]


def test_check_stops_a_long_run(tmp_path):
    """check() (the run's budget and SIGTERM) is called while rows go in, before each rule, and while
    SQLite runs a query: here it stops the query (20 000 rows: 10 calls while they go in, 1 before the rule)."""
    (tmp_path / "r.yml").write_text(yaml.safe_dump({
        "title": "slow", "logsource": {"product": "linux", "service": "syslog"},
        "detection": {"s": {"message|contains": "never"}, "condition": "s"}}))
    records = [("source", "m", n, {"message": f"line {n}"}) for n in range(20000)]
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 13:
            raise Cancelled("budget")

    with pytest.raises(Cancelled):
        list(sigma.evaluate(sigma.load(str(tmp_path)), lambda s: iter(records if s == "dissect.syslog" else []),
                            check))
    assert len(calls) == 13


def test_the_project_rules_all_run(tmp_path):
    """specs/rules/sigma: none refused, each matches its line and only it."""
    loaded = sigma.load(str(PROJECT_RULES))
    compiled, refused = sigma.compile_rules(loaded)
    assert not refused and len(compiled) == len(loaded) == 5
    assert not [c for c in compiled if c.no_records]
    lines = {
        "dissect.authlog": [
            {"service": "sshd", "message": "Accepted publickey for root from 203.0.113.9 port 4243 ssh2: ED25519 x"},
            {"service": "sshd", "message": "Accepted publickey for rooty from 203.0.113.9 port 4243 ssh2"},
            {"service": "useradd", "message": "new user: name=toor, UID=0, GID=0, home=/root, shell=/bin/bash"},
            {"service": "useradd", "message": "new user: name=t, UID=10, GID=0, home=/root, shell=/bin/bash"},
            {"service": "sudo", "message": "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash"},
            {"service": "sudo", "message": "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; command=/bin/bash"},
            {"service": "sudo", "message": "al : TTY=pts/0 ; PWD=/tmp ; USER=root ; COMMAND=/usr/bin/sh get-docker.sh"},
            {"service": "sshd", "message": "Failed password for invalid user admin from 198.51.100.7 port 1 ssh2"},
        ],
        "dissect.syslog": [
            {"service": "systemd", "message": "Stopping System Logging Service..."},
            {"service": "auditd", "message": "auditd normal halt, sending auditd daemon is stopping event"},
            {"service": "systemd", "message": "Started System Logging Service."},
        ],
    }

    def rows(stream):
        return iter([(stream, "m", n, r) for n, r in enumerate(lines.get(stream, []), 1)])

    problems: list = []
    found = {f["title"]: (f["evidence"], f["severity"], f["mitre"])
             for f in sigma.evaluate(loaded, rows, problems=problems)}
    assert not problems
    assert found == {
        "Remote login as root accepted": ([{"bundle": "dissect.authlog", "member": "m", "line": 1}], "medium",
                                          ["T1078"]),
        "User account created with UID 0": ([{"bundle": "dissect.authlog", "member": "m", "line": 3}], "high",
                                            ["T1136.001"]),
        "sudo to an interactive shell": ([{"bundle": "dissect.authlog", "member": "m", "line": 5}], "low",
                                         ["T1548.003"]),
        "SSH password guessing against unknown users": ([{"bundle": "dissect.authlog", "member": "m", "line": 8}],
                                                        "low", ["T1110.001"]),
        "System logging or auditing stopped": ([{"bundle": "dissect.syslog", "member": "m", "line": 1},
                                                {"bundle": "dissect.syslog", "member": "m", "line": 2}], "medium",
                                               ["T1562.001"]),
    }, found
