"""YARA-X rules (specs/rules/yara/*.yar) over the files a bundle holds: copies of system files, cron
and systemd entries, histories, and the deleted or memfd executables recovered from /proc/PID/exe.
Each rule's meta gives its title, severity and ATT&CK techniques; a hit points at the member."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from agent.analysis.rules import manifest_of
from agent.bundle.reader import BundleView

SEVERITIES = {"critical", "high", "medium", "low", "info"}


def compile_rules(folder: str) -> Any:
    import yara_x

    compiler = yara_x.Compiler()
    for name in sorted(os.listdir(folder)):
        if name.endswith((".yar", ".yara")):
            compiler.new_namespace(name.rsplit(".", 1)[0])
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                try:
                    compiler.add_source(handle.read())
                except yara_x.CompileError as exc:
                    raise ValueError(f"yara rule file {name}: {exc}") from exc
    return compiler.build()


def scan(rules: Any, tar: BundleView, limit: int = 64 << 20, timeout_s: int = 10,
         check: Callable[[], None] = lambda: None) -> Iterator[dict[str, Any]]:
    import yara_x

    scanner = yara_x.Scanner(rules)
    scanner.set_timeout(timeout_s)
    sources: dict[str, dict[str, Any]] = {}
    manifest = manifest_of(tar)
    try:
        for entry in manifest.entries() if manifest is not None else ():
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                sources[entry["name"]] = entry
    except ValueError:  # a damaged manifest: the entries read so far stand
        pass
    for member in tar:
        check()
        if not member.isfile() or not member.name.startswith("fs/") or member.size > limit or member.size == 0:
            continue
        handle = tar.extractfile(member)
        if handle is None:
            continue
        try:
            results = scanner.scan(handle.read())
        except yara_x.TimeoutError:
            continue
        entry = sources.get(member.name, {})
        for match in results.matching_rules:
            meta = dict(match.metadata)
            severity = str(meta.get("severity", "medium")).lower()
            title = str(meta.get("title", match.identifier))
            path = entry.get("source") or member.name
            yield {"rule": f"yara:{match.namespace}.{match.identifier}", "kind": "yara", "title": title,
                   "severity": severity if severity in SEVERITIES else "medium",
                   "mitre": [m.strip() for m in str(meta.get("mitre", "")).split(",") if m.strip()],
                   "summary": f"{title}: {path}", "source": "yara", "path": path, "sha256": entry.get("sha256"),
                   "patterns": sorted({p.identifier for p in match.patterns if p.matches})[:10],
                   "evidence": [{"bundle": "source", "member": member.name, "line": 0}]}
