"""Effective receptive field: exact on convolutions whose receptive field is known, and the command end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from pipeline.analysis.erf import contribution_map, erf_ratios, high_contribution_ratio
from pipeline.errors import PipelineError
from pipeline.peft.large_kernel import DepthwiseConv


def test_a_3x3_convolution_reaches_exactly_its_kernel():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    contribution = contribution_map(conv, [torch.randn(1, 17, 17)])
    assert torch.nonzero(contribution).tolist() == [[r, c] for r in (7, 8, 9) for c in (7, 8, 9)]
    assert high_contribution_ratio(contribution, 0.99) == pytest.approx(9 / 17**2)


def test_stacking_widens_and_a_large_kernel_is_wider_than_a_small_one():
    torch.manual_seed(0)
    small, large = DepthwiseConv(1, 5), DepthwiseConv(1, 51)
    images = [torch.randn(1, 64, 64) for _ in range(2)]
    narrow = erf_ratios(contribution_map(small, images))
    wide = erf_ratios(contribution_map(large, images))
    stacked = erf_ratios(contribution_map(nn.Sequential(small, small), images))
    assert wide["t=0.99"] > stacked["t=0.99"] > narrow["t=0.99"]
    assert narrow["t=0.99"] == pytest.approx(25 / 64**2)


def test_3d_maps_work_too():
    conv = nn.Conv3d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    contribution = contribution_map(conv, [torch.randn(1, 9, 9, 9)])
    assert high_contribution_ratio(contribution, 1.0) == pytest.approx(27 / 9**3)


def test_bad_fraction_and_no_images_are_clear_errors():
    with pytest.raises(PipelineError, match=r"fraction must be in \(0, 1\]"):
        high_contribution_ratio(torch.ones(4, 4), 0.0)
    with pytest.raises(PipelineError, match="no images"):
        contribution_map(nn.Identity(), [])


@pytest.mark.slow
def test_command_on_litemedsam_with_synthetic_images(tmp_path):
    """Frozen and DKA-adapted side by side, in one JSON and one figure."""
    from pipeline.data.demo_data import make_synthetic_kvasir
    from pipeline.models import build_backbone
    from pipeline.peft import apply_peft, save_adapter

    make_synthetic_kvasir(tmp_path / "synthetic", n=1)
    torch.manual_seed(0)
    adapted = build_backbone("litemedsam", prompt="none", num_classes=3)  # another head: only the encoder counts
    apply_peft(adapted, "dka", layers="middle", init="paper")
    save_adapter(adapted, tmp_path / "dka.pt")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "erf", str(tmp_path / "synthetic" / "images"), "--count", "1",
         "--adapter", f"large kernels={tmp_path / 'dka.pt'}", "-o", str(tmp_path / "erf.json"),
         "--png", str(tmp_path / "erf.png")],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads((tmp_path / "erf.json").read_text())
    frozen, dka = measured["encoders"]
    assert (frozen["label"], frozen["adapter"], dka["label"]) == ("frozen", None, "large kernels")
    for ratios in (frozen, dka):
        assert 0 < ratios["t=0.2"] < ratios["t=0.5"] <= ratios["t=0.99"] <= 1
    assert measured["input_shape"] == [256, 256]
    assert (tmp_path / "erf.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_the_measured_encoder_is_the_adapted_one_whatever_head_it_was_trained_with_and_however_labelled(tmp_path):
    from pipeline.analysis.commands.erf import measured_models
    from pipeline.models import build_backbone
    from pipeline.peft import apply_peft, save_adapter

    torch.manual_seed(0)
    adapted = build_backbone("litemedsam", prompt="none", num_classes=3)
    apply_peft(adapted, "dka", layers="middle", init="paper")
    with torch.no_grad():  # trained-looking weights: far from the initial ones
        for name, parameter in adapted.named_parameters():
            if parameter.requires_grad and name.startswith("image_encoder."):
                parameter.normal_(0, 0.2)
    save_adapter(adapted, tmp_path / "dka.pt")
    (frozen_label, _, frozen), *adapted_models = measured_models(
        "litemedsam", {}, [str(tmp_path / "dka.pt"), f"large kernels={tmp_path / 'dka.pt'}"])
    assert (frozen_label, *(label for label, _, _ in adapted_models)) == ("frozen", "dka", "large kernels")
    image = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        expected = adapted.eval().image_encoder(image)
        for _, _, measured in adapted_models:  # labelled or not, the adapted encoder is what gets measured
            assert torch.allclose(measured.image_encoder(image), expected, atol=1e-5)
        assert not torch.allclose(frozen.image_encoder(image), expected, atol=1e-2)


@pytest.mark.slow
def test_an_adapter_for_another_backbone_is_one_line(tmp_path):
    from pipeline.data.demo_data import make_synthetic_kvasir

    make_synthetic_kvasir(tmp_path / "synthetic", n=1)
    torch.save({"format": "pipeline-adapter/1", "backbone": "sam_vit_b", "method": "dka", "layers": "middle",
                "options": {}, "state_dict": {}}, tmp_path / "other.pt")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "erf", str(tmp_path / "synthetic" / "images"), "--adapter",
         str(tmp_path / "other.pt"), "-o", str(tmp_path / "erf.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'other.pt'} was made for backbone 'sam_vit_b', not 'litemedsam'"]
