"""What pytest reads back from an experiment's work folder: the phases as they come, then
the result or the one message that says why there is none."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sample_reports import make_result

from pytest_llem.errors import ExperimentFailed
from pytest_llem.isolation.files import OUTCOME_FILE, WORKER_STATUS_FILE
from pytest_llem.isolation.outcome import ProgressRelay, describe_exit, read_outcome
from pytest_llem.isolation.protocol import (
    ChildOutcome,
    WorkerStatus,
    WorkloadFailure,
    append_progress,
    write_model,
)
from pytest_llem.progress import ProgressEvent


def test_the_relay_passes_on_each_polls_new_phases_and_remembers_the_last(tmp_path: Path):
    seen: list[list[str]] = []
    relay = ProgressRelay(tmp_path, lambda events: seen.append([e.phase for e in events]))
    relay.poll()  # nothing written yet: an empty list, still passed on
    append_progress(tmp_path, ProgressEvent.now("loading"))
    append_progress(tmp_path, ProgressEvent.now("measuring", round=1, rounds=3))
    relay.poll()
    relay.poll()
    assert seen == [[], ["loading", "measuring"], []]
    assert relay.last_phase == "measuring round 1/3"
    assert relay.during() == "last phase: measuring round 1/3; "


def test_a_relay_without_a_listener_still_tracks_the_last_phase(tmp_path: Path):
    relay = ProgressRelay(tmp_path, None)
    assert relay.during() == ""
    append_progress(tmp_path, ProgressEvent.now("warmup"))
    relay.poll()
    assert relay.last_phase == "warmup"


def test_the_outcome_files_result_is_returned(tmp_path: Path):
    result = make_result([10.0])
    write_model(tmp_path, OUTCOME_FILE, ChildOutcome(result=result))
    assert read_outcome(tmp_path, 0) == result


def test_a_plain_failure_is_its_message_and_a_workloads_exception_keeps_its_traceback(tmp_path: Path):
    plain = WorkloadFailure(exception_type="MeterUnavailable", message="no meter", traceback="", plain=True)
    write_model(tmp_path, OUTCOME_FILE, ChildOutcome(failure=plain))
    with pytest.raises(ExperimentFailed, match=r"^no meter$"):
        read_outcome(tmp_path, 0)
    raised = WorkloadFailure(exception_type="ValueError", message="bad", traceback="Traceback: line 1")
    write_model(tmp_path, OUTCOME_FILE, ChildOutcome(failure=raised))
    with pytest.raises(ExperimentFailed) as failed:
        read_outcome(tmp_path, 0)
    assert str(failed.value) == "workload raised ValueError: bad\nTraceback: line 1"


def test_without_an_outcome_the_workers_exit_is_described_with_its_last_phase(tmp_path: Path):
    write_model(tmp_path, WORKER_STATUS_FILE, WorkerStatus(returncode=-signal.SIGKILL))
    with pytest.raises(ExperimentFailed) as failed:
        read_outcome(tmp_path, 0, last_phase="loading")
    assert str(failed.value) == (
        "child was killed by SIGKILL (the out-of-memory killer sends SIGKILL; see dmesg) before "
        "reporting a result (last phase: loading)"
    )


def test_without_any_file_the_supervisors_exit_is_described(tmp_path: Path):
    with pytest.raises(ExperimentFailed, match=r"^child exited with code 3 before reporting a result$"):
        read_outcome(tmp_path, 3)
    assert describe_exit(-signal.SIGTERM) == "child was killed by SIGTERM before reporting a result"
