"""Rules as data (specs/rules/*.yaml) over a bundle's records, and the verdict they add up to.

A rule names the records it reads (``source``: a stream of the source bundle such as ``histories``, a
stream of this analysis such as ``analysis:volatility.linux.bash.Bash``, ``files`` for the manifest's
file copies, or ``findings`` for the cross-view checks in findings.py) and a condition over their fields:

    where:                      # all of its field tests must hold
      command|cmdline|Command:  # the first field present (lists are joined with spaces)
        regex: 'curl .*\\|\\s*(ba)?sh'
    any: [ {...}, {...} ]       # any / all / not combine conditions
    not: {...}

Field tests: eq, ne, in, not_in, contains, icontains, startswith, endswith, regex (case-insensitive),
exists, empty, gt, ge, lt, le, within_days (a UTC timestamp or *_ns value at most N days before the
collection started). A hit is a finding with the rule's id, title, severity, MITRE techniques, a summary
made from the record (``{field}`` placeholders) and an evidence pointer (bundle, member, line)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tarfile
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

SEVERITIES = ("critical", "high", "medium", "low", "info")


class RuleError(ValueError):
    """A rule file that cannot be used (the message names the file and the rule)."""


@dataclass
class Rule:
    id: str
    title: str
    severity: str
    mitre: list[str]
    sources: list[str]
    condition: dict[str, Any]
    summary: str
    facts: list[str] = field(default_factory=list)
    origin: str = ""


Row = tuple[str, str, int, dict[str, Any]]  # (bundle, member, line, record)


def load_rules(folder: str | None = None) -> list[Rule]:
    import yaml

    folder = folder or _specs_folder()
    rules: list[Rule] = []
    seen: set[str] = set()
    for name in sorted(os.listdir(folder)):
        if not name.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        for raw in data.get("rules", []):
            rule = _rule(raw, name)
            if rule.id in seen:
                raise RuleError(f"{name}: rule id {rule.id} is defined twice")
            seen.add(rule.id)
            rules.append(rule)
    return rules


def rules_folder() -> str:
    return _specs_folder()


def _specs_folder() -> str:
    import specs

    return os.path.join(os.path.dirname(specs.__file__), "rules")


def _rule(raw: dict[str, Any], origin: str) -> Rule:
    try:
        sources = raw["source"] if isinstance(raw["source"], list) else [raw["source"]]
        condition = {k: raw[k] for k in ("where", "any", "all", "not") if k in raw}
        rule = Rule(id=str(raw["id"]), title=str(raw["title"]), severity=str(raw["severity"]),
                    mitre=[str(m) for m in raw.get("mitre", [])], sources=[str(s) for s in sources],
                    condition=condition, summary=str(raw.get("summary", raw["title"])),
                    facts=[str(f) for f in raw.get("facts", [])], origin=origin)
    except (KeyError, TypeError) as exc:
        raise RuleError(f"{origin}: rule {raw.get('id', '?') if isinstance(raw, dict) else raw!r}: "
                        f"missing or bad {exc}") from exc
    if rule.severity not in SEVERITIES:
        raise RuleError(f"{origin}: rule {rule.id}: severity {rule.severity!r} is not one of {SEVERITIES}")
    if not condition:
        raise RuleError(f"{origin}: rule {rule.id}: no condition (where / any / all / not)")
    _check(condition, f"{origin}: rule {rule.id}")
    return rule


TESTS = {"eq", "ne", "in", "not_in", "contains", "icontains", "startswith", "endswith", "regex", "exists",
         "empty", "gt", "ge", "lt", "le", "within_days"}


def _check(condition: Any, where: str) -> None:
    if not isinstance(condition, dict):
        raise RuleError(f"{where}: a condition is a mapping, not {condition!r}")
    for key, value in condition.items():
        if key in ("any", "all"):
            for part in value:
                _check(part, where)
        elif key == "not":
            _check(value, where)
        elif key == "where":
            for field_name, tests in value.items():
                if not isinstance(tests, dict) or not set(tests) <= TESTS:
                    raise RuleError(f"{where}: field {field_name}: unknown tests {tests!r} (known: {sorted(TESTS)})")
                if "regex" in tests:
                    try:
                        _regex(str(tests["regex"]))
                    except re.error as exc:
                        raise RuleError(f"{where}: field {field_name}: bad regex: {exc}") from exc
        else:
            raise RuleError(f"{where}: unknown condition {key!r}")


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_MISSING = object()


def value_of(record: dict[str, Any], path: str) -> Any:
    """A field by dotted path; ``a|b`` takes the first one present."""
    for alternative in path.split("|"):
        value: Any = record
        for part in alternative.split("."):
            if isinstance(value, dict) and part in value:
                value = value[part]
            else:
                value = _MISSING
                break
        if value is not _MISSING and value is not None:
            return value
    return _MISSING


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1e9 if value > 1e14 else float(value)  # *_ns or seconds
    try:
        moment = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)).timestamp()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _test(op: str, arg: Any, value: Any, now: float) -> bool:
    if op == "exists":
        return (value is not _MISSING) == bool(arg)
    if op == "empty":
        return (value is _MISSING or value in ("", [], {}, 0)) == bool(arg)
    if value is _MISSING:
        return op in ("ne", "not_in")
    if op == "eq":
        return value == arg or _text(value) == _text(arg)
    if op == "ne":
        return not (value == arg or _text(value) == _text(arg))
    if op in ("in", "not_in"):
        inside = value in arg or _text(value) in [_text(a) for a in arg]
        return inside if op == "in" else not inside
    if op == "contains":
        return str(arg) in value if isinstance(value, list) else str(arg) in _text(value)
    if op == "icontains":
        return str(arg).lower() in _text(value).lower()
    if op == "startswith":
        return _text(value).startswith(tuple(arg) if isinstance(arg, list) else str(arg))
    if op == "endswith":
        return _text(value).endswith(tuple(arg) if isinstance(arg, list) else str(arg))
    if op == "regex":
        return _regex(str(arg)).search(_text(value)) is not None
    if op == "within_days":
        seconds = _seconds(value)
        return seconds is not None and 0 <= now - seconds <= float(arg) * 86400 + 300
    number = _number(value)
    if number is None:
        return False
    return {"gt": number > float(arg), "ge": number >= float(arg),
            "lt": number < float(arg), "le": number <= float(arg)}[op]


def matches(condition: dict[str, Any], record: dict[str, Any], now: float) -> bool:
    for key, value in condition.items():
        if key == "where":
            for path, tests in value.items():
                found = value_of(record, path)
                if not all(_test(op, arg, found, now) for op, arg in tests.items()):
                    return False
        elif key == "any":
            if not any(matches(part, record, now) for part in value):
                return False
        elif key == "all":
            if not all(matches(part, record, now) for part in value):
                return False
        elif key == "not":
            if matches(value, record, now):
                return False
    return True


_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.|]+)\}")


def render(template: str, record: dict[str, Any]) -> str:
    def one(m: re.Match[str]) -> str:
        value = value_of(record, m.group(1))
        return "?" if value is _MISSING else _text(value)[:200]

    return _PLACEHOLDER.sub(one, template)


def evaluate(rules: list[Rule], rows: Callable[[str], Iterable[Row]], now: float,
             check: Callable[[], None] = lambda: None) -> Iterator[dict[str, Any]]:
    """Findings of every rule over its sources; one finding per rule and summary (evidence merged)."""
    for rule in rules:
        merged: dict[str, dict[str, Any]] = {}
        for source in rule.sources:
            for bundle, member, line, record in rows(source):
                check()
                if not matches(rule.condition, record, now):
                    continue
                summary = render(rule.summary, record)
                finding = merged.get(summary)
                if finding is None:
                    finding = merged[summary] = {
                        "rule": rule.id, "kind": record.get("kind") if source == "findings" else rule.id,
                        "title": rule.title, "severity": rule.severity, "mitre": rule.mitre, "summary": summary,
                        "source": source, "evidence": [],
                        **{f: v for f in rule.facts if (v := value_of(record, f)) is not _MISSING}}
                    if source == "findings":  # a cross-view check: keep its facts, point at its evidence
                        finding.update({k: v for k, v in record.items() if k not in finding and k != "evidence"})
                pointers = record.get("evidence") if source == "findings" else \
                    [{"bundle": bundle, "member": member, "line": line}]
                for pointer in pointers or []:
                    if len(finding["evidence"]) < 10 and pointer not in finding["evidence"]:
                        finding["evidence"].append(pointer)
        yield from merged.values()


# --------------------------------------------------------------------------------------------------
# Where rows come from
# --------------------------------------------------------------------------------------------------

def bundle_rows(tar: tarfile.TarFile, memory_rows: Callable[[str], Iterable[tuple[str, int, dict[str, Any]]]],
                findings: list[dict[str, Any]]) -> Callable[[str], Iterator[Row]]:
    from collectors.parsers.findings import stream_rows

    cache: dict[str, list[Row]] = {}

    def stream(name: str) -> Iterator[Row]:
        for member, number, record in stream_rows(tar, name):
            yield "source", member, number, record

    def files() -> Iterator[Row]:
        try:
            manifest = json.loads(tar.extractfile("triagent/manifest.json").read())  # type: ignore[union-attr]
        except (KeyError, AttributeError, ValueError):
            return
        for entry in manifest.get("members", []):
            if entry.get("name", "").startswith("fs/") and entry.get("source"):
                yield "source", entry["name"], 0, entry

    def rows(source: str) -> Iterator[Row]:
        if source not in cache:
            if source == "findings":
                cache[source] = [("analysis", "triagent/artifacts/findings.jsonl", 0, f) for f in findings]
            elif source == "files":
                cache[source] = list(files())
            elif source.startswith("analysis:"):
                cache[source] = [("analysis", m, n, r) for m, n, r in memory_rows(source.split(":", 1)[1])]
            else:
                cache[source] = list(stream(source))
                if source == "connections":
                    _mark_cloud_peers(cache[source])
        return iter(cache[source])

    return rows


def _mark_cloud_peers(rows: list[Row]) -> None:
    """``remote_cloud`` on each connection to a public address: the cloud provider that publishes it, or ""
    when none does. Left out when the ranges are not installed, so that rules asking for a non-cloud peer
    then count every public one (the cautious reading)."""
    from collectors.parsers.cloudranges import bundled

    public = [record for *_, record in rows if record.get("remote_is_public") is True and record.get("remote_ip")]
    ranges = bundled() if public else None
    if ranges is None:
        return
    for record in public:
        record["remote_cloud"] = ranges.provider_of(record["remote_ip"]) or ""


def collection_time(tar: tarfile.TarFile) -> float | None:
    try:
        manifest = json.loads(tar.extractfile("triagent/manifest.json").read())  # type: ignore[union-attr]
        return int(manifest["started_ns"]) / 1e9
    except (KeyError, AttributeError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------------------------------
# The verdict: take the full disk?
# --------------------------------------------------------------------------------------------------

def load_verdict_policy(path: str | None = None) -> dict[str, Any]:
    path = path or os.path.join(_specs_folder(), "..", "verdict.toml")
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def verdict(findings: list[dict[str, Any]], memory_analysed: bool, policy: dict[str, Any]) -> dict[str, Any]:
    weights: dict[str, int] = policy["weights"]
    per_rule = int(policy.get("max_hits_per_rule", 2))
    counts = {s: 0 for s in SEVERITIES}
    by_rule: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for line, f in enumerate(findings, 1):
        counts[f.get("severity", "info")] = counts.get(f.get("severity", "info"), 0) + 1
        by_rule.setdefault(f.get("rule") or f.get("kind", "?"), []).append((line, f))
    score, drivers = 0, []
    for hits in by_rule.values():
        for line, f in sorted(hits, key=lambda h: SEVERITIES.index(h[1].get("severity", "info")))[:per_rule]:
            weight = int(weights.get(f.get("severity", "info"), 0))
            if weight:
                score += weight
                drivers.append({"rule": f.get("rule"), "kind": f.get("kind"), "severity": f.get("severity"),
                                "summary": f.get("summary"), "line": line, "weight": weight})
    score = min(100, score)
    drivers.sort(key=lambda d: (-d["weight"], d["line"]))
    reasons: list[str] = []
    if counts["critical"] and policy.get("any_critical_means_yes", True):
        recommendation = "yes"
        reasons.append(f"{counts['critical']} critical finding(s)")
    elif score >= int(policy["full_disk_yes_from"]):
        recommendation = "yes"
        reasons.append(f"score {score} ≥ {policy['full_disk_yes_from']}")
    elif not memory_analysed and score >= int(policy["needs_memory_from"]):
        recommendation = "needs-memory"
        reasons.append(f"score {score} is suspicious (≥ {policy['needs_memory_from']}) but no memory image was "
                       "analysed: take memory (collect --memory) and analyse it before deciding on the disk")
    else:
        recommendation = "no"
        reasons.append(f"score {score} < {policy['full_disk_yes_from']}"
                       + ("" if memory_analysed else " (memory not analysed)"))
    return {"score": score, "recommendation": recommendation, "full_disk": recommendation, "reasons": reasons,
            "drivers": drivers[:20], "counts": counts, "memory_analysed": memory_analysed,
            "policy": {k: v for k, v in policy.items() if k != "description"}}
