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
    y.add_argument("--output", "-o", required=True, metavar="DIR|-", help="folder for the ISF "
                   "(<release>-btf.json.xz), or - for stdout; a FILE.json.xz path is still taken as the file")
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
    target = _target(args)
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        try:
            with open(target, "xb") as out:
                out.write(data)
        except OSError as exc:
            print(json.dumps({"status": "failed", "reason": f"cannot write {target}: {exc.strerror or exc}"}))
            return EXIT_FATAL
    facts.update(status="built", output=target or "-")
    print(json.dumps(facts), file=sys.stderr if target is None else sys.stdout)
    return EXIT_COMPLETE


def _target(args: argparse.Namespace) -> str | None:
    """-o DIR|- as in every command; the ISF's name is the one volatility3 and the bundle use."""
    from agent.cli import output_file
    from collectors.symbols.collector import _release

    return output_file(args.output, f"{_release(os.path.abspath(args.root))}-btf.json.xz")
