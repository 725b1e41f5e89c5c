"""What a binary mask file may hold, so a mask that is not binary stops the run instead of being thresholded away.

Binary masks are stored as 0/1 or as 0/255; both are read on the 0..255 scale and split at ``MASK_THRESHOLD``.
Lossless files (PNG, TIFF, NIfTI, ...) must hold exactly the two levels: a third value is a third class (a
{0, 100, 200} PNG would otherwise lose class 100 to background without a word). JPEG masks (Kvasir-SEG) carry
compression noise: every Kvasir-SEG mask holds only values 0..8 and 246..255, so values within ``JPEG_NOISE`` of a
level count as that level, and only ringing along edges (``JPEG_EDGE_SHARE`` of the pixels) may lie further out.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.formats import LOSSY_SUFFIXES, has_suffix
from pipeline.errors import PipelineError

__all__ = ["JPEG_EDGE_SHARE", "JPEG_NOISE", "MASK_THRESHOLD", "binary_foreground"]

MASK_THRESHOLD = 127
"""Foreground is above this on the 0..255 scale (0/1 masks are scaled by 255 first)."""

JPEG_NOISE = 32
"""In a JPEG mask, values within this distance of 0 or 255 are compression noise of that level."""

JPEG_EDGE_SHARE = 0.01
"""Share of a JPEG mask's pixels that may lie further from both levels (ringing along edges) before it is refused."""


def _listed(values: np.ndarray) -> str:
    shown = [int(v) if float(v).is_integer() else float(v) for v in values[:10]]
    return str(shown) + (f" ... ({len(values)} distinct)" if len(values) > 10 else "")


def binary_foreground(values, name: str, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Foreground (bool array) of the two-level mask ``values`` read from the file ``name``.

    Raises PipelineError naming the file and the values seen when the mask is not binary (see the module doc);
    the file's suffix says whether JPEG noise is expected.
    """
    values = np.asarray(values)
    scaled = values * 255.0 if values.size and values.max() <= 1 else values  # one pass each, no copy for 0/255
    if has_suffix(name, LOSSY_SUFFIXES):
        far = np.count_nonzero((scaled > JPEG_NOISE) & (scaled < 255 - JPEG_NOISE)) / max(values.size, 1)
        if far > JPEG_EDGE_SHARE:
            raise PipelineError(
                f"{name}: {far:.1%} of the pixels lie between the mask levels 0 and 255 (values seen: "
                f"{_listed(np.unique(values))}), more than JPEG noise; declare the classes instead of a binary mask"
            )
    elif not np.all((scaled == 0) | (scaled == 255)):
        raise PipelineError(
            f"{name}: mask values {_listed(np.unique(values))} are not binary (0/1 or 0/255); declare the classes "
            "instead of a binary mask"
        )
    return scaled > threshold
