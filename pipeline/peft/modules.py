"""The layers adapter methods are made of: a block wrapper and the two bottleneck shapes every method uses.

Bottlenecks return a *delta* in the block's own token layout; :class:`AdaptedBlock` decides where it is added
(alongside the block or after it), so each method only says what its bottleneck contains.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.peft.spec import Layout

PLACEMENTS = ("parallel", "sequential", "branch")
ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class AdaptedBlock(nn.Module):
    """A frozen block plus an adapter: ``parallel`` adds ``adapter(x)``, ``sequential`` adds ``adapter(block(x))``.

    Extra positional/keyword arguments reach the block untouched (MONAI's Swin blocks take an attention mask), and
    attributes the wrapped block had (``input_resolution``...) stay readable, so the backbone's own loop over its
    blocks runs unchanged.
    """

    def __init__(self, base: nn.Module, adapter: nn.Module, placement: str):
        super().__init__()
        self.base = base
        self.adapter = adapter
        self.placement = placement

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base(x, *args, **kwargs)
        return out + self.adapter(x if self.placement == "parallel" else out)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base":
                raise
            return getattr(self.base, name)


class AdaptedBranch(AdaptedBlock):
    """A frozen residual branch (a block's attention or MLP) whose output passes through an adapter before the block
    adds it to the residual stream: ``out + adapter(out)``, the telescopic-adapter paper's placement.

    A branch returning a tuple (Hugging Face attention: output, weights) has its first element adapted.
    """

    def __init__(self, base: nn.Module, adapter: nn.Module):
        super().__init__(base, adapter, "branch")

    def forward(self, *args, **kwargs):
        out = self.base(*args, **kwargs)
        if isinstance(out, tuple):
            return (out[0] + self.adapter(out[0]), *out[1:])
        return out + self.adapter(out)


class SpatialBottleneck(nn.Module):
    """Linear(C→r) → act → spatial map → sum of convolutions → tokens → act → dropout → Linear(r→C).

    The shape of DKA (a large and a small depthwise kernel), LKA (one large kernel) and Convpass (one 3×3 conv).
    Summing parallel convolutions lets a large kernel widen the effective receptive field while a small one keeps
    local detail, the DKA paper's remedy for adapters collapsing with very little data.
    """

    def __init__(self, channels: int, r: int, convs: Sequence[nn.Module], layout: Layout, dropout: float,
                 activation: str = "gelu"):
        super().__init__()
        self.layout = layout
        self.down = nn.Linear(channels, r)
        self.convs = nn.ModuleList(convs)
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(r, channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.down(tokens))
        spatial, context = self.layout.to_map(hidden)
        spatial = sum(conv(spatial) for conv in self.convs)
        hidden = self.layout.from_map(spatial, context)
        return self.up(self.drop(self.act(hidden)))


class TokenBottleneck(nn.Module):
    """[LayerNorm] → Linear(C→r) → act → dropout → Linear(r→C), times a fixed or learnable scale.

    Token-wise only (no spatial mixing): the vanilla Houlsby adapter, AdaptFormer (fixed scale 0.1) and the
    telescopic adapter (LayerNorm, SiLU, learnable α).
    """

    def __init__(self, channels: int, r: int, activation: str = "gelu", dropout: float = 0.0, norm: bool = False,
                 scale: float = 1.0, learnable_scale: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(channels) if norm else nn.Identity()
        self.down = nn.Linear(channels, r)
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(r, channels)
        if learnable_scale:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        else:
            self.register_buffer("scale", torch.tensor(float(scale)), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.up(self.drop(self.act(self.down(self.norm(tokens))))) * self.scale


def zero_up_projection(bottleneck: nn.Module) -> None:
    """Zero the last projection so the adapted model starts exactly equal to the frozen one."""
    nn.init.zeros_(bottleneck.up.weight)
    nn.init.zeros_(bottleneck.up.bias)
