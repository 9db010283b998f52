"""A files-phase collector in a child process of its own (host side).

Why: the collectors are Python, so on threads they share one interpreter lock with the writer (the redaction gate,
JSON, the bundle): on a 2-core VM the triage profile ran on about one core. A forked child walks, parses and hashes
on the other core while the writer takes what it sends. It changes nothing of what is collected or how: the child
runs the same collector function with the same Context (the same confined reader, the same secret policy: the
parent's, inherited by the fork). The gate's work is spent there too, by the run's own Redactor (one gate, one
rule book, one code path; the fork's copy): records are gated and encoded as their JSON lines, small raw copies
read and scrubbed chunk by chunk as the parent's reader would; the parent still decides each copy (a path copied
before, a withheld path, the disk budget) and writes everything, in plan order, through the one sink.

The child is also better isolation: a read that never returns (a FUSE server that does not answer) blocks a process
the parent kills, not a thread left behind; the child dies with the parent (PR_SET_PDEATHSIG), so a killed run
leaves no walk going on the host.

Protocol, over a Unix socket pair: frames of ``<length u32><descriptors u8>`` then a pickled list of items; a
:class:`FileCopy`'s descriptor travels beside its frame (SCM_RIGHTS), never by path (reopening by path would undo the
confined open). The parent unpickles only the item types and plain values it expects. ``Context.reading`` (what the
collector is blocked on) is mirrored into a shared page, so the engine's stalled-read check sees the child's reads.
"""

from __future__ import annotations

import ctypes
import gc
import io
import mmap
import os
import pickle
import select
import signal
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from agent.bundle.writer import COPY_CHUNK
from agent.engine import progress
from agent.engine.jsonl import encode_line
from collectors.base import Blob, Cancelled, Context, FileCopy, Problem, Record, SymlinkCopy

_HEADER = struct.Struct("<IB")  # body length, descriptors sent with the header
_SINCE = struct.Struct("<d")  # the shared page: monotonic time the read began (0: none), path length, path
_LENGTH = struct.Struct("<I")
_PAGE = 4096
_PATH_MAX = _PAGE - _SINCE.size - _LENGTH.size
BATCH_ITEMS = 256  # items per frame: one send and one unpickle for many small records
BATCH_BYTES = 256 << 10
SCRUB_IN_CHILD_MAX = 4 << 20  # a raw copy up to this many bytes is read and scrubbed in the child
FLUSH_S = 0.05  # the longest an item waits in the child for its batch to fill
POLL_S = 0.2
PR_SET_PDEATHSIG = 1
_FORK_LOCK = threading.Lock()
_PARENT_ENDS: set[socket.socket] = set()  # the parent's ends of the children's sockets now open


class Done:
    """The collector's end (sent as the last item)."""


class GatedRecord:
    """A record the child already passed through the redaction gate (the run's own Redactor, inherited by the
    fork: the same rules, the same code) and encoded as its JSON Lines line, with the count of what the gate
    redacted: the gate's and the encoder's cost are spent on the child's core, the parent appends the line."""

    def __init__(self, stream: str, line: bytes, custody: dict[str, Any] | None, redactions: int):
        self.stream, self.line, self.custody, self.redactions = stream, line, custody, redactions


class ScrubbedCopy:
    """A raw copy the child already read and passed through the redaction gate's scrubber (the run's own rules),
    chunk by chunk as the parent would have: its bytes (same length as read), what the scrubber masked, the
    content rule that withholds the file if one does (then no bytes), or the read error that cut it. The parent
    still decides (a path copied before, a withheld path, the disk budget) and writes the member."""

    def __init__(self, copy: FileCopy):
        self.path, self.stat, self.offset, self.length = copy.path, copy.stat, copy.offset, copy.length
        self.cap_reason, self.artifact = copy.cap_reason, copy.artifact
        self.data = b""
        self.rule: str | None = None  # the content rule that withholds it
        self.open_error: tuple[int | None, str] | None = None  # the head could not be read: nothing copied
        self.read_error: tuple[int | None, str] | None = None  # the read stopped after ``data``
        self.blocks = 0
        self.masked: dict[str, int] = {}

    @classmethod
    def of(cls, copy: FileCopy, ctx: Context, scrubber: Any) -> ScrubbedCopy:
        """Read ``copy`` (each read marked, so a read that hangs is this child's stalled read) and scrub it."""
        out = cls(copy)
        fd = copy.fd

        def pread(n: int, offset: int) -> bytes:
            with ctx.blocking(copy.path):
                return os.pread(fd, n, offset)

        try:
            if ctx.secret_policy is not None:
                out.rule = ctx.secret_policy(copy.path, pread(4096, 0))
                if out.rule:
                    return out
            if copy.offset:  # a tail window may begin inside a key block
                before = min(copy.offset, 64 << 10)
                scrubber.prime(pread(before, copy.offset - before))
        except OSError as exc:
            out.open_error = (exc.errno, exc.strerror or str(exc))
            return out
        pos, end = copy.offset, copy.offset + copy.length

        def raw(_n: int) -> bytes:  # the parent's reader: chunks of COPY_CHUNK, b"" at the end
            nonlocal pos
            chunk = pread(min(COPY_CHUNK, end - pos), pos) if pos < end else b""
            pos += len(chunk)
            return chunk

        read, parts = scrubber.reader(raw), []  # the scrubbing reader the parent wraps around its own
        while True:
            try:
                piece = read(COPY_CHUNK)
            except OSError as exc:  # as in the parent: what was scrubbed so far, then the error
                out.read_error = (exc.errno, exc.strerror or str(exc))
                break
            if not piece:
                break
            parts.append(piece)
        out.data = b"".join(parts)
        out.blocks, out.masked = scrubber.blocks, dict(scrubber.masked)
        return out

    def reader(self) -> Callable[[int], bytes]:
        """``read(n)`` over the bytes, then the read error if there was one (the writer pads and says so)."""
        view, pos = memoryview(self.data), 0

        def read(n: int) -> bytes:
            nonlocal pos
            chunk = bytes(view[pos:pos + n])
            pos += len(chunk)
            if not chunk and self.read_error is not None:
                raise OSError(self.read_error[0], self.read_error[1])
            return chunk

        return read


SENDABLE = (Record, Problem, FileCopy, SymlinkCopy, Blob, ScrubbedCopy)  # what a collector's child sends


class Failed(Exception):
    """A collector's exception in the child, as the engine records it: the original type's name and text."""

    def __init__(self, name: str, message: str, trace: str):
        super().__init__(message)
        self.name, self.message, self.trace = name, message, trace

    def __reduce__(self) -> tuple[Any, tuple[str, str, str]]:
        return Failed, (self.name, self.message, self.trace)

    def as_exception(self) -> Exception:
        """An exception of the collector's own type name, so the log reads as it would on a thread."""
        return type(self.name, (Exception,), {})(self.message)


def available() -> bool:
    """fork(2) and SCM_RIGHTS: Linux always; never on a platform without them."""
    return hasattr(os, "fork") and hasattr(socket, "send_fds")


# ---- the shared page: the child's Context.reading, seen by the parent -------------------------------------------

def _write_reading(page: mmap.mmap, value: tuple[str, float] | None) -> None:
    _SINCE.pack_into(page, 0, 0.0)  # invalid while the path changes
    if value is None:
        return
    raw = value[0].encode("utf-8", "surrogateescape")[:_PATH_MAX]
    _LENGTH.pack_into(page, _SINCE.size, len(raw))
    page[_SINCE.size + _LENGTH.size:_SINCE.size + _LENGTH.size + len(raw)] = raw
    _SINCE.pack_into(page, 0, value[1] or 1e-9)


def read_reading(page: mmap.mmap) -> tuple[str, float] | None:
    """What the child is blocked on, as the parent sees it (a torn read at worst names the previous path)."""
    since = _SINCE.unpack_from(page, 0)[0]
    if not since:
        return None
    length = min(_LENGTH.unpack_from(page, _SINCE.size)[0], _PATH_MAX)
    path = bytes(page[_SINCE.size + _LENGTH.size:_SINCE.size + _LENGTH.size + length])
    return path.decode("utf-8", "surrogateescape"), since


class _SharedReading(Context):
    """The child's Context: ``reading`` also goes to the shared page (the class is swapped in after the fork)."""

    @property  # type: ignore[override]
    def reading(self) -> tuple[str, float] | None:
        return self.__dict__.get("_reading")

    @reading.setter
    def reading(self, value: tuple[str, float] | None) -> None:
        self.__dict__["_reading"] = value
        page = self.__dict__.get("_page")
        if page is not None:
            _write_reading(page, value)


# ---- the child ---------------------------------------------------------------------------------------------------

class _Sender:
    """Items in frames: a batch goes when it is full, when a FileCopy comes (with its descriptor), at the end, and
    when its oldest item has waited FLUSH_S (a thread of the child sends it), so what a collector yielded before it
    blocks or dies reaches the parent as it would from a thread."""

    def __init__(self, sock: socket.socket, ctx: Context, gate: Any = None):
        self.sock, self.ctx, self.gate = sock, ctx, gate
        self.batch: list[Any] = []
        self.size = 0
        self.since = 0.0
        self.lock = threading.Lock()
        self.ended = False
        threading.Thread(target=self._flusher, name="child-flush", daemon=True).start()

    def add(self, item: Any) -> None:
        if isinstance(item, FileCopy) and self._scrub_here(item):
            copy = item
            try:  # read and scrubbed here, on the child's core
                item = ScrubbedCopy.of(copy, self.ctx, self.gate.scrubber())
            finally:
                copy.close()
        with self.lock:
            if isinstance(item, FileCopy):
                self._flush()
                try:
                    self._send([item], [item.fd])
                finally:
                    item.close()  # the parent holds its own descriptor now
                return
            if not isinstance(item, SENDABLE):
                raise TypeError(f"collector yielded {type(item).__name__}, which cannot leave a child process")
            if self.gate is not None and type(item) is Record:
                before = self.gate.redactions
                line = encode_line(self.gate.record(item.data, item.stream))
                item = GatedRecord(item.stream, line, item.custody, self.gate.redactions - before)
            if not self.batch:
                self.since = time.monotonic()
            self.batch.append(item)
            self.size += 64 + (len(item.data) if isinstance(item, (Blob, ScrubbedCopy)) else 0)
            if len(self.batch) >= BATCH_ITEMS or self.size >= BATCH_BYTES:
                self._flush()

    def _scrub_here(self, copy: FileCopy) -> bool:
        """A small copy from a local filesystem, when the gate scrubs copies: read and scrubbed in the child. A
        big one (memory) and one from a FUSE or network filesystem (read with --read-remote-fs, where a read that
        hangs must cost one member, not the artifact) go by descriptor to the parent's reader."""
        gate = self.gate
        return (gate is not None and not gate.include_secrets and not self.ctx.read_remote_fs
                and copy.length <= SCRUB_IN_CHILD_MAX and copy.fd >= 0)

    def end(self, last: Any) -> None:
        with self.lock:
            self.ended = True
            self.batch.append(last)
            self._flush()

    def _flusher(self) -> None:
        while not self.ended:
            time.sleep(FLUSH_S)
            with self.lock:
                if self.batch and not self.ended and time.monotonic() - self.since >= FLUSH_S:
                    self._flush()

    def _flush(self) -> None:
        if self.batch:
            batch, self.batch, self.size = self.batch, [], 0
            self._send(batch, [])

    def _send(self, items: list[Any], fds: list[int]) -> None:
        out = io.BytesIO()
        _Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(items)
        body = out.getvalue()
        # a blocked send waits for the writer, not for the host: the collector's mark must not age meanwhile
        reading = self.ctx.reading
        if reading is not None:
            self.ctx.reading = None
        try:
            socket.send_fds(self.sock, [_HEADER.pack(len(body), len(fds))], fds)
            self.sock.sendall(body)
        finally:
            if reading is not None and self.ctx.reading is None:
                self.ctx.reading = (reading[0], time.monotonic())


class _Pickler(pickle.Pickler):
    """Items and plain values as they are; any other object as its str(), which is what the sink's JSON would
    have made of it (json.dumps(default=str)): the parent unpickles no class it did not list."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) in _SENT_TYPES or (isinstance(obj, type) and obj in _SENT_TYPES):
            return NotImplemented
        try:
            return str, (str(obj),)
        except Exception:  # noqa: BLE001 - a __str__ that raises: its type's name is what is known
            return str, (f"<{type(obj).__name__}>",)


def _child(collect: Callable[[Context], Iterator[Any]], ctx: Context, sock: socket.socket, page: mmap.mmap,
           parent: int, gate: Any) -> None:
    """The forked child: run the collector, send its items, exit without running anything of the parent's."""
    code = 0
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)  # the parent's handlers would seal a bundle it does not own
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the parent died before the death signal was asked for
            os._exit(1)
        # stdin/stdout/stderr are the parent's (stdout may be the bundle stream or SSM's pipe): a child stuck in
        # the kernel must not hold them open after the parent ends, nor write to them
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        for end in list(_PARENT_ENDS):  # the parent's ends of other children's sockets: theirs to close
            end.close()
        progress.listen(None)  # no terminal, no log: the parent tells the progress
        progress._screen = None
        ctx.__class__ = _SharedReading
        ctx.__dict__["_page"] = page
        ctx.reading = None
        sender = _Sender(sock, ctx, gate)
        last: Any = Done()
        try:
            for item in collect(ctx):
                sender.add(item)
        except Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - isolation: any collector bug is a record, never a crash
            last = Failed(type(exc).__name__, str(exc)[:2000], traceback.format_exc(limit=8))
        sender.end(last)
    except BaseException:  # noqa: BLE001 - the parent sees the socket close without Done: a failure
        code = 1
    finally:
        os._exit(code)


# ---- the parent --------------------------------------------------------------------------------------------------

_SENT_TYPES = frozenset({*SENDABLE, GatedRecord, Done, Failed, os.stat_result, str})
_ALLOWED = frozenset((t.__module__, t.__qualname__) for t in _SENT_TYPES)


class _Unpickler(pickle.Unpickler):
    """Only the item types and plain values a collector sends: a child is our code, but it read a hostile host."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"a child process sent {module}.{name}")
        return super().find_class(module, name)


class ChildCollector:
    """One collector running in a forked child; :meth:`frames` yields what it sends, in order, on the
    engine's worker thread."""

    def __init__(self, collect: Callable[[Context], Iterator[Any]], ctx: Context, gate: Any = None):
        """``gate``: the run's Redactor, applied to records in the child (None: the parent applies it)."""
        self.ctx = ctx
        self.page = mmap.mmap(-1, _PAGE)  # MAP_SHARED | MAP_ANONYMOUS: the child's writes are seen here
        # one fork at a time (workers start children from their own threads): a child forked while another
        # pair's child end is still open in the parent would hold it, and the parent would never see that other
        # child end (EOF) while this one lives
        with _FORK_LOCK:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            gc.freeze()  # the child's collections leave the parent's objects alone: fewer copied pages
            try:
                self.pid = os.fork()
            except BaseException:
                gc.unfreeze()
                ours.close()
                theirs.close()
                raise
            if self.pid == 0:  # pragma: no cover - the child (coverage does not follow a fork that _exits)
                ours.close()
                _child(collect, ctx, theirs, self.page, os.getppid(), gate)
            gc.unfreeze()
            theirs.close()
            _PARENT_ENDS.add(ours)
        self.sock = ours
        self.reaped = False
        self.done = False

    def frames(self, cancelled: Callable[[], bool]) -> Iterator[list[Any]]:  # noqa: C901 - one protocol loop
        """The child's items, a frame's worth (up to BATCH_ITEMS) at a time, until its Done; raises Failed for a
        collector's exception, EOFError when the child died without a word. Mirrors the child's ``reading`` into
        the engine's Context while it waits."""
        try:
            while True:
                header, fds = self._recv_header(cancelled)
                if header is None:
                    return
                length, _count = _HEADER.unpack(header)
                body = self._recv_exactly(length, cancelled)
                if body is None:
                    for fd in fds:
                        os.close(fd)
                    return
                items = _Unpickler(io.BytesIO(body)).load()
                for item in items:
                    if isinstance(item, FileCopy):
                        item.fd = fds.pop(0) if fds else -1
                last = items[-1] if items else None
                if isinstance(last, (Done, Failed)):
                    items.pop()
                if items:
                    yield items
                if isinstance(last, Done):
                    self.done = True
                    return
                if isinstance(last, Failed):
                    raise last
        finally:
            self.stop()

    def _wait(self, cancelled: Callable[[], bool]) -> bool:
        """Until the socket is readable: False when the engine cancelled meanwhile."""
        while True:
            self.ctx.reading = read_reading(self.page)
            if cancelled():
                return False
            if select.select([self.sock], [], [], POLL_S)[0]:
                return True

    def _recv_header(self, cancelled: Callable[[], bool]) -> tuple[bytes | None, list[int]]:
        if not self._wait(cancelled):
            return None, []
        data, fds, _flags, _addr = socket.recv_fds(self.sock, _HEADER.size, 8)
        if not data:
            raise EOFError("the child process ended without finishing (killed, or out of memory)")
        if len(data) < _HEADER.size:
            rest = self._recv_exactly(_HEADER.size - len(data), cancelled)
            if rest is None:
                return None, fds
            data += rest
        return data, list(fds)

    def _recv_exactly(self, n: int, cancelled: Callable[[], bool]) -> bytes | None:
        out = bytearray()
        while len(out) < n:
            if not self._wait(cancelled):
                return None
            chunk = self.sock.recv(min(n - len(out), 1 << 20))
            if not chunk:
                raise EOFError("the child process ended in the middle of a frame")
            out += chunk
        return bytes(out)

    def stop(self) -> None:
        """Kill the child if it still runs and reap it (a child stuck in an uninterruptible read is reaped when
        the kernel lets it go: by a thread of its own, never by the engine)."""
        if self.reaped:
            return
        self.reaped = True
        _PARENT_ENDS.discard(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass
        try:  # after Done the child only exits: wait for it; else look, and kill
            pid, _status = os.waitpid(self.pid, 0 if self.done else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            threading.Thread(target=_reap, args=(self.pid,), name="child-reaper", daemon=True).start()


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


__all__ = ["BATCH_ITEMS", "ChildCollector", "Done", "Failed", "GatedRecord", "ScrubbedCopy", "available",
           "read_reading"]
