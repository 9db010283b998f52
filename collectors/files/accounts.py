"""Accounts: passwd, group, shadow (facts only: the hash values stay home), sudoers."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import copy_file, read_capped, walk_glob
from collectors.util import parse_passwd, text

HASH_SCHEMES = {"1": "md5crypt", "2a": "bcrypt", "2b": "bcrypt", "2y": "bcrypt", "5": "sha256crypt",
                "6": "sha512crypt", "y": "yescrypt", "gy": "gost-yescrypt", "7": "scrypt", "sha1": "sha1crypt",
                "md5": "sunmd5"}


def hash_facts(field: str) -> dict:
    """What a shadow password field says without saying the hash."""
    locked = field.startswith("!")
    value = field.lstrip("!")
    if field == "":
        return {"status": "empty password (login without password)", "scheme": None, "locked": False}
    if value in ("*", "") or field in ("!", "!!", "!*"):
        return {"status": "no password (login by password disabled)", "scheme": None, "locked": locked}
    if value.startswith("$"):
        scheme = HASH_SCHEMES.get(value.split("$")[1], "unknown $" + value.split("$")[1] + "$")
    elif len(value) == 13:
        scheme = "descrypt"
    else:
        scheme = "unknown"
    return {"status": "locked password" if locked else "password set", "scheme": scheme, "locked": locked}


def _day(value: str) -> str | None:
    if not value.strip().isdigit():
        return None
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=int(value))).isoformat()


def collect(ctx: Context) -> Iterator[Item]:
    cap = int(ctx.opt("cap_bytes", 8 << 20))
    for path, stream in (("/etc/passwd", "users"), ("/etc/group", "groups"), ("/etc/shadow", "shadow"),
                         ("/etc/gshadow", None)):
        try:
            data, _, truncated = read_capped(ctx, path, cap, facts_only=stream in ("shadow", None))
        except FileNotFoundError:
            continue
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot read", path)
            continue
        if stream == "users":
            for user in parse_passwd(data):
                user["uid0"] = user["uid"] == 0
                yield Record("users", user)
        elif stream == "groups":
            for line in text(data).splitlines():
                parts = line.split(":")
                if len(parts) >= 4 and not line.startswith("#"):
                    members = [m for m in parts[3].split(",") if m]
                    yield Record("groups", {"name": parts[0], "gid": parts[2], "members": members})
        elif stream == "shadow":
            yield from _shadow(data)
        yield from copy_file(ctx, path, cap)  # shadow files are withheld by the sink unless --include-secrets
    for pattern in ("/etc/sudoers", "/etc/sudoers.d/*"):
        for hit in walk_glob(ctx, pattern):
            if isinstance(hit, Problem):
                yield hit
                continue
            try:
                data, _, _ = read_capped(ctx, hit, cap)
            except OSError as exc:
                yield Problem.from_os_error(exc, "cannot read", hit)
                continue
            for number, line in enumerate(text(data).splitlines(), 1):
                stripped = line.strip()
                if stripped and (not stripped.startswith("#") or stripped.startswith(("#include", "#includedir"))):
                    yield Record("sudoers", {"path": hit, "line": number, "rule": stripped,
                                             "nopasswd": "NOPASSWD" in stripped})
            yield from copy_file(ctx, hit, cap)


def _shadow(data: bytes) -> Iterator[Item]:
    for line in text(data).splitlines():
        parts = line.split(":")
        if len(parts) < 2 or line.startswith("#"):
            continue
        parts += [""] * (9 - len(parts))
        rec = {"account": parts[0], **hash_facts(parts[1]), "last_change": _day(parts[2]),
               "min_days": parts[3], "max_days": parts[4], "warn_days": parts[5], "inactive_days": parts[6],
               "expires": _day(parts[7]), "password_hash": parts[1]}
        yield Record("shadow", rec)
