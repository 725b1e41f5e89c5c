"""Parameter-efficient fine-tuning of frozen backbones: one injector for every method and every backbone.

>>> report = apply_peft(model, "dka", layers="middle", r=16)
>>> optimizer = torch.optim.AdamW(param_groups(model, lr=1e-4, adapter_lr=1e-3, head_lr=1e-4))
>>> save_adapter(model, "adapter.pt")
"""

from pipeline.peft.checkpoint import (
    adapter_payload,
    atomic_save,
    atomic_write,
    load_adapter,
    read_adapter,
    save_adapter,
    trainable_state_dict,
)
from pipeline.peft.groups import param_groups
from pipeline.peft.injector import PeftReport, PeftState, apply_peft, peft_state_of
from pipeline.peft.methods import METHODS, build_method
from pipeline.peft.spec import BlockSite, ChannelsLast, PeftSpec, TokenGrid, TokenSequence

__all__ = [
    "METHODS",
    "BlockSite",
    "ChannelsLast",
    "PeftReport",
    "PeftSpec",
    "PeftState",
    "TokenGrid",
    "TokenSequence",
    "adapter_payload",
    "apply_peft",
    "atomic_save",
    "atomic_write",
    "build_method",
    "load_adapter",
    "param_groups",
    "peft_state_of",
    "read_adapter",
    "save_adapter",
    "trainable_state_dict",
]
