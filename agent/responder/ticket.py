"""Responder side: make an upload ticket (presigned/SAS/signed URLs) for agent/ship/upload.py.

The responder holds the cloud credentials; the suspect host only ever gets a ticket: URLs that
can write one fresh object (and read it back) until they expire. The vendor SDKs (boto3,
azure-storage-blob, google-cloud-storage) are imported only here and only when used: the collector
binary does not ship them (setup.cfg extra "ticket").

Ticket JSON ("format": "triagent-upload-ticket/1"), one of these kinds:
  s3-put        url, max_bytes, headers.put
  s3-multipart  upload_id, part_size, part_urls[], complete_url, abort_url, headers.part/complete
  azure-blob    blob_url (SAS: read, create, write)
  gcs-resumable start_url, headers.start (headers signed into the URL, sent with the POST)
  https-put     url, bearer_token_file
Common: destination (no secrets), created, expires, part_size, read_url (optional, GET for read-back).

The collector sends a presigned S3 URL only the optional headers it signed: a SigV4 URL names them in
X-Amz-SignedHeaders (headers.* not named there are left out); a SigV2 URL (AWSAccessKeyId/Signature/
Expires) does not, and its signature covers Content-MD5, Content-Type and every x-amz-* header, so those
are sent only when the ticket lists them in signed_headers.{put,part,complete} (botocore signs none of
them: it carries x-amz-* values in the query instead). Every URL must be https:// with no user info.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from agent.ship.limits import DEFAULT_PART_SIZE, GCS_QUANTUM, S3_MAX_PARTS, S3_MIN_PART, TICKET_FORMAT, MiB

HEADROOM = 1.5          # part URLs for 1.5x the size hint (+2): bundles outgrow their estimates
S3_MAX_SINGLE = 5 << 30
MAX_EXPIRY = timedelta(days=7)


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def parse_duration(text: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if not m:
        raise ValueError(f"bad duration {text!r} (e.g. 90s, 30m, 12h, 7d)")
    mult = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return timedelta(seconds=float(m.group(1)) * mult)


def _safe_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "unknown"


def object_key(case: str, host_id: str, name: str, now: datetime | None = None) -> str:
    """`<case>/incoming/<host id>/<UTC time>/<name>`; the time carries a random suffix so two runs
    never share a key (and the tickets also refuse to overwrite)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    return f"{_safe_part(case)}/incoming/{_safe_part(host_id)}/{stamp}/{_safe_part(name)}"


def plan_parts(size_hint: int, part_size: int | None = None) -> tuple[int, int]:
    """(part size, number of part URLs) for a stream of about size_hint bytes."""
    want = math.ceil(max(size_hint, 1) * HEADROOM)
    size = max(part_size or DEFAULT_PART_SIZE, S3_MIN_PART, math.ceil(want / (S3_MAX_PARTS - 2)))
    size = math.ceil(size / MiB) * MiB
    return size, min(S3_MAX_PARTS, math.ceil(want / size) + 2)


def _base(kind: str, destination: str, expires: timedelta, part_size: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"format": TICKET_FORMAT, "kind": kind, "destination": destination,
            "created": f"{now:%Y-%m-%dT%H:%M:%SZ}", "expires": f"{now + expires:%Y-%m-%dT%H:%M:%SZ}",
            "part_size": part_size}


# ---------------------------------------------------------------------------------------------- S3

def s3_client(endpoint_url: str | None = None, region: str | None = None, **kw: Any) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(signature_version="s3v4", s3={"addressing_style": "path" if endpoint_url else "auto"})
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1", config=cfg, **kw)


def s3_ticket(client: Any, bucket: str, key: str, *, size_hint: int, part_size: int | None = None,
              expires: timedelta = timedelta(hours=12), mode: str = "auto", retain_until: datetime | None = None,
              lock_mode: str = "COMPLIANCE", legal_hold: bool = False, read_url: bool = True,
              no_overwrite: bool = True) -> dict[str, Any]:
    """Presigned URLs for one new object. Object Lock settings are signed into the PUT (single) or set
    on CreateMultipartUpload (multipart), so the host cannot drop them."""
    secs = int(min(expires, MAX_EXPIRY).total_seconds())
    size, count = plan_parts(size_hint, part_size)
    if mode == "auto":
        mode = "single" if size_hint <= size else "multipart"
    lock: dict[str, Any] = {}
    if retain_until is not None:
        lock["ObjectLockMode"] = lock_mode
        lock["ObjectLockRetainUntilDate"] = retain_until
    if legal_hold:
        lock["ObjectLockLegalHoldStatus"] = "ON"
    dest = f"s3://{bucket}/{key}"
    put_headers = _s3_lock_headers(lock)
    if no_overwrite:
        put_headers["If-None-Match"] = "*"
    if mode == "single":
        size = max(size, min(S3_MAX_SINGLE, math.ceil(size_hint * HEADROOM / MiB) * MiB))
        params = {"Bucket": bucket, "Key": key, **lock, **({"IfNoneMatch": "*"} if no_overwrite else {})}
        ticket = _base("s3-put", dest, expires, size)
        ticket["max_bytes"] = size
        ticket["url"] = client.generate_presigned_url("put_object", Params=params, ExpiresIn=secs)
        ticket["headers"] = {"put": put_headers}
    else:
        created = client.create_multipart_upload(Bucket=bucket, Key=key, **lock)
        upload_id = created["UploadId"]
        common = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
        ticket = _base("s3-multipart", dest, expires, size)
        ticket["upload_id"] = upload_id
        ticket["part_urls"] = [client.generate_presigned_url("upload_part", Params={**common, "PartNumber": n},
                                                             ExpiresIn=secs) for n in range(1, count + 1)]
        complete = dict(common)
        if no_overwrite:
            complete["IfNoneMatch"] = "*"
        ticket["complete_url"] = client.generate_presigned_url("complete_multipart_upload", Params=complete,
                                                               ExpiresIn=secs)
        ticket["abort_url"] = client.generate_presigned_url("abort_multipart_upload", Params=common,
                                                            ExpiresIn=secs)
        ticket["headers"] = {"complete": {"If-None-Match": "*"} if no_overwrite else {}}
    if read_url:
        ticket["read_url"] = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                           ExpiresIn=secs)
    if lock:
        ticket["object_lock"] = {k: (v.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(v, datetime) else v)
                                 for k, v in lock.items()}
    return ticket


def _s3_lock_headers(lock: dict[str, Any]) -> dict[str, str]:
    """The x-amz-object-lock-* headers botocore signed into the URL: the uploader must send them."""
    out = {}
    if "ObjectLockMode" in lock:
        out["x-amz-object-lock-mode"] = lock["ObjectLockMode"]
        out["x-amz-object-lock-retain-until-date"] = lock["ObjectLockRetainUntilDate"].astimezone(UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    if "ObjectLockLegalHoldStatus" in lock:
        out["x-amz-object-lock-legal-hold"] = lock["ObjectLockLegalHoldStatus"]
    return out


# ---------------------------------------------------------------------------------------------- Azure

def azure_ticket(*, blob: str, container_url: str | None = None, account_url: str | None = None,
                 account_key: str | None = None, container: str | None = None, account_name: str | None = None,
                 expires: timedelta = timedelta(hours=12), part_size: int | None = None,
                 read_url: bool = True) -> dict[str, Any]:
    """A blob SAS (read, create, write: read lets the host list blocks it already sent) made from an
    account key, or a blob URL built under a container URL that already carries a SAS."""
    size = part_size or DEFAULT_PART_SIZE
    if container_url:
        base = urlsplit(container_url)
        if not base.query:
            raise ValueError("--container-url must carry a SAS (…?sv=…&sig=…)")
        path = base.path.rstrip("/") + "/" + quote(blob.lstrip("/"))
        url = urlunsplit((base.scheme, base.netloc, path, base.query, ""))
        dest = urlunsplit((base.scheme, base.netloc, path, "", ""))
    else:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        if not (account_url and account_key and container):
            raise ValueError("give --container-url, or --account-url, --account-key and --container")
        parts = urlsplit(account_url.rstrip("/"))
        name = account_name or (parts.path.strip("/").split("/")[0] if parts.path.strip("/")
                                else parts.hostname.split(".")[0])
        perms = BlobSasPermissions(read=True, create=True, write=True)
        sas = generate_blob_sas(name, container, blob, account_key=account_key, permission=perms,
                                expiry=datetime.now(UTC) + min(expires, MAX_EXPIRY),
                                start=datetime.now(UTC) - timedelta(minutes=5))
        path = parts.path.rstrip("/") + f"/{quote(container)}/{quote(blob.lstrip('/'))}"
        url = urlunsplit((parts.scheme, parts.netloc, path, sas, ""))
        dest = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    ticket = _base("azure-blob", dest, expires, size)
    ticket["blob_url"] = url
    if read_url:
        ticket["read_url"] = url
    return ticket


# ---------------------------------------------------------------------------------------------- GCS

def gcs_ticket(*, bucket: str, obj: str, service_account_file: str | None = None, endpoint: str | None = None,
               expires: timedelta = timedelta(hours=12), part_size: int | None = None,
               read_url: bool = True, no_overwrite: bool = True) -> dict[str, Any]:
    """V4 signed POST for a resumable upload; x-goog-if-generation-match: 0 (create only) is signed
    in, so the session can only make a new object."""
    from google.cloud import storage
    from google.oauth2 import service_account

    if service_account_file:
        creds = service_account.Credentials.from_service_account_file(service_account_file)
        project = creds.project_id
    else:
        import google.auth

        creds, project = google.auth.default()
    opts = {"api_endpoint": endpoint} if endpoint else None
    client = storage.Client(project=project or "triagent", credentials=creds, client_options=opts)
    blob = client.bucket(bucket).blob(obj)
    life = min(expires, MAX_EXPIRY)
    start_headers = {"x-goog-resumable": "start"}
    if no_overwrite:
        start_headers["x-goog-if-generation-match"] = "0"
    sign = {"version": "v4", "expiration": life, "credentials": creds}
    if endpoint:
        sign["api_access_endpoint"] = endpoint
    size = part_size or DEFAULT_PART_SIZE
    size = max(GCS_QUANTUM, size - size % GCS_QUANTUM)
    ticket = _base("gcs-resumable", f"gs://{bucket}/{obj}", expires, size)
    ticket["start_url"] = blob.generate_signed_url(method="POST", headers=start_headers, **sign)
    ticket["headers"] = {"start": start_headers}
    if read_url:
        ticket["read_url"] = blob.generate_signed_url(method="GET", **sign)
    return ticket


# ---------------------------------------------------------------------------------------------- CLI

def add_ticket_arguments(subparsers: Any) -> argparse.ArgumentParser:
    """Add `ticket {s3,azure,gcs}` to an argparse subparsers object (agent/cli.py)."""
    t = subparsers.add_parser("ticket", help="responder side: presigned upload ticket for collect --upload")
    sub = t.add_subparsers(dest="provider", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--expires", type=parse_duration, default=timedelta(hours=12), metavar="DURATION",
                       help="how long the URLs work (default 12h, at most 7d)")
        p.add_argument("--part-size", type=parse_size, metavar="BYTES", help="default 16M (grown for big hints)")
        p.add_argument("--case", help="case id, for the key layout <case>/incoming/<host>/<UTC time>/<name>")
        p.add_argument("--host-id", help="host id, for the key layout")
        p.add_argument("--name", default="triagent.tar.gz", help="object file name in the key layout")
        p.add_argument("--no-read-url", action="store_true",
                       help="leave the read-back URL out (the host then cannot read what it sent)")
        p.add_argument("--output", "-o", metavar="DIR|-", help="folder for the ticket (ticket_<host-id>_<UTC>.json, "
                       "mode 0600), or - for stdout (default); a path that is not a folder is still the file")

    s3 = sub.add_parser("s3", help="S3 presigned PUT or multipart")
    s3.add_argument("--bucket", required=True)
    s3.add_argument("--key", help="object key (default: the key layout from --case/--host-id/--name)")
    s3.add_argument("--size-hint", type=parse_size, default=8 << 30, metavar="BYTES",
                    help="expected bundle size (default 8G): sizes the part URL count")
    s3.add_argument("--mode", choices=("auto", "single", "multipart"), default="auto")
    s3.add_argument("--retain-until", help="Object Lock retain-until date (ISO 8601, UTC)")
    s3.add_argument("--lock-mode", choices=("COMPLIANCE", "GOVERNANCE"), default="COMPLIANCE")
    s3.add_argument("--legal-hold", action="store_true", help="Object Lock legal hold ON")
    s3.add_argument("--endpoint-url", help="S3-compatible endpoint (tests: s3rver)")
    s3.add_argument("--region")
    common(s3)

    az = sub.add_parser("azure", help="Azure blob SAS (Put Block / Put Block List)")
    az.add_argument("--container-url", help="container URL that carries a SAS (create, write, read)")
    az.add_argument("--account-url", help="account URL, with --account-key (tests: Azurite)")
    az.add_argument("--account-key", help="account key (prefer the AZURE_STORAGE_KEY environment variable)")
    az.add_argument("--account-name")
    az.add_argument("--container")
    az.add_argument("--blob", help="blob name (default: the key layout)")
    common(az)

    gs = sub.add_parser("gcs", help="GCS V4 signed resumable upload")
    gs.add_argument("--bucket", required=True)
    gs.add_argument("--object", dest="obj", help="object name (default: the key layout)")
    gs.add_argument("--service-account-file", help="service account JSON key that signs the URLs")
    gs.add_argument("--endpoint", help="API endpoint override (tests: fake-gcs-server)")
    common(gs)
    return t


def _key(args: argparse.Namespace, explicit: str | None) -> str:
    if explicit:
        return explicit
    if not (args.case and args.host_id):
        raise ValueError("give the object name, or --case and --host-id for the key layout")
    return object_key(args.case, args.host_id, args.name)


def run_ticket(args: argparse.Namespace) -> int:
    """Make the ticket named by parsed arguments. 0 ok, 2 usage error, 3 service/SDK failure."""
    try:
        if args.provider == "s3":
            retain = None
            if args.retain_until:
                retain = datetime.fromisoformat(args.retain_until.replace("Z", "+00:00"))
                retain = retain if retain.tzinfo else retain.replace(tzinfo=UTC)
            client = s3_client(args.endpoint_url, args.region)
            ticket = s3_ticket(client, args.bucket, _key(args, args.key), size_hint=args.size_hint,
                               part_size=args.part_size, expires=args.expires, mode=args.mode, retain_until=retain,
                               lock_mode=args.lock_mode, legal_hold=args.legal_hold,
                               read_url=not args.no_read_url)
        elif args.provider == "azure":
            ticket = azure_ticket(blob=_key(args, args.blob), container_url=args.container_url,
                                  account_url=args.account_url,
                                  account_key=args.account_key or os.environ.get("AZURE_STORAGE_KEY"),
                                  container=args.container, account_name=args.account_name, expires=args.expires,
                                  part_size=args.part_size, read_url=not args.no_read_url)
        else:
            ticket = gcs_ticket(bucket=args.bucket, obj=_key(args, args.obj),
                                service_account_file=args.service_account_file, endpoint=args.endpoint,
                                expires=args.expires, part_size=args.part_size, read_url=not args.no_read_url)
    except ValueError as exc:
        print(f"triagent ticket: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"triagent ticket: {exc.name} is not installed (pip install 'triagent[ticket]')", file=sys.stderr)
        return 3
    except Exception as exc:  # noqa: BLE001 - SDK errors vary; say which, without a traceback
        from agent.ship.upload import scrub

        print(f"triagent ticket: {type(exc).__name__}: {scrub(str(exc))[:500]}", file=sys.stderr)
        return 3
    text = json.dumps(ticket, indent=1) + "\n"
    args.output = _output(args)
    if args.output:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        print(json.dumps({"ticket": args.output, "kind": ticket["kind"], "destination": ticket["destination"],
                          "expires": ticket["expires"]}))
    else:
        sys.stdout.write(text)
    return 0


def _output(args: argparse.Namespace) -> str | None:
    """-o DIR|- (agent/cli.py's one meaning): the ticket file's path, or None for stdout."""
    import re
    import time

    from agent.cli import output_file

    host = re.sub(r"[^A-Za-z0-9_.-]", "_", args.host_id or "host").replace("..", "__")[:64]
    return output_file(args.output, f"ticket_{host}_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triagent")
    add_ticket_arguments(parser.add_subparsers(dest="command", required=True))
    return run_ticket(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
