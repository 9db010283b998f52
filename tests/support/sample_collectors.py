"""Collectors that misbehave on purpose, for the pipeline's isolation tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

from collectors.base import Context, Item, Record


def boom(ctx: Context) -> Iterator[Item]:
    yield Record("boom", {"before": True})
    raise RuntimeError("collector bug")


def slow(ctx: Context) -> Iterator[Item]:
    while True:  # cooperative: stops at its budget through ctx.check()
        ctx.check()
        time.sleep(0.05)
        yield Record("slow", {"t": time.time()})


def hang(ctx: Context) -> Iterator[Item]:
    time.sleep(600)  # uncooperative: blocked where no check can run; the pipeline must walk away
    yield Record("hang", {})


def fine(ctx: Context) -> Iterator[Item]:
    yield Record("fine", {"ok": True, "environ": {"DB_PASSWORD": "hunter2", "LANG": "C"}})
