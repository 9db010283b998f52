"""Clean servers: the distribution's files (os-release, accounts, PAM stacks as shipped, sshd_config with its
Include, cloud-init's user and sudoers file, cron, units, package database and logs) and the server's kind
(web, CI runner with Docker, database with backups, bastion) with a week of ordinary work, including the
legitimate look-alikes responders meet: a key limited with from=, an empty btmp on a young private host,
get.docker.com piped to a shell once, a key added this week by an admin who shows up in the logs, the
Docker socket mounted into a CI runner's container, `nc -zv` health checks, admins reading /etc/passwd."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

from .host import (
    DAY,
    FIRST,
    LAST,
    ROOT_BASHRC_DEBIAN,
    SCAN_PATHS,
    UA_BOTS,
    UA_BROWSERS,
    Host,
    public_ip,
)

# --------------------------------------------------------------------------------------------------
# PAM stacks as the distributions ship them

PAM_DEBIAN = {
    "common-auth": "#\n# /etc/pam.d/common-auth - authentication settings common to all services\n#\n"
                   "# here are the per-package modules (the \"Primary\" block)\n"
                   "auth\t[success=1 default=ignore]\tpam_unix.so nullok\n"
                   "# here's the fallback if no module succeeds\nauth\trequisite\t\t\tpam_deny.so\n"
                   "# prime the stack with a positive return value if there isn't one already;\n"
                   "auth\trequired\t\t\tpam_permit.so\n# end of pam-auth-update config\n",
    "common-account": "account\t[success=1 new_authtok_reqd=done default=ignore]\tpam_unix.so \n"
                      "account\trequisite\t\t\tpam_deny.so\naccount\trequired\t\t\tpam_permit.so\n",
    "common-password": "password\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt\n"
                       "password\trequisite\t\t\tpam_deny.so\npassword\trequired\t\t\tpam_permit.so\n",
    "common-session": "session\t[default=1]\t\t\tpam_permit.so\nsession\trequisite\t\t\tpam_deny.so\n"
                      "session\trequired\t\t\tpam_permit.so\nsession\trequired\tpam_unix.so \n"
                      "session\toptional\tpam_systemd.so \n",
    "common-session-noninteractive": "session\t[default=1]\t\t\tpam_permit.so\nsession\trequisite\t\t\tpam_deny.so\n"
                                     "session\trequired\t\t\tpam_permit.so\nsession\trequired\tpam_unix.so \n",
    "sshd": "# PAM configuration for the Secure Shell service\n\n@include common-auth\n"
            "account    required     pam_nologin.so\n@include common-account\n"
            "session [success=ok ignore=ignore module_unknown=ignore default=bad]        pam_selinux.so close\n"
            "session    required     pam_loginuid.so\nsession    optional     pam_keyinit.so force revoke\n"
            "@include common-session\nsession    optional     pam_motd.so  motd=/run/motd.dynamic\n"
            "session    optional     pam_motd.so noupdate\nsession    optional     pam_mail.so standard noenv\n"
            "session    required     pam_limits.so\nsession    required     pam_env.so\n"
            "session    required     pam_env.so envfile=/etc/default/locale\n"
            "session [success=ok ignore=ignore module_unknown=ignore default=bad]        pam_selinux.so open\n"
            "@include common-password\n",
    "sudo": "#%PAM-1.0\n\n# Set up user limits from /etc/security/limits.conf.\nsession    required   pam_limits.so\n\n"
            "@include common-auth\n@include common-account\n@include common-session-noninteractive\n",
    "su": "#\n# The PAM configuration file for the Shadow `su' service\n#\nauth       sufficient pam_rootok.so\n"
          "session       required   pam_env.so readenv=1\nsession       required   pam_env.so readenv=1 "
          "envfile=/etc/default/locale\nsession    optional   pam_mail.so nopen\nsession    required   "
          "pam_limits.so\n@include common-auth\n@include common-account\n@include common-session\n",
    "cron": "# The PAM configuration file for the cron daemon\n\n@include common-auth\n\n"
            "# Sets the loginuid process attribute\nsession    required     pam_loginuid.so\n\n"
            "# Read environment variables from pam_env's default files, /etc/environment\n"
            "# and /etc/security/pam_env.conf.\nsession       required   pam_env.so\n\n"
            "# In addition, read system locale information\nsession       required   pam_env.so "
            "envfile=/etc/default/locale\n\n@include common-account\n@include common-session-noninteractive \n\n"
            "# Sets up user limits, please define limits for cron tasks\n# through /etc/security/limits.conf\n"
            "session    required   pam_limits.so\n\n",
    "login": "auth       optional   pam_faildelay.so  delay=3000000\nauth [success=ok new_authtok_reqd=ok "
             "ignore=ignore user_unknown=bad default=die] pam_securetty.so\nauth       requisite  pam_nologin.so\n"
             "session       required   pam_env.so readenv=1\n@include common-auth\nauth       optional   "
             "pam_group.so\nsession    required   pam_limits.so\nsession    optional   pam_lastlog.so\n"
             "session    optional   pam_motd.so motd=/run/motd.dynamic\n@include common-account\n"
             "@include common-session\n@include common-password\n",
    "other": "#\n# /etc/pam.d/other - specify the PAM fallback behaviour\n#\n@include common-auth\n"
             "@include common-account\n@include common-password\n@include common-session\n",
}
PAM_RHEL = {
    "system-auth": "#%PAM-1.0\n# This file is auto-generated.\n# User changes will be destroyed the next time "
                   "authconfig is run.\nauth        required      pam_env.so\nauth        required      "
                   "pam_faildelay.so delay=2000000\nauth        sufficient    pam_unix.so nullok try_first_pass\n"
                   "auth        requisite     pam_succeed_if.so uid >= 1000 quiet_success\nauth        required"
                   "      pam_deny.so\n\naccount     required      pam_unix.so\naccount     sufficient    "
                   "pam_localuser.so\naccount     sufficient    pam_succeed_if.so uid < 1000 quiet\naccount     "
                   "required      pam_permit.so\n\npassword    requisite     pam_pwquality.so try_first_pass "
                   "local_users_only retry=3 authtok_type=\npassword    sufficient    pam_unix.so sha512 shadow "
                   "nullok try_first_pass use_authtok\npassword    required      pam_deny.so\n\nsession     "
                   "optional      pam_keyinit.so revoke\nsession     required      pam_limits.so\n-session     "
                   "optional      pam_systemd.so\nsession     [success=1 default=ignore] pam_succeed_if.so service "
                   "in crond quiet use_uid\nsession     required      pam_unix.so\n",
    "sshd": "#%PAM-1.0\nauth       required     pam_sepermit.so\nauth       substack     password-auth\n"
            "auth       include      postlogin\n# Used with polkit to reauthorize users in remote sessions\n"
            "-auth      optional     pam_reauthorize.so prepare\naccount    required     pam_nologin.so\n"
            "account    include      password-auth\npassword   include      password-auth\n"
            "# pam_selinux.so close should be the first session rule\nsession    required     pam_selinux.so close\n"
            "session    required     pam_loginuid.so\n# pam_selinux.so open should only be followed by sessions "
            "to be executed in the user context\nsession    required     pam_selinux.so open env_params\n"
            "session    required     pam_namespace.so\nsession    optional     pam_keyinit.so force revoke\n"
            "session    include      password-auth\nsession    include      postlogin\n",
    "sudo": "#%PAM-1.0\nauth       include      system-auth\naccount    include      system-auth\n"
            "password   include      system-auth\nsession    optional     pam_keyinit.so revoke\n"
            "session    include      system-auth\n",
    "su": "#%PAM-1.0\nauth\t\tsufficient\tpam_rootok.so\nauth\t\tsubstack\tsystem-auth\nauth\t\tinclude\t\t"
          "postlogin\naccount\t\tsufficient\tpam_succeed_if.so uid = 0 use_uid quiet\naccount\t\tinclude\t\t"
          "system-auth\npassword\tinclude\t\tsystem-auth\nsession\t\tinclude\t\tsystem-auth\nsession\t\tinclude"
          "\t\tpostlogin\nsession\t\toptional\tpam_xauth.so\n",
    "crond": "#\n# The PAM configuration file for the cron daemon\n#\n#\n# No PAM authentication called, auth "
             "modules not needed\naccount    required   pam_access.so\naccount    include    password-auth\n"
             "session    required   pam_loginuid.so\nsession    include    password-auth\nauth       include    "
             "password-auth\n",
    "postlogin": "#%PAM-1.0\n# This file is auto-generated.\n\nsession     [success=1 default=ignore] "
                 "pam_succeed_if.so service !~ gdm* service !~ su* quiet\nsession     [default=1]   pam_lastlog.so "
                 "nowtmp showfailed\nsession     optional      pam_lastlog.so silent noupdate showfailed\n",
    "other": "#%PAM-1.0\nauth     required       pam_deny.so\naccount  required       pam_deny.so\n"
             "password required       pam_deny.so\nsession  required       pam_deny.so\n",
}
PAM_RHEL["password-auth"] = PAM_RHEL["system-auth"]

SSHD_DEBIAN = """
# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

# This sshd was compiled with PATH=/usr/local/bin:/usr/bin:/bin:/usr/games

Include /etc/ssh/sshd_config.d/*.conf

#Port 22
#AddressFamily any
#ListenAddress 0.0.0.0
#ListenAddress ::

#HostKey /etc/ssh/ssh_host_rsa_key
#HostKey /etc/ssh/ssh_host_ecdsa_key
#HostKey /etc/ssh/ssh_host_ed25519_key

# Logging
#SyslogFacility AUTH
#LogLevel INFO

# Authentication:

#LoginGraceTime 2m
#PermitRootLogin prohibit-password
#StrictModes yes
#MaxAuthTries 6
#MaxSessions 10

#PubkeyAuthentication yes

# Expect .ssh/authorized_keys2 to be disregarded by default in future.
#AuthorizedKeysFile\t.ssh/authorized_keys .ssh/authorized_keys2

# To disable tunneled clear text passwords, change to no here!
#PasswordAuthentication yes
#PermitEmptyPasswords no

# Change to yes to enable challenge-response passwords (beware issues with
# some PAM modules and threads)
KbdInteractiveAuthentication no

UsePAM yes

#AllowAgentForwarding yes
#AllowTcpForwarding yes
#GatewayPorts no
X11Forwarding yes
#PrintMotd yes
PrintMotd no

# Allow client to pass locale environment variables
AcceptEnv LANG LC_*

# override default of no subsystems
Subsystem\tsftp\t/usr/lib/openssh/sftp-server
"""
SSHD_AL2 = """#\t$OpenBSD: sshd_config,v 1.100 2016/08/15 12:32:04 naddy Exp $

# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

#Port 22
#AddressFamily any
#ListenAddress 0.0.0.0

HostKey /etc/ssh/ssh_host_rsa_key
#HostKey /etc/ssh/ssh_host_dsa_key
HostKey /etc/ssh/ssh_host_ecdsa_key
HostKey /etc/ssh/ssh_host_ed25519_key

SyslogFacility AUTHPRIV
#LogLevel INFO

#PermitRootLogin yes
#MaxAuthTries 6

AuthorizedKeysFile .ssh/authorized_keys

PasswordAuthentication no
ChallengeResponseAuthentication no

GSSAPIAuthentication yes
GSSAPICleanupCredentials no

UsePAM yes

X11Forwarding yes
#UsePrivilegeSeparation sandbox

AcceptEnv LANG LC_CTYPE LC_NUMERIC LC_TIME LC_COLLATE LC_MONETARY LC_MESSAGES
AcceptEnv LC_PAPER LC_NAME LC_ADDRESS LC_TELEPHONE LC_MEASUREMENT
AcceptEnv LC_IDENTIFICATION LC_ALL LANGUAGE
AcceptEnv XMODIFIERS

Subsystem sftp\t/usr/libexec/openssh/sftp-server

AuthorizedKeysCommand /opt/aws/bin/eic_run_authorized_keys %u %f
AuthorizedKeysCommandUser ec2-instance-connect
"""
SSHD_AL2023 = """#\t$OpenBSD: sshd_config,v 1.104 2021/07/02 05:11:21 dtucker Exp $

# To modify the system-wide sshd configuration, create a  *.conf  file under
#  /etc/ssh/sshd_config.d/  which will be automatically included below
Include /etc/ssh/sshd_config.d/*.conf

#Port 22
#PermitRootLogin prohibit-password
AuthorizedKeysFile\t.ssh/authorized_keys

#PasswordAuthentication yes
KbdInteractiveAuthentication no

Subsystem\tsftp\t/usr/libexec/openssh/sftp-server

AuthorizedKeysCommand /opt/aws/bin/eic_run_authorized_keys %u %f
AuthorizedKeysCommandUser ec2-instance-connect
"""

DEBIAN_SYSTEM = [("root", 0, "/root", "/bin/bash"), ("daemon", 1, "/usr/sbin", "/usr/sbin/nologin"),
                 ("bin", 2, "/bin", "/usr/sbin/nologin"), ("sys", 3, "/dev", "/usr/sbin/nologin"),
                 ("sync", 4, "/bin", "/bin/sync"), ("games", 5, "/usr/games", "/usr/sbin/nologin"),
                 ("man", 6, "/var/cache/man", "/usr/sbin/nologin"), ("lp", 7, "/var/spool/lpd", "/usr/sbin/nologin"),
                 ("mail", 8, "/var/mail", "/usr/sbin/nologin"), ("news", 9, "/var/spool/news", "/usr/sbin/nologin"),
                 ("uucp", 10, "/var/spool/uucp", "/usr/sbin/nologin"), ("proxy", 13, "/bin", "/usr/sbin/nologin"),
                 ("www-data", 33, "/var/www", "/usr/sbin/nologin"), ("backup", 34, "/var/backups", "/usr/sbin/nologin"),
                 ("list", 38, "/var/list", "/usr/sbin/nologin"), ("irc", 39, "/run/ircd", "/usr/sbin/nologin"),
                 ("_apt", 42, "/nonexistent", "/usr/sbin/nologin"), ("nobody", 65534, "/nonexistent",
                                                                     "/usr/sbin/nologin"),
                 ("systemd-network", 998, "/", "/usr/sbin/nologin"), ("messagebus", 100, "/nonexistent",
                                                                        "/usr/sbin/nologin"),
                 ("sshd", 101, "/run/sshd", "/usr/sbin/nologin"), ("polkitd", 997, "/", "/usr/sbin/nologin")]
RHEL_SYSTEM = [("root", 0, "/root", "/bin/bash"), ("bin", 1, "/bin", "/sbin/nologin"),
               ("daemon", 2, "/sbin", "/sbin/nologin"), ("adm", 3, "/var/adm", "/sbin/nologin"),
               ("lp", 4, "/var/spool/lpd", "/sbin/nologin"), ("sync", 5, "/sbin", "/bin/sync"),
               ("shutdown", 6, "/sbin", "/sbin/shutdown"), ("halt", 7, "/sbin", "/sbin/halt"),
               ("mail", 8, "/var/spool/mail", "/sbin/nologin"), ("operator", 11, "/root", "/sbin/nologin"),
               ("games", 12, "/usr/games", "/sbin/nologin"), ("ftp", 14, "/var/ftp", "/sbin/nologin"),
               ("nobody", 65534, "/", "/sbin/nologin"), ("systemd-network", 192, "/", "/sbin/nologin"),
               ("dbus", 81, "/", "/sbin/nologin"), ("rpc", 32, "/var/lib/rpcbind", "/sbin/nologin"),
               ("libstoragemgmt", 999, "/var/run/lsm", "/sbin/nologin"), ("sshd", 74, "/var/empty/sshd",
                                                                           "/sbin/nologin"),
               ("chrony", 998, "/var/lib/chrony", "/sbin/nologin"), ("rpcuser", 29, "/var/lib/nfs", "/sbin/nologin"),
               ("ec2-instance-connect", 997, "/home/ec2-instance-connect", "/sbin/nologin"),
               ("postfix", 89, "/var/spool/postfix", "/sbin/nologin"), ("tcpdump", 72, "/", "/sbin/nologin")]
DEBIAN_GROUPS = [("root", 0), ("daemon", 1), ("bin", 2), ("sys", 3), ("adm", 4), ("tty", 5), ("disk", 6), ("lp", 7),
                 ("mail", 8), ("news", 9), ("uucp", 10), ("man", 12), ("proxy", 13), ("kmem", 15), ("dialout", 20),
                 ("cdrom", 24), ("sudo", 27), ("audio", 29), ("dip", 30), ("www-data", 33), ("backup", 34),
                 ("operator", 37), ("shadow", 42), ("utmp", 43), ("video", 44), ("plugdev", 46), ("staff", 50),
                 ("users", 100), ("nogroup", 65534), ("systemd-journal", 999), ("netdev", 106), ("crontab", 102)]
RHEL_GROUPS = [("root", 0), ("bin", 1), ("daemon", 2), ("sys", 3), ("adm", 4), ("tty", 5), ("disk", 6), ("lp", 7),
               ("mem", 8), ("kmem", 9), ("wheel", 10), ("cdrom", 11), ("mail", 12), ("man", 15), ("dialout", 18),
               ("floppy", 19), ("games", 20), ("tape", 33), ("video", 39), ("ftp", 50), ("lock", 54), ("audio", 63),
               ("users", 100), ("nobody", 65534), ("utmp", 22), ("utempter", 35), ("input", 999),
               ("systemd-journal", 190), ("ssh_keys", 998), ("sshd", 74), ("ec2-instance-connect", 997)]


def real_file(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def distro_base(h: Host) -> None:
    """Files every host of the distribution has, and its cloud-init default user."""
    d, rng = h.d, h.rng
    for name, gid in DEBIAN_GROUPS if d.family == "debian" else RHEL_GROUPS:
        h.group(name, gid)
    for name, uid, home, shell in DEBIAN_SYSTEM if d.family == "debian" else RHEL_SYSTEM:
        h.account(name, uid, home, shell, gecos=name if uid else "root", gid=uid if uid != 65534 else 65534,
                  make_home=False)
    h.accounts["root"].hash = "*" if d.family == "debian" else "!!" if d.key == "al2" else "*"
    admin_groups = ("adm", "dialout", "cdrom", "audio", "dip", "video", "plugdev", "netdev", "sudo") \
        if d.family == "debian" else ("adm", "wheel", "systemd-journal")
    h.account(d.default_user, 1000, gecos="Debian" if d.key == "debian12" else "Ubuntu" if d.id == "ubuntu" else
              "EC2 Default User", groups=admin_groups, hashed="!" if d.family == "debian" else "!!")
    for link, to in (("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64")):
        h.symlink(link, to, mtime=h.created - 300 * DAY)  # merged /usr
    h.write("/etc/hostname", h.hostname + "\n", mtime=h.created + 40)
    h.write("/etc/hosts", f"127.0.0.1 localhost\n{h.ip} {h.hostname}\n\n# The following lines are desirable for "
            "IPv6 capable hosts\n::1 ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n"
            if d.family == "debian" else "127.0.0.1   localhost localhost.localdomain localhost4 "
            "localhost4.localdomain4\n::1         localhost6 localhost6.localdomain6\n", mtime=h.created + 40)
    h.write("/etc/machine-id", h.machine_id + "\n", 0o444, mtime=h.created + 30)
    h.write("/usr/lib/os-release", d.os_release, mtime=h.created - 30 * DAY)
    h.symlink("/etc/os-release", "../usr/lib/os-release")
    if d.id == "debian":
        h.write("/etc/debian_version", "12.8\n")
        h.write("/etc/timezone", "Etc/UTC\n")
    elif d.id == "ubuntu":
        h.write("/etc/lsb-release", f"DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE={d.version_id}\nDISTRIB_CODENAME="
                f"{d.codename}\nDISTRIB_DESCRIPTION=\"{d.pretty}\"\n")
        h.write("/etc/debian_version", "bookworm/sid\n" if d.version_id == "22.04" else "trixie/sid\n")
    else:
        h.write("/etc/system-release", d.pretty.replace("Amazon Linux 2023.", "Amazon Linux release 2023.")
                .replace("Amazon Linux 2", "Amazon Linux release 2 (Karoo)") + "\n")
    h.symlink("/etc/localtime", "/usr/share/zoneinfo/Etc/UTC")
    h.write("/etc/resolv.conf", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch ec2.internal\n"
            if d.id == "ubuntu" else "nameserver 169.254.169.253\nsearch ec2.internal\n" if d.id == "amzn"
            else f"domain {rng.choice(['eu-central-1.compute.internal', 'internal'])}\n"
            f"nameserver {h.ip.rsplit('.', 1)[0]}.2\n")
    h.write("/etc/fstab", f"# /etc/fstab: static file system information\nUUID={_uuid(rng)} / ext4 "
            "rw,discard,errors=remount-ro,"
            "x-systemd.growfs 0 1\n" if d.family == "debian" else
            f"#\nUUID={_uuid(rng)}     /           xfs    defaults,noatime  1   1\n")
    h.write("/etc/nsswitch.conf", "passwd:         files systemd\ngroup:          files systemd\nshadow:         "
            "files\nhosts:          files dns\nnetworks:       files\nprotocols:      db files\nservices:       db "
            "files\n")
    h.write("/etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n\n")
    if d.family == "debian":
        h.write("/etc/ld.so.conf.d/libc.conf", "# libc default configuration\n/usr/local/lib\n")
        h.write("/etc/ld.so.conf.d/x86_64-linux-gnu.conf", "# Multiarch support\n/usr/local/lib/x86_64-linux-gnu\n"
                "/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n")
    else:
        h.write(f"/etc/ld.so.conf.d/kernel-{d.kernel}.conf", "# Placeholder file, no vDSO hwcap entries used in "
                "this kernel.\n")
    # shell start-up files
    if d.family == "debian":
        h.write("/etc/profile", 'if [ "$(id -u)" -eq 0 ]; then\n  PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:'
                '/usr/bin:/sbin:/bin"\nelse\n  PATH="/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"\nfi\n'
                'export PATH\n\nif [ "${PS1-}" ]; then\n  if [ "${BASH-}" ] && [ "$BASH" != "/bin/sh" ]; then\n'
                '    if [ -f /etc/bash.bashrc ]; then\n      . /etc/bash.bashrc\n    fi\n  fi\nfi\n\n'
                'if [ -d /etc/profile.d ]; then\n  for i in /etc/profile.d/*.sh; do\n    if [ -r $i ]; then\n'
                '      . $i\n    fi\n  done\n  unset i\nfi\n')
        h.write("/etc/bash.bashrc", "# System-wide .bashrc file for interactive bash(1) shells.\n[ -z \"${PS1-}\" ] "
                "&& return\nshopt -s checkwinsize\n")
        h.write("/etc/profile.d/bash_completion.sh", "# shellcheck shell=sh disable=SC1091,SC2039,SC2166\n"
                "if [ \"x${BASH_VERSION-}\" != x -a \"x${PS1-}\" != x -a \"x${BASH_COMPLETION_VERSINFO-}\" = x ]; "
                "then\n    if [ -r /usr/share/bash-completion/bash_completion ]; then\n        . "
                "/usr/share/bash-completion/bash_completion\n    fi\nfi\n")
        h.write("/root/.bashrc", ROOT_BASHRC_DEBIAN, owner="root")
        h.write("/root/.profile", "# ~/.profile: executed by Bourne-compatible login shells.\n\nif [ \"$BASH\" ]; "
                "then\n  if [ -f ~/.bashrc ]; then\n    . ~/.bashrc\n  fi\nfi\n\nmesg n 2> /dev/null || true\n",
                owner="root")
    else:
        h.write("/etc/profile", "# /etc/profile\n\n# System wide environment and startup programs, for login setup\n"
                "pathmunge () {\n    case \":${PATH}:\" in\n        *:\"$1\":*)\n            ;;\n        *)\n"
                "            if [ \"$2\" = \"after\" ] ; then\n                PATH=$PATH:$1\n            else\n"
                "                PATH=$1:$PATH\n            fi\n    esac\n}\n\nfor i in /etc/profile.d/*.sh "
                "/etc/profile.d/sh.local ; do\n    if [ -r \"$i\" ]; then\n        . \"$i\" >/dev/null\n    fi\n"
                "done\n")
        h.write("/etc/bashrc", "# /etc/bashrc\n\n# System wide functions and aliases\n")
        h.write("/etc/profile.d/lang.sh", "# /etc/profile.d/lang.sh - exports environment variables, and provides "
                "fallback\n#                          for CJK languages that can't be displayed in console.\n")
        h.write("/etc/profile.d/sh.local", "#Add any required envvar overrides to this file, it is sourced from "
                "/etc/profile\n")
        h.write("/root/.bashrc", "# .bashrc\n\n# User specific aliases and functions\n\nalias rm='rm -i'\n"
                "alias cp='cp -i'\nalias mv='mv -i'\n\n# Source global definitions\nif [ -f /etc/bashrc ]; then\n"
                "\t. /etc/bashrc\nfi\n", owner="root")
        h.write("/root/.bash_profile", "# .bash_profile\n\n# Get the aliases and functions\nif [ -f ~/.bashrc ]; "
                "then\n\t. ~/.bashrc\nfi\n", owner="root")
    h.path("/root").mkdir(exist_ok=True)
    os.chmod(h.path("/root"), 0o700)
    # sudo and cloud-init
    if d.family == "debian":
        h.write("/etc/sudoers", "#\n# This file MUST be edited with the 'visudo' command as root.\n#\nDefaults\t"
                "env_reset\nDefaults\tmail_badpass\nDefaults\tsecure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                "/usr/bin:/sbin:/bin\"\nDefaults\tuse_pty\n\n# User privilege specification\nroot\tALL=(ALL:ALL) "
                "ALL\n\n# Allow members of group sudo to execute any command\n%sudo\tALL=(ALL:ALL) ALL\n\n"
                "@includedir /etc/sudoers.d\n", 0o440)
    else:
        h.write("/etc/sudoers", "## Sudoers allows particular users to run various commands as\n## the root user, "
                "without needing the root password.\nDefaults   !visiblepw\nDefaults    always_set_home\n"
                "Defaults    match_group_by_gid\nDefaults    env_reset\nDefaults    secure_path = /sbin:/bin:"
                "/usr/sbin:/usr/bin\n\nroot\tALL=(ALL) \tALL\n\n## Allows people in group wheel to run all "
                "commands\n%wheel\tALL=(ALL)\tALL\n\n#includedir /etc/sudoers.d\n", 0o440)
    h.write("/etc/sudoers.d/README" if d.family == "debian" else "/etc/sudoers.d/.keep",
            "#\n# The default /etc/sudoers file created on installation of the\n# sudo  package now includes the "
            "directive:\n#\n# \t#includedir /etc/sudoers.d\n#\n" if d.family == "debian" else "", 0o440)
    h.write("/etc/sudoers.d/90-cloud-init-users", f"# Created by cloud-init v. {_cloud_init(d)} on "
            f"{time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(h.created + 20))}\n\n# User rules for "
            f"{d.default_user}\n{d.default_user} ALL=(ALL) NOPASSWD:ALL\n", 0o440, mtime=h.created + 20)
    h.write("/etc/cloud/cloud.cfg.d/90_dpkg.cfg" if d.family == "debian" else "/etc/cloud/cloud.cfg.d/05_logging.cfg",
            "# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ Ec2, None ]\n"
            if d.family == "debian" else "## This yaml formated config file handles setting\n")
    _cloud_init_logs(h)
    # PAM
    stacks = PAM_DEBIAN if d.family == "debian" else PAM_RHEL
    for name, text in stacks.items():
        h.write(f"/etc/pam.d/{name}", text, mtime=h.created - 60 * DAY)
    for mod in ("pam_unix.so", "pam_deny.so", "pam_permit.so"):
        data = real_file(f"/usr/lib/x86_64-linux-gnu/security/{mod}")
        if data:
            h.write(f"{d.pam_dir}/{mod}", data, mtime=PKG_MTIME)
    keyutils = real_file("/usr/lib/x86_64-linux-gnu/libkeyutils.so.1.10")
    if keyutils:
        real = "libkeyutils.so.1.5" if d.key == "al2" else "libkeyutils.so.1.10"  # keyutils 1.5.8 / 1.6.3
        h.write(f"{d.libdir}/{real}", keyutils, mtime=PKG_MTIME)
        h.symlink(f"{d.libdir}/libkeyutils.so.1", real, mtime=PKG_MTIME)
    system_binaries(h)
    # ssh
    if d.family == "debian":
        h.write("/etc/ssh/sshd_config", SSHD_DEBIAN, mtime=h.created - 40 * DAY)
        if d.id == "ubuntu":
            h.write("/etc/ssh/sshd_config.d/60-cloudimg-settings.conf", "PasswordAuthentication no\n",
                    mtime=h.created + 20)
        h.write("/etc/ssh/sshd_config.d/50-cloud-init.conf", "PasswordAuthentication no\n", mtime=h.created + 20)
    elif d.key == "al2":
        h.write("/etc/ssh/sshd_config", SSHD_AL2, 0o600, mtime=h.created - 40 * DAY)
    else:
        h.write("/etc/ssh/sshd_config", SSHD_AL2023, 0o600, mtime=h.created - 40 * DAY)
        h.write("/etc/ssh/sshd_config.d/50-redhat.conf", "# This system is following system-wide crypto policy.\n"
                "Include /etc/crypto-policies/back-ends/opensshserver.config\n\nSyslogFacility AUTHPRIV\n\n"
                "ChallengeResponseAuthentication no\n\nGSSAPIAuthentication yes\nGSSAPICleanupCredentials no\n\n"
                "UsePAM yes\n\nX11Forwarding yes\n\nPrintMotd no\n", 0o600)
        h.write("/etc/ssh/sshd_config.d/50-cloud-init.conf", "PasswordAuthentication no\n", 0o600)
    for kind in ("ed25519", "ecdsa"):
        pub, _ = h.keygen(f"host-{kind}", kind, comment=f"root@{h.hostname}")
        h.write(f"/etc/ssh/ssh_host_{kind}_key.pub", pub + "\n", mtime=h.created + 25)
    # the default user's key from the cloud (EC2 key pair)
    pub, _ = h.keygen(d.default_user, rng.choice(["rsa", "ed25519"]), comment=rng.choice(
        [f"{rng.choice(['prod', 'ops', 'infra'])}-{rng.choice(['eu', 'us'])}-key", ""]) or None)
    pub = pub if pub.count(" ") == 2 else pub
    h.authorized(d.default_user, [pub], h.created + 22)
    # cloud-init's disable_root: the same key for root, answering with a message (a command= look-alike)
    root_line = ('no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command="echo \'Please login as the user '
                 f'\\"{d.default_user}\\" rather than the user \\"root\\".\';echo;sleep 10;exit 142" {pub}')
    h.path("/root/.ssh").mkdir(parents=True, exist_ok=True)
    h.write("/root/.ssh/authorized_keys", root_line + "\n", 0o600, mtime=h.created + 22)
    # cron, units, init scripts, logging, packages
    _cron_base(h)
    _units_base(h)
    _packages_base(h)


def _uuid(rng) -> str:
    x = f"{rng.getrandbits(128):032x}"
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _cloud_init(d) -> str:
    return {"debian12": "22.4.2", "ubuntu2204": "24.1.3-0ubuntu1~22.04.5", "ubuntu2404": "24.3.1-0ubuntu0~24.04.2",
            "al2": "19.3-46.amzn2.0.2", "al2023": "22.2.2"}[d.key]


def _cloud_init_logs(h: Host) -> None:
    t = h.created
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
    h.write("/var/log/cloud-init.log",
            f"{stamp},120 - util.py[DEBUG]: Cloud-init v. {_cloud_init(h.d)} running 'init-local' at "
            f"{time.strftime('%a, %d %b %Y %H:%M:%S', time.gmtime(t))} +0000. Up 4.12 seconds.\n"
            f"{stamp},402 - cc_users_groups.py[DEBUG]: Adding user {h.d.default_user}\n"
            f"{stamp},517 - ssh_util.py[DEBUG]: Writing authorized keys for user {h.d.default_user}\n"
            f"{stamp},981 - util.py[DEBUG]: Cloud-init v. {_cloud_init(h.d)} finished. Datasource DataSourceEc2Local."
            f"  Up 21.57 seconds\n", 0o640, mtime=t + 30)
    h.write("/var/log/cloud-init-output.log", f"Cloud-init v. {_cloud_init(h.d)} running 'modules:final' at "
            f"{time.strftime('%a, %d %b %Y %H:%M:%S', time.gmtime(t))} +0000. Up 18.03 seconds.\nCloud-init v. "
            f"{_cloud_init(h.d)} finished at {time.strftime('%a, %d %b %Y %H:%M:%S', time.gmtime(t + 4))} +0000. "
            "Datasource DataSourceEc2Local.  Up 21.57 seconds\n", 0o640, mtime=t + 30)


def _cron_base(h: Host) -> None:
    d = h.d
    if d.family == "debian":
        h.write("/etc/crontab", "# /etc/crontab: system-wide crontab\n# Unlike any other crontab you don't have to "
                "run the `crontab'\n# command to install the new version when you edit this file\n\nSHELL=/bin/sh\n"
                "PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin\n\n# Example of job definition:\n"
                "# .---------------- minute (0 - 59)\n# |  .------------- hour (0 - 23)\n"
                "17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly\n25 6\t* * *\troot\ttest -x "
                "/usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }\n47 6\t* * 7\troot\ttest -x "
                "/usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }\n52 6\t1 * *\troot\ttest -x "
                "/usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }\n#\n",
                mtime=h.created - 200 * DAY)
        h.write("/etc/cron.d/e2scrub_all", "30 3 * * 0 root test -e /run/systemd/system || SERVICE_MODE=1 "
                "/usr/lib/x86_64-linux-gnu/e2fsprogs/e2scrub_all_cron\n10 3 * * * root test -e /run/systemd/system "
                "|| SERVICE_MODE=1 /sbin/e2scrub_all -A -r\n")
        for name in ("apt-compat", "dpkg", "logrotate", "man-db"):
            h.write(f"/etc/cron.daily/{name}", f"#!/bin/sh\n\n# {name} daily job\nset -e\n", 0o755)
        h.write("/etc/cron.hourly/.placeholder", "# DO NOT EDIT OR REMOVE\n")
        h.path("/var/spool/cron/crontabs").mkdir(parents=True, exist_ok=True)
        os.chmod(h.path("/var/spool/cron/crontabs"), 0o1730)
        os.chown(h.path("/var/spool/cron/crontabs"), 0, 102)
    elif d.cron:
        h.write("/etc/crontab", "SHELL=/bin/bash\nPATH=/sbin:/bin:/usr/sbin:/usr/bin\nMAILTO=root\n\n"
                "# For details see man 4 crontabs\n", mtime=h.created - 200 * DAY)
        h.write("/etc/cron.d/0hourly", "# Run the hourly jobs\nSHELL=/bin/bash\nPATH=/sbin:/bin:/usr/sbin:/usr/bin\n"
                "MAILTO=root\n01 * * * * root run-parts /etc/cron.hourly\n")
        h.write("/etc/cron.hourly/0anacron", "#!/bin/sh\n# Check whether 0anacron was run today already\n", 0o755)
        h.write("/etc/cron.daily/logrotate", "#!/bin/sh\n\n/usr/sbin/logrotate -s /var/lib/logrotate/logrotate.status "
                "/etc/logrotate.conf\n", 0o700)
        h.write("/etc/anacrontab", "SHELL=/bin/sh\nPATH=/sbin:/bin:/usr/sbin:/usr/bin\nMAILTO=root\n"
                "RANDOM_DELAY=45\nSTART_HOURS_RANGE=3-22\n1\t5\tcron.daily\t\tnice run-parts /etc/cron.daily\n"
                "7\t25\tcron.weekly\t\tnice run-parts /etc/cron.weekly\n")
        h.path("/var/spool/cron").mkdir(parents=True, exist_ok=True)
    for day in h.days():
        for hour in range(24):
            t = day + hour * 3600 + (17 if d.family == "debian" else 1) * 60 + h.rng.uniform(0, 1.5)
            if h.window <= t < h.now:
                h.cron(t, "root", "cd / && run-parts --report /etc/cron.hourly" if d.family == "debian"
                       else "run-parts /etc/cron.hourly")


def _units_base(h: Host) -> None:
    d = h.d
    wants = "/etc/systemd/system/multi-user.target.wants"
    lib = "/lib/systemd/system" if d.family == "debian" else "/usr/lib/systemd/system"
    services = [d.ssh_unit, "cron" if d.family == "debian" else "crond", "rsyslog", "cloud-init", "cloud-config",
                "cloud-final", "chrony" if d.family == "debian" else "chronyd", "networking" if d.id == "debian"
                else "amazon-ssm-agent" if d.id == "amzn" else "snap.amazon-ssm-agent.amazon-ssm-agent"]
    if d.key == "al2023":
        services = [s for s in services if s not in ("crond", "rsyslog")]
    if d.key == "debian12" and not d.auth_log:
        services.remove("rsyslog")
    for s in services:
        h.symlink(f"{wants}/{s}.service", f"{lib}/{s}.service")
    if d.family == "debian":
        h.symlink("/etc/systemd/system/sshd.service", f"{lib}/ssh.service")
        for s in ("ssh", "cron", "rsyslog", "procps", "kmod"):
            h.write(f"/etc/init.d/{s}", f"#! /bin/sh\n### BEGIN INIT INFO\n# Provides:\t\t{s}\n"
                    f"# Required-Start:\t$remote_fs $syslog\n# Default-Start:\t2 3 4 5\n### END INIT INFO\n", 0o755,
                    mtime=h.created - 100 * DAY)
    else:
        h.symlink("/etc/init.d", "rc.d/init.d")
        h.write("/etc/rc.d/init.d/README" if d.key == "al2023" else "/etc/rc.d/init.d/netconsole",
                "You are looking for the traditional init scripts in /etc/rc.d/init.d,\nand they are gone?\n"
                if d.key == "al2023" else "#!/bin/bash\n#\n# netconsole    This loads the netconsole module with "
                "the configured parameters.\n", 0o644 if d.key == "al2023" else 0o755, mtime=h.created - 100 * DAY)
        if d.key == "al2":
            h.write("/etc/rc.d/init.d/network", "#! /bin/bash\n#\n# network       Bring up/down networking\n", 0o755)
    h.symlink("/etc/systemd/system/default.target", f"{lib}/multi-user.target")


# a subset of the host's own dpkg database (real stanzas, real md5sums of the files copied into the root)
DPKG_PACKAGES = ["base-files", "bash", "coreutils", "dpkg", "apt", "libc6", "libpam-modules", "libpam-runtime",
                 "libkeyutils1", "openssh-client", "sudo", "curl", "gzip", "tar", "sed", "grep", "util-linux",
                 "login", "passwd", "procps", "systemd", "libpam0g", "ca-certificates", "openssl", "git", "less",
                 "cron", "rsyslog", "cloud-init", "nginx", "nginx-common", "postgresql-15", "docker-ce"]


PKG_MTIME = 1_700_000_000.0  # the packaged files' time (the rpm database records it)
RPMS = {"pam": ("1.5.1", "8.amzn2023.0.3", ["pam_unix.so", "pam_deny.so", "pam_permit.so"]),
        "keyutils-libs": ("1.6.3", "1.amzn2023", ["libkeyutils.so.1.10", "libkeyutils.so.1"]),
        "coreutils": ("8.32", "30.amzn2023.0.3", ["/usr/bin/cat", "/usr/bin/cp", "/usr/bin/ls", "/usr/bin/id"]),
        "bash": ("5.2.15", "1.amzn2023.0.2", ["/usr/bin/bash"]), "procps-ng": ("3.3.17", "14.amzn2023.0.2",
                                                                              ["/usr/bin/ps"]),
        "curl-minimal": ("8.5.0", "1.amzn2023.0.4", ["/usr/bin/curl"]),
        "openssh-clients": ("8.7p1", "8.amzn2023.0.13", ["/usr/bin/ssh"])}
# real binaries of this machine copied into every root (Debian's package names; their md5sums come along)
SYSTEM_BINARIES = {"coreutils": ["/bin/cat", "/bin/cp", "/bin/ls", "/usr/bin/id"], "bash": ["/bin/bash"],
                   "procps": ["/bin/ps"], "curl": ["/usr/bin/curl"], "openssh-client": ["/usr/bin/ssh"]}


def system_binaries(h: Host) -> None:
    for paths in SYSTEM_BINARIES.values():
        for p in paths:
            data = real_file(p)
            if data:
                target = "/usr" + p if not p.startswith("/usr/") else p  # merged /usr
                h.write(target, data, 0o755, mtime=PKG_MTIME)


RPMS_AL2 = {"pam": ("pam", "1.1.8", "23.amzn2.0.1"), "keyutils-libs": ("keyutils-libs", "1.5.8", "3.amzn2.0.2"),
            "coreutils": ("coreutils", "8.22", "24.amzn2"), "bash": ("bash", "4.2.46", "34.amzn2"),
            "procps-ng": ("procps-ng", "3.3.10", "28.amzn2"), "curl-minimal": ("curl", "8.3.0", "1.amzn2.0.6"),
            "openssh-clients": ("openssh-clients", "7.4p1", "22.amzn2.0.9")}


def _rpmdb(h: Host) -> None:
    """The rpm database with the packages owning the files this root holds, built by rpmbuild and
    recorded with rpm --justdb: sqlite for Amazon Linux 2023 (rpm 4.16+); for Amazon Linux 2 (rpm 4.11,
    Berkeley DB) the same header blobs loaded by db_load into hash-type Packages, Name and Basenames."""
    d = h.d
    rpms = []
    for name, (version, release, files) in RPMS.items():
        paths_of = name
        if d.key == "al2":
            name, version, release = RPMS_AL2[name]
            files = ["libkeyutils.so.1.5" if f == "libkeyutils.so.1.10" else f for f in files]
        paths = [f if f.startswith("/") else f"{d.pam_dir if paths_of == 'pam' else d.libdir}/{f}" for f in files]
        present = [p for p in paths if os.path.lexists(h.path(p))]
        for p in present:  # rpm records each file's time: the one the root will show
            os.utime(h.path(p), (PKG_MTIME, PKG_MTIME), follow_symlinks=False)
        if present:
            rpms.append(h.tools.rpm(name, version, release, [(p, h.path(p)) for p in present]))
    if not rpms:
        return
    dbpath = "/var/lib/rpm" if d.key == "al2023" else "/var/lib/.rpm-sqlite"
    subprocess.run(["rpm", "--root", str(h.root), "--dbpath", dbpath, "--initdb"], check=True, capture_output=True)
    subprocess.run(["rpm", "--root", str(h.root), "--dbpath", dbpath, "-i", "--justdb", "--nodeps",
                    "--noscripts", "--ignorearch", "--ignoreos", *map(str, rpms)], check=True, capture_output=True)
    if d.key == "al2":
        _bdb_packages(h, h.path(dbpath) / "rpmdb.sqlite", h.path("/var/lib/rpm/Packages"))
        shutil.rmtree(h.path(dbpath))
    for p in h.path("/var/lib/rpm").iterdir():
        h.touch("/var/lib/rpm/" + p.name, h.created + 200)


def _bdb_packages(h: Host, sqlite_db: Path, out: Path) -> None:
    """rpm 4.11's Packages: a Berkeley DB hash keyed by the header number (native 32-bit), record 0
    holding the next free number, each value a header blob as rpm exports it (the sqlite Packages
    table holds the same blobs)."""
    import sqlite3

    con = sqlite3.connect(f"file:{sqlite_db}?mode=ro", uri=True)
    rows = con.execute("select hnum, blob from Packages order by hnum").fetchall()
    con.close()
    lines = ["VERSION=3", "format=bytevalue", "type=hash", "db_pagesize=4096", "HEADER=END"]
    nxt = max(n for n, _ in rows) + 1
    for key, value in [(0, nxt.to_bytes(4, "little"))] + [(n, bytes(b)) for n, b in rows]:
        lines += [" " + key.to_bytes(4, "little").hex(), " " + value.hex()]
    lines.append("DATA=END")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([h.tools.db_load, "-f", "/dev/stdin", str(out)], input=("\n".join(lines) + "\n").encode(),
                   check=True, capture_output=True)
    # the Name and Basenames indexes rpm -q and -qf look things up in: key -> (header number, index) pairs
    for index, tag in (("Name", 1000), ("Basenames", 1117)):
        items: dict[bytes, bytes] = {}
        for n, blob in rows:
            for i, value in enumerate(_header_strings(bytes(blob), tag)):
                items[value] = items.get(value, b"") + struct.pack("<II", n, i)
        lines = ["VERSION=3", "format=bytevalue", "type=hash", "db_pagesize=4096", "HEADER=END"]
        for key, value in items.items():
            lines += [" " + key.hex(), " " + value.hex()]
        lines.append("DATA=END")
        subprocess.run([h.tools.db_load, "-f", "/dev/stdin", str(out.parent / index)],
                       input=("\n".join(lines) + "\n").encode(), check=True, capture_output=True)


def _header_strings(blob: bytes, tag: int) -> list[bytes]:
    """The strings of one tag of an rpm header blob (STRING or STRING_ARRAY)."""
    count_entries, _ = struct.unpack(">II", blob[:8])
    data = blob[8 + 16 * count_entries:]
    for i in range(count_entries):
        t, _, offset, count = struct.unpack(">iiii", blob[8 + 16 * i:24 + 16 * i])
        if t == tag:
            return data[offset:].split(b"\0")[:count]
    return []


def _packages_base(h: Host) -> None:
    d = h.d
    if d.pkg == "rpm" and shutil.which("rpm") and shutil.which("rpmbuild") and (d.key == "al2023" or h.tools.db_load):
        _rpmdb(h)
    if d.pkg != "dpkg":
        h.write("/etc/yum.repos.d/amzn2-core.repo" if d.key == "al2" else "/etc/yum.repos.d/amazonlinux.repo",
                "[amzn2-core]\nname=Amazon Linux 2 core repository\nmirrorlist=$awsproto://$amazonlinux.$awsregion."
                "$awsdomain/$releasever/$product/$target/$basearch/mirror.list\npriority=10\ngpgcheck=1\n"
                if d.key == "al2" else "[amazonlinux]\nname=Amazon Linux 2023 repository\nmirrorlist=https://"
                "al2023-repos-$awsregion-de612dc2.s3.dualstack.$awsregion.$awsdomain/core/mirrors/$releasever/"
                "$basearch/mirror.list\nenabled=1\ngpgcheck=1\n")
        return
    status = real_file("/var/lib/dpkg/status") or b""
    stanzas = {}
    for block in status.decode(errors="replace").split("\n\n"):
        m = re.search(r"^Package: (\S+)$", block, re.M)
        if m:
            stanzas[m.group(1)] = block.strip()
    keep = [stanzas[p] for p in DPKG_PACKAGES if p in stanzas]
    h.write("/var/lib/dpkg/status", "\n\n".join(keep) + "\n\n", mtime=h.now - h.rng.randrange(1, 5) * DAY)
    for pkg, files in (("libpam-modules:amd64", ("pam_unix.so", "pam_deny.so", "pam_permit.so")),
                       ("libkeyutils1:amd64", ("libkeyutils.so.1.10",)),
                       *((p, tuple(f.rsplit("/", 1)[1] for f in fs)) for p, fs in SYSTEM_BINARIES.items())):
        md5 = real_file(f"/var/lib/dpkg/info/{pkg}.md5sums")
        if not md5:
            continue
        lines = [line for line in md5.decode().splitlines() if line.rsplit("/", 1)[-1] in files
                 and os.path.lexists(h.root / line.split(None, 1)[1])]
        h.write(f"/var/lib/dpkg/info/{pkg}.md5sums", "".join(x + "\n" for x in lines))
        listed = (real_file(f"/var/lib/dpkg/info/{pkg}.list") or b"").decode().splitlines()
        present = [p for p in listed if os.path.lexists(h.root / p.lstrip("/"))]  # what this root has of it
        h.write(f"/var/lib/dpkg/info/{pkg}.list", "".join(p + "\n" for p in present))
    if d.id == "debian":
        h.write("/etc/apt/sources.list.d/debian.sources", "Types: deb\nURIs: mirror+file:///etc/apt/mirrors/"
                "debian.list\nSuites: bookworm bookworm-updates bookworm-backports\nComponents: main\n\nTypes: deb\n"
                "URIs: mirror+file:///etc/apt/mirrors/debian-security.list\nSuites: bookworm-security\nComponents: "
                "main\n")
    elif d.version_id == "24.04":
        h.write("/etc/apt/sources.list.d/ubuntu.sources", "Types: deb\nURIs: http://eu-central-1.ec2.archive."
                "ubuntu.com/ubuntu/\nSuites: noble noble-updates noble-backports\nComponents: main restricted "
                "universe multiverse\nSigned-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n")
    else:
        h.write("/etc/apt/sources.list", "deb http://eu-central-1.ec2.archive.ubuntu.com/ubuntu/ jammy main "
                "restricted\ndeb http://eu-central-1.ec2.archive.ubuntu.com/ubuntu/ jammy-updates main restricted\n"
                "deb http://security.ubuntu.com/ubuntu jammy-security main restricted\n")


def upgrades(h: Host, admin: str) -> None:
    """Package upgrades by an admin (sudo apt/dnf) with the package manager's own logs."""
    d, rng = h.d, h.rng
    pkgs = rng.sample(["openssl:amd64 3.0.15-1~deb12u1", "libssl3:amd64 3.0.15-1~deb12u1",
                       "curl:amd64 7.88.1-10+deb12u8", "libcurl4:amd64 7.88.1-10+deb12u8",
                       "tzdata:all 2024b-0+deb12u1", "sudo:amd64 1.9.13p3-1+deb12u1",
                       "libc6:amd64 2.36-9+deb12u9", "openssh-client:amd64 1:9.2p1-2+deb12u3",
                       "python3.11:amd64 3.11.2-6+deb12u4", "linux-image-cloud-amd64:amd64 6.1.119-1"], 4)
    dpkg_log, apt_hist = [], []
    last = h.created
    for t in sorted(h.when(0.5, 8, hours=(8, 18)) for _ in range(rng.randrange(1, 3))):
        last = t + 60
        if d.pkg == "dpkg":
            h.ssh_login(admin, h.bastion_ip, t - 40, 8, commands=["sudo apt update", "sudo apt upgrade -y",
                                                                   "apt list --upgradable"])
            s = time.strftime("%Y-%m-%d  %H:%M:%S", time.gmtime(t))
            apt_hist.append(f"\nStart-Date: {s}\nCommandline: apt upgrade -y\nRequested-By: {admin} (1000)\n"
                            f"Upgrade: {', '.join(p.split()[0] + ' (' + p.split()[1] + ')' for p in pkgs)}\n"
                            f"End-Date: {time.strftime('%Y-%m-%d  %H:%M:%S', time.gmtime(t + 41))}\n")
            for i, p in enumerate(pkgs):
                name, ver = p.split()
                st = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t + 3 + i * 4))
                dpkg_log += [f"{st} startup archives unpack", f"{st} upgrade {name} {ver[:-1]}0 {ver}",
                             f"{st} status half-configured {name} {ver[:-1]}0", f"{st} status unpacked {name} {ver}",
                             f"{st} configure {name} {ver} <none>", f"{st} status installed {name} {ver}"]
        else:
            cmd = "sudo yum update -y" if d.key == "al2" else "sudo dnf upgrade -y --releasever=latest"
            h.ssh_login(admin, h.bastion_ip, t - 40, 8, commands=[cmd])
            for i, p in enumerate(["openssl-libs-3.0.8-1.amzn2023.0.14.x86_64", "curl-minimal-8.5.0-1.amzn2023.0.4."
                                   "x86_64", "glibc-2.34-117.amzn2023.0.1.x86_64"]):
                st = time.strftime("%b %d %H:%M:%S" if d.key == "al2" else "%Y-%m-%dT%H:%M:%S+0000",
                                   time.gmtime(t + 3 + i * 4))
                dpkg_log.append(f"{st} Updated: {p}" if d.key == "al2" else f"{st} INFO Upgraded: {p}")
    if d.pkg == "dpkg":
        h.write("/var/log/dpkg.log", "".join(x + "\n" for x in dpkg_log), mtime=h.now - 1)
        h.write("/var/log/apt/history.log", "".join(apt_hist), mtime=h.now - 1)
        h.touch("/var/log/dpkg.log", _last_time(dpkg_log, h))
        h.touch("/var/log/apt/history.log", _last_time(dpkg_log, h))
    else:
        p = "/var/log/yum.log" if d.key == "al2" else "/var/log/dnf.log"
        h.write(p, "".join(x + "\n" for x in dpkg_log), 0o600)
        h.touch(p, last)


def _last_time(lines: list[str], h: Host) -> float:
    if not lines:
        return h.created
    return float(time.mktime(time.strptime(lines[-1][:19], "%Y-%m-%d %H:%M:%S")) - time.timezone)


# --------------------------------------------------------------------------------------------------
# server kinds


def staff(h: Host, count: int) -> list[str]:
    """Named admins with their own keys, sudo rights, and sometimes zsh."""
    names = []
    group = "sudo" if h.d.family == "debian" else "wheel"
    for i in range(count):
        first = h.rng.choice([n for n in FIRST if n not in h.accounts])
        acct = h.account(first, 1001 + i, gecos=f"{first.title()} {h.rng.choice(LAST).title()},,,",
                         groups=(group, "adm"), hashed=h.crypt_hash())
        if h.rng.random() < 0.25 and h.d.family == "debian":
            acct.zsh = True
            acct.shell = "/usr/bin/zsh"
            h.write(f"{acct.home}/.zshrc", "HISTFILE=~/.zsh_history\nHISTSIZE=10000\nSAVEHIST=10000\n"
                    "setopt extended_history inc_append_history\n", owner=first)
        pub, _ = h.keygen(first, h.rng.choice(["ed25519", "ed25519", "rsa"]), comment=f"{first}@laptop-"
                          f"{h.rng.randrange(100, 999)}")
        added = h.created + h.rng.randrange(100, 3000)
        h.authorized(first, [pub], added)
        names.append(first)
    return names


ADMIN_COMMANDS = [
    "ls -la", "df -h", "free -m", "uptime", "top", "htop", "sudo systemctl status {svc}", "sudo journalctl -u {svc} "
    "--since today", "sudo tail -n 100 {log}", "ip a", "ss -tlnp", "sudo ss -tlnp", "w", "last -n 20",
    "cat /etc/passwd",
    "getent passwd {user}", "id {user}", "ps aux --sort=-%mem | head", "du -sh /var/log/*", "exit", "history | tail",
    "cat /etc/os-release", "sudo systemctl restart {svc}", "vim ~/.bashrc", "less {log}", "grep -i error {log}",
    "uname -a", "sudo lsof -i -P -n | grep LISTEN", "date", "timedatectl", "dig +short example.com",
    "curl -sI https://{domain}", "sudo crontab -l", "crontab -l", "ls /etc/cron.d", "ls -la /tmp",
]


def admin_day(h: Host, admins: list[str], svc: str, log: str, domain: str, extra: list[str] | None = None,
              source: str | None = None) -> None:
    """Admins' SSH sessions over the window: from the bastion or the VPN, keys, a few commands each."""
    rng = h.rng
    for day in h.days():
        for _ in range(rng.randrange(0, 3)):
            user = rng.choice(admins)
            t = day + rng.uniform(7.5, 19) * 3600
            if not h.window < t < h.now - 600:
                continue
            cmds = [c.format(svc=svc, log=log, user=rng.choice(admins), domain=domain)
                    for c in rng.sample(ADMIN_COMMANDS + (extra or []), rng.randrange(2, 7))]
            if cmds[-1] != "exit" and rng.random() < 0.5:
                cmds.append("exit")
            h.ssh_login(user, source or rng.choice([h.bastion_ip, h.vpn_ip]), t, rng.uniform(3, 40), commands=cmds)


def web(h: Host) -> dict:
    """A public web server (nginx or Apache with PHP), certbot renewals, scanners knocking, real visitors."""
    rng, d = h.rng, h.d
    apache = d.id == "ubuntu" and rng.random() < 0.6
    domain = f"{rng.choice(['shop', 'www', 'app', 'portal'])}." + rng.choice(['example.com', 'example.org',
                                                                              'example.net'])
    h.group("ssl-cert", 110)
    admins = staff(h, rng.randrange(1, 4))
    docroot = "/var/www/html"
    if d.family == "rhel":
        h.account("nginx", 995, "/var/lib/nginx", "/sbin/nologin", make_home=False)
        docroot = "/usr/share/nginx/html"
    web_user = "www-data" if d.family == "debian" else "nginx"
    if apache:
        h.web_log = "/var/log/apache2/access.log"
        h.write("/etc/apache2/sites-available/000-default.conf", f"<VirtualHost *:80>\n\tServerName {domain}\n"
                f"\tServerAdmin webmaster@localhost\n\tDocumentRoot {docroot}\n\tErrorLog ${{APACHE_LOG_DIR}}/error.log"
                "\n\tCustomLog ${APACHE_LOG_DIR}/access.log combined\n</VirtualHost>\n")
        h.symlink("/etc/systemd/system/multi-user.target.wants/apache2.service", "/lib/systemd/system/apache2.service")
        svc = "apache2"
        # a WordPress site: many PHP files, the look-alikes of a web shell
        uploads = f"{docroot}/wp-content/uploads/{time.strftime('%Y/%m', time.gmtime(h.now - 40 * DAY))}"
        for p in ("index.php", "wp-login.php", "wp-cron.php", "xmlrpc.php", "wp-settings.php", "wp-load.php"):
            h.write(f"{docroot}/{p}", f"<?php\n/**\n * WordPress {p}\n *\n * @package WordPress\n */\n"
                    f"define( 'WP_USE_THEMES', true );\nrequire __DIR__ . '/wp-blog-header.php';\n", owner=web_user,
                    mtime=h.created + 2 * DAY)
        h.write(f"{docroot}/wp-config.php", "<?php\ndefine( 'DB_NAME', 'wordpress' );\ndefine( 'DB_USER', 'wp' );\n"
                f"define( 'DB_PASSWORD', 'Wp{rng.getrandbits(48):x}' );\ndefine( 'DB_HOST', 'localhost' );\n"
                "$table_prefix = 'wp_';\nrequire_once ABSPATH . 'wp-settings.php';\n", 0o640, owner=web_user)
        for i in range(rng.randrange(3, 8)):
            h.write(f"{uploads}/IMG_{rng.randrange(1000, 9999)}-{i}.jpg", b"\xff\xd8\xff\xe0" + rng.randbytes(2000),
                    owner=web_user, mtime=h.now - rng.randrange(10, 40) * DAY)
        paths = ["/", "/wp-login.php", "/wp-json/wp/v2/posts", "/wp-content/themes/twentytwentyfour/style.css",
                 "/feed/", "/about/", "/contact/", "/wp-cron.php?doing_wp_cron"]
    else:
        h.web_log = "/var/log/nginx/access.log"
        h.write("/etc/nginx/sites-available/default" if d.family == "debian" else "/etc/nginx/conf.d/app.conf",
                f"server {{\n\tlisten 80;\n\tlisten 443 ssl;\n\tserver_name {domain};\n\tssl_certificate /etc/"
                f"letsencrypt/live/{domain}/fullchain.pem;\n\troot {docroot};\n\tlocation /api/ {{\n\t\tproxy_pass "
                "http://127.0.0.1:8080;\n\t}\n}\n")
        if d.family == "debian":
            h.symlink("/etc/nginx/sites-enabled/default", "/etc/nginx/sites-available/default")
        h.symlink("/etc/systemd/system/multi-user.target.wants/nginx.service",
                  ("/lib" if d.family == "debian" else "/usr/lib") + "/systemd/system/nginx.service")
        svc = "nginx"
        h.write(f"{docroot}/index.html", f"<!doctype html><title>{domain}</title><div id=app></div>"
                "<script src=/static/app.js></script>\n", mtime=h.now - rng.randrange(2, 30) * DAY)
        h.write("/etc/systemd/system/app.service", "[Unit]\nDescription=Shop API\nAfter=network.target\n\n[Service]\n"
                "User=app\nWorkingDirectory=/srv/app\nExecStart=/srv/app/venv/bin/gunicorn -w 4 -b 127.0.0.1:8080 "
                "app:wsgi\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n",
                mtime=h.created + 3 * DAY)
        h.symlink("/etc/systemd/system/multi-user.target.wants/app.service", "/etc/systemd/system/app.service")
        h.account("app", 999 if d.family == "debian" else 994, "/srv/app", "/usr/sbin/nologin", make_home=False)
        paths = ["/", "/static/app.js", "/static/app.css", "/api/products", "/api/cart", "/favicon.ico",
                 "/api/session", "/robots.txt"]
    _web_traffic(h, paths)
    # certbot renewals (systemd timer on Debian/Ubuntu, cron on AL)
    h.write(f"/etc/letsencrypt/renewal/{domain}.conf", f"version = 2.1.0\narchive_dir = /etc/letsencrypt/archive/"
            f"{domain}\ncert = /etc/letsencrypt/live/{domain}/cert.pem\n\n[renewalparams]\nauthenticator = nginx\n"
            "account = %032x\nserver = https://acme-v02.api.letsencrypt.org/directory\n" % rng.getrandbits(128))
    extra = ["sudo nginx -t" if svc == "nginx" else "sudo apache2ctl configtest", "sudo certbot certificates",
             f"sudo tail -f {h.web_log}", "sudo goaccess /var/log/nginx/access.log" if svc == "nginx" else
             "sudo a2enmod headers"]
    admin_day(h, admins + [d.default_user], svc, h.web_log, domain, extra)
    upgrades(h, rng.choice(admins))
    h.ssh_scans(rng.randrange(300, 900))
    return {"admins": admins, "domain": domain, "docroot": docroot, "web_user": web_user, "svc": svc}


def _web_traffic(h: Host, paths: list[str]) -> None:
    rng = h.rng
    visitors = [public_ip(rng) for _ in range(60)]
    for _ in range(rng.randrange(800, 1600)):
        t = h.when()
        ip = rng.choice(visitors)
        p = rng.choice(paths)
        h.web_hit(t, ip, "GET", p, 200 if p != "/favicon.ico" else 404, rng.randrange(300, 60000),
                  rng.choice(UA_BROWSERS), referer=rng.choice(["-", "https://www.google.com/"]))
    for _ in range(rng.randrange(150, 400)):
        t = h.when()
        h.web_hit(t, public_ip(rng), rng.choice(["GET", "GET", "POST", "HEAD"]), rng.choice(SCAN_PATHS),
                  rng.choice([404, 404, 404, 403, 400, 301]), rng.randrange(150, 600), rng.choice(UA_BOTS + ["-",
                  "python-requests/2.31.0", "curl/7.88.1", "Go-http-client/1.1"]))
    for _ in range(rng.randrange(100, 200)):
        h.web_hit(h.when(), public_ip(rng), "GET", rng.choice(paths), 200, rng.randrange(300, 60000),
                  rng.choice(UA_BOTS[:3]))


def ci(h: Host) -> dict:
    """A CI runner: Docker installed once with get.docker.com, gitlab-runner in a container that mounts
    /var/run/docker.sock (the vendor's documented setup), jobs running, images pruned by cron."""
    rng, d = h.rng, h.d
    admins = staff(h, rng.randrange(1, 3))
    h.group("docker", 989 if d.family == "debian" else 992, [d.default_user] + admins)
    installer = rng.choice(admins)
    t0 = h.when(6, 9, hours=(9, 17))
    piped = rng.random() < 0.5
    fetch = ["curl -fsSL https://get.docker.com | sudo sh"] if piped else [
        "curl -fsSL https://get.docker.com -o get-docker.sh", "less get-docker.sh", "sudo sh get-docker.sh"]
    h.ssh_login(installer, h.vpn_ip, t0, 25, commands=[
        *fetch, f"sudo usermod -aG docker {installer}", "docker ps", "sudo mkdir -p /srv/gitlab-runner/config",
        "docker run -d --name gitlab-runner --restart always -v /srv/gitlab-runner/config:/etc/gitlab-runner "
        "-v /var/run/docker.sock:/var/run/docker.sock gitlab/gitlab-runner:latest",
        "docker exec -it gitlab-runner gitlab-runner register", "docker logs gitlab-runner --tail 50", "exit"])
    if not piped:
        h.write(f"/home/{installer}/get-docker.sh", "#!/bin/sh\nset -e\n# Docker Engine for Linux installation "
                "script.\n#\n# This script is intended as a convenient way to configure docker's package\n"
                "# repositories and to "
                "install Docker Engine, This script is not recommended\n# for production environments.\n#\n"
                "# $ curl -fsSL https://get.docker.com -o install-docker.sh\n# $ sudo sh install-docker.sh\n"
                "SCRIPT_COMMIT_SHA=\"711a25f7e4bb0b1ab9c5e6c3e6c2e4e5c3b3dfd4\"\nDEFAULT_CHANNEL_VALUE=\"stable\"\n",
                owner=installer, mtime=t0 + 20)
    if piped:
        h.sudo(installer, t0 + 30, "sh")
    h.write("/etc/docker/daemon.json", json.dumps({"log-driver": "json-file", "log-opts": {"max-size": "50m"}},
                                                  indent=2) + "\n", mtime=t0 + 300)
    h.symlink("/etc/systemd/system/multi-user.target.wants/docker.service",
              ("/lib" if d.family == "debian" else "/usr/lib") + "/systemd/system/docker.service", mtime=t0 + 200)
    cid = f"{rng.getrandbits(256):064x}"
    cfg = {"ID": cid, "Created": _iso(t0 + 600), "Path": "/usr/bin/dumb-init",
           "Args": ["/entrypoint", "run", "--user=gitlab-runner", "--working-directory=/home/gitlab-runner"],
           "Config": {"Hostname": cid[:12], "Image": "gitlab/gitlab-runner:latest", "User": ""},
           "Name": "/gitlab-runner", "MountPoints": {
               "/etc/gitlab-runner": {"Source": "/srv/gitlab-runner/config", "Destination": "/etc/gitlab-runner",
                                      "RW": True, "Type": "bind"},
               "/var/run/docker.sock": {"Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock",
                                        "RW": True, "Type": "bind"}}}
    host_cfg = {"Binds": ["/srv/gitlab-runner/config:/etc/gitlab-runner", "/var/run/docker.sock:/var/run/docker.sock"],
                "RestartPolicy": {"Name": "always"}, "Privileged": False, "NetworkMode": "default"}
    h.write(f"/var/lib/docker/containers/{cid}/config.v2.json", json.dumps(cfg), 0o600, mtime=h.now - 3600)
    h.write(f"/var/lib/docker/containers/{cid}/hostconfig.json", json.dumps(host_cfg), 0o600, mtime=t0 + 600)
    runner_token = "glrt-" + "".join(rng.choice("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
                                     for _ in range(20))
    h.write("/srv/gitlab-runner/config/config.toml", f"concurrent = 4\ncheck_interval = 0\n\n[[runners]]\n  name = "
            f"\"{h.hostname}\"\n  url = \"https://gitlab.example.com\"\n  token = \"{runner_token}\"\n  executor = "
            "\"docker\"\n  [runners.docker]\n    image = \"alpine:3.20\"\n    privileged = false\n    volumes = "
            "[\"/var/run/docker.sock:/var/run/docker.sock\", \"/cache\"]\n", 0o600, mtime=t0 + 900)
    h.write("/etc/cron.d/docker-prune", "# weekly cleanup of CI images\n30 4 * * 0 root /usr/bin/docker system prune "
            "-af --filter until=168h >/dev/null 2>&1\n", mtime=t0 + 1200)
    for day in h.days():
        t = day + 4.5 * 3600 + rng.uniform(0, 2)
        if time.gmtime(t).tm_wday == 6 and h.window < t < h.now:
            h.cron(t, "root", "/usr/bin/docker system prune -af --filter until=168h >/dev/null 2>&1")
    extra = ["docker ps", "docker ps -a | head", "docker logs gitlab-runner --since 1h", "docker images",
             "docker system df", "sudo docker restart gitlab-runner", "nc -zv gitlab.example.com 443"]
    admin_day(h, admins, "docker", "/var/log/syslog" if d.family == "debian" else "/var/log/messages",
              "gitlab.example.com", extra)
    upgrades(h, rng.choice(admins))
    return {"admins": admins, "container": cid}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1e9) % 1_000_000_000:09d}Z"


def db(h: Host) -> dict:
    """A PostgreSQL server: nightly pg_dump to /var/backups, copied with scp to a private backup host
    whose host key is known, a DBA using psql, and the backup user's key limited with from=."""
    rng, d = h.rng, h.d
    admins = staff(h, rng.randrange(1, 3))
    pghome = "/var/lib/postgresql" if d.family == "debian" else "/var/lib/pgsql"
    h.account("postgres", 115 if d.family == "debian" else 26, pghome, "/bin/bash", "PostgreSQL administrator,,,",
              make_home=False)
    h.path(pghome).mkdir(parents=True, exist_ok=True)
    h.account("backup-agent", 1100, groups=(), hashed="!")
    pub, _ = h.keygen("backup-agent", "ed25519", comment="backup@" + h.backup_ip)
    added = h.when(2, 6, hours=(9, 17)) if rng.random() < 0.5 else h.created + 3000
    net = h.backup_ip.rsplit(".", 1)[0] + ".0/24"
    h.authorized("backup-agent", [f'from="{net}",no-pty,no-agent-forwarding,no-X11-forwarding '
                                  f'command="/usr/local/bin/backup-pull" {pub}'], added)
    if added > h.window:  # a key added this week, by an admin who shows up in auth.log
        who = rng.choice(admins)
        h.ssh_login(who, h.vpn_ip, added - 120, 6, commands=[
            "sudo -u backup-agent mkdir -p /home/backup-agent/.ssh",
            "sudo -u backup-agent vi /home/backup-agent/.ssh/authorized_keys",
            "sudo cat /home/backup-agent/.ssh/authorized_keys", "exit"])
    h.write("/usr/local/bin/backup-pull", "#!/bin/sh\n# serves the newest dump to the backup host\nexec cat "
            "\"$(ls -1t /var/backups/pg/*.sql.gz | head -1)\"\n", 0o755, mtime=h.created + 4000)
    script = ("#!/bin/bash\nset -euo pipefail\nstamp=$(date +%F)\nsudo -u postgres pg_dumpall | gzip > "
              "/var/backups/pg/all-$stamp.sql.gz\nscp -q -i /root/.ssh/backup_ed25519 "
              "/var/backups/pg/all-$stamp.sql.gz "
              f"backup@{h.backup_ip}:/srv/backups/{h.hostname}/\nfind /var/backups/pg -name '*.sql.gz' -mtime +7 "
              "-delete\n")
    h.write("/usr/local/sbin/pg-backup.sh", script, 0o750, mtime=h.created + 3600)
    h.write("/etc/cron.d/pg-backup", "# nightly database dump\nMAILTO=dba@example.com\n15 2 * * * root "
            "/usr/local/sbin/pg-backup.sh >> /var/log/pg-backup.log 2>&1\n", mtime=h.created + 3600)
    bpub, _ = h.keygen("root-backup", "ed25519", comment=f"root@{h.hostname}")
    h.write("/root/.ssh/backup_ed25519.pub", bpub + "\n", mtime=h.created + 3500)
    hostkey, _ = h.keygen("backup-host", "ed25519", comment="root@backup")
    h.write("/root/.ssh/known_hosts", f"{h.backup_ip} {' '.join(hostkey.split()[:2])}\n", 0o644, mtime=h.created + 3700)
    log = []
    for day in h.days():
        t = day + 2 * 3600 + 15 * 60 + rng.uniform(0, 2)
        if not h.window < t < h.now:
            continue
        h.cron(t, "root", "/usr/local/sbin/pg-backup.sh >> /var/log/pg-backup.log 2>&1")
        stamp = time.strftime("%Y-%m-%d", time.gmtime(t))
        dump = gzip.compress(f"--\n-- PostgreSQL database cluster dump\n--\n-- {stamp}\nSET default_transaction_read_"
                             f"only = off;\n".encode() + rng.randbytes(256), mtime=int(t))
        h.write(f"/var/backups/pg/all-{stamp}.sql.gz", dump, 0o640, mtime=t + rng.uniform(40, 200))
        log.append(f"{stamp} pg-backup: all-{stamp}.sql.gz copied to {h.backup_ip}")
        h.log(t + 60, "sudo", "    root : PWD=/ ; USER=postgres ; COMMAND=/usr/bin/pg_dumpall", None)
        h.log(t + 60, "sudo", "pam_unix(sudo:session): session opened for user postgres(uid="
              f"{h.accounts['postgres'].uid}) by (uid=0)", h.pid(t + 60))
        h.log(t + 110, "sudo", "pam_unix(sudo:session): session closed for user postgres", h.pid(t + 60))
    h.write("/var/log/pg-backup.log", "".join(x + "\n" for x in log), mtime=h.now - (h.now % DAY) + 2.3 * 3600
            if h.now % DAY > 2.3 * 3600 else h.now - 1000)
    dba = rng.choice(admins)
    h.write(f"{pghome}/.psql_history", "\\l\n\\dt\nselect count(*) from orders;\nselect pg_size_pretty("
            "pg_database_size('app'));\nvacuum analyze orders;\n\\q\n", 0o600, owner="postgres",
            mtime=h.when(0.5, 5))
    extra = ["sudo -u postgres psql", "sudo -u postgres psql -c 'select * from pg_stat_activity'",
             "ls -la /var/backups/pg", "sudo tail /var/log/pg-backup.log", f"nc -zv {h.backup_ip} 22",
             "df -h /var/lib/postgresql", "sudo systemctl status postgresql"]
    admin_day(h, admins + [dba], "postgresql", "/var/log/postgresql/postgresql-15-main.log", "db.internal", extra)
    upgrades(h, rng.choice(admins))
    if h.public:
        h.ssh_scans(rng.randrange(200, 500))
    return {"admins": admins}


def bastion(h: Host) -> dict:
    """A public bastion: many staff with keys (some limited with from=), agent-forwarding jumps, heavy
    scanner noise in auth log and btmp, health checks with nc -zv, timestamps in histories."""
    rng, d = h.rng, h.d
    h.hist_timestamps = True
    h.write("/etc/profile.d/history.sh", "# audit: keep time stamps in shell history\n"
            "export HISTTIMEFORMAT=\"%F %T \"\n"
            "export HISTSIZE=10000\n", mtime=h.created + 600)
    admins = staff(h, rng.randrange(4, 8))
    office = public_ip(rng)
    limited = rng.sample(admins, 2)
    for name in limited:
        pub = h.keys[name][0]
        h.authorized(name, [f'from="{office},{h.vpn_ip.rsplit(".", 2)[0]}.0.0/16" {pub}'],
                     h.created + rng.randrange(1000, 9000))
    h.write("/etc/ssh/sshd_config.d/10-bastion.conf", "AllowTcpForwarding yes\nAllowAgentForwarding yes\n"
            "X11Forwarding no\nMaxAuthTries 3\nClientAliveInterval 300\n", 0o644 if d.family == "debian" else 0o600,
            mtime=h.created + 500)
    targets = [h.private_net + "." + ".".join(str(rng.randrange(1, 255)) for _ in range(3)) if h.private_net == "10"
               else h.bastion_ip.rsplit(".", 1)[0] + f".{rng.randrange(2, 250)}" for _ in range(6)]
    extra = [f"ssh {rng.choice(targets)}", f"ssh -A {rng.choice(targets)}", f"nc -zv {rng.choice(targets)} 5432",
             f"nc -zv {rng.choice(targets)} 22", f"ping -c 3 {rng.choice(targets)}", "who", "last | head -20",
             f"scp report.csv {rng.choice(targets)}:/tmp/", "cat /etc/passwd | grep /bin/bash"]
    homes = {a: [public_ip(rng) for _ in range(rng.randrange(1, 3))] for a in admins}  # home ISPs, mobile
    for day in h.days():
        for _ in range(rng.randrange(3, 9)):
            user = rng.choice(admins)
            t = day + rng.uniform(6, 21) * 3600
            if not h.window < t < h.now - 600:
                continue
            cmds = rng.sample(extra, rng.randrange(1, 4)) + (["exit"] if rng.random() < 0.6 else [])
            h.ssh_login(user, office if user in limited or rng.random() < 0.6 else rng.choice(homes[user]), t,
                        rng.uniform(5, 120), commands=cmds)
    # one admin adds a colleague's key this week (and shows up doing it)
    newbie = rng.choice([n for n in FIRST if n not in h.accounts])
    t = h.when(1, 5, hours=(9, 17))
    sponsor = rng.choice(admins)
    h.account(newbie, 1001 + len(admins), gecos=f"{newbie.title()} {rng.choice(LAST).title()},,,",
              groups=(), hashed="!")
    pub, _ = h.keygen(newbie, "ed25519", comment=f"{newbie}@laptop-{rng.randrange(100, 999)}")
    h.ssh_login(sponsor, office, t - 300, 10, commands=[
        f"sudo useradd -m -s /bin/bash {newbie}", f"sudo mkdir -p /home/{newbie}/.ssh",
        f"sudo vi /home/{newbie}/.ssh/authorized_keys", f"sudo chown -R {newbie}: /home/{newbie}/.ssh",
        f"sudo chmod 600 /home/{newbie}/.ssh/authorized_keys", "exit"])
    ua = rng.randrange(2000, 30000)
    h.log(t - 200, "useradd", f"new group: name={newbie}, GID={1001 + len(admins)}", ua)
    h.log(t - 200, "useradd", f"new user: name={newbie}, UID={1001 + len(admins)}, GID={1001 + len(admins)}, "
          f"home=/home/{newbie}, shell=/bin/bash, from=/dev/pts/1", ua)
    h.authorized(newbie, [pub], t)
    for _ in range(rng.randrange(2, 6)):
        h.ssh_login(newbie, office, h.rng.uniform(t + 3600, h.now - 600), 20,
                    commands=rng.sample(extra, 2))
    h.ssh_scans(rng.randrange(1200, 2500))
    upgrades(h, rng.choice(admins))
    return {"admins": admins, "office": office}


KINDS = {"web": web, "ci": ci, "db": db, "bastion": bastion}

EXPORTER_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
  const char *s[] = {"node_exporter", "prometheus/node_exporter", "--web.listen-address", ":9100",
                     "/proc/stat", "/sys/class/net", "node_cpu_seconds_total", "Go build ID"};
  if (argc > 99) for (unsigned i = 0; i < sizeof s / sizeof *s; i++) puts(s[i]);
  pause();
  return 0;
}
"""


def extras(h: Host, facts: dict) -> None:
    """Benign extras that vary per host: a monitoring agent installed by hand in /usr/local/bin (no
    package owns it), systemd's and X11's folders in /tmp, a vendor's setup script piped to bash once."""
    rng = h.rng
    if rng.random() < 0.6:
        t = h.created + rng.randrange(1, 5) * DAY
        h.account("node_exporter", 996 if h.d.family == "debian" else 993, "/var/lib/node_exporter",
                  "/usr/sbin/nologin" if h.d.family == "debian" else "/sbin/nologin", make_home=False)
        h.write("/usr/local/bin/node_exporter", h.tools.compile("node_exporter", EXPORTER_C), 0o755, mtime=t)
        h.write("/etc/systemd/system/node_exporter.service", "[Unit]\nDescription=Prometheus Node Exporter\n"
                "Wants=network-online.target\nAfter=network-online.target\n\n[Service]\nUser=node_exporter\n"
                "Group=node_exporter\nType=simple\nExecStart=/usr/local/bin/node_exporter --collector.systemd\n"
                "Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n", mtime=t + 60)
        h.symlink("/etc/systemd/system/multi-user.target.wants/node_exporter.service",
                  "/etc/systemd/system/node_exporter.service", mtime=t + 70)
        facts.setdefault("extras", []).append("node_exporter")
    for name in (".X11-unix", ".ICE-unix", ".font-unix", ".XIM-unix", ".Test-unix"):
        h.path(f"/tmp/{name}").mkdir(parents=True, exist_ok=True)
        os.chmod(h.path(f"/tmp/{name}"), 0o1777)
        h.touch(f"/tmp/{name}", h.boot + 5)
    for svc in rng.sample(["chrony.service" if h.d.family == "debian" else "chronyd.service",
                           "systemd-logind.service", "systemd-resolved.service", "haveged.service"], 2):
        p = f"/tmp/systemd-private-{rng.getrandbits(128):032x}-{svc}-{rng.choice('ABCDEFGHabcdefgh')}" \
            f"{rng.getrandbits(20):05x}"
        h.path(p + "/tmp").mkdir(parents=True, exist_ok=True)
        os.chmod(h.path(p), 0o700)
        h.touch(p, h.boot + 6)
    if h.kind == "web" and h.d.pkg == "dpkg" and rng.random() < 0.5:
        admin = rng.choice(facts["admins"])
        t = h.when(2, 8, hours=(9, 18))
        h.ssh_login(admin, h.vpn_ip, t, 15, commands=[
            "curl -fsSL https://deb.nodesource.com/setup_20.x | sudo -E bash -", "sudo apt-get install -y nodejs",
            "node -v", "exit"])
        h.sudo(admin, t + 40, "bash -")
        h.write("/etc/apt/sources.list.d/nodesource.list", "deb [signed-by=/etc/apt/keyrings/nodesource.gpg] "
                "https://deb.nodesource.com/node_20.x nodistro main\n", mtime=t + 50)
        facts.setdefault("extras", []).append("nodesource")


def finish_base(h: Host) -> None:
    """Things every kind ends with: root's own history (sudo -i sessions), a default user unused
    since provisioning, an empty btmp on a young private host."""
    rng = h.rng
    root_cmds = ["systemctl status", "journalctl -p err -b", "apt autoremove" if h.d.pkg == "dpkg" else
                 "dnf clean all", "ls -la /etc/cron.d", "cat /etc/passwd", "exit"]
    h.history.setdefault("root", []).extend((h.created + 3600 * (i + 1), c) for i, c in enumerate(rng.sample(
        root_cmds, 4)))
    if h.d.family == "debian":
        h.write("/etc/rsyslog.conf", "# /etc/rsyslog.conf configuration file for rsyslog\nmodule(load=\"imuxsock\")\n"
                "module(load=\"imklog\")\n" + ("$ActionFileDefaultTemplate RSYSLOG_TraditionalFileFormat\n"
                                               if not h.d.rfc3339 else "") +
                "auth,authpriv.*\t\t\t/var/log/auth.log\n*.*;auth,authpriv.none\t\t-/var/log/syslog\n"
                "kern.*\t\t\t\t-/var/log/kern.log\n") if h.d.auth_log else None
    elif h.d.auth_log:
        h.write("/etc/rsyslog.conf", "# rsyslog configuration file\n*.info;mail.none;authpriv.none;cron.none"
                "                /var/log/messages\nauthpriv.*                                              "
                "/var/log/secure\ncron.*                                                  /var/log/cron\n")
    if h.d.key != "al2":  # Amazon Linux 2 keeps its journal in /run
        h.path("/var/log/journal").mkdir(parents=True, exist_ok=True)
    _daemon_noise(h)
    if rng.random() < 0.5:  # a home-made /etc backup with tar, kept a week
        h.write("/etc/cron.daily/etc-backup", "#!/bin/sh\n# keep a week of /etc\ntar czf /var/backups/etc-$(date +%a)"
                ".tgz -C / etc 2>/dev/null\n", 0o755, mtime=h.created + 2 * DAY)
        for day in h.days()[-7:]:
            stamp = time.strftime("%a", time.gmtime(day))
            h.write(f"/var/backups/etc-{stamp}.tgz", gzip.compress(rng.randbytes(512)), 0o600,
                    mtime=day + 6.45 * 3600 if day + 6.45 * 3600 < h.now else day - 7 * DAY + 6.45 * 3600)


def _daemon_noise(h: Host) -> None:
    """What daemons write to syslog/messages every day: timers, time sync, DHCP renewals, the SSM agent."""
    rng = h.rng
    for day in h.days():
        lines = [(6.4, "systemd", "Starting logrotate.service - Rotate log files..."),
                 (6.41, "systemd", "logrotate.service: Deactivated successfully."),
                 (6.41, "systemd", "Finished logrotate.service - Rotate log files."),
                 (rng.uniform(0, 24), "systemd", "Starting man-db.service - Daily man-db regeneration..."),
                 (rng.uniform(0, 24), "chronyd" if h.d.family == "rhel" else "chronyd",
                  "Selected source 169.254.169.123 (169.254.169.123)")]
        if h.d.family == "debian":
            lines.append((rng.uniform(6, 7), "systemd", "Starting apt-daily-upgrade.service - Daily apt upgrade and "
                          "clean activities..."))
        if h.d.key == "al2":
            for k in range(0, 24, 6):
                lines.append((k + rng.uniform(0, 1), "dhclient", f"DHCPREQUEST on eth0 to "
                              f"{h.ip.rsplit('.', 1)[0]}.1 port 67 (xid=0x{rng.getrandbits(32):08x})"))
        if h.d.id == "amzn":
            lines.append((rng.uniform(0, 24), "amazon-ssm-agent", "INFO [HealthCheck] HealthCheck reporting agent "
                          "health."))
        for hour, prog, msg in lines:
            t = day + hour * 3600
            if h.window < t < h.now:
                h.log(t, prog, msg, 1 if prog == "systemd" else h._pid_base - 100 - len(prog), stream="syslog",
                      unit="" if prog == "systemd" else f"{prog}.service")


def describe(h: Host) -> str:
    buf = io.StringIO()
    buf.write(f"{h.hostname} {h.d.key} {h.kind} public={h.public} ip={h.ip} age={h.age_days}d")
    return buf.getvalue()
