"""Benchmark: build a volatility3 ISF from the fixture kernel's BTF.

Usage: .venv/bin/python tests/bench/bench_btf.py [--preset N] [--fixture DIR]

The host running the benchmark usually has no /sys/kernel/btf, so the BTF comes from the .BTF section of the
fixture vmlinuz and kallsyms is synthesised from the fixture ISF's symbols (shifted by a fake KASLR slide, so the
un-sliding path is exercised too).  Prints wall time per phase, peak RSS and the .json.xz size.
"""

from __future__ import annotations

import argparse
import base64
import json
import lzma
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from collectors.symbols.btf import btf_from_blob, parse_btf  # noqa: E402
from collectors.symbols.isf import build_isf, write_isf  # noqa: E402

DEFAULT_FIXTURE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
    "shared",
    "fixtures",
    "linux-6.1.0-56-cloud-amd64",
)
FAKE_SHIFT = 0x1E400000


def synthetic_inputs(fixture: str) -> tuple[bytes, str, str, str]:
    with open(os.path.join(fixture, "vmlinuz-6.1.0-56-cloud-amd64"), "rb") as fh:
        btf = bytes(btf_from_blob(fh.read()))
    with lzma.open(os.path.join(fixture, "debian-6.1.0-56-cloud-amd64.json.xz")) as fh:
        ref = json.load(fh)
    lines = []
    for name, sym in ref["symbols"].items():
        if not name:
            continue
        addr = sym["address"]
        if addr >= 0xFFFFFFFF80000000:
            addr += FAKE_SHIFT
        lines.append(f"{addr:016x} T {name}")
    banner = base64.b64decode(ref["symbols"]["linux_banner"]["constant_data"]).rstrip(b"\0").decode()
    with open(os.path.join(fixture, "config-6.1.0-56-cloud-amd64")) as fh:
        config = fh.read()
    return btf, "\n".join(lines) + "\n", banner, config


def _prepare(fixture: str, out_dir: str) -> None:
    btf, kallsyms, banner, config = synthetic_inputs(fixture)
    with open(os.path.join(out_dir, "btf"), "wb") as fh:
        fh.write(btf)
    for name, text in (("kallsyms", kallsyms), ("version", banner), ("config", config)):
        with open(os.path.join(out_dir, name), "w") as fh:
            fh.write(text)


def _build(in_dir: str, preset: int) -> None:
    def read(name: str) -> str:
        with open(os.path.join(in_dir, name)) as fh:
            return fh.read()

    t0 = time.perf_counter()
    with open(os.path.join(in_dir, "btf"), "rb") as fh:
        btf = fh.read()
    kallsyms, banner, config = read("kallsyms"), read("version"), read("config")
    t1 = time.perf_counter()
    parse_btf(btf)
    t2 = time.perf_counter()
    isf = build_isf(btf, kallsyms, banner, kernel_config=config)
    t3 = time.perf_counter()
    out = os.path.join(in_dir, "out.json.xz")
    write_isf(isf, out, preset=preset)
    t4 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"BTF {len(btf) / 1e6:.2f} MB, kallsyms {len(kallsyms) / 1e6:.1f} MB -> "
        f"{len(isf['user_types'])} user types, {len(isf['symbols'])} symbols"
    )
    print(f"read inputs           {t1 - t0:.2f} s")
    print(f"parse BTF only        {t2 - t1:.2f} s")
    print(f"build_isf             {t3 - t2:.2f} s   (includes its own BTF parse)")
    print(f"write_isf preset {preset}    {t4 - t3:.2f} s")
    print(f"build+write total     {t4 - t2:.2f} s")
    print(f"peak RSS              {peak / 1024:.0f} MB")
    print(f".json.xz size         {os.path.getsize(out) / 1e6:.2f} MB")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", default=DEFAULT_FIXTURE)
    ap.add_argument("--preset", type=int, default=2)
    ap.add_argument("--stage", choices=("all", "prepare", "build"), default="all")
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage == "prepare":
        _prepare(args.fixture, args.dir)
        return 0
    if args.stage == "build":
        _build(args.dir, args.preset)
        return 0
    # Separate processes so the peak RSS is that of the on-host path, not of unpacking the 58 MB fixture vmlinux
    # and loading the reference ISF.
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--stage", "prepare", "--fixture", args.fixture, "--dir", tmp], check=True
        )
        print(f"fixture prep (unpack bzImage, synthesise kallsyms) {time.perf_counter() - t0:.2f} s")
        cmd = [sys.executable, __file__, "--stage", "build", "--preset", str(args.preset), "--dir", tmp]
        subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
