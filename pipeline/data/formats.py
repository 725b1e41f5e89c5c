"""The file formats the pipeline reads, by file suffix: one definition for the datalist builder, the inference
input listing, the readers and the analysis commands, so a format one of them accepts is one the others accept.

Suffixes are lower case with their dot; names are matched case-insensitively and by ending, so ``.nii.gz`` works.
Which reader opens which suffix: :func:`pipeline.data.readers.image_readers`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Frames read by PIL (:class:`pipeline.data.readers.PILImageReader`)."""

LOSSY_SUFFIXES = (".jpg", ".jpeg")
"""2D formats whose masks carry compression noise around the two mask levels."""

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
"""Volumes in one file: NIfTI (nibabel), NRRD (pynrrd), MetaImage (SimpleITK)."""

METAIMAGE_SUFFIXES = (".mha", ".mhd")
"""The volumes SimpleITK reads (:class:`pipeline.data.readers.SimpleITKImageReader`)."""

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
"""Files named like DICOM must be DICOM; other files without the DICM marker (README, preview.jpg, ...) are skipped."""

IMAGE_SUFFIXES = IMAGE_2D_SUFFIXES + VOLUME_SUFFIXES
"""Every single-file image format (a DICOM series is a folder)."""


def has_suffix(path: str | Path, suffixes: Iterable[str]) -> bool:
    """Whether the name of ``path`` ends with one of ``suffixes``, ignoring case."""
    name = Path(path).name.lower()
    return any(name.endswith(suffix) for suffix in suffixes)


def strip_suffix(path: str | Path) -> str:
    """The file name without its format suffix (both parts of ``.nii.gz``), which pairs images with labels."""
    path = Path(path)
    for suffix in VOLUME_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem
