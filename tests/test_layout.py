"""The layout says what runs where (ARCHITECTURE.md), and these tests keep it saying so:

(a) what runs on the suspect host (agent.engine, agent.bundle, agent.ship, collectors, the command line
    and the collect command) imports nothing of the responder's side nor its heavy dependencies;
(b) the modules of agent/ and collectors/ import each other without a cycle (every import counts,
    those inside functions too: a lazy import still ties the two modules together);
(c) tests/ mirrors the tree: each folder under tests/agent/ and tests/collectors/ names a package;
(d) `triagent --help` (agent/cli.py's table) says what each command's own parser says.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "collectors")

# Responder side: never imported by a collection (the collector binary leaves most of them out).
RESPONDER_PACKAGES = ("agent.analysis", "agent.responder")
RESPONDER_DEPS = ("sigma", "yara_x", "re2", "cloudip", "duckdb", "pyarrow", "boto3", "botocore", "azure",
                  "google.cloud", "jinja2")
# Host side: every module of these packages, walked, plus these modules. agent.commands holds `analyze`'s
# parser too: the module imports agent.analysis only when the command runs. agent.readiness imports
# agent.ship (it runs on the host, before a collect, and tries the upload): host side with it.
HOST_PACKAGES = ("agent.engine", "agent.bundle", "agent.ship", "agent.commands", "collectors")
HOST_MODULES = ("agent.cli", "agent.readiness")

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
failed = {}
for name in %(packages)r:
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + ".", onerror=lambda n: failed.setdefault(n, "walk")):
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # a module that cannot even be imported is reported, not hidden
            failed[info.name] = f"{type(exc).__name__}: {exc}"
for name in %(modules)r:
    importlib.import_module(name)
print(json.dumps({"modules": sorted(sys.modules), "failed": failed}))
"""


def _is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_host_side_imports_nothing_of_the_responder():
    code = _IMPORT_ALL % {"packages": HOST_PACKAGES, "modules": HOST_MODULES}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["failed"], f"host-side modules that cannot be imported: {result['failed']}"
    loaded = result["modules"]
    bad = [m for m in loaded if _is_under(m, RESPONDER_PACKAGES + RESPONDER_DEPS)]
    assert not bad, ("the host side (" + ", ".join(HOST_PACKAGES + HOST_MODULES) + ") imported responder-side "
                     f"modules: {bad[:20]}; import them inside the function of the command that needs them")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours that ``name`` imports anywhere in its text."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()

    def ours(target: str) -> str | None:  # the module itself, or the nearest package of ours above it
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        out.update(t for t in map(ours, targets) if t and t != name)
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that ends where it began), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imported(name, path, known) for name, path in known.items()}


def test_import_graph_resolves_submodules():
    """The graph is right about the forms it reads (else (b) could pass by missing edges)."""
    graph = import_graph()
    assert "agent.engine.plan" in graph["agent.engine.pipeline"]  # from agent.engine.plan import ...
    assert "collectors.base" in graph["agent.engine.pipeline"]  # from collectors.base import ...
    assert "agent.bundle.writer" in graph["agent.commands.collect"]  # an import inside a function
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles until none is left, each found one broken at its first edge: every tangle is named, not
    only the first."""
    graph = {node: set(edges) for node, edges in graph.items()}
    found = []
    while (cycle := _cycle(graph)) and len(found) < 20:
        found.append(cycle)
        graph[cycle[0]].discard(cycle[1])
    return found


def test_no_import_cycle():
    cycles = _cycles(import_graph())
    assert not cycles, ("import cycles between modules of agent/ and collectors/ (imports inside functions "
                        "count; the shared part belongs in a module both import, or the import goes one way "
                        "only):\n  " + "\n  ".join(" -> ".join(c) for c in cycles))


def test_tests_mirror_the_tree():
    strays = []
    for top in PACKAGES:
        for folder in sorted((REPO / "tests" / top).rglob("*")):
            if not folder.is_dir() or "__pycache__" in folder.parts:
                continue
            package = REPO / folder.relative_to(REPO / "tests")
            if not (package / "__init__.py").is_file():
                strays.append(str(folder.relative_to(REPO)))
    assert not strays, f"test folders that name no package of the tree (tests/X/Y/ is for package X.Y): {strays}"


def test_cli_table_says_what_each_command_says():
    """`triagent --help` takes each command's help line from agent/cli.py's table, without importing the
    command: the table must match the parser the command's module builds."""
    from agent.cli import COMMANDS

    for command in COMMANDS:
        sub = argparse.ArgumentParser().add_subparsers()
        getattr(importlib.import_module(command.module), command.add)(sub)
        helps = {action.dest: action.help for action in sub._choices_actions}
        assert helps == {command.name: command.help}, f"{command.module}.{command.add} registers {helps}"
        assert callable(getattr(importlib.import_module(command.module), command.run))


def test_every_test_folder_is_collected() -> None:
    """pytest's default norecursedirs holds "build": `pytest tests` (CI's command) never collected
    tests/build, so the lock, SBOM and reproducibility tests could not fail there. No folder holding tests
    may match the patterns setup.cfg sets."""
    import configparser
    import fnmatch

    config = configparser.ConfigParser(interpolation=None)
    config.read(REPO / "setup.cfg")
    patterns = config.get("tool:pytest", "norecursedirs", fallback="").split()
    assert patterns, "setup.cfg must set norecursedirs: pytest's default list skips tests/build"
    skipped = sorted({str(f.parent.relative_to(REPO)) for f in (REPO / "tests").rglob("test_*.py")
                      if ".npm" not in f.parts
                      and any(fnmatch.fnmatch(part, p) for part in f.relative_to(REPO / "tests").parent.parts
                              for p in patterns)})
    assert not skipped, f"pytest would never collect the tests in {skipped}"

