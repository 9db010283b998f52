"""The evidence reader: every read stays inside the evidence root (as in a chroot), with openat2 and
with the descriptor walk that older kernels get; secrets reached through links are withheld."""

from __future__ import annotations

import errno
import os

import pytest

from agent.bundle.writer import UnsafeMemberName, member_name
from collectors.base import Context
from collectors.files import fsread


@pytest.fixture(params=["openat2", "walk"])
def method(request, monkeypatch):
    """Run each test with the kernel's openat2 and with the O_NOFOLLOW walk of kernels before 5.6."""
    if request.param == "walk":
        monkeypatch.setitem(fsread._openat2_state, "missing", True)
    else:
        monkeypatch.delitem(fsread._openat2_state, "missing", raising=False)
    yield request.param
    if request.param == "openat2":
        assert fsread._openat2_state.get("works"), "openat2 was never used"


def _tree(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary.txt").write_text("CANARY-OUTSIDE\n")
    root = tmp_path / "root"
    for d in ("etc", "root/.ssh", "home/bob", "tmp"):
        (root / d).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "tmp/inside.txt").write_text("inside\n")
    return root, outside


def _ctx(root, **kw) -> Context:
    return Context(root=str(root), live=False, options={}, **kw)


def test_dotdot_and_absolute_links_stay_inside_the_root(tmp_path, method):
    root, outside = _tree(tmp_path)
    ctx = _ctx(root)
    climb = "/root/" + "../" * 12 + str(outside / "canary.txt").lstrip("/")
    with pytest.raises(FileNotFoundError):
        fsread.read_capped(ctx, climb, 1 << 20)
    assert fsread.resolve(ctx, "/root/../../../../tmp/inside.txt") == "/tmp/inside.txt"
    # an intermediate link to an absolute path is the root's path, not the host's
    os.symlink(str(outside), root / "home/bob/.local")
    with pytest.raises(FileNotFoundError):
        fsread.read_capped(ctx, "/home/bob/.local/canary.txt", 1 << 20)
    os.symlink("/", root / "home/bob/.up")
    data, _, _ = fsread.read_capped(ctx, "/home/bob/.up/tmp/inside.txt", 1 << 20)
    assert data == b"inside\n"
    os.symlink("../../../../../../../../../..", root / "home/bob/.rel")
    assert fsread.resolve(ctx, "/home/bob/.rel/etc/passwd") == "/etc/passwd"
    # copies are named by where they are, never by the path we were handed
    items = list(fsread.copy_file(ctx, "/home/bob/.up/tmp/inside.txt", 1 << 20))
    assert [i.path for i in items] == ["/tmp/inside.txt"]
    for item in items:
        item.close()


def test_links_loops_and_special_files(tmp_path, method):
    root, _ = _tree(tmp_path)
    ctx = _ctx(root)
    os.symlink("b", root / "tmp/a")
    os.symlink("a", root / "tmp/b")
    with pytest.raises(OSError) as info:
        fsread.read_capped(ctx, "/tmp/a", 100)
    assert info.value.errno == errno.ELOOP
    os.mkfifo(root / "tmp/fifo")
    with pytest.raises(fsread.NotRegularFile):
        fsread.read_capped(ctx, "/tmp/fifo", 100)  # never blocks on a FIFO
    os.symlink("/etc/passwd", root / "tmp/to-passwd")
    items = list(fsread.copy_file(ctx, "/tmp/to-passwd", 100))
    assert [type(i).__name__ for i in items] == ["SymlinkCopy", "FileCopy"]
    assert items[0].path == "/tmp/to-passwd" and items[0].target == "/etc/passwd" and items[1].path == "/etc/passwd"
    items[1].close()


def test_glob_with_dotdot_cannot_climb(tmp_path, method):
    root, outside = _tree(tmp_path)
    ctx = _ctx(root)
    pattern = "/etc/ssh/" + "../" * 12 + str(outside).lstrip("/") + "/*"
    assert [h for h in fsread.walk_glob(ctx, pattern) if isinstance(h, str)] == []
    assert [h for h in fsread.walk_glob(ctx, "/root/../tmp/*") if isinstance(h, str)] == ["/tmp/inside.txt"]


def test_a_link_to_a_withheld_file_is_described_not_read(tmp_path, method):
    root, _ = _tree(tmp_path)
    (root / "etc/shadow").write_text("root:$6$salt$SECRETHASH:19000:0:99999:7:::\n")
    os.symlink("/etc/shadow", root / "root/.bash_history")
    policy = lambda path, head: "secret path" if path == "/etc/shadow" else None  # noqa: E731
    ctx = _ctx(root, secret_policy=policy)
    with pytest.raises(fsread.Withheld) as info:
        fsread.read_capped(ctx, "/root/.bash_history", 1 << 20)
    detail = info.value.detail
    assert detail["resolved"] == "/etc/shadow" and detail["link_target"] == "/etc/shadow"
    assert detail["size"] == (root / "etc/shadow").stat().st_size and len(detail["sha256"]) == 64
    assert "SECRETHASH" not in str(info.value)
    # a parser built for shadow (facts only) reads it by its own name, never through a link
    data, _, _ = fsread.read_capped(ctx, "/etc/shadow", 1 << 20, facts_only=True)
    assert b"SECRETHASH" in data
    with pytest.raises(fsread.Withheld):
        fsread.read_capped(ctx, "/root/.bash_history", 1 << 20, facts_only=True)


def test_remote_mounts_below_the_root_are_not_entered(tmp_path, method):
    root, _ = _tree(tmp_path)
    (root / "home/bob/share").mkdir()
    (root / "home/bob/share/file").write_text("x")
    info = tmp_path / "mountinfo"
    real = os.path.realpath(root)
    info.write_text(
        f"36 35 0:33 / {real} rw - ext4 /dev/sda1 rw\n"
        f"40 36 0:44 / {real}/home/bob/share rw,nosuid - fuse.sshfs user@host: rw\n"
        f"41 36 0:45 / {real}/mnt/with\\040space rw - nfs4 srv:/x rw\n"
        f"42 36 0:46 / /elsewhere rw - fuse.x y rw\n")
    mounts = fsread.remote_mounts(real, str(info))
    assert mounts == {f"{real}/home/bob/share": "fuse.sshfs", f"{real}/mnt/with space": "nfs4"}
    ctx = _ctx(root)
    fsread.evidence(ctx).remote = mounts
    with pytest.raises(fsread.RemoteFilesystem):
        fsread.read_capped(ctx, "/home/bob/share/file", 100)
    problems = list(fsread.walk_glob(ctx, "/home/bob/share/*"))
    assert len(problems) == 1 and "fuse.sshfs" in problems[0].message
    fsread.evidence(ctx).remote = {}


def test_a_folder_reads_its_entries_by_name_as_read_capped_reads_their_paths(tmp_path, method):
    """fsread.Folder (the package database's 2 000 files): entries read relative to the folder's descriptor,
    with read_capped's answers: links resolved inside the root, special files refused unopened, secrets
    withheld whatever name they are reached by, remote mounts refused, and no name that leaves the folder."""
    root, outside = _tree(tmp_path)
    (root / "etc/shadow").write_text("root:$6$salt$SECRETHASH:19000:0:99999:7:::\n")
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "bash.list").write_text("/.\n/bin\n/bin/bash\n")
    os.symlink(str(outside / "canary.txt"), info / "abs.list")    # the host's path: the root's, which is missing
    os.symlink("/etc/passwd", info / "passwd.list")               # inside the root: read there
    os.symlink("/etc/shadow", info / "shadow.list")               # a secret through a link
    os.symlink("../../../../../../../../tmp/inside.txt", info / "rel.list")
    os.mkfifo(info / "fifo.list")
    policy = lambda path, head: "secret path" if path == "/etc/shadow" else None  # noqa: E731
    ctx = _ctx(root, secret_policy=policy)
    with fsread.Folder(ctx, "/var/lib/../lib/dpkg/info") as folder:
        assert folder.resolved == "/var/lib/dpkg/info"
        for name in ("bash.list", "passwd.list", "rel.list"):
            got = folder.read_capped(name, 1 << 20)
            want = fsread.read_capped(ctx, f"/var/lib/dpkg/info/{name}", 1 << 20)
            assert (got[0], got[2], got[1].st_ino) == (want[0], want[2], want[1].st_ino), name
        assert folder.read_capped("bash.list", 5)[0] == b"/.\n/b"
        assert folder.read_capped("bash.list", 4, keep="tail")[0] == b"ash\n"
        with pytest.raises(FileNotFoundError):
            folder.read_capped("abs.list", 100)
        with pytest.raises(fsread.Withheld):
            folder.read_capped("shadow.list", 100)
        with pytest.raises(fsread.NotRegularFile):
            folder.read_capped("fifo.list", 100)  # never opened: a FIFO would block
        for name in ("../../../../etc/passwd", "..", ".", "", "a/b"):
            with pytest.raises(ValueError):
                folder.read_capped(name, 100)
        fsread.evidence(ctx).remote = {os.path.realpath(info / "bash.list"): "fuse.sshfs"}
        try:
            with pytest.raises(fsread.RemoteFilesystem):
                folder.read_capped("bash.list", 100)
        finally:
            fsread.evidence(ctx).remote = {}
    assert folder.fd == -1


def test_bundle_writer_refuses_names_that_climb():
    for bad in ("fs/$rootfs$/root/../../../tmp/x", "/etc/passwd", "a//b", "a/./b", "a\0b", ".."):
        with pytest.raises(UnsafeMemberName):
            member_name(bad)
    assert member_name("fs/$rootfs$/etc/passwd") == b"fs/$rootfs$/etc/passwd"


def test_identity_and_clock_files_are_read_inside_the_root(tmp_path, method):
    """The system artifact and custody name the host from /etc/hostname, machine-id, os-release and
    the timezone: in an image, a link there must not name the responder's machine instead."""
    from collectors.volatile.system import _os_release, clock_facts, host_identity

    root, outside = _tree(tmp_path)
    (outside / "os-release").write_text('ID="responder-os"\n')
    (outside / "hostname").write_text("responder-workstation\n")
    os.symlink(str(outside / "hostname"), root / "etc/hostname")
    os.symlink(str(outside / "os-release"), root / "etc/os-release")
    os.symlink(str(outside / "canary.txt"), root / "etc/timezone")
    ident = host_identity(str(root), live=False)
    assert ident["hostname_file"] is None and _os_release(str(root)) == {}
    assert clock_facts(str(root))[0].get("timezone_file") is None
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("ID=debian\n")
    (root / "etc/machine-id").write_text("0123456789abcdef\n")
    assert _os_release(str(root)) == {"ID": "debian"}
    assert host_identity(str(root), live=False)["machine_id"] == "0123456789abcdef"


def test_globs_reach_files_through_an_in_root_directory_link(tmp_path, method):
    """RHEL-family hosts have /etc/init.d -> rc.d/init.d (and merged-/usr ones /lib -> usr/lib): a
    glob's literal component that is a directory link is followed inside the root, as in a chroot;
    a link out of the root lands inside it, and a loop ends."""
    from collectors.files import copy

    root, outside = _tree(tmp_path)
    (root / "etc/rc.d/init.d").mkdir(parents=True)
    (root / "etc/rc.d/init.d/network").write_text("#!/bin/bash\n. /etc/init.d/functions\n")
    (root / "etc/rc.d/init.d/.hidden").write_text("x\n")
    os.symlink("rc.d/init.d", root / "etc/init.d")
    ctx = _ctx(root)
    scripts = ["/etc/rc.d/init.d/.hidden", "/etc/rc.d/init.d/network"]
    assert [h for h in fsread.walk_glob(ctx, "/etc/init.d/*") if isinstance(h, str)] == scripts
    assert [h for h in fsread.walk_glob(ctx, "/etc/init.d/**") if isinstance(h, str)] == scripts
    # the files.system copy (its pattern /etc/init.d/*) copies the scripts
    items = list(copy.collect(Context(root=str(root), live=False, options={"paths": ["/etc/init.d/*"]})))
    assert [i.path for i in items] == scripts
    for item in items:
        item.close()
    # an absolute target is the root's own path, never the host's
    (outside / "init.d").mkdir()
    (outside / "init.d/canary").write_text("CANARY-OUTSIDE\n")
    os.symlink(str(outside / "init.d"), root / "etc/abs.d")
    assert [h for h in fsread.walk_glob(ctx, "/etc/abs.d/*") if isinstance(h, str)] == []
    os.symlink("../../../../../../../../../../etc/rc.d/init.d", root / "etc/climb.d")
    assert [h for h in fsread.walk_glob(ctx, "/etc/climb.d/*") if isinstance(h, str)] == scripts
    os.symlink("loop2", root / "etc/loop1")
    os.symlink("loop1", root / "etc/loop2")
    assert [h for h in fsread.walk_glob(ctx, "/etc/loop1/*") if isinstance(h, str)] == []
    # a link to a file is still not a directory to descend into
    os.symlink("passwd", root / "etc/pw")
    assert [h for h in fsread.walk_glob(ctx, "/etc/pw/*") if isinstance(h, str)] == []
    assert [h for h in fsread.walk_glob(ctx, "/etc/pw") if isinstance(h, str)] == ["/etc/pw"]
