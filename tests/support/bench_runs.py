"""One experiment run on a started benchmark session, for the backends' tests."""

from __future__ import annotations

from pytest_llem.session import BenchmarkSession


def run(bench: BenchmarkSession, **fields):
    return bench.run_experiment("tests/test_backends.py::case", None, [fields])
