"""The running kernel's own memory through /proc/kcore, and the data symbols a kernel built without
CONFIG_KALLSYMS_ALL leaves out of /proc/kallsyms (microvm and minimal kernels list only text symbols there),
found again in process, so that the symbol table built from BTF still opens a memory image:

- the VMCOREINFO note that /proc/kcore carries (kernel 4.19+ with CONFIG_CRASH_CORE): every
  ``SYMBOL(name)=address`` in it (``swapper_pg_dir``/``init_top_pgt``, the page-table root;
  ``init_uts_ns``, ``prb``, ...), ``KERNELOFFSET`` (the KASLR slide, exact) and ``NUMBER(phys_base)``;
- ``linux_banner``: the exact text of /proc/version, NUL-terminated, in the kernel image after its text;
- ``init_task``: in the kernel image's data, a ``task_struct`` (offsets from BTF) whose ``comm`` is
  ``swapper/0`` (``swapper`` on a uniprocessor kernel), whose ``pid`` and ``tgid`` are 0 and whose ``tasks``
  list links agree both ways (its next's prev and its prev's next are itself);
- from init_task's own pointers: ``init_files``, ``init_fs``, ``init_nsproxy``, ``init_cred``, and through
  the nsproxy ``init_net``, ``init_uts_ns``, ``init_pid_ns`` (each kept only when it lies in the kernel image);
- ``init_mm``: the ``mm_struct`` in the image whose ``pgd`` is the page-table root and whose ``mmlist``
  links agree;
- ``net_namespace_list``: the node of init_net's ``list`` that lies in the image and is not init_net;
- ``modules``: from any loaded module's ``struct module`` (/sys/module/*/sections/.gnu.linkonce.this_module),
  the node of its ``list`` that lies in the image (none when no module is loaded: then it is named missing);
- ``socket_file_ops`` and ``sockfs_dentry_operations``: the read-only structures whose function pointers are
  the text symbols ``sock_read_iter``/``sock_write_iter``/``sock_poll``/``sock_close`` and ``sockfs_dname``;
- ``sys_call_table``: the array that starts with the architecture's first three system calls
  (x86_64: ``__x64_sys_read``, ``__x64_sys_write``, ``__x64_sys_open``; arm64: ``__arm64_sys_io_setup``,
  ``__arm64_sys_io_destroy``, ``__arm64_sys_io_submit``);
- ``tk_core`` (process start times): the cacheline-aligned ``struct {seq; timekeeper}`` whose timekeeper's
  ``xtime_sec`` and ``ktime_sec`` are the wall and monotonic seconds of the moment the image is read.

Addresses found here are the running kernel's (KASLR applied); the ISF builder moves them back to link time
like the kallsyms ones. Every candidate that does not pass its checks is dropped: a symbol is either found
unambiguously or named missing, with the reason."""

from __future__ import annotations

import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

KCORE = "proc/kcore"
PT_LOAD, PT_NOTE = 1, 4
# The lowest kernel virtual address of any 64-bit layout we read: x86_64 with 5-level paging starts its kernel
# half at 0xff00000000000000 (direct map 0xff11000000000000), arm64's linear map (where every slab object,
# task_struct and mm_struct lives) starts at -(1 << VA_BITS): 0xffff000000000000 with 48-bit VAs,
# 0xfff0000000000000 with 52, 0xffffff8000000000 with 39. (0xffff800000000000, x86_64 4-level, left out the
# arm64 linear map, so no list link from the kernel image to the heap agreed there.)
KERNEL_SPACE = 0xFF00000000000000
CHUNK = 4 << 20
# What the plugins that matter need and kallsyms lists only with CONFIG_KALLSYMS_ALL (volatility's Linux
# automagic: init_task, init_mm, init_files, the page-table root and linux_banner; pslist, lsmod, sockstat).
WANTED = ("linux_banner", "init_task", "init_mm", "init_files", "init_top_pgt", "swapper_pg_dir", "modules",
          "net_namespace_list", "socket_file_ops", "sockfs_dentry_operations", "init_uts_ns", "init_net",
          "sys_call_table", "tk_core")


class KcoreError(OSError):
    """/proc/kcore cannot be used (absent, not root, lockdown, not an ELF core)."""


class Kcore:
    """Random access to kernel virtual addresses through /proc/kcore (an ELF64 core file): its PT_LOAD
    segments map virtual addresses to file offsets; its PT_NOTE holds VMCOREINFO."""

    def __init__(self, path: str = "/" + KCORE) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise KcoreError(exc.errno, f"{path}: {exc.strerror}") from None
        try:
            head = os.pread(self.fd, 64, 0)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                raise KcoreError(0, f"{path}: not a little-endian ELF64 core")
            phoff, = struct.unpack_from("<Q", head, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
            table = os.pread(self.fd, phentsize * phnum, phoff)
            self.segments: list[tuple[int, int, int, int]] = []  # (vaddr, size, file offset, paddr)
            self.notes: list[tuple[bytes, int, bytes]] = []
            for i in range(phnum):
                p_type, _flags, off, vaddr, paddr, filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
                if p_type == PT_LOAD and filesz:
                    self.segments.append((vaddr, filesz, off, paddr))
                elif p_type == PT_NOTE and filesz:
                    self.notes += list(_notes(os.pread(self.fd, min(filesz, 1 << 20), off)))
        except OSError as exc:
            os.close(self.fd)
            if isinstance(exc, KcoreError):
                raise
            raise KcoreError(exc.errno, f"{path}: {exc.strerror}") from None
        except (struct.error, IndexError):
            os.close(self.fd)
            raise KcoreError(0, f"{path}: truncated ELF headers") from None
        self.segments.sort()

    def segment(self, vaddr: int) -> tuple[int, int, int, int] | None:
        """The smallest segment holding ``vaddr``: on arm64 the kernel image (KCORE_TEXT, randomised by KASLR
        anywhere in the vmalloc area) lies inside the KCORE_VMALLOC segment, which spans ~120 TiB; the image's
        own segment is the one that says where the image ends."""
        best = None
        for seg in self.segments:
            if seg[0] <= vaddr < seg[0] + seg[1] and (best is None or seg[1] < best[1]):
                best = seg
        return best

    def read(self, vaddr: int, size: int) -> bytes | None:
        seg = self.segment(vaddr)
        if seg is None or vaddr + size > seg[0] + seg[1]:
            return None
        try:
            data = os.pread(self.fd, size, seg[2] + vaddr - seg[0])
        except OSError:
            return None
        return data if len(data) == size else None

    def vmcoreinfo(self) -> dict[str, str]:
        for name, _type, desc in self.notes:
            if name == b"VMCOREINFO":
                return parse_vmcoreinfo(desc.decode("latin-1"))
        return {}

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Kcore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _notes(data: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        if namesz == 0 and descsz == 0:
            return
        name = data[pos + 12: pos + 12 + namesz].rstrip(b"\0")
        desc_at = pos + 12 + ((namesz + 3) & ~3)
        yield name, ntype, data[desc_at: desc_at + descsz]
        pos = desc_at + ((descsz + 3) & ~3)


def parse_vmcoreinfo(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def vmcoreinfo_symbols(info: dict[str, str]) -> dict[str, int]:
    out = {}
    for key, value in info.items():
        m = re.fullmatch(r"SYMBOL\((\w+)\)", key)
        if m:
            try:
                out[m.group(1)] = int(value, 16)
            except ValueError:
                continue
    return out


def kernel_offset(info: dict[str, str]) -> int | None:
    """KERNELOFFSET: the KASLR slide of the kernel image (hex)."""
    try:
        return int(info["KERNELOFFSET"], 16)
    except (KeyError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# layouts from the ISF's user types (built from BTF)


class Layout:
    """Offsets and sizes of kernel structures, from the user types the ISF builder made from BTF; members of
    anonymous structs and unions are reached through them, as volatility does."""

    def __init__(self, user_types: dict[str, Any]) -> None:
        self.types = user_types

    def size(self, struct_name: str) -> int:
        return int(self.types[struct_name]["size"])

    def offset(self, struct_name: str, path: str) -> int:
        total, name = 0, struct_name
        for part in path.split("."):
            found = self._find(name, part)
            if found is None:
                raise KeyError(f"{struct_name}.{path}")
            off, desc = found
            total += off
            name = desc.get("name", "")
        return total

    def _find(self, struct_name: str, member: str, depth: int = 0) -> tuple[int, dict] | None:
        fields = self.types.get(struct_name, {}).get("fields", {})
        if member in fields:
            return fields[member]["offset"], fields[member]["type"]
        if depth > 8:
            return None
        for field in fields.values():
            if field.get("anonymous") and field["type"].get("kind") in ("struct", "union"):
                inner = self._find(field["type"]["name"], member, depth + 1)
                if inner is not None:
                    return field["offset"] + inner[0], inner[1]
        return None

    def fields(self, struct_name: str) -> list[tuple[int, int]]:
        """(offset, size in bytes when a pointer, else 0) of each top-level field."""
        return [(f["offset"], 8 if f["type"].get("kind") == "pointer" else 0)
                for f in self.types.get(struct_name, {}).get("fields", {}).values()]


# ---------------------------------------------------------------------------------------------------------------
# the search


Reader = Callable[[int, int], "bytes | None"]


class _Image:
    """The kernel image's bytes after its text ([start, end)), read once, searched many times."""

    def __init__(self, read: Reader, start: int, end: int) -> None:
        self.start, self.end = start, end
        parts = []
        for addr in range(start, end, CHUNK):
            data = read(addr, min(CHUNK, end - addr))
            if data is None:
                raise KcoreError(0, f"kernel image unreadable at {addr:#x}")
            parts.append(data)
        self.data = b"".join(parts)

    def __contains__(self, vaddr: int) -> bool:
        return self.start <= vaddr < self.end

    def find_all(self, needle: bytes, align: int = 1) -> Iterator[int]:
        i = self.data.find(needle)
        while i != -1:
            if (self.start + i) % align == 0:
                yield self.start + i
            i = self.data.find(needle, i + 1)

    def u64(self, vaddr: int) -> int | None:
        if not (self.start <= vaddr and vaddr + 8 <= self.end):
            return None
        return struct.unpack_from("<Q", self.data, vaddr - self.start)[0]


def _u(read: Reader, vaddr: int, size: int = 8) -> int | None:
    data = read(vaddr, size) if vaddr >= KERNEL_SPACE else None
    return int.from_bytes(data, "little") if data is not None else None


def _links_agree(read: Reader, node: int) -> bool:
    """A list_head at `node` whose next's prev and prev's next are `node`."""
    nxt, prv = _u(read, node), _u(read, node + 8)
    if nxt is None or prv is None or nxt < KERNEL_SPACE or prv < KERNEL_SPACE:
        return False
    return _u(read, nxt + 8) == node and _u(read, prv) == node


def _walk(read: Reader, node: int, limit: int = 4096) -> Iterator[int]:
    """The other nodes of the circular list through `node`, in order (stops on a broken link)."""
    cur = _u(read, node)
    seen = 0
    while cur is not None and cur != node and seen < limit:
        yield cur
        seen += 1
        cur = _u(read, cur)


def _unique(found: list[int], what: str, notes: list[str]) -> int | None:
    found = sorted(set(found))
    if len(found) == 1:
        return found[0]
    notes.append(f"{what}: {'no candidate' if not found else f'{len(found)} candidates'} passed the checks")
    return None


def _clock() -> tuple[float, float]:
    return time.time(), time.clock_gettime(time.CLOCK_MONOTONIC)


def recover(read: Reader, image_range: tuple[int, int], known: dict[str, int], layout: Layout, banner: bytes,
            vmcoreinfo: dict[str, str], module_structs: list[int], notes: list[str],
            clock: Callable[[], tuple[float, float]] | None = _clock) -> dict[str, tuple[int, str]]:
    """Running-kernel addresses of the WANTED symbols (and the other vmcoreinfo symbols) that are not in
    ``known`` (what kallsyms lists: name -> running address), each with how it was found.

    ``read(vaddr, size)`` reads kernel memory; ``image_range`` is the kernel image ([_text, _end), the
    KCORE_TEXT segment); ``module_structs`` addresses of loaded modules' ``struct module``; ``clock`` gives
    (CLOCK_REALTIME, CLOCK_MONOTONIC) now, for the live timekeeper (None: not looked for)."""
    start = known.get("_etext") or image_range[0]
    # the clock read on both sides of reading the image brackets the seconds the timekeeper held then
    before = clock() if clock else None
    image = _Image(read, start, image_range[1])
    after = clock() if clock else None
    s = _Search(read, image, known, layout, notes)
    _from_vmcoreinfo(s, vmcoreinfo, image_range)
    _linux_banner(s, banner)
    # Each step below may use what an earlier one found (init_task -> init_net -> net_namespace_list).
    task = _task_offsets(s)
    init_task = _init_task(s, task)
    if init_task is not None and task:
        _from_init_task(s, init_task, task)
    _init_mm(s)
    _net_namespace_list(s)
    _modules(s, module_structs)
    _ops(s, "socket_file_ops", "file_operations", {"read_iter": "sock_read_iter", "write_iter": "sock_write_iter",
                                                   "poll": "sock_poll", "release": "sock_close"}, False)
    _ops(s, "sockfs_dentry_operations", "dentry_operations", {"d_dname": "sockfs_dname"}, True)
    if s.want("tk_core") and before and after:
        _timekeeper(image, layout, before, after, s.out, notes)
    _sys_call_table(s)
    return s.out


class _Search:
    """What every step of :func:`recover` shares: the memory, the image, the symbols known and found so far."""

    __slots__ = ("read", "image", "known", "layout", "notes", "out")

    def __init__(self, read: Reader, image: _Image, known: dict[str, int], layout: Layout, notes: list[str]) -> None:
        self.read, self.image, self.known, self.layout, self.notes = read, image, known, layout, notes
        self.out: dict[str, tuple[int, str]] = {}

    def want(self, name: str) -> bool:
        """Neither kallsyms nor an earlier step has it."""
        return name not in self.known and name not in self.out


def _from_vmcoreinfo(s: _Search, vmcoreinfo: dict[str, str], image_range: tuple[int, int]) -> None:
    for name, addr in vmcoreinfo_symbols(vmcoreinfo).items():
        # SYMBOL_ARRAY entries (mem_section) give a pointer's value, not its address: only the image's own
        if s.want(name) and image_range[0] <= addr < image_range[1]:
            s.out[name] = (addr, "vmcoreinfo")


def _linux_banner(s: _Search, banner: bytes) -> None:
    if not s.want("linux_banner"):
        return
    text = banner.rstrip(b"\0")
    hits = list(s.image.find_all(text + (b"" if text.endswith(b"\n") else b"\n") + b"\0"))
    if len(hits) > 1:
        s.notes.append(f"linux_banner: the /proc/version text is {len(hits)} times in the kernel image; "
                       "the first is taken")
    if hits:
        s.out["linux_banner"] = (hits[0], "/proc/version text in the kernel image")
    else:
        s.notes.append("linux_banner: the /proc/version text is not in the kernel image")


def _task_offsets(s: _Search) -> dict[str, int]:
    """Offsets of the task_struct members the init_task steps read; empty when BTF lacks one."""
    try:
        return {k: s.layout.offset("task_struct", k) for k in
                ("comm", "pid", "tgid", "tasks", "files", "fs", "nsproxy", "real_cred", "cred")}
    except KeyError as exc:
        s.notes.append(f"init_task: BTF has no {exc.args[0]}")
        return {}


def _init_task(s: _Search, task: dict[str, int]) -> int | None:
    """init_task's address: found in the image, or the one kallsyms lists (its pointers are still wanted)."""
    if task and s.want("init_task"):
        read, image = s.read, s.image
        found = []
        for comm in (b"swapper/0\0", b"swapper\0\0"):
            for hit in image.find_all(comm):
                base = hit - task["comm"]
                if base % 8 or base not in image:
                    continue
                pid, tgid = _u(read, base + task["pid"], 4), _u(read, base + task["tgid"], 4)
                if pid == 0 and tgid == 0 and _links_agree(read, base + task["tasks"]):
                    found.append(base)
            if found:
                break
        init_task = _unique(found, "init_task (task_struct with pid 0, comm swapper/0, tasks linked)", s.notes)
        if init_task is not None:
            s.out["init_task"] = (init_task, "task_struct layout in the kernel image")
        return init_task
    if "init_task" in s.known:
        return s.known["init_task"]
    return None


def _from_init_task(s: _Search, init_task: int, task: dict[str, int]) -> None:
    """The init_* structures init_task points at, directly or through its nsproxy, when they lie in the image."""
    read, image = s.read, s.image
    derived = [("init_files", "files"), ("init_fs", "fs"), ("init_nsproxy", "nsproxy"),
               ("init_cred", "real_cred")]
    for name, member in derived:
        ptr = _u(read, init_task + task[member])
        if ptr is not None and ptr in image and s.want(name):
            s.out[name] = (ptr, f"init_task.{member}")
    nsproxy = _u(read, init_task + task["nsproxy"])
    if nsproxy is None:
        return
    for name, member in (("init_net", "net_ns"), ("init_uts_ns", "uts_ns"),
                         ("init_pid_ns", "pid_ns_for_children")):
        try:
            ptr = _u(read, nsproxy + s.layout.offset("nsproxy", member))
        except KeyError:
            continue
        if ptr is not None and ptr in image and s.want(name):
            s.out[name] = (ptr, f"init_task.nsproxy->{member}")


def _init_mm(s: _Search) -> None:
    out, known = s.out, s.known
    pgd = next((a for n in ("init_top_pgt", "swapper_pg_dir") for a in (out.get(n, (None,))[0], known.get(n)) if a),
               None)
    if not s.want("init_mm") or pgd is None:
        return
    try:
        pgd_off, mmlist = s.layout.offset("mm_struct", "pgd"), s.layout.offset("mm_struct", "mmlist")
    except KeyError as exc:
        s.notes.append(f"init_mm: BTF has no {exc.args[0]}")
        return
    found = [hit - pgd_off for hit in s.image.find_all(struct.pack("<Q", pgd), 8)
             if hit - pgd_off in s.image and _links_agree(s.read, hit - pgd_off + mmlist)]
    mm = _unique(found, "init_mm (mm_struct whose pgd is the page-table root)", s.notes)
    if mm is not None:
        out["init_mm"] = (mm, "mm_struct whose pgd is the page-table root")


def _net_namespace_list(s: _Search) -> None:
    init_net = s.out.get("init_net", (None,))[0]
    if not s.want("net_namespace_list") or init_net is None:
        return
    try:
        node = init_net + s.layout.offset("net", "list")
    except KeyError:
        return
    if _links_agree(s.read, node):
        heads = [n for n in _walk(s.read, node) if n in s.image]
        head = _unique(heads, "net_namespace_list (the node of init_net.list in the kernel image)", s.notes)
        if head is not None:
            s.out["net_namespace_list"] = (head, "init_net.list")


def _modules(s: _Search, module_structs: list[int]) -> None:
    if not s.want("modules"):
        return
    if not module_structs:
        s.notes.append("modules: no module is loaded, so the empty list head cannot be told from others")
        return
    heads = []
    list_off = s.layout.offset("module", "list")
    for mod in module_structs:
        node = mod + list_off
        if _links_agree(s.read, node):
            heads += [n for n in _walk(s.read, node) if n in s.image]
    head = _unique(heads, "modules (the node of the loaded modules' list in the kernel image)", s.notes)
    if head is not None:
        s.out["modules"] = (head, "struct module list")


def _ops(s: _Search, name: str, struct_name: str, members: dict[str, str], others_zero: bool) -> None:
    """A read-only operations structure recognised by the text symbols its function pointers hold (and, with
    ``others_zero``, by its other pointers being NULL)."""
    if not s.want(name):
        return
    layout, image = s.layout, s.image
    try:
        wanted = {layout.offset(struct_name, m): s.known[sym] for m, sym in members.items()}
    except KeyError as exc:
        s.notes.append(f"{name}: {exc.args[0]} unknown")
        return
    first_off, first = min(wanted.items())
    size = layout.size(struct_name)
    found = []
    for hit in image.find_all(struct.pack("<Q", first), 8):
        base = hit - first_off
        if not all(image.u64(base + off) == value for off, value in wanted.items()):
            continue
        if others_zero and any(image.u64(base + off) for off, ptr in layout.fields(struct_name)
                               if ptr and off not in wanted and off + 8 <= size):
            continue
        found.append(base)
    addr = _unique(found, f"{name} ({struct_name} of {', '.join(members.values())})", s.notes)
    if addr is not None:
        s.out[name] = (addr, f"{struct_name} whose functions are {', '.join(members.values())}")


# The first three entries of each architecture's sys_call_table (its system calls 0, 1, 2): x86_64 numbers its
# own (read, write, open); arm64 uses the generic table (io_setup, io_destroy, io_submit).
SYSCALLS_FIRST = (("__x64_sys_read", "__x64_sys_write", "__x64_sys_open"),
                  ("__arm64_sys_io_setup", "__arm64_sys_io_destroy", "__arm64_sys_io_submit"))


def _sys_call_table(s: _Search) -> None:
    known = s.known
    names = next((n for n in SYSCALLS_FIRST if all(sym in known for sym in n)), None)
    if not s.want("sys_call_table") or names is None:
        return
    first = struct.pack("<QQQ", *(known[n] for n in names))
    table = _unique(list(s.image.find_all(first, 8)), "sys_call_table", s.notes)
    if table is not None:
        s.out["sys_call_table"] = (table, f"{', '.join(names)} in a row")


def _timekeeper(image: _Image, layout: Layout, before: tuple[float, float], after: tuple[float, float],
                out: dict[str, tuple[int, str]], notes: list[str], slack: int = 3) -> None:
    """tk_core (``struct {seq; timekeeper}``, cacheline aligned): the timekeeper whose xtime_sec and ktime_sec
    are the wall and monotonic seconds of the moment the image was read and whose two clocks agree.
    (shadow_timekeeper holds the same values but is not the second member of a cacheline-aligned struct.)"""
    anon = next((n for n, t in layout.types.items() if set(t.get("fields", {})) == {"seq", "timekeeper"}), None)
    try:
        inner = layout.offset(anon, "timekeeper") if anon else None
        xtime, ktime = layout.offset("timekeeper", "xtime_sec"), layout.offset("timekeeper", "ktime_sec")
        mono, raw = layout.offset("timekeeper", "tkr_mono.clock"), layout.offset("timekeeper", "tkr_raw.clock")
    except KeyError as exc:
        notes.append(f"tk_core: BTF has no {exc.args[0]}")
        return
    if inner is None:
        notes.append("tk_core: BTF has no struct {seq; timekeeper}")
        return
    found = []
    for second in range(int(before[0]) - slack, int(after[0]) + slack + 1):
        for hit in image.find_all(struct.pack("<Q", second), 8):
            tk = hit - xtime
            k, c1, c2 = image.u64(tk + ktime), image.u64(tk + mono), image.u64(tk + raw)
            if (k is not None and before[1] - slack <= k <= after[1] + slack and c1 == c2 and c1 is not None
                    and c1 >= KERNEL_SPACE and (tk - inner) % 64 == 0):
                found.append(tk - inner)
    addr = _unique(found, "tk_core (the timekeeper of the time the image was read)", notes)
    if addr is not None:
        out["tk_core"] = (addr, "timekeeper whose seconds are now")


def module_structs(root: str = "/") -> list[int]:
    """Addresses of the loaded modules' ``struct module`` (root sees them in sysfs)."""
    base = os.path.join(root, "sys", "module")
    out = []
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return out
    for name in names:
        try:
            with open(os.path.join(base, name, "sections", ".gnu.linkonce.this_module"), encoding="ascii") as fh:
                value = int(fh.read().strip(), 16)
        except (OSError, ValueError):
            continue
        if value >= KERNEL_SPACE:
            out.append(value)
    return out


def kernel_image_range(kcore: Any, text: int | None) -> tuple[int, int] | None:
    """[start, end) of the KCORE_TEXT segment ([_text, _end)): the one holding ``_text``, or the highest
    segment below the modules area when kallsyms has no _text."""
    if text is not None:
        seg = kcore.segment(text)
        return (seg[0], seg[0] + seg[1]) if seg else None
    for vaddr, size, _off, _paddr in kcore.segments:
        if 0xFFFFFFFF80000000 <= vaddr < 0xFFFFFFFFC0000000:
            return vaddr, vaddr + size
    return None


ESSENTIAL = ("init_task", "linux_banner", "init_mm", "init_files", "modules", "net_namespace_list",
             "socket_file_ops", "sockfs_dentry_operations")
PAGE_TABLE_ROOTS = ("init_top_pgt", "init_level4_pgt", "swapper_pg_dir")


def missing_essentials(names: set[str] | dict[str, Any]) -> list[str]:
    missing = [n for n in ESSENTIAL if n not in names]
    if not any(n in names for n in PAGE_TABLE_ROOTS):
        missing.append("the page-table root (init_top_pgt/swapper_pg_dir)")
    return missing


def recover_from(memory: Any, known: dict[str, int], user_types: dict[str, Any], banner: bytes,
                 modules: list[int], notes: list[str]) -> tuple[dict[str, tuple[int, str]], int | None]:
    """recover() over ``memory`` (a Kcore, or anything with its read/segment/vmcoreinfo), and the KASLR
    slide that its VMCOREINFO states (None when it does not)."""
    info = memory.vmcoreinfo()
    if not info:
        notes.append(f"{getattr(memory, 'path', 'kernel memory')} has no VMCOREINFO note (CONFIG_CRASH_CORE=n?)")
    text = known.get("_text") or vmcoreinfo_symbols(info).get("_stext")
    image_range = kernel_image_range(memory, text)
    if image_range is None:
        raise KcoreError(0, "no segment of kernel memory holds the kernel image")
    found = recover(memory.read, image_range, known, Layout(user_types), banner, info, modules, notes, clock=_clock)
    return found, kernel_offset(info)
