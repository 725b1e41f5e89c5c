"""Telescopic adapters: bottleneck width grows linearly with depth (deeper blocks carry more task-specific change).

LayerNorm → Linear(C→r_i) → SiLU → dropout → Linear(r_i→C), scaled by a learnable α initialised to 0.1, with
r_i running linearly from ``r_min`` at the first chosen block to ``r_max`` at the last. In a vision-language model
(CLIPSeg) the text encoder's blocks get the fixed width ``r_text`` and the conditional embedding ``r_conditional``
(the paper's 16 and 8); the image encoder's blocks telescope on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.errors import PipelineError
from pipeline.peft.methods.base import BlockAdapterMethod, require_fraction, require_positive
from pipeline.peft.modules import TokenBottleneck
from pipeline.peft.spec import BlockSite


def telescopic_width(r_min: int, r_max: int, position: int, count: int) -> int:
    """Width of the ``position``-th of ``count`` adapters, linear from ``r_min`` to ``r_max``."""
    if count == 1:
        return r_min
    return round(r_min + (r_max - r_min) * position / (count - 1))


@dataclass(kw_only=True)
class Telescopic(BlockAdapterMethod):
    name = "telescopic"
    r_min: int = 8
    r_max: int = 32
    r_text: int = 16
    r_conditional: int = 8
    alpha: float = 0.1
    dropout: float = 0.1
    placement: str = "sequential"
    init: str = "paper"

    def validate(self) -> None:
        super().validate()
        require_positive(self.name, "r_min", self.r_min)
        require_positive(self.name, "r_max", self.r_max)
        require_positive(self.name, "r_text", self.r_text)
        require_positive(self.name, "r_conditional", self.r_conditional)
        require_fraction(self.name, "dropout", self.dropout)
        if self.r_max < self.r_min:
            raise PipelineError(f"{self.name}: r_max ({self.r_max}) must be at least r_min ({self.r_min})")

    def build(self, site: BlockSite, position: int, count: int) -> nn.Module:
        fixed = {"text": self.r_text, "conditional": self.r_conditional}
        width = fixed[site.group] if site.group in fixed else telescopic_width(self.r_min, self.r_max, position, count)
        return TokenBottleneck(site.channels, width, activation="silu", dropout=self.dropout, norm=True,
                               scale=self.alpha, learnable_scale=True)
