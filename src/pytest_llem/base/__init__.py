"""The base layer: what every process and every other package may use, and which knows none of them.

Runs everywhere: the pytest process, the `pytest-llem` command, the experiment's child group
(supervisor and worker) and a Slurm job. Its modules import nothing of pytest-llem but
`errors` and each other, and no pydantic or database library, so the supervisor and the
worker load them at no cost.

- `atomic`: crash-safe file writes, private folders, the state dir's disk reserve, reading
  regular files only;
- `redaction`: secrets, the home folder and the project root kept out of every output;
- `digests`: canonical JSON, so equal values give equal digests.
"""
