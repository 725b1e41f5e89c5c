"""What ``python -m monai.bundle verify_net_in_out`` runs for a box-prompted network.

MONAI checks a bundle's network by calling ``forward(image)`` on a random image of the metadata's input shape, but a
box-prompted SAM-family model needs ``boxes``. :class:`WholeImageBox` gives it the box the bundles already use when
no label is at hand (:class:`pipeline.engine.prompts.PromptBoxd`): the whole image. Bundles expose it as
``network_verify`` (``--net_id network_verify``); training and inference keep using ``network_def`` with real boxes.
"""

from __future__ import annotations

import torch
from torch import nn


class WholeImageBox(nn.Module):
    """``network(image, boxes)`` with ``boxes`` defaulting to one ``(0, 0, W - 1, H - 1)`` box per image."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        if boxes is None and getattr(self.network, "prompt", "box") == "box":
            height, width = image.shape[-2:]
            box = image.new_tensor([0.0, 0.0, width - 1.0, height - 1.0])
            boxes = box.expand(image.shape[0], 4)
        return self.network(image, boxes)
