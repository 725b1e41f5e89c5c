"""Predictions out as files a viewer opens in the right place.

Arrays follow MONAI's reader conventions: 3D ``(x, y, z)`` with a RAS affine, 2D ``(x, y)`` = ``(width, height)``
as ``PILReader`` returns them; a leading channel of size 1 is accepted. :func:`write_prediction` picks the formats
from the reference image the prediction was made on:

- DICOM series input: NIfTI label map (the series' affine) + DICOM-SEG referencing the source instances;
- other 3D input (NIfTI, NRRD): NIfTI label map with the input's exact affine;
- 2D input (PNG/JPG): PNG mask (0/255 for one class, label values otherwise) + overlay PNG on the image, with the
  box prompts drawn on it, and with several boxes one ``_object<k>_mask.png`` per box beside the union's mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

__all__ = ["overlay_rgb", "write_nifti", "write_overlay_png", "write_png_mask", "write_prediction"]

OVERLAY_COLOURS = np.array(
    [[0, 0, 0], [0, 255, 0], [255, 200, 0], [64, 128, 255], [255, 0, 255], [0, 220, 220], [255, 64, 64]], dtype=np.uint8
)


BOX_COLOUR = (255, 255, 0)


def _spatial(array, ndim: int | None = None) -> np.ndarray:
    array = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array)
    if ndim is not None and array.ndim == ndim + 1 and array.shape[0] == 1:
        array = array[0]
    return array


def _label_dtype(label: np.ndarray):
    return np.uint8 if label.max(initial=0) < 256 else np.uint16


def write_nifti(label, affine, path: str | Path) -> Path:
    """NIfTI label map whose sform and qform are ``affine`` (RAS), so it overlays the image it came from: MONAI's
    ``NibabelWriter`` without resampling (its output has our former hand-written writer's exact bytes of data and
    geometry, checked when it replaced it)."""
    from monai.data import NibabelWriter

    label = np.rint(_spatial(label, 3))
    affine = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
    writer = NibabelWriter(output_dtype=_label_dtype(label))
    writer.set_data_array(label[None], channel_dim=0)
    writer.set_metadata({"affine": affine, "original_affine": affine}, resample=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write(str(path), verbose=False)
    return path


def write_png_mask(label, path: str | Path) -> Path:
    """PNG of a 2D ``(x, y)`` label with MONAI's ``PILWriter`` (which writes MONAI's ``(x, y)`` as rows = y): 0/255
    when it has one class (what viewers and Kvasir masks use), values otherwise."""
    from monai.data import PILWriter

    label = np.rint(_spatial(label, 2))
    if label.ndim != 2:
        raise PipelineError(f"{path}: a PNG mask needs a 2D label, got shape {label.shape}")
    binary = label.max(initial=0) <= 1
    writer = PILWriter(output_dtype=np.uint8, scale=255 if binary else None)
    writer.set_data_array((label > 0 if binary else label).astype(np.float32)[None], channel_dim=0)
    writer.set_metadata({}, resample=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write(str(path), verbose=False)
    return path


def overlay_rgb(image, label, alpha: float = 0.45, boxes=None) -> np.ndarray:
    """The image with each label value tinted and outlined, as an ``(y, x, 3)`` uint8 array, and the ``boxes``
    ``(K, 4)`` ``(x0, y0, x1, y1)`` that prompted it drawn in yellow.

    ``image`` is ``(C, x, y)`` or ``(x, y)``. Class 1 is green because endoscopy and most MR/CT renderings are red
    or grey, where a red tint disappears; the solid outline keeps small structures visible.
    """
    from PIL import Image, ImageDraw
    from scipy import ndimage

    image = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    low, high = float(rgb.min()), float(rgb.max())
    rgb = (rgb - low) / (high - low) * 255 if high > low else np.zeros_like(rgb)
    rgb = np.transpose(rgb, (2, 1, 0))  # (y, x, 3) for PIL
    label = np.rint(_spatial(label, 2)).astype(np.int64).T
    colours = OVERLAY_COLOURS[np.clip(label, 0, len(OVERLAY_COLOURS) - 1)].astype(np.float32)
    tinted = np.where(label[..., None] > 0, (1 - alpha) * rgb + alpha * colours, rgb)
    outline = (label > 0) & ~ndimage.binary_erosion(label > 0, iterations=2)
    tinted[outline] = colours[outline]
    picture = Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8))
    if boxes is not None:
        draw = ImageDraw.Draw(picture)
        width = max(1, round(max(picture.size) / 300))
        for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            draw.rectangle([float(v) for v in box], outline=BOX_COLOUR, width=width)
    return np.asarray(picture)


def write_overlay_png(image, label, path: str | Path, alpha: float = 0.45, boxes=None) -> Path:
    """:func:`overlay_rgb` as a PNG file, for a quick visual check of a prediction."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_rgb(image, label, alpha, boxes)).save(path)
    return path


def write_prediction(
    label, reference, output_dir: str | Path, name: str, labels: Mapping[int, str] | None = None,
    boxes=None, objects=None, segment_codes: Mapping | None = None,
) -> list[Path]:
    """Write ``label`` in the formats that suit the image it was predicted on; returns the files written.

    Args:
        label: prediction on the reference image's grid, ``(x, y[, z])`` or ``(1, x, y[, z])``, integer values.
        reference: the input image as loaded by ``LoadClinicalImaged`` (a MetaTensor, channel first); its metadata
            says where it came from (``filename_or_obj``, ``series_instance_uid`` for DICOM) and its affine.
        output_dir: folder for the files (created).
        name: file stem, e.g. the case name.
        labels: ``{value: name}`` for DICOM-SEG segment labels.
        boxes: the 2D box prompts ``(K, 4)`` in the reference's pixel coordinates, drawn on the overlay.
        objects: with K > 1 boxes, each box's own mask ``(K, x, y)``, written as ``<name>_object<k>_mask.png``.
        segment_codes: DICOM-SEG property codes per segment name (:func:`pipeline.data.dicom_seg.segment_property`).
    """
    from pipeline.data.dicom_seg import write_dicom_seg
    from pipeline.data.readers import find_dicom_series

    output_dir = Path(output_dir)
    meta = getattr(reference, "meta", {})
    spatial_shape = tuple(reference.shape[1:])
    label = _spatial(label, len(spatial_shape))
    if tuple(label.shape) != spatial_shape:
        raise PipelineError(f"{name}: prediction shape {tuple(label.shape)} differs from image shape {spatial_shape}")
    if len(spatial_shape) == 2:
        per_object = [] if objects is None else [
            write_png_mask(mask, output_dir / f"{name}_object{index}_mask.png")
            for index, mask in enumerate(np.asarray(objects.cpu() if hasattr(objects, "cpu") else objects), start=1)
        ]
        return [
            write_png_mask(label, output_dir / f"{name}_mask.png"),
            write_overlay_png(reference, label, output_dir / f"{name}_overlay.png", boxes=boxes),
            *per_object,
        ]
    written = [write_nifti(label, reference.affine, output_dir / f"{name}.nii.gz")]
    if meta.get("series_instance_uid"):
        original = np.asarray(meta.get("original_affine", reference.affine), dtype=np.float64)
        if not np.allclose(np.asarray(reference.affine, dtype=np.float64), original, atol=1e-4):
            raise PipelineError(
                f"{name}: prediction is not on the DICOM series' own grid (affine changed by a spatial transform); "
                "invert the transforms before writing a DICOM-SEG"
            )
        # read already
        series = find_dicom_series(meta["filename_or_obj"], meta["series_instance_uid"], allow_gaps=True)
        written.append(write_dicom_seg(np.rint(label).astype(np.int64), series, output_dir / f"{name}_seg.dcm", labels,
                                       segment_codes=segment_codes))
    return written
