"""Learnt preloading: a suite whose workloads import torch and transformers inside the function.

    python benchmarks/preload_learning.py [--cases N] [--runs N]

Many custom workloads import their heavy libraries inside the workload function, so that
pytest's own process stays light; no marker names a backend, so `--llem-preload=auto` cannot
know them before the first case runs. It learns them from the first case's worker (the
modules it imported), so the second case onward forks from an interpreter that has them.

Runs the same suite of N cases (default 12: one tiny GPT-2 loaded through `from_pretrained`,
then 4 sequences of 16 new tokens generated greedily, inside the measured window) under
`--llem-preload=none` and `--llem-preload=auto`, alternating, in one run, and prints each
run's wall time, the ratio none / auto (target: at least 2.5x), the token counts (which must
be identical), which cases started with torch already imported, and the load average, since
the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llem_runs import pytest_llem_command

from pytest_llem.testing import build_tiny_model

METHODS = ("none", "auto")
MODEL_ENV = "PRELOAD_LEARNING_MODEL_DIR"

SUITE = """
import os
import pytest

MODEL_DIR = os.environ["{model_env}"]


def generate(ctx):
    import torch  # inside the function: pytest's own process never imports it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()
    input_ids = torch.tensor([tokenizer.encode("the quick brown fox")] * 4)
    with ctx.window(), torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=16,
            min_new_tokens=16,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id or 0,
        )
    ctx.record(
        output_tokens=int(output[:, input_ids.shape[1]:].numel()),
        input_tokens=int(input_ids.numel()),
    )


@pytest.mark.parametrize("case", range({cases}))
def test_case(llem, case):
    llem.run(generate)
"""


def run_suite(suite_dir: Path, preload: str, model_dir: Path) -> tuple[float, list[dict]]:
    """One `pytest --llem` run of the suite: its wall time and its results."""
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        command = pytest_llem_command(
            f"{tmp}/state",
            f"--llem-json={report_path}",
            f"--llem-preload={preload}",
            str(suite_dir),
        )
        env = dict(os.environ, **{MODEL_ENV: str(model_dir)})
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=suite_dir, env=env, capture_output=True, text=True)
        wall_s = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"--llem-preload={preload}: the suite failed:\n{proc.stdout[-3000:]}")
        results = [e["result"] for e in json.loads(report_path.read_text())["experiments"] if e.get("result")]
    return wall_s, results


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12, help="cases in the suite")
    parser.add_argument("--runs", type=int, default=1, help="runs of the suite per start method, alternating")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load_average()} (start)")
    walls: dict[str, list[float]] = {m: [] for m in METHODS}
    tokens: dict[str, set[int]] = {m: set() for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(
            Path(tmp) / "tiny-gpt2", arch="gpt2", seed=0, hidden_size=256, num_layers=4
        )
        suite_dir = Path(tmp) / "suite"
        suite_dir.mkdir()
        (suite_dir / "test_function_level_imports.py").write_text(
            SUITE.format(model_env=MODEL_ENV, cases=args.cases)
        )
        print(f"{args.cases} cases importing torch and transformers inside the workload function")
        print(f"   {'preload':8} {'wall':>8} {'tokens':>7} {'cases with torch preloaded':>27}")
        # Alternating, so that a change of the machine's load weighs on both methods alike.
        for index in range(args.runs):
            for preload in METHODS if index % 2 == 0 else METHODS[::-1]:
                wall_s, results = run_suite(suite_dir, preload, model_dir)
                walls[preload].append(wall_s)
                tokens[preload].add(sum(r["output_tokens"] or 0 for r in results))
                with_torch = sum("torch" in (r.get("preloaded_modules") or []) for r in results)
                print(
                    f"   {preload:8} {wall_s:7.1f}s {sum(r['output_tokens'] or 0 for r in results):7d}"
                    f" {with_torch:>21d}/{len(results)}"
                )
    none_s, auto_s = statistics.median(walls["none"]), statistics.median(walls["auto"])
    same = "identical" if tokens["none"] == tokens["auto"] and len(tokens["none"]) == 1 else "DIFFERENT"
    print(f"   none {none_s:.1f} s, auto {auto_s:.1f} s (medians): auto is {none_s / auto_s:.2f}x faster")
    print(f"   output tokens: {same} ({', '.join(f'{m} {sorted(tokens[m])}' for m in METHODS)})")
    print(f"load average {load_average()} (end)")


if __name__ == "__main__":
    main()
