"""The packet filter of the running kernel: nftables over netlink and legacy x_tables over getsockopt, in process.

A firewall rule is how an implant gets in without a listening port of its own: BPFDoor's operators add
``iptables -t nat -I PREROUTING -p tcp -s <their address> --dport 443 -j REDIRECT --to-ports <shell>``
so that their traffic to a real service lands on the backdoor, and ``iptables -F`` with ACCEPT policies is
how a host's protection is switched off. The collector never runs ``nft`` or ``iptables``: it asks the
kernel itself.

* nftables: a NETLINK_NETFILTER socket, NFNL_SUBSYS_NFTABLES dumps (NFT_MSG_GETTABLE, GETCHAIN, GETRULE,
  GETSET, GETSETELEM for the elements of small sets), every attribute parsed here (linux/netfilter/
  nf_tables.h). A rule is a list of expressions run by a small register machine (load a field into a
  register, compare it, then a verdict); the collector replays that machine symbolically to write the rule
  as nft would (``ip saddr 203.0.113.5 tcp dport 443 counter redirect to :42391``) and to pull out the
  fields rules need (action, ports, addresses). Unknown expressions are named, never guessed.
* legacy iptables: ``getsockopt(IPT_SO_GET_INFO)`` then ``IPT_SO_GET_ENTRIES`` for each table the kernel
  lists in /proc/net/ip_tables_names (IPv6: ip6_tables_names). Only tables that exist are asked for: asking
  for another makes the kernel load its module (``iptable_<name>``), which would change the host. On hosts
  where ``iptables`` is iptables-nft the rules live in nftables (tables ``filter``, ``nat`` ... with chains
  ``INPUT`` ...) and the legacy tables are absent; the summary says which back end holds them.
* legacy arptables: ``ARPT_SO_GET_INFO`` / ``ARPT_SO_GET_ENTRIES`` for the tables /proc/net/arp_tables_names
  lists (an arptables ``mangle`` rewriting a MAC is ARP spoofing from this host). Legacy ebtables:
  ``EBT_SO_GET_INFO`` / ``EBT_SO_GET_ENTRIES`` (struct ebt_replace with buffers for the entries and counters)
  for filter, nat and broute when their module is loaded or the kernel has no modules; there is no list of a
  namespace's ebtables tables, and asking for one whose module is absent would load it. A kernel built
  without legacy ebtables answers ENOPROTOOPT: nothing to record.
* nft flowtables (``NFT_MSG_GETFLOWTABLE``): the fast path that ``flow add @ft`` hands connections to, past
  the rest of the ruleset.
* the saved configuration (/etc/nftables.conf, /etc/iptables/rules.v4 ...) is read through the evidence
  reader and its rule lines counted, so that a live firewall flushed to nothing can be told from one that
  was never set.

The kernel's tables are the live host's (this network namespace's): under ``--root`` nothing is read.

Streams: ``nft_chains``, ``nft_sets``, ``nft_rules``, ``nft_flowtables``, ``iptables_chains`` (every x_tables
family's chains: ipv4, ipv6, arp, bridge), ``iptables_rules``, ``arptables_rules``, ``ebtables_rules``,
``firewall_summary``.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import re
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

from collectors.base import Context, Item, Problem, Record
from collectors.files import fsread
from collectors.util import read_text

# --- netlink / nfnetlink (linux/netlink.h, linux/netfilter/nfnetlink.h) -----------------------------------
NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLM_F_DUMP_INTR = 0x10
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED, NLA_TYPE_MASK = 0x8000, 0x3FFF
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM = 1, 4, 7, 10, 13
NFT_MSG_GETFLOWTABLE = 23
NF_FLOWTABLE_HW_OFFLOAD, NF_FLOWTABLE_COUNTER = 0x1, 0x2

FAMILIES = {0: "unspec", 1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
HOOKS_IP = ["prerouting", "input", "forward", "output", "postrouting", "ingress"]
HOOKS = {"arp": ["input", "output", "forward"], "netdev": ["ingress", "egress"]}
VERDICTS = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", 5: "stop",
            -1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return"}
PROTOCOLS = {1: "icmp", 2: "igmp", 4: "ipip", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre", 50: "esp", 51: "ah",
             58: "icmpv6", 89: "ospf", 112: "vrrp", 132: "sctp", 136: "udplite"}
# enum nft_meta_keys, in order
META_KEYS = ["len", "protocol", "priority", "mark", "iif", "oif", "iifname", "oifname", "iiftype", "oiftype",
             "skuid", "skgid", "nftrace", "rtclassid", "secmark", "nfproto", "l4proto", "ibrname", "obrname",
             "pkttype", "cpu", "iifgroup", "oifgroup", "cgroup", "random", "secpath", "iifkind", "oifkind",
             "ibrpvid", "ibrvproto", "time", "day", "hour", "sdif", "sdifname", "broute"]
# enum nft_ct_keys, in order
CT_KEYS = ["state", "direction", "status", "mark", "secmark", "expiration", "helper", "l3proto", "saddr", "daddr",
           "protocol", "proto-src", "proto-dst", "label", "packets", "bytes", "avgpkt", "zone", "event",
           "ip saddr", "ip daddr", "ip6 saddr", "ip6 daddr", "id"]
CT_STATES = [(1, "invalid"), (2, "established"), (4, "related"), (8, "new"), (64, "untracked")]
LEGACY_PROTOCOLS = {**PROTOCOLS, 58: "ipv6-icmp"}  # as iptables-save writes them (/etc/protocols' names)
CMP_OPS = ["==", "!=", "<", "<=", ">", ">="]
PAYLOAD_BASES = ["ll", "nh", "th", "ih"]
# (base, offset, length) -> (name, how its value reads)
PAYLOAD_FIELDS = {
    (0, 0, 6): ("ether daddr", "mac"), (0, 6, 6): ("ether saddr", "mac"), (0, 12, 2): ("ether type", "hex"),
    (1, 9, 1): ("ip protocol", "proto"), (1, 12, 4): ("ip saddr", "ip4"), (1, 16, 4): ("ip daddr", "ip4"),
    (1, 6, 1): ("ip6 nexthdr", "proto"), (1, 8, 16): ("ip6 saddr", "ip6"), (1, 24, 16): ("ip6 daddr", "ip6"),
    (1, 1, 1): ("ip dscp", "hex"), (1, 8, 1): ("ip ttl", "int"),
    (2, 0, 2): ("th sport", "port"), (2, 2, 2): ("th dport", "port"), (2, 13, 1): ("tcp flags", "hex"),
    (2, 0, 1): ("icmp type", "int"),
}
META_KINDS = {"l4proto": "proto", "protocol": "hex", "iifname": "str", "oifname": "str", "nfproto": "nfproto",
              "ibrname": "str", "obrname": "str", "iifkind": "str", "oifkind": "str", "sdifname": "str",
              "mark": "hexle", "skuid": "le", "skgid": "le", "iif": "ifindex", "oif": "ifindex", "cpu": "le",
              "pkttype": "int", "iiftype": "le16", "oiftype": "le16"}
NAT_TYPES = ["snat", "dnat"]

# --- legacy iptables (linux/netfilter_ipv4/ip_tables.h, ipv6/ip6_tables.h, netfilter/x_tables.h) ---------
IPT_SO_GET_INFO, IPT_SO_GET_ENTRIES = 64, 65
NF_IP_HOOKS = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
IPT_INFO = struct.Struct("=32sI5I5III")  # struct ipt_getinfo (ip6t_getinfo is the same)
GET_ENTRIES_HEAD = 40  # struct ipt_get_entries: name[32], size, then the 8-aligned entry table
XT_MATCH_HEAD = 32  # struct xt_entry_match / xt_entry_target: u16 size, name[29], u8 revision
IPT_INV_VIA_IN, IPT_INV_VIA_OUT, IPT_INV_SRCIP, IPT_INV_DSTIP, IPT_INV_PROTO = 0x01, 0x02, 0x08, 0x10, 0x40
NAT_RANGE_PROTO_SPECIFIED = 0x2
# family -> (sockopt level, names file, entry size, ip part size, address length)
LEGACY = {
    "ipv4": (socket.IPPROTO_IP, "/proc/net/ip_tables_names", 112, 84, 4),
    "ipv6": (socket.IPPROTO_IPV6, "/proc/net/ip6_tables_names", 168, 136, 16),
}
# --- legacy arptables (linux/netfilter_arp/arp_tables.h) and ebtables (linux/netfilter_bridge/ebtables.h) --
ARPT_SO_GET_INFO, ARPT_SO_GET_ENTRIES = 96, 97
ARP_HOOKS = ["INPUT", "OUTPUT", "FORWARD"]
ARPT_INFO = struct.Struct("=32sI3I3III")  # struct arpt_getinfo
ARPT_ENTRY = 192  # struct arpt_entry: struct arpt_arp (164), target_offset, next_offset, comefrom, counters
ARPT_NAMES = "/proc/net/arp_tables_names"
# arpt_arp invflags
ARPT_INV = {"in": 0x1, "out": 0x2, "src": 0x4, "dst": 0x8, "src_mac": 0x10, "dst_mac": 0x20, "opcode": 0x40,
            "hw_type": 0x80, "proto_type": 0x100, "h_length": 0x200}
ARPT_MANGLE_SDEV, ARPT_MANGLE_TDEV, ARPT_MANGLE_SIP, ARPT_MANGLE_TIP = 0x1, 0x2, 0x4, 0x8
EBT_SO_GET_INFO, EBT_SO_GET_ENTRIES = 128, 129
EBT_TABLES = ["filter", "nat", "broute"]
EBT_HOOKS = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING", "BROUTING"]
EBT_REPLACE = struct.Struct("=32sIII4x6QI4xQQ")  # struct ebt_replace (64-bit): name, valid_hooks, nentries,
#                                                  entries_size, hook_entry[6], num_counters, counters, entries
EBT_ENTRIES_SIZE = 48  # struct ebt_entries: distinguisher (0), name[32], counter_offset, policy, nentries
EBT_ENTRY_SIZE = 112  # struct ebt_entry up to its 8-aligned elems
EBT_EXT_HEAD = 40  # struct ebt_entry_match / _watcher / _target: name[31], revision, size, 8-aligned data
EBT_VERDICTS = {-1: "ACCEPT", -2: "DROP", -3: "CONTINUE", -4: "RETURN"}
EBT_MAC_TARGETS = {"dnat": "--to-dst", "snat": "--to-src", "arpreply": "--arpreply-mac"}
# ebt_entry invflags (EBT_IPROTO, EBT_IIN, EBT_IOUT, EBT_ISOURCE, EBT_IDEST, EBT_ILOGICALIN, EBT_ILOGICALOUT)
EBT_INV = {"proto": 0x01, "in": 0x02, "out": 0x04, "src_mac": 0x08, "dst_mac": 0x10, "logical_in": 0x20,
           "logical_out": 0x40}
EBT_NOPROTO, EBT_802_3, EBT_ENTRY_OR_ENTRIES = 0x02, 0x04, 0x01
ETHER_TYPES = {0x0800: "IPv4", 0x0806: "ARP", 0x86DD: "IPv6", 0x8100: "802_1Q", 0x8035: "RARP", 0x88CC: "LLDP",
               0x888E: "802_1X"}

SAVED_CONFIGS = ["/etc/nftables.conf", "/etc/sysconfig/nftables.conf", "/etc/iptables/rules.v4",
                 "/etc/iptables/rules.v6", "/etc/sysconfig/iptables", "/etc/sysconfig/ip6tables",
                 "/etc/ufw/user.rules", "/etc/firewalld/zones"]


# =========================================================================================================
# netlink

def attrs(data: bytes | memoryview, offset: int = 0, end: int | None = None) -> dict[int, list[bytes]]:
    """The nlattr TLVs of ``data`` by type (a type may repeat: NFTA_LIST_ELEM); bounded by the buffer."""
    out: dict[int, list[bytes]] = {}
    end = len(data) if end is None else end
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > end:
            break
        out.setdefault(kind & NLA_TYPE_MASK, []).append(bytes(data[offset + 4:offset + length]))
        offset += (length + 3) & ~3
    return out


def _one(a: dict[int, list[bytes]], kind: int) -> bytes | None:
    return a[kind][0] if kind in a else None


def _str(a: dict[int, list[bytes]], kind: int) -> str | None:
    v = _one(a, kind)
    return v.split(b"\0", 1)[0].decode("utf-8", "replace") if v is not None else None


def _be(a: dict[int, list[bytes]], kind: int, signed: bool = False) -> int | None:
    v = _one(a, kind)
    if v is None or len(v) not in (1, 2, 4, 8):
        return None
    return int.from_bytes(v, "big", signed=signed)


class Netlink:
    """One NETLINK_NETFILTER socket, dumps only (read-only questions), every receive with a deadline."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.settimeout(timeout)
        self.sock.bind((0, 0))
        self.seq = int(time.time()) & 0x7FFFFFFF
        self.interrupted = False

    def close(self) -> None:
        self.sock.close()

    def dump(self, ctx: Context, msg: int, payload: bytes = b"", family: int = 0,
             max_bytes: int = 256 << 20) -> Iterator[tuple[int, dict[int, list[bytes]]]]:
        """(family, attributes) of each answer to an NFT_MSG_GET* dump; OSError on a refusal."""
        self.seq += 1
        body = struct.pack("=BBH", family, 0, 0) + payload
        head = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_NFTABLES << 8) | msg,
                           NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0)
        self.sock.send(head + body)
        seen = 0
        while True:
            ctx.check()
            data = self.sock.recv(1 << 20)
            seen += len(data)
            if seen > max_bytes:
                raise OSError(errno.EMSGSIZE, f"netlink answer larger than {max_bytes} bytes")
            offset = 0
            while offset + 16 <= len(data):
                length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
                if length < 16 or offset + length > len(data):
                    return
                if seq == self.seq:
                    if flags & NLM_F_DUMP_INTR:
                        self.interrupted = True
                    if kind == NLMSG_DONE:
                        return
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, offset + 16)[0]
                        if code:
                            raise OSError(code, os.strerror(code))
                        return
                    if length >= 20:
                        yield data[offset + 16], attrs(data, offset + 20, offset + length)
                offset += (length + 3) & ~3


# =========================================================================================================
# rendering nftables expressions

def _ip(value: bytes) -> str:
    if len(value) == 4:
        return str(ipaddress.IPv4Address(value))
    if len(value) == 16:
        return str(ipaddress.IPv6Address(value))
    return "0x" + value.hex()


def _prefix(mask: bytes) -> int | None:
    bits = int.from_bytes(mask, "big")
    width = len(mask) * 8
    ones = bin(bits).count("1")
    return ones if bits == ((1 << width) - 1) ^ ((1 << (width - ones)) - 1) else None


def fmt(kind: str, value: bytes) -> str:
    """A register value as nft writes it, by what the register was loaded from."""
    try:
        if kind in ("ip4", "ip6") or kind.startswith(("ip4:", "ip6:")):
            return _ip(value)
        if kind == "port" and len(value) >= 2:
            return str(int.from_bytes(value[:2], "big"))
        if kind == "proto" and len(value) >= 1:
            return PROTOCOLS.get(value[0], str(value[0]))
        if kind == "nfproto" and len(value) >= 1:
            return {2: "ipv4", 10: "ipv6"}.get(value[0], str(value[0]))
        if kind == "str":
            return '"' + value.split(b"\0", 1)[0].decode("utf-8", "replace") + '"'
        if kind == "int":
            return str(int.from_bytes(value, "big"))
        if kind == "rtntype" and len(value) == 4:
            rtn = int.from_bytes(value, "little")
            return {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole",
                    7: "unreachable", 8: "prohibit"}.get(rtn, str(rtn))
        if kind == "ifindex" and len(value) == 4:  # nft resolved `iif "lo"` to an index when the rule was added
            index = int.from_bytes(value, "little")
            try:
                return f'"{socket.if_indextoname(index)}"'
            except OSError:
                return str(index)
        if kind in ("le", "le16"):
            return str(int.from_bytes(value, "little"))
        if kind == "hexle":
            return hex(int.from_bytes(value, "little"))
        if kind == "mac":
            return ":".join(f"{b:02x}" for b in value)
        if kind == "ctstate" and len(value) == 4:
            bits = int.from_bytes(value, "little")
            return ",".join(n for b, n in CT_STATES if bits & b) or "0"
    except ValueError:
        pass
    return "0x" + value.hex()


def _data(raw: bytes | None) -> tuple[bytes | None, tuple[int, str | None] | None]:
    """struct nft_data: (value, None) or (None, (verdict code, chain))."""
    if raw is None:
        return None, None
    a = attrs(raw)
    if 1 in a:
        return a[1][0], None
    if 2 in a:
        v = attrs(a[2][0])
        code = _be(v, 1, signed=True)
        return None, (code if code is not None else 0, _str(v, 2))
    return None, None


class Rule:
    """The symbolic replay of one rule's expressions: text, and the fields the rules engine reads."""

    def __init__(self, family: str, sets: dict[tuple[str, str, str], dict[str, Any]], table: str) -> None:
        self.family, self.sets, self.table = family, sets, table
        self.regs: dict[int, tuple[str, str, bytes | None]] = {}  # reg -> (description, value kind, immediate)
        self.parts: list[str] = []
        self.names: list[str] = []
        self.unknown: list[str] = []
        self.l3: str | None = None  # ipv4 / ipv6 once a `meta nfproto` compare said which (inet tables)
        self.f: dict[str, Any] = {"packets": None, "bytes": None, "action": None, "verdict": None,
                                  "jump_to": None, "to_addr": None, "to_port": None, "src": None, "dst": None,
                                  "sport": None, "dport": None, "proto": None, "iif": None, "oif": None,
                                  "xt": [], "flowtable": None}

    def _reg(self, reg: int | None) -> tuple[str, str, bytes | None]:
        return self.regs.get(reg if reg is not None else -1, (f"reg {reg}", "hex", None))

    def _note(self, desc: str, op: str, value: str) -> None:
        """Fields for rules: what the rule's match says about addresses, ports, protocol, interfaces."""
        if op not in ("==", "in"):
            value = f"{op} {value}"
        base = desc.split("/")[0]
        for names, key in ((("ip saddr", "ip6 saddr"), "src"), (("ip daddr", "ip6 daddr"), "dst"),
                           (("th sport", "tcp sport", "udp sport"), "sport"),
                           (("th dport", "tcp dport", "udp dport"), "dport"),
                           (("meta l4proto", "ip protocol", "ip6 nexthdr"), "proto"),
                           (("meta iifname",), "iif"), (("meta oifname",), "oif")):
            if base in names:
                self.f[key] = value.strip('"')

    def add(self, name: str, a: dict[int, list[bytes]]) -> None:
        self.names.append(name)
        handler = getattr(self, "_" + name, None)
        if handler is None:
            self.unknown.append(name)
            self.parts.append(f"<{name}>")
            return
        try:
            handler(a)
        except (ValueError, IndexError, KeyError, struct.error, TypeError, OverflowError):
            self.parts.append(f"<{name}?>")  # malformed attributes: named, and the rest of the rule still read

    def _payload(self, a: dict[int, list[bytes]]) -> None:
        base, off, ln, dreg = _be(a, 2), _be(a, 3), _be(a, 4), _be(a, 1)
        if dreg is None:  # a payload write (sreg): mangling the packet
            where = f"@{PAYLOAD_BASES[(base or 0) % 4]},{(off or 0) * 8},{(ln or 0) * 8}"
            self.parts.append(f"{where} set {self._reg(_be(a, 5))[0]}")
            return
        name, kind = PAYLOAD_FIELDS.get((base, off, ln), (None, "hex"))
        l3 = self.l3 or {"ip": "ipv4", "ip6": "ipv6"}.get(self.family)
        if base == 1 and l3 == "ipv4" and off in (12, 16) and ln is not None and ln < 4:
            name, kind = ("ip saddr" if off == 12 else "ip daddr"), f"ip4:{ln}"  # nft loads 10.0.0.0/8 as 1 byte
        elif base == 1 and l3 == "ipv6" and off in (8, 24) and ln is not None and ln < 16:
            name, kind = ("ip6 saddr" if off == 8 else "ip6 daddr"), f"ip6:{ln}"
        elif base == 1 and l3 == "ipv6" and (off, ln) in ((9, 1), (12, 4), (16, 4)):
            name, kind = None, "hex"
        if name is None:
            bname = PAYLOAD_BASES[base] if base is not None and base < len(PAYLOAD_BASES) else str(base)
            name = f"@{bname},{(off or 0) * 8},{(ln or 0) * 8}"
        self.regs[dreg] = (name, kind, None)

    def _meta(self, a: dict[int, list[bytes]]) -> None:
        key = _be(a, 2)
        name = META_KEYS[key] if key is not None and key < len(META_KEYS) else f"key{key}"
        if 1 in a:
            self.regs[_be(a, 1) or 0] = (f"meta {name}", META_KINDS.get(name, "hex"), None)
        else:
            self.parts.append(f"meta {name} set {self._set_value(_be(a, 3), META_KINDS.get(name, 'hex'))}")

    def _ct(self, a: dict[int, list[bytes]]) -> None:
        key = _be(a, 2)
        name = CT_KEYS[key] if key is not None and key < len(CT_KEYS) else f"key{key}"
        kind = {"state": "ctstate", "status": "le", "mark": "hexle", "protocol": "proto",
                "proto-src": "port", "proto-dst": "port", "saddr": "ip", "daddr": "ip",
                "ip saddr": "ip4", "ip daddr": "ip4", "ip6 saddr": "ip6", "ip6 daddr": "ip6"}.get(name, "hex")
        if 1 in a:
            self.regs[_be(a, 1) or 0] = (f"ct {name}", kind, None)
        else:
            self.parts.append(f"ct {name} set {self._set_value(_be(a, 4), kind)}")

    def _set_value(self, reg: int | None, kind: str) -> str:
        """What a `... set` statement writes: the immediate loaded into its source register, or that register."""
        desc, _kind, value = self._reg(reg)
        return fmt(kind, value) if value is not None else desc

    def _fib(self, a: dict[int, list[bytes]]) -> None:
        result, flags = _be(a, 2) or 0, _be(a, 3) or 0
        keys = " . ".join(n for b, n in ((1, "saddr"), (2, "daddr"), (4, "mark"), (8, "iif"), (16, "oif")) if flags & b)
        what = {1: "oif", 2: "oifname", 3: "type"}.get(result, f"result{result}")
        self.regs[_be(a, 1) or 0] = (f"fib {keys} {what}", "rtntype" if result == 3 else "ifindex", None)

    def _objref(self, a: dict[int, list[bytes]]) -> None:
        kind = {1: "counter", 2: "quota", 3: "ct helper", 4: "limit", 5: "connlimit", 6: "tunnel", 7: "ct timeout",
                8: "secmark", 9: "ct expectation", 10: "synproxy"}.get(_be(a, 1) or 0, "object")
        self.parts.append(f'{kind} name "{_str(a, 2) or "?"}"')

    def _quota(self, a: dict[int, list[bytes]]) -> None:
        over = "over " if (_be(a, 2) or 0) & 1 else ""
        self.parts.append(f"quota {over}{_be(a, 1)} bytes")

    def _bitwise(self, a: dict[int, list[bytes]]) -> None:
        desc, kind, _ = self._reg(_be(a, 1))
        mask, _v = _data(_one(a, 4))
        xor, _v = _data(_one(a, 5))
        op = _be(a, 6) or 0
        if op == 0 and mask is not None and (xor is None or not any(xor)):
            if kind.startswith(("ip4", "ip6", "ip")) and _prefix(mask) is not None:
                desc = f"{desc}/{_prefix(mask)}"
            elif kind == "ctstate":
                desc = f"{desc} {fmt('ctstate', mask)}"
                kind = "ctmask"
            else:
                desc = f"{desc} & 0x{mask.hex()}"
        else:
            desc = f"{desc} (bitwise op {op})"
        self.regs[_be(a, 2) or 0] = (desc, kind, None)

    def _cmp(self, a: dict[int, list[bytes]]) -> None:
        desc, kind, _ = self._reg(_be(a, 1))
        op = _be(a, 2) or 0
        value, _v = _data(_one(a, 3))
        opname = CMP_OPS[op] if op < len(CMP_OPS) else f"op{op}"
        if kind == "ctmask":  # `ct state established,related` is a mask and a != 0
            self.parts.append(desc if opname == "!=" else f"{desc} {opname} 0")
            return
        if kind == "ip" and value is not None:
            kind = "ip4" if len(value) == 4 else "ip6"
        if kind == "nfproto" and opname == "==" and value:
            self.l3 = {2: "ipv4", 10: "ipv6"}.get(value[0])
        if kind.startswith(("ip4:", "ip6:")) and value is not None:  # a prefix compared on its leading bytes
            width = 4 if kind.startswith("ip4") else 16
            text = f"{_ip(value[:width].ljust(width, bytes(1)))}/{len(value[:width]) * 8}"
            self.parts.append(f"{desc} {'' if opname == '==' else opname + ' '}{text}")
            self._note(desc, opname, text)
            return
        text = fmt(kind, value or b"")
        if "/" in desc:  # a prefix: `ip saddr 10.0.0.0/8`
            name, plen = desc.rsplit("/", 1)
            self.parts.append(f"{name} {'' if opname == '==' else opname + ' '}{text}/{plen}")
            self._note(name, opname, f"{text}/{plen}")
            return
        self.parts.append(f"{desc} {'' if opname == '==' else opname + ' '}{text}")
        if kind in ("ip4", "ip6"):
            text = f"{text}/{32 if kind == 'ip4' else 128}"
        self._note(desc, opname, text)

    def _range(self, a: dict[int, list[bytes]]) -> None:
        desc, kind, _ = self._reg(_be(a, 1))
        lo, _v = _data(_one(a, 3))
        hi, _v = _data(_one(a, 4))
        neg = "!= " if _be(a, 2) == 1 else ""
        text = f"{fmt(kind, lo or b'')}-{fmt(kind, hi or b'')}"
        self.parts.append(f"{desc} {neg}{text}")
        self._note(desc, "==" if not neg else "!=", text)

    def _lookup(self, a: dict[int, list[bytes]]) -> None:
        desc, kind, _ = self._reg(_be(a, 2))
        name = _str(a, 1) or "?"
        neg = "!= " if (_be(a, 5) or 0) & 1 else ""
        info = self.sets.get((self.family, self.table, name))
        if info is not None and info.get("anonymous") and info.get("raw") is not None:
            text = "{ " + ", ".join(fmt(kind, e) for e in info["raw"]) + " }"
        else:
            text = f"@{name}"
        if 3 in a:  # a map: the looked-up value goes to a register
            self.regs[_be(a, 3) or 0] = (f"{desc} map {text}", "hex", None)
            return
        self.parts.append(f"{desc} {neg}{text}")
        self._note(desc, "!=" if neg else "in", text)

    def _immediate(self, a: dict[int, list[bytes]]) -> None:
        dreg = _be(a, 1) or 0
        value, verdict = _data(_one(a, 2))
        if dreg == 0 and verdict is not None:
            code, chain = verdict
            word = VERDICTS.get(code, f"verdict {code}")
            self.parts.append(f"{word} {chain}" if chain else word)
            self.f["verdict"] = word
            if word in ("jump", "goto"):
                self.f["jump_to"] = chain
            if word in ("accept", "drop", "jump", "goto", "return", "queue"):
                self.f["action"] = word
            return
        self.regs[dreg] = ("<immediate>", "hex", value)

    def _flow_offload(self, a: dict[int, list[bytes]]) -> None:
        # `flow add @ft`: the connection is handed to a flowtable's fast path, past the rest of the ruleset
        self.parts.append(f"flow add @{_str(a, 1)}")
        self.f["flowtable"] = _str(a, 1)

    def _counter(self, a: dict[int, list[bytes]]) -> None:
        self.f["bytes"], self.f["packets"] = _be(a, 1) or 0, _be(a, 2) or 0
        self.parts.append(f"counter packets {self.f['packets']} bytes {self.f['bytes']}")

    def _imm(self, reg: int | None) -> bytes | None:
        return self.regs.get(reg, ("", "", None))[2] if reg is not None else None

    def _port(self, reg: int | None) -> int | None:
        value = self._imm(reg)
        return int.from_bytes(value[:2], "big") if value and len(value) >= 2 else None

    def _nat(self, a: dict[int, list[bytes]]) -> None:
        kind = _be(a, 1) or 0
        word = NAT_TYPES[kind] if kind < 2 else f"nat{kind}"
        addr = self._imm(_be(a, 3))
        port = self._port(_be(a, 5))
        target = (_ip(addr) if addr else "") + (f":{port}" if port is not None else "")
        self.parts.append(f"{word} to {target}" if target else word)
        self.f.update(action=word, to_addr=_ip(addr) if addr else None, to_port=port)

    def _redir(self, a: dict[int, list[bytes]]) -> None:
        port = self._port(_be(a, 1))
        self.parts.append(f"redirect to :{port}" if port is not None else "redirect")
        self.f.update(action="redirect", to_port=port)

    def _masq(self, a: dict[int, list[bytes]]) -> None:
        self.parts.append("masquerade")
        self.f["action"] = "masquerade"

    def _reject(self, a: dict[int, list[bytes]]) -> None:
        self.parts.append("reject")
        self.f.update(action="reject", verdict="reject")

    def _log(self, a: dict[int, list[bytes]]) -> None:
        prefix = _str(a, 2)
        self.parts.append(f'log prefix "{prefix}"' if prefix else "log")

    def _notrack(self, a: dict[int, list[bytes]]) -> None:
        self.parts.append("notrack")

    def _limit(self, a: dict[int, list[bytes]]) -> None:
        self.parts.append(f"limit rate {_be(a, 1)}/{_be(a, 2)}s")

    def _queue(self, a: dict[int, list[bytes]]) -> None:
        self.parts.append(f"queue num {_be(a, 1)}")
        self.f.update(action="queue", verdict="queue")

    def _xt(self, a: dict[int, list[bytes]], what: str) -> None:
        name = _str(a, 1) or "?"
        info = _one(a, 3) or b""
        text = xt_text(name, info, _be(a, 2) or 0, 16 if self.family == "ip6" else 4)
        self.f["xt"].append(name)
        self.parts.append(f"xt {what} {name}" + (f" {text}" if text else ""))
        if what == "target":
            self._xt_target(name, info, _be(a, 2) or 0)

    def _xt_target(self, name: str, info: bytes, rev: int) -> None:
        port, addr = xt_nat(name, info, rev, 16 if self.family == "ip6" else 4)
        if name in ("REDIRECT", "DNAT", "SNAT", "MASQUERADE"):
            self.f.update(action=name.lower() if name != "REDIRECT" else "redirect", to_port=port, to_addr=addr)
        elif name in ("ACCEPT", "DROP", "REJECT"):
            self.f["action"] = name.lower()

    def _match(self, a: dict[int, list[bytes]]) -> None:
        self._xt(a, "match")

    def _target(self, a: dict[int, list[bytes]]) -> None:
        self._xt(a, "target")

    def record(self) -> dict[str, Any]:
        out = dict(self.f)
        out["text"] = " ".join(self.parts)
        out["expressions"] = self.names
        out["unknown_expressions"] = self.unknown
        return out


def xt_nat(name: str, info: bytes, rev: int, alen: int) -> tuple[int | None, str | None]:
    """(port, address) of a REDIRECT / DNAT / SNAT target's range, whichever of its layouts it is."""
    try:
        if alen == 4 and rev == 0 and name in ("REDIRECT", "DNAT", "SNAT", "MASQUERADE") and len(info) >= 20:
            # struct nf_nat_ipv4_multi_range_compat: rangesize, then flags, min_ip, max_ip, min/max port
            flags, min_ip, _max_ip, min_port = struct.unpack_from("=I4s4s2s", info, 4)
            port = int.from_bytes(min_port, "big") if flags & NAT_RANGE_PROTO_SPECIFIED else None
            addr = _ip(min_ip) if flags & 1 else None
            return port, addr
        if name in ("REDIRECT", "DNAT", "SNAT", "MASQUERADE") and len(info) >= 38:
            # struct nf_nat_range(2): flags, min_addr[16], max_addr[16], min_proto, max_proto (, base_proto)
            flags = struct.unpack_from("=I", info, 0)[0]
            addr_raw = info[4:4 + alen]
            port = int.from_bytes(info[36:38], "big") if flags & NAT_RANGE_PROTO_SPECIFIED else None
            return port, (_ip(addr_raw) if flags & 1 else None)
    except struct.error:
        pass
    return None, None


def xt_text(name: str, info: bytes, rev: int, alen: int) -> str:
    """A readable form of the few xtables matches and targets a responder reads most; "" for the rest."""
    try:
        if name in ("tcp", "udp") and len(info) >= 8:
            sp0, sp1, dp0, dp1 = struct.unpack_from("=4H", info, 0)
            inv = info[11] if name == "tcp" and len(info) >= 12 else (info[8] if len(info) >= 9 else 0)
            out = []
            if (sp0, sp1) != (0, 65535):
                out.append(("! " if inv & 1 else "") + (f"spt:{sp0}" if sp0 == sp1 else f"spts:{sp0}:{sp1}"))
            if (dp0, dp1) != (0, 65535):
                out.append(("! " if inv & 2 else "") + (f"dpt:{dp0}" if dp0 == dp1 else f"dpts:{dp0}:{dp1}"))
            return " ".join(out)
        if name == "comment":
            return '"' + info.split(b"\0", 1)[0].decode("utf-8", "replace") + '"'
        if name in ("REDIRECT", "DNAT", "SNAT", "MASQUERADE"):
            port, addr = xt_nat(name, info, rev, alen)
            where = (addr or "") + (f":{port}" if port is not None else "")
            if name == "REDIRECT":
                return f"--to-ports {port}" if port is not None else ""
            return f"--to-destination {where}" if name == "DNAT" and where else (f"--to-source {where}" if where
                                                                                 else "")
        if name == "LOG" and len(info) >= 32:  # struct xt_log_info: level, logflags, prefix[30]
            return 'prefix "' + info[2:32].split(b"\0", 1)[0].decode("utf-8", "replace") + '"'
    except (struct.error, IndexError):
        pass
    return ""


# =========================================================================================================
# nftables


def _hook_name(family: str, num: int | None) -> str | None:
    if num is None:
        return None
    names = HOOKS.get(family, HOOKS_IP)
    return names[num] if num < len(names) else str(num)


def _comment(udata: bytes | None) -> str | None:
    """NFTNL_UDATA_RULE_COMMENT (type 0) of a rule's user data: the comment nft stores for `comment "..."`."""
    off = 0
    while udata and off + 2 <= len(udata):
        kind, length = udata[off], udata[off + 1]
        if kind == 0:
            return udata[off + 2:off + 2 + length].split(b"\0", 1)[0].decode("utf-8", "replace")
        off += 2 + length
    return None


def nftables(ctx: Context, max_rules: int, max_set_elements: int, counts: dict[str, Any]) -> Iterator[Item]:
    try:
        nl = Netlink(timeout=float(ctx.opt("netlink_timeout_s", 5)))
    except OSError as exc:
        counts["nft_state"] = "unavailable"
        level = "info" if exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT) else "warning"
        yield Problem(f"nftables: no NETLINK_NETFILTER socket: {exc.strerror or exc}", level=level, errno=exc.errno)
        return
    try:
        yield from _nft_dump(ctx, nl, max_rules, max_set_elements, counts)
    except OSError as exc:
        counts["nft_state"] = "refused" if exc.errno in (errno.EPERM, errno.EACCES) else "error"
        level = "info" if exc.errno in (errno.EPROTONOSUPPORT, errno.ENOENT, errno.EOPNOTSUPP) else "warning"
        why = " (CAP_NET_ADMIN is needed)" if exc.errno in (errno.EPERM, errno.EACCES) else ""
        yield Problem(f"nftables: the kernel refused the dump: {exc.strerror or exc}{why}", level=level,
                      errno=exc.errno)
    finally:
        nl.close()
    if nl.interrupted:
        yield Problem("nftables: the ruleset changed while it was read (NLM_F_DUMP_INTR): a rule may be missing "
                      "or seen twice", level="warning")


def _nft_dump(ctx: Context, nl: Netlink, max_rules: int, max_elems: int, counts: dict[str, Any]) -> Iterator[Item]:
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    for fam, a in nl.dump(ctx, NFT_MSG_GETTABLE):
        family = FAMILIES.get(fam, str(fam))
        tables[(family, _str(a, 1) or "")] = {"flags": _be(a, 2), "handle": _be(a, 4)}
    counts["nft_state"] = "read"
    counts["nft_tables"] = sorted(f"{f} {t}" for f, t in tables)

    sets: dict[tuple[str, str, str], dict[str, Any]] = {}
    for fam, a in nl.dump(ctx, NFT_MSG_GETSET):
        family, table, name = FAMILIES.get(fam, str(fam)), _str(a, 1) or "", _str(a, 2) or ""
        flags = _be(a, 3) or 0
        if len(sets) >= max_rules:
            counts["truncated"] = True
            continue
        sets[(family, table, name)] = {"family": family, "table": table, "name": name, "flags": flags,
                                       "anonymous": bool(flags & 1), "key_len": _be(a, 5), "handle": _be(a, 16),
                                       "raw": None}
    # one dump per set: a ruleset of thousands of `{ 22, 80 }` (each an anonymous set) must not cost thousands
    # of round trips past the budget, so only the first max_set_dumps sets have their elements read
    for i, ((family, table, name), info) in enumerate(sets.items()):
        ctx.check()
        if i >= int(ctx.opt("max_set_dumps", 2000)):
            break
        info["raw"] = _set_elements(ctx, nl, family, table, name, max_elems)
    for info in sets.values():
        if info["anonymous"]:
            continue
        raw = info.pop("raw")
        yield Record("nft_sets", {**info, "elements": None if raw is None else [_ip(e) if len(e) in (4, 16)
                                                                                 else "0x" + e.hex() for e in raw]})

    flowtables = 0
    try:
        for fam, a in nl.dump(ctx, NFT_MSG_GETFLOWTABLE):
            flowtables += 1
            if flowtables <= max_rules:
                yield Record("nft_flowtables", flowtable_record(FAMILIES.get(fam, str(fam)), a))
    except OSError as exc:  # kernels before 4.16 have no flowtables to list
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOENT):
            raise
    counts["nft_flowtables"] = flowtables

    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    for fam, a in nl.dump(ctx, NFT_MSG_GETCHAIN):
        family, table, name = FAMILIES.get(fam, str(fam)), _str(a, 1) or "", _str(a, 3) or ""
        hook = attrs(a[4][0]) if 4 in a else {}
        policy = _be(a, 5)
        counters = attrs(a[8][0]) if 8 in a else {}
        chain = {"family": family, "table": table, "chain": name, "handle": _be(a, 2),
                 "type": _str(a, 7), "hook": _hook_name(family, _be(hook, 1)), "priority": _be(hook, 2, signed=True),
                 "device": _str(hook, 3), "policy": VERDICTS.get(policy, str(policy)) if policy is not None else None,
                 "base_chain": 4 in a, "packets": _be(counters, 2), "bytes": _be(counters, 1), "rules": 0}
        chains[(family, table, name)] = chain

    rules = 0
    truncated = False
    for fam, a in nl.dump(ctx, NFT_MSG_GETRULE):
        family, table, chain_name = FAMILIES.get(fam, str(fam)), _str(a, 1) or "", _str(a, 2) or ""
        if rules >= max_rules:
            truncated = True
            continue  # drain the dump; the socket must be read to its end
        rules += 1
        chain = chains.get((family, table, chain_name), {})
        if chain:
            chain["rules"] += 1
        rule = Rule(family, sets, table)
        if 4 in a:
            for elem in attrs(a[4][0]).get(1, []):
                e = attrs(elem)
                rule.add(_str(e, 1) or "?", attrs(_one(e, 2) or b""))
        yield Record("nft_rules", {
            "family": family, "table": table, "chain": chain_name, "hook": chain.get("hook"),
            "priority": chain.get("priority"), "policy": chain.get("policy"), "handle": _be(a, 3),
            "position": chain.get("rules"), "comment": _comment(_one(a, 7)), **rule.record()})
    for chain in chains.values():
        yield Record("nft_chains", chain)
    counts["nft_chains"] = len(chains)
    counts["nft_rules"] = rules
    counts["nft_sets"] = sum(1 for s in sets.values() if not s["anonymous"])
    counts["nft_base_chains"] = [c for c in chains.values() if c["base_chain"]]
    if truncated:
        yield Problem(f"nftables: more than {max_rules} rules; the rest were not recorded", level="warning")
        counts["truncated"] = True


def flowtable_record(family: str, a: dict[int, list[bytes]]) -> dict[str, Any]:
    """One NFT_MSG_NEWFLOWTABLE answer: a flowtable (a fast path: connections a rule hands to it with
    ``flow add @name`` bypass the rest of the ruleset), its ingress hook, priority and devices."""
    hook = attrs(a[3][0]) if 3 in a else {}
    devices = [d.split(b"\0", 1)[0].decode("utf-8", "replace") for d in attrs(hook[3][0]).get(1, [])] \
        if 3 in hook else []
    flags = _be(a, 7) or 0
    num = _be(hook, 1)
    return {"family": family, "table": _str(a, 1) or "", "name": _str(a, 2) or "", "handle": _be(a, 5),
            "hook": _hook_name("netdev", num) if num is not None else None, "priority": _be(hook, 2, signed=True),
            "devices": devices, "flags": flags, "hw_offload": bool(flags & NF_FLOWTABLE_HW_OFFLOAD),
            "counter": bool(flags & NF_FLOWTABLE_COUNTER), "use": _be(a, 4)}


def _set_elements(ctx: Context, nl: Netlink, family: str, table: str, name: str, most: int) -> list[bytes] | None:
    fam = next(k for k, v in FAMILIES.items() if v == family) if family in FAMILIES.values() else 0
    payload = _nla(1, table.encode() + b"\0") + _nla(2, name.encode() + b"\0")
    out: list[bytes] = []
    try:
        for _fam, a in nl.dump(ctx, NFT_MSG_GETSETELEM, payload, family=fam):
            for lst in a.get(3, []):
                for elem in attrs(lst).get(1, []):
                    key, _v = _data(_one(attrs(elem), 1))
                    if key is not None and len(out) < most:
                        out.append(key)
    except OSError:
        return None
    return out


def _nla(kind: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * ((4 - len(value) % 4) % 4)


# =========================================================================================================
# legacy iptables

class _Libc:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.getsockopt = libc.getsockopt
        self.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_uint32)]

    def get(self, fd: int, level: int, opt: int, buf: ctypes.Array) -> int:
        length = ctypes.c_uint32(len(buf))
        if self.getsockopt(fd, level, opt, buf, ctypes.byref(length)) < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return length.value


def legacy_tables(family: str) -> list[str] | None:
    """The tables this network namespace has (None: the x_tables module of the family is not loaded);
    OSError other than ENOENT (EACCES: the list is root's) goes to the caller."""
    try:
        return [n for n in read_text(LEGACY[family][1], 4096).split() if re.fullmatch(r"[a-z_]{1,31}", n)]
    except FileNotFoundError:
        return None


def iptables(ctx: Context, family: str, max_rules: int, counts: dict[str, Any]) -> Iterator[Item]:
    level, _names, _esize, _ipsize, _alen = LEGACY[family]
    try:
        names = legacy_tables(family)
    except OSError as exc:
        counts[f"legacy_{family}_tables"] = None
        yield Problem(f"iptables ({family}): the list of tables cannot be read: {exc.strerror} (root is needed)",
                      path=LEGACY[family][1], level="warning", errno=exc.errno)
        return
    counts[f"legacy_{family}_tables"] = names
    if not names:
        return
    try:
        sock = socket.socket(socket.AF_INET6 if family == "ipv6" else socket.AF_INET, socket.SOCK_RAW,
                             socket.IPPROTO_RAW)
    except OSError as exc:
        yield Problem(f"iptables ({family}): no raw socket to ask the kernel with: {exc.strerror} "
                      "(CAP_NET_RAW is needed)", level="warning", errno=exc.errno)
        return
    libc = _Libc()
    try:
        for name in names:
            ctx.check()
            try:
                yield from _legacy_table(ctx, libc, sock.fileno(), family, name, max_rules, counts)
            except OSError as exc:
                counts.setdefault("legacy_errors", []).append(f"{family} {name}: {exc.strerror}")
                lvl = "info" if exc.errno in (errno.ENOENT, errno.ENOPROTOOPT) else "warning"
                yield Problem(f"iptables ({family}) table {name}: {exc.strerror}", level=lvl, errno=exc.errno)
    finally:
        sock.close()


def _legacy_table(ctx: Context, libc: _Libc, fd: int, family: str, table: str, max_rules: int,
                  counts: dict[str, Any]) -> Iterator[Item]:
    level, _names, esize, ipsize, alen = LEGACY[family]
    for _attempt in range(3):  # EAGAIN: the table changed between the two questions
        info = ctypes.create_string_buffer(table.encode(), IPT_INFO.size)
        libc.get(fd, level, IPT_SO_GET_INFO, info)
        _n, valid, *rest = IPT_INFO.unpack(info.raw)
        hook_entry, underflow, _num, size = rest[0:5], rest[5:10], rest[10], rest[11]
        if size > int(ctx.opt("max_table_bytes", 64 << 20)):
            raise OSError(errno.EFBIG, f"table of {size} bytes, more than the collector reads")
        buf = ctypes.create_string_buffer(GET_ENTRIES_HEAD + size)
        struct.pack_into("=32sI", buf, 0, table.encode(), size)
        try:
            libc.get(fd, level, IPT_SO_GET_ENTRIES, buf)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                continue
            raise
        break
    else:
        raise OSError(errno.EAGAIN, "the table kept changing while it was read")
    blob = buf.raw[GET_ENTRIES_HEAD:GET_ENTRIES_HEAD + size]
    hooks = {hook_entry[h]: NF_IP_HOOKS[h] for h in range(5) if valid & (1 << h)}
    policies = {underflow[h]: NF_IP_HOOKS[h] for h in range(5) if valid & (1 << h)}
    chain: str | None = None
    chains: dict[str, dict[str, Any]] = {}
    offsets: dict[int, str] = {}
    entries: list[tuple[int, dict[str, Any]]] = []
    off = 0
    while off + esize <= len(blob):
        ctx.check()
        target_offset, next_offset = struct.unpack_from("=HH", blob, off + ipsize + 4)
        if next_offset < esize or off + next_offset > len(blob) or target_offset > next_offset:
            break
        pcnt, bcnt = struct.unpack_from("=QQ", blob, off + esize - 16)
        tsize = struct.unpack_from("=H", blob, off + target_offset)[0]
        tname = blob[off + target_offset + 2:off + target_offset + 31].split(b"\0", 1)[0].decode("ascii", "replace")
        tdata = blob[off + target_offset + XT_MATCH_HEAD:off + target_offset + max(tsize, XT_MATCH_HEAD)]
        if off in hooks:
            chain = hooks[off]
            chains[chain] = {"family": family, "table": table, "chain": chain, "builtin": True, "policy": None,
                             "packets": None, "bytes": None, "rules": 0}
        if tname == "ERROR":  # a user chain's head (its name), or the table's end
            label = tdata[:30].split(b"\0", 1)[0].decode("utf-8", "replace")
            if label != "ERROR":
                chain = label
                chains[chain] = {"family": family, "table": table, "chain": chain, "builtin": False,
                                 "policy": None, "packets": None, "bytes": None, "rules": 0}
                offsets[off + next_offset] = chain
            off += next_offset
            continue
        if off in policies:
            verdict = struct.unpack_from("=i", tdata, 0)[0] if len(tdata) >= 4 else 0
            chains[policies[off]].update(policy=_std_verdict(verdict, {})[0], packets=pcnt, bytes=bcnt)
        elif chain is not None:
            entries.append((off, {"chain": chain, "pcnt": pcnt, "bcnt": bcnt, "tname": tname, "tdata": tdata,
                                  "tsize": tsize, "target_offset": target_offset}))
        off += next_offset
    # every user chain ends with an unconditional RETURN that iptables adds itself: the chain's end, not a
    # rule (an explicit `-j RETURN` before it, as in Docker's DOCKER-USER, is one and stays)
    last: dict[str, int] = {}
    for i, (_o, e) in enumerate(entries):
        last[e["chain"]] = i
    tails = {i for name, i in last.items() if not chains[name]["builtin"]
             and entries[i][1]["tname"] == "" and entries[i][1]["tdata"][:4] == struct.pack("=i", -5)
             and _is_empty_match(blob, entries[i][0], esize, ipsize, entries[i][1]["target_offset"])}
    entries = [e for i, e in enumerate(entries) if i not in tails]
    rules = 0
    for entry_off, e in entries:
        if counts.get("legacy_rules", 0) + rules >= max_rules:
            counts["truncated"] = True
            yield Problem(f"iptables ({family}) table {table}: more than {max_rules} rules; the rest were not "
                          "recorded", level="warning")
            break
        rules += 1
        chains[e["chain"]]["rules"] += 1
        try:
            yield Record("iptables_rules", _legacy_rule(blob, entry_off, e, family, table, ipsize, esize, alen,
                                                        offsets, chains[e["chain"]]))
        except (struct.error, IndexError, ValueError) as exc:
            yield Problem(f"iptables ({family}) table {table}: entry at offset {entry_off} cannot be read: {exc}",
                          level="warning")
    counts["legacy_rules"] = counts.get("legacy_rules", 0) + rules
    for c in chains.values():
        yield Record("iptables_chains", c)
    counts.setdefault("legacy_chains", []).extend(chains.values())


def _is_empty_match(blob: bytes, off: int, esize: int, ipsize: int, target_offset: int) -> bool:
    return target_offset == esize and not any(blob[off:off + ipsize - 4])


def _std_verdict(v: int, offsets: dict[int, str]) -> tuple[str, str | None]:
    if v < 0:
        return {-1: "DROP", -2: "ACCEPT", -4: "QUEUE", -5: "RETURN"}.get(v, f"verdict{v}"), None
    return "jump", offsets.get(v)


def _cidr(addr: bytes, mask: bytes) -> str | None:
    if not any(mask):
        return None
    plen = _prefix(mask)
    return f"{_ip(addr)}/{plen}" if plen is not None else f"{_ip(addr)}/{_ip(mask)}"


def _iface(name: bytes, mask: bytes) -> str | None:
    text = name.split(b"\0", 1)[0].decode("utf-8", "replace")
    if not text:
        return None
    # a mask shorter than the name plus its NUL is iptables' `eth+` wildcard
    return text + "+" if sum(1 for b in mask if b) == len(text) else text


def _legacy_rule(blob: bytes, off: int, e: dict[str, Any], family: str, table: str, ipsize: int, esize: int,
                 alen: int, offsets: dict[int, str], chain: dict[str, Any]) -> dict[str, Any]:
    a = alen
    src, dst, smsk, dmsk = (blob[off + i * a:off + (i + 1) * a] for i in range(4))
    base = off + 4 * a
    iniface, outiface, inmask, outmask = (blob[base + i * 16:base + (i + 1) * 16] for i in range(4))
    tail = base + 64
    if family == "ipv4":
        proto, _flags, invflags = struct.unpack_from("=HBB", blob, tail)
    else:
        proto, _tos, _flags, invflags = struct.unpack_from("=HBBB", blob, tail)
    inv6 = {"src": 0x08, "dst": 0x10, "in": 0x01, "out": 0x02, "proto": 0x40}
    neg = {k: bool(invflags & v) for k, v in inv6.items()}
    matches: list[str] = []
    match_text: list[str] = []
    m = off + esize
    while m + XT_MATCH_HEAD <= off + e["target_offset"]:
        msize = struct.unpack_from("=H", blob, m)[0]
        if msize < XT_MATCH_HEAD:
            break
        mname = blob[m + 2:m + 31].split(b"\0", 1)[0].decode("ascii", "replace")
        rev = blob[m + 31]
        matches.append(mname)
        text = xt_text(mname, blob[m + XT_MATCH_HEAD:m + msize], rev, alen)
        match_text.append(f"{mname} {text}".strip())
        m += msize
    tname = e["tname"]
    tdata = e["tdata"]
    jump_to = None
    rev = blob[off + e["target_offset"] + 31]
    if tname == "":
        verdict = struct.unpack_from("=i", tdata, 0)[0] if len(tdata) >= 4 else 0
        target, jump_to = _std_verdict(verdict, offsets)
        if target == "jump":
            target = jump_to or "?"
    else:
        target = tname
    port, addr = xt_nat(tname, tdata, rev, alen)
    dport = sport = None
    for mt in match_text:
        for word in mt.split():
            if word.startswith(("dpt:", "dpts:")):
                dport = word.split(":", 1)[1]
            elif word.startswith(("spt:", "spts:")):
                sport = word.split(":", 1)[1]
    s, d = _cidr(src, smsk), _cidr(dst, dmsk)
    rec = {
        "family": family, "table": table, "chain": e["chain"], "policy": chain.get("policy"),
        "position": chain["rules"], "packets": e["pcnt"], "bytes": e["bcnt"],
        "src": ("! " if neg["src"] and s else "") + s if s else None,
        "dst": ("! " if neg["dst"] and d else "") + d if d else None,
        "in_iface": _iface(iniface, inmask), "out_iface": _iface(outiface, outmask),
        "proto": (("! " if neg["proto"] else "") + LEGACY_PROTOCOLS.get(proto, str(proto))) if proto else None,
        "matches": matches, "match_text": match_text, "target": target,
        "target_text": xt_text(tname, tdata, rev, alen) if tname else "", "jump_to": jump_to,
        "to_port": port, "to_addr": addr, "dport": dport, "sport": sport,
    }
    rec["action"] = {"REDIRECT": "redirect", "DNAT": "dnat", "SNAT": "snat", "MASQUERADE": "masquerade",
                     "ACCEPT": "accept", "DROP": "drop", "REJECT": "reject", "RETURN": "return"}.get(
        target, "jump" if jump_to else target.lower())
    rec["text"] = _legacy_text(rec)
    return rec


def _legacy_text(r: dict[str, Any]) -> str:
    """The rule as iptables-save writes it (near enough for reading)."""
    out = [f"-A {r['chain']}"]
    for key, opt in (("src", "-s"), ("dst", "-d"), ("in_iface", "-i"), ("out_iface", "-o"), ("proto", "-p")):
        v = r[key]
        if v:
            out.append(f"! {opt} {v[2:]}" if v.startswith("! ") else f"{opt} {v}")
    out += [f"-m {t}" for t in r["match_text"]]
    out.append(f"-j {r['target']}" + (f" {r['target_text']}" if r["target_text"] else ""))
    return " ".join(out)


# =========================================================================================================
# legacy arptables

def arptables(ctx: Context, max_rules: int, counts: dict[str, Any]) -> Iterator[Item]:
    """The arptables tables this network namespace has (/proc/net/arp_tables_names: asking for another would
    instantiate it), read with ARPT_SO_GET_INFO / ARPT_SO_GET_ENTRIES on a raw IPv4 socket."""
    try:
        names = [n for n in read_text(ARPT_NAMES, 4096).split() if re.fullmatch(r"[a-z_]{1,31}", n)]
    except FileNotFoundError:
        counts["arptables_tables"] = None  # arp_tables not in this kernel (or its module not loaded)
        return
    except OSError as exc:
        counts["arptables_tables"] = None
        yield Problem(f"arptables: the list of tables cannot be read: {exc.strerror} (root is needed)",
                      path=ARPT_NAMES, level="warning", errno=exc.errno)
        return
    counts["arptables_tables"] = names
    if not names:
        return
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except OSError as exc:
        yield Problem(f"arptables: no raw socket to ask the kernel with: {exc.strerror} (CAP_NET_RAW is needed)",
                      level="warning", errno=exc.errno)
        return
    libc = _Libc()
    try:
        for name in names:
            ctx.check()
            try:
                yield from _arp_table(ctx, libc, sock.fileno(), name, max_rules, counts)
            except OSError as exc:
                counts.setdefault("legacy_errors", []).append(f"arp {name}: {exc.strerror}")
                yield Problem(f"arptables table {name}: {exc.strerror}", level="warning", errno=exc.errno)
    finally:
        sock.close()


def _arp_table(ctx: Context, libc: _Libc, fd: int, table: str, max_rules: int,
               counts: dict[str, Any]) -> Iterator[Item]:
    for _attempt in range(3):  # EAGAIN: the table changed between the two questions
        info = ctypes.create_string_buffer(table.encode(), ARPT_INFO.size)
        libc.get(fd, socket.IPPROTO_IP, ARPT_SO_GET_INFO, info)
        _n, valid, *rest = ARPT_INFO.unpack(info.raw)
        hook_entry, underflow, size = rest[0:3], rest[3:6], rest[7]
        if size > int(ctx.opt("max_table_bytes", 64 << 20)):
            raise OSError(errno.EFBIG, f"table of {size} bytes, more than the collector reads")
        buf = ctypes.create_string_buffer(GET_ENTRIES_HEAD + size)
        struct.pack_into("=32sI", buf, 0, table.encode(), size)
        try:
            libc.get(fd, socket.IPPROTO_IP, ARPT_SO_GET_ENTRIES, buf)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                continue
            raise
        break
    else:
        raise OSError(errno.EAGAIN, "the table kept changing while it was read")
    blob = buf.raw[GET_ENTRIES_HEAD:GET_ENTRIES_HEAD + size]
    yield from arp_entries(blob, table, valid, hook_entry, underflow, max_rules, counts, ctx.check)


def arp_entries(blob: bytes, table: str, valid: int, hook_entry: list[int] | tuple[int, ...],
                underflow: list[int] | tuple[int, ...], max_rules: int, counts: dict[str, Any],
                check: Any = lambda: None) -> Iterator[Item]:
    """Chains and rules of one arptables table from its entry blob (the same walk as iptables': built-in
    chains start at hook_entry and end with their policy at underflow, user chains start with an ERROR
    target naming them and end with an unconditional RETURN arptables adds itself)."""
    hooks = {hook_entry[h]: ARP_HOOKS[h] for h in range(3) if valid & (1 << h)}
    policies = {underflow[h]: ARP_HOOKS[h] for h in range(3) if valid & (1 << h)}
    chain: str | None = None
    chains: dict[str, dict[str, Any]] = {}
    offsets: dict[int, str] = {}
    entries: list[tuple[int, dict[str, Any]]] = []
    off = 0
    while off + ARPT_ENTRY <= len(blob):
        check()
        target_offset, next_offset = struct.unpack_from("=HH", blob, off + 164)
        if next_offset < ARPT_ENTRY or off + next_offset > len(blob) or target_offset > next_offset:
            break
        pcnt, bcnt = struct.unpack_from("=QQ", blob, off + 176)
        tsize = struct.unpack_from("=H", blob, off + target_offset)[0]
        tname = blob[off + target_offset + 2:off + target_offset + 31].split(b"\0", 1)[0].decode("ascii", "replace")
        tdata = blob[off + target_offset + XT_MATCH_HEAD:off + target_offset + max(tsize, XT_MATCH_HEAD)]
        if off in hooks:
            chain = hooks[off]
            chains[chain] = {"family": "arp", "table": table, "chain": chain, "builtin": True, "policy": None,
                             "packets": None, "bytes": None, "rules": 0}
        if tname == "ERROR":
            label = tdata[:30].split(b"\0", 1)[0].decode("utf-8", "replace")
            if label != "ERROR":
                chain = label
                chains[chain] = {"family": "arp", "table": table, "chain": chain, "builtin": False, "policy": None,
                                 "packets": None, "bytes": None, "rules": 0}
                offsets[off + next_offset] = chain
            off += next_offset
            continue
        if off in policies:
            verdict = struct.unpack_from("=i", tdata, 0)[0] if len(tdata) >= 4 else 0
            chains[policies[off]].update(policy=_std_verdict(verdict, {})[0], packets=pcnt, bytes=bcnt)
        elif chain is not None:
            entries.append((off, {"chain": chain, "pcnt": pcnt, "bcnt": bcnt, "tname": tname, "tdata": tdata,
                                  "target_offset": target_offset}))
        off += next_offset
    last: dict[str, int] = {}
    for i, (_o, e) in enumerate(entries):
        last[e["chain"]] = i
    tails = {i for name, i in last.items() if not chains[name]["builtin"] and entries[i][1]["tname"] == ""
             and entries[i][1]["tdata"][:4] == struct.pack("=i", -5) and not any(blob[entries[i][0]:
                                                                                        entries[i][0] + 158])}
    rules = 0
    for i, (entry_off, e) in enumerate(entries):
        if i in tails:
            continue
        if counts.get("arptables_rules", 0) + rules >= max_rules:
            counts["truncated"] = True
            yield Problem(f"arptables table {table}: more than {max_rules} rules; the rest were not recorded",
                          level="warning")
            break
        rules += 1
        chains[e["chain"]]["rules"] += 1
        try:
            yield Record("arptables_rules", _arp_rule(blob, entry_off, e, table, offsets, chains[e["chain"]]))
        except (struct.error, IndexError, ValueError) as exc:
            yield Problem(f"arptables table {table}: entry at offset {entry_off} cannot be read: {exc}",
                          level="warning")
    counts["arptables_rules"] = counts.get("arptables_rules", 0) + rules
    for c in chains.values():
        yield Record("iptables_chains", c)
    counts.setdefault("legacy_chains", []).extend(chains.values())


def _mac(addr: bytes, mask: bytes, length: int = 6) -> str | None:
    if not any(mask[:length]):
        return None
    text = ":".join(f"{b:02x}" for b in addr[:length])
    return text if all(b == 0xFF for b in mask[:length]) else text + "/" + ":".join(f"{b:02x}" for b in mask[:length])


def _arp_rule(blob: bytes, off: int, e: dict[str, Any], table: str, offsets: dict[int, str],
              chain: dict[str, Any]) -> dict[str, Any]:
    src, tgt, smsk, tmsk = (blob[off + i * 4:off + (i + 1) * 4] for i in range(4))
    arhln, arhln_mask = blob[off + 16], blob[off + 17]
    src_dev, src_dev_mask = blob[off + 18:off + 34], blob[off + 34:off + 50]
    tgt_dev, tgt_dev_mask = blob[off + 50:off + 66], blob[off + 66:off + 82]
    arpop, arpop_mask, arhrd, arhrd_mask, arpro, arpro_mask = struct.unpack_from(">6H", blob, off + 82)
    iniface, outiface = blob[off + 94:off + 110], blob[off + 110:off + 126]
    inmask, outmask = blob[off + 126:off + 142], blob[off + 142:off + 158]
    invflags = struct.unpack_from("=H", blob, off + 160)[0]
    neg = {k: bool(invflags & v) for k, v in ARPT_INV.items()}
    tname, tdata = e["tname"], e["tdata"]
    jump_to = None
    if tname == "":
        verdict = struct.unpack_from("=i", tdata, 0)[0] if len(tdata) >= 4 else 0
        target, jump_to = _std_verdict(verdict, offsets)
        if target == "jump":
            target = jump_to or "?"
    else:
        target = tname
    mangle: dict[str, Any] = {}
    if tname == "mangle" and len(tdata) >= 48:
        # struct arpt_mangle: src_devaddr[16], tgt_devaddr[16], src_ip, tgt_ip, flags, target
        flags = tdata[40]
        if flags & ARPT_MANGLE_SIP:
            mangle["mangle_ip_s"] = _ip(tdata[32:36])
        if flags & ARPT_MANGLE_TIP:
            mangle["mangle_ip_d"] = _ip(tdata[36:40])
        if flags & ARPT_MANGLE_SDEV:
            mangle["mangle_mac_s"] = ":".join(f"{b:02x}" for b in tdata[0:6])
        if flags & ARPT_MANGLE_TDEV:
            mangle["mangle_mac_d"] = ":".join(f"{b:02x}" for b in tdata[16:22])
        after = struct.unpack_from("=i", tdata, 44)[0]
        mangle["mangle_target"] = {0: "DROP", 1: "ACCEPT", -1: "CONTINUE"}.get(after, str(after))  # NF_*, XT_CONTINUE

    def inv(key: str, value: str | None) -> str | None:
        return ("! " if neg[key] else "") + value if value is not None else None

    rec: dict[str, Any] = {
        "family": "arp", "table": table, "chain": e["chain"], "policy": chain.get("policy"),
        "position": chain["rules"], "packets": e["pcnt"], "bytes": e["bcnt"],
        "in_iface": inv("in", _iface(iniface, inmask)), "out_iface": inv("out", _iface(outiface, outmask)),
        "src": inv("src", _cidr(src, smsk)), "dst": inv("dst", _cidr(tgt, tmsk)),
        "src_mac": inv("src_mac", _mac(src_dev, src_dev_mask)), "dst_mac": inv("dst_mac", _mac(tgt_dev, tgt_dev_mask)),
        "h_length": inv("h_length", str(arhln)) if arhln_mask else None,
        "opcode": inv("opcode", str(arpop)) if arpop_mask else None,
        "hw_type": inv("hw_type", str(arhrd)) if arhrd_mask else None,
        "proto_type": inv("proto_type", f"0x{arpro:x}") if arpro_mask else None,
        "target": target, "jump_to": jump_to, **mangle,
    }
    rec["action"] = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return", "mangle": "mangle"}.get(
        target, "jump" if jump_to else target.lower())
    rec["text"] = _arp_text(rec)
    return rec


def _arp_text(r: dict[str, Any]) -> str:
    """The rule as ``arptables -L -n -v -x`` writes it (without the counters)."""
    def opt(flag: str, value: str | None, star: bool = False) -> list[str]:
        if value is None:
            return [flag, "*"] if star else []
        return ["!", flag, value[2:]] if value.startswith("! ") else [flag, value]

    out = ["-j", r["target"]]
    out += opt("-i", r["in_iface"], True) + opt("-o", r["out_iface"], True)
    for key, flag in (("src", "-s"), ("src_mac", "--src-mac"), ("dst", "-d"), ("dst_mac", "--dst-mac"),
                      ("h_length", "--h-length"), ("opcode", "--opcode"), ("hw_type", "--h-type"),
                      ("proto_type", "--proto-type")):
        value = r.get(key)
        out += opt(flag, value[:-3] if key in ("src", "dst") and value and value.endswith("/32") else value)
    for key, flag in (("mangle_ip_s", "--mangle-ip-s"), ("mangle_ip_d", "--mangle-ip-d"),
                      ("mangle_mac_s", "--mangle-mac-s"), ("mangle_mac_d", "--mangle-mac-d")):
        if r.get(key):
            out += [flag, r[key]]
    if r.get("mangle_target") and r["mangle_target"] != "ACCEPT":
        out += ["--mangle-target", r["mangle_target"]]
    return " ".join(out)


# =========================================================================================================
# legacy ebtables

def ebt_loaded(table: str, sys_module: str = "/sys/module", modules: str = "/proc/modules") -> bool:
    """Whether ebtables' ``table`` may be asked for without loading a module: its module ebtable_<table> is
    loaded, or the kernel has no loadable modules at all (then nothing can be loaded; a kernel built without
    legacy ebtables answers ENOPROTOOPT). Asking for a table of a module not loaded would load it
    (request_module); there is no list of a namespace's ebtables tables as /proc/net/ip_tables_names is for
    iptables."""
    return os.path.isdir(f"{sys_module}/ebtable_{table}") or not os.path.exists(modules)


def ebtables(ctx: Context, max_rules: int, counts: dict[str, Any]) -> Iterator[Item]:
    names = [t for t in ctx.opt("ebtables_tables", EBT_TABLES) if ebt_loaded(t)]
    counts["ebtables_tables"] = []
    if not names:
        return
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except OSError as exc:
        yield Problem(f"ebtables: no raw socket to ask the kernel with: {exc.strerror} (CAP_NET_RAW is needed)",
                      level="warning", errno=exc.errno)
        return
    libc = _Libc()
    try:
        for name in names:
            ctx.check()
            try:
                blob, replace, counters = _ebt_get(ctx, libc, sock.fileno(), name)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOPROTOOPT):  # not in this namespace / no legacy ebtables
                    continue
                counts.setdefault("legacy_errors", []).append(f"bridge {name}: {exc.strerror}")
                yield Problem(f"ebtables table {name}: {exc.strerror}", level="warning", errno=exc.errno)
                continue
            counts["ebtables_tables"].append(name)
            yield from ebt_entries(blob, name, replace[1], counters, max_rules, counts, ctx.check)
    finally:
        sock.close()


def _ebt_get(ctx: Context, libc: _Libc, fd: int, table: str) -> tuple[bytes, tuple[Any, ...], list[tuple[int, int]]]:
    """(entries blob, struct ebt_replace fields, counters) of one table: EBT_SO_GET_INFO for the sizes, then
    EBT_SO_GET_ENTRIES with buffers of those sizes (the kernel checks the length asked for exactly)."""
    for _attempt in range(3):
        info = ctypes.create_string_buffer(table.encode(), EBT_REPLACE.size)
        libc.get(fd, socket.IPPROTO_IP, EBT_SO_GET_INFO, info)
        fields = EBT_REPLACE.unpack(info.raw)
        nentries, size = fields[2], fields[3]
        if size > int(ctx.opt("max_table_bytes", 64 << 20)) or nentries > size:
            raise OSError(errno.EFBIG, f"table of {size} bytes, more than the collector reads")
        entries = ctypes.create_string_buffer(max(size, 1))
        counters = ctypes.create_string_buffer(max(nentries * 16, 1))
        req = ctypes.create_string_buffer(EBT_REPLACE.size + size + nentries * 16)
        EBT_REPLACE.pack_into(req, 0, table.encode(), fields[1], nentries, size, *fields[4:10], nentries,
                              ctypes.addressof(counters), ctypes.addressof(entries))
        length = ctypes.c_uint32(EBT_REPLACE.size + size + nentries * 16)
        if libc.getsockopt(fd, socket.IPPROTO_IP, EBT_SO_GET_ENTRIES, req, ctypes.byref(length)) < 0:
            code = ctypes.get_errno()
            if code == errno.EINVAL:  # the table changed size between the two questions
                continue
            raise OSError(code, os.strerror(code))
        raw = counters.raw
        return entries.raw[:size], fields, [struct.unpack_from("=QQ", raw, i * 16) for i in range(nentries)]
    raise OSError(errno.EAGAIN, "the table kept changing while it was read")


def _ext(blob: bytes, off: int) -> tuple[str, bytes, int]:
    """(name, data, total size) of an ebt_entry_match / _watcher / _target at ``off``."""
    name = blob[off:off + 31].split(b"\0", 1)[0].decode("ascii", "replace")
    size = struct.unpack_from("=I", blob, off + 32)[0]
    return name, blob[off + EBT_EXT_HEAD:off + EBT_EXT_HEAD + size], EBT_EXT_HEAD + size


def ebt_entries(blob: bytes, table: str, valid: int, counters: list[tuple[int, int]], max_rules: int,
                counts: dict[str, Any], check: Any = lambda: None) -> Iterator[Item]:
    """Chains (struct ebt_entries: name, policy) and rules (struct ebt_entry with its matches, watchers and
    target) of one ebtables table, in the kernel's order: the built-in chains of the valid hooks, then the
    user chains; a jump's verdict is the offset of its chain's ebt_entries in the blob."""
    heads: dict[int, str] = {}
    off = 0
    layout: list[tuple[str, int, dict[str, Any]]] = []  # ("chain", off, chain) / ("rule", off, {})
    chain: dict[str, Any] | None = None
    while off + 4 <= len(blob):
        check()
        bitmask = struct.unpack_from("=I", blob, off)[0]
        if not bitmask & EBT_ENTRY_OR_ENTRIES:  # an ebt_entries: a chain starts
            if off + EBT_ENTRIES_SIZE > len(blob):
                break
            name = blob[off + 4:off + 36].split(b"\0", 1)[0].decode("utf-8", "replace")
            counter_offset, policy, nentries = struct.unpack_from("=IiI", blob, off + 36)
            chain = {"family": "bridge", "table": table, "chain": name, "builtin": name in EBT_HOOKS,
                     "policy": EBT_VERDICTS.get(policy, str(policy)), "packets": None, "bytes": None, "rules": 0,
                     "_counter": counter_offset, "_n": nentries}
            heads[off] = name
            layout.append(("chain", off, chain))
            off += EBT_ENTRIES_SIZE
            continue
        if off + EBT_ENTRY_SIZE > len(blob) or chain is None:
            break
        _w, _t, next_offset = struct.unpack_from("=III", blob, off + 100)
        if next_offset < EBT_ENTRY_SIZE or off + next_offset > len(blob):
            break
        layout.append(("rule", off, chain))
        off += next_offset
    rules = 0
    chains: list[dict[str, Any]] = []
    for kind, at, ch in layout:
        if kind == "chain":
            chains.append(ch)
            continue
        if counts.get("ebtables_rules", 0) + rules >= max_rules:
            counts["truncated"] = True
            yield Problem(f"ebtables table {table}: more than {max_rules} rules; the rest were not recorded",
                          level="warning")
            break
        index = ch["_counter"] + ch["rules"]
        pcnt, bcnt = counters[index] if index < len(counters) else (None, None)
        ch["rules"] += 1
        rules += 1
        try:
            yield Record("ebtables_rules", _ebt_rule(blob, at, table, ch, heads, pcnt, bcnt))
        except (struct.error, IndexError, ValueError) as exc:
            yield Problem(f"ebtables table {table}: entry at offset {at} cannot be read: {exc}", level="warning")
    counts["ebtables_rules"] = counts.get("ebtables_rules", 0) + rules
    for ch in chains:
        ch.pop("_counter", None)
        ch.pop("_n", None)
        yield Record("iptables_chains", ch)
    counts.setdefault("legacy_chains", []).extend(chains)


def _ebt_rule(blob: bytes, off: int, table: str, chain: dict[str, Any], heads: dict[int, str],
              pcnt: int | None, bcnt: int | None) -> dict[str, Any]:
    bitmask, invflags, ethproto = struct.unpack_from("=IIH", blob, off)
    ifaces = [blob[off + 10 + i * 16:off + 26 + i * 16].split(b"\0", 1)[0].decode("utf-8", "replace") or None
              for i in range(4)]
    smac, smsk, dmac, dmsk = (blob[off + 74 + i * 6:off + 80 + i * 6] for i in range(4))
    watchers_offset, target_offset, next_offset = struct.unpack_from("=III", blob, off + 100)
    neg = {k: bool(invflags & v) for k, v in EBT_INV.items()}

    def inv(key: str, value: str | None) -> str | None:
        return ("! " if neg[key] else "") + value if value is not None else None

    matches, watchers, texts = [], [], []
    pos = off + EBT_ENTRY_SIZE
    while pos + EBT_EXT_HEAD <= off + watchers_offset:
        name, _data, size = _ext(blob, pos)
        matches.append(name)
        pos += size
    pos = off + watchers_offset
    while pos + EBT_EXT_HEAD <= off + target_offset:
        name, _data, size = _ext(blob, pos)
        watchers.append(name)
        pos += size
    tname, tdata, _size = _ext(blob, off + target_offset)
    jump_to = None
    to_mac = None
    if tname == "standard":
        verdict = struct.unpack_from("=i", tdata, 0)[0] if len(tdata) >= 4 else -3
        if verdict >= 0:
            jump_to = heads.get(verdict, f"offset {verdict}")
            target = jump_to
        else:
            target = EBT_VERDICTS.get(verdict, str(verdict))
    else:
        target = tname
        if tname in EBT_MAC_TARGETS and len(tdata) >= 6:  # struct ebt_nat_info / ebt_arpreply_info: mac, target
            to_mac = ":".join(f"{b:02x}" for b in tdata[:6])
            after = struct.unpack_from("=i", tdata, 8)[0] if len(tdata) >= 12 else -1
            texts.append(f"{EBT_MAC_TARGETS[tname]} {to_mac} --{tname}-target {EBT_VERDICTS.get(after, after)}")
        elif tname == "redirect" and len(tdata) >= 4:  # struct ebt_redirect_info: target
            texts.append(f"--redirect-target {EBT_VERDICTS.get(struct.unpack_from('=i', tdata, 0)[0], '?')}")
    proto = None
    if bitmask & EBT_802_3:
        proto = "Length"
    elif not bitmask & EBT_NOPROTO:
        value = socket.ntohs(ethproto)
        proto = ETHER_TYPES.get(value, f"0x{value:04x}")
    rec: dict[str, Any] = {
        "family": "bridge", "table": table, "chain": chain["chain"], "policy": chain.get("policy"),
        "position": chain["rules"], "packets": pcnt, "bytes": bcnt, "proto": inv("proto", proto),
        "in_iface": inv("in", ifaces[0]), "logical_in": inv("logical_in", ifaces[1]),
        "out_iface": inv("out", ifaces[2]), "logical_out": inv("logical_out", ifaces[3]),
        "src_mac": inv("src_mac", _mac(smac, smsk)), "dst_mac": inv("dst_mac", _mac(dmac, dmsk)),
        "matches": matches, "watchers": watchers, "target": target, "jump_to": jump_to, "to_mac": to_mac,
        "target_text": " ".join(texts),
    }
    rec["action"] = {"ACCEPT": "accept", "DROP": "drop", "RETURN": "return", "CONTINUE": "continue"}.get(
        target, "jump" if jump_to else target.lower())
    rec["text"] = _ebt_text(rec)
    return rec


def _ebt_text(r: dict[str, Any]) -> str:
    """The rule as ``ebtables -L`` writes its options (near enough for reading)."""
    out = []
    for key, flag in (("proto", "-p"), ("src_mac", "-s"), ("dst_mac", "-d"), ("in_iface", "-i"),
                      ("logical_in", "--logical-in"), ("out_iface", "-o"), ("logical_out", "--logical-out")):
        v = r[key]
        if v:
            out += ["!", flag, v[2:]] if v.startswith("! ") else [flag, v]
    out += [f"--{m}" for m in r["matches"]] + [f"--{w}" for w in r["watchers"]]
    out += ["-j", r["target"]] + ([r["target_text"]] if r["target_text"] else [])
    return " ".join(out)


# =========================================================================================================
# the saved configuration

_NFT_SKIP = re.compile(r"^(#|table\b|chain\b|set\b|map\b|type\b|policy\b|flags\b|elements\b|include\b|define\b|"
                       r"flush\b|}|\{|counter\s*$|$)")


def saved_config(ctx: Context, paths: list[str], cap: int) -> Iterator[Item | tuple[str, int]]:
    """(path, rule lines) for each saved firewall configuration present: iptables-save's ``-A`` lines, or nft
    statements inside chains (a Debian default /etc/nftables.conf has none)."""
    for path in paths:
        try:
            if not fsread.exists(ctx, path) or fsread.is_dir(ctx, path):
                continue
            data, _st, _cut = fsread.read_capped(ctx, path, cap)
        except OSError as exc:
            yield Problem.from_os_error(exc, "saved firewall configuration", path=path)
            continue
        text = data.decode("utf-8", "replace")
        if "nftables" in path:
            lines = sum(1 for ln in text.splitlines() if not _NFT_SKIP.match(ln.strip().rstrip(";").strip()))
        else:
            lines = sum(1 for ln in text.splitlines() if ln.startswith(("-A ", "-I ")))
        yield path, lines


# =========================================================================================================

def collect(ctx: Context) -> Iterator[Item]:
    if ctx.root != "/" or not ctx.live:
        yield Problem("the packet filter is the running kernel's: read only when the evidence root is the live "
                      "host (not under --root)", level="info")
        return
    max_rules = int(ctx.opt("max_rules", 20000))
    counts: dict[str, Any] = {}
    started = time.monotonic()
    yield from nftables(ctx, max_rules, int(ctx.opt("max_set_elements", 64)), counts)
    for family in ("ipv4", "ipv6"):
        yield from iptables(ctx, family, max_rules, counts)
    yield from arptables(ctx, max_rules, counts)
    if ctx.opt("ebtables", True):
        yield from ebtables(ctx, max_rules, counts)
    saved: dict[str, int] = {}
    for item in saved_config(ctx, list(ctx.opt("saved_configs", SAVED_CONFIGS)), int(ctx.opt("max_config_bytes",
                                                                                             4 << 20))):
        if isinstance(item, tuple):
            saved[item[0]] = item[1]
        else:
            yield item
    yield Record("firewall_summary", _summary(counts, saved, time.monotonic() - started))


def _summary(counts: dict[str, Any], saved: dict[str, int], took: float) -> dict[str, Any]:
    base = counts.get("nft_base_chains", [])
    legacy_chains = counts.get("legacy_chains", [])
    nft_rules, legacy_rules = counts.get("nft_rules", 0), counts.get("legacy_rules", 0)
    xt_names = {"filter", "nat", "mangle", "raw", "security"}
    via_nft = [c for c in base if c["table"] in xt_names and c["chain"] in NF_IP_HOOKS and c["family"] in ("ip", "ip6")]
    legacy_present = bool(counts.get("legacy_ipv4_tables") or counts.get("legacy_ipv6_tables"))
    arp_rules, eb_rules = counts.get("arptables_rules", 0), counts.get("ebtables_rules", 0)
    if via_nft and legacy_present and legacy_rules:
        backend = "both: iptables-nft tables in nftables and legacy x_tables rules"
    elif via_nft:
        backend = "iptables-nft: the iptables rules live in nftables (the legacy tables are empty or absent)"
    elif legacy_present:
        backend = "iptables-legacy"
    else:
        backend = "none"
    policies = [c["policy"] for c in base if c["policy"]] + [c["policy"].lower() for c in legacy_chains
                                                              if c.get("policy")]
    accept_all = all(p == "accept" for p in policies)
    saved_rules = sum(saved.values())
    return {
        "nft_state": counts.get("nft_state", "unavailable"),
        "nft_tables": counts.get("nft_tables", []), "nft_chains": counts.get("nft_chains", 0),
        "nft_rules": nft_rules, "nft_sets": counts.get("nft_sets", 0),
        "legacy_ipv4_tables": counts.get("legacy_ipv4_tables"), "legacy_ipv6_tables": counts.get("legacy_ipv6_tables"),
        "legacy_chains": len(legacy_chains), "legacy_rules": legacy_rules,
        "legacy_errors": counts.get("legacy_errors", []),
        "iptables_backend": backend,
        "arptables_tables": counts.get("arptables_tables"), "arptables_rules": arp_rules,
        "ebtables_tables": counts.get("ebtables_tables"), "ebtables_rules": eb_rules,
        "nft_flowtables": counts.get("nft_flowtables", 0),
        "rules_total": nft_rules + legacy_rules + arp_rules + eb_rules,
        "policies_all_accept": accept_all,
        "drop_policies": sorted({f"{c.get('table')} {c.get('chain')}" for c in base + legacy_chains
                                 if (c.get("policy") or "").lower() == "drop"}),
        "saved_configs": saved, "saved_rule_lines": saved_rules,
        "flushed_against_saved": nft_rules + legacy_rules + arp_rules + eb_rules == 0 and accept_all
        and saved_rules > 0,
        "truncated": bool(counts.get("truncated")), "seconds": round(took, 3),
    }
