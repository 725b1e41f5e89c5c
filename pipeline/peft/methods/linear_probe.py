"""Linear probing: the backbone stays frozen and only the task head trains (the floor every adapter must beat)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.peft.methods.base import Method, Sites


@dataclass(kw_only=True)
class LinearProbe(Method):
    name = "linear_probe"

    def inject(self, model: nn.Module, sites: Sites) -> list[nn.Parameter]:
        return []
