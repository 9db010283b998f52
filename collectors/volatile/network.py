"""Sockets (every network namespace, owning PIDs), interfaces, routes, neighbours, resolver config.

Parsed from /proc/PID/net/* ourselves rather than psutil: we also get raw and packet sockets
(sniffers and port-knocking backdoors use them) and sockets of other network namespaces."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from functools import partial

import psutil

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import read_capped
from collectors.util import read_text, text

TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
    "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
    "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}
UDP_STATES = {"07": "UNCONNECTED", "01": "ESTABLISHED"}
UNIX_TYPES = {"0001": "stream", "0002": "dgram", "0005": "seqpacket"}
INET_TABLES = (("tcp", 4), ("tcp6", 6), ("udp", 4), ("udp6", 6), ("raw", 4), ("raw6", 6), ("udplite", 4),
               ("udplite6", 6))


def _pids() -> list[int]:
    return sorted(int(d) for d in os.listdir("/proc") if d.isdigit())


def socket_owners(ctx: Context) -> tuple[dict[int, list[dict]], dict[int, int]]:
    """Map socket inode -> [{pid, fd, name}] and net-namespace inode -> one PID inside it."""
    owners: dict[int, list[dict]] = {}
    namespaces: dict[int, int] = {}
    for pid in _pids():
        ctx.check()
        try:
            ns = os.stat(f"/proc/{pid}/ns/net").st_ino
            namespaces.setdefault(ns, pid)
        except OSError:
            pass
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        name = None
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                if name is None:
                    try:
                        name = read_text(f"/proc/{pid}/comm", 64).strip()
                    except OSError:
                        name = ""
                owners.setdefault(int(target[8:-1]), []).append({"pid": pid, "fd": int(fd), "name": name})
    return owners, namespaces


def _addr(hexaddr: str, version: int) -> tuple[str, int]:
    host, _, port = hexaddr.partition(":")
    raw = bytes.fromhex(host)
    if version == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        words = struct.unpack("<4I", raw)
        ip = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
    return ip, int(port, 16)


def _inet(table: str, version: int, data: str, ns: int, owners: dict) -> Iterator[Record]:
    proto = table.rstrip("6")
    for line in data.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        (lip, lport), (rip, rport) = _addr(f[1], version), _addr(f[2], version)
        state = TCP_STATES.get(f[3], f[3]) if proto == "tcp" else UDP_STATES.get(f[3], f[3])
        inode = int(f[9])
        listening = state == "LISTEN" or (proto != "tcp" and state == "UNCONNECTED" and rip in ("0.0.0.0", "::"))
        yield Record("connections", {
            "proto": proto, "family": f"ipv{version}", "local_ip": lip, "local_port": lport,
            "remote_ip": rip, "remote_port": rport, "state": state, "listening": listening,
            "uid": int(f[7]), "inode": inode, "netns": ns, "owners": owners.get(inode, []),
            "remote_is_public": _is_public(rip) if rport else None,
        })


def _is_public(ip: str) -> bool | None:
    try:
        return ipaddress.ip_address(ip).is_global
    except ValueError:
        return None


def _unix(data: str, ns: int, owners: dict) -> Iterator[Record]:
    for line in data.splitlines()[1:]:
        f = line.split(None, 7)
        if len(f) < 7:
            continue
        inode = int(f[6])
        path = f[7] if len(f) > 7 else ""
        yield Record("unix_sockets", {
            "type": UNIX_TYPES.get(f[4], f[4]), "state": {"01": "UNCONNECTED", "02": "CONNECTING",
                                                          "03": "CONNECTED", "04": "DISCONNECTING"}.get(f[5], f[5]),
            "listening": bool(int(f[3], 16) & 0x10000), "path": path, "abstract": path.startswith("@"),
            "inode": inode, "netns": ns, "owners": owners.get(inode, []),
        })


def _packet(data: str, ns: int, owners: dict) -> Iterator[Record]:
    for line in data.splitlines()[1:]:
        f = line.split()
        if len(f) < 9:
            continue
        inode = int(f[8])
        yield Record("connections", {"proto": "packet", "family": "packet", "socket_type": int(f[2]),
                                     "ethertype": f"0x{int(f[3], 16):04x}", "ifindex": int(f[4]),
                                     "running": f[5] == "1", "uid": int(f[7]), "inode": inode, "netns": ns,
                                     "owners": owners.get(inode, [])})


def connections(ctx: Context) -> Iterator[Item]:
    owners, namespaces = socket_owners(ctx)
    tables = [(table, partial(_inet, table, version)) for table, version in INET_TABLES]
    tables += [("unix", _unix), ("packet", _packet)]
    for ns, pid in sorted(namespaces.items()):
        for table, parse in tables:
            path = f"/proc/{pid}/net/{table}"
            try:
                data = read_text(path, 64 << 20)
            except FileNotFoundError:
                continue  # e.g. no IPv6 in this kernel
            except OSError as exc:
                yield Problem.from_os_error(exc, f"cannot read {table} table", path)
                continue
            yield from parse(data, ns, owners)


def config(ctx: Context) -> Iterator[Item]:
    stats = psutil.net_if_stats()
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        st = stats.get(name)
        rec = {"name": name, "addresses": [], "mac": None,
               "up": st.isup if st else None, "mtu": st.mtu if st else None,
               "flags": st.flags if st and hasattr(st, "flags") else None}
        for a in addrs:
            if a.family == psutil.AF_LINK:
                rec["mac"] = a.address
            else:
                rec["addresses"].append({"family": "ipv6" if a.family == socket.AF_INET6 else "ipv4",
                                         "address": a.address, "netmask": a.netmask, "broadcast": a.broadcast})
        try:
            rec["promiscuous"] = bool(int(read_text(f"/sys/class/net/{name}/flags").strip(), 16) & 0x100)
        except (OSError, ValueError):
            pass
        yield Record("interfaces", rec)
    yield from _routes()
    yield from _neighbours()


def _routes() -> Iterator[Item]:
    try:
        data = read_text("/proc/net/route")
        for line in data.splitlines()[1:]:
            f = line.split()
            if len(f) < 8:
                continue
            yield Record("routes", {"family": "ipv4", "iface": f[0],
                                    "destination": _addr(f[1] + ":0", 4)[0], "gateway": _addr(f[2] + ":0", 4)[0],
                                    "netmask": _addr(f[7] + ":0", 4)[0], "flags": int(f[3], 16), "metric": int(f[6])})
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read IPv4 routes", "/proc/net/route")
    try:
        data = read_text("/proc/net/ipv6_route")
        for line in data.splitlines():
            f = line.split()
            if len(f) < 10:
                continue
            dest = str(ipaddress.IPv6Address(bytes.fromhex(f[0])))
            yield Record("routes", {"family": "ipv6", "iface": f[9], "destination": f"{dest}/{int(f[1], 16)}",
                                    "gateway": str(ipaddress.IPv6Address(bytes.fromhex(f[4]))),
                                    "metric": int(f[5], 16), "flags": int(f[8], 16)})
    except FileNotFoundError:
        pass
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read IPv6 routes", "/proc/net/ipv6_route")


def _neighbours() -> Iterator[Item]:
    try:
        data = read_text("/proc/net/arp")
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read ARP table", "/proc/net/arp")
        return
    for line in data.splitlines()[1:]:
        f = line.split()
        if len(f) >= 6:
            yield Record("arp", {"ip": f[0], "hw_type": f[1], "flags": f[2], "mac": f[3], "iface": f[5],
                                 "complete": bool(int(f[2], 16) & 0x2)})
    yield Problem("IPv6 neighbours are only available through netlink; not collected", level="info")


def dns(ctx: Context) -> Iterator[Item]:
    sources = (("/etc/resolv.conf", "resolv.conf"), ("/etc/hosts", "hosts"), ("/etc/nsswitch.conf", "nsswitch"))
    for path, kind in sources:
        try:
            data = text(read_capped(ctx, path, 1 << 20)[0])
        except OSError as exc:
            yield Problem.from_os_error(exc, "cannot read", path)
            continue
        for number, line in enumerate(data.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            if kind == "hosts":
                yield Record("dns", {"source": path, "line": number, "kind": "host", "address": words[0],
                                     "names": words[1:]})
            elif kind == "nsswitch":
                if words[0] in ("hosts:", "passwd:", "shadow:", "group:"):
                    yield Record("dns", {"source": path, "line": number, "kind": "nsswitch",
                                         "database": words[0].rstrip(":"), "sources": words[1:]})
            else:
                yield Record("dns", {"source": path, "line": number, "kind": words[0], "values": words[1:]})
