"""The process that imports and runs a workload, measured, and writes its outcome.

Started by the supervisor inside the experiment's process group:
`python -m pytest_llem.isolation.worker WORK_DIR`. This is the only pytest-llem process in which
torch, vLLM or CUDA may ever be imported (by the workload or a backend).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from pytest_llem.context import ExperimentContext, RoundRecord, combine_windows
from pytest_llem.energy import quality
from pytest_llem.energy.factory import create_meter
from pytest_llem.errors import ConfigError, LlemError
from pytest_llem.isolation.assembly import assemble_result
from pytest_llem.isolation.files import OUTCOME_FILE, REQUEST_FILE
from pytest_llem.isolation.forkserver import learnable_modules
from pytest_llem.isolation.protocol import (
    ChildOutcome,
    ExperimentRequest,
    WorkloadFailure,
    append_progress,
    write_model,
)
from pytest_llem.isolation.workload import load_workload
from pytest_llem.processes import set_parent_death_signal
from pytest_llem.progress import IMPORTING, TEARING_DOWN, ProgressEvent, phase_durations
from pytest_llem.results import (
    EnergyTotals,
    ExperimentResult,
    LatencyStats,
    RoundResult,
    WindowMeasurement,
    utc_now,
)

# Names the implicit window that covers the whole call when the workload opens none.
_WHOLE_CALL_WINDOW = "llem.whole-call"


def run_request(
    request: ExperimentRequest, on_phase: Callable[[ProgressEvent], None] = lambda event: None
) -> ExperimentResult:
    progress: list[ProgressEvent] = []

    def report(event: ProgressEvent) -> None:
        progress.append(event)
        on_phase(event)

    for entry in reversed(request.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)

    report(ProgressEvent.now(IMPORTING))
    workload = load_workload(request.workload)
    meter = create_meter(request.config.energy, request.meter)
    ctx = ExperimentContext(
        request.config,
        meter,
        on_phase=report,
        state_dir=Path(request.state_dir),
    )
    started_at = utc_now()
    try:
        meter.begin_window(_WHOLE_CALL_WINDOW)
        workload(ctx)
        whole_call = meter.end_window(_WHOLE_CALL_WINDOW)
    finally:
        report(ProgressEvent.now(TEARING_DOWN))
        meter.close()
    measured = combine_windows(ctx.windows) if ctx.windows else whole_call
    if request.config.rounds > 1 and not ctx.round_records:
        raise ConfigError(
            f"rounds={request.config.rounds}, but the workload never iterates ctx.rounds(); "
            "loop `for _ in ctx.rounds():` around its measured windows"
        )
    rounds = [summarise_round(index, record) for index, record in enumerate(ctx.round_records)]
    flags = []
    if ctx.min_window_s > 0:
        lengths = [r.duration_s for r in rounds] or [measured.duration_s]
        flags += quality.assess_length(lengths, ctx.min_window_s)
    # Each round is a sample of its own: one measured while others took the CPU is flagged.
    round_windows = [combine_windows(record.windows) for record in ctx.round_records if record.windows]
    shares = [w.host_other_cpu_share for w in round_windows] or [measured.host_other_cpu_share]
    flags += quality.assess_host_load(shares, request.meter.host_busy_share)
    if flags:
        measured = measured.model_copy(update={"warnings": quality.merge_flags([*measured.warnings, *flags])})
    return assemble_result(
        identity={
            "experiment_id": request.experiment_id,
            "config_hash": request.config_hash,
            "config": request.config.model_dump(mode="json"),
            "workload": request.workload.ref,
        },
        measured=measured,
        window_count=max(1, len(ctx.windows)),
        input_tokens=ctx.input_tokens,
        output_tokens=ctx.output_tokens,
        batch_latencies_s=ctx.batch_latencies_s,
        first_token_latencies_s=ctx.first_token_latencies_s,
        inter_token_latencies_s=ctx.inter_token_latencies_s,
        peak_memory=ctx.peak_memory,
        flops_estimate=ctx.flops_estimate,
        rounds=rounds,
        phase_durations_s=phase_durations(progress, end=time.time()),
        extra=ctx.extra,
        serving=ctx.serving,
        started_at=started_at,
        finished_at=utc_now(),
    )


def summarise_round(index: int, record: RoundRecord) -> RoundResult:
    measured = combine_windows(record.windows) if record.windows else WindowMeasurement(duration_s=0.0)
    return RoundResult.of(
        index,
        measured.duration_s,
        record.output_tokens,
        record.input_tokens,
        EnergyTotals.of(measured.devices),
        LatencyStats.of(record.batch_latencies_s),
    ).model_copy(update={"serving": record.serving})


def format_workload_traceback(exc: BaseException) -> str:
    """The traceback without pytest-llem's own frames: the user's code is what matters."""
    package_dir = str(Path(__file__).parent)
    tb = traceback.TracebackException.from_exception(exc)
    user_frames = [f for f in tb.stack if not f.filename.startswith(package_dir)]
    if user_frames:
        tb.stack = traceback.StackSummary.from_list(user_frames)
    return "".join(tb.format())


def main(work_dir: Path) -> int:
    supervisor_pid = int(os.environ["PYTEST_LLEM_SUPERVISOR_PID"])
    # If the supervisor dies, nothing is left to tear this process down in time: die with it.
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != supervisor_pid:
        return 1
    request = ExperimentRequest.model_validate_json((work_dir / REQUEST_FILE).read_bytes())

    def on_phase(event: ProgressEvent) -> None:
        try:
            append_progress(work_dir, event)
        except OSError:
            pass  # progress is for display only: it never fails the experiment

    try:
        result = run_request(request, on_phase)
    except BaseException as exc:  # the workload's failure is data for the parent, not a crash
        failure = WorkloadFailure(
            exception_type=type(exc).__name__,
            message=str(exc),
            traceback=format_workload_traceback(exc),
            plain=isinstance(exc, LlemError),
        )
        write_model(work_dir, OUTCOME_FILE, ChildOutcome(failure=failure, imported_modules=_imported()))
        return 1
    write_model(work_dir, OUTCOME_FILE, ChildOutcome(result=result, imported_modules=_imported()))
    return 0


def _imported() -> list[str]:
    """What this process imported that a preloaded interpreter could import ahead for the next
    experiment (read at the end: a workload imports inside its function too)."""
    return learnable_modules(sys.modules, sys.path)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
