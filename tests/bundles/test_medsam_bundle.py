"""The MedSAM-DKA CT/MR bundle end to end on real DICOM and NIfTI volumes, through ``python -m monai.bundle run``.

No SAM/MedSAM ViT-B weights exist offline, so the tests write a SMALL random-weight MedSAM checkpoint in the
official key layout (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``) and point the bundle at it with
a config override of the architecture size and input size. Random weights: the metrics only have to be finite.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from pipeline.cli import EXIT_BAD_INPUT
from pipeline.engine.bundle_run import run_bundle
from pipeline.engine.network import build_network
from pipeline.models import SamViTSize, build_sam_vit
from pipeline.peft import save_adapter
from tests.bundles.runs import REPO, monai_command, run_command

CONFIGS = REPO / "bundles" / "medsam_dka_ct" / "configs"
SMALL = {"embed_dim": 32, "depth": 4, "num_heads": 2, "global_attn_indexes": [1, 3], "image_size": 64,
         "window_size": 2, "prompt_embed_dim": 32, "decoder_mlp_dim": 64, "decoder_heads": 2}


def bundle(*configs: str | Path, **overrides) -> subprocess.CompletedProcess:
    return run_command(monai_command(CONFIGS, *configs, **overrides))


def run_in_process(*configs: str | Path, **overrides) -> None:
    """``monai.bundle run`` without a new interpreter (each one costs ~15 s of imports on 2 cores)."""
    run_bundle([CONFIGS / c for c in configs], **overrides)


@pytest.fixture(scope="module")
def small_medsam(tmp_path_factory):
    """(checkpoint, override config): a random-weight small MedSAM in the official format, and its sizes."""
    folder = tmp_path_factory.mktemp("small_medsam")
    size = SamViTSize(**{**SMALL, "global_attn_indexes": tuple(SMALL["global_attn_indexes"])})
    checkpoint = folder / "medsam_small.pth"
    torch.save(build_sam_vit("medsam_vit_b", size=size).state_dict(), checkpoint)
    override = folder / "small.json"
    override.write_text(json.dumps({"backbone_size": {"_target_": "pipeline.models.SamViTSize", **SMALL},
                                    "image_size": SMALL["image_size"], "slices_per_volume": 2}))
    return checkpoint, override


@pytest.mark.slow
@pytest.mark.real_data
def test_train_resume_evaluate_infer_on_real_ct_series(shared_data, small_medsam, tmp_path):
    checkpoint, override = small_medsam
    root = shared_data / "dicom_ct_liver_seg"
    case = {"image": "ct-3slice", "label": "seg/liver.dcm"}
    split = tmp_path / "split.json"  # the only CT case: a pipeline check, not a held-out measurement
    split.write_text(json.dumps({"training": [case], "validation": [case]}))  # a test part may not repeat them
    common = {"dataset_dir": root, "split": split, "output_dir": tmp_path / "run", "checkpoint": checkpoint}

    first = bundle("train.json", override, max_epochs=1, **common)
    assert first.returncode == 0, first.stderr[-3000:]
    models = tmp_path / "run" / "models"
    model = torch.load(models / "model.pt", weights_only=True)
    resume = torch.load(models / "resume.pt", weights_only=True)
    assert resume["epoch"] == 1
    assert set(model["state_dict"]) == set(resume["network"]), "the model checkpoint holds only trainable tensors"
    assert any("adapter" in name for name in model["state_dict"])
    assert not any(name.startswith("prompt_encoder.") for name in model["state_dict"])

    second = bundle("train.json", override, max_epochs=2, **common)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "resumed from" in log and "at epoch 1" in log
    assert torch.load(models / "resume.pt", weights_only=True)["epoch"] == 2

    run_in_process("train.json", "evaluate.json", override, **common)
    rows = (tmp_path / "run" / "eval" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "case,class,dice,iou,hd95,nsd" and rows[1].split(",")[1] == "liver" and len(rows) == 2
    summary = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    assert all(math.isfinite(summary["liver"][m]["mean"]) for m in ("dice", "iou", "nsd"))

    run_in_process("train.json", "inference.json", override, input=root / "ct-3slice", **common)
    predictions = tmp_path / "run" / "predictions"
    seg = pydicom.dcmread(predictions / "ct-3slice_seg.dcm")
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in (root / "ct-3slice").glob("*.dcm")}
    referenced = {item.ReferencedSOPInstanceUID
                  for series in seg.ReferencedSeriesSequence for item in series.ReferencedInstanceSequence}
    assert seg.Modality == "SEG" and referenced == sources
    volume = nib.load(predictions / "ct-3slice.nii.gz")
    assert volume.shape == (512, 512, 3)


@pytest.mark.slow
@pytest.mark.real_data
def test_mr_nifti_volumes_as_slices_keep_the_input_geometry(shared_data, small_medsam, tmp_path):
    checkpoint, override = small_medsam
    root = shared_data / "msd_hippocampus"
    names = ["hippocampus_001.nii.gz", "hippocampus_003.nii.gz"]
    case = lambda n: {"image": f"imagesTr/{n}", "label": f"labelsTr/{n}"}  # noqa: E731
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"training": [case(names[0])], "test": [case(names[1])]}))
    size = SamViTSize(**{**SMALL, "global_attn_indexes": tuple(SMALL["global_attn_indexes"])})
    network = build_network("medsam_vit_b", method="dka", checkpoint=str(checkpoint), num_classes=3, prompt="none",
                             size=size)
    save_adapter(network, tmp_path / "run" / "models" / "model.pt")  # untrained: geometry is what is checked

    run_in_process("train.json", "inference.json", override, dataset_dir=root, split=split,
                   output_dir=tmp_path / "run", checkpoint=checkpoint, preset="mr_percentile", num_classes=3,
                   class_names=["anterior", "posterior"])
    source = nib.load(root / "imagesTr" / names[1])
    prediction = nib.load(tmp_path / "run" / "predictions" / "hippocampus_003.nii.gz")
    assert prediction.shape == source.shape
    np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-5)
    assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2}


@pytest.mark.real_data
def test_missing_checkpoint_ends_with_one_clear_line(shared_data, tmp_path):
    root = shared_data / "dicom_ct_liver_seg"
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"training": [{"image": "ct-3slice", "label": "seg/liver.dcm"}]}))
    with pytest.raises(SystemExit) as stop:  # SystemExit: MONAI does not wrap it; the line is printed, status 2
        run_in_process("train.json", dataset_dir=root, split=split, output_dir=tmp_path / "run")
    assert stop.value.code == EXIT_BAD_INPUT
    assert str(stop.value).startswith(
        "error: this bundle needs the backbone's pretrained weights: pass --checkpoint medsam_vit_b.pth")
    assert not (tmp_path / "run" / "models").exists(), "nothing was built"
