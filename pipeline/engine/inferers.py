"""Inferers for box-prompted networks, whose ``forward(image, boxes)`` segments one object per box.

A label with several separate objects gets one box each (:class:`pipeline.engine.prompts.PromptBoxd` with
``per_object=True``), as MedSAM evaluates multi-object images; one box around all of them would also prompt the
background between them. :class:`ObjectBoxInferer` passes all K boxes in one call (the SAM-family networks encode
the image once and decode every box in one batch) and unites the K objects.
"""

from __future__ import annotations

import torch
from monai.inferers import Inferer


class ObjectBoxInferer(Inferer):
    """``network(inputs, boxes)`` for ``(B, 4)`` boxes; for ``(B, K, 4)`` the voxel-wise maximum over the K per-box
    logit maps the network returns (the union of the K objects after thresholding).

    With ``keep_objects=True`` (inference, where each box is an object a user pointed at) and K > 1, the K per-box
    maps follow the union as channels 1..K, so each object can be written on its own
    (:class:`pipeline.engine.task.SplitObjectsd`).
    """

    def __init__(self, keep_objects: bool = False) -> None:
        super().__init__()
        self.keep_objects = keep_objects

    def __call__(self, inputs: torch.Tensor, network, *args, boxes: torch.Tensor | None = None, **kwargs):
        logits = network(inputs, *args, boxes=boxes, **kwargs)
        if boxes is None or boxes.dim() == 2:
            return logits
        union = logits.amax(dim=1, keepdim=True)
        if self.keep_objects and logits.shape[1] > 1:
            return torch.cat([union, logits], dim=1)
        return union
