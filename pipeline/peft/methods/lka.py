"""Large-Kernel Adapter: one large depthwise kernel inside a bottleneck, parallel to the block (as LKA found best).

DKA without the small kernel: the ablation that isolates what the large receptive field alone buys.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.peft.methods.base import BottleneckMethod, require_choice, require_odd
from pipeline.peft.methods.dka import KERNELS_3D, large_kernel
from pipeline.peft.modules import SpatialBottleneck
from pipeline.peft.spec import BlockSite


@dataclass(kw_only=True)
class LKA(BottleneckMethod):
    name = "lka"
    spatial = True
    kernel_size: int = 51
    kernel_3d: str = "decomposed"
    placement: str = "parallel"

    def validate(self) -> None:
        super().validate()
        require_odd(self.name, "kernel_size", self.kernel_size)
        require_choice(self.name, "kernel_3d", self.kernel_3d, KERNELS_3D)

    def build(self, site: BlockSite, position: int, count: int) -> nn.Module:
        conv = large_kernel(self.r, self.kernel_size, site.layout.spatial_dims, self.kernel_3d)
        return SpatialBottleneck(site.channels, self.r, [conv], site.layout, self.dropout)
