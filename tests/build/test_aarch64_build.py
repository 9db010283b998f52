"""dist/triagent-aarch64 and dist/triagent-aarch64-portable (bash build/aarch64.sh: build/build.sh run in an
arm64 Debian 12 root under qemu-user-static) are aarch64 ELF programs that start under qemu-user and say
their version; each has its CycloneDX SBOM, whose SHA-256 is the one written beside it and the one the binary
carries, and which names every package of build/requirements-aarch64.lock whose modules are inside, at the
lock's version. Which modules a package brings is read from its own RECORD in the arm64 build venv (not from
the SBOM under test); what the binary carries, with PyInstaller's own archive reader."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import need

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
LOCK = REPO / "build" / "requirements-aarch64.lock"
A64_ROOT = REPO / "build" / "work" / "aarch64" / "root"  # build/aarch64.sh's cached arm64 root
A64_SITE = A64_ROOT / "opt" / "triagent-build-venv" / "lib" / "python3.11" / "site-packages"
BINARIES = ("triagent-aarch64", "triagent-aarch64-portable")
EM_AARCH64 = 183
QEMU = "/usr/bin/qemu-aarch64-static"
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")

pytestmark = [
    pytest.mark.binary,
    pytest.mark.skipif(os.environ.get("TRIAGENT_AARCH64") != "1",
                       reason="aarch64 build and guest run only with TRIAGENT_AARCH64=1 "
                              "(bash build/aarch64.sh; see README)"),
]

# Run by the host's python3 with the arm64 build venv's site-packages first on sys.path: PyInstaller's archive
# reader is pure Python (the very version that built the binary), and it imports no arm64 extension.
# Prints {"carchive": {name: typecode}, "pyz": [module names], "embedded": triagent-sbom.json or null}.
_LISTER = """
import json, sys
sys.path.insert(0, sys.argv[2])
from PyInstaller.archive.readers import CArchiveReader
arch = CArchiveReader(sys.argv[1])
out = {"carchive": {n: v[-1] for n, v in arch.toc.items()}, "pyz": [], "embedded": None}
if "triagent-sbom.json" in arch.toc:
    out["embedded"] = json.loads(arch.extract("triagent-sbom.json"))
for name, v in arch.toc.items():
    if v[-1] == "z":
        out["pyz"] += [m for m, entry in arch.open_embedded_archive(name).toc.items() if entry[0] != 3]
print(json.dumps(out))
"""


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def built(name: str) -> Path:
    path = DIST / name
    need(path.exists(), f"dist/{name} is missing (bash build/aarch64.sh builds it)")
    return path


def e_machine(path: Path) -> int:
    head = path.open("rb").read(20)
    assert head[:4] == b"\x7fELF", f"{path.name} is not ELF"
    assert head[4] == 2 and head[5] == 1, f"{path.name} is not 64-bit little-endian ELF"
    return int.from_bytes(head[18:20], "little")


def listing(binary: Path) -> dict:
    need(A64_SITE.is_dir(), f"{A64_SITE} is missing (bash build/aarch64.sh makes the arm64 build venv)")
    proc = subprocess.run([sys.executable, "-c", _LISTER, str(binary), str(A64_SITE)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def binary_modules(lst: dict) -> set[str]:
    """Every module the onefile carries: its PYZ, its top-level scripts' modules and extension modules."""
    mods = set(lst["pyz"])
    for name, kind in lst["carchive"].items():
        if kind == "m":
            mods.add(name)
        elif kind == "b" and name.endswith(".so"):
            parts = name.split("/")
            mods.add(".".join(parts[:-1] + [parts[-1].split(".")[0]]))
    return mods


def locked() -> dict[str, str]:
    return {canon(n): v for n, v in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", LOCK.read_text(), re.M)}


def modules_of_lock_packages() -> dict[str, set[str]]:
    """canonical lock name -> the modules its installed files make (from its RECORD in the arm64 venv)."""
    pins = locked()
    out: dict[str, set[str]] = {}
    for info in A64_SITE.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(errors="replace")
        name = canon(re.search(r"^Name: (.+)$", meta, re.M)[1].strip())
        if name not in pins or not (info / "RECORD").exists():
            continue
        mods = set()
        for row in (info / "RECORD").read_text().splitlines():
            path = row.split(",")[0]
            if path.startswith("..") or ".dist-info/" in path or not path.endswith((".py", ".so")):
                continue
            parts = path.split("/")
            stem = parts[-1].split(".")[0]
            mods.add(".".join(parts[:-1] if stem == "__init__" else parts[:-1] + [stem]))
        out[name] = mods
    return out


@pytest.mark.parametrize("name", BINARIES)
def test_aarch64_elf(name):
    binary = built(name)
    assert e_machine(binary) == EM_AARCH64
    assert os.access(binary, os.X_OK)
    recorded = binary.with_name(name + ".sha256").read_text().split()
    assert recorded == [sha256(binary), name], f"{name}.sha256 does not name and hash {name}"


def run_aarch64(cmd: list[str]) -> subprocess.CompletedProcess:
    """``cmd`` with qemu-aarch64 registered in binfmt_misc: the portable launcher execs the onefile, which
    execs itself, and only the kernel (binfmt_misc) can send those arm64 children to qemu. If it is not
    registered, build/aarch64.sh --with-binfmt registers it for the run and undoes it afterwards."""
    if not (BINFMT.exists() and BINFMT.read_text().startswith("enabled")):
        need(os.geteuid() == 0, "qemu-aarch64 is not registered in binfmt_misc and registering it needs root")
        cmd = ["bash", str(REPO / "build" / "aarch64.sh"), "--with-binfmt", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd="/",
                          env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})


def test_portable_runs_under_qemu_user():
    binary = built("triagent-aarch64-portable")
    need(os.path.exists(QEMU), f"{QEMU} is missing (apt-get install qemu-user-static)")
    import agent
    want = f"triagent {agent.__version__}"
    t0 = time.monotonic()
    proc = run_aarch64([QEMU, str(binary), "--version"])
    took = time.monotonic() - t0
    assert proc.returncode == 0 and proc.stdout.strip() == want, (proc.stdout, proc.stderr[-2000:])
    print(f"qemu-aarch64-static triagent-aarch64-portable --version: {took:.2f} s")
    # Through binfmt_misc the kernel runs it as any program.
    proc = run_aarch64([str(binary), "--version"])
    assert proc.returncode == 0 and proc.stdout.strip() == want, (proc.stdout, proc.stderr[-2000:])


@pytest.mark.parametrize("name", BINARIES)
def test_sbom_hash_and_lock_packages(name):
    built(name)
    path = DIST / f"{name}.cdx.json"
    need(path.exists(), f"dist/{path.name} is missing (bash build/aarch64.sh copies it out of the arm64 root)")
    recorded = (DIST / f"{name}.cdx.json.sha256").read_text().split()
    assert recorded == [sha256(path), path.name], f"{name}.cdx.json.sha256 is not the SBOM's SHA-256 and name"
    bom = json.loads(path.read_text())
    assert bom["bomFormat"] == "CycloneDX"
    platform = {p["name"]: p["value"] for p in bom["metadata"]["component"].get("properties", [])}
    assert platform.get("triagent:platform", "").endswith("aarch64"), platform
    # What the onefile carries (the portable form wraps the very same onefile, SBOM hash included).
    lst = listing(DIST / "triagent-aarch64")
    kind = "portable" if name.endswith("-portable") else "onefile"
    embedded = lst["embedded"] or {}
    assert embedded.get(kind, {}).get("sha256") == sha256(path), \
        f"{path.name} is not the SBOM whose SHA-256 the binary carries: {embedded}"
    inside = binary_modules(lst)
    assert len(inside) > 500, "the reader did not see the PYZ"
    pins = locked()
    components = {canon(c["name"]): c.get("version") for c in bom["components"]}
    contained = {pkg for pkg, mods in modules_of_lock_packages().items() if mods & inside}
    assert len(contained) > 10, contained
    missing = sorted(p for p in contained if p not in components)
    assert not missing, f"{name} carries modules of these lock packages, absent from its SBOM: {missing}"
    wrong = sorted(f"{p} {components[p]} (lock {pins[p]})" for p in contained if components[p] != pins[p])
    assert not wrong, f"SBOM versions differ from the aarch64 lock: {wrong}"


def test_no_mount_left_behind():
    """build/aarch64.sh mounts proc, dev and dev/shm in the root only in a private mount namespace."""
    need(A64_ROOT.is_dir(), f"{A64_ROOT} is missing (bash build/aarch64.sh makes it)")
    left = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(A64_ROOT) + "/")]
    assert not left, f"mounts left under the arm64 root: {left}"
