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

Presigned URLs are credentials: nothing here logs or raises a URL with its query string or user info,
and exceptions from requests are never chained (their text carries the full URL).

The host is hostile (we run as root on a machine an attacker owns), so only what the operator gave on
the command line is trusted, never the host's environment or home:
  - TLS: certifi's roots plus --ca-bundle, nothing else (SSL_CERT_FILE, SSL_CERT_DIR, REQUESTS_CA_BUNDLE
    and CURL_CA_BUNDLE are ignored); verification cannot be turned off.
  - no ~/.netrc, no credentials in a URL (refused), only https:// URLs (refused before any connection).
  - proxy: --proxy URL (wins), else HTTPS_PROXY / NO_PROXY read here explicitly (HTTP_PROXY, ALL_PROXY
    ignored); the TLS tunnel through it is verified end to end with the same context.
  - a presigned S3 URL gets only the optional headers it signed (SigV4: X-Amz-SignedHeaders; SigV2:
    Content-MD5, Content-Type and x-amz-* only where the ticket's signed_headers names them).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import queue
import random
import re
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from agent.ship.limits import (  # noqa: F401  (re-exported: tests and tools use them from here)
    AZURE_MAX_BLOCKS,
    DEFAULT_PART_SIZE,
    GCS_QUANTUM,
    S3_MAX_PARTS,
    S3_MIN_PART,
    TICKET_FORMAT,
    MiB,
)

AZURE_VERSION = "2023-11-03"
KINDS = ("s3-put", "s3-multipart", "azure-blob", "gcs-resumable", "https-put")

# Query parameters that are (parts of) credentials, for text that is not a parseable URL.
_SECRET_PARAMS = re.compile(
    r"(?i)\b(x-amz-[a-z-]+|x-goog-[a-z-]+|sig|signature|awsaccesskeyid|expires|se|sp|sv|st|spr|srt|ss|skoid|"
    r"sktid|skt|ske|sks|skv|upload_?id|uploadid|partnumber|token|access_token|code)=[^&\s'\"<>]*")
_QUERY = re.compile(r"\?[^\s'\"<>)\]]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s'\"<>@]+@")


def safe_url(url: str) -> str:
    """scheme://host[:port]/path: no user info, no query, no fragment (presigned URLs are secrets)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "<unparseable URL>"


def scrub(text: str) -> str:
    """Remove query strings, URL user info, signature-like parameters and bearer tokens from any text."""
    text = _USERINFO.sub(r"\1<userinfo removed>@", text)
    text = _QUERY.sub("?<query removed>", text)
    text = _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}=<removed>", text)
    return _BEARER.sub(r"\1<removed>", text)


class UploadError(Exception):
    """A failed upload. `kind`: forbidden, expired, not_found, conflict, rejected, too_large, network,
    server, integrity, ticket, aborted, tls, insecure (a URL or proxy refused before any connection). The
    message is scrubbed and says what was not uploaded."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, code: str | None = None):
        self.kind = kind
        self.status = status
        self.code = code
        super().__init__(scrub(message))


@dataclass
class RetryPolicy:
    attempts: int = 8               # per request (or per part), first try included
    base_delay: float = 0.5         # seconds; doubled each retry, full jitter
    max_delay: float = 30.0
    connect_timeout: float = 15.0
    read_timeout: float = 120.0     # no byte from the server for this long: the try failed

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        d = random.uniform(0, min(self.max_delay, self.base_delay * (2 ** attempt)))
        if retry_after is not None:
            d = max(d, min(retry_after, self.max_delay))
        return d


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


class _Transient(Exception):
    """A failure worth another try (connection reset, timeout, 5xx, 429, bad digest in transit)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(scrub(message))
        self.retry_after = retry_after


def check_url(url: str, what: str = "upload URL") -> None:
    """Refuse, before any connection, a URL that is not https:// or that carries user info."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UploadError("insecure", f"the {what} is not a valid URL") from None
    if parts.scheme.lower() != "https":
        raise UploadError("insecure", f"refusing the {what} {safe_url(url)}: only https:// is accepted; plain "
                          f"{parts.scheme or 'http'} would send the signature in clear to anyone on the path")
    if "@" in parts.netloc:
        raise UploadError("insecure", f"refusing the {what} {safe_url(url)}: it carries user:password@ "
                          "credentials, which would be sent as Basic auth (breaking a presigned URL) and "
                          "recorded; give the URL without them")
    if not parts.hostname:
        raise UploadError("insecure", f"the {what} names no host")


_TICKET_URL_KEYS = ("url", "blob_url", "container_url", "start_url", "complete_url", "abort_url", "read_url")


def check_ticket_urls(ticket: dict[str, Any]) -> None:
    """Every URL of a ticket: https:// only, no user info (checked before anything is sent)."""
    for key in _TICKET_URL_KEYS:
        if ticket.get(key):
            check_url(str(ticket[key]), f"ticket's {key}")
    for n, url in enumerate(ticket.get("part_urls") or [], 1):
        check_url(str(url), f"ticket's part URL {n}")


@dataclass(frozen=True)
class ProxyConfig:
    """Where https:// requests go: straight, or through one proxy (a CONNECT tunnel, TLS verified end to
    end with our own context). From --proxy, else HTTPS_PROXY/https_proxy and NO_PROXY/no_proxy only."""

    url: str | None = None          # scheme://host[:port], no user info
    no_proxy: tuple[str, ...] = ()
    source: str = "none"

    def for_url(self, url: str) -> dict[str, str]:
        if not self.url or urlsplit(url).scheme.lower() != "https" or self.bypass(url):
            return {}
        return {"https": self.url}

    def bypass(self, url: str) -> bool:
        """NO_PROXY: `*`, host names (`.example.com` / `*.example.com` / `example.com` match sub-domains),
        IP addresses and CIDR networks, each optionally with `:port`."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        port = str(parts.port or 443)
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            addr = None
        for entry in self.no_proxy:
            if entry == "*":
                return True
            name, want_port = entry, None
            if name.startswith("["):
                name, _, rest = name[1:].partition("]")
                want_port = rest[1:] if rest.startswith(":") else None
            elif name.count(":") == 1:
                name, want_port = name.split(":")
            if want_port and want_port != port:
                continue
            name = name.lstrip("*").lstrip(".").rstrip(".")
            if not name:
                continue
            try:
                net = ipaddress.ip_network(name, strict=False)
            except ValueError:
                net = None
            if net is not None:
                if addr is not None and addr in net:
                    return True
                continue
            if host == name or host.endswith("." + name):
                return True
        return False

    def describe(self) -> str:
        return f"via proxy {self.url} ({self.source})" if self.url else "direct (no proxy)"


def _proxy_url(value: str, source: str) -> str:
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise UploadError("insecure", f"the proxy from {source} is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UploadError("insecure", f"the proxy from {source} must be http://HOST:PORT or https://HOST:PORT "
                          f"(got {parts.scheme or '?'}://)")
    if "@" in parts.netloc:
        raise UploadError("insecure", f"refusing the proxy from {source}: it carries user:password@ credentials, "
                          "which would be recorded; proxy authentication is not supported")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def proxy_config(proxy: str | None = None, environ: Mapping[str, str] | None = None) -> ProxyConfig:
    """--proxy (`none` for a direct connection) wins over the environment, NO_PROXY included; else
    https_proxy/HTTPS_PROXY with no_proxy/NO_PROXY. No other variable, no netrc, no proxy credentials."""
    if proxy is not None:
        if proxy.strip().lower() in ("", "none", "direct"):
            return ProxyConfig(source="--proxy none")
        return ProxyConfig(_proxy_url(proxy, "--proxy"), (), "--proxy")
    env = os.environ if environ is None else environ
    for name in ("https_proxy", "HTTPS_PROXY"):
        value = (env.get(name) or "").strip()
        if value:
            no = env.get("no_proxy") or env.get("NO_PROXY") or ""
            entries = tuple(e.strip().lower() for e in no.split(",") if e.strip())
            return ProxyConfig(_proxy_url(value, name), entries, name)
    return ProxyConfig()


class _TLSAdapter(HTTPAdapter):
    """certifi's roots plus the operator's CA, from memory: requests' `verify=` takes one path and
    we write nothing to the suspect's disk. Verification is forced on: whatever `verify` a caller (or
    requests' environment merging) passes, no CA file reaches urllib3, which would add it to our context."""

    def __init__(self, context: ssl.SSLContext, **kw: Any):
        self._context = context
        super().__init__(**kw)

    def init_poolmanager(self, *args: Any, **kw: Any) -> None:
        kw["ssl_context"] = self._context
        super().init_poolmanager(*args, **kw)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # ssl_context: the destination's TLS inside the CONNECT tunnel; proxy_ssl_context: an https:// proxy.
        proxy_kwargs["ssl_context"] = self._context
        proxy_kwargs["proxy_ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> Any:
        return super().send(request, stream=stream, timeout=timeout, verify=True, cert=None, proxies=proxies)


class _Session(requests.Session):
    """A session that reads nothing from the environment (trust_env off: no netrc, no REQUESTS_CA_BUNDLE,
    no *_PROXY) and takes its proxy from a ProxyConfig, per URL."""

    def __init__(self, proxy: ProxyConfig):
        super().__init__()
        self.trust_env = False
        self.proxy = proxy

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any) -> requests.Response:
        kw["verify"] = True
        kw["cert"] = None
        kw["proxies"] = self.proxy.for_url(url if isinstance(url, str) else url.decode())
        return super().request(method, url, *args, **kw)


def tls_context(ca_bundle: str | None = None, ca_pem: str | None = None) -> ssl.SSLContext:
    """certifi's roots and the operator's CA only (``--ca-bundle``, or the ticket's ``ca_pem``): built
    by hand, because ssl.create_default_context / load_default_certs / set_default_verify_paths read
    SSL_CERT_FILE and SSL_CERT_DIR."""
    import certifi

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)     # CERT_REQUIRED and check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=certifi.where())
    if ca_bundle:
        ctx.load_verify_locations(cafile=ca_bundle)
    if ca_pem:
        try:
            ctx.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise UploadError("ticket", f"the ticket's ca_pem is not a PEM certificate: {exc}") from None
    return ctx


def make_session(ca_bundle: str | None = None, pool: int = 4,
                 proxy: str | ProxyConfig | None = None, ca_pem: str | None = None) -> requests.Session:
    """TLS verification is always on; nothing comes from the environment but HTTPS_PROXY/NO_PROXY
    (read explicitly; `proxy`, the operator's --proxy, wins)."""
    config = proxy if isinstance(proxy, ProxyConfig) else proxy_config(proxy)
    s = _Session(config)
    adapter = _TLSAdapter(tls_context(ca_bundle, ca_pem), pool_connections=pool, pool_maxsize=pool,
                          max_retries=0)
    s.mount("https://", adapter)
    s.mount("http://", HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0))
    s.headers["User-Agent"] = "triagent-upload"
    return s


def url_expiry(url: str) -> datetime | None:
    """When a presigned/SAS/signed URL stops working, read from its own query (None: unknown)."""
    try:
        q = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        for date_key, exp_key in (("x-amz-date", "x-amz-expires"), ("x-goog-date", "x-goog-expires")):
            if date_key in q and exp_key in q:
                start = datetime.strptime(q[date_key], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                return start + timedelta(seconds=int(q[exp_key]))
        if "se" in q and "sig" in q:
            return datetime.fromisoformat(q["se"].replace("Z", "+00:00"))
        if "expires" in q and "signature" in q:
            return datetime.fromtimestamp(int(q["expires"]), UTC)
    except (ValueError, OverflowError):
        return None
    return None


def _error_code(resp: requests.Response) -> tuple[str | None, str]:
    """The service's error code and a short scrubbed message (S3/Azure XML, GCS JSON)."""
    text = resp.text[:4096] if resp.content else ""
    code = msg = None
    if text.lstrip().startswith("<"):
        try:
            root = ET.fromstring(text.lstrip().encode())
            for el in root.iter():
                tag = el.tag.rsplit("}", 1)[-1]
                if tag == "Code" and code is None:
                    code = (el.text or "").strip()
                elif tag == "Message" and msg is None:
                    msg = (el.text or "").strip().splitlines()[0] if el.text else ""
        except ET.ParseError:
            pass
    elif text.lstrip().startswith("{"):
        try:
            err = json.loads(text).get("error", {})
            if isinstance(err, dict):
                code, msg = str(err.get("code") or err.get("status") or ""), str(err.get("message") or "")
        except (ValueError, AttributeError):
            pass
    code = code or resp.headers.get("x-ms-error-code")
    return code, scrub((msg or resp.reason or "")[:200])


class _Http:
    """One requests session, the retry loop and the error classification shared by the backends."""

    def __init__(self, session: requests.Session, policy: RetryPolicy, log: Callable[[str], None]):
        self.session = session
        self.policy = policy
        self.log = log
        self.retries = 0

    def send(self, method: str, url: str, *, what: str, data: Any = None,
             headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201)) -> requests.Response:
        """One try. Transient failures raise _Transient, final ones UploadError."""
        check_url(url, f"URL for {what}")       # also a session URL a service handed back (GCS Location)
        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        try:
            resp = self.session.request(method, url, data=data, headers=headers, timeout=timeout,
                                        allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            if _verify_failure(exc):
                raise UploadError("tls", f"{what}: TLS verification failed for {safe_url(url)}: "
                                  f"{_short(exc)}") from None
            # A TLS connection cut mid-way (EOF, reset by a middlebox) is worth another try.
            raise _Transient(f"{what}: {type(exc).__name__}: {_short(exc)}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise _Transient(f"{what}: {type(exc).__name__}: {_short(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise UploadError("network", f"{what}: {type(exc).__name__}: {_short(exc)}") from None
        if resp.status_code in ok:
            return resp
        code, msg = _error_code(resp)
        status = resp.status_code
        detail = f"{what}: HTTP {status}{' ' + code if code else ''}{': ' + msg if msg else ''} from {safe_url(url)}"
        if status in (408, 429) or status >= 500 or code in ("BadDigest", "Md5Mismatch", "RequestTimeout") \
                or (status == 400 and "md5" in msg.lower()):
            retry_after = resp.headers.get("Retry-After")
            raise _Transient(detail, float(retry_after) if retry_after and retry_after.isdigit() else None)
        if status in (401, 403):
            expiry = url_expiry(url)
            expired = "expire" in (msg + (code or "")).lower() or (
                expiry is not None and expiry <= datetime.now(UTC) + timedelta(seconds=1))
            if expired:
                when = f" (valid until {expiry:%Y-%m-%dT%H:%M:%SZ})" if expiry else ""
                raise UploadError("expired", f"{detail}: the presigned URL has expired{when}; ask the responder "
                                  "for a fresh ticket", status=status, code=code)
            raise UploadError("forbidden", f"{detail}: access refused (signature, permission or clock)",
                              status=status, code=code)
        kind = {404: "not_found", 409: "conflict", 412: "conflict", 413: "too_large"}.get(status, "rejected")
        raise UploadError(kind, detail, status=status, code=code)

    def retrying(self, what: str, attempt: Callable[[int], Any]) -> Any:
        last = ""
        for n in range(self.policy.attempts):
            try:
                return attempt(n)
            except _Transient as exc:
                last = str(exc)
                if n + 1 >= self.policy.attempts:
                    break
                self.retries += 1
                delay = self.policy.delay(n, exc.retry_after)
                self.log(f"upload: {last}; retry {n + 1}/{self.policy.attempts - 1} in {delay:.1f}s")
                time.sleep(delay)
        kind = "server" if "HTTP 5" in last or "HTTP 429" in last else "network"
        raise UploadError(kind, f"{what}: gave up after {self.policy.attempts} tries; last: {last}")

    def call(self, method: str, url: str, *, what: str, **kw: Any) -> requests.Response:
        return self.retrying(what, lambda _n: self.send(method, url, what=what, **kw))


def _verify_failure(exc: BaseException) -> bool:
    """The peer's certificate was refused (unknown CA, wrong host, expired), as opposed to a TLS
    connection that broke: requests wraps urllib3's MaxRetryError, whose reason wraps the ssl error."""
    todo: list[Any] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text.lower() \
        or "hostname mismatch" in text.lower()


def _short(exc: BaseException) -> str:
    return scrub(str(exc))[:300]


def _md5(data: memoryview) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


# ---------------------------------------------------------------------------------------------- backends

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


class _S3Put(_Backend):
    """One presigned PUT: S3 needs the length first, so the stream is held in the one part buffer."""

    kind = "s3-put"
    wants_md5 = True

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


def _s3_put(backend: _Backend, url: str, data: memoryview, headers: dict[str, str], what: str,
            md5: bytes | None = None, declared: Iterable[str] = ()) -> None:
    digest = md5 or _md5(data)
    # Content-MD5 goes only where the URL signed it (a SigV2 URL that did not breaks with it, a SigV4 one
    # lists what it signed); the ETag (MD5 of the body for non-KMS objects) is checked here in any case.
    hdrs = s3_headers(url, {**headers, "Content-MD5": base64.b64encode(digest).decode()}, declared)

    def attempt(_n: int) -> None:
        resp = backend.http.send("PUT", url, what=what, data=data, headers=hdrs)
        etag = resp.headers.get("ETag", "")
        if re.fullmatch(r'"?[0-9a-fA-F]{32}"?', etag) and etag.strip('"').lower() != digest.hex():
            raise _Transient(f"{what}: ETag {etag} is not the MD5 of what was sent")
        backend.etags.append(etag)

    backend.http.retrying(what, attempt)


class _S3Multipart(_Backend):
    kind = "s3-multipart"
    max_parts = S3_MAX_PARTS
    wants_md5 = True

    def __init__(self, http: _Http, ticket: dict[str, Any]):
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
            code, msg = _error_code(resp) if b"<Error>" in resp.content[:512] else (None, "")
            if code:
                raise _Transient(f"complete multipart upload: {code}: {msg}")

        self.http.retrying("complete multipart upload", attempt)

    def _object_has(self, total: int) -> bool:
        url = self.ticket.get("read_url")
        if not url:
            return False
        try:
            resp = self.http.send("HEAD", url, what="check completed object", ok=(200,))
        except (UploadError, _Transient):
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


class _AzureBlob(_Backend):
    """Block ids carry the part number and the block's MD5, so a block the service already holds
    (Get Block List, uncommitted) is known to be this very content and is not sent again."""

    kind = "azure-blob"
    max_parts = AZURE_MAX_BLOCKS
    wants_md5 = True

    def __init__(self, http: _Http, ticket: dict[str, Any]):
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
        except _Transient:
            return None
        root = ET.fromstring(resp.content)
        tag = "UncommittedBlocks" if which == "uncommitted" else "CommittedBlocks"
        return {el.text or "" for sect in root.iter(tag) for el in sect.iter("Name")}

    def begin(self) -> None:
        self.have = self._block_list("uncommitted") or set()
        if self.have:
            self.http.log(f"upload: the service already holds {len(self.have)} uncommitted blocks")

    def put_part(self, number: int, offset: int, data: memoryview, final: bool, md5: bytes | None = None) -> None:
        digest = md5 or _md5(data)
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


class _GcsResumable(_Backend):
    kind = "gcs-resumable"
    quantum = GCS_QUANTUM

    def __init__(self, http: _Http, ticket: dict[str, Any]):
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
                    raise _Transient(f"chunk {number}: the service kept {have - at} of {end - at} bytes")
                if final:
                    raise _Transient(f"chunk {number}: last chunk not finalized by the service")
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
        except (UploadError, _Transient) as exc:
            return f"cancelling the upload session failed ({exc}); it expires on the service after a week"


def _range_end(header: str | None) -> int:
    """`Range: bytes=0-N` -> N + 1 bytes held; no header: nothing held."""
    if not header:
        return 0
    m = re.search(r"(\d+)-(\d+)", header)
    return int(m.group(2)) + 1 if m else 0


class _HttpsPut(_Backend):
    """One streamed PUT (chunked encoding). A connection lost mid-body cannot be resumed (the bytes
    are gone from memory): it is retried only while no byte of the body has been sent."""

    kind = "https-put"

    def __init__(self, http: _Http, ticket: dict[str, Any]):
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


_BACKENDS: dict[str, type[_Backend]] = {"s3-put": _S3Put, "s3-multipart": _S3Multipart, "azure-blob": _AzureBlob,
                                        "gcs-resumable": _GcsResumable, "https-put": _HttpsPut}


# ---------------------------------------------------------------------------------------------- the stream

class Upload:
    """File-like sink: write() the bundle's bytes, then close() (or abort())."""

    def __init__(self, backend: _Backend, part_size: int, buffers: int, log: Callable[[str], None]):
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
            except UploadError as exc:
                self.error = exc
            except Exception as exc:  # noqa: BLE001 - any failure must reach the writer, scrubbed
                self.error = UploadError("network", f"{type(exc).__name__}: {_short(exc)}")
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
            self.abort(f"{exc_type.__name__}: {_short(exc)}" if exc else "interrupted")


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
    if kind not in _BACKENDS:
        raise UploadError("ticket", f"unknown destination kind {kind!r}")
    size = int(ticket.get("part_size") or part_size or DEFAULT_PART_SIZE)
    if kind == "s3-put":
        size, buffers = max(size, int(ticket.get("max_bytes") or 0)), 1
    if kind == "s3-multipart" and size < S3_MIN_PART:
        raise UploadError("ticket", f"part size {size} is below S3's 5 MiB minimum")
    ca_pem = ticket.get("ca_pem")  # the operator's CA for this destination (on-premises S3-compatible storage)
    if ca_pem is not None and (not isinstance(ca_pem, str) or "-----BEGIN CERTIFICATE-----" not in ca_pem):
        raise UploadError("ticket", "the ticket's ca_pem must be PEM certificate text")
    http = _Http(session or make_session(ca_bundle, proxy=proxy, ca_pem=ca_pem), retry or RetryPolicy(), safe_log)
    route = http.session.proxy.describe() if isinstance(http.session, _Session) else "caller's session"
    try:
        backend = _BACKENDS[kind](http, ticket)
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
    url = ticket.get("read_url")
    if not url:
        if ticket.get("kind") == "azure-blob":
            url = _azure_blob_url(ticket)
        elif ticket.get("kind") in ("https-put", "s3-put") and ticket.get("url"):
            url = ticket["url"]
        else:
            raise UploadError("ticket", "the ticket has no read URL")
    check_url(url, "read-back URL")
    http = _Http(session or make_session(ca_bundle, proxy=proxy), RetryPolicy(attempts=3), lambda _m: None)
    headers = {"x-ms-version": AZURE_VERSION} if ticket.get("kind") == "azure-blob" else {}
    token_file = ticket.get("bearer_token_file")
    if token_file and not ticket.get("read_url"):
        headers["Authorization"] = f"Bearer {Path(token_file).read_text().strip()}"

    def attempt(_n: int) -> tuple[int, str]:
        sha = hashlib.sha256()
        size = 0
        try:
            with http.session.get(url, headers=headers, stream=True, allow_redirects=False,
                                  timeout=(http.policy.connect_timeout, http.policy.read_timeout)) as resp:
                if resp.status_code != 200:
                    code, msg = _error_code(resp)
                    kind = "not_found" if resp.status_code == 404 else "forbidden" \
                        if resp.status_code in (401, 403) else "rejected"
                    raise UploadError(kind, f"read back: HTTP {resp.status_code} {code or ''} {msg} "
                                      f"from {safe_url(url)}", status=resp.status_code, code=code)
                for chunk in resp.iter_content(MiB):
                    sha.update(chunk)
                    size += len(chunk)
        except requests.exceptions.SSLError as exc:
            if not _verify_failure(exc):
                raise _Transient(f"read back: {type(exc).__name__}: {_short(exc)}") from None
            raise UploadError("tls", f"read back: TLS verification failed for {safe_url(url)}: {_short(exc)}") \
                from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise _Transient(f"read back: {type(exc).__name__}: {_short(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise UploadError("network", f"read back: {type(exc).__name__}: {_short(exc)}") from None
        return size, sha.hexdigest()

    size, digest = http.retrying("read back", attempt)
    out: dict[str, Any] = {"destination": scrub(str(ticket.get("destination") or "")) or safe_url(url), "bytes": size,
                           "sha256": digest}
    if expected_sha256 is not None:
        out["match"] = digest == expected_sha256.lower()
    return out


def upload_file(path: str | os.PathLike[str], target: str | dict[str, Any], **kw: Any) -> UploadResult:
    """Convenience for tests and the ledger: stream a file through open_upload."""
    up = open_upload(target, **kw)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(MiB):
                up.write(chunk)
    except BaseException as exc:
        up.abort(f"{type(exc).__name__}")
        raise
    return up.close()
