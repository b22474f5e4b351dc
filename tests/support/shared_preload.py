"""One preloaded interpreter shared by every `bench` session of a test process.

Each test's `bench` is a new `BenchmarkSession`; left to itself, each would start its own
preloaded interpreter and, under `--llem-preload=auto`, learn torch and transformers again
from its first child (some 6 CPU-seconds per PyTorch test: the child imports them, then the
interpreter does). The product already shares one interpreter between the sessions of
several processes (an xdist controller's, for its workers): this starts one the same way,
once per test process, so what one test's children imported stays imported for the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pytest_llem.config import ExperimentConfig
from pytest_llem.isolation.launcher import build_experiment_env
from pytest_llem.isolation.preload import Preloader, auto_modules


@contextmanager
def shared_preloaded_interpreter() -> Iterator[str | None]:
    """A preloaded interpreter started as an xdist controller starts the one its workers share
    (`LocalLauncher.share_preloaded`): the base modules under `auto`, this process's
    environment without a case's fields, listening on a socket in a private folder. Yields its
    address for `LocalLauncher.attach_preloaded`, or None where it cannot start (each session
    then starts its own). Closed on leaving; a killed process's interpreter dies with it (its
    parent-death signal), with every group still below it."""
    preloader = Preloader(lambda: auto_modules(()))
    try:
        yield preloader.share(build_experiment_env(ExperimentConfig(), experiment_id=""))
    finally:
        preloader.close()
