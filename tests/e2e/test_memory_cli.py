"""collect --memory end to end on a synthetic kcore: the bundle verifies, the image holds exactly
physical memory, and volatility3's own LiME and AVML layers read it back."""

from __future__ import annotations

import ctypes.util
import hashlib
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import kcore_fixture
import pytest
from conftest import REPO, members, need, run_triagent, summary_of, triagent_source

MiB = 1 << 20
RAM = [(0x1000, 0x9EFFF), (0x100000, 0x100000 + 20 * MiB - 1), (0x100000000, 0x100000000 + 8 * MiB - 1)]
PROBES = [0x1000, 0x9EFF0, 0x100000 + 7 * MiB + 123, 0x100000000 + 5 * MiB + 9, 0x100000000 + 8 * MiB - 16]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return kcore_fixture.build(tmp_path_factory.mktemp("kcore"), RAM, text_over=0x100000 + MiB)


def _memory_args(syn) -> list[str]:
    return ["--memory-source", "kcore", "--memory-source-path", str(syn.kcore), "--iomem-path", str(syn.iomem)]


def _volatility_read(path: str, layer_kind: str, addr: int, n: int) -> bytes:
    from volatility3.framework import contexts
    from volatility3.framework.layers import avml, lime, physical

    ctx = contexts.Context()
    ctx.config["base.location"] = "file://" + path
    ctx.add_layer(physical.FileLayer(ctx, "base", "base"))
    ctx.config["mem.base_layer"] = "base"
    cls = lime.LimeLayer if layer_kind == "lime" else avml.AVMLLayer
    layer = cls(ctx, "mem", "mem")
    ctx.add_layer(layer)
    return layer.read(addr, n)


def test_lime_in_the_bundle(synthetic, tmp_path):
    proc = run_triagent(["collect", "--memory", "--artifacts", "clock", "--output", str(tmp_path)]
                        + _memory_args(synthetic))
    summary = summary_of(proc)
    assert proc.returncode == 0 and summary["status"] == "complete", summary
    assert summary["memory"]["complete"] is True and summary["bundle"].endswith(".tar")  # raw: LiME is raw
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0
    m = members(summary["bundle"])
    name = summary["memory"]["member"]
    image = m[name]
    assert hashlib.sha256(image).hexdigest() == summary["memory"]["sha256"]
    assert len(image) == sum(32 + e - s + 1 for s, e in RAM)  # the kernel-text alias is not written twice
    out = tmp_path / "mem.lime"
    out.write_bytes(image)
    for addr in PROBES:
        assert _volatility_read(str(out), "lime", addr, 16) == kcore_fixture.pattern(addr, 16)
    facts = json.loads(m["triagent/artifacts/memory.jsonl"].splitlines()[0])
    assert facts["banner"].startswith("Linux version") and facts["page_size"] == 4096
    assert facts["pgtable_l5_enabled"] is False and facts["source"] == str(synthetic.kcore)
    manifest = json.loads(m["triagent/manifest.json"])
    entry = next(e for e in manifest["members"] if e["name"] == name)
    assert entry["memory_format"] == "lime" and entry["mode"] == 0o400


def test_avml_in_the_bundle_in_parts(synthetic, tmp_path):
    need(ctypes.util.find_library("snappy") is not None, "volatility3's AVML layer needs libsnappy (libsnappy1v5)")
    proc = run_triagent(["collect", "--memory", "--memory-format", "avml", "--artifacts", "clock", "--output",
                         str(tmp_path)] + _memory_args(synthetic))
    summary = summary_of(proc)
    assert proc.returncode == 0, summary
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0
    m = members(summary["bundle"])
    parts = sorted(n for n in m if n.startswith("memory/") and ".avml.part" in n)
    assert parts
    image = b"".join(m[n] for n in parts)
    assert hashlib.sha256(image).hexdigest() == summary["memory"]["sha256"]
    out = tmp_path / "mem.avml"
    out.write_bytes(image)
    for addr in PROBES:
        assert _volatility_read(str(out), "avml", addr, 16) == kcore_fixture.pattern(addr, 16)


@pytest.mark.parametrize("fmt", ["lime", "avml"])
def test_image_only_output(synthetic, tmp_path, fmt):
    path = tmp_path / f"image.{fmt}"
    proc = run_triagent(["collect", "--profile", "memory", "--memory-format", fmt, "--memory-output", str(path)]
                        + _memory_args(synthetic))
    summary = summary_of(proc)
    assert proc.returncode == 0 and summary["status"] == "complete", summary
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # only the image
    assert hashlib.sha256(path.read_bytes()).hexdigest() == summary["sha256"]
    if fmt == "lime" or ctypes.util.find_library("snappy"):
        assert _volatility_read(str(path), fmt, PROBES[3], 32) == kcore_fixture.pattern(PROBES[3], 32)


def test_refusal_is_a_line_and_the_run_goes_on(synthetic, tmp_path):
    proc = run_triagent(["collect", "--memory", "--artifacts", "clock,processes", "--memory-limit", "1M",
                         "--output", str(tmp_path)] + _memory_args(synthetic))
    summary = summary_of(proc)
    assert proc.returncode == 1 and summary["status"] == "partial"
    assert "--memory-limit" in summary["memory"]["refused"]
    assert summary["artifacts"] == {"complete": 3, "refused": 1}  # clock, processes, memory.symbols; memory
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0


def test_sigterm_while_the_image_streams(tmp_path):
    syn = kcore_fixture.build(tmp_path / "big", [(0x100000, 0x100000 + 768 * MiB - 1)])
    out = tmp_path / "out"
    proc = subprocess.Popen(triagent_source() + ["collect", "--memory", "--artifacts", "clock", "--output",
                                                 str(out)] + _memory_args(syn),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (list(out.glob("*.tar")) and list(out.glob("*.tar"))[0].stat().st_size
                                               > 64 * MiB):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    summary = json.loads(stdout)
    assert proc.returncode == 1 and summary["status"] == "partial", stderr.decode()[-2000:]
    assert summary["memory"]["complete"] is False
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0


@pytest.mark.parametrize("fmt", ["lime", "avml"])
def test_sigterm_while_the_image_alone_streams(tmp_path, fmt):
    """--memory-output runs the pipeline with a file sink: a SIGTERM cuts the image, whose hash (of what
    was written) and the signal are in the summary; exit 1."""
    syn = kcore_fixture.build(tmp_path / "big", [(0x100000, 0x100000 + 768 * MiB - 1)])
    path = tmp_path / f"image.{fmt}"
    proc = subprocess.Popen(triagent_source() + ["collect", "--profile", "memory", "--memory-format", fmt,
                                                 "--memory-output", str(path)] + _memory_args(syn),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (path.exists() and path.stat().st_size > 32 * MiB):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    summary = json.loads(stdout)
    assert proc.returncode == 1 and summary["status"] == "partial", stderr.decode()[-2000:]
    assert summary["stop_reason"] == "signal SIGTERM", summary
    assert summary["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert 32 * MiB < path.stat().st_size < 768 * MiB


def test_not_root_is_a_refusal_not_a_traceback(synthetic):
    import shutil
    import tempfile

    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to run as nobody")
    out = tempfile.mkdtemp(prefix="triagent-nobody-")
    os.chmod(out, 0o777)
    try:
        proc = run_triagent(["collect", "--memory", "--artifacts", "clock", "--output", out, "--iomem-path",
                             str(synthetic.iomem)],
                            cmd=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + triagent_source())
        summary = summary_of(proc)
        assert proc.returncode == 1 and "not root" in summary["memory"]["refused"], proc.stderr.decode()[-2000:]
        assert b"Traceback" not in proc.stderr
        assert run_triagent(["verify", summary["bundle"]]).returncode == 0
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_avml_incompressible_memory_goes_to_the_companion_lime(tmp_path):
    """volatility3 2.28 hangs on AVML records snappy could not shrink: such pages must go to the
    companion LiME file, and the AVML image must still open (within seconds) and read right."""
    need(ctypes.util.find_library("snappy") is not None, "volatility3's AVML layer needs libsnappy (libsnappy1v5)")
    import threading

    noise = os.urandom(16 * MiB)  # one whole 16 MiB AVML block that snappy cannot shrink
    random_lo, random_hi = 0x100000 + 16 * MiB, 0x100000 + 32 * MiB

    def fill(paddr: int, n: int) -> bytes:
        out = bytearray(kcore_fixture.pattern(paddr, n))
        lo, hi = max(paddr, random_lo), min(paddr + n, random_hi)
        if lo < hi:
            out[lo - paddr:hi - paddr] = noise[lo - random_lo:hi - random_lo]
        return bytes(out)

    syn = kcore_fixture.build(tmp_path / "src", [(0x100000, 0x100000 + 48 * MiB - 1)], fill=fill)
    path = tmp_path / "image.avml"
    proc = run_triagent(["collect", "--profile", "memory", "--memory-format", "avml", "--memory-output", str(path)]
                        + _memory_args(syn))
    summary = summary_of(proc)
    assert proc.returncode == 0, summary
    companion = tmp_path / "image.avml.companion.lime"
    assert summary["companion"]["bytes"] == companion.stat().st_size > 15 * MiB
    assert summary["companion"]["sha256"] == hashlib.sha256(companion.read_bytes()).hexdigest()
    assert summary["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    opened = []
    probe = 0x100000 + 3 * MiB + 40
    thread = threading.Thread(target=lambda: opened.append(_volatility_read(str(path), "avml", probe, 64)),
                              daemon=True)
    thread.start()
    thread.join(120)
    assert opened == [kcore_fixture.pattern(probe, 64)], "volatility3 could not read the AVML image"
    assert _volatility_read(str(companion), "lime", random_lo + 100, 64) == noise[100:164]
    # in a bundle: AVML parts plus companion LiME parts, all verified
    proc = run_triagent(["collect", "--memory", "--memory-format", "avml", "--artifacts", "clock", "--output",
                         str(tmp_path / "b")] + _memory_args(syn))
    summary = summary_of(proc)
    m = members(summary["bundle"])
    assert any("-companion.lime.part" in n for n in m) and run_triagent(["verify", summary["bundle"]]).returncode == 0
    # analyze's view of that bundle: one LiME image, AVML and companion merged in address order, every
    # byte where it was in memory (volatility's LiME layer reads both kinds of page)
    from agent.analysis.analyze import extract_image
    from collectors.memory.image import lime_records

    work = tmp_path / "analysis"
    work.mkdir()
    merged = extract_image(summary["bundle"], str(work))
    assert merged is not None and merged.endswith(".merged.lime"), merged
    covered = 0
    with open(merged, "rb") as fh:
        for start, end, data in lime_records(fh):
            assert data == fill(start, end - start + 1), hex(start)
            covered += end - start + 1
    assert covered == 48 * MiB  # no zero block in this memory: nothing skipped, nothing lost
    for addr in (probe, random_lo + 100, random_hi + 4096):
        assert _volatility_read(merged, "lime", addr, 64) == fill(addr, 64), hex(addr)
    assert sorted(p.name for p in work.iterdir()) == [Path(merged).name]  # the joined inputs are gone


def test_analyze_survives_a_damaged_companion(tmp_path):
    """A bundle whose companion LiME part was damaged after sealing: analyze says the bundle does not
    verify and the image cannot be read, records why in its custody, and analyses the rest."""
    import tarfile

    noise = os.urandom(4 * MiB)
    noisy_lo = 0x100000 + 4 * MiB  # the second 4 MiB block cannot be compressed: it goes to the companion

    def fill(paddr: int, n: int) -> bytes:
        out = bytearray(kcore_fixture.pattern(paddr, n))
        lo, hi = max(paddr, noisy_lo), min(paddr + n, noisy_lo + 4 * MiB)
        if lo < hi:
            out[lo - paddr:hi - paddr] = noise[lo - noisy_lo:hi - noisy_lo]
        return bytes(out)

    syn = kcore_fixture.build(tmp_path / "src", [(0x100000, 0x100000 + 16 * MiB - 1)], fill=fill)
    proc = run_triagent(["collect", "--memory", "--memory-format", "avml", "--artifacts", "clock", "--exclude",
                         "memory.symbols", "--output", str(tmp_path / "b")] + _memory_args(syn))
    bundle = summary_of(proc)["bundle"]
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(bundle) as src, tarfile.open(damaged, "w") as dst:
        for member in src:
            data = src.extractfile(member).read() if member.isfile() else None
            if "-companion.lime.part0000" in member.name:
                data = b"XXXX" + data[4:]
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    proc = run_triagent(["analyze", str(damaged), "--output", str(tmp_path / "analysis")])
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert "memory image cannot be read: LiME: bad record header" in stderr, stderr[-2000:]
    summary = summary_of(proc)
    custody = json.loads(members(summary["analysis"])["triagent/custody.json"])
    assert custody["source_verified"] is False and custody["memory_image"] is None
    assert custody["memory_image_error"].startswith("LiME: bad record header"), custody


def test_memory_that_never_compresses_is_all_companion(tmp_path):
    """Every page incompressible: the AVML image is one empty part, the companion holds everything, and
    analyze hands volatility the companion (a LiME image) with every byte."""
    from agent.analysis.analyze import extract_image

    noise = os.urandom(4 * MiB)
    syn = kcore_fixture.build(tmp_path / "src", [(0x100000, 0x100000 + 8 * MiB - 1)],
                              fill=lambda paddr, n: (noise * 3)[(paddr - 0x100000) % (4 * MiB):][:n])
    proc = run_triagent(["collect", "--memory", "--memory-format", "avml", "--artifacts", "clock", "--exclude",
                         "memory.symbols", "--output", str(tmp_path / "b")] + _memory_args(syn))
    summary = summary_of(proc)
    m = members(summary["bundle"])
    assert m["memory/" + summary["memory"]["member"].split("/")[1].replace("*", "0000")] == b""
    work = tmp_path / "analysis"
    work.mkdir()
    image = extract_image(summary["bundle"], str(work))
    assert image is not None and image.endswith("-companion.lime"), image
    for addr in (0x100000, 0x100000 + 5 * MiB + 123):
        assert _volatility_read(image, "lime", addr, 64) == (noise * 3)[(addr - 0x100000) % (4 * MiB):][:64]
