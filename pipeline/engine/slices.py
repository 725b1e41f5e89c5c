"""Training 2D backbones on slices of 3D volumes (:class:`pipeline.data.slices.SliceDataset`).

A ``SliceDataset`` draws a fixed set of slices per volume; without a redraw every epoch would see the same few
slices of each few-shot volume. :class:`ResampleSlices` redraws them (deterministically, by epoch) when a trainer
epoch starts, so a resumed run draws the same slices as an uninterrupted one.
"""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.transforms import Resized, SpatialPadd, Transform

from pipeline.data.slices import SliceDataset
from pipeline.models.sam import SamInput


def input_resizing(preprocessing: SamInput, keys=("image", "label"), modes=("area", "nearest")) -> list[Transform]:
    """Transforms bringing training slices to the network's own input grid (``network.preprocessing``).

    Training slices are batched, so they must share one size; resizing them the way the network itself does
    (:meth:`pipeline.models.sam.SamSegmenter.prepare`: longest side + bottom/right padding for SAM and LiteMedSAM,
    a square stretch for MedSAM ViT-B) makes the batch exactly what the network sees at evaluation, where whole
    slices of any size go in, and the label and its box prompt follow the image.
    """
    size = preprocessing.image_size
    if preprocessing.resize == "square":
        return [Resized(keys, spatial_size=(size, size), mode=modes)]
    return [Resized(keys, spatial_size=size, size_mode="longest", mode=modes),
            SpatialPadd(keys, spatial_size=(size, size), method="end")]


class ResampleSlices:
    def __init__(self, dataset: SliceDataset) -> None:
        self.dataset = dataset

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.dataset.resample(engine.state.epoch)
