"""Sigma rules (specs/rules/sigma/*.yml, the standard format) over the log records of a bundle.

pySigma parses a rule and its condition into a tree; pySigma's backends translate that tree into a
query language, and there is none for "a list of JSON records", so this module walks the tree itself:
AND / OR / NOT, field = value (wildcards, modifiers such as contains/startswith/endswith/re/cidr/gt, as
pySigma resolved them), keywords (a value with no field: searched in the message). The log source picks
the streams: ``service: auth`` → authlog, ``syslog`` → syslog and journal, ``auditd`` → audit; the
records are dissect.target's (the full profile's, or those `analyze` made)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any

Row = tuple[str, str, int, dict[str, Any]]
LEVELS = {"informational": "info", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}
STREAMS = {"auth": ["authlog"], "sshd": ["authlog"], "sudo": ["authlog"], "syslog": ["syslog", "journal"],
           "auditd": ["audit"], "cron": ["syslog", "journal"]}
ALL_LOGS = ["authlog", "syslog", "journal", "audit"]
MESSAGE_FIELDS = ("message", "msg", "MESSAGE", "line")


def load(folder: str) -> list[Any]:
    """Every Sigma rule under ``folder``; raises ValueError naming the file that does not parse."""
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError

    rules = []
    for name in sorted(os.listdir(folder)):
        if name.endswith((".yml", ".yaml")):
            path = os.path.join(folder, name)
            try:
                with open(path, encoding="utf-8") as handle:
                    rules.extend(SigmaCollection.from_yaml(handle.read()).rules)
            except SigmaError as exc:
                raise ValueError(f"sigma rule {name}: {exc}") from exc
    return rules


def streams_for(rule: Any) -> list[str]:
    service = (rule.logsource.service or "").lower()
    names = STREAMS.get(service, ALL_LOGS)
    return [f"dissect.{n}" for n in names] + [f"analysis:dissect.{n}" for n in names]


@lru_cache(maxsize=2048)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.DOTALL)


def _field(record: dict[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    lowered = name.lower()
    for key, value in record.items():
        if key.lower() == lowered:
            return value
    return None


def _value_matches(expected: Any, actual: Any) -> bool:
    from sigma import types as st

    if isinstance(expected, st.SigmaNull):
        return actual in (None, "")
    if actual is None:
        return False
    if isinstance(actual, list):
        return any(_value_matches(expected, a) for a in actual)
    text = str(actual)
    if isinstance(expected, st.SigmaRegularExpression):
        return _compiled(expected.regexp.to_plain()).search(text) is not None
    if isinstance(expected, st.SigmaString):
        return _compiled("^" + expected.to_regex().regexp.to_plain() + "$").search(text) is not None
    if isinstance(expected, st.SigmaBool):
        return text.lower() == str(expected.boolean).lower()
    if isinstance(expected, st.SigmaNumber):
        try:
            return float(text) == float(expected.number)
        except ValueError:
            return False
    if isinstance(expected, st.SigmaCompareExpression):
        try:
            number, limit = float(text), float(expected.number.number)
        except ValueError:
            return False
        op = expected.op.name  # LT, LTE, GT, GTE
        return {"LT": number < limit, "LTE": number <= limit, "GT": number > limit, "GTE": number >= limit}[op]
    if isinstance(expected, st.SigmaCIDRExpression):
        try:
            return ipaddress.ip_address(text) in ipaddress.ip_network(expected.cidr, strict=False)
        except ValueError:
            return False
    return text == str(expected)


def matches(node: Any, record: dict[str, Any]) -> bool:
    from sigma import conditions as sc

    if isinstance(node, sc.ConditionAND):
        return all(matches(a, record) for a in node.args)
    if isinstance(node, sc.ConditionOR):
        return any(matches(a, record) for a in node.args)
    if isinstance(node, sc.ConditionNOT):
        return not matches(node.args[0], record)
    if isinstance(node, sc.ConditionFieldEqualsValueExpression):
        return _value_matches(node.value, _field(record, node.field))
    if isinstance(node, sc.ConditionValueExpression):  # a keyword: anywhere in the message
        message = next((record[f] for f in MESSAGE_FIELDS if record.get(f)), None)
        return _value_matches(node.value, message) or _value_matches(_contains(node.value), message)
    raise ValueError(f"unsupported Sigma condition element {type(node).__name__}")


def _contains(value: Any) -> Any:
    """Keywords match inside a line, as Sigma backends for logs treat them."""
    from sigma import types as st

    if isinstance(value, st.SigmaString) and not value.startswith(st.SpecialChars.WILDCARD_MULTI):
        return st.SigmaString("*" + value.to_plain() + "*") if not value.contains_special() else value
    return value


def evaluate(rules: list[Any], rows: Callable[[str], Iterable[Row]],
             check: Callable[[], None] = lambda: None) -> Iterator[dict[str, Any]]:
    for rule in rules:
        trees = [c.parse() for c in rule.detection.parsed_condition]
        mitre = sorted({t.name.upper() for t in rule.tags if t.namespace == "attack" and t.name[:1] in "tT"})
        hits: list[dict[str, Any]] = []
        for stream in streams_for(rule):
            for bundle, member, line, record in rows(stream):
                check()
                if all(matches(tree, record) for tree in trees):
                    hits.append({"bundle": bundle, "member": member, "line": line,
                                 "message": str(next((record[f] for f in MESSAGE_FIELDS if record.get(f)), ""))})
        if hits:
            level = LEVELS.get(str(getattr(rule.level, "name", rule.level) or "medium").lower(), "medium")
            yield {"rule": f"sigma:{rule.id}", "kind": "sigma", "title": rule.title, "severity": level,
                   "mitre": mitre, "summary": f"{rule.title}: {len(hits)} log line(s), e.g. {hits[0]['message'][:200]}",
                   "source": "sigma", "hits": len(hits),
                   "evidence": [{k: h[k] for k in ("bundle", "member", "line")} for h in hits[:10]]}
