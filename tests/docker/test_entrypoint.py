"""docker/entrypoint.sh: each mode becomes the README's bundle command with the container's mounts filled in.

The script runs for real under bash; ``python3`` and ``torchrun`` are stand-ins on PATH that print the arguments
they were given, so the test sees exactly what the container would execute without needing torch or a GPU.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from fire import parser as fire_parser

from tests.docker.docker_files import DOCKER, REPO

ENTRYPOINT = DOCKER / "entrypoint.sh"
MODES = ("train", "evaluate", "inference", "multi_gpu_train")
BUNDLES = ("litemedsam_dka_polyp", "swin_unetr_dka_hippocampus", "sam_slices_dka")


@pytest.fixture()
def container(tmp_path: Path) -> Path:
    """A working directory with one bundle, and stand-in launchers on PATH."""
    (tmp_path / "bundles" / "demo" / "configs").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for launcher in ("python3", "torchrun"):
        script = bin_dir / launcher
        script.write_text(
            f'#!/usr/bin/env bash\necho "{launcher} nproc=${{PET_NPROC_PER_NODE:-unset}}"\nprintf "%s\\n" "$@"\n'
        )
        script.chmod(0o755)
    return tmp_path


def _run(container: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PET_")}
    environment.update(PATH=f"{container / 'bin'}:{os.environ['PATH']}", **env)
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args], cwd=container, env=environment, capture_output=True, text=True
    )


def test_single_process_modes_run_the_bundle_config_with_the_mounts(container):
    # evaluate and inference are overlays on train.json, as in the README's commands.
    for mode, configs in (
        ("train", "['bundles/demo/configs/train.json']"),
        ("evaluate", "['bundles/demo/configs/train.json','bundles/demo/configs/evaluate.json']"),
        ("inference", "['bundles/demo/configs/train.json','bundles/demo/configs/inference.json']"),
    ):
        result = _run(container, mode, "demo", "--max_epochs", "2")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "python3 nproc=unset",
            "-m", "monai.bundle", "run",
            "--config_file", configs,
            "--dataset_dir", "/data",
            "--output_dir", "/output/demo",
            "--max_epochs", "2",
        ]


def test_mount_points_follow_the_environment(container):
    result = _run(container, "inference", "demo", DATASET_DIR="/mnt/dicom", OUTPUT_DIR="/mnt/out")
    lines = result.stdout.splitlines()
    assert lines[lines.index("--dataset_dir") + 1] == "/mnt/dicom"
    assert lines[lines.index("--output_dir") + 1] == "/mnt/out/demo"


def test_multi_gpu_train_launches_torchrun_over_both_configs(container):
    result = _run(container, "multi-gpu-train", "demo")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "torchrun nproc=gpu"  # one worker per visible GPU unless PET_NPROC_PER_NODE says otherwise
    assert lines[1:5] == ["-m", "monai.bundle", "run", "--config_file"]
    assert lines[5] == "['bundles/demo/configs/train.json','bundles/demo/configs/multi_gpu_train.json']"
    assert _run(container, "multi-gpu-train", "demo", PET_NPROC_PER_NODE="2").stdout.startswith("torchrun nproc=2\n")


def test_config_list_parses_as_a_list_for_monai_bundle_run(container):
    # `monai.bundle run` reads its arguments with fire; the quoted list must arrive as a Python list of paths.
    config_file = _run(container, "multi-gpu-train", "demo").stdout.splitlines()[5]
    assert fire_parser.DefaultParseValue(config_file) == [
        "bundles/demo/configs/train.json",
        "bundles/demo/configs/multi_gpu_train.json",
    ]


def test_unknown_or_missing_bundle_is_one_clear_error(container):
    result = _run(container, "train", "nope")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"error: bundle 'nope' not found under {container}/bundles (try: bundles)"
    result = _run(container, "inference")
    assert result.returncode == 2 and "needs a bundle name" in result.stderr


def test_pipeline_bundles_help_and_passthrough(container):
    python = _run(container, "pipeline", "--help").stdout.splitlines()
    assert python == ["python3 nproc=unset", "-m", "pipeline", "--help"]
    assert _run(container, "bundles").stdout == "demo\n"
    assert "multi-gpu-train BUNDLE" in _run(container).stdout
    assert _run(container, "echo", "as", "given").stdout == "as given\n"


def test_the_documented_bundles_have_the_configs_the_modes_name():
    missing = [
        f"bundles/{bundle}/configs/{mode}.json"
        for bundle in BUNDLES
        for mode in MODES
        if not (REPO / "bundles" / bundle / "configs" / f"{mode}.json").is_file()
    ]
    assert not missing, f"docs/deploy.md and the entry point's modes need: {missing}"


@pytest.mark.slow  # importing monai takes ~8 s of CPU on its own
def test_the_keys_the_entry_point_sets_exist_in_every_bundle_config():
    # A key missing from the config would be added silently and ignored: outputs would land in the image's
    # read-only bundles/ tree instead of /output.
    from monai.bundle import ConfigParser

    for bundle in BUNDLES:
        configs = REPO / "bundles" / bundle / "configs"
        for overlay in ((), ("evaluate",), ("inference",), ("multi_gpu_train",)):
            files = [configs / f"{name}.json" for name in ("train", *overlay)]
            if not all(path.is_file() for path in files):
                continue  # reported by the test above
            parser = ConfigParser()
            parser.read_config([str(path) for path in files])
            for key in ("dataset_dir", "output_dir"):
                assert key in parser, f"{bundle} {[p.name for p in files]}: no '{key}' for the entry point to set"
