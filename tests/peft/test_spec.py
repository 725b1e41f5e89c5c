"""Token layouts and block selection."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.peft.selection import select_blocks
from pipeline.peft.spec import BlockSite, ChannelsLast, PeftSpec, TokenGrid


@pytest.mark.parametrize(
    "layout, shape",
    [(ChannelsLast(2), (2, 5, 7, 8)), (ChannelsLast(3), (2, 3, 5, 7, 8)), (TokenGrid((5, 7)), (2, 35, 8)),
     (TokenGrid(prefix=1), (2, 1 + 36, 8))],
)
def test_layout_round_trip(layout, shape):
    tokens = torch.randn(shape)
    spatial, context = layout.to_map(tokens)
    assert spatial.shape[:2] == (2, 8) and spatial.dim() == layout.spatial_dims + 2
    assert torch.equal(layout.from_map(spatial, context), tokens)


def test_token_grid_puts_row_major_tokens_on_the_map():
    tokens = torch.arange(6.0).reshape(1, 6, 1)
    spatial, _ = TokenGrid((2, 3)).to_map(tokens)
    assert spatial[0, 0].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_token_grid_rejects_a_wrong_token_count():
    with pytest.raises(PipelineError, match="do not form the block's grid"):
        TokenGrid((4, 4)).to_map(torch.randn(1, 15, 8))


def spec(stages):
    blocks = tuple(BlockSite(f"b{i}", 8, ChannelsLast(2), stage=s) for i, s in enumerate(stages))
    return PeftSpec("toy", blocks)


def test_flat_backbone_split_in_thirds():
    flat = spec([0] * 12)
    assert select_blocks(flat, "bottom") == [0, 1, 2, 3]
    assert select_blocks(flat, "middle") == [4, 5, 6, 7]
    assert select_blocks(flat, "top") == [8, 9, 10, 11]
    assert select_blocks(flat, "all") == list(range(12))


def test_hierarchical_backbone_split_by_stage():
    swin = spec([0, 0, 1, 1, 2, 2, 3, 3])
    assert select_blocks(swin, "middle") == [2, 3, 4, 5]
    tinyvit = spec([1, 1, 2, 2, 2, 2, 2, 2, 3, 3])
    assert select_blocks(tinyvit, "middle") == [2, 3, 4, 5, 6, 7]


def test_explicit_indices_sorted_unique_and_negative():
    assert select_blocks(spec([0] * 6), [5, 1, -1]) == [1, 5]
    with pytest.raises(PipelineError, match=r"layer indices \[6\] are out of range: toy has 6 blocks \(0\.\.5\)$"):
        select_blocks(spec([0] * 6), [0, 6])
    assert select_blocks(spec([0] * 6), -2) == [4], "a single index is a list of one"


def test_bad_layer_names_and_empty_lists_are_refused():
    with pytest.raises(PipelineError, match="layers must be one of bottom, middle, top, all or block indices, got 'mi"):
        select_blocks(spec([0] * 6), "mid")
    with pytest.raises(PipelineError, match="layers is an empty list"):
        select_blocks(spec([0] * 6), [])
    with pytest.raises(PipelineError, match=r"layer indices \['1'\] are out of range"):
        select_blocks(spec([0] * 6), ["1"])
