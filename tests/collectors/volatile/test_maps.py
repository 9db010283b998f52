"""Process mappings (collectors/volatile/maps.py) and their rules (specs/rules/maps.yaml) on the real /proc:
real processes run a deleted copy of /bin/sleep from /dev/shm, dlopen() a library gcc built into /tmp, run
from a memfd, load a library from an odd folder with and without LD_PRELOAD, and map anonymous rwx memory.
Each rule fires on its planted process and stays quiet on its benign twin; over this host's own processes
the rules raise no high finding that the process list does not already explain."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agent.analysis import rules as engine
from collectors.base import Context, FileCopy, Problem, Record
from collectors.volatile import maps

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="map_files and other users' maps need root")
MAPS_RULES = [r for r in engine.load_rules() if r.id.startswith("TRI-MAPS-")]
SLEEP = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
LIB_SOURCE = "int triagent_probe(void) { return 42; }\n"
LOAD = "import ctypes,sys,time; ctypes.CDLL(sys.argv[1]); print('loaded', flush=True); time.sleep(120)"
# shellcode's staging: private anonymous rwx memory, and shared anonymous rwx (the kernel names it /dev/zero)
RWX = ("import mmap,time; p=mmap.PROT_READ|mmap.PROT_WRITE|mmap.PROT_EXEC;"
       "m=mmap.mmap(-1, 8192, flags=mmap.MAP_PRIVATE|mmap.MAP_ANONYMOUS, prot=p); m.write(b'\\xc3');"
       "s=mmap.mmap(-1, 12288, prot=p); print('loaded', flush=True); time.sleep(120)")
MEMFD = ("import os,sys; fd=os.memfd_create('payload',0); os.write(fd,open(sys.argv[1],'rb').read());"
         "os.execve(f'/proc/self/fd/{fd}', ['payload','120'], {})")


def _sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _library(where: Path, compiler: str) -> Path:
    src = where.with_suffix(".c")
    src.write_text(LIB_SOURCE)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(where), str(src)], check=True, capture_output=True)
    return where


def _wait(pid: int, test, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if test(pid):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} never reached the planted state")


def _loaded(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"loaded"


def _python(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, env=env)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Iterator[dict]:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        pytest.skip("no C compiler (tests/run.sh installs gcc)")
    tag = uuid.uuid4().hex[:8]
    tmp = tmp_path_factory.mktemp("maps")  # under /tmp: a writable place
    procs: dict[str, subprocess.Popen] = {}
    cleanup: list[Path] = []
    try:
        # (a) a copy of sleep run from /dev/shm, then deleted
        shm = Path(f"/dev/shm/tri-sleep-{tag}")
        shutil.copy(SLEEP, shm)
        os.chmod(shm, 0o755)
        procs["deleted"] = subprocess.Popen([str(shm), "120"])
        _wait(procs["deleted"].pid, lambda pid: str(shm) in Path(f"/proc/{pid}/maps").read_text())
        shm.unlink()
        # (b) a library gcc built into /tmp, dlopen()ed by ctypes (no LD_PRELOAD); named as netty names its
        # copies, which is no excuse outside a java
        tmp_lib = _library(tmp / f"libnetty_transport_native_epoll_x86_64{tag}b.so", compiler)
        procs["tmp_lib"] = _python(LOAD, str(tmp_lib))
        # (c) sleep run from a memfd through /proc/self/fd
        procs["memfd"] = _python(MEMFD, SLEEP)
        _wait(procs["memfd"].pid, lambda pid: os.readlink(f"/proc/{pid}/exe").startswith("/memfd:payload"))
        # (d) a library from a folder that is neither a library folder nor a writable place, loaded by dlopen()
        # and (its benign twin) by LD_PRELOAD
        odd = Path(f"/var/cache/triagent-test-{tag}")
        odd.mkdir()
        cleanup.append(odd)
        odd_lib = _library(odd / "libodd.so", compiler)
        procs["injected"] = _python(LOAD, str(odd_lib))
        procs["preloaded"] = _python(LOAD, str(odd_lib), env={**os.environ, "LD_PRELOAD": str(odd_lib)})
        # (e) anonymous rwx memory in a process that is no JIT
        procs["rwx"] = _python(RWX)
        # benign: a library in a system folder replaced (deleted) under the running process, as an upgrade does;
        # and one in a PyInstaller-style unpack folder in /tmp
        system_lib = _library(Path(f"/usr/local/lib/libtri-upgrade-{tag}.so"), compiler)
        cleanup.append(system_lib)
        procs["upgraded"] = _python(LOAD, str(system_lib))
        mei = tmp / "_MEI4hd82k"
        mei.mkdir()
        procs["pyinstaller"] = _python(LOAD, str(_library(mei / "libpython-like.so", compiler)))
        # benign: libffi's closure file (SELinux hosts) and netty's native library unpacked by a java, both
        # unlinked once mapped, as the runtimes do
        ffi = _library(Path(f"/tmp/ffi{tag[:6]}"), compiler)
        cleanup.append(ffi)
        procs["ffi"] = _python(LOAD, str(ffi))
        java = tmp / "jdk/bin/java"
        java.parent.mkdir(parents=True)
        shutil.copy(os.path.realpath(sys.executable), java)
        netty = _library(tmp / f"libnetty_transport_native_epoll_x86_64{tag}.so", compiler)
        procs["java"] = subprocess.Popen([str(java), "-c", LOAD, str(netty)], stdout=subprocess.PIPE,
                                         env={**os.environ, "PYTHONHOME": sys.base_prefix})
        for name in ("tmp_lib", "injected", "preloaded", "rwx", "upgraded", "pyinstaller", "ffi", "java"):
            _loaded(procs[name])
        for path in (system_lib, ffi, netty):
            path.unlink()
        cleanup.remove(system_lib)
        yield {**{name: p.pid for name, p in procs.items()}, "shm": str(shm), "tmp_lib": str(tmp_lib),
               "odd_lib": str(odd_lib), "system_lib": str(system_lib), "sleep_sha": _sha256(SLEEP),
               "tmp_lib_pid": procs["tmp_lib"].pid, "tmp_lib_sha": _sha256(str(tmp_lib)), "mei": str(mei),
               "ffi_path": str(ffi), "netty": str(netty)}
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _collect(**options) -> tuple[list[dict], list[Problem], list[FileCopy]]:
    rows, problems, copies = [], [], []
    for item in maps.collect(Context(root="/", live=True, options=options)):
        if isinstance(item, Record):
            assert item.stream == "process_maps"
            rows.append(item.data)
        elif isinstance(item, Problem):
            problems.append(item)
        elif isinstance(item, FileCopy):
            copies.append(item)
            item.close()
    return rows, problems, copies


def _findings(rows: list[dict]) -> list[dict]:
    feed = [("source", "triagent/artifacts/process_maps.jsonl", n, r) for n, r in enumerate(rows, 1)]
    return list(engine.evaluate(MAPS_RULES, lambda s: iter(feed if s == "process_maps" else []), time.time()))


def _rules_for(findings: list[dict], pid: int) -> set[str]:
    return {f["rule"] for f in findings if f.get("pid") == pid}


@pytest.fixture(scope="module")
def collected(planted) -> tuple[list[dict], list[Problem], list[FileCopy], list[dict]]:
    rows, problems, copies = _collect()
    return rows, problems, copies, _findings(rows)


def _of(rows: list[dict], pid: int) -> list[dict]:
    return [r for r in rows if r["pid"] == pid]


def test_deleted_program_from_dev_shm(planted, collected):
    rows, _, copies, findings = collected
    mine = _of(rows, planted["deleted"])
    exe = next(r for r in mine if r["is_exe"])
    assert exe["path"] == planted["shm"] and exe["deleted"] and exe["executable"]
    assert exe["writable_place"] == "/dev/shm" and "deleted_executable_mapping" in exe["flags"]
    assert exe["sha256"] == planted["sleep_sha"]  # through map_files: the file is gone from disk
    assert any(c.path == exe["content_copy"] for c in copies)
    assert "TRI-MAPS-001" in _rules_for(findings, planted["deleted"])
    # its libraries come from the library folders: no candidate, no other rule
    assert not any(r["injected_candidate"] for r in mine)
    assert _rules_for(findings, planted["deleted"]) == {"TRI-MAPS-001"}


def test_library_dlopened_from_tmp(planted, collected):
    rows, _, _, findings = collected
    lib = next(r for r in _of(rows, planted["tmp_lib_pid"]) if r["path"] == planted["tmp_lib"])
    assert lib["kind"] == "file" and lib["executable"] and not lib["is_exe"] and not lib["deleted"]
    assert lib["writable_place"] == "/tmp" and lib["injected_candidate"] and lib["ld_preload"] is None
    assert lib["sha256"] == planted["tmp_lib_sha"]
    assert {"writable_place_executable_mapping", "injected_candidate"} <= set(lib["flags"])
    # high for the /tmp library; the low candidate rule leaves writable places to it
    assert _rules_for(findings, planted["tmp_lib_pid"]) == {"TRI-MAPS-002"}


def test_program_run_from_memfd(planted, collected):
    rows, _, _, findings = collected
    mem = [r for r in _of(rows, planted["memfd"]) if r["kind"] == "memfd"]
    assert mem and mem[0]["memfd_name"] == "payload" and mem[0]["executable"] and mem[0]["is_exe"]
    assert mem[0]["exe"].startswith("/memfd:payload") and mem[0]["sha256"] == planted["sleep_sha"]
    assert "memfd_executable_mapping" in mem[0]["flags"]
    assert "TRI-MAPS-001" in _rules_for(findings, planted["memfd"])


def test_injected_library_without_ld_preload(planted, collected):
    rows, _, _, findings = collected
    lib = next(r for r in _of(rows, planted["injected"]) if r["path"] == planted["odd_lib"])
    assert lib["injected_candidate"] and lib["writable_place"] is None and not lib["listed_in_ld_so_preload"]
    assert "sha256" not in lib  # a file still on disk: the files artifacts read it
    assert _rules_for(findings, planted["injected"]) == {"TRI-MAPS-004"}
    # benign twin: the same library named by LD_PRELOAD is explained (the preload artifact reports it)
    twin = next(r for r in _of(rows, planted["preloaded"]) if r["path"] == planted["odd_lib"])
    assert not twin["injected_candidate"] and twin["ld_preload"] == planted["odd_lib"]
    assert not _rules_for(findings, planted["preloaded"])


def test_anonymous_rwx_outside_known_jits(planted, collected):
    rows, _, _, findings = collected
    anon = [r for r in _of(rows, planted["rwx"]) if r["kind"] == "anonymous" and r["writable_executable"]]
    assert anon and anon[0]["size"] >= 8192 and not anon[0]["jit_known"] and anon[0]["perms"] == ["rwxp"]
    shared = [r for r in _of(rows, planted["rwx"]) if r["kind"] == "shmem"]
    assert shared and shared[0]["path"] == "/dev/zero" and shared[0]["perms"] == ["rwxs"]
    assert shared[0]["writable_executable"] and not shared[0]["jit_known"]
    assert _rules_for(findings, planted["rwx"]) == {"TRI-MAPS-003"}
    # benign twin: the same program named a JIT (by its executable's name) raises nothing
    jit = os.path.basename(os.path.realpath(f"/proc/{planted['rwx']}/exe"))
    rows2, _, _ = _collect(jit_executables=[jit])
    anon2 = [r for r in _of(rows2, planted["rwx"]) if r["kind"] in ("anonymous", "shmem")]
    assert anon2 and all(r["jit_known"] for r in anon2)
    assert not _rules_for(_findings(rows2), planted["rwx"])


def test_benign_look_alikes_raise_nothing(planted, collected):
    rows, _, _, findings = collected
    upgraded = next(r for r in _of(rows, planted["upgraded"]) if r["path"] == planted["system_lib"])
    assert upgraded["deleted"] and upgraded["executable"] and "deleted_executable_mapping" in upgraded["flags"]
    assert not _rules_for(findings, planted["upgraded"])  # a system library replaced under a running process
    mei = [r for r in _of(rows, planted["pyinstaller"]) if r["path"].startswith(planted["mei"] + "/")]
    assert mei and mei[0]["writable_place"] == "/tmp"
    assert not _rules_for(findings, planted["pyinstaller"])  # PyInstaller's unpack folder
    # runtimes' own code in temporary files: low (TRI-MAPS-005), never the high rules
    ffi = next(r for r in _of(rows, planted["ffi"]) if r["path"] == planted["ffi_path"])
    assert ffi["deleted"] and "deleted_executable_mapping" in ffi["flags"]
    assert _rules_for(findings, planted["ffi"]) == {"TRI-MAPS-005"}
    netty = next(r for r in _of(rows, planted["java"]) if r["path"] == planted["netty"])
    assert netty["deleted"] and netty["writable_place"] == "/tmp" and netty["exe"].endswith("/jdk/bin/java")
    assert _rules_for(findings, planted["java"]) == {"TRI-MAPS-005"}
    # the same names in any other program are what they look like
    assert "TRI-MAPS-005" not in _rules_for(findings, planted["tmp_lib_pid"])
    # this very process (pytest, psutil's and yaml's C extensions from the venv's site-packages)
    own = _of(rows, os.getpid())
    assert own and all(r["own_process"] for r in own) and not any(r["injected_candidate"] for r in own)


def _explained(pid: int) -> bool:
    """A process another session planted or the process list already flags: runs a deleted, memfd or
    writable-place executable, is LD_PRELOADed, or descends from another pytest run."""
    try:
        proc = psutil.Process(pid)
        exe = os.readlink(f"/proc/{pid}/exe")
        if exe.endswith(" (deleted)") or exe.startswith(("/memfd:", "/tmp/", "/dev/shm/", "/var/tmp/")):
            return True
        if "LD_PRELOAD" in proc.environ():
            return True
        mine = {p.pid for p in psutil.Process().parents()} | {os.getpid()}
        return any("pytest" in " ".join(p.cmdline()) and p.pid not in mine for p in proc.parents())
    except (OSError, psutil.Error):
        return True  # gone: nothing to judge


def test_this_hosts_processes_raise_no_high_finding(planted, collected):
    rows, problems, _, findings = collected
    planted_pids = {v for k, v in planted.items() if isinstance(v, int)}
    assert len({r["pid"] for r in rows}) >= 5
    assert not [p for p in problems if "time budget" in p.message]
    unexplained = [f for f in findings if f["severity"] in ("critical", "high")
                   and f.get("pid") not in planted_pids and not _explained(f["pid"])]
    assert not unexplained, [f["summary"] for f in unexplained]
    summary = [p for p in problems if p.message.startswith("process maps:")]
    assert summary and summary[0].detail["hash_max_bytes"] == 64 << 20


def test_bounds(planted):
    rows, problems, copies = _collect(max_processes=3, max_lines_per_process=4, hash_max_bytes=1024)
    assert len({r["pid"] for r in rows}) <= 3
    assert any("only the first 3" in p.message for p in problems)
    rows, problems, copies = _collect(hash_max_bytes=1024, max_lines_per_process=100000)
    exe = next(r for r in _of(rows, planted["deleted"]) if r["is_exe"])
    assert "sha256" not in exe and exe["hash_skipped"] == "over 1024 bytes" and "content_copy" not in exe
    rows, problems, _ = _collect(time_budget_s=0)
    assert not rows and any("time budget spent" in p.message for p in problems)


def test_not_live_yields_nothing(tmp_path):
    items = list(maps.collect(Context(root=str(tmp_path), live=False, options={})))
    assert len(items) == 1 and isinstance(items[0], Problem) and items[0].level == "info"
    items = list(maps.collect(Context(root=str(tmp_path), live=True, options={})))
    assert len(items) == 1 and isinstance(items[0], Problem)


def test_rules_load_and_are_complete():
    assert {r.id for r in MAPS_RULES} == {f"TRI-MAPS-00{n}" for n in range(1, 6)}
    assert {r.severity for r in MAPS_RULES if r.id in ("TRI-MAPS-001", "TRI-MAPS-002")} == {"high"}


# ---- loaded kernel modules' files (collectors/volatile/system.py) ----------------------------------------------

def _module_root(tmp_path: Path) -> tuple[Path, str]:
    """A module tree as depmod lays it out: modules.dep with paths relative to the tree, one module stored
    xz-compressed (by xz itself) with a '-' in its file name, one plain, and a line that tries to leave the root."""
    from collectors.volatile import system

    release = "6.1.0-test-amd64"
    tree = tmp_path / "root" / "lib/modules" / release
    (tree / "kernel/drivers/net").mkdir(parents=True)
    (tree / "kernel/fs").mkdir(parents=True)
    (tree / "kernel/fs/tiny_fs.ko").write_bytes(b"\x7fELF" + b"\0" * 60 + b"tiny")
    dummy = tree / "kernel/drivers/net/dum-my.ko"
    dummy.write_bytes(b"\x7fELF" + os.urandom(5000))
    if shutil.which("xz"):
        subprocess.run(["xz", "-z", str(dummy)], check=True)
        dummy = dummy.with_suffix(".ko.xz")
    outside = tmp_path / "outside.ko"
    outside.write_bytes(b"responder's own file")
    (tree / "modules.dep").write_text(f"kernel/fs/tiny_fs.ko:\nkernel/drivers/net/{dummy.name}: kernel/fs/tiny_fs.ko\n"
                                      f"../../../../outside.ko:\n/lib/modules/{release}/kernel/fs/missing.ko:\n")
    assert set(system.MODULE_SUFFIXES) >= {".ko", ".ko.xz"}
    return tmp_path / "root", release


def test_loaded_module_files_hashed_inside_the_root(tmp_path):
    from collectors.volatile import system

    root, release = _module_root(tmp_path)
    ctx = Context(root=str(root), live=False, options={})
    files = system.module_dep(ctx, release)
    assert set(files) == {"tiny_fs", "dum_my", "outside", "missing"}
    hashed, left = system.hash_module_files(ctx, files, ["tiny_fs", "dum_my", "outside", "missing", "not_in_dep"],
                                            1 << 20, 1 << 20)
    tree = root / "lib/modules" / release
    tiny = hashed["tiny_fs"]
    assert tiny["module_file"] == f"/lib/modules/{release}/kernel/fs/tiny_fs.ko"
    assert tiny["module_file_sha256"] == _sha256(str(tree / "kernel/fs/tiny_fs.ko"))
    dummy = next((tree / "kernel/drivers/net").iterdir())
    assert hashed["dum_my"]["module_file_sha256"] == _sha256(str(dummy))  # as stored: compressed
    assert hashed["dum_my"]["module_file_size"] == dummy.stat().st_size
    # '..' stays inside the root (as in a chroot): the responder's file next to the root is never read
    assert "module_file_sha256" not in hashed["outside"] and "module_file_error" in hashed["outside"]
    assert "module_file_error" in hashed["missing"] and "not_in_dep" not in hashed
    assert left == (1 << 20) - tiny["module_file_size"] - hashed["dum_my"]["module_file_size"]
    # the caps: per file, and in total; the record names which
    small, _ = system.hash_module_files(ctx, files, ["tiny_fs", "dum_my"], 100, 1 << 20)
    assert "module_file_sha256" in small["tiny_fs"] and small["dum_my"]["module_file_hash_skipped"] == "over 100 bytes"
    spent, _ = system.hash_module_files(ctx, files, ["tiny_fs", "dum_my"], 1 << 20, 80)
    assert "module_file_sha256" in spent["tiny_fs"]
    assert spent["dum_my"]["module_file_hash_skipped"] == "module hashing budget spent"
    assert system.module_dep(ctx, "no-such-release") == {}


def test_modules_records_carry_their_files_hash(tmp_path, monkeypatch):
    """The modules stream as the system artifact writes it, for a kernel whose /proc/modules lists two modules
    (this machine's kernel has none: /proc/modules is given, the tree is the test root's)."""
    import types

    from collectors.volatile import system

    root, release = _module_root(tmp_path)
    real_read_text = system.read_text
    listing = ("tiny_fs 16384 1 dum_my, Live 0x0000000000000000\n"
               "dum_my 12288 0 - Live 0x0000000000000000 (OE)\n")
    monkeypatch.setattr(system, "read_text", lambda path, *a: listing if path == "/proc/modules"
                        else real_read_text(path, *a))
    monkeypatch.setattr(system.os, "uname", lambda: types.SimpleNamespace(release=release))
    ctx = Context(root=str(root), live=False, options={"module_hash_limit_bytes": 1 << 20})
    items = list(system._modules(ctx))
    mods = {i.data["name"]: i.data for i in items if isinstance(i, Record) and i.stream == "modules"}
    tree = root / "lib/modules" / release
    assert mods["tiny_fs"]["module_file_sha256"] == _sha256(str(tree / "kernel/fs/tiny_fs.ko"))
    assert mods["dum_my"]["module_file"].startswith(f"/lib/modules/{release}/kernel/drivers/net/dum-my.ko")
    assert mods["dum_my"]["out_of_tree"] and mods["dum_my"]["installed_file"] == mods["dum_my"]["module_file"]
    summary = next(i for i in items if isinstance(i, Problem) and i.message.startswith("kernel modules:"))
    assert summary.detail["module_hash_limit_bytes"] == 1 << 20 and summary.detail["not_in_modules_dep"] == []


def test_a_pid_that_exits_is_counted_not_an_error(monkeypatch):
    gone = subprocess.Popen(["/bin/true"])
    gone.wait()  # reaped: its pid names nothing now
    real_listdir = os.listdir
    monkeypatch.setattr(maps.os, "listdir", lambda p: real_listdir(p) + [str(gone.pid)] if p == "/proc"
                        else real_listdir(p))
    rows, problems, _ = _collect()
    assert rows and not any(r["pid"] == gone.pid for r in rows)
    vanished = [p for p in problems if "exited while being read" in p.message]
    assert vanished and vanished[0].level == "info" and vanished[0].detail["vanished"] >= 1
    assert not any(p.path == f"/proc/{gone.pid}/maps" for p in problems)


def test_maps_lines_with_spaces_and_deleted_names():
    line = "7f00a000-7f00b000 r-xp 00001000 fd:01 1234                       /tmp/a dir/lib x.so (deleted)"
    assert maps._parse_line(line) == (0x7F00A000, 0x7F00B000, "r-xp", "fd:01", 1234, "/tmp/a dir/lib x.so (deleted)")
    assert maps._parse_line("7f00a000-7f00b000 rw-p 00000000 00:00 0 ")[5] == ""
    assert maps._parse_line("garbage") is None
    assert maps._exe_tree("/opt/app/bin/app") == "/opt/app" and maps._exe_tree("/usr/bin/python3") is None


DENIED_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from collectors.base import Context, Problem
from collectors.volatile import maps
out = [{"level": p.level, "message": p.message, "path": p.path, "detail": p.detail}
       for p in maps.collect(Context(root="/", live=True, options={})) if isinstance(p, Problem)]
print(json.dumps(out))
"""


def test_maps_the_kernel_refuses_are_one_warning_with_a_count():
    """A process whose maps may not be read (ptrace access check: another user, another user namespace, Yama)
    is counted in one warning, never an error per process. Real: the collector runs as nobody without
    capabilities (util-linux setpriv) beside a root-owned sleep."""
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("setpriv (util-linux) not installed")
    root_owned = subprocess.Popen(["sleep", "60"])
    try:
        repo = str(Path(__file__).resolve().parents[3])
        proc = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                               sys.executable, "-c", DENIED_PROBE, repo], capture_output=True, text=True, timeout=120)
    finally:
        root_owned.kill()
        root_owned.wait()
    assert proc.returncode == 0, proc.stderr
    problems = json.loads(proc.stdout)
    assert not [p for p in problems if p["level"] == "error"], problems
    denied = [p for p in problems if "maps not readable" in p["message"]]
    assert len(denied) == 1 and denied[0]["level"] == "warning", problems
    assert denied[0]["detail"]["denied"] >= 1 and root_owned.pid in denied[0]["detail"]["pids"] or \
        denied[0]["detail"]["denied"] > 20


OWN_RUNTIME = """
import ctypes, json, sys
from collectors.base import Context, FileCopy, Record
from collectors.volatile import maps
sys._MEIPASS = sys.argv[1]  # as a PyInstaller onefile binary sets it: where it unpacked itself
ctypes.CDLL(sys.argv[1] + '/libpython-like.so')
ctypes.CDLL(sys.argv[2])
rows, copies = [], []
for item in maps.collect(Context(root='/', live=True, options={'max_processes': 1 << 20})):
    if isinstance(item, Record) and item.data.get('own_process'):
        rows.append(item.data)
    elif isinstance(item, FileCopy):
        copies.append(item.path)
        item.close()
print(json.dumps({'rows': rows, 'copies': copies}))
"""


def test_own_unpacked_runtime_is_listed_never_hashed_or_copied(tmp_path):
    """The built binary unpacks its libraries into /dev/shm/_MEI* (a writable place) and maps them: its own
    process's mappings of them are listed as its own and not read (before: hashed and copied, 20 MB of the
    binary's 10.6 MB bundle and a second of the volatile snapshot); a library from any other writable folder
    that the same process maps is still hashed and copied."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        pytest.skip("no C compiler (tests/run.sh installs gcc)")
    tag = uuid.uuid4().hex[:8]
    mei = Path(f"/dev/shm/_MEI{tag}")
    mei.mkdir()
    try:
        _library(mei / "libpython-like.so", compiler)
        other = _library(tmp_path / f"libother{tag}.so", compiler)
        repo = Path(__file__).resolve().parents[3]
        out = subprocess.run([sys.executable, "-c", OWN_RUNTIME, str(mei), str(other)], capture_output=True,
                             text=True, check=True, timeout=120, env={**os.environ, "PYTHONPATH": str(repo)})
    finally:
        shutil.rmtree(mei, ignore_errors=True)
    result = json.loads(out.stdout)
    own = next(r for r in result["rows"] if r["path"] == f"{mei}/libpython-like.so")
    assert own["own_file"] and own["writable_place"] == "/dev/shm" and "content_copy" not in own
    assert "sha256" not in own and "the collector's own file" in own["content_skipped"]
    assert not [c for c in result["copies"] if f"/map_files/{own['start']}-" in c]
    theirs = next(r for r in result["rows"] if r["path"] == str(other))
    assert theirs["sha256"] == _sha256(str(other)) and theirs["content_copy"] in result["copies"]
