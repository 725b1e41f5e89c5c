"""Effective receptive field (ERF): how far from a feature's position the input still moves that feature.

The research claim this project serves is that ordinary adapters collapse with very little data because the
adapted encoder's ERF shrinks, and that large kernels keep it wide. Following Luo et al. (2016) and RepLKNet
(Ding et al., 2022): back-propagate from the central position of the encoder's output (summed over channels) to the
input, take the gradient magnitude summed over input channels, and average it over images. The *high-contribution
area ratio* at ``t`` is the area of the smallest centred box that holds a fraction ``t`` of that contribution,
divided by the input's area: larger means a wider ERF. Works for 2D and 3D encoders alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from pipeline.errors import PipelineError

Encoder = Callable[[torch.Tensor], torch.Tensor]


def contribution_map(encoder: Encoder, images: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean over ``images`` (each ``(C, *spatial)``) of ``|d centre output / d input|`` summed over channels."""
    total, count = None, 0
    for image in images:
        x = image[None].detach().float().requires_grad_(True)
        features = encoder(x)
        centre = tuple(size // 2 for size in features.shape[2:])
        features[(0, slice(None), *centre)].sum().backward()
        grad = x.grad[0].abs().sum(dim=0)
        total = grad if total is None else total + grad
        count += 1
    if count == 0:
        raise PipelineError("no images given for the effective receptive field")
    return total / count


def high_contribution_ratio(contribution: torch.Tensor, fraction: float) -> float:
    """Area of the smallest centred box holding ``fraction`` of ``contribution``, over the whole area.

    Boxes grow by one voxel per side on every axis at a time (scaled to each axis's length), so the ratio is
    comparable between maps of different shapes.
    """
    if not 0.0 < fraction <= 1.0:
        raise PipelineError(f"fraction must be in (0, 1], got {fraction}")
    shape = contribution.shape
    centre = [size // 2 for size in shape]
    target = fraction * contribution.sum().item()
    steps = max(shape) // 2 + 1
    for step in range(steps + 1):
        slices = []
        for size, mid in zip(shape, centre, strict=False):
            half = round(step * size / max(shape))
            slices.append(slice(max(mid - half, 0), min(mid + half + 1, size)))
        box = contribution[tuple(slices)]
        if box.sum().item() >= target - 1e-12 * abs(target):
            return box.numel() / contribution.numel()
    return 1.0


def erf_ratios(contribution: torch.Tensor, fractions: Sequence[float] = (0.2, 0.3, 0.5, 0.99)) -> dict[str, float]:
    """``{"t=0.2": ratio, ...}``: the high-contribution area ratios RepLKNet reports."""
    return {f"t={fraction:g}": high_contribution_ratio(contribution, fraction) for fraction in fractions}
