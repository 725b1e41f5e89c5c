"""``LearningRateWriter`` driven by a minimal ``Engine``: one ``lr/<group>`` scalar per optimizer group and epoch."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from torch import nn

from pipeline.engine.tensorboard import LearningRateWriter


class RecordingWriter:
    """The two ``SummaryWriter`` calls the handler makes."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.flushes = 0

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushes += 1


def test_learning_rate_writer_logs_each_group_by_name_each_epoch():
    adapter, head = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": [adapter], "lr": 0.1, "name": "adapter"}, {"params": [head], "lr": 0.01}])

    def train_step(engine, batch):
        if engine.state.epoch == 2:
            optimizer.param_groups[0]["lr"] = 0.05

    engine = Engine(train_step)
    summary = RecordingWriter()
    LearningRateWriter(optimizer, summary).attach(engine)
    engine.run([0, 1], max_epochs=2)
    assert summary.scalars == [("lr/adapter", 0.1, 1), ("lr/1", 0.01, 1), ("lr/adapter", 0.05, 2), ("lr/1", 0.01, 2)]
    assert summary.flushes == 2
