"""Findings from a bundle's own records, each with evidence pointers (bundle, member and line).

Host-side checks over the live snapshot: deleted or memfd executables, processes running from
world-writable places, library preloading, modules hidden from /proc/modules or loaded from outside the
kernel's module tree, listening sockets. Cross-views of the memory image (volatility3 rows of this
analysis) against the live snapshot: processes, modules and listeners in memory that the live view did
not show, and shell commands in memory that no history file holds. Live facts come first and memory
later, so the artifacts' UTC start times (custody.json) decide whether a difference is explained by a
process that started after the snapshot."""

from __future__ import annotations

import datetime as _dt
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from agent.bundle.reader import (
    CUSTODY_NAME,
    JSON_CAP,
    LINE_CAP,
    READ_CHUNK,
    BundleView,
    iter_lines,
    loads_bounded,
    quoted,
    rows,
    stream_members,
    stream_rows,
)
from collectors.base import Record

WRITABLE_PLACES = ("/tmp", "/dev/shm", "/var/tmp", "/run/shm", "/dev/mqueue")


Evidence = tuple[str, int]  # (member, line) in the source bundle; memory rows say "analysis"
SLACK_S = 2.0  # clock granularity between a process's start time and an artifact's start time


# A check says what it saw (its kind, facts and evidence); how bad that is, the rules of specs/rules say
# (`source: findings`, by kind and facts), in that one place. Until a rule grades it, a check is information:
# one no rule covers is kept with this severity (a listener on a common port).
UNGRADED = "info"


def _finding(kind: str, summary: str, member: str, line: int, **facts: Any) -> Record:
    return _found(kind, summary, [("source", member, line)], **facts)


def _found(kind: str, summary: str, evidence: Iterable[tuple[str, str, int]], **facts: Any) -> Record:
    return Record("findings", {"kind": kind, "severity": UNGRADED, "summary": summary,
                               "evidence": [{"bundle": b, "member": m, "line": n} for b, m, n in evidence], **facts})


def host_findings(tar: BundleView) -> Iterator[Record]:
    for member, line, p in stream_rows(tar, "processes"):
        exe, pid, name = p.get("exe") or "", p.get("pid"), p.get("name")
        if p.get("exe_origin") == "/memfd" or exe.startswith("/memfd:"):
            yield _finding("memfd_executable", f"pid {pid} ({name}) runs from an anonymous memfd",
                           member, line, pid=pid, exe=exe, exe_sha256=p.get("exe_sha256"))
        elif p.get("exe_deleted"):
            yield _finding("deleted_executable", f"pid {pid} ({name}) runs a deleted executable {exe}",
                           member, line, pid=pid, exe=exe, exe_sha256=p.get("exe_sha256"))
        if exe.startswith(tuple(place + "/" for place in WRITABLE_PLACES)):
            yield _finding("writable_place_executable", f"pid {pid} ({name}) runs from {exe}",
                           member, line, pid=pid, exe=exe, exe_sha256=p.get("exe_sha256"),
                           memory_question=f"what pid {pid} ({name}) running from {exe} is: its code, "
                                           "mappings, sockets and command history")
    for member, line, r in stream_rows(tar, "preload"):
        if r.get("kind") == "ld.so.preload" and r.get("libraries"):
            yield _finding("ld_so_preload", "/etc/ld.so.preload loads " +
                           ", ".join(lib["path"] for lib in r["libraries"]), member, line,
                           libraries=r["libraries"])
        elif r.get("kind") == "process" and r.get("finding"):
            yield _finding("ld_preload_environment", f"pid {r.get('pid')} ({r.get('comm')}) has "
                           f"{', '.join(sorted(r.get('environment', {})))} set", member, line,
                           pid=r.get("pid"), environment=r.get("environment"),
                           memory_question=f"which library pid {r.get('pid')} ({r.get('comm')}) preloads and "
                                           "whether it hooks the C library")
    for member, line, m in stream_rows(tar, "sys_modules"):
        if m.get("hidden_from_proc_modules"):
            yield _finding("module_hidden_from_proc_modules",
                           f"module {m.get('name')} is in /sys/module but not in /proc/modules", member, line,
                           module=m.get("name"))
    yield from _login_log_tampering(tar)
    for member, line, m in stream_rows(tar, "modules"):
        name = m.get("name")
        if "installed_file" in m and not m["installed_file"]:
            where = m.get("module_tree") or "the kernel's module tree"
            missing = "" if m.get("module_tree_present") else " (the tree itself is missing)"
            yield _finding("module_not_installed",
                           f"module {name} is loaded but is not in {where}{missing}: loaded from elsewhere",
                           member, line, module=name, taint=m.get("taint"),
                           module_tree_present=bool(m.get("module_tree_present")))
        elif m.get("unsigned") or m.get("out_of_tree"):
            yield _finding("module_unsigned_or_out_of_tree",
                           f"module {name} taints the kernel ({m.get('taint')}): unsigned or out of tree",
                           member, line, module=name, taint=m.get("taint"))


def _login_log_tampering(tar: BundleView) -> Iterator[Record]:
    """wtmp/btmp only grow, in time order: a zeroed record between two others (what wtmp cleaners
    leave) or time running backwards without a clock-change record means the file was edited."""
    for stream in ("wtmp", "btmp"):
        previous: dict[str, tuple[int, float | None, str, str, int]] = {}
        for member, line, r in stream_rows(tar, stream):
            source, index, when = r.get("source"), r.get("index"), _time(r.get("time_utc"))
            if not isinstance(index, int):
                continue
            last = previous.get(source)
            if last is not None:
                gap = index - last[0] - 1
                if gap > 0:
                    yield _found("login_log_tampering",
                                 f"{source}: {gap} zeroed record(s) between records {last[0]} and {index} "
                                 "(entries wiped)", [("source", last[3], last[4]), ("source", member, line)],
                                 log=source, zeroed=gap)
                clock_change = r.get("type") in ("NEW_TIME", "OLD_TIME") or last[2] in ("NEW_TIME", "OLD_TIME")
                if when is not None and last[1] is not None and when < last[1] - 300 and not clock_change:
                    yield _found("login_log_tampering",
                                 f"{source}: record {index} is {int(last[1] - when)} s older than record {last[0]} "
                                 "before it (edited, or the clock was set back)",
                                 [("source", last[3], last[4]), ("source", member, line)], log=source)
            previous[source] = (index, when if when is not None else (last[1] if last else None),
                                str(r.get("type")), member, line)


def _time(value: Any) -> float | None:
    if not value:
        return None
    try:
        moment = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)).timestamp()


def _artifact_times(tar: BundleView) -> dict[str, tuple[float | None, float | None]]:
    try:
        custody = loads_bounded(tar.extractfile(CUSTODY_NAME).read(JSON_CAP))  # type: ignore[union-attr]
    except (KeyError, AttributeError, ValueError):
        return {}
    artifacts = custody.get("artifacts") if isinstance(custody, dict) else None
    return {a["name"]: (_time(a.get("started_utc")), _time(a.get("ended_utc")))
            for a in artifacts if isinstance(a, dict) and isinstance(a.get("name"), str)} \
        if isinstance(artifacts, list) else {}


KEEP_BUDGET = 64 << 20  # compressed bytes of this analysis's own records kept in memory for the steps after it


class AnalysisRows:
    """The records this analysis wrote (``volatility.<plugin>``, ``dissect.<plugin>``), member by member as
    the analysis bundle holds them: what the parsers yielded after the redaction gate, with the member
    names and line numbers of the bundle (a stream split into ``.partNNN`` members is read as such), so
    the evidence pointers of the cross-views and rules point at the very line. The analysis bundle is one
    gzip stream still being written when the steps run, so it cannot be read back; the members are kept
    here instead, zlib-compressed, within KEEP_BUDGET (a member beyond it is named in ``problems``).
    Reads through agent/bundle/reader.py's line and record parsers; ``AnalysisRows()`` holds nothing
    (a bundle analysed without a memory image or a parser run)."""

    def __init__(self, members: dict[str, bytes] | None = None, budget: int = KEEP_BUDGET):
        self.budget = budget
        self.kept = 0
        self.problems: list[str] = []
        self._members: dict[str, bytes] = {}
        for name, data in (members or {}).items():
            self.add(name, data)

    def add(self, name: str, data: bytes) -> None:
        """Keep one record-stream member, as written."""
        packed = zlib.compress(data, 1)
        if self.kept + len(packed) > self.budget:
            self.problems.append(f"member {quoted(name)}: beyond the {self.budget >> 20} MiB of this analysis's "
                                 "records kept for the cross-views and rules; not read by them")
            return
        self._members[name] = packed
        self.kept += len(packed)

    def stream_rows(self, stream: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """(member, line, record) of one stream, its parts in order (as reader.stream_rows reads a bundle)."""
        for name, _ in stream_members(self._members, stream):
            for row in rows(iter_lines(_inflate(self._members[name]), LINE_CAP)):
                if row.record is not None:
                    yield name, row.number, row.record

    def __call__(self, plugin: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
        return self.stream_rows(f"volatility.{plugin}")

    def has(self, plugin: str) -> bool:
        return bool(stream_members(self._members, f"volatility.{plugin}"))




def _inflate(packed: bytes) -> Iterator[bytes]:
    """A kept member's bytes in chunks of at most READ_CHUNK: never the whole member at once."""
    inflater = zlib.decompressobj()
    data = packed
    while data:
        yield inflater.decompress(data, READ_CHUNK)
        data = inflater.unconsumed_tail
    yield inflater.flush()


def memory_findings(tar: BundleView, memory: AnalysisRows) -> Iterator[Record]:
    """Cross-views of the memory image against the live snapshot in the source bundle."""
    times = _artifact_times(tar)
    yield from _process_crossview(tar, memory, times.get("processes", (None, None))[0])
    yield from _module_crossview(tar, memory)
    yield from _listeners(tar, memory, times.get("network.connections", (None, None))[0])
    yield from _shell_history_crossview(tar, memory)


def _process_crossview(tar: BundleView, memory: AnalysisRows, snapshot: float | None) -> Iterator[Record]:
    if not (memory.has("linux.pslist.PsList") or memory.has("linux.psscan.PsScan")):
        return
    live = {p.get("pid"): (m, n, p) for m, n, p in stream_rows(tar, "processes")}
    if not live:
        return
    listed: set[int] = set()
    for member, line, row in memory("linux.pslist.PsList"):
        pid, comm = row.get("PID"), row.get("COMM")
        if not isinstance(pid, int) or pid == 0:
            continue
        listed.add(pid)
        if pid in live:
            continue
        started = _time(row.get("CREATION TIME"))
        if snapshot is not None and started is not None and started > snapshot - SLACK_S:
            continue  # it started after the live snapshot was taken: nothing hid it
        when = f"started {row.get('CREATION TIME')}, before the live snapshot" if started else "start time unknown"
        yield _found("process_hidden_from_live_view",
                     f"pid {pid} ({comm}) is in memory (linux.pslist) but not in the live process list ({when})",
                     [("analysis", member, line)], pid=pid, comm=comm, ppid=row.get("PPID"),
                     creation_time=row.get("CREATION TIME"))
    seen: set[int] = set()
    for member, line, row in memory("linux.psscan.PsScan"):
        pid, comm = row.get("PID"), row.get("COMM")
        if not isinstance(pid, int) or pid == 0 or pid in listed or pid in live or pid in seen:
            continue
        if row.get("EXIT_STATE") not in (None, "", "TASK_RUNNING", "0"):
            continue  # a task that has exited leaves its structure behind for the scan to find
        seen.add(pid)
        yield _found("process_unlinked_from_task_list",
                     f"pid {pid} ({comm}) is found by scanning memory (linux.psscan) but neither in the kernel's "
                     "task list nor in the live process list", [("analysis", member, line)],
                     pid=pid, comm=comm, ppid=row.get("PPID"))


def _module_crossview(tar: BundleView, memory: AnalysisRows) -> Iterator[Record]:
    live = {m.get("name") for _, _, m in stream_rows(tar, "modules")}
    if live:  # with no /proc/modules rows at all there is nothing to compare against
        for member, line, row in memory("linux.lsmod.Lsmod"):
            name = row.get("Module Name")
            if name and name not in live:
                yield _found("module_in_memory_not_in_proc_modules",
                             f"module {name} is in the kernel's module list in memory but not in /proc/modules",
                             [("analysis", member, line)], module=name, taints=row.get("Taints"))
    for member, line, row in memory("linux.malware.hidden_modules.Hidden_modules"):
        name = row.get("Module Name")
        yield _found("module_hidden_in_memory",
                     f"module {name} is in memory but unlinked from the module list (linux.malware.hidden_modules)",
                     [("analysis", member, line)], module=name, offset=row.get("Offset"))


def _port(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _listeners(tar: BundleView, memory: AnalysisRows, snapshot: float | None) -> Iterator[Record]:
    """Every listening socket, named once per (protocol, port) with its owners; those memory shows in a
    namespace the live view read, but /proc/net did not, are hidden listeners."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    netns_read: set[Any] = set()
    for member, line, c in stream_rows(tar, "connections"):
        netns_read.add(c.get("netns"))
        if not c.get("listening") or c.get("proto") not in ("tcp", "udp", "tcp6", "udp6"):
            continue
        key = (c["proto"].rstrip("6"), int(c.get("local_port") or 0))
        entry = seen.setdefault(key, {"live": True, "memory": False, "owners": set(), "evidence": []})
        entry["evidence"].append(("source", member, line))
        for owner in c.get("owners") or []:
            entry["owners"].add(f"{owner.get('pid')} {owner.get('name') or owner.get('comm') or ''}".strip())
    starts = {p.get("pid"): _time(p.get("start_time_utc")) for _, _, p in stream_rows(tar, "processes")}
    for member, line, row in memory("linux.sockstat.Sockstat"):
        proto, port = str(row.get("Proto") or "").lower(), _port(row.get("Source Port"))
        state = str(row.get("State") or "")
        bound_udp = proto == "udp" and _port(row.get("Destination Port")) in (0, None) and state != "ESTABLISHED"
        if port is None or proto not in ("tcp", "udp") or not (state == "LISTEN" or bound_udp):
            continue
        entry = seen.setdefault((proto, port), {"live": False, "memory": False, "owners": set(), "evidence": []})
        entry["memory"] = True
        entry["evidence"].append(("analysis", member, line))
        entry["owners"].add(f"{row.get('PID')} {row.get('Process Name') or ''}".strip())
        entry.setdefault("netns", set()).add(row.get("NetNS"))
        entry.setdefault("owner_pids", set()).add(row.get("PID"))
    for (proto, port), entry in sorted(seen.items()):
        owners = ", ".join(sorted(entry["owners"])) or "owner unknown"
        facts = {"proto": proto, "port": port, "owners": sorted(entry["owners"]),
                 "seen_live": entry["live"], "seen_in_memory": entry["memory"]}
        # an owner that already ran at the snapshot rules out "opened after /proc/net was read"
        early = any(starts.get(pid) is not None and snapshot is not None and starts[pid] < snapshot - SLACK_S
                    for pid in entry.get("owner_pids", ()))
        if entry["memory"] and not entry["live"] and netns_read & entry.get("netns", set()) and early:
            yield _found("listener_hidden_from_proc_net",
                         f"{proto}/{port} listens in memory ({owners}) but is absent from /proc/net",
                         entry["evidence"][:10], **facts)
            continue
        where = " and ".join(w for w, on in (("live", entry["live"]), ("in memory", entry["memory"])) if on)
        yield _found("listening_socket",
                     f"{proto}/{port} listens ({owners}), seen {where}", entry["evidence"][:10], **facts)


HISTORY_OFF = {"HISTFILE": {"/dev/null", ""}, "HISTSIZE": {"0"}, "HISTFILESIZE": {"0"}}


def _shell_history_crossview(tar: BundleView, memory: AnalysisRows) -> Iterator[Record]:
    if not memory.has("linux.bash.Bash"):
        return
    on_disk = {str(h.get("command") or "").strip() for _, _, h in stream_rows(tar, "histories")}
    disabled: dict[int, list[tuple[str, str, int, str]]] = {}
    for member, line, row in memory("linux.envars.Envars"):
        key, value = row.get("KEY"), str(row.get("VALUE") or "")
        if key in HISTORY_OFF and value in HISTORY_OFF[key]:
            disabled.setdefault(row.get("PID"), []).append(("analysis", member, line, f"{key}={value}"))
    seen: set[tuple[Any, str]] = set()
    for member, line, row in memory("linux.bash.Bash"):
        pid, command = row.get("PID"), str(row.get("Command") or "").strip()
        if not command or (pid, command) in seen or command in on_disk:
            continue
        seen.add((pid, command))
        yield _found("shell_command_only_in_memory",
                     f"pid {pid} ({row.get('Process')}) ran `{command[:200]}` at {row.get('CommandTime')}; no history "
                     "file on disk holds it (history cleared, disabled, or not yet written by a live shell)",
                     [("analysis", member, line)], pid=pid, command=command, command_time=row.get("CommandTime"))
    for pid, settings in sorted(disabled.items(), key=lambda kv: str(kv[0])):
        yield _found("shell_history_disabled",
                     f"pid {pid} runs with {', '.join(s[3] for s in settings)}: its history is never written",
                     [s[:3] for s in settings], pid=pid, settings=[s[3] for s in settings])
