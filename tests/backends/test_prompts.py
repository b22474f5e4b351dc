"""Where a built-in backend's prompts come from: seeded synthetic text, a list, or a file."""

from __future__ import annotations

import pytest

from pytest_llem.backends.prompts import (
    DEFAULT_BATCHES,
    batched,
    load_prompts,
    prompt_count,
    read_prompt_file,
    synthetic_prompts,
)
from pytest_llem.config import build_config
from pytest_llem.errors import ConfigError


def test_synthetic_prompts_are_the_same_for_a_seed_and_differ_between_seeds():
    prompts = synthetic_prompts(5, seed=1)
    assert prompts == synthetic_prompts(5, seed=1) != synthetic_prompts(5, seed=2)
    assert all(p[0].isupper() and p.endswith(".") and 12 <= len(p.split()) <= 40 for p in prompts)


def test_the_count_is_n_prompts_or_a_few_batches():
    assert prompt_count(build_config({"batch_size": 3})) == 3 * DEFAULT_BATCHES
    assert prompt_count(build_config({"batch_size": 3, "n_prompts": 7})) == 7


def test_given_prompts_repeat_in_order_up_to_the_count():
    config = build_config({"prompts": ["a", "b"], "n_prompts": 5})
    assert load_prompts(config) == ["a", "b", "a", "b", "a"]
    with pytest.raises(ConfigError, match=r"^prompts: no prompts given"):
        load_prompts(build_config({"prompts": [], "n_prompts": 2}))


def test_prompt_files_are_lines_or_json_objects(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("first\n\n  second  \n")
    assert read_prompt_file(text) == ["first", "second"]
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "one"}\n\n{"text": 2}\n')
    assert read_prompt_file(lines) == ["one", "2"]
    lines.write_text('{"prompt": "one"}\n["not", "an", "object"]\n')
    with pytest.raises(ConfigError, match=r"^prompts: p.jsonl line 2 is not a JSON object"):
        read_prompt_file(lines)
    other = tmp_path / "p.csv"
    other.write_text("x")
    with pytest.raises(ConfigError, match=r"^prompts: p.csv is neither .txt nor .jsonl"):
        read_prompt_file(other)
    with pytest.raises(ConfigError, match=r"^prompts: no such file"):
        read_prompt_file(tmp_path / "absent.txt")


def test_batches_keep_the_order_and_the_last_one_holds_the_rest():
    assert batched(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert batched([], 4) == []
