"""The experiment's isolated child group, and how the pytest process launches and ends it.

Runs in several processes, and each module's docstring says which:

- the pytest process: `launchers` (the `Launcher` the session calls: local or Slurm, chosen
  in `make_launcher`), `launcher` (spawn, wait, timeout, teardown of the group), `outcome`
  (the phases and the outcome read back, locally and from a Slurm job), `preload` (the
  preloaded interpreter's pytest side), `relay` (the child's output, secrets blanked),
  `leases` (GPU leases on the host), `signals` (Ctrl-C and SIGTERM held until cleanup is
  done), `repeats` (one experiment in N fresh groups), `slurm` (each experiment a Slurm job);
- the preloaded interpreter: `forkserver` (imports once, forks each group);
- a Slurm job: `slurm_job` (the job's side, on the compute node);
- the child group: `supervisor` (group leader, dies with pytest, kills the group),
  `worker` (imports and runs the workload inside measured windows);
- both: `workload` (naming a workload so a fresh interpreter can import it), `files` (the
  names of the files exchanged), `protocol` (their validated models), `assembly` (measured
  parts into one result).

Kept empty on import: the supervisor starts from here without pydantic.
"""
