"""Builds the suite's model once per session: a small GPT-2 with random weights and a trained
tokenizer, saved with `save_pretrained`, so `transformers serve` loads it as a downloaded one."""

import pytest

from pytest_llem.testing import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    return str(build_tiny_model(path, arch="gpt2", seed=0, hidden_size=256, num_layers=4))
