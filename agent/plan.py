"""Reads specs/ into typed objects, validated once at start: a bad spec is a usage error, not a
traceback in the middle of a collection."""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import specs as _specs_package
from collectors.base import Collector

SPECS_DIR = Path(_specs_package.__file__).parent


class SpecError(ValueError):
    pass


@dataclass
class ArtifactSpec:
    name: str
    collector: str
    order: int
    budget_s: float
    description: str = ""
    live_only: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Collector:
        module_name, _, func = self.collector.partition(":")
        return getattr(importlib.import_module(module_name), func)


@dataclass
class Profile:
    name: str
    description: str
    max_duration_s: float
    artifacts: list[ArtifactSpec]


@dataclass
class Secrets:
    env_name_patterns: list[str]
    env_value_patterns: list[str]
    withheld_paths: list[str]
    record_fields: dict[str, list[str]] = field(default_factory=dict)


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"{path.name}: {exc}") from None


def load_artifacts(specs_dir: Path = SPECS_DIR) -> dict[str, ArtifactSpec]:
    artifacts: dict[str, ArtifactSpec] = {}
    for path in sorted((specs_dir / "artifacts").glob("*.toml")):
        for raw in _read(path).get("artifact", []):
            try:
                spec = ArtifactSpec(**raw)
            except TypeError as exc:
                raise SpecError(f"{path.name}: artifact {raw.get('name')!r}: {exc}") from None
            if spec.name in artifacts:
                raise SpecError(f"{path.name}: artifact {spec.name!r} defined twice")
            if ":" not in spec.collector:
                raise SpecError(f"{path.name}: artifact {spec.name!r}: collector must be 'module:function'")
            artifacts[spec.name] = spec
    return artifacts


def profile_names(specs_dir: Path = SPECS_DIR) -> list[str]:
    return sorted(p.stem for p in (specs_dir / "profiles").glob("*.toml"))


def load_profile(name: str, specs_dir: Path = SPECS_DIR, only: list[str] | None = None,
                 exclude: list[str] | None = None) -> Profile:
    path = specs_dir / "profiles" / f"{name}.toml"
    if not path.is_file():
        raise SpecError(f"unknown profile {name!r} (have: {', '.join(profile_names(specs_dir))})")
    raw = _read(path)
    known = load_artifacts(specs_dir)
    names = list(only) if only else list(raw.get("artifacts", []))
    for wanted in names + list(exclude or []):
        if wanted not in known:
            raise SpecError(f"profile {name!r}: unknown artifact {wanted!r}")
    chosen = [known[n] for n in dict.fromkeys(names) if n not in (exclude or [])]
    for spec in chosen:
        spec.load()  # fail now, not mid-run, on a collector that does not exist
    chosen.sort(key=lambda s: s.order)  # order of volatility
    return Profile(name, raw.get("description", ""), float(raw.get("max_duration_s", 1800)), chosen)


def load_secrets(specs_dir: Path = SPECS_DIR) -> Secrets:
    raw = _read(specs_dir / "secrets.toml")
    return Secrets(raw.get("env_name_patterns", []), raw.get("env_value_patterns", []),
                   raw.get("withheld_paths", []), raw.get("record_fields", {}))
