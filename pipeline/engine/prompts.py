"""The box prompt a bundle feeds a box-prompted model, as a dictionary transform that fits every bundle stage.

Training and evaluation derive the box from the label (:func:`pipeline.models.boxes_from_labels`; jittered while
training, tight when evaluating, where it stands in for the box a clinician would draw). Two things in real labels
break a single tight box: lossy masks carry isolated noise pixels (one stray Kvasir-SEG pixel at a corner turns a
polyp's box into half the image), and a label can hold several separate objects. So connected components smaller
than ``min_pixels`` are dropped before boxing, and ``per_object=True`` gives one box per remaining component
(MedSAM's protocol for multi-object images; :class:`pipeline.engine.inferers.ObjectBoxInferer` unites the
per-box predictions). Inference on an image without a label has no such box, so the whole image is the box. An empty
label gives no box at all: that stops the run naming the label's file (empty masks are fine for prompt-free runs).
Prompt-free models get no box key at all, so the same transform list serves both prompt modes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage

from pipeline.errors import PipelineError
from pipeline.models import boxes_from_labels


def object_masks(label: torch.Tensor, min_pixels: int = 0) -> list[np.ndarray]:
    """The connected foreground components of a 2D ``label`` ``(1, H, W)`` with at least ``min_pixels`` pixels.

    When every component is smaller than that, all of them are kept: a tiny object is still an object.
    """
    foreground = np.asarray(torch.as_tensor(label).detach().cpu())[0] > 0
    components, count = ndimage.label(foreground)
    masks = [components == index for index in range(1, count + 1)]
    kept = [mask for mask in masks if mask.sum() >= min_pixels]
    return kept or masks


class PromptBoxd(Randomizable, MapTransform):
    """Put a box ``(x0, y0, x1, y1)`` under ``box_key`` when ``prompt == "box"``; otherwise pass through.

    ``keys`` is the label key; ``image_key`` gives the extent of the whole-image box when the label is absent.
    The box is ``(4,)`` around all kept components, or ``(K, 4)`` with ``per_object=True`` (one per component).
    """

    def __init__(self, keys: str = "label", prompt: str = "box", image_key: str = "image", box_key: str = "box",
                 jitter: int = 0, min_pixels: int = 0, per_object: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.prompt, self.image_key, self.box_key, self.jitter = prompt, image_key, box_key, jitter
        self.min_pixels, self.per_object = min_pixels, per_object
        self._seed = 0

    def randomize(self, data: None = None) -> None:
        self._seed = int(self.R.randint(0, np.iinfo(np.int32).max))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        out = dict(data)
        if self.prompt != "box":
            return out
        self.randomize()
        labels = [out[key] for key in self.key_iterator(out)]
        if labels:
            generator = torch.Generator().manual_seed(self._seed)
            objects = object_masks(labels[0], self.min_pixels)
            if not objects:
                name = (getattr(labels[0], "meta", None) or {}).get("filename_or_obj", "a label")
                raise PipelineError(f"{name}: the label is empty, so no box prompt can be drawn from it; leave the "
                                    "case out of box-prompted runs or use prompt none (empty labels are allowed there)")
            masks = torch.from_numpy(np.stack(objects))
            if not self.per_object:
                masks = masks.any(dim=0, keepdim=True)
            boxes = boxes_from_labels(masks, self.jitter, generator)
            out[self.box_key] = boxes if self.per_object else boxes[0]
        else:
            height, width = out[self.image_key].shape[-2:]
            box = torch.tensor([0.0, 0.0, width - 1.0, height - 1.0])
            out[self.box_key] = box[None] if self.per_object else box
        return out
