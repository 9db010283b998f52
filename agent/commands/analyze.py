"""`triagent analyze BUNDLE`: the responder's parsers over a bundle (agent/analysis/analyze.py). Its
parser lives here, apart from agent.analysis, so that nothing of the analysis is imported unless
this command runs."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_arguments(sub: Any) -> argparse.ArgumentParser:
    a = sub.add_parser("analyze", help="parsers over a bundle on the responder's side (volatility3, dissect.target)")
    a.add_argument("bundle", help="a bundle made by collect")
    a.add_argument("--output", "-o", metavar="DIR", help="where the analysis bundle goes (default: beside the "
                   "bundle, as NAME.analysis.tar.gz)")
    a.add_argument("--symbols", action="append", default=[], metavar="DIR",
                   help="volatility3 symbol folders (ISF .json.xz under linux/), chosen by exact banner")
    a.add_argument("--remote-isf-url", metavar="URL", help="a volatility3 ISF index to fetch symbols from")
    a.add_argument("--verbose", "-v", action="store_true")
    from agent.engine.progress import add_options

    add_options(a)
    return a


def run(args: argparse.Namespace) -> int:
    from agent.analysis.analyze import analyze

    output = args.output or os.path.dirname(os.path.abspath(args.bundle))  # beside its input, as report does
    return analyze(args.bundle, output, args.symbols, args.remote_isf_url, args.verbose)
