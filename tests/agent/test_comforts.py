"""The operator's comforts in `collect` and `analyze` (issue 19 item 2), through the real command line:
progress only on a terminal (a pty) and never on a pipe, -q and --progress; a responder's own profile file
(refused when invalid, its SHA-256 in custody, an extra path collected without a rebuild, still through the
evidence reader and the redaction gate); @FILE argument files; --output-name; the log beside the bundle that
a SIGKILLed run still leaves; -o with one meaning."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from agent.cli import output_file

REPO = Path(__file__).resolve().parents[2]
SECRET = "hunter2-s3cr3t-value"

APP_PROFILE = """
description = "our app's logs and keys"
artifacts = ["app.logs"]
max_duration_s = 120

[[artifact]]
name = "app.logs"
collector = "collectors.files.copy:collect"
order = 81
budget_s = 30
[artifact.options]
paths = ["/opt/app/log/*.log", "/opt/app/keys/*"]
cap_bytes = 65536
keep = "tail"
"""


def cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command line; its output decoded without newline translation (a "\r" stays one)."""
    done = subprocess.run([sys.executable, "-m", "agent.cli", *argv], cwd=REPO, capture_output=True,
                          timeout=timeout)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A small evidence tree: who it is, an app log holding a password, an app's private key."""
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "hostname").write_text("web01\n")
    (r / "var/lib/cloud/data").mkdir(parents=True)
    (r / "var/lib/cloud/data/instance-id").write_text("../../i-0abc/x\n")  # a hostile host's id
    (r / "opt/app/log").mkdir(parents=True)
    (r / "opt/app/log/app.log").write_text(f"started\nlogin ok password={SECRET}\n")
    (r / "opt/app/keys").mkdir(parents=True)
    if shutil.which("ssh-keygen"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(r / "opt/app/keys/id_ed25519")],
                       check=True)
    return r


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    path = tmp_path / "app.toml"
    path.write_text(APP_PROFILE)
    return path


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def only_bundle(folder: Path) -> Path:
    found = [p for p in folder.iterdir() if p.name.endswith((".tar.gz", ".tar"))]
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------------------------------------- progress

def run_with_stderr_on_a_pty(argv: list[str]) -> tuple[int, str, bytes]:
    """The real CLI with stderr on a pseudo-terminal (stdout a pipe, as `collect -o - | ssh` has it)."""
    master, slave = pty.openpty()
    got = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child's side of the pty is closed and drained
                return
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", *argv], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        out, _ = proc.communicate(timeout=120)
        reader.join(10)
    finally:
        os.close(master)
    return proc.returncode, out.decode(), bytes(got)


@pytest.fixture
def put_server(tmp_path: Path):
    """An HTTPS PUT destination on loopback (its CA in no trust store), for collect --upload."""
    import upload_servers as srv

    with srv.run_put_server() as (server, ca):
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        token = tmp_path / "token"
        token.write_text(server.token)
        yield server, ["--upload", f"{server.url}/in/b.tar.gz", "--ca-bundle", str(ca_file), "--bearer-token-file",
                       str(token)]


def test_progress_on_a_terminal_never_on_a_pipe(root, profile, tmp_path, put_server):
    server, upload = put_server
    argv = ["collect", "--root", str(root), "--profile", str(profile), "--no-nice", *upload]

    code, out, err = run_with_stderr_on_a_pty([*argv, "-o", str(tmp_path / "tty")])
    assert code == 0, err
    assert b"\rupload " in err, err  # the status line, drawn in place on the terminal
    assert err.rstrip(b" \r").endswith(b"upload 0 B") or err.endswith(b"\r"), "wiped at the end"
    assert len(out.splitlines()) == 1 and json.loads(out)["status"] == "complete"

    piped = cli(*argv, "-o", str(tmp_path / "pipe"))  # SSM's case: stderr is a pipe
    assert piped.returncode == 0, piped.stderr
    assert "\r" not in piped.stderr and "upload" not in piped.stderr
    assert len(piped.stdout.splitlines()) == 1

    forced = cli(*argv, "-o", str(tmp_path / "forced"), "--progress")
    assert forced.returncode == 0 and "\rupload " in forced.stderr

    code, out, err = run_with_stderr_on_a_pty([*argv, "-o", str(tmp_path / "quiet"), "-q"])
    assert code == 0 and b"\r" not in err.replace(b"\r\n", b"\n"), err
    assert server.objects["/in/b.tar.gz"]


# ---------------------------------------------------------------------------------------------- --profile FILE

@pytest.mark.parametrize("text, said", [
    ("bogus = 1\n", "unknown key(s) ['bogus']"),
    ("include_secrets = true\n", "unknown key(s) ['include_secrets']"),  # no profile key turns secrets on
    ('artifacts = "processes"\n', "artifacts must be a list"),
    ('artifacts = ["processes", "nope"]\n', "unknown artifact 'nope'"),
    ("max_duration_s = -5\n", "max_duration_s must be more than 0"),
    ('artifacts = ["processes"]\n[options.processes]\nmax_procs = 1\n', "has no option(s) ['max_procs']"),
    ("[options.proceses]\nmax_procs = 1\n", "options.proceses: no such artifact"),
    ('[options."files.system"]\ncap_bytes = "big"\n', "option files.system.cap_bytes must be an integer"),
    ("[[artifact]]\nname = 'x'\ncollector = 'os:system'\norder = 1\nbudget_s = 1\n[artifact.options]\n"
     "paths = ['/etc/x']\n", "collector 'os:system' cannot be used in a profile file"),
    ("[[artifact]]\nname = 'x'\ncollector = 'collectors.files.copy:collect'\norder = 1\nbudget_s = 1\n"
     "[artifact.options]\npaths = ['etc/x']\n", "not an absolute path"),
    ("[[artifact]]\nname = 'x'\ncollector = 'collectors.files.copy:collect'\norder = 1\nbudget_s = 1\n"
     "[artifact.options]\npaths = ['/etc/x']\ncap_byte = 5\n", "unknown option(s) ['cap_byte']"),
    ("[[artifact]]\nname = 'processes'\ncollector = 'collectors.files.copy:collect'\norder = 1\nbudget_s = 1\n"
     "[artifact.options]\npaths = ['/etc/x']\n", "a built-in artifact has this name"),
    ("[[artifact]]\nname = 'x'\ncollector = 'collectors.files.copy:collect'\norder = true\nbudget_s = 1\n",
     "order must be an integer"),
    ("[[artifact]]\nname = '../x'\ncollector = 'collectors.files.copy:collect'\norder = 1\nbudget_s = 1\n",
     "name must be letters"),
    ("artifacts = [\n", "not valid TOML"),
])
def test_an_invalid_profile_file_is_refused_with_a_clear_error(root, tmp_path, text, said):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    done = cli("collect", "--root", str(root), "--profile", str(bad), "-o", str(tmp_path / "out"), "--no-nice")
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), "nothing collected"
    checked = cli("profiles", str(bad))  # the same check before going to the host
    assert checked.returncode == 2 and said in checked.stderr


def test_a_missing_profile_file_is_a_usage_error(root, tmp_path):
    done = cli("collect", "--root", str(root), "--profile", str(tmp_path / "nope.toml"), "-o", str(tmp_path))
    assert done.returncode == 2 and "No such file" in done.stderr


def test_a_profile_file_collects_one_more_path_its_sha256_in_custody(root, profile, tmp_path):
    done = cli("collect", "--root", str(root), "--profile", str(profile), "-o", str(tmp_path / "out"), "--no-nice")
    assert done.returncode == 0, done.stderr
    bundle = only_bundle(tmp_path / "out")
    got = members(bundle)
    log = next(v for k, v in got.items() if k.endswith("opt/app/log/app.log"))
    assert log.startswith(b"started\n") and SECRET.encode() not in log, "the redaction gate saw the copy"
    if shutil.which("ssh-keygen"):
        assert not any(k.endswith("keys/id_ed25519") for k in got), "a private key stays home"
        assert any(k.endswith("keys/id_ed25519.pub") for k in got)
    custody = json.loads(got["triagent/custody.json"])
    assert custody["profile_file"]["sha256"] == hashlib.sha256(profile.read_bytes()).hexdigest()
    assert custody["profile_file"]["path"] == str(profile)
    assert custody["profile_file"]["plan"][0]["options"]["paths"] == ["/opt/app/log/*.log", "/opt/app/keys/*"]
    assert custody["include_secrets"] is False


def test_a_profile_file_extends_a_builtin_one(root, tmp_path):
    path = tmp_path / "more.toml"
    path.write_text('extends = "minimal"\nartifacts = ["app.logs"]\n[options."app.logs"]\ncap_bytes = 8\n'
                    + APP_PROFILE.split("max_duration_s = 120\n")[1])
    listed = cli("profiles", str(path))
    assert listed.returncode == 0, listed.stderr
    names = json.loads(listed.stdout)[str(path)]["artifacts"]
    assert "processes" in names and names[-1] == "app.logs"


# ---------------------------------------------------------------------------------------------- @FILE, names

def test_argument_file_and_output_name(root, profile, tmp_path):
    args = tmp_path / "ir.args"
    args.write_text(f"# the case's standing options\ncollect --root {root}\n--profile '{profile}'\n"
                    "--case-id IR-42 --no-nice\n--output-name '{case}_{hostname}_{instance_id}_{utc}'\n")
    done = cli(f"@{args}", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    bundle = only_bundle(tmp_path / "out")
    name = bundle.name.removesuffix(".tar.gz")
    utc = name.rsplit("_", 1)[1]
    assert len(utc) == 16 and utc.endswith("Z")
    # the host's own instance id (../../i-0abc/x) made safe: no separator, no '..'
    assert name == "IR-42_web01_" + "______i-0abc_x" + f"_{utc}", name
    custody = json.loads(members(bundle)["triagent/custody.json"])
    assert "--case-id" in custody["command_line"] and "@" + str(args) not in custody["command_line"]
    assert custody["case_id"] == "IR-42"

    missing = cli("collect", f"@{tmp_path / 'nope.args'}")
    assert missing.returncode == 2 and "argument file" in missing.stderr


@pytest.mark.parametrize("template, said", [
    ("{hostname}/x", "path separator"),
    ("../{hostname}", "'..'"),
    ("{bogus}", "unknown field {bogus}"),
    ("{hostname.__class__}", "unknown field"),
    ("{hostname!r}", "unknown field"),
    ("", "may not be empty"),
])
def test_an_output_name_that_leaves_the_folder_is_refused(root, tmp_path, template, said):
    done = cli("collect", "--root", str(root), "--profile", "minimal", "-o", str(tmp_path / "out"),
               "--output-name", template)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- the log

def test_the_log_beside_the_bundle_survives_a_sigkill(root, tmp_path):
    slow = tmp_path / "slow.toml"
    # a quick artifact, then one that copies many small files of the live system (seconds)
    slow.write_text(APP_PROFILE.replace('artifacts = ["app.logs"]', 'artifacts = ["app.logs", "many"]') + """
[[artifact]]
name = "many"
collector = "collectors.files.copy:collect"
order = 90
budget_s = 600
[artifact.options]
paths = ["/usr/**"]
cap_bytes = 4096
max_files = 1000000
max_depth = 32
""")
    # the app's tree inside the live root is not there: app.logs copies nothing but completes
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "collect", "--profile", str(slow), "-o", str(out),
                             "--no-nice"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        log = None
        while time.monotonic() < deadline:
            logs = list(out.glob("*.log")) if out.exists() else []
            if logs and "artifact app.logs:" in logs[0].read_text():
                log = logs[0]
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert log is not None, "no log line within 60 s"
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    lines = text.splitlines()
    assert "collect: profile slow.toml" in lines[0] and lines[0][:20].endswith("Z")
    assert any(line.split(" ", 1)[1].startswith("artifact app.logs: complete") for line in lines)
    assert "end:" not in text, "killed: no end line, but everything before it"
    assert log.name == only_bundle(out).name + ".log"
    assert os.stat(log).st_mode & 0o777 == 0o600


def test_the_log_holds_names_and_counts_not_content(root, profile, tmp_path):
    done = cli("collect", "--root", str(root), "--profile", str(profile), "-o", str(tmp_path / "out"), "--no-nice")
    assert done.returncode == 0, done.stderr
    text = next((tmp_path / "out").glob("*.log")).read_text()
    assert "artifact app.logs: complete" in text and "end: complete, exit 0" in text
    assert SECRET not in text and "/opt/app" not in text


# ---------------------------------------------------------------------------------------------- -o

def test_one_meaning_for_o(tmp_path):
    assert output_file("-", "x.html") is None and output_file(None, "x.html") is None
    folder = tmp_path / "new"  # not there yet: the trailing '/' says it is a folder
    assert output_file(str(folder) + "/", "x.html") == str(folder / "x.html") and folder.is_dir()
    assert output_file(str(tmp_path), "x.html") == str(tmp_path / "x.html")
    assert output_file(str(tmp_path / "mine.html"), "x.html") == str(tmp_path / "mine.html")  # the old meaning


def test_timeline_o_dir_and_analyze_without_output(root, profile, tmp_path):
    done = cli("collect", "--root", str(root), "--profile", str(profile), "-o", str(tmp_path / "out"), "--no-nice")
    assert done.returncode == 0, done.stderr
    bundle = only_bundle(tmp_path / "out")
    stem = bundle.name.removesuffix(".tar.gz")
    timeline = cli("timeline", str(bundle), "-o", str(tmp_path / "tl") + "/", "--format", "csv")
    assert timeline.returncode in (0, 1), timeline.stderr
    assert (tmp_path / "tl" / (stem + ".timeline.csv")).is_file()
    (tmp_path / "rep").mkdir()
    report = cli("report", str(bundle), "-o", str(tmp_path / "rep"))  # an existing folder: no '/' needed
    assert report.returncode in (0, 1), report.stderr
    assert (tmp_path / "rep" / (stem + ".report.html")).is_file()

    # analyze without --output: beside its input (not in the working folder), progress on the terminal
    code, out, err = run_with_stderr_on_a_pty(["analyze", str(bundle)])
    assert code == 0, err
    assert json.loads(out)["analysis"] == str(bundle.parent / (stem + ".analysis.tar.gz"))
    assert b"\ranalysis " in err, err
    log = (bundle.parent / (stem + ".analysis.tar.gz.log")).read_text()
    assert "start analysis (" in log and log.rstrip().endswith("end: exit 0")
    assert not list(REPO.glob("*.analysis.tar.gz"))
