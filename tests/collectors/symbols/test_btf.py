"""Tests for the BTF reader and the BTF -> volatility3 ISF builder."""

from __future__ import annotations

import base64
import io
import json
import lzma
import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from collectors.symbols import btf as B
from collectors.symbols.isf import NoBTF, build_isf, from_host, link_time_text, main, parse_kallsyms, write_isf

FIXTURE = Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "linux-6.1.0-56-cloud-amd64"
VMLINUZ = FIXTURE / "vmlinuz-6.1.0-56-cloud-amd64"
REF_ISF = FIXTURE / "debian-6.1.0-56-cloud-amd64.json.xz"
CONFIG = FIXTURE / "config-6.1.0-56-cloud-amd64"
FAKE_SHIFT = 0x1E400000


# ---------------------------------------------------------------------------------------------------------------
# A tiny BTF assembler so every kind and every corruption can be produced on demand.


class Blob:
    def __init__(self, endian: str = "<") -> None:
        self.bo = endian
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def s(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, name: str, kind: int, vlen: int, size_type: int, extra: bytes = b"", kflag: int = 0) -> int:
        info = (kflag << 31) | (kind << 24) | vlen
        self.types += struct.pack(self.bo + "III", self.s(name), info, size_type) + extra
        self.count += 1
        return self.count

    def u32(self, *vals: int) -> bytes:
        return struct.pack(self.bo + f"{len(vals)}I", *vals)

    def build(self, hdr_len: int = 24) -> bytes:
        magic = struct.pack(self.bo + "H", B.BTF_MAGIC)
        hdr = (
            magic
            + bytes([1, 0])
            + struct.pack(self.bo + "5I", hdr_len, 0, len(self.types), len(self.types), len(self.strings))
        )
        return hdr + b"\0" * (hdr_len - 24) + bytes(self.types) + bytes(self.strings)


def every_kind_blob(endian: str = "<") -> tuple[bytes, dict[str, int]]:
    b = Blob(endian)
    ids: dict[str, int] = {}
    ids["int"] = b.add("int", B.KIND_INT, 0, 4, b.u32((B.INT_SIGNED << 24) | 32))
    ids["uint"] = b.add("unsigned int", B.KIND_INT, 0, 4, b.u32(32))
    ids["char"] = b.add("char", B.KIND_INT, 0, 1, b.u32((B.INT_SIGNED << 24) | 8))
    ids["bool"] = b.add("_Bool", B.KIND_INT, 0, 1, b.u32((B.INT_BOOL << 24) | 8))
    ids["ulong"] = b.add("long unsigned int", B.KIND_INT, 0, 8, b.u32(64))
    ids["ptr_node"] = b.add("", B.KIND_PTR, 0, 8)  # -> struct node (id 8, defined below)
    ids["arr"] = b.add("", B.KIND_ARRAY, 0, 0, b.u32(ids["char"], ids["int"], 16))
    # struct node { struct node *next; char name[16]; unsigned int flag:3, mode:5; union {int a; unsigned int b;}; }
    members = b.u32(b.s("next"), ids["ptr_node"], 0)
    members += b.u32(b.s("name"), ids["arr"], 64)
    members += b.u32(b.s("flag"), ids["uint"], (3 << 24) | 192)
    members += b.u32(b.s("mode"), ids["uint"], (5 << 24) | 195)
    members += b.u32(0, 10, 224)  # anonymous union, id 10
    ids["node"] = b.add("node", B.KIND_STRUCT, 5, 32, members, kflag=1)
    assert ids["node"] == 8
    ids["enum"] = b.add(
        "color", B.KIND_ENUM, 2, 4, b.u32(b.s("RED"), 0) + struct.pack(endian + "Ii", b.s("BLUE"), -1), 1
    )
    ids["anon_union"] = b.add("", B.KIND_UNION, 2, 4, b.u32(b.s("a"), ids["int"], 0, b.s("b"), ids["uint"], 0))
    assert ids["anon_union"] == 10
    ids["fwd"] = b.add("opaque", B.KIND_FWD, 0, 0)
    ids["typedef"] = b.add("node_t", B.KIND_TYPEDEF, 0, ids["node"])
    ids["volatile"] = b.add("", B.KIND_VOLATILE, 0, ids["int"])
    ids["const"] = b.add("", B.KIND_CONST, 0, ids["volatile"])
    ids["restrict"] = b.add("", B.KIND_RESTRICT, 0, ids["ptr_node"])
    ids["proto"] = b.add("", B.KIND_FUNC_PROTO, 2, ids["int"], b.u32(b.s("n"), ids["ptr_node"], 0, 0))
    ids["func"] = b.add("walk", B.KIND_FUNC, 0, ids["proto"], kflag=0)
    ids["var"] = b.add("cur_node", B.KIND_VAR, 0, ids["ptr_node"], b.u32(1))
    ids["datasec"] = b.add(".data..percpu", B.KIND_DATASEC, 1, 8, b.u32(ids["var"], 0, 8))
    ids["float"] = b.add("double", B.KIND_FLOAT, 0, 8)
    ids["decl_tag"] = b.add("tagged", B.KIND_DECL_TAG, 0, ids["node"], struct.pack(endian + "i", 1))
    ids["type_tag"] = b.add("user", B.KIND_TYPE_TAG, 0, ids["int"])
    ids["enum64"] = b.add("big", B.KIND_ENUM64, 1, 8, b.u32(b.s("HUGE"), 0, 0x80000000))
    ids["ptr_fn"] = b.add("", B.KIND_PTR, 0, ids["proto"])
    # struct ops { int (*fn)(struct node *, ...); node_t head; struct opaque *o; enum color c; }
    ptr_fwd = b.add("", B.KIND_PTR, 0, ids["fwd"])
    members = b.u32(b.s("fn"), ids["ptr_fn"], 0, b.s("head"), ids["typedef"], 64)
    members += b.u32(b.s("o"), ptr_fwd, 320, b.s("c"), ids["enum"], 384)
    ids["ops"] = b.add("ops", B.KIND_STRUCT, 4, 56, members)
    # typedef struct { int counter; } atomic_t;   (the dwarf2json "typedef of a struct" rule)
    anon = b.add("", B.KIND_STRUCT, 1, 4, b.u32(b.s("counter"), ids["int"], 0))
    ids["atomic_t"] = b.add("atomic_t", B.KIND_TYPEDEF, 0, anon)
    return b.build(), ids


def test_every_kind_parses() -> None:
    data, ids = every_kind_blob()
    btf = B.parse_btf(data)
    assert btf.endian == "little"
    assert len(btf) == max(ids.values()) + 1
    kinds = {t.kind for t in btf}
    assert kinds >= set(range(1, 20)), f"missing kinds: {set(range(1, 20)) - kinds}"
    assert btf[ids["int"]].encoding == B.INT_SIGNED and btf[ids["int"]].bits == 32
    assert btf[ids["arr"]].nelems == 16 and btf[ids["arr"]].elem_type == ids["char"]
    node = btf[ids["node"]]
    assert [m.name for m in node.members] == ["next", "name", "flag", "mode", ""]
    flag, mode = node.members[2], node.members[3]
    assert (flag.bit_offset, flag.bitfield_size) == (192, 3)
    assert (mode.bit_offset, mode.bitfield_size) == (195, 5)
    assert [v.value for v in btf[ids["enum"]].values] == [0, -1]
    assert btf[ids["enum64"]].values[0].value == 0x80000000 << 32
    assert btf[ids["fwd"]].name == "opaque"
    assert btf.resolve(ids["const"]).id == ids["int"]
    assert btf.resolve(ids["type_tag"]).id == ids["int"]
    assert [p.type for p in btf[ids["proto"]].params] == [ids["ptr_node"], 0]
    assert btf[ids["var"]].linkage == 1
    assert btf[ids["datasec"]].vars[0] == B.BTFVarSecInfo(ids["var"], 0, 8)
    assert btf[ids["decl_tag"]].component_idx == 1
    assert btf[ids["float"]].size == 8
    assert btf.by_name("node", B.KIND_STRUCT)[0].id == ids["node"]


def test_big_endian_matches_little_endian() -> None:
    le = B.parse_btf(every_kind_blob("<")[0])
    be = B.parse_btf(every_kind_blob(">")[0])
    assert be.endian == "big"
    for a, b in zip(le, be, strict=True):
        assert (a.kind, a.name, a.size, a.type, list(a.members), list(a.values)) == (
            b.kind,
            b.name,
            b.size,
            b.type,
            list(b.members),
            list(b.values),
        )


def test_larger_header_is_honoured() -> None:
    b = Blob()
    b.add("int", B.KIND_INT, 0, 4, b.u32((B.INT_SIGNED << 24) | 32))
    assert B.parse_btf(b.build(hdr_len=32))[1].name == "int"


def test_old_style_int_bitfields() -> None:
    # Before kind_flag, a bitfield was a member whose INT type itself had fewer bits / a bit offset.
    b = Blob()
    uint = b.add("unsigned int", B.KIND_INT, 0, 4, b.u32(32))
    bits3 = b.add("unsigned int", B.KIND_INT, 0, 4, b.u32((2 << 16) | 3))
    b.add("s", B.KIND_STRUCT, 2, 4, b.u32(b.s("x"), uint, 0, b.s("y"), bits3, 8))
    isf = build_isf(b.build(), "", "Linux version 1\n")
    y = isf["user_types"]["s"]["fields"]["y"]
    assert y["type"] == {
        "bit_length": 3,
        "bit_position": 2,
        "kind": "bitfield",
        "type": {"kind": "base", "name": "unsigned int"},
    }
    assert y["offset"] == 1


@pytest.mark.parametrize(
    ("label", "mutate"),
    [
        ("empty", lambda d: b""),
        ("truncated header", lambda d: d[:20]),
        ("bad magic", lambda d: b"\x00\x00" + d[2:]),
        ("bad version", lambda d: d[:2] + b"\x02" + d[3:]),
        ("sections past end", lambda d: d[:-10]),
    ],
)
def test_corrupt_headers(label: str, mutate: Any) -> None:
    data, _ = every_kind_blob()
    with pytest.raises(B.BTFError):
        B.parse_btf(mutate(data))


def test_truncated_type_section() -> None:
    b = Blob()
    b.add("s", B.KIND_STRUCT, 3, 4, b.u32(b.s("x"), 0, 0))  # claims 3 members, carries 1
    with pytest.raises(B.BTFError, match="truncated"):
        B.parse_btf(b.build())


def test_string_offset_out_of_range() -> None:
    b = Blob()
    b.types += struct.pack("<III", 9999, B.KIND_INT << 24, 4) + b.u32(32)
    b.count += 1
    with pytest.raises(B.BTFError, match="string offset"):
        B.parse_btf(b.build())


def test_type_id_out_of_range() -> None:
    b = Blob()
    b.add("p", B.KIND_PTR, 0, 42)
    with pytest.raises(B.BTFError, match="out of range"):
        B.parse_btf(b.build())
    btf = B.parse_btf(every_kind_blob()[0])
    with pytest.raises(B.BTFError):
        btf[10_000]


def test_cyclic_typedef_rejected() -> None:
    b = Blob()
    b.add("a", B.KIND_TYPEDEF, 0, 2)
    b.add("b", B.KIND_CONST, 0, 3)
    b.add("c", B.KIND_TYPEDEF, 0, 1)
    with pytest.raises(B.BTFError, match="cyclic"):
        B.parse_btf(b.build())


def test_self_referencing_struct_is_fine() -> None:
    data, ids = every_kind_blob()
    btf = B.parse_btf(data)  # struct node contains a pointer to itself
    assert btf[ids["ptr_node"]].type == ids["node"]


def test_unknown_kind_rejected() -> None:
    b = Blob()
    b.add("x", 25, 0, 0)
    with pytest.raises(B.BTFError, match="unknown BTF kind"):
        B.parse_btf(b.build())


def test_every_truncation_raises_btferror_only() -> None:
    data, _ = every_kind_blob()
    for cut in range(len(data)):
        chopped = bytearray(data[:cut])
        if cut >= 24:
            # keep the header consistent with the shortened blob so the type parser itself sees the truncation
            type_len = max(0, min(cut - 24, struct.unpack_from("<I", data, 12)[0]))
            str_len = max(0, cut - 24 - type_len)
            struct.pack_into("<4I", chopped, 8, 0, type_len, type_len, str_len)
        try:
            B.parse_btf(bytes(chopped))
        except B.BTFError:
            pass


def test_elf_and_bzimage_errors() -> None:
    with pytest.raises(B.BTFError):
        B.btf_from_blob(b"junk" * 100)
    with pytest.raises(B.BTFError):
        B.elf_section(b"\x7fELF" + b"\x02\x01" + b"\0" * 10, ".BTF")
    with pytest.raises(B.BTFError):
        B.vmlinux_from_bzimage(b"\0" * 0x300)


# ---------------------------------------------------------------------------------------------------------------
# ISF from the synthetic blob


def test_isf_from_every_kind_blob() -> None:
    data, _ = every_kind_blob()
    kallsyms = (
        "ffffffff81000000 T _text\n"
        "ffffffff81200000 D cur_node_global\n"
        "0000000000000010 D cur_node\n"
        "ffffffff82000000 D linux_banner\n"
        "ffffffffc0001000 t mod_fn\t[some_mod]\n"
    )
    notes: list[str] = []
    isf = build_isf(data, kallsyms, "Linux version 9.9.9 (x@y) #1\n", notes=notes)
    ut = isf["user_types"]
    node = ut["node"]["fields"]
    assert ut["node"]["size"] == 32
    assert node["next"] == {"type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "node"}}, "offset": 0}
    assert node["name"]["type"] == {"count": 16, "kind": "array", "subtype": {"kind": "base", "name": "char"}}
    assert node["flag"] == {
        "type": {
            "bit_length": 3,
            "bit_position": 0,
            "kind": "bitfield",
            "type": {"kind": "base", "name": "unsigned int"},
        },
        "offset": 24,
    }
    assert node["mode"]["type"]["bit_position"] == 3 and node["mode"]["offset"] == 24
    anon = node["unnamed_field_0"]
    assert anon["anonymous"] is True and anon["offset"] == 28
    assert re.fullmatch(r"unnamed_[0-9a-f]{16}", anon["type"]["name"]) and anon["type"]["kind"] == "union"
    assert anon["type"]["name"] in ut
    ops = ut["ops"]["fields"]
    assert ops["fn"]["type"] == {"kind": "pointer", "subtype": {"kind": "function"}}
    assert ops["head"]["type"] == {"kind": "struct", "name": "node_t"}  # typedef of a struct keeps its name
    assert ops["o"]["type"] == {"kind": "pointer", "subtype": {"kind": "struct", "name": "opaque"}}
    assert ops["c"]["type"] == {"kind": "enum", "name": "color"}
    assert ut["node_t"] == ut["node"] and ut["atomic_t"]["fields"]["counter"]["offset"] == 0
    assert isf["enums"]["color"] == {"size": 4, "base": "int", "constants": {"RED": 0, "BLUE": -1}}
    assert isf["enums"]["big"]["constants"]["HUGE"] < 0  # Go int64 semantics, as dwarf2json
    bt = isf["base_types"]
    assert bt["pointer"] == {"size": 8, "signed": False, "kind": "int", "endian": "little"}
    assert bt["char"]["kind"] == "char" and bt["_Bool"]["kind"] == "bool" and bt["double"]["kind"] == "float"
    assert bt["void"]["kind"] == "void"
    syms = isf["symbols"]
    assert "mod_fn" not in syms
    assert syms["cur_node"] == {
        "address": 0x10,
        "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "node"}},
    }
    assert syms["cur_node_global"] == {"address": 0xFFFFFFFF81200000}
    assert base64.b64decode(syms["linux_banner"]["constant_data"]) == b"Linux version 9.9.9 (x@y) #1\n\0"
    assert isf["metadata"]["format"] == "6.2.0" and isf["metadata"]["producer"]["kaslr_shift"] == "0x0"
    assert any("init_task" in n for n in notes)
    _schema_validate(isf)


def test_kaslr_and_kallsyms_parsing() -> None:
    assert link_time_text(None, 0xFFFFFFFF9E000000) == 0xFFFFFFFF81000000
    cfg = "CONFIG_X86_64=y\nCONFIG_PHYSICAL_START=0x1000000\nCONFIG_PHYSICAL_ALIGN=0x1000000\n"
    assert link_time_text(cfg) == 0xFFFFFFFF81000000
    assert link_time_text("CONFIG_X86_64=y\nCONFIG_PHYSICAL_START=0x1100000\nCONFIG_PHYSICAL_ALIGN=0x1000000\n") == (
        0xFFFFFFFF82000000
    )
    assert link_time_text("CONFIG_ARM64=y\n") is None
    syms = parse_kallsyms("ffffffff9e000000 T _text\nffffffff9e000000 T _text\nbad line\nzz T x\n0 t m\t[mod]\n")
    assert syms == {"_text": (0xFFFFFFFF9E000000, "T")}
    data, _ = every_kind_blob()
    isf = build_isf(data, "ffffffff9e000000 T _text\nffffffff9e100000 D init_task\n", "Linux version 1\n")
    assert isf["symbols"]["init_task"]["address"] == 0xFFFFFFFF81100000
    assert isf["metadata"]["producer"]["kaslr_shift"] == "0x1d000000"
    zeroed: list[str] = []
    build_isf(data, "0000000000000000 T _text\n0000000000000000 D init_task\n", "Linux version 1\n", notes=zeroed)
    assert any("addresses are 0" in n for n in zeroed)


def _fake_root(tmp_path: Path, btf: bytes | None) -> Path:
    (tmp_path / "proc" / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "proc" / "version").write_text("Linux version 9.9.9-test (b@h) (gcc) #1 SMP\n")
    (tmp_path / "proc" / "sys" / "kernel" / "osrelease").write_text("9.9.9-test\n")
    (tmp_path / "proc" / "kallsyms").write_text(
        "ffffffff81000000 T _text\nffffffff82000000 D init_task\nffffffff82100000 D linux_banner\n"
    )
    if btf is not None:
        (tmp_path / "sys" / "kernel" / "btf").mkdir(parents=True)
        (tmp_path / "sys" / "kernel" / "btf" / "vmlinux").write_bytes(btf)
    return tmp_path


def test_from_host_and_cli(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, every_kind_blob()[0])
    isf, notes = from_host(str(root))
    assert isf["symbols"]["linux_banner"]["address"] == 0xFFFFFFFF82100000
    assert any("kernel config" in n for n in notes)
    out = tmp_path / "out.json.xz"
    assert main(["--output", str(out), "--root", str(root)]) == 0
    with lzma.open(out) as fh:
        loaded = json.load(fh)
    assert loaded["user_types"]["node"]["size"] == 32


def test_from_host_without_btf(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, None)
    with pytest.raises(NoBTF) as exc:
        from_host(str(root))
    msg = str(exc.value)
    assert "dwarf2json" in msg and "--remote-isf-url" in msg and "debug" in msg
    assert main(["--output", str(tmp_path / "x.json.xz"), "--root", str(root)]) == 2


# ---------------------------------------------------------------------------------------------------------------
# Minimal JSON-schema checker (jsonschema is not a dependency) for volatility's own schema-6.2.0.json.


def _schema_validate(isf: dict[str, Any]) -> None:
    import volatility3.schemas

    path = Path(volatility3.schemas.__file__).parent / f"schema-{isf['metadata']['format']}.json"
    schema = json.loads(path.read_text())
    errors: list[str] = []
    _check(isf, schema, schema, "$", errors)
    assert not errors, errors[:10]


def _check(value: Any, rule: dict[str, Any], root: dict[str, Any], where: str, errors: list[str]) -> None:
    if "$ref" in rule:
        name = rule["$ref"].split("/")[-1]
        return _check(value, root["definitions"][name], root, where, errors)
    if "oneOf" in rule:
        matches = 0
        for alt in rule["oneOf"]:
            sub: list[str] = []
            _check(value, alt, root, where, sub)
            matches += not sub
        if matches != 1:
            errors.append(f"{where}: matches {matches} alternatives of oneOf")
        return None
    typ = rule.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool}
    if typ in checks and not isinstance(value, checks[typ]):
        errors.append(f"{where}: expected {typ}")
        return None
    if typ in ("integer", "number") and (isinstance(value, bool) or not isinstance(value, int | float)):
        errors.append(f"{where}: expected {typ}")
        return None
    if "pattern" in rule and isinstance(value, str) and not re.search(rule["pattern"], value):
        errors.append(f"{where}: {value!r} !~ {rule['pattern']}")
    if isinstance(value, dict):
        for req in rule.get("required", []):
            if req not in value:
                errors.append(f"{where}: missing {req}")
        props = rule.get("properties", {})
        extra = rule.get("additionalProperties", True)
        for key, sub in value.items():
            if key in props:
                _check(sub, props[key], root, f"{where}.{key}", errors)
            elif extra is False:
                errors.append(f"{where}: unexpected key {key}")
            elif isinstance(extra, dict):
                _check(sub, extra, root, f"{where}.{key}", errors)
    if isinstance(value, list) and "items" in rule:
        for i, item in enumerate(value):
            _check(item, rule["items"], root, f"{where}[{i}]", errors)
    return None


# ---------------------------------------------------------------------------------------------------------------
# The real kernel: BTF from the fixture bzImage vs. the dwarf2json ISF built from the same kernel's debug info.


def _require_fixture() -> None:
    if not (VMLINUZ.exists() and REF_ISF.exists()):
        reason = f"kernel fixture not found under {FIXTURE}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (required when CI=true)")
        pytest.skip(reason)
    try:
        import cramjam  # noqa: F401  # the Debian kernel is LZ4-compressed
    except ImportError:
        pytest.skip("cramjam (LZ4) unavailable to unpack the fixture bzImage")


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    _require_fixture()
    with lzma.open(REF_ISF) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def built(reference: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    btf = bytes(B.btf_from_blob(VMLINUZ.read_bytes()))
    lines = []
    for name, sym in reference["symbols"].items():
        if not name:
            continue
        addr = sym["address"]
        if addr >= 0xFFFFFFFF80000000:
            addr += FAKE_SHIFT  # pretend the host booted with a KASLR slide
        lines.append(f"{addr:016x} T {name}")
    lines.append("ffffffffc0a00000 t dummy_xmit\t[dummy]")
    banner = base64.b64decode(reference["symbols"]["linux_banner"]["constant_data"]).rstrip(b"\0").decode()
    notes: list[str] = []
    isf = build_isf(btf, "\n".join(lines) + "\n", banner, kernel_config=CONFIG.read_text(), notes=notes)
    assert notes == []
    return isf


def _norm(t: Any) -> Any:
    """Type descriptor with anonymous names blanked and nested arrays flattened (pahole flattens them in BTF)."""
    if not isinstance(t, dict):
        return t
    if t.get("kind") == "array":
        count, sub = t["count"], t["subtype"]
        while isinstance(sub, dict) and sub.get("kind") == "array":
            count, sub = count * sub["count"], sub["subtype"]
        return {"kind": "array", "count": count, "subtype": _norm(sub)}
    return {k: ("unnamed" if k == "name" and v.startswith("unnamed_") else _norm(v)) for k, v in t.items()}


CORE_TYPES = [
    "task_struct",
    "mm_struct",
    "list_head",
    "hlist_head",
    "module",
    "sock",
    "inet_sock",
    "unix_sock",
    "socket",
    "files_struct",
    "fdtable",
    "file",
    "dentry",
    "qstr",
    "inode",
    "super_block",
    "vfsmount",
    "mount",
    "cred",
    "vm_area_struct",
    "net",
    "pid",
    "upid",
    "fs_struct",
    "path",
    "maple_tree",
    "kobject",
    "timekeeper",
    "sock_common",
    "page",
    "atomic_t",
    "spinlock_t",
    "pgd_t",
]


@pytest.mark.parametrize("name", CORE_TYPES)
def test_core_layouts_match_dwarf2json(built: dict[str, Any], reference: dict[str, Any], name: str) -> None:
    ours, ref = built["user_types"][name], reference["user_types"][name]
    assert ours["size"] == ref["size"] and ours["kind"] == ref["kind"]
    assert ours["fields"].keys() == ref["fields"].keys()
    for field, spec in ref["fields"].items():
        got = ours["fields"][field]
        assert got["offset"] == spec["offset"], field
        assert _norm(got["type"]) == _norm(spec["type"]), field
        assert got.get("anonymous", False) == spec.get("anonymous", False), field


def test_whole_isf_close_to_dwarf2json(built: dict[str, Any], reference: dict[str, Any]) -> None:
    ours, ref = built["user_types"], reference["user_types"]
    assert len(ours) == len(ref)
    assert {k for k in ours if not k.startswith("unnamed_")} == {k for k in ref if not k.startswith("unnamed_")}
    same_size = sum(k in ours and ours[k]["size"] == ref[k]["size"] for k in ref)
    assert same_size >= len(ref) - 10  # a handful of distinct structs share a name (e.g. irq_info)
    anon_ref = {k for k in ref if k.startswith("unnamed_")}
    anon_ours = {k for k in ours if k.startswith("unnamed_")}
    assert len(anon_ours & anon_ref) / len(anon_ref) > 0.99  # only flattened multi-dim arrays differ
    assert built["enums"].keys() == reference["enums"].keys()
    assert sum(built["enums"][k] == v for k, v in reference["enums"].items()) == len(reference["enums"])
    assert built["base_types"]["pointer"] == reference["base_types"]["pointer"]
    for name, spec in built["base_types"].items():
        if name in reference["base_types"]:
            assert spec == reference["base_types"][name], name


def test_symbols_and_banner(built: dict[str, Any], reference: dict[str, Any]) -> None:
    ours, ref = built["symbols"], reference["symbols"]
    assert ours["linux_banner"]["constant_data"] == ref["linux_banner"]["constant_data"]
    assert ours["linux_banner"] == ref["linux_banner"]
    assert built["metadata"]["producer"]["kaslr_shift"] == hex(FAKE_SHIFT)
    assert "dummy_xmit" not in ours
    wrong = [n for n, s in ref.items() if n and ours[n]["address"] != s["address"]]
    assert wrong == []
    for name in ("init_task", "init_mm", "init_files", "modules", "init_top_pgt", "_text", "current_task", "runqueues"):
        assert _norm(ours[name]["type"]) == _norm(ref[name]["type"]), name
    typed = [n for n in ours if "type" in ours[n]]
    mismatched = [n for n in typed if _norm(ours[n]["type"]) != _norm(ref[n].get("type"))]
    # cleanup_list: two globals of that name; taint_flags: count is a #define absent from BTF
    assert set(mismatched) <= {"cleanup_list", "taint_flags"}, mismatched
    _schema_validate(built)


def test_volatility_loads_built_isf(built: dict[str, Any], reference: dict[str, Any], tmp_path: Path) -> None:
    import volatility3.framework.symbols.linux.extensions.network  # noqa: F401  # registers extensions.network
    from volatility3.framework import contexts
    from volatility3.framework.layers.physical import BufferDataLayer
    from volatility3.framework.symbols.linux import LinuxKernelIntermedSymbols

    path = tmp_path / "linux" / "btf-6.1.0-56-cloud-amd64.json.xz"
    path.parent.mkdir()
    write_isf(built, str(path))
    ctx = contexts.Context()
    table = LinuxKernelIntermedSymbols(ctx, "test.kernel", name="kernel", isf_url=path.as_uri())
    ctx.symbol_space.append(table)

    task = ctx.symbol_space.get_type("kernel!task_struct")
    assert task.size == reference["user_types"]["task_struct"]["size"]
    assert task.relative_child_offset("comm") == reference["user_types"]["task_struct"]["fields"]["comm"]["offset"]
    # 6.2 format flattens anonymous members into the parent
    assert task.has_member("__state") and task.has_member("pid")
    init_task = ctx.symbol_space.get_symbol("kernel!init_task")
    assert init_task.address == reference["symbols"]["init_task"]["address"]
    assert init_task.type.vol.type_name.endswith("task_struct")
    assert table.get_symbol("linux_banner").constant_data.startswith(b"Linux version 6.1.0-56-cloud-amd64")

    # Read real objects through the table from an in-memory layer: a two-node list_head ring.
    buf = struct.pack("<QQQQ", 0x10, 0x10, 0x0, 0x0)
    ctx.layers.add_layer(BufferDataLayer(ctx, "test.buf", "buf", buf))
    head = ctx.object("kernel!list_head", "buf", 0)
    assert head.next == 0x10 and head.prev == 0x10

    from volatility3.framework.automagic.symbol_cache import LinuxIdentifier

    with lzma.open(path) as fh:
        identifier = LinuxIdentifier.get_identifier(json.load(fh))
    assert identifier == base64.b64decode(reference["symbols"]["linux_banner"]["constant_data"])


# ---------------------------------------------------------------------------------------------------------------
# Too little memory on the host: the inputs are shipped and analyze builds the same table from them.


def _symbols_items(root: Path, **options: Any) -> list[Any]:
    from collectors.base import Context
    from collectors.symbols import collector as symbols

    return list(symbols.collect(Context(root=str(root), live=True, options=options)))


def _meminfo(root: Path, available_kib: int) -> None:
    (root / "proc" / "meminfo").write_text(f"MemTotal:       524288 kB\nMemAvailable:   {available_kib} kB\n")


def test_symbols_built_when_memory_suffices(tmp_path: Path) -> None:
    from collectors.base import Blob, Record

    root = _fake_root(tmp_path, every_kind_blob()[0])
    _meminfo(root, 8 << 20)
    items = _symbols_items(root)
    record = next(i.data for i in items if isinstance(i, Record))
    assert record["status"] == "built" and record["release"] == "9.9.9-test", record
    assert [i.name for i in items if isinstance(i, Blob)] == ["symbols/linux/9.9.9-test-btf.json.xz"]


def test_symbols_deferred_when_memory_is_short(tmp_path: Path) -> None:
    """MemAvailable below BTF size x factor + headroom: no build on the host; the BTF, kallsyms, banner and
    config are shipped, and analyze's extract_symbols builds a table identical to the host-built one."""
    import tarfile

    from agent.analysis.analyze import extract_symbols
    from collectors.base import Blob, Record
    from collectors.symbols import collector as symbols

    btf = every_kind_blob()[0]
    root = _fake_root(tmp_path / "root", btf)
    (root / "boot").mkdir()
    (root / "boot" / "config-9.9.9-test").write_text("CONFIG_PHYSICAL_START=0x1000000\n")
    _meminfo(root, 90 * 1024)  # 90 MiB available: under the 96 MiB that must stay free
    items = _symbols_items(root, headroom_mb=96, memory_per_btf_byte=symbols.MEMORY_PER_BTF_BYTE)
    record = next(i.data for i in items if isinstance(i, Record))
    assert record["status"] == "deferred" and "MiB available" in record["reason"], record
    assert record["inputs"] == ["vmlinux.btf", "kallsyms", "version", "config"], record
    blobs = {i.name: i.data for i in items if isinstance(i, Blob)}
    folder = "symbols/linux/9.9.9-test-btf.inputs"
    assert blobs[f"{folder}/vmlinux.btf"] == btf
    assert blobs[f"{folder}/kallsyms"] == (root / "proc" / "kallsyms").read_bytes()
    assert not any(n.endswith(".json.xz") for n in blobs)

    bundle = tmp_path / "bundle.tar"
    with tarfile.open(bundle, "w") as tar:
        for name, data in blobs.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    work = tmp_path / "work"
    work.mkdir()
    folders = extract_symbols(str(bundle), str(work))
    assert len(folders) == 1
    built_here = Path(folders[0]) / "linux" / "9.9.9-test-btf.json.xz"
    with lzma.open(built_here) as fh:
        deferred = json.load(fh)
    on_host, _notes = from_host(str(root))
    for isf in (deferred, on_host):
        isf["metadata"]["producer"].pop("datetime")
    assert deferred == on_host


def test_deferred_inputs_that_do_not_parse_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import tarfile

    from agent.analysis.analyze import extract_symbols

    bundle = tmp_path / "bundle.tar"
    with tarfile.open(bundle, "w") as tar:
        for name, data in (("vmlinux.btf", b"\x9f\xeb\x01\x00garbage"), ("version", b"Linux version 1\n")):
            info = tarfile.TarInfo(f"symbols/linux/1-btf.inputs/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert extract_symbols(str(bundle), str(tmp_path)) == []
    assert "could not be built from 1-btf.inputs" in capsys.readouterr().err
