"""Progress: the estimate's arithmetic, and the plain lines a log file gets."""
import io
import logging
import os
import pty
import select

import pytest

from harness.kernel import build
from harness.progress import Estimate, Progress

pytestmark = pytest.mark.unit


def test_estimate_extrapolates_the_rate_so_far():
    e = Estimate(done=400, total=1600, elapsed=60.0)
    assert e.fraction == 0.25
    assert e.left == 180.0
    assert e.text("build", "steps") == "build: 400/1600 steps (25%), 1:00 elapsed, about 3:00 left"


def test_estimate_without_a_total_or_a_step():
    assert Estimate(0, 1600, 5.0).left is None
    assert Estimate(12, None, 75.0).text("build", "steps") == "build: 12 steps, 1:15 elapsed"
    over = Estimate(1800, 1600, 100.0)  # the first estimate was short
    assert over.fraction == 1.0 and over.left == 0.0


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_log_gets_a_line_every_tenth_or_30_s_and_no_control_character(caplog):
    clock, stream = Clock(), io.StringIO()
    with caplog.at_level(logging.INFO, logger="harness"), \
            Progress("build", 1000, "steps", stream=stream, clock=clock) as progress:
        for step in range(1, 1001):
            clock.now = step * 0.1
            progress.line(f"  CC      mm/file{step}.o\n")
            progress.line("make[2]: Entering directory '/x'\n")  # not a step
    lines = [r.getMessage() for r in caplog.records]
    assert progress.done == 1000
    assert lines[0] == "build: 100/1000 steps (10%), 0:10 elapsed, about 1:30 left"
    assert len(lines) == 10 and lines[-1].startswith("build: 1000/1000 steps (100%)")
    assert stream.getvalue() == ""  # nothing drawn: not a terminal


def test_without_a_total_a_log_gets_a_line_every_30_s(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="harness"), \
            Progress("build", None, "steps", stream=io.StringIO(), clock=clock) as progress:
        for step in range(1, 101):
            clock.now = step * 1.0
            progress.update(step)
    assert [r.getMessage() for r in caplog.records] == [
        "build: 30 steps, 0:30 elapsed", "build: 60 steps, 1:00 elapsed", "build: 90 steps, 1:30 elapsed"]


def test_a_terminal_gets_one_updating_line(caplog):
    controller, terminal = pty.openpty()
    with open(terminal, "w") as stream, caplog.at_level(logging.INFO, logger="harness"):
        with Progress("build", 10, "steps", stream=stream) as progress:
            for step in range(1, 11):
                progress.update(step)
        stream.flush()
        drawn = b""
        while select.select([controller], [], [], 0.5)[0]:
            drawn += os.read(controller, 65536)
    assert b"\x1b[" in drawn and b"10/10" in drawn
    assert caplog.records == []  # no plain lines on a terminal


def test_the_expected_steps_come_from_the_last_full_build(tmp_path):
    assert build.expected_steps(tmp_path) == build.FIRST_ESTIMATE
    (tmp_path / build.STEPS_FILE).write_text("1712\n")
    assert build.expected_steps(tmp_path) == 1712
    (tmp_path / "vmlinux").write_text("")
    assert build.expected_steps(tmp_path) is None  # incremental: how much changed is unknown
