"""triagent fleet analyze (agent/responder/fleet.py) on a real Dask cluster: a `dask scheduler` and two
`dask worker` processes on 127.0.0.1, 21 bundles in a moto S3 server on loopback (17 made by the real
collector from fake roots, 2 `collect --profile minimal` of this host, which fill the processes and
connections tables, 1 `collect --memory` of a synthetic /proc/kcore, and one truncated), one worker killed
mid-run. Shown: every good bundle analysed exactly
once (one analysis beside it whose custody names its bytes, one hosts row), the corrupt one recorded with its
reason, Parquet that DuckDB reads with the DDL's schema, rank over the tables on S3, a second run that
skips everything. Also a folder SOURCE on a LocalCluster: an analysis made by hand is reused, a replaced
bundle is analysed again.

The memory bundle's image is extracted and given to volatility3 on a worker, in its scratch space; it holds
no kernel (volatility3 says so in the analysis). A QEMU guest's image is not used: volatility3 over the
fixture's 512 MiB guest takes ~100 s per bundle (issue 19), past this test's ~3-minute budget on its own;
tests/e2e cover volatility3 over a real guest through the same analyse_bundle."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import upload_servers as srv
from bench_fleet import build_corpus
from conftest import REPO, need

NEEDED = ("distributed", "duckdb", "pyarrow", "boto3", "moto", "flask")
DASK = Path(sys.executable).parent / "dask"
BUCKET, PREFIX = "fleet", "case-7"
GOOD = 20


def need_fleet() -> None:
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    need(not missing, f"{', '.join(missing)} not installed: pip install -e '.[fleet]' 'moto[server]==5.2.5'")
    need(DASK.exists(), f"{DASK} is missing (dask[distributed] installs it)")


def aws_env(folder: Path) -> dict[str, str]:
    """The environment of every process these tests start: fake credentials, no config file, no metadata
    service: nothing can reach AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(folder / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(folder / "no-aws-credentials"), PYTHONPATH=str(REPO))
    return env


@pytest.fixture(autouse=True)
def _no_aws(monkeypatch, tmp_path):
    for key, value in aws_env(tmp_path).items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """21 bundles in a folder (tests/bench/bench_fleet.py): host0000..host0016 (fake roots), live00..01 (this
    host, minimal profile), mem00 (a memory image), broken/corrupt.tar.gz (a live bundle cut in half)."""
    need_fleet()
    need(shutil.which("ssh-keygen") is not None, "ssh-keygen (openssh-client) makes the planted keys")
    folder, keys, corrupt = build_corpus(tmp_path_factory.mktemp("fleet"), GOOD)
    assert len(keys) == GOOD + 1 and corrupt in keys
    return {"folder": folder, "keys": keys, "corrupt": corrupt}


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    need_fleet()
    port = srv.free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with srv.server_process(argv, port, log, env=aws_env(log.parent)):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def cluster(tmp_path):
    """A real scheduler and two one-thread workers (no nanny: killing a worker's process is losing it)."""
    need_fleet()
    env = aws_env(tmp_path)
    port = srv.free_port()
    procs: list[subprocess.Popen] = []

    def start(argv: list[str], name: str) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([str(DASK), *argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=tmp_path)
        procs.append(proc)
        return proc

    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard", "--no-show"], "scheduler")
        srv.wait_port(port, procs[0])
        address = f"tcp://127.0.0.1:{port}"
        workers = [start(["worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard",
                          "--name", name, "--local-directory", str(tmp_path / name)], name) for name in ("wa", "wb")]
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield {"address": address, "workers": workers, "env": env, "logs": tmp_path}
    finally:
        for proc in reversed(procs):  # only the processes this fixture started
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def s3(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def objects(client, prefix: str) -> dict[str, dict]:
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents") or []:
            found[obj["Key"]] = obj
    return found


def fleet_cmd(source: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "agent", "fleet", "analyze", source, *extra]


def run_fleet(argv: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, bytes, str]:
    """(exit code, stdout, stderr) of one fleet run; one that hangs is made to dump its threads (faulthandler
    on SIGABRT), so that the failure says where."""
    proc = subprocess.Popen(argv, cwd=REPO, env={**env, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"{argv[3:]} hung for {timeout} s: {err.decode(errors='replace')[-6000:]}")
    return proc.returncode, out, err.decode(errors="replace")


def fleet_on_a_pty(argv: list[str], env: dict[str, str], timeout: float = 240) -> tuple[dict, str]:
    """A fleet run whose stderr is a terminal (a pty): its summary and what it drew there."""
    import pty
    import select

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL)
    os.close(terminal)
    drawn = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # every writer closed the terminal (EIO)
                    break
                if not chunk:
                    break
                drawn += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return summary_of(out), drawn.decode(errors="replace")


def summary_of(stdout: bytes) -> dict:
    lines = stdout.decode().strip().splitlines()
    assert len(lines) == 1, stdout[-2000:]
    return json.loads(lines[0])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# DuckDB's names for the DDL's Hive types: an independent reading, not rank.py's arrow_type
DUCK_TYPES = {"STRING": "VARCHAR", "INT": "INTEGER", "BIGINT": "BIGINT", "BOOLEAN": "BOOLEAN", "DOUBLE": "DOUBLE",
              "TIMESTAMP": "TIMESTAMP", "ARRAY<STRING>": "VARCHAR[]", "ARRAY<BIGINT>": "BIGINT[]",
              "ARRAY<STRUCT<BUNDLE:STRING,MEMBER:STRING,LINE:INT>>":
                  "STRUCT(bundle VARCHAR, member VARCHAR, line INTEGER)[]"}


def check_tables_with_duckdb(tables: Path, hosts_expected: int) -> dict[str, int]:
    """Every table folder read by DuckDB: columns and types as specs/tables/<table>.sql declares; row counts."""
    import duckdb
    from test_rank import ddl_columns

    con = duckdb.connect(":memory:")
    counts = {}
    for spec in sorted((REPO / "specs" / "tables").glob("*.sql")):
        files = sorted((tables / spec.stem).glob("*.parquet"))
        assert len(files) == hosts_expected, (spec.stem, len(files))
        glob = str(tables / spec.stem / "*.parquet")
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}')").fetchall()
        assert [(row[0], row[1]) for row in described] == [(n, DUCK_TYPES[t]) for n, t in ddl_columns(spec)], spec
        counts[spec.stem] = con.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]
    return counts


def test_s3_fleet_on_dask_survives_a_lost_worker_and_reruns_skip(corpus, moto, cluster, tmp_path):
    client = s3(moto)
    client.create_bucket(Bucket=BUCKET)
    sources = {}
    for path in sorted(corpus["folder"].rglob("*")):
        if path.is_file():
            key = path.relative_to(corpus["folder"]).as_posix()
            client.upload_file(str(path), BUCKET, f"{PREFIX}/{key}")
            sources[key] = path.read_bytes()
    source = f"s3://{BUCKET}/{PREFIX}"
    argv = fleet_cmd(source, "--scheduler", cluster["address"], "--endpoint-url", moto, "--progress")
    started = time.monotonic()
    with open(tmp_path / "fleet.err", "wb") as err:
        proc = subprocess.Popen(argv, cwd=REPO, env=cluster["env"], stdout=subprocess.PIPE, stderr=err,
                                stdin=subprocess.DEVNULL)
        try:
            receipts: dict = {}
            while len(receipts) < 3:  # some bundles done: worker "wa" is busy with the next
                assert proc.poll() is None and time.monotonic() - started < 180, (tmp_path / "fleet.err").read_text()
                time.sleep(0.1)
                receipts = objects(client, f"{PREFIX}/tables/_receipts/")
            cluster["workers"][0].kill()
            cluster["workers"][0].wait(10)
            at_kill = len(receipts)
            out, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    seconds = time.monotonic() - started
    stderr = (tmp_path / "fleet.err").read_text()
    assert at_kill < len(corpus["keys"]), "the run ended before a worker could be lost: nothing was shown"
    summary = summary_of(out)
    assert proc.returncode == 1, stderr[-3000:]  # 1: a bundle failed
    assert summary["bundles"] == GOOD + 1 and summary["failed"] == 1 and summary["skipped"] == 0, summary
    assert summary["analysed"] + summary["reused"] == GOOD, summary
    assert summary["failures"][0]["bundle"] == corpus["corrupt"]
    assert "cannot be read" in summary["failures"][0]["reason"]
    assert "done," in stderr and "ETA" in stderr  # --progress: done/failed/running, rate, ETA
    scheduler = (cluster["logs"] / "scheduler.log").read_text()
    assert "name: wa" in scheduler and "Remove worker" in scheduler  # the scheduler saw the worker go
    # a task Dask runs again (its result was on the lost worker, unread) keeps its first outcome: the counts
    # above hold whether or not that happened in this run

    # exactly one analysis beside every good bundle, none beside the corrupt one; each names its source's bytes
    from agent.bundle.reader import CUSTODY_NAME, BundleView

    stored = objects(client, f"{PREFIX}/")
    analyses = sorted(k.removeprefix(f"{PREFIX}/") for k in stored if k.endswith(".analysis.tar.gz"))
    expected = sorted(k.split(".tar")[0] + ".analysis.tar.gz" for k in corpus["keys"] if k != corpus["corrupt"])
    assert analyses == expected
    for key in corpus["keys"]:
        if key == corpus["corrupt"]:
            continue
        local = tmp_path / "check.analysis.tar.gz"
        client.download_file(BUCKET, f"{PREFIX}/{key.split('.tar')[0]}.analysis.tar.gz", str(local))
        with BundleView(str(local), lambda _s: False, hash_file=False) as view:
            custody = view.json(CUSTODY_NAME)
        assert custody["source_bundle_sha256"] == sha256(sources[key]) and custody["source_bundle"] == f"{source}/{key}"
        if key.startswith("mem00/") and os.geteuid() == 0:  # taken out of the bundle on a worker, read by volatility3
            assert custody["memory_image"] and custody["image_sha256"] and not custody["memory_image_error"], custody
        sidecar = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key.split('.tar')[0]}.analysis.tar.gz.sha256")
        assert sidecar["Body"].read().split()[0].decode() == sha256(local.read_bytes())
    receipts = objects(client, f"{PREFIX}/tables/_receipts/")
    assert len(receipts) == GOOD + 1

    # the tables: one file per bundle and table, read by DuckDB with the DDL's schema, one hosts row per bundle
    import duckdb

    tables = tmp_path / "tables"
    for key in stored:
        if key.startswith(f"{PREFIX}/tables/") and key.endswith(".parquet"):
            target = tables / key.removeprefix(f"{PREFIX}/tables/")
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(BUCKET, key, str(target))
    counts = check_tables_with_duckdb(tables, GOOD + 1)
    assert counts["hosts"] == GOOD + 1 and counts["processes"] > 0 and counts["connections"] > 0
    hosts = duckdb.sql(f"SELECT host_key, findings_source, error, sha256 FROM read_parquet('{tables}/hosts/*.parquet')"
                       ).fetchall()
    assert sorted(h[0] for h in hosts) == corpus["keys"]  # each bundle once
    for host_key, findings_source, error, digest in hosts:
        if host_key == corpus["corrupt"]:
            assert error and findings_source is None
        else:
            assert error is None and findings_source == "analysis" and digest == sha256(sources[host_key])

    # rank reads the tables where they are (S3) and ranks the hosts
    ranked = subprocess.run([sys.executable, "-m", "agent", "rank", f"{source}/tables", "--tables", "--endpoint-url",
                             moto, "--format", "json"], cwd=REPO, env=cluster["env"], capture_output=True, timeout=120)
    assert ranked.returncode == 1, ranked.stderr.decode()[-2000:]  # 1: the corrupt bundle's row has its error
    result = json.loads(ranked.stdout)
    assert result["bundles"] == GOOD + 1 and result["unreadable"] == 1
    scores = [h["score"] for h in result["hosts"] if h["score"] is not None]
    assert len(scores) == GOOD and scores == sorted(scores, reverse=True) and scores[0] == 100

    # a second run (one worker left) skips everything: no object is written again
    _, again_out, again_err = run_fleet(fleet_cmd(source, "--scheduler", cluster["address"], "--endpoint-url", moto),
                                        cluster["env"])
    second = summary_of(again_out)
    assert second["skipped"] == GOOD and second["analysed"] == 0 and second["reused"] == 0, second
    assert second["failed"] == 1 and "failed before" in second["failures"][0]["reason"]
    assert "ETA" not in again_err  # not a terminal, no --progress: no progress lines
    after = objects(client, f"{PREFIX}/")
    assert {k: (v["ETag"], v["LastModified"]) for k, v in after.items()} == \
        {k: (v["ETag"], v["LastModified"]) for k, v in stored.items()}
    print(f"fleet on S3: {len(corpus['keys'])} bundles in {seconds:.1f} s, worker lost after {at_kill}; "
          f"second run {second['seconds']} s")


def test_folder_source_on_a_local_cluster(corpus, tmp_path):
    folder = tmp_path / "bundles"
    keys = [k for k in corpus["keys"] if k.startswith(("host0000/", "host0001/", "host0003/"))] + [corpus["corrupt"]]
    for key in keys:
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus["folder"] / key, folder / key)
    env = aws_env(tmp_path)
    # an analysis made by hand beside host0001's bundle: reused, not made again
    by_hand = subprocess.run([sys.executable, "-m", "agent", "analyze", str(folder / keys[1]), "--output",
                              str((folder / keys[1]).parent)], cwd=REPO, env=env, capture_output=True, timeout=120)
    assert by_hand.returncode == 0, by_hand.stderr.decode()[-2000:]
    made_by_hand = (folder / (keys[1].split(".tar")[0] + ".analysis.tar.gz")).read_bytes()

    def fleet(*extra: str) -> tuple[int, dict, str]:
        code, out, err = run_fleet(fleet_cmd(str(folder), "--local", "2", *extra), env)
        return code, summary_of(out), err

    code, first, stderr = fleet()
    assert code == 1 and (first["analysed"], first["reused"], first["failed"]) == (2, 1, 1), (first, stderr[-2000:])
    assert first["workers"] == 2 and "ETA" not in stderr
    assert (folder / (keys[1].split(".tar")[0] + ".analysis.tar.gz")).read_bytes() == made_by_hand
    counts = check_tables_with_duckdb(folder / "tables", len(keys))
    assert counts["hosts"] == len(keys)

    ranked = subprocess.run([sys.executable, "-m", "agent", "rank", str(folder / "tables"), "--tables", "--format",
                             "json"], cwd=REPO, env=env, capture_output=True, timeout=120)
    result = json.loads(ranked.stdout)
    assert ranked.returncode == 1 and result["bundles"] == len(keys) and result["unreadable"] == 1
    assert [h["host_key"] for h in result["hosts"]][-1] == corpus["corrupt"]

    # stderr a terminal: the progress line (done, failed, running, rate, ETA) comes by itself
    second, drawn = fleet_on_a_pty(fleet_cmd(str(folder), "--local", "1"), env)
    assert (second["skipped"], second["analysed"], second["failed"]) == (3, 0, 1), second
    assert "\rtriagent fleet: 4/4 (3 done, 1 failed, 0 running)" in drawn and "ETA" in drawn, drawn[-2000:]

    # host0003's bundle replaced by other bytes: its receipt and analysis no longer match, so it is analysed
    # again (the stale analysis replaced); the others are still skipped
    shutil.copy(corpus["folder"] / keys[0], folder / keys[2])
    code, third, _ = fleet("-q", "--retry-failed")
    assert (third["skipped"], third["analysed"], third["failed"]) == (2, 1, 1), third
    from agent.bundle.reader import CUSTODY_NAME, BundleView

    with BundleView(str(folder / (keys[2].split(".tar")[0] + ".analysis.tar.gz")), lambda _s: False,
                    hash_file=False) as view:
        assert view.json(CUSTODY_NAME)["source_bundle_sha256"] == sha256((folder / keys[2]).read_bytes())


def test_a_key_that_leads_out_of_the_scratch_folder_is_refused(tmp_path):
    """An S3 listing may hold keys such as "a/../../x.tar.gz": they are named in the summary, never submitted,
    and a task given one refuses it before touching the store."""
    need(importlib.util.find_spec("distributed") is not None, "dask[distributed] is not installed")
    from agent.responder import fleet

    assert fleet.is_safe_key("host1/triagent_a.tar.gz")
    for bad in ("a/../../x.tar.gz", "/x.tar.gz", "a//x.tar", "./x.tar", "..", "a\0.tar", ""):
        assert not fleet.is_safe_key(bad), bad

    class Listing(fleet.FolderStore):
        def bundles(self):
            return [("up/../../../escape.tar.gz", fleet.Stat(10, "1"))]

        def stat(self, key):
            raise AssertionError(f"the store was asked about {key!r}")

    class NoSubmit:
        def scheduler_info(self):
            return {"workers": {}}

        def submit(self, *args, **kw):
            raise AssertionError("a refused key was submitted")

    store = Listing(str(tmp_path))
    summary = fleet.analyse_fleet(store, NoSubmit(), fleet.Options())
    assert summary["bundles"] == 0 and summary["refused_names"] == ["up/../../../escape.tar.gz"]
    outcome = fleet.analyse_task(store, "up/../../../escape.tar.gz", fleet.Options())
    assert outcome["status"] == "failed" and "safe" in outcome["reason"]
    assert list(tmp_path.iterdir()) == []


def test_a_task_run_again_in_the_same_run_keeps_its_outcome(corpus, tmp_path):
    """Dask runs a finished task again when the worker holding its unread result is lost: that second run
    finds the receipt of its own run and reports the first outcome (analysed), not "skipped", so the
    summary counts each bundle once; a later run skips it."""
    from agent.responder import fleet

    key = next(k for k in corpus["keys"] if k.startswith("host0000/"))
    (tmp_path / key).parent.mkdir(parents=True)
    shutil.copy(corpus["folder"] / key, tmp_path / key)
    store = fleet.FolderStore(str(tmp_path))
    first = fleet.analyse_task(store, key, fleet.Options(run="run-1"))
    assert first["status"] == "analysed", first
    made = (tmp_path / fleet.analysis_key(key)).stat().st_mtime_ns
    again = fleet.analyse_task(store, key, fleet.Options(run="run-1"))
    assert again["status"] == "analysed" and again["reason"] is None, again
    later = fleet.analyse_task(store, key, fleet.Options(run="run-2"))
    assert later["status"] == "skipped", later
    assert (tmp_path / fleet.analysis_key(key)).stat().st_mtime_ns == made  # analysed once
