"""Streaming upload of the bundle with plain HTTPS (requests): no cloud SDK runs on the suspect host.

The bundle writer feeds `Upload.write()`; its total size is unknown until `close()`. One part is
filled in memory while at most one other is on the wire (``buffers=2``), so memory stays bounded by
``buffers * part_size`` whatever the stream's size.

Destinations (a ticket JSON made on the responder's side by ``triagent ticket``, see agent/responder/ticket.py,
or a bare URL):
  s3-put        one presigned PUT; the whole stream must fit in one part buffer
  s3-multipart  presigned UploadPart URLs (one per part number), presigned Complete and Abort
  azure-blob    blob SAS: Put Block (Content-MD5, equal-length ids) then Put Block List
  gcs-resumable V4 signed POST (x-goog-resumable: start), then 256 KiB-aligned chunks
  https-put     one streamed PUT (chunked transfer encoding), optional bearer token from a file

The HTTP plumbing (TLS, proxy, retries, URL checks, scrubbing) is agent/ship/http.py; each kind above is
a Backend class in a file of agent/ship/backends/, whose registry (REGISTRY, KINDS) is built from the classes.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from agent.engine import progress
from agent.ship.backends import KINDS, REGISTRY, Backend
from agent.ship.backends.azure import AZURE_VERSION
from agent.ship.backends.s3 import s3_headers, s3_signature
from agent.ship.http import (
    Http,
    ProxyConfig,
    RetryPolicy,
    UploadError,
    check_ticket_urls,
    check_url,
    describe_route,
    make_session,
    proxy_config,
    safe_url,
    scrub,
    short_error,
    tls_context,
    url_expiry,
)
from agent.ship.limits import (
    AZURE_MAX_BLOCKS,
    DEFAULT_PART_SIZE,
    GCS_QUANTUM,
    S3_MAX_PARTS,
    S3_MIN_PART,
    TICKET_FORMAT,
    MiB,
)

# What other modules, tests and tools import from here, wherever it is defined now.
__all__ = [
    "AZURE_MAX_BLOCKS", "AZURE_VERSION", "DEFAULT_PART_SIZE", "GCS_QUANTUM", "KINDS", "S3_MAX_PARTS", "S3_MIN_PART",
    "TICKET_FORMAT", "MiB", "ProxyConfig", "RetryPolicy", "Upload", "UploadError", "UploadResult", "check_ticket_urls",
    "check_url", "load_ticket", "make_session", "open_upload", "proxy_config", "s3_headers", "s3_signature",
    "safe_url", "scrub", "ticket_for_url", "tls_context", "url_expiry", "verify_remote",
]


def backend_for(kind: Any) -> type[Backend] | None:
    """The Backend class serving a ticket's kind (None: no such destination)."""
    return REGISTRY.get(kind) if isinstance(kind, str) else None


@dataclass
class UploadResult:
    ok: bool
    kind: str
    destination: str                # safe_url form
    bytes: int                      # bytes of the stream given to write()
    bytes_stored: int               # bytes the service acknowledged (parts, blocks, chunks)
    sha256: str                     # of the bytes given to write() (of the whole stream when ok)
    parts: int                      # parts / blocks / chunks acknowledged
    retries: int
    committed: bool                 # the object exists as a whole at the destination
    skipped_parts: int = 0          # blocks the service already had (Azure resume)
    error: str | None = None
    error_kind: str | None = None
    not_uploaded: str | None = None
    cleanup: str | None = None
    etags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- the stream

class Upload:
    """File-like sink: write() the bundle's bytes, then close() (or abort())."""

    def __init__(self, backend: Backend, part_size: int, buffers: int, log: Callable[[str], None]):
        if backend.quantum > 1:
            part_size = max(backend.quantum, part_size - part_size % backend.quantum)
        self.backend = backend
        self.part_size = part_size
        self.limit = backend.max_bytes(part_size)
        self.log = log
        self.sha = hashlib.sha256()
        self.total = 0
        self.number = 0
        self.offset = 0                 # stream offset of the part being filled
        self.fill = 0
        self.free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(max(1, buffers)):
            self.free.put(bytearray(part_size))
        self.buf = self.free.get()
        self.part_md5 = hashlib.md5(usedforsecurity=False) if backend.wants_md5 else None
        self.work: queue.Queue[tuple[int, int, bytearray, int, bool, bytes | None] | None] = queue.Queue(maxsize=1)
        self.error: UploadError | None = None
        self.closed = False
        self.result: UploadResult | None = None
        self.started = time.monotonic()
        self.sender = threading.Thread(target=self._send_loop, name="triagent-upload", daemon=True)
        self.sender.start()

    # The sender thread owns the backend from here until close() joins it.
    def _send_loop(self) -> None:
        while True:
            job = self.work.get()
            if job is None:
                return
            number, offset, buf, length, final, md5 = job
            try:
                if self.error is None:
                    self.backend.put_part(number, offset, memoryview(buf)[:length], final, md5)
                    progress.advance("upload", length)  # bytes the destination has acknowledged
            except UploadError as exc:
                self.error = exc
            except Exception as exc:  # noqa: BLE001 - any failure must reach the writer, scrubbed
                self.error = UploadError("network", f"{type(exc).__name__}: {short_error(exc)}")
            finally:
                self.free.put(buf)

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def _flush(self, final: bool) -> None:
        self.number += 1
        if self.backend.max_parts and self.number > self.backend.max_parts:
            raise UploadError("too_large", f"more than {self.backend.max_parts} parts of {self.part_size} bytes")
        md5 = None
        if self.part_md5 is not None:
            md5 = self.part_md5.digest()
            self.part_md5 = hashlib.md5(usedforsecurity=False)
        self.work.put((self.number, self.offset, self.buf, self.fill, final, md5))
        self.offset += self.fill
        self.fill = 0
        self.buf = self.free.get()      # waits while both buffers are busy: this bounds memory
        self._raise_if_failed()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise ValueError("write to a closed upload")
        self._raise_if_failed()
        mv = memoryview(data).cast("B")
        n = len(mv)
        if self.limit is not None and self.total + n > self.limit:
            raise UploadError("too_large", f"the stream passed {self.limit} bytes, the most a single presigned "
                              "PUT takes here; issue a multipart ticket (triagent ticket s3 --size-hint ...)")
        self.sha.update(mv)
        self.total += n
        while mv:
            if self.fill == self.part_size:     # flushed only when more follows: the last part stays here
                self._flush(final=False)
            take = min(len(mv), self.part_size - self.fill)
            self.buf[self.fill:self.fill + take] = mv[:take]
            if self.part_md5 is not None:   # hashed here, in the writer, so the sender only sends
                self.part_md5.update(mv[:take])
            self.fill += take
            mv = mv[take:]
        return n

    def _drain(self) -> None:
        self.work.put(None)
        self.sender.join()

    def close(self) -> UploadResult:
        if self.result is not None:
            return self.result
        self.closed = True
        try:
            self._raise_if_failed()
            if self.fill or self.number == 0:
                self._flush(final=True)
            self._drain()
            self._raise_if_failed()
            self.backend.finish(self.total)
        except UploadError as exc:
            self._drain_quietly()
            self.result = self._result(False, exc)
            self.result.cleanup = "nothing committed; " + self.backend.cancel()
            raise UploadError(exc.kind, self._explain(exc), status=exc.status, code=exc.code) from None
        self.result = self._result(True)
        self.log(f"upload: {self.total} bytes to {self.backend.destination} in {self.backend.parts} parts, "
                 f"{self.backend.http.retries} retries, sha256 {self.result.sha256}, "
                 f"{time.monotonic() - self.started:.1f}s")
        return self.result

    def _drain_quietly(self) -> None:
        if self.sender.is_alive():
            self.error = self.error or UploadError("aborted", "aborted")
            self._drain()

    def abort(self, reason: str) -> UploadResult:
        """Stop; discard what the service holds where it can (S3 abort, GCS cancel). Says what was
        and was not uploaded."""
        if self.result is not None:
            return self.result
        self.closed = True
        self.error = self.error or UploadError("aborted", reason)
        self._drain_quietly()
        self.result = self._result(False, UploadError("aborted", reason))
        self.result.cleanup = self.backend.cancel()
        self.log(f"upload: aborted ({scrub(reason)}): {self.result.not_uploaded}; {self.result.cleanup}")
        return self.result

    def _result(self, ok: bool, exc: UploadError | None = None) -> UploadResult:
        b = self.backend
        res = UploadResult(ok=ok, kind=b.kind, destination=b.destination, bytes=self.total, bytes_stored=b.stored,
                           sha256=self.sha.hexdigest(), parts=b.parts, retries=b.http.retries, committed=ok,
                           skipped_parts=b.skipped, etags=list(b.etags))
        if exc is not None:
            res.error, res.error_kind = str(exc), exc.kind
            res.not_uploaded = (f"no object was committed at {b.destination}; the service acknowledged "
                                f"{b.stored} of the {self.total} bytes written ({b.parts} parts), "
                                f"{max(0, self.total - b.stored)} bytes were never stored")
        return res

    def _explain(self, exc: UploadError) -> str:
        assert self.result is not None
        return f"{exc} -- {self.result.not_uploaded}"

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(f"{exc_type.__name__}: {short_error(exc)}" if exc else "interrupted")


# ---------------------------------------------------------------------------------------------- entry points

def load_ticket(target: str) -> dict[str, Any]:
    """A ticket dict from a ticket file path or a bare URL (kind guessed from its signature)."""
    if "://" not in target:
        try:
            ticket = json.loads(Path(target).read_text())
        except (OSError, ValueError) as exc:
            raise UploadError("ticket", f"cannot read ticket {target}: {type(exc).__name__}") from None
        if ticket.get("format") != TICKET_FORMAT or ticket.get("kind") not in KINDS:
            raise UploadError("ticket", f"{target} is not a {TICKET_FORMAT} ticket")
        return ticket
    return ticket_for_url(target)


def ticket_for_url(url: str) -> dict[str, Any]:
    q = {k.lower() for k in parse_qs(urlsplit(url).query)}
    if "x-amz-signature" in q or "signature" in q and "awsaccesskeyid" in q:
        kind = "s3-put"
    elif "sig" in q and ("sr" in q or "sv" in q):
        kind = "azure-blob"
    elif "x-goog-signature" in q:
        return {"format": TICKET_FORMAT, "kind": "gcs-resumable", "start_url": url}
    else:
        kind = "https-put"
    key = "blob_url" if kind == "azure-blob" else "url"
    return {"format": TICKET_FORMAT, "kind": kind, key: url}


def open_upload(target: str | dict[str, Any], *, ca_bundle: str | None = None, part_size: int | None = None,
                log: Callable[[str], None] | None = None, bearer_token_file: str | None = None,
                retry: RetryPolicy | None = None, buffers: int = 2,
                session: requests.Session | None = None, proxy: str | None = None) -> Upload:
    """Start an upload to a ticket file, a ticket dict or a URL. `part_size` defaults to the
    ticket's, else 16 MiB; `buffers` = part buffers in memory (2: one fills while one is sent).
    `proxy`: the operator's --proxy (URL, or `none`); without it HTTPS_PROXY/NO_PROXY. Every URL of the
    ticket is checked (https:// only, no user info) before any connection."""
    if isinstance(target, str) and "://" in target:
        check_url(target)
    ticket = dict(target) if isinstance(target, dict) else load_ticket(target)
    check_ticket_urls(ticket)
    if bearer_token_file:
        ticket["bearer_token_file"] = bearer_token_file
    logger = log or (lambda _msg: None)

    def safe_log(msg: str) -> None:
        logger(scrub(msg))

    kind = ticket.get("kind")
    backend_class = backend_for(kind)
    if backend_class is None:
        raise UploadError("ticket", f"unknown destination kind {kind!r}")
    size, buffers = backend_class.part_plan(ticket, int(ticket.get("part_size") or part_size or DEFAULT_PART_SIZE),
                                            buffers)
    ca_pem = ticket.get("ca_pem")  # the operator's CA for this destination (on-premises S3-compatible storage)
    if ca_pem is not None and (not isinstance(ca_pem, str) or "-----BEGIN CERTIFICATE-----" not in ca_pem):
        raise UploadError("ticket", "the ticket's ca_pem must be PEM certificate text")
    http = Http(session or make_session(ca_bundle, proxy=proxy, ca_pem=ca_pem), retry or RetryPolicy(), safe_log)
    route = describe_route(http.session)
    try:
        backend = backend_class(http, ticket)
        safe_log(f"upload: {kind} to {backend.destination}, parts of {size} bytes, {route}")
        backend.begin()
    except KeyError as exc:
        raise UploadError("ticket", f"the {kind} ticket lacks {exc}") from None
    return Upload(backend, size, buffers, safe_log)


def verify_remote(target: str | dict[str, Any], *, expected_sha256: str | None = None,
                  ca_bundle: str | None = None, session: requests.Session | None = None,
                  proxy: str | None = None) -> dict[str, Any]:
    """Read the object back (the ticket's read URL, else the URL itself) and hash it."""
    if isinstance(target, str) and "://" in target:
        check_url(target)
    ticket = dict(target) if isinstance(target, dict) else load_ticket(target)
    backend_class = backend_for(ticket.get("kind"))
    url = ticket.get("read_url") or (backend_class.read_url(ticket) if backend_class else None)
    if not url:
        raise UploadError("ticket", "the ticket has no read URL")
    check_url(url, "read-back URL")
    http = Http(session or make_session(ca_bundle, proxy=proxy), RetryPolicy(attempts=3), lambda _m: None)
    headers = backend_class.read_headers() if backend_class else {}
    token_file = ticket.get("bearer_token_file")
    if token_file and not ticket.get("read_url"):
        headers["Authorization"] = f"Bearer {Path(token_file).read_text().strip()}"
    size, digest = http.read_sha256(url, headers)
    out: dict[str, Any] = {"destination": scrub(str(ticket.get("destination") or "")) or safe_url(url), "bytes": size,
                           "sha256": digest}
    if expected_sha256 is not None:
        out["match"] = digest == expected_sha256.lower()
    return out
