"""Any HTTPS server: one streamed PUT (chunked transfer encoding), optional bearer token from a file."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from agent.ship.backends.base import Backend
from agent.ship.http import Http, UploadError
from agent.ship.limits import MiB


class HttpsPut(Backend):
    """One streamed PUT (chunked encoding). A connection lost mid-body cannot be resumed (the bytes
    are gone from memory): it is retried only while no byte of the body has been sent."""

    kind = "https-put"

    @classmethod
    def read_url(cls, ticket: dict[str, Any]) -> str | None:
        return ticket.get("url") or None

    def __init__(self, http: Http, ticket: dict[str, Any]):
        super().__init__(http, ticket)
        self.q: queue.Queue[tuple[memoryview, threading.Event] | None] = queue.Queue(maxsize=1)
        self.thread: threading.Thread | None = None
        self.failure: UploadError | None = None
        self.response: requests.Response | None = None
        self.consumed = 0
        self.done = threading.Event()
        headers = dict(self._headers("put"))
        token_file = ticket.get("bearer_token_file")
        if token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as exc:
                raise UploadError("ticket", f"cannot read the bearer token file: {exc.strerror}") from None
            headers["Authorization"] = f"Bearer {token}"
        self.headers = headers

    def _body(self) -> Iterator[memoryview]:
        while True:
            item = self.q.get()
            if item is None:
                return
            data, sent = item
            # urllib3 copies each chunk to frame it: small slices keep that copy small.
            for i in range(0, len(data), MiB):
                piece = data[i:i + MiB]
                self.consumed += len(piece)
                yield piece
            sent.set()                  # urllib3 asks for the next chunk once this one is on the wire

    def _run(self) -> None:
        def attempt(n: int) -> requests.Response:
            if n > 0 and self.consumed:
                raise UploadError("network", f"connection lost after {self.consumed} bytes of a streamed PUT, "
                                  "which cannot resume")
            return self.http.send("PUT", self.ticket["url"], what="streamed PUT", data=self._body(),
                                  headers=self.headers, ok=(200, 201, 204))
        try:
            self.response = self.http.retrying("streamed PUT", attempt)
        except UploadError as exc:
            self.failure = exc
        finally:
            self.done.set()

    def begin(self) -> None:
        self.thread = threading.Thread(target=self._run, name="triagent-https-put", daemon=True)
        self.thread.start()

    def put_part(self, number: int, offset: int, data: memoryview, final: bool, md5: bytes | None = None) -> None:
        sent = threading.Event()
        while True:
            if self.failure or self.done.is_set():
                raise self.failure or UploadError("rejected", "the server answered before the body was sent")
            try:
                self.q.put((data, sent), timeout=0.2)
                break
            except queue.Full:
                continue
        while not sent.wait(0.2):
            if self.done.is_set():
                raise self.failure or UploadError("rejected", "the server answered before the body was sent")
        self.stored += len(data)
        self.parts += 1

    def finish(self, total: int) -> None:
        while not self.done.is_set():
            try:
                self.q.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        self.done.wait()
        if self.failure:
            raise self.failure

    def cancel(self) -> str:
        self.failure = self.failure or UploadError("aborted", "aborted")
        try:
            self.q.put_nowait(None)
        except queue.Full:
            pass
        return "streamed PUT closed before its end: the server should discard the partial body"
