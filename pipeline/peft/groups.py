"""Optimizer parameter groups for the DKA paper's asynchronous learning rates (adapters vs. task head)."""

from __future__ import annotations

from torch import nn

from pipeline.engine.distributed import unwrap
from pipeline.peft.injector import peft_state_of


def param_groups(model: nn.Module, lr: float, adapter_lr: float | None = None, head_lr: float | None = None,
                 weight_decay: float = 0.0) -> list[dict]:
    """``[{"name": "adapter", ...}, {"name": "head", ...}]`` for any ``torch.optim`` optimizer.

    Each group gets its own learning rate (``adapter_lr`` / ``head_lr``, falling back to ``lr``); empty groups
    (``linear_probe`` has no adapter, a headless backbone has no head) are left out because optimizers reject them.
    """
    state = peft_state_of(model)
    inner = unwrap(model)
    named = dict(inner.named_parameters())
    groups = []
    for name, names, group_lr in (("adapter", state.adapter, adapter_lr), ("head", state.head, head_lr)):
        params = [named[n] for n in names if named[n].requires_grad]
        if params:
            groups.append({"name": name, "params": params, "lr": lr if group_lr is None else group_lr,
                           "weight_decay": weight_decay})
    return groups
