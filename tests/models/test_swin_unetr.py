"""MONAI Swin-UNETR (2D/3D) as a backbone: any input size, Swin-block adapter sites, self-supervised weights."""

from __future__ import annotations

import re

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models import build_backbone
from pipeline.peft import apply_peft
from pipeline.peft.spec import ChannelsLast
from tests.models.model_cases import hippocampus_case


@pytest.mark.parametrize("spatial_dims, shape", [(2, (45, 70)), (3, (20, 40, 27))])
def test_logits_at_input_size_and_sites(spatial_dims, shape, check_sites):
    model = build_backbone("swin_unetr", spatial_dims=spatial_dims, num_classes=3, feature_size=12)
    image = torch.rand(1, 1, *shape)  # synthetic
    with torch.no_grad():
        logits = model(image)
    assert logits.shape == (1, 3, *shape)
    assert check_sites(model, image) == 8
    spec = model.peft_spec()
    assert spec.name == f"swin_unetr_{spatial_dims}d"
    assert [site.channels for site in spec.blocks] == [12, 12, 24, 24, 48, 48, 96, 96]
    assert [site.stage for site in spec.blocks] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(site.layout == ChannelsLast(spatial_dims) for site in spec.blocks)
    assert "swinViT" not in spec.head and {"encoder1", "decoder1", "out"} <= set(spec.head)
    with pytest.raises(PipelineError, match="takes no box prompts"):
        model(image, torch.zeros(1, 4))


def _write_ssl_checkpoint(model, path):
    """The encoder's weights in the layout of MONAI's ``model_swinvit.pt`` (plus a pretext head to be ignored)."""
    state = {
        "module." + re.sub(r"\.mlp\.linear([12])\.", r".mlp.fc\1.", key): value
        for key, value in model.swinViT.state_dict().items()
    }
    state["module.rotation_head.weight"] = torch.zeros(4, 8)
    torch.save({"state_dict": state, "epoch": 100}, path)


def test_self_supervised_layout_loads_like_monai(tmp_path):
    source = build_backbone("swin_unetr", feature_size=12)
    path = tmp_path / "model_swinvit.pt"
    _write_ssl_checkpoint(source, path)
    ours = build_backbone("swin_unetr", feature_size=12, checkpoint=path)
    monai = build_backbone("swin_unetr", feature_size=12)
    monai.load_from(torch.load(path, weights_only=True))  # MONAI's own loader for this file layout
    for key, value in source.swinViT.state_dict().items():
        assert torch.equal(ours.swinViT.state_dict()[key], value), key
        assert torch.equal(monai.swinViT.state_dict()[key], value), key


def test_wrong_encoder_is_one_clear_error(tmp_path):
    path = tmp_path / "model_swinvit.pt"
    _write_ssl_checkpoint(build_backbone("swin_unetr", feature_size=24), path)
    with pytest.raises(PipelineError, match=r"model_swinvit\.pt does not fit the Swin encoder of swin_unetr_3d: "
                                            r"shape mismatches \(file vs model\): patch_embed\.proj\.weight"):
        build_backbone("swin_unetr", feature_size=12, checkpoint=path)
    with pytest.raises(PipelineError, match=r"does not fit the Swin encoder of swin_unetr_2d"):
        build_backbone("swin_unetr", spatial_dims=2, feature_size=24, checkpoint=path)


@pytest.mark.slow
@pytest.mark.real_data
def test_real_hippocampus_volume_with_dka_in_middle_stages(shared_data):
    image, _ = hippocampus_case(shared_data)
    model = build_backbone("swin_unetr", spatial_dims=3, num_classes=3, feature_size=12)
    report = apply_peft(model, "dka", layers="middle")
    stages = {model.peft_spec().blocks[i].stage for i in report.state.layers}
    assert stages == {1, 2}, "middle = Swin stages layers2-3"
    with torch.no_grad():
        logits = model(image)
    assert image.shape[2:] != tuple(s + (-s) % 32 for s in image.shape[2:]), "volume is not a multiple of 32"
    assert logits.shape == (1, 3, *image.shape[2:]) and torch.isfinite(logits).all()
