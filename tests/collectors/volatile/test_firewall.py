"""The firewall collector against real rulesets: each test owns a network namespace (``unshare -n``), loads
rules there with the real ``nft``, ``iptables-legacy``/``ip6tables-legacy`` and ``iptables-nft``, sends a
few packets over its loopback so that counters move, then runs the collector inside it and, in the same
namespace, ``nft -j list ruleset`` and ``iptables-legacy-save -c``: every rule, chain policy and counter the
tools show must be in the collector's records. The rules of specs/rules/firewall.yaml are run over what was
collected: BPFDoor's one-source REDIRECT is high, Debian's default /etc/nftables.conf and Docker's NAT chains
say nothing, and a ruleset flushed while the saved one has rules is medium."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, need

from agent.analysis import rules as engine
from collectors.base import Context, Problem, Record
from collectors.volatile import firewall

NOW = time.time()
RULES = [r for r in engine.load_rules() if r.id.startswith("TRI-FW-")]
TOOLS = ("nft", "iptables-legacy", "ip6tables-legacy", "iptables-legacy-restore", "iptables-nft", "unshare")

RUNNER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from collectors.base import Context, Problem, Record
    from collectors.volatile import firewall
    out = {"records": [], "problems": []}
    ctx = Context(root="/", live=True, options=json.loads(sys.argv[2]))
    for item in firewall.collect(ctx):
        if isinstance(item, Record):
            out["records"].append([item.stream, item.data])
        elif isinstance(item, Problem):
            out["problems"].append({"message": item.message, "level": item.level, "errno": item.errno})
    json.dump(out, sys.stdout)
""")

# Sends packets over the namespace's loopback so that counters are not all zero: TCP to a closed port
# (SYN out, RST back) and UDP datagrams, for IPv4 and IPv6.
TRAFFIC = textwrap.dedent("""
    import socket
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for port in (22, 443, 8080):
            s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(0.2)
            try:
                s.connect((host, port))
            except OSError:
                pass
            s.close()
        u = socket.socket(fam, socket.SOCK_DGRAM)
        for _ in range(3):
            u.sendto(b"x" * 40, (host, 53))
        u.close()
""")


def _tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    need(not missing, f"firewall tools missing: {missing} (apt-get install nftables iptables util-linux)")
    need(os.geteuid() == 0, "network namespaces and firewall rules need root")


def _netns(tmp_path: Path, setup: str, options: dict | None = None, traffic: bool = True,
           as_nobody: bool = False, after: str = "") -> dict:
    """Run ``setup`` (bash) in a new network namespace, then the collector, then the reference tools."""
    _tools()
    out = tmp_path / "collected.json"
    opts = json.dumps({"saved_configs": [], **(options or {})})
    runner = [sys.executable, "-c", RUNNER, str(REPO), opts]
    if as_nobody:
        runner = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                  "--bounding-set=-all", "--"] + runner
    script = "\n".join([
        "set -eu",
        "ip link set lo up",
        setup,
        (f"{sys.executable} -c {_q(TRAFFIC)}" if traffic else ""),
        " ".join(_q(a) for a in runner) + f" > {out}",
        f"nft -j list ruleset > {tmp_path}/nft.json",
        f"iptables-legacy-save -c > {tmp_path}/ipt4.txt 2>/dev/null || true",
        f"ip6tables-legacy-save -c > {tmp_path}/ipt6.txt 2>/dev/null || true",
        after,
    ])
    done = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(out.read_text())
    streams: dict[str, list[dict]] = {}
    for stream, data in got["records"]:
        streams.setdefault(stream, []).append(data)
    return {"streams": streams, "problems": got["problems"], "nft": json.loads((tmp_path / "nft.json").read_text()),
            "ipt4": (tmp_path / "ipt4.txt").read_text() if (tmp_path / "ipt4.txt").exists() else "",
            "ipt6": (tmp_path / "ipt6.txt").read_text() if (tmp_path / "ipt6.txt").exists() else ""}


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _findings(streams: dict[str, list[dict]]) -> dict[str, list[dict]]:
    def rows(source: str):
        for number, record in enumerate(streams.get(source, []), 1):
            yield "source", f"artifacts/{source}.jsonl", number, record

    out: dict[str, list[dict]] = {}
    for finding in engine.evaluate(RULES, rows, NOW):
        out.setdefault(finding["rule"], []).append(finding)
    return out


def _check_against_nft(got: dict) -> None:
    """Every rule, chain (hook, priority, policy) and rule counter `nft -j list ruleset` shows is collected."""
    ruleset = got["nft"]["nftables"]
    chains = {(c["family"], c["table"], c["chain"]): c for c in got["streams"].get("nft_chains", [])}
    rules = {(r["family"], r["table"], r["chain"], r["handle"]): r for r in got["streams"].get("nft_rules", [])}
    want_chains = want_rules = 0
    for obj in ruleset:
        if "chain" in obj:
            c = obj["chain"]
            want_chains += 1
            mine = chains[(c["family"], c["table"], c["name"])]
            assert mine["handle"] == c["handle"]
            if "hook" in c:
                assert mine["hook"] == c["hook"], (mine, c)
                assert mine["policy"] == c.get("policy", "accept"), (mine, c)
                if isinstance(c.get("prio"), int):
                    assert mine["priority"] == c["prio"], (mine, c)
        elif "rule" in obj:
            r = obj["rule"]
            want_rules += 1
            mine = rules[(r["family"], r["table"], r["chain"], r["handle"])]
            counters = [e["counter"] for e in r["expr"] if isinstance(e, dict) and isinstance(e.get("counter"), dict)]
            if counters:
                assert (mine["packets"], mine["bytes"]) == (counters[0]["packets"], counters[0]["bytes"]), (mine, r)
            assert "comment" not in r or mine["comment"] == r["comment"]
    assert len(chains) == want_chains and len(rules) == want_rules


_SAVE_RULE = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$")
_SAVE_CHAIN = re.compile(r"^:(\S+) (\S+) \[(\d+):(\d+)\]$")


def _check_against_save(got: dict, family: str) -> None:
    """Every chain (policy, counters) and rule (order, counters, source, protocol, target) of
    ``ip(6)tables-legacy-save -c`` is in iptables_chains / iptables_rules."""
    text = got["ipt4" if family == "ipv4" else "ipt6"]
    chains = {(c["table"], c["chain"]): c for c in got["streams"].get("iptables_chains", []) if c["family"] == family}
    rules: dict[tuple[str, str], list[dict]] = {}
    for r in got["streams"].get("iptables_rules", []):
        if r["family"] == family:
            rules.setdefault((r["table"], r["chain"]), []).append(r)
    table = ""
    seen: dict[tuple[str, str], int] = {}
    want_chains = 0
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif m := _SAVE_CHAIN.match(line):
            want_chains += 1
            mine = chains[(table, m[1])]
            if m[2] != "-":
                assert (mine["policy"], mine["packets"], mine["bytes"]) == (m[2], int(m[3]), int(m[4])), (mine, line)
            else:
                assert mine["policy"] is None and not mine["builtin"]
        elif m := _SAVE_RULE.match(line):
            key = (table, m[3])
            i = seen.get(key, 0)
            seen[key] = i + 1
            mine = rules[key][i]
            assert (mine["packets"], mine["bytes"]) == (int(m[1]), int(m[2])), (mine, line)
            rest = m[4]
            assert re.search(r"-j (\S+)", rest)[1] == mine["target"], (mine, line)
            src = re.search(r"(! )?-s (\S+)", rest)
            assert (mine["src"] or None) == (((src[1] or "") + src[2]) if src else None), (mine, line)
            proto = re.search(r"(! )?-p (\S+)", rest)
            assert (mine["proto"] or None) == (((proto[1] or "") + proto[2]) if proto else None), (mine, line)
            port = re.search(r"--to-ports (\d+)", rest)
            if port:
                assert mine["to_port"] == int(port[1])
    assert len(chains) == want_chains
    assert {k: len(v) for k, v in rules.items()} == seen


NFT_RULESET = """
table inet filter {
  set blocked { type ipv4_addr; elements = { 198.51.100.7, 198.51.100.8 } }
  chain input { type filter hook input priority 0; policy drop;
    ct state established,related counter accept
    iif "lo" counter accept
    tcp dport { 22, 80 } counter accept
    ip saddr @blocked counter drop
    ip saddr 10.0.0.0/8 udp dport 53 accept comment "resolvers"
    ip6 saddr 2001:db8::/32 tcp dport 22 accept
    meta l4proto udp counter jump udp_in
  }
  chain udp_in { udp dport 53 counter return; counter; }
  chain output { type filter hook output priority 10; policy accept; counter; }
}
table ip nat {
  chain prerouting { type nat hook prerouting priority -100; policy accept;
    tcp dport 8080 dnat to 172.17.0.2:80
  }
  chain postrouting { type nat hook postrouting priority 100; policy accept; oifname "eth0" masquerade; }
}
table ip6 raw {
  chain pre { type filter hook prerouting priority -300; policy accept; notrack; }
}
"""

LEGACY_SETUP = """
iptables-legacy -P INPUT DROP
iptables-legacy -A INPUT -i lo -j ACCEPT
iptables-legacy -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables-legacy -A INPUT -s 10.1.0.0/16 -p tcp --dport 8000:8100 -j DROP
iptables-legacy -A INPUT ! -s 192.0.2.0/24 -p udp --sport 53 -m comment --comment resolvers -j ACCEPT
iptables-legacy -N LOGDROP
iptables-legacy -A LOGDROP -j LOG --log-prefix "fw drop: "
iptables-legacy -A LOGDROP -j DROP
iptables-legacy -A INPUT -p tcp --dport 23 -j LOGDROP
iptables-legacy -A OUTPUT -o lo -p tcp -j ACCEPT
iptables-legacy -t nat -A OUTPUT -p tcp --dport 8080 -j REDIRECT --to-ports 8081
iptables-legacy -t mangle -A PREROUTING -j MARK --set-mark 7
ip6tables-legacy -P FORWARD DROP
ip6tables-legacy -A INPUT -s 2001:db8::1 -p tcp --dport 22 -j ACCEPT
ip6tables-legacy -A INPUT -p ipv6-icmp -j ACCEPT
ip6tables-legacy -A OUTPUT -j ACCEPT
"""


def test_nftables_ruleset_is_read_as_nft_shows_it(tmp_path):
    got = _netns(tmp_path, f"nft -f - <<'EOF'\n{NFT_RULESET}\nEOF")
    _check_against_nft(got)
    rules = got["streams"]["nft_rules"]
    assert sum(r["packets"] or 0 for r in rules) > 0  # the loopback traffic was counted, and read
    texts = {r["text"] for r in rules}
    assert "ct state established,related counter packets" in " ".join(texts)
    dns = next(r for r in rules if r["comment"] == "resolvers")
    assert dns["src"] == "10.0.0.0/8" and dns["dport"] == "53" and dns["action"] == "accept"
    ssh6 = next(r for r in rules if r["src"] == "2001:db8::/32")
    assert ssh6["dport"] == "22" and ssh6["proto"] == "tcp"
    blocked = next(r for r in rules if r["src"] == "@blocked")
    assert blocked["action"] == "drop"
    assert next(r for r in rules if "{ 22, 80 }" in r["text"])["dport"] == "{ 22, 80 }"
    jump = next(r for r in rules if r["action"] == "jump")
    assert jump["jump_to"] == "udp_in" and jump["hook"] == "input" and jump["policy"] == "drop"
    dnat = next(r for r in rules if r["action"] == "dnat")
    assert (dnat["to_addr"], dnat["to_port"], dnat["dport"]) == ("172.17.0.2", 80, "8080")
    assert next(r for r in rules if r["action"] == "masquerade")["oif"] == "eth0"
    assert next(r for r in rules if r["table"] == "raw")["text"] == "notrack"
    assert not any(r["unknown_expressions"] for r in rules)
    (s,) = got["streams"]["nft_sets"]
    assert sorted(s["elements"]) == ["198.51.100.7", "198.51.100.8"]
    (summary,) = got["streams"]["firewall_summary"]
    assert summary["nft_state"] == "read" and summary["nft_rules"] == len(rules)
    assert summary["drop_policies"] == ["filter input"] and not summary["policies_all_accept"]


def test_legacy_iptables_and_ip6tables_are_read_as_save_shows_them(tmp_path):
    got = _netns(tmp_path, LEGACY_SETUP)
    _check_against_save(got, "ipv4")
    _check_against_save(got, "ipv6")
    rules = got["streams"]["iptables_rules"]
    assert sum(r["packets"] for r in rules) > 0
    inv = next(r for r in rules if r["src"] == "! 192.0.2.0/24")
    assert inv["sport"] == "53" and 'comment "resolvers"' in inv["match_text"]
    assert next(r for r in rules if r["chain"] == "LOGDROP" and r["target"] == "LOG")["target_text"] == \
        'prefix "fw drop: "'
    jump = next(r for r in rules if r["target"] == "LOGDROP")
    assert jump["jump_to"] == "LOGDROP" and jump["dport"] == "23"
    redir = next(r for r in rules if r["target"] == "REDIRECT")
    assert (redir["table"], redir["chain"], redir["to_port"], redir["dport"]) == ("nat", "OUTPUT", 8081, "8080")
    (summary,) = got["streams"]["firewall_summary"]
    assert summary["iptables_backend"] == "iptables-legacy"
    assert set(summary["legacy_ipv4_tables"]) == {"filter", "nat", "mangle"}
    assert summary["legacy_rules"] == len(rules)


def test_iptables_nft_rules_are_seen_in_nftables_and_the_summary_says_so(tmp_path):
    setup = """
iptables-nft -P INPUT DROP
iptables-nft -A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
iptables-nft -A INPUT -s 10.1.0.0/16 -p tcp --dport 8000:8100 -j DROP
iptables-nft -t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 3128
"""
    got = _netns(tmp_path, setup)
    _check_against_nft(got)
    rules = got["streams"]["nft_rules"]
    assert next(r for r in rules if r["xt"] == ["conntrack"])["action"] == "accept"
    drop = next(r for r in rules if r["action"] == "drop")
    assert (drop["src"], drop["dport"], drop["chain"], drop["policy"]) == ("10.1.0.0/16", "8000-8100", "INPUT", "drop")
    redir = next(r for r in rules if r["action"] == "redirect")
    assert redir["to_port"] == 3128 and redir["dport"] == "80"
    (summary,) = got["streams"]["firewall_summary"]
    assert summary["iptables_backend"].startswith("iptables-nft")
    assert not got["streams"].get("iptables_rules")


def test_a_namespace_with_no_tables_says_so(tmp_path):
    got = _netns(tmp_path, "true", traffic=False)
    (summary,) = got["streams"]["firewall_summary"]
    assert summary["nft_state"] == "read" and summary["nft_tables"] == [] and summary["rules_total"] == 0
    assert summary["iptables_backend"] == "none" and summary["policies_all_accept"]
    assert not got["streams"].get("nft_rules") and not got["streams"].get("iptables_rules")
    assert not [p for p in got["problems"] if p["level"] != "info"], got["problems"]


def test_a_huge_ruleset_is_bounded(tmp_path):
    lines = "\n".join(f"add rule inet big input ip saddr 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256} "
                      f"tcp dport {1 + i % 60000} counter accept" for i in range(30000))
    (tmp_path / "big.nft").write_text("add table inet big\nadd chain inet big input "
                                      "{ type filter hook input priority 0; policy accept; }\n" + lines + "\n")
    legacy = "*filter\n:INPUT ACCEPT [0:0]\n" + "".join(
        f"-A INPUT -s 10.9.{i // 256}.{i % 256}/32 -j ACCEPT\n" for i in range(3000)) + "COMMIT\n"
    (tmp_path / "big.rules").write_text(legacy)
    started = time.monotonic()
    got = _netns(tmp_path, f"nft -f {tmp_path}/big.nft\niptables-legacy-restore < {tmp_path}/big.rules",
                 options={"max_rules": 1000}, traffic=False)
    assert time.monotonic() - started < 120
    assert len(got["streams"]["nft_rules"]) == 1000
    assert len(got["streams"]["iptables_rules"]) == 1000
    (summary,) = got["streams"]["firewall_summary"]
    assert summary["truncated"] and summary["nft_rules"] == 1000
    assert [p for p in got["problems"] if "more than 1000 rules" in p["message"]]
    (chain,) = got["streams"]["nft_chains"]
    assert chain["rules"] == 1000


def test_without_privilege_the_refusals_are_recorded_not_raised(tmp_path):
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed")
    got = _netns(tmp_path, f"nft -f - <<'EOF'\n{NFT_RULESET}\nEOF\n{LEGACY_SETUP}", traffic=False, as_nobody=True)
    (summary,) = got["streams"]["firewall_summary"]
    assert summary["nft_state"] == "refused" and summary["rules_total"] == 0
    assert any("CAP_NET_ADMIN" in p["message"] for p in got["problems"]), got["problems"]
    legacy = [p for p in got["problems"] if p["message"].startswith("iptables (ipv4)")]
    assert legacy and ("CAP_NET_RAW" in legacy[0]["message"] or "root is needed" in legacy[0]["message"]), legacy


def test_under_another_root_nothing_is_read():
    items = list(firewall.collect(Context(root="/mnt/image", live=False, options={})))
    assert len(items) == 1 and isinstance(items[0], Problem) and items[0].level == "info"


# --- rules ------------------------------------------------------------------------------------------------

DEBIAN_NFTABLES_CONF = """#!/usr/sbin/nft -f

flush ruleset

table inet filter {
\tchain input {
\t\ttype filter hook input priority filter;
\t}
\tchain forward {
\t\ttype filter hook forward priority filter;
\t}
\tchain output {
\t\ttype filter hook output priority filter;
\t}
}
"""

DOCKER_SAVE = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.17.0.2/32 -d 172.17.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"""

SAVED_RULES_V4 = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
"""


def _debian_conf(tmp_path: Path) -> Path:
    """Debian's own /etc/nftables.conf where the nftables package put it, else the same text."""
    real = Path("/etc/nftables.conf")
    conf = tmp_path / "nftables.conf"
    text = real.read_text() if real.is_file() and "hook input" in real.read_text() else DEBIAN_NFTABLES_CONF
    conf.write_text(text)
    return conf


CASES = {
    # BPFDoor's redirection, legacy iptables: the one source's HTTPS goes to the implant's port
    "TRI-FW-002": ("iptables-legacy -t nat -A PREROUTING -p tcp --dport 443 -s 203.0.113.5 -j REDIRECT "
                   "--to-port 42391",
                   "iptables-legacy-restore < {docker}"),
    # the same written with nft (and iptables-nft's compat REDIRECT lands here too)
    "TRI-FW-001": ("nft add table ip nat && nft 'add chain ip nat pre { type nat hook prerouting priority -100; }' "
                   "&& nft add rule ip nat pre ip saddr 203.0.113.5 tcp dport 443 redirect to :42391\n"
                   "iptables-nft -t nat -A PREROUTING -p tcp --dport 22 -s 198.51.100.9 -j REDIRECT --to-ports 2222",
                   "nft -f {debian}"),
    "TRI-FW-003": ("nft add table ip nat && nft 'add chain ip nat pre { type nat hook prerouting priority -100; }' "
                   "&& nft add rule ip nat pre tcp dport 22 redirect to :2022",
                   "nft -f {debian}\nnft add table ip nat && nft 'add chain ip nat pre { type nat hook prerouting "
                   "priority -100; }' && nft add rule ip nat pre tcp dport 8080 dnat to 172.17.0.2:80"),
    "TRI-FW-004": ("iptables-legacy -t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 127.0.0.1:8081",
                   "iptables-legacy-restore < {docker}\niptables-legacy -t nat -N ISTIO_REDIRECT\n"
                   "iptables-legacy -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
    # the host cut off from its metadata service; benign: the same blocked for containers and for non-root users
    "TRI-FW-006": ("nft add table inet f && nft 'add chain inet f out { type filter hook output priority 0; }' "
                   "&& nft add rule inet f out ip daddr 169.254.169.254 counter drop",
                   "nft add table inet f && nft 'add chain inet f out { type filter hook output priority 0; }' "
                   "&& nft add rule inet f out meta skuid != 0 ip daddr 169.254.169.254 drop\n"
                   "nft 'add chain inet f fwd { type filter hook forward priority 0; }' "
                   "&& nft add rule inet f fwd ip daddr 169.254.169.254 drop"),
    "TRI-FW-007": ("iptables-legacy -A OUTPUT -d 169.254.169.254 -j REJECT",
                   "iptables-legacy -A OUTPUT -d 169.254.169.254 -m owner ! --uid-owner 0 -j DROP\n"
                   "iptables-legacy-restore < {docker}\n"
                   "iptables-legacy -I DOCKER-USER -d 169.254.169.254 -j DROP"),
    # flushed: nothing live while rules.v4 has rules; benign: Debian's conf loaded and saved, no rule in either
    "TRI-FW-005": ("true", "nft -f {debian}"),
}


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_on_the_behaviour_not_on_its_look_alike(tmp_path, rule_id):
    planted, benign = CASES[rule_id]
    docker = tmp_path / "docker.rules"
    docker.write_text(DOCKER_SAVE)
    debian = _debian_conf(tmp_path)
    saved = tmp_path / "rules.v4"
    saved.write_text(SAVED_RULES_V4)
    for name, setup in (("planted", planted), ("benign", benign)):
        where = tmp_path / name
        where.mkdir()
        saved_configs = [str(saved)] if name == "planted" else [str(debian)]
        script = setup.replace("{docker}", str(docker)).replace("{debian}", str(debian))
        got = _netns(where, script, options={"saved_configs": saved_configs}, traffic=False)
        found = _findings(got["streams"])
        if name == "planted":
            assert rule_id in found, (rule_id, sorted(found), got["streams"])
            if found[rule_id][0]["severity"] in ("high", "critical"):
                flat = [f for hits in found.values() for f in hits]
                assert engine.verdict(flat, True, engine.load_verdict_policy())["recommendation"] == "yes"
        else:
            assert found == {}, found


def test_bpfdoor_redirect_through_iptables_nft_is_high_too(tmp_path):
    got = _netns(tmp_path, "iptables-nft -t nat -A PREROUTING -p tcp --dport 443 -s 203.0.113.5 -j REDIRECT "
                 "--to-port 42391", traffic=False)
    found = _findings(got["streams"])
    (hit,) = found["TRI-FW-001"]
    assert "203.0.113.5/32" in hit["summary"] and "42391" in hit["summary"]


def test_docker_host_and_debian_default_say_nothing_together(tmp_path):
    docker = tmp_path / "docker.rules"
    docker.write_text(DOCKER_SAVE)
    debian = _debian_conf(tmp_path)
    got = _netns(tmp_path, f"nft -f {debian}\niptables-legacy-restore < {docker}",
                 options={"saved_configs": [str(debian), str(docker)]})
    _check_against_save(got, "ipv4")
    _check_against_nft(got)
    assert _findings(got["streams"]) == {}
    (summary,) = got["streams"]["firewall_summary"]
    assert summary["saved_configs"] == {str(debian): 0, str(docker): 18}
    user = [r for r in got["streams"]["iptables_rules"] if r["chain"] == "DOCKER-USER"]
    assert [r["target"] for r in user] == ["RETURN"]  # Docker's explicit RETURN is a rule, the chain's end is not


def test_every_firewall_rule_has_its_case():
    assert {r.id for r in RULES} == set(CASES) | {"TRI-FW-008", "TRI-FW-009"}  # those two: tests below


def test_many_anonymous_sets_are_bounded(tmp_path):
    lines = "\n".join(f"add rule inet many input tcp dport {{ {i}, {i + 30000} }} accept" for i in range(1, 3001))
    (tmp_path / "many.nft").write_text("add table inet many\nadd chain inet many input "
                                       "{ type filter hook input priority 0; policy accept; }\n" + lines + "\n")
    got = _netns(tmp_path, f"nft -f {tmp_path}/many.nft", options={"max_set_dumps": 100}, traffic=False)
    rules = got["streams"]["nft_rules"]
    assert len(rules) == 3000
    assert rules[0]["dport"] == "{ 1, 30001 }"  # an anonymous set whose elements were read
    assert sum(1 for r in rules if r["dport"].startswith("{")) == 100  # the rest are named, not read
    _check_against_nft(got)


def test_whole_run_bpfdoor_redirect_says_yes_and_docker_host_says_no(tmp_path):
    _tools()
    docker = tmp_path / "docker.rules"
    docker.write_text(DOCKER_SAVE)
    verdicts = {}
    for name, setup in (("planted", "iptables-legacy -t nat -A PREROUTING -p tcp --dport 443 -s 203.0.113.5 "
                                    "-j REDIRECT --to-port 42391"),
                        ("benign", f"iptables-legacy-restore < {docker}")):
        out = tmp_path / name
        script = f"set -eu\nip link set lo up\n{setup}\nexec {sys.executable} -m agent collect --artifacts firewall " \
                 f"--output {out}"
        collected = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, cwd=REPO,
                                   timeout=300)
        bundle = json.loads(collected.stdout.decode().strip().splitlines()[-1])["bundle"]
        proc = subprocess.run([sys.executable, "-m", "agent", "analyze", bundle, "--output", str(out / "an")],
                              capture_output=True, cwd=REPO, timeout=600)
        summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        with tarfile.open(summary["analysis"]) as tar:
            names = tar.getnames()
            findings = [json.loads(x) for x in tar.extractfile("triagent/artifacts/findings.jsonl").read()
                        .splitlines()] if "triagent/artifacts/findings.jsonl" in names else []
            verdicts[name] = (json.loads(tar.extractfile("triagent/verdict.json").read()), findings)
    verdict, findings = verdicts["planted"]
    (hit,) = [f for f in findings if f["rule"] == "TRI-FW-002"]
    assert hit["evidence"][0]["member"].endswith("artifacts/iptables_rules.jsonl") and "42391" in hit["summary"]
    assert verdict["recommendation"] == "yes", verdict
    verdict, findings = verdicts["benign"]
    assert not [f for f in findings if f["rule"].startswith("TRI-FW-")], findings
    assert verdict["recommendation"] == "no", verdict


def test_less_common_expressions_read_as_nft_writes_them_and_unknown_ones_are_named(tmp_path):
    ruleset = """
table inet f {
  counter c1 { }
  chain input { type filter hook input priority 0; policy accept;
    iif "lo" accept
    fib daddr type local accept
    meta mark set 0x10
    ct mark set 0x5
    udp dport 5000 quota 10 mbytes drop
    log prefix "in: " counter drop
    counter name "c1"
    meta skuid 1000 tcp dport 4444 drop
    tcp option maxseg size 1400 accept
  }
}
table netdev n { chain ing { type filter hook ingress device "lo" priority 0; policy accept; }; }
"""
    got = _netns(tmp_path, f"nft -f - <<'EOF'\n{ruleset}\nEOF", traffic=False)
    _check_against_nft(got)
    texts = [r["text"] for r in got["streams"]["nft_rules"]]
    assert texts[:8] == ['meta iif "lo" accept', "fib daddr type local accept", "meta mark set 0x10", "ct mark set 0x5",
                         "meta l4proto udp th dport 5000 quota 10485760 bytes drop",
                         'log prefix "in: " counter packets 0 bytes 0 drop', 'counter name "c1"',
                         "meta skuid 1000 meta l4proto tcp th dport 4444 drop"]
    last = got["streams"]["nft_rules"][-1]
    assert last["unknown_expressions"] == ["exthdr"] and "<exthdr>" in last["text"] and last["action"] == "accept"
    ing = next(c for c in got["streams"]["nft_chains"] if c["family"] == "netdev")
    assert (ing["hook"], ing["device"], ing["policy"]) == ("ingress", "lo", "accept")


def test_malformed_netlink_attributes_never_raise():
    """The parser takes what the kernel sends; truncated or nonsensical attributes are named, never raised."""
    import random

    rng = random.Random(7)
    names = ["payload", "meta", "ct", "cmp", "bitwise", "range", "lookup", "immediate", "counter", "nat", "redir",
             "masq", "log", "reject", "limit", "queue", "match", "target", "fib", "objref", "quota", "weird"]

    def nla(kind: int, value: bytes) -> bytes:
        return firewall._nla(kind, value)

    for _ in range(3000):
        rule = firewall.Rule(rng.choice(["ip", "ip6", "inet", "bridge"]), {}, "t")
        for _ in range(rng.randint(1, 6)):
            body = b"".join(nla(rng.randint(1, 8), rng.randbytes(rng.choice([0, 1, 2, 3, 4, 8, 16, 40])))
                            for _ in range(rng.randint(0, 5)))
            if rng.random() < 0.3:  # nested data with a verdict, or a value
                body += nla(2, nla(rng.choice([1, 2]), nla(1, rng.randbytes(4)) + nla(2, b"chain\0")))
            rule.add(rng.choice(names), firewall.attrs(body[:rng.randint(0, len(body))] if rng.random() < 0.2
                                                       else body))
        record = rule.record()
        assert isinstance(record["text"], str)
    assert firewall.attrs(b"\xff\xff\x01\x00garbage") == {}
    assert firewall.attrs(b"\x03\x00\x01\x00") == {}


# --- legacy arptables (real arptables-legacy in the test's namespace) -------------------------------------

ARP_TOOLS = ("arptables-legacy",)
# an ARP request for 10.55.0.1 (a1's address) sent out of a0 with a packet socket: a1 receives it (ARP INPUT)
# and answers (ARP OUTPUT), so that counters move
ARP_SEND = textwrap.dedent("""
    import socket, struct
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("a0", 0))
    mac = s.getsockname()[4]
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, socket.inet_aton("10.55.0.2"), b"\\0" * 6,
                      socket.inet_aton("10.55.0.1"))
    for _ in range(3):
        s.send(b"\\xff" * 6 + mac + b"\\x08\\x06" + arp)
""")
ARP_SETUP = f"""
ip link add a0 type veth peer name a1
ip addr add 10.55.0.1/24 dev a1
ip link set a0 up
ip link set a1 up
arptables-legacy -A INPUT -s 10.0.0.5 -j DROP
arptables-legacy -A INPUT --source-mac 02:11:22:00:00:00/ff:ff:ff:00:00:00 -d 10.1.0.0/16 ! -i eth+ -j ACCEPT
arptables-legacy -A INPUT -i a1 --opcode 1 -j ACCEPT
arptables-legacy -A OUTPUT -o a1 --opcode 2 --h-length 6 -j mangle --mangle-mac-s 02:de:ad:be:ef:01 \\
  --mangle-ip-s 10.55.0.99
arptables-legacy -N SPOOF
arptables-legacy -A SPOOF -s 10.55.0.7 -j RETURN
arptables-legacy -A FORWARD -j SPOOF
arptables-legacy -P FORWARD DROP
sleep 0.2
{sys.executable} -c {_q(ARP_SEND)}
sleep 0.3
"""
_ARP_CHAIN = re.compile(r"^Chain (\S+) \((?:policy (\S+) (\d+) packets, (\d+) bytes|\d+ references)\)$")
_ARP_RULE = re.compile(r"^(?:\d+ )?(-j .*) , pcnt=(\d+) -- bcnt=(\d+)\s*$")


def _arp_tools() -> None:
    missing = [t for t in ARP_TOOLS if shutil.which(t) is None]
    need(not missing, f"{missing} missing (apt-get install arptables)")


def test_legacy_arptables_are_read_as_arptables_shows_them(tmp_path):
    """Rules set with the real arptables-legacy (a drop, a MAC-masked accept with an inverted wildcard
    interface, an opcode match that a real ARP request hits, a mangle of the replies, a user chain and a DROP
    policy): every chain (policy, counters) and rule (text, counters) of ``arptables-legacy -L -n -v -x`` is
    in the records, the mangle rule raises TRI-FW-008."""
    _arp_tools()
    got = _netns(tmp_path, ARP_SETUP, traffic=False, after=f"arptables-legacy -L -n -v -x > {tmp_path}/arp.txt")
    chains = {c["chain"]: c for c in got["streams"]["iptables_chains"] if c["family"] == "arp"}
    rules: dict[str, list[dict]] = {}
    for r in got["streams"]["arptables_rules"]:
        rules.setdefault(r["chain"], []).append(r)
    chain = None
    seen: dict[str, int] = {}
    for line in (tmp_path / "arp.txt").read_text().splitlines():
        if m := _ARP_CHAIN.match(line):
            chain = m[1]
            mine = chains[chain]
            if m[2]:
                assert (mine["policy"], mine["packets"], mine["bytes"]) == (m[2], int(m[3]), int(m[4])), (mine, line)
            else:
                assert not mine["builtin"] and mine["policy"] is None
        elif m := _ARP_RULE.match(line):
            i = seen.get(chain, 0)
            seen[chain] = i + 1
            mine = rules[chain][i]
            assert mine["text"] == m[1].strip(), (mine["text"], line)
            assert (mine["packets"], mine["bytes"]) == (int(m[2]), int(m[3])), (mine, line)
    assert {k: len(v) for k, v in rules.items()} == seen and set(chains) == {"INPUT", "OUTPUT", "FORWARD", "SPOOF"}
    hit = rules["INPUT"][2]
    assert hit["opcode"] == "1" and hit["in_iface"] == "a1" and hit["packets"] >= 3
    mangle = rules["OUTPUT"][0]
    assert (mangle["action"], mangle["mangle_mac_s"], mangle["mangle_ip_s"]) == ("mangle", "02:de:ad:be:ef:01",
                                                                                 "10.55.0.99")
    assert mangle["packets"] >= 1  # the replies to our requests went through it
    assert rules["FORWARD"][0]["jump_to"] == "SPOOF" and chains["FORWARD"]["policy"] == "DROP"
    (summary,) = got["streams"]["firewall_summary"]
    assert summary["arptables_tables"] == ["filter"] and summary["arptables_rules"] == 6
    found = _findings(got["streams"])
    assert [f["rule"] for hits in found.values() for f in hits] == ["TRI-FW-008"]


def test_lvs_direct_routing_arptables_are_quiet(tmp_path):
    """An LVS direct-routing real server's arptables (drop ARP for the virtual address, answer with the real
    address as sender): mangles an IP, never a MAC: no finding."""
    _arp_tools()
    got = _netns(tmp_path, "arptables-legacy -A INPUT -d 192.0.2.80 -j DROP\n"
                 "arptables-legacy -A OUTPUT -s 192.0.2.80 -j mangle --mangle-ip-s 192.0.2.11", traffic=False)
    assert [r["action"] for r in got["streams"]["arptables_rules"]] == ["drop", "mangle"]
    assert _findings(got["streams"]) == {}


# --- legacy ebtables: documented format (linux/netfilter_bridge/ebtables.h), not written by ebtables ------
# This kernel (and many cloud kernels) is built without CONFIG_BRIDGE_NF_EBTABLES_LEGACY: the kernel answers
# EBT_SO_GET_INFO with ENOPROTOOPT, so the blob EBT_SO_GET_ENTRIES returns is built here from the header's
# layout (offsets checked with offsetof against the uapi header: ebt_entries 48 bytes, ebt_entry 112,
# watchers/target/next offsets at 100/104/108, ebt_entry_match/_watcher/_target 40-byte heads).

def _ebt_ext(name: str, data: bytes) -> bytes:
    data += b"\0" * (-len(data) % 8)
    return name.encode().ljust(31, b"\0") + b"\0" + struct.pack("=I4x", len(data)) + data


def _ebt_entry(*, proto: int | None = None, inv: int = 0, in_: str = "", out: str = "", smac: bytes = b"",
               smsk: bytes = b"", dmac: bytes = b"", dmsk: bytes = b"", matches: list[bytes] = (),
               watchers: list[bytes] = (), target: bytes) -> bytes:
    bitmask = 0x01 | (0 if proto is not None else 0x02)  # EBT_ENTRY_OR_ENTRIES, EBT_NOPROTO
    head = struct.pack("=IIH", bitmask, inv, socket.htons(proto or 0))
    head += b"".join(n.encode().ljust(16, b"\0") for n in (in_, "", out, ""))
    head += b"".join(x.ljust(6, b"\0") for x in (smac, smsk, dmac, dmsk))
    m, w = b"".join(matches), b"".join(watchers)
    head += b"\0" * 2  # to 100
    body = m + w + target
    return head + struct.pack("=III", 112 + len(m), 112 + len(m) + len(w), 112 + len(body)) + b"\0" * 0 + body


def _ebt_chain(name: str, policy: int, counter_offset: int, n: int) -> bytes:
    return struct.pack("=I", 0) + name.encode().ljust(32, b"\0") + struct.pack("=IiI", counter_offset, policy, n) \
        + b"\0" * 0


def _standard(verdict: int) -> bytes:
    return _ebt_ext("standard", struct.pack("=i", verdict))


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _ebt_nat_table() -> tuple[bytes, int]:
    """table nat: PREROUTING (arpreply for ARP on eth0, a dnat of one MAC), OUTPUT (empty, DROP policy),
    POSTROUTING (a masked source MAC jumps to user chain "mark_in"), mark_in (IPv4 with an ip match and a log
    watcher: ACCEPT). Returns (blob, valid_hooks)."""
    pre = [_ebt_entry(proto=0x0806, in_="eth0", target=_ebt_ext("arpreply", _mac("02:aa:00:00:00:01") + b"\0\0"
                                                                + struct.pack("=i", -2))),
           _ebt_entry(dmac=_mac("00:11:22:33:44:55"), dmsk=b"\xff" * 6,
                      target=_ebt_ext("dnat", _mac("02:aa:bb:cc:dd:ee") + b"\0\0" + struct.pack("=i", -1)))]
    post_head_len = 48
    blob = b""
    blob += _ebt_chain("PREROUTING", -1, 0, 2) + b"".join(pre)
    blob += _ebt_chain("OUTPUT", -2, 2, 0)
    post_at = len(blob)
    user_at = post_at + post_head_len + len(_ebt_entry(smac=_mac("02:00:00:00:00:00"),
                                                        smsk=_mac("ff:ff:ff:00:00:00"), inv=0x08,
                                                        target=_standard(0)))
    post = _ebt_entry(smac=_mac("02:00:00:00:00:00"), smsk=_mac("ff:ff:ff:00:00:00"), inv=0x08,
                      target=_standard(user_at))
    blob += _ebt_chain("POSTROUTING", -1, 2, 1) + post
    assert len(blob) == user_at
    blob += _ebt_chain("mark_in", -4, 3, 1) + _ebt_entry(
        proto=0x0800, matches=[_ebt_ext("ip", b"\0" * 40)], watchers=[_ebt_ext("log", b"\0" * 40)],
        target=_standard(-1))
    return blob, (1 << 0) | (1 << 3) | (1 << 4)


def test_ebtables_entries_in_the_documented_layout():
    blob, valid = _ebt_nat_table()
    counts: dict = {}
    counters = [(5, 300), (1, 60), (7, 700), (2, 120)]
    items = list(firewall.ebt_entries(blob, "nat", valid, counters, 100, counts))
    assert not [i for i in items if isinstance(i, Problem)]
    streams: dict[str, list[dict]] = {}
    for i in items:
        streams.setdefault(i.stream, []).append(i.data)
    chains = {c["chain"]: c for c in streams["iptables_chains"]}
    assert {n: (c["policy"], c["rules"], c["builtin"]) for n, c in chains.items()} == {
        "PREROUTING": ("ACCEPT", 2, True), "OUTPUT": ("DROP", 0, True), "POSTROUTING": ("ACCEPT", 1, True),
        "mark_in": ("RETURN", 1, False)}
    arp, dnat, jump, user = streams["ebtables_rules"]
    assert (arp["proto"], arp["in_iface"], arp["target"], arp["to_mac"], arp["packets"], arp["bytes"]) == \
        ("ARP", "eth0", "arpreply", "02:aa:00:00:00:01", 5, 300)
    assert arp["text"] == "-p ARP -i eth0 -j arpreply --arpreply-mac 02:aa:00:00:00:01 --arpreply-target DROP"
    assert (dnat["dst_mac"], dnat["to_mac"], dnat["position"], dnat["packets"]) == \
        ("00:11:22:33:44:55", "02:aa:bb:cc:dd:ee", 2, 1)
    assert dnat["text"] == "-d 00:11:22:33:44:55 -j dnat --to-dst 02:aa:bb:cc:dd:ee --dnat-target ACCEPT"
    assert (jump["src_mac"], jump["jump_to"], jump["action"], jump["packets"]) == \
        ("! 02:00:00:00:00:00/ff:ff:ff:00:00:00", "mark_in", "jump", 7)
    assert (user["proto"], user["matches"], user["watchers"], user["target"], user["chain"]) == \
        ("IPv4", ["ip"], ["log"], "ACCEPT", "mark_in")
    assert counts["ebtables_rules"] == 4
    found = _findings(streams)
    assert sorted(f["chain"] + ":" + f["target"] for f in found["TRI-FW-009"]) == ["PREROUTING:arpreply",
                                                                                   "PREROUTING:dnat"]
    assert set(found) == {"TRI-FW-009"}
    # libvirt's nwfilter chains: ACCEPT/DROP/RETURN and, by name, left alone
    libvirt = [{**r, "chain": "libvirt-I-vnet0"} for r in streams["ebtables_rules"]]
    assert _findings({"ebtables_rules": libvirt}) == {}
    # bounded: a cap of 1 rule, and a blob cut in the middle of an entry, give what fits and no exception
    capped: dict = {}
    few = list(firewall.ebt_entries(blob, "nat", valid, counters, 1, capped))
    assert sum(1 for i in few if isinstance(i, Record) and i.stream == "ebtables_rules") == 1 and capped["truncated"]
    for cut in range(0, len(blob), 37):
        list(firewall.ebt_entries(blob[:cut], "nat", valid, counters[:1], 100, {}))


def test_ebtables_on_a_kernel_without_legacy_ebtables_is_no_error(tmp_path):
    """Here the kernel answers ENOPROTOOPT (or the tables are not in this namespace): nothing recorded, no
    Problem, the summary says no ebtables table."""
    got = _netns(tmp_path, "true", traffic=False)
    assert not got["streams"].get("ebtables_rules")
    assert not [p for p in got["problems"] if "ebtables" in p["message"]]
    (summary,) = got["streams"]["firewall_summary"]
    assert summary["ebtables_rules"] == 0 and summary["arptables_rules"] == 0 and summary["nft_flowtables"] == 0


def test_ebtables_with_the_real_tool_where_the_kernel_has_them(tmp_path):
    """Where the kernel has legacy ebtables (Debian's own kernels do, as modules): rules set with the real
    ebtables-legacy, read back. Kernels built without it (this CI's) skip: that is the kernel, not a package."""
    need(shutil.which("ebtables-legacy") is not None, "ebtables-legacy missing (apt-get install ebtables)")
    _tools()
    probe = subprocess.run(["unshare", "-n", "ebtables-legacy", "-t", "nat", "-L"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel has no legacy ebtables: {probe.stderr.strip()[:200]}")
    got = _netns(tmp_path, "ebtables-legacy -t nat -A PREROUTING -p ARP -i eth0 -j arpreply --arpreply-mac "
                 "02:aa:00:00:00:01\nebtables-legacy -t nat -A PREROUTING -d 00:11:22:33:44:55 -j dnat "
                 "--to-dst 02:aa:bb:cc:dd:ee --dnat-target ACCEPT\nebtables-legacy -t filter -P FORWARD DROP",
                 traffic=False)
    rules = got["streams"]["ebtables_rules"]
    assert [(r["table"], r["chain"], r["target"], r["to_mac"]) for r in rules] == [
        ("nat", "PREROUTING", "arpreply", "02:aa:00:00:00:01"), ("nat", "PREROUTING", "dnat", "02:aa:bb:cc:dd:ee")]
    chains = {(c["table"], c["chain"]): c for c in got["streams"]["iptables_chains"] if c["family"] == "bridge"}
    assert chains[("filter", "FORWARD")]["policy"] == "DROP"
    assert set(_findings(got["streams"])) == {"TRI-FW-009"}


# --- nft flowtables ---------------------------------------------------------------------------------------

def test_flowtables_with_nft_where_the_kernel_has_them(tmp_path):
    """A flowtable and a rule offloading to it, set with the real nft; compared with ``nft -j list flowtables``.
    Kernels built without CONFIG_NF_FLOW_TABLE (this CI's) refuse the flowtable: skipped (the kernel)."""
    _tools()
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "nft add table inet t && nft 'add flowtable inet t ft "
                            "{ hook ingress priority 0; devices = { lo }; }'"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel has no nft flowtables: {probe.stderr.strip()[:200]}")
    got = _netns(tmp_path, "nft -f - <<'EOF'\ntable inet t {\n flowtable ft { hook ingress priority 0; devices = "
                 "{ lo }; counter; }\n chain fwd { type filter hook forward priority 0; ip protocol tcp flow add "
                 "@ft; }\n}\nEOF", traffic=False)
    mine = {(f["family"], f["table"], f["name"]): f for f in got["streams"]["nft_flowtables"]}
    want = [o["flowtable"] for o in got["nft"]["nftables"] if "flowtable" in o]
    assert len(mine) == len(want) == 1
    for ft in want:
        f = mine[(ft["family"], ft["table"], ft["name"])]
        devs = ft["dev"] if isinstance(ft["dev"], list) else [ft["dev"]]
        assert (f["hook"], f["priority"], f["devices"], f["handle"]) == (ft["hook"], ft["prio"], devs, ft["handle"])
    (rule,) = [r for r in got["streams"]["nft_rules"] if r["chain"] == "fwd"]
    assert rule["flowtable"] == "ft" and "flow add @ft" in rule["text"]
    assert got["streams"]["firewall_summary"][0]["nft_flowtables"] == 1


def test_flowtable_records_from_documented_attributes():
    """NFT_MSG_NEWFLOWTABLE attributes (linux/netfilter/nf_tables.h: TABLE 1, NAME 2, HOOK 3 {NUM 1, PRIORITY
    2, DEVS 3 {DEVICE_NAME 1 ...}}, USE 4, HANDLE 5, FLAGS 7) as the kernel sends them: documented format."""
    def nla(kind: int, value: bytes) -> bytes:
        return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)

    devs = nla(1, b"eth0\0") + nla(1, b"eth1\0")
    hook = nla(1, struct.pack(">I", 0)) + nla(2, struct.pack(">i", -100)) + nla(3 | 0x8000, devs)
    body = (nla(1, b"filter\0") + nla(2, b"fastpath\0") + nla(3 | 0x8000, hook) + nla(4, struct.pack(">I", 2))
            + nla(5, struct.pack(">Q", 7)) + nla(7, struct.pack(">I", 3)))
    rec = firewall.flowtable_record("inet", firewall.attrs(body))
    assert rec == {"family": "inet", "table": "filter", "name": "fastpath", "handle": 7, "hook": "ingress",
                   "priority": -100, "devices": ["eth0", "eth1"], "flags": 3, "hw_offload": True, "counter": True,
                   "use": 2}
    for cut in range(len(body)):  # cut anywhere: a record or nothing, never an exception
        firewall.flowtable_record("inet", firewall.attrs(body[:cut]))


def _ebt_atomic_start(path: Path, table: str, hooks: list[str]) -> None:
    """An empty ebtables table in ebtables' --atomic-file format (communication.c store_table_in_file: struct
    ebt_replace, the entries blob, the counters): what --atomic-init would take from the kernel, which this
    kernel cannot give. The real ebtables-legacy then adds the rules to it."""
    valid = sum(1 << firewall.EBT_HOOKS.index(h) for h in hooks)
    chains = b"".join(struct.pack("=I", 0) + h.encode().ljust(32, b"\0") + struct.pack("=IiI", 0, -1, 0)
                      for h in hooks)
    path.write_bytes(firewall.EBT_REPLACE.pack(table.encode(), valid, 0, len(chains), *[0] * 6, 0, 0, 0) + chains)


def _ebt_mac(text: str) -> str:
    """ebtables -L writes 2:aa:0:0:0:1; the records write 02:aa:00:00:00:01."""
    return "/".join(":".join(f"{int(b, 16):02x}" for b in part.split(":")) for part in text.split("/"))


def test_ebtables_blob_written_by_the_real_ebtables(tmp_path):
    """The entries blob EBT_SO_GET_ENTRIES returns is the one ebtables hands the kernel, and ebtables-legacy
    writes exactly that (struct ebt_replace, entries, counters) to its --atomic-file: the real tool builds
    the nat table here (an arpreply for ARP on eth0, a dnat of one MAC, an inverted masked source MAC jumping
    to a user chain with an ip match and a log watcher, counters set with -C, a DROP policy), and the
    collector's parser reads the blob as ``ebtables-legacy --atomic-file F -L --Lc`` lists it."""
    tool = shutil.which("ebtables-legacy")
    need(tool is not None, "ebtables-legacy missing (apt-get install ebtables)")
    atomic = tmp_path / "nat.ebt"
    _ebt_atomic_start(atomic, "nat", ["PREROUTING", "OUTPUT", "POSTROUTING"])
    for args in (["-A", "PREROUTING", "-p", "ARP", "-i", "eth0", "-j", "arpreply", "--arpreply-mac",
                  "02:aa:00:00:00:01"],
                 ["-A", "PREROUTING", "-d", "00:11:22:33:44:55", "-j", "dnat", "--to-dst", "02:aa:bb:cc:dd:ee",
                  "--dnat-target", "ACCEPT"],
                 ["-N", "mark_in", "-P", "RETURN"],
                 ["-A", "POSTROUTING", "-s", "!", "02:00:00:00:00:00/ff:ff:ff:00:00:00", "-j", "mark_in"],
                 ["-A", "mark_in", "-p", "IPv4", "--ip-src", "10.0.0.0/8", "--log-prefix", "x", "-j", "ACCEPT"],
                 ["-P", "OUTPUT", "DROP"], ["-C", "PREROUTING", "1", "5", "300"],
                 ["-C", "POSTROUTING", "1", "7", "700"]):
        done = subprocess.run([tool, "--atomic-file", str(atomic), "-t", "nat", *args], capture_output=True,
                              text=True)
        assert done.returncode == 0, (args, done.stderr)
    listing = subprocess.run([tool, "--atomic-file", str(atomic), "-t", "nat", "-L", "--Lc"], capture_output=True,
                             text=True, check=True).stdout
    data = atomic.read_bytes()
    head = firewall.EBT_REPLACE.unpack_from(data, 0)
    valid, nentries, size = head[1], head[2], head[3]
    blob = data[firewall.EBT_REPLACE.size:firewall.EBT_REPLACE.size + size]
    raw = data[firewall.EBT_REPLACE.size + size:]
    counters = [struct.unpack_from("=QQ", raw, i * 16) for i in range(nentries)]
    counts: dict = {}
    items = list(firewall.ebt_entries(blob, "nat", valid, counters, 100, counts))
    assert not [i for i in items if isinstance(i, Problem)]
    streams: dict[str, list[dict]] = {}
    for i in items:
        streams.setdefault(i.stream, []).append(i.data)
    chains = {c["chain"]: c for c in streams["iptables_chains"]}
    rules: dict[str, list[dict]] = {}
    for r in streams["ebtables_rules"]:
        rules.setdefault(r["chain"], []).append(r)
    chain = None
    seen = 0
    for line in listing.splitlines():
        if m := re.match(r"^Bridge chain: (\S+), entries: (\d+), policy: (\S+)$", line):
            chain = m[1]
            assert (chains[chain]["rules"], chains[chain]["policy"]) == (int(m[2]), m[3]), (chains[chain], line)
        elif m := re.match(r"^(.*?)\s*, pcnt = (\d+) -- bcnt = (\d+)$", line):
            mine = rules[chain].pop(0)
            seen += 1
            assert (mine["packets"], mine["bytes"]) == (int(m[2]), int(m[3])), (mine, line)
            words = m[1].split()
            target = words[words.index("-j") + 1]
            assert mine["target"] == target, (mine, line)
            for flag, key in (("-p", "proto"), ("-i", "in_iface")):
                if flag in words:
                    assert mine[key] == words[words.index(flag) + 1], (mine, line)
            for flag, key in (("-s", "src_mac"), ("-d", "dst_mac"), ("--to-dst", "to_mac"),
                              ("--arpreply-mac", "to_mac")):
                if flag in words:
                    value = words[words.index(flag) + 1]
                    neg = value == "!"
                    value = _ebt_mac(words[words.index(flag) + 2] if neg else value)
                    assert mine[key] == ("! " if neg else "") + value, (mine, line)
            if "--ip-src" in words:
                assert mine["matches"] == ["ip"]
            if "--log-prefix" in words:
                assert mine["watchers"] == ["log"]
    assert seen == nentries == counts["ebtables_rules"] == 4 and not any(rules.values())
    assert set(chains) == {"PREROUTING", "OUTPUT", "POSTROUTING", "mark_in"} and chains["OUTPUT"]["policy"] == "DROP"
    found = _findings(streams)
    assert set(found) == {"TRI-FW-009"} and len(found["TRI-FW-009"]) == 2
