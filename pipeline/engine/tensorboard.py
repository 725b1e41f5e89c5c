"""Learning rates in TensorBoard: MONAI's ``LrScheduleHandler`` only logs them as text.

One scalar per optimizer group (``lr/adapter``, ``lr/head``: the DKA paper's asynchronous rates) each epoch,
written through the same ``SummaryWriter`` the bundle's ``TensorBoardStatsHandler`` uses.
"""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events


class LearningRateWriter:
    def __init__(self, optimizer: torch.optim.Optimizer, summary_writer) -> None:
        self.optimizer = optimizer
        self.writer = summary_writer

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        for index, group in enumerate(self.optimizer.param_groups):
            self.writer.add_scalar(f"lr/{group.get('name', index)}", group["lr"], engine.state.epoch)
        self.writer.flush()
