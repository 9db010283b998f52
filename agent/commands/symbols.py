"""`triagent symbols --output FILE`: a volatility3 symbol table for this kernel from its BTF and kallsyms."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from agent.commands import EXIT_COMPLETE, EXIT_FATAL, EXIT_PARTIAL


def add_arguments(sub: Any) -> argparse.ArgumentParser:
    y = sub.add_parser("symbols", help="build a volatility3 symbol table for this kernel from its BTF and kallsyms")
    y.add_argument("--output", "-o", required=True, metavar="FILE", help="the ISF to write (.json.xz), or -")
    y.add_argument("--root", default="/", help="read /proc and /sys under this directory instead")
    return y


def run(args: argparse.Namespace) -> int:
    from collectors.symbols.btf import BTFError
    from collectors.symbols.collector import OBTAIN, build
    from collectors.symbols.isf import NoBTF

    try:
        data, facts = build(os.path.abspath(args.root))
    except NoBTF as exc:
        print(json.dumps({"status": "no_btf", "reason": str(exc), "how": OBTAIN}))
        return EXIT_PARTIAL
    except (BTFError, OSError, ValueError) as exc:
        print(json.dumps({"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}))
        return EXIT_FATAL
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        with open(args.output, "xb") as out:
            out.write(data)
    facts.update(status="built", output=args.output)
    print(json.dumps(facts), file=sys.stderr if args.output == "-" else sys.stdout)
    return EXIT_COMPLETE
