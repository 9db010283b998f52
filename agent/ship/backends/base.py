"""What every upload backend shares: the ticket, the counters the Upload reports, the part hooks."""

from __future__ import annotations

import hashlib
from typing import Any

from agent.ship.http import _Http, safe_url, scrub


def _md5(data: memoryview) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


class _Backend:
    kind = ""
    quantum = 1                     # non-final parts must be a multiple of this
    wants_md5 = False               # the part's MD5 is computed by the writer as bytes arrive
    max_parts: int | None = None

    def __init__(self, http: _Http, ticket: dict[str, Any]):
        self.http = http
        self.ticket = ticket
        self.stored = 0
        self.parts = 0
        self.skipped = 0
        self.etags: list[str] = []

    @property
    def destination(self) -> str:
        dest = self.ticket.get("destination")
        return scrub(str(dest)) if dest else safe_url(self._main_url())

    def _main_url(self) -> str:
        return self.ticket.get("url", "")

    def max_bytes(self, part_size: int) -> int | None:
        return None

    def begin(self) -> None:
        pass

    def put_part(self, number: int, offset: int, data: memoryview, final: bool, md5: bytes | None = None) -> None:
        raise NotImplementedError

    def finish(self, total: int) -> None:
        raise NotImplementedError

    def cancel(self) -> str:
        return "nothing to clean up"

    def _headers(self, op: str) -> dict[str, str]:
        return dict((self.ticket.get("headers") or {}).get(op) or {})

    def _signed(self, op: str) -> list[str]:
        """Headers the ticket declares signed into op's URLs (for SigV2, whose URL does not list them)."""
        return list((self.ticket.get("signed_headers") or {}).get(op) or [])
