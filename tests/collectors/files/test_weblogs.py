"""Web server error logs (stream ``web_errors``) and access logs: parsed from logs written by the real nginx
and PHP-FPM, by the real apache2 2.4 with mod_php and by the real tomcat10 (10.1; each started on a loopback
port with a config in a temporary directory, no service started), and from apache 2.2, PHP and older tomcat
lines written in their documented formats."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from conftest import need

from agent.analysis import rules as engine
from collectors.base import Context, Problem, Record
from collectors.files import logs

NGINX = "/usr/sbin/nginx"  # Debian nginx-light
FPM = next((str(p) for p in sorted(Path("/usr/sbin").glob("php-fpm*"))), None)  # Debian php-fpm (php8.2-fpm)
RULES = [r for r in engine.load_rules() if r.origin in ("web_errors.yaml",)]
MTIME = dt.datetime(2026, 12, 6, 23, 0, tzinfo=dt.UTC).timestamp()


def write(root: Path, path: str, lines: list[str] | bytes, mtime: float = MTIME) -> Path:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    if path.endswith(".gz"):
        data = gzip.compress(data)
    target.write_bytes(data)
    os.utime(target, (mtime, mtime))
    return target


def zone(root: Path, name: str) -> None:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(f"/usr/share/zoneinfo/{name}", root / "etc/localtime")


def collect(root: Path, which: str = "web_errors", **options) -> tuple[list[dict], list[Problem]]:
    items = list(getattr(logs, which)(Context(root=str(root), live=False, options=options)))
    return [i.data for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, Problem)]


def findings(records: list[dict]) -> dict[str, list[dict]]:
    def rows(source: str):
        for number, record in enumerate(records if source == "web_errors" else [], 1):
            yield "source", f"triagent/artifacts/{source}.jsonl", number, record

    out: dict[str, list[dict]] = {}
    for f in engine.evaluate(RULES, rows, MTIME):
        out.setdefault(f["rule"], []).append(f)
    return out


def errors(records: list[dict], server: str | None = None) -> list[dict]:
    return [r for r in records if r["kind"] == "error" and (server is None or r["server"] == server)]


# ---- real nginx and PHP-FPM -----------------------------------------------------------------------

SITE = {
    "var/www/html/index.php": "<?php echo 'ok';\n",
    "var/www/html/warn.php": "<?php\n$a = [];\necho $a['missing'];\n",  # an ordinary site's warning
    "var/www/html/legacy/old.php": "<?php\necho $nothing;\n",  # to PHP's own error_log (the "legacy" pool)
    # the web shell: dropped in an upload folder, evaluates what it is sent
    "var/www/html/wp-content/uploads/2026/12/x.php": "<?php\neval('echo $undefined_input;');\n",
}


def serve(tmp: Path, requests: list[str]) -> Path:
    """An evidence root whose /var/log was written by nginx and PHP-FPM serving ``requests`` on a
    loopback port. PHP-FPM runs chrooted into the root, so the script paths it logs are the root's; nginx
    and PHP-FPM run with TZ=Europe/Berlin, the root's /etc/localtime."""
    need(os.path.exists(NGINX) and FPM is not None, "nginx-light and php-fpm (apt-get install nginx-light php-fpm)")
    need(os.geteuid() == 0, "root (PHP-FPM chroot)")
    root, run = tmp / "root", tmp / "run"
    for path, body in SITE.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(body)
    (root / "var/log/nginx").mkdir(parents=True)
    (root / "usr/share/zoneinfo").mkdir(parents=True)
    shutil.copyfile("/usr/share/zoneinfo/UTC", root / "usr/share/zoneinfo/UTC")  # PHP's date.timezone, chrooted
    zone(root, "Europe/Berlin")
    run.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pools = ""
    for name, extra in (("www", "catch_workers_output = yes\n"),
                        ("legacy", "php_admin_value[error_log] = /var/log/php_errors.log\n")):
        pools += (f"[{name}]\nlisten = {run}/{name}.sock\npm = static\npm.max_children = 1\nchroot = {root}\n"
                  "php_admin_value[date.timezone] = UTC\nphp_admin_flag[log_errors] = on\n"
                  f"php_admin_flag[display_errors] = off\n{extra}")
    (run / "fpm.conf").write_text(f"[global]\npid = {run}/fpm.pid\nerror_log = {root}/var/log/php8.2-fpm.log\n"
                                  f"daemonize = no\n{pools}")
    php = ("fastcgi_param SCRIPT_FILENAME /var/www/html$fastcgi_script_name; "
           "fastcgi_param REQUEST_METHOD $request_method; fastcgi_param QUERY_STRING $query_string;")
    temp = " ".join(f"{k}_temp_path {run}/{k};" for k in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi"))
    (run / "nginx.conf").write_text(f"""
user root; worker_processes 1; daemon off; pid {run}/nginx.pid;
error_log {root}/var/log/nginx/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {root}/var/log/nginx/access.log; {temp}
  server {{
    listen 127.0.0.1:{port}; server_name localhost; root {root}/var/www/html;
    location ~ ^/legacy/.*\\.php$ {{ fastcgi_pass unix:{run}/legacy.sock; {php} }}
    location ~ \\.php$ {{ fastcgi_pass unix:{run}/www.sock; {php} }}
  }}
}}""")
    env = dict(os.environ, TZ="Europe/Berlin")
    procs = [subprocess.Popen([FPM, "--allow-to-run-as-root", "-n", "-y", str(run / "fpm.conf"), "-F"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([NGINX, "-p", str(run), "-c", str(run / "nginx.conf")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 20
        while not ((run / "www.sock").exists() and (run / "legacy.sock").exists() and _listening(port)):
            assert time.monotonic() < deadline, "nginx or php-fpm did not start"
            assert all(p.poll() is None for p in procs), "nginx or php-fpm exited"
            time.sleep(0.05)
        for path in requests:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read()
            except urllib.error.HTTPError:
                pass
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGQUIT)  # graceful: both flush and close their logs
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return root


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def test_real_nginx_and_php_fpm_web_shell_and_scanner(tmp_path):
    started = dt.datetime.now(dt.UTC)
    scanned = [f"/{name}.php" for name in ("wp-login", "xmlrpc", "shell", "c99", "r57", "wso", "alfa", "up",
                                            "adminer", "phpinfo", "info", "test", "config")]
    root = serve(tmp_path, ["/index.php", "/wp-content/uploads/2026/12/x.php",
                            "/download.php?file=../../../../etc/passwd", *scanned])
    records, problems = collect(root)
    assert not [p for p in problems if p.level == "error"], problems
    shell = [r for r in errors(records, "nginx") if r.get("path") == "/wp-content/uploads/2026/12/x.php"]
    assert len(shell) == 1
    e = shell[0]
    assert (e["level"], e["client"], e["client_is_public"], e["vhost"], e["method"], e["php_level"]) == \
        ("error", "127.0.0.1", False, "localhost", "GET", "Warning")
    assert e["php_scripts"] == ["/var/www/html/wp-content/uploads/2026/12/x.php"]
    # nginx wrote Berlin's wall clock; read with the root's /etc/localtime it is now, in UTC
    moment = dt.datetime.fromisoformat(e["time_utc"].replace("Z", "+00:00"))
    assert abs((moment - started).total_seconds()) < 120, (e["time_utc"], started)
    traversal = [r for r in errors(records, "nginx") if r.get("path") == "/download.php"][0]
    assert traversal["not_found"] and traversal["decoded"].endswith("/etc/passwd")
    fpm = errors(records, "php-fpm")
    assert any(r["php_scripts"] == e["php_scripts"] and r["pool"] == "www" for r in fpm)
    scan = [r for r in records if r["kind"] == "scan_client"]
    assert len(scan) == 1 and scan[0]["client"] == "127.0.0.1" and scan[0]["missing_scripts_burst"] >= 13
    files = {r["path"] for r in records if r["kind"] == "log_file"}
    assert {"/var/log/nginx/error.log", "/var/log/php8.2-fpm.log"} <= files
    found = findings(records)
    assert {"TRI-WEBERR-001", "TRI-WEBERR-002", "TRI-WEBERR-003", "TRI-WEBERR-004"} <= set(found), found.keys()
    assert found["TRI-WEBERR-001"][0]["severity"] == "high"
    assert all("uploads" in f["summary"] for f in found["TRI-WEBERR-001"])
    # the access log the same nginx wrote is read by the web collector as before
    web, _ = collect(root, "web")
    assert any(r.get("path") == "/wp-content/uploads/2026/12/x.php" for r in web)


def test_real_nginx_and_php_fpm_ordinary_site_is_quiet(tmp_path):
    root = serve(tmp_path, ["/index.php", "/warn.php", "/legacy/old.php", "/favicon.ico", "/robots.txt",
                            "/old-page.php", "/gone.php", "/index.php?p=2"])
    records, _ = collect(root)
    php = errors(records, "php")  # PHP's own error_log, written by the legacy pool
    assert len(php) == 1 and php[0]["php_scripts"] == ["/var/www/html/legacy/old.php"]
    assert php[0]["level"] == "warn" and php[0]["php_level"] == "Warning"
    assert abs(dt.datetime.fromisoformat(php[0]["time_utc"].replace("Z", "+00:00")).timestamp() - time.time()) < 120
    warn = [r for r in errors(records, "nginx") if r.get("path") == "/warn.php"]
    assert warn and warn[0]["php_scripts"] == ["/var/www/html/warn.php"]
    assert not [r for r in records if r["kind"] == "scan_client"]  # two missing scripts are no scan
    assert findings(records) == {}


# ---- apache, PHP, tomcat: lines in their documented formats ------------------------------------------

# Apache 2.4's default ErrorLogFormat (httpd.apache.org/docs/2.4/mod/core.html#errorlogformat):
# "[%{u}t] [%-m:%l] [pid %P:tid %T] %7F: %E: [client\ %a] %M% ,\ referer\ %{Referer}i"; 2.2: "[%t] [%l] [client %a]"
APACHE = [
    "[Sun Dec 06 06:00:01.123456 2026] [php:warn] [pid 2211:tid 140301] [client 203.0.113.9:51234] PHP Warning:  "
    "system(): Unable to fork [id] in /var/www/html/images/.cache/x.php on line 4, referer: http://shop.example/",
    "[Sun Dec 06 06:00:02.000001 2026] [proxy_fcgi:error] [pid 2212:tid 140302] [client ::1:40000] AH01071: Got "
    "error 'PHP message: PHP Warning:  shell_exec() has been disabled for security reasons in /dev/shm/s.php on "
    "line 1'",
    "[Sun Dec 06 06:00:03.5 2026] [core:info] [pid 2213] [client 198.51.100.7:1] AH00128: File does not exist: "
    "/var/www/html/cgi-bin/.%2e/.%2e/etc/passwd",
    "[Sun Dec 06 06:00:04 2026] [error] [client 2001:db8::1] File does not exist: /var/www/html/favicon.ico",
    "[Sun Dec 06 06:00:05.000000 2026] [mpm_event:notice] [pid 100:tid 1] AH00489: Apache/2.4.62 (Debian) configured"
    " -- resuming normal operations",
]


def test_apache_error_log_formats_in_local_time(tmp_path):
    zone(tmp_path, "America/New_York")
    write(tmp_path, "/var/log/apache2/error.log", APACHE)
    records, _ = collect(tmp_path)
    fork, fcgi, probe, v22, notice = errors(records, "apache")
    assert (fork["time_utc"], fork["module"], fork["level"], fork["pid"], fork["client"], fork["client_port"],
            fork["referrer"], fork["php_scripts"]) == \
        ("2026-12-06T11:00:01.123456Z", "php", "warn", 2211, "203.0.113.9", 51234, "http://shop.example/",
         ["/var/www/html/images/.cache/x.php"])
    assert (fcgi["code"], fcgi["client"], fcgi["client_port"], fcgi["php_scripts"]) == \
        ("AH01071", "::1", 40000, ["/dev/shm/s.php"])
    assert probe["not_found"] and probe["time_utc"] == "2026-12-06T11:00:03.500000Z"
    assert (v22["level"], v22["client"], v22["client_port"], v22["module"]) == ("error", "2001:db8::1", None, None)
    assert notice["code"] == "AH00489" and notice["client"] is None
    found = findings(records)
    assert len(found["TRI-WEBERR-001"]) == 2  # a hidden folder, /dev/shm
    assert len(found["TRI-WEBERR-002"]) == 2  # system(): Unable to fork, shell_exec()
    assert [f["client"] for f in found["TRI-WEBERR-003"]] == ["198.51.100.7"]


def test_php_error_log_zones_and_fpm_log(tmp_path):
    zone(tmp_path, "Europe/Berlin")
    shutil.copytree("/usr/share/zoneinfo/America", tmp_path / "usr/share/zoneinfo/America")
    # php's error_log lines name date.timezone; php-fpm's own log is the host's local time
    write(tmp_path, "/var/log/php_errors.log", [
        "[06-Dec-2026 05:00:00 UTC] PHP Fatal error:  Uncaught Error: Call to undefined function "
        "create_function() in /var/www/html/wp-content/plugins/old/a.php:12",
        "Stack trace:",
        "#0 /var/www/html/index.php(3): include()",
        "#1 {main}",
        "  thrown in /var/www/html/wp-content/plugins/old/a.php on line 12",
        "[06-Dec-2026 00:00:00 America/New_York] PHP Warning:  assert(): assert($_POST['x']) failed in "
        "/var/www/html/.well-known/acme.php on line 2",
    ])
    write(tmp_path, "/var/log/php8.2-fpm.log", [
        "[06-Dec-2026 06:00:00] NOTICE: fpm is running, pid 881",
        '[06-Dec-2026 06:00:01] WARNING: [pool www] child 900 said into stderr: "NOTICE: PHP message: PHP Warning:  '
        "file_put_contents(/tmp/x): Failed to open stream in /var/www/html/index.php on line 9\"",
    ])
    records, _ = collect(tmp_path)
    fatal, assertion = errors(records, "php")
    assert fatal["time_utc"] == "2026-12-06T05:00:00Z" and fatal["level"] == "error" and fatal["trace_lines"] == 4
    assert fatal["php_scripts"] == ["/var/www/html/wp-content/plugins/old/a.php"]
    assert assertion["time_utc"] == "2026-12-06T05:00:00Z"
    running, child = errors(records, "php-fpm")
    assert running["time_utc"] == "2026-12-06T05:00:00Z" and running["level"] == "notice"
    assert child["php_scripts"] == ["/var/www/html/index.php"]  # /tmp/x is what it wrote, not where it ran
    found = findings(records)
    assert "TRI-WEBERR-001" not in found  # .well-known is public by design; /tmp/x is not the script
    assert len(found["TRI-WEBERR-002"]) == 2


# Tomcat's JUL OneLineFormatter (org.apache.juli.OneLineFormatter, tomcat.apache.org/tomcat-10.1-doc/logging.html):
# "dd-MMM-yyyy HH:mm:ss.SSS LEVEL [thread] source message", a throwable's trace on the following lines.
TOMCAT_START = [
    "06-Dec-2026 05:00:00.101 INFO [main] org.apache.catalina.startup.HostConfig.deployWAR Deploying web "
    "application archive [/var/lib/tomcat10/webapps/shop.war]",
    "06-Dec-2026 05:00:02.202 INFO [main] org.apache.catalina.startup.HostConfig.deployWAR Deployment of web "
    "application archive [/var/lib/tomcat10/webapps/shop.war] has finished in [2,101] ms",
    "06-Dec-2026 05:00:03.303 SEVERE [http-nio-8080-exec-1] org.apache.catalina.core.StandardWrapperValve.invoke "
    "Servlet.service() for servlet [jsp] threw exception",
    "\torg.apache.jasper.JasperException: Unable to compile class for JSP",
    "An error occurred at line: [7] in the jsp file: [/WEB-INF/views/cart.jsp]",
    *[f"\tat org.apache.jasper.compiler.Frame{i}.run(Frame{i}.java:{i})" for i in range(100)],
]
TOMCAT_SHELL = [
    "06-Dec-2026 05:10:00.000 INFO [http-nio-8080-exec-3] org.apache.catalina.startup.HostConfig.deployWAR "
    "Deploying web application archive [/var/lib/tomcat10/webapps/status.war]",
    "06-Dec-2026 05:10:05.000 SEVERE [http-nio-8080-exec-4] org.apache.catalina.core.StandardWrapperValve.invoke "
    "Servlet.service() for servlet [jsp] threw exception",
    "org.apache.jasper.JasperException: An exception occurred processing [/uploads/avatar/cmd.jsp] at line [3]",
    "\tat org.apache.jasper.servlet.JspServletWrapper.handleJspException(JspServletWrapper.java:610)",
]


def test_tomcat_catalina_logs(tmp_path):
    zone(tmp_path, "UTC")
    write(tmp_path, "/var/log/tomcat10/catalina.2026-12-06.log", TOMCAT_START)
    write(tmp_path, "/var/log/tomcat10/catalina.out", TOMCAT_START, mtime=MTIME - 86400)
    records, _ = collect(tmp_path, max_trace_lines=10)
    deploy, done, severe = errors(records, "tomcat")[:3]
    assert (deploy["time_utc"], deploy["thread"], deploy["deployed"]) == \
        ("2026-12-06T05:00:00.101000Z", "main", "/var/lib/tomcat10/webapps/shop.war")
    assert severe["level"] == "error" and severe["trace_lines"] == 10 and severe["jsp_compile"]
    assert severe["jsp"] == "/WEB-INF/views/cart.jsp" and "Frame7" in severe["message"]
    assert "Frame8" not in severe["message"]  # bounded
    first = [r for r in records if r["kind"] == "log_file"][0]
    assert first["path"] == "/var/log/tomcat10/catalina.2026-12-06.log"  # newest first
    assert first["unparsed_lines"] == 0 and done["line"] == 2
    assert findings(records) == {}  # start-up deployment and a broken JSP of the application
    write(tmp_path, "/var/log/tomcat10/catalina.2026-12-06.log", TOMCAT_START + TOMCAT_SHELL)
    found = findings(collect(tmp_path)[0])
    assert [f["deployed"] for f in found["TRI-WEBERR-006"]] == ["/var/lib/tomcat10/webapps/status.war"]
    assert len(found["TRI-WEBERR-005"]) == 1 and "cmd.jsp" in found["TRI-WEBERR-005"][0]["summary"]


def test_newest_files_first_tail_within_budget(tmp_path):
    zone(tmp_path, "UTC")
    entry = "2026/12/06 05:{:02d}:{:02d} [error] 10#10: *{} open() \"/var/www/html/p{}.php\" failed (2: No such " \
            "file or directory), client: 192.0.2.1, server: _, request: \"GET /p{}.php HTTP/1.1\", host: \"x\""
    big = [entry.format(i // 60 % 60, i % 60, i, i, i) for i in range(4000)]
    write(tmp_path, "/var/log/nginx/error.log", big)
    write(tmp_path, "/var/log/nginx/error.log.1", big[:10], mtime=MTIME - 86400)
    write(tmp_path, "/var/log/nginx/error.log.2.gz", big[:10], mtime=MTIME - 2 * 86400)
    size = (tmp_path / "var/log/nginx/error.log").stat().st_size
    records, problems = collect(tmp_path, max_file_bytes=size // 2, max_bytes=size // 2 + 500)
    files = [r for r in records if r["kind"] == "log_file"]
    assert [f["path"] for f in files] == ["/var/log/nginx/error.log", "/var/log/nginx/error.log.1"]
    assert files[0]["truncated"] and files[0]["unparsed_lines"] == 0
    kept = errors(records)
    assert all(r["message"].startswith("open() ") for r in kept)  # never a cut line
    newest = [r for r in kept if r["log"] == "/var/log/nginx/error.log"]
    assert newest[-1]["path"] == "/p3999.php" and 1000 < len(newest) < 2100  # the newest end of the big file
    assert files[1]["truncated"] and [p.path for p in problems if "budget" in p.message] == \
        ["/var/log/nginx/error.log.2.gz"]
    # one client refused thousands of names: one summary, not a record each
    scan = [r for r in records if r["kind"] == "scan_client"]
    assert len(scan) == 1 and scan[0]["missing_scripts_burst"] >= 10 and len(scan[0]["sample"]) == 10


def test_tomcat_access_logs_are_web_logs(tmp_path):
    # AccessLogValve "common" (%h %l %u %t "%r" %s %b) and "combined" patterns, tomcat's default file names
    write(tmp_path, "/var/log/tomcat10/localhost_access_log.2026-12-06.txt", [
        '127.0.0.1 - - [06/Dec/2026:05:00:00 +0000] "GET /manager/html HTTP/1.1" 401 2473'])
    write(tmp_path, "/opt/tomcat9/logs/localhost_access_log.2026-12-05.txt", [
        '203.0.113.5 - admin [05/Dec/2026:22:00:00 +0000] "POST /manager/html/upload HTTP/1.1" 200 1234 "-" '
        '"curl/8.0"'])
    records, _ = collect(tmp_path, "web")  # the code defaults (no web_logs option)
    requests = [r for r in records if r["kind"] == "request"]
    assert sorted((r["path"], r["status"], r["remote_user"]) for r in requests) == \
        [("/manager/html", 401, None), ("/manager/html/upload", 200, "admin")]


def test_hostile_error_lines(tmp_path):
    zone(tmp_path, "UTC")
    write(tmp_path, "/var/log/nginx/error.log", [
        "2026/02/30 05:00:00 [error] 1#1: impossible date, client: 1.2.3.4, server: x",
        '2026/12/06 05:00:00 [error] 1#1: *1 FastCGI sent in stderr: "PHP message: x, client: 6.6.6.6, server: y" '
        'while reading, client: 192.0.2.9, server: x, request: "GET /a HTTP/1.1", host: "h"',
        "2026/12/06 05:00:01 [error] 1#1: " + "A" * 100_000,
    ])
    write(tmp_path, "/var/log/php_errors.log", [
        "[06-Dec-2026 05:00:00 ../../etc/shadow] PHP Notice:  x in /a.php on line 1",  # not a zone: no entry
        "[06-Dec-2026 05:00:00 Nowhere/Atlantis] PHP Notice:  x in /a.php on line 1"])
    records, _ = collect(tmp_path)
    bad, quoted, long = errors(records, "nginx")
    assert bad["time_utc"] is None
    assert quoted["client"] == "192.0.2.9"  # the tail nginx wrote, not the one quoted in the PHP message
    assert len(long["message"]) <= 1024
    assert errors(records, "php")[0]["time_utc"] == "2026-12-06T05:00:00Z"  # an unusable zone: the host's


def test_rotations_of_one_mtime_in_rotation_order_and_tomcat_localhost_log(tmp_path):
    zone(tmp_path, "UTC")
    one = ["2026/12/06 05:00:00 [error] 1#1: *1 x, client: 192.0.2.1, server: _"]
    for name in ("error.log", "error.log.1", "error.log.2.gz", "error.log.10"):
        write(tmp_path, f"/var/log/nginx/{name}", one)
    # tomcat's "localhost" logger gets the servlet exceptions (a JSP that fails to compile)
    write(tmp_path, "/var/log/tomcat10/localhost.2026-12-06.log", TOMCAT_SHELL[1:], mtime=MTIME - 3600)
    records, _ = collect(tmp_path)
    assert [r["path"] for r in records if r["kind"] == "log_file"] == \
        [f"/var/log/nginx/{n}" for n in ("error.log", "error.log.1", "error.log.2.gz", "error.log.10")] + \
        ["/var/log/tomcat10/localhost.2026-12-06.log"]
    jsp = errors(records, "tomcat")[0]
    assert jsp["jsp"] == "/uploads/avatar/cmd.jsp" and jsp["trace_lines"] == 2


def test_a_fifo_and_a_link_out_of_the_root_are_never_read(tmp_path):
    """A FIFO where the error log should be would hang a plain open(); a link to a file outside the evidence
    root must not be followed (the confined reader refuses both: a Problem, never a record from outside)."""
    zone(tmp_path, "UTC")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.log"
    outside.write_text('2026/12/06 05:00:00 [error] 1#1: *1 open() "/var/www/html/OUTSIDE.php" failed, '
                       'client: 192.0.2.9, server: _, request: "GET /OUTSIDE.php HTTP/1.1"\n')
    (tmp_path / "var/log/nginx").mkdir(parents=True)
    os.mkfifo(tmp_path / "var/log/nginx/error.log")
    os.symlink(outside, tmp_path / "var/log/nginx/error.log.1")
    signal.alarm(60)  # a read that blocks on the FIFO fails the test instead of hanging the suite
    try:
        records, problems = collect(tmp_path)
    finally:
        signal.alarm(0)
        outside.unlink()
    assert not [r for r in records if "OUTSIDE" in str(r)], records
    assert not errors(records)


# ---- real apache 2.4 with mod_php ---------------------------------------------------------------------

APACHE2 = "/usr/sbin/apache2"  # Debian apache2 (+ libapache2-mod-php for PHP errors)
APACHE_MODULES = "/usr/lib/apache2/modules"
APACHE_SITE = {
    "var/www/html/index.php": "<?php echo 'ok';\n",
    "var/www/html/warn.php": "<?php\n$a = [];\necho $a['missing'];\n",
    # the web shell in a hidden folder under the uploads: runs what it is sent
    "var/www/html/uploads/.cache/x.php": "<?php\n$c = $_GET['cmd'] ?? 'id';\n@system($c);\necho $undefined;\n",
}


def apache(tmp: Path, requests: list[str]) -> tuple[Path, dt.datetime]:
    """An evidence root whose /var/log/apache2 was written by Debian's apache2 (prefork + mod_php, a config
    of our own: its own ServerRoot, pid and log files, 127.0.0.1 and a free port, no service started) serving
    ``requests``; apache runs with TZ=Europe/Berlin, the root's /etc/localtime."""
    need(os.path.exists(APACHE2) and os.path.exists(f"{APACHE_MODULES}/mod_mpm_prefork.so"),
         "apache2 (apt-get install apache2 libapache2-mod-php)")
    need(os.geteuid() == 0, "root (apache drops to www-data for its workers)")
    php = next(iter(sorted(Path(APACHE_MODULES).glob("libphp*.so"))), None)
    root, run = tmp / "root", tmp / "run"
    for path, body in APACHE_SITE.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(body)
    (root / "var/log/apache2").mkdir(parents=True)
    zone(root, "Europe/Berlin")
    run.mkdir()
    # the workers run as www-data, which cannot pass the test's 0700 folders, and the scripts' paths should be
    # a web root's, not /tmp/...: apache runs in a mount namespace of its own where the root's /var/www is
    # bind-mounted on /var/www (the host's is untouched)
    need(os.path.isdir("/var/www") and shutil.which("unshare") is not None, "/var/www (apache2) and unshare")
    for folder in [root / "var/www", *(root / "var/www").rglob("*")]:
        os.chmod(folder, 0o755 if folder.is_dir() else 0o644)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    load = "\n".join(f"LoadModule {name}_module {APACHE_MODULES}/mod_{name}.so"
                     for name in ("mpm_prefork", "authz_core", "mime", "dir"))
    if php:
        load += f"\nLoadModule php_module {php}\n<FilesMatch \"\\.php$\">\n  SetHandler application/x-httpd-php\n" \
                "</FilesMatch>\nphp_admin_flag log_errors on\nphp_admin_flag display_errors off\n" \
                "php_admin_value date.timezone UTC"
    (run / "httpd.conf").write_text(f"""
ServerRoot {run}
ServerName localhost
PidFile {run}/httpd.pid
Mutex file:{run} default
Listen 127.0.0.1:{port}
User www-data
Group www-data
StartServers 1
MinSpareServers 1
MaxSpareServers 2
TypesConfig /etc/mime.types
{load}
DirectoryIndex index.php
DocumentRoot /var/www/html
<Directory />
  Require all granted
</Directory>
LogLevel warn core:info
ErrorLog {root}/var/log/apache2/error.log
LogFormat "%h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" combined
CustomLog {root}/var/log/apache2/access.log combined
""")
    env = dict(os.environ, TZ="Europe/Berlin")
    started = dt.datetime.now(dt.UTC)
    # a session of its own: prefork signals its whole process group on shutdown (it would stop pytest too)
    script = f'mount --bind "$1/var/www" /var/www && exec {APACHE2} -d "$2" -f "$2/httpd.conf" -DFOREGROUND'
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(root),
                             str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not _listening(port):
            assert time.monotonic() < deadline, "apache did not start"
            assert proc.poll() is None, f"apache exited: {proc.stderr.read()[-2000:]!r}"
            time.sleep(0.05)
        for path in requests:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"User-Agent": "curl/8.0"})
            try:
                urllib.request.urlopen(req, timeout=10).read()
            except urllib.error.HTTPError:
                pass
    finally:
        proc.send_signal(signal.SIGWINCH)  # graceful-stop: workers finish and the logs are flushed and closed
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return root, started


def _near(stamp: str, moment: dt.datetime) -> bool:
    return abs((dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) - moment).total_seconds()) < 120


def test_real_apache_access_and_error_logs(tmp_path):
    """Debian's apache2 2.4 wrote both logs: a web shell in a hidden upload folder run with a command, a
    missing page (404), a traversal probe, an ordinary page and a PHP warning. The access records (combined
    format, Berlin offset) and the error records (2.4's ErrorLogFormat, local time) are read back in UTC;
    the web shell's PHP errors call TRI-WEBERR-001, the probe TRI-WEBERR-003, and the access log's command
    request the web rules (specs/rules/web.yaml)."""
    root, started = apache(tmp_path, ["/index.php", "/warn.php", "/missing-page.html",
                                      "/uploads/.cache/x.php?cmd=id", "/cgi-bin/.%2e/.%2e/etc/passwd"])
    web, problems = collect(root, "web")
    assert not [p for p in problems if p.level == "error"], problems
    requests = {r["path"]: r for r in web if r["kind"] == "request"}
    assert {"/index.php", "/warn.php", "/missing-page.html", "/uploads/.cache/x.php"} <= set(requests), requests
    assert requests["/missing-page.html"]["status"] == 404 and requests["/index.php"]["status"] == 200
    shell = requests["/uploads/.cache/x.php"]
    assert shell["client_ip"] == "127.0.0.1" and shell["method"] == "GET" and shell["user_agent"] == "curl/8.0"
    assert _near(shell["time_utc"], started), (shell["time_utc"], started)
    records, problems = collect(root)
    assert not [p for p in problems if p.level == "error"], problems
    apache_errors = errors(records, "apache")
    assert apache_errors, records
    assert all(_near(e["time_utc"], started) for e in apache_errors)
    shell_errors = [e for e in apache_errors if e.get("php_scripts") == ["/var/www/html/uploads/.cache/x.php"]]
    assert shell_errors and shell_errors[0]["module"] == "php" and shell_errors[0]["client"] == "127.0.0.1"
    warn = [e for e in apache_errors if e.get("php_scripts") == ["/var/www/html/warn.php"]]
    assert warn and warn[0]["level"] == "warn" and warn[0]["php_level"] == "Warning"
    assert any(e.get("not_found") for e in apache_errors)  # AH00128 File does not exist (core:info)
    found = findings(records)
    assert "TRI-WEBERR-001" in found and all("x.php" in f["summary"] for f in found["TRI-WEBERR-001"])
    assert "TRI-WEBERR-003" in found
    assert [f["path"] for f in access_findings(web).get("TRI-WEB-001", [])] == ["/uploads/.cache/x.php"]


def access_findings(records: list[dict]) -> dict[str, list[dict]]:
    rules = [r for r in engine.load_rules() if r.origin == "web.yaml"]

    def rows(source: str):
        for number, record in enumerate(records if source == "web_access" else [], 1):
            yield "source", f"triagent/artifacts/{source}.jsonl", number, record

    out: dict[str, list[dict]] = {}
    for f in engine.evaluate(rules, rows, MTIME):
        out.setdefault(f["rule"], []).append(f)
    return out


def test_real_apache_ordinary_site_is_quiet(tmp_path):
    """The same apache: pages, a PHP warning of the site's own script, a missing favicon and page: records,
    no finding from either log's rules."""
    root, _ = apache(tmp_path, ["/", "/index.php?page=2", "/warn.php", "/favicon.ico", "/old-page.html"])
    records, _ = collect(root)
    assert [e["php_scripts"] for e in errors(records, "apache") if e.get("php_scripts")] == [["/var/www/html/warn.php"]]
    assert sum(1 for e in errors(records, "apache") if e.get("not_found")) == 2
    assert findings(records) == {}
    web, _ = collect(root, "web")
    assert sorted(r["status"] for r in web if r["kind"] == "request") == [200, 200, 200, 404, 404]
    assert access_findings(web) == {}


# ---- real tomcat 10.1 ---------------------------------------------------------------------------------

TOMCAT_HOME = "/usr/share/tomcat10"  # Debian tomcat10 (10.1; a JRE: openjdk-17-jre-headless)
TOMCAT_CONF = "/etc/tomcat10"


def tomcat(tmp: Path, requests: list[str], war_after_start: bool = False) -> tuple[Path, dt.datetime]:
    """An evidence root whose /var/log/tomcat10 was written by Debian's tomcat10 run by hand: its own
    CATALINA_BASE (the package's conf, HTTP on 127.0.0.1 and a free port, no shutdown port, the host's
    auto-deploy check every second), logs in the root's /var/log/tomcat10 as Debian links them, TZ Berlin.
    Start-up to the first answered JSP takes about 3 s here."""
    java = shutil.which("java")
    need(os.path.exists(f"{TOMCAT_HOME}/bin/bootstrap.jar") and java is not None,
         "tomcat10 and a JRE (apt-get install tomcat10 openjdk-17-jre-headless)")
    root, base = tmp / "root", tmp / "root/var/lib/tomcat10"
    logs_dir = root / "var/log/tomcat10"
    logs_dir.mkdir(parents=True)
    zone(root, "Europe/Berlin")
    shutil.copytree(TOMCAT_CONF, base / "conf", symlinks=False)
    (base / "logs").symlink_to(logs_dir)  # /var/lib/tomcat10/logs -> /var/log/tomcat10, as the package has it
    for folder in ("work", "temp", "webapps/ROOT/uploads/avatar"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    (base / "webapps/ROOT/index.jsp").write_text('<% out.println("ok"); %>\n')
    # the JSP web shell: runs the command it is sent (then fails, so that tomcat logs the JSP by name)
    (base / "webapps/ROOT/uploads/avatar/cmd.jsp").write_text(
        '<% String c = request.getParameter("cmd"); if (c != null) { Runtime.getRuntime().exec(new String[]{c}); }'
        ' String s = null; s.length(); %>\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = (base / "conf/server.xml").read_text()
    server = server.replace('<Server port="8005"', '<Server port="-1"')
    server = server.replace('<Connector port="8080"', f'<Connector port="{port}" address="127.0.0.1"')
    server = server.replace('<Engine name="Catalina" defaultHost="localhost">',
                            '<Engine name="Catalina" defaultHost="localhost" backgroundProcessorDelay="1">')
    assert f'port="{port}"' in server and 'backgroundProcessorDelay="1"' in server
    (base / "conf/server.xml").write_text(server)
    env = dict(os.environ, TZ="Europe/Berlin")
    started = dt.datetime.now(dt.UTC)
    proc = subprocess.Popen([java, f"-Dcatalina.base={base}", f"-Dcatalina.home={TOMCAT_HOME}",
                             f"-Djava.io.tmpdir={base}/temp", "-Xshare:auto", "-XX:TieredStopAtLevel=1",
                             f"-Djava.util.logging.config.file={base}/conf/logging.properties",
                             "-Djava.util.logging.manager=org.apache.juli.ClassLoaderLogManager",
                             "-cp", f"{TOMCAT_HOME}/bin/bootstrap.jar:{TOMCAT_HOME}/bin/tomcat-juli.jar",
                             "org.apache.catalina.startup.Bootstrap", "start"], env=env, cwd=base,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 40
        while True:
            assert time.monotonic() < deadline, "tomcat did not answer"
            assert proc.poll() is None, "tomcat exited"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/index.jsp", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        for path in requests:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20).read()
            except urllib.error.HTTPError:
                pass
        if war_after_start:  # dropped into webapps while running: the host's background check deploys it
            with zipfile.ZipFile(base / "webapps/status.war.tmp", "w") as war:
                war.writestr("index.jsp", '<% out.println("status"); %>\n')
            os.rename(base / "webapps/status.war.tmp", base / "webapps/status.war")
            while "status.war] has finished" not in "".join(p.read_text() for p in logs_dir.glob("catalina.*")):
                assert time.monotonic() < deadline + 20, "tomcat did not deploy the dropped WAR"
                time.sleep(0.2)
    finally:
        proc.terminate()  # tomcat's shutdown hook stops the connector and closes (flushes) its logs
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return root, started


def test_real_tomcat_logs(tmp_path):
    """Debian's tomcat10 wrote catalina, localhost and access logs: start-up (its ROOT application deployed
    by the main thread: quiet), a page, a 404, a JSP web shell in an upload folder run with a command (it
    fails, so tomcat names it: TRI-WEBERR-005), and a WAR dropped into webapps while it runs (deployed by a
    background thread: TRI-WEBERR-006). Nothing else raises a finding; times come back in UTC."""
    root, started = tomcat(tmp_path, ["/missing.jsp", "/uploads/avatar/cmd.jsp?cmd=id"], war_after_start=True)
    records, problems = collect(root)
    assert not [p for p in problems if p.level == "error"], problems
    tc = errors(records, "tomcat")
    assert tc and all(_near(r["time_utc"], started) for r in tc)
    assert any(r.get("deployed", "").endswith("/webapps/ROOT") or r["thread"] == "main" for r in tc)
    shell = [r for r in tc if r.get("jsp_compile") and "cmd.jsp" in r["message"]]
    assert shell and shell[0]["level"] == "error", [r["message"][:200] for r in tc if r["level"] == "error"]
    found = findings(records)
    assert set(found) == {"TRI-WEBERR-005", "TRI-WEBERR-006"}, {k: [f["summary"] for f in v] for k, v in found.items()}
    assert [f["deployed"] for f in found["TRI-WEBERR-006"]] == [str(root / "var/lib/tomcat10/webapps/status.war")]
    files = {r["path"] for r in records if r["kind"] == "log_file"}
    assert any(p.startswith("/var/log/tomcat10/catalina.") for p in files)
    assert any(p.startswith("/var/log/tomcat10/localhost.") for p in files)
    web, _ = collect(root, "web")
    requests = {r["path"]: r for r in web if r["kind"] == "request"}
    assert requests["/missing.jsp"]["status"] == 404 and requests["/uploads/avatar/cmd.jsp"]["status"] == 500
    assert _near(requests["/index.jsp"]["time_utc"], started)
