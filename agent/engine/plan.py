"""Reads specs/ into typed objects, validated once at start: a bad spec is a usage error, not a
traceback in the middle of a collection."""

from __future__ import annotations

import importlib
import re
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
    withheld_paths_except: list[str] = field(default_factory=list)
    # value rules in priority order (ours first, then each [[import]]'s): gitleaks' rule tables, each
    # with "source" (who wrote it) and "syntax" ("python" for ours, "re2" for imported ones) added
    rules: list[dict[str, Any]] = field(default_factory=list)
    allowlists: list[dict[str, Any]] = field(default_factory=list)  # global: apply to every rule's secret
    imports: list[dict[str, Any]] = field(default_factory=list)  # {name, path, syntax, rules, disabled}


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


def _allowlists(raw: dict[str, Any], source: str, syntax: str) -> list[dict[str, Any]]:
    found = raw.get("allowlists", [])
    if isinstance(raw.get("allowlist"), dict):  # gitleaks' older spelling: one global table
        found = [raw["allowlist"], *found]
    return [dict(a, source=source, syntax=syntax) for a in found]


def load_secrets(specs_dir: Path = SPECS_DIR) -> Secrets:
    """secrets.toml and the rule sets it imports (paths relative to specs/). Our own rules must
    compile (a bad one is a spec error); an imported rule that cannot be converted is dropped and
    counted by agent.engine.redact, so that a newer upstream file degrades instead of stopping a run."""
    path = specs_dir / "secrets.toml"
    raw = _read(path)
    rules: list[dict[str, Any]] = []
    for rule in raw.get("rules", []):
        if not isinstance(rule, dict) or not rule.get("id") or not rule.get("regex"):
            raise SpecError(f"{path.name}: every [[rules]] needs an id and a regex: {rule!r}")
        try:
            re.compile(rule["regex"], re.ASCII)
        except re.error as exc:
            raise SpecError(f"{path.name}: rule {rule['id']!r}: {exc}") from None
        rules.append(dict(rule, source="triagent", syntax="python"))
    allowlists = _allowlists(raw, "triagent", "python")
    imports = []
    for imp in raw.get("import", []):
        name, syntax = imp.get("name") or imp.get("path", "?"), imp.get("syntax", "re2")
        if syntax not in ("re2", "python"):
            raise SpecError(f"{path.name}: import {name!r}: unknown syntax {syntax!r}")
        imported = _read(specs_dir / imp["path"])
        disabled = set(imp.get("disable", []))
        taken = [dict(r, source=name, syntax=syntax) for r in imported.get("rules", [])
                 if r.get("id") not in disabled]
        rules += taken
        allowlists += _allowlists(imported, name, syntax)
        imports.append({"name": name, "path": imp["path"], "syntax": syntax, "rules": len(taken),
                        "disabled": sorted(disabled)})
    seen: set[str] = set()
    for rule in rules:
        if rule["id"] in seen:
            raise SpecError(f"{path.name}: rule id {rule['id']!r} defined twice")
        seen.add(rule["id"])
    return Secrets(raw.get("env_name_patterns", []), raw.get("env_value_patterns", []),
                   raw.get("withheld_paths", []), raw.get("record_fields", {}),
                   raw.get("withheld_paths_except", []), rules, allowlists, imports)
