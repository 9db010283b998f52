"""triagent rank DIR: from many triage bundles to the few hosts that deserve a full disk.

Every bundle under DIR (``*.tar.gz``, ``*.tar``; analysis bundles are not inputs) is read once, in worker
processes, keeping only the members the rules and the tables need. Its findings and verdict come from the
analysis bundle beside it (``NAME.analysis.tar.gz``, from ``triagent analyze``) when there is one made from
the same bytes, else from the rules engine run here (specs/rules, specs/verdict.toml; no memory image).
Each worker writes compact Parquet parts, ``OUT_DIR/<table>/part-NNNNN.parquet``, whose columns are the
ones declared in specs/tables/*.sql (the same layout Athena, Trino or Spark read from object storage).
DuckDB, embedded, then ranks hosts by score, criticals and highs, and groups indicators (SSH key
fingerprints, remote IPs, executable hashes, command lines, cron commands, URLs) seen on two hosts or more.

duckdb and pyarrow are the optional extra ``fleet``; the collector never imports this module.

Exit codes: 0 ranked; 1 ranked, but some bundles could not be read (their hosts rows carry ``error``);
2 usage (DIR missing, no bundle under it); 3 duckdb or pyarrow missing."""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.util
import ipaddress
import json
import math
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.bundle.reader import (
    CUSTODY_NAME,
    VERDICT_NAME,
    BundleView,
    dumps,
    is_regular,
    quoted,
    shown,
    stream_rows,
    walk_regular,
)

TABLES = ("hosts", "findings", "indicators", "processes", "connections", "ssh_keys")
INDICATOR_KINDS = ("ssh_key_fingerprint", "remote_ip", "exe_sha256", "command_line", "cron_command", "url")
EXIT_OK, EXIT_UNREADABLE, EXIT_USAGE, EXIT_FATAL = 0, 1, 2, 3
TEXT_CAP = 1000
SEVERITIES = ("critical", "high", "medium", "low", "info")


# --------------------------------------------------------------------------------------------------
# Table definitions (specs/tables/*.sql) and their Arrow schemas
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    name: str
    type: str  # Hive/Athena type text, e.g. ARRAY<STRUCT<bundle:STRING,line:INT>>
    comment: str


def tables_folder() -> str:
    import specs

    return str(specs.path("tables"))


def _strip_comments(text: str) -> str:
    out, quoted = [], False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted and text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _split_top(text: str, sep: str = ",") -> list[str]:
    parts, depth, quoted, current = [], 0, False, []
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch in "<(":
            depth += 1
        elif not quoted and ch in ">)":
            depth -= 1
        elif not quoted and depth == 0 and ch == sep:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


_CREATE = re.compile(r"CREATE\s+EXTERNAL\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.]+)\s*\(", re.IGNORECASE)
_COLUMN = re.compile(r"(\w+)\s+(.+?)(?:\s+COMMENT\s+'((?:[^']|'')*)')?", re.IGNORECASE | re.DOTALL)


def parse_table_sql(text: str) -> tuple[str, list[Column]]:
    """The table name and columns of one ``CREATE EXTERNAL TABLE`` statement."""
    body = _strip_comments(text)
    found = _CREATE.search(body)
    if not found:
        raise ValueError("no CREATE EXTERNAL TABLE statement")
    depth, start = 1, found.end()
    for end in range(start, len(body)):
        depth += {"(": 1, ")": -1}.get(body[end], 0)
        if depth == 0:
            break
    else:
        raise ValueError("unbalanced parentheses in the column list")
    columns = []
    for part in _split_top(body[start:end]):
        match = _COLUMN.fullmatch(part)
        if not match:
            raise ValueError(f"cannot read column definition {part!r}")
        columns.append(Column(match.group(1), re.sub(r"\s+", "", match.group(2)).upper(),
                              (match.group(3) or "").replace("''", "'")))
    return found.group(1).split(".")[-1], columns


def load_table_specs(folder: str | None = None) -> dict[str, list[Column]]:
    folder = folder or tables_folder()
    specs: dict[str, list[Column]] = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".sql"):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                table, columns = parse_table_sql(handle.read())
            specs[table] = columns
    missing = set(TABLES) - set(specs)
    if missing:
        raise ValueError(f"{folder}: no definition for table(s) {sorted(missing)}")
    return specs


def arrow_type(text: str) -> Any:
    import pyarrow as pa

    text = text.strip().upper()
    scalars = {"STRING": pa.string(), "VARCHAR": pa.string(), "INT": pa.int32(), "INTEGER": pa.int32(),
               "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(),
               # Hive's TIMESTAMP has no zone: UTC wall time in INT64 microseconds reads the same in
               # Athena, Trino, Spark and DuckDB (and DuckDB's Python API needs no pytz for it)
               "TIMESTAMP": pa.timestamp("us")}
    if text in scalars:
        return scalars[text]
    if text.startswith("ARRAY<") and text.endswith(">"):
        return pa.list_(arrow_type(text[6:-1]))
    if text.startswith("STRUCT<") and text.endswith(">"):
        fields = []
        for part in _split_top(text[7:-1]):
            name, _, inner = part.partition(":")
            fields.append(pa.field(name.strip().lower(), arrow_type(inner)))
        return pa.struct(fields)
    raise ValueError(f"unsupported column type {text!r}")


def arrow_schema(columns: list[Column]) -> Any:
    import pyarrow as pa

    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=True) for c in columns])


# --------------------------------------------------------------------------------------------------
# Reading one bundle: one pass, only the members we need
# --------------------------------------------------------------------------------------------------

# Streams the light tables and indicators come from, and those findings.py's checks read; _engine()
# adds every stream a rule names, so a rule over a new stream needs no change here.
_TABLE_STREAMS = {"processes", "connections", "ssh_keys", "histories", "cron", "wtmp", "btmp", "lastlog"}
_CHECK_STREAMS = {"processes", "preload", "sys_modules", "modules", "connections", "histories"}


def open_bundle(path: str, want: Callable[[str], bool], hash_bytes: bool = True) -> BundleView:
    """One bounded pass over a bundle (agent/bundle/reader.py): the record streams ``want`` names, its small JSON
    members, its manifest's fields, and the file's SHA-256 when ``hash_bytes`` (else an uncompressed
    bundle's memory image is seeked over, not read)."""
    return BundleView(path, want, hash_file=hash_bytes)


# --------------------------------------------------------------------------------------------------
# Findings: from an analysis bundle beside the bundle, else the rules engine
# --------------------------------------------------------------------------------------------------

_ENGINE: dict[str, Any] = {}


def _engine() -> dict[str, Any]:
    """Rules and verdict policy, loaded once per process (before the fork: workers inherit them)."""
    if not _ENGINE:
        from agent.analysis import rules as engine

        rules = engine.load_rules()
        streams = {s for r in rules for s in r.sources
                   if s not in ("files", "findings") and not s.startswith("analysis:")}
        _ENGINE.update(rules=rules, policy=engine.load_verdict_policy(),
                       streams=streams | _TABLE_STREAMS | _CHECK_STREAMS)
    return _ENGINE


Rows = Callable[[str], Iterator[tuple[str, str, int, dict[str, Any]]]]


def compute_findings(tar: Any) -> tuple[list[dict[str, Any]], dict[str, Any], Rows]:
    """Findings and verdict as ``triagent analyze`` makes them when there is no memory image: the same
    steps (agent.analysis.steps: checks, rules, ranking; Sigma and YARA are the analysis's), with the
    rules loaded once per worker instead of once per bundle (tests/agent/responder/test_rank.py compares
    the two). Also the engine's row reader, whose parsed streams the tables reuse."""
    from agent.analysis import rules as engine
    from agent.analysis import steps
    from agent.analysis.findings import AnalysisRows

    loaded = _engine()
    memory = AnalysisRows()
    made = steps.checks(tar, memory)
    rows = engine.bundle_rows(tar, memory, made)
    found = steps.ranked(list(engine.evaluate(loaded["rules"], rows, engine.collection_time(tar) or 0.0)), made)
    return found, engine.verdict(found, False, loaded["policy"]), rows


def analysis_beside(path: str) -> str | None:
    stem = os.path.basename(path).split(".tar")[0]
    for suffix in (".analysis.tar.gz", ".analysis.tar"):
        candidate = os.path.join(os.path.dirname(path), stem + suffix)
        if is_regular(candidate):  # found, not named: a regular file itself, never a link or a FIFO
            return candidate
    return None


def _analysis_findings(path: str, sha256: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]] | str:
    """(findings, verdict) of an analysis bundle, or why it is not used."""
    with open_bundle(path, lambda stream: stream == "findings", hash_bytes=False) as view:
        if view.error:
            return f"{os.path.basename(path)} cannot be read ({view.error}); ignored"
        custody = view.json(CUSTODY_NAME)
        source = custody.get("source_bundle_sha256")
        if sha256 and source and source != sha256:
            return (f"{os.path.basename(path)} was made from other bytes (source_bundle_sha256 "
                    f"{shown(source, 12)}); ignored")
        verdict = view.json(VERDICT_NAME)
        if not verdict:
            return f"{os.path.basename(path)} has no verdict.json; ignored"
        return [r for _, _, r in stream_rows(view, "findings")], verdict


# --------------------------------------------------------------------------------------------------
# Rows of the tables
# --------------------------------------------------------------------------------------------------

def _s(value: Any, cap: int = TEXT_CAP) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)[:cap]


def _i(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _b(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _ts(value: Any) -> _dt.datetime | None:
    """UTC as a naive datetime (the tables' TIMESTAMP columns hold UTC wall time)."""
    moment = _aware(value)
    return moment.astimezone(_dt.UTC).replace(tzinfo=None) if moment else None


def _aware(value: Any) -> _dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1e9 if value > 1e14 else float(value)  # *_ns or seconds
        try:
            return _dt.datetime.fromtimestamp(seconds, _dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        moment = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)


_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_URL = re.compile(r"\b(?:https?|ftp)://[^\s'\"<>|;`)]+", re.IGNORECASE)


def _ip(text: Any) -> str | None:
    """A routable-looking address in canonical form; loopback, unspecified, link-local and multicast are
    the same on every host and would link them all."""
    try:
        address = ipaddress.ip_address(str(text).strip().split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified or address.is_link_local or address.is_multicast:
        return None
    return str(address)


def _in_text(text: str) -> Iterator[tuple[str, str]]:
    for match in _IPV4.finditer(text):
        if ip := _ip(match.group(0)):
            yield "remote_ip", ip
    for match in _URL.finditer(text):
        yield "url", match.group(0)[:TEXT_CAP]


def bundle_rows(path: str, base: str) -> dict[str, list[dict[str, Any]]]:
    """Rows of every table for one bundle (a hosts row with ``error`` when it cannot be read)."""
    host_key = os.path.relpath(path, base).replace(os.sep, "/")
    host: dict[str, Any] = {"host_key": host_key, "bundle": os.path.basename(path)}
    tables: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    notes: list[str] = []
    streams = _engine()["streams"]

    sidecar = _sidecar(path)
    try:
        # a gzip bundle is read whole anyway: hashing it costs little and checks the sidecar
        tar = open_bundle(path, lambda stream: stream in streams, hash_bytes=not sidecar or path.endswith(".gz"))
    except Exception as exc:  # not a regular file, unreadable: one bundle must not stop a fleet's ranking
        host["error"] = f"cannot read the bundle: {type(exc).__name__}: {exc}"[:500]
        tables["hosts"].append(host)
        return tables
    if tar.error:
        host["error"] = f"cannot read the bundle: {tar.error}"[:500]
        tables["hosts"].append(host)
        return tables
    _host_facts(host, tar, path, sidecar, notes)
    found, verdict, rows = _findings(tar, path, base, host, notes)

    counts = {s: 0 for s in SEVERITIES}
    for f in found:
        if f.get("severity") in counts:
            counts[f["severity"]] += 1
    if tar.problems:
        notes.append(f"{len(tar.problems)} problem(s) reading the bundle, e.g. {tar.problems[0]}")
    host.update(memory_analysed=_b(verdict.get("memory_analysed")), score=_i(verdict.get("score")),
                recommendation=_s(verdict.get("recommendation")), findings=len(found), **counts,
                notes="; ".join(notes)[:TEXT_CAP] or None)
    tables["hosts"].append(host)
    tables["findings"] = [_finding_row(host_key, f) for f in found]
    _record_tables(_Indicators(host_key, found, tables["indicators"]), rows, tables)
    tar.close()
    return tables


def _host_facts(host: dict[str, Any], tar: Any, path: str, sidecar: str | None, notes: list[str]) -> None:
    """The hosts row's identity: the bundle's hash (against its sidecar), custody's host, the manifest's run."""
    sha256 = tar.sha256
    host.update(sha256=sha256 or sidecar, sha256_source="computed" if sha256 else "sidecar",
                sidecar_match=(sha256 == sidecar) if sha256 and sidecar else None, bytes=os.path.getsize(path))
    if host["sidecar_match"] is False:
        notes.append("the .sha256 sidecar does not match the bundle")
    custody = tar.json(CUSTODY_NAME)
    manifest = tar.manifest_fields
    if not manifest:
        notes.append("no manifest.json: not a triagent bundle, or cut short")
    ident = custody.get("host") if isinstance(custody.get("host"), dict) else {}
    host.update(hostname=_s(ident.get("hostname") or ident.get("hostname_file")),
                machine_id=_s(ident.get("machine_id")), boot_id=_s(ident.get("boot_id")),
                kernel=_s(ident.get("kernel_release")),
                cloud_instance_id=_s(ident.get("cloud_instance_id")), live=_b(custody.get("live")),
                collected_root=_s(custody.get("root")), profile=_s(manifest.get("profile") or custody.get("profile")),
                status=_s(manifest.get("status") or custody.get("status")),
                collected_utc=_ts(custody.get("started_utc")) or _ts(manifest.get("started_ns")))


def _findings(tar: Any, path: str, base: str, host: dict[str, Any],
              notes: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any], Rows]:
    """Findings and verdict: the analysis bundle's beside it when it was made from these bytes, else the
    rules run here; and the engine's row reader either way (the tables reuse its parsed streams)."""
    found: list[dict[str, Any]] | None = None
    analysis = analysis_beside(path)
    if analysis:
        try:
            result = _analysis_findings(analysis, host["sha256"])
        except Exception as exc:  # a damaged analysis bundle: fall back to the rules, as without one
            result = f"{os.path.basename(analysis)} cannot be read ({type(exc).__name__}: {exc}); ignored"
        if isinstance(result, str):
            notes.append(result)
        else:
            found, verdict = result
            host.update(findings_source="analysis", analysis=os.path.relpath(analysis, base).replace(os.sep, "/"))
    if found is None:
        host["findings_source"] = "rules"
        return compute_findings(tar)
    from agent.analysis.findings import AnalysisRows
    from agent.analysis.rules import bundle_rows as engine_rows

    return found, verdict, engine_rows(tar, AnalysisRows(), [])


class _Indicators:
    """The indicators table of one host: values worth matching across the fleet, each flagged when a
    finding points at its record or names the value itself."""

    def __init__(self, host_key: str, found: list[dict[str, Any]], rows: list[dict[str, Any]]):
        self.host_key, self.rows = host_key, rows
        self.pointers = {(e.get("member"), e.get("line")) for f in found for e in f.get("evidence") or []
                         if isinstance(e, dict) and e.get("bundle") == "source"}
        self.facts = {str(f[k]) for f in found for k in ("exe_sha256", "fingerprint", "command") if f.get(k)}

    def add(self, kind: str, value: Any, stream: str, member: str, line: int, context: Any) -> None:
        text = _s(value)
        if text:
            self.rows.append({"host_key": self.host_key, "kind": kind, "value": text, "stream": stream,
                              "member": member, "line": line, "context": _s(context, 300),
                              "flagged": (member, line) in self.pointers or text in self.facts})

    def command(self, kind: str, command: str, stream: str, member: str, line: int, context: Any,
                found_in_context: Any) -> None:
        """A command line, and the addresses and URLs inside it."""
        self.add(kind, command, stream, member, line, context)
        for inner, value in _in_text(command):
            self.add(inner, value, stream, member, line, found_in_context)


def _record_tables(ind: _Indicators, rows: Rows, tables: dict[str, list[dict[str, Any]]]) -> None:
    host_key = ind.host_key

    def records(stream: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
        # the engine's reader: parsed once for rules and tables, numbered as evidence pointers are
        for _, member, line, record in rows(stream):
            yield member, line, record

    for member, line, p in records("processes"):
        cmdline = _s(p.get("cmdline"))
        tables["processes"].append({
            "host_key": host_key, "pid": _i(p.get("pid")), "ppid": _i(p.get("ppid")), "name": _s(p.get("name")),
            "exe": _s(p.get("exe")), "exe_sha256": _s(p.get("exe_sha256")), "exe_deleted": _b(p.get("exe_deleted")),
            "cmdline": cmdline, "username": _s(p.get("user")), "start_time_utc": _ts(p.get("start_time_utc")),
            "kernel_thread": _b(p.get("kernel_thread")), "member": member, "line": line})
        ind.add("exe_sha256", p.get("exe_sha256"), "processes", member, line, p.get("name"))
        if cmdline and not p.get("kernel_thread"):
            ind.command("command_line", cmdline, "processes", member, line, p.get("name"), p.get("name"))
    for member, line, c in records("connections"):
        owners = [o for o in c.get("owners") or [] if isinstance(o, dict)]
        tables["connections"].append({
            "host_key": host_key, "proto": _s(c.get("proto")), "local_ip": _s(c.get("local_ip")),
            "local_port": _i(c.get("local_port")), "remote_ip": _s(c.get("remote_ip")),
            "remote_port": _i(c.get("remote_port")), "state": _s(c.get("state")), "listening": _b(c.get("listening")),
            "remote_is_public": _b(c.get("remote_is_public")), "owner_pids": [_i(o.get("pid")) for o in owners],
            "owner_names": [_s(o.get("name") or o.get("comm")) for o in owners], "member": member, "line": line})
        if not c.get("listening") and _i(c.get("remote_port")):
            names = ",".join(str(o.get("name") or o.get("pid")) for o in owners) or None
            ind.add("remote_ip", _ip(c.get("remote_ip")), "connections", member, line, names)
    for member, line, k in records("ssh_keys"):
        tables["ssh_keys"].append({
            "host_key": host_key, "kind": _s(k.get("kind")), "username": _s(k.get("user")), "path": _s(k.get("path")),
            "key_type": _s(k.get("key_type")), "fingerprint": _s(k.get("fingerprint")), "bits": _i(k.get("bits")),
            "key_comment": _s(k.get("comment")), "options_text": _s(k.get("options_text")),
            "file_mtime_utc": _ts(k.get("file_mtime_ns")), "member": member, "line": line})
        if k.get("kind") == "authorized_keys":
            ind.add("ssh_key_fingerprint", k.get("fingerprint"), "ssh_keys", member, line,
                    f"{k.get('user')} {k.get('path')}")
    for member, line, h in records("histories"):
        command = _s(h.get("command"))
        if command and command.strip():
            ind.command("command_line", command.strip(), "histories", member, line, h.get("user"), h.get("user"))
    for member, line, c in records("cron"):
        command = _s(c.get("command"))
        if command and command.strip():
            ind.command("cron_command", command.strip(), "cron", member, line, f"{c.get('user')} {c.get('path')}",
                        c.get("path"))
    for stream in ("wtmp", "btmp", "lastlog"):
        for member, line, r in records(stream):
            ind.add("remote_ip", _ip(r.get("address") or r.get("host")), stream, member, line, r.get("user"))


def _finding_row(host_key: str, f: dict[str, Any]) -> dict[str, Any]:
    evidence = [{"bundle": _s(e.get("bundle")), "member": _s(e.get("member")), "line": _i(e.get("line"))}
                for e in f.get("evidence") or [] if isinstance(e, dict)]
    known = {"rule", "kind", "title", "severity", "mitre", "summary", "source", "evidence"}
    facts = {k: v for k, v in f.items() if k not in known}
    severity = f.get("severity")
    return {"host_key": host_key, "rule": _s(f.get("rule")), "kind": _s(f.get("kind")), "title": _s(f.get("title")),
            "severity": _s(severity), "severity_rank": SEVERITIES.index(severity) if severity in SEVERITIES else None,
            "mitre": [str(m) for m in f.get("mitre") or []], "summary": _s(f.get("summary")),
            "source": _s(f.get("source")), "evidence_member": evidence[0]["member"] if evidence else None,
            "evidence_line": evidence[0]["line"] if evidence else None, "evidence": evidence,
            "facts_json": json.dumps(facts, ensure_ascii=False, sort_keys=True, default=str) if facts else None}


def _sidecar(path: str) -> str | None:
    try:
        with open(path + ".sha256", encoding="utf-8") as handle:
            token = handle.read(200).split()
    except OSError:
        return None
    return token[0].lower() if token and re.fullmatch(r"[0-9a-fA-F]{64}", token[0]) else None


# --------------------------------------------------------------------------------------------------
# Workers and Parquet parts
# --------------------------------------------------------------------------------------------------

def _encodable(value: Any) -> Any:
    """A row whose every string Parquet can store. A record may carry lone surrogates (JSON's "\\udcff": a
    host's non-UTF-8 file name, or a hostile bundle's), which UTF-8 cannot encode: they are written as the
    escape text instead, so one odd name never stops a fleet's ranking."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {k: _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


def write_parts(out_dir: str, index: int, tables: dict[str, list[dict[str, Any]]],
                specs: dict[str, list[Column]], stem: str | None = None) -> None:
    """``OUT_DIR/<table>/part-<index>.parquet`` for every table (``<stem>.parquet`` when given: triagent fleet
    names each bundle's files after it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for table in TABLES:
        schema = arrow_schema(specs[table])
        data = pa.Table.from_pylist([_encodable(row) for row in tables[table]], schema=schema)
        target = os.path.join(out_dir, table, f"{stem or f'part-{index:05d}'}.parquet")
        # every part, even an empty one, carries the full schema: readers never see a table without it
        pq.write_table(data, target + ".tmp", compression="snappy")
        os.replace(target + ".tmp", target)


def _process_chunk(task: tuple[int, list[str], str, str]) -> dict[str, Any]:
    index, paths, base, out_dir = task
    specs = load_table_specs()
    tables: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    errors = []
    for path in paths:
        try:
            rows = bundle_rows(path, base)
        except Exception as exc:  # a record no parser foresaw: that host is reported, the fleet still ranked
            rows = {t: [] for t in TABLES}
            rows["hosts"] = [{"host_key": os.path.relpath(path, base).replace(os.sep, "/"),
                              "bundle": os.path.basename(path),
                              "error": f"cannot process the bundle: {type(exc).__name__}: {exc}"[:500]}]
        if rows["hosts"][0].get("error"):
            errors.append(f"{rows['hosts'][0]['host_key']}: {rows['hosts'][0]['error']}")
        for table, values in rows.items():
            tables[table].extend(values)
    write_parts(out_dir, index, tables, specs)
    return {"bundles": len(paths), "errors": errors}


def _is_bundle_name(name: str) -> bool:
    return name.endswith((".tar.gz", ".tar")) and ".analysis.tar" not in name


def find_bundles(folder: str, skip: str | None = None, skipped: list[str] | None = None) -> list[str]:
    """Bundles under ``folder``: regular files only, never through a link (a FIFO or a link to /dev/zero
    named *.tar.gz would block or never end); those passed over are listed in ``skipped``."""
    skip_real = os.path.realpath(skip) if skip else None
    others: list[str] = []
    found = [p for p in walk_regular(folder, lambda d: os.path.realpath(d) == skip_real, others)
             if _is_bundle_name(os.path.basename(p))]
    if skipped is not None:
        skipped += [p for p in others if _is_bundle_name(os.path.basename(p))]
    return found


def export(bundles: list[str], base: str, out_dir: str, jobs: int,
           progress: Callable[[int], None] = lambda _done: None) -> list[str]:
    """Writes the Parquet parts of every table; returns the unreadable bundles' errors."""
    specs = load_table_specs()
    for table in TABLES:
        os.makedirs(os.path.join(out_dir, table), exist_ok=True)
        for name in os.listdir(os.path.join(out_dir, table)):
            if name.startswith("part-") and name.endswith((".parquet", ".parquet.tmp")):
                os.unlink(os.path.join(out_dir, table, name))
    _engine()
    size = max(1, min(64, math.ceil(len(bundles) / (jobs * 4))))
    tasks = [(i, bundles[at:at + size], base, out_dir) for i, at in enumerate(range(0, len(bundles), size))]
    errors: list[str] = []
    done = 0
    with contextlib.ExitStack() as stack:
        results: Iterable[dict[str, Any]]
        if jobs <= 1 or len(tasks) <= 1:
            results = map(_process_chunk, tasks)
        else:
            # fork: workers inherit the loaded rules and imports instead of paying for them again
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
            pool = stack.enter_context(multiprocessing.get_context(method).Pool(min(jobs, len(tasks))))
            results = pool.imap_unordered(_process_chunk, tasks)
        for result in results:
            errors += result["errors"]
            done += result["bundles"]
            progress(done)
    if not tasks:
        write_parts(out_dir, 0, {t: [] for t in TABLES}, specs)
    return errors


# --------------------------------------------------------------------------------------------------
# The ranking (DuckDB over the Parquet folders)
# --------------------------------------------------------------------------------------------------

# Two bundles of one machine (same machine-id) are one host when indicators are counted. linked_hosts:
# the other hosts that share with this one an indicator tied to a finding somewhere.
RANKING_SQL = """
WITH ids AS (
  SELECT host_key, coalesce(machine_id, host_key) AS host_id FROM hosts
), shared AS (
  SELECT i.kind, i.value FROM indicators i JOIN ids USING (host_key)
  GROUP BY i.kind, i.value
  HAVING count(DISTINCT ids.host_id) >= ? AND bool_or(i.flagged)
), carriers AS (
  SELECT DISTINCT i.kind, i.value, ids.host_key, ids.host_id
  FROM indicators i JOIN ids USING (host_key) JOIN shared s ON i.kind = s.kind AND i.value = s.value
), links AS (
  SELECT a.host_key, count(DISTINCT b.host_id) AS linked_hosts
  FROM carriers a JOIN carriers b ON a.kind = b.kind AND a.value = b.value AND a.host_id <> b.host_id
  GROUP BY a.host_key
), top AS (
  SELECT host_key, first(summary ORDER BY severity_rank, rule NULLS LAST, summary) AS top_finding,
         first(rule ORDER BY severity_rank, rule NULLS LAST, summary) AS top_rule
  FROM findings WHERE severity_rank < 4 GROUP BY host_key
)
SELECT h.host_key, h.hostname, h.machine_id, h.score, h.recommendation, h.critical, h.high, h.medium, h.low,
       h.findings, coalesce(l.linked_hosts, 0) AS linked_hosts, t.top_rule, t.top_finding, h.findings_source,
       strftime(h.collected_utc, '%Y-%m-%dT%H:%M:%SZ') AS collected_utc, h.sha256, h.notes, h.error
FROM hosts h LEFT JOIN links l USING (host_key) LEFT JOIN top t USING (host_key)
ORDER BY h.score DESC NULLS LAST, h.critical DESC NULLS LAST, h.high DESC NULLS LAST,
         h.medium DESC NULLS LAST, linked_hosts DESC, h.host_key
"""

# Ordered so that what ties hosts to findings comes first; then values shared by high-scoring hosts,
# rarer ones first: what most of a fleet shares (a standard binary's hash, a corporate key) sinks to the
# bottom but stays listed with its prevalence.
SHARED_SQL = """
WITH ids AS (
  SELECT host_key, coalesce(machine_id, host_key) AS host_id, score FROM hosts WHERE error IS NULL
), fleet AS (SELECT count(DISTINCT host_id) AS n FROM ids)
SELECT i.kind, i.value,
       count(DISTINCT ids.host_id) AS hosts,
       count(DISTINCT ids.host_id) FILTER (WHERE i.flagged) AS flagged_hosts,
       round(count(DISTINCT ids.host_id) / max(fleet.n), 4) AS prevalence,
       max(ids.score) AS max_score,
       list_sort(array_agg(DISTINCT i.host_key)) AS host_keys,
       list_sort(array_agg(DISTINCT i.stream)) AS streams
FROM indicators i JOIN ids USING (host_key) CROSS JOIN fleet
GROUP BY i.kind, i.value
HAVING count(DISTINCT ids.host_id) >= ?
ORDER BY flagged_hosts DESC, max_score DESC, hosts, i.kind, i.value
"""


def connect(out_dir: str, threads: int | None = None) -> Any:
    """An in-memory DuckDB whose views are the Parquet folders (the same names as specs/tables)."""
    import duckdb

    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for table in TABLES:
        pattern = os.path.join(os.path.abspath(out_dir), table, "*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}')")
    return con


def _records(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def connect_tables(location: str, threads: int | None = None, endpoint_url: str | None = None) -> Any:
    """connect() over tables written elsewhere: a local folder as it is, or s3://BUCKET/PREFIX (e.g. triagent
    fleet's SOURCE/tables), read through pyarrow's S3 filesystem with the responder's boto3 credentials and
    registered in DuckDB as Arrow datasets (no extension to download, nothing copied first)."""
    if not location.startswith("s3://"):
        return connect(location, threads)
    import boto3
    import duckdb
    import pyarrow.dataset as ds
    from pyarrow import fs

    session = boto3.session.Session()
    credentials = session.get_credentials()
    frozen = credentials.get_frozen_credentials() if credentials else None
    options: dict[str, Any] = {"region": session.region_name or "us-east-1"}
    if frozen:
        options.update(access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token)
    if endpoint_url:
        scheme, _, rest = endpoint_url.partition("://")
        options.update(endpoint_override=rest.rstrip("/"), scheme=scheme)
    filesystem = fs.S3FileSystem(**options)
    base = location.removeprefix("s3://").rstrip("/")
    specs = load_table_specs()
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for table in TABLES:
        try:
            data = ds.dataset(f"{base}/{table}/", filesystem=filesystem, format="parquet",
                              schema=arrow_schema(specs[table]))
        except FileNotFoundError:  # a table no bundle has written yet: empty, with its schema
            data = arrow_schema(specs[table]).empty_table()
        con.register(table, data)
    return con


def rank(out_dir: str, min_hosts: int = 2, threads: int | None = None, endpoint_url: str | None = None
         ) -> dict[str, Any]:
    """Hosts in rank order and the shared indicators, from the Parquet tables in ``out_dir`` (a folder, or
    s3://BUCKET/PREFIX read with ``endpoint_url``)."""
    con = connect_tables(out_dir, threads, endpoint_url)
    try:
        hosts = _records(con.execute(RANKING_SQL, [min_hosts]))
        shared = _records(con.execute(SHARED_SQL, [min_hosts]))
    finally:
        con.close()
    return {"hosts": [{"rank": n, **h} for n, h in enumerate(hosts, 1)], "shared_indicators": shared}


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def add_rank_arguments(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rank", help="rank many bundles: hosts by score, indicators shared across hosts "
                              "(Parquet tables + DuckDB; needs the 'fleet' extra)")
    p.add_argument("folder", metavar="DIR", help="folder searched (recursively) for bundles *.tar.gz / *.tar; an "
                   "analysis bundle beside one (NAME.analysis.tar.gz) supplies its findings")
    p.add_argument("--output", "-o", metavar="OUT_DIR", help="where the Parquet tables go (default DIR/fleet); "
                   "one folder per table, specs/tables/*.sql")
    p.add_argument("--format", choices=("table", "json"), default="table", help="stdout format (default table)")
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="worker processes (default: the CPU count)")
    p.add_argument("--top", type=int, metavar="N",
                   help="rows of each list to print (default 20 for table, all for json; 0: all)")
    p.add_argument("--min-hosts", type=int, default=2, metavar="N",
                   help="an indicator is shared when seen on at least N hosts (default 2)")
    p.add_argument("--tables", action="store_true", help="DIR holds the tables already (triagent fleet analyze's "
                   "SOURCE/tables, a folder or s3://BUCKET/PREFIX/tables): rank them as they are, read no bundle")
    p.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint for s3:// tables")
    p.add_argument("--verbose", "-v", action="store_true", help="progress on stderr")
    return p


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def run_rank(args: argparse.Namespace) -> int:
    missing = [m for m in ("duckdb", "pyarrow") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"triagent rank: needs {' and '.join(missing)}: pip install 'triagent[fleet]'", file=sys.stderr)
        return EXIT_FATAL
    if args.tables or args.folder.startswith("s3://"):
        return _run_rank_tables(args)
    folder = os.path.abspath(args.folder)
    if not os.path.isdir(folder):
        print(f"triagent rank: error: {args.folder!r} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    if args.jobs is not None and args.jobs < 1 or args.min_hosts < 1:
        print("triagent rank: error: --jobs and --min-hosts must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    out_dir = os.path.abspath(args.output or os.path.join(folder, "fleet"))
    jobs = args.jobs or _cpu_count()
    started = time.monotonic()
    passed_over: list[str] = []
    bundles = find_bundles(folder, skip=out_dir, skipped=passed_over)
    for path in passed_over[:10]:
        print(f"triagent rank: skipped {quoted(os.path.relpath(path, folder))}: not a regular file", file=sys.stderr)
    if not bundles:
        print(f"triagent rank: no bundles (*.tar.gz, *.tar) under {folder}", file=sys.stderr)
        return EXIT_USAGE
    say = (lambda text: print(f"triagent rank: {text}", file=sys.stderr, flush=True)) if args.verbose \
        else (lambda _text: None)
    say(f"{len(bundles)} bundles, {jobs} worker(s)")
    errors = export(bundles, folder, out_dir, jobs, lambda done: say(f"{done}/{len(bundles)} bundles read"))
    exported = time.monotonic()
    result = rank(out_dir, args.min_hosts, jobs)
    seconds = time.monotonic() - started
    summary = {"bundles": len(bundles), "unreadable": len(errors), "tables": out_dir, "seconds": round(seconds, 2),
               "export_seconds": round(exported - started, 2), "bundles_per_s": round(len(bundles) / seconds, 1)}
    summary.update(shared_total=len(result["shared_indicators"]), min_hosts=args.min_hosts)
    top = args.top if args.top is not None else (20 if args.format == "table" else 0)
    if top:
        result = {k: v[:top] for k, v in result.items()}
    if args.format == "json":
        print(dumps({**summary, **result}, default=str))
    else:
        print(format_table(result, summary))
    for error in errors[:10]:
        print(f"triagent rank: unreadable: {shown(error, 500)}", file=sys.stderr)
    print(f"triagent rank: {len(bundles)} bundles in {seconds:.1f} s ({summary['bundles_per_s']}/s), "
          f"{len(errors)} unreadable; tables in {out_dir}", file=sys.stderr)
    return EXIT_UNREADABLE if errors else EXIT_OK


def _run_rank_tables(args: argparse.Namespace) -> int:
    """rank over tables made elsewhere (triagent fleet analyze), local or on S3: no bundle is read."""
    location = args.folder if args.folder.startswith("s3://") else os.path.abspath(args.folder)
    if not location.startswith("s3://") and not os.path.isdir(os.path.join(location, "hosts")):
        print(f"triagent rank: error: {shown(location)} has no hosts/ table folder", file=sys.stderr)
        return EXIT_USAGE
    if args.min_hosts < 1:
        print("triagent rank: error: --min-hosts must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    started = time.monotonic()
    try:
        result = rank(location, args.min_hosts, args.jobs or _cpu_count(), args.endpoint_url)
    except Exception as exc:  # duckdb/pyarrow/boto3 errors: unreachable store, no Parquet files, bad file
        print(f"triagent rank: error: cannot read the tables in {shown(location)}: {type(exc).__name__}: "
              f"{shown(exc, 500)}", file=sys.stderr)
        return EXIT_FATAL
    seconds = time.monotonic() - started
    errors = [f"{h['host_key']}: {h['error']}" for h in result["hosts"] if h.get("error")]
    summary = {"bundles": len(result["hosts"]), "unreadable": len(errors), "tables": location,
               "seconds": round(seconds, 2), "shared_total": len(result["shared_indicators"]),
               "min_hosts": args.min_hosts}
    top = args.top if args.top is not None else (20 if args.format == "table" else 0)
    if top:
        result = {k: v[:top] for k, v in result.items()}
    if args.format == "json":
        print(dumps({**summary, **result}, default=str))
    else:
        print(format_table(result, summary))
    for error in errors[:10]:
        print(f"triagent rank: unreadable: {shown(error, 500)}", file=sys.stderr)
    return EXIT_UNREADABLE if errors else EXIT_OK


def _cut(value: Any, width: int) -> str:
    # a terminal obeys escape sequences: the bundle's strings are shown with control characters escaped
    text = shown("" if value is None else str(value))
    return text if len(text) <= width else text[:width - 1] + "…"


def format_table(result: dict[str, Any], summary: dict[str, Any]) -> str:
    shown = f"; top {len(result['hosts'])} shown" if len(result["hosts"]) < summary["bundles"] else ""
    lines = [f"Hosts by score ({summary['bundles']} bundles, {summary['unreadable']} unreadable{shown})",
             f"{'#':>4} {'score':>5} {'full-disk':<12} {'C':>2} {'H':>2} {'M':>3} {'links':>5}  "
             f"{'host':<44} {'machine_id':<12}  top finding"]
    for h in result["hosts"]:
        name = f"{h.get('hostname') or '?'} ({h['host_key']})"
        lines.append(f"{h['rank']:>4} {_cut(h.get('score'), 5):>5} {_cut(h.get('recommendation'), 12):<12} "
                     f"{_cut(h.get('critical'), 2):>2} {_cut(h.get('high'), 2):>2} {_cut(h.get('medium'), 3):>3} "
                     f"{h.get('linked_hosts') or 0:>5}  {_cut(name, 44):<44} {_cut(h.get('machine_id'), 12):<12}  "
                     + (_cut(f"[{h['top_rule'] or '-'}] {h['top_finding']}", 70) if h.get("top_finding")
                        else _cut(h.get("error"), 70)))
    shown = f", top {len(result['shared_indicators'])} shown" if len(result["shared_indicators"]) < \
        summary["shared_total"] else ""
    lines += ["", f"Shared indicators ({summary['shared_total']} on {summary['min_hosts']}+ hosts{shown}; "
              "flagged: the record is evidence of a finding on that host)",
              f"{'kind':<20} {'hosts':>5} {'flagged':>7} {'max':>4}  {'value':<50}  hosts"]
    for s in result["shared_indicators"]:
        keys = s.get("host_keys") or []
        listed = ", ".join(keys[:3]) + (f" +{len(keys) - 3}" if len(keys) > 3 else "")
        lines.append(f"{_cut(s['kind'], 20):<20} {s['hosts']:>5} {s['flagged_hosts']:>7} "
                     f"{_cut(s.get('max_score'), 4):>4}  {_cut(s['value'], 50):<50}  {_cut(listed, 90)}")
    if not result["shared_indicators"]:
        lines.append("(none)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triagent")
    add_rank_arguments(parser.add_subparsers(dest="command", required=True))
    return run_rank(parser.parse_args(["rank", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    raise SystemExit(main())
