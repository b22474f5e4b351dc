"""The configuration reference page, written at build time from the code that reads the settings.

Every option and ini key comes from `pytest_llem.settings.SETTINGS` (the table that also
registers them with pytest) and every marker field from `pytest_llem.config.ExperimentConfig`'s
`model_fields`, so a row added there is documented by the next build, with no page to edit.
MkDocs runs this file as a hook (`hooks:` in mkdocs.yml); the page is added to the site's
files in memory and never committed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from pytest_llem.config import NON_MEASUREMENT_FIELDS, SERVING_FIELDS, ExperimentConfig
from pytest_llem.settings import SETTINGS, LlemSettings, Setting, resolve_settings

PAGE = "reference/configuration.md"
# What a Markdown table cell must not read as markup: emphasis, links, HTML, column breaks,
# attribute lists ({...}).
_CELL_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "*": "&#42;", "_": "&#95;", "|": "&#124;"}
_CELL_ESCAPES.update({"[": "&#91;", "]": "&#93;", "`": "&#96;", "{": "&#123;", "}": "&#125;"})


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File  # here: the page's text can be made without MkDocs

    files.append(File.generated(config, PAGE, content=reference_page()))
    return files


def reference_page() -> str:
    return "\n".join(
        [
            # Material's front matter: no table of contents beside the page, so its tables are wider.
            "---",
            "hide:",
            "  - toc",
            "---",
            "",
            "# Configuration reference",
            "",
            "Generated when the site is built, from the `SETTINGS` table in `pytest_llem/settings.py`",
            "(options and ini keys) and the `ExperimentConfig` model in `pytest_llem/config.py` (marker",
            "and `llem.run()` fields): what is listed here is what the installed code accepts.",
            "",
            *options_section(),
            "",
            *fields_section(),
            "",
        ]
    )


def options_section() -> list[str]:
    defaults = resolve_settings({}, {}, environ={}, enabled=True)
    types_by_name = {f.name: f.type for f in dataclasses.fields(LlemSettings)}
    rows = [
        "| option<br>ini key | default | meaning |",
        "| --- | --- | --- |",
        '| <span id="llem"></span>`--llem`<br>`llem = true` | off | *switch*: run the benchmarks; '
        "without it, tests that use the `llem` fixture or marker are skipped with a reason |",
    ]
    for setting in SETTINGS:
        rows.append(
            f'| <span id="{setting.option.lstrip("-")}"></span>`{_option_form(setting)}`<br>'
            f"`{_ini_form(setting)}` | {_setting_default(setting, getattr(defaults, setting.name))} "
            f"| *{_value_kind(setting, str(types_by_name[setting.name]))}*: {_cell(setting.help)} |"
        )
    return [
        "## Options and ini keys",
        "",
        "Every option is also an ini key in `[tool.pytest.ini_options]` (or `pytest.ini`). Precedence,",
        "highest first: the command line, then the environment variable where a setting has one,",
        "then the ini key, then the default. Give values with `=` (`--llem-state-dir=PATH`): pytest",
        "counts a value written after a space among the path arguments from which it picks its",
        "rootdir, and so the node ids.",
        "",
        *rows,
    ]


def fields_section() -> list[str]:
    fields = ExperimentConfig.model_fields
    offline = [name for name in fields if name not in SERVING_FIELDS]
    serving = [name for name in fields if name in SERVING_FIELDS]
    return [
        "## Marker and `llem.run()` fields",
        "",
        "`@pytest.mark.llem(...)` and `llem.run(...)` take the same keyword fields; `run()` overrides",
        "the marker, and a function's marker overrides a class's or module's (`pytestmark`). Unknown",
        "fields are rejected. A bad field in a marker stops the session at collection with one line",
        "per test, naming the test, the field and what is allowed (exit code 4); a bad field in",
        "`run()` fails that test. Fields marked *not hashed* change where or how long an experiment",
        "runs, not what it measures: they are left out of the config hash that `--llem-resume`",
        "and comparisons match on.",
        "",
        *_field_table(offline),
        "",
        "### Serving fields",
        "",
        'Only with `scenario="serving"` (see [Serving benchmarks](../guides/serving.md)); an',
        "offline experiment that sets one is refused, naming it.",
        "",
        *_field_table(serving),
    ]


def _field_table(names: list[str]) -> list[str]:
    rows = ["| field | default | meaning |", "| --- | --- | --- |"]
    for name in names:
        field = ExperimentConfig.model_fields[name]
        meaning = _cell(field.description or "")
        bounds = _bounds(field.metadata)
        if bounds:
            meaning += f" ({bounds})"
        if name in NON_MEASUREMENT_FIELDS:
            meaning += " *not hashed*"
        default = _cell(repr(field.get_default(call_default_factory=True)))
        rows.append(
            f'| <span id="field-{name}"></span>`{name}` | {default} '
            f"| *{_cell(_type_name(field.annotation))}*: {meaning} |"
        )
    return rows


def _option_form(setting: Setting) -> str:
    if setting.parse is None:
        return setting.option
    if setting.bare_value is not None:
        return f"{setting.option}[={setting.metavar}]"
    return f"{setting.option}={setting.metavar}"


def _ini_form(setting: Setting) -> str:
    return f"{setting.ini_name} = true" if setting.parse is None else setting.ini_name


def _value_kind(setting: Setting, annotation: str) -> str:
    if setting.parse is None:
        return "switch"
    kind = _cell(annotation.replace(" | None", "").replace("tuple[", "").replace(", ...]", ""))
    notes = []
    if setting.repeatable:
        notes.append("repeatable; ini: one per line")
    if setting.bare_value is not None:
        notes.append(f"bare: {_cell(setting.bare_value)}")
    if setting.env is not None:
        notes.append(f"env {_cell(setting.env)}")
    return kind + (f" ({'; '.join(notes)})" if notes else "")


def _setting_default(setting: Setting, value: Any) -> str:
    if isinstance(value, Path):  # the platform's folder, shown as on Linux without the home path
        home = str(Path.home())
        text = str(value)
        return f"`{'~' + text[len(home) :] if text.startswith(home) else text}` (platformdirs)"
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def _type_name(annotation: Any) -> str:
    """`int | None`, `'pytorch' or 'vllm'`: a field's type as a user writes its values."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " / ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    if annotation is type(None):
        return "None"
    if annotation is typing.Any:
        return "any JSON value"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(metadata: list[Any]) -> str:
    words = {
        "ge": ">=",
        "gt": ">",
        "le": "<=",
        "lt": "<",
        "min_length": "length >=",
        "max_length": "length <=",
    }
    parts = []
    for item in metadata:
        for attr, word in words.items():
            if getattr(item, attr, None) is not None:
                parts.append(f"{word} {getattr(item, attr)}")
    return _cell(", ".join(parts))


def _cell(text: str) -> str:
    return "".join(_CELL_ESCAPES.get(char, char) for char in text)
