"""One training step per backbone x adapter method on a real image: finite loss, only trainable tensors change.

SAM ViT-B and MedSAM ViT-B are small random-weight builds (no SAM weights offline); LiteMedSAM has its shipped
weights. Swin-UNETR is small (feature_size 12). The images and labels are real (Kvasir-SEG, MSD hippocampus).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from pipeline.engine.prompts import boxes_from_labels
from pipeline.models import build_backbone
from pipeline.peft import apply_peft, param_groups
from tests.models.model_cases import SMALL_SAM, hippocampus_case, kvasir_case, kvasir_names

METHODS = ("dka", "adapter", "lora", "linear_probe")


def _polyp(data):
    image, mask = kvasir_case(data, kvasir_names(data, 1)[0])
    return image, mask.float()


def _case(name, data):
    """(model, inputs, target, loss) for one backbone configuration."""
    if name == "swin_unetr_3d":
        image, label = hippocampus_case(data)  # (35, 51, 35); cropped to 32x51x32 it is padded to 32x64x32
        image, label = image[..., :32, :, :32], label[..., :32, :, :32]  # inside: a 1x2x1 bottleneck
        model = build_backbone("swin_unetr", spatial_dims=3, num_classes=3, feature_size=12)
        return model, (image,), label, DiceCELoss(to_onehot_y=True, softmax=True)
    image, mask = _polyp(data)
    if name == "swin_unetr_2d":
        image = F.interpolate(image, size=(64, 64), mode="area") / 255.0
        mask = F.interpolate(mask, size=(64, 64), mode="nearest")
        model = build_backbone("swin_unetr", spatial_dims=2, in_channels=3, num_classes=2, feature_size=12)
        return model, (image,), mask, DiceCELoss(to_onehot_y=True, softmax=True)
    if name == "sam_vit_b_prompt_free":
        model = build_backbone("sam_vit_b", size=SMALL_SAM, prompt="none", num_classes=2)
        return model, (image,), mask, DiceCELoss(to_onehot_y=True, softmax=True)
    box = boxes_from_labels(mask, jitter=5)
    model = build_backbone(name, size=SMALL_SAM) if name == "medsam_vit_b" else build_backbone(name)
    return model, (image, box), mask, DiceCELoss(sigmoid=True)


def _step(model, inputs, target, loss_function, method):
    report = apply_peft(model, method, layers="middle")
    model.train()
    before = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == report.trainable
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3), lr=1e-3)
    logits = model(*inputs)
    assert logits.shape[2:] == inputs[0].shape[2:]
    loss = loss_function(logits, target)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed, "the step changed nothing"
    assert changed <= trainable, f"frozen tensors changed: {sorted(changed - trainable)[:5]}"
    if method != "linear_probe":
        assert changed - set(report.state.head), f"{method} trained only the head"


@pytest.mark.real_data
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "backbone",
    [
        "sam_vit_b_prompt_free",
        "medsam_vit_b",
        pytest.param("swin_unetr_2d", marks=pytest.mark.slow),
        pytest.param("swin_unetr_3d", marks=pytest.mark.slow),
    ],
)
def test_one_step_small_backbones(backbone, method, shared_data):
    _step(*_case(backbone, shared_data), method)


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("method", METHODS)
def test_one_step_litemedsam_shipped_weights(method, litemedsam, shared_data):
    image, mask = _polyp(shared_data)
    _step(litemedsam, (image, boxes_from_labels(mask, jitter=5)), mask, DiceCELoss(sigmoid=True), method)
