"""Scheduled tasks: system crontab, /etc/cron.d, user crontabs, anacrontab, cron.{hourly,...} scripts.

Our own parser because dissect.target 3.25 drops `@reboot` (and other @-nickname) lines, a classic
persistence spot, and reads the user field of system crontabs as part of the command."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import copy_file, read_capped, walk_glob
from collectors.files.histories import executed_paths
from collectors.util import text

RUN_PARTS_NAME = re.compile(r"[A-Za-z0-9_-]+")
NICKNAMES = {"@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
SYSTEM_TABLES = ["/etc/crontab", "/etc/cron.d/*"]  # these have a user field
USER_TABLES = ["/var/spool/cron/crontabs/*", "/var/spool/cron/*", "/var/spool/cron/tabs/*"]


def parse_crontab(data: bytes, path: str, system: bool, owner: str | None) -> Iterator[dict]:
    env: dict[str, str] = {}
    for number, raw in enumerate(text(data).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if "=" in words[0] and not words[0].startswith(("@", "*")) and not words[0][0].isdigit():
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"').strip("'")
            continue
        if words[0] in NICKNAMES or words[0].startswith("@"):
            schedule, rest = words[0], words[1:]
        elif len(words) >= 6:
            schedule, rest = " ".join(words[:5]), words[5:]
        else:
            yield {"path": path, "line": number, "error": "not a cron line", "text": line[:512]}
            continue
        user = owner
        if system and rest:
            user, rest = rest[0], rest[1:]
        yield {"path": path, "line": number, "schedule": schedule, "at_boot": schedule == "@reboot",
               "user": user, "command": " ".join(rest), "environment": dict(env) or None}


def parse_anacrontab(data: bytes, path: str) -> Iterator[dict]:
    for number, raw in enumerate(text(data).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or ("=" in line.split()[0]):
            continue
        words = line.split(None, 3)
        if len(words) == 4:
            yield {"path": path, "line": number, "schedule": f"anacron period {words[0]} delay {words[1]}",
                   "at_boot": False, "user": "root", "command": words[3], "job": words[2]}


def collect(ctx: Context) -> Iterator[Item]:
    cap = int(ctx.opt("cap_bytes", 1 << 20))
    seen: set[str] = set()
    for patterns, system in ((SYSTEM_TABLES, True), (USER_TABLES, False), (["/etc/anacrontab"], None)):
        for pattern in patterns:
            for hit in walk_glob(ctx, pattern):
                if isinstance(hit, Problem):
                    yield hit
                    continue
                if hit in seen or os.path.basename(hit).startswith("."):
                    continue
                seen.add(hit)
                try:
                    data, _, _ = read_capped(ctx, hit, cap)
                except OSError as exc:
                    yield Problem.from_os_error(exc, "cannot read crontab", hit)
                    continue
                rows = parse_anacrontab(data, hit) if system is None else \
                    parse_crontab(data, hit, system, None if system else os.path.basename(hit))
                for row in rows:
                    executed = executed_paths(str(row.get("command") or ""), None, None)[0]
                    if executed:  # what the job runs by path, for rules that join it with dropped files
                        row["executed"] = executed
                    yield Record("cron", row)
                yield from copy_file(ctx, hit, cap)
    for period in ("hourly", "daily", "weekly", "monthly"):
        for hit in walk_glob(ctx, f"/etc/cron.{period}/*"):
            if isinstance(hit, str):
                row = {"path": hit, "schedule": f"@{period} (run-parts)", "at_boot": False, "user": "root",
                       "command": hit}
                if RUN_PARTS_NAME.fullmatch(os.path.basename(hit)):
                    row["executed"] = [hit]
                else:  # Debian's run-parts runs only names of letters, digits, _ and - (.placeholder, x.dpkg-old)
                    row["skipped_by_run_parts"] = True
                yield Record("cron", row)
