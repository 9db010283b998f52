"""Benchmark of `triagent fleet analyze` on a local Dask cluster: the same 20 bundles with --local 1 and
--local 2 (speed-up), peak RSS of each worker process, and the cost per bundle extrapolated to 500.

The bundles are those of tests/agent/responder/test_fleet.py: 17 made by the real collector from fake roots
(tests/bench/bench_rank.py), 2 `collect --profile minimal` of this machine (processes, sockets), 1 `collect
--memory` of a synthetic /proc/kcore (9 MiB LiME image, no kernel in it). The figures are mostly the
analysis of files and records (dissect.target, the rules, the tables): volatility3 over a real memory image
adds ~100 s per 512 MiB guest to each task (issue 19), which dominates a memory fleet's cost. Each run
starts from fresh copies, so nothing is skipped; the cluster's start-up is inside the wall time (as a user
sees it) and also given apart.

    .venv/bin/python tests/bench/bench_fleet.py [--bundles 20] [--workers 1,2] [--worker-hour-usd 0.0494]

--worker-hour-usd is the price of one worker (one vCPU) for an hour; the default is an assumption (AWS
Fargate list price for 1 vCPU + 2 GB in us-east-1), not a measurement: pass your own."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path[:0] = [str(TESTS / "support"), str(TESTS / "bench")]

from bench_rank import build_fleet  # noqa: E402

# physical RAM of the synthetic /proc/kcore the memory bundles image (tests/support/kcore_fixture.py): ~9 MiB
MEMORY_RAM = [(0x1000, 0x9EFFF), (0x100000, 0x100000 + (8 << 20) - 1)]


def build_corpus(work: Path, good: int = 20, corrupt: bool = True,
                 memory: int = 1) -> tuple[Path, list[str], str | None]:
    """``good`` bundles and, when ``corrupt``, one live bundle cut in half: (folder, keys relative to it, the
    corrupt one's key). Two are `collect --profile minimal` of this host (processes, sockets), ``memory`` are
    `collect --memory` of a synthetic /proc/kcore (a LiME image of ~9 MiB: extract, volatility3 and the merge
    run on the worker; no kernel in it, so volatility3 finds no symbols and says so), the rest come from fake
    roots (tests/bench/bench_rank.py)."""
    import kcore_fixture

    folder, _, _ = build_fleet(work, good - 2 - memory, roots=6, jobs=2)
    runs = [(f"live{n:02d}", ["--profile", "minimal"]) for n in range(2)]
    if memory:
        (work / "kcore").mkdir(exist_ok=True)
        syn = kcore_fixture.build(work / "kcore", MEMORY_RAM, text_over=0x100000 + (1 << 20))
        runs += [(f"mem{n:02d}", ["--memory", "--artifacts", "clock,processes", "--memory-source", "kcore",
                                  "--memory-source-path", str(syn.kcore), "--iomem-path", str(syn.iomem)])
                 for n in range(memory)]
    for name, extra in runs:
        proc = subprocess.run([sys.executable, "-m", "agent", "collect", *extra, "--output", str(folder / name),
                               "--no-nice"], cwd=REPO, capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"collect {' '.join(extra)} failed: {proc.stderr.decode()[-2000:]}")
    bad = None
    if corrupt:
        live = next((folder / "live00").glob("*.tar.gz"))
        (folder / "broken").mkdir(exist_ok=True)
        (folder / "broken" / "corrupt.tar.gz").write_bytes(live.read_bytes()[:live.stat().st_size // 2])
        bad = "broken/corrupt.tar.gz"
    keys = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.tar*")
                  if p.name.endswith((".tar", ".tar.gz")) and ".analysis." not in p.name)
    return folder, keys, bad


def timed_fleet(source: Path, workers: int) -> dict:
    """One `fleet analyze --local N` run in its own process: wall, CPU (driver, scheduler and workers), peak RSS
    of each process sampled every 50 ms, and the run's own summary."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # files: a full pipe would stall the run
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true")  # a folder SOURCE: nothing to do with AWS
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "fleet", "analyze", str(source), "--local", str(workers),
                             "-q"], cwd=REPO, stdout=out, stderr=err, env=env)
    watched = psutil.Process(proc.pid)
    peaks: dict[int, int] = {}
    first_task = None
    while proc.poll() is None:
        try:
            for p in [watched, *watched.children(recursive=True)]:
                try:
                    peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        if first_task is None and any(source.rglob("*.analysis.tar.gz")):
            first_task = time.monotonic() - started
        time.sleep(0.05)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.seek(0)
    err.seek(0)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"fleet exited {proc.returncode}: {err.read().decode()[-2000:]}")
    summary = json.loads(out.read())
    driver = peaks.pop(proc.pid, 0)
    worker_peaks = sorted(peaks.values(), reverse=True)[:workers]  # the worker processes are the largest children
    return {"wall": wall, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "driver_rss": driver, "worker_rss": worker_peaks, "summary": summary, "first_result": first_task}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=20)
    parser.add_argument("--workers", default="1,2", help="comma-separated --local values (default 1,2)")
    parser.add_argument("--worker-hour-usd", type=float, default=0.0494,
                        help="price of one one-vCPU worker for an hour (default: an assumed Fargate list price)")
    parser.add_argument("--work", help="keep the bundles here")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        corpus, keys, _ = build_corpus(work, args.bundles, corrupt=False)
        print(f"build: {len(keys)} bundles with the real collector in {time.monotonic() - started:.1f} s "
              f"(not measured)", flush=True)
        results = {}
        for n in (int(w) for w in args.workers.split(",")):
            source = work / f"run-local{n}"
            shutil.rmtree(source, ignore_errors=True)
            shutil.copytree(corpus, source, ignore=shutil.ignore_patterns("*.analysis.tar.gz*", "tables"))
            r = results[n] = timed_fleet(source, n)
            s = r["summary"]
            done = s["analysed"] + s["reused"]
            print(f"--local {n}: {s['bundles']} bundles ({done} analysed, {s['failed']} failed) in {r['wall']:.1f} s "
                  f"wall ({s['bundles'] / r['wall']:.2f} bundles/s; the run's own {s['seconds']} s after the cluster "
                  f"started; first analysis after {r['first_result'] or float('nan'):.1f} s), task time "
                  f"{s['task_seconds']:.1f} s ({s['task_seconds'] / max(s['bundles'], 1):.2f} s per bundle; CPU "
                  f"{s['task_cpu_seconds'] / max(s['bundles'], 1):.2f} s per bundle in the workers), CPU "
                  f"{r['cpu']:.1f} s; peak RSS per worker "
                  f"{', '.join(f'{v / 2**20:.0f}' for v in r['worker_rss'])} MiB, driver+scheduler "
                  f"{r['driver_rss'] / 2**20:.0f} MiB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
                  flush=True)
        if 1 in results and 2 in results:
            one, two = results[1], results[2]
            print(f"speed-up --local 2 over --local 1: {one['wall'] / two['wall']:.2f}x wall, "
                  f"{one['summary']['seconds'] / two['summary']['seconds']:.2f}x once the cluster is up"
                  + (f" (load average above {os.cpu_count()}: other work holds the cores, the figure is the "
                     "machine's, not the code's)" if os.getloadavg()[0] > (os.cpu_count() or 1) else ""))
        # the least contended run's task time (a shared machine's load inflates wall time, not the work)
        per_bundle = min(r["summary"]["task_seconds"] / max(r["summary"]["bundles"], 1) for r in results.values())
        cpu = min(r["summary"]["task_cpu_seconds"] / max(r["summary"]["bundles"], 1) for r in results.values())
        worker_hours = 500 * per_bundle / 3600
        print(f"500 bundles like these: {per_bundle:.2f} worker-seconds per bundle ({cpu:.2f} CPU-seconds "
              f"in the task; an idle worker's task time comes near it) -> {worker_hours:.2f} worker-hours, "
              f"${worker_hours * args.worker_hour_usd:.3f} at ${args.worker_hour_usd}/worker-hour; "
              f"{500 * per_bundle / 2:.0f} s wall on 2 idle workers, {500 * per_bundle / 50:.0f} s on 50; with a "
              f"512 MiB memory image add ~100 worker-seconds each (~{500 * 100 / 3600:.1f} worker-hours, "
              f"${500 * 100 / 3600 * args.worker_hour_usd:.2f})")
        return 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
