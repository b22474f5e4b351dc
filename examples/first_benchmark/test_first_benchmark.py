import pytest

from pytest_llem.testing import build_tiny_model

pytestmark = pytest.mark.llem(backend="pytorch", device="cpu", n_prompts=16, max_new_tokens=32)


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    # A tiny random-weight GPT-2 built locally; put a hub id here, e.g. "Qwen/Qwen2.5-0.5B-Instruct".
    return str(build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-gpt2", arch="gpt2"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("batch_size", [1, 8])
def test_generate(llem, model, batch_size, precision):
    result = llem.run(model=model, batch_size=batch_size, precision=precision)
    # The batches run again until the window lasts min_window_s (2 s on a CPU); extra["passes"] counts them.
    passes = result.extra["passes"]
    assert result.output_tokens == passes * result.config["n_prompts"] * result.config["max_new_tokens"]
