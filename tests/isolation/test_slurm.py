"""The Slurm launcher's pieces that need no cluster: the srun command, GPU counts, settings, filesystems."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_llem.config import build_config
from pytest_llem.errors import ConfigError
from pytest_llem.isolation.slurm import (
    SlurmOptions,
    describe_shared_filesystem,
    filesystem_type,
    slurm_gpu_count,
)
from pytest_llem.settings import resolve_settings


def test_the_srun_command_carries_every_setting(tmp_path: Path):
    settings = resolve_settings(
        {
            "launcher": "slurm",
            "slurm_partition": "gpu",
            "slurm_account": "energy",
            "slurm_time": "1:30:00",
            "slurm_gpus_per_node": "8",
            "slurm_args": ["--qos=high", "--constraint='h100 | h200'"],
        },
        {},
        environ={},
        enabled=True,
    )
    command = SlurmOptions.from_settings(settings).srun_command("llem-1-ab", 2, tmp_path)
    assert command == [
        "srun",
        "--job-name=llem-1-ab",
        "--nodes=1",
        "--ntasks=1",
        "--kill-on-bad-exit=1",
        "--partition=gpu",
        "--account=energy",
        "--time=1:30:00",
        "--gres=gpu:2",
        "--qos=high",
        "--constraint=h100 | h200",
        sys.executable,
        "-m",
        "pytest_llem.isolation.slurm_job",
        str(tmp_path),
    ]
    with pytest.raises(ConfigError, match=r"gpus: 9 GPU\(s\) asked for, but --llem-slurm-gpus-per-node is 8"):
        SlurmOptions(gpus_per_node=8).srun_command("x", 9, tmp_path)
    assert "--gres" not in " ".join(SlurmOptions().srun_command("x", 0, tmp_path))


@pytest.mark.parametrize(
    ("fields", "gpus_per_node", "expected"),
    [
        ({}, None, 0),  # a node without GPUs: nothing implied is asked for
        ({}, 4, 1),
        ({"gpus": 2}, None, 2),
        ({"gpus": [0, 3]}, None, 2),
        ({"tensor_parallel_size": 4}, None, 4),
        ({"device": "cpu"}, 4, 0),
    ],
)
def test_how_many_gpus_a_job_asks_for(fields, gpus_per_node, expected):
    assert slurm_gpu_count(build_config(fields), gpus_per_node) == expected


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        (
            {"launcher": "kubernetes"},
            "--llem-launcher: unknown launcher 'kubernetes'; choose one of local, slurm",
        ),
        ({"slurm_time": "an hour"}, "--llem-slurm-time: 'an hour' is not a Slurm time limit"),
        ({"slurm_gpus_per_node": "-1"}, "--llem-slurm-gpus-per-node: must be at least 0"),
    ],
)
def test_bad_launcher_settings_are_one_line(cli, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        resolve_settings(cli, {}, environ={}, enabled=True)


def test_the_launcher_is_an_ini_key_too():
    settings = resolve_settings(
        {}, {"launcher": "slurm", "slurm_time": "2-00:00:00"}, environ={}, enabled=True
    )
    assert (settings.launcher, settings.slurm_time) == ("slurm", "2-00:00:00")


def test_the_filesystem_the_jobs_rely_on_is_named(tmp_path: Path):
    assert filesystem_type(Path("/proc/self")) == "proc"
    fstype = filesystem_type(tmp_path)
    line = describe_shared_filesystem(tmp_path)
    assert line.startswith(
        f"Slurm jobs exchange requests and results through the state dir {tmp_path} ({fstype})"
    )
