"""`pytest-llem bisect` end to end: a real git repository of 16 commits whose benchmark gets
slower at commit 11, a real `pytest --llem` run per commit judged, the runs in the store.

The benchmark's throughput is drawn per process from seeded noise (`workloads.seeded_rate`,
counted from the measured window's own duration), so the answer does not depend on this
machine's load, and the noise is large against one run's difference: a bisection on one run
per commit, no statistics, picks a wrong commit for these draws (shown first).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from helpers import SIMULATED_RUN, SUPPORT_DIR
from sample_reports import EPYC, GPT2, make_entry, make_report, make_result
from workloads import seeded_rate

from pytest_llem.bisection.bisect import BisectRequest, run_bisection
from pytest_llem.bisection.runner import bisect_project
from pytest_llem.bisection.search import Bisection
from pytest_llem.fingerprints.machine import MachineInfo
from pytest_llem.gating.limits import parse_limit
from pytest_llem.store.history import RunHistory
from pytest_llem.store.projects import project_key
from pytest_llem.store.report import write_report

COMMITS = 16
#: The first commit whose benchmark is slower (0 is GOOD, 15 BAD).
PLANTED = 11
RATE, SLOWER, NOISE = 10_000, 0.6, 0.25
SEED = "s7"
LIMIT = "tokens_per_s:15%"
MAX_RUNS = 5

SUITE = """
from workloads import seeded_throughput


def test_throughput(llem):
    llem.run(seeded_throughput, params={"counter": %r, "rate": %r, "noise": %r, "seed": %r})
"""


def commit_rate(number: int) -> float:
    return RATE * (SLOWER if number >= PLANTED else 1)


def commit_seed(number: int) -> str:
    return f"{SEED}:c{number}"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def make_repository(tmp_path: Path) -> tuple[Path, list[str]]:
    """A repository of `COMMITS` commits on branch main, each a benchmark suite; a modified
    tracked file and an untracked one (a dirty tree: bisect never looks at it)."""
    repo, counters = tmp_path / "repo", tmp_path / "counters"
    repo.mkdir()
    counters.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Bisect Test")
    git(repo, "config", "user.email", "bisect@example.invalid")
    shas = []
    for number in range(COMMITS):
        counter = str(counters / f"c{number}.count")
        suite = SUITE % (counter, commit_rate(number), NOISE, commit_seed(number))
        (repo / "test_bench.py").write_text(suite)
        (repo / "NOTES.txt").write_text(f"commit {number}\n")
        git(repo, "add", "-A")
        subject = f"commit {number}: " + ("the decode loop got slower" if number == PLANTED else "tidy up")
        git(repo, "commit", "-q", "-m", subject)
        shas.append(git(repo, "rev-parse", "HEAD"))
    (repo / "NOTES.txt").write_text("an edit not committed\n")
    (repo / "scratch.txt").write_text("untracked\n")
    return repo, shas


def checkout_state(repo: Path) -> tuple[str, str, str, str]:
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        git(repo, "status", "--porcelain"),
        git(repo, "worktree", "list", "--porcelain"),
    )


def bisect_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_LLEM")}
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT_DIR), os.environ.get("PYTHONPATH", "")])
    env["TMPDIR"] = str(tmp_path / "tmp")  # where the worktree's folder goes: checked empty after
    return env


def bisect_command(state_dir: Path, good: str, bad: str, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest_llem.cli",
        "bisect",
        good,
        bad,
        "--state-dir",
        str(state_dir),
        "--fail",
        LIMIT,
        "--max-runs-per-commit",
        str(MAX_RUNS),
        *options,
        "--",
        "test_bench.py",
        "-p",
        "no:cacheprovider",
        "--llem-energy=none",
        *SIMULATED_RUN,
    ]


def run_bisect(tmp_path: Path, repo: Path, good: str, bad: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bisect_command(tmp_path / "state", good, bad),
        cwd=repo,
        env=bisect_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def single_run_bisection() -> int | None:
    """The bisection a script comparing one run per commit with GOOD's one run would make."""
    good = seeded_rate(commit_rate(0), NOISE, commit_seed(0), 0)
    search = Bisection(COMMITS)
    while (index := search.next_index()) is not None:
        rate = seeded_rate(commit_rate(index), NOISE, commit_seed(index), 0)
        search.record(index, "bad" if (good - rate) / good > 0.15 else "good")
    result = search.result()
    return None if result is None else result.first_bad


def test_one_run_per_commit_picks_a_wrong_commit_for_this_noise():
    # One run's difference (a 40% drop) against noise of ±25% a run: GOOD's single run drew
    # high, so a good commit's low draw already looks 15% worse.
    assert single_run_bisection() == 2  # not the planted 11
    draws = [seeded_rate(RATE, NOISE, commit_seed(n), 0) for n in range(PLANTED)]
    assert (max(draws) - min(draws)) / RATE > 0.15  # good commits alone differ beyond the limit


def saved_bisect_runs(state_dir: Path) -> dict[str, int]:
    """Run name -> how many runs of that name the store holds."""
    counts: dict[str, int] = {}
    for run in RunHistory(state_dir).summaries():
        if run.name and run.name.startswith("bisect-"):
            counts[run.name] = counts.get(run.name, 0) + 1
    return counts


def test_bisect_names_the_planted_commit_leaves_the_checkout_alone_and_reuses_its_runs(tmp_path: Path):
    repo, shas = make_repository(tmp_path)
    before = checkout_state(repo)

    done = run_bisect(tmp_path, repo, shas[0], "main")
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"first bad commit: {shas[PLANTED]} commit {PLANTED}: the decode loop got slower"
    assert lines[1].startswith(f"GOOD  {shas[0][:10]} commit 0: tidy up  tokens_per_s ")
    assert lines[2].startswith(f"BAD   {shas[-1][:10]} commit 15: tidy up  tokens_per_s ")
    assert lines[2].endswith(" bad") and " p=" in lines[2]
    assert checkout_state(repo) == before  # HEAD, branch, status and worktrees as they were
    assert list((tmp_path / "tmp").iterdir()) == []  # the worktree's folder is gone

    saved = saved_bisect_runs(tmp_path / "state")
    judged = {line.split()[1] for line in lines[1:-1]}
    assert {f"bisect-{sha}" for sha in shas if sha[:10] in judged} == set(saved)
    assert all(count == 1 for count in saved.values())
    assert f"bisect-{shas[PLANTED]}" in saved and f"bisect-{shas[PLANTED - 1]}" in saved
    counters = sorted(p.name for p in (tmp_path / "counters").iterdir())

    again = run_bisect(tmp_path, repo, shas[0], "main")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[-1] == lines[-1]
    assert all(line.endswith("(saved run reused)") for line in again.stdout.splitlines()[1:-1])
    assert saved_bisect_runs(tmp_path / "state") == saved  # nothing run, nothing saved
    assert sorted(p.name for p in (tmp_path / "counters").iterdir()) == counters
    assert checkout_state(repo) == before


def bisect_processes(state_dir: Path) -> list[psutil.Process]:
    """The benchmark runs of the bisection that keeps its runs in `state_dir` (not another
    test's, which may run beside it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if any(arg.startswith("--llem-save=bisect-") for arg in args) and any(
            str(state_dir) in arg for arg in args
        ):
            found.append(proc)
    return found


def test_ctrl_c_stops_the_run_removes_the_worktree_and_exits_130(tmp_path: Path):
    repo, shas = make_repository(tmp_path)
    before = checkout_state(repo)
    proc = subprocess.Popen(
        bisect_command(tmp_path / "state", shas[0], "main"),
        cwd=repo,
        env=bisect_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    first_process = tmp_path / "counters" / "c0.count"
    deadline = time.monotonic() + 120
    while not first_process.exists():  # GOOD's benchmark is measuring
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    worktrees = git(repo, "worktree", "list", "--porcelain")
    assert worktrees.count("worktree ") == 2 and str(tmp_path / "tmp") in worktrees
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "pytest-llem: bisect stopped by SIGINT; its worktree was removed" in err
    assert checkout_state(repo) == before
    assert list((tmp_path / "tmp").iterdir()) == []
    assert bisect_processes(tmp_path / "state") == []


# --- judged from saved runs alone: the answers that are not a first bad commit --------------


def saved_run_repository(tmp_path: Path, runs_j: list[list[float]]) -> tuple[Path, list[str]]:
    """A repository of one commit per entry of `runs_j`, each with a saved bisect run whose
    case measured those energies (3 processes of 3 allowed: an undecided run is final)."""
    repo = tmp_path / "saved-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Bisect Test")
    git(repo, "config", "user.email", "bisect@example.invalid")
    project = bisect_project(project_key(repo), ["test_bench.py"])
    shas = []
    for number, energies in enumerate(runs_j):
        (repo / "file.txt").write_text(str(number))
        git(repo, "add", "file.txt")
        git(repo, "commit", "-q", "-m", f"commit {number}")
        sha = git(repo, "rev-parse", "HEAD")
        shas.append(sha)
        result = make_result(energies, extra={"repeats": 3, "repeats_max": 3})
        report = make_report(
            f"run-{number}",
            [make_entry(GPT2, result)],
            name=f"bisect-{sha}",
            machine=MachineInfo.current(),
            days_after_t0=number,
        )
        report.project = project
        write_report(report, tmp_path / "state")
    return repo, shas


def bisect_saved(tmp_path: Path, repo: Path, good: str) -> tuple[int, list[str], list[str]]:
    out, err = io.StringIO(), io.StringIO()
    request = BisectRequest(
        good=good,
        bad="main",
        pytest_args=("test_bench.py",),
        limit=parse_limit("energy_j:5%"),
        limit_spec="energy_j:5%",
        alpha=0.05,
        max_runs=3,
        cwd=repo,
        state_dir=tmp_path / "state",
        store_url=None,
    )
    code = run_bisection(request, lambda: RunHistory(tmp_path / "state"), out, err)
    return code, out.getvalue().splitlines(), err.getvalue().splitlines()


GOOD_J, BAD_J, UNCLEAR_J = [5.0, 5.05, 4.95], [6.0, 6.1, 6.05], [4.9, 6.0, 6.1]


def test_an_undecided_commit_before_the_first_bad_leaves_the_range_and_exits_1(tmp_path: Path):
    repo, shas = saved_run_repository(tmp_path, [GOOD_J, UNCLEAR_J, BAD_J, BAD_J])
    code, lines, err = bisect_saved(tmp_path, repo, shas[0])
    assert (code, err) == (1, [])
    assert lines[-3:] == [
        "undecided commits block the search: the first bad commit is one of these 2:",
        f"  {shas[1][:10]} commit 1 (undecided)",
        f"  {shas[2][:10]} commit 2 (bad)",
    ]
    assert lines[3].startswith(
        f"   1  {shas[1][:10]} commit 1  energy_j 6.00 [5.45, 6.05] J (n=3) +20.0% p=0.35 undecided"
    )
    assert "undecided (beyond the limit but not significant" in lines[3]
    assert all(line.endswith("(saved run reused)") for line in lines[1:-3])


def test_bad_no_worse_than_good_is_said_and_exits_1(tmp_path: Path):
    repo, shas = saved_run_repository(tmp_path, [GOOD_J, GOOD_J, [5.01, 5.02, 4.99]])
    code, lines, _ = bisect_saved(tmp_path, repo, shas[0])
    assert code == 1
    assert (
        lines[-1]
        == f"BAD {shas[2][:10]} is not worse than GOOD {shas[0][:10]} beyond the limit: nothing to bisect"
    )


def test_an_undecided_bad_is_said_and_exits_1(tmp_path: Path):
    repo, shas = saved_run_repository(tmp_path, [GOOD_J, UNCLEAR_J])
    code, lines, _ = bisect_saved(tmp_path, repo, shas[0])
    assert code == 1
    assert (
        lines[-1]
        == f"BAD {shas[1][:10]} is undecided against GOOD {shas[0][:10]}: the regression is not shown"
    )


def test_a_commit_whose_benchmark_breaks_is_undecided_with_pytests_last_lines(tmp_path: Path):
    repo, shas = saved_run_repository(tmp_path, [GOOD_J])
    (repo / "test_bench.py").write_text("raise RuntimeError('the benchmark broke at import')\n")
    git(repo, "add", "test_bench.py")
    git(repo, "commit", "-q", "-m", "break the benchmark")
    code, lines, err = bisect_saved(tmp_path, repo, shas[0])
    assert code == 1
    # pytest stops at a collection error as if interrupted: the plugin's exit code then is 130.
    assert lines[2] == (
        f"BAD   {git(repo, 'rev-parse', 'HEAD')[:10]} break the benchmark  energy_j - undecided "
        "(its benchmark measured nothing: pytest exited 130)"
    )
    assert (
        lines[3]
        == f"BAD {lines[2].split()[1]} is undecided against GOOD {shas[0][:10]}: the regression is not shown"
    )
    assert err[0].endswith(", its benchmark measured nothing: pytest exited 130:")
    assert any("RuntimeError: the benchmark broke at import" in line for line in err[1:])
    assert all(line.startswith("  | ") for line in err[1:])
    assert git(repo, "worktree", "list").count("\n") == 0


SCHEDULED = """
from workloads import scheduled_throughput


def test_throughput(llem):
    llem.run(scheduled_throughput, params={"counter": %r, "rates": %r})
"""


def test_an_unclear_commit_gets_more_processes_then_stays_undecided_and_the_range_is_the_answer(
    tmp_path: Path,
):
    # Commit 1's processes alternate between far slower and far faster than GOOD's: beyond the
    # limit by its median, never significant. Its run adds processes up to the maximum (4).
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Bisect Test")
    git(repo, "config", "user.email", "bisect@example.invalid")
    schedules = [[10_000], [5_000, 15_000, 5_000, 5_000], [5_000]]
    shas = []
    for number, rates in enumerate(schedules):
        suite = SCHEDULED % (str(tmp_path / f"c{number}.count"), rates)
        (repo / "test_bench.py").write_text(suite)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"commit {number}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    command = bisect_command(tmp_path / "state", shas[0], "main")
    command[command.index("--max-runs-per-commit") + 1] = "4"
    done = subprocess.run(
        command, cwd=repo, env=bisect_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    print(done.stdout, done.stderr)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[1].startswith(f"GOOD  {shas[0][:10]} commit 0  tokens_per_s ") and "(n=4) baseline" in lines[1]
    )
    assert lines[2].startswith(f"BAD   {shas[2][:10]} commit 2  tokens_per_s ") and lines[2].endswith(" bad")
    assert " (n=3) " in lines[2]  # decided at the fewest processes
    assert lines[3].startswith(f"   1  {shas[1][:10]} commit 1  tokens_per_s ") and " (n=4) -" in lines[3]
    assert " undecided (beyond the limit but not significant (p=" in lines[3]
    assert (tmp_path / "c1.count").read_text() == "4"  # the maximum, then no more
    assert lines[4:] == [
        "undecided commits block the search: the first bad commit is one of these 2:",
        f"  {shas[1][:10]} commit 1 (undecided)",
        f"  {shas[2][:10]} commit 2 (bad)",
    ]


def test_a_run_another_machine_saved_is_not_reused(tmp_path: Path):
    repo, shas = saved_run_repository(tmp_path, [GOOD_J, BAD_J])
    history = RunHistory(tmp_path / "state")
    good = history.find(f"bisect-{shas[0]}")
    good.machine = EPYC  # as if another host had saved GOOD's run to a shared store
    history.save(good)
    code, lines, err = bisect_saved(tmp_path, repo, shas[0])
    # So GOOD is run here: these commits hold no benchmark, so there is no baseline.
    assert code == 1
    assert lines[1].startswith(
        f"GOOD  {shas[0][:10]} commit 0  its benchmark measured nothing: pytest exited "
    )
    assert lines[1].endswith(": no baseline to judge the other commits by")
    assert err[0].startswith(f"pytest-llem: bisect: at {shas[0][:10]}, its benchmark measured nothing")
