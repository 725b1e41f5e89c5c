"""``ResampleSlices`` driven by a minimal ``Engine``: each epoch draws the slices a resumed run would draw."""

from __future__ import annotations

import pytest
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


def test_training_slices_are_resized_as_the_network_itself_resizes_its_input():
    """A 30x60 slice, resized for the network, goes through the network's own preprocessing unchanged, so a
    training batch is what evaluation feeds it: longest side + bottom/right padding, or MedSAM's square stretch."""
    from monai.transforms import Compose

    from pipeline.engine.slices import input_resizing
    from pipeline.models.sam import SamInput

    item = {"image": torch.rand(1, 30, 60), "label": torch.zeros(1, 30, 60)}
    item["label"][0, 10:20, 0:30] = 1
    longest = Compose(input_resizing(SamInput(64, "longest", "unit")))(dict(item))
    assert longest["image"].shape == (1, 64, 64)
    assert longest["label"][0, 32:].sum() == 0, "padding goes below the image, as SAM pads"
    assert longest["label"][0, :32].sum() == pytest.approx(10 * 30 * (64 / 60) ** 2, rel=0.1)
    square = Compose(input_resizing(SamInput(64, "square", "unit")))(dict(item))
    assert square["image"].shape == (1, 64, 64) and square["label"][0, 32:].sum() > 0
