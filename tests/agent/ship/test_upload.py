"""agent/ship/upload.py against real servers on loopback, with URLs made by agent/responder/ticket.py through the
vendor SDKs: s3rver (SigV4 presigned checks), Azurite (SAS checks, Content-MD5), fake-gcs-server
(behind a shim that enforces GCS's chunk rules), a TLS PUT server, and a fault-injecting proxy."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import time
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
import upload_servers as srv

from agent.responder import ticket as tk
from agent.ship import upload as up
from agent.ship.backends.gcs import GcsResumable
from agent.ship.http import Http

MiB = 1 << 20
SECRET_MARKERS = re.compile(r"(?i)x-amz-signature|x-amz-credential|x-goog-signature|sig=|[?&]se=|upload_id=|"
                            r"uploadId=|s3cret-token")


def stream(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def feed(upload: up.Upload, data: bytes, seed: int = 1) -> None:
    """Writes of uneven sizes, as the bundle writer makes them."""
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.choice((1, 100, 4096, 65536, 1 << 20, 3 * MiB + 7))
        upload.write(memoryview(data)[i:i + n] if n % 2 else data[i:i + n])
        i += n


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert not SECRET_MARKERS.search(text), f"credential-bearing text leaked: {text[:300]}"


def fast(attempts: int = 6, read_timeout: float = 30.0) -> up.RetryPolicy:
    return up.RetryPolicy(attempts=attempts, base_delay=0.05, max_delay=0.5, connect_timeout=5,
                          read_timeout=read_timeout)


def ca_file() -> str:
    """The CA of the loopback servers (in no trust store: the collector trusts only what it is given)."""
    return str(srv.shared_tls().ca_file)


def open_upload(target, **kw) -> up.Upload:
    kw.setdefault("ca_bundle", ca_file())
    return up.open_upload(target, **kw)


def verify_remote(target, **kw) -> dict:
    kw.setdefault("ca_bundle", ca_file())
    return up.verify_remote(target, **kw)


def need_module(name: str) -> None:
    import importlib.util

    srv.need(importlib.util.find_spec(name) is not None, f"{name} is not installed (pip install -e '.[ticket,test]')")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    need_module("boto3")
    with srv.run_s3rver(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    need_module("azure.storage.blob")
    with srv.run_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    need_module("google.cloud.storage")
    with srv.run_fake_gcs(tmp_path_factory.mktemp("gcs")) as server:
        yield server


def s3_ticket(s3, *, client=None, **kw) -> dict:
    key = tk.object_key("case-1", "host-a", "bundle.tar.gz")
    return tk.s3_ticket(client or s3.client(), s3.bucket, key, **kw)


# ---------------------------------------------------------------------------------------------- S3

def test_s3_single_put_round_trip(s3):
    data = stream(3 * MiB + 12345)
    ticket = s3_ticket(s3, size_hint=len(data), part_size=5 * MiB)
    assert ticket["kind"] == "s3-put" and "If-None-Match" in ticket["headers"]["put"]
    logs: list[str] = []
    upload = open_upload(ticket, log=logs.append)
    feed(upload, data)
    result = upload.close()
    assert result.ok and result.committed and result.parts == 1 and result.bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    back = verify_remote(ticket, expected_sha256=result.sha256)
    assert back["match"] and back["bytes"] == len(data)
    assert_no_secrets(*logs, json.dumps(result.to_dict()))


def test_s3_multipart_round_trip_from_ticket_file(s3, tmp_path):
    data = stream(23 * MiB + 5, seed=2)
    ticket = s3_ticket(s3, size_hint=20 * MiB, part_size=5 * MiB, mode="multipart")
    assert ticket["kind"] == "s3-multipart" and len(ticket["part_urls"]) >= 20 * 1.5 / 5
    path = tmp_path / "ticket.json"
    path.write_text(json.dumps(ticket))
    logs: list[str] = []
    upload = open_upload(str(path), log=logs.append)
    feed(upload, data)
    result = upload.close()
    assert result.ok and result.parts == 5 and result.bytes_stored == len(data)
    assert all(re.fullmatch(r'"[0-9a-f]{32}"', e) for e in result.etags)
    assert verify_remote(str(path), expected_sha256=hashlib.sha256(data).hexdigest())["match"]
    assert_no_secrets(*logs)


def test_s3_object_lock_headers_are_signed_and_sent(s3):
    from datetime import UTC, datetime

    until = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    ticket = s3_ticket(s3, size_hint=MiB, retain_until=until, legal_hold=True)
    signed = urlsplit(ticket["url"]).query
    assert "x-amz-object-lock-mode" in signed and "x-amz-object-lock-legal-hold" in signed
    assert ticket["headers"]["put"]["x-amz-object-lock-retain-until-date"] == "2031-01-02T03:04:05Z"
    upload = open_upload(ticket)
    upload.write(b"locked evidence")
    assert upload.close().ok


def test_s3_single_put_refuses_a_stream_larger_than_its_buffer(s3):
    ticket = s3_ticket(s3, size_hint=MiB, mode="single")
    ticket["max_bytes"] = ticket["part_size"] = 6 * MiB
    upload = open_upload(ticket)
    upload.write(stream(6 * MiB))
    with pytest.raises(up.UploadError) as err:
        upload.write(b"one byte too many")
    assert err.value.kind == "too_large" and "multipart" in str(err.value)
    result = upload.abort("too large")
    assert not result.ok and not result.committed and result.bytes_stored == 0


def test_expired_presigned_url_is_a_clear_error(s3):
    ticket = s3_ticket(s3, size_hint=MiB, expires=timedelta(seconds=1))
    time.sleep(2.2)
    logs: list[str] = []
    upload = open_upload(ticket, log=logs.append, retry=fast())
    upload.write(stream(100_000))
    started = time.monotonic()
    with pytest.raises(up.UploadError) as err:
        upload.close()
    assert time.monotonic() - started < 5, "an expired URL must not be retried"
    exc = err.value
    assert exc.kind == "expired" and exc.status == 403
    text = str(exc)
    assert "expired" in text and "no object was committed" in text and "100000 bytes were never stored" in text
    assert upload.result is not None and upload.result.not_uploaded and not upload.result.committed
    assert_no_secrets(text, repr(exc), *logs, json.dumps(upload.result.to_dict()))


def test_expired_multipart_ticket_fails_on_first_part(s3):
    ticket = s3_ticket(s3, size_hint=20 * MiB, part_size=5 * MiB, mode="multipart", expires=timedelta(seconds=1))
    time.sleep(2.2)
    upload = open_upload(ticket, retry=fast())
    with pytest.raises(up.UploadError) as err:
        upload.write(stream(11 * MiB))
        upload.close()
    assert err.value.kind == "expired"
    assert_no_secrets(str(err.value))


def test_refused_credentials_are_forbidden_and_scrubbed(s3):
    # s3rver 3.7 checks a SigV4 URL's access key and expiry but not the signature itself
    # (its code says "Signature version 4 calculation is unimplemented"): refuse by access key.
    client = s3.client(aws_access_key_id="UNKNOWNKEY", aws_secret_access_key="x")
    ticket = s3_ticket(s3, client=client, size_hint=MiB)
    logs: list[str] = []
    upload = open_upload(ticket, log=logs.append, retry=fast())
    upload.write(b"x" * 1000)
    with pytest.raises(up.UploadError) as err:
        upload.close()
    assert err.value.kind == "forbidden" and err.value.code == "InvalidAccessKeyId"
    assert_no_secrets(str(err.value), *logs)


def test_connection_errors_never_show_the_query(tmp_path):
    port = srv.free_port()          # nothing listens there
    url = f"https://127.0.0.1:{port}/bkt/key?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIAXXX"
    logs: list[str] = []
    upload = open_upload(url, log=logs.append, retry=fast(attempts=2))
    upload.write(b"data")
    with pytest.raises(up.UploadError) as err:
        upload.close()
    assert err.value.kind == "network" and err.value.__cause__ is None
    assert "deadbeef" not in str(err.value) and "AKIAXXX" not in str(err.value)
    assert all("deadbeef" not in line for line in logs)
    assert f"https://127.0.0.1:{port}/bkt/key" in str(err.value)


def test_safe_url_and_scrub():
    assert up.safe_url("https://u:p@h.example:8443/b/k%20x?sig=abc#frag") == "https://h.example:8443/b/k%20x"
    text = up.scrub("PUT /b/k?X-Amz-Signature=abc&x=1 failed; sig=def&se=2020 Bearer tok123 uploadId=zz")
    assert not any(s in text for s in ("abc", "def", "tok123", "zz", "2020"))


def test_fault_proxy_multipart_still_lands_intact(s3):
    """10 resets at random offsets, one stall and two 503s during one multipart upload."""
    proxy = srv.FaultProxy(int(s3.endpoint.rsplit(":", 1)[1]), resets=10, stalls=1, errors_503=2,
                           stall_seconds=3.0, seed=7)
    try:
        client = tk.s3_client(f"https://127.0.0.1:{proxy.port}", aws_access_key_id=srv.S3RVER_KEY,
                              aws_secret_access_key=srv.S3RVER_KEY, verify=ca_file())
        data = stream(16 * 5 * MiB + 4321, seed=3)
        ticket = s3_ticket(s3, client=client, size_hint=len(data), part_size=5 * MiB, mode="multipart")
        logs: list[str] = []
        upload = open_upload(ticket, log=logs.append, retry=fast(attempts=4, read_timeout=1.5))
        feed(upload, data)
        result = upload.close()
    finally:
        proxy.close()
    faults = [f for f, _ in proxy.done]
    assert faults.count("reset") == 10 and faults.count("stall") == 1 and faults.count("503") == 2
    assert len({off for f, off in proxy.done if f == "reset"}) > 1, "resets at one offset only"
    assert result.ok and result.parts == 17 and result.retries >= 13
    back = verify_remote(ticket, expected_sha256=hashlib.sha256(data).hexdigest())
    assert back["match"] and back["bytes"] == len(data)
    assert_no_secrets(*logs)


# ---------------------------------------------------------------------------------------------- Azure

def azure_ticket(azure, blob: str, **kw) -> dict:
    return tk.azure_ticket(blob=blob, account_url=azure.account_url, account_key=srv.AZURITE_KEY,
                           container=azure.container, **kw)


def test_azure_blocks_round_trip(azure):
    data = stream(9 * MiB + 77, seed=4)
    ticket = azure_ticket(azure, tk.object_key("case-1", "host-b", "bundle.tar.gz"), part_size=2 * MiB)
    logs: list[str] = []
    upload = open_upload(ticket, log=logs.append)
    feed(upload, data)
    result = upload.close()
    assert result.ok and result.parts == 5 and result.skipped_parts == 0
    assert verify_remote(ticket, expected_sha256=hashlib.sha256(data).hexdigest())["match"]
    assert_no_secrets(*logs, json.dumps(result.to_dict()))


def test_azure_resume_skips_blocks_the_service_has_and_never_overwrites(azure):
    data = stream(7 * MiB, seed=5)
    ticket = azure_ticket(azure, "case-1/incoming/host-c/resume.tar", part_size=MiB)
    first = open_upload(ticket, buffers=1)
    first.write(data[:4 * MiB + 1])          # blocks 1-4 are sent, the 5th waits in the buffer
    aborted = first.abort("simulated crash")
    assert aborted.bytes_stored == 4 * MiB and not aborted.committed
    assert "4194304 of the 4194305 bytes" in aborted.not_uploaded
    second = open_upload(ticket)
    second.write(data)
    result = second.close()
    assert result.ok and result.skipped_parts == 4 and result.parts == 7
    assert verify_remote(ticket, expected_sha256=hashlib.sha256(data).hexdigest())["match"]
    third = open_upload(ticket)          # same blob name again: If-None-Match refuses it
    third.write(b"other content")
    with pytest.raises(up.UploadError) as err:
        third.close()
    assert err.value.kind == "conflict"
    assert verify_remote(ticket, expected_sha256=hashlib.sha256(data).hexdigest())["match"]


def test_azure_sas_without_permission_is_forbidden(azure):
    ticket = azure_ticket(azure, "case-1/incoming/host-d/x.tar")
    ticket["blob_url"] = ticket["blob_url"].replace("sp=rcw", "sp=r")   # signature no longer matches
    upload = open_upload(ticket, retry=fast())
    upload.write(b"x" * 10)
    with pytest.raises(up.UploadError) as err:
        upload.close()
    assert err.value.kind == "forbidden"
    assert_no_secrets(str(err.value))


# ---------------------------------------------------------------------------------------------- GCS

def gcs_ticket(gcs, name: str, **kw) -> dict:
    return tk.gcs_ticket(bucket=gcs.bucket, obj=name, service_account_file=str(gcs.service_account_file),
                         endpoint=gcs.endpoint, **kw)


def _sessions_chunks(gcs) -> list[tuple[str, int]]:
    return [c for s in gcs.shim.sessions.values() for c in s.chunks]


def test_gcs_resumable_round_trip_in_256k_chunks(gcs):
    data = stream(2 * MiB + 333_333, seed=6)
    ticket = gcs_ticket(gcs, "case-1/incoming/host-e/bundle.tar.gz", part_size=700 * 1024)
    assert ticket["part_size"] % srv.GCS_QUANTUM == 0
    assert "x-goog-if-generation-match" in ticket["headers"]["start"]
    before = len(_sessions_chunks(gcs))
    logs: list[str] = []
    upload = open_upload(ticket, log=logs.append)
    feed(upload, data)
    result = upload.close()
    assert result.ok and not gcs.shim.violations
    chunks = _sessions_chunks(gcs)[before:]
    assert all(n % srv.GCS_QUANTUM == 0 for cr, n in chunks if cr.endswith("/*"))
    assert chunks[-1][0].endswith(f"/{len(data)}"), "the last chunk declares the total"
    assert sum(n for _, n in chunks) == len(data)
    assert verify_remote(ticket, expected_sha256=hashlib.sha256(data).hexdigest())["match"]
    assert_no_secrets(*logs)


def test_gcs_lost_answers_resume_from_the_server_offset(gcs):
    data = stream(3 * MiB + 1, seed=8)
    ticket = gcs_ticket(gcs, "case-1/incoming/host-f/bundle.tar.gz", part_size=512 * 1024)
    gcs.shim.drop_answers = 2           # the chunk lands but its answer is lost (connection reset)
    upload = open_upload(ticket, retry=fast())
    feed(upload, data)
    result = upload.close()
    assert result.ok and result.retries >= 2 and not gcs.shim.violations
    assert verify_remote(ticket, expected_sha256=hashlib.sha256(data).hexdigest())["match"]


def test_gcs_chunk_size_rule_enforced_by_client():
    ticket = {"format": up.TICKET_FORMAT, "kind": "gcs-resumable", "start_url": "https://127.0.0.1:9/x"}
    backend = GcsResumable(Http(up.make_session(), fast(), print), ticket)
    with pytest.raises(up.UploadError):
        backend.put_part(1, 0, memoryview(b"x" * 1000), final=False)



def test_read_back_errors_are_classified_and_scrubbed(tmp_path):
    """verify_remote: an object that is not there is not_found, an unknown CA is tls (never retried), a port
    where nothing listens is network after its tries; no error text carries the URL's query."""
    with srv.run_put_server(token=None) as (server, ca):
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        ca_bundle = str(tmp_path / "ca.pem")
        server.objects["/there"] = b"evidence"
        back = up.verify_remote(f"{server.url}/there?sig=s3cret-token", ca_bundle=ca_bundle,
                                expected_sha256=hashlib.sha256(b"evidence").hexdigest())
        assert back["match"] and back["bytes"] == 8
        assert_no_secrets(json.dumps(back))
        with pytest.raises(up.UploadError) as err:
            up.verify_remote(f"{server.url}/missing?sig=s3cret-token", ca_bundle=ca_bundle)
        assert err.value.kind == "not_found" and err.value.status == 404
        assert_no_secrets(str(err.value))
        before = len(server.requests)
        with pytest.raises(up.UploadError) as err:
            up.verify_remote(f"{server.url}/there?sig=s3cret-token")
        assert err.value.kind == "tls" and len(server.requests) == before
        assert_no_secrets(str(err.value))
    port = srv.free_port()
    with pytest.raises(up.UploadError) as err:
        up.verify_remote(f"https://127.0.0.1:{port}/there?sig=s3cret-token", ca_bundle=ca_bundle)
    assert err.value.kind == "network" and "gave up after 3 tries" in str(err.value)
    assert_no_secrets(str(err.value))

# ---------------------------------------------------------------------------------------------- HTTPS PUT

def test_https_put_streams_with_bearer_token_and_custom_ca(tmp_path):
    with srv.run_put_server() as (server, ca):
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        token_file = tmp_path / "token"
        token_file.write_text(server.token + "\n")
        data = stream(5 * MiB + 3, seed=9)
        url = f"{server.url}/incoming/bundle.tar.gz"

        # Unknown CA: refused, whatever else is right.
        upload = up.open_upload(url, bearer_token_file=str(token_file), retry=fast(), part_size=MiB)
        with pytest.raises(up.UploadError) as err:
            upload.write(data[:3 * MiB])
            upload.close()
        assert err.value.kind == "tls"
        assert "/incoming/bundle.tar.gz" not in server.objects

        logs: list[str] = []
        upload = up.open_upload(url, bearer_token_file=str(token_file), ca_bundle=str(ca_file), part_size=MiB,
                                log=logs.append)
        feed(upload, data)
        result = upload.close()
        assert result.ok and result.sha256 == hashlib.sha256(data).hexdigest()
        assert server.objects["/incoming/bundle.tar.gz"] == data
        assert server.chunked["/incoming/bundle.tar.gz"], "the body must be streamed (chunked encoding)"
        back = up.verify_remote({"kind": "https-put", "url": url, "bearer_token_file": str(token_file)},
                                ca_bundle=str(ca_file), expected_sha256=result.sha256)
        assert back["match"]
        assert_no_secrets(*logs, json.dumps(result.to_dict()))

        token_file.write_text("wrong")
        upload = up.open_upload(url + ".2", bearer_token_file=str(token_file), ca_bundle=str(ca_file),
                                retry=fast())
        upload.write(b"abc")
        with pytest.raises(up.UploadError) as err:
            upload.close()
        assert err.value.kind == "forbidden"
        assert_no_secrets(str(err.value))


def test_ticket_cli_writes_a_private_ticket(s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", srv.S3RVER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", srv.S3RVER_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CA_BUNDLE", ca_file())      # the responder's side: boto3 opens the multipart upload
    out = tmp_path / "t.json"
    rc = tk.main(["ticket", "s3", "--bucket", s3.bucket, "--case", "C 1", "--host-id", "web/01",
                  "--size-hint", "40M", "--part-size", "8M", "--endpoint-url", s3.endpoint, "-o", str(out)])
    assert rc == 0
    assert os.stat(out).st_mode & 0o777 == 0o600
    ticket = json.loads(out.read_text())
    assert ticket["kind"] == "s3-multipart" and ticket["part_size"] == 8 * MiB
    assert len(ticket["part_urls"]) == 10          # ceil(40M * 1.5 / 8M) + 2
    assert re.fullmatch(r"s3://evidence/C_1/incoming/web_01/\d{8}T\d{6}Z-[0-9a-f]{6}/triagent\.tar\.gz",
                        ticket["destination"])
    summary = capsys.readouterr().out
    assert_no_secrets(summary)
    assert tk.object_key("c", "h", "n") != tk.object_key("c", "h", "n"), "a fresh key per run"


def test_ticket_cli_o_dir_names_the_ticket(s3, tmp_path, monkeypatch, capsys):
    """-o has one meaning in every command: a folder (here the ticket gets its own name), or - for stdout."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", srv.S3RVER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", srv.S3RVER_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CA_BUNDLE", ca_file())
    base = ["ticket", "s3", "--bucket", s3.bucket, "--case", "C1", "--host-id", "../web/01", "--mode", "single",
            "--endpoint-url", s3.endpoint]
    assert tk.main([*base, "-o", str(tmp_path / "tickets") + "/"]) == 0
    (made,) = (tmp_path / "tickets").iterdir()
    assert re.fullmatch(r"ticket____web_01_\d{8}T\d{6}Z\.json", made.name), made.name
    assert os.stat(made).st_mode & 0o777 == 0o600 and json.loads(made.read_text())["kind"] == "s3-put"
    capsys.readouterr()
    assert tk.main([*base, "-o", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "s3-put"


# ---------------------------------------------------------------------------------------------- hostile host

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
              "no_proxy")
# Headers any HTTP client sends, which no presigned URL needs to sign.
TRANSPORT = {"host", "content-length", "transfer-encoding", "user-agent", "accept", "accept-encoding", "connection"}


def test_plain_http_is_refused_before_any_connection():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        signed = f"http://127.0.0.1:{port}/bkt/key?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIAXXX"
        https = f"https://127.0.0.1:{port}/bkt/key?X-Amz-Signature=cafe"
        targets = [signed, f"http://127.0.0.1:{port}/incoming/bundle.tar.gz",
                   {"format": up.TICKET_FORMAT, "kind": "s3-multipart", "part_urls": [https, signed],
                    "complete_url": https, "abort_url": https},
                   {"format": up.TICKET_FORMAT, "kind": "https-put", "url": https, "read_url": signed}]
        for target in targets:
            with pytest.raises(up.UploadError) as err:
                open_upload(target, retry=fast(attempts=1)).write(b"evidence")
            text = str(err.value)
            assert err.value.kind == "insecure" and "https://" in text and "signature in clear" in text, text
            assert "deadbeef" not in text and "AKIAXXX" not in text
        with pytest.raises(up.UploadError) as err:
            verify_remote(signed)
        assert err.value.kind == "insecure"
        time.sleep(0.2)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()       # nobody connected
    finally:
        listener.close()


def _v2_urls(client, ticket: dict) -> dict:
    """A multipart ticket's URLs presigned again in the SigV2 query form."""
    bucket, key = ticket["destination"][len("s3://"):].split("/", 1)
    common = {"Bucket": bucket, "Key": key, "UploadId": ticket["upload_id"]}

    def sign(op: str, **params) -> str:
        return client.generate_presigned_url(op, Params={**common, **params}, ExpiresIn=600)

    return {"part_urls": [sign("upload_part", PartNumber=n) for n in range(1, len(ticket["part_urls"]) + 1)],
            "complete_url": sign("complete_multipart_upload", IfNoneMatch="*"),
            "abort_url": sign("abort_multipart_upload"),
            "read_url": client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                      ExpiresIn=600)}


def _presigned_heads(proxy: srv.FaultProxy) -> list[tuple[str, str, dict[str, str]]]:
    """(method, query, headers) of the requests made with a presigned URL (the SDK's own calls sign a header)."""
    out = []
    for head in proxy.heads:
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        query = urlsplit(target).query
        if "Signature=" in query:
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            out.append((method, query, headers))
    return out


@pytest.mark.parametrize("form", ["s3v4", "s3v2"])
def test_presigned_urls_get_only_the_headers_they_signed(s3, form):
    """SigV4 (X-Amz-SignedHeaders) and the older query form (AWSAccessKeyId/Signature/Expires), which
    s3rver verifies with Content-MD5 and Content-Type in the string to sign: a header the URL did not
    sign is SignatureDoesNotMatch there. A recording relay in front of s3rver sees every header."""
    relay = srv.FaultProxy(int(s3.endpoint.rsplit(":", 1)[1]))
    endpoint = f"https://127.0.0.1:{relay.port}"
    try:
        client = s3.client_v2(endpoint) if form == "s3v2" else \
            tk.s3_client(endpoint, aws_access_key_id=srv.S3RVER_KEY, aws_secret_access_key=srv.S3RVER_KEY,
                         verify=ca_file())
        # a bare presigned PUT URL, as boto3 gives it
        key = f"case-1/incoming/host-h/{form}-single.bin"
        url = client.generate_presigned_url("put_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=600)
        assert ("X-Amz-SignedHeaders=" in url) == (form == "s3v4") and ("AWSAccessKeyId=" in url) == (form == "s3v2")
        single = stream(MiB + 17, seed=11)
        upload = open_upload(url, retry=fast(attempts=2))
        feed(upload, single)
        assert upload.close().ok
        # a multipart ticket: part URLs and a Complete (whose XML body has no signed Content-Type)
        data = stream(11 * MiB + 5, seed=12)
        if form == "s3v4":
            ticket = s3_ticket(s3, client=client, size_hint=len(data), part_size=5 * MiB, mode="multipart")
        else:   # botocore's SigV2 *header* auth of CreateMultipartUpload fails on s3rver: the SDK opens it in v4
            ticket = s3_ticket(s3, size_hint=len(data), part_size=5 * MiB, mode="multipart")
            ticket.update(_v2_urls(client, ticket))
        upload = open_upload(ticket, retry=fast(attempts=2))
        feed(upload, data)
        result = upload.close()
        assert result.ok and result.parts == 3
        assert verify_remote(ticket, expected_sha256=hashlib.sha256(data).hexdigest())["match"]
    finally:
        relay.close()
    stored = s3.client()
    for k, want in ((key, single), (ticket["destination"].split("/", 3)[3], data)):
        body = stored.get_object(Bucket=s3.bucket, Key=k)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(want).hexdigest()
    seen = _presigned_heads(relay)
    assert {m for m, _, _ in seen} >= {"PUT", "POST", "GET"}, seen
    for method, query, headers in seen:
        extra = set(headers) - TRANSPORT
        if form == "s3v4":
            signed = {h.lower() for h in dict(parse_qsl(query))["X-Amz-SignedHeaders"].split(";")}
            assert extra <= signed, f"{method} sent headers its URL did not sign: {sorted(extra - signed)}"
        else:
            assert not {h for h in extra if h in ("content-md5", "content-type") or h.startswith("x-amz-")}, \
                f"{method} sent {sorted(extra)} with a SigV2 URL that signed none of them"


def test_proxy_only_from_https_proxy_no_proxy_or_the_option(monkeypatch, tmp_path):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / ".netrc"         # proxy and server are both 127.0.0.1: netrc would name them
    netrc.write_text("machine 127.0.0.1 login x password y\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    with srv.run_put_server(token=None) as (server, ca), srv.ConnectProxy() as env_proxy, \
            srv.ConnectProxy() as other, srv.ConnectProxy() as option:
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        target = f"127.0.0.1:{server.server_address[1]}"

        def put(name: str, **kw) -> None:
            upload = up.open_upload(f"{server.url}/{name}", ca_bundle=str(tmp_path / "ca.pem"),
                                    retry=fast(attempts=2), **kw)
            upload.write(name.encode() * 1000)
            assert upload.close().ok
            assert server.objects[f"/{name}"] == name.encode() * 1000

        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, other.url)
        put("not-http-proxy-nor-all-proxy")
        assert other.accepted == 0, "HTTP_PROXY / ALL_PROXY were used for https"
        assert not any("authorization" in {k.lower() for k in h} for _, _, h in server.requests), \
            "netrc credentials were sent"
        monkeypatch.setenv("HTTPS_PROXY", env_proxy.url)
        put("through-https-proxy")
        assert env_proxy.connects == [target]
        monkeypatch.setenv("NO_PROXY", "example.invalid, 127.0.0.0/8")
        put("no-proxy-cidr")
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        put("no-proxy-host")
        assert env_proxy.connects == [target], "NO_PROXY names the host: no CONNECT"
        monkeypatch.delenv("NO_PROXY")
        put("the-option-wins", proxy=option.url)
        assert option.connects == [target] and len(env_proxy.connects) == 1
        put("the-option-says-direct", proxy="none")
        assert len(env_proxy.connects) == 1 and len(option.connects) == 1
        assert other.accepted == 0, "HTTP_PROXY / ALL_PROXY were used for https"
        for proxy in (env_proxy, option):
            assert not any(b"proxy-authorization" in h.lower() for h in proxy.heads)
        assert not any("authorization" in {k.lower() for k in h} for _, _, h in server.requests), \
            "netrc credentials were sent"
        with pytest.raises(up.UploadError) as err:
            up.open_upload(f"{server.url}/x", ca_bundle=str(tmp_path / "ca.pem"), proxy="http://u:pw@127.0.0.1:9")
        assert err.value.kind == "insecure" and "pw" not in str(err.value)


@pytest.mark.parametrize("how", ["HTTPS_PROXY", "--proxy"])
def test_a_proxy_that_terminates_tls_is_refused(monkeypatch, tmp_path, how):
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    with srv.run_put_server(token=None) as (server, ca), srv.ConnectProxy("intercept") as mitm:
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        kw = {"proxy": mitm.url}
        if how == "HTTPS_PROXY":
            monkeypatch.setenv("HTTPS_PROXY", mitm.url)
            kw = {}
        upload = up.open_upload(f"{server.url}/k", ca_bundle=str(tmp_path / "ca.pem"), retry=fast(attempts=2), **kw)
        with pytest.raises(up.UploadError) as err:
            upload.write(b"evidence" * 1000)
            upload.close()
        assert err.value.kind == "tls", err.value
        assert mitm.connects and not mitm.intercepted, "the request went through a tunnel we could not verify"
        assert not server.objects


def test_the_ticket_carries_the_operators_ca_and_nothing_else_is_trusted(tmp_path):
    """On-premises S3-compatible storage with a private CA: the CA travels in the ticket the operator
    made (`ca_pem`), never from the host's trust store; a ca_pem that is not a certificate is refused."""
    with srv.run_put_server() as (server, ca):
        url = f"{server.url}/incoming/ticket-ca.tar.gz"
        ticket = {"format": "triagent-upload-ticket/1", "kind": "https-put", "url": url, "destination": url}
        token_file = tmp_path / "token"
        token_file.write_text(server.token)
        with pytest.raises(up.UploadError) as err:
            upload = up.open_upload(dict(ticket), bearer_token_file=str(token_file), retry=fast())
            upload.write(b"abc")
            upload.close()
        assert err.value.kind == "tls"
        upload = up.open_upload(dict(ticket, ca_pem=ca.cert_pem.bytes().decode()), bearer_token_file=str(token_file))
        upload.write(b"evidence")
        assert upload.close().ok and server.objects["/incoming/ticket-ca.tar.gz"] == b"evidence"
        with pytest.raises(up.UploadError) as err:
            up.open_upload(dict(ticket, ca_pem="not a certificate"), bearer_token_file=str(token_file))
        assert err.value.kind == "ticket"
