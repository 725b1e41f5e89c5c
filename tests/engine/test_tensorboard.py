"""TensorBoard extras: ``lr/<group>`` per optimizer group at the iteration that used it; validation overlays."""

from __future__ import annotations

import numpy as np
import torch
from ignite.engine import Engine, Events
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


def test_learning_rate_writer_logs_each_group_by_name_with_the_rate_each_iteration_trained_with():
    adapter, head = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": [adapter], "lr": 0.1, "name": "adapter"}, {"params": [head], "lr": 0.01}])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    used = []

    def train_step(engine, batch):
        used.append((engine.state.iteration, [group["lr"] for group in optimizer.param_groups]))

    engine = Engine(train_step)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: scheduler.step())  # as LrScheduleHandler does
    summary = RecordingWriter()
    LearningRateWriter(optimizer, summary).attach(engine)
    engine.run([0, 1], max_epochs=2)
    logged = [(step, value) for tag, value, step in summary.scalars if tag == "lr/adapter"]
    assert logged == [(iteration, rates[0]) for iteration, rates in used] == [(1, 0.1), (2, 0.1), (3, 0.05), (4, 0.05)]
    others = [(tag, step) for tag, _, step in summary.scalars if tag != "lr/adapter"]
    assert others == [("lr/1", i) for i in range(1, 5)]
    assert summary.flushes == 2


def test_validation_images_show_input_label_and_prediction_for_the_first_cases_of_each_round():
    from types import SimpleNamespace

    from pipeline.engine.tensorboard import ValidationImages

    class ImageWriter:
        def __init__(self):
            self.images = []

        def add_image(self, tag, array, step, dataformats):
            self.images.append((tag, array, step, dataformats))

    label = torch.zeros(2, 8, 6)
    label[0], label[1, 2:5, 1:4] = 1, 1
    label[0, 2:5, 1:4] = 0
    item = {"image": torch.rand(3, 8, 6), "label": label}
    writer = ImageWriter()
    handler = ValidationImages(writer, count=2)
    engine = SimpleNamespace(state=SimpleNamespace(epoch=7, batch=[item, item, item],
                                                   output=[{"pred": label, "label": label}] * 3))
    handler._start(engine)
    handler(engine)
    assert [(tag, step, kind) for tag, _, step, kind in writer.images] == [("validation/0", 7, "HWC"),
                                                                           ("validation/1", 7, "HWC")]
    picture = writer.images[0][1]
    assert picture.shape == (6, 3 * 8, 3) and picture.dtype == np.uint8, "(y, x) panels side by side"
    plain, with_label, with_pred = np.split(picture, 3, axis=1)
    assert np.array_equal(with_label, with_pred) and not np.array_equal(plain, with_label)
    assert tuple(with_label[2, 3]) == (0, 255, 0), "class 1 outlined in green"
    handler(engine)
    assert len(writer.images) == 2, "only the first count cases of a round"
