"""Data symbols of a kernel built without CONFIG_KALLSYMS_ALL, found in its memory (issue 15, item 5):
collectors.memory.kcore over a synthetic /proc/kcore (an ELF64 core with a VMCOREINFO note and PT_LOAD
segments) whose kernel image holds the structures at known places, next to decoys that fail one check each.
(tests/e2e/test_findings_qemu.py does the same on a real guest, through the binary.)"""

from __future__ import annotations

import struct

from collectors.memory import kcore as K
from collectors.memory.ranges import Segment, map_ranges

TEXT = 0xFFFFFFFFA2200000  # _text of the running kernel (KASLR slide 0x21200000)
ETEXT = TEXT + 0x1000
END = TEXT + 0x40000  # _end: the KCORE_TEXT segment is [_text, _end)
HEAP = 0xFFFF8ADF00100000
HEAP_SIZE = 0x10000
MODS = 0xFFFFFFFFC0000000
PGD = TEXT + 0x10000
BANNER = b"Linux version 6.1.0-test (x@y) #1 SMP\n"
FUNCS = {"sock_read_iter": TEXT + 0x100, "sock_write_iter": TEXT + 0x140, "sock_poll": TEXT + 0x180,
         "sock_close": TEXT + 0x1C0, "sockfs_dname": TEXT + 0x200, "__x64_sys_read": TEXT + 0x240,
         "__x64_sys_write": TEXT + 0x280, "__x64_sys_open": TEXT + 0x2C0}


def _struct(size: int, **fields: tuple[int, str] | tuple[int, str, str]) -> dict:
    out = {}
    for name, spec in fields.items():
        off, kind = spec[0], spec[1]
        out[name] = {"offset": off, "type": {"kind": kind, **({"name": spec[2]} if len(spec) > 2 else {})}}
    return {"size": size, "kind": "struct", "fields": out}


USER_TYPES = {
    "list_head": _struct(16, next=(0, "pointer"), prev=(8, "pointer")),
    "task_struct": _struct(0x100, pid=(0x10, "base"), tgid=(0x14, "base"), tasks=(0x20, "struct", "list_head"),
                           files=(0x30, "pointer"), fs=(0x38, "pointer"), nsproxy=(0x40, "pointer"),
                           real_cred=(0x48, "pointer"), cred=(0x50, "pointer"), comm=(0x60, "array")),
    # mm_struct's members sit in an anonymous struct, as in Linux 6.1
    "mm_struct": _struct(0x80, unnamed_field_0=(0, "struct", "unnamed_mm")),
    "unnamed_mm": _struct(0x80, pgd=(0x18, "pointer"), mmlist=(0x40, "struct", "list_head")),
    "nsproxy": _struct(0x40, uts_ns=(0x08, "pointer"), net_ns=(0x20, "pointer"),
                       pid_ns_for_children=(0x18, "pointer")),
    "net": _struct(0x100, list=(0x10, "struct", "list_head")),
    "module": _struct(0x200, list=(0x08, "struct", "list_head"), name=(0x18, "array")),
    "file_operations": _struct(0x40, owner=(0, "pointer"), read_iter=(0x08, "pointer"),
                               write_iter=(0x10, "pointer"), poll=(0x18, "pointer"), release=(0x20, "pointer")),
    "dentry_operations": _struct(0x20, d_revalidate=(0, "pointer"), d_hash=(0x08, "pointer"),
                                 d_dname=(0x10, "pointer"), d_release=(0x18, "pointer")),
}
USER_TYPES["mm_struct"]["fields"]["unnamed_field_0"]["anonymous"] = True


class Memory:
    def __init__(self) -> None:
        self.regions = {TEXT: bytearray(END - TEXT), HEAP: bytearray(HEAP_SIZE), MODS: bytearray(0x1000)}

    def put(self, addr: int, data: bytes) -> None:
        for base, buf in self.regions.items():
            if base <= addr and addr + len(data) <= base + len(buf):
                buf[addr - base: addr - base + len(data)] = data
                return
        raise AssertionError(hex(addr))

    def q(self, addr: int, *values: int) -> None:
        self.put(addr, struct.pack(f"<{len(values)}Q", *values))

    def read(self, addr: int, size: int) -> bytes | None:
        for base, buf in self.regions.items():
            if base <= addr and addr + size <= base + len(buf):
                return bytes(buf[addr - base: addr - base + size])
        return None


def _kernel() -> tuple[Memory, dict[str, int]]:
    m, at = Memory(), {}
    at["linux_banner"] = TEXT + 0x2000
    m.put(at["linux_banner"], BANNER + b"\0")
    m.put(TEXT + 0x2100, b"swapper/0\0")  # a decoy string: no task_struct around it
    # init_task and one other task on its tasks list; a decoy with pid 0 whose links do not agree
    at["init_task"] = task = TEXT + 0x20000
    other = HEAP + 0x1000
    m.put(task + 0x60, b"swapper/0\0")
    m.put(other + 0x60, b"init\0")
    m.q(task + 0x20, other + 0x20, other + 0x20)
    m.q(other + 0x20, task + 0x20, task + 0x20)
    m.put(other + 0x10, struct.pack("<II", 1, 1))
    decoy = TEXT + 0x21000
    m.put(decoy + 0x60, b"swapper/0\0")
    m.q(decoy + 0x20, other + 0x20, other + 0x20)
    # pointers out of init_task
    at["init_files"], at["init_fs"], at["init_cred"] = TEXT + 0x22000, TEXT + 0x22100, TEXT + 0x22200
    at["init_nsproxy"], at["init_net"], at["init_uts_ns"] = TEXT + 0x22300, TEXT + 0x23000, TEXT + 0x22400
    at["init_pid_ns"] = TEXT + 0x22500
    m.q(task + 0x30, at["init_files"], at["init_fs"], at["init_nsproxy"], at["init_cred"], at["init_cred"])
    m.q(at["init_nsproxy"] + 0x08, at["init_uts_ns"])
    m.q(at["init_nsproxy"] + 0x18, at["init_pid_ns"], at["init_net"])
    # net_namespace_list <-> init_net.list
    at["net_namespace_list"] = TEXT + 0x24000
    m.q(at["init_net"] + 0x10, at["net_namespace_list"], at["net_namespace_list"])
    m.q(at["net_namespace_list"], at["init_net"] + 0x10, at["init_net"] + 0x10)
    # init_mm: pgd is the page-table root, mmlist empty (self-linked); a decoy pgd with a broken mmlist
    at["init_mm"] = TEXT + 0x25000
    m.q(at["init_mm"] + 0x18, PGD)
    m.q(at["init_mm"] + 0x40, at["init_mm"] + 0x40, at["init_mm"] + 0x40)
    m.q(TEXT + 0x26018, PGD)
    # one loaded module; `modules` is the list node in the kernel image
    at["modules"], module = TEXT + 0x27000, MODS + 0x100
    m.q(module + 0x08, at["modules"], at["modules"])
    m.q(at["modules"], module + 0x08, module + 0x08)
    m.put(module + 0x18, b"dummy\0")
    # operations structures in rodata, and a file_operations that shares only read_iter
    at["socket_file_ops"] = TEXT + 0x3000
    m.q(at["socket_file_ops"] + 0x08, FUNCS["sock_read_iter"], FUNCS["sock_write_iter"], FUNCS["sock_poll"],
        FUNCS["sock_close"])
    m.q(TEXT + 0x3108, FUNCS["sock_read_iter"], 0, FUNCS["sock_poll"], FUNCS["sock_close"])
    at["sockfs_dentry_operations"] = TEXT + 0x3200
    m.q(at["sockfs_dentry_operations"], 0, 0, FUNCS["sockfs_dname"], 0)
    m.q(TEXT + 0x3300, FUNCS["__x64_sys_read"], FUNCS["sockfs_dname"], 0, 0)  # d_dname too, but d_hash set
    at["sys_call_table"] = TEXT + 0x3400
    m.q(at["sys_call_table"], FUNCS["__x64_sys_read"], FUNCS["__x64_sys_write"], FUNCS["__x64_sys_open"])
    return m, at


VMCOREINFO = (f"OSRELEASE=6.1.0-test\nSYMBOL(init_uts_ns)={TEXT + 0x22400:x}\nSYMBOL(swapper_pg_dir)={PGD:x}\n"
              f"SYMBOL(mem_section)={HEAP + 0x80:x}\nSYMBOL(init_top_pgt)={PGD:x}\nNUMBER(phys_base)=-488636416\n"
              "KERNELOFFSET=21200000\n")


def test_every_symbol_is_found_and_no_decoy_is_taken():
    m, at = _kernel()
    known = dict(FUNCS, _text=TEXT, _stext=TEXT, _etext=ETEXT)
    notes: list[str] = []
    found = K.recover(m.read, (TEXT, END), known, K.Layout(USER_TYPES), BANNER, K.parse_vmcoreinfo(VMCOREINFO),
                      [MODS + 0x100], notes, clock=None)
    got = {name: addr for name, (addr, _how) in found.items()}
    assert {n: got.get(n) for n in at} == at, notes
    assert got["init_top_pgt"] == got["swapper_pg_dir"] == PGD
    assert "mem_section" not in got, "a SYMBOL_ARRAY value outside the image is not a symbol's address"
    assert found["init_task"][1] == "task_struct layout in the kernel image"


def test_what_cannot_be_told_apart_is_named_missing():
    m, at = _kernel()
    m.q(TEXT + 0x28018, PGD)  # a second mm_struct with the same pgd and sound links
    m.q(TEXT + 0x28040, TEXT + 0x28040, TEXT + 0x28040)
    notes: list[str] = []
    found = K.recover(m.read, (TEXT, END), dict(FUNCS, _text=TEXT, _etext=ETEXT), K.Layout(USER_TYPES), BANNER,
                      K.parse_vmcoreinfo(VMCOREINFO), [], notes, clock=None)
    assert "init_mm" not in found and any(n.startswith("init_mm") and "2 candidates" in n for n in notes), notes
    assert "modules" not in found and any(n.startswith("modules: no module is loaded") for n in notes), notes
    assert found["init_task"][0] == at["init_task"]


def test_kcore_file_is_read_through_its_segments_and_note(tmp_path):
    """An ELF64 core like /proc/kcore: PT_NOTE (CORE, VMCOREINFO) then PT_LOAD segments."""
    m, _at = _kernel()

    def note(name: bytes, ntype: int, desc: bytes) -> bytes:
        name += b"\0"
        return (struct.pack("<III", len(name), len(desc), ntype) + name + b"\0" * (-len(name) % 4) + desc
                + b"\0" * (-len(desc) % 4))

    notes = note(b"CORE", 1, b"\0" * 336) + note(b"VMCOREINFO", 0, VMCOREINFO.encode())
    loads = [(TEXT, bytes(m.regions[TEXT]), 0x5000000), (HEAP, bytes(m.regions[HEAP]), 0x100000)]
    phnum = 1 + len(loads)
    offset = 64 + 56 * phnum
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, offset, 0, 0, len(notes), 0, 0)
    body = notes
    for vaddr, data, paddr in loads:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, offset + len(body), vaddr, paddr, len(data), len(data), 4096)
        body += data
    header = (b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
              + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0))
    path = tmp_path / "kcore"
    path.write_bytes(header + phdrs + body)
    with K.Kcore(str(path)) as core:
        info = core.vmcoreinfo()
        assert K.kernel_offset(info) == 0x21200000 and K.vmcoreinfo_symbols(info)["swapper_pg_dir"] == PGD
        assert core.read(TEXT + 0x2000, len(BANNER)) == BANNER
        assert core.read(END - 4, 8) is None and core.read(0x1000, 8) is None
        assert K.kernel_image_range(core, TEXT) == (TEXT, END)
        found, shift = K.recover_from(core, dict(FUNCS, _text=TEXT, _etext=ETEXT), USER_TYPES, BANNER, [], [])
    assert shift == 0x21200000 and found["linux_banner"][0] == TEXT + 0x2000


def test_no_kcore_is_an_oserror_naming_the_path(tmp_path):
    try:
        K.Kcore(str(tmp_path / "absent"))
    except OSError as exc:
        assert "absent" in str(exc)
    else:
        raise AssertionError("no error")


# ---------------------------------------------------------------------------------------------------------------
# arm64 (issue 18): the layout of Debian 12's arm64 cloud kernel (6.1, 4K pages, 48-bit VAs, KASLR) as its
# /proc/kcore shows it in a QEMU virt guest: the kernel image randomised inside the vmalloc area (so inside the
# KCORE_VMALLOC segment too), slab objects in the linear map below 0xffff800000000000, the generic syscall table.

A64_TEXT = 0xFFFFAE0D64200000  # _text (KCORE_TEXT starts there); _stext is 64 KiB further
A64_END = A64_TEXT + 0x40000
A64_LINEAR = 0xFFFF000000000000  # PAGE_OFFSET: -(1 << 48)
A64_HEAP = A64_LINEAR + 0x1F000000  # a task_struct in the linear map
A64_VMALLOC = (0xFFFF800008000000, 0x7BFFE8000000)
A64_MODULES = (0xFFFF800000000000, 0x8000000)
A64_PGD = A64_TEXT + 0x10000
A64_FUNCS = {"sock_read_iter": A64_TEXT + 0x100, "sock_write_iter": A64_TEXT + 0x140, "sock_poll": A64_TEXT + 0x180,
             "sock_close": A64_TEXT + 0x1C0, "sockfs_dname": A64_TEXT + 0x200,
             "__arm64_sys_io_setup": A64_TEXT + 0x240, "__arm64_sys_io_destroy": A64_TEXT + 0x280,
             "__arm64_sys_io_submit": A64_TEXT + 0x2C0}
A64_VMCOREINFO = (f"OSRELEASE=6.1.0-57-cloud-arm64\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)={A64_PGD:x}\n"
                  f"SYMBOL(_stext)={A64_TEXT + 0x10000:x}\nNUMBER(VA_BITS)=48\n"
                  "NUMBER(kimage_voffset)=0xffffae0d24000000\nNUMBER(PHYS_OFFSET)=0x40000000\n"
                  "NUMBER(MODULES_END)=0xffff800008000000\nKERNELOFFSET=2e0d5c200000\n")


def _arm64_kernel() -> tuple[Memory, dict[str, int]]:
    m, at = Memory(), {}
    m.regions = {A64_TEXT: bytearray(A64_END - A64_TEXT), A64_HEAP: bytearray(0x2000)}
    at["linux_banner"] = A64_TEXT + 0x2000
    m.put(at["linux_banner"], BANNER + b"\0")
    at["init_task"] = task = A64_TEXT + 0x20000
    other = A64_HEAP + 0x1000  # kthreadd, allocated from the slab: in the linear map
    m.put(task + 0x60, b"swapper/0\0")
    m.put(other + 0x60, b"kthreadd\0")
    m.q(task + 0x20, other + 0x20, other + 0x20)
    m.q(other + 0x20, task + 0x20, task + 0x20)
    m.put(other + 0x10, struct.pack("<II", 2, 2))
    at["init_mm"] = A64_TEXT + 0x25000
    m.q(at["init_mm"] + 0x18, A64_PGD)
    m.q(at["init_mm"] + 0x40, at["init_mm"] + 0x40, at["init_mm"] + 0x40)
    at["sys_call_table"] = A64_TEXT + 0x3400
    m.q(at["sys_call_table"], A64_FUNCS["__arm64_sys_io_setup"], A64_FUNCS["__arm64_sys_io_destroy"],
        A64_FUNCS["__arm64_sys_io_submit"])
    return m, at


def _arm64_kcore(path, m: Memory) -> None:
    """An ELF64 core in the order arm64's /proc/kcore lists its segments: KCORE_TEXT, KCORE_VMALLOC (which
    holds the image's addresses too), modules, the linear map (RAM at 0x40000000), vmemmap. Only the text
    and linear-map contents are in the file; the others are absent from it, as a read of them would fail."""
    def note(name: bytes, ntype: int, desc: bytes) -> bytes:
        name += b"\0"
        return (struct.pack("<III", len(name), len(desc), ntype) + name + b"\0" * (-len(name) % 4) + desc
                + b"\0" * (-len(desc) % 4))

    notes = note(b"CORE", 1, b"\0" * 392) + note(b"VMCOREINFO", 0, A64_VMCOREINFO.encode())
    text, heap = bytes(m.regions[A64_TEXT]), bytes(m.regions[A64_HEAP])
    phnum = 6
    offset = 64 + 56 * phnum
    body = notes
    text_off, heap_off = offset + len(body), offset + len(body) + len(text)
    body += text + heap
    loads = [(A64_TEXT, 0x40200000, text_off, len(text)), (A64_VMALLOC[0], 1 << 64, 1 << 40, A64_VMALLOC[1]),
             (A64_MODULES[0], 1 << 64, 1 << 41, A64_MODULES[1]),
             (A64_HEAP, 0x40000000 + A64_HEAP - A64_LINEAR, heap_off, len(heap)),
             (0xFFFFFC0000000000, 1 << 64, 1 << 42, 0x800000)]
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, offset, 0, 0, len(notes), 0, 0)
    for vaddr, paddr, off, size in loads:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, vaddr, paddr % (1 << 64) or 0xFFFFFFFFFFFFFFFF, size, size,
                             4096)
    header = (b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
              + struct.pack("<HHIQQQIHHHHHH", 4, 183, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0))
    path.write_bytes(header + phdrs + body)


def test_arm64_kernel_image_is_its_own_segment_not_the_vmalloc_area_around_it(tmp_path):
    """KASLR puts arm64's kernel image inside the vmalloc area: the image range is KCORE_TEXT's (256 KiB here),
    never the ~120 TiB KCORE_VMALLOC segment that also holds its addresses (reading that would never end)."""
    m, _at = _arm64_kernel()
    _arm64_kcore(tmp_path / "kcore", m)
    with K.Kcore(str(tmp_path / "kcore")) as core:
        assert K.kernel_image_range(core, A64_TEXT + 0x10000) == (A64_TEXT, A64_END)
        assert core.read(A64_TEXT + 0x2000, len(BANNER)) == BANNER


def test_arm64_lists_into_the_linear_map_agree_and_its_syscall_table_is_found(tmp_path):
    """init_task's tasks list leads into the linear map (0xffff000000000000 with 48-bit VAs), which lies below
    x86_64's lowest kernel address; the table starts with the generic io_setup, io_destroy, io_submit."""
    m, at = _arm64_kernel()
    _arm64_kcore(tmp_path / "kcore", m)
    notes: list[str] = []
    with K.Kcore(str(tmp_path / "kcore")) as core:
        found, shift = K.recover_from(core, dict(A64_FUNCS, _stext=A64_TEXT + 0x10000, _etext=A64_TEXT + 0x1000),
                                      USER_TYPES, BANNER, [], notes)
    got = {n: a for n, (a, _how) in found.items()}
    assert {n: got.get(n) for n in at} == at, notes
    assert got["swapper_pg_dir"] == A64_PGD and shift == 0x2E0D5C200000
    assert "__arm64_sys_io_setup" in found["sys_call_table"][1]


def test_module_structs_in_the_arm64_module_area(tmp_path):
    section = tmp_path / "sys" / "module" / "dummy" / "sections"
    section.mkdir(parents=True)
    (section / ".gnu.linkonce.this_module").write_text("0xffff800000f3c040\n")
    assert K.module_structs(str(tmp_path)) == [0xFFFF800000F3C040]


def test_arm64_kernel_text_alias_is_not_read_for_ram_the_linear_map_holds():
    """arm64's KCORE_TEXT (the image, at a KASLR address in the vmalloc area, below x86's __START_KERNEL_map)
    aliases RAM that a linear-map segment starting at the same physical address holds: the image takes the
    linear map's bytes, each physical byte once."""
    text = Segment(A64_TEXT, 0x40200000, 0x3000, 0x1AB0000)
    linear = Segment(A64_LINEAR + 0x200000, 0x40200000, 0x2000000, 0x1F000000)
    ranges, missing = map_ranges([(0x40200000, 0x5F1FFFFF)], [text, linear])
    assert missing == [] and [(r.start, r.end) for r in ranges] == [(0x40200000, 0x5F1FFFFF)]
    assert [(p.start, p.length, p.offset) for p in ranges[0].pieces] == [(0x40200000, 0x1F000000, 0x2000000)]
