"""``python -m pipeline pretrain``: the pool never holds a test or validation case, the budget ends the run, a bad
input is one line naming the argument or file, and a short run writes an encoder that ``swin_unetr`` loads.
Every volume here is synthetic noise."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import cli
from pipeline.models import build_backbone
from pipeline.models.commands.pretrain import RECORD, budget_spent, pretraining_pool
from pipeline.models.pretrained import sha256_of

CASES = 6


@pytest.fixture
def volumes(tmp_path):
    """An MSD-layout folder of :data:`CASES` synthetic 3D volumes, smaller than a crop (as hippocampus ones are)."""
    root = tmp_path / "volumes"
    rng = np.random.default_rng(0)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for index in range(CASES):
        label = np.zeros((20, 26, 18), dtype=np.uint8)
        label[5:10, 6:12, 4:9] = 1
        image = (rng.random(label.shape) * 100).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"case{index}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"case{index}.nii.gz")
    return root


def _case(index: int) -> dict:
    return {"image": f"imagesTr/case{index}.nii.gz", "label": f"labelsTr/case{index}.nii.gz"}


def test_pool_is_training_and_unused_cases_never_validation_or_test(volumes, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"training": [_case(3)], "validation": [_case(1)], "test": [_case(0), _case(4)]}))
    pool, counts = pretraining_pool(volumes, split)
    assert [case["image"] for case in pool] == [str(volumes / _case(i)["image"]) for i in (3, 2, 5)]
    assert pool[0].keys() == {"image"}, "labels are never read"
    assert counts == {"training": 1, "unused": 2, "validation_left_out": 1, "test_left_out": 2}


def test_default_pool_leaves_out_the_default_split_held_out_cases(volumes):
    from pipeline.engine.cases import load_split

    held = load_split(volumes)
    pool, counts = pretraining_pool(volumes)
    held_out = {case["image"] for part in ("validation", "test") for case in held[part]}
    assert held_out and not held_out & {case["image"] for case in pool}
    assert len(pool) + len(held_out) == CASES and counts["unused"] == 0


@pytest.mark.parametrize("step, seconds, steps, minutes, spent", [
    (1, 0.0, 1, None, True), (1, 999.0, 2, None, False), (2, 0.0, 2, None, True),
    (1, 59.0, None, 1.0, False), (1, 60.0, None, 1.0, True), (1, 60.0, 5, 1.0, True), (5, 1.0, 5, 1.0, True),
])
def test_budget_is_steps_or_minutes_whichever_ends_first(step, seconds, steps, minutes, spent):
    assert budget_spent(step, seconds, steps, minutes) is spent


def _error_line(capsys, *argv) -> str:
    assert cli.main(["pretrain", *argv]) == cli.EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("extra, message", [
    (["--feature-size", "48"], "--feature-size 48: choose 12 or 24"),
    (["--crop", "48"], "--crop 48: the crop side must be a multiple of 32, at least 64"),
    (["--steps", "0"], "--steps 0: must be at least 1"),
    (["--minutes", "-1"], "--minutes -1.0: must be positive"),
    (["--batch-size", "1"], "--batch-size 1: contrastive coding needs at least 2 crops per step"),
    (["--preset", "rgb_endoscopy"], "--preset 'rgb_endoscopy': choose mr_percentile or ct_window"),
    (["--device", "gpu0"], "--device 'gpu0'"),
    (["--batch-size", "9"], "volumes: 3 volumes to pretrain on, fewer than --batch-size 9"),
    (["--split", "absent.json"], "split file absent.json does not exist (--split)"),
])
def test_bad_input_is_one_line_naming_it(volumes, tmp_path, capsys, extra, message):
    line = _error_line(capsys, str(volumes), "-o", str(tmp_path / "out"), "--steps", "1", *extra)
    assert line.startswith("error: ") and message in line, line


def test_no_budget_a_2d_folder_and_an_earlier_run_are_refused(volumes, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert "give a budget: --minutes and/or --steps" in _error_line(capsys, str(volumes), "-o", out)
    flat = tmp_path / "flat"
    for folder in ("images", "masks"):
        (flat / folder).mkdir(parents=True)
    for index in range(CASES):
        Image.fromarray(np.full((8, 8, 3), 40 * index, dtype=np.uint8)).save(flat / "images" / f"{index}.png")
        Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(flat / "masks" / f"{index}.png")
    line = _error_line(capsys, str(flat), "-o", out, "--steps", "1")
    assert "pretrain takes 3D volumes; this folder holds 2D images" in line, line
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / RECORD).write_text("{}")
    line = _error_line(capsys, str(volumes), "-o", out, "--steps", "1")
    assert "already holds a pretraining run; pass --overwrite to replace it" in line, line


@pytest.mark.slow
def test_a_short_run_logs_each_step_and_writes_an_encoder_swin_unetr_loads(volumes, tmp_path, capsys):
    """One step of batch 2 on 64^3 crops (about 30 s on the 2-core CPU)."""
    out = tmp_path / "out"
    assert cli.main(["pretrain", str(volumes), "-o", str(out), "--steps", "1", "--seed", "3"]) == 0
    log = capsys.readouterr().out
    assert "step 1/1: loss " in log and "rotation " in log and "reconstruction " in log, log
    record = json.loads((out / RECORD).read_text())
    assert record["steps_run"] == 1 and len(record["losses"]) == 1
    terms = record["losses"][0]
    assert all(np.isfinite(terms[name]) for name in ("loss", "rotation", "contrastive", "reconstruction"))
    assert record["settings"]["feature_size"] == 12 and record["settings"]["seed"] == 3
    assert record["pool"]["training"] == len(record["pool"]["images"]) == 3  # the default split: 2 test, 1 validation
    assert record["encoder_sha256"] == sha256_of(out / record["encoder"])
    model = build_backbone("swin_unetr", spatial_dims=3, feature_size=12, checkpoint=out / record["encoder"])
    stored = torch.load(out / record["encoder"], weights_only=True)["state_dict"]
    assert torch.equal(model.swinViT.state_dict()["layers1.0.blocks.0.mlp.linear1.weight"],
                       stored["module.layers1.0.blocks.0.mlp.fc1.weight"])
