"""Live progress from the outside: a real `pytest --llem -v` whose output is not a terminal."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import reports, start_llem_pytest

SUITE = """
import pytest
import workloads

@pytest.mark.llem(rounds=2, params={"phase_s": 0.3})
def test_slow(llem):
    llem.run(workloads.slow_phases)

def test_dies(llem):
    llem.run(workloads.dies_while_loading)

def test_after(llem):
    llem.run(workloads.slow_phases, params={"phase_s": 0.0})
"""

LINE = re.compile(r"^(\d\d:\d\d:\d\d) pytest-llem test_suite\.py::(\w+): (.*)$")


def progress_lines(output: str, test: str) -> list[tuple[str, str]]:
    found = [LINE.match(line) for line in output.splitlines()]
    return [(m.group(1), m.group(3)) for m in found if m and m.group(2) == test]


def test_the_parent_sees_each_phase_in_order_with_times_and_survives_a_death(tmp_path: Path):
    (tmp_path / "test_suite.py").write_text(SUITE)
    proc = start_llem_pytest(tmp_path, tmp_path / "state", "-v", "--llem-energy=none", "test_suite.py")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output  # test_dies fails; the others pass
    assert "1 failed, 2 passed" in output, output

    slow = progress_lines(output, "test_slow")
    said = [text for _, text in slow]
    assert said[:-1] == [
        "starting",
        "importing",
        "loading model",
        "warm-up",
        "measuring round 1/2",
        "measuring round 2/2",
        "tearing down",
    ], output
    assert said[-1].startswith("done after ") and "loading model" in said[-1]
    stamps = [stamp for stamp, _ in slow]
    assert stamps == sorted(stamps)

    # The child died in the middle of a phase: the phase was seen, the test says which it was.
    assert [text.split(" after ")[0] for _, text in progress_lines(output, "test_dies")] == [
        "starting",
        "importing",
        "loading model",
        "failed",
    ], output
    assert re.search(r"killed by SIGKILL.*\(last phase: loading model\)", output), output

    (report,) = reports(tmp_path / "state")
    durations = {e["nodeid"].split("::")[1]: e["result"] for e in report["experiments"] if e["result"]}
    spent = durations["test_slow"]["phase_durations_s"]
    assert list(spent)[:4] == ["importing", "loading model", "warm-up", "measuring"]
    assert spent["loading model"] >= 0.3 and spent["warm-up"] >= 0.3 and spent["measuring"] >= 0.6


QUIET_SUITE = """
import time
import pytest

def long_phase(ctx):
    ctx.phase("thinking")
    time.sleep(12)
    with ctx.window():
        pass
    ctx.record(output_tokens=1)

def test_quiet(llem):
    llem.run(long_phase)
"""

STAMPED = re.compile(r"^(\d\d):(\d\d):(\d\d) pytest-llem")


def test_a_log_hears_the_preloaded_interpreter_start_and_is_never_silent_for_over_ten_seconds(tmp_path: Path):
    (tmp_path / "test_suite.py").write_text(QUIET_SUITE)
    proc = start_llem_pytest(
        tmp_path, tmp_path / "state", "--llem-energy=none", "--llem-preload=json", "test_suite.py"
    )
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    lines = output.splitlines()
    collected = next(i for i, line in enumerate(lines) if line.startswith("collected 1 item"))
    assert lines[collected + 1].endswith(
        " pytest-llem: starting the preloaded interpreter (importing json) ..."
    )
    assert any(
        re.search(r" pytest-llem: preloaded interpreter ready after \d+\.\d s$", line) for line in lines
    )
    assert any(re.search(r"test_quiet: still thinking \(1\d\.\d s\)$", line) for line in lines), output

    # From the first progress line to the last, no gap over ten seconds (a second's slack for
    # the poll and the clock's whole seconds).
    stamps = [STAMPED.match(line) for line in lines]
    seconds = [int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) for m in stamps if m]
    gaps = [later - earlier for earlier, later in zip(seconds, seconds[1:], strict=False)]
    assert seconds and max(gaps) <= 11, output
