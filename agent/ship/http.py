"""HTTP for the uploads: TLS, proxy, retries, URL checks and the scrubbing of credentials from text.

Presigned URLs are credentials: nothing here logs or raises a URL with its query string or user info,
and exceptions from requests are never chained (their text carries the full URL).

The host is hostile (we run as root on a machine an attacker owns), so only what the operator gave on
the command line is trusted, never the host's environment or home:
  - TLS: certifi's roots plus --ca-bundle, nothing else (SSL_CERT_FILE, SSL_CERT_DIR, REQUESTS_CA_BUNDLE
    and CURL_CA_BUNDLE are ignored); verification cannot be turned off.
  - no ~/.netrc, no credentials in a URL (refused), only https:// URLs (refused before any connection).
  - proxy: --proxy URL (wins), else HTTPS_PROXY / NO_PROXY read here explicitly (HTTP_PROXY, ALL_PROXY
    ignored); the TLS tunnel through it is verified end to end with the same context.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import re
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from agent.ship.limits import MiB

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


class Transient(Exception):
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


def describe_route(session: requests.Session) -> str:
    """How a session reaches the services, for the log: direct, or through which proxy (and why)."""
    return session.proxy.describe() if isinstance(session, _Session) else "caller's session"


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


def error_code(resp: requests.Response) -> tuple[str | None, str]:
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


class Http:
    """One requests session, the retry loop and the error classification shared by the backends."""

    def __init__(self, session: requests.Session, policy: RetryPolicy, log: Callable[[str], None]):
        self.session = session
        self.policy = policy
        self.log = log
        self.retries = 0

    def send(self, method: str, url: str, *, what: str, data: Any = None,
             headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200, 201)) -> requests.Response:
        """One try. Transient failures raise Transient, final ones UploadError."""
        check_url(url, f"URL for {what}")       # also a session URL a service handed back (GCS Location)
        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        try:
            resp = self.session.request(method, url, data=data, headers=headers, timeout=timeout,
                                        allow_redirects=False)
        except requests.exceptions.RequestException as exc:
            raise request_failure(what, url, exc) from None
        if resp.status_code in ok:
            return resp
        code, msg = error_code(resp)
        status = resp.status_code
        detail = f"{what}: HTTP {status}{' ' + code if code else ''}{': ' + msg if msg else ''} from {safe_url(url)}"
        if status in (408, 429) or status >= 500 or code in ("BadDigest", "Md5Mismatch", "RequestTimeout") \
                or (status == 400 and "md5" in msg.lower()):
            retry_after = resp.headers.get("Retry-After")
            raise Transient(detail, float(retry_after) if retry_after and retry_after.isdigit() else None)
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
            except Transient as exc:
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

    def read_sha256(self, url: str, headers: dict[str, str], what: str = "read back") -> tuple[int, str]:
        """GET url, streamed: (bytes, SHA-256) of the body. Only a lost connection is tried again; any
        answer but 200 is final (404 not_found, 401/403 forbidden, else rejected)."""

        def attempt(_n: int) -> tuple[int, str]:
            sha = hashlib.sha256()
            size = 0
            try:
                with self.session.get(url, headers=headers, stream=True, allow_redirects=False,
                                      timeout=(self.policy.connect_timeout, self.policy.read_timeout)) as resp:
                    if resp.status_code != 200:
                        code, msg = error_code(resp)
                        kind = "not_found" if resp.status_code == 404 else "forbidden" \
                            if resp.status_code in (401, 403) else "rejected"
                        raise UploadError(kind, f"{what}: HTTP {resp.status_code} {code or ''} {msg} "
                                          f"from {safe_url(url)}", status=resp.status_code, code=code)
                    for chunk in resp.iter_content(MiB):
                        sha.update(chunk)
                        size += len(chunk)
            except requests.exceptions.RequestException as exc:
                raise request_failure(what, url, exc) from None
            return size, sha.hexdigest()

        return self.retrying(what, attempt)


def request_failure(what: str, url: str, exc: requests.exceptions.RequestException) -> Exception:
    """What a failed request from requests becomes: Transient (worth another try) or a final UploadError,
    its text scrubbed (never chained: requests' text carries the full URL)."""
    if isinstance(exc, requests.exceptions.SSLError):
        if verify_failure(exc):
            return UploadError("tls", f"{what}: TLS verification failed for {safe_url(url)}: {short_error(exc)}")
        # A TLS connection cut mid-way (EOF, reset by a middlebox) is worth another try.
        return Transient(f"{what}: {type(exc).__name__}: {short_error(exc)}")
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError)):
        return Transient(f"{what}: {type(exc).__name__}: {short_error(exc)}")
    return UploadError("network", f"{what}: {type(exc).__name__}: {short_error(exc)}")


def verify_failure(exc: BaseException) -> bool:
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


def short_error(exc: BaseException) -> str:
    return scrub(str(exc))[:300]
