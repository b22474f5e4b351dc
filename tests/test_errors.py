"""The exceptions that become one-line messages: their family, what else they are, and that
importing them costs nothing (every layer, the base and the child's leader included, imports them)."""

from __future__ import annotations

import inspect
import json
import signal
import subprocess
import sys

import pytest
from sample_reports import make_result

from pytest_llem import errors
from pytest_llem.errors import (
    INTERRUPTED_EXIT_CODE,
    ExperimentInterrupted,
    InvalidRecord,
    LlemError,
    MeasurementRefused,
    MeterUnavailable,
    StorageError,
)


def _error_classes() -> list[type[BaseException]]:
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
        and value is not LlemError  # the family itself
    ]


@pytest.mark.parametrize("error", _error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_the_module_defines_is_one_the_plugin_reports_as_a_line(error: type[BaseException]):
    # Callers catch LlemError to print one line instead of a traceback: an error outside that
    # family would escape as a traceback.
    assert issubclass(error, LlemError)


def test_the_errors_that_are_also_builtin_kinds_are_caught_by_code_that_expects_those():
    # A record check inside pydantic validation must be a ValueError; a full disk an OSError
    # (writers of the state dir catch OSError).
    with pytest.raises(ValueError):
        raise InvalidRecord("output_tokens must be >= 0")
    with pytest.raises(OSError):
        raise StorageError("no space left on device")
    with pytest.raises(MeterUnavailable):
        raise MeasurementRefused("MIG slices cannot be measured")


def test_an_interruption_names_its_signal_and_keeps_a_finished_result():
    bare = ExperimentInterrupted("SIGTERM")
    assert str(bare) == "interrupted by SIGTERM"
    assert bare.signal_name == "SIGTERM" and bare.result is None

    result = make_result([10.0])
    finished = ExperimentInterrupted("SIGINT", result)
    assert str(finished) == "interrupted by SIGINT"
    assert finished.result is result


def test_the_interrupted_exit_code_is_the_shells_code_for_sigint():
    assert INTERRUPTED_EXIT_CODE == 128 + signal.SIGINT


def test_importing_the_errors_loads_no_other_module_of_the_package():
    # A fresh interpreter: this process has long imported everything.
    code = (
        "import json, sys; import pytest_llem.errors; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pytest_llem') or m == 'pydantic')))"
    )
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert loaded == ["pytest_llem", "pytest_llem.errors"]
