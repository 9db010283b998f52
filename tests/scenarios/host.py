"""A clean Linux server as an evidence root: the distribution's layout, its accounts, its configuration
and a week of what its logs, login records and histories hold, written by the programs that write them
where this machine has them (ssh-keygen, bash, zsh, utmpdump -r, gzip, systemd-journal-remote).

The Host object gathers events (log lines, logins, history lines, file times) from the clean base and
from any intrusion pattern, then `finish()` writes them all in one place, sorted, in the host's formats."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import random
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAY = 86400
JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


@dataclass(frozen=True)
class Distro:
    key: str
    id: str
    version_id: str
    pretty: str
    family: str  # debian | rhel
    auth_log: str | None  # where rsyslog writes auth events, None: journal only
    syslog: str | None
    rfc3339: bool  # rsyslog's high-precision timestamps (Debian 12) instead of the traditional format
    default_user: str  # cloud-init's default user
    libdir: str
    pam_dir: str
    ssh_unit: str
    cron: str | None  # cron daemon name as it logs (CRON | CROND), None: no cron daemon (AL2023)
    pkg: str  # dpkg | rpm
    kernel: str
    codename: str = ""
    sshd_include: bool = True
    os_release: str = ""


def _debian_os_release() -> str:
    return ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
            'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL="https://www.debian.org/"\n'
            'SUPPORT_URL="https://www.debian.org/support"\nBUG_REPORT_URL="https://bugs.debian.org/"\n')


def _ubuntu_os_release(ver: str, full: str, codename: str, name: str) -> str:
    return (f'PRETTY_NAME="Ubuntu {full} LTS"\nNAME="Ubuntu"\nVERSION_ID="{ver}"\n'
            f'VERSION="{full} LTS ({name})"\nVERSION_CODENAME={codename}\nID=ubuntu\nID_LIKE=debian\n'
            'HOME_URL="https://www.ubuntu.com/"\nSUPPORT_URL="https://help.ubuntu.com/"\n'
            'BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"\n'
            'PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"\n'
            f'UBUNTU_CODENAME={codename}\n' + ('LOGO=ubuntu-logo\n' if ver == "24.04" else ""))


DISTROS = {
    "debian12": Distro("debian12", "debian", "12", "Debian GNU/Linux 12 (bookworm)", "debian", "/var/log/auth.log",
                       "/var/log/syslog", True, "admin", "/usr/lib/x86_64-linux-gnu",
                       "/usr/lib/x86_64-linux-gnu/security", "ssh", "CRON", "dpkg", "6.1.0-28-cloud-amd64",
                       "bookworm", os_release=_debian_os_release()),
    "ubuntu2204": Distro("ubuntu2204", "ubuntu", "22.04", "Ubuntu 22.04.5 LTS", "debian", "/var/log/auth.log",
                         "/var/log/syslog", False, "ubuntu", "/usr/lib/x86_64-linux-gnu",
                         "/usr/lib/x86_64-linux-gnu/security", "ssh", "CRON", "dpkg", "5.15.0-1072-aws",
                         "jammy", os_release=_ubuntu_os_release("22.04", "22.04.5", "jammy", "Jammy Jellyfish")),
    # Ubuntu 24.04's rsyslog writes RFC 3339 time stamps, like Debian 12's (dissect.target issue #903,
    # CrowdSec issue #4199); 22.04 keeps the traditional format
    "ubuntu2404": Distro("ubuntu2404", "ubuntu", "24.04", "Ubuntu 24.04.1 LTS", "debian", "/var/log/auth.log",
                         "/var/log/syslog", True, "ubuntu", "/usr/lib/x86_64-linux-gnu",
                         "/usr/lib/x86_64-linux-gnu/security", "ssh", "CRON", "dpkg", "6.8.0-1018-aws",
                         "noble", os_release=_ubuntu_os_release("24.04", "24.04.1", "noble", "Noble Numbat")),
    "al2": Distro("al2", "amzn", "2", "Amazon Linux 2", "rhel", "/var/log/secure", "/var/log/messages", False,
                  "ec2-user", "/usr/lib64", "/usr/lib64/security", "sshd", "CROND", "rpm",
                  "4.14.355-271.569.amzn2.x86_64", sshd_include=False,
                  os_release='NAME="Amazon Linux"\nVERSION="2"\nID="amzn"\nID_LIKE="centos rhel fedora"\n'
                             'VERSION_ID="2"\nPRETTY_NAME="Amazon Linux 2"\nANSI_COLOR="0;33"\n'
                             'CPE_NAME="cpe:2.3:o:amazon:amazon_linux:2"\nHOME_URL="https://amazonlinux.com/"\n'
                             'SUPPORT_END="2026-06-30"\n'),
    "al2023": Distro("al2023", "amzn", "2023", "Amazon Linux 2023.6.20241121", "rhel", None, None, False,
                     "ec2-user", "/usr/lib64", "/usr/lib64/security", "sshd", None, "rpm",
                     "6.1.115-126.197.amzn2023.x86_64",
                     os_release='NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nID_LIKE="fedora"\n'
                                'VERSION_ID="2023"\nPLATFORM_ID="platform:al2023"\n'
                                'PRETTY_NAME="Amazon Linux 2023.6.20241121"\nANSI_COLOR="0;33"\n'
                                'CPE_NAME="cpe:2.3:o:amazon:amazon_linux:2023"\nHOME_URL="https://aws.amazon.com/linux/'
                                'amazon-linux-2023/"\nSUPPORT_END="2029-06-30"\n'),
}


@dataclass
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    gecos: str = ""
    hash: str = "*"
    groups: list[str] = field(default_factory=list)
    zsh: bool = False


@dataclass
class Event:
    t: float
    prog: str
    msg: str
    pid: int | None
    stream: str  # auth | cron | syslog | kern
    unit: str = ""
    uid: int = 0


# --------------------------------------------------------------------------------------------------
# addresses


PRIVATE_NETS = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8",
                                                   "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
                                                   "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
                                                   "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3")]


def public_ip(rng: random.Random) -> str:
    while True:
        ip = ipaddress.ip_address(rng.randrange(1 << 24, 224 << 24))
        if not any(ip in n for n in PRIVATE_NETS):
            return str(ip)


def private_ip(rng: random.Random, net: str = "10") -> str:
    if net == "172":
        return f"172.{rng.randrange(16, 32)}.{rng.randrange(0, 256)}.{rng.randrange(2, 255)}"
    if net == "192":
        return f"192.168.{rng.randrange(0, 256)}.{rng.randrange(2, 255)}"
    return f"10.{rng.randrange(0, 256)}.{rng.randrange(0, 256)}.{rng.randrange(2, 255)}"


FIRST = ("alice bob carol dave erin frank grace heidi ivan judy mallory nina oscar peggy rupert sybil trent "
         "victor walter xavier yolanda zoe maria lucas sofia marco anna jonas lea tomas").split()
LAST = "smith jones garcia muller rossi dubois novak silva tanaka kowalski nielsen weber ferreira costa".split()
SCAN_USERS = ("admin test user oracle postgres ubuntu guest ftpuser git pi support deploy hadoop minecraft "
              "steam teamspeak ts3 es elastic jenkins tomcat nagios zabbix mysql sol solana validator odoo "
              "debian centos student dev devops ansible kafka redis www wordpress apache nginx docker "
              "user1 test1 administrator server demo backup").split()
UA_BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile "
    "Safari/537.36",
]
UA_BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 zgrab/0.x", "Expanse, a Palo Alto Networks company, searches across the global IPv4 space "
    "multiple times per day to identify customers&#39; presences on the Internet. If you would like to be "
    "excluded from our scans, please send IP addresses/domains to: scaninfo@paloaltonetworks.com",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
]
SCAN_PATHS = ["/.env", "/wp-login.php", "/.git/config", "/phpmyadmin/", "/admin/config.php", "/boaform/admin/formLogin",
              "/cgi-bin/luci/;stok=/locale", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", "/actuator/health",
              "/solr/admin/info/system", "/.aws/credentials", "/server-status", "/owa/auth/logon.aspx",
              "/HNAP1/", "/xmlrpc.php", "/config.json", "/.DS_Store"]


class Tools:
    """Programs and compiled payloads shared by every host of a run (built once)."""

    def __init__(self, cache: Path):
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)
        self.journal = JOURNAL_REMOTE.exists()
        self.db_load = shutil.which("db5.3_load") or shutil.which("db_load")  # Debian's db5.3-util

    def compile(self, name: str, source: str, shared: bool = False) -> bytes:
        digest = hashlib.sha256((source + str(shared)).encode()).hexdigest()[:16]
        out = self.cache / f"{name}-{digest}"
        if not out.exists():
            src = self.cache / f"{name}-{digest}.c"
            src.write_text(source)
            args = ["gcc", "-O1", "-s", "-o", str(out), str(src)]
            if shared:
                args[1:1] = ["-shared", "-fPIC"]
                args.append("-ldl")
            subprocess.run(args, check=True, capture_output=True, timeout=120)
        return out.read_bytes()


    def rpm(self, name: str, version: str, release: str, files: list[tuple[str, Path]]) -> Path:
        """A binary rpm that owns `files` (root path, file in the root), made by rpmbuild."""
        key = hashlib.sha256(repr((name, version, release, [(p, os.readlink(f) if f.is_symlink() else
                                                             hashlib.sha256(f.read_bytes()).hexdigest())
                                                            for p, f in files])).encode()).hexdigest()[:16]
        top = self.cache / f"rpm-{name}-{key}"
        found = list(top.glob("RPMS/*/*.rpm"))
        if found:
            return found[0]
        src = top / "src"
        src.mkdir(parents=True, exist_ok=True)
        install = []
        for i, (p, f) in enumerate(files):
            folder = os.path.dirname(p)
            if f.is_symlink():
                install.append(f"mkdir -p %{{buildroot}}{folder} && ln -s {os.readlink(f)} %{{buildroot}}{p}")
            else:
                shutil.copy2(f, src / str(i))
                install.append(f"mkdir -p %{{buildroot}}{folder} && cp -p {src / str(i)} %{{buildroot}}{p}")
        spec = top / f"{name}.spec"
        spec.write_text(f"Name: {name}\nVersion: {version}\nRelease: {release}\nSummary: {name}\nLicense: GPLv2+\n"
                        "AutoReqProv: no\n\n%description\n{name}\n\n%install\n" + "\n".join(install) +
                        "\n\n%files\n" + "".join(p + "\n" for p, _ in files))
        subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", "--define", "__strip /bin/true",
                        "--define", "debug_package %{nil}", "--define", "_build_id_links none",
                        "--define", "__brp_compress /bin/true", str(spec)], check=True, capture_output=True,
                       timeout=120)
        return next(top.glob("RPMS/*/*.rpm"))


class Host:
    def __init__(self, root: Path, rng: random.Random, distro: Distro, kind: str, tools: Tools,
                 now: float | None = None, public: bool | None = None):
        self.root, self.rng, self.d, self.kind, self.tools = root, rng, distro, kind, tools
        self.now = float(int(now or time.time()) - rng.randrange(300, 2400))
        self.public = public if public is not None else kind in ("web", "bastion")
        self.hostname = self._hostname()
        self.machine_id = f"{rng.getrandbits(128):032x}"
        self.boot_id = f"{rng.getrandbits(128):032x}"
        self.age_days = rng.choice([rng.randrange(40, 700), rng.randrange(12, 40)])
        self.created = self.now - self.age_days * DAY - rng.randrange(0, DAY)
        self.boot = self.now - rng.randrange(11, min(self.age_days, 60) + 12) * DAY - rng.randrange(0, DAY)
        self.window = self.now - rng.randrange(7, 11) * DAY  # activity is generated from here on
        self.private_net = rng.choice(["10", "172", "192"])
        self.ip = private_ip(rng, self.private_net)
        self.public_ip = public_ip(rng) if self.public else None
        self.bastion_ip = private_ip(rng, self.private_net)
        self.backup_ip = private_ip(rng, self.private_net)
        self.vpn_ip = private_ip(rng, self.private_net)
        self.accounts: dict[str, Account] = {}
        self.groups: dict[str, tuple[int, list[str]]] = {}
        self.events: list[Event] = []
        self.wtmp: list[tuple] = []  # (type, pid, line, id, user, host, addr, t)
        self.btmp: list[tuple] = []
        self.lastlog: dict[int, tuple[float, str, str]] = {}
        self.history: dict[str, list[tuple[float, str]]] = {}
        self.history_wiped: dict[str, float] = {}  # user -> time its history file was emptied
        self.history_keep: dict[str, str] = {}  # user -> raw file content that replaces the history
        self.hist_timestamps = False
        self.mtimes: dict[str, float] = {}
        self.web_log: str | None = None
        self.web: list[tuple[float, str]] = []  # access log lines (time, line)
        self.session = rng.randrange(1, 40)
        self.keys: dict[str, tuple[str, str]] = {}  # label -> (public line, fingerprint)
        self.notes: list[str] = []  # what was planted (shown in failures)
        self.log_filters: list[tuple[str, float]] = []  # (substring, time) lines removed from text logs
        self.truncated_logs: dict[str, float] = {}  # path -> time it was emptied
        self.utmp_filters: list[str] = []  # addresses removed from wtmp by an editor
        self.after: list = []  # callables run once everything is written (e.g. a history replaced by a link)
        self._pid_base = rng.randrange(600, 900)
        self._keydir = root.parent / f".keys-{root.name}"

    # ---- small helpers -------------------------------------------------------------------------

    def _hostname(self) -> str:
        if self.d.family == "rhel" or self.rng.random() < 0.4:
            a = self.rng.randrange(1, 255)
            b = self.rng.randrange(0, 255)
            return f"ip-10-{self.rng.randrange(0, 255)}-{a}-{b}"
        prefix = {"web": ["web", "www", "front", "shop"], "ci": ["ci", "runner", "build"],
                  "db": ["db", "pg", "sql", "data"], "bastion": ["bastion", "jump", "gw"]}[self.kind]
        return f"{self.rng.choice(prefix)}-{self.rng.choice(['prod', 'prd', 'eu1', 'fra', 'use1'])}-" \
               f"{self.rng.randrange(1, 20):02d}"

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def write(self, p: str, data: bytes | str, mode: int = 0o644, owner: str | None = None,
              mtime: float | None = None) -> Path:
        target = self.path(p)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent.name == ".ssh":
            os.chmod(target.parent, 0o700)
        if target.is_symlink():
            target.unlink()
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(target, mode)
        if owner:
            acct = self.accounts[owner]
            os.chown(target, acct.uid, acct.gid)
        self.mtimes[p] = mtime if mtime is not None else self.mtimes.get(p, self.created + self.rng.randrange(60, 900))
        return target

    def symlink(self, p: str, to: str, mtime: float | None = None) -> None:
        target = self.path(p)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        os.symlink(to, target)
        self.mtimes[p] = mtime or self.created + 300

    def touch(self, p: str, t: float) -> None:
        self.mtimes[p] = t

    def when(self, day_from: float = 0.0, day_to: float | None = None, hours: tuple[int, int] = (0, 24)) -> float:
        """A time in the activity window (days back from now), within the given hours of the day."""
        start = max(self.window, self.now - (day_to if day_to is not None else 99) * DAY)
        end = self.now - day_from * DAY
        for _ in range(50):
            t = self.rng.uniform(start, end)
            if hours[0] <= time.gmtime(t).tm_hour < hours[1]:
                return t
        return self.rng.uniform(start, end)

    def days(self) -> list[float]:
        """Midnights of every day of the activity window."""
        first = int(self.window // DAY) * DAY
        return [float(d) for d in range(first, int(self.now), DAY)]

    def pid(self, t: float) -> int:
        """Process ids grow with time since boot, as a busy host's do."""
        return self._pid_base + int(max(0.0, t - self.boot) / 37) % 4_000_000 + self.rng.randrange(0, 30)

    def log(self, t: float, prog: str, msg: str, pid: int | None = None, stream: str = "auth", unit: str = "",
            uid: int = 0) -> None:
        self.events.append(Event(t, prog, msg, pid, stream, unit, uid))

    def keygen(self, label: str, kind: str = "ed25519", comment: str | None = None) -> tuple[str, str]:
        """A key pair made by ssh-keygen (private half discarded): (public line, SHA256 fingerprint)."""
        self._keydir.mkdir(parents=True, exist_ok=True)
        key = self._keydir / re.sub(r"[^\w.-]", "_", label)
        if key.exists():
            key.unlink()
            (self._keydir / (key.name + ".pub")).unlink()
        extra = ["-b", "2048"] if kind == "rsa" else []  # EC2 key pairs are RSA 2048
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", comment or label, "-f", str(key)],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True)
        pub = (self._keydir / (key.name + ".pub")).read_text().strip()
        fp = subprocess.run(["ssh-keygen", "-lf", str(key) + ".pub"], check=True, capture_output=True,
                            text=True).stdout.split()[1]
        self.keys[label] = (pub, fp)
        return pub, fp

    # ---- accounts ------------------------------------------------------------------------------

    def group(self, name: str, gid: int, members: list[str] | None = None) -> None:
        old = self.groups.get(name, (gid, []))[1]
        self.groups[name] = (gid, old + [m for m in members or [] if m not in old])

    def account(self, name: str, uid: int, home: str | None = None, shell: str = "/bin/bash", gecos: str = "",
                groups: tuple[str, ...] = (), hashed: str | None = None, gid: int | None = None,
                make_home: bool = True) -> Account:
        home = home or f"/home/{name}"
        gid = uid if gid is None else gid
        acct = Account(name, uid, gid, home, shell, gecos, hashed or ("!" if uid >= 1000 else "*"), list(groups))
        self.accounts[name] = acct
        if gid not in {g for g, _ in self.groups.values()}:
            self.group(name, gid)
        for g in groups:
            if g in self.groups:
                self.group(g, self.groups[g][0], [name])
        if make_home and uid >= 1000:
            self.path(home).mkdir(parents=True, exist_ok=True)
            os.chown(self.path(home), uid, gid)
            os.chmod(self.path(home), 0o750 if self.d.id == "ubuntu" and self.d.version_id == "24.04" else 0o755)
            skel = self.d.family == "debian"
            self.write(f"{home}/.bashrc", BASHRC_DEBIAN if skel else BASHRC_RHEL, owner=name)
            self.write(f"{home}/.profile" if skel else f"{home}/.bash_profile",
                       PROFILE_DEBIAN if skel else BASH_PROFILE_RHEL, owner=name)
            self.write(f"{home}/.bash_logout", "# ~/.bash_logout: executed by bash(1) when login shell exits.\n"
                       if skel else "# ~/.bash_logout\n", owner=name)
        return acct

    def crypt_hash(self) -> str:
        alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        salt = "".join(self.rng.choice(alphabet) for _ in range(16))
        body = "".join(self.rng.choice(alphabet) for _ in range(43 if self.d.family == "debian" else 86))
        return f"$y$j9T${salt[:22]}${body}" if self.d.family == "debian" else f"$6${salt}${body}"

    def authorized(self, user: str, lines: list[str], t: float) -> None:
        acct = self.accounts[user]
        ssh = f"{acct.home}/.ssh"
        self.path(ssh).mkdir(parents=True, exist_ok=True)
        os.chown(self.path(ssh), acct.uid, acct.gid)
        os.chmod(self.path(ssh), 0o700)
        self.mtimes[ssh] = t
        self.write(f"{ssh}/authorized_keys", "".join(line + "\n" for line in lines), 0o600, owner=user, mtime=t)

    # ---- activity ------------------------------------------------------------------------------

    def sshd_pid(self, t: float) -> int:
        return self.pid(t)

    def ssh_login(self, user: str, ip: str, t: float, minutes: float = 10, method: str = "publickey",
                  key: str | None = None, commands: list[str] | None = None, tty: bool = True,
                  history: bool = True, sudo: list[str] | None = None) -> float:
        """An SSH session as sshd, PAM, logind, login records and the user's shell leave it. Returns its end."""
        acct = self.accounts[user]
        pid = self.sshd_pid(t)
        port = self.rng.randrange(32768, 61000)
        unit = f"{self.d.ssh_unit}.service"
        if method == "publickey":
            pub, fp = self.keys[key or user]
            ktype = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ecdsa-sha2-nistp256": "ECDSA"}[pub.split()[0]]
            self.log(t, "sshd", f"Accepted publickey for {user} from {ip} port {port} ssh2: {ktype} {fp}", pid,
                     unit=unit)
        else:
            self.log(t, "sshd", f"Accepted password for {user} from {ip} port {port} ssh2", pid, unit=unit)
        # PAM 1.5.3 (Ubuntu 24.04) names the login user (pam_loginuid has set it) before the uid
        self.log(t, "sshd", f"pam_unix(sshd:session): session opened for user {user}(uid={acct.uid}) by "
                 f"{user if self.d.key == 'ubuntu2404' else ''}(uid=0)", pid, unit=unit)
        self.session += 1
        sid = f"\0sid{self.session}\0"  # numbered in time order by finish()
        logind = self._pid_base - 200
        self.log(t, "systemd-logind", f"New session {sid} of user {user}.", logind, unit="systemd-logind.service")
        end = t + max(5.0, minutes * 60 * self.rng.uniform(0.5, 1.5))
        line = f"pts/{self.rng.randrange(0, 4)}"
        if tty:
            self.wtmp.append((7, pid + 2, line, line[-4:].replace("pts/", "ts/"), user, ip, ip, t + 1))
            self.wtmp.append((8, pid + 2, line, line[-4:].replace("pts/", "ts/"), "", "", "0.0.0.0", end))
            self.lastlog[acct.uid] = (t + 1, line, ip)
        step = t + self.rng.uniform(5, 30)
        cmds = list(commands or [])
        for i, cmd in enumerate(cmds):
            step = min(end - 2, step + self.rng.uniform(3, 90)) if i else step
            if history:
                self.history.setdefault(user, []).append((step, cmd))
            if cmd.startswith("sudo "):
                self.sudo(user, step, cmd[5:], pwd=acct.home, tty=line if tty else "unknown")
        for cmd in sudo or []:
            self.sudo(user, self.rng.uniform(t + 5, end - 1), cmd, pwd=acct.home, tty=line)
        self.log(end, "sshd", f"Received disconnect from {ip} port {port}:11: disconnected by user", pid, unit=unit)
        self.log(end, "sshd", f"Disconnected from user {user} {ip} port {port}", pid, unit=unit)
        self.log(end, "sshd", f"pam_unix(sshd:session): session closed for user {user}", pid, unit=unit)
        self.log(end, "systemd-logind", f"Session {sid} logged out. Waiting for processes to exit.", logind,
                 unit="systemd-logind.service")
        self.log(end + 0.01, "systemd-logind", f"Removed session {sid}.", logind, unit="systemd-logind.service")
        if history and cmds:
            self.touch(f"{acct.home}/.bash_history" if not acct.zsh else f"{acct.home}/.zsh_history", end)
        return end

    def _by(self) -> str:
        return "root" if self.d.key == "ubuntu2404" else ""

    def sudo(self, user: str, t: float, cmd: str, pwd: str | None = None, tty: str = "pts/0",
             target: str = "root") -> None:
        acct = self.accounts[user]
        pid = self.pid(t)
        cmd = re.split(r"\s*(?:\||;|&&|\d?>)", cmd)[0]  # what the shell keeps for itself never reaches sudo
        if cmd.startswith("-u "):
            _, target, cmd = cmd.split(" ", 2)
        binary = cmd.split()[0]
        if not binary.startswith("/"):
            binary = {"apt": "/usr/bin/apt", "apt-get": "/usr/bin/apt-get", "systemctl": "/usr/bin/systemctl",
                      "dnf": "/usr/bin/dnf", "yum": "/usr/bin/yum", "su": "/usr/bin/su", "sh": "/usr/bin/sh",
                      "docker": "/usr/bin/docker", "tail": "/usr/bin/tail", "journalctl": "/usr/bin/journalctl",
                      "less": "/usr/bin/less", "vi": "/usr/bin/vi", "cat": "/usr/bin/cat",
                      "nginx": "/usr/sbin/nginx", "certbot": "/usr/bin/certbot", "-i": "/bin/bash",
                      "useradd": "/usr/sbin/useradd", "usermod": "/usr/sbin/usermod",
                      "gitlab-runner": "/usr/bin/gitlab-runner", "tee": "/usr/bin/tee",
                      "crontab": "/usr/bin/crontab"}.get(binary, f"/usr/bin/{binary}")
        shown = binary + cmd[len(cmd.split()[0]):] if cmd.split()[0] != "-i" else "/bin/bash"
        self.log(t, "sudo", f"{user:>8} : TTY={tty} ; PWD={pwd or acct.home} ; USER={target} ; COMMAND={shown}", None,
                 uid=acct.uid)
        tuid = self.accounts[target].uid if target in self.accounts else 0
        self.log(t, "sudo", f"pam_unix(sudo:session): session opened for user {target}(uid={tuid}) by {user}(uid="
                 f"{acct.uid})", pid, uid=acct.uid)
        self.log(t + self.rng.uniform(0.2, 40), "sudo", f"pam_unix(sudo:session): session closed for user {target}",
                 pid, uid=acct.uid)

    def cron(self, t: float, user: str, cmd: str) -> None:
        if not self.d.cron:
            return
        pid = self.pid(t)
        uid = self.accounts[user].uid
        if self.d.family == "debian":
            self.log(t, "CRON", f"pam_unix(cron:session): session opened for user {user}(uid={uid}) by "
                     f"{self._by()}(uid=0)", pid, unit="cron.service")
            self.log(t, "CRON", f"({user}) CMD ({cmd})", pid, stream="syslog", unit="cron.service")
            self.log(t + self.rng.uniform(0.05, 3), "CRON", f"pam_unix(cron:session): session closed for user {user}",
                     pid, unit="cron.service")
        else:
            self.log(t, "crond", f"pam_unix(crond:session): session opened for user {user} by (uid=0)", pid,
                     unit="crond.service")
            self.log(t, "CROND", f"({user}) CMD ({cmd})", pid, stream="cron", unit="crond.service")
            self.log(t + self.rng.uniform(0.05, 3), "crond", f"pam_unix(crond:session): session closed for user {user}",
                     pid, unit="crond.service")

    def ssh_scans(self, count: int, password_auth: bool = False) -> None:
        """Internet SSH scanners: invalid users and root attempts from many addresses, each in btmp."""
        if not self.d.auth_log:  # journal only: fewer, to keep dissect.target's journal reading short
            count = max(40, count // 5)
        scanners = [public_ip(self.rng) for _ in range(max(3, count // 25))]
        unit = f"{self.d.ssh_unit}.service"
        for _ in range(count):
            ip = self.rng.choice(scanners)
            t = self.when()
            pid = self.pid(t)
            port = self.rng.randrange(1024, 65535)
            user = self.rng.choice(SCAN_USERS + ["root"] * 8)
            invalid = user not in self.accounts
            roll = self.rng.random()
            if roll < 0.08:
                self.log(t, "sshd", "error: kex_exchange_identification: Connection closed by remote host", pid,
                         unit=unit)
                self.log(t, "sshd", f"Connection closed by {ip} port {port}", pid, unit=unit)
                continue
            if roll < 0.12:
                self.log(t, "sshd", f"banner exchange: Connection from {ip} port {port}: invalid format", pid,
                         unit=unit)
                continue
            if invalid:
                self.log(t, "sshd", f"Invalid user {user} from {ip} port {port}", pid, unit=unit)
            if password_auth:
                if invalid:
                    self.log(t + 1, "sshd", "pam_unix(sshd:auth): check pass; user unknown", pid, unit=unit)
                    self.log(t + 1, "sshd", f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                             f"tty=ssh ruser= rhost={ip}", pid, unit=unit)
                else:
                    self.log(t + 1, "sshd", f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 "
                             f"tty=ssh ruser= rhost={ip}  user={user}", pid, unit=unit)
                self.log(t + 3, "sshd", f"Failed password for {'invalid user ' if invalid else ''}{user} from {ip} "
                         f"port {port} ssh2", pid, unit=unit)
            self.log(t + 3.5, "sshd", f"Received disconnect from {ip} port {port}:11: Bye Bye [preauth]", pid,
                     unit=unit)
            who = f"invalid user {user}" if invalid else f"authenticating user {user}"
            self.log(t + 3.5, "sshd", f"Disconnected from {who} {ip} port {port} [preauth]", pid, unit=unit)
            if invalid or password_auth:
                self.btmp.append((6, pid, "ssh:notty", "    ", user, ip, ip, t + 3))

    def web_hit(self, t: float, ip: str, method: str, path: str, status: int, size: int, ua: str,
                referer: str = "-") -> None:
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t))
        self.web.append((t, f'{ip} - - [{stamp}] "{method} {path} HTTP/1.1" {status} {size} "{referer}" "{ua}"'))

    # ---- writing -------------------------------------------------------------------------------

    def _stamp(self, t: float, rfc: bool) -> str:
        g = time.gmtime(t)
        if rfc:
            return time.strftime("%Y-%m-%dT%H:%M:%S", g) + f".{int((t % 1) * 1e6):06d}+00:00"
        return f"{MONTHS[g.tm_mon - 1]} {g.tm_mday:2d} {time.strftime('%H:%M:%S', g)}"

    def _line(self, e: Event, rfc: bool) -> str:
        tag = f"{e.prog}[{e.pid}]" if e.pid is not None else e.prog
        return f"{self._stamp(e.t, rfc)} {self.hostname} {tag}: {e.msg}"

    def _rotated(self, path: str, lines: list[tuple[float, str]], dateext: bool, daily: bool = False,
                 compress: bool | None = None) -> None:
        """One log and its rotations as logrotate leaves them, with delaycompress: the newest rotation
        plain, older ones gzipped; Debian and Ubuntu name them .1, .2.gz, Amazon Linux -YYYYMMDD (its
        syslog files uncompressed). Weekly for the system logs, daily for a web server's."""
        if path in self.truncated_logs:
            cut = self.truncated_logs[path]
            lines = [(t, x) for t, x in lines if t > cut]
        for sub, cut in self.log_filters:
            lines = [(t, x) for t, x in lines if t > cut or sub not in x]
        compress = (not dateext) if compress is None else compress
        if daily:
            period = DAY
            rot = int(self.now // DAY) * DAY + (0 if self.d.family == "debian" else 3 * 3600 + 41 * 60)
            rot = rot if rot < self.now - 600 else rot - DAY
        else:
            period, rot = 7 * DAY, self.rotation
        current = [(t, x) for t, x in lines if t >= rot]
        last = current[-1][0] if current else rot
        parts: list[tuple[str, list[tuple[float, str]], float]] = [
            (path, current, max(self.mtimes.get(path, last), last))]
        first = lines[0][0] if lines else rot
        index, upper = 1, rot
        while upper > first:
            chunk = [(t, x) for t, x in lines if upper - period <= t < upper]
            if chunk:
                name = f"{path}-{time.strftime('%Y%m%d', time.gmtime(upper))}" if dateext else f"{path}.{index}"
                if compress and index > 1:
                    name += ".gz"
                parts.append((name, chunk, upper + self.rng.uniform(1, 30)))
            index, upper = index + 1, upper - period
        for name, chunk, mtime in parts:
            text = "".join(x + "\n" for _, x in chunk)
            target = self.path(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".gz"):
                raw = self.path(name[:-3])
                raw.write_text(text)
                os.utime(raw, (chunk[-1][0], chunk[-1][0]))
                subprocess.run(["gzip", "-9", "-f", str(raw)], check=True)  # keeps the name and time inside
            else:
                target.write_text(text)
            os.chmod(target, 0o640)
            if self.d.family == "debian":
                os.chown(target, 0, 4)  # syslog:adm as rsyslog and logrotate leave them
            self.mtimes[name] = mtime if name == path else chunk[-1][0]

    def _number_sessions(self) -> None:
        """logind numbers sessions in the order they open."""
        order: dict[str, int] = {}
        base = self.rng.randrange(1, 40)
        for e in sorted(self.events, key=lambda e: e.t):
            for token in re.findall("\0sid\\d+\0", e.msg):
                order.setdefault(token, base + len(order))
                e.msg = e.msg.replace(token, str(order[token]))

    def finish(self) -> None:
        self._number_sessions()
        self.rotation = self._rotation_time()
        self._write_accounts()
        self._write_histories()
        self._write_logs()
        self._write_utmp()
        self._write_journal()
        for step in self.after:
            step()
        self._apply_mtimes()
        self._directory_times()
        if self._keydir.exists():
            shutil.rmtree(self._keydir)

    def _rotation_time(self) -> float:
        """logrotate's weekly run: the last Sunday 00:00 (cron.daily at 06:25 on Debian) before now."""
        t = int(self.now // DAY) * DAY
        while time.gmtime(t).tm_wday != 6:
            t -= DAY
        t += 6 * 3600 + 25 * 60 if self.d.family == "debian" else 3 * 3600 + 41 * 60
        return t if t < self.now - 600 else t - 7 * DAY

    def _write_accounts(self) -> None:
        accts = sorted(self.accounts.values(), key=lambda a: (a.uid >= 1000, a.uid if a.uid < 65534 else -1,
                                                              list(self.accounts).index(a.name)))
        order = list(self.accounts.values())
        passwd = "".join(f"{a.name}:x:{a.uid}:{a.gid}:{a.gecos}:{a.home}:{a.shell}\n" for a in order)
        days = int(self.created // DAY)
        shadow = "".join(f"{a.name}:{a.hash}:{days}:0:99999:7:::\n" for a in order)
        group = "".join(f"{n}:x:{gid}:{','.join(m)}\n" for n, (gid, m) in self.groups.items())
        gshadow = "".join(f"{n}:{'!' if gid >= 1000 else '*'}::{','.join(m)}\n" for n, (gid, m) in self.groups.items())
        del accts
        for p, text, mode, gid in (("/etc/passwd", passwd, 0o644, 0), ("/etc/group", group, 0o644, 0),
                                   ("/etc/shadow", shadow, 0o640 if self.d.family == "debian" else 0o000, 42),
                                   ("/etc/gshadow", gshadow, 0o640 if self.d.family == "debian" else 0o000, 42)):
            mtime = self.mtimes.get(p, self.created + 400)
            self.write(p, text, mode, mtime=mtime)
            if self.d.family == "debian" and gid:
                os.chown(self.path(p), 0, gid)
            for suffix in ("-",):
                self.write(p + suffix, text, 0o600 if "shadow" in p else 0o644, mtime=mtime - 5)

    def _write_histories(self) -> None:
        for user, items in self.history.items():
            acct = self.accounts[user]
            items.sort()
            if acct.zsh:
                name = f"{acct.home}/.zsh_history"
                src = "".join(f": {int(t)}:{self.rng.randrange(0, 4)};{c}\n" for t, c in items)
                self._through_shell(["zsh", "-fic", "setopt extended_history; HISTSIZE=100000; SAVEHIST=100000; "
                                     "fc -R {src}; fc -W {dst}"], src, name, acct)
            else:
                name = f"{acct.home}/.bash_history"
                stamp = self.hist_timestamps
                src = "".join((f"#{int(t)}\n" if stamp else "") + f"{c}\n" for t, c in items)
                fmt = "HISTTIMEFORMAT='%F %T '; " if stamp else ""
                self._through_shell(["bash", "--norc", "-c", f"{fmt}HISTSIZE=100000; HISTFILESIZE=100000; "
                                     "set -o history; history -c; history -r {src}; history -w {dst}"], src, name, acct)
            self.mtimes.setdefault(name, items[-1][0] + 30)
        for user, raw in self.history_keep.items():
            acct = self.accounts[user]
            name = f"{acct.home}/.bash_history"
            self.write(name, raw, 0o600, owner=user, mtime=self.history_wiped.get(user, self.mtimes.get(name)))

    def _through_shell(self, argv: list[str], src: str, name: str, acct: Account) -> None:
        """The shell reads the history we typed and writes its own file, in its own format."""
        work = self.root.parent / f".hist-{self.root.name}"
        work.mkdir(exist_ok=True)
        (work / "in").write_text(src)
        dst = work / "out"
        if dst.exists():
            dst.unlink()
        cmd = argv[:-1] + [argv[-1].replace("{src}", str(work / "in")).replace("{dst}", str(dst))]
        env = {"HOME": str(work), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "dumb"}
        subprocess.run(cmd, check=True, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        self.write(name, dst.read_bytes(), 0o600, owner=acct.name)
        shutil.rmtree(work)

    def _write_logs(self) -> None:
        evs = sorted(self.events, key=lambda e: e.t)
        d = self.d
        streams: dict[str, list[tuple[float, str]]] = {}
        if d.family == "debian" and d.auth_log:
            rfc = d.rfc3339
            for e in evs:
                if e.stream == "auth":
                    streams.setdefault("/var/log/auth.log", []).append((e.t, self._line(e, rfc)))
                else:
                    streams.setdefault("/var/log/syslog", []).append((e.t, self._line(e, rfc)))
                    if e.stream == "kern":
                        streams.setdefault("/var/log/kern.log", []).append((e.t, self._line(e, rfc)))
            for p, lines in streams.items():
                self._rotated(p, lines, dateext=False)
        elif d.auth_log:  # Amazon Linux 2: secure, cron, messages
            for e in evs:
                p = {"auth": "/var/log/secure", "cron": "/var/log/cron"}.get(e.stream, "/var/log/messages")
                streams.setdefault(p, []).append((e.t, self._line(e, False)))
            for p, lines in streams.items():
                self._rotated(p, lines, dateext=True)
        if self.web_log:
            self.web.sort()
            self._rotated(self.web_log, self.web, dateext=d.family == "rhel", daily=True, compress=True)
            if self.d.family == "debian":
                for p in self.path(self.web_log).parent.iterdir():
                    os.chown(p, 33, 4)

    def _write_utmp(self) -> None:
        def dump(records: list[tuple]) -> bytes:
            rows = []
            for typ, pid, line, uid, user, host, addr, t in sorted(records, key=lambda r: r[-1]):
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f",{int((t % 1) * 1e6):06d}+00:00"
                rows.append(f"[{typ}] [{pid:05d}] [{uid or '    '}] [{user or ' ':<8}] [{line:<12}] "
                            f"[{host or ' ':<20}] [{addr:<15}] [{stamp}]\n")
            if not rows:
                return b""
            return subprocess.run(["utmpdump", "-r"], input="".join(rows).encode(), check=True,
                                  capture_output=True).stdout

        boots = [(2, 0, "~", "~~", "reboot", self.d.kernel, "0.0.0.0", self.boot),
                 (1, 53, "~", "~~", "runlevel", self.d.kernel, "0.0.0.0", self.boot + 9)]
        first = min([self.window] + [r[-1] for r in self.wtmp])
        wtmp = [r for r in self.wtmp if not any(a == r[5] for a in self.utmp_filters)]
        if self.boot >= first:
            wtmp += boots
        self.write("/var/log/wtmp", dump(wtmp), 0o664, mtime=max([r[-1] for r in wtmp] + [self.boot + 9]))
        os.chown(self.path("/var/log/wtmp"), 0, 43 if self.d.family == "debian" else 22)
        if "/var/log/btmp" in self.truncated_logs:
            cut = self.truncated_logs["/var/log/btmp"]
            self.btmp = [r for r in self.btmp if r[-1] > cut]
        btmp_m = max([r[-1] for r in self.btmp] + [self.truncated_logs.get("/var/log/btmp", 0.0),
                                                   self.rotation if self.rotation < self.now else 0.0])
        self.write("/var/log/btmp", dump(self.btmp), 0o660, mtime=btmp_m)
        os.chown(self.path("/var/log/btmp"), 0, 43 if self.d.family == "debian" else 22)
        with open(self.path("/var/log/lastlog"), "wb") as f:
            for uid, (t, line, host) in sorted(self.lastlog.items()):
                f.seek(292 * uid)
                f.write(struct.pack("<i32s256s", int(t), line.encode(), host.encode()))
            f.truncate(292 * (max(self.lastlog, default=0) + 1))
        self.mtimes["/var/log/lastlog"] = max([t for t, _, _ in self.lastlog.values()] + [self.boot])

    def _write_journal(self) -> None:
        """The systemd journal (persistent: /var/log/journal/<machine-id>) with the same syslog events."""
        if not self.tools.journal or self.d.auth_log:
            return  # rsyslog hosts: the text logs only (dissect.target reads a journal slowly from a tar.gz)
        folder = f"/var/log/journal/{self.machine_id}"
        self.path(folder).mkdir(parents=True, exist_ok=True)
        evs = sorted((e for e in self.events if e.t >= self.boot and not self._journal_dropped(e)), key=lambda e: e.t)
        prio = {"auth": 6, "cron": 6, "syslog": 6, "kern": 5}
        fac = {"auth": 10, "cron": 9, "syslog": 3, "kern": 0}
        out = []
        for e in evs:
            us = int(e.t * 1e6)
            msg = e.msg.replace("\n", " ")
            fields = [f"__REALTIME_TIMESTAMP={us}", f"__MONOTONIC_TIMESTAMP={int((e.t - self.boot) * 1e6)}",
                      f"_BOOT_ID={self.boot_id}", f"_MACHINE_ID={self.machine_id}", f"_HOSTNAME={self.hostname}",
                      f"PRIORITY={prio[e.stream]}", f"SYSLOG_FACILITY={fac[e.stream]}",
                      f"SYSLOG_IDENTIFIER={e.prog}", "_TRANSPORT=" + ("kernel" if e.stream == "kern" else "syslog"),
                      f"_UID={e.uid}", f"_GID={e.uid}", f"MESSAGE={msg}"]
            if e.pid is not None:
                fields += [f"SYSLOG_PID={e.pid}", f"_PID={e.pid}", f"_COMM={e.prog.lower()}"]
            if e.unit:
                fields.append(f"_SYSTEMD_UNIT={e.unit}")
            out.append("\n".join(fields) + "\n\n")
        journal = self.path(f"{folder}/system.journal")
        if journal.exists():
            journal.unlink()
        subprocess.run([str(JOURNAL_REMOTE), "-o", str(journal), "-"], input="".join(out).encode(), check=True,
                       capture_output=True, timeout=120)
        os.chmod(journal, 0o640)
        self.mtimes[f"{folder}/system.journal"] = evs[-1].t if evs else self.now
        self.mtimes[folder] = self.boot

    def _journal_dropped(self, e: Event) -> bool:
        return False  # journald keeps what a text-log editor removed

    def _directory_times(self) -> None:
        """A folder's time is its newest entry's (what creating that entry did), unless set on purpose."""
        for folder, _, _ in sorted(os.walk(self.root), key=lambda w: -w[0].count(os.sep)):
            rel = "/" + os.path.relpath(folder, self.root)
            if rel in self.mtimes or rel == "/.":
                continue
            times = [os.lstat(os.path.join(folder, n)).st_mtime for n in os.listdir(folder)]
            t = max(times) if times else self.created
            os.utime(folder, (t, t))

    def _apply_mtimes(self) -> None:
        for p, t in sorted(self.mtimes.items(), key=lambda kv: -len(kv[0])):
            target = self.path(p)
            if target.is_symlink():
                os.utime(target, (t, t), follow_symlinks=False)
            elif target.exists():
                os.utime(target, (t + self.rng.uniform(0, 600) if target.is_file() else t, t))


# --------------------------------------------------------------------------------------------------
# distribution files

BASHRC_DEBIAN = """# ~/.bashrc: executed by bash(1) for non-login shells.
# see /usr/share/doc/bash/examples/startup-files (in the package bash-doc)
# for examples

# If not running interactively, don't do anything
case $- in
    *i*) ;;
      *) return;;
esac

# don't put duplicate lines or lines starting with space in the history.
# See bash(1) for more options
HISTCONTROL=ignoreboth

# append to the history file, don't overwrite it
shopt -s histappend

# for setting history length see HISTSIZE and HISTFILESIZE in bash(1)
HISTSIZE=1000
HISTFILESIZE=2000

# check the window size after each command and, if necessary,
# update the values of LINES and COLUMNS.
shopt -s checkwinsize

# enable color support of ls and also add handy aliases
if [ -x /usr/bin/dircolors ]; then
    test -r ~/.dircolors && eval "$(dircolors -b ~/.dircolors)" || eval "$(dircolors -b)"
    alias ls='ls --color=auto'
    alias grep='grep --color=auto'
fi

# some more ls aliases
alias ll='ls -alF'
alias la='ls -A'
alias l='ls -CF'

if [ -f ~/.bash_aliases ]; then
    . ~/.bash_aliases
fi

# enable programmable completion features
if ! shopt -oq posix; then
  if [ -f /usr/share/bash-completion/bash_completion ]; then
    . /usr/share/bash-completion/bash_completion
  elif [ -f /etc/bash_completion ]; then
    . /etc/bash_completion
  fi
fi
"""
PROFILE_DEBIAN = """# ~/.profile: executed by the command interpreter for login shells.
# This file is not read by bash(1), if ~/.bash_profile or ~/.bash_login
# exists.

# if running bash
if [ -n "$BASH_VERSION" ]; then
    # include .bashrc if it exists
    if [ -f "$HOME/.bashrc" ]; then
\t. "$HOME/.bashrc"
    fi
fi

# set PATH so it includes user's private bin if it exists
if [ -d "$HOME/bin" ] ; then
    PATH="$HOME/bin:$PATH"
fi

# set PATH so it includes user's private bin if it exists
if [ -d "$HOME/.local/bin" ] ; then
    PATH="$HOME/.local/bin:$PATH"
fi
"""
BASHRC_RHEL = """# .bashrc

# Source global definitions
if [ -f /etc/bashrc ]; then
\t. /etc/bashrc
fi

# User specific environment
if ! [[ "$PATH" =~ "$HOME/.local/bin:$HOME/bin:" ]]
then
    PATH="$HOME/.local/bin:$HOME/bin:$PATH"
fi
export PATH

# Uncomment the following line if you don't like systemctl's auto-paging feature:
# export SYSTEMD_PAGER=

# User specific aliases and functions
"""
BASH_PROFILE_RHEL = """# .bash_profile

# Get the aliases and functions
if [ -f ~/.bashrc ]; then
\t. ~/.bashrc
fi

# User specific environment and startup programs
"""
ROOT_BASHRC_DEBIAN = """# ~/.bashrc: executed by bash(1) for non-login shells.

# Note: PS1 is set in /etc/profile, and the default umask is defined
# in /etc/login.defs. You should not need this unless you want different
# defaults for root.
# PS1='${debian_chroot:+($debian_chroot)}\\h:\\w\\$ '
# umask 022

# You may uncomment the following lines if you want `ls' to be colorized:
# export LS_OPTIONS='--color=auto'
# eval "$(dircolors)"
# alias ls='ls $LS_OPTIONS'
# alias ll='ls $LS_OPTIONS -l'
# alias l='ls $LS_OPTIONS -lA'
#
# Some more alias to avoid making mistakes:
# alias rm='rm -i'
# alias cp='cp -i'
# alias mv='mv -i'
"""
