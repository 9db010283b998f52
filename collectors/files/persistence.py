"""Persistence places the config and cron artifacts do not read (issue 16 item 7).

Streams:

- ``udev_rules``: each line of a udev rules file (/etc, /run, /usr/lib, /lib rules.d) that runs a program
  (``RUN+=``, ``RUN{program}+=``, ``PROGRAM=``, ``IMPORT{program}=``), with the program it starts resolved
  as udev resolves it (a bare name lives in /usr/lib/udev), hashed and matched against the package database,
  and whether a same-named file in a folder udev reads first overrides (or masks) it.
- ``at_jobs``: each job file ``at`` wrote in its spool (Debian /var/spool/cron/atjobs, RHEL/SUSE
  /var/spool/at and its spool/ of running jobs' output): queue, job number and run time from the file name,
  the uid in its ``# atrun`` header, its working directory and environment, and the command part (what the
  user typed), which is what the rules read.
- ``ssh_rc``: ~/.ssh/rc of every home, /etc/ssh/sshrc (sshd runs either at each login, before the user's
  shell) and ~/.ssh/environment (read by sshd only with PermitUserEnvironment, whose effective value is
  recorded beside it): one record per file; any content is notable.

Shared here for the config artifact as well: :class:`Targets`, the facts of a program a unit, a udev rule
or a PAM line names (resolved inside the evidence root, SHA-256 under a size cap, package owner and whether
the package's digest still matches).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from typing import Any

from collectors.base import Context, Item, Problem
from collectors.files.config import (
    MAX_LINE_CHARS,
    MAX_LINES_PER_FILE,
    _Budget,
    _logical_lines,
    _read_text,
    command_executables,
    shell_line_facts,
)
from collectors.files.fsread import copy_file, listdir, lstat, readlink, resolve
from collectors.files.homes import Home, homes, passwd_users
from collectors.files.programs import HASH_BUDGET, HASH_LIMIT, Targets, flat, search
from collectors.files.ssh import _config_lines
from collectors.util import utc

UDEV_DIRS = [("/etc/udev/rules.d", "local"), ("/run/udev/rules.d", "runtime"),
             ("/usr/local/lib/udev/rules.d", "local-vendor"), ("/usr/lib/udev/rules.d", "vendor"),
             ("/lib/udev/rules.d", "vendor")]
UDEV_LIBEXEC = ("/usr/lib/udev", "/lib/udev")  # where a program named without a folder is found
_UDEV_KEY = re.compile(r'\b(RUN|PROGRAM|IMPORT)(?:\{(\w+)\})?\s*(\+=|:=|==|=|!=)\s*"((?:[^"\\]|\\.)*)"')


def udev_runs(line: str) -> Iterator[dict[str, Any]]:
    """The program-running keys of one udev rule line (assignments only: ``PROGRAM==`` is udev's match on
    a program already run, which udev also runs; ``RUN{builtin}`` runs udev's own code, no file)."""
    for key, option, op, value in _UDEV_KEY.findall(line):
        if op == "!=" and key != "PROGRAM":
            continue
        if key == "IMPORT" and option != "program":
            continue  # IMPORT{file,db,cmdline,parent,builtin} read data, they start nothing
        yield {"key": key, "option": option or None, "operator": op, "program": value[:MAX_LINE_CHARS],
               "builtin": option == "builtin"}


def _udev(ctx: Context, cap: int, budget: _Budget, targets: Targets) -> Iterator[Item]:
    first: dict[str, str] = {}  # rules file name -> the folder udev takes it from
    files: list[tuple[str, str, str]] = []  # (path, scope, name)
    folders: set[str] = set()
    for folder, scope in UDEV_DIRS:
        try:
            real = resolve(ctx, folder)
            entries = listdir(ctx, folder)
        except (OSError, ValueError):
            continue
        if real in folders:  # merged /usr: /lib/udev/rules.d is /usr/lib/udev/rules.d
            continue
        folders.add(real)
        for name, is_dir in entries:
            if is_dir or not name.endswith(".rules"):
                continue
            path = folder + "/" + name
            if name not in first:
                first[name] = path
            files.append((path, scope, name))
    pending: list[dict[str, Any]] = []
    masked: dict[str, bool] = {}
    for name, winner in first.items():
        try:  # a link to /dev/null in a folder read first switches the rules file off
            masked[name] = stat.S_ISLNK(lstat(ctx, winner)[1].st_mode) and readlink(ctx, winner) == "/dev/null"
        except (OSError, ValueError):
            masked[name] = False
    for path, scope, name in files:
        ctx.check()
        winner = first[name]
        if masked[name] and winner == path:
            continue
        got = _read_text(ctx, path, cap)
        if got is None:
            continue
        if isinstance(got, Problem):
            yield got
            continue
        body, st = got
        base = {"path": path, "file": name, "scope": scope, "active": winner == path,
                "overridden_by": None if winner == path else winner, "masked": masked[name],
                "file_mtime_ns": st.st_mtime_ns, "file_uid": st.st_uid}
        for number, line in _logical_lines(body):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            for run in udev_runs(line):
                rec = {**base, "line": number, "text": line[:MAX_LINE_CHARS], **run}
                if not run["builtin"]:
                    words = run["program"].split()
                    first_word = words[0] if words else ""
                    if first_word and not first_word.startswith("/"):
                        # udev runs a bare name from its own folder, whatever PATH says
                        first_word = search(ctx, first_word, UDEV_LIBEXEC) or UDEV_LIBEXEC[0] + "/" + first_word
                    rec["target"] = first_word or None
                    rec["executables"] = command_executables(run["program"]) or None
                    targets.want([first_word, *(rec["executables"] or [])])
                if len(pending) <= budget.limit:  # the budget drops the rest anyway: do not hold them
                    pending.append(rec)
        if scope not in ("vendor", "local-vendor"):  # the packages' rules are on every Debian; the rest is copied
            yield from copy_file(ctx, path, cap)
    for rec in pending:
        ctx.check()
        if rec.get("target") and "$" not in rec["target"] and "%" not in rec["target"]:
            facts = targets.facts(rec["target"])
            rec["target_facts"] = facts
            rec.update(flat("target", facts))
        yield from budget.record("udev_rules", rec)


# ---- at jobs ----------------------------------------------------------------------------------------

AT_SPOOLS = [("/var/spool/cron/atjobs", "job"), ("/var/spool/at", "job"), ("/var/spool/cron/atspool", "output"),
             ("/var/spool/at/spool", "output")]
_AT_NAME = re.compile(r"^([a-zA-Z=])([0-9a-f]{5})([0-9a-f]{8})$")
_AT_HEADER = re.compile(r"^#\s*atrun\s+uid=(\d+)\s+gid=(\d+)")
_AT_MAIL = re.compile(r"^#\s*mail\s+(\S+)\s+(\d+)")
_AT_EXPORT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*?);\s*export\s+\1\s*$")
_AT_HEREDOC = re.compile(r"""^\$\{SHELL:-/bin/sh\}\s*<<\s*['"]?(\w+)['"]?\s*$""")
_AT_ESCAPE = re.compile(r"\\(.)")
MAX_AT_ENV = 200


def parse_at_job(body: str, name: str) -> dict[str, Any]:
    """The parts of a job file written by ``at`` (3.1 and 3.2): its header, the environment it saved,
    the folder it changes to, and the command part. at 3.1.13+ on RHEL wraps the commands in a heredoc
    to ``${SHELL:-/bin/sh}``; Debian's 3.2 writes them after the ``cd ... || { ... }`` block."""
    out: dict[str, Any] = {"name": name}
    m = _AT_NAME.match(name)
    if m:
        out.update(queue=m.group(1), job=int(m.group(2), 16), running=m.group(1) == "=",
                   run_at_utc=utc(int(m.group(3), 16) * 60))
    env: dict[str, str] = {}
    commands: list[tuple[int, str]] = []
    state, delimiter = "header", None
    for number, raw in enumerate(body.splitlines()[:MAX_LINES_PER_FILE], 1):
        line = raw.rstrip()
        if state == "header":
            if (h := _AT_HEADER.match(line)):
                out.update(uid=int(h.group(1)), gid=int(h.group(2)))
            elif (h := _AT_MAIL.match(line)):
                out.update(mail_user=h.group(1), mail_always=h.group(2) == "1")
            elif line.startswith("umask "):
                out["umask"] = line.split()[1] if len(line.split()) > 1 else None
            elif (h := _AT_EXPORT.match(line)):
                if len(env) < MAX_AT_ENV:  # at backslash-escapes every character a shell would read
                    env[h.group(1)] = _AT_ESCAPE.sub(r"\1", h.group(2))[:MAX_LINE_CHARS]
            elif line.startswith("cd ") and line.endswith("|| {"):
                out["cwd"] = _AT_ESCAPE.sub(r"\1", line[3:-4].strip())
                state = "cd"
            elif line and not line.startswith("#"):
                state = "commands"  # not at's layout: everything from here on is the job
                commands.append((number, line))
            continue
        if state == "cd":
            if line == "}":
                state = "commands"
            continue
        if delimiter is None and (h := _AT_HEREDOC.match(line)):
            delimiter = h.group(1)
            continue
        if delimiter is not None and line == delimiter:
            break
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append((number, line.strip()))
    out["environment"] = env or None
    out["commands"] = [{"line": n, "text": t[:MAX_LINE_CHARS]} for n, t in commands[:400]] or None
    out["command"] = " ; ".join(t for _, t in commands)[: MAX_LINE_CHARS * 4] or None
    executables: list[str] = []
    for _, t in commands[:400]:
        executables += command_executables(t)
    out["executables"] = list(dict.fromkeys(executables))[:32] or None
    return out


def _at_jobs(ctx: Context, cap: int, budget: _Budget, users: dict[int, str]) -> Iterator[Item]:
    seen: set[str] = set()
    for folder, kind in AT_SPOOLS:
        try:
            entries = listdir(ctx, folder)
        except (OSError, ValueError):
            continue
        for name, is_dir in entries:
            ctx.check()
            path = folder + "/" + name
            if is_dir or name.startswith(".") or path in seen:
                continue  # .SEQ is at's job counter; /var/spool/at/spool is walked as its own folder
            seen.add(path)
            if kind == "output":
                try:
                    _, st = lstat(ctx, path)
                except (OSError, ValueError):
                    continue
                yield from budget.record("at_jobs", {"kind": "output", "path": path, "name": name,
                                                     "file_uid": st.st_uid, "size": st.st_size,
                                                     "mtime_ns": st.st_mtime_ns})
                continue
            got = _read_text(ctx, path, cap)
            if got is None:
                continue
            if isinstance(got, Problem):
                yield got
                continue
            body, st = got
            rec = {"kind": "job", "path": path, **parse_at_job(body, name), "file_uid": st.st_uid,
                   "file_mode": f"{stat.S_IMODE(st.st_mode):04o}", "mtime_ns": st.st_mtime_ns,
                   "ctime_ns": st.st_ctime_ns}
            rec["user"] = users.get(rec.get("uid", st.st_uid))
            yield from budget.record("at_jobs", rec)
            yield from copy_file(ctx, path, cap)


# ---- ~/.ssh/rc, /etc/ssh/sshrc, ~/.ssh/environment ------------------------------------------------------

def _permit_user_environment(ctx: Context) -> str | None:
    """sshd's effective global PermitUserEnvironment (first value wins; Match blocks are not global)."""
    for path in ctx.opt("sshd_configs", ["/etc/ssh/sshd_config"]):
        for item in _config_lines(ctx, path):
            if isinstance(item, Problem):
                continue
            _, _, keyword, value, match = item
            if keyword == "permituserenvironment" and match is None:
                return value
    return None


def _ssh_rc(ctx: Context, cap: int, budget: _Budget, user_homes: list[Home]) -> Iterator[Item]:
    permit = _permit_user_environment(ctx)
    files: list[tuple[str, str, str | None, int | None]] = [("/etc/ssh/sshrc", "sshrc", None, None)]
    for home in user_homes:
        base = home.path.rstrip("/") + "/.ssh/"
        files += [(base + "rc", "rc", home.user, home.uid), (base + "environment", "environment", home.user, home.uid)]
    seen: set[str] = set()
    for path, kind, user, uid in files:
        ctx.check()
        if path in seen:
            continue
        seen.add(path)
        got = _read_text(ctx, path, cap)
        if got is None:
            continue
        if isinstance(got, Problem):
            yield got
            continue
        body, st = got
        lines = [(n, t.strip()) for n, t in _logical_lines(body, continuation=kind != "environment")]
        lines = [(n, t) for n, t in lines if t and not t.startswith("#")]
        rec: dict[str, Any] = {
            "kind": kind, "path": path, "user": user, "uid": uid, "scope": "system" if user is None else "user",
            "size": st.st_size, "empty": not lines, "lines": len(lines), "file_uid": st.st_uid,
            "file_mode": f"{stat.S_IMODE(st.st_mode):04o}", "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "text": " ; ".join(t for _, t in lines)[: MAX_LINE_CHARS * 4] or None}
        if kind == "environment":
            env = {}
            for _, t in lines[:MAX_AT_ENV]:
                name, eq, value = t.partition("=")
                if eq:
                    env[name.strip()] = value
            # values under "environment" pass the redaction gate's secret-name masking; names stay readable
            rec.update(environment=env or None, variables=sorted(env) or None, permit_user_environment=permit,
                       honoured=(permit or "no").lower() not in ("no", "none"))
            rec["text"] = None  # the values are in "environment" only, where the gate masks secret names
        else:
            executables: list[str] = []
            unsets: list[str] = []
            for _, t in lines:
                facts = shell_line_facts(t)
                executables += facts.get("executables") or []
                unsets += facts.get("unsets") or []
            rec.update(executables=list(dict.fromkeys(executables))[:32] or None, unsets=unsets or None)
        yield from budget.record("ssh_rc", rec)
        yield from copy_file(ctx, path, cap)


# ---- the collector ------------------------------------------------------------------------------------

def collect(ctx: Context) -> Iterator[Item]:
    cap = int(ctx.opt("cap_bytes", 1 << 20))
    budget = _Budget(int(ctx.opt("max_records_per_stream", 50000)))
    targets = Targets(ctx, int(ctx.opt("hash_limit", HASH_LIMIT)), int(ctx.opt("hash_budget", HASH_BUDGET)))
    user_homes = [h for h in homes(ctx) if isinstance(h, Home)]
    users = {u["uid"]: u["name"] for u in passwd_users(ctx) if u.get("uid") is not None}
    for part in (lambda: _udev(ctx, cap, budget, targets), lambda: _at_jobs(ctx, cap, budget, users),
                 lambda: _ssh_rc(ctx, cap, budget, user_homes)):
        ctx.check()
        yield from part()
    yield from (p for p in targets.problems if p.level != "info")
