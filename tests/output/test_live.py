"""The terminal's live view of a running experiment (`output.live`), with a fake clock."""

from __future__ import annotations

import re

import pytest

from pytest_llem.output.live import HEARTBEAT_S, LiveProgress
from pytest_llem.progress import ProgressEvent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(clock: Clock, phase: str, **fields) -> ProgressEvent:
    return ProgressEvent(phase=phase, at=clock.now, **fields)


def run_rounds(live: LiveProgress, clock: Clock, rounds: int, round_s: float) -> None:
    live.started("t.py::case", 1, 2)
    clock.now += 1
    live.update([event(clock, "loading model")])
    for index in range(1, rounds + 1):
        clock.now += round_s
        live.update([event(clock, "measuring", round=index, rounds=rounds)])
    clock.now += 1
    live.ended("done")


def test_plain_lines_are_timestamped_and_middle_rounds_are_rate_limited():
    lines: list[str] = []
    clock = Clock()
    run_rounds(LiveProgress(lines.append, None, 0, clock), clock, rounds=5, round_s=1)
    assert all(re.match(r"\d\d:\d\d:\d\d pytest-llem t\.py::case \(repeat 1/2\): ", line) for line in lines)
    said = [line.split(": ", 1)[1] for line in lines]
    # Rounds 2-4 come within a second of each other: only the first and last get a line.
    assert said == [
        "starting",
        "loading model",
        "measuring round 1/5",
        "measuring round 5/5",
        "done after 7.0 s",
    ]


def test_verbose_shows_every_round_and_where_the_time_went():
    lines: list[str] = []
    clock = Clock()
    run_rounds(LiveProgress(lines.append, None, 1, clock), clock, rounds=3, round_s=2)
    said = [line.split(": ", 1)[1] for line in lines]
    assert said[2:5] == ["measuring round 1/3", "measuring round 2/3", "measuring round 3/3"]
    assert said[-1] == "done after 8.0 s: starting 1.0 s, loading model 2.0 s, measuring 5.0 s"


def test_a_long_phase_gets_a_still_line_in_plain_output_at_most_ten_seconds_apart():
    assert HEARTBEAT_S <= 10
    lines: list[str] = []
    clock = Clock()
    live = LiveProgress(lines.append, None, 0, clock)
    live.started("t.py::case")
    live.update([event(clock, "loading model")])
    clock.now += HEARTBEAT_S / 2
    live.update([])
    assert len(lines) == 2
    clock.now += HEARTBEAT_S
    live.update([])
    assert lines[-1].endswith(f"t.py::case: still loading model ({1.5 * HEARTBEAT_S:.1f} s)")
    for _ in range(5):  # polled every second: a line each HEARTBEAT_S, never longer apart
        clock.now += 1
        live.update([])
    assert len(lines) == 3
    clock.now += HEARTBEAT_S - 5
    live.update([])
    assert len(lines) == 4


def test_a_notice_is_a_line_of_its_own_and_the_status_line_is_drawn_again_after_it():
    lines: list[str] = []
    plain = LiveProgress(lines.append, None, 0, Clock())
    plain.notice("preloaded interpreter ready after 9.2 s")
    assert re.fullmatch(r"\d\d:\d\d:\d\d pytest-llem: preloaded interpreter ready after 9\.2 s", lines[0])

    lines, drawn = [], []
    clock = Clock()
    live = LiveProgress(lines.append, drawn.append, 0, clock)
    live.started("t.py::case")
    clock.now += 2
    live.notice("preloaded interpreter ready after 9.2 s")
    assert lines == ["pytest-llem: preloaded interpreter ready after 9.2 s"]
    assert drawn[-2:] == ["", "pytest-llem case: starting 2.0 s (in all 2.0 s)"]


def test_on_a_terminal_one_status_line_updates_and_is_cleared_at_the_end():
    lines: list[str] = []
    drawn: list[str] = []
    clock = Clock()
    live = LiveProgress(lines.append, drawn.append, 0, clock)
    live.started("t.py::case")
    clock.now += 2
    live.update([event(clock, "warm-up")])
    clock.now += 3
    live.update([])
    live.ended("done")
    assert drawn[-1] == ""  # cleared
    assert "pytest-llem case: warm-up 3.0 s (in all 5.0 s)" in drawn
    assert lines == []  # nothing else on a terminal unless verbose


@pytest.mark.parametrize("on_a_terminal", [False, True])
def test_a_secret_in_a_phase_or_a_test_id_never_reaches_a_line_or_the_status(
    monkeypatch: pytest.MonkeyPatch, on_a_terminal: bool
):
    monkeypatch.setenv("MY_TOKEN", "tok-phase-7731")
    monkeypatch.setenv("DB_PASS", "dbpass-5521")
    lines: list[str] = []
    drawn: list[str] = []
    clock = Clock()
    live = LiveProgress(lines.append, drawn.append if on_a_terminal else None, 1, clock)
    live.started("t.py::case[postgresql://u:dbpass-5521@h/db]")
    clock.now += 1
    live.update([event(clock, "load tok-phase-7731", detail="as dbpass-5521")])
    clock.now += 1
    live.update([])
    live.ended("done")
    shown = "\n".join(lines + drawn)
    assert "load *** (as ***)" in shown and "load *** 1.0 s" in lines[-1]
    assert "tok-phase-7731" not in shown and "dbpass-5521" not in shown
