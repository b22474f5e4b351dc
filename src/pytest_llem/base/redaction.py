"""Keeps secrets and machine paths out of everything pytest-llem writes or prints.

Reports and states travel: they are attached to CI runs and shared between machines.
Tracebacks and error messages carry absolute paths and, if a workload is careless, token
values. `redact_text` is applied to every free-text output (terminal lines, failure
messages, Markdown, HTML) and `redact_json` to every persisted model.

A secret is
- the value (4 characters or more) of an environment variable whose name looks secret (one
  row of `SECRET_NAME_RULES` matches it) or that the user listed (`--llem-redact-env`); it is
  replaced in every form text gives it (`_forms`: as it is, JSON-escaped, `repr()`, URL-encoded,
  HTML-escaped);
- the password of a URL (`scheme://user:PASSWORD@host`), in any text, and, wherever it came
  from, the password of a URL held by any environment variable;
- the body of a `-----BEGIN ... PRIVATE KEY-----` block.
The listed names reach the experiment's child through `EXTRA_NAMES_ENV`.
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

#: Environment variables whose values must never reach an output: one row per kind of
#: carrier, (pattern searched for in the name, case-insensitively; names it catches).
SECRET_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"(^|_)KEY($|_)|APIKEY", "OPENAI_API_KEY, AWS_ACCESS_KEY_ID, SSH_PRIVATE_KEY, WANDB_APIKEY"),
    # Not TOKENIZERS_PARALLELISM or MAX_TOKENS: an LLM's settings, whose values ("false",
    # "1024") would be blanked out of every line.
    (r"TOKEN(?!IZER|S($|_))", "HF_TOKEN, GITHUB_TOKEN, TOKEN_FILE_CONTENTS"),
    (r"SECRET", "AWS_SECRET_ACCESS_KEY, CLIENT_SECRET"),
    (r"PASSWORD|PASSWD|PASSPHRASE", "DB_PASSWORD, MYSQL_PASSWD, GPG_PASSPHRASE"),
    # With the underscore: PWD alone is the shell's working directory.
    (r"_(PASS|PWD)$", "DB_PASS, MYSQL_PWD"),
    (r"CREDENTIAL", "GOOGLE_APPLICATION_CREDENTIALS"),
    (r"(^|_)PAT($|_)", "GH_PAT (a personal access token)"),
    (r"(^|_)DSN$", "SENTRY_DSN, DATABASE_DSN"),
)
SECRET_ENV_PATTERN = re.compile("|".join(f"(?:{pattern})" for pattern, _ in SECRET_NAME_RULES), re.I)
#: The password of a URL: `scheme://user:PASSWORD@host`, the user possibly empty. A password
#: holding '@' unencoded still ends at the last '@' before the path; quotes end it, so that
#: two URLs side by side in a repr() never make one. It starts at the literal `://`, which the
#: regex engine finds fast, so a long line costs one pass.
URL_PASSWORD_PATTERN = re.compile(r"(?P<head>://[^\s:/?#@'\"]*:)(?P<password>[^\s/?#'\"]+)(?=@)")
#: A PEM private key; one cut off before its end line is redacted to the end of the text.
PRIVATE_KEY_PATTERN = re.compile(
    r"(?P<begin>-----BEGIN (?P<kind>[A-Z0-9 ]*PRIVATE KEY)-----).*?(?:(?P<end>-----END (?P=kind)-----)|\Z)",
    re.S,
)
REDACTED = "***"
# Shorter values are too likely to occur by accident in ordinary text.
MIN_SECRET_LENGTH = 4
#: Names the user listed, comma-separated, in the environment of an experiment's child.
EXTRA_NAMES_ENV = "PYTEST_LLEM_REDACT_ENV"

_extra_names: frozenset[str] = frozenset()


def set_extra_secret_names(names: Iterable[str]) -> None:
    """The variables this process also treats as secret (the session's `redact_env`)."""
    global _extra_names
    _extra_names = frozenset(names)


def extra_secret_names(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    environ = os.environ if environ is None else environ
    listed = {name for name in environ.get(EXTRA_NAMES_ENV, "").split(",") if name}
    return _extra_names | listed


def is_secret_name(name: str) -> bool:
    return _looks_secret(name) or name in _extra_names


@functools.lru_cache(maxsize=1024)
def _looks_secret(name: str) -> bool:
    """`SECRET_NAME_RULES` on `name`, once per name: an environment is scanned at every lookup."""
    return SECRET_ENV_PATTERN.search(name) is not None


@functools.lru_cache(maxsize=256)
def _forms(value: str) -> frozenset[str]:
    """How a value can appear in text: as it is, JSON-escaped, as `repr()` writes it (inside
    either quotes, or `ascii()`, or as bytes), URL-encoded, HTML-escaped."""
    utf8 = value.encode("utf-8", errors="surrogateescape")
    return frozenset(
        {
            value,
            json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1],
            repr(value)[1:-1],
            repr(value + "'\"")[1:-4],  # inside single quotes, a quote escaped: \'
            ascii(value)[1:-1],
            repr(utf8)[2:-1],
            quote(utf8, safe=""),
            quote(utf8),
            quote_plus(utf8),
            html.escape(value),
            html.escape(value, quote=False),
        }
    )


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every form of every secret value, longest first (so no part of one is left behind)."""
    environ = os.environ if environ is None else environ
    extra = extra_secret_names(environ)
    forms: set[str] = set()
    for name, value in environ.items():
        if len(value) >= MIN_SECRET_LENGTH and (_looks_secret(name) or name in extra):
            forms |= _forms(value)
        if "://" in value:  # a URL's password is a secret on its own, whatever the variable's name
            for password in _url_passwords(value):
                forms |= _forms(password)
    return sorted(forms, key=len, reverse=True)


@functools.lru_cache(maxsize=256)
def _url_passwords(text: str) -> tuple[str, ...]:
    """The passwords of the URLs in `text` (long enough to look for), as written and decoded."""
    found = set()
    for match in URL_PASSWORD_PATTERN.finditer(text):
        password = match["password"]
        found |= {password, unquote(password)}
    return tuple(password for password in found if len(password) >= MIN_SECRET_LENGTH)


def redact_text(
    text: str,
    *,
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Replace secret values with ***, `root` with `.`, the home folder with `~` and the
    temporary folder with `$TMPDIR` (where tests and CI keep models and projects)."""
    return _redact(text, secret_values(environ), _path_replacements(root))


def redact_secrets(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Only the secrets (for the terminal, where the user's own paths are useful)."""
    return _replace_secrets(text, secret_values(environ))


def secret_redactor(environ: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """`redact_secrets` with the secrets looked up once, for text that comes line by line."""
    secrets = secret_values(environ)
    return lambda text: _replace_secrets(text, secrets)


def redact_json(text: str, *, root: Path | None = None, environ: Mapping[str, str] | None = None) -> str:
    """`redact_text` applied to every string (and key) of a JSON document, never to its
    structure: a short secret such as `true` cannot break the file. Indented, for people."""
    import pydantic_core  # not at import: the plugin's import stays light (tests/test_plugin_import.py)

    document = redact_json_document(text, root=root, environ=environ)
    # pydantic's encoder: the standard library's falls back to pure Python when indenting.
    return pydantic_core.to_json(document, indent=2).decode()


def redact_json_compact(
    text: str, *, root: Path | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """`redact_json` without indentation, for storing: `text` itself, neither parsed nor
    rewritten, when no string of it can hold anything to redact."""
    if not _may_hold_any(text, secret_values(environ), root):
        return text
    document = redact_json_document(text, root=root, environ=environ)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def redact_json_document(
    text: str, *, root: Path | None = None, environ: Mapping[str, str] | None = None
) -> Any:
    """`redact_json`, parsed: the redacted document (for callers that store it, not print it)."""
    document = json.loads(text)
    if not _may_hold_any(text, secret_values(environ), root):
        return document
    return redact_document(document, root=root, environ=environ)


def redact_document(
    document: Any, *, root: Path | None = None, environ: Mapping[str, str] | None = None
) -> Any:
    """`redact_json` on a parsed document (for callers that keep it parsed)."""
    secrets = secret_values(environ)
    paths = _path_replacements(root)
    # A report repeats the same keys thousands of times (every point of a power timeline):
    # each distinct string is redacted once.
    done: dict[str, str] = {}

    def redact(text: str) -> str:
        if text not in done:
            done[text] = _redact(text, secrets, paths)
        return done[text]

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return redact(node)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {redact(key): walk(value) for key, value in node.items()}
        return node

    return walk(document)


def _may_hold_any(text: str, secrets: list[str], root: Path | None) -> bool:
    """False only when no string of the JSON `text` can contain a secret or a redacted path,
    so that a large document (a report with its power timelines) is not walked for nothing.
    Without `\\u` or `\\/` escapes a JSON string's text is its value escaped character by
    character, so a value occurs in a string only if its escaped form occurs in `text`."""
    if "\\u" in text or "\\/" in text or _may_hold_secret_text(text):
        return True
    paths = [str(root)] if root is not None else []
    paths += [str(Path.home()), tempfile.gettempdir()]
    cores = {_needle(form) for form in secrets}
    # Where one needle holds another, finding the longer one means finding the shorter one.
    needles = {core for core in cores if not any(other != core and other in core for other in cores)}
    for path in paths:
        if path not in ("", "/"):
            needles.add(json.dumps(path.rstrip("/"), ensure_ascii=False)[1:-1])
    return any(needle in text for needle in needles)


#: Characters that no form of a value (`_forms`) and no JSON string escapes.
_UNESCAPED_RUN = re.compile(r"[A-Za-z0-9_.~-]+")


@functools.lru_cache(maxsize=1024)
def _needle(form: str) -> str:
    """What `_may_hold_any` looks for to find `form` in a JSON text: its longest run of
    characters no escaping changes (so a value's forms mostly share one needle and the text
    is searched once per value), else the form JSON-escaped."""
    run = max(_UNESCAPED_RUN.findall(form), key=len, default="")
    if len(run) >= MIN_SECRET_LENGTH:
        return run
    # A form with a backslash or a quote (`repr()`'s) is escaped once more in the JSON text.
    return json.dumps(form, ensure_ascii=False)[1:-1]


def holds_url_password(text: str) -> bool:
    """Whether `text` holds a URL with a password (`scheme://user:PASSWORD@host`)."""
    return "://" in text and URL_PASSWORD_PATTERN.search(text) is not None


def ends_inside_private_key(text: str) -> bool:
    """Whether `text` ends in a private key whose end line has not come yet (so that text
    arriving piece by piece can wait for the rest before it is redacted)."""
    if "PRIVATE KEY-----" not in text:
        return False
    keys = list(PRIVATE_KEY_PATTERN.finditer(text))
    return bool(keys) and keys[-1]["end"] is None


def _may_hold_secret_text(text: str) -> bool:
    """Whether `text` may hold a URL's password or a private key: secrets found by their shape."""
    return "PRIVATE KEY-----" in text or holds_url_password(text)


def _replace_secrets(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, REDACTED)
    if _may_hold_secret_text(text):
        text = URL_PASSWORD_PATTERN.sub(rf"\g<head>{REDACTED}", text)
        text = PRIVATE_KEY_PATTERN.sub(rf"\g<begin>{REDACTED}", text)
    return text


def _path_replacements(root: Path | None) -> list[tuple[re.Pattern[str], str]]:
    """The folders to shorten, looked up once per document: `root`, home, temporary folder.
    (Home and the temporary folder are read each time, as tests and users may change them.)"""
    paths = [] if root is None else [(str(root), ".")]
    paths += [(str(Path.home()), "~"), (tempfile.gettempdir(), "$TMPDIR")]
    return [(_path_pattern(path), replacement) for path, replacement in paths if path not in ("", "/")]


def _redact(text: str, secrets: list[str], paths: list[tuple[re.Pattern[str], str]]) -> str:
    text = _replace_secrets(text, secrets)
    for pattern, replacement in paths:
        text = pattern.sub(replacement, text)
    return text


@functools.lru_cache(maxsize=64)
def _path_pattern(path: str) -> re.Pattern[str]:
    """`path` where it is a whole path prefix: /home/me/x, not /home/meg."""
    return re.compile(re.escape(path.rstrip("/")) + r"(?![\w.-])")
