"""The backends package's registry: built-in workloads by name, and where a server's log lies."""

from __future__ import annotations

from pathlib import Path

from pytest_llem.backends import BACKEND_WORKLOADS, server_log_path


def test_a_servers_log_lies_under_the_state_dir_named_by_its_experiment():
    assert server_log_path(Path("/state"), "abc123") == Path("/state/servers/abc123.log")


def test_each_builtin_backend_names_an_importable_function_reference():
    for name, ref in BACKEND_WORKLOADS.items():
        module, _, function = ref.partition(":")
        assert module.startswith("pytest_llem.backends."), name
        assert function.isidentifier(), name
