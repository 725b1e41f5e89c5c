"""``ResampleSlices`` driven by a minimal ``Engine``: each epoch draws the slices a resumed run would draw."""

from __future__ import annotations

import torch
from ignite.engine import Engine

from pipeline.data.slices import SliceDataset
from pipeline.engine.slices import ResampleSlices


def test_resample_slices_redraws_each_epoch_as_a_fresh_dataset_would():
    label = torch.zeros(1, 4, 4, 12)
    label[0, 1:3, 1:3, 5:8] = 1
    volumes = [{"image": torch.rand(1, 4, 4, 12), "label": label}]
    dataset = SliceDataset(volumes, samples_per_volume=4, seed=3)
    drawn = {}

    def train_step(engine, batch):
        drawn[engine.state.epoch] = list(dataset.index)

    engine = Engine(train_step)
    ResampleSlices(dataset).attach(engine)
    engine.run([0], max_epochs=3)

    reference = SliceDataset(volumes, samples_per_volume=4, seed=3)
    for epoch in (1, 2, 3):
        reference.resample(epoch)
        assert drawn[epoch] == reference.index, f"epoch {epoch} must draw what a resumed run draws"
    assert len({tuple(draw) for draw in drawn.values()}) > 1, "the draw changes between epochs"
