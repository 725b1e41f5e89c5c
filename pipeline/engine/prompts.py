"""Box prompts for box-prompted models, taken from label maps as MedSAM trains and evaluates them.

In MONAI's style there is a function on tensors (:func:`boxes_from_labels`), an array transform on one label
(:class:`PromptBox`) and the dictionary transform the bundles list (:class:`PromptBoxd`). Boxes are
``(x0, y0, x1, y1)`` in pixel coordinates of the image they were taken from, inclusive.

During training MedSAM widens the label's tight bounding box by a random 0..``jitter`` pixels on each side, so the
model learns to tolerate the loose boxes a person draws; at evaluation the tight box (``jitter=0``) stands in for
the box a clinician would draw. Two things in real labels break a single tight box: lossy masks carry isolated noise
pixels (one stray Kvasir-SEG pixel at a corner turns a polyp's box into half the image), and a label can hold
several separate objects. So connected components smaller than ``min_pixels`` are dropped before boxing, and
``per_object=True`` gives one box per remaining component (MedSAM's protocol for multi-object images;
:class:`pipeline.engine.inferers.ObjectBoxInferer` unites the per-box predictions). Inference on an image without a
label has no such box, so the whole image is the box. An empty label gives no box at all: that stops the run naming
the label's file (empty masks are fine for prompt-free runs). Prompt-free models get no box key at all, so the same
transform list serves both prompt modes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable, Transform
from scipy import ndimage

from pipeline.errors import PipelineError

__all__ = ["PromptBox", "PromptBoxd", "boxes_from_labels", "object_masks"]


def boxes_from_labels(labels: torch.Tensor, jitter: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One box per image around the foreground (label > 0) of ``labels`` ``(B, [1,] H, W)``: a ``(B, 4)`` float tensor.

    Each side is moved outwards by a random integer in ``[0, jitter]`` and clipped to the image. An image
    without foreground has no box to give, which is an error: drop such slices before box-prompted training.
    """
    if labels.dim() == 4:
        if labels.shape[1] != 1:
            raise PipelineError(f"labels for box prompts must have one channel, got shape {tuple(labels.shape)}")
        labels = labels[:, 0]
    if labels.dim() != 3:
        raise PipelineError(f"labels for box prompts must be (B, [1,] H, W), got shape {tuple(labels.shape)}")
    height, width = labels.shape[-2:]
    boxes = []
    for index, label in enumerate(labels):
        rows = torch.nonzero(label.gt(0).any(dim=1)).flatten()
        cols = torch.nonzero(label.gt(0).any(dim=0)).flatten()
        if rows.numel() == 0:
            raise PipelineError(f"label {index} of the batch has no foreground, so it gives no box prompt")
        box = torch.stack([cols[0], rows[0], cols[-1], rows[-1]]).float()
        if jitter > 0:
            shift = torch.randint(0, jitter + 1, (4,), generator=generator).float()
            box = box + shift * torch.tensor([-1.0, -1.0, 1.0, 1.0])
        limit = torch.tensor([width - 1.0, height - 1.0, width - 1.0, height - 1.0])
        boxes.append(torch.minimum(box.clamp(min=0.0), limit))
    return torch.stack(boxes).to(labels.device)


def object_masks(label: torch.Tensor, min_pixels: int = 0) -> list[np.ndarray]:
    """The connected foreground components of a 2D ``label`` ``(1, H, W)`` with at least ``min_pixels`` pixels.

    When every component is smaller than that, all of them are kept: a tiny object is still an object.
    """
    foreground = np.asarray(torch.as_tensor(label).detach().cpu())[0] > 0
    components, count = ndimage.label(foreground)
    masks = [components == index for index in range(1, count + 1)]
    kept = [mask for mask in masks if mask.sum() >= min_pixels]
    return kept or masks


class PromptBox(Randomizable, Transform):
    """The box prompt of one 2D label ``(1, H, W)``: ``(4,)`` around all components of at least ``min_pixels``
    pixels, or ``(K, 4)`` with ``per_object=True`` (one per component), each side widened by 0..``jitter``."""

    def __init__(self, jitter: int = 0, min_pixels: int = 0, per_object: bool = False) -> None:
        self.jitter, self.min_pixels, self.per_object = jitter, min_pixels, per_object
        self._seed = 0

    def randomize(self, data: None = None) -> None:
        self._seed = int(self.R.randint(0, np.iinfo(np.int32).max))

    def __call__(self, label: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize()
        objects = object_masks(label, self.min_pixels)
        if not objects:
            name = (getattr(label, "meta", None) or {}).get("filename_or_obj", "a label")
            raise PipelineError(f"{name}: the label is empty, so no box prompt can be drawn from it; leave the "
                                "case out of box-prompted runs or use prompt none (empty labels are allowed there)")
        masks = torch.from_numpy(np.stack(objects))
        if not self.per_object:
            masks = masks.any(dim=0, keepdim=True)
        boxes = boxes_from_labels(masks, self.jitter, torch.Generator().manual_seed(self._seed))
        return boxes if self.per_object else boxes[0]


class PromptBoxd(Randomizable, MapTransform):
    """Put a box ``(x0, y0, x1, y1)`` under ``box_key`` when ``prompt == "box"``; otherwise pass through.

    ``keys`` is the label key (its box is :class:`PromptBox`'s); ``image_key`` gives the extent of the whole-image
    box when the label is absent.
    """

    def __init__(self, keys: str = "label", prompt: str = "box", image_key: str = "image", box_key: str = "box",
                 jitter: int = 0, min_pixels: int = 0, per_object: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.prompt, self.image_key, self.box_key = prompt, image_key, box_key
        self.prompter = PromptBox(jitter, min_pixels, per_object)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> PromptBoxd:
        super().set_random_state(seed, state)
        self.prompter.set_random_state(seed, state)
        return self

    def randomize(self, data: None = None) -> None:
        self.prompter.randomize()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        out = dict(data)
        if self.prompt != "box":
            return out
        self.randomize()  # drawn for label-less items too, so a dataset's box sequence does not depend on them
        labels = [out[key] for key in self.key_iterator(out)]
        if labels:
            out[self.box_key] = self.prompter(labels[0], randomize=False)
        else:
            height, width = out[self.image_key].shape[-2:]
            box = torch.tensor([0.0, 0.0, width - 1.0, height - 1.0])
            out[self.box_key] = box[None] if self.prompter.per_object else box
        return out
