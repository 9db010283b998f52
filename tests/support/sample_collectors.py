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


# ---- for the files phase in child processes (tests/agent/engine/test_child.py) -------------------------------

def copy_then_swap(ctx: Context) -> Iterator[Item]:
    """Opens ctx.options["path"] through the confined reader, then puts another file in its place: the copy must be
    of what was opened (its descriptor crossed to the parent), never of what the path names later."""
    import os

    from collectors.files.fsread import copy_file

    path = ctx.options["path"]
    items = list(copy_file(ctx, path, 1 << 20))
    swap = ctx.root.rstrip("/") + path + ".swap"
    with open(swap, "w") as f:
        f.write("SWAPPED IN AFTER THE OPEN\n")
    os.replace(swap, ctx.root.rstrip("/") + path)
    yield from items
    yield Record("copied", {"path": path, "pid": os.getpid()})


def stuck_read(ctx: Context) -> Iterator[Item]:
    """Writes its pid where the test reads it, then blocks inside a marked host read that never returns."""
    import os

    with open(ctx.options["pid_file"], "w") as f:
        f.write(str(os.getpid()))
    yield Record("stuck", {"before": True})
    with ctx.blocking("/never/returns"):
        time.sleep(600)
    yield Record("stuck", {"after": True})


def dies(ctx: Context) -> Iterator[Item]:
    """Killed under its own feet (an out-of-memory kill, a crash in a C library)."""
    import os
    import signal

    yield Record("dies", {"before": True})
    time.sleep(0.3)  # some work (what was yielded in the last FLUSH_S before a kill may be lost)
    os.kill(os.getpid(), signal.SIGKILL)
    yield Record("dies", {"after": True})


def odd_values(ctx: Context) -> Iterator[Item]:
    """Values no JSON knows, as a collector may yield them: they arrive as the sink's JSON would write them."""
    import datetime
    import pathlib

    class Custom:
        def __str__(self) -> str:
            return "custom-value"

    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    yield Record("odd", {"when": datetime.datetime(2026, 1, 2, 3, 4, 5), "where": pathlib.PurePosixPath("/etc/x"),
                         "what": Custom(), "kind": ValueError, "token": token})


def inherited(ctx: Context) -> Iterator[Item]:
    """What the child holds of its parent's: where its stdin/stdout/stderr go, and how many sockets it has open."""
    import os

    time.sleep(float(ctx.options.get("sleep", 0)))
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    yield Record(ctx.artifact, {"stdio": [fds.get(n) for n in (0, 1, 2)],
                               "sockets": sum(1 for t in fds.values() if t.startswith("socket:"))})


def copies(ctx: Context) -> Iterator[Item]:
    """Raw copies of ctx.options["files"]: [path, cap, keep] each, through the confined reader."""
    from collectors.files.fsread import copy_file

    for path, cap, keep in ctx.options["files"]:
        yield from copy_file(ctx, path, cap, keep)


def blobs(ctx: Context) -> Iterator[Item]:
    """ctx.options["count"] members of ctx.options["size"] bytes each, as fast as it can."""
    from collectors.base import Blob

    for n in range(int(ctx.options["count"])):
        yield Blob(f"blobs/{n}", bytes([n % 256]) * int(ctx.options["size"]))


def slow_start(ctx: Context) -> Iterator[Item]:
    time.sleep(float(ctx.options.get("sleep", 1.0)))
    yield Record(ctx.artifact, {"slept": True})
