"""triagent rank over six bundles made by the real collector from different fake roots: hosts come out in
score order (criticals break a tie), the planted attacker key links exactly the two hosts that carry it,
the Parquet tables match specs/tables/*.sql, the rules computed here agree with `triagent analyze`, an
analysis bundle beside a bundle is used (and a stale one is not), and a damaged bundle is reported
without stopping the ranking."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from bench_rank import SHARED_C2, build_fleet_root, collect, make_keys
from conftest import REPO, need, run_triagent

HAVE_FLEET = all(importlib.util.find_spec(m) is not None for m in ("duckdb", "pyarrow"))
FLEET_REASON = "duckdb and pyarrow (the 'fleet' extra) are not installed: pip install -e '.[fleet]'"

# name -> planted features (tests/bench/bench_rank.py); expected (score, recommendation) from specs/verdict.toml
HOSTS = {
    "clean": (set(), 0, "no"),
    "keyed_a": ({"attacker_key"}, 10, "no"),  # two low SSH-key rules: a new key alone is no intrusion
    "keyed_b": ({"attacker_key", "dropper"}, 60, "yes"),  # + curl | bash from a raw address (high)
    "revshell": ({"revshell"}, 100, "yes"),  # bash -i >& /dev/tcp (critical)
    "miner": ({"miner_cron", "history_off"}, 100, "yes"),  # two highs: ties with revshell, no critical
    "full": ({"full"}, 100, "yes"),  # tests/support/fakeroot.py with its cron
}
EXPECTED_ORDER = ["full", "revshell", "miner", "keyed_b", "keyed_a", "clean"]  # score, then criticals


def rank(folder: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run_triagent([str(folder), "--format", "json", *extra], cmd=[sys.executable, "-m", "agent.responder.rank"])
    assert proc.returncode in (0, 1), proc.stderr.decode()[-3000:]
    return proc, json.loads(proc.stdout)


def by_host(result: dict) -> dict[str, dict]:
    return {h["host_key"].split("/")[0]: h for h in result["hosts"]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> dict:
    need(HAVE_FLEET, FLEET_REASON)
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen (openssh-client) is needed to make the planted keys")
    work = tmp_path_factory.mktemp("fleet")
    keys = make_keys(work / "keys")
    bundles = {}
    for seed, (name, (features, _, _)) in enumerate(HOSTS.items()):
        root = work / "roots" / name
        build_fleet_root(root, name, features, keys, seed=seed)
        bundles[name] = collect(root, work / "bundles" / name)
    proc, result = rank(work / "bundles", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return {"work": work, "keys": keys, "bundles": bundles, "result": result, "tables": Path(result["tables"])}


def test_hosts_ranked_by_score_then_criticals(fleet):
    result = fleet["result"]
    assert result["bundles"] == len(HOSTS) and result["unreadable"] == 0
    order = [h["host_key"].split("/")[0] for h in result["hosts"]]
    assert order == EXPECTED_ORDER, [(h["host_key"], h["score"], h["critical"], h["high"]) for h in result["hosts"]]
    hosts = by_host(result)
    for name, (_, score, recommendation) in HOSTS.items():
        assert (hosts[name]["score"], hosts[name]["recommendation"]) == (score, recommendation), hosts[name]
        assert hosts[name]["findings_source"] == "rules"
        # the collector read /etc/machine-id from the fake root, so each bundle is its own host
        assert hosts[name]["machine_id"] and hosts[name]["hostname"] == name
    assert hosts["revshell"]["critical"] == 1 and hosts["miner"]["critical"] == 0 and hosts["miner"]["high"] == 2
    assert hosts["revshell"]["top_rule"] == "TRI-EXEC-002"
    assert hosts["clean"]["findings"] == 0 and hosts["clean"]["top_finding"] is None
    assert hosts["keyed_a"]["linked_hosts"] >= 1 and hosts["keyed_b"]["linked_hosts"] >= 1


def test_shared_indicators(fleet):
    shared = {(s["kind"], s["value"]): s for s in fleet["result"]["shared_indicators"]}
    attacker_fp, corp_fp = fleet["keys"]["attacker"][1], fleet["keys"]["corp"][1]
    key = shared[("ssh_key_fingerprint", attacker_fp)]
    assert sorted(k.split("/")[0] for k in key["host_keys"]) == ["keyed_a", "keyed_b"]
    assert key["hosts"] == 2 and key["flagged_hosts"] == 2 and key["streams"] == ["ssh_keys"]
    # the corporate key is on every small host, on a normal user and old: shared but tied to no finding,
    # so it is listed after what links hosts to findings
    corp = shared[("ssh_key_fingerprint", corp_fp)]
    assert corp["hosts"] == 5 and corp["flagged_hosts"] == 0
    listed = list(shared)
    assert listed.index(("ssh_key_fingerprint", attacker_fp)) < listed.index(("ssh_key_fingerprint", corp_fp))
    c2 = shared[("remote_ip", SHARED_C2)]
    assert sorted(k.split("/")[0] for k in c2["host_keys"]) == ["miner", "revshell"]
    assert sorted(c2["streams"]) == ["cron", "histories"] and c2["flagged_hosts"] == 2
    assert all(s["hosts"] >= 2 for s in shared.values())


def test_table_output_and_single_worker_agree(fleet, tmp_path):
    proc = run_triagent([str(fleet["work"] / "bundles"), "--output", str(tmp_path / "t"), "--jobs", "1"],
                        cmd=[sys.executable, "-m", "agent.responder.rank"])
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    text = proc.stdout.decode()
    assert text.startswith("Hosts by score") and "Shared indicators" in text
    rows = [line.split() for line in text.splitlines()[2:2 + len(HOSTS)]]
    assert [int(r[1]) for r in rows] == [HOSTS[n][1] for n in EXPECTED_ORDER]
    _, again = rank(fleet["work"] / "bundles", "--output", str(tmp_path / "j"), "--jobs", "1")
    drop = ("tables", "seconds", "export_seconds", "bundles_per_s")
    assert {k: v for k, v in again.items() if k not in drop} == \
        {k: v for k, v in fleet["result"].items() if k not in drop}


def test_tables_ranked_as_they_are(fleet, tmp_path):
    """rank --tables (the tables triagent fleet analyze writes, or any made before): the same ranking from
    the Parquet files alone, no bundle read; a folder without tables is refused."""
    tables = tmp_path / "tables"
    shutil.copytree(fleet["tables"], tables)  # alone: no bundle anywhere near
    _, again = rank(tables, "--tables")
    assert again["bundles"] == len(HOSTS) and again["unreadable"] == 0 and again["tables"] == str(tables)
    assert again["hosts"] == fleet["result"]["hosts"]
    assert again["shared_indicators"] == fleet["result"]["shared_indicators"]
    proc = run_triagent([str(tmp_path / "nothing"), "--tables"], cmd=[sys.executable, "-m", "agent.responder.rank"])
    assert proc.returncode == 2 and b"no hosts/ table folder" in proc.stderr


# An independent reading of the DDL (not agent/responder/rank.py's parser): column names in order and their types.
PARQUET_TYPES = {"STRING": "string", "INT": "int32", "BIGINT": "int64", "BOOLEAN": "bool", "DOUBLE": "double",
                 "TIMESTAMP": "timestamp[us]", "ARRAY<STRING>": "list<element: string>",
                 "ARRAY<BIGINT>": "list<element: int64>",
                 "ARRAY<STRUCT<BUNDLE:STRING,MEMBER:STRING,LINE:INT>>":
                     "list<element: struct<bundle: string, member: string, line: int32>>"}


def ddl_columns(path: Path) -> list[tuple[str, str]]:
    text = path.read_text()
    assert re.search(r"^CREATE EXTERNAL TABLE IF NOT EXISTS \w+ \($", text, re.M), path
    assert re.search(r"^STORED AS PARQUET$", text, re.M) and re.search(r"^LOCATION 's3://[^']+/'", text, re.M)
    columns = re.findall(r"^  (\w+)\s+(\S+)\s+COMMENT '[^']+',?$", text, re.M)
    body = text.split("CREATE EXTERNAL TABLE", 1)[1].split("(", 1)[1].rsplit(")\nCOMMENT", 1)[0]
    defined = [line for line in body.splitlines() if line.strip()]
    assert len(columns) == len(defined), f"{path}: a column lacks a comment"
    return [(name, kind.upper()) for name, kind in columns]


def test_parquet_matches_specs(fleet):
    import pyarrow.parquet as pq

    specs = sorted((REPO / "specs" / "tables").glob("*.sql"))
    assert {p.stem for p in specs} == {"hosts", "findings", "indicators", "processes", "connections", "ssh_keys"}
    counts = {}
    for spec in specs:
        expected = ddl_columns(spec)
        parts = sorted((fleet["tables"] / spec.stem).glob("part-*.parquet"))
        assert parts, spec.stem
        for part in parts:
            schema = pq.read_schema(part)
            assert [(f.name, str(f.type)) for f in schema] == [(n, PARQUET_TYPES[t]) for n, t in expected], part
        counts[spec.stem] = pq.ParquetDataset(parts).read().num_rows
    assert counts["hosts"] == len(HOSTS)
    hosts = pq.ParquetDataset(sorted((fleet["tables"] / "hosts").glob("*.parquet"))).read().to_pylist()
    assert counts["findings"] == sum(h["findings"] for h in hosts)
    for h in hosts:
        assert h["sha256_source"] == "computed" and h["sidecar_match"] is True and h["collected_utc"] is not None
        bundle = fleet["work"] / "bundles" / h["host_key"]
        assert (bundle.parent / (bundle.name + ".sha256")).read_text().split()[0] == h["sha256"]
    assert counts["ssh_keys"] > 0 and counts["indicators"] > 0
    # fake roots are not live: no processes or sockets, yet the tables exist with their schema
    assert counts["processes"] == 0 and counts["connections"] == 0


def test_evidence_pointers_lead_to_the_record(fleet):
    import pyarrow.parquet as pq

    rows = pq.ParquetDataset(sorted((fleet["tables"] / "indicators").glob("*.parquet"))).read().to_pylist()
    key = next(r for r in rows if r["value"] == fleet["keys"]["attacker"][1] and r["host_key"].startswith("keyed_a/"))
    with tarfile.open(fleet["bundles"]["keyed_a"]) as tar:
        record = json.loads(tar.extractfile(key["member"]).read().splitlines()[key["line"] - 1])
    assert record["fingerprint"] == key["value"] and record["kind"] == "authorized_keys"


def test_rules_here_agree_with_analyze_and_analysis_beside_is_used(fleet, tmp_path):
    """The findings rank computes match those of `triagent analyze` (no memory image); an analysis bundle
    named after its bundle and beside it supplies the findings; one made from other bytes is ignored."""
    import pyarrow.parquet as pq

    bundles = tmp_path / "bundles"
    shutil.copytree(fleet["work"] / "bundles", bundles)
    source = bundles / "keyed_b" / fleet["bundles"]["keyed_b"].name
    proc = run_triagent(["analyze", str(source), "--output", str(tmp_path / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    analysis = Path(summary["analysis"])
    with tarfile.open(analysis) as tar:
        verdict = json.loads(tar.extractfile("triagent/verdict.json").read())
        found = [json.loads(line) for line in tar.extractfile("triagent/artifacts/findings.jsonl").read().splitlines()]
    computed = [r for r in pq.ParquetDataset(sorted((fleet["tables"] / "findings").glob("*.parquet"))).read()
                .to_pylist() if r["host_key"].startswith("keyed_b/")]
    assert sorted((f["rule"], f["severity"], f["summary"]) for f in found) == \
        sorted((r["rule"], r["severity"], r["summary"]) for r in computed)
    assert verdict["score"] == HOSTS["keyed_b"][1] and verdict["recommendation"] == HOSTS["keyed_b"][2]

    shutil.copy(analysis, source.parent / analysis.name)  # beside its bundle: used
    clean = bundles / "clean" / fleet["bundles"]["clean"].name
    stale = clean.parent / (clean.name.split(".tar")[0] + ".analysis.tar.gz")
    shutil.copy(analysis, stale)  # named after another bundle: made from other bytes, ignored
    proc, result = rank(bundles)
    assert proc.returncode == 0 and result["bundles"] == len(HOSTS), "analysis bundles are not inputs"
    hosts = by_host(result)
    assert hosts["keyed_b"]["findings_source"] == "analysis" and hosts["keyed_b"]["score"] == verdict["score"]
    assert hosts["clean"]["findings_source"] == "rules" and "other bytes" in hosts["clean"]["notes"]
    table = pq.ParquetDataset(sorted((bundles / "fleet" / "hosts").glob("*.parquet"))).read().to_pylist()
    used = {r["host_key"].split("/")[0]: r["analysis"] for r in table}
    assert used["keyed_b"] == f"keyed_b/{analysis.name}" and used["clean"] is None


def test_damaged_bundle_is_reported_not_fatal(fleet, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(fleet["bundles"]["revshell"], folder / "good.tar.gz")
    (folder / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"not a gzip stream" * 100)
    (folder / "truncated.tar.gz").write_bytes(fleet["bundles"]["full"].read_bytes()[:4000])
    proc, result = rank(folder, "--output", str(tmp_path / "out"))
    assert proc.returncode == 1 and result["unreadable"] == 2
    hosts = {h["host_key"]: h for h in result["hosts"]}
    assert hosts["good.tar.gz"]["score"] == HOSTS["revshell"][1] and result["hosts"][0]["host_key"] == "good.tar.gz"
    assert hosts["broken.tar.gz"]["error"] and hosts["truncated.tar.gz"]["error"]
    assert b"unreadable: broken.tar.gz" in proc.stderr


def test_empty_folder_and_missing_folder(tmp_path):
    need(HAVE_FLEET, FLEET_REASON)
    cmd = [sys.executable, "-m", "agent.responder.rank"]
    assert run_triagent([str(tmp_path)], cmd=cmd).returncode == 2
    assert run_triagent([str(tmp_path / "nope")], cmd=cmd).returncode == 2


def test_without_the_fleet_extra_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['duckdb'] = sys.modules['pyarrow'] = None; from agent.responder.rank import main; "
            f"raise SystemExit(main([{str(tmp_path)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == 3 and b"pip install 'triagent[fleet]'" in proc.stderr, proc.stderr


def test_a_record_with_a_lone_surrogate_does_not_stop_the_ranking(tmp_path):
    """JSON may escape a lone surrogate ("\\udcff": what a host's non-UTF-8 file name becomes, or what a
    hostile bundle plants); UTF-8 cannot encode it, and Parquet refused the whole fleet's table (found on
    a live host's bundle). It is stored as its escape text instead."""
    import hostile_bundles as hb
    import pyarrow.parquet as pq

    line = '{"pid": 7, "ppid": 1, "name": "odd\\udcffname", "cmdline": "/tmp/\\udcff -x", "user": "root"}\n'
    (tmp_path / "h").mkdir()
    hb.write(tmp_path / "h" / "triagent_h_20260101T000000Z.tar.gz",
             [("triagent/artifacts/processes.jsonl", line.encode())])
    proc, result = rank(tmp_path)
    assert proc.returncode == 0 and result["bundles"] == 1, proc.stderr.decode()[-2000:]
    rows = [r for f in sorted((tmp_path / "fleet" / "processes").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    assert [(r["pid"], r["name"], r["cmdline"]) for r in rows] == [(7, "odd\\udcffname", "/tmp/\\udcff -x")]
