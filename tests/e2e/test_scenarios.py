"""The scenario corpus (tests/scenarios) judged end to end: each clean server and each intrusion is built
as an evidence root, collected with the triage profile and analysed from source; every intrusion must
say "yes" (take the full disk), every clean server "no", and at most one clean server "needs-memory".

Run alone: .venv/bin/python -m pytest -q -s tests/e2e/test_scenarios.py  (or -m scenarios);
reproduce:  TRIAGENT_SCENARIO_SEED=<seed printed in a failure> ... -k <scenario>."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import time

import pytest
from conftest import need, run_triagent, summary_of
from scenarios import SCENARIOS, base_seed, build
from scenarios.host import JOURNAL_REMOTE, Tools

pytestmark = pytest.mark.scenarios

SEED = base_seed()
RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    missing = [p for p in ("ssh-keygen", "utmpdump", "bash", "zsh", "gzip", "gcc") if not shutil.which(p)]
    need(not missing, f"missing {missing} (tests/run.sh installs them)")
    tools = Tools(tmp_path_factory.mktemp("scenario-tools"))
    need(tools.journal, f"{JOURNAL_REMOTE} is missing (tests/run.sh installs systemd-journal-remote): journal-only "
         "hosts (Amazon Linux 2023, Debian 12 without rsyslog) would have no logs")
    return tools


def _verdict(analysis: str) -> tuple[dict, float]:
    """The verdict, and the seconds dissect.target's plugins took (the analysis log names each one's)."""
    with tarfile.open(analysis) as tar:
        verdict = json.loads(tar.extractfile("triagent/verdict.json").read())
        log = tar.extractfile("triagent/collection.log.jsonl").read().decode()
    seconds = sum(float(m) for m in re.findall(r"dissect plugin [^\"]*? records in ([0-9.]+)s", log))
    return verdict, seconds


def _drivers(verdict: dict, n: int = 3) -> str:
    return "; ".join(f"{d.get('rule')}({d.get('weight')})" for d in verdict.get("drivers", [])[:n]) or "-"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name, tools, tmp_path):
    sc = SCENARIOS[name]
    started = time.monotonic()
    try:
        built = build(name, tmp_path / "root", SEED, tools)
    except Exception as exc:
        raise AssertionError(f"building {name} failed: reproduce with TRIAGENT_SCENARIO_SEED={SEED}") from exc
    built_s = time.monotonic() - started
    proc = run_triagent(["collect", "--root", str(built.root), "--output", str(tmp_path / "out"),
                         "--profile", "triage"])
    collected = summary_of(proc)
    assert collected.get("bundle"), (f"seed {SEED}", collected, proc.stderr.decode()[-2000:])
    t_collect = time.monotonic() - started - built_s
    proc = run_triagent(["analyze", collected["bundle"], "--output", str(tmp_path / "analysis")])
    assert proc.stdout.strip(), (f"seed {SEED}: analyze printed nothing", proc.stderr.decode()[-2000:])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    t_analyze = time.monotonic() - started - built_s - t_collect
    verdict, t_dissect = _verdict(summary["analysis"])
    got = verdict.get("recommendation")
    RESULTS[name] = {"expected": sc.expected, "got": got, "score": verdict.get("score"),
                     "drivers": _drivers(verdict), "build_s": round(built_s, 1), "collect_s": round(t_collect, 1),
                     "analyze_s": round(t_analyze, 1), "dissect_s": round(t_dissect, 1), "host": built.notes[0],
                     "why": [f"{d.get('rule')}: {d.get('summary', '')}"[:150] for d in verdict.get("drivers", [])[:3]]}
    context = (f"seed TRIAGENT_SCENARIO_SEED={SEED}; scenario {name}; {'; '.join(built.notes)}; "
               f"score {verdict.get('score')}; drivers: {_drivers(verdict, 8)}")
    if sc.expected == "yes":
        assert got == "yes", context
    else:
        assert got in ("no", "needs-memory"), context


def test_corpus_table(capsys):
    """The table of verdicts (printed), and at most one clean server saying needs-memory."""
    rows = [(n, r) for n, r in RESULTS.items()]
    if not rows:
        pytest.skip("no scenario ran")
    lines = [f"scenario corpus, TRIAGENT_SCENARIO_SEED={SEED}",
             f"{'scenario':<32} {'expected':<8} {'got':<13} {'score':>5} {'build':>5} {'coll':>5} {'anal':>5} "
             f"{'(diss)':>6}  top drivers"]
    for name, r in rows:
        lines.append(f"{name:<32} {r['expected']:<8} {str(r['got']):<13} {str(r['score']):>5} {r['build_s']:>5} "
                     f"{r['collect_s']:>5} {r['analyze_s']:>5} {r['dissect_s']:>6}  {r['drivers']}")
    lines.append("")
    for name, r in rows:
        lines.append(f"{name}: {r['host']}")
        lines += [f"    {why}" for why in r["why"]]
    total = {k: round(sum(r[k] for _, r in rows), 1) for k in ("build_s", "collect_s", "analyze_s", "dissect_s")}
    lines.append(f"total seconds: build {total['build_s']}, collect {total['collect_s']}, analyze "
                 f"{total['analyze_s']} (of which dissect.target's plugins {total['dissect_s']})")
    text = "\n".join(lines)
    with capsys.disabled():
        print("\n" + text, flush=True)
    clean_memory = [n for n, r in rows if r["expected"] == "no" and r["got"] == "needs-memory"]
    assert len(clean_memory) <= 1, f"clean servers saying needs-memory: {clean_memory} (seed {SEED})\n{text}"
