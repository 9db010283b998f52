"""Sigma rules (specs/rules/sigma/*.yml, or any SigmaHQ Linux rule dropped there) over the log records of
a bundle, with the semantics of the Sigma specification, by SigmaHQ's own machinery.

pySigma reads a rule; its SQLite backend (pysigma-backend-sqlite, the converter behind Zircolite) turns
the rule's conditions into SQL; the log records go into an in-memory SQLite table built the way that
backend expects (one ``TEXT COLLATE NOCASE`` column per field a rule reads, keywords in a text column),
and each rule is one query. What the specification says, the backend does: strings are case-insensitive
with ``*``/``?`` wildcards, ``|re`` is case-sensitive unless ``|re|i``, ``|cased`` is case-sensitive (GLOB),
``|exists`` tests presence, a list of values or of conditions is an OR, ``|all`` an AND, ``null`` means
the field is absent (or null), and windash, base64, base64offset, cidr, fieldref, neq and the time parts
are pySigma's expansions. What we add: a case-sensitive ``REGEXP`` (Python's ``re.search``, flags as the
backend writes them, ``(?i)``/``(?m)``/``(?s)``), ``lt``/``lte``/``gt``/``gte`` that compare numbers (the
backend's bare ``field > 5`` compares text on such a table, so ``'10' > 5`` would be false and ``'abc' > 5``
true), and field names mapped to our own column names (SQLite's names ignore case; Sigma's, and auditd's
``syscall``/``SYSCALL``, do not).

A rule the engine cannot evaluate is refused with the reason, never run half-way: it does not parse, it is a
correlation rule or a filter, pySigma or the backend cannot convert it (an unexpanded placeholder, an
unknown modifier), its regular expression does not compile, or its log source is not in a bundle (another
product, or a category such as ``process_creation`` — a bundle holds log lines, not EDR events).

Records: the log source picks the streams, as before: ``service: auth``/``sshd``/``sudo`` → authlog,
``syslog``/``cron`` → syslog and journal, ``auditd`` → audit, any other (or none) → all four; the records
are dissect.target's (the full profile's, or those `analyze` made). A record is an event as it is, with two
readings added: keywords (values with no field) are searched in its message (``message``/``msg``/
``MESSAGE``/``line``), and an audit record also has its ``key=value`` pairs as fields (``type`` from
``audit_type``, ``a0``…, ``name``, ``exe``, ``SYSCALL`` of the enriched format, the pairs of a quoted
``msg='…'``; hex-encoded strings decoded), which is how SigmaHQ's auditd rules name them. A field whose
value is null is absent (flow.record writes every field of its descriptor, null when the line had none).
A field name is looked up as written, then ignoring case; a list or object value is its JSON text."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

Row = tuple[str, str, int, dict[str, Any]]
LEVELS = {"informational": "info", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}
STREAMS = {"auth": ["authlog"], "sshd": ["authlog"], "sudo": ["authlog"], "syslog": ["syslog", "journal"],
           "auditd": ["audit"], "cron": ["syslog", "journal"]}
ALL_LOGS = ["authlog", "syslog", "journal", "audit"]
MESSAGE_FIELDS = ("message", "msg", "MESSAGE", "line")
TABLE = "sigma_events"
FULLTEXT = "sigma_fulltext"
PRODUCTS = {"linux", "unix"}
CHECK_EVERY = 2000  # rows inserted, or SQLite VM steps ×10, between two calls of check()


# --------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------

@dataclass
class Loaded:
    """One rule of a file under the rules folder, or the reason the file gives none."""

    name: str  # the file, relative to the folder
    rule: Any = None  # sigma.rule.SigmaRule
    refused: str | None = None

    @property
    def label(self) -> str:
        title = getattr(self.rule, "title", None)
        return f"{self.name} ({title})" if title else self.name


def load(folder: str) -> list[Loaded]:
    """Every rule of every ``*.yml``/``*.yaml`` under ``folder`` (sorted, subfolders too). A file pySigma
    cannot read, a correlation rule or a filter is kept as a refusal, so that it is reported, not dropped."""
    import yaml
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError
    from sigma.rule import SigmaRule

    loaded: list[Loaded] = []
    paths = []
    for top, dirs, files in os.walk(folder):
        dirs.sort()
        paths += [os.path.join(top, f) for f in files if f.endswith((".yml", ".yaml"))]
    for path in sorted(paths):
        name = os.path.relpath(path, folder)
        try:
            with open(path, encoding="utf-8") as handle:
                collection = SigmaCollection.from_yaml(handle.read())
        except (SigmaError, yaml.YAMLError, UnicodeDecodeError, ValueError, TypeError) as exc:
            loaded.append(Loaded(name, refused=f"does not parse: {_one_line(exc)}"))
            continue
        for rule in collection.rules:
            if not isinstance(rule, SigmaRule):
                kind = re.sub(r"(?<!^)(?=[A-Z])", " ", type(rule).__name__.removeprefix("Sigma")).lower()
                loaded.append(Loaded(name, rule, refused=f"a {kind or 'document'}: only detection rules are "
                                                         "evaluated, one log record at a time"))
            elif getattr(rule, "_output", True) is False:
                loaded.append(Loaded(name, rule, refused="only counted by a correlation rule (generate: false), "
                                                         "and a correlation rule is not evaluated"))
            else:
                loaded.append(Loaded(name, rule))
    return loaded


def streams_for(rule: Any) -> list[str]:
    """The streams a rule reads (its log source's service), as names of ``rows``."""
    service = (rule.logsource.service or "").lower()
    names = STREAMS.get(service, ALL_LOGS)
    return [f"dissect.{n}" for n in names] + [f"analysis:dissect.{n}" for n in names]


def logsource_refusal(rule: Any) -> str | None:
    """Why a bundle has no record of this rule's log source, or None when it has."""
    product = (rule.logsource.product or "").lower()
    category = (rule.logsource.category or "").lower()
    if product and product not in PRODUCTS:
        return f"log source product '{product}': a bundle holds Linux logs"
    if category:
        return (f"log source category '{category}': a bundle has no such events (it holds log lines: auth, "
                "syslog, journal, audit)")
    return None


@dataclass
class Compiled:
    loaded: Loaded
    where: list[str]  # SQL conditions over TABLE, one per Sigma condition: they are ORed
    fields: list[str]  # the event fields the rule reads
    streams: list[str] = field(default_factory=list)
    no_records: str | None = None  # logsource_refusal(rule)

    @property
    def rule(self) -> Any:
        return self.loaded.rule


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for arg in getattr(node, "args", None) or []:
        yield from _walk(arg)


def rule_fields(rule: Any) -> list[str]:
    """The fields a rule's conditions read (field references included), in order of appearance."""
    from sigma.conditions import ConditionFieldEqualsValueExpression
    from sigma.types import SigmaFieldReference

    names: dict[str, None] = {}
    for condition in rule.detection.parsed_condition:
        for node in _walk(condition.parse()):
            if isinstance(node, ConditionFieldEqualsValueExpression):
                if node.field:
                    names[node.field] = None
                if isinstance(node.value, SigmaFieldReference):
                    names[node.value.field] = None
    return list(names)


def _regex_refusal(rule: Any) -> str | None:
    from sigma.types import SigmaRegularExpression

    for condition in rule.detection.parsed_condition:
        for node in _walk(condition.parse()):
            value = getattr(node, "value", None)
            if isinstance(value, SigmaRegularExpression):
                pattern = str(value.regexp)
                try:
                    re.compile(pattern)
                except (re.error, RecursionError, OverflowError) as exc:
                    return f"regular expression {pattern[:80]!r} does not compile: {exc}"
    return None


@lru_cache(maxsize=1)
def _backend_class() -> Any:
    from sigma.backends.sqlite import sqliteBackend

    class Backend(sqliteBackend):  # type: ignore[misc, valid-type]
        """pySigma's SQLite backend with a numeric lt/lte/gt/gte, giving the condition alone."""

        compare_op_expression = "sigma_number({field}) {operator} {value}"

        def finalize_query_default(self, rule: Any, query: str, index: int, state: Any) -> Any:
            return query  # evaluate() adds the table and the streams

    return Backend


def _backend(columns: dict[str, str]) -> Any:
    """The backend, with the rules' field names mapped to our column names."""
    from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
    from sigma.processing.transformations import FieldMappingTransformation

    mapping = ProcessingPipeline(name="triagent columns", items=[
        ProcessingItem(FieldMappingTransformation(dict(columns)), identifier="triagent_columns")])
    return _backend_class()(processing_pipeline=mapping, table=TABLE, fulltext_field=FULLTEXT)


def compile_rules(loaded: list[Loaded], columns: dict[str, str] | None = None
                  ) -> tuple[list[Compiled], list[tuple[Loaded, str]]]:
    """Each rule as SQL conditions, or refused with the reason. ``columns`` (field → column) is filled."""
    from sigma.exceptions import SigmaError

    columns = {} if columns is None else columns
    compiled: list[Compiled] = []
    refused: list[tuple[Loaded, str]] = []
    for entry in loaded:
        if entry.refused:
            refused.append((entry, entry.refused))
            continue
        rule = copy.deepcopy(entry.rule)  # conversion applies the pipeline to the rule itself
        try:
            fields = rule_fields(rule)
            reason = _regex_refusal(rule)
            if reason:
                refused.append((entry, reason))
                continue
            for name in fields:
                columns.setdefault(name, f"f{len(columns)}")
            where = _backend(columns).convert_rule(rule)
        except SigmaError as exc:
            refused.append((entry, f"pySigma's SQLite backend cannot convert it: {_one_line(exc)}"))
            continue
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            refused.append((entry, f"cannot be converted: {type(exc).__name__}: {_one_line(exc)}"))
            continue
        if not where or not all(isinstance(w, str) and w for w in where):
            refused.append((entry, "the backend gave no query for it"))
            continue
        compiled.append(Compiled(entry, list(where), fields, streams_for(entry.rule), logsource_refusal(entry.rule)))
    return compiled, refused


# --------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------

AUDIT_PAIR = re.compile(r"([A-Za-z_][\w-]*)=(\"[^\"]*\"|'[^']*'|\S*)")
AUDIT_HEX = re.compile(r"(?:[0-9A-F]{2})+")
# string fields auditd writes as hex when they hold a space, a quote or a control character
AUDIT_ENCODED = re.compile(r"a\d+|name|proctitle|comm|exe|cwd|cmd|key|acct|data|path|old-path|new-path|"
                           r"watch|dir|file|ocomm|old_prom|new_prom")


def _audit_fields(text: str, record_type: str, into: dict[str, Any], depth: int = 0) -> None:
    for match in AUDIT_PAIR.finditer(text):
        key, raw = match.group(1), match.group(2)
        if raw[:1] == "'" and key == "msg" and depth == 0:
            _audit_fields(raw[1:-1], record_type, into, depth + 1)
            continue
        if raw[:1] in ("'", '"'):
            value = raw[1:-1]
        elif AUDIT_ENCODED.fullmatch(key) and AUDIT_HEX.fullmatch(raw):
            value = bytes.fromhex(raw).replace(b"\0", b" ").decode("utf-8", "replace").rstrip(" ")
        else:
            value = raw
        into.setdefault(key, value)


def event(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the rules see it: the record, and for an audit record its key=value pairs."""
    if record.get("_type") == "linux/log/audit" or ("audit_type" in record and "audit_id" in record):
        extra: dict[str, Any] = {}
        if record.get("audit_type") is not None:
            extra["type"] = str(record["audit_type"])
        if isinstance(record.get("message"), str):
            _audit_fields(record["message"], str(record.get("audit_type") or ""), extra)
        return {**extra, **record}
    return record


def message_of(record: dict[str, Any]) -> Any:
    return next((record[f] for f in MESSAGE_FIELDS if record.get(f) not in (None, "")), None)


def field_value(record: dict[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    lowered = name.lower()
    for key, value in record.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def cell(value: Any) -> Any:
    """A value as the table holds it: text (Sigma compares strings), NULL for none."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)  # case-sensitive: the backend writes (?i) for |re|i


def _regexp(pattern: Any, value: Any) -> int | None:
    if pattern is None or value is None:
        return None
    return int(_compiled(str(pattern)).search(str(value)) is not None)


def _number(value: Any) -> float | None:
    """A field's value as a number for lt/gt, or NULL (never true) for anything that is not one."""
    if value is None or isinstance(value, bytes):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        text = str(value).strip()
        if not text or "_" in text:
            return None
        try:
            number = float(text)
        except ValueError:
            return None
    return number if math.isfinite(number) else None


class Table:
    """The events in an in-memory SQLite table: one column per field the rules read, the message (for
    keywords), the stream each row came from."""

    def __init__(self, columns: dict[str, str]):
        self.columns = dict(columns)
        self.db = sqlite3.connect(":memory:")
        self.db.create_function("regexp", 2, _regexp, deterministic=True)
        self.db.create_function("sigma_number", 1, _number, deterministic=True)
        names = ["sigma_row INTEGER PRIMARY KEY", "sigma_stream TEXT", f"{FULLTEXT} TEXT COLLATE NOCASE"]
        names += [f"{c} TEXT COLLATE NOCASE" for c in self.columns.values()]
        self.db.execute(f"CREATE TABLE {TABLE} ({', '.join(names)})")
        self._insert = (f"INSERT INTO {TABLE} (sigma_row, sigma_stream, {FULLTEXT}"
                        + "".join(f", {c}" for c in self.columns.values())
                        + ") VALUES (?, ?, ?" + ", ?" * len(self.columns) + ")")
        self.count = 0

    def add(self, stream: str, record: dict[str, Any]) -> int:
        """Adds one record; returns its row number (0, 1, …)."""
        return self.add_event(stream, event(record))

    def add_event(self, stream: str, seen: dict[str, Any], message: Any = ...) -> int:
        message = message_of(seen) if message is ... else message
        values = [self.count, stream, None if message is None else str(cell(message))]
        values += [cell(field_value(seen, name)) for name in self.columns]
        self.db.execute(self._insert, values)
        self.count += 1
        return self.count - 1

    def matches(self, compiled: Compiled, streams: list[str] | None = None,
                check: Callable[[], None] = lambda: None) -> list[int]:
        """Row numbers of the events the rule matches (any of its conditions), among ``streams`` (all
        when None). Raises sqlite3.Error when SQLite refuses the query; whatever check() raises."""
        where = " OR ".join(f"({w})" for w in compiled.where)
        sql = f"SELECT sigma_row FROM {TABLE} WHERE ({where})"
        params: list[str] = []
        if streams is not None:
            sql += f" AND sigma_stream IN ({', '.join('?' * len(streams))})"
            params = list(streams)
        stopped: list[BaseException] = []

        def progress() -> int:
            try:
                check()
            except BaseException as exc:  # noqa: BLE001 - handed back once SQLite has stopped
                stopped.append(exc)
                return 1
            return 0

        self.db.set_progress_handler(progress, CHECK_EVERY * 10)
        try:
            rows = [r[0] for r in self.db.execute(sql + " ORDER BY sigma_row", params)]
        except sqlite3.OperationalError:
            if stopped:
                raise stopped[0] from None
            raise
        finally:
            self.db.set_progress_handler(None, 0)
        if stopped:
            raise stopped[0]
        return rows

    def close(self) -> None:
        self.db.close()


# --------------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------------

def evaluate(rules: list[Loaded], rows: Callable[[str], Iterable[Row]],
             check: Callable[[], None] = lambda: None, problems: list[Any] | None = None
             ) -> Iterator[dict[str, Any]]:
    """Findings of the rules over the bundle's log records. Refused rules are reported once per reason:
    as warnings appended to ``problems`` (the analysis log) when given, else as ``info`` findings of kind
    ``sigma_refused`` — never dropped in silence."""
    columns: dict[str, str] = {}
    compiled, refused = compile_rules(rules, columns)
    runnable = []
    for entry in compiled:
        if entry.no_records:
            refused.append((entry.loaded, entry.no_records))
        else:
            runnable.append(entry)
    found: list[dict[str, Any]] = []
    if runnable:
        needed = {f for c in runnable for f in c.fields}  # the columns these rules read, no more
        found, failed = _run(runnable, {f: c for f, c in columns.items() if f in needed}, rows, check)
        refused += failed
    yield from found
    yield from _refusals(refused, problems)


def _run(runnable: list[Compiled], columns: dict[str, str], rows: Callable[[str], Iterable[Row]],
         check: Callable[[], None]) -> tuple[list[dict[str, Any]], list[tuple[Loaded, str]]]:
    table = Table(columns)
    where: list[tuple[str, str, int, str]] = []
    try:
        for stream in sorted({s for c in runnable for s in c.streams}):
            for bundle, member, line, record in rows(stream):
                if table.count % CHECK_EVERY == 0:
                    check()
                if not isinstance(record, dict):
                    continue
                seen = event(record)
                message = message_of(seen)
                table.add_event(stream, seen, message)
                where.append((bundle, member, line, "" if message is None else str(message)))
        found: list[dict[str, Any]] = []
        failed: list[tuple[Loaded, str]] = []
        for entry in runnable:
            check()
            try:
                hits = table.matches(entry, entry.streams, check)
            except sqlite3.Error as exc:
                failed.append((entry.loaded, f"SQLite cannot run its query: {_one_line(exc)}"))
                continue
            if hits:
                found.append(_finding(entry.rule, [where[h] for h in hits]))
        return found, failed
    finally:
        table.close()


def _finding(rule: Any, hits: list[tuple[str, str, int, str]]) -> dict[str, Any]:
    mitre = sorted({t.name.upper() for t in rule.tags if t.namespace == "attack" and t.name[:1] in "tT"})
    level = LEVELS.get(str(getattr(rule.level, "name", rule.level) or "medium").lower(), "medium")
    return {"rule": f"sigma:{rule.id}", "kind": "sigma", "title": rule.title, "severity": level, "mitre": mitre,
            "summary": f"{rule.title}: {len(hits)} log line(s), e.g. {hits[0][3][:200]}",
            "source": "sigma", "hits": len(hits),
            "evidence": [{"bundle": b, "member": m, "line": n} for b, m, n, _ in hits[:10]]}


def _refusals(refused: list[tuple[Loaded, str]], problems: list[Any] | None) -> Iterator[dict[str, Any]]:
    by_reason: dict[str, list[str]] = {}
    for entry, reason in refused:
        # one line per log-source reason; the others are each a rule's own
        key = reason if reason.startswith("log source ") else f"{entry.label}: {reason}"
        by_reason.setdefault(key, []).append(entry.label)
    for reason, labels in by_reason.items():
        shown = ", ".join(labels[:5]) + (f", … ({len(labels) - 5} more)" if len(labels) > 5 else "")
        text = (f"sigma: {len(labels)} rule(s) not evaluated, {reason}: {shown}" if reason.startswith("log source ")
                else f"sigma rule not evaluated: {reason}")
        if problems is not None:
            from collectors.base import Problem

            problems.append(Problem(text, level="warning", detail={"sigma_refused": labels, "reason": reason}))
        else:
            yield {"rule": "sigma:refused", "kind": "sigma_refused", "title": "Sigma rule(s) not evaluated",
                   "severity": "info", "mitre": [], "summary": text, "source": "sigma", "hits": 0,
                   "rules": labels, "evidence": []}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
