"""The verdict (specs/verdict.toml) and sequence rules (records joined across streams and time)."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.analysis import rules as engine

NOW = 1_800_000_000.0


def _policy() -> dict:
    return engine.load_verdict_policy()


def _f(rule: str, severity: str, summary: str = "s", **extra) -> dict:
    return {"rule": rule, "severity": severity, "summary": summary, **extra}


def test_nothing_stands_means_no():
    verdict = engine.verdict([], False, _policy())
    assert verdict["recommendation"] == "no" and verdict["score"] == 0
    assert "nothing stands" in verdict["reasons"][0]


def test_one_high_finding_means_yes_and_is_named():
    verdict = engine.verdict([_f("H", "high", "uid 0 account toor"), _f("L", "low")], False, _policy())
    assert verdict["recommendation"] == "yes"
    assert "H (uid 0 account toor)" in verdict["reasons"][0]
    assert verdict["drivers"][0]["rule"] == "H"


def test_critical_means_yes():
    verdict = engine.verdict([_f("C", "critical", "sshd changed")], True, _policy())
    assert verdict["recommendation"] == "yes" and "sshd changed" in verdict["reasons"][0]


def test_lone_medium_is_no_and_two_rules_corroborate():
    policy = _policy()
    lone = engine.verdict([_f("A", "medium")], False, policy)
    assert lone["recommendation"] == "no" and "uncorroborated" in lone["reasons"][0]
    # the same rule matching many lines is one sign, not corroboration
    assert engine.verdict([_f("A", "medium", str(i)) for i in range(5)], False, policy)["recommendation"] == "no"
    two = engine.verdict([_f("A", "medium", "x"), _f("B", "medium", "y")], False, policy)
    assert two["recommendation"] == "yes" and "corroborate" in two["reasons"][0]


def test_lows_alone_never_reach_yes():
    lows = [_f(f"L{i}", "low") for i in range(30)]
    verdict = engine.verdict(lows, False, _policy())
    assert verdict["recommendation"] == "no" and verdict["score"] == _policy()["caps"]["low"]


def test_needs_memory_only_for_a_named_question():
    policy = _policy()
    asked = [_f("Q", "medium", "pid 4 listens on 4444", memory_question="what pid 4 (a deleted executable) is")]
    verdict = engine.verdict(asked, False, policy)
    assert verdict["recommendation"] == "needs-memory"
    assert "what pid 4 (a deleted executable) is" in verdict["reasons"][0]
    assert verdict["open_questions"][0]["rule"] == "Q"
    # answered: memory was analysed
    assert engine.verdict(asked, True, policy)["recommendation"] == "no"
    # a suspicious score without a question is not a reason to take memory
    assert engine.verdict([_f("A", "medium")], False, policy)["recommendation"] == "no"
    # a standing high finding decides without memory
    assert engine.verdict(asked + [_f("H", "high")], False, policy)["recommendation"] == "yes"


# --- sequence rules -------------------------------------------------------------------------------

def _iso(offset: float) -> str:
    return dt.datetime.fromtimestamp(NOW - 86400 + offset, dt.UTC).isoformat()


def _rows(records: dict[str, list[dict]]):
    def rows(source: str):
        for number, record in enumerate(records.get(source, []), 1):
            yield "source", f"records/{source}.jsonl", number, record
    return rows


BRUTE = {
    "id": "T-SEQ", "title": "failures then success", "severity": "high", "mitre": ["T1110"],
    "summary": "{source_ip}: {count} failures then {user} accepted at {last_time}",
    "memory_question": "what {user} ran",
    "sequence": {"by": "source_ip", "within_s": 3600, "steps": [
        {"source": "auth", "where": {"event": {"eq": "ssh_failed"}}, "min_count": 3},
        {"source": "auth", "where": {"event": {"eq": "ssh_accepted"}}}]},
}


def _auth(event: str, ip: str, offset: float, user: str = "root") -> dict:
    return {"event": event, "source_ip": ip, "user": user, "time_utc": _iso(offset)}


def test_sequence_failures_then_success_from_the_same_source():
    rule = engine._rule(BRUTE, "t.yaml")
    records = {"auth": [_auth("ssh_failed", "203.0.113.9", t) for t in (0, 10, 20, 30)]
               + [_auth("ssh_accepted", "203.0.113.9", 40)]
               + [_auth("ssh_failed", "198.51.100.1", t) for t in (0, 5, 6)]  # failures only
               + [_auth("ssh_accepted", "10.0.0.5", 50, "admin")]}  # success only
    found = list(engine.evaluate([rule], _rows(records), NOW))
    assert len(found) == 1
    finding = found[0]
    assert finding["summary"].startswith("203.0.113.9: 4 failures then root accepted")
    assert finding["memory_question"] == "what root ran" and finding["source"] == "sequence"
    lines = {e["line"] for e in finding["evidence"]}
    assert {1, 4, 5} <= lines  # first and last failure, and the success


@pytest.mark.parametrize("records", [
    # success before the failures: not this sequence
    [_auth("ssh_accepted", "203.0.113.9", 0)] + [_auth("ssh_failed", "203.0.113.9", t) for t in (10, 20, 30)],
    # too few failures
    [_auth("ssh_failed", "203.0.113.9", t) for t in (0, 10)] + [_auth("ssh_accepted", "203.0.113.9", 40)],
    # failures long before the success: outside the window
    [_auth("ssh_failed", "203.0.113.9", t) for t in (0, 10, 20)] + [_auth("ssh_accepted", "203.0.113.9", 7200)],
    # no time: cannot be ordered
    [{"event": "ssh_failed", "source_ip": "203.0.113.9"}] * 3 + [{"event": "ssh_accepted", "source_ip": "203.0.113.9"}],
])
def test_sequence_misses(records):
    assert not list(engine.evaluate([engine._rule(BRUTE, "t.yaml")], _rows({"auth": records}), NOW))


def test_unordered_sequence_across_streams_with_a_field_per_step():
    rule = engine._rule({
        "id": "T-KEY", "title": "key from two places", "severity": "high", "mitre": ["T1078"],
        "summary": "{fingerprint} also from {source_ip}",
        "sequence": {"by": "fingerprint", "ordered": False, "steps": [
            {"source": "auth", "where": {"source_is_public": {"eq": False}}},
            {"source": "auth", "where": {"source_is_public": {"eq": True}}},
            {"source": "ssh_keys", "by": "key_fp", "where": {"user": {"eq": "admin"}}}]},
    }, "t.yaml")
    def login(ip: str, public: bool, fp: str, offset: float) -> dict:
        return {"event": "ssh_accepted", "source_ip": ip, "source_is_public": public, "fingerprint": fp,
                "time_utc": _iso(offset)}
    records = {"auth": [login("203.0.113.7", True, "SHA256:a", 0), login("10.0.0.2", False, "SHA256:a", 100),
                        login("10.0.0.2", False, "SHA256:b", 5), login("10.0.0.3", False, "SHA256:b", 9)],
               "ssh_keys": [{"user": "admin", "key_fp": "SHA256:a"}, {"user": "admin", "key_fp": "SHA256:b"}]}
    found = list(engine.evaluate([rule], _rows(records), NOW))
    assert [f["summary"] for f in found] == ["SHA256:a also from 203.0.113.7"]


@pytest.mark.parametrize("broken, message", [
    ({"sequence": {"steps": []}}, "non-empty list of steps"),
    ({"sequence": {"steps": [{"source": "a", "where": {"x": {"eq": 1}}}]}}, "no `by` field"),
    ({"sequence": {"by": "x", "steps": [{"source": "a", "min_count": 0}]}}, "min_count"),
    ({"sequence": {"by": "x", "steps": [{"source": "a", "when": 1}]}}, "unknown step keys"),
    ({"sequence": {"by": "x", "within_s": -1, "steps": [{"source": "a"}]}}, "within_s"),
    ({"sequence": {"by": "x", "steps": [{"source": "a", "where": {"x": {"bogus": 1}}}]}}, "unknown tests"),
    ({"sequence": {"by": "x", "steps": [{"source": "a"}]}, "where": {"x": {"eq": 1}}}, "in its steps"),
])
def test_broken_sequences_are_refused_with_a_reason(broken, message):
    raw = {"id": "T-B", "title": "t", "severity": "high", **broken}
    with pytest.raises(engine.RuleError, match=message):
        engine._rule(raw, "t.yaml")


def test_a_list_field_joins_on_each_element():
    """A file dropped in /dev/shm and a history line that ran it: the command's `executed` list joins
    with the file's path (no time on either side, so unordered)."""
    rule = engine._rule({
        "id": "T-RUN", "title": "dropped then run", "severity": "high", "mitre": ["T1059.004"],
        "summary": "{path} was run: {command}",
        "sequence": {"ordered": False, "steps": [
            {"source": "executables", "by": "path", "where": {"path": {"startswith": "/dev/shm/"}}},
            {"source": "histories", "by": "executed"}]},
    }, "t.yaml")
    records = {"executables": [{"path": "/dev/shm/.x"}, {"path": "/dev/shm/unused"}, {"path": "/usr/bin/id"}],
               "histories": [{"command": "./.x -o pool", "executed": ["/usr/bin/nice", "/dev/shm/.x"]},
                             {"command": "/usr/bin/id", "executed": ["/usr/bin/id"]}, {"command": "ls"}]}
    found = list(engine.evaluate([rule], _rows(records), NOW))
    assert [f["summary"] for f in found] == ["/dev/shm/.x was run: ./.x -o pool"]


def test_max_count_keeps_a_step_rare():
    rule = engine._rule({
        "id": "T-RARE", "title": "rare", "severity": "medium", "mitre": ["T1078"], "summary": "{key}",
        "sequence": {"by": "host", "ordered": False, "steps": [
            {"source": "auth", "where": {"public": {"eq": False}}, "min_count": 2},
            {"source": "auth", "where": {"public": {"eq": True}}, "max_count": 1}]}}, "t.yaml")
    base = [{"host": "h", "public": False}] * 2
    assert len(list(engine.evaluate([rule], _rows({"auth": base + [{"host": "h", "public": True}]}), NOW))) == 1
    assert not list(engine.evaluate([rule], _rows({"auth": base + [{"host": "h", "public": True}] * 2}), NOW))
    with pytest.raises(engine.RuleError, match="max_count"):
        engine._rule({"id": "T-B", "title": "t", "severity": "low", "sequence": {"by": "x", "steps": [
            {"source": "a", "min_count": 3, "max_count": 2}]}}, "t.yaml")
