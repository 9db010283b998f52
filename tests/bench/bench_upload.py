"""Upload throughput and memory: a 1 GiB stream to s3rver over loopback through agent/ship/upload.py
(presigned multipart) against curl on the same file: `curl -T` to one presigned PUT, and `curl -T`
of the same 16 MiB parts to presigned UploadPart URLs plus a curl POST of Complete (the same kind
of upload; s3rver's Complete concatenates the parts on disk, which a single PUT never pays).
Goals: ratio >= 0.9, peak RSS <= part size + 40 MB. Reported for buffers=2 (default) and 1.

    .venv/bin/python tests/bench/bench_upload.py [--size 1G] [--part-size 16M]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path[:0] = [str(REPO), str(TESTS / "support")]

import upload_servers as srv  # noqa: E402

from agent.responder import ticket as tk  # noqa: E402
from agent.responder.ticket import parse_size  # noqa: E402

MiB = 1 << 20

# Runs in a fresh interpreter so its peak RSS (VmHWM) is the uploader's alone.
CHILD = r"""
import hashlib, json, sys, time
sys.path.insert(0, sys.argv[1])
from agent.ship import upload as up
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith(("VmHWM", "VmRSS")):
            yield line.split()[0].rstrip(":"), int(line.split()[1]) * 1024
base = dict(hwm())["VmRSS"]
ticket, path, buffers = json.load(open(sys.argv[2])), sys.argv[3], int(sys.argv[4])
t0 = time.monotonic()
u = up.open_upload(ticket, buffers=buffers)
with open(path, "rb", buffering=0) as f:
    while chunk := f.read(1 << 20):
        u.write(chunk)
r = u.close()
dt = time.monotonic() - t0
print(json.dumps({"seconds": dt, "bytes": r.bytes, "sha256": r.sha256, "parts": r.parts,
                  "baseline_rss": base, "peak_rss": dict(hwm())["VmHWM"]}))
"""


def make_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(i.to_bytes(8, "little") + block[8:])
        f.write(block[: size % MiB])


def CA() -> str:  # noqa: N802 - the loopback servers' test CA, for curl
    return str(srv.shared_tls().ca_file)


def curl_multipart(client, s3, data: Path, part_size: int, mem: Path) -> float:
    """Seconds for curl to PUT the file's parts to presigned UploadPart URLs, then POST Complete."""
    size = data.stat().st_size
    ticket = tk.s3_ticket(client, s3.bucket, "bench/curl-multipart.bin", size_hint=size, part_size=part_size,
                          mode="multipart", read_url=False, no_overwrite=False)
    parts = []
    with open(data, "rb") as f:
        for n in range(1, -(-size // part_size) + 1):
            p = mem / f"part{n}"
            p.write_bytes(f.read(part_size))
            parts.append(p)
    t0 = time.monotonic()
    etags = []
    for n, p in enumerate(parts, 1):
        out = subprocess.run(["curl", "-sS", "-f", "--cacert", CA(), "-D", "-", "-o", "/dev/null", "-T", str(p),
                              ticket["part_urls"][n - 1]], check=True, capture_output=True, text=True).stdout
        etags.append(next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.lower().startswith("etag:")))
    xml = "<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, 1)
    ) + "</CompleteMultipartUpload>"
    subprocess.run(["curl", "-sS", "-f", "--cacert", CA(), "-o", "/dev/null", "-X", "POST", "--data-binary", xml,
                    ticket["complete_url"]], check=True)
    seconds = time.monotonic() - t0
    for p in parts:
        p.unlink()
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=parse_size, default=1 << 30)
    ap.add_argument("--part-size", type=parse_size, default=16 * MiB)
    args = ap.parse_args()
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp, \
            tempfile.TemporaryDirectory(dir=shm, prefix="bench-upload-") as mem:
        data = Path(mem) / "stream.bin"
        make_file(data, args.size)
        with srv.run_s3rver(Path(tmp)) as s3:
            client = s3.client()
            # curl -T: one presigned PUT of the same file
            put = tk.s3_ticket(client, s3.bucket, "bench/curl.bin", size_hint=args.size, mode="single",
                               no_overwrite=False, read_url=False)
            t0 = time.monotonic()
            subprocess.run(["curl", "-sS", "-f", "--cacert", str(srv.shared_tls().ca_file), "-o", "/dev/null", "-T",
                            str(data), put["url"]], check=True)
            curl_s = time.monotonic() - t0
            report = {"bytes": args.size, "part_size": args.part_size,
                      "curl_single_put_MBps": round(args.size / curl_s / 1e6, 1),
                      "curl_multipart_MBps": round(args.size / curl_multipart(client, s3, data, args.part_size,
                                                                                Path(mem)) / 1e6, 1)}
            for buffers in (2, 1):
                ticket = tk.s3_ticket(client, s3.bucket, f"bench/ours-{buffers}.bin", size_hint=args.size,
                                      part_size=args.part_size, mode="multipart", read_url=False)
                tfile = Path(mem) / "ticket.json"
                # the loopback s3rver's CA travels in the ticket, as an on-premises store's would
                tfile.write_text(json.dumps(dict(ticket, ca_pem=srv.shared_tls().ca_file.read_text())))
                out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(tfile), str(data), str(buffers)],
                                     check=True, capture_output=True, text=True)
                res = json.loads(out.stdout)
                mbps = args.size / res["seconds"] / 1e6
                report[f"buffers={buffers}"] = {
                    "MBps": round(mbps, 1),
                    "ratio_vs_curl_single_put": round(mbps / report["curl_single_put_MBps"], 2),
                    "ratio_vs_curl_multipart": round(mbps / report["curl_multipart_MBps"], 2),
                    "peak_rss_MB": round(res["peak_rss"] / 1e6, 1),
                    "baseline_rss_MB": round(res["baseline_rss"] / 1e6, 1),
                    "peak_minus_part_size_MB": round((res["peak_rss"] - args.part_size) / 1e6, 1),
                    "parts": res["parts"]}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
