"""Google Cloud Storage: a V4 signed POST opens a resumable session (x-goog-resumable: start), then
256 KiB-aligned chunks, resumed from the offset the service says it holds."""

from __future__ import annotations

import re
from typing import Any

from agent.ship.backends.base import Backend
from agent.ship.http import Http, Transient, UploadError
from agent.ship.limits import GCS_QUANTUM


class GcsResumable(Backend):
    """A resumable session opened by the signed start URL; chunks go to the session URL it answers with."""

    kind = "gcs-resumable"
    quantum = GCS_QUANTUM

    def __init__(self, http: Http, ticket: dict[str, Any]):
        super().__init__(http, ticket)
        self.session_url: str | None = None

    def _main_url(self) -> str:
        return self.ticket["start_url"]

    def begin(self) -> None:
        headers = {"x-goog-resumable": "start", **self._headers("start")}
        resp = self.http.call("POST", self.ticket["start_url"], what="start resumable upload", data=b"",
                              headers=headers, ok=(200, 201))
        self.session_url = resp.headers.get("Location")
        if not self.session_url:
            raise UploadError("rejected", "start resumable upload: no session URI in the answer")

    def _persisted(self, total: int | None) -> int:
        """Bytes the service holds (ask with an empty PUT: `Content-Range: bytes */TOTAL`)."""
        resp = self.http.send("PUT", self.session_url or "", what="query upload offset", data=b"",
                              headers={"Content-Range": f"bytes */{total if total is not None else '*'}"},
                              ok=(200, 201, 308))
        if resp.status_code in (200, 201):
            return -1                   # finalized
        return _range_end(resp.headers.get("Range"))

    def put_part(self, number: int, offset: int, data: memoryview, final: bool, md5: bytes | None = None) -> None:
        if not final and len(data) % GCS_QUANTUM:
            raise UploadError("ticket", f"chunk of {len(data)} bytes is not a multiple of 256 KiB")
        total = offset + len(data) if final else None
        end = offset + len(data)
        state = {"at": offset}

        def attempt(n: int) -> None:
            if n > 0:
                have = self._persisted(total)
                if have < 0:
                    state["at"] = end
                    return
                if have < offset:
                    raise UploadError("integrity", f"the service holds {have} bytes, less than the {offset} "
                                      "already acknowledged; cannot resume")
                state["at"] = min(have, end)
            at = state["at"]
            if at == end and not final:
                return
            size = f"{total}" if final else "*"
            crange = f"bytes {at}-{end - 1}/{size}" if end > at else f"bytes */{size}"
            resp = self.http.send("PUT", self.session_url or "", what=f"chunk {number}", data=data[at - offset:],
                                  headers={"Content-Range": crange}, ok=(200, 201, 308))
            if resp.status_code == 308:
                have = _range_end(resp.headers.get("Range"))
                if have < end:          # the service kept only part of it: send the rest
                    state["at"] = max(have, offset)
                    raise Transient(f"chunk {number}: the service kept {have - at} of {end - at} bytes")
                if final:
                    raise Transient(f"chunk {number}: last chunk not finalized by the service")
            state["at"] = end

        self.http.retrying(f"chunk {number}", attempt)
        self.stored = end
        self.parts += 1

    def finish(self, total: int) -> None:
        if self.parts == 0:
            self.put_part(1, 0, memoryview(b""), True)

    def cancel(self) -> str:
        if not self.session_url:
            return "no upload session was opened"
        try:
            self.http.send("DELETE", self.session_url, what="cancel upload session", ok=(200, 204, 499))
            return "upload session cancelled: the service dropped the received bytes"
        except (UploadError, Transient) as exc:
            return f"cancelling the upload session failed ({exc}); it expires on the service after a week"


def _range_end(header: str | None) -> int:
    """`Range: bytes=0-N` -> N + 1 bytes held; no header: nothing held."""
    if not header:
        return 0
    m = re.search(r"(\d+)-(\d+)", header)
    return int(m.group(2)) + 1 if m else 0
