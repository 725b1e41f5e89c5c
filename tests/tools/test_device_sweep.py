"""``tools/device_sweep.py``: a device run gets exactly the missing cells, the cases they name and its own paths;
its returned runs never replace a run folder here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.experiments.sweep import Sweep, write_splits

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import device_sweep  # noqa: E402


@pytest.fixture
def study(tmp_path, monkeypatch) -> Path:
    """A k-shot sweep config over twelve SYNTHETIC image/mask pairs, with premade splits (k = 2, 4; seeds 0, 1)
    and an SSL-like checkpoint file named by one method's overrides."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    data = tmp_path / "data"
    for i in range(12):
        for sub, mode in (("images", "RGB"), ("masks", "L")):
            (data / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8, 3) if mode == "RGB" else (8, 8), np.uint8), mode).save(
                data / sub / f"synthetic_{i}.png")
    (tmp_path / "encoder.pt").write_bytes(b"weights")
    config = {"bundle": "bundles/litemedsam_dka_polyp", "dataset_dir": str(data), "output": str(tmp_path / "study"),
              "k_shots": [2, 4], "seeds": [0, 1], "test_fraction": 0.25, "val_fraction": 0.1,
              "methods": {"linear_probe": {}, "dka": {"overrides": {"checkpoint": str(tmp_path / "encoder.pt")}}},
              "overrides": {"prompt": "none"}}
    write_splits(Sweep(**config))
    config["splits"] = str(tmp_path / "study" / "splits")
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_prepare_plans_only_the_missing_cells_with_the_cases_they_name(study, tmp_path):
    done = tmp_path / "study" / "runs" / "dka" / "split_k2_s0" / "eval"
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    for run in ("split_k2_s0", "split_k4_s0"):  # linear_probe is done for seed 0
        (tmp_path / "study" / "runs" / "linear_probe" / run / "eval").mkdir(parents=True)
        (tmp_path / "study" / "runs" / "linear_probe" / run / "eval" / "summary.json").write_text("{}")

    into = tmp_path / "device"
    configs = device_sweep.prepare(study, into, wheels=False)
    assert sorted(p.name for p in configs) == ["sweep_s0_dka.yaml", "sweep_s1_dka.yaml", "sweep_s1_linear_probe.yaml"]
    dka_s0 = yaml.safe_load((into / "sweep_s0_dka.yaml").read_text())
    assert (dka_s0["k_shots"], dka_s0["seeds"], list(dka_s0["methods"])) == ([4], [0], ["dka"]), "k = 2 ran here"
    assert (dka_s0["dataset_dir"], dka_s0["splits"], dka_s0["output"]) == (
        str(into / "data"), str(into / "splits"), str(into / "out"))
    assert dka_s0["overrides"] == {"prompt": "none", "amp": False}, "float32 on the GPU, as on the CPU"
    assert dka_s0["methods"]["dka"]["overrides"]["checkpoint"] == str(into / "files" / "encoder.pt")
    assert (into / "files" / "encoder.pt").read_bytes() == b"weights"
    assert Sweep.load(into / "sweep_s0_dka.yaml").splits == str(into / "splits")

    named = set()
    for split in (into / "splits").glob("*.json"):
        cases = json.loads(split.read_text())
        named |= {case[key] for part in ("training", "validation", "test") for case in cases[part]
                  for key in ("image", "label")}
    carried = {str(p.relative_to(into / "data")) for p in (into / "data").rglob("*.png")}
    assert carried == named and len(carried) < 24, "only the cases the splits name"
    assert (into / "records").read_text().split() == list(device_sweep.RECORDS), "what the device copies back"


def test_prepare_leaves_out_the_runs_a_published_results_file_holds(study, tmp_path):
    from pipeline.experiments.report import RESULT_FIELDS, write_rows

    published = write_rows([{**dict.fromkeys(RESULT_FIELDS), "method": "dka", "n_train": 4, "seed": 1},
                            {**dict.fromkeys(RESULT_FIELDS), "method": "linear_probe", "n_train": 2, "seed": 1}],
                           tmp_path / "published.csv", RESULT_FIELDS)
    into = tmp_path / "device"
    configs = device_sweep.prepare(study, into, wheels=False, published=[published])
    planned = {p.name: yaml.safe_load(p.read_text())["k_shots"] for p in configs}
    assert planned == {"sweep_s0_linear_probe.yaml": [2, 4], "sweep_s0_dka.yaml": [2, 4],
                       "sweep_s1_linear_probe.yaml": [4], "sweep_s1_dka.yaml": [2]}


def test_prepare_needs_premade_splits_and_known_methods(study, tmp_path):
    config = yaml.safe_load(study.read_text())
    with pytest.raises(PipelineError, match="not in"):
        device_sweep.prepare(study, tmp_path / "device", ["lora"], wheels=False)
    del config["splits"]
    study.write_text(yaml.safe_dump(config))
    with pytest.raises(PipelineError, match="premade split files"):
        device_sweep.prepare(study, tmp_path / "device", wheels=False)


def test_merge_copies_returned_records_but_never_over_a_run_folder_here(tmp_path):
    returned, here = tmp_path / "returned", tmp_path / "runs"
    for run in ("dka/split_k2_s0", "dka/split_k4_s0", "dka/split_k4_s1"):
        (returned / run / "eval").mkdir(parents=True)
        (returned / run / "eval" / "summary.json").write_text('{"device": "gpu"}')
        (returned / run / "training.json").write_text("{}")
    (returned / "dka/split_k4_s1/eval/summary.json").unlink()  # cut off by the time limit: not evaluated
    (here / "dka/split_k2_s0/models").mkdir(parents=True)
    (here / "dka/split_k2_s0/models/resume.pt").write_bytes(b"a CPU run, resumable")

    copied, skipped = device_sweep.merge(returned, here)
    assert copied == [here / "dka/split_k4_s0"] and skipped == [here / "dka/split_k2_s0"]
    assert (here / "dka/split_k4_s0/eval/summary.json").read_text() == '{"device": "gpu"}'
    assert (here / "dka/split_k2_s0/models/resume.pt").read_bytes() == b"a CPU run, resumable"
    assert not (here / "dka/split_k2_s0/eval").exists() and not (here / "dka/split_k4_s1").exists()


def test_the_device_script_passes_shellcheck():
    from tests.docker.docker_files import venv_tool

    script = Path(__file__).resolve().parents[2] / "tools" / "device_sweep.sh"
    result = subprocess.run([venv_tool("shellcheck"), str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(("files", "readers"), [(["a.png"], []), (["a.png", "sub/b.nii.gz"], ["nibabel"])])
def test_wheels_are_the_missing_packages_at_the_versions_here_and_the_readers_the_data_needs(
        tmp_path, monkeypatch, files, readers):
    from importlib.metadata import version

    for name in files:
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_bytes(b"")
    commands = []
    monkeypatch.setattr(device_sweep.subprocess, "run",
                        lambda command, check: commands.append(command) or subprocess.CompletedProcess(command, 0))
    device_sweep.download_wheels(tmp_path / "whl", tmp_path / "data")
    (command,) = commands
    assert command[command.index("--python-version") + 1] == "3.12", "the device image's Python"
    pins = [word for word in command if "==" in word]
    assert pins == [f"{name}=={version(name)}" for name in (*device_sweep.MISSING_ON_DEVICE, *readers)]


def test_a_failed_wheel_download_is_one_error(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(device_sweep.subprocess, "run", lambda command, check: subprocess.CompletedProcess(command, 1))
    with pytest.raises(PipelineError, match="could not download the device's wheels"):
        device_sweep.download_wheels(tmp_path / "whl", tmp_path / "data")
