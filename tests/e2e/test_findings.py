"""analyze turns a live bundle's records into findings whose evidence pointers lead back to the
exact record: a memfd process, a deleted executable, one running from /tmp, an LD_PRELOAD-ed one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

from conftest import run_triagent, summary_of


def test_findings_point_at_their_evidence(tmp_path):
    sleep = shutil.which("sleep")
    ghost = tmp_path / "ghost"
    shutil.copy(sleep, ghost)
    in_tmp = tmp_path / "tmpexe"
    shutil.copy(sleep, in_tmp)
    procs = [subprocess.Popen([str(ghost), "60"]), subprocess.Popen([str(in_tmp), "60"])]
    memfd_code = ("import os,sys;fd=os.memfd_create('x',0);os.write(fd,open(sys.argv[1],'rb').read());"
                  "os.execve(f'/proc/self/fd/{fd}',['payload','60'],{})")
    procs.append(subprocess.Popen([sys.executable, "-c", memfd_code, sleep]))
    procs.append(subprocess.Popen([sleep, "60"], env=dict(os.environ, LD_PRELOAD="/nonexistent/libx.so"),
                                  stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    ghost.unlink()
    try:
        proc = run_triagent(["collect", "--profile", "minimal", "--output", str(tmp_path / "out")])
        bundle = summary_of(proc)["bundle"]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    proc = run_triagent(["analyze", bundle, "--output", str(tmp_path / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert summary["artifacts"]["findings"] == "complete", (summary, proc.stderr.decode()[-2000:])
    with tarfile.open(summary["analysis"]) as tar:
        data = tar.extractfile("triagent/artifacts/findings.jsonl").read()
        findings = [json.loads(line) for line in data.splitlines()]
    with tarfile.open(bundle) as source:
        def evidence(f: dict) -> dict:
            pointer = f["evidence"][0]
            lines = source.extractfile(pointer["member"]).read().splitlines()
            return json.loads(lines[pointer["line"] - 1])

        by_kind = {}
        for f in findings:
            by_kind.setdefault(f["kind"], []).append(f)
        assert any(evidence(f)["pid"] == procs[0].pid for f in by_kind["deleted_executable"])
        assert any(evidence(f)["pid"] == procs[1].pid for f in by_kind["writable_place_executable"])
        assert any(evidence(f)["pid"] == procs[2].pid for f in by_kind["memfd_executable"])
        assert any(evidence(f)["pid"] == procs[3].pid for f in by_kind["ld_preload_environment"])
        # what only memory would tell is named on the findings that ask it (issue 20, item 3)
        asks = [f for f in by_kind["writable_place_executable"] if evidence(f)["pid"] == procs[1].pid]
        assert f"pid {procs[1].pid}" in asks[0]["memory_question"], asks
        # the deleted and the memfd executables exist nowhere else: their bytes are in the bundle
        manifest = {m["name"]: m for m in json.loads(source.extractfile("triagent/manifest.json").read())["members"]}
        copies = {m["sha256"] for name, m in manifest.items() if name.startswith("fs/$rootfs$/proc/")
                  and name.endswith("/exe")}  # one copy per content
        for f in by_kind["deleted_executable"] + by_kind["memfd_executable"]:
            record = evidence(f)
            if record["pid"] in (procs[0].pid, procs[2].pid):
                assert record["exe_sha256"] in copies, (record, sorted(copies))
