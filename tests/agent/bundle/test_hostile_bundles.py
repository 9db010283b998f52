"""Hostile bundles (issue 14, items 1-3): each one made with our own writer and sealed, each responder tool
run over it as a child process. verify names every member name no collector writes and exits 1 even when
the seal matches; verify, analyze, report, timeline and rank stay under 256 MB of RSS (the child's own
ru_maxrss) on a gzip bomb, on big triagent/ members, on a 400 MB line and on a pax header claiming 3 GiB;
analyze writes no more than the manifest declares and nothing when the space left would fall under its
floor; rank passes over FIFOs and links to /dev/zero; and nothing is ever written outside --output."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import hostile_bundles as hb
import pytest

from agent.bundle.verify import verify
from agent.bundle.writer import BundleWriter

RSS_LIMIT = 256 << 20
TOOLS = ("verify", "report", "timeline", "rank", "analyze")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile-bundles")


# --- item 1: verify is strict about names ------------------------------------------------------------

@pytest.mark.parametrize("key", [*hb.BAD_NAMES, *hb.BAD_LINKS])
def test_verify_names_each_bad_member_even_under_a_matching_seal(made, key):
    path = hb.bad_name_bundle(made, key)
    result = verify(str(path))
    name = hb.BAD_LINKS[key][0] if key in hb.BAD_LINKS else hb.BAD_NAMES[key]
    expected = {"dotdot": "'..' component", "absolute": "leading '/'", "escape": "control character",
                "c1": "C1 control character", "nul": "NUL byte", "unknown_place": "not a name any collector writes",
                "unknown_triagent": "not a name any collector writes", "unknown_memory": "not a name any collector",
                "symbols_dotdot": "'..' component", "link_escapes": "leading outside the bundle",
                "link_outside_fs": "outside fs/$rootfs$/"}[key]
    named = [p for p in result.problems if expected in p]
    assert not result.ok and named, result.problems
    # the name is in the problem, escaped: nothing a terminal would obey
    assert repr(name)[1:40] in named[0], (name, named[0])
    assert not any(ch in named[0] for ch in ("\x1b", "\x07", "\x9b", "\x85", "\0"))
    # everything else about the bundle holds: the seal and the manifest match
    assert not [p for p in result.problems if "altered" in p or "seal" in p], result.problems


def test_verify_exits_1_and_names_the_member(made, tmp_path):
    path = hb.bad_name_bundle(made, "dotdot")
    code, out, err, rss = hb.run_tool(["verify", str(path)], tmp_path)
    summary = json.loads(out)
    assert code == 1 and summary["verified"] is False, (out, err)
    assert "fs/$rootfs$/../../../../etc/cron.d/x" in err.decode() and "'..' component" in err.decode()
    path = hb.bad_name_bundle(made, "escape")
    code, out, err, _ = hb.run_tool(["verify", str(path)], tmp_path)
    assert code == 1 and b"\x1b" not in out + err and b"\\x1b]0;owned" in err, err


    # and what the collector does write stays accepted: links to absolute paths (read inside the evidence
    # root) and to parents within it, odd bytes in names, every documented place
    st = os.stat(hb.REPO)
    path = tmp_path / "good.tar.gz"
    with open(path, "wb") as out:
        w = BundleWriter(out)
        w.add_bytes(b"fs/$rootfs$/tmp/\xff\xfe-x", b"x", hb.NOW_NS)
        w.add_symlink("fs/$rootfs$/etc/localtime", "/usr/share/zoneinfo/UTC", st)
        w.add_symlink("fs/$rootfs$/root/.bash_history", "/dev/null", st)
        w.add_symlink("fs/$rootfs$/etc/alternatives/x", "../../usr/bin/x", st)
        w.add_bytes("memory/web1.avml-companion.lime.part0000", b"", hb.NOW_NS)
        w.add_bytes("symbols/linux/6.1.0-13-amd64-btf.inputs/kallsyms", b"", hb.NOW_NS)
        w.add_bytes("symbols/linux/6.1.0-13-amd64-btf.json.xz", b"", hb.NOW_NS)
        w.add_bytes("triagent/artifacts/volatility.linux.pslist.PsList.part001.jsonl", b"{}\n", hb.NOW_NS)
        hb.seal(w)
    code, out, err, _ = hb.run_tool(["verify", str(path)], tmp_path)
    assert code == 0 and json.loads(out)["verified"] is True, err


# --- item 2: bounded ---------------------------------------------------------------------------------

def _run_all(bundle: Path, tmp_path: Path, analyze_env_floor: int | None = None) -> dict[str, tuple]:
    """Every tool over ``bundle`` (copied into a folder of its own), each under the RSS limit, nothing
    written outside its output; returns (code, stdout, stderr) per tool."""
    home = tmp_path / "bundles"
    home.mkdir(exist_ok=True)
    local = home / bundle.name
    if not local.exists():
        os.link(bundle, local)
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    out = tmp_path / "out"
    args = {"verify": ["verify", str(local)],
            "report": ["report", str(local), "--output", str(out / "report.html")],
            "timeline": ["timeline", str(local), "--format", "csv", "--output", str(out / "timeline.csv")],
            "rank": ["rank", str(home), "--jobs", "1", "--output", str(out / "fleet")],
            "analyze": ["analyze", str(local), "--output", str(out / "analysis")]}
    results = {}
    for tool in TOOLS:
        before = hb.snapshot(home, cwd)
        code = None
        if tool == "analyze" and analyze_env_floor is not None:
            code = FLOOR_CODE
            args[tool] = [str(analyze_env_floor), *args[tool]]
        rc, stdout, stderr, rss = hb.run_tool(args[tool], cwd, code=code)
        assert b"Traceback" not in stderr, (tool, stderr.decode(errors="replace")[-3000:])
        assert rss < RSS_LIMIT, f"{tool}: {rss >> 20} MB peak RSS on {bundle.name}"
        assert hb.snapshot(home, cwd) == before, f"{tool} wrote outside its --output"
        results[tool] = (rc, stdout.decode(errors="replace"), stderr.decode(errors="replace"), rss)
    return results


FLOOR_CODE = ("import sys, agent.analysis.analyze as a; a.MIN_FREE_BYTES = int(sys.argv[1]); "
              "from agent.cli import main; sys.exit(main(sys.argv[2:]))")


def _report_summary(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_gzip_bomb_is_inflated_in_bounded_steps(made, tmp_path):
    """16 x 64 MiB of zeros (a sealed bundle, a few MB on disk): every tool reads it in bounded steps; analyze
    would write a 1 GiB image, and refuses since that would leave less than its floor free."""
    bomb = hb.gzip_bomb(made / "bomb.tar.gz")
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    results = _run_all(bomb, tmp_path, analyze_env_floor=free - (512 << 20))
    assert results["verify"][0] == 0  # a valid bundle: the bomb is what it declares
    code, stdout, stderr, _ = results["analyze"]
    assert code == 1 and "the memory image is not extracted" in stderr and "floor" in stderr, stderr[-2000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert any("not extracted" in p for p in summary["problems"]), summary
    written = sum(f.stat().st_blocks * 512 for f in (tmp_path / "out" / "analysis").rglob("*") if f.is_file())
    assert written < 16 << 20, f"analyze wrote {written} bytes"


def test_big_triagent_members_are_never_held(made, tmp_path):
    """12 x 60 MB record-stream members (60 MB lines of spaces): none is kept whole by any tool."""
    results = _run_all(hb.big_meta_members(made / "meta.tar.gz"), tmp_path)
    assert results["verify"][0] == 0
    code, _, stderr, _ = results["timeline"]
    assert code == 1 and "line 1: longer than 1048576 bytes, cut (not read)" in stderr, stderr[-2000:]
    assert _report_summary(results["report"][1])["problems"] >= 12


def test_a_400_MB_line_is_cut_and_flagged_not_loaded(made, tmp_path):
    """A 400 MB JSON Lines line in the process records: cut and named; the record after it still counts."""
    results = _run_all(hb.long_line(made / "line.tar.gz"), tmp_path)
    assert results["verify"][0] == 0
    assert "longer than 1048576 bytes, cut" in results["timeline"][2]
    assert _report_summary(results["report"][1])["problems"] >= 1
    html = (tmp_path / "out" / "report.html").read_text()
    assert "pid 7 (evil) runs a deleted executable" in html  # the host checks read on past the long line
    assert "longer than 1048576 bytes, cut (not read)" in html
    assert results["rank"][0] == 0 and "0 unreadable" in results["rank"][2]


def test_pax_header_claiming_3_GiB_is_refused_unread(made, tmp_path):
    results = _run_all(hb.pax_bomb(made / "pax.tar.gz"), tmp_path)
    for tool in TOOLS:
        code, stdout, stderr, _ = results[tool]
        assert code == 1, (tool, code, stderr[-2000:])
        assert "extended header of 3221225472 bytes (more than the 1048576-byte cap): refused" in stdout + stderr, \
            (tool, stdout[-1000:], stderr[-2000:])


def test_analyze_writes_no_more_than_the_manifest_declares(tmp_path):
    """The tar says 2 MiB, the (sealed) manifest 256 KiB: analyze takes 256 KiB and says the bundle does not
    verify."""
    bundle = tmp_path / "in" / "declared.tar"
    bundle.parent.mkdir()
    image = os.urandom(256 << 10) * 8
    with open(bundle, "wb") as out:
        w = BundleWriter(out, "none")
        w.add_bytes("triagent/custody.json", hb._custody(), hb.NOW_NS)
        w.add_bytes("memory/web1.lime", image, hb.NOW_NS)
        w.entries[-1]["size"] = 256 << 10
        hb.seal(w)
    code, stdout, stderr, rss = hb.run_tool(["analyze", str(bundle), "--output", str(tmp_path / "out")], tmp_path)
    assert b"Traceback" not in stderr and rss < RSS_LIMIT, stderr.decode(errors="replace")[-3000:]
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert code == 1 and summary["source_verified"] is False
    import tarfile

    with tarfile.open(summary["analysis"]) as tar:
        custody = json.loads(tar.extractfile("triagent/custody.json").read())
    assert custody["image_sha256"] == hashlib.sha256(image[:256 << 10]).hexdigest()


# --- item 3: no traceback, nothing outside --output, no stub left behind -------------------------------

def test_analyze_names_a_dotdot_member_and_runs_again(tmp_path):
    """`symbols/linux/k-btf.inputs/..` beside a memory image: a named problem in the summary and the analysis
    log, no traceback, nothing outside --output, and a second run into the same folder is not blocked by
    anything the first one left."""
    home = tmp_path / "in"
    home.mkdir()
    bundle = hb.write(home / "dotdot.tar", [("memory/web1.lime", b"\x01" * 4096),
                                           ("symbols/linux/k-btf.inputs/..", b"x" * 100)], compress="none")
    out = tmp_path / "out"
    for attempt in (1, 2):
        before = hb.snapshot(home, tmp_path / "in")
        code, stdout, stderr, rss = hb.run_tool(["analyze", str(bundle), "--output", str(out / str(attempt))],
                                                tmp_path)
        text = stderr.decode(errors="replace")
        assert b"Traceback" not in stderr and "FileExistsError" not in text, text[-3000:]
        assert code == 1 and rss < RSS_LIMIT
        assert hb.snapshot(home) == before
        summary = json.loads(stdout.decode().strip().splitlines()[-1])
        assert summary["source_verified"] is False
        assert sorted(p.name for p in (out / str(attempt)).iterdir()) == [
            "dotdot.analysis.tar.gz", "dotdot.analysis.tar.gz.log", "dotdot.analysis.tar.gz.sha256"]
        import tarfile

        with tarfile.open(summary["analysis"]) as tar:
            log = tar.extractfile("triagent/collection.log.jsonl").read().decode()
            custody = json.loads(tar.extractfile("triagent/custody.json").read())
        assert "symbols/linux/k-btf.inputs/.." in log and "'..' component" in log, log[-2000:]
        assert any("'..' component" in p for p in custody["source_problems"])
    # the same output folder again: refused by name, not by a traceback
    code, _, stderr, _ = hb.run_tool(["analyze", str(bundle), "--output", str(out / "1")], tmp_path)
    assert code == 3 and b"exists already" in stderr and b"Traceback" not in stderr


def test_rank_passes_over_fifos_and_links_to_dev_zero(made, tmp_path):
    folder = tmp_path / "fleet"
    folder.mkdir()
    good = hb.write(folder / "web1.tar.gz", [("fs/$rootfs$/etc/hostname", b"web1\n")])
    os.mkfifo(folder / "stuck.tar.gz")
    os.symlink("/dev/zero", folder / "zero.tar.gz")
    os.symlink(good, folder / "alias.tar")
    (folder / "sub").mkdir()
    os.mkfifo(folder / "sub" / "web2.analysis.tar.gz")
    os.symlink("/dev/zero", folder / "web1.analysis.tar.gz")  # found beside a bundle: not followed either
    code, stdout, stderr, rss = hb.run_tool(["rank", str(folder), "--jobs", "1", "--format", "json", "--output",
                                             str(tmp_path / "out")], tmp_path, timeout=120)
    result = json.loads(stdout)
    assert code == 0 and result["bundles"] == 1 and result["unreadable"] == 0, stderr.decode()[-2000:]
    assert [h["host_key"] for h in result["hosts"]] == ["web1.tar.gz"]
    assert b"skipped 'stuck.tar.gz': not a regular file" in stderr and b"skipped 'zero.tar.gz'" in stderr
    assert rss < RSS_LIMIT


# --- JSON nested deeper than the parser recurses ---------------------------------------------------------

def test_deeply_nested_records_cost_only_themselves(tmp_path):
    """A line of 200 000 "[" makes json.loads raise RecursionError, not ValueError: every tool reading
    records through agent/bundle/reader.py skips that line (and such a JSON member) and reads on."""
    from agent.bundle.reader import BundleView, loads_bounded, parse_record
    from agent.responder.report import report
    from agent.responder.timeline import Stats, collect_events

    deep = b"[" * 200_000
    good = json.dumps({"pid": 7, "name": "sshd", "start_time_utc": "2025-11-24T15:00:00Z"}).encode()
    path = hb.write(tmp_path / "deep.tar.gz", [("triagent/artifacts/processes.jsonl", deep + b"\n" + good + b"\n"),
                                                ("triagent/verdict.json", b'{"a":' * 100_000)])
    assert parse_record(deep) is None
    with pytest.raises(ValueError):
        loads_bounded(b'{"a":' * 100_000)
    with BundleView(str(path)) as view:
        assert [(line, r["pid"]) for _, line, r in view.stream_rows("processes")] == [(2, 7)]
    stats = Stats()
    events = collect_events(str(path), None, stats)
    assert [(e.line, e.desc) for e in events if e.stream == "processes"] == [(2, "Process Start")]
    summary = report(str(path), None, str(tmp_path / "report.html"))
    assert (tmp_path / "report.html").is_file(), summary
