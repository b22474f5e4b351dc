"""Model fingerprints: from the model's files, so a rebuilt folder is the same model."""

from __future__ import annotations

import shutil
from pathlib import Path

from pytest_llem.fingerprints.model import model_fingerprint
from pytest_llem.session import BenchmarkSession
from pytest_llem.settings import LlemSettings


def make_model(folder: Path, hidden: int = 4) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(f'{{"hidden_size": {hidden}}}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    return folder


def test_the_same_files_in_another_folder_have_the_same_fingerprint(tmp_path: Path):
    first = model_fingerprint(str(make_model(tmp_path / "a" / "tiny")))
    assert first is not None and len(first) == 16
    assert model_fingerprint(str(make_model(tmp_path / "b" / "tiny"))) == first
    assert model_fingerprint(str(make_model(tmp_path / "c" / "tiny", hidden=8))) != first
    assert model_fingerprint("Qwen/Qwen2.5-0.5B-Instruct") is None and model_fingerprint(None) is None


def test_large_weight_files_are_sampled_and_still_tell_weights_apart(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("pytest_llem.fingerprints.model.WHOLE_FILE_LIMIT", 1024)
    monkeypatch.setattr("pytest_llem.fingerprints.model.SAMPLE_BYTES", 100)
    model = make_model(tmp_path / "m")
    before = model_fingerprint(str(model))
    data = bytearray((model / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF  # a change in the middle sample
    (model / "model.safetensors").write_bytes(bytes(data))
    assert model_fingerprint(str(model)) != before


def test_a_model_rebuilt_in_a_new_folder_resumes(tmp_path: Path):
    settings = LlemSettings(enabled=True, state_dir=tmp_path / "state", energy="none", resume=True)
    bench = BenchmarkSession(settings)
    bench.start()
    first = make_model(tmp_path / "build-1" / "tiny")
    result = bench.run_experiment("t.py::case", "workloads:count_tokens", [{"model": str(first)}])
    assert not result.resumed
    rebuilt = tmp_path / "build-2" / "tiny"
    shutil.copytree(first, rebuilt)
    again = bench.run_experiment("t.py::case", "workloads:count_tokens", [{"model": str(rebuilt)}])
    assert again.resumed and again.experiment_id == result.experiment_id
    assert bench.record.entries[0].model_fingerprint == bench.record.entries[1].model_fingerprint is not None
    shutil.rmtree(rebuilt)
    make_model(rebuilt, hidden=8)
    changed = bench.run_experiment("t.py::case", "workloads:count_tokens", [{"model": str(rebuilt)}])
    assert not changed.resumed
