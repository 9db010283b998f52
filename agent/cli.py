"""triagent command line. stdout carries one short JSON summary (or the bundle with --output -);
everything else goes to stderr.

Exit codes (never 194, 168 or 169, which AWS SSM reads as reboot/step control):
  0  complete: every planned artifact ran (item-level errors are in the collection log)
  1  partial: a valid, sealed bundle, but something was cut short (timeout, signal, disk, failure)
     (verify: the bundle is damaged)
  2  usage error
  3  fatal: no bundle could be written
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import agent

EXIT_COMPLETE, EXIT_PARTIAL, EXIT_USAGE, EXIT_FATAL = 0, 1, 2, 3
SUMMARY_LIMIT = 2000


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep the message on stderr
        self.print_usage(sys.stderr)
        print(f"triagent: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = text.strip().lower().rstrip("ib").rstrip("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="triagent", description="Linux host triage: volatile state, histories, SSH keys "
                     "into one hashed, verifiable bundle.", epilog=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"triagent {agent.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("collect", help="collect evidence into a bundle")
    c.add_argument("--output", "-o", metavar="DIR|-",
                   help="directory for the bundle, or - to stream the bundle to stdout (nothing written to disk)")
    c.add_argument("--profile", default="triage", help="minimal | triage (default) | full (specs/profiles)")
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
    c.add_argument("--compress-level", type=int, default=6, choices=range(1, 10), metavar="1-9")
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
    c.add_argument("--verbose", "-v", action="store_true", help="progress on stderr")

    v = sub.add_parser("verify", help="check a bundle's integrity; names any altered member")
    v.add_argument("bundle", help="bundle file, or - for stdin")
    v.add_argument("--identity", action="append", default=[], metavar="KEY",
                   help="decrypt an age-encrypted bundle with this key (age or OpenSSH private key file)")
    v.add_argument("--public-key", "--pubkey", metavar="KEY",
                   help="the examiner's Ed25519 public key (ssh-ed25519 line, PEM, or a file): the manifest's "
                   "signature must be by it. Without it a signature is only checked to be consistent, which "
                   "anyone re-signing an altered bundle could also achieve")

    from agent.readiness import add_readiness_arguments
    from agent.responder.push import add_push_arguments
    from agent.responder.rank import add_rank_arguments
    from agent.responder.ticket import add_ticket_arguments

    add_ticket_arguments(sub)
    add_readiness_arguments(sub)
    add_push_arguments(sub)
    add_rank_arguments(sub)
    from agent.responder.report import add_report_arguments
    from agent.responder.timeline import add_timeline_arguments

    add_timeline_arguments(sub)
    add_report_arguments(sub)

    a = sub.add_parser("analyze", help="parsers over a bundle on the responder's side (volatility3, dissect.target)")
    a.add_argument("bundle", help="a bundle made by collect")
    a.add_argument("--output", "-o", required=True, metavar="DIR", help="where the analysis bundle goes")
    a.add_argument("--symbols", action="append", default=[], metavar="DIR",
                   help="volatility3 symbol folders (ISF .json.xz under linux/), chosen by exact banner")
    a.add_argument("--remote-isf-url", metavar="URL", help="a volatility3 ISF index to fetch symbols from")
    a.add_argument("--verbose", "-v", action="store_true")

    y = sub.add_parser("symbols", help="build a volatility3 symbol table for this kernel from its BTF and kallsyms")
    y.add_argument("--output", "-o", required=True, metavar="FILE", help="the ISF to write (.json.xz), or -")
    y.add_argument("--root", default="/", help="read /proc and /sys under this directory instead")

    sub.add_parser("profiles", help="list profiles and their artifacts")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, EXIT_USAGE) else EXIT_USAGE
    try:
        if args.command == "verify":
            return _verify(args)
        if args.command == "profiles":
            return _profiles()
        if args.command == "symbols":
            return _symbols(args)
        if args.command == "timeline":
            from agent.responder.timeline import run_timeline

            return run_timeline(args)
        if args.command == "report":
            from agent.responder.report import run_report

            return run_report(args)
        if args.command == "rank":
            from agent.responder.rank import run_rank

            return run_rank(args)
        if args.command == "push":
            from agent.responder.push import run_push

            return run_push(args)
        if args.command == "readiness":
            from agent.readiness import run_readiness

            return run_readiness(args)
        if args.command == "ticket":
            from agent.responder.ticket import run_ticket

            return run_ticket(args)
        if args.command == "analyze":
            from agent.analysis.analyze import analyze

            return analyze(args.bundle, args.output, args.symbols, args.remote_isf_url, args.verbose)
        return _collect(args, argv)
    except KeyboardInterrupt:
        print("triagent: interrupted", file=sys.stderr)
        return EXIT_FATAL


def _profiles() -> int:
    from agent.engine.plan import load_profile, profile_names

    out = {}
    for name in profile_names():
        profile = load_profile(name)
        out[name] = {"description": profile.description, "max_duration_s": profile.max_duration_s,
                     "artifacts": [a.name for a in profile.artifacts]}
    print(json.dumps(out, indent=1))
    return EXIT_COMPLETE


def _symbols(args: argparse.Namespace) -> int:
    from collectors.symbols.btf import BTFError
    from collectors.symbols.collector import OBTAIN, build
    from collectors.symbols.isf import NoBTF

    try:
        data, facts = build(os.path.abspath(args.root))
    except NoBTF as exc:
        print(json.dumps({"status": "no_btf", "reason": str(exc), "how": OBTAIN}))
        return EXIT_PARTIAL
    except (BTFError, OSError, ValueError) as exc:
        print(json.dumps({"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}))
        return EXIT_FATAL
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        with open(args.output, "xb") as out:
            out.write(data)
    facts.update(status="built", output=args.output)
    print(json.dumps(facts), file=sys.stderr if args.output == "-" else sys.stdout)
    return EXIT_COMPLETE


def _verify(args: argparse.Namespace) -> int:
    from agent.bundle.verify import verify

    try:
        identities = None
        if args.identity:
            from agent.bundle.age import load_identities

            identities = load_identities(args.identity)
    except (OSError, ValueError) as exc:
        print(f"triagent verify: cannot load --identity: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = verify(args.bundle, identities, args.public_key)
    print(json.dumps(result.summary(), ensure_ascii=False))
    for problem in result.problems:
        print(f"triagent verify: {problem}", file=sys.stderr)
    return EXIT_COMPLETE if result.ok else EXIT_PARTIAL


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


def _disk_options(args: argparse.Namespace) -> dict[str, Any]:
    given = {"disk": args.disk, "offset": args.disk_offset, "mount_point": args.disk_mount_point}
    return {k: v for k, v in given.items() if v is not None}


def _bundle_name(compress: str, host: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"triagent_{host}_{stamp}.tar" + (".gz" if compress == "gzip" else "")


def _collect(args: argparse.Namespace, argv: list[str]) -> int:
    from agent.bundle.writer import BundleWriter
    from agent.engine.custody import bundle_host, custody_record, evidence_identity, run_end
    from agent.engine.pipeline import Run, RunOptions
    from agent.engine.plan import SpecError, load_profile, load_secrets
    from agent.engine.redact import Redactor

    started_ns, started_mono_ns = time.time_ns(), time.monotonic_ns()
    # Signals first: a SIGTERM at any moment from here on still ends in a sealed, partial bundle.
    stop = threading.Event()
    early_reasons: list[str] = []
    current: dict[str, Run] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        reason = f"signal {signal.Signals(signum).name}"
        if "run" in current:
            current["run"].request_stop(reason)
        else:
            early_reasons.append(reason)
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    root = os.path.abspath(args.root)
    if not os.path.isdir(root):
        print(f"triagent: error: --root {args.root!r} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    if bool(args.output or args.upload) == bool(args.memory_output):
        print("triagent: error: give --output DIR|- and/or --upload TICKET (a bundle), or --memory-output PATH "
              "(only the image)", file=sys.stderr)
        return EXIT_USAGE
    try:
        from agent.bundle.age import parse_recipients

        recipients = parse_recipients(args.encrypt_to) if args.encrypt_to else None
    except (OSError, ValueError) as exc:
        print(f"triagent: error: --encrypt-to: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.expect_sha256:
        from agent.engine.custody import tool_identity

        tool = tool_identity()
        actual = tool.get("binary_sha256")
        if not tool.get("frozen") or actual != args.expect_sha256.strip().lower():
            print(f"triagent: fatal: --expect-sha256: this binary ({tool.get('binary') or 'running from source'}) "
                  f"has SHA-256 {actual}, not {args.expect_sha256}: refusing to run", file=sys.stderr)
            return EXIT_FATAL
    sign_key = None
    if args.sign_key:  # a bad key fails now, not after an hour of collection
        from agent.bundle.signing import load_private_key

        try:
            sign_key = load_private_key(args.sign_key)
        except (OSError, ValueError) as exc:
            print(f"triagent: error: --sign-key: {exc}", file=sys.stderr)
            return EXIT_USAGE
    split = lambda value: [v.strip() for v in value.split(",") if v.strip()] if value else None  # noqa: E731
    try:
        only = split(args.artifacts)
        if args.memory_output:
            only = ["memory"]
        else:
            extra = (["memory", "memory.symbols"] if args.memory else []) + (["disk.bodyfile"] if args.disk else [])
            if extra:
                only = (only or [a.name for a in load_profile(args.profile).artifacts]) + extra
        profile = load_profile(args.profile, only=only, exclude=split(args.exclude))
        secrets = load_secrets()
    except SpecError as exc:
        print(f"triagent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with_memory = any(a.name == "memory" for a in profile.artifacts)
    compress = args.compress or ("none" if with_memory else "gzip")
    memory_options: dict[str, Any] = {"format": args.memory_format, "source": args.memory_source,
                                      "memory_limit": args.memory_limit}
    if args.memory_source_path:
        memory_options["source_paths"] = {args.memory_source or "kcore": args.memory_source_path}
        memory_options["source"] = args.memory_source or "kcore"
    if args.iomem_path:
        memory_options["iomem_path"] = args.iomem_path
    priority = {} if args.no_nice else _lower_priority()
    if args.memory_output:
        from agent.engine.image_only import write_image

        return write_image(args.memory_output, memory_options, stop, early_reasons, args.max_disk_usage,
                           args.min_free, max_duration=args.max_duration or profile.max_duration_s)

    from agent.ship.shipment import Shipment, open_uploads

    streaming = args.output == "-"
    bundle_path = None
    local: Any = None
    summary_stream = sys.stdout
    # who the evidence is comes from the evidence (with --root, not from the machine running us)
    evidence = evidence_identity(root, args.read_remote_fs, max(1.0, args.read_timeout))
    if streaming:
        if sys.stdout.isatty():
            print("triagent: error: refusing to write a bundle to a terminal; redirect stdout", file=sys.stderr)
            return EXIT_USAGE
        local = sys.stdout.buffer
        summary_stream = sys.stderr
    elif args.output:
        try:
            os.makedirs(args.output, exist_ok=True)
            bundle_path = os.path.join(os.path.abspath(args.output),
                                       _bundle_name(compress, bundle_host(evidence, os.path.realpath(root) == "/"))
                                       + (".age" if recipients else ""))
            fd = os.open(bundle_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            print(f"triagent: fatal: cannot create the bundle in {args.output!r}: {exc.strerror or exc}",
                  file=sys.stderr)
            return EXIT_FATAL
        local = os.fdopen(fd, "wb", buffering=1 << 20)
    upload_log = (lambda line: print(f"triagent: {line}", file=sys.stderr, flush=True)) if args.verbose \
        else (lambda _line: None)
    uploads: list[Any] = []
    if args.upload:  # the HTTP stack is imported only when there is something to upload
        from agent.ship.upload import UploadError

        try:
            uploads = open_uploads(args.upload, args.ca_bundle, args.bearer_token_file, upload_log, args.proxy)
        except (UploadError, OSError, ValueError) as exc:
            print(f"triagent: fatal: cannot start the upload: {exc}", file=sys.stderr)
            if local is not None and not streaming:
                local.close()
                os.unlink(bundle_path)  # type: ignore[arg-type]
            return EXIT_FATAL
    out = Shipment(local, uploads, recipients, close_local=not streaming)

    writer = BundleWriter(out, compress, args.compress_level)
    options = RunOptions(root=root, include_secrets=args.include_secrets,
                         max_duration_s=args.max_duration or profile.max_duration_s,
                         min_free_bytes=args.min_free, output_dir=args.output if bundle_path else None,
                         max_disk_usage=args.max_disk_usage,
                         artifact_options={"memory": memory_options, "disk.bodyfile": _disk_options(args)},
                         verbose=args.verbose, read_remote_fs=args.read_remote_fs,
                         read_timeout_s=max(1.0, args.read_timeout))
    run = Run(profile, writer, Redactor(secrets, args.include_secrets), options, started_ns=started_ns, stop=stop)
    current["run"] = run
    if early_reasons:
        run.stop_reason = early_reasons[0]
    if args.verbose:
        run.progress = lambda line: print(f"triagent: {line}", file=sys.stderr, flush=True)

    try:
        run.collect_all()
        destination = {"kind": "stdout" if streaming else ("file" if bundle_path else "upload"), "path": bundle_path,
                       "uploads": [u.backend.destination for u in uploads], "encrypted_to": len(recipients or [])}
        custody = custody_record(vars(args), ["triagent"] + argv, root, run.live, started_ns, destination, evidence)
        if args.expect_sha256:
            custody["tool"]["expected_sha256_matched"] = True
        if run.cloud is not None:
            from collectors.volatile.cloud import identity_for_custody

            custody["cloud"] = identity_for_custody(run.cloud)
        custody.update(priority=priority, **run_end(started_ns, started_mono_ns),
                       profile=profile.name, include_secrets=args.include_secrets,
                       redactions=run.redactor.redactions)
        run.finish(custody, sign_key=sign_key, jsonld=True)
        shipped = out.close()
    except (BrokenPipeError, OSError) as exc:
        print(f"triagent: fatal: writing the bundle failed: {exc.strerror or exc}", file=sys.stderr)
        out.close(abort_reason=f"writing the bundle failed: {exc}")
        return EXIT_FATAL
    if bundle_path:
        with open(bundle_path + ".sha256", "w", encoding="utf-8") as side:
            side.write(f"{shipped['sha256']}  {os.path.basename(bundle_path)}\n")
    failed = [u for u in shipped["uploads"] if not u.get("ok")]
    for u in failed:
        print(f"triagent: upload to {u.get('destination')} failed: {u.get('error')}", file=sys.stderr)
    summary = _summary(run, bundle_path, shipped, custody)
    print(summary, file=summary_stream, flush=True)
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


if __name__ == "__main__":
    raise SystemExit(main())
