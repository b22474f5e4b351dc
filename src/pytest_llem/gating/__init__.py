"""Regression gating: metrics, statistics, limits, comparisons with a baseline, budgets.

Plain computation over reports; runs in the pytest process and in the `pytest-llem`
command, never in an experiment's child group. Never imports `isolation`.
"""
