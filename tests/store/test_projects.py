"""The project a run is saved under: the suite's folder (its config file's, not pytest's
rootdir), known by git's remote where there is one (the same for every clone, wherever it
lies), else by its path; names and remotes as users write them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_llem.store.projects import PROJECT_DIGEST_LENGTH, normalised_remote, project_folder, project_key

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def checkout(path: Path, remote: str | None) -> Path:
    """A git work tree at `path` (made with its parents), with `remote` as origin when given."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    if remote is not None:
        git(path, "remote", "add", "origin", remote)
    return path


def digest_part(key: str) -> str:
    name, _, digest = key.rpartition("-")
    assert name and re.fullmatch(f"[0-9a-f]{{{PROJECT_DIGEST_LENGTH}}}", digest), key
    return digest


def test_the_suites_folder_is_its_config_files_else_the_nearest_with_a_project_file(tmp_path):
    suite = tmp_path / "suite"
    (suite / "tests" / "deep").mkdir(parents=True)
    (suite / "tox.ini").write_text("[tox]\n")
    (suite / "tests" / "pytest.ini").write_text("[pytest]\n")
    bare = tmp_path / "bare"
    bare.mkdir()
    # The config file pytest read wins, wherever pytest was started.
    assert project_folder(suite / "tests" / "pytest.ini", bare) == suite / "tests"
    # pytest read none (no config, or the rootdir moved off it): found from where it started.
    assert project_folder(None, suite / "tests" / "deep") == suite / "tests"
    assert project_folder(None, suite) == suite
    assert project_folder(None, bare) == bare


def test_outside_git_the_folder_names_the_project_and_its_path_tells_same_named_ones_apart(tmp_path):
    first, second = tmp_path / "a" / "suite", tmp_path / "b" / "suite"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    assert project_key(first).startswith("suite-") and project_key(second).startswith("suite-")
    assert digest_part(project_key(first)) != digest_part(project_key(second))
    assert project_key(first) == project_key(first / "." / ".." / "suite")  # the resolved path


def test_every_clone_of_a_remote_is_one_project_wherever_it_lies_and_however_it_was_cloned(tmp_path):
    laptop = checkout(tmp_path / "home" / "me" / "work", "git@github.com:acme/llm-bench.git")
    runner = checkout(tmp_path / "runner" / "_work" / "llm-bench", "https://github.com/acme/llm-bench")
    token = checkout(tmp_path / "ci" / "x1", "https://ci:s3cr3t-t0ken@GitHub.com:443/acme/llm-bench.git/")
    fork = checkout(tmp_path / "fork", "git@github.com:someone/llm-bench.git")
    key = project_key(laptop)
    assert key.startswith("llm-bench-")  # the repository's name, not the checkout folder's
    assert project_key(runner) == key and project_key(token) == key
    assert "s3cr3t" not in project_key(token)
    assert project_key(fork).startswith("llm-bench-") and project_key(fork) != key


def test_a_suite_in_a_folder_of_a_repository_is_its_own_project_named_after_the_folder(tmp_path):
    repo = checkout(tmp_path / "mono", "https://example.org/acme/mono.git")
    (repo / "serving").mkdir()
    (repo / "offline").mkdir()
    moved = checkout(tmp_path / "elsewhere" / "mono-copy", "git@example.org:acme/mono.git")
    (moved / "serving").mkdir()
    assert project_key(repo).startswith("mono-")
    assert project_key(repo / "serving").startswith("serving-")
    assert len({project_key(repo), project_key(repo / "serving"), project_key(repo / "offline")}) == 3
    assert project_key(moved / "serving") == project_key(repo / "serving")


def test_a_repository_without_a_remote_is_known_by_its_path(tmp_path):
    local = checkout(tmp_path / "scratch", None)
    assert project_key(local) == project_key(tmp_path / "scratch")
    assert project_key(local).startswith("scratch-")
    other = checkout(tmp_path / "other" / "scratch", None)
    assert project_key(other) != project_key(local)


def test_origin_is_preferred_and_another_remote_serves_when_there_is_none(tmp_path):
    both = checkout(tmp_path / "both", "https://example.org/acme/first.git")
    git(both, "remote", "add", "another", "https://example.org/acme/second.git")
    only_upstream = checkout(tmp_path / "upstream-only", None)
    git(only_upstream, "remote", "add", "upstream", "https://example.org/acme/second.git")
    assert project_key(both).startswith("first-")
    assert project_key(only_upstream).startswith("second-")


def test_odd_characters_of_a_folder_name_never_reach_the_key(tmp_path):
    odd = tmp_path / "my bench\tsuite ✓"
    odd.mkdir()
    name = project_key(odd).rpartition("-")[0]
    assert name == "my-bench-suite"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("git@github.com:acme/repo.git", "github.com/acme/repo"),
        ("https://github.com/acme/repo", "github.com/acme/repo"),
        ("https://user:pass@GITHUB.com/acme/repo.git/", "github.com/acme/repo"),
        ("ssh://git@github.com:22/acme/repo.git", "github.com/acme/repo"),
        ("file:///srv/git/repo.git", "/srv/git/repo"),
        ("/srv/git/repo.git", "/srv/git/repo"),
        ("../repo", "../repo"),
    ],
)
def test_a_remote_is_read_the_same_whichever_way_it_was_written(url, expected):
    assert normalised_remote(url) == expected
