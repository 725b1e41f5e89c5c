"""LoRA on the attention projections of the chosen blocks, injected by the ``peft`` library.

peft's LoRA layers work on any ``nn.Linear``, so the same call serves SAM, TinyViT and Swin attention; the block
spec names which Linear layers are the attention's (``qkv`` and ``proj`` in all three).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from pipeline.errors import PipelineError
from pipeline.peft.methods.base import Method, Sites, require_fraction, require_positive


@dataclass(kw_only=True)
class LoRA(Method):
    name = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0

    def validate(self) -> None:
        require_positive(self.name, "r", self.r)
        require_positive(self.name, "alpha", self.alpha)
        require_fraction(self.name, "dropout", self.dropout)

    def inject(self, model: nn.Module, sites: Sites) -> list[nn.Parameter]:
        from peft import LoraConfig, inject_adapter_in_model

        targets = [f"{site.path}.{name}" for _, site in sites for name in site.attention]
        modules = dict(model.named_modules())
        wrong = [t for t in targets if not isinstance(modules.get(t), nn.Linear)]
        if wrong:
            raise PipelineError(f"lora: these attention layers are not nn.Linear in the model: {wrong}")
        pattern = "^(?:" + "|".join(re.escape(t) for t in targets) + ")$"
        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=pattern)
        inject_adapter_in_model(config, model)
        return [p for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
