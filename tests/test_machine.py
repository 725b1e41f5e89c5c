"""The machine a run names and the feature cache keys by: processor or GPU, CPU threads, torch version."""

from __future__ import annotations

import torch

from pipeline import machine as machine_module
from pipeline.machine import machine, processor


def test_machine_names_the_processor_threads_and_torch(monkeypatch):
    monkeypatch.setattr(machine_module, "processor", lambda: "Test CPU")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert machine(torch.device("cpu")) == f"Test CPU, 1 thread, torch {torch.__version__}"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert machine(torch.device("cpu")) == f"Test CPU, 2 threads, torch {torch.__version__}"


def test_processor_is_named():
    assert processor() and processor() != "unknown processor", "this machine's processor has a name"
