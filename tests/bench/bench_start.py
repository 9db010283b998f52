#!/usr/bin/env python3
"""Start-up cost of `triagent collect` (not a test; run it by hand): for a checkout, N runs each of

    python -X importtime -m agent collect --help
    python -X importtime -m agent collect --profile minimal --artifacts clock --output -   (stdout to /dev/null)
    python -X importtime -m agent collect --profile minimal --output -

and prints the median wall time, the number of modules the run had loaded when it ended (sys.modules,
counted at exit: importlib.import_module leaves no -X importtime line, so those lines undercount) and
the number of -X importtime lines with their summed self time. With --compare REV the same runs on a
`git worktree` of REV (made in /tmp, removed after) and each figure gets its ratio new/old.

    python tests/bench/bench_start.py [--checkout DIR] [--compare REV] [-n 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INVOCATIONS = {
    "collect --help": ["collect", "--help"],
    # one cheap artifact: start-up, plan, one collector, custody and seal; the same work in both revisions
    "collect clock": ["collect", "--profile", "minimal", "--artifacts", "clock", "--output", "-", "--no-nice"],
    # the minimal profile: more telling, but its artifact list may differ between revisions
    "collect minimal": ["collect", "--profile", "minimal", "--output", "-", "--no-nice"],
}
# Runs `-m agent` as python does, and writes len(sys.modules) (and where agent came from) when it ends.
_COUNTING = """
import atexit, os, runpy, sys
def _count():
    with open(os.environ["BENCH_START_OUT"], "w") as out:
        out.write("%d %s" % (len(sys.modules), sys.modules["agent"].__file__))
atexit.register(_count)
sys.argv = ["triagent"] + sys.argv[1:]
runpy.run_module("agent", run_name="__main__", alter_sys=True)
"""


def _env(checkout: Path) -> dict[str, str]:
    # the checkout's own agent/ and collectors/ first (the venv may hold an editable install of another one)
    return dict(os.environ, PYTHONPATH=str(checkout), PYTHONDONTWRITEBYTECODE="")


def _once(checkout: Path, args: list[str]) -> tuple[float, int, int]:
    """Wall seconds, -X importtime lines and their summed self time (microseconds)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "agent", *args], cwd=checkout,
                          env=_env(checkout), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=600)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{checkout}: triagent {' '.join(args)} exited {proc.returncode}: {proc.stderr[-1500:]!r}")
    lines = [line for line in proc.stderr.decode(errors="replace").splitlines() if line.startswith("import time:")]
    self_us = sum(int(line.split("|")[0].split(":")[1]) for line in lines[1:] if line.split("|")[0].split(":")[1]
                  .strip().isdigit())
    return wall, len(lines) - 1, self_us  # the first line is the header


def _modules(checkout: Path, args: list[str]) -> tuple[int, str]:
    with tempfile.NamedTemporaryFile(prefix="bench-start-") as out:
        subprocess.run([sys.executable, "-c", _COUNTING, *args], cwd=checkout,
                       env=dict(_env(checkout), BENCH_START_OUT=out.name), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        count, _, origin = Path(out.name).read_text().partition(" ")
    return int(count), origin


def measure(checkout: Path, runs: int) -> dict[str, dict[str, float | int | str]]:
    out = {}
    for label, args in INVOCATIONS.items():
        _once(checkout, args)  # warm the page cache and write the .pyc files
        samples = [_once(checkout, args) for _ in range(runs)]
        modules, origin = _modules(checkout, args)
        if not origin.startswith(str(checkout)):
            raise SystemExit(f"{checkout}: agent was imported from {origin}, not from the checkout")
        out[label] = {"wall_s": round(statistics.median(s[0] for s in samples), 4), "modules": modules,
                      "importtime_lines": int(statistics.median(s[1] for s in samples)),
                      "import_self_ms": round(statistics.median(s[2] for s in samples) / 1000, 1)}
    return out


def _worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="bench-start-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(path), rev], check=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=REPO, help="the checkout measured (default: this one)")
    parser.add_argument("--compare", metavar="REV", help="also measure REV (a git worktree in /tmp) as the old")
    parser.add_argument("-n", type=int, default=7, help="runs of each invocation (median; default 7)")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    result: dict[str, object] = {"new": {"checkout": str(checkout), **measure(checkout, args.n)}}
    if args.compare:
        tree = _worktree(args.compare)
        try:
            result["old"] = {"checkout": f"{args.compare} ({tree})", **measure(tree, args.n)}
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
            os.rmdir(tree.parent)
        result["ratio_new_old"] = {
            label: {k: round(result["new"][label][k] / result["old"][label][k], 3)  # type: ignore[index]
                    for k in ("wall_s", "modules", "importtime_lines", "import_self_ms")
                    if result["old"][label][k]}  # type: ignore[index]
            for label in INVOCATIONS}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
