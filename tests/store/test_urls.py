from __future__ import annotations

import pytest

from pytest_llem.errors import ConfigError
from pytest_llem.store.urls import STORE_ENV, checked_store_url, store_url_from

SQLITE = "sqlite:////tmp/llem.sqlite3"
POSTGRES = "postgresql://llem@db:5432/llem"


@pytest.mark.parametrize("url", [SQLITE, POSTGRES, "postgresql+psycopg://llem@db/llem"])
def test_urls_of_the_stores_it_opens_pass(url):
    assert checked_store_url(url, "--llem-store") == url


@pytest.mark.parametrize("url", ["mysql://db/llem", "/tmp/llem.sqlite3", "sqlite:/relative"])
def test_other_urls_are_one_line_naming_where_they_came_from(url):
    with pytest.raises(ConfigError, match=r"^--store: a store URL starts with sqlite:/// or postgresql://"):
        checked_store_url(url, "--store")


def test_the_option_wins_then_the_environment_then_the_ini_file():
    environ = {STORE_ENV: POSTGRES}
    assert store_url_from(SQLITE, "--store", environ, ini="sqlite:////ini.sqlite3") == SQLITE
    assert store_url_from(None, "--store", environ, ini="sqlite:////ini.sqlite3") == POSTGRES
    assert store_url_from("", "--store", {}, ini="sqlite:////ini.sqlite3") == "sqlite:////ini.sqlite3"


def test_none_given_means_the_state_dirs_own_store():
    assert store_url_from(None, "--store", {STORE_ENV: ""}) is None


def test_a_url_from_the_environment_is_checked_and_named_by_its_variable():
    with pytest.raises(ConfigError, match=f"^{STORE_ENV}: a store URL"):
        store_url_from(None, "--store", {STORE_ENV: "mysql://db/llem"})


def test_the_environment_is_read_when_none_is_given(monkeypatch):
    monkeypatch.setenv(STORE_ENV, POSTGRES)
    assert store_url_from(None, "--store") == POSTGRES
