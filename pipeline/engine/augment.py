"""Training-time augmentation for the 2D bundles, chosen so the frozen-prefix cache stays exact by default.

Few-shot training sees each of its 5-40 images dozens of times, so it needs augmentation; but every new input
is a new frozen-prefix computation. The default, ``views``, draws one of the 8 dihedral views of the image (0, 90,
180, 270° rotations, each optionally flipped): a finite set, so after the first few epochs every view is cached
and training pays only for the trainable part. Endoscopy, dermoscopy and axial slices have no canonical
in-plane orientation, so these views are label-preserving. ``random`` adds continuous spatial and intensity
changes (affine rotation ±15°, scale ±10 %, contrast): infinitely many inputs, so the training-side cache is
switched off (:func:`cache_in_training`) while evaluation stays cached. ``none`` trains on the images as given.
"""

from __future__ import annotations

import math

from monai.transforms import MapTransform, RandAdjustContrastd, RandAffined, RandFlipd, RandRotate90d

from pipeline.errors import PipelineError

AUGMENTATIONS = ("none", "views", "random")


def _check(augment: str) -> None:
    if augment not in AUGMENTATIONS:
        raise PipelineError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r} (--augment)")


def training_augmentation(augment: str = "views", keys=("image", "label")) -> list[MapTransform]:
    """The transforms ``augment`` adds after resizing (images and labels move together; labels stay nearest)."""
    _check(augment)
    if augment == "none":
        return []
    # rotation k ~ U{0..3} (prob 3/4 of k in 1..3) times a flip with prob 1/2: each of the 8 views with prob 1/8
    views = [RandRotate90d(keys, prob=0.75, max_k=3, allow_missing_keys=True),
             RandFlipd(keys, prob=0.5, spatial_axis=0, allow_missing_keys=True)]
    if augment == "views":
        return views
    return views + [
        RandAffined(keys, prob=0.5, rotate_range=math.radians(15), scale_range=0.1,
                    mode=["bilinear", "nearest"][: len(keys)], padding_mode="zeros", allow_missing_keys=True),
        RandAdjustContrastd(keys[0], prob=0.3, gamma=(0.8, 1.25)),
    ]


def cache_in_training(augment: str = "views") -> bool:
    """Whether training steps may use the frozen-prefix cache: only when the inputs come from a finite set."""
    _check(augment)
    return augment != "random"
