"""Ignite handlers for the two checkpoints a bundle run writes.

* :class:`AdapterCheckpoint`: the bundle's model, ``models/model.pt``: only the tensors that trained (adapters and
  head) plus the method/backbone metadata, via :func:`pipeline.peft.save_adapter`; written when validation improves.
* :class:`ResumeState`: everything a killed run needs to continue where it stopped (trainable tensors, optimizer,
  scheduler, epoch/iteration, best metric, RNG states), written atomically after every epoch and loaded when the
  trainer starts if present. The frozen backbone is not in it: it is rebuilt from its own weights.

Under DDP only rank 0 writes; every rank loads.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from pipeline.engine.distributed import is_main_process
from pipeline.errors import PipelineError
from pipeline.peft import atomic_save, save_adapter, trainable_state_dict


def _inner(network: torch.nn.Module) -> torch.nn.Module:
    return getattr(network, "module", network)


class AdapterCheckpoint:
    """Save the adapter-only weights of ``network`` to ``path`` each time the evaluator's key metric improves."""

    def __init__(self, network: torch.nn.Module, path: str) -> None:
        self.network = network
        self.path = Path(path)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        improved = engine.state.best_metric_epoch == engine.state.epoch
        if improved and is_main_process():
            save_adapter(_inner(self.network), self.path)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState:
    """Write the full resume state to ``path`` after every epoch; restore it when the trainer starts.

    Attach it to the trainer after the ``ValidationHandler`` so the saved best metric includes that epoch's
    validation. ``evaluator`` is optional: without it the best metric is not carried over.
    """

    def __init__(self, path: str, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 lr_scheduler=None, evaluator: Engine | None = None) -> None:
        self.path = Path(path)
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.evaluator = evaluator

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def state(self, engine: Engine) -> dict:
        state = {
            "epoch": engine.state.epoch,
            "trainer": engine.state_dict(),
            "network": trainable_state_dict(_inner(self.network)),
            "optimizer": self.optimizer.state_dict(),
            "rng": _rng_state(),
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        if self.evaluator is not None:
            state["best_metric"] = self.evaluator.state.best_metric
            state["best_metric_epoch"] = self.evaluator.state.best_metric_epoch
        return state

    def save(self, engine: Engine) -> None:
        if is_main_process():
            atomic_save(self.state(engine), self.path)

    def load(self, engine: Engine) -> None:
        if not self.path.is_file():
            return
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        own, saved = trainable_state_dict(_inner(self.network)), state["network"]
        if set(own) != set(saved) or any(own[name].shape != saved[name].shape for name in own):
            raise PipelineError(
                f"resume state {self.path} was written by a run with other adapters or options than this one; "
                "pass another --output_dir (or delete that file) to start afresh"
            )
        _inner(self.network).load_state_dict(state["network"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.evaluator is not None and "best_metric" in state:
            self.evaluator.state.best_metric = state["best_metric"]
            self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(state["trainer"])
        engine.state.max_epochs = max_epochs
        _set_rng_state(state["rng"])
        engine.logger.info(f"resumed from {self.path} at epoch {engine.state.epoch}")
