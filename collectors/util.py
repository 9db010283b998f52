"""Small helpers shared by collectors: bounded reads, UTC timestamps, safe text."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os

SMALL_FILE_LIMIT = 4 << 20


def read_small(path: str, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """Read a small file (procfs, sysfs, config) without following a final symlink or blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        chunks, total = [], 0
        while total < limit:
            chunk = os.read(fd, min(65536, limit - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str, limit: int = SMALL_FILE_LIMIT) -> str:
    return text(read_small(path, limit))


def text(data: bytes) -> str:
    """Bytes from the host as a string that survives JSON: invalid UTF-8 becomes \\xNN escapes."""
    return data.decode("utf-8", "backslashreplace")


def utc_ns(ns: int) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC, always with six fraction digits (the nanoseconds
    themselves go beside it): cut the same way at both ends, a later time never prints earlier."""
    seconds, rest = divmod(int(ns), 1_000_000_000)
    return f"{_dt.datetime.fromtimestamp(seconds, _dt.UTC):%Y-%m-%dT%H:%M:%S}.{rest // 1000:06d}Z"


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a whole file of our own choosing (our binary, an image we wrote); raises OSError. Host
    files go through collectors/files/fsread.py instead, which confines and bounds the read."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(chunk):
            digest.update(data)
    return digest.hexdigest()


def utc(ts: float | int | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with a Z; None stays None."""
    if ts is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def parse_passwd(data: bytes) -> list[dict]:
    users = []
    for line in data.splitlines():
        if not line.strip() or line.startswith(b"#"):
            continue
        parts = text(line).split(":")
        if len(parts) < 7:
            parts += [""] * (7 - len(parts))
        try:
            uid, gid = int(parts[2]), int(parts[3])
        except ValueError:
            uid = gid = None
        users.append({"name": parts[0], "uid": uid, "gid": gid, "gecos": parts[4], "home": parts[5],
                      "shell": parts[6]})
    return users
