"""`triagent collect`: plan, collect, seal one bundle (or, with --memory-output, only the memory image).

``run`` is a list of named steps; each step that can refuse raises :class:`_Refusal` with the exit code
and the line for stderr, so the order of the checks (and of their side effects) reads top to bottom."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import string
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.commands import EXIT_COMPLETE, EXIT_FATAL, EXIT_PARTIAL, EXIT_USAGE

SUMMARY_LIMIT = 2000
DEFAULT_NAME = "triagent_{hostname}_{utc}"
NAME_FIELDS = ("hostname", "utc", "case", "instance_id")


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = text.strip().lower().rstrip("ib").rstrip("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def add_arguments(sub: Any) -> argparse.ArgumentParser:
    c = sub.add_parser("collect", help="collect evidence into a bundle")
    c.add_argument("--output", "-o", metavar="DIR|-",
                   help="directory for the bundle (and its .sha256 and .log beside it), or - to stream the bundle "
                   "to stdout (nothing written to disk)")
    c.add_argument("--output-name", metavar="TEMPLATE", help="the bundle's file name in --output DIR, without "
                   "extension: fields {hostname} {utc} {case} {instance_id} (default " + DEFAULT_NAME + ")")
    c.add_argument("--profile", default="triage", metavar="NAME|FILE.toml",
                   help="minimal | triage (default) | full (specs/profiles), or a profile file of your own: more "
                   "paths, globs and caps, checked like ours; its SHA-256 goes into the custody record")
    c.add_argument("--artifacts", help="comma-separated artifact names instead of the profile's list")
    c.add_argument("--exclude", help="comma-separated artifact names to leave out")
    c.add_argument("--root", default="/", help="collect file artifacts from this mounted image or tree; "
                   "volatile artifacts are then reported as not live")
    c.add_argument("--case-id", help="case identifier for the custody record")
    c.add_argument("--examiner", help="examiner name for the custody record")
    c.add_argument("--notes", help="free text for the custody record")
    c.add_argument("--max-duration", type=float, metavar="SECONDS",
                   help="stop collecting after this long and seal a partial bundle (default: the profile's)")
    c.add_argument("--include-secrets", action="store_true",
                   help="also ship shadow hashes, private keys and secret-looking environment values")
    c.add_argument("--read-remote-fs", action="store_true",
                   help="also read FUSE and network filesystems mounted below the root (by default they are "
                        "listed, not read: their server can make a read wait for ever)")
    c.add_argument("--read-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="abandon a host read that makes no progress this long (default 30)")
    c.add_argument("--compress", choices=("gzip", "none"),
                   help="bundle compression (default: gzip; none when a memory image is taken, whose format "
                   "decides: LiME raw, AVML snappy)")
    # 1 by default: half the compressor's CPU on the suspect host for a bundle ~10 % bigger than at 6 (measured:
    # full 14.2 -> 15.6 MB, 1.1 s less CPU; triage 2.3 -> 2.7 MB)
    c.add_argument("--compress-level", type=int, default=1, choices=range(1, 10), metavar="1-9",
                   help="gzip level (default 1: least CPU on the host; 9: smallest bundle)")
    c.add_argument("--min-free", type=_size, default=256 << 20, metavar="BYTES",
                   help="stop (partial bundle) when the output filesystem has less free space (default 256M)")
    c.add_argument("--no-nice", action="store_true", help="do not lower our CPU and I/O priority")
    c.add_argument("--expect-sha256", metavar="HEX", help="refuse to run unless this binary's SHA-256 is HEX (the "
                   "value build/build.sh printed; for runs from trusted media)")
    c.add_argument("--sign-key", metavar="FILE", help="sign the manifest with this Ed25519 key (OpenSSH or PEM, "
                   "brought on trusted media); `verify --public-key` checks it")
    m = c.add_argument_group("memory")
    m.add_argument("--memory", action="store_true", help="also take a memory image (after processes, before files)")
    m.add_argument("--memory-format", choices=("lime", "avml"), default="lime",
                   help="lime (default) or avml (AVML's snappy-compressed format; zero blocks skipped)")
    m.add_argument("--memory-source", choices=("kcore", "crash", "mem"),
                   help="force a source (default: /proc/kcore, then /dev/crash, then /dev/mem)")
    m.add_argument("--memory-limit", type=_size, metavar="BYTES", help="refuse the image when RAM is larger")
    m.add_argument("--max-disk-usage", type=_size, metavar="BYTES",
                   help="the most this run may write to the output filesystem (checked before and during)")
    m.add_argument("--memory-output", metavar="PATH",
                   help="write only the memory image to PATH, or - for stdout (no bundle; summary on stderr)")
    m.add_argument("--memory-source-path", metavar="FILE",
                   help="read the --memory-source from this file instead (a saved kcore, a test file)")
    m.add_argument("--iomem-path", metavar="FILE", help="take the RAM ranges from this file instead of /proc/iomem")
    d = c.add_argument_group("raw filesystem (pytsk3)")
    d.add_argument("--disk", metavar="IMAGE", help="bodyfile and cross-view from this image or device "
                   "(default: the device holding the root filesystem)")
    d.add_argument("--disk-offset", type=_size, metavar="BYTES", help="filesystem offset inside --disk")
    d.add_argument("--disk-mount-point", metavar="DIR", help="where --disk is mounted, for the cross-view")
    u = c.add_argument_group("shipping")
    u.add_argument("--upload", action="append", default=[], metavar="TICKET|URL",
                   help="stream the bundle to this upload ticket (from `triagent ticket`) or presigned URL while it "
                   "is written; repeat for a copy elsewhere. Without --output nothing but one part in memory "
                   "exists on the host")
    u.add_argument("--ca-bundle", metavar="FILE", help="also trust this CA for uploads (TLS checks are always on)")
    u.add_argument("--proxy", metavar="URL", help="send uploads through this proxy (http://HOST:PORT; the TLS tunnel "
                   "is verified end to end), or `none` for a direct connection; wins over HTTPS_PROXY/NO_PROXY, "
                   "the only proxy variables read")
    u.add_argument("--bearer-token-file", metavar="FILE", help="Authorization: Bearer token for a plain HTTPS PUT")
    u.add_argument("--encrypt-to", action="append", default=[], metavar="RECIPIENT",
                   help="encrypt the bundle (age format) to an age1... recipient, an ssh-ed25519 / ssh-rsa public "
                   "key, or a file of them; repeatable")
    c.add_argument("--verbose", "-v", action="store_true", help="a line per artifact on stderr")
    from agent.engine.progress import add_options

    add_options(c)
    return c


class _Refusal(Exception):
    """A step that cannot go on: ``run`` prints ``message`` on stderr and exits with ``code``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class _Stopper:
    """Signals first: a SIGTERM at any moment from here on still ends in a sealed, partial bundle. Before
    the run exists a signal is remembered (and the memory-only path polls ``stop``)."""

    stop: threading.Event = field(default_factory=threading.Event)
    early_reasons: list[str] = field(default_factory=list)
    run: Any = None

    def install(self) -> _Stopper:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: Any) -> None:
        reason = f"signal {signal.Signals(signum).name}"
        if self.run is not None:
            self.run.request_stop(reason)
        else:
            self.early_reasons.append(reason)
            self.stop.set()


@dataclass
class _Output:
    """Where the bundle goes: ``local`` (a file we created, stdout, or None for upload only) and uploads."""

    local: Any = None
    bundle_path: str | None = None
    log: Any = None  # the plain-text log beside a bundle in --output DIR (agent.engine.progress.LineLog)
    streaming: bool = False
    summary_stream: Any = None
    uploads: list[Any] = field(default_factory=list)

    @property
    def destination(self) -> dict[str, Any]:
        return {"kind": "stdout" if self.streaming else ("file" if self.bundle_path else "upload"),
                "path": self.bundle_path}


def run(args: argparse.Namespace, argv: list[str]) -> int:
    started_ns, started_mono_ns = time.time_ns(), time.monotonic_ns()
    stopper = _Stopper().install()
    try:
        root = _check_arguments(args)
        recipients = _recipients(args)
        _check_own_binary(args)
        sign_key = _sign_key(args)
        profile, secrets = _plan(args)
        memory_options = _memory_options(args)
        priority = {} if args.no_nice else _lower_priority()
        if args.memory_output:
            from agent.engine.image_only import write_image

            return write_image(args.memory_output, memory_options, stopper.stop, stopper.early_reasons,
                               args.max_disk_usage, args.min_free,
                               max_duration=args.max_duration or profile.max_duration_s,
                               attach=lambda run: setattr(stopper, "run", run))
        from agent.engine.custody import evidence_identity

        # who the evidence is comes from the evidence (with --root, not from the machine running us)
        evidence = evidence_identity(root, args.read_remote_fs, max(1.0, args.read_timeout))
        output = _open_output(args, root, evidence, _compression(args, profile), recipients)
        _open_uploads(args, output)
    except _Refusal as refusal:
        print(refusal.message, file=sys.stderr)
        return refusal.code
    return _collect_and_seal(args, argv, root, profile, secrets, memory_options, priority, output, recipients,
                             sign_key, evidence, stopper, started_ns, started_mono_ns)


def _check_arguments(args: argparse.Namespace) -> str:
    """The evidence root, once the options that go together are known to."""
    root = os.path.abspath(args.root)
    if not os.path.isdir(root):
        raise _Refusal(EXIT_USAGE, f"triagent: error: --root {args.root!r} is not a directory")
    if bool(args.output or args.upload) == bool(args.memory_output):
        raise _Refusal(EXIT_USAGE, "triagent: error: give --output DIR|- and/or --upload TICKET (a bundle), or "
                       "--memory-output PATH (only the image)")
    if args.output_name is not None:
        if not args.output or args.output == "-":
            raise _Refusal(EXIT_USAGE, "triagent: error: --output-name names the bundle in --output DIR")
        try:
            output_name(args.output_name, {f: f for f in NAME_FIELDS})
        except ValueError as exc:
            raise _Refusal(EXIT_USAGE, f"triagent: error: --output-name: {exc}") from None
    return root


def _recipients(args: argparse.Namespace) -> list[Any] | None:
    """--encrypt-to; age (and the cryptography package) is imported only when asked for."""
    if not args.encrypt_to:
        return None
    try:
        from agent.bundle.age import parse_recipients

        return parse_recipients(args.encrypt_to)
    except (OSError, ValueError) as exc:
        raise _Refusal(EXIT_USAGE, f"triagent: error: --encrypt-to: {exc}") from None


def _check_own_binary(args: argparse.Namespace) -> None:
    """--expect-sha256: a run from trusted media refuses a binary that is not the one built."""
    if not args.expect_sha256:
        return
    from agent.engine.custody import tool_identity

    tool = tool_identity()
    actual = tool.get("binary_sha256")
    if not tool.get("frozen") or actual != args.expect_sha256.strip().lower():
        binary = tool.get("binary") or "running from source"
        raise _Refusal(EXIT_FATAL, f"triagent: fatal: --expect-sha256: this binary ({binary}) has SHA-256 {actual}, "
                       f"not {args.expect_sha256}: refusing to run")


def _sign_key(args: argparse.Namespace) -> Any:
    """A bad key fails now, not after an hour of collection."""
    if not args.sign_key:
        return None
    from agent.bundle.signing import load_private_key

    try:
        return load_private_key(args.sign_key)
    except (OSError, ValueError) as exc:
        raise _Refusal(EXIT_USAGE, f"triagent: error: --sign-key: {exc}") from None


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _plan(args: argparse.Namespace) -> tuple[Any, Any]:
    """The profile (with the artifacts --memory, --disk and --memory-output add or keep) and the secret rules."""
    from agent.engine.plan import SpecError, load_profile, load_secrets

    try:
        only = _split(args.artifacts)
        if args.memory_output:
            only = ["memory"]
        else:
            extra = (["memory", "memory.symbols"] if args.memory else []) + (["disk.bodyfile"] if args.disk else [])
            if extra:
                only = (only or [a.name for a in load_profile(args.profile).artifacts]) + extra
        return load_profile(args.profile, only=only, exclude=_split(args.exclude)), load_secrets()
    except SpecError as exc:
        raise _Refusal(EXIT_USAGE, f"triagent: error: {exc}") from None


def _compression(args: argparse.Namespace, profile: Any) -> str:
    with_memory = any(a.name == "memory" for a in profile.artifacts)
    return args.compress or ("none" if with_memory else "gzip")


def _memory_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"format": args.memory_format, "source": args.memory_source,
                               "memory_limit": args.memory_limit}
    if args.memory_source_path:
        options["source_paths"] = {args.memory_source or "kcore": args.memory_source_path}
        options["source"] = args.memory_source or "kcore"
    if args.iomem_path:
        options["iomem_path"] = args.iomem_path
    return options


def _disk_options(args: argparse.Namespace) -> dict[str, Any]:
    given = {"disk": args.disk, "offset": args.disk_offset, "mount_point": args.disk_mount_point}
    return {k: v for k, v in given.items() if v is not None}


def _lower_priority() -> dict[str, Any]:
    import psutil

    facts: dict[str, Any] = {}
    try:
        os.nice(10)
        facts["nice"] = os.nice(0)
    except OSError as exc:
        facts["nice_error"] = str(exc)
    try:
        psutil.Process().ionice(psutil.IOPRIO_CLASS_BE, 7)
        facts["ionice"] = "best-effort/7"
    except (OSError, psutil.Error, AttributeError) as exc:
        facts["ionice_error"] = str(exc)
    # Under memory pressure the kernel's OOM killer is to pick us, not one of the host's processes:
    # those are the evidence (and the workload we were asked not to disturb).
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as fh:
            fh.write("1000")
        facts["oom_score_adj"] = 1000
    except OSError as exc:
        facts["oom_score_adj_error"] = exc.strerror or str(exc)
    return facts


def _name_part(value: Any) -> str:
    """A value for a bundle name (the host's own hostname or instance id may be hostile): letters, digits,
    '.', '_', '-' only, no '..', at most 64 characters."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(value)).replace("..", "__")[:64] or "_"


def output_name(template: str, values: dict[str, Any]) -> str:
    """The bundle's file name (without extension) from ``template``: only the NAME_FIELDS, each value made
    safe by _name_part; ValueError for another field, a conversion or format spec, or a name that is empty,
    holds a path separator or '..', or is longer than 200 characters (the extensions come after it)."""
    out = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{template!r}: {exc}") from None
    for literal, field_name, spec, conversion in parsed:
        out.append(literal)
        if field_name is None:
            continue
        if field_name not in NAME_FIELDS or spec or conversion:
            raise ValueError(f"{template!r}: unknown field {{{field_name}}} (have: "
                             f"{', '.join('{' + f + '}' for f in NAME_FIELDS)})")
        out.append(_name_part(values[field_name]))
    name = "".join(out)
    if not name or "/" in name or os.sep in name or "\0" in name or ".." in name or name in (".",):
        raise ValueError(f"{template!r} gives {name!r}: a file name may not be empty, hold a path separator or '..'")
    if len(name) > 200:
        raise ValueError(f"{template!r} gives a name longer than 200 characters")
    return name


def _bundle_name(args: argparse.Namespace, compress: str, host: str, evidence: dict[str, Any]) -> str:
    values = {"hostname": host, "utc": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
              "case": args.case_id or "nocase", "instance_id": evidence.get("cloud_instance_id") or "noinstance"}
    return output_name(args.output_name or DEFAULT_NAME, values) + ".tar" + (".gz" if compress == "gzip" else "")


def _open_output(args: argparse.Namespace, root: str, evidence: dict[str, Any], compress: str,
                 recipients: list[Any] | None) -> _Output:
    """stdout (never a terminal), a new file in --output DIR (never overwriting one), or nothing (upload only)."""
    from agent.engine.custody import bundle_host

    output = _Output(streaming=args.output == "-", summary_stream=sys.stdout)
    if output.streaming:
        if sys.stdout.isatty():
            raise _Refusal(EXIT_USAGE, "triagent: error: refusing to write a bundle to a terminal; redirect stdout")
        output.local, output.summary_stream = sys.stdout.buffer, sys.stderr
    elif args.output:
        try:
            os.makedirs(args.output, exist_ok=True)
            output.bundle_path = os.path.join(
                os.path.abspath(args.output),
                _bundle_name(args, compress, bundle_host(evidence, os.path.realpath(root) == "/"), evidence)
                + (".age" if recipients else ""))
            fd = os.open(output.bundle_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _Refusal(EXIT_FATAL, f"triagent: fatal: cannot create the bundle in {args.output!r}: "
                           f"{exc.strerror or exc}") from None
        output.local = os.fdopen(fd, "wb", buffering=1 << 20)
        try:
            from agent.engine.progress import LineLog

            output.log = LineLog(output.bundle_path + ".log")
        except OSError as exc:  # the log is a comfort: without it the run goes on
            print(f"triagent: warning: no log beside the bundle: {exc.strerror or exc}", file=sys.stderr)
    return output


def _open_uploads(args: argparse.Namespace, output: _Output) -> None:
    """The HTTP stack is imported only when there is something to upload."""
    if not args.upload:
        return
    from agent.engine.progress import say
    from agent.ship.shipment import open_uploads
    from agent.ship.upload import UploadError

    log = (lambda line: say(f"triagent: {line}")) if args.verbose else (lambda _line: None)
    try:
        output.uploads = open_uploads(args.upload, args.ca_bundle, args.bearer_token_file, log, args.proxy)
    except (UploadError, OSError, ValueError) as exc:
        if output.local is not None and not output.streaming:
            output.local.close()
            os.unlink(output.bundle_path)  # type: ignore[arg-type]
            if output.log is not None:
                output.log.close()
                os.unlink(output.log.path)
        raise _Refusal(EXIT_FATAL, f"triagent: fatal: cannot start the upload: {exc}") from None


def _collect_and_seal(args: argparse.Namespace, argv: list[str], root: str, profile: Any, secrets: Any,
                      memory_options: dict[str, Any], priority: dict[str, Any], output: _Output,
                      recipients: list[Any] | None, sign_key: Any, evidence: dict[str, Any], stopper: _Stopper,
                      started_ns: int, started_mono_ns: int) -> int:
    from agent.bundle.writer import BundleWriter
    from agent.engine import progress
    from agent.ship.shipment import Shipment

    log = output.log
    previous = progress.listen(None)
    progress.listen(progress.tee(previous, log.listener if log else None))
    if log:
        log.line(f"triagent {_version()} collect: profile {profile.name} ({len(profile.artifacts)} artifacts"
                 + (f", file sha256 {profile.source['sha256']}" if profile.source else "") + "), bundle "
                 f"{os.path.basename(output.bundle_path or '')}, {len(output.uploads)} upload(s), pid {os.getpid()}")
    try:
        out = Shipment(output.local, output.uploads, recipients, close_local=not output.streaming)
        writer = BundleWriter(out, _compression(args, profile), args.compress_level)
        run = _make_run(args, root, profile, secrets, memory_options, writer, output, stopper, started_ns)
        try:
            run.collect_all()
            if log:
                log.line(f"sealing ({run.stop_reason or 'every artifact ran'})")
            custody = _custody(args, argv, root, run, output, recipients, evidence, priority, started_ns,
                               started_mono_ns)
            run.finish(custody, sign_key=sign_key, jsonld=True)
            shipped = out.close()
        except (BrokenPipeError, OSError) as exc:
            print(f"triagent: fatal: writing the bundle failed: {exc.strerror or exc}", file=sys.stderr)
            out.close(abort_reason=f"writing the bundle failed: {exc}")
            if log:
                log.line(f"fatal: writing the bundle failed ({type(exc).__name__})")
            return EXIT_FATAL
        code = _report(run, output, shipped, custody)
        if log:
            failed = sum(1 for u in shipped["uploads"] if not u.get("ok"))
            log.line(f"end: {run.status}, exit {code}, {shipped['bytes']} bytes, sha256 {shipped['sha256']}, "
                     f"{sum(1 for e in run.log if e['level'] == 'error')} errors, {failed} failed upload(s)")
        return code
    finally:
        progress.listen(previous)
        if log:
            log.close()


def _version() -> str:
    import agent

    return agent.__version__


CHILD_MEMORY = 64 << 20  # what one collector's child may take beside the parent (20-40 MiB measured here)
MEMORY_KEPT = 256 << 20  # never counted on for children: the host's own work


def _children_ahead(meminfo: str = "/proc/meminfo") -> int:
    """How many collectors' children may run ahead of the writer: up to 6 (every run_ahead artifact of the full
    profile), fewer when the host has little memory available (a 512 MiB VM: 1), 1 when that is unknown."""
    try:
        with open(meminfo, "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    return max(1, min(6, (available - MEMORY_KEPT) // CHILD_MEMORY))
    except (OSError, ValueError, IndexError):
        pass
    return 1


def _make_run(args: argparse.Namespace, root: str, profile: Any, secrets: Any, memory_options: dict[str, Any],
              writer: Any, output: _Output, stopper: _Stopper, started_ns: int) -> Any:
    from agent.engine.pipeline import Run, RunOptions
    from agent.engine.redact import Redactor

    options = RunOptions(root=root, include_secrets=args.include_secrets,
                         max_duration_s=args.max_duration or profile.max_duration_s,
                         min_free_bytes=args.min_free, output_dir=args.output if output.bundle_path else None,
                         max_disk_usage=args.max_disk_usage,
                         artifact_options={"memory": memory_options, "disk.bodyfile": _disk_options(args)},
                         verbose=args.verbose, read_remote_fs=args.read_remote_fs,
                         read_timeout_s=max(1.0, args.read_timeout),
                         # files-phase collectors in child processes, those marked run_ahead ahead of the writer
                         # (on 2 cores: triage 2.6 s -> 2.1 s, full 12 s -> 10 s here), as many as memory allows
                         processes=True, parallel=1 + _children_ahead())
    run = Run(profile, writer, Redactor(secrets, args.include_secrets), options, started_ns=started_ns,
              stop=stopper.stop)
    stopper.run = run
    if stopper.early_reasons:
        run.stop_reason = stopper.early_reasons[0]
    from agent.engine.progress import say

    def told(line: str) -> None:  # "<artifact>: <status> (<counts>, <seconds>)": names and numbers only
        if output.log is not None:
            output.log.line(f"artifact {line}")
        if args.verbose:
            say(f"triagent: {line}")

    run.progress = told
    return run


def _custody(args: argparse.Namespace, argv: list[str], root: str, run: Any, output: _Output,
             recipients: list[Any] | None, evidence: dict[str, Any], priority: dict[str, Any], started_ns: int,
             started_mono_ns: int) -> dict[str, Any]:
    from agent.engine.custody import custody_record, profile_file_record, run_end

    destination = dict(output.destination, uploads=[u.backend.destination for u in output.uploads],
                       encrypted_to=len(recipients or []))
    custody = custody_record(vars(args), ["triagent"] + argv, root, run.live, started_ns, destination, evidence)
    if args.expect_sha256:
        custody["tool"]["expected_sha256_matched"] = True
    custody.update(run.custody_facts)  # e.g. the cloud instance the host is, as its collector put it
    custody.update(priority=priority, **run_end(started_ns, started_mono_ns),
                   profile=run.profile.name, include_secrets=args.include_secrets,
                   redactions=run.redactor.redactions)
    if run.profile.source is not None:  # a responder's own profile file: exactly which one ran
        custody["profile_file"] = profile_file_record(run.profile)
    return custody


def _report(run: Any, output: _Output, shipped: dict[str, Any], custody: dict[str, Any]) -> int:
    """The bundle's .sha256 beside it, failed uploads and the one-line summary; the exit code."""
    if output.bundle_path:
        with open(output.bundle_path + ".sha256", "w", encoding="utf-8") as side:
            side.write(f"{shipped['sha256']}  {os.path.basename(output.bundle_path)}\n")
    failed = [u for u in shipped["uploads"] if not u.get("ok")]
    for u in failed:
        print(f"triagent: upload to {u.get('destination')} failed: {u.get('error')}", file=sys.stderr)
    print(_summary(run, output.bundle_path, shipped, custody), file=output.summary_stream, flush=True)
    if run.abandoned_reads:
        _release_stdio()
    return EXIT_COMPLETE if run.status == "complete" and not failed else EXIT_PARTIAL


def _release_stdio() -> None:
    """A thread abandoned in a host read (a FUSE server that never answers) keeps this process from
    ending until the kernel lets it go, and our descriptors with it. The bundle is sealed and the
    summary written: let whoever reads our output (SSM, ssh) see its end now."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass


def _summary(run: Any, bundle_path: str | None, shipped: dict[str, Any], custody: dict[str, Any]) -> str:
    results = run.results
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    problems = [f"{e['artifact']}: {e['message']}"[:160] for e in run.log if e["level"] == "error"]
    not_complete = [f"{r.name}: {r.status}" + (f" ({r.reason})" if r.reason else "")
                    for r in results if r.status not in ("complete", "not_live")]
    summary: dict[str, Any] = {
        "status": run.status, "bundle": bundle_path or ("stdout" if custody["output"]["kind"] == "stdout" else None),
        "sha256": shipped["sha256"], "bytes": shipped["bytes"],
        "profile": run.profile.name, "artifacts": by_status,
        "records": sum(r.records for r in results), "files": sum(r.files for r in results),
        "errors": sum(1 for e in run.log if e["level"] == "error"),
        "warnings": sum(1 for e in run.log if e["level"] == "warning"),
        "duration_s": round((time.time_ns() - run.started_ns) / 1e9, 2),
        "stop_reason": run.stop_reason, "incomplete": not_complete[:5], "first_errors": problems[:5],
        **run.highlights,
    }
    if shipped.get("encrypted"):
        summary.update(encrypted=shipped["encrypted"], plaintext_sha256=shipped["plaintext_sha256"])
    if shipped["uploads"]:
        summary["uploads"] = [{"to": u.get("destination"), "ok": u.get("ok"), "bytes": u.get("bytes_stored"),
                               **({"error": str(u.get("error"))[:200]} if not u.get("ok") else {})}
                              for u in shipped["uploads"]]
    tool = custody.get("tool", {})
    if tool.get("frozen") and tool.get("unpack_fs") not in ("tmpfs", "ramfs", None):
        summary["warning"] = (f"binary unpacked to disk ({tool.get('unpack_dir')}, {tool.get('unpack_fs')}; "
                              f"{tool.get('unpack_fallback') or 'no memory-backed directory'})")
    text = json.dumps(summary, ensure_ascii=False, separators=(",", ":"))
    while len(text) > SUMMARY_LIMIT and (summary["first_errors"] or summary["incomplete"]):
        (summary["first_errors"] or summary["incomplete"]).pop()
        text = json.dumps(summary, ensure_ascii=False, separators=(",", ":"))
    return text[:SUMMARY_LIMIT]
