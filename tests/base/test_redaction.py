"""Secret values under every secret-looking name, in every form they take in text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from pytest_llem.base.redaction import (
    EXTRA_NAMES_ENV,
    ends_inside_private_key,
    is_secret_name,
    redact_json,
    redact_json_compact,
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
        "OPENAI_API_KEY",
        "WANDB_APIKEY",
        "GH_PAT",
        "DB_PASS",
        "MYSQL_PWD",
        "AWS_CREDENTIALS",
        "GPG_PASSPHRASE",
        "SENTRY_DSN",
        "HF_TOKEN_READ",
    ],
)
def test_every_secret_looking_name_is_redacted(name: str):
    assert redact_secrets("value s3cr3t-v4lue here", environ={name: "s3cr3t-v4lue"}) == "value *** here"


@pytest.mark.parametrize(
    "name",
    # PWD is the working directory; an LLM's tokenizer and token-count settings hold "false", "1024".
    [
        "MONKEY",
        "KEYBOARD_LAYOUT",
        "PATH",
        "LANG",
        "PWD",
        "OLDPWD",
        "TOKENIZERS_PARALLELISM",
        "MAX_NEW_TOKENS",
    ],
)
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
    environ = {"MODEL_MIRROR": "mirror.internal:8443", "OTHER": "plainvalue"}
    text = "mirror mirror.internal:8443 other plainvalue"
    assert redact_secrets(text, environ=environ) == text
    set_extra_secret_names(["MODEL_MIRROR"])
    assert redact_secrets(text, environ=environ) == "mirror *** other plainvalue"
    set_extra_secret_names(())  # the child learns the names from its environment
    child = {**environ, EXTRA_NAMES_ENV: "MODEL_MIRROR,OTHER"}
    assert redact_secrets(text, environ=child) == "mirror *** other ***"


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


def test_the_name_rules_are_the_ones_the_env_field_refuses():
    assert is_secret_name("GH_PAT") and is_secret_name("db_pass") and not is_secret_name("PATH")


@pytest.mark.parametrize(
    "secret",
    ['bs\\se"cret42', "it's\\\"both", "caf\u00e9-s\\ecret", "tab\tsecret", "nul\x01secret"],
)
def test_a_value_is_redacted_as_repr_and_ascii_write_it(secret: str):
    environ = {"DB_PASSWORD": secret}
    for text in (
        f"key {secret!r} refused",
        f"settings {{'a': 1, 'pw': {secret!r}}}",
        f"quoted {(chr(34) + secret)!r}",  # the string holds a double quote: repr() escapes '
        f"ascii {ascii(secret)}",
        f"bytes {secret.encode()!r}",
    ):
        out = redact_secrets(text, environ=environ)
        core = max(re.findall(r"[A-Za-z0-9]+", secret), key=len)  # cret42, both, ecret, secret
        assert "***" in out and core not in out, (text, out)


def test_a_urls_password_is_redacted_in_any_text_and_nothing_else_of_it():
    no_secrets: dict[str, str] = {}
    assert redact_secrets("db postgresql://u:s3cr3t@h:5432/db ok", environ=no_secrets) == (
        "db postgresql://u:***@h:5432/db ok"
    )
    assert redact_secrets("redis://:pw@cache:6379/0", environ=no_secrets) == "redis://:***@cache:6379/0"
    # A password with an unencoded '@' ends at the last '@' before the path.
    assert redact_secrets("mysql://me:p@ss@h/db", environ=no_secrets) == "mysql://me:***@h/db"
    # Side by side in a repr(): one URL's text never joins the next one's.
    assert redact_secrets(str({"a": "http://x:y", "b": "z@w"}), environ=no_secrets) == str(
        {"a": "http://x:y", "b": "z@w"}
    )
    untouched = (
        "https://huggingface.co/org/model https://user@example.org/x https://example.org:8080/a@b "
        "ssh://git@github.com:22/repo file:///tmp/a:b@c mailto:me@example.org http://[::1]:80/"
    )
    assert redact_secrets(untouched, environ=no_secrets) == untouched


def test_the_password_of_a_url_in_any_variable_is_a_secret_on_its_own_too():
    environ = {"DATABASE_URL": "postgresql://u:s3cr%40t9@h/db", "PLAIN": "https://example.org"}
    out = redact_secrets("login with s3cr@t9 (s3cr%40t9) failed", environ=environ)
    assert out == "login with *** (***) failed"
    # Under a secret name too: the whole value is a secret, and so is its password alone.
    dsn = {"SENTRY_DSN": "https://key:pw-alone9@sentry.example.org/1"}
    assert redact_secrets("auth pw-alone9", environ=dsn) == "auth ***"


def test_a_private_key_block_is_redacted_whole_or_to_the_end_when_cut_off():
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEbody\nmore\n-----END RSA PRIVATE KEY-----"
    assert redact_secrets(f"key {key} after", environ={}) == "key -----BEGIN RSA PRIVATE KEY-----*** after"
    assert redact_secrets(f"key {key!r}", environ={}) == "key '-----BEGIN RSA PRIVATE KEY-----***'"
    cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n"
    assert redact_secrets(f"x {cut}", environ={}) == "x -----BEGIN OPENSSH PRIVATE KEY-----***"
    assert ends_inside_private_key(f"x {cut}") and not ends_inside_private_key(f"x {key}\n")
    public = "-----BEGIN PUBLIC KEY-----\nMIIBpublic\n-----END PUBLIC KEY-----"
    assert redact_secrets(public, environ={}) == public


def test_a_stored_document_is_walked_for_repr_forms_url_passwords_and_keys():
    secret = {"HF_TOKEN": 'hf_ab\\c"d9'}
    document = json.dumps({"error": f"bad {secret['HF_TOKEN']!r}", "n": 1})
    assert json.loads(redact_json_compact(document, environ=secret)) == {"error": "bad '***'", "n": 1}
    # No run of 4 plain characters to look for: the quick check looks for the whole forms.
    symbols = {"DB_PASSWORD": "p@$$w\\r'd!"}
    document = json.dumps({"error": f"bad {symbols['DB_PASSWORD']!r} or {symbols['DB_PASSWORD']}"})
    assert json.loads(redact_json_compact(document, environ=symbols)) == {"error": 'bad "***" or ***'}
    document = json.dumps({"error": "to postgresql://u:pw9@h/db", "key": "-----BEGIN PRIVATE KEY-----\nAB"})
    assert json.loads(redact_json_compact(document, environ={})) == {
        "error": "to postgresql://u:***@h/db",
        "key": "-----BEGIN PRIVATE KEY-----***",
    }
