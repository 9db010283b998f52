"""Physical memory of the running kernel as a LiME or AVML image, streamed (never staged on disk).

Refusals (not root, lockdown, no readable source, over --memory-limit) are records and problems;
the rest of the run goes on. The facts an analyst needs later (banner, ranges, page size, 5-level
paging) are recorded whatever happens."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from functools import partial

from collectors.base import Context, Item, Problem, Record, Stream
from collectors.memory.image import ImageStats, avml_bound, avml_chunks, lime_chunks, lime_size
from collectors.memory.ranges import KcoreError, PhysRange, direct_ranges, map_ranges, parse_iomem, parse_kcore
from collectors.util import read_text

SOURCES = {"kcore": "/proc/kcore", "crash": "/dev/crash", "mem": "/dev/mem"}
LA57_WARNING = ("this kernel uses 5-level paging (LA57): volatility3 2.28 cannot parse such images "
                "(banners work, process lists come back empty); the image is kept for other tools")


# AVML pages snappy cannot shrink go to a companion LiME image (image.Companion chunks)
COMPANION_WHY = "pages snappy cannot shrink; volatility3 2.28 cannot read them as AVML"


class Refused(Exception):
    pass


def _lockdown(path: str = "/sys/kernel/security/lockdown") -> str | None:
    try:
        text = read_text(path)
    except OSError:
        return None
    chosen = text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()
    return chosen or None


def _la57_cpu_flag() -> bool:
    try:
        for line in read_text("/proc/cpuinfo", 16 << 20).splitlines():
            if line.startswith("flags"):
                return "la57" in line.split()
    except OSError:
        pass
    return False


def _open_source(name: str, path: str, ram: list[tuple[int, int]]) -> tuple[int, list[PhysRange], dict]:
    """Open a source and plan its reads; raises Refused with the reason it cannot be used."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise Refused(f"{path}: {exc.strerror}") from None
    try:
        details: dict = {}
        if name == "kcore":
            try:
                kcore = parse_kcore(lambda offset, n: os.pread(fd, n, offset))
            except (KcoreError, OSError) as exc:
                raise Refused(f"{path}: {exc}") from None
            ranges, missing = map_ranges(ram, kcore.segments)
            details = {"vmcoreinfo": kcore.vmcoreinfo, "kcore_segments": len(kcore.segments),
                       "ram_not_in_kcore": [{"start": s, "end": e} for s, e in missing]}
        else:
            ranges = direct_ranges(ram)
            if name == "mem":
                probe = next((s for s, e in ram if e >= 1 << 20), None)
                if probe is not None:
                    try:
                        os.pread(fd, os.sysconf("SC_PAGE_SIZE"), max(probe, 1 << 20))  # one host page
                    except OSError as exc:
                        raise Refused(f"{path} is limited to the first 1 MiB (STRICT_DEVMEM): {exc.strerror}") \
                            from None
        if not ranges:
            raise Refused(f"{path}: none of the System RAM ranges is readable through it")
        return fd, ranges, details
    except BaseException:
        os.close(fd)
        raise


def collect(ctx: Context) -> Iterator[Item]:
    fmt = ctx.opt("format", "lime")
    facts: dict = {"format": fmt, "page_size": os.sysconf("SC_PAGE_SIZE"), "status": "refused"}
    try:
        facts["banner"] = read_text("/proc/version").strip()
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read the kernel banner", "/proc/version")
    facts["lockdown"] = _lockdown(ctx.opt("lockdown_path", "/sys/kernel/security/lockdown"))
    facts["la57_cpu_flag"] = _la57_cpu_flag()
    facts["machine"] = os.uname().machine  # aarch64 images are out of volatility3 2.28's reach (memory.symbols says so)
    try:
        yield from _plan(ctx, fmt, facts)
    except Refused as exc:
        facts["reason"] = str(exc)
        yield Problem(f"memory not acquired: {exc}", level="error",
                      detail={"artifact_status": "refused", "summary": {"refused": str(exc)[:300]}})
    yield Record("memory", facts)


def _plan(ctx: Context, fmt: str, facts: dict) -> Iterator[Item]:
    if os.geteuid() != 0 and ctx.opt("require_root", True):
        raise Refused("not root (reading physical memory needs root)")
    if facts["lockdown"] in ("integrity", "confidentiality"):
        raise Refused(f"kernel lockdown is '{facts['lockdown']}': it forbids reading kernel memory")
    try:
        ram = parse_iomem(read_text(ctx.opt("iomem_path", "/proc/iomem"), 16 << 20))
    except OSError as exc:
        raise Refused(f"/proc/iomem: {exc.strerror}") from None
    if not ram:
        raise Refused("/proc/iomem shows no System RAM ranges (addresses are hidden from this reader)")
    facts["ram_ranges"] = [{"start": s, "end": e, "size": e - s + 1} for s, e in ram]
    facts["ram_bytes"] = sum(e - s + 1 for s, e in ram)
    forced = ctx.opt("source")
    paths = dict(SOURCES, **ctx.opt("source_paths", {}))  # tests and benchmarks point at synthetic files
    candidates = [forced] if forced else list(SOURCES)
    reasons = []
    for name in candidates:
        try:
            fd, ranges, details = _open_source(name, paths[name], ram)
        except Refused as exc:
            reasons.append(str(exc))
            continue
        break
    else:
        raise Refused("no usable memory source: " + "; ".join(reasons))
    # the limit is about the image we would take: only once a source can take one
    limit = ctx.opt("memory_limit")
    if limit and facts["ram_bytes"] > limit:
        os.close(fd)
        raise Refused(f"memory ({facts['ram_bytes']} bytes) is larger than --memory-limit ({limit})")
    for reason in reasons:
        yield Problem(f"memory source passed over: {reason}", level="info")
    facts.update(details, source=paths[name])
    facts["pgtable_l5_enabled"] = details.get("vmcoreinfo", {}).get("NUMBER(pgtable_l5_enabled)") == "1" \
        if "vmcoreinfo" in details else None
    if facts["pgtable_l5_enabled"] or (facts["pgtable_l5_enabled"] is None and facts["la57_cpu_flag"]):
        facts["five_level_paging"] = True
        yield Problem(LA57_WARNING, level="warning")
    for gap in details.get("ram_not_in_kcore", []):
        yield Problem("System RAM range not present in kcore; left out of the image", level="warning", detail=gap)
    facts["image_ranges"] = [{"start": r.start, "end": r.end, "size": r.size} for r in ranges]
    bound = lime_size(ranges) if fmt == "lime" else avml_bound(ranges)
    budget = ctx.opt("space_available")
    if budget is not None and bound > budget:
        os.close(fd)
        raise Refused(f"not enough space for the image: up to {bound} bytes needed, {budget} allowed")
    stats = ImageStats()

    def opener(stop: Callable[[], bool], consumer_lag: int = 0) -> Iterator[bytes]:
        chunks = lime_chunks if fmt == "lime" else avml_chunks
        return chunks(fd, ranges, stats, stop=stop, consumer_lag=consumer_lag)

    host = "".join(c if c.isalnum() or c in "-." else "_" for c in socket.gethostname()) or "host"
    facts["status"] = "streaming"
    facts["member"] = f"memory/{host}.{fmt}"
    facts["max_bytes"] = bound
    yield Stream(facts["member"], bound if fmt == "lime" else None, opener, partial(os.close, fd),
                 meta={"memory_format": fmt, "memory_source": paths[name]}, stats=stats,
                 report_stream="memory_image", label="memory image", summary_key="memory",
                 companion="companion.lime", companion_why=COMPANION_WHY)
