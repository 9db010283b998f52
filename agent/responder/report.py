"""triagent report BUNDLE [--analysis A]: the one page a responder reads first.

One self-contained HTML file (inline CSS and a few lines of inline JavaScript; a Content-Security-Policy
that forbids loading anything, so it can be opened offline, mailed, attached to a ticket): the verdict on
top, the findings by severity with the records they point at, host and clock facts, custody and
integrity of both bundles, the timeline around each finding, and what could not be collected.

Every string that comes from a bundle is attacker-controlled (a command line, a file name, a log
line) and is HTML-escaped where it is written; none is ever placed in a script or a URL."""

from __future__ import annotations

import argparse
import bisect
import html
import json
import os
import re
import sys
import time
from collections import Counter
from typing import Any

from agent.bundle.reader import (
    CUSTODY_NAME,
    JSON_CAP,
    LINE_CAP,
    LOG_NAME,
    MANIFEST_CAP,
    MANIFEST_NAME,
    VERDICT_NAME,
    BundleError,
    BundleReader,
    Manifest,
    dumps,
    stream_of,
)
from agent.bundle.reader import shown as _inert
from agent.bundle.verify import verify
from agent.engine.plan import stream_spec
from agent.responder.timeline import Event, Stats, beside, collect_events, iso, to_us

SEVERITIES = ("critical", "high", "medium", "low", "info")
WINDOW_MINUTES = 10
WINDOW_EVENT_LIMIT = 250  # per merged window; the full timeline is `triagent timeline`
EVIDENCE_CHARS = 6000
LOG_LIMIT = 300
LOG_KEEP = 5000  # errors and warnings kept from a collection log (all are counted)
FINDINGS_KEEP = 5000
RECORDS_BUDGET = 32 << 20  # characters of cited records kept for the evidence boxes
RECORD_CHARS = 64 << 10
# streams whose first record the host section shows (system, clock, disk facts); findings are all kept
FACT_STREAMS = ("system", "clock", "disk")
DESCRIPTION_CHARS = 200  # of a stream's declared description beside each record cited
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


_HTML_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def e(value: Any) -> str:
    """HTML-escaped text of anything (quotes too: the same helper serves attribute values); control
    characters and bidirectional overrides are shown as ``\\u001b``, never passed to the page."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return html.escape(_HTML_CONTROL.sub(lambda m: f"\\u{ord(m.group(0)):04x}", value), quote=True)


# --- reading --------------------------------------------------------------------------------------

class _Bundle:
    """What the report needs from one bundle, read in one bounded pass (agent/bundle/reader.py): its custody,
    log, host facts, and the exact records the findings point at."""

    def __init__(self, path: str, wanted: set[tuple[str, int]]):
        self.path = path
        self.custody: dict[str, Any] = {}
        self.manifest: dict[str, dict[str, Any]] = {}  # the entries of the file copies the findings cite
        self.verdict: dict[str, Any] | None = None
        self.log: list[dict[str, Any]] = []  # errors and warnings (up to LOG_KEEP)
        self.log_levels: Counter[str] = Counter()
        self.first: dict[str, dict[str, Any]] = {}  # stream -> its first record (system, clock, disk)
        self.records: dict[tuple[str, int], str] = {}
        self.findings: list[tuple[str, int, dict[str, Any]]] = []
        self.problems: list[str] = []
        self.error: str | None = None
        self._kept = 0
        try:
            self._read(wanted)
        except (OSError, BundleError) as exc:
            self.error = f"cannot read {os.path.basename(path)}: {_inert(exc)}"

    def _read(self, wanted: set[tuple[str, int]]) -> None:
        members = {m for m, _ in wanted}
        copies = {m for m, line in wanted if line == 0}
        with BundleReader(self.path) as reader:
            try:
                for member in reader.accepted():
                    if member.kind != "file":
                        continue
                    self._member(member, wanted, members, copies)
            finally:
                self.problems[:0] = reader.problems

    def _problem(self, text: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(text)

    def _member(self, member: Any, wanted: set[tuple[str, int]], members: set[str], copies: set[str]) -> None:
        name = member.name
        if name in (CUSTODY_NAME, VERDICT_NAME):
            try:
                doc = member.json(JSON_CAP)
            except ValueError as exc:
                self._problem(f"{name}: {exc}")
                return
            if isinstance(doc, dict):
                if name == CUSTODY_NAME:
                    self.custody = doc
                else:
                    self.verdict = doc
            return
        if name == MANIFEST_NAME:
            if copies:
                try:
                    manifest = Manifest(member.read_all(MANIFEST_CAP))
                    for entry in manifest.entries():
                        if isinstance(entry, dict) and entry.get("name") in copies:
                            self.manifest[entry["name"]] = entry
                except ValueError as exc:
                    self._problem(f"{name}: {exc}")
            return
        wanted_here = name in members
        stream = member.stream
        keep = name == LOG_NAME or stream == "findings" or stream in FACT_STREAMS
        if not (keep or wanted_here):
            return
        for number, raw, cut, rec in member.rows(parse=keep):
            if cut:
                self._problem(f"{name} line {number}: longer than {LINE_CAP} bytes, cut (not read)")
            if wanted_here and (name, number) in wanted and self._kept < RECORDS_BUDGET:
                text = raw[:RECORD_CHARS].decode("utf-8", "backslashreplace")
                self.records[(name, number)] = text + ("…" if len(raw) > RECORD_CHARS or cut else "")
                self._kept += len(text)
            if rec is None:  # not kept, cut, or not a JSON object
                continue
            if name == LOG_NAME:
                level = str(rec.get("level"))
                self.log_levels[level] += 1
                if level in ("error", "warning") and len(self.log) < LOG_KEEP:
                    self.log.append(rec)
            elif stream == "findings":
                if len(self.findings) < FINDINGS_KEEP:
                    self.findings.append((name, number, rec))
                elif not any(p.startswith(f"{name}: more than") for p in self.problems):
                    self._problem(f"{name}: more than {FINDINGS_KEEP} findings; the rest not shown")
            else:
                self.first.setdefault(str(stream), rec)


def _findings_of(analysis: _Bundle | None, bundle: str, problems: list[str] | None = None
                 ) -> tuple[list[tuple[str, int, dict[str, Any]]], str, dict[str, Any] | None]:
    """The analysis's findings, or, when there is no analysis, the rules and host checks run here over the
    bundle by the very code `triagent rank` runs on a plain collection bundle (agent/responder/rank.py
    compute_findings: no memory image), with the verdict those rules give (what they could not read is
    added to ``problems``)."""
    if analysis is not None and not analysis.error:
        return analysis.findings, "analysis", None
    from agent.responder.rank import _engine, compute_findings, open_bundle

    found: list[dict[str, Any]] = []
    verdict: dict[str, Any] | None = None
    try:
        streams = _engine()["streams"]
        with open_bundle(bundle, lambda stream: stream in streams, hash_bytes=False) as tar:
            if tar.error:
                raise BundleError(tar.error)
            found, verdict, _ = compute_findings(tar)
        if problems is not None:
            problems += [f"rules: {p}" for p in tar.problems[:50]]
    except (OSError, BundleError, ValueError) as exc:
        if problems is not None:
            problems.append(f"rules: not run: {_inert(exc)}")
    return [("", 0, f) for f in found], "the rules run here, as `triagent rank` runs them (not analysed)", verdict


def _pointers(findings: list[tuple[str, int, dict[str, Any]]]) -> dict[str, set[tuple[str, int]]]:
    out: dict[str, set[tuple[str, int]]] = {"source": set(), "analysis": set()}
    for _, _, f in findings:
        for ev in f.get("evidence") or []:
            if isinstance(ev, dict) and ev.get("bundle") in out and isinstance(ev.get("line"), int):
                out[ev["bundle"]].add((str(ev.get("member")), ev["line"]))
    return out


# --- the page -------------------------------------------------------------------------------------

STYLE = """
:root{--crit:#7a0010;--high:#c0262d;--med:#c77700;--low:#2f6f9f;--info:#5f6b76;--ok:#1d7a3a;--bg:#f6f7f9}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:var(--bg);color:#1b1f24}main{max-width:1200px;margin:0 auto;padding:16px 20px 60px}
h1{font-size:20px;margin:8px 0 12px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d5db;
padding-bottom:4px}h3{font-size:15px;margin:14px 0 6px}nav a{margin-right:14px}
#verdict{border-radius:10px;padding:18px 22px;color:#fff;background:var(--info)}
#verdict[data-recommendation=yes]{background:var(--high)}#verdict[data-recommendation=no]{background:var(--ok)}
#verdict[data-recommendation=needs-memory]{background:var(--med)}
#verdict .big{font-size:34px;font-weight:700;letter-spacing:.5px}#verdict .score{font-size:20px;margin-left:12px}
#verdict ul{margin:8px 0 0 18px;padding:0}#verdict a{color:#fff}
#verdict .sev{outline:1px solid #fff}.counts span{display:inline-block;margin-right:10px}
table{border-collapse:collapse;width:100%;background:#fff}td,th{border:1px solid #dde1e6;padding:4px 6px;
vertical-align:top;text-align:left}th{background:#eef0f3;font-weight:600}
td.k{width:230px;color:#39424c;background:#fafbfc}
pre{white-space:pre-wrap;word-break:break-all;background:#0f1720;color:#e6edf3;padding:8px 10px;border-radius:6px;
margin:4px 0;max-height:300px;overflow:auto;font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.sev{display:inline-block;min-width:64px;text-align:center;border-radius:4px;color:#fff;padding:0 6px;
font-size:12px;font-weight:600;text-transform:uppercase}.sev-critical{background:var(--crit)}
.sev-high{background:var(--high)}.sev-medium{background:var(--med)}.sev-low{background:var(--low)}
.sev-info{background:var(--info)}.finding{background:#fff;border:1px solid #dde1e6;border-radius:8px;
padding:8px 12px;margin:8px 0}.finding .meta{color:#4a5560;font-size:12px}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--high);font-weight:600}.muted{color:#6a737d}
tr.hit td{background:#fff3cd}tr.is-finding td{background:#fde2e2;font-weight:600}
td.t{white-space:nowrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
td.msg,td.ptr{word-break:break-all}td.ptr{font-size:11px;color:#4a5560;max-width:260px}
.filter{margin:6px 0;padding:4px 8px;width:340px}
@page{margin:12mm}
@media print{
body{background:#fff;font-size:11px}main{max-width:none;padding:0}nav,.filter,input[type=checkbox],label{display:none}
pre{max-height:none;overflow:visible;white-space:pre-wrap;word-break:break-all;overflow-wrap:anywhere;
background:#fff;color:#000;border:1px solid #8a939c;break-inside:auto}
td,th,.meta,.muted,li,p{overflow-wrap:anywhere;word-break:break-word}td.msg,td.ptr{word-break:break-all}
td.ptr{max-width:none}td.t{white-space:normal}table{table-layout:auto}
h1,h2,h3{break-after:avoid}tr,.meta,.sev{break-inside:avoid}.finding{border-color:#8a939c}
#verdict,.sev,tr.hit td,tr.is-finding td{-webkit-print-color-adjust:exact;print-color-adjust:exact}
h2#custody,h2#timeline-section,h2#missing{break-before:page}
details::details-content{content-visibility:visible;display:block}details>summary{list-style:none}
}
"""

SCRIPT = """
(function(){
  "use strict";
  var input = document.getElementById("tl-filter");
  if (input) {
    input.addEventListener("input", function(){
      var q = input.value.toLowerCase();
      var rows = document.querySelectorAll("#timeline tbody tr");
      for (var i = 0; i < rows.length; i++) {
        rows[i].style.display = rows[i].textContent.toLowerCase().indexOf(q) === -1 ? "none" : "";
      }
    });
  }
  var boxes = document.querySelectorAll("input[data-sev]");
  for (var j = 0; j < boxes.length; j++) {
    boxes[j].addEventListener("change", function(ev){
      var sev = ev.target.getAttribute("data-sev");
      var items = document.querySelectorAll(".finding.sev-" + sev + "-item");
      for (var k = 0; k < items.length; k++) { items[k].style.display = ev.target.checked ? "" : "none"; }
    });
  }
  document.body.setAttribute("data-ready", "1");
})();
"""


def _kv(rows: list[tuple[str, Any]]) -> str:
    cells = []
    for key, value in rows:
        if value in (None, "", [], {}):
            continue
        cells.append(f"<tr><td class=k>{e(key)}</td><td>{e(value)}</td></tr>")
    return "<table>" + "".join(cells) + "</table>" if cells else "<p class=muted>nothing recorded</p>"


def _verdict_html(verdict: dict[str, Any] | None, analysed: bool, counts: Counter[str],
                  rules: dict[str, Any] | None = None) -> str:
    if verdict is None:
        rec = "not-analysed" if not analysed else "unknown"
        title = "NOT ANALYSED" if not analysed else "NO VERDICT"
        if analysed:
            why = "the analysis bundle holds no verdict.json"
        elif rules is not None:
            why = (f"no analysis bundle: the rules and host checks were run here over the bundle's own records, "
                   f"as `triagent rank` runs them, without a memory image: score {rules.get('score')}/100, "
                   f"which would recommend '{rules.get('recommendation')}'; run `triagent analyze` for the verdict")
        else:
            why = "no analysis bundle, and the rules could not be run over the bundle: nothing was judged"
        score = (f' data-rules-score="{e(rules.get("score"))}" data-rules-recommendation='
                 f'"{e(rules.get("recommendation"))}"') if rules is not None else ""
        return (f'<section id="verdict" data-recommendation="{e(rec)}"{score}><div class=big>Full disk: {e(title)}'
                f"</div><p>{e(why)}</p>{_counts_html(counts)}</section>")
    rec = str(verdict.get("recommendation") or "unknown")
    label = {"yes": "YES — take the full disk", "no": "NO — triage is enough",
             "needs-memory": "NEEDS MEMORY — analyse a memory image first"}.get(rec, rec.upper())
    reasons = "".join(f"<li>{e(r)}</li>" for r in verdict.get("reasons") or [])
    drivers = "".join(
        f'<li><span class="sev sev-{e(d.get("severity"))}">{e(d.get("severity"))}</span> '
        f'{e(d.get("rule") or d.get("kind"))}: {e(d.get("summary"))}'
        + (f' <a href="#finding-{e(d.get("line"))}">(finding {e(d.get("line"))})</a>'
           if isinstance(d.get("line"), int) else "") + "</li>"
        for d in verdict.get("drivers") or [] if isinstance(d, dict))
    questions = "".join(f'<li>{e(q.get("rule"))}: {e(q.get("question"))}</li>'
                        for q in verdict.get("open_questions") or [] if isinstance(q, dict))
    memory = "memory image analysed" if verdict.get("memory_analysed") else "no memory image analysed"
    verdict_counts = Counter({k: v for k, v in (verdict.get("counts") or {}).items() if isinstance(v, int)})
    return (f'<section id="verdict" data-recommendation="{e(rec)}" data-score="{e(verdict.get("score"))}">'
            f'<div><span class=big>Full disk: {e(label)}</span><span class=score>score {e(verdict.get("score"))}'
            f"/100</span></div><div>{e(memory)}</div>{_counts_html(verdict_counts or counts)}"
            f"<ul>{reasons}</ul>" + (f"<h3>Drivers</h3><ul>{drivers}</ul>" if drivers else "")
            + (f"<h3>What a memory image would decide</h3><ul>{questions}</ul>" if questions else "") + "</section>")


def _counts_html(counts: Counter[str]) -> str:
    return "<div class=counts>" + "".join(f'<span><span class="sev sev-{s}">{s}</span> {counts.get(s, 0)}</span>'
                                          for s in SEVERITIES) + "</div>"


def _evidence_html(ev: dict[str, Any], source: _Bundle, analysis: _Bundle | None) -> str:
    bundle = ev.get("bundle")
    member, line = str(ev.get("member")), ev.get("line")
    holder = source if bundle == "source" else analysis
    where = f"{bundle}:{member}:{line}"
    if holder is None:
        return f"<div class=muted>{e(where)} (bundle not available)</div>"
    if line == 0 or line is None:
        entry = holder.manifest.get(member)
        if entry is None:
            return f"<div class=muted>{e(where)}: not in the manifest</div>"
        shown = {k: entry.get(k) for k in ("source", "size", "source_size", "sha256", "mode", "uid", "gid",
                                           "artifact", "target", "cap_reason") if entry.get(k) is not None}
        for key in ("mtime_ns", "atime_ns", "ctime_ns"):
            try:
                us = to_us(entry.get(key), "ns")
            except ValueError:
                us = None
            if us:
                shown[key.replace("_ns", "_utc")] = iso(us)
        return (f"<div class=meta>{e(where)} (file copy; manifest entry)</div>"
                f"<pre>{e(json.dumps(shown, indent=1))}</pre>")
    raw = holder.records.get((member, line))
    if raw is None:
        return f"<div class=muted>{e(where)}: record not found</div>"
    try:
        text = json.dumps(json.loads(raw), indent=1, ensure_ascii=False)
    except (ValueError, RecursionError):  # a cut line, or nested deeper than json recurses: shown as it is
        text = raw
    if len(text) > EVIDENCE_CHARS:
        text = text[:EVIDENCE_CHARS] + f"\n… ({len(text) - EVIDENCE_CHARS} more characters in the record)"
    return f"<div class=meta>{e(where)}{_what(member)}</div><pre>{e(text)}</pre>"


def _what(member: str) -> str:
    """What a record of this member's stream is, as its producer declares it (specs/artifacts/*.toml)."""
    stream = stream_of(member)
    spec = stream_spec(stream) if stream else None
    if spec is None or not spec.description:
        return ""
    text = spec.description if len(spec.description) <= DESCRIPTION_CHARS else \
        spec.description[:DESCRIPTION_CHARS] + "…"
    return f" <span class=muted>({e(stream)}: {e(text)})</span>"


def _findings_html(findings: list[tuple[str, int, dict[str, Any]]], times: dict[int, int | None],
                   source: _Bundle, analysis: _Bundle | None) -> str:
    if not findings:
        return "<p>No findings.</p>"
    order = {s: i for i, s in enumerate(SEVERITIES)}
    ranked = sorted(range(len(findings)), key=lambda i: order.get(str(findings[i][2].get("severity")), 9))
    boxes = "".join(f'<label><input type=checkbox checked data-sev="{s}"> {s}</label> ' for s in SEVERITIES)
    parts = [f"<div>Show: {boxes}</div>"]
    current = None
    for index in ranked:
        member, number, f = findings[index]
        severity = str(f.get("severity") or "info")
        if severity not in SEVERITIES:
            severity = "info"
        if severity != current:
            parts.append(f"<h3>{e(severity.capitalize())}</h3>")
            current = severity
        anchor = f' id="finding-{number}"' if number else ""
        when = times.get(index)
        facts = {k: v for k, v in f.items() if k not in ("kind", "severity", "summary", "evidence", "rule", "title",
                                                       "mitre", "source")}
        evidence = "".join(_evidence_html(ev, source, analysis) for ev in (f.get("evidence") or [])[:5]
                           if isinstance(ev, dict))
        more = len(f.get("evidence") or []) - 5
        parts.append(
            f'<div class="finding sev-{severity}-item"{anchor}><span class="sev sev-{severity}">{e(severity)}</span> '
            f'<b>{e(f.get("title") or f.get("kind"))}</b> — {e(f.get("summary"))}'
            f'<div class=meta>rule {e(f.get("rule") or "-")} · kind {e(f.get("kind"))}'
            + (f' · MITRE {e(", ".join(map(str, f.get("mitre") or [])))}' if f.get("mitre") else "")
            + (f" · time {e(iso(when))}" if when else " · time unknown")
            + (f" · finding {number} of {e(member)}" if number else "") + "</div>"
            + (f"<details><summary>facts</summary><pre>{e(json.dumps(facts, indent=1, ensure_ascii=False))}</pre>"
               "</details>" if facts else "")
            + evidence + (f"<div class=muted>… and {more} more evidence pointers</div>" if more > 0 else "")
            + "</div>")
    return "".join(parts)


def _finding_times(findings: list[tuple[str, int, dict[str, Any]]], events: list[Event]) -> dict[int, int | None]:
    """A finding's own time (memory findings carry one), else the earliest time of the records it cites."""
    wanted: dict[tuple[str, str, int], list[int]] = {}
    times: dict[int, int | None] = {}
    for index, (_, _, f) in enumerate(findings):
        own = next((f[k] for k in ("command_time", "creation_time", "time_utc") if f.get(k)), None)
        try:
            times[index] = to_us(own) if own else None
        except ValueError:
            times[index] = None
        if times[index] is None:
            for ev in f.get("evidence") or []:
                if isinstance(ev, dict):
                    wanted.setdefault((str(ev.get("bundle")), str(ev.get("member")), ev.get("line")), []).append(index)
    if wanted:
        for event in events:
            for index in wanted.get((event.bundle, event.member, event.line), ()):
                if times[index] is None or event.us < times[index]:  # type: ignore[operator]
                    times[index] = event.us
    return times


def _timeline_html(events: list[Event], findings: list[tuple[str, int, dict[str, Any]]],
                   times: dict[int, int | None], window_minutes: float) -> tuple[str, int]:
    span = int(window_minutes * 60 * 1_000_000)
    marks = sorted({t for t in times.values() if t})
    if not marks:
        return "<p class=muted>No finding has a time: no timeline window to show (see `triagent timeline`).</p>", 0
    windows: list[list[int]] = []
    for t in marks:
        if windows and t - span <= windows[-1][1]:
            windows[-1][1] = t + span
        else:
            windows.append([t - span, t + span])
    cited = {(str(ev.get("bundle")), str(ev.get("member")), ev.get("line"))
             for _, _, f in findings for ev in f.get("evidence") or [] if isinstance(ev, dict)}
    rows: list[str] = []
    shown = 0
    keys = [ev.us for ev in events]
    for start, end in windows:
        lo, hi = bisect.bisect_left(keys, start), bisect.bisect_right(keys, end)
        rows.append(f'<tr><th colspan=5>{e(iso(start))} … {e(iso(end))} ({hi - lo} events)</th></tr>')
        chosen = events[lo:hi]
        if len(chosen) > WINDOW_EVENT_LIMIT:
            # keep what the findings cite and what is nearest to them: the rest is in `triagent timeline`
            near = sorted(chosen, key=lambda ev: (ev.stream != "findings" and (ev.bundle, ev.member, ev.line)
                                                  not in cited, min(abs(ev.us - m) for m in marks)))
            chosen = sorted(near[:WINDOW_EVENT_LIMIT], key=lambda ev: ev.us)
            rows.append(f"<tr><td colspan=5 class=muted>{hi - lo - WINDOW_EVENT_LIMIT} further events of this window "
                        "not shown (those nearest the findings are)</td></tr>")
        for ev in chosen:
            cls = "is-finding" if ev.stream == "findings" else \
                "hit" if (ev.bundle, ev.member, ev.line) in cited else ""
            rows.append(f'<tr class="{cls}"><td class=t>{e(ev.datetime)}</td><td>{e(ev.desc)}</td>'
                        f"<td>{e(ev.stream)}</td><td class=msg>{e(ev.message)}</td>"
                        f"<td class=ptr>{e(ev.pointer)}</td></tr>")
            shown += 1
    table = ('<input id="tl-filter" class=filter type=search placeholder="filter these rows">'
             '<table id="timeline"><thead><tr><th>UTC</th><th>what</th><th>stream</th><th>event</th>'
             f"<th>evidence</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    note = (f"<p class=muted>Events within ±{e(window_minutes)} minutes of each finding's time; findings in red, "
            "the records they cite in yellow.</p>")
    return note + table, shown


def _host_html(source: _Bundle) -> tuple[str, str | None]:
    custody = source.custody
    host = custody.get("host") if isinstance(custody.get("host"), dict) else {}
    system = source.first.get("system", {})
    # without a live clock record, custody's clock is the collecting machine's, not the evidence host's
    clock = source.first.get("clock") or {}
    clock_title = "Clock"
    if not clock and isinstance(custody.get("clock_at_end"), dict):
        clock = custody["clock_at_end"]
        clock_title = "Clock of the machine that ran the collection (not live: not the evidence host's)"
    ntp = clock.get("ntp") if isinstance(clock.get("ntp"), dict) else {}
    os_release = system.get("os_release") if isinstance(system.get("os_release"), dict) else {}
    hostname = host.get("hostname") or system.get("hostname") or host.get("hostname_file")
    rows = [
        ("hostname", hostname), ("hostname (/etc/hostname)", host.get("hostname_file")),
        ("operating system", os_release.get("PRETTY_NAME") or os_release.get("ID")),
        ("kernel", system.get("kernel_release") or host.get("kernel_release")),
        ("kernel version", system.get("proc_version") or host.get("kernel_version")),
        ("machine", host.get("machine")), ("machine-id", host.get("machine_id")),
        ("boot id", host.get("boot_id") or system.get("boot_id")),
        ("boot time (btime)", system.get("boot_time_utc")),
        ("boot time (from clocks)", clock.get("boot_utc_from_clocks") if clock_title == "Clock" else None),
        ("uptime (s)", system.get("uptime_s")), ("tainted", system.get("taint_flags") or system.get("tainted")),
        ("lockdown", system.get("lockdown")),
        ("live collection", custody.get("live")), ("evidence root", custody.get("root")),
    ]
    clock_rows = [
        ("UTC at collection", clock.get("utc_now")), ("timezone", clock.get("timezone_file")),
        ("localtime link", clock.get("localtime_link")), ("TZ", clock.get("tz_env")),
        ("UTC offset (s)", clock.get("local_utc_offset_s")), ("clock source", clock.get("clocksource")),
        ("NTP synchronised", ntp.get("synchronized")), ("NTP state", ntp.get("state")),
        ("NTP estimated error (µs)", ntp.get("est_error_us")),
        ("RTC − system clock (s)", clock.get("rtc_minus_system_s")),
    ]
    cloud_rows = [
        ("cloud instance id", host.get("cloud_instance_id") or system.get("cloud_instance_id")),
        ("DMI vendor", host.get("sys_vendor")), ("DMI product", host.get("product_name")),
        ("DMI product uuid", host.get("product_uuid")), ("board asset tag", host.get("board_asset_tag")),
        ("chassis asset tag", host.get("chassis_asset_tag")),
    ]
    page = (f"<h3>System</h3>{_kv(rows)}<h3>{e(clock_title)}</h3>{_kv(clock_rows)}"
            f"<h3>Cloud and hardware identity</h3>{_kv(cloud_rows)}")
    return page, hostname


def _integrity_html(path: str, checked: Any, bundle: _Bundle | None, role: str,
                    source_sha256: str | None = None) -> tuple[str, bool]:
    """One bundle's verify result and custody; for an analysis, ``source_sha256`` is the verified hash of
    the bundle it must have been made from."""
    ok = bool(checked.ok)
    status = '<span class=ok>verified</span>' if ok else '<span class=bad>DOES NOT VERIFY</span>'
    problems = "".join(f"<li>{e(p)}</li>" for p in checked.problems[:20])
    rows = [("file", path), ("SHA-256", checked.bundle_sha256), ("members", checked.members),
            ("collection status", checked.status), ("signature", checked.signature)]
    extra = ""
    claimed = bundle.custody.get("source_bundle_sha256") if bundle is not None else None
    if source_sha256 is not None and claimed != source_sha256:
        ok = False
        extra = ("<p class=bad>This analysis was not made from this bundle: its source_bundle_sha256 is "
                 f"{e(claimed)}, the bundle's is {e(source_sha256)}.</p>")
    if bundle is not None:
        c = bundle.custody
        rows += [("case id", c.get("case_id")), ("examiner", c.get("examiner")), ("notes", c.get("notes")),
                 ("profile", c.get("profile")), ("started", c.get("started_utc")), ("ended", c.get("ended_utc")),
                 ("status", c.get("status")), ("stop reason", c.get("stop_reason")),
                 ("tool", " ".join(str(x) for x in ((c.get("tool") or {}).get("name"),
                                                    (c.get("tool") or {}).get("version")) if x)),
                 ("command line", " ".join(map(str, c.get("command_line") or [])) or None),
                 ("run as", c.get("run_as")), ("source bundle", c.get("source_bundle")),
                 ("source bundle SHA-256", c.get("source_bundle_sha256")),
                 ("source verified at analysis", c.get("source_verified"))]
        if bundle.error:
            extra += f"<p class=bad>{e(bundle.error)}</p>"
        if bundle.problems:
            extra += ("<p class=bad>Problems met while reading it (refused members, cut lines):</p><ul class=bad>"
                      + "".join(f"<li>{e(p)}</li>" for p in bundle.problems[:50]) + "</ul>")
    return (f"<h3>{e(role)}: {status}</h3>{extra}{_kv(rows)}"
            + (f"<ul class=bad>{problems}</ul>" if problems else "")), ok


def _missing_html(source: _Bundle, analysis: _Bundle | None) -> tuple[str, int]:
    parts = []
    count = 0
    for bundle, role in ((source, "collection"), (analysis, "analysis")):
        if bundle is None:
            continue
        artifacts = [a for a in bundle.custody.get("artifacts") or []
                     if isinstance(a, dict) and a.get("status") not in ("complete", None)]
        if artifacts:
            count += len(artifacts)
            rows = "".join(f"<tr><td>{e(a.get('name'))}</td><td>{e(a.get('status'))}</td><td>{e(a.get('reason'))}"
                           f"</td><td>{e(a.get('errors'))}</td><td>{e(a.get('warnings'))}</td></tr>"
                           for a in artifacts)
            parts.append(f"<h3>{e(role)}: artifacts not complete</h3><table><thead><tr><th>artifact</th>"
                         f"<th>status</th><th>reason</th><th>errors</th><th>warnings</th></tr></thead>"
                         f"<tbody>{rows}</tbody></table>")
        levels = bundle.log_levels
        total = levels.get("error", 0) + levels.get("warning", 0)
        if total:
            count += total
            problems = sorted(bundle.log, key=lambda r: (r.get("level") != "error", str(r.get("artifact"))))
            rows = "".join(f"<tr><td>{e(r.get('level'))}</td><td>{e(r.get('artifact'))}</td><td>{e(r.get('path'))}"
                           f"</td><td>{e(r.get('message'))}</td></tr>" for r in problems[:LOG_LIMIT])
            more = f"<p class=muted>{total - LOG_LIMIT} more in collection.log.jsonl</p>" \
                if total > LOG_LIMIT else ""
            parts.append(f"<h3>{e(role)}: {levels.get('error', 0)} errors, {levels.get('warning', 0)} warnings"
                         f"</h3><table><thead><tr><th>level</th><th>artifact</th><th>path</th><th>message</th></tr>"
                         f"</thead><tbody>{rows}</tbody></table>{more}")
    return ("".join(parts) or "<p>Everything planned was collected.</p>"), count


def report(bundle: str, analysis: str | None, output: str, window_minutes: float = WINDOW_MINUTES) -> dict[str, Any]:
    """Write the HTML report of ``bundle`` (and its ``analysis`` bundle, when given) to ``output``; returns
    a summary (what :func:`terminal_summary` prints)."""
    started = time.monotonic()
    checked = verify(bundle)
    checked_analysis = verify(analysis) if analysis else None
    analysis_data = _Bundle(analysis, set()) if analysis else None
    checks: list[str] = []
    findings, findings_from, rules_verdict = _findings_of(analysis_data, bundle, checks)
    pointers = _pointers(findings)
    if analysis_data is not None and pointers["analysis"]:
        analysis_data = _Bundle(analysis, pointers["analysis"])  # type: ignore[arg-type]
        findings, findings_from, rules_verdict = _findings_of(analysis_data, bundle)
    source = _Bundle(bundle, pointers["source"])
    stats = Stats()
    try:
        events = collect_events(bundle, analysis if analysis_data and not analysis_data.error else None, stats)
    except (OSError, BundleError):
        events = []
    problems = [p for b in (source, analysis_data) if b is not None
                for p in ([b.error] if b.error else []) + b.problems]
    problems += [p for p in checks if p.removeprefix("rules: ") not in problems]
    problems += [p for p in stats.problems if p.startswith("timeline cut")]  # the rest repeats the above
    times = _finding_times(findings, events)
    counts = Counter(str(f.get("severity") or "info") for _, _, f in findings)
    verdict = analysis_data.verdict if analysis_data is not None else None

    host_page, hostname = _host_html(source)
    integrity, source_ok = _integrity_html(bundle, checked, source, "Source bundle")
    analysis_ok = None
    if analysis and checked_analysis is not None:
        more, analysis_ok = _integrity_html(analysis, checked_analysis, analysis_data, "Analysis bundle",
                                            checked.bundle_sha256)
        integrity += more
    else:
        integrity += "<h3>Analysis bundle: none</h3><p>not analysed</p>"
    extra = [p for p in problems if not any(p in b.problems for b in (source, analysis_data) if b is not None)]
    if extra:
        integrity += ("<h3 class=bad>Problems met while checking and ordering the records</h3><ul class=bad>"
                      + "".join(f"<li>{e(p)}</li>" for p in extra[:50]) + "</ul>")
    timeline_page, shown = _timeline_html(events, findings, times, window_minutes)
    missing_page, missing = _missing_html(source, analysis_data)
    skipped = f"{sum(stats.unknown.values())} records without a time, {sum(stats.garbage.values())} unusable times"

    title = f"triagent report — {hostname or os.path.basename(bundle)}"
    generated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{STYLE}</style></head>
<body><main>
<h1>{e(title)}</h1>
<p class=muted>bundle {e(os.path.basename(bundle))} · analysis {e(os.path.basename(analysis) if analysis else "none")}
 · findings from {e(findings_from)} · report made {e(generated)} by triagent</p>
{_verdict_html(verdict, analysis_data is not None and not analysis_data.error, counts, rules_verdict)}
<nav><a href="#findings">Findings ({len(findings)})</a><a href="#host">Host</a><a href="#custody">Custody and
 integrity</a><a href="#timeline-section">Timeline</a><a href="#missing">Not collected ({missing})</a></nav>
<h2 id="findings">Findings by severity</h2>
{_findings_html(findings, times, source, analysis_data)}
<h2 id="host">Host</h2>
{host_page}
<h2 id="custody">Custody and integrity</h2>
{integrity}
<h2 id="timeline-section">Timeline around the findings</h2>
<p class=muted>{len(events)} timed events in all ({e(skipped)}); {shown} shown here.</p>
{timeline_page}
<h2 id="missing">What could not be collected</h2>
{missing_page}
</main><script>{SCRIPT}</script></body></html>
"""
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    partial = output + ".partial"
    with open(partial, "w", encoding="utf-8", errors="backslashreplace") as out:
        out.write(page)
    os.replace(partial, output)
    ranked = sorted(findings, key=lambda x: SEVERITIES.index(x[2].get("severity"))
                    if x[2].get("severity") in SEVERITIES else 9)
    return {
        "output": os.path.abspath(output), "host": hostname, "bundle": os.path.abspath(bundle),
        "analysis": os.path.abspath(analysis) if analysis else None, "analysed": analysis_data is not None,
        "recommendation": (verdict or {}).get("recommendation") if verdict else
        ("not-analysed" if analysis_data is None else "unknown"),
        "score": (verdict or rules_verdict or {}).get("score"), "findings": len(findings),
        "findings_from": "analysis" if verdict is not None or findings_from == "analysis" else
        ("rules" if rules_verdict is not None else "none"),
        "rules_recommendation": (rules_verdict or {}).get("recommendation") if verdict is None else None,
        "counts": {s: counts.get(s, 0) for s in SEVERITIES},
        "top": [f"{f.get('severity')}: {f.get('summary')}" for _, _, f in ranked[:5]],
        "source_verified": source_ok, "source_sha256": checked.bundle_sha256,
        "analysis_verified": analysis_ok,
        "analysis_sha256": checked_analysis.bundle_sha256 if checked_analysis else None,
        "events": len(events), "timeline_shown": shown, "not_collected": missing,
        "problems": len(problems), "problem_examples": problems[:3],
        "bytes": os.path.getsize(output), "seconds": round(time.monotonic() - started, 2),
    }


def terminal_summary(summary: dict[str, Any]) -> str:
    """A few plain lines for stderr: what the report says, for a responder without a browser at hand."""
    rec = summary.get("recommendation")
    verdict = {"yes": "FULL DISK: YES", "no": "full disk: no", "needs-memory": "full disk: needs memory first",
               "not-analysed": "not analysed (no verdict; rules run here, no memory image)"}.get(str(rec))
    verdict = verdict or f"verdict: {_plain(rec, 40)}"
    score = f" (score {_plain(summary['score'], 20)}/100)" if summary.get("score") is not None else ""
    counts = ", ".join(f"{_plain(n, 20)} {_plain(s, 20)}" for s, n in (summary.get("counts") or {}).items() if n)
    integrity = "verified" if summary.get("source_verified") else "DOES NOT VERIFY"
    if summary.get("analysis"):
        integrity += "; analysis " + ("verified" if summary.get("analysis_verified") else "DOES NOT VERIFY")
    lines = [f"triagent report: {_plain(summary.get('host') or '?', 80)}: {verdict}{score}",
             f"  findings: {summary.get('findings', 0)}" + (f" ({counts})" if counts else ""),
             *(f"  - {_plain(t)}" for t in summary.get("top") or []),
             f"  integrity: bundle {integrity}",
             f"  not collected: {summary.get('not_collected', 0)} errors/warnings/incomplete artifacts",
             *([f"  problems reading the bundles: {summary['problems']} (refused members, cut lines: in the report)"]
               if summary.get("problems") else []),
             *(f"  - {_plain(p)}" for p in summary.get("problem_examples") or []),
             f"  report: {_plain(summary.get('output'), 4096)}"]
    return "\n".join(lines)


def _plain(text: Any, limit: int = 160) -> str:
    # a terminal would obey escape sequences planted in a bundle: show control characters escaped
    return _inert(text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=str), limit)


def add_report_arguments(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="one self-contained HTML page for the responder: verdict, findings "
                              "with their evidence, host, custody, timeline around the findings, what is missing")
    p.add_argument("bundle", help="a bundle made by collect")
    p.add_argument("--analysis", "-a", metavar="ANALYSIS", help="its analysis bundle (default: NAME.analysis.tar.gz "
                   "beside the bundle; without one the report says 'not analysed' and runs the host checks)")
    p.add_argument("--output", "-o", metavar="DIR", help="folder for NAME.report.html (default: beside the "
                   "bundle); a path that is not a folder is still taken as the file")
    p.add_argument("--window", type=float, default=WINDOW_MINUTES, metavar="MINUTES",
                   help=f"timeline window around each finding (default ±{WINDOW_MINUTES} minutes)")
    return p


def run_report(args: argparse.Namespace) -> int:
    for path in (args.bundle, args.analysis):
        if path and not os.path.isfile(path):
            print(f"triagent report: error: {_plain(repr(path), 4096)} is not a file", file=sys.stderr)
            return 2
    analysis = args.analysis or beside(args.bundle)
    from agent.cli import output_file

    name = os.path.basename(args.bundle)
    for suffix in (".tar.gz", ".tar", ".tgz"):
        name = name.removesuffix(suffix)
    output = output_file(args.output or os.path.dirname(os.path.abspath(args.bundle)), name + ".report.html")
    if output is None:
        print("triagent report: error: -o -: the report is a file (give a folder)", file=sys.stderr)
        return 2
    try:
        summary = report(args.bundle, analysis, output, getattr(args, "window", WINDOW_MINUTES))
    except OSError as exc:
        print(f"triagent report: error: {_plain(exc, 4096)}", file=sys.stderr)
        return 3
    print(terminal_summary(summary), file=sys.stderr)
    print(dumps({k: summary[k] for k in ("output", "host", "recommendation", "score", "findings",
                                         "source_verified", "analysis_verified", "problems")}, default=str))
    return 0 if summary["source_verified"] and summary["analysis_verified"] is not False else 1
