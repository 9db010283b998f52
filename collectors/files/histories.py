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
_ZSH_EXT = re.compile(rb"^: *(\d+):(\d+);(.*)$", re.S)


_SH_OPEN = {"if": "fi", "case": "esac", "for": "done", "while": "done", "until": "done", "select": "done",
            "{": "}"}
_SH_CLOSE = {"fi", "esac", "done", "}"}
_SH_CMD_AFTER = {"then", "do", "else", "elif", "if", "while", "until", "{", "!", "time", "in"}
_SH_SPECIAL = re.compile(r"['\"`\\$#;&|()<>]")
_SH_PLAIN = re.compile(r"[^\s'\"`\\$#;&|()<>]+")
_SH_QUOTE_END = {"'": re.compile(r"'"), '"': re.compile(r'\\.?|"'), "$'": re.compile(r"\\.?|'"),
                 "`": re.compile(r"\\.?|`")}
_SH_OPERATOR = re.compile(r"&&|\|\||;;&|;;|;&|\|&|<<<|<<-|<<|>>|&>|[;&|()<>]")
_SH_MAX_DEPTH = 256  # deeper nesting is no command anyone typed: still unfinished, not counted further
_BASH_MAX_ENTRY_LINES = 10000  # an unfinished command (a quote never closed) ends here, not at the file's end


class _ShellInput:
    """Whether the lines of a bash entry so far form a complete command, as bash's parser decides when
    to stop reading: an open quote, a trailing backslash or operator, a pending here-document or an
    open compound command (if/case/loops, braces, parentheses) means the next line is part of it.
    A light lexer, not a parser: where it cannot tell it says complete."""

    def __init__(self) -> None:
        self.quote = ""  # ', ", $' or `
        self.stack: list[str] = []
        self.heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs) still to read
        self.reading_heredoc: tuple[str, bool] | None = None
        self.continued = False

    def incomplete(self) -> bool:
        return bool(self.quote or self.stack or self.heredocs or self.reading_heredoc or self.continued)

    def feed(self, line: str) -> None:
        if self.reading_heredoc:
            self._heredoc_body(line, self.reading_heredoc)
            return
        self.continued = False
        if not self.quote and not _SH_SPECIAL.search(line):  # words only: keywords are all that count
            self._words(line)
            return
        self._lex(line)

    def _heredoc_body(self, line: str, heredoc: tuple[str, bool]) -> None:
        """A line of a here-document: only its delimiter line matters, ending it (and starting the next)."""
        word, tabs = heredoc
        if (line.lstrip("\t") if tabs else line) == word:
            self.reading_heredoc = self.heredocs.pop(0) if self.heredocs else None

    def _words(self, line: str) -> None:
        """The fast path for a line without quotes, operators or expansions (most history lines): split it."""
        cmd = True
        for text_ in line.split():
            if cmd and text_ in _SH_OPEN and len(self.stack) < _SH_MAX_DEPTH:
                self.stack.append(_SH_OPEN[text_])
            elif cmd and text_ in _SH_CLOSE and self.stack and self.stack[-1] == text_:
                self.stack.pop()
            cmd = text_ in _SH_CMD_AFTER or (cmd and "=" in text_ and not text_.startswith("="))

    def _lex(self, line: str) -> None:
        """Any other line, character class by character class.  ``cmd`` is whether the next word is in command
        position (only there do keywords open or close anything); ``want_delim`` is set after ``<<``, when the
        next word is a here-document delimiter; ``last`` is the last token, for a trailing operator."""
        i, n, cmd, want_delim, last = 0, len(line), True, None, ""
        word: list[str] = []

        def end_word() -> None:
            nonlocal cmd, want_delim, last
            text_ = "".join(word)
            word.clear()
            if not text_:
                return
            last = "word"
            if want_delim is not None:
                self.heredocs.append((text_.replace("'", "").replace('"', "").replace("\\", ""), want_delim))
                want_delim = None
            elif cmd and text_ in _SH_OPEN and len(self.stack) < _SH_MAX_DEPTH:
                self.stack.append(_SH_OPEN[text_])
            elif cmd and text_ in _SH_CLOSE and self.stack and self.stack[-1] == text_:
                self.stack.pop()
            cmd = text_ in _SH_CMD_AFTER or (cmd and "=" in text_ and not text_.startswith("="))

        while i < n:
            if self.quote:
                i = self._quoted(line, i, word)
                continue
            m = _SH_PLAIN.match(line, i)
            if m:
                word.append(m.group())
                i = m.end()
                continue
            c = line[i]
            if c in "\\'\"`$":
                i = self._escape_quote_or_dollar(line, i, word)
            elif c == "#":
                if not word:
                    break  # a comment
                word.append(c)
                i += 1
            elif c in " \t":
                end_word()
                i += 1
            else:
                op = m.group() if (m := _SH_OPERATOR.match(line, i)) else c
                end_word()
                if op in ("<<", "<<-"):
                    want_delim = op == "<<-"
                elif op == "(" and len(self.stack) < _SH_MAX_DEPTH:
                    self.stack.append(")")
                elif op == ")" and self.stack and self.stack[-1] == ")":
                    self.stack.pop()
                cmd = op not in ("<<", "<<-", "<<<", "<", ">", ">>", "&>")
                last = op
                i += len(op)
        end_word()
        self._end_of_line(last)

    def _quoted(self, line: str, i: int, word: list[str]) -> int:
        """Inside a quote from ``i``: add to ``word`` up to its end (or the line's); where to go on from."""
        m = _SH_QUOTE_END[self.quote].search(line, i)
        if m is None:
            word.append(line[i:])
            return len(line)
        word.append(line[i:m.end()])
        if m.group() in ("'", '"', "`"):
            self.quote = ""
        return m.end()

    def _escape_quote_or_dollar(self, line: str, i: int, word: list[str]) -> int:
        """A backslash, an opening quote or a ``$`` at ``i``, added to ``word``; where to go on from.  A backslash
        ending the line continues the command on the next one."""
        c = line[i]
        if c == "\\":
            if i == len(line) - 1:
                self.continued = True
                return len(line)
            word.append(line[i:i + 2])
            return i + 2
        if c in "'\"`":
            self.quote = c
            word.append(c)
            return i + 1
        if line.startswith("$'", i):
            self.quote = "$'"
            word.append("$'")
            return i + 2
        if line.startswith("$(", i):
            if len(self.stack) < _SH_MAX_DEPTH:
                self.stack.append(")")
            word.append("$(")
            return i + 2
        word.append(c)
        return i + 1

    def _end_of_line(self, last: str) -> None:
        """A trailing pipe or and/or list continues on the next line; else a pending here-document starts."""
        if not self.quote and last in ("|", "||", "&&", "|&"):
            self.continued = True
        if self.heredocs and not self.quote and not self.continued:
            self.reading_heredoc = self.heredocs.pop(0)


def parse_bash(data: bytes) -> Parsed:
    """bash's file as bash writes it. With HISTTIMEFORMAT set bash writes ``#<epoch>`` before each entry
    and an entry may span lines (a command with embedded newlines, ``shopt -s lithist``, a quoted
    argument spanning lines): its lines run to the next ``#<epoch>`` line while the command they make
    is unfinished (open quote, compound command, here-document, trailing pipe or backslash). A line
    after a finished entry with no ``#<epoch>`` of its own (a shell without HISTTIMEFORMAT appending, a
    hand edit) is an entry of its own with no time (``untimed``): it does not take the time of the
    entry before it, and the entries after it keep theirs. Lines before the first ``#<epoch>`` (or in a
    file with none) are one entry each, as bash reads them."""
    entry: list[bytes] = []
    start, entry_ts, pending_ts, timed = 0, None, None, False
    shell = _ShellInput()

    def flush() -> dict | None:
        while entry and not entry[-1].strip():
            entry.pop()  # bash never ends a command with a newline: blank lines after it are not it
        rec = None
        if entry:
            rec = {"line": start, "command": text(b"\n".join(entry)), "timestamp": entry_ts}
            if len(entry) > 1:
                rec["lines"] = len(entry)
            if entry_ts is None:
                rec["untimed"] = True
            entry.clear()
        return rec

    for number, line in enumerate(data.split(b"\n"), 1):
        line = line[:-1] if line.endswith(b"\r") else line
        m = _BASH_TS.match(line)
        if m:
            if rec := flush():
                yield rec
            pending_ts, timed = int(m.group(1)), True
            continue
        if not timed:
            if line.strip():
                yield {"line": number, "command": text(line), "timestamp": None}
            continue
        if entry and shell.incomplete() and len(entry) < _BASH_MAX_ENTRY_LINES:
            entry.append(line)
            shell.feed(text(line))
            continue
        if not line.strip():
            continue
        if rec := flush():
            yield rec
        start, entry_ts, pending_ts = number, pending_ts, None
        entry.append(line)
        shell = _ShellInput()
        shell.feed(text(line))
    if rec := flush():
        yield rec


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


def _zsh_entries(data: bytes) -> Iterator[tuple[int, bytes]]:
    """zsh's readhistline: a line ending in a backslash goes on (the backslash becomes a newline); an
    entry whose text ends in a backslash was written with one space after it, which is taken off."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    number = 0
    while number < len(lines):
        start, buf = number, lines[number]
        number += 1
        while buf.endswith(b"\\") and number < len(lines):
            buf = buf[:-1] + b"\n" + lines[number]
            number += 1
        stripped = buf.rstrip(b" ")
        if stripped != buf and stripped.endswith(b"\\"):
            buf = buf[:-1]
        yield start + 1, buf


def parse_zsh(data: bytes) -> Parsed:
    """zsh's file as zsh reads it back (readhistfile): ``: <start>:<elapsed>;<command>`` in the extended
    format, the bare command otherwise (a leading ``\\:`` stands for ``:``); bytes are metafied."""
    for number, entry in _zsh_entries(data):
        timestamp = elapsed = None
        if entry.startswith(b":"):
            m = _ZSH_EXT.match(entry)
            if m:
                timestamp, elapsed, entry = int(m.group(1)), int(m.group(2)), m.group(3)
        elif entry.startswith(b"\\:"):
            entry = entry[1:]
        command = text(_zsh_unmetafy(entry))
        if not command.strip():
            continue
        rec = {"line": number, "command": command, "timestamp": timestamp}
        if elapsed is not None:
            rec["elapsed_s"] = elapsed
        yield rec


def _fish_unescape(value: str) -> str:
    """fish writes a backslash as two and a newline as backslash-n; any other backslash stays."""
    return re.sub(r"\\(\\|n)", lambda m: "\n" if m.group(1) == "n" else "\\", value)


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
            section.append(_fish_unescape(line[6:]))
    if current:
        yield current


def parse_ksh93(data: bytes) -> Parsed:
    """ksh93's binary file (\\201\\001 first): each command NUL-terminated, starting on an even byte
    (NUL padding), ending in its newline; \\202\\0 opens a 6-byte command-number marker and
    \\201\\0 cancels the command before it (hist_eof). No times are kept."""
    out: list[dict] = []
    pos, size = 2, len(data)
    while pos < size:
        byte = data[pos]
        if byte == 0:
            pos += 1
        elif byte == 0x82 and data[pos + 1:pos + 2] == b"\0":
            pos += 6
        elif byte == 0x81 and data[pos + 1:pos + 2] == b"\0":
            if out:
                out[-1]["cancelled"] = True
            pos += 2
        elif byte in (0x81, 0x82):
            pos += 1
        else:
            end = data.find(b"\0", pos)
            end = size if end < 0 else end
            command = data[pos:end]
            out.append({"offset": pos, "command": text(command[:-1] if command.endswith(b"\n") else command),
                        "timestamp": None})
            pos = end + 1
    yield from (r for r in out if r["command"].strip())


def parse_mksh(data: bytes) -> Parsed:
    """mksh's binary file (\\253\\315 first): <\\377><command number, 4 bytes big-endian><command><NUL>."""
    pos = 2
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 5 > len(data):
            return
        end = data.find(b"\0", pos + 5)
        end = len(data) if end < 0 else end
        command = text(data[pos + 5:end])
        if command.strip():
            yield {"offset": pos, "event": int.from_bytes(data[pos + 1:pos + 5], "big"), "command": command,
                   "timestamp": None}
        pos = end + 1


_BINARY_FORMATS = (b"\x81\x01", b"\xab\xcd")  # ksh93's and mksh's history files


def parse_sh(data: bytes) -> Parsed:
    """~/.sh_history and the like: ksh93's or mksh's binary file by its magic, else one line each (ash)."""
    if data[:2] == b"\x81\x01":
        return parse_ksh93(data)
    if data[:2] == b"\xab\xcd":
        return parse_mksh(data)
    return parse_lines(data)


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


SHELL_KINDS = frozenset({"bash", "zsh", "fish", "sh"})
# Words that run the command after them (with their own options): the program is further on.
_LAUNCHERS = frozenset({"sudo", "doas", "nohup", "env", "exec", "nice", "ionice", "setsid", "time", "timeout",
                        "stdbuf", "chroot", "busybox", "command", "builtin", "xargs", "watch", "strace", "taskset",
                        "bash", "sh", "dash", "zsh", "ksh", "ash", "python", "python2", "python3", "perl", "ruby",
                        "php", "node", "source", "."})
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "|&", "(", ")", "{", "}", "then", "do", "else"})
_SHELLS = frozenset({"bash", "sh", "dash", "zsh", "ksh", "ash", "busybox"})
MAX_LEXED = 8192  # characters of a command read for the paths it runs
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# Launcher options followed by a value (sudo -u www, nice -n 19, env -u VAR, ionice -c 3, stdbuf -o L)
_VALUE_OPTIONS = frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-n", "-c", "-o", "-e", "-i",
                            "-k", "-s", "--user", "--group", "--signal", "--kill-after"})
_ARGUMENT = re.compile(r"\d+(\.\d+)?[smhd]?|0x[0-9a-fA-F]+")  # timeout 10s, taskset 0x3


def executed_paths(command: str, cwd: str | None, home: str | None) -> tuple[list[str], str | None]:
    """The files a shell command runs by path (``/tmp/.x/kworker``, ``./xmrig`` after ``cd /dev/shm``,
    ``bash /tmp/s.sh``, ``sudo nohup ~/m``), and the working folder after it (``cd`` tracked, so a later
    ``./x`` resolves). A lexing failure or a folder we cannot know yields nothing rather than a guess."""
    import itertools
    import posixpath
    import shlex

    if "/" not in command and "cd" not in command:
        return [], cwd  # nothing runs by path and the folder stays: most lines, at no cost
    try:  # shlex is pure Python: a pasted megabyte must not cost minutes
        lexer = shlex.shlex(command[:MAX_LEXED].replace("\n", " ; "), posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        words = list(itertools.islice(lexer, 512))
    except ValueError:
        return [], cwd
    found: list[str] = []
    position = True  # the next word is in command position
    after_cd = skip = script = False
    launcher, before_cd = "", cwd
    for word in words:
        if word in _SEPARATORS or set(word) <= set(";&|()"):
            position, after_cd, skip, script = True, False, False, False
            continue
        if script:  # sh -c '…': the string is a command line of its own
            found += executed_paths(word, cwd, home)[0] if len(word) < 4096 else []
            script = skip = False
            continue
        if skip:  # the value of a launcher's option, or chroot's folder
            skip = False
            continue
        if after_cd:
            target = home if word == "~" else word.replace("~", home or "~", 1) if word.startswith("~/") else word
            cwd = posixpath.normpath(target if target.startswith("/") else posixpath.join(before_cd, target)) \
                if target and (target.startswith("/") or before_cd) and not target.startswith(("-", "~", "$")) \
                else None
            after_cd = False
            continue
        if not position:
            continue
        if _ASSIGNMENT.match(word) or _ARGUMENT.fullmatch(word):
            continue  # VAR=value before a command; timeout's duration, taskset's mask
        if word.startswith("-"):
            script = word == "-c" and launcher in _SHELLS
            skip = word in _VALUE_OPTIONS and not script
            continue
        name = word.rsplit("/", 1)[-1]
        if name == "chroot":
            skip = True
        if word == "cd":  # a bare `cd` goes home; `cd DIR` is read from the word after it
            before_cd, cwd = cwd, home
            after_cd, position = True, False
            continue
        if "/" in word:
            if word.startswith("~/") and home:
                word = home.rstrip("/") + word[1:]
            if word.startswith("/"):
                found.append(posixpath.normpath(word))
            elif cwd and not word.startswith(("~", "$")):
                found.append(posixpath.normpath(posixpath.join(cwd, word)))
        if name not in _LAUNCHERS:
            position = False
        launcher = name
    return list(dict.fromkeys(found))[:16], cwd


PARSERS: dict[str, Callable[[bytes], Parsed]] = {
    "bash": parse_bash, "zsh": parse_zsh, "fish": parse_fish, "sh": parse_sh, "python": parse_lines,
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
    if _looks_binary(data) and data[:2] not in _BINARY_FORMATS:
        yield Problem("history file holds binary data (parsed as escaped text)", path=path, level="warning")
    long_lines = 0
    cwd: str | None = home.path  # a login shell starts in its home
    for rec in PARSERS[kind](data):
        ctx.check()
        command = rec["command"]
        if kind in SHELL_KINDS:
            executed, cwd = executed_paths(command, cwd, home.path)
            if executed:
                rec["executed"] = executed
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
