"""What a PNG/JPG/TIFF becomes when read: PIL converters for MONAI's ``PILReader`` that say what they do.

Kept free of MONAI so that the datalist command, which reads every mask, does not pay for importing it.
"""

from __future__ import annotations

from pipeline.errors import PipelineError

__all__ = ["to_colour", "to_grayscale"]


def _single_frame(image) -> None:
    """PIL reads the first frame of a multi-page TIFF/GIF and says nothing of the others; refuse such files."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise PipelineError(f"{image.filename}: {frames} frames (multi-page TIFF/GIF); one image per file is read")


def to_colour(image):
    """PIL converter for images: alpha dropped (RGBA -> RGB, LA -> L), palette expanded; 16-bit kept as it is."""
    _single_frame(image)
    if image.mode in ("RGBA", "P", "PA", "CMYK", "YCbCr"):
        return image.convert("RGB")
    return image.convert("L") if image.mode == "LA" else image


def to_grayscale(image):
    """PIL converter for masks: colour (Kvasir's RGB JPEG masks) to one grey channel, as drawn; palette masks keep
    their indices and 16-bit masks their values (an 8-bit conversion would saturate them)."""
    _single_frame(image)
    return image.convert("L") if image.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr") else image
