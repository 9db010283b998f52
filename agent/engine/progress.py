"""Progress of long steps (memory imaging, artifacts, uploads, analysis), told to one listener.

Producers call ``start``/``advance``/``finish`` with a task name; with no listener (the default: a
non-terminal, `-q`, tests) each call is one global read and returns, so the hot loops that call
``advance`` per chunk pay nothing. The CLI installs a listener that renders bytes, rate and ETA on a
terminal's stderr (stdout stays the one-line JSON summary SSM shows): :class:`Renderer`. ``tee`` gives
one event to several listeners (the terminal and the run's log beside the bundle).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

__all__ = ["Listener", "listen", "start", "advance", "finish", "Renderer", "tee", "wanted", "human", "say",
           "add_options", "terminal", "LineLog"]

# listener(event, task, amount, total, unit): event is "start", "advance" or "finish"
Listener = Callable[[str, str, int, "int | None", str], None]
_listener: Listener | None = None
_screen: Renderer | None = None  # the terminal renderer terminal() installed, for say()


def listen(listener: Listener | None) -> Listener | None:
    """Install ``listener`` (None removes it); returns the previous one so callers can restore it."""
    global _listener
    previous, _listener = _listener, listener
    return previous


def start(task: str, total: int | None = None, unit: str = "B") -> None:
    """A step begins; ``total`` in ``unit`` when known (bytes of RAM, artifacts planned, files)."""
    if _listener is not None:
        _listener("start", task, 0, total, unit)


def advance(task: str, amount: int) -> None:
    """``amount`` more units of ``task`` are done."""
    if _listener is not None:
        _listener("advance", task, amount, None, "")


def finish(task: str) -> None:
    """The step ended (done, failed or cut short)."""
    if _listener is not None:
        _listener("finish", task, 0, None, "")


def add_options(parser: argparse.ArgumentParser) -> None:
    """-q and --progress, the same for every command that runs long (collect, analyze)."""
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress line on stderr (errors and the summary still come)")
    parser.add_argument("--progress", action="store_true",
                        help="draw the progress line on stderr even when it is not a terminal")


def terminal(quiet: bool, forced: bool, stream: IO[str] | None = None) -> Renderer | None:
    """The CLI's part: a Renderer installed as the listener when progress is wanted (``wanted``), else None.
    ``say`` then prints above its line; ``Renderer.close`` takes it down again."""
    global _screen
    if not wanted(quiet, forced, stream):
        return None
    _screen = Renderer(stream)
    listen(_screen)
    return _screen


def say(text: str) -> None:
    """A line for the operator on stderr: above the progress line when one is drawn, so neither garbles
    the other."""
    if _screen is not None:
        _screen.message(text)
    else:
        print(text, file=sys.stderr, flush=True)


def tee(*listeners: Listener | None) -> Listener | None:
    """One listener that tells each of ``listeners`` (None ones left out); None when there are none."""
    chosen = [one for one in listeners if one is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def both(event: str, task: str, amount: int, total: int | None, unit: str) -> None:
        for one in chosen:
            one(event, task, amount, total, unit)

    return both


def wanted(quiet: bool, forced: bool, stream: IO[str] | None = None) -> bool:
    """Progress is drawn when asked for (--progress), else only on a terminal and not under -q: SSM, a
    pipe or a log file get no carriage returns, so their output stays the one JSON line."""
    if forced:
        return True
    if quiet:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human(amount: float, unit: str) -> str:
    """Bytes in binary units (1.5 GiB); anything else as a plain count (12 artifacts)."""
    if unit != "B":
        return f"{amount:,.0f}" if amount == int(amount) else f"{amount:,.1f}"
    step = 0
    while abs(amount) >= 1024 and step < len(_BINARY) - 1:
        amount, step = amount / 1024, step + 1
    return f"{amount:.0f} B" if step == 0 else f"{amount:.1f} {_BINARY[step]}"


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class _Task:
    __slots__ = ("name", "total", "unit", "done", "started")

    def __init__(self, name: str, total: int | None, unit: str, now: float):
        self.name, self.total, self.unit, self.done, self.started = name, total, unit, 0, now

    def text(self, now: float) -> str:
        label = self.name.partition(":")[2] if self.name.startswith("artifact:") else self.name
        if self.name.startswith("artifact:") and not self.done and not self.total:
            return label  # the artifact now running: its name is the news
        unit = "" if self.unit in ("B", "", label) else f" {self.unit}"  # not "artifacts 4/10 artifacts"
        if self.unit == "B":
            amount = human(self.done, "B") + (f"/{human(self.total, 'B')}" if self.total else "")
        else:
            amount = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "") + unit
        parts = [f"{label} {amount}"]
        if self.total:
            parts.append(f"{min(100.0, 100.0 * self.done / self.total):.0f}%")
        elapsed = now - self.started
        if self.unit == "B" and elapsed >= 0.5 and self.done:
            rate = self.done / elapsed
            parts.append(f"{human(rate, 'B')}/s")
            if self.total and self.total > self.done:
                parts.append(f"ETA {_clock((self.total - self.done) / rate)}")
        elif self.total and self.done and elapsed >= 0.5 and self.total > self.done:
            parts.append(f"ETA {_clock((self.total - self.done) * elapsed / self.done)}")
        return " ".join(parts)


class Renderer:
    """The terminal listener: one status line on ``stream`` (stderr), redrawn in place with a carriage
    return at most ``hz`` times a second (a memory image advances per MiB: thousands of events a second,
    of which a terminal needs five), every task still running on it in the order it started, cut to the
    terminal's width. ``close`` wipes the line so that the summary that follows starts clean; ``message``
    prints a line of its own (a warning, -v) above the status line instead of through it.

    Safe from any thread: the memory imager advances from a collector thread, uploads from theirs."""

    def __init__(self, stream: IO[str] | None = None, hz: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 width: int | None = None, deferred: bool = True):
        self.stream = sys.stderr if stream is None else stream
        self.interval = 1.0 / hz
        self.clock = clock
        self.width = width
        self.tasks: dict[str, _Task] = {}
        self.lock = threading.Lock()
        self.last_draw = float("-inf")
        self.drawn = 0  # characters of the status line now on the terminal (0: none)
        self.draws = 0
        # an event that came too soon to draw is drawn a little later: else a step that starts just after a
        # draw and then runs for minutes without a word would leave the step before it on the line
        self.pending: threading.Timer | None = None
        self.deferred = deferred

    def __call__(self, event: str, task: str, amount: int, total: int | None, unit: str) -> None:
        with self.lock:
            now = self.clock()
            if event == "start":
                self.tasks[task] = _Task(task, total, unit, now)
            elif event == "advance":
                known = self.tasks.get(task)
                if known is None:  # advanced without a start: count it all the same
                    known = self.tasks[task] = _Task(task, None, "B", now)
                known.done += amount
            elif event == "finish":
                self.tasks.pop(task, None)
                if not self.tasks:  # nothing left to show: the line goes now, before any summary is printed
                    self._wipe()
                    return
            wait = self.last_draw + self.interval - now
            if wait <= 0:
                self._draw(now)
            elif self.pending is None and self.deferred:
                self.pending = threading.Timer(wait, self._late)
                self.pending.daemon = True
                self.pending.start()

    def _late(self) -> None:
        with self.lock:
            if self.pending is None:  # closed meanwhile
                return
            self.pending = None
            now = self.clock()
            if not self.tasks and not self.drawn:  # wiped meanwhile: nothing to draw
                return
            if now - self.last_draw >= self.interval * 0.5:  # nothing drew meanwhile
                self._draw(now)

    def _columns(self) -> int:
        if self.width:
            return self.width
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):
            return shutil.get_terminal_size().columns or 80

    def line(self, now: float | None = None) -> str:
        """The status line as it would be drawn now (no carriage return)."""
        now = self.clock() if now is None else now
        tasks = list(self.tasks.values())
        # "artifact:memory" says less than the "memory" task its collector started: one segment, not two
        text = " | ".join(task.text(now) for task in tasks
                          if not (task.name.startswith("artifact:") and task.name[9:] in self.tasks))
        return _printable(text)[: max(10, self._columns() - 1)]

    def _draw(self, now: float) -> None:
        text = self.line(now)
        # "\r" back to the start, then the line padded with spaces over a longer line drawn before (no escape
        # sequences: any terminal, even a dumb one, shows it right)
        self._write("\r" + text.ljust(self.drawn))
        self.drawn, self.last_draw = len(text), now
        self.draws += 1

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must never stop a collection
            pass

    def _wipe(self) -> None:
        if self.drawn:
            self._write("\r" + " " * self.drawn + "\r")
            self.drawn = 0

    def message(self, text: str) -> None:
        """A line of its own on the stream, the status line redrawn below it."""
        with self.lock:
            self._wipe()
            self._write(text.rstrip("\n") + "\n")
            if self.tasks:
                self._draw(self.clock())

    def close(self) -> None:
        """Wipe the status line (the cursor back at the start of an empty line) and stop listening."""
        global _screen
        with self.lock:
            if self.pending is not None:
                self.pending.cancel()
                self.pending = None
            self.tasks.clear()
            self._wipe()
        if _screen is self:
            _screen = None
        if _listener is self:
            listen(None)


def _printable(text: str) -> str:
    # task names come from our code, but an artifact name may come from a user's profile file: no
    # escape sequence reaches the terminal through the status line
    return "".join(c if c.isprintable() else "?" for c in text)


class LineLog:
    """A plain-text log beside the output (a bundle in --output DIR, an analysis), written as the run goes:
    line-buffered, so that a run cut short (SIGKILL, the OOM killer, a reboot) still leaves what it did up
    to then. Its callers write names, statuses, counts and times only, never a path, a record or an error's
    text (those go into the bundle, through the redaction gate): the log holds no secrets. ``listener``
    logs each step's start (with its size) and end, never each chunk. ``exclusive``: a new file (O_EXCL),
    else lines are added to one left by an earlier run."""

    def __init__(self, path: str, exclusive: bool = True):
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (os.O_EXCL if exclusive else 0)
        fd = os.open(path, flags, 0o600)
        self.path = path
        self.fh = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
        self.lock = threading.Lock()

    def line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self.lock:
            try:
                self.fh.write(f"{stamp} {_printable(text)}\n")
            except (OSError, ValueError):  # a full disk must not stop the run: the bundle matters more
                pass

    def listener(self, event: str, task: str, amount: int, total: int | None, unit: str) -> None:
        if event == "start":
            self.line(f"start {task}" + (f" ({total} {unit})" if total else ""))
        elif event == "finish":
            self.line(f"end {task}")

    def close(self) -> None:
        with self.lock:
            try:
                self.fh.close()
            except OSError:
                pass
