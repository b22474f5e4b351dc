"""The results store (SQLite or PostgreSQL) and the files of runs under the state dir.

Used by the pytest process and the `pytest-llem` command; never the experiment's child
(the pytest process writes every state). Never imports `isolation`, `backends` or `config`.

- `urls`: which store (option, environment, ini; the scheme checked), no database library;
- `database`: the connection, schema version and migration, transactions, its errors;
- `schema`, `migrations/`: the tables and their versioned Alembic migrations;
- `opening`: the one way states, runs and the command open the store;
- `experiments`: an experiment's state, its phases and the rows it is kept as;
- `state`: `StateManager`, states in the store (transitions, resume, stale cleanup);
- `report`: `SessionReport`, its file and its `runs` row, merging reports;
- `history`: saved runs (names, finding, baselines, retention);
- `legacy`: state dirs of earlier releases' JSON files, imported;
- `cases`: the case key, a test's identity across runs;
- `names`: identifiers from outside checked, run folders, printable text.
"""
