"""utmp, wtmp and btmp written by util-linux `utmpdump -r` (the program admins and log wipers use to
edit them), then wiped the way wipers do it: records of type EMPTY, records zeroed in place, a type no
glibc writes, and a partial record at the end. The parser must give back every record as written, keep
the wiped ones as such (never as logins), and collect utmp from a --root like wtmp."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from datetime import datetime
from pathlib import Path

from conftest import jsonl, members, need, run_triagent

from collectors.base import Context, Problem, Record
from collectors.volatile import sessions

SIZE = 384
# (type, pid, id, user, line, host, address, time) as utmpdump prints and reads them
WTMP = [
    (2, 0, "~~", "reboot", "~", "6.1.0-28-amd64", "0.0.0.0", "2026-12-01T10:00:00,000000+00:00"),
    (1, 20019, "~~", "runlevel", "~", "6.1.0-28-amd64", "0.0.0.0", "2026-12-01T10:00:01,000000+00:00"),
    (7, 4242, "ts/0", "alice", "pts/0", "198.51.100.7", "198.51.100.7", "2026-12-01T10:05:00,123456+00:00"),
    (0, 0, "", "", "", "", "0.0.0.0", "1970-01-01T00:00:00,000000+00:00"),  # EMPTY, as utmpdump writes it
    (7, 999, "ts/1", "mallory", "pts/1", "203.0.113.9", "203.0.113.9", "2026-12-01T10:06:00,000000+00:00"),
    (42, 13, "ts/2", "eve", "pts/2", "192.0.2.7", "192.0.2.7", "2026-12-01T10:07:00,000000+00:00"),
    (8, 4242, "ts/0", "", "pts/0", "", "0.0.0.0", "2026-12-01T11:05:00,654321+00:00"),
]
WIPED = 4  # mallory's login, zeroed in place afterwards
PARTIAL = 100  # bytes of one more record left at the end


def _utmpdump(rows: list[tuple], path: Path) -> None:
    need(shutil.which("utmpdump") is not None, "util-linux utmpdump is not installed (tests/run.sh installs it)")
    text = "".join(f"[{t}] [{pid:05d}] [{ut_id:<4.4}] [{user:<8}] [{line:<12}] [{host:<20}] [{addr:<15}] [{when}]\n"
                   for t, pid, ut_id, user, line, host, addr, when in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        subprocess.run(["utmpdump", "-r"], input=text.encode(), stdout=out, stderr=subprocess.DEVNULL, check=True)
    assert path.stat().st_size == SIZE * len(rows)


def _wiped_wtmp(path: Path) -> None:
    _utmpdump(WTMP, path)
    with open(path, "r+b") as f:  # what wtmp cleaners do: the record's bytes overwritten with zeros
        f.seek(WIPED * SIZE)
        f.write(b"\0" * SIZE)
    extra = path.with_suffix(".extra")
    _utmpdump(WTMP[2:3], extra)
    with open(path, "ab") as f:
        f.write(extra.read_bytes()[:PARTIAL])
    extra.unlink()


def _run(fn, root: Path, **options) -> tuple[dict[str, list[dict]], list[Problem]]:
    streams: dict[str, list[dict]] = {}
    problems = []
    for item in fn(Context(root=str(root), live=False, options=options)):
        if isinstance(item, Record):
            streams.setdefault(item.stream, []).append(item.data)
        elif isinstance(item, Problem):
            problems.append(item)
    return streams, problems


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace(",", ".").replace("Z", "+00:00"))


def test_wiped_wtmp_written_by_utmpdump(tmp_path):
    _wiped_wtmp(tmp_path / "var/log/wtmp")
    _utmpdump([(6, 777, "", "admin", "ssh:notty", "203.0.113.50", "203.0.113.50",
                "2026-12-01T10:04:00,000000+00:00")], tmp_path / "var/log/btmp")
    streams, problems = _run(sessions.login_records, tmp_path, wtmp=["/var/log/wtmp"], btmp=["/var/log/btmp"],
                             lastlog=[])
    wtmp = {r["index"]: r for r in streams["wtmp"]}
    # every real record as written, at its index and offset
    for index in (0, 1, 2, 6):
        t, pid, _, user, line, host, addr, when = WTMP[index]
        r = wtmp[index]
        assert (r["type"], r["pid"], r["user"], r["line"], r["host"], _moment(r["time_utc"]), r["offset"]) == \
            (sessions.UT_TYPES[t], pid, user, line, host, _moment(when), index * SIZE), r
        assert r["address"] == (None if addr == "0.0.0.0" else addr)
    # the type no glibc writes: corrupt, its raw type, nothing presented as a login
    corrupt = wtmp[5]
    assert corrupt["corrupt"] is True and corrupt["raw_type"] == 42 and corrupt["type"] is None
    assert "user" not in corrupt and "time_utc" not in corrupt and corrupt["decoded"]["user"] == "eve"
    # EMPTY and zeroed records are kept, apart from the logins
    assert set(wtmp) == {0, 1, 2, 5, 6}
    assert not any(r.get("type") == "EMPTY" or r.get("zeroed") for r in streams["wtmp"])
    empty = {r["index"]: r for r in streams["wtmp_empty"]}
    assert set(empty) == {3, WIPED}
    assert all(r["type"] == "EMPTY" and r["zeroed"] is True and r["offset"] == r["index"] * SIZE
               and r["source"] == "/var/log/wtmp" for r in empty.values())
    assert "residue" not in empty[WIPED]  # all zero bytes
    assert not any(r.get("user") for r in empty.values())
    # the partial record: a warning that names its size
    trailing = [p for p in problems if "trailing" in p.message]
    assert len(trailing) == 1 and trailing[0].level == "warning" and f"{PARTIAL} trailing bytes" in trailing[0].message
    assert [(r["user"], r["host"], r["type"]) for r in streams["btmp"]] == [("admin", "203.0.113.50",
                                                                              "LOGIN_PROCESS")]


def test_utmp_from_root_and_the_tampering_check_downstream(tmp_path):
    """`collect --root` reads the image's /run/utmp (reached as /var/run/utmp through its link); the
    wiped wtmp still gives the tampering finding (TRI-EVADE-008 reads the gap in the wtmp indexes)."""
    root = tmp_path / "root"
    _utmpdump([WTMP[0], (6, 610, "tty1", "LOGIN", "tty1", "", "0.0.0.0", "2026-12-01T10:00:05,000000+00:00"),
               WTMP[2]], root / "run/utmp")
    (root / "var").mkdir()
    os.symlink("/run", root / "var/run")
    _wiped_wtmp(root / "var/log/wtmp")
    out = tmp_path / "out"
    out.mkdir()
    proc = run_triagent(["collect", "--root", str(root), "--artifacts", "sessions,logins", "--output", str(out)])
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    bundle = next(p for p in out.iterdir() if p.name.endswith((".tar.gz", ".tar")))
    m = members(bundle)
    utmp = jsonl(m, "sessions")
    assert [(r["type"], r["user"], r["line"]) for r in utmp] == [
        ("BOOT_TIME", "reboot", "~"), ("LOGIN_PROCESS", "LOGIN", "tty1"), ("USER_PROCESS", "alice", "pts/0")]
    assert utmp[2]["address"] == "198.51.100.7" and utmp[2]["source"] == "/run/utmp"
    assert [r["index"] for r in jsonl(m, "wtmp_empty")] == [3, WIPED]
    from agent.analysis.findings import _login_log_tampering
    with tarfile.open(bundle) as tar:
        found = [f.data["summary"] for f in _login_log_tampering(tar)]
    assert any("2 zeroed record(s) between records 2 and 5" in s for s in found), found
