"""Optional heavy dependencies: imported when installed, or an error naming the extra."""

from __future__ import annotations

import json

import pytest

from pytest_llem.errors import ConfigError, MeterUnavailable
from pytest_llem.extras import import_extra


def test_an_installed_module_is_imported():
    assert import_extra("json", "none", "reading JSON") is json


def test_a_missing_module_names_the_pip_command_of_its_extra():
    with pytest.raises(ConfigError) as caught:
        import_extra("no_such_module_anywhere", "torch", "backend='pytorch'")
    message = str(caught.value)
    assert message.startswith("backend='pytorch' needs the 'torch' extra (")
    # Not on PyPI: the hint names installing from where pytest-llem came from, never a bare name.
    assert message.endswith(
        "reinstall pytest-llem with it from where you installed it, e.g. "
        "pip install 'path/to/pytest-llem[torch]' or 'pytest-llem[torch] @ git+URL'"
    )
    assert "no_such_module_anywhere" in message
    with pytest.raises(MeterUnavailable, match=r"^energy='zeus' needs the 'zeus' extra"):
        import_extra("no_such_module_anywhere", "zeus", "energy='zeus'", error=MeterUnavailable)
