"""Image readers for MONAI ``LoadImage(d)``: NIfTI, PNG/JPG, NRRD, and MetaImage files and DICOM series folders
read with SimpleITK.

MONAI ships no SimpleITK reader (its ``ITKReader`` needs the ``itk`` package, which this project does not install),
and its ``PydicomReader`` stacks slices in InstanceNumber order and passes a folder's stray files to pydicom.
``SimpleITKDicomReader`` instead groups the files of a folder by SeriesInstanceUID, sorts slices by their position
along the slice normal (as SimpleITK/GDCM do), warns about uneven gaps, and lets SimpleITK decode the pixels
(rescale slope/intercept applied, oblique orientation kept). Its arrays are ``(x, y, z)`` and its affines RAS, the
same conventions as MONAI's own readers, so a series maps every voxel to the same world point as ``PydicomReader``.

Files are recognised as DICOM by content (the ``DICM`` marker), not by name, so extensionless and UID-named slices
are found; other files in a series folder (a preview JPEG, a ``VERSION`` file) are skipped with a logged note.
Bad input raises :class:`~pipeline.errors.PipelineError` naming the file: a truncated or header-only slice, a
``.dcm`` file that is not DICOM, several series in a folder without ``series_uid`` to choose one, two slices at the
same position, and a missing slice (the volume's geometry would be wrong) unless ``allow_gaps`` is set.

MetaImage files (``.mha``/``.mhd``) go through :class:`SimpleITKImageReader`, with the same array and affine
conventions. PNG/JPG/TIFF go through MONAI's ``PILReader`` with the converters of :mod:`pipeline.data.converters`:
16-bit stays 16-bit, alpha is dropped, palette masks keep their indices, and a file holding several frames is refused.

:class:`LoadLabeld` loads a label in any of these formats, and DICOM-SEG (read by :mod:`pipeline.data.dicom_seg`)
onto the loaded image's series.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data import ImageReader, NibabelReader, NrrdReader, PILReader
from monai.transforms import LoadImaged, Transform

from pipeline.data.converters import to_colour, to_grayscale
from pipeline.data.formats import DICOM_SUFFIXES, IMAGE_2D_SUFFIXES, METAIMAGE_SUFFIXES, has_suffix
from pipeline.errors import PipelineError
from pipeline.options import flag

__all__ = [
    "DicomSeries",
    "SimpleITKDicomReader",
    "SimpleITKImageReader",
    "find_dicom_series",
    "image_readers",
    "is_dicom",
    "LoadClinicalImaged",
    "LoadLabeld",
    "PILImageReader",
]

LOG = logging.getLogger(__name__)

SLICE_ATTRIBUTES = ("SOPInstanceUID", "SeriesInstanceUID", "Rows", "Columns", "PixelData")
"""What a file needs to be a slice of an image series; a truncated or header-only file lacks some of them."""

NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "SR", "PR", "KO", "REG"}
"""Objects that live beside image series but are not slices of one: DICOM-SEG is read by ``dicom_seg``."""

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

GAP_TOLERANCE = 0.01
"""Relative excess of a slice gap over the smallest gap above which the gap is reported (1 %)."""


@dataclass(frozen=True)
class DicomSeries:
    """One image series: its files sorted along the slice normal, and what identifies it."""

    series_instance_uid: str
    files: tuple[Path, ...]
    sop_instance_uids: tuple[str, ...]
    modality: str
    description: str = ""


def is_dicom(path: Path) -> bool:
    """DICOM by content: the ``DICM`` marker after the 128-byte preamble (Part 10 files), or a DICOM file name."""
    import pydicom

    return has_suffix(path, DICOM_SUFFIXES) or pydicom.misc.is_dicom(path)


def _read_header(path: Path):
    """The header, with pixel data deferred (not read) so that its presence can still be checked."""
    import pydicom

    try:
        return pydicom.dcmread(path, defer_size=1024)
    except Exception as error:  # pydicom raises InvalidDicomError, EOFError, OSError, ... for broken files
        raise PipelineError(f"{path}: not a readable DICOM file ({type(error).__name__}: {error})") from error


def _series_files(folder: Path) -> list[Path]:
    """The files of ``folder`` that are DICOM; every other file is named in one logged note."""
    files, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.name.upper() == "DICOMDIR":
            continue
        (files if is_dicom(path) else skipped).append(path)
    if skipped:
        LOG.warning("%s: not DICOM, skipped: %s", folder, ", ".join(p.name for p in skipped))
    return files


def find_dicom_series(folder: str | Path, series_uid: str | None = None, allow_gaps: bool = False) -> DicomSeries:
    """The image series in ``folder`` (the one with ``series_uid`` when given), slices sorted by position.

    Sorting uses ImagePositionPatient projected on the normal of ImageOrientationPatient, ascending, which is the
    order SimpleITK's GDCM series reader uses; InstanceNumber is not trusted because scanners number slices either way.
    A missing slice is an error unless ``allow_gaps`` (then a warning): the volume would be stacked as if evenly spaced.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: DICOM series folder does not exist")
    headers = {}
    for path in _series_files(folder):
        header = _read_header(path)
        if str(header.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
            continue
        missing = [tag for tag in SLICE_ATTRIBUTES if tag not in header]
        if missing:
            raise PipelineError(f"{path}: DICOM file without {', '.join(missing)} (truncated or header only)")
        headers[path] = header
    if not headers:
        raise PipelineError(f"{folder}: no DICOM image files found")
    by_series: dict[str, list[Path]] = {}
    for path, header in headers.items():
        by_series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append(path)
    if series_uid is not None:
        if series_uid not in by_series:
            raise PipelineError(
                f"{folder}: no series with SeriesInstanceUID {series_uid}; {_describe(by_series, headers)}"
            )
        chosen = series_uid
    elif len(by_series) > 1:
        raise PipelineError(
            f"{folder}: holds {len(by_series)} series; choose one with the option series_uid "
            f"(bundles: --series_uid UID); {_describe(by_series, headers)}"
        )
    else:
        chosen = next(iter(by_series))
    files = _sort_by_position(by_series[chosen], headers, allow_gaps)
    first = headers[files[0]]
    return DicomSeries(
        series_instance_uid=chosen,
        files=tuple(files),
        sop_instance_uids=tuple(str(headers[f].SOPInstanceUID) for f in files),
        modality=str(first.get("Modality", "")),
        description=str(first.get("SeriesDescription", "")),
    )


def _describe(by_series: dict[str, list[Path]], headers: dict) -> str:
    parts = []
    for uid, files in by_series.items():
        header = headers[files[0]]
        parts.append(
            f"{uid} ({header.get('Modality', '?')}, {len(files)} files, '{header.get('SeriesDescription', '')}')"
        )
    return "series found: " + "; ".join(parts)


def _sort_by_position(files: list[Path], headers: dict, allow_gaps: bool) -> list[Path]:
    if len(files) == 1:
        return files
    for path in files:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient"):
            if tag not in headers[path]:
                raise PipelineError(f"{path}: lacks {tag}, so its place in the series is unknown")
    orientation = np.asarray(headers[files[0]].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    for path in files[1:]:
        if not np.allclose(headers[path].ImageOrientationPatient, orientation, atol=1e-4):
            raise PipelineError(
                f"{path}: ImageOrientationPatient differs from {files[0].name}; the series is not one volume"
            )
    position = {
        path: float(np.dot(np.asarray(headers[path].ImagePositionPatient, dtype=float), normal)) for path in files
    }
    ordered = sorted(files, key=lambda p: (position[p], p.name))
    gaps = np.diff([position[p] for p in ordered])
    for index, gap in enumerate(gaps):
        if gap < 1e-3:
            raise PipelineError(
                f"{ordered[index + 1]}: same slice position as {ordered[index].name} "
                f"({position[ordered[index]]:.3f} mm)"
            )
    step = float(gaps.min())  # a missing slice doubles one gap; the smallest gap is the intended spacing
    for index, gap in enumerate(gaps):
        if gap - step > GAP_TOLERANCE * step:
            message = (
                f"{ordered[index].parent}: gap of {gap:.3f} mm between {ordered[index].name} and "
                f"{ordered[index + 1].name} (slice spacing {step:.3f} mm): uneven spacing or a missing slice"
            )
            if not allow_gaps:
                raise PipelineError(
                    message + "; the volume's geometry would be wrong (set allow_gaps to read it anyway, "
                    "bundles: --allow_gaps True)"
                )
            warnings.warn(message, stacklevel=3)
    return ordered


class SimpleITKDicomReader(ImageReader):
    """MONAI ``ImageReader`` for a folder holding one DICOM series, decoded by SimpleITK.

    Args:
        series_uid: SeriesInstanceUID to read when the folder holds several series.
        allow_gaps: read a series with a missing slice (warns) instead of refusing it.
        affine_lps_to_ras: return a RAS affine (MONAI's default convention) rather than DICOM's LPS.
    """

    def __init__(self, series_uid: str | None = None, allow_gaps: bool = False, affine_lps_to_ras: bool = True):
        super().__init__()
        self.series_uid = series_uid
        self.allow_gaps = flag("allow_gaps", allow_gaps)
        self.affine_lps_to_ras = affine_lps_to_ras

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """Accepts a single folder path: other MONAI readers never claim folders, so the choice is unambiguous."""
        paths = list(filename) if isinstance(filename, (list, tuple)) else [filename]
        return len(paths) == 1 and Path(paths[0]).is_dir()

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs):
        import SimpleITK as sitk

        if isinstance(data, (list, tuple)):
            if len(data) != 1:
                raise PipelineError(f"SimpleITKDicomReader reads one series folder at a time, got {len(data)} paths")
            data = data[0]
        series = find_dicom_series(data, kwargs.get("series_uid", self.series_uid), self.allow_gaps)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in series.files])
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise PipelineError(
                f"{_first_unreadable(series.files)}: pixel data cannot be decoded (truncated or corrupt file)"
            ) from error
        return image, series

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        import SimpleITK as sitk

        image, series = img
        array = sitk.GetArrayFromImage(image).astype(np.float32)  # (z, y, x), rescale slope/intercept already applied
        if image.GetNumberOfComponentsPerPixel() > 1:
            raise PipelineError(f"{series.files[0].parent}: multi-component (colour) DICOM series are not supported")
        array = np.transpose(array, (2, 1, 0))
        affine = _sitk_affine(image)
        if self.affine_lps_to_ras:
            affine = LPS_TO_RAS @ affine
        meta = {
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(array.shape),
            "original_channel_dim": float("nan"),
            "space": "RAS" if self.affine_lps_to_ras else "LPS",
            "filename_or_obj": str(series.files[0].parent),
            "series_instance_uid": series.series_instance_uid,
            "modality": series.modality,
        }
        return array, meta


def _sitk_affine(image) -> np.ndarray:
    """Voxel (i, j, k) to LPS millimetres, from SimpleITK's direction, spacing and origin."""
    dims = image.GetDimension()
    affine = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dims, dims)
    affine[:dims, :dims] = direction @ np.diag(image.GetSpacing())
    affine[:dims, 3] = image.GetOrigin()
    return affine


def _first_unreadable(files: Sequence[Path]) -> Path:
    """The file SimpleITK fails on, so the error can name it instead of the whole series."""
    import SimpleITK as sitk

    for path in files:
        try:
            sitk.ReadImage(str(path))
        except RuntimeError:
            return path
    return files[0].parent


class SimpleITKImageReader(ImageReader):
    """MONAI ``ImageReader`` for one MetaImage file (``.mha``, or ``.mhd`` with its raw data file), decoded by
    SimpleITK: scalar 3D volumes (the format is listed with the volumes), arrays ``(x, y, z)`` and a RAS affine, as
    :class:`SimpleITKDicomReader` gives."""

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        paths = list(filename) if isinstance(filename, (list, tuple)) else [filename]
        return len(paths) == 1 and has_suffix(paths[0], METAIMAGE_SUFFIXES)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs):
        import SimpleITK as sitk

        path = Path(data[0] if isinstance(data, (list, tuple)) else data)
        try:
            return sitk.ReadImage(str(path)), path
        except RuntimeError as error:
            raise PipelineError(f"{path}: not a readable MetaImage ({str(error).strip().splitlines()[-1]})") from error

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        import SimpleITK as sitk

        image, path = img
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() > 1:
            components = image.GetNumberOfComponentsPerPixel()
            raise PipelineError(f"{path}: a {image.GetDimension()}D MetaImage with {components} components per "
                                "voxel; one scalar 3D volume per file is read")
        array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
        affine = LPS_TO_RAS @ _sitk_affine(image)
        meta = {
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(array.shape),
            "original_channel_dim": float("nan"),
            "space": "RAS",
            "filename_or_obj": str(path),
        }
        return array, meta


class PILImageReader(PILReader):
    """MONAI's ``PILReader`` for TIFF too: MONAI's own suffix list stops at BMP, so a TIFF reached no reader."""

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        from monai.data.utils import is_supported_format

        return is_supported_format(filename, [suffix[1:] for suffix in IMAGE_2D_SUFFIXES])


def image_readers(
    series_uid: str | None = None, grayscale: bool = False, allow_gaps: bool = False
) -> list[ImageReader]:
    """The readers the pipeline registers, lowest priority first (MONAI tries the last registered first)."""
    return [
        NibabelReader(),
        NrrdReader(),
        PILImageReader(converter=to_grayscale if grayscale else to_colour),
        SimpleITKImageReader(),
        SimpleITKDicomReader(series_uid=series_uid, allow_gaps=allow_gaps),
    ]


class LoadClinicalImaged(LoadImaged):
    """``LoadImaged`` with the pipeline's readers registered (usable as a ``_target_`` in bundle configs).

    ``grayscale=True`` reads PNG/JPG as one channel, which is what masks need. A file no reader can open raises
    one PipelineError naming it, instead of MONAI's list of every reader's traceback; so does a 4D volume with
    several frames (a time series or stacked modalities), which would otherwise pass for a multi-channel image.
    """

    def __init__(self, keys, series_uid: str | None = None, grayscale: bool = False, allow_gaps: bool = False,
                 ensure_channel_first: bool = True, **kwargs):
        # reader=None keeps MONAI's choice by file suffix; ours are registered last, so they are asked first
        super().__init__(keys, image_only=True, ensure_channel_first=ensure_channel_first, **kwargs)
        for reader in image_readers(series_uid=series_uid, grayscale=grayscale, allow_gaps=allow_gaps):
            self.register(reader)

    def __call__(self, data, reader: ImageReader | None = None):
        for key in self.key_iterator(dict(data)):
            path = Path(data[key])
            if not path.exists():
                raise PipelineError(f"{path}: file not found (key '{key}')")
        try:
            loaded = super().__call__(data, reader)
        except PipelineError:
            raise
        except Exception as error:  # MONAI raises RuntimeError/OptionalImportError/... listing every reader tried
            names = ", ".join(str(data[k]) for k in self.key_iterator(dict(data)))
            raise PipelineError(
                f"{names}: cannot be read as an image ({type(error).__name__}: {str(error).splitlines()[0]})"
            ) from error
        for key in self.key_iterator(loaded):
            image = loaded[key]
            if image.ndim == 4 and image.shape[0] > 1:
                raise PipelineError(
                    f"{data[key]}: 4D image with {image.shape[0]} frames of shape {tuple(image.shape[1:])}; "
                    "one 3D volume per case is read (split the frames into files)"
                )
        return loaded


class LoadLabeld(Transform):
    """Load labels whatever their format: DICOM-SEG files (known by content, so extensionless ones too) onto the
    loaded image's series, other files as images.

    Masks stored as PNG/JPG are read as one grey channel. A MONAI ``Transform``, so ``CacheDataset`` caches past it
    (it stops at the first step that is not one).
    """

    def __init__(self, keys: str = "label", image_key: str = "image"):
        from pipeline.data.dicom_seg import LoadDicomSegd  # dicom_seg reads series through this module

        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.dicom_seg = LoadDicomSegd(self.keys, image_key)
        self.image = LoadClinicalImaged(self.keys, grayscale=True, allow_missing_keys=True)

    def __call__(self, data: Mapping) -> dict:
        present = [k for k in self.keys if k in data]
        if present and all(Path(data[k]).is_file() and is_dicom(Path(data[k])) for k in present):
            return self.dicom_seg(data)
        return self.image(data)
