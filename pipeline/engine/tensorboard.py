"""TensorBoard extras the bundles' MONAI handlers do not give: learning rates per named group, at the step they
were used, and overlays of a few validation cases.

* :class:`LearningRateWriter`: MONAI's ``LrScheduleHandler`` only prints the rates. ignite's
  ``OptimizerParamsHandler`` does the same job but only through ignite's own ``TensorboardLogger`` (a second writer
  next to the bundle's ``SummaryWriter``) and names the groups ``lr/group_0``, ``lr/group_1``; this writes
  ``lr/adapter`` and ``lr/head`` (the DKA paper's asynchronous rates, named by
  :func:`pipeline.peft.param_groups`) through the bundle's writer. It logs when each iteration starts, with the
  iteration as the step, so each point is the rate that iteration trained with; logging at the end of an epoch,
  after the scheduler has stepped, showed the next epoch's rate.
* :class:`ValidationImages`: MONAI's ``TensorBoardImageHandler`` shows one case's channels as separate grey images;
  this puts the first ``count`` validation cases of each round side by side as input | label overlay | prediction
  overlay (:func:`pipeline.data.writers.overlay_rgb`), where a wrong prediction is seen at a glance.
"""

from __future__ import annotations

import numpy as np
import torch
from ignite.engine import Engine, Events


class LearningRateWriter:
    """``lr/<group name or index>`` per optimizer group at each iteration's start, step = that iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer, summary_writer) -> None:
        self.optimizer = optimizer
        self.writer = summary_writer

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: self.writer.flush())

    def __call__(self, engine: Engine) -> None:
        for index, group in enumerate(self.optimizer.param_groups):
            self.writer.add_scalar(f"lr/{group.get('name', index)}", group["lr"], engine.state.iteration)


def _label_map(value: torch.Tensor) -> torch.Tensor:
    """A ``(C, *spatial)`` one-hot map as class indices; a one-channel map as it is."""
    return value.argmax(dim=0) if value.shape[0] > 1 else value[0]


class ValidationImages:
    """Write the first ``count`` 2D validation cases of each validation round as ``validation/<k>``: the input,
    the label over it and the prediction over it, side by side. The step is the evaluator's epoch, which MONAI's
    ``ValidationHandler`` sets to the trainer's (``evaluator.run(trainer_epoch)``)."""

    def __init__(self, summary_writer, count: int = 3, image_key: str = "image", label_key: str = "label",
                 pred_key: str = "pred") -> None:
        self.writer, self.count = summary_writer, count
        self.image_key, self.label_key, self.pred_key = image_key, label_key, pred_key
        self._written = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _start(self, engine: Engine) -> None:
        self._written = 0

    def __call__(self, engine: Engine) -> None:
        from pipeline.data.writers import overlay_rgb

        step = engine.state.epoch
        for batch, output in zip(engine.state.batch, engine.state.output, strict=False):
            if self._written >= self.count:
                return
            image = torch.as_tensor(batch[self.image_key]).detach().float().cpu()
            if image.dim() != 3:
                return  # volumes: no picture
            label = _label_map(torch.as_tensor(output.get(self.label_key, batch.get(self.label_key))).cpu())
            pred = _label_map(torch.as_tensor(output[self.pred_key]).cpu())
            blank = torch.zeros_like(pred)
            panels = [overlay_rgb(image, blank), overlay_rgb(image, label), overlay_rgb(image, pred)]
            self.writer.add_image(f"validation/{self._written}", np.concatenate(panels, axis=1), step,
                                  dataformats="HWC")
            self._written += 1
