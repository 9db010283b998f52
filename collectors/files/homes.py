"""Who has a home on the evidence root: passwd entries, /root and every /home/* directory."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass

from collectors.base import Context, Problem
from collectors.files.fsread import listdir, read_capped, stat_path
from collectors.util import parse_passwd


@dataclass
class Home:
    user: str | None
    uid: int | None
    path: str  # evidence path, symlinks resolved inside the root


def passwd_users(ctx: Context) -> list[dict]:
    try:
        return parse_passwd(read_capped(ctx, "/etc/passwd", 16 << 20)[0])
    except OSError:
        return []


def homes(ctx: Context) -> Iterator[Home | Problem]:
    seen: set[str] = set()
    candidates: list[tuple[str | None, int | None, str]] = []
    for user in passwd_users(ctx):
        if user["home"] and user["home"].startswith("/") and user["home"] != "/":
            candidates.append((user["name"], user["uid"], user["home"]))
    candidates.append(("root", 0, "/root"))
    try:
        for name, _ in listdir(ctx, "/home"):
            candidates.append((None, None, "/home/" + name))
    except OSError:
        pass
    owners = {home: (name, uid) for name, uid, home in candidates if name}
    for name, uid, home in candidates:
        try:
            real, st = stat_path(ctx, home)
            if not stat.S_ISDIR(st.st_mode):
                continue
        except OSError:
            continue
        if real in seen:
            continue
        seen.add(real)
        if name is None:
            name, uid = owners.get(real, (None, None))
        if name is None:
            uid = st.st_uid
        yield Home(name, uid, real)
