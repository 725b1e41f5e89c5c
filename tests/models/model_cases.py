"""Real and small synthetic cases shared by the backbone tests (imported by the tests and conftest.py)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from pipeline.models import SamViTSize

# A SAM ViT small enough for CPU tests (random weights): same classes as the official ViT-B/L/H.
SMALL_SAM = SamViTSize(
    embed_dim=32, depth=4, num_heads=2, global_attn_indexes=(1, 3), image_size=64, window_size=2,
    prompt_embed_dim=32, decoder_mlp_dim=64, decoder_heads=2,
)


def kvasir_names(data: Path, count: int) -> list[str]:
    return sorted(path.name for path in (data / "kvasir_seg" / "images").glob("*.jpg"))[:count]


def kvasir_case(data: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A Kvasir-SEG image ``(1, 3, H, W)`` (0..255 float) and its mask ``(1, 1, H, W)`` binarised at > 127."""
    folder = data / "kvasir_seg"
    image = np.asarray(Image.open(folder / "images" / name).convert("RGB"))
    mask = np.asarray(Image.open(folder / "masks" / name).convert("L")) > 127
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float(), torch.from_numpy(mask.copy())[None, None]


def hippocampus_case(data: Path, name: str = "hippocampus_001.nii.gz") -> tuple[torch.Tensor, torch.Tensor]:
    """An MSD hippocampus volume ``(1, 1, D, H, W)`` scaled to [0, 1] and its label (0/1/2) of the same shape."""
    folder = data / "msd_hippocampus"
    image = np.asarray(nib.load(folder / "imagesTr" / name).dataobj, dtype=np.float32)
    label = np.asarray(nib.load(folder / "labelsTr" / name).dataobj).astype(np.int64)
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-8)
    return torch.from_numpy(image)[None, None], torch.from_numpy(label)[None, None]
