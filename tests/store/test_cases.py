"""Case keys: the same case keeps its key whatever pytest picked as the rootdir."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pytest_llem.store.cases import case_key, project_anchor


def test_the_key_is_relative_to_the_git_root_above_the_test_file(tmp_path: Path):
    repo = tmp_path / "repo"
    (repo / "bench" / "sub").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "bench" / "sub" / "pyproject.toml").write_text("")  # a nearer project file loses to git
    test_file = repo / "bench" / "sub" / "test_x.py"
    assert project_anchor(test_file) == repo.resolve()
    for nodeid, started_in in [
        ("test_x.py::test_a[1]", repo / "bench" / "sub"),
        ("bench/sub/test_x.py::test_a[1]", repo),
        ("repo/bench/sub/test_x.py::test_a[1]", tmp_path),
    ]:
        assert case_key(nodeid, test_file, started_in) == "bench/sub/test_x.py::test_a[1]"


def test_without_git_the_nearest_project_file_anchors_the_key(tmp_path: Path):
    (tmp_path / "proj" / "tests").mkdir(parents=True)
    (tmp_path / "proj" / "pytest.ini").write_text("[pytest]\n")
    test_file = tmp_path / "proj" / "tests" / "test_x.py"
    assert case_key("x/test_x.py::TestA::test_b", test_file, tmp_path) == "tests/test_x.py::TestA::test_b"


def test_with_no_anchor_the_folder_pytest_started_in_is_used_else_the_node_id(tmp_path: Path, monkeypatch):
    # Wherever the temp folder lives (inside a repository, say), this case has no anchor.
    monkeypatch.setattr("pytest_llem.store.cases.project_anchor", lambda test_file: None)
    (tmp_path / "suite").mkdir()
    test_file = tmp_path / "suite" / "test_x.py"
    assert case_key("suite/test_x.py::t", test_file, tmp_path / "suite") == "test_x.py::t"
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    assert case_key("suite/test_x.py::t", test_file, elsewhere) == "suite/test_x.py::t"
