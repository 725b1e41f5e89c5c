"""DDP wiring for ``multi_gpu_train.json``: one process per device under ``torchrun``.

NCCL on GPUs, gloo on CPU (how the 2-process test runs). Only the main process logs and saves; every helper here
also works unchanged in a single, non-distributed process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(backend: str | None = None) -> torch.device:
    """Join the ``torchrun`` process group (once) and return this process's device."""
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def wrap_ddp(network: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False):
    """``network`` on ``device`` inside ``DistributedDataParallel``; frozen parameters are not synchronised."""
    network = network.to(device)
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        network, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def main_process_only(handlers: list) -> list:
    """``handlers`` on rank 0, none elsewhere: logging and checkpoint handlers that must not run on every rank."""
    return list(handlers) if is_main_process() else []
