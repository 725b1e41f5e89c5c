"""3D volumes as 2D slices for 2D backbones (SAM, MedSAM, LiteMedSAM), and per-slice predictions back into 3D.

Few-shot volumes are small and few, so each volume is loaded and preprocessed once and kept in memory; slices are
views into it. Foreground-aware sampling draws a chosen share of slices that contain label, because most slices of
a cropped organ volume are empty and a 2D model trained on uniform slices learns to predict background. Every item
carries ``case`` and ``slice_index`` so :func:`assemble_volume` can put predictions back where they came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data import Dataset

from pipeline.errors import PipelineError

__all__ = ["SliceDataset", "assemble_volume", "slice_layout"]


def slice_layout(slice_axis: int) -> list[int]:
    """The ``Transposed`` indices that put ``slice_axis`` (0, 1 or 2 of a channel-first ``(C, x, y, z)`` volume, as
    MONAI's readers give it) last and the slice plane in display layout: rows then columns.

    The SAM family was trained on images in (rows, columns) order, and an axial DICOM/NIfTI slice is displayed
    with y down the rows and x along the columns, so axial slicing is ``[0, 2, 1, 3]`` (x and y swapped). Sagittal
    and coronal slices show z down the rows. The transform is invertible, so ``Invertd`` maps predictions back to
    the input's exact grid, and a user's 3D box drawn on the loaded volume moves with it.
    """
    if slice_axis not in (0, 1, 2):
        raise PipelineError(f"slice_axis must be 0, 1 or 2 (the volume's x, y or z axis), got {slice_axis!r}")
    rows, columns = {0: (2, 1), 1: (2, 0), 2: (1, 0)}[slice_axis]
    return [0, 1 + rows, 1 + columns, 1 + slice_axis]


class SliceDataset(Dataset):
    """2D items ``{image: (C, H, W), label: (1, H, W), case, slice_index}`` cut from 3D volumes along ``slice_axis``.

    Args:
        data: datalist entries (``image``/``label`` paths or already loaded arrays).
        volume_transform: loads and preprocesses one entry into channel-first 3D tensors (e.g. a preset).
        slice_transform: applied to every 2D item (augmentation, resizing).
        slice_axis: spatial axis to slice along (0, 1 or 2; -1 = the last).
        samples_per_volume: slices drawn per volume per epoch; None yields every slice in order (for inference).
        foreground_ratio: share of the drawn slices that contain label (when the volume has any).
        seed: seed of the draw; :meth:`resample` with the epoch number redraws deterministically.
    """

    def __init__(
        self,
        data: Sequence[dict],
        volume_transform: Callable | None = None,
        slice_transform: Callable | None = None,
        slice_axis: int = -1,
        samples_per_volume: int | None = None,
        foreground_ratio: float = 0.5,
        seed: int = 0,
        image_key: str = "image",
        label_key: str = "label",
    ):
        if not 0 <= foreground_ratio <= 1:
            raise PipelineError(f"foreground_ratio {foreground_ratio} must be in [0, 1]")
        self.volumes = [volume_transform(dict(entry)) if volume_transform else dict(entry) for entry in data]
        self.slice_transform = slice_transform
        self.axis = slice_axis % 3
        self.samples_per_volume = samples_per_volume
        self.foreground_ratio = foreground_ratio
        self.seed = seed
        self.image_key, self.label_key = image_key, label_key
        self.resample(0)
        super().__init__(self.index, transform=None)

    def _foreground_slices(self, volume: dict) -> np.ndarray:
        label = volume.get(self.label_key)
        if label is None:
            return np.array([], dtype=int)
        spatial = torch.as_tensor(label)[0] > 0
        other = tuple(a for a in range(3) if a != self.axis)
        return torch.nonzero(spatial.any(dim=other[1]).any(dim=other[0])).flatten().numpy()

    def resample(self, epoch: int) -> None:
        """Draw the slices of ``epoch`` (same seed and epoch, same slices)."""
        rng = np.random.default_rng([self.seed, epoch])
        index = []
        for case, volume in enumerate(self.volumes):
            depth = volume[self.image_key].shape[1 + self.axis]
            if self.samples_per_volume is None:
                index += [(case, k) for k in range(depth)]
                continue
            foreground = self._foreground_slices(volume)
            background = np.setdiff1d(np.arange(depth), foreground)
            n_fg = round(self.foreground_ratio * self.samples_per_volume) if len(foreground) else 0
            n_fg = n_fg if len(background) else self.samples_per_volume
            picks = list(rng.choice(foreground, n_fg, replace=True)) if n_fg else []
            picks += list(rng.choice(background, self.samples_per_volume - n_fg, replace=True))
            index += [(case, int(k)) for k in picks]
        self.index = index
        self.data = index

    def __getitem__(self, position: int) -> dict:
        case, k = self.index[position]
        volume = self.volumes[case]
        item = {key: value for key, value in volume.items() if key not in (self.image_key, self.label_key)}
        for key in (self.image_key, self.label_key):
            if key in volume:
                item[key] = torch.as_tensor(volume[key]).select(1 + self.axis, k).clone()
        item["case"], item["slice_index"] = case, k
        return self.slice_transform(item) if self.slice_transform else item


def assemble_volume(
    predictions: Sequence, slice_indices: Sequence[int], depth: int, slice_axis: int = -1
) -> np.ndarray:
    """Stack 2D predictions ``(H, W)`` (or ``(1, H, W)``) at their slice indices into a ``depth``-deep volume.

    Slices with no prediction stay 0; a slice predicted twice is an error (it would silently hide one).
    """
    if len(predictions) != len(slice_indices):
        raise PipelineError(f"{len(predictions)} predictions but {len(slice_indices)} slice indices")
    if not predictions:
        raise PipelineError("no slice predictions to assemble")
    if len(set(slice_indices)) != len(slice_indices):
        raise PipelineError("a slice index occurs twice among the predictions")
    planes = [np.asarray(p.detach().cpu() if hasattr(p, "detach") else p) for p in predictions]
    planes = [p[0] if p.ndim == 3 and p.shape[0] == 1 else p for p in planes]
    axis = slice_axis % 3
    shape = list(planes[0].shape)
    shape.insert(axis, depth)
    volume = np.zeros(shape, dtype=planes[0].dtype)
    for plane, k in zip(planes, slice_indices, strict=False):
        if not 0 <= k < depth:
            raise PipelineError(f"slice index {k} outside the volume depth {depth}")
        index = [slice(None)] * 3
        index[axis] = k
        volume[tuple(index)] = plane
    return volume
