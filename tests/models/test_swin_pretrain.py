"""Swin-UNETR self-supervised pretraining: the views' targets, the loss terms, gradients to every head, and the saved
encoder loading into ``swin_unetr``. Every volume here is synthetic random noise."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import SwinUNETR

from pipeline.errors import PipelineError
from pipeline.models import build_backbone
from pipeline.models.commands.pretrain import LEARNING_RATE
from pipeline.models.swin_pretrain import (
    ENCODER_FILE,
    MAX_MASKED,
    PretextLoss,
    PretextOutputs,
    PretextViews,
    SwinPretrainer,
    Views,
    check_crop,
    save_encoder,
)

CROP = 64


def test_rotation_targets_name_the_quarter_turn():
    crops = torch.rand(12, 1, CROP, CROP, CROP)
    views = PretextViews(CROP).set_random_state(0)(crops)
    assert set(views.rotation.tolist()) == {0, 1, 2, 3}, "12 draws with this seed hold every turn"
    for crop, turned, turns in zip(crops, views.target, views.rotation, strict=True):
        # the reference script turns a (C, H, W, D) crop in its (W, D) plane
        assert torch.equal(turned, torch.rot90(crop, int(turns), dims=(2, 3))), int(turns)


def test_masking_changes_exactly_the_masked_voxels():
    """A crop of -1 with a partner of 5: noise fills lie in [0, 1) and partner fills are 5, so every voxel tells
    whether it was masked, and the returned mask must say the same."""
    views = PretextViews(CROP).set_random_state(0)
    crop = torch.full((1, CROP, CROP, CROP), -1.0)
    masked, where = views.mask(crop, partner=torch.full_like(crop, 5.0))
    assert torch.equal(masked != -1, where)
    assert bool((masked == 5).any()) and bool(((masked >= 0) & (masked < 1)).any()), "noise and partner fills"
    assert torch.equal(crop, torch.full_like(crop, -1.0)), "the input crop is left untouched"
    alone, where_alone = views.mask(crop)
    assert torch.equal(alone != -1, where_alone) and not bool((alone == 5).any())


def test_each_fill_masks_up_to_the_reference_share():
    views = PretextViews(CROP).set_random_state(0)
    crop = torch.zeros(1, CROP, CROP, CROP)
    shares = [float(views.mask(crop)[1].float().mean()) for _ in range(40)]
    assert 0 < min(shares) < MAX_MASKED / 3 and MAX_MASKED / 2 < max(shares) <= MAX_MASKED + 0.05, shares


def test_views_mask_the_turned_crop_and_are_reproducible():
    crops = torch.rand(3, 1, CROP, CROP, CROP)
    first = PretextViews(CROP).set_random_state(7)(crops)
    again = PretextViews(CROP).set_random_state(7)(crops)
    assert all(torch.equal(getattr(first, name), getattr(again, name)) for name in ("masked", "target", "rotation"))
    outside = ~first.mask.expand_as(first.target)
    assert torch.equal(first.masked[outside], first.target[outside]), "the network sees the turned crop outside"
    assert first.mask.any() and not torch.equal(first.masked, first.target)
    other = PretextViews(CROP).set_random_state(8)(crops)
    assert not torch.equal(other.masked, first.masked)


def _outputs(views: Views, reconstruction: torch.Tensor) -> PretextOutputs:
    logits = torch.nn.functional.one_hot(views.rotation, 4).float() * 5
    return PretextOutputs(rotation=logits, embedding=torch.eye(len(views.rotation), 8), reconstruction=reconstruction)


def test_loss_is_the_sum_of_the_three_tasks_and_inpainting_restores_the_unmasked_crop():
    crops = torch.rand(2, 1, CROP, CROP, CROP)
    maker = PretextViews(CROP).set_random_state(0)
    views = (maker(crops), maker(crops))
    loss = PretextLoss()
    perfect = loss(tuple(_outputs(view, view.target) for view in views), views)
    assert float(perfect["reconstruction"]) == 0.0, "the target is the turned crop before masking"
    expected = perfect["rotation"] + perfect["contrastive"] + perfect["reconstruction"]
    assert torch.allclose(perfect["loss"], expected)
    assert float(perfect["rotation"]) < 0.05, "confident right turns"
    copied = loss(tuple(_outputs(view, view.masked) for view in views), views)
    assert float(copied["reconstruction"]) > 0.01, "copying the masked input is not a reconstruction"
    wrong = tuple(PretextOutputs(rotation=_outputs(view, view.target).rotation.roll(1, dims=1),
                                 embedding=torch.eye(2, 8), reconstruction=view.target) for view in views)
    assert float(loss(wrong, views)["rotation"]) > 1.0


@pytest.mark.parametrize("crop", [32, 48, 96 + 1])
def test_crops_the_encoder_cannot_take_are_refused(crop):
    with pytest.raises(PipelineError, match=rf"--crop {crop}: the crop side must be a multiple of 32, at least 64"):
        check_crop(crop)
    check_crop(96)


@pytest.mark.parametrize("feature_size", [12, 24])
def test_saved_encoder_loads_into_swin_unetr_tensor_for_tensor(tmp_path, feature_size):
    model = SwinPretrainer(feature_size=feature_size)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.rand_like(parameter))  # far from any fresh initialisation
    path = save_encoder(model, tmp_path / ENCODER_FILE)
    assert [p.name for p in tmp_path.iterdir()] == [ENCODER_FILE], "written atomically, no temporary file left"
    stored = torch.load(path, weights_only=True)
    assert list(stored) == ["state_dict"]
    assert "module.layers1.0.blocks.0.mlp.fc1.weight" in stored["state_dict"], "MONAI's model_swinvit.pt layout"
    assert len(stored["state_dict"]) == len(model.swinViT.state_dict()), "the encoder only, no pretext head"
    segmenter = build_backbone("swin_unetr", spatial_dims=3, feature_size=feature_size, checkpoint=path)
    monai = SwinUNETR(in_channels=1, out_channels=2, feature_size=feature_size)
    monai.load_from(stored)  # MONAI's own loader for this layout
    loaded, loaded_by_monai = segmenter.swinViT.state_dict(), monai.swinViT.state_dict()
    assert loaded.keys() == model.swinViT.state_dict().keys()
    for key, value in model.swinViT.state_dict().items():
        assert torch.equal(loaded[key], value), key
        assert torch.equal(loaded_by_monai[key], value), key


def test_feature_size_must_be_a_multiple_of_12():
    with pytest.raises(PipelineError, match="--feature-size 18: Swin-UNETR needs a positive multiple of 12"):
        SwinPretrainer(feature_size=18)


@pytest.mark.slow
def test_gradients_reach_every_head_and_a_fixed_batch_is_learned():
    """Three steps on one pair of views, then the loss again (about 25 s a step on the 2-core CPU)."""
    model = SwinPretrainer(feature_size=12).train()
    maker = PretextViews(CROP).set_random_state(0)
    crops = torch.rand(2, 1, CROP, CROP, CROP)
    views = (maker(crops), maker(crops))
    loss = PretextLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    totals = []
    for step in range(4):
        terms = loss(tuple(model(view.masked) for view in views), views)
        assert all(math.isfinite(float(value)) for value in terms.values()), terms
        totals.append(float(terms["loss"]))
        if step == 3:
            break
        optimizer.zero_grad()
        terms["loss"].backward()
        if step == 0:
            for part in ("swinViT", "rotation_head", "contrastive_head", "reconstruction_head"):
                grads = [p.grad for p in getattr(model, part).parameters()]
                assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads), part
                assert sum(float(g.abs().sum()) for g in grads) > 0, part
        optimizer.step()
    assert totals[-1] < totals[0], totals
