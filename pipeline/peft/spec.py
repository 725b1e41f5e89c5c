"""What a backbone tells the injector: where its blocks are, how their tokens are laid out, what its task head is.

One adapter class serves every backbone because the only layout-specific step of an adapter is turning its
bottleneck tokens into a spatial map for the convolutions and back. Everything else (the projections, the
activation) works on the last (channel) dimension, which every supported layout shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class ChannelsLast:
    """A block whose tokens are a channels-last map: SAM ViT ``(B, H, W, C)``, Swin ``(B, [D,] H, W, C)``."""

    spatial_dims: int

    def to_map(self, tokens: torch.Tensor) -> tuple[torch.Tensor, None]:
        if tokens.dim() != self.spatial_dims + 2:
            raise PipelineError(
                f"expected a channels-last {self.spatial_dims}D map of {self.spatial_dims + 2} dims, "
                f"got shape {tuple(tokens.shape)}"
            )
        return torch.movedim(tokens, -1, 1), None

    def from_map(self, spatial: torch.Tensor, context: None) -> torch.Tensor:
        return torch.movedim(spatial, 1, -1)


@dataclass(frozen=True)
class TokenGrid:
    """A block whose tokens are a sequence ``(B, N, C)``: ``prefix`` leading tokens (a ViT's CLS) then a 2D grid.

    ``grid`` is the grid's ``(H, W)``; when ``None`` the grid is taken to be square. Prefix tokens are passed
    around the convolutions unchanged: they have no position on the image.
    """

    grid: tuple[int, int] | None = None
    prefix: int = 0

    def _grid_for(self, n_grid_tokens: int) -> tuple[int, int]:
        if self.grid is not None:
            height, width = self.grid
        else:
            height = width = math.isqrt(n_grid_tokens)
        if height * width != n_grid_tokens:
            raise PipelineError(
                f"{n_grid_tokens} grid tokens do not form the block's grid {self.grid or (height, width)}"
            )
        return height, width

    def to_map(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prefix, grid_tokens = tokens[:, : self.prefix], tokens[:, self.prefix :]
        height, width = self._grid_for(grid_tokens.shape[1])
        spatial = grid_tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)
        return spatial, prefix

    def from_map(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return torch.cat([context, spatial.flatten(2).transpose(1, 2)], dim=1)

    @property
    def spatial_dims(self) -> int:
        return 2


@dataclass(frozen=True)
class TokenSequence:
    """Tokens with no position on an image: a text encoder's sequence ``(B, N, C)`` or a pooled embedding ``(B, C)``.

    Token-wise methods work on it unchanged (they act on the channel dimension only); there is no map to convolve,
    so spatial methods (DKA, LKA, Convpass) refuse its blocks before anything is inserted.
    """

    spatial_dims: int = 0


Layout = ChannelsLast | TokenGrid | TokenSequence


@dataclass(frozen=True)
class BlockSite:
    """One block adapters may be inserted at.

    ``path`` is the dotted module name inside the model, ``channels`` the block's token width C, and
    ``attention`` the dotted names (relative to the block) of the attention's Linear layers that LoRA targets.
    ``stage`` groups the blocks of hierarchical backbones (TinyViT, Swin) so "middle" can mean the middle stages.
    ``group`` names the encoder the block belongs to in a multi-encoder model (CLIPSeg: ``"vision"``, ``"text"``,
    ``"conditional"``): named selections ("middle"...) cover the spec's first group only, and the telescopic
    adapter sizes each group on its own. ``branches`` are the block's residual branches (dotted names relative to
    the block, e.g. attention and MLP), for ``placement="branch"``, which adapts each branch's output before it is
    added to the residual stream.
    """

    path: str
    channels: int
    layout: Layout
    attention: tuple[str, ...] = ("attn.qkv", "attn.proj")
    stage: int = 0
    group: str = "image"
    branches: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeftSpec:
    """A backbone's adapter sites in forward order, its task head, and a name that identifies its architecture.

    ``head`` lists module paths that form the task head (e.g. SAM's mask decoder): they train under every method
    (the few-shot setting of the DKA paper), and they alone under ``linear_probe``.

    ``recipes`` holds a method's published configuration on this backbone (method name → ``apply_peft`` arguments:
    ``layers``, ``placement`` and method options); ``apply_peft`` starts from it for whatever the caller leaves out,
    so ``apply_peft(clipseg, "telescopic")`` is the Telescopic-adapter paper's setup.
    """

    name: str
    blocks: tuple[BlockSite, ...]
    head: tuple[str, ...] = field(default_factory=tuple)
    recipes: dict[str, dict] = field(default_factory=dict, hash=False)


def spec_of(model: torch.nn.Module) -> PeftSpec:
    """The backbone's :class:`PeftSpec`, from its ``peft_spec()`` method."""
    provider = getattr(model, "peft_spec", None)
    if provider is None:
        raise PipelineError(
            f"{type(model).__name__} does not describe its blocks: give it a peft_spec() method "
            "(the wrappers in pipeline.models do) or pass spec= to apply_peft"
        )
    return provider()
