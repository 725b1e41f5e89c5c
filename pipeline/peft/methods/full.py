"""Full fine-tuning: every parameter trains (the ceiling, and what few-shot data usually overfits)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.peft.methods.base import Method, Sites


@dataclass(kw_only=True)
class Full(Method):
    name = "full"

    def inject(self, model: nn.Module, sites: Sites) -> list[nn.Parameter]:
        return list(model.parameters())
