"""The machine id and fingerprint: what a run records about its hardware and software."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import metadata

from pytest_llem.fingerprints.machine import GpuInfo, MachineInfo
from pytest_llem.isolation.leases import host_gpus


def test_the_fingerprint_reads_each_gpus_settings_through_nvml(fake_nvml):
    fake_nvml.configure(
        [
            fake_nvml.FakeGpu(uuid="GPU-a", name="Sim H100", power_limit_w=700.0),
            fake_nvml.FakeGpu(
                uuid="GPU-b", name="Sim H100", power_limit_w=500.0, persistence_mode=0, ecc_mode=0
            ),
        ]
    )
    machine = MachineInfo.current()
    first, second = machine.gpus
    assert (first.uuid, first.power_limit_w, first.sm_clock_mhz, first.memory_clock_mhz) == (
        "GPU-a",
        700.0,
        1980,
        2619,
    )
    assert (first.persistence_mode, first.ecc_mode, first.mig_mode) == (True, True, False)
    assert (second.power_limit_w, second.persistence_mode, second.ecc_mode) == (500.0, False, False)
    assert machine.cuda_driver_version == "12.4" and machine.driver == "000.00-simulated"
    assert machine.cpu_model  # always recorded, GPUs or not
    # The id hashes what it always did, so runs saved before the fingerprint keep their id.
    identity = {
        "gpus": [{"name": "Sim H100", "power_limit_w": 700.0}, {"name": "Sim H100", "power_limit_w": 500.0}],
        "driver": "000.00-simulated",
        "cpu": None,
    }
    assert machine.id == hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def test_library_versions_come_from_metadata_without_importing_them():
    code = (
        "import json, sys\n"
        "from pytest_llem.fingerprints.machine import software_versions\n"
        "versions = software_versions()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules)\n"
        "print(json.dumps([versions, heavy]))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    versions, imported = json.loads(output)
    assert imported == []
    assert versions["torch"] == metadata.version("torch")  # the dev environment has the torch extra
    assert versions["vllm"] is None or versions["vllm"] == metadata.version("vllm")
    assert set(versions) == {"python", "pytest-llem", "torch", "transformers", "accelerate", "vllm"}


def test_one_gpu_record_for_the_leases_and_the_fingerprint(fake_nvml):
    fake_nvml.configure(
        [
            fake_nvml.FakeGpu(uuid="GPU-a", name="Sim H100", power_limit_w=700.0),
            fake_nvml.FakeGpu(uuid="GPU-b", name="Sim H100", power_limit_w=700.0),
        ]
    )
    leased = host_gpus({"CUDA_VISIBLE_DEVICES": "1"})
    assert leased == [GpuInfo(name="Sim H100", index=1, uuid="GPU-b")]
    fingerprinted = MachineInfo.current().gpus
    assert [(g.index, g.uuid, g.name) for g in fingerprinted] == [
        (0, "GPU-a", "Sim H100"),
        (1, "GPU-b", "Sim H100"),
    ]
    assert {leased[0], leased[0].model_copy()} == {leased[0]}  # frozen, so GPUs can be set members


def test_a_gpu_recorded_before_it_carried_its_index_still_loads():
    machine = MachineInfo.model_validate_json(
        '{"id": "abc", "gpus": [{"name": "NVIDIA H100", "power_limit_w": 700.0, "uuid": "GPU-0"}]}'
    )
    assert machine.gpus == [GpuInfo(name="NVIDIA H100", power_limit_w=700.0, uuid="GPU-0")]
    assert machine.gpus[0].index is None
