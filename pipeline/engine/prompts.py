"""The box prompt a bundle feeds a box-prompted model, as a dictionary transform that fits every bundle stage.

Training and evaluation derive the box from the label (:func:`pipeline.models.boxes_from_labels`; jittered while
training, tight when evaluating, where it stands in for the box a clinician would draw). Inference on an image
without a label has no such box, so the whole image is the box. Prompt-free models get no box key at all, so the
same transform list serves both prompt modes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable

from pipeline.models import boxes_from_labels


class PromptBoxd(Randomizable, MapTransform):
    """Put a ``(4,)`` box ``(x0, y0, x1, y1)`` under ``box_key`` when ``prompt == "box"``; otherwise pass through.

    ``keys`` is the label key; ``image_key`` gives the extent of the whole-image box when the label is absent.
    """

    def __init__(self, keys: str = "label", prompt: str = "box", image_key: str = "image", box_key: str = "box",
                 jitter: int = 0) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.prompt, self.image_key, self.box_key, self.jitter = prompt, image_key, box_key, jitter
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
            out[self.box_key] = boxes_from_labels(torch.as_tensor(labels[0])[None], self.jitter, generator)[0]
        else:
            height, width = out[self.image_key].shape[-2:]
            out[self.box_key] = torch.tensor([0.0, 0.0, width - 1.0, height - 1.0])
        return out
