from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pytest_llem.config import ExperimentConfig, build_config, compute_config_hash
from pytest_llem.errors import ConfigError
from pytest_llem.settings import resolve_settings, setting_named


def test_later_layers_override_earlier_ones():
    config = build_config({"model": "tiny", "batch_size": 2}, {"batch_size": 8})
    assert (config.model, config.batch_size) == ("tiny", 8)


@pytest.mark.parametrize(
    ("setting", "field", "value", "sentence"),
    [
        ("timeout_s", "timeout", "0", "must be more than 0 seconds"),
        ("min_window_s", "min_window_s", "-1", "must be at least 0 seconds"),
        ("rounds", "rounds", "0", "must be at least 1"),
        ("rounds", "rounds", "2.5", "expected a whole number"),
        (
            "energy",
            "energy",
            "nvlm",
            "unknown energy meter; choose one of auto, nvml, rapl, zeus, codecarbon, none",
        ),
        ("repeats", "repeats", "auto:2", "auto:2 allows too few processes for the rank test"),
    ],
)
def test_a_setting_and_the_field_of_the_same_meaning_refuse_a_value_in_the_same_words(
    setting: str, field: str, value: str, sentence: str
):
    with pytest.raises(ConfigError) as from_option:
        resolve_settings(cli={setting: value}, ini={}, environ={})
    with pytest.raises(ConfigError) as from_marker:
        build_config({field: value})
    option_message, marker_message = str(from_option.value), str(from_marker.value)
    assert option_message.startswith(f"{setting_named(setting).option}: {sentence}")
    assert option_message.endswith(f", got {value!r}")
    assert marker_message.startswith(f"{field}: {sentence}")
    assert marker_message.endswith(f" (got {value!r})")


def test_a_shared_value_is_read_alike_from_an_option_and_a_field():
    settings = resolve_settings(
        cli={"timeout_s": "30", "rounds": "3", "energy": "none", "min_window_s": "0", "repeats": "auto"},
        ini={},
        environ={},
    )
    config = build_config(
        {"timeout": "30", "rounds": "3", "energy": "none", "min_window_s": "0", "repeats": "auto"}
    )
    assert (
        settings.timeout_s,
        settings.rounds,
        settings.energy,
        settings.min_window_s,
        settings.repeats,
    ) == (
        config.timeout,
        config.rounds,
        config.energy,
        config.min_window_s,
        config.repeats,
    )


def test_unknown_field_names_the_field_and_the_allowed_ones():
    with pytest.raises(ConfigError) as excinfo:
        build_config({"batch_sise": 4})
    message = str(excinfo.value)
    assert "unknown field 'batch_sise'" in message
    assert "batch_size" in message and "params" in message
    assert "\n" not in message


def test_bad_value_names_field_problem_and_input():
    with pytest.raises(
        ConfigError, match=r"batch_size: Input should be greater than or equal to 1 \(got 0\)"
    ):
        build_config({"batch_size": 0})


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ConfigError, match=r"backend: Input should be 'pytorch' or 'vllm' \(got 'pytroch'\)"):
        build_config({"backend": "pytroch"})


def test_secrets_are_refused_in_config_env():
    with pytest.raises(ConfigError, match=r"env: HF_TOKEN looks like a secret; set it in the environment"):
        build_config({"env": {"HF_TOKEN": "hf_abcdefgh"}})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MY_TOKEN": "tok-value-4417", "PLAIN": "ok"}, "MY_TOKEN"),
        ({"GH_PAT": "ghp_value4417", "DB_PASS": "pass-value-4417"}, "DB_PASS, GH_PAT"),
        ({"DB_URL": "postgresql://u:pw-value-4417@h/db"}, "DB_URL"),  # any name: the URL's password
        ({"COUNT": 4417}, "COUNT"),  # not a string: still not repeated
    ],
)
def test_a_refused_env_names_the_field_and_the_key_never_the_value(env: dict, named: str):
    with pytest.raises(ConfigError) as caught:
        build_config({"env": env})
    message = str(caught.value)
    assert message.startswith(f"env.{named}:" if named == "COUNT" else f"env: {named} looks like a secret")
    assert "4417" not in message


def test_an_llm_setting_with_token_in_its_name_is_no_secret():
    config = build_config({"env": {"TOKENIZERS_PARALLELISM": "false", "MAX_NEW_TOKENS": "1024"}})
    assert config.env["TOKENIZERS_PARALLELISM"] == "false"


def test_params_must_be_json():
    with pytest.raises(ConfigError, match="params must hold JSON values"):
        build_config({"params": {"fn": object()}})


def test_hash_is_16_hex_and_stable_across_key_order_and_float_noise():
    a = build_config({"params": {"temperature": 0.7, "top_p": 1.0, "nested": {"b": 1, "a": 2}}})
    b = build_config({"params": {"nested": {"a": 2, "b": 1}, "top_p": 1, "temperature": 0.7000000000000001}})
    hash_a = compute_config_hash(a, "bench:generate")
    assert hash_a == compute_config_hash(b, "bench:generate")
    assert len(hash_a) == 16 and int(hash_a, 16) >= 0


def test_hash_ignores_fields_that_do_not_change_the_measurement():
    base = compute_config_hash(build_config({"model": "m"}), "bench:generate")
    assert base == compute_config_hash(
        build_config({"model": "m", "timeout": 30, "experiment_id": "x"}), "bench:generate"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other"},
        {"batch_size": 2},
        {"params": {"prompt_set": "b"}},
        {"gpus": [1]},
        {"env": {"OMP_NUM_THREADS": "1"}},
    ],
)
def test_hash_changes_with_what_is_measured(change):
    base = compute_config_hash(build_config({"model": "m"}), "bench:generate")
    assert base != compute_config_hash(build_config({"model": "m", **change}), "bench:generate")


def test_hash_includes_the_workload_identity():
    config = ExperimentConfig()
    assert compute_config_hash(config, "bench:generate") != compute_config_hash(config, "bench:other")


HASH_IN_A_FRESH_PROCESS = """
import sys
from pytest_llem.config import build_config, compute_config_hash
config = build_config({"params": {"a": 0.1 + 0.2, "b": 1e300, "nested": {"y": 1, "x": 2}}})
print(compute_config_hash(config, "bench:generate"))
"""


def test_the_hash_is_the_same_in_every_process():
    # --llem-resume finds a result by hash in a later session: the hash must not depend on the
    # process (str hashing is salted per interpreter by PYTHONHASHSEED, dict order by insertion).
    config = build_config({"params": {"nested": {"x": 2, "y": 1}, "b": 1e300, "a": 0.3}})
    here = compute_config_hash(config, "bench:generate")
    elsewhere = {
        subprocess.run(
            [sys.executable, "-c", HASH_IN_A_FRESH_PROCESS],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2", "random")
    }
    assert elsewhere == {here}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"env": {"FOO": "a\0b"}}, r"env: a NUL character at \['FOO'\] cannot reach a process; remove it"),
        ({"env": {"F\0O": "a"}}, r"env: a NUL character in key 'F\\x00O' cannot reach a process"),
        ({"model": "tiny\0"}, r"model: a NUL character cannot reach a process"),
        ({"params": {"p": ["ok", "b\0d"]}}, r"params: a NUL character at \['p'\]\[1\]"),
        ({"env": {"A=B": "x"}}, r"env: 'A=B' cannot name a variable \(empty or with '='\); rename it"),
        ({"env": {"": "x"}}, r"env: '' cannot name a variable"),
        ({"params": {"x": float("nan")}}, r"params: params must hold JSON values .*NaN or infinity"),
        ({"params": {"x": [float("inf")]}}, r"params: params must hold JSON values .*NaN or infinity"),
        (
            {"budget": {"energy_per_token_j": float("nan")}},
            r"budget.energy_per_token_j: Input should be a finite",
        ),
        ({"timeout": float("inf")}, r"timeout: expected a finite number of seconds \(got inf\)"),
        ({"temperature": float("nan")}, r"temperature: Input should be a finite number"),
        # request_rate may be inf (all at once), never NaN
        ({"scenario": "serving", "request_rate": float("nan")}, r"request_rate: Input should be greater"),
        ({"experiment_id": ".."}, r"experiment_id: use letters, digits, '.', '_' and '-' only"),
        ({"experiment_id": "a/b"}, r"experiment_id: use letters, digits"),
        ({"experiment_id": "-rf"}, r"experiment_id: use letters, digits"),
    ],
)
def test_input_no_process_can_take_is_refused_with_one_line_naming_the_field(fields, expected):
    with pytest.raises(ConfigError, match=expected) as excinfo:
        build_config(fields)
    assert "\n" not in str(excinfo.value)


def test_usable_experiment_ids_are_kept_as_they_are():
    assert build_config({"experiment_id": "llama-7b_fp16.v2"}).experiment_id == "llama-7b_fp16.v2"


def test_a_label_names_the_experiment_without_changing_what_is_measured():
    base = compute_config_hash(build_config({"model": "m"}), "bench:generate")
    assert compute_config_hash(build_config({"model": "m", "label": "tiny fp16"}), "bench:generate") == base
    with pytest.raises(ConfigError, match="label"):
        build_config({"label": ""})


def test_a_budget_is_an_amount_a_number_or_a_text_with_the_metrics_unit_never_a_percentage():
    assert build_config({"budget": {"energy_per_token_j": "0.05J", "tokens_per_s": 12}}).budget == {
        "energy_per_token_j": 0.05,
        "tokens_per_s": 12,
    }
    with pytest.raises(ConfigError) as raised:
        build_config({"budget": {"energy_per_token_j": "5%"}})
    assert str(raised.value) == (
        "budget {'energy_per_token_j': '5%'}: a budget is an amount in the metric's unit, checked without "
        "a baseline, so it cannot be a percentage; write an amount such as {'energy_per_token_j': 0.05} "
        "(in J), or set a relative limit with compare_fail={'energy_per_token_j': '5%'}"
    )
    with pytest.raises(ConfigError, match=r"limit '5W': energy_per_token_j is measured in 'J', not 'W'"):
        build_config({"budget": {"energy_per_token_j": "5W"}})
