"""--memory-output PATH: the memory image alone, written to a file while it is hashed.

The run is the pipeline's own (agent/engine/pipeline.py: the artifact's worker, its budget, the stop
checks, the disk budget, the parts of a stream of unknown size and its companion's), with another
sink: :class:`_ImageFile` puts the stream in PATH (its companion in PATH.<companion>, e.g.
image.avml.companion.lime) instead of in a bundle, and keeps the few records for the summary line.
A writer thread overlaps the disk writes with hashing; the reader thread is the image's own."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.engine.pipeline import SEAL_RESERVE_S, Run, RunOptions
from agent.engine.plan import load_profile, load_secrets
from agent.engine.redact import Redactor

EXIT_COMPLETE, EXIT_PARTIAL, EXIT_FATAL = 0, 1, 3
WRITE_QUEUE = 4  # chunks waiting for the writer thread
READ_SIZE = 16 << 20  # the most asked of a stream at once: a whole chunk, not a copy of pieces of it


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


class _Output:
    """One output file (the image, or its companion), opened at its first byte; hashed as written unless
    the pipeline hashes what goes into it already (a stream in parts)."""

    def __init__(self, path: str, hashed: bool):
        self.path = path
        self.fd = _open_output(path)
        self.writer = _Writer(self.fd)
        self.hash = hashlib.sha256() if hashed else None
        self.bytes = 0

    def write(self, chunk: Any) -> None:
        if self.hash is not None:
            self.hash.update(chunk)
        self.writer.write(chunk)
        self.bytes += len(chunk)

    def close(self) -> None:
        try:
            self.writer.close()
            if stat.S_ISREG(os.fstat(self.fd).st_mode):
                os.fsync(self.fd)
        finally:
            if self.path != "-":
                os.close(self.fd)


class _ImageFile:
    """The sink of a memory-only run: what the pipeline would write into a bundle (BundleWriter's
    add_generated / add_bytes), written as plain files: the stream to PATH, its companion parts to
    PATH.companion.lime; JSON Lines members are kept, parsed, for the summary."""

    QUEUE_DEPTH = WRITE_QUEUE

    def __init__(self, path: str, companion: str = "companion.lime"):
        self.path, self.companion_path = path, f"{path}.{companion}"
        self.outputs: dict[bool, _Output] = {}  # False: the image, True: its companion
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.started: float | None = None

    @property
    def bytes_written(self) -> int:
        return sum(out.bytes for out in self.outputs.values())

    def add_bytes(self, name: str, data: bytes, mtime_ns: int, **meta: Any) -> dict[str, Any]:
        if name.endswith(".jsonl"):
            stream = os.path.basename(name).split(".")[0]
            self.records.setdefault(stream, []).extend(json.loads(line) for line in data.splitlines() if line)
        return {"size": len(data)}

    def add_generated(self, name: str, read: Callable[[int], Any], length: int, mtime_ns: int,
                      should_stop: Callable[[], bool] = lambda: False, also_hash: Sequence[Any] = (),
                      **meta: Any) -> dict[str, Any]:
        """Write what ``read`` gives until it ends or ``should_stop``; nothing is padded (a file can
        be shorter than announced: the summary says the image is partial). ``also_hash`` (as
        BundleWriter's): hash objects updated with what is written (the hash of a stream over its parts)."""
        companion = bool(meta.get("companion"))
        if companion not in self.outputs:
            if self.started is None:
                self.started = time.monotonic()
            try:
                self.outputs[companion] = _Output(self.companion_path if companion else self.path,
                                                  hashed="part" not in meta)
            except OSError as exc:
                exc.filename = self.companion_path if companion else self.path
                raise
        out = self.outputs[companion]
        first, size, reason = out.bytes == 0, 0, None
        while True:
            if should_stop():
                reason = "interrupted"
                break
            chunk = read(READ_SIZE)
            if not len(chunk):
                break
            for hashed in also_hash:
                hashed.update(chunk)
            out.write(chunk)
            size += len(chunk)
        if reason is None and size < length:
            reason = "the stream ended early"
        # hashed once: by the file (a member that begins the file has the file's hash), or by the pipeline,
        # which hashes a stream in parts itself and asks no part's
        return {**meta, "size": size, "sha256": out.hash.hexdigest() if first and out.hash is not None else None,
                "incomplete": {"reason": reason} if reason else None}  # as BundleWriter's entries: with meta

    def close(self) -> None:
        errors = []
        for out in self.outputs.values():
            try:
                out.close()
            except OSError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def write_image(path: str, memory_options: dict[str, Any], stop: threading.Event, stop_reasons: list[str],
                max_disk_usage: int | None, min_free: int, max_duration: float,
                attach: Callable[[Run], None] | None = None) -> int:
    """``stop`` and ``stop_reasons`` are the signal handler's until ``attach`` hands it the run (whose
    request_stop then says why in the run's own log)."""
    started = time.monotonic()
    directory = os.path.dirname(os.path.abspath(path))
    to_file = path != "-" and not os.path.exists(path)  # a pipe or device uses no disk space of ours
    sink = _ImageFile(path)
    # the whole --max-duration is the image's: there is no bundle to seal after it
    options = RunOptions(root="/", max_duration_s=max_duration + SEAL_RESERVE_S, min_free_bytes=min_free,
                         output_dir=directory if to_file else None, max_disk_usage=max_disk_usage,
                         artifact_options={"memory": memory_options})
    run = Run(load_profile("memory", only=["memory"]), sink, Redactor(load_secrets(), False),  # type: ignore[arg-type]
              options, stop=stop)
    if stop_reasons:  # a signal before the run existed
        run.stop_reason = stop_reasons[0]
    if attach is not None:
        attach(run)
    summary: dict[str, Any] = {"image": path}
    failure = None
    try:
        run.collect_all()
    except OSError as exc:  # the image or its companion could not be created or written
        failure = exc
    try:
        sink.close()
    except OSError as exc:
        failure = failure or exc
    if failure is not None and not sink.outputs:
        print(f"triagent: fatal: cannot create {failure.filename or path!r}: {failure.strerror}", file=sys.stderr)
    summary.update(_image_facts(run, sink, failure, stop_reasons))
    summary["errors"] = [e["message"][:200] for e in run.log if e["level"] in ("error", "warning")][:5]
    summary["duration_s"] = round(time.monotonic() - started, 2)
    print(json.dumps(summary, ensure_ascii=False, separators=(",", ":"))[:2000], flush=True,
          file=sys.stderr if path == "-" else sys.stdout)
    return {"complete": EXIT_COMPLETE, "partial": EXIT_PARTIAL}.get(summary["status"], EXIT_FATAL)


def _image_facts(run: Run, sink: _ImageFile, failure: OSError | None, stop_reasons: list[str]) -> dict[str, Any]:
    """The summary's middle: the image (hash, size, speed), its companion, what the collector found
    (format, source, RAM, banner), and the status."""
    out: dict[str, Any] = {}
    written = (sink.records.get("memory_image") or [None])[-1]
    image = sink.outputs.get(False)
    if image is not None:
        seconds = time.monotonic() - (sink.started or time.monotonic()) if written is None else written["seconds"]
        written_bytes = sink.bytes_written  # the image and its companion: what this run wrote
        out.update(sha256=_hexdigest(image, (written or {}).get("sha256")), bytes=written_bytes,
                   seconds=round(seconds, 2),
                   mb_per_s=round(written_bytes / 1e6 / seconds, 1) if seconds else None,
                   zero_blocks_skipped=(written or {}).get("zero_blocks_skipped"),
                   read_errors=len((written or {}).get("read_errors", [])))
        if True in sink.outputs:
            companion = sink.outputs[True]
            described = (written or {}).get("companion") or {}
            out["companion"] = {"path": companion.path, "sha256": _hexdigest(companion, described.get("sha256")),
                                "bytes": companion.bytes}
    result = next((r for r in run.results if r.name == "memory"), None)
    stopped = image is not None and (failure is not None or written is None or not written["complete"])
    skipped = image is None and result is not None and result.status == "skipped"  # stopped before it began
    if skipped:
        out["stop_reason"] = stop_reasons[0] if stop_reasons else result.reason  # type: ignore[union-attr]
    if stopped:
        reason = f"write failed: {failure.strerror}" if failure is not None else (result.reason if result else None)
        out["stop_reason"] = stop_reasons[0] if stop_reasons else reason
    facts = (sink.records.get("memory") or [{}])[-1]
    out.update({k: facts.get(k) for k in ("format", "source", "ram_bytes", "banner") if facts.get(k)})
    if facts.get("five_level_paging"):
        out["five_level_paging"] = True
    out["status"] = "partial" if stopped or skipped else ("refused" if image is None else "complete")
    return out


def _hexdigest(output: _Output, pipeline_sha256: str | None) -> str | None:
    """The file's SHA-256: its own, or the pipeline's over the parts that make it (None when the pipeline
    could not say: writing the file failed before the image was described)."""
    return output.hash.hexdigest() if output.hash is not None else pipeline_sha256


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
