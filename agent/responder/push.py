"""triagent push: the responder's side of a fleet collection.

For each target host: mint one upload ticket (agent/responder/ticket.py,
key `<case>/incoming/<host>/<UTC>-<hex>/<name>`),
send the push document (specs/push/) with that host's ticket, follow the invocation to a terminal status,
take the collector's summary line from its output, read the uploaded object back through the ticket's
read URL and hash it, and append one line to the custody ledger.

Channels:
  aws-ssm            SSM SendCommand with the document of specs/push/aws-ssm-triagent.json (boto3); targets by
                     instance id or by EC2 tag (DescribeInstances)
  azure-run-command  Action Run Command (RunShellScript) through azure-mgmt-compute's begin_run_command with the
                     script specs/push/azure-run-command.sh; targets RG/VM or by tag (virtual_machines.list_all)
  gcp-ssh            GCP has no run-command API: `gcloud compute ssh` (OS Login, optional IAP) with
                     specs/push/gcp-ssh.sh on stdin; targets [PROJECT/]ZONE/VM
The tickets are S3 tickets on every channel (a VM in any cloud can PUT to a presigned URL).

Ledger (JSONL, "format": "triagent-push-ledger/1"): the responder's custody record. Append-only (O_APPEND,
an exclusive flock while writing), each line flushed and fsynced before the next host's line; each line
carries the SHA-256 of the line before it ("prev_sha256"), so a removed or edited line shows. Per host:
host, channel, document, command id, invocation id, requested/started/ended UTC, status, exit code,
reported bundle SHA-256 and bytes, the object's SHA-256 and bytes as read back, match yes/no, the object's
destination (s3://bucket/key: never a URL with its query string), errors.

Fleet control: each host gets its own command (its parameters carry its own ticket), so SSM itself would
only ever see one target per command. MaxConcurrency and MaxErrors are passed through to every command and
enforced here across the fleet with SSM's meaning: at most MaxConcurrency hosts in flight; once more than
MaxErrors invocations have failed, no further command is sent (those hosts get a "NotSent" line).

Test seams (`Hooks`): `on_ticket(host, ticket)` sees each ticket as minted; `invocation_output(host,
command_id, invocation)` may return a dict whose keys (StandardOutputContent, Status, ResponseCode, ...)
replace those read from the service. moto's SSM runs nothing and always answers Success with empty output,
so the tests play the agent there; production code never sets them.

Exit codes: 0 every host matched (readiness: every host ready), 1 some host failed, mismatched, was not
sent (readiness: degraded or not ready), 2 usage, 3 fatal (no targets, SDK missing, ledger unwritable).
Never 194, 168 or 169.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import specs

LEDGER_FORMAT = "triagent-push-ledger/1"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FATAL = 0, 1, 2, 3
CHANNELS = ("aws-ssm", "azure-run-command", "gcp-ssh")
# get_command_invocation's terminal statuses; list_command_invocations adds the ones SSM gives an
# invocation that never ran (Undeliverable, Terminated, ...).
TERMINAL = {"Success", "Cancelled", "TimedOut", "Failed", "DeliveryTimedOut", "ExecutionTimedOut",
            "Undeliverable", "Terminated", "InvalidPlatform", "AccessDenied"}
AZURE_MAX_SECONDS = 5400            # Action Run Command stops a script after 90 minutes
INLINE_TICKET_MAX = 6000            # bigger tickets (many multipart URLs) go by fetch+URL, not in parameters
# found as every module finds specs/ (source tree, installed package, single binary alike); the path from
# __file__ it replaces pointed at agent/specs/push after the layout moved this module a level down
SPECS_PUSH = specs.path("push")
_INSTANCE_ID = re.compile(r"^(i|mi)-[0-9a-f]{8,17}$")


class PushError(Exception):
    """A usage or setup problem: the message is for the responder; `code` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


@dataclass
class Hooks:
    on_ticket: Callable[[str, dict[str, Any]], None] | None = None
    invocation_output: Callable[[str, str, dict[str, Any]], dict[str, Any] | None] | None = None


@dataclass
class PushOptions:
    channel: str = "aws-ssm"
    case: str = "case"
    bucket: str = ""
    document: str | None = None
    binary_url: str = ""
    binary_sha256: str = ""
    profile: str = "triage"
    memory: bool = False
    encrypt_to: str | None = None
    max_duration: int | None = None
    timeout: int = 3600                 # the run's own limit (the document's executionTimeout)
    delivery_timeout: int = 600         # SendCommand TimeoutSeconds: how long SSM may try to deliver
    max_concurrency: str = "10"
    max_errors: str = "1"
    size_hint: int = 2 << 30
    ticket_delivery: str = "auto"       # auto | inline | b64 | fetch
    ticket_expires: timedelta = timedelta(hours=12)
    readiness: bool = False
    poll_initial: float = 2.0
    poll_max: float = 30.0
    follow_grace: float = 300.0         # beyond timeout + delivery timeout before we stop following
    ca_bundle: str | None = None


# ---------------------------------------------------------------------------------------------- helpers

def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_text(value: Any) -> str | None:
    """SSM gives datetimes (SendCommand) and ISO strings of varying shape (invocations): one form."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)[:40]
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fleet_limit(value: str, targets: int, *, minimum: int) -> int:
    """SSM's "10" or "10%" as a host count: a percentage of the targets (rounded up for concurrency,
    down for errors, as `minimum` 1 vs 0 selects)."""
    text = str(value).strip()
    m = re.fullmatch(r"(\d{1,7})(%?)", text)
    if not m or (m.group(2) and int(m.group(1)) > 100):
        raise PushError(f"bad fleet limit {value!r} (a number, or a percentage such as 10%)")
    n = int(m.group(1))
    if m.group(2):
        n = math.ceil(targets * n / 100) if minimum else math.floor(targets * n / 100)
    return max(minimum, n)


def summary_line(output: str | None) -> dict[str, Any] | None:
    """The last stdout line that is a JSON object: the collector's summary (the push scripts prefix it
    with a "push" member), or the scripts' own failure line."""
    for line in reversed((output or "").splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _scrub(text: str) -> str:
    from agent.ship.upload import scrub

    return scrub(text)[:300]


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_scrub(str(exc))}"


def bundle_name(memory: bool, encrypted: bool) -> str:
    # The collector writes an uncompressed tar when it takes a memory image (the image format compresses).
    return "triagent.tar" + ("" if memory else ".gz") + (".age" if encrypted else "")


# ---------------------------------------------------------------------------------------------- ledger

class Ledger:
    """Append-only JSONL, fsync per line, chained by the previous line's SHA-256."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        self.lock = threading.Lock()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _last_line(self) -> bytes | None:
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if not size:
                return None
            chunk = min(size, 1 << 16)
            while True:
                f.seek(size - chunk)
                data = f.read(chunk)
                body = data[:-1] if data.endswith(b"\n") else data
                if b"\n" in body or chunk == size:
                    return body.rsplit(b"\n", 1)[-1]
                chunk = min(size, chunk * 2)

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            # flock: another push writing the same ledger at once must not interleave or break the chain
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                last = self._last_line()
                line = {"format": LEDGER_FORMAT, **record, "recorded_utc": utc_now(),
                        "prev_sha256": hashlib.sha256(last).hexdigest() if last is not None else None}
                data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view):]
                os.fsync(self.fd)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        return line

    def close(self) -> None:
        os.close(self.fd)


def check_chain(path: str | os.PathLike[str]) -> list[str]:
    """Problems in a ledger's chain (empty when every line names its predecessor's hash)."""
    problems, prev = [], None
    for n, raw in enumerate(Path(path).read_bytes().splitlines(), 1):
        try:
            line = json.loads(raw)
        except ValueError:
            problems.append(f"line {n}: not JSON")
            prev = raw
            continue
        want = hashlib.sha256(prev).hexdigest() if prev is not None else None
        if line.get("prev_sha256") != want:
            problems.append(f"line {n}: prev_sha256 does not match line {n - 1}")
        prev = raw
    return problems


# ---------------------------------------------------------------------------------------------- tickets

class Tickets:
    """One S3 ticket per host; `delivery` says how it travels in the command's parameters."""

    def __init__(self, s3: Any, opts: PushOptions):
        self.s3, self.opts = s3, opts
        self.fetch_keys: dict[str, str] = {}

    def mint(self, host: str) -> dict[str, Any]:
        from agent.responder.ticket import object_key, s3_ticket

        if self.opts.readiness:
            key, size = object_key(self.opts.case, host, "readiness.txt").replace("/incoming/", "/readiness/", 1), 1
        else:
            key = object_key(self.opts.case, host, bundle_name(self.opts.memory, bool(self.opts.encrypt_to)))
            size = self.opts.size_hint
        return s3_ticket(self.s3, self.opts.bucket, key, size_hint=size, expires=self.opts.ticket_expires)

    def delivery(self, host: str, ticket: dict[str, Any], default: str) -> str:
        """The uploadTicket parameter: JSON text, b64:JSON, or fetch+<presigned GET of the ticket
        stored beside the evidence> (short-lived, deleted after the run: parameters are kept by SSM)."""
        text = json.dumps(ticket, separators=(",", ":"))
        how = self.opts.ticket_delivery
        if how == "auto":
            how = default if len(text) <= INLINE_TICKET_MAX else "fetch"
        if how == "inline":
            return text
        if how == "b64":
            return "b64:" + base64.b64encode(text.encode()).decode()
        key = ticket["destination"].split("/", 3)[3].replace("/incoming/", "/tickets/", 1)
        key = key.replace("/readiness/", "/tickets/", 1).rsplit("/", 1)[0] + "/ticket.json"
        self.s3.put_object(Bucket=self.opts.bucket, Key=key, Body=text.encode(), ContentType="application/json")
        self.fetch_keys[host] = key
        life = self.opts.timeout + self.opts.delivery_timeout + 300
        url = self.s3.generate_presigned_url("get_object", Params={"Bucket": self.opts.bucket, "Key": key},
                                             ExpiresIn=int(life))
        return "fetch+" + url

    def forget(self, host: str) -> str | None:
        """Delete the fetched copy of a host's ticket (its URLs are credentials)."""
        key = self.fetch_keys.pop(host, None)
        if key is None:
            return None
        try:
            self.s3.delete_object(Bucket=self.opts.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - SDK errors vary; the ledger names it
            return f"ticket copy s3://{self.opts.bucket}/{key} not deleted: {_error_text(exc)}"
        return None


def document_parameters(opts: PushOptions, ticket_param: str) -> dict[str, str]:
    """The push document's parameters (names of specs/push/aws-ssm-triagent.json; the Azure script
    reads the same names, timeLimit for executionTimeout). Empty values are left to the defaults."""
    params = {"binaryUrl": opts.binary_url, "binarySha256": opts.binary_sha256, "uploadTicket": ticket_param,
              "caseId": opts.case, "profile": opts.profile, "memory": "true" if opts.memory else "false",
              "encryptTo": opts.encrypt_to or "", "executionTimeout": str(opts.timeout)}
    if opts.max_duration:
        params["maxDuration"] = str(opts.max_duration)
    return {k: v for k, v in params.items() if v != ""}


def readiness_script(opts: PushOptions, ticket_param: str) -> list[str]:
    """A small sh script for AWS-RunShellScript: fetch the binary into an exec-able temporary
    directory (memory-backed first), refuse it unless its SHA-256 matches, run `readiness` with the
    host's ticket under the time limit, print its one line, remove what it fetched."""
    q = shlex.quote
    limit = max(30, opts.timeout - 30)
    flags = " --require-memory" if opts.memory else ""
    return [
        "#!/bin/sh",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH LC_ALL=C; umask 077",
        f"url={q(opts.binary_url)}; want={q(opts.binary_sha256.lower())}; ticket={q(ticket_param)}",
        "say() { printf '{\"status\":\"not-ready\",\"reasons\":[\"push: %s\"]}\\n' \"$1\"; exit 3; }",
        "work=''",
        "for d in /dev/shm /run /tmp /var/tmp; do",
        "  [ -d \"$d\" ] && [ -w \"$d\" ] || continue",
        "  work=$(mktemp -d \"$d/triagent-ready.XXXXXX\" 2>/dev/null) || { work=''; continue; }",
        "  printf '#!/bin/sh\\nexit 0\\n' >\"$work/x\" && chmod 700 \"$work/x\" && \"$work/x\" 2>/dev/null && break",
        "  rm -rf \"$work\"; work=''",
        "done",
        "[ -n \"$work\" ] || say 'no writable exec-able directory for the binary'",
        "trap 'cd / && rm -rf \"$work\"' EXIT",
        "cd \"$work\" && HOME=$work TMPDIR=$work && export HOME TMPDIR",
        "get() {",
        "  if command -v curl >/dev/null 2>&1; then",
        "    printf 'url = \"%s\"\\noutput = \"%s\"\\n' \"$1\" \"$2\" |",
        "      curl -fsS --retry 3 --connect-timeout 20 -K - 2>>err",
        "  elif command -v wget >/dev/null 2>&1; then wget -q -O \"$2\" \"$1\" 2>>err",
        "  else printf '%s' \"$1\" | python3 -c 'import shutil,sys,urllib.request as u",
        "shutil.copyfileobj(u.urlopen(sys.stdin.read(), timeout=60), open(sys.argv[1], \"wb\"))' \"$2\" 2>>err",
        "  fi",
        "}",
        "get \"$url\" triagent || say 'cannot fetch the binary'",
        "got=$( (sha256sum triagent || openssl dgst -sha256 triagent) 2>/dev/null | sed 's/.*= *//; s/ .*//')",
        "[ \"$got\" = \"$want\" ] || { rm -f triagent; say 'binary SHA-256 mismatch: not run'; }",
        "chmod 700 triagent",
        "case $ticket in",
        "  fetch+*) get \"${ticket#fetch+}\" ticket.json || say 'cannot fetch the ticket' ;;",
        "  b64:*) printf '%s' \"${ticket#b64:}\" | base64 -d >ticket.json || say 'bad b64 ticket' ;;",
        "  *) printf '%s\\n' \"$ticket\" >ticket.json ;;",
        "esac",
        f"if timeout 5 true 2>/dev/null; then t='timeout -k 5 {limit}'; else t=''; fi",
        f"$t ./triagent readiness --upload ticket.json{flags} </dev/null >out 2>>err",
        "rc=$?",
        "grep '^{' out | tail -n 1 | grep . || say \"the binary printed no readiness line (exit $rc)\"",
        "case $rc in 0|1|2|3) exit $rc ;; *) exit 3 ;; esac",
    ]


# ---------------------------------------------------------------------------------------------- channels

@dataclass
class Invocation:
    """What a channel reports for one host, in SSM's terms."""

    host: str
    command_id: str | None = None
    status: str = "Pending"
    status_details: str | None = None
    exit_code: int | None = None
    requested: str | None = None
    started: str | None = None
    ended: str | None = None
    stdout: str = ""
    stderr: str = ""
    errors: list[str] = field(default_factory=list)
    sent_parameters: dict[str, Any] = field(default_factory=dict)


class AwsSsm:
    name = "aws-ssm"
    default_delivery = "inline"

    def __init__(self, ssm: Any, ec2: Any, opts: PushOptions, hooks: Hooks):
        self.ssm, self.ec2, self.opts, self.hooks = ssm, ec2, opts, hooks
        self.document = opts.document or ("AWS-RunShellScript" if opts.readiness else None)
        if not self.document:
            raise PushError("--document-name is required (the SSM document made from specs/push/aws-ssm-triagent.json)")

    def targets_by_tag(self, key: str, value: str) -> list[str]:
        ids: list[str] = []
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{key}", "Values": [value]},
                     {"Name": "instance-state-name", "Values": ["running"]}])
        for page in pages:
            for reservation in page.get("Reservations", []):
                ids += [i["InstanceId"] for i in reservation.get("Instances", [])]
        return sorted(set(ids))

    def validate(self, host: str) -> None:
        if not _INSTANCE_ID.match(host):
            raise PushError(f"not an instance id: {host!r}")

    def check_document(self) -> None:
        """Refuse early when the named document lacks a parameter we send (a typo in --document-name
        would otherwise fail on every host)."""
        if self.opts.readiness:
            return
        try:
            doc = self.ssm.describe_document(Name=self.document)["Document"]
        except Exception as exc:  # noqa: BLE001 - no permission to describe is fine: SendCommand will say
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("InvalidDocument", "InvalidDocumentVersion"):
                raise PushError(f"SSM document {self.document!r} does not exist", EXIT_FATAL) from None
            return
        declared = {p.get("Name") for p in doc.get("Parameters") or []}
        missing = {"binaryUrl", "binarySha256", "uploadTicket"} - declared
        if declared and missing:
            raise PushError(f"SSM document {self.document!r} lacks parameters {sorted(missing)}: is it "
                            "specs/push/aws-ssm-triagent.json?", EXIT_FATAL)

    def send(self, host: str, ticket_param: str) -> Invocation:
        inv = Invocation(host)
        if self.opts.readiness:
            params: dict[str, list[str]] = {"commands": readiness_script(self.opts, ticket_param),
                                            "executionTimeout": [str(self.opts.timeout)]}
        else:
            params = {k: [v] for k, v in document_parameters(self.opts, ticket_param).items()}
        resp = self.ssm.send_command(
            InstanceIds=[host], DocumentName=self.document, Parameters=params,
            TimeoutSeconds=self.opts.delivery_timeout, MaxConcurrency=self.opts.max_concurrency,
            MaxErrors=self.opts.max_errors, CloudWatchOutputConfig={"CloudWatchOutputEnabled": False},
            Comment=f"triagent {'readiness' if self.opts.readiness else 'push'} {self.opts.case}"[:100])
        command = resp["Command"]
        inv.command_id = command["CommandId"]
        inv.requested = utc_text(command.get("RequestedDateTime")) or utc_now()
        return inv

    def _list_status(self, inv: Invocation) -> dict[str, Any] | None:
        """list_command_invocations knows invocations that never ran (get_command_invocation may not)."""
        try:
            found = self.ssm.list_command_invocations(CommandId=inv.command_id, InstanceId=inv.host, Details=True)
        except Exception:  # noqa: BLE001 - not every endpoint (moto) has it; polling goes on
            return None
        for item in found.get("CommandInvocations") or []:
            if item.get("Status") in TERMINAL:
                return item
        return None

    def follow(self, inv: Invocation) -> Invocation:
        deadline = time.monotonic() + self.opts.timeout + self.opts.delivery_timeout + self.opts.follow_grace
        delay = self.opts.poll_initial
        data: dict[str, Any] = {}
        while True:
            try:
                data = self.ssm.get_command_invocation(CommandId=inv.command_id, InstanceId=inv.host)
            except Exception as exc:  # noqa: BLE001 - InvocationDoesNotExist right after sending is normal
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code != "InvocationDoesNotExist":
                    inv.errors.append(f"get_command_invocation: {_error_text(exc)}")
                data = self._list_status(inv) or {}
            if self.hooks.invocation_output is not None and data.get("Status") in TERMINAL:
                data = {**data, **(self.hooks.invocation_output(inv.host, inv.command_id or "", data) or {})}
            if data.get("Status") in TERMINAL:
                break
            if time.monotonic() + delay > deadline:
                inv.status = "FollowTimedOut"
                inv.errors.append("stopped following: the invocation outlived timeout + delivery timeout")
                return inv
            time.sleep(delay)
            delay = min(self.opts.poll_max, delay * 1.6)
        inv.status = data.get("Status", "Unknown")
        inv.status_details = data.get("StatusDetails")
        code = data.get("ResponseCode")
        inv.exit_code = int(code) if isinstance(code, int | str) and str(code).lstrip("-").isdigit() else None
        inv.started = utc_text(data.get("ExecutionStartDateTime"))
        inv.ended = utc_text(data.get("ExecutionEndDateTime"))
        inv.stdout = data.get("StandardOutputContent") or data.get("Output") or ""
        inv.stderr = data.get("StandardErrorContent") or ""
        return inv


def parse_run_command_message(message: str) -> tuple[str, str]:
    """Action Run Command's status message: "Enable succeeded: \\n[stdout]\\n...\\n[stderr]\\n..."."""
    out, err = message or "", ""
    if "[stdout]" in out:
        out = out.split("[stdout]", 1)[1]
    if "[stderr]" in out:
        out, err = out.split("[stderr]", 1)
    return out.strip("\n"), err.strip("\n")


class AzureRunCommand:
    """Action Run Command through azure-mgmt-compute. Covered without network: the request model
    (parameters by name: the script reads them as environment variables), target parsing, tag
    resolution over list_all(), and the result parsing, with a fake client. The real call
    (begin_run_command against ARM with DefaultAzureCredential) is not exercised by the tests."""

    name = "azure-run-command"
    default_delivery = "b64"

    def __init__(self, client: Any, opts: PushOptions, hooks: Hooks, script: list[str] | None = None):
        self.client, self.opts, self.hooks = client, opts, hooks
        self.script = script or (SPECS_PUSH / "azure-run-command.sh").read_text().splitlines()
        self.document = "RunShellScript"
        if opts.readiness:
            raise PushError("--readiness is implemented for the aws-ssm channel only")

    @staticmethod
    def make_client(subscription: str, endpoint_url: str | None = None) -> Any:
        from azure.identity import DefaultAzureCredential
        from azure.mgmt.compute import ComputeManagementClient

        kw = {"base_url": endpoint_url} if endpoint_url else {}
        return ComputeManagementClient(DefaultAzureCredential(), subscription, **kw)

    @staticmethod
    def split(target: str) -> tuple[str, str]:
        group, _, vm = target.partition("/")
        if not group or not vm or "/" in vm:
            raise PushError(f"Azure target {target!r} is not RESOURCE_GROUP/VM_NAME")
        return group, vm

    def targets_by_tag(self, key: str, value: str) -> list[str]:
        out = []
        for vm in self.client.virtual_machines.list_all():
            if (vm.tags or {}).get(key) == value:
                group = re.search(r"/resourceGroups/([^/]+)/", vm.id or "", re.I)
                if group:
                    out.append(f"{group.group(1)}/{vm.name}")
        return sorted(out)

    def validate(self, host: str) -> None:
        self.split(host)

    def check_document(self) -> None:
        return None

    def request(self, ticket_param: str) -> Any:
        from azure.mgmt.compute.models import RunCommandInput, RunCommandInputParameter

        params = document_parameters(self.opts, ticket_param)
        params["timeLimit"] = str(min(self.opts.timeout, AZURE_MAX_SECONDS))
        params.pop("executionTimeout", None)
        return RunCommandInput(command_id="RunShellScript", script=self.script,
                               parameters=[RunCommandInputParameter(name=k, value=v) for k, v in params.items()])

    def send(self, host: str, ticket_param: str) -> Invocation:
        group, vm = self.split(host)
        inv = Invocation(host, requested=utc_now())
        request = self.request(ticket_param)
        inv.sent_parameters = {"request": request}
        inv.started = utc_now()
        try:
            poller = self.client.virtual_machines.begin_run_command(group, vm, request)
            result = poller.result(timeout=min(self.opts.timeout, AZURE_MAX_SECONDS) + self.opts.follow_grace)
        except Exception as exc:  # noqa: BLE001 - ARM errors vary; the ledger names them
            inv.status, inv.ended = "Failed", utc_now()
            inv.errors.append(f"begin_run_command: {_error_text(exc)}")
            return inv
        inv.ended = utc_now()
        statuses = list(getattr(result, "value", None) or [])
        inv.stdout, inv.stderr = parse_run_command_message("\n".join(s.message or "" for s in statuses))
        # "succeeded" means the extension ran the script; its exit code shows only in the summary line
        ok = bool(statuses) and all("succeeded" in (s.code or "").lower() for s in statuses)
        inv.status = "Success" if ok else "Failed"
        inv.status_details = ", ".join(s.code or "" for s in statuses)[:200]
        return inv

    def follow(self, inv: Invocation) -> Invocation:
        # begin_run_command's poller already waited for the end; the seam still applies for tests
        if self.hooks.invocation_output is not None:
            extra = self.hooks.invocation_output(inv.host, inv.command_id or "", {}) or {}
            inv.stdout = extra.get("StandardOutputContent", inv.stdout)
            inv.status = extra.get("Status", inv.status)
        return inv


class GcpSsh:
    """`gcloud compute ssh [--tunnel-through-iap] VM --command "sudo -n sh -s -- ARGS" < gcp-ssh.sh`.
    Covered: the argv (run with a stand-in gcloud in the tests), stdin, exit code and output parsing.
    Not covered: OS Login, IAP, real gcloud. Targets are [PROJECT/]ZONE/VM (no SDK lookup by label)."""

    name = "gcp-ssh"
    default_delivery = "fetch"          # argv is visible in ps on both ends: only a short-lived URL goes there

    def __init__(self, opts: PushOptions, hooks: Hooks, gcloud: str = "gcloud", project: str | None = None,
                 iap: bool = False, script: bytes | None = None):
        self.opts, self.hooks, self.gcloud, self.project, self.iap = opts, hooks, gcloud, project, iap
        self.script = script if script is not None else (SPECS_PUSH / "gcp-ssh.sh").read_bytes()
        self.document = "gcp-ssh.sh"
        if opts.readiness:
            raise PushError("--readiness is implemented for the aws-ssm channel only")

    def targets_by_tag(self, key: str, value: str) -> list[str]:
        raise PushError("--tag is not supported for gcp-ssh: give --instance-ids ZONE/VM,...")

    def validate(self, host: str) -> None:
        self.argv(host, "-")

    def check_document(self) -> None:
        return None

    def argv(self, host: str, ticket_param: str) -> list[str]:
        parts = host.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise PushError(f"GCP target {host!r} is not [PROJECT/]ZONE/VM")
        project = parts[0] if len(parts) == 3 else self.project
        zone, vm = parts[-2], parts[-1]
        o = self.opts
        positional = [o.binary_url, o.binary_sha256, ticket_param, o.case or "-", o.profile,
                      "true" if o.memory else "false", o.encrypt_to or "-", str(o.max_duration or 1800),
                      str(o.timeout)]
        argv = [self.gcloud, "compute", "ssh", vm, "--zone", zone, "--quiet"]
        if project:
            argv += ["--project", project]
        if self.iap:
            argv.append("--tunnel-through-iap")
        return argv + ["--command", "sudo -n sh -s -- " + " ".join(shlex.quote(p) for p in positional)]

    def send(self, host: str, ticket_param: str) -> Invocation:
        argv = self.argv(host, ticket_param)
        inv = Invocation(host, requested=utc_now(), started=utc_now())
        try:
            proc = subprocess.run(argv, input=self.script, capture_output=True,
                                  timeout=self.opts.timeout + self.opts.follow_grace)
        except (OSError, subprocess.TimeoutExpired) as exc:
            inv.status, inv.ended = "Failed", utc_now()
            inv.errors.append(f"gcloud: {_error_text(exc)}")
            return inv
        inv.ended = utc_now()
        inv.exit_code = proc.returncode
        inv.stdout = proc.stdout.decode("utf-8", "replace")[-24000:]
        inv.stderr = proc.stderr.decode("utf-8", "replace")[-8000:]
        inv.status = "Success" if proc.returncode == 0 else "Failed"
        return inv

    def follow(self, inv: Invocation) -> Invocation:
        if self.hooks.invocation_output is not None:
            extra = self.hooks.invocation_output(inv.host, "", {}) or {}
            inv.stdout = extra.get("StandardOutputContent", inv.stdout)
        return inv


# ---------------------------------------------------------------------------------------------- the run

@dataclass
class Fleet:
    total: int
    max_errors: int
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self) -> None:
        with self.lock:
            self.errors += 1

    def stopped(self) -> bool:
        with self.lock:
            return self.errors > self.max_errors


def _verify(ticket: dict[str, Any], reported: str | None, ca_bundle: str | None) -> dict[str, Any]:
    from agent.ship.upload import verify_remote

    try:
        return verify_remote(ticket, expected_sha256=reported, ca_bundle=ca_bundle)
    except Exception as exc:  # noqa: BLE001 - UploadError, requests errors: all become the ledger's error
        return {"error": f"read back: {_error_text(exc)}"}


def push_host(channel: Any, tickets: Tickets, host: str, opts: PushOptions, hooks: Hooks,
              fleet: Fleet) -> dict[str, Any]:
    """Everything for one host; returns its ledger record (never raises)."""
    record: dict[str, Any] = {"kind": "readiness" if opts.readiness else "collect", "channel": channel.name,
                              "case": opts.case, "host": host, "document": channel.document}
    errors: list[str] = []
    if fleet.stopped():
        return {**record, "status": "NotSent", "match": "no",
                "errors": [f"MaxErrors ({opts.max_errors}) exceeded: no command sent"]}
    try:
        ticket = tickets.mint(host)
        record["destination"] = ticket["destination"]
        if hooks.on_ticket is not None:
            hooks.on_ticket(host, ticket)
        inv = channel.send(host, tickets.delivery(host, ticket, channel.default_delivery))
    except Exception as exc:  # noqa: BLE001 - one host's failure must not stop the others
        fleet.failed()
        forgot = tickets.forget(host)
        return {**record, "status": "SendFailed", "match": "no",
                "errors": [f"send: {_error_text(exc)}"] + ([forgot] if forgot else [])}
    if inv.command_id:
        record.update(command_id=inv.command_id, invocation_id=f"{inv.command_id}/{host}")
    inv = channel.follow(inv)
    forgot = tickets.forget(host)
    errors += inv.errors + ([forgot] if forgot else [])
    summary = summary_line(inv.stdout) or {}
    if inv.exit_code is None and isinstance(summary.get("push"), dict) and "exit" in summary["push"]:
        inv.exit_code = summary["push"]["exit"]
    record.update(requested_utc=inv.requested, started_utc=inv.started, ended_utc=inv.ended, status=inv.status,
                  status_details=inv.status_details, exit_code=inv.exit_code)
    if inv.status != "Success":
        fleet.failed()
    if not summary:
        errors.append("no summary line in the invocation's output" +
                      (f" (stderr: {_scrub(inv.stderr.strip()[-200:])})" if inv.stderr.strip() else ""))
    if opts.readiness:
        record.update(readiness=summary.get("status") or "unknown", reasons=summary.get("reasons") or [],
                      hostname=summary.get("host"), match="yes" if summary.get("status") == "ready" else "no")
        record["errors"] = errors
        return record
    reported = summary.get("sha256")
    record.update(collector_status=summary.get("status"), reported_sha256=reported,
                  reported_bytes=summary.get("bytes"))
    if summary.get("error"):
        errors.append(f"collector: {str(summary['error'])[:200]}")
    dest = ticket["destination"]
    uploads = [u for u in summary.get("uploads") or [] if u.get("to") == dest]
    if summary and not uploads:
        errors.append("the summary names no upload to this host's ticket")
    errors += [f"upload reported failed: {str(u.get('error'))[:200]}" for u in uploads if not u.get("ok")]
    back = _verify(ticket, reported, opts.ca_bundle)
    record.update(object_sha256=back.get("sha256"), object_bytes=back.get("bytes"))
    if back.get("error"):
        errors.append(back["error"])
    matched = bool(reported) and back.get("match") is True and all(u.get("ok") for u in uploads) and bool(uploads)
    if reported and back.get("sha256") and not back.get("match"):
        errors.append("the object read back differs from the SHA-256 the collector reported")
    record.update(match="yes" if matched else "no", errors=errors)
    return record


def run_fleet(channel: Any, tickets: Tickets, hosts: list[str], opts: PushOptions, ledger: Ledger,
              hooks: Hooks | None = None, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    hooks = hooks or Hooks()
    concurrency = fleet_limit(opts.max_concurrency, len(hosts), minimum=1)
    fleet = Fleet(len(hosts), fleet_limit(opts.max_errors, len(hosts), minimum=0))
    records: list[dict[str, Any]] = []

    def one(host: str) -> dict[str, Any]:
        record = push_host(channel, tickets, host, opts, hooks, fleet)
        line = ledger.append(record)
        if progress:
            progress(f"{host}: {record.get('status')} match={record.get('match')}"
                     + (f" ({record['errors'][0]})" if record.get("errors") else ""))
        return line

    from concurrent.futures import ThreadPoolExecutor  # here: `triagent --help` need not load it

    with ThreadPoolExecutor(max_workers=min(concurrency, len(hosts)) or 1) as pool:
        records = list(pool.map(one, hosts))
    return records


# ---------------------------------------------------------------------------------------------- CLI

def _timeout(text: str) -> int:
    value = int(text)
    if not 30 <= value <= 172800:
        raise argparse.ArgumentTypeError("between 30 and 172800 seconds (SSM's executionTimeout range)")
    return value


def add_push_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add `push` to an argparse subparsers object (agent/cli.py)."""
    from agent.responder.ticket import parse_duration, parse_size

    p = subparsers.add_parser("push", help="responder side: collect from a fleet (SSM Run Command, Azure Run "
                              "Command, gcloud ssh) with one ticket per host and a custody ledger")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--instance-ids", metavar="ID,ID", help="comma-separated targets: i-... (aws-ssm), "
                     "RG/VM (azure-run-command), [PROJECT/]ZONE/VM (gcp-ssh)")
    who.add_argument("--tag", metavar="KEY=VALUE", help="targets by tag (running EC2 instances; Azure VM tags)")
    p.add_argument("--channel", choices=CHANNELS, default="aws-ssm")
    p.add_argument("--document-name", metavar="NAME", help="SSM document made from specs/push/aws-ssm-triagent.json "
                   "(with --readiness default AWS-RunShellScript)")
    p.add_argument("--binary-url", required=True, metavar="URL", help="HTTPS URL the hosts fetch triagent from")
    p.add_argument("--binary-sha256", required=True, metavar="HEX", help="the binary's SHA-256 (build time)")
    p.add_argument("--bucket", required=True, help="S3 bucket for the bundles (one ticket per host)")
    p.add_argument("--case", required=True, help="case id: key layout <case>/incoming/<host>/... and caseId")
    p.add_argument("--profile", default="triage", help="collector profile (default triage)")
    p.add_argument("--memory", action="store_true", help="also take a memory image (readiness: require one)")
    p.add_argument("--encrypt-to", metavar="RECIPIENT", help="age recipient or SSH public key for the bundle")
    p.add_argument("--max-duration", type=int, metavar="SECONDS", help="collection time before a partial bundle")
    p.add_argument("--max-concurrency", default="10", metavar="N|N%", help="hosts in flight (default 10)")
    p.add_argument("--max-errors", default="1", metavar="N|N%",
                   help="failed hosts tolerated before no more commands are sent (default 1)")
    p.add_argument("--timeout", type=_timeout, default=3600, metavar="SECONDS",
                   help="the run's time limit (the document's executionTimeout; default 3600)")
    p.add_argument("--delivery-timeout", type=int, default=600, metavar="SECONDS",
                   help="SendCommand TimeoutSeconds: how long SSM may wait for a host to pick the command up")
    p.add_argument("--size-hint", type=parse_size, metavar="BYTES",
                   help="expected bundle size for the ticket (default 2G, 64G with --memory)")
    p.add_argument("--ticket-delivery", choices=("auto", "inline", "b64", "fetch"), default="auto",
                   help="how the ticket travels: in the parameters (inline JSON, b64:), or fetch+ a short-lived "
                   "URL of a copy stored beside the evidence and deleted after the run (auto: inline for SSM when "
                   "small, b64 for Azure, fetch for gcloud ssh and large tickets)")
    p.add_argument("--ticket-expires", type=parse_duration, default=timedelta(hours=12), metavar="DURATION")
    p.add_argument("--endpoint-url", metavar="URL", help="SSM endpoint (also EC2 unless --ec2-endpoint-url; "
                   "ARM base URL for azure-run-command)")
    p.add_argument("--ec2-endpoint-url", metavar="URL", help="EC2 endpoint for --tag")
    p.add_argument("--s3-endpoint-url", metavar="URL", help="S3 endpoint for the tickets and the read-back")
    p.add_argument("--region", help="AWS region")
    p.add_argument("--aws-profile", help="boto3 named profile for the responder's credentials")
    p.add_argument("--ca-bundle", metavar="FILE", help="also trust this CA when reading objects back")
    p.add_argument("--subscription", help="Azure subscription id (azure-run-command)")
    p.add_argument("--gcloud", default="gcloud", help="gcloud executable (gcp-ssh)")
    p.add_argument("--project", help="GCP project (gcp-ssh)")
    p.add_argument("--iap", action="store_true", help="gcloud compute ssh --tunnel-through-iap")
    p.add_argument("--poll-interval", type=float, default=2.0, metavar="SECONDS", help="first poll delay (backs off)")
    p.add_argument("--ledger", required=True, metavar="FILE.jsonl", help="custody ledger (append-only JSONL)")
    p.add_argument("--readiness", action="store_true",
                   help="run `triagent readiness` on each host instead and print a fleet table")
    return p


def _options(args: argparse.Namespace) -> PushOptions:
    sha = (args.binary_sha256 or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise PushError("--binary-sha256 must be 64 hex digits")
    if not re.match(r"^https?://[^'\s]+$", args.binary_url or ""):
        raise PushError("--binary-url must be an http(s) URL without quotes or spaces")
    if args.max_duration is not None and args.max_duration <= 0:
        raise PushError("--max-duration must be positive")
    if args.delivery_timeout < 30:
        raise PushError("--delivery-timeout is at least 30 seconds")
    if args.poll_interval <= 0:
        raise PushError("--poll-interval must be positive")
    fleet_limit(args.max_concurrency, 1, minimum=1)
    fleet_limit(args.max_errors, 1, minimum=0)
    return PushOptions(channel=args.channel, case=args.case, bucket=args.bucket, document=args.document_name,
                       binary_url=args.binary_url, binary_sha256=sha, profile=args.profile, memory=args.memory,
                       encrypt_to=args.encrypt_to, max_duration=args.max_duration, timeout=args.timeout,
                       delivery_timeout=args.delivery_timeout, max_concurrency=str(args.max_concurrency),
                       max_errors=str(args.max_errors),
                       size_hint=args.size_hint or ((64 << 30) if args.memory else (2 << 30)),
                       ticket_delivery=args.ticket_delivery, ticket_expires=args.ticket_expires,
                       readiness=args.readiness, poll_initial=args.poll_interval, ca_bundle=args.ca_bundle)


def _boto_session(args: argparse.Namespace) -> Any:
    import boto3

    return boto3.session.Session(profile_name=args.aws_profile, region_name=args.region or "us-east-1")


def make_channel(args: argparse.Namespace, opts: PushOptions, hooks: Hooks) -> Any:
    if opts.channel == "aws-ssm":
        session = _boto_session(args)
        ssm = session.client("ssm", endpoint_url=args.endpoint_url)
        ec2 = session.client("ec2", endpoint_url=args.ec2_endpoint_url or args.endpoint_url)
        return AwsSsm(ssm, ec2, opts, hooks)
    if opts.channel == "azure-run-command":
        if not args.subscription:
            raise PushError("--subscription is required for azure-run-command")
        return AzureRunCommand(AzureRunCommand.make_client(args.subscription, args.endpoint_url), opts, hooks)
    return GcpSsh(opts, hooks, gcloud=args.gcloud, project=args.project, iap=args.iap)


def resolve_targets(channel: Any, args: argparse.Namespace) -> list[str]:
    if args.tag:
        key, sep, value = args.tag.partition("=")
        if not sep or not key:
            raise PushError("--tag must be KEY=VALUE")
        hosts = channel.targets_by_tag(key, value)
    else:
        hosts = list(dict.fromkeys(h.strip() for h in args.instance_ids.split(",") if h.strip()))
    if not hosts:
        raise PushError("no targets (no instance ids given, or none running with that tag)", EXIT_FATAL)
    for host in hosts:
        channel.validate(host)
    return hosts


def run_push(args: argparse.Namespace, hooks: Hooks | None = None,
             progress: Callable[[str], None] | None = None) -> int:
    """Push to the fleet named by parsed arguments; append the ledger; print a JSON summary (or the
    readiness table). Returns the exit code (0, 1, 2, 3; never 194/168/169)."""
    hooks = hooks or Hooks()
    say = progress or (lambda line: print(f"triagent push: {line}", file=sys.stderr, flush=True))
    try:
        opts = _options(args)
        channel = make_channel(args, opts, hooks)
        from agent.responder.ticket import s3_client

        tickets = Tickets(s3_client(args.s3_endpoint_url, args.region), opts)
        hosts = resolve_targets(channel, args)
        channel.check_document()
        ledger = Ledger(args.ledger)
    except PushError as exc:
        print(f"triagent push: {exc}", file=sys.stderr)
        return exc.code
    except ImportError as exc:
        print(f"triagent push: {exc.name} is not installed (pip install 'triagent[push]')", file=sys.stderr)
        return EXIT_FATAL
    except OSError as exc:
        print(f"triagent push: cannot open the ledger {args.ledger!r}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FATAL
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, SDK errors before any host was touched
        print(f"triagent push: {_error_text(exc)}", file=sys.stderr)
        return EXIT_FATAL
    say(f"{len(hosts)} host(s) via {channel.name}, ledger {args.ledger}")
    try:
        records = run_fleet(channel, tickets, hosts, opts, ledger, hooks, say)
    finally:
        ledger.close()
    if opts.readiness:
        from agent.readiness import aggregate

        known = ("ready", "degraded", "not-ready")
        rows = [{"host": r["host"], "status": r.get("readiness") if r.get("readiness") in known else "unknown",
                 "reasons": r.get("reasons") or r.get("errors") or []} for r in records]
        sys.stdout.write(aggregate(rows))
        sys.stdout.flush()
        return EXIT_OK if all(r.get("readiness") == "ready" for r in records) else EXIT_FAILED
    # a matched but partial bundle (the run failed or was cut short) still makes the exit code 1
    good = sum(r.get("match") == "yes" and r.get("status") == "Success" for r in records)
    counts = {"hosts": len(records), "matched": sum(r.get("match") == "yes" for r in records),
              "mismatched": sum(bool(r.get("reported_sha256") and r.get("object_sha256")) and r.get("match") != "yes"
                                for r in records),
              "failed": len(records) - good, "not_sent": sum(r.get("status") == "NotSent" for r in records)}
    print(json.dumps({**counts, "ledger": args.ledger, "case": opts.case}, separators=(",", ":")), flush=True)
    return EXIT_OK if good == len(records) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triagent")
    add_push_arguments(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else EXIT_USAGE
    return run_push(args)


if __name__ == "__main__":
    raise SystemExit(main())
