"""`triagent fleet analyze SOURCE`: responder side; many bundles analysed on a Dask cluster
(agent/responder/fleet.py). Its parser lives here so that nothing of Dask is imported unless it runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_arguments(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("fleet", help="responder side: analyze many bundles (a folder or s3://) on a Dask "
                       "cluster, rows as Parquet tables for rank (needs the 'fleet' extra)")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("analyze", help="one Dask task per bundle: the analysis beside each bundle, its rows "
                           "under SOURCE/tables/<table>/ (specs/tables/*.sql); done bundles are skipped")
    a.add_argument("source", metavar="SOURCE", help="a folder (every worker sees it at this path) or "
                   "s3://BUCKET/PREFIX of bundles (*.tar.gz, *.tar)")
    where = a.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:8786", help="an existing Dask scheduler (Kubernetes "
                       "Dask operator, dask-cloudprovider on ECS/Fargate, plain `dask scheduler`)")
    where.add_argument("--local", type=int, metavar="N", help="a local cluster of N worker processes (default 1)")
    a.add_argument("--endpoint-url", metavar="URL", help="S3-compatible endpoint (MinIO, Ceph ...) for s3://")
    a.add_argument("--symbols", action="append", default=[], metavar="DIR",
                   help="volatility3 symbol folders, at the same path on every worker")
    a.add_argument("--remote-isf-url", metavar="URL", help="a volatility3 ISF index to fetch symbols from")
    a.add_argument("--retries", type=int, default=2, metavar="N",
                   help="times Dask runs a task again after an error of the store or worker (default 2)")
    a.add_argument("--retry-failed", action="store_true", help="analyse again bundles that failed before")
    from agent.engine.progress import add_options

    add_options(a)  # -q, --progress: as collect and analyze
    return p


def run(args: argparse.Namespace) -> int:
    from agent.responder.fleet import EXIT_USAGE, run_fleet

    if args.local is not None and args.local < 1 or args.retries < 0:
        print("triagent fleet: error: --local must be at least 1 and --retries at least 0", file=sys.stderr)
        return EXIT_USAGE
    return run_fleet(args)
