"""Containers read from the files a real dockerd wrote (its data root inside a fake evidence root), with
no daemon running when we read them: a CI runner with the Docker socket, a node-exporter-like container
with the host root read-only and the host PID namespace, a privileged container with the host root
writable, and one that drops a hidden ELF in /tmp. Through collect --root and analyze, the rules name
the dangerous ones and leave the designed ones at low."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from conftest import need, run_triagent, summary_of

DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")
REASON = "a real dockerd writes the container files (apt-get install docker.io; runs as root)"


class Daemon:
    def __init__(self, root: Path, work: Path):
        self.sock = work / "docker.sock"
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")
        self.log = open(work / "dockerd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [DOCKERD, "--data-root", str(root / "var/lib/docker"), "--exec-root", str(work / "exec"),
             "-H", f"unix://{self.sock}", "--pidfile", str(work / "docker.pid"), "--iptables=false",
             "--ip6tables=false", "--bridge=none", "--storage-driver", "overlay2"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.sock.exists() and self.docker("info", check=False).returncode == 0:
                return
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"dockerd did not start: {(work / 'dockerd.log').read_text()[-2000:]}")

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([str(DOCKER), *args], env=self.env, capture_output=True, text=True, check=check,
                              timeout=120)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def docker_root(tmp_path_factory) -> Path:
    need(os.geteuid() == 0 and os.path.exists(DOCKERD) and DOCKER is not None, REASON)
    base = tmp_path_factory.mktemp("containers")
    root, work = base / "root", base / "work"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("ci-7\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    work.mkdir()
    image = work / "rootfs"
    for folder in ("bin", "tmp"):
        (image / folder).mkdir(parents=True)
    busybox = shutil.which("busybox")
    need(busybox is not None, "busybox-static makes the container image (tests/run.sh installs it)")
    shutil.copy(busybox, image / "bin/busybox")
    (image / "bin/sh").symlink_to("busybox")
    subprocess.run(["tar", "-C", str(image), "-cf", str(work / "image.tar"), "."], check=True)
    daemon = Daemon(root, work)
    try:
        daemon.docker("import", str(work / "image.tar"), "local/tools:1")
        sock = str(daemon.sock)
        daemon.docker("run", "-d", "--name", "gitlab-runner", "--network", "none", "-v",
                      f"{sock}:/var/run/docker.sock", "local/tools:1", "/bin/sh", "-c", "sleep 600")
        daemon.docker("run", "-d", "--name", "node-exporter", "--network", "none", "--pid", "host", "-v",
                      "/:/host:ro", "local/tools:1", "/bin/sh", "-c", "sleep 600")
        # created, never started: a privileged container cannot start in an unprivileged test sandbox,
        # and its configuration is the evidence either way
        daemon.docker("create", "--name", "helper", "--network", "none", "--privileged", "-v", "/:/host",
                      "local/tools:1", "/bin/sh", "-c", "sleep 600")
        daemon.docker("run", "-d", "--name", "web", "--network", "none", "local/tools:1", "/bin/sh", "-c",
                      "cp /bin/busybox /tmp/.kworker && echo 'echo hi' > /tmp/notes.sh && sleep 600")
        time.sleep(1.5)  # the copy in "web" has run
        daemon.docker("kill", "gitlab-runner", "node-exporter", "web")
    finally:
        daemon.stop()
    return root


def test_container_records(docker_root, tmp_path):
    from collectors.base import Context, Record
    from collectors.files import containers

    items = list(containers.collect(Context(root=str(docker_root), live=False, options={})))
    records = {i.data["name"]: i.data for i in items if isinstance(i, Record) and i.stream == "containers"}
    assert set(records) == {"gitlab-runner", "node-exporter", "helper", "web"}
    assert {(r["runtime"], tuple(r["running_pids"])) for r in records.values()} == {("docker", ())}  # not live
    runner, exporter, helper = records["gitlab-runner"], records["node-exporter"], records["helper"]
    assert runner["mounts_runtime_socket"] and not runner["privileged"] and runner["image"] == "local/tools:1"
    assert exporter["mounts_host_root"] and not exporter["mounts_host_root_rw"] and exporter["host_pid"]
    assert helper["privileged"] and helper["mounts_host_root_rw"] and helper["state"] == "created"
    assert helper["started_utc"] is None and helper["command"] == "/bin/sh -c sleep 600"
    assert runner["state"] == "exited" and runner["started_utc"] and runner["finished_utc"]
    files = [i.data for i in items if isinstance(i, Record) and i.stream == "container_files"]
    dropped = {f["path"]: f for f in files if f["container"] == "web"}
    assert dropped["/tmp/.kworker"]["file_type"] == "elf" and dropped["/tmp/.kworker"]["hidden"]
    assert len(dropped["/tmp/.kworker"]["sha256"]) == 64 and dropped["/tmp/notes.sh"]["file_type"] == "other"


def test_rules_name_the_dangerous_containers_only(docker_root, tmp_path):
    out = tmp_path / "out"
    bundle = summary_of(run_triagent(["collect", "--root", str(docker_root), "--output", str(out),
                                      "--artifacts", "containers"]))["bundle"]
    proc = run_triagent(["analyze", bundle, "--output", str(out / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    with tarfile.open(summary["analysis"]) as tar:
        found = [json.loads(line) for line in tar.extractfile("triagent/artifacts/findings.jsonl").read().splitlines()]
    by_rule: dict[str, set[str]] = {}
    for f in found:
        by_rule.setdefault(f["rule"], set()).add(f.get("name") or f.get("container"))
    assert by_rule.get("TRI-CONT-001") == {"helper"}
    assert by_rule.get("TRI-CONT-005") == {"web"}
    assert by_rule.get("TRI-CONT-003") == {"gitlab-runner"}
    above_low = {f.get("name") or f.get("container") for f in found if f["severity"] in ("critical", "high", "medium")}
    assert not above_low & {"gitlab-runner", "node-exporter"}, found
    assert summary["full_disk"] == "yes"


def test_live_processes_of_a_running_docker_container(tmp_path_factory):
    """Live, with the container running: its processes from /proc/PID/cgroup (/docker/<id> or
    docker-<id>.scope), and the program it wrote into its own layer marked as running (TRI-RT-001)."""
    need(os.geteuid() == 0 and os.path.exists(DOCKERD) and DOCKER is not None, REASON)
    busybox = shutil.which("busybox")
    need(busybox is not None, "busybox-static makes the container image (tests/run.sh installs it)")
    from agent.analysis.rules import evaluate, load_rules
    from collectors.base import Context, FileCopy, Record
    from collectors.files import containers

    base = tmp_path_factory.mktemp("live")  # short: dockerd's containerd socket lives under it (108 bytes at most)
    root, work, image = base / "root", base / "work", base / "work/rootfs"
    for folder in ("bin", "tmp"):
        (image / folder).mkdir(parents=True)
    shutil.copy(busybox, image / "bin/busybox")
    for applet in ("sh", "sleep", "cp", "mkdir"):
        (image / "bin" / applet).symlink_to("busybox")
    subprocess.run(["tar", "-C", str(image), "-cf", str(work / "image.tar"), "."], check=True)
    daemon = Daemon(root, work)
    try:
        daemon.docker("import", str(work / "image.tar"), "local/tools:1")
        cid = daemon.docker("run", "-d", "--name", "web", "--network", "none", "local/tools:1", "/bin/sh", "-c",
                            "mkdir /tmp/.x && cp /bin/busybox /tmp/.x/sleep && exec /tmp/.x/sleep 600").stdout.strip()
        pid = int(daemon.docker("inspect", "-f", "{{.State.Pid}}", "web").stdout.strip())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not os.readlink(f"/proc/{pid}/exe").endswith("/tmp/.x/sleep"):
            time.sleep(0.2)
        items = list(containers.collect(Context(root="/", live=True, options={
            "docker_roots": [str(root / "var/lib/docker")], "storage_roots": [], "rootless_storage": False,
            "containerd_tasks": [], "manifests": [], "kubelet_pods": "/nonexistent",
            "pod_logs": "/nonexistent", "kubeconfigs": []})))
    finally:
        daemon.stop()
    for i in items:
        if isinstance(i, FileCopy):
            i.close()
    records = {r.stream: [] for r in items if isinstance(r, Record)}
    for r in items:
        if isinstance(r, Record):
            records[r.stream].append(r.data)
    [web] = records["containers"]
    assert web["id"] == cid and web["runtime"] == "docker" and web["running_pids"] == [pid]
    assert [(p["pid"], p["exe"]) for p in records["container_processes"]] == [(pid, "/tmp/.x/sleep")]
    dropped = next(f for f in records["container_files"] if f["path"] == "/tmp/.x/sleep")
    assert dropped["exec_pids"] == [pid] and dropped["runtime"] == "docker"
    rows = lambda source: [("b", source, n, r) for n, r in enumerate(records.get(source, []))]  # noqa: E731
    found = {f["rule"] for f in evaluate(load_rules(), rows, time.time()) if f.get("container") == "web"}
    assert "TRI-RT-001" in found
