"""Regression gating: metrics, statistics, limits, comparisons with a baseline, budgets, and
the steps in a history of runs.

Plain computation over reports, in the pytest process and the `pytest-llem` command; what a
config's fields are checked against (`limits`, `metrics`, `stats`) is read by `config`'s
validation too, wherever a config is built. Never imports `isolation`.

- `metrics`: the compared metrics, their units and directions;
- `stats`: round statistics, the Mann-Whitney U test, `sample_summary`;
- `limits`: `METRIC:LIMIT` parsing;
- `work`: equal work on both sides of a comparison;
- `compare`: a run against its baseline (machine differences from `fingerprints`);
- `budgets`: absolute limits that need no baseline;
- `gate`: what fails a session, for the plugin and `pytest-llem compare` alike;
- `changepoints`: confirmed steps in a case's per-run figures (`pytest-llem publish`).
"""
