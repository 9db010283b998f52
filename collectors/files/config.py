"""System configuration the rules judge, parsed into records (issue 20).

Streams:

- ``pam``: every rule line of each PAM service stack (/etc/pam.d/*, includes and substacks followed, and
  /etc/pam.conf), with the module resolved as libpam resolves it, whether it lies in the distro's module
  folders, its SHA-256, the package that owns it and whether the package's digest still matches.
- ``shell_rc``: each command line of the shell start-up and logout files (system-wide and in every home of
  /etc/passwd, service accounts included; bash, zsh, sh, fish, ksh/mksh, csh/tcsh), with the variables it
  assigns and unsets, so rules can tell ``unset HISTFILE`` from ``HISTSIZE=1000``.
- ``services``: systemd units and drop-ins (their Exec* lines, User, Restart, WantedBy, enabled or not) from
  the system, runtime, transient (systemd-run), generator and user folders (homes, /etc/systemd/user,
  /run/user/UID/systemd), each Exec program resolved inside the root, hashed and checked against the
  package database (``exec_targets``, ``exec_resolved``, ``exec_unowned``, ``exec_modified``); a timer's
  ``schedule`` and the unit it ``triggers`` with that unit's command; and the command lines of SysV init
  scripts and rc.local.
- ``sudo_rules``: sudoers grants, one record per user of a rule line, aliases and tags resolved.
- ``sshd_settings``: sshd_config directives (Include followed) marked ``effective`` by sshd's own
  first-value-wins reading, so a later ``PermitRootLogin yes`` that never applies is not taken for one.

Everything is read through fsread inside the evidence root; a file that cannot be read is a Problem and
the rest goes on. Lines, records and bytes are bounded.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import stat
from collections.abc import Iterable, Iterator
from typing import Any

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import copy_file, listdir, lstat, read_capped, readlink, resolve, stat_path, walk_glob
from collectors.files.homes import Home, homes, passwd_users
from collectors.files.programs import HASH_BUDGET, HASH_LIMIT, Targets, search
from collectors.files.ssh import _config_lines
from collectors.util import text

MAX_LINE_CHARS = 2048  # one command line as recorded
MAX_LINES_PER_FILE = 2000
MAX_INCLUDE_DEPTH = 8  # PAM and sudoers includes (libpam itself stops at a small depth too)


class _Budget:
    """Records per stream: a hostile tree of a million unit files must not make a million records."""

    def __init__(self, limit: int):
        self.limit = limit
        self.counts: dict[str, int] = {}

    def record(self, stream: str, data: dict[str, Any]) -> Iterator[Item]:
        count = self.counts.get(stream, 0) + 1
        self.counts[stream] = count
        if count <= self.limit:
            yield Record(stream, data)
        elif count == self.limit + 1:
            yield Problem(f"{stream}: record limit of {self.limit} reached; later records dropped", level="warning")


def _read_text(ctx: Context, path: str, cap: int) -> tuple[str, os.stat_result] | Problem | None:
    try:
        data, st, _ = read_capped(ctx, path, cap)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Problem.from_os_error(exc, "cannot read", path)
    return text(data), st


def _logical_lines(body: str, continuation: bool = True) -> Iterator[tuple[int, str]]:
    """(first line number, text) with backslash-newline continuations joined, at most MAX_LINES_PER_FILE."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(body.splitlines(), 1):
        if number > MAX_LINES_PER_FILE:
            break
        if not pending:
            start = number
        if continuation and raw.endswith("\\") and not raw.endswith("\\\\"):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        yield start, " ".join(pending)[: MAX_LINE_CHARS * 4]
        pending = []
    if pending:
        yield start, " ".join(pending)[: MAX_LINE_CHARS * 4]


def _hits(ctx: Context, patterns: Iterable[str]) -> Iterator[str | Problem]:
    """Glob hits of several patterns, each file once (by its resolved in-root path)."""
    seen: set[str] = set()
    for pattern in patterns:
        hits = walk_glob(ctx, pattern) if any(c in pattern for c in "*?[") else iter([pattern])
        for hit in hits:
            if isinstance(hit, Problem):
                yield hit
                continue
            try:
                real = resolve(ctx, hit)
            except (OSError, ValueError):
                continue
            if real not in seen:
                seen.add(real)
                yield hit


# ---- PAM --------------------------------------------------------------------------------------

PAM_TYPES = {"auth", "account", "password", "session"}
# libpam's module folders on Debian/Ubuntu (multiarch), RHEL/Amazon Linux (lib64), Arch, Alpine, SUSE
MODULE_DIR = re.compile(r"^(/usr)?/lib(32|64|x32)?(/[a-z0-9_]+-linux-[a-z0-9_]+)?/security/[^/]+$")
DEFAULT_MODULE_DIRS = ("/lib/x86_64-linux-gnu/security", "/usr/lib/x86_64-linux-gnu/security",
                       "/lib/aarch64-linux-gnu/security", "/usr/lib/aarch64-linux-gnu/security",
                       "/usr/lib64/security", "/lib64/security", "/usr/lib/security", "/lib/security")
# Modules of Linux-PAM itself and the ones distributions and clouds ship (SSSD, Kerberos, GCP OS Login,
# Azure AD, 2FA, systemd...). A module not named here is "unknown": not bad in itself, worth a look
# when it can let someone in on its own. (``module_known`` is a hint for the reader; TRI-CONF-031 holds the
# list it judges by, so a responder can extend it without a new collector.)
KNOWN_MODULES = frozenset("""
pam_access pam_canonicalize_user pam_debug pam_deny pam_echo pam_env pam_exec pam_faildelay pam_faillock
pam_filter pam_ftp pam_group pam_issue pam_keyinit pam_lastlog pam_limits pam_listfile pam_localuser
pam_loginuid pam_mail pam_mkhomedir pam_motd pam_namespace pam_nologin pam_permit pam_pwhistory
pam_rhosts pam_rootok pam_securetty pam_selinux pam_sepermit pam_setquota pam_shells pam_stress
pam_succeed_if pam_time pam_timestamp pam_tty_audit pam_umask pam_unix pam_userdb pam_usertype pam_warn
pam_wheel pam_xauth pam_tally pam_tally2 pam_cracklib pam_pwquality pam_passwdqc pam_console pam_postgresok
pam_systemd pam_systemd_home pam_systemd_loadkey pam_cap pam_sss pam_sss_gss pam_krb5 pam_ldap pam_winbind
pam_smbpass pam_mount pam_ecryptfs pam_gnome_keyring pam_kwallet pam_kwallet5 pam_fprintd pam_u2f
pam_yubico pam_oath pam_google_authenticator pam_duo pam_radius_auth pam_tacplus pam_pkcs11 pam_p11
pam_ssh_agent_auth pam_oslogin_login pam_oslogin_admin pam_aad pam_apparmor pam_ck_connector pam_gdm
pam_extrausers pam_lastlog2 pam_unix2 pam_pwdb pam_chroot pam_script pam_cgfs pam_mktemp pam_snapper
pam_nologin pam_sepermit pam_freerdp pam_fscrypt pam_userdb pam_afs_session pam_rps pam_ssh pam_lsass
pam_centrifydc pam_vas3 pam_opie pam_skey pam_abl pam_sftd pam_howdy pam_polkit pam_gnome_keyring
""".split())


def _split_pam(line: str) -> list[str]:
    """Tokens of a PAM line: whitespace-separated, a [...] group (control or argument) kept whole."""
    tokens: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        if line[i] == "[":
            j, depth = i, 0
            while j < n:
                if line[j] == "\\" and j + 1 < n:
                    j += 2
                    continue
                depth += line[j] == "["
                depth -= line[j] == "]"
                j += 1
                if depth == 0:
                    break
            # a bracketed word may go on after its ']' (e.g. "[...]=x"): up to the next space
            while j < n and not line[j].isspace():
                j += 1
            tokens.append(line[i:j])
            i = j
        else:
            j = i
            while j < n and not line[j].isspace():
                j += 1
            tokens.append(line[i:j])
            i = j
    return tokens


def _bracket_actions(control: str) -> dict[str, str]:
    actions = {}
    for item in control.strip("[]").split():
        key, _, value = item.partition("=")
        actions[key.lower()] = value.lower()
    return actions


def _module_dir(ctx: Context) -> str:
    """Where libpam looks for a module named without a path: the first default folder the root has."""
    for folder in DEFAULT_MODULE_DIRS:
        try:
            if stat.S_ISDIR(stat_path(ctx, folder)[1].st_mode):
                return folder
        except (OSError, ValueError):
            continue
    return "/lib/security"


class _Pam:
    def __init__(self, ctx: Context, cap: int, budget: _Budget, targets: Any = None):
        self.ctx, self.cap, self.budget, self.targets = ctx, cap, budget, targets
        self.default_dir = _module_dir(ctx)
        self.modules: dict[str, dict[str, Any]] = {}
        self.files: dict[str, list[tuple[int, str]] | Problem | None] = {}
        self.read: list[str] = []

    def _lines(self, path: str) -> list[tuple[int, str]] | Problem | None:
        if path not in self.files:
            got = _read_text(self.ctx, path, self.cap)
            if isinstance(got, tuple):
                self.read.append(path)
                # libpam drops everything from '#' on, and joins lines ending in a backslash
                got = [(n, line.split("#", 1)[0].strip()) for n, line in _logical_lines(got[0])]
            self.files[path] = got
        return self.files[path]

    def module_facts(self, module: str) -> dict[str, Any]:
        if module not in self.modules:
            written = module.replace("$ISA/", "").replace("$ISA", "")  # old RHEL's per-ISA folder
            # libpam prefixes a name that is not absolute with its folder, "../" and all
            path = posixpath.normpath(written if written.startswith("/") else self.default_dir + "/" + written)
            name = posixpath.basename(path)
            facts: dict[str, Any] = {"module_path": path, "module_name": name,
                                     "module_in_distro_dir": bool(MODULE_DIR.match(path)),
                                     "module_known": re.sub(r"\.so$", "", name) in KNOWN_MODULES,
                                     "module_found": False}
            try:
                real, st = stat_path(self.ctx, path)
                facts.update(module_found=stat.S_ISREG(st.st_mode), module_mtime_ns=st.st_mtime_ns,
                             module_size=st.st_size, module_real_path=real)
            except (OSError, ValueError):
                pass
            if facts["module_found"] and self.targets is not None:
                # its digest and the package that vouches for it: a pam_unix.so rebuilt with a master
                # password sits in the right folder under the right name, only its bytes differ
                got = self.targets.facts(path)
                facts.update(module_sha256=got.get("sha256"), module_owned=got.get("owned"),
                             module_package=got.get("package"), module_package_verify=got.get("package_verify"))
            self.modules[module] = facts
        return self.modules[module]

    def stack(self, service: str, path: str, via: list[str], active: bool) -> Iterator[Item]:
        lines = self._lines(path)
        if isinstance(lines, Problem):
            yield lines
            return
        if lines is None:
            if via:
                yield Problem("PAM include names a file that is not there", path=path, level="warning",
                              detail={"service": service, "via": via})
            return
        for number, line in lines:
            self.ctx.check()
            if not line:
                continue
            words = _split_pam(line)
            rec: dict[str, Any] = {"service": service, "file": path, "line": number, "via": via or None,
                                   "active": active, "text": line[:MAX_LINE_CHARS]}
            if path == "/etc/pam.conf":
                rec["service"], words = (words[0], words[1:]) if words else (service, words)
            if words and words[0] == "@include":
                target = words[1] if len(words) > 1 else ""
                rec.update(type="@include", control="@include", control_kind="include", include=target)
                yield from self.budget.record("pam", rec)
                if target:
                    yield from self._follow(rec["service"], path, target, via, active)
                continue
            if len(words) < 3:
                rec["error"] = "not a PAM rule line"
                yield from self.budget.record("pam", rec)
                continue
            kind, control, module, args = words[0], words[1], words[2], words[3:]
            optional = kind.startswith("-")
            kind = kind.lstrip("-").lower()
            rec.update(type=kind, optional=optional, control=control, args=args)
            if kind not in PAM_TYPES:
                rec["error"] = "unknown PAM type"
            if control.lower() in ("include", "substack"):
                rec.update(control_kind="include", include=module)
                yield from self.budget.record("pam", rec)
                yield from self._follow(rec["service"], path, module, via, active)
                continue
            rec["module"] = module
            rec.update(self.module_facts(module))
            if control.startswith("["):
                actions = _bracket_actions(control)
                success = actions.get("success", "")
                rec.update(control_kind="bracket", actions=actions,
                           # success=done ends the stack granted; success=N jumps over N lines (Debian's
                           # common-auth jumps over pam_deny): either way this module alone can grant
                           short_circuit=success == "done" or (success.isdigit() and int(success) > 0))
            else:
                rec.update(control_kind="simple", short_circuit=control.lower() == "sufficient")
            yield from self.budget.record("pam", rec)

    def _follow(self, service: str, path: str, target: str, via: list[str], active: bool) -> Iterator[Item]:
        included = target if target.startswith("/") else "/etc/pam.d/" + target
        if len(via) >= MAX_INCLUDE_DEPTH or included in via or included == path:
            yield Problem("PAM include loop or depth limit", path=included, level="warning")
            return
        yield from self.stack(service, included, via + [path], active)


def _pam(ctx: Context, cap: int, budget: _Budget, targets: Any = None) -> Iterator[Item]:
    pam = _Pam(ctx, cap, budget, targets)
    services = [h for h in walk_glob(ctx, "/etc/pam.d/*")]
    names = [h for h in services if isinstance(h, str)]
    yield from (h for h in services if isinstance(h, Problem))
    for path in names:
        if path.endswith(("~", ".dpkg-old", ".dpkg-dist", ".rpmsave", ".rpmnew")):
            continue  # not a service libpam would load (a backup or package leftover)
        yield from pam.stack(posixpath.basename(path), path, [], True)
    # libpam reads /etc/pam.conf only when /etc/pam.d does not exist
    yield from pam.stack("", "/etc/pam.conf", [], not names)
    for path in pam.read:
        yield from copy_file(ctx, path, cap)


# ---- shell start-up and logout files ----------------------------------------------------------

SYSTEM_RC = [
    ("/etc/profile", "login"), ("/etc/profile.d/*", "login"), ("/etc/bash.bashrc", "interactive"),
    ("/etc/bashrc", "interactive"), ("/etc/bash.bash_logout", "logout"), ("/etc/zshenv", "always"),
    ("/etc/zsh/zshenv", "always"), ("/etc/zprofile", "login"), ("/etc/zsh/zprofile", "login"),
    ("/etc/zshrc", "interactive"), ("/etc/zsh/zshrc", "interactive"), ("/etc/zlogin", "login"),
    ("/etc/zsh/zlogin", "login"), ("/etc/zlogout", "logout"), ("/etc/zsh/zlogout", "logout"),
    ("/etc/environment", "environment"),
    # the other shells a passwd entry may name: fish, ksh/mksh, csh/tcsh (and what bash's .bashrc sources)
    ("/etc/fish/config.fish", "always"), ("/etc/fish/conf.d/*.fish", "always"),
    ("/usr/share/fish/vendor_conf.d/*.fish", "always"), ("/usr/local/share/fish/vendor_conf.d/*.fish", "always"),
    ("/etc/ksh.kshrc", "interactive"), ("/etc/kshrc", "interactive"), ("/etc/mkshrc", "interactive"),
    ("/etc/csh.cshrc", "always"), ("/etc/csh.login", "login"), ("/etc/csh.logout", "logout"),
]
HOME_RC = [
    (".bashrc", "interactive"), (".bash_profile", "login"), (".bash_login", "login"), (".profile", "login"),
    (".bash_logout", "logout"), (".zshenv", "always"), (".zprofile", "login"), (".zshrc", "interactive"),
    (".zlogin", "login"), (".zlogout", "logout"), (".bash_aliases", "interactive"),
    (".config/fish/config.fish", "always"), (".config/fish/conf.d/*.fish", "always"),
    (".kshrc", "interactive"), (".mkshrc", "interactive"), (".shrc", "interactive"),
    (".cshrc", "always"), (".tcshrc", "always"), (".login", "login"), (".logout", "logout"),
]
_ASSIGN = re.compile(r"""(?<![\w$.{/-])([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|'[^']*'|[^\s;&|)`]*)""")
_UNSET = re.compile(r"\bunset\s+((?:-[vfn]\s+)?(?:[A-Za-z_][A-Za-z0-9_]*\s*)+)")
_ALIAS = re.compile(r"^\s*alias\s+(?:--\s+)?([^=\s]+)=")
_STRUCTURE = re.compile(r"^(fi|esac|done|then|else|do|\{|\}|\(|\)|;;|exit(\s+\d+)?|return(\s+\d+)?)\s*;?\s*$")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


_CSH_SETENV = re.compile(r"^\s*(setenv|unsetenv)\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+(.*?))?\s*;?\s*$")
_FISH_SET = re.compile(r"^\s*set\s+((?:-[a-zA-Z]+\s+|--[a-z]+\s+)*)([A-Za-z_][A-Za-z0-9_]*)(?:\s+(.*?))?\s*;?\s*$")


def dialect_of(path: str) -> str:
    """fish, csh or sh: the syntax a start-up file is written in, by its name."""
    name = posixpath.basename(path)
    if name.endswith(".fish"):
        return "fish"
    if name in (".cshrc", ".tcshrc", ".login", ".logout", "csh.cshrc", "csh.login", "csh.logout"):
        return "csh"
    return "sh"


def shell_line_facts(line: str, dialect: str = "sh") -> dict[str, Any]:
    """What a shell line sets: variables assigned (quotes removed, last value kept), unset, an alias.
    csh's ``setenv NAME value`` / ``unsetenv NAME`` and fish's ``set -gx NAME value`` / ``set -e NAME``
    count as assignments and unsets too."""
    assigns: dict[str, str] = {}
    for name, value in _ASSIGN.findall(line):
        assigns[name] = _unquote(value)
    unsets: list[str] = []
    for group in _UNSET.findall(line):
        unsets += [w for w in group.split() if not w.startswith("-")]
    m = _CSH_SETENV.match(line) if dialect == "csh" else _FISH_SET.match(line) if dialect == "fish" else None
    if m and dialect == "csh":
        if m.group(1) == "unsetenv":
            unsets.append(m.group(2))
        else:
            assigns[m.group(2)] = _unquote(m.group(3) or "")
    elif m:
        if re.search(r"(^|\s)(-e|--erase)\s", m.group(1)):
            unsets.append(m.group(2))
        elif not re.search(r"(^|\s)(-q|--query|-n|--names|-S|--show)\s", m.group(1)):
            assigns[m.group(2)] = _unquote(m.group(3) or "")
    # named "environment" so that the redaction gate masks secret-named values (DB_PASSWORD=...) here as in
    # a process's environment
    facts: dict[str, Any] = {"environment": assigns or None, "unsets": unsets or None}
    alias = _ALIAS.match(line)
    if alias:
        facts["alias"] = alias.group(1)
    executables = command_executables(line)
    if executables:
        facts["executables"] = executables
    return facts


_FUNCTION = re.compile(r"^(?:function\s+([\w:.@-]+)(?:\s*\(\s*\))?|([\w:.@-]+)\s*\(\s*\))\s*(\{.*)?$")
_PARAM = re.compile(r"\$\{[^}]*\}")


class _FunctionTracker:
    """Which shell function body a line of a start-up file is in (by brace depth; a body in ( ) or a brace
    inside quotes may confuse it, which only makes a line look run when it is not)."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.depth = 0
        self.pending: str | None = None  # "name()" seen, its "{" on the next line

    def feed(self, line: str) -> str | None:
        braces = _PARAM.sub("", line)
        opened, closed = len(re.findall(r"(^|\s)\{(\s|$)|\{$", braces)), len(re.findall(r"(^|[\s;])\}", braces))
        if self.name is None:
            m = _FUNCTION.match(line)
            if m:
                name = m.group(1) or m.group(2)
                if m.group(3) is None:
                    self.pending = name
                    return name
                self.name, self.depth = name, opened - closed
                if self.depth <= 0:
                    self.name = None
                return name
            if self.pending and line.startswith("{"):
                self.name, self.depth, self.pending = self.pending, opened - closed, None
                name = self.name
                if self.depth <= 0:
                    self.name = None
                return name
            self.pending = None
            return None
        name = self.name
        self.depth += opened - closed
        if self.depth <= 0:
            self.name = None
        return name


def _shell_rc(ctx: Context, cap: int, budget: _Budget, user_homes: list[Home]) -> Iterator[Item]:
    targets: list[tuple[str, str, str, str | None]] = []  # (pattern, kind, scope, user)
    targets += [(p, kind, "system", None) for p, kind in SYSTEM_RC]
    for home in user_homes:
        targets += [(home.path.rstrip("/") + "/" + name, kind, "user", home.user) for name, kind in HOME_RC]
    seen: set[str] = set()
    for pattern, kind, scope, user in targets:
        ctx.check()
        for hit in _hits(ctx, [pattern]):
            if isinstance(hit, Problem):
                yield hit
                continue
            if hit in seen:
                continue
            seen.add(hit)
            got = _read_text(ctx, hit, cap)
            if got is None:
                continue
            if isinstance(got, Problem):
                yield got
                continue
            body, st = got
            dialect = dialect_of(hit)
            functions = _FunctionTracker()
            for number, line in _logical_lines(body):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                inside = functions.feed(line)
                if _STRUCTURE.match(line):
                    continue
                rec = {"file": hit, "user": user, "scope": scope, "kind": kind, "line": number,
                       "text": line[:MAX_LINE_CHARS], "file_mtime_ns": st.st_mtime_ns, "file_uid": st.st_uid,
                       **shell_line_facts(line, dialect)}
                if inside:
                    rec["function"] = inside  # defined here, run only when called
                yield from budget.record("shell_rc", rec)
            yield from copy_file(ctx, hit, cap)


# ---- what a command line runs -------------------------------------------------------------------

_WRAPPERS = {"nohup", "setsid", "exec", "nice", "ionice", "env", "sudo", "doas", "time", "command", "builtin",
             "stdbuf", "chroot", "taskset", "runuser", "su", "timeout", "flock", "daemonize", "chrt", "unbuffer",
             "daemon"}
# wrapper options that take the next word as their value (sudo -u USER, nice -n 10, RHEL daemon --user X)
_OPTION_ARGS = {"-u", "-g", "-n", "-c", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-s", "-k", "-w", "-E",
                "--user", "--group", "--pidfile", "--check", "--signal", "--kill-after", "--chdir", "--unset"}
# a wrapper's own first argument that is not the program: a duration, a CPU mask, a priority, a lock file
_WRAPPER_FIRST = {"timeout", "taskset", "chrt", "flock", "chroot"}
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"}
# command separators; '&' of a redirection (2>&1, >&, &>) is not one
_CONTROL = re.compile(r"\|\||&&|\|&|;|\||(?<![<>])&(?!>)|\n|\$\(|`|\(|\)")


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment, comments=False, posix=True)
    except ValueError:
        return segment.split()


def _unwrap(words: list[str], found: list[str], depth: int) -> list[str]:
    """The words of the program a wrapper (nohup, sudo -u x, timeout 10, su -c '...') runs."""
    base = posixpath.basename(words[0])
    if base in ("su", "runuser"):
        if "-c" in words and words.index("-c") + 1 < len(words) and depth < 3:
            found += command_executables(words[words.index("-c") + 1], depth + 1)
        return []
    rest, i = [], 1
    while i < len(words):
        word = words[i]
        if word in _OPTION_ARGS:
            i += 2
            continue
        if word.startswith(("-", "+")) or (base == "env" and "=" in word):
            i += 1
            continue
        rest = words[i:]
        break
    if base in _WRAPPER_FIRST and rest:
        rest = rest[1:]
    return rest


def command_executables(line: str, depth: int = 0) -> list[str]:
    """The programs a shell (or systemd Exec) line starts: the first word of each simple command after
    variable assignments and wrappers (nohup, setsid, env, timeout...), start-stop-daemon's --exec and
    RHEL's daemon, and what ``sh -c '...'`` runs. Best effort: enough to see a program in /tmp."""
    found: list[str] = []
    for segment in _CONTROL.split(line):
        words = _words(segment.strip())
        while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in ("!", "{", "if", "then",
                                                                                        "else", "do", "while",
                                                                                        "until", "elif")):
            words.pop(0)
        for _ in range(4):  # nohup sudo -u x timeout 5 prog
            if not words or posixpath.basename(words[0]) not in _WRAPPERS:
                break
            words = _unwrap(words, found, depth)
        if not words:
            continue
        program = words[0]
        base = posixpath.basename(program)
        if base == "start-stop-daemon":
            for flag in ("--exec", "-x", "--startas", "-a"):
                if flag in words and words.index(flag) + 1 < len(words):
                    found.append(words[words.index(flag) + 1])
            continue
        if base in _SHELLS and "-c" in words and depth < 3:
            idx = words.index("-c")
            if idx + 1 < len(words):
                found += command_executables(words[idx + 1], depth + 1)
        if program.startswith(("/", "./", "~", "%h", "$HOME", "${HOME}")) or base in _SHELLS:
            found.append(program)
    return list(dict.fromkeys(found))[:32]


# ---- systemd units and SysV init scripts --------------------------------------------------------

UNIT_DIRS = [
    ("/etc/systemd/system", "system"), ("/run/systemd/system", "runtime"), ("/usr/local/lib/systemd/system", "local"),
    ("/usr/lib/systemd/system", "vendor"), ("/lib/systemd/system", "vendor"), ("/etc/systemd/user", "user-global"),
    ("/usr/lib/systemd/user", "user-vendor"),
    # systemd-run's units (a favourite of attackers: no file in /etc, gone at reboot) and generators' output
    ("/run/systemd/transient", "transient"), ("/run/systemd/generator.early", "generator"),
    ("/run/systemd/generator", "generator"), ("/run/systemd/generator.late", "generator"),
    ("/run/systemd/user", "user-runtime"), ("/usr/local/lib/systemd/user", "user-local"),
    ("/lib/systemd/user", "user-vendor"),
    # `systemctl set-property` writes its drop-ins here; systemd reads them before any other folder, so a
    # hand-written ExecStartPre= there runs too
    ("/etc/systemd/system.control", "control"), ("/run/systemd/system.control", "control-runtime"),
]
# per user: the home's folders, and the user manager's runtime folders under /run/user/UID (systemd-run --user)
HOME_UNIT_DIRS = [(".config/systemd/user", "user"), (".local/share/systemd/user", "user"),
                  (".config/systemd/user.control", "user-control")]
USER_RUNTIME_DIRS = [("systemd/transient", "user-transient"), ("systemd/user", "user-runtime"),
                     ("systemd/user.control", "user-control"),
                     ("systemd/generator.early", "user-generator"), ("systemd/generator", "user-generator"),
                     ("systemd/generator.late", "user-generator")]
TIMER_KEYS = ("OnCalendar", "OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec")
UNIT_TYPES = {"service", "socket", "timer", "path"}
EXEC_KEYS = ("ExecCondition", "ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop",
             "ExecStopPost")
LIST_KEYS = {"WantedBy", "RequiredBy", "Also", "Alias", "EnvironmentFile"}
SINGLE_KEYS = {"Description", "User", "Group", "Restart", "Type", "WorkingDirectory", "Unit", "OnCalendar",
               "OnBootSec", "OnUnitActiveSec", "ListenStream", "PathChanged", "PathExists", "RemainAfterExit",
               "DynamicUser", "RootDirectory"}


_RENAMED = {"Type": "service_type", "Unit": "activates"}


def parse_unit(body: str) -> dict[str, Any]:
    """Directives of a unit file or drop-in, by the name they have (later values win for single
    settings; an empty Exec*= resets the list, as systemd does)."""
    out: dict[str, Any] = {"exec": {}}
    for _, line in _logical_lines(body):
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key in EXEC_KEYS:
            if value:
                out["exec"].setdefault(key, []).append(value[:MAX_LINE_CHARS])
            else:
                out["exec"][key] = []
        elif key == "Environment":
            # KEY=VALUE pairs (quoted ones whole) as a mapping: the redaction gate masks secret-named values
            for word in _words(value):
                name, eq, val = word.partition("=")
                if eq:
                    out.setdefault("Environment", {})[name] = val
        elif key in LIST_KEYS:
            out.setdefault(key, []).extend(value.split())
        elif key in TIMER_KEYS:  # a timer may have several; an empty one resets them, as systemd does
            schedule = out.setdefault("schedule", [])
            if value:
                schedule.append(f"{key}={value}"[:MAX_LINE_CHARS])
            else:
                schedule[:] = [v for v in schedule if not v.startswith(key + "=")]
            if key in SINGLE_KEYS:
                out[key] = value  # the last one, as before, for the rules that read it
        elif key in SINGLE_KEYS:
            out[key] = value
    return out


def _exec_program(value: str) -> str:
    """An Exec line without systemd's prefixes (@ - : + ! !!)."""
    return value.lstrip("@-:+!").strip()


def _unit_name(path: str) -> tuple[str, bool]:
    parent = posixpath.basename(posixpath.dirname(path))
    if parent.endswith(".d") and path.endswith(".conf"):
        return parent[:-2], True
    return posixpath.basename(path), False


def _template(unit: str) -> str:
    m = re.match(r"^([^@]+@)[^.]*(\.[a-z]+)$", unit)
    return m.group(1) + m.group(2) if m else unit


def _unit_scope(path: str, default: str) -> str:
    for folder, scope in UNIT_DIRS:
        if path.startswith(folder + "/"):
            return scope
    return default


def _unit_dirs(ctx: Context, user_homes: list[Home]) -> list[tuple[str, str, str | None]]:
    dirs = [(d, scope, None) for d, scope in UNIT_DIRS]
    dirs += [(h.path.rstrip("/") + "/" + sub, scope, h.user) for h in user_homes for sub, scope in HOME_UNIT_DIRS]
    names = {u["uid"]: u["name"] for u in passwd_users(ctx) if u.get("uid") is not None}
    try:
        runtime = [name for name, is_dir in listdir(ctx, "/run/user") if is_dir and name.isdigit()]
    except (OSError, ValueError):
        runtime = []
    for uid in runtime[:1000]:
        owner = names.get(int(uid), uid)
        dirs += [(f"/run/user/{uid}/{sub}", scope, owner) for sub, scope in USER_RUNTIME_DIRS]
    return dirs


def _exec_paths(program: str, owner_home: str | None) -> str | None:
    """The file an Exec line's program word names, as systemd finds it (%h is the user's home; a bare name is
    looked for in systemd's fixed search path by the caller); None when it depends on run-time values."""
    if owner_home:
        program = program.replace("%h", owner_home.rstrip("/")).replace("${HOME}", owner_home.rstrip("/"))
        program = program.replace("$HOME", owner_home.rstrip("/")).replace("~/", owner_home.rstrip("/") + "/")
    if "%" in program or "$" in program or not program:
        return None
    return program


class _UnitIndex:
    """What a walk of the unit folders finds: the unit files to read, and the links that say which units are
    enabled, static (enabled by the packages' own links), aliased or masked."""

    def __init__(self) -> None:
        self.units: list[tuple[str, str, str | None]] = []  # (path, scope, owner)
        self.linked: list[tuple[str, str, str | None]] = []  # targets of wants/ and alias links
        self.enabled: dict[str, list[str]] = {}
        self.static: dict[str, list[str]] = {}
        self.aliases: dict[str, list[str]] = {}
        self.masked: set[str] = set()
        self.seen: set[str] = set()

    def add_unit(self, path: str, scope: str, owner: str | None) -> None:
        """A unit file, once whatever number of folders or links reach it."""
        unit, _ = _unit_name(path)
        if unit.rsplit(".", 1)[-1] not in UNIT_TYPES or path in self.seen:
            return
        self.seen.add(path)
        self.units.append((path, scope, owner))


def _services(ctx: Context, cap: int, budget: _Budget, user_homes: list[Home],
              targets: Any = None) -> Iterator[Item]:

    home_of = {h.user: h.path for h in user_homes if h.user}
    index = _UnitIndex()
    for folder, scope, owner in _unit_dirs(ctx, user_homes):
        ctx.check()
        for hit in walk_glob(ctx, folder + "/**"):
            if isinstance(hit, Problem):
                yield hit
                continue
            _index_unit_file(ctx, index, hit, scope, owner)
    for target, scope, owner in index.linked:  # a unit kept outside the unit folders, reached by a link
        index.add_unit(target, _unit_scope(target, scope), owner)
    units = index.units
    if len(units) > budget.limit:  # records are held until the package database is read: hold no more than kept
        yield Problem(f"services: over {budget.limit} unit files; the rest not read", level="warning")
        # the packages' units are the ones to lose first: a flood must not push a transient unit out
        units = sorted(units, key=lambda u: u[1] in ("vendor", "user-vendor"))[:budget.limit]
    records: list[dict[str, Any]] = []
    for path, scope, owner in units:
        ctx.check()
        got = _read_text(ctx, path, cap)
        if got is None:
            continue
        if isinstance(got, Problem):
            yield got
            continue
        body, st = got
        rec = _unit_record(path, scope, owner, body, st, index)
        rec["exec_files"] = _unit_exec_files(ctx, rec["executables"], home_of.get(owner) if owner else None)
        if targets is not None:
            targets.want(rec["exec_files"] or [])
        records.append(rec)
        if scope not in ("vendor", "user-vendor"):  # vendor units are the packages'; the rest is copied
            yield from copy_file(ctx, path, cap)
    # Only now, with every unit read (and the package database with the targets), can a timer be joined to
    # what it starts and a program to the package that owns it.
    by_name: dict[str, dict[str, Any]] = {}
    for rec in records:
        if not rec["dropin"]:
            by_name.setdefault(rec["unit"], rec)
    for rec in records:
        ctx.check()
        _join_triggered(rec, by_name)
        if targets is not None and rec["exec_files"]:
            _add_exec_targets(rec, targets)
        yield from budget.record("services", rec)
    yield from _sysv(ctx, cap, budget)


def _index_unit_file(ctx: Context, index: _UnitIndex, hit: str, scope: str, owner: str | None) -> None:
    """File one entry of a unit folder: an enablement link, a mask, an alias or linked-in unit, or a unit."""
    parent = posixpath.basename(posixpath.dirname(hit))
    name = posixpath.basename(hit)
    try:
        is_link = stat.S_ISLNK(lstat(ctx, hit)[1].st_mode)
        target = resolve(ctx, hit) if is_link else hit
    except (OSError, ValueError):
        return
    if parent.endswith((".wants", ".requires", ".upholds")):
        # an enablement link: the unit it names starts with that target. The packages' own
        # links (vendor folders) make a unit static, not enabled by anyone on this host.
        links = index.static if scope in ("vendor", "user-vendor") else index.enabled
        links.setdefault(name, []).append(hit)
        links.setdefault(_template(name), []).append(hit)
        index.linked.append((target, scope, owner))
        return
    if is_link:
        try:
            if readlink(ctx, hit) == "/dev/null":
                index.masked.add(name)
                return
        except OSError:
            return
        # an alias (sshd.service -> ssh.service) or a unit linked in from elsewhere: read once,
        # under the name of the file it is
        index.aliases.setdefault(posixpath.basename(target), []).append(name)
        index.linked.append((target, scope, owner))
        return
    index.add_unit(hit, scope, owner)


def _unit_record(path: str, scope: str, owner: str | None, body: str, st: os.stat_result,
                 index: _UnitIndex) -> dict[str, Any]:
    """The services record of one unit file or drop-in, from its text and what the links say about it."""
    unit, dropin = _unit_name(path)
    parsed = parse_unit(body)
    execs = parsed.pop("exec")
    lines = [v for key in EXEC_KEYS for v in execs.get(key, [])]
    executables: list[str] = []
    for value in lines:
        executables += command_executables(_exec_program(value))
    enabled = index.enabled
    links = enabled.get(unit, []) + (enabled.get(_template(unit), []) if _template(unit) != unit else [])
    rec: dict[str, Any] = {
        "kind": "systemd", "unit": unit, "path": path, "scope": scope, "owner": owner, "dropin": dropin,
        "type": unit.rsplit(".", 1)[-1], "exec": execs or None,
        # one text the command rules read; " ; " keeps one Exec line's pipes apart from the next's
        "command": " ; ".join(_exec_program(v) for v in lines)[: MAX_LINE_CHARS * 4] or None,
        "executables": list(dict.fromkeys(executables)) or None,
        "user": parsed.get("User"), "restart": parsed.get("Restart"), "wanted_by": parsed.get("WantedBy"),
        "enabled": bool(links), "enabled_by": sorted(set(links))[:20] or None, "masked": unit in index.masked,
        "aliases": sorted(set(index.aliases.get(unit, [])))[:20] or None,
        "static": bool(index.static.get(unit) or index.static.get(_template(unit))),
        "mtime_ns": st.st_mtime_ns, "file_uid": st.st_uid,
        # Type= and a timer's or path unit's Unit= would shadow the unit's own type and name
        **{_RENAMED.get(k, k.lower()): v for k, v in parsed.items() if k not in ("User", "Restart", "WantedBy")},
    }
    if rec["type"] in ("timer", "path") and not dropin:
        # what it starts: Unit=, else the service of the same name (a template's instance keeps its name)
        rec["triggers"] = rec.get("activates") or unit.rsplit(".", 1)[0] + ".service"
    return rec


def _unit_exec_files(ctx: Context, executables: list[str] | None, owner_home: str | None) -> list[str] | None:
    """The files a unit's Exec lines run, by absolute path (None when none can be told without running it)."""
    files: list[str] = []
    for program in executables or []:
        found = _exec_paths(program, owner_home)
        if found and not found.startswith("/") and "/" not in found:
            found = search(ctx, found)  # systemd's own search path for a bare name
        if found and found.startswith("/"):
            files.append(found)
    return files or None


def _join_triggered(rec: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> None:
    """A timer or path unit joined to the unit it starts."""
    if rec.get("triggers"):
        started = by_name.get(rec["triggers"]) or by_name.get(_template(rec["triggers"]))
        rec["triggers_found"] = started is not None
        if started:  # so that a rule reading the timer sees what it runs, and where that unit lives
            rec.update(triggers_command=started["command"], triggers_executables=started["executables"],
                       triggers_scope=started["scope"], triggers_path=started["path"])


def _add_exec_targets(rec: dict[str, Any], targets: Any) -> None:
    """What the package database and the hashes say about the programs a unit runs."""
    facts = [targets.facts(f) for f in rec["exec_files"][:16]]
    rec["exec_targets"] = facts
    # flat lists the rules match on: where the programs really are, and any a package does not vouch for
    rec["exec_resolved"] = [f.get("resolved") or f["path"] for f in facts]
    rec["exec_unowned"] = [f.get("resolved") or f["path"] for f in facts if f.get("owned") is False] or None
    rec["exec_modified"] = [f["resolved"] for f in facts if f.get("package_verify") == "mismatch"] or None


SYSV_SCRIPTS = ["/etc/init.d/*", "/etc/rc.d/init.d/*", "/etc/rc.local", "/etc/rc.d/rc.local"]
SYSV_LINKS = ["/etc/rc[0-6S].d/S*", "/etc/rc.d/rc[0-6].d/S*"]
MAX_SYSV_LINES = 400


def _sysv(ctx: Context, cap: int, budget: _Budget) -> Iterator[Item]:
    starts: dict[str, list[str]] = {}
    for hit in _all_hits(ctx, SYSV_LINKS):
        try:
            target = resolve(ctx, hit)
        except (OSError, ValueError):
            continue
        starts.setdefault(target, []).append(hit)
    for hit in _hits(ctx, SYSV_SCRIPTS):
        ctx.check()
        if isinstance(hit, Problem):
            yield hit
            continue
        name = posixpath.basename(hit)
        if name.startswith(("README", "skeleton")) or name.endswith(("~", ".dpkg-old", ".dpkg-dist", ".rpmsave")):
            continue
        got = _read_text(ctx, hit, cap)
        if got is None:
            continue
        if isinstance(got, Problem):
            yield got
            continue
        body, st = got
        real = resolve(ctx, hit)
        base = {"kind": "sysv", "path": hit, "script": name, "mtime_ns": st.st_mtime_ns, "file_uid": st.st_uid,
                "file_mode": oct(st.st_mode & 0o7777), "executable_file": bool(st.st_mode & 0o111),
                "start_links": sorted(starts.get(real, []))[:20] or None}
        count = 0
        for number, line in _logical_lines(body):
            line = line.strip()
            if not line or line.startswith("#") or _STRUCTURE.match(line):
                continue
            count += 1
            if count > MAX_SYSV_LINES:
                yield Problem(f"init script: more than {MAX_SYSV_LINES} command lines; the rest not recorded",
                              path=hit, level="warning")
                break
            yield from budget.record("services", {**base, "line": number, "command": line[:MAX_LINE_CHARS],
                                                  "executables": command_executables(line) or None})
        if count == 0:  # an empty script is still one the host has
            yield from budget.record("services", {**base, "line": None, "command": None})
        yield from copy_file(ctx, hit, cap)


def _all_hits(ctx: Context, patterns: list[str]) -> Iterator[str]:
    for pattern in patterns:
        for hit in walk_glob(ctx, pattern):
            if isinstance(hit, str):
                yield hit


# ---- sudoers ------------------------------------------------------------------------------------

_TAG = re.compile(r"^(NOPASSWD|PASSWD|SETENV|NOSETENV|EXEC|NOEXEC|LOG_INPUT|NOLOG_INPUT|LOG_OUTPUT|"
                  r"NOLOG_OUTPUT|MAIL|NOMAIL|FOLLOW|NOFOLLOW|INTERCEPT|NOINTERCEPT)\s*:\s*")
# programs that hand out a root shell whatever their arguments (shells, editors, pagers, interpreters,
# GTFOBins' escapes), and ones that write or hand over any file when their arguments are left open
SHELL_OR_EDITOR = re.compile(
    r"(^|/)(ba|da|z|k|c|tc|fi|a)?sh$|(^|/)(busybox|su|sudo|vi|vim|nvim|view|nano|pico|ed|emacs|less|more|man|"
    r"awk|gawk|mawk|find|python[0-9.]*|perl|ruby|lua|php|node|tclsh|expect|env|script|socat|nc|ncat|gdb|"
    r"strace|nsenter|unshare|chroot|xargs|docker|podman|crontab|screen|tmux)$")
OPEN_WRITER = re.compile(r"(^|/)(tee|dd|cp|mv|chmod|chown|install|tar|zip|rsync|ln)$")


def _gives_root(command: str) -> bool:
    words = command.split()
    if not words:
        return False
    if SHELL_OR_EDITOR.search(words[0]):
        return True
    return bool(OPEN_WRITER.search(words[0])) and (len(words) == 1 or "*" in command)


def _split_commas(value: str) -> list[str]:
    parts, current, depth, i = [], [], 0, 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            current.append(value[i:i + 2])
            i += 2
            continue
        depth += c == "("
        depth -= c == ")"
        if c == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _sudo_files(ctx: Context, cap: int) -> Iterator[tuple[str, list[tuple[int, str]], bool] | Problem]:
    """(file, logical lines, whether sudo reads it) of /etc/sudoers and what it includes."""
    queue: list[tuple[str, bool, int]] = [("/etc/sudoers", True, 0)]
    done: set[str] = set()
    while queue:
        path, active, depth = queue.pop(0)
        if path in done:
            continue
        done.add(path)
        got = _read_text(ctx, path, cap)
        if got is None:
            continue
        if isinstance(got, Problem):
            yield got
            continue
        lines = list(_logical_lines(got[0]))
        yield path, lines, active
        for _, line in lines:
            m = re.match(r"^\s*[#@](include|includedir)\s+(\S+)", line)
            if not m or depth >= MAX_INCLUDE_DEPTH:
                continue
            target = m.group(2).replace("%h", "")
            target = target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target)
            if m.group(1) == "include":
                queue.append((target, active, depth + 1))
                continue
            for hit in walk_glob(ctx, target.rstrip("/") + "/*"):
                if isinstance(hit, str):
                    name = posixpath.basename(hit)
                    # sudo skips names ending in '~' or holding a '.' (editor and package backups)
                    queue.append((hit, active and not (name.endswith("~") or "." in name), depth + 1))
    # a sudoers.d the main file does not include (or whose include is gone) is still evidence
    for hit in walk_glob(ctx, "/etc/sudoers.d/*"):
        if isinstance(hit, str) and hit not in done:
            got = _read_text(ctx, hit, cap)
            if isinstance(got, tuple):
                done.add(hit)
                yield hit, list(_logical_lines(got[0])), False


def _sudo(ctx: Context, cap: int, budget: _Budget) -> Iterator[Item]:
    accounts = {u["name"]: u for u in passwd_users(ctx)}
    files = list(_sudo_files(ctx, cap))
    aliases: dict[str, list[str]] = {}
    parsed: list[tuple[str, int, str, bool]] = []
    for item in files:
        if isinstance(item, Problem):
            yield item
            continue
        path, lines, active = item
        for number, raw in lines:
            line = raw.strip()
            if not line or (line.startswith("#") and not re.match(r"#\d", line)):
                continue
            if line.startswith(("@include", "#include")):
                continue
            m = re.match(r"^(User|Runas|Host|Cmnd|Cmd)_Alias\s+(.*)$", line)
            if m:
                for definition in m.group(2).split(":"):
                    name, _, members = definition.partition("=")
                    aliases[name.strip()] = _split_commas(members)
                continue
            parsed.append((path, number, line, active))
    for path, number, line, active in parsed:
        ctx.check()
        if line.startswith("Defaults"):
            yield from _sudo_defaults(path, number, line, active, accounts, budget)
            continue
        left, sep, right = line.partition("=")
        if not sep:
            continue
        left_words = left.split()
        if len(left_words) < 2:
            continue
        users = _split_commas(" ".join(left_words[:-1]))
        commands, runas, tags, nopasswd_cmds = [], None, set(), []
        for spec in _split_commas(right):
            spec = spec.strip()
            m = re.match(r"^\(([^)]*)\)\s*", spec)
            if m:
                runas, spec = m.group(1), spec[m.end():]
            while (t := _TAG.match(spec)):
                tag = t.group(1)
                tags.discard({"NOPASSWD": "PASSWD", "PASSWD": "NOPASSWD"}.get(tag, ""))
                tags.add(tag)
                spec = spec[t.end():]
            for command in _expand(spec.strip(), aliases):
                commands.append(command)
                if "NOPASSWD" in tags:
                    nopasswd_cmds.append(command)
        programs = [c for c in nopasswd_cmds if c and c not in ("ALL", "!ALL")]
        for user in users:
            members = _expand(user, aliases) if user in aliases else [user]
            for member in members:
                yield from budget.record("sudo_rules", _grant(path, number, line, active, member, user, runas,
                                                              commands, nopasswd_cmds, programs, accounts))


def _expand(word: str, aliases: dict[str, list[str]], depth: int = 0) -> list[str]:
    if word in aliases and depth < 8:
        out: list[str] = []
        for member in aliases[word]:
            out += _expand(member.lstrip("!"), aliases, depth + 1) if member.lstrip("!") in aliases else [member]
        return out
    return [word]


def _grant(path: str, number: int, line: str, active: bool, member: str, written: str, runas: str | None,
           commands: list[str], nopasswd_cmds: list[str], programs: list[str],
           accounts: dict[str, dict]) -> dict[str, Any]:
    kind = ("all" if member == "ALL" else "group" if member.startswith("%") else
            "uid" if member.startswith("#") else "netgroup" if member.startswith("+") else "user")
    account = accounts.get(member) if kind == "user" else None
    shell = (account or {}).get("shell") or ""
    uid = (account or {}).get("uid")
    return {"file": path, "line": number, "text": line[:MAX_LINE_CHARS], "active": active, "user": member,
            "user_as_written": written, "user_kind": kind, "runas": runas, "commands": commands[:50],
            "nopasswd": bool(nopasswd_cmds), "nopasswd_commands": nopasswd_cmds[:50] or None,
            "nopasswd_all": "ALL" in nopasswd_cmds,
            "nopasswd_shell_or_editor": any(_gives_root(p) for p in programs),
            "account_exists": account is not None if kind == "user" else None, "account_uid": uid,
            "account_shell": shell or None,
            # a service account: a system UID or a shell that refuses logins
            "account_system": (uid is not None and 0 < uid < 1000) or bool(re.search(r"(nologin|false)$", shell))
            if account else None}


def _sudo_defaults(path: str, number: int, line: str, active: bool, accounts: dict[str, dict],
                   budget: _Budget) -> Iterator[Item]:
    """``Defaults !authenticate`` (for all, or ``Defaults:user``) is NOPASSWD for everything."""
    m = re.match(r"^Defaults(?:([:@>!])(\S+))?\s+(.*)$", line)
    if not m or not re.search(r"(^|[\s,])!\s*authenticate\b", m.group(3)):
        return
    scope, who = m.group(1), m.group(2)
    users = _split_commas(who) if scope == ":" and who else ["ALL"]
    for user in users:
        yield from budget.record("sudo_rules", {**_grant(path, number, line, active, user, user, None, ["ALL"],
                                                         ["ALL"], [], accounts), "defaults": True})


# ---- sshd ----------------------------------------------------------------------------------------

def _sshd(ctx: Context, budget: _Budget) -> Iterator[Item]:
    """Each sshd_config directive, ``effective`` when sshd would use it: the first value of a keyword
    in the global part (Include followed in place), or the first one inside its Match block."""
    first: set[tuple[str | None, str]] = set()
    for path in ctx.opt("sshd_configs", ["/etc/ssh/sshd_config"]):
        for item in _config_lines(ctx, path):
            if isinstance(item, Problem):
                yield item
                continue
            file, number, keyword, value, match = item
            if keyword in ("match", "include"):
                continue
            key = (match, keyword)
            effective = key not in first
            first.add(key)
            yield from budget.record("sshd_settings", {
                "path": file, "line": number, "keyword": keyword, "value": value, "match": match,
                "effective": effective, "values": value.split()})


# ---- the collector -------------------------------------------------------------------------------

def collect(ctx: Context) -> Iterator[Item]:

    cap = int(ctx.opt("cap_bytes", 1 << 20))
    budget = _Budget(int(ctx.opt("max_records_per_stream", 50000)))
    # programs units and PAM lines name, hashed and checked against the package database (read once, for the
    # names the units announce before their first lookup: so services come before PAM)
    targets = Targets(ctx, int(ctx.opt("hash_limit", HASH_LIMIT)), int(ctx.opt("hash_budget", HASH_BUDGET)))
    user_homes: list[Home] = []
    for home in homes(ctx):
        if isinstance(home, Home):
            user_homes.append(home)
    for part in (lambda: _services(ctx, cap, budget, user_homes, targets), lambda: _pam(ctx, cap, budget, targets),
                 lambda: _shell_rc(ctx, cap, budget, user_homes), lambda: _sudo(ctx, cap, budget),
                 lambda: _sshd(ctx, budget)):
        ctx.check()
        yield from part()
    yield from (p for p in targets.problems if p.level != "info")
