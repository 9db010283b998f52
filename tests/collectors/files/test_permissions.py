"""The permissions artifact (collectors/files/permissions.py) and its rules (specs/rules/permissions.yaml), with the
real tools on a real filesystem: setcap (libcap2-bin) writes real security.capability attributes, chattr
(e2fsprogs) real immutable / append-only flags on ext4, chmod real SUID bits. Each rule fires on a root with the
behaviour and stays silent on its benign look-alike; this machine's own /usr raises nothing high, and what we
read agrees with getcap and find."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import need, run_triagent, summary_of

from agent.analysis import rules as engine
from agent.engine import plan
from collectors.base import Context, Problem, Record
from collectors.files import permissions

NOW = 1_800_000_000.0
RULES = [r for r in engine.load_rules() if r.id.startswith("TRI-PERM-")]
TRUE = shutil.which("true") or "/bin/true"


def _tools() -> None:
    need(os.geteuid() == 0, "setcap and chattr +i need root")
    for tool in ("setcap", "getcap", "chattr"):
        need(shutil.which(tool) is not None, f"{tool} is needed (apt-get install libcap2-bin e2fsprogs)")


def _flags_and_caps_work(folder: Path) -> bool:
    probe = folder / f"probe-{uuid.uuid4().hex}"
    shutil.copy(TRUE, probe)
    try:
        caps = subprocess.run(["setcap", "cap_net_raw+ep", str(probe)], capture_output=True).returncode == 0
        flags = subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
        subprocess.run(["chattr", "-i", str(probe)], capture_output=True)
        return caps and flags
    finally:
        probe.unlink()


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on a filesystem with security.* extended attributes and chattr flags: tmp_path when it is one
    (ext4, xfs, btrfs), else a loop-mounted ext4 image (tmpfs before Linux 6.0 has no chattr flags). Every flag
    set in it is cleared before it is removed (an immutable file cannot be deleted, even by root)."""
    _tools()
    where = tmp_path / "fs"
    where.mkdir()
    mounted = False
    if not _flags_and_caps_work(where):
        need(shutil.which("mkfs.ext4") is not None and shutil.which("mount") is not None,
             "mkfs.ext4 and mount for a loop-mounted ext4 image (apt-get install e2fsprogs mount)")
        image = tmp_path / "fs.img"
        with open(image, "wb") as fh:
            fh.truncate(64 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        mounted = subprocess.run(["mount", "-o", "loop", str(image), str(where)], capture_output=True).returncode == 0
        need(mounted and _flags_and_caps_work(where), "a loop-mounted ext4 image with capabilities and chattr flags")
    try:
        yield where
    finally:
        subprocess.run(["chattr", "-R", "-i", "-a", str(where)], capture_output=True)
        if mounted:  # lazily: the run's evidence root keeps a descriptor on the folder for the process's life
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _w(root: Path, path: str, body: bytes | str = b"x\n", mode: int = 0o644) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(body, str):
        body = body.encode()
    target.write_bytes(body)
    os.chmod(target, mode)
    return target


def _program(root: Path, path: str, mode: int = 0o755) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(TRUE, target)
    os.chmod(target, mode)
    return target


def _setcap(target: Path, caps: str) -> None:
    subprocess.run(["setcap", caps, str(target)], check=True, capture_output=True)


def _chattr(target: Path, flag: str) -> None:
    subprocess.run(["chattr", flag, str(target)], check=True, capture_output=True)


PACKAGED = ("/usr/bin/true", "/usr/bin/passwd", "/usr/bin/ping", "/usr/bin/python3", "/usr/bin/ls")


def _base(root: Path) -> Path:
    """A small Debian-like root: a dpkg database that owns a few programs (so "no package owns it" is known)."""
    for path in PACKAGED:
        _program(root, path)
    _w(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000::/home/ubuntu:/bin/bash\n")
    _w(root, "/var/lib/dpkg/status", "Package: coreutils\nStatus: install ok installed\nVersion: 9.1-1\n"
       "Architecture: amd64\n\nPackage: passwd\nStatus: install ok installed\nVersion: 1:4.13\n"
       "Architecture: amd64\n\nPackage: iputils-ping\nStatus: install ok installed\nVersion: 3:20221126\n"
       "Architecture: amd64\n\nPackage: python3-minimal\nStatus: install ok installed\nVersion: 3.11.2\n"
       "Architecture: amd64\n")
    _w(root, "/var/lib/dpkg/info/coreutils.list", "/.\n/usr\n/usr/bin\n/usr/bin/true\n/bin/ls\n")
    _w(root, "/var/lib/dpkg/info/passwd.list", "/.\n/usr/bin/passwd\n")
    _w(root, "/var/lib/dpkg/info/iputils-ping.list", "/.\n/bin/ping\n")
    _w(root, "/var/lib/dpkg/info/python3-minimal.list", "/.\n/usr/bin/python3\n")
    os.symlink("usr/bin", root / "bin")
    (root / "root").mkdir(mode=0o700, exist_ok=True)
    (root / "home/ubuntu").mkdir(parents=True, exist_ok=True)
    for drop in ("tmp", "var/tmp", "dev/shm"):
        (root / drop).mkdir(parents=True, exist_ok=True)
        os.chmod(root / drop, 0o1777)
    os.chmod(root / "usr/bin/passwd", 0o4755)
    return root


def _collect(root: Path, **options) -> tuple[list[dict], list[Problem]]:
    spec = plan.load_artifacts()["permissions"]
    ctx = Context(root=str(root), live=False, options={**spec.options, **options})
    records, problems = [], []
    for item in permissions.collect(ctx):
        if isinstance(item, Record):
            assert item.stream == "permissions"
            records.append(item.data)
        else:
            problems.append(item)
    return records, problems


def _findings(records: list[dict]) -> dict[str, list[dict]]:
    def rows(source: str):
        if source == "permissions":
            for number, record in enumerate(records, 1):
                yield "source", "artifacts/permissions.jsonl", number, record

    out: dict[str, list[dict]] = {}
    for finding in engine.evaluate(RULES, rows, NOW):
        out.setdefault(finding["rule"], []).append(finding)
    return out


def _serious(found: dict[str, list[dict]]) -> list[tuple[str, str]]:
    return [(f["rule"], f["summary"]) for hits in found.values() for f in hits if f["severity"] in ("high", "critical")]


Setup = Callable[[Path], None]


def _cap_outside(root: Path) -> None:
    _setcap(_program(root, "/opt/.cache/kworker"), "cap_setuid,cap_setgid+ep")


def _cap_unowned(root: Path) -> None:
    _setcap(_program(root, "/usr/sbin/nscd-helper"), "cap_dac_override+ep")


def _cap_benign(root: Path) -> None:
    _setcap(root / "usr/bin/ping", "cap_net_raw+ep")  # Debian's own ping
    _setcap(_program(root, "/usr/lib/x86_64-linux-gnu/gstreamer1.0/gstreamer-1.0/gst-ptp-helper"),
            "cap_net_bind_service,cap_net_admin+ep")


def _python_setuid_cap(root: Path) -> None:
    _setcap(root / "usr/bin/python3", "cap_setuid+ep")


def _find_suid(root: Path) -> None:
    os.chmod(_program(root, "/usr/bin/find"), 0o4755)


def _interpreters_benign(root: Path) -> None:
    _program(root, "/usr/bin/find")
    _program(root, "/usr/bin/bash")
    os.chmod(_program(root, "/usr/bin/crontab"), 0o2755)  # Debian's: set-group-ID crontab
    os.chmod(_program(root, "/usr/bin/su"), 0o4755)


def _immutable_keys(root: Path) -> None:
    keys = _w(root, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB attacker\n", 0o600)
    _chattr(keys, "+i")


def _append_preload(root: Path) -> None:
    _chattr(_w(root, "/etc/ld.so.preload", "/usr/lib/libnss_cache.so\n"), "+a")


def _immutable_home_cron_drop(root: Path) -> None:
    _chattr(_w(root, "/var/spool/cron/crontabs/ubuntu", "* * * * * /tmp/.x\n", 0o600), "+i")
    _chattr(_program(root, "/dev/shm/.x/kthreadd"), "+i")
    _chattr(_w(root, "/home/ubuntu/.ssh/authorized_keys", "ssh-rsa AAAAB3 x\n", 0o600), "+a")


def _flags_benign(root: Path) -> None:
    _chattr(_w(root, "/etc/resolv.conf", "nameserver 10.0.0.2\n"), "+i")  # an admin stopping DHCP rewriting it
    _chattr(_w(root, "/var/log/auth.log", ""), "+a")  # append-only logs: hardening
    _w(root, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB admin\n", 0o600)


def _immutable_ls(root: Path) -> None:
    _chattr(root / "usr/bin/ls", "+i")


def _world_writable(root: Path) -> None:
    _w(root, "/etc/profile.d/proxy.sh", "export http_proxy=http://10.0.0.1:3128\n", 0o666)


def _world_writable_dir(root: Path) -> None:
    (root / "usr/lib/python3/dist-packages").mkdir(parents=True)
    os.chmod(root / "usr/lib/python3/dist-packages", 0o777)


def _world_writable_benign(root: Path) -> None:
    (root / "usr/share/fonts/cache").mkdir(parents=True)
    os.chmod(root / "usr/share/fonts/cache", 0o1777)  # sticky: a shared folder, each keeps their own files
    _w(root, "/tmp/.X0-lock", "1234\n", 0o444)
    _w(root, "/var/tmp/shared.txt", "x\n", 0o666)  # a drop zone: world-writable is what it is for
    (root / "var/crash").mkdir(parents=True)
    os.chmod(root / "var/crash", 0o1777)
    os.symlink("/etc/passwd", root / "etc/mtab-link")  # a link's 0777 means nothing


def _suid_unowned(root: Path) -> None:
    os.chmod(_program(root, "/usr/local/sbin/dbus-helper"), 0o4755)


def _suid_drop(root: Path) -> None:
    os.chmod(_program(root, "/var/tmp/.font-unix/sh"), 0o4755)


def _suid_benign(root: Path) -> None:
    os.chmod(_program(root, "/usr/bin/passwd"), 0o4755)  # owned by the passwd package


CASES: dict[str, tuple[list[Setup], list[Setup]]] = {
    "TRI-PERM-001": ([_cap_outside, _cap_unowned], [_cap_benign]),
    "TRI-PERM-002": ([_python_setuid_cap, _find_suid], [_interpreters_benign]),
    "TRI-PERM-003": ([_immutable_keys, _append_preload, _immutable_home_cron_drop], [_flags_benign]),
    "TRI-PERM-004": ([_immutable_ls], [_flags_benign]),
    "TRI-PERM-005": ([_world_writable, _world_writable_dir], [_world_writable_benign]),
    "TRI-PERM-006": ([_suid_unowned], [_suid_benign]),
    "TRI-PERM-007": ([_suid_drop], [_world_writable_benign, _suid_benign]),
}


def test_every_permissions_rule_has_its_case():
    assert {r.id for r in RULES} == set(CASES)
    assert all(r.mitre and r.sources == ["permissions"] for r in RULES)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_on_the_behaviour_not_on_its_look_alike(fs, rule_id):
    planted, benign = CASES[rule_id]
    for number, setup in enumerate(planted):
        root = _base(fs / f"planted-{number}")
        setup(root)
        records, _ = _collect(root)
        found = _findings(records)
        assert rule_id in found, (setup.__name__, sorted(found), records)
        if found[rule_id][0]["severity"] in ("high", "critical"):  # this alone justifies a disk image
            flat = [f for hits in found.values() for f in hits]
            assert engine.verdict(flat, True, engine.load_verdict_policy())["recommendation"] == "yes"
    for number, setup in enumerate(benign):
        root = _base(fs / f"benign-{number}")
        setup(root)
        records, _ = _collect(root)
        found = _findings(records)
        assert rule_id not in found, found[rule_id]
        assert _serious(found) == [], _serious(found)


def test_records_carry_decoded_capabilities_flags_hashes_and_owners(fs):
    root = _base(fs / "root")
    _python_setuid_cap(root)
    _immutable_keys(root)
    _suid_unowned(root)
    _world_writable_benign(root)
    subprocess.run(["chattr", "+i", str(_w(root, "/etc/resolv.conf", "nameserver 10.0.0.2\n"))], check=True)
    subprocess.run(["chattr", "+a", str(_w(root, "/var/log/auth.log", ""))], check=True)
    records, problems = _collect(root)
    by_path = {r["path"]: r for r in records}
    # recorded, judged benign by the rules (the look-alikes above are silent because of the rules, not the reader)
    assert by_path["/etc/resolv.conf"]["kinds"] == ["immutable"]
    assert by_path["/var/log/auth.log"]["kinds"] == ["append_only"]
    assert "/var/tmp/shared.txt" not in by_path and "/usr/share/fonts/cache" not in by_path
    python = by_path["/usr/bin/python3"]
    assert python["kinds"] == ["capability"]
    assert python["capabilities"] == ["cap_setuid"]
    assert python["capability"]["version"] == 2 and python["capability"]["effective"] is True
    assert python["packages"] == ["python3-minimal"] and python["package_owned"] is True
    assert python["sha256"] == subprocess.run(["sha256sum", TRUE], capture_output=True, text=True).stdout.split()[0]
    keys = by_path["/root/.ssh/authorized_keys"]
    assert keys["immutable"] and keys["kinds"] == ["immutable"] and keys["zone"] == "persistence"
    assert keys["flags_via"] in ("statx", "ioctl") and keys["mtime_utc"].endswith("Z")
    helper = by_path["/usr/local/sbin/dbus-helper"]
    assert helper["setuid"] and helper["mode"] == "4755" and helper["package_owned"] is False
    passwd = by_path["/usr/bin/passwd"]  # packaged under /usr/bin, found through merged /usr
    assert passwd["packages"] == ["passwd"]
    assert "/usr/bin/ping" not in by_path and "/usr/bin/true" not in by_path  # nothing to say: no record
    summary = [p for p in problems if p.level == "info"][-1]
    assert summary.detail["counts"] == {"capability": 1, "immutable": 2, "append_only": 1, "setuid": 2}, summary


def test_ioctl_flags_agree_with_statx_attributes(fs):
    """Where statx does not report the immutable/append-only attributes (old kernels, some filesystems), the
    FS_IOC_GETFLAGS ioctl on an O_NOFOLLOW descriptor gives the same answer."""
    if os.uname().machine in ("x86_64", "aarch64"):
        assert permissions.FS_IOC_GETFLAGS == 0x80086601
    root = _base(fs / "root")
    _immutable_keys(root)
    _append_preload(root)
    _immutable_ls(root)
    by_statx, _ = _collect(root)
    by_ioctl, _ = _collect(root, use_statx=False)
    assert {r["flags_via"] for r in by_ioctl} == {"ioctl"}
    shape = sorted((r["path"], tuple(r["kinds"])) for r in by_statx)
    assert shape == sorted((r["path"], tuple(r["kinds"])) for r in by_ioctl)
    assert ("/etc/ld.so.preload", ("append_only",)) in shape and ("/usr/bin/ls", ("immutable",)) in shape


def test_capability_versions_as_setcap_writes_them(fs):
    target = _program(fs, "/v3")
    subprocess.run(["setcap", "-n", "1000", "cap_net_raw,cap_sys_admin+p", str(target)], check=True,
                   capture_output=True)
    v3 = permissions.decode_capability(os.getxattr(target, "security.capability"))
    assert v3["version"] == 3 and v3["rootid"] == 1000 and v3["effective"] is False
    assert v3["permitted"] == ["cap_net_raw", "cap_sys_admin"] and v3["inheritable"] == []
    _setcap(target, "cap_checkpoint_restore+ei")  # bit 40: the second 32-bit word
    v2 = permissions.decode_capability(os.getxattr(target, "security.capability"))
    assert v2["version"] == 2 and v2["inheritable"] == ["cap_checkpoint_restore"] and v2["permitted"] == []
    v1 = permissions.decode_capability((0x01000001).to_bytes(4, "little") + (1 << 7).to_bytes(4, "little")
                                       + bytes(4))  # what setcap wrote before Linux 2.6.25
    assert v1["version"] == 1 and v1["permitted"] == ["cap_setuid"] and v1["effective"] is True
    assert permissions.decode_capability(b"\x00\x00")["malformed"]
    assert permissions.decode_capability((0x02000000).to_bytes(4, "little") + b"\0" * 4)["malformed"]
    assert permissions.decode_capability((0x07000000).to_bytes(4, "little"))["malformed"]
    assert permissions.cap_names(1 << 50) == ["cap_50"]


def test_hostile_tree_is_not_followed_and_a_cut_walk_keeps_the_newest(fs):
    root = _base(fs / "root")
    # a link named like a persistence path to an immutable file outside the root: never followed
    outside = _w(fs, "/outside/secret", "s\n")
    _chattr(outside, "+i")
    (root / "home/ubuntu/.ssh").mkdir(parents=True)
    os.symlink(str(outside), root / "home/ubuntu/.ssh/authorized_keys")
    (root / "usr/lib").mkdir(parents=True, exist_ok=True)
    os.symlink(str(fs / "outside"), root / "usr/lib/outside")  # a folder link inside a walked folder
    os.mkfifo(root / "etc/initctl")  # a FIFO is never opened (the walk would block on a writer-less FIFO)
    os.chmod(root / "etc/initctl", 0o666)
    # a name that is not UTF-8: recorded with its bytes kept (surrogate escapes), judged like any other
    raw = os.fsencode(str(root / "var/tmp")) + b"/.\xff\xfesh"
    shutil.copy(TRUE, raw)
    os.chmod(raw, 0o4755)
    records, problems = _collect(root)
    odd = [r for r in records if r["path"].startswith("/var/tmp/.")]
    assert [os.fsencode(r["path"]) for r in odd] == [b"/var/tmp/.\xff\xfesh"], odd
    assert "TRI-PERM-007" in _findings(odd)
    assert not any("secret" in r["path"] or "outside" in r["path"] for r in records), records
    assert not any(r["path"] == "/etc/initctl" for r in records)
    # the budget: two folders of SUID files, the older one walked last, and cut
    for name, when in (("old", 1_600_000_000), ("new", 1_700_000_000)):
        for i in range(30):
            os.chmod(_program(root, f"/opt/{name}/{i}"), 0o4755)
        os.utime(root / "opt" / name, (when, when))
    records, problems = _collect(root, system_paths=["/opt"], persistence_paths=[], home_paths=[],
                                 drop_paths=[], max_entries=40)
    walked = [r["path"].split("/")[2] for r in records]
    assert walked.count("new") == 30 and walked.count("old") < 30, walked  # the newer folder first, whole
    assert any("cut: entry budget (40)" in p.message for p in problems), problems
    records, problems = _collect(root, system_paths=["/opt"], persistence_paths=[], home_paths=[],
                                 drop_paths=[], max_records=10)
    assert len(records) == 10 and any("older findings dropped" in p.message for p in problems)
    records, problems = _collect(root, time_budget_s=0)
    assert records == [] and any("cut: time budget reached" in p.message for p in problems), problems


def test_a_top_reached_again_through_a_link_is_recorded_once(fs):
    """Merged /usr: /lib64 -> usr/lib64 is a top of its own, walked already from /usr: one record, not two."""
    root = _base(fs / "root")
    (root / "usr/lib64").mkdir()
    os.chmod(root / "usr/lib64", 0o777)
    os.symlink("usr/lib64", root / "lib64")
    _chattr(_w(root, "/usr/lib64/ld-linux-x86-64.so.2"), "+i")
    records, _ = _collect(root)
    paths = [r["path"] for r in records]
    assert paths.count("/usr/lib64") == 1 and paths.count("/usr/lib64/ld-linux-x86-64.so.2") == 1, paths


def _getcap(folder: str) -> dict[str, str]:
    out = subprocess.run(["getcap", "-r", folder], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        path, _, caps = line.rpartition(" ")
        if path and caps and not line.startswith("Failed"):
            found[path.removesuffix(" =")] = caps
    return found


def test_this_machines_usr_raises_nothing_high_and_agrees_with_getcap_and_find():
    """The benign corpus: this machine's real /usr (Debian ships SUID helpers and a few capabilities: ping,
    gst-ptp-helper). Our walk finds exactly what getcap and find find, and no rule says high."""
    _tools()
    ctx = Context(root="/", live=True, options={
        **plan.load_artifacts()["permissions"].options, "system_paths": ["/usr"], "drop_paths": [],
        "persistence_paths": [], "home_paths": []})
    records = [i.data for i in permissions.collect(ctx) if isinstance(i, Record)]
    ours = {r["path"]: r for r in records}
    for path, caps in _getcap("/usr").items():
        real = os.path.realpath(path)
        assert real in ours, (path, caps)
        names = [c for c in caps.split("=")[0].split(",") if c]
        assert set(names) <= set(ours[real]["capabilities"]), (path, caps, ours[real]["capabilities"])
    found = subprocess.run(["find", "/usr", "-xdev", "-type", "f", "-perm", "/6000"], capture_output=True,
                           text=True).stdout.split()
    assert {p for p in found} == {p for p, r in ours.items() if r["setuid"] or r["setgid"]}
    found_ww = subprocess.run(["find", "/usr", "-xdev", "(", "-type", "f", "-o", "(", "-type", "d", "!", "-perm",
                               "-1000", ")", ")", "-perm", "-0002"], capture_output=True, text=True).stdout.split()
    assert set(found_ww) == {p for p, r in ours.items() if "world_writable" in r["kinds"]}
    assert _serious(_findings(records)) == []


@pytest.mark.parametrize("planted", [True, False])
def test_whole_run_planted_says_yes_and_benign_says_no(fs, planted):
    """triagent collect --root --artifacts permissions, then analyze: the bundle's stream feeds the rules."""
    root = _base(fs / "root")
    (_immutable_keys if planted else _flags_benign)(root)
    _cap_benign(root)
    bundle = summary_of(run_triagent(["collect", "--root", str(root), "--artifacts", "permissions",
                                      "--output", str(fs / "out")]))["bundle"]
    proc = run_triagent(["analyze", bundle, "--output", str(fs / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    with tarfile.open(summary["analysis"]) as tar:
        verdict = json.loads(tar.extractfile("triagent/verdict.json").read())
    with tarfile.open(bundle) as tar:
        member = tar.extractfile("triagent/artifacts/permissions.jsonl")
        rows = [json.loads(line) for line in member.read().splitlines()]
    assert {"/usr/bin/ping", "/usr/bin/passwd"} <= {r["path"] for r in rows}
    if planted:
        assert verdict["recommendation"] == "yes" and "TRI-PERM-003" in summary["why"], summary
    else:
        assert verdict["recommendation"] == "no", (summary, verdict)


def test_each_drop_zone_has_its_own_entry_budget(fs):
    """A /tmp of hundreds of thousands of names (a build or test machine) cannot take the walk: each drop zone
    stops at drop_max_entries, newest folders first, and the next zone is still walked."""
    root = _base(fs / "root")
    for name, when in (("old", 1_600_000_000), ("new", 1_700_000_000)):
        for i in range(30):
            _w(root, f"/tmp/{name}/f{i}", "x\n", 0o644)
        os.utime(root / "tmp" / name, (when, when))
    os.chmod(_program(root, "/dev/shm/.x"), 0o4755)  # in the next drop zone: still found
    records, problems = _collect(root, system_paths=[], persistence_paths=[], home_paths=[],
                                 drop_paths=["/tmp", "/dev/shm"], drop_max_entries=40)
    assert [r["path"] for r in records] == ["/dev/shm/.x"], records
    cut = [p for p in problems if "drop zones cut at 40" in p.message]
    assert cut and cut[0].detail["cut"] == ["/tmp"] and cut[0].level == "warning", problems
    assert not any("permissions walk cut" in p.message for p in problems)  # the walk itself was not cut
    info = next(p for p in problems if p.message.startswith("permissions:") and p.level == "info")
    assert info.detail["entries"] < 60 + 10, info.detail  # /tmp's 62 names not all looked at


def test_own_unpacked_runtime_is_not_walked_and_is_said(monkeypatch):
    """The built binary unpacks itself into /dev/shm/_MEI* (a drop zone): the live walk does not enter that
    folder (its files are the collector's, not the host's) and names it in the summary; a set-user-ID program
    in another /dev/shm folder is still found. A real /dev/shm folder named as ours through sys._MEIPASS."""
    need(os.geteuid() == 0 and os.access("/dev/shm", os.W_OK), "root and a writable /dev/shm")
    import sys

    tag = uuid.uuid4().hex[:8]
    mei, drop = Path(f"/dev/shm/_MEI{tag}"), Path(f"/dev/shm/tri-perm-{tag}")
    try:
        _program(mei, "/suid-helper", 0o4755)
        _program(drop, "/suid-helper", 0o4755)
        monkeypatch.setattr(sys, "_MEIPASS", str(mei), raising=False)
        ctx = Context(root="/", live=True, options={"persistence_paths": [], "home_paths": [], "system_paths": [],
                                                   "drop_paths": ["/dev/shm"], "package_owner": False})
        items = list(permissions.collect(ctx))
    finally:
        shutil.rmtree(mei, ignore_errors=True)
        shutil.rmtree(drop, ignore_errors=True)
    paths = {i.data["path"] for i in items if isinstance(i, Record)}
    assert f"{drop}/suid-helper" in paths and f"{mei}/suid-helper" not in paths
    summary = next(i for i in items if isinstance(i, Problem) and i.message.startswith("permissions:"))
    assert summary.detail["own_runtime_not_walked"] == [str(mei)]


def test_capabilities_are_read_where_someone_can_run_with_them(fs):
    """security.capability is read on files with an execute bit and on files not owned by root (their owner can
    chmod +x them: a dormant capability); a root-owned file without an execute bit is counted, not asked
    (capability_all_files = true asks it too). Real attributes written by setcap."""
    root = _base(fs)
    dormant = _w(root, "/usr/lib/tri/dormant", "x\n", 0o644)
    os.chown(dormant, 1000, 1000)
    _setcap(dormant, "cap_setuid+ep")
    inert = _w(root, "/usr/lib/tri/inert", "x\n", 0o644)
    _setcap(inert, "cap_setuid+ep")
    _setcap(_program(root, "/usr/lib/tri/runnable"), "cap_net_raw+ep")
    records, problems = _collect(root)
    found = {r["path"] for r in records if "capability" in r["kinds"]}
    assert {"/usr/lib/tri/dormant", "/usr/lib/tri/runnable"} <= found and "/usr/lib/tri/inert" not in found
    summary = next(p for p in problems if p.message.startswith("permissions:"))
    assert summary.detail["capability_not_read"] >= 1 and summary.detail["capability_all_files"] is False
    records, _ = _collect(root, capability_all_files=True)
    assert "/usr/lib/tri/inert" in {r["path"] for r in records if "capability" in r["kinds"]}
