"""Logs parsed into records the rules read: authentication and system events (``auth``), web server
requests (``web_access``) and web server errors (``web_errors``).

Sources (newest first, each family within a byte budget of decoded text):

- auth: ``/var/log/auth.log`` (Debian, Ubuntu), ``/var/log/secure`` (RHEL, Amazon Linux) and their
  rotations (``auth.log.1``, ``auth.log.2.gz``, ``secure-20241201``...): sshd, sudo, su, account
  changes (shadow-utils), PAM sessions.
- system: ``/var/log/syslog``, ``/var/log/messages`` and their rotations: only what the logging daemons
  say about themselves (rsyslogd, journald, auditd started or stopped, audit disabled) and boots and
  shutdowns, which decide whether a stop was a reboot or someone silencing the logs.
- web: nginx, apache and tomcat access logs (combined or common format).
- web errors (``web_errors``): nginx and apache (2.2, 2.4) error logs, PHP's error_log and PHP-FPM's log,
  tomcat's catalina/localhost logs (JUL one-line format, a stack trace kept with its entry, bounded), all
  files newest first within one byte budget; a ``scan_client`` record per client refused many distinct
  script names.

Each log line is one record ``kind: event`` (or ``kind: request``); lines of no known event are counted,
not kept. Each file read gives a ``kind: log_file`` record (size, mtime, first and last event, lines,
events) and each family a ``kind: log_family`` record that compares it with the other logs and with
wtmp, so that a rule can see an auth log emptied or cut while the rest of the host kept its history.
A host with no text log at all (journald only) gives the same events from its journal files.

Events (``event``): ssh_failed (``reason`` password, publickey, keyboard-interactive/pam, invalid_user,
max_attempts, pam), ssh_accepted (``method``, ``key_type``, ``fingerprint``, ``key_private_logins``,
``key_public_logins``), ssh_disconnect, sudo / sudo_failed (``user``, ``run_as``, ``command``, ``tty``,
``pwd``, ``reason``), su / su_failed, session_opened / session_closed (``service``, ``by_user``),
auth_failed, user_added (``uid``, ``gid``, ``home``, ``shell``, ``from_tty``), group_added,
user_modified (``change``: group, UID, shell...), password_changed, user_deleted (all five with
``origin``: interactive, cloud-init, package, system, unknown), logging_stopped (``daemon``,
``context``: shutdown, restart, stopped; ``restarted_after_s``), logging_started, audit_disabled, boot,
shutdown. Every event has ``time_utc``, ``host``, ``program``, ``pid``, ``message``, ``path``, ``line``,
``offset`` and, for addresses, ``source_ip`` (or ``source_host``), ``source_port``, ``source_is_public``.

Times: traditional syslog lines (``Mmm dd hh:mm:ss``) are in the host's local time and have no year.
The zone comes from the host's ``/etc/localtime`` (read as a TZif file, never from our own machine);
the year from the file's mtime, a year earlier for a month later than the mtime's (``year_inferred``).
RFC 3339 lines carry both.

Hostile input: every file is read through fsread (confined to the evidence root, secret files
withheld); plain files keep their newest bytes up to a cap, gzip files are decompressed in bounded steps
so a bomb stops at the budget; lines, records, per-path tables are all capped.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import functools
import io
import ipaddress
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import lstat, open_regular, read_capped, walk_glob
from collectors.util import text, utc

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

AUTH_LOGS = ["/var/log/auth.log", "/var/log/secure"]
SYSTEM_LOGS = ["/var/log/syslog", "/var/log/messages"]
WEB_LOGS = ["/var/log/nginx/*access*", "/var/log/apache2/*access*", "/var/log/httpd/*access*"]

DEFAULTS: dict[str, Any] = {
    "max_bytes": 64 << 20,  # decoded text per family, newest files first
    "max_file_bytes": 32 << 20,  # the newest part of one plain file
    "max_compressed_bytes": 16 << 20,  # what is read of one .gz file
    "max_files": 64,  # per family
    "max_records": 200_000,  # per stream
    "max_line_chars": 8192,
    "max_message_chars": 1024,
    "max_web_paths": 50_000,  # script paths tracked for the web-shell summary
}

# ---- time -------------------------------------------------------------------------------------

TRADITIONAL = re.compile(r"(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(?P<day>\d{1,2}) "
                         r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)(?:\.\d+)? ")
RFC3339 = re.compile(r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?P<frac>\.\d{1,9})?(?P<tz>Z|[+-]\d\d:?\d\d) ")
# host, then tag: program, optional [pid], colon (rsyslog's default templates)
TAG = re.compile(r"(?P<host>\S{1,255}) (?P<prog>[^\s\[\]:]{1,64})(?:\[(?P<pid>\d{1,10})\])?: ?(?P<msg>.*)", re.S)


@dataclass
class Clock:
    """Turns a log line's timestamp into UTC, the host's way."""

    zone: _dt.tzinfo
    zone_source: str  # where the zone came from, or "assumed UTC"

    def __post_init__(self) -> None:
        # the zone's offset per local hour and each file's reference month, computed once: the host's
        # zone is read by zoneinfo's pure-Python code, too slow to ask for every line of a big log
        self._offsets: dict[tuple[int, int, int, int], _dt.timedelta | None] = {}
        self._refs: dict[float, tuple[int, int] | None] = {}

    def traditional(self, m: re.Match[str], mtime: float) -> _dt.datetime | None:
        month = MONTHS[m["mon"]]
        ref = self._refs.get(mtime, ...)
        if ref is ...:
            try:
                moment = _dt.datetime.fromtimestamp(mtime, self.zone)
                ref = self._refs[mtime] = (moment.year, moment.month)
            except (ValueError, OverflowError, OSError, IndexError):  # an mtime of 2**62
                ref = self._refs[mtime] = None
        if ref is None:
            return None
        # syslog has no year: the file was last written in the mtime's year; a month after the mtime's
        # month can only be from the year before (December lines in a file closed in January).
        year = ref[0] - 1 if month > ref[1] else ref[0]
        return self.local(year, month, int(m["day"]), int(m["h"]), int(m["m"]), int(m["s"]))

    def local(self, year: int, month: int, day: int, hour: int, minute: int, second: int,
              micro: int = 0) -> _dt.datetime | None:
        """A wall-clock time of the host's zone in UTC (nginx, apache, tomcat and php-fpm write local
        times with a year but no zone); None for an impossible date."""
        try:
            naive = _dt.datetime(year, month, day, hour, minute, second, micro)
        except ValueError:  # Feb 29 of a non-leap year, hour 25
            return None
        key = (year, month, naive.day, naive.hour)
        offset = self._offsets.get(key, ...)
        if offset is ...:
            try:
                offset = naive.replace(minute=30, second=0, tzinfo=self.zone).utcoffset()
            except (ValueError, OverflowError, OSError, IndexError):
                offset = None
            if len(self._offsets) < 100_000:
                self._offsets[key] = offset
        if offset is None:
            return None
        return (naive - offset).replace(tzinfo=_dt.UTC)

    @staticmethod
    def rfc3339(m: re.Match[str]) -> _dt.datetime | None:
        frac = (m["frac"] or "")[:7]  # fromisoformat takes microseconds at most
        tz = "+00:00" if m["tz"] == "Z" else m["tz"]
        try:
            return _dt.datetime.fromisoformat(m["ts"] + frac + tz).astimezone(_dt.UTC)
        except ValueError:
            return None


class _StrictTZif(io.BytesIO):
    """TZif bytes for zoneinfo, where reading past the end is an error: CPython's loader reads the footer a
    byte at a time until a newline and loops for ever on a file without one."""

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if size and not data:
            raise ValueError("TZif data ends early")
        return data


def zone_from_tzif(data: bytes, key: str) -> _dt.tzinfo:
    """A zone from the host's TZif bytes, or ValueError. The host's /etc/localtime is hostile input: it is
    loaded by zoneinfo's pure-Python implementation (the C one crashes the process on some crafted files)
    from a reader that cannot loop, then exercised over 1970-2040 so a zone that breaks later is refused."""
    from zoneinfo._zoneinfo import ZoneInfo as PyZoneInfo

    if len(data) > 1 << 18 or data[:4] != b"TZif":
        raise ValueError("not a TZif file")
    try:
        zone = PyZoneInfo.from_file(_StrictTZif(data), key=key)
        for year in range(1970, 2041, 5):
            for month in (1, 4, 7, 10):
                _dt.datetime(year, month, 15, 12, tzinfo=zone).astimezone(_dt.UTC)
                _dt.datetime.fromtimestamp(_dt.datetime(year, month, 15, tzinfo=_dt.UTC).timestamp(), zone)
    except Exception as exc:  # a crafted file breaks the loader in undocumented ways (IndexError, struct.error...)
        raise ValueError(f"unusable TZif data: {type(exc).__name__}: {exc}") from None
    return zone


def host_clock(ctx: Context) -> tuple[Clock, list[Problem]]:
    """The host's zone from its own /etc/localtime (TZif), else /etc/timezone's name looked up in the
    host's zoneinfo; UTC (said so) when neither can be read."""
    problems: list[Problem] = []
    try:
        data, _, _ = read_capped(ctx, "/etc/localtime", 1 << 18)
        return Clock(zone_from_tzif(data, "localtime"), "/etc/localtime"), problems
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        problems.append(Problem(f"host time zone /etc/localtime unusable: {exc}", path="/etc/localtime",
                                level="warning"))
    try:
        name = text(read_capped(ctx, "/etc/timezone", 256)[0]).strip()
        if re.fullmatch(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*", name):
            data, _, _ = read_capped(ctx, f"/usr/share/zoneinfo/{name}", 1 << 18)
            return Clock(zone_from_tzif(data, name), f"/etc/timezone ({name})"), problems
    except (OSError, ValueError):
        pass
    problems.append(Problem("host time zone unknown: syslog times without a zone are read as UTC",
                            level="info"))
    return Clock(_dt.UTC, "assumed UTC"), problems


def _iso(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")


def _seconds(iso: str | None) -> float | None:
    if not iso:
        return None
    return _dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@functools.lru_cache(maxsize=65536)  # guessing bots come back from the same few thousand addresses
def is_public(address: str | None) -> bool | None:
    """True for a globally routable address, False for private, loopback, link-local, CGNAT...;
    None when the text is not an address (sshd logs a host name under UseDNS)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global


# ---- reading files within a budget -------------------------------------------------------------

ROTATED = re.compile(r"^(?:\.(?P<num>\d{1,4})|-(?P<date>\d{8})(?:\d{2})?)(?P<gz>\.gz)?$")


def rotations(ctx: Context, base: str) -> tuple[list[str], list[Problem]]:
    """``base`` and its rotations, newest first: base, base.1, base.2.gz, ... then base-YYYYMMDD, newest
    date first. Other names beside it (backups, .xz) are not read."""
    found: list[tuple[tuple[int, int], str]] = []
    problems: list[Problem] = []
    name = os.path.basename(base)
    for hit in walk_glob(ctx, glob_escape(base) + "*"):
        if isinstance(hit, Problem):
            problems.append(hit)
            continue
        tail = os.path.basename(hit)[len(name):] if os.path.basename(hit).startswith(name) else None
        if tail == "":
            found.append(((0, 0), hit))
        elif tail is not None and (m := ROTATED.match(tail)):
            found.append(((1, int(m["num"])) if m["num"] else (2, -int(m["date"])), hit))
    return [path for _, path in sorted(found)], problems


def glob_escape(path: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", path)


@dataclass
class Budget:
    remaining: int
    reached: bool = False

    def take(self, n: int) -> None:
        self.remaining -= n
        if self.remaining <= 0:
            self.reached = True


@dataclass
class Text:
    path: str
    data: bytes | bytearray
    size: int
    mtime: float
    compressed: bool
    truncated: bool  # older part not read (plain file over its cap, or budget)
    cut_at_start: bool  # the first line may be partial: skip it


def read_log(ctx: Context, path: str, budget: Budget) -> Text | Problem | None:
    """The newest ``budget`` bytes of a log (decompressed for .gz, in bounded steps)."""
    cap_plain = min(int(ctx.opt("max_file_bytes", DEFAULTS["max_file_bytes"])), budget.remaining)
    if cap_plain <= 0:
        budget.reached = True
        return None
    gz = path.endswith(".gz")
    try:
        cap = int(ctx.opt("max_compressed_bytes", DEFAULTS["max_compressed_bytes"])) if gz else cap_plain
        raw, st, truncated = read_capped(ctx, path, cap, keep="head" if gz else "tail")
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Problem.from_os_error(exc, "cannot read log", path)
    if not gz:
        budget.take(len(raw))
        return Text(path, raw, st.st_size, st.st_mtime, False, truncated, truncated)
    data, complete, error = gunzip_bounded(raw, cap_plain)
    budget.take(len(data))
    text_ = Text(path, data, st.st_size, st.st_mtime, True, truncated or not complete, False)
    if error:
        return _with_problem(text_, Problem(f"gzip stream damaged after {len(data)} bytes: {error}", path=path,
                                            level="warning"))
    return text_


def _with_problem(t: Text, p: Problem) -> Text:
    t.problem = p  # type: ignore[attr-defined]
    return t


def gunzip_bounded(raw: bytes, limit: int, step: int = 1 << 20) -> tuple[bytes | bytearray, bool, str | None]:
    """Decompress gzip members (concatenated ones too) to at most ``limit`` bytes. Returns (data, whole
    stream decoded, error). Output grows by ``step`` at a time, so a bomb costs ``limit`` bytes, no more."""
    out = bytearray()
    rest = raw
    try:
        while rest:
            engine = zlib.decompressobj(wbits=31)
            buf = rest
            while buf or not engine.eof:
                if len(out) >= limit:
                    del out[limit:]
                    return out, False, None
                chunk = engine.decompress(buf, min(step, limit - len(out)))
                out += chunk
                buf = engine.unconsumed_tail
                if engine.eof or (not buf and not chunk):
                    break
            if not engine.eof:
                return out, False, "truncated gzip stream"
            rest = engine.unused_data.lstrip(b"\0")  # gzip members may be followed by padding
    except zlib.error as exc:
        return out, False, str(exc)
    return out, True, None  # the bytearray itself: no second copy of up to max_file_bytes


def lines_of(t: Text, max_chars: int) -> Iterator[tuple[int, int, str]]:
    """(line number within what was read, byte offset in the file or decoded stream, text)."""
    data = t.data
    base = t.size - len(data) if not t.compressed and t.truncated else 0
    pos, number = 0, 0
    if t.cut_at_start:  # a tail window starts mid-line
        nl = data.find(b"\n")
        pos = len(data) if nl < 0 else nl + 1
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        number += 1
        raw = data[pos:min(end, pos + max_chars)]
        yield number, base + pos, text(raw.rstrip(b"\r"))
        pos = end + 1


# ---- auth and system events -----------------------------------------------------------------

SSH_ACCEPTED = re.compile(r"Accepted (?P<method>[\w/-]+) for (?P<user>.*?) from (?P<ip>\S+) port (?P<port>\d+)"
                          r"(?: ssh2)?(?:: (?P<key_type>[A-Z0-9-]+) "
                          r"(?P<fp>SHA256:[A-Za-z0-9+/=]+|(?:MD5:)?[0-9a-f:]{47}))?")
SSH_FAILED = re.compile(r"Failed (?P<method>[\w/-]+) for (?P<invalid>invalid user )?(?P<user>.*?) from (?P<ip>\S+) "
                        r"port (?P<port>\d+)(?: ssh2)?(?:: (?P<key_type>[A-Z0-9-]+) (?P<fp>SHA256:[A-Za-z0-9+/=]+))?")
SSH_INVALID = re.compile(r"(?:Invalid|Illegal) user (?P<user>.*?) from (?P<ip>\S+)(?: port (?P<port>\d+))?\s*$")
SSH_MAXAUTH = re.compile(r"(?:error: )?maximum authentication attempts exceeded for (?P<invalid>invalid user )?"
                         r"(?P<user>.*?) from (?P<ip>\S+) port (?P<port>\d+)")
SSH_PAM_FAIL = re.compile(r"error: PAM: Authentication failure for (?P<invalid>illegal user )?(?P<user>.*?) from "
                          r"(?P<ip>\S+)")
SSH_DISCONNECT = re.compile(r"(?:Disconnected from|Connection closed by|Received disconnect from)"
                            r"(?: (?P<state>invalid user|authenticating user|user) (?P<user>\S*))?"
                            r" (?P<ip>[0-9A-Fa-f.:]+) port (?P<port>\d+)(?P<rest>.*)")
PAM = re.compile(r"pam_unix\((?P<service>[\w.-]+):(?P<type>\w+)\): (?P<what>.*)")
PAM_SESSION = re.compile(r"session (?P<state>opened|closed) for user (?P<user>[^\s(]+)(?:\(uid=\d+\))?"
                         r"(?: by (?P<by>[^\s(]*)(?:\(uid=(?P<by_uid>\d+)\))?)?")
PAM_AUTHFAIL = re.compile(r"authentication failure;(?P<kv>.*)")
PAM_PASSWORD = re.compile(r"password changed for (?P<user>\S+)")
SUDO = re.compile(r"^\s*(?P<user>\S+) : (?P<rest>.*)$")
SU_TO = re.compile(r"^(?P<failed>FAILED SU |FAILED su )?\(to (?P<run_as>[^)]+)\) (?P<user>\S+) on (?P<tty>\S+)")
SU_PLUS = re.compile(r"^(?P<sign>[+-]) (?P<tty>\S+) (?P<user>[^:\s]+):(?P<run_as>\S+)")  # busybox/old su
NEW_USER = re.compile(r"new user: name=(?P<user>[^,]+), UID=(?P<uid>-?\d+), GID=(?P<gid>-?\d+), home=(?P<home>[^,]*), "
                      r"shell=(?P<shell>[^,]*)(?:, from=(?P<from>\S+))?")
# groupadd says "group added to /etc/group", "... /etc/gshadow", then "new group": the last one stands for all
NEW_GROUP = re.compile(r"new group: name=(?P<group>[^,]+), GID=(?P<gid>-?\d+)")
ADD_TO_GROUP = re.compile(r"add '(?P<user>[^']+)' to (?P<shadow>shadow )?group '(?P<group>[^']+)'")
USERMOD = re.compile(r"change user '(?P<user>[^']+)' (?P<attr>UID|GID|shell|home|password|name|expiration|"
                     r"inactive period|comment)(?: from '(?P<old>[^']*)' to '(?P<new>[^']*)')?")
USERMOD_LOCK = re.compile(r"(?P<what>lock|unlock) user '(?P<user>[^']+)' password")
PASSWD_BY = re.compile(r"password for '(?P<user>[^']+)' changed by '(?P<by>[^']+)'")
USERDEL = re.compile(r"delete user '(?P<user>[^']+)'\s*$")
RSYSLOG = re.compile(r"\[origin software=\"rsyslogd\"[^\]]*\] (?P<what>.*)")
UNIT_LOGGING = re.compile(r"(?P<verb>Stopping|Stopped|Starting|Started) (?:(?P<unit>[\w@.-]+\.service) - )?"
                          r"(?P<name>System Logging Service|Journal Service|Security Auditing Service|"
                          r"System Logger Daemon|Kernel Logging Service)")
SHUTDOWN = re.compile(r"Reached target (?:[\w.-]+ - )?(?:System )?(?:Shutdown|Reboot|Power-Off|Halt|Final Step|"
                      r"Late Shutdown Services)|Stopped target (?:[\w.-]+ - )?Multi-User System|"
                      r"System is (?:rebooting|powering down|powering off|halting|going down)|"
                      r"shutting down for system|systemd-shutdown|Received SIGTERM from PID 1|Power key pressed|"
                      r"The system is going down")
BOOT = re.compile(r"^(?:\[\s*\d+\.\d+\] )?(?:Linux version \d|Command line: |Booting Linux on physical CPU)")
AUDIT_OFF = re.compile(r"audit: type=1305 .*\bop=set audit_enabled=0 old=1")
REPEATED = re.compile(r"message repeated (?P<n>\d+) times: \[ ?(?P<msg>.*)\]$", re.S)

SYSTEM_EVENTS = {"logging_stopped", "logging_started", "boot", "shutdown", "audit_disabled"}
# cheap substrings before any regex, for the big system logs
SYSTEM_HINTS = ("rsyslogd", "Logging", "Logger", "Journal", "ournal", "udit", "Linux version", "Command line",
                "Booting Linux", "Reached target", "Stopped target", "System is", "shutting down", "shutdown",
                "SIGTERM", "Power key", "going down")
SYSTEM_HINT = re.compile("|".join(re.escape(h) for h in SYSTEM_HINTS))


def _ip_fields(ip: str | None, port: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ip:
        public = is_public(ip)
        if public is None:
            out["source_host"] = ip
        else:
            out["source_ip"] = ip
        out["source_is_public"] = public
    if port:
        out["source_port"] = int(port)
    return out


def _kv(text_: str) -> dict[str, str]:
    return {k: v for k, v in re.findall(r"(\w+)=(\S*)", text_)}


def classify(program: str, msg: str) -> dict[str, Any] | None:
    """The event a log message is, with its fields; None for a message of no known event."""
    prog = program.lower()
    if prog.startswith("sshd"):  # sshd, sshd-session (OpenSSH 9.8+)
        if m := SSH_ACCEPTED.search(msg):
            return {"event": "ssh_accepted", "method": m["method"], "user": m["user"],
                    **_ip_fields(m["ip"], m["port"]),
                    **({"key_type": m["key_type"], "fingerprint": m["fp"]} if m["fp"] else {})}
        if m := SSH_FAILED.search(msg):
            return {"event": "ssh_failed", "reason": m["method"], "user": m["user"], "invalid_user": bool(m["invalid"]),
                    **_ip_fields(m["ip"], m["port"]),
                    **({"key_type": m["key_type"], "fingerprint": m["fp"]} if m["fp"] else {})}
        if m := SSH_INVALID.search(msg):
            return {"event": "ssh_failed", "reason": "invalid_user", "user": m["user"], "invalid_user": True,
                    **_ip_fields(m["ip"], m["port"])}
        if m := SSH_MAXAUTH.search(msg):
            return {"event": "ssh_failed", "reason": "max_attempts", "user": m["user"],
                    "invalid_user": bool(m["invalid"]), **_ip_fields(m["ip"], m["port"])}
        if m := SSH_PAM_FAIL.search(msg):
            return {"event": "ssh_failed", "reason": "pam", "user": m["user"], "invalid_user": bool(m["invalid"]),
                    **_ip_fields(m["ip"], None)}
        if m := SSH_DISCONNECT.search(msg):
            return {"event": "ssh_disconnect", "user": m["user"] or None, "preauth": "[preauth]" in (m["rest"] or ""),
                    "auth_state": m["state"], **_ip_fields(m["ip"], m["port"])}
    if m := PAM.search(msg):
        return _pam(m["service"], m["type"], m["what"], prog)
    if prog == "sudo":
        return _sudo(msg)
    if prog == "su":
        if m := SU_TO.match(msg):
            return {"event": "su_failed" if m["failed"] else "su", "user": m["user"], "run_as": m["run_as"],
                    "tty": m["tty"]}
        if m := SU_PLUS.match(msg):
            return {"event": "su" if m["sign"] == "+" else "su_failed", "user": m["user"], "run_as": m["run_as"],
                    "tty": m["tty"]}
    if prog in ("useradd", "adduser", "groupadd", "usermod", "userdel", "passwd", "chpasswd", "chage", "gpasswd",
                "newusers", "groupmod", "chsh", "vipw"):
        return _account(prog, msg)
    return _system(prog, msg)


def _pam(service: str, kind: str, what: str, prog: str) -> dict[str, Any] | None:
    base = {"service": service}
    if kind == "session" and (m := PAM_SESSION.search(what)):
        out = {"event": f"session_{m['state']}", "user": m["user"], **base}
        if m["by"]:
            out["by_user"] = m["by"]
        elif m["by_uid"] is not None:
            out["by_uid"] = int(m["by_uid"])
        if service in ("su", "su-l") and m["by"]:  # su's own session line names who became whom
            out["run_as"] = m["user"]
        return out
    if kind == "auth" and (m := PAM_AUTHFAIL.search(what)):
        kv = _kv(m["kv"])
        rhost = kv.get("rhost") or None
        user = kv.get("user") or None
        if service.startswith("sshd"):
            return {"event": "ssh_failed", "reason": "pam", "user": user, **_ip_fields(rhost, None), **base}
        if service.startswith("su"):
            return {"event": "su_failed", "user": kv.get("ruser") or kv.get("logname"), "run_as": user, **base}
        if service == "sudo":
            return {"event": "sudo_failed", "user": kv.get("ruser") or kv.get("logname") or user,
                    "reason": "authentication failure", **base}
        return {"event": "auth_failed", "user": user, **_ip_fields(rhost, None), **base}
    if kind == "chauthtok" and (m := PAM_PASSWORD.search(what)):
        return {"event": "password_changed", "user": m["user"], **base, "by_program": prog}
    return None


def _sudo(msg: str) -> dict[str, Any] | None:
    m = SUDO.match(msg)
    if not m:
        return None
    rest = m["rest"]
    command = None
    if "COMMAND=" in rest:  # the command is last and may itself hold " ; "
        rest, _, command = rest.partition("COMMAND=")
    parts = [p.strip() for p in rest.split(" ; ") if p.strip()]
    fields = dict(p.split("=", 1) for p in parts if re.match(r"^[A-Z]+=", p))
    problems = [p for p in parts if not re.match(r"^[A-Z]+=", p)]
    out: dict[str, Any] = {"user": m["user"], "run_as": fields.get("USER"), "tty": fields.get("TTY"),
                           "pwd": fields.get("PWD"), "command": command.strip() if command else None}
    if problems:
        out["event"] = "sudo_failed"
        out["reason"] = "; ".join(problems)
    elif command is not None:
        out["event"] = "sudo"
    else:
        return None
    return out


def _account(prog: str, msg: str) -> dict[str, Any] | None:
    if m := NEW_USER.search(msg):
        source = m["from"]
        return {"event": "user_added", "user": m["user"], "uid": int(m["uid"]), "gid": int(m["gid"]),
                "home": m["home"], "shell": m["shell"], "from_tty": source if source and source != "none" else None}
    if m := NEW_GROUP.search(msg):
        return {"event": "group_added", "group": m["group"], "gid": int(m["gid"])}
    if m := ADD_TO_GROUP.search(msg):
        if m["shadow"]:  # the same change told twice (/etc/group then /etc/gshadow): keep one
            return None
        return {"event": "user_modified", "change": "group", "user": m["user"], "group": m["group"]}
    if m := USERMOD.search(msg):
        out = {"event": "password_changed" if m["attr"] == "password" else "user_modified", "change": m["attr"],
               "user": m["user"], "old": m["old"], "new": m["new"], "by_program": prog}
        if m["attr"] == "UID" and m["new"] is not None and m["new"].lstrip("-").isdigit():
            out["uid"] = int(m["new"])
        return out
    if m := USERMOD_LOCK.search(msg):
        return {"event": "user_modified", "change": m["what"], "user": m["user"]}
    if m := PASSWD_BY.search(msg):
        return {"event": "password_changed", "user": m["user"], "by_user": m["by"], "by_program": prog}
    if m := USERDEL.search(msg):
        return {"event": "user_deleted", "user": m["user"]}
    return None


def _system(prog: str, msg: str) -> dict[str, Any] | None:
    if prog == "rsyslogd" and (m := RSYSLOG.search(msg)):
        what = m["what"]
        if what.startswith("exiting"):
            return {"event": "logging_stopped", "daemon": "rsyslogd", "detail": what[:200]}
        if what.strip() == "start":
            return {"event": "logging_started", "daemon": "rsyslogd"}
        return None
    if prog.startswith("systemd-journal"):
        if "Journal stopped" in msg:
            return {"event": "logging_stopped", "daemon": "systemd-journald"}
        if "Journal started" in msg:
            return {"event": "logging_started", "daemon": "systemd-journald"}
        if "Received SIGTERM from PID 1" in msg:
            return {"event": "shutdown", "detail": msg[:200]}
    if prog == "auditd":
        if "The audit daemon is exiting" in msg:
            return {"event": "logging_stopped", "daemon": "auditd"}
        if "listening for events" in msg:
            return {"event": "logging_started", "daemon": "auditd"}
    if prog == "systemd" and (m := UNIT_LOGGING.search(msg)):
        daemon = {"System Logging Service": "rsyslogd", "Journal Service": "systemd-journald",
                  "Security Auditing Service": "auditd"}.get(m["name"], m["unit"] or m["name"])
        started = m["verb"].startswith("Start")
        return {"event": "logging_started" if started else "logging_stopped", "daemon": daemon, "via": "systemd",
                "detail": msg[:200]}
    if prog == "kernel":
        if BOOT.search(msg):
            return {"event": "boot", "detail": msg[:200]}
        if AUDIT_OFF.search(msg):
            return {"event": "audit_disabled", "detail": msg[:300], **({"auid": kv["auid"]} if (kv := _kv(msg))
                                                                         .get("auid") else {})}
    if SHUTDOWN.search(msg) and prog in ("systemd", "systemd-logind", "shutdown", "systemd-shutdown", "init",
                                         "systemd-journald", "kernel"):
        return {"event": "shutdown", "detail": msg[:200]}
    return None


@dataclass
class FileStats:
    path: str
    family: str
    size: int
    mtime: float
    compressed: bool
    truncated: bool
    lines: int = 0
    events: int = 0
    unknown: int = 0
    unparsed: int = 0  # lines with no syslog header at all
    first: _dt.datetime | None = None
    last: _dt.datetime | None = None
    year_inferred: bool = False
    orphans: list[str] = field(default_factory=list)  # sshd sessions whose "Accepted" line is missing
    orphan_count: int = 0  # how many (the list keeps samples once summarised)

    def record(self) -> dict[str, Any]:
        return {"kind": "log_file", "family": self.family, "path": self.path, "size": self.size,
                "mtime_utc": utc(self.mtime), "compressed": self.compressed, "truncated": self.truncated,
                "lines": self.lines, "events": self.events, "unknown_lines": self.unknown,
                "unparsed_lines": self.unparsed,
                "first_event_utc": _iso(self.first) if self.first else None,
                "last_event_utc": _iso(self.last) if self.last else None,
                "span_s": round((self.last - self.first).total_seconds()) if self.first and self.last else None,
                "year_inferred": self.year_inferred, "empty": self.size == 0,
                **({"sessions_without_login": len(self.orphans), "sessions_without_login_sample": self.orphans[:5]}
                   if self.family == "auth" else {})}


def parse_syslog_line(line: str, clock: Clock, mtime: float) -> tuple[_dt.datetime | None, bool, str, str,
                                                                      int | None, str] | None:
    """(UTC time, year inferred, host, program, pid, message) of a syslog line, None when it is not one."""
    if m := TRADITIONAL.match(line):
        moment, inferred, rest = clock.traditional(m, mtime), True, line[m.end():]
    elif m := RFC3339.match(line):
        moment, inferred, rest = Clock.rfc3339(m), False, line[m.end():]
    else:
        return None
    t = TAG.match(rest)
    if not t:
        return None
    pid = int(t["pid"]) if t["pid"] else None
    return moment, inferred, t["host"], t["prog"], pid, t["msg"]


@dataclass
class AuthState:
    """What the auth stream keeps across files: records written, and what the family checks need."""

    max_records: int
    records: int = 0
    full: bool = False
    noise: int = 0
    noise_full: bool = False
    # user -> sorted UTC seconds of sshd logins (accepted or session opened), for the wtmp cross-check
    logins: dict[str, list[float]] = field(default_factory=dict)
    system_events: list[dict[str, Any]] = field(default_factory=list)
    user_events: list[dict[str, Any]] = field(default_factory=list)  # account changes, annotated at the end
    accepted: list[dict[str, Any]] = field(default_factory=list)  # ssh_accepted, annotated with the key's history


def parse_file(ctx: Context, t: Text, family: str, clock: Clock, state: AuthState,
               keep: set[str] | None) -> Iterator[Item]:
    """Events of one log file as records (``keep``: only these events, for the system logs); then its
    log_file summary."""
    stats = FileStats(t.path, family, t.size, t.mtime, t.compressed, t.truncated)
    max_chars = int(ctx.opt("max_line_chars", DEFAULTS["max_line_chars"]))
    max_msg = int(ctx.opt("max_message_chars", DEFAULTS["max_message_chars"]))
    only_system = keep is not None and keep <= SYSTEM_EVENTS
    last_line: tuple[int, int, str] | None = None
    # sshd logs "Accepted ..." then "pam_unix(sshd:session): session opened", both under the pid of the
    # session's monitor: a session with no Accepted line of its pid just before is a login whose line was
    # cut out of the log (sed -i '/<address>/d' leaves the session's lines that do not name the address)
    logins_by_pid: dict[int, list[float]] = {}
    sessions: list[tuple[int, float, str]] = []
    for number, offset, line in lines_of(t, max_chars):
        if number % 4096 == 0:
            ctx.check()
        stats.lines += 1
        if only_system:
            # the big system logs: parse a line only when it may be a logging-daemon or boot event; the
            # first line and the last give the file's span
            last_line = (number, offset, line)
            if stats.first is not None and not SYSTEM_HINT.search(line):
                continue
        parsed = parse_syslog_line(line, clock, t.mtime)
        if parsed is None:
            stats.unparsed += bool(line.strip())
            continue
        moment, inferred, host, program, pid, msg = parsed
        if moment is not None:
            stats.first = stats.first or moment
            stats.last = moment
            stats.year_inferred |= inferred
        repeated = None
        if (r := REPEATED.match(msg)) is not None:  # rsyslog's repeated-message reduction
            repeated, msg = int(r["n"]), r["msg"]
        event = classify(program, msg)
        if event is None or (keep is not None and event["event"] not in keep):
            stats.unknown += 1
            continue
        stats.events += 1
        record = {"kind": "event", **event, "time_utc": _iso(moment) if moment else None, "host": host,
                  "program": program, "pid": pid, "message": msg[:max_msg], "path": t.path, "line": number,
                  "offset": offset}
        if inferred:
            record["year_inferred"] = True
        if repeated:
            record["repeated"] = repeated
        if moment is not None and pid is not None and program.startswith("sshd"):
            if event["event"] == "ssh_accepted":
                logins_by_pid.setdefault(pid, []).append(moment.timestamp())
            elif event["event"] == "session_opened" and str(event.get("service", "")).startswith("sshd") and \
                    len(sessions) < 100_000:
                sessions.append((pid, moment.timestamp(), f"{record.get('user')} at {record['time_utc']} "
                                                          f"({t.path} line {number})"))
        yield from _take(state, record, moment)
    start = stats.first.timestamp() + 120 if stats.first else None  # a login may sit before a cut window
    for pid, moment, what in sessions:
        if start is not None and moment >= start and not any(
                moment - 120 <= when <= moment + 2 for when in logins_by_pid.get(pid, ())):
            stats.orphans.append(what)
    if only_system and last_line is not None:  # the span's end, from the last line with a header
        parsed = parse_syslog_line(last_line[2], clock, t.mtime)
        if parsed and parsed[0] is not None and (stats.last is None or parsed[0] > stats.last):
            stats.last = parsed[0]
    yield Record("auth", stats.record())
    problem = getattr(t, "problem", None)
    if problem is not None:
        yield problem


ACCOUNT_EVENTS = {"user_added", "user_modified", "password_changed", "group_added", "user_deleted"}


def _take(state: AuthState, record: dict[str, Any], moment: _dt.datetime | None) -> Iterator[Item]:
    """An event record: written now, or held for the annotations that need every log read first."""
    kind = record["event"]
    if kind in ("ssh_accepted", "session_opened") and moment is not None and record.get("user") and \
            (kind == "ssh_accepted" or str(record.get("service", "")).startswith("sshd")):
        bisect.insort(state.logins.setdefault(str(record["user"]), []), moment.timestamp())
    if kind in SYSTEM_EVENTS:
        if len(state.system_events) < 20000:
            state.system_events.append(record)  # annotated (shutdown or not) once every log is read
        return
    if kind in ACCOUNT_EVENTS:
        if len(state.user_events) < 20000:
            state.user_events.append(record)  # annotated (package, cloud-init) once those logs are read
        return
    if kind == "ssh_accepted" and len(state.accepted) < 50000:
        state.accepted.append(record)  # annotated with the key's other uses once every log is read
        return
    yield from _emit(state, Record("auth", record))


NOISE = {"ssh_failed", "ssh_disconnect"}


def _emit(state: AuthState, record: Record, reserved: bool = False) -> Iterator[Item]:
    """A record within the caps. Password guessing may fill a public server's log: its events get half the
    records at most, so sudo, logins and sessions still fit; account and logging-daemon events
    (``reserved``, few, capped where they are gathered) are always kept."""
    if reserved:
        yield record
        return
    if record.data.get("event") in NOISE:
        if state.noise >= state.max_records // 2:
            if not state.noise_full:
                state.noise_full = True
                yield Problem(f"auth: {state.noise} failed-login and disconnect events kept; later ones not kept",
                              level="info")
            return
        state.noise += 1
    if state.records >= state.max_records:
        if not state.full:
            state.full = True
            yield Problem(f"auth: record cap {state.max_records} reached; later events not kept", level="warning")
        return
    state.records += 1
    yield record


# ---- context the events need: package installs, cloud-init, wtmp ------------------------------

DPKG = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:install|upgrade|configure|remove|purge|trigproc|"
                  r"status) (?P<pkg>\S+)")
APT_HISTORY = re.compile(r"^(?:Start|End)-Date: (?P<ts>\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d)")
DNF = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d{4}|Z)) \w+ (?:Installed|Upgraded|Upgrade|Erase|"
                 r"Reinstalled|Installing|Running scriptlet)")
YUM = re.compile(r"^(?P<mon>[A-Z][a-z]{2}) (?P<day>\d\d) (?P<hms>\d\d:\d\d:\d\d) (?:Installed|Updated|Erased): ")
CLOUD_INIT = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ - .*?(?:Adding user (?P<user>[\w.-]+)|"
                        r"Running (?:hidden )?command.*?\['(?:useradd|usermod|passwd)', '(?P<user2>[\w.-]+)'|"
                        r"Set the password for user|Changing password for|Adding user|groupadd)")


def _local(ts: str, clock: Clock) -> float | None:
    try:
        naive = _dt.datetime.fromisoformat(re.sub(r"\s+", " ", ts))
    except ValueError:
        return None
    if naive.tzinfo is None:
        naive = naive.replace(tzinfo=clock.zone)
    try:
        return naive.timestamp()
    except (ValueError, OverflowError, OSError, IndexError):
        return None


def package_activity(ctx: Context, clock: Clock) -> tuple[list[float], list[Problem]]:
    """Sorted UTC seconds at which a package manager was installing or configuring something (dpkg,
    apt, dnf, yum): an account made by a package's scripts is made then."""
    times: list[float] = []
    problems: list[Problem] = []
    budget = Budget(32 << 20)
    for base, pattern in (("/var/log/dpkg.log", DPKG), ("/var/log/apt/history.log", APT_HISTORY),
                          ("/var/log/dnf.rpm.log", DNF), ("/var/log/dnf.log", DNF), ("/var/log/yum.log", YUM)):
        paths, probs = rotations(ctx, base)
        problems += probs
        for path in paths[:16]:
            t = read_log(ctx, path, budget)
            if t is None:
                continue
            if isinstance(t, Problem):
                problems.append(t)
                continue
            for _, _, line in lines_of(t, 4096):
                m = pattern.match(line)
                if not m:
                    continue
                if pattern is YUM:  # no year either: the file's
                    when = _local(f"{utc(t.mtime) and utc(t.mtime)[:4]}-{MONTHS[m['mon']]:02d}-{m['day']} "
                                  f"{m['hms']}", clock) if m["mon"] in MONTHS else None
                else:
                    ts = m["ts"]
                    if pattern is DNF and re.search(r"[+-]\d{4}$", ts):
                        ts = ts[:-2] + ":" + ts[-2:]
                    when = _local(ts, clock)
                if when is not None and len(times) < 500_000:
                    times.append(when)
    times.sort()
    return times, problems


def cloud_init_users(ctx: Context, clock: Clock) -> tuple[dict[str, list[float]], list[float]]:
    """{user: UTC seconds} cloud-init said it was creating or changing, and every time it touched accounts."""
    users: dict[str, list[float]] = {}
    times: list[float] = []
    budget = Budget(16 << 20)
    paths, _ = rotations(ctx, "/var/log/cloud-init.log")
    for path in paths[:8]:
        t = read_log(ctx, path, budget)
        if t is None or isinstance(t, Problem):
            continue
        for _, _, line in lines_of(t, 4096):
            if "user" not in line and "passw" not in line and "groupadd" not in line:
                continue
            m = CLOUD_INIT.match(line)
            if m and (when := _local(m["ts"], clock)) is not None:
                times.append(when)
                if name := m["user"] or m["user2"]:
                    users.setdefault(name, []).append(when)
    times.sort()
    return users, times


def _near(times: list[float], moment: float, window: float) -> bool:
    i = bisect.bisect_left(times, moment - window)
    return i < len(times) and times[i] <= moment + window


NOLOGIN = re.compile(r"(^|/)(nologin|false|sync|halt|shutdown)$")


def annotate_account_event(record: dict[str, Any], packages: list[float], cloud_users: dict[str, list[float]],
                           cloud_times: list[float]) -> None:
    """``origin``: interactive (made from a terminal: shadow-utils 4.13+ logs ``from=/dev/pts/N``),
    cloud-init (it named the user, or touched accounts within 10 minutes), package (a package manager was at
    work within 10 minutes), system (a system account without a login shell, made by no terminal) or
    unknown."""
    moment = _seconds(record.get("time_utc"))
    user = str(record.get("user") or "")
    uid = record.get("uid")
    origin, basis = "unknown", None
    # a terminal first: someone typing useradd while unattended-upgrades runs is still someone typing
    if record.get("from_tty"):
        origin, basis = "interactive", f"made from {record['from_tty']}"
    elif moment is not None and _near(cloud_users.get(user, []), moment, 1800):
        origin, basis = "cloud-init", "cloud-init.log names this user at that time"
    elif moment is not None and _near(cloud_times, moment, 600):
        origin, basis = "cloud-init", "cloud-init was changing accounts then"
    elif moment is not None and _near(packages, moment, 600):
        origin, basis = "package", "a package manager was installing within 10 minutes"
    elif record["event"] == "user_added" and isinstance(uid, int) and 0 < uid < 1000 and \
            NOLOGIN.search(str(record.get("shell") or "")):
        origin, basis = "system", "system account without a login shell"
    elif record["event"] == "group_added" and isinstance(record.get("gid"), int) and 0 < record["gid"] < 1000:
        origin, basis = "system", "system group"
    record["origin"] = origin
    if basis:
        record["origin_basis"] = basis


def annotate_key_use(accepted: list[dict[str, Any]]) -> None:
    """Each public-key login says how often its key logged in from private and from public addresses
    (``key_private_logins``, ``key_public_logins``): a key that works from inside the network and shows up
    once from the internet differs from a key its owner always uses from home or the office."""
    counts: dict[str, list[int]] = {}
    for record in accepted:
        if record.get("fingerprint") and record.get("source_is_public") is not None:
            counts.setdefault(record["fingerprint"], [0, 0])[bool(record["source_is_public"])] += 1
    for record in accepted:
        if (pair := counts.get(record.get("fingerprint") or "")) is not None:
            record["key_private_logins"], record["key_public_logins"] = pair


def wtmp_logins(ctx: Context) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Remote logins (USER_PROCESS on a pts with a remote host) of wtmp and wtmp.1: {user, host, time}."""
    from collectors.volatile.sessions import parse_utmp  # the one utmp decoder of the project

    out: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for path in ("/var/log/wtmp", "/var/log/wtmp.1"):
        try:
            data, st, _ = read_capped(ctx, path, 16 << 20, keep="tail")
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(Problem.from_os_error(exc, "cannot read", path))
            continue
        data = data[len(data) % 384:]  # a tail window starts on a record boundary of the file's end
        for rec in parse_utmp(data, path):
            host = str(rec.get("host") or "")
            if rec.get("type") != "USER_PROCESS" or not str(rec.get("line", "")).startswith("pts/") or not host:
                continue
            # screen/tmux/X sessions (":pts/1:S.0", ":0") and mosh ("... via mosh") are not sshd logins
            if host.startswith(":") or " via " in host or not rec.get("time_utc"):
                continue
            out.append({"user": rec.get("user"), "host": host, "time_utc": rec["time_utc"], "path": path})
    return out, problems


# ---- the families --------------------------------------------------------------------------

@dataclass
class Family:
    name: str
    files: list[FileStats] = field(default_factory=list)
    budget_reached: bool = False

    def span(self) -> tuple[_dt.datetime | None, _dt.datetime | None]:
        firsts = [f.first for f in self.files if f.first]
        lasts = [f.last for f in self.files if f.last]
        return (min(firsts) if firsts else None), (max(lasts) if lasts else None)

    def events(self) -> int:
        return sum(f.events for f in self.files)


def read_family(ctx: Context, name: str, bases: list[str], clock: Clock, state: AuthState,
                keep: set[str] | None) -> Iterator[Item | Family]:
    """Parse every log of a family (newest first within the family's budget); the last item is the
    Family itself."""
    family = Family(name)
    budget = Budget(int(ctx.opt("max_bytes", DEFAULTS["max_bytes"])))
    max_files = int(ctx.opt("max_files", DEFAULTS["max_files"]))
    for base in bases:
        paths, problems = rotations(ctx, base)
        yield from problems
        if len(paths) > max_files:
            yield Problem(f"{len(paths) - max_files} older rotation(s) not read (max_files {max_files})", path=base,
                          level="info")
            family.budget_reached = True
        for path in paths[:max_files]:
            ctx.check()
            if budget.reached:
                yield Problem(f"{name} logs: byte budget reached, not read", path=path, level="info")
                family.budget_reached = True
                continue
            t = read_log(ctx, path, budget)
            if t is None:
                continue
            if isinstance(t, Problem):
                # a rotation that cannot be read leaves a hole the comparison with wtmp would take for
                # a cleared log: the family is incomplete
                family.budget_reached |= t.level == "error" or t.detail != {}
                yield t
                continue
            family.budget_reached |= t.truncated or getattr(t, "problem", None) is not None
            for item in parse_file(ctx, t, name, clock, state, keep):
                if isinstance(item, Record) and item.data.get("kind") == "log_file":
                    stats = FileStats(t.path, name, t.size, t.mtime, t.compressed, t.truncated)
                    stats.first = _dt.datetime.fromisoformat(item.data["first_event_utc"].replace("Z", "+00:00")) \
                        if item.data["first_event_utc"] else None
                    stats.last = _dt.datetime.fromisoformat(item.data["last_event_utc"].replace("Z", "+00:00")) \
                        if item.data["last_event_utc"] else None
                    stats.events = item.data["events"]
                    stats.orphans = list(item.data.get("sessions_without_login_sample", []))
                    stats.orphan_count = int(item.data.get("sessions_without_login", 0))
                    family.files.append(stats)
                yield item
    yield family


def annotate_logging_stops(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each logging_stopped gets ``context``: shutdown (a shutdown or a boot marks it), restart (a start
    within 2 minutes) or stopped (the logs went quiet with the host up), with ``restarted_after_s``.
    The same stop told by several sources within 10 s is kept once (``also_reported``)."""
    # sorted by time, file order kept within a second: a start logged in the same second as the stop,
    # after it, is its restart
    events = sorted(events, key=lambda r: r.get("time_utc") or "")
    seconds = [_seconds(r.get("time_utc")) for r in events]
    shutdowns = sorted(s for r, s in zip(events, seconds, strict=True) if r["event"] == "shutdown" and s is not None)
    # for each position: the time of the next start and of the next boot at or after it
    next_start: list[float | None] = [None] * (len(events) + 1)
    next_boot: list[float | None] = [None] * (len(events) + 1)
    for i in range(len(events) - 1, -1, -1):
        kind, moment = events[i]["event"], seconds[i]
        next_start[i] = moment if kind == "logging_started" and moment is not None else next_start[i + 1]
        next_boot[i] = moment if kind == "boot" and moment is not None else next_boot[i + 1]
    out: list[dict[str, Any]] = []
    last_stop: tuple[dict[str, Any], float] | None = None
    for i, (record, moment) in enumerate(zip(events, seconds, strict=True)):
        if record["event"] != "logging_stopped" or moment is None:
            out.append(record)
            continue
        if last_stop is not None and moment - last_stop[1] <= 10:
            last_stop[0]["also_reported"] = last_stop[0].get("also_reported", 0) + 1
            continue
        start, boot = next_start[i + 1], next_boot[i + 1]
        booted = boot is not None and (start is None or boot <= start + 5)
        if _near(shutdowns, moment, 300) or booted:
            context = "shutdown"
        elif start is not None and start - moment <= 120:
            context = "restart"
        else:
            context = "stopped"
        record["context"] = context
        record["restarted_after_s"] = round(start - moment) if start is not None else None
        record["quiet_for"] = f"{round(start - moment)} s" if start is not None else "the rest of the logs"
        last_stop = (record, moment)
        out.append(record)
    return out


def family_record(auth: Family, system: Family, logins: dict[str, list[float]], wtmp: list[dict[str, Any]],
                  clock: Clock, now: float) -> dict[str, Any]:
    """The auth family against the other logs and wtmp: logins wtmp holds at times the other logs cover
    but the auth logs do not (``unlogged_logins``), and how much later than the others it begins."""
    first, last = auth.span()
    other_first, other_last = system.span()
    out: dict[str, Any] = {
        "kind": "log_family", "family": auth.name, "files": len(auth.files), "paths": [f.path for f in auth.files][:20],
        "events": auth.events(), "first_event_utc": _iso(first) if first else None,
        "last_event_utc": _iso(last) if last else None, "budget_reached": auth.budget_reached,
        "other_logs_first_utc": _iso(other_first) if other_first else None,
        "other_logs_last_utc": _iso(other_last) if other_last else None,
        "time_zone": clock.zone_source, "wtmp_remote_logins": len(wtmp),
        "empty": auth.events() == 0,
        "sessions_without_login": sum(f.orphan_count for f in auth.files),
        "sessions_without_login_sample": [o for f in auth.files for o in f.orphans][:5],
    }
    if first and other_first and not auth.budget_reached:
        out["starts_after_other_logs_s"] = round((first - other_first).total_seconds())
    if not auth.files or auth.budget_reached or other_first is None:
        # no auth log at all (journald-only host), or not all of it read: nothing to compare
        out["unlogged_logins"] = None
        return out
    # the times the auth logs should cover: what the other logs cover. Traditional syslog times are local:
    # a zone changed after the lines were written (timedatectl set-timezone on day one) or not known shifts
    # them by whole or half hours, so a login counts as logged when the user's login lines sit at such an
    # offset, and the edges of the spans get 15 hours of slack.
    cover_from = other_first.timestamp()
    cover_to = max(other_last.timestamp() if other_last else 0.0, last.timestamp() if last else 0.0) or now
    edge, slack = 15 * 3600.0, 300.0
    unlogged: list[dict[str, Any]] = []
    for login in wtmp:
        moment = _seconds(login["time_utc"])
        if moment is None or not (cover_from + edge <= moment <= cover_to + edge):
            continue
        if first is None or moment < first.timestamp() - edge or (last and moment > last.timestamp() + edge):
            unlogged.append(login)  # outside what the auth logs still hold, inside what the others hold
        elif first.timestamp() + slack <= moment <= (last.timestamp() if last else now) - slack and not any(
                _near(logins.get(str(login["user"]), []), moment + k * 1800.0, slack) for k in range(-28, 29)):
            unlogged.append(login)  # inside the auth logs' span, but its lines are gone
    out["unlogged_logins"] = len(unlogged)
    if unlogged:
        out["unlogged_sample"] = [f"{u['user']} from {u['host']} at {u['time_utc']}" for u in unlogged[:5]]
    return out


def journal_events(ctx: Context, state: AuthState) -> Iterator[Item]:
    """A host without any text log (Debian 12, Amazon Linux 2023: journald only): the same events from
    the journal files, read by the project's bounded journal reader, newest files first within
    ``journal_budget_bytes``; one log_file record per journal file."""
    from collectors.files import journal as jr

    budget = int(ctx.opt("journal_budget_bytes", 128 << 20))
    max_msg = int(ctx.opt("max_message_chars", DEFAULTS["max_message_chars"]))
    used = 0
    for item in jr.journal_files(ctx):
        if isinstance(item, Problem):
            yield item
            continue
        path, st = item
        if used + st.st_size > budget:
            yield Problem("journal: byte budget reached, not read", path=path, level="info")
            continue
        used += st.st_size
        try:
            fd, st, path = open_regular(ctx, path)
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot open", path)
            continue
        stats = FileStats(path, "journal", st.st_size, st.st_mtime, False, False)
        try:
            def pread(offset: int, length: int, fd: int = fd, path: str = path) -> bytes:
                with ctx.blocking(path):
                    return os.pread(fd, length, offset)

            reader = jr.JournalFile(pread, st.st_size, check=ctx.check)
            for number, entry in enumerate(reader.entries(), 1):
                stats.lines += 1
                program, msg = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or "", entry.get("MESSAGE")
                when = jr.realtime_utc(entry.get("__REALTIME"))
                if not isinstance(msg, str) or not isinstance(program, str) or when is None:
                    stats.unparsed += 1
                    continue
                moment = _dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
                stats.first = min(stats.first or moment, moment)
                stats.last = max(stats.last or moment, moment)
                event = classify(program, msg)
                if event is None:
                    stats.unknown += 1
                    continue
                stats.events += 1
                pid = entry.get("SYSLOG_PID") or entry.get("_PID")
                record = {"kind": "event", **event, "time_utc": _iso(moment), "host": entry.get("_HOSTNAME"),
                          "program": program, "pid": int(pid) if isinstance(pid, str) and pid.isdigit() else None,
                          "message": msg[:max_msg], "path": path, "line": number, "offset": entry.get("__OFFSET")}
                yield from _take(state, record, moment)
        except jr.JournalError as exc:
            yield Problem(f"not a journal file: {exc}", path=path, level="warning")
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot read", path)
        finally:
            os.close(fd)
        yield Record("auth", stats.record())


def auth(ctx: Context) -> Iterator[Item]:
    """Stream ``auth``: sshd, sudo, su, account and PAM session events; logging-daemon stops, boots and
    shutdowns; a log_file record per file and a log_family record for the auth logs."""
    clock, problems = host_clock(ctx)
    yield from problems
    state = AuthState(int(ctx.opt("max_records", DEFAULTS["max_records"])))
    auth_bases = ctx.opt("auth_logs", AUTH_LOGS)
    system_bases = ctx.opt("system_logs", SYSTEM_LOGS)
    auth_family = system_family = None
    has_auth = any(rotations(ctx, base)[0] for base in auth_bases)
    # without any auth log (everything to /var/log/messages), the system logs carry the auth events too
    system_keep = SYSTEM_EVENTS if has_auth else None
    for item in read_family(ctx, "system", system_bases, clock, state, system_keep):
        if isinstance(item, Family):
            system_family = item
        else:
            yield item
    for item in read_family(ctx, "auth", auth_bases, clock, state, None):
        if isinstance(item, Family):
            auth_family = item
        else:
            yield item
    if not has_auth and system_family is not None and not system_family.files:
        yield from journal_events(ctx, state)  # no text log at all: journald is the only logger
    for record in annotate_logging_stops(state.system_events):
        yield from _emit(state, Record("auth", record), reserved=True)
    packages, probs = package_activity(ctx, clock)
    yield from probs
    cloud_users, cloud_times = cloud_init_users(ctx, clock)
    annotate_key_use(state.accepted)
    for record in state.accepted:
        yield from _emit(state, Record("auth", record))
    for record in state.user_events:
        annotate_account_event(record, packages, cloud_users, cloud_times)
        yield from _emit(state, Record("auth", record), reserved=True)
    wtmp, probs = wtmp_logins(ctx)
    yield from probs
    if auth_family is not None and system_family is not None and has_auth:
        now = _dt.datetime.now(_dt.UTC).timestamp()
        yield Record("auth", family_record(auth_family, system_family, state.logins, wtmp, clock, now))


# ---- web access logs ---------------------------------------------------------------------------

ACCESS = re.compile(  # combined or common; apache's vhost_combined has "host:port " in front
    r'^(?:(?P<vhost>[^\s:\[\]]+:\d{1,5}) )?(?P<client>\S+) (?P<ident>\S+) (?P<user>\S+) '
    r'\[(?P<time>[^\]]{1,40})\] "(?P<request>(?:[^"\\]|\\.)*)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-)(?: "(?P<referrer>(?:[^"\\]|\\.)*)" "(?P<ua>(?:[^"\\]|\\.)*)")?')
ACCESS_TIME = re.compile(r"(?P<d>\d{1,2})/(?P<mon>[A-Z][a-z]{2})/(?P<y>\d{4}):(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d) "
                         r"(?P<tz>[+-]\d{4})")
REQUEST = re.compile(r"^(?P<method>[A-Z][A-Z_-]{0,19}) (?P<target>\S+)(?: (?P<proto>HTTP/\d(?:\.\d)?))?$")
SCRIPT_EXT = re.compile(r"\.(php\d?|phtml|phar|jsp|jspx|asp|aspx|ashx|asmx|cgi|pl|cfm)$", re.I)
UPLOAD_DIR = re.compile(r"/(uploads?|images?|img|files|media|tmp|temp|cache|static|assets|attachments?|"
                        r"wp-content/uploads|userfiles|\.well-known)/", re.I)


NOTABLE = re.compile(r"[;|`]|\$\(|\$\{|\b(cmd|exec|command|shell|system|passthru|eval|assert|base64|wget|curl|"
                     r"whoami|uname|/etc/passwd|/dev/tcp|<\?php)\b", re.I)


def access_time(value: str) -> str | None:
    m = ACCESS_TIME.fullmatch(value)
    if not m or m["mon"] not in MONTHS:
        return None
    try:
        tz = _dt.timezone(_dt.timedelta(hours=int(m["tz"][1:3]), minutes=int(m["tz"][3:])) *
                          (-1 if m["tz"][0] == "-" else 1))
        moment = _dt.datetime(int(m["y"]), MONTHS[m["mon"]], int(m["d"]), int(m["h"]), int(m["m"]), int(m["s"]),
                              tzinfo=tz)
    except ValueError:
        return None
    return _iso(moment)


def _unescape(value: str | None) -> str | None:
    if value is None or value == "-":
        return None
    return value.replace('\\"', '"').replace("\\\\", "\\")


def decode_target(target: str) -> str:
    """URL-decoded twice (double encoding hides payloads from one decode), bounded."""
    once = unquote_plus(target[:4096])
    return unquote_plus(once) if "%" in once else once


def parse_access_line(line: str) -> dict[str, Any] | None:
    m = ACCESS.match(line)
    if not m:
        return None
    request = _unescape(m["request"]) or ""
    r = REQUEST.match(request)
    method = path = query = proto = None
    if r:
        method, proto = r["method"], r["proto"]
        target = r["target"]
        path, _, query = target.partition("?")
        query = query or None
    client = m["client"]
    record: dict[str, Any] = {
        "kind": "request", "time_utc": access_time(m["time"]), "client_ip": client,
        "client_is_public": is_public(client), "method": method, "path": path, "query": query, "protocol": proto,
        "status": int(m["status"]), "bytes": int(m["bytes"]) if m["bytes"].isdigit() else 0,
        "user_agent": _unescape(m["ua"]), "referrer": _unescape(m["referrer"]),
        "remote_user": None if m["user"] == "-" else m["user"],
    }
    if m["vhost"]:
        record["vhost"] = m["vhost"]
    if r is None:
        record["request"] = request[:2048]  # not an HTTP request line (TLS bytes, probes): kept as said
    else:
        record["decoded"] = decode_target(r["target"])
    return record


@dataclass
class ScriptStats:
    """One script path: who reached it and how, for the web-shell summary."""

    gets_ok: int = 0
    posts_ok: int = 0
    requests: int = 0
    clients: set[str] = field(default_factory=set)
    get_clients: set[str] = field(default_factory=set)
    post_clients: set[str] = field(default_factory=set)
    public_post_clients: int = 0
    first_post: str | None = None
    last_post: str | None = None


def _track(paths: dict[tuple[str, str], ScriptStats], log: str, rec: dict[str, Any], cap: int) -> None:
    path = rec.get("path")
    if not path or not SCRIPT_EXT.search(path):
        return
    key = (log, path)
    stats = paths.get(key)
    if stats is None:
        if len(paths) >= cap:
            return
        stats = paths[key] = ScriptStats()
    stats.requests += 1
    client = rec["client_ip"]
    if len(stats.clients) < 64:
        stats.clients.add(client)
    ok = 200 <= rec["status"] < 400
    if rec["method"] in ("GET", "HEAD") and ok:
        stats.gets_ok += 1
        if len(stats.get_clients) < 64:
            stats.get_clients.add(client)
    elif rec["method"] == "POST" and 200 <= rec["status"] < 300:
        stats.posts_ok += 1
        if client not in stats.post_clients and len(stats.post_clients) < 64:
            stats.post_clients.add(client)
            stats.public_post_clients += bool(rec.get("client_is_public"))
        when = rec.get("time_utc")
        if when and (stats.first_post is None or when < stats.first_post):
            stats.first_post = when
        if when and (stats.last_post is None or when > stats.last_post):
            stats.last_post = when


def web(ctx: Context) -> Iterator[Item]:
    """Stream ``web_access``: one ``request`` record per access-log line; a ``log_file`` record per file;
    a ``web_script`` record per script path answered 200 to a POST (who reached it, by GET and by POST)."""
    max_records = int(ctx.opt("max_records", DEFAULTS["max_records"]))
    max_chars = int(ctx.opt("max_line_chars", DEFAULTS["max_line_chars"]))
    max_paths = int(ctx.opt("max_web_paths", DEFAULTS["max_web_paths"]))
    budget = Budget(int(ctx.opt("max_bytes", DEFAULTS["max_bytes"])))
    records = notable = 0
    scripts: dict[tuple[str, str], ScriptStats] = {}
    bases: list[str] = []
    for pattern in ctx.opt("web_logs", WEB_LOGS):
        for hit in walk_glob(ctx, pattern):
            if isinstance(hit, Problem):
                yield hit
                continue
            name = os.path.basename(hit)
            # a rotation of a log already listed is read with it (access.log.2.gz with access.log)
            base = os.path.dirname(hit) + "/" + re.sub(r"(\.\d{1,4}|-\d{8,10})(\.gz)?$", "", name)
            if base not in bases and not name.endswith((".xz", ".bz2", ".zst")):
                bases.append(base)
    for base in bases:
        paths, problems = rotations(ctx, base)
        yield from problems
        for path in paths[: int(ctx.opt("max_files", DEFAULTS["max_files"]))]:
            ctx.check()
            if budget.reached:
                yield Problem("web logs: byte budget reached, not read", path=path, level="info")
                continue
            t = read_log(ctx, path, budget)
            if t is None:
                continue
            if isinstance(t, Problem):
                yield t
                continue
            stats = {"kind": "log_file", "family": "web", "path": path, "size": t.size, "mtime_utc": utc(t.mtime),
                     "compressed": t.compressed, "truncated": t.truncated, "lines": 0, "events": 0,
                     "unparsed_lines": 0, "first_event_utc": None, "last_event_utc": None, "empty": t.size == 0}
            for number, offset, line in lines_of(t, max_chars):
                if number % 4096 == 0:
                    ctx.check()
                stats["lines"] += 1
                rec = parse_access_line(line)
                if rec is None:
                    stats["unparsed_lines"] += bool(line.strip())
                    continue
                stats["events"] += 1
                when = rec["time_utc"]
                if when:
                    stats["first_event_utc"] = min(stats["first_event_utc"] or when, when)
                    stats["last_event_utc"] = max(stats["last_event_utc"] or when, when)
                rec.update({"log": path, "line": number, "offset": offset})
                _track(scripts, base, rec, max_paths)
                if records < max_records:
                    records += 1
                    yield Record("web_access", rec)
                    continue
                if records == max_records:
                    records += 1
                    yield Problem(f"web_access: record cap {max_records} reached; older requests kept only when "
                                  "they look like commands", level="warning")
                # past the cap, a request the server answered whose query looks like a command is still kept
                # (up to a tenth more): the older logs are where an intrusion's first requests are
                if notable < max_records // 10 and rec["status"] < 400 and rec.get("query") and \
                        NOTABLE.search(rec.get("decoded") or ""):
                    notable += 1
                    yield Record("web_access", rec)
            yield Record("web_access", stats)
            if (problem := getattr(t, "problem", None)) is not None:
                yield problem
    if len(scripts) >= max_paths:
        yield Problem(f"web: {max_paths} script paths tracked; later ones not summarised", level="info")
    for (log, path), s in scripts.items():
        if not s.posts_ok:
            continue
        yield Record("web_access", {
            "kind": "web_script", "log": log, "path": path, "requests": s.requests, "posts_ok": s.posts_ok,
            "gets_ok": s.gets_ok,
            # who fetched it without ever posting to it: a page people browse has such visitors, a web
            # shell only its operator
            "get_only_clients": len(s.get_clients - s.post_clients), "clients": len(s.clients),
            "post_clients": len(s.post_clients),
            "public_post_clients": s.public_post_clients, "post_client_sample": sorted(s.post_clients)[:5],
            "first_post_utc": s.first_post, "last_post_utc": s.last_post,
            "in_upload_dir": bool(UPLOAD_DIR.search(path))})


# ---- web server error logs ---------------------------------------------------------------------
# Stream ``web_errors``: nginx and apache error logs, PHP-FPM's and PHP's own error_log, tomcat's
# catalina.out / catalina.YYYY-MM-DD.log. A web shell at work leaves PHP warnings naming its own file; a
# scanner leaves "file not found" for many script names; a WAR deployed through the manager leaves tomcat's
# deployment and JSP compile lines. Every server but PHP's error_log (which names its zone) writes the
# host's local time: the zone is the host's, read by host_clock.

WEB_ERROR_LOGS = ["/var/log/nginx/*error*", "/var/log/apache2/*error*", "/var/log/httpd/*error*",
                  "/var/log/php*-fpm.log*", "/var/log/php*/*.log*", "/var/log/php_errors.log*",
                  "/var/log/tomcat*/catalina*", "/opt/tomcat*/logs/catalina*",
                  "/var/log/tomcat*/localhost.*", "/opt/tomcat*/logs/localhost.*"]
WEB_LOGS += ["/var/log/tomcat*/localhost_access_log*", "/opt/tomcat*/logs/localhost_access_log*"]

NGINX_ERROR = re.compile(r"^(?P<y>\d{4})/(?P<mo>\d\d)/(?P<d>\d\d) (?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d) "
                         r"\[(?P<level>[a-z]+)\] (?P<pid>\d+)#(?P<tid>\d+): (?:\*(?P<cid>\d+) )?(?P<msg>.*)$", re.S)
# anchored at the end: a PHP message quoted before it cannot pass for the tail (nginx writes a '"' in a
# request or a header as \x22)
NGINX_TAIL = re.compile(r', client: (?P<client>[^,\s]+), server: (?P<server>[^,]*)(?:, request: "(?P<request>'
                        r'(?:[^"\\]|\\.)*)")?(?P<rest>(?:, \w+: "(?:[^"\\]|\\.)*")*)$')
# 2.4: [time] [module:level] [pid N:tid N] [client ip:port] AHnnnnn: msg; 2.2: [time] [level] [client ip] msg
APACHE_ERROR = re.compile(
    r"^\[(?:[A-Z][a-z]{2}) (?P<mon>[A-Z][a-z]{2}) (?P<d>\d\d) (?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)"
    r"(?:\.(?P<us>\d{1,6}))? (?P<y>\d{4})\] \[(?:(?P<module>[\w-]{1,40}):)?(?P<level>[a-z]+\d?)\]"
    r"(?: \[pid (?P<pid>\d+)(?::tid \d+)?\])?"
    r"(?: \[client (?P<client>[^\]]{1,80})\])? ?(?:(?P<code>AH\d{5}): )?(?P<msg>.*)$", re.S)
PHP_DATE = re.compile(r"^\[(?P<d>\d\d)-(?P<mon>[A-Z][a-z]{2})-(?P<y>\d{4}) (?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)"
                      r"(?:\.\d+)?(?: (?P<tz>[A-Za-z][\w/+-]{0,40}))?\] (?P<msg>.*)$", re.S)
FPM_LEVEL = re.compile(r"^(?P<level>DEBUG|NOTICE|WARNING|ERROR|ALERT): (?:\[pool (?P<pool>[^\]]+)\] )?(?P<msg>.*)$",
                       re.S)
JUL = re.compile(r"^(?P<d>\d\d)-(?P<mon>[A-Z][a-z]{2})-(?P<y>\d{4}) (?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)"
                 r"(?:\.(?P<ms>\d{1,3}))? (?P<level>SEVERE|WARNING|INFO|CONFIG|FINE|FINER|FINEST) "
                 r"\[(?P<thread>[^\]]{0,200})\] (?P<source>\S+) (?P<msg>.*)$", re.S)
PHP_LEVEL = re.compile(r"PHP (?P<level>Fatal error|Parse error|Warning|Notice|Deprecated|Strict Standards|"
                       r"Recoverable fatal error|Catchable fatal error|Core warning|Compile error|Compile warning)")
# the script a PHP message was raised in: "in /x.php on line 3", "in /x.php(3) : eval()'d code on line 1",
# PHP 8's "in /x.php:3"; php-fpm's "script '/x.php'"
PHP_IN = re.compile(r"\b(?:in|thrown in|called in) (?P<path>/[^\s:()\"']{1,1024}?)(?:\(\d+\) : [^\n]{0,60}? code)?"
                    r"(?: on line (?P<line>\d+)|:(?P<line2>\d+)\b)")
SCRIPT_QUOTED = re.compile(r"\bscript '(?P<path>/[^']{1,1024})'")
# a file the server was asked for and did not find (scanner noise when many names come from one client)
MISSING = re.compile(r'open\(\) "(?P<a>[^"]{1,1024})" failed \(2: |'
                     r"script not found or unable to stat: (?P<b>\S{1,1024})|"
                     r"File does not exist: (?P<c>\S{1,1024})|Primary script unknown|"
                     r"Unable to open primary script: (?P<d>\S{1,1024})|"
                     r'"(?P<e>/[^"]{1,1024})" is not found \(2: ')
TRACE_LINE = re.compile(r"^(?:\s+at |\s*\.\.\. \d+ more|\s*Caused by: |\s*Suppressed: |\s+|[\w$.]+(?:Exception|Error)"
                        r"\b)")
WAR_DEPLOY = re.compile(r"Deploying web application (?:archive|directory) \[(?P<path>[^\]]{1,1024})\]|"
                        r"Deployment of web application (?:archive|directory) \[(?P<done>[^\]]{1,1024})\]")
JSP_COMPILE = re.compile(r"org\.apache\.jasper|JasperException|Unable to compile class for JSP")
# the JSP named: "in the jsp file: [/x.jsp]" (a compile error), "processing [/x.jsp]" (a runtime error)
JSP_FILE = re.compile(r"in the jsp file: \[?(?P<a>[^\]\s]{1,1024}?)\]?(?:\s|$)|"
                      r"processing \[(?P<b>[^\]\s]{1,1024}\.jspx?)\]")
LEVELS = {"emerg": "emerg", "alert": "alert", "crit": "crit", "error": "error", "warn": "warn", "notice": "notice",
          "info": "info", "debug": "debug", "severe": "error", "warning": "warn", "config": "info", "fine": "debug",
          "finer": "debug", "finest": "debug", "fatal error": "error", "parse error": "error", "deprecated": "notice",
          "strict standards": "notice", "recoverable fatal error": "error", "catchable fatal error": "error",
          "core warning": "warn", "compile error": "error", "compile warning": "warn"}
SCAN_WINDOW_S = 600  # distinct missing scripts counted per client within this many seconds


def _level(value: str) -> str:
    v = value.lower()
    return LEVELS.get(v) or LEVELS.get(re.sub(r"^(trace)\d$", "debug", v)) or v


def _client(value: str | None) -> tuple[str | None, int | None]:
    """"1.2.3.4:5678", "[::1]:80", "::1:4321" (apache 2.4 writes v6 unbracketed) or a bare address."""
    if not value:
        return None, None
    value = value.strip()
    if m := re.fullmatch(r"\[(?P<ip>[^\]]+)\]:(?P<port>\d{1,5})", value):
        return m["ip"], int(m["port"])
    host, _, port = value.rpartition(":")
    # "::1:4321" is also a valid v6 address: apache 2.4 always appends the port, so a split leaving an
    # address is taken; 2.2's bare "2001:db8::1" leaves "2001:db8:", no address, and stays whole
    if port.isdigit() and host and (value.count(":") == 1 or is_public(host) is not None):
        return host, int(port)
    return value, None


class ErrorClock:
    """Times of the error-log formats: the host's local time, or (PHP's error_log) a named zone looked up
    in the host's own zoneinfo."""

    def __init__(self, ctx: Context, clock: Clock) -> None:
        self.ctx, self.clock = ctx, clock
        self._zones: dict[str, _dt.tzinfo | None] = {"UTC": _dt.UTC, "GMT": _dt.UTC, "Z": _dt.UTC}

    def at(self, y: str, mon: str | int, d: str, h: str, mi: str, s: str, micro: int = 0,
           tz: str | None = None) -> str | None:
        month = MONTHS.get(mon) if isinstance(mon, str) and not mon.isdigit() else int(mon)
        if not month:
            return None
        if tz:
            zone = self._zone(tz)
            if zone is not None:
                try:
                    return _iso(_dt.datetime(int(y), month, int(d), int(h), int(mi), int(s), micro, tzinfo=zone))
                except (ValueError, OverflowError):
                    return None
        moment = self.clock.local(int(y), month, int(d), int(h), int(mi), int(s), micro)
        return _iso(moment) if moment else None

    def _zone(self, name: str) -> _dt.tzinfo | None:
        if name in self._zones:
            return self._zones[name]
        zone = None
        if len(self._zones) < 64 and re.fullmatch(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*", name):
            try:
                data, _, _ = read_capped(self.ctx, f"/usr/share/zoneinfo/{name}", 1 << 18)
                zone = zone_from_tzif(data, name)
            except (OSError, ValueError):
                zone = None  # an abbreviation (CET) or a zone the host lacks: its local time is the best guess
        self._zones[name] = zone
        return zone


def _scripts(msg: str) -> tuple[list[str], list[str]]:
    """(scripts a PHP message was raised in, files the server did not find), each bounded."""
    ran: list[str] = []
    for m in PHP_IN.finditer(msg):
        if m["path"] not in ran and len(ran) < 8:
            ran.append(m["path"])
    for m in SCRIPT_QUOTED.finditer(msg):
        if m["path"] not in ran and len(ran) < 8 and "Unable to open primary script" not in msg:
            ran.append(m["path"])
    missing = [p for m in MISSING.finditer(msg) for p in (m["a"], m["b"], m["c"], m["d"], m["e"]) if p][:8]
    return ran, missing


def parse_error_line(line: str, clock: ErrorClock) -> dict[str, Any] | None:
    """One error-log line as a record (``kind: error``), or None when it starts no entry (a continuation)."""
    rec: dict[str, Any]
    if m := NGINX_ERROR.match(line):
        msg = m["msg"]
        rec = {"server": "nginx", "level": _level(m["level"]), "pid": int(m["pid"]),
               "time_utc": clock.at(m["y"], m["mo"], m["d"], m["h"], m["mi"], m["s"])}
        if m["cid"]:
            rec["connection"] = int(m["cid"])
        if t := NGINX_TAIL.search(msg):
            rec["client"], rec["vhost"] = t["client"], t["server"] or None
            if t["request"] is not None:
                rec["request"] = _unescape(t["request"])
            if h := re.search(r', host: "(?P<h>[^"]{0,255})"', t["rest"]):
                rec["host"] = h["h"]
            msg = msg[:t.start()]
    elif m := APACHE_ERROR.match(line):
        msg = m["msg"]
        rec = {"server": "apache", "level": _level(m["level"]), "module": m["module"], "code": m["code"],
               "pid": int(m["pid"]) if m["pid"] else None,
               "time_utc": clock.at(m["y"], m["mon"], m["d"], m["h"], m["mi"], m["s"],
                                    int((m["us"] or "0").ljust(6, "0")))}
        rec["client"], rec["client_port"] = _client(m["client"])
        if r := re.search(r", referer: (?P<ref>\S+)$", msg):
            rec["referrer"], msg = r["ref"], msg[:r.start()]
    elif m := PHP_DATE.match(line):
        msg = m["msg"]
        rec = {"time_utc": clock.at(m["y"], m["mon"], m["d"], m["h"], m["mi"], m["s"], tz=m["tz"])}
        if f := FPM_LEVEL.match(msg):
            rec.update({"server": "php-fpm", "level": _level(f["level"]), "pool": f["pool"]})
            msg = f["msg"]
        else:
            rec.update({"server": "php", "level": None})
    elif m := JUL.match(line):
        msg = m["msg"]
        rec = {"server": "tomcat", "level": _level(m["level"]), "thread": m["thread"][:200], "source": m["source"],
               "time_utc": clock.at(m["y"], m["mon"], m["d"], m["h"], m["mi"], m["s"],
                                    int((m["ms"] or "0").ljust(3, "0")) * 1000)}
    else:
        return None
    rec = {"kind": "error", **rec, "message": msg}
    if p := PHP_LEVEL.search(msg):
        rec["php_level"] = p["level"]
        if rec.get("level") is None:  # PHP's own error_log: the level is PHP's; a server's entry keeps its own
            rec["level"] = _level(p["level"])
    return _finish(rec)


def _finish(rec: dict[str, Any]) -> dict[str, Any]:
    """Fields derived from the message: client address kind, request method and path, scripts named."""
    msg = rec["message"]
    if rec.get("client"):
        rec.setdefault("client_port", None)
        if rec["server"] == "nginx":
            rec["client"], port = _client(rec["client"])
            rec["client_port"] = rec["client_port"] or port
        rec["client_is_public"] = is_public(rec["client"])
    if req := rec.get("request"):
        if r := REQUEST.match(req):
            rec["method"] = r["method"]
            rec["path"], _, query = r["target"].partition("?")
            rec["query"] = query or None
            rec["decoded"] = decode_target(r["target"])
    ran, missing = _scripts(msg)
    rec["php_scripts"], rec["missing"] = ran, missing
    rec["not_found"] = bool(missing) or "Primary script unknown" in msg
    if rec["server"] == "tomcat":
        if w := WAR_DEPLOY.search(msg):
            rec["deployed"] = w["path"] or w["done"]
        if JSP_COMPILE.search(msg):
            rec["jsp_compile"] = True
            if j := JSP_FILE.search(msg):
                rec["jsp"] = j["a"] or j["b"]
    return rec


@dataclass
class ScanStats:
    """One client's missing scripts: the most distinct names it was refused within SCAN_WINDOW_S."""

    seen: dict[str, float] = field(default_factory=dict)  # name -> first time
    total: int = 0


def _scan_burst(times: list[tuple[float, str]]) -> tuple[int, float | None]:
    """The most distinct names within SCAN_WINDOW_S (two pointers over time-sorted (time, name)) and when."""
    times.sort()
    best, when, left = 0, None, 0
    counts: dict[str, int] = {}
    for moment, name in times:
        counts[name] = counts.get(name, 0) + 1
        while moment - times[left][0] > SCAN_WINDOW_S:
            old = times[left][1]
            counts[old] -= 1
            if not counts[old]:
                del counts[old]
            left += 1
        if len(counts) > best:
            best, when = len(counts), times[left][0]
    return best, when


def web_errors(ctx: Context) -> Iterator[Item]:
    """Stream ``web_errors``: one ``error`` record per error-log entry (a stack trace kept with its first
    line, bounded); a ``log_file`` record per file; a ``scan_client`` record per client refused many
    distinct script names (the most within 10 minutes)."""
    clock_, problems = host_clock(ctx)
    yield from problems
    clock = ErrorClock(ctx, clock_)
    max_records = int(ctx.opt("max_records", DEFAULTS["max_records"]))
    max_chars = int(ctx.opt("max_line_chars", DEFAULTS["max_line_chars"]))
    max_msg = int(ctx.opt("max_message_chars", DEFAULTS["max_message_chars"]))
    max_files = int(ctx.opt("max_files", DEFAULTS["max_files"]))
    max_trace = int(ctx.opt("max_trace_lines", 40))
    budget = Budget(int(ctx.opt("max_bytes", DEFAULTS["max_bytes"])))
    records = 0
    scans: dict[str, list[tuple[float, str]]] = {}
    # every file of every pattern (rotations with their base), then newest first across them all, so the
    # budget goes to the most recent errors whichever server wrote them
    found: list[tuple[float, str]] = []
    seen: set[str] = set()
    for pattern in ctx.opt("web_error_logs", WEB_ERROR_LOGS):
        for hit in walk_glob(ctx, pattern):
            if isinstance(hit, Problem):
                yield hit
                continue
            name = os.path.basename(hit)
            if hit in seen or name.endswith((".xz", ".bz2", ".zst", ".lck")) or len(seen) >= max_files * 8:
                continue
            seen.add(hit)
            try:
                mtime = lstat(ctx, hit)[1].st_mtime
            except OSError:
                mtime = 0.0
            found.append((mtime, hit))
    # same mtime (rotated together, or copied): the rotation order decides, error.log before .1 before .2.gz

    def rank(hit: str) -> tuple[str, int]:
        m = re.search(r"\.(\d{1,4})(?:\.gz)?$", hit)
        return (hit[:m.start()], int(m[1])) if m else (hit, 0)

    found.sort(key=lambda p: (-p[0], rank(p[1])))
    if len(found) > max_files:
        yield Problem(f"web error logs: {len(found) - max_files} older file(s) not read (max_files {max_files})",
                      level="info")
    for _, path in found[:max_files]:
        ctx.check()
        if budget.reached:
            yield Problem("web error logs: byte budget reached, not read", path=path, level="info")
            continue
        t = read_log(ctx, path, budget)
        if t is None:
            continue
        if isinstance(t, Problem):
            yield t
            continue
        stats = {"kind": "log_file", "family": "web_errors", "path": path, "size": t.size, "mtime_utc": utc(t.mtime),
                 "compressed": t.compressed, "truncated": t.truncated, "lines": 0, "events": 0, "unparsed_lines": 0,
                 "first_event_utc": None, "last_event_utc": None, "empty": t.size == 0}
        pending: dict[str, Any] | None = None

        def flush(rec: dict[str, Any] | None) -> Iterator[Item]:
            nonlocal records
            if rec is None:
                return
            rec["message"] = rec["message"][:max_msg * 4 if rec.get("trace_lines") else max_msg]
            if records < max_records:
                records += 1
                yield Record("web_errors", rec)
            elif records == max_records:
                records += 1
                yield Problem(f"web_errors: record cap {max_records} reached", level="warning")

        for number, offset, line in lines_of(t, max_chars):
            if number % 4096 == 0:
                ctx.check()
            stats["lines"] += 1
            rec = parse_error_line(line, clock)
            if rec is None:
                # a stack trace (java, PHP's "Stack trace:" / "#0 ...") or a multi-line message: kept with
                # the entry it follows, bounded
                if pending is not None and line.strip() and pending.get("trace_lines", 0) < max_trace and \
                        len(pending["message"]) < max_msg * 4:
                    pending["message"] += "\n" + line
                    pending["trace_lines"] = pending.get("trace_lines", 0) + 1
                    ran, missing = _scripts(line)
                    pending["php_scripts"] += [p for p in ran if p not in pending["php_scripts"]][:8]
                    if pending["server"] == "tomcat" and (JSP_COMPILE.search(line) or JSP_FILE.search(line)):
                        pending = _finish(pending) | {"php_scripts": pending["php_scripts"]}
                else:
                    stats["unparsed_lines"] += bool(line.strip()) and pending is None
                continue
            yield from flush(pending)
            stats["events"] += 1
            rec.update({"log": path, "line": number, "offset": offset})
            when = rec["time_utc"]
            if when:
                stats["first_event_utc"] = min(stats["first_event_utc"] or when, when)
                stats["last_event_utc"] = max(stats["last_event_utc"] or when, when)
            # the name refused: the file named, else the request's path (php-fpm's "Primary script unknown")
            refused = (rec["missing"] or [rec.get("path") or ""])[0] if rec["not_found"] else ""
            if refused and rec.get("client") and when and (len(scans) < 10_000 or rec["client"] in scans):
                names = scans.setdefault(rec["client"], [])
                if len(names) < 20_000:
                    names.append((_seconds(when) or 0.0, refused.rsplit("/", 1)[-1][:256]))
            pending = rec
        yield from flush(pending)
        yield Record("web_errors", stats)
        if (problem := getattr(t, "problem", None)) is not None:
            yield problem
    for client, names in scans.items():
        scripts = [n for n in names if SCRIPT_EXT.search(n[1])]
        if len({n for _, n in scripts}) < 5:
            continue
        burst, since = _scan_burst(scripts)
        yield Record("web_errors", {
            "kind": "scan_client", "client": client, "client_is_public": is_public(client),
            "missing_scripts": len({n for _, n in scripts}), "missing_scripts_burst": burst,
            "time_utc": _iso(_dt.datetime.fromtimestamp(since, _dt.UTC)) if since is not None else None,
            "window_s": SCAN_WINDOW_S, "sample": sorted({n for _, n in scripts})[:10]})
