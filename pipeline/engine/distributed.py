"""DDP wiring for ``multi_gpu_train.json``, and which process may write.

Under ``torchrun`` every rank runs the same bundle: :func:`init_distributed` joins the process group (NCCL on
GPUs, gloo on CPU) and gives the rank its device, :func:`wrap_ddp` wraps the network, and only rank 0
(:func:`is_main_process`) saves checkpoints, metrics and predictions; :func:`unwrap` gives the model inside
the wrapper. Everything here also works in a single,
non-distributed process, which is rank 0.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def rank() -> int:
    """This process's global rank: the process group's, else torchrun's ``RANK`` (so what a bundle resolves
    before :func:`init_distributed` runs, such as its rank-0-only components, already knows), else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(backend: str | None = None) -> torch.device:
    """Join the ``torchrun`` process group once and return this rank's device.

    ``backend`` defaults to ``nccl`` when CUDA is available (device ``cuda:LOCAL_RANK``, made current) and to
    ``gloo`` otherwise (device ``cpu``). Rank, world size and rendezvous come from torchrun's environment.
    Ranks other than 0 keep only warnings and errors in their log, so the console shows each epoch once.
    """
    use_cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"))
    if not is_main_process():
        logging.disable(logging.INFO)
    if not use_cuda:
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    return device


def wrap_ddp(network: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``network`` on ``device`` inside DistributedDataParallel (parameters broadcast from rank 0 here).

    Every trainable tensor of our backbones receives a gradient each step (the SAM family's unused IoU head is left
    out of the trained head), so DDP runs without ``find_unused_parameters`` and its extra graph traversal.
    """
    network = network.to(device)
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=device_ids)


def unwrap(network: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (``network`` itself when it is not
    wrapped): its parameter names and ``peft_state`` are the plain model's, so checkpoints load either way."""
    return getattr(network, "module", network)


def destroy_distributed() -> None:
    """Leave the process group at the end of the run (``finalize``), so torchrun sees a clean exit."""
    if dist.is_initialized():
        dist.destroy_process_group()
