"""triagent push (agent/responder/push.py) against moto's server mode (SSM, EC2) and s3rver (the bucket, real SigV4
presigned URLs). moto's SendCommand runs nothing, so these tests play the agent: for each host they take
the ticket push sent in the command's parameters (read back from moto), run the real collector with it
(`python -m agent collect --profile minimal --upload TICKET`), and hand push the collector's summary line
as the invocation's output through the documented `Hooks.invocation_output` seam. The ledger's hash
comparison then reads the real object back through the ticket. Azure and GCP: the request building and
result parsing with a fake compute client and a stand-in gcloud (no network beyond loopback)."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import importlib.util
import json
import os
import shlex
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import upload_servers as srv

from agent.responder import push as ps

REPO = Path(__file__).resolve().parents[3]
SHA = "ab" * 32
CASE = "case-7"


def need_module(name: str, why: str) -> None:
    srv.need(importlib.util.find_spec(name) is not None, f"{name} is not installed ({why})")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    # s3rver accepts only its own key; moto accepts any. No config file, no instance metadata service.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", srv.S3RVER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", srv.S3RVER_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # the responder's boto3 (push presigns and starts multipart uploads) trusts the loopback s3rver's test CA
    monkeypatch.setenv("AWS_CA_BUNDLE", str(srv.shared_tls().ca_file))
    # over HTTPS botocore streams put_object as aws-chunked with a trailing checksum, which S3 reads and
    # s3rver stores verbatim: ask for checksums only where S3 requires them
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    need_module("moto", "pip install 'moto[server]==5.2.5'")
    need_module("flask", "pip install 'moto[server]==5.2.5'")
    port = srv.free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with srv.server_process(argv, port, log):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    need_module("boto3", "pip install -e '.[ticket]'")
    with srv.run_s3rver(tmp_path_factory.mktemp("s3")) as server:
        yield server


def aws(service: str, endpoint: str):
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def launch(moto: str, count: int, tags: dict[str, str]) -> list[str]:
    ec2 = aws("ec2", moto)
    images = ec2.describe_images().get("Images") or []
    ami = images[0]["ImageId"] if images else "ami-12c6146b"
    resp = ec2.run_instances(ImageId=ami, MinCount=count, MaxCount=count, InstanceType="t3.micro",
                             TagSpecifications=[{"ResourceType": "instance",
                                                 "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    return sorted(i["InstanceId"] for i in resp["Instances"])


@pytest.fixture(scope="module")
def document(moto) -> str:
    """The real push document, registered in moto (moto parses it: parameters become describable)."""
    path = REPO / "specs" / "push" / "aws-ssm-triagent.json"
    srv.need(path.exists(), "specs/push/aws-ssm-triagent.json is missing")
    aws("ssm", moto).create_document(Content=path.read_text(), Name="triagent-push", DocumentType="Command",
                                     DocumentFormat="JSON")
    return "triagent-push"


def push_args(moto: str, s3, ledger: Path, *extra: str) -> list[str]:
    return ["push", "--document-name", "triagent-push", "--binary-url", "https://127.0.0.1:9/triagent",
            "--binary-sha256", SHA, "--bucket", s3.bucket, "--case", CASE, "--profile", "minimal",
            "--endpoint-url", moto, "--s3-endpoint-url", s3.endpoint, "--region", "us-east-1",
            "--ledger", str(ledger), "--poll-interval", "0.05", "--ca-bundle", str(srv.shared_tls().ca_file),
            *extra]


def run(argv: list[str], hooks: ps.Hooks | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="triagent")
    ps.add_push_arguments(parser.add_subparsers(dest="command", required=True))
    return ps.run_push(parser.parse_args(argv), hooks, progress=lambda _line: None)


def ticket_from_param(value: str) -> dict:
    """What the push scripts do with uploadTicket: JSON text, b64:JSON, or fetch+URL."""
    if value.startswith("b64:"):
        return json.loads(base64.b64decode(value[4:]))
    if value.startswith("fetch+"):
        import requests

        resp = requests.get(value[6:], timeout=30, verify=str(srv.shared_tls().ca_file))
        resp.raise_for_status()
        return resp.json()
    return json.loads(value)


def command_of(moto: str, command_id: str) -> dict:
    return aws("ssm", moto).list_commands(CommandId=command_id)["Commands"][0]


def collector_output(ticket: dict, tmp: Path, host: str) -> tuple[int, str]:
    """Run the real collector with the host's ticket; return its exit code and the document's
    stdout (the summary line with the "push" member the document adds)."""
    path = tmp / f"ticket-{host}.json"
    path.write_text(json.dumps(ticket))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # the loopback s3rver speaks TLS with the tests' own CA: the collector trusts it only when told
    ca = str(srv.shared_tls().ca_file)
    proc = subprocess.run([sys.executable, "-m", "agent", "collect", "--profile", "minimal", "--upload", str(path),
                           "--case-id", CASE, "--no-nice", "--ca-bundle", ca], cwd=REPO, env=env, capture_output=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    line = proc.stdout.decode().strip().splitlines()[-1]
    assert line.startswith("{"), proc.stderr.decode()[-2000:]
    prefix = json.dumps({"fetched_to": "/dev/shm/triagent-push.test", "fs": "tmpfs", "fetcher": "test",
                         "elapsed_s": 1, "sha256_ok": True, "exit": proc.returncode})
    return proc.returncode, '{"push":' + prefix + "," + line[1:] + "\n"


def key_of(destination: str) -> str:
    return destination.split("/", 3)[3]


def ledger_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- AWS SSM

def test_push_ledger_matches_real_objects_and_catches_a_tampered_one(moto, s3, document, tmp_path):
    hosts = launch(moto, 3, {"Name": "web"})
    tampered = hosts[1]
    seen: dict[str, str] = {}

    def play_agent(host: str, command_id: str, _invocation: dict) -> dict:
        command = command_of(moto, command_id)
        # moto adds every instance to a command sent without Targets; real SSM keeps InstanceIds as sent
        assert host in command["InstanceIds"]
        ticket = ticket_from_param(command["Parameters"]["uploadTicket"][0])
        seen[host] = ticket["destination"]
        rc, out = collector_output(ticket, tmp_path, host)
        if host == tampered:    # someone rewrites the evidence after the upload
            s3.client().put_object(Bucket=s3.bucket, Key=key_of(ticket["destination"]), Body=b"not the bundle\n")
        return {"StandardOutputContent": out, "ResponseCode": rc, "Status": "Success" if rc == 0 else "Failed"}

    ledger = tmp_path / "custody.jsonl"
    rc = run(push_args(moto, s3, ledger, "--instance-ids", ",".join(hosts), "--max-concurrency", "2",
                       "--max-errors", "5", "--timeout", "900", "--delivery-timeout", "120",
                       "--max-duration", "300", "--size-hint", "8M"), ps.Hooks(invocation_output=play_agent))
    assert rc == 1                          # one host mismatched
    lines = ledger_lines(ledger)
    assert [line["host"] for line in lines] and sorted(line["host"] for line in lines) == hosts
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    assert ps.check_chain(ledger) == []
    client = s3.client()
    for line in lines:
        body = client.get_object(Bucket=s3.bucket, Key=key_of(line["destination"]))["Body"].read()
        assert line["object_sha256"] == hashlib.sha256(body).hexdigest()
        assert line["object_bytes"] == len(body)
        assert line["destination"] == seen[line["host"]]
        assert line["destination"].startswith(f"s3://{s3.bucket}/{CASE}/incoming/{line['host']}/")
        assert "?" not in json.dumps(line) and "X-Amz-" not in json.dumps(line)
        assert line["status"] == "Success" and line["exit_code"] == 0 and line["collector_status"] == "complete"
        assert line["command_id"] and line["invocation_id"] == f"{line['command_id']}/{line['host']}"
        assert line["requested_utc"].endswith("Z") and line["started_utc"] and line["ended_utc"]
        assert line["format"] == ps.LEDGER_FORMAT and line["kind"] == "collect"
        if line["host"] == tampered:
            assert line["match"] == "no"
            assert line["object_sha256"] == hashlib.sha256(b"not the bundle\n").hexdigest()
            assert line["reported_sha256"] != line["object_sha256"]
            assert any("differs" in e for e in line["errors"])
        else:
            assert line["match"] == "yes", line
            assert line["reported_sha256"] == line["object_sha256"] and line["errors"] == []
            assert line["reported_bytes"] == len(body)

    # What SSM was asked for: the fleet limits, the timeouts, CloudWatch off, one ticket per host.
    tickets = set()
    for line in lines:
        command = command_of(moto, line["command_id"])
        assert command["DocumentName"] == "triagent-push"
        assert (command["MaxConcurrency"], command["MaxErrors"]) == ("2", "5")
        assert command["TimeoutSeconds"] == 120
        params = command["Parameters"]
        assert params["executionTimeout"] == ["900"] and params["maxDuration"] == ["300"]
        assert params["binarySha256"] == [SHA] and params["caseId"] == [CASE] and params["profile"] == ["minimal"]
        assert params["memory"] == ["false"] and "encryptTo" not in params
        tickets.add(json.loads(params["uploadTicket"][0])["destination"])
    assert len(tickets) == 3


def test_tag_targets_and_max_errors_stop_the_fleet(moto, s3, document, tmp_path):
    web = launch(moto, 3, {"Role": "db-canary"})
    launch(moto, 1, {"Role": "other"})
    calls: list[str] = []

    def failing_agent(host: str, _command_id: str, _invocation: dict) -> dict:
        calls.append(host)
        return {"StandardOutputContent": '{"status":"fatal","error":"no writable exec-able directory"}\n',
                "ResponseCode": 3, "Status": "Failed"}

    ledger = tmp_path / "custody.jsonl"
    sent_before = len(aws("ssm", moto).list_commands()["Commands"])
    rc = run(push_args(moto, s3, ledger, "--tag", "Role=db-canary", "--max-concurrency", "1", "--max-errors", "0"),
             ps.Hooks(invocation_output=failing_agent))
    assert rc == 1
    lines = ledger_lines(ledger)
    assert sorted(line["host"] for line in lines) == web        # exactly the tagged, running instances
    assert calls == [web[0]]
    by_host = {line["host"]: line for line in lines}
    assert by_host[web[0]]["status"] == "Failed" and by_host[web[0]]["exit_code"] == 3
    assert any("collector: no writable" in e for e in by_host[web[0]]["errors"])
    for host in web[1:]:
        assert by_host[host]["status"] == "NotSent" and by_host[host]["match"] == "no"
        assert "command_id" not in by_host[host]
    assert len(aws("ssm", moto).list_commands()["Commands"]) == sent_before + 1     # only the first was sent


def test_ticket_by_fetch_url_is_deleted_after_the_run(moto, s3, document, tmp_path):
    (host,) = launch(moto, 1, {"Name": "fetch"})
    fetched: list[str] = []

    def play_agent(host_: str, command_id: str, _invocation: dict) -> dict:
        value = command_of(moto, command_id)["Parameters"]["uploadTicket"][0]
        assert value.startswith("fetch+https://127.0.0.1:")
        fetched.append(value)
        ticket = ticket_from_param(value)       # a real presigned GET against s3rver
        rc, out = collector_output(ticket, tmp_path, host_)
        return {"StandardOutputContent": out, "ResponseCode": rc, "Status": "Success"}

    ledger = tmp_path / "custody.jsonl"
    rc = run(push_args(moto, s3, ledger, "--instance-ids", host, "--ticket-delivery", "fetch", "--size-hint", "8M"),
             ps.Hooks(invocation_output=play_agent))
    assert rc == 0
    (line,) = ledger_lines(ledger)
    assert line["match"] == "yes" and line["errors"] == []
    import requests

    gone = requests.get(fetched[0][6:], timeout=30, verify=str(srv.shared_tls().ca_file))
    assert gone.status_code == 404     # the ticket copy is gone


def test_readiness_mode_aggregates_the_fleet(moto, s3, tmp_path, capsys):
    hosts = launch(moto, 2, {"Name": "ready"})
    tickets: dict[str, dict] = {}

    def play_agent(host: str, command_id: str, _invocation: dict) -> dict:
        command = command_of(moto, command_id)
        script = "\n".join(command["Parameters"]["commands"])
        assert "./triagent readiness --upload ticket.json" in script and SHA in script
        path = tmp_path / f"ready-{host}.json"
        path.write_text(json.dumps(tickets[host]))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        proc = subprocess.run([sys.executable, "-m", "agent", "readiness", "--upload", str(path),
                               "--ca-bundle", str(srv.shared_tls().ca_file)], cwd=REPO,
                              env=env, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
        return {"StandardOutputContent": proc.stdout.decode(), "ResponseCode": proc.returncode,
                "Status": "Success" if proc.returncode == 0 else "Failed"}

    ledger = tmp_path / "ready.jsonl"
    argv = [a for a in push_args(moto, s3, ledger, "--instance-ids", ",".join(hosts), "--readiness")
            if a not in ("--document-name", "triagent-push")]
    rc = run(argv, ps.Hooks(on_ticket=lambda h, t: tickets.__setitem__(h, t), invocation_output=play_agent))
    table = capsys.readouterr().out
    lines = ledger_lines(ledger)
    assert sorted(line["host"] for line in lines) == hosts
    for line in lines:
        assert line["kind"] == "readiness" and line["readiness"] in ("ready", "degraded", "not-ready")
        assert line["destination"].startswith(f"s3://{s3.bucket}/{CASE}/readiness/{line['host']}/")
        assert not any("upload" in r for r in line["reasons"]), line["reasons"]    # the tiny PUT went through
        assert command_of(moto, line["command_id"])["DocumentName"] == "AWS-RunShellScript"
        assert line["host"] in table
    assert "2 hosts:" in table and table.startswith("HOST")
    assert rc == (0 if all(line["readiness"] == "ready" for line in lines) else 1)


@contextlib.contextmanager
def serve_dir(root: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("good_hash", [True, False])
def test_readiness_script_runs_only_the_binary_with_the_right_hash(tmp_path, good_hash):
    """The script push sends with --readiness, run as SSM would (a script file, env -i, cwd /usr/bin)."""
    marker = tmp_path / "ran"
    fake = f"#!/bin/sh\n: > {shlex.quote(str(marker))}\n[ \"$1\" = readiness ] && [ -s ticket.json ] && " \
           "echo '{\"status\":\"ready\",\"reasons\":[],\"host\":\"fake\"}'\n"
    served = tmp_path / "www"
    served.mkdir()
    (served / "triagent").write_text(fake)
    want = hashlib.sha256(fake.encode()).hexdigest() if good_hash else "0" * 64
    with serve_dir(served) as url:
        opts = ps.PushOptions(binary_url=f"{url}/triagent", binary_sha256=want, readiness=True, timeout=120)
        script = tmp_path / "_script.sh"
        script.write_text("\n".join(ps.readiness_script(opts, '{"format":"x"}')) + "\n")
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "AWS_SSM_INSTANCE_ID": "i-0123abcd"}
        before = set(Path("/dev/shm").glob("triagent-ready.*"))
        proc = subprocess.run(["/bin/sh", "-c", f"sh {shlex.quote(str(script))}"], cwd="/usr/bin", env=env,
                              capture_output=True, timeout=120)
    line = ps.summary_line(proc.stdout.decode())
    if good_hash:
        assert proc.returncode == 0 and line == {"status": "ready", "reasons": [], "host": "fake"}
        assert marker.exists()
    else:
        assert proc.returncode == 3 and "SHA-256 mismatch" in line["reasons"][0]
        assert not marker.exists()
    assert set(Path("/dev/shm").glob("triagent-ready.*")) == before        # the fetched copy is removed


# ---------------------------------------------------------------------------------------------- Azure, GCP

def fake_upload(ticket: dict, payload: bytes) -> str:
    """A stand-in collector: upload bytes through the ticket with the real uploader; return the
    summary line it would print."""
    from agent.ship.upload import open_upload

    up = open_upload(ticket, ca_bundle=str(srv.shared_tls().ca_file))
    up.write(payload)
    result = up.close()
    return json.dumps({"status": "complete", "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload),
                       "uploads": [{"to": ticket["destination"], "ok": result.ok, "bytes": result.bytes_stored}]})


def test_azure_run_command_request_and_ledger(s3, tmp_path, monkeypatch):
    need_module("azure.mgmt.compute", "pip install azure-mgmt-compute")
    from azure.mgmt.compute.models import InstanceViewStatus, RunCommandResult

    class VM:
        def __init__(self, group: str, name: str, tags: dict):
            self.id = f"/subscriptions/s/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}"
            self.name, self.tags = name, tags

    requests_seen: list = []

    class Poller:
        def __init__(self, value):
            self.value = value

        def result(self, timeout=None):
            return self.value

    class VirtualMachines:
        def list_all(self):
            return [VM("rg-a", "vm1", {"ir": "yes"}), VM("rg-b", "vm2", {"ir": "yes"}), VM("rg-a", "vm3", {})]

        def begin_run_command(self, group, vm, request):
            requests_seen.append((group, vm, request))
            params = {p.name: p.value for p in request.parameters}
            line = fake_upload(ticket_from_param(params["uploadTicket"]), f"bundle of {vm}\n".encode())
            return Poller(RunCommandResult(value=[InstanceViewStatus(
                code="ProvisioningState/succeeded", message=f"Enable succeeded: \n[stdout]\n{line}\n\n[stderr]\n")]))

    class Compute:
        virtual_machines = VirtualMachines()

    monkeypatch.setattr(ps.AzureRunCommand, "make_client", staticmethod(lambda sub, endpoint=None: Compute()))
    ledger = tmp_path / "azure.jsonl"
    argv = [a for a in push_args("http://127.0.0.1:9", s3, ledger, "--tag", "ir=yes", "--channel",
                                 "azure-run-command", "--subscription", "s", "--timeout", "7200", "--size-hint", "8M")]
    assert run(argv) == 0
    lines = ledger_lines(ledger)
    assert sorted(line["host"] for line in lines) == ["rg-a/vm1", "rg-b/vm2"]
    assert all(line["match"] == "yes" and line["channel"] == "azure-run-command" for line in lines)
    script = (REPO / "specs" / "push" / "azure-run-command.sh").read_text().splitlines()
    for _group, _vm, request in requests_seen:
        assert request.command_id == "RunShellScript" and request.script == script
        params = {p.name: p.value for p in request.parameters}
        assert params["timeLimit"] == "5400" and "executionTimeout" not in params    # Action Run Command's 90 min
        assert params["uploadTicket"].startswith("b64:") and params["binarySha256"] == SHA


def test_gcp_ssh_argv_stdin_and_ledger(s3, tmp_path):
    seen = tmp_path / "gcloud-calls"
    seen.mkdir()
    gcloud = tmp_path / "gcloud"
    gcloud.write_text(f"""#!{sys.executable}
import hashlib, json, shlex, sys, uuid
import requests
sys.path.insert(0, {str(REPO)!r})
from agent.ship.upload import open_upload
script = sys.stdin.buffer.read()
args = sys.argv[1:]
remote = shlex.split(args[args.index("--command") + 1])
json.dump({{"argv": args, "remote": remote, "stdin": script.decode()}},
          open({str(seen)!r} + "/" + uuid.uuid4().hex, "w"))
ca = {str(srv.shared_tls().ca_file)!r}
ticket = requests.get(remote[7].removeprefix("fetch+"), timeout=30, verify=ca).json()
payload = b"bundle via ssh\\n"
up = open_upload(ticket, ca_bundle=ca)
up.write(payload)
result = up.close()
print(json.dumps({{"status": "complete", "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload),
                  "uploads": [{{"to": ticket["destination"], "ok": result.ok}}]}}))
""")
    gcloud.chmod(0o755)
    ledger = tmp_path / "gcp.jsonl"
    argv = push_args("http://127.0.0.1:9", s3, ledger, "--instance-ids", "proj-1/europe-west1-b/vm-a,us-east1-c/vm-b",
                     "--channel", "gcp-ssh", "--gcloud", str(gcloud), "--project", "proj-2", "--iap")
    assert run(argv) == 0
    lines = ledger_lines(ledger)
    assert [line["match"] for line in lines] == ["yes", "yes"] and lines[0]["exit_code"] == 0
    calls = {c["argv"][2]: c for c in (json.loads(p.read_text()) for p in seen.iterdir())}
    assert calls["vm-a"]["argv"][:8] == ["compute", "ssh", "vm-a", "--zone", "europe-west1-b", "--quiet",
                                          "--project", "proj-1"]
    assert calls["vm-b"]["argv"][6:8] == ["--project", "proj-2"] and "--tunnel-through-iap" in calls["vm-b"]["argv"]
    remote = calls["vm-a"]["remote"]
    assert remote[:5] == ["sudo", "-n", "sh", "-s", "--"] and remote[6] == SHA
    assert remote[7].startswith("fetch+") and remote[8:] == [CASE, "minimal", "false", "-", "1800", "3600"]
    assert calls["vm-a"]["stdin"] == (REPO / "specs" / "push" / "gcp-ssh.sh").read_text()


# ---------------------------------------------------------------------------------------------- units

def test_fleet_limits_and_summary_parsing():
    assert ps.fleet_limit("10", 3, minimum=1) == 10
    assert ps.fleet_limit("50%", 3, minimum=1) == 2 and ps.fleet_limit("50%", 3, minimum=0) == 1
    assert ps.fleet_limit("0", 3, minimum=1) == 1
    with pytest.raises(ps.PushError):
        ps.fleet_limit("ten", 3, minimum=1)
    out = 'noise\n{"push":{"exit":0},"status":"complete","sha256":"aa"}\n{broken\n'
    assert ps.summary_line(out)["sha256"] == "aa" and ps.summary_line("") is None
    assert ps.parse_run_command_message("Enable succeeded: \n[stdout]\n{}\n\n[stderr]\nwarn\n") == ("{}", "warn")
    assert ps.utc_text("2024-05-01T10:00:00.123+02:00") == "2024-05-01T08:00:00Z"


def test_ledger_chain_shows_an_edited_line(tmp_path):
    path = tmp_path / "l.jsonl"
    ledger = ps.Ledger(path)
    for n in range(3):
        ledger.append({"host": f"i-{n}", "match": "yes"})
    ledger.close()
    assert ps.check_chain(path) == []
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"match":"yes"', '"match":"no"')
    path.write_text("\n".join(lines) + "\n")
    assert ps.check_chain(path) == ["line 3: prev_sha256 does not match line 2"]


@pytest.mark.parametrize("extra, code", [
    (["--binary-sha256", "xyz"], 2),
    (["--instance-ids", "not-an-id"], 2),
    (["--max-concurrency", "200%"], 2),
])
def test_usage_errors(tmp_path, extra, code):
    base = {"--binary-sha256": SHA, "--instance-ids": "i-0123456789abcdef0", "--max-concurrency": "10"}
    for i in range(0, len(extra), 2):
        base[extra[i]] = extra[i + 1]
    argv = ["push", "--document-name", "d", "--binary-url", "https://127.0.0.1:9/t", "--bucket", "b", "--case", "c",
            "--endpoint-url", "http://127.0.0.1:9", "--s3-endpoint-url", "http://127.0.0.1:9",
            "--ledger", str(tmp_path / "l.jsonl")] + [x for kv in base.items() for x in kv]
    assert run(argv) == code
    assert not (tmp_path / "l.jsonl").exists()
