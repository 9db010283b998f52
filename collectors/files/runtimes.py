"""Containers of the runtimes other than Docker, and Kubernetes' node files, from their own files without
their daemons (called by collectors/files/containers.py, whose streams these records join).

- podman and CRI-O (containers-storage, github.com/containers/storage): ``overlay-containers/containers.json``
  (id, names, image, writable layer id, metadata), each container's OCI runtime spec in
  ``overlay-containers/<id>/userdata/config.json`` (runtime-spec config.md: process args, mounts, linux
  namespaces, capabilities, seccomp), ``overlay-images/images.json`` (image names) and the writable layer
  ``overlay/<layer>/diff``; rootless podman under each home's ``~/.local/share/containers/storage``. CRI-O is
  told from podman by its annotations (``io.kubernetes.cri-o.*``) or metadata (``pod-name``).
- containerd: its metadata is a bbolt database (``io.containerd.metadata.v1.bolt/meta.db``), for which
  there is no well-kept Python reader: a small bounded one is at the end of this file (podman 4's
  ``libpod/bolt_state.db`` is bbolt too; podman 4.8+ and 5 keep the same JSON documents in SQLite, ``db.sql``,
  read with Python's sqlite3 from a bounded copy in memory, its write-ahead log applied). From it every
  container (image, labels, OCI spec) and, through the overlayfs snapshotter's own ``metadata.db``, its
  writable layer ``snapshots/<id>/fs``; then what the
  runtime v2 shim keeps for each running task (``/run/containerd/io.containerd.runtime.v2.task/<namespace>/
  <id>/``: ``config.json``, the OCI spec that runs, and ``init.pid``; containerd runtime/v2/README.md) and,
  live, the overlay mount of its ``rootfs`` (``upperdir=`` in /proc/self/mountinfo). Both databases are
  also copied for the responder.
- Kubernetes (kubelet): static pod manifests (``/etc/kubernetes/manifests``; core/v1 Pod: hostNetwork,
  hostPID, hostIPC, securityContext.privileged, hostPath volumes), the kubelet's pod folders
  (``/var/lib/kubelet/pods/<uid>/volumes/<plugin>/<name>``, ``etc-hosts``), the CRI container logs
  (``/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log``, lines
  ``<RFC3339Nano> <stdout|stderr> <P|F> <message>``, kubelet's kuberuntime logs format; podman's k8s-file
  ``ctr.log`` is the same format) and kubeconfigs (clientcmd v1 Config), of which only facts leave the host:
  cluster server URLs, user names and the kind of credential, never a key, token or password.
- Live processes are mapped to their containers from /proc/PID/cgroup (the 64-hex id the runtimes put
  in cgroup names: ``docker-<id>.scope``, ``/docker/<id>``, ``libpod-<id>``, ``crio-<id>.scope``,
  ``cri-containerd-<id>.scope``, kubepods paths), the spec's ``cgroupsPath`` and containerd's ``init.pid``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import struct
from collections.abc import Iterator
from typing import Any

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import copy_file, is_dir, listdir, read_capped
from collectors.files.packages import apply_wal
from collectors.util import parse_passwd, read_small, text, utc

STORAGE_ROOTS = ["/var/lib/containers/storage"]
ROOTLESS_STORAGE = ".local/share/containers/storage"
CONTAINERD_TASKS = ["/run/containerd/io.containerd.runtime.v2.task",
                    "/run/k3s/containerd/io.containerd.runtime.v2.task"]
# containerd's data roots: its own, and the ones k3s and RKE2 run it with
CONTAINERD_ROOTS = ["/var/lib/containerd", "/var/lib/rancher/k3s/agent/containerd",
                    "/var/lib/rancher/rke2/agent/containerd"]
KUBELET_PODS = "/var/lib/kubelet/pods"
POD_LOGS = "/var/log/pods"
# static pod folders of kubeadm, k3s and RKE2; the kubelet's own staticPodPath is added
MANIFESTS = ["/etc/kubernetes/manifests", "/var/lib/rancher/k3s/agent/pod-manifests",
             "/var/lib/rancher/rke2/agent/pod-manifests"]
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
KUBECONFIGS = ["/etc/kubernetes/admin.conf", "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/super-admin.conf",
               "/etc/kubernetes/controller-manager.conf", "/etc/kubernetes/scheduler.conf",
               "/etc/kubernetes/bootstrap-kubelet.conf", "/etc/rancher/k3s/k3s.yaml", "/etc/rancher/rke2/rke2.yaml"]
# Docker's default capability set (moby oci/caps/defaults.go): what is beyond it was added.
DEFAULT_CAPS = frozenset({"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                          "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                          "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"})
RUNTIME_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                   "/var/run/containerd/containerd.sock", "/run/crio/crio.sock", "/var/run/crio/crio.sock",
                   "/run/podman/podman.sock", "/var/run/podman/podman.sock")
# Host folders whose bind gives a container the host: its root, configuration, credentials, kernel
# interfaces, or another runtime's state.
SENSITIVE_SOURCES = ("/", "/etc", "/root", "/home", "/boot", "/proc", "/sys", "/dev", "/var/lib/docker",
                     "/var/lib/kubelet", "/var/lib/containerd", "/run/containerd", "/usr", "/lib", "/bin",
                     "/sbin", "/var/log", "/etc/kubernetes")
SECRET_PLUGINS = ("kubernetes.io/secret", "kubernetes.io/projected")
_CGROUP_ID = re.compile(r"(?:^|[/:-])([0-9a-f]{64})(?:\.scope)?$")
_CRI_LINE = re.compile(rb"^(\S+) (stdout|stderr) (?:([PF]) )?(.*)$")


def _yaml_docs(data: bytes) -> list[Any]:
    """YAML documents without aliases: an alias lets a few bytes stand for an exponential structure (the
    "billion laughs"), which any str() or walk of it would then build; Kubernetes writes none."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):  # noqa: ANN001, ANN202 - PyYAML's signature
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("YAML aliases are not accepted")
            return super().compose_node(parent, index)

    return [d for d in yaml.load_all(data, Loader=NoAliases) if d is not None][:16]  # noqa: S506 - safe


def _doc(ctx: Context, path: str, cap: int, facts_only: bool = False, yaml_ok: bool | None = None) -> Any:
    """JSON or YAML document at path, None when absent; a Problem when unreadable or malformed."""
    try:
        data, _, truncated = read_capped(ctx, path, cap, facts_only=facts_only)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Problem.from_os_error(exc, "cannot read", path)
    if truncated:
        return Problem(f"larger than {cap} bytes: not parsed", path=path, level="warning")
    try:
        if yaml_ok is None:
            yaml_ok = path.endswith((".yaml", ".yml", ".conf", "/config", ".kubeconfig", ".manifest"))
        if yaml_ok and not data.lstrip().startswith(b"{"):
            docs = _yaml_docs(data)
            return docs[0] if len(docs) == 1 else docs
        return json.loads(data)
    except Exception as exc:  # noqa: BLE001 - yaml raises many kinds; a hostile file is a Problem, not a crash
        return Problem(f"not parsed: {type(exc).__name__}: {str(exc)[:200]}", path=path, level="warning")


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any, most: int = 256) -> list[Any]:
    return value[:most] if isinstance(value, list) else []


# ---- shared with Docker's records (collectors/files/containers.py) -------------------------------

def _time(value: Any) -> str | None:
    """Docker's RFC 3339 times, "0001-01-01T00:00:00Z" meaning never."""
    if not isinstance(value, str) or value.startswith("0001-01-01"):
        return None
    return value


def _norm(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p and p != ".")


def reach(binds: list[dict[str, Any]], host: dict[str, Any]) -> dict[str, Any]:
    """What a container may reach on the host, from its mounts and host configuration."""
    sources = [(_norm(str(b.get("source") or "")), bool(b.get("rw"))) for b in binds if b.get("source")]
    sockets = sorted({s for s, _ in sources if s in RUNTIME_SOCKETS or s.endswith(("/docker.sock", "/containerd.sock",
                                                                                   "/crio.sock", "/podman.sock"))})
    sensitive = sorted({s for s, _ in sources if s in SENSITIVE_SOURCES})
    return {
        "privileged": bool(host.get("Privileged")),
        "cap_add": [str(c) for c in host.get("CapAdd") or []][:64],
        "network_mode": host.get("NetworkMode"), "pid_mode": host.get("PidMode"), "ipc_mode": host.get("IpcMode"),
        "userns_mode": host.get("UsernsMode"), "security_opt": [str(s) for s in host.get("SecurityOpt") or []][:32],
        "devices": [str(d.get("PathOnHost")) for d in host.get("Devices") or [] if isinstance(d, dict)][:32],
        "host_network": host.get("NetworkMode") == "host", "host_pid": host.get("PidMode") == "host",
        "runtime_sockets": sockets, "mounts_runtime_socket": bool(sockets),
        "sensitive_mounts": sensitive, "mounts_host_root": any(s == "/" for s, _ in sources),
        "mounts_host_root_rw": any(s == "/" and rw for s, rw in sources),
    }


# ---- the OCI runtime spec (podman, CRI-O, containerd) ----------------------------------------------

def oci_container(spec: dict[str, Any], include_env: bool) -> dict[str, Any]:
    """Fields of a container from its OCI runtime spec, named as Docker's records name them, so the rules
    over ``containers`` read every runtime alike."""
    process, linux = _d(spec.get("process")), _d(spec.get("linux"))
    caps = _d(process.get("capabilities"))
    bounding = sorted({str(c) for c in _l(caps.get("bounding")) + _l(caps.get("effective"))})
    namespaces = {str(_d(n).get("type")): _d(n).get("path") for n in _l(linux.get("namespaces"))}
    # a namespace the spec does not ask for, or joins by the path of the host's own (pid 1's), is the host's
    host_ns = {kind: kind not in namespaces or str(namespaces[kind] or "").startswith("/proc/1/")
               for kind in ("pid", "network", "ipc", "uts")}
    # --privileged: every capability, no seccomp filter, no AppArmor/SELinux confinement
    privileged = _d(spec.get("annotations")).get("io.podman.annotations.privileged") == "TRUE" or (
        "CAP_SYS_ADMIN" in bounding and len(bounding) >= 30 and not linux.get("seccomp")
        and not process.get("apparmorProfile") and not process.get("selinuxLabel"))
    mounts = []
    for m in _l(spec.get("mounts")):
        m = _d(m)
        options = [str(o) for o in _l(m.get("options"))]
        if m.get("type") == "bind" or "bind" in options or "rbind" in options:
            mounts.append({"source": m.get("source"), "destination": m.get("destination"), "rw": "ro" not in options,
                           "type": "bind"})
    host = {"Privileged": privileged, "CapAdd": sorted(set(bounding) - DEFAULT_CAPS),
            "NetworkMode": "host" if host_ns["network"] else None, "PidMode": "host" if host_ns["pid"] else None,
            "IpcMode": "host" if host_ns["ipc"] else None, "UsernsMode": "host" if "user" not in namespaces else None,
            "SecurityOpt": (["seccomp=unconfined"] if not linux.get("seccomp") else [])
            + ([f"apparmor={process['apparmorProfile']}"] if process.get("apparmorProfile") else [])}
    env = [str(e) for e in _l(process.get("env")) if isinstance(e, str)]
    user = _d(process.get("user"))
    annotations = {str(k): str(v)[:512] for k, v in list(_d(spec.get("annotations")).items())[:64]}
    return {
        "command": " ".join(str(a) for a in _l(process.get("args")))[:4096],
        "user": f"{user.get('uid')}:{user.get('gid')}",
        "hostname": spec.get("hostname"), "working_dir": process.get("cwd"), "capabilities": bounding,
        "seccomp": bool(linux.get("seccomp")), "apparmor_profile": process.get("apparmorProfile"),
        "cgroups_path": linux.get("cgroupsPath"), "annotations": annotations,
        "env": env if include_env else [e.split("=", 1)[0] + "=…" for e in env],
        "mounts": mounts, **reach(mounts, host),
    }


def _base(runtime: str, cid: str) -> dict[str, Any]:
    """Every field of a Docker record, so that a rule's field test sees the same shape from each runtime."""
    return {"runtime": runtime, "id": cid, "name": None, "image": None, "image_id": None, "command": "",
            "entrypoint": None, "user": None, "hostname": None, "working_dir": None, "created_utc": None,
            "state": None, "running": False, "pid": None, "started_utc": None, "finished_utc": None,
            "exit_code": None, "restart_policy": None, "labels": {}, "env": [], "mounts": [], "driver": None,
            **reach([], {})}


# ---- containers-storage: podman and CRI-O -------------------------------------------------------

def _storage_roots(ctx: Context) -> list[tuple[str, str | None]]:
    """(graph root, the user whose rootless storage it is) for the system storage and each home's."""
    roots: list[tuple[str, str | None]] = [(r, None) for r in ctx.opt("storage_roots", STORAGE_ROOTS)]
    conf = _storage_conf_root(ctx)
    if conf:
        roots.insert(0, (conf, None))
    if ctx.opt("rootless_storage", True):
        try:
            data, _, _ = read_capped(ctx, "/etc/passwd", 4 << 20)
        except OSError:
            data = b""
        homes = {(u["home"], u["name"]) for u in parse_passwd(data) if u["home"] and u["home"] != "/"}
        for home, user in sorted(homes):
            roots.append((home.rstrip("/") + "/" + ROOTLESS_STORAGE, user))
    seen, out = set(), []
    for root, user in roots:
        if root not in seen:
            seen.add(root)
            out.append((root, user))
    return out


def _storage_conf_root(ctx: Context) -> str | None:
    """``graphroot`` of /etc/containers/storage.conf (TOML), when the host moved its storage."""
    try:
        data, _, _ = read_capped(ctx, "/etc/containers/storage.conf", 1 << 20)
    except OSError:
        return None
    match = re.search(rb'(?m)^\s*graphroot\s*=\s*"([^"]+)"', data)
    return text(match.group(1)) if match else None


def _images(ctx: Context, root: str, cap: int) -> dict[str, str]:
    doc = _doc(ctx, f"{root}/overlay-images/images.json", cap)
    names: dict[str, str] = {}
    for image in _l(doc, 10000):
        image = _d(image)
        tags = _l(image.get("names")) or _l(image.get("names-history"))
        if image.get("id") and tags:
            names[str(image["id"])] = str(tags[0])
    return names


def storage_containers(ctx: Context, root: str, user: str | None, include_env: bool, cap: int,
                       budget: list[int]) -> Iterator[Item | tuple[dict[str, Any], str | None]]:
    """Records of one containers-storage graph root, each with its writable layer's folder."""
    listing = _doc(ctx, f"{root}/overlay-containers/containers.json", cap)
    if listing is None:
        return
    if isinstance(listing, Problem):
        yield listing
        return
    images = _images(ctx, root, cap)
    yield from copy_file(ctx, f"{root}/overlay-containers/containers.json", cap)
    libpod = yield from _libpod_state(ctx, root)
    for entry in _l(listing, int(ctx.opt("max_containers", 2000))):
        ctx.check()
        entry = _d(entry)
        cid = str(entry.get("id") or "")
        if not re.fullmatch(r"[0-9a-f]{64}", cid):
            continue
        try:
            meta = json.loads(entry.get("metadata") or "{}")
        except ValueError:
            meta = {}
        meta = _d(meta)
        config_path = f"{root}/overlay-containers/{cid}/userdata/config.json"
        spec = _doc(ctx, config_path, cap)
        if isinstance(spec, Problem):
            yield spec
        spec = _d(spec)
        config, state, state_db = libpod.get(cid, ({}, {}, ""))
        if not spec and isinstance(config.get("spec"), dict):
            spec, config_path = config["spec"], state_db  # created, never started: only podman's database has it
        fields = oci_container(spec, include_env) if spec else {}
        if config.get("privileged") is True:
            fields["privileged"] = True
        annotations = fields.get("annotations") or {}
        # podman writes some io.kubernetes.cri-o.* annotations too, but names itself ("libpod")
        crio = annotations.get("io.container.manager") != "libpod" and (
            "io.kubernetes.cri-o.SandboxID" in annotations or "pod-name" in meta)
        record = _base("cri-o" if crio else "podman", cid)
        record.update(fields)
        names = _l(entry.get("names"))
        image_id = str(entry.get("image") or "") or None
        record.update({
            "name": annotations.get("io.kubernetes.container.name") or meta.get("name") or meta.get("container-name")
            or (str(names[0]) if names else None),
            "image": meta.get("image-name") or annotations.get("io.kubernetes.cri-o.ImageName")
            or images.get(image_id or "") or image_id, "image_id": image_id,
            "created_utc": _time(entry.get("created")) or (utc(meta["created-at"]) if isinstance(
                meta.get("created-at"), (int, float)) else None), "driver": "overlay",
            "storage_root": root, "rootless_user": user, "config_path": config_path if spec else None,
            "pod_name": meta.get("pod-name") or annotations.get("io.kubernetes.pod.name"),
            "pod_namespace": meta.get("pod-namespace") or annotations.get("io.kubernetes.pod.namespace"),
            "state": "unknown",  # without podman's database; running then comes from /proc
        })
        if state or config:
            record.update(_libpod_fields(config, state))
        layer = str(entry.get("layer") or "")
        upper = f"{root}/overlay/{layer}/diff" if re.fullmatch(r"[0-9a-f]{64}", layer) else None
        yield record, upper if upper and is_dir(ctx, upper) else None
        if spec and config_path.endswith("/config.json"):
            yield from copy_file(ctx, config_path, cap)
        log = f"{root}/overlay-containers/{cid}/userdata/ctr.log"
        yield from cri_log(ctx, log, {"runtime": record["runtime"], "container_id": cid,
                                      "container": record["name"]}, budget, missing_ok=True)


# podman's define.ContainerStatus (libpod/define/containerstate.go)
LIBPOD_STATES = {0: "unknown", 1: "configured", 2: "created", 3: "running", 4: "stopped", 5: "paused", 6: "exited",
                 7: "removing", 8: "stopping"}


def _libpod_state(ctx: Context, root: str) -> Iterator[Item]:
    """{container id: (its libpod config, its state, the database it came from)}: podman 4.8+'s SQLite
    ``db.sql`` (the default from podman 5; libpod/sqlite_state.go) and podman 4's ``libpod/bolt_state.db``
    (libpod/boltdb_state.go: bucket "ctr", one sub-bucket per container with JSON "config" and "state"), both
    with the same ContainerConfig / ContainerState JSON. Where both exist podman uses the bolt database
    unless configured otherwise (runtime.go, getDBState), so its entries win for an id in both. A generator
    whose return value is the map, so its Problems and the databases' copies reach the caller's stream."""
    found: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {}
    sqlite_path = f"{root}/db.sql"
    if _exists(ctx, sqlite_path):
        rows = yield from _libpod_sqlite(ctx, sqlite_path)
        found.update({cid: (config, state, sqlite_path) for cid, (config, state) in rows.items()})
    bolt_path = f"{root}/libpod/bolt_state.db"
    bolt = yield from _bolt_file(ctx, bolt_path)
    if bolt is None:
        return found
    for cid, is_value in bolt.bucket(b"ctr").items():
        ctx.check()
        if is_value is not None:
            continue
        entry = bolt.bucket(b"ctr", cid)
        docs = []
        for key in (b"config", b"state"):
            try:
                doc = json.loads(entry.get(key) or b"{}")
            except ValueError:
                doc = {}
            docs.append(_d(doc))
        found[text(cid)] = (docs[0], docs[1], bolt_path)
    if bolt.truncated:
        yield Problem("podman's bolt_state.db has more entries than we walk: containers left out",
                      path=bolt_path, level="warning")
    return found


# podman's SQLite state (libpod/sqlite_state_internal.go, createSQLiteTables): ContainerConfig(ID, Name, PodID,
# JSON) and ContainerState(ID, State, ExitCode, JSON); the JSON columns are the bolt database's documents
LIBPOD_SQL = ("SELECT c.ID, c.JSON, s.JSON FROM ContainerConfig AS c LEFT JOIN ContainerState AS s ON s.ID = c.ID "
              "LIMIT ?")


def _libpod_sqlite(ctx: Context, path: str) -> Iterator[Item]:
    """{container id: (config, state)} of podman's db.sql. The host's file is never opened by SQLite: its bytes
    (and its write-ahead log's, where podman's last transactions may still be: it runs in WAL mode) are read
    through the evidence reader, bounded, the log's committed frames applied to that copy in memory, and the
    copy opened read-only (no lock, no -shm or -journal file next to the host's database)."""
    cap = int(ctx.opt("bolt_cap_bytes", 64 << 20))
    found: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    try:
        data, _, truncated = read_capped(ctx, path, cap)
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read podman's state database", path)
        return found
    if truncated or not data.startswith(b"SQLite format 3\0"):
        yield Problem("podman's db.sql " + (f"is larger than {cap} bytes" if truncated else "is not SQLite") +
                      ": copied, not parsed", path=path, level="warning")
        yield from copy_file(ctx, path, cap)
        return found
    image = bytearray(data)
    wal_note = None
    if _exists(ctx, path + "-wal"):
        try:
            wal, _, wal_cut = read_capped(ctx, path + "-wal", cap)
        except OSError as exc:
            wal, wal_cut = b"", True
            yield Problem.from_os_error(exc, "cannot read podman's state write-ahead log", path + "-wal")
        applied = apply_wal(image, wal) if wal and not wal_cut else None if wal else 0
        if applied is None:
            wal_note = "its write-ahead log could not be applied: the latest changes may be missing"
            image = bytearray(data)
        yield from copy_file(ctx, path + "-wal", cap)
    yield from copy_file(ctx, path, cap)
    if wal_note:
        yield Problem(f"podman's db.sql: {wal_note}", path=path, level="warning")
    if len(image) > 19 and image[18] == 2 and image[19] == 2:
        image[18] = image[19] = 1  # WAL mode: an in-memory copy reads as a rollback-journal database
    try:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            conn.deserialize(bytes(image))
            conn.execute("PRAGMA query_only = ON")
            conn.execute("PRAGMA trusted_schema = OFF")
            rows = conn.execute(LIBPOD_SQL, (int(ctx.opt("max_containers", 2000)),)).fetchall()
        finally:
            conn.close()
    except (sqlite3.Error, ValueError, OverflowError, MemoryError) as exc:
        yield Problem(f"podman's db.sql not read: {exc}"[:300], path=path, level="warning")
        return found
    for cid, config, state in rows:
        ctx.check()
        docs = []
        for doc in (config, state):
            try:
                docs.append(_d(json.loads(doc or "{}")))
            except (ValueError, TypeError):
                docs.append({})
        found[str(cid)] = (docs[0], docs[1])
    return found


def _exists(ctx: Context, path: str) -> bool:
    try:
        read_capped(ctx, path, 0)
    except OSError:
        return False
    return True


def _libpod_fields(config: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    status = state.get("state")
    fields: dict[str, Any] = {
        "state": LIBPOD_STATES.get(status, "unknown") if isinstance(status, int) else "unknown",
        "running": status == 3,
        "started_utc": _time(state.get("startedTime")), "finished_utc": _time(state.get("finishedTime")),
        # an exit code of 0 is omitted from the JSON (omitempty)
        "exit_code": state.get("exitCode", 0) if state.get("exited") else None, "pid": state.get("pid") or None,
        "restart_policy": config.get("restart_policy") or config.get("restartPolicy") or None,
        "network_mode_libpod": config.get("networkMode"),
    }
    if isinstance(config.get("rootfsImageName"), str):
        fields["image"] = config["rootfsImageName"]
    if isinstance(config.get("createdTime"), str):
        fields["created_utc"] = _time(config["createdTime"])
    return fields


# ---- containerd (runtime v2 task state) -------------------------------------------------------------

def _mount_uppers() -> dict[str, str]:
    """Live: {overlay mount point: its upperdir} from our own mountinfo (the host's mount namespace when we
    run there), so a containerd rootfs mount names the snapshot folder its container writes to."""
    try:
        lines = read_small("/proc/self/mountinfo", 16 << 20).decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields, rest = pre.split(), post.split()
        if len(fields) > 4 and rest and rest[0] == "overlay" and len(rest) > 2:
            for option in rest[2].split(","):
                if option.startswith("upperdir="):
                    found[fields[4]] = option[len("upperdir="):]
    return found


def containerd_containers(ctx: Context, include_env: bool,
                          cap: int) -> Iterator[Item | tuple[dict[str, Any], str | None]]:
    """Every container of containerd's metadata (meta.db), each with the state of its running task, if any
    (the task's spec, init.pid, rootfs mount), and tasks the metadata does not name."""
    known = yield from _containerd_meta(ctx, include_env)
    uppers = _mount_uppers() if ctx.live and ctx.root == "/" else {}
    for base in ctx.opt("containerd_tasks", CONTAINERD_TASKS):
        try:
            namespaces = listdir(ctx, base)
        except FileNotFoundError:
            continue
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot list", base)
            continue
        for namespace, is_folder in namespaces:
            if not is_folder:
                continue
            try:
                tasks = listdir(ctx, f"{base}/{namespace}")
            except OSError as exc:
                yield Problem.from_os_error(exc, "cannot list", f"{base}/{namespace}")
                continue
            for cid, task_is_folder in tasks[:int(ctx.opt("max_containers", 2000))]:
                ctx.check()
                folder = f"{base}/{namespace}/{cid}"
                spec = _doc(ctx, f"{folder}/config.json", cap) if task_is_folder else None
                if not isinstance(spec, dict):
                    if isinstance(spec, Problem):
                        yield spec
                    continue
                record, upper = known.pop((namespace, cid), (None, None))
                if record is None:
                    record = _base("containerd", cid)
                    record.update({"name": cid, "namespace": namespace})
                record.update(oci_container(spec, include_env))  # the task's spec is what runs
                annotations = record.get("annotations") or {}
                pid = None
                try:
                    data, _, _ = read_capped(ctx, f"{folder}/init.pid", 64)
                    pid = int(data.strip() or b"0") or None
                except (OSError, ValueError):
                    pass
                record.update({
                    "pid": pid, "state": "task", "config_path": f"{folder}/config.json",
                    "name": annotations.get("io.kubernetes.cri.container-name") or record.get("name") or cid,
                    "image": record.get("image") or annotations.get("io.kubernetes.cri.image-name"),
                    "pod_name": annotations.get("io.kubernetes.cri.sandbox-name") or record.get("pod_name"),
                    "pod_namespace": annotations.get("io.kubernetes.cri.sandbox-namespace")
                    or record.get("pod_namespace"),
                })
                if any(k.startswith("io.kubernetes.cri.") for k in annotations):
                    record["orchestrator"] = "kubernetes"
                live_upper = uppers.get(ctx.host_path(f"{folder}/rootfs"))
                if live_upper and is_dir(ctx, live_upper):
                    upper = live_upper
                yield record, upper
                yield from copy_file(ctx, f"{folder}/config.json", cap)
    for record, upper in known.values():  # no task: created, or stopped
        yield record, upper


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("bad varint")


def _any_value(data: bytes) -> bytes | None:
    """The value of a protobuf google.protobuf.Any (field 1 type_url, field 2 value)."""
    fields, pos = {}, 0
    while pos < len(data):
        tag, pos = _uvarint(data, pos)
        if tag & 7 != 2:
            return None
        size, pos = _uvarint(data, pos)
        fields[tag >> 3], pos = data[pos:pos + size], pos + size
    return fields.get(2)


def go_time(data: bytes | None) -> str | None:
    """A Go time.Time in its MarshalBinary form (version, seconds since year 1, nanoseconds, zone), as UTC."""
    import datetime as _dt

    if not data or len(data) < 15 or data[0] not in (1, 2):
        return None
    seconds, nanos = int.from_bytes(data[1:9], "big", signed=True), int.from_bytes(data[9:13], "big")
    try:
        moment = _dt.datetime(1, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError:
        return None
    return moment.isoformat().replace("+00:00", "Z")


def _bolt_file(ctx: Context, path: str) -> Iterator[Item]:
    """A Bolt of the file at path (returned), or None; Problems and the file's copy yielded."""
    cap = int(ctx.opt("bolt_cap_bytes", 64 << 20))
    try:
        data, _, truncated = read_capped(ctx, path, cap)
    except FileNotFoundError:
        return None
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read", path)
        return None
    try:
        bolt = Bolt(data)
    except (ValueError, IndexError, OverflowError, struct.error) as exc:  # not copied: no evidence of a runtime
        yield Problem(f"bolt database not read: {exc}", path=path, level="warning")
        return None
    yield from copy_file(ctx, path, cap)
    if truncated:
        yield Problem(f"bolt database larger than {cap} bytes: read in part", path=path, level="warning")
    return bolt


def _containerd_meta(ctx: Context, include_env: bool) -> Iterator[Item]:
    """{(namespace, id): (record, upper folder)} from containerd's meta.db (metadata/buckets.go:
    v1/<namespace>/containers/<id>: image, labels, spec (a protobuf Any holding the OCI spec's JSON),
    snapshotter, snapshotKey, createdat, updatedat) and, for the writable layer, the snapshot's name
    (v1/<namespace>/snapshots/<snapshotter>/<key>/name) looked up in the overlayfs snapshotter's own
    metadata.db (v1/snapshots/<name>/id: snapshots/<id>/fs)."""
    found: dict[tuple[str, str], tuple[dict[str, Any], str | None]] = {}
    for root in dict.fromkeys(ctx.opt("containerd_roots", CONTAINERD_ROOTS)):
        found.update((yield from _containerd_root(ctx, root, include_env)))
    return found


def _containerd_root(ctx: Context, root: str, include_env: bool) -> Iterator[Item]:
    found: dict[tuple[str, str], tuple[dict[str, Any], str | None]] = {}
    meta = yield from _bolt_file(ctx, f"{root}/io.containerd.metadata.v1.bolt/meta.db")
    if meta is None:
        return found
    snapshots = None
    for ns_raw, is_value in meta.bucket(b"v1").items():
        if is_value is not None:
            continue
        namespace = text(ns_raw)
        for cid_raw, value in list(meta.bucket(b"v1", ns_raw, b"containers").items())[:int(ctx.opt("max_containers",
                                                                                                    2000))]:
            ctx.check()
            if value is not None:
                continue
            entry = meta.bucket(b"v1", ns_raw, b"containers", cid_raw)
            labels = {text(k): text(v or b"")[:512] for k, v in list(meta.bucket(
                b"v1", ns_raw, b"containers", cid_raw, b"labels").items())[:64]}
            cid = text(cid_raw)
            record = _base("containerd", cid)
            try:
                spec = json.loads(_any_value(entry.get(b"spec") or b"") or b"{}")
            except ValueError:
                spec = {}
            if isinstance(spec, dict) and spec:
                record.update(oci_container(spec, include_env))
            runtime = meta.bucket(b"v1", ns_raw, b"containers", cid_raw, b"runtime")
            record.update({
                "name": labels.get("io.kubernetes.container.name") or cid, "namespace": namespace,
                "image": text(entry.get(b"image") or b"") or None, "labels": labels, "state": "no-task",
                "created_utc": go_time(entry.get(b"createdat")), "updated_utc": go_time(entry.get(b"updatedat")),
                "pod_name": labels.get("io.kubernetes.pod.name"),
                "pod_namespace": labels.get("io.kubernetes.pod.namespace"),
                "shim": text(runtime.get(b"name") or b"") or None,
                "config_path": f"{root}/io.containerd.metadata.v1.bolt/meta.db",
                "driver": text(entry.get(b"snapshotter") or b"") or None,
            })
            if "io.kubernetes.pod.name" in labels:
                record["orchestrator"] = "kubernetes"
            upper = None
            key, snapshotter = entry.get(b"snapshotKey"), entry.get(b"snapshotter")
            if key and snapshotter == b"overlayfs":
                name = meta.bucket(b"v1", ns_raw, b"snapshots", b"overlayfs", key).get(b"name")
                if snapshots is None:
                    snapshots = yield from _bolt_file(
                        ctx, f"{root}/io.containerd.snapshotter.v1.overlayfs/metadata.db")
                    snapshots = snapshots or False
                if name and snapshots:
                    try:
                        sid = _uvarint(snapshots.bucket(b"v1", b"snapshots", name).get(b"id") or b"", 0)[0]
                    except ValueError:
                        sid = None
                    folder = f"{root}/io.containerd.snapshotter.v1.overlayfs/snapshots/{sid}/fs"
                    upper = folder if sid and is_dir(ctx, folder) else None
            found[(namespace, cid)] = (record, upper)
    if meta.truncated:
        yield Problem("containerd's meta.db has more entries than we walk: containers left out",
                      path=f"{root}/io.containerd.metadata.v1.bolt/meta.db", level="warning")
    return found


# ---- live processes to containers ---------------------------------------------------------------

def process_map(ctx: Context, most: int = 100000) -> dict[str, list[dict[str, Any]]]:
    """Live only: {container id or cgroup path: [{pid, exe, cmdline}]} from every process's cgroup."""
    if not (ctx.live and ctx.root == "/"):
        return {}
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()][:most]
    except OSError:
        return {}
    for pid in sorted(pids):
        ctx.check()
        try:
            lines = read_small(f"/proc/{pid}/cgroup", 1 << 16).decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        keys = set()
        for line in lines:
            path = line.split(":", 2)[-1].strip()
            if not path or path == "/" or "conmon" in path:
                continue
            keys.add(path)
            match = _CGROUP_ID.search(path)
            if match:
                keys.add(match.group(1))
        if not keys:
            continue
        proc = {"pid": pid, "exe": _exe(pid), "cmdline": _cmdline(pid)}
        for key in keys:
            found.setdefault(key, []).append(proc)
    return found


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _cmdline(pid: int) -> str:
    try:
        return text(read_small(f"/proc/{pid}/cmdline", 1 << 16).replace(b"\0", b" ").strip())[:4096]
    except OSError:
        return ""


def processes_of(record: dict[str, Any], pmap: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The live processes of a container: by its id in a cgroup name, its spec's cgroupsPath, its init pid."""
    procs: dict[int, dict[str, Any]] = {}
    for key in (record.get("id"), record.get("cgroups_path")):
        if key:
            for p in pmap.get(str(key), []):
                procs[p["pid"]] = p
    pid = record.get("pid")
    if pmap and isinstance(pid, int) and pid not in procs and os.path.isdir(f"/proc/{pid}"):  # live only
        procs[pid] = {"pid": pid, "exe": _exe(pid), "cmdline": _cmdline(pid)}
    return [procs[p] for p in sorted(procs)]


# ---- Kubernetes ------------------------------------------------------------------------------------

def _pod_facts(pod: dict[str, Any]) -> dict[str, Any]:
    """What a core/v1 Pod may reach on its node, in the field names of the containers records."""
    spec, meta = _d(pod.get("spec")), _d(pod.get("metadata"))
    host_paths = {str(_d(v).get("name")): str(_d(_d(v).get("hostPath")).get("path") or "")
                  for v in _l(spec.get("volumes")) if _d(v).get("hostPath")}
    containers, mounts, privileged = [], [], False
    for c in _l(spec.get("containers")) + _l(spec.get("initContainers")):
        c = _d(c)
        security = _d(c.get("securityContext"))
        priv = security.get("privileged") is True
        privileged |= priv
        caps = [str(x) for x in _l(_d(security.get("capabilities")).get("add"))]
        command = " ".join(str(x) for x in _l(c.get("command")) + _l(c.get("args")))[:4096]
        containers.append({"name": c.get("name"), "image": c.get("image"), "command": command, "privileged": priv,
                           "cap_add": caps})
        for vm in _l(c.get("volumeMounts")):
            vm = _d(vm)
            source = host_paths.get(str(vm.get("name")))
            if source:
                mounts.append({"source": source, "destination": vm.get("mountPath"),
                               "rw": vm.get("readOnly") is not True, "type": "hostPath"})
    host = {"Privileged": privileged, "CapAdd": sorted({x for c in containers for x in c["cap_add"]}),
            "NetworkMode": "host" if spec.get("hostNetwork") is True else None,
            "PidMode": "host" if spec.get("hostPID") is True else None,
            "IpcMode": "host" if spec.get("hostIPC") is True else None}
    return {"name": meta.get("name"), "namespace": meta.get("namespace") or "default", "uid": meta.get("uid"),
            "containers": containers[:64], "image": ", ".join(str(c["image"]) for c in containers[:8]),
            "command": " ; ".join(c["command"] for c in containers[:8] if c["command"]),
            "host_paths": sorted(set(host_paths.values()))[:64], "mounts": mounts[:128],
            "host_ipc": spec.get("hostIPC") is True, **reach(mounts, host)}


def static_pods(ctx: Context, cap: int) -> Iterator[Item]:
    folders = list(ctx.opt("manifests", MANIFESTS))
    config = _doc(ctx, ctx.opt("kubelet_config", KUBELET_CONFIG), 1 << 20, yaml_ok=True)
    if isinstance(config, dict) and isinstance(config.get("staticPodPath"), str):  # KubeletConfiguration
        folders.append(config["staticPodPath"].rstrip("/") or "/")
    for folder in dict.fromkeys(folders):
        yield from _static_folder(ctx, folder, cap)


def _static_folder(ctx: Context, folder: str, cap: int) -> Iterator[Item]:
    try:
        entries = listdir(ctx, folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot list", folder)
        return
    for name, is_folder in entries[:500]:
        if is_folder or name.startswith(".") or not name.endswith((".yaml", ".yml", ".json", ".manifest")):
            continue
        path = f"{folder}/{name}"
        doc = _doc(ctx, path, min(cap, 1 << 20))
        if isinstance(doc, Problem):
            yield doc
            continue
        for pod in (doc if isinstance(doc, list) else [doc]):
            if _d(pod).get("kind") == "Pod":
                try:
                    mtime = utc(read_capped(ctx, path, 0)[1].st_mtime)
                except OSError:
                    mtime = None
                yield Record("k8s_pods", {"source": "static-manifest", "runtime": "kubernetes", "path": path,
                                          "mtime_utc": mtime, **_pod_facts(pod)})
        yield from copy_file(ctx, path, cap)


def kubelet_pods(ctx: Context) -> Iterator[Item]:
    """The kubelet's own folder per pod: which volumes it mounted (secrets, projected tokens, hostPath are
    not here: they are mounted from where they are) and its /etc/hosts, named by the pod's hostname."""
    folder = ctx.opt("kubelet_pods", KUBELET_PODS)
    try:
        pods = listdir(ctx, folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot list", folder)
        return
    for uid, is_folder in pods[:int(ctx.opt("max_pods", 2000))]:
        if not is_folder:
            continue
        ctx.check()
        base = f"{folder}/{uid}"
        volumes = []
        try:
            for plugin, _ in listdir(ctx, f"{base}/volumes")[:64]:
                for vol, _ in listdir(ctx, f"{base}/volumes/{plugin}")[:64]:
                    volumes.append({"plugin": plugin.replace("~", "/"), "name": vol})
        except OSError:
            pass
        hostname, mtime = None, None
        try:
            data, st, _ = read_capped(ctx, f"{base}/etc-hosts", 1 << 16)
            mtime = utc(st.st_mtime)
            for line in text(data).splitlines():
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 2 and parts[0] not in ("127.0.0.1", "::1", "fe00::0", "fe00::", "fe00::1",
                                                         "fe00::2", "ff00::0", "ff02::1", "ff02::2"):
                    hostname = parts[1]
        except OSError:
            pass
        containers = []
        try:
            containers = [n for n, d in listdir(ctx, f"{base}/containers") if d][:64]
        except OSError:
            pass
        yield Record("k8s_pods", {"source": "kubelet", "runtime": "kubernetes", "uid": uid, "name": hostname,
                                  "path": base, "mtime_utc": mtime, "volumes": volumes[:256],
                                  "container_names": containers,
                                  "secret_volumes": sum(v["plugin"] in SECRET_PLUGINS for v in volumes)})


def parse_cri_line(line: bytes) -> dict[str, Any] | None:
    """One line of the CRI log format: ``<RFC3339Nano> <stdout|stderr> <P|F> <message>`` (the tag is
    missing in older kubelets' files)."""
    match = _CRI_LINE.match(line)
    if not match:
        return None
    stamp = text(match.group(1))
    return {"time": stamp, "time_utc": _rfc3339_utc(stamp), "stream": match.group(2).decode(),
            "partial": match.group(3) == b"P", "message": text(match.group(4))[:8192]}


def _rfc3339_utc(stamp: str) -> str | None:
    import datetime as _dt

    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", stamp)
    if not match:
        return None
    frac = (match.group(2) or ".0")[:7]
    try:
        moment = _dt.datetime.fromisoformat(match.group(1) + frac + match.group(3).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(_dt.UTC).isoformat().replace("+00:00", "Z")


def log_budget(ctx: Context) -> list[int]:
    """Bytes of log tails the whole run may still copy (a node has thousands of pod logs)."""
    return [int(ctx.opt("max_log_total_bytes", 64 << 20))]


def cri_log(ctx: Context, path: str, about: dict[str, Any], budget: list[int],
            missing_ok: bool = False) -> Iterator[Item]:
    """The tail of one CRI-format log: copied raw, and its last lines as container_logs records."""
    cap, most = min(int(ctx.opt("log_cap_bytes", 1 << 20)), budget[0]), int(ctx.opt("max_log_lines", 200))
    if cap <= 0:
        if budget[0] == 0:
            budget[0] = -1
            yield Problem("log tails reached max_log_total_bytes: the rest not copied", path=path, level="warning")
        return
    try:
        data, _, truncated = read_capped(ctx, path, cap, keep="tail")
    except FileNotFoundError:
        return
    except OSError as exc:
        if not missing_ok:
            yield Problem.from_os_error(exc, "cannot read", path)
        return
    if not data:
        return
    budget[0] -= len(data)
    lines = data.splitlines()
    if truncated and lines:
        lines = lines[1:]  # the first line of a tail is cut
    for number, line in enumerate(lines[-most:]):
        row = parse_cri_line(line)
        if row:
            yield Record("container_logs", {**about, "path": path, "line_from_end": min(len(lines), most) - number,
                                            **row})
    yield from copy_file(ctx, path, cap, keep="tail")


def pod_logs(ctx: Context, budget: list[int]) -> Iterator[Item]:
    folder = ctx.opt("pod_logs", POD_LOGS)
    try:
        pods = listdir(ctx, folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot list", folder)
        return
    files = 0
    for pod, is_folder in pods[:int(ctx.opt("max_pods", 2000))]:
        parts = pod.split("_")
        if not is_folder or len(parts) < 3:
            continue
        namespace, name, uid = parts[0], "_".join(parts[1:-1]), parts[-1]
        try:
            containers = listdir(ctx, f"{folder}/{pod}")
        except OSError:
            continue
        for container, c_is_folder in containers[:64]:
            if not c_is_folder:
                continue
            try:
                logs = [n for n, d in listdir(ctx, f"{folder}/{pod}/{container}") if not d and n.endswith(".log")]
            except OSError:
                continue
            for log in sorted(logs, key=lambda n: int(n[:-4]) if n[:-4].isdigit() else -1)[-2:]:
                files += 1
                if files > int(ctx.opt("max_log_files", 500)):
                    yield Problem("more pod logs than max_log_files: the rest not read", path=folder, level="warning")
                    return
                ctx.check()
                yield from cri_log(ctx, f"{folder}/{pod}/{container}/{log}",
                                   {"runtime": "kubernetes", "namespace": namespace, "pod": name, "pod_uid": uid,
                                    "container": container}, budget)


# ---- kubeconfigs -----------------------------------------------------------------------------------

def kubeconfig_facts(doc: dict[str, Any]) -> dict[str, Any]:
    """A clientcmd v1 Config without a single secret: servers, user names, kinds of credential."""
    clusters = []
    for c in _l(doc.get("clusters"), 64):
        c = _d(c)
        cluster = _d(c.get("cluster"))
        clusters.append({"name": c.get("name"), "server": str(cluster.get("server") or "")[:512] or None,
                         "insecure_skip_tls_verify": cluster.get("insecure-skip-tls-verify") is True,
                         "has_ca": bool(cluster.get("certificate-authority-data")
                                        or cluster.get("certificate-authority")),
                         "proxy_url": cluster.get("proxy-url")})
    users = []
    for u in _l(doc.get("users"), 64):
        u = _d(u)
        user = _d(u.get("user"))
        kinds = [kind for kind, keys in (("client-certificate", ("client-certificate-data", "client-certificate")),
                                         ("token", ("token",)), ("token-file", ("tokenFile",)),
                                         ("basic", ("username", "password")), ("exec", ("exec",)),
                                         ("auth-provider", ("auth-provider",))) if any(user.get(k) for k in keys)]
        exec_ = _d(user.get("exec"))
        users.append({"name": u.get("name"), "auth": kinds, "username": user.get("username"),
                      "as": user.get("as"), "exec_command": exec_.get("command"),
                      "auth_provider": _d(user.get("auth-provider")).get("name"),
                      "embedded_key": bool(user.get("client-key-data")), "embedded_token": bool(user.get("token"))})
    contexts = [{"name": _d(c).get("name"), "cluster": _d(_d(c).get("context")).get("cluster"),
                 "user": _d(_d(c).get("context")).get("user"), "namespace": _d(_d(c).get("context")).get("namespace")}
                for c in _l(doc.get("contexts"), 64)]
    return {"current_context": doc.get("current-context"), "clusters": clusters, "users": users,
            "contexts": contexts, "servers": sorted({c["server"] for c in clusters if c["server"]}),
            "insecure_skip_tls_verify": any(c["insecure_skip_tls_verify"] for c in clusters),
            "user_names": [u["name"] for u in users], "auth_kinds": sorted({k for u in users for k in u["auth"]})}


def kubeconfigs(ctx: Context) -> Iterator[Item]:
    paths = list(ctx.opt("kubeconfigs", KUBECONFIGS))
    try:
        data, _, _ = read_capped(ctx, "/etc/passwd", 4 << 20)
    except OSError:
        data = b""
    homes = sorted({u["home"] for u in parse_passwd(data) if u["home"] and u["home"] != "/"} | {"/root"})
    paths += [h.rstrip("/") + "/.kube/config" for h in homes]
    for path in dict.fromkeys(paths):
        ctx.check()
        # facts_only: a kubeconfig is a secret file; this parser keeps none of its secrets
        doc = _doc(ctx, path, 1 << 20, facts_only=True, yaml_ok=True)
        if doc is None:
            continue
        if isinstance(doc, Problem):
            yield doc
            continue
        if not isinstance(doc, dict) or "clusters" not in doc and "users" not in doc:
            continue
        try:
            st = read_capped(ctx, path, 0, facts_only=True)[1]
            times = {"mtime_utc": utc(st.st_mtime), "ctime_utc": utc(st.st_ctime), "owner_uid": st.st_uid,
                     "mode": f"{st.st_mode & 0o7777:04o}"}
        except OSError:
            times = {}
        yield Record("kubeconfigs", {"path": path, "runtime": "kubernetes", **times, **kubeconfig_facts(doc)})


# ---- bbolt (podman's bolt_state.db, containerd's meta.db) ------------------------------------------

class Bolt:
    """A read-only walk of a bbolt database (github.com/etcd-io/bbolt: page.go, meta.go, bucket.go), held in
    memory (the caller caps its size): two meta pages (the valid one with the higher txid names the root
    bucket), branch and leaf pages, sub-buckets inline in their parent's value or rooted at a page. Every
    offset is checked; a page seen twice on one walk, or a walk deeper than MAX_DEPTH, ends it (a hostile
    file can loop)."""

    MAGIC, MAX_DEPTH, MAX_ITEMS = 0xED0CDAED, 32, 1_000_000

    def __init__(self, data: bytes):
        self.data, self.unpack, self.items = data, struct.unpack_from, 0
        self._buckets: dict[tuple[bytes, ...], bytes] = {}
        best = None
        for offset in (0, self._page_size_guess()):
            meta = self._meta(offset)
            if meta and (best is None or meta[2] > best[2]):
                best = meta
        if best is None:
            raise ValueError("not a bbolt database (no valid meta page)")
        self.page_size, self.root, _ = best

    @property
    def truncated(self) -> bool:
        """The walk stopped at MAX_ITEMS elements: what was returned is part of the database."""
        return self.items > self.MAX_ITEMS

    def _page_size_guess(self) -> int:
        try:
            return int(self.unpack("<I", self.data, 16 + 8)[0])
        except Exception:  # noqa: BLE001 - any short or odd file
            return 4096

    def _meta(self, offset: int) -> tuple[int, int, int] | None:
        if offset < 0 or offset + 16 + 64 > len(self.data):
            return None
        magic, version, page_size, _, root, _, _, _, txid, checksum = self.unpack("<IIIIQQQQQQ", self.data, offset + 16)
        body = self.data[offset + 16:offset + 16 + 56]
        digest = 0xCBF29CE484222325
        for byte in body:  # FNV-1a 64, as meta.sum64
            digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
        if magic != self.MAGIC or version != 2 or page_size < 512 or page_size > 1 << 20 or digest != checksum:
            return None
        return page_size, root, txid

    def _elements(self, buf: bytes, base: int, depth: int, seen: set[int]) -> Iterator[tuple[bytes, bytes, bool]]:
        if depth > self.MAX_DEPTH or base + 16 > len(buf):
            return
        flags, count = self.unpack("<HH", buf, base + 8)
        for i in range(count):
            self.items += 1
            if self.items > self.MAX_ITEMS:  # told by .truncated
                return
            elem = base + 16 + i * 16
            if elem + 16 > len(buf):
                return
            if flags & 0x01:  # branch: children by page id
                pgid = self.unpack("<IIQ", buf, elem)[2]
                if pgid in seen or pgid < 2 or (pgid + 1) * self.page_size > len(self.data):
                    continue
                seen.add(pgid)
                yield from self._elements(self.data, pgid * self.page_size, depth + 1, seen)
            elif flags & 0x02:  # leaf: key, value, and whether the value is a bucket
                leaf_flags, pos, ksize, vsize = self.unpack("<IIII", buf, elem)
                start = elem + pos
                if start + ksize + vsize > len(buf):
                    continue
                yield buf[start:start + ksize], buf[start + ksize:start + ksize + vsize], bool(leaf_flags & 0x01)

    def _children(self, value: bytes | None, depth: int) -> Iterator[tuple[bytes, bytes, bool]]:
        if value is None:  # the root bucket
            root = self.root
        else:
            if len(value) < 16:
                return
            root = self.unpack("<Q", value, 0)[0]
            if root == 0:  # an inline bucket: its page follows the bucket header in the value
                yield from self._elements(value[16:], 0, depth, set())
                return
        if root < 2 or (root + 1) * self.page_size > len(self.data):
            return
        yield from self._elements(self.data, root * self.page_size, depth, {root})

    def bucket(self, *path: bytes) -> dict[bytes, bytes | None]:
        """{key: value, or None for a sub-bucket} of the bucket at path; {} when it is missing. A listed
        sub-bucket's header is kept, so walking down a listing reads each page once (not once per key)."""
        out: dict[bytes, bytes | None] = {}
        try:
            depth, value = 0, None
            for depth in range(len(path), 0, -1):  # the deepest known bucket on the path
                if path[:depth] in self._buckets:
                    value = self._buckets[path[:depth]]
                    break
            else:
                depth = 0
            for level in range(depth, len(path)):
                found = next(((v, b) for k, v, b in self._children(value, level) if k == path[level]), None)
                if found is None or not found[1]:
                    return {}
                value = found[0]
            for key, val, is_bucket in self._children(value, len(path)):
                out[key] = None if is_bucket else val
                if is_bucket and len(self._buckets) < self.MAX_ITEMS:
                    self._buckets[path + (key,)] = val
        except (struct.error, ValueError, IndexError):  # a damaged page: what was read before it
            pass
        return out
