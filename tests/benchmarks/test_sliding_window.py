"""Smoke test of the sliding-window benchmark at a tiny size: a small Swin-UNETR (feature size 12) on a volume
that takes two overlapping windows along D (three at overlap 0.5), so a different blending mode or overlap in the
direct call would change the output."""

from __future__ import annotations

import pytest

from benchmarks.sliding_window import main


@pytest.mark.slow
def test_benchmark_runs_and_the_bundle_inferer_matches_the_direct_call(capsys):
    result = main(["--size", "112", "64", "64", "--feature-size", "12", "--repeats", "1", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert "volume 112x64x64, device cpu" in printed and "ratio bundle/direct speed" in printed
    assert result["bundle_s"] > 0 and result["direct_s"] > 0
    assert result["ratio"] == pytest.approx(result["direct_s"] / result["bundle_s"])
    assert result["max_abs_diff"] < 1e-5  # overlapping windows: mode and overlap must agree
