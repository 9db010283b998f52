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
    from agent.engine import progress

    output = args.output or os.path.dirname(os.path.abspath(args.bundle))  # beside its input, as report does
    log = _log(args.bundle, output)
    previous = progress.listen(None)
    progress.listen(progress.tee(previous, log.listener if log else None))
    code = 3
    try:
        code = analyze(args.bundle, output, args.symbols, args.remote_isf_url, args.verbose)
        return code
    finally:
        progress.listen(previous)
        if log:
            log.line(f"end: exit {code}")
            log.close()


def _log(bundle: str, output: str) -> Any:
    """NAME.analysis.tar.gz.log beside the analysis, as collect's beside its bundle: the steps as they run
    (parsers, findings), so an analysis cut short says where. Lines of an earlier run stay above; none when
    the folder cannot take it (analyze then says why itself)."""
    from agent.engine.progress import LineLog

    name = os.path.basename(bundle).split(".tar")[0] + ".analysis.tar.gz.log"
    try:
        os.makedirs(output, exist_ok=True)
        log = LineLog(os.path.join(output, name), exclusive=False)
    except OSError:
        return None
    log.line(f"triagent analyze: {os.path.basename(bundle)}, pid {os.getpid()}")
    return log
