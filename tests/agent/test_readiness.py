"""triagent readiness: the real checks on this host, then fake roots (planted /proc, /sys, /dev/shm) for
the deterministic cases, ISF folders and an ISF index with the planted banner, and loopback servers for
the upload check."""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import lzma
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "support"))

import kcore_fixture  # noqa: E402
from upload_servers import run_put_server  # noqa: E402

from agent import readiness as rd  # noqa: E402

REPO = TESTS.parent
BANNER = "Linux version 6.1.0-99-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, " \
         "GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1 (2026-11-01)"
SYNCED = {"synchronized": True, "state": "TIME_OK", "max_error_us": 12000}
FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 syscall nx"


# ---------------------------------------------------------------------------------------------- fake roots

def plant(root: Path, *, la57: bool = False, mem_kib: int = 4 << 20, shm_options: str = "rw,nosuid,nodev",
          shm_fs: str = "tmpfs", lockdown: str | None = "[none] integrity confidentiality", kcore: bool = True,
          btf: bool = False, banner: str = BANNER, uptime: float = 1000.0, start_ticks: list[tuple[str, int]] = (),
          euid_status: str = "0") -> Path:
    """A tree that looks like a healthy 4-level host unless told otherwise."""
    proc, sysd = root / "proc", root / "sys"
    (proc / "self").mkdir(parents=True, exist_ok=True)
    (proc / "sys" / "kernel").mkdir(parents=True, exist_ok=True)
    (root / "dev" / "shm").mkdir(parents=True, exist_ok=True)
    (proc / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {FLAGS}{' la57' if la57 else ''}\n\n")
    (proc / "meminfo").write_text(f"MemTotal:       {mem_kib} kB\nMemFree:        1000 kB\n")
    (proc / "version").write_text(banner + "\n")
    (proc / "cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n")
    (proc / "sys" / "kernel" / "osrelease").write_text("6.1.0-99-cloud-amd64\n")
    (proc / "self" / "status").write_text(f"Name:\ttriagent\nUid:\t{euid_status}\nCapEff:\t000001ffffffffff\n")
    (proc / "self" / "mountinfo").write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        f"25 22 0:23 / /dev/shm {shm_options} shared:4 - {shm_fs} tmpfs rw,size=2000000k\n")
    (proc / "uptime").write_text(f"{uptime:.2f} 1800.00\n")
    chain = list(start_ticks) or [("triagent", 99_950)]
    for i, (comm, ticks) in enumerate(chain):  # self, then its parents
        pid, ppid = (100 + i), (100 + i + 1) if i + 1 < len(chain) else 1
        stat = f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 " + " ".join(["0"] * 8) + f" 20 0 1 0 {ticks} 1 1"
        (proc / str(pid)).mkdir(exist_ok=True)
        (proc / str(pid) / "stat").write_text(stat + "\n")
        if i == 0:
            (proc / "self" / "stat").write_text(stat + "\n")
    if lockdown is not None:
        (sysd / "kernel" / "security").mkdir(parents=True, exist_ok=True)
        (sysd / "kernel" / "security" / "lockdown").write_text(lockdown + "\n")
    if btf:
        (sysd / "kernel" / "btf").mkdir(parents=True, exist_ok=True)
        (sysd / "kernel" / "btf" / "vmlinux").write_bytes(b"\x9f\xeb\x01\x00" + bytes(60))
    if kcore:
        kcore_fixture.build(proc, [(0x1000, 0x9FFFF), (0x100000, 0x1FFFFF)], la57=la57)
    return root


def isf(path: Path, banner: str, compress: str = "xz", first: bool = True) -> Path:
    """A minimal ISF whose linux_banner constant is `banner` as the kernel stores it (newline, NUL)."""
    data = base64.b64encode(banner.encode() + b"\n\0").decode()
    symbols = {"linux_banner": {"type": {"kind": "array", "count": len(banner) + 2}, "address": 0x1000,
                                "constant_data": data}, "init_task": {"type": {"kind": "struct"}, "address": 0x2000}}
    if not first:  # the quick look must not depend on key order
        symbols = dict(reversed(list(symbols.items())))
    doc = {"metadata": {"format": "6.2.0", "producer": {"name": "dwarf2json"}}, "base_types": {}, "user_types": {},
           "enums": {}, "symbols": symbols}
    raw = json.dumps(doc).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(raw) if compress == "xz" else gzip.compress(raw) if compress == "gz" else raw)
    return path


def run(root: Path, **kw) -> dict:
    kw.setdefault("euid", 0)
    kw.setdefault("ntp", lambda: SYNCED)
    kw.setdefault("bundled_symbols", False)
    return rd.readiness(str(root), **kw)


# ---------------------------------------------------------------------------------------------- this host

def test_this_host_for_real():
    result = rd.readiness("/")
    checks = result["checks"]
    has_kcore, has_btf = os.path.exists("/proc/kcore"), os.path.exists("/sys/kernel/btf/vmlinux")
    if not has_kcore:  # this machine: no /proc/kcore, so no memory image: never "ready"
        assert checks["kcore"]["status"] == "degraded" and checks["kcore"]["present"] is False
        assert result["status"] in ("degraded", "not-ready")
        assert any("/proc/kcore" in r for r in result["reasons"])
    assert checks["symbols"]["btf"] is has_btf
    assert (checks["symbols"]["status"] == "ok") is (has_btf or "isf" in checks["symbols"])
    cpu = Path("/proc/cpuinfo").read_text()
    if os.uname().machine == "x86_64":
        assert checks["paging"]["signal"] == "mmap-hint"
        # since 4.17 the kernel clears the la57 flag unless it runs with 5 levels: both signals agree
        assert checks["paging"]["kernel_5level"] == (" la57" in cpu)
    assert checks["root"]["status"] == ("ok" if os.geteuid() == 0 else "not-ready")
    assert checks["upload"]["status"] == "skipped"
    assert checks["clock"]["synchronized"] in (True, False)
    assert checks["shm"]["fs"] == "tmpfs" or checks["shm"]["status"] == "degraded"
    assert checks["start"]["process_age_s"] >= 0  # in process: the test runner's own age, bounded by nothing
    assert result["duration_s"] < 5


def _cli(*args: str) -> tuple[int, dict, str, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "agent.readiness", "readiness", *args], cwd=REPO,
                          capture_output=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= rd.LINE_LIMIT, proc.stdout[:3000]
    return proc.returncode, json.loads(lines[0]), proc.stderr.decode(), time.monotonic() - started


def test_cli_one_line_and_exit_codes():
    rc, result, _err, elapsed = _cli()
    assert rc == rd.EXIT[result["status"]] and rc not in (194, 168, 169)
    assert elapsed < 30
    if not os.path.exists("/proc/kcore"):
        rc, result, _err, _ = _cli("--require-memory")
        assert rc == 3 and result["status"] == "not-ready"
    proc = subprocess.run([sys.executable, "-m", "agent.readiness", "readiness", "--throughput", "0"], cwd=REPO,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2 and not proc.stdout
    proc = subprocess.run([sys.executable, "-m", "agent.readiness", "readiness", "--bogus"], cwd=REPO,
                          capture_output=True, timeout=60)
    assert proc.returncode == 2


def test_cli_on_a_fake_root(tmp_path):
    root = plant(tmp_path / "host", btf=True)
    rc, result, _err, _ = _cli("--root", str(root))
    checks = result["checks"]
    assert checks["kcore"]["status"] == "ok" and checks["kcore"]["pgtable_l5_enabled"] is False
    assert checks["paging"]["signal"] == "vmcoreinfo" and checks["clock"]["status"] == "skipped"
    assert result["kernel"] == "6.1.0-99-cloud-amd64" and result["host"] == "host"
    assert rc == rd.EXIT[result["status"]]


# ---------------------------------------------------------------------------------------------- fake roots

def test_healthy_fake_host_is_ready(tmp_path):
    root = plant(tmp_path / "r")
    symbols = tmp_path / "symbols"
    isf(symbols / "linux" / "a-other.json.xz", BANNER.replace("6.1.999-1", "6.1.998-1"))
    match = isf(symbols / "linux" / "debian-6.1.999.json.xz", BANNER, first=False)
    result = run(root, symbol_dirs=[str(symbols)])
    assert result["status"] == "ready", result["reasons"]
    assert result["reasons"] == []
    checks = result["checks"]
    assert checks["kcore"]["readable"] is True and checks["kcore"]["vmcoreinfo"] is True
    assert checks["symbols"]["isf"] == str(match) and checks["symbols"]["isf_files_seen"] == 2
    assert checks["memory"]["mem_total"] == 4 << 30
    assert checks["memory"]["upload_estimate_s"] == pytest.approx(85.9, 0.01)
    assert checks["lockdown"]["mode"] == "none" and checks["root"]["cap_eff"] == "000001ffffffffff"
    assert checks["start"]["launch_age_s"] == pytest.approx(0.5)
    assert rd.EXIT[result["status"]] == 0


def test_isf_in_other_compressions_and_missing_symbols(tmp_path):
    root = plant(tmp_path / "r")
    gz = isf(tmp_path / "gz" / "k.json.gz", BANNER, "gz")
    assert run(root, symbol_dirs=[str(gz.parent)])["checks"]["symbols"]["isf"] == str(gz)
    plain = isf(tmp_path / "plain" / "k.json", BANNER, "none")
    assert run(root, symbol_dirs=[str(plain.parent)])["checks"]["symbols"]["isf"] == str(plain)
    wrong = isf(tmp_path / "wrong" / "k.json.xz", BANNER + " extra")
    result = run(root, symbol_dirs=[str(wrong.parent), str(tmp_path / "nowhere")])
    sym = result["checks"]["symbols"]
    assert sym["status"] == "degraded" and "isf" not in sym and sym["missing_dirs"] == [str(tmp_path / "nowhere")]
    assert result["status"] == "degraded" and any("banner" in r for r in result["reasons"])
    root_btf = plant(tmp_path / "b", btf=True)
    sym = run(root_btf)["checks"]["symbols"]
    assert sym["status"] == "ok" and sym["btf"] is True and "BTF" in sym["note"]


def test_5level_paging_signals(tmp_path):
    with_kcore = run(plant(tmp_path / "a", la57=True))
    paging = with_kcore["checks"]["paging"]
    assert paging["kernel_5level"] is True and paging["signal"] == "vmcoreinfo" and paging["cpu_la57"] is True
    assert with_kcore["status"] == "degraded" and any("5-level" in r for r in with_kcore["reasons"])
    no_kcore = run(plant(tmp_path / "b", la57=True, kcore=False))["checks"]["paging"]
    assert no_kcore["kernel_5level"] is True and no_kcore["signal"] == "cpuinfo"
    four = run(plant(tmp_path / "c", kcore=False))["checks"]["paging"]
    assert four["kernel_5level"] is False and four["status"] == "ok"
    # a live probe outranks the files (and an unknown probe falls back to them)
    probed = run(plant(tmp_path / "d", la57=True), paging_probe=lambda: False)["checks"]["paging"]
    assert probed["kernel_5level"] is False and probed["signal"] == "mmap-hint"
    fallback = run(plant(tmp_path / "e", la57=True, kcore=False), paging_probe=lambda: None)["checks"]["paging"]
    assert fallback["signal"] == "cpuinfo"
    (tmp_path / "f").mkdir()
    root = plant(tmp_path / "f", kcore=False)
    (root / "proc" / "cmdline").write_text("root=/dev/sda1 no5lvl\n")
    (root / "proc" / "cpuinfo").write_text(f"flags\t: {FLAGS} la57\n")
    assert run(root)["checks"]["paging"]["kernel_5level"] is False


def test_live_mmap_probe():
    if os.uname().machine != "x86_64":
        assert rd.mmap_la57_probe() is None
        return
    assert rd.mmap_la57_probe() is (" la57" in Path("/proc/cpuinfo").read_text())


def test_kcore_states(tmp_path):
    missing = run(plant(tmp_path / "a", kcore=False))
    assert missing["checks"]["kcore"]["status"] == "degraded" and missing["status"] == "degraded"
    strict = run(plant(tmp_path / "b", kcore=False), require_memory=True)
    assert strict["status"] == "not-ready" and rd.EXIT[strict["status"]] == 3
    root = plant(tmp_path / "c", kcore=False)
    (root / "proc" / "kcore").write_bytes(b"MZ" + bytes(200))
    bad = run(root)["checks"]["kcore"]
    assert bad["status"] == "degraded" and "not an ELF" in bad["reason"]
    if os.geteuid() == 0:
        return  # root reads a mode-000 file anyway
    root = plant(tmp_path / "d")
    (root / "proc" / "kcore").chmod(0)
    assert run(root)["checks"]["kcore"]["readable"] is False


def test_lockdown_modes(tmp_path):
    conf = run(plant(tmp_path / "a", lockdown="none integrity [confidentiality]"))
    assert conf["checks"]["lockdown"]["status"] == "degraded" and conf["status"] == "degraded"
    integ = run(plant(tmp_path / "b", lockdown="none [integrity] confidentiality"))["checks"]["lockdown"]
    assert integ["status"] == "ok" and integ["mode"] == "integrity" and "/dev/mem" in integ["note"]
    assert run(plant(tmp_path / "c", lockdown=None))["checks"]["lockdown"]["mode"] is None


def test_not_root_is_not_ready(tmp_path):
    result = run(plant(tmp_path / "a"), euid=1000)
    assert result["status"] == "not-ready" and result["reasons"][0].startswith("not root")


def test_memory_budget(tmp_path):
    big = run(plant(tmp_path / "a", mem_kib=512 << 20), throughput_mbps=50, budget_s=3600)["checks"]["memory"]
    assert big["status"] == "degraded" and big["upload_estimate_s"] > 3600 and "512.0 GiB" in big["reason"]
    fits = run(plant(tmp_path / "b", mem_kib=512 << 20), throughput_mbps=500, budget_s=3600)["checks"]["memory"]
    assert fits["status"] == "ok"


def test_memory_available_for_the_collector(tmp_path):
    """Too little MemAvailable for the collector is degraded; with BTF, the symbols check says whether
    the table would be built here or, to spare the host, at analysis from shipped inputs."""
    def planted(name: str, available_kib: int) -> dict:
        root = plant(tmp_path / name, mem_kib=512 << 10, btf=True)
        (root / "sys" / "kernel" / "btf" / "vmlinux").write_bytes(b"\x9f\xeb\x01\x00" + bytes(4 << 20))
        meminfo = root / "proc" / "meminfo"
        meminfo.write_text(meminfo.read_text() + f"MemAvailable:   {available_kib} kB\n")
        return run(root)["checks"]

    short = planted("short", 100 << 10)
    assert short["memory"]["status"] == "degraded" and "only 100 MiB of memory available" in short["memory"]["reason"]
    assert short["memory"]["mem_available"] == 100 << 20
    assert "at analysis: 100 MiB available" in short["symbols"]["note"], short["symbols"]
    roomy = planted("roomy", 400 << 10)
    assert roomy["memory"]["status"] == "ok" and roomy["memory"]["mem_available"] == 400 << 20
    assert roomy["symbols"]["note"].endswith("built from BTF here"), roomy["symbols"]


def test_dev_shm(tmp_path):
    noexec = run(plant(tmp_path / "a", shm_options="rw,nosuid,nodev,noexec"))["checks"]["shm"]
    assert noexec["status"] == "degraded" and noexec["noexec"] is True and "noexec" in noexec["reason"]
    small = run(plant(tmp_path / "b"), min_shm=1 << 60)["checks"]["shm"]
    assert small["status"] == "degraded" and "MiB free" in small["reason"]
    disk = run(plant(tmp_path / "c", shm_fs="ext4"))["checks"]["shm"]
    assert disk["status"] == "degraded" and "not memory-backed" in disk["reason"]
    root = plant(tmp_path / "d")
    (root / "dev" / "shm").rmdir()
    assert run(root)["checks"]["shm"]["status"] == "degraded"


def test_clock(tmp_path):
    unsynced = run(plant(tmp_path / "a"), ntp=lambda: {"synchronized": False, "state": "TIME_ERROR",
                                                        "max_error_us": 16_000_000})
    assert unsynced["checks"]["clock"]["status"] == "degraded" and any("16 s" in r for r in unsynced["reasons"])
    live = rd.check_clock()  # reuses collectors.volatile.system.ntp_state
    assert live.facts["synchronized"] in (True, False)


def test_start_time_follows_the_launcher(tmp_path):
    # self started at 999.50 s, its bootloader parent (same name) at 999.00 s, the shell above at 10 s
    root = plant(tmp_path / "a", start_ticks=[("triagent", 99_950), ("triagent", 99_900), ("sh", 1_000)])
    start = run(root)["checks"]["start"]
    assert start["process_age_s"] == pytest.approx(0.5) and start["launch_age_s"] == pytest.approx(1.0)
    assert start["launcher_hops"] == 1 and start["status"] == "ok"
    slow = run(plant(tmp_path / "b", start_ticks=[("triagent", 99_950), ("triagent", 90_000)]))["checks"]["start"]
    assert slow["status"] == "degraded" and slow["launch_age_s"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------- servers

class _Index(http.server.BaseHTTPRequestHandler):
    body = b"{}"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/banners.json" else 404)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def test_isf_index_server(tmp_path):
    key = base64.b64encode(BANNER.encode() + b"\n\0").decode()
    _Index.body = json.dumps({"version": 1, "linux": {key: ["https://example.invalid/k.json.xz"]}}).encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        root = plant(tmp_path / "a")
        sym = run(root, isf_url=f"{base}/banners.json")["checks"]["symbols"]
        assert sym["status"] == "ok" and sym["isf_server"] is True
        other = run(plant(tmp_path / "b", banner=BANNER + "x"), isf_url=f"{base}/banners.json")["checks"]["symbols"]
        assert other["status"] == "degraded" and other["isf_server"] is False
        gone = run(root, isf_url=f"{base}/missing.json?sig=secret")["checks"]["symbols"]
        assert gone["status"] == "degraded" and "404" in gone["isf_server_error"] and "secret" not in json.dumps(gone)
    finally:
        server.shutdown()
        server.server_close()


def test_upload_check_against_tls_put_server(tmp_path):
    with run_put_server(token="ready-token") as (server, ca):
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        token = tmp_path / "token"
        token.write_text("ready-token\n")
        url = f"{server.url}/readiness/host1.txt"
        ticket = tmp_path / "ticket.json"
        ticket.write_text(json.dumps({"format": "triagent-upload-ticket/1", "kind": "https-put", "url": url,
                                      "read_url": url, "destination": url, "bearer_token_file": str(token)}))
        root = plant(tmp_path / "r")
        up = run(root, upload=str(ticket), ca_bundle=str(ca_file))["checks"]["upload"]
        assert up["status"] == "ok" and up["read_back_match"] is True and up["kind"] == "https-put"
        assert server.objects["/readiness/host1.txt"].startswith(b"triagent readiness ")
        head = run(root, upload=str(ticket), upload_mode="head", ca_bundle=str(ca_file))["checks"]["upload"]
        assert head["status"] == "ok" and head["http_status"] in (200, 404, 405, 501)
        untrusted = run(root, upload=str(ticket))  # TLS checks stay on: an unknown CA is a failure
        assert untrusted["status"] == "not-ready" and untrusted["checks"]["upload"]["status"] == "not-ready"
        token.write_text("wrong\n")
        denied = run(root, upload=str(ticket), ca_bundle=str(ca_file))["checks"]["upload"]
        assert denied["status"] == "not-ready" and "401" in denied["reason"]
    closed = run(root, upload="http://127.0.0.1:9/nothing")
    assert closed["checks"]["upload"]["status"] == "not-ready" and closed["status"] == "not-ready"
    bad = run(root, upload=str(tmp_path / "no-such-ticket.json"))["checks"]["upload"]
    assert bad["status"] == "not-ready" and "ticket" in bad["reason"]


# ---------------------------------------------------------------------------------------------- output

def test_render_stays_within_the_limit(tmp_path):
    result = run(plant(tmp_path / "a", kcore=False, lockdown="[confidentiality]", shm_options="rw,noexec"),
                 euid=1000, symbol_dirs=[str(tmp_path / (f"missing-{i}" * 5)) for i in range(5)])
    result["reasons"] += ["x" * 240] * 20
    text = rd.render(result, limit=900)
    assert len(text) <= 900
    back = json.loads(text)
    assert back["status"] == "not-ready" and back["checks"]["root"]["status"] == "not-ready"


def test_aggregate_fleet_table():
    lines = [
        {"host": "web-1", "status": "ready", "reasons": []},
        {"host": "db-1", "status": "not-ready", "reasons": ["not root (euid 1000): no /proc/kcore, other users'"]},
        {"host": "web-2", "status": "degraded",
         "reasons": ["no /proc/kcore (kernel without CONFIG_PROC_KCORE, or hidden in this container): no memory image",
                     "clock not synchronised", "5-level paging (LA57)", "/dev/shm is noexec"]},
        {"instance": "i-0abc", "error": "invocation timed out"},
    ]
    table = rd.aggregate(lines)
    rows = table.splitlines()
    assert rows[0].split() == ["HOST", "STATUS", "MAIN", "REASONS"]
    assert [r.split()[0] for r in rows[1:5]] == ["db-1", "i-0abc", "web-2", "web-1"]
    assert "invocation timed out" in rows[2] and "unknown" in rows[2]
    assert "no /proc/kcore (kernel without CONFIG_PROC_KCORE, or hidden in this container)" in rows[3]
    assert "(+1 more)" in rows[3] and rows[4].rstrip().endswith("-")
    assert rows[-1] == "4 hosts: 1 ready, 1 degraded, 1 not-ready, 1 unknown"
    assert rd.aggregate([]).splitlines()[-1] == "0 hosts: 0 ready, 0 degraded, 0 not-ready"
