from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from sample_reports import make_result

from pytest_llem.errors import InvalidStateTransitionError
from pytest_llem.store.database import open_store
from pytest_llem.store.experiments import (
    ExperimentPhase,
    ExperimentState,
    join_bulky,
    sanitise_experiment_id,
    save_states,
    split_bulky,
)
from pytest_llem.store.state import StateManager

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def a_state(experiment_id: str = "exp", **fields) -> ExperimentState:
    values = dict(
        experiment_id=experiment_id,
        config_hash="h" * 16,
        started_at=AT,
        last_updated=AT,
        owner_pid=1,
        hostname="here",
    )
    return ExperimentState(**{**values, **fields})


def test_a_state_moves_forward_one_phase_at_a_time_without_a_store():
    state = a_state()
    state.advance(ExperimentPhase.MEASURING)
    state.advance(ExperimentPhase.DONE)
    assert state.phase is ExperimentPhase.DONE and not state.active
    assert state.last_updated > AT
    with pytest.raises(InvalidStateTransitionError, match="done -> measuring is not allowed"):
        state.advance(ExperimentPhase.MEASURING)


def test_a_failed_state_keeps_its_phase_and_moves_no_further():
    state = a_state()
    state.mark_failed("boom")
    assert (state.phase, state.failed, state.error_message, state.active) == (
        ExperimentPhase.INITIALISING,
        True,
        "boom",
        False,
    )
    with pytest.raises(InvalidStateTransitionError, match="has failed"):
        state.advance(ExperimentPhase.MEASURING)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("test_x[bs=4]", "test_x_bs_4_"),
        ("..", None),
        ("a" * 500, "a" * 128),
    ],
)
def test_ids_are_sanitised(raw, clean):
    if clean is None:
        with pytest.raises(ValueError, match="no usable characters"):
            sanitise_experiment_id(raw)
    else:
        assert sanitise_experiment_id(raw) == clean


def test_bulky_lists_are_split_out_and_joined_back_where_they_were():
    document = {
        "energy": [{"timeline": [[0.0, 1.0], [0.1, 2.0]], "energy_j": 3.0}],
        "batch_latencies_s": [0.5, 0.6],
        "first_token_latencies_s": [],  # empty: nothing to keep apart
    }
    light, parts = split_bulky(document)
    assert light == {
        "energy": [{"timeline": [], "energy_j": 3.0}],
        "batch_latencies_s": [],
        "first_token_latencies_s": [],
    }
    assert sorted(path for path, _ in parts) == [["batch_latencies_s"], ["energy", 0, "timeline"]]
    assert join_bulky(light, parts) == document


def test_save_states_writes_states_a_state_manager_reads_back(state_dir: Path, store_url):
    done = a_state("done-exp", phase=ExperimentPhase.DONE, result=make_result([1.0, 1.2]))
    save_states(open_store(store_url), [a_state("waiting"), done])
    states = StateManager(state_dir, store_url)
    assert states.load("waiting") == a_state("waiting")
    assert states.load("done-exp").result == done.result


def test_save_states_refuses_the_whole_batch_for_one_unsanitised_id(store_url):
    store = open_store(store_url)
    with pytest.raises(ValueError, match="not sanitised"):
        # As a state copied with another id is: model_copy validates nothing.
        save_states(store, [a_state("good"), a_state("good").model_copy(update={"experiment_id": "../bad"})])
    assert StateManager(Path("unused"), store=store).all_states() == []


def test_a_servers_metrics_are_kept_apart_like_a_power_timeline_and_read_back_whole(state_dir: Path):
    """No column of their own (no migration): the series rides in the result, compressed apart."""
    from serving_loads import serving_result

    from pytest_llem.results import ServerMetrics, ServerMetricsSample

    result = serving_result(4)
    samples = [ServerMetricsSample(t_s=0.5 * i, requests_running=2.0, kv_cache_usage=0.5) for i in range(50)]
    result.serving.server_metrics = ServerMetrics(exposed=True, scrapes=50, timeline=samples, preemptions=1.0)
    light, parts = split_bulky(result.model_dump(mode="json"))
    assert light["serving"]["server_metrics"]["timeline"] == []
    assert [path for path, _ in parts] == [["serving", "server_metrics", "timeline"]]
    manager = StateManager(state_dir)
    state = a_state("served", phase=ExperimentPhase.DONE, result=result)
    manager.save(state)
    read = manager.load("served")
    assert read.result.serving.server_metrics == result.serving.server_metrics
