"""Secrets from the outside: real `pytest --llem` runs whose workloads are careless with them.

Every value below must stay out of every place a run writes or prints: the terminal (and the
timestamped progress lines a CI log keeps), JUnit XML, the HTML page, and every file of the
state dir, the results store included. What a child is handed is checked too: the store's
credentials never reach it.
"""

from __future__ import annotations

import contextlib
import html
import json
import sqlite3
import zlib
from pathlib import Path

import pytest

#: Values that only exist to be looked for: none may appear anywhere a run writes.
SECRETS = {
    "MY_TOKEN": "tok-phase-7731",
    "GH_PAT": "ghp_patvalue8812",
    "DB_PASS": "dbpass-5521",
    "BACKSLASH_TOKEN": 'bs\\se"cret42',
}
#: A URL whose password is a secret, whatever the variable's name.
DATABASE_URL = "postgresql://u:s3cr3tpw9@db.example.org/db"
URL_PASSWORD = "s3cr3tpw9"
#: Secrets that were never in the environment: a password in a URL, a private key's body.
INLINE_URL_PASSWORD = "inline9pw"
PRIVATE_KEY_BODY = "MIIBOGUSKEYBODY0123456789"

CARELESS_SUITE = f"""
import os, sys
import pytest

PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\\n{PRIVATE_KEY_BODY}\\n-----END RSA PRIVATE KEY-----"

def careful(ctx):
    ctx.phase("load " + os.environ["MY_TOKEN"])
    print("plain https://user@example.org/x and https://example.org:8080/a", flush=True)
    print("cache redis://:{INLINE_URL_PASSWORD}@cache:6379/0", flush=True)
    with ctx.window():
        pass
    ctx.record(output_tokens=1)

def careless(ctx):
    ctx.phase("load " + os.environ["MY_TOKEN"])
    url = os.environ["DATABASE_URL"]
    shown = {{name: os.environ[name] for name in ("GH_PAT", "BACKSLASH_TOKEN")}}
    print("connecting to", url, "as", os.environ["GH_PAT"], file=sys.stderr, flush=True)
    raise RuntimeError(
        f"cannot connect to {{url}} with {{os.environ['DB_PASS']}} or {{os.environ['GH_PAT']}}; "
        f"key {{os.environ['BACKSLASH_TOKEN']!r}} refused; settings {{shown!r}}; "
        f"{{PRIVATE_KEY}}"
    )

def test_careful(llem):
    llem.run(careful)

def test_careless(llem):
    llem.run(careless)
"""


def forms(value: str) -> set[str]:
    """How a value shows in the files a run writes: as it is, JSON, HTML and XML, repr()."""
    return {
        value,
        json.dumps(value)[1:-1],
        html.escape(value),
        html.escape(value, quote=False),
        repr(value)[1:-1],
    }


def everything_written(result: pytest.RunResult, tmp_path: Path) -> dict[str, str]:
    """Every output as text; the SQLite store's rows too, its compressed parts decompressed."""
    outputs = {"stdout": result.stdout.str(), "stderr": result.stderr.str()}
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.name.startswith("test_"):
            outputs[str(path.relative_to(tmp_path))] = path.read_bytes().decode("utf-8", errors="replace")
        if path.suffix == ".sqlite3":
            outputs[f"{path.name} rows"] = store_rows(path)
    return outputs


def store_rows(path: Path) -> str:
    texts = []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        with contextlib.suppress(zlib.error):
                            value = zlib.decompress(value)
                        value = value.decode("utf-8", errors="replace")
                    texts.append(str(value))
    return "\n".join(texts)


def test_no_secret_reaches_the_progress_lines_the_report_the_store_html_or_junit(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", DATABASE_URL)
    pytester.makepyfile(test_careless=CARELESS_SUITE)
    state_dir, junit, page = tmp_path / "state", tmp_path / "junit.xml", tmp_path / "report.html"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-v",
        "--llem",
        "--llem-energy=none",
        f"--llem-state-dir={state_dir}",
        f"--junitxml={junit}",
        "-o",
        "junit_logging=all",
        f"--llem-html={page}",
    )
    result.assert_outcomes(passed=1, failed=1)
    outputs = everything_written(result, tmp_path)
    # The store was searched, its compressed reports included.
    assert "load ***" in outputs["llem.sqlite3 rows"], list(outputs)
    looked_for = [*SECRETS.values(), URL_PASSWORD, INLINE_URL_PASSWORD, PRIVATE_KEY_BODY]
    every_form = {form for value in looked_for for form in forms(value)}
    leaks = sorted(
        f"{form!r} in {where}" for form in every_form for where, text in outputs.items() if form in text
    )
    assert not leaks, "leaked: " + "; ".join(leaks)
    terminal = outputs["stdout"] + outputs["stderr"]
    # The phase is still shown on its timestamped line, the secret in it blanked out.
    assert "test_careless.py::test_careful: load ***" in terminal
    # A URL keeps all but its password; one without a password is left as it was (what a
    # passing test printed is in JUnit's captured output).
    assert "postgresql://u:***@db.example.org/db" in terminal
    assert "redis://:***@cache:6379/0" in outputs["junit.xml"]
    assert "plain https://user@example.org/x and https://example.org:8080/a" in outputs["junit.xml"]
    (report_file,) = state_dir.glob("runs/*/report.json")
    entries = {e["nodeid"]: e for e in json.loads(report_file.read_text())["experiments"]}
    assert "load ***" in entries["test_careless.py::test_careful"]["result"]["phase_durations_s"]


def test_a_secret_in_the_env_field_is_refused_without_its_value_anywhere(
    pytester: pytest.Pytester, tmp_path: Path
):
    value = "tok-in-config-4417"
    pytester.makepyfile(
        test_env=f"""
        import pytest

        def work(ctx):
            ctx.record(output_tokens=1)

        def test_env(llem):
            llem.run(work, env={{"MY_TOKEN": "{value}", "PLAIN": "ok"}})
        """
    )
    state_dir, junit, page = tmp_path / "state", tmp_path / "junit.xml", tmp_path / "report.html"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--llem",
        "--llem-energy=none",
        f"--llem-state-dir={state_dir}",
        f"--junitxml={junit}",
        f"--llem-html={page}",
    )
    result.assert_outcomes(failed=1)
    # The refusal names the field and the key, and says what to do.
    result.stdout.fnmatch_lines(["*env: MY_TOKEN looks like a secret*"])
    outputs = everything_written(result, tmp_path)
    leaks = [where for where, text in outputs.items() if value in text]
    assert not leaks, leaks


def test_the_child_never_sees_the_stores_credentials(pytester: pytest.Pytester, tmp_path: Path, monkeypatch):
    state_dir, seen = tmp_path / "state", tmp_path / "child_env.json"
    store = tmp_path / "elsewhere.sqlite3"
    monkeypatch.setenv("PYTEST_LLEM_STORE", f"sqlite:///{store}")
    monkeypatch.setenv("PGPASSWORD", "pg-store-pw-3391")
    monkeypatch.setenv("UNRELATED_SETTING", "kept")
    pytester.makepyfile(
        test_env=f"""
        import json, os

        def work(ctx):
            with open({str(seen)!r}, "w") as f:
                json.dump(sorted(os.environ), f)
            ctx.record(output_tokens=1)

        def test_env(llem):
            llem.run(work)
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--llem", "--llem-energy=none", f"--llem-state-dir={state_dir}"
    )
    result.assert_outcomes(passed=1)
    assert store.exists()  # the store the variable named was the one used
    names = json.loads(seen.read_text())
    assert "UNRELATED_SETTING" in names
    assert "PGPASSWORD" not in names and "PYTEST_LLEM_STORE" not in names
