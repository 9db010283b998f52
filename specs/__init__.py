"""Declarative data: artifacts, profiles, rules, tables, push documents (TOML, YAML, SQL...).

The only code here is how to find it: every module asks `specs.path(...)`, so the data is found one way
from a source tree, an installed package and the single binary (sys._MEIPASS/specs) alike.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def path(*parts: str) -> Path:
    """The path of a file or folder under specs/, e.g. ``specs.path("rules", "auth.yaml")``."""
    return ROOT.joinpath(*parts)
