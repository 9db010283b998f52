"""Login sessions (utmp) and login history (wtmp, btmp, lastlog), parsed from their binary records."""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Iterator

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import open_regular, resolve
from collectors.files.homes import passwd_users
from collectors.util import text, utc

# struct utmp on Linux (x86_64, aarch64 and the other 64-bit ABIs glibc uses): 384 bytes.
UTMP = struct.Struct("<hxxi32s4s32s256shhiii16s20s")
UT_TYPES = {0: "EMPTY", 1: "RUN_LVL", 2: "BOOT_TIME", 3: "NEW_TIME", 4: "OLD_TIME", 5: "INIT_PROCESS",
            6: "LOGIN_PROCESS", 7: "USER_PROCESS", 8: "DEAD_PROCESS", 9: "ACCOUNTING"}
LASTLOG = struct.Struct("<i32s256s")  # 292 bytes, indexed by UID
READ_CHUNK = UTMP.size * 2048


def _cstr(raw: bytes) -> str:
    return text(raw.split(b"\0", 1)[0])


def _addr(raw: bytes) -> str | None:
    if raw == b"\0" * 16:
        return None
    if raw[4:] == b"\0" * 12:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


def _fields(chunk: bytes) -> tuple[int, dict]:
    ut_type, pid, line, ut_id, user, host, term, exit_code, session, sec, usec, addr, _ = UTMP.unpack(chunk)
    return ut_type, {"pid": pid, "line": _cstr(line), "id": _cstr(ut_id), "user": _cstr(user), "host": _cstr(host),
                     "exit_termination": term, "exit_status": exit_code, "session": session,
                     "time_utc": _time(sec, usec), "address": _addr(addr)}


def _time(sec: int, usec: int) -> str | None:
    try:
        return utc(sec + usec / 1e6) if sec > 0 else None
    except (OverflowError, OSError, ValueError):  # a corrupt record's time may be out of any range
        return None


def parse_utmp(data: bytes, source: str, first_index: int = 0) -> Iterator[dict]:
    """Every record, in file order. A record of type EMPTY or of zero bytes (what log wipers leave) is
    kept as such, never as a login: ``type`` EMPTY, ``zeroed``, and what was left of it in ``residue``.
    A ut_type outside 0-9 is not a record glibc writes: ``corrupt``, its ``raw_type``, the fields as
    they decode in ``decoded`` (not as a login's)."""
    for i in range(len(data) // UTMP.size):
        index = first_index + i
        chunk = data[i * UTMP.size:(i + 1) * UTMP.size]
        where = {"source": source, "index": index, "offset": index * UTMP.size}
        if chunk == b"\0" * UTMP.size:
            yield {**where, "type": "EMPTY", "zeroed": True}
            continue
        ut_type, fields = _fields(chunk)
        if ut_type == 0:
            yield {**where, "type": "EMPTY", "zeroed": True,
                   "residue": {k: v for k, v in fields.items() if v not in (None, "", 0)}}
        elif ut_type not in UT_TYPES:
            yield {**where, "type": None, "raw_type": ut_type, "corrupt": True, "decoded": fields}
        else:
            yield {**where, "type": UT_TYPES[ut_type], **fields}


def _open(ctx: Context, path: str) -> tuple[int, os.stat_result] | Problem | None:
    """An evidence file opened safely; None when it does not exist, a Problem when it cannot be opened."""
    try:
        fd, st, _ = open_regular(ctx, path)
        return fd, st
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Problem.from_os_error(exc, "cannot open", path)


def _records_of(ctx: Context, path: str, stream: str, max_records: int) -> Iterator[Item]:
    """Records go to ``stream``; EMPTY and zeroed ones to ``<stream>_empty``, so that what reads the
    login stream (the tampering check: a gap in its indexes is a wiped record) sees only real records."""
    opened = _open(ctx, path)
    if not isinstance(opened, tuple):
        yield from [opened] if opened else []
        return
    fd, st = opened
    try:
        trailing = st.st_size % UTMP.size
        if trailing:
            yield Problem(f"{trailing} trailing bytes after the last whole {UTMP.size}-byte record ignored "
                          f"(size {st.st_size}: a partial record, or not a utmp file)", path=path, level="warning")
        total = st.st_size // UTMP.size
        start = max(0, total - max_records)
        if start:
            yield Problem(f"only the newest {max_records} of {total} records parsed", path=path, level="warning")
        pos = start * UTMP.size
        index = start
        empty = corrupt = 0
        while pos < total * UTMP.size:
            ctx.check()
            data = os.pread(fd, min(READ_CHUNK, total * UTMP.size - pos), pos)
            if not data:
                break
            data = data[: len(data) - len(data) % UTMP.size]
            for rec in parse_utmp(data, path, index):
                if rec.get("zeroed"):
                    empty += 1
                    yield Record(f"{stream}_empty", rec)
                    continue
                corrupt += bool(rec.get("corrupt"))
                yield Record(stream, rec)
            index += len(data) // UTMP.size
            pos += len(data)
        if corrupt:
            yield Problem(f"{corrupt} record(s) with a type outside 0-9 (corrupt: true in stream {stream})",
                          path=path, level="warning")
        if empty:
            yield Problem(f"{empty} EMPTY or zeroed record(s) kept in stream {stream}_empty", path=path,
                          level="info")
    finally:
        os.close(fd)


def utmp(ctx: Context) -> Iterator[Item]:
    """/run/utmp (or /var/run/utmp through its link) of the live host or of the --root, like wtmp."""
    seen = False
    for path in ctx.opt("paths", ["/run/utmp"]):
        try:
            real = resolve(ctx, path)
        except OSError:
            continue
        if seen:
            continue
        seen = True
        yield from _records_of(ctx, real, "sessions", 100000)
    if not seen:
        # /run is a tmpfs: an image or a copied root usually has none, a running host always has one
        yield Problem("no utmp file found", level="warning" if ctx.live else "info")


def login_records(ctx: Context) -> Iterator[Item]:
    max_records = int(ctx.opt("max_records", 200000))
    for stream in ("wtmp", "btmp"):
        for path in ctx.opt(stream, []):
            yield from _records_of(ctx, path, stream, max_records)
    for path in ctx.opt("lastlog", []):
        yield from _lastlog(ctx, path)


def _lastlog(ctx: Context, path: str) -> Iterator[Item]:
    """lastlog is sparse (indexed by UID up to 2^32): only the data regions are read."""
    opened = _open(ctx, path)
    if not isinstance(opened, tuple):
        yield from [opened] if opened else []
        return
    fd, st = opened
    try:
        names = {u["uid"]: u["name"] for u in passwd_users(ctx)}
        pos = 0
        while pos < st.st_size:
            ctx.check()
            try:
                data_start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # ENXIO: no more data
            hole = os.lseek(fd, data_start, os.SEEK_HOLE)
            first = data_start // LASTLOG.size
            pos = first * LASTLOG.size
            while pos < hole:
                data = os.pread(fd, min(LASTLOG.size * 4096, hole - pos + LASTLOG.size), pos)
                usable = len(data) - len(data) % LASTLOG.size
                if usable <= 0:
                    pos = hole
                    break
                for i in range(usable // LASTLOG.size):
                    ll_time, line, host = LASTLOG.unpack_from(data, i * LASTLOG.size)
                    uid = pos // LASTLOG.size + i
                    if ll_time:
                        yield Record("lastlog", {"source": path, "uid": uid, "user": names.get(uid),
                                                 "time_utc": utc(ll_time), "line": _cstr(line), "host": _cstr(host)})
                pos += usable
    finally:
        os.close(fd)
