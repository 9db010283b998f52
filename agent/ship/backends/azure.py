"""Azure Blob Storage with a blob SAS: Put Block (Content-MD5, equal-length ids), then Put Block List."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from agent.ship.backends.base import Backend, md5_digest
from agent.ship.http import Http, Transient, UploadError
from agent.ship.limits import AZURE_MAX_BLOCKS

AZURE_VERSION = "2023-11-03"


class AzureBlob(Backend):
    """Block ids carry the part number and the block's MD5, so a block the service already holds
    (Get Block List, uncommitted) is known to be this very content and is not sent again."""

    kind = "azure-blob"
    max_parts = AZURE_MAX_BLOCKS
    wants_md5 = True

    @classmethod
    def read_url(cls, ticket: dict[str, Any]) -> str | None:
        return _azure_blob_url(ticket)

    @classmethod
    def read_headers(cls) -> dict[str, str]:
        return {"x-ms-version": AZURE_VERSION}

    def __init__(self, http: Http, ticket: dict[str, Any]):
        super().__init__(http, ticket)
        self.url = _azure_blob_url(ticket)
        self.ids: list[str] = []
        self.have: set[str] = set()
        self.hdrs = {"x-ms-version": AZURE_VERSION}

    def _main_url(self) -> str:
        return self.url

    def _with(self, params: str) -> str:
        sep = "&" if urlsplit(self.url).query else "?"
        return f"{self.url}{sep}{params}"

    def _block_list(self, which: str) -> set[str] | None:
        try:
            resp = self.http.send("GET", self._with(f"comp=blocklist&blocklisttype={which}"),
                                  what="get block list", headers=self.hdrs, ok=(200,))
        except UploadError as exc:
            if exc.kind == "not_found":
                return set()
            self.http.log(f"upload: cannot list blocks ({exc.kind}); resume disabled")
            return None
        except Transient:
            return None
        root = ET.fromstring(resp.content)
        tag = "UncommittedBlocks" if which == "uncommitted" else "CommittedBlocks"
        return {el.text or "" for sect in root.iter(tag) for el in sect.iter("Name")}

    def begin(self) -> None:
        self.have = self._block_list("uncommitted") or set()
        if self.have:
            self.http.log(f"upload: the service already holds {len(self.have)} uncommitted blocks")

    def put_part(self, number: int, offset: int, data: memoryview, final: bool, md5: bytes | None = None) -> None:
        digest = md5 or md5_digest(data)
        block_id = base64.b64encode(f"{number:06d}-{digest.hex()}".encode()).decode()
        self.ids.append(block_id)
        if block_id in self.have:
            self.skipped += 1
        else:
            url = self._with(f"comp=block&blockid={quote(block_id, safe='')}")
            headers = {**self.hdrs, "Content-MD5": base64.b64encode(digest).decode()}

            def attempt(n: int) -> None:
                if n > 0:               # the failed try may have landed: ask before sending again
                    listed = self._block_list("uncommitted")
                    if listed and block_id in listed:
                        self.skipped += 1
                        return
                self.http.send("PUT", url, what=f"block {number}", data=data, headers=headers, ok=(201,))

            self.http.retrying(f"block {number}", attempt)
        self.stored += len(data)
        self.parts += 1

    def finish(self, total: int) -> None:
        xml = ('<?xml version="1.0" encoding="utf-8"?><BlockList>'
               + "".join(f"<Latest>{i}</Latest>" for i in self.ids) + "</BlockList>").encode()
        # If-None-Match: * : an existing blob of that name is never replaced.
        headers = {**self.hdrs, "If-None-Match": "*", "Content-Type": "application/xml"}

        def attempt(n: int) -> None:
            try:
                self.http.send("PUT", self._with("comp=blocklist"), what="put block list", data=xml,
                               headers=headers, ok=(201,))
            except UploadError as exc:
                if n > 0 and exc.kind == "conflict" and self._block_list("committed") == set(self.ids):
                    return              # our earlier try committed it; its answer was lost
                raise

        self.http.retrying("put block list", attempt)

    def cancel(self) -> str:
        return "no block list committed: the uncommitted blocks expire on the service after 7 days"


def _azure_blob_url(ticket: dict[str, Any]) -> str:
    if ticket.get("blob_url"):
        return ticket["blob_url"]
    base = urlsplit(ticket["container_url"])
    path = base.path.rstrip("/") + "/" + quote(ticket["blob"].lstrip("/"))
    return urlunsplit((base.scheme, base.netloc, path, base.query, ""))
