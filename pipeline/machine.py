"""The machine a computation ran on, in the terms that decide its floating-point results.

The same code on the same inputs sums in another order on 2 CPU threads than on 1, on another processor's
kernels, on another GPU, or under another torch, and so rounds differently. A few-shot run amplifies that: measured
on Kvasir-SEG (the study's 5-image linear probe, split seed 0), the first step's loss is 0.6702 on 1 and 2 threads
alike, the second 1.0465 on 1 thread and 1.7291 on 2, and the runs go on to other validation Dice. So a training
record names its machine (``pipeline.engine.record``), and the frozen-prefix cache keys its entries by it
(``pipeline.models.feature_cache``): features computed on other threads would turn a rerun into another run.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch


@functools.cache
def processor() -> str:
    """The CPU's model name (Linux reports it in /proc/cpuinfo; elsewhere what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown processor"


def machine(device: torch.device) -> str:
    """The GPU, or the CPU and its current thread count; and the torch version."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        threads = torch.get_num_threads()
        where = f"{processor()}, {threads} thread{'s' if threads > 1 else ''}"
    return f"{where}, torch {torch.__version__}"
