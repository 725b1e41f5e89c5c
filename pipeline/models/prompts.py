"""Box prompts taken from label maps, as MedSAM trains and evaluates its box-prompted models.

During training MedSAM widens the label's tight bounding box by a random 0..``jitter`` pixels on each side, so the
model learns to tolerate the loose boxes a person draws; at evaluation the tight box (``jitter=0``) stands in for
the user's box. Boxes are ``(x0, y0, x1, y1)`` in pixel coordinates of the image they were taken from, inclusive.
The dictionary transform the bundles use (noise-robust, one box per object) is
:class:`pipeline.engine.prompts.PromptBoxd`.
"""

from __future__ import annotations

import torch

from pipeline.errors import PipelineError


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
