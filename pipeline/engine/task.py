"""What a network's output channels mean: one sigmoid channel (a box-prompted object) or C softmax classes.

Box-prompted SAM models segment the one object in the box and emit a single logit map; prompt-free and Swin-UNETR
models emit one logit map per class, background included. The loss and the discretisation follow from that count,
and so do the metrics' classes (a single channel still means two classes: background and the object).
"""

from __future__ import annotations

from monai.config import KeysCollection
from monai.losses import DiceCELoss
from monai.transforms import AsDiscrete, Compose, MapTransform


def segmentation_loss(out_channels: int) -> DiceCELoss:
    """DiceCE on sigmoid logits for one channel, on softmax logits against one-hot labels otherwise."""
    if out_channels == 1:
        return DiceCELoss(sigmoid=True)
    return DiceCELoss(softmax=True, to_onehot_y=True)


def to_label_map(out_channels: int) -> Compose:
    """Logits ``(C, *spatial)`` to a label map ``(1, *spatial)``: threshold at 0 for one channel, else argmax."""
    if out_channels == 1:
        return Compose([AsDiscrete(threshold=0.0)])
    return Compose([AsDiscrete(argmax=True)])


def num_classes(out_channels: int) -> int:
    """Classes in the label map, background included."""
    return max(out_channels, 2)


class LabelMapd(MapTransform):
    """Dictionary form of :func:`to_label_map` for evaluator post-processing."""

    def __init__(self, keys: KeysCollection = "pred", out_channels: int = 1) -> None:
        super().__init__(keys)
        self.transform = to_label_map(out_channels)

    def __call__(self, data):
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = self.transform(out[key])
        return out
