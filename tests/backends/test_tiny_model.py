"""`python -m pytest_llem.backends.tiny_model`: the build `testing.build_tiny_model` runs in a
fresh interpreter. Its command line reaches the files it writes; the tokenizer pads on the
left and its special tokens are the model's; random weights are kept to tokens that decode to
whole, visible text; without the torch extra it says which extra to install. (Determinism and
a Llama that generates: test_testing.py.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llem.backends.tiny_model import SPECIAL_TOKENS

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="the torch extra is not installed"
)


def build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_llem.backends.tiny_model", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def small_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("the torch extra is not installed")
    path = tmp_path_factory.mktemp("tiny") / "gpt2-small"
    done = build(str(path), "--vocab-size=300", "--hidden-size=32", "--num-layers=1", "--max-positions=64")
    assert done.returncode == 0, done.stderr[-2000:]
    return path


def read(path: Path, name: str) -> dict:
    return json.loads((path / name).read_text())


@needs_torch
def test_the_command_lines_sizes_are_the_models(small_gpt2: Path):
    config = read(small_gpt2, "config.json")
    assert (config["model_type"], config["n_embd"], config["n_layer"], config["n_positions"]) == (
        "gpt2",
        32,
        1,
        64,
    )
    vocabulary = read(small_gpt2, "tokenizer.json")["model"]["vocab"]
    assert config["vocab_size"] == len(vocabulary) <= 300


@needs_torch
def test_the_tokenizer_pads_on_the_left_and_its_special_tokens_are_the_models(small_gpt2: Path):
    tokenizer_config = read(small_gpt2, "tokenizer_config.json")
    assert tokenizer_config["padding_side"] == "left" and tokenizer_config["model_max_length"] == 64
    vocabulary = read(small_gpt2, "tokenizer.json")["model"]["vocab"]
    config = read(small_gpt2, "config.json")
    for name in ("bos_token", "eos_token", "pad_token"):
        assert config[f"{name}_id"] == vocabulary[SPECIAL_TOKENS[name]], name


@needs_torch
def test_generation_is_kept_to_tokens_that_decode_to_whole_visible_text(small_gpt2: Path):
    tokenizers = pytest.importorskip("tokenizers")  # no torch: the tokenizer alone
    tokenizer = tokenizers.Tokenizer.from_file(str(small_gpt2 / "tokenizer.json"))
    suppressed = set(read(small_gpt2, "generation_config.json")["suppress_tokens"])
    eos = read(small_gpt2, "config.json")["eos_token_id"]
    assert eos not in suppressed  # generation can still end
    for token_id in range(tokenizer.get_vocab_size()):
        text = tokenizer.decode([token_id], skip_special_tokens=True)
        visible = bool(text) and "\ufffd" not in text
        assert (token_id in suppressed) == (not visible and token_id != eos), (token_id, text)


def test_an_unknown_architecture_is_refused_by_the_command_line(tmp_path: Path):
    done = build(str(tmp_path / "m"), "--arch=bert")
    assert done.returncode == 2
    assert "argument --arch: invalid choice: 'bert'" in done.stderr
    assert not (tmp_path / "m").exists()


def test_without_the_torch_extra_the_build_names_it(tmp_path: Path):
    # torch made unimportable in the build's own interpreter, as where the extra is not installed.
    code = (
        "import sys; sys.modules['torch'] = None; "
        "from pytest_llem.backends.tiny_model import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("the tiny model needs the 'torch' extra (")
    assert "Traceback" not in done.stderr and not (tmp_path / "m").exists()
