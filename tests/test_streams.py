"""Declared streams (specs/artifacts/*.toml, [[artifact.streams]]): every stream a collector writes is
declared beside its producer, with the fields that hold its times, and the responder tools read those
declarations instead of knowing each stream by heart.

(a) every stream in a bundle that the triage and full profiles write over the fake root (and the triage
profile over this live host) is declared, and so is every stream name a collector spells in the source;
(b) every declared time field is in at least one record of its stream in the fake-root bundles, or is
marked optional; (c) the timeline gives events for a declared stream it has no formatter for."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, run_triagent, summary_of

import specs
from agent.bundle.reader import BundleReader, Manifest, stream_members, stream_rows
from agent.bundle.writer import MANIFEST_NAME
from agent.engine.plan import SpecError, StreamSpec, load_artifacts, load_streams, stream_spec

STREAMS = load_streams()


def _owners() -> dict[str, str]:
    """artifact -> the specs/artifacts file that defines it (whose owner declares its streams)."""
    owners = {}
    for path in sorted(specs.path("artifacts").glob("*.toml")):
        for raw in tomllib.loads(path.read_text()).get("artifact", []):
            owners[raw["name"]] = f"specs/artifacts/{path.name}"
    return owners


def _undeclared_message(missing: dict[str, str], where: str) -> str:
    """Undeclared streams grouped by the specs file whose owner is to declare them."""
    owners = _owners()
    by_file: dict[str, list[str]] = {}
    for stream, artifact in sorted(missing.items()):
        by_file.setdefault(owners.get(artifact, f"(artifact {artifact!r}: no specs file)"), []).append(
            f"{stream} (artifact {artifact})")
    listed = "; ".join(f"{file}: {', '.join(names)}" for file, names in sorted(by_file.items()))
    return (f"{len(missing)} stream(s) {where} are not declared; add an [[artifact.streams]] table (name, time, "
            f"description) after the artifact in: {listed}")


# --- the loader -------------------------------------------------------------------------------------

def _specs_dir(tmp_path: Path, artifacts: str) -> Path:
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "a.toml").write_text(artifacts)
    return tmp_path


ARTIFACT = '[[artifact]]\nname = "{name}"\ncollector = "m:f"\norder = 1\nbudget_s = 1\n'


def test_a_stream_declared_twice_is_a_spec_error(tmp_path):
    text = (ARTIFACT.format(name="one") + '[[artifact.streams]]\nname = "s"\ntime = []\n'
            + ARTIFACT.format(name="two") + '[[artifact.streams]]\nname = "s"\ntime = ["t"]\n')
    with pytest.raises(SpecError, match="'s' declared twice"):
        load_streams(_specs_dir(tmp_path, text))


@pytest.mark.parametrize("table, error", [
    ('name = "s"\n', "time is required"),
    ('name = "s"\ntime = "t"\n', "time must be a list"),
    ('name = "s"\ntime = ["t"]\noptional = ["u"]\n', "not among its time fields"),
    ('name = "s"\ntime = []\ntimes = ["t"]\n', "unknown key"),
    ('name = "../s"\ntime = []\n', "is not a stream name"),
    ('name = "s"\ntime = []\ntimeline = "no"\n', "timeline must be true or false"),
])
def test_a_bad_declaration_is_a_spec_error(tmp_path, table, error):
    with pytest.raises(SpecError, match=error):
        load_streams(_specs_dir(tmp_path, ARTIFACT.format(name="one") + "[[artifact.streams]]\n" + table))


def test_families_match_by_prefix(tmp_path):
    text = (ARTIFACT.format(name="one") + '[[artifact.streams]]\nname = "d.*"\ntime = ["ts"]\n'
            '[[artifact.streams]]\nname = "d.x.*"\ntime = []\n[[artifact.streams]]\nname = "d.y"\ntime = []\n')
    streams = load_streams(_specs_dir(tmp_path, text))
    assert stream_spec("d.y", streams).name == "d.y"
    assert stream_spec("d.x.log", streams).name == "d.x.*"  # the longest prefix
    assert stream_spec("d.z", streams).name == "d.*"
    assert stream_spec("d", streams) is None and stream_spec("e.z", streams) is None


def test_every_declared_stream_names_an_artifact_that_exists():
    artifacts = load_artifacts()
    assert {s.artifact for s in STREAMS.values()} <= set(artifacts)


# --- (a) every stream a collector writes is declared --------------------------------------------------

# Record("name", ...), Record(f"prefix.{...}", ...), and a Stream's report_stream="name" (the record the
# pipeline writes about a written stream); streams whose name is a variable are found by running
_LITERAL = re.compile(r"""(?:Record\(\s*|report_stream\s*=\s*)(f?)["']([^"'{]+)(\{?)""")


def _spelled_streams() -> dict[str, str]:
    """Stream names spelled in collectors/ (a family for an f-string prefix) -> the collector module."""
    found = {}
    for path in sorted((REPO / "collectors").rglob("*.py")):
        for match in _LITERAL.finditer(path.read_text()):
            is_f, name, brace = match.groups()
            found[name + "*" if is_f and brace else name] = str(path.relative_to(REPO))
    return found


def _artifact_of_module(module_file: str) -> str:
    module = module_file.removesuffix(".py").replace("/", ".")
    names = [a.name for a in load_artifacts().values() if a.collector.split(":")[0] == module]
    return names[0] if names else f"? ({module_file})"


def test_every_stream_a_collector_spells_is_declared():
    spelled = _spelled_streams()
    assert {"processes", "histories", "dissect.*", "volatility.*", "memory_image"} <= set(spelled), \
        "the pattern finds them"
    missing = {name: _artifact_of_module(module) for name, module in spelled.items()
               if (STREAMS.get(name) if name.endswith("*") else stream_spec(name, STREAMS)) is None}
    assert not missing, _undeclared_message(missing, "spelled in collectors/")


def _bundle_streams(bundle: str) -> dict[str, tuple[str, int]]:
    """stream -> (artifact, records) from the bundle's manifest, read through the one reader."""
    out: dict[str, tuple[str, int]] = {}
    with BundleReader(bundle) as reader:
        for member in reader.accepted():
            if member.name != MANIFEST_NAME:
                continue
            entries = [e for e in Manifest(member.read_all(64 << 20)).entries() if isinstance(e, dict)]
            for name, stream in stream_members(str(e.get("name")) for e in entries):
                entry = next(e for e in entries if e.get("name") == name)
                artifact, records = out.get(stream, (str(entry.get("artifact")), 0))
                out[stream] = (artifact, records + int(entry.get("records") or 0))
    return out


@pytest.fixture(scope="module")
def fake_root_bundles(tmp_path_factory) -> list[str]:
    import fakeroot

    bundles = []
    for profile in ("triage", "full"):
        root = tmp_path_factory.mktemp(f"streams-root-{profile}")
        fakeroot.build(root)
        out = tmp_path_factory.mktemp(f"streams-out-{profile}")
        proc = run_triagent(["collect", "--root", str(root), "--output", str(out), "--profile", profile])
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        bundles.append(summary_of(proc)["bundle"])
    return bundles


@pytest.fixture(scope="module")
def live_bundle(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("streams-live")
    proc = run_triagent(["collect", "--output", str(out), "--profile", "triage"])
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return summary_of(proc)["bundle"]


def _assert_declared(bundles: list[str], where: str) -> dict[str, tuple[str, int]]:
    seen: dict[str, tuple[str, int]] = {}
    for bundle in bundles:
        for stream, (artifact, records) in _bundle_streams(bundle).items():
            seen[stream] = (artifact, seen.get(stream, (artifact, 0))[1] + records)
    assert {"processes", "histories", "ssh_keys"} & set(seen), sorted(seen)
    missing = {s: artifact for s, (artifact, _) in seen.items() if stream_spec(s, STREAMS) is None}
    assert not missing, _undeclared_message(missing, f"in the {where} bundles")
    wrong = {s: (artifact, stream_spec(s, STREAMS).artifact) for s, (artifact, _) in seen.items()
             if stream_spec(s, STREAMS).artifact != artifact}
    assert not wrong, f"streams declared by another artifact than the one writing them (writer, declarer): {wrong}"
    return seen


def test_every_stream_of_the_fake_root_bundles_is_declared(fake_root_bundles):
    _assert_declared(fake_root_bundles, "fake-root triage and full")


def test_every_stream_of_a_live_collection_is_declared(live_bundle):
    _assert_declared([live_bundle], "live triage")


# --- (b) every declared time field is found, or optional -----------------------------------------------

def test_every_declared_time_field_is_in_a_record_or_optional(fake_root_bundles):
    from agent.bundle.reader import BundleView

    absent: dict[str, list[str]] = {}
    checked = 0
    for bundle in fake_root_bundles:
        with BundleView(bundle) as view:
            present = {s for _, s in stream_members(view.getnames())}
            for stream in sorted(present):
                spec = stream_spec(stream, STREAMS)
                if spec is None or spec.family:  # undeclared: test (a); families' fields vary by plugin
                    continue
                wanted = [f for f in spec.time if f not in spec.optional]
                found = set()
                for _, _, record in stream_rows(view, stream):
                    found |= {f for f in wanted if record.get(f) not in (None, "", 0)}
                    if len(found) == len(wanted):
                        break
                checked += 1
                if set(wanted) - found:
                    absent.setdefault(f"{stream} ({spec.artifact})", []).extend(sorted(set(wanted) - found))
    assert checked >= 10
    assert not absent, (f"declared time fields in no record of the fake-root bundles (a wrong field name, or mark "
                        f"it optional): {absent}")


def test_consumers_name_only_declared_streams():
    """The streams rank's tables and checks, the report's host facts and the timeline's formatters read are
    declared: a renamed stream fails here, not silently in a fleet's ranking."""
    from agent.responder import rank, report, timeline

    named = {"rank": rank._TABLE_STREAMS | rank._CHECK_STREAMS, "report": set(report.FACT_STREAMS),
             "timeline": set(timeline.FORMATTERS)}
    missing = {tool: sorted(s for s in streams if stream_spec(s, STREAMS) is None) for tool, streams in named.items()}
    assert not any(missing.values()), missing
    # a formatter says a record well; its times still come from the declaration
    assert all(stream_spec(s, STREAMS).time for s in timeline.FORMATTERS), \
        [s for s in timeline.FORMATTERS if not stream_spec(s, STREAMS).time]


# --- (c) the timeline reads the declaration --------------------------------------------------------------

def test_timeline_gives_events_for_a_declared_stream_it_has_no_formatter_for(tmp_path):
    import hostile_bundles as hb

    from agent.responder.timeline import FORMATTERS, Stats, collect_events, declared_extractor

    # a stream nobody wrote a formatter for: every time field the declaration names becomes an event
    spec = StreamSpec("novel", "x", ("seen_utc", "file_mtime_ns"), time_desc={"seen_utc": "Seen"})
    events = list(declared_extractor(spec)({"path": "/x", "seen_utc": "2025-01-02T03:04:05Z",
                                            "file_mtime_ns": 1735787045 * 10**9}, "novel"))
    assert [(e[0], e[1], e[2]) for e in events] == [("2025-01-02T03:04:05Z", "auto", "Seen"),
                                                   (1735787045 * 10**9, "ns", "Content Modification Time")]
    assert events[0][3].startswith("novel: path=/x")
    assert declared_extractor(StreamSpec("quiet", "x", ())) is None

    # and over a bundle: a real declared stream with time fields and no formatter
    generic = sorted(name for name, s in STREAMS.items() if s.time and not s.family and name not in FORMATTERS)
    assert "journal" in generic and "shadow" in generic
    stream = "journal"
    fields = STREAMS[stream].time
    records = [{"kind": "event", "program": "sshd", **{f: f"2025-11-24T15:0{i}:00Z" for f in fields}}
               for i in range(3)]
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path = hb.write(tmp_path / "generic.tar.gz", [(f"triagent/artifacts/{stream}.jsonl", data)])
    stats = Stats()
    got = [e for e in collect_events(str(path), None, stats) if e.stream == stream]
    assert len(got) == 3 * len(fields), (got, stats.as_dict())
    assert {e.line for e in got} == {1, 2, 3}
    assert got[0].desc == STREAMS[stream].label(fields[0]) and "program=sshd" in got[0].message


def test_a_stream_the_bodyfile_already_tells_gives_no_timeline_events(tmp_path):
    """executables' file times are the bodyfile's events: declared `timeline = false`, the timeline skips
    them (a live host's 40 000 system binaries once crowded the bodyfile out of the event budget)."""
    import hostile_bundles as hb

    from agent.responder.timeline import Stats, collect_events

    assert STREAMS["executables"].timeline is False and STREAMS["journal"].timeline is True
    row = {"place": "system", "path": "/usr/bin/x", "ctime_utc": "2025-11-24T15:00:00Z",
           "mtime_utc": "2025-11-24T15:00:00Z"}
    path = hb.write(tmp_path / "execs.tar.gz", [("triagent/artifacts/executables.jsonl",
                                                  (json.dumps(row) + "\n").encode())])
    assert [e for e in collect_events(str(path), None, Stats()) if e.stream == "executables"] == []
