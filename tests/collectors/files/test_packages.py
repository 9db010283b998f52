"""Package databases read without the package manager (collectors/files/packages.py), checked against
databases the real tools wrote: dpkg installs a package built by dpkg-deb into a fake root (merged /usr,
a conffile, a PAM module, a local diversion); rpm installs a package built by rpmbuild (a %config file, a
%ghost file, a %verify(not md5) file) into a fake root's SQLite rpmdb, and the same headers go into a
Berkeley DB hash file written by libdb's own db_load. Hostile header blobs are refused, never crash."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import need

from collectors.base import Context
from collectors.files import fsread, packages

TRUE = "/usr/bin/true"


def _pam_library() -> str:
    for candidate in ("/lib/x86_64-linux-gnu/security/pam_permit.so",
                      "/usr/lib/x86_64-linux-gnu/security/pam_permit.so", "/usr/lib64/security/pam_permit.so"):
        if os.path.exists(candidate):
            return candidate
    return "/lib/x86_64-linux-gnu/libc.so.6"


def _ctx(root: Path) -> Context:
    return Context(root=str(root), live=False, options={})


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---- dpkg ---------------------------------------------------------------------------------------

def build_deb(where: Path, name: str = "tinyx", version: str = "1.0") -> Path:
    """A package with /bin/tinyxold (merged-/usr name), /usr/bin/tinyx (a real ELF), a PAM module and a
    conffile, built by dpkg-deb."""
    src = where / f"{name}-src"
    for folder in ("DEBIAN", "bin", "usr/bin", "etc", "usr/lib/x86_64-linux-gnu/security"):
        (src / folder).mkdir(parents=True, exist_ok=True)
    (src / "DEBIAN/control").write_text(f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n"
                                        "Maintainer: t <t@example.org>\nDescription: tiny\n")
    (src / "DEBIAN/conffiles").write_text(f"/etc/{name}.conf\n")
    shutil.copy(TRUE, src / f"usr/bin/{name}")
    (src / f"bin/{name}old").write_text("#!/bin/sh\necho old\n")
    (src / f"bin/{name}old").chmod(0o755)
    (src / f"etc/{name}.conf").write_text("a=1\n")
    shutil.copy(_pam_library(), src / f"usr/lib/x86_64-linux-gnu/security/pam_{name}.so")
    deb = where / f"{name}.deb"
    subprocess.run(["dpkg-deb", "-b", "--root-owner-group", str(src), str(deb)], check=True, capture_output=True)
    return deb


def dpkg_root(tmp_path: Path, divert: bool = True) -> Path:
    """A fake root with merged /usr whose dpkg database the real dpkg wrote."""
    need(shutil.which("dpkg") is not None and shutil.which("dpkg-deb") is not None, "dpkg and dpkg-deb not installed")
    root = tmp_path / "root"
    for folder in ("usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "var/lib/dpkg/info", "var/lib/dpkg/updates",
                   "etc"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for alias in ("bin", "sbin", "lib"):
        os.symlink(f"usr/{alias}", root / alias)
    (root / "var/lib/dpkg/status").touch()
    deb = build_deb(tmp_path)
    subprocess.run(["dpkg", f"--root={root}", "--force-all", "-i", str(deb)], check=True, capture_output=True)
    if divert:  # a local admin diversion: the package's copy now lives under another name
        subprocess.run(["dpkg-divert", f"--root={root}", "--local", "--rename", "--divert", "/usr/bin/tinyx.distrib",
                        "/usr/bin/tinyx"], check=True, capture_output=True)
    return root


def test_dpkg_database_written_by_dpkg(tmp_path):
    root = dpkg_root(tmp_path)
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert not problems and db.kind == "dpkg" and db.packages == 1 and db.complete
    old = db.owners("/usr/bin/tinyxold")  # listed as /bin/tinyxold; /bin is a link to usr/bin
    assert old and old[0].package == "tinyx" and old[0].algo == "md5"
    assert old[0].digest == _md5(root / "usr/bin/tinyxold")
    assert old[0].installed == pytest.approx((root / "var/lib/dpkg/info/tinyx.list").stat().st_mtime)
    pam = db.owners("/usr/lib/x86_64-linux-gnu/security/pam_tinyx.so")
    assert pam and pam[0].digest == _md5(root / "usr/lib/x86_64-linux-gnu/security/pam_tinyx.so")
    conf = db.owners("/etc/tinyx.conf")
    assert conf and conf[0].config  # a conffile: its digest is known, but a change is the admin's, never judged
    diverted = db.owners("/usr/bin/tinyx.distrib")
    assert diverted and diverted[0].digest == _md5(root / "usr/bin/tinyx.distrib")
    assert db.owners("/usr/bin/tinyx") == []  # the admin's file under the package's old name: no package's
    assert db.owners("/usr/bin/nothing") == []


def test_dpkg_keep_filter_and_no_database(tmp_path):
    root = dpkg_root(tmp_path, divert=False)
    db, _ = packages.load(_ctx(root), lambda p: p.endswith(".so"))
    assert list(db.files) == ["/usr/lib/x86_64-linux-gnu/security/pam_tinyx.so"]
    empty = tmp_path / "empty"
    empty.mkdir()
    db, problems = packages.load(_ctx(empty), lambda p: True)
    assert db.kind == "none" and db.owners("/usr/bin/ls") is None and not problems  # unknown, never "unowned"


def test_dpkg_unreadable_list_makes_ownership_unknown(tmp_path):
    root = dpkg_root(tmp_path, divert=False)
    list_file = root / "var/lib/dpkg/info/tinyx.list"
    list_file.unlink()
    os.mkfifo(list_file)  # a FIFO where a list should be: never opened, and the database is not complete
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert problems and not db.complete and db.owners("/usr/bin/tinyxold") is None


def test_dpkg_status_parser_skips_removed_packages():
    status = (b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\nConffiles:\n /etc/a 00\n\n"
              b"Package: b\nStatus: deinstall ok config-files\nVersion: 2\n\n"
              b"Package: c\nStatus: purge ok not-installed\n\n")
    parsed = packages.parse_dpkg_status(status)
    assert set(parsed) == {"a", "a:amd64"} and parsed["a"]["conffiles"] == {"/etc/a"}


def test_real_host_md5sums_parse():
    """The host's own md5sums files (written by dpkg) parse into absolute paths and 32-hex digests."""
    info = Path("/var/lib/dpkg/info")
    need(info.is_dir(), "no dpkg database on this host")
    files = sorted(info.glob("*.md5sums"))[:50]
    assert files
    for f in files:
        parsed = packages.parse_md5sums(f.read_bytes())
        assert parsed and all(p.startswith("/") and len(d) == 32 for p, d in parsed.items()), f


# ---- RPM ----------------------------------------------------------------------------------------

SPEC = """Name: tinyr
Version: 2.0
Release: 3
Summary: tiny
License: MIT
BuildArch: noarch
%description
tiny
%install
mkdir -p %{buildroot}/usr/bin %{buildroot}/etc %{buildroot}/usr/lib64/security %{buildroot}/var/log
printf '#!/bin/sh\\necho tinyr\\n' > %{buildroot}/usr/bin/tinyr
printf '#!/bin/sh\\necho changes\\n' > %{buildroot}/usr/bin/tinyr-state
chmod 755 %{buildroot}/usr/bin/tinyr %{buildroot}/usr/bin/tinyr-state
printf 'pam module stand-in\\n' > %{buildroot}/usr/lib64/security/pam_tinyr.so
echo conf > %{buildroot}/etc/tinyr.conf
%files
/usr/bin/tinyr
%verify(not md5 size mtime) /usr/bin/tinyr-state
/usr/lib64/security/pam_tinyr.so
%config(noreplace) /etc/tinyr.conf
%ghost /var/log/tinyr.log
"""


def rpm_root(tmp_path: Path) -> Path:
    """A fake root whose /var/lib/rpm/rpmdb.sqlite the real rpm wrote, installing an rpmbuild package."""
    need(shutil.which("rpmbuild") is not None and shutil.which("rpm") is not None,
         "rpm and rpmbuild not installed (Debian package rpm)")
    top = tmp_path / "rpmbuild"
    (tmp_path / "tinyr.spec").write_text(SPEC)
    subprocess.run(["rpmbuild", "--define", f"_topdir {top}", "-bb", str(tmp_path / "tinyr.spec")], check=True,
                   capture_output=True)
    package = next((top / "RPMS/noarch").glob("*.rpm"))
    root = tmp_path / "rroot"
    root.mkdir()
    rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--define", "_db_backend sqlite"]
    subprocess.run(rpm + ["--initdb"], check=True, capture_output=True)
    subprocess.run(rpm + ["-i", "--nodeps", "--noscripts", str(package)], check=True, capture_output=True)
    assert (root / "var/lib/rpm/rpmdb.sqlite").exists()
    return root


def _listing(folder: Path) -> dict[str, tuple]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ctime_ns, p.stat().st_ino)
            for p in folder.iterdir()}


def test_rpm_sqlite_database_written_by_rpm(tmp_path):
    root = rpm_root(tmp_path)
    before = _listing(root / "var/lib/rpm")
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert _listing(root / "var/lib/rpm") == before  # no lock, journal, WAL or shm file touched or made
    assert not problems and db.kind == "rpm-sqlite" and db.packages == 1 and db.complete
    tinyr = db.owners("/usr/bin/tinyr")
    assert tinyr and tinyr[0].package == "tinyr" and tinyr[0].version == "2.0-3"
    assert tinyr[0].algo == "sha256"  # rpm 4.18 writes FILEDIGESTALGO 8
    assert tinyr[0].digest == hashlib.sha256((root / "usr/bin/tinyr").read_bytes()).hexdigest()
    assert tinyr[0].installed and not tinyr[0].config
    assert db.owners("/usr/bin/tinyr-state")[0].digest is None  # %verify(not md5): never judged
    assert db.owners("/etc/tinyr.conf")[0].config
    assert db.owners("/var/log/tinyr.log") == []  # %ghost: rpm records no content for it
    assert db.owners("/usr/lib64/security/pam_tinyr.so")[0].digest


def test_rpm_sqlite_without_proc_reads_a_copy_in_memory(tmp_path, monkeypatch):
    root = rpm_root(tmp_path)
    before = _listing(root / "var/lib/rpm")
    monkeypatch.setattr(packages, "FD_PATH", str(tmp_path / "no-proc/{fd}"))
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert db.kind == "rpm-sqlite" and db.owners("/usr/bin/tinyr")
    assert [p.message for p in problems] == ["no /proc/self/fd: /var/lib/rpm/rpmdb.sqlite read from a copy in memory"]
    assert _listing(root / "var/lib/rpm") == before


def test_rpm_sqlite_pending_wal_is_applied(tmp_path):
    """A transaction still in the WAL (rpm running, or killed before its checkpoint) is invisible to an
    immutable open: its committed frames are applied to a copy in memory, as SQLite's checkpoint would."""
    root = rpm_root(tmp_path)
    path = root / "var/lib/rpm/rpmdb.sqlite"
    writer = sqlite3.connect(path)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        blob = bytes(writer.execute("SELECT blob FROM Packages").fetchone()[0])
        # a second package (same header, another name and file), installed in a pending transaction
        writer.execute("INSERT INTO Packages (blob) VALUES (?)", (blob.replace(b"tinyr", b"tinyq"),))
        writer.commit()
        writer.execute("INSERT INTO Packages (blob) VALUES (?)", (blob.replace(b"tinyr", b"tinyp"),))  # not committed
        wal = (root / "var/lib/rpm/rpmdb.sqlite-wal").stat().st_size
        main = path.read_bytes()
        db, problems = packages.load(_ctx(root), lambda p: True)
        assert path.read_bytes() == main and (root / "var/lib/rpm/rpmdb.sqlite-wal").stat().st_size == wal
    finally:
        writer.rollback()
        writer.close()
    assert db.kind == "rpm-sqlite" and db.packages == 2 and db.complete, problems
    assert db.owners("/usr/bin/tinyr") and db.owners("/usr/bin/tinyq")[0].package == "tinyq"
    assert db.owners("/usr/bin/tinyp") == []  # uncommitted: not installed
    assert [p.message for p in problems] == ["/var/lib/rpm/rpmdb.sqlite-wal: 1 committed transaction(s) applied to a "
                                             "copy in memory"]


def test_rpm_sqlite_unusable_wal_makes_ownership_unknown(tmp_path):
    root = rpm_root(tmp_path)
    (root / "var/lib/rpm/rpmdb.sqlite-wal").write_bytes(os.urandom(5000))
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert db.kind == "rpm-sqlite" and db.owners("/usr/bin/tinyr") and db.owners("/usr/bin/elsewhere") is None
    assert any("transactions not read" in p.message for p in problems), problems


def test_wal_frames_are_checked():
    """Torn or stale frames end the valid log: nothing after them is applied."""
    page = 512
    db = bytearray(b"\1" * page * 2)
    header = struct.pack(">6I", 0x377F0682, 3007000, page, 0, 11, 22)
    s0, s1 = packages._wal_checksum(header, "<", 0, 0)
    wal = bytearray(header + struct.pack(">2I", s0, s1))

    def frame(pgno: int, commit: int, fill: bytes, salt: tuple[int, int] = (11, 22), corrupt: bool = False) -> None:
        nonlocal s0, s1
        head = struct.pack(">4I", pgno, commit, *salt)
        body = fill * page
        s0, s1 = packages._wal_checksum(head[:8], "<", s0, s1)
        s0, s1 = packages._wal_checksum(body, "<", s0, s1)
        wal.extend(head + struct.pack(">2I", s0 ^ corrupt, s1) + body)

    frame(1, 0, b"\2")
    frame(2, 2, b"\3")  # commit: pages 1 and 2
    frame(1, 2, b"\4", corrupt=True)  # torn
    frame(2, 2, b"\5")
    assert packages.apply_wal(db, bytes(wal)) == 1
    assert db == bytearray(b"\2" * page + b"\3" * page)
    assert packages.apply_wal(bytearray(db), b"junk" * 10) is None


def _real_header(tmp_path: Path) -> bytes:
    root = rpm_root(tmp_path)
    uri = f"file:{root}/var/lib/rpm/rpmdb.sqlite?mode=ro&immutable=1"
    with sqlite3.connect(uri, uri=True) as conn:
        return bytes(conn.execute("SELECT blob FROM Packages").fetchone()[0])


def test_rpm_header_parser_refuses_hostile_blobs(tmp_path):
    blob = _real_header(tmp_path)
    header = packages.parse_header(blob)
    assert header[packages.TAG_NAME] == "tinyr"
    il, dl = struct.unpack_from(">II", blob)
    for bad in (b"", b"\0\0\0", struct.pack(">II", 0x10000, 0), struct.pack(">II", 1, 0x7FFFFFFF) + blob[8:],
                blob[: len(blob) // 2], struct.pack(">II", il, dl + 1) + blob[8:]):
        with pytest.raises(ValueError):
            packages.parse_header(bad)
    rng = random.Random(20)
    for _ in range(3000):  # random damage: a ValueError or a (partial) header, never anything else
        damaged = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            parsed = packages.parse_header(bytes(damaged))
        except ValueError:
            continue
        list(packages.header_files(parsed))


# ---- RPM Berkeley DB ----------------------------------------------------------------------------

@pytest.mark.parametrize("page_size", [4096, 65536])  # the header in overflow pages; on the hash page itself
def test_rpm_bdb_hash_database_written_by_libdb(tmp_path, page_size):
    """RHEL 7-8 / Amazon Linux 2 keep headers in a Berkeley DB hash file keyed by header number; libdb's
    db_load writes one from rpm's own header blob, and the reader finds the header in its overflow pages."""
    load = shutil.which("db5.3_load") or shutil.which("db_load")
    need(load is not None, "db_load not installed (Debian package db5.3-util)")
    blob = _real_header(tmp_path)
    root = tmp_path / "broot"
    (root / "var/lib/rpm").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    dump = ["VERSION=3", "format=bytevalue", "type=hash", f"db_pagesize={page_size}", "HEADER=END"]
    dump += [" " + struct.pack("<I", 1).hex(), " " + blob.hex()]
    dump += [" " + struct.pack("<I", 0).hex(), " " + struct.pack("<I", 2).hex(), "DATA=END"]
    subprocess.run([load, str(root / "var/lib/rpm/Packages")], input="\n".join(dump) + "\n", text=True, check=True,
                   capture_output=True)
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert db.kind == "rpm-bdb" and db.packages == 1, problems
    assert db.owners("/usr/bin/tinyr")[0].algo == "sha256"
    assert db.owners("/etc/tinyr.conf")[0].config


def test_empty_dpkg_database_on_an_rpm_host_is_not_used(tmp_path):
    """dpkg installed on an RPM system leaves an empty status file: it must not make every file unowned."""
    root = rpm_root(tmp_path)
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert db.kind == "rpm-sqlite" and db.owners("/usr/bin/tinyr")
    assert any("lists no installed package" in p.message for p in problems)


def test_hostile_databases_are_problems_not_crashes(tmp_path):
    """Junk where the databases should be: each one is a Problem, and ownership stays unknown."""
    root = tmp_path / "junk"
    (root / "var/lib/rpm").mkdir(parents=True)
    (root / "var/lib/rpm/rpmdb.sqlite").write_bytes(b"SQLite format 3\0" + os.urandom(5000))
    (root / "var/lib/rpm/Packages").write_bytes(os.urandom(70000))
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert db.kind == "none" and db.owners("/usr/bin/x") is None
    assert len(problems) == 2 and all("database not read" in p.message for p in problems), problems

    other = tmp_path / "no-table"
    (other / "var/lib/rpm").mkdir(parents=True)
    with sqlite3.connect(other / "var/lib/rpm/rpmdb.sqlite") as conn:
        conn.execute("CREATE TABLE t (x)")
    db, problems = packages.load(_ctx(other), lambda p: True)
    assert db.kind == "none" and any("no such table" in p.message for p in problems), problems


def test_hostile_dpkg_files(tmp_path):
    """Binary junk and relative paths in a .list, an info folder that is a link out of the root: bounded,
    inside the root, and nothing outside it is read."""
    root = dpkg_root(tmp_path, divert=False)
    info = root / "var/lib/dpkg/info"
    (info / "tinyx.list").write_bytes((info / "tinyx.list").read_bytes() + b"\xff\xfe\0junk\nrelative/path\n/../../x\n")
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert db.owners("/usr/bin/tinyxold") and "relative/path" not in db.files and not problems
    shutil.rmtree(info)
    os.symlink("/etc", info)  # resolved inside the root: <root>/etc holds no .list files
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert db.kind == "none" and db.owners("/usr/bin/tinyxold") is None


def test_installed_package_without_list_makes_ownership_unknown(tmp_path):
    root = dpkg_root(tmp_path, divert=False)
    with open(root / "var/lib/dpkg/status", "a") as fh:
        fh.write("\nPackage: ghost\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n")
    db, problems = packages.load(_ctx(root), lambda p: True)
    assert db.owners("/usr/bin/tinyxold") and db.owners("/usr/bin/ghost") is None and not db.complete
    assert any("no file list (first: ghost)" in p.message for p in problems)


def test_dpkg_big_list_costs_only_what_is_kept(tmp_path):
    """A package of 40 000 files (google-cloud-cli's .list is 4 MB) must not become 40 000 strings and digests
    in memory when the caller keeps a few: the database dpkg wrote, its .list and .md5sums grown in their
    documented formats (one path a line; "md5  relative/path")."""
    import tracemalloc

    root = dpkg_root(tmp_path, divert=False)
    info = root / "var/lib/dpkg/info"
    extra = [f"/usr/share/tinyx/data/some/deep/folder/file-number-{i:06d}.py" for i in range(40_000)]
    with open(info / "tinyx.list", "a") as f:
        f.writelines(p + "\n" for p in extra)
    with open(info / "tinyx.md5sums", "a") as f:
        f.writelines(f"{hashlib.md5(p.encode()).hexdigest()}  {p[1:]}\n" for p in extra)
    ctx = _ctx(root)
    fsread.evidence(ctx)  # opened once per root (it reads mountinfo with a 16 MiB buffer): not what is measured
    tracemalloc.start()
    try:
        db, problems = packages.load(ctx, lambda p: "/bin/" in p or "/security/" in p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not problems and db.owners("/usr/bin/tinyxold")[0].digest == _md5(root / "usr/bin/tinyxold")
    assert not any("/share/" in p for p in db.files)
    files = (info / "tinyx.list").stat().st_size + (info / "tinyx.md5sums").stat().st_size
    # the two files read whole, not their lines as objects
    assert peak < 1.5 * files, (peak, files)  # 7.5 MB for 6.2 MB of files; 20.8 MB when every line was kept
