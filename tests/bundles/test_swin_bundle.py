"""The Swin-UNETR-DKA hippocampus bundle end to end on a few real MSD Task04 cases, via ``python -m monai.bundle``.

The network is the bundle's own, at ``--feature_size 12`` (the default, 48, is the real size; 12 keeps a CPU step
to seconds); everything else (64³ patches, sliding-window inference, DKA in the middle stages) is the default.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.cli import EXIT_BAD_INPUT
from tests.bundles.runs import ENV, REPO, monai_command, run_command

BUNDLE = REPO / "bundles" / "swin_unetr_dka_hippocampus"
CONFIGS = BUNDLE / "configs"
SMALL = {"feature_size": 12}


def bundle(*configs: str, **overrides) -> subprocess.CompletedProcess:
    return run_command(monai_command(CONFIGS, *configs, **overrides))


def run_together(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    processes = [subprocess.Popen(c, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for c in commands]
    results = []
    for process, command in zip(processes, commands, strict=False):
        stdout, stderr = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    return results


def smallest_cases(root: Path, count: int) -> list[str]:
    """The ``count`` smallest real volumes (by voxels) among the first 20 names: the cheapest real cases."""
    names = sorted(p.name for p in (root / "imagesTr").glob("*.nii.gz"))[:20]
    return sorted(names, key=lambda n: np.prod(nib.load(root / "imagesTr" / n).shape))[:count]


def hippocampus_split(root: Path, folder: Path, train: int, validation: int, test: int) -> Path:
    names = smallest_cases(root, train + validation + test)
    case = lambda n: {"image": f"imagesTr/{n}", "label": f"labelsTr/{n}"}  # noqa: E731
    split = folder / "split.json"
    split.write_text(json.dumps({
        "training": [case(n) for n in names[:train]],
        "validation": [case(n) for n in names[train:train + validation]],
        "test": [case(n) for n in names[train + validation:]],
    }))
    return split


@pytest.mark.slow
@pytest.mark.real_data
def test_train_resume_evaluate_infer_on_real_hippocampus(shared_data, tmp_path):
    root = shared_data / "msd_hippocampus"
    split = hippocampus_split(root, tmp_path, train=2, validation=1, test=1)
    common = {"dataset_dir": root, "split": split, "output_dir": tmp_path / "run", **SMALL}
    models = tmp_path / "run" / "models"

    first = bundle("train.json", max_epochs=1, val_interval=1, **common)
    assert first.returncode == 0, first.stderr[-3000:]
    model = torch.load(models / "model.pt", weights_only=True)
    resume = torch.load(models / "resume.pt", weights_only=True)
    assert resume["epoch"] == 1
    assert model["method"] == "dka" and set(model["state_dict"]) == set(resume["network"])
    encoder = [k for k in model["state_dict"] if k.startswith("swinViT.")]
    assert encoder and all(".adapter." in k for k in encoder), "the frozen Swin encoder is not in the checkpoint"
    assert {k.split(".")[1] for k in encoder} == {"layers2", "layers3"}, "DKA sits in the middle stages"

    second = bundle("train.json", max_epochs=2, val_interval=1, **common)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "resumed from" in log and "at epoch 1" in log
    assert torch.load(models / "resume.pt", weights_only=True)["epoch"] == 2

    # evaluate and infer read the same checkpoint and write to different folders: run them side by side
    test_image = root / json.loads(split.read_text())["test"][0]["image"]
    evaluation, inference = run_together(monai_command(CONFIGS, "train.json", "evaluate.json", **common),
                                         monai_command(CONFIGS, "train.json", "inference.json", input=test_image,
                                                       **common))
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert inference.returncode == 0, inference.stderr[-3000:]
    rows = (tmp_path / "run" / "eval" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "case,class,dice,iou,hd95,nsd" and len(rows) == 3
    assert [r.split(",")[1] for r in rows[1:]] == ["anterior", "posterior"]
    summary = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    for name in ("anterior", "posterior"):
        for metric in ("dice", "iou", "hd95", "nsd"):
            assert math.isfinite(summary[name][metric]["mean"]), (name, metric)

    source = nib.load(test_image)
    prediction = nib.load(tmp_path / "run" / "predictions" / test_image.name)
    assert prediction.shape == source.shape
    np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-5)
    assert set(np.unique(np.asanyarray(prediction.dataobj)).tolist()) <= {0, 1, 2}


@pytest.fixture
def empty_msd_folder(tmp_path):
    """A synthetic, empty MSD-layout folder and a split naming an image it does not hold."""
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"training": [{"image": "imagesTr/gone.nii.gz", "label": "labelsTr/gone.nii.gz"}]}))
    return tmp_path, split


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "error: dataset_dir is required"),
        ({"dataset_dir": "{root}", "method": "nope"}, "error: unknown method 'nope'"),
        ({"dataset_dir": "{root}", "checkpoint": "{root}/model_swinvit.pt"}, "model_swinvit.pt does not exist"),
        ({"dataset_dir": "{root}", "split": "{split}"}, "names image 'imagesTr/gone.nii.gz', which does not exist"),
    ],
)
def test_the_bundles_argument_check_names_the_bad_override(overrides, message, empty_msd_folder):
    """What the bundle's first ``initialize`` step resolves, in process: the same check the CLI runs below."""
    from monai.bundle import ConfigParser

    root, split = empty_msd_folder
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({k: v.format(root=root, split=split) for k, v in overrides.items()})
    with pytest.raises(SystemExit, match="^error: ") as stop:
        parser.get_parsed_content("check_arguments")
    assert message in str(stop.value)


def test_num_classes_sets_the_network_the_loss_and_the_metrics_alike():
    """``--num_classes`` is the bundle's one class setting: the network's output channels follow it, not only the
    metrics' one-hot classes (before, the network kept a separate ``out_channels`` of 3)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"num_classes": 4, **SMALL})
    network = parser.get_parsed_content("network_def")
    assert network.out.conv.conv.out_channels == 4, "the Swin-UNETR head emits one logit map per class"
    assert parser.get_parsed_content("validate#postprocessing").transforms[1].to_onehot == [4, 4]
    logits, label = torch.zeros(1, 4, 2, 2, 2), torch.full((1, 1, 2, 2, 2), 3.0)
    assert parser.get_parsed_content("loss")(logits, label).isfinite(), "labels up to class 3 fit the loss"


@pytest.mark.slow
def test_bad_override_ends_the_cli_run_with_one_clear_line(empty_msd_folder):
    root, split = empty_msd_folder
    result = bundle("train.json", dataset_dir=root, split=split, output_dir=root / "out")
    assert result.returncode == EXIT_BAD_INPUT
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: split file") and "names image 'imagesTr/gone.nii.gz', which does not exist" in last
    assert "Traceback" not in result.stderr


def test_metadata_verifies_offline_against_the_vendored_schema(tmp_path):
    from monai.bundle import verify_metadata

    schema = str(REPO / "bundles" / "meta_schema_20240725.json")
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=schema)
    broken = json.loads((CONFIGS / "metadata.json").read_text())
    del broken["network_data_format"]["inputs"]["image"]["num_channels"]
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="'num_channels' is a required property"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=schema)


@pytest.mark.slow
def test_verify_net_in_out_accepts_the_network():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "train.json"), n=2, **SMALL)
