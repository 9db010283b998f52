"""Memory acquisition in a real Linux guest: boot the fixture kernel under QEMU (TCG, `-cpu max,la57=off`,
512 MB) from an initramfs built here (busybox-static, the single binary, its glibc libraries), plant a
process with a name of our choosing, run `triagent collect --memory --output -` under `env -i` as SSM
would, stream the bundle onto a raw NVMe disk, and then on the host:
(a) verify the bundle, (b) find its memory member and check its format against the guest's System RAM,
(c) find the planted process with volatility3's linux.pslist and the fixture ISF, (d) compare the kernel's
read-only data with QEMU's own `dump-guest-memory` of the same guest. For LiME and AVML, one boot each.

Required when CI=true; skipped locally with the reason when qemu-system-x86, busybox-static or the
kernel (../shared/fixtures, else `apt-get download`) is missing. The ISF only exists in ../shared."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
import qemu_guest as qg
from conftest import need
from test_binary import binary  # noqa: F401  (the session fixture that builds dist/triagent once)

GUEST = "/usr/local/bin/triagent"
RUN_TIMEOUT = 1800  # boot + reading 512 MB of kcore + compressing it, all under TCG
# One member, or (when the size is not known in advance) numbered parts that concatenate to the image.
MEMORY_MEMBER = {fmt: re.compile(rf"memory/(?P<name>[^/]+\.{fmt})(?:\.part(?P<part>\d+))?") for fmt in ("lime", "avml")}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> qg.Kernel:
    try:
        qg.qemu_binary()
        qg.busybox_static()
        return qg.locate_kernel(tmp_path_factory.getbasetemp() / "kernel-cache")
    except qg.Unavailable as e:
        need(False, str(e))
        raise


def _guest(kernel: qg.Kernel, exe: Path, workdir: Path, canary: str) -> qg.Guest:
    guest = qg.Guest(kernel, workdir)
    guest.initramfs.add_program(GUEST, exe)
    guest.plant_process(canary)
    return guest


def _host_verify(exe: Path, bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), "verify", str(bundle)], env={"PATH": qg.SSM_PATH}, cwd="/usr/bin",
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=900)


def _summary(stream: qg.StreamResult) -> dict:
    """The summary JSON the collector prints on stderr with --output - (its last JSON line)."""
    for line in reversed(stream.stderr.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    return {}


def _pslist(image: Path, kernel: qg.Kernel, workdir: Path) -> list[dict]:
    need(kernel.isf is not None, f"the volatility3 ISF {qg.ISF_NAME} only exists in {qg.FIXTURES}: "
                                 f"no pslist check with a kernel from {kernel.origin}")
    return qg.volatility(sys.executable, image, "linux.pslist.PsList", kernel.isf, workdir)


def _kernel_pages_match(image: qg.PhysImage, dump: qg.ElfCore, kernel: qg.Kernel,
                        version: bytes) -> tuple[int, str]:
    """(pages compared, how they were chosen): every page must be present and identical in both."""
    if kernel.isf is not None:
        layout = qg.kernel_layout(kernel.isf)
        start, end = qg.rodata_physical(layout, dump)
        same, differ, missing = qg.compare_pages(image, dump, start, end)
        assert not missing, f"rodata pages missing from the image: {[hex(a) for a in missing[:10]]}"
        assert not differ, f"rodata pages differ from QEMU's dump: {[hex(a) for a in differ[:10]]}"
        return same, f"kernel rodata {start:#x}-{end:#x}"
    # No ISF: the pages holding the kernel's banner (/proc/version) at the same address in both.
    banner = version.rstrip(b"\n")
    pages = sorted({a & ~(qg.PAGE - 1) for a in dump.find_all(banner)})
    same = [p for p in pages if image.read(p, qg.PAGE) is not None and image.read(p, qg.PAGE) == dump.read(p, qg.PAGE)]
    assert same, f"no page holding the banner is identical in the image and QEMU's dump ({len(pages)} candidates)"
    return len(same), "pages holding linux_banner (no ISF)"


@dataclass
class GuestRun:
    canary: str  # the planted process's name
    result: qg.GuestResult
    workdir: Path


# --------------------------------------------------------------------------------------------------
# The harness itself, with what the binary does today (no --memory needed)
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain_run(kernel, binary, tmp_path_factory):  # noqa: F811 (fixture)
    """One guest: `triagent --version` and `collect --profile minimal --output -` onto the disk, then
    QEMU's dump-guest-memory. Independent of --memory: if these fail, the harness is at fault."""
    workdir = tmp_path_factory.mktemp("guest-plain")
    canary = "tg" + secrets.token_hex(5)
    guest = _guest(kernel, binary, workdir / "guest", canary)
    guest.capture("version", f"env -i PATH={qg.SSM_PATH} {GUEST} --version")
    guest.stream("bundle", f"env -i PATH={qg.SSM_PATH} {GUEST} collect --profile minimal --output -", max_mib=64)
    run = GuestRun(canary, guest.run(timeout=600, dump_memory=True), workdir)
    yield run
    run.result.dump.unlink(missing_ok=True)


def test_guest_runs_the_binary(plain_run):
    rc, out = plain_run.result.captures["version"]
    assert rc == 0 and out.startswith(b"triagent "), out
    print(f"guest run (boot, --version, minimal collect, dump): {plain_run.result.wall_s:.1f} s")


def test_guest_streams_a_verifiable_bundle(plain_run, binary):  # noqa: F811 (fixture)
    s = plain_run.result.streams["bundle"]
    assert s.rc == 0, s.stderr.decode(errors="replace")[-3000:]
    data = s.path.read_bytes()
    assert data[:2] == b"\x1f\x8b" and len(data) == s.nbytes > 1000
    summary = _summary(s)
    assert summary.get("status") == "complete", s.stderr[-2000:]
    assert summary.get("sha256") in (None, hashlib.sha256(data).hexdigest()), summary
    check = _host_verify(binary, s.path)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    with tarfile.open(s.path) as tar:
        assert any(n.startswith("triagent/") for n in tar.getnames())


def test_qemu_dump_holds_the_kernel(plain_run, kernel):
    result = plain_run.result
    version = result.b64("version")
    assert version.startswith(f"Linux version {qg.KERNEL_RELEASE} ".encode()), version
    dump = qg.ElfCore(result.dump)
    try:
        assert any(lo <= 0x100000 < hi for lo, hi in dump.ranges), dump.ranges
        assert any(True for _ in dump.find_all(version.rstrip(b"\n"))), "the banner is not in QEMU's dump"
        if kernel.isf is not None:
            lo, hi = qg.rodata_physical(qg.kernel_layout(kernel.isf), dump)
            assert any(rs <= lo and hi <= re_ for rs, re_ in result.iomem_ram), (hex(lo), hex(hi))
    finally:
        dump.close()


def test_pslist_of_qemu_dump_finds_planted_process(plain_run, kernel):
    """volatility3 + the ISF on QEMU's own dump: the analysis side works whatever the collector does."""
    rows = _pslist(plain_run.result.dump, kernel, plain_run.workdir)
    pid = plain_run.result.meta["planted_pid"]
    assert any(r.get("COMM") == plain_run.canary and str(r.get("PID")) == pid for r in rows), \
        f"{plain_run.canary} (pid {pid}) not in pslist of QEMU's dump: {sorted({str(r.get('COMM')) for r in rows})}"


# --------------------------------------------------------------------------------------------------
# Memory acquisition: one guest per format
# --------------------------------------------------------------------------------------------------

@dataclass
class Acquisition(GuestRun):
    fmt: str = "lime"
    _image: Path | None = None
    _analysable: Path | None = None

    @property
    def stream(self) -> qg.StreamResult:
        s = self.result.streams["bundle"]
        assert s.rc == 0 and s.nbytes > 0, \
            f"triagent collect --memory failed in the guest (rc {s.rc}, {s.nbytes} bytes): " \
            f"{s.stderr.decode(errors='replace')[-3000:]}"
        return s

    @property
    def image(self) -> Path:
        """The bundle's memory image (its member, or its parts joined in order), extracted once; its
        SHA-256 must match the bundle's memory_image record when there is one."""
        if self._image is None:
            pattern = MEMORY_MEMBER[self.fmt]
            digest = hashlib.sha256()
            with tarfile.open(self.stream.path) as tar:
                found = [(pattern.fullmatch(m.name), m) for m in tar.getmembers() if m.isfile()]
                found = [(m.group("name"), int(m.group("part") or -1), t) for m, t in found if m]
                listing = [n for n in tar.getnames() if n.startswith("memory/")]
                assert found, f"no {pattern.pattern} member: {listing}"
                assert len({n for n, _, _ in found}) == 1, f"more than one memory image: {listing}"
                parts = sorted(found, key=lambda x: x[1])
                assert [p for _, p, _ in parts] in ([-1], list(range(len(parts)))), f"parts missing: {listing}"
                out = self.workdir / parts[0][0]
                with open(out, "wb") as dst:
                    for _, _, member in parts:
                        with tar.extractfile(member) as src:
                            while block := src.read(8 << 20):
                                digest.update(block)
                                dst.write(block)
                record = tar.extractfile("triagent/artifacts/memory_image.jsonl") \
                    if "triagent/artifacts/memory_image.jsonl" in tar.getnames() else None
                if record is not None:
                    sums = [json.loads(line).get("sha256") for line in record.read().splitlines() if line.strip()]
                    assert digest.hexdigest() in sums, f"image sha256 {digest.hexdigest()} not in {sums}"
            self._image = out
        return self._image

    @property
    def analysable(self) -> Path:
        """What `triagent analyze` gives volatility: the image itself, or for an AVML image with a
        companion (pages snappy could not shrink) the two merged into one LiME image."""
        if self._analysable is None:
            self._analysable = self.image
            with tarfile.open(self.stream.path) as tar:
                has_companion = any("-companion.lime.part" in n for n in tar.getnames())
            if has_companion:
                from agent.analysis.analyze import extract_image

                work = self.workdir / "analysable"
                work.mkdir(exist_ok=True)
                self._analysable = Path(extract_image(str(self.stream.path), str(work)))
        return self._analysable


@pytest.fixture(scope="module", params=["lime", "avml"])
def acquisition(request, kernel, binary, tmp_path_factory):  # noqa: F811 (fixture)
    fmt = request.param
    workdir = tmp_path_factory.mktemp(f"memory-{fmt}")
    canary = "tg" + secrets.token_hex(5)
    guest = _guest(kernel, binary, workdir / "guest", canary)
    args = "collect --memory --output -" + (" --memory-format avml" if fmt == "avml" else "")
    guest.stream("bundle", f"env -i PATH={qg.SSM_PATH} {GUEST} {args}", max_mib=1536)
    result = guest.run(timeout=RUN_TIMEOUT, dump_memory=True)
    acq = Acquisition(canary, result, workdir, fmt)
    yield acq
    for p in (result.dump, result.streams["bundle"].path, acq._image, acq._analysable):
        if p is not None:
            p.unlink(missing_ok=True)


def test_acquisition_time_in_guest(acquisition, capsys):
    s = acquisition.stream
    duration = _summary(s).get("duration_s")
    with capsys.disabled():
        print(f"\n[memory-{acquisition.fmt}] guest-side acquisition: {s.seconds:.1f} s (summary duration_s "
              f"{duration}), bundle {s.nbytes / 2**20:.1f} MiB, whole guest run {acquisition.result.wall_s:.0f} s")


def test_bundle_verifies(acquisition, binary):  # noqa: F811 (fixture)
    s = acquisition.stream
    summary = _summary(s)
    assert summary, f"no summary JSON on stderr: {s.stderr[-2000:]!r}"
    if "sha256" in summary:
        digest = hashlib.sha256()
        with open(s.path, "rb") as f:
            while block := f.read(8 << 20):
                digest.update(block)
        assert summary["sha256"] == digest.hexdigest(), "the bytes on the disk are not the bytes streamed"
    check = _host_verify(binary, s.path)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


def test_memory_member_covers_guest_ram(acquisition):
    image = qg.open_image(acquisition.image)
    try:
        expected = qg.LimeImage if acquisition.fmt == "lime" else qg.AvmlImage
        assert isinstance(image, expected), f"{acquisition.image.name} is a {type(image).__name__}"
        ram = acquisition.result.iomem_ram
        assert ram, "no System RAM in the guest's /proc/iomem"
        ranges = image.ranges
        assert ranges == sorted(ranges) and all(a[1] <= b[0] for a, b in pairwise(ranges)), \
            f"records overlap or are out of order (KCORE_TEXT not de-duplicated?): {ranges[:20]}"
        outside = [(hex(s), hex(e)) for s, e in ranges if not any(rs <= s and e <= re_ for rs, re_ in ram)]
        assert not outside, f"records outside System RAM {[(hex(s), hex(e)) for s, e in ram]}: {outside}"
        covered, total = sum(e - s for s, e in ranges), sum(e - s for s, e in ram)
        if acquisition.fmt == "lime":
            merged: list[list[int]] = []
            for s, e in ranges:
                if merged and merged[-1][1] == s:
                    merged[-1][1] = e
                else:
                    merged.append([s, e])
            # /proc/kcore maps whole pages: a RAM range's partial pages (0x9f000-0x9fbff) are not in it
            pages = [(-(-s // qg.PAGE) * qg.PAGE, e // qg.PAGE * qg.PAGE) for s, e in ram]
            assert [tuple(m) for m in merged] == [p for p in pages if p[0] < p[1]], \
                f"LiME ranges {[(hex(s), hex(e)) for s, e in merged]} are not the guest's RAM pages " \
                f"{[(hex(s), hex(e)) for s, e in pages]}"
        else:  # AVML leaves out all-zero blocks
            assert covered > total // 4, f"AVML holds {covered} of {total} bytes of RAM"
    finally:
        image.close()


def test_pslist_finds_planted_process(acquisition, kernel):
    image = acquisition.image
    if acquisition.fmt == "avml":
        need(qg.snappy_library() is not None, "volatility3 reads AVML with libsnappy (apt-get install libsnappy1v5)")
        avml = qg.AvmlImage(image)
        try:
            # volatility3 2.28.2 loops for ever on a block whose snappy stream is longer than the block;
            # the collector sends such pages to the companion LiME instead, so none may be here
            assert not avml.oversized, f"AVML blocks volatility3 cannot read: {avml.oversized[:5]}"
        finally:
            avml.close()
    rows = _pslist(acquisition.analysable, kernel, acquisition.workdir)
    assert rows, "linux.pslist found no process at all (LA57? wrong ISF?)"
    pid = acquisition.result.meta["planted_pid"]
    assert any(r.get("COMM") == acquisition.canary and str(r.get("PID")) == pid for r in rows), \
        f"{acquisition.canary} (pid {pid}) not in pslist: {sorted({str(r.get('COMM')) for r in rows})}"
    assert any(r.get("COMM") == "triagent" for r in rows), "the collector itself should be running at acquisition"


def test_image_matches_qemu_dump_on_kernel_read_only_pages(acquisition, kernel, capsys):
    if acquisition.fmt == "avml":
        need(qg.snappy_library() is not None, "reading AVML needs libsnappy (apt-get install libsnappy1v5)")
    image, dump = qg.open_image(acquisition.analysable), qg.ElfCore(acquisition.result.dump)
    try:
        pages, where = _kernel_pages_match(image, dump, kernel, acquisition.result.b64("version"))
    finally:
        image.close()
        dump.close()
    assert pages > 0
    with capsys.disabled():
        print(f"\n[memory-{acquisition.fmt}] {pages} pages of {where} identical to QEMU's dump-guest-memory")


def test_volatility_in_process(acquisition, kernel, capsys):
    """Our own runner (collectors/parsers/volatility.py): automagic once, symbols chosen by banner from
    the folder we give, rows as records; the planted process and our own are in pslist."""
    if acquisition.fmt != "lime":
        pytest.skip("the in-process runner is exercised once, on the LiME image")
    need(kernel.isf is not None, "the fixture ISF (../shared/fixtures) is needed for symbols")
    from collectors.base import Problem, Record
    from collectors.parsers.volatility import analyse

    symbols = acquisition.workdir / "symbols-inprocess"
    (symbols / "linux").mkdir(parents=True, exist_ok=True)
    link = symbols / "linux" / kernel.isf.name
    if not link.exists():
        link.symlink_to(kernel.isf)
    started = time.monotonic()
    items = list(analyse(str(acquisition.image), ["linux.pslist.PsList", "linux.lsmod.Lsmod"], [str(symbols)],
                         str(acquisition.workdir / "vol-cache-inprocess"), budget=600))
    problems = [i.message for i in items if isinstance(i, Problem)]
    rows = [i.data for i in items if isinstance(i, Record) and i.stream == "volatility.linux.pslist.PsList"]
    status = next(i.data for i in items if isinstance(i, Record) and i.stream == "volatility")
    with capsys.disabled():
        print(f"\n[volatility in process] {status.get('plugins_run')} plugins in {time.monotonic() - started:.1f} s, "
              f"symbols {status.get('symbol_table')}")
    assert status["status"] == "complete", (status, problems)
    assert any(r.get("COMM") == acquisition.canary for r in rows), sorted({r.get("COMM") for r in rows})
    assert status["banners"] and "6.1.0-56-cloud-amd64" in status["banners"][0]


def test_analyze_finishes_the_job_on_the_responders_side(acquisition, kernel, tmp_path):
    """`triagent analyze BUNDLE --symbols DIR`: the analysis bundle verifies, names its source, and holds
    the guest's processes from volatility3 (symbols chosen by banner from the folder given)."""
    if acquisition.fmt != "lime":
        pytest.skip("analyze is exercised once, on the LiME bundle")
    need(kernel.isf is not None, "the fixture ISF (../shared/fixtures) is needed for symbols")
    symbols = tmp_path / "symbols"
    (symbols / "linux").mkdir(parents=True)
    (symbols / "linux" / kernel.isf.name).symlink_to(kernel.isf)
    proc = subprocess.run([sys.executable, "-m", "agent", "analyze", str(acquisition.stream.path), "--output",
                           str(tmp_path / "out"), "--symbols", str(symbols)], capture_output=True, timeout=1800,
                          cwd=Path(__file__).resolve().parents[2])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert summary["artifacts"]["volatility"] == "complete", (summary, proc.stderr.decode()[-3000:])
    assert subprocess.run([sys.executable, "-m", "agent", "verify", summary["analysis"]],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True).returncode == 0
    with tarfile.open(summary["analysis"]) as tar:
        custody = json.loads(tar.extractfile("triagent/custody.json").read())
        rows = [json.loads(line) for line in
                tar.extractfile("triagent/artifacts/volatility.linux.pslist.PsList.jsonl").read().splitlines()]
        status = json.loads(tar.extractfile("triagent/artifacts/volatility.jsonl").read().splitlines()[0])
    assert custody["source_verified"] is True and custody["source_bundle_sha256"]
    assert status["symbol_table"].endswith(kernel.isf.name) and status["plugins_run"] >= 10
    assert any(r.get("COMM") == acquisition.canary for r in rows)
