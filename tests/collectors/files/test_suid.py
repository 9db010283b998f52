"""Set-ID files: found under --root with their hash, symlinks not followed, pseudo filesystems skipped
on a live host (where dissect.target's suid_binaries stops at the first EACCES under /proc)."""

from __future__ import annotations

import hashlib
import os

from collectors.base import Context, Problem, Record
from collectors.files import suid


def _run(root: str, live: bool, paths: list[str]) -> tuple[list[dict], list[Problem]]:
    items = list(suid.collect(Context(root=root, live=live, options={"paths": paths})))
    return [i.data for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, Problem)]


def test_planted_setuid_shell_under_root(tmp_path):
    shell = tmp_path / "var/tmp/.x/sh"
    shell.parent.mkdir(parents=True)
    shell.write_bytes(b"\x7fELF planted")
    os.chmod(shell, 0o4755)
    group = tmp_path / "usr/bin/wall"
    group.parent.mkdir(parents=True)
    group.write_bytes(b"wall")
    os.chmod(group, 0o2755)
    (tmp_path / "usr/bin/plain").write_bytes(b"plain")
    (tmp_path / "usr/bin/link").symlink_to(shell)
    (tmp_path / "usr/bin/loop").symlink_to(tmp_path / "usr")
    records, _ = _run(str(tmp_path), False, ["/"])
    by_path = {r["path"]: r for r in records}
    assert set(by_path) == {"/var/tmp/.x/sh", "/usr/bin/wall"}
    assert by_path["/var/tmp/.x/sh"]["setuid"] and by_path["/var/tmp/.x/sh"]["mode"] == "4755"
    assert by_path["/var/tmp/.x/sh"]["sha256"] == hashlib.sha256(b"\x7fELF planted").hexdigest()
    assert by_path["/usr/bin/wall"]["setgid"] and not by_path["/usr/bin/wall"]["setuid"]


def test_live_walk_skips_proc_and_finds_a_setuid_file(tmp_path):
    planted = tmp_path / "planted-suid"
    planted.write_bytes(b"x")
    os.chmod(planted, 0o4711)
    records, problems = _run("/", True, ["/proc", str(tmp_path)])
    assert [r["path"] for r in records] == [str(planted)]
    assert all("/proc/" not in p.message for p in problems)
