"""The readers added for issue 20 (journal, containers, web roots) on a hostile root: a link out of the
root, a FIFO and a huge file where they read. Each ends with a problem or a skipped file, never a hang,
a crash or a byte from outside the root."""

from __future__ import annotations

import json
import os
from pathlib import Path

from collectors.base import Context, FileCopy, Problem, Record
from collectors.files import containers, journal, webroot

SECRET = "outside-the-root-canary"


def _run(collect, root: Path) -> list:
    items = list(collect(Context(root=str(root), live=False, options={})))
    for item in items:
        if isinstance(item, FileCopy):
            item.close()
    return items


def _outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside.txt"
    target.write_text(SECRET)
    return target


def test_journal_folder_with_a_link_out_a_fifo_and_a_huge_file(tmp_path):
    root = tmp_path / "root"
    folder = root / "var/log/journal/0123456789abcdef0123456789abcdef"
    folder.mkdir(parents=True)
    os.symlink(_outside(tmp_path), folder / "system.journal")
    os.mkfifo(folder / "user-1000.journal")
    with open(folder / "system@big.journal", "wb") as big:
        big.truncate(4 << 30)  # sparse: 4 GiB of zeros, no signature
    items = _run(journal.collect, root)
    assert not [i for i in items if isinstance(i, Record)]
    assert SECRET not in json.dumps([getattr(i, "message", "") for i in items])
    assert any(isinstance(i, Problem) for i in items)


def test_container_files_with_a_link_out_and_a_fifo(tmp_path):
    root = tmp_path / "root"
    base = root / "var/lib/docker/containers/abc"
    base.mkdir(parents=True)
    os.symlink(_outside(tmp_path), base / "config.v2.json")
    os.mkfifo(base / "hostconfig.json")
    other = root / "var/lib/docker/containers/def"
    other.mkdir()
    with open(other / "config.v2.json", "wb") as big:
        big.truncate(1 << 30)
    items = _run(containers.collect, root)
    assert not [i for i in items if isinstance(i, Record)]
    assert any(isinstance(i, Problem) for i in items)


def test_web_root_with_a_link_out_a_fifo_and_a_huge_script(tmp_path):
    root = tmp_path / "root"
    www = root / "var/www/html"
    www.mkdir(parents=True)
    os.symlink(_outside(tmp_path), www / "index.php")
    os.mkfifo(www / "pipe.php")
    with open(www / "big.php", "wb") as big:
        big.truncate(1 << 30)
    items = _run(webroot.collect, root)
    rows = [i.data for i in items if isinstance(i, Record)]
    assert [r["path"] for r in rows] == ["/var/www/html/big.php"]  # listed, content not read
    assert rows[0]["content_read"] is False and rows[0]["indicators"] == []
    assert not [i for i in items if isinstance(i, FileCopy)]
