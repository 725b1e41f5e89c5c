"""Inferers for box-prompted networks, whose ``forward(image, boxes)`` segments one object per box.

A label with several separate objects gets one box each (:class:`pipeline.engine.prompts.PromptBoxd` with
``per_object=True``), as MedSAM evaluates multi-object images; one box around all of them would also prompt the
background between them. :class:`ObjectBoxInferer` passes all K boxes in one call (the SAM-family networks encode
the image once and decode every box in one batch) and unites the K objects.
"""

from __future__ import annotations

import torch
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type, convert_to_tensor

from pipeline.engine.prompts import NO_CLASS
from pipeline.errors import PipelineError
from pipeline.options import flag


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


NO_OBJECT = -1.0e4
"""The logit of a class where none of its boxes reaches: far below the background's 0 (:class:`VolumeBoxInferer`)."""


class VolumeBoxInferer(Inferer):
    """MedSAM's 3D box protocol: a 2D box-prompted network segments a volume ``(1, C, rows, columns, slices)``
    slice by slice inside each 3D box, and slices outside a box are background.

    ``boxes`` ``(1, N, 7)`` holds rows ``[class, x0, y0, z0, x1, y1, z1]``
    (:class:`pipeline.engine.prompts.VolumeBoxesd`). Each box gives every slice it spans a 2D box:

    * ``propagate=False``: the 3D box's own ``(x0, y0, x1, y1)`` on every slice;
    * ``propagate=True`` (MedSAM's LiteMedSAM 3D inference): only the key slice, the box's middle one, gets it;
      each further slice, going up and down from there, is prompted with the box of its neighbour's predicted
      mask widened by MedSAM's 3 pixels at 256 (:data:`PROPAGATION_MARGIN` of the longest side), and falls back
      to the 3D box's extent when the neighbour's mask is empty.

    The output has ``num_classes`` channels for an argmax: background is a constant 0 and each class is the
    voxel-wise maximum of its boxes' logits (:data:`NO_OBJECT` outside them), so a voxel is the class with the
    highest logit above 0, else background -- exactly the sigmoid threshold of a single-class box model.
    """

    PROPAGATION_MARGIN = 3 / 256

    def __init__(self, num_classes: int = 2, slice_batch_size: int = 4, propagate: bool = False) -> None:
        super().__init__()
        self.num_classes, self.slice_batch_size = num_classes, slice_batch_size
        self.propagate = flag("propagate", propagate)

    def __call__(self, inputs: torch.Tensor, network, *args, boxes: torch.Tensor | None = None, **kwargs):
        if boxes is None or inputs.shape[0] != 1 or boxes.dim() != 3 or boxes.shape[-1] != 7:
            shape = None if boxes is None else tuple(boxes.shape)
            raise PipelineError(f"3D box prompting takes one volume (1, C, rows, columns, slices) and boxes "
                                f"(1, N, 7) of [class, x0, y0, z0, x1, y1, z1], got {tuple(inputs.shape)} and {shape}")
        # a plain tensor: MetaTensor's per-operation metadata handling would run inside every layer of the network
        volume = convert_to_tensor(inputs, track_meta=False)[0]
        logits = volume.new_full((self.num_classes, *volume.shape[1:]), NO_OBJECT)
        logits[0] = 0.0
        prompts = []
        for row in boxes[0].tolist():
            if row[0] == NO_CLASS:
                continue
            label, (x0, y0, z0, x1, y1, z1) = int(row[0]), [int(round(v)) for v in row[1:]]
            if not 1 <= label < self.num_classes:
                raise PipelineError(f"a box prompts class {label}, but the model has classes 1..{self.num_classes - 1}")
            prompts.append((label, [float(x0), float(y0), float(x1), float(y1)], z0, min(z1, volume.shape[-1] - 1)))
        if self.propagate:
            for label, box, z0, z1 in prompts:
                span = logits[label, ..., z0 : z1 + 1]
                logits[label, ..., z0 : z1 + 1] = torch.maximum(span, self._propagated(network, volume, box, z0, z1))
        else:
            self._every_slice(network, volume, prompts, logits)
        return convert_to_dst_type(logits[None], dst=inputs)[0]

    @staticmethod
    def _slice(network, volume: torch.Tensor, z: int, box: list[float]) -> torch.Tensor:
        """The network's logits ``(rows, columns)`` for slice ``z`` prompted with the 2D ``box``."""
        return network(volume[..., z][None], boxes=volume.new_tensor([box]))[0, 0]

    def _every_slice(self, network, volume: torch.Tensor, prompts: list, logits: torch.Tensor) -> None:
        """Every slice once, with all the boxes that span it in one call (one encoder pass per slice, one decoder
        call for its K boxes); consecutive slices spanned by the same boxes go in batches of ``slice_batch_size``."""
        spanning = {}
        for z in range(volume.shape[-1]):
            active = tuple(k for k, (_, _, z0, z1) in enumerate(prompts) if z0 <= z <= z1)
            if active:
                spanning.setdefault(active, []).append(z)
        for active, indices in spanning.items():
            boxes = volume.new_tensor([prompts[k][1] for k in active])
            for start in range(0, len(indices), self.slice_batch_size):
                chunk = indices[start : start + self.slice_batch_size]
                images = volume[..., chunk].permute(3, 0, 1, 2)
                out = network(images, boxes=boxes.expand(len(chunk), -1, -1)).permute(1, 2, 3, 0)  # (K, rows, cols, B)
                for k, box_logits in zip(active, out, strict=True):
                    label = prompts[k][0]
                    logits[label, ..., chunk] = torch.maximum(logits[label, ..., chunk], box_logits)

    def _propagated(self, network, volume, box, z0, z1) -> torch.Tensor:
        rows, columns = volume.shape[1:3]
        margin = self.PROPAGATION_MARGIN * max(rows, columns)
        out = volume.new_full((rows, columns, z1 - z0 + 1), NO_OBJECT)
        key = (z0 + z1) // 2
        out[..., key - z0] = self._slice(network, volume, key, box)
        for order in (range(key + 1, z1 + 1), range(key - 1, z0 - 1, -1)):
            previous = key
            for z in order:
                mask = out[..., previous - z0] > 0
                prompt = box
                if bool(mask.any()):
                    ys, xs = torch.nonzero(mask, as_tuple=True)
                    prompt = [max(float(xs.min()) - margin, 0.0), max(float(ys.min()) - margin, 0.0),
                              min(float(xs.max()) + margin, columns - 1.0), min(float(ys.max()) + margin, rows - 1.0)]
                out[..., z - z0] = self._slice(network, volume, z, prompt)
                previous = z
        return out
