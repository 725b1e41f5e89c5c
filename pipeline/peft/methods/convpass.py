"""Convpass: a dense 3×3 convolution in the bottleneck, a parallel bypass that gives ViT blocks a local prior."""

from __future__ import annotations

from dataclasses import dataclass

from monai.networks.layers import Conv
from torch import nn

from pipeline.peft.methods.base import BottleneckMethod, require_odd
from pipeline.peft.modules import SpatialBottleneck
from pipeline.peft.spec import BlockSite


@dataclass(kw_only=True)
class Convpass(BottleneckMethod):
    name = "convpass"
    spatial = True
    r: int = 8
    kernel_size: int = 3
    placement: str = "parallel"
    init: str = "zero"

    def validate(self) -> None:
        super().validate()
        require_odd(self.name, "kernel_size", self.kernel_size)

    def build(self, site: BlockSite, position: int, count: int) -> nn.Module:
        conv_type = Conv[Conv.CONV, site.layout.spatial_dims]
        conv = conv_type(self.r, self.r, self.kernel_size, padding=self.kernel_size // 2)
        return SpatialBottleneck(site.channels, self.r, [conv], site.layout, self.dropout)
