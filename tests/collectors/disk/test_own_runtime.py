"""The collector's own unpacked runtime on a memory filesystem (a PyInstaller onefile binary unpacks into
/dev/shm/_MEI*, build/triagent.spec's runtime_tmpdir): the memory-filesystem walk of the live host lists the
folder but does not walk it, says so, and copies none of its libraries as "small programs found on tmpfs".
Before the fix the built binary's bundle was 10.6 MB against 2.4 MB from source: it carried its own libraries.
A real /dev/shm folder with a real ELF (a copy of /bin/true) stands in for the unpack folder."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need

from collectors.base import Context, FileCopy, Problem, Record
from collectors.disk import statx


@pytest.fixture
def unpacked(monkeypatch) -> Iterator[tuple[Path, Path]]:
    """A PyInstaller-like unpack folder in /dev/shm holding a small ELF, named as ours through sys._MEIPASS,
    and a dropper's twin beside it (which must still be copied)."""
    need(os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK), "a writable /dev/shm")
    tag = uuid.uuid4().hex[:8]
    mei, drop = Path(f"/dev/shm/_MEI{tag}"), Path(f"/dev/shm/tri-drop-{tag}")
    mei.mkdir()
    drop.mkdir()
    for folder in (mei, drop):
        shutil.copy("/bin/true", folder / "libpython-like.so")
        os.chmod(folder / "libpython-like.so", 0o755)
    monkeypatch.setattr(sys, "_MEIPASS", str(mei), raising=False)
    try:
        yield mei, drop
    finally:
        shutil.rmtree(mei, ignore_errors=True)
        shutil.rmtree(drop, ignore_errors=True)


def _walk(**options) -> tuple[list[dict], list[Problem], list[str], dict]:
    opts = statx.Options(paths=["/dev/shm"], memory_only=True, exec_max_count=1000, **options)
    rows, problems, copies, summary = [], [], [], {}
    for item in statx.collect_bodyfile(Context(root="/", live=True, options={}), opts):
        if isinstance(item, Record) and item.stream == "bodyfile":
            rows.append(item.data)
        elif isinstance(item, Record):
            summary = item.data
        elif isinstance(item, Problem):
            problems.append(item)
        elif isinstance(item, FileCopy):
            copies.append(item.path)
            item.close()
    return rows, problems, copies, summary


def test_own_unpack_folder_is_listed_not_walked_and_said(unpacked):
    mei, drop = unpacked
    rows, problems, copies, summary = _walk()
    names = {r["name"] for r in rows}
    assert str(mei) in names  # the folder itself is a name on the host: it stays in the timeline
    assert not [n for n in names if n.startswith(f"{mei}/")]
    assert not [c for c in copies if c.startswith(f"{mei}/")]
    assert summary["own_runtime_not_walked"] == [str(mei)]
    assert any(p.path == str(mei) and "own unpacked runtime" in p.message for p in problems)
    # the same program in any other folder of the memory filesystem is still what it looks like
    assert f"{drop}/libpython-like.so" in names and f"{drop}/libpython-like.so" in copies


def test_an_image_root_knows_no_own_folder(unpacked, tmp_path):
    """Under --root the evidence is another system: its /dev/shm paths are not this process's."""
    mei, _ = unpacked
    tree = tmp_path / "root"
    (tree / mei.relative_to("/")).mkdir(parents=True)
    shutil.copy("/bin/true", tree / mei.relative_to("/") / "prog")
    opts = statx.Options(paths=["/dev/shm"], memory_only=False)
    rows = [i.data for i in statx.collect_bodyfile(Context(root=str(tree), live=False, options={}), opts)
            if isinstance(i, Record) and i.stream == "bodyfile"]
    assert f"{mei}/prog" in {r["name"] for r in rows}
