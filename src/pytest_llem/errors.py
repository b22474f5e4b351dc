"""The exceptions pytest-llem raises, each meant to become one clear line for the user."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_llem.results import ExperimentResult

#: The exit code of a session stopped by SIGINT or SIGTERM (128 + SIGINT, as shells use).
INTERRUPTED_EXIT_CODE = 130


class LlemError(Exception):
    """Base of every error pytest-llem reports to the user as a single line."""


class ConfigError(LlemError):
    """An experiment's configuration is invalid; the message names the field and the fix."""


class WorkloadError(LlemError):
    """The workload cannot be shipped to or imported in the isolated child."""


class InvalidRecord(LlemError, ValueError):
    """A figure the workload recorded (`ctx.record*`) cannot be a measurement; the message
    names the field and what it takes."""


class ExperimentFailed(LlemError):
    """The experiment ran but did not produce a result (crash, timeout, workload exception)."""


class ExperimentInterrupted(LlemError):
    """The session was interrupted by a signal while an experiment ran; it has been torn down."""

    def __init__(self, signal_name: str, result: ExperimentResult | None = None) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name
        #: Set when the experiment had already finished as the signal arrived.
        self.result = result


class InvalidStateTransitionError(LlemError):
    """An experiment state was asked to move between phases in an order the machine forbids."""


class MeterUnavailable(LlemError):
    """The requested energy meter cannot run here; the message says why."""


class MeasurementRefused(MeterUnavailable):
    """The devices exist but cannot be measured honestly (a MIG slice); never silently skipped."""


class StorageError(LlemError, OSError):
    """The state dir could not be written (a full disk, say): the session stops with one line."""
