"""Dual-Kernel Adapter: a 51×51 and a 5×5 depthwise kernel side by side inside a bottleneck.

Large kernels keep the effective receptive field wide when an adapter is trained on ~1 % of the data, where
ordinary adapters collapse; the small kernel keeps fine detail. In 3D a full 51³ kernel (132k taps per channel)
is unaffordable, so the default is the decomposed k×1×1 → 1×k×1 → 1×1×k form (docs/large_kernel.md measures both).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.peft.large_kernel import DecomposedDepthwiseConv3d, DepthwiseConv
from pipeline.peft.methods.base import BottleneckMethod, require_choice, require_odd
from pipeline.peft.modules import SpatialBottleneck
from pipeline.peft.spec import BlockSite

KERNELS_3D = ("decomposed", "full")


def large_kernel(channels: int, kernel_size: int, spatial_dims: int, kernel_3d: str) -> nn.Module:
    """The large depthwise branch: a full kernel in 2D, decomposed (or full, cropped to the map) in 3D."""
    if spatial_dims == 3 and kernel_3d == "decomposed":
        return DecomposedDepthwiseConv3d(channels, kernel_size)
    return DepthwiseConv(channels, kernel_size, spatial_dims=spatial_dims)


@dataclass(kw_only=True)
class DKA(BottleneckMethod):
    name = "dka"
    spatial = True
    kernel_large: int = 51
    kernel_small: int = 5
    kernel_3d: str = "decomposed"
    placement: str = "parallel"

    def validate(self) -> None:
        super().validate()
        require_odd(self.name, "kernel_large", self.kernel_large)
        require_odd(self.name, "kernel_small", self.kernel_small)
        require_choice(self.name, "kernel_3d", self.kernel_3d, KERNELS_3D)

    def build(self, site: BlockSite, position: int, count: int) -> nn.Module:
        dims = site.layout.spatial_dims
        convs = [
            large_kernel(self.r, self.kernel_large, dims, self.kernel_3d),
            DepthwiseConv(self.r, self.kernel_small, spatial_dims=dims),
        ]
        return SpatialBottleneck(site.channels, self.r, convs, site.layout, self.dropout)
