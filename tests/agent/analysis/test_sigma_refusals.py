"""The `findings` artifact of `analyze` (agent/analysis/steps.py) hands the Sigma engine the analysis
log: a rule the engine refuses reaches it as a warning with its reason, and is no finding (issue 14, item 5:
agent/analysis/sigma.py ``evaluate(..., check, problems)``)."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from agent.analysis import rules as rules_engine
from agent.analysis import steps
from collectors.base import Context, Problem, Record

HAVE_SIGMA = importlib.util.find_spec("sigma") is not None


def _bundle(path: Path) -> str:
    records = [{"message": "new user: name=x, UID=0,", "hostname": "h"}]
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("triagent/custody.json", b"{}"),
                           ("triagent/artifacts/dissect.authlog.jsonl",
                            "".join(json.dumps(r) + "\n" for r in records).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_refused_sigma_rules_are_warnings_in_the_analysis_log(tmp_path):
    if not HAVE_SIGMA:
        pytest.skip("pySigma (the analysis extra) is not installed")
    rules = tmp_path / "rules"
    shutil.copytree(rules_engine.rules_folder(), rules, ignore=shutil.ignore_patterns("sigma"))
    (rules / "sigma").mkdir()
    (rules / "sigma" / "proc.yml").write_text(yaml.safe_dump({
        "title": "process rule", "logsource": {"product": "linux", "category": "process_creation"},
        "detection": {"s": {"Image|endswith": "/x"}, "condition": "s"}}))
    (rules / "sigma" / "broken.yml").write_text("title: [unclosed\n")
    (rules / "sigma" / "ok.yml").write_text(yaml.safe_dump({
        "title": "new user", "logsource": {"product": "linux", "service": "auth"},
        "detection": {"s": {"message|contains": "new user"}, "condition": "s"}, "level": "high"}))
    ctx = Context(root=_bundle(tmp_path / "b.tar.gz"), live=False, options={"rules_dir": str(rules)})
    items = list(steps.collect(ctx))
    found = [i.data for i in items if isinstance(i, Record) and i.stream == "findings"]
    warnings = [i for i in items if isinstance(i, Problem) and i.level == "warning" and "sigma" in i.message]
    assert not [f for f in found if f.get("kind") == "sigma_refused"], found
    assert [f["title"] for f in found if f.get("source") == "sigma"] == ["new user"]
    texts = sorted(p.message for p in warnings)
    assert len(texts) == 2, texts
    assert texts[0].startswith("sigma rule not evaluated: broken.yml: does not parse: "), texts
    assert texts[1].startswith("sigma: 1 rule(s) not evaluated, log source category 'process_creation'"), texts
    assert next(p for p in warnings if "process_creation" in p.message).detail["sigma_refused"] == \
        ["proc.yml (process rule)"]
