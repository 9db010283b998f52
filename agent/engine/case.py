"""The custody record as a CASE/UCO 1.5 JSON-LD graph (https://caseontology.org), for case tools.

One ``InvestigativeAction`` (the collection) with its performer (the examiner's role), instrument
(triagent), object (the host) and results: a ``ProvenanceRecord`` and one ``File`` per bundle member
carrying the member's size and SHA-256 (and, for copies of host files, the original path). An
``Investigation`` named after the case id holds both. Timestamps, modes and owners of members stay in
the manifest only: the graph is kept as small as the ontology allows, one File per member.

Node ids are uuid5 values derived from the run (host, boot, start time), so rendering the same
custody and manifest again yields the same bytes: a reader can re-render from the bundle's
custody.json and manifest.json and compare with the member.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

JSONLD_NAME = "triagent/custody.jsonld"
KB = "urn:triagent:kb:"
_UCO = "https://ontology.unifiedcyberontology.org/uco/"
CONTEXT: dict[str, str] = {
    "kb": KB,
    "case-investigation": "https://ontology.caseontology.org/case/investigation/",
    **{f"uco-{m}": f"{_UCO}{m}/" for m in ("action", "core", "identity", "observable", "role", "tool", "types")},
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
# Fixed so that ids depend only on the run, never on where or when the graph is rendered.
_NAMESPACE = uuid.UUID("5b0d8f9e-3c41-5a53-9c7e-2f4c1d6a7e10")
# Where each host identifier comes from, as the definingContext of its ExternalReference.
_HOST_IDS = (
    ("machine_id", "/etc/machine-id"),
    ("boot_id", "/proc/sys/kernel/random/boot_id"),
    ("product_uuid", "/sys/class/dmi/id/product_uuid"),
    ("cloud_instance_id", "cloud instance id"),
)


def _text(value: Any) -> str:
    """Names from the filesystem may hold undecodable bytes (surrogate escapes); RDF strings cannot."""
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _datetime(ns: int | None = None, text: str | None = None) -> dict[str, str] | None:
    if ns is not None:
        seconds, rest = divmod(int(ns), 1_000_000_000)
        stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return {"@type": "xsd:dateTime", "@value": f"{stamp}.{rest // 1000:06d}Z"}
    if text:
        return {"@type": "xsd:dateTime", "@value": text}
    return None


def _sha256_node(node_id: str, hex_digest: str) -> dict[str, Any]:
    return {"@id": node_id, "@type": "uco-types:Hash",
            # UCO 1.4+: a vocabulary member is a plain xsd:string (a ...Vocab datatype is deprecated, an error in 2.0)
            "uco-types:hashMethod": "SHA256",
            "uco-types:hashValue": {"@type": "xsd:hexBinary", "@value": hex_digest.lower()}}


def _prune(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if v is not None and v != []}


def run_identity(custody: dict[str, Any]) -> str:
    """What names this run: the same host, boot and start time is the same bundle."""
    host = custody.get("host") or {}
    return "\0".join(str(x) for x in (host.get("machine_id"), host.get("boot_id"), host.get("hostname"),
                                      custody.get("started_ns") or custody.get("started_utc"),
                                      custody.get("case_id")))


def custody_jsonld(custody: dict[str, Any], manifest: dict[str, Any], tool_sha256: str | None) -> dict[str, Any]:
    """The CASE/UCO graph of a run. ``manifest`` needs only ``members`` (the manifest's list, or the
    writer's entries before the manifest exists); a member named ``JSONLD_NAME`` is left out, as the
    document cannot hold its own hash. ``tool_sha256`` defaults to the frozen binary's hash in custody."""
    kb = _Ids(custody)
    tool = _tool(kb, custody, tool_sha256)
    examiner, performer = _examiner(kb, custody)
    devices, device_id, environment_id = _devices(kb, custody)
    files = [_member_file(kb, member) for member in manifest.get("members", []) if member.get("name") != JSONLD_NAME]
    file_ids = [{"@id": f["@id"]} for f in files]
    action = _action(kb, custody, tool["@id"], performer, device_id, environment_id, file_ids)
    provenance = _provenance(kb, custody, file_ids or [{"@id": device_id}])
    investigation = _prune({
        "@id": kb("Investigation"), "@type": "case-investigation:Investigation",
        "uco-core:name": custody.get("case_id") and _text(custody["case_id"]),
        "uco-core:object": [{"@id": action["@id"]}, {"@id": provenance["@id"]}],
    })
    return {"@context": CONTEXT, "@graph": [tool, *examiner, *devices, *files, action, provenance, investigation]}


class _Ids:
    """Node ids: uuid5 of the run's identity and the node's kind and key, so that rendering again gives
    the same ids. The identity goes through _text: a hostname may hold bytes that are not UTF-8."""

    def __init__(self, custody: dict[str, Any]):
        self.base = uuid.uuid5(_NAMESPACE, _text(run_identity(custody)))

    def __call__(self, kind: str, key: str = "") -> str:
        return f"kb:{kind}-{uuid.uuid5(self.base, kind + chr(0) + key)}"


def _tool(kb: _Ids, custody: dict[str, Any], tool_sha256: str | None) -> dict[str, Any]:
    """The instrument: triagent, its version and (frozen) the binary's hash."""
    tool = custody.get("tool") or {}
    tool_hash = tool_sha256 or tool.get("binary_sha256")
    node: dict[str, Any] = {
        "@id": kb("Tool"), "@type": "uco-tool:Tool", "uco-core:name": tool.get("name") or "triagent",
        "uco-tool:version": tool.get("version"), "uco-tool:toolType": "triage collector",
    }
    if tool_hash:
        # keyed with a NUL, which no member name (a tar name) can hold
        node["uco-core:hasFacet"] = [{
            "@id": kb("ContentDataFacet", "\0tool"), "@type": "uco-observable:ContentDataFacet",
            "uco-observable:hash": [_sha256_node(kb("Hash", "\0tool"), tool_hash)]}]
    return _prune(node)


def _examiner(kb: _Ids, custody: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The performer: the examiner's identity, its role, and the relationship between them (or nothing)."""
    if not custody.get("examiner"):
        return [], None
    identity_id, performer = kb("Identity", "examiner"), kb("Role", "examiner")
    return [
        {"@id": identity_id, "@type": "uco-identity:Identity", "uco-core:name": _text(custody["examiner"])},
        {"@id": performer, "@type": "uco-role:Role", "uco-core:name": "examiner"},
        {"@id": kb("Relationship", "examiner"), "@type": "uco-core:Relationship",
         "uco-core:source": {"@id": identity_id}, "uco-core:target": {"@id": performer},
         "uco-core:kindOfRelationship": "Has_Role", "uco-core:isDirectional": True},
    ], performer


def _device(kb: _Ids, node_key: str, host: dict[str, Any], description: str | None) -> dict[str, Any]:
    facets: list[dict[str, Any]] = [_prune({
        "@id": kb("ComputerSpecificationFacet", node_key),
        "@type": "uco-observable:ComputerSpecificationFacet",
        "uco-observable:hostname": host.get("hostname") and _text(host["hostname"]),
        "uco-observable:processorArchitecture": host.get("machine"),
    })]
    if host.get("product_name") or host.get("sys_vendor"):
        model = " ".join(_text(host[k]) for k in ("sys_vendor", "product_name") if host.get(k))
        facets.append({"@id": kb("DeviceFacet", node_key), "@type": "uco-observable:DeviceFacet",
                       "uco-observable:model": model})
    references = [{"@id": kb("ExternalReference", node_key + key), "@type": "uco-core:ExternalReference",
                   "uco-core:definingContext": where, "uco-core:externalIdentifier": _text(host[key])}
                  for key, where in _HOST_IDS if host.get(key)]
    return _prune({"@id": kb("Device", node_key), "@type": "uco-observable:Device", "uco-core:description": description,
                   "uco-core:hasFacet": facets, "uco-core:externalReference": references})


def _devices(kb: _Ids, custody: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
    """The evidence (live, this machine; with --root, what the image's own files say it is) and where the
    collection ran (the evidence itself when live, the collecting machine with --root): nodes, both ids."""
    host = custody.get("host") or {}
    release = host.get("os_release") if isinstance(host.get("os_release"), dict) else {}
    os_name = release.get("PRETTY_NAME") or " ".join(str(release[k]) for k in ("NAME", "VERSION") if release.get(k))
    evidence = _device(kb, "", host, f"operating system: {_text(os_name)}" if os_name else None)
    collector = custody.get("collector")
    if custody.get("live") is False and isinstance(collector, dict):
        environment = _device(kb, "\0collector", collector,
                              f"the machine that ran triagent (collecting from {_text(custody.get('root'))}); "
                              "not the evidence")
        return [evidence, environment], evidence["@id"], environment["@id"]
    return [evidence], evidence["@id"], evidence["@id"]


def _member_file(kb: _Ids, member: dict[str, Any]) -> dict[str, Any]:
    """One bundle member: its size and SHA-256, where a copy came from, what is odd about it."""
    name = member.get("name")
    # ids from the raw name bytes: two names can display alike once undecodable bytes are spelled out
    key = str(name).encode("utf-8", "surrogateescape").decode("latin-1")
    notes = []
    if member.get("type") == "symlink":
        notes.append(f"symbolic link to {_text(member.get('target'))}")
    if member.get("incomplete"):
        notes.append(f"incomplete: {member['incomplete'].get('reason')}, zero-padded from byte "
                     f"{member['incomplete'].get('zero_padded_from')}")
    facets: list[dict[str, Any]] = [{
        "@id": kb("ContentDataFacet", key), "@type": "uco-observable:ContentDataFacet",
        "uco-observable:sizeInBytes": member.get("size", 0),
        "uco-observable:hash": [_sha256_node(kb("Hash", key), member["sha256"])],
    }]
    if member.get("source"):
        # where the copy came from on the host; its times and ownership stay in the manifest
        facets.append({"@id": kb("FileFacet", key), "@type": "uco-observable:FileFacet",
                       "uco-observable:filePath": _text(member["source"])})
    return _prune({"@id": kb("File", key), "@type": "uco-observable:File", "uco-core:name": _text(name),
                   "uco-core:description": "; ".join(notes) or None, "uco-core:hasFacet": facets})


def _action(kb: _Ids, custody: dict[str, Any], tool_id: str, performer: str | None, device_id: str,
            environment_id: str, file_ids: list[dict[str, str]]) -> dict[str, Any]:
    """The collection itself: how it ended, when, by whom, with what, on what; its results."""
    status = custody.get("status")
    described = [f"collection {status}" if status else None,
                 f"stopped: {_text(custody['stop_reason'])}" if custody.get("stop_reason") else None,
                 _text(custody["notes"]) if custody.get("notes") else None]
    return _prune({
        "@id": kb("InvestigativeAction"), "@type": "case-investigation:InvestigativeAction",
        "uco-core:name": "triage collection",
        "uco-core:description": "; ".join(d for d in described if d) or None,
        "uco-action:actionStatus": "Complete/Finish" if status == "complete" else None,
        "uco-action:startTime": _datetime(custody.get("started_ns"), custody.get("started_utc")),
        "uco-action:endTime": _datetime(custody.get("ended_ns"), custody.get("ended_utc")),
        "uco-action:performer": performer and {"@id": performer},
        "uco-action:instrument": {"@id": tool_id},
        "uco-action:object": {"@id": device_id},
        "uco-action:environment": {"@id": environment_id},
        "uco-action:result": [{"@id": kb("ProvenanceRecord")}, *file_ids],
    })


def _provenance(kb: _Ids, custody: dict[str, Any], objects: list[dict[str, str]]) -> dict[str, Any]:
    """The bundle as an exhibit: its members (ContextualCompilation demands at least one object: the
    caller gives the device for an empty bundle)."""
    output = custody.get("output") or {}
    exhibit = os.path.basename(output["path"]) if output.get("kind") == "file" and output.get("path") else None
    return _prune({
        "@id": kb("ProvenanceRecord"), "@type": "case-investigation:ProvenanceRecord",
        "uco-core:description": "members of the triagent bundle",
        "case-investigation:exhibitNumber": exhibit and _text(exhibit),
        "uco-core:object": objects,
    })


def jsonld_bytes(graph: dict[str, Any]) -> bytes:
    """The member's bytes: stable key order so the same graph is always the same bytes; compact, as a
    bundle of many files makes a graph of many megabytes."""
    return json.dumps(graph, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
