"""dissect.target plugins whose inputs are absent are info lines, not errors: errors are kept for what a
responder must act on. Run with the real dissect.target on a tree it opens."""

from __future__ import annotations

import types

from conftest import need

from collectors.base import Context, Problem
from collectors.parsers import dissect_target


def _problems(target, name: str, root: str) -> list[Problem]:
    ctx = Context(root=root, live=False, options={})
    return [p for p in dissect_target._run(target, name, 60, ctx) if isinstance(p, Problem)]


def test_plugin_without_its_input_is_info(tmp_path):
    try:
        from dissect.target import Target
    except ImportError:
        need(False, "dissect.target is not installed (the analysis extra)")
    # dissect takes a tree with /Library and /Applications for macOS; its network plugin then reads
    # preferences.plist, absent here: "Couldn't find preferences file", as on a host without it
    for d in ("Library", "Applications", "etc", "var/log"):
        (tmp_path / d).mkdir(parents=True)
    target = Target.open(str(tmp_path))
    problems = _problems(target, "network.interfaces", str(tmp_path))
    assert [p.level for p in problems] == ["info"], [(p.level, p.message) for p in problems]
    assert "Couldn't find preferences file" in problems[0].message
    assert "input is not on this host" in problems[0].message


def test_a_real_failure_stays_an_error():
    def broken():
        yield from ()
        raise PermissionError(13, "Permission denied", "/var/log/audit/audit.log")

    def vanished():
        yield from ()
        raise ValueError("corrupt record at offset 4096")

    target = types.SimpleNamespace(audit=broken, journal=vanished)
    for name in ("audit", "journal"):
        problems = _problems(target, name, "/")
        assert problems[0].level == "error", [(p.level, p.message) for p in problems]


def test_a_plugin_set_that_cannot_run_makes_the_run_partial(tmp_path):
    """A root dissect.target cannot open (nothing it knows in it): the artifact failed, the run is
    partial and the exit code says so, through the real pipeline and CLI."""
    try:
        import dissect.target  # noqa: F401
    except ImportError:
        need(False, "dissect.target is not installed (the analysis extra)")
    from conftest import run_triagent, summary_of

    (tmp_path / "root").mkdir()
    proc = run_triagent(["collect", "--root", str(tmp_path / "root"), "--output", str(tmp_path / "out"),
                         "--profile", "full", "--artifacts", "dissect"])
    summary = summary_of(proc)
    assert summary["status"] == "partial" and proc.returncode == 1, summary
