"""Where the bundle's bytes go while they are written: a local file (--output), stdout, and any number of
uploads (--upload), optionally encrypted to the responder first (--encrypt-to, the age format). The
bundle writer sees one file-like sink; the SHA-256 printed in the summary and written beside a local copy
is of the bytes shipped (ciphertext when encrypted), the manifest inside is of the plaintext members.

An upload that fails mid-way is dropped from the fan-out with a clear error (what was and was not
stored); the collection and any local copy go on."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

from agent.engine import progress


def _scrub(text: str) -> str:
    """Error text from an upload (or from requests/urllib3 under it) may carry a URL: no query, no user info."""
    from agent.ship.http import scrub  # lazily: parsing the command line imports no HTTP stack

    return scrub(text)


class _Fan:
    """The shipped bytes: hashed once, then written to the local copy and every live upload."""

    def __init__(self, local: BinaryIO | None, uploads: list[Any], log: Callable[[str], None]):
        self.local, self.uploads, self.log = local, list(uploads), log
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.failed: list[dict[str, Any]] = []

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.bytes += len(view)
        if self.local is not None:
            self.local.write(view)
        for upload in list(self.uploads):
            try:
                upload.write(view)
            except Exception as exc:  # one destination's failure must not end the collection
                self._drop(upload, exc)
        return len(view)

    def _drop(self, upload: Any, exc: BaseException) -> None:
        self.uploads.remove(upload)
        result = getattr(upload, "result", None)
        text = _scrub(str(exc))
        try:
            result = upload.abort(text) or result
        except Exception:  # noqa: BLE001 - the abort is best effort; the error is already recorded
            pass
        entry = result.to_dict() if hasattr(result, "to_dict") else {}
        entry.update(ok=False, error=text[:500], error_kind=getattr(exc, "kind", None))
        entry.pop("etags", None)
        self.failed.append(entry)
        self.log(f"upload failed and was dropped: {text[:300]}")

    def flush(self) -> None:
        if self.local is not None:
            self.local.flush()


class Shipment:
    """The sink handed to BundleWriter: ``write``/``flush``; ``close()`` seals encryption, closes the local
    copy and completes every upload, returning what was shipped where."""

    def __init__(self, local: BinaryIO | None, uploads: list[Any], recipients: list[Any] | None = None,
                 log: Callable[[str], None] | None = None, close_local: bool = True):
        self.log = log or (lambda line: print(f"triagent: {line}", file=sys.stderr, flush=True))
        self.fan = _Fan(local, uploads, self.log)
        if uploads:  # its size is known only at the end: bytes sent and the rate, no ETA
            progress.start("upload", None, "B")
        self.close_local = close_local
        self.encrypted = bool(recipients)
        self.plain_sha256 = hashlib.sha256() if recipients else None
        self._age = None
        if recipients:
            from agent.bundle.age import AgeWriter

            self._age = AgeWriter(self.fan, recipients)  # type: ignore[arg-type]

    def write(self, data: Any) -> int:
        if self._age is not None:
            self.plain_sha256.update(data)  # type: ignore[union-attr]
            return self._age.write(data)
        return self.fan.write(data)

    def input_sha256(self) -> str:
        """SHA-256 of every byte given to ``write`` so far: the bundle writer takes it as the bundle's
        instead of hashing the same bytes a second time (unencrypted, they are the bytes shipped)."""
        return (self.plain_sha256 if self.plain_sha256 is not None else self.fan.sha256).hexdigest()

    def flush(self) -> None:
        self.fan.flush()

    def close(self, abort_reason: str | None = None) -> dict[str, Any]:
        try:
            return self._close(abort_reason)
        finally:
            if self.fan.uploads or self.fan.failed:
                progress.finish("upload")

    def _close(self, abort_reason: str | None) -> dict[str, Any]:
        if self._age is not None:
            if abort_reason:
                self._age.abort()  # no final chunk: the shipped file reads as truncated, never as complete
            else:
                self._age.close()
        local = self.fan.local
        if local is not None and self.close_local:
            local.close()
        elif local is not None:
            local.flush()
        results = list(self.fan.failed)
        for upload in self.fan.uploads:
            try:
                result = upload.abort(abort_reason) if abort_reason else upload.close()
                entry = result.to_dict()
            except Exception as exc:  # noqa: BLE001 - reported, never raised: the bundle exists locally
                result = getattr(upload, "result", None)
                entry = result.to_dict() if hasattr(result, "to_dict") else {}
                entry.update(ok=False, error=_scrub(str(exc))[:500], error_kind=getattr(exc, "kind", None))
            entry.pop("etags", None)
            for key in ("error", "not_uploaded", "cleanup", "destination"):
                if isinstance(entry.get(key), str):
                    entry[key] = _scrub(entry[key])
            results.append(entry)
        shipped = {"sha256": self.fan.sha256.hexdigest(), "bytes": self.fan.bytes, "uploads": results}
        if self.plain_sha256 is not None:
            shipped.update(encrypted="age", plaintext_sha256=self.plain_sha256.hexdigest())
        return shipped


def open_uploads(targets: list[str], ca_bundle: str | None, bearer_token_file: str | None,
                 log: Callable[[str], None], proxy: str | None = None) -> list[Any]:
    """One upload per --upload target (URL or ticket file); raises UploadError naming the one that failed.
    Trust comes from the command line only: --ca-bundle (plus certifi's roots), --proxy (else HTTPS_PROXY /
    NO_PROXY); every URL must be https:// without user info, checked before any connection."""
    from agent.ship.upload import open_upload

    # One part buffer: on the suspect host memory matters more than overlapping gzip with the network
    # (measured over loopback: 0.94x curl's throughput, peak RSS part size + 33 MB; two buffers: 1.04x, + 50 MB).
    return [open_upload(t, ca_bundle=ca_bundle, bearer_token_file=bearer_token_file, log=log, buffers=1,
                        proxy=proxy)
            for t in targets]
