"""Build a volatility3 symbol table (ISF) on the suspect host from BTF + kallsyms + the kernel banner.

Memory analysis of Linux needs an ISF whose ``linux_banner`` matches the running kernel byte for byte.  Distribution
kernels rarely ship DWARF, but every modern kernel carries BTF (/sys/kernel/btf/vmlinux); combined with
/proc/kallsyms (addresses) and /proc/version (the banner) that is enough for volatility's Linux plugins.

The output mimics dwarf2json 0.9 (format 6.2.0) so that volatility treats it the same way:

* typedefs resolve to their target, except a typedef of a struct/union, which dwarf2json emits as a struct of the
  typedef's name (``pgd_t``, ``spinlock_t``...);
* anonymous structs/unions/enums are named ``unnamed_<sha1 prefix>`` of a Go ``debug/dwarf``-style definition
  string, and anonymous members become ``unnamed_field_<n>`` with ``"anonymous": true`` (volatility 6.2 flattens
  those into the parent);
* ``linux_banner`` carries ``constant_data`` = banner + NUL, exactly like dwarf2json.

BTF only describes per-cpu variables, so types of other globals come from a curated table of the symbols that
volatility's plugins read via ``object_from_symbol``.  Other symbols have an address only.

CLI: ``python -m collectors.symbols.isf --output FILE.json.xz [--root DIR] [--btf FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import lzma
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from collectors.symbols.btf import (
    BTF,
    INT_BOOL,
    INT_CHAR,
    INT_SIGNED,
    KIND_ARRAY,
    KIND_CONST,
    KIND_DATASEC,
    KIND_ENUM,
    KIND_ENUM64,
    KIND_FLOAT,
    KIND_FUNC,
    KIND_FUNC_PROTO,
    KIND_FWD,
    KIND_INT,
    KIND_PTR,
    KIND_RESTRICT,
    KIND_STRUCT,
    KIND_TYPE_TAG,
    KIND_TYPEDEF,
    KIND_UNION,
    KIND_VAR,
    KIND_VOLATILE,
    BTFError,
    btf_from_blob,
    parse_btf,
    vmlinux_from_bzimage,
)

__all__ = [
    "ISF_FORMAT",
    "NoBTF",
    "PRODUCER_NAME",
    "build_isf",
    "from_host",
    "kaslr_shift_from_kallsyms",
    "link_time_text",
    "main",
    "parse_kallsyms",
    "write_isf",
]

ISF_FORMAT = "6.2.0"
PRODUCER_NAME = "triagent-btf2isf"
PRODUCER_VERSION = "1.0"

X86_64_START_KERNEL_MAP = 0xFFFFFFFF80000000
X86_32_PAGE_OFFSET = 0xC0000000
DEFAULT_PHYSICAL_START = 0x1000000
DEFAULT_PHYSICAL_ALIGN = 0x200000
# arm64 links _text at KIMAGE_VADDR = MODULES_END = _PAGE_END(VA_BITS_MIN) + MODULES_VSIZE (128 MiB of modules
# area before Linux 6.5, 2 GiB since), and _stext one SEGMENT_ALIGN (64 KiB) after it.
ARM64_MODULES_VSIZE_OLD, ARM64_MODULES_VSIZE = 0x8000000, 0x80000000
ARM64_STEXT_OFFSET = 0x10000

Desc = dict[str, Any]

# Types of globals that volatility3 plugins/automagic read through object_from_symbol()/get_symbol().type.  BTF
# only covers per-cpu variables, so without this table e.g. pslist fails on "init_task has no associated type".
# Syntax: "[struct|union|enum ]NAME" followed by any of "*", "[N]", "[]" (applied left to right, so "T*[4]" is an
# array of 4 pointers), "func" for a function, "struct {a;b}" for the anonymous struct with exactly those members,
# and "[NR_CPUS]" for CONFIG_NR_CPUS.  An entry is skipped when its type is missing from the kernel's BTF.
SYMBOL_TYPES: dict[str, str] = {
    "init_task": "struct task_struct",
    "init_mm": "struct mm_struct",
    "init_files": "struct files_struct",
    "init_fs": "struct fs_struct",
    "init_nsproxy": "struct nsproxy",
    "init_pid_ns": "struct pid_namespace",
    "init_net": "struct net",
    "init_user_ns": "struct user_namespace",
    "init_cred": "struct cred",
    "init_uts_ns": "struct uts_namespace",
    "modules": "struct list_head",
    "net_namespace_list": "struct list_head",
    "bpf_kallsyms": "struct list_head",
    "ftrace_mod_maps": "struct list_head",
    "ftrace_ops_trampoline_list": "struct list_head",
    "tty_drivers": "struct list_head",
    "super_blocks": "struct list_head",
    "vmap_area_list": "struct list_head",
    "ftrace_list_end": "struct ftrace_ops",
    "ftrace_ops_list": "struct ftrace_ops*",
    "_text": "char[]",
    "_stext": "char[]",
    "_etext": "char[]",
    "_sdata": "char[]",
    "_edata": "char[]",
    "_end": "char[]",
    "_sinittext": "char[]",
    "_einittext": "char[]",
    "__start___tracepoints_ptrs": "int[]",
    "__stop___tracepoints_ptrs": "int[]",
    "linux_banner": "char[]",
    "cap_last_cap": "int",
    "idt_table": "gate_desc[256]",
    "iomem_resource": "struct resource",
    "ioport_resource": "struct resource",
    "kallsyms_num_syms": "unsigned int",
    "keyboard_notifier_list": "struct atomic_notifier_head",
    "log_buf": "char*",
    "log_buf_len": "unsigned int",
    "log_end": "unsigned int",
    "log_first_idx": "unsigned int",
    "log_next_idx": "unsigned int",
    "mem_section": "struct mem_section**",
    "mem_map": "struct page*",
    "mod_tree": "struct mod_tree_root",
    "module_kset": "struct kset*",
    "module_addr_min": "long unsigned int",
    "module_addr_max": "long unsigned int",
    "node_data": "pg_data_t*[]",
    "num_registered_fb": "int",
    "registered_fb": "struct fb_info*[32]",
    "prb": "struct printk_ringbuffer*",
    "prog_idr": "struct idr",
    "socket_file_ops": "struct file_operations",
    "sockfs_dentry_operations": "struct dentry_operations",
    "taint_flags": "struct taint_flag[]",
    "tk_core": "struct {seq;timekeeper}",
    "timekeeper": "struct timekeeper",
    "pid_hash": "struct hlist_head*",
    "pidhash_shift": "unsigned int",
    "init_top_pgt": "pgd_t[]",
    "init_level4_pgt": "pgd_t[]",
    "swapper_pg_dir": "pgd_t[]",
    "pkmap_count": "int[]",
    "sys_call_table": "func*[]",
    "ia32_sys_call_table": "func*[]",
    "x32_sys_call_table": "func*[]",
    "vmemmap_base": "long unsigned int",
    "page_offset_base": "long unsigned int",
    "vmalloc_base": "long unsigned int",
    "phys_base": "long unsigned int",
    "jiffies": "long unsigned int",
    "max_pfn": "long unsigned int",
    "high_memory": "void*",
    "__per_cpu_offset": "long unsigned int[NR_CPUS]",
    "nr_cpu_ids": "unsigned int",
    "pid_max": "int",
    "tcp_hashinfo": "struct inet_hashinfo",
    "unix_socket_table": "struct hlist_head[]",
    "file_systems": "struct file_system_type*",
    "init_css_set": "struct css_set",
    "kprobe_table": "struct hlist_head[64]",
}


_SPEC_RE = re.compile(r"\s*(?:(struct|union|enum)\s+)?(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_ ]*?)\s*((?:\*|\[\w*\])*)\s*")


class NoBTF(RuntimeError):
    """The kernel exposes no BTF, so no ISF can be built on the host."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"{detail}. Without BTF the kernel's types must come from elsewhere: install the matching debug package "
            "(e.g. linux-image-$(uname -r)-dbg / kernel-debuginfo) and run dwarf2json on its vmlinux together with "
            "System.map, or point volatility3 at an ISF server (--remote-isf-url) that has this kernel's banner."
        )


# ---------------------------------------------------------------------------------------------------------------
# kallsyms and KASLR


def parse_kallsyms(text: str) -> dict[str, tuple[int, str]]:
    """Map core-kernel symbol name -> (address, nm type letter); module symbols are skipped, first name wins."""
    out: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or (len(parts) > 3 and parts[3].startswith("[")):
            continue
        name = parts[2]
        if name in out:
            continue
        try:
            out[name] = (int(parts[0], 16), parts[1])
        except ValueError:
            continue
    return out


def _config_value(kernel_config: str | None, key: str) -> str | None:
    if not kernel_config:
        return None
    m = re.search(rf"^{re.escape(key)}=(.*)$", kernel_config, re.MULTILINE)
    return m.group(1).strip().strip('"') if m else None


def _config_int(kernel_config: str | None, key: str) -> int | None:
    val = _config_value(kernel_config, key)
    if val is None:
        return None
    try:
        return int(val, 0)
    except ValueError:
        return None


def _release_tuple(release: str | None) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def arm64_kimage_vaddr(kernel_config: str | None, release: str | None) -> int | None:
    """Where arm64 links its kernel image (``_text``), from CONFIG_ARM64_VA_BITS and the kernel's version;
    None when the version is unknown (the modules area before the image changed size in 6.5)."""
    version = _release_tuple(release)
    if version is None:
        return None
    va_bits = _config_int(kernel_config, "CONFIG_ARM64_VA_BITS") or 48
    va_bits_min = min(va_bits, 48)  # 52-bit kernels still place the image for 48 (VA_BITS_MIN)
    page_end = (1 << 64) - (1 << (va_bits_min - 1))
    return page_end + (ARM64_MODULES_VSIZE if version >= (6, 5) else ARM64_MODULES_VSIZE_OLD)


def link_time_text(kernel_config: str | None = None, runtime_text: int | None = None,
                   release: str | None = None) -> int | None:
    """The address ``_text`` had at link time, or None when the architecture is not understood.

    x86 links the kernel at START_KERNEL_map + LOAD_PHYSICAL_ADDR, where LOAD_PHYSICAL_ADDR is
    CONFIG_PHYSICAL_START rounded up to CONFIG_PHYSICAL_ALIGN; arm64 at KIMAGE_VADDR (see
    :func:`arm64_kimage_vaddr`; ``release`` is the kernel's, e.g. 6.1.0-57-cloud-arm64).
    """
    if _config_value(kernel_config, "CONFIG_ARM64") == "y":
        return arm64_kimage_vaddr(kernel_config, release)
    start = _config_int(kernel_config, "CONFIG_PHYSICAL_START") or DEFAULT_PHYSICAL_START
    align = _config_int(kernel_config, "CONFIG_PHYSICAL_ALIGN") or DEFAULT_PHYSICAL_ALIGN
    load_phys = (start + align - 1) & ~(align - 1)
    if kernel_config is not None:
        if _config_value(kernel_config, "CONFIG_X86_64") == "y":
            return X86_64_START_KERNEL_MAP + load_phys
        if _config_value(kernel_config, "CONFIG_X86_32") == "y":
            return X86_32_PAGE_OFFSET + load_phys
        return None
    if runtime_text is not None and runtime_text >= X86_64_START_KERNEL_MAP:
        return X86_64_START_KERNEL_MAP + load_phys
    return None


def kaslr_shift_from_kallsyms(
    symbols: dict[str, tuple[int, str]], kernel_config: str | None = None, release: str | None = None
) -> tuple[int, list[str]]:
    """KASLR slide of the running kernel: runtime ``_text`` minus its link-time address."""
    notes: list[str] = []
    text = symbols.get("_text") or symbols.get("_stext")
    if text is None:
        notes.append("kallsyms has no _text/_stext; assuming no KASLR shift")
        return 0, notes
    linked = link_time_text(kernel_config, text[0], release)
    if linked is None:
        notes.append("unknown architecture for KASLR correction; addresses left as in kallsyms")
        return 0, notes
    if "_text" not in symbols and _config_value(kernel_config, "CONFIG_ARM64") == "y":
        # arm64 without CONFIG_KALLSYMS_ALL lists _stext only (x86 puts both at the same address)
        linked += ARM64_STEXT_OFFSET
    shift = text[0] - linked
    align = _config_int(kernel_config, "CONFIG_PHYSICAL_ALIGN") or DEFAULT_PHYSICAL_ALIGN
    if shift % align:
        notes.append(f"KASLR shift {shift:#x} is not a multiple of PHYSICAL_ALIGN {align:#x}; check kernel config")
    return shift, notes


# ---------------------------------------------------------------------------------------------------------------
# BTF -> ISF conversion


class _Converter:
    def __init__(self, btf: BTF) -> None:
        self.btf = btf
        self.types = btf.types
        self.endian = btf.endian
        self._desc: dict[int, Desc] = {}
        self._go: dict[int, str] = {}
        self._anon: dict[int, str] = {}

    # -- naming ---------------------------------------------------------------------------------------------
    # dwarf2json names anonymous aggregates after sha1(Go debug/dwarf Type.String()/Defn()); reproducing that
    # string keeps our names stable across hosts and, where BTF carries the same facts as DWARF, equal to theirs.

    def go_string(self, tid: int) -> str:
        cached = self._go.get(tid)
        if cached is not None:
            return cached
        t = self.types[tid]
        k = t.kind
        if tid == 0:
            s = "void"
        elif k in (KIND_INT, KIND_FLOAT, KIND_TYPEDEF):
            s = t.name
        elif k == KIND_PTR:
            s = "*" + self.go_string(t.type)
        elif k == KIND_ARRAY:
            s = f"[{t.nelems}]" + self.go_string(t.elem_type)
        elif k in (KIND_STRUCT, KIND_UNION):
            kind = "struct" if k == KIND_STRUCT else "union"
            s = f"{kind} {t.name}" if t.name else self.go_defn(tid)
        elif k == KIND_FWD:
            s = ("union " if t.kind_flag else "struct ") + t.name
        elif k in (KIND_ENUM, KIND_ENUM64):
            s = self._go_enum(tid)
        elif k == KIND_CONST:
            s = "const " + self.go_string(t.type)
        elif k == KIND_VOLATILE:
            s = "volatile " + self.go_string(t.type)
        elif k == KIND_RESTRICT:
            s = "restrict " + self.go_string(t.type)
        elif k == KIND_FUNC_PROTO:
            params = ["..." if p.type == 0 and not p.name else self.go_string(p.type) for p in t.params]
            s = "func(" + ", ".join(params) + ") " + self.go_string(t.type)
        elif k in (KIND_TYPE_TAG, KIND_VAR, KIND_FUNC):
            s = self.go_string(t.type)
        else:
            s = "?"
        self._go[tid] = s
        return s

    def go_defn(self, tid: int) -> str:
        t = self.types[tid]
        parts = []
        for m in t.members:
            if m.bitfield_size:
                parts.append(f"{m.name} {self.go_string(m.type)}@0 : {m.bitfield_size}@{m.bit_offset}")
            else:
                parts.append(f"{m.name} {self.go_string(m.type)}@{m.bit_offset // 8}")
        kind = "struct" if t.kind == KIND_STRUCT else "union"
        head = f"{kind} {t.name}" if t.name else kind
        return head + " {" + "; ".join(parts) + "}"

    def _go_enum(self, tid: int) -> str:
        t = self.types[tid]
        head = f"enum {t.name}" if t.name else "enum"
        return head + " {" + "; ".join(f"{v.name}={_go_int(v.value, t.size)}" for v in t.values) + "}"

    def agg_name(self, tid: int) -> str:
        t = self.types[tid]
        if t.name:
            return t.name
        name = self._anon.get(tid)
        if name is None:
            text = self._go_enum(tid) if t.kind in (KIND_ENUM, KIND_ENUM64) else self.go_defn(tid)
            name = "unnamed_" + hashlib.sha1(text.encode()).hexdigest()[:16]
            self._anon[tid] = name
        return name

    # -- type descriptors -----------------------------------------------------------------------------------

    def desc(self, tid: int) -> Desc:
        cached = self._desc.get(tid)
        if cached is not None:
            return cached
        t = self.types[tid]
        k = t.kind
        d: Desc
        if tid == 0:
            d = {"kind": "base", "name": "void"}
        elif k in (KIND_INT, KIND_FLOAT):
            d = {"kind": "base", "name": t.name}
        elif k == KIND_PTR:
            d = {"kind": "pointer", "subtype": self.desc(t.type)}
        elif k == KIND_ARRAY:
            d = {"count": t.nelems, "kind": "array", "subtype": self.desc(t.elem_type)}
        elif k == KIND_STRUCT:
            d = {"kind": "struct", "name": self.agg_name(tid)}
        elif k == KIND_UNION:
            d = {"kind": "union", "name": self.agg_name(tid)}
        elif k == KIND_FWD:
            d = {"kind": "union" if t.kind_flag else "struct", "name": t.name}
        elif k in (KIND_ENUM, KIND_ENUM64):
            d = {"kind": "enum", "name": self.agg_name(tid)}
        elif k == KIND_TYPEDEF:
            target = self.types[t.type]
            if target.kind in (KIND_STRUCT, KIND_UNION, KIND_FWD):
                kind = (
                    "union" if target.kind == KIND_UNION or (target.kind == KIND_FWD and target.kind_flag) else "struct"
                )
                d = {"kind": kind, "name": t.name}
            else:
                d = self.desc(t.type)
        elif k in (KIND_CONST, KIND_VOLATILE, KIND_RESTRICT, KIND_TYPE_TAG, KIND_VAR):
            d = self.desc(t.type)
        elif k in (KIND_FUNC_PROTO, KIND_FUNC):
            d = {"kind": "function"}
        else:
            raise BTFError(f"type id {tid} ({t.kind_name}) cannot be used as a data type")
        self._desc[tid] = d
        return d

    def base_types(self) -> dict[str, Desc]:
        out: dict[str, Desc] = {}
        for t in self.types:
            if t.kind == KIND_INT and t.name not in out:
                if t.encoding & INT_BOOL:
                    kind = "bool"
                elif t.encoding & INT_CHAR or (t.size == 1 and "char" in t.name):
                    kind = "char"
                else:
                    kind = "int"
                # dwarf2json marks _Bool signed; follow it so both producers give identical templates
                signed = bool(t.encoding & INT_SIGNED) or kind == "bool"
                out[t.name] = {"size": t.size, "signed": signed, "kind": kind, "endian": self.endian}
            elif t.kind == KIND_FLOAT and t.name not in out:
                out[t.name] = {"size": t.size, "signed": True, "kind": "float", "endian": self.endian}
        ptr_size = 8
        for cand in ("long unsigned int", "long int"):
            if cand in out:
                ptr_size = out[cand]["size"]
                break
        out["pointer"] = {"size": ptr_size, "signed": False, "kind": "int", "endian": self.endian}
        out["void"] = {"size": 0, "signed": False, "kind": "void", "endian": self.endian}
        return dict(sorted(out.items()))

    def _bitfield(self, m_type: int, bit_offset: int, bits: int, field_base: int) -> tuple[int, Desc]:
        inner = self.desc(m_type)
        if self.endian == "little":
            byte_off, bit_pos = bit_offset // 8, bit_offset % 8
        else:
            # Volatility counts bit_position from the LSB of the storage unit; BTF counts from the MSB end.
            unit = max(self.btf.resolve(m_type).size, 1)
            byte_off = (bit_offset // (unit * 8)) * unit
            bit_pos = unit * 8 - (bit_offset - byte_off * 8) - bits
        typ = {"bit_length": bits, "bit_position": bit_pos, "kind": "bitfield", "type": inner}
        return field_base + byte_off, typ

    def user_type(self, tid: int) -> Desc:
        t = self.types[tid]
        fields: dict[str, Desc] = {}
        anon = 0
        for m in t.members:
            bits = m.bitfield_size
            bit_offset = m.bit_offset
            if not bits:
                # Pre-kind_flag BTF encodes bitfields in the INT type itself.
                mt = self.btf.resolve(m.type)
                if mt.kind == KIND_INT and (mt.int_offset or mt.bits != mt.size * 8):
                    bits = mt.bits
                    bit_offset += mt.int_offset
            if bits:
                offset, typ = self._bitfield(m.type, bit_offset, bits, 0)
                field: Desc = {"type": typ, "offset": offset}
            else:
                field = {"type": self.desc(m.type), "offset": bit_offset // 8}
            name = m.name
            if not name:
                name = f"unnamed_field_{anon:x}"
                anon += 1
                field["anonymous"] = True
            fields[name] = field
        return {"size": t.size, "fields": fields, "kind": "struct" if t.kind == KIND_STRUCT else "union"}

    def user_types(self) -> dict[str, Desc]:
        out: dict[str, Desc] = {}
        built: dict[int, Desc] = {}
        for t in self.types:
            if t.kind in (KIND_STRUCT, KIND_UNION):
                name = self.agg_name(t.id)
                if name not in out:
                    built[t.id] = out[name] = self.user_type(t.id)
        for t in self.types:
            if t.kind == KIND_TYPEDEF and t.name not in out:
                target = self.types[t.type]
                if target.kind in (KIND_STRUCT, KIND_UNION):
                    out[t.name] = built.get(target.id) or self.user_type(target.id)
        return out

    def enums(self, base_types: dict[str, Desc]) -> dict[str, Desc]:
        int_bases = [(n, b) for n, b in sorted(base_types.items()) if b["kind"] == "int"]
        out: dict[str, Desc] = {}
        for t in self.types:
            if t.kind not in (KIND_ENUM, KIND_ENUM64):
                continue
            name = self.agg_name(t.id)
            if name in out:
                continue
            if not t.values:
                # A declaration-only enum: dwarf2json emits it sizeless and baseless, so do we.
                out[name] = {"size": 0, "base": "void", "constants": {}}
                continue
            constants = {v.name: _go_int(v.value, t.size) for v in t.values}
            signed = any(v < 0 for v in constants.values())
            base = next((n for n, b in int_bases if b["size"] == t.size and b["signed"] == signed), "void")
            out[name] = {"size": t.size, "base": base, "constants": constants}
        return out

    # -- curated symbol types -------------------------------------------------------------------------------

    def spec_desc(self, spec: str, nr_cpus: int) -> Desc | None:
        m = re.fullmatch(
            r"\s*(?:(struct|union|enum)\s+)?(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_ ]*?)\s*((?:\*|\[\w*\])*)\s*", spec
        )
        if not m:
            return None
        kw, name, suffix = m.groups()
        base: Desc | None
        if name.startswith("{"):
            wanted = [x.strip() for x in name[1:-1].split(";") if x.strip()]
            kind = KIND_UNION if kw == "union" else KIND_STRUCT
            tid = next(
                (t.id for t in self.types if t.kind == kind and not t.name and [x.name for x in t.members] == wanted),
                None,
            )
            base = self.desc(tid) if tid is not None else None
        elif name == "func":
            base = {"kind": "function"}
        elif name == "void":
            base = {"kind": "base", "name": "void"}
        elif kw in ("struct", "union"):
            kinds = (KIND_STRUCT, KIND_FWD) if kw == "struct" else (KIND_UNION, KIND_FWD)
            found = [t for t in self.btf.by_name(name) if t.kind in kinds]
            base = {"kind": kw, "name": name} if found else None
        elif kw == "enum":
            found = [t for t in self.btf.by_name(name) if t.kind in (KIND_ENUM, KIND_ENUM64)]
            base = self.desc(found[0].id) if found else None
        else:
            found = [t for t in self.btf.by_name(name) if t.kind in (KIND_INT, KIND_FLOAT, KIND_TYPEDEF)]
            base = self.desc(found[0].id) if found else None
        if base is None:
            return None
        for tok in re.findall(r"\*|\[\w*\]", suffix):
            if tok == "*":
                base = {"kind": "pointer", "subtype": base}
            else:
                inner = tok[1:-1]
                count = nr_cpus if inner == "NR_CPUS" else int(inner) if inner else 0
                base = {"count": count, "kind": "array", "subtype": base}
        return base


def _go_int(value: int, size: int) -> int:
    """dwarf2json holds enum constants in Go int64s, so 64-bit values above INT64_MAX come out negative."""
    return value - (1 << 64) if size == 8 and value >= 1 << 63 else value


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def build_isf(
    btf: bytes | memoryview,
    kallsyms: str,
    banner: str | bytes,
    *,
    kernel_config: str | None = None,
    kaslr_shift: int | None = None,
    notes: list[str] | None = None,
    kernel_memory: Callable[[], tuple[Any, list[int]]] | None = None,
) -> dict[str, Any]:
    """Build an ISF dict (volatility3 format 6.2.0) from raw BTF, /proc/kallsyms text and /proc/version.

    ``btf`` may also be an ELF vmlinux or bzImage (its .BTF section is used).  ``kaslr_shift`` overrides the
    slide derived from kallsyms ``_text``.  Human-readable warnings are appended to ``notes`` when given.
    ``kernel_memory`` opens the running kernel's memory (a /proc/kcore reader and the addresses of the loaded
    modules' ``struct module``): it is called only when kallsyms lacks the data symbols volatility needs
    (a kernel without CONFIG_KALLSYMS_ALL), which are then found there (collectors.memory.kcore) and the
    KASLR slide taken from its VMCOREINFO.  Raises BTFError for unusable BTF.
    """
    notes = notes if notes is not None else []
    btf_digest, parsed, conv, (base_types, user_types, enums) = _convert_btf(btf)

    syms = parse_kallsyms(kallsyms)
    kallsyms_digest = _sha256(kallsyms)
    if syms and all(addr == 0 for addr, _ in syms.values()):
        notes.append("all kallsyms addresses are 0 (not root, or kptr_restrict=2): symbol addresses are unusable")
    banner_bytes = banner.encode("latin-1") if isinstance(banner, str) else bytes(banner)
    recovered, memory_shift = _recover(syms, user_types, banner_bytes, kernel_memory, notes)
    if kaslr_shift is None:
        kaslr_shift = _choose_kaslr_shift(syms, kernel_config, memory_shift, notes, _banner_release(banner_bytes))

    typed = _global_types(parsed, conv, syms, kernel_config)
    # The parsed BTF is the biggest thing we hold (~60 MB for a distribution kernel): gone before the
    # symbol table (another ~50 MB) is built, so the peak is one of them, not both.
    del conv, parsed

    symbols = _unslid_symbols(syms, typed, kaslr_shift)
    missing = [needed for needed in ("init_task", "init_files", "init_mm") if needed not in syms]
    has_dtb = any(n in syms for n in ("init_top_pgt", "init_level4_pgt", "swapper_pg_dir"))
    del syms

    _add_banner(symbols, banner_bytes, notes)
    for needed in missing:
        notes.append(f"{needed} missing from kallsyms; volatility's Linux automagic needs it")
    if not has_dtb:
        notes.append("no init_top_pgt/init_level4_pgt/swapper_pg_dir in kallsyms; volatility cannot find the DTB")

    return {
        "metadata": _metadata(kaslr_shift, recovered, kallsyms_digest, btf_digest),
        "base_types": base_types,
        "user_types": user_types,
        "enums": enums,
        "symbols": symbols,
    }


def _convert_btf(
    btf: bytes | memoryview,
) -> tuple[str, BTF, _Converter, tuple[dict[str, Desc], dict[str, Desc], dict[str, Desc]]]:
    """The BTF's digest, its parse, and the ISF base types, user types and enums converted from it.

    The parse and converter are handed back because the types of globals are taken from them later, once
    kallsyms (and any symbols recovered from memory) say which globals exist.
    """
    raw = bytes(btf_from_blob(btf))
    btf_digest = _sha256(raw)
    parsed = parse_btf(raw)
    # The raw bytes go before conversion starts so they and the converted types are never held together.
    del raw
    conv = _Converter(parsed)
    try:
        base_types = conv.base_types()
        user_types = conv.user_types()
        enums = conv.enums(base_types)
    except RecursionError as exc:
        raise BTFError("type graph nested too deeply") from exc
    return btf_digest, parsed, conv, (base_types, user_types, enums)


def _banner_release(banner: bytes) -> str | None:
    """The release in ``Linux version RELEASE (...``."""
    parts = banner.split()
    return parts[2].decode("latin-1") if len(parts) > 2 and parts[:2] == [b"Linux", b"version"] else None


def _choose_kaslr_shift(
    syms: dict[str, tuple[int, str]], kernel_config: str | None, memory_shift: int | None, notes: list[str],
    release: str | None = None,
) -> int:
    """The KASLR slide: VMCOREINFO's KERNELOFFSET when kernel memory was read (it is stated, not inferred),
    else the one kallsyms ``_text`` implies."""
    kaslr_shift, shift_notes = kaslr_shift_from_kallsyms(syms, kernel_config, release)
    if memory_shift is not None:
        if memory_shift != kaslr_shift and "_text" in syms:
            notes.append(f"KASLR shift {memory_shift:#x} from VMCOREINFO (KERNELOFFSET) used; kallsyms and the "
                         f"assumed link address gave {kaslr_shift:#x}")
        kaslr_shift, shift_notes = memory_shift, []
    notes.extend(shift_notes)
    return kaslr_shift


def _global_types(
    parsed: BTF, conv: _Converter, syms: dict[str, tuple[int, str]], kernel_config: str | None
) -> dict[str, Desc]:
    """Types of the globals kallsyms names, taken while the parsed BTF is alive: per-cpu variables are the
    only globals BTF describes; SYMBOL_TYPES names the others volatility needs."""
    typed: dict[str, Desc] = {}
    for t in parsed.types:
        if t.kind == KIND_DATASEC:
            for v in t.vars:
                var = parsed.types[v.type]
                if var.kind == KIND_VAR and var.name in syms:
                    typed[var.name] = conv.desc(var.type)
    nr_cpus = _nr_cpus(syms, kernel_config)
    for name, spec in SYMBOL_TYPES.items():
        if name in syms and name not in typed:
            d = conv.spec_desc(spec, nr_cpus or 0)
            if d is not None:
                typed[name] = d
    return typed


def _nr_cpus(syms: dict[str, tuple[int, str]], kernel_config: str | None) -> int | None:
    """CONFIG_NR_CPUS, which sizes per-cpu arrays such as __per_cpu_offset."""
    nr_cpus = _config_int(kernel_config, "CONFIG_NR_CPUS")
    if nr_cpus is None and "__per_cpu_offset" in syms:
        # Without the config, size the array from the gap to the next symbol (entries past nr_cpu_ids are unused).
        start = syms["__per_cpu_offset"][0]
        after = min((a for a, _ in syms.values() if a > start), default=start + 8 * 64)
        nr_cpus = max(1, min((after - start) // 8, 8192))
    return nr_cpus


def _unslid_symbols(syms: dict[str, tuple[int, str]], typed: dict[str, Desc], kaslr_shift: int) -> dict[str, Desc]:
    """The ISF symbol table: kallsyms addresses with the KASLR slide taken off, and the types found for globals."""
    text_addr = syms.get("_text", (0, ""))[0]
    # Only addresses inside the kernel image move with KASLR; per-cpu symbols are small absolute offsets.
    floor = X86_64_START_KERNEL_MAP if text_addr >= X86_64_START_KERNEL_MAP else X86_32_PAGE_OFFSET
    symbols: dict[str, Desc] = {}
    for name, (addr, _letter) in syms.items():
        if addr >= floor:
            addr -= kaslr_shift
        symbols[name] = {"address": addr} if name not in typed else {"address": addr, "type": typed[name]}
    return symbols


def _add_banner(symbols: dict[str, Desc], banner_bytes: bytes, notes: list[str]) -> None:
    """Give linux_banner the /proc/version text as constant data: volatility identifies the kernel by it."""
    banner_bytes = banner_bytes.rstrip(b"\x00")
    if not banner_bytes.endswith(b"\n"):
        banner_bytes += b"\n"
    if not banner_bytes.startswith(b"Linux version "):
        notes.append("banner does not start with 'Linux version '; volatility will not match it")
    banner_sym = symbols.setdefault("linux_banner", {"address": 0})
    if banner_sym["address"] == 0:
        notes.append("linux_banner missing from kallsyms (CONFIG_KALLSYMS_ALL=n?); address left as 0")
    banner_sym["type"] = {"count": 0, "kind": "array", "subtype": {"kind": "base", "name": "char"}}
    # dwarf2json stores the whole C string including its terminating NUL, and volatility scans for these bytes.
    banner_sym["constant_data"] = base64.b64encode(banner_bytes + b"\x00").decode()


def _metadata(kaslr_shift: int, recovered: dict[str, str], kallsyms_digest: str, btf_digest: str) -> dict[str, Any]:
    """The ISF metadata block: producer, the slide applied, and digests of the inputs."""
    return {
        "format": ISF_FORMAT,
        "producer": {
            "name": PRODUCER_NAME,
            "version": PRODUCER_VERSION,
            "datetime": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
            # Extra keys are allowed under "producer" by the 6.x schema; nowhere else is.
            "kaslr_shift": f"{kaslr_shift:#x}",
            "source": "btf+kallsyms" + ("+kcore" if recovered else ""),
            **({"recovered_symbols": recovered} if recovered else {}),
        },
        "linux": {
            "symbols": [
                {"kind": "system-map", "name": "kallsyms", "hash_type": "sha256", "hash_value": kallsyms_digest}
            ],
            "types": [{"name": "btf", "hash_type": "sha256", "hash_value": btf_digest}],
        },
    }


def _recover(syms: dict[str, tuple[int, str]], user_types: dict[str, Desc], banner: bytes,
             kernel_memory: Callable[[], tuple[Any, list[int]]] | None,
             notes: list[str]) -> tuple[dict[str, str], int | None]:
    """Data symbols kallsyms lacks, found in the running kernel's memory and added to ``syms``; returns how
    each was found and the KASLR slide VMCOREINFO states (None when nothing was looked up there)."""
    from collectors.memory.kcore import WANTED, KcoreError, missing_essentials, recover_from

    missing = missing_essentials(syms)
    if not missing or kernel_memory is None or not syms:
        return {}, None
    try:
        memory, modules = kernel_memory()
    except OSError as exc:
        notes.append(f"{', '.join(missing)} missing from kallsyms (CONFIG_KALLSYMS_ALL=n?), and kernel memory cannot "
                     f"be read to find them: {exc.strerror or exc}")
        return {}, None
    try:
        found, shift = recover_from(memory, {n: a for n, (a, _) in syms.items()}, user_types, banner, modules, notes)
    except (KcoreError, ValueError) as exc:
        notes.append(f"{', '.join(missing)} missing from kallsyms (CONFIG_KALLSYMS_ALL=n?), and not found in kernel "
                     f"memory: {exc.strerror if isinstance(exc, OSError) else exc}")
        return {}, None
    finally:
        close = getattr(memory, "close", None)
        if close:
            close()
    for name, (addr, _how) in found.items():
        syms.setdefault(name, (addr, "?"))
    if found:
        notes.append(f"kallsyms lacks data symbols (CONFIG_KALLSYMS_ALL=n?); found {len(found)} in kernel memory: "
                     + ", ".join(sorted(n for n in found if n in WANTED)))
    return {n: how for n, (_a, how) in sorted(found.items())}, shift


def write_isf(isf: dict[str, Any], path_or_fileobj: str | os.PathLike[str] | IO[bytes], *, preset: int = 2) -> None:
    """Write ``isf`` as compact JSON compressed with xz (what volatility expects for *.json.xz)."""
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=preset)
    if isinstance(path_or_fileobj, str | os.PathLike):
        with open(path_or_fileobj, "wb") as fh:
            _write_compressed(fh, _json_pieces(isf), comp)
    else:
        _write_compressed(path_or_fileobj, _json_pieces(isf), comp)


def _json_pieces(isf: dict[str, Any], batch: int = 1 << 20) -> Iterator[bytes]:
    """The compact JSON of ``isf`` in pieces of about ``batch`` bytes: the same text json.dumps gives,
    without ever holding all of it (tens of MB) at once. Each entry still goes through the C encoder."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    pending: list[str] = []
    size = 0
    for i, (key, value) in enumerate(isf.items()):
        pending.append(("{" if i == 0 else ",") + dumps(key) + ":")
        if isinstance(value, dict) and value:
            for j, (name, entry) in enumerate(value.items()):
                text = ("{" if j == 0 else ",") + dumps(name) + ":" + dumps(entry)
                pending.append(text)
                size += len(text)
                if size >= batch:
                    yield "".join(pending).encode()
                    pending, size = [], 0
            pending.append("}")
        else:
            pending.append(dumps(value))
    pending.append("}" if isf else "{}")
    yield "".join(pending).encode()


def _write_compressed(fh: IO[bytes], pieces: Iterator[bytes], comp: lzma.LZMACompressor) -> None:
    for piece in pieces:
        out = comp.compress(piece)
        if out:
            fh.write(out)
    fh.write(comp.flush())


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="latin-1") as fh:
            return fh.read()
    except OSError:
        return None


def _read_kernel_config(root: str, release: str) -> str | None:
    text = _read_text(os.path.join(root, "boot", f"config-{release}"))
    if text is not None:
        return text
    try:
        import gzip

        with gzip.open(os.path.join(root, "proc", "config.gz"), "rt", encoding="latin-1") as fh:
            return fh.read()
    except (OSError, EOFError):
        return None


def from_host(root: str = "/") -> tuple[dict[str, Any], list[str]]:
    """Build the ISF for the kernel running under ``root`` (a live host or a mounted copy of its /proc and /sys).

    Falls back to the .BTF section of <root>/boot/vmlinuz-<release> when /sys/kernel/btf/vmlinux is absent.
    Raises NoBTF when neither is usable.
    """
    notes: list[str] = []
    banner = _read_text(os.path.join(root, "proc", "version"))
    if not banner:
        raise FileNotFoundError(os.path.join(root, "proc", "version"))
    release = (_read_text(os.path.join(root, "proc", "sys", "kernel", "osrelease")) or "").strip()
    if not release:
        parts = banner.split()
        release = parts[2] if len(parts) > 2 else ""
    kallsyms = _read_text(os.path.join(root, "proc", "kallsyms")) or ""
    if not kallsyms:
        notes.append("/proc/kallsyms unreadable: ISF has types but no symbol addresses")

    btf_blob: bytes | None = None
    btf_path = os.path.join(root, "sys", "kernel", "btf", "vmlinux")
    try:
        with open(btf_path, "rb") as fh:
            btf_blob = fh.read()
    except OSError as exc:
        vmlinuz = os.path.join(root, "boot", f"vmlinuz-{release}")
        try:
            with open(vmlinuz, "rb") as fh:
                image = fh.read()
            if image[:4] != b"\x7fELF":
                image = vmlinux_from_bzimage(image)
            btf_blob = bytes(btf_from_blob(image))
        except (OSError, BTFError) as exc2:
            raise NoBTF(f"no BTF: {btf_path}: {exc.strerror}; {vmlinuz}: {exc2}") from exc2
        # A stale image with the same file name (rebuilt kernel) would give wrong offsets; insist on the banner.
        if banner.encode("latin-1").rstrip(b"\n") not in image:
            raise NoBTF(
                f"no BTF: {btf_path}: {exc.strerror}; {vmlinuz} is not the running kernel (banner differs)"
            ) from None
        notes.append(f"{btf_path} unavailable ({exc.strerror}); used the .BTF section of {vmlinuz}")

    config = _read_kernel_config(root, release)
    if config is None:
        notes.append("kernel config not found; assuming default CONFIG_PHYSICAL_START/ALIGN for the KASLR shift")
    isf = build_isf(btf_blob, kallsyms, banner, kernel_config=config, notes=notes,
                    kernel_memory=lambda: open_kernel_memory(root))
    return isf, notes


def open_kernel_memory(root: str = "/") -> tuple[Any, list[int]]:
    """<root>/proc/kcore and the loaded modules' ``struct module`` addresses (for build_isf's kernel_memory)."""
    from collectors.memory.kcore import KCORE, Kcore, module_structs

    return Kcore(os.path.join(root, KCORE)), module_structs(root)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m collectors.symbols.isf", description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", "-o", required=True, help="output .json.xz path")
    ap.add_argument("--root", default="/", help="root of the host (default /)")
    ap.add_argument("--preset", type=int, default=2, help="xz preset (default 2)")
    args = ap.parse_args(argv)
    try:
        isf, notes = from_host(args.root)
    except (NoBTF, BTFError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_isf(isf, args.output, preset=args.preset)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(
        f"wrote {args.output}: {len(isf['user_types'])} types, {len(isf['symbols'])} symbols, "
        f"KASLR shift {isf['metadata']['producer']['kaslr_shift']}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
