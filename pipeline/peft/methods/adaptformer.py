"""AdaptFormer: a ReLU bottleneck parallel to the block, its output scaled by a fixed s (0.1)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.errors import PipelineError
from pipeline.peft.methods.base import BottleneckMethod
from pipeline.peft.modules import TokenBottleneck
from pipeline.peft.spec import BlockSite


@dataclass(kw_only=True)
class AdaptFormer(BottleneckMethod):
    name = "adaptformer"
    scale: float = 0.1
    placement: str = "parallel"
    init: str = "zero"

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.scale, (int, float)) or self.scale <= 0:
            raise PipelineError(f"{self.name}: scale must be a positive number, got {self.scale!r}")

    def build(self, site: BlockSite, position: int, count: int) -> nn.Module:
        return TokenBottleneck(site.channels, self.r, activation="relu", dropout=self.dropout, scale=self.scale)
