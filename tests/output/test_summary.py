"""The results table's content: columns, spread, sort and groups (`output.summary`)."""

from __future__ import annotations

import pytest
from sample_reports import entry, make_entry

from pytest_llem.errors import ConfigError
from pytest_llem.output.summary import SummaryView, model_name, summary_groups
from pytest_llem.settings import resolve_settings


def test_one_sample_shows_its_figure_and_several_show_median_and_interquartile_range():
    entries = [entry("t.py::one", [3.0]), entry("t.py::many", [4.0, 5.0, 6.0, 7.0, 100.0])]
    (group,) = summary_groups(entries, SummaryView(("test", "n", "energy_j", "energy_per_token_j")))
    assert group.header == ("test", "n", "energy_j", "J/token")
    assert group.rows[0] == ("t.py::one", "1", "3.00", "0.300")
    # The median of the rounds, not their mean or sum: one odd round does not move it.
    assert group.rows[1] == ("t.py::many", "5", "6.00 [5.00, 7.00]", "0.600 [0.500, 0.700]")


def test_rows_sort_by_a_metric_either_way_with_missing_figures_last():
    broken = make_entry("t.py::broken", None, error="boom")
    entries = [entry("t.py::b", [5.0]), broken, entry("t.py::a", [2.0]), entry("t.py::c", [9.0])]
    for sort, expected in (("energy_j", ["a", "b", "c", "broken"]), ("-energy_j", ["c", "b", "a", "broken"])):
        (group,) = summary_groups(entries, SummaryView(("test",), sort=sort))
        assert [row[0].removeprefix("t.py::") for row in group.rows] == expected


def test_groups_by_model_name_never_by_its_temporary_path():
    entries = [
        entry("t.py::x[1]", [1.0], model="/tmp/pytest-of-me/pytest-3/models0/tiny-gpt2"),
        entry("t.py::y", [1.0], model="Qwen/Qwen2.5-0.5B-Instruct"),
        entry("t.py::x[2]", [1.0], model="/tmp/pytest-of-me/pytest-3/models0/tiny-gpt2"),
    ]
    groups = summary_groups(entries, SummaryView(("test", "model"), group_by="model"))
    assert [g.title for g in groups] == ["model: tiny-gpt2", "model: Qwen/Qwen2.5-0.5B-Instruct"]
    assert [row[0] for row in groups[0].rows] == ["t.py::x[1]", "t.py::x[2]"]
    assert model_name("./models/llama") == "llama" and model_name(None) == "-"
    by_test = summary_groups(entries, SummaryView(("n",), group_by="test"))
    assert [g.title for g in by_test] == ["test: t.py::x", "test: t.py::y"]


def test_columns_sort_and_group_by_come_from_options_or_ini_keys():
    settings = resolve_settings(
        {"columns": "test, model,tokens_per_s", "sort": "-tokens_per_s"},
        {"group_by": "precision"},
        environ={},
    )
    assert settings.summary_view() == SummaryView(
        ("test", "model", "tokens_per_s"), "-tokens_per_s", "precision"
    )
    assert resolve_settings({}, {}, environ={}).summary_view() == SummaryView()


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        (
            {"columns": "test,tokens"},
            "--llem-columns: unknown column 'tokens'; give a comma-separated list of",
        ),
        ({"sort": "speed"}, "--llem-sort: cannot sort by 'speed'; choose a column"),
        ({"group_by": "gpu"}, "--llem-group-by: cannot group by 'gpu'; choose one of model, backend"),
    ],
)
def test_a_bad_choice_is_one_line_naming_the_option_and_the_choices(cli, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")) as raised:
        resolve_settings(cli, {}, environ={})
    assert "\n" not in str(raised.value)


def test_a_column_no_row_has_a_value_for_is_left_out_of_every_table():
    from sample_reports import make_report, make_result

    from pytest_llem.output.exports import markdown_summary
    from pytest_llem.output.terminal import format_summary

    unmeasured = make_result([1.0, 2.0], energy_j=None)
    for r in unmeasured.rounds:
        r.energy_j = None
    entries = [make_entry("t.py::a", unmeasured), make_entry("t.py::broken", None, error="boom")]
    view = SummaryView(("test", "model", "energy_j", "ttft_p50_s", "tokens_per_s", "status"))
    (group,) = summary_groups(entries, view)
    # Nothing measured energy or time to first token: those columns go; a failed row alone keeps none.
    assert group.columns == ("test", "model", "tokens_per_s", "status")
    assert group.header == ("test", "model", "tokens/s", "status")
    assert format_summary(entries, view)[0].split() == ["test", "model", "tokens/s", "status"]
    markdown = markdown_summary(make_report("r", entries), view=view).splitlines()
    assert "| test | model | tokens/s | status |" in markdown
    # Once one row has a figure, the column is back, with `-` for the others.
    (group,) = summary_groups([*entries, entry("t.py::c", [3.0])], view)
    assert group.columns == view.columns[:3] + view.columns[4:] and group.rows[1][2] == "-"
