"""Benchmark: our dissect stage (one Target, each plugin time-boxed, records into a sealed bundle) against
the same plugin list through dissect.target's own `target-query -f a,b,c` in one process (records to
/dev/null), on this host's live root, alternating runs. Prints wall time and peak RSS of each and the
ratios (goal: the dissect stage ≤ 1.0× target-query and ≤ 5 s).

    .venv/bin/python tests/bench/bench_dissect.py [--runs 3] [--root /]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def plugin_list() -> list[str]:
    spec = tomllib.loads((REPO / "specs/artifacts/parsers.toml").read_text())
    return next(a for a in spec["artifact"] if a["name"] == "dissect")["options"]["plugins"]


def measured(argv: list[str], **kw: object) -> tuple[float, int, int]:
    """(wall s, peak RSS KiB, exit code) of one child process; a failed child ends the benchmark (a peer
    that stops at once would make any ratio meaningless)."""
    with tempfile.TemporaryFile() as errors:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, **kw)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{argv[0]} exited {proc.returncode}: {errors.read().decode(errors='replace')[-1500:]}")
    return wall, usage.ru_maxrss, proc.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--root", default="/")
    args = ap.parse_args(argv)
    bindir = Path(sys.executable).parent
    target_query = shutil.which("target-query", path=str(bindir)) or shutil.which("target-query")
    if not target_query:
        print("target-query not found (pip install dissect.target)", file=sys.stderr)
        return 2
    plugins = plugin_list()
    ours_s: list[float] = []
    ours_rss: list[int] = []
    peer_s: list[float] = []
    peer_rss: list[int] = []
    stage_s: list[float] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-dissect-") as out:
            cmd = [sys.executable, "-m", "agent", "collect", "--artifacts", "dissect", "--output", out,
                   "--compress", "gzip"] + (["--root", args.root] if args.root != "/" else [])
            wall, rss, rc = measured(cmd, cwd=REPO)
            ours_s.append(wall)
            ours_rss.append(rss)
            bundle = next(Path(out).glob("*.tar.gz"), None)
            if bundle is not None:
                import tarfile

                with tarfile.open(bundle) as tar:
                    custody = json.loads(tar.extractfile("triagent/custody.json").read())
                stage_s.extend(a["seconds"] for a in custody["artifacts"] if a["name"] == "dissect")
        wall, rss, rc = measured([target_query, "-q", "-f", ",".join(plugins), args.root])
        peer_s.append(wall)
        peer_rss.append(rss)
    o, p = statistics.median(ours_s), statistics.median(peer_s)
    orss, prss = max(ours_rss), max(peer_rss)
    stage = statistics.median(stage_s) if stage_s else None
    print(f"plugins: {len(plugins)} ({', '.join(plugins)})")
    print(f"{'':28}{'wall (median)':>15}{'peak RSS':>12}")
    print(f"{'triagent collect (dissect)':28}{o:>13.2f} s{orss / 1024:>9.1f} MiB   dissect stage alone "
          f"{stage if stage is None else round(stage, 2)} s")
    print(f"{'target-query -f ...':28}{p:>13.2f} s{prss / 1024:>9.1f} MiB")
    if stage is not None:
        print(f"dissect stage / target-query: {stage / p:.3f} (goal ≤ 1.0); stage ≤ 5 s: "
              f"{'yes' if stage <= 5 else 'no'}")
    print(f"whole collect run / target-query: wall {o / p:.3f}, peak RSS {orss / prss:.3f} (our process also "
          "starts the pipeline, redacts, gzips and seals the bundle)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
