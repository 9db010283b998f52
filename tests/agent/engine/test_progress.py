"""The progress contract and its terminal renderer: one line redrawn with a carriage return at most five
times a second, bytes, rate and ETA, wiped at the end; nothing at all without a listener."""

from __future__ import annotations

import io
import threading
import time

from agent.engine import progress
from agent.engine.progress import Renderer, human, tee, wanted

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def renderer(width: int = 120) -> tuple[Renderer, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    # no late draws on a timer: the fake clock decides every draw
    return Renderer(out, clock=clock, width=width, deferred=False), out, clock


def test_no_listener_no_output_and_calls_are_no_ops():
    assert progress.listen(None) is None
    progress.start("memory", 10, "B")
    progress.advance("memory", 5)
    progress.finish("memory")  # nothing to see: no listener, no error


def test_bytes_rate_and_eta_on_one_line():
    screen, out, clock = renderer()
    screen("start", "memory", 0, 4096 * MiB, "B")
    clock.now += 2.0
    screen("advance", "memory", 1024 * MiB, None, "")
    line = screen.line()
    assert line == "memory 1.0 GiB/4.0 GiB 25% 512.0 MiB/s ETA 0:06", line
    assert out.getvalue().endswith("\r" + line)
    assert "\n" not in out.getvalue(), "the status line never scrolls"


def test_counts_eta_and_the_artifact_running():
    screen, out, clock = renderer()
    screen("start", "artifacts", 0, 10, "artifacts")
    screen("start", "artifact:processes", 0, None, "")
    clock.now += 4.0
    screen("advance", "artifacts", 4, None, "")
    assert screen.line() == "artifacts 4/10 40% ETA 0:06 | processes"
    screen("finish", "artifact:processes", 0, None, "")
    assert screen.line() == "artifacts 4/10 40% ETA 0:06"


def test_an_artifact_with_a_task_of_its_own_shows_once():
    screen, _, clock = renderer()
    screen("start", "artifact:memory", 0, None, "")
    screen("start", "memory", 0, 4 * MiB, "B")
    screen("advance", "memory", MiB, None, "")
    assert screen.line() == "memory 1.0 MiB/4.0 MiB 25%"
    screen("finish", "memory", 0, None, "")
    assert screen.line() == "memory"


def test_upload_of_unknown_size_shows_bytes_and_rate_without_eta():
    screen, _, clock = renderer()
    screen("start", "upload", 0, None, "B")
    clock.now += 1.0
    screen("advance", "upload", 16 * MiB, None, "")
    assert screen.line() == "upload 16.0 MiB 16.0 MiB/s"


def test_redrawn_at_most_five_times_a_second():
    screen, out, clock = renderer()
    screen("start", "memory", 0, 1 << 40, "B")
    assert screen.draws == 1  # the first event draws at once
    for _ in range(10_000):  # a memory image advances per chunk: thousands of events a second
        clock.now += 0.0001
        screen("advance", "memory", 4096, None, "")
    # one second more: five draws more (at 0.2 s steps), not ten thousand
    assert screen.draws <= 6, screen.draws
    assert out.getvalue().count("\r") == screen.draws


def test_a_step_started_too_soon_to_draw_is_drawn_a_little_later():
    out = io.StringIO()
    screen = Renderer(out, width=120)  # the real clock and timer
    screen("start", "artifacts", 0, 2, "artifacts")
    screen("start", "artifact:clock", 0, None, "")
    screen("finish", "artifact:clock", 0, None, "")
    screen("start", "artifact:processes", 0, None, "")  # then silent for minutes
    assert out.getvalue() == "\rartifacts 0/2 0%"
    time.sleep(0.5)
    assert out.getvalue().endswith("\rartifacts 0/2 0% | processes"), out.getvalue()
    assert screen.draws == 2
    screen.close()


def test_close_wipes_the_line_and_message_goes_above_it():
    screen, out, clock = renderer()
    screen("start", "upload", 0, None, "B")
    screen.message("triagent: a warning")
    text = out.getvalue()
    assert "triagent: a warning\n" in text
    assert text.endswith("\rupload 0 B"), "the status line comes back below the message"
    screen.close()
    assert out.getvalue().endswith("\r" + " " * len("upload 0 B") + "\r")


def test_the_line_goes_as_soon_as_the_last_task_ends():
    screen, out, clock = renderer()
    screen("start", "memory", 0, 100, "B")
    screen("advance", "memory", 100, None, "")  # too soon to draw
    screen("finish", "memory", 0, None, "")  # not too soon to wipe: a summary may be printed next
    assert out.getvalue() == "\rmemory 0 B/100 B 0%" + "\r" + " " * len("memory 0 B/100 B 0%") + "\r"


def test_a_shorter_line_covers_the_longer_one_before_it():
    screen, out, clock = renderer()
    screen("start", "artifact:a-very-long-artifact-name", 0, None, "")
    clock.now += 1
    screen("start", "artifact:x", 0, None, "")
    clock.now += 1
    screen("finish", "artifact:a-very-long-artifact-name", 0, None, "")
    assert out.getvalue().endswith("\rx" + " " * len("a-very-long-artifact-name | "))


def test_cut_to_the_terminal_width_and_no_escape_sequence_gets_through():
    screen, _, _ = renderer(width=20)
    screen("start", "artifact:\x1b[2Jevil" + "x" * 40, 0, None, "")
    line = screen.line()
    assert len(line) == 19 and "\x1b" not in line


def test_safe_from_many_threads():
    screen, _, clock = renderer()
    screen("start", "upload", 0, None, "B")

    def work() -> None:
        for _ in range(1000):
            screen("advance", "upload", 1, None, "")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert screen.tasks["upload"].done == 4000


def test_wanted_only_on_a_terminal_unless_forced_and_never_under_quiet():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wanted(False, False, Tty()) is True
    assert wanted(True, False, Tty()) is False  # -q
    assert wanted(False, False, io.StringIO()) is False  # a pipe, SSM: the output stays one line
    assert wanted(False, True, io.StringIO()) is True  # --progress
    closed = io.StringIO()
    closed.close()
    assert wanted(False, False, closed) is False


def test_tee_tells_every_listener_and_listen_restores():
    seen: list[tuple] = []
    both = tee(lambda *e: seen.append(("a",) + e), None, lambda *e: seen.append(("b",) + e))
    previous = progress.listen(both)
    try:
        progress.start("analysis", 3, "steps")
    finally:
        assert progress.listen(previous) is both
    assert seen == [("a", "start", "analysis", 0, 3, "steps"), ("b", "start", "analysis", 0, 3, "steps")]
    assert tee(None) is None


def test_a_count_shows_its_unit_unless_the_task_says_it():
    screen, _, _ = renderer()
    screen("start", "analysis", 0, 5, "steps")
    screen("advance", "analysis", 2, None, "")
    assert screen.line() == "analysis 2/5 steps 40%"


def test_human_units():
    assert human(512, "B") == "512 B"
    assert human(1536, "B") == "1.5 KiB"
    assert human(3 * (1 << 40), "B") == "3.0 TiB"
    assert human(12, "files") == "12"


def test_line_log_is_on_disk_line_by_line(tmp_path):
    path = tmp_path / "b.tar.gz.log"
    log = progress.LineLog(str(path))
    log.listener("start", "memory", 0, 1024, "B")
    log.listener("advance", "memory", 512, None, "")  # never a line per chunk
    log.line("artifact \x1b[2Jx: complete")
    # before any close or flush: what a SIGKILL at this moment would leave
    lines = path.read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["start memory (1024 B)", "artifact ?[2Jx: complete"]
    assert lines[0][:20].endswith("Z")
    log.close()
    try:
        progress.LineLog(str(path))
        raise AssertionError("a second run must not write into the first one's log")
    except FileExistsError:
        pass
    more = progress.LineLog(str(path), exclusive=False)
    more.line("again")
    more.close()
    assert path.read_text().splitlines()[-1].endswith(" again")
