"""Findings from a bundle's own records, each with evidence pointers (member and line) into the bundle.

Host-side checks over the live snapshot: deleted or memfd executables, processes running from
world-writable places, library preloading, loadable modules hidden from /proc/modules. Cross-views
against the memory image (processes, modules, sockets, shell history) build on these in `analyze`."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from typing import Any

from collectors.base import Context, Item, Problem, Record

WRITABLE_PLACES = ("/tmp", "/dev/shm", "/var/tmp", "/run/shm", "/dev/mqueue")


def _rows(tar: tarfile.TarFile, stream: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    names = sorted(n for n in tar.getnames()
                   if n == f"triagent/artifacts/{stream}.jsonl" or n.startswith(f"triagent/artifacts/{stream}.part"))
    for name in names:
        handle = tar.extractfile(name)
        if handle is None:
            continue
        for number, line in enumerate(handle.read().splitlines(), 1):
            try:
                yield name, number, json.loads(line)
            except ValueError:
                continue


def _finding(kind: str, severity: str, summary: str, member: str, line: int, **facts: Any) -> Record:
    return Record("findings", {"kind": kind, "severity": severity, "summary": summary,
                               "evidence": [{"member": member, "line": line}], **facts})


def host_findings(tar: tarfile.TarFile) -> Iterator[Record]:
    for member, line, p in _rows(tar, "processes"):
        exe, pid, name = p.get("exe") or "", p.get("pid"), p.get("name")
        if p.get("exe_origin") == "/memfd" or exe.startswith("/memfd:"):
            yield _finding("memfd_executable", "high", f"pid {pid} ({name}) runs from an anonymous memfd",
                           member, line, pid=pid, exe=exe, exe_sha256=p.get("exe_sha256"))
        elif p.get("exe_deleted"):
            yield _finding("deleted_executable", "high", f"pid {pid} ({name}) runs a deleted executable {exe}",
                           member, line, pid=pid, exe=exe, exe_sha256=p.get("exe_sha256"))
        if exe.startswith(tuple(place + "/" for place in WRITABLE_PLACES)):
            yield _finding("writable_place_executable", "medium", f"pid {pid} ({name}) runs from {exe}",
                           member, line, pid=pid, exe=exe, exe_sha256=p.get("exe_sha256"))
    for member, line, r in _rows(tar, "preload"):
        if r.get("kind") == "ld.so.preload" and r.get("libraries"):
            yield _finding("ld_so_preload", "high", "/etc/ld.so.preload loads " +
                           ", ".join(lib["path"] for lib in r["libraries"]), member, line,
                           libraries=r["libraries"])
        elif r.get("kind") == "process" and r.get("finding"):
            yield _finding("ld_preload_environment", "medium", f"pid {r.get('pid')} ({r.get('comm')}) has "
                           f"{', '.join(sorted(r.get('environment', {})))} set", member, line,
                           pid=r.get("pid"), environment=r.get("environment"))
    for member, line, m in _rows(tar, "sys_modules"):
        if m.get("hidden_from_proc_modules"):
            yield _finding("module_hidden_from_proc_modules", "high",
                           f"module {m.get('name')} is in /sys/module but not in /proc/modules", member, line,
                           module=m.get("name"))


def collect(ctx: Context) -> Iterator[Item]:
    """The `findings` artifact of `analyze`: ctx.root is the source bundle."""
    try:
        tar = tarfile.open(ctx.root)
    except (OSError, tarfile.TarError) as exc:
        yield Problem(f"findings: cannot open the bundle: {exc}", level="error")
        return
    with tar:
        count = 0
        for finding in host_findings(tar):
            count += 1
            yield finding
    yield Problem(f"findings: {count}", level="info")
