"""dissect.target in process during collect: plugins run, secrets never reach the bundle, a broken
plugin costs only itself; our parsers stand where dissect.target 3.25 is wrong."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import fakeroot
import pytest
from conftest import jsonl, members, raw_tar_bytes, run_triagent, summary_of

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")  # Debian package systemd-journal-remote
LONG_MESSAGE = "triagent long journal line " + "x" * 4000  # over the writer's 512-byte threshold: stored zstd


def _plant_journal(root: Path) -> bool:
    """A real journal file, written by systemd's own journal-remote from the journal export format: a
    short entry and a long one that the writer compresses (zstd), which dissect.target must undo."""
    if not JOURNAL_REMOTE.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{JOURNAL_REMOTE} is missing (tests/run.sh installs systemd-journal-remote)")
        return False
    folder = root / "var/log/journal/0123456789abcdef0123456789abcdef"
    folder.mkdir(parents=True)
    export = "".join(
        f"__REALTIME_TIMESTAMP={1_790_000_000_000_000 + i * 1_000_000}\n__MONOTONIC_TIMESTAMP={1000 + i}\n"
        f"_BOOT_ID=0123456789abcdef0123456789abcdef\nMESSAGE={message}\nPRIORITY=4\nSYSLOG_IDENTIFIER=sshd\n"
        f"_PID=42\n\n" for i, message in enumerate(["triagent planted journal line", LONG_MESSAGE]))
    journal = folder / "system.journal"
    subprocess.run([str(JOURNAL_REMOTE), "-o", str(journal), "-"], input=export.encode(),
                   check=True, capture_output=True, timeout=60)
    raw = journal.read_bytes()
    # incompatible flags (header offset 12) carry COMPRESSED_ZSTD (8), and the long text is not stored plain
    assert int.from_bytes(raw[12:16], "little") & 8 and LONG_MESSAGE.encode() not in raw, "journal not zstd-compressed"
    return True


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    root = tmp_path_factory.mktemp("dissect-root")
    expected = fakeroot.build(root)
    cron = fakeroot.plant_cron(root)
    expected.journal = _plant_journal(root)
    out = tmp_path_factory.mktemp("out")
    proc = run_triagent(["collect", "--root", str(root), "--output", str(out), "--artifacts",
                         "ssh,cron,accounts,histories,dissect"])
    summary = summary_of(proc)
    assert proc.returncode == 0, (summary, proc.stderr.decode()[-2000:])
    return expected, cron, summary, members(summary["bundle"])


def test_dissect_plugins_ran_in_process(collected):
    expected, _, _, m = collected
    history = {r["command"] for r in jsonl(m, "dissect.commandhistory")}
    assert "useradd -o -u 0 toor" in history
    assert {r["name"] for r in jsonl(m, "dissect.users")} >= {"root", "alice", "toor"}
    opened = jsonl(m, "dissect")[0]
    assert opened["os"] == "unix" or opened["os"] == "linux"


def test_every_plugin_of_the_spec_is_installed(collected):
    """A plugin whose module did not import (a missing optional dependency of dissect.target) is an error
    naming the import failure; none may happen with what the project installs."""
    log = [json.loads(line) for line in collected[3]["triagent/collection.log.jsonl"].splitlines()]
    missing = [e["message"] for e in log if "not in this installation" in e.get("message", "")]
    assert not missing, missing


def test_journal_records_with_compressed_fields(collected):
    expected, _, _, m = collected
    if not expected.journal:
        pytest.skip(f"{JOURNAL_REMOTE} is missing (apt-get install systemd-journal-remote)")
    messages = [r["message"] for r in jsonl(m, "dissect.journal")]
    assert messages == ["triagent planted journal line", LONG_MESSAGE]


def test_dissect_secrets_are_dropped(collected):
    expected, _, summary, m = collected
    passwords = jsonl(m, "dissect.passwords")
    assert passwords and all(r["hash"] == "<redacted>" and r["crypt"] == "<redacted>" for r in passwords)
    keys = jsonl(m, "dissect.ssh.private_keys")
    assert keys and all(r["private_key_pem"] == "<redacted>" for r in keys)
    tar = raw_tar_bytes(summary["bundle"])
    assert not [s for s in expected.secrets if s in tar]


def test_our_parsers_where_dissect_is_wrong(collected):
    expected, cron, _, m = collected
    ours = {r["command"] for r in jsonl(m, "cron") if "command" in r}
    theirs = {r.get("command") for r in jsonl(m, "dissect.cronjobs")}
    assert "/home/alice/.local/bin/miner -o pool" in ours and "/home/alice/.local/bin/miner -o pool" not in theirs
    backup = next(k for k in jsonl(m, "ssh_keys") if k.get("comment") == "backup@corp")
    assert [o["name"] for o in backup["options"]] == ["command", "no-pty", "from"]
    log = [json.loads(line) for line in m["triagent/collection.log.jsonl"].splitlines()]
    assert any(e.get("detail", {}).get("note", "").startswith("dissect.target 3.25 drops @reboot") for e in log)


def test_a_failing_plugin_costs_only_itself(tmp_path, evidence_root):
    root, _ = evidence_root
    from collectors.base import Context, Problem, Record
    from collectors.parsers import dissect_target

    ctx = Context(root=str(root), live=False, options={"plugins": ["no.such.plugin", "users"], "plugin_budget_s": 30})
    items = list(dissect_target.collect(ctx))
    assert any(isinstance(i, Problem) and i.level == "error" and "no.such.plugin is not in this installation"
               in i.message for i in items)
    assert any(isinstance(i, Record) and i.stream == "dissect.users" for i in items)
