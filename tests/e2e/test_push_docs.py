"""The push documents in specs/push/, run exactly as each channel's agent runs them: the script written
to a file (or fed to `sh -s` for ssh), `env -i` with the agent's variables, its working directory, its
timeout (the whole process group killed) and its output cut, against a loopback HTTP server that serves
the binary and an HTTPS one that receives the bundle (an `https-put` ticket carrying the tests' CA).

Stand-in "binaries" (shell scripts with a known hash) test the wrapper's own logic without the build:
the hash refusal, exit-code mapping, the deadline, the noexec fallback. The real dist/triagent runs in
one test per channel (skipped if it is missing, a failure when CI=true).

`python tests/e2e/test_push_docs.py --write` regenerates specs/push/aws-ssm-triagent.json from
specs/push/collect.sh (the test below fails when they drift apart)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
PUSH = REPO / "specs" / "push"
BINARY = REPO / "dist" / "triagent"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BEGIN, END = "# --- BEGIN triagent push body ---", "# --- END triagent push body ---"
SSM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FORBIDDEN_EXITS = {194, 168, 169}
SSM_LIMIT, AZURE_LIMIT = 2500, 4096


def need(condition: bool, reason: str) -> None:
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


# ---------------------------------------------------------------------------------------------- documents

def body_of(text: str) -> str:
    return text[text.index(BEGIN):text.index(END) + len(END)]


SSM_PARAMETERS: dict[str, dict] = {
    "binaryUrl": {"type": "String", "description": "(Required) HTTPS URL of the triagent binary (a presigned GET is "
                  "fine: it is only ever passed to curl through stdin).", "allowedPattern": "^https?://[^'\\s]+$"},
    "binarySha256": {"type": "String", "description": "(Required) SHA-256 of the binary as printed at build time. "
                     "The binary is not run when the fetched file differs (exit 3, status refused).",
                     "allowedPattern": "^[0-9a-fA-F]{64}$"},
    "uploadTicket": {"type": "String", "description": "(Required) Where the bundle goes: the JSON text of a ticket "
                     "from `triagent ticket`, b64:<base64 of it>, fetch+<URL that serves it>, or a presigned PUT URL. "
                     "Parameters are stored with the command: prefer fetch+ with a short-lived URL.",
                     "allowedPattern": "^[^']+$"},
    "caseId": {"type": "String", "default": "", "description": "(Optional) Case identifier for the custody record.",
               "allowedPattern": "^[A-Za-z0-9._:/@+-]{0,128}$"},
    "profile": {"type": "String", "default": "triage", "description": "(Optional) minimal | triage | full.",
                "allowedPattern": "^[A-Za-z0-9_-]{1,64}$"},
    "memory": {"type": "String", "default": "false", "description": "(Optional) Also take a memory image.",
               "allowedValues": ["false", "true"]},
    "encryptTo": {"type": "String", "default": "", "description": "(Optional) age recipient (age1...) or SSH "
                  "public key: the bundle is encrypted to it before it leaves the host.",
                  "allowedPattern": "^[^'\\n]{0,4000}$"},
    "maxDuration": {"type": "String", "default": "1800", "description": "(Optional) Seconds of collection before a "
                    "partial bundle is sealed; lowered to fit executionTimeout.", "allowedPattern": "^[0-9]{1,6}$"},
    "tmpDir": {"type": "String", "default": "", "description": "(Optional) Directory to use when /dev/shm is missing "
               "or noexec (ideally a tmpfs); the summary says which filesystem was used (push.fs, push.on_disk).",
               "allowedPattern": "^(/[A-Za-z0-9._/-]{0,200})?$"},
    "executionTimeout": {"type": "String", "default": "3600", "description": "(Optional) The command's timeout in "
                         "seconds (max 172800). The collector is stopped 40 s before it so the script can clean up.",
                         "allowedPattern": "^(([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})"
                         "|(172800))$"},
}
SSM_HEADER = [
    "#!/bin/sh",
    "# triagent push (AWS SSM aws:runShellScript). Body identical to specs/push/collect.sh; single quotes are",
    "# safe because every parameter's allowedPattern excludes them.",
    "TRIAGENT_BINARY_URL='{{ binaryUrl }}'",
    "TRIAGENT_BINARY_SHA256='{{ binarySha256 }}'",
    "TRIAGENT_UPLOAD_TICKET='{{ uploadTicket }}'",
    "TRIAGENT_CASE_ID='{{ caseId }}'",
    "TRIAGENT_PROFILE='{{ profile }}'",
    "TRIAGENT_MEMORY='{{ memory }}'",
    "TRIAGENT_ENCRYPT_TO='{{ encryptTo }}'",
    "TRIAGENT_MAX_DURATION='{{ maxDuration }}'",
    "TRIAGENT_TIME_LIMIT='{{ executionTimeout }}'",
    "TRIAGENT_TMP='{{ tmpDir }}'",
    "",
]


def ssm_document() -> str:
    body = body_of((PUSH / "collect.sh").read_text())
    doc = {
        "schemaVersion": "2.2",
        "description": "triagent: fetch the collector into memory-backed space (/dev/shm, else a reported "
                       "fallback), refuse it unless its SHA-256 matches, collect and stream the bundle to the "
                       "upload ticket within executionTimeout, print one JSON summary line, remove what was "
                       "fetched. Exit 0 complete, 1 partial (or stopped at the deadline), 2 usage, 3 fatal or "
                       "refused; never 194/168/169.",
        "parameters": SSM_PARAMETERS,
        "mainSteps": [{
            "action": "aws:runShellScript", "name": "triagentCollect",
            "precondition": {"StringEquals": ["platformType", "Linux"]},
            "inputs": {"timeoutSeconds": "{{ executionTimeout }}", "runCommand": SSM_HEADER + body.split("\n")},
        }],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def test_documents_share_one_body():
    canonical = body_of((PUSH / "collect.sh").read_text())
    for name in ("azure-run-command.sh", "gcp-ssh.sh"):
        assert body_of((PUSH / name).read_text()) == canonical, f"{name}: body differs from collect.sh"
    ssm = json.loads((PUSH / "aws-ssm-triagent.json").read_text())
    assert body_of("\n".join(ssm["mainSteps"][0]["inputs"]["runCommand"])) == canonical
    assert (PUSH / "aws-ssm-triagent.json").read_text() == ssm_document(), \
        "aws-ssm-triagent.json is stale: python tests/e2e/test_push_docs.py --write"


def test_ssm_document_shape():
    doc = json.loads((PUSH / "aws-ssm-triagent.json").read_text())
    assert doc["schemaVersion"] == "2.2" and len(doc["mainSteps"]) == 1
    step = doc["mainSteps"][0]
    assert step["action"] == "aws:runShellScript"
    assert step["inputs"]["timeoutSeconds"] == "{{ executionTimeout }}"
    assert set(doc["parameters"]) == {"binaryUrl", "binarySha256", "uploadTicket", "caseId", "profile", "memory",
                                      "encryptTo", "maxDuration", "tmpDir", "executionTimeout"}
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(step)))
    assert used == set(doc["parameters"])
    for name, spec in doc["parameters"].items():  # values are pasted inside '...': no quote may get through
        if "allowedPattern" in spec:
            assert not re.search(spec["allowedPattern"], "'") or name == "executionTimeout" and \
                not re.fullmatch(spec["allowedPattern"], "1'"), name
    for script in ("collect.sh", "azure-run-command.sh", "gcp-ssh.sh"):
        for shell in ("dash", "bash", "busybox"):
            if shutil.which(shell):
                argv = [shell, "sh", "-n"] if shell == "busybox" else [shell, "-n"]
                proc = subprocess.run(argv + [str(PUSH / script)], capture_output=True)
                assert proc.returncode == 0, (shell, script, proc.stderr)


def test_scripts_have_no_bashisms():
    body = body_of((PUSH / "collect.sh").read_text())
    for bashism in ("[[", "function ", "local ", "$'", "<<<", "pipefail", "${!", "source ", "==", "&>"):
        assert bashism not in body, bashism


# ---------------------------------------------------------------------------------------------- loopback server

class Server(http.server.ThreadingHTTPServer):
    """Serves the binary and tickets over plain HTTP (the documents fetch them with the host's own
    tools) and takes uploads on a second, HTTPS listener: the collector uploads over https:// only."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.files: dict[str, bytes] = {}
        self.objects: dict[str, bytes] = {}
        self.gets: list[str] = []
        self.uploads: Server | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def ticket(self, name: str) -> dict:
        import upload_servers as srv

        assert self.uploads is not None
        url = f"https://127.0.0.1:{self.uploads.server_address[1]}/upload/{name}"
        # the operator's CA for this destination travels in the ticket (the host's trust store is never used)
        return {"format": "triagent-upload-ticket/1", "kind": "https-put", "destination": url, "url": url,
                "created": "2026-11-23T00:00:00Z", "expires": "2036-11-23T00:00:00Z", "part_size": 1 << 20,
                "ca_pem": srv.shared_tls().ca_file.read_text()}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.server.gets.append(path)
        data = self.server.files.get(path, self.server.objects.get(path))
        self._reply(200, data) if data is not None else self._reply(404, b"not found")

    def do_PUT(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                out += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            body = bytes(out)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.objects[urlsplit(self.path).path] = body
        self._reply(201)


@pytest.fixture
def server() -> Iterator[Server]:
    import upload_servers as srv

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    files = srv.shared_tls()
    tls.load_cert_chain(str(files.cert_file), str(files.key_file))
    plain, secure = Server(), Server(tls)
    secure.objects = plain.objects
    plain.uploads = secure
    for one in (plain, secure):
        threading.Thread(target=one.serve_forever, daemon=True).start()
    try:
        yield plain
    finally:
        for one in (plain, secure):
            one.shutdown()
            one.server_close()


@pytest.fixture(scope="session")
def real_binary() -> bytes:
    # read once: the build may replace dist/triagent while the tests run
    need(BINARY.is_file(), "dist/triagent is missing (bash build/build.sh)")
    return BINARY.read_bytes()


# ---------------------------------------------------------------------------------------------- channels

@dataclass
class Run:
    channel: str
    rc: int
    stdout: str
    stderr: str
    shown: str = ""                         # what the channel keeps of the output
    summary: dict = field(default_factory=dict)


def _run(argv: list[str], env: dict, cwd: str, timeout: float, stdin: bytes | None = None) -> tuple[int, str, str]:
    """The agents' way: a fresh environment, the script's process group killed when the timeout hits."""
    proc = subprocess.Popen(["env", "-i"] + [f"{k}={v}" for k, v in env.items()] + argv, cwd=cwd,
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return 137, out.decode(errors="replace"), err.decode(errors="replace")
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def run_ssm(tmp: Path, params: dict[str, str], extra_env: dict | None = None) -> Run:
    doc = json.loads((PUSH / "aws-ssm-triagent.json").read_text())
    values = {k: spec.get("default") for k, spec in doc["parameters"].items()} | params
    for name, spec in doc["parameters"].items():  # SSM refuses the command before it reaches the host
        value = values[name]
        assert value is not None, f"SSM: {name} is required"
        if "allowedPattern" in spec:
            assert re.search(spec["allowedPattern"], value), f"SSM: {name} does not match its allowedPattern"
        if "allowedValues" in spec:
            assert value in spec["allowedValues"], name
    step = doc["mainSteps"][0]["inputs"]
    script = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values[m.group(1)], "\n".join(step["runCommand"]))
    folder = tmp / "ssm" / "awsrunShellScript" / "0.triagentCollect"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "_script.sh"
    path.write_text(script)
    path.chmod(0o700)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "AWS_SSM_INSTANCE_ID": "i-0123456789abcdef0",
           "AWS_SSM_REGION_NAME": "eu-west-1", "SSM_COMMAND_ID": "0b1c2d3e-test"} | (extra_env or {})
    timeout = int(re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values[m.group(1)], step["timeoutSeconds"]))
    rc, out, err = _run(["sh", "-c", str(path)], env, "/usr/bin/", timeout)
    shown = (out + ("\n----------ERROR-------\n" + err if err else ""))[:SSM_LIMIT]
    return Run("ssm", rc, out, err, shown)


AZURE_ORDER = ("binaryUrl", "binarySha256", "uploadTicket", "caseId", "profile", "memory", "encryptTo", "maxDuration",
               "timeLimit")


def _positional(params: dict[str, str]) -> list[str]:
    return [params.get(k) or "-" for k in AZURE_ORDER]


def run_azure(tmp: Path, params: dict[str, str], managed: bool, extra_env: dict | None = None) -> Run:
    """Managed: bash, named parameters as environment variables. Action: /bin/sh, positional arguments."""
    folder = tmp / "waagent" / "run-command" / "download" / "0"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "script.sh"
    shutil.copy(PUSH / "azure-run-command.sh", path)
    path.chmod(0o700)
    env = {"PATH": SSM_PATH} | (extra_env or {})
    timeout = int(params.get("timeLimit") or 5400)
    if managed:
        rc, out, err = _run(["/bin/bash", "-c", str(path)], env | params, str(folder), timeout)
    else:
        rc, out, err = _run(["/bin/sh", "-c", f'{path} "$@"', "sh"] + _positional(params), env, str(folder), timeout)
    return Run("azure", rc, out, err, out[-AZURE_LIMIT:] + err[-AZURE_LIMIT:])


def run_gcp(tmp: Path, params: dict[str, str], shell: str = "sh", extra_env: dict | None = None) -> Run:
    """`gcloud compute ssh VM --command 'sudo -n sh -s -- ARGS' < gcp-ssh.sh`: sudo's environment."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "USER": "root",
           "LOGNAME": "root", "SHELL": "/bin/bash", "SUDO_USER": "alice_example_com"} | (extra_env or {})
    argv = (["busybox", "sh"] if shell == "busybox" else [shell]) + ["-s", "--"] + _positional(params)
    rc, out, err = _run(argv, env, str(tmp), int(params.get("timeLimit") or 3600),
                        stdin=(PUSH / "gcp-ssh.sh").read_bytes())
    return Run("gcp", rc, out, err, out + err)


def finish(run: Run) -> Run:
    """The checks every run must pass: one JSON line inside what the channel keeps, never 194/168/169."""
    assert run.rc not in FORBIDDEN_EXITS
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1, f"{run.channel}: stdout must be one line: {run.stdout[:800]!r} / {run.stderr[-800:]!r}"
    assert lines[0] in run.shown, f"{run.channel}: the summary does not survive the output cut"
    if run.channel == "ssm":
        assert len(run.stdout) + len(run.stderr) <= SSM_LIMIT, (len(run.stdout), len(run.stderr))
    run.summary = json.loads(lines[0])
    fetched = run.summary["push"]["fetched_to"]
    assert not fetched or not os.path.exists(fetched), f"{fetched} was left behind"
    return run


def _serve(server: Server, name: str, data: bytes) -> tuple[str, str]:
    server.files[f"/bin/{name}"] = data
    return f"{server.base}/bin/{name}", hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------- the real binary

@pytest.mark.parametrize("channel", ["ssm", "azure-managed", "azure-action", "gcp", "gcp-busybox"])
def test_channel_collects_and_uploads(channel, server, real_binary, tmp_path):
    url, digest = _serve(server, "triagent", real_binary)
    ticket = server.ticket(f"{channel}.tar.gz")
    params = {"binaryUrl": url, "binarySha256": digest, "caseId": f"PUSH-{channel}", "profile": "minimal",
              "maxDuration": "120"}
    if channel == "ssm":
        run = run_ssm(tmp_path, params | {"uploadTicket": json.dumps(ticket, indent=1), "executionTimeout": "300"})
    elif channel.startswith("azure"):
        b64 = "b64:" + base64.b64encode(json.dumps(ticket).encode()).decode()
        run = run_azure(tmp_path, params | {"uploadTicket": b64, "timeLimit": "300"},
                        managed=channel.endswith("managed"))
    else:
        server.files["/ticket.json"] = json.dumps(ticket).encode()
        run = run_gcp(tmp_path, params | {"uploadTicket": f"fetch+{server.base}/ticket.json", "timeLimit": "300"},
                      shell="busybox" if channel.endswith("busybox") else "sh")
    finish(run)
    summary = run.summary
    assert run.rc == 0, (summary, run.stderr[-1500:])
    assert summary["status"] == "complete" and summary["push"]["exit"] == 0
    assert summary["push"]["fs"] == "tmpfs" and summary["push"]["fetched_to"].startswith("/dev/shm/triagent-push.")
    assert summary["push"]["sha256_ok"] is True and summary["push"]["timed_out"] is False
    received = server.objects[f"/upload/{channel}.tar.gz"]
    assert hashlib.sha256(received).hexdigest() == summary["sha256"] and len(received) == summary["bytes"]
    assert summary["uploads"][0]["ok"] is True
    assert run.stderr == ""                         # nothing but the summary on success


# ---------------------------------------------------------------------------------------------- stand-ins

def stand_in(record: Path, body: str) -> bytes:
    """A "binary" that records how it was started, then does what `body` says."""
    return (f"#!/bin/sh\n{{ echo \"args=$*\"; echo \"cwd=$(pwd)\"; echo \"home=$HOME\"; echo \"tmpdir=$TMPDIR\";\n"
            f"  for a in \"$@\"; do [ -f \"$a\" ] && echo \"file=$a mode=$(stat -c %a \"$a\")\"; done; }} > {record}\n"
            f"{body}\n").encode()


SUMMARY = '{"status":"complete","sha256":"00","bytes":1}'


@pytest.mark.parametrize("channel", ["ssm", "azure-action", "gcp-busybox"])
def test_wrong_hash_is_refused_and_not_run(channel, server, tmp_path):
    marker = tmp_path / "ran"
    evil = f"#!/bin/sh\ntouch {marker}\necho '{SUMMARY}'\n".encode()
    url, _ = _serve(server, "triagent", evil)
    expected = hashlib.sha256(b"the binary that was built").hexdigest()
    params = {"binaryUrl": url, "binarySha256": expected, "uploadTicket": json.dumps(server.ticket("x"))}
    if channel == "ssm":
        run = run_ssm(tmp_path, params | {"executionTimeout": "120"})
    elif channel == "azure-action":
        run = run_azure(tmp_path, params | {"timeLimit": "120"}, managed=False)
    else:
        run = run_gcp(tmp_path, params | {"timeLimit": "120"}, shell="busybox")
    finish(run)
    assert server.gets == ["/bin/triagent"]        # it was fetched ...
    assert not marker.exists()                     # ... and never executed
    assert run.rc == 3 and run.summary["status"] == "refused"
    assert expected in run.summary["error"] and hashlib.sha256(evil).hexdigest() in run.summary["error"]
    assert "REFUSED" in run.stderr
    assert not server.objects


def test_arguments_ticket_file_and_environment(server, tmp_path):
    record = tmp_path / "record"
    url, digest = _serve(server, "triagent", stand_in(record, f"echo '{SUMMARY}'"))
    ticket = json.dumps(server.ticket("t"))
    run = finish(run_ssm(tmp_path, {"binaryUrl": url, "binarySha256": digest.upper(), "uploadTicket": ticket,
                                    "caseId": "CASE-7", "memory": "true", "encryptTo": "age1exampleexample",
                                    "maxDuration": "99999", "executionTimeout": "200"}))
    assert run.rc == 0 and run.summary["status"] == "complete"
    seen = dict(line.split("=", 1) for line in record.read_text().splitlines() if not line.startswith("file="))
    work = run.summary["push"]["fetched_to"]
    assert seen["cwd"] == seen["home"] == seen["tmpdir"] == work
    args = seen["args"].split()
    assert args[:2] == ["collect", "--upload"] and args[2] == f"{work}/ticket.json"
    assert "--memory" in args and args[args.index("--encrypt-to") + 1] == "age1exampleexample"
    assert args[args.index("--case-id") + 1] == "CASE-7" and args[args.index("--profile") + 1] == "triage"
    # 200 s limit - 30 s cleanup - 10 s kill grace = 160 s to SIGTERM; --max-duration is 3/4 of it
    assert args[args.index("--max-duration") + 1] == str(run.summary["push"]["max_duration"])
    assert 117 <= run.summary["push"]["max_duration"] <= 120
    assert f"file={work}/ticket.json mode=600" in record.read_text()


@pytest.mark.parametrize(("code", "mapped"), [(0, 0), (1, 1), (2, 2), (3, 3), (194, 3), (168, 3), (169, 3), (127, 3)])
def test_exit_codes_are_mapped(code, mapped, server, tmp_path):
    url, digest = _serve(server, "triagent", f"#!/bin/sh\necho '{SUMMARY}'\nexit {code}\n".encode())
    run = finish(run_azure(tmp_path, {"binaryUrl": url, "binarySha256": digest, "timeLimit": "120",
                                      "uploadTicket": server.base + "/upload/u"}, managed=True))
    assert run.rc == mapped and run.summary["push"]["exit"] == mapped


def test_collector_without_summary_is_fatal(server, tmp_path):
    url, digest = _serve(server, "triagent", b"#!/bin/sh\necho 'Traceback: boom' >&2\nexit 0\n")
    run = finish(run_ssm(tmp_path, {"binaryUrl": url, "binarySha256": digest, "executionTimeout": "120",
                                    "uploadTicket": server.base + "/upload/u"}))
    assert run.rc == 3 and run.summary["status"] == "fatal" and "boom" in run.stderr


def test_usage_errors(server, tmp_path):
    run = finish(run_gcp(tmp_path, {"binaryUrl": server.base + "/bin/none", "binarySha256": "abc",
                                    "uploadTicket": "x", "timeLimit": "60"}))
    assert run.rc == 2 and run.summary["status"] == "usage" and not server.gets
    run = finish(run_gcp(tmp_path, {"binaryUrl": server.base + "/bin/none", "binarySha256": "a" * 64,
                                    "uploadTicket": "{}", "timeLimit": "60"}))
    assert run.rc == 3 and run.summary["status"] == "fatal" and "fetch" in run.summary["error"]


def test_deadline_stops_the_collector_before_the_channel_does(server, tmp_path):
    """executionTimeout 75: SIGTERM at ~35 s; the stand-in seals like the collector does (exit 1 on
    SIGTERM); the wrapper reports partial, timed out, well before SSM's SIGKILL at 75 s."""
    body = ("on_term() { echo '{\"status\":\"partial\",\"stop_reason\":\"signal SIGTERM\"}'; exit 1; }\n"
            "trap on_term TERM\nsleep 300 & wait $!\n")
    url, digest = _serve(server, "triagent", stand_in(tmp_path / "record", body))
    run = finish(run_ssm(tmp_path, {"binaryUrl": url, "binarySha256": digest, "executionTimeout": "75",
                                    "uploadTicket": server.base + "/upload/u"}))
    assert run.rc == 1 and run.summary["push"]["timed_out"] is True and run.summary["status"] == "partial"
    assert run.summary["push"]["elapsed_s"] < 60


def test_noexec_dev_shm_falls_back_and_says_so(server, tmp_path):
    """In a private mount namespace /dev/shm becomes noexec: the script uses TRIAGENT_TMP (a tmpfs
    here), or without it the next exec-able directory, and reports the filesystem it used."""
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    need(probe.returncode == 0, f"unshare --mount does not work here: {probe.stderr.decode()[:200]}")
    url, digest = _serve(server, "triagent", f"#!/bin/sh\necho '{SUMMARY}'\n".encode())
    mem = tmp_path / "mem"
    mem.mkdir()
    script = tmp_path / "script.sh"
    shutil.copy(PUSH / "collect.sh", script)
    env = {"TRIAGENT_BINARY_URL": url, "TRIAGENT_BINARY_SHA256": digest, "TRIAGENT_TIME_LIMIT": "120",
           "TRIAGENT_UPLOAD_TICKET": server.base + "/upload/u"}
    for tmp_dir in (str(mem), ""):
        inner = (f"mount -t tmpfs -o noexec tmpfs /dev/shm && mount -t tmpfs tmpfs {mem} && "
                 f"exec env -i PATH={SSM_PATH} " + " ".join(f"{k}={v}" for k, v in env.items())
                 + f" TRIAGENT_TMP={tmp_dir} sh {script}")
        rc, out, err = _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                            {"PATH": SSM_PATH}, str(tmp_path), 120)
        assert rc == 0, (out, err)
        push = json.loads(out)["push"]
        assert not push["fetched_to"].startswith("/dev/shm")
        if tmp_dir:
            assert push["fetched_to"].startswith(f"{mem}/triagent-push.") and push["fs"] == "tmpfs"
            assert "on_disk" not in push
        else:
            assert push["on_disk"] is True if push["fs"] not in ("tmpfs", "ramfs") else "on_disk" not in push


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        (PUSH / "aws-ssm-triagent.json").write_text(ssm_document())
        print(f"wrote {PUSH / 'aws-ssm-triagent.json'}")
    else:
        print(__doc__)
