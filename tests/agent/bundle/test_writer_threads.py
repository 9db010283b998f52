"""The bundle writer's threads: a large member's SHA-256, the bundle's SHA-256 and the write each run in a
thread of their own (bounded, in order), and both hashes still equal hashlib's over the bytes written;
errors reach the caller; a memory image cut by SIGTERM leaves a valid bundle marked partial."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import threading
import time
import types

import kcore_fixture
import pytest
from conftest import REPO, run_triagent, triagent_source

from agent.bundle import writer as writer_mod
from agent.bundle.writer import MANIFEST_NAME, BundleWriter

MiB = 1 << 20


class _Ring:
    """A source that hands out views of a few reused buffers (as the memory reader does): a view must not
    be read after ``QUEUE_DEPTH + 2`` further reads, so a writer that kept one too long hashes or writes
    the wrong bytes and the comparison with hashlib fails."""

    def __init__(self, data: bytes, chunk: int = MiB):
        self.data, self.chunk, self.pos = data, chunk, 0
        self.slots = [bytearray(chunk) for _ in range(BundleWriter.QUEUE_DEPTH + 3)]
        self.reads = 0

    def read(self, n: int) -> memoryview:
        n = min(n, self.chunk, len(self.data) - self.pos)
        slot = self.slots[self.reads % len(self.slots)]
        self.reads += 1
        slot[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return memoryview(slot)[:n]


class _HashingSink(io.BytesIO):
    """A sink that hashes what it is given (as the shipment does): the writer must not hash again."""

    def __init__(self) -> None:
        super().__init__()
        self.sha256 = hashlib.sha256()

    def write(self, data) -> int:  # type: ignore[override]
        self.sha256.update(data)
        return super().write(data)

    def input_sha256(self) -> str:
        return self.sha256.hexdigest()


def _members(blob: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


@pytest.mark.parametrize("sink_kind", ["plain", "hashing-sink", "gzip", "gzip-hashing-sink"])
def test_member_and_bundle_hashes_equal_hashlib_over_the_written_bytes(sink_kind):
    data = os.urandom(9 * MiB + 12345)
    out = _HashingSink() if sink_kind.endswith("hashing-sink") else io.BytesIO()
    w = BundleWriter(out, "gzip" if sink_kind.startswith("gzip") else "none")
    stream_hash = hashlib.sha256()  # a stream's hash over its parts, updated by the writer's pass
    w.add_bytes("small/first.txt", b"hello", 0)
    big = w.add_generated("memory/host.lime", _Ring(data).read, len(data), 0, also_hash=(stream_hash,))
    w.add_generated("memory/small.bin", _Ring(b"x" * 1000).read, 1000, 0, also_hash=(stream_hash,))
    bundle_sha = w.seal({"status": "complete"}, 0)
    blob = out.getvalue()
    assert bundle_sha == hashlib.sha256(blob).hexdigest()
    if sink_kind.endswith("hashing-sink"):
        assert out.sha256.hexdigest() == bundle_sha and w._out._hasher is None  # hashed once, by the sink
    if sink_kind.startswith("gzip"):
        import gzip

        assert hashlib.sha256(blob[:blob.rindex(b"\x1f\x8b")]).hexdigest().encode() in blob[-120:]  # the gzip seal
        blob = gzip.decompress(blob)
    members = _members(blob)
    assert members["memory/host.lime"] == data and big["sha256"] == hashlib.sha256(data).hexdigest()
    assert stream_hash.hexdigest() == hashlib.sha256(data + b"x" * 1000).hexdigest()
    manifest = json.loads(members[MANIFEST_NAME])
    for entry in manifest["members"]:
        assert entry["sha256"] == hashlib.sha256(members[entry["name"]]).hexdigest(), entry["name"]


def test_verify_passes_on_a_bundle_written_by_the_threads(tmp_path):
    from agent.bundle.verify import verify

    path = tmp_path / "b.tar"
    data = os.urandom(6 * MiB)
    with open(path, "wb") as fh:
        w = BundleWriter(fh, "none")
        w.add_generated("memory/host.lime", _Ring(data).read, len(data), 0)
        w.seal({"format": "triagent-bundle/1", "status": "complete"}, 0)
    result = verify(str(path))
    assert result.ok, result.problems
    assert result.bundle_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_hashes_run_in_threads_beside_the_caller(monkeypatch):
    """Never in series on the caller's thread: the member's hash, the stream's and the bundle's each run
    in a thread of its own, and the sink is written from another."""
    seen: dict[str, set[str]] = {}

    class Spy:
        def __init__(self, label: str):
            self.label, self.inner = label, hashlib.sha256()

        def update(self, data) -> None:
            seen.setdefault(self.label, set()).add(threading.current_thread().name)
            self.inner.update(data)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    made = iter(["bundle"])
    monkeypatch.setattr(writer_mod, "hashlib", types.SimpleNamespace(sha256=lambda *a: Spy(next(made, "member"))))
    sink = io.BytesIO()
    original_write = sink.write
    sink.write = lambda data: (seen.setdefault("write", set()).add(threading.current_thread().name),  # type: ignore
                               original_write(data))[1]
    w = BundleWriter(sink, "none")
    data = os.urandom(8 * MiB)
    w.add_generated("memory/host.lime", _Ring(data).read, len(data), 0, also_hash=(Spy("stream"),))
    w.seal({}, 0)
    caller = threading.current_thread().name
    assert seen["bundle"] == {"bundle-hash"}
    assert seen["member"] - {caller} and seen["member"] <= {"member-hash-0", caller}  # the manifest's: inline
    assert seen["stream"] == {"member-hash-1"}
    assert seen["write"] == {"bundle-writer"}


def test_a_write_error_reaches_the_caller_and_nothing_hangs():
    class Broken(io.BytesIO):
        def write(self, data) -> int:  # type: ignore[override]
            if self.tell() > 2 * MiB:
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(data)

    w = BundleWriter(Broken(), "none")
    data = bytes(32 * MiB)
    started = time.monotonic()
    with pytest.raises(BrokenPipeError):
        w.add_generated("memory/host.lime", _Ring(data).read, len(data), 0)
        w.seal({}, 0)
    assert time.monotonic() - started < 30


def test_queues_are_bounded():
    w = BundleWriter(io.BytesIO(), "none")
    assert w._out._writer.queue.maxsize == w._out._hasher.queue.maxsize == BundleWriter.QUEUE_DEPTH > 0
    w.add_generated("m", _Ring(bytes(5 * MiB)).read, 5 * MiB, 0)
    assert all(h.queue.maxsize == BundleWriter.QUEUE_DEPTH for h in w._hashers)
    w.seal({}, 0)


def _fill(noise: bytes):
    """Per MiB: zeros, random bytes (snappy cannot shrink them), text (it can)."""
    text = b"triagent memory test page " * 40330

    def fill(paddr: int, n: int) -> bytes:
        kind = paddr // MiB % 3
        return bytes(n) if kind == 0 else (noise if kind == 1 else text)[paddr % MiB:paddr % MiB + n]

    return fill


@pytest.mark.parametrize("fmt", ["lime", "avml"])
def test_sigterm_mid_image_leaves_a_valid_partial_bundle(tmp_path, fmt):
    """A real SIGTERM while the image streams into the bundle: exit 1, status partial, verify passes, and
    every member's SHA-256 in the manifest and the bundle's SHA-256 equal hashlib's over the written bytes."""
    syn = kcore_fixture.build(tmp_path / "src", [(0x100000, 0x100000 + 160 * MiB - 1)],
                              fill=_fill(os.urandom(MiB)))
    out = tmp_path / "out"
    proc = subprocess.Popen(triagent_source() + [
        "collect", "--memory", "--memory-format", fmt, "--artifacts", "clock", "--exclude", "memory.symbols",
        "--output", str(out), "--memory-source", "kcore", "--memory-source-path", str(syn.kcore),
        "--iomem-path", str(syn.iomem)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        bundles = list(out.glob("*.tar"))
        if bundles and bundles[0].stat().st_size > 4 * MiB:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    summary = json.loads(stdout)
    assert proc.returncode == 1 and summary["status"] == "partial", stderr.decode()[-2000:]
    assert summary["memory"]["complete"] is False
    bundle = out / summary["bundle"].rsplit("/", 1)[-1]
    assert run_triagent(["verify", str(bundle)]).returncode == 0
    blob = bundle.read_bytes()
    side = (bundle.parent / (bundle.name + ".sha256")).read_text().split()[0]
    assert side == hashlib.sha256(blob).hexdigest()
    members = _members(blob)
    manifest = json.loads(members[MANIFEST_NAME])
    assert manifest["status"] == "partial"
    images = [e for e in manifest["members"] if e["name"].startswith("memory/")]
    assert images
    for entry in manifest["members"]:
        assert entry["sha256"] == hashlib.sha256(members[entry["name"]]).hexdigest(), entry["name"]
