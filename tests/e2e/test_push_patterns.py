"""The SSM document's parameter patterns against hostile values.

SSM pastes each parameter's value into the script text (``TRIAGENT_X='{{ x }}'``) once the value
matches the parameter's ``allowedPattern``. A pattern that is not anchored (``^...$``) accepts any value
that merely *contains* a match, such as ``1'; touch /tmp/x; '`` for a number: the quote ends the
string and the rest runs as root. Here every pattern is anchored, and every value a pattern lets
through is pasted into the document's own header line and run by a real shell: the variable must
hold exactly that value and nothing else may run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PUSH = Path(__file__).resolve().parents[2] / "specs" / "push"
DOC = json.loads((PUSH / "aws-ssm-triagent.json").read_text())
PATTERNS = {name: spec["allowedPattern"] for name, spec in DOC["parameters"].items() if "allowedPattern" in spec}
MARK = "@MARK@"  # replaced by the path of a file that exists only if injected code ran
HOSTILE = [
    "1'; touch @MARK@; '", "3600' ; touch @MARK@ #", "1'$(touch @MARK@)'", "1'`touch @MARK@`'",
    "$(touch @MARK@)", "`touch @MARK@`", "${IFS}touch${IFS}@MARK@", "3600\n'; touch @MARK@; '",
    "3600'\ntouch @MARK@\n'", "3600;touch @MARK@", "3600 && touch @MARK@", "3600|touch @MARK@",
    "'", "''", "1'", "'1", "3600\n", "\n3600", " 3600", "3600 ", "3600\x00", "0", "00", "-1", "+1", "1e3",
    "172801", "999999", "1000000", "3600x", "x3600", "{{ binaryUrl }}", "https://a/b'; touch @MARK@; '",
    "https://a/b\n'touch @MARK@'", "/dev/shm'; touch @MARK@; '", "/dev/shm/../../etc", "age1x'\"$(touch @MARK@)\"",
]
ACCEPTED = {"executionTimeout": ["1", "40", "3600", "99999", "100000", "169999", "171999", "172799", "172800"],
            "maxDuration": ["0", "1800", "999999"], "binarySha256": ["a" * 64, "A" * 64],
            "profile": ["triage", "minimal", "full"], "caseId": ["", "CASE-7", "2026/12:a@b+c"],
            "tmpDir": ["", "/dev/shm", "/run/user/0"], "binaryUrl": ["https://bucket.s3.amazonaws.com/t?X-Amz=1&a=b"],
            "uploadTicket": ['{"kind": "https-put", "url": "https://x"}', "fetch+https://x/t", "b64:eyJ9"],
            "encryptTo": ["", "age1exampleexample", "ssh-ed25519 AAAAC3Nza root@host"]}


def _shell() -> str:
    return shutil.which("dash") or shutil.which("sh") or "/bin/sh"


def _header_line(name: str) -> str:
    """The document's own assignment line for a parameter (``TRIAGENT_X='{{ name }}'``)."""
    lines = [line for line in DOC["mainSteps"][0]["inputs"]["runCommand"]
             if re.search(r"\{\{\s*" + name + r"\s*\}\}", line) and "=" in line and not line.startswith("#")]
    assert len(lines) == 1, (name, lines)
    return lines[0]


def ssm_accepts(name: str, value: str) -> bool:
    """SSM's check: the value must match the parameter's pattern (a search, as the regex engine runs it)."""
    return re.search(PATTERNS[name], value) is not None


def test_every_pattern_is_anchored():
    assert PATTERNS, "the document has no allowedPattern"
    for name, pattern in PATTERNS.items():
        assert pattern.startswith("^") and pattern.endswith("$"), f"{name}: {pattern!r} is not anchored"
        # and the anchors hold the whole pattern, not only its first and last alternative
        assert re.search(pattern, "'") is None and re.search(pattern, "x'" * 3) is None, name


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_hostile_values_are_refused_or_inert(name, tmp_path):
    line = _header_line(name)
    variable = line.split("=", 1)[0]
    marker = tmp_path / "injected"
    for hostile in HOSTILE:
        value = hostile.replace(MARK, str(marker))
        if not ssm_accepts(name, value):
            continue
        # SSM let it through: paste it as SSM does and run the line
        script = tmp_path / "_script.sh"  # written to a file and run, as the SSM agent does
        script.write_bytes((re.sub(r"\{\{\s*\w+\s*\}\}", lambda _m, v=value: v, line)
                            + f"\nprintf '%s' \"${variable}\"\n").encode())
        proc = subprocess.run([_shell(), str(script)], capture_output=True, cwd=tmp_path, timeout=30)
        assert not marker.exists(), f"{name}: {value!r} ran code"
        # a shell variable cannot hold NUL: the shell drops it, the rest is the value
        assert proc.returncode == 0 and proc.stdout.decode() == value.replace("\0", ""), \
            (name, value, proc.stdout, proc.stderr)
        assert "'" not in value, (name, value)


def test_execution_timeout_accepts_only_its_range():
    """executionTimeout is also SSM's timeoutSeconds and the script's arithmetic: 1..172800, digits only
    (Python's ``$``, like most engines', also matches before one final newline: the script's own check
    refuses that value)."""
    for value in ACCEPTED["executionTimeout"]:
        assert ssm_accepts("executionTimeout", value), value
    for hostile in HOSTILE:
        value = hostile.replace(MARK, "/tmp/x")
        if ssm_accepts("executionTimeout", value):
            assert value.rstrip("\n").isdigit() and 1 <= int(value) <= 172800, repr(value)
    for n in (0, 172801, 200000, 999999):
        assert not ssm_accepts("executionTimeout", str(n)), n


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_ordinary_values_still_pass(name):
    for value in ACCEPTED[name]:
        assert ssm_accepts(name, value), (name, value)
