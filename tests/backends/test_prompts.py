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


def test_sized_prompts_count_words_without_a_tokenizer_and_are_the_same_for_a_seed():
    from pytest_llem.backends.prompts import sized_prompts

    prompts, counted_by = sized_prompts(5, seed=3, length=17, count_tokens=None)
    assert counted_by == "words" and [len(p.split()) for p in prompts] == [17] * 5
    assert sized_prompts(5, 3, 17, None)[0] == prompts != sized_prompts(5, 4, 17, None)[0]


def test_sized_prompts_land_on_the_tokenizers_count_or_the_nearest_below():
    from pytest_llem.backends.prompts import sized_prompts

    # A tokenizer as awkward as a real one: a word of more than 5 letters is two tokens.
    def count(text: str) -> int:
        return sum(2 if len(word) > 5 else 1 for word in text.split())

    prompts, counted_by = sized_prompts(20, seed=0, length=33, count_tokens=count)
    assert counted_by == "tokenizer"
    counts = [count(p) for p in prompts]
    # Exactly: a prompt one token short of a whole word ends with a one-token filler.
    assert counts == [33] * 20
    assert [count(p) for p in sized_prompts(3, 0, 1, count)[0]] == [1, 1, 1]

    # A vocabulary where nothing is one token: the nearest count below, never an empty prompt.
    def coarse(text: str) -> int:
        return 2 * len(text.split())

    assert [coarse(p) for p in sized_prompts(3, 0, 7, coarse)[0]] == [6, 6, 6]
    assert [coarse(p) for p in sized_prompts(2, 0, 1, coarse)[0]] == [2, 2]
