"""The up-front argument checks: the library error and the bundle's one-line exit."""

from __future__ import annotations

import pytest

from pipeline.engine.arguments import check_arguments, check_bundle_arguments
from pipeline.errors import PipelineError


def test_check_arguments_names_the_bad_argument(synthetic_folder):
    with pytest.raises(PipelineError, match="dataset_dir is required"):
        check_arguments(None)
    with pytest.raises(PipelineError, match="unknown method 'nope'"):
        check_arguments(str(synthetic_folder), method="nope")
    with pytest.raises(SystemExit, match="^error: unknown method 'nope'"):
        check_bundle_arguments(dataset_dir=str(synthetic_folder), method="nope")


def test_shipped_weights_are_a_checkpoint_only_for_the_backbone_that_ships_them(tmp_path):
    from pipeline.engine.arguments import check_checkpoint

    check_checkpoint("shipped", "HINT", backbone="litemedsam")
    with pytest.raises(PipelineError, match=r"checkpoint shipped does not exist .*HINT\); only litemedsam ships"):
        check_checkpoint("shipped", "HINT", backbone="medsam_vit_b")
    with pytest.raises(PipelineError, match=r"this bundle needs the backbone's pretrained weights: pass HINT"):
        check_checkpoint(None, "HINT", backbone="litemedsam")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    check_checkpoint(str(weights), "HINT", backbone="medsam_vit_b")
