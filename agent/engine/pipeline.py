"""plan -> collect -> seal. Runs artifacts in order of volatility, each isolated in a worker thread (in the
files phase, with the collector in a forked child process: agent/engine/child.py) under its own budget; the
main thread is the only writer (the bundle), so a stop request (SIGTERM, --max-duration, a full disk) always
ends with a sealed, verifiable bundle marked partial."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.bundle.writer import COPY_CHUNK, FS_PREFIX, META_PREFIX, BundleWriter, UnsafeMemberName, canonical_json
from agent.engine import child, progress
from agent.engine.jsonl import encode_line
from agent.engine.plan import ArtifactSpec, Profile
from agent.engine.redact import Redactor
from collectors.base import (
    Blob,
    Cancelled,
    ChunkReader,
    CompanionChunk,
    Context,
    FileCopy,
    Problem,
    Record,
    Stream,
    SymlinkCopy,
)
from collectors.util import utc_ns

# bounded memory: a bigger stream becomes several members (the reader joins <stream>.partNNN.jsonl). 8 MiB, not 32: a
# 50 000-name timeline's 14 MB of lines were held whole until its artifact ended (triage peak RSS 97 -> 87 MiB here)
JSONL_PART_BYTES = 8 << 20
SEAL_RESERVE_S = 5.0  # time kept back from --max-duration for writing the log, custody and seal
READ_TIMEOUT_S = 30.0  # a host read (open, list, read) stuck this long is abandoned with its collector
POLL_S = 0.2  # how often the writer looks up from a wait (stop requests, deadlines)
ITEM_QUEUE = 512  # items a collector may have waiting for the writer
AHEAD_QUEUE = 128  # ... while it runs ahead of the writer (each FileCopy waiting holds a descriptor)
QUEUED_BYTES = 16 << 20  # the most a collector's child may have queued (copies it read and scrubbed, records)
# The files phase: artifacts from this order on may run ahead of the writer, on workers of their own, once the
# volatile ones (network, sessions, processes, maps, memory: order < 50) are all written; the parsers and the
# findings (order 96 on) read what came before and run alone, in order.
AHEAD_FROM_ORDER = 50
AHEAD_BEFORE_ORDER = 96
_DONE = object()


@dataclass
class ArtifactResult:
    name: str
    status: str = "pending"  # complete | failed | timeout | interrupted | skipped | not_live
    records: int = 0
    files: int = 0
    bytes: int = 0
    errors: int = 0
    warnings: int = 0
    seconds: float = 0.0
    reason: str | None = None
    started_utc: str | None = None  # when it began and ended: cross-views order live and memory facts by them
    ended_utc: str | None = None
    # ran ahead of the writer, beside other artifacts: seconds is then its own span (start to last item written)
    # and waited_s the part of it its collector spent waiting for the writer to take its items
    ahead: bool = False
    waited_s: float = 0.0


@dataclass
class RunOptions:
    root: str = "/"
    include_secrets: bool = False
    max_duration_s: float = 1800.0
    min_free_bytes: int = 256 << 20
    output_dir: str | None = None  # for the free-space guard; None when streaming
    max_disk_usage: int | None = None  # the most the bundle may take on the output filesystem
    artifact_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # from the command line
    verbose: bool = False
    read_remote_fs: bool = False  # read FUSE and network filesystems below the root (they can stall)
    read_timeout_s: float = READ_TIMEOUT_S  # a read that makes no progress this long is abandoned
    parallel: int = 2  # files-phase collectors at once (the one being written too); 1 = one after another
    # files-phase collectors in forked child processes (agent/engine/child.py), off the writer's interpreter lock;
    # False: on threads (the engine's tests that drive collectors from the test's own threads need that)
    processes: bool = False


@dataclass
class Run:
    profile: Profile
    writer: BundleWriter
    redactor: Redactor
    options: RunOptions
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None
    started_mono: float = field(default_factory=time.monotonic)
    started_ns: int = field(default_factory=time.time_ns)
    log: list[dict[str, Any]] = field(default_factory=list)
    results: list[ArtifactResult] = field(default_factory=list)
    copied_paths: set[str] = field(default_factory=set)
    progress: Callable[[str], None] = lambda line: None
    _budget_end: float = float("inf")
    highlights: dict[str, Any] = field(default_factory=dict)  # short facts for the summary line
    custody_facts: dict[str, Any] = field(default_factory=dict)  # what records add to the custody (Record.custody)
    abandoned_reads: int = 0  # threads left blocked in a host read (they may never return)

    @property
    def live(self) -> bool:
        return os.path.realpath(self.options.root) == "/"

    @property
    def deadline(self) -> float:
        return self.started_mono + max(1.0, self.options.max_duration_s - SEAL_RESERVE_S)

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()

    def note(self, artifact: str, level: str, message: str, **extra: Any) -> None:
        entry = {"utc_ns": time.time_ns(), "artifact": artifact, "level": level, "message": message}
        entry.update({k: v for k, v in extra.items() if v not in (None, {}, [])})
        self.log.append(entry)

    # ---- collection -------------------------------------------------------------------------

    def collect_all(self) -> None:
        """Every artifact in order of volatility. The writer takes them strictly in that order (the bundle's
        members, the log and the custody come out the same whatever the timing), but in the files phase up to
        ``parallel - 1`` later collectors marked ``run_ahead`` already run on their own threads, the slowest first
        (by their budget), their items waiting in a bounded queue until the writer reaches them."""
        specs = self.profile.artifacts
        ahead: dict[int, _Worker] = {}
        progress.start("artifacts", len(specs), "artifacts")
        try:
            for index, spec in enumerate(specs):
                result = ArtifactResult(spec.name)
                self.results.append(result)
                progress.start(f"artifact:{spec.name}")
                try:
                    worker = ahead.pop(index, None)
                    if spec.live_only and not self.live:
                        result.status, result.reason = "not_live", "not live: collecting from --root"
                        self.note(spec.name, "info", result.reason)
                        continue
                    if self.stop.is_set() or time.monotonic() >= self.deadline:
                        if not self.stop.is_set():
                            self.request_stop("max-duration reached")
                        if worker is not None:
                            worker.abandon()
                        result.status, result.reason = "skipped", self.stop_reason
                        self.note(spec.name, "warning", f"skipped: {self.stop_reason}")
                        continue
                    if worker is None:
                        worker = self._start(spec)
                    self._start_ahead(specs, index, ahead)
                    self._run_artifact(spec, result, worker)
                    self.progress(f"{spec.name}: {result.status} ({result.records} records, {result.files} files, "
                                  f"{result.errors} errors, {result.seconds:.1f}s)")
                finally:
                    progress.finish(f"artifact:{spec.name}")
                    progress.advance("artifacts", 1)
        finally:
            for worker in ahead.values():  # only after an exception of our own: stop what runs ahead
                worker.abandon()
            progress.finish("artifacts")

    def _in_files_phase(self, spec: ArtifactSpec) -> bool:
        return AHEAD_FROM_ORDER <= spec.order < AHEAD_BEFORE_ORDER

    def _may_run_ahead(self, spec: ArtifactSpec) -> bool:
        """A files-phase artifact its spec marks ``run_ahead``: a long walk or hashing whose collector, in its own
        child process (RunOptions.processes), works beside the writer; what it sent waits in its queue, as
        frames of up to child.BATCH_ITEMS items (on a thread: one item per entry)."""
        return self._in_files_phase(spec) and bool(spec.options.get("run_ahead")) \
            and not (spec.live_only and not self.live)

    def _start_ahead(self, specs: list[ArtifactSpec], index: int, ahead: dict[int, _Worker]) -> None:
        """Start later files-phase collectors marked run_ahead while the writer takes this one: never before the
        volatile phase is written (order of volatility), never the parsers; the longest budgets first; at most
        ``parallel - 1`` ahead at once."""
        if self.options.parallel <= 1 or not self._in_files_phase(specs[index]) or self.stop.is_set():
            return
        waiting = [j for j in range(index + 1, len(specs)) if j not in ahead and self._may_run_ahead(specs[j])]
        waiting.sort(key=lambda j: (-specs[j].budget_s, j))
        for j in waiting[: max(0, self.options.parallel - 1 - len(ahead))]:
            if time.monotonic() >= self.deadline:
                return
            ahead[j] = self._start(specs[j], AHEAD_QUEUE)

    def _start(self, spec: ArtifactSpec, queue_size: int = ITEM_QUEUE) -> _Worker:
        """The collector's thread, started now under its own budget; its items wait in a bounded queue."""
        started = time.monotonic()
        budget_end = min(started + spec.budget_s, self.deadline)
        options = dict(spec.options, **self.options.artifact_options.get(spec.name, {}))
        options["space_available"] = self._space_available()
        ctx = Context(root=self.options.root, live=self.live, options=options,
                      include_secrets=self.options.include_secrets, artifact=spec.name, deadline=budget_end,
                      secret_policy=self.secret_rule, read_remote_fs=self.options.read_remote_fs)
        worker = _Worker(spec, ctx, queue.Queue(maxsize=queue_size), started, utc_ns(time.time_ns()), budget_end,
                         ahead=queue_size != ITEM_QUEUE)
        in_child = self.options.processes and child.available() and self._in_files_phase(spec) \
            and not spec.options.get("in_process")
        worker.gate = self.redactor
        worker.thread = threading.Thread(target=worker.run_in_child if in_child else worker.run,
                                         name=f"collector:{spec.name}", daemon=True)
        worker.thread.start()
        return worker

    def _run_artifact(self, spec: ArtifactSpec, result: ArtifactResult, worker: _Worker | None = None) -> None:
        if worker is None:
            worker = self._start(spec)
        worker.writing()  # the writer takes its items now: the queue may hold as many as any artifact's
        started, budget_end, ctx, items = worker.started, worker.budget_end, worker.ctx, worker.items
        result.started_utc = worker.started_utc
        result.ahead = worker.ahead
        self._budget_end = budget_end
        streams: dict[str, _JsonlStream] = {}
        result.status = "running"
        while True:
            try:
                item = items.get(timeout=0.2)
            except queue.Empty:
                item = None
            if item is _DONE:
                break
            if item is None or time.monotonic() > budget_end or self.stop.is_set():
                reason = self._interruption(budget_end) or (self._stalled(ctx) if item is None else None)
                if reason:
                    ctx.cancel.set()
                    if item is not None:
                        self._dispatch(spec.name, item, result, streams)
                    result.status = "interrupted" if self.stop.is_set() else "timeout"
                    result.reason = reason
                    if ctx.reading is not None:
                        self.abandoned_reads += 1
                        reason += f" (its read of {ctx.reading[0]} never returned)"
                    self.note(spec.name, "error", f"{result.status}: {reason}")
                    self._discard_queued(items)
                    break
                if item is None:
                    continue
            if isinstance(item, _Frame):
                ended = self._dispatch_frame(spec.name, item, result, streams, items, budget_end, ctx)
                worker.taken(item.size)
                if ended:
                    break
                continue
            if isinstance(item, _Failure):
                result.status, result.reason = "failed", f"{type(item.exc).__name__}: {item.exc}"
                result.errors += 1
                self.note(spec.name, "error", f"collector failed: {result.reason}", traceback=item.trace)
                break
            self._dispatch(spec.name, item, result, streams)
        if result.status == "running":
            result.status = "complete"
        for stream in streams.values():
            stream.flush(self.writer)
        result.seconds = round(time.monotonic() - started, 3)
        result.waited_s = round(worker.waited, 3)
        result.ended_utc = utc_ns(time.time_ns())

    def _dispatch_frame(self, artifact: str, frame: _Frame, result: ArtifactResult,
                        streams: dict[str, _JsonlStream], items: queue.Queue, budget_end: float,
                        ctx: Context) -> bool:
        """A child's frame, item by item; True when the artifact must end here (its budget, a stop)."""
        for n, sub in enumerate(frame.items):
            if n % 64 == 0 and (self.stop.is_set() or time.monotonic() > budget_end):
                reason = self._interruption(budget_end)
                if reason:
                    ctx.cancel.set()
                    result.status = "interrupted" if self.stop.is_set() else "timeout"
                    result.reason = reason
                    self.note(artifact, "error", f"{result.status}: {reason}")
                    frame.close(n)
                    self._discard_queued(items)
                    return True
            self._dispatch(artifact, sub, result, streams)
        return False

    def _stalled(self, ctx: Context) -> str | None:
        """A collector blocked in one host read for longer than the read timeout is abandoned: its
        thread may never come back (a FUSE server that does not answer), the run goes on."""
        reading = ctx.reading
        if reading is None or time.monotonic() - reading[1] < self.options.read_timeout_s:
            return None
        return f"a read of {reading[0]} made no progress for {self.options.read_timeout_s:g} s: abandoned"

    def secret_rule(self, path: str, head: bytes) -> str | None:
        """The secret policy on a resolved in-root path and a file's first bytes: the rule that
        withholds the file, or None. The evidence reader asks it before a parser sees a file; the
        sink asks it before a raw copy."""
        if self.redactor.include_secrets:
            return None
        if self.redactor.withheld(path):
            return "secret path"
        return self.redactor.withheld_content(head)

    def _interruption(self, budget_end: float) -> str | None:
        if self.stop.is_set():
            return self.stop_reason or "stop requested"
        if time.monotonic() >= self.deadline:
            self.request_stop("max-duration reached")
            return self.stop_reason
        if time.monotonic() > budget_end:
            return "artifact time budget exhausted"
        return None

    @staticmethod
    def _discard_queued(items: queue.Queue) -> None:
        while True:
            try:
                item = items.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, (FileCopy, _Frame)):
                item.close()

    # ---- the sink ---------------------------------------------------------------------------

    def _dispatch(self, artifact: str, item: Any, result: ArtifactResult, streams: dict[str, _JsonlStream]) -> None:
        try:
            self._dispatch_item(artifact, item, result, streams)
        except UnsafeMemberName as exc:  # a host-made name that could climb out of an extraction folder
            result.errors += 1
            self.note(artifact, "error", str(exc))

    def _dispatch_item(self, artifact: str, item: Any, result: ArtifactResult,
                       streams: dict[str, _JsonlStream]) -> None:
        if isinstance(item, (Record, child.GatedRecord)):
            stream = streams.get(item.stream)
            if stream is None:
                stream = streams[item.stream] = _JsonlStream(item.stream, artifact)
            if isinstance(item, child.GatedRecord):  # gated and encoded in the collector's child (this run's gate)
                self.redactor.redactions += item.redactions
                stream.add_line(item.line, self.writer)
            else:
                stream.add_line(encode_line(self.redactor.record(item.data, item.stream)), self.writer)
            if item.custody:
                self.custody_facts.update(item.custody)
            result.records += 1
        elif isinstance(item, Problem):
            if item.level == "error":
                result.errors += 1
            elif item.level == "warning":
                result.warnings += 1
            detail = dict(item.detail)
            if "summary" in detail:  # a collector's word for the one-line summary
                self.highlights[artifact.split(".")[0]] = detail.pop("summary")
            if "artifact_status" in detail:  # e.g. a refusal: the artifact did not do its job
                result.status = detail.pop("artifact_status")
                result.reason = item.message
            self.note(artifact, item.level, item.message, path=item.path, errno=item.errno, detail=detail)
        elif isinstance(item, FileCopy):
            try:
                self._copy(artifact, item, result)
            finally:
                item.close()
        elif isinstance(item, child.ScrubbedCopy):
            self._copy_scrubbed(artifact, item, result)
        elif isinstance(item, Stream):
            try:
                self._stream(artifact, item, result, streams)
            finally:
                item.close()
        elif isinstance(item, SymlinkCopy):
            if item.path not in self.copied_paths:
                self.copied_paths.add(item.path)
                self.writer.add_symlink(FS_PREFIX + item.path, item.target, item.stat,
                                        source=item.path, artifact=artifact)
        elif isinstance(item, Blob):
            if self._disk_ok(artifact):
                self.writer.add_bytes(item.name, item.data, time.time_ns(), artifact=artifact, **item.meta)
                result.files += 1
                result.bytes += len(item.data)
        else:
            self.note(artifact, "error", f"collector yielded an unknown item {type(item).__name__}")

    def _first_copy(self, artifact: str, path: str) -> bool:
        """A path not copied before and not withheld by its name (noted): copy it."""
        if path in self.copied_paths:
            return False
        self.copied_paths.add(path)
        if self.redactor.withheld(path):
            self.note(artifact, "info", "withheld: secret file (use --include-secrets to copy it)", path=path)
            return False
        return True

    def _copy(self, artifact: str, item: FileCopy, result: ArtifactResult) -> None:
        """A raw copy, read off this thread (the writer must never block on a host read: a FUSE file
        that never answers would hold the seal hostage), through the secret gate."""
        if not self._first_copy(artifact, item.path):
            return
        reader = _OffThreadReader(item.fd, item.path, self.options.read_timeout_s, self._should_abandon)
        scrubber = None
        try:
            if not self.redactor.include_secrets:
                rule = self.secret_rule(item.path, reader.pread(4096, 0))  # content rules read a file's start
                if rule:
                    self.note(artifact, "info", f"withheld: {rule} (use --include-secrets to copy it)",
                              path=item.path)
                    return
                scrubber = self.redactor.scrubber()
                if item.offset:  # a tail window may begin inside a key block
                    before = min(item.offset, 64 << 10)
                    scrubber.prime(reader.pread(before, item.offset - before))
        except OSError as exc:
            result.errors += 1
            self.abandoned_reads += reader.abandoned
            self.note(artifact, "error", f"cannot read: {exc.strerror}", path=item.path, errno=exc.errno)
            return
        if not self._disk_ok(artifact):
            return
        reader.start(item.offset, item.length)
        read = reader.read if scrubber is None else scrubber.reader(reader.read)
        try:
            self._write_copy(artifact, item, read, result, scrubber)
        finally:
            reader.stop()
            self.abandoned_reads += reader.abandoned

    def _copy_scrubbed(self, artifact: str, item: child.ScrubbedCopy, result: ArtifactResult) -> None:
        """A raw copy a collector's child read and scrubbed (agent/engine/child.py): decided and written as
        :meth:`_copy` decides and writes one, from its bytes."""
        if not self._first_copy(artifact, item.path):
            return
        if item.open_error is not None:
            result.errors += 1
            self.note(artifact, "error", f"cannot read: {item.open_error[1]}", path=item.path,
                      errno=item.open_error[0])
            return
        if item.rule:
            self.note(artifact, "info", f"withheld: {item.rule} (use --include-secrets to copy it)", path=item.path)
            return
        if not self._disk_ok(artifact):
            return
        self._write_copy(artifact, item, item.reader(), result, item)

    def _write_copy(self, artifact: str, item: FileCopy | child.ScrubbedCopy, read: Callable[[int], bytes],
                    result: ArtifactResult, scrubbed: Any) -> None:
        entry = self.writer.add_stream(
            FS_PREFIX + item.path, read, item.length, item.stat, should_stop=self.stop.is_set,
            source=item.path, artifact=artifact, source_size=item.stat.st_size,
            source_offset=item.offset or None, capped=item.cap_reason)
        if scrubbed is not None:  # known only once the member is written (the manifest comes last)
            entry.update({k: v for k, v in (("redacted_private_key_blocks", scrubbed.blocks),
                                            ("masked", dict(scrubbed.masked))) if v})
        result.files += 1
        result.bytes += item.length
        if entry.get("incomplete"):
            result.warnings += 1
            self.note(artifact, "warning", f"copy incomplete: {entry['incomplete']['reason']}", path=item.path)

    def _should_abandon(self) -> str | None:
        if self.stop.is_set():
            return self.stop_reason or "stop requested"
        if time.monotonic() > self._budget_end:
            return "artifact time budget exhausted"
        return None

    def _stream(self, artifact: str, item: Stream, result: ArtifactResult,
                streams: dict[str, _JsonlStream]) -> None:
        """A generated stream (a memory image): written while it is produced, under the artifact's budget
        and the disk budget, then described as the collector declared (Stream.report_stream, label,
        summary_key, companion)."""
        if not self._disk_ok(artifact):
            return
        guard = _StreamGuard(self, artifact)
        started = time.monotonic()
        # chunks may be views of reused buffers: they must outlive the writer thread's queue
        chunks = item.open(guard, self.writer.QUEUE_DEPTH + 2)
        if item.length is not None:
            entries = [self.writer.add_generated(item.name, ChunkReader(chunks).read, item.length, time.time_ns(),
                                                 should_stop=guard, artifact=artifact, **item.meta)]
            hashes = None
        else:
            entries, hashes = self._stream_parts(artifact, item, chunks)
        chunks.close()
        seconds = time.monotonic() - started
        size = sum(e["size"] for e in entries)
        stats = dict(vars(item.stats)) if item.stats is not None else {}
        errors = stats.pop("read_errors", [])
        entries[-1].update({k: v for k, v in stats.items() if v})
        if errors:
            result.errors += 1
            self.note(artifact, "error", f"{len(errors)} regions could not be read and are zero-filled",
                      detail={"first": errors[:20]})
        incomplete = next((e["incomplete"] for e in entries if e.get("incomplete")), None)
        if incomplete is None and item.length is None and guard():
            incomplete = {"reason": self.stop_reason or "stopped"}
        if incomplete:
            result.status = "interrupted" if self.stop.is_set() else "timeout"
            result.reason = guard.reason or incomplete["reason"]
        record = {"member": item.name if item.length is not None else f"{item.name}.part*",
                  "parts": len(entries) if item.length is None else None,
                  "sha256": hashes[False].hexdigest() if hashes else entries[0]["sha256"],
                  "bytes": size, "seconds": round(seconds, 3),
                  "mb_per_s": round(size / 1e6 / seconds, 1) if seconds else None,
                  "complete": not incomplete, **stats, "read_errors": errors[:100]}
        if hashes is not None and any(e.get("companion") for e in entries):
            record["companion"] = {"member": f"{_companion_name(item)}.part*", "sha256": hashes[True].hexdigest(),
                                   "why": item.companion_why}
        if item.report_stream:
            streams.setdefault(item.report_stream, _JsonlStream(item.report_stream, artifact)).add(record, self.writer)
        result.files += len(entries)
        result.bytes += size
        if item.summary_key:
            self.highlights[item.summary_key] = {k: record[k] for k in ("member", "sha256", "bytes", "complete")}
        self.note(artifact, "info", f"{item.label} {record['member']}: {size} bytes in {seconds:.1f}s, "
                  f"sha256 {record['sha256']}" + (f" ({incomplete['reason']})" if incomplete else ""))

    def _stream_parts(self, artifact: str, item: Stream,
                      chunks: Iterator[Any]) -> tuple[list[dict[str, Any]], dict[bool, Any]]:
        """A stream of unknown size, in parts (its companion's chunks in parts of their own); the hash of
        each of the two over all its parts."""
        hashes = {False: hashlib.sha256(), True: hashlib.sha256()}  # the stream, its companion
        entries, counters = [], {False: 0, True: 0}
        for part in _parts(chunks, PART_BYTES):
            base = _companion_name(item) if part.companion else item.name
            # the stream's hash over its parts is updated by the writer, in the pass that hashes the part
            entries.append(self.writer.add_generated(
                f"{base}.part{counters[part.companion]:04d}", part.read, part.size, time.time_ns(),
                also_hash=(hashes[part.companion],),
                artifact=artifact, part=counters[part.companion], companion=part.companion or None,
                **item.meta))
            counters[part.companion] += 1
        return entries, hashes

    def _space_available(self) -> int | None:
        """Bytes we may still write: free space above --min-free, within --max-disk-usage."""
        if not self.options.output_dir:
            return None
        try:
            free = shutil.disk_usage(self.options.output_dir).free - self.options.min_free_bytes
        except OSError:
            return None
        if self.options.max_disk_usage is not None:
            free = min(free, self.options.max_disk_usage - self.writer.bytes_written)
        return max(0, free)

    def _disk_ok(self, artifact: str) -> bool:
        available = self._space_available()
        if available is None or available > 0:
            return True
        self.request_stop("output disk budget reached (--min-free / --max-disk-usage)")
        self.note(artifact, "error", self.stop_reason or "", errno=errno.ENOSPC)
        return False

    # ---- sealing ----------------------------------------------------------------------------

    @property
    def status(self) -> str:
        bad = {"failed", "timeout", "interrupted", "skipped", "refused"}
        return "partial" if self.stop.is_set() or any(r.status in bad for r in self.results) else "complete"

    def finish(self, custody: dict[str, Any], sign_key: Any = None, jsonld: bool = False) -> str:
        """Seal the bundle: collection log, custody (and its CASE/UCO graph with ``jsonld``), manifest,
        its Ed25519 signature with ``sign_key``, seal."""
        now = time.time_ns()
        log_data = b"".join(canonical_json(e) for e in self.log)
        self.writer.add_bytes(f"{META_PREFIX}/collection.log.jsonl", log_data, now)
        custody = dict(custody, status=self.status, stop_reason=self.stop_reason,
                       artifacts=[r.__dict__ for r in self.results])
        self.writer.add_bytes(f"{META_PREFIX}/custody.json",
                              json.dumps(custody, indent=1, sort_keys=True, ensure_ascii=False)
                              .encode("utf-8", "backslashreplace"), now)
        if jsonld:
            from agent.engine.case import JSONLD_NAME, custody_jsonld, jsonld_bytes

            graph = custody_jsonld(custody, {"members": self.writer.entries}, None)
            self.writer.add_bytes(JSONLD_NAME, jsonld_bytes(graph), now)
        meta: dict[str, Any] = {"format": "triagent-bundle/1", "status": self.status, "profile": self.profile.name,
                                "started_ns": self.started_ns}
        sign = None
        if sign_key is not None:
            from agent.bundle.signing import fingerprint, sign_manifest

            meta["signer"] = fingerprint(sign_key.public_key())  # inside what is signed: removal is detected
            sign = lambda data: sign_manifest(data, sign_key)  # noqa: E731
        return self.writer.seal(meta, now, sign=sign)


PART_BYTES = 8 << 20  # a stream of unknown size is written in parts of about this size, each held in memory


class _StreamGuard:
    """The stop test a stream's producer and the writer ask between chunks: a stop request, the
    artifact's time budget, the output's disk budget (every 64 asks: it costs a statfs). ``reason`` says
    which one stopped it."""

    def __init__(self, run: Run, artifact: str):
        self.run, self.artifact = run, artifact
        self.budget_end = run._budget_end
        self.checks = 0
        self.reason: str | None = None

    def __call__(self) -> bool:
        self.checks += 1
        run = self.run
        if run.stop.is_set():
            self.reason = self.reason or run.stop_reason or "stop requested"
            return True
        if time.monotonic() > self.budget_end:
            if self.reason is None:
                self.reason = "max-duration reached" if time.monotonic() >= run.deadline \
                    else "artifact time budget exhausted"
                run.note(self.artifact, "error", "artifact time budget exhausted while streaming")
            return True
        if self.checks % 64 == 0 and not run._disk_ok(self.artifact):
            self.reason = self.reason or run.stop_reason
            return True
        return False


def _companion_name(item: Stream) -> str:
    return f"{item.name}-{item.companion or 'companion'}"


class _Part:
    """The chunks of one part, read back in order without joining them (no second copy in memory)."""

    def __init__(self, chunks: list[bytes], companion: bool):
        self.chunks, self.companion = chunks, companion
        self.size = sum(len(c) for c in chunks)
        self._index = self._offset = 0

    def read(self, n: int) -> bytes | memoryview:
        while self._index < len(self.chunks):
            chunk = self.chunks[self._index]
            if self._offset < len(chunk):
                out = memoryview(chunk)[self._offset:self._offset + n]
                self._offset += len(out)
                return out
            self.chunks[self._index] = b""  # written: its memory can go
            self._index, self._offset = self._index + 1, 0
        return b""


def _parts(chunks: Iterator[Any], target: int) -> Iterator[_Part]:
    """Group whole chunks (AVML records) into parts of about ``target`` bytes: each part is itself a
    valid image of the records it holds. Companion chunks (LiME) gather in parts of their own, beside
    (never interleaved with) the AVML parts: at most two parts are in memory at once."""
    buffers: dict[bool, list[bytes]] = {False: [], True: []}
    sizes = {False: 0, True: 0}
    image_parts = 0
    for chunk in chunks:
        kind = isinstance(chunk, CompanionChunk)
        buffers[kind].append(chunk if isinstance(chunk, bytes) else bytes(chunk))  # bytes: immutable, kept
        sizes[kind] += len(chunk)
        if sizes[kind] >= target:
            part = _Part(buffers[kind], kind)
            buffers[kind], sizes[kind] = [], 0
            image_parts += not kind
            yield part
    for kind in (False, True):
        if buffers[kind] or (not kind and not image_parts):  # the image has one part at least, if empty
            yield _Part(buffers[kind], kind)


class _OffThreadReader:
    """Reads a host file in a thread of its own; the writer takes the chunks with a deadline. A read
    that makes no progress for ``timeout`` seconds, or a stop request, abandons the thread (it may be
    stuck in the kernel for ever) and ends the member as incomplete: the run goes on and seals."""

    DEPTH = 2

    def __init__(self, fd: int, path: str, timeout: float, abandon: Callable[[], str | None]):
        self.fd, self.path, self.timeout, self.abandon = fd, path, timeout, abandon
        self._queue: queue.Queue = queue.Queue(maxsize=self.DEPTH)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.abandoned = False

    def _wait(self, box: queue.Queue) -> Any:
        waited = 0.0
        while True:
            try:
                return box.get(timeout=POLL_S)
            except queue.Empty:
                waited += POLL_S
            reason = self.abandon()
            if reason is None and waited >= self.timeout:
                reason = f"read made no progress for {self.timeout:g} s"
            if reason is not None:
                self._stopped.set()
                self.abandoned = True
                raise OSError(errno.ETIMEDOUT, f"abandoned: {reason}", self.path)

    def pread(self, n: int, offset: int) -> bytes:
        """One read, off this thread, under the same deadline."""
        box: queue.Queue = queue.Queue(maxsize=1)

        def run() -> None:
            try:
                box.put(os.pread(self.fd, n, offset))
            except OSError as exc:
                box.put(exc)

        threading.Thread(target=run, name="evidence-read", daemon=True).start()
        out = self._wait(box)
        if isinstance(out, OSError):
            raise out
        return out

    def start(self, offset: int, length: int) -> None:
        def run() -> None:
            pos, end = offset, offset + length
            try:
                while pos < end and not self._stopped.is_set():
                    chunk = os.pread(self.fd, min(COPY_CHUNK, end - pos), pos)
                    self._put(chunk)
                    if not chunk:
                        return
                    pos += len(chunk)
                self._put(b"")
            except OSError as exc:
                self._put(exc)

        self._thread = threading.Thread(target=run, name="evidence-read", daemon=True)
        self._thread.start()

    def _put(self, value: Any) -> None:
        while not self._stopped.is_set():
            try:
                self._queue.put(value, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def read(self, n: int) -> bytes:
        out = self._wait(self._queue)
        if isinstance(out, OSError):
            raise out
        return out

    def stop(self) -> None:
        self._stopped.set()


class _Worker:
    """One collector on its own thread, putting its items in a bounded queue for the writer. ``waited`` is
    the time it spent blocked on a full queue (the writer busy with earlier artifacts)."""

    def __init__(self, spec: ArtifactSpec, ctx: Context, items: queue.Queue, started: float, started_utc: str,
                 budget_end: float, ahead: bool = False):
        self.spec, self.ctx, self.items = spec, ctx, items
        self.started, self.started_utc, self.budget_end, self.ahead = started, started_utc, budget_end, ahead
        self.thread: threading.Thread | None = None
        self.gate: Redactor | None = None  # in a child: the run's Redactor, applied there to its records
        self.room = threading.Condition()
        self.queued_bytes = 0  # of its frames in the queue
        self.waited = 0.0
        self.finished: float | None = None  # when its collector ended (before the writer took all its items)

    def run(self) -> None:
        try:
            for item in self.spec.load()(self.ctx):
                self._put(item)
            self._put(_DONE)
            self.finished = time.monotonic()  # after the put: a wait on a full queue is counted once, by _put
        except Cancelled:
            self.items.put(_DONE)
        except BaseException as exc:  # isolation: any collector bug is a record, never a crash
            self.items.put(_Failure(exc, traceback.format_exc(limit=8)))

    def run_in_child(self) -> None:
        """The same, with the collector in a forked child (agent/engine/child.py): this thread receives."""
        try:
            collect = self.spec.load()
        except BaseException as exc:  # isolation: a collector that does not import is a record
            self.items.put(_Failure(exc, traceback.format_exc(limit=8)))
            return
        try:
            collector = child.ChildCollector(collect, self.ctx, self.gate)
        except OSError:  # no fork (EAGAIN: a process limit; ENOMEM): the collector runs on this thread
            self.run()
            return
        try:
            for frame in collector.frames(self.ctx.cancel.is_set):
                queued = _Frame(frame)
                self._room_for(queued.size)
                self._put(queued)  # one queue entry per frame: ITEM_QUEUE frames may wait, not items
            self._put(_DONE)
            self.finished = time.monotonic()
        except Cancelled:
            self.items.put(_DONE)
        except child.Failed as exc:
            self.items.put(_Failure(exc.as_exception(), exc.trace))
        except BaseException as exc:  # isolation: a child that died, a frame that did not unpickle
            self.items.put(_Failure(exc, traceback.format_exc(limit=8)))

    def _room_for(self, size: int) -> None:
        """Wait while the frames this worker queued hold over QUEUED_BYTES (a child's scrubbed copies carry their
        bytes): the first frame always goes."""
        blocked = None
        reading = self.ctx.reading
        try:
            with self.room:
                while self.queued_bytes and self.queued_bytes + size > QUEUED_BYTES:
                    if self.ctx.cancel.is_set():
                        raise Cancelled()
                    if blocked is None:  # a wait for the writer, not for the host: the mark must not age
                        blocked, self.ctx.reading = time.monotonic(), None
                    self.room.wait(POLL_S)
                self.queued_bytes += size
        finally:
            if blocked is not None:
                now = time.monotonic()
                self.waited += now - blocked
                if reading is not None:
                    self.ctx.reading = (reading[0], now)

    def taken(self, size: int) -> None:
        """The writer wrote a frame of ``size`` bytes."""
        with self.room:
            self.queued_bytes -= size
            self.room.notify_all()

    def _put(self, item: Any) -> None:
        try:
            self.items.put_nowait(item)
            return
        except queue.Full:
            pass
        blocked = time.monotonic()
        # waiting for the writer is no host read: a mark the collector holds across this yield must not age
        # meanwhile, or the writer, reaching it later, would take a long wait for a stuck read and abandon it
        reading, self.ctx.reading = self.ctx.reading, None
        try:
            while True:
                try:
                    self.items.put(item, timeout=0.2)
                    return
                except queue.Full:
                    if self.ctx.cancel.is_set():
                        raise Cancelled() from None
        finally:
            now = time.monotonic()
            self.waited += now - blocked
            if reading is not None:
                self.ctx.reading = (reading[0], now)

    def writing(self) -> None:
        """The writer has reached this artifact: let its queue grow to the usual depth. A collector that ended
        before that waited for the writer from its end until now."""
        if self.finished is not None:
            self.waited += max(0.0, time.monotonic() - self.finished)
        with self.items.mutex:
            self.items.maxsize = ITEM_QUEUE
            self.items.not_full.notify_all()

    def abandon(self) -> None:
        """Stop a collector that ran ahead and will not be written (a stop request): cancel it and let go of
        what it queued (descriptors of file copies)."""
        self.ctx.cancel.set()
        Run._discard_queued(self.items)


@dataclass
class _Frame:
    """Items a collector's child sent in one frame, queued as one entry."""

    items: list[Any]
    size: int = 0

    def __post_init__(self) -> None:
        self.size = sum(len(i.data) if isinstance(i, (Blob, child.ScrubbedCopy))
                        else len(i.line) if isinstance(i, child.GatedRecord) else 64 for i in self.items)

    def close(self, start: int = 0) -> None:
        """Let go of the descriptors of the copies not written (from ``start`` on)."""
        for item in self.items[start:]:
            if isinstance(item, FileCopy):
                item.close()


@dataclass
class _Failure:
    exc: BaseException
    trace: str



class _JsonlStream:
    def __init__(self, name: str, artifact: str):
        self.name, self.artifact = name, artifact
        self.buffer: list[bytes] = []
        self.size = 0
        self.part = 0

    def add(self, record: dict[str, Any], writer: BundleWriter) -> None:
        self.add_line(encode_line(record), writer)

    def add_line(self, data: bytes, writer: BundleWriter) -> None:
        self.buffer.append(data)
        self.size += len(data)
        if self.size >= JSONL_PART_BYTES:
            self.flush(writer)

    def flush(self, writer: BundleWriter) -> None:
        if not self.buffer and self.part:
            return
        suffix = "" if self.part == 0 else f".part{self.part:03d}"
        writer.add_bytes(f"{META_PREFIX}/artifacts/{self.name}{suffix}.jsonl", b"".join(self.buffer),
                         time.time_ns(), artifact=self.artifact, records=len(self.buffer))
        self.buffer, self.size = [], 0
        self.part += 1
