"""docker/compose.yaml: every job gets the GPUs, host IPC for DataLoader workers, and the dataset/output mounts.

Compose's own checker needs a Docker engine, so the file is read as YAML (anchors and merge keys resolved) and
the settings that decide whether a bundle runs on GPU are asserted directly.
"""

from __future__ import annotations

import re

import pytest
import yaml
from torch.distributed import run as torchrun
from torch.distributed.argparse_util import env

from tests.docker.docker_files import DOCKER, REPO


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> mount options ('' or 'ro') for the short-syntax volumes."""
    mounts = {}
    for volume in service["volumes"]:
        parts = re.sub(r"\$\{[^}]*\}", "HOST", volume).split(":")
        mounts[parts[1]] = parts[2] if len(parts) > 2 else ""
    return mounts


def test_every_job_gets_gpus_host_ipc_and_the_mounts(services):
    assert {"bundle", "multi-node"} <= set(services)
    for name, service in services.items():
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["count"] == "all" and "gpu" in device["capabilities"], name
        assert service["ipc"] == "host", name
        mounts = _mounts(service)
        assert mounts.get("/data") == "ro", f"{name}: the dataset is mounted read-only at /data"
        assert mounts.get("/output") == "", f"{name}: /output must be a writable mount"
        assert mounts.get("/checkpoints") == "ro", f"{name}: checkpoints are mounted read-only"


def test_builds_the_repo_dockerfile(services):
    for name, service in services.items():
        context = (DOCKER / service["build"]["context"]).resolve()
        assert context == REPO, f"{name}: build context must be the repository root"
        assert (context / service["build"]["dockerfile"]).samefile(DOCKER / "Dockerfile")


def test_bundle_and_mode_are_parameters(services):
    assert services["bundle"]["command"] == ["${MODE:-inference}", "${BUNDLE:-litemedsam_dka_polyp}"]
    assert services["multi-node"]["command"][0] == "multi-gpu-train"
    assert "${BUNDLE" in services["multi-node"]["command"][1]
    assert any("${DATASET:?" in volume for volume in services["bundle"]["volumes"]), "DATASET must be required"


def test_multi_node_uses_torchrun_settings_torchrun_reads(services):
    service = services["multi-node"]
    assert service["network_mode"] == "host"
    environment = service["environment"]
    assert environment["PET_RDZV_BACKEND"] == "${PET_RDZV_BACKEND:-c10d}"
    # torchrun takes each of its flags from PET_<FLAG> when the flag is absent; a misspelt name would be ignored.
    env_flags = {
        f"PET_{action.dest.upper()}"
        for action in torchrun.get_args_parser()._actions
        if isinstance(action, env)
    }
    names = {name for name in environment if name.startswith("PET_")}
    assert {"PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE", "PET_RDZV_ENDPOINT", "PET_RDZV_ID"} <= names
    assert names <= env_flags, f"not torchrun settings: {names - env_flags}"
