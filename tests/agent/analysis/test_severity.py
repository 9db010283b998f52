"""A finding's severity is said in one place, the rules of specs/rules: the built-in checks and cross-views
(findings.py) say what they saw, not how bad it is (a hidden process was high there and critical in
TRI-PROC-004), and no observation is graded twice."""

from __future__ import annotations

import ast
import inspect

from agent.analysis import findings
from agent.analysis import rules as engine

SEVERITY_WORDS = set(engine.SEVERITIES)

# Every kind the checks make, with the facts that decide how the rules grade it (one record per case).
CASES: list[dict] = [
    {"kind": "memfd_executable", "exe": "/memfd:x (deleted)"},
    {"kind": "deleted_executable", "exe": "/tmp/.x/dropper"},
    {"kind": "deleted_executable", "exe": "/usr/sbin/nginx"},
    {"kind": "writable_place_executable", "exe": "/dev/shm/x"},
    {"kind": "writable_place_executable", "exe": "/tmp/go-build123/b001/exe/main"},
    {"kind": "ld_so_preload", "libraries": [{"path": "/lib/x.so"}]},
    {"kind": "ld_preload_environment", "environment": {"LD_PRELOAD": "/tmp/x.so"}},
    {"kind": "ld_preload_environment", "environment": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}},
    {"kind": "ld_preload_environment", "environment": {"LD_PRELOAD": "/opt/app/hook.so"}},
    {"kind": "module_hidden_from_proc_modules", "module": "x"},
    {"kind": "login_log_tampering", "log": "/var/log/wtmp", "zeroed": 2},
    {"kind": "login_log_tampering", "log": "/var/log/wtmp"},
    {"kind": "module_not_installed", "module": "rk", "taint": "OE", "module_tree_present": True},
    {"kind": "module_not_installed", "module": "falcon_lsm", "taint": "OE", "module_tree_present": True},
    {"kind": "module_not_installed", "module": "rk", "taint": "OE", "module_tree_present": False},
    {"kind": "module_not_installed", "module": "ext4", "taint": "", "module_tree_present": False},
    {"kind": "module_unsigned_or_out_of_tree", "module": "zfs", "taint": "POE"},
    {"kind": "process_hidden_from_live_view", "pid": 200},
    {"kind": "process_unlinked_from_task_list", "pid": 202},
    {"kind": "module_in_memory_not_in_proc_modules", "module": "rk"},
    {"kind": "module_hidden_in_memory", "module": "rk"},
    {"kind": "listener_hidden_from_proc_net", "proto": "tcp", "port": 31337},
    {"kind": "listening_socket", "proto": "tcp", "port": 4444},
    {"kind": "listening_socket", "proto": "tcp", "port": 22},
    {"kind": "shell_command_only_in_memory", "pid": 4, "command": "id"},
    {"kind": "shell_history_disabled", "pid": 4, "settings": ["HISTFILE=/dev/null"]},
]
UNRULED = [{"kind": "listening_socket", "port": 22}]  # a listener on a common port: no rule, information


def _calls() -> list[ast.Call]:
    tree = ast.parse(inspect.getsource(findings))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") in ("_finding", "_found")
            and n.args and isinstance(n.args[0], ast.Constant)]  # a check's call, not _finding's own


def test_the_checks_grade_nothing():
    """No severity word in findings.py but the one every check carries until a rule grades it."""
    tree = ast.parse(inspect.getsource(findings))
    words = [(n.lineno, n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in SEVERITY_WORDS]
    assert [w for _, w in words] == [findings.UNGRADED], words
    assert all(len(c.args) == (4 if c.func.id == "_finding" else 3) for c in _calls())


def test_every_kind_of_check_is_graded_once_by_the_rules():
    made = {c.args[0].value for c in _calls()}
    assert made == {c["kind"] for c in CASES}, "a new kind of check: add its cases here and its rules in specs/rules"
    rules = [r for r in engine.load_rules() if "findings" in r.sources]
    named = {k for r in rules for k in _kinds(r.condition)}
    assert made <= named, sorted(made - named)
    for case in CASES:
        check = dict(case, severity=findings.UNGRADED, summary=f"{case['kind']} {sorted(case.items())}", evidence=[])
        graded = list(engine.evaluate(rules, lambda s, c=check: iter([("analysis", "f", 0, c)] if s == "findings"
                                                                     else []), 0.0))
        if {k: case.get(k) for k in UNRULED[0]} in UNRULED:
            assert graded == [], (case, graded)
        else:
            assert len(graded) == 1, (case, [(g["rule"], g["severity"]) for g in graded])


def test_a_hidden_process_is_critical_in_the_one_place_that_says_so():
    rule = next(r for r in engine.load_rules() if r.id == "TRI-PROC-004")
    assert rule.severity == "critical" and "process_hidden_from_live_view" in _kinds(rule.condition)


def _kinds(condition: dict) -> set[str]:
    """The kinds a condition names (kind: eq / in), anywhere in it."""
    out: set[str] = set()
    for key, value in condition.items():
        if key == "where":
            tests = value.get("kind") or {}
            out |= {tests["eq"]} if "eq" in tests else set(tests.get("in", []))
        elif key in ("any", "all"):
            for part in value:
                out |= _kinds(part)
    return out
