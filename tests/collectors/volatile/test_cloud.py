"""Cloud identity against loopback servers that speak each metadata protocol: AWS IMDSv2 (token PUT,
IMDSv2-required, IMDSv1-only, a hop limit that swallows the PUT reply), Azure IMDS (``Metadata: true``,
no X-Forwarded-For) and the GCP metadata server (``Metadata-Flavor: Google`` both ways).

Nothing here may reach a real metadata address: every test runs with the endpoints on 127.0.0.1 and
socket.create_connection refuses anything else."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from collectors.base import Context, Problem, Record
from collectors.volatile import cloud

ROLE = "triage-test-role"
AWS_USER_DATA = b"#!/bin/sh\nexport DB_PASSWORD=hunter2-aws\n"
AZURE_USER_DATA = b"#cloud-config\npassword: hunter2-azure\n"
GCP_STARTUP = "#!/bin/sh\necho hunter2-gcp > /root/x\n"
SECRET_MARKERS = ("hunter2", "AKIA", "SECRETKEY", "ya29.", "eyJ0eXAi")

AWS_TREE: dict[str, Any] = {
    "/latest/meta-data/": "ami-id\ninstance-id\niam/\nnetwork/\n",
    "/latest/meta-data/instance-id": "i-0123456789abcdef0",
    "/latest/meta-data/local-hostname": "ip-10-0-1-23.eu-west-1.compute.internal",
    "/latest/meta-data/placement/availability-zone-id": "euw1-az2",
    "/latest/dynamic/instance-identity/document": json.dumps({
        "accountId": "123456789012", "architecture": "x86_64", "availabilityZone": "eu-west-1b",
        "imageId": "ami-0abcdef1234567890", "instanceId": "i-0123456789abcdef0", "instanceType": "m5.large",
        "pendingTime": "2024-05-01T10:00:00Z", "privateIp": "10.0.1.23", "region": "eu-west-1", "version": "2017-09-30",
    }),
    "/latest/meta-data/network/interfaces/macs/": "0a:1b:2c:3d:4e:5f/\n0a:1b:2c:3d:4e:60/",
    "/latest/meta-data/iam/info": json.dumps({
        "Code": "Success", "LastUpdated": "2024-05-01T10:00:00Z",
        "InstanceProfileArn": f"arn:aws:iam::123456789012:instance-profile/{ROLE}",
        "InstanceProfileId": "AIPAEXAMPLE"}),
    "/latest/meta-data/iam/security-credentials/": ROLE,
    # served so that a request for it would succeed and be seen: the collector must never ask
    f"/latest/meta-data/iam/security-credentials/{ROLE}": json.dumps({
        "AccessKeyId": "AKIAEXAMPLE", "SecretAccessKey": "SECRETKEY", "Token": "tok"}),
    "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance": "SECRETKEY",
    "/latest/user-data": AWS_USER_DATA,
}
for _mac, _n in (("0a:1b:2c:3d:4e:5f", 0), ("0a:1b:2c:3d:4e:60", 1)):
    _base = f"/latest/meta-data/network/interfaces/macs/{_mac}/"
    AWS_TREE.update({
        _base + "interface-id": f"eni-0000000000000000{_n}", _base + "device-number": str(_n),
        _base + "vpc-id": "vpc-0aaa", _base + "subnet-id": f"subnet-0bb{_n}", _base + "owner-id": "123456789012",
        _base + "security-group-ids": "sg-0111\nsg-0222" if _n == 0 else "sg-0333",
        _base + "security-groups": "web\nssh" if _n == 0 else "db",
        _base + "local-ipv4s": f"10.0.1.{23 + _n}",
    })
AWS_TREE["/latest/meta-data/network/interfaces/macs/0a:1b:2c:3d:4e:5f/public-ipv4s"] = "203.0.113.7"

AZURE_INSTANCE = {
    "compute": {
        "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6", "name": "web-01", "subscriptionId": "8d10da13-8125-4ba9-a717",
        "resourceGroupName": "rg-prod", "location": "westeurope", "zone": "2", "vmSize": "Standard_D2s_v3",
        "osType": "Linux", "vmScaleSetName": "",
        "resourceId": "/subscriptions/8d10da13-8125-4ba9-a717/resourceGroups/rg-prod/providers/"
                      "Microsoft.Compute/virtualMachines/web-01",
        "osProfile": {"adminUsername": "azureuser", "computerName": "web-01"},
        "storageProfile": {"imageReference": {"id": "", "offer": "0001-com-ubuntu-server-jammy",
                                              "publisher": "Canonical", "sku": "22_04-lts-gen2",
                                              "version": "22.04.202405010"}},
        "userData": base64.b64encode(AZURE_USER_DATA).decode(), "customData": "",
    },
    "network": {"interface": [{
        "ipv4": {"ipAddress": [{"privateIpAddress": "10.1.0.4", "publicIpAddress": "198.51.100.9"}],
                 "subnet": [{"address": "10.1.0.0", "prefix": "24"}]},
        "ipv6": {"ipAddress": []}, "macAddress": "000D3A1B2C3D"}]},
}

GCP_INSTANCE = {
    "id": 4567890123456789012, "name": "triage-vm", "hostname": "triage-vm.c.proj-x.internal",
    "zone": "projects/987654321098/zones/europe-west1-b",
    "machineType": "projects/987654321098/machineTypes/e2-standard-4",
    "image": "projects/debian-cloud/global/images/debian-12-bookworm-v20240501", "cpuPlatform": "Intel Broadwell",
    "tags": ["http-server"],
    "networkInterfaces": [{"ip": "10.132.0.5", "mac": "42:01:0a:84:00:05", "subnetmask": "255.255.240.0",
                           "gateway": "10.132.0.1", "network": "projects/987654321098/networks/default",
                           "accessConfigs": [{"externalIp": "192.0.2.44", "type": "ONE_TO_ONE_NAT"}]}],
    "serviceAccounts": {"default": {"aliases": ["default"], "email": "123-compute@developer.gserviceaccount.com",
                                    "scopes": ["https://www.googleapis.com/auth/cloud-platform"]},
                        "123-compute@developer.gserviceaccount.com": {
                            "aliases": ["default"], "email": "123-compute@developer.gserviceaccount.com",
                            "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}},
    "attributes": {"startup-script": GCP_STARTUP, "enable-oslogin": "TRUE", "db-password": "hunter2-attr"},
}


# ---- the servers ----------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, kind: str, mode: str = ""):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.kind, self.mode = kind, mode
        self.requests: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.release = threading.Event()  # lets hanging handlers finish at teardown

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without NODELAY each reply waits for a delayed ACK
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        self.server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
        getattr(self, f"_{self.server.kind}")()

    do_GET = do_PUT = _handle  # noqa: N815

    def _aws(self) -> None:
        mode = self.server.mode  # required | optional | v1only | hoplimit | hoplimit-v1
        if self.command == "PUT":
            if self.path != "/latest/api/token" or mode == "v1only":
                return self._send(404 if mode == "v1only" else 405)
            if self.headers.get("X-Forwarded-For"):
                return self._send(403)  # IMDSv2 refuses tokens through a proxy
            if mode.startswith("hoplimit"):
                # the reply dies one hop short: the client sees a connection that never answers
                self.server.release.wait(10)
                self.close_connection = True
                return None
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return self._send(400)
            token = f"AQAEA{len(self.server.tokens)}token"
            self.server.tokens.add(token)
            return self._send(200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
        token = self.headers.get("X-aws-ec2-metadata-token")
        if token is not None and token not in self.server.tokens:
            return self._send(401)
        if token is None and mode in ("required", "hoplimit"):
            return self._send(401)
        if self.path not in AWS_TREE:
            return self._send(404)
        return self._send(200, AWS_TREE[self.path])

    def _azure(self) -> None:
        if self.headers.get("X-Forwarded-For"):
            return self._send(403, '{"error": "Bad request. X-Forwarded-For header present"}')
        if self.headers.get("Metadata") != "true":
            return self._send(400, '{"error": "Bad request. Required metadata header not specified"}')
        path, _, query = self.path.partition("?")
        if "api-version=" not in query:
            return self._send(400, '{"error": "Bad request. api-version was not specified"}')
        if path == "/metadata/instance":
            return self._send(200, json.dumps(AZURE_INSTANCE), {"Content-Type": "application/json"})
        if path == "/metadata/identity/info":
            if self.server.mode == "no-identity":
                return self._send(400, '{"error": "invalid_request", "error_description": "Identity not found"}')
            return self._send(200, '{"tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47"}')
        if path == "/metadata/identity/oauth2/token":
            return self._send(200, '{"access_token": "eyJ0eXAiSECRET"}')
        return self._send(404)

    def _gcp(self) -> None:
        flavor = {"Metadata-Flavor": "Google"} if self.server.mode != "impostor" else {}
        if self.headers.get("X-Forwarded-For"):
            return self._send(403, "", flavor)
        if self.headers.get("Metadata-Flavor") != "Google":
            return self._send(403, "Missing Metadata-Flavor:Google header.", flavor)
        if self.path == "/computeMetadata/v1/instance/?recursive=true":
            return self._send(200, json.dumps(GCP_INSTANCE), dict(flavor, **{"Content-Type": "application/json"}))
        if self.path == "/computeMetadata/v1/project/project-id":
            return self._send(200, "proj-x", flavor)
        if self.path == "/computeMetadata/v1/project/numeric-project-id":
            return self._send(200, "987654321098", flavor)
        if "/token" in self.path or "/identity" in self.path:
            return self._send(200, '{"access_token": "ya29.SECRET"}', flavor)
        return self._send(404, "", flavor)


@pytest.fixture
def serve():
    servers: list[_Server] = []

    def start(kind: str, mode: str = "") -> _Server:
        server = _Server(kind, mode)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.release.set()
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch, tmp_path):
    """Default every endpoint to a closed loopback port and refuse any non-loopback connection."""
    for name in ("AWS", "AZURE", "GCP"):
        monkeypatch.delenv(f"{cloud.ENV_ENDPOINT}_{name}", raising=False)
    monkeypatch.setenv(cloud.ENV_ENDPOINT, f"http://127.0.0.1:{_closed_port()}")
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        assert address[0] in ("127.0.0.1", "localhost"), f"non-loopback connection attempted: {address}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    (tmp_path / "dmi").mkdir()


def _run(tmp_path, **options) -> tuple[dict[str, Any], list[Problem], float]:
    options.setdefault("dmi_dir", str(tmp_path / "dmi"))  # this host's DMI must not steer the test
    options.setdefault("hypervisor_uuid_path", str(tmp_path / "no-hypervisor-uuid"))
    ctx = Context(root="/", live=True, options=options)
    records, problems = [], []
    t0 = time.monotonic()
    for item in cloud.collect(ctx):
        if isinstance(item, Record):
            assert item.stream == "cloud"
            records.append(item.data)
        else:
            assert isinstance(item, Problem)
            problems.append(item)
    elapsed = time.monotonic() - t0
    assert len(records) == 1
    json.dumps(records[0])  # it must be a JSON Lines record
    return records[0], problems, elapsed


def _no_secrets(record: dict[str, Any]) -> None:
    text = json.dumps(record)
    for marker in SECRET_MARKERS:
        assert marker not in text, marker


def _only(monkeypatch, provider: str, server: _Server) -> None:
    monkeypatch.setenv(f"{cloud.ENV_ENDPOINT}_{provider.upper()}", server.url)


# ---- AWS ------------------------------------------------------------------------------------------


def test_aws_imdsv2_identity(serve, monkeypatch, tmp_path):
    server = serve("aws", "required")
    _only(monkeypatch, "aws", server)
    rec, problems, _ = _run(tmp_path)
    assert rec["provider"] == "aws" and rec["source"] == "imds"
    assert rec["instance_id"] == "i-0123456789abcdef0"
    assert (rec["account_id"], rec["region"], rec["zone"]) == ("123456789012", "eu-west-1", "eu-west-1b")
    assert (rec["image_id"], rec["instance_type"], rec["architecture"]) == ("ami-0abcdef1234567890", "m5.large",
                                                                             "x86_64")
    assert rec["private_ip"] == "10.0.1.23" and rec["zone_id"] == "euw1-az2"
    nics = {n["mac"]: n for n in rec["network_interfaces"]}
    first = nics["0a:1b:2c:3d:4e:5f"]
    assert first["interface_id"] == "eni-00000000000000000" and first["vpc_id"] == "vpc-0aaa"
    assert first["security_group_ids"] == ["sg-0111", "sg-0222"] and first["public_ipv4s"] == ["203.0.113.7"]
    assert nics["0a:1b:2c:3d:4e:60"]["security_group_ids"] == ["sg-0333"]
    assert nics["0a:1b:2c:3d:4e:60"]["public_ipv4s"] == []
    assert rec["role"]["role_names"] == [ROLE]
    assert rec["role"]["instance_profile_arn"].endswith(f"instance-profile/{ROLE}")
    assert rec["imds"]["version"] == "v2" and rec["imds"]["v1_allowed"] is False and rec["imds"]["reachable"]
    assert rec["user_data"] == {"present": True, "sha256": hashlib.sha256(AWS_USER_DATA).hexdigest(),
                                "bytes": len(AWS_USER_DATA)}
    assert not [p for p in problems if p.level in ("error", "warning")], problems
    # the token first, with a TTL, and every later request carries it
    assert server.requests[0]["method"] == "PUT" and server.requests[0]["path"] == "/latest/api/token"
    assert 1 <= int(server.requests[0]["headers"]["X-aws-ec2-metadata-token-ttl-seconds"]) <= 300
    tokenless = [r["path"] for r in server.requests[1:] if "X-aws-ec2-metadata-token" not in r["headers"]]
    assert tokenless == ["/latest/meta-data/"]  # the one deliberate IMDSv1 check
    assert not any("security-credentials/" + ROLE in p or "identity-credentials" in p for p in server.paths())
    assert all("X-Forwarded-For" not in r["headers"] for r in server.requests)
    _no_secrets(rec)


def test_aws_imdsv1_still_enabled_is_a_finding(serve, monkeypatch, tmp_path):
    server = serve("aws", "optional")
    _only(monkeypatch, "aws", server)
    rec, problems, _ = _run(tmp_path)
    assert rec["imds"]["version"] == "v2" and rec["imds"]["v1_allowed"] is True
    assert rec["instance_id"] == "i-0123456789abcdef0"
    assert any(p.detail.get("finding") == "imdsv1" and "HttpTokens=optional" in p.message for p in problems)


def test_aws_imdsv1_only(serve, monkeypatch, tmp_path):
    server = serve("aws", "v1only")
    _only(monkeypatch, "aws", server)
    rec, problems, _ = _run(tmp_path)
    assert rec["provider"] == "aws" and rec["imds"]["version"] == "v1"
    assert rec["account_id"] == "123456789012" and rec["role"]["role_names"] == [ROLE]
    assert any(p.detail.get("finding") == "imdsv1" and p.level == "warning" for p in problems)
    assert not any("security-credentials/" + ROLE in p for p in server.paths())
    _no_secrets(rec)


def test_aws_hop_limit_imdsv2_required(serve, monkeypatch, tmp_path):
    """The token PUT reply is dropped (hop limit 1, we are in a container): reported, within budget."""
    server = serve("aws", "hoplimit")
    _only(monkeypatch, "aws", server)
    rec, problems, elapsed = _run(tmp_path)
    assert rec["provider"] == "aws" and rec["imds"]["hop_limit_suspected"] is True
    assert rec["imds"]["version"] is None and rec.get("instance_id") is None
    assert any("hop limit" in p.message for p in problems)
    assert elapsed < 3.0, elapsed


def test_aws_hop_limit_with_imdsv1_fallback(serve, monkeypatch, tmp_path):
    server = serve("aws", "hoplimit-v1")
    _only(monkeypatch, "aws", server)
    rec, problems, elapsed = _run(tmp_path)
    assert rec["imds"]["version"] == "v1" and rec["imds"]["hop_limit_suspected"] is True
    assert rec["instance_id"] == "i-0123456789abcdef0"
    assert any("hop limit" in p.message and p.detail.get("finding") == "imdsv1" for p in problems)
    assert elapsed < 3.0, elapsed


# ---- Azure ----------------------------------------------------------------------------------------


def test_azure_identity(serve, monkeypatch, tmp_path):
    server = serve("azure")
    _only(monkeypatch, "azure", server)
    rec, problems, _ = _run(tmp_path, providers=["azure"])
    assert rec["provider"] == "azure" and rec["account_kind"] == "azure_subscription"
    assert rec["instance_id"] == "02aab8a4-74ef-476e-8182-f6d2ba4166a6" and rec["instance_name"] == "web-01"
    assert (rec["account_id"], rec["resource_group"]) == ("8d10da13-8125-4ba9-a717", "rg-prod")
    assert (rec["region"], rec["zone"], rec["instance_type"]) == ("westeurope", "2", "Standard_D2s_v3")
    assert rec["image_id"] == "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:22.04.202405010"
    assert rec["image"]["sku"] == "22_04-lts-gen2"
    assert rec["network_interfaces"] == [{"mac": "000D3A1B2C3D", "private_ipv4s": ["10.1.0.4"],
                                          "public_ipv4s": ["198.51.100.9"], "ipv6s": [],
                                          "subnets": ["10.1.0.0/24"]}]
    assert rec["managed_identity"]["present"] is True
    assert rec["user_data"]["sha256"] == hashlib.sha256(AZURE_USER_DATA).hexdigest()
    assert rec["custom_data"] == {"present": False}
    assert rec["imds"]["version"] == cloud.AZURE_API
    assert not [p for p in problems if p.level in ("error", "warning")], problems
    assert all(r["headers"].get("Metadata") == "true" for r in server.requests)
    assert all("X-Forwarded-For" not in r["headers"] for r in server.requests)
    assert not any("/token" in p or "oauth2" in p for p in server.paths())
    _no_secrets(rec)


def test_azure_without_managed_identity(serve, monkeypatch, tmp_path):
    server = serve("azure", "no-identity")
    _only(monkeypatch, "azure", server)
    rec, _, _ = _run(tmp_path, providers=["azure"])
    assert rec["managed_identity"] == {"present": False, "tenant_id": None}


# ---- GCP ------------------------------------------------------------------------------------------


def test_gcp_identity(serve, monkeypatch, tmp_path):
    server = serve("gcp")
    _only(monkeypatch, "gcp", server)
    rec, problems, _ = _run(tmp_path, providers=["gcp"])
    assert rec["provider"] == "gcp" and rec["instance_id"] == "4567890123456789012"  # a string: ids exceed 2**53
    assert (rec["account_id"], rec["project_number"]) == ("proj-x", "987654321098")
    assert (rec["zone"], rec["region"], rec["instance_type"]) == ("europe-west1-b", "europe-west1", "e2-standard-4")
    assert rec["image_id"].endswith("debian-12-bookworm-v20240501")
    assert rec["network_interfaces"][0]["external_ips"] == ["192.0.2.44"]
    assert rec["service_accounts"] == ["123-compute@developer.gserviceaccount.com"]
    assert rec["scripts"]["startup-script"]["sha256"] == hashlib.sha256(GCP_STARTUP.encode()).hexdigest()
    assert rec["attribute_names"] == ["db-password", "enable-oslogin", "startup-script"]
    assert not [p for p in problems if p.level in ("error", "warning")], problems
    assert all(r["headers"].get("Metadata-Flavor") == "Google" for r in server.requests)
    assert not any("/token" in p or "/identity" in p for p in server.paths())
    text = json.dumps(rec)
    assert "scopes" not in text and "cloud-platform" not in text  # emails only
    _no_secrets(rec)


def test_gcp_impostor_without_flavor_header_is_not_gcp(serve, monkeypatch, tmp_path):
    server = serve("gcp", "impostor")
    _only(monkeypatch, "gcp", server)
    rec, _, _ = _run(tmp_path, providers=["gcp"])
    assert rec["provider"] is None
    assert "Metadata-Flavor" in rec["probes"][0]["outcome"]


# ---- discovery, budgets, proxies, guards ----------------------------------------------------------


def test_one_endpoint_without_hints_finds_the_provider(serve, monkeypatch, tmp_path):
    """All three share one address in real life: AWS and Azure probes see GCP's 403s and move on."""
    server = serve("gcp")
    monkeypatch.setenv(cloud.ENV_ENDPOINT, server.url)
    rec, _, _ = _run(tmp_path)
    assert rec["provider"] == "gcp"
    assert [p["provider"] for p in rec["probes"]] == ["aws", "azure", "gcp"]
    assert rec["probes"][0]["outcome"].startswith("not aws") and rec["probes"][1]["outcome"].startswith("not azure")
    assert not any("/token" in p for p in server.paths() if p != "/latest/api/token")


def test_strong_dmi_hint_asks_only_that_provider(serve, monkeypatch, tmp_path):
    aws, other = serve("aws", "required"), serve("gcp")
    monkeypatch.setenv(cloud.ENV_ENDPOINT, other.url)
    _only(monkeypatch, "aws", aws)
    (tmp_path / "dmi" / "sys_vendor").write_text("Amazon EC2\n")
    (tmp_path / "dmi" / "board_asset_tag").write_text("i-0123456789abcdef0\n")
    rec, _, _ = _run(tmp_path)
    assert rec["provider"] == "aws" and rec["hints"]["provider"] == "aws"
    assert [p["provider"] for p in rec["probes"]] == ["aws"]
    assert other.requests == []


def test_dmi_hint_when_the_service_is_unreachable(monkeypatch, tmp_path):
    (tmp_path / "dmi" / "chassis_asset_tag").write_text(cloud.AZURE_ASSET_TAG + "\n")
    (tmp_path / "dmi" / "sys_vendor").write_text("Microsoft Corporation\n")
    rec, problems, _ = _run(tmp_path)
    assert (rec["provider"], rec["source"]) == ("azure", "dmi")
    assert rec["imds"]["reachable"] is False
    assert any("did not answer" in p.message for p in problems)
    assert cloud.identity_for_custody(rec)["provider"] == "azure"


def test_closed_port_is_quick(tmp_path):
    rec, problems, elapsed = _run(tmp_path)
    assert rec["provider"] is None and "no metadata service" in rec["reason"]
    assert rec["imds"] == {"version": None, "reachable": False, "seconds": rec["imds"]["seconds"]}
    # the first refusal marks the shared endpoint: the other providers are not asked
    assert rec["probes"][0]["outcome"].startswith("unreachable")
    assert all(p["outcome"].startswith("skipped") for p in rec["probes"][1:])
    assert not [p for p in problems if p.level == "error"]
    assert elapsed < 1.0, elapsed


def test_silent_endpoint_stays_within_budget(monkeypatch, tmp_path):
    """A listener that never answers (a black hole that completes the handshake): bounded by the read
    timeouts, not by the kernel's or the library's defaults."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # never accepted: connect succeeds, no byte ever comes back
        monkeypatch.setenv(cloud.ENV_ENDPOINT, f"http://127.0.0.1:{silent.getsockname()[1]}")
        rec, _, elapsed = _run(tmp_path)
    assert rec["provider"] is None
    assert rec["probes"][0]["outcome"].startswith("silent")
    assert all(p["outcome"].startswith("skipped") for p in rec["probes"][1:])
    assert 0.4 < elapsed < 5.0, elapsed  # ~1 s here: a PUT and a GET of 0.5 s each


def test_black_hole_uses_the_connect_timeout(monkeypatch, tmp_path):
    """Off-cloud, 169.254.169.254 is usually routed to a gateway that drops it: connect never completes.
    On loopback a listener with a full accept queue does the same (Linux drops the SYNs)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
            pytest.skip("this kernel completed a connection past a full accept queue")
        except TimeoutError:
            pass
        monkeypatch.setenv(cloud.ENV_ENDPOINT, f"http://127.0.0.1:{port}")
        rec, _, elapsed = _run(tmp_path)
    finally:
        for s in [hole, *fillers]:
            s.close()
    assert rec["probes"][0]["outcome"] == "unreachable: connect: timed out"
    assert all(p["outcome"].startswith("skipped") for p in rec["probes"][1:])
    assert elapsed < 1.0, elapsed  # one 0.3 s connect timeout for all three providers


def test_total_budget_caps_slow_providers(monkeypatch, tmp_path):
    """Three distinct silent endpoints: each provider gets its second, the artifact its three."""
    sockets = []
    for name in ("AWS", "AZURE", "GCP"):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        sockets.append(s)
        monkeypatch.setenv(f"{cloud.ENV_ENDPOINT}_{name}", f"http://127.0.0.1:{s.getsockname()[1]}")
    try:
        rec, _, elapsed = _run(tmp_path, read_timeout_s=2.0, provider_budget_s=1.0, total_budget_s=2.5)
    finally:
        for s in sockets:
            s.close()
    assert rec["provider"] is None
    assert all(p.get("seconds", 0) <= 1.2 for p in rec["probes"]), rec["probes"]
    assert elapsed < 3.5, elapsed


def test_proxies_in_the_environment_are_ignored(serve, monkeypatch, tmp_path):
    dead = f"http://127.0.0.1:{_closed_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server = serve("aws", "required")
    _only(monkeypatch, "aws", server)
    rec, _, _ = _run(tmp_path)
    assert rec["provider"] == "aws" and rec["instance_id"] == "i-0123456789abcdef0"
    # straight to the service: origin-form paths, not a proxy's absolute URLs
    assert all(p.startswith("/") for p in server.paths())


def test_disabled_endpoint(monkeypatch, tmp_path):
    monkeypatch.setenv(cloud.ENV_ENDPOINT, "off")
    rec, _, elapsed = _run(tmp_path)
    assert rec["provider"] is None and all(p["outcome"] == "disabled" for p in rec["probes"])
    assert elapsed < 0.5


def test_option_endpoint_used_when_no_env(serve, monkeypatch, tmp_path):
    server = serve("gcp")
    monkeypatch.delenv(cloud.ENV_ENDPOINT)
    rec, _, _ = _run(tmp_path, providers=["gcp"], gcp_endpoint=server.url)
    assert rec["provider"] == "gcp"


@pytest.mark.parametrize("path", [
    f"/latest/meta-data/iam/security-credentials/{ROLE}",
    "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
    "/computeMetadata/v1/instance/service-accounts/default/token",
    "/computeMetadata/v1/instance/service-accounts/default/identity?audience=x",
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
])
def test_credential_paths_are_refused(path):
    assert cloud.refused(path)
    client = cloud._Client("127.0.0.1", _closed_port(), 0.3, 0.5, time.monotonic() + 1)
    with pytest.raises(PermissionError):
        client.request("GET", path)
    assert client.requests == []


@pytest.mark.parametrize("path", ["/latest/meta-data/iam/security-credentials/", "/latest/meta-data/iam/info",
                                  "/latest/api/token", "/computeMetadata/v1/instance/?recursive=true",
                                  "/metadata/identity/info?api-version=2018-02-01"])
def test_listing_paths_are_allowed(path):
    assert cloud.refused(path) is None


def test_identity_for_custody(serve, monkeypatch, tmp_path):
    server = serve("aws", "required")
    _only(monkeypatch, "aws", server)
    rec, _, _ = _run(tmp_path)
    assert cloud.identity_for_custody(rec) == {
        "provider": "aws", "source": "imds", "instance_id": "i-0123456789abcdef0", "instance_name": None,
        "account_id": "123456789012", "account_kind": "aws_account", "region": "eu-west-1", "zone": "eu-west-1b",
        "image_id": "ami-0abcdef1234567890", "instance_type": "m5.large", "imds_version": "v2"}
    assert cloud.identity_for_custody({"provider": None})["provider"] is None
