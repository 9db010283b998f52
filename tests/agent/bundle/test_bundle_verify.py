"""The bundle writer and verify: standard readers read our tar; any single changed byte is caught."""

from __future__ import annotations

import gzip
import io
import os
import random
import subprocess
import tarfile
import time

import pytest

from agent.bundle.verify import verify
from agent.bundle.writer import BundleWriter


def _bundle(tmp_path, compress: str) -> tuple[bytes, dict]:
    src = tmp_path / "src.txt"
    src.write_bytes(b"evidence line\n" * 300)
    os.utime(src, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    st = os.stat(src)
    buf = io.BytesIO()
    w = BundleWriter(buf, compress)
    w.add_bytes("triagent/artifacts/x.jsonl", b'{"a":1}\n' * 50, time.time_ns())
    with open(src, "rb") as f:
        w.add_stream("fs/$rootfs$/var/log/src.txt", f.read, st.st_size, st, source="/var/log/src.txt")
    w.add_stream(b"fs/$rootfs$/tmp/\xff\xfe-" + b"long-name-" * 20, io.BytesIO(b"abc").read, 10, st)
    w.add_symlink("fs/$rootfs$/etc/os-release", "../usr/lib/os-release", st)
    w.seal({"status": "complete"}, time.time_ns())
    return buf.getvalue(), {"st": st}


@pytest.mark.parametrize("compress", ["gzip", "none"])
def test_standard_readers_see_members_and_metadata(tmp_path, compress):
    data, info = _bundle(tmp_path, compress)
    path = tmp_path / "b.tar"
    path.write_bytes(data)
    with tarfile.open(path) as tar:
        names = tar.getnames()
        m = tar.getmember("fs/$rootfs$/var/log/src.txt")
        assert m.mtime == pytest.approx(1_500_000_000.987654321)
        assert float(m.pax_headers["atime"]) == pytest.approx(1_600_000_000.123456789)
        assert m.mode == info["st"].st_mode & 0o7777
        assert tar.extractfile(m).read() == b"evidence line\n" * 300
        short = [n for n in names if "long-name" in n][0]
        # the file shrank to 3 bytes: zero padded to the announced 10, and recorded
        assert tar.extractfile(short).read() == b"abc" + b"\0" * 7
    assert names[-2:] == ["triagent/manifest.json", "triagent/seal.json"]
    gnu = subprocess.run(["tar", "-tf", str(path)], capture_output=True)
    assert gnu.returncode == 0 and b"fs/$rootfs$/var/log/src.txt" in gnu.stdout
    if compress == "gzip":
        assert subprocess.run(["gzip", "-t", str(path)]).returncode == 0
    assert verify(str(path)).ok


@pytest.mark.parametrize("compress", ["gzip", "none"])
def test_every_single_byte_change_is_detected(tmp_path, compress):
    data, _ = _bundle(tmp_path, compress)
    path = tmp_path / "bad"
    positions = range(len(data)) if len(data) <= 6000 else sorted(random.Random(7).sample(range(len(data)), 6000))
    undetected = []
    for pos in positions:
        for flip in (0x01, 0x80):
            altered = bytearray(data)
            altered[pos] ^= flip
            path.write_bytes(altered)
            result = verify(str(path))
            if result.ok:
                undetected.append((pos, flip))
            else:
                assert result.problems[0]
    assert not undetected, f"{len(undetected)} changes not detected, e.g. {undetected[:5]}"


def test_changed_member_content_is_named(tmp_path):
    data, _ = _bundle(tmp_path, "none")
    i = data.index(b"evidence line")
    altered = bytearray(data)
    altered[i] = ord("E")
    path = tmp_path / "b.tar"
    path.write_bytes(altered)
    result = verify(str(path))
    assert not result.ok
    assert any("fs/$rootfs$/var/log/src.txt" in p and "content" in p for p in result.problems), result.problems


def test_truncated_bundle_is_reported(tmp_path):
    data, _ = _bundle(tmp_path, "gzip")
    path = tmp_path / "b.tar.gz"
    path.write_bytes(data[: len(data) // 2])
    assert not verify(str(path)).ok
    path.write_bytes(gzip.compress(b"not a tar at all" * 100))
    assert not verify(str(path)).ok
