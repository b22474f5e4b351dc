"""The experiment's isolated child group, and how the pytest process launches and ends it.

Runs in two processes, and each module's docstring says which:

- the pytest process: `launchers` (the `Launcher` the session calls: local or Slurm, chosen
  in `make_launcher`), `launcher` (spawn, wait, timeout, teardown of the group), `outcome`
  (the phases and the outcome read back, locally and from a Slurm job), `slurm` (each
  experiment a Slurm job), `signals`
  (Ctrl-C and SIGTERM held until cleanup is done), `repeats` (one experiment in N fresh
  groups), `workload` (naming a workload so a fresh interpreter can import it);
- the child group: `supervisor` (group leader, dies with pytest, kills the group),
  `worker` (imports and runs the workload inside measured windows);
- both: `files` (the names of the files exchanged), `protocol` (their validated models),
  `assembly` (measured parts into one result).

Kept empty on import: the supervisor starts from here without pydantic.
"""
