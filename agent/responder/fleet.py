"""triagent fleet analyze SOURCE: every bundle of a folder or an S3 prefix analysed on a Dask cluster.

One Dask task per bundle (Dask schedules, retries a lost worker's tasks elsewhere and balances; nothing here
is a scheduler). A task fetches its bundle into the worker's scratch space, runs the same code as `triagent
analyze` (agent.analysis.analyze.analyse_bundle), puts the analysis bundle beside its source
(``NAME.analysis.tar.gz`` and its ``.sha256``) and the bundle's rows, made by rank's own code
(agent.responder.rank.bundle_rows), as one Parquet file per table under ``SOURCE/tables/<table>/`` in the
layout of specs/tables/*.sql, so that DuckDB, Athena, Trino or Spark query the fleet where it lies and
`triagent rank --tables SOURCE/tables` ranks it.

Idempotent: each bundle's last step writes a receipt (``SOURCE/tables/_receipts/<id>.json``: the source's
SHA-256, size and version, the outcome); a bundle whose receipt still matches its source (same size and S3
ETag or file mtime) and whose analysis and rows are there is skipped. Without a receipt, an analysis beside
the bundle whose custody names the same source SHA-256 is reused instead of being made again. Every file a
task writes has a name fixed by the bundle's key, so a retried task replaces, never duplicates. A bundle
that cannot be analysed is recorded (its hosts row carries ``error``, its receipt the reason) and never
stops the rest; `--retry-failed` tries such bundles again.

dask[distributed], duckdb, pyarrow (and boto3 for s3://) are the optional extra ``fleet``; the collector
never imports this module."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.bundle.reader import CUSTODY_NAME, BundleView, dumps, shown

TABLES_DIR = "tables"
RECEIPTS = f"{TABLES_DIR}/_receipts"  # Hive, Athena and Trino ignore folders starting with "_"
ANALYSIS_SUFFIX = ".analysis.tar.gz"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FATAL = 0, 1, 2, 3


def is_bundle_key(key: str) -> bool:
    """A triage bundle's name: *.tar.gz or *.tar, not an analysis bundle, nothing under SOURCE/tables/."""
    name = key.rsplit("/", 1)[-1]
    return (name.endswith((".tar.gz", ".tar")) and ".analysis.tar" not in name and not name.startswith(".")
            and not key.startswith(f"{TABLES_DIR}/"))


def is_safe_key(key: str) -> bool:
    """A key that names a file inside the worker's scratch folder when its segments become a path: an S3 key
    may hold "..", empty segments, a leading "/" or a NUL, which would lead out of it."""
    return bool(key) and "\0" not in key and all(part not in ("", ".", "..") for part in key.split("/"))


def analysis_key(key: str) -> str:
    head, _, name = key.rpartition("/")
    return (f"{head}/" if head else "") + name.split(".tar")[0] + ANALYSIS_SUFFIX


def bundle_id(key: str) -> str:
    """The bundle's file names under tables/: fixed by its key, so a retried task replaces its own files."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:20]


# --------------------------------------------------------------------------------------------------
# Where the bundles are: a folder or an S3 prefix (picklable: it travels to the workers)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stat:
    size: int
    version: str  # S3 ETag, or a file's mtime in ns: changes when the bytes do


class FolderStore:
    """SOURCE as a folder every worker sees at the same path (local, NFS, EFS ...)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def url(self, key: str = "") -> str:
        return os.path.join(self.root, *key.split("/")) if key else self.root

    def bundles(self) -> list[tuple[str, Stat]]:
        from agent.bundle.reader import walk_regular

        tables = os.path.join(self.root, TABLES_DIR)
        found = []
        for path in walk_regular(self.root, lambda d: os.path.realpath(d) == os.path.realpath(tables), []):
            key = os.path.relpath(path, self.root).replace(os.sep, "/")
            if is_bundle_key(key) and (stat := self.stat(key)):
                found.append((key, stat))
        return sorted(found)

    def stat(self, key: str) -> Stat | None:
        try:
            st = os.stat(self.url(key))
        except OSError:
            return None
        return Stat(st.st_size, str(st.st_mtime_ns))

    def get(self, key: str, local: str) -> None:
        shutil.copyfile(self.url(key), local)

    def read(self, key: str) -> bytes | None:
        try:
            with open(self.url(key), "rb") as handle:
                return handle.read(1 << 20)
        except OSError:
            return None

    def put(self, local: str, key: str) -> None:
        target = self.url(key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.tmp-{os.getpid()}"
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)  # a reader never sees half a file

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.url(key))


_CLIENTS: dict[str | None, Any] = {}


class S3Store:
    """SOURCE as s3://bucket/prefix, read and written with boto3 and the credentials of whoever runs the task
    (the responder's, or the workers' role on a cluster); ``endpoint_url`` for S3-compatible servers."""

    def __init__(self, url: str, endpoint_url: str | None = None):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{url!r}: no bucket (s3://BUCKET/PREFIX)")
        self.bucket, self.prefix, self.endpoint_url = bucket, prefix.strip("/"), endpoint_url

    def __getstate__(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "prefix": self.prefix, "endpoint_url": self.endpoint_url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def client(self) -> Any:
        # one client per process and endpoint: boto3 clients are thread-safe, making one is not cheap
        if self.endpoint_url not in _CLIENTS:
            import boto3

            _CLIENTS[self.endpoint_url] = boto3.session.Session().client("s3", endpoint_url=self.endpoint_url)
        return _CLIENTS[self.endpoint_url]

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._full(key)}" if key else f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def bundles(self) -> list[tuple[str, Stat]]:
        found = []
        start = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            for obj in page.get("Contents") or []:
                key = obj["Key"][len(start):]
                if is_bundle_key(key):
                    found.append((key, Stat(int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))))
        return sorted(found)

    def stat(self, key: str) -> Stat | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return Stat(int(head["ContentLength"]), str(head.get("ETag", "")).strip('"'))

    def get(self, key: str, local: str) -> None:
        self.client.download_file(self.bucket, self._full(key), local)

    def read(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key), Range="bytes=0-1048575")[
                "Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def put(self, local: str, key: str) -> None:
        self.client.upload_file(local, self.bucket, self._full(key))  # an object appears whole or not at all

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))


Store = FolderStore | S3Store


def open_store(source: str, endpoint_url: str | None = None) -> Store:
    return S3Store(source, endpoint_url) if source.startswith("s3://") else FolderStore(source)


# --------------------------------------------------------------------------------------------------
# One task: one bundle
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    symbols: tuple[str, ...] = ()
    remote_isf_url: str | None = None
    retry_failed: bool = False
    run: str = ""  # this run's id, in each receipt: a task Dask runs again finds its own receipt (see _already)


@dataclass
class Outcome:
    """What one task did: analysed, reused (an analysis beside it from the same bytes), skipped (its receipt
    matches), or failed (``reason``)."""

    bundle: str
    status: str
    reason: str | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the worker process while the task ran (one task at a time per worker process)
    worker: str | None = None
    score: int | None = None
    recommendation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _scratch() -> str:
    """A folder in the worker's own scratch space (its --local-directory), else the system's."""
    try:
        from distributed import get_worker

        base = get_worker().local_directory
    except (ImportError, ValueError):
        base = None
    return tempfile.mkdtemp(prefix="triagent-fleet-", dir=base)


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


def _sha256(path: str) -> str:
    from collectors.util import sha256_file

    return sha256_file(path, 8 << 20)


def _receipt(store: Store, key: str) -> dict[str, Any] | None:
    data = store.read(f"{RECEIPTS}/{bundle_id(key)}.json")
    try:
        receipt = json.loads(data) if data else None
    except ValueError:
        return None
    return receipt if isinstance(receipt, dict) and receipt.get("bundle") == key else None


def _custody_source(path: str) -> str | None:
    """The source SHA-256 an analysis bundle's custody names, or None when it cannot be read."""
    try:
        with BundleView(path, lambda _stream: False, hash_file=False) as view:
            if view.error:
                return None
            value = view.json(CUSTODY_NAME).get("source_bundle_sha256")
    except Exception:  # a damaged analysis bundle is made again, as if it were not there
        return None
    return value if isinstance(value, str) else None


def analyse_task(store: Store, key: str, options: Options) -> dict[str, Any]:
    """Runs on a worker: one bundle from fetch to receipt. Never raises for the bundle's own faults (they are
    its outcome); a fault of the store or the worker raises, and Dask retries the task elsewhere."""
    started, cpu = time.monotonic(), time.process_time()
    outcome = Outcome(key, "analysed", worker=_worker_name())
    if not is_safe_key(key):  # the driver never submits one; a task is a public function all the same
        outcome.status, outcome.reason = "failed", "not a safe name for a file"
        return outcome.__dict__
    stat = store.stat(key)
    if stat is None:
        outcome.status, outcome.reason = "failed", "the bundle disappeared before it was analysed"
        return outcome.__dict__
    hid = bundle_id(key)
    if (done := _already(store, key, stat, options)) is not None:
        outcome.status, outcome.reason = done
        outcome.seconds = round(time.monotonic() - started, 3)
        return outcome.__dict__
    scratch = _scratch()
    try:
        base = os.path.join(scratch, "source")
        local = os.path.join(base, *key.split("/"))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        store.get(key, local)
        if store.stat(key) != stat:  # replaced while fetched: the receipt would pair new bytes with the old version
            raise RuntimeError(f"{store.url(key)} changed while it was fetched")  # Dask runs the task again
        sha256 = _sha256(local)
        local_analysis = analysis_key(local)
        summary = _analysis(store, key, local, local_analysis, sha256, options, outcome)
        rows = _rows(local, base, outcome)
        made = _write_tables(store, hid, rows, os.path.join(scratch, "tables"))
        if outcome.status != "failed":
            host = rows["hosts"][0]
            outcome.score, outcome.recommendation = host.get("score"), host.get("recommendation")
            if outcome.status == "analysed":
                store.put(local_analysis + ".sha256", analysis_key(key) + ".sha256")
                store.put(local_analysis, analysis_key(key))
        receipt = {"bundle": key, "source": store.url(key), "source_sha256": sha256, "source_size": stat.size,
                   "source_version": stat.version, "status": outcome.status, "reason": outcome.reason,
                   "analysis": None if outcome.status == "failed" else analysis_key(key),
                   "analysis_sha256": (summary or {}).get("sha256"), "tables": made, "worker": outcome.worker,
                   "run": options.run,
                   "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path = os.path.join(scratch, "receipt.json")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(dumps(receipt, indent=1))
        store.put(path, f"{RECEIPTS}/{hid}.json")  # last: the bundle is done only once this is there
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    outcome.seconds = round(time.monotonic() - started, 3)
    outcome.cpu_seconds = round(time.process_time() - cpu, 3)
    return outcome.__dict__


def _already(store: Store, key: str, stat: Stat, options: Options) -> tuple[str, str | None] | None:
    """(status, reason) when the receipt says this very source is done, else None (analyse it)."""
    receipt = _receipt(store, key)
    if not receipt or receipt.get("source_size") != stat.size or receipt.get("source_version") != stat.version:
        return None
    if not all(store.stat(k) for k in receipt.get("tables") or [None]):
        return None  # rows lost since: made again
    if options.run and receipt.get("run") == options.run:
        # done in this very run: Dask ran the task again (its result was on a worker that was lost before the
        # driver read it); the bundle keeps the outcome it had
        return str(receipt.get("status")), receipt.get("reason")
    if receipt.get("status") == "failed":
        return None if options.retry_failed else ("failed", f"failed before (--retry-failed to try again): "
                                                            f"{receipt.get('reason')}")
    if receipt.get("analysis") and store.stat(receipt["analysis"]):
        return "skipped", None
    return None


def _analysis(store: Store, key: str, local: str, local_analysis: str, sha256: str, options: Options,
              outcome: Outcome) -> dict[str, Any] | None:
    """The analysis beside ``local``: the one beside the source when its custody names the same bytes, else
    made here. Sets ``outcome`` (reused, analysed or failed) and returns analyze's summary when made."""
    from agent.analysis.analyze import AnalysisError, analyse_bundle

    if store.stat(analysis_key(key)):
        store.get(analysis_key(key), local_analysis)
        if _custody_source(local_analysis) == sha256:
            outcome.status = "reused"
            return None
        os.unlink(local_analysis)  # made from other bytes, or damaged: made again
    try:
        summary = analyse_bundle(local, local_analysis, list(options.symbols), options.remote_isf_url,
                                 source=store.url(key))
    except AnalysisError as exc:
        outcome.status, outcome.reason = "failed", f"analyze wrote nothing: {exc}"
        return None
    except Exception as exc:  # a bundle no parser foresaw: recorded, the fleet goes on
        outcome.status, outcome.reason = "failed", f"analyze failed: {type(exc).__name__}: {exc}"[:500]
        return None
    if summary.get("unreadable"):
        outcome.status, outcome.reason = "failed", f"the bundle cannot be read: {summary['unreadable']}"[:500]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local_analysis)
            os.unlink(local_analysis + ".sha256")
        return None
    outcome.extra = {k: summary.get(k) for k in ("status", "source_verified", "problems", "errors") if summary.get(k)}
    return summary


def _rows(local: str, base: str, outcome: Outcome) -> dict[str, list[dict[str, Any]]]:
    """Rank's rows for the bundle (findings from the analysis beside it); a failed bundle's hosts row says why."""
    from agent.responder import rank

    try:
        rows = rank.bundle_rows(local, base)
    except Exception as exc:  # a record no parser foresaw: the host is still reported
        rows = {t: [] for t in rank.TABLES}
        rows["hosts"] = [{"host_key": os.path.relpath(local, base).replace(os.sep, "/"),
                          "bundle": os.path.basename(local),
                          "error": f"cannot process the bundle: {type(exc).__name__}: {exc}"[:500]}]
    host = rows["hosts"][0]
    if outcome.status == "failed":
        host["error"] = host.get("error") or outcome.reason
    elif host.get("error"):
        outcome.status, outcome.reason = "failed", host["error"]
    return rows


def _write_tables(store: Store, hid: str, rows: dict[str, list[dict[str, Any]]], folder: str) -> list[str]:
    """One Parquet file per table for this bundle, ``tables/<table>/bundle-<id>.parquet``; returns their keys."""
    from agent.responder import rank

    specs = rank.load_table_specs()
    for table in rank.TABLES:
        os.makedirs(os.path.join(folder, table), exist_ok=True)
    stem = f"bundle-{hid}"
    rank.write_parts(folder, 0, rows, specs, stem=stem)
    keys = []
    for table in rank.TABLES:
        key = f"{TABLES_DIR}/{table}/{stem}.parquet"
        store.put(os.path.join(folder, table, f"{stem}.parquet"), key)
        keys.append(key)
    return keys


# --------------------------------------------------------------------------------------------------
# The driver: submit, watch, summarise
# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def cluster_client(scheduler: str | None, local: int | None) -> Iterator[Any]:
    """A distributed.Client: to an existing scheduler, or to a LocalCluster of ``local`` one-thread worker
    processes (analysis holds the GIL in Python parsers: processes, not threads, use the cores)."""
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, timeout="30s")
        try:
            yield client
        finally:
            client.close(timeout=30)
        return
    cluster = LocalCluster(n_workers=local or 1, threads_per_worker=1, processes=True, dashboard_address=None,
                           host="127.0.0.1")
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close(timeout=30)
    finally:
        cluster.close(timeout=60)  # bounded: the summary is out already, a slow worker must not hold the shell


class Board:
    """Progress on stderr (done, failed, running, rate, ETA), one line rewritten in place."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.started = time.monotonic()
        self.done = self.failed = self.running = 0
        self.shown = 0.0

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.shown < 0.5):
            return
        self.shown = now
        finished = self.done + self.failed
        rate = finished / max(now - self.started, 1e-6)
        eta = f"{(self.total - finished) / rate:.0f} s" if rate > 0 and finished else "?"
        print(f"\rtriagent fleet: {finished}/{self.total} ({self.done} done, {self.failed} failed, "
              f"{self.running} running), {rate:.2f}/s, ETA {eta}   ", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            self.update(force=True)
            print(file=sys.stderr, flush=True)


def analyse_fleet(store: Store, client: Any, options: Options, retries: int = 2,
                  show: bool = False) -> dict[str, Any]:
    """Submits one task per bundle and gathers their outcomes as they end; the summary of the run."""
    from distributed import as_completed

    started = time.monotonic()
    bundles = store.bundles()
    refused = [key for key, _ in bundles if not is_safe_key(key)]
    bundles = [(key, stat) for key, stat in bundles if is_safe_key(key)]
    board = Board(len(bundles), show)
    counts = {"analysed": 0, "reused": 0, "skipped": 0, "failed": 0}
    failures: list[dict[str, Any]] = []
    workers = len(client.scheduler_info().get("workers", {}))
    futures = {client.submit(analyse_task, store, key, options, key=f"triagent-fleet-{bundle_id(key)}-{stat.version}",
                             retries=retries, pure=False): key for key, stat in bundles}
    seconds = cpu = 0.0
    polled = 0.0
    for future in as_completed(list(futures)) if futures else ():  # as_completed([]) wants a default client
        try:
            outcome = future.result()
        except Exception as exc:  # retries spent, or the worker was lost too often (KilledWorker)
            outcome = {"bundle": futures[future], "status": "failed",
                       "reason": f"the task failed: {type(exc).__name__}: {exc}"[:500]}
        # forgotten once read: else the scheduler keeps the result on its worker and, when that worker is
        # lost, runs the finished task again elsewhere
        future.release()
        counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
        seconds += float(outcome.get("seconds") or 0)
        cpu += float(outcome.get("cpu_seconds") or 0)
        if outcome["status"] == "failed":
            board.failed += 1
            failures.append({"bundle": outcome["bundle"], "reason": outcome.get("reason")})
        else:
            board.done += 1
        if show and time.monotonic() - polled > 1.0:  # what the scheduler says is running now
            polled = time.monotonic()
            with contextlib.suppress(Exception):
                board.running = sum(len(v) for v in client.processing().values())
        board.update()
    board.running = 0
    board.close()
    wall = time.monotonic() - started
    return {"source": store.url(), "bundles": len(bundles), **counts, "workers": workers,
            "seconds": round(wall, 2), "task_seconds": round(seconds, 2), "task_cpu_seconds": round(cpu, 2),
            "bundles_per_s": round(len(bundles) / wall, 2) if wall else None,
            "tables": store.url(TABLES_DIR), "failures": failures[:20],
            **({"refused_names": [shown(k, 200) for k in refused[:20]]} if refused else {})}


def run_fleet(args: Any) -> int:
    """`triagent fleet analyze` with parsed arguments (agent/commands/fleet.py)."""
    import importlib.util

    needed = ["distributed", "pyarrow", "duckdb"] + (["boto3"] if args.source.startswith("s3://") else [])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        print(f"triagent fleet: needs {', '.join(missing)}: pip install 'triagent[fleet]'", file=sys.stderr)
        return EXIT_FATAL
    if not args.source.startswith("s3://") and not os.path.isdir(args.source):
        print(f"triagent fleet: error: {shown(args.source)} is neither a folder nor s3://BUCKET/PREFIX",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        store = open_store(args.source, args.endpoint_url)
    except ValueError as exc:
        print(f"triagent fleet: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from agent.engine.progress import wanted

    show = wanted(args.quiet, args.progress)  # a terminal, or --progress; never under -q
    options = Options(tuple(os.path.abspath(s) for s in args.symbols), args.remote_isf_url, args.retry_failed,
                      run=uuid.uuid4().hex)
    summary: dict[str, Any] | None = None
    try:
        with cluster_client(args.scheduler, args.local) as client:
            summary = analyse_fleet(store, client, options, args.retries, show)
            # out before the cluster is taken down: the results stand whatever its shutdown does
            print(dumps(summary, separators=(",", ":"))[:4000], flush=True)
    except (OSError, TimeoutError) as exc:  # the scheduler cannot be reached; a shutdown that took too long
        print(f"triagent fleet: error: {shown(exc)}", file=sys.stderr)
        if summary is None:
            return EXIT_FATAL
    assert summary is not None
    return EXIT_FAILED if summary["failed"] else EXIT_OK
