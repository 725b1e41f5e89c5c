"""What a bundle's task settings mean for its network: how many output channels, which extra inputs.

A bundle's one class setting is ``num_classes``, the classes of its label maps with background included, as MONAI
and nnU-Net count them; the metrics score that many classes. The network's output channels follow from it and the
prompt (:func:`out_channels`): box-prompted SAM models segment the one object in the box and emit a single sigmoid
logit map, so a box-prompted task has exactly two classes; prompt-free SAM and Swin-UNETR models emit one softmax
logit map per class. The loss and the discretisation follow from the channel count.
"""

from __future__ import annotations

from monai.config import KeysCollection
from monai.losses import DiceCELoss
from monai.transforms import AsDiscrete, Compose, MapTransform

from pipeline.errors import PipelineError


def out_channels(num_classes: int, prompt: str = "none", class_boxes: bool = False) -> int:
    """The network's logit channels for ``num_classes`` classes (background included) under ``prompt``.

    ``"box"``: one object per box, so one sigmoid map, and exactly two classes -- unless ``class_boxes``: then the
    inferer prompts each foreground class with its own boxes and assembles the classes itself
    (:class:`pipeline.engine.inferers.VolumeBoxInferer`). ``"text"`` (CLIPSeg): one map per text prompt, so one
    prompt is one sigmoid map and K prompts are K + 1 softmax maps (background included). ``"none"``: one softmax
    map per class.
    """
    if prompt == "box" and class_boxes:
        return 1
    if prompt == "box" and num_classes != 2:
        raise PipelineError(f"prompt box segments the one object in each box, so num_classes must be 2 (background "
                            f"and the object), got {num_classes} (--num_classes); use --prompt none for more classes")
    return 1 if prompt in ("box", "text") and num_classes == 2 else num_classes


def prompt_inputs(prompt: str) -> dict[str, str]:
    """The network's extra ``forward`` arguments and the batch keys they are read from (the ``extra_keys`` of
    MONAI's ``PrepareBatchExtraInput``): a box-prompted network takes ``boxes`` from the batch's ``box``."""
    return {"boxes": "box"} if prompt == "box" else {}


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


class SplitObjectsd(MapTransform):
    """Move channels 1..K of a label map ``keys`` (``(1 + K, *spatial)``: the union, then one channel per box from
    ``ObjectBoxInferer(keep_objects=True)``) to ``objects_key``, leaving the union as the prediction."""

    def __init__(self, keys: KeysCollection = "pred", objects_key: str = "objects") -> None:
        super().__init__(keys)
        self.objects_key = objects_key

    def __call__(self, data):
        out = dict(data)
        for key in self.key_iterator(out):
            if out[key].shape[0] > 1:
                out[key], out[self.objects_key] = out[key][:1], out[key][1:]
        return out
