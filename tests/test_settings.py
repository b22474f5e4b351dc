"""Settings from options and ini keys: every bad value is one line naming where it came from."""

from __future__ import annotations

import pytest

from pytest_llem.errors import ConfigError
from pytest_llem.settings import resolve_settings


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("timeout_s", "nan", r"--llem-timeout: expected a finite number of seconds, got 'nan'"),
        ("timeout_s", "inf", r"--llem-timeout: expected a finite number of seconds, got 'inf'"),
        ("cooldown_s", "-inf", r"--llem-cooldown: expected a finite number of seconds"),
        ("cooldown_temp_c", "nan", r"--llem-cooldown-temp: must be a finite number of degrees"),
        ("save_name", "a\0b", r"--llem-save: a NUL character cannot be part of a value; remove it"),
        ("redact_env", ["A=B"], r"--llem-redact-env: 'A=B' is not an environment variable name"),
        ("timeout_s", "0", r"^--llem-timeout: must be more than 0 seconds, got '0'$"),
        ("project", "  ", r"^--llem-project: empty; give a value or leave the option out$"),
        (
            "project",
            "a\x1b[31mb",
            r"^--llem-project '.*' cannot name a project: give a non-blank name without control",
        ),
        ("project", "(legacy)", r"^--llem-project '\(legacy\)' cannot name a project"),
        ("rounds", "1.5", r"^--llem-rounds: expected a whole number, got '1.5'$"),
        ("slurm_gpus_per_node", "-1", r"^--llem-slurm-gpus-per-node: must be at least 0, got '-1'$"),
        (
            "sample_interval_s",
            "0.001",
            r"^--llem-sample-interval: must be at least 0.01 seconds, got '0.001'$",
        ),
        (
            "host_busy_share",
            "25",
            r"^--llem-host-busy-share: expected a share from 0 to 1 \(e.g. 0.1\) or a percentage \(10%\), "
            r"got '25'$",
        ),
        ("host_busy_share", "nan", r"^--llem-host-busy-share: expected a share from 0 to 1"),
        ("host_busy_share", "lots", r"^--llem-host-busy-share: expected a share from 0 to 1"),
    ],
)
def test_a_value_that_cannot_work_is_refused_naming_the_option(name: str, raw: object, expected: str):
    with pytest.raises(ConfigError, match=expected):
        resolve_settings(cli={name: raw}, ini={}, environ={})


def test_names_to_redact_come_from_the_option_or_one_per_ini_line():
    assert resolve_settings(cli={"redact_env": ["DSN"]}, ini={}, environ={}).redact_env == ("DSN",)
    settings = resolve_settings(cli={}, ini={"redact_env": ["DSN", "URL"]}, environ={})
    assert settings.redact_env == ("DSN", "URL")


def test_the_project_comes_from_the_option_before_the_ini_key_and_is_none_by_default():
    assert resolve_settings(cli={}, ini={}, environ={}).project is None
    assert resolve_settings(cli={}, ini={"project": " acme/bench "}, environ={}).project == "acme/bench"
    assert (
        resolve_settings(cli={"project": "mine"}, ini={"project": "acme/bench"}, environ={}).project == "mine"
    )


def test_the_host_busy_limit_is_a_share_or_a_percentage_and_reaches_the_meter():
    from pytest_llem.energy import DEFAULT_HOST_BUSY_SHARE

    default = resolve_settings(cli={}, ini={}, environ={})
    assert default.meter_options().host_busy_share == DEFAULT_HOST_BUSY_SHARE
    assert resolve_settings(cli={"host_busy_share": "0.25"}, ini={}, environ={}).host_busy_share == 0.25
    from_ini = resolve_settings(cli={}, ini={"host_busy_share": "40%"}, environ={})
    assert from_ini.host_busy_share == pytest.approx(0.4)
    assert from_ini.meter_options().host_busy_share == pytest.approx(0.4)
    # The command line wins over the ini file.
    both = resolve_settings(cli={"host_busy_share": "1"}, ini={"host_busy_share": "0.2"}, environ={})
    assert both.host_busy_share == 1.0
