"""Pretrained segmentation backbones, built by name, ready for :func:`pipeline.peft.apply_peft`.

Every backbone is an ``nn.Module`` with ``forward(image, boxes=None) -> logits`` (``forward(image)`` for the
text-prompted ``clipseg``, whose prompts are fixed at build time) at the input's resolution and a
``peft_spec()`` naming its adapter sites, token layout and task head.

>>> model = build_backbone("litemedsam")                          # shipped weights, box-prompted
>>> logits = model(image, boxes)                                  # (B, 1, H, W)
>>> model = build_backbone("sam_vit_b", checkpoint="sam_vit_b_01ec64.pth", prompt="none", num_classes=3)
>>> model = build_backbone("swin_unetr", spatial_dims=3, num_classes=3, checkpoint="model_swinvit.pt")
>>> model = build_backbone("clipseg", checkpoint="clipseg-rd64-refined/", prompts=["polyp"])  # text-prompted
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.clipseg import CLIPSegSegmenter, build_clipseg
from pipeline.models.feature_cache import FeatureCache
from pipeline.models.litemedsam import SHIPPED, build_litemedsam
from pipeline.models.sam import SamInput, SamSegmenter, SamViTSize, build_sam_vit
from pipeline.models.swin_unetr import SwinUNETRSegmenter, build_swin_unetr

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "litemedsam": build_litemedsam,
    "sam_vit_b": partial(build_sam_vit, "sam_vit_b"),
    "sam_vit_l": partial(build_sam_vit, "sam_vit_l"),
    "sam_vit_h": partial(build_sam_vit, "sam_vit_h"),
    "medsam_vit_b": partial(build_sam_vit, "medsam_vit_b"),
    "swin_unetr": build_swin_unetr,
    "clipseg": build_clipseg,
}

SHIPPED_WEIGHTS = ("litemedsam",)
"""Backbones whose pretrained weights come with the install: their ``checkpoint`` may be :data:`SHIPPED`."""


def build_backbone(name: str, **kwargs) -> nn.Module:
    """The backbone registered as ``name``; ``kwargs`` go to its builder (``checkpoint``, ``num_classes``,
    ``spatial_dims``, ``prompt`` and family-specific options)."""
    if name not in BACKBONES:
        raise PipelineError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name](**kwargs)


__all__ = [
    "BACKBONES",
    "SHIPPED",
    "SHIPPED_WEIGHTS",
    "CLIPSegSegmenter",
    "FeatureCache",
    "SamInput",
    "SamSegmenter",
    "SamViTSize",
    "SwinUNETRSegmenter",
    "build_backbone",
    "build_clipseg",
    "build_litemedsam",
    "build_sam_vit",
    "build_swin_unetr",
]
