"""Containers from the runtime's own files, without its daemon (a suspect host's dockerd may be the
attacker's tool, and a disk image has none running): Docker's per-container ``config.v2.json`` and
``hostconfig.json`` under its data root, and each container's writable layer (overlay2's ``diff``
folder: exactly the files the container wrote or changed).

Records: ``containers`` (one per container: image, command, state, and what it may reach on the host:
binds, privileged, capabilities, host namespaces, devices, the runtime socket; live, ``running_pids``),
``container_processes`` (live: each process of a container, from /proc/PID/cgroup) and
``container_files`` (the files in writable layers, executables typed and hashed, ``exec_pids`` naming
the container's live processes that run that very file). Environment values are kept only with
--include-secrets: a container's environment is where its credentials live.

podman, CRI-O, containerd and Kubernetes' node files are read by collectors/files/runtimes.py into the
same streams (``runtime`` tells them apart) and its own (k8s_pods, container_logs, kubeconfigs)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from typing import Any

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import copy_file, is_dir, listdir, open_regular, read_capped, walk_tree
from collectors.files.runtimes import _time, process_map, processes_of, reach
from collectors.util import utc

DOCKER_ROOTS = ["/var/lib/docker"]
DAEMON_CONFIG = "/etc/docker/daemon.json"
HEAD_BYTES = 4096


def _json(ctx: Context, path: str, cap: int) -> dict[str, Any] | Problem | None:
    try:
        data, _, truncated = read_capped(ctx, path, cap)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Problem.from_os_error(exc, "cannot read", path)
    if truncated:
        return Problem(f"larger than {cap} bytes: not parsed", path=path, level="warning")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        return Problem(f"not JSON: {exc}", path=path, level="warning")
    return doc if isinstance(doc, dict) else Problem("not a JSON object", path=path, level="warning")


def _bind(spec: str) -> dict[str, Any]:
    """``source:destination[:options]`` as Docker's -v writes it into HostConfig.Binds."""
    parts = spec.split(":")
    source, destination = parts[0], parts[1] if len(parts) > 1 else parts[0]
    options = parts[2].split(",") if len(parts) > 2 else []
    return {"source": source, "destination": destination, "rw": "ro" not in options, "type": "bind"}


def docker_container(config: dict[str, Any], host: dict[str, Any], include_env: bool) -> dict[str, Any]:
    state = config.get("State") if isinstance(config.get("State"), dict) else {}
    cfg = config.get("Config") if isinstance(config.get("Config"), dict) else {}
    binds = [_bind(str(b)) for b in host.get("Binds") or [] if isinstance(b, str)][:128]
    for point in (config.get("MountPoints") or {}).values() if isinstance(config.get("MountPoints"), dict) else []:
        if isinstance(point, dict) and point.get("Source") and not any(
                b["destination"] == point.get("Destination") for b in binds):
            binds.append({"source": point.get("Source"), "destination": point.get("Destination"),
                          "rw": bool(point.get("RW")), "type": point.get("Type") or "volume",
                          "volume": point.get("Name") or None})
    env = [str(e) for e in cfg.get("Env") or [] if isinstance(e, str)][:256]
    running = bool(state.get("Running"))
    status = "running" if running else "paused" if state.get("Paused") else \
        "exited" if _time(state.get("FinishedAt")) else "created"
    command = [str(config.get("Path") or "")] + [str(a) for a in config.get("Args") or []]
    return {
        "runtime": "docker", "id": config.get("ID"), "name": str(config.get("Name") or "").lstrip("/"),
        "image": cfg.get("Image"), "image_id": config.get("Image"), "command": " ".join(c for c in command if c)[:4096],
        "entrypoint": cfg.get("Entrypoint"), "user": cfg.get("User") or None, "hostname": cfg.get("Hostname"),
        "working_dir": cfg.get("WorkingDir") or None, "created_utc": _time(config.get("Created")),
        "state": status, "running": running, "pid": state.get("Pid") or None,
        "started_utc": _time(state.get("StartedAt")), "finished_utc": _time(state.get("FinishedAt")),
        "exit_code": state.get("ExitCode"), "restart_policy": (host.get("RestartPolicy") or {}).get("Name"),
        "labels": dict(list((cfg.get("Labels") or {}).items())[:64]) if isinstance(cfg.get("Labels"), dict) else {},
        "env": env if include_env else [e.split("=", 1)[0] + "=…" for e in env],
        "mounts": binds, "driver": config.get("Driver"), **reach(binds, host),
    }


def _data_roots(ctx: Context) -> list[str]:
    roots = list(ctx.opt("docker_roots", DOCKER_ROOTS))
    config = _json(ctx, DAEMON_CONFIG, 1 << 20)
    if isinstance(config, dict) and isinstance(config.get("data-root") or config.get("graph"), str):
        roots.insert(0, str(config.get("data-root") or config.get("graph")))
    return list(dict.fromkeys(roots))


def _upper_dir(ctx: Context, data_root: str, driver: str, cid: str) -> str | None:
    """The container's writable layer: layerdb/mounts/<id>/mount-id names its folder under the driver."""
    try:
        data, _, _ = read_capped(ctx, f"{data_root}/image/{driver}/layerdb/mounts/{cid}/mount-id", 256)
    except OSError:
        return None
    mount_id = data.decode("ascii", "replace").strip()
    if not mount_id or "/" in mount_id or mount_id.startswith("."):
        return None
    folder = {"overlay2": f"{data_root}/overlay2/{mount_id}/diff", "overlay": f"{data_root}/overlay/{mount_id}/upper",
              "fuse-overlayfs": f"{data_root}/fuse-overlayfs/{mount_id}/diff"}.get(driver)
    return folder if folder and is_dir(ctx, folder) else None


def _facts(dir_fd: int, name: str, hash_limit: int) -> dict[str, Any]:
    from collectors.files.executables import magic

    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return {"unreadable": True}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return {}
        head = os.pread(fd, HEAD_BYTES, 0)
        facts = magic(head)
        if facts["file_type"] in ("elf", "script") and st.st_size <= hash_limit:
            digest, pos = hashlib.sha256(), 0
            while chunk := os.pread(fd, 1 << 20, pos):
                digest.update(chunk)
                pos += len(chunk)
            facts["sha256"] = digest.hexdigest()
        return facts
    finally:
        os.close(fd)


def _layer_files(ctx: Context, upper: str, container: dict[str, Any], most: int,
                 hash_limit: int, execs: dict[str, list[int]] | None = None) -> Iterator[Item]:
    count = 0
    execs = execs or {}
    for folder, files, dir_fd in walk_tree(ctx, upper):
        for name in files:
            ctx.check()
            if count >= most:
                yield Problem(f"writable layer lists more than {most} files: the rest not listed", path=upper,
                              level="warning")
                return
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue
            count += 1
            inside = "/" + (folder[len(upper):].strip("/") + "/" + name).lstrip("/")
            row: dict[str, Any] = {
                "runtime": container.get("runtime", "docker"), "container_id": container["id"],
                "container": container["name"], "image": container["image"], "running": container["running"],
                "exec_pids": execs.get(inside, []), "path": inside, "host_path": folder.rstrip("/") + "/" + name,
                "size": st.st_size, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "exec_bit": bool(st.st_mode & 0o111),
                "mtime_utc": utc(st.st_mtime), "ctime_utc": utc(st.st_ctime),
                "whiteout": stat.S_ISCHR(st.st_mode) and st.st_rdev == 0,  # overlayfs: a file deleted
                "hidden": any(p.startswith(".") for p in inside.split("/") if p),
            }
            if stat.S_ISLNK(st.st_mode):
                row["file_type"] = "symlink"
            elif stat.S_ISREG(st.st_mode):
                row.update(_facts(dir_fd, name, hash_limit))
            yield Record("container_files", row)


def with_processes(container: dict[str, Any],
                   pmap: dict[str, list[dict[str, Any]]]) -> tuple[list[Record], dict[str, list[int]]]:
    """The container's record with its live processes (``running_pids``), one container_processes record
    each, and {path inside the container: pids} of the programs they run (to mark the layer's files that
    are running)."""
    procs = processes_of(container, pmap)
    container["running_pids"] = [p["pid"] for p in procs][:1024]
    if procs and not container.get("running"):
        container["running"] = True
        if container.get("state") in (None, "unknown", "task", "created", "exited"):
            container["state"] = "running"
    execs: dict[str, list[int]] = {}
    out = [Record("containers", container)]
    for p in procs[:1024]:
        exe = str(p.get("exe") or "").removesuffix(" (deleted)")
        if exe:
            execs.setdefault(exe, []).append(p["pid"])
        out.append(Record("container_processes", {
            "runtime": container.get("runtime"), "container_id": container.get("id"),
            "container": container.get("name"), "image": container.get("image"), "pid": p["pid"],
            "exe": p.get("exe"), "cmdline": p.get("cmdline")}))
    return out, execs


def collect(ctx: Context) -> Iterator[Item]:
    include_env = ctx.include_secrets
    cap = int(ctx.opt("config_cap_bytes", 4 << 20))
    most_files = int(ctx.opt("max_layer_files", 5000))
    hash_limit = int(ctx.opt("hash_limit_bytes", 64 << 20))
    log_cap = int(ctx.opt("log_cap_bytes", 1 << 20))
    pmap = process_map(ctx)
    for data_root in _data_roots(ctx):
        folder = f"{data_root}/containers"
        try:
            entries = listdir(ctx, folder)
        except FileNotFoundError:
            continue
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot list", folder)
            continue
        for name, _is_folder in sorted(entries)[:int(ctx.opt("max_containers", 2000))]:
            ctx.check()
            base = f"{folder}/{name}"
            config = _json(ctx, f"{base}/config.v2.json", cap)
            if config is None:
                continue
            if isinstance(config, Problem):
                yield config
                continue
            host = _json(ctx, f"{base}/hostconfig.json", cap)
            if isinstance(host, Problem):
                yield host
            container = docker_container(config, host if isinstance(host, dict) else {}, include_env)
            container["config_path"] = f"{base}/config.v2.json"
            upper = _upper_dir(ctx, data_root, str(config.get("Driver") or ""), str(config.get("ID") or name))
            container["upper_dir"] = upper
            records, execs = with_processes(container, pmap)
            yield from records
            for item in ("config.v2.json", "hostconfig.json"):
                yield from copy_file(ctx, f"{base}/{item}", cap)
            log = f"{base}/{name}-json.log"
            try:
                fd, _, _ = open_regular(ctx, log)
                os.close(fd)
            except OSError:
                pass
            else:
                yield from copy_file(ctx, log, log_cap, keep="tail")
            if upper:
                yield from _layer_files(ctx, upper, container, most_files, hash_limit, execs)
    yield from _other_runtimes(ctx, pmap, include_env, cap, most_files, hash_limit)


def _other_runtimes(ctx: Context, pmap: dict[str, list[dict[str, Any]]], include_env: bool, cap: int,
                    most_files: int, hash_limit: int) -> Iterator[Item]:
    """podman, CRI-O, containerd and the kubelet's files (collectors/files/runtimes.py)."""
    from collectors.files import runtimes

    budget = runtimes.log_budget(ctx)
    sources = [runtimes.storage_containers(ctx, root, user, include_env, cap, budget)
               for root, user in runtimes._storage_roots(ctx)]
    sources.append(runtimes.containerd_containers(ctx, include_env, cap))
    for source in sources:
        for item in source:
            if not isinstance(item, tuple):
                yield item
                continue
            container, upper = item
            container["upper_dir"] = upper
            records, execs = with_processes(container, pmap)
            yield from records
            if upper:
                yield from _layer_files(ctx, upper, container, most_files, hash_limit, execs)
    yield from runtimes.static_pods(ctx, cap)
    yield from runtimes.kubelet_pods(ctx)
    yield from runtimes.pod_logs(ctx, budget)
    yield from runtimes.kubeconfigs(ctx)
