"""What the two file-timeline readers share: the bodyfile's letters (as TSK's fls prints them) and the
mount table. collectors/disk/tsk.py reads the raw filesystem, collectors/disk/statx.py the OS's view
where TSK cannot; both write the same bodyfile fields."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

# One letter per TSK_FS_NAME_TYPE / TSK_FS_META_TYPE value, as fls prints them (fs_name.c, fs_inode.c).
NAME_TYPE_CHARS = "-pcdbrlshwvV"
META_TYPE_CHARS = "-rdpcblshwvV"


@dataclass
class Mount:
    major: int
    minor: int
    root: str  # the directory of the filesystem that is mounted (not "/" for bind mounts)
    point: str
    fstype: str
    source: str


class Unavailable(Exception):
    """The raw filesystem cannot be read; the message says why."""

    def __init__(self, reason: str, device: str | None = None):
        super().__init__(reason)
        self.device = device


def read_mounts(path: str = "/proc/self/mountinfo") -> list[Mount]:
    mounts = []
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise Unavailable(f"cannot read {path}: {exc.strerror}") from exc
    for line in lines:
        # id parent major:minor root point options [optional fields...] - fstype source superoptions
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        major, _, minor = fields[2].partition(":")
        mounts.append(Mount(int(major), int(minor), _unescape(fields[3]), _unescape(fields[4]),
                            tail[0], _unescape(tail[1])))
    return mounts


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def make_ls(meta_type: int, mode: int) -> str:
    """tsk_fs_meta_make_ls: the type letter, then rwx with setuid/setgid/sticky as ls shows them."""
    out = [_char(META_TYPE_CHARS, meta_type)]
    for shift, special, special_char in ((6, 0o4000, "s"), (3, 0o2000, "s"), (0, 0o1000, "t")):
        bits = (mode >> shift) & 0o7
        out.append("r" if bits & 4 else "-")
        out.append("w" if bits & 2 else "-")
        if mode & special:
            out.append(special_char if bits & 1 else special_char.upper())
        else:
            out.append("x" if bits & 1 else "-")
    return "".join(out)


def _char(table: str, index: int) -> str:
    return table[index] if 0 <= index < len(table) else "-"


def _printable(raw: bytes) -> bytes:
    # fls replaces control characters (TSK_IS_CNTRL: 0x00-0x1f) with "^" so a name cannot break a line
    return bytes(b if b >= 0x20 else 0x5E for b in raw)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def fls_line(record: dict[str, Any]) -> str:
    """The ``fls -m`` line of a bodyfile record: a TSK record carries it as ``line``; a statx record, which
    leaves it out (every field is already in the record), gets it made here the same way."""
    if isinstance(record.get("line"), str):
        return record["line"]
    raw = bytes.fromhex(record["name_hex"]) if record.get("name_hex") else os.fsencode(str(record.get("name", "")))
    shown = _printable(raw)
    if record.get("link") is not None:
        shown += b" -> " + _printable(os.fsencode(str(record["link"])))
    fields = [str(record.get("md5") or "0"), os.fsdecode(shown), str(record.get("inode", 0)),
              str(record.get("mode_as_string", "")), str(record.get("uid", 0)), str(record.get("gid", 0)),
              str(record.get("size", 0))]
    return "|".join(fields + [str(int(record.get(k) or 0)) for k in ("atime", "mtime", "ctime", "crtime")])
