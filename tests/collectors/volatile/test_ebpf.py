"""The eBPF collector against real programs: a child process loads a socket filter (BPFDoor's way in), a
cgroup_skb program (the kind systemd loads) and an array map with bpf(BPF_PROG_LOAD / BPF_MAP_CREATE),
keeps them open, and optionally pins the filter in a bpf filesystem of its own; the collector must list
them from the kernel with the child as holder, and the rules in specs/rules/ebpf.yaml must call the
filter high and leave the cgroup program (and systemd's own, where this host has any) alone."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import need

from agent.analysis import rules as engine
from collectors.base import Context, Problem, Record
from collectors.volatile import ebpf

CHILD = textwrap.dedent(r"""
    import ctypes, json, os, platform, struct, sys
    NR = {"x86_64": 321, "aarch64": 280}[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def bpf(cmd, attr):
        fd = libc.syscall(ctypes.c_long(NR), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        return fd

    def prog(kind, ret, name):
        # r0 = ret; exit  (BPF_ALU64|BPF_MOV|BPF_K, then BPF_JMP|BPF_EXIT)
        insns = ctypes.create_string_buffer(struct.pack("<BBhi", 0xB7, 0, 0, ret) + struct.pack("<BBhi", 0x95, 0, 0, 0))
        lic = ctypes.create_string_buffer(b"GPL")
        attr = ctypes.create_string_buffer(128)
        struct.pack_into("<IIQQIIQII16s", attr, 0, kind, 2, ctypes.addressof(insns), ctypes.addressof(lic),
                         0, 0, 0, 0, 0, name)
        return bpf(5, attr)  # BPF_PROG_LOAD

    out = {"pid": os.getpid()}
    try:
        out["filter_fd"] = prog(1, 0, b"tri_bpfdoor")     # BPF_PROG_TYPE_SOCKET_FILTER
        out["cgroup_fd"] = prog(8, 1, b"tri_cgskb")       # BPF_PROG_TYPE_CGROUP_SKB
        attr = ctypes.create_string_buffer(128)
        struct.pack_into("<IIIIIII16s", attr, 0, 2, 4, 8, 4, 0, 0, 0, b"tri_map")  # BPF_MAP_TYPE_ARRAY
        out["map_fd"] = bpf(0, attr)                      # BPF_MAP_CREATE
        for arg in sys.argv[1:]:
            if arg.startswith("pin="):
                path = ctypes.create_string_buffer(arg[4:].encode())
                attr = ctypes.create_string_buffer(128)
                struct.pack_into("<QII", attr, 0, ctypes.addressof(path), out["filter_fd"], 0)
                bpf(6, attr)                              # BPF_OBJ_PIN
            elif arg == "xdp":
                # in a network namespace of our own, so that no interface of the host is touched
                if libc.unshare(0x40000000) != 0:         # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET): " + os.strerror(ctypes.get_errno()))
                out["xdp_fd"] = prog(6, 2, b"tri_xdp")     # BPF_PROG_TYPE_XDP returning XDP_PASS
                attr = ctypes.create_string_buffer(128)
                struct.pack_into("<IIII", attr, 0, out["xdp_fd"], 1, 37, 0)  # lo (ifindex 1), BPF_XDP
                out["link_fd"] = bpf(28, attr)            # BPF_LINK_CREATE
    except OSError as exc:
        out["error"] = f"{exc.strerror} (errno {exc.errno})"
    print(json.dumps(out), flush=True)
    sys.stdin.read()  # hold the descriptors until the test closes our stdin
""")


def _collect(**options) -> tuple[dict[str, list[dict]], list[Problem]]:
    streams: dict[str, list[dict]] = {}
    problems = []
    for item in ebpf.collect(Context(root="/", live=True, options=options)):
        if isinstance(item, Record):
            streams.setdefault(item.stream, []).append(item.data)
        elif isinstance(item, Problem):
            problems.append(item)
    return streams, problems


class _Loader:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.proc.stdout.readline())
        need("error" not in self.info, f"this host will not load eBPF programs: {self.info.get('error')} "
             "(root with CAP_SYS_ADMIN or CAP_BPF is needed)")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def loader():
    child = _Loader()
    try:
        yield child
    finally:
        child.close()


def _findings(records: list[dict], stream: str = "bpf_programs") -> list[dict]:
    rules = [r for r in engine.load_rules() if r.id.startswith("TRI-EBPF-")]
    assert {r.id for r in rules} == {"TRI-EBPF-001", "TRI-EBPF-002", "TRI-EBPF-003", "TRI-EBPF-004", "TRI-EBPF-005",
                                        "TRI-EBPF-006"}

    def rows(source: str):
        if source != stream:
            return []
        return [("bundle", f"artifacts/{stream}.jsonl", n + 1, r) for n, r in enumerate(records)]

    return list(engine.evaluate(rules, rows, time.time()))


def test_a_loaded_socket_filter_is_listed_and_called_high(loader):
    streams, problems = _collect()
    assert not [p for p in problems if p.level == "error"], problems
    progs = {p["name"]: p for p in streams["bpf_programs"]}
    pid = loader.info["pid"]

    door = progs["tri_bpfdoor"]
    assert door["type"] == "socket_filter" and door["type_id"] == 1
    assert door["created_by_uid"] == os.getuid() and door["gpl_compatible"] is True
    assert len(door["tag"]) == 16 and door["xlated_prog_len"] == 16  # two 8-byte instructions
    assert [h["pid"] for h in door["holders"]] == [pid]
    assert door["holders"][0]["exe"] == os.path.realpath(sys.executable)
    assert door["held_by"] == f"{os.path.realpath(sys.executable)}[{pid}]"
    assert door["held_by_systemd"] is False
    # the tag as the kernel shows it in the holder's fdinfo
    fdinfo = Path(f"/proc/{pid}/fdinfo/{loader.info['filter_fd']}").read_text()
    assert f"prog_tag:\t{door['tag']}" in fdinfo
    # load time: ns since boot, turned into UTC with /proc/stat's btime (whole seconds, hence the slack)
    loaded = dt.datetime.fromisoformat(door["load_time_utc"].replace("Z", "+00:00")).timestamp()
    assert abs(loaded - time.time()) < 120

    summary = streams["bpf_summary"]
    assert len(summary) == 1 and summary[0]["programs"] == len(streams["bpf_programs"]) >= 2
    assert summary[0]["maps"] == len(streams["bpf_maps"]) >= 1
    assert summary[0]["unprivileged_bpf_disabled"] == int(Path("/proc/sys/kernel/unprivileged_bpf_disabled")
                                                          .read_text())

    maps = {m["name"]: m for m in streams["bpf_maps"]}
    assert maps["tri_map"]["type"] == "array" and maps["tri_map"]["max_entries"] == 4
    assert (maps["tri_map"]["key_size"], maps["tri_map"]["value_size"]) == (4, 8)
    assert [h["pid"] for h in maps["tri_map"]["holders"]] == [pid]

    findings = _findings(streams["bpf_programs"])
    high = [f for f in findings if f["severity"] == "high"]
    assert [f["rule"] for f in high if f["name"] == "tri_bpfdoor"] == ["TRI-EBPF-001"]
    hit = next(f for f in high if f["name"] == "tri_bpfdoor")
    assert f"[{pid}]" in hit["summary"] and "socket_filter" in hit["summary"]
    assert hit["evidence"][0]["member"] == "artifacts/bpf_programs.jsonl"


def test_cgroup_programs_are_not_high(loader):
    """The planted cgroup_skb program, and systemd's own cgroup programs where this host runs systemd
    with IPAddressDeny= or DeviceAllow= units, raise nothing high."""
    streams, _ = _collect()
    progs = streams["bpf_programs"]
    ours = [p for p in progs if p["name"] == "tri_cgskb"]
    assert len(ours) == 1 and ours[0]["type"] == "cgroup_skb"
    cgroup_ids = {p["id"] for p in progs if p["type"].startswith("cgroup_")}
    systemd = [p for p in progs if p["held_by_systemd"]]
    high = [f for f in _findings(progs) if f["severity"] == "high"]
    assert not [f for f in high if f["id"] in cgroup_ids]
    assert not [f for f in high if f["id"] in {p["id"] for p in systemd}]


def test_rules_on_program_records():
    """The rules' edges, on records shaped as the collector writes them (a non-root kprobe cannot be
    loaded here: unprivileged BPF is off on every distribution's default)."""
    def prog(**kw) -> dict:
        return {"id": kw.pop("id", 1), "type": "socket_filter", "name": "p", "tag": "00", "created_by_uid": 0,
                "load_time_utc": "2026-01-01T00:00:00Z", "holders": [], "held_by": "", "held_by_systemd": False,
                **kw}

    records = [
        prog(id=1, type="xdp", name="nobody_holds_me"),                               # high: loader gone
        prog(id=2, type="sched_cls", name="tc_ingress", held_by="/tmp/.x/kworker[77]"),  # high
        prog(id=3, type="socket_filter", name="sd_filter", held_by_systemd=True,
             held_by="/usr/lib/systemd/systemd[1]"),                                  # systemd's: nothing
        prog(id=4, type="xdp", name="cil_xdp_entry", held_by="/usr/bin/cilium-agent[900]"),  # a CNI: nothing
        prog(id=5, type="kprobe", name="hide_pid", created_by_uid=1000),              # medium
        prog(id=6, type="kprobe", name="falco_probe", created_by_uid=0),              # root's tracing: nothing
        prog(id=7, type="cgroup_device", name="sd_devices", created_by_uid=0),        # nothing
        prog(id=8, type="tracepoint", name="tp_user", created_by_uid=1001),           # medium
    ]
    got = {(f["id"], f["rule"], f["severity"]) for f in _findings(records)}
    assert got == {(1, "TRI-EBPF-001", "high"), (2, "TRI-EBPF-001", "high"),
                   (5, "TRI-EBPF-002", "medium"), (8, "TRI-EBPF-002", "medium")}


def test_pinned_names_in_a_bpf_filesystem(tmp_path):
    bpffs = tmp_path / "bpffs"
    bpffs.mkdir()
    proc = subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mount is not permitted here: {proc.stderr.strip()}")
    try:
        (bpffs / "tri").mkdir()
        child = _Loader("pin=" + str(bpffs / "tri" / "door"))
        try:
            streams, problems = _collect(pinned_root=str(bpffs))
        finally:
            child.close()
    finally:
        subprocess.run(["umount", str(bpffs)], check=True)
    pinned = {p["path"]: p for p in streams["bpf_pinned"]}
    assert pinned[str(bpffs / "tri")]["kind"] == "directory"
    assert pinned[str(bpffs / "tri" / "door")]["kind"] == "object"
    # pinned, the program outlives its holder's descriptor; here the child still holds it too
    assert any(p["name"] == "tri_bpfdoor" for p in streams["bpf_programs"])


def test_not_under_root(tmp_path):
    items = list(ebpf.collect(Context(root=str(tmp_path), live=False, options={})))
    assert len(items) == 1 and isinstance(items[0], Problem) and items[0].level == "info"
    assert "live host" in items[0].message


def test_without_privilege_it_says_so():
    """As an ordinary user the kernel refuses to list programs: one warning, no records, no exception."""
    repo = str(Path(__file__).resolve().parents[3])
    script = textwrap.dedent(f"""
        import json, os, sys
        os.setgid(65534)
        os.setuid(65534)
        sys.path.insert(0, {repo!r})
        from collectors.base import Context
        from collectors.volatile import ebpf
        items = list(ebpf.collect(Context(root="/", live=True, options={{"pinned_root": "/nonexistent"}})))
        print(json.dumps([(type(i).__name__, getattr(i, "level", None), getattr(i, "message", getattr(i, "stream", "")))
                          for i in items]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and "Permission denied" in proc.stderr:
        pytest.skip(f"the interpreter is not readable by nobody here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    problems = [i for i in items if i[0] == "Problem"]
    assert problems == [["Problem", "warning",
                         "listing eBPF objects: the kernel refuses (CAP_SYS_ADMIN or CAP_BPF is needed)"]], items
    # what needs no privilege is still there: packet sockets (sock_diag) and the summary
    assert {i[2] for i in items if i[0] == "Record"} <= {"packet_sockets", "bpf_summary"}
    assert items[-1] == ["Record", None, "bpf_summary"]


def test_an_xdp_link_names_its_interface():
    """An XDP program attached with a link (to the loopback of a network namespace of the child's own):
    the link names the program and the interface index, and the program is high."""
    child = _Loader("xdp")
    try:
        streams, problems = _collect()
    finally:
        child.close()
    assert not [p for p in problems if p.level == "error"], problems
    xdp = next(p for p in streams["bpf_programs"] if p["name"] == "tri_xdp")
    assert xdp["type"] == "xdp"
    link = next(k for k in streams["bpf_links"] if k["prog_id"] == xdp["id"])
    assert link["type"] == "xdp" and link["ifindex"] == 1
    assert [h["pid"] for h in link["holders"]] == [child.info["pid"]]
    assert [f["rule"] for f in _findings([xdp])] == ["TRI-EBPF-001"]


# --- classic filters on packet sockets (BPFDoor's SO_ATTACH_FILTER) ------------------------------------

ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
SO_ATTACH_FILTER = 26


def _classic(insns: list[tuple[int, int, int, int]]) -> tuple[bytes, bytes]:
    """(struct sock_fprog for setsockopt, the instructions as the kernel stores them)."""
    import ctypes

    raw = b"".join(struct.pack("=HBBI", *i) for i in insns)
    _classic.keep = ctypes.create_string_buffer(raw)  # alive until setsockopt copied it
    return struct.pack("HL", len(insns), ctypes.addressof(_classic.keep)), raw


# ldh [12]; jeq #0x7255 (BPFDoor's magic, as in its published filters); ret #0xffff; ret #0
BPFDOOR_LIKE = [(0x28, 0, 0, 12), (0x15, 0, 1, 0x7255), (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]
# ldh [12]; jeq #0x800 (IPv4); ret; ret: the shape of an ordinary capture filter
PLAIN = [(0x28, 0, 0, 12), (0x15, 0, 1, 0x0800), (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]


def _packet_socket(protocol: int) -> socket.socket:
    try:
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(protocol))
    except PermissionError as exc:
        need(False, f"AF_PACKET sockets need CAP_NET_RAW: {exc}")
        raise


def test_packet_socket_filters_from_sock_diag():
    door, plain, bare = _packet_socket(ETH_P_IP), _packet_socket(ETH_P_IP), _packet_socket(ETH_P_ARP)
    try:
        fprog, door_raw = _classic(BPFDOOR_LIKE)
        door.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        fprog, _ = _classic(PLAIN)
        plain.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        streams, problems = _collect(pinned_root="/nonexistent")
        inodes = {name: os.fstat(s.fileno()).st_ino for name, s in (("door", door), ("plain", plain), ("bare", bare))}
    finally:
        for s in (door, plain, bare):
            s.close()
    assert not [p for p in problems if p.level == "error"], problems
    by_inode = {p["inode"]: p for p in streams["packet_sockets"]}
    me = f"{os.path.realpath(sys.executable)}[{os.getpid()}]"

    found = by_inode[inodes["door"]]
    assert (found["type"], found["protocol"], found["protocol_name"]) == ("raw", ETH_P_IP, "ip")
    assert found["filter_state"] == "classic" and found["filter_insns"] == 4
    assert bytes.fromhex(found["filter"]) == door_raw  # the kernel's copy of what was attached
    assert found["filter_constants"] == ["0x7255"]
    assert found["held_by"] == me and found["uid"] == os.getuid()
    assert by_inode[inodes["plain"]]["filter_constants"] == ["0x800"]
    bare_found = by_inode[inodes["bare"]]
    assert bare_found["filter_state"] == "none" and bare_found["protocol_name"] == "arp"
    assert streams["bpf_summary"][0]["packet_sockets"] == len(streams["packet_sockets"])

    got = {(f["inode"], f["rule"], f["severity"])
           for f in _findings([by_inode[i] for i in inodes.values()], "packet_sockets")}
    assert got == {(inodes["door"], "TRI-EBPF-003", "high"), (inodes["door"], "TRI-EBPF-004", "medium"),
                   (inodes["plain"], "TRI-EBPF-004", "medium")}


def test_packet_socket_rules_spare_the_usual_holders():
    def sock(**kw) -> dict:
        return {"inode": kw.pop("inode"), "protocol_name": "ip", "filter_state": "classic", "filter_insns": 4,
                "filter_constants": ["0x800"], "held_by": "", **kw}

    records = [
        sock(inode=1, held_by="/usr/sbin/dhclient[612]"),                         # DHCP: nothing
        sock(inode=2, held_by="/usr/lib/systemd/systemd-networkd[400]"),          # nothing
        sock(inode=3, held_by="/usr/sbin/dhclient (deleted)[612]"),               # its file gone: medium
        sock(inode=4, held_by="/dev/shm/kdmtmpflush[1999]"),                      # medium
        sock(inode=5, held_by="/usr/bin/tcpdump[7] /tmp/x[8]"),                   # shared with a stranger: medium
        sock(inode=6, held_by="/usr/sbin/dhclient[5]", filter_constants=["0x5293"]),  # magic: high, whoever
        sock(inode=7, filter_state="none", filter_insns=0, filter_constants=[]),  # no filter: nothing
        sock(inode=8, filter_state="hidden", filter_insns=0, filter_constants=[]),  # not shown to us: nothing
    ]
    got = {(f["inode"], f["rule"]) for f in _findings(records, "packet_sockets")}
    assert got == {(3, "TRI-EBPF-004"), (4, "TRI-EBPF-004"), (5, "TRI-EBPF-004"), (6, "TRI-EBPF-003")}


# --- XDP attached through rtnetlink (no bpf link, nothing holding the program) ---------------------------

XDP_NETLINK = textwrap.dedent(r"""
    import ctypes, json, os, platform, socket, struct, sys
    sys.path.insert(0, sys.argv[1])
    NR = {"x86_64": 321, "aarch64": 280}[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # r0 = XDP_PASS (2); exit
    insns = ctypes.create_string_buffer(struct.pack("<BBhi", 0xB7, 0, 0, 2) + struct.pack("<BBhi", 0x95, 0, 0, 0))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQIIQII16s", attr, 0, 6, 2, ctypes.addressof(insns), ctypes.addressof(lic),
                     0, 0, 0, 0, 0, b"tri_xdp_nl")
    fd = libc.syscall(ctypes.c_long(NR), ctypes.c_int(5), attr, ctypes.c_uint(128))  # BPF_PROG_LOAD, type XDP
    if fd < 0:
        print(json.dumps({"error": os.strerror(ctypes.get_errno())}))
        sys.exit(0)

    def nla(kind, value):
        return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)

    # RTM_SETLINK tri0: IFLA_XDP { IFLA_XDP_FD = fd, IFLA_XDP_FLAGS = XDP_FLAGS_SKB_MODE }, as `ip link set
    # dev tri0 xdpgeneric obj ...` does
    xdp = nla(1, struct.pack("=i", fd)) + nla(3, struct.pack("=I", 2))
    body = struct.pack("=BBHiII", 0, 0, 0, socket.if_nametoindex("tri0"), 0, 0) + nla(43 | 0x8000, xdp)
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    nl.send(struct.pack("=IHHII", 16 + len(body), 19, 0x1 | 0x4, 1, 0) + body)
    err = -struct.unpack_from("=i", nl.recv(4096), 16)[0]
    nl.close()
    os.close(fd)  # the interface alone keeps it now, as after `ip link set ... xdp obj` exits
    if err:
        print(json.dumps({"error": "RTM_SETLINK IFLA_XDP: " + os.strerror(err)}))
        sys.exit(0)
    # a sched_cls program (r0 = TC_ACT_OK; exit) on tri0's clsact ingress, as `tc filter add dev tri0 ingress
    # bpf da obj ... sec tri_tc` does: RTM_NEWTFILTER kind "bpf", TCA_BPF_FD / NAME / FLAGS (direct action)
    struct.pack_into("<IIQQIIQII16s", attr, 0, 3, 2, ctypes.addressof(insns), ctypes.addressof(lic),
                     0, 0, 0, 0, 0, b"tri_tc")
    ctypes.memmove(insns, struct.pack("<BBhi", 0xB7, 0, 0, 0), 8)
    fd = libc.syscall(ctypes.c_long(NR), ctypes.c_int(5), attr, ctypes.c_uint(128))
    if fd < 0:
        print(json.dumps({"error": "sched_cls: " + os.strerror(ctypes.get_errno())}))
        sys.exit(0)
    opts = nla(6, struct.pack("=I", fd)) + nla(7, b"tri_tc_sec\0") + nla(8, struct.pack("=I", 1))
    body = struct.pack("=BBHiIII", 0, 0, 0, socket.if_nametoindex("tri0"), 0, 0xFFFFFFF2,
                       (1 << 16) | socket.htons(0x0003)) + nla(1, b"bpf\0") + nla(2 | 0x8000, opts)
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    nl.send(struct.pack("=IHHII", 16 + len(body), 44, 0x1 | 0x4 | 0x400 | 0x200, 2, 0) + body)
    err = -struct.unpack_from("=i", nl.recv(4096), 16)[0]
    nl.close()
    os.close(fd)
    if err:
        print(json.dumps({"error": "RTM_NEWTFILTER bpf: " + os.strerror(err)}))
        sys.exit(0)
    from collectors.base import Context, Problem, Record
    from collectors.volatile import ebpf
    out = {"records": [], "problems": []}
    for item in ebpf.collect(Context(root="/", live=True, options={})):
        if isinstance(item, Record):
            out["records"].append([item.stream, item.data])
        elif isinstance(item, Problem):
            out["problems"].append([item.level, item.message])
    print(json.dumps(out, default=str))
""")


def test_an_xdp_program_attached_over_netlink_is_tied_to_its_interface():
    """A 2-instruction XDP program (XDP_PASS) loaded with bpf(2) and attached to a veth of a network namespace
    the test creates, over rtnetlink in generic mode, then its descriptor closed: no bpf link and no holder
    name it; the interface's IFLA_XDP does, and the record says interface, mode and program; TRI-EBPF-005
    calls it high. The veth's peer (no program) and lo give no record. A sched_cls program attached to the
    veth's clsact ingress with RTM_NEWTFILTER (as tc does) is tied to it the same way (TRI-EBPF-006)."""
    need(os.geteuid() == 0, "loading XDP programs and creating network namespaces need root")
    need(subprocess.run(["which", "unshare", "ip", "tc"], capture_output=True).returncode == 0,
         "unshare (util-linux), ip and tc (iproute2) are needed")
    script = ("set -e; ip link set lo up; ip link add tri0 type veth peer name tri1; ip link set tri0 up; "
              f"tc qdisc add dev tri0 clsact; exec {sys.executable} -c \"$1\" \"$2\"")
    done = subprocess.run(["unshare", "-n", "bash", "-c", script, "xdp", XDP_NETLINK,
                           str(Path(__file__).resolve().parents[3])], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    need("error" not in got, f"this kernel will not load or attach an XDP program: {got.get('error')}")
    assert not [p for p in got["problems"] if p[0] == "error"], got["problems"]
    streams: dict[str, list[dict]] = {}
    for stream, data in got["records"]:
        streams.setdefault(stream, []).append(data)
    prog = next(p for p in streams["bpf_programs"] if p["name"] == "tri_xdp_nl")
    assert prog["type"] == "xdp" and prog["holders"] == []
    attached = streams["xdp_attachments"]
    assert len(attached) == 1, attached
    rec = attached[0]
    assert rec["interface"] == "tri0" and rec["interface_kind"] == "veth" and rec["mode"] == "generic"
    assert rec["prog_id"] == prog["id"] and rec["prog_name"] == "tri_xdp_nl" and rec["prog_tag"] == prog["tag"]
    assert rec["via_link"] is False and rec["held_by"] == ""
    assert streams["bpf_summary"][0]["xdp_attachments"] == 1
    found = _findings(attached, "xdp_attachments")
    assert [f["rule"] for f in found] == ["TRI-EBPF-005"]
    assert "tri0" in found[0]["summary"] and "generic" in found[0]["summary"]
    # the tc classifier: tied to tri0's ingress the same way
    tc_prog = next(p for p in streams["bpf_programs"] if p["name"] == "tri_tc")
    (tc,) = streams["tc_attachments"]
    assert (tc["interface"], tc["direction"], tc["priority"], tc["prog_id"], tc["prog_name"], tc["prog_type"],
            tc["direct_action"], tc["held_by"]) == ("tri0", "ingress", 1, tc_prog["id"], "tri_tc", "sched_cls",
                                                    True, "")
    assert tc["prog_tag"] == tc_prog["tag"] and streams["bpf_summary"][0]["tc_attachments"] == 1
    assert [f["rule"] for f in _findings([tc], "tc_attachments")] == ["TRI-EBPF-006"]
    assert _findings([{**tc, "interface": "lxc0a1b"}], "tc_attachments") == []


def test_xdp_rule_spares_cni_devices():
    base = {"ifindex": 7, "interface_kind": "veth", "mode": "native", "prog_id": 42, "prog_name": "cil_from_netdev",
            "prog_tag": "ab", "via_link": True, "held_by": "", "flags": 0, "link_ids": [3]}
    assert _findings([{**base, "interface": "lxc12ab"}, {**base, "interface": "cilium_host"},
                      {**base, "interface": "eth0", "held_by": "/usr/bin/cilium-agent[812]"}],
                     "xdp_attachments") == []
    assert [f["rule"] for f in _findings([{**base, "interface": "eth0"}], "xdp_attachments")] == ["TRI-EBPF-005"]
