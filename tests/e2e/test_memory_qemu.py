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
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
import qemu_guest as qg
from conftest import need
from test_binary import binary  # noqa: F401  (the session fixture that builds dist/triagent once)

GUEST = "/usr/local/bin/triagent"
RUN_TIMEOUT = 1800  # boot + reading 512 MB of kcore + compressing it, all under TCG
MEMORY_MEMBER = {"lime": re.compile(r"memory/[^/]+\.lime"), "avml": re.compile(r"memory/[^/]+\.avml")}


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
    import sys
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


# --------------------------------------------------------------------------------------------------
# The harness itself, with what the binary does today (no --memory needed)
# --------------------------------------------------------------------------------------------------

def test_guest_harness_streams_a_bundle_and_qemu_dumps_memory(kernel, binary, tmp_path):  # noqa: F811 (fixture)
    canary = "tg" + secrets.token_hex(5)
    guest = _guest(kernel, binary, tmp_path / "guest", canary)
    guest.capture("version", f"env -i PATH={qg.SSM_PATH} {GUEST} --version")
    guest.stream("bundle", f"env -i PATH={qg.SSM_PATH} {GUEST} collect --profile minimal --output -", max_mib=64)
    result = guest.run(timeout=600, dump_memory=True)
    try:
        rc, out = result.captures["version"]
        assert rc == 0 and out.startswith(b"triagent "), out
        s = result.streams["bundle"]
        assert s.rc == 0, s.stderr.decode(errors="replace")[-3000:]
        data = s.path.read_bytes()
        assert data[:2] == b"\x1f\x8b" and len(data) == s.nbytes > 1000
        summary = _summary(s)
        assert summary.get("sha256") in (None, hashlib.sha256(data).hexdigest()), summary
        check = _host_verify(binary, s.path)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        with tarfile.open(s.path) as tar:
            assert any(n.startswith("triagent/") for n in tar.getnames())
        dump = qg.ElfCore(result.dump)
        try:
            assert any(start <= 0x100000 < end for start, end in dump.ranges), dump.ranges
            version = result.b64("version")
            assert version.startswith(f"Linux version {qg.KERNEL_RELEASE} ".encode()), version
            assert any(True for _ in dump.find_all(version.rstrip(b"\n"))), "banner not in QEMU's dump"
            if kernel.isf is not None:
                start, end = qg.rodata_physical(qg.kernel_layout(kernel.isf), dump)
                assert any(s <= start and end <= e for s, e in result.iomem_ram)
        finally:
            dump.close()
        # The planted process as volatility3 sees it in QEMU's own dump: proves the ISF and the plumbing.
        rows = _pslist(result.dump, kernel, tmp_path)
        assert any(r.get("COMM") == canary and str(r.get("PID")) == result.meta["planted_pid"] for r in rows), \
            f"{canary} (pid {result.meta['planted_pid']}) not in pslist of QEMU's dump: " \
            f"{sorted({r.get('COMM') for r in rows})}"
    finally:
        result.dump.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Memory acquisition: one guest per format
# --------------------------------------------------------------------------------------------------

@dataclass
class Acquisition:
    fmt: str
    canary: str
    result: qg.GuestResult
    workdir: Path
    _image: Path | None = None

    @property
    def stream(self) -> qg.StreamResult:
        s = self.result.streams["bundle"]
        assert s.rc == 0 and s.nbytes > 0, \
            f"triagent collect --memory failed in the guest (rc {s.rc}, {s.nbytes} bytes): " \
            f"{s.stderr.decode(errors='replace')[-3000:]}"
        return s

    @property
    def image(self) -> Path:
        """The bundle's memory member, extracted once."""
        if self._image is None:
            with tarfile.open(self.stream.path) as tar:
                names = [m for m in tar.getmembers() if m.isfile() and MEMORY_MEMBER[self.fmt].fullmatch(m.name)]
                assert len(names) == 1, f"expected one {MEMORY_MEMBER[self.fmt].pattern} member: " \
                                        f"{[n for n in tar.getnames() if n.startswith('memory/')]}"
                out = self.workdir / Path(names[0].name).name
                with tar.extractfile(names[0]) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 8 << 20)
            self._image = out
        return self._image


@pytest.fixture(scope="module", params=["lime", "avml"])
def acquisition(request, kernel, binary, tmp_path_factory):  # noqa: F811 (fixture)
    fmt = request.param
    workdir = tmp_path_factory.mktemp(f"memory-{fmt}")
    canary = "tg" + secrets.token_hex(5)
    guest = _guest(kernel, binary, workdir / "guest", canary)
    args = "collect --memory --output -" + (" --memory-format avml" if fmt == "avml" else "")
    guest.stream("bundle", f"env -i PATH={qg.SSM_PATH} {GUEST} {args}", max_mib=1536)
    result = guest.run(timeout=RUN_TIMEOUT, dump_memory=True)
    acq = Acquisition(fmt, canary, result, workdir)
    yield acq
    for p in (result.dump, result.streams["bundle"].path, acq._image):
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
            assert [tuple(m) for m in merged] == ram, f"LiME ranges {merged} are not the guest's RAM {ram}"
        else:  # AVML leaves out all-zero blocks
            assert covered > total // 4, f"AVML holds {covered} of {total} bytes of RAM"
    finally:
        image.close()


def test_pslist_finds_planted_process(acquisition, kernel):
    if acquisition.fmt == "avml":
        need(qg.snappy_library() is not None, "volatility3 reads AVML with libsnappy (apt-get install libsnappy1v5)")
    rows = _pslist(acquisition.image, kernel, acquisition.workdir)
    assert rows, "linux.pslist found no process at all (LA57? wrong ISF?)"
    pid = acquisition.result.meta["planted_pid"]
    assert any(r.get("COMM") == acquisition.canary and str(r.get("PID")) == pid for r in rows), \
        f"{acquisition.canary} (pid {pid}) not in pslist: {sorted({str(r.get('COMM')) for r in rows})}"
    assert any(r.get("COMM") == "triagent" for r in rows), "the collector itself should be running at acquisition"


def test_image_matches_qemu_dump_on_kernel_read_only_pages(acquisition, kernel, capsys):
    if acquisition.fmt == "avml":
        need(qg.snappy_library() is not None, "reading AVML needs libsnappy (apt-get install libsnappy1v5)")
    image, dump = qg.open_image(acquisition.image), qg.ElfCore(acquisition.result.dump)
    try:
        pages, where = _kernel_pages_match(image, dump, kernel, acquisition.result.b64("version"))
    finally:
        image.close()
        dump.close()
    assert pages > 0
    with capsys.disabled():
        print(f"\n[memory-{acquisition.fmt}] {pages} pages of {where} identical to QEMU's dump-guest-memory")
