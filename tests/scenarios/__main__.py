"""Build one scenario's evidence root to look at it by hand:

    .venv/bin/python -m tests.scenarios list
    .venv/bin/python -m tests.scenarios build intr-log-wipe /tmp/root --seed 1234
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from . import SCENARIOS, base_seed, build
from .host import Tools


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.scenarios")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    b = sub.add_parser("build")
    b.add_argument("name", choices=sorted(SCENARIOS))
    b.add_argument("root", type=Path)
    b.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.command == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:<32} expected={s.expected:<4} kinds={','.join(s.kinds)} distros={','.join(s.distros)}")
        return 0
    if args.root.exists() and any(args.root.iterdir()):
        print(f"{args.root} is not empty", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else base_seed()
    built = build(args.name, args.root, seed, Tools(Path(tempfile.gettempdir()) / "triagent-scenario-tools"))
    print(f"seed {seed}: {args.root}")
    for note in built.notes:
        print("  " + note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
