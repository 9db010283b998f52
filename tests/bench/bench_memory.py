#!/usr/bin/env python3
"""Memory pipeline throughput on a synthetic kcore in /dev/shm (not a test; run it by hand or from CI
logs): prints plain read throughput and OpenSSL SHA-256 throughput (the two bounds), then the
image-only pipeline (read -> SHA-256 -> write, overlapped; to /dev/null and to a tmpfs file) and the
bundle pipeline (streamed to /dev/null; LiME and AVML, each with its peak RSS over the same collector
run without memory), with ratios. AVML runs twice: on the random RAM (snappy shrinks nothing: everything
goes to the companion LiME) and on a mixed RAM (per 1 MiB: a zero block, a random one, two of the
fixture's address pattern), each beside the bound min(0.9 x min(read, SHA-256), snappy's single-core rate
on that RAM x the cores used).
Goals: image-only and LiME in a bundle >= 0.9 x min(read, SHA-256) (image-only also >= 1.3 GB/s on the
reference machine); AVML in a bundle >= its bound; RSS over the baseline <= 40 MB.
The machine's load is printed beside the figures: the CPU others used while the bundle runs ran (in
cores), and the load average before and after.

    python tests/bench/bench_memory.py [--gib 2] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import kcore_fixture  # noqa: E402

BLOCK = 16 << 20
RSS_GOAL = 40e6


def _busy_jiffies() -> int:
    """CPU time (in clock ticks) every process of the machine spent, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _snappy_rate(path: Path, offset: int, size: int) -> float:
    """snappy's framed compression on one core, over the RAM as imaged (1 MiB blocks, as AVML's)."""
    import cramjam

    fd = os.open(path, os.O_RDONLY)
    block = 1 << 20
    scratch = bytearray(2 * block)
    data = [os.pread(fd, block, offset + pos) for pos in range(0, min(size, 256 * block), block)]
    os.close(fd)
    started = time.perf_counter()
    for chunk in data:
        cramjam.snappy.compress_into(chunk, memoryview(scratch))
    return len(data) * block / (time.perf_counter() - started)


def _read_throughput(path: Path, offset: int, size: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    buf = bytearray(BLOCK)
    started = time.perf_counter()
    pos = 0
    while pos < size:
        pos += os.preadv(fd, [memoryview(buf)[:min(BLOCK, size - pos)]], offset + pos)
    seconds = time.perf_counter() - started
    os.close(fd)
    return size / seconds


def _sha_throughput(size: int) -> float:
    data = os.urandom(BLOCK)
    digest = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(size // BLOCK):
        digest.update(data)
    return size / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0, help="size of the synthetic RAM (default 2 GiB)")
    parser.add_argument("--dir", default="/dev/shm", help="where the synthetic kcore and outputs live")
    args = parser.parse_args()
    from agent.engine.image_only import write_image

    size = int(args.gib * (1 << 30)) // BLOCK * BLOCK
    work = Path(tempfile.mkdtemp(prefix="triagent-bench-", dir=args.dir))
    try:
        noise = os.urandom(BLOCK)
        syn = kcore_fixture.build(work / "src", [(0x100000, 0x100000 + size - 1)],
                                  fill=lambda paddr, n: (noise * 2)[paddr % BLOCK:paddr % BLOCK + n])
        data_offset = 4096 * 2  # first PT_LOAD's data: after headers and note (see kcore_fixture)
        read_bps = max(_read_throughput(syn.kcore, data_offset, size) for _ in range(2))
        sha_bps = max(_sha_throughput(size) for _ in range(2))
        options = {"format": "lime", "source": "kcore", "source_paths": {"kcore": str(syn.kcore)},
                   "iomem_path": str(syn.iomem)}
        results: dict[str, list[float]] = {}
        # to /dev/null: read + hash + write calls, without the cost of new tmpfs pages (in a VM the first
        # touch of guest memory is slow, which would measure the hypervisor, not us); then to a file
        for target in ("/dev/null", "/dev/null", str(work / "image0.lime"), str(work / "image1.lime")):
            started = time.perf_counter()
            saved = sys.stdout
            sys.stdout = open(os.devnull, "w")  # write_image prints its summary line
            try:
                code = write_image(target, options, threading.Event(), [], None, 0, 3600)
            finally:
                sys.stdout.close()
                sys.stdout = saved
            seconds = time.perf_counter() - started
            assert code == 0, f"write_image exited {code}"
            results.setdefault("null" if target == "/dev/null" else "file", []).append((size + 32) / seconds)
            if target != "/dev/null":
                os.unlink(target)
        bound = min(read_bps, sha_bps)
        best = max(results["null"])
        load_before = os.getloadavg()
        bundle = _bundle(work, syn, bound, _snappy_rate(syn.kcore, data_offset, size))
        mixed = kcore_fixture.build(work / "mixed", [(0x100000, 0x100000 + size - 1)], fill=_mixed(noise))
        bundle.update(_bundle(work, mixed, bound, _snappy_rate(mixed.kcore, data_offset, size),
                              formats=("avml",), label="_mixed"))
        figures = {
            "synthetic_ram_bytes": size,
            "cores": _cores(),
            "plain_read_GBps": round(read_bps / 1e9, 3),
            "openssl_sha256_GBps": round(sha_bps / 1e9, 3),
            "bound_min_read_sha256_GBps": round(bound / 1e9, 3),
            "image_only_pipeline_GBps": round(best / 1e9, 3),
            "ratio_to_min_bound": round(best / bound, 3),
            "image_only_to_tmpfs_file_GBps": round(max(results["file"]) / 1e9, 3),
            **bundle,
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "goal": ">= 0.9 x min(read, sha256) and >= 1.3 GB/s; bundle_*_ratio_to_bound >= 1 (0.9 for LiME); "
                    "rss over baseline <= 40 MB",
            "goal_met": best / bound >= 0.9 and best >= 1.3e9,
            "bundle_goals_met": all(v for k, v in bundle.items() if k.endswith("_goal_met")),
        }
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
        print(json.dumps(figures))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _mixed(noise: bytes) -> Callable[[int, int], bytes]:
    """Per 1 MiB of RAM: a zero block, a random one, then two of the address pattern (which snappy
    shrinks), as a host's RAM mixes free, encrypted or compressed, and ordinary pages."""
    mib = 1 << 20

    def fill(paddr: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            at = paddr + len(out)
            take = min(n - len(out), mib - at % mib)
            kind = at // mib % 4
            if kind == 0:
                out += bytes(take)
            elif kind == 1:
                out += (noise * 2)[at % BLOCK:at % BLOCK + take]
            else:
                out += kcore_fixture.pattern(at, take)
        return bytes(out)

    return fill


def _run_child(argv: list[str]) -> tuple[dict, float, int, float, float]:
    """(summary, seconds, peak RSS in bytes, cores the rest of the machine kept busy meanwhile, its CPU
    seconds) of one collector process, its stdout thrown away."""
    import subprocess

    busy = _busy_jiffies()
    started = time.perf_counter()
    peak = 0
    with open(os.devnull, "wb") as sink, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "agent", *argv], stdout=sink, stderr=err,
                                cwd=Path(__file__).resolve().parents[2])
        # the child's own high-water mark, polled: wait4's ru_maxrss counts the copy of this (large)
        # process the child was before its exec
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _vm_hwm(proc.pid))
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        others = (_busy_jiffies() - busy) / os.sysconf("SC_CLK_TCK") - usage.ru_utime - usage.ru_stime
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    assert proc.returncode == 0, lines[-5:]
    return json.loads(lines[-1]), seconds, peak, max(0.0, others / seconds), usage.ru_utime + usage.ru_stime


def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _bundle(work: Path, syn: kcore_fixture.Synthetic, bound: float, snappy_bps: float,
            formats: tuple[str, ...] = ("lime", "avml"), label: str = "") -> dict:
    """The bundle pipeline streamed to /dev/null, LiME and AVML, each beside its bound, with each
    process's peak RSS against the same collector run without memory (its baseline): what imaging
    itself holds in memory. Rates are of the RAM imaged (what the image covers), not of bytes written, over
    the process's time less the baseline's (start-up, the clock artifact, sealing); the whole process's
    rate beside it."""
    common = ["collect", "--artifacts", "clock", "--output", "-", "--no-nice"]
    memory = ["--memory", "--exclude", "memory.symbols", "--memory-source-path", str(syn.kcore),
              "--iomem-path", str(syn.iomem)]
    _, baseline_s, baseline, _, baseline_cpu = min((_run_child(common) for _ in range(2)), key=lambda r: r[1])
    ram = sum(e - s + 1 for s, e in syn.ram)
    figures: dict = {f"baseline_rss{label}_MB": round(baseline / 1e6, 1),
                     f"baseline{label}_seconds": round(baseline_s, 2)}
    for fmt in formats:
        key = f"bundle_{fmt}{label}"
        summary, seconds, rss, others, cpu = _run_child(common + memory + ["--memory-format", fmt])
        rate = ram / max(1e-3, seconds - baseline_s)
        goal = 0.9 * bound if fmt == "lime" else min(0.9 * bound, snappy_bps * min(2, _cores()))
        figures[f"{key}_GBps"] = round(rate / 1e9, 3)
        figures[f"{key}_whole_process_GBps"] = round(ram / seconds / 1e9, 3)
        figures[f"{key}_bytes_written"] = summary["memory"]["bytes"]
        if fmt == "avml":
            figures[f"{key}_snappy_single_core_GBps"] = round(snappy_bps / 1e9, 3)
        figures[f"{key}_bound_GBps"] = round(goal / 1e9, 3)
        figures[f"{key}_ratio_to_bound"] = round(rate / goal, 3)
        figures[f"{key}_ratio_to_min_read_sha256"] = round(rate / bound, 3)
        figures[f"{key}_other_processes_cores_busy"] = round(others, 2)
        # what the load cannot change: CPU time per GB imaged (two SHA-256 passes cost 2 / sha256 rate)
        figures[f"{key}_cpu_seconds_per_GB"] = round((cpu - baseline_cpu) / (ram / 1e9), 3)
        figures[f"{key}_rss_MB"] = round(rss / 1e6, 1)
        figures[f"{key}_rss_over_baseline_MB"] = round((rss - baseline) / 1e6, 1)
        figures[f"{key}_goal_met"] = rate >= goal and rss - baseline <= RSS_GOAL
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
