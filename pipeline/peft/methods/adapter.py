"""The vanilla bottleneck adapter (Houlsby et al.): Linear(C→r) → GELU → Linear(r→C), after the block."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.peft.methods.base import BottleneckMethod
from pipeline.peft.modules import TokenBottleneck
from pipeline.peft.spec import BlockSite


@dataclass(kw_only=True)
class Adapter(BottleneckMethod):
    name = "adapter"
    dropout: float = 0.0
    placement: str = "sequential"
    init: str = "zero"

    def build(self, site: BlockSite, position: int, count: int) -> nn.Module:
        return TokenBottleneck(site.channels, self.r, dropout=self.dropout)
