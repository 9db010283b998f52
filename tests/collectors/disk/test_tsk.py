"""The raw-filesystem collector against real ext4 images built with mkfs.ext4 -d, with names deleted
by debugfs (so they stay in their directory block), hidden names, non-UTF-8 names, and this
machine's own root device (whose raw reads may be refused)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import conftest
import pytest
import pytsk3
from conftest import need

from collectors.base import Cancelled, Context, FileCopy, Problem, Record
from collectors.disk import bodyfile, statx, tsk
from collectors.files import fsread

BAD_NAME = b"bad\xff\xfename"  # not UTF-8
CTRL_NAME = "new\nline"
LINE = re.compile(r"^0\|(?P<name>.*)\|(?P<inode>\d+)\|(?P<mode>[-a-zA-Z]/[-a-zA-Z]{10})"
                  r"\|\d+\|\d+\|\d+\|\d+\|\d+\|\d+\|\d+$", re.S)


def _tools() -> None:
    need(shutil.which("mkfs.ext4") is not None and shutil.which("debugfs") is not None,
         "mkfs.ext4 and debugfs are needed (apt-get install e2fsprogs)")


def _run(**options) -> tuple[dict[str, list[dict]], list[Problem]]:
    return _run_ctx(Context(root=options.pop("root", "/"), live=True, options=options))


def _run_ctx(ctx: Context) -> tuple[dict[str, list[dict]], list[Problem]]:
    streams: dict[str, list[dict]] = {}
    problems = []
    for item in tsk.collect(ctx):
        if isinstance(item, Record):
            streams.setdefault(item.stream, []).append(item.data)
        elif isinstance(item, Problem):
            problems.append(item)
    return streams, problems


def _debugfs(image: Path, *commands: str) -> str:
    proc = subprocess.run(["debugfs", "-w", "-f", "-", str(image)], input="\n".join(commands) + "\n",
                          capture_output=True, text=True, check=True)
    return proc.stdout


def _inode(image: Path, path: str) -> int:
    out = subprocess.run(["debugfs", "-R", f"stat {path}", str(image)], capture_output=True, text=True,
                         check=True).stdout
    return int(re.search(r"Inode: (\d+)", out).group(1))


def _populate(src: Path) -> None:
    for d in ("etc", "tmp/sub/deep", "usr/bin", "root"):
        (src / d).mkdir(parents=True, exist_ok=True)
    (src / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (src / "tmp/keep").write_text("kept\n")
    (src / "tmp/gone").write_text("to be deleted\n")
    (src / "tmp/sub/deep/gone2").write_text("deleted below\n")
    (src / "tmp/hidden_by_rootkit").write_text("payload\n")
    (src / "tmp/reused").write_text("its inode will go to another file\n")
    (src / "tmp" / CTRL_NAME).write_text("control character in the name\n")
    with open(os.fsencode(src / "tmp") + b"/" + BAD_NAME, "wb") as f:
        f.write(b"latin-1 name\n")
    os.symlink("/etc/passwd", src / "tmp/link")
    (src / "usr/bin/suid").write_bytes(b"\x7fELF")
    os.chmod(src / "usr/bin/suid", 0o4755)
    os.chmod(src / "tmp", 0o1777)
    os.utime(src / "tmp/keep", (1600000000, 1500000000))


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict:
    """An ext4 image with deleted (one nested, one whose inode was reused) and hidden entries."""
    _tools()
    base = tmp_path_factory.mktemp("tsk")
    src = base / "src"
    _populate(src)
    img = base / "disk.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(img), "16M"], check=True,
                   capture_output=True)
    inodes = {p: _inode(img, p) for p in ("/tmp/gone", "/tmp/sub/deep/gone2", "/tmp/hidden_by_rootkit",
                                          "/tmp/reused")}
    filler = base / "filler"
    filler.write_text("new file\n")
    # `rm` unlinks and frees the inode the way the kernel does; the name stays in the directory block.
    # The new /etc/new gets the freed inode of /tmp/reused: fls calls that name "deleted-realloc".
    _debugfs(img, "rm /tmp/reused", f"write {filler} /etc/new", "rm /tmp/gone", "rm /tmp/sub/deep/gone2")
    return {"img": img, "src": src, "inodes": inodes, "base": base}


def _by_name(records: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in records}


def test_tsk_constants_match_pytsk3():
    assert tsk.NAME_FLAG_UNALLOC == int(pytsk3.TSK_FS_NAME_FLAG_UNALLOC)
    assert tsk.META_FLAG_ALLOC == int(pytsk3.TSK_FS_META_FLAG_ALLOC)
    assert tsk.META_FLAG_UNALLOC == int(pytsk3.TSK_FS_META_FLAG_UNALLOC)
    assert tsk.META_TYPE_DIR == int(pytsk3.TSK_FS_META_TYPE_DIR)
    assert tsk.META_TYPE_LNK == int(pytsk3.TSK_FS_META_TYPE_LNK)
    assert tsk.NAME_TYPES_VIRTUAL == (int(pytsk3.TSK_FS_NAME_TYPE_VIRT), int(pytsk3.TSK_FS_NAME_TYPE_VIRT_DIR))
    assert len(tsk.NAME_TYPE_CHARS) == int(pytsk3.TSK_FS_NAME_TYPE_STR_MAX)
    assert len(tsk.META_TYPE_CHARS) == int(pytsk3.TSK_FS_META_TYPE_STR_MAX)
    assert tsk.NAME_TYPE_CHARS[int(pytsk3.TSK_FS_NAME_TYPE_REG)] == "r"
    assert tsk.META_TYPE_CHARS[int(pytsk3.TSK_FS_META_TYPE_FIFO)] == "p"


def test_bodyfile_has_deleted_entries(image):
    streams, problems = _run(disk=str(image["img"]), paths=["/tmp", "/usr/bin", "/etc", "/var/nothing"])
    rows = _by_name(streams["bodyfile"])
    inodes = image["inodes"]

    gone = rows["/tmp/gone"]
    assert gone["deleted"] is True and gone["realloc"] is False
    assert gone["inode"] == inodes["/tmp/gone"]
    assert gone["line"].startswith(f"0|/tmp/gone (deleted)|{inodes['/tmp/gone']}|r/rrw-r--r--|0|0|")
    nested = rows["/tmp/sub/deep/gone2"]  # found by recursing, two levels down
    assert nested["deleted"] is True and nested["inode"] == inodes["/tmp/sub/deep/gone2"]
    reused = rows["/tmp/reused"]
    assert reused["deleted"] is True and reused["realloc"] is True
    assert "|0|/tmp/reused (deleted-realloc)|" in "|" + reused["line"]
    assert rows["/etc/new"]["inode"] == inodes["/tmp/reused"] and not rows["/etc/new"]["deleted"]

    keep = rows["/tmp/keep"]
    assert keep["deleted"] is False and keep["size"] == 5
    assert (keep["atime"], keep["mtime"]) == (1600000000, 1500000000)  # mkfs -d keeps the source times
    assert keep["line"].split("|")[7:9] == ["1600000000", "1500000000"]
    assert rows["/tmp"]["mode_as_string"] == "d/drwxrwxrwt"  # the chosen directory itself is listed
    assert rows["/usr/bin/suid"]["mode_as_string"] == "r/rrwsr-xr-x"
    assert rows["/tmp/link"]["link"] == "/etc/passwd"
    assert rows["/tmp/link"]["line"].startswith("0|/tmp/link -> /etc/passwd|")
    # a control character cannot break the bodyfile: fls writes "^" for it
    assert rows["/tmp/" + CTRL_NAME]["line"].startswith("0|/tmp/new^line|")
    for row in streams["bodyfile"]:
        assert LINE.match(row["line"]), row["line"]
        assert row["md5"] == "0"
    assert not any(r["name"].endswith(("/.", "/..")) for r in streams["bodyfile"])

    assert [d["status"] for d in streams["disk"]] == ["opened", "done"]
    assert streams["disk"][0]["fs_type"] == "ext4"
    assert streams["disk"][1]["deleted"] == 3
    assert any(p.path == "/var/nothing" and "not found" in p.message for p in problems)
    assert any("cross-view skipped" in p.message and p.level == "info" for p in problems)
    assert "crossview" not in streams


def test_lines_are_what_fls_prints(image):
    need(shutil.which("fls") is not None, "fls is needed to compare (apt-get install sleuthkit)")
    fls = subprocess.run(["fls", "-r", "-m", "/", str(image["img"])], capture_output=True, check=True).stdout
    theirs = {line for line in fls.split(b"\n") if line.startswith((b"0|/tmp", b"0|/usr/bin", b"0|/etc"))}
    streams, _ = _run(disk=str(image["img"]), paths=["/tmp", "/usr/bin", "/etc"])
    ours = {os.fsencode(r["line"]) for r in streams["bodyfile"]}
    assert ours == theirs


def test_non_utf8_names_kept_exactly(image):
    streams, _ = _run(disk=str(image["img"]), paths=["/tmp"])
    raw = b"/tmp/" + BAD_NAME
    row = _by_name(streams["bodyfile"])[os.fsdecode(raw)]
    assert bytes.fromhex(row["name_hex"]) == raw
    assert os.fsencode(row["line"]).startswith(b"0|" + raw + b"|")
    # the engine writes records as JSON with backslashreplace: the line must survive that
    text = json.dumps(row, ensure_ascii=False).encode("utf-8", "backslashreplace")
    assert json.loads(text)["line"] == row["line"]


def test_crossview_names_what_the_os_does_not_show(image):
    # The OS view: the tree the image was made from, less one name (as a rootkit hiding it would).
    view = image["base"] / "view"
    if not view.exists():
        shutil.copytree(image["src"], view, symlinks=True)
        (view / "tmp/hidden_by_rootkit").unlink()
    os.utime(view / "etc", ns=(1, 2))  # atime before mtime: relatime would update it on a listing
    streams, problems = _run(disk=str(image["img"]), mount_point=str(view), paths=["/tmp", "/etc"])
    assert os.stat(view / "etc").st_atime_ns == 1  # the OS side of the cross-view is listed with O_NOATIME
    hidden = streams.get("crossview", [])
    # /tmp/reused and /tmp/gone are not in the view either, but deleted names are not "hidden";
    # /etc/new (written after the copy) is; the non-UTF-8 name is in both views, byte for byte.
    assert {h["path"] for h in hidden} == {"/tmp/hidden_by_rootkit", "/etc/new"}
    row = next(h for h in hidden if h["name"] == "hidden_by_rootkit")
    assert row == {"path": "/tmp/hidden_by_rootkit", "name": "hidden_by_rootkit",
                   "inode": image["inodes"]["/tmp/hidden_by_rootkit"], "seen_raw": True, "seen_os": False,
                   "stat_visible": False, "kind": "hidden_from_os"}
    assert streams["disk"][-1]["hidden_from_os"] == 2
    assert not [p for p in problems if p.level == "error"]


def test_not_a_filesystem_is_reported_not_raised(tmp_path):
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(1 << 20))
    for disk in (junk, tmp_path / "missing.img", tmp_path):
        streams, problems = _run(disk=str(disk), paths=["/etc"])
        assert streams == {"disk": [streams["disk"][0]]}
        assert streams["disk"][0]["status"] == "unavailable" and streams["disk"][0]["reason"]
        assert len(problems) == 1 and problems[0].level == "error"
        assert problems[0].message.startswith("raw filesystem not available: ")


def test_this_machines_root(tmp_path):
    """The device under "/" is found from mountinfo; where raw reads are refused (as on this
    development machine) that is a warning and an "unavailable" record naming the fallback, and the
    bodyfile comes from statx instead: the timeline is never empty."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    for root in ("/", str(tmp_path)):
        streams, problems = _run(root=root, paths=["/etc"], max_entries=200, max_depth=1)
        raw = [d for d in streams["disk"] if d.get("source") != "statx"]
        assert streams["bodyfile"], root
        if [d["status"] for d in raw] == ["unavailable"]:
            assert raw[0]["fallback"] == "statx"
            assert [p.message for p in problems if p.message.startswith("raw filesystem not available")] == [
                "raw filesystem not available: " + raw[0]["reason"] + "; the bodyfile is taken through the OS "
                "(statx) instead, without deleted names"]
            assert not [p for p in problems if p.level == "error"]
            assert {r["source"] for r in streams["bodyfile"]} == {"statx"}
            assert any(r["name"].startswith("/etc/") for r in streams["bodyfile"])
            assert streams["disk"][-1]["scope"] == "evidence root"
        else:
            assert [d["status"] for d in raw] == ["opened", "done"]


def test_depth_and_entry_limits(image):
    streams, problems = _run(disk=str(image["img"]), paths=["/tmp"], max_depth=0)
    names = {r["name"] for r in streams["bodyfile"]}
    assert "/tmp/sub" in names and "/tmp/sub/deep" not in names
    assert any(p.message == "directory depth limit reached" and p.path == "/tmp/sub" for p in problems)

    streams, problems = _run(disk=str(image["img"]), paths=["/tmp", "/etc"], max_entries=3)
    assert len(streams["bodyfile"]) == 3
    assert streams["disk"][-1]["entry_limit_reached"] is True
    assert any("entry limit of 3" in p.message for p in problems)


def test_cancel_stops_the_walk(image):
    ctx = Context(root="/", live=True, options={"disk": str(image["img"]), "paths": ["/tmp"]})
    ctx.cancel.set()
    with pytest.raises(Cancelled):
        list(tsk.collect(ctx))


def test_partition_in_a_whole_disk_image(tmp_path):
    _tools()
    disk = tmp_path / "whole.img"
    start = 2048  # sectors: the filesystem begins 1 MiB into the disk
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", f"offset={start * 512}", str(disk), "8M"], check=True,
                   capture_output=True)
    entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", start, 8 * 2048)
    with open(disk, "r+b") as f:  # a one-partition MBR
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")
    streams, problems = _run(disk=str(disk), paths=["/"])
    assert streams["disk"][0]["status"] == "unavailable"
    assert "partitions start at byte offsets 1048576" in problems[0].message
    streams, _ = _run(disk=str(disk), paths=["/"], offset=start * 512)
    assert "/lost+found" in {r["name"] for r in streams["bodyfile"]}


def test_mountinfo_parsing(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "28 27 0:25 / /run rw shared:5 - tmpfs tmpfs rw\n"
        "29 27 7:1 /srv/data /mnt/my\\040disk rw - ext4 /dev/loop1 rw\n"
        "30 27 7:2 / /mnt/my\\040disk ro - ext4 /dev/loop2 ro\n"
    )
    mounts = tsk.read_mounts(str(info))
    assert [m.point for m in mounts] == ["/", "/run", "/mnt/my disk", "/mnt/my disk"]
    assert tsk.mount_of("/etc/passwd", mounts).source == "/dev/vda"
    assert tsk.mount_of("/run", mounts).fstype == "tmpfs"
    assert tsk.mount_of("/running", mounts).source == "/dev/vda"
    assert tsk.mount_of("/mnt/my disk/x", mounts).source == "/dev/loop2"  # the one mounted last wins
    bind = mounts[2]
    assert tsk.root_in_fs("/mnt/my disk/evidence", bind) == "/srv/data/evidence"
    assert tsk.root_in_fs("/mnt/my disk", bind) == "/srv/data"


def test_make_ls():
    assert tsk.make_ls(1, 0o644) == "rrw-r--r--"
    assert tsk.make_ls(2, 0o1777) == "drwxrwxrwt"
    assert tsk.make_ls(2, 0o1776) == "drwxrwxrwT"
    assert tsk.make_ls(1, 0o6754) == "rrwsr-sr--"
    assert tsk.make_ls(1, 0o6644) == "rrwSr-Sr--"


# --- with real mounts, where this environment allows them -------------------------------------------

def _mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mount is not permitted here: {proc.stderr.strip()}")


def test_mounted_image_found_from_mountinfo(image, tmp_path):
    """The image loop-mounted as the evidence root (--root): the loop device is found from
    mountinfo, and a bind mount laid over /etc hides names that the cross-view then reports."""
    need(shutil.which("mount") is not None, "mount is needed (util-linux)")
    copy = tmp_path / "disk.ext4"
    shutil.copy(image["img"], copy)
    mnt, empty = tmp_path / "mnt", tmp_path / "empty"
    mnt.mkdir()
    empty.mkdir()
    _mount("-o", "loop,ro", str(copy), str(mnt))
    try:
        _mount("--bind", str(empty), str(mnt / "etc"))
        try:
            streams, problems = _run(root=str(mnt), paths=["/tmp", "/etc"])
            sub, _ = _run(root=str(mnt / "tmp"), paths=["/sub"])  # a root below the mount point
        finally:
            _umount(mnt / "etc")
    finally:
        _umount(mnt)

    opened = streams["disk"][-2]  # after the memory filesystems' summary (source statx)
    assert streams["disk"][0]["source"] == "statx" and streams["disk"][0]["scope"] == "memory filesystems"
    assert opened["status"] == "opened" and opened["device"].startswith("/dev/") and opened["source"] == "tsk"
    assert opened["mounted"] is True and opened["cross_view_against"] == str(mnt)
    hidden = {h["path"]: h for h in streams["crossview"]}
    assert set(hidden) == {"/etc/passwd", "/etc/new"}
    assert {h["kind"] for h in hidden.values()} == {"hidden_by_mount"}
    assert any(p.path == "/etc" and "another filesystem is mounted here" in p.message for p in problems)
    assert _by_name(streams["bodyfile"])["/tmp/gone"]["deleted"] is True

    assert sub["disk"][-2]["evidence_root_in_fs"] == "/tmp"
    assert "/sub/deep/gone2" in _by_name(sub["bodyfile"])
    assert "crossview" not in sub


# --- the OS bodyfile (statx) where TSK cannot read, and memory filesystems -----------------------------

def _forget_roots(below: Path) -> None:
    """Close the evidence reader's cached root descriptors under a mount point (it keeps one per root for
    the process's life), so that the test can unmount it."""
    with fsread._roots_lock:
        for key in [k for k in fsread._roots if (k[0] + "/").startswith(str(below) + "/")]:
            os.close(fsread._roots.pop(key).fd)


def _umount(path: Path) -> None:
    _forget_roots(path)
    subprocess.run(["umount", str(path)], check=True, capture_output=True)


def _items(ctx: Context) -> tuple[dict[str, list[dict]], list[Problem], list[FileCopy]]:
    streams: dict[str, list[dict]] = {}
    problems, copies = [], []
    for item in tsk.collect(ctx):
        if isinstance(item, Record):
            streams.setdefault(item.stream, []).append(item.data)
        elif isinstance(item, Problem):
            problems.append(item)
        elif isinstance(item, FileCopy):
            copies.append((item.path, os.pread(item.fd, item.length, item.offset)))
            item.close()
    return streams, problems, copies


def _birth(path: Path) -> int:
    """The birth time as coreutils' stat prints it (statx underneath): the reference for crtime."""
    return int(subprocess.run(["stat", "-c", "%W", str(path)], capture_output=True, text=True, check=True).stdout)


def _plant_memory_fs(where: Path) -> dict[str, bytes]:
    """A tmpfs holding a small ELF program, a script without its execute bit, a big program and data."""
    _mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where))
    elf = Path("/bin/true").read_bytes()
    (where / ".x").mkdir()
    (where / ".x" / "kworker").write_bytes(elf)
    os.chmod(where / ".x" / "kworker", 0o755)
    (where / "run.sh").write_bytes(b"#!/bin/sh\nexec /dev/shm/.x/kworker\n")
    os.chmod(where / "run.sh", 0o644)
    (where / "big").write_bytes(b"\x7fELF" + b"\0" * (300 << 10))
    (where / "notes.txt").write_bytes(b"just data\n")
    return {"kworker": elf, "run.sh": (where / "run.sh").read_bytes()}


def test_xfs_root_falls_back_to_statx(tmp_path):
    """A real XFS filesystem (TSK has no XFS reader) loop-mounted as the evidence root: the bodyfile comes
    from statx, with birth times, links recorded and not followed, and the memory filesystem's programs
    copied; nothing is an error."""
    need(shutil.which("mkfs.xfs") is not None, "mkfs.xfs is needed (apt-get install xfsprogs)")
    need(shutil.which("mount") is not None, "mount is needed (util-linux)")
    image, mnt = tmp_path / "root.xfs", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(300 << 20)  # mkfs.xfs's smallest filesystem; sparse, so it costs a few MB
    subprocess.run(["mkfs.xfs", "-q", "-f", str(image)], check=True, capture_output=True)
    _mount("-o", "loop", str(image), str(mnt))
    try:
        for d in ("etc/cron.d", "tmp", "dev/shm", "usr/bin"):
            (mnt / d).mkdir(parents=True)
        (mnt / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
        (mnt / "etc/cron.d/sysupdate").write_text("* * * * * root /tmp/.u\n")
        os.utime(mnt / "etc/passwd", (1600000000, 1500000000))
        os.symlink("/etc", mnt / "tmp/etc-link")  # a link to a directory: recorded, never entered
        (mnt / "usr/bin/suid").write_bytes(b"\x7fELF")
        os.chmod(mnt / "usr/bin/suid", 0o4755)
        programs = _plant_memory_fs(mnt / "dev/shm")
        try:
            ctx = Context(root=str(mnt), live=False, options={
                "paths": ["/etc", "/tmp", "/usr/bin", "/dev/shm"], "exec_max_bytes": 200 << 10})
            looked_at = [mnt / "dev/shm/notes.txt", mnt / "dev/shm/.x/kworker", mnt / "dev/shm/run.sh",
                         mnt / "dev/shm/.x", mnt / "etc/cron.d"]  # a listed directory's atime too
            atimes = [os.stat(p).st_atime_ns for p in looked_at]
            time.sleep(0.02)  # a read now would move the access times (relatime: atime is not after mtime)
            streams, problems, copies = _items(ctx)
            assert [os.stat(p).st_atime_ns for p in looked_at] == atimes  # read with O_NOATIME
            births = {p: _birth(mnt / p.lstrip("/")) for p in ("/etc/cron.d/sysupdate", "/dev/shm/.x/kworker")}
        finally:
            _umount(mnt / "dev/shm")
    finally:
        _umount(mnt)

    assert not [p for p in problems if p.level == "error"], problems
    unavailable = [d for d in streams["disk"] if d["status"] == "unavailable"]
    assert len(unavailable) == 1 and unavailable[0]["fallback"] == "statx"
    assert "no filesystem TSK can read" in unavailable[0]["reason"]
    assert any(p.level == "warning" and "taken through the OS (statx)" in p.message for p in problems)
    summaries = {d["scope"]: d for d in streams["disk"] if d.get("source") == "statx"}
    assert set(summaries) == {"memory filesystems", "evidence root"}
    assert summaries["evidence root"]["filesystems"].get("xfs", 0) >= 6
    assert summaries["memory filesystems"]["executables_copied"] == 2

    rows = [r for r in streams["bodyfile"]]
    assert {r["source"] for r in rows} == {"statx"}
    by_name = {r["name"]: r for r in rows}
    assert len(by_name) == len(rows)  # /dev/shm is in both walks' paths, its names in the memory walk's only
    for r in rows:
        assert "line" not in r and LINE.match(bodyfile.fls_line(r)), r
    assert {r["fs_type"] for r in rows[:summaries["memory filesystems"]["entries"]]} == {"tmpfs"}
    cron = by_name["/etc/cron.d/sysupdate"]
    assert cron["fs_type"] == "xfs" and cron["btime_valid"] is True
    assert births["/etc/cron.d/sysupdate"] > 0 and cron["crtime"] == births["/etc/cron.d/sysupdate"]
    assert cron["mode_as_string"] == "r/rrw-r--r--" and cron["size"] == len("* * * * * root /tmp/.u\n")
    passwd = by_name["/etc/passwd"]
    assert (passwd["atime"], passwd["mtime"]) == (1600000000, 1500000000)
    assert bodyfile.fls_line(passwd).split("|")[7:9] == ["1600000000", "1500000000"]
    assert by_name["/usr/bin/suid"]["mode_as_string"] == "r/rrwsr-xr-x"
    assert by_name["/etc"]["mode_as_string"].startswith("d/d")
    link = by_name["/tmp/etc-link"]
    assert link["link"] == "/etc" and link["mode_as_string"] == "l/lrwxrwxrwx"
    assert bodyfile.fls_line(link).startswith("0|/tmp/etc-link -> /etc|")
    assert not any(n.startswith("/tmp/etc-link/") for n in by_name)

    shm = by_name["/dev/shm/.x/kworker"]
    assert shm["fs_type"] == "tmpfs" and shm["executable"] is True and shm["copied"] is True
    assert shm["btime_valid"] is True and shm["crtime"] == births["/dev/shm/.x/kworker"]
    assert by_name["/dev/shm/big"].get("copied") is None  # over exec_max_bytes: listed, not copied
    assert by_name["/dev/shm/notes.txt"].get("executable") is None
    assert dict(copies) == {"/dev/shm/.x/kworker": programs["kworker"], "/dev/shm/run.sh": programs["run.sh"]}


def test_ext4_loop_mount_still_uses_tsk_and_sees_tmpfs_below(image, tmp_path):
    """A loop-mounted ext4 root is read by TSK (source "tsk", deleted names); a tmpfs mounted below a
    chosen memory path (here /tmp/sub, on the ext4) is walked through statx, and only it."""
    need(shutil.which("mount") is not None, "mount is needed (util-linux)")
    copy, mnt = tmp_path / "disk.ext4", tmp_path / "mnt"
    shutil.copy(image["img"], copy)
    mnt.mkdir()
    _mount("-o", "loop", str(copy), str(mnt))
    try:
        programs = _plant_memory_fs(mnt / "tmp/sub")
        try:
            streams, problems, copies = _items(Context(root=str(mnt), live=False, options={
                "paths": ["/tmp", "/etc"], "memory_paths": ["/tmp", "/dev/shm"], "exec_max_bytes": 200 << 10}))
        finally:
            _umount(mnt / "tmp/sub")
    finally:
        _umount(mnt)
    assert not [p for p in problems if p.level == "error"], problems
    assert [(d.get("source"), d["status"]) for d in streams["disk"]] == [
        ("statx", "done"), ("tsk", "opened"), ("tsk", "done")]
    assert streams["disk"][1]["fs_type"] == "ext4"
    tsk_rows = [r for r in streams["bodyfile"] if r["source"] == "tsk"]
    statx_rows = [r for r in streams["bodyfile"] if r["source"] == "statx"]
    assert _by_name(tsk_rows)["/tmp/gone"]["deleted"] is True
    assert {r["fs_type"] for r in statx_rows} == {"tmpfs"}  # the ext4 /tmp around it is TSK's
    names = {r["name"] for r in statx_rows}
    assert {"/tmp/sub", "/tmp/sub/.x/kworker", "/tmp/sub/run.sh", "/tmp/sub/notes.txt"} <= names
    assert "/tmp/keep" not in names
    assert dict(copies) == {"/tmp/sub/.x/kworker": programs["kworker"], "/tmp/sub/run.sh": programs["run.sh"]}


def _statx_run(root: Path, **options) -> tuple[list[dict], list[Problem], dict]:
    opts = statx.Options(paths=options.pop("paths", ["/"]), memory_only=False, **options)
    rows, problems, summary = [], [], {}
    for item in statx.collect_bodyfile(Context(root=str(root), live=False, options={}), opts):
        if isinstance(item, Record) and item.stream == "bodyfile":
            rows.append(item.data)
        elif isinstance(item, Record):
            summary = item.data
        elif isinstance(item, Problem):
            problems.append(item)
    return rows, problems, summary


def test_statx_keeps_the_newest_within_its_entry_budget(tmp_path):
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    for i in range(20):
        (tree / "a" / f"old{i}").write_text("x")
    now = int(time.time())
    newest = {"/a/b/new1": now + 3000, "/a/new2": now + 2000, "/new3": now + 1000}
    for name, mtime in newest.items():
        (tree / name.lstrip("/")).write_text("y")
        os.utime(tree / name.lstrip("/"), (mtime, mtime))
    rows, problems, summary = _statx_run(tree, max_entries=3)
    assert [r["name"] for r in rows] == list(newest)  # newest first
    assert [r["mtime"] for r in rows] == list(newest.values())
    assert summary["entry_limit_reached"] is True and summary["entries"] == 3 and summary["scanned"] >= 23
    assert any("the newest 3 of" in p.message for p in problems)

    rows, problems, summary = _statx_run(tree, max_entries=1000, max_depth=0)
    names = {r["name"] for r in rows}
    assert "/a/old1" not in names and "/a" in names and "/new3" in names
    assert summary["depth_limited_dirs"] == 1
    assert any("directory depth limit (0) reached: 1 directories" in p.message for p in problems)

    rows, problems, summary = _statx_run(tree, max_dir_entries=5, paths=["/a"])
    assert len([r for r in rows if r["name"].count("/") == 2 and r["name"].startswith("/a/")]) == 5
    assert any(p.path == "/a" and "more than 5 names" in p.message for p in problems)

    rows, problems, summary = _statx_run(tree, budget_s=0)
    assert summary["time_limit_reached"] is True and len(rows) <= 1
    assert any("stopped at its time budget" in p.message for p in problems)


def test_statx_does_not_enter_a_remote_filesystem(tmp_path):
    """A FUSE server whose reads never answer, mounted below the root: the walk does not even look at its
    mount point (statx of it would ask the server), says so, and goes on."""
    need(os.path.exists("/dev/fuse") and os.geteuid() == 0, "FUSE mounts need /dev/fuse and root")
    try:
        import fuse  # noqa: F401
    except (ImportError, OSError) as exc:
        need(False, f"fusepy over libfuse2 is needed (pip install fusepy; apt-get install libfuse2): {exc}")
    tree = tmp_path / "tree"
    (tree / "share").mkdir(parents=True)
    (tree / "local").write_text("here")
    log = tmp_path / "fuse-ops.log"
    log.write_text("")
    server = subprocess.Popen([sys.executable, str(Path(conftest.TESTS) / "support" / "fuse_stall.py"),
                               str(tree / "share"), str(log)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(tree / "share"):
            assert server.poll() is None and time.monotonic() < deadline, "the FUSE server did not mount"
            time.sleep(0.05)
        before = log.read_text()
        rows, problems, summary = _statx_run(tree)
        after = log.read_text()
    finally:
        server.kill()
        server.wait(10)
        subprocess.run(["umount", "-l", str(tree / "share")], capture_output=True)
    names = {r["name"] for r in rows}
    assert "/local" in names and "/share" not in names
    assert any(p.path == "/share" and "fuse.stall" in p.message for p in problems), problems
    assert after == before  # not one operation reached the server
    assert summary["time_limit_reached"] is False


def test_statx_mode_strings_match_tsk():
    """Each file type gets the letters fls prints (name type / meta type), e.g. a socket is s/h."""
    cases = {stat.S_IFREG | 0o644: "r/rrw-r--r--", stat.S_IFDIR | 0o1777: "d/drwxrwxrwt",
             stat.S_IFLNK | 0o777: "l/lrwxrwxrwx", stat.S_IFIFO | 0o600: "p/prw-------",
             stat.S_IFSOCK | 0o755: "s/hrwxr-xr-x", stat.S_IFCHR | 0o620: "c/crw--w----",
             stat.S_IFBLK | 0o660: "b/brw-rw----"}
    for mode, expected in cases.items():
        st = statx.StatxResult(mode, 7, 0, 0, 0, 0, 0, 0, None, (0, 0))
        row = statx.statx_entry(b"/x", st, None, "xfs")
        assert row["mode_as_string"] == expected
        assert row["crtime"] == 0 and row["btime_valid"] is False
        # leaner than a TSK record: nothing constant (md5 "0", deleted/realloc false), no line of its own
        assert not {"line", "md5", "deleted", "realloc"} & set(row)
        assert bodyfile.fls_line(row) == f"0|/x|7|{expected}|0|0|0|0|0|0|0"
    assert statx.statx_how() in ("libc", "syscall", "lstat")


def test_overlayfs_root_falls_back_to_statx(tmp_path):
    """A container's root is overlayfs (no block device: major 0 in mountinfo): statx, with the file a
    container wrote in its upper layer and the one it shadows from the image's lower layer."""
    lower, upper, work, merged = (tmp_path / d for d in ("lower", "upper", "work", "merged"))
    for d in (lower / "etc", lower / "tmp", upper, work, merged):
        d.mkdir(parents=True)
    (lower / "etc/hostname").write_text("image\n")
    _mount("-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged))
    try:
        (merged / "etc/hostname").write_text("container\n")  # copied up
        (merged / "tmp/dropper").write_bytes(b"#!/bin/sh\n")
        streams, problems, _ = _items(Context(root=str(merged), live=False, options={"paths": ["/etc", "/tmp"]}))
    finally:
        _umount(merged)
    unavailable = [d for d in streams["disk"] if d["status"] == "unavailable"]
    assert unavailable[0]["fallback"] == "statx" and "overlay" in unavailable[0]["reason"]
    assert not [p for p in problems if p.level == "error"], problems
    rows = _by_name(streams["bodyfile"])
    assert {"/etc/hostname", "/tmp/dropper"} <= set(rows)
    assert rows["/etc/hostname"]["fs_type"] == "overlay" and rows["/etc/hostname"]["size"] == len("container\n")
    assert rows["/tmp/dropper"]["source"] == "statx"


def test_statx_names_and_the_lstat_fallback(tmp_path):
    """A non-UTF-8 name and a control character survive as in the TSK records; where statx cannot be
    called (a kernel before 4.11, a seccomp filter) lstat gives the same fields and no birth time."""
    tree = tmp_path / "tree"
    tree.mkdir()
    with open(os.fsencode(tree) + b"/" + BAD_NAME, "wb") as f:
        f.write(b"x")
    (tree / CTRL_NAME).write_text("y")
    rows = _by_name(_statx_run(tree)[0])
    bad = rows[os.fsdecode(b"/" + BAD_NAME)]
    assert bytes.fromhex(bad["name_hex"]) == b"/" + BAD_NAME
    assert bodyfile.fls_line(rows["/" + CTRL_NAME]).startswith("0|/new^line|")
    assert bodyfile.fls_line(bad).startswith("0|/" + os.fsdecode(BAD_NAME) + "|")

    caller = statx._Caller()
    fd = os.open(tree, os.O_PATH | os.O_DIRECTORY)
    try:
        real = caller.call(fd, BAD_NAME)
        caller.fn, caller.how = None, "lstat"
        old = caller.call(fd, BAD_NAME)
    finally:
        os.close(fd)
    assert old.btime_ns is None and real.btime_ns is not None
    assert (old.ino, old.mode, old.size, old.mtime_ns, old.dev) == (real.ino, real.mode, real.size, real.mtime_ns,
                                                                    real.dev)
