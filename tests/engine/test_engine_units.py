"""Engine pieces on tiny synthetic inputs: metrics, split resolution, argument checks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pipeline.engine.data import held_out, load_split
from pipeline.engine.metrics import score_case, summarise
from pipeline.engine.validate import check_arguments, check_bundle_arguments
from pipeline.errors import PipelineError


def test_score_case_matches_hand_computed_dice_and_spacing_scales_hd95():
    pred = torch.zeros(1, 20, 20)
    pred[0, 5:10, 5:10] = 1
    label = torch.zeros(1, 20, 20)
    label[0, 5:11, 5:10] = 1
    scores = score_case(pred, label, num_classes=2, spacing=[1.0, 1.0])
    assert scores["dice"][0] == pytest.approx(2 * 25 / (25 + 30))
    assert scores["iou"][0] == pytest.approx(25 / 30)
    doubled = score_case(pred, label, num_classes=2, spacing=[2.0, 2.0])
    assert doubled["hd95"][0] == pytest.approx(2 * scores["hd95"][0])


def test_summarise_leaves_out_and_counts_non_finite_values():
    summary = summarise([0.5, 0.7, float("nan")])
    assert summary["n"] == 2 and summary["non_finite"] == 1
    assert summary["mean"] == pytest.approx(0.6)
    low, high = summary["ci95"]
    assert low < 0.6 < high and math.isfinite(high)


@pytest.fixture
def synthetic_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    return tmp_path


def test_split_naming_a_missing_image_is_one_clear_error(synthetic_folder):
    split = synthetic_folder / "split.json"
    split.write_text(json.dumps({"training": [{"image": "images/a.png"}], "test": [{"image": "images/gone.png"}]}))
    with pytest.raises(PipelineError, match="names image 'images/gone.png', which does not exist"):
        load_split(synthetic_folder, split)


def test_split_paths_are_resolved_against_the_dataset_folder(synthetic_folder):
    split = synthetic_folder / "split.json"
    (synthetic_folder / "images" / "b.png").write_bytes(b"")
    split.write_text(json.dumps({"training": [{"image": "images/b.png"}], "test": [{"image": "images/a.png"}]}))
    resolved = load_split(synthetic_folder, split)
    assert resolved["training"][0]["image"] == str(synthetic_folder / "images" / "b.png")
    assert held_out(resolved) == resolved["test"]


def test_check_arguments_names_the_bad_argument(synthetic_folder):
    with pytest.raises(PipelineError, match="dataset_dir is required"):
        check_arguments(None)
    with pytest.raises(PipelineError, match="unknown method 'nope'"):
        check_arguments(str(synthetic_folder), method="nope")
    with pytest.raises(SystemExit, match="^error: unknown method 'nope'"):
        check_bundle_arguments(dataset_dir=str(synthetic_folder), method="nope")


def test_resume_state_of_another_method_is_refused_with_one_clear_message(tmp_path):
    from ignite.engine import Engine

    from pipeline.engine.checkpoints import ResumeState
    from pipeline.errors import PipelineError
    from pipeline.peft import apply_peft, param_groups
    from tests.peft.backbones import SamViT

    def resumable(method):
        torch.manual_seed(0)
        network = SamViT()
        apply_peft(network, method)
        optimizer = torch.optim.AdamW(param_groups(network, lr=1e-3))
        engine = Engine(lambda engine, batch: None)
        ResumeState(str(tmp_path / "resume.pt"), network, optimizer).attach(engine)
        return engine

    resumable("dka").run([0], max_epochs=1)
    assert (tmp_path / "resume.pt").is_file()
    with pytest.raises(PipelineError, match="written by a run with other adapters or options"):
        resumable("lora").run([0], max_epochs=2)
    resumable("dka").run([0], max_epochs=2)  # the same method resumes
