"""`triagent verify BUNDLE`: check a bundle's integrity; names any altered member."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.commands import EXIT_COMPLETE, EXIT_PARTIAL, EXIT_USAGE


def add_arguments(sub: Any) -> argparse.ArgumentParser:
    v = sub.add_parser("verify", help="check a bundle's integrity; names any altered member")
    v.add_argument("bundle", help="bundle file, or - for stdin")
    v.add_argument("--identity", action="append", default=[], metavar="KEY",
                   help="decrypt an age-encrypted bundle with this key (age or OpenSSH private key file)")
    v.add_argument("--public-key", "--pubkey", metavar="KEY",
                   help="the examiner's Ed25519 public key (ssh-ed25519 line, PEM, or a file): the manifest's "
                   "signature must be by it. Without it a signature is only checked to be consistent, which "
                   "anyone re-signing an altered bundle could also achieve")
    return v


def run(args: argparse.Namespace) -> int:
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
