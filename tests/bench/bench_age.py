#!/usr/bin/env python3
"""Throughput of age encryption (not a pytest test).

Over the same data (default 1 GiB, a random 64 MiB block repeated), written to /dev/null:
  * plain copy: the same write loop with no encryption (what a bundle costs without --encrypt);
  * AgeWriter fed from memory, in blocks of --block bytes;
  * file to file: our ``encrypt_stream`` and, when the ``age`` binary is there, ``age -r``, both
    reading the same temporary file (from the page cache after a warm-up read), and the ratio;
  * decryption of age's output: our ``decrypt_stream`` against ``age -d``.

Usage:  python tests/bench/bench_age.py [--size-mib 1024] [--block 1048576] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.bundle import age  # noqa: E402

MIB = 1 << 20
PATTERN = 64 * MIB


def _rate(total: int, seconds: float) -> str:
    return f"{total / seconds / 1e6:8.0f} MB/s  ({seconds:6.2f} s)"


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _memory_loop(pattern: memoryview, total: int, block: int, write: Callable[[memoryview], object]) -> None:
    done = 0
    while done < total:
        for i in range(0, len(pattern), block):
            write(pattern[i : i + block])
        done += len(pattern)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--block", type=int, default=MIB, help="write size for the in-memory runs")
    parser.add_argument("--tmp", default=None, help="directory for the temporary files (2x the size)")
    args = parser.parse_args()
    total = args.size_mib * MIB // PATTERN * PATTERN or PATTERN
    pattern = memoryview(os.urandom(PATTERN))
    identity = age.X25519Identity.generate()
    recipient = identity.recipient()
    print(f"data: {total // MIB} MiB, block {args.block} bytes, cryptography {_crypto_version()}")

    with open(os.devnull, "wb") as null:
        # Writing a view to /dev/null moves no byte at all: the baseline makes the copy a real
        # writer makes (bytes from a read), so it is a copy, not a no-op.
        copied = _timed(lambda: _memory_loop(pattern, total, args.block, lambda b: null.write(bytes(b))))

        def ours() -> None:
            with age.AgeWriter(null, [recipient]) as w:
                # bytes, as the bundle writer hands them over (views of a big buffer would skip a copy)
                _memory_loop(pattern, total, args.block, lambda b: w.write(bytes(b)))

        enc = _timed(ours)
    print(f"plain copy                {_rate(total, copied)}")
    print(f"AgeWriter (memory)        {_rate(total, enc)}   {copied / enc:5.2f}x the copy's speed")

    age_bin = shutil.which("age")
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-age-") as tmp:
        src = Path(tmp) / "plain"
        with open(src, "wb") as f:
            _memory_loop(pattern, total, 16 * MIB, f.write)
        with open(src, "rb") as f:  # warm the page cache so both sides read from memory
            while f.read(16 * MIB):
                pass

        def ours_file() -> None:
            with open(src, "rb") as s, open(os.devnull, "wb") as d:
                age.encrypt_stream(s, d, [recipient])

        ours_f = _timed(ours_file)
        print(f"encrypt_stream file       {_rate(total, ours_f)}")
        if age_bin is None:
            print("age -r                    (skipped: no age binary; apt-get install age)")
            return 0
        theirs = _timed(lambda: subprocess.run([age_bin, "-r", str(recipient), "-o", os.devnull, str(src)],
                                               check=True))
        print(f"age -r file               {_rate(total, theirs)}   ours/age = {theirs / ours_f:5.2f}x")

        key = Path(tmp) / "key.txt"
        key.write_text(f"{identity}\n")
        enc_file = Path(tmp) / "plain.age"
        subprocess.run([age_bin, "-r", str(recipient), "-o", str(enc_file), str(src)], check=True)
        src.unlink()
        with open(enc_file, "rb") as f:
            while f.read(16 * MIB):
                pass

        def ours_dec() -> None:
            with open(enc_file, "rb") as s, open(os.devnull, "wb") as d:
                assert age.decrypt_stream(s, d, [identity]) == total

        ours_d = _timed(ours_dec)
        theirs_d = _timed(lambda: subprocess.run([age_bin, "-d", "-i", str(key), "-o", os.devnull, str(enc_file)],
                                                 check=True))
        print(f"decrypt_stream file       {_rate(total, ours_d)}")
        print(f"age -d file               {_rate(total, theirs_d)}   ours/age = {theirs_d / ours_d:5.2f}x")
    return 0


def _crypto_version() -> str:
    import cryptography

    return cryptography.__version__


if __name__ == "__main__":
    sys.exit(main())
