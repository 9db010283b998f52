"""triagent command line. stdout carries one short JSON summary (or the bundle with --output -);
everything else goes to stderr.

Exit codes (never 194, 168 or 169, which AWS SSM reads as reboot/step control):
  0  complete: every planned artifact ran (item-level errors are in the collection log)
  1  partial: a valid, sealed bundle, but something was cut short (timeout, signal, disk, failure)
     (verify: the bundle is damaged)
  2  usage error
  3  fatal: no bundle could be written

@FILE anywhere on the command line reads more arguments from FILE (split like a shell line, # comments).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from dataclasses import dataclass

import agent
from agent.commands import EXIT_COMPLETE, EXIT_FATAL, EXIT_PARTIAL, EXIT_USAGE

__all__ = ["COMMANDS", "Command", "build_parser", "main", "output_file", "expand_argument_files", "EXIT_COMPLETE",
           "EXIT_PARTIAL", "EXIT_USAGE", "EXIT_FATAL"]


@dataclass(frozen=True)
class Command:
    """One subcommand. Its module is imported only when the command runs: `help` is repeated here so
    that `triagent --help` lists every command without importing any of them (tests/test_layout.py
    checks that it says what the module's own parser says)."""

    name: str
    help: str
    module: str
    add: str = "add_arguments"  # module.add(subparsers) -> the command's parser
    run: str = "run"  # module.run(args) -> exit code
    wants_argv: bool = False  # run(args, argv): the command line goes into the custody record
    # its parser has -q/--progress (agent.engine.progress.add_options): the CLI draws the progress line
    progress: bool = False


COMMANDS: tuple[Command, ...] = (
    Command("collect", "collect evidence into a bundle", "agent.commands.collect", wants_argv=True, progress=True),
    Command("verify", "check a bundle's integrity; names any altered member", "agent.commands.verify"),
    Command("ticket", "responder side: presigned upload ticket for collect --upload", "agent.responder.ticket",
            "add_ticket_arguments", "run_ticket"),
    Command("readiness", "preflight: is this host collectable? one JSON line; exit 0 ready, 1 degraded, "
            "3 not-ready", "agent.readiness", "add_readiness_arguments", "run_readiness"),
    Command("push", "responder side: collect from a fleet (SSM Run Command, Azure Run Command, gcloud ssh) with "
            "one ticket per host and a custody ledger", "agent.responder.push", "add_push_arguments", "run_push"),
    Command("rank", "rank many bundles: hosts by score, indicators shared across hosts (Parquet tables + DuckDB; "
            "needs the 'fleet' extra)", "agent.responder.rank", "add_rank_arguments", "run_rank"),
    Command("timeline", "every timestamped record of a bundle (and its analysis) as one UTC timeline: Timesketch "
            "JSONL, mactime bodyfile or CSV", "agent.responder.timeline", "add_timeline_arguments", "run_timeline"),
    Command("report", "one self-contained HTML page for the responder: verdict, findings with their evidence, "
            "host, custody, timeline around the findings, what is missing", "agent.responder.report",
            "add_report_arguments", "run_report"),
    Command("fleet", "responder side: analyze many bundles (a folder or s3://) on a Dask cluster, rows as "
            "Parquet tables for rank (needs the 'fleet' extra)", "agent.commands.fleet"),
    Command("analyze", "parsers over a bundle on the responder's side (volatility3, dissect.target)",
            "agent.commands.analyze", progress=True),
    Command("symbols", "build a volatility3 symbol table for this kernel from its BTF and kallsyms",
            "agent.commands.symbols"),
    Command("profiles", "list profiles and their artifacts", "agent.commands.profiles"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep the message on stderr
        self.print_usage(sys.stderr)
        print(f"triagent: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        """An @FILE line is split as a shell would (`--output /var/tmp/ir` on one line, quotes for spaces)
        and a # starts a comment; argparse's default, one argument per line, makes files hard to read."""
        return shlex.split(arg_line, comments=True)


def _root_parser() -> _Parser:
    # @FILE: argparse's own argument files (fromfile_prefix_chars), for every command
    return _Parser(prog="triagent", description="Linux host triage: volatile state, histories, SSH keys "
                   "into one hashed, verifiable bundle.", epilog=__doc__, fromfile_prefix_chars="@",
                   formatter_class=argparse.RawDescriptionHelpFormatter)


def expand_argument_files(argv: list[str]) -> list[str]:
    """The command line with each @FILE replaced by the words of FILE (nested files too), read by argparse
    itself, so that the command is found in a file and the custody record holds what really ran. A file
    that cannot be read is a usage error (exit 2), as argparse makes it."""
    if not any(arg.startswith("@") for arg in argv):
        return argv
    class Expander(_Parser):
        def error(self, message: str) -> None:
            print(f"triagent: error: argument file: {message}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE)

    # argparse has no public call that only expands; this method is what parse_args runs first (3.2+)
    return Expander(prog="triagent", fromfile_prefix_chars="@")._read_args_from_files(argv)


def _chosen(argv: list[str]) -> Command | None:
    """The command named on the command line: the root parser's own options (-h, --version) take no
    value, so it is the first word that is not an option."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return next((c for c in COMMANDS if c.name == word), None)


def build_parser(command: Command | None = None) -> argparse.ArgumentParser:
    """The root parser; only ``command`` gets its real parser (its module is imported), every other
    command is a name and its help line, enough for `--help` and for naming the choices."""
    parser = _root_parser()
    parser.add_argument("--version", action="version", version=f"triagent {agent.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for entry in COMMANDS:
        if entry is command:
            getattr(importlib.import_module(entry.module), entry.add)(sub)
        else:
            sub.add_parser(entry.name, help=entry.help)
    return parser


def output_file(value: str | None, name: str) -> str | None:
    """-o has one meaning in every command: a directory, or - for a stream (None back: stdout). A command
    that writes one file names it ``name`` inside the directory (made when missing). For compatibility a
    path that is not a directory and does not end in '/' is still taken as the file itself, as symbols,
    timeline, report and ticket took -o before."""
    if value is None or value == "-":
        return None
    if value.endswith("/") or os.path.isdir(value):
        os.makedirs(value, exist_ok=True)
        return os.path.join(value, name)
    return value


def _return_freed_memory() -> None:
    """Ask glibc's malloc to serve blocks of 256 KiB and more with mmap, so that memory a collector frees
    (a package list, a heap of file entries) goes back to the system instead of staying in the arena:
    measured on the triage profile, peak RSS 121 MB -> ~90 MB (issue 16's goal is 100 MB). Any other libc,
    or none reachable: nothing changes."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-3, 256 << 10)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _return_freed_memory()
    try:
        argv = expand_argument_files(argv)
        command = _chosen(argv)
        args = build_parser(command).parse_args(argv)
        if command is None or args.command != command.name:  # not expected: argparse reads the same word
            command = next(c for c in COMMANDS if c.name == args.command)
            args = build_parser(command).parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, EXIT_USAGE) else EXIT_USAGE
    from agent.engine import progress

    # a command that offers -q/--progress gets the progress line on a terminal's stderr (never on SSM's pipe)
    screen = progress.terminal(args.quiet, args.progress) if command.progress else None
    try:
        run = getattr(importlib.import_module(command.module), command.run)
        return run(args, argv) if command.wants_argv else run(args)
    except KeyboardInterrupt:
        print("triagent: interrupted", file=sys.stderr)
        return EXIT_FATAL
    finally:
        if screen is not None:
            screen.close()
            progress.listen(None)


if __name__ == "__main__":
    raise SystemExit(main())
