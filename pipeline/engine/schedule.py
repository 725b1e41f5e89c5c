"""The learning-rate schedule every bundle trains with: a cosine decay over epochs, its first steps warmed up.

Why a warmup. Adam's first updates are about ``lr`` per weight whatever the gradient's size (its second-moment
estimate is still a few samples), so at the prompt-free head's LR of 1e-3 the first steps move the pretrained
mask decoder by several per cent. On Kvasir-SEG split k = 10, seed 1 that collapsed the decoder's upscaled
features (their spatial spread fell to a quarter of the shipped decoder's): the foreground and background logits
became an all-but-constant offset, and the head predicted the background prior for all 120 steps
(``docs/results.md``, "The prompt-free head"). Scaling the first steps' LR down lets Adam's estimates settle
before the full LR acts: the standard remedy. Chosen on validation (``configs/kvasir_warmup.yaml``): over six
few-shot splits, 10 steps of warmup left none at all-background and gave the highest mean best Dice.

Why the cosine stays per epoch. The schedule is stepped every iteration (a warmup of a few steps is shorter than
one epoch of a 40-case run), but its cosine factor is read at whole epochs, as ``CosineAnnealingLR(T_max=
max_epochs)`` stepped per epoch did: with ``warmup_steps`` 0 the LR of every step is that schedule's, so runs
made before the warmup existed are runs of ``warmup_steps`` 0.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

WARMUP_START = 0.1
"""The warmup's first step runs at this fraction of the LR, rising linearly to the full LR at ``warmup_steps``."""


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The warmup's LR factor at optimiser step ``step`` (0-based): :data:`WARMUP_START` rising linearly to 1."""
    if step >= warmup_steps:
        return 1.0
    return WARMUP_START + (1.0 - WARMUP_START) * step / warmup_steps


def cosine_factor(epoch: int, max_epochs: int) -> float:
    """``CosineAnnealingLR``'s factor (``eta_min`` 0) in epoch ``epoch`` (0-based) of ``max_epochs``."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / max_epochs))


def warmup_cosine(optimizer: Optimizer, max_epochs: int, steps_per_epoch: int, warmup_steps: int = 0) -> LambdaLR:
    """A per-iteration scheduler: step ``s`` runs at each group's LR times :func:`warmup_factor` ``(s)`` times
    :func:`cosine_factor` of the epoch ``s`` falls in. Attach it with ``LrScheduleHandler(epoch_level=False)``."""
    def factor(step: int) -> float:
        return warmup_factor(step, warmup_steps) * cosine_factor(step // steps_per_epoch, max_epochs)

    return LambdaLR(optimizer, factor)
