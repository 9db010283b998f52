"""Reads specs/ into typed objects, validated once at start: a bad spec is a usage error, not a
traceback in the middle of a collection.

One schema for every spec file, ours and a responder's own (`collect --profile FILE.toml`): the keys of an
``[[artifact]]`` table (:data:`ARTIFACT_SCHEMA`) and of a profile (:data:`PROFILE_SCHEMA`) with their
types, and for option overrides the type the artifact declares. A responder's file may add artifacts of its
own, but only of the kinds in :data:`USER_COLLECTORS` (raw copies of paths and globs, with caps): they go
through the same evidence reader and redaction gate as ours, and no key of a profile turns secrets on."""

from __future__ import annotations

import hashlib
import importlib
import os
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
    # a responder's profile file: {path, bytes, sha256, artifacts it declares, extends} for custody
    source: dict[str, Any] | None = None


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


# ---- the schema: key -> (accepted types, required) ------------------------------------------------

_NUMBER = (int, float)
ARTIFACT_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True), "collector": ((str,), True), "order": ((int,), True), "budget_s": (_NUMBER, True),
    "description": ((str,), False), "live_only": ((bool,), False), "options": ((dict,), False),
    "streams": ((list,), False),
}
PROFILE_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "description": ((str,), False), "max_duration_s": (_NUMBER, False), "artifacts": ((list,), False),
    "options": ((dict,), False),
    # a profile may start from another one (its artifacts, then these; its options, then these) and
    # declare artifacts of its own: what a responder's file does, and ours may too
    "extends": ((str,), False), "artifact": ((list,), False),
}
_ARTIFACT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.IGNORECASE)

# The artifacts a responder's profile file may declare: a collector and the options it reads, each with
# its type (a tuple of strings: one of them). Raw copies of paths and globs only: the copier asks the
# evidence reader for every path (confined to the root, bounded in time and size) and every byte passes
# the redaction gate before the sink; secret files stay withheld unless --include-secrets is on the
# command line, which no profile key can set.
USER_COLLECTORS: dict[str, dict[str, Any]] = {
    "collectors.files.copy:collect": {"paths": list, "cap_bytes": int, "keep": ("head", "tail"),
                                      "max_files": int, "max_depth": int},
}
USER_PROFILE_MAX_BYTES = 1 << 20


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                        "dict": "a table", "list": "a list"}[t.__name__] for t in types)


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:  # TOML true is not an order or a budget
        return False
    return isinstance(value, types)


def check_table(raw: Any, schema: dict[str, tuple[tuple[type, ...], bool]], what: str) -> dict[str, Any]:
    """``raw`` against ``schema``: a table, no unknown key (a misspelling is an error, not a silently
    ignored setting), every required key, each of its type. Returns ``raw``."""
    if not isinstance(raw, dict):
        raise SpecError(f"{what} must be a table")
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise SpecError(f"{what}: unknown key(s) {unknown} (known: {', '.join(schema)})")
    for key, (types, required) in schema.items():
        if key not in raw:
            if required:
                raise SpecError(f"{what}: {key} is required")
        elif not _is(raw[key], types):
            raise SpecError(f"{what}: {key} must be {_type_name(types)}, not {raw[key]!r}")
    return raw


def _artifact_spec(raw: Any, where: str) -> ArtifactSpec:
    what = f"{where}: artifact {raw.get('name')!r}" if isinstance(raw, dict) else f"{where}: [[artifact]]"
    check_table(raw, ARTIFACT_SCHEMA, what)
    if not _ARTIFACT_NAME.fullmatch(raw["name"]):
        raise SpecError(f"{what}: name must be letters, digits, '.', '_' or '-' (at most 64)")
    if ":" not in raw["collector"]:
        raise SpecError(f"{what}: collector must be 'module:function'")
    if raw["budget_s"] <= 0:
        raise SpecError(f"{what}: budget_s must be more than 0")
    return ArtifactSpec(**raw)


def _check_option(value: Any, declared: Any, what: str) -> None:
    """An override keeps the type of the option as declared (an integer cap stays an integer)."""
    if isinstance(declared, tuple):  # one of these words
        if value not in declared:
            raise SpecError(f"{what} must be one of {list(declared)}, not {value!r}")
        return
    expected: tuple[type, ...] = declared if isinstance(declared, type) else type(declared)  # type: ignore
    if isinstance(expected, type):
        expected = _NUMBER if expected is float else (expected,)
    if not _is(value, expected):
        raise SpecError(f"{what} must be {_type_name(expected)}, not {value!r}")
    if expected == (int,) and value < 0:
        raise SpecError(f"{what} must not be negative")
    if expected == (list,) and any(isinstance(v, str) and "\0" in v for v in value):
        raise SpecError(f"{what}: a path holds a NUL")


def _user_artifact(raw: Any, where: str, builtin: dict[str, ArtifactSpec]) -> ArtifactSpec:
    """An artifact a responder's profile file declares: our schema, then the limits of USER_COLLECTORS."""
    spec = _artifact_spec(raw, where)
    what = f"{where}: artifact {spec.name!r}"
    if spec.name in builtin:
        raise SpecError(f"{what}: a built-in artifact has this name (give [options.{spec.name}] to change its "
                        "bounds, or another name)")
    allowed = USER_COLLECTORS.get(spec.collector)
    if allowed is None:
        raise SpecError(f"{what}: collector {spec.collector!r} cannot be used in a profile file (allowed: "
                        f"{', '.join(USER_COLLECTORS)})")
    if spec.streams:
        raise SpecError(f"{what}: a profile file's artifact declares no streams (it copies files)")
    unknown = sorted(set(spec.options) - set(allowed))
    if unknown:
        raise SpecError(f"{what}: unknown option(s) {unknown} (known: {', '.join(allowed)})")
    for key, value in spec.options.items():
        _check_option(value, allowed[key], f"{what}: option {key}")
    paths = spec.options.get("paths")
    if not paths:
        raise SpecError(f"{what}: options.paths must name at least one path or glob")
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise SpecError(f"{what}: options.paths: {path!r} is not an absolute path or glob (they are read "
                            "inside the evidence root)")
    return spec


def load_artifacts(specs_dir: Path = SPECS_DIR) -> dict[str, ArtifactSpec]:
    artifacts: dict[str, ArtifactSpec] = {}
    for path in sorted((specs_dir / "artifacts").glob("*.toml")):
        for raw in _read(path).get("artifact", []):
            spec = _artifact_spec(raw, path.name)
            if spec.name in artifacts:
                raise SpecError(f"{path.name}: artifact {spec.name!r} defined twice")
            artifacts[spec.name] = spec
    return artifacts


def profile_names(specs_dir: Path = SPECS_DIR) -> list[str]:
    return sorted(p.stem for p in (specs_dir / "profiles").glob("*.toml"))


def _apply_options(profile: str, overrides: Any, chosen: dict[str, ArtifactSpec],
                   known: dict[str, ArtifactSpec] | None = None) -> None:
    """A profile's `[options.<artifact>]` tables: the same artifact with other bounds in another profile
    (full hashes every PATH program, triage only those its package does not vouch for). Only options the
    artifact declares may be set, so a misspelt key is an error, not a silently ignored bound."""
    if not isinstance(overrides, dict):
        raise SpecError(f"profile {profile!r}: options must be [options.<artifact>] tables")
    for artifact, values in overrides.items():
        if not isinstance(values, dict):
            raise SpecError(f"profile {profile!r}: options.{artifact} must be a table")
        declared = (known or chosen).get(artifact)
        if declared is None:
            if known is not None:  # a misspelt artifact: its bounds would be silently ignored
                raise SpecError(f"profile {profile!r}: options.{artifact}: no such artifact")
            continue
        # checked even when --artifacts/--exclude leave the artifact out: the file is wrong either way
        unknown = set(values) - set(declared.options)
        if unknown:
            raise SpecError(f"profile {profile!r}: artifact {artifact!r} has no option(s) {sorted(unknown)}")
        for key, value in values.items():
            _check_option(value, declared.options[key], f"profile {profile!r}: option {artifact}.{key}")
        spec = chosen.get(artifact)
        if spec is not None:  # else left out by --artifacts/--exclude: nothing to adjust
            spec.options = {**spec.options, **values}


def is_profile_file(name: str) -> bool:
    """`--profile` names a file (a responder's own profile) rather than one of specs/profiles/."""
    return name.endswith(".toml") or "/" in name or os.sep in name


def _profile_raw(name: str, specs_dir: Path) -> dict[str, Any]:
    path = specs_dir / "profiles" / f"{name}.toml"
    if not _ARTIFACT_NAME.fullmatch(name) or not path.is_file():
        raise SpecError(f"unknown profile {name!r} (have: {', '.join(profile_names(specs_dir))})")
    return check_table(_read(path), PROFILE_SCHEMA, f"profile {name!r}")


def _read_profile_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A responder's profile file, read once: its table and what custody keeps of it (path, size, SHA-256
    of exactly the bytes parsed)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(USER_PROFILE_MAX_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"profile file {path!r}: {exc.strerror or exc}") from None
    if len(data) > USER_PROFILE_MAX_BYTES:
        raise SpecError(f"profile file {path!r}: larger than {USER_PROFILE_MAX_BYTES} bytes")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"profile file {path!r}: not valid TOML: {exc}") from None
    source = {"path": os.path.abspath(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return check_table(raw, PROFILE_SCHEMA, f"profile file {path!r}"), source


def load_profile(name: str, specs_dir: Path = SPECS_DIR, only: list[str] | None = None,
                 exclude: list[str] | None = None) -> Profile:
    """A profile of specs/profiles/ by name, or a responder's profile file by path (``is_profile_file``)."""
    known = load_artifacts(specs_dir)
    source = None
    if is_profile_file(name):
        raw, source = _read_profile_file(name)
        where = f"profile file {name!r}"
        own = [_user_artifact(a, where, known) for a in raw.get("artifact", [])]
        declared = [a.name for a in own]
        twice = sorted({n for n in declared if declared.count(n) > 1})
        if twice:
            raise SpecError(f"{where}: artifact(s) {twice} declared twice")
        known.update((a.name, a) for a in own)
        source["artifacts"] = declared
        source["options"] = raw.get("options", {})  # the bounds it gives built-in artifacts
        label = os.path.basename(name)
    else:
        raw, where, label = _profile_raw(name, specs_dir), f"profile {name!r}", name
        if raw.get("artifact"):
            own = [_artifact_spec(a, where) for a in raw["artifact"]]
            known.update((a.name, a) for a in own)
    base: dict[str, Any] = {}
    if raw.get("extends"):
        if is_profile_file(raw["extends"]):
            raise SpecError(f"{where}: extends names a profile of specs/profiles/, not a file")
        base = _profile_raw(raw["extends"], specs_dir)
        if base.get("extends") or base.get("artifact"):
            raise SpecError(f"{where}: extends {raw['extends']!r}, which extends or declares artifacts itself")
        if source is not None:
            source["extends"] = raw["extends"]
    for listed in (base.get("artifacts", []), raw.get("artifacts", [])):
        if not all(isinstance(n, str) for n in listed):
            raise SpecError(f"{where}: artifacts must be a list of artifact names")
    names = list(only) if only else list(base.get("artifacts", [])) + list(raw.get("artifacts", []))
    for wanted in names + list(exclude or []):
        if wanted not in known:
            raise SpecError(f"{where}: unknown artifact {wanted!r}")
    chosen = [known[n] for n in dict.fromkeys(names) if n not in (exclude or [])]
    by_name = {spec.name: spec for spec in chosen}
    if base:
        _apply_options(raw["extends"], base.get("options", {}), by_name, known)
    _apply_options(label, raw.get("options", {}), by_name, known)
    for spec in chosen:
        spec.load()  # fail now, not mid-run, on a collector that does not exist
    chosen.sort(key=lambda s: s.order)  # order of volatility
    duration = raw.get("max_duration_s", base.get("max_duration_s", 1800))
    if duration <= 0:
        raise SpecError(f"{where}: max_duration_s must be more than 0")
    return Profile(label, raw.get("description", base.get("description", "")), float(duration), chosen, source)


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
