"""A corpus of our own for the verdict: clean servers and intrusions, built as fake evidence roots.

What it is
    Each scenario is a normal server (tests/scenarios/clean.py: web, CI runner with Docker, database with
    backups, bastion; Debian 12, Ubuntu 22.04/24.04, Amazon Linux 2/2023 layouts) with a week of ordinary
    activity, and for an intrusion the traces a public threat report describes, mixed into it
    (tests/scenarios/patterns.py, one function per pattern, its report cited in its docstring).
    Log lines are written as rsyslog writes them (traditional or RFC 3339), the journal by
    systemd-journal-remote, wtmp/btmp by utmpdump -r, histories by bash and zsh themselves, keys and
    fingerprints by ssh-keygen, rotated logs by gzip, dropped ELF files and shared objects by gcc.

Clean servers (expected "no")
    web (nginx + an API unit, or Apache + WordPress; public: scanners in auth log, btmp and the access
    log, certbot), ci (get.docker.com once, piped or downloaded; gitlab-runner container mounting
    /var/run/docker.sock; docker prune cron), db (PostgreSQL, nightly pg_dumpall + scp to a private
    backup host, a backup key limited with from=/command=, sometimes added this week by an admin seen
    doing it), bastion (many staff, office/home/VPN sources, keys with from=, a colleague onboarded this
    week with useradd, nc -zv checks, HISTTIMEFORMAT). Every host: cloud-init's default user with
    NOPASSWD sudo and root's "Please login as" key, hourly cron, upgrades (dpkg.log/apt history.log,
    yum.log/dnf.log), admins' sessions and sudo, daemon noise, this machine's own ls/cat/cp/id/bash/ps/
    curl/ssh, PAM modules and libkeyutils with their package database entries (dpkg md5sums and .list,
    or an rpm database); sometimes node_exporter in /usr/local/bin, an /etc tar backup, nodesource's
    setup piped to bash.
    Layouts: Debian 12 (rsyslog RFC 3339, or the journal only), Ubuntu 22.04 (traditional format) and
    24.04 (RFC 3339), web logs rotated daily and gzipped, Amazon Linux 2 (secure/cron/messages, dateext
    rotation, /etc/init.d -> rc.d/init.d, no Include in sshd_config), Amazon Linux 2023 (journal only,
    no cron daemon, sqlite rpm database).

Intrusion patterns (expected "yes"; each function's docstring cites its report)
    kinsing-miner (Aqua / Trend Micro 2020), teamtnt-aws-creds (Cado Security 2020, AT&T Alien Labs
    2020), outlaw-ssh-bruteforce (Juniper 2021, Trend Micro 2018), ebury-libkeyutils (ESET 2014, 2024),
    skidmap-pam (Trend Micro 2019), symbiote-preload (Intezer/BlackBerry 2022), php-webshell (NSA/ASD
    2020, CISA TA15-314A), log-wipe (MITRE T1070, Unit 42 Rocke 2019), systemd-reverse-shell (MITRE
    T1543.002, Elastic 2024), uid0-account (MITRE T1136.001), sudoers-backdoor (MITRE T1548.003),
    credential-dump (MITRE T1003.008, mimipenguin, LaZagne), docker-sock-escape (Unit 42 Graboid 2019,
    Trend Micro 2020, MITRE T1611), exfil-curl (Cado Security 2020, MITRE T1552.004).

Limits
    A fake root cannot hold past ctimes (every file's ctime is the build's time); Amazon Linux 2's rpm
    database holds Packages, Name and Basenames only (db_load'ed from the header blobs rpm wrote; rpm
    -qa, -qf and -V read it); journal-only hosts get fewer scanner lines (dissect.target reads a journal
    slowly out of a .tar.gz).

Randomised
    Host names, addresses, users, times (the last 7-10 days), ordering and the benign extras vary with
    the seed: TRIAGENT_SCENARIO_SEED=<int> reproduces a run; every scenario's own seed is derived from it
    and its name, so one scenario can be rebuilt alone:

        TRIAGENT_SCENARIO_SEED=1234 .venv/bin/python -m pytest tests/e2e/test_scenarios.py -k web-debian12
        .venv/bin/python -m tests.scenarios build intr-kinsing-miner /tmp/root --seed 1234   # root only

Independent
    The traces follow the reports, not the rules: nothing here was tuned to specs/rules/."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

from . import clean, patterns
from .host import DISTROS, Host, Tools


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: str  # yes | no
    kinds: tuple[str, ...]
    distros: tuple[str, ...]
    pattern: str | None = None


CLEAN = [
    Scenario("clean-web-debian12", "no", ("web",), ("debian12",)),
    Scenario("clean-web-ubuntu2404", "no", ("web",), ("ubuntu2404",)),
    Scenario("clean-ci-ubuntu2204", "no", ("ci",), ("ubuntu2204",)),
    Scenario("clean-db-al2", "no", ("db",), ("al2",)),
    Scenario("clean-bastion-al2023", "no", ("bastion",), ("al2023",)),
    Scenario("clean-db-debian12", "no", ("db",), ("debian12",)),
    Scenario("clean-ci-al2023", "no", ("ci",), ("al2023",)),
    Scenario("clean-web-al2", "no", ("web",), ("al2",)),
    Scenario("clean-bastion-ubuntu2204", "no", ("bastion",), ("ubuntu2204",)),
]
ANY = tuple(DISTROS)
INTRUSIONS = [Scenario(f"intr-{name}", "yes", kinds, distros, name)
              for name, (kinds, distros) in patterns.WHERE.items()]
# patterns that edit text logs, or whose per-minute cron would make the journal too long to read in the test
TEXT_LOG_PATTERNS = {"log-wipe", "kinsing-miner", "skidmap-pam", "docker-sock-escape", "outlaw-ssh-bruteforce"}
SCENARIOS = {s.name: s for s in CLEAN + INTRUSIONS}


def base_seed() -> int:
    value = os.environ.get("TRIAGENT_SCENARIO_SEED")
    return int(value) if value else random.SystemRandom().randrange(1, 2**31)


def scenario_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")


@dataclass
class Built:
    name: str
    seed: int
    root: Path
    host: Host
    notes: list[str]


def build(name: str, root: Path, seed: int, tools: Tools, now: float | None = None) -> Built:
    """Builds scenario `name` under `root` (an empty folder) from the run's seed."""
    sc = SCENARIOS[name]
    rng = random.Random(scenario_seed(seed, name))
    kind = rng.choice(sc.kinds)
    distro = DISTROS[rng.choice(sc.distros)]
    if distro.key == "debian12" and rng.random() < 0.35 and sc.pattern not in TEXT_LOG_PATTERNS:
        # Debian 12 images ship without rsyslog: the journal only
        distro = dataclasses.replace(distro, auth_log=None, syslog=None)
    root.mkdir(parents=True, exist_ok=True)
    h = Host(root, rng, distro, kind, tools, now=now)
    clean.distro_base(h)
    facts = clean.KINDS[kind](h)
    clean.extras(h, facts)
    clean.finish_base(h)
    h.notes.append(clean.describe(h))
    if sc.pattern:
        getattr(patterns, sc.pattern.replace("-", "_"))(h, facts)
    h.finish()
    return Built(name, seed, root, h, h.notes)
