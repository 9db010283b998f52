"""dist/<binary>.cdx.json (build/sbom.py, written by build/build.sh) is the SBOM of exactly that binary:
the binary carries the SBOM's SHA-256 (triagent-sbom.json, which custody records), and every Python
package the binary carries (its PYZ modules and extension modules, read back with PyInstaller's own
archive reader) is a component of it, at the version the lock pins; the runtime, the bootloader, the
symbol tables and, for the portable form, staticx's launcher, musl and the C runtime are there too."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import need

pytestmark = pytest.mark.binary

REPO = Path(__file__).resolve().parents[2]
DIST = REPO / "dist"
BUILD_VENV = Path(os.environ.get("TRIAGENT_BUILD_VENV", REPO / "build" / ".venv"))
OURS = ("agent", "collectors", "specs", "triagent_entry", "rthook_collector")

# Run by the build venv's interpreter (it has PyInstaller): every entry of the onefile archive, and every
# module of its PYZ but PEP 420 namespace packages (typecode 3: a name, no code, no owner), as JSON
# {"carchive": {name: typecode}, "pyz": [names], "embedded": the triagent-sbom.json it carries, or null}.
_LISTER = """
import json, sys
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


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contents(binary: Path) -> dict:
    py = BUILD_VENV / "bin" / "python"
    need(py.exists(), f"{py} is missing (bash build/build.sh makes it)")
    proc = subprocess.run([str(py), "-c", _LISTER, str(binary)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def sbom_of(binary: Path, onefile: Path | None = None, kind: str = "onefile") -> dict:
    """The SBOM beside ``binary``, checked against the SHA-256 that ``onefile`` (the PyInstaller binary
    itself, or the one a portable form wraps) carries for it."""
    need(binary.exists(), f"{binary.relative_to(REPO)} is missing (bash build/build.sh builds it)")
    path = binary.with_name(binary.name + ".cdx.json")
    need(path.exists(), f"{path.relative_to(REPO)} is missing (build/build.sh writes it beside the binary)")
    bom = json.loads(path.read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    assert bom["metadata"]["component"]["name"] == binary.name
    embedded = contents(onefile or binary)["embedded"]
    assert embedded and embedded[kind] == {"name": path.name, "sha256": sha256(path)}, \
        f"{path.name} is not the SBOM {binary.name} carries the SHA-256 of: {embedded}"
    recorded = path.with_name(path.name + ".sha256")
    assert recorded.read_text().split()[0] == sha256(path), f"{recorded.name} is not the SBOM's SHA-256"
    return bom


def module_roots(bom: dict) -> dict[str, str]:
    """import-name root -> the component (bom-ref) that declares it (property triagent:modules)."""
    roots = {}
    for comp in bom["components"]:
        for prop in comp.get("properties", []):
            if prop["name"] == "triagent:modules":
                for root in prop["value"].split():
                    roots[root] = comp["bom-ref"]
    return roots


def imported_modules(listing: dict) -> set[str]:
    """The modules of the binary that some package brings: PYZ modules and extension modules, without the
    standard library (the runtime component), PyInstaller's loader and triagent's own."""
    mods = set(listing["pyz"])
    for name, kind in listing["carchive"].items():
        if kind == "m":
            mods.add(name)
        elif kind == "b" and name.endswith(".so") and not name.startswith("python3") \
                and not re.match(r"lib[^/]*\.so", name):
            parts = name.split("/")
            mods.add(".".join(parts[:-1] + [parts[-1].split(".")[0]]))
    return {m for m in mods if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] not in OURS
            and not m.startswith(("pyimod", "pyiboot", "pyi_rth_", "_sysconfigdata_"))}  # the last: Debian's stdlib


def _locked_versions(lock: Path) -> dict[str, str]:
    canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    return {canon(n): v for n, v in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), re.M)}


@pytest.mark.parametrize("name", ["triagent", "triagent-responder"])
def test_every_package_inside_is_in_the_sbom(name):
    binary = DIST / name
    bom = sbom_of(binary)
    listing = contents(binary)
    roots = module_roots(bom)
    missing = sorted(m for m in imported_modules(listing)
                     if not any(m == r or m.startswith(r + ".") for r in roots))
    assert not missing, f"{name} carries modules no SBOM component declares: {missing[:40]}"
    assert len(imported_modules(listing)) > 100  # the reader saw the PYZ, not just the outer archive
    # copied metadata (pySigma's dist-info in the responder) names a component too
    refs = {c["name"].lower().replace("_", "-").replace(".", "-") for c in bom["components"]}
    for entry in listing["carchive"]:
        m = re.match(r"([^/]+)-[^-/]+\.dist-info/", entry)
        if m:
            assert m[1].lower().replace("_", "-").replace(".", "-") in refs, entry
    # each Python package at the lock's version, with the lock's hashes
    lock_prop = next(p["value"] for p in bom["metadata"]["component"]["properties"] if p["name"] == "triagent:lock")
    locked = _locked_versions(REPO / "build" / lock_prop.split()[0])
    for comp in bom["components"]:
        if comp.get("purl", "").startswith("pkg:pypi/") and comp["name"] != "pyinstaller-bootloader":
            key = re.sub(r"[-_.]+", "-", comp["name"]).lower()
            assert locked.get(key) == comp["version"], f"{comp['name']} {comp['version']} is not the lock's pin"
    # the symbol tables it bundles, each by name and SHA-256
    symbols = {c["name"]: c["hashes"][0]["content"] for c in bom["components"] if c["type"] == "data"}
    inside = {n for n in listing["carchive"] if n.startswith("symbols/")}
    assert set(symbols) == inside
    for n in inside:
        assert symbols[n] == sha256(REPO / "build" / n), n
    kinds = {c["name"] for c in bom["components"]}
    assert {"cpython", "pyinstaller-bootloader"} <= kinds


def test_portable_sbom_adds_staticx_and_the_c_runtime():
    plain = sbom_of(DIST / "triagent")
    portable = sbom_of(DIST / "triagent-portable", onefile=DIST / "triagent", kind="portable")
    refs = {c["bom-ref"] for c in portable["components"]}
    assert {c["bom-ref"] for c in plain["components"]} <= refs
    names = {c["name"] for c in portable["components"]} - {c["name"] for c in plain["components"]}
    assert {"staticx-launcher", "libc6"} <= names and names & {"musl", "musl-dev"}, names


def test_sbom_names_the_runtime_it_was_built_with():
    bom = sbom_of(DIST / "triagent")
    cpython = next(c for c in bom["components"] if c["name"] == "cpython")
    py = BUILD_VENV / "bin" / "python"
    need(py.exists(), f"{py} is missing")
    version = subprocess.run([str(py), "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert cpython["version"] == version


@pytest.mark.parametrize("name", ["triagent", "triagent-portable", "triagent-responder"])
def test_sbom_is_reproducible(name):
    """No random serial number, no clock time, no build path (build/reproduce.sh compares two builds' bytes):
    serialNumber is the UUID that build/sbom.py derives from the content, the timestamp is SOURCE_DATE_EPOCH's
    (build.sh: the commit's time), and neither the checkout's nor the venv's path appears."""
    path = DIST / f"{name}.cdx.json"
    need(path.exists(), f"{path.relative_to(REPO)} is missing (bash build/build.sh writes it)")
    text = path.read_text()
    bom = json.loads(text)
    body = {k: v for k, v in bom.items() if k != "serialNumber"}
    digest = hashlib.sha256(json.dumps(body, indent=1, sort_keys=True).encode()).hexdigest()
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "triagent:build/sbom.py")
    assert bom["serialNumber"] == f"urn:uuid:{uuid.uuid5(namespace, digest)}"
    stamp = bom["metadata"]["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp
    if (REPO / ".git").exists() and shutil.which("git"):  # some commit's time, not the clock's
        epoch = int(datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp())
        times = subprocess.run(["git", "-C", str(REPO), "log", "--format=%ct"], capture_output=True, text=True,
                               timeout=60).stdout.split()
        assert str(epoch) in times, f"{stamp} is no commit's time"
    for build_path in (str(REPO), str(BUILD_VENV), "file:"):
        assert build_path not in text, f"{path.name} names {build_path}"


@pytest.mark.parametrize("name", ["triagent", "triagent-responder"])
def test_binary_carries_no_install_records(name):
    """pip's records of the build venv's installation (RECORD hashes the venv's console scripts, whose #! names
    the venv) stay out of the binary (build/triagent.spec): they made two builds differ; METADATA stays."""
    binary = DIST / name
    need(binary.exists(), f"{binary.relative_to(REPO)} is missing (bash build/build.sh builds it)")
    names = contents(binary)["carchive"]
    records = sorted(n for n in names if re.search(r"\.dist-info/(RECORD|INSTALLER|REQUESTED|direct_url\.json)$", n))
    assert not records, records
    assert any(n.endswith(".dist-info/METADATA") for n in names)
