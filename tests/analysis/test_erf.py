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
    from pipeline.data.demo_data import make_synthetic_kvasir

    make_synthetic_kvasir(tmp_path / "synthetic", n=1)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "erf", str(tmp_path / "synthetic" / "images"), "--count", "1",
         "-o", str(tmp_path / "erf.json"), "--png", str(tmp_path / "erf.png")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ratios = json.loads((tmp_path / "erf.json").read_text())
    assert 0 < ratios["t=0.2"] < ratios["t=0.5"] <= ratios["t=0.99"] <= 1
    assert ratios["input_shape"] == [256, 256] and (tmp_path / "erf.png").stat().st_size > 0
