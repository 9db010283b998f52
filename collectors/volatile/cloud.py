"""Cloud identity of the host from inside the VM (AWS IMDSv2, Azure IMDS, GCP metadata server) for the
custody record: which instance, in which account / subscription / project, where, from which image.

Rules this module keeps whatever a metadata service answers:
- never role or identity credentials (AWS ``iam/security-credentials/<role>``, ``identity-credentials``,
  GCP ``.../token`` and ``.../identity``, Azure ``identity/oauth2/token``): every path goes through
  :func:`refused` first, so a bug elsewhere cannot reach them;
- user-data, custom data and startup scripts only as SHA-256 and size, never their content;
- no proxy: http.client has no proxy support at all, so HTTP(S)_PROXY in the environment cannot send
  these requests elsewhere (a proxy would answer as if it were the metadata service, or leak the token);
- no redirect is followed (http.client does not follow them);
- a sub-second budget per request, about a second per provider and three seconds for the artifact, and
  cheap local hints (DMI, /sys/hypervisor/uuid) first, so a host outside any cloud is not slowed.

Endpoints: the built-in default is http://169.254.169.254 for all three (GCP answers there too, and an
IP avoids a DNS lookup of metadata.google.internal, which can hang for seconds on a host with a dead
resolver). Overrides, strongest first: TRIAGENT_IMDS_ENDPOINT_{AWS,AZURE,GCP}, TRIAGENT_IMDS_ENDPOINT,
then the artifact options ``aws_endpoint``, ``azure_endpoint``, ``gcp_endpoint``; the value ``off``
disables the probes (tests and runs that must not touch the network).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collectors.base import Context, Item, Problem, Record
from collectors.util import read_text

if TYPE_CHECKING:
    import http.client

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENV_ENDPOINT = "TRIAGENT_IMDS_ENDPOINT"
PROVIDERS = ("aws", "azure", "gcp")
AZURE_API = "2021-02-01"
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"  # every Azure VM's chassis asset tag
MAX_BODY = 1 << 20
GCP_HASHED_ATTRIBUTES = ("startup-script", "user-data", "shutdown-script", "startup-script-ps1",
                         "windows-startup-script-ps1", "windows-startup-script-cmd", "sysprep-specialize-script-ps1")

_AWS_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
_REFUSED = [
    (re.compile(r"/iam/security-credentials/[^/?]"), "AWS role credentials"),
    (re.compile(r"/identity-credentials(/|$)"), "AWS instance identity credentials"),
    (re.compile(r"/computeMetadata/.*/(token|identity)(\?|/|$)"), "GCP service account token"),
    (re.compile(r"/metadata/identity/oauth2"), "Azure managed identity token"),
]


def refused(path: str) -> str | None:
    """Why ``path`` must never be requested (it returns credentials), or None when it may be."""
    for pattern, what in _REFUSED:
        if pattern.search(path):
            return what
    return None


def identity_for_custody(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a ``cloud`` record that identifies the host in the custody record."""
    keys = ("provider", "source", "instance_id", "instance_name", "account_id", "account_kind", "region", "zone",
            "image_id", "instance_type")
    out = {k: record.get(k) for k in keys}
    out["imds_version"] = (record.get("imds") or {}).get("version")
    return out


# ---- a deadline-bound HTTP client -------------------------------------------------------------


class _Unanswered(Exception):
    """The endpoint did not answer: ``kind`` is unreachable (no connection) or silent (no HTTP reply)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Client:
    host: str
    port: int
    connect_timeout: float
    read_timeout: float
    deadline: float  # time.monotonic()
    requests: list[str] = field(default_factory=list)
    conn: http.client.HTTPConnection | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> _Reply:
        import http.client  # here, not at the top: off the start of every run on a host that is in no cloud (9 ms)

        why = refused(path)
        if why:
            raise PermissionError(f"refusing to request {path}: it returns {why}")
        if self.remaining() <= 0.02:
            raise _Unanswered("budget", "provider budget used up")
        self.requests.append(f"{method} {path}")
        try:
            if self.conn is None or self.conn.sock is None:
                self.close()
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=min(self.connect_timeout, self.remaining()))
                self.conn.connect()
        except OSError as exc:
            self.close()
            raise _Unanswered("unreachable", f"connect: {_os_error(exc)}") from None
        try:
            assert self.conn.sock is not None
            self.conn.sock.settimeout(max(0.01, min(self.read_timeout, self.remaining())))
            # skip_accept_encoding: nothing we do not need; Host is what the services expect
            self.conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                self.conn.putheader(name, value)
            if method == "PUT":
                self.conn.putheader("Content-Length", "0")
            self.conn.endheaders()
            resp = self.conn.getresponse()
            body = self._read(resp)
            reply = _Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
            if resp.will_close:
                self.close()
            return reply
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise _Unanswered("silent", f"{method} {path}: {_os_error(exc)}") from None

    def _read(self, resp: http.client.HTTPResponse) -> bytes:
        chunks, total = [], 0
        while total < MAX_BODY:
            # a server dripping bytes must not stretch the budget: re-arm the timeout before every read
            left = self.remaining()
            if left <= 0:
                raise TimeoutError("budget used up while reading the body")
            assert self.conn is not None and self.conn.sock is not None
            self.conn.sock.settimeout(max(0.01, min(self.read_timeout, left)))
            # read(n), not read1: it marks the response done at Content-Length, which keep-alive needs
            chunk = resp.read(min(65536, MAX_BODY - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)


def _os_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ---- hints ---------------------------------------------------------------------------------------


def local_hints(dmi_dir: str = "/sys/class/dmi/id", hypervisor_uuid: str = "/sys/hypervisor/uuid") -> dict[str, Any]:
    """DMI strings and the Xen UUID, readable without privilege, and what they say about the provider."""

    def first_line(path: str) -> str | None:
        try:
            return read_text(path, 4096).strip() or None
        except OSError:
            return None

    hints: dict[str, Any] = {n: first_line(os.path.join(dmi_dir, n)) for n in
                             ("sys_vendor", "product_name", "bios_vendor", "board_asset_tag", "chassis_asset_tag")}
    hints["hypervisor_uuid"] = first_line(hypervisor_uuid)
    vendor = (hints["sys_vendor"] or "").lower()
    bios = (hints["bios_vendor"] or "").lower()
    product = (hints["product_name"] or "").lower()
    provider, strong = None, False
    if "amazon" in vendor or "amazon" in bios or (hints["hypervisor_uuid"] or "").lower().startswith("ec2") \
            or _AWS_INSTANCE_ID.match(hints["board_asset_tag"] or ""):
        provider, strong = "aws", True
    elif hints["chassis_asset_tag"] == AZURE_ASSET_TAG:
        provider, strong = "azure", True
    elif vendor == "google" or "google compute engine" in product or bios == "google":
        provider, strong = "gcp", True
    elif "microsoft" in vendor and product == "virtual machine":
        provider = "azure"  # Hyper-V: Azure or an on-premises Hyper-V, ask Azure first only
    hints["provider"], hints["strong"] = provider, strong
    if provider == "aws" and _AWS_INSTANCE_ID.match(hints["board_asset_tag"] or ""):
        hints["instance_id"] = hints["board_asset_tag"]  # Nitro puts the instance id there
    return hints


def _endpoint_given(ctx: Context, providers: list[str]) -> bool:
    """An endpoint named by the operator (environment or options): then probe even without a DMI hint."""
    names = [ENV_ENDPOINT] + [f"{ENV_ENDPOINT}_{p.upper()}" for p in providers]
    return any(os.environ.get(n) for n in names) or any(
        (ctx.opt(f"{p}_endpoint") or DEFAULT_ENDPOINT).strip() != DEFAULT_ENDPOINT for p in providers)


def _endpoint(ctx: Context, provider: str) -> str:
    return (os.environ.get(f"{ENV_ENDPOINT}_{provider.upper()}") or os.environ.get(ENV_ENDPOINT)
            or ctx.opt(f"{provider}_endpoint") or DEFAULT_ENDPOINT).strip()


def _parse_endpoint(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"metadata endpoint must be http://HOST[:PORT], not {url!r}")
    return parts.hostname, parts.port or 80


def _digest(data: bytes) -> dict[str, Any]:
    return {"present": True, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value) or None


def _last(value: Any) -> str | None:
    text = _str(value)
    return text.rsplit("/", 1)[-1] if text else None


# ---- providers -----------------------------------------------------------------------------------
# Each returns (identity or None when this is not that provider, notes) where notes are Problems.


class _NotThis(Exception):
    """The endpoint answered, but not as this provider's service."""


def _aws(client: _Client, ttl: int, max_interfaces: int) -> tuple[dict[str, Any], list[Problem]]:
    token, imds = _aws_token(client, ttl)
    v1 = _aws_tokenless_get(client, token, imds)
    if token is None and v1 is not None and v1.status == 401:
        # 401 to a tokenless GET is IMDSv2-required mode: this is AWS, but we could not get a token
        return _aws_without_token(imds)
    imds["version"] = "v2" if token else "v1"
    problems = _aws_imdsv1_findings(token, imds)
    imds_get = _AwsReader(client, {"X-aws-ec2-metadata-token": token} if token else {})
    out: dict[str, Any] = {"provider": "aws", "source": "imds", "imds": imds, "account_kind": "aws_account"}
    try:
        _aws_identity(imds_get, out, problems)
        # most telling first: if the budget runs out, the interfaces (many small requests) are what is lost
        out["role"] = _aws_role(imds_get)
        user_data = imds_get.get("/latest/user-data")
        out["user_data"] = _digest(user_data.body) if user_data else {"present": False}
        out["zone_id"] = imds_get.text("/latest/meta-data/placement/availability-zone-id")
        out["hostname"] = imds_get.text("/latest/meta-data/local-hostname")
        out["public_hostname"] = imds_get.text("/latest/meta-data/public-hostname")
        interfaces: list[dict[str, Any]] = []
        # in the record before it is filled, so the interfaces read before the budget ran out are kept
        out["network_interfaces"] = interfaces
        _aws_interfaces(imds_get, max_interfaces, interfaces)
    except _Unanswered as exc:
        problems.append(Problem(f"AWS metadata incomplete: {exc}", level="warning"))
    return out, problems


def _aws_token(client: _Client, ttl: int) -> tuple[str | None, dict[str, Any]]:
    """An IMDSv2 session token (None when none was given) and the ``imds`` facts learnt asking for it."""
    imds: dict[str, Any] = {"version": None}
    token = None
    try:
        reply = client.request("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})
        if reply.status == 200 and reply.body:
            token = reply.body.decode("ascii", "replace").strip()
        else:
            imds["token_status"] = reply.status
    except _Unanswered as exc:
        if exc.kind == "unreachable":
            raise
        # a PUT that connects but never answers is the IMDSv2 hop limit (HttpPutResponseHopLimit=1)
        # dropping the reply one hop short: we run in a container or a network namespace
        imds["token_status"] = "timeout"
        imds["hop_limit_suspected"] = True
    return token, imds


def _aws_tokenless_get(client: _Client, token: str | None, imds: dict[str, Any]) -> _Reply | None:
    """The reply to a GET without a token, noted in ``imds``: 401 means IMDSv2 is required (good), 200 means
    IMDSv1 is still enabled.  Raises _NotThis when neither a token nor that GET says this is AWS."""
    try:
        v1 = client.request("GET", "/latest/meta-data/")
    except _Unanswered as exc:
        if token is None:
            raise
        v1 = None
        imds["v1_check"] = str(exc)
    if v1 is not None:
        imds["v1_allowed"] = v1.status == 200
        if token is None and v1.status not in (200, 401):
            raise _NotThis(f"token PUT {imds.get('token_status')}, GET /latest/meta-data/ {v1.status}")
    return v1


def _aws_without_token(imds: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """The record when IMDSv2 is required but no token could be had: AWS for sure, identity unknown."""
    why = ("the token PUT got no answer: the hop limit (HttpPutResponseHopLimit) is probably 1 and this "
           "runs one hop away (container)" if imds.get("hop_limit_suspected")
           else f"the token PUT was refused (HTTP {imds.get('token_status')})")
    problems = [Problem(f"AWS IMDSv2 is required but {why}; identity not read", level="warning")]
    return {"provider": "aws", "source": "imds", "account_kind": "aws_account", "imds": imds}, problems


def _aws_imdsv1_findings(token: str | None, imds: dict[str, Any]) -> list[Problem]:
    """IMDSv1 answering is a finding: any SSRF on the host then reaches the role credentials."""
    if token is None:
        return [Problem("AWS IMDSv1 answered without a token (no IMDSv2 token could be had"
                        + (": the token PUT timed out, hop limit 1 from a container?"
                           if imds.get("hop_limit_suspected") else "")
                        + "): any SSRF on this host can read the role credentials", level="warning",
                        detail={"finding": "imdsv1"})]
    if imds.get("v1_allowed"):
        return [Problem("AWS IMDSv1 is still enabled (HttpTokens=optional): a request without a token "
                        "was answered; any SSRF on this host can read the role credentials",
                        level="warning", detail={"finding": "imdsv1"})]
    return []


@dataclass
class _AwsReader:
    """GETs of the AWS metadata tree with the session token; anything but HTTP 200 reads as absent."""

    client: _Client
    headers: dict[str, str]

    def get(self, path: str) -> _Reply | None:
        reply = self.client.request("GET", path, self.headers)
        return reply if reply.status == 200 else None

    def text(self, path: str) -> str | None:
        reply = self.get(path)
        if reply is None:
            return None
        return reply.body.decode("utf-8", "replace").strip() or None

    def lines(self, path: str) -> list[str] | None:
        value = self.text(path)
        return [v.strip() for v in value.splitlines() if v.strip()] if value is not None else None


def _aws_identity(imds_get: _AwsReader, out: dict[str, Any], problems: list[Problem]) -> None:
    """Account, region, image and instance from the instance identity document into ``out``."""
    reply = imds_get.get("/latest/dynamic/instance-identity/document")
    doc = _json(reply.body) if reply else None
    doc = doc if isinstance(doc, dict) else {}
    out.update(account_id=_str(doc.get("accountId")), region=_str(doc.get("region")),
               zone=_str(doc.get("availabilityZone")), image_id=_str(doc.get("imageId")),
               instance_type=_str(doc.get("instanceType")), architecture=_str(doc.get("architecture")),
               private_ip=_str(doc.get("privateIp")), pending_time=_str(doc.get("pendingTime")))
    out["instance_id"] = imds_get.text("/latest/meta-data/instance-id") or _str(doc.get("instanceId"))
    if doc.get("instanceId") and out["instance_id"] != doc.get("instanceId"):
        problems.append(Problem(f"AWS instance-id {out['instance_id']} differs from the identity document's "
                                f"{doc.get('instanceId')}", level="warning"))
    if not doc.get("accountId"):
        # OpenStack and others serve an EC2-compatible tree without the identity document
        out["provider"], out["account_kind"] = "ec2_compatible", None


def _aws_role(imds_get: _AwsReader) -> dict[str, Any] | None:
    """The instance profile and its role names, or None when the instance has none."""
    iam: dict[str, Any] = {"role_names": []}
    info = imds_get.get("/latest/meta-data/iam/info")
    info_doc = _json(info.body) if info else None
    if isinstance(info_doc, dict):
        iam["instance_profile_arn"] = _str(info_doc.get("InstanceProfileArn"))
        iam["instance_profile_id"] = _str(info_doc.get("InstanceProfileId"))
    # the listing only: its children are the credentials
    iam["role_names"] = [r.rstrip("/") for r in (imds_get.lines("/latest/meta-data/iam/security-credentials/") or [])]
    return iam if (iam["role_names"] or info_doc) else None


def _aws_interfaces(imds_get: _AwsReader, max_interfaces: int, interfaces: list[dict[str, Any]]) -> None:
    """Append up to ``max_interfaces`` network interfaces, one at a time (a budget overrun keeps those read)."""
    for mac in (imds_get.lines("/latest/meta-data/network/interfaces/macs/") or [])[:max_interfaces]:
        base = f"/latest/meta-data/network/interfaces/macs/{mac.rstrip('/')}/"
        nic: dict[str, Any] = {"mac": mac.rstrip("/")}
        for key in ("interface-id", "device-number", "vpc-id", "subnet-id", "owner-id"):
            nic[key.replace("-", "_")] = imds_get.text(base + key)
        for key in ("security-group-ids", "security-groups", "local-ipv4s", "public-ipv4s", "ipv6s"):
            nic[key.replace("-", "_")] = imds_get.lines(base + key) or []
        interfaces.append(nic)


def _azure(client: _Client, _ttl: int, max_interfaces: int) -> tuple[dict[str, Any], list[Problem]]:
    problems: list[Problem] = []
    headers = {"Metadata": "true"}
    reply = client.request("GET", f"/metadata/instance?api-version={AZURE_API}", headers)
    doc = _json(reply.body) if reply.status == 200 else None
    compute = doc.get("compute") if isinstance(doc, dict) else None
    if not isinstance(compute, dict) or not compute.get("vmId"):
        raise _NotThis(f"GET /metadata/instance: HTTP {reply.status}")
    image = compute.get("storageProfile", {}).get("imageReference") if isinstance(
        compute.get("storageProfile"), dict) else None
    image = image if isinstance(image, dict) else {}
    image_id = _str(image.get("id")) or (":".join(str(image.get(k) or "") for k in
                                                  ("publisher", "offer", "sku", "version")).strip(":") or None)
    os_profile = compute.get("osProfile") if isinstance(compute.get("osProfile"), dict) else {}
    out: dict[str, Any] = {
        "provider": "azure", "source": "imds", "imds": {"version": AZURE_API},
        "instance_id": _str(compute.get("vmId")), "instance_name": _str(compute.get("name")),
        "account_id": _str(compute.get("subscriptionId")), "account_kind": "azure_subscription",
        "resource_group": _str(compute.get("resourceGroupName")), "resource_id": _str(compute.get("resourceId")),
        "region": _str(compute.get("location")), "zone": _str(compute.get("zone")),
        "image_id": image_id, "image": {k: _str(image.get(k)) for k in ("publisher", "offer", "sku", "version", "id")},
        "instance_type": _str(compute.get("vmSize")), "os_type": _str(compute.get("osType")),
        "computer_name": _str(os_profile.get("computerName")), "admin_username": _str(os_profile.get("adminUsername")),
        "vm_scale_set": _str(compute.get("vmScaleSetName")),
    }
    interfaces = []
    network = doc.get("network") if isinstance(doc.get("network"), dict) else {}
    for nic in (network.get("interface") or [])[:max_interfaces]:
        if not isinstance(nic, dict):
            continue
        ipv4 = nic.get("ipv4") if isinstance(nic.get("ipv4"), dict) else {}
        ipv6 = nic.get("ipv6") if isinstance(nic.get("ipv6"), dict) else {}
        addresses = [a for a in ipv4.get("ipAddress") or [] if isinstance(a, dict)]
        interfaces.append({
            "mac": _str(nic.get("macAddress")),
            "private_ipv4s": [a.get("privateIpAddress") for a in addresses if a.get("privateIpAddress")],
            "public_ipv4s": [a.get("publicIpAddress") for a in addresses if a.get("publicIpAddress")],
            "ipv6s": [a.get("privateIpAddress") for a in ipv6.get("ipAddress") or []
                      if isinstance(a, dict) and a.get("privateIpAddress")],
            "subnets": [f"{s.get('address')}/{s.get('prefix')}" for s in ipv4.get("subnet") or []
                        if isinstance(s, dict)],
        })
    out["network_interfaces"] = interfaces
    for key in ("userData", "customData"):
        value = compute.get(key)
        if value:
            try:
                raw = base64.b64decode(str(value), validate=True)
                out[_snake(key)] = dict(_digest(raw), of="base64-decoded")
            except ValueError:
                out[_snake(key)] = dict(_digest(str(value).encode()), of="as served")
        else:
            out[_snake(key)] = {"present": False}
    # the identity info endpoint says whether a managed identity exists (and its tenant), no token involved
    try:
        info = client.request("GET", "/metadata/identity/info?api-version=2018-02-01", headers)
        info_doc = _json(info.body) if info.status == 200 else None
        out["managed_identity"] = {"present": isinstance(info_doc, dict) and bool(info_doc.get("tenantId")),
                                   "tenant_id": _str(info_doc.get("tenantId")) if isinstance(info_doc, dict)
                                   else None}
    except _Unanswered as exc:
        out["managed_identity"] = None
        problems.append(Problem(f"Azure managed identity presence unknown: {exc}", level="warning"))
    return out, problems


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _gcp(client: _Client, _ttl: int, max_interfaces: int) -> tuple[dict[str, Any], list[Problem]]:
    problems: list[Problem] = []
    headers = {"Metadata-Flavor": "Google"}
    reply = client.request("GET", "/computeMetadata/v1/instance/?recursive=true", headers)
    if reply.headers.get("metadata-flavor") != "Google":
        # anything else on that address (another cloud, a captive proxy) is not Google's server
        raise _NotThis(f"GET /computeMetadata/v1/instance/: HTTP {reply.status} without Metadata-Flavor: Google")
    doc = _json(reply.body) if reply.status == 200 else None
    if not isinstance(doc, dict) or doc.get("id") is None:
        raise _NotThis(f"GET /computeMetadata/v1/instance/: HTTP {reply.status}, no instance id")
    zone = _last(doc.get("zone"))
    out: dict[str, Any] = {
        "provider": "gcp", "source": "imds", "imds": {"version": "computeMetadata/v1"},
        "instance_id": _str(doc.get("id")), "instance_name": _str(doc.get("name")),
        "hostname": _str(doc.get("hostname")), "account_kind": "gcp_project",
        "zone": zone, "region": zone.rsplit("-", 1)[0] if zone and "-" in zone else None,
        "image_id": _str(doc.get("image")), "instance_type": _last(doc.get("machineType")),
        "cpu_platform": _str(doc.get("cpuPlatform")),
        "network_tags": [t for t in doc.get("tags") or [] if isinstance(t, str)],
    }
    interfaces = []
    for nic in (doc.get("networkInterfaces") or [])[:max_interfaces]:
        if not isinstance(nic, dict):
            continue
        interfaces.append({
            "mac": _str(nic.get("mac")), "ip": _str(nic.get("ip")), "network": _str(nic.get("network")),
            "subnetmask": _str(nic.get("subnetmask")), "gateway": _str(nic.get("gateway")),
            "ipv6s": [v for v in nic.get("ipv6s") or [] if isinstance(v, str)],
            "external_ips": [a.get("externalIp") for a in nic.get("accessConfigs") or []
                             if isinstance(a, dict) and a.get("externalIp")],
        })
    out["network_interfaces"] = interfaces
    accounts = doc.get("serviceAccounts") if isinstance(doc.get("serviceAccounts"), dict) else {}
    out["service_accounts"] = sorted({a["email"] for a in accounts.values()
                                      if isinstance(a, dict) and isinstance(a.get("email"), str)})
    attributes = doc.get("attributes") if isinstance(doc.get("attributes"), dict) else {}
    # names only: attribute values can hold anything, passwords included; scripts as hashes
    out["attribute_names"] = sorted(str(k) for k in attributes)
    out["scripts"] = {k: _digest(str(attributes[k]).encode()) for k in GCP_HASHED_ATTRIBUTES if k in attributes}
    out["user_data"] = out["scripts"].get("user-data") or {"present": False}
    try:
        for key, path in (("account_id", "project-id"), ("project_number", "numeric-project-id")):
            answer = client.request("GET", f"/computeMetadata/v1/project/{path}", headers)
            if answer.status == 200 and answer.headers.get("metadata-flavor") == "Google":
                out[key] = answer.body.decode("utf-8", "replace").strip() or None
    except _Unanswered as exc:
        problems.append(Problem(f"GCP project id unknown: {exc}", level="warning"))
    if not out.get("project_number") and isinstance(doc.get("zone"), str) and doc["zone"].startswith("projects/"):
        out["project_number"] = doc["zone"].split("/")[1]
    return out, problems


_PROBES = {"aws": _aws, "azure": _azure, "gcp": _gcp}


# ---- the artifact --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Budget:
    """Timeouts and limits from the artifact options, read once per run."""

    connect_timeout: float
    read_timeout: float
    provider_budget: float
    total_end: float  # time.monotonic()
    ttl: int
    max_interfaces: int

    @classmethod
    def from_options(cls, ctx: Context, started: float) -> _Budget:
        return cls(
            connect_timeout=float(ctx.opt("connect_timeout_s", 0.3)),
            read_timeout=float(ctx.opt("read_timeout_s", 0.5)),
            provider_budget=float(ctx.opt("provider_budget_s", 1.0)),
            total_end=min(ctx.deadline, started + float(ctx.opt("total_budget_s", 3.0))),
            ttl=int(ctx.opt("token_ttl_s", 60)),  # the token is needed for a second, not the 6 h maximum
            max_interfaces=int(ctx.opt("max_interfaces", 16)),
        )


def collect(ctx: Context) -> Iterator[Item]:
    started = time.monotonic()
    budget = _Budget.from_options(ctx, started)
    wanted = [p for p in ctx.opt("providers", list(PROVIDERS)) if p in _PROBES]
    hints = local_hints(ctx.opt("dmi_dir", "/sys/class/dmi/id"),
                        ctx.opt("hypervisor_uuid_path", "/sys/hypervisor/uuid"))
    problems: list[Problem] = []
    probes: list[dict[str, Any]] = []

    record: dict[str, Any] | None = None
    dead: dict[tuple[str, int], str] = {}  # endpoints that did not answer: the next provider there is skipped
    for provider in _probe_order(ctx, hints, wanted):
        ctx.check()
        url = _endpoint(ctx, provider)
        probe: dict[str, Any] = {"provider": provider, "endpoint": url}
        probes.append(probe)
        found = _probe_provider(provider, url, probe, budget, dead, problems)
        if found is not None:
            record = found
            record["imds"] = dict(found.get("imds") or {}, endpoint=url, reachable=True, seconds=probe["seconds"])
            break

    if record is None:
        record = _record_unanswered(hints, probes, problems)
    record.setdefault("reason", None)
    record["hints"] = {k: v for k, v in hints.items() if v is not None}
    record["probes"] = probes
    record["seconds"] = round(time.monotonic() - started, 3)
    yield Record("cloud", record, custody={"cloud": identity_for_custody(record)})  # the custody names the instance
    yield from problems


def _probe_order(ctx: Context, hints: dict[str, Any], wanted: list[str]) -> list[str]:
    """Which providers to ask, in order: the one DMI names first (alone when DMI is sure)."""
    hinted = hints["provider"]
    if hinted in wanted and hints["strong"]:
        return [hinted]  # the others cannot be this host
    if hinted in wanted:
        return [hinted] + [p for p in wanted if p != hinted]
    if ctx.opt("probe_without_hint", False) or _endpoint_given(ctx, wanted):
        return wanted
    # Every cloud we know says so in DMI; without a hint the link-local address is not ours to touch
    # (an on-premises network may route it somewhere else) and the run is not slowed.
    return []


def _probe_provider(provider: str, url: str, probe: dict[str, Any], budget: _Budget,
                    dead: dict[tuple[str, int], str], problems: list[Problem]) -> dict[str, Any] | None:
    """Ask one provider's metadata service at ``url``; its outcome goes into ``probe``, and an endpoint that
    did not answer into ``dead``.  The identity it gave, or None."""
    if url.lower() in ("off", "none", "disabled"):
        probe["outcome"] = "disabled"
        return None
    try:
        host, port = _parse_endpoint(url)
    except ValueError as exc:
        probe["outcome"] = "bad endpoint"
        problems.append(Problem(str(exc)))
        return None
    if (host, port) in dead:
        probe["outcome"] = f"skipped: {dead[(host, port)]}"
        return None
    if time.monotonic() >= budget.total_end - 0.02:
        probe["outcome"] = "skipped: artifact budget used up"
        return None
    client = _Client(host, port, budget.connect_timeout, budget.read_timeout,
                     min(budget.total_end, time.monotonic() + budget.provider_budget))
    t0 = time.monotonic()
    try:
        found = _ask(provider, client, budget, probe, dead, problems)
    finally:
        client.close()
    probe["seconds"] = round(time.monotonic() - t0, 3)
    probe["requests"] = len(client.requests)
    return found


def _ask(provider: str, client: _Client, budget: _Budget, probe: dict[str, Any],
         dead: dict[tuple[str, int], str], problems: list[Problem]) -> dict[str, Any] | None:
    """Run the provider's probe over ``client``, turning every way it can fail into an outcome: never raises."""
    try:
        found, notes = _PROBES[provider](client, budget.ttl, budget.max_interfaces)
        probe["outcome"] = "answered"
        problems.extend(notes)
        return found
    except _NotThis as exc:
        probe["outcome"] = f"not {provider}: {exc}"
    except _Unanswered as exc:
        probe["outcome"] = f"{exc.kind}: {exc}"
        if exc.kind in ("unreachable", "silent"):
            dead[(client.host, client.port)] = f"{client.host}:{client.port} {exc.kind} for {provider}"
    except PermissionError as exc:  # a path guard tripped: a bug here, never a request sent
        probe["outcome"] = "refused"
        problems.append(Problem(str(exc)))
    except Exception as exc:  # what a metadata service serves is not ours to trust: never raise
        probe["outcome"] = f"failed: {type(exc).__name__}: {exc}"
        problems.append(Problem(f"{provider} metadata probe failed: {type(exc).__name__}: {exc}"))
    return None


def _record_unanswered(hints: dict[str, Any], probes: list[dict[str, Any]], problems: list[Problem]) -> dict[str, Any]:
    """The record when no metadata service answered: the provider DMI is sure of, if any."""
    hinted = hints["provider"]
    record: dict[str, Any]
    if hinted and hints["strong"]:
        # the machine says which cloud; the metadata service is off, blocked or out of reach
        record = {"provider": hinted, "source": "dmi", "instance_id": hints.get("instance_id"),
                  "reason": f"DMI says {hinted} but its metadata service did not answer"}
        problems.append(Problem(f"{hinted}: metadata service did not answer (" +
                                "; ".join(p.get("outcome", "") for p in probes) + "); identity from DMI only",
                                level="warning"))
    else:
        record = {"provider": None,
                  "reason": "no metadata service answered and no cloud hint in DMI" if probes
                  else "no cloud hint in DMI and probing without one is off"}
    record["imds"] = {"version": None, "reachable": False,
                      "seconds": round(sum(p.get("seconds", 0) for p in probes), 3)}
    return record
