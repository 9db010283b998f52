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

SPECS_DIR = _specs_package.path()  # found one way (specs.path), from a source tree and the single binary alike


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
    # its [[artifact.streams]] tables as written; load_streams() checks them and makes StreamSpecs
    streams: list[dict[str, Any]] = field(default_factory=list)

    def load(self) -> Collector:
        module_name, _, func = self.collector.partition(":")
        return getattr(importlib.import_module(module_name), func)


@dataclass(frozen=True)
class StreamSpec:
    """A record stream (``triagent/artifacts/<name>.jsonl``) as its producer declares it, beside the artifact
    in specs/artifacts/*.toml: the responder tools (timeline, rank, report, rules) read this instead of
    knowing each stream by heart. ``name`` ending in ``.*`` declares a family (``dissect.*``: every stream
    whose name starts with ``dissect.``)."""

    name: str
    artifact: str
    # record fields holding a time (ISO-8601 UTC text, epoch seconds, or epoch nanoseconds when the field
    # name ends in "_ns"), most telling first
    time: tuple[str, ...] = ()
    description: str = ""
    # time fields no record of a collection need carry (a kind of record that has no such time, a time
    # only some hosts keep): the fake-root test does not ask for them
    optional: tuple[str, ...] = ()
    # what each time means, in Timesketch's words (timestamp_desc); a field not named is labelled
    # "<stream> <field>"
    time_desc: dict[str, str] = field(default_factory=dict)
    fields: tuple[str, ...] = ()  # other record fields worth naming (documentation; not checked)
    # false when every time this stream holds is already another stream's event (the executables' file
    # times are the bodyfile's): the timeline then skips it instead of telling each moment twice
    timeline: bool = True

    @property
    def family(self) -> bool:
        return self.name.endswith(".*")

    def unit(self, time_field: str) -> str:
        """How a time field is read: "ns" for *_ns fields, else "auto" (ISO text or epoch seconds)."""
        return "ns" if time_field.endswith("_ns") else "auto"

    def label(self, time_field: str) -> str:
        return self.time_desc.get(time_field) or f"{self.name.removesuffix('.*')} {time_field}"


_STREAM_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*(?:\.\*)?", re.IGNORECASE)
_STREAM_KEYS = {"name", "time", "description", "optional", "time_desc", "fields", "timeline"}


def _stream_spec(raw: Any, artifact: str, where: str) -> StreamSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: artifact {artifact!r}: [[artifact.streams]] must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not _STREAM_NAME.fullmatch(name):
        raise SpecError(f"{where}: artifact {artifact!r}: stream name {name!r} is not a stream name")
    unknown = set(raw) - _STREAM_KEYS
    if unknown:
        raise SpecError(f"{where}: stream {name!r}: unknown key(s) {sorted(unknown)}")

    def strings(key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise SpecError(f"{where}: stream {name!r}: {key} must be a list of field names")
        return tuple(value)

    time, optional, fields = strings("time"), strings("optional"), strings("fields")
    if "time" not in raw:
        raise SpecError(f"{where}: stream {name!r}: time is required ([] when its records hold no time)")
    desc = raw.get("time_desc", {})
    if not isinstance(desc, dict) or not all(isinstance(v, str) for v in desc.values()):
        raise SpecError(f"{where}: stream {name!r}: time_desc must map time fields to labels")
    stray = (set(optional) | set(desc)) - set(time)
    if stray:
        raise SpecError(f"{where}: stream {name!r}: {sorted(stray)} named but not among its time fields")
    timeline = raw.get("timeline", True)
    if not isinstance(timeline, bool):
        raise SpecError(f"{where}: stream {name!r}: timeline must be true or false")
    return StreamSpec(name, artifact, time, str(raw.get("description", "")), optional, dict(desc), fields, timeline)


def load_streams(specs_dir: Path = SPECS_DIR) -> dict[str, StreamSpec]:
    """Every declared stream by name (families under their ``prefix.*`` name). A stream declared twice,
    by one artifact or two, is a spec error: two producers of one stream would interleave its records."""
    streams: dict[str, StreamSpec] = {}
    for path in sorted((specs_dir / "artifacts").glob("*.toml")):
        for raw in _read(path).get("artifact", []):
            artifact = str(raw.get("name"))
            declared = raw.get("streams", [])
            if not isinstance(declared, list):
                raise SpecError(f"{path.name}: artifact {artifact!r}: streams must be [[artifact.streams]] tables")
            for table in declared:
                spec = _stream_spec(table, artifact, path.name)
                if spec.name in streams:
                    raise SpecError(f"{path.name}: stream {spec.name!r} declared twice (by {artifact!r} and "
                                    f"{streams[spec.name].artifact!r})")
                streams[spec.name] = spec
    return streams


_STREAMS: dict[str, StreamSpec] | None = None


def stream_spec(name: str, streams: dict[str, StreamSpec] | None = None) -> StreamSpec | None:
    """The declaration of a stream: its own, else the family with the longest prefix it falls in
    (``dissect.linux.log.auth`` -> ``dissect.*``); None when undeclared. Without ``streams`` the specs
    are loaded once per process."""
    global _STREAMS
    if streams is None:
        if _STREAMS is None:
            _STREAMS = load_streams()
        streams = _STREAMS
    if name in streams:
        return streams[name]
    best = None
    for spec in streams.values():
        prefix = spec.name[:-1]  # "dissect.*" -> "dissect."
        if spec.family and name.startswith(prefix) and (best is None or len(prefix) > len(best.name) - 1):
            best = spec
    return best


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


def _apply_options(profile: str, overrides: Any, chosen: dict[str, ArtifactSpec]) -> None:
    """A profile's `[options.<artifact>]` tables: the same artifact with other bounds in another profile
    (full hashes every PATH program, triage only those its package does not vouch for). Only options the
    artifact declares may be set, so a misspelt key is an error, not a silently ignored bound."""
    if not isinstance(overrides, dict):
        raise SpecError(f"profile {profile!r}: options must be [options.<artifact>] tables")
    for artifact, values in overrides.items():
        if not isinstance(values, dict):
            raise SpecError(f"profile {profile!r}: options.{artifact} must be a table")
        spec = chosen.get(artifact)
        if spec is None:
            continue  # an artifact left out by --artifacts/--exclude: nothing to adjust
        unknown = set(values) - set(spec.options)
        if unknown:
            raise SpecError(f"profile {profile!r}: artifact {artifact!r} has no option(s) {sorted(unknown)}")
        spec.options = {**spec.options, **values}


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
    _apply_options(name, raw.get("options", {}), {spec.name: spec for spec in chosen})
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
