"""Volatile collectors against the real /proc of this machine, with processes and sockets we plant."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from collectors.base import Context, Problem, Record
from collectors.volatile import network, preload, processes, sessions, system


def _run(fn, **options) -> tuple[dict[str, list[dict]], list[Problem]]:
    ctx = Context(root="/", live=True, options=options)
    streams: dict[str, list[dict]] = {}
    problems = []
    for item in fn(ctx):
        if isinstance(item, Record):
            streams.setdefault(item.stream, []).append(item.data)
        elif isinstance(item, Problem):
            problems.append(item)
    return streams, problems


def _sha256(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def planted(tmp_path):
    """A deleted binary, a memfd binary and an LD_PRELOAD-ed process, all running."""
    sleep = shutil.which("sleep")
    copy = tmp_path / "ghost"
    shutil.copy(sleep, copy)
    deleted = subprocess.Popen([str(copy), "30"])
    time.sleep(0.2)
    copy.unlink()
    memfd_code = (
        "import os,sys;fd=os.memfd_create('payload',0);os.write(fd,open(sys.argv[1],'rb').read());"
        "os.execve(f'/proc/self/fd/{fd}',['kworker_fake','30'],{})"
    )
    memfd = subprocess.Popen([sys.executable, "-c", memfd_code, sleep], pass_fds=())
    env = dict(os.environ, LD_PRELOAD="/nonexistent/libhide.so", API_TOKEN="tok-123")
    preloaded = subprocess.Popen([sleep, "30"], env=env, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    yield {"deleted": deleted.pid, "memfd": memfd.pid, "preloaded": preloaded.pid, "sleep_sha": _sha256(sleep)}
    for p in (deleted, memfd, preloaded):
        p.kill()
        p.wait()


def test_processes_from_real_proc(planted):
    streams, _ = _run(processes.collect, suspicious_exe_prefixes=["/memfd:", "/tmp/"])
    by_pid = {p["pid"]: p for p in streams["processes"]}
    me = by_pid[os.getpid()]
    assert me["exe_sha256"] == _sha256(os.path.realpath(sys.executable))
    assert me["ppid"] == os.getppid() and me["uids"][0] == os.getuid()
    assert me["start_time_utc"].endswith("Z") and me["threads"] >= 1
    ghost = by_pid[planted["deleted"]]
    assert ghost["exe_deleted"] is True and ghost["exe_sha256"] == planted["sleep_sha"]
    mem = by_pid[planted["memfd"]]
    assert mem["exe_origin"] == "/memfd" and mem["exe_sha256"] == planted["sleep_sha"]
    assert mem["cmdline"][0] == "kworker_fake" and mem["kernel_thread"] is False
    pre = by_pid[planted["preloaded"]]
    assert pre["ld_preload"] == "/nonexistent/libhide.so"
    assert pre["environ"]["API_TOKEN"] == "tok-123"  # redaction happens at the sink, see test_redact
    fds = [f for f in streams["open_files"] if f["pid"] == os.getpid()]
    assert any(f["fd"] == 0 for f in fds)


def test_preload_finds_ld_preload(planted):
    streams, _ = _run(preload.collect)
    hits = [r for r in streams["preload"] if r.get("kind") == "process"]
    assert any(r["pid"] == planted["preloaded"] and r["environment"]["LD_PRELOAD"] == "/nonexistent/libhide.so"
               for r in hits)
    assert any(r["kind"] == "ld.so.preload" for r in streams["preload"])


def test_connections_with_owning_pid():
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.bind(("::1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("::1", port))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0triagent-test-" + str(os.getpid()))
    unix.listen()
    try:
        streams, _ = _run(network.connections)
        conns = streams["connections"]
        mine = [c for c in conns if any(o["pid"] == os.getpid() for o in c["owners"])]
        assert any(c["proto"] == "tcp" and c["family"] == "ipv6" and c["state"] == "LISTEN"
                   and c["local_port"] == port for c in mine)
        assert any(c["state"] == "ESTABLISHED" and c["remote_port"] == port for c in mine)
        assert any(c["proto"] == "udp" and c["local_ip"] == "127.0.0.1"
                   and c["local_port"] == udp.getsockname()[1] for c in mine)
        assert any(u["path"] == f"@triagent-test-{os.getpid()}" and u["listening"]
                   and u["owners"][0]["pid"] == os.getpid() for u in streams["unix_sockets"])
    finally:
        for s in (listener, client, udp, unix):
            s.close()


def test_network_config_and_system_facts():
    streams, _ = _run(network.config)
    assert any(i["name"] == "lo" and any(a["address"] == "127.0.0.1" for a in i["addresses"])
               for i in streams["interfaces"])
    streams, _ = _run(system.facts)
    facts = streams["system"][0]
    assert facts["kernel_release"] == os.uname().release
    assert facts["boot_id"] and facts["uptime_s"] > 0 and facts["boot_time_utc"].endswith("Z")
    assert any(m["mount_point"] == "/" for m in streams["mounts"])
    clock, _ = _run(system.clock)
    c = clock["clock"][0]
    assert abs(c["epoch_ns"] / 1e9 - time.time()) < 60 and c["utc_now"].endswith("Z")
    assert "ntp" in c and "clocksource" in c


def test_utmp_parser_roundtrip(tmp_path):
    import struct
    rec = struct.pack("<hxxi32s4s32s256shhiii16s20s", 7, 99, b"pts/3", b"ts/3", b"mallory", b"evil.example",
                      0, 0, 0, 1700000000, 5, bytes([192, 0, 2, 1]) + b"\0" * 12, b"")
    parsed = list(sessions.parse_utmp(rec + b"\0" * 384 + rec, "/var/log/wtmp"))
    assert len(parsed) == 3 and parsed[2]["index"] == 2 and parsed[2]["offset"] == 768
    # the zeroed record between them is kept as what it is, not as a login
    assert parsed[1] == {"source": "/var/log/wtmp", "index": 1, "offset": 384, "type": "EMPTY", "zeroed": True}
    assert parsed[0]["user"] == "mallory" and parsed[0]["type"] == "USER_PROCESS"
    assert parsed[0]["address"] == "192.0.2.1" and parsed[0]["time_utc"] == "2023-11-14T22:13:20.000005Z"
