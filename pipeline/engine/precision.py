"""Mixed precision for the bundles' trainer and evaluator: bf16 autocast on CUDA, full precision elsewhere.

bf16 keeps float32's exponent range, so SAM's attention logits and DiceCE need no loss scaling, and Hopper/Ampere
GPUs run its matrix work several times faster than float32. CPUs are left in float32: most have no bf16 matrix
units, so autocast there costs time and changes the numbers the CPU tests and benchmarks compare exactly.
"""

from __future__ import annotations

import torch


def use_autocast(device: torch.device | str, amp: bool = True) -> bool:
    """Whether the engines autocast on ``device``: ``amp`` asked for and a CUDA device."""
    return bool(amp) and torch.device(device).type == "cuda"
