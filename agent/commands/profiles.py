"""`triagent profiles`: each profile and the artifacts it collects."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.commands import EXIT_COMPLETE


def add_arguments(sub: Any) -> argparse.ArgumentParser:
    return sub.add_parser("profiles", help="list profiles and their artifacts")


def run(args: argparse.Namespace) -> int:
    from agent.engine.plan import load_profile, profile_names

    out = {}
    for name in profile_names():
        profile = load_profile(name)
        out[name] = {"description": profile.description, "max_duration_s": profile.max_duration_s,
                     "artifacts": [a.name for a in profile.artifacts]}
    print(json.dumps(out, indent=1))
    return EXIT_COMPLETE
