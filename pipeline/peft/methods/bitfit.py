"""BitFit: train only the bias terms of the chosen blocks (no new parameters at all)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pipeline.peft.methods.base import Method, Sites


@dataclass(kw_only=True)
class BitFit(Method):
    name = "bitfit"

    def inject(self, model: nn.Module, sites: Sites) -> list[nn.Parameter]:
        return [
            parameter
            for _, site in sites
            for name, parameter in model.get_submodule(site.path).named_parameters()
            if name == "bias" or name.endswith(".bias")
        ]
