"""`triagent fleet analyze SOURCE`: responder side; many bundles analysed on a Dask cluster (stub: being
written)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.commands import EXIT_USAGE


def add_arguments(sub: Any) -> argparse.ArgumentParser:
    return sub.add_parser("fleet", help="responder side: analyze many bundles (a folder or s3://) on a Dask "
                          "cluster, rows as Parquet tables for rank (needs the 'fleet' extra)")


def run(args: argparse.Namespace) -> int:
    print("triagent fleet: not available yet", file=sys.stderr)
    return EXIT_USAGE
