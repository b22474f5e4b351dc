"""What a run's figures were measured on: the machine, the model and the source commit, and how
two machines differ.

Runs in the pytest process and the `pytest-llem` command (a GPU's `GpuInfo` also in a Slurm
job, through the GPU leases). GPUs are read through NVML, never CUDA; library versions and a
model's files from disk, never by importing them.

- `machine`: `GpuInfo` (one GPU: NVML index and UUID for leases, model and settings for the
  fingerprint) and `MachineInfo` (the machine id and its fingerprint);
- `model`: a local model's fingerprint from its own files;
- `differences`: what differs between two runs' machines and software, and which
  differences are hardware and refuse a gate;
- `source`: the git commit, branch and dirty state of the suite's checkout, read once at a
  session's start through `git_output` (the one way the project calls git).
"""
