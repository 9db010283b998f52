"""The raw-filesystem collector against real ext4 images built with mkfs.ext4 -d, with names deleted
by debugfs (so they stay in their directory block), hidden names, non-UTF-8 names, and this
machine's own root device (whose raw reads may be refused)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import pytsk3
from conftest import need

from collectors.base import Cancelled, Context, Problem, Record
from collectors.disk import tsk

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
    streams, problems = _run(disk=str(image["img"]), mount_point=str(view), paths=["/tmp", "/etc"])
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
    development machine) that is one clean "unavailable" record, elsewhere a normal walk."""
    for root in ("/", str(tmp_path)):
        streams, problems = _run(root=root, paths=["/etc"], max_entries=200, max_depth=1)
        status = [d["status"] for d in streams["disk"]]
        if status == ["unavailable"]:
            assert [p.message for p in problems if p.level == "error"] == [
                "raw filesystem not available: " + streams["disk"][0]["reason"]]
            assert "bodyfile" not in streams
        else:
            assert status == ["opened", "done"]


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
            subprocess.run(["umount", str(mnt / "etc")], check=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)

    opened = streams["disk"][0]
    assert opened["status"] == "opened" and opened["device"].startswith("/dev/")
    assert opened["mounted"] is True and opened["cross_view_against"] == str(mnt)
    hidden = {h["path"]: h for h in streams["crossview"]}
    assert set(hidden) == {"/etc/passwd", "/etc/new"}
    assert {h["kind"] for h in hidden.values()} == {"hidden_by_mount"}
    assert any(p.path == "/etc" and "another filesystem is mounted here" in p.message for p in problems)
    assert _by_name(streams["bodyfile"])["/tmp/gone"]["deleted"] is True

    assert sub["disk"][0]["evidence_root_in_fs"] == "/tmp"
    assert "/sub/deep/gone2" in _by_name(sub["bodyfile"])
    assert "crossview" not in sub
