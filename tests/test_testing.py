"""`pytest_llem.testing`: tiny models, built locally and deterministically, loadable as real ones."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from pytest_llem.testing import build_tiny_model, needs_gpus, visible_gpu_count

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="the torch extra is not installed"
)


def test_the_same_seed_builds_the_same_files_and_another_seed_other_weights(tmp_path, tiny_model):
    again = build_tiny_model(tmp_path / "again", arch="gpt2", seed=0)
    other = build_tiny_model(tmp_path / "other", arch="gpt2", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_model / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (tiny_model / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny_model / "tokenizer.json").read_bytes()
    assert "torch" not in sys.modules  # built in a fresh interpreter: this process stays torch-free


def test_a_tiny_llama_loads_and_generates_through_the_pytorch_backend(tmp_path, bench):
    model = build_tiny_model(tmp_path / "llama", arch="llama", seed=0)
    assert '"model_type": "llama"' in (model / "config.json").read_text()
    result = bench.run_experiment(
        "t::llama", None, [{"backend": "pytorch", "model": str(model), "n_prompts": 2}]
    )
    assert result.output_tokens == 2 * 32


def test_needs_gpus_skips_with_the_reason_when_too_few_are_visible():
    found, _ = visible_gpu_count()
    too_many = needs_gpus(found + 1)
    assert too_many.args == (True,)
    assert too_many.kwargs["reason"].startswith(f"needs {found + 1} NVIDIA GPU(s), found {found}: ")
    assert needs_gpus(found).args == (False,)
