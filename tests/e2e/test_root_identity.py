"""`collect --root`: the evidence names itself, the collecting machine is recorded as such.

A bundle collected from a mounted image is named after the image's /etc/hostname, its custody
``host`` is the image's hostname, machine-id and os-release (read inside the root: a link in the
image cannot point the reads at the collecting machine's files), and the machine that ran triagent
is ``collector`` in custody and a Device of its own (the action's environment) in the CASE graph."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from conftest import members, run_triagent, summary_of

from agent.engine.case import custody_jsonld

MACHINE_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _image(root: Path, hostname: str | None = "evidence-web01\n") -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    if hostname is not None:
        (root / "etc/hostname").write_text(hostname)
    (root / "etc/machine-id").write_text(MACHINE_ID + "\n")
    (root / "usr/lib/os-release").write_text('NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n'
                                             'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n# a comment\n')
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")  # as on the distributions
    return root


def _collect(root: Path, out: Path) -> tuple[dict, dict, dict]:
    proc = run_triagent(["collect", "--root", str(root), "--artifacts", "system", "--output", str(out),
                         "--no-nice", "--case-id", "C-ROOT"])
    summary = summary_of(proc)
    assert proc.returncode in (0, 1), proc.stderr.decode()[-2000:]
    content = members(summary["bundle"])
    return summary, json.loads(content["triagent/custody.json"]), json.loads(content["triagent/manifest.json"])


def _nodes(graph: dict, kind: str) -> list[dict]:
    return [n for n in graph["@graph"] if n.get("@type") == kind]


def _hostname(device: dict) -> str | None:
    return next((f.get("uco-observable:hostname") for f in device.get("uco-core:hasFacet", [])
                 if f["@type"] == "uco-observable:ComputerSpecificationFacet"), None)


def test_bundle_and_custody_name_the_evidence(tmp_path):
    root = _image(tmp_path / "image")
    summary, custody, manifest = _collect(root, tmp_path / "out")
    name = os.path.basename(summary["bundle"])
    assert name.startswith("triagent_evidence-web01_"), name
    collecting = socket.gethostname()
    if collecting != "evidence-web01":
        assert f"_{collecting}_" not in name
    host = custody["host"]
    assert host["hostname"] == "evidence-web01" and host["machine_id"] == MACHINE_ID
    assert host["os_release"]["ID"] == "debian" and host["os_release"]["VERSION_ID"] == "12"
    assert host["os_release"]["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    # nothing of the collecting machine is passed off as the evidence's
    assert "boot_id" not in host and "kernel_release" not in host
    collector = custody["collector"]
    assert collector["hostname"] == collecting and collector["kernel_release"] == os.uname().release
    assert custody["live"] is False

    graph = custody_jsonld(custody, manifest, None)
    devices = {_hostname(d): d for d in _nodes(graph, "uco-observable:Device")}
    assert set(devices) == {"evidence-web01", collecting}
    (action,) = _nodes(graph, "case-investigation:InvestigativeAction")
    assert action["uco-action:object"] == {"@id": devices["evidence-web01"]["@id"]}
    assert action["uco-action:environment"] == {"@id": devices[collecting]["@id"]}
    evidence_ids = {r["uco-core:definingContext"]: r["uco-core:externalIdentifier"]
                    for r in devices["evidence-web01"]["uco-core:externalReference"]}
    assert evidence_ids["/etc/machine-id"] == MACHINE_ID and "/proc/sys/kernel/random/boot_id" not in evidence_ids
    assert "Debian GNU/Linux 12" in devices["evidence-web01"]["uco-core:description"]
    # the member written in the bundle is this graph
    assert json.loads(members(summary["bundle"])["triagent/custody.jsonld"]) == json.loads(json.dumps(graph))


def test_identity_reads_stay_inside_the_root(tmp_path):
    """Links in the image that point at absolute paths resolve inside the image, never on the
    collecting machine; no /etc/hostname in the image is no hostname, not the collector's."""
    outside = tmp_path / "collector-secret"
    outside.write_text("collector-secret-name\n")
    root = _image(tmp_path / "image", hostname=None)
    (root / "etc/hostname").symlink_to(outside)  # absolute: inside the root it does not exist
    (root / "etc/machine-id").unlink()
    (root / "etc/machine-id").symlink_to("../../../../../../.." + str(outside))
    summary, custody, _ = _collect(root, tmp_path / "out")
    text = json.dumps(custody)
    assert "collector-secret-name" not in text
    assert custody["host"].get("hostname") is None and custody["host"].get("machine_id") is None
    name = os.path.basename(summary["bundle"])
    assert f"_{socket.gethostname()}_" not in name and name.startswith("triagent_unknown-host_"), name
