"""eBPF programs, maps and links loaded in the running kernel, read from the kernel with bpf(2).

An eBPF program runs inside the kernel with no process and no file behind it: BPFDoor's newer
variants and the rootkits built on eBPF (ebpfkit, TripleCross, Boopkit) are a socket filter, an
XDP or tc classifier reading every packet for a magic value, or kprobes and tracepoints hiding what
they do. None of that is in /proc's process list. The kernel lists them itself: ``BPF_PROG_GET_NEXT_ID``
walks its program table, ``BPF_PROG_GET_FD_BY_ID`` opens one, and ``BPF_OBJ_GET_INFO_BY_FD`` gives
``struct bpf_prog_info`` (type, tag, load time, loading uid, name, maps); the same for maps and links.
This needs CAP_SYS_ADMIN (or CAP_BPF): as another user the collector says so and stops.

Which process holds a program (an open descriptor, seen in /proc/<pid>/fdinfo) tells systemd's
own programs (cgroup firewalls and device policies) from a stranger's; a program that nothing holds
is attached somewhere (a socket, an interface, a cgroup) or pinned under /sys/fs/bpf, whose names
are listed too. Classic BPF filters set with SO_ATTACH_FILTER, which is how BPFDoor waits for its magic
packet on an AF_PACKET socket, are not in the kernel's program table: the packet sockets and their
filters come from sock_diag (NETLINK_SOCK_DIAG, as ``ss -0 -b`` shows them), with the constants each
filter compares packet bytes with.

The kernel's objects are the live host's: under ``--root`` (an image) this collector reads nothing.

* stream ``bpf_programs``: one loaded program;
* stream ``bpf_maps``: one map;
* stream ``bpf_links``: one link (program attached to a hook, kernel 5.8+);
* stream ``bpf_pinned``: one name under the bpf filesystem;
* stream ``packet_sockets``: one AF_PACKET socket, its classic filter and its holders;
* stream ``xdp_attachments``: one XDP program attached to an interface, as the interface itself reports it
  (rtnetlink RTM_GETLINK, IFLA_XDP: program id and attach mode, native/generic/offloaded): the older
  netlink way of attaching (``ip link set dev eth0 xdp obj ...``) leaves no bpf link to list, and nothing
  holds the program open once its loader exits, so the interface is the only place that names it;
* stream ``tc_attachments``: one eBPF classifier attached with ``tc filter ... bpf`` to an interface's
  ingress or egress (clsact, or the older ingress qdisc), from rtnetlink's filter dump (RTM_GETTFILTER:
  TCA_KIND "bpf", TCA_BPF_ID / NAME / FLAGS), for the same reason;
* stream ``bpf_summary``: how many of each were seen (none is an answer too), and the sysctls that
  decide who may load programs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import stat
import struct
from collections.abc import Callable, Iterator
from typing import Any

from collectors.base import Context, Item, Problem, Record
from collectors.util import read_small, read_text, utc

BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}

BPF_PROG_GET_NEXT_ID = 11
BPF_MAP_GET_NEXT_ID = 12
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_GET_NEXT_ID = 31
BPF_F_RDONLY = 1 << 3  # open a map read-only: enough for its info, and all a read-only user may get

# enum bpf_prog_type / bpf_map_type / bpf_link_type (include/uapi/linux/bpf.h), in order
PROG_TYPES = [
    "unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint", "xdp", "perf_event",
    "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit", "sock_ops", "sk_skb", "cgroup_device",
    "sk_msg", "raw_tracepoint", "cgroup_sock_addr", "lwt_seg6local", "lirc_mode2", "sk_reuseport",
    "flow_dissector", "cgroup_sysctl", "raw_tracepoint_writable", "cgroup_sockopt", "tracing", "struct_ops",
    "ext", "lsm", "sk_lookup", "syscall", "netfilter",
]
MAP_TYPES = [
    "unspec", "hash", "array", "prog_array", "perf_event_array", "percpu_hash", "percpu_array", "stack_trace",
    "cgroup_array", "lru_hash", "lru_percpu_hash", "lpm_trie", "array_of_maps", "hash_of_maps", "devmap",
    "sockmap", "cpumap", "xskmap", "sockhash", "cgroup_storage", "reuseport_sockarray", "percpu_cgroup_storage",
    "queue", "stack", "sk_storage", "devmap_hash", "struct_ops", "ringbuf", "inode_storage", "task_storage",
    "bloom_filter", "user_ringbuf", "cgrp_storage", "arena",
]
LINK_TYPES = [
    "unspec", "raw_tracepoint", "tracing", "cgroup", "iter", "netns", "xdp", "perf_event", "kprobe_multi",
    "struct_ops", "netfilter", "tcx", "uprobe_multi", "netkit", "sockmap",
]
# Executables whose programs are systemd's own (IPAddressDeny=, DeviceAllow=, RestrictFileSystems=,
# SocketBind*=, networkd, resolved, oomd): cgroup firewalls and device policies it loads for units.
SYSTEMD_EXE_PREFIXES = ("/usr/lib/systemd/", "/lib/systemd/", "/usr/bin/systemd", "/bin/systemd")
MAX_MAP_IDS = 64
MAX_OBJECTS = 10000


class _ProgInfo(ctypes.Structure):
    """struct bpf_prog_info up to attach_btf_id (kernel 5.16+); older kernels fill what they know."""

    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32), ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64), ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64), ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32), ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32), ("prog_tags", ctypes.c_uint64), ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64), ("recursion_misses", ctypes.c_uint64), ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32), ("pad", ctypes.c_uint32),
    ]


class _MapInfo(ctypes.Structure):
    """struct bpf_map_info up to map_extra (kernel 5.16+)."""

    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32), ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32), ("btf_value_type_id", ctypes.c_uint32), ("pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class _LinkInfo(ctypes.Structure):
    """The head of struct bpf_link_info (type, id, prog_id) and room for its per-type union."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("prog_id", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("union", ctypes.c_uint64 * 8)]


class _IdAttr(ctypes.Structure):
    """The bpf_attr of the *_GET_NEXT_ID and *_GET_FD_BY_ID commands."""

    _fields_ = [("start_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class Bpf:
    """The bpf(2) system call through libc's syscall()."""

    def __init__(self) -> None:
        machine = platform.machine()
        if machine not in BPF_SYSCALL:
            raise OSError(errno.ENOSYS, f"no bpf system call number known for {machine}")
        self.nr = BPF_SYSCALL[machine]
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long

    def call(self, cmd: int, attr: ctypes.Structure) -> int:
        rc = self._syscall(ctypes.c_long(self.nr), ctypes.c_int(cmd), ctypes.byref(attr),
                           ctypes.c_uint(ctypes.sizeof(attr)))
        if rc < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return int(rc)

    def ids(self, cmd: int) -> Iterator[int]:
        """Every id of one table (programs, maps, links), in increasing order; ENOENT ends it."""
        attr = _IdAttr()
        for _ in range(MAX_OBJECTS):
            try:
                self.call(cmd, attr)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return
                raise
            yield attr.next_id
            attr.start_id, attr.next_id = attr.next_id, 0

    def fd_by_id(self, cmd: int, obj_id: int, flags: int = 0) -> int:
        return self.call(cmd, _IdAttr(obj_id, 0, flags))

    def info(self, fd: int, info: ctypes.Structure) -> ctypes.Structure:
        self.call(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info)))
        return info


def boot_time(stat_path: str = "/proc/stat") -> int | None:
    """The boot moment in epoch seconds (btime of /proc/stat): program load times count from it."""
    try:
        for line in read_text(stat_path).splitlines():
            if line.startswith("btime "):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def _kind(table: list[str], value: int) -> str:
    return table[value] if 0 <= value < len(table) else f"type_{value}"


# --- which processes hold which objects ------------------------------------------------------------

def holders(proc: str = "/proc", limit_fds: int = 4096, check: Callable[[], None] = lambda: None,
            sockets: frozenset[int] = frozenset()) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """{("prog"|"map"|"link", id) or ("socket", inode): [{pid, comm, exe}]} from every process's bpf
    descriptors and its descriptors of the ``sockets`` asked for."""
    found: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        check()
        base = f"{proc}/{pid}"
        try:
            fds = os.listdir(f"{base}/fd")[:limit_fds]
        except OSError:
            continue
        owner: dict[str, Any] | None = None
        for fd in fds:
            try:
                target = os.readlink(f"{base}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1]) if target[8:-1].isdigit() else -1
                key: tuple[str, int] | None = ("socket", inode) if inode in sockets else None
            elif target.startswith("anon_inode:bpf"):
                key = _fdinfo_key(f"{base}/fdinfo/{fd}", target)
            else:
                continue
            if key is None:
                continue
            if owner is None:
                owner = _process(base, pid)
            holding = found.setdefault(key, [])
            if owner not in holding:
                holding.append(owner)
    return found


def _fdinfo_key(path: str, target: str) -> tuple[str, int] | None:
    try:
        fields = dict(line.split(":", 1) for line in read_text(path, 1 << 16).splitlines() if ":" in line)
    except OSError:
        return None
    for kind, field in (("link", "link_id"), ("prog", "prog_id"), ("map", "map_id")):
        if field in fields and (kind != "prog" or target == "anon_inode:bpf-prog"):
            try:
                return kind, int(fields[field].strip())
            except ValueError:
                return None
    return None


def _process(base: str, pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {"pid": pid, "comm": None, "exe": None}
    try:
        out["comm"] = read_small(f"{base}/comm", 256).decode("utf-8", "backslashreplace").rstrip("\n")
    except OSError:
        pass
    try:
        out["exe"] = os.readlink(f"{base}/exe")
    except OSError:
        pass
    return out


def held_by(who: list[dict[str, Any]]) -> str:
    """The holders as one line for rules and summaries: ``exe[pid]`` (comm when exe is unreadable),
    "" when no process holds the object (attached or pinned, its loader gone)."""
    return " ".join(f"{h.get('exe') or h.get('comm') or '?'}[{h['pid']}]" for h in who)


def is_systemd(holder: dict[str, Any]) -> bool:
    exe = holder.get("exe") or ""
    return exe.startswith(SYSTEMD_EXE_PREFIXES)


# --- the collector -----------------------------------------------------------------------------------

def collect(ctx: Context) -> Iterator[Item]:
    if ctx.root != "/" or not ctx.live:
        yield Problem("eBPF objects are the running kernel's: read only when the evidence root is the live host "
                      "(not under --root)", level="info")
        return
    btime = boot_time()
    try:
        packets = packet_sockets()
    except OSError as exc:
        packets = []
        yield Problem(f"packet sockets: sock_diag refused or absent: {exc.strerror or exc}", level="warning",
                      errno=exc.errno)
    held = holders(check=ctx.check, sockets=frozenset(p["inode"] for p in packets))
    ctx.check()
    counts: dict[str, int] = {}
    programs: dict[int, dict[str, Any]] = {}
    xdp_links: dict[int, list[int]] = {}
    for item in _chain(_bpf_objects(ctx, btime, held), _packet_records(packets, held),
                       pinned(ctx, str(ctx.opt("pinned_root", "/sys/fs/bpf")), int(ctx.opt("max_pinned", 5000)))):
        if isinstance(item, Record):
            counts[item.stream] = counts.get(item.stream, 0) + 1
            if item.stream == "bpf_programs":
                programs[item.data["id"]] = item.data
            elif item.stream == "bpf_links" and item.data.get("type") == "xdp":
                xdp_links.setdefault(item.data.get("ifindex") or 0, []).append(item.data["id"])
        yield item
    ctx.check()
    try:
        for record in xdp_attachments(int(ctx.opt("max_interfaces", 4096))):
            prog = programs.get(record["prog_id"], {})
            record.update(prog_name=prog.get("name"), prog_tag=prog.get("tag"), prog_type=prog.get("type"),
                          held_by=prog.get("held_by", ""), via_link=bool(xdp_links.get(record["ifindex"])),
                          link_ids=xdp_links.get(record["ifindex"], []))
            counts["xdp_attachments"] = counts.get("xdp_attachments", 0) + 1
            yield Record("xdp_attachments", record)
    except OSError as exc:
        yield Problem(f"XDP attachments: rtnetlink link dump refused or absent: {exc.strerror or exc}",
                      level="warning", errno=exc.errno)
    try:
        for record in tc_attachments(ctx, int(ctx.opt("max_interfaces", 4096))):
            prog = programs.get(record["prog_id"] or -1, {})
            record.update(prog_name=prog.get("name") or record.pop("filter_name", None), prog_tag=prog.get("tag")
                          or record.get("tag"), prog_type=prog.get("type"), held_by=prog.get("held_by", ""))
            counts["tc_attachments"] = counts.get("tc_attachments", 0) + 1
            yield Record("tc_attachments", record)
    except OSError as exc:
        yield Problem(f"tc classifiers: rtnetlink filter dump refused or absent: {exc.strerror or exc}",
                      level="warning", errno=exc.errno)
    # "none loaded" is a finding too: it must not read like "not collected"
    yield Record("bpf_summary", {
        "programs": counts.get("bpf_programs", 0), "maps": counts.get("bpf_maps", 0),
        "links": counts.get("bpf_links", 0), "pinned": counts.get("bpf_pinned", 0),
        "packet_sockets": counts.get("packet_sockets", 0), "xdp_attachments": counts.get("xdp_attachments", 0),
        "tc_attachments": counts.get("tc_attachments", 0),
        "boot_time_utc": utc(btime) if btime is not None else None,
        "unprivileged_bpf_disabled": _sysctl("/proc/sys/kernel/unprivileged_bpf_disabled"),
        "jit_enabled": _sysctl("/proc/sys/net/core/bpf_jit_enable"),
    })


def _bpf_objects(ctx: Context, btime: int | None, held: dict) -> Iterator[Item]:
    try:
        bpf = Bpf()
    except OSError as exc:
        yield Problem(f"bpf(2) cannot be called: {exc.strerror}", level="warning")
        return
    try:  # one question first: as an ordinary user every listing is refused, and one warning says it
        next(bpf.ids(BPF_PROG_GET_NEXT_ID), None)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.ENOSYS):
            yield _refused(exc, "listing eBPF objects")
            return
    yield from _programs(ctx, bpf, btime, held)
    yield from _maps(ctx, bpf, held)
    yield from _links(ctx, bpf, held)


def _chain(*parts: Iterator[Item]) -> Iterator[Item]:
    for part in parts:
        yield from part


def _sysctl(path: str) -> int | None:
    try:
        return int(read_text(path, 64).strip())
    except (OSError, ValueError):
        return None


def _refused(exc: OSError, what: str) -> Problem:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return Problem(f"{what}: the kernel refuses (CAP_SYS_ADMIN or CAP_BPF is needed)", level="warning",
                       errno=exc.errno)
    if exc.errno == errno.ENOSYS:
        return Problem(f"{what}: this kernel has no bpf(2)", level="info", errno=exc.errno)
    if exc.errno == errno.EINVAL:
        return Problem(f"{what}: this kernel does not know the command", level="info", errno=exc.errno)
    return Problem.from_os_error(exc, what)


def _programs(ctx: Context, bpf: Bpf, btime: int | None, held: dict) -> Iterator[Item]:
    try:
        for prog_id in bpf.ids(BPF_PROG_GET_NEXT_ID):
            ctx.check()
            try:
                fd = bpf.fd_by_id(BPF_PROG_GET_FD_BY_ID, prog_id)
            except OSError as exc:
                if exc.errno != errno.ENOENT:  # unloaded since it was listed
                    yield _refused(exc, f"program {prog_id}")
                continue
            try:
                yield Record("bpf_programs", _program_record(bpf, fd, btime, held))
            except OSError as exc:
                yield _refused(exc, f"program {prog_id}: info")
            finally:
                os.close(fd)
    except OSError as exc:
        yield _refused(exc, "listing eBPF programs")


def _program_record(bpf: Bpf, fd: int, btime: int | None, held: dict) -> dict[str, Any]:
    map_ids = (ctypes.c_uint32 * MAX_MAP_IDS)()
    info = _ProgInfo()
    info.nr_map_ids, info.map_ids = MAX_MAP_IDS, ctypes.addressof(map_ids)
    bpf.info(fd, info)
    load_s = info.load_time / 1e9
    who = held.get(("prog", info.id), [])
    return {
        "id": info.id, "type": _kind(PROG_TYPES, info.type), "type_id": info.type, "name": _name(info.name),
        "tag": bytes(info.tag).hex(), "load_time_ns": info.load_time,
        "load_time_utc": utc(btime + load_s) if btime is not None else None,
        "created_by_uid": info.created_by_uid, "map_ids": list(map_ids[:min(info.nr_map_ids, MAX_MAP_IDS)]),
        "nr_map_ids": info.nr_map_ids, "gpl_compatible": bool(info.gpl_compatible & 1),
        "ifindex": info.ifindex or None, "btf_id": info.btf_id or None,
        "xlated_prog_len": info.xlated_prog_len, "jited_prog_len": info.jited_prog_len,
        "run_cnt": info.run_cnt, "verified_insns": info.verified_insns or None,
        "holders": who, "held_by": held_by(who),
        "held_by_systemd": bool(who) and all(is_systemd(h) for h in who),
    }


def _maps(ctx: Context, bpf: Bpf, held: dict) -> Iterator[Item]:
    try:
        for map_id in bpf.ids(BPF_MAP_GET_NEXT_ID):
            ctx.check()
            try:
                fd = bpf.fd_by_id(BPF_MAP_GET_FD_BY_ID, map_id, BPF_F_RDONLY)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    yield _refused(exc, f"map {map_id}")
                continue
            try:
                info = bpf.info(fd, _MapInfo())
            except OSError as exc:
                yield _refused(exc, f"map {map_id}: info")
                continue
            finally:
                os.close(fd)
            who = held.get(("map", info.id), [])
            yield Record("bpf_maps", {
                "id": info.id, "type": _kind(MAP_TYPES, info.type), "type_id": info.type, "name": _name(info.name),
                "key_size": info.key_size, "value_size": info.value_size, "max_entries": info.max_entries,
                "map_flags": info.map_flags, "ifindex": info.ifindex or None, "btf_id": info.btf_id or None,
                "holders": who, "held_by": held_by(who),
                "held_by_systemd": bool(who) and all(is_systemd(h) for h in who),
            })
    except OSError as exc:
        yield _refused(exc, "listing eBPF maps")


def _links(ctx: Context, bpf: Bpf, held: dict) -> Iterator[Item]:
    names = interfaces()
    try:
        for link_id in bpf.ids(BPF_LINK_GET_NEXT_ID):
            ctx.check()
            try:
                fd = bpf.fd_by_id(BPF_LINK_GET_FD_BY_ID, link_id)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    yield _refused(exc, f"link {link_id}")
                continue
            try:
                info = bpf.info(fd, _LinkInfo())
            except OSError as exc:
                yield _refused(exc, f"link {link_id}: info")
                continue
            finally:
                os.close(fd)
            record = {"id": info.id, "type": _kind(LINK_TYPES, info.type), "type_id": info.type,
                      "prog_id": info.prog_id, "holders": held.get(("link", info.id), [])}
            record.update(_link_target(info, names))
            yield Record("bpf_links", record)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # links came in 5.8: an older kernel has none to list
            yield _refused(exc, "listing eBPF links")


def _link_target(info: _LinkInfo, names: dict[int, str]) -> dict[str, Any]:
    """Where a link attaches, from the head of its per-type union: the interface of an XDP, tcx or netkit
    link (a packet reader's hook), the cgroup of a cgroup link."""
    raw = bytes(info.union)
    kind = _kind(LINK_TYPES, info.type)
    if kind in ("xdp", "tcx", "netkit"):
        ifindex = int.from_bytes(raw[0:4], "little")
        return {"ifindex": ifindex, "interface": names.get(ifindex)}
    if kind == "cgroup":
        return {"cgroup_id": int.from_bytes(raw[0:8], "little"), "attach_type": int.from_bytes(raw[8:12], "little")}
    if kind == "netns":
        return {"netns_ino": int.from_bytes(raw[0:4], "little"), "attach_type": int.from_bytes(raw[4:8], "little")}
    return {}


def interfaces(sys_net: str = "/sys/class/net") -> dict[int, str]:
    """{ifindex: name} of this network namespace's interfaces."""
    out: dict[int, str] = {}
    try:
        names = os.listdir(sys_net)
    except OSError:
        return out
    for name in names[:4096]:
        try:
            out[int(read_text(f"{sys_net}/{name}/ifindex", 64).strip())] = name
        except (OSError, ValueError):
            continue
    return out


# --- XDP programs attached to interfaces (rtnetlink) -----------------------------------------------------

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
IFLA_IFNAME, IFLA_LINKINFO, IFLA_XDP = 3, 18, 43
IFLA_INFO_KIND = 1
# IFLA_XDP's nested attributes (include/uapi/linux/if_link.h)
IFLA_XDP_ATTACHED, IFLA_XDP_FLAGS, IFLA_XDP_PROG_ID = 2, 3, 4
IFLA_XDP_DRV_PROG_ID, IFLA_XDP_SKB_PROG_ID, IFLA_XDP_HW_PROG_ID = 5, 6, 7
# enum XDP_ATTACHED_*: the mode the program runs in (native driver hook, generic skb path, NIC offload)
XDP_MODES = {1: "native", 2: "generic", 3: "offloaded", 4: "multi"}


def _nlattrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > len(data):
            break
        out.setdefault(kind & 0x3FFF, data[offset + 4:offset + length])
        offset += (length + 3) & ~3
    return out


def _u32(raw: bytes | None) -> int | None:
    return struct.unpack_from("=I", raw, 0)[0] if raw is not None and len(raw) >= 4 else None


def xdp_attachments(max_interfaces: int = 4096) -> list[dict[str, Any]]:
    """Every XDP program attached to an interface of this network namespace, from the interface's own
    IFLA_XDP (RTM_GETLINK dump; no privilege needed): ifindex, interface, its kind (veth, bridge ...; none
    for a physical NIC), mode, prog_id. One record per program: a driver may hold a native and a generic
    program at once (XDP_ATTACHED_MULTI), each with its own id."""
    req = struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, 0, 0, 0)
    header = struct.pack("=IHHII", 16 + len(req), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    out: list[dict[str, Any]] = []
    seen = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as nl:
        nl.settimeout(5.0)
        nl.sendall(header + req)
        while seen <= max_interfaces:
            data = nl.recv(1 << 16)
            if not data:
                return out
            for kind, body in _netlink_messages(data):
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body, 0)[0] if len(body) >= 4 else errno.EIO
                    if code:
                        raise OSError(code, os.strerror(code))
                    return out
                if kind == RTM_NEWLINK and len(body) >= 16:
                    seen += 1
                    out.extend(_xdp_records(body))
    return out


def _xdp_records(body: bytes) -> list[dict[str, Any]]:
    ifindex = struct.unpack_from("=i", body, 4)[0]
    a = _nlattrs(body, 16)
    xdp = _nlattrs(a.get(IFLA_XDP, b""))
    attached = xdp.get(IFLA_XDP_ATTACHED, b"\0")[0] if xdp.get(IFLA_XDP_ATTACHED) else 0
    if not attached:
        return []
    name = a.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode("utf-8", "replace")
    link_kind = _nlattrs(a.get(IFLA_LINKINFO, b"")).get(IFLA_INFO_KIND)
    base = {"ifindex": ifindex, "interface": name,
            "interface_kind": link_kind.split(b"\0", 1)[0].decode("ascii", "replace") if link_kind else None,
            "flags": _u32(xdp.get(IFLA_XDP_FLAGS))}
    per_mode = [(mode, _u32(xdp.get(attr))) for mode, attr in (("native", IFLA_XDP_DRV_PROG_ID),
                                                              ("generic", IFLA_XDP_SKB_PROG_ID),
                                                              ("offloaded", IFLA_XDP_HW_PROG_ID))]
    found = [{**base, "mode": mode, "prog_id": pid} for mode, pid in per_mode if pid]
    if found:
        return found
    # one mode: the kernel gives IFLA_XDP_PROG_ID and says which mode in IFLA_XDP_ATTACHED
    return [{**base, "mode": XDP_MODES.get(attached, str(attached)), "prog_id": _u32(xdp.get(IFLA_XDP_PROG_ID))}]


RTM_NEWTFILTER, RTM_GETTFILTER = 44, 46
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_FLAGS, TCA_BPF_NAME, TCA_BPF_TAG, TCA_BPF_ID = 8, 7, 10, 11
TCA_BPF_FLAG_ACT_DIRECT = 1
# where tc filters hang: clsact's ingress and egress (TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS/EGRESS)) and
# the older ingress qdisc (ffff:)
TC_PARENTS = {0xFFFFFFF2: "ingress", 0xFFFFFFF3: "egress", 0xFFFF0000: "ingress"}


def _rtnl_dump(nl: socket.socket, kind: int, body: bytes, seq: int, most: int) -> Iterator[tuple[int, bytes]]:
    """(message type, payload) of one rtnetlink dump; OSError on a refusal other than 'nothing there'."""
    nl.sendall(struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
    for _ in range(most):
        data = nl.recv(1 << 16)
        if not data:
            return
        for mtype, payload in _netlink_messages(data):
            if mtype == NLMSG_DONE:
                return
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload, 0)[0] if len(payload) >= 4 else errno.EIO
                if code and code not in (errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP):
                    raise OSError(code, os.strerror(code))
                return
            yield mtype, payload


def tc_attachments(ctx: Context, max_interfaces: int = 4096) -> list[dict[str, Any]]:
    """Every eBPF tc classifier (cls_bpf) on the ingress or egress hook of this namespace's interfaces:
    ifindex, interface, interface_kind, direction, priority, prog_id, filter_name (the section name tc gave),
    tag, direct_action."""
    links = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as nl:
        nl.settimeout(5.0)
        req = struct.pack("=BBHiII", socket.AF_UNSPEC, 0, 0, 0, 0, 0)
        for mtype, body in _rtnl_dump(nl, RTM_GETLINK, req, 1, max_interfaces):
            if mtype == RTM_NEWLINK and len(body) >= 16 and len(links) < max_interfaces:
                a = _nlattrs(body, 16)
                kind = _nlattrs(a.get(IFLA_LINKINFO, b"")).get(IFLA_INFO_KIND)
                links.append((struct.unpack_from("=i", body, 4)[0],
                              a.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode("utf-8", "replace"),
                              kind.split(b"\0", 1)[0].decode("ascii", "replace") if kind else None))
        out: list[dict[str, Any]] = []
        seen: set[tuple[int, str, int, int, int]] = set()
        seq = 1
        for ifindex, name, kind in links:
            for parent, direction in TC_PARENTS.items():
                ctx.check()
                seq += 1
                req = struct.pack("=BBHiIII", socket.AF_UNSPEC, 0, 0, ifindex, 0, parent, 0)
                for mtype, body in _rtnl_dump(nl, RTM_GETTFILTER, req, seq, 10000):
                    if mtype != RTM_NEWTFILTER or len(body) < 20:
                        continue
                    a = _nlattrs(body, 20)
                    if a.get(TCA_KIND, b"").split(b"\0", 1)[0] != b"bpf":
                        continue
                    opts = _nlattrs(a.get(TCA_OPTIONS, b""))
                    prog_id = _u32(opts.get(TCA_BPF_ID))
                    if not prog_id:
                        continue  # the chain's head, or a classic-BPF (ops) filter without a program
                    handle, _parent, info = struct.unpack_from("=III", body, 8)
                    # the old ingress qdisc answers for clsact's ingress parent too: one record per filter
                    if (ifindex, direction, handle, info, prog_id) in seen:
                        continue
                    seen.add((ifindex, direction, handle, info, prog_id))
                    flags = _u32(opts.get(TCA_BPF_FLAGS)) or 0
                    out.append({"ifindex": ifindex, "interface": name, "interface_kind": kind,
                                "direction": direction, "parent": f"{parent >> 16:x}:{parent & 0xFFFF:x}",
                                "priority": info >> 16, "handle": handle, "prog_id": prog_id,
                                "filter_name": opts.get(TCA_BPF_NAME, b"").split(b"\0", 1)[0].decode(
                                    "utf-8", "replace") or None,
                                "tag": opts[TCA_BPF_TAG].hex() if TCA_BPF_TAG in opts else None,
                                "direct_action": bool(flags & TCA_BPF_FLAG_ACT_DIRECT)})
    return out


# --- packet sockets and their classic BPF filters (sock_diag) --------------------------------------------

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
PACKET_SHOW_INFO, PACKET_SHOW_FILTER = 0x1, 0x20
PACKET_DIAG_INFO, PACKET_DIAG_UID, PACKET_DIAG_FILTER = 0, 5, 7
MAX_FILTER_INSNS = 4096  # BPF_MAXINSNS for classic filters
ETHER_PROTOCOLS = {0x0003: "all", 0x0800: "ip", 0x86DD: "ipv6", 0x0806: "arp", 0x8100: "vlan", 0x888E: "eapol"}
PACKET_TYPES = {1: "stream", 2: "dgram", 3: "raw"}


def packet_sockets(max_messages: int = 100000) -> list[dict[str, Any]]:
    """Every AF_PACKET socket of this network namespace, from the kernel's sock_diag: the protocol and
    interface it listens on, its owner, and the classic BPF filter attached to it (SO_ATTACH_FILTER),
    which is how BPFDoor waits for its magic packet. The filter is shown only with CAP_NET_ADMIN."""
    req = struct.pack("=BBHII2I", socket.AF_PACKET, 0, 0, 0, PACKET_SHOW_INFO | PACKET_SHOW_FILTER,
                      0xFFFFFFFF, 0xFFFFFFFF)
    header = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    out: list[dict[str, Any]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(5.0)  # the kernel answers at once; a filter on netlink must not hold us
        nl.sendall(header + req)
        for _ in range(max_messages):
            data = nl.recv(1 << 16)
            if not data:
                return out
            for kind, body in _netlink_messages(data):
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body, 0)[0] if len(body) >= 4 else errno.EIO
                    if code:
                        raise OSError(code, os.strerror(code))
                    return out
                if kind == SOCK_DIAG_BY_FAMILY and len(body) >= 16:
                    out.append(_packet_record(body))
    return out


def _netlink_messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            return
        yield kind, data[offset + 16:offset + length]
        offset += (length + 3) & ~3


def _packet_record(body: bytes) -> dict[str, Any]:
    _family, kind, protocol, inode = struct.unpack_from("=BBHI", body, 0)
    attrs: dict[int, bytes] = {}
    offset = 16
    while offset + 4 <= len(body):
        length, attr = struct.unpack_from("=HH", body, offset)
        if length < 4:
            break
        attrs[attr & 0x3FFF] = body[offset + 4:offset + length]
        offset += (length + 3) & ~3
    info = attrs.get(PACKET_DIAG_INFO, b"")
    ifindex = struct.unpack_from("=I", info, 0)[0] if len(info) >= 4 else None
    uid = struct.unpack_from("=I", attrs[PACKET_DIAG_UID], 0)[0] if len(attrs.get(PACKET_DIAG_UID, b"")) >= 4 \
        else None
    raw = attrs.get(PACKET_DIAG_FILTER)
    insns = [struct.unpack_from("=HBBI", raw, i) for i in range(0, min(len(raw), MAX_FILTER_INSNS * 8) - 7, 8)] \
        if raw else []
    return {
        "inode": inode, "type": PACKET_TYPES.get(kind, str(kind)), "protocol": protocol,
        "protocol_name": ETHER_PROTOCOLS.get(protocol, f"0x{protocol:04x}"),
        "ifindex": ifindex or None, "uid": uid,
        # absent: no classic filter (an eBPF one, SO_ATTACH_BPF, is in bpf_programs); empty: not shown to us
        "filter_state": "none" if raw is None else "hidden" if not raw else "classic",
        "filter_insns": len(insns), "filter": raw[:MAX_FILTER_INSNS * 8].hex() if raw else None,
        "filter_constants": filter_constants(insns),
    }


def filter_constants(insns: list[tuple[int, int, int, int]]) -> list[str]:
    """The constants a classic filter compares packet bytes with (jeq/jgt/jge/jset #k), as hex: the magic
    values a backdoor's filter waits for are among them."""
    found = []
    for code, _jt, _jf, k in insns:
        if code & 0x07 == 0x05 and code & 0x08 == 0 and code & 0xF0 in (0x10, 0x20, 0x30, 0x40):
            value = f"0x{k:x}"
            if value not in found:
                found.append(value)
    return found


def _packet_records(packets: list[dict[str, Any]], held: dict) -> Iterator[Item]:
    names = interfaces()
    for packet in packets:
        who = held.get(("socket", packet["inode"]), [])
        yield Record("packet_sockets", {**packet, "interface": names.get(packet["ifindex"] or -1),
                                        "holders": who, "held_by": held_by(who)})


def pinned(ctx: Context, top: str, most: int) -> Iterator[Item]:
    """Names under the bpf filesystem (pinned programs, maps, links), never opened."""
    try:
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            return
    except OSError:
        return  # no bpf filesystem mounted: nothing pinned
    count = 0
    for folder, dirs, files, dir_fd in os.fwalk(top, follow_symlinks=False):
        ctx.check()
        for name in sorted(dirs + files):
            if count >= most:
                yield Problem(f"pinned-object limit of {most} reached", path=top, level="warning")
                return
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue
            count += 1
            path = os.path.join(folder, name)
            yield Record("bpf_pinned", {
                "path": path, "kind": "directory" if stat.S_ISDIR(st.st_mode) else "object",
                "uid": st.st_uid, "mode": oct(stat.S_IMODE(st.st_mode)), "mtime_utc": utc(st.st_mtime),
            })
