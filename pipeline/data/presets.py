"""Preprocessing presets as MONAI transform chains, and the label/validation transforms they share.

- ``ct_window``: Hounsfield window (level/width) to [0, 1], clipped, so soft tissue keeps its contrast.
- ``mr_percentile``: MR has no absolute scale, so intensities are mapped by their own 0.5/99.5 percentiles.
- ``rgb_endoscopy``: 8- or 16-bit RGB to [0, 1] by the storage range; the backbones apply their own mean/std
  normalisation.

Every chain loads with :class:`~pipeline.data.readers.LoadClinicalImaged`, puts channels first, binarises or remaps
labels when asked, and runs :class:`ValidateImageLabeld`, which turns the common data faults (NaN/inf, a constant
image, label values outside the declared classes, image and label on different grids) into one PipelineError naming
the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    MapLabelValue,
    MapTransform,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
)
from monai.utils import convert_to_dst_type

from pipeline.data.masks import MASK_THRESHOLD, binary_foreground
from pipeline.data.readers import LoadClinicalImaged, LoadLabeld
from pipeline.errors import PipelineError

__all__ = [
    "BinariseLabeld",
    "PRESETS",
    "Preprocessing",
    "RemapLabeld",
    "ScaleStoredRanged",
    "ValidateImageLabeld",
    "ct_window",
    "mr_percentile",
    "pipeline_error_in",
    "preset",
    "rgb_endoscopy",
]


def _name(tensor, fallback: str) -> str:
    meta = getattr(tensor, "meta", None) or {}
    return str(meta.get("filename_or_obj", fallback))


class BinariseLabeld(MapTransform):
    """Two-level masks (0/1 or 0/255, JPEG noise allowed in JPEG files) to {0, 1}; any other mask is refused.

    Thresholding alone would turn a third class into background or foreground without a word; the check is
    :func:`pipeline.data.masks.binary_foreground`. ``threshold`` is on the 0..255 scale.
    """

    def __init__(self, keys: KeysCollection, threshold: float = MASK_THRESHOLD, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.threshold = threshold

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            grey = np.asarray(label, dtype=np.float32).mean(axis=0, keepdims=True)  # plain arrays: no metadata copies
            foreground = binary_foreground(grey, _name(label, key), self.threshold)
            d[key] = convert_to_dst_type(foreground, label, dtype=label.dtype)[0]  # keeps a MetaTensor's metadata
        return d


class ScaleStoredRanged(MapTransform):
    """Scale intensities from the file's storage range (0..255, or 0..65535 for 16-bit PNG/TIFF) to [0, 1].

    A fixed 0..255 range would clip a 16-bit image to white; the range comes from the PIL mode the reader recorded.
    32-bit integer or float pixels (PIL modes I and F) have no storage range, so they are refused.
    """

    SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            mode = (getattr(d[key], "meta", None) or {}).get("mode")
            if mode in ("I", "F"):
                raise PipelineError(f"{_name(d[key], key)}: 32-bit pixels (PIL mode {mode}) have no range to scale "
                                    "from; save the image with 8 or 16 bits")
            d[key] = d[key] / (65535.0 if mode in self.SIXTEEN_BIT_MODES else 255.0)
        return d


class RemapLabeld(MapTransform):
    """Map label values to class indices (e.g. BraTS {0,1,2,4} -> {0,1,2,3}); unmapped values are an error.

    MONAI's ``MapLabelValue`` keeps values it has no mapping for; a value nobody declared is a data fault here.
    """

    def __init__(self, keys: KeysCollection, mapping: Mapping[int, int], allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.mapping = {int(k): int(v) for k, v in mapping.items()}
        self.mapper = MapLabelValue(orig_labels=list(self.mapping), target_labels=list(self.mapping.values()))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            values = {int(v) for v in torch.unique(torch.as_tensor(d[key])).tolist()}
            unknown = sorted(values - set(self.mapping))
            if unknown:
                raise PipelineError(f"{_name(d[key], key)}: label values {unknown} have no mapping in {self.mapping}")
            d[key] = self.mapper(d[key])
        return d


class ValidateImageLabeld(MapTransform):
    """Raise PipelineError naming the files for NaN/inf or constant intensities, out-of-range labels, mismatched grids.

    Args:
        image_key: key of the image (channel first).
        label_key: key of the label (channel first, one channel), or None for images alone.
        num_classes: labels must lie in ``0 .. num_classes - 1`` (None skips the check).
        atol: tolerance on affine entries (mm) when comparing image and label grids.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str | None = "label",
        num_classes: int | None = None,
        atol: float = 1e-3,
    ):
        super().__init__([k for k in (image_key, label_key) if k], allow_missing_keys=True)
        self.image_key, self.label_key, self.num_classes, self.atol = image_key, label_key, num_classes, atol

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        image = d[self.image_key]
        image_name = _name(image, self.image_key)
        finite = torch.isfinite(torch.as_tensor(image))
        if not bool(finite.all()):
            raise PipelineError(f"{image_name}: {int((~finite).sum())} NaN/inf intensities")
        low, high = torch.aminmax(torch.as_tensor(image))
        if bool(low == high):
            raise PipelineError(f"{image_name}: every voxel is {float(low)} (blank image or failed export)")
        if self.label_key is None or self.label_key not in d:
            return d
        label = d[self.label_key]
        label_name = _name(label, self.label_key)
        if tuple(image.shape[1:]) != tuple(label.shape[1:]):
            raise PipelineError(
                f"{image_name} and {label_name}: spatial shapes differ, "
                f"image {tuple(image.shape[1:])} vs label {tuple(label.shape[1:])}"
            )
        if hasattr(image, "affine") and hasattr(label, "affine"):
            difference = (image.affine.double() - label.affine.double()).abs().max().item()
            if difference > self.atol:
                raise PipelineError(
                    f"{image_name} and {label_name}: affines differ by up to {difference:.4g} mm "
                    f"(image {np.round(image.affine.numpy(), 4).tolist()} "
                    f"vs label {np.round(label.affine.numpy(), 4).tolist()})"
                )
        if self.num_classes is not None:
            values = torch.unique(torch.as_tensor(label)).tolist()
            bad = [v for v in values if v != int(v) or not 0 <= v < self.num_classes]
            if bad:
                raise PipelineError(
                    f"{label_name}: label values {bad[:10]} outside the declared classes 0..{self.num_classes - 1}"
                )
        return d


def pipeline_error_in(error: BaseException) -> PipelineError | None:
    """The PipelineError behind ``error``, which MONAI wraps in ``RuntimeError("applying transform ...")``."""
    while error is not None:
        if isinstance(error, PipelineError):
            return error
        error = error.__cause__
    return None


class Preprocessing(Compose):
    """``Compose`` that lets a PipelineError from any of its transforms through unwrapped, so users see one line.

    Nested chains (a preset inside a bundle's preprocessing) are inlined. MONAI's ``CacheDataset`` caches the
    results of the leading transforms up to the first random one, and it looks only at the top level, where any
    ``Compose`` counts as random: a preset nested as one element meant that nothing was cached, so every image was
    decoded and resized again at every epoch and every validation round.
    """

    def __init__(self, transforms: Sequence, **kwargs):
        kwargs.setdefault("log_stats", False)
        super().__init__(_inlined(transforms, kwargs.get("map_items", True)), **kwargs)

    def __call__(self, input_, *args, **kwargs):
        try:
            return super().__call__(input_, *args, **kwargs)
        except RuntimeError as error:
            cause = pipeline_error_in(error)
            if cause is None:
                raise
            raise cause from None


def _inlined(transforms, map_items) -> list:
    """``transforms`` with every nested plain ``Compose`` or :class:`Preprocessing` of the same ``map_items``
    replaced by its transforms (as ``Compose.flatten`` does for plain ``Compose`` only)."""
    flat = []
    for transform in transforms if isinstance(transforms, Sequence) else [transforms]:
        if type(transform) in (Compose, Preprocessing) and transform.map_items == map_items:
            flat += _inlined(transform.transforms, map_items)
        else:
            flat.append(transform)
    return flat


def _loading(keys: Sequence[str], binarise: float | None, remap: Mapping[int, int] | None, num_classes: int | None,
             series_uid: str | None = None, allow_gaps: bool = False) -> list:
    image_key, label_key = keys[0], (keys[1] if len(keys) > 1 else None)
    chain: list = [LoadClinicalImaged(image_key, series_uid=series_uid, allow_gaps=allow_gaps)]
    if label_key:
        chain.append(LoadLabeld(label_key, image_key))
        if binarise is not None:
            chain.append(BinariseLabeld(label_key, threshold=binarise, allow_missing_keys=True))
        if remap:
            chain.append(RemapLabeld(label_key, remap, allow_missing_keys=True))
    chain.append(ValidateImageLabeld(image_key, label_key, num_classes=num_classes))
    return chain


def ct_window(
    keys: Sequence[str] = ("image", "label"), level: float = 40, width: float = 400, num_classes: int | None = None,
    remap: Mapping[int, int] | None = None, series_uid: str | None = None, allow_gaps: bool = False,
) -> Preprocessing:
    """Load, validate, then window CT intensities (HU) to [0, 1]: ``level`` +/- ``width`` / 2, clipped."""
    return Preprocessing(
        _loading(keys, None, remap, num_classes, series_uid, allow_gaps)
        + [
            ScaleIntensityRanged(
                keys[0], a_min=level - width / 2, a_max=level + width / 2, b_min=0.0, b_max=1.0, clip=True
            )
        ]
    )


def mr_percentile(
    keys: Sequence[str] = ("image", "label"), lower: float = 0.5, upper: float = 99.5, num_classes: int | None = None,
    remap: Mapping[int, int] | None = None, series_uid: str | None = None, allow_gaps: bool = False,
) -> Preprocessing:
    """Load, validate, then map the ``lower``..``upper`` intensity percentiles of each MR volume to [0, 1], clipped."""
    return Preprocessing(
        _loading(keys, None, remap, num_classes, series_uid, allow_gaps)
        + [ScaleIntensityRangePercentilesd(keys[0], lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)]
    )


def rgb_endoscopy(keys: Sequence[str] = ("image", "label"), binarise: float | None = MASK_THRESHOLD,
                  num_classes: int | None = 2) -> Preprocessing:
    """Load RGB frames and masks, binarise two-level masks at ``binarise`` (None: keep values), scale the storage
    range (8- or 16-bit) to [0, 1]."""
    return Preprocessing(_loading(keys, binarise, None, num_classes) + [ScaleStoredRanged(keys[0])])


PRESETS = {"ct_window": ct_window, "mr_percentile": mr_percentile, "rgb_endoscopy": rgb_endoscopy}


def preset(name: str, **kwargs) -> Preprocessing:
    """The preset chain called ``name`` (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise PipelineError(f"unknown preprocessing preset '{name}'; choose one of {sorted(PRESETS)}")
    return PRESETS[name](**kwargs)
