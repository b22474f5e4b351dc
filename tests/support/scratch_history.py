"""A history of real `pytest --llem` runs, one per commit of a scratch git repository whose
suite halves its throughput at a known commit: what the history site's end-to-end test
publishes, and what `publish_screenshot.py` photographs.

The suite's workload (`workloads.paced_rounds`) sets its own throughput, so the step is there
whatever the machine's load, and each run has three rounds for the chart's spread.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import SIMULATED_RUN, start_llem_pytest

SUITE = """from workloads import paced_rounds

RATE = {rate}


def test_speed(llem):
    llem.run(paced_rounds, params={{"rate": RATE}}, rounds=3)
"""
#: Throughput before and after the step, in tokens/s.
RATE_BEFORE, RATE_AFTER = 400.0, 200.0
#: The case the suite's one test is, by its key.
CASE_KEY = "test_speed.py::test_speed"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=bench@example.com", "-c", "user.name=Bench", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def build_history(root: Path, commits: int, step_at: int) -> tuple[Path, list[str]]:
    """A state dir under `root` with one real run per commit (throughput halved from commit
    `step_at`, 0-based), and the commits' hashes, oldest first."""
    repo, state_dir = root / "bench", root / "state"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "pytest.ini").write_text("[pytest]\n")
    hashes = []
    for index in range(commits):
        rate = RATE_BEFORE if index < step_at else RATE_AFTER
        (repo / "test_speed.py").write_text(SUITE.format(rate=rate))
        git(repo, "add", "pytest.ini", "test_speed.py")
        git(repo, "commit", "-q", "--allow-empty", "-m", f"throughput {rate}")
        hashes.append(git(repo, "rev-parse", "HEAD"))
        proc = start_llem_pytest(repo, state_dir, "--llem-energy=none", *SIMULATED_RUN)
        output, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"pytest --llem at commit {index} exited {proc.returncode}:\n{output[-3000:]}")
    return state_dir, hashes
