"""--memory-output PATH: the memory image alone, written to a file while it is hashed (a writer
thread overlaps the disk writes with hashing; the reader thread is the image's own)."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import stat
import sys
import threading
import time
from typing import Any

from agent.engine.plan import load_profile
from collectors.base import Context, Problem, Record, Stream
from collectors.memory.collector import collect
from collectors.memory.image import Companion

EXIT_COMPLETE, EXIT_PARTIAL, EXIT_FATAL = 0, 1, 3
WRITE_QUEUE = 4  # chunks waiting for the writer thread


class _Writer:
    def __init__(self, fd: int):
        self.fd = fd
        self.queue: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._run, name="image-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            if self.error is None:
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(self.fd, view):]
                except OSError as exc:
                    self.error = exc

    def write(self, chunk: Any) -> None:
        if self.error:
            raise self.error
        self.queue.put(chunk)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error:
            raise self.error


def write_image(path: str, memory_options: dict[str, Any], stop: threading.Event, stop_reasons: list[str],
                max_disk_usage: int | None, min_free: int, max_duration: float) -> int:
    started = time.monotonic()
    spec = load_profile("memory").artifacts[0]
    directory = os.path.dirname(os.path.abspath(path))
    to_file = path != "-" and not os.path.exists(path)  # a pipe or device uses no disk space of ours
    space = None
    if to_file:
        free = shutil.disk_usage(directory).free - min_free if os.path.isdir(directory) else 0
        space = max(0, free if max_disk_usage is None else min(free, max_disk_usage))
    options = dict(spec.options, **memory_options, space_available=space)
    ctx = Context(root="/", live=True, options=options, artifact="memory", deadline=started + max_duration)
    facts: dict[str, Any] = {}
    errors: list[str] = []
    summary: dict[str, Any] = {"image": path}
    for item in collect(ctx):
        if isinstance(item, Record):
            facts = item.data
        elif isinstance(item, Problem):
            (errors if item.level in ("error", "warning") else []).append(item.message[:200])
        elif isinstance(item, Stream):
            try:
                summary.update(_write(path, item, stop, started + max_duration, directory if to_file else None,
                                      min_free, max_disk_usage))
            finally:
                item.close()
    summary.update({k: facts.get(k) for k in ("format", "source", "ram_bytes", "banner") if facts.get(k)})
    if facts.get("five_level_paging"):
        summary["five_level_paging"] = True
    if "sha256" not in summary:
        summary["status"] = "refused"
    elif summary.pop("stopped", None):
        summary["status"] = "partial"
        summary["stop_reason"] = stop_reasons[0] if stop_reasons else summary.get("stop_reason")
    else:
        summary["status"] = "complete"
    summary["errors"] = errors[:5]
    summary["duration_s"] = round(time.monotonic() - started, 2)
    print(json.dumps(summary, ensure_ascii=False, separators=(",", ":"))[:2000], flush=True,
          file=sys.stderr if path == "-" else sys.stdout)
    return {"complete": EXIT_COMPLETE, "partial": EXIT_PARTIAL}.get(summary["status"], EXIT_FATAL)


def _write(path: str, item: Stream, stop: threading.Event, deadline: float, directory: str | None,
           min_free: int, max_disk_usage: int | None) -> dict[str, Any]:
    try:
        fd = _open_output(path)
    except OSError as exc:
        print(f"triagent: fatal: cannot create {path!r}: {exc.strerror}", file=sys.stderr)
        return {}
    written = 0
    reason: list[str] = []

    def should_stop() -> bool:
        if stop.is_set():
            reason.append("signal")
        elif time.monotonic() > deadline:
            reason.append("max-duration reached")
        elif max_disk_usage is not None and written >= max_disk_usage:
            reason.append("--max-disk-usage reached")
        elif directory and written % (256 << 20) < (1 << 20) and shutil.disk_usage(directory).free < min_free:
            reason.append("output disk nearly full")
        return bool(reason)

    digest = hashlib.sha256()
    writer = _Writer(fd)
    companion: dict[str, Any] = {}
    started = time.monotonic()
    try:
        for chunk in item.open(should_stop, WRITE_QUEUE + 1):
            if isinstance(chunk, Companion):
                _write_companion(companion, path + ".companion.lime", chunk)
                written += len(chunk)
                continue
            digest.update(chunk)
            writer.write(chunk)
            written += len(chunk)
        writer.close()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)
    except OSError as exc:
        reason.append(f"write failed: {exc.strerror}")
    finally:
        if path != "-":
            os.close(fd)
        if "fd" in companion:
            os.close(companion["fd"])
    seconds = time.monotonic() - started
    stats = vars(item.stats) if item.stats is not None else {}
    out = {"sha256": digest.hexdigest(), "bytes": written, "seconds": round(seconds, 2),
           "mb_per_s": round(written / 1e6 / seconds, 1) if seconds else None,
           "zero_blocks_skipped": stats.get("zero_blocks_skipped"), "read_errors": len(stats.get("read_errors", []))}
    if companion:
        out["companion"] = {"path": path + ".companion.lime", "sha256": companion["hash"].hexdigest(),
                            "bytes": companion["bytes"]}
    if reason:
        out.update(stopped=True, stop_reason=reason[0])
    return out


def _open_output(path: str) -> int:
    """A new file (never overwriting evidence), or stdout ("-"), a pipe or a character device."""
    if path == "-":
        return sys.stdout.fileno()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    raise FileExistsError(17, "exists; refusing to overwrite", path)


def _write_companion(state: dict[str, Any], path: str, chunk: bytes) -> None:
    """Memory an AVML image cannot hold for volatility3 (incompressible pages), as a LiME file."""
    if "fd" not in state:
        state.update(fd=os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600),
                     hash=hashlib.sha256(), bytes=0)
    state["hash"].update(chunk)
    state["bytes"] += len(chunk)
    view = memoryview(chunk)
    while view:
        view = view[os.write(state["fd"], view):]
