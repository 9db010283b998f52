"""triagent timeline BUNDLE [--analysis A]: every timestamped record of a bundle (and of its analysis
bundle) as one UTC-sorted timeline, for Timesketch (its JSONL import format), mactime (a bodyfile) or
a spreadsheet (CSV).

Each event keeps a pointer (bundle, member, line) back to the record it came from, so a responder can
go from a row to the exact evidence; raw file copies are pointed at by their member with line 0, as the
findings do. Times are stored as integer microseconds since the epoch, UTC. A record whose time is
missing is skipped and counted as "unknown"; one whose time cannot be read, or lies outside
1970..2999, is skipped and counted as "garbage": an attacker writes these files, so nothing in them may
stop the timeline.

Events are held in memory only to sort them; each is a slotted object with interned strings and a
message capped at MESSAGE_LIMIT characters (the pointer leads to the full record)."""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from agent.bundle.reader import (
    CUSTODY_NAME,
    JSON_CAP,
    LINE_CAP,
    MANIFEST_CAP,
    MANIFEST_NAME,
    VERDICT_NAME,
    BundleError,
    BundleReader,
    Manifest,
    dumps,
    is_regular,
    name_problem,
    quoted,
)
from agent.bundle.reader import shown as _inert
from agent.engine.plan import StreamSpec, load_streams, stream_spec

FORMATS = ("timesketch", "bodyfile", "csv")
MESSAGE_LIMIT = 4096
MAX_YEAR = 2999  # a later "time" in a history or log line is written by someone, not by a clock
EVENT_BUDGET = 128 << 20  # estimated memory of the events held to sort them; past it the timeline is cut
MACB = ("Last Access Time", "Content Modification Time", "Metadata Modification Time", "Creation Time")
A, M, C, B = range(4)

# dissect.target plugins whose records our own collectors already give (with better parsing): their
# events would only repeat ours, so they are used only when our stream is absent.
DISSECT_DUPLICATES = {
    "commandhistory": "histories", "wtmp": "wtmp", "btmp": "btmp", "lastlog": "lastlog",
    "ssh.authorized_keys": "ssh_keys", "ssh.private_keys": "ssh_private_keys", "ssh.public_keys": "ssh_keys",
    "suid_binaries": "suid", "users": "users", "passwords": "shadow",
}
DISSECT_DESC = {"linux/log/auth": "Auth Log", "linux/log/messages": "Syslog", "linux/log/journal": "Journal Entry",
                "linux/log/audit": "Audit Log", "unix/packagemanager/log": "Package Manager Log",
                "unix/history": "Command Executed", "linux/log/wtmp": "Login Record", "linux/log/btmp": "Failed Login",
                "linux/log/lastlog": "Last Login"}
# pstree repeats pslist; psscan repeats it for every task still linked: one event per (pid, time)
VOLATILITY_PROCESS_PLUGINS = ("linux.pslist.PsList", "linux.pstree.PsTree", "linux.psscan.PsScan")
UTMP_DESC = {"BOOT_TIME": "System Boot", "USER_PROCESS": "Login", "DEAD_PROCESS": "Logout",
             "LOGIN_PROCESS": "Login Prompt", "INIT_PROCESS": "Init Process", "RUN_LVL": "Runlevel Change",
             "NEW_TIME": "Clock Change (new time)", "OLD_TIME": "Clock Change (old time)"}


@dataclass(slots=True)
class Event:
    us: int  # microseconds since the epoch, UTC
    desc: str  # timestamp_desc, Timesketch's name for what the time means
    stream: str
    bundle: str  # "source" | "analysis"
    member: str
    line: int  # 1-based line in a JSON Lines member; 0: the member as a whole
    message: str
    facts: dict[str, Any] | None = None
    macb: int | None = None  # for file times: which bodyfile column this time is
    file: tuple[str, int, str, int, int, int] | None = None  # name, inode, mode, uid, gid, size

    @property
    def datetime(self) -> str:
        return iso(self.us)

    @property
    def pointer(self) -> str:
        return f"{self.bundle}:{self.member}:{self.line}"


@dataclass
class Stats:
    events: int = 0
    unknown: Counter[str] = field(default_factory=Counter)  # stream -> records without a time
    garbage: Counter[str] = field(default_factory=Counter)  # stream -> records whose time could not be used
    host: str | None = None
    members: int = 0
    problems: list[str] = field(default_factory=list)  # refused members, cut lines, a cut timeline
    cut: int = 0  # events left out past EVENT_BUDGET
    # "source" | "analysis" -> the bundle's file name and SHA-256 (the whole file's, hashed as it is read)
    bundles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(text)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "host": self.host, "skipped_unknown": sum(self.unknown.values()),
                "skipped_garbage": sum(self.garbage.values()), "garbage_by_stream": dict(self.garbage),
                "events_cut": self.cut, "bundles": self.bundles, "problems": self.problems[:20],
                "problem_count": len(self.problems)}


class _Garbage(ValueError):
    """A time that is there but cannot be used."""


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def iso(us: int) -> str:
    """Microseconds since the epoch as ISO 8601 UTC (``2026-01-02T03:04:05.000006+00:00``)."""
    return (_EPOCH + _dt.timedelta(microseconds=us)).isoformat(timespec="microseconds")


def to_us(value: Any, unit: str = "auto") -> int | None:
    """A time as microseconds since the epoch: ISO 8601 text (naive means UTC), or a number of
    seconds (``unit="s"``) or nanoseconds (``"ns"``). None for a missing time (None, "", 0);
    raises _Garbage for anything else that is not a plausible time."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise _Garbage(value)
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise _Garbage(value)
        if unit == "ns":
            us = int(value) // 1000
        elif isinstance(value, int):
            us = value * 1_000_000
        else:
            us = round(value * 1_000_000)
    elif isinstance(value, str):
        if unit in ("s", "ns") and value.strip().lstrip("-").isdigit():
            return to_us(int(value), unit)
        try:
            moment = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _Garbage(value) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_dt.UTC)
        try:
            delta = moment - _EPOCH
        except OverflowError:
            raise _Garbage(value) from None
        us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    else:
        raise _Garbage(value)
    if us <= 0 or us >= _year_us(MAX_YEAR + 1):
        raise _Garbage(value)
    return us


def _year_us(year: int) -> int:
    delta = _dt.datetime(year, 1, 1, tzinfo=_dt.UTC) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000


# --- extractors: one record -> its timed facts -------------------------------------------------------
# Which fields of a record hold a time, and how each is read, is declared beside the stream's producer
# (specs/artifacts/*.toml, [[artifact.streams]] time = [...], agent.engine.plan.StreamSpec). What the
# timeline knows here is only how to say a record well: a formatter per stream gives its message, facts,
# bodyfile entry, and a label when the record itself decides it (a utmp record's type); a declared stream
# with time fields and no formatter still gives events, with a generic message.
# An extractor yields (value, unit, desc, message, facts, macb, file); the engine parses the value.

Timed = tuple[Any, str, str, str, dict[str, Any] | None, int | None, tuple | None]
Extractor = Callable[[dict[str, Any], str], Iterator[Timed]]
# (message, facts, file or None, label or None)
Said = tuple[str, dict[str, Any] | None, tuple[str, int, str, int, int, int] | None, str | None]
Formatter = Callable[[dict[str, Any], str], Said]


def _short(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _facts(rec: dict[str, Any], *keys: str) -> dict[str, Any] | None:
    out = {k: rec[k] for k in keys if rec.get(k) not in (None, "", [])}
    return out or None


def _mode_string(mode: Any, kind: str = "r") -> str:
    """A mode as TSK writes it in a bodyfile: name type / meta type and permissions (``r/rrw-r--r--``)."""
    if not isinstance(mode, int):
        try:
            mode = int(str(mode), 8)
        except ValueError:
            return f"{kind}/{kind}---------"
    return f"{kind}/{kind}{stat.filemode(mode)[1:]}"


def _macb(time_field: str) -> int | None:
    """The bodyfile column a file time field is (``mtime``, ``file_mtime_ns``, ``ctime_utc``...), or None."""
    name = time_field.removeprefix("file_")
    for prefix, column in (("atime", A), ("mtime", M), ("ctime", C), ("crtime", B), ("btime", B), ("birth", B)):
        if name.startswith(prefix):
            return column
    return None


def _processes(r: dict[str, Any], stream: str) -> Said:
    command = _short(r.get("cmdline")) or r.get("name") or ""
    return (f"pid {r.get('pid')} ({r.get('name')}) started as {r.get('user')}: {command}",
            _facts(r, "pid", "ppid", "user", "exe"), None, None)


def _utmp(r: dict[str, Any], stream: str) -> Said:
    kind = str(r.get("type"))
    desc = "Failed Login" if stream == "btmp" else UTMP_DESC.get(kind, f"utmp {kind}")
    where = f" from {r.get('host')}" if r.get("host") else ""
    return (f"{stream} {kind} {r.get('user') or '-'} on {r.get('line')}{where}",
            _facts(r, "user", "pid", "host", "address", "source"), None, desc)


def _lastlog(r: dict[str, Any], stream: str) -> Said:
    return (f"lastlog: {r.get('user') or r.get('uid')} last logged in on {r.get('line')} from {r.get('host') or '-'}",
            _facts(r, "user", "uid", "host"), None, None)


def _histories(r: dict[str, Any], stream: str) -> Said:
    return (f"{r.get('user')} ({r.get('kind') or r.get('shell')}): {r.get('command')}",
            _facts(r, "user", "uid", "path", "shell"), None, None)


def _ssh_keys(r: dict[str, Any], stream: str) -> Said:
    what = r.get("kind") or ("private key" if stream == "ssh_private_keys" else "key")
    path = str(r.get("path"))
    message = f"{what} {path} modified: {r.get('key_type')} {r.get('fingerprint')} {r.get('comment') or ''}".rstrip()
    if r.get("options_text"):
        message += f" [options: {r['options_text']}]"
    file = (f"{path} ({r.get('fingerprint')})", 0, _mode_string(r.get("file_mode")), int(r.get("file_uid") or 0),
            0, int(r.get("size") or 0))
    return message, _facts(r, "user", "path", "fingerprint"), file, None


def _suid(r: dict[str, Any], stream: str) -> Said:
    path = str(r.get("path"))
    file = (path, int(r.get("inode") or 0), _mode_string(r.get("mode")), int(r.get("uid") or 0),
            int(r.get("gid") or 0), int(r.get("size") or 0))
    return f"set-id file {path} (mode {r.get('mode')})", _facts(r, "path", "mode", "sha256"), file, None


def _bodyfile(r: dict[str, Any], stream: str) -> Said:
    name = str(r.get("name"))
    if r.get("deleted"):
        name += " (deleted-realloc)" if r.get("realloc") else " (deleted)"
    mode = str(r.get("mode_as_string") or "-/----------")
    file = (name, int(r.get("inode") or 0), mode, int(r.get("uid") or 0), int(r.get("gid") or 0),
            int(r.get("size") or 0))
    return f"{name} (raw filesystem)", _facts(r, "inode", "deleted"), file, None


def _system(r: dict[str, Any], stream: str) -> Said:
    return f"kernel {r.get('kernel_release')} booted (btime)", _facts(r, "boot_id"), None, None


GENERIC_FIELDS = 12  # scalar fields a generic message shows


def _generic(r: dict[str, Any], stream: str) -> Said:
    """A record of a declared stream the timeline has no formatter for: its stream, kind and path-like
    fields first, then other scalar fields (the event's pointer leads to the whole record)."""
    first = [k for k in ("kind", "type", "path", "name", "user", "command", "message") if k in r]
    rest = [k for k in r if k not in first and not k.startswith("_")]
    shown_fields = []
    for key in first + rest:
        value = r[key]
        if value in (None, "", [], {}) or isinstance(value, (dict, list)) or key.endswith(("_utc", "_ns")):
            continue
        shown_fields.append(f"{key}={value}")
        if len(shown_fields) >= GENERIC_FIELDS:
            break
    return f"{stream}: " + ", ".join(shown_fields), _facts(r, "path", "pid", "user"), None, None


FORMATTERS: dict[str, Formatter] = {
    "processes": _processes, "sessions": _utmp, "wtmp": _utmp, "btmp": _utmp, "lastlog": _lastlog,
    "histories": _histories, "ssh_keys": _ssh_keys, "ssh_private_keys": _ssh_keys, "suid": _suid,
    "bodyfile": _bodyfile, "system": _system,
}


def declared_extractor(spec: StreamSpec, formatter: Formatter = _generic) -> Extractor | None:
    """The extractor of a declared stream: one event per declared time field a record holds, said by
    ``formatter``; None when the stream declares no time field."""
    if not spec.time:
        return None
    fields = [(name, spec.unit(name), _macb(name), spec.time_desc.get(name)) for name in spec.time]

    def extract(r: dict[str, Any], stream: str) -> Iterator[Timed]:
        if all(r.get(name) in (None, "", 0) for name, _, _, _ in fields):
            for name, unit, _, _ in fields:  # counted as unknown, as before: the engine sees no time
                yield r.get(name), unit, "", "", None, None, None
            return
        message, facts, file, label = formatter(r, stream)
        for name, unit, macb, desc in fields:
            column = macb if file is not None else None
            text = label or desc or (MACB[macb] if macb is not None else spec.label(name))
            yield r.get(name), unit, text, message, facts, column, file
    return extract


def _dissect_message(r: dict[str, Any]) -> str:
    parts = []
    if r.get("service"):
        parts.append(f"{r['service']}" + (f"[{r['pid']}]" if r.get("pid") is not None else "") + ":")
    for key in ("message", "command", "package_name", "name", "path", "ut_user", "ut_host"):
        value = r.get(key)
        if value not in (None, "") and not (key == "command" and r.get("message")):
            parts.append(_short(value))
        if key == "message" and value:
            break
    if r.get("source"):
        parts.append(f"({r['source']})")
    return " ".join(parts) or json.dumps({k: v for k, v in r.items() if not k.startswith("_")},
                                         ensure_ascii=False, default=str)[:MESSAGE_LIMIT]


def _dissect(r: dict[str, Any], stream: str) -> Iterator[Timed]:
    plugin = stream.split(".", 1)[1] if "." in stream else stream
    for key, value in r.items():
        if key == "ts":
            desc = DISSECT_DESC.get(str(r.get("_type")), f"{plugin} time")
            yield value, "auto", desc, _dissect_message(r), _facts(r, "hostname", "_type", "source"), None, None
        elif key.endswith("_ts") and not key.startswith("_"):
            desc = MACB[M] if key == "mtime_ts" else f"{plugin} {key}"
            yield (value, "auto", desc, _dissect_message(r), _facts(r, "hostname", "_type", "source", "path"),
                   None, None)


def _volatility_message(plugin: str, r: dict[str, Any]) -> str:
    pid = r.get("PID")
    name = r.get("COMM") or r.get("Process") or r.get("Process Name") or r.get("Name")
    if plugin == "linux.bash.Bash":
        return f"pid {pid} ({name}) ran: {r.get('Command')} (in memory)"
    if plugin in VOLATILITY_PROCESS_PLUGINS:
        return f"pid {pid} ({name}) created, ppid {r.get('PPID')} (in memory, {plugin.split('.')[1]})"
    fields = ", ".join(f"{k}={v}" for k, v in r.items() if not k.startswith("_") and v not in (None, ""))
    return f"{plugin}: {fields}"


def _volatility(r: dict[str, Any], stream: str) -> Iterator[Timed]:
    plugin = stream.split(".", 1)[1]
    for key, value in r.items():
        if "time" in key.lower() and isinstance(value, str):
            desc = {"CREATION TIME": "Process Start (memory)", "CommandTime": "Command Executed (memory)",
                    "EXIT TIME": "Process Exit (memory)"}.get(key, f"{plugin} {key}")
            yield (value, "auto", desc, _volatility_message(plugin, r),
                   _facts(r, "PID", "PPID", "COMM", "Process"), None, None)


def _extractor(stream: str, streams: dict[str, StreamSpec]) -> Extractor | None:
    if stream.startswith("dissect."):
        return _dissect  # dissect's records name their times themselves (ts, *_ts), plugin by plugin
    if stream.startswith("volatility."):
        # volatility's columns name them too ("... TIME", "CommandTime"); banners hold none
        return _volatility if stream != "volatility.banners" else None
    spec = stream_spec(stream, streams)
    if spec is None or not spec.timeline:
        return None
    return declared_extractor(spec, FORMATTERS.get(stream, _generic))


# --- reading bundles --------------------------------------------------------------------------------

class _Collector:
    def __init__(self, stats: Stats):
        self.stats = stats
        self.events: list[Event] = []
        self.deferred: dict[str, list[Event]] = {}  # dissect streams, kept until we know our own streams
        self.streams: dict[str, set[str]] = {"source": set(), "analysis": set()}
        self.custody: dict[str, dict[str, Any]] = {}
        self.findings: list[tuple[str, int, dict[str, Any]]] = []
        # pointer -> its earliest event time, for the findings' times: every analysis pointer, and only
        # the source pointers a finding names (the analysis is read first so these are known)
        self.first_time: dict[tuple[str, str, int], int] = {}
        self.wanted: set[tuple[str, str, int]] = set()
        self.process_seen: set[tuple[Any, int]] = set()
        self.specs = load_streams()  # which fields of each stream hold a time (specs/artifacts/*.toml)
        self.extractors: dict[str, Extractor | None] = {}
        self.cost = 0

    def add(self, out: list[Event], timed: Timed, stream: str, bundle: str, member: str, line: int) -> None:
        value, unit, desc, message, facts, macb, file = timed
        try:
            us = to_us(value, unit)
        except _Garbage:
            self.stats.garbage[stream] += 1
            return
        if us is None:
            self.stats.unknown[stream] += 1
            return
        if len(message) > MESSAGE_LIMIT:
            message = message[:MESSAGE_LIMIT] + "…"
        self.cost += 320 + len(message) + (120 * len(facts) if facts else 0) + (200 + len(file[0]) if file else 0)
        if self.cost > EVENT_BUDGET:
            if not self.stats.cut:
                self.stats.problem(f"timeline cut at {len(self.events) + sum(map(len, self.deferred.values()))} "
                                   f"events: the bundle holds more than {EVENT_BUDGET >> 20} MiB of events "
                                   f"(from {quoted(member)} line {line} on, events are left out)")
            self.stats.cut += 1
            return
        out.append(Event(us, sys.intern(desc), sys.intern(stream), bundle, sys.intern(member), line,
                         message, facts, macb, file))
        key = (bundle, member, line)
        if bundle == "analysis" or key in self.wanted:
            if key not in self.first_time or us < self.first_time[key]:
                self.first_time[key] = us

    def read(self, path: str, bundle: str) -> None:
        """One bounded pass over a bundle (agent/bundle/reader.py); refused members and cut lines are named in
        the stats' problems, and a bundle that cannot be read on ends the pass with a named problem."""
        reader = BundleReader(path, hash_file=True)  # every byte read is hashed: the bundle's SHA-256
        with reader:
            try:
                for member in reader.accepted():
                    if member.kind != "file":
                        continue
                    self.stats.members += 1
                    name = member.name
                    if name == MANIFEST_NAME:
                        self._manifest(member, bundle)
                    elif name in (CUSTODY_NAME, VERDICT_NAME):
                        try:
                            doc = member.json(JSON_CAP)
                        except ValueError as exc:
                            self.stats.problem(f"{bundle}: {exc}")
                            doc = None
                        if isinstance(doc, dict):
                            self.custody[f"{bundle}:{os.path.basename(name)}"] = doc
                    elif (stream := member.stream) is not None:
                        self._stream(member, stream, bundle)
            except BundleError as exc:
                self.stats.problem(f"{bundle}: {exc}")
            finally:
                for problem in reader.problems:
                    self.stats.problem(f"{bundle}: {problem}")
            # the rest of the file (the seal, or what a bundle that could not be read on still holds) is
            # hashed too: the SHA-256 is the whole file's, as `sha256sum` and the .sha256 side file give it
            reader.src.drain_file(1 << 62)
            digest = reader.src.file_sha256
            self.stats.bundles[bundle] = {"name": os.path.basename(path),
                                          "sha256": digest.hexdigest() if digest is not None else None}

    def _records(self, member: Any, bundle: str) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """(line number, record or None when the line is not a JSON object) of a JSON Lines member, through
        the reader's one record parser; a line cut at the line cap is named and skipped."""
        for number, _raw, cut, record in member.rows():
            if cut:
                self.stats.problem(f"{bundle}: {quoted(member.name)} line {number}: longer than {LINE_CAP} bytes, "
                                   "cut (not read)")
                continue
            yield number, record

    def _stream(self, member: Any, stream: str, bundle: str) -> None:
        self.streams[bundle].add(stream)
        if bundle == "analysis" and stream == "findings":
            for number, rec in self._records(member, bundle):
                if rec is not None:
                    self.findings.append((member.name, number, rec))
                    self.wanted.update((e.get("bundle"), e.get("member"), e.get("line"))
                                       for e in rec.get("evidence") or [] if isinstance(e, dict))
            return
        if stream not in self.extractors:
            self.extractors[stream] = _extractor(stream, self.specs)
        extract = self.extractors[stream]
        if extract is None:
            return
        out = self.deferred.setdefault(f"{bundle}:{stream}", []) if stream.startswith("dissect.") else self.events
        process_plugin = stream.removeprefix("volatility.") in VOLATILITY_PROCESS_PLUGINS
        for number, rec in self._records(member, bundle):
            if rec is None:
                self.stats.garbage[stream] += 1
                continue
            if process_plugin:
                key = (rec.get("PID"), hash(str(rec.get("CREATION TIME"))))
                if key in self.process_seen:
                    continue
                self.process_seen.add(key)
            try:
                for timed in extract(rec, stream):
                    self.add(out, timed, stream, bundle, member.name, number)
            except (TypeError, ValueError, AttributeError):  # a record of an unexpected shape costs only itself
                self.stats.garbage[stream] += 1

    def _manifest(self, member: Any, bundle: str) -> None:
        try:
            manifest = Manifest(member.read_all(MANIFEST_CAP))
            for entry in manifest.entries():
                self._manifest_entry(entry, bundle)
        except ValueError as exc:
            self.stats.garbage["manifest"] += 1
            self.stats.problem(f"{bundle}: {MANIFEST_NAME}: {exc}")

    def _manifest_entry(self, entry: Any, bundle: str) -> None:
        if not isinstance(entry, dict) or not str(entry.get("name", "")).startswith("fs/"):
            return
        if name_problem(os.fsencode(entry["name"])):  # the member it lists is refused: so is the entry
            return
        try:
            source = str(entry.get("source") or entry["name"].split("/", 2)[-1])
            kind = "l" if entry.get("type") == "symlink" else "r"
            mode = entry.get("mode") if isinstance(entry.get("mode"), int) else 0
            file = (source, 0, _mode_string(mode | (stat.S_IFLNK if kind == "l" else stat.S_IFREG), kind),
                    int(entry.get("uid") or 0), int(entry.get("gid") or 0),
                    int(entry.get("source_size") or entry.get("size") or 0))
        except (TypeError, ValueError, OverflowError):
            self.stats.garbage["manifest"] += 1
            return
        artifact = str(entry.get("artifact") or "files")
        facts = _facts(entry, "artifact", "sha256") or {}
        facts["path"] = source
        target = f" -> {entry['target']}" if entry.get("target") else ""
        stream = sys.intern(f"files.{artifact}" if not artifact.startswith("files") else artifact)
        for key, macb in (("atime_ns", A), ("mtime_ns", M), ("ctime_ns", C)):
            self.add(self.events, (entry.get(key), "ns", MACB[macb], f"{source}{target} (copied by {artifact})",
                                   facts, macb, file), stream, bundle, entry["name"], 0)

    def finish(self) -> list[Event]:
        for key, events in self.deferred.items():
            bundle, stream = key.split(":", 1)
            plugin = stream.removeprefix("dissect.")
            own = DISSECT_DUPLICATES.get(plugin)
            if own and own in self.streams["source"]:
                continue
            if bundle == "analysis" and stream in self.streams["source"]:
                continue  # the analysis re-ran dissect over the copies: the host's own run is closer to the truth
            self.events.extend(events)
        self.deferred.clear()
        self._custody_events()
        self._finding_events()
        self.events.sort(key=lambda e: (e.us, e.bundle != "source"))
        self.stats.events = len(self.events)
        return self.events

    def _custody_events(self) -> None:
        custody = self.custody.get("source:custody.json") or {}
        host = custody.get("host") if isinstance(custody.get("host"), dict) else {}
        self.stats.host = host.get("hostname") or host.get("hostname_file")
        for key, desc in (("started_utc", "Collection Start"), ("ended_utc", "Collection End")):
            self.add(self.events, (custody.get(key), "auto", desc, f"triagent {desc.lower()} "
                                   f"(profile {custody.get('profile')}, examiner {custody.get('examiner') or '-'})",
                                   _facts(custody, "case_id", "examiner"), None, None),
                     "custody", "source", CUSTODY_NAME, 0)

    def _finding_events(self) -> None:
        """A finding happens at its own time (a memory finding's command or creation time), else at the
        earliest time of the records it points at."""
        for member, number, f in self.findings:
            own = next((f[k] for k in ("command_time", "creation_time", "time_utc") if f.get(k)), None)
            value: Any = own
            unit = "auto"
            if value is None:
                times = [self.first_time.get((e.get("bundle"), e.get("member"), e.get("line")))
                         for e in f.get("evidence") or [] if isinstance(e, dict)]
                times = [t for t in times if t is not None]
                if not times:
                    self.stats.unknown["findings"] += 1
                    continue
                value, unit = min(times) * 1000, "ns"
            severity = str(f.get("severity") or "info")
            label = f.get("rule") or f.get("kind")
            facts = _facts(f, "severity", "rule", "kind", "title", "mitre", "pid")
            self.add(self.events, (value, unit, f"Finding ({severity})", f"[{severity}] {label}: {f.get('summary')}",
                                   facts, None, None), "findings", "analysis", member, number)


def collect_events(bundle: str, analysis: str | None = None, stats: Stats | None = None) -> list[Event]:
    """Every timed event of a bundle and its analysis bundle, sorted by time (stable: same-time events
    keep bundle order)."""
    stats = stats if stats is not None else Stats()
    collector = _Collector(stats)
    if analysis:
        collector.read(analysis, "analysis")
    collector.read(bundle, "source")
    return collector.finish()


# --- writers ----------------------------------------------------------------------------------------

Bundles = dict[str, dict[str, Any]]  # Stats.bundles


def _bundle_name(e: Event, bundles: Bundles | None) -> str:
    """The file name of the bundle an event comes from (its role, "source" or "analysis", when unknown)."""
    return str((bundles or {}).get(e.bundle, {}).get("name") or e.bundle)


def _bundle_sha256(e: Event, bundles: Bundles | None) -> str | None:
    return (bundles or {}).get(e.bundle, {}).get("sha256")


def _pointer(e: Event, bundles: Bundles | None) -> str:
    return f"{_bundle_name(e, bundles)}:{e.member}:{e.line}"


def _timesketch_row(e: Event, host: str | None, bundles: Bundles | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"message": e.message, "datetime": e.datetime, "timestamp": e.us,
                           "timestamp_desc": e.desc, "host": host, "stream": e.stream,
                           "data_type": f"triagent:{e.stream}", "evidence": _pointer(e, bundles),
                           "evidence_bundle": _bundle_name(e, bundles),
                           "evidence_bundle_sha256": _bundle_sha256(e, bundles), "evidence_role": e.bundle,
                           "evidence_member": e.member, "evidence_line": e.line}
    for key, value in (e.facts or {}).items():
        row.setdefault(key.lstrip("_").replace(" ", "_"), value)  # Timesketch refuses fields starting with "_"
    return row


_CSV_RISKY = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A spreadsheet would run a cell starting with = + - @ (or a tab or carriage return before one) as a
    formula; these strings come from the suspect host, so every text cell that starts so is kept as text
    with a leading quote (OWASP CSV injection advice)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return "'" + text if text.startswith(_CSV_RISKY) else text


CSV_HEADER = ["datetime", "timestamp", "timestamp_desc", "host", "stream", "message", "evidence_bundle",
              "evidence_bundle_sha256", "evidence_member", "evidence_line", "facts"]


_BODY_UNSAFE = re.compile("[|\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _body_name(name: Any) -> str:
    # mactime splits on "|" and reads one line per entry: neither may appear inside any field (a control
    # character would also reach the terminal mactime prints to)
    text = str(name).replace("\\", "\\\\")
    return _BODY_UNSAFE.sub(lambda m: "\\x7c" if m.group(0) == "|" else f"\\u{ord(m.group(0)):04x}", text)


def _bodyfile_lines(events: Iterable[Event], bundles: Bundles | None = None) -> Iterator[str]:
    """One line per file record with all its known times (what `fls -m` writes; mactime makes the
    per-time rows); every other event is its own line with its time in all four columns, as volatility's
    timeliner writes them."""
    groups: dict[tuple[str, str, int, str], list[Any]] = {}
    for e in events:
        if e.file is not None and e.macb is not None:
            key = (e.bundle, e.member, e.line, e.file[0])
            entry = groups.get(key)
            if entry is None:
                entry = groups[key] = [e.file, [0, 0, 0, 0]]
            entry[1][e.macb] = e.us // 1_000_000
        else:
            seconds = e.us // 1_000_000
            name = f"[{e.stream}] {e.desc}: {e.message} <{_pointer(e, bundles)}>"
            groups[(e.bundle, e.member, e.line, name)] = [(name, 0, "-/----------", 0, 0, 0), [seconds] * 4]
    for (_bundle, _member, _line, _name), (file, times) in groups.items():
        name, inode, mode, uid, gid, size = file
        yield "|".join(_body_name(field) for field in ["0", name, inode, mode, uid, gid, size, *times]) + "\n"


def write(events: Iterable[Event], fmt: str, out: TextIO, host: str | None = None,
          bundles: Bundles | None = None) -> None:
    """``bundles`` (Stats.bundles) names each event's bundle by its file name and SHA-256."""
    if fmt == "timesketch":
        for e in events:
            out.write(dumps(_timesketch_row(e, host, bundles), default=str) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for e in events:
            writer.writerow([_cell(e.datetime), e.us, _cell(e.desc), _cell(host or ""), _cell(e.stream),
                             _cell(e.message), _cell(_bundle_name(e, bundles)), _bundle_sha256(e, bundles) or "",
                             _cell(e.member), e.line,
                             _cell(e.facts) if e.facts else ""])
    elif fmt == "bodyfile":
        out.writelines(_bodyfile_lines(events, bundles))
    else:
        raise ValueError(f"unknown timeline format {fmt!r} (one of {', '.join(FORMATS)})")


def timeline(bundle: str, analysis: str | None, fmt: str, out: BinaryIO | TextIO,
             stats: Stats | None = None) -> int:
    """Write the timeline of ``bundle`` (and ``analysis``) to ``out`` in ``fmt``; returns the number of
    events. ``out`` may be binary (UTF-8 is written) or text."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown timeline format {fmt!r} (one of {', '.join(FORMATS)})")
    stats = stats if stats is not None else Stats()
    events = collect_events(bundle, analysis, stats)
    if _is_text(out):
        write(events, fmt, out, stats.host, stats.bundles)  # type: ignore[arg-type]
        return len(events)
    wrapper = io.TextIOWrapper(out, encoding="utf-8", errors="backslashreplace", newline="")  # type: ignore[arg-type]
    try:
        write(events, fmt, wrapper, stats.host, stats.bundles)
    finally:
        wrapper.flush()
        wrapper.detach()  # the caller owns ``out``: closing the wrapper would close it
    return len(events)


def _is_text(out: Any) -> bool:
    if isinstance(out, io.TextIOBase):
        return True
    if isinstance(out, (io.BufferedIOBase, io.RawIOBase)):
        return False
    try:
        out.write("")  # file-likes that are neither (tempfile wrappers): a binary one refuses str
    except TypeError:
        return False
    return True


def beside(bundle: str) -> str | None:
    """The analysis bundle `triagent analyze` writes beside a bundle, when it is there."""
    name = os.path.basename(bundle)
    for suffix in (".tar.gz", ".tar", ".tgz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    candidate = os.path.join(os.path.dirname(os.path.abspath(bundle)), name + ".analysis.tar.gz")
    return candidate if is_regular(candidate) else None  # found, not named: a regular file, not a link


# --- command line -----------------------------------------------------------------------------------

def add_timeline_arguments(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("timeline", help="every timestamped record of a bundle (and its analysis) as one "
                              "UTC timeline: Timesketch JSONL, mactime bodyfile or CSV")
    p.add_argument("bundle", help="a bundle made by collect")
    p.add_argument("--analysis", "-a", metavar="ANALYSIS", help="its analysis bundle (default: "
                   "NAME.analysis.tar.gz beside the bundle, when there is one)")
    p.add_argument("--format", "-f", choices=FORMATS, default="timesketch",
                   help="timesketch (JSONL for Timesketch's importer; default), bodyfile (for mactime -b), csv")
    p.add_argument("--output", "-o", default="-", metavar="DIR|-", help="folder for NAME.timeline.<jsonl|body|csv>, "
                   "or - for stdout (default); a path that is not a folder is still taken as the file")
    return p


def _output(args: argparse.Namespace) -> str:
    """-o DIR|- (agent/cli.py's one meaning): the file's path, or "-"."""
    from agent.cli import output_file

    name = os.path.basename(args.bundle)
    for suffix in (".age", ".gz", ".tar"):
        name = name.removesuffix(suffix)
    extension = {"timesketch": "jsonl", "bodyfile": "body", "csv": "csv"}[args.format]
    return output_file(args.output, f"{name}.timeline.{extension}") or "-"


def run_timeline(args: argparse.Namespace) -> int:
    for path in (args.bundle, args.analysis):
        if path and not os.path.isfile(path):
            print(f"triagent timeline: error: {_inert(repr(path))} is not a file", file=sys.stderr)
            return 2
    analysis = args.analysis or beside(args.bundle)
    args.output = _output(args)
    stats = Stats()
    try:
        if args.output == "-":
            count = timeline(args.bundle, analysis, args.format, sys.stdout.buffer, stats)
            sys.stdout.flush()
        else:
            partial = args.output + ".partial"
            with open(partial, "wb") as out:
                count = timeline(args.bundle, analysis, args.format, out, stats)
            os.replace(partial, args.output)
    except (OSError, BundleError) as exc:
        print(f"triagent timeline: error: cannot read the bundle: {_inert(exc)}", file=sys.stderr)
        return 3
    summary = stats.as_dict()
    summary.update({"format": args.format, "analysis": analysis, "output": args.output, "events": count})
    print(dumps(summary, default=str), file=sys.stderr)
    return 1 if stats.problems else 0
