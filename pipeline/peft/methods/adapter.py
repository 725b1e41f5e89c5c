"""The vanilla bottleneck adapter (Houlsby et al.): Linear(C→r) → GELU → Linear(r→C), after the block."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.peft.methods.base import BlockAdapterMethod, require_positive
from pipeline.peft.modules import TokenBottleneck
from pipeline.peft.spec import BlockSite


@dataclass(kw_only=True)
class Adapter(BlockAdapterMethod):
    name = "adapter"
    r: int = 16
    placement: str = "sequential"
    init: str = "zero"

    def validate(self) -> None:
        super().validate()
        require_positive(self.name, "r", self.r)

    def build(self, site: BlockSite, position: int, count: int) -> nn.Module:
        return TokenBottleneck(site.channels, self.r)
