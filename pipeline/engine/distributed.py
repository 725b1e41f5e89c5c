"""Which process may write: under DDP (``torchrun``) only rank 0 saves checkpoints, metrics and predictions.

Works unchanged in a single, non-distributed process (rank 0).
"""

from __future__ import annotations

import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0
