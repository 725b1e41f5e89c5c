"""Epoch-wise slice draws for 2D backbones trained on 3D volumes (:class:`pipeline.data.slices.SliceDataset`).

A ``SliceDataset`` draws a fixed set of slices per volume; without a redraw every epoch would see the same few
slices of each few-shot volume. :class:`ResampleSlices` redraws them (deterministically, by epoch) when a trainer
epoch starts, so a resumed run draws the same slices as an uninterrupted one.
"""

from __future__ import annotations

from ignite.engine import Engine, Events

from pipeline.data.slices import SliceDataset


class ResampleSlices:
    def __init__(self, dataset: SliceDataset) -> None:
        self.dataset = dataset

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.dataset.resample(engine.state.epoch)
