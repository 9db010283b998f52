"""Amazon S3 (and S3-compatible storage): one presigned PUT, or presigned multipart parts, Complete and Abort.

A presigned S3 URL gets only the optional headers it signed (SigV4: X-Amz-SignedHeaders; SigV2:
Content-MD5, Content-Type and x-amz-* only where the ticket's signed_headers names them)."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.ship.backends.base import Backend, md5_digest
from agent.ship.http import Http, Transient, UploadError, error_code
from agent.ship.limits import S3_MAX_PARTS, S3_MIN_PART


class S3Put(Backend):
    """One presigned PUT: S3 needs the length first, so the stream is held in the one part buffer."""

    kind = "s3-put"
    wants_md5 = True

    @classmethod
    def part_plan(cls, ticket: dict[str, Any], part_size: int, buffers: int) -> tuple[int, int]:
        # One buffer, as large as the ticket allows: the whole object is sent in one PUT.
        return max(part_size, int(ticket.get("max_bytes") or 0)), 1

    @classmethod
    def read_url(cls, ticket: dict[str, Any]) -> str | None:
        return ticket.get("url") or None

    def max_bytes(self, part_size: int) -> int:
        return int(self.ticket.get("max_bytes") or part_size)

    def put_part(self, number: int, offset: int, data: memoryview, final: bool, md5: bytes | None = None) -> None:
        if not final:
            raise UploadError("too_large", "the stream outgrew one buffer, the most a single presigned PUT "
                              "carries here; issue a multipart ticket (triagent ticket s3 --size-hint ...)")
        _s3_put(self, self.ticket["url"], data, self._headers("put"), "PUT object", md5, self._signed("put"))
        self.stored, self.parts = len(data), 1

    def finish(self, total: int) -> None:
        if self.parts == 0:             # empty stream: nothing was handed over, put zero bytes
            self.put_part(1, 0, memoryview(b""), True)


def s3_signature(url: str) -> tuple[str | None, set[str]]:
    """("v4", X-Amz-SignedHeaders) or ("v2", set()) for a presigned S3 URL in query form, else (None, set())."""
    try:
        query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}
    except ValueError:
        return None, set()
    if "x-amz-signedheaders" in query or query.get("x-amz-algorithm", "").upper() == "AWS4-HMAC-SHA256":
        return "v4", {h.strip().lower() for h in query.get("x-amz-signedheaders", "host").split(";") if h.strip()}
    if "awsaccesskeyid" in query and "signature" in query:
        return "v2", set()
    return None, set()


# What SigV2's string to sign covers besides the method, the expiry and the resource.
def _v2_covered(name: str) -> bool:
    return name in ("content-md5", "content-type") or name.startswith("x-amz-")


def s3_headers(url: str, headers: Mapping[str, str], declared: Iterable[str] = ()) -> dict[str, str]:
    """The headers a presigned S3 URL may carry: SigV4, only those named in X-Amz-SignedHeaders (S3
    refuses an unsigned x-amz-* and the signature covers what it lists); SigV2, whose string to sign
    includes Content-MD5, Content-Type and every x-amz-* header, those only where the ticket declares them
    signed (`declared`), other headers as given. Not a presigned S3 URL: all of them."""
    form, signed = s3_signature(url)
    if form == "v4":
        return {k: v for k, v in headers.items() if k.lower() in signed}
    if form == "v2":
        ok = {d.lower() for d in declared}
        return {k: v for k, v in headers.items() if not _v2_covered(k.lower()) or k.lower() in ok}
    return dict(headers)


def _s3_put(backend: Backend, url: str, data: memoryview, headers: dict[str, str], what: str,
            md5: bytes | None = None, declared: Iterable[str] = ()) -> None:
    digest = md5 or md5_digest(data)
    # Content-MD5 goes only where the URL signed it (a SigV2 URL that did not breaks with it, a SigV4 one
    # lists what it signed); the ETag (MD5 of the body for non-KMS objects) is checked here in any case.
    hdrs = s3_headers(url, {**headers, "Content-MD5": base64.b64encode(digest).decode()}, declared)

    def attempt(_n: int) -> None:
        resp = backend.http.send("PUT", url, what=what, data=data, headers=hdrs)
        etag = resp.headers.get("ETag", "")
        if re.fullmatch(r'"?[0-9a-fA-F]{32}"?', etag) and etag.strip('"').lower() != digest.hex():
            raise Transient(f"{what}: ETag {etag} is not the MD5 of what was sent")
        backend.etags.append(etag)

    backend.http.retrying(what, attempt)


class S3Multipart(Backend):
    """Presigned UploadPart URLs (one per part number), a presigned Complete and an optional Abort."""

    kind = "s3-multipart"
    max_parts = S3_MAX_PARTS
    wants_md5 = True

    @classmethod
    def part_plan(cls, ticket: dict[str, Any], part_size: int, buffers: int) -> tuple[int, int]:
        if part_size < S3_MIN_PART:
            raise UploadError("ticket", f"part size {part_size} is below S3's 5 MiB minimum")
        return part_size, buffers

    def __init__(self, http: Http, ticket: dict[str, Any]):
        super().__init__(http, ticket)
        self.urls: list[str] = list(ticket["part_urls"])
        self.part_etags: dict[int, str] = {}

    def _main_url(self) -> str:
        return self.ticket["complete_url"]

    def put_part(self, number: int, offset: int, data: memoryview, final: bool, md5: bytes | None = None) -> None:
        if number > len(self.urls):
            raise UploadError("too_large", f"the ticket has {len(self.urls)} part URLs and the stream needs more "
                              f"(over {offset} bytes); issue a ticket with a larger --size-hint")
        if not final and len(data) < S3_MIN_PART:
            raise UploadError("ticket", f"part size {len(data)} is below S3's 5 MiB minimum")
        before = len(self.etags)
        _s3_put(self, self.urls[number - 1], data, self._headers("part"), f"part {number}", md5,
                self._signed("part"))
        self.part_etags[number] = self.etags[before]
        self.stored += len(data)
        self.parts += 1

    def finish(self, total: int) -> None:
        if not self.part_etags:
            self.put_part(1, 0, memoryview(b""), True)
        body = ['<?xml version="1.0" encoding="UTF-8"?>'
                '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">']
        for n in sorted(self.part_etags):
            body.append(f"<Part><PartNumber>{n}</PartNumber><ETag>{_xml_escape(self.part_etags[n])}</ETag></Part>")
        body.append("</CompleteMultipartUpload>")
        payload = "".join(body).encode()
        headers = s3_headers(self.ticket["complete_url"],
                             {**self._headers("complete"), "Content-Type": "application/xml"}, self._signed("complete"))

        def attempt(n: int) -> None:
            try:
                resp = self.http.send("POST", self.ticket["complete_url"], what="complete multipart upload",
                                      data=payload, headers=headers, ok=(200,))
            except UploadError as exc:
                # A retried Complete whose first try went through finds the upload gone.
                if n > 0 and exc.code == "NoSuchUpload" and self._object_has(total):
                    return
                raise
            # S3 may answer 200 and put the error in the body (the request ran long).
            code, msg = error_code(resp) if b"<Error>" in resp.content[:512] else (None, "")
            if code:
                raise Transient(f"complete multipart upload: {code}: {msg}")

        self.http.retrying("complete multipart upload", attempt)

    def _object_has(self, total: int) -> bool:
        url = self.ticket.get("read_url")
        if not url:
            return False
        try:
            resp = self.http.send("HEAD", url, what="check completed object", ok=(200,))
        except (UploadError, Transient):
            return False
        return resp.headers.get("Content-Length") == str(total)

    def cancel(self) -> str:
        url = self.ticket.get("abort_url")
        if not url:
            return "multipart upload left open (no abort URL in the ticket): parts stay until a lifecycle rule"
        try:
            self.http.call("DELETE", url, what="abort multipart upload", ok=(200, 204))
            return "multipart upload aborted: the service dropped the uploaded parts"
        except UploadError as exc:
            return f"abort multipart upload failed ({exc}); parts stay until a lifecycle rule removes them"


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
