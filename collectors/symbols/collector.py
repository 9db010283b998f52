"""The `memory.symbols` artifact: a volatility3 symbol table (ISF) for the running kernel, built on the
host from its own BTF (/sys/kernel/btf/vmlinux) and /proc/kallsyms, so that the memory image in the
same bundle is analysable the moment it lands (no debug package, no dwarf2json, no ISF server).
Member ``symbols/linux/<release>-btf.json.xz``; `analyze` uses it after any `--symbols` folder.

Building it costs about 30 bytes of memory per byte of BTF (120-150 MB for a distribution kernel). On a
host that has not that much to spare (a 512 MiB VM just imaged) the build is deferred: the inputs go
into the bundle instead (``symbols/linux/<release>-btf.inputs/``: the BTF, kallsyms, the banner, the
kernel config), a few MB, and `analyze` builds the same table from them on the responder's side."""

from __future__ import annotations

import gzip
import io
import os
import time
from collections.abc import Iterator

from collectors.base import Blob, Context, Item, Problem, Record

OBTAIN = ("install the kernel's debug package (linux-image-<release>-dbg, kernel-debuginfo) and run dwarf2json, "
          "or point `triagent analyze --remote-isf-url` at an ISF server")
INPUTS_SUFFIX = "-btf.inputs"
BTF_PATH = "sys/kernel/btf/vmlinux"
# peak RSS growth of build() over the BTF size: 26x on Debian 6.1 (5.5 MB), 29x on the fixture (4.1 MB)
MEMORY_PER_BTF_BYTE = 30
HEADROOM_MB = 96  # left free for the host's own processes
# volatility3 2.28's translation layers walk Intel page tables only (layers/intel.py; automagic/linux.py's
# LinuxIntelStacker is its only Linux stacker): an arm64 image's banner is found, its processes are not.
NO_VOLATILITY = {"aarch64": "volatility3 2.28 cannot read AArch64 memory images (it has Intel page-table layers "
                            "only): this symbol table is right for the kernel but serves tools that walk arm64 "
                            "page tables; an empty process list from volatility3 here means 'cannot', not 'none'"}


def build(root: str = "/", preset: int = 2) -> tuple[bytes, dict]:
    """(the .json.xz bytes, facts about them); raises NoBTF, BTFError, OSError."""
    from collectors.symbols.isf import from_host

    started = time.monotonic()
    return _finish(*from_host(root), started=started, preset=preset)


def build_from_inputs(folder: str, preset: int = 2) -> tuple[bytes, dict]:
    """The same table from inputs a deferred collection shipped (see module doc); raises BTFError, OSError."""
    from collectors.symbols.isf import build_isf

    started = time.monotonic()

    def text(name: str) -> str | None:
        try:
            with open(os.path.join(folder, name), encoding="latin-1") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    with open(os.path.join(folder, "vmlinux.btf"), "rb") as fh:
        btf = fh.read()
    notes: list[str] = []
    isf = build_isf(btf, text("kallsyms") or "", text("version") or "", kernel_config=text("config"), notes=notes)
    return _finish(isf, notes, started=started, preset=preset)


def _finish(isf: dict, notes: list[str], started: float, preset: int) -> tuple[bytes, dict]:
    from collectors.symbols.isf import write_isf

    buffer = io.BytesIO()
    write_isf(isf, buffer, preset=preset)
    producer = isf.get("metadata", {}).get("producer", {})
    facts = {"source": producer.get("source", "btf+kallsyms"), "kaslr_shift": producer.get("kaslr_shift"),
             "user_types": len(isf.get("user_types", {})), "symbols": len(isf.get("symbols", {})),
             "bytes": buffer.tell(), "seconds": round(time.monotonic() - started, 2), "notes": notes}
    return buffer.getvalue(), facts


def memory_available(root: str = "/") -> int | None:
    """MemAvailable from <root>/proc/meminfo in bytes, or None when the kernel does not say."""
    try:
        with open(os.path.join(root, "proc", "meminfo"), encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def build_would_starve(root: str = "/", per_btf_byte: int = MEMORY_PER_BTF_BYTE,
                       headroom_mb: int = HEADROOM_MB) -> str | None:
    """Why building the table here would leave the host short of memory, or None when it fits (or
    when there is no BTF, or the kernel does not say what is available)."""
    try:
        btf_size = os.stat(os.path.join(root, BTF_PATH)).st_size
    except OSError:
        return None
    available = memory_available(root)
    need, headroom = btf_size * per_btf_byte, headroom_mb << 20
    if available is None or available - need >= headroom:
        return None
    return (f"{available >> 20} MiB available, building needs about {need >> 20} MiB "
            f"and {headroom >> 20} MiB stays free for the host")


def collect(ctx: Context) -> Iterator[Item]:
    from collectors.symbols.btf import BTFError
    from collectors.symbols.isf import NoBTF

    root = ctx.root  # "/" on a live host; a copy of its /proc and /sys in tests
    release = _release(root)
    machine = str(ctx.opt("machine", "") or os.uname().machine)
    if machine in NO_VOLATILITY:  # whatever becomes of the table: the image itself is out of volatility's reach
        yield Problem(NO_VOLATILITY[machine], level="warning")
    short = build_would_starve(root, int(ctx.opt("memory_per_btf_byte", MEMORY_PER_BTF_BYTE)),
                               int(ctx.opt("headroom_mb", HEADROOM_MB)))
    if short:
        yield from _defer(root, release, short)
        return
    try:
        data, facts = build(root, int(ctx.opt("xz_preset", 2)))
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
    yield Record("symbols", {"status": "built", "release": release, "member": member, "machine": machine,
                             **({"volatility3": NO_VOLATILITY[machine]} if machine in NO_VOLATILITY else {}),
                             **facts})
    for note in facts["notes"]:
        yield Problem(f"symbols: {note}", level="info")


def _release(root: str) -> str:
    try:
        with open(os.path.join(root, "proc", "sys", "kernel", "osrelease"), encoding="ascii", errors="replace") as fh:
            return fh.read().strip() or os.uname().release
    except OSError:
        return os.uname().release


def _defer(root: str, release: str, reason: str) -> Iterator[Item]:
    """Ship what the table is built from; `analyze` builds it (the same bytes in, the same table out)."""
    folder = f"symbols/linux/{release}{INPUTS_SUFFIX}"
    shipped, problems = [], []
    sources = [("vmlinux.btf", BTF_PATH, False), ("kallsyms", "proc/kallsyms", False),
               ("version", "proc/version", False), ("config", f"boot/config-{release}", False),
               ("config", "proc/config.gz", True)]
    for name, path, gunzip in sources:
        if name in shipped:
            continue
        try:
            with (gzip.open if gunzip else open)(os.path.join(root, path), "rb") as fh:
                data = fh.read()
        except (OSError, EOFError) as exc:
            if name != "config":
                problems.append(f"/{path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        yield Blob(f"{folder}/{name}", data, {"symbols_input": f"/{path}"})
        shipped.append(name)
    yield Record("symbols", {"status": "deferred", "release": release, "reason": reason, "member": folder,
                             "inputs": shipped, "problems": problems,
                             "how": "`triagent analyze` builds the table from these inputs"})
    yield Problem(f"symbol table deferred to analysis ({reason}); its inputs are in {folder}/", level="warning")
