"""What the installed plugin costs a pytest run that does not use it, measured side by side.

    python benchmarks/plugin_cost.py [--runs N] [--no-bytecode]

pytest loads every installed plugin at start-up, so an environment with pytest-llem pays
for it in every `pytest` run, `--llem` or not. This runs `pytest -q --co` on two small
suites in fresh interpreters, alternating runs with the plugin (as installed) and without
it (`-p no:llem`), and prints the median wall time, CPU time and peak resident memory of
each, and the differences. The target: at most 20 ms added to either suite with `--llem` off.

- `plain`: 40 ordinary tests in 4 files, no benchmarks: what most runs of a project are;
- `marked`: the same plus 20 `@pytest.mark.llem` cases (one parametrised test); without
  `--llem` they are only skipped: their markers are validated when benchmarks run, so the
  config model (pydantic) is not loaded.

Python modules run from bytecode, as installed: pip compiles a package to bytecode when it
installs it, so the runs keep theirs (in the temporary folder, `PYTHONPYCACHEPREFIX`), written
by the warm-up runs. `--no-bytecode` measures a checkout run with `PYTHONDONTWRITEBYTECODE`
instead, where every run also compiles the plugin's modules from source (some milliseconds).

Absolute times depend on the machine; read the differences.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN_TEST_FILE = "\n".join(f"def test_{i}():\n    assert {i} + 1 > {i}\n" for i in range(10))
MARKED_FILE = """
import pytest

def generate(ctx):
    with ctx.window():
        pass
    ctx.record(output_tokens=1)

@pytest.mark.llem(model="tiny", max_new_tokens=4, rounds=3, timeout=60)
@pytest.mark.parametrize("batch_size", range(1, 21))
def test_generate(llem, batch_size):
    llem.run(generate, batch_size=batch_size)
"""


def write_suite(folder: Path, marked: bool) -> Path:
    folder.mkdir(parents=True)
    (folder / "pytest.ini").write_text("[pytest]\n")  # its own rootdir: no project config
    for index in range(4):
        (folder / f"test_plain_{index}.py").write_text(PLAIN_TEST_FILE)
    if marked:
        (folder / "test_bench.py").write_text(MARKED_FILE)
    return folder


def one_run(suite: Path, plugin_on: bool, environ: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak resident KiB of one `pytest -q --co` in a fresh
    interpreter. CPU time (user + system) moves less than wall time on a busy machine."""
    command = [sys.executable, "-m", "pytest", "-q", "--co", "-p", "no:cacheprovider"]
    if not plugin_on:
        command += ["-p", "no:llem"]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=suite, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(
            f"pytest failed in {suite}: {process.stderr.read().decode() if process.stderr else ''}"
        )
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs per suite and side (default 21)")
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="compile every module from source in every run (PYTHONDONTWRITEBYTECODE), as a checkout may",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        environ = dict(os.environ)
        if args.no_bytecode:
            environ["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            environ.pop("PYTHONDONTWRITEBYTECODE", None)
            environ["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "bytecode")
        suites = {
            "plain": write_suite(Path(tmp) / "plain", marked=False),
            "marked": write_suite(Path(tmp) / "marked", marked=True),
        }
        print(
            f"{'suite':11} {'wall with':>10} {'without':>9} {'added':>9}   {'CPU with':>9} {'without':>9} "
            f"{'added':>9}   {'RSS with':>9} {'without':>8} {'added':>8}"
        )
        for name, suite in suites.items():
            one_run(suite, True, environ), one_run(suite, False, environ)  # warm the caches first
            on: list[tuple[float, float, int]] = []
            off: list[tuple[float, float, int]] = []
            for _ in range(args.runs):  # alternate, so drift in the machine hits both sides
                on.append(one_run(suite, True, environ))
                off.append(one_run(suite, False, environ))
            row = [name]
            for column, unit, scale in ((0, "ms", 1000), (1, "ms", 1000), (2, "MB", 1 / 1024)):
                plugin = statistics.median(run[column] for run in on) * scale
                without = statistics.median(run[column] for run in off) * scale
                row.append(f"{plugin:8.1f}{unit} {without:7.1f}{unit} {plugin - without:+7.1f}{unit}")
            print(f"{row[0]:11} " + "   ".join(row[1:]))
        bytecode = "compiled from source in each run" if args.no_bytecode else "bytecode kept, as installed"
        print(f"medians of {args.runs} alternating runs each ({bytecode}); target: each suite added <= 20 ms")


if __name__ == "__main__":
    main()
