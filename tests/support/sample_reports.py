"""Sample session reports built directly from the result models, for tests of what reads
reports (comparisons, exports, the command line, the HTML page)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pytest_llem.fingerprints.machine import GpuInfo, MachineInfo
from pytest_llem.fingerprints.source import SHORT_COMMIT_LENGTH
from pytest_llem.gating.stats import round_statistics
from pytest_llem.results import ExperimentResult, LatencyStats, QualityWarning, RoundResult
from pytest_llem.store.report import ReportEntry, SessionReport

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
H100 = MachineInfo(id="h100x1", gpus=[GpuInfo(name="NVIDIA H100", power_limit_w=700.0)], driver="550.54")
EPYC = MachineInfo(id="epyc", cpu_model="AMD EPYC 7763")
GPT2 = "tests/test_bench.py::test_gpt2[bs4]"
OPT = "tests/test_bench.py::test_opt"
CONFIG = {"model": "tiny-gpt2", "backend": "pytorch", "batch_size": 4, "precision": "fp16"}
NOT_MEASURED = QualityWarning(code="energy_not_measured", message="no energy meter could read this host")
SHORT_WINDOW = QualityWarning(code="short_window", message="measured window lasted 2.00 s, under 5 s")


def make_result(
    round_energies_j: list[float], tokens_per_round: int = 10, round_s: float = 2.0, **overrides
) -> ExperimentResult:
    """A result of one round per energy, with the statistics the worker would compute over them."""
    rounds = [
        RoundResult(
            index=i,
            duration_s=round_s,
            output_tokens=tokens_per_round,
            energy_j=energy,
            batch_latency_p50_s=round_s / 4,
        )
        for i, energy in enumerate(round_energies_j)
    ]
    fields = dict(
        experiment_id="e",
        config_hash="c0ffee0123456789",
        config=CONFIG,
        duration_s=round_s * len(rounds),
        window_count=len(rounds),
        output_tokens=tokens_per_round * len(rounds),
        energy_j=sum(round_energies_j),
        energy_scope=["gpu"],
        energy_source="nvml-counter",
        batch_latency=LatencyStats.of([round_s / 4] * len(rounds)),
        rounds=rounds if len(rounds) > 1 else [],
        statistics=round_statistics(rounds),
        started_at=T0,
        finished_at=T0,
    )
    return ExperimentResult(**(fields | overrides))


def make_entry(nodeid: str, result: ExperimentResult | None, **fields) -> ReportEntry:
    config = result.config if result else CONFIG
    config_hash = result.config_hash if result else "badc0ffee0123456"
    return ReportEntry(
        nodeid=nodeid, config=config, config_hash=config_hash, result=result, failed=result is None, **fields
    )


def make_report(
    run_id: str,
    entries: list[ReportEntry],
    name: str | None = None,
    machine: MachineInfo | None = H100,
    days_after_t0: float = 0,
) -> SessionReport:
    started = T0 + timedelta(days=days_after_t0)
    return SessionReport(
        run_id=run_id,
        name=name,
        machine=machine,
        started_at=started,
        finished_at=started + timedelta(minutes=5),
        outcome="passed",
        plugin_version="0.1.0",
        experiments=entries,
    )


def entry(nodeid: str, energies: list[float], **config):
    """An entry of one result per energy, with `config` over the sample config."""
    result = make_result(energies)
    result.config = {**CONFIG, **config}
    return make_entry(nodeid, result)


def sample_commit_label(index: int) -> str:
    """The short commit of `sample_history`'s `index`-th run, as tables and charts show it."""
    return f"c{index:0{SHORT_COMMIT_LENGTH - 1}d}"


def sample_history(
    round_energies_j: list[list[float]],
    machines: list[MachineInfo] | None = None,
    flagged: frozenset[int] = frozenset(),
    nodeid: str = GPT2,
    project: str | None = "bench",
) -> list[SessionReport]:
    """One run a day per list of round energies, oldest first, each at its own commit
    (`c0000000...`, `c0000001...`), on `machines[i]` (default: the H100); runs whose index is
    in `flagged` carry a short-window flag."""
    from pytest_llem.fingerprints.source import SourceInfo

    reports = []
    for index, energies in enumerate(round_energies_j):
        result = make_result(energies, warnings=[SHORT_WINDOW] if index in flagged else [])
        report = make_report(
            f"run-{index:03d}",
            [make_entry(nodeid, result)],
            machine=machines[index] if machines else H100,
            days_after_t0=index,
        )
        report.project = project
        commit = sample_commit_label(index).ljust(40, "0")
        report.source = SourceInfo(commit=commit, branch="main", dirty=False)
        reports.append(report)
    return reports
