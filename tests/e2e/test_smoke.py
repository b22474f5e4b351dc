"""`pytest --llem --llem-smoke` on the tiny-model example suite, from the outside."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
from helpers import start_llem_pytest

TINY_SUITE = Path(__file__).parents[2] / "examples" / "tiny_cpu"


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="the torch extra (torch, transformers) is not installed",
)
def test_smoke_mode_runs_every_case_of_the_tiny_suite_and_saves_nothing(tmp_path: Path):
    state_dir = tmp_path / "state"
    started = time.monotonic()
    proc = start_llem_pytest(tmp_path, state_dir, "--llem-smoke", "-q", str(TINY_SUITE))
    output, _ = proc.communicate(timeout=600)
    elapsed_s = time.monotonic() - started
    assert proc.returncode == 0, output
    assert "6 passed" in output
    assert "pytest-llem: smoke run: 6 case(s) ran once with the smallest workload" in output
    assert "report written" not in output
    assert not state_dir.exists()  # no history, no states
    # Generous: each case is one process start with torch and one token; CI has 2 loaded cores.
    assert elapsed_s < 400, output


def test_smoke_mode_stops_at_a_broken_marker_with_one_line(tmp_path: Path):
    (tmp_path / "test_typo.py").write_text(
        "import pytest\n\n@pytest.mark.llem(batch_sise=4)\ndef test_typo(llem):\n    pass\n"
    )
    proc = start_llem_pytest(tmp_path, tmp_path / "state", "--llem-smoke", "-q", "test_typo.py")
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output
    line = (
        "ERROR: pytest-llem: test_typo.py::test_typo: @pytest.mark.llem: unknown field 'batch_sise' (allowed:"
    )
    assert line in output
    assert "Traceback" not in output
