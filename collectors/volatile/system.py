"""Clock facts and system facts: kernel, identity, uptime, mounts, kernel modules.

Each loaded module (``modules`` stream) names the file modules.dep gives for it in the evidence root's
/lib/modules/RELEASE (``module_file``, with its size, mtime and SHA-256 as stored on disk, bounded per file
and in total). That is the file modprobe would load for the name, not proof of what was loaded: a module
insmod-ed from elsewhere under an installed module's name hashes the installed file (memory tells)."""

from __future__ import annotations

import ctypes
import hashlib
import os
import time
from collections.abc import Iterator

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import is_dir, open_regular, read_capped, readlink, walk_tree
from collectors.util import read_text, text, utc

TIME_STATES = {0: "TIME_OK", 1: "TIME_INS", 2: "TIME_DEL", 3: "TIME_OOP", 4: "TIME_WAIT", 5: "TIME_ERROR"}
STA_UNSYNC = 0x0040
TAINT_FLAGS = "PFSRMBUDAWCIOELKXTN"  # bit n -> letter, as in Documentation/admin-guide/tainted-kernels


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def ntp_state() -> dict:
    """Kernel NTP discipline state through adjtimex(2) with modes=0 (read-only, no privilege)."""
    # CDLL(None): the C library already in our process. ctypes.util.find_library would run ldconfig.
    libc = ctypes.CDLL(None, use_errno=True)
    tx = _Timex()
    state = libc.adjtimex(ctypes.byref(tx))
    if state < 0:
        raise OSError(ctypes.get_errno(), "adjtimex failed")
    return {"state": TIME_STATES.get(state, state), "status_flags": tx.status,
            "synchronized": state != 5 and not tx.status & STA_UNSYNC,
            "max_error_us": tx.maxerror, "est_error_us": tx.esterror, "offset": tx.offset, "tai_offset_s": tx.tai}


def _try(facts: dict, key: str, fn, problems: list) -> None:
    try:
        facts[key] = fn()
    except OSError as exc:
        facts[key] = None
        problems.append(Problem.from_os_error(exc, f"cannot read {key}"))
    except (ValueError, IndexError) as exc:
        facts[key] = None
        problems.append(Problem(f"cannot parse {key}: {exc}", level="warning"))


def clock_facts(root: str = "/") -> tuple[dict, list[Problem]]:
    problems: list[Problem] = []
    now_ns = time.time_ns()
    facts: dict = {
        "utc_now": utc(now_ns / 1e9), "epoch_ns": now_ns,
        "monotonic_s": time.clock_gettime(time.CLOCK_MONOTONIC),
        "boottime_s": time.clock_gettime(time.CLOCK_BOOTTIME),
    }
    facts["boot_utc_from_clocks"] = utc(now_ns / 1e9 - facts["boottime_s"])
    _try(facts, "timezone_file", lambda: _in_root_text(root, "/etc/timezone", 4096).strip(), problems)
    _try(facts, "localtime_link", lambda: readlink(_root_context(root), "/etc/localtime"), problems)
    facts["tz_env"] = os.environ.get("TZ")
    facts["local_utc_offset_s"] = -time.timezone if not time.localtime().tm_isdst else -time.altzone
    facts["tzname"] = list(time.tzname)
    cs = "/sys/devices/system/clocksource/clocksource0"
    _try(facts, "clocksource", lambda: read_text(f"{cs}/current_clocksource").strip(), problems)
    _try(facts, "clocksources_available", lambda: read_text(f"{cs}/available_clocksource").split(), problems)
    _try(facts, "ntp", ntp_state, problems)
    _try(facts, "rtc_epoch_s", lambda: int(read_text("/sys/class/rtc/rtc0/since_epoch")), problems)
    if facts.get("rtc_epoch_s") is not None:
        facts["rtc_minus_system_s"] = facts["rtc_epoch_s"] - now_ns // 1_000_000_000
    return facts, [p for p in problems if p.errno not in (2,)]


def clock(ctx: Context) -> Iterator[Item]:
    facts, problems = clock_facts(ctx.root)
    yield Record("clock", facts)
    yield from problems


def _root_context(root: str) -> Context:
    return Context(root=root, live=os.path.realpath(root) == "/", options={})


def _in_root_text(root: str, path: str, limit: int) -> str:
    """A file of the evidence root, read inside it (a link in an image cannot reach the responder's files)."""
    return text(read_capped(_root_context(root), path, limit)[0])


def host_identity(root: str = "/", live: bool = True) -> dict:
    """Identifiers for the custody record; every field optional (a missing one is None)."""

    def first_line(path: str) -> str | None:
        try:
            return read_text(path, 4096).strip() or None
        except OSError:
            return None

    def in_root(path: str) -> str | None:
        try:
            return _in_root_text(root, path, 4096).strip() or None
        except (OSError, ValueError):
            return None

    ident = {
        "hostname_file": in_root("/etc/hostname"),
        "machine_id": in_root("/etc/machine-id"),
    }
    if live:
        uname = os.uname()
        ident.update({
            "hostname": uname.nodename, "kernel_release": uname.release, "kernel_version": uname.version,
            "machine": uname.machine, "boot_id": first_line("/proc/sys/kernel/random/boot_id"),
            "product_uuid": first_line("/sys/class/dmi/id/product_uuid"),
            "sys_vendor": first_line("/sys/class/dmi/id/sys_vendor"),
            "product_name": first_line("/sys/class/dmi/id/product_name"),
            "board_asset_tag": first_line("/sys/class/dmi/id/board_asset_tag"),
            "chassis_asset_tag": first_line("/sys/class/dmi/id/chassis_asset_tag"),
        })
    ident["cloud_instance_id"] = in_root("/var/lib/cloud/data/instance-id")
    return ident


def _os_release(root: str) -> dict:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            data = _in_root_text(root, path, 65536)
        except (OSError, ValueError):
            continue
        out = {}
        for line in data.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                out[key.strip()] = value.strip().strip('"').strip("'")
        return out
    return {}


def _taint(value: int) -> list[str]:
    return [TAINT_FLAGS[bit] for bit in range(len(TAINT_FLAGS)) if value >> bit & 1]


def facts(ctx: Context) -> Iterator[Item]:
    problems: list[Problem] = []
    out: dict = host_identity(ctx.root, ctx.live)
    _try(out, "proc_version", lambda: read_text("/proc/version").strip(), problems)
    _try(out, "kernel_cmdline", lambda: read_text("/proc/cmdline").strip(), problems)
    _try(out, "tainted", lambda: int(read_text("/proc/sys/kernel/tainted")), problems)
    if out.get("tainted") is not None:
        out["taint_flags"] = _taint(out["tainted"])
    _try(out, "lockdown", lambda: read_text("/sys/kernel/security/lockdown").strip(), problems)
    _try(out, "domainname", lambda: read_text("/proc/sys/kernel/domainname").strip(), problems)
    _try(out, "uptime_s", lambda: float(read_text("/proc/uptime").split()[0]), problems)
    _try(out, "boot_time_epoch", lambda: int(next(line.split()[1] for line in read_text("/proc/stat").splitlines()
                                                   if line.startswith("btime "))), problems)
    out["boot_time_utc"] = utc(out.get("boot_time_epoch"))
    _try(out, "kptr_restrict", lambda: int(read_text("/proc/sys/kernel/kptr_restrict")), problems)
    _try(out, "modules_disabled", lambda: int(read_text("/proc/sys/kernel/modules_disabled")), problems)
    out["os_release"] = _os_release(ctx.root)
    yield Record("system", out)
    yield from problems
    yield from _mounts(ctx)
    yield from _modules(ctx)


def _unescape_mount(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _mounts(ctx: Context) -> Iterator[Item]:
    try:
        data = read_text("/proc/self/mountinfo", 16 << 20)
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read mountinfo", "/proc/self/mountinfo")
        return
    for line in data.splitlines():
        pre, _, post = line.partition(" - ")
        f, g = pre.split(), post.split()
        if len(f) < 6 or len(g) < 2:
            continue
        yield Record("mounts", {"mount_id": int(f[0]), "parent_id": int(f[1]), "device": f[2],
                                "root": _unescape_mount(f[3]), "mount_point": _unescape_mount(f[4]),
                                "options": f[5], "optional": f[6:], "fstype": g[0],
                                "source": _unescape_mount(g[1]), "super_options": g[2] if len(g) > 2 else ""})


MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def installed_modules(ctx: Context, release: str) -> tuple[str, dict[str, str] | None]:
    """The kernel's own module tree: {module name: path} (names with '-' as '_', as the kernel shows
    them), or None when the tree is missing. A module loaded from anywhere else (insmod /tmp/x.ko) is
    how rootkits arrive."""
    tree = f"/lib/modules/{release}"
    found: dict[str, str] = {}
    if not is_dir(ctx, tree):
        return tree, None
    # links into kernel headers, not modules
    start = None
    for folder, files, _ in walk_tree(ctx, tree, frozenset({"build", "source"})):
        start = start or folder  # the tree's in-root path (/lib is often a link to usr/lib)
        for name in files:
            for suffix in MODULE_SUFFIXES:
                if name.endswith(suffix):
                    found.setdefault(name[: -len(suffix)].replace("-", "_"), f"{tree}{folder[len(start):]}/{name}")
    return tree, found


def module_dep(ctx: Context, release: str, cap: int = 16 << 20) -> dict[str, str]:
    """{module name: path} from the tree's modules.dep (what modprobe loads for a name), read inside the
    evidence root; names with '-' as '_', as /proc/modules shows them. Empty when there is none."""
    tree = f"/lib/modules/{release}"
    try:
        data, _, _ = read_capped(ctx, f"{tree}/modules.dep", cap)
    except (OSError, ValueError):
        return {}
    out: dict[str, str] = {}
    for line in text(data).splitlines():
        path = line.partition(":")[0].strip()
        name = path.rsplit("/", 1)[-1]
        for suffix in MODULE_SUFFIXES:
            if name.endswith(suffix):
                # relative to the tree (kmod); old depmod wrote absolute paths. Either way fsread keeps it in the root.
                full = path if path.startswith("/") else f"{tree}/{path}"
                out.setdefault(name[: -len(suffix)].replace("-", "_"), full)
                break
    return out


def hash_module_files(ctx: Context, files: dict[str, str], names: list[str], per_file: int,
                      total: int) -> tuple[dict[str, dict], int]:
    """SHA-256 of each loaded module's file (the file modules.dep names, as stored: a .ko.xz is hashed
    compressed), bounded per file and in total; the cap is named in the record of a file that hits it.
    Returns ({name: fields}, bytes left)."""
    out: dict[str, dict] = {}
    for name in names:
        path = files.get(name)
        if path is None:
            continue
        facts: dict = {"module_file": path}
        out[name] = facts
        try:
            fd, st, where = open_regular(ctx, path)
        except (OSError, ValueError) as exc:
            facts["module_file_error"] = str(getattr(exc, "strerror", None) or exc)
            continue
        try:
            facts.update({"module_file": where, "module_file_size": st.st_size,
                          "module_file_mtime_utc": utc(st.st_mtime)})
            if st.st_size > per_file:
                facts["module_file_hash_skipped"] = f"over {per_file} bytes"
                continue
            if st.st_size > total:
                facts["module_file_hash_skipped"] = "module hashing budget spent"
                continue
            digest, pos = hashlib.sha256(), 0
            while pos < st.st_size:
                ctx.check()
                with ctx.blocking(where):
                    chunk = os.pread(fd, 1 << 20, pos)
                if not chunk:
                    break
                digest.update(chunk)
                pos += len(chunk)
            total -= pos
            facts["module_file_sha256"] = digest.hexdigest()
        except OSError as exc:
            facts["module_file_error"] = str(exc.strerror or exc)
        finally:
            os.close(fd)
    return out, total


def _modules(ctx: Context) -> Iterator[Item]:
    loaded: set[str] = set()
    try:
        data = read_text("/proc/modules", 16 << 20)
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read /proc/modules", "/proc/modules")
        data = ""
    release = os.uname().release
    tree, installed = installed_modules(ctx, release) if data else ("", {})
    rows = [f for f in (line.split() for line in data.splitlines()) if len(f) >= 6]
    per_file = int(ctx.opt("module_hash_limit_bytes", 32 << 20))
    hashed, left = hash_module_files(ctx, module_dep(ctx, release) if rows else {}, [f[0] for f in rows], per_file,
                                     int(ctx.opt("module_hash_total_bytes", 512 << 20)))
    for f in rows:
        loaded.add(f[0])
        taint = f[6].strip("()") if len(f) > 6 else ""
        yield Record("modules", {"name": f[0], "size": int(f[1]), "refcount": int(f[2]),
                                 "used_by": [u for u in f[3].strip(",").split(",") if u and u != "-"],
                                 "state": f[4], "address": f[5], "taint": taint,
                                 "out_of_tree": "O" in taint, "unsigned": "E" in taint,
                                 "module_tree": tree, "module_tree_present": installed is not None,
                                 "installed_file": (installed or {}).get(f[0]),
                                 "module_file": None, **hashed.get(f[0], {})})
    if rows:
        yield Problem(f"kernel modules: {len(rows)} loaded, {sum('module_file_sha256' in h for h in hashed.values())} "
                      f"files hashed (cap {per_file} bytes per file)", level="info",
                      detail={"module_hash_limit_bytes": per_file, "module_hash_bytes_left": left,
                              "not_in_modules_dep": sorted(f[0] for f in rows if f[0] not in hashed)[:200]})
    try:
        names = sorted(os.listdir("/sys/module"))
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot list /sys/module", "/sys/module")
        return
    for name in names:
        ctx.check()
        base = f"/sys/module/{name}"
        rec: dict = {"name": name, "in_proc_modules": name in loaded}
        for attr in ("initstate", "refcnt", "taint", "srcversion", "version"):
            try:
                rec[attr] = text(open(f"{base}/{attr}", "rb").read(256)).strip()
            except OSError:
                pass
        # A loadable module (it has initstate) that /proc/modules does not list is hidden from it.
        rec["loadable"] = "initstate" in rec
        rec["hidden_from_proc_modules"] = rec["loadable"] and not rec["in_proc_modules"]
        yield Record("sys_modules", rec)
