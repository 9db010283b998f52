"""Boot a real Linux guest under QEMU (TCG) from an initramfs built here, run programs in it, and read
what they wrote back on the host. Also small pure-Python readers for memory images (LiME, AVML,
QEMU's `dump-guest-memory` ELF) so tests can compare physical pages.

The guest, on x86_64 or (``arch="aarch64"``) arm64:
- kernel: x86_64: the Debian cloud kernel in ../shared/fixtures (or, failing that, `apt-get download` of the
  same package); aarch64: Debian 12's arm64 cloud kernel (`apt-get download` of the package
  linux-image-cloud-arm64 depends on, with dpkg's arm64 architecture added), booted by
  `qemu-system-aarch64 -M virt -cpu max` under TCG; both have NVMe built in (virtio-blk is a module in the
  arm64 cloud kernel) and /proc/kcore enabled;
- initramfs: busybox-static of the guest's architecture (aarch64: Debian's arm64 busybox-static .deb)
  (applets as symlinks), the files the test adds (e.g. the single binary and the
  glibc libraries it needs, resolved with ldd) and a generated /init that mounts proc, sysfs, devtmpfs and
  tmpfs on /dev/shm and /tmp, runs the test's steps, writes a small metadata block to the disk, prints a
  marker on the serial console and then idles (so the host can still dump the guest's memory);
- one raw sparse NVMe disk (`/dev/nvme0n1`): each "stream" step pipes a command's stdout, then a random
  end marker, to the disk at a fixed MiB offset (the host finds the marker: busybox dd does not count
  bytes); the metadata block (exit codes, timings, base64 stderr, /proc/iomem, /proc/version) lives in
  the last MiBs of the disk;
- no network (`-nic none`), QMP on a unix socket for `dump-guest-memory`.
"""

from __future__ import annotations

import base64
import ctypes
import gzip
import io
import json
import lzma
import mmap
import os
import re
import secrets
import shlex
import shutil
import socket
import struct
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KERNEL_RELEASE = "6.1.0-56-cloud-amd64"
KERNEL_PACKAGE = f"linux-image-{KERNEL_RELEASE}"
FIXTURES = REPO.parent / "shared" / "fixtures" / f"linux-{KERNEL_RELEASE}"
ISF_NAME = f"debian-{KERNEL_RELEASE}.json.xz"
QEMU = "qemu-system-x86_64"
PAGE = 4096
# Downloads kept between runs (the arm64 kernel and busybox .debs: ~25 MB): TRIAGENT_GUEST_CACHE or ~/.cache
CACHE = Path(os.environ.get("TRIAGENT_GUEST_CACHE") or Path.home() / ".cache" / "triagent" / "guest")
MIB = 1 << 20
DONE_MARKER = "@@TRIAGENT-GUEST-DONE@@"
SSM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# glibc libraries PyInstaller leaves out of its bundle (the unpacked libpython needs some of them) and
# that `ldd` on the bootloader does not list: shipped when the host has them.
GLIBC_EXTRAS = ("libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1", "libresolv.so.2",
                "libnss_files.so.2", "libnss_dns.so.2", "libanl.so.1", "libgcc_s.so.1")


class Unavailable(Exception):
    """A component the guest needs is missing on this host (the message says which and how to get it)."""


@dataclass(frozen=True)
class Arch:
    """What differs between the guests: QEMU's binary and board, the serial console, Debian's names."""

    name: str  # uname -m
    deb: str  # Debian architecture
    qemu: str
    qemu_package: str
    machine: tuple[str, ...]  # board and CPU arguments
    console: str
    kernel_meta: str  # the package that depends on the current cloud kernel


ARCHES = {
    # la57=off: volatility3 2.28 cannot walk 5-level page tables
    "x86_64": Arch("x86_64", "amd64", QEMU, "qemu-system-x86", ("-accel", "tcg", "-cpu", "max,la57=off"),
                   "ttyS0", "linux-image-cloud-amd64"),
    # virt: PCIe (the NVMe disk), PL011 serial, RAM from 0x40000000, device tree from QEMU (no firmware);
    # pauth-impdef: TCG's pointer authentication with an implementation-defined hash, several times faster
    # than the architected QARMA one (the cloud kernel signs every return address)
    "aarch64": Arch("aarch64", "arm64", "qemu-system-aarch64", "qemu-system-arm",
                    ("-M", "virt", "-accel", "tcg", "-cpu", "max,pauth-impdef=on"), "ttyAMA0",
                    "linux-image-cloud-arm64"),
}


def arch_of(name: str) -> Arch:
    if name not in ARCHES:
        raise ValueError(f"no guest for architecture {name!r} (known: {', '.join(ARCHES)})")
    return ARCHES[name]


# --------------------------------------------------------------------------------------------------
# Host components
# --------------------------------------------------------------------------------------------------

def busybox_static(arch: str = "x86_64", cache: Path | None = None) -> Path:
    """The statically linked busybox for the guest: on x86_64 the host's (Debian's busybox-static installs
    it as /bin/busybox); for another architecture Debian's busybox-static .deb of that architecture,
    fetched once with `apt-get download` into ``cache``."""
    a = arch_of(arch)
    if a.name != "x86_64":
        return _foreign_busybox(a, cache or CACHE)
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.is_file():
            out = subprocess.run(["file", "-L", str(p)], capture_output=True, text=True).stdout \
                if shutil.which("file") else ""
            if not out or "statically linked" in out or "static-pie" in out:
                return p
    raise Unavailable("busybox-static is needed for the guest's initramfs (apt-get install busybox-static)")


def qemu_binary(arch: str = "x86_64") -> str:
    a = arch_of(arch)
    path = shutil.which(a.qemu)
    if not path:
        raise Unavailable(f"{a.qemu} is needed (apt-get install {a.qemu_package})")
    return path


def _apt_download(package: str, cache: Path, why: str) -> Path:
    """`apt-get download PACKAGE` into ``cache``; the .deb. Raises Unavailable with apt's words."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise Unavailable(f"{why}: no apt-get/dpkg-deb to fetch {package}")
    policy = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True)
    m = re.search(r"Candidate:\s*(\S+)", policy.stdout)
    if not m or m.group(1) == "(none)":
        arch = package.partition(":")[2]
        hint = f" (dpkg --add-architecture {arch} && apt-get update)" if arch else ""
        raise Unavailable(f"{why}: apt does not know {package}{hint}")
    cache.mkdir(parents=True, exist_ok=True)
    name = package.partition(":")[0]
    dl = subprocess.run(["apt-get", "download", "-q", package], cwd=cache, capture_output=True, text=True,
                        timeout=900)
    debs = sorted(cache.glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime)
    if dl.returncode != 0 or not debs:
        raise Unavailable(f"{why}: apt-get download {package} failed: {dl.stderr[-500:]}")
    return debs[-1]


def _deb_members(deb: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The regular files of a .deb whose path (without ./) ``wanted`` accepts."""
    fsys = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, timeout=600)
    if fsys.returncode != 0:
        raise Unavailable(f"dpkg-deb could not read {deb}: {fsys.stderr.decode()[-500:]}")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(fsys.stdout)) as tar:
        for m in tar.getmembers():
            name = m.name.removeprefix("./")
            if m.isfile() and wanted(name):
                out[name] = tar.extractfile(m).read()
    return out


def _foreign_busybox(a: Arch, cache: Path) -> Path:
    cached = cache / f"busybox-{a.deb}"
    if not cached.is_file():
        deb = _apt_download(f"busybox-static:{a.deb}", cache, f"busybox-static for the {a.name} guest")
        files = _deb_members(deb, lambda n: n == "bin/busybox")
        deb.unlink()
        if "bin/busybox" not in files:
            raise Unavailable(f"{deb.name} has no bin/busybox")
        cached.write_bytes(files["bin/busybox"])
        cached.chmod(0o755)
    return cached


@dataclass
class Kernel:
    vmlinuz: Path
    isf: Path | None  # the volatility3 symbol table; only in ../shared/fixtures
    origin: str
    release: str = KERNEL_RELEASE
    arch: str = "x86_64"
    config: Path | None = None  # boot/config-<release>, when the kernel came from its .deb


def locate_kernel(cache: Path, arch: str = "x86_64") -> Kernel:
    """The fixture kernel from ../shared/fixtures; otherwise the same Debian package via apt-get download
    (only when apt knows it). For aarch64: Debian 12's current arm64 cloud kernel, from ``cache`` when a
    download is there already. Raises Unavailable with the reason."""
    if arch_of(arch).name != "x86_64":
        return _foreign_kernel(arch_of(arch), cache)
    vmlinuz = FIXTURES / f"vmlinuz-{KERNEL_RELEASE}"
    if vmlinuz.is_file():
        isf = FIXTURES / ISF_NAME
        return Kernel(vmlinuz, isf if isf.is_file() else None, str(FIXTURES))
    cached = cache / f"vmlinuz-{KERNEL_RELEASE}"
    if cached.is_file():
        return Kernel(cached, None, f"apt-get download {KERNEL_PACKAGE} (cached)")
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise Unavailable(f"no {FIXTURES} and no apt-get/dpkg-deb to fetch {KERNEL_PACKAGE}")
    policy = subprocess.run(["apt-cache", "policy", KERNEL_PACKAGE], capture_output=True, text=True)
    m = re.search(r"Candidate:\s*(\S+)", policy.stdout)
    if not m or m.group(1) == "(none)":
        raise Unavailable(f"no {FIXTURES} and apt does not know {KERNEL_PACKAGE} "
                          "(needs Debian 12 bookworm sources, or the fixture directory)")
    cache.mkdir(parents=True, exist_ok=True)
    dl = subprocess.run(["apt-get", "download", "-q", KERNEL_PACKAGE], cwd=cache, capture_output=True,
                        text=True, timeout=900)
    debs = sorted(cache.glob(f"{KERNEL_PACKAGE}_*.deb"))
    if dl.returncode != 0 or not debs:
        raise Unavailable(f"no {FIXTURES} and apt-get download {KERNEL_PACKAGE} failed: {dl.stderr[-500:]}")
    fsys = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], capture_output=True, timeout=600)
    if fsys.returncode != 0:
        raise Unavailable(f"dpkg-deb could not read {debs[-1]}: {fsys.stderr.decode()[-500:]}")
    with tarfile.open(fileobj=io.BytesIO(fsys.stdout)) as tar:
        for m in tar.getmembers():
            if m.isfile() and m.name.lstrip("./") == f"boot/vmlinuz-{KERNEL_RELEASE}":
                cached.write_bytes(tar.extractfile(m).read())
                break
    debs[-1].unlink()
    if not cached.is_file():
        raise Unavailable(f"{debs[-1].name} has no boot/vmlinuz-{KERNEL_RELEASE}")
    return Kernel(cached, None, f"apt-get download {KERNEL_PACKAGE}")


def _foreign_kernel(a: Arch, cache: Path) -> Kernel:
    """The cloud kernel of ``a`` (its Image and config) from ``cache``, else fetched: the release is the one
    Debian's meta package depends on today (older ones leave the archive), and the kernel is kept, so the
    next run needs no network."""
    pattern = f"vmlinuz-*-cloud-{a.deb}"
    have = sorted(cache.glob(pattern), key=lambda p: p.stat().st_mtime)
    origin = f"apt-get download linux-image-*-cloud-{a.deb}:{a.deb} (cached in {cache})"
    if not have:
        depends = subprocess.run(["apt-cache", "depends", f"{a.kernel_meta}:{a.deb}"], capture_output=True,
                                 text=True) if shutil.which("apt-cache") else None
        m = re.search(rf"Depends:\s*(linux-image-(\S+-cloud-{a.deb}))(?::{a.deb})?\s*$",
                      depends.stdout if depends else "", re.M)
        if not m:
            raise Unavailable(f"apt does not know {a.kernel_meta}:{a.deb} (dpkg --add-architecture {a.deb} "
                              "&& apt-get update, with Debian 12 bookworm sources)")
        package, release = m.group(1), m.group(2)
        deb = _apt_download(f"{package}:{a.deb}", cache, f"the {a.name} guest's kernel")
        files = _deb_members(deb, lambda n: n in (f"boot/vmlinuz-{release}", f"boot/config-{release}"))
        deb.unlink()
        if f"boot/vmlinuz-{release}" not in files:
            raise Unavailable(f"{deb.name} has no boot/vmlinuz-{release}")
        (cache / f"config-{release}").write_bytes(files.get(f"boot/config-{release}", b""))
        (cache / f"vmlinuz-{release}").write_bytes(files[f"boot/vmlinuz-{release}"])
        have = [cache / f"vmlinuz-{release}"]
        origin = f"apt-get download {package}:{a.deb}"
    vmlinuz = have[-1]
    release = vmlinuz.name.removeprefix("vmlinuz-")
    config = cache / f"config-{release}"
    return Kernel(vmlinuz, None, origin, release, a.name, config if config.is_file() else None)


def config_has(kernel: Kernel, option: str) -> str | None:
    """The value of CONFIG_<option> in the kernel's config (y, m, a number), or None when unset/unknown."""
    if kernel.config is None:
        return None
    m = re.search(rf"^CONFIG_{option}=(.*)$", kernel.config.read_text(errors="replace"), re.M)
    return m.group(1) if m else None


def shared_libraries(binary: Path) -> list[str]:
    """Absolute paths (as the loader sees them) of the libraries `binary` needs: ldd's list (with the
    dynamic loader), the glibc extras next to libc, and whatever a run of `binary --version` loads
    from outside its own unpack directory (LD_DEBUG=files)."""
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=60)
    if ldd.returncode != 0:
        raise Unavailable(f"ldd {binary} failed: {ldd.stderr.strip()} (is it a dynamic executable?)")
    found: list[str] = []
    for line in ldd.stdout.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            found.append(m.group(1))
    libc = next((p for p in found if Path(p).name == "libc.so.6"), None)
    if libc:
        found += [str(Path(libc).parent / n) for n in GLIBC_EXTRAS if (Path(libc).parent / n).exists()]
    debug = subprocess.run([str(binary), "--version"], env={"LD_DEBUG": "files", "PATH": SSM_PATH},
                           capture_output=True, text=True, timeout=120)
    for path in re.findall(r"calling init: (/\S+)", debug.stderr):
        if "/_MEI" not in path:
            found.append(path)
    return sorted(set(found))


def _applets(busybox: Path) -> list[str]:
    """busybox's applets as paths (bin/sh, usr/bin/env, ...). A foreign busybox runs here only through
    binfmt_misc (qemu-user-static); without it the host's busybox-static of the same Debian release lists
    the same applets, and failing both, the few /init needs."""
    for cand in (busybox, Path("/bin/busybox")):
        try:
            out = subprocess.run([str(cand), "--list-full"], capture_output=True, text=True, timeout=30).stdout
        except OSError:  # ENOEXEC: no binfmt handler for the foreign binary
            continue
        if out.split():
            return out.split()
    return [f"bin/{n}" for n in ("sh", "mount", "mkdir", "cat", "echo", "sleep", "dd", "tail", "base64", "cut",
                                 "hostname", "ip", "sync", "env", "grep", "umount", "cp", "rm", "mkfifo", "nc")]


# --------------------------------------------------------------------------------------------------
# initramfs (cpio "newc", gzip)
# --------------------------------------------------------------------------------------------------

class Initramfs:
    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, bytes, int]] = {}  # path -> (mode, data, rdev)

    def _parents(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            self.entries.setdefault(d, (0o040755, b"", 0))

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        self.entries[path.strip("/")] = (0o040000 | mode, b"", 0)

    def add_file(self, path: str, data: bytes | Path, mode: int = 0o755) -> None:
        self._parents(path)
        self.entries[path.strip("/")] = (0o100000 | mode, data if isinstance(data, bytes) else data.read_bytes(), 0)

    def add_symlink(self, path: str, target: str) -> None:
        self._parents(path)
        self.entries.setdefault(path.strip("/"), (0o120777, target.encode(), 0))

    def add_chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._parents(path)
        self.entries[path.strip("/")] = (0o020000 | mode, b"", (major << 8) | minor)

    def add_busybox(self, busybox: Path) -> None:
        self.add_file("/bin/busybox", busybox)
        listing = _applets(busybox)
        for rel in listing:
            if rel != "bin/busybox":
                self.add_symlink(rel, "/bin/busybox")

    def add_program(self, path: str, binary: Path) -> list[str]:
        """The program and its shared libraries at the paths the host's loader uses."""
        self.add_file(path, binary)
        libs = shared_libraries(binary)
        for lib in libs:
            self.add_file(lib, Path(lib), 0o755)
        return libs

    def write(self, dest: Path) -> Path:
        out = io.BytesIO()

        def entry(ino: int, name: str, mode: int, data: bytes, rdev: int = 0) -> None:
            raw = name.encode() + b"\0"
            fields = [ino, mode, 0, 0, 2 if mode & 0o040000 == 0o040000 else 1, 0, len(data), 0, 0,
                      rdev >> 8, rdev & 0xFF, len(raw), 0]
            out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
            out.write(b"\0" * (-(110 + len(raw)) % 4))
            out.write(data)
            out.write(b"\0" * (-len(data) % 4))

        for ino, name in enumerate(sorted(self.entries), start=1):
            mode, data, rdev = self.entries[name]
            entry(ino, name, mode, data, rdev)
        entry(0, "TRAILER!!!", 0, b"")
        dest.write_bytes(gzip.compress(out.getvalue(), compresslevel=1))
        return dest


# --------------------------------------------------------------------------------------------------
# The guest's /init
# --------------------------------------------------------------------------------------------------

PRELUDE = """#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t devpts devpts /dev/pts 2>/dev/null
hostname triagent-guest
ip link set lo up 2>/dev/null
: > /tmp/meta
meta() { echo "$1 $2" >> /tmp/meta; }
meta64() { echo "$1 $(tail -c 262144 "$2" | base64 -w 0)" >> /tmp/meta; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
i=0; while [ ! -b /dev/nvme0n1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/nvme0n1 ] || echo "triagent-guest: no /dev/nvme0n1" >&2
meta boot_s "$(uptime_s)"
echo "triagent-guest: ready"
"""

EPILOGUE = """
cat /proc/iomem > /tmp/iomem; meta64 iomem /tmp/iomem
cat /proc/version > /tmp/version; meta64 version /tmp/version
meta end_s "$(uptime_s)"
dd if=/tmp/meta of=/dev/nvme0n1 bs=1M seek={meta_mib} conv=fsync 2>/dev/null
sync
echo "{marker}"
while :; do sleep 3600; done
"""


@dataclass
class StreamResult:
    name: str
    rc: int
    nbytes: int
    seconds: float  # guest-side wall time of the command (from /proc/uptime)
    stderr: bytes
    path: Path  # the bytes the command wrote to stdout, copied out of the disk image


@dataclass
class GuestResult:
    workdir: Path
    serial: str
    meta: dict[str, str]
    streams: dict[str, StreamResult]
    captures: dict[str, tuple[int, bytes]]  # name -> (exit code, stdout+stderr)
    dump: Path | None  # QEMU's dump-guest-memory ELF, when asked for
    wall_s: float

    def b64(self, key: str) -> bytes:
        return base64.b64decode(self.meta.get(key, ""))

    @property
    def iomem_ram(self) -> list[tuple[int, int]]:
        """Top-level `System RAM` ranges of the guest's /proc/iomem as [start, end) pairs."""
        ranges = []
        for line in self.b64("iomem").decode().splitlines():
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) : System RAM$", line)
            if m:
                ranges.append((int(m.group(1), 16), int(m.group(2), 16) + 1))
        return ranges


@dataclass
class Guest:
    kernel: Kernel
    workdir: Path
    memory_mib: int = 512
    disk_mib: int = 2048
    cpus: int = 1
    cmdline: str | None = None  # default: the architecture's serial console, panic=-1 quiet
    busybox: Path | None = None  # default: busybox_static(kernel.arch)
    initramfs: Initramfs = field(default_factory=Initramfs)
    steps: list[str] = field(default_factory=list)
    _streams: list[tuple[str, int, int, str]] = field(default_factory=list)
    _captures: list[str] = field(default_factory=list)
    _next_mib: int = 0

    META_MIB = 8  # the metadata block: the last 8 MiB of the disk

    def __post_init__(self) -> None:
        self.arch = arch_of(self.kernel.arch)
        if self.cmdline is None:
            self.cmdline = f"console={self.arch.console} panic=-1 quiet"
        self.initramfs.add_busybox(self.busybox or busybox_static(self.arch.name))
        self.initramfs.add_chardev("/dev/console", 5, 1)
        self.initramfs.add_chardev("/dev/null", 1, 3, 0o666)
        for d in ("proc", "sys", "tmp", "root", "usr/bin", "usr/sbin", "usr/local/bin", "etc"):
            self.initramfs.add_dir(d)
        self.initramfs.add_file("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        self.initramfs.add_file("/etc/group", b"root:x:0:\n", 0o644)

    def shell(self, script: str) -> None:
        """Raw shell lines for /init (run as root, PID 1's shell, cwd /)."""
        self.steps.append(script)

    def plant_process(self, name: str) -> None:
        """A long-lived process whose comm (what ps and volatility's pslist show) is `name`: a shell
        script of that name (the kernel names a script's process after the script's file)."""
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", name), "comm holds 15 characters"
        self.initramfs.add_file(f"/usr/local/bin/{name}", b"#!/bin/sh\nwhile :; do sleep 3600; done\n")
        self.shell(f"/usr/local/bin/{name} </dev/null >/dev/null 2>&1 &\nmeta planted_pid $!")

    def capture(self, name: str, command: str) -> None:
        """Run `command` (a shell string) and keep its stdout+stderr (last 256 KiB) and exit code."""
        self._captures.append(name)
        self.shell(f"( {command} ) </dev/null >/tmp/cap.{name} 2>&1; meta cap.{name}.rc $?\n"
                   f"meta64 cap.{name}.out /tmp/cap.{name}")

    def stream(self, name: str, command: str, max_mib: int, cwd: str = "/usr/bin") -> None:
        """Run `command` with stdout piped raw onto the NVMe disk at the next free offset (at most
        `max_mib`), stderr kept; records exit code, byte count and guest-side seconds.

        busybox dd does not report bytes and busybox tee (4 KiB at a time) is 4x slower than the disk
        under TCG, so nothing counts in the guest: a random end marker follows the output, and the host
        finds it in the last MiB (dd's count of full 1 MiB records says which one)."""
        off = self._next_mib
        self._next_mib += max_mib
        if self._next_mib > self.disk_mib - self.META_MIB:
            raise ValueError("streams do not fit on the disk")
        marker = f"@@TRIAGENT-STREAM-END-{secrets.token_hex(12)}@@"
        self._streams.append((name, off, max_mib, marker))
        self.shell(f"""
t0=$(uptime_s)
( cd {shlex.quote(cwd)} && ( {command} ) 2>/tmp/s.{name}.err; echo $? > /tmp/s.{name}.rc; printf '%s' '{marker}' ) \
    </dev/null | dd of=/dev/nvme0n1 bs=1M iflag=fullblock seek={off} conv=fsync 2>/tmp/s.{name}.dd
t1=$(uptime_s)
meta s.{name}.rc "$(cat /tmp/s.{name}.rc)"
meta s.{name}.t0 "$t0"
meta s.{name}.t1 "$t1"
meta64 s.{name}.stderr /tmp/s.{name}.err
meta64 s.{name}.dd /tmp/s.{name}.dd
echo "triagent-guest: stream {name} done, rc $(cat /tmp/s.{name}.rc), $t0-$t1 s"
""")

    def init_script(self) -> str:
        return PRELUDE + "\n".join(self.steps) + EPILOGUE.format(
            meta_mib=self.disk_mib - self.META_MIB, marker=DONE_MARKER)

    def run(self, timeout: float = 1200, dump_memory: bool = False) -> GuestResult:
        """Boot, wait for the guest to finish its steps, optionally take QEMU's dump-guest-memory, stop
        QEMU and read the results back. Raises RuntimeError (with the serial log's tail) on failure."""
        qemu = qemu_binary(self.arch.name)
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        self.initramfs.add_file("/init", self.init_script().encode())
        initrd = self.initramfs.write(w / "initramfs.cpio.gz")
        disk, serial, qmp_sock, qemu_log = w / "disk.img", w / "serial.log", w / "qmp.sock", w / "qemu.log"
        for p in (disk, serial, qmp_sock):
            p.unlink(missing_ok=True)
        with open(disk, "wb") as f:
            f.truncate(self.disk_mib * MIB)
        cmd = [qemu, *self.arch.machine, "-m", str(self.memory_mib), "-smp", str(self.cpus),
               "-nodefaults", "-display", "none", "-monitor", "none", "-nic", "none", "-no-reboot",
               "-kernel", str(self.kernel.vmlinuz), "-initrd", str(initrd), "-append", self.cmdline,
               "-serial", f"file:{serial}",
               "-drive", f"file={disk},if=none,id=nv,format=raw,cache=writeback",
               "-device", "nvme,serial=triagent,drive=nv",
               "-qmp", f"unix:{qmp_sock},server=on,wait=off"]
        (w / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
        dump = w / "qemu-dump.elf" if dump_memory else None
        start = time.monotonic()
        with open(qemu_log, "wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_done(proc, serial, qemu_log, start + timeout)
            with QMP(qmp_sock) as qmp:
                if dump:
                    qmp.command("dump-guest-memory", paging=False, protocol=f"file:{dump}")
                qmp.command("quit")
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        wall = time.monotonic() - start
        return self._collect(serial.read_text(errors="replace"), disk, dump, wall)

    @staticmethod
    def _wait_done(proc: subprocess.Popen, serial: Path, qemu_log: Path, deadline: float) -> None:
        def tail() -> str:
            s = serial.read_text(errors="replace") if serial.exists() else ""
            q = qemu_log.read_text(errors="replace") if qemu_log.exists() else ""
            return f"--- serial (tail) ---\n{s[-4000:]}\n--- qemu ---\n{q[-2000:]}"

        pos = 0
        while True:
            if serial.exists():
                with open(serial, "rb") as f:
                    f.seek(max(0, pos - len(DONE_MARKER)))
                    chunk = f.read()
                    pos = f.tell()
                if DONE_MARKER.encode() in chunk:
                    return
            if proc.poll() is not None:
                raise RuntimeError(f"QEMU exited ({proc.returncode}) before the guest finished\n{tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the guest did not finish in time\n{tail()}")
            time.sleep(0.5)

    def _collect(self, serial: str, disk: Path, dump: Path | None, wall: float) -> GuestResult:
        with open(disk, "rb") as f:
            f.seek((self.disk_mib - self.META_MIB) * MIB)
            raw = f.read(self.META_MIB * MIB).split(b"\0", 1)[0].decode(errors="replace")
        meta = {}
        for line in raw.splitlines():
            key, _, value = line.partition(" ")
            meta[key] = value
        result = GuestResult(self.workdir, serial, meta, {}, {}, dump, wall)
        if "end_s" not in meta:
            raise RuntimeError(f"no metadata block on the guest's disk\n{serial[-4000:]}")
        for name, off, max_mib, marker in self._streams:
            if f"s.{name}.t1" not in meta:
                raise RuntimeError(f"stream {name} left no record\n{serial[-4000:]}")
            out = self.workdir / f"{name}.out"
            nbytes = self._copy_stream(disk, off, max_mib, marker.encode(), result.b64(f"s.{name}.dd"), out)
            rc = meta.get(f"s.{name}.rc", "")
            result.streams[name] = StreamResult(
                name, int(rc) if rc.lstrip("-").isdigit() else -1, nbytes,
                float(meta[f"s.{name}.t1"]) - float(meta[f"s.{name}.t0"]),
                result.b64(f"s.{name}.stderr"), out)
        for name in self._captures:
            rc = meta.get(f"cap.{name}.rc", "")
            result.captures[name] = (int(rc) if rc.lstrip("-").isdigit() else -1, result.b64(f"cap.{name}.out"))
        disk.unlink()  # up to GBs; everything of use is copied out
        return result


    @staticmethod
    def _copy_stream(disk: Path, off_mib: int, max_mib: int, marker: bytes, dd_report: bytes, out: Path) -> int:
        """Copy the stream at `off_mib` up to its end marker into `out`; its length (-1: no marker)."""
        m = re.search(rb"(\d+)\+(\d+) records out", dd_report)
        full = int(m.group(1)) if m else None
        base, limit = off_mib * MIB, (off_mib + max_mib) * MIB
        with open(disk, "rb") as src:
            if full is not None:  # the marker ends in the record after the last full one (or at its end)
                lo = base + max(0, full * MIB - len(marker))
                src.seek(lo)
                window = src.read(min(limit, base + (full + 1) * MIB) - lo)
                at = window.rfind(marker)
                end = lo + at if at >= 0 and not window[at + len(marker):].strip(b"\0") else -1
            else:
                with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    end = mm.rfind(marker, base, limit)
            if end < 0:
                out.write_bytes(b"")
                return -1
            src.seek(base)
            with open(out, "wb") as dst:
                left = end - base
                while left > 0:
                    block = src.read(min(left, 8 * MIB))
                    if not block:
                        break
                    dst.write(block)
                    left -= len(block)
        return end - base


class QMP:
    """Just enough of the QEMU Machine Protocol: synchronous commands over the unix socket."""

    def __init__(self, path: Path, timeout: float = 600) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")
        self._read()  # greeting
        self.command("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            line = self.reader.readline()
            if not line:
                raise RuntimeError("QMP connection closed")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def command(self, name: str, **arguments: object) -> object:
        msg: dict[str, object] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"QMP {name}: {reply['error']}")
        return reply.get("return")

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()
        self.sock.close()


# --------------------------------------------------------------------------------------------------
# Physical-memory images
# --------------------------------------------------------------------------------------------------

LIME_MAGIC, AVML_MAGIC = 0x4C694D45, 0x4C4D5641
HEADER = struct.Struct("<IIQQQ")


class PhysImage:
    """Random access to physical addresses of an image; `ranges` are [start, end) pairs."""

    ranges: list[tuple[int, int]]

    def read(self, paddr: int, size: int) -> bytes | None:
        """The bytes at [paddr, paddr+size), or None when the image does not hold all of them."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class ElfCore(PhysImage):
    """QEMU `dump-guest-memory` (paging off) ELF64 core: PT_LOAD segments keyed by p_paddr."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "rb")
        self.mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
        if self.mm[:4] != b"\x7fELF" or self.mm[4] != 2:
            raise ValueError(f"{path}: not an ELF64 file")
        e_phoff, = struct.unpack_from("<Q", self.mm, 0x20)
        e_phentsize, e_phnum = struct.unpack_from("<HH", self.mm, 0x36)
        self.segments: list[tuple[int, int, int]] = []  # (paddr, offset, filesz)
        for i in range(e_phnum):
            p_type, _flags, p_offset, _vaddr, p_paddr, p_filesz = struct.unpack_from(
                "<IIQQQQ", self.mm, e_phoff + i * e_phentsize)
            if p_type == 1 and p_filesz:
                self.segments.append((p_paddr, p_offset, p_filesz))
        self.ranges = [(p, p + n) for p, _, n in self.segments]

    def read(self, paddr: int, size: int) -> bytes | None:
        for p, off, n in self.segments:
            if p <= paddr and paddr + size <= p + n:
                return self.mm[off + paddr - p: off + paddr - p + size]
        return None

    def find_all(self, needle: bytes) -> Iterator[int]:
        """Physical addresses of every occurrence of `needle`."""
        for p, off, n in self.segments:
            i = self.mm.find(needle, off, off + n)
            while i != -1:
                yield p + i - off
                i = self.mm.find(needle, i + 1, off + n)

    def close(self) -> None:
        self.mm.close()
        self.f.close()


class LimeImage(PhysImage):
    """LiME: 32-byte header (magic, version 1, start, end inclusive, 0) then end-start+1 bytes, repeated."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "rb")
        self.mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
        self.records: list[tuple[int, int, int]] = []  # (start, end exclusive, data offset)
        off = 0
        while off < len(self.mm):
            magic, version, start, end, pad = HEADER.unpack_from(self.mm, off)
            if magic != LIME_MAGIC or version != 1 or pad != 0 or end < start:
                raise ValueError(f"{path}: bad LiME header at offset {off}: "
                                 f"{magic:#x} v{version} {start:#x}-{end:#x} pad {pad:#x}")
            size = end - start + 1
            if off + HEADER.size + size > len(self.mm):
                raise ValueError(f"{path}: LiME record {start:#x}-{end:#x} truncated")
            self.records.append((start, end + 1, off + HEADER.size))
            off += HEADER.size + size
        self.ranges = [(s, e) for s, e, _ in self.records]

    def read(self, paddr: int, size: int) -> bytes | None:
        for s, e, off in self.records:
            if s <= paddr and paddr + size <= e:
                return self.mm[off + paddr - s: off + paddr - s + size]
        return None

    def close(self) -> None:
        self.mm.close()
        self.f.close()


def _varint(data: bytes) -> int:
    value = shift = 0
    for b in data:
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
        shift += 7
    raise ValueError("truncated varint")


def snappy_library() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libsnappy.so.1")
    except OSError:
        return None


class AvmlImage(PhysImage):
    """AVML compressed: header (magic "AVML", version 2, start, end inclusive, 0), a snappy *framed*
    stream of the block, then u64 length of that stream. Frames are indexed without decompressing;
    reads decompress with the system libsnappy (libsnappy1v5)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = open(path, "rb")
        self.mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
        # per record: (start, end exclusive, [(uncompressed offset, uncompressed len, file offset, len, kind)])
        self.records: list[tuple[int, int, list[tuple[int, int, int, int, int]]]] = []
        self.compressed_bytes = 0
        # Blocks whose snappy stream is longer than end - start (incompressible data): volatility3 2.28.2
        # reads only end - start bytes of a block and then loops forever (AVMLLayer._read_snappy_frames).
        self.oversized: list[tuple[int, int, int]] = []  # (start, stream length, block size)
        off = 0
        while off < len(self.mm):
            magic, version, start, end, pad = HEADER.unpack_from(self.mm, off)
            if magic != AVML_MAGIC or version != 2 or pad != 0 or end < start:
                raise ValueError(f"{path}: bad AVML header at offset {off}: "
                                 f"{magic:#x} v{version} {start:#x}-{end:#x} pad {pad:#x}")
            want = end - start + 1
            pos = stream = off + HEADER.size
            frames: list[tuple[int, int, int, int, int]] = []
            got = 0
            while got < want:
                kind = self.mm[pos]
                n = int.from_bytes(self.mm[pos + 1: pos + 4], "little")
                body = pos + 4
                if kind == 0xFF:
                    if self.mm[body: body + n] != b"sNaPpY":
                        raise ValueError(f"{path}: bad snappy stream identifier at {pos}")
                elif kind in (0x00, 0x01):
                    ulen = _varint(self.mm[body + 4: body + 14]) if kind == 0 else n - 4
                    frames.append((got, ulen, body + 4, n - 4, kind))
                    got += ulen
                elif kind < 0x80:
                    raise ValueError(f"{path}: unskippable snappy chunk type {kind:#x} at {pos}")
                pos = body + n
            if got != want:
                raise ValueError(f"{path}: AVML block {start:#x}-{end:#x} holds {got} bytes, not {want}")
            trailer, = struct.unpack_from("<Q", self.mm, pos)
            if trailer != pos - stream:
                raise ValueError(f"{path}: AVML block {start:#x}-{end:#x}: trailer {trailer} != stream "
                                 f"length {pos - stream}")
            self.compressed_bytes += pos - stream
            if pos - stream > end - start:
                self.oversized.append((start, pos - stream, want))
            self.records.append((start, end + 1, frames))
            off = pos + 8
        self.ranges = [(s, e) for s, e, _ in self.records]
        self.snappy = snappy_library()

    def _frame(self, file_off: int, n: int, kind: int, ulen: int) -> bytes:
        data = self.mm[file_off: file_off + n]
        if kind == 1:
            return data
        if self.snappy is None:
            raise Unavailable("libsnappy.so.1 is needed to read AVML images (apt-get install libsnappy1v5)")
        out = ctypes.create_string_buffer(ulen)
        size = ctypes.c_size_t(ulen)
        if self.snappy.snappy_uncompress(data, ctypes.c_size_t(n), out, ctypes.byref(size)) != 0:
            raise ValueError(f"{self.path}: snappy could not decompress the frame at {file_off}")
        return out.raw[: size.value]

    def read(self, paddr: int, size: int) -> bytes | None:
        for s, e, frames in self.records:
            if s <= paddr and paddr + size <= e:
                lo, hi = paddr - s, paddr - s + size
                parts = [self._frame(fo, n, kind, ulen)[max(0, lo - uo): hi - uo]
                         for uo, ulen, fo, n, kind in frames if uo < hi and uo + ulen > lo]
                return b"".join(parts)
        return None

    def close(self) -> None:
        self.mm.close()
        self.f.close()


def to_lime(image: PhysImage, dest: Path) -> Path:
    """Write `image`'s ranges as a LiME file (e.g. to analyse an AVML image volatility cannot read)."""
    with open(dest, "wb") as f:
        for start, end in image.ranges:
            f.write(HEADER.pack(LIME_MAGIC, 1, start, end - 1, 0))
            for addr in range(start, end, 16 * MIB):
                data = image.read(addr, min(16 * MIB, end - addr))
                assert data is not None and len(data) == min(16 * MIB, end - addr)
                f.write(data)
    return dest


def open_image(path: Path) -> PhysImage:
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"\x7fELF":
        return ElfCore(path)
    magic = int.from_bytes(head, "little") if len(head) == 4 else 0
    if magic == LIME_MAGIC:
        return LimeImage(path)
    if magic == AVML_MAGIC:
        return AvmlImage(path)
    raise ValueError(f"{path}: not a LiME, AVML or ELF image (starts with {head!r})")


# --------------------------------------------------------------------------------------------------
# The kernel's read-only data, located through the ISF
# --------------------------------------------------------------------------------------------------

@dataclass
class KernelLayout:
    text: int  # virtual address of _text (before KASLR)
    banner: int
    banner_prefix: bytes
    rodata: tuple[int, int]  # [__start_rodata, __end_rodata)
    physical_align: int = 0x200000


def kernel_layout(isf: Path) -> KernelLayout:
    with lzma.open(isf) if isf.suffix == ".xz" else open(isf, "rb") as f:
        symbols = json.load(f)["symbols"]
    banner = symbols["linux_banner"]
    return KernelLayout(symbols["_text"]["address"], banner["address"],
                        base64.b64decode(banner.get("constant_data", "")) or b"Linux version ",
                        (symbols["__start_rodata"]["address"], symbols["__end_rodata"]["address"]))


def rodata_physical(layout: KernelLayout, image: ElfCore) -> tuple[int, int]:
    """[start, end) physical range of the kernel's rodata in this boot: the kernel is loaded at a
    PHYSICAL_ALIGN-aligned address P (KASLR), so linux_banner sits at P + (banner - _text)."""
    rel = layout.banner - layout.text
    loads = sorted({x - rel for x in image.find_all(layout.banner_prefix)
                    if (x - rel) % layout.physical_align == 0 and x >= rel})
    if len(loads) != 1:
        raise ValueError(f"kernel load address not unique from linux_banner: {[hex(x) for x in loads]}")
    base = loads[0]
    return base + layout.rodata[0] - layout.text, base + layout.rodata[1] - layout.text


def compare_pages(a: PhysImage, b: PhysImage, start: int, end: int) -> tuple[int, list[int], list[int]]:
    """(identical pages, differing page addresses, addresses missing from either) over [start, end)."""
    same, differ, missing = 0, [], []
    for addr in range(start & ~(PAGE - 1), end, PAGE):
        x, y = a.read(addr, PAGE), b.read(addr, PAGE)
        if x is None or y is None:
            missing.append(addr)
        elif x == y:
            same += 1
        else:
            differ.append(addr)
    return same, differ, missing


# --------------------------------------------------------------------------------------------------
# volatility3, offline, as a subprocess of the test interpreter
# --------------------------------------------------------------------------------------------------

def volatility(python: str, image: Path, plugin: str, isf: Path, workdir: Path,
               timeout: float = 600) -> list[dict]:
    """Run one plugin with `-r json`; the ISF is the only symbol table offered, no network, own cache."""
    symdir, cache, home = workdir / "symbols", workdir / "vol-cache", workdir / "home"
    (symdir / "linux").mkdir(parents=True, exist_ok=True)
    cache.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    link = symdir / "linux" / isf.name
    if not link.exists():
        link.symlink_to(isf)
    code = "import sys; from volatility3.cli import main; sys.argv[0] = 'vol'; sys.exit(main())"
    try:
        proc = subprocess.run([python, "-c", code, "-q", "--offline", "-r", "json", "-f", str(image),
                               "-s", str(symdir), "--cache-path", str(cache), plugin],
                              env={"HOME": str(home), "PATH": os.environ.get("PATH", SSM_PATH)},
                              capture_output=True, timeout=timeout, cwd=workdir)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"volatility {plugin} on {image.name} still running after {timeout:.0f} s (an AVML block "
                           f"longer compressed than raw makes volatility3 2.28.2 loop forever)") from e
    if proc.returncode != 0:
        raise RuntimeError(f"volatility {plugin} failed ({proc.returncode}): {proc.stderr.decode()[-3000:]}")
    out = proc.stdout.decode()
    return json.loads(out[out.index("["):]) if "[" in out else []
