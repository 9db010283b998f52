"""collect → encrypt → upload, through the command line: the bundle streams to s3rver with no --output
(nothing on the host's disk), encrypted to the responder; the object read back has the summary's SHA-256,
the stock `age -d` decrypts it and `verify --identity` proves the members. A dead URL is a clear error
that keeps the local copy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import upload_servers as srv
from conftest import need, run_triagent

from agent.responder import ticket as tk
from agent.ship import upload as up


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    import importlib.util

    srv.need(importlib.util.find_spec("boto3") is not None, "boto3 is not installed (pip install -e '.[ticket]')")
    with srv.run_s3rver(tmp_path_factory.mktemp("s3-ship")) as server:
        yield server


@pytest.fixture(scope="module")
def age_key(tmp_path_factory) -> tuple[Path, str]:
    need(shutil.which("age-keygen") is not None and shutil.which("age") is not None,
         "age is not installed (apt-get install age)")
    folder = tmp_path_factory.mktemp("age")
    proc = subprocess.run(["age-keygen", "-o", str(folder / "key")], capture_output=True, text=True, check=True)
    recipient = next(w for w in proc.stderr.split() if w.startswith("age1"))
    return folder / "key", recipient


def _summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def _ticket(s3, tmp_path: Path, **kw) -> Path:
    ticket = tk.s3_ticket(s3.client(), s3.bucket, tk.object_key("case-9", "host-z", "bundle.tar.gz.age"), **kw)
    path = tmp_path / "ticket.json"
    path.write_text(json.dumps(ticket))
    return path


def test_encrypted_bundle_streams_to_s3_and_nothing_stays_on_disk(s3, age_key, tmp_path):
    key, recipient = age_key
    ticket = _ticket(s3, tmp_path, size_hint=64 << 20, part_size=5 << 20, mode="multipart")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    proc = run_triagent(["collect", "--profile", "minimal", "--upload", str(ticket), "--encrypt-to", recipient,
                         "--case-id", "case-9", "--ca-bundle", str(s3.ca_file)], cwd=workdir)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    summary = _summary(proc)
    assert summary["bundle"] is None and summary["uploads"][0]["ok"], summary
    assert list(workdir.iterdir()) == [], "collect with only --upload left files behind"
    assert "X-Amz-Signature" not in proc.stdout.decode() + proc.stderr.decode()
    back = up.verify_remote(str(ticket), expected_sha256=summary["sha256"], ca_bundle=str(s3.ca_file))
    assert back["match"], (back, summary["sha256"])

    data = _download(ticket, s3.ca_file)
    assert hashlib.sha256(data).hexdigest() == summary["sha256"]
    shipped = tmp_path / "bundle.tar.gz.age"
    shipped.write_bytes(data)
    plain = subprocess.run(["age", "-d", "-i", str(key), str(shipped)], capture_output=True, check=True).stdout
    assert hashlib.sha256(plain).hexdigest() == summary["plaintext_sha256"]
    (tmp_path / "bundle.tar.gz").write_bytes(plain)
    with tarfile.open(tmp_path / "bundle.tar.gz") as tar:
        custody = json.loads(tar.extractfile("triagent/custody.json").read())
    assert custody["case_id"] == "case-9" and "X-Amz" not in json.dumps(custody)
    checked = run_triagent(["verify", "--identity", str(key), str(shipped)])
    assert checked.returncode == 0 and json.loads(checked.stdout)["plaintext_sha256"] == summary["plaintext_sha256"]
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    shipped.write_bytes(bytes(damaged))
    assert run_triagent(["verify", "--identity", str(key), str(shipped)]).returncode == 1


def _download(ticket: Path, ca_file: Path) -> bytes:
    import requests

    read_url = json.loads(ticket.read_text())["read_url"]
    response = requests.get(read_url, timeout=60, verify=str(ca_file))
    response.raise_for_status()
    return response.content


def test_expired_url_keeps_the_local_copy_and_says_so(s3, tmp_path):
    from datetime import timedelta

    ticket = _ticket(s3, tmp_path, size_hint=1 << 20, expires=timedelta(seconds=1), mode="single")
    time.sleep(2.5)
    proc = run_triagent(["collect", "--profile", "minimal", "--output", str(tmp_path / "out"), "--upload",
                         str(ticket), "--ca-bundle", str(s3.ca_file)])
    summary = _summary(proc)
    assert proc.returncode == 1, summary
    failed = summary["uploads"][0]
    assert not failed["ok"] and "expired" in failed["error"].lower(), failed
    assert "X-Amz-Signature" not in proc.stdout.decode() + proc.stderr.decode()
    local = Path(summary["bundle"])
    assert local.exists() and hashlib.sha256(local.read_bytes()).hexdigest() == summary["sha256"]
    assert run_triagent(["verify", str(local)]).returncode == 0


# ---------------------------------------------------------------------------------------------- hostile host

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY",
              "no_proxy")


def _hostile_env(tmp_path: Path, ca_file: Path) -> dict[str, str]:
    """The host's environment as an attacker sets it: their CA in every variable a TLS stack reads, and a
    ~/.netrc naming the upload host."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1 login x password y\n")
    netrc.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(HOME=str(home), NETRC=str(netrc), REQUESTS_CA_BUNDLE=str(ca_file), SSL_CERT_FILE=str(ca_file),
               CURL_CA_BUNDLE=str(ca_file), SSL_CERT_DIR=str(ca_file.parent))
    return env


def test_upload_trusts_no_ca_and_no_netrc_from_the_host(tmp_path):
    with srv.run_put_server(token=None) as (server, ca):
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        env = _hostile_env(tmp_path, ca_file)
        workdir = tmp_path / "cwd"
        workdir.mkdir()
        url = f"{server.url}/incoming/bundle.tar.gz"

        proc = run_triagent(["collect", "--profile", "minimal", "--upload", url], env=env, cwd=workdir)
        summary = _summary(proc)
        assert proc.returncode == 1 and not summary["uploads"][0]["ok"], summary
        assert "TLS verification failed" in summary["uploads"][0]["error"], summary
        assert not server.objects, "the CA from REQUESTS_CA_BUNDLE / SSL_CERT_FILE / CURL_CA_BUNDLE was trusted"

        proc = run_triagent(["collect", "--profile", "minimal", "--upload", url, "--ca-bundle", str(ca_file)],
                            env=env, cwd=workdir)
        summary = _summary(proc)
        assert proc.returncode == 0 and summary["uploads"][0]["ok"], (summary, proc.stderr.decode()[-2000:])
        assert hashlib.sha256(server.objects["/incoming/bundle.tar.gz"]).hexdigest() == summary["sha256"]
        sent = [{k.lower() for k in headers} for _, _, headers in server.requests]
        assert sent and not any("authorization" in names for names in sent), "~/.netrc credentials were sent"


def test_userinfo_and_signature_never_reach_custody_log_or_summary(tmp_path):
    with srv.run_put_server(token=None) as (server, ca):
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        port = server.server_address[1]
        out = tmp_path / "out"

        # user:password@ in the URL: refused before any connection, and never repeated
        url = f"https://evidence:pw-SECRET@127.0.0.1:{port}/k.tar.gz?X-Amz-Signature=SIG-SECRET&X-Amz-Date=1"
        proc = run_triagent(["collect", "--profile", "minimal", "--output", str(out), "--upload", url,
                             "--ca-bundle", str(ca_file), "-v"])
        text = proc.stdout.decode() + proc.stderr.decode()
        assert proc.returncode == 3 and "user:password@" in text, text[-2000:]
        assert "pw-SECRET" not in text and "SIG-SECRET" not in text
        assert not server.requests and not list(out.glob("*.tar.gz")), "a refused URL still ran"

        # a signed URL that fails (TLS: no --ca-bundle), whose urllib3 error text carries the full query
        url = (f"https://127.0.0.1:{port}/k.tar.gz?AWSAccessKeyId=AKID-SECRET&Signature=SIG-SECRET"
               "&Expires=4102444800")
        proc = run_triagent(["collect", "--profile", "minimal", "--output", str(out), "--upload", url, "-v"])
        summary = _summary(proc)
        assert proc.returncode == 1 and not summary["uploads"][0]["ok"], summary
        bundle = tarfile.open(summary["bundle"])
        custody = bundle.extractfile("triagent/custody.json").read().decode()
        log = bundle.extractfile("triagent/collection.log.jsonl").read().decode()
        assert f"127.0.0.1:{port}/k.tar.gz" in custody      # the destination is recorded, its secrets are not
        for where, text in (("custody.json", custody), ("collection log", log), ("summary", proc.stdout.decode()),
                            ("stderr", proc.stderr.decode())):
            assert "SECRET" not in text, f"a secret reached the {where}"


def test_proxy_option_wins_over_the_environment(tmp_path):
    with srv.run_put_server(token=None) as (server, ca), srv.ConnectProxy() as env_proxy, \
            srv.ConnectProxy() as option:
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env.update(HTTPS_PROXY=env_proxy.url, ALL_PROXY=env_proxy.url)
        proc = run_triagent(["collect", "--profile", "minimal", "--upload", f"{server.url}/p.tar.gz",
                             "--ca-bundle", str(ca_file), "--proxy", option.url], env=env, cwd=tmp_path)
        summary = _summary(proc)
        assert proc.returncode == 0 and summary["uploads"][0]["ok"], (summary, proc.stderr.decode()[-2000:])
        assert option.connects == [f"127.0.0.1:{server.server_address[1]}"] and env_proxy.accepted == 0
        assert hashlib.sha256(server.objects["/p.tar.gz"]).hexdigest() == summary["sha256"]
