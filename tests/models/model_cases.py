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

# A CLIPSeg small enough for CPU tests (random weights), with the real model's depths (12 text layers, vision layers
# up to 9, the deepest the decoder reads) so the paper's layer selection applies unchanged. CLIPSegConfig keyword
# arguments, kept JSON-ready: the bundle test writes them into a bundle override.
TINY_CLIPSEG = {
    "text_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 12, "num_attention_heads": 2,
                    "vocab_size": 64, "max_position_embeddings": 16, "bos_token_id": 62, "eos_token_id": 63,
                    "pad_token_id": 1},
    "vision_config": {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 10, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 16},
    "projection_dim": 16, "reduce_dim": 8, "decoder_intermediate_size": 16, "decoder_num_attention_heads": 2,
    "use_complex_transposed_convolution": True,
}
TINY_CLIPSEG_IMAGE = 64  # the tiny model's input size (4×4 patches), in place of CLIPSeg's 352


def tiny_clipseg(prompts=("polyp",), num_classes: int = 1, **options):
    """A random-weight CLIPSeg of :data:`TINY_CLIPSEG` through the registry."""
    from transformers import CLIPSegConfig

    from pipeline.models import build_backbone

    return build_backbone("clipseg", config=CLIPSegConfig(**TINY_CLIPSEG), prompts=list(prompts),
                          num_classes=num_classes, image_size=TINY_CLIPSEG_IMAGE, **options)


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
