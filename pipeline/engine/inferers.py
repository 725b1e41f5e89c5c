"""Inferers for box-prompted networks, whose ``forward(image, boxes)`` segments one object per ``(B, 4)`` box.

A label with several separate objects gets one box each (:class:`pipeline.engine.prompts.PromptBoxd` with
``per_object=True``), as MedSAM evaluates multi-object images; one box around all of them would also prompt the
background between them. :class:`ObjectBoxInferer` runs the network once per box and unites the results.
"""

from __future__ import annotations

import torch
from monai.inferers import Inferer


class ObjectBoxInferer(Inferer):
    """``network(inputs, boxes)`` for ``(B, 4)`` boxes; for ``(B, K, 4)`` the voxel-wise maximum of the K logit maps
    (the union of the K objects after thresholding). Evaluation batches hold one image, so K is that image's count."""

    def __call__(self, inputs: torch.Tensor, network, *args, boxes: torch.Tensor | None = None, **kwargs):
        if boxes is None or boxes.dim() == 2:
            return network(inputs, *args, boxes=boxes, **kwargs)
        logits = [network(inputs, *args, boxes=boxes[:, k], **kwargs) for k in range(boxes.shape[1])]
        return torch.stack(logits).amax(dim=0)
