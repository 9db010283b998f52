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
made from the record (``{field}`` placeholders) and an evidence pointer (bundle, member, line).

A sequence rule joins records across streams and time instead of testing one record:

    sequence:
      by: source_ip             # field(s) the steps' records share (a step may name its own `by`;
                                # a list value, such as the paths a command runs, joins on each)
      within_s: 86400           # all steps within this many seconds (optional)
      ordered: true             # steps in time order (default); false: all present, in any order
      steps:
        - {source: auth, where: {event: {eq: ssh_failed}}, min_count: 5, time: time_utc}  # max_count: at most
        - {source: auth, where: {event: {eq: ssh_accepted}}}

Its summary reads the fields of each step's latest record (a later step's first; ``{step1.path}`` names
one step's), ``{key}`` (the joined value), ``{count}`` (records of the first step), ``{first_time}`` and
``{last_time}``. Any rule may name a
``memory_question``: a template saying what a memory image would decide about its finding, which is what
earns "needs-memory" when no image was analysed."""

from __future__ import annotations

import datetime as _dt
import itertools
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import specs
from agent.bundle.reader import MANIFEST_CAP, BundleView, Manifest, stream_member, stream_rows
from agent.bundle.writer import MANIFEST_NAME
from collectors.util import utc

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
    sequence: dict[str, Any] | None = None
    memory_question: str = ""


Row = tuple[str, str, int, dict[str, Any]]  # (bundle, member, line, record)


def load_rules(folder: str | None = None) -> list[Rule]:
    import yaml

    folder = folder or rules_folder()
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
    return str(specs.path("rules"))


def _rule(raw: dict[str, Any], origin: str) -> Rule:
    try:
        sequence = raw.get("sequence")
        if sequence is not None:
            sequence = _sequence(sequence, f"{origin}: rule {raw['id']}")
            sources = sorted({step["source"] for step in sequence["steps"]})
        else:
            sources = raw["source"] if isinstance(raw["source"], list) else [raw["source"]]
        condition = {k: raw[k] for k in ("where", "any", "all", "not") if k in raw}
        rule = Rule(id=str(raw["id"]), title=str(raw["title"]), severity=str(raw["severity"]),
                    mitre=[str(m) for m in raw.get("mitre", [])], sources=[str(s) for s in sources],
                    condition=condition, summary=str(raw.get("summary", raw["title"])),
                    facts=[str(f) for f in raw.get("facts", [])], origin=origin, sequence=sequence,
                    memory_question=str(raw.get("memory_question") or ""))
    except (KeyError, TypeError, AttributeError) as exc:
        raise RuleError(f"{origin}: rule {raw.get('id', '?') if isinstance(raw, dict) else raw!r}: "
                        f"missing or bad {exc}") from exc
    if rule.severity not in SEVERITIES:
        raise RuleError(f"{origin}: rule {rule.id}: severity {rule.severity!r} is not one of {SEVERITIES}")
    if sequence is not None:
        if condition:
            raise RuleError(f"{origin}: rule {rule.id}: a sequence rule puts its conditions in its steps")
        return rule
    if not condition:
        raise RuleError(f"{origin}: rule {rule.id}: no condition (where / any / all / not)")
    _check(condition, f"{origin}: rule {rule.id}")
    return rule


def _fields(value: Any, where: str) -> list[str]:
    fields = value if isinstance(value, list) else [value]
    if not fields or not all(isinstance(f, str) and f for f in fields):
        raise RuleError(f"{where}: `by` names one field or a list of fields, not {value!r}")
    return fields


def _sequence(raw: Any, where: str) -> dict[str, Any]:
    """A sequence block checked and normalised: every step with its source, condition, key fields,
    minimum count and time field."""
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list) or not raw["steps"]:
        raise RuleError(f"{where}: a sequence has a non-empty list of steps")
    unknown = set(raw) - {"by", "within_s", "ordered", "steps"}
    if unknown:
        raise RuleError(f"{where}: unknown sequence keys {sorted(unknown)}")
    steps = []
    for number, step in enumerate(raw["steps"], 1):
        at = f"{where}: step {number}"
        if not isinstance(step, dict) or not isinstance(step.get("source"), str):
            raise RuleError(f"{at}: a step is a mapping with a source")
        unknown = set(step) - {"source", "where", "any", "all", "not", "by", "min_count", "max_count", "time"}
        if unknown:
            raise RuleError(f"{at}: unknown step keys {sorted(unknown)}")
        condition = {k: step[k] for k in ("where", "any", "all", "not") if k in step}
        _check(condition, at)
        if "by" not in step and "by" not in raw:
            raise RuleError(f"{at}: no `by` field joins this step to the others")
        min_count = step.get("min_count", 1)
        if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 1:
            raise RuleError(f"{at}: min_count is a positive integer, not {min_count!r}")
        max_count = step.get("max_count")
        if max_count is not None and (not isinstance(max_count, int) or isinstance(max_count, bool)
                                      or max_count < min_count):
            raise RuleError(f"{at}: max_count is an integer no smaller than min_count, not {max_count!r}")
        steps.append({"source": step["source"], "condition": condition,
                      "by": _fields(step.get("by", raw.get("by")), at), "min_count": min_count,
                      "max_count": max_count, "time": str(step.get("time") or "time_utc")})
    if len({len(step["by"]) for step in steps}) != 1:
        raise RuleError(f"{where}: every step joins on the same number of fields")
    within = raw.get("within_s")
    if within is not None and (not isinstance(within, (int, float)) or isinstance(within, bool) or within <= 0):
        raise RuleError(f"{where}: within_s is a positive number of seconds, not {within!r}")
    return {"steps": steps, "within_s": within, "ordered": bool(raw.get("ordered", True))}


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
        if rule.sequence is not None:
            yield from _evaluate_sequence(rule, rows, now, check)
            continue
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
                    if rule.memory_question:
                        finding["memory_question"] = render(rule.memory_question, record)
                    if source == "findings":  # a cross-view check: keep its facts, point at its evidence
                        finding.update({k: v for k, v in record.items() if k not in finding and k != "evidence"})
                pointers = record.get("evidence") if source == "findings" else \
                    [{"bundle": bundle, "member": member, "line": line}]
                for pointer in pointers or []:
                    if len(finding["evidence"]) < 10 and pointer not in finding["evidence"]:
                        finding["evidence"].append(pointer)
        yield from merged.values()


Hit = tuple[float, Row]
Chain = list[list[Hit]]  # the records of each step that complete a sequence


def _evaluate_sequence(rule: Rule, rows: Callable[[str], Iterable[Row]], now: float,
                       check: Callable[[], None]) -> Iterator[dict[str, Any]]:
    """One finding per join key whose records make the sequence: each step's records gathered by key
    (records without the key fields, or without a time when order or a window matters, cannot join)."""
    assert rule.sequence is not None
    steps, within, ordered = rule.sequence["steps"], rule.sequence["within_s"], rule.sequence["ordered"]
    timed = ordered or within is not None
    per_step: list[dict[tuple[str, ...], list[Hit]]] = []
    for step in steps:
        keyed: dict[tuple[str, ...], list[Hit]] = {}
        for row in rows(step["source"]):
            check()
            record = row[3]
            if not matches(step["condition"], record, now):
                continue
            moment = _seconds(value_of(record, step["time"]))
            if moment is None:
                if timed:
                    continue
                moment = 0.0
            for key in _join_keys(record, step["by"]):
                keyed.setdefault(key, []).append((moment, row))
        per_step.append(keyed)
    keys = set(per_step[0]).intersection(*per_step[1:])
    for key in sorted(keys):
        chains = [sorted(keyed[key], key=lambda hit: hit[0]) for keyed in per_step]
        if any(step["max_count"] is not None and len(hits) > step["max_count"]
               for step, hits in zip(steps, chains, strict=True)):
            continue  # a step that must be rare for this key is not (an admin's routine, not an exception)
        chosen = _ordered_chain(steps, chains, within) if ordered else _unordered_chain(steps, chains, within)
        if chosen is None:
            continue
        first = chosen[0]
        record: dict[str, Any] = {}
        for number, hits in enumerate(chosen, 1):  # every step's latest record, later steps' fields first
            record.update(hits[-1][1][3])
            record[f"step{number}"] = hits[-1][1][3]
        record["key"] = key[0] if len(key) == 1 else list(key)
        times = [moment for hits in chosen for moment, _ in hits]
        record.update(count=len(first), first_time=utc(min(times)) if timed else "",
                      last_time=utc(max(times)) if timed else "")
        finding = {"rule": rule.id, "kind": rule.id, "title": rule.title, "severity": rule.severity,
                   "mitre": rule.mitre, "summary": render(rule.summary, record), "source": "sequence",
                   "evidence": [],
                   **{f: v for f in rule.facts if (v := value_of(record, f)) is not _MISSING}}
        if rule.memory_question:
            finding["memory_question"] = render(rule.memory_question, record)
        for hits in chosen:  # the first and last records of each step point at the evidence
            for _, (bundle, member, line, _record) in ([hits[0], hits[-1]] if len(hits) > 1 else hits):
                pointer = {"bundle": bundle, "member": member, "line": line}
                if pointer not in finding["evidence"] and len(finding["evidence"]) < 10:
                    finding["evidence"].append(pointer)
        yield finding


def _join_keys(record: dict[str, Any], fields: list[str], most: int = 16) -> Iterator[tuple[str, ...]]:
    """The keys a record joins under: one per combination of its key fields' values, where a list
    field (the paths a command runs) joins under each of its elements; none when a field is empty."""
    choices: list[list[str]] = []
    for name in fields:
        value = value_of(record, name)
        values = value[:most] if isinstance(value, list) else [] if value is _MISSING else [value]
        texts = list(dict.fromkeys(t for v in values if (t := _text(v))))
        if not texts:
            return
        choices.append(texts)
    yield from itertools.islice(itertools.product(*choices), most)


def _ordered_chain(steps: list[dict[str, Any]], chains: list[list[Hit]], within: float | None) -> Chain | None:
    """The earliest completion of the steps in time order: for each candidate record of the last step,
    walk back through the steps, each needing min_count records no later than the step after it and
    inside the window."""
    for anchor in chains[-1]:
        end = anchor[0]
        start = end - within if within is not None else float("-inf")
        chosen: Chain = [[anchor]]
        bound = end
        for index in range(len(steps) - 2, -1, -1):
            hits = [h for h in chains[index] if start <= h[0] <= bound]
            if len(hits) < steps[index]["min_count"]:
                break
            chosen.insert(0, hits)
            bound = hits[-steps[index]["min_count"]][0]  # earlier steps precede enough of this one
        else:
            if steps[-1]["min_count"] > 1:  # the last step counts too: its records up to the anchor
                last = [h for h in chains[-1] if start <= h[0] <= end]
                if len(last) < steps[-1]["min_count"]:
                    continue
                chosen[-1] = last
            return chosen
    return None


def _unordered_chain(steps: list[dict[str, Any]], chains: list[list[Hit]], within: float | None) -> Chain | None:
    if any(len(hits) < step["min_count"] for step, hits in zip(steps, chains, strict=True)):
        return None
    if within is not None:  # some window of that width holds enough of every step
        for start, _ in sorted(h for hits in chains for h in hits):
            inside = [[h for h in hits if start <= h[0] <= start + within] for hits in chains]
            if all(len(hits) >= step["min_count"] for step, hits in zip(steps, inside, strict=True)):
                return inside
        return None
    return chains



# --------------------------------------------------------------------------------------------------
# Where rows come from
# --------------------------------------------------------------------------------------------------

RowSource = Callable[[str], Iterator[Row]]


def bundle_rows(tar: BundleView, analysis: Any, findings: list[dict[str, Any]]) -> RowSource:
    """The rows of each source a rule names, read once: a stream of the bundle (``source``), its raw copies'
    manifest entries (``files``), the built-in checks' ``findings``, and ``analysis:<stream>``, the records
    this analysis made (``analysis``: findings.AnalysisRows, or anything reader.stream_rows reads)."""
    cache: dict[str, list[Row]] = {}

    def stream(name: str) -> Iterator[Row]:
        for member, number, record in stream_rows(tar, name):
            yield "source", member, number, record

    def files() -> Iterator[Row]:
        manifest = manifest_of(tar)
        try:
            for entry in manifest.entries() if manifest is not None else ():
                if isinstance(entry, dict) and str(entry.get("name", "")).startswith("fs/") and entry.get("source"):
                    yield "source", entry["name"], 0, entry
        except ValueError:  # a damaged manifest: the entries read so far stand
            return

    def rows(source: str) -> Iterator[Row]:
        if source not in cache:
            if source == "findings":
                cache[source] = [("analysis", stream_member("findings"), 0, f) for f in findings]
            elif source == "files":
                cache[source] = list(files())
            elif source.startswith("analysis:"):
                cache[source] = [("analysis", m, n, r) for m, n, r in stream_rows(analysis, source.split(":", 1)[1])]
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
    from agent.analysis.cloudranges import bundled

    public = [record for *_, record in rows if record.get("remote_is_public") is True and record.get("remote_ip")]
    ranges = bundled() if public else None
    if ranges is None:
        return
    for record in public:
        record["remote_cloud"] = ranges.provider_of(record["remote_ip"]) or ""


def manifest_of(tar: Any) -> Manifest | None:
    """The bundle's manifest (a BundleView's holds its raw-copy entries only), parsed by the reader one
    entry at a time; None when there is none or it is not a JSON object."""
    try:
        handle = tar.extractfile(MANIFEST_NAME)
        return Manifest(handle.read(MANIFEST_CAP)) if handle is not None else None
    except (KeyError, ValueError):  # absent; not UTF-8 or not a JSON object
        return None


def collection_time(tar: Any) -> float | None:
    manifest = manifest_of(tar)
    try:
        return int(manifest.fields["started_ns"]) / 1e9 if manifest is not None else None
    except (KeyError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------------------------------
# The verdict: take the full disk?
# --------------------------------------------------------------------------------------------------

def load_verdict_policy(path: str | None = None) -> dict[str, Any]:
    path = path or str(specs.path("verdict.toml"))
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def verdict(findings: list[dict[str, Any]], memory_analysed: bool, policy: dict[str, Any]) -> dict[str, Any]:
    """Take the full disk? "yes" when a high or critical finding stands or lower ones from different rules
    corroborate each other up to the policy's score; "needs-memory" only when, short of that, no image was
    analysed and a standing finding asks a question that memory answers (named in the reasons); else "no"."""
    weights: dict[str, int] = policy["weights"]
    per_rule = int(policy.get("max_hits_per_rule", 1))
    caps: dict[str, int] = policy.get("caps", {})
    counts = {s: 0 for s in SEVERITIES}
    by_rule: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for line, f in enumerate(findings, 1):
        counts[f.get("severity", "info")] = counts.get(f.get("severity", "info"), 0) + 1
        by_rule.setdefault(f.get("rule") or f.get("kind", "?"), []).append((line, f))
    score, drivers = 0, []
    added = {s: 0 for s in SEVERITIES}
    for hits in by_rule.values():
        for line, f in sorted(hits, key=lambda h: SEVERITIES.index(h[1].get("severity", "info")))[:per_rule]:
            severity = f.get("severity", "info")
            weight = int(weights.get(severity, 0))
            if severity in caps:  # lows add up to a cap: many weak signs are still weak
                weight = max(0, min(weight, int(caps[severity]) - added.get(severity, 0)))
            if weight:
                added[severity] = added.get(severity, 0) + weight
                score += weight
                drivers.append({"rule": f.get("rule"), "kind": f.get("kind"), "severity": severity,
                                "summary": f.get("summary"), "line": line, "weight": weight})
    score = min(100, score)
    drivers.sort(key=lambda d: (-d["weight"], d["line"]))
    questions = [{"rule": f.get("rule") or f.get("kind"), "question": str(f["memory_question"]), "line": line}
                 for line, f in enumerate(findings, 1) if f.get("memory_question")]
    reasons: list[str] = []
    strong = [d for d in drivers if d["severity"] in ("critical", "high")]
    if counts["critical"] and policy.get("any_critical_means_yes", True):
        recommendation = "yes"
        reasons.append(f"{counts['critical']} critical finding(s): " + _named(drivers, ("critical",)))
    elif score >= int(policy["full_disk_yes_from"]):
        recommendation = "yes"
        reasons.append(f"{len(strong)} high finding(s) stand: {_named(strong, ('high',))}" if strong else
                       f"{len(drivers)} findings of different rules corroborate each other (score {score} ≥ "
                       f"{policy['full_disk_yes_from']}): {_named(drivers, SEVERITIES)}")
    elif questions and not memory_analysed and policy.get("needs_memory_when_asked", True):
        recommendation = "needs-memory"
        reasons.append(f"score {score} < {policy['full_disk_yes_from']}, and memory would decide: "
                       + "; ".join(q["question"] for q in questions[:5])
                       + " (take memory with collect --memory and analyse it before deciding on the disk)")
    else:
        recommendation = "no"
        reasons.append(f"nothing stands: score {score} < {policy['full_disk_yes_from']}"
                       + (f" ({len(drivers)} uncorroborated lower finding(s): {_named(drivers, SEVERITIES)})"
                          if drivers else "") + ("" if memory_analysed else " (memory not analysed)"))
    return {"score": score, "recommendation": recommendation, "full_disk": recommendation, "reasons": reasons,
            "drivers": drivers[:20], "open_questions": questions[:20] if not memory_analysed else [],
            "counts": counts, "memory_analysed": memory_analysed,
            "policy": {k: v for k, v in policy.items() if k != "description"}}


def _named(drivers: list[dict[str, Any]], severities: tuple[str, ...], most: int = 3) -> str:
    named = [f"{d['rule'] or d['kind']} ({d['summary']})" for d in drivers if d["severity"] in severities]
    more = f"; and {len(named) - most} more" if len(named) > most else ""
    return "; ".join(str(n)[:200] for n in named[:most]) + more
