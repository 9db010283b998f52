"""Progress of long steps (memory imaging, artifacts, uploads, analysis), told to one listener.

Producers call ``start``/``advance``/``finish`` with a task name; with no listener (the default: a
non-terminal, `-q`, tests) each call is one global read and returns, so the hot loops that call
``advance`` per chunk pay nothing. The CLI installs a listener that renders bytes, rate and ETA on a
terminal's stderr (stdout stays the one-line JSON summary SSM shows).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Listener", "listen", "start", "advance", "finish"]

# listener(event, task, amount, total, unit): event is "start", "advance" or "finish"
Listener = Callable[[str, str, int, "int | None", str], None]
_listener: Listener | None = None


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
