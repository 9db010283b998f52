"""Write the CycloneDX SBOM of one frozen binary: exactly what PyInstaller put inside it.

Run by build/build.sh with the build venv's interpreter, after PyInstaller (and staticx):

    python build/sbom.py --binary dist/triagent --workpath build/work/pyi/triagent \
        --lock build/requirements-x86_64.lock --bootloader-patch build/bootloader-tmpdir-fallback.patch \
        --bootloader-patch build/bootloader-parallel-extract.patch \
        [--portable dist/triagent-portable --staticx-patch build/staticx-tmpdir.patch \
         --staticx-patch build/staticx-reproducible.patch]

What is inside comes from PyInstaller's own tables of contents (EXE-NN.toc: the archive's entries with the
file each was taken from; PYZ-NN.toc: the pure-Python modules), not from what the venv happens to hold.
Every entry is attributed to one component, or the script fails (an SBOM that misses a piece is worse
than none):
- a Python distribution of the build venv (its RECORD lists the file): the component cyclonedx-bom
  (`cyclonedx-py environment`) writes for it, plus the lock's hashes of its release files and the import
  names the binary carries (property triagent:modules, which tests/build/test_sbom.py checks);
- the Python runtime (Debian's libpython and standard library: the deb packages, with versions);
- other shared libraries, by the Debian package that owns them (dpkg's database);
- PyInstaller's bootloader (patched: the patch's SHA-256) and its loader modules;
- the bundled symbol tables (build/symbols/**), each with its SHA-256;
- triagent's own sources (the metadata component, with the binary's SHA-256).
For the portable form, also staticx's launcher (patched; musl, statically linked) and the C runtime
libraries staticx copies in (ldd of the onefile on this build machine, by Debian package).
Output is reproducible: sorted; the timestamp is SOURCE_DATE_EPOCH (build.sh: the commit's time), none when it
is unset; the serial number is derived from the content (serial_number()), never random.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
# What build.sh's second PyInstaller pass adds to each binary (triagent.spec): the SHA-256 of the SBOMs
# that describe it, {"onefile": {"name": "triagent.cdx.json", "sha256": ...}, "portable": {...}}, read at
# run time from sys._MEIPASS/triagent-sbom.json (the portable entry when STATICX_PROG_PATH is set).
EMBEDDED = "triagent-sbom.json"
ROOT = HERE.parent


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_toc(path: Path):
    return ast.literal_eval(path.read_text())


def binary_entries(workpath: Path, binary: Path) -> list[tuple[str, str, str]]:
    """(name in the archive, source file, type) of every entry of ``binary``, PYZ modules included."""
    for exe_toc in sorted(workpath.glob("EXE-*.toc")):
        toc = read_toc(exe_toc)
        if os.path.realpath(toc[0]) != os.path.realpath(binary):
            continue
        entries = [tuple(e) for e in next(x for x in toc if isinstance(x, list))]
        out = []
        for name, src, kind in entries:
            if kind == "PYZ":
                pyz_toc = read_toc(workpath / (Path(src).stem + ".toc"))
                out += [tuple(e) for e in pyz_toc[1]]
            elif kind != "OPTION":
                out.append((name, src, kind))
        return out
    raise SystemExit(f"sbom: no EXE-*.toc in {workpath} produced {binary}")


class Debian:
    """Which installed deb owns a file, and its version (dpkg's database, read, not executed)."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        info = Path("/var/lib/dpkg/info")
        for lst in info.glob("*.list"):
            pkg = lst.name[:-5]
            for line in lst.read_text(errors="replace").splitlines():
                self.owner.setdefault(line, pkg)
        self.version: dict[str, str] = {}
        self.arch: dict[str, str] = {}
        for para in Path("/var/lib/dpkg/status").read_text(errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^(Package|Version|Architecture|Status): (.*)$", para, re.M))
            if "installed" in fields.get("Status", "").split()[-1:] and "Package" in fields:
                arch = fields.get("Architecture", "")
                for key in (fields["Package"], f"{fields['Package']}:{arch}"):
                    self.version[key] = fields.get("Version", "")
                    self.arch[key] = arch

    def package_of(self, path: str) -> str | None:
        candidates = {path, os.path.realpath(path)}
        for p in list(candidates):  # merged /usr: dpkg may list either spelling
            if p.startswith("/usr/"):
                candidates.add(p[4:])
            else:
                candidates.add("/usr" + p)
        for p in sorted(candidates):
            if p in self.owner:
                return self.owner[p]
        return None

    def component(self, pkg: str, files: list[tuple[str, str]]) -> dict:
        name = pkg.split(":")[0]
        version, arch = self.version.get(pkg, ""), self.arch.get(pkg, "")
        return {
            "type": "library", "bom-ref": f"deb:{name}@{version}", "name": name, "version": version,
            "purl": f"pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-{_debian_release()}",
            "properties": _file_properties(files),
        }


def _debian_release() -> str:
    try:
        return Path("/etc/debian_version").read_text().strip().split(".")[0]
    except OSError:
        return "unknown"


def _file_properties(files: list[tuple[str, str]]) -> list[dict]:
    # name in the binary and the SHA-256 of the file it was taken from
    return [{"name": "triagent:file", "value": f"{name} sha256:{digest}"} for name, digest in sorted(set(files))]


def module_name(name: str, kind: str) -> str:
    """The import name of an archive entry: a PYZ/PYMODULE name as is, an extension's path without its
    suffix (psutil/_psutil_linux.abi3.so -> psutil._psutil_linux); "" for anything else."""
    if kind == "PYMODULE":
        return name
    if kind == "EXTENSION":
        parts = name.split("/")
        return ".".join(parts[:-1] + [parts[-1].split(".")[0]])
    return ""


def module_roots(modules: set[str]) -> list[str]:
    """The fewest names whose dotted prefixes cover ``modules`` (dissect.util, not the shared dissect)."""
    return sorted(m for m in modules if not any(m.startswith(p + ".") for p in modules if p != m))


def python_distributions(site: Path) -> dict[str, importlib.metadata.Distribution]:
    """Every installed file of the venv -> its distribution (from RECORD)."""
    owner = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        for f in dist.files or []:
            owner[os.path.normpath(str(site / f))] = dist
    return owner


def lock_hashes(lock: Path) -> dict[str, tuple[str, list[str]]]:
    text = re.sub(r"\\\n", " ", lock.read_text())
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if m:
            out[_canon(m[1])] = (m[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return out


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def cyclonedx_environment() -> dict:
    """cyclonedx-bom's view of this venv (licenses, purls, the dependency graph)."""
    proc = subprocess.run([sys.executable, "-m", "cyclonedx_py", "environment", "--of", "JSON",
                           "--output-reproducible", "-o", "-", sys.executable],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def build(binary: Path, workpath: Path, lock: Path, bootloader_patches: list[Path]) -> dict:
    site = Path(sysconfig.get_paths()["purelib"])
    platlib = Path(sysconfig.get_paths()["platlib"])
    owners = python_distributions(site)
    if platlib != site:
        owners.update(python_distributions(platlib))
    deb = Debian()
    locked = lock_hashes(lock)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    import PyInstaller

    pyi_dir = Path(PyInstaller.__file__).parent
    symbols = HERE / "symbols"
    work = workpath.resolve()
    digests: dict[str, str] = {}

    def digest(src: str) -> str:
        if src not in digests:
            digests[src] = sha256(Path(src))
        return digests[src]

    py_files: dict[str, list[tuple[str, str]]] = {}
    py_modules: dict[str, set[str]] = {}
    deb_files: dict[str, list[tuple[str, str]]] = {}
    runtime_files: list[tuple[str, str]] = []
    symbol_files: list[tuple[str, str, str]] = []
    own_files = 0
    unknown = []
    for name, src, kind in binary_entries(workpath, binary):
        if src in ("", "-"):
            continue  # a namespace package: no file, nothing carried
        if name == EMBEDDED:
            continue  # the SBOM's own SHA-256 (second pass): it cannot describe itself
        real = os.path.normpath(os.path.realpath(src))
        if real not in owners and os.path.normpath(src) not in owners and Path(real).is_relative_to(site):
            # a file written into an installed package after pip (build.sh: dissect.target's plugin index):
            # the distribution owning its package's __init__.py
            init = os.path.join(os.path.dirname(real), "__init__.py")
            if init in owners:
                owners[real] = owners[init]
        module = module_name(name, kind)
        if src and Path(real).is_relative_to(symbols):
            symbol_files.append((name, real, digest(real)))
        elif src and (Path(real).is_relative_to(ROOT / "agent") or Path(real).is_relative_to(ROOT / "collectors")
                      or Path(real).is_relative_to(ROOT / "specs") or Path(real).parent == HERE):
            own_files += 1  # triagent itself (the entry script and runtime hook live in build/)
        elif src and Path(real).is_relative_to(work):
            # PyInstaller's own compiled loader modules (localpycs) and base_library.zip (the stdlib)
            if Path(real).name == "base_library.zip":
                runtime_files.append((name, digest(real)))
            else:
                py_files.setdefault("pyinstaller", []).append((name, digest(real)))
                if module:
                    py_modules.setdefault("pyinstaller", set()).add(module)
        elif os.path.normpath(src) in owners or real in owners:
            dist = owners.get(os.path.normpath(src)) or owners[real]
            key = _canon(dist.metadata["Name"])
            py_files.setdefault(key, []).append((name, digest(real)))
            if module:
                py_modules.setdefault(key, set()).add(module)
        elif Path(real).is_relative_to(stdlib) or Path(src).is_relative_to(stdlib) or "libpython" in Path(real).name:
            runtime_files.append((name, digest(real)))
            pkg = deb.package_of(src)
            if pkg:
                deb_files.setdefault(pkg, [])  # the deb that ships it: named below as part of the runtime
        elif (pkg := deb.package_of(src)) is not None:
            deb_files.setdefault(pkg, []).append((name, digest(real)))
        else:
            unknown.append(f"{name} <- {src} ({kind})")
    if unknown:
        listed = "\n  ".join(unknown)
        raise SystemExit(f"sbom: entries of {binary} with no known origin:\n  {listed}")

    env = cyclonedx_environment()
    by_name = {_canon(c["name"]): c for c in env.get("components", [])}
    components = []
    kept_refs = set()
    for key in sorted(py_files):
        comp = dict(by_name.get(key) or {"type": "library", "name": key, "bom-ref": key})
        # cyclonedx-py names the local folder pip installed a package from (PEP 610 direct_url.json): here
        # build.sh's patched PyInstaller sdist under build/work, a build path that differs in every checkout
        # and tells a reader nothing (the lock's hashes of the sdist follow). Left out: the SBOM is reproducible.
        refs = [r for r in comp.get("externalReferences", []) if not r.get("url", "").startswith("file:")]
        comp.pop("externalReferences", None)
        if refs:
            comp["externalReferences"] = refs
        version, hashes = locked.get(key, (comp.get("version", ""), []))
        if comp.get("version") and comp["version"] != version:
            raise SystemExit(f"sbom: {key} {comp['version']} is installed, the lock pins {version}")
        comp.setdefault("version", version)
        comp.setdefault("purl", f"pkg:pypi/{key}@{version}")
        if hashes:  # as cyclonedx-py's `requirements` mode writes a hashed requirement
            comp["externalReferences"] = comp.get("externalReferences", []) + [{
                "type": "distribution", "url": f"https://pypi.org/simple/{key}/", "comment": f"locked in {lock.name}",
                "hashes": [{"alg": "SHA-256", "content": h} for h in hashes]}]
        roots = module_roots(py_modules.get(key, set()))
        props = [{"name": "triagent:modules", "value": " ".join(roots)}] if roots else []
        if key == "pyinstaller":
            props.append({"name": "triagent:note", "value": "PyInstaller's loader modules; the bootloader is "
                          "the component pyinstaller-bootloader"})
        comp["properties"] = comp.get("properties", []) + props + [
            {"name": "triagent:files", "value": str(len(py_files[key]))}]
        kept_refs.add(comp["bom-ref"])
        components.append(comp)

    pyver = platform.python_version()
    libpy = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
    runtime_debs = sorted({deb.package_of(str(libpy)) or "", deb.package_of(str(stdlib / "os.py")) or ""} - {""})
    components.append({
        "type": "platform", "bom-ref": f"cpython@{pyver}", "name": "cpython", "version": pyver,
        "description": f"the Python runtime: {sys.version.splitlines()[0]}; from Debian "
                       + ", ".join(f"{p.split(':')[0]} {deb.version.get(p, '')}" for p in runtime_debs),
        "purl": f"pkg:generic/cpython@{pyver}",
        "hashes": [{"alg": "SHA-256", "content": sha256(libpy)}],
        "properties": [{"name": "triagent:deb", "value": f"{p.split(':')[0]}={deb.version.get(p, '')}"}
                       for p in runtime_debs] + [{"name": "triagent:files", "value": str(len(runtime_files))}],
    })
    for pkg in sorted(deb_files):
        if deb_files[pkg]:
            components.append(deb.component(pkg, deb_files[pkg]))

    boot = pyi_dir / "bootloader" / PyInstaller.PLATFORM / "run"
    components.append({
        "type": "application", "bom-ref": f"pyinstaller-bootloader@{PyInstaller.__version__}",
        "name": "pyinstaller-bootloader", "version": PyInstaller.__version__,
        "description": "PyInstaller's onefile bootloader, compiled from its sdist with "
                       f"{' and '.join(p.name for p in bootloader_patches)} (runtime_tmpdir fallback, "
                       "extraction in two processes)",
        "purl": f"pkg:pypi/pyinstaller@{PyInstaller.__version__}",
        "hashes": [{"alg": "SHA-256", "content": sha256(boot)}],
        "pedigree": {"patches": [{"type": "unofficial", "diff": {"url": f"build/{p.name}"}, "resolves": []}
                                 for p in bootloader_patches],
                     "notes": "; ".join(f"{p.name} sha256:{sha256(p)}" for p in bootloader_patches)},
    })
    for name, _real, dig in sorted(symbol_files):
        components.append({
            "type": "data", "bom-ref": f"symbols:{name}", "name": name, "version": dig[:16],
            "description": "a bundled volatility3 symbol table (build/symbols)",
            "hashes": [{"alg": "SHA-256", "content": dig}],
        })

    deps = [d for d in env.get("dependencies", []) if d["ref"] in kept_refs]
    for d in deps:
        d["dependsOn"] = sorted(r for r in d.get("dependsOn", []) if r in kept_refs)
    import agent

    bom = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
        "metadata": {
            "tools": env.get("metadata", {}).get("tools", {}),
            "component": {
                "type": "application", "bom-ref": f"triagent@{agent.__version__}", "name": binary.name,
                "version": agent.__version__,
                "properties": [{"name": "triagent:own-files", "value": str(own_files)},
                               {"name": "triagent:lock", "value": f"{lock.name} sha256:{sha256(lock)}"},
                               {"name": "triagent:platform", "value": f"{platform.system()} {platform.machine()}"}],
            },
        },
        "components": sorted(components, key=lambda c: c["bom-ref"]),
        "dependencies": sorted(deps, key=lambda d: d["ref"]),
    }
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        import datetime

        bom["metadata"]["timestamp"] = datetime.datetime.fromtimestamp(
            int(epoch), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return bom


def portable(bom: dict, binary: Path, onefile: Path, staticx_patches: list[Path]) -> dict:
    """The onefile's SBOM plus what staticx wraps around it."""
    import staticx

    sx_version = importlib.metadata.version("staticx")
    deb = Debian()
    bom = json.loads(json.dumps(bom))
    boot = Path(staticx.__file__).parent / "assets" / "release" / "bootloader"
    musl = "musl-dev" if "musl-dev" in deb.version else "musl"
    comps = bom["components"]
    comps.append({
        "type": "application", "bom-ref": f"staticx-launcher@{sx_version}", "name": "staticx-launcher",
        "version": sx_version, "purl": f"pkg:pypi/staticx@{sx_version}",
        "description": f"staticx's launcher, built from its sdist with "
                       f"{' and '.join(p.name for p in staticx_patches)}, statically linked "
                       f"with musl {deb.version.get(musl, '?')} (musl-gcc)",
        "hashes": [{"alg": "SHA-256", "content": sha256(boot)}],
        "pedigree": {"notes": "; ".join(f"{p.name} sha256:{sha256(p)}" for p in staticx_patches)},
    })
    comps.append(deb.component(musl, []) | {"description": "the C library statically linked into staticx's launcher"})
    # The C runtime staticx copies beside the onefile: its ELF dependencies, resolved here by ldd (this
    # build machine's loader on our own freshly built file, as staticx itself does).
    out = subprocess.run(["ldd", str(onefile)], capture_output=True, text=True, check=True).stdout
    libs: dict[str, list[tuple[str, str]]] = {}
    for path in re.findall(r"(/\S+) \(0x", out):
        pkg = deb.package_of(path)
        if not pkg:
            raise SystemExit(f"sbom: {path} (staticx bundles it) belongs to no Debian package")
        libs.setdefault(pkg, []).append((Path(path).name, sha256(Path(os.path.realpath(path)))))
    existing = {c["bom-ref"]: c for c in comps}
    for pkg, files in libs.items():
        comp = deb.component(pkg, files)
        if comp["bom-ref"] in existing:
            existing[comp["bom-ref"]]["properties"] += comp["properties"]
        else:
            comps.append(comp)
    bom["components"] = sorted(comps, key=lambda c: c["bom-ref"])
    meta = bom["metadata"]["component"]
    meta["name"] = binary.name
    return bom


# The namespace of serial_number()'s name-based UUIDs: a fixed one, named after this script.
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "triagent:build/sbom.py")


def serial_number(bom: dict) -> str:
    """The BOM's serialNumber: a name-based UUID (RFC 4122 version 5) of the SHA-256 of the BOM's own JSON
    without it. CycloneDX wants a unique URN per BOM; a random one (cyclonedx-bom's default) would make two
    builds of the same commit differ, and a content-derived one is as unique as the content (its timestamp,
    SOURCE_DATE_EPOCH, included). Anyone can recompute it: tests/build/test_sbom.py does."""
    body = {k: v for k, v in bom.items() if k != "serialNumber"}
    digest = hashlib.sha256(json.dumps(body, indent=1, sort_keys=True).encode()).hexdigest()
    return f"urn:uuid:{uuid.uuid5(SERIAL_NAMESPACE, digest)}"


def render(bom: dict, out: Path) -> str:
    """``bom`` as JSON text, once it validates against CycloneDX 1.6's schema (cyclonedx-python-lib)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    bom = dict(bom, serialNumber=serial_number(bom))
    text = json.dumps(bom, indent=1, sort_keys=True) + "\n"
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise SystemExit(f"sbom: {out.name} does not validate as CycloneDX 1.6: {error!r}"[:4000])
    return text


def main() -> None:
    """Write NAME.cdx.json (and the portable one) beside the binary and, with --embed, the JSON that the
    second pass puts inside the binary; with --verify, check the SBOMs already written instead: the
    binary, rebuilt with that JSON, must give the very same SBOM bytes."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", type=Path, required=True)
    ap.add_argument("--workpath", type=Path, required=True)
    ap.add_argument("--lock", type=Path, required=True)
    ap.add_argument("--bootloader-patch", type=Path, action="append", required=True)
    ap.add_argument("--portable", type=Path)
    ap.add_argument("--staticx-patch", type=Path, action="append", default=[],
                    help="a patch staticx was built with (repeat for each)")
    ap.add_argument("--embed", type=Path, help=f"write the {EMBEDDED} for this binary here")
    ap.add_argument("--verify", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))  # agent.__version__, from the sources frozen
    boms = {"onefile": (build(args.binary, args.workpath, args.lock, args.bootloader_patch), args.binary)}
    if args.portable:
        boms["portable"] = (portable(boms["onefile"][0], args.portable, args.binary, args.staticx_patch),
                            args.portable)
    embedded = {}
    for kind, (bom, binary) in boms.items():
        out = binary.with_name(binary.name + ".cdx.json")
        text = render(bom, out)
        if args.verify:
            if not out.exists() or out.read_text() != text:
                raise SystemExit(f"sbom: {binary} (second pass) no longer matches {out}: its contents changed")
        else:
            out.write_text(text)
        embedded[kind] = {"name": out.name, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    if args.embed:
        args.embed.parent.mkdir(parents=True, exist_ok=True)
        args.embed.write_text(json.dumps(embedded, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
