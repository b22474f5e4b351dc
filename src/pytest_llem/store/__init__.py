"""Everything under the state dir: atomic writes, redaction, experiment states, session
reports, saved runs and the machine identity that groups them.

Used by the pytest process and the `pytest-llem` command (the worker writes its own state
transitions through `state`). Never imports `isolation`.
"""
