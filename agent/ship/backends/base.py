"""What every upload backend shares: the ticket, the counters the Upload reports, the part hooks.

A backend is one storage service's protocol behind agent.ship.upload.Upload. A class that sets `kind` (the
ticket's "kind") in a module of agent/ship/backends/ is registered by that package (REGISTRY, KINDS): a new
service is one new file there, nothing else to edit."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

from agent.ship.http import Http, safe_url, scrub


def md5_digest(data: memoryview) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


class Backend:
    """Upload's sender thread calls begin(), put_part() for each part in order (the last with final=True),
    then finish(total); or cancel() to say (and do) what is left on the service."""

    kind: ClassVar[str] = ""        # the ticket's "kind"; empty: not a destination (a base for others)
    quantum: ClassVar[int] = 1      # non-final parts must be a multiple of this
    wants_md5: ClassVar[bool] = False   # the part's MD5 is computed by the writer as bytes arrive
    max_parts: ClassVar[int | None] = None

    @classmethod
    def part_plan(cls, ticket: dict[str, Any], part_size: int, buffers: int) -> tuple[int, int]:
        """(part size, part buffers) for this ticket; raises UploadError for a ticket it cannot serve.
        Called before any connection."""
        return part_size, buffers

    @classmethod
    def read_url(cls, ticket: dict[str, Any]) -> str | None:
        """Where verify_remote reads the object back when the ticket names no read_url (None: nowhere)."""
        return None

    @classmethod
    def read_headers(cls) -> dict[str, str]:
        """Headers the read-back GET needs (a service version, say)."""
        return {}

    def __init__(self, http: Http, ticket: dict[str, Any]):
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
