"""Self-supervised pretraining of Swin-UNETR's encoder on unlabelled volumes (Tang et al., CVPR 2022).

Few-shot segmentation has few labels but often many unlabelled scans; the published recipe turns them into three
pretext tasks solved from one shared Swin encoder, so the encoder learns anatomy before any label is seen:

- **rotation**: each crop is turned by 0, 90, 180 or 270 degrees in one plane and a linear head names the turn
  (4 classes, cross-entropy);
- **contrastive coding**: two differently rotated and masked views of the same crop should embed close together and
  far from the other crops of the batch (MONAI's ``ContrastiveLoss``, temperature 0.5);
- **masked-volume inpainting**: cuboids of each view are replaced by noise and by the content of another crop of
  the batch, and a convolutional upsampling head restores the (rotated, unmasked) crop (L1).

The loss is their unweighted sum, as in the paper. As in MONAI's reference script
(``research-contributions/SwinUNETR/Pretrain``), the rotation head reads bottleneck token 0 and the contrastive head
token 1 (up to 112-voxel crops the last stage attends over all its tokens in one window, so each of them sees
the whole crop), and the reconstruction head is its "vae" decoder. One departure: the cutout noise is uniform on
[0, 1], the intensity range every preset maps to, instead of min-max scaled Gaussian noise.

Only the encoder is kept: :func:`save_encoder` writes it in the key layout of MONAI's released
``model_swinvit.pt``, which :meth:`pipeline.models.swin_unetr.SwinUNETRSegmenter.load_encoder` (and MONAI's own
``SwinUNETR.load_from``) read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.losses import ContrastiveLoss
from monai.networks.blocks import Convolution, UpSample
from monai.networks.nets.swin_unetr import SwinTransformer
from monai.transforms import RandCoarseDropout, Randomizable, Rotate90
from monai.utils import convert_to_tensor
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.swin_unetr import DEPTHS, DIVISOR, NUM_HEADS, encoder_keys_to_ssl
from pipeline.peft.checkpoint import atomic_save

SPATIAL_DIMS = 3
ROTATIONS = 4  # quarter turns: the rotation head's classes
ROTATION_AXES = (1, 2)  # spatial axes of a (C, H, W, D) crop turned in one plane, as MONAI's script turns (W, D)
CONTRASTIVE_DIM = 512
MAX_MASKED = 0.3  # at most this share of a crop is masked, with cuboid sides from 5 % to 25 % of the crop's
BLOCK_SIDES = (0.05, 0.25)
ENCODER_FILE = "model_swinvit.pt"


def check_crop(crop: int) -> None:
    """The encoder halves the resolution five times, so a crop side must be a multiple of 32; and at least 64, as
    the heads read two bottleneck tokens and the decoder's instance norm needs more than one voxel."""
    if crop < 2 * DIVISOR or crop % DIVISOR:
        raise PipelineError(f"--crop {crop}: the crop side must be a multiple of {DIVISOR}, at least {2 * DIVISOR}")


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """MONAI's array transforms return MetaTensors; the views are plain tensors, cheaper to batch and compare."""
    return convert_to_tensor(tensor, track_meta=False)


@dataclass
class Views:
    """One view of a batch of crops: the network's input, what inpainting must restore, and the pretext targets."""

    masked: torch.Tensor  # (B, C, S, S, S): rotated crops with masked cuboids, the network's input
    target: torch.Tensor  # (B, C, S, S, S): the rotated crops before masking, the reconstruction target
    rotation: torch.Tensor  # (B,) quarter turns 0..3, the rotation head's target
    mask: torch.Tensor  # (B, 1, S, S, S) bool: True where ``masked`` differs from ``target`` by construction


class PretextViews(Randomizable):
    """Random views of a batch of crops: a quarter turn per crop (MONAI ``Rotate90``), then cutout and inpainting
    cuboids (MONAI ``RandCoarseDropout``): first filled with noise, then with the same place of another crop.

    The number of cuboids per fill is drawn between 1 and the count of largest cuboids that covers
    :data:`MAX_MASKED` of the crop (MONAI draws each cuboid's smallest side from the previous cuboid's, so the sides
    soon approach the largest), so each fill masks 0-30 % as the reference script's drop loop does. One random
    stream (``R``) drives the turns and the cuboids, so ``set_random_state(seed)`` makes the views reproducible.
    """

    def __init__(self, crop: int) -> None:
        check_crop(crop)
        low, high = (max(1, round(share * crop)) for share in BLOCK_SIDES)
        holes = max(1, math.ceil(MAX_MASKED * (crop / high) ** SPATIAL_DIMS))
        self.dropout = RandCoarseDropout(holes=1, max_holes=holes, spatial_size=low, max_spatial_size=high,
                                         fill_value=(0.0, 1.0), prob=1.0)
        self.set_random_state()

    def set_random_state(self, seed: int | None = None, state=None) -> PretextViews:
        super().set_random_state(seed, state)
        self.dropout.set_random_state(state=self.R)
        return self

    def randomize(self, data=None) -> None:
        """Views draw as they go (a turn, then cuboids per crop); nothing is drawn ahead."""

    def rotate(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each crop turned by a random number of quarter turns; returns the turned crops and the turns."""
        turns = torch.as_tensor(self.R.randint(ROTATIONS, size=len(crops)), dtype=torch.long)
        turned = [_plain(Rotate90(k=int(k), spatial_axes=ROTATION_AXES)(crop))
                  for crop, k in zip(crops, turns, strict=True)]
        return torch.stack(turned), turns

    def _holes(self, crop: torch.Tensor) -> torch.Tensor:
        """The cuboids of the dropout's last draw, as a one-channel boolean mask of ``crop``'s grid."""
        mask = torch.zeros((1, *crop.shape[1:]), dtype=torch.bool)
        for hole in self.dropout.hole_coords:
            mask[hole] = True
        return mask

    def mask(self, crop: torch.Tensor, partner: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``crop`` (C, *S) with noise cuboids and, given a ``partner`` crop, cuboids of the partner's content;
        returns the masked crop and where it was masked. ``crop`` itself is left untouched."""
        masked = _plain(self.dropout(crop.clone()))  # a clone: MONAI fills a NumPy view of its input in place
        where = self._holes(crop)
        if partner is not None:
            self.dropout.randomize(crop.shape[1:])
            for hole in self.dropout.hole_coords:
                masked[hole] = partner[hole]
            where |= self._holes(crop)
        return masked, where

    def __call__(self, crops: torch.Tensor) -> Views:
        """One view of ``crops`` (B, C, S, S, S); call twice for the two views contrastive coding compares."""
        target, turns = self.rotate(_plain(crops).cpu())
        masked, where = [], []
        for index, crop in enumerate(target):
            others = len(target) - 1
            partner = target[(index + 1 + self.R.randint(others)) % len(target)] if others else None
            view, holes = self.mask(crop, partner)
            masked.append(view)
            where.append(holes)
        return Views(masked=torch.stack(masked), target=target, rotation=turns, mask=torch.stack(where))


@dataclass
class PretextOutputs:
    rotation: torch.Tensor  # (B, 4) logits
    embedding: torch.Tensor  # (B, CONTRASTIVE_DIM)
    reconstruction: torch.Tensor  # (B, C, S, S, S)


class SwinPretrainer(nn.Module):
    """MONAI's Swin encoder (``swinViT``, exactly as Swin-UNETR builds it) with the three pretext heads.

    The reconstruction head is the reference's "vae" decoder: five rounds of 3x3x3 convolution, instance norm,
    LeakyReLU and trilinear 2x upsampling from the 1/32 bottleneck back to the crop, then a 1x1x1 convolution.
    """

    def __init__(self, feature_size: int = 12, in_channels: int = 1) -> None:
        super().__init__()
        if feature_size < 12 or feature_size % 12:
            raise PipelineError(f"--feature-size {feature_size}: Swin-UNETR needs a positive multiple of 12")
        self.feature_size = feature_size
        # window 7 and patch 2 are Swin-UNETR's (MONAI's defaults, which SwinUNETRSegmenter keeps)
        self.swinViT = SwinTransformer(in_chans=in_channels, embed_dim=feature_size,
                                       window_size=(7,) * SPATIAL_DIMS, patch_size=(2,) * SPATIAL_DIMS,
                                       depths=DEPTHS, num_heads=NUM_HEADS, spatial_dims=SPATIAL_DIMS)
        width = feature_size * 2 ** len(DEPTHS)  # channels at the bottleneck
        self.rotation_head = nn.Linear(width, ROTATIONS)
        self.contrastive_head = nn.Linear(width, CONTRASTIVE_DIM)
        channels = [width, width // 2, width // 4, width // 8, width // 16, width // 16]
        stages: list[nn.Module] = []
        for inputs, outputs in zip(channels[:-1], channels[1:], strict=True):
            stages += [
                Convolution(SPATIAL_DIMS, inputs, outputs, kernel_size=3, norm="instance", act="leakyrelu"),
                UpSample(SPATIAL_DIMS, scale_factor=2, mode="nontrainable", interp_mode="trilinear",
                         align_corners=False),
            ]
        stages.append(Convolution(SPATIAL_DIMS, channels[-1], in_channels, kernel_size=1, conv_only=True))
        self.reconstruction_head = nn.Sequential(*stages)

    def forward(self, image: torch.Tensor) -> PretextOutputs:
        bottleneck = self.swinViT(image.contiguous(), normalize=True)[-1]
        tokens = bottleneck.flatten(2)
        return PretextOutputs(rotation=self.rotation_head(tokens[:, :, 0]),
                              embedding=self.contrastive_head(tokens[:, :, 1]),
                              reconstruction=self.reconstruction_head(bottleneck))


class PretextLoss(nn.Module):
    """Rotation cross-entropy + contrastive loss between the two views + L1 inpainting loss, unweighted.

    Returns every term (``rotation``, ``contrastive``, ``reconstruction``) and their sum (``loss``), so a log shows
    which task is still learning.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        self.rotation = nn.CrossEntropyLoss()
        self.contrastive = ContrastiveLoss(temperature=temperature)
        self.reconstruction = nn.L1Loss()

    def forward(self, outputs: tuple[PretextOutputs, PretextOutputs], views: tuple[Views, Views]
                ) -> dict[str, torch.Tensor]:
        device = outputs[0].rotation.device
        terms = {
            "rotation": self.rotation(torch.cat([out.rotation for out in outputs]),
                                      torch.cat([view.rotation for view in views]).to(device)),
            "contrastive": self.contrastive(outputs[0].embedding, outputs[1].embedding),
            "reconstruction": self.reconstruction(torch.cat([out.reconstruction for out in outputs]),
                                                  torch.cat([view.target for view in views]).to(device)),
        }
        return {"loss": sum(terms.values()), **terms}


def save_encoder(model: SwinPretrainer, path: str | Path) -> Path:
    """Write the encoder as MONAI's ``model_swinvit.pt`` is laid out (``{"state_dict": {"module.layers1...":
    ...}}``), atomically: a run killed while saving never leaves a truncated file for fine-tuning to trip over."""
    state = {key: value.detach().cpu() for key, value in model.swinViT.state_dict().items()}
    return atomic_save({"state_dict": encoder_keys_to_ssl(state)}, path)
