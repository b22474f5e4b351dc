"""Secret values under every secret-looking name, in every form they take in text."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pytest_llem.store.redaction import (
    EXTRA_NAMES_ENV,
    redact_json,
    redact_json_document,
    redact_secrets,
    redact_text,
    set_extra_secret_names,
)


@pytest.fixture(autouse=True)
def no_listed_names() -> Iterator[None]:
    yield
    set_extra_secret_names(())


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_KEY",
        "WANDB_KEY",
        "SSH_PRIVATE_KEY",
        "AWS_ACCESS_KEY_ID",
        "API_KEY",
        "HF_TOKEN",
        "github_token",
        "MY_SECRET_THING",
        "DB_PASSWORD",
        "MYSQL_PASSWD",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ],
)
def test_every_secret_looking_name_is_redacted(name: str):
    assert redact_secrets("value s3cr3t-v4lue here", environ={name: "s3cr3t-v4lue"}) == "value *** here"


@pytest.mark.parametrize("name", ["MONKEY", "KEYBOARD_LAYOUT", "PATH", "LANG"])
def test_ordinary_names_are_left_alone(name: str):
    assert redact_secrets("value s3cr3t-v4lue", environ={name: "s3cr3t-v4lue"}) == "value s3cr3t-v4lue"


def test_json_escaped_and_url_encoded_forms_are_redacted_too():
    password = 'p"a\\ss w/rd&é'
    environ = {"DB_PASSWORD": password}
    escaped = json.dumps({"error": f"login {password} failed"})
    assert password not in json.loads(redact_secrets(escaped, environ=environ).replace("***", ""))
    assert redact_secrets(escaped, environ=environ) == '{"error": "login *** failed"}'
    url = "postgres://me:p%22a%5Css%20w%2Frd%26%C3%A9@db/x?pw=p%22a%5Css+w%2Frd%26%C3%A9"
    assert redact_secrets(url, environ=environ) == "postgres://me:***@db/x?pw=***"


def test_values_of_four_characters_are_redacted_and_shorter_ones_are_not():
    assert redact_secrets("pin 1a2b", environ={"PIN_KEY": "1a2b"}) == "pin ***"
    assert redact_secrets("pin 1a2", environ={"PIN_KEY": "1a2"}) == "pin 1a2"


def test_names_the_user_lists_are_secret_here_and_in_the_child():
    environ = {"DATABASE_DSN": "postgres://u:pw@h/db", "OTHER": "plainvalue"}
    text = "dsn postgres://u:pw@h/db other plainvalue"
    assert redact_secrets(text, environ=environ) == text
    set_extra_secret_names(["DATABASE_DSN"])
    assert redact_secrets(text, environ=environ) == "dsn *** other plainvalue"
    set_extra_secret_names(())  # the child learns the names from its environment
    child = {**environ, EXTRA_NAMES_ENV: "DATABASE_DSN,OTHER"}
    assert redact_secrets(text, environ=child) == "dsn *** other ***"


def test_json_documents_keep_their_structure_whatever_the_secret():
    document = json.dumps({"ok": True, "none": None, "error": "token true-ish", "n": 1234})
    out = redact_json(document, environ={"FLAG_TOKEN": "true"})
    assert json.loads(out) == {"ok": True, "none": None, "error": "token ***-ish", "n": 1234}


def test_text_redaction_also_scrubs_paths(tmp_path):
    out = redact_text(f"{tmp_path}/x sk-abcd", root=tmp_path, environ={"OPENAI_KEY": "sk-abcd"})
    assert out == "./x ***"


def test_a_document_with_nothing_to_redact_comes_back_unchanged_and_one_with_escapes_is_still_walked(
    tmp_path,
):
    clean = {"timeline": [{"t_s": i * 0.01, "power_w": 300.5} for i in range(100)], "gpu": "H100"}
    assert redact_json_document(json.dumps(clean), environ={"HF_TOKEN": "hf_abcd"}) == clean
    # The same secret and path as the decoder sees them, written with escapes a search of the
    # raw text would miss: \u-escaped letters and an escaped slash.
    escaped = '{"error": "bad \\u0068f_abcd at ' + str(tmp_path).replace("/", "\\/") + '\\/model"}'
    out = redact_json_document(escaped, root=tmp_path, environ={"HF_TOKEN": "hf_abcd"})
    assert out == {"error": "bad *** at ./model"}


def test_a_secret_in_a_key_or_written_with_escapes_is_found_by_the_quick_check():
    secret = {"HF_TOKEN": 'hf_ab\\cd"'}  # a backslash and a quote: escaped in the JSON text
    document = json.dumps({'quoted "hf_ab\\cd"': 'and "hf_ab\\cd" again', "n": 1})
    assert redact_json_document(document, environ=secret) == {'quoted "***': 'and "*** again', "n": 1}


def test_the_home_folder_is_read_at_each_call_not_kept_from_the_first(tmp_path, monkeypatch):
    first, second = tmp_path / "alice", tmp_path / "bob"
    monkeypatch.setenv("HOME", str(first))
    assert redact_text(f"{first}/models") == "~/models"
    monkeypatch.setenv("HOME", str(second))
    assert redact_text(f"{first}/models") != "~/models"
    document = json.dumps({f"{second}/a": [f"{second}/b", f"{second}x/c"]})
    redacted = json.loads(redact_json(document))
    assert list(redacted) == ["~/a"] and redacted["~/a"][0] == "~/b"
    assert not redacted["~/a"][1].startswith("~")  # bobx is not under bob
