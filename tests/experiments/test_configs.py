"""Every committed sweep config loads, names methods with options the methods accept, and sets only bundle keys
that exist: a typo in a study config would otherwise surface hours into a sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.experiments.sweep import Sweep, variant
from pipeline.peft.methods import build_method

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_sweep_config_is_runnable(path):
    sweep = Sweep.load(path)
    keys = set(json.loads((REPO / sweep.bundle / "configs" / "train.json").read_text()))
    assert set(sweep.overrides) <= keys, f"unknown bundle keys {sorted(set(sweep.overrides) - keys)}"
    for label in sweep.methods:
        chosen = variant(sweep, label)
        build_method(chosen.method, **chosen.options)
        assert set(chosen.settings) <= keys, f"{label}: unknown bundle keys {sorted(set(chosen.settings) - keys)}"


def test_a_config_with_a_misspelt_option_fails_here(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("bundle: bundles/litemedsam_dka_polyp\ndataset_dir: d\noutput: o\nk_shots: [5]\n"
                    "methods: {dka_k7: {method: dka, kernel_larg: 7}}\n")
    with pytest.raises(PipelineError, match="kernel_larg"):
        test_sweep_config_is_runnable(path)
