"""The `memory.symbols` artifact: a volatility3 symbol table (ISF) for the running kernel, built on the
host from its own BTF (/sys/kernel/btf/vmlinux) and /proc/kallsyms, so that the memory image in the
same bundle is analysable the moment it lands (no debug package, no dwarf2json, no ISF server).
Member ``symbols/linux/<release>-btf.json.xz``; `analyze` uses it after any `--symbols` folder."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator

from collectors.base import Blob, Context, Item, Problem, Record

OBTAIN = ("install the kernel's debug package (linux-image-<release>-dbg, kernel-debuginfo) and run dwarf2json, "
          "or point `triagent analyze --remote-isf-url` at an ISF server")


def build(root: str = "/", preset: int = 2) -> tuple[bytes, dict]:
    """(the .json.xz bytes, facts about them); raises NoBTF, BTFError, OSError."""
    from collectors.memory.isf import from_host, write_isf

    started = time.monotonic()
    isf, notes = from_host(root)
    buffer = io.BytesIO()
    write_isf(isf, buffer, preset=preset)
    producer = isf.get("metadata", {}).get("producer", {})
    facts = {"source": producer.get("source", "btf+kallsyms"), "kaslr_shift": producer.get("kaslr_shift"),
             "user_types": len(isf.get("user_types", {})), "symbols": len(isf.get("symbols", {})),
             "bytes": buffer.tell(), "seconds": round(time.monotonic() - started, 2), "notes": notes}
    return buffer.getvalue(), facts


def collect(ctx: Context) -> Iterator[Item]:
    from collectors.memory.btf import BTFError
    from collectors.memory.isf import NoBTF

    release = os.uname().release
    try:
        data, facts = build("/", int(ctx.opt("xz_preset", 2)))
    except NoBTF as exc:
        yield Record("symbols", {"status": "no_btf", "release": release, "reason": str(exc), "how": OBTAIN})
        yield Problem(f"no BTF in this kernel: no symbol table built here; {OBTAIN}", level="warning")
        return
    except (BTFError, OSError, ValueError) as exc:
        yield Record("symbols", {"status": "failed", "release": release, "reason": f"{type(exc).__name__}: {exc}",
                                 "how": OBTAIN})
        yield Problem(f"symbol table not built: {type(exc).__name__}: {exc}", level="error")
        return
    member = f"symbols/linux/{release}-btf.json.xz"
    yield Blob(member, data, {"symbols_source": facts["source"]})
    yield Record("symbols", {"status": "built", "release": release, "member": member, **facts})
    for note in facts["notes"]:
        yield Problem(f"symbols: {note}", level="info")
