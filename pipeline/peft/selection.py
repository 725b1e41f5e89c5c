"""Which of a backbone's blocks receive adapters.

"middle" follows the DKA paper: adapters in the middle third of the encoder. Hierarchical backbones (TinyViT,
Swin) are split by stage rather than by block, so "middle" means the middle stages (Swin's layers2-3), not a
third of the block list that would cut a stage in two. In a multi-encoder model (CLIPSeg) the names cover the first
encoder's blocks (the image encoder); blocks of the others (text, conditional) are chosen by index or by the
backbone's recipe for a method (:attr:`pipeline.peft.spec.PeftSpec.recipes`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.errors import PipelineError
from pipeline.peft.spec import PeftSpec

NAMED = ("bottom", "middle", "top", "all")


def _thirds(count: int) -> dict[str, range]:
    first, second = round(count / 3), round(2 * count / 3)
    return {
        "bottom": range(0, first),
        "middle": range(first, second),
        "top": range(second, count),
        "all": range(0, count),
    }


def select_blocks(spec: PeftSpec, layers: str | int | Sequence[int]) -> list[int]:
    """Indices into ``spec.blocks`` for ``layers``: a name in :data:`NAMED` or explicit block indices."""
    count = len(spec.blocks)
    if isinstance(layers, str):
        if layers not in NAMED:
            raise PipelineError(f"layers must be one of {', '.join(NAMED)} or block indices, got {layers!r}")
        primary = [i for i, site in enumerate(spec.blocks) if site.group == spec.blocks[0].group]
        stages = sorted({spec.blocks[i].stage for i in primary})
        if len(stages) >= 3:
            chosen = {stages[i] for i in _thirds(len(stages))[layers]}
            return [i for i in primary if spec.blocks[i].stage in chosen]
        return [primary[i] for i in _thirds(len(primary))[layers]]
    indices = [layers] if isinstance(layers, int) else list(layers)
    if not indices:
        raise PipelineError("layers is an empty list: name at least one block")
    bad = [i for i in indices if not isinstance(i, int) or not -count <= i < count]
    if bad:
        raise PipelineError(f"layer indices {bad} are out of range: {spec.name} has {count} blocks (0..{count - 1})")
    return sorted({i % count for i in indices})
