"""Server-side scripts in web roots: a web shell is a file the web server runs, so it sits where the
server looks (/var/www, nginx's and Tomcat's folders). Each script is listed with its times and hash,
and its content is checked for what web shells do and applications do not: run a command or evaluate
code taken straight from the request, or unpack code to evaluate it. Suspicious or recent scripts are
copied raw (bounded) for YARA and the responder."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from collections.abc import Iterator
from typing import Any

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import copy_file, walk_glob, walk_tree
from collectors.util import utc

ROOTS = ["/var/www", "/srv/www", "/srv/http", "/usr/share/nginx/html", "/var/lib/tomcat*/webapps",
         "/opt/tomcat*/webapps", "/usr/local/apache2/htdocs", "/usr/local/tomcat/webapps", "/var/lib/jetty*/webapps"]
EXTENSIONS = ("php", "php3", "php4", "php5", "php7", "php8", "phtml", "phar", "pht", "inc", "jsp", "jspx", "jspf",
              "asp", "aspx", "ashx", "asmx", "cfm", "cgi", "pl")
PRUNE = frozenset({"node_modules", ".git", ".svn", "vendor-cache"})

_REQUEST = rb"(?:@?\$_(?:GET|POST|REQUEST|COOKIE|SERVER|FILES)\b|getallheaders\s*\(|php://input)"
_DECODE = rb"(?:base64_decode|gzinflate|gzuncompress|gzdecode|str_rot13|strrev|hex2bin|convert_uudecode)"
_RUN = rb"(?:system|exec|shell_exec|passthru|popen|proc_open|pcntl_exec|assert|eval|create_function|call_user_func)"
INDICATORS: dict[str, re.Pattern[bytes]] = {
    # system($_GET['c']) / eval($_POST[x]) / assert(@$_REQUEST[...]) — the classic one-liners (China Chopper)
    "runs_request_input": re.compile(_RUN + rb"\s*\(\s*(?:\w+\s*\(\s*)?" + _REQUEST, re.I),
    # $f = $_GET['f']; $f($_POST['x']) — a function name taken from the request
    "calls_request_function": re.compile(rb"\$_(?:GET|POST|REQUEST|COOKIE)\s*\[[^\]]{1,64}\]\s*\(", re.I),
    # `$_GET[c]` — backticks run a shell
    "backtick_request": re.compile(rb"(?:echo|print|=|\(|return)\s*`[^`\n]{0,40}\$_(?:GET|POST|REQUEST|COOKIE)\s*\[",
                                   re.I),
    # eval(base64_decode(...)) / eval(gzinflate(...)) — code unpacked to be evaluated
    "evaluates_decoded_code": re.compile(rb"(?:eval|assert|create_function)\s*\(\s*(?:@\s*)?" + _DECODE, re.I),
    # preg_replace with /e evaluates its replacement
    "preg_replace_eval": re.compile(rb"preg_replace\s*\(\s*['\"](.).{0,200}\1[imsxuADSUXJ]*e[imsxuADSUXJ]*['\"]", re.I),
    # JSP: Runtime.getRuntime().exec(request.getParameter(...))
    "jsp_runs_request_input": re.compile(rb"Runtime\s*\.\s*getRuntime\s*\(\s*\)\s*\.\s*exec\s*\(\s*request\s*\."
                                         rb"getParameter|ProcessBuilder\s*\(\s*request\s*\.getParameter", re.I),
    # ASP.NET: Process.Start with Request input
    "aspx_runs_request_input": re.compile(rb"Process\s*\.\s*Start\s*\([^)]{0,200}Request\s*[\[.]", re.I),
    # a long base64 run, the payload of most packed shells
    "long_encoded_blob": re.compile(rb"[A-Za-z0-9+/]{4000,}={0,2}"),
}


def indicators(data: bytes) -> list[str]:
    return [name for name, pattern in INDICATORS.items() if pattern.search(data)]


def _read(dir_fd: int, name: str, cap: int) -> tuple[bytes, os.stat_result] | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        return (os.pread(fd, cap, 0) if st.st_size <= cap else b""), st
    finally:
        os.close(fd)


def _roots(ctx: Context) -> Iterator[str | Problem]:
    for pattern in ctx.opt("roots", ROOTS):
        yield from walk_glob(ctx, pattern)


def collect(ctx: Context) -> Iterator[Item]:
    extensions = tuple("." + e for e in ctx.opt("extensions", EXTENSIONS))
    read_cap = int(ctx.opt("read_cap_bytes", 1 << 20))
    most_files = int(ctx.opt("max_files", 20000))
    most_copies = int(ctx.opt("max_copies", 200))
    most_recent = int(ctx.opt("max_recent_copies", 50))
    recent_days = float(ctx.opt("recent_days", 14))
    now = float(ctx.opt("now", 0)) or time.time()
    listed = copies = recent_copies = 0
    seen: set[str] = set()
    for top in _roots(ctx):
        if isinstance(top, Problem):
            yield top
            continue
        for folder, files, dir_fd in walk_tree(ctx, top, PRUNE):
            for name in files:
                ctx.check()
                lowered = name.lower()
                if not lowered.endswith(extensions) and ".php" not in lowered:  # shell.php.jpg runs as PHP too
                    continue
                path = folder.rstrip("/") + "/" + name
                if path in seen:
                    continue
                seen.add(path)
                if listed >= most_files:
                    yield Problem(f"more than {most_files} web scripts: the rest not listed", path=top,
                                  level="warning")
                    return
                read = _read(dir_fd, name, read_cap)
                if read is None:
                    continue
                data, st = read
                listed += 1
                found = indicators(data) if data else []
                recent = now - max(st.st_mtime, st.st_ctime) <= recent_days * 86400
                row: dict[str, Any] = {
                    "path": path, "root": top, "name": name, "size": st.st_size, "uid": st.st_uid,
                    "mode": f"{stat.S_IMODE(st.st_mode):04o}", "mtime_utc": utc(st.st_mtime),
                    "ctime_utc": utc(st.st_ctime), "recent": recent, "hidden": name.startswith("."),
                    "double_extension": bool(re.search(r"\.php\d?\.[a-z0-9]{2,4}$", lowered)),
                    "sha256": hashlib.sha256(data).hexdigest() if data else None,
                    "indicators": found, "content_read": bool(data) or st.st_size == 0,
                }
                yield Record("web_files", row)
                # suspicious scripts are always copied (up to the cap); recent ones from a budget of their
                # own, so a fresh deployment of thousands of files cannot crowd the shells out
                if data and ((found and copies < most_copies) or (recent and recent_copies < most_recent)):
                    if found:
                        copies += 1
                    else:
                        recent_copies += 1
                    yield from copy_file(ctx, path, read_cap)
