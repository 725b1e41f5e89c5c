"""MONAI's Swin-UNETR (2D or 3D) as a segmentation backbone, optionally with MONAI's self-supervised encoder weights.

The self-supervised weights (``model_swinvit.pt``, from MONAI's Swin-UNETR pretraining) cover only the Swin
encoder, in the pretraining script's key layout: ``{"state_dict": {"module.layers1.0.blocks.0.mlp.fc1.weight": ...}}``.
They are mapped onto ``swinViT.*`` here with every encoder key accounted for, so a checkpoint of another
feature size or dimensionality fails with one clear error instead of silently loading half the encoder. The
UNETR encoders/decoders around it start from scratch: they form the task head that trains under every method.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR

from pipeline.errors import PipelineError
from pipeline.models.pretrained import load_into
from pipeline.peft.spec import BlockSite, ChannelsLast, PeftSpec

STAGES = ("layers1", "layers2", "layers3", "layers4")
DEPTHS = (2, 2, 2, 2)  # Swin blocks per stage, and attention heads per stage: Swin-UNETR's (and its pretraining's)
NUM_HEADS = (3, 6, 12, 24)
SSL_PREFIX = "module."  # the pretraining script saved its encoder from a DataParallel wrapper
# Input sides must be multiples of patch_size ** 5 (the encoder halves the resolution five times).
DIVISOR = 2**5


def _ssl_keys_to_encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pretraining layout (``module.`` prefix, ``mlp.fc1``) or a saved SwinUNETR -> keys inside ``swinViT``."""
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix(SSL_PREFIX).removeprefix("swinViT.").removeprefix("swin_vit.")
        renamed[re.sub(r"\.mlp\.fc([12])\.", r".mlp.linear\1.", key)] = value
    return renamed


def encoder_keys_to_ssl(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys inside ``swinViT`` -> the pretraining layout, the inverse of :func:`_ssl_keys_to_encoder`: our own
    pretraining writes the file MONAI's released ``model_swinvit.pt`` is, so one loader serves both."""
    return {SSL_PREFIX + re.sub(r"\.mlp\.linear([12])\.", r".mlp.fc\1.", key): value for key, value in state.items()}


def _outside_encoder(key: str) -> bool:
    """Checkpoint keys with no place in ``swinViT``: pretext heads of pretraining, or a saved model's decoder."""
    part = key.split(".")[0]
    return part != "patch_embed" and part not in STAGES


class SwinUNETRSegmenter(SwinUNETR):
    """Swin-UNETR whose forward pads the input to a multiple of 32 and crops the logits back to the input's size.

    Adapter sites are the Swin blocks of ``swinViT.layers1..4`` (stages 0-3; "middle" = layers2-3). The blocks
    take channels-last tokens ``(B, [D,] H, W, C)`` and are called as ``block(x, mask_matrix)``. The head is
    everything outside ``swinViT``. No intensity preprocessing happens here: MONAI transforms do that.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2, feature_size: int = 48,
                 depths: Sequence[int] = DEPTHS, num_heads: Sequence[int] = NUM_HEADS, **kwargs):
        if spatial_dims not in (2, 3):
            raise PipelineError(f"swin_unetr needs spatial_dims 2 or 3, got {spatial_dims}")
        if feature_size % 12 != 0:
            raise PipelineError(f"swin_unetr feature_size must be a multiple of 12, got {feature_size}")
        super().__init__(in_channels=in_channels, out_channels=num_classes, feature_size=feature_size,
                         depths=depths, num_heads=num_heads, spatial_dims=spatial_dims, **kwargs)
        self.spatial_dims = spatial_dims
        self.name = f"swin_unetr_{spatial_dims}d"
        self.sites = tuple(
            BlockSite(
                path=f"swinViT.{stage_name}.0.blocks.{index}",
                channels=feature_size * 2**stage,
                layout=ChannelsLast(spatial_dims=spatial_dims),
                stage=stage,
            )
            for stage, stage_name in enumerate(STAGES)
            for index in range(depths[stage])
        )

    def peft_spec(self) -> PeftSpec:
        head = tuple(name for name, _ in self.named_children() if name != "swinViT")
        return PeftSpec(name=self.name, blocks=self.sites, head=head)

    def load_encoder(self, path: str | Path) -> None:
        """Load MONAI's self-supervised Swin encoder weights (``model_swinvit.pt`` layout) into ``swinViT``."""
        load_into(self.swinViT, path, architecture=f"the Swin encoder of {self.name}",
                  rename=_ssl_keys_to_encoder,
                  ignore_unexpected=_outside_encoder)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_classes, *image.shape[2:])``. Swin-UNETR takes no prompts: ``boxes`` must be None."""
        if boxes is not None:
            raise PipelineError(f"{self.name} takes no box prompts; build a SAM-family backbone for boxes")
        if image.dim() != self.spatial_dims + 2:
            raise PipelineError(
                f"{self.name} takes (B, C, {'D, ' if self.spatial_dims == 3 else ''}H, W) images, "
                f"got shape {tuple(image.shape)}"
            )
        spatial = image.shape[2:]
        padding = []
        for side in reversed(spatial):
            padding += [0, (-side) % DIVISOR]
        logits = super().forward(F.pad(image, padding))
        return logits[(..., *(slice(0, side) for side in spatial))]


def build_swin_unetr(
    checkpoint: str | Path | None = None,
    num_classes: int = 2,
    spatial_dims: int = 3,
    prompt: str | None = None,
    in_channels: int = 1,
    feature_size: int = 48,
    **kwargs,
) -> SwinUNETRSegmenter:
    """Swin-UNETR; ``checkpoint`` is MONAI's self-supervised encoder file (3D, ``feature_size=48``, 1 channel)."""
    if prompt not in (None, "none"):
        raise PipelineError(f"swin_unetr takes no prompts; got prompt={prompt!r}")
    model = SwinUNETRSegmenter(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                               feature_size=feature_size, **kwargs)
    if checkpoint is not None:
        model.load_encoder(checkpoint)
    return model
