"""Journal files written by systemd's own systemd-journal-remote (compact and regular, with Zstandard
fields), read by collectors/files/journal.py and compared with what journalctl reads from the same
files; hostile files (cut short, garbage, an object claiming the whole disk, a field that inflates to
megabytes) end with a note, never a hang or an exception; and the `logs.journal` artifact under
`collect --root` takes the newest files first within its budgets."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from conftest import need, run_triagent, summary_of

from collectors.files import journal

REMOTE = next((p for p in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote")
               if os.path.exists(p)), None)
REASON = "systemd-journal-remote writes the journal files (apt-get install systemd-journal-remote)"
NOW_US = (int(time.time()) - 3600) * 1_000_000

LINES = [
    ("sshd", 812, "Failed password for invalid user oracle from 203.0.113.50 port 40112 ssh2"),
    ("sshd", 813, "Accepted publickey for admin from 10.0.4.7 port 51022 ssh2: ED25519 SHA256:q4bC1sUuK0"),
    ("sudo", 900, "   admin : TTY=pts/0 ; PWD=/home/admin ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx"),
    ("useradd", 901, "new user: name=backup2, UID=0, GID=0, home=/root, shell=/bin/bash, from=/dev/pts/0"),
    ("systemd", 1, "Stopped rsyslog.service - System Logging Service."),
    ("CRON", 950, "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"),
]


def _export(entries: list[tuple[str, int, str]], start_us: int = NOW_US, host: str = "web-7") -> bytes:
    """systemd's journal export format (docs/JOURNAL_EXPORT_FORMATS.md): what journal-remote reads."""
    out = []
    for number, (ident, pid, message) in enumerate(entries):
        out.append(f"__REALTIME_TIMESTAMP={start_us + number * 1_000_000}\n__MONOTONIC_TIMESTAMP={number}\n"
                   f"_BOOT_ID=4f1e2d3c4b5a69788796a5b4c3d2e1f0\n_HOSTNAME={host}\nSYSLOG_IDENTIFIER={ident}\n"
                   f"_PID={pid}\n_UID=0\nPRIORITY=6\n_TRANSPORT=syslog\nMESSAGE={message}\n\n")
    return "".join(out).encode()


def write_journal(path: Path, entries: list[tuple[str, int, str]], compact: bool = True, **kw) -> Path:
    need(REMOTE is not None, REASON)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = path.parent / (path.name + ".export")
    source.write_bytes(_export(entries, **kw))
    env = dict(os.environ, SYSTEMD_JOURNAL_COMPACT="1" if compact else "0")
    subprocess.run([REMOTE, f"--output={path}", str(source)], check=True, env=env, capture_output=True)
    source.unlink()
    return path


def _journalctl(path: Path) -> list[dict]:
    need(shutil.which("journalctl") is not None, "journalctl is the reference reader")
    out = subprocess.run(["journalctl", "--file", str(path), "-o", "json", "--no-pager"], check=True,
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("compact", [True, False])
def test_entries_match_journalctl(tmp_path, compact):
    long_message = "session opened " + "x" * 3000  # over journald's compression threshold (512 bytes)
    path = write_journal(tmp_path / "system.journal", LINES + [("sshd", 77, long_message)], compact=compact)
    expected = _journalctl(path)
    with journal.opened(str(path)) as reader:
        got = list(reader.entries())
        assert reader.compact is compact
        assert not reader.counts.truncated and reader.counts.undecoded_fields == 0
    assert len(got) == len(expected) == len(LINES) + 1
    for mine, theirs in zip(got, expected, strict=True):
        for name in ("MESSAGE", "SYSLOG_IDENTIFIER", "_PID", "_HOSTNAME", "PRIORITY", "_TRANSPORT"):
            assert mine[name] == theirs[name], name
        assert mine["__REALTIME"] == int(theirs["__REALTIME_TIMESTAMP"])
        assert mine["__BOOT_ID"] == theirs["_BOOT_ID"]
    assert got[-1]["MESSAGE"] == long_message


def test_compressed_field_that_inflates_to_megabytes_is_capped(tmp_path):
    path = write_journal(tmp_path / "bomb.journal", [("sshd", 1, "A" * (8 << 20)), ("sshd", 2, "after")])
    assert path.stat().st_size < 64 << 20
    with journal.opened(str(path), field_cap=4096) as reader:
        got = list(reader.entries())
    assert [len(e["MESSAGE"]) for e in got] == [4096, 5] and reader.counts.capped_fields == 1


def test_file_cut_short_keeps_the_entries_before_the_cut(tmp_path):
    path = write_journal(tmp_path / "cut.journal", LINES * 40)
    with journal.opened(str(path)) as reader:
        offsets = [e["__OFFSET"] for e in reader.entries()]
    cut = tmp_path / "cut-short.journal"
    cut.write_bytes(path.read_bytes()[:offsets[len(offsets) // 2] + 20])  # mid-entry
    with journal.opened(str(cut)) as reader:
        got = list(reader.entries())
        assert reader.counts.truncated
    assert 0 < len(got) <= len(offsets) // 2 + 1


def test_garbage_and_lying_objects(tmp_path):
    garbage = tmp_path / "garbage.journal"
    garbage.write_bytes(os.urandom(65536))
    with pytest.raises(journal.JournalError):
        with journal.opened(str(garbage)) as reader:
            list(reader.entries())
    path = write_journal(tmp_path / "liar.journal", LINES)
    data = bytearray(path.read_bytes())
    header_size = struct.unpack_from("<Q", data, 88)[0]
    struct.pack_into("<Q", data, header_size + 8, 1 << 62)  # the first object claims 4 EiB
    liar = tmp_path / "liar2.journal"
    liar.write_bytes(bytes(data))
    started = time.monotonic()
    with journal.opened(str(liar)) as reader:
        assert list(reader.entries()) == []
        assert reader.counts.truncated and reader.counts.notes
    assert time.monotonic() - started < 5


def test_collect_root_reads_the_newest_journals_first_within_budget(tmp_path):
    root = tmp_path / "root"
    folder = root / "var/log/journal/0123456789abcdef0123456789abcdef"
    old = write_journal(folder / "system@0005f3-old.journal", [("sshd", 5, "Accepted password for olduser from "
                                                                "198.51.100.4 port 2222 ssh2")],
                        start_us=NOW_US - 5 * 86400 * 1_000_000)
    write_journal(folder / "system.journal", LINES)
    os.utime(old, (time.time() - 5 * 86400,) * 2)
    (folder / "user-1000.journal").write_bytes(b"not a journal at all")
    (root / "etc").mkdir()
    out = tmp_path / "out"
    proc = run_triagent(["collect", "--root", str(root), "--output", str(out), "--artifacts", "logs.journal"])
    bundle = summary_of(proc)["bundle"]
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        member = next(n for n in names if n.endswith("journal.jsonl"))
        records = [json.loads(line) for line in tar.extractfile(member).read().splitlines()]
        log = tar.extractfile("triagent/collection.log.jsonl").read().decode()
    messages = [r["message"] for r in records]
    assert messages[:len(LINES)] == [m for _, _, m in LINES]  # newest file first, in its own order
    assert "olduser" in messages[-1]
    first = records[0]
    assert first["program"] == "sshd" and first["pid"] == 812 and first["host"] == "web-7"
    assert first["time_utc"].endswith("Z") and first["path"].endswith("system.journal")
    assert any(n.endswith("system.journal") for n in names)  # whole files copied raw
    assert "not a journal file" in log


def test_copy_budget_keeps_whole_files_only(tmp_path):
    root = tmp_path / "root"
    folder = root / "var/log/journal/0123456789abcdef0123456789abcdef"
    write_journal(folder / "system.journal", LINES)
    old = write_journal(folder / "system@old.journal", LINES)
    os.utime(old, (time.time() - 86400,) * 2)
    from collectors.base import Context, FileCopy, Problem, Record

    size = (folder / "system.journal").stat().st_size
    ctx = Context(artifact="logs.journal", root=str(root), live=False,
                  options={"copy_budget_bytes": size + 1, "programs": ["sshd", "sudo"]})
    items = list(journal.collect(ctx))
    copies = [i for i in items if isinstance(i, FileCopy)]
    for copy in copies:
        copy.close()
    assert [c.path for c in copies] == ["/var/log/journal/0123456789abcdef0123456789abcdef/system.journal"]
    assert copies[0].length == size
    assert any(isinstance(i, Problem) and "copy budget" in i.message for i in items)
    assert {i.data["program"] for i in items if isinstance(i, Record)} == {"sshd", "sudo"}
