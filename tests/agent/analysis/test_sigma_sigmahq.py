"""Sigma means Sigma (issue 14), the differential proof: every rule of SigmaHQ's rules/linux tree (pinned
copy in tests/data/sigmahq, DRL 1.1) and every rule of tests/data/sigma_corpus/modifiers.yml is evaluated
by agent/analysis/sigma.py and by the reference — pySigma's SQLite backend as it ships, its query run
over a Zircolite-style table (one TEXT COLLATE NOCASE column per field the rule names, keywords in a text
column, REGEXP as Python's re.search) built here, independently, one table per rule — over one corpus:

- log files (tests/data/sigma_corpus/auth.log, syslog, audit.log: lines written by hand in the exact
  formats of sshd, sudo, useradd, su, cron, systemd, the kernel, rsyslog, clamd, named, vsftpd, guacd and
  auditd, its ENRICHED format and hex-encoded fields included) read by dissect.target and turned into
  records by the collector's own record_dict, as a bundle holds them;
- the records of modifiers.yml, which hit each modifier (contains/startswith/endswith/all/re/re|i|m|s/cased/
  exists/windash/base64/base64offset/cidr/lt/gt/neq/fieldref/time parts), list-OR, null, numbers;
- for each SigmaHQ rule, records made from its own detection (one per way to satisfy it) and the same with
  every letter's case swapped, so that most rules have something to match and case rules are tested.

The matches must be the same, rule by rule. The only differences allowed are those modifiers.yml names
(`reference:`, with why): lt/lte/gt/gte, which the stock backend compares as text on such a table."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
import yaml

pytest.importorskip("sigma.backends.sqlite")

from agent.analysis import sigma  # noqa: E402

TESTS = Path(__file__).resolve().parents[2]
SIGMAHQ = TESTS / "data" / "sigmahq" / "rules"
CORPUS = TESTS / "data" / "sigma_corpus"
CASES = yaml.safe_load((CORPUS / "modifiers.yml").read_text(encoding="utf-8"))
SIGMAHQ_COMMIT = "8eaafff1f2845a696050e05e72ba1140ee190698"

# What the lines of the corpus's log files make the SigmaHQ rules find through the analysis's path (a bundle's
# streams): each hit was read against its line.
EXPECTED_FINDINGS = {
    # auth.log
    "Privileged User Has Been Created",  # useradd UID=0 (toor), GID=27 (ops)
    "Suspicious OpenSSH Daemon Error",  # incorrect signature, Corrupted MAC on input, error in libcrypto
    "Symlink Etc Passwd",  # sudo … COMMAND=/usr/bin/ln -s /etc/passwd /tmp/p
    "Linux Command History Tampering",  # echo "" > /root/.bash_history (auth), history -c (syslog)
    # syslog
    "Buffer Overflow Attempts", "Code Injection by ld.so Preload", "Commands to Clear or Remove the Syslog - Builtin",
    "Disabling Security Tools - Builtin", "Guacamole Two Users Sharing Session Anomaly", "Modifying Crontab",
    "Potential Suspicious BPF Activity - Linux", "Relevant ClamAV Message", "Remote File Copy",
    "Suspicious Activity in Shell Commands", "Suspicious Log Entries", "Suspicious Named Error",
    "Suspicious Reverse Shell Command Line", "Suspicious Use of /dev/tcp", "Suspicious VSFTPD Error Messages",
    # audit.log
    "Binary Padding - Linux", "Clear or Disable Kernel Ring Buffer Logs via Syslog Syscall",
    "Clipboard Collection with Xclip Tool - Auditd", "Creation Of An User Account", "Credentials In Files - Linux",
    "Data Compressed", "Data Exfiltration with Wget", "Disable System Firewall", "File or Folder Permissions Change",
    "Hidden Files and Directories", "Linux Keylogging with Pam.d", "Linux Network Service Scanning - Auditd",
    "Loading of Kernel Module via Insmod", "Logging Configuration Changes on Linux Host",
    "Masquerading as Linux Crond Process", "Modification of ld.so.preload",
    "Overwriting the File with Dev Zero or Null", "Program Executions in Suspicious Folders",
    "Remove Immutable File Attribute - Auditd", "Service Reload or Start - Linux",
    "Suspicious C2 Activities", "Suspicious Commands Linux", "Suspicious History File Operations - Linux",
    "System Information Discovery - Auditd", "System Owner or User Discovery - Linux", "System Shutdown/Reboot - Linux",
    "Systemd Service Creation", "Unix Shell Configuration Modification", "Use Of Hidden Paths Or Files",
    "Webshell Remote Command Execution",
}


# --------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------

def real_records(tmp_path: Path) -> dict[str, list[dict]]:
    """The corpus's log files as a bundle holds them: dissect.target's records through record_dict."""
    target_module = pytest.importorskip("dissect.target")
    from collectors.parsers.dissect_target import record_dict

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("web-01\n")
    (root / "var" / "log" / "audit").mkdir(parents=True)
    for name, where in (("auth.log", "var/log/auth.log"), ("syslog", "var/log/syslog"),
                        ("audit.log", "var/log/audit/audit.log")):
        (root / where).write_bytes((CORPUS / name).read_bytes())
    target = target_module.Target.open(str(root))
    streams = {name: [record_dict(r) for r in getattr(target, name)()] for name in ("authlog", "syslog", "audit")}
    lines = {"authlog": "auth.log", "syslog": "syslog", "audit": "audit.log"}
    for name, records in streams.items():
        assert len(records) == (CORPUS / lines[name]).read_bytes().count(b"\n"), name
    return streams


def _sample(value) -> object:
    """A value that the Sigma value ``value`` matches (for a regular expression, its text)."""
    from sigma import types as st

    if isinstance(value, st.SigmaExpansion):
        return _sample(value.values[0])
    if isinstance(value, st.SigmaString):
        return "".join("x" if p is st.SpecialChars.WILDCARD_MULTI else "y" if p is st.SpecialChars.WILDCARD_SINGLE
                       else p if isinstance(p, str) else "" for p in value.s)
    if isinstance(value, st.SigmaRegularExpression):
        return re.sub(r"[\\^$()|?*+\[\]{}]", "", str(value.regexp))
    if isinstance(value, st.SigmaBool):
        return value.boolean
    if isinstance(value, st.SigmaNumber):
        return value.number
    if isinstance(value, st.SigmaCIDRExpression):
        return str(ipaddress.ip_network(value.cidr, strict=False).network_address + 1)
    if isinstance(value, st.SigmaCompareExpression):
        return value.number.number + (1 if value.op.name.startswith("GT") else -1)
    return None


def _compose(values: list) -> object:
    """One value meeting all of ``values`` (a field's constraints): the one that must be whole, else the
    one it must start with, those it must contain, the one it must end with."""
    from sigma import types as st

    values = [v.values[0] if isinstance(v, st.SigmaExpansion) else v for v in values]
    strings = [v for v in values if isinstance(v, st.SigmaString)]
    if not strings:
        return _sample(values[0])
    star = st.SpecialChars.WILDCARD_MULTI
    whole = [v for v in strings if not v.startswith(star) and not v.endswith(star)]
    if whole:
        return _sample(whole[0])
    head = next((v for v in strings if not v.startswith(star)), None)
    tail = next((v for v in strings if not v.endswith(star)), None)
    middle = [v for v in values if v is not head and v is not tail]
    return " ".join(str(_sample(v)) for v in [head, *middle, tail] if v is not None)


def _solutions(node, limit: int = 3) -> list[dict]:
    """Up to ``limit`` ways to satisfy the condition, NOT left aside: field → the values it must match
    (``None``: keywords)."""
    from sigma import conditions as sc
    from sigma import types as st

    if isinstance(node, sc.ConditionOR):
        return [s for arg in node.args for s in _solutions(arg, limit)][:limit]
    if isinstance(node, sc.ConditionAND):
        partial: list[dict] = [{}]
        for arg in node.args:
            partial = [{k: a.get(k, []) + b.get(k, []) for k in {*a, *b}}
                       for a in partial for b in _solutions(arg, limit)][:limit]
        return partial
    if isinstance(node, sc.ConditionFieldEqualsValueExpression):
        if isinstance(node.value, st.SigmaExists):
            return [{node.field: [st.SigmaString("present")]} if node.value.exists else {}]
        if isinstance(node.value, (st.SigmaFieldReference, st.SigmaNull)):
            return [{}]
        return [{node.field: [node.value]}]
    if isinstance(node, sc.ConditionValueExpression):
        return [{None: [node.value]}]
    return [{}]  # NOT


def rule_records(rule) -> list[dict]:
    """Records made from a rule's own detection, and their case-swapped twins."""
    records = []
    for condition in rule.detection.parsed_condition:
        for solution in _solutions(condition.parse()):
            record = {k: _compose(v) for k, v in solution.items() if k is not None}
            if solution.get(None):
                words = [str(_sample(v)) for v in solution[None]]
                record["message"] = " ".join([str(record.get("message", ""))] + words).strip()
            records.append(record)
            records.append({k: v.swapcase() if isinstance(v, str) else v for k, v in record.items()})
    return records


def case_rules(folder: Path) -> list[str]:
    """modifiers.yml as rule files; returns the case titles, in order."""
    from test_sigma_spec import rule_text

    folder.mkdir()
    for number, case in enumerate(CASES):
        (folder / f"case_{number:02}.yml").write_text(rule_text(case, number), encoding="utf-8")
    return [c["name"] for c in CASES]


# --------------------------------------------------------------------------------------------------
# The reference: the stock backend over a Zircolite-style table
# --------------------------------------------------------------------------------------------------

def _zircolite(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def _lookup(record: dict, name: str):
    if name in record:
        return record[name]
    return next((v for k, v in record.items() if k.lower() == name.lower()), None)


def reference_matches(rule, events: list[dict]) -> list[int] | str:
    """Events (indices) the stock backend's queries for ``rule`` select, or why it cannot run them."""
    from sigma.backends.sqlite import sqliteBackend
    from sigma.exceptions import SigmaError

    rule = copy.deepcopy(rule)
    fields = sigma.rule_fields(rule)
    try:
        queries = sqliteBackend(fulltext_field="sigma_text").convert_rule(rule)
    except SigmaError as exc:
        return f"cannot convert: {exc}"
    db = sqlite3.connect(":memory:")
    db.create_function("regexp", 2, lambda p, v: None if v is None else re.search(p, v) is not None)
    found: set[int] = set()
    try:
        db.execute("CREATE TABLE logs (sigma_id INTEGER PRIMARY KEY, sigma_text TEXT COLLATE NOCASE"
                   + "".join(f", `{f}` TEXT COLLATE NOCASE" for f in fields) + ")")
        db.executemany(f"INSERT INTO logs VALUES (?, ?{', ?' * len(fields)})",
                       [[n, None if sigma.message_of(e) is None else str(sigma.message_of(e))]
                        + [_zircolite(_lookup(e, f)) for f in fields] for n, e in enumerate(events)])
        for query in queries:  # a list of conditions: each its own query, ORed
            assert query.startswith("SELECT * FROM logs WHERE "), query
            found |= {row[0] for row in db.execute(query)}
    except sqlite3.Error as exc:
        return f"cannot run: {exc}"
    finally:
        db.close()
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------

def test_sigmahq_linux_rules_agree_with_the_reference_backend(tmp_path):
    started = time.monotonic()
    sigmahq = sigma.load(str(SIGMAHQ))
    titles = case_rules(tmp_path / "cases")
    cases = sigma.load(str(tmp_path / "cases"))
    assert len(sigmahq) == len(list(SIGMAHQ.rglob("*.yml"))) == 210

    streams = real_records(tmp_path)
    events = [sigma.event(r) for records in streams.values() for r in records]
    real = len(events)
    events += [sigma.event(dict(r)) for case in CASES for r in case["events"]]
    made = 0
    for entry in sigmahq:
        if entry.rule is not None:
            records = rule_records(entry.rule)
            made += len(records)
            events += [sigma.event(r) for r in records]

    columns: dict[str, str] = {}
    compiled, refused = sigma.compile_rules(sigmahq + cases, columns)
    table = sigma.Table(columns)
    for record in events:
        table.add("corpus", record)
    ours = {id(c.loaded): table.matches(c) for c in compiled}
    table.close()

    disagree, allowed, matching, agree = [], [], 0, 0
    by_title = {c["name"]: c for c in CASES}
    for entry in sigmahq + cases:
        if entry.refused:
            continue
        reference = reference_matches(entry.rule, events)
        mine = ours.get(id(entry), "refused")
        if mine == reference or (mine == "refused" and str(reference).startswith("cannot convert")):
            if entry in sigmahq:
                agree += 1
                matching += bool(mine)
            continue
        case = by_title.get(entry.rule.title)
        if case and "reference" in case and entry in cases:
            offset = real + sum(len(c["events"]) for c in CASES[:CASES.index(case)])
            allowed.append(entry.rule.title)
            # over the other events of the corpus the same difference shows; the case's own are pinned
            assert [i - offset for i in mine if offset <= i < offset + len(case["events"])] == case["expect"], \
                entry.rule.title
            if isinstance(reference, str):
                assert case["reference"] in reference, (entry.rule.title, reference)
            else:
                assert [i - offset for i in reference if offset <= i < offset + len(case["events"])] == \
                    case["reference"], entry.rule.title
            continue
        disagree.append((entry.label, mine, reference))

    sigmahq_run = [c for c in compiled if c.loaded in sigmahq]
    no_records: dict[str, int] = {}
    for c in sigmahq_run:
        if c.no_records:
            reason = c.no_records.split(":")[0]
            no_records[reason] = no_records.get(reason, 0) + 1
    summary = {"sigmahq_commit": SIGMAHQ_COMMIT, "rules": len(sigmahq),
               "load": len([e for e in sigmahq if e.rule is not None and not e.refused]),
               "run": len(sigmahq_run), "agree": agree, "match_something": matching,
               "refused": [(e.label, r) for e, r in refused if e in sigmahq],
               "refused_in_a_bundle_for_lack_of_records": no_records,
               "modifier_rules": len(cases), "modifier_rules_run": len([c for c in compiled if c.loaded in cases]),
               "allowed_differences": allowed, "events": len(events), "real_events": real, "made_events": made,
               "seconds": round(time.monotonic() - started, 2)}
    print("\nsigma differential:", json.dumps(summary))
    assert not disagree, disagree[:5]
    assert not summary["refused"] and len(sigmahq_run) == agree == 210 and matching >= 200, summary
    assert sorted(allowed) == sorted(c["name"] for c in CASES if "reference" in c)
    # refused before running: the placeholder, the unknown modifier, the correlation rule and the rule it counts
    assert len(titles) == len(CASES) and len(cases) == len(CASES) + 1 == summary["modifier_rules_run"] + 4, summary
    assert no_records == {"log source category 'process_creation'": 122, "log source category 'file_event'": 8,
                          "log source category 'network_connection'": 5}, no_records


def test_sigmahq_linux_rules_over_a_bundles_streams(tmp_path):
    """The analysis's path: the SigmaHQ folder as the rules folder, the corpus's log files as the bundle's
    dissect.authlog/syslog/audit streams. The rules of log sources a bundle lacks are refused, one
    warning per source, and the others find what the lines hold."""
    streams = real_records(tmp_path)

    def rows(stream):
        name = stream.split("dissect.", 1)[1]
        if stream.startswith("analysis:"):
            return iter([])
        return iter([("source", f"triagent/artifacts/dissect.{name}.jsonl", n, r)
                     for n, r in enumerate(streams.get(name, []), 1)])

    problems: list = []
    found = list(sigma.evaluate(sigma.load(str(SIGMAHQ)), rows, problems=problems))
    assert sorted(p.message.split(":")[1].strip() for p in problems) == [
        "122 rule(s) not evaluated, log source category 'process_creation'",
        "5 rule(s) not evaluated, log source category 'network_connection'",
        "8 rule(s) not evaluated, log source category 'file_event'"], [p.message for p in problems]
    titles = {f["title"] for f in found}
    assert titles == EXPECTED_FINDINGS, (sorted(titles - EXPECTED_FINDINGS), sorted(EXPECTED_FINDINGS - titles))
    assert all(f["kind"] == "sigma" and f["rule"].startswith("sigma:") and f["evidence"] for f in found)
    assert str(uuid.UUID(next(f for f in found if f["title"] == "Privileged User Has Been Created")["rule"][6:]))
