"""CASE/UCO export of the custody record: a real bundle's graph must pass the CASE validator.

``case_validate`` comes with the test extra (PyPI ``case-utils``): skipped locally without it,
failed when CI=true. The other tests run anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest
from conftest import members, need, run_triagent, summary_of

from agent.engine.case import JSONLD_NAME, custody_jsonld, jsonld_bytes

# the CASE releases the current case-utils (0.18) ships; the newest first. From UCO 1.4 on, vocabulary
# values (hash method, action status) are plain xsd:string, no longer ...Vocab-typed literals.
CASE_VERSIONS = ("case-1.5.0", "case-1.4.0")
SHA256_EMPTY = hashlib.sha256(b"").hexdigest()


def _case_validate() -> str | None:
    # tests/run.sh runs the venv's python without activating the venv: look beside it first
    beside = Path(sys.executable).parent / "case_validate"
    return str(beside) if beside.exists() else shutil.which("case_validate")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("case-bundle")
    proc = run_triagent(["collect", "--profile", "minimal", "--output", str(out), "--case-id", "C-2026-17",
                         "--examiner", "Alice Example", "--notes", "triage for the CASE export test"])
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    content = members(summary_of(proc)["bundle"])
    return {"members": content, "custody": json.loads(content["triagent/custody.json"]),
            "manifest": json.loads(content["triagent/manifest.json"])}


def _nodes(graph: dict, kind: str) -> list[dict]:
    """Every node of a type, nested ones (facets, hashes) included."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            if value.get("@type") == kind:
                found.append(value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(graph["@graph"])
    return found


def _sha256_of(file_node: dict) -> list[str]:
    return [h["uco-types:hashValue"]["@value"] for facet in file_node["uco-core:hasFacet"]
            if facet["@type"] == "uco-observable:ContentDataFacet" for h in facet["uco-observable:hash"]
            if h["uco-types:hashMethod"] == "SHA256"]


def _edge_cases(custody: dict, manifest: dict) -> tuple[dict, dict]:
    """The same run with every optional branch taken: odd names, symlinks, incomplete copies, no examiner."""
    custody = dict(custody, examiner=None, case_id=None, notes=None, status="partial", stop_reason="interrupted",
                   host=dict(custody["host"], product_name="Standard PC", sys_vendor="QEMU",
                             cloud_instance_id="i-0123456789abcdef0",
                             product_uuid="0e5c2b9e-0000-4000-8000-1d2e3f4a5b6c",
                             os_release={"PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}),
                   # collected from a mounted image: the collecting machine is a device of its own
                   live=False, root="/mnt/image\udcff",
                   collector={"hostname": "forensic-ws", "machine": "x86_64", "machine_id": "ab" * 16,
                              "boot_id": "0e5c2b9e-0000-4000-8000-aaaaaaaaaaaa"})
    extra = [
        {"name": "fs/$rootfs$/etc/odd\udcff name", "type": "symlink", "target": "/x\udcfe", "size": 0,
         "sha256": SHA256_EMPTY, "mtime_ns": 1, "atime_ns": 2, "ctime_ns": 3, "source": "/etc/odd\udcff name"},
        {"name": "fs/$rootfs$/var/log/big", "type": "file", "size": 10, "sha256": "ab" * 32, "mtime_ns": 10**18,
         "incomplete": {"reason": "file shrank while being read", "zero_padded_from": 4},
         "source": "/var/log/big", "source_size": 12},
    ]
    return custody, dict(manifest, members=manifest["members"] + extra)


@pytest.mark.parametrize("case_version", CASE_VERSIONS)
@pytest.mark.parametrize("variant", ["bundle", "edge-cases"])
def test_case_validate_conforms(bundle, tmp_path, variant, case_version):
    validator = _case_validate()
    need(validator is not None, "case_validate not installed (pip install case-utils, in the test extra)")
    custody, manifest = bundle["custody"], bundle["manifest"]
    tool_sha256 = None
    if variant == "edge-cases":
        custody, manifest = _edge_cases(custody, manifest)
        tool_sha256 = "cd" * 32
    path = tmp_path / "custody.jsonld"
    path.write_bytes(jsonld_bytes(custody_jsonld(custody, manifest, tool_sha256)))
    proc = subprocess.run([validator, "--built-version", case_version, str(path)], capture_output=True, timeout=600)
    report = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert "Conforms: True" in report and proc.returncode == 0, report[-4000:]


def test_case_utils_is_current():
    """The validator that judges the graph is the release the test extra pins, and that release knows
    the CASE versions checked above (an older pin let a graph pass that the current release refuses)."""
    validator = _case_validate()
    need(validator is not None, "case_validate not installed (pip install case-utils, in the test extra)")
    from importlib.metadata import version

    setup = (Path(__file__).resolve().parents[3] / "setup.cfg").read_text()
    pinned = re.search(r"^\s*case-utils==(\S+)\s*$", setup, re.M)
    assert pinned and version("case-utils") == pinned.group(1), (pinned and pinned.group(1), version("case-utils"))
    assert tuple(int(x) for x in pinned.group(1).split(".")[:2]) >= (0, 18)
    help_text = subprocess.run([validator, "--help"], capture_output=True, timeout=120).stdout.decode()
    assert all(v in help_text for v in CASE_VERSIONS), help_text[-2000:]


def test_vocabulary_values_are_plain_strings(bundle):
    """UCO 1.4+: hashMethod and actionStatus are xsd:string; a ...Vocab datatype is a violation."""
    custody = dict(bundle["custody"], status="complete")
    data = jsonld_bytes(custody_jsonld(custody, bundle["manifest"], "cd" * 32)).decode()
    assert "uco-vocabulary:" not in data and "Vocab" not in data
    graph = custody_jsonld(custody, bundle["manifest"], "cd" * 32)
    assert {h["uco-types:hashMethod"] for h in _nodes(graph, "uco-types:Hash")} == {"SHA256"}
    (action,) = _nodes(graph, "case-investigation:InvestigativeAction")
    assert action["uco-action:actionStatus"] == "Complete/Finish"


def test_every_member_once_with_its_sha256(bundle):
    manifest = bundle["manifest"]
    graph = custody_jsonld(bundle["custody"], manifest, None)
    files = {node["uco-core:name"]: node for node in _nodes(graph, "uco-observable:File")}
    assert len(files) == len(_nodes(graph, "uco-observable:File")), "a member appears more than once"
    listed = [m for m in manifest["members"] if m["name"] != JSONLD_NAME]  # it cannot hold its own hash
    assert set(files) == {m["name"] for m in listed}
    for member in listed:
        node = files[member["name"]]
        assert _sha256_of(node) == [member["sha256"]]
        # the manifest's hash is the content's: checked against the bytes read back with tarfile
        if member["type"] == "file":
            assert hashlib.sha256(bundle["members"][member["name"]]).hexdigest() == member["sha256"]
        facet = next(f for f in node["uco-core:hasFacet"] if f["@type"] == "uco-observable:ContentDataFacet")
        assert facet["uco-observable:sizeInBytes"] == member["size"]
    action = _nodes(graph, "case-investigation:InvestigativeAction")[0]
    provenance = _nodes(graph, "case-investigation:ProvenanceRecord")[0]
    file_ids = sorted(node["@id"] for node in files.values())
    assert sorted(r["@id"] for r in action["uco-action:result"] if r["@id"] in file_ids) == file_ids
    assert sorted(o["@id"] for o in provenance["uco-core:object"]) == file_ids
    ids = [n["@id"] for n in _all_ids(graph)]
    assert len(ids) == len(set(ids))


def _all_ids(graph: dict) -> list[dict]:
    return [node for kind in ("uco-observable:File", "uco-observable:ContentDataFacet", "uco-types:Hash",
                              "uco-observable:FileFacet", "uco-tool:Tool", "uco-observable:Device",
                              "case-investigation:InvestigativeAction", "case-investigation:ProvenanceRecord",
                              "case-investigation:Investigation", "uco-identity:Identity", "uco-role:Role",
                              "uco-core:Relationship", "uco-core:ExternalReference")
            for node in _nodes(graph, kind)]


def test_run_facts(bundle):
    custody = bundle["custody"]
    graph = custody_jsonld(custody, bundle["manifest"], "cd" * 32)
    (investigation,) = _nodes(graph, "case-investigation:Investigation")
    assert investigation["uco-core:name"] == "C-2026-17"
    (action,) = _nodes(graph, "case-investigation:InvestigativeAction")
    assert action["uco-core:name"] == "triage collection"
    assert action["uco-action:startTime"]["@value"].endswith("Z")
    assert action["uco-action:endTime"] == {"@type": "xsd:dateTime", "@value": custody["ended_utc"]}
    (role,) = _nodes(graph, "uco-role:Role")
    assert action["uco-action:performer"] == {"@id": role["@id"]}
    (person,) = _nodes(graph, "uco-identity:Identity")
    assert person["uco-core:name"] == "Alice Example"
    (relationship,) = _nodes(graph, "uco-core:Relationship")
    assert (relationship["uco-core:source"], relationship["uco-core:target"]) == ({"@id": person["@id"]},
                                                                                  {"@id": role["@id"]})
    (tool,) = _nodes(graph, "uco-tool:Tool")
    assert action["uco-action:instrument"] == {"@id": tool["@id"]}
    assert tool["uco-tool:version"] == custody["tool"]["version"]
    assert _sha256_of(tool) == ["cd" * 32]
    (device,) = _nodes(graph, "uco-observable:Device")
    assert action["uco-action:object"] == {"@id": device["@id"]}
    spec = next(f for f in device["uco-core:hasFacet"] if f["@type"] == "uco-observable:ComputerSpecificationFacet")
    assert spec["uco-observable:hostname"] == custody["host"]["hostname"]
    identifiers = {r["uco-core:definingContext"]: r["uco-core:externalIdentifier"]
                   for r in device.get("uco-core:externalReference", [])}
    if custody["host"].get("machine_id"):
        assert identifiers["/etc/machine-id"] == custody["host"]["machine_id"]
    if custody["host"].get("boot_id"):
        assert identifiers["/proc/sys/kernel/random/boot_id"] == custody["host"]["boot_id"]


def test_same_graph_when_rendered_again(bundle):
    """Written before the manifest exists (only the members so far), or re-rendered later from the
    sealed manifest that lists custody.jsonld itself: the same bytes either way."""
    custody, manifest = bundle["custody"], bundle["manifest"]
    at_write = jsonld_bytes(custody_jsonld(custody, {"members": [dict(m) for m in manifest["members"]]}, None))
    listed = dict(manifest, members=manifest["members"] + [{"name": JSONLD_NAME, "type": "file", "size": 1,
                                                            "sha256": "00" * 32, "mtime_ns": 0}])
    assert jsonld_bytes(custody_jsonld(custody, listed, None)) == at_write
    if JSONLD_NAME in bundle["members"]:  # once the collector writes it: the member is this rendering
        assert bundle["members"][JSONLD_NAME] == at_write
    other_run = dict(custody, started_ns=custody["started_ns"] + 1)
    assert jsonld_bytes(custody_jsonld(other_run, manifest, None)) != at_write


def test_thousands_of_members_one_node_each(bundle):
    names = [f"fs/$rootfs$/usr/lib/file{i:05d}" for i in range(5000)] + ["fs/$rootfs$/a\udcff", "fs/$rootfs$/a\\xff"]
    manifest = {"members": [{"name": n, "type": "file", "size": i, "sha256": hashlib.sha256(n.encode(
        "utf-8", "surrogateescape")).hexdigest(), "mtime_ns": i} for i, n in enumerate(names)]}
    graph = custody_jsonld(bundle["custody"], manifest, None)
    files = _nodes(graph, "uco-observable:File")
    assert len(files) == len(names) == len({f["@id"] for f in files})
    by_hash = {_sha256_of(f)[0]: f for f in files}
    assert set(by_hash) == {m["sha256"] for m in manifest["members"]}
    data = jsonld_bytes(graph)
    data.decode("utf-8")  # the undecodable name is spelled out, not a lone surrogate
    assert b"a\\\\xff" in data


_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def test_end_is_not_before_start(bundle):
    """Both ends of the run at full (microsecond) precision, the nanoseconds beside: the end is never
    before the start, in custody.json and in the graph."""
    from datetime import datetime

    custody = bundle["custody"]
    assert _STAMP.fullmatch(custody["started_utc"]) and _STAMP.fullmatch(custody["ended_utc"]), custody
    assert custody["ended_ns"] >= custody["started_ns"]
    start, end = (datetime.fromisoformat(custody[k]) for k in ("started_utc", "ended_utc"))
    assert end >= start
    seconds, rest = divmod(custody["ended_ns"], 10**9)
    assert custody["ended_utc"] == f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{rest // 1000:06d}Z"
    (action,) = _nodes(custody_jsonld(custody, bundle["manifest"], None), "case-investigation:InvestigativeAction")
    graph_start, graph_end = (datetime.fromisoformat(action[k]["@value"]) for k in ("uco-action:startTime",
                                                                                      "uco-action:endTime"))
    assert graph_end >= graph_start and action["uco-action:endTime"]["@value"] == custody["ended_utc"]


def test_end_when_the_clock_steps_back(monkeypatch):
    """The wall clock set back during the run (NTP, an operator): the end is the start plus the
    monotonic duration, and the clock's own reading is kept beside it."""
    import time as time_module

    from agent.engine import custody as custody_module

    started_ns, started_mono = 1_780_000_000_123_456_789, 5_000_000_000
    monkeypatch.setattr(time_module, "monotonic_ns", lambda: started_mono + 2_500_000_000)
    monkeypatch.setattr(time_module, "time_ns", lambda: started_ns - 3_600_000_000_000)
    end = custody_module.run_end(started_ns, started_mono)
    assert end["ended_ns"] == started_ns + 2_500_000_000 and end["duration_ns"] == 2_500_000_000
    assert end["ended_utc"] == "2026-05-28T20:26:42.623456Z" and end["ended_utc"] > custody_module.utc_ns(started_ns)
    assert end["wall_clock_at_end_utc"] == "2026-05-28T19:26:40.123456Z"
    monkeypatch.setattr(time_module, "time_ns", lambda: started_ns + 2_500_000_100)  # an ordinary run
    end = custody_module.run_end(started_ns, started_mono)
    assert end["ended_ns"] == started_ns + 2_500_000_100 and "wall_clock_at_end_utc" not in end


def test_a_hostname_that_is_not_utf8(bundle):
    """The kernel takes any bytes as a hostname and Python hands them over as surrogate escapes: the
    run's node ids are derived from it, and deriving them raised UnicodeEncodeError (the seal failed)."""
    custody = dict(bundle["custody"], host=dict(bundle["custody"]["host"], hostname="evil\udcff"))
    graph = custody_jsonld(custody, bundle["manifest"], None)
    assert jsonld_bytes(graph) == jsonld_bytes(custody_jsonld(custody, bundle["manifest"], None))
    names = [f.get("uco-observable:hostname") for n in _nodes(graph, "uco-observable:Device")
             for f in n.get("uco-core:hasFacet", [])]
    assert "evil\\xff" in names, names


def test_collect_seals_on_a_host_named_in_bytes(tmp_path):
    """End to end, in a UTS namespace of its own whose hostname is b"h\\xffx" (set with sethostname(2), as
    a hostile root could): the bundle seals and verifies."""
    need(os.geteuid() == 0 and shutil.which("unshare") is not None, "root and unshare(1) for a UTS namespace")
    script = ("import os, socket, sys; socket.sethostname(b'h\\xffx'); "
              "os.execv(sys.executable, [sys.executable, '-m', 'agent'] + sys.argv[1:])")
    proc = run_triagent(["collect", "--profile", "minimal", "--output", str(tmp_path)],
                        cmd=["unshare", "--uts", sys.executable, "-c", script])
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    summary = summary_of(proc)
    custody = json.loads(members(summary["bundle"])["triagent/custody.json"])
    assert custody["host"]["hostname"] == "h\udcffx"  # custody.json spells the byte as a JSON escape
    assert run_triagent(["verify", summary["bundle"]]).returncode == 0
