"""`triagent profiles [FILE.toml]`: each profile and the artifacts it collects; with a file, that profile
checked as `collect --profile FILE.toml` would check it (exit 2 with the reason when it is invalid)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.commands import EXIT_COMPLETE, EXIT_USAGE


def add_arguments(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("profiles", help="list profiles and their artifacts")
    p.add_argument("file", nargs="?", metavar="FILE.toml",
                   help="check a profile file of your own (before taking it to a host) and show what it collects")
    return p


def run(args: argparse.Namespace) -> int:
    from agent.engine.plan import SpecError, load_profile, profile_names

    try:
        names = [args.file] if getattr(args, "file", None) else profile_names()
        profiles = {name: load_profile(name) for name in names}
    except SpecError as exc:
        print(f"triagent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out: dict[str, Any] = {}
    for name, profile in profiles.items():
        out[name] = {"description": profile.description, "max_duration_s": profile.max_duration_s,
                     "artifacts": [a.name for a in profile.artifacts]}
        if profile.source is not None:
            out[name]["file"] = {k: profile.source[k] for k in ("path", "sha256", "bytes")}
    print(json.dumps(out, indent=1))
    return EXIT_COMPLETE
