"""``training.json``: what a training run did, in numbers a sweep (or a user) can read without parsing logs.

A few-shot comparison is only honest when it shows *how* each method got its score: the budget it had (epochs and
optimiser steps run), the time it took, its trainable-parameter count, and its curves. A method whose validation
Dice stays at 0 for the first half of its budget lost because it never started, not because it learned worse;
the per-epoch train loss and validation Dice make that visible. The file is rewritten atomically after every epoch,
so it is complete up to the last finished epoch even when a run is killed, and a resumed run continues it. When
training ends (its budget spent or an early stop) the record says ``"completed": true``: a killed run's record
never does, so a sweep can tell a finished training from an interrupted one without reading logs.

The record names the machine too (:func:`pipeline.machine.machine`: processor or GPU, CPU threads, torch version),
since the same code on the same split trains another trajectory on another one. A table whose rows ran on
different machines says so through this field.

A run whose best validation Dice is still 0 when it ends has a checkpoint that overlaps no validation label: on
Kvasir-SEG the prompt-free head stayed at its all-background start for a whole 120-step budget on one 10-image
split, and left it by step 30 on the same split with the batches in another order (docs/results.md). Training ends
with a warning that says so, as a user would otherwise find out only from an empty segmentation.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from pipeline.engine.distributed import is_main_process, unwrap
from pipeline.machine import machine
from pipeline.peft.checkpoint import atomic_write

TRAINING_RECORD = "training.json"

logger = logging.getLogger(__name__)


def _machines(earlier: str | None, here: str) -> str:
    """The machines a run trained on, in order: ``here`` is added unless the run last trained there (a run resumed
    elsewhere trained its epochs on both)."""
    if not earlier:
        return here
    return earlier if earlier.rsplit("; resumed on ", 1)[-1] == here else f"{earlier}; resumed on {here}"


class TrainingRecord:
    """Write ``path`` (``training.json``) after every training epoch: budget, time, device and machine, trainable
    parameters, best validation metric and the per-epoch curves.

    Attach it to the trainer after the ``ValidationHandler`` so an epoch's entry carries that epoch's validation
    (``evaluator``'s key metric; ``None`` in epochs without validation).
    """

    def __init__(self, path: str, network: torch.nn.Module, evaluator: Engine | None = None) -> None:
        self.path = Path(path)
        self.network = network
        self.evaluator = evaluator
        self._record: dict = {}
        self._losses: list[float] = []
        self._started = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _start(self, engine: Engine) -> None:
        """Begin a record, or continue the one of the run this one resumes (its epochs up to the resumed epoch)."""
        inner = unwrap(self.network)
        loader = engine.state.dataloader
        previous = json.loads(self.path.read_text()) if self.path.is_file() and engine.state.epoch > 0 else {}
        curves = [entry for entry in previous.get("curves", []) if entry["epoch"] <= engine.state.epoch]
        device = next(inner.parameters()).device
        self._record = {
            "device": str(device),
            "machine": _machines(previous.get("machine") if curves else None, machine(device)),
            "trainable_parameters": sum(p.numel() for p in inner.parameters() if p.requires_grad),
            "batch_size": getattr(loader, "batch_size", None),
            "training_cases": len(loader.dataset) if hasattr(loader, "dataset") else None,
            "max_epochs": engine.state.max_epochs,
            "train_seconds": previous.get("train_seconds", 0.0) if curves else 0.0,
            "curves": curves,
        }
        self._started = time.perf_counter()
        self._losses = []

    def _iteration(self, engine: Engine) -> None:
        output = engine.state.output
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"]
        self._losses.append(float(loss))

    def _epoch(self, engine: Engine) -> None:
        now = time.perf_counter()
        record = self._record
        record["train_seconds"] += now - self._started
        self._started = now
        validated = self.evaluator is not None and self.evaluator.state.epoch == engine.state.epoch
        metric = None
        if validated:
            metric = self.evaluator.state.metrics.get(self.evaluator.state.key_metric_name)
        record["curves"].append({
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "train_loss": sum(self._losses) / len(self._losses) if self._losses else None,
            "val_metric": None if metric is None else float(metric),
        })
        self._losses = []
        record["epochs_run"] = engine.state.epoch
        record["iterations_run"] = engine.state.iteration
        if self.evaluator is not None and self.evaluator.state.best_metric_epoch > 0:
            record["best_val_metric"] = float(self.evaluator.state.best_metric)
            record["best_val_epoch"] = int(self.evaluator.state.best_metric_epoch)
        self._write()

    def _completed(self, engine: Engine) -> None:
        """The budget was spent or an early stop ended the run (ignite fires ``COMPLETED`` after a terminate too)."""
        self._record["completed"] = True
        self._write()
        if self._record.get("best_val_metric") == 0.0 and is_main_process():
            logger.warning(f"training ended with a best validation Dice of 0 ({self.path}): the model overlaps no "
                           "validation label, so its checkpoint segments nothing useful. A prompt-free head that "
                           "never left its all-background start does this, and whether it leaves can hang on the "
                           "order of the batches: train again with another seed")

    def _write(self) -> None:
        if is_main_process():
            atomic_write(self.path, lambda stream: stream.write(json.dumps(self._record, indent=1).encode() + b"\n"))
