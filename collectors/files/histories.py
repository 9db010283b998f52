"""Shell and tool histories of every user, parsed into records and copied raw.

Parsers take bytes (whatever is on disk: garbage, huge lines, invalid UTF-8) and yield dicts;
none of them can fail on content."""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterator

from collectors.base import Context, Item, Problem, Record, SymlinkCopy
from collectors.files.fsread import copy_file, lstat, read_capped, readlink, stat_path
from collectors.files.homes import Home, homes
from collectors.util import text, utc

Parsed = Iterator[dict]
_OCTAL = re.compile(r"\\([0-7]{3})")
_BASH_TS = re.compile(rb"^#(\d{9,11})\s*$")
_ZSH_EXT = re.compile(r"^: *(\d+):(\d+);(.*)$", re.S)


def parse_bash(data: bytes) -> Parsed:
    pending_ts = None
    for number, line in enumerate(data.split(b"\n"), 1):
        m = _BASH_TS.match(line)
        if m:
            pending_ts = int(m.group(1))
            continue
        if not line.strip():
            continue
        yield {"line": number, "command": text(line.rstrip(b"\r")), "timestamp": pending_ts}
        pending_ts = None


def _zsh_unmetafy(data: bytes) -> bytes:
    if b"\x83" not in data:
        return data
    out = bytearray()
    it = iter(data)
    for byte in it:
        if byte == 0x83:
            nxt = next(it, None)
            if nxt is not None:
                out.append(nxt ^ 0x20)
        else:
            out.append(byte)
    return bytes(out)


def parse_zsh(data: bytes) -> Parsed:
    lines = text(_zsh_unmetafy(data)).split("\n")
    number = 0
    while number < len(lines):
        start = number
        entry = lines[number]
        number += 1
        # a command that spans lines ends each continued line with a backslash
        while entry.endswith("\\") and number < len(lines):
            entry = entry[:-1] + "\n" + lines[number]
            number += 1
        if not entry.strip():
            continue
        m = _ZSH_EXT.match(entry)
        if m:
            yield {"line": start + 1, "command": m.group(3), "timestamp": int(m.group(1)),
                   "elapsed_s": int(m.group(2))}
        else:
            yield {"line": start + 1, "command": entry, "timestamp": None}


def _fish_unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_fish(data: bytes) -> Parsed:
    current: dict | None = None
    section = None
    for number, line in enumerate(text(data).split("\n"), 1):
        if line.startswith("- cmd: "):
            if current:
                yield current
            current = {"line": number, "command": _fish_unescape(line[7:]), "timestamp": None}
            section = None
        elif current is not None and line.startswith("  when: "):
            try:
                current["timestamp"] = int(line[8:].strip())
            except ValueError:
                pass
        elif current is not None and line.startswith("  paths:"):
            section = current.setdefault("paths", [])
        elif current is not None and section is not None and line.startswith("    - "):
            section.append(line[6:])
    if current:
        yield current


def parse_lines(data: bytes) -> Parsed:
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            yield {"line": number, "command": text(line.rstrip(b"\r")), "timestamp": None}


def parse_libedit(data: bytes) -> Parsed:
    """mysql and psql: plain lines, or libedit's format (_HiStOrY_V2_ header, \\040 escapes)."""
    for rec in parse_lines(data):
        if rec["line"] == 1 and rec["command"].startswith("_HiStOrY_V2_"):
            continue
        rec["command"] = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), rec["command"])
        yield rec


def parse_less(data: bytes) -> Parsed:
    section = None
    for number, line in enumerate(text(data).split("\n"), 1):
        if line.startswith("."):
            section = line[1:].strip()
        elif line.startswith('"') and section in ("search", "shell"):
            yield {"line": number, "command": line[1:], "timestamp": None, "kind": f"less-{section}"}


_VIM_SECTIONS = {"# Command Line History": "command", "# Search String History": "search",
                 "# Expression History": "expression", "# Input Line History": "input",
                 "# Debug Line History": "debug", "# File marks:": "file_mark",
                 "# History of marks within files": "file_history"}


def parse_viminfo(data: bytes) -> Parsed:
    section = None
    last: dict | None = None
    for number, line in enumerate(text(data).split("\n"), 1):
        if line.startswith("# "):
            if last:
                yield last
                last = None
            section = next((kind for prefix, kind in _VIM_SECTIONS.items() if line.startswith(prefix)), None)
            continue
        if line.startswith("|") and last is not None:
            fields = line[1:].split(",")
            # "|2,0,<time>,..." follows a history entry; "|4,..." a file mark (time is field 5)
            idx = 2 if fields[0] == "2" else 5 if fields[0] == "4" else None
            if idx is not None and len(fields) > idx and fields[idx].isdigit():
                last["timestamp"] = int(fields[idx])
            continue
        if section in ("command", "search", "expression", "input", "debug") and line and line[0] in ":/?=@>":
            if last:
                yield last
            # search entries carry the direction after the type character: "?/pattern"
            command = line[2:] if section == "search" and line[1:2] in ("/", "?", "&") else line[1:]
            last = {"line": number, "command": command, "timestamp": None, "kind": f"vim-{section}"}
        elif section == "file_mark" and line.startswith("'"):
            if last:
                yield last
            parts = line.split(None, 3)
            last = {"line": number, "command": parts[3] if len(parts) > 3 else "", "timestamp": None,
                    "kind": "vim-file-mark"}
        elif section == "file_history" and line.startswith(">"):
            if last:
                yield last
            last = {"line": number, "command": line[1:].strip(), "timestamp": None, "kind": "vim-file-history"}
    if last:
        yield last


PARSERS: dict[str, Callable[[bytes], Parsed]] = {
    "bash": parse_bash, "zsh": parse_zsh, "fish": parse_fish, "sh": parse_lines, "python": parse_lines,
    "lines": parse_lines, "mysql": parse_libedit, "psql": parse_libedit, "less": parse_less, "vim": parse_viminfo,
}


def collect(ctx: Context) -> Iterator[Item]:
    cap = int(ctx.opt("cap_bytes", 16 << 20))
    keep = ctx.opt("keep", "tail")
    max_chars = int(ctx.opt("max_command_chars", 65536))
    for home in homes(ctx):
        if isinstance(home, Problem):
            yield home
            continue
        for relative, kind in ctx.opt("files", []):
            ctx.check()
            yield from _one(ctx, home, home.path.rstrip("/") + "/" + relative, kind, cap, keep, max_chars)


def _one(ctx: Context, home: Home, path: str, kind: str, cap: int, keep: str, max_chars: int) -> Iterator[Item]:
    try:
        path, link = lstat(ctx, path)  # the history's own in-root path: its folders may be links
    except FileNotFoundError:
        return
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read history", path)
        return
    if stat.S_ISLNK(link.st_mode):
        # `ln -sf /dev/null ~/.bash_history` is how history is switched off: the link is the evidence
        try:
            pointed = readlink(ctx, path)
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot read history link", path)
            return
        yield SymlinkCopy(path, pointed, link)
        try:
            resolved, target = stat_path(ctx, path)
        except OSError:
            target = None
        if target is None or not stat.S_ISREG(target.st_mode):
            yield Problem(f"history file is a symbolic link to {pointed}: it keeps nothing", path=path,
                          level="warning")
            return
        link, path = path, resolved
    else:
        link = path
    try:
        # read through the link: a link to a secret is then described as such (link, target, size, hash)
        data, st, truncated = read_capped(ctx, link, cap, keep)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read history", link)
        return
    if truncated and keep == "tail" and b"\n" in data[:-1]:
        data = data.split(b"\n", 1)[-1]  # drop the partial first line of a tail window
    if _looks_binary(data):
        yield Problem("history file holds binary data (parsed as escaped text)", path=path, level="warning")
    long_lines = 0
    for rec in PARSERS[kind](data):
        ctx.check()
        command = rec["command"]
        if len(command) > max_chars:
            rec["command"] = command[:max_chars]
            rec["command_truncated_from"] = len(command)
            long_lines += 1
        rec["timestamp_utc"] = utc(rec.pop("timestamp"))
        rec.update({"user": home.user, "uid": home.uid, "shell": kind, "path": path})
        rec.setdefault("kind", kind)
        yield Record("histories", rec)
    if long_lines:
        yield Problem(f"{long_lines} entries longer than {max_chars} characters truncated in records "
                      "(raw copy keeps them)", path=path, level="warning")
    yield from copy_file(ctx, path, cap, keep)


def _looks_binary(data: bytes) -> bool:
    sample = data[:65536]
    if b"\0" in sample:
        return True
    return len(text(sample).encode()) - len(sample) > len(sample) // 10  # many invalid UTF-8 bytes
