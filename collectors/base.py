"""What collectors produce and what they are given. The engine in agent/ consumes these types.

A collector is a function ``collect(ctx: Context) -> Iterator[Item]``. It yields
:class:`Record` (one JSON object for a JSON Lines member), :class:`FileCopy` (a raw copy of a
file, opened safely, streamed by the engine into the bundle) or :class:`Problem` (an error or a
fact about what could not be collected). Collectors never raise for expected trouble
(EACCES, a vanished PID, a FIFO): they yield a Problem and go on.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any


class Cancelled(Exception):
    """Raised inside a collector when its budget ran out or the run is stopping."""


@dataclass
class Record:
    stream: str  # JSON Lines member name, e.g. "processes" -> artifacts/processes.jsonl
    data: dict[str, Any]


@dataclass
class Problem:
    message: str
    path: str | None = None
    level: str = "error"  # error | warning | info
    errno: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_os_error(cls, exc: OSError, what: str, path: str | None = None) -> Problem:
        code = exc.errno
        name = errno.errorcode.get(code, str(code)) if code is not None else type(exc).__name__
        level = "warning" if code in (errno.ENOENT, errno.ESRCH) else "error"
        return cls(f"{what}: {name} {exc.strerror or exc}", path=path, level=level, errno=code)


@dataclass
class FileCopy:
    """A regular file opened read-only (O_NOFOLLOW, O_NONBLOCK); the engine copies and closes it.

    ``path`` is the path as seen on the evidence host (absolute, root-relative when --root);
    ``offset``/``length`` select what is copied (caps keep the head or the tail of big files).
    """

    path: str
    fd: int
    stat: os.stat_result
    offset: int
    length: int
    cap_reason: str | None = None
    artifact: str = ""

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


@dataclass
class SymlinkCopy:
    path: str
    target: str
    stat: os.stat_result


Item = Record | Problem | FileCopy | SymlinkCopy


@dataclass
class Context:
    """Everything a collector may know about the run."""

    root: str  # "/" for a live host, else a mounted image / test tree
    live: bool
    options: dict[str, Any]
    include_secrets: bool = False
    artifact: str = ""
    deadline: float = float("inf")  # time.monotonic() value
    cancel: threading.Event = field(default_factory=threading.Event)
    started_utc: float = field(default_factory=time.time)

    def check(self) -> None:
        """Collectors call this in loops: it raises Cancelled when the budget is gone."""
        if self.cancel.is_set() or time.monotonic() > self.deadline:
            raise Cancelled()

    def host_path(self, path: str) -> str:
        """Map an evidence path (absolute, as on the suspect) to where we read it."""
        if self.root == "/":
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def opt(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


Collector = Callable[[Context], Iterator[Item]]


def evidence_path(*parts: str) -> str:
    return str(PurePosixPath("/", *[p.lstrip("/") for p in parts]))
