"""The programs records name (a unit's ExecStart, a udev RUN, a PAM module): resolved inside the evidence
root, hashed within a budget and checked against the package that owns them. Shared by the config and
persistence collectors, which is why it is a module of its own (either importing the other was a cycle)."""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from collections.abc import Iterable
from typing import Any

from collectors.base import Cancelled, Context, Problem
from collectors.files import packages
from collectors.files.fsread import lstat, open_regular, stat_path
from collectors.util import utc

HASH_LIMIT = 64 << 20  # a program bigger than this is described, not hashed
HASH_BUDGET = 512 << 20  # bytes hashed per artifact: a thousand units naming a thousand big files stay bounded
MAX_TARGETS = 4096  # distinct programs looked at per artifact
# where a program named without a folder is looked for (systemd's fixed search path; a shell's usual PATH)
SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class Targets:
    """Facts of the programs records name, cached by path. The package database is read once, lazily, for
    the PAM module folders and the file names announced with :meth:`want` before the first lookup (so a
    300 000-file package set is never held)."""

    def __init__(self, ctx: Context, hash_limit: int = HASH_LIMIT, hash_budget: int = HASH_BUDGET):
        self.ctx, self.hash_limit, self.hash_budget = ctx, hash_limit, hash_budget
        self.names: set[str] = set()
        self.db: packages.PackageDB | None = None
        self.problems: list[Problem] = []
        self.cache: dict[str, dict[str, Any]] = {}
        self.wanted: frozenset[str] = frozenset()

    def want(self, paths: Iterable[str]) -> None:
        for path in paths:
            if path:
                self.names.add(posixpath.basename(path))

    def _owners(self, path: str) -> list[packages.Owner] | None:
        if self.db is None:
            names = frozenset(self.names)
            try:
                self.db, self.problems = packages.load(
                    self.ctx, lambda p: "/security/" in p or p.rpartition("/")[2] in names)
            except Cancelled:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken database makes ownership unknown, never a crash
                self.db = packages.PackageDB()
                self.problems = [Problem(f"package database not read: {type(exc).__name__}: {exc}"[:300])]
            self.wanted = names
        if "/security/" not in path and posixpath.basename(path) not in self.wanted:
            return None  # not announced before the database was read: unknown, not "unowned"
        return self.db.owners(path)

    def facts(self, path: str) -> dict[str, Any]:
        """{path, found, resolved, file_type, size, mode, uid, mtime_utc, sha256 | hash_skipped, owned,
        package, package_verify} of an absolute evidence path."""
        if path in self.cache:
            return self.cache[path]
        out: dict[str, Any] = {"path": path, "found": False}
        if len(self.cache) >= MAX_TARGETS:
            out["skipped"] = f"over {MAX_TARGETS} programs looked at"
            return out
        self.cache[path] = out
        try:
            where, st = stat_path(self.ctx, path)
        except (OSError, ValueError):
            return out
        try:
            link = stat.S_ISLNK(lstat(self.ctx, path)[1].st_mode)
        except (OSError, ValueError):
            link = False
        out.update(found=True, resolved=where, link=link,
                   file_type="file" if stat.S_ISREG(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode)
                   else "other", size=st.st_size, mode=f"{stat.S_IMODE(st.st_mode):04o}", uid=st.st_uid,
                   mtime_utc=utc(st.st_mtime))
        if not stat.S_ISREG(st.st_mode):
            return out
        owners = self._owners(where)
        out["owned"] = None if owners is None else bool(owners)
        if owners:
            out["package"] = owners[0].package
        want_md5 = owners[0].digest if owners and owners[0].algo == "md5" else None
        if st.st_size > self.hash_limit:
            out["hash_skipped"] = f"over {self.hash_limit} bytes"
            return out
        if st.st_size > self.hash_budget:
            out["hash_skipped"] = "artifact hashing budget spent"
            return out
        self.hash_budget -= st.st_size
        try:
            sha, md5 = self._hash(where, bool(want_md5))
        except Cancelled:
            raise
        except OSError as exc:
            out["hash_skipped"] = f"{type(exc).__name__}: {exc.strerror or exc}"[:200]
            return out
        out["sha256"] = sha
        if owners:
            out["package_verify"] = ("config" if owners[0].config else "ok" if md5 == want_md5
                                     else "no_digest" if not want_md5 else "mismatch")
        return out

    def _hash(self, path: str, md5_too: bool) -> tuple[str, str | None]:
        fd, st, where = open_regular(self.ctx, path)
        try:
            sha = hashlib.sha256()
            md5 = hashlib.md5(usedforsecurity=False) if md5_too else None
            pos = 0
            while pos < min(st.st_size, self.hash_limit):
                self.ctx.check()
                with self.ctx.blocking(where):
                    chunk = os.pread(fd, 1 << 20, pos)
                if not chunk:
                    break
                sha.update(chunk)
                if md5:
                    md5.update(chunk)
                pos += len(chunk)
            return sha.hexdigest(), md5.hexdigest() if md5 else None
        finally:
            os.close(fd)


def flat(prefix: str, facts: dict[str, Any] | None) -> dict[str, Any]:
    """The facts rules test most, as top-level fields (``target_resolved``, ``target_owned``...)."""
    if not facts:
        return {}
    keys = ("resolved", "found", "sha256", "owned", "package", "package_verify", "uid", "mode")
    return {f"{prefix}_{k}": facts.get(k) for k in keys if k in facts}


def search(ctx: Context, name: str, folders: Iterable[str] = SEARCH_PATH) -> str | None:
    """The first ``folder/name`` that exists in the root (systemd and udev look a bare name up this way)."""
    for folder in folders:
        candidate = folder + "/" + name
        try:
            stat_path(ctx, candidate)
            return candidate
        except (OSError, ValueError):
            continue
    return None


# ---- udev -----------------------------------------------------------------------------------------

# udev reads rules files by name across these folders; for one name, the earliest folder wins
