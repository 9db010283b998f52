"""Library-preload hijacking facts: /etc/ld.so.preload, LD_PRELOAD / LD_AUDIT / LD_LIBRARY_PATH in
process environments, and whether our own process was preloaded (then our view may be filtered)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import exists, read_capped
from collectors.util import read_small, text

LOADER_VARIABLES = ("LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH")


def collect(ctx: Context) -> Iterator[Item]:
    try:
        data, st, _ = read_capped(ctx, "/etc/ld.so.preload", 1 << 20)
    except FileNotFoundError:
        yield Record("preload", {"kind": "ld.so.preload", "present": False})
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read", "/etc/ld.so.preload")
    else:
        entries = [w for line in text(data).splitlines() for w in line.split("#", 1)[0].replace(":", " ").split()]
        yield Record("preload", {
            "kind": "ld.so.preload", "present": True, "size": st.st_size, "content": text(data[:65536]),
            "libraries": [{"path": e, "exists": exists(ctx, e)} for e in entries],
            "finding": bool(entries),
        })
    if not ctx.live:
        return
    own_maps = _mapped_libraries("self")
    yield Record("preload", {"kind": "self", "pid": os.getpid(),
                             "environment": {k: os.environ[k] for k in LOADER_VARIABLES if k in os.environ},
                             "mapped_libraries": own_maps})
    for name in sorted((d for d in os.listdir("/proc") if d.isdigit()), key=int):
        ctx.check()
        try:
            env = read_small(f"/proc/{name}/environ", 1 << 20)
        except OSError:
            continue  # vanished or unreadable: the processes artifact records why
        found = {}
        for item in env.split(b"\0"):
            key, _, value = item.partition(b"=")
            if key.decode("ascii", "replace") in LOADER_VARIABLES and value:
                found[key.decode()] = text(value)
        if found.keys() & {"LD_PRELOAD", "LD_AUDIT"}:
            yield Record("preload", {"kind": "process", "pid": int(name), "environment": found,
                                     "comm": _comm(name), "finding": True})


def _comm(pid: str) -> str | None:
    try:
        return text(read_small(f"/proc/{pid}/comm", 64)).strip()
    except OSError:
        return None


def _mapped_libraries(pid: str) -> list[str]:
    try:
        maps = text(read_small(f"/proc/{pid}/maps", 16 << 20))
    except OSError:
        return []
    libs = {line.split(None, 5)[5] for line in maps.splitlines() if len(line.split(None, 5)) == 6}
    return sorted(p for p in libs if ".so" in p)
