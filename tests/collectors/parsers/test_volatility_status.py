"""When no kernel plugin could run (no symbol table matches the image, or 5-level paging), the `volatility`
artifact did not do its job: it says so as its status, so that `analyze`'s summary is not `complete`
(issue 15, item 4: the binary said "symbols missing" for every kernel plugin and still `complete`)."""

from __future__ import annotations

from collectors.base import Context, Problem, Record
from collectors.parsers import volatility


def _fake_analyse(status: str):
    def analyse(image, plugins, symbol_dirs, cache_dir, budget=300, remote_isf_url=None, rows_dir=None):
        yield Problem(f"volatility: {volatility.NO_SYMBOLS} Linux version x; 3 more plugins not run", level="error",
                      detail={"plugin": plugins[0]})
        yield Record("volatility", {"image": image, "status": status, "plugins_run": 0,
                                    "plugins_failed": len(plugins), "symbol_table": None})
    return analyse


def _collect(monkeypatch, tmp_path, status: str) -> list:
    monkeypatch.setattr(volatility, "analyse", _fake_analyse(status))
    ctx = Context(root="/", live=False, options={"image": str(tmp_path / "x.lime"), "cache_dir": str(tmp_path),
                                                  "plugins": ["linux.pslist.PsList", "linux.lsmod.Lsmod"]})
    return list(volatility.collect(ctx))


def test_no_kernel_plugin_ran_is_a_failed_artifact(monkeypatch, tmp_path):
    for status in ("symbols_missing", "unsupported"):
        items = _collect(monkeypatch, tmp_path, status)
        marks = [i for i in items if isinstance(i, Problem) and i.detail.get("artifact_status")]
        assert marks and marks[-1].detail["artifact_status"] == "failed" and marks[-1].level == "error", (status, items)


def test_plugins_that_ran_leave_the_status_alone(monkeypatch, tmp_path):
    for status in ("complete", "partial"):
        items = _collect(monkeypatch, tmp_path, status)
        assert not [i for i in items if isinstance(i, Problem) and i.detail.get("artifact_status")], status


def test_the_run_is_partial_when_the_artifact_failed(monkeypatch, tmp_path):
    """Through the engine: the artifact's status and the run's (what analyze's summary prints)."""
    import io

    from agent.bundle.writer import BundleWriter
    from agent.engine.pipeline import Run, RunOptions
    from agent.engine.plan import load_profile, load_secrets
    from agent.engine.redact import Redactor

    monkeypatch.setattr(volatility, "analyse", _fake_analyse("symbols_missing"))
    profile = load_profile("analysis")
    profile.artifacts = [a for a in profile.artifacts if a.name == "volatility"]
    options = RunOptions(root=str(tmp_path), output_dir=str(tmp_path), artifact_options={
        "volatility": {"image": str(tmp_path / "x.lime"), "cache_dir": str(tmp_path / "cache")}})
    run = Run(profile, BundleWriter(io.BytesIO(), "gzip"), Redactor(load_secrets()), options)
    run.collect_all()
    assert {r.name: r.status for r in run.results} == {"volatility": "failed"}
    assert run.status == "partial"
