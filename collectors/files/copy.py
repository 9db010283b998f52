"""Raw copies of the paths and globs an artifact spec names, with per-file caps and a file limit."""

from __future__ import annotations

from collections.abc import Iterator

from collectors.base import Context, Item, Problem
from collectors.files.fsread import copy_file, walk_glob


def collect(ctx: Context) -> Iterator[Item]:
    cap = int(ctx.opt("cap_bytes", 1 << 20))
    keep = ctx.opt("keep", "head")
    max_files = int(ctx.opt("max_files", 5000))
    max_depth = int(ctx.opt("max_depth", 16))
    seen: set[str] = set()
    for pattern in ctx.opt("paths", []):
        for hit in walk_glob(ctx, pattern, max_depth):
            ctx.check()
            if isinstance(hit, Problem):
                yield hit
                continue
            if hit in seen:
                continue
            if len(seen) >= max_files:
                yield Problem(f"file limit of {max_files} reached; later matches not copied", path=pattern,
                              level="warning")
                return
            seen.add(hit)
            yield from copy_file(ctx, hit, cap, keep)
