"""The hash-pinned locks (build/requirements-*.lock, written by build/lock.sh with uv from setup.cfg) agree
with setup.cfg: every requirement that applies to a lock is satisfied by its pinned version (with the
extras it names), every pin carries a hash, no pre-release slips in unless allow-listed below, and the
binaries' locks carry nothing of the responder-side or test-only extras."""

from __future__ import annotations

import configparser
import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"

# lock file -> (setup.cfg extras it holds besides install_requires, platform_machine it was resolved for)
LOCKS: dict[str, tuple[tuple[str, ...], str]] = {
    "requirements-x86_64.lock": (("analysis", "build"), "x86_64"),
    "requirements-aarch64.lock": (("analysis", "build"), "aarch64"),
    "requirements-dev.lock": (("test", "ticket", "analysis", "push", "fleet"), "x86_64"),
}
# A pre-release may be pinned only deliberately: canonical name -> (exact version, why). Empty today.
PRERELEASE_ALLOWED: dict[str, tuple[str, str]] = {}

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;\\]+)")


def parse_lock(text: str) -> tuple[dict[str, tuple[str, list[str]]], list[str]]:
    """{canonical name: (version, hashes)} and the problems of its form (unpinned or repeated lines)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    problems: list[str] = []
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            problems.append(f"option line in a lock: {line!r}")
            continue
        m = _PIN.match(line)
        if not m:
            problems.append(f"not an exact pin: {line!r}")
            continue
        name = canonicalize_name(m["name"])
        hashes = re.findall(r"--hash=(\w+:[0-9a-f]+)", line)
        if name in entries:
            problems.append(f"{name} pinned twice")
        entries[name] = (m["version"], hashes)
    return entries, problems


def setup_requirements(setup_cfg: str) -> dict[str, list[Requirement]]:
    """install_requires ("") and each extra of setup.cfg, as parsed requirements."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(setup_cfg)

    def reqs(value: str) -> list[Requirement]:
        return [Requirement(ln.strip()) for ln in value.splitlines() if ln.strip() and not ln.strip().startswith("#")]

    groups = {"": reqs(cfg.get("options", "install_requires", fallback=""))}
    if cfg.has_section("options.extras_require"):
        for extra, value in cfg.items("options.extras_require"):
            groups[extra] = reqs(value)
    return groups


def _environment(machine: str) -> dict[str, str]:
    # CPython 3.11 on glibc Linux: what every lock is resolved for (build/lock.sh)
    return {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": machine, "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def _applies(req: Requirement, env: dict[str, str]) -> bool:
    return req.marker is None or req.marker.evaluate(env)


def _extra_requirements(name: str, version: str, extras: set[str], env: dict[str, str]) -> list[Requirement] | None:
    """What ``name[extras]`` adds, from the installed metadata when the installed version is the locked one
    (tests/run.sh installs .venv from the dev lock); None when it cannot be known here."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if canonicalize_name(dist.metadata["Name"]) != name or dist.version != version:
        return None
    out = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker and any(req.marker.evaluate({**env, "extra": e}) for e in extras) \
                and not req.marker.evaluate(env):
            out.append(req)
    return out


def check_lock(setup_cfg: str, lock_text: str, extras: tuple[str, ...], machine: str,
               allowed_prereleases: dict[str, tuple[str, str]] = PRERELEASE_ALLOWED) -> list[str]:
    """Every disagreement between setup.cfg and one lock, as readable lines (empty: they agree)."""
    entries, problems = parse_lock(lock_text)
    groups = setup_requirements(setup_cfg)
    env = _environment(machine)
    for missing in sorted(set(extras) - set(groups)):
        problems.append(f"setup.cfg has no extra {missing!r}")
    wanted = [r for g in ("", *extras) for r in groups.get(g, [])]

    def satisfied(req: Requirement, why: str) -> None:
        name = canonicalize_name(req.name)
        if name not in entries:
            problems.append(f"{req} ({why}) is not in the lock")
            return
        version = entries[name][0]
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req} ({why}) but the lock pins {name}=={version}")

    for req in wanted:
        if not _applies(req, env):
            continue
        satisfied(req, "setup.cfg")
        name = canonicalize_name(req.name)
        if req.extras and name in entries:
            for sub in _extra_requirements(name, entries[name][0], set(req.extras), env) or []:
                satisfied(sub, f"{req.name}[{','.join(sorted(req.extras))}]")
    for name, (version, hashes) in sorted(entries.items()):
        if not hashes:
            problems.append(f"{name}=={version} has no --hash")
        try:
            parsed = Version(version)
        except InvalidVersion:
            problems.append(f"{name}=={version} is not a valid version")
            continue
        if (parsed.is_prerelease or parsed.is_devrelease) and allowed_prereleases.get(name, ("",))[0] != version:
            problems.append(f"{name}=={version} is a pre-release (not in PRERELEASE_ALLOWED)")
    # A binary's lock must not carry what only the other extras want (the collector lands on suspect hosts).
    included = {canonicalize_name(r.name) for r in wanted}
    for extra, reqs in groups.items():
        if extra in extras or extra == "":
            continue
        for req in reqs:
            name = canonicalize_name(req.name)
            if name not in included and name in entries and "build" in extras:
                problems.append(f"{name} (only the {extra!r} extra wants it) is in a binary's lock")
    return problems


def _lock_header_extras(lock_text: str) -> tuple[set[str], str | None]:
    cmd = next((ln for ln in lock_text.splitlines() if "uv pip compile" in ln or "pip-compile" in ln), "")
    platform = re.search(r"--python-platform (\S+)", cmd)
    return set(re.findall(r"--extra[ =](\S+)", cmd)), platform[1] if platform else None


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_agrees_with_setup_cfg(lock):
    extras, machine = LOCKS[lock]
    path = BUILD / lock
    assert path.is_file(), f"{path} is missing: bash build/lock.sh writes it"
    text = path.read_text()
    problems = check_lock((REPO / "setup.cfg").read_text(), text, extras, machine)
    assert not problems, f"{lock} disagrees with setup.cfg (regenerate: bash build/lock.sh):\n" + "\n".join(problems)
    header_extras, platform = _lock_header_extras(text)
    assert "--generate-hashes" in text.split("\n\n", 1)[0] or "--generate-hashes" in text[:2000]
    assert header_extras == set(extras), f"{lock} was generated with extras {header_extras}, expected {extras}"
    assert platform and platform.startswith(machine), f"{lock} was generated for {platform}, expected {machine}"


def test_locks_are_what_build_and_ci_install():
    """build.sh and tests/run.sh install from the locks with --require-hashes: no list of their own."""
    build = (BUILD / "build.sh").read_text()
    run = (REPO / "tests" / "run.sh").read_text()
    assert "--require-hashes" in build and "requirements-$ARCH.lock" in build
    assert not re.search(r"^\s*(PACKAGES|ANALYSIS_PACKAGES)=\(", build, re.M), "build.sh pins packages by hand again"
    assert "--require-hashes" in run and "build/requirements-dev.lock" in run


# --- the check can fail: planted mismatches ------------------------------------------------------------

SETUP = """
[options]
install_requires =
    psutil==7.2.2
    requests>=2.32.4
    backports.zstd==1.8.0; python_version < "3.14"
    tomli>=2; python_version < "3.11"

[options.extras_require]
test =
    pytest>=8
build =
    pyinstaller==6.22.3
"""
H = " \\\n    --hash=sha256:" + "0" * 64
LOCK = "".join(f"{p}{H}\n" for p in ("psutil==7.2.2", "requests==2.32.5", "backports-zstd==1.8.0",
                                      "pyinstaller==6.22.3", "idna==3.10"))


def test_planted_lock_agrees():
    assert check_lock(SETUP, LOCK, ("build",), "x86_64") == []


@pytest.mark.parametrize("lock, expect", [
    (LOCK.replace("psutil==7.2.2", "psutil==7.2.1"), "psutil==7.2.2 (setup.cfg) but the lock pins psutil==7.2.1"),
    (LOCK.replace("requests==2.32.5", "requests==2.31.0"), "requests>=2.32.4 (setup.cfg) but the lock pins"),
    (LOCK.replace(f"backports-zstd==1.8.0{H}\n", ""), "backports.zstd==1.8.0"),
    (LOCK.replace(f"idna==3.10{H}", "idna==3.10"), "idna==3.10 has no --hash"),
    (LOCK.replace("idna==3.10", "idna==3.11.dev10"), "idna==3.11.dev10 is a pre-release"),
    (LOCK.replace("idna==3.10", "idna>=3.10"), "not an exact pin"),
    (LOCK + f"pytest==8.4.0{H}\n", "pytest (only the 'test' extra wants it) is in a binary's lock"),
])
def test_planted_mismatch_fails(lock, expect):
    problems = check_lock(SETUP, lock, ("build",), "x86_64")
    assert any(expect in p for p in problems), problems


def test_planted_setup_cfg_change_fails():
    """A requirement added to setup.cfg but not re-locked is caught."""
    problems = check_lock(SETUP.replace("    pytest>=8\n", "    pytest>=8\n").replace(
        "    psutil==7.2.2\n", "    psutil==7.2.2\n    cramjam==2.14.0\n"), LOCK, ("build",), "x86_64")
    assert problems == ["cramjam==2.14.0 (setup.cfg) is not in the lock"]


def test_allowed_prerelease_passes_only_at_its_version():
    lock = LOCK.replace("idna==3.10", "idna==3.11.dev10")
    assert check_lock(SETUP, lock, ("build",), "x86_64", {"idna": ("3.11.dev10", "test")}) == []
    assert check_lock(SETUP, lock, ("build",), "x86_64", {"idna": ("3.11.dev9", "test")})


def test_marker_for_another_python_is_not_required():
    # tomli applies below 3.11 only: the 3.11 lock need not hold it
    assert "tomli" not in LOCK and check_lock(SETUP, LOCK, ("build",), "x86_64") == []
    assert Marker('python_version < "3.11"').evaluate(_environment("x86_64")) is False
