#!/usr/bin/env python3
"""Memory pipeline throughput on a synthetic kcore in /dev/shm (not a test; run it by hand or from CI
logs): prints plain read throughput and OpenSSL SHA-256 throughput (the two bounds), then the
image-only pipeline (read -> SHA-256 -> write, overlapped; to /dev/null and to a tmpfs file) and the
bundle pipeline (streamed to /dev/null; LiME and AVML, each with its peak RSS over the same collector
run without memory), with ratios.
Goal: image-only pipeline >= 0.9 x min(read, SHA-256), and >= 1.3 GB/s on the reference machine.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import kcore_fixture  # noqa: E402

BLOCK = 16 << 20


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
        bundle = _bundle(work, syn)
        figures = {
            "synthetic_ram_bytes": size,
            "plain_read_GBps": round(read_bps / 1e9, 3),
            "openssl_sha256_GBps": round(sha_bps / 1e9, 3),
            "image_only_pipeline_GBps": round(best / 1e9, 3),
            "ratio_to_min_bound": round(best / bound, 3),
            "image_only_to_tmpfs_file_GBps": round(max(results["file"]) / 1e9, 3),
            **bundle,
            "goal": ">= 0.9 x min(read, sha256) and >= 1.3 GB/s",
            "goal_met": best / bound >= 0.9 and best >= 1.3e9,
        }
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
        print(json.dumps(figures))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_child(argv: list[str]) -> tuple[dict, float, int]:
    """(summary, seconds, peak RSS in bytes) of one collector process, its stdout thrown away."""
    import subprocess

    started = time.perf_counter()
    with open(os.devnull, "wb") as sink, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "agent", *argv], stdout=sink, stderr=err,
                                cwd=Path(__file__).resolve().parents[2])
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    assert proc.returncode == 0, lines[-5:]
    return json.loads(lines[-1]), seconds, usage.ru_maxrss * 1024


def _bundle(work: Path, syn: kcore_fixture.Synthetic) -> dict:
    """The bundle pipeline streamed to /dev/null, LiME and AVML, with each process's peak RSS against
    the same collector run without memory (its baseline): what imaging itself holds in memory."""
    common = ["collect", "--artifacts", "clock", "--output", "-", "--no-nice"]
    memory = ["--memory", "--exclude", "memory.symbols", "--memory-source-path", str(syn.kcore),
              "--iomem-path", str(syn.iomem)]
    _, _, baseline = _run_child(common)
    figures: dict = {"baseline_rss_MB": round(baseline / 1e6, 1)}
    for fmt in ("lime", "avml"):
        summary, seconds, rss = _run_child(common + memory + ["--memory-format", fmt])
        figures[f"bundle_{fmt}_GBps"] = round(summary["memory"]["bytes"] / seconds / 1e9, 3)
        figures[f"bundle_{fmt}_rss_MB"] = round(rss / 1e6, 1)
        figures[f"bundle_{fmt}_rss_over_baseline_MB"] = round((rss - baseline) / 1e6, 1)
        figures[f"bundle_{fmt}_rss_ratio_to_baseline"] = round(rss / baseline, 2)
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
