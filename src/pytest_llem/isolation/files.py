"""The names of the files that pytest and an experiment's child group exchange.

One private work folder per experiment holds them. Plain constants, no imports: the
supervisor reads them without loading pydantic.
"""

from __future__ import annotations

#: The experiment the parent asks for (`protocol.ExperimentRequest`), written before the start.
REQUEST_FILE = "request.json"
#: The worker's result or failure (`protocol.ChildOutcome`), written atomically at its end.
OUTCOME_FILE = "outcome.json"
#: How the worker process ended (`protocol.WorkerStatus`), written by the supervisor.
WORKER_STATUS_FILE = "worker-status.json"
#: The phases the worker reports as it goes (`progress.ProgressEvent`), one JSON line each,
#: appended; the parent's wait loop reads what is new at each poll.
PROGRESS_FILE = "progress.jsonl"
